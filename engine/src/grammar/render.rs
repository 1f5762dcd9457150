//! The renderer: AST → canonical statement text.
//!
//! Canonical form: no whitespace between slots, tags joined by `,` with no spaces, marks
//! joined by `,`, `::` for an empty body. The suffix is kept unless the body contains the
//! close literal it implies; then the first of `1`, `2`, … that is safe is used, so the
//! output always parses back.
//!
//! **Invariant:** for every statement the parser produces, `parse(render(s))` yields `s`
//! again (positions aside) — the property test in `tests/roundtrip.rs` checks it.
//!
//! **API boundary:** [`render_statement`] and [`render_statements`]; infallible. Values a
//! parser could never produce (a `)` or newline in a non-regex path, a tag containing `,`)
//! are made representable: `)` → `%29`, newline → `%0A`, `<<` → `%3C<`; tags lose `,`,
//! `]` and whitespace.

use std::fmt::Write as _;

use super::ast::{format_mark, ParsedPath, Signal, Statement};

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Whether `body` followed by the close literal `:tag` would close early.
fn body_closes_early(body: &str, tag: &str) -> bool {
    let (b, t) = (body.as_bytes(), tag.as_bytes());
    memchr::memchr_iter(b':', b).any(|k| {
        b.get(k + 1..k + 1 + t.len()) == Some(t)
            && b.get(k + 1 + t.len()).is_none_or(|&c| !is_ident(c))
    })
}

/// The suffix a statement is rendered with: its own when safe, else the first safe of
/// `1`, `2`, ….
pub fn safe_suffix(s: &Statement) -> String {
    let own: String = s
        .suffix
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let body = s.body_raw();
    let kw = s.op.keyword();
    if !body_closes_early(body, &format!("{kw}{own}")) {
        return own;
    }
    (1u64..)
        .map(|n| n.to_string())
        .find(|sfx| !body_closes_early(body, &format!("{kw}{sfx}")))
        .unwrap_or_default()
}

fn path_text(p: &ParsedPath) -> String {
    match p {
        ParsedPath::Regex { raw, .. } => raw.replace('\n', "%0A").replace("<<", "%3C<"),
        _ => p
            .raw()
            .replace(')', "%29")
            .replace('\n', "%0A")
            .replace("<<", "%3C<"),
    }
}

/// Renders one statement canonically.
pub fn render_statement(s: &Statement) -> String {
    let suffix = safe_suffix(s);
    let body = s.body_raw();
    let mut out = String::with_capacity(body.len() + 32);
    out.push_str("<<");
    out.push_str(s.op.keyword());
    out.push_str(&suffix);
    match &s.signal {
        None => {}
        Some(Signal::Tags(tags)) => {
            out.push('[');
            let clean = tags
                .iter()
                .map(|t| {
                    t.chars()
                        .filter(|c| !matches!(c, ',' | ']') && !c.is_whitespace())
                        .collect::<String>()
                })
                .filter(|t| !t.is_empty() && !t.contains("<<"));
            for (i, t) in clean.enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&t);
            }
            out.push(']');
        }
        Some(Signal::Int(n)) => {
            let _ = write!(out, "[{n}]");
        }
        Some(Signal::Name(n)) => {
            let _ = write!(out, "[{n}]");
        }
    }
    if let Some(t) = &s.target {
        out.push('(');
        out.push_str(&path_text(t));
        out.push(')');
    }
    if let Some(lm) = &s.line_marker {
        out.push('<');
        for (i, m) in lm.marks.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&format_mark(*m));
        }
        out.push('>');
    }
    out.push(':');
    out.push_str(body);
    out.push(':');
    out.push_str(s.op.keyword());
    out.push_str(&suffix);
    out
}

/// Renders statements one per line.
pub fn render_statements(statements: &[Statement]) -> String {
    let mut out = String::new();
    for (i, s) in statements.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&render_statement(s));
    }
    out
}
