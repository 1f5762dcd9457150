//! The driver ABI: how the kernel talks to devices.
//!
//! A process opens a device through a `device` capability and gets a handle capability with
//! `read`/`write` rights. Each read or write is an async call into the driver that returns a
//! [`Reply`]: a value plus the [`Cost`] the kernel charges to the caller's account before the
//! value is delivered. A driver never panics on bad input; failure is a [`DriverError`] value.

use crate::cap::{Rights, Scope};
use crate::ids::Pid;
use crate::value::Value;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use thiserror::Error;

/// A boxed, sendable future (the driver ABI is object-safe, so its futures are boxed).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What one driver operation cost. Charged to the caller's account chain.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Cost {
    /// LLM tokens.
    pub tokens: u64,
    /// Tool calls.
    pub tool_calls: u64,
    /// Micro-dollars.
    pub usd_micros: u64,
    /// Scheduler reductions (0 means the default of 1).
    pub reductions: u32,
}

impl Cost {
    /// No cost.
    pub const FREE: Cost = Cost {
        tokens: 0,
        tool_calls: 0,
        usd_micros: 0,
        reductions: 0,
    };
}

/// A driver's answer: a value and its cost.
#[derive(Clone, PartialEq, Debug, Default, Serialize, Deserialize)]
pub struct Reply {
    /// The result.
    pub value: Value,
    /// What it cost.
    pub cost: Cost,
}

impl Reply {
    /// A reply that cost nothing.
    pub fn free(value: Value) -> Self {
        Reply {
            value,
            cost: Cost::FREE,
        }
    }
}

/// A driver failure, as the caller sees it.
#[derive(Clone, PartialEq, Eq, Debug, Error, Serialize, Deserialize)]
pub enum DriverError {
    /// The device does not support this operation.
    #[error("operation not supported by this device")]
    Unsupported,
    /// The request was malformed for this device.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The device failed.
    #[error("{0}")]
    Failed(String),
}

/// What a driver learns when a process opens it: who, with which rights, within which scope.
///
/// The kernel has already checked the device capability; the handle cap it mints carries
/// exactly `rights` (the `read`/`write` rights of the device cap it was opened through), so a
/// driver never needs to refuse a write on a read-only handle itself. The scope is the driver's
/// to enforce: a handle must reach nothing outside it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct OpenCtx {
    /// The opening process.
    pub pid: Pid,
    /// The handle's rights: the device cap's `read`/`write` rights (a subset of `READ_WRITE`).
    pub rights: Rights,
    /// The device cap's scope (empty: the whole device).
    pub scope: Scope,
}

impl OpenCtx {
    /// An open by `pid` with read + write and no scope (what tests and hosts mostly want).
    pub fn new(pid: Pid) -> Self {
        OpenCtx {
            pid,
            rights: Rights::READ_WRITE,
            scope: Scope::new(),
        }
    }
    /// For a driver that has no notion of scope: refuse a scoped open (a scope it ignored
    /// would silently reach the whole device).
    pub fn unscoped(&self, driver: &str) -> Result<(), DriverError> {
        if self.scope.is_empty() {
            Ok(())
        } else {
            Err(DriverError::BadRequest(format!(
                "{driver}: this device takes no scope (got {:?})",
                self.scope
            )))
        }
    }
}

/// A registered driver: opened by processes holding a device capability.
pub trait Driver: Send + Sync + 'static {
    /// The name device capabilities refer to.
    fn name(&self) -> &str;
    /// Open a handle for `at.pid`, confined to `at.scope`. A driver that does not understand a
    /// scope key must refuse the open (`DriverError::BadRequest`) rather than ignore it, or a
    /// scoped cap would silently reach the whole device.
    fn open(&self, at: OpenCtx) -> BoxFuture<'static, Result<Arc<dyn DriverHandle>, DriverError>>;
    /// Whether a replay runs this device live instead of answering from the journal. Only for
    /// a device whose answers are a pure function of the requests a replay re-issues and of
    /// state the replay itself builds (a fresh database a replayed program writes and reads
    /// back): the replay then reproduces its effects, while every other device stays
    /// recorded. Recovery never runs it live (its state already holds the recorded prefix).
    fn replays_live(&self) -> bool {
        false
    }
}

/// An open device handle. Closed by the kernel when its process exits.
pub trait DriverHandle: Send + Sync + 'static {
    /// Perform a read (a request/response call).
    fn read(&self, req: Value) -> BoxFuture<'static, Result<Reply, DriverError>>;
    /// Perform a write. Devices that are read-only keep the default.
    fn write(&self, _data: Value) -> BoxFuture<'static, Result<Reply, DriverError>> {
        Box::pin(async { Err(DriverError::Unsupported) })
    }
    /// Release external resources. Called once, when the owning process exits.
    fn close(&self) {}
}
