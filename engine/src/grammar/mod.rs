//! # The plurnk grammar (E2 heredoc form)
//!
//! A model emits statements `<<OPsuffix[signal](target)<L>:body:OPsuffix` (PLURNK.md
//! §1.1–§1.4). This module turns text into typed statements and back, checks the turn
//! sandwich, and generates the GBNF used for constrained decoding. It depends on nothing
//! else in the crate, so it can be taken alone.
//!
//! - [`parse`] / [`parse_with_stats`]: statements, errors and text in order, plus an
//!   optional `unparsedTail` ([`parser`]).
//! - [`parse_turn`]: the sandwich — preamble, PLAN first, whitespace between ops, terminal
//!   SEND ([`turn`]).
//! - [`render_statement`]: canonical text ([`render`]).
//! - [`gbnf()`]: the constrained-decoding grammar ([`mod@gbnf`]).
//! - [`parse_path`], [`decode_path_parens`]: target decomposition ([`target`]).
//!
//! **Invariants:** parsing never panics and is linear in the input; at most one error
//! per statement; the parser is pure (shape only) — status meanings, resolution and line
//! arithmetic belong to the engine.
//!
//! **API boundary:** the JSON shape of [`ParseResult`] and [`Statement`] is plurnk's
//! (`op, suffix, signal, target, lineMarker {marks}, body, position {line, column}`).

pub mod ast;
pub mod corpus;
pub mod gbnf;
pub mod matcher;
pub mod parser;
pub mod render;
pub mod target;
pub mod turn;

pub use ast::{
    format_mark, Body, Dialect, ErrorSource, Item, LineMarker, MatcherBody, Op, ParseError,
    ParseResult, ParsedPath, Position, QueryValue, SendBody, Severity, Signal, SignalKind,
    SlotRule, Statement, UnparsedTail,
};
pub use gbnf::{gbnf, GbnfOptions};
pub use parser::{parse, parse_with_stats, ParseStats};
pub use render::{render_statement, render_statements};
pub use target::{decode_path_parens, parse_path, PathError};
pub use turn::{parse_turn, Turn, TurnParse};
