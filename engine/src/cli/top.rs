//! `agentos top`: a live terminal view of a daemon (ratatui).
//!
//! Once a second it asks the daemon for `daemon.stats` (loops, turns, tokens, cost, the
//! active and recently ended loops) and `kernel.ps` (the process table), derives token and
//! cost rates from two samples, and draws three panes: the header with totals and rates,
//! the loops, the processes. `q` or Esc quits (Ctrl-C too). [`render`] is a pure function of
//! a [`Snapshot`], so the view is tested on ratatui's `TestBackend` without a terminal.
//!
//! **Invariant:** the terminal is restored on every exit path (ratatui's `init`/`restore`
//! around the loop; a panic hook installed by `init`).
//! **API boundary:** [`TopArgs`], [`top`], [`Snapshot`], [`render`].

use std::time::{Duration, Instant};

use clap::Args;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table};
use ratatui::Frame;
use serde_json::{json, Value};

use crate::daemon::client::Client;

/// `agentos top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// The daemon to watch.
    #[arg(long, value_name = "URL", default_value = "ws://127.0.0.1:3044")]
    pub connect: String,
    /// Seconds between refreshes.
    #[arg(long, value_name = "S", default_value_t = 1.0)]
    pub interval: f64,
}

/// One sample of the daemon, plus rates against the previous one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// The daemon's address.
    pub addr: String,
    /// `daemon.stats` as returned.
    pub stats: Value,
    /// `kernel.ps` processes as returned.
    pub processes: Vec<Value>,
    /// Tokens per second since the previous sample.
    pub tokens_per_s: f64,
    /// US dollars per hour since the previous sample.
    pub usd_per_hour: f64,
}

fn num(v: &Value, k: &str) -> i64 {
    v.get(k).and_then(Value::as_i64).unwrap_or(0)
}

fn tokens(stats: &Value) -> i64 {
    num(&stats["tokens"], "prompt") + num(&stats["tokens"], "completion")
}

/// Draws a snapshot.
pub fn render(f: &mut Frame<'_>, s: &Snapshot) {
    let [head, loops, procs] = Layout::vertical([
        Constraint::Length(5),
        Constraint::Percentage(45),
        Constraint::Min(3),
    ])
    .areas(f.area());
    let st = &s.stats;
    let header = vec![
        Line::from(format!(
            "agentos top · {} · {} connection(s) · q quits",
            s.addr,
            num(st, "connections")
        )),
        Line::from(format!(
            "loops: {} active, {} queued in all · turns {} · rows {}",
            num(st, "loopsActive"),
            num(st, "loopsQueued"),
            num(st, "turns"),
            num(st, "rows")
        )),
        Line::from(format!(
            "tokens {} ({:.0}/s) · cost ${:.6} (${:.4}/h)",
            tokens(st),
            s.tokens_per_s,
            num(st, "costPico") as f64 / 1e12,
            s.usd_per_hour
        )),
    ];
    f.render_widget(Paragraph::new(header).block(Block::bordered()), head);
    let mut rows: Vec<Row<'_>> = Vec::new();
    for l in st["activeLoops"].as_array().into_iter().flatten() {
        rows.push(Row::new(vec![
            num(l, "loopId").to_string(),
            num(l, "runId").to_string(),
            num(l, "status").to_string(),
            l["prompt"].as_str().unwrap_or("").to_owned(),
        ]));
    }
    for l in st["recentLoops"].as_array().into_iter().flatten() {
        rows.push(
            Row::new(vec![
                num(l, "loopId").to_string(),
                num(l, "runId").to_string(),
                num(l, "status").to_string(),
                l["message"].as_str().unwrap_or("").to_owned(),
            ])
            .style(Style::default().add_modifier(Modifier::DIM)),
        );
    }
    let loops_table = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Length(6),
            Constraint::Length(7),
            Constraint::Min(10),
        ],
    )
    .header(Row::new(vec!["loop", "run", "status", "prompt / outcome"]))
    .block(Block::bordered().title("loops (active, then recently ended)"));
    f.render_widget(loops_table, loops);
    let prow: Vec<Row<'_>> = s
        .processes
        .iter()
        .map(|p| {
            Row::new(vec![
                num(p, "pid").to_string(),
                p["name"].as_str().unwrap_or("").to_owned(),
                p["status"].as_str().unwrap_or("").to_owned(),
                num(p, "mailbox").to_string(),
                num(&p["usage"], "tokens").to_string(),
            ])
        })
        .collect();
    let ps = Table::new(
        prow,
        [
            Constraint::Length(6),
            Constraint::Min(12),
            Constraint::Length(9),
            Constraint::Length(6),
            Constraint::Length(10),
        ],
    )
    .header(Row::new(vec!["pid", "name", "state", "mbox", "tokens"]))
    .block(Block::bordered().title("processes"));
    f.render_widget(ps, procs);
}

