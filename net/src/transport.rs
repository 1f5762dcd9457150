//! The transport contract shared by TCP and NATS: opaque payloads addressed to nodes.

use crate::stats::TransportStats;
use agentos_abi::NodeId;
use bytes::Bytes;
use std::fmt;
use std::sync::Arc;

/// Where received payloads go: called with the sending node and the payload, on a transport
/// thread, once per payload and in order per sending node. It must return quickly (hand the
/// payload off) and must not call back into the transport.
pub type Ingress = Arc<dyn Fn(NodeId, Bytes) + Send + Sync>;

/// Where peer reachability changes go; same threading rules as [`Ingress`].
pub type PeerEvents = Arc<dyn Fn(PeerEvent) + Send + Sync>;

/// A change in a peer's reachability. For each peer, `Up` and `Down` alternate, starting with
/// `Up`, while the transport runs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PeerEvent {
    /// The link to the peer is established: sends will be written to it.
    Up(NodeId),
    /// The link to the peer is lost (the kernel turns this into `noconnection` downs). Sends
    /// are still queued, up to the pending bound, while the transport reconnects.
    Down(NodeId),
}

/// Why a payload was not accepted for sending. Every variant hands the payload back.
#[derive(thiserror::Error)]
pub enum SendError {
    /// The bounded pending queue is full: backpressure; retry later or shed load.
    #[error("pending queue full")]
    Full(Bytes),
    /// The destination is not a peer of this transport.
    #[error("unknown peer")]
    UnknownPeer(Bytes),
    /// The transport is closed or closing.
    #[error("transport closed")]
    Closed(Bytes),
    /// The payload exceeds the transport's maximum frame or message size.
    #[error("payload of {} bytes is too large", .0.len())]
    TooLarge(Bytes),
}

impl SendError {
    /// The payload that was not sent.
    pub fn into_payload(self) -> Bytes {
        match self {
            SendError::Full(p)
            | SendError::UnknownPeer(p)
            | SendError::Closed(p)
            | SendError::TooLarge(p) => p,
        }
    }
}

impl fmt::Debug for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, p) = match self {
            SendError::Full(p) => ("Full", p),
            SendError::UnknownPeer(p) => ("UnknownPeer", p),
            SendError::Closed(p) => ("Closed", p),
            SendError::TooLarge(p) => ("TooLarge", p),
        };
        write!(f, "{name}(<{} bytes>)", p.len())
    }
}

/// Errors from creating or configuring a transport.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The listening socket could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The transport's tokio runtime could not be started.
    #[error("cannot start the transport runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The transport is closed.
    #[error("transport closed")]
    Closed,
    /// A node id or subject prefix cannot be used by this transport.
    #[error("invalid name {name:?}: {why}")]
    InvalidName {
        /// The offending name.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A bounded wait ran out.
    #[error("timed out")]
    Timeout,
}

/// A node transport: moves opaque, already-sealed payloads between nodes.
///
/// Implementations never inspect payloads and never grant authority; they own sockets,
/// framing, queues and reconnection. Object safe: the kernel holds a `Box<dyn Transport>`.
pub trait Transport: Send + Sync {
    /// This node's id (the `from` that peers see).
    fn node(&self) -> &NodeId;

    /// Queue `payload` for `to` without blocking. On success the payload will be written in
    /// order after everything queued before it, unless the link fails first (then it may be
    /// lost, as Erlang distribution loses messages on a lost connection, and `Down` is
    /// reported). On failure the payload is handed back.
    fn send(&self, to: &NodeId, payload: Bytes) -> Result<(), SendError>;

    /// Close gracefully: refuse new sends, flush what is queued to connected peers (bounded
    /// by the configured close timeout), then close every socket. Blocks the calling thread;
    /// never call it from an ingress or event callback. Idempotent.
    fn close(&self);

    /// A snapshot of the transport's counters.
    fn stats(&self) -> TransportStats;
}
