//! The kernel-facing side of a transport: a route to one peer as an `agentos_abi::wire::Egress`.
//!
//! A kernel routes envelopes to a peer through an [`Egress`]; [`PeerEgress`] is that route over
//! any [`Transport`]. A full pending queue comes back as `EgressError::Full` (backpressure the
//! kernel hands to the sending process with its body); every other refusal is `Closed`.

use crate::transport::{SendError, Transport};
use agentos_abi::wire::{Egress, EgressError};
use agentos_abi::NodeId;
use bytes::Bytes;
use std::sync::Arc;

/// A route to `node` over a transport.
pub struct PeerEgress {
    transport: Arc<dyn Transport>,
    node: NodeId,
}

impl PeerEgress {
    /// The route to `node` through `transport` (which must know the peer).
    pub fn new(transport: Arc<dyn Transport>, node: NodeId) -> Arc<Self> {
        Arc::new(PeerEgress { transport, node })
    }
}

impl Egress for PeerEgress {
    fn send(&self, envelope: Bytes) -> Result<(), EgressError> {
        self.transport
            .send(&self.node, envelope)
            .map_err(|e| match e {
                SendError::Full(b) => EgressError::Full(b),
                other => EgressError::Closed(other.into_payload()),
            })
    }
}
