//! Context memory as programs see it: segments, their ids, and paging statistics.
//!
//! A process's context is a set of segments (a body and its token count). The kernel keeps the
//! resident ones under the process's memory ceiling and pages the coldest out to swap, where
//! `recall` can find them again.

use crate::value::Value;
use serde::{Deserialize, Serialize};

/// A segment id, unique within a kernel and never reused.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct SegId(pub u64);

/// One segment of context.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Segment {
    /// Its id.
    pub id: SegId,
    /// The content.
    pub body: Value,
    /// Its size in tokens (counted by the kernel's token counter unless the program said).
    pub tokens: u64,
    /// Pinned segments never page out.
    pub pinned: bool,
    /// A summary the pager wrote in place of evicted segments.
    pub summary: bool,
}

/// A segment without its id: the durable form in snapshots and summaries.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct SegmentDump {
    /// The content.
    pub body: Value,
    /// Its size in tokens.
    pub tokens: u64,
    /// Pinned.
    pub pinned: bool,
    /// A pager summary.
    pub summary: bool,
}

/// Options for `remember`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RememberOpts {
    /// The token count, if the program knows it (else the kernel's counter decides).
    pub tokens: Option<u64>,
    /// Pin the segment (it never pages out).
    pub pin: bool,
}

/// Paging statistics of one process's context.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemStats {
    /// Resident segments.
    pub resident: usize,
    /// Swapped (paged-out) segments.
    pub swapped: usize,
    /// Resident tokens.
    pub size: u64,
    /// The ceiling in tokens (`None`: unlimited, nothing pages).
    pub ceiling: Option<u64>,
}
