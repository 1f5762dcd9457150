//! # agentos-engine — the plurnk turn loop on kernel processes
//!
//! The engine runs the plurnk-style agent loop: a model emits heredoc statements
//! (`<<READ(src/lib.rs)<1,40>::READ`) against URI schemes, the engine dispatches them,
//! records every action as a log row, and keeps the loop on its rails (strikes, cycles,
//! command caps, budget). Runs are kernel processes, loops their children, and every effect
//! — a model call, a row, an entry write — is a device I/O charged to the run's account.
//!
//! ## What is here
//!
//! - [`grammar`] — the E2 heredoc grammar: the statement parser (items, errors in
//!   protocol vocabulary, recovery, `unparsedTail`), the typed AST with plurnk's JSON
//!   shape, the canonical renderer, the turn-sandwich checker and the GBNF generator. It
//!   is self-contained: a downstream user can take this module alone.
//! - [`rails`] — the runLoop rails as pure functions: per-op and turn fingerprints,
//!   `detect_cycle`, the strike verdict, streak → abandon, max-commands truncation.
//! - [`content`] — pure functions over entry content for the schemes: `<L>` slicing and
//!   the EDIT positional rules, structural `.json` edits, compiled globs, matcher bodies
//!   run to line spans, path mimetypes; errors carry plurnk's status (400/415/416/501).
//! - [`store`] — the sessions database (SQLite, plurnk's schema) and the `store` device.
//! - [`schemes`] — the scheme registry, the address rules and the ops of `known`,
//!   `unknown`, `plurnk` and `log`, COPY/MOVE.
//! - [`turn`] — the turn loop as run and loop processes: packet, grinder, steers, rails.
//! - [`host`] — [`Engine`], the API the CLI and the daemon call.
//! - `daemon` — `agentos serve`: JSON-RPC 2.0 over WebSocket, `/metrics`, `/healthz`;
//!   and `cli` — the `agentos` verbs (`run`, `serve`, `sessions`, `log`, `loop`, `parse`,
//!   `gbnf`). Both sit behind the default `daemon` feature (axum, tokio, clap).
//!
//! ## Design rules
//!
//! The parser is pure: it decides *shape* only. What a status means, how a path
//! resolves, how a line range applies — all of that belongs to the engine and the
//! schemes, never to the grammar. Rails are pure functions over plain data so the loop can
//! be tested turn by turn without a model.
//!
//! **Invariant:** parsing never panics and runs in linear time on any input.
//!
//! **Invariant:** the model never sees rail state (strike counts, cycle detection,
//! thresholds) — only the failures that actually happened.
//!
//! **API boundary:** may depend on every other workspace crate. The JSON produced for
//! statements and parse results is a wire contract (plurnk's statement shape).

#[cfg(feature = "daemon")]
pub mod cli;
pub mod content;
#[cfg(feature = "daemon")]
pub mod daemon;
pub mod grammar;
pub mod host;
pub mod rails;
pub mod replay;
pub mod schemes;
pub mod store;
pub mod turn;

pub use host::{Account, Engine, EngineError, LoopOptions};

// The README is the crate page on a registry; its examples run as doctests here (`cargo xtask
// tidy` checks that this hook exists and that the README has a Rust example).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
