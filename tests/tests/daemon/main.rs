//! The daemon's JSON-RPC surface over a real WebSocket on loopback (PLURNK.md §4): an
//! in-process server on port 0, a multi-threaded kernel and a scripted model. One module
//! per thing guarded: the envelope and error codes, notifications, frame limits, membership,
//! a client's own ops, project roots, clients that go away, many clients at once, the drain.
//!
//! Deterministic: no sleeps; every wait is on a notification or a response, bounded by a
//! generous timeout that only turns a hang into a failure.

mod browser;
mod common;
mod concurrency;
mod dashboard;
mod disconnect;
mod drain;
mod envelope;
mod limits;
mod members;
mod notifications;
mod ops;
mod proposals;
mod sessions;
mod set_root;
