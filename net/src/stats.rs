//! Transport counters.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a transport's counters (monotone since the transport started).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Payloads handed to ingress.
    pub frames_in: u64,
    /// Payload bytes handed to ingress.
    pub bytes_in: u64,
    /// Payloads written to a socket.
    pub frames_out: u64,
    /// Payload bytes written to a socket.
    pub bytes_out: u64,
    /// Connections closed because a length prefix exceeded the maximum frame.
    pub oversize_closes: u64,
    /// Connections closed because a frame (or protocol line) did not decode.
    pub malformed_closes: u64,
    /// Connections closed because the handshake failed or timed out.
    pub handshake_failures: u64,
    /// Inbound connections accepted.
    pub accepted: u64,
    /// Outbound links established (handshake completed).
    pub connects: u64,
    /// Outbound links re-established after an earlier one was lost.
    pub reconnects: u64,
    /// Outbound connection attempts that failed.
    pub connect_failures: u64,
    /// Payloads lost: in flight when a link failed, or still queued when the transport closed.
    pub dropped: u64,
    /// Sends refused with `SendError::Full`.
    pub rejected_full: u64,
    /// Received messages discarded before ingress (NATS: no valid sender subject).
    pub discarded_in: u64,
}

/// The live atomic counters behind [`TransportStats`].
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) frames_in: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) frames_out: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) oversize_closes: AtomicU64,
    pub(crate) malformed_closes: AtomicU64,
    pub(crate) handshake_failures: AtomicU64,
    pub(crate) accepted: AtomicU64,
    pub(crate) connects: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) rejected_full: AtomicU64,
    pub(crate) discarded_in: AtomicU64,
}

/// Add `n` to a counter.
pub(crate) fn bump(c: &AtomicU64, n: u64) {
    if n != 0 {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

impl Counters {
    pub(crate) fn snapshot(&self) -> TransportStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TransportStats {
            frames_in: g(&self.frames_in),
            bytes_in: g(&self.bytes_in),
            frames_out: g(&self.frames_out),
            bytes_out: g(&self.bytes_out),
            oversize_closes: g(&self.oversize_closes),
            malformed_closes: g(&self.malformed_closes),
            handshake_failures: g(&self.handshake_failures),
            accepted: g(&self.accepted),
            connects: g(&self.connects),
            reconnects: g(&self.reconnects),
            connect_failures: g(&self.connect_failures),
            dropped: g(&self.dropped),
            rejected_full: g(&self.rejected_full),
            discarded_in: g(&self.discarded_in),
        }
    }
}
