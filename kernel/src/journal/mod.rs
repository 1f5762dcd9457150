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
    /// A kernel event, persisted beside the I/O records in record mode (the seed's
    /// `{kind: "event"}` records), so the audit trail outlives the process.
    Event(agentos_abi::Event),
}

/// The kernel events a store holds, in emission order (the seed's `eventsFromStore`).
/// Events are appended outside the kernel lock, so two scheduler threads may interleave their
/// batches in the store; sorting by sequence number restores the order.
pub fn events_from_store(records: &[Record]) -> Vec<agentos_abi::Event> {
    let mut evs: Vec<agentos_abi::Event> = records
        .iter()
        .filter_map(|r| match r {
            Record::Event(e) => Some(e.clone()),
            Record::Io { .. } => None,
        })
        .collect();
    evs.sort_by_key(|e| e.seq);
    evs
}

/// The replay index: (pid, op) → result. Op counters are dense per process, so each pid
/// gets a vector indexed by op: a lookup is one small hash plus an index, in op order.
#[derive(Default, Debug)]
pub struct Journal {
    io: FxHashMap<u64, Vec<Option<IoResult>>>,
    /// Ops far past a process's dense prefix (only a damaged or hand-made journal has them):
    /// kept sparse so a wild op number cannot make the index allocate without bound.
    sparse: FxHashMap<(u64, u64), IoResult>,
    len: usize,
}

/// How far past its dense prefix a process's op may land before it is kept sparse.
const DENSE_GAP: u64 = 1 << 16;

impl Journal {
    /// An empty journal.
    pub fn new() -> Self {
        Self::default()
    }
    /// Index a recorded run.
    pub fn from_records(recs: Vec<Record>) -> Self {
        let mut j = Journal::new();
        for r in recs {
            match r {
                Record::Io { pid, op, result } => j.record(pid, op, result),
                Record::Event(_) => {}
            }
        }
        j
    }
    /// Add one result (a later record for the same op replaces the earlier).
    pub fn record(&mut self, pid: u64, op: u64, r: IoResult) {
        let ops = self.io.entry(pid).or_default();
        let fresh = if op >= ops.len() as u64 + DENSE_GAP {
            self.sparse.insert((pid, op), r).is_none()
        } else {
            let i = op as usize;
            if ops.len() <= i {
                ops.resize_with(i + 1, || None);
            }
            ops[i].replace(r).is_none()
        };
        if fresh {
            self.len += 1;
        }
    }
    /// The recorded result of (pid, op).
    #[inline]
    pub fn get(&self, pid: u64, op: u64) -> Option<&IoResult> {
        let dense = self
            .io
            .get(&pid)
            .and_then(|ops| ops.get(usize::try_from(op).ok()?)?.as_ref());
        match dense {
            Some(r) => Some(r),
            None if self.sparse.is_empty() => None,
            None => self.sparse.get(&(pid, op)),
        }
    }
    /// Number of results.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wild_op_number_is_indexed_sparsely_not_allocated_densely() {
        let mut j = Journal::new();
        j.record(1, 0, IoResult::Err("a".into()));
        j.record(1, u64::MAX, IoResult::Err("b".into()));
        j.record(1, 0, IoResult::Err("a2".into()));
        assert_eq!(j.len(), 2, "a re-recorded op replaces");
        assert_eq!(j.get(1, 0), Some(&IoResult::Err("a2".into())));
        assert_eq!(j.get(1, u64::MAX), Some(&IoResult::Err("b".into())));
        assert_eq!(j.get(1, 1), None);
        assert_eq!(j.io[&1].len(), 1, "no dense growth toward the wild op");
    }
}
