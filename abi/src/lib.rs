//! # agentos-abi — the contract between programs, the kernel and drivers
//!
//! Everything a process, a driver or a peer node needs to agree on lives here: process ids and
//! capability refs ([`ids`]), rights, resources and capabilities ([`cap`]), messages and the
//! typed system messages ([`msg`]), exit reasons ([`exit`]), quotas, budgets and usage
//! ([`quota`]), the syscall surface ([`sys`]), the driver ABI ([`driver`]), the requests and
//! replies of the standard devices ([`device`]), kernel events ([`event`]), errors ([`error`]),
//! the wire envelope between nodes ([`wire`]) and [`ABI_VERSION`].
//!
//! **Invariant:** abi has no I/O and no runtime: no tokio, no sockets, no files, no clocks. It is
//! plain data (every type derives serde so it can be journaled, snapshotted or sent over the
//! wire with postcard) plus traits. A process written against [`sys::Syscalls`] runs on any
//! kernel that implements it.
//!
//! **API boundary:** every other crate depends on abi; abi depends on no workspace crate.
//! Changing a type here is an ABI change: bump [`ABI_VERSION`] when the serialized form changes.

pub mod cap;
pub mod device;
pub mod driver;
pub mod error;
pub mod event;
pub mod exit;
pub mod ids;
pub mod memory;
pub mod msg;
pub mod quota;
pub mod sys;
pub mod value;
pub mod wire;

pub use cap::{CapInfo, Caveat, Resource, Right, Rights, Scope};
pub use device::{
    ChatMessage, ChatReply, ChatRequest, DeviceMessage, LlmCapabilities, LlmRequest, Role,
    TokenUsage, ToolCall, ToolSpec,
};
pub use driver::{Cost, Driver, DriverError, DriverHandle, OpenCtx, Reply};
pub use error::{CapError, SendError, SysError};
pub use event::{Event, EventKind, Signal};
pub use exit::ExitReason;
pub use ids::{CapRef, MonitorRef, NodeId, Pid};
pub use memory::{MemStats, RememberOpts, SegId, Segment, SegmentDump};
pub use msg::{Body, Message, SysMsg};
pub use quota::{Budget, Meter, Quota, Usage};
pub use sys::{
    Attenuation, Cleanup, Image, LogLevel, ProcFuture, ProcResult, SchedOpts, Select, SendOpts,
    SpawnOpts, Spawned, Started, Syscalls,
};
pub use value::Value;

/// Version of the serialized ABI (snapshots, journal records, wire envelopes).
///
/// A snapshot or journal written under another version is rejected with a clear error.
pub const ABI_VERSION: u32 = 3;

// The README is the crate page on a registry; its examples run as doctests here (`cargo xtask
// tidy` checks that this hook exists and that the README has a Rust example).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