async fn sample(
    c: &Client,
    addr: &str,
    prev: Option<(&Snapshot, Instant)>,
) -> Result<Snapshot, String> {
    let stats = c
        .call("daemon.stats", json!({}))
        .await
        .map_err(|e| e.to_string())?;
    let ps = c
        .call("kernel.ps", json!({}))
        .await
        .map_err(|e| e.to_string())?;
    let mut s = Snapshot {
        addr: addr.to_owned(),
        processes: ps["processes"].as_array().cloned().unwrap_or_default(),
        stats,
        ..Snapshot::default()
    };
    if let Some((p, at)) = prev {
        let dt = at.elapsed().as_secs_f64().max(1e-3);
        s.tokens_per_s = (tokens(&s.stats) - tokens(&p.stats)).max(0) as f64 / dt;
        let dc = (num(&s.stats, "costPico") - num(&p.stats, "costPico")).max(0) as f64 / 1e12;
        s.usd_per_hour = dc / dt * 3600.0;
    }
    Ok(s)
}

/// Runs `agentos top`.
pub fn top(a: TopArgs) -> std::process::ExitCode {
    use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
    let url = super::run::ws_url(&a.connect);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("agentos top: cannot start a runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let client = match rt.block_on(Client::connect(&url)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("agentos top: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let interval = Duration::from_secs_f64(a.interval.clamp(0.1, 60.0));
    let mut terminal = ratatui::init();
    let mut last: Option<(Snapshot, Instant)> = None;
    let result = loop {
        let snap = match rt.block_on(sample(&client, &url, last.as_ref().map(|(s, t)| (s, *t)))) {
            Ok(s) => s,
            Err(e) => break Err(e),
        };
        if let Err(e) = terminal.draw(|f| render(f, &snap)) {
            break Err(e.to_string());
        }
        last = Some((snap, Instant::now()));
        // Wait for a key up to the interval; q / Esc / Ctrl-C quit.
        match event::poll(interval) {
            Ok(true) => match event::read() {
                Ok(Event::Key(k)) if k.kind == KeyEventKind::Press => {
                    let ctrl_c =
                        k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                    if matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c {
                        break Ok(());
                    }
                }
                Ok(_) => {}
                Err(e) => break Err(e.to_string()),
            },
            Ok(false) => {}
            Err(e) => break Err(e.to_string()),
        }
    };
    ratatui::restore();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agentos top: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn screen(s: &Snapshot) -> String {
        let mut t = Terminal::new(TestBackend::new(90, 24)).expect("terminal");
        t.draw(|f| render(f, s)).expect("draw");
        let buf = t.backend().buffer().clone();
        let mut out = String::new();
        for y in 0..buf.area.height {
            for x in 0..buf.area.width {
                out.push_str(buf[(x, y)].symbol());
            }
            out.push('\n');
        }
        out
    }

    #[test]
    fn the_view_shows_totals_rates_loops_and_processes() {
        let s = Snapshot {
            addr: "127.0.0.1:3044".into(),
            stats: json!({
                "connections": 2, "loopsActive": 1, "loopsQueued": 3, "turns": 7, "rows": 40,
                "tokens": {"prompt": 1000, "completion": 234}, "costPico": 1_500_000_000_000i64,
                "activeLoops": [{"loopId": 3, "runId": 2, "status": 102, "prompt": "fix the bug"}],
                "recentLoops": [{"loopId": 2, "runId": 1, "status": 200, "message": "done"}],
            }),
            processes: vec![
                json!({"pid": 5, "name": "engine", "status": "waiting", "mailbox": 0, "usage": {"tokens": 1234}}),
            ],
            tokens_per_s: 42.0,
            usd_per_hour: 0.5,
        };
        let text = screen(&s);
        assert!(
            text.contains("agentos top · 127.0.0.1:3044 · 2 connection(s)"),
            "{text}"
        );
        assert!(
            text.contains("loops: 1 active, 3 queued in all · turns 7 · rows 40"),
            "{text}"
        );
        assert!(
            text.contains("tokens 1234 (42/s) · cost $1.500000 ($0.5000/h)"),
            "{text}"
        );
        assert!(text.contains("fix the bug"), "{text}");
        assert!(text.contains("done"), "{text}");
        assert!(text.contains("engine"), "{text}");
        assert!(text.contains("waiting"), "{text}");
    }
}
