//! Rights, resources, caveats: what a capability grants and over what.
//!
//! Rights only ever shrink along a derivation chain and caveats only accumulate; the kernel's
//! cap table enforces both. A [`Rights`] set is a byte-sized bitset so checks are one AND.

use crate::ids::{NodeId, Pid};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// One right a capability can grant.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[repr(u8)]
pub enum Right {
    /// Send messages to a process (or to a remote proxy).
    Send = 1,
    /// Monitor a process (learn when it dies; `waitpid`).
    Monitor = 2,
    /// Kill, signal, suspend, resume or `term` a process.
    Kill = 4,
    /// Spawn children (held on a `Spawn` resource).
    Spawn = 8,
    /// Open a device (held on a `Device` resource).
    Open = 16,
    /// Read from an open device handle.
    Read = 32,
    /// Write to an open device handle.
    Write = 64,
}

impl Right {
    /// Every right, in bit order.
    pub const ALL: [Right; 7] = [
        Right::Send,
        Right::Monitor,
        Right::Kill,
        Right::Spawn,
        Right::Open,
        Right::Read,
        Right::Write,
    ];

    /// The lowercase name used in errors and traces.
    pub fn name(self) -> &'static str {
        match self {
            Right::Send => "send",
            Right::Monitor => "monitor",
            Right::Kill => "kill",
            Right::Spawn => "spawn",
            Right::Open => "open",
            Right::Read => "read",
            Right::Write => "write",
        }
    }
}

/// A set of [`Right`]s as a bitset.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Rights(pub u8);

impl Rights {
    /// The empty set.
    pub const NONE: Rights = Rights(0);
    /// send + monitor: what `self_cap` hands out (reach me and learn when I die).
    pub const SEND_MONITOR: Rights = Rights(Right::Send as u8 | Right::Monitor as u8);
    /// send + monitor + kill: what `spawn` returns to the parent.
    pub const CHILD: Rights = Rights(Right::Send as u8 | Right::Monitor as u8 | Right::Kill as u8);
    /// read + write: an open device handle.
    pub const READ_WRITE: Rights = Rights(Right::Read as u8 | Right::Write as u8);

    /// A set holding exactly the given rights.
    pub fn of(rights: &[Right]) -> Rights {
        Rights(rights.iter().fold(0, |acc, r| acc | *r as u8))
    }
    /// Whether `r` is in the set.
    #[inline]
    pub fn has(self, r: Right) -> bool {
        self.0 & r as u8 != 0
    }
    /// Whether every right in `other` is also in `self`.
    #[inline]
    pub fn contains(self, other: Rights) -> bool {
        other.0 & !self.0 == 0
    }
    /// The rights in `self` that are not in `other`.
    pub fn minus(self, other: Rights) -> Rights {
        Rights(self.0 & !other.0)
    }
    /// Iterate the rights in the set.
    pub fn iter(self) -> impl Iterator<Item = Right> {
        Right::ALL.into_iter().filter(move |r| self.has(*r))
    }
}

impl From<Right> for Rights {
    fn from(r: Right) -> Self {
        Rights(r as u8)
    }
}

impl fmt::Debug for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, r) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(r.name())?;
        }
        f.write_str("}")
    }
}

/// What a capability is a capability *over*.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum Resource {
    /// A local process.
    Process(Pid),
    /// The right to create processes.
    Spawn,
    /// A driver device, by registered driver name (an open handle has the same resource).
    Device(Arc<str>),
    /// A proxy for a process on another node: an address, never authority on that node.
    Remote {
        /// The peer node.
        node: NodeId,
        /// The process on that node.
        pid: Pid,
    },
}

impl Resource {
    /// The resource kind as a short name (`process`, `spawn`, `device`, `remote`).
    pub fn kind(&self) -> &'static str {
        match self {
            Resource::Process(_) => "process",
            Resource::Spawn => "spawn",
            Resource::Device(_) => "device",
            Resource::Remote { .. } => "remote",
        }
    }
}

/// A restriction attached to a capability. Caveats are inherited by every derivation and can
/// never be removed by re-deriving.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum Caveat {
    /// The capability is dead once the kernel clock passes `at` (milliseconds).
    Expires {
        /// Kernel-clock time (ms) after which the capability no longer satisfies.
        at: u64,
    },
}

/// A read-only view of a capability as the kernel reports it (for `inspect`-style tooling).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct CapInfo {
    /// The owning process.
    pub owner: Pid,
    /// What it is over.
    pub resource: Resource,
    /// What it grants.
    pub rights: Rights,
    /// Kernel-clock expiry in ms, if any caveat sets one (the earliest).
    pub expires_at: Option<u64>,
}
