//! # agentos-tests — cross-layer scenarios
//!
//! The one integration-test crate of the workspace. Its tests live under `tests/tests/`, one
//! binary per area (`kernel/` today), with modules by topic inside; unit tests stay beside the
//! code they test. Every test is deterministic: a virtual clock, seeded randomness, no sleeps,
//! no outside network.
