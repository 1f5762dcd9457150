//! # agentos-net — node transports
//!
//! This crate will own the wire between kernels: framed, length-prefixed postcard over TCP
//! (reconnect with exponential backoff and jitter, a bounded pending queue, a maximum frame
//! size, batched writes) and a NATS transport so a cluster can grow past hand-wired peers.
//!
//! **Invariant:** only `net` opens sockets; an envelope is sealed by the kernel before it reaches
//! a transport and verified by the kernel after it leaves one, so a transport never sees or
//! grants authority. A malformed or oversized frame closes that connection, never the node.
//!
//! **API boundary:** depends on `agentos-abi` only (the wire envelope type); the kernel hands it
//! sealed envelopes through an egress callback and receives them through `ingress`.
//!
//! Status: the transports land with the net issue; until then this crate holds only this essay.
