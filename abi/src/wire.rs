//! The wire between nodes: addresses, nonces, the sealed envelope and what it carries.
//!
//! A kernel seals every envelope it sends to a peer with HMAC-SHA256 over the canonical
//! postcard bytes of `(to, nonce, ts, body)` and verifies, checks freshness and rejects
//! replayed nonces on the way in. Transports (the `net` crate) carry the encoded envelope as
//! opaque bytes to a node and never grant authority: an envelope names a process, it never
//! holds a capability. Encoded, an envelope is exactly the postcard encoding of [`Envelope`]:
//! `to, nonce, ts`, the body's length and its postcard bytes ([`WireBody`]), then the 32-byte
//! MAC — so a receiver can verify the MAC over the bytes as they arrived before it decodes
//! anything the sender chose.

use crate::exit::ExitReason;
use crate::ids::{NodeId, Pid};
use crate::msg::Body;
use crate::value::Value;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Where an envelope goes: a process on a node, or (pid 0) the node's control channel.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Addr {
    /// The destination node.
    pub node: NodeId,
    /// The destination process; `Pid::KERNEL` (0) is the control channel.
    pub pid: Pid,
}

/// A sender-unique nonce: the sending node, a per-boot epoch (so a restarted node never reuses
/// a nonce still inside the freshness window) and a sequence number.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Nonce {
    /// The sending node (the envelope's `from`).
    pub node: NodeId,
    /// A random value fixed for the sending kernel's life.
    pub epoch: u64,
    /// Increases by one per envelope the sender seals.
    pub seq: u64,
}

/// A sealed envelope, as encoded on the wire.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// Destination.
    pub to: Addr,
    /// Sender and uniqueness.
    pub nonce: Nonce,
    /// The sender's wire clock (ms) when sealed; checked against a freshness window.
    pub ts: u64,
    /// The postcard bytes of a [`WireBody`].
    pub body: Bytes,
    /// HMAC-SHA256 over the postcard bytes of `(to, nonce, ts)` followed by `body`.
    pub mac: [u8; 32],
}

/// What an envelope carries.
#[derive(Debug, Serialize, Deserialize)]
pub enum WireBody {
    /// A message for the process at `to`.
    Msg {
        /// The sending process (on the nonce's node).
        from: Pid,
        /// The payload (never a system message or a local value).
        body: Body,
        /// Correlation id.
        corr: Option<u64>,
    },
    /// A process the `to` process monitors died (sent to the watcher).
    Down {
        /// The dead process, on the sender's node.
        pid: Pid,
        /// Why.
        reason: ExitReason,
    },
    /// Control: spawn the image registered under `name` and report back.
    SpawnReq {
        /// The requesting process (it gets a proxy cap; the spawned one gets one back).
        reply: Pid,
        /// The registered image name.
        name: String,
        /// Args for its main.
        args: Value,
        /// Matches the reply.
        corr: u64,
    },
    /// Control: the answer to a `SpawnReq`.
    SpawnRep {
        /// The request's correlation id.
        corr: u64,
        /// The new pid, or why not.
        result: Result<Pid, String>,
    },
    /// Control: `watcher` (on the sender's node) monitors `target` (on this node).
    MonReq {
        /// The watching process.
        watcher: Pid,
        /// The watched process.
        target: Pid,
    },
}

/// A route to one peer node: how a kernel hands it encoded envelopes. Implemented by the
/// transports; `send` never blocks. A refusal hands the bytes back (backpressure).
pub trait Egress: Send + Sync {
    /// Queue one encoded envelope for the peer.
    fn send(&self, envelope: Bytes) -> Result<(), EgressError>;
}

/// Why a transport refused an envelope.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// The peer's bounded queue is full; try again later.
    #[error("egress: the peer's queue is full")]
    Full(Bytes),
    /// The route is closed (peer gone or transport shut down).
    #[error("egress: the route is closed")]
    Closed(Bytes),
}

impl EgressError {
    /// Take the refused bytes back.
    pub fn into_bytes(self) -> Bytes {
        match self {
            EgressError::Full(b) | EgressError::Closed(b) => b,
        }
    }
}

impl<F: Fn(Bytes) -> Result<(), EgressError> + Send + Sync> Egress for F {
    fn send(&self, envelope: Bytes) -> Result<(), EgressError> {
        self(envelope)
    }
}

/// The first byte of a sealed gateway payload's body: no [`WireBody`] variant encodes to it,
/// so a gateway payload is never taken for a kernel envelope, nor the other way round.
pub const GATEWAY_BODY_TAG: u8 = 0x47;

/// Seals gateway payloads with a node's transport key and opens them — the secure gateway's
/// view of the kernel's sealer. A sealed payload is an [`Envelope`] addressed to the node's
/// control channel whose body is [`GATEWAY_BODY_TAG`] followed by the postcard bytes of a
/// [`Value`]; opening checks the MAC, the address, freshness and the nonce, as kernel ingress
/// does for envelopes.
pub trait GatewaySeal: Send + Sync {
    /// This node's id (what inbound payloads must be addressed to).
    fn node(&self) -> NodeId;
    /// Seal `body` for node `to`.
    fn seal(&self, to: &NodeId, body: &Value) -> Result<Bytes, GatewaySealError>;
    /// Verify a payload sealed for this node and take out its sender and body.
    fn open(&self, sealed: &[u8]) -> Result<(NodeId, Value), GatewaySealError>;
}

/// A gateway payload could not be sealed or was refused on opening.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GatewaySealError {
    /// The body could not be encoded.
    #[error("gateway seal: {0}")]
    Encode(String),
    /// The payload was refused (malformed, forged, misaddressed, stale or replayed).
    #[error("gateway: {0}")]
    Refused(String),
}
