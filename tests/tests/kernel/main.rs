//! Kernel runtime scenarios: processes, scheduling, IPC, capabilities, accounts.

mod smoke;
