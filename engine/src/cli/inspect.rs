//! `agentos sessions` and `agentos log [LOOP]`: reading the store.
//!
//! Both read the sessions database directly (`--db`, else `$AGENTOS_DATA_DIR/sessions.db`),
//! so they work whether or not a daemon is running (SQLite WAL keeps readers unblocked).
//! `log` renders a loop's rows as the model saw them (folded rows as their meta line).
//!
//! **Invariant:** read-only: neither verb writes to the store.
//! **API boundary:** [`SessionsArgs`], [`LogArgs`], [`sessions`], [`log`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use super::{emit, open_store};
use crate::store::{LoopId, LoopRow, Store};
use crate::turn::render;

/// `agentos sessions`.
#[derive(Debug, Args)]
pub struct SessionsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The sessions database (default: $AGENTOS_DATA_DIR/sessions.db).
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
}

/// `agentos log`.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// The loop id (default: the newest loop).
    #[arg(value_name = "LOOP")]
    pub loop_id: Option<LoopId>,
    /// Print the rows as JSON lines instead.
    #[arg(long)]
    pub json: bool,
    /// The sessions database (default: $AGENTOS_DATA_DIR/sessions.db).
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
}

fn fail(verb: &str, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("agentos {verb}: {e}");
    ExitCode::from(1)
}

/// Runs `agentos sessions`.
pub fn sessions(a: SessionsArgs) -> ExitCode {
    let store = match open_store(a.db.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail("sessions", e),
    };
    let list = match store.sessions() {
        Ok(l) => l,
        Err(e) => return fail("sessions", e),
    };
    let mut out = String::new();
    if a.json {
        let v: Vec<_> = list
            .iter()
            .map(crate::daemon::methods::session_json)
            .collect();
        out = json!({ "sessions": v }).to_string();
        out.push('\n');
    } else if list.is_empty() {
        out.push_str("no sessions yet (start one with `agentos run \"task\"`)\n");
    } else {
        out.push_str(&format!(
            "{:>6}  {:<24}  {:>5}  {:>12}  project\n",
            "id", "name", "runs", "cost $"
        ));
        for s in &list {
            let runs = store.runs(s.id).map(|r| r.len()).unwrap_or(0);
            out.push_str(&format!(
                "{:>6}  {:<24}  {:>5}  {:>12.6}  {}\n",
                s.id,
                s.name,
                runs,
                s.cost_pico as f64 / 1e12,
                s.project_root.as_deref().unwrap_or("(headless)")
            ));
        }
    }
    emit(&out)
}

fn newest_loop(store: &Store) -> Result<Option<LoopRow>, crate::store::StoreError> {
    let mut best: Option<LoopRow> = None;
    for s in store.sessions()? {
        for r in store.runs(s.id)? {
            if let Some(l) = store.loops(r.id)?.into_iter().max_by_key(|l| l.id) {
                if best.as_ref().is_none_or(|b| l.id > b.id) {
                    best = Some(l);
                }
            }
        }
    }
    Ok(best)
}

/// Runs `agentos log`.
pub fn log(a: LogArgs) -> ExitCode {
    let store = match open_store(a.db.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail("log", e),
    };
    let lp = match a.loop_id {
        Some(id) => match store.loop_row(id) {
            Ok(l) => l,
            Err(e) => return fail("log", format!("{e} (list loops with `agentos sessions`)")),
        },
        None => match newest_loop(&store) {
            Ok(Some(l)) => l,
            Ok(None) => return fail("log", "the store has no loops yet (run one with `agentos run \"task\"`; AGENTOS_DATA_DIR or --db picks the store)"),
            Err(e) => return fail("log", e),
        },
    };
    let rows = match store.log_query(&crate::store::LogQuery {
        loop_id: Some(lp.id),
        ..Default::default()
    }) {
        Ok(r) => r,
        Err(e) => return fail("log", e),
    };
    let out = if a.json {
        let mut s = String::new();
        for r in &rows {
            s.push_str(&crate::daemon::methods::row_json(r).to_string());
            s.push('\n');
        }
        s
    } else {
        let mut s = render::render_rows(&rows);
        s.push_str(&format!(
            "\nloop {} · run {} · status {}{}\n",
            lp.id,
            lp.run_id,
            lp.status,
            lp.terminal_message
                .map(|m| format!(" · {m}"))
                .unwrap_or_default()
        ));
        s
    };
    emit(&out)
}
