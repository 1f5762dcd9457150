//! Kernel runtime scenarios: processes, scheduling, IPC, capabilities, accounts.

mod accounts;
mod caps;
mod determinism;
mod durability;
mod ipc;
mod lifecycle;
mod memory;
mod remote;
mod sched;
mod signals;
mod smoke;
mod util;
