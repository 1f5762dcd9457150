//! The `log://` scheme: this run's action rows as a read-only ledger (PLURNK.md §2.3).
//!
//! Rows are addressed `log:///<loop>/<turn>/<seq>[/<OP>]` (1-based ordinals; globs allowed:
//! `log:///1/**/READ`). READ shows rows, FIND lists their metas, OPEN and FOLD change what
//! the next packet shows — a successful OPEN/FOLD writes no row (the next render is the
//! receipt), a no-op answers 304. KILL on the log is 405 (append-only); EDIT never gets here
//! (only the engine writes the log: 403 at the writer check).
//!
//! **Invariants:** nothing here writes the store; folds leave as `(row, expanded)` changes
//! committed with the turn; rows still awaiting a proposal decision are invisible.

use agentos_abi::Syscalls;
use serde_json::json;

use super::dispatch::{Action, DispatchCtx};
use super::Address;
use crate::content::{self, Glob};
use crate::grammar::{Body, Op, Statement};
use crate::store::{LogRow, RowState};

fn selected<'a>(
    log: &'a [LogRow],
    s: &Statement,
    pathname: &str,
) -> Result<Vec<&'a LogRow>, Box<Action>> {
    let glob = Glob::new(pathname)
        .map_err(|e| Action::status(e.status(), format!("{} {e}", e.status())))?;
    let all = pathname == "/" || pathname == "/**";
    let matcher = match &s.body {
        Some(Body::Matcher(m)) if !m.raw.trim().is_empty() => Some(m),
        _ => None,
    };
    let mut out = Vec::new();
    for r in log.iter().filter(|r| r.state != Some(RowState::Proposed)) {
        let coord = format!("/{}/{}/{}", r.loop_seq, r.turn_seq, r.sequence);
        let full = format!("{coord}/{}", r.op.as_str());
        if !(all || glob.matches(&coord) || glob.matches(&full)) {
            continue;
        }
        if let Some(m) = matcher {
            let text = r.rx.as_deref().unwrap_or("");
            match content::match_content(m, text, "text/markdown") {
                Ok(o) if o.status == 200 => {}
                Ok(_) => continue,
                Err(e) if e.status() == 415 => continue,
                Err(e) => {
                    return Err(Box::new(Action::status(
                        e.status(),
                        format!("{} {e}", e.status()),
                    )))
                }
            }
        }
        out.push(r);
    }
    if let Some(lm) = &s.line_marker {
        let n = out.len() as i64;
        let idx = |m: f64| if m < 0.0 { n + 1 + m as i64 } else { m as i64 };
        let (a, b) = match lm.marks.as_slice() {
            [a] if a.fract() == 0.0 => (idx(*a), idx(*a)),
            [a, b] if a.fract() == 0.0 && b.fract() == 0.0 => (idx(*a), idx(*b)),
            _ => {
                return Err(Box::new(Action::status(
                    416,
                    "416 a result range takes one or two integer positions",
                )))
            }
        };
        if n > 0 && (a < 1 || b > n || a > b) {
            return Err(Box::new(Action::status(
                416,
                format!("416 results {a}..{b} of {n}"),
            )));
        }
        out = out
            .into_iter()
            .skip(a.max(1) as usize - 1)
            .take((b - a + 1).max(0) as usize)
            .collect();
    }
    Ok(out)
}

/// Dispatches an op on a `log://` target.
pub fn dispatch<S: Syscalls>(
    ctx: &mut DispatchCtx<'_, '_, S>,
    s: &Statement,
    addr: &Address,
) -> Vec<Action> {
    let Address::Log { pathname } = addr else {
        return vec![Action::status(400, "400 not a log address")];
    };
    if matches!(s.op, Op::Kill | Op::Edit) {
        return vec![Action::status(405, "405 the log is append-only")];
    }
    if s.op == Op::Send {
        return vec![Action::status(501, "501 log:// takes no SEND")];
    }
    let rows = match selected(ctx.log, s, pathname) {
        Ok(r) => r,
        Err(a) => return vec![*a],
    };
    match s.op {
        Op::Read => {
            if rows.is_empty() {
                return vec![Action::status(404, format!("404 no log row at {pathname}"))];
            }
            let mut text = String::new();
            for r in &rows {
                text.push_str(&crate::turn::render::meta_line(r));
                text.push('\n');
                if let Some(rx) = &r.rx {
                    text.push_str(rx);
                    text.push('\n');
                }
            }
            vec![Action::ok(text)]
        }
        Op::Find => {
            let items: Vec<_> = rows
                .iter()
                .map(|r| {
                    json!({
                        "path": r.path(),
                        "op": r.op.as_str(),
                        "status": r.status,
                        "tokens": r.tokens,
                        "display": if r.expanded { "open" } else { "folded" },
                        "target": r.target.as_ref().map(|t| t.uri()),
                    })
                })
                .collect();
            let status = if items.is_empty() { 204 } else { 200 };
            vec![Action {
                status,
                rx: Some(serde_json::Value::Array(items).to_string()),
                mimetype_rx: Some("application/json".into()),
                writes_row: true,
                ..Action::default()
            }]
        }
        Op::Open | Op::Fold => {
            let want = s.op == Op::Open;
            if rows.is_empty() {
                return vec![Action::status(404, format!("404 no log row at {pathname}"))];
            }
            let folds: Vec<_> = rows
                .iter()
                .filter(|r| r.expanded != want)
                .map(|r| (r.id, want))
                .collect();
            if folds.is_empty() {
                let state = if want { "open" } else { "folded" };
                return vec![Action::status(304, format!("304 already {state}"))];
            }
            vec![Action {
                status: 200,
                folds,
                writes_row: false,
                ..Action::default()
            }]
        }
        _ => vec![Action::status(
            501,
            format!("501 log:// does not implement {}", s.op),
        )],
    }
}
