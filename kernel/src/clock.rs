//! The kernel clock and its timers.
//!
//! One clock per kernel, in milliseconds. A [`Clock::Virtual`] clock advances only when the
//! scheduler finds nothing runnable and fires the earliest timer, which is what makes
//! deterministic mode reproducible; a real clock reads a monotonic `Instant`. Timers are a
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
    /// Terminate a process whose deadline passed.
    Deadline(Pid),
    /// Terminate a process whose wall-time quota ran out.
    Wall(Pid),
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

/// The clock source.
#[derive(Debug)]
pub enum Clock {
    /// Time moves only when the scheduler advances it.
    Virtual {
        /// Current time in ms.
        now: u64,
    },
    /// Wall time since the kernel started.
    Real {
        /// The kernel's start instant.
        start: Instant,
    },
}

impl Clock {
    /// Current kernel time in ms.
    #[inline]
    pub fn now(&self) -> u64 {
        match self {
            Clock::Virtual { now } => *now,
            Clock::Real { start } => start.elapsed().as_millis() as u64,
        }
    }
    /// Whether this is a virtual clock.
    pub fn is_virtual(&self) -> bool {
        matches!(self, Clock::Virtual { .. })
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
