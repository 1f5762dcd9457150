//! Why a process ended.

use crate::ids::Pid;
use crate::quota::Meter;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The reason a process exited, delivered in `down` messages and returned by `waitpid`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum ExitReason {
    /// Its main returned `Ok(())` or it called `exit(Normal)`.
    Normal,
    /// The kernel shut down.
    Shutdown,
    /// Force-terminated by `signal` from the given process.
    Killed {
        /// Who sent the signal.
        by: Pid,
    },
    /// Its main returned an error, panicked, or it touched something it may not.
    Fault {
        /// A human-readable description.
        error: String,
    },
    /// A quota ran out (tokens, tool calls, usd, wall time, memory).
    Quota {
        /// The exhausted meter.
        resource: Meter,
    },
    /// Its scheduling deadline passed before it finished.
    Deadline,
    /// A linked process died abnormally (link propagation is a `down` message; this reason is
    /// for programs that choose to exit because of it).
    Linked {
        /// The process whose death this follows.
        pid: Pid,
    },
    /// The connection to the node hosting the process was lost (remote monitors).
    NoConnection,
    /// A program-defined reason.
    Other {
        /// A short machine-readable kind.
        kind: String,
    },
}

impl ExitReason {
    /// The short kind name used in metrics (`normal`, `killed`, `fault`, `quota`, ...).
    pub fn kind(&self) -> &str {
        match self {
            ExitReason::Normal => "normal",
            ExitReason::Shutdown => "shutdown",
            ExitReason::Killed { .. } => "killed",
            ExitReason::Fault { .. } => "fault",
            ExitReason::Quota { .. } => "quota",
            ExitReason::Deadline => "deadline",
            ExitReason::Linked { .. } => "linked",
            ExitReason::NoConnection => "noconnection",
            ExitReason::Other { kind } => kind,
        }
    }
    /// Whether this is a normal (non-failure) exit: `Normal` or `Shutdown`.
    pub fn is_normal(&self) -> bool {
        matches!(self, ExitReason::Normal | ExitReason::Shutdown)
    }
    /// A fault with the given message.
    pub fn fault(error: impl Into<String>) -> Self {
        ExitReason::Fault {
            error: error.into(),
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Killed { by } => write!(f, "killed by {by}"),
            ExitReason::Fault { error } => write!(f, "fault: {error}"),
            ExitReason::Quota { resource } => write!(f, "quota exceeded: {}", resource.name()),
            ExitReason::Linked { pid } => write!(f, "linked process {pid} died"),
            other => f.write_str(other.kind()),
        }
    }
}
