//! Transport sealing: HMAC-SHA256 envelopes, a freshness window and a nonce guard.
//!
//! A [`Sealer`] holds the cluster key, this node's id, a per-boot epoch and the nonce sequence.
//! `seal` writes the postcard bytes of `(to, nonce, ts, body)` and appends the HMAC of exactly
//! those bytes, so `open` verifies the MAC (ring's constant-time `hmac::verify`) over the bytes
//! as they arrived before decoding anything the sender chose. [`NonceGuard`] rejects a nonce
//! seen before inside the freshness window with bounded memory: per sending (node, epoch) a
//! sliding bitmap of the last [`REPLAY_WINDOW`] sequence numbers, like IPsec's anti-replay
//! window, and a cap on how many (node, epoch) pairs it tracks.
//!
//! **Invariant:** nothing reaches a process from the wire unless its MAC verified, it is
//! addressed to this node, it is fresh, and its nonce is new; a failed check never panics.

use agentos_abi::wire::{Addr, Nonce};
use agentos_abi::{NodeId, Pid};
use bytes::Bytes;
use ring::hmac;
use rustc_hash::FxHashMap;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use thiserror::Error;

/// Sequence numbers older than the newest by this much are refused (as replays).
pub const REPLAY_WINDOW: u64 = 4096;
const WORDS: usize = (REPLAY_WINDOW / 64) as usize;
const MAC_LEN: usize = 32;

/// Why an envelope was dropped at ingress.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum IngressError {
    /// Not a well-formed envelope (truncated, trailing bytes, bad encoding).
    #[error("transport: malformed envelope — dropped ({0})")]
    Malformed(String),
    /// The MAC does not verify: forged, tampered, or sealed with another key.
    #[error("transport: bad MAC (forged or tampered) — dropped")]
    Forged,
    /// Addressed to another node.
    #[error("transport: misaddressed envelope (for node \"{0}\") — dropped")]
    Misaddressed(String),
    /// Outside the freshness window.
    #[error("transport: stale or future envelope (ts {ts}, now {now}) — dropped")]
    Stale {
        /// The envelope's timestamp.
        ts: u64,
        /// This node's wire clock.
        now: u64,
    },
    /// The nonce was seen before (or is older than the replay window).
    #[error("transport: replayed nonce — dropped")]
    Replayed,
    /// The target process is dead or its mailbox is full.
    #[error("transport: undeliverable ({0}) — dropped")]
    Undeliverable(String),
    /// This kernel has no transport key.
    #[error("transport: this kernel is not configured for the network")]
    NotConfigured,
}

/// Why an envelope could not be sealed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SealError {
    /// The body does not serialize (a `Body::Local`, say).
    #[error("seal: body cannot be encoded: {0}")]
    Encode(String),
}

/// An envelope whose MAC verified, not yet checked for freshness, address or replay. Its
/// names borrow from the received bytes (no allocation on the ingress path).
#[derive(Debug)]
pub struct Opened<'a> {
    /// Destination node.
    pub to_node: &'a str,
    /// Destination process (`Pid::KERNEL`: the control channel).
    pub to_pid: Pid,
    /// The sending node (from the nonce).
    pub from: &'a str,
    /// The sender's boot epoch.
    pub epoch: u64,
    /// The sender's sequence number.
    pub seq: u64,
    /// Sender's wire clock at sealing.
    pub ts: u64,
    /// The postcard bytes of the body.
    pub body: &'a [u8],
}

impl Opened<'_> {
    /// The destination as an owned address.
    pub fn to(&self) -> Addr {
        Addr {
            node: NodeId::from(self.to_node),
            pid: self.to_pid,
        }
    }
    /// The nonce as an owned value.
    pub fn nonce(&self) -> Nonce {
        Nonce {
            node: NodeId::from(self.from),
            epoch: self.epoch,
            seq: self.seq,
        }
    }
}

/// `Addr` and `Nonce` as they sit in the received bytes (same encoding, borrowed strings).
#[derive(serde::Deserialize)]
struct AddrRef<'a> {
    node: &'a str,
    pid: Pid,
}

#[derive(serde::Deserialize)]
struct NonceRef<'a> {
    node: &'a str,
    epoch: u64,
    seq: u64,
}

/// Seals and opens envelopes for one node.
pub struct Sealer {
    key: hmac::Key,
    node: NodeId,
    epoch: u64,
    seq: AtomicU64,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("node", &self.node)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer for `node` with the shared cluster `key` and this boot's `epoch`.
    pub fn new(node: NodeId, key: &[u8], epoch: u64) -> Self {
        Sealer {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            node,
            epoch,
            seq: AtomicU64::new(0),
        }
    }

