//! # agentos-kernel — processes, scheduling, IPC, capabilities and accounts
//!
//! The kernel owns every process and every piece of authority. A process is an async main
//! (an [`agentos_abi::Image`]) that the kernel polls on its own scheduler threads: the kernel,
//! not tokio, decides who runs next (priority + aging, then earliest deadline, then FIFO, with
//! reductions per syscall and a quantum). Processes talk by messages through bounded mailboxes
//! with sender backpressure; they act only through capabilities in the [`captable`]; they spend
//! only what their [`account`] chain allows.
//!
//! Modules, in the order a newcomer should read them: [`kernel`] (boot, the scheduler loop,
//! introspection, shutdown), [`syscalls`] (the per-process [`Sys`] handle), `state` (the
//! process table and the shared operations: deliver, terminate, wake, pick), [`captable`],
//! [`account`], [`clock`], [`log`]; then durability and memory: [`memory`] (paged context
//! and recallers, behind the `remember`/`recall` syscalls in `memsys`), [`journal`] (record,
//! replay, recover and the stores), [`durable`] (the host API for journal modes, `inspect`,
//! snapshot/restore) and [`snapshot`]; then the cluster: [`seal`] (HMAC envelopes, the nonce
//! guard), `seam` (the one place the core and the cluster meet: what each asks of the other)
//! and [`remote`] (routes, ingress, remote send, spawn and monitor).
//!
//! **Invariants:**
//! - the kernel never calls program or driver code while holding its lock (futures, cleanups,
//!   handle closes and dropped mailboxes run deferred, outside it);
//! - a panic inside a process becomes `ExitReason::Fault` and never reaches the kernel;
//! - pids and cap refs are never reused;
//! - a capability is the only authority: every privileged syscall passes `CapTable::require`;
//! - a charge is all-or-nothing up the account chain and across its meters; quota exhaustion
//!   terminates the process with `ExitReason::Quota` (kernel-enforced, not left to the program);
//! - a device handle has exactly the `read`/`write` rights of the device cap it was opened
//!   through and its scope; a derivation never widens rights or scope;
//! - a selective receive leaves the messages it does not take in order, and its predicate
//!   (`recv_where`) runs in the process, never under the lock;
//! - the kernel never waits for an event subscriber (full channels drop and count) and never
//!   appends to the journal store under its lock;
//! - in deterministic mode the same program, seed and inputs give the same event trace hash.
//!
//! **API boundary:** depends on `agentos-abi` only (plus libraries). Programs see the kernel
//! only through [`agentos_abi::Syscalls`], implemented by [`Sys`]; hosts use [`Kernel`]. The
//! kernel never opens a socket: transports (the `net` crate) hand it sealed bytes through
//! [`Kernel::ingress`] and take envelopes through an [`agentos_abi::wire::Egress`].

pub mod account;
pub mod captable;
pub mod clock;
pub mod durable;
pub mod journal;
pub mod kernel;
#[cfg(feature = "lockstat")]
pub mod lockstat;
pub mod log;
pub mod memory;
mod memsys;
pub mod remote;
pub mod seal;
mod seam;
pub mod snapshot;
mod state;
pub mod syscalls;

pub use durable::RestoreOpts;
pub use journal::JournalMode;
pub use kernel::{BootOpts, Kernel, KernelConfig, KernelError, Metrics, Mode, ProcInfo};
pub use log::{HostEvent, LogLine, Subscription};
pub use memory::MemoryConfig;
pub use remote::{NetConfig, NetStats};
pub use state::QUANTUM;
pub use syscalls::Sys;

/// An image runnable on this kernel.
pub type KImage = agentos_abi::Image<Sys>;

// The README is the crate page on a registry; its examples run as doctests here (`cargo xtask
// tidy` checks that this hook exists and that the README has a Rust example).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
