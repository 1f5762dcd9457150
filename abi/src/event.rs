//! Kernel events: the audit trail every kernel emits into its bounded event log.

use crate::exit::ExitReason;
use crate::ids::Pid;
use crate::quota::Meter;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A signal as it appears in the event log.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum Signal {
    /// SIGSTOP (`suspend`).
    Stop,
    /// SIGCONT (`resume`).
    Cont,
    /// SIGTERM (`term`, catchable).
    Term,
    /// Force-termination (`signal`).
    Kill,
}

/// What happened.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub enum EventKind {
    /// The kernel booted.
    Boot,
    /// A process was created.
    Spawn {
        /// The new process.
        pid: Pid,
        /// Its parent (`None` for init and restored roots).
        parent: Option<Pid>,
        /// Its image name.
        name: Arc<str>,
    },
    /// A process ended.
    Exit {
        /// The process.
        pid: Pid,
        /// Why.
        reason: ExitReason,
    },
    /// A message was delivered.
    Send {
        /// Sender.
        from: Pid,
        /// Receiver.
        to: Pid,
    },
    /// A message was taken from a mailbox.
    Recv {
        /// Receiver.
        pid: Pid,
    },
    /// A process was dispatched onto a scheduler thread.
    Sched {
        /// The process.
        pid: Pid,
    },
    /// A signal was applied.
    Signal {
        /// The target.
        pid: Pid,
        /// Which signal.
        sig: Signal,
    },
    /// A meter was charged to a process's account.
    Charge {
        /// The charged process.
        pid: Pid,
        /// Which meter.
        meter: Meter,
        /// How much.
        n: u64,
    },
    /// Something was refused or dropped: a fault, a full-mailbox drop, a forged envelope.
    Fault {
        /// The process concerned (`Pid::KERNEL` for kernel-level faults).
        pid: Pid,
        /// What went wrong.
        error: String,
    },
    /// The kernel shut down.
    Shutdown {
        /// The reason given to every live process.
        reason: ExitReason,
    },
}

impl EventKind {
    /// The short type name (`spawn`, `exit`, `send`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Boot => "boot",
            EventKind::Spawn { .. } => "spawn",
            EventKind::Exit { .. } => "exit",
            EventKind::Send { .. } => "send",
            EventKind::Recv { .. } => "recv",
            EventKind::Sched { .. } => "sched",
            EventKind::Signal { .. } => "signal",
            EventKind::Charge { .. } => "charge",
            EventKind::Fault { .. } => "fault",
            EventKind::Shutdown { .. } => "shutdown",
        }
    }
}

/// A stamped event.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Event {
    /// Sequence number, from 0, over the kernel's lifetime.
    pub seq: u64,
    /// Kernel-clock time in ms.
    pub ts: u64,
    /// What happened.
    pub kind: EventKind,
}
