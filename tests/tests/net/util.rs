//! Shared helpers: channel-backed ingress and event sinks, bounded waits, configs.

#![allow(dead_code)]

use agentos_abi::NodeId;
use agentos_net::{Ingress, PeerEvent, PeerEvents, TcpConfig, TcpTransport};
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The bound on every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(15);

/// A transport with the receiving ends of its ingress and event channels.
pub struct Node<T> {
    pub t: T,
    pub rx: Receiver<(NodeId, Bytes)>,
    pub ev: Receiver<PeerEvent>,
}

/// Ingress and event callbacks that forward into channels.
pub fn sinks() -> (
    Ingress,
    PeerEvents,
    Receiver<(NodeId, Bytes)>,
    Receiver<PeerEvent>,
) {
    let (in_tx, in_rx) = channel();
    let (ev_tx, ev_rx) = channel();
    let ingress: Ingress = Arc::new(move |from, payload| {
        let _ = in_tx.send((from, payload));
    });
    let events: PeerEvents = Arc::new(move |ev| {
        let _ = ev_tx.send(ev);
    });
    (ingress, events, in_rx, ev_rx)
}

pub fn id(name: &str) -> NodeId {
    NodeId::from(name)
}

pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A TCP config with fast reconnects for tests.
pub fn tcp_cfg(name: &str, listen: SocketAddr) -> TcpConfig {
    let mut cfg = TcpConfig::new(id(name), listen);
    cfg.backoff_base = Duration::from_millis(5);
    cfg.backoff_max = Duration::from_millis(100);
    cfg.connect_timeout = Duration::from_secs(2);
    cfg.handshake_timeout = Duration::from_secs(2);
    cfg
}

pub fn tcp_node(cfg: TcpConfig) -> Node<TcpTransport> {
    let (ingress, events, rx, ev) = sinks();
    let t = TcpTransport::bind(cfg, ingress, events).expect("bind");
    Node { t, rx, ev }
}

/// Receive exactly `n` payloads (panics with the count so far on timeout).
pub fn recv_n(rx: &Receiver<(NodeId, Bytes)>, n: usize) -> Vec<(NodeId, Bytes)> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(m) => got.push(m),
            Err(RecvTimeoutError::Timeout) => {
                panic!("timed out: received {} of {n} payloads", got.len())
            }
            Err(RecvTimeoutError::Disconnected) => panic!("ingress gone after {}", got.len()),
        }
    }
    got
}

/// Wait for `want`, skipping other events; returns the skipped ones.
pub fn wait_event(ev: &Receiver<PeerEvent>, want: &PeerEvent) -> Vec<PeerEvent> {
    let deadline = Instant::now() + WAIT;
    let mut skipped = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match ev.recv_timeout(left) {
            Ok(e) if &e == want => return skipped,
            Ok(e) => skipped.push(e),
            Err(_) => panic!("timed out waiting for {want:?}; saw {skipped:?}"),
        }
    }
}

/// Wait until every event of `want` has been seen, in any order; returns the others seen.
pub fn wait_all(ev: &Receiver<PeerEvent>, want: &[PeerEvent]) -> Vec<PeerEvent> {
    let deadline = Instant::now() + WAIT;
    let mut missing: Vec<PeerEvent> = want.to_vec();
    let mut others = Vec::new();
    while !missing.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        match ev.recv_timeout(left) {
            Ok(e) => match missing.iter().position(|m| m == &e) {
                Some(i) => {
                    missing.swap_remove(i);
                }
                None => others.push(e),
            },
            Err(_) => panic!("timed out waiting for {missing:?}; saw {others:?}"),
        }
    }
    others
}

/// Events already delivered, without waiting.
pub fn drain_events(ev: &Receiver<PeerEvent>) -> Vec<PeerEvent> {
    ev.try_iter().collect()
}

/// The payload `from->to#i`.
pub fn tagged(from: &str, to: &str, i: usize) -> Bytes {
    Bytes::from(format!("{from}->{to}#{i}"))
}

/// Check that `got` holds exactly `per_sender` payloads from each of `senders` addressed to
/// `to`, attributed to the right sender and in send order per sender.
pub fn check_tagged(got: &[(NodeId, Bytes)], to: &str, senders: &[&str], per_sender: usize) {
    let mut next: HashMap<String, usize> = senders.iter().map(|s| (s.to_string(), 0)).collect();
    for (from, payload) in got {
        let i = next
            .get_mut(&*from.0)
            .unwrap_or_else(|| panic!("payload from unexpected sender {from}"));
        assert_eq!(payload, &tagged(&from.0, to, *i), "order or attribution");
        *i += 1;
    }
    for s in senders {
        assert_eq!(next[*s], per_sender, "count from {s}");
    }
}
