//! Identifiers: process ids, capability refs and node ids.
//!
//! Pids and cap refs are allocated from monotone counters and are never reused, so a stale
//! ref can never alias a newer object (no ABA).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// A process id. Pid 0 is the kernel itself (sender of external and control messages); pid 1
/// is init. Never reused within a kernel's lifetime.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct Pid(pub u64);

impl Pid {
    /// The kernel pseudo-process: the `from` of external deliveries, the `to` of control envelopes.
    pub const KERNEL: Pid = Pid(0);
    /// Init, the first process booted; orphans are reparented to it.
    pub const INIT: Pid = Pid(1);
}

impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.0)
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A capability reference: an unforgeable-by-construction handle into the kernel's cap table.
///
/// The value is opaque to programs. A ref is only meaningful to the kernel that minted it and
/// only for the process that owns the capability; refs are never reused.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CapRef(pub u64);

impl fmt::Debug for CapRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cap#{:x}", self.0)
    }
}

/// The name of a node in a cluster of kernels.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Debug)]
pub struct NodeId(pub Arc<str>);

impl From<&str> for NodeId {
    fn from(s: &str) -> Self {
        NodeId(Arc::from(s))
    }
}

/// A node id looks up by its text (hash and equality are the string's).
impl std::borrow::Borrow<str> for NodeId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A monitor reference: what `monitor` returns and `demonitor` takes. Unique per kernel and
/// never reused.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Debug)]
pub struct MonitorRef(pub u64);
