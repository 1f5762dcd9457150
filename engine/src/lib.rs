//! # agentos-engine — the plurnk turn loop on kernel processes
//!
//! Owns the plurnk language layer (grammar, AST, GBNF, rails) and, later, the turn loop,
//! schemes, sessions DB, daemon and CLI.
//!
//! **Invariant:** parsing never panics and runs in linear time on any input.
//!
//! **API boundary:** may depend on every other workspace crate.
