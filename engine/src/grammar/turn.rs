//! The turn parser: checks the sandwich a model turn must have (PLURNK.md §1.5).
//!
//! `free preamble (no <<OP) · <<PLAN…:PLAN · ops separated only by whitespace ·
//! terminal <<SEND[code]…:SEND`, then nothing but whitespace. A broadcast SEND (no path)
//! may only end the turn; directed SENDs (with a path) are ordinary ops.
//!
//! **Invariant:** a turn is valid iff the statement parse has no error-severity item, no
//! unparsed tail, and no sandwich violation; [`TurnParse::turn`] is `Some` exactly then.
//!
//! **API boundary:** [`parse_turn`]; violations are [`ParseError`]s (source `parser`) so
//! they render like every other error.

use serde::Serialize;

use super::ast::{ErrorSource, Item, Op, ParseError, ParseResult, Position, Severity, Statement};
use super::parser::parse;

/// A valid turn, split into its parts.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    /// Free text before the PLAN, if any non-whitespace text was there.
    pub preamble: Option<String>,
    /// The opening PLAN.
    pub plan: Statement,
    /// The ops between PLAN and the terminal SEND, in order.
    pub ops: Vec<Statement>,
    /// The terminal broadcast SEND.
    pub send: Statement,
}

impl Turn {
    /// PLAN, ops and SEND in emission order.
    pub fn statements(&self) -> Vec<Statement> {
        let mut v = Vec::with_capacity(self.ops.len() + 2);
        v.push(self.plan.clone());
        v.extend(self.ops.iter().cloned());
        v.push(self.send.clone());
        v
    }

    /// The terminal SEND's code.
    pub fn code(&self) -> Option<i64> {
        self.send.signal_int()
    }
}

/// The result of [`parse_turn`]. Serializes as the parse result plus `valid` and
/// `violations`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TurnParse {
    /// The statement-level parse.
    #[serde(flatten)]
    pub result: ParseResult,
    /// Whether the turn is valid.
    pub valid: bool,
    /// Sandwich violations, in order.
    pub violations: Vec<ParseError>,
    /// The turn, when valid.
    #[serde(skip)]
    pub turn: Option<Turn>,
}

fn violation(p: Position, message: impl Into<String>) -> ParseError {
    ParseError {
        line: p.line,
        column: p.column,
        source: ErrorSource::Parser,
        severity: Severity::Error,
        message: message.into(),
    }
}

/// Position just past the end of `text`.
fn end_position(text: &str) -> Position {
    let b = text.as_bytes();
    let lines = memchr::memchr_iter(b'\n', b).count() as u32;
    let last = memchr::memrchr(b'\n', b).map_or(0, |i| i + 1);
    Position {
        line: lines + 1,
        column: text[last..].chars().count() as u32,
    }
}

fn is_terminal_send(s: &Statement) -> bool {
    s.op == Op::Send && s.target.is_none()
}

/// Parses a model turn and checks the sandwich.
pub fn parse_turn(text: &str) -> TurnParse {
    let result = parse(text);
    let mut violations = Vec::new();
    let statements: Vec<&Statement> = result.statements().collect();
    let end = end_position(text);

    match statements.first() {
        None => violations.push(violation(
            end,
            "a turn must start with <<PLAN; got end of input",
        )),
        Some(first) if first.op != Op::Plan => violations.push(violation(
            first.position,
            format!("a turn must start with <<PLAN; got <<{}", first.op),
        )),
        Some(_) => {}
    }
    let last_idx = statements.len().checked_sub(1);
    if let Some(last) = statements.last().filter(|_| statements.len() > 1) {
        if !is_terminal_send(last) || last.signal_int().is_none() {
            violations.push(violation(
                end,
                "a turn must end with a terminal <<SEND[code]; got end of input",
            ));
        }
    } else if statements.len() == 1 {
        violations.push(violation(
            end,
            "a turn must end with a terminal <<SEND[code]; got end of input",
        ));
    }
    for (i, s) in statements.iter().enumerate() {
        if is_terminal_send(s) && Some(i) != last_idx {
            violations.push(violation(
                s.position,
                "a broadcast <<SEND may only end the turn",
            ));
        }
    }

    // Text placement: anything before the first statement is preamble; after it only
    // whitespace may appear (whitespace-only runs never become text items).
    let mut seen_statement = false;
    let mut statements_seen = 0usize;
    let mut preamble = None;
    for item in &result.items {
        match item {
            Item::Statement { .. } => {
                seen_statement = true;
                statements_seen += 1;
            }
            Item::Text { text, position } => {
                if !seen_statement {
                    preamble = Some(text.clone());
                } else if statements_seen == statements.len() {
                    violations.push(violation(
                        *position,
                        "nothing may follow the terminal <<SEND; got text",
                    ));
                } else {
                    violations.push(violation(
                        *position,
                        "only whitespace may separate operations; got text",
                    ));
                }
            }
            Item::Error { .. } => {}
        }
    }
    violations.sort_by_key(|v| (v.line, v.column));

    let valid = violations.is_empty() && !result.has_errors();
    let turn = if valid {
        match (statements.first(), statements.last()) {
            (Some(plan), Some(send)) => Some(Turn {
                preamble,
                plan: (*plan).clone(),
                ops: statements[1..statements.len() - 1]
                    .iter()
                    .map(|s| (*s).clone())
                    .collect(),
                send: (*send).clone(),
            }),
            _ => None,
        }
    } else {
        None
    };
    TurnParse {
        valid: turn.is_some(),
        result,
        violations,
        turn,
    }
}
