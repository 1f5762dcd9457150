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
//! [`account`], [`clock`], [`log`].
//!
//! **Invariants:**
//! - the kernel never calls program or driver code while holding its lock (futures, cleanups,
//!   handle closes and dropped mailboxes run deferred, outside it);
//! - a panic inside a process becomes `ExitReason::Fault` and never reaches the kernel;
//! - pids and cap refs are never reused;
//! - a capability is the only authority: every privileged syscall passes `CapTable::require`;
//! - a charge is all-or-nothing up the account chain; quota exhaustion terminates the process
//!   with `ExitReason::Quota` (kernel-enforced, not left to the program);
//! - in deterministic mode the same program, seed and inputs give the same event trace hash.
//!
//! **API boundary:** depends on `agentos-abi` only (plus libraries). Programs see the kernel
//! only through [`agentos_abi::Syscalls`], implemented by [`Sys`]; hosts use [`Kernel`]. Context
//! memory, the journal, snapshots and the network join through the same state and syscall
//! seams in later issues.

pub mod account;
pub mod captable;
pub mod clock;
pub mod journal;
pub mod kernel;
pub mod log;
mod state;
pub mod syscalls;

pub use kernel::{BootOpts, Kernel, KernelConfig, KernelError, Metrics, Mode, ProcInfo};
pub use state::QUANTUM;
pub use syscalls::Sys;

/// An image runnable on this kernel.
pub type KImage = agentos_abi::Image<Sys>;
