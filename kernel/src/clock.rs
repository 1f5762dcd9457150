//! The kernel clock and its timers.
//!
//! One clock per kernel, in milliseconds. A virtual clock ([`Clock::virtual_clock`]) advances
//! only when the scheduler finds nothing runnable and fires the earliest timer, which is what
//! makes deterministic mode reproducible; a real clock reads a monotonic `Instant`. Timers are a
//! binary heap with lazy cancellation: each timer carries a token and the process it targets
//! remembers the token it still wants, so cancelling is O(1) and a stale timer is ignored when
//! it pops.

use agentos_abi::Pid;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// What a timer does when it fires.
#[derive(Clone, Copy, PartialEq, Eq, Debug, PartialOrd, Ord)]
pub enum TimerKind {
    /// Wake a sleeping process.
    Wake(Pid),
    /// End a timed park (a receive or `await_start` with a deadline), if its token is current.
    Park(Pid),
    /// Terminate a process whose deadline passed.
    Deadline(Pid),
    /// Terminate a process whose wall-time quota ran out.
    Wall(Pid),
    /// Fail a `spawn_remote` (by correlation id) still unanswered.
    SpawnTimeout(u64),
}

/// A pending timer.
#[derive(Clone, Copy, PartialEq, Eq, Debug, PartialOrd, Ord)]
pub struct Timer {
    /// Kernel-clock time (ms) at which it fires.
    pub fire: u64,
    /// Unique token (also the FIFO tie-break for equal fire times).
    pub token: u64,
    /// What to do.
    pub kind: TimerKind,
}

/// The clock source. Reading it is cheap but the kernel still caches it: `now` is read once
/// per dispatch (and by the `now`/`sleep` syscalls), because a `clock_gettime` per event was
/// the single largest cost on the message path.
#[derive(Debug)]
pub struct Clock {
    /// `None` for a virtual clock.
    start: Option<Instant>,
    /// The current (virtual) or last-read (real) time in ms.
    now: u64,
}

impl Clock {
    /// A virtual clock at 0 ms.
    pub fn virtual_clock() -> Self {
        Clock {
            start: None,
            now: 0,
        }
    }
    /// A real clock starting now at 0 ms.
    pub fn real() -> Self {
        Clock {
            start: Some(Instant::now()),
            now: 0,
        }
    }
    /// The cached kernel time in ms.
    #[inline]
    pub fn now(&self) -> u64 {
        self.now
    }
    /// Re-read a real clock (no-op for a virtual one); returns the time.
    #[inline]
    pub fn refresh(&mut self) -> u64 {
        if let Some(s) = self.start {
            self.now = self.now.max(s.elapsed().as_millis() as u64);
        }
        self.now
    }
    /// Move a virtual clock forward to `t` (never backward; no-op for a real clock).
    pub fn advance_to(&mut self, t: u64) {
        if self.start.is_none() {
            self.now = self.now.max(t);
        }
    }
    /// Whether this is a virtual clock.
    pub fn is_virtual(&self) -> bool {
        self.start.is_none()
    }
}

/// The timer heap.
#[derive(Default, Debug)]
pub struct Timers {
    heap: BinaryHeap<Reverse<Timer>>,
    seq: u64,
}

impl Timers {
    /// Arm a timer at absolute time `fire`; returns its token.
    pub fn arm(&mut self, fire: u64, kind: TimerKind) -> u64 {
        self.seq += 1;
        self.heap.push(Reverse(Timer {
            fire,
            token: self.seq,
            kind,
        }));
        self.seq
    }
    /// The earliest pending fire time.
    pub fn next_fire(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse(t)| t.fire)
    }
    /// Pop the earliest timer if it is due at `now`.
    pub fn pop_due(&mut self, now: u64) -> Option<Timer> {
        match self.heap.peek() {
            Some(Reverse(t)) if t.fire <= now => self.heap.pop().map(|Reverse(t)| t),
            _ => None,
        }
    }
    /// Pop the earliest timer regardless of time (virtual-clock advance).
    pub fn pop_next(&mut self) -> Option<Timer> {
        self.heap.pop().map(|Reverse(t)| t)
    }
    /// Number of pending timers (stale ones included until they pop).
    pub fn len(&self) -> usize {
        self.heap.len()
    }
    /// Whether no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_pop_in_fire_then_arm_order() {
        let mut t = Timers::default();
        let a = t.arm(10, TimerKind::Wake(Pid(1)));
        let b = t.arm(5, TimerKind::Wake(Pid(2)));
        let c = t.arm(10, TimerKind::Wake(Pid(3)));
        assert_eq!(t.pop_due(4), None);
        assert_eq!(t.pop_due(5).map(|x| x.token), Some(b));
        assert_eq!(t.pop_next().map(|x| x.token), Some(a));
        assert_eq!(t.pop_next().map(|x| x.token), Some(c));
        assert!(t.is_empty());
    }
}
