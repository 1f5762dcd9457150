//! # agentos-net — node transports
//!
//! This crate owns the wire between kernels. A transport moves **opaque payloads addressed to
//! nodes**: the kernel seals each envelope (HMAC over to, nonce, ts, body) before handing it
//! to [`Transport::send`], and verifies it after the transport hands it to the [`Ingress`]
//! callback, so nothing here parses, trusts or grants anything.
//!
//! - [`TcpTransport`] (module [`tcp`]): one outbound connection per peer; frames are
//!   `[u32 LE length][postcard Frame]` ([`frame`]: `Hello`, `Data`, `Bye`), batched so that
//!   everything queued for a peer goes out in one `write_all`; a bounded pending queue per
//!   peer whose overflow is [`SendError::Full`] (the payload is handed back: that is the
//!   backpressure API); reconnect with exponential backoff and seeded jitter ([`Backoff`]);
//!   `PeerEvent::Up`/`Down` as links come and go; a maximum frame size.
//! - [`NatsTransport`] (module [`nats`]): a small NATS protocol client over tokio; each node
//!   subscribes to `<prefix>.<node>` and publishes to its peers' subjects, so a cluster can
//!   grow past hand-wired peers.
//!
//! [`PeerEgress`] (module [`egress`]) is a route to one peer over any transport, in the form a
//! kernel takes it (`Kernel::connect(node, egress)`).
//!
//! Transports run on a tokio runtime of their own (or one supplied by the host) and are
//! driven from plain threads: `send` never blocks, `close` blocks until flushed (bounded).
//! Counters are exposed as [`TransportStats`].
//!
//! **Invariant:** only `net` opens sockets; a transport never inspects a payload and never
//! grants authority (an envelope is sealed by the kernel before it reaches a transport and
//! verified by the kernel after it leaves one). A malformed or oversized frame closes that
//! connection, never the node, and is counted. Nothing reachable from network input panics.
//! Per peer, payloads are written in send order; `Up` and `Down` alternate per peer.
//!
//! **API boundary:** depends on `agentos-abi` only (for `NodeId`), never on the kernel. The
//! kernel holds a `dyn Transport`: it calls `send(to, sealed_bytes)` for egress and receives
//! `(from, sealed_bytes)` through the `Ingress` callback and reachability through
//! `PeerEvents`; the `from` a transport reports is a claim that only the seal can confirm.

pub mod backoff;
pub mod egress;
pub mod frame;
pub mod nats;
mod runtime;
pub mod stats;
pub mod tcp;
pub mod transport;

pub use backoff::Backoff;
pub use egress::PeerEgress;
pub use nats::{NatsConfig, NatsTransport};
pub use stats::TransportStats;
pub use tcp::{TcpConfig, TcpTransport};
pub use transport::{Ingress, NetError, PeerEvent, PeerEvents, SendError, Transport};

// The README is the crate page on a registry; its examples run as doctests here (`cargo xtask
// tidy` checks that this hook exists and that the README has a Rust example).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