    /// This node's id.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// Seal `body` (anything that serializes as a `WireBody`) for `to` at wire time `ts`.
    pub fn seal<B: Serialize + ?Sized>(
        &self,
        to: &Addr,
        ts: u64,
        body: &B,
    ) -> Result<Bytes, SealError> {
        let nonce = Nonce {
            node: self.node.clone(),
            epoch: self.epoch,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
        };
        let enc = |e: postcard::Error| SealError::Encode(e.to_string());
        // Size the body first (a cheap walk) so it is encoded once, in place, after its length.
        let len = postcard::experimental::serialized_size(body).map_err(enc)?;
        let cap = len + to.node.0.len() + self.node.0.len() + 80;
        let out = postcard::to_extend(&(to, &nonce, ts, len as u64), Vec::with_capacity(cap))
            .map_err(enc)?;
        let mut out = postcard::to_extend(body, out).map_err(enc)?;
        let tag = hmac::sign(&self.key, &out);
        out.extend_from_slice(tag.as_ref());
        Ok(Bytes::from(out))
    }

    /// Verify an encoded envelope's MAC and split it; nothing else is checked here.
    pub fn open<'a>(&self, bytes: &'a [u8]) -> Result<Opened<'a>, IngressError> {
        let bad = |e: postcard::Error| IngressError::Malformed(e.to_string());
        if bytes.len() < MAC_LEN {
            return Err(IngressError::Malformed("shorter than a MAC".into()));
        }
        let (signed, mac) = bytes.split_at(bytes.len() - MAC_LEN);
        let ((to, nonce, ts), rest) =
            postcard::take_from_bytes::<(AddrRef<'a>, NonceRef<'a>, u64)>(signed).map_err(bad)?;
        let (len, body) = postcard::take_from_bytes::<u64>(rest).map_err(bad)?;
        if body.len() as u64 != len {
            return Err(IngressError::Malformed(format!(
                "body length {len}, {} bytes present",
                body.len()
            )));
        }
        hmac::verify(&self.key, signed, mac).map_err(|_| IngressError::Forged)?;
        Ok(Opened {
            to_node: to.node,
            to_pid: to.pid,
            from: nonce.node,
            epoch: nonce.epoch,
            seq: nonce.seq,
            ts,
            body,
        })
    }
}

struct Window {
    top: u64,
    bits: [u64; WORDS],
    last_seen: u64,
}

impl Window {
    fn new(seq: u64, now: u64) -> Self {
        let mut w = Window {
            top: seq,
            bits: [0; WORDS],
            last_seen: now,
        };
        w.set(seq);
        w
    }
    fn bit(seq: u64) -> (usize, u64) {
        let i = seq % REPLAY_WINDOW;
        ((i / 64) as usize, 1u64 << (i % 64))
    }
    fn set(&mut self, seq: u64) {
        let (w, b) = Self::bit(seq);
        self.bits[w] |= b;
    }
    fn admit(&mut self, seq: u64, now: u64) -> bool {
        self.last_seen = now;
        if seq > self.top {
            // Clear the slots the window slides over.
            let gap = seq - self.top;
            if gap >= REPLAY_WINDOW {
                self.bits = [0; WORDS];
            } else {
                for s in self.top + 1..=seq {
                    let (w, b) = Self::bit(s);
                    self.bits[w] &= !b;
                }
            }
            self.top = seq;
            self.set(seq);
            return true;
        }
        if self.top - seq >= REPLAY_WINDOW {
            return false;
        }
        let (w, b) = Self::bit(seq);
        if self.bits[w] & b != 0 {
            return false;
        }
        self.bits[w] |= b;
        true
    }
}

/// Rejects nonces seen before, with bounded memory (see the module docs).
pub struct NonceGuard {
    /// Per sending node, its boot epochs' windows (a node has one live epoch, rarely more).
    windows: FxHashMap<NodeId, Vec<(u64, Window)>>,
    tracked: usize,
    window_ms: u64,
    cap: usize,
}

impl NonceGuard {
    /// Forget senders silent for `window_ms`; track at most `cap` (node, epoch) pairs.
    pub fn new(window_ms: u64, cap: usize) -> Self {
        NonceGuard {
            windows: FxHashMap::default(),
            tracked: 0,
            window_ms,
            cap: cap.max(1),
        }
    }

    /// True the first time `nonce` is seen; false on a replay. `now` is the wire clock.
    pub fn admit(&mut self, nonce: &Nonce, now: u64) -> bool {
        self.admit_parts(&nonce.node.0, nonce.epoch, nonce.seq, now)
    }

    /// [`NonceGuard::admit`] on the nonce's parts, as ingress has them (no allocation unless
    /// the sender is new).
    pub fn admit_parts(&mut self, node: &str, epoch: u64, seq: u64, now: u64) -> bool {
        if let Some(ws) = self.windows.get_mut(node) {
            if let Some((_, w)) = ws.iter_mut().find(|(e, _)| *e == epoch) {
                return w.admit(seq, now);
            }
        }
        if self.tracked >= self.cap {
            self.evict(now);
        }
        self.windows
            .entry(NodeId::from(node))
            .or_default()
            .push((epoch, Window::new(seq, now)));
        self.tracked += 1;
        true
    }

