//! # agentos-tests — cross-layer scenarios
//!
//! One integration-test crate, modules by area (see `tests/`).
