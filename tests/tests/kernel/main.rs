//! Kernel runtime scenarios: processes, scheduling, IPC, capabilities, accounts.

mod accounts;
mod caps;
mod determinism;
mod ipc;
mod lifecycle;
mod sched;
mod signals;
mod smoke;
mod util;
