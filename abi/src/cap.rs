//! Rights, resources, caveats: what a capability grants and over what.
//!
//! Rights only ever shrink along a derivation chain and caveats only accumulate; the kernel's
//! cap table enforces both. A [`Rights`] set is a byte-sized bitset so checks are one AND.

use crate::ids::{NodeId, Pid};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// One right a capability can grant.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[repr(u8)]
pub enum Right {
    /// Send messages to a process (or to a remote proxy).
    Send = 1,
    /// Monitor a process (learn when it dies; `waitpid`).
    Monitor = 2,
    /// Kill, signal, suspend, resume or `term` a process.
    Kill = 4,
    /// Spawn children (held on a `Spawn` resource).
    Spawn = 8,
    /// Open a device (held on a `Device` resource).
    Open = 16,
    /// Read from an open device handle.
    Read = 32,
    /// Write to an open device handle.
    Write = 64,
}

impl Right {
    /// Every right, in bit order.
    pub const ALL: [Right; 7] = [
        Right::Send,
        Right::Monitor,
        Right::Kill,
        Right::Spawn,
        Right::Open,
        Right::Read,
        Right::Write,
    ];

    /// The lowercase name used in errors and traces.
    pub fn name(self) -> &'static str {
        match self {
            Right::Send => "send",
            Right::Monitor => "monitor",
            Right::Kill => "kill",
            Right::Spawn => "spawn",
            Right::Open => "open",
            Right::Read => "read",
            Right::Write => "write",
        }
    }
}

/// A set of [`Right`]s as a bitset.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Rights(pub u8);

impl Rights {
    /// The empty set.
    pub const NONE: Rights = Rights(0);
    /// send + monitor: what `self_cap` hands out (reach me and learn when I die).
    pub const SEND_MONITOR: Rights = Rights(Right::Send as u8 | Right::Monitor as u8);
    /// send + monitor + kill: what `spawn` returns to the parent.
    pub const CHILD: Rights = Rights(Right::Send as u8 | Right::Monitor as u8 | Right::Kill as u8);
    /// read + write: an open device handle.
    pub const READ_WRITE: Rights = Rights(Right::Read as u8 | Right::Write as u8);

    /// A set holding exactly the given rights.
    pub fn of(rights: &[Right]) -> Rights {
        Rights(rights.iter().fold(0, |acc, r| acc | *r as u8))
    }
    /// Whether `r` is in the set.
    #[inline]
    pub fn has(self, r: Right) -> bool {
        self.0 & r as u8 != 0
    }
    /// Whether every right in `other` is also in `self`.
    #[inline]
    pub fn contains(self, other: Rights) -> bool {
        other.0 & !self.0 == 0
    }
    /// The rights in `self` that are not in `other`.
    pub fn minus(self, other: Rights) -> Rights {
        Rights(self.0 & !other.0)
    }
    /// Iterate the rights in the set.
    pub fn iter(self) -> impl Iterator<Item = Right> {
        Right::ALL.into_iter().filter(move |r| self.has(*r))
    }
}

impl From<Right> for Rights {
    fn from(r: Right) -> Self {
        Rights(r as u8)
    }
}

impl fmt::Debug for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, r) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(r.name())?;
        }
        f.write_str("}")
    }
}

/// What a capability is a capability *over*.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum Resource {
    /// A local process.
    Process(Pid),
    /// The right to create processes.
    Spawn,
    /// A driver device, by registered driver name (an open handle has the same resource).
    Device(Arc<str>),
    /// A proxy for a process on another node: an address, never authority on that node.
    Remote {
        /// The peer node.
        node: NodeId,
        /// The process on that node.
        pid: Pid,
    },
}

impl Resource {
    /// The resource kind as a short name (`process`, `spawn`, `device`, `remote`).
    pub fn kind(&self) -> &'static str {
        match self {
            Resource::Process(_) => "process",
            Resource::Spawn => "spawn",
            Resource::Device(_) => "device",
            Resource::Remote { .. } => "remote",
        }
    }
}

/// A restriction attached to a capability. Caveats are inherited by every derivation and can
/// never be removed by re-deriving.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum Caveat {
    /// The capability is dead once the kernel clock passes `at` (milliseconds).
    Expires {
        /// Kernel-clock time (ms) after which the capability no longer satisfies.
        at: u64,
    },
}

/// A read-only view of a capability as the kernel reports it (for `inspect`-style tooling).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct CapInfo {
    /// The owning process.
    pub owner: Pid,
    /// What it is over.
    pub resource: Resource,
    /// What it grants.
    pub rights: Rights,
    /// Kernel-clock expiry in ms, if any caveat sets one (the earliest).
    pub expires_at: Option<u64>,
    /// The scope a device capability (or a handle opened through one) carries; empty for
    /// every other kind and for an unscoped device.
    pub scope: Scope,
}