    /// Make room: forget senders silent past the window, else the longest silent one.
    fn evict(&mut self, now: u64) {
        let window_ms = self.window_ms;
        for ws in self.windows.values_mut() {
            ws.retain(|(_, w)| now.saturating_sub(w.last_seen) <= window_ms);
        }
        self.windows.retain(|_, ws| !ws.is_empty());
        self.tracked = self.windows.values().map(Vec::len).sum();
        if self.tracked < self.cap {
            return;
        }
        let oldest = self
            .windows
            .iter()
            .flat_map(|(n, ws)| ws.iter().map(move |(e, w)| (w.last_seen, n.clone(), *e)))
            .min_by_key(|(t, _, _)| *t);
        if let Some((_, n, e)) = oldest {
            if let Some(ws) = self.windows.get_mut(&n) {
                ws.retain(|(x, _)| *x != e);
                if ws.is_empty() {
                    self.windows.remove(&n);
                }
            }
            self.tracked -= 1;
        }
    }

    /// (node, epoch) pairs tracked.
    pub fn len(&self) -> usize {
        self.tracked
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.tracked == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentos_abi::wire::{Envelope, WireBody};
    use agentos_abi::{Body, Pid, Value};

    fn addr(n: &str, p: u64) -> Addr {
        Addr {
            node: NodeId::from(n),
            pid: Pid(p),
        }
    }

    fn msg() -> WireBody {
        WireBody::Msg {
            from: Pid(3),
            body: Body::Value(Value::Str("hello".into())),
            corr: Some(9),
        }
    }

    #[test]
    fn sealed_bytes_are_the_postcard_envelope_and_open_verifies() {
        let s = Sealer::new(NodeId::from("a"), b"key", 7);
        let bytes = s.seal(&addr("b", 4), 1000, &msg()).unwrap();
        let env: Envelope = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(env.to, addr("b", 4));
        assert_eq!((env.nonce.epoch, env.nonce.seq, env.ts), (7, 0, 1000));
        let o = s.open(&bytes).unwrap();
        assert_eq!(o.to(), addr("b", 4));
        assert_eq!(o.nonce(), env.nonce);
        let body: WireBody = postcard::from_bytes(o.body).unwrap();
        assert!(matches!(body, WireBody::Msg { corr: Some(9), .. }));
        let second = s.seal(&addr("b", 4), 1000, &msg()).unwrap();
        assert_eq!(s.open(&second).unwrap().seq, 1, "nonces increase");
    }

    #[test]
    fn a_flipped_bit_anywhere_or_another_key_is_forged() {
        let s = Sealer::new(NodeId::from("a"), b"key", 7);
        let bytes = s.seal(&addr("b", 4), 1000, &msg()).unwrap().to_vec();
        for i in 0..bytes.len() {
            let mut t = bytes.clone();
            t[i] ^= 0x01;
            assert!(s.open(&t).is_err(), "byte {i} flipped still opened");
        }
        let other = Sealer::new(NodeId::from("a"), b"other key", 7);
        assert_eq!(other.open(&bytes).unwrap_err(), IngressError::Forged);
        for cut in [0, 5, bytes.len() - 1] {
            assert!(s.open(&bytes[..cut]).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(s.open(&longer).is_err(), "trailing bytes");
    }

    #[test]
    fn the_nonce_guard_admits_once_tolerates_reordering_and_refuses_old() {
        let mut g = NonceGuard::new(300_000, 16);
        let n = |seq| Nonce {
            node: NodeId::from("a"),
            epoch: 1,
            seq,
        };
        assert!(g.admit(&n(5), 0));
        assert!(!g.admit(&n(5), 0), "replay");
        assert!(g.admit(&n(3), 0), "late but new");
        assert!(!g.admit(&n(3), 0));
        assert!(g.admit(&n(5 + REPLAY_WINDOW), 0));
        assert!(!g.admit(&n(5), 0), "older than the window");
        assert!(g.admit(&n(6 + REPLAY_WINDOW), 0));
        let other_epoch = Nonce {
            node: NodeId::from("a"),
            epoch: 2,
            seq: 5,
        };
        assert!(g.admit(&other_epoch, 0), "a restarted sender starts afresh");
    }

    #[test]
    fn the_nonce_guard_memory_is_bounded() {
        let mut g = NonceGuard::new(1_000, 8);
        for e in 0..100u64 {
            let n = Nonce {
                node: NodeId::from("x"),
                epoch: e,
                seq: 0,
            };
            assert!(g.admit(&n, e * 10));
            assert!(g.len() <= 8);
        }
    }
}
