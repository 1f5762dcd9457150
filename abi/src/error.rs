//! Errors at the syscall boundary.
//!
//! A failed send hands the body back ([`SendError`]), so backpressure and dead targets never
//! lose data silently.

use crate::cap::Right;
use crate::msg::Body;
use crate::quota::Meter;
use thiserror::Error;

/// A capability check failed.
#[derive(Clone, PartialEq, Eq, Debug, Error)]
pub enum CapError {
    /// The ref is unknown, revoked, or a caveat (expiry) is no longer satisfied.
    #[error("invalid or revoked capability")]
    Invalid,
    /// The caller is not the owner.
    #[error("capability not held by caller")]
    NotHeld,
    /// The cap lacks a right the operation needs.
    #[error("capability lacks right \"{}\"", .0.name())]
    Lacks(Right),
    /// A derivation asked for rights the parent does not have.
    #[error("cannot amplify right \"{}\"", .0.name())]
    Amplify(Right),
    /// The cap is over the wrong kind of resource for this syscall.
    #[error("capability is not a {0}")]
    WrongKind(&'static str),
    /// The caller holds no spawn capability.
    #[error("caller holds no spawn capability")]
    NoSpawn,
    /// A derivation asked for a scope that is not within the parent's.
    #[error("cannot widen the scope")]
    Widen,
}

/// Why a syscall failed.
#[derive(Clone, PartialEq, Debug, Error)]
pub enum SysError {
    /// A capability check failed.
    #[error("{op}: {err}")]
    Cap {
        /// The syscall.
        op: &'static str,
        /// The failure.
        err: CapError,
    },
    /// A quota ran out.
    #[error("quota exceeded: {}", .0.name())]
    Quota(Meter),
    /// The named process does not exist (or is dead).
    #[error("no such process")]
    NoSuchProcess,
    /// `register`: the name is held by another live process.
    #[error("register: name \"{0}\" already in use")]
    NameTaken(String),
    /// No driver is registered under this name.
    #[error("no such driver \"{0}\"")]
    NoDriver(String),
    /// The handle does not support the operation (e.g. a write-only device was read).
    #[error("handle is not {0}")]
    Handle(&'static str),
    /// A driver failed; the message is the driver's.
    #[error("driver: {0}")]
    Driver(String),
    /// The operation is not available in this kernel configuration.
    #[error("{0}")]
    Unsupported(String),
    /// Replay found no journal entry for this operation (the run diverged from the recording).
    #[error("replay: {0}")]
    Replay(String),
    /// No connected route to this node.
    #[error("no route to node \"{0}\"")]
    NoRoute(String),
    /// A remote operation failed on the way to, or at, the peer.
    #[error("remote: {0}")]
    Remote(String),
    /// The journal store failed to record a driver result (the op itself ran).
    #[error("journal: {0}")]
    Journal(String),
    /// The process's context memory cannot hold its pinned segments.
    #[error("context memory: {0}")]
    Memory(String),
    /// The kernel is shutting down.
    #[error("kernel is shutting down")]
    Shutdown,
    /// The process is dead and its exit reason has left the bounded reaped cache: the kernel
    /// no longer knows how it ended.
    #[error("process {0} is gone and its exit reason is forgotten")]
    Forgotten(crate::ids::Pid),
    /// A deadline passed before the awaited event (e.g. `await_start`).
    #[error("timed out")]
    Timeout,
}

impl SysError {
    pub(crate) fn cap(op: &'static str, err: CapError) -> Self {
        SysError::Cap { op, err }
    }
    /// Shorthand used by kernels: a capability error in syscall `op`.
    pub fn capability(op: &'static str, err: CapError) -> Self {
        Self::cap(op, err)
    }
}

/// A send that did not deliver; the body comes back to the caller.
#[derive(Debug, Error)]
pub enum SendError {
    /// The target process is dead (or never existed); nothing was delivered.
    #[error("send: target is dead")]
    Closed(Body),
    /// The send was refused (capability, delegated caps, wire rules); nothing was delivered.
    #[error("send: {1}")]
    Refused(Body, SysError),
}

impl SendError {
    /// Take the undelivered body back.
    pub fn into_body(self) -> Body {
        match self {
            SendError::Closed(b) | SendError::Refused(b, _) => b,
        }
    }
}

impl From<SendError> for SysError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Closed(_) => SysError::NoSuchProcess,
            SendError::Refused(_, err) => err,
        }
    }
}
