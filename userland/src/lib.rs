//! # agentos-userland — programs written against the syscall surface
//!
//! This crate will own the seed's userland, function by function: `supervisor` (one_for_one,
//! one_for_all, rest_for_one, restart intensity, flapping backoff), `nursery` (structured
//! concurrency), `nameservice`, the ReAct and conversation agents with `run_turn`, the WASM
//! `sandbox`, `longmem`, `distill`, `persona`, `promptsmith`, `evolve` and `expert`.
//!
//! **Invariant:** userland never reaches into the kernel: every effect goes through a syscall,
//! so a program holds exactly the authority its capabilities grant.
//!
//! **API boundary:** depends on `agentos-abi` (the syscall trait, messages, driver ABI) and not on
//! `agentos-kernel`; the kernel is only a dev-dependency for tests.
//!
//! `sandbox` runs untrusted code as WebAssembly processes that reach the kernel only through a
//! syscall allowlist, under fuel and memory limits, torn down with their process.
//!
//! Status: the programs land with the userland issue; until then this crate holds only this essay.

pub mod sandbox;
