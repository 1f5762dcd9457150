//! Exponential reconnect backoff with seeded jitter.

use agentos_abi::NodeId;
use std::time::Duration;

/// Exponential backoff with "equal jitter": attempt `k` waits a uniformly drawn duration in
/// `[d/2, d]` where `d = min(max, base * 2^k)`.
///
/// The jitter comes from a small seeded generator (splitmix64), so a given seed always yields
/// the same sequence of delays; peers get different seeds (see [`Backoff::for_peer`]) so that
/// nodes which lost a peer at the same instant do not reconnect in lockstep.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
    state: u64,
}

impl Backoff {
    /// A backoff starting at `base`, capped at `max`, with jitter drawn from `seed`.
    pub fn new(base: Duration, max: Duration, seed: u64) -> Self {
        Backoff {
            base,
            max: max.max(base),
            attempt: 0,
            state: seed,
        }
    }

    /// A backoff for the link to `peer`: the seed is mixed with a stable hash of the node id.
    pub fn for_peer(base: Duration, max: Duration, seed: u64, peer: &NodeId) -> Self {
        // FNV-1a: stable across runs and platforms, unlike the std hasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in peer.0.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Backoff::new(base, max, seed ^ h)
    }

    /// The delay before the next attempt; each call doubles the ceiling up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(31))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let span = (ceiling - half).as_nanos() as u64;
        let jitter = if span == 0 {
            0
        } else {
            self.next_u64() % (span + 1)
        };
        half + Duration::from_nanos(jitter)
    }

    /// Start again from `base` (after a successful connection).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_within_jitter_bounds_and_cap() {
        let base = Duration::from_millis(10);
        let max = Duration::from_millis(300);
        let mut b = Backoff::new(base, max, 42);
        for k in 0..40u32 {
            let ceiling = base.saturating_mul(1u32 << k.min(31)).min(max);
            let d = b.next_delay();
            assert!(d >= ceiling / 2 && d <= ceiling, "attempt {k}: {d:?}");
        }
        b.reset();
        assert!(b.next_delay() <= base);
    }

    #[test]
    fn same_seed_same_sequence_and_peers_differ() {
        let (base, max) = (Duration::from_millis(10), Duration::from_secs(5));
        let seq = |mut b: Backoff| (0..10).map(|_| b.next_delay()).collect::<Vec<_>>();
        let a = NodeId::from("a");
        assert_eq!(
            seq(Backoff::for_peer(base, max, 7, &a)),
            seq(Backoff::for_peer(base, max, 7, &a))
        );
        assert_ne!(
            seq(Backoff::for_peer(base, max, 7, &a)),
            seq(Backoff::for_peer(base, max, 7, &NodeId::from("b")))
        );
    }
}
