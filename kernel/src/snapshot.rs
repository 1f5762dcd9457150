//! Snapshots: a process's durable state as bytes, and the rules for restoring it.
//!
//! A snapshot holds what survives a move or a restart: the image name and args, priority, the
//! remaining deadline, the stopped flag, what the account has left, the mailbox (without
//! capabilities: authority is kernel-local and never serialized) and the context-memory dump.
//! The execution stack is not serializable, so `restore` runs the image again against the
//! restored state — sound for agents whose state is their context. Snapshots are postcard
//! bytes stamped with [`ABI_VERSION`]; another version is refused with a clear error.

use agentos_abi::{Body, Budget, Message, Pid, SegmentDump, Value, ABI_VERSION};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A message as a snapshot keeps it: sender, body and metadata; caps are dropped.
#[derive(Debug, Serialize, Deserialize)]
pub struct SnapMessage {
    /// The original sender.
    pub from: Pid,
    /// The body (never a `Body::Local`).
    pub body: Body,
    /// Correlation id.
    pub corr: Option<u64>,
    /// Advisory deadline.
    pub deadline: Option<u64>,
}

impl SnapMessage {
    /// Copy a mailbox message for a snapshot; `None` for a typed local body, which cannot be
    /// serialized.
    pub fn copy(m: &Message) -> Option<Self> {
        Some(SnapMessage {
            from: m.from,
            body: m.body.try_clone()?,
            corr: m.corr,
            deadline: m.deadline,
        })
    }
    /// Back into a mailbox message (with no caps).
    pub fn into_message(self) -> Message {
        Message {
            from: self.from,
            body: self.body,
            caps: Vec::new(),
            corr: self.corr,
            deadline: self.deadline,
        }
    }
}

/// A process's durable state.
#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    /// The ABI version it was written under.
    pub abi: u32,
    /// The image name (restore must be given an image of this name).
    pub image: String,
    /// The args its main was started with.
    pub args: Value,
    /// Scheduling priority.
    pub priority: i32,
    /// Remaining time to its deadline in ms, if it had one.
    pub deadline_ms: Option<u64>,
    /// Suspended.
    pub stopped: bool,
    /// What its account had left.
    pub account: Budget,
    /// Pending messages, caps stripped.
    pub mailbox: Vec<SnapMessage>,
    /// Context memory: resident then swapped segments.
    pub context: Vec<SegmentDump>,
}

/// Why a snapshot could not be taken, decoded or restored.
#[derive(Debug, Error, PartialEq)]
pub enum SnapshotError {
    /// No such live process.
    #[error("snapshot: no such process {0}")]
    NoSuchProcess(Pid),
    /// The mailbox holds a typed local message, which cannot be serialized.
    #[error("snapshot: mailbox of {0} holds a local (non-serializable) message")]
    LocalMessage(Pid),
    /// Written under another ABI version.
    #[error("restore: ABI mismatch (snapshot v{found}, kernel v{expected})")]
    AbiMismatch {
        /// The snapshot's version.
        found: u32,
        /// This kernel's.
        expected: u32,
    },
    /// The image given to restore is not the snapshot's.
    #[error("restore: snapshot is of image \"{snapshot}\", not \"{given}\"")]
    WrongImage {
        /// The snapshot's image name.
        snapshot: String,
        /// The image given.
        given: String,
    },
    /// The pinned context alone exceeds the new memory ceiling.
    #[error("restore: {0}")]
    Memory(String),
    /// Encoding or decoding failed.
    #[error("snapshot codec: {0}")]
    Codec(String),
    /// The kernel is shut down.
    #[error("kernel is shut down")]
    Shutdown,
}

impl Snapshot {
    /// Encode as postcard bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, SnapshotError> {
        postcard::to_allocvec(self).map_err(|e| SnapshotError::Codec(e.to_string()))
    }
    /// Decode postcard bytes; the ABI version is checked first.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let s: Snapshot =
            postcard::from_bytes(bytes).map_err(|e| SnapshotError::Codec(e.to_string()))?;
        s.check_abi()?;
        Ok(s)
    }
    /// Refuse a snapshot written under another ABI version.
    pub fn check_abi(&self) -> Result<(), SnapshotError> {
        if self.abi != ABI_VERSION {
            return Err(SnapshotError::AbiMismatch {
                found: self.abi,
                expected: ABI_VERSION,
            });
        }
        Ok(())
    }
}
