//! # agentos-wasmlimit — the one wasmtime resource limiter
//!
//! Both places that run untrusted WebAssembly — the wasm device (`agentos-drivers`) and the
//! sandbox that runs a guest as a process (`agentos-userland`) — bound a store's linear memory
//! and tables the same way: growth past a limit is an error value ([`LimitExceeded`]), so the
//! guest traps (or a declared minimum fails instantiation) and the caller can say why.
//!
//! **Invariant:** a store with this limiter never holds more than one instance and one memory,
//! never grows a memory past `memory_bytes` nor a table past `table_elements`; a refused growth
//! is an error, never a panic.
//!
//! **API boundary:** depends on wasmtime only, on no workspace crate. It exists because the
//! layering gives the limiter no other shared home: drivers and userland may depend on abi
//! only among the layers, and abi has no runtime (no wasmtime). Like abi, it is a leaf both
//! layers may use.

use thiserror::Error;

/// A memory or table growth the limiter refused.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error("{what} limit exceeded: {desired} wanted, {limit} allowed")]
pub struct LimitExceeded {
    /// `"memory"` (bytes) or `"table"` (elements).
    pub what: &'static str,
    /// The size asked for.
    pub desired: usize,
    /// The limit.
    pub limit: usize,
}

/// A store's resource limiter: install it with `store.limiter(|data| &mut data.limiter)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limiter {
    /// Bytes a linear memory may grow to.
    pub memory_bytes: usize,
    /// Elements a table may grow to.
    pub table_elements: usize,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            return Err(wasmtime::Error::new(LimitExceeded {
                what: "memory",
                desired,
                limit: self.memory_bytes,
            }));
        }
        Ok(true)
    }
    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            return Err(wasmtime::Error::new(LimitExceeded {
                what: "table",
                desired,
                limit: self.table_elements,
            }));
        }
        Ok(true)
    }
    fn instances(&self) -> usize {
        1
    }
    fn memories(&self) -> usize {
        1
    }
}

// The README is the crate page on a registry; its examples run as doctests here (`cargo xtask
// tidy` checks that this hook exists and that the README has a Rust example).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn growth_past_a_limit_is_an_error_naming_it() {
        let mut l = Limiter {
            memory_bytes: 1 << 16,
            table_elements: 10,
        };
        assert!(l.memory_growing(0, 1 << 16, None).unwrap());
        let e = l.memory_growing(0, 2 << 16, None).unwrap_err();
        assert_eq!(
            e.downcast_ref::<LimitExceeded>(),
            Some(&LimitExceeded {
                what: "memory",
                desired: 2 << 16,
                limit: 1 << 16
            })
        );
        assert!(l.table_growing(0, 10, None).unwrap());
        assert!(l.table_growing(0, 11, None).is_err());
    }
}
