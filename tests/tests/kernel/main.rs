//! Kernel runtime scenarios: processes, scheduling, IPC, capabilities, accounts.

mod accounts;
mod caps;
mod determinism;
mod durability;
mod events;
mod ipc;
mod lifecycle;
mod memory;
mod receive;
mod remote;
mod sched;
mod scope;
mod signals;
mod smoke;
mod util;
