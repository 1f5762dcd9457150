//! How a log row reads in the packet's log section and in `agentos log`.
//!
//! A row is one meta line — its handle, target, status and origin — and, when it is open
//! and has a result, the result fenced as `<<:::handle … :::handle` (the heredoc form the
//! model already reads). A folded row is its meta line only.
//!
//! **Invariant:** rendering is a pure function of the row.

use std::fmt::Write as _;

use crate::store::{LogRow, Origin};

/// The one-line meta of a row: `log:///1/2/3/READ known:///a.md 200`.
pub fn meta_line(r: &LogRow) -> String {
    let mut s = String::with_capacity(64);
    push_meta(&mut s, r);
    s
}

fn push_meta(s: &mut String, r: &LogRow) {
    let _ = write!(
        s,
        "log:///{}/{}/{}/{}",
        r.loop_seq,
        r.turn_seq,
        r.sequence,
        r.op.as_str()
    );
    if let Some(t) = &r.target {
        s.push(' ');
        s.push_str(&t.uri());
    }
    let _ = write!(s, " {}", r.status);
    if r.origin != Origin::Model {
        s.push_str(" (");
        s.push_str(r.origin.as_str());
        s.push(')');
    }
    if let Some(src) = &r.source {
        s.push_str(" from ");
        s.push_str(src);
    }
}

/// Appends a row as the model sees it (meta line, then the fenced result when open).
pub fn push_row(out: &mut String, r: &LogRow) {
    push_row_as(out, r, r.expanded);
}

fn push_row_as(out: &mut String, r: &LogRow, expanded: bool) {
    out.push_str("* ");
    push_meta(out, r);
    let body = r.rx.as_deref().filter(|b| !b.is_empty());
    if !expanded {
        if body.is_some() {
            out.push_str(" [folded]");
        }
        out.push('\n');
        return;
    }
    out.push('\n');
    if let Some(b) = body {
        let _ = writeln!(
            out,
            "<<:::log:///{}/{}/{}",
            r.loop_seq, r.turn_seq, r.sequence
        );
        out.push_str(b);
        if !b.ends_with('\n') {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            ":::log:///{}/{}/{}",
            r.loop_seq, r.turn_seq, r.sequence
        );
    }
}

/// Renders rows in order.
pub fn render_rows<'a>(rows: impl IntoIterator<Item = &'a LogRow>) -> String {
    let mut out = String::new();
    for r in rows {
        push_row(&mut out, r);
    }
    out
}

/// The render weight of a row when open (what `log_entries.tokens` stores).
pub fn open_tokens(r: &LogRow) -> i64 {
    let mut s = String::new();
    push_row_as(&mut s, r, true);
    super::count_tokens(&s) as i64
}

/// A row rendered as it is shown now, with its weight: the runner keeps one per log row so a
/// packet is a concatenation, not a re-render (rows change only when opened or folded).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RenderedRow {
    /// The row as the model sees it.
    pub text: String,
    /// Tokens of `text`.
    pub tokens: u64,
}

impl RenderedRow {
    /// Renders `r` in its current fold state.
    pub fn of(r: &LogRow) -> RenderedRow {
        let mut text = String::new();
        push_row(&mut text, r);
        let tokens = super::count_tokens(&text);
        RenderedRow { text, tokens }
    }
}