/// The scope a device capability carries: what part of the device it reaches. The driver
/// receives it at `open` (in [`crate::driver::OpenCtx`]) and confines the handle to it, so one
/// driver serves many scopes with no ambient authority.
///
/// A scope is a set of `key = value` string pairs, kept sorted by key with each key at most
/// once. The empty scope is the widest: the whole device. **Narrowing** (what `attenuate` may
/// do, and all it may do) is defined key by key — scope `n` is at least as narrow as `w`
/// ([`Scope::narrows`]) when every key of `w` is in `n` and
/// - for the key [`Scope::ROOT`] (a directory root): `n`'s path lies at or under `w`'s, compared
///   component by component after lexical normalization (`.` dropped, `..` taken back, never
///   above the path's own start, so a `..` can never climb out); both absolute or both relative;
/// - for every other key (a session id, a run id, …): the values are equal.
///
/// `n` may add keys `w` does not have: a new constraint only narrows. Nothing else narrows, so
/// no derivation can widen a scope; the kernel checks [`Scope::narrows`] on every attenuation.
/// Symbolic links are the driver's business: the kernel's rule is lexical.
#[derive(Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Scope(Vec<(String, String)>);

impl Scope {
    /// The key whose value is a directory root, narrowed by descending into it.
    pub const ROOT: &'static str = "root";

    /// The empty (widest) scope.
    pub fn new() -> Self {
        Scope(Vec::new())
    }
    /// This scope with `key` set to `value` (replacing any value it had). A [`Scope::ROOT`]
    /// value is stored normalized.
    pub fn with(mut self, key: &str, value: &str) -> Self {
        let value = if key == Self::ROOT {
            normalize_path(value)
        } else {
            value.to_owned()
        };
        match self.0.binary_search_by(|(k, _)| k.as_str().cmp(key)) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (key.to_owned(), value)),
        }
        self
    }
    /// The value of `key`, if the scope constrains it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }
    /// The directory root, if the scope has one.
    pub fn root(&self) -> Option<&str> {
        self.get(Self::ROOT)
    }
    /// Whether the scope is empty (the whole device).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The pairs, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
    /// Whether `self` is at least as narrow as `wider` (see the type's rule).
    pub fn narrows(&self, wider: &Scope) -> bool {
        wider.iter().all(|(k, wv)| match self.get(k) {
            None => false,
            Some(nv) if k == Self::ROOT => path_within(nv, wv),
            Some(nv) => nv == wv,
        })
    }
    /// `other` laid over `self`: the keys of both, `other`'s value where both have one. The
    /// result narrows `self` exactly when [`Scope::narrows`] says so; the kernel checks.
    pub fn overlay(&self, other: &Scope) -> Scope {
        let mut out = self.clone();
        for (k, v) in other.iter() {
            out = out.with(k, v);
        }
        out
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (k, v)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v:?}")?;
        }
        f.write_str("}")
    }
}

/// Lexical normalization: `.` and empty components dropped, `..` takes the previous component
/// back and is dropped at the start (a root cannot be climbed out of). Keeps a leading `/`.
pub fn normalize_path(p: &str) -> String {
    let abs = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let body = parts.join("/");
    if abs {
        format!("/{body}")
    } else {
        body
    }
}

/// Whether path `inner` is `outer` or lies under it (component-wise, after normalization).
fn path_within(inner: &str, outer: &str) -> bool {
    let (i, o) = (normalize_path(inner), normalize_path(outer));
    if i.starts_with('/') != o.starts_with('/') {
        return false;
    }
    let ic: Vec<&str> = i.split('/').filter(|c| !c.is_empty()).collect();
    let oc: Vec<&str> = o.split('/').filter(|c| !c.is_empty()).collect();
    ic.len() >= oc.len() && ic[..oc.len()] == oc[..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_narrows_by_descending_and_never_by_climbing() {
        let w = Scope::new().with(Scope::ROOT, "/srv/proj");
        assert!(Scope::new().with(Scope::ROOT, "/srv/proj/src").narrows(&w));
        assert!(Scope::new()
            .with(Scope::ROOT, "/srv/proj/./src/")
            .narrows(&w));
        assert!(!Scope::new()
            .with(Scope::ROOT, "/srv/proj/../etc")
            .narrows(&w));
        assert!(!Scope::new().with(Scope::ROOT, "/srv/projx").narrows(&w));
        assert!(!Scope::new().with(Scope::ROOT, "srv/proj/a").narrows(&w));
        assert!(!Scope::new().narrows(&w));
        assert!(w.narrows(&Scope::new()));
    }

    #[test]
    fn other_keys_narrow_by_being_added_or_kept_equal() {
        let w = Scope::new().with("session", "s1");
        let n = w.clone().with("run", "r1");
        assert!(n.narrows(&w));
        assert!(!w.narrows(&n));
        assert!(!Scope::new().with("session", "s2").narrows(&w));
        assert_eq!(n.get("run"), Some("r1"));
        assert_eq!(w.overlay(&Scope::new().with("run", "r1")), n);
    }
}
