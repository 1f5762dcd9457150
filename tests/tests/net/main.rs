//! Node transport scenarios: real TCP transports and a real `nats-server` on loopback.
//!
//! Waits are on channels with bounded timeouts (never sleeps used as synchronization).

mod cluster;
mod nats;
mod tcp;
mod util;
