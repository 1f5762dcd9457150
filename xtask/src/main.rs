//! # xtask — agentos automation
//!
//! `cargo xtask ci | bench | tidy | demo`.
fn main() {}
