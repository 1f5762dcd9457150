//! Kernel lock hold times (the `lockstat` feature): how long the one kernel lock is held per
//! send, per receive and per dispatch. One lock caps the kernel at 1 / (hold per message)
//! messages per second however many cores it gets; these figures say what that ceiling is.
//!
//! Each measured critical section costs two monotonic clock reads, which the raw figures
//! include; [`clock_overhead_ns`] measures that cost so a report can subtract it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Which critical section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// `send`'s decision: resolve, check, deliver, wake.
    Send,
    /// `recv`'s take (including a poll that found the mailbox empty).
    Recv,
    /// The scheduler between two polls: file the last outcome, pick, dispatch.
    Dispatch,
}

const N: usize = 3;
static COUNT: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];
static NANOS: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];

pub(crate) fn record(k: Held, since: Instant) {
    let ns = since.elapsed().as_nanos() as u64;
    COUNT[k as usize].fetch_add(1, Ordering::Relaxed);
    NANOS[k as usize].fetch_add(ns, Ordering::Relaxed);
}

/// `(section, count, mean hold in ns)` for each measured section since the last reset.
pub fn report() -> Vec<(&'static str, u64, f64)> {
    ["send", "recv", "dispatch"]
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let c = COUNT[i].load(Ordering::Relaxed);
            let ns = NANOS[i].load(Ordering::Relaxed);
            (name, c, if c == 0 { 0.0 } else { ns as f64 / c as f64 })
        })
        .collect()
}

/// The mean cost of a clock read plus an `elapsed` (two reads), in ns. About half of it falls
/// inside each measured section.
pub fn clock_overhead_ns() -> f64 {
    let n = 100_000u32;
    let t = Instant::now();
    let mut sink = 0u128;
    for _ in 0..n {
        let s = Instant::now();
        sink = sink.wrapping_add(s.elapsed().as_nanos());
    }
    std::hint::black_box(sink);
    t.elapsed().as_nanos() as f64 / f64::from(n)
}

/// Zero the counters.
pub fn reset() {
    for i in 0..N {
        COUNT[i].store(0, Ordering::Relaxed);
        NANOS[i].store(0, Ordering::Relaxed);
    }
}
