//! The journal: driver I/O results keyed by (pid, per-process op counter), and the stores that
//! make them durable.
//!
//! Modes (the seed's `journaled`): [`JournalMode::Live`] touches drivers and records nothing;
//! `Record` appends every result to the store; `Replay` answers every op from the recorded
//! [`Journal`] and never touches a driver; `Recover` replays the recorded prefix, then continues
//! live and appends to the same store. Records hold results only (value + cost, or the error
//! text) — never the request, so a prompt is never stored per call.
//!
//! **Invariant:** a store never misreads: every frame carries its length and a CRC-32, and a
//! torn or corrupt tail is truncated on open, keeping every complete frame before it.

mod store;

pub use store::{FileStore, FsyncPolicy, MemoryStore, OpenReport, Store, StoreError, StoreStats};

use agentos_abi::Reply;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

/// What the kernel does with driver I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum JournalMode {
    /// Call drivers, record nothing.
    #[default]
    Live,
    /// Call drivers and append every result to the store.
    Record,
    /// Answer every op from the recorded journal; never call a driver.
    Replay,
    /// Replay the recorded prefix, then continue live, appending.
    Recover,
}

/// One journaled result: the driver's reply (value + cost) or its error text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum IoResult {
    /// The driver answered.
    Ok(Reply),
    /// The driver failed with this message.
    Err(String),
}

/// A frame in a store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Record {
    /// The result of driver op `op` of process `pid`.
    Io {
        /// The process.
        pid: u64,
        /// Its op counter at the call.
        op: u64,
        /// What came back.
        result: IoResult,
    },
}

/// The replay index: (pid, op) → result.
#[derive(Default, Debug)]
pub struct Journal {
    io: FxHashMap<(u64, u64), IoResult>,
}

impl Journal {
    /// An empty journal.
    pub fn new() -> Self {
        Self::default()
    }
    /// Index a recorded run.
    pub fn from_records(recs: &[Record]) -> Self {
        let mut j = Journal::new();
        j.io.reserve(recs.len());
        for r in recs {
            match r {
                Record::Io { pid, op, result } => j.record(*pid, *op, result.clone()),
            }
        }
        j
    }
    /// Add one result.
    pub fn record(&mut self, pid: u64, op: u64, r: IoResult) {
        self.io.insert((pid, op), r);
    }
    /// The recorded result of (pid, op).
    pub fn get(&self, pid: u64, op: u64) -> Option<&IoResult> {
        self.io.get(&(pid, op))
    }
    /// Number of results.
    pub fn len(&self) -> usize {
        self.io.len()
    }
    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.io.is_empty()
    }
}
