//! `agentos run TASK` (and the older `agentos loop PROMPT`).
//!
//! `run` creates a session and a run, queues one loop and shows it live: each row as it is
//! committed (rendered as the model reads it), a progress line per turn (turn, tokens, cost,
//! elapsed). Embedded, the rows come from the store's commit events; with `--connect URL`
//! the same view is fed by the daemon's `log/entry` and `loop/terminated` notifications.
//! Ctrl-C cancels the loop (it ends 499, exit 130); a second Ctrl-C exits at once. With
//! `--json` the live view goes to stderr and stdout gets one JSON document: loop id,
//! terminal status, turns, usage, cost, wall time.
//!
//! Proposals (PLURNK.md §3.6): with `--yolo` the engine accepts them; on a terminal (stdin is
//! a tty) `run` asks the operator about each one on stderr (`[a]ccept / [r]eject / [d]iff`,
//! see `review`) and resolves it as the daemon's `loop.resolve` does — embedded through
//! `Engine::resolve`, with `--connect` from the daemon's `loop/proposal` notifications
//! through `loop.resolve`; without a terminal they are rejected at once (`no_review_channel`).
//! The hidden `--review` asks on stdin even when it is not a terminal (scripted answers).
//!
//! **Invariants:** the live view subscribes before the loop is queued, so it misses no
//! row; the exit status is a function of the loop's terminal status only (see the CLI's
//! module docs); stdin is read only when a proposal asks, never blocking the live view or
//! Ctrl-C (which cancels the loop even mid-question).
//! **API boundary:** [`RunArgs`], [`run`], [`loop_cmd`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Instant;

use clap::Args;
use serde_json::{json, Value};

use super::model::Model;
use super::review::{line_reader, Proposal, Review, Todo};
use super::{emit, exit_code_for, open_store, LoopArgs};
use crate::daemon::client::{Client, ClientError};
use crate::store::{status, LogRow, Origin, RowOp, RowState, StoreEvent, TurnRow};
use crate::turn::{render, EngineConfig, LoopFlags};
use crate::LoopOptions;

/// `agentos run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Drive a running daemon (`ws://127.0.0.1:3044`) instead of the embedded engine.
    #[arg(long, value_name = "URL")]
    pub connect: Option<String>,
    /// The project directory (default: the current directory when it is a git
    /// repository, else none: a headless session).
    #[arg(long, value_name = "DIR")]
    pub project: Option<PathBuf>,
    /// Accept every proposal without asking (else each is asked on the terminal, or
    /// rejected when stdin is not one).
    #[arg(long)]
    pub yolo: bool,
    /// Ask about proposals on stdin even when it is not a terminal (scripted answers, tests).
    #[arg(long, hide = true)]
    pub review: bool,
    /// Read-only: the loop runs in `ask` mode.
    #[arg(long)]
    pub ask: bool,
    /// Turn limit of the loop.
    #[arg(long, value_name = "N")]
    pub max_turns: Option<u32>,
    /// Token budget of the loop; past it the loop ends 413.
    #[arg(long, value_name = "N")]
    pub budget_tokens: Option<u64>,
    /// The model name to ask the endpoint for (default: AGENTOS_LLM_MODEL).
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// Print one JSON document on stdout at the end; the live view goes to stderr.
    #[arg(long)]
    pub json: bool,
    /// The sessions database (default: $AGENTOS_DATA_DIR/sessions.db).
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// A scripted model (tests): model turns separated by lines of `---`.
    #[arg(long, value_name = "FILE", hide = true)]
    pub script: Option<PathBuf>,
    /// The task.
    #[arg(required = true, value_name = "TASK")]
    pub task: Vec<String>,
}

impl RunArgs {
    /// Whether `run` asks the operator about proposals: not under `--yolo`, and only with
    /// someone to ask (a terminal on stdin, or `--review`).
    fn reviewing(&self) -> bool {
        use std::io::IsTerminal;
        !self.yolo && (self.review || std::io::stdin().is_terminal())
    }

    fn flags(&self) -> LoopFlags {
        LoopFlags {
            mode: if self.ask { "ask" } else { "act" }.into(),
            yolo: self.yolo,
            // With no one to ask, a proposal is rejected at once (`no_review_channel`)
            // instead of waiting out its timeout.
            no_proposals: !self.yolo && !self.reviewing(),
            budget_tokens: self.budget_tokens,
            ..LoopFlags::default()
        }
    }

    fn project_root(&self) -> Option<String> {
        let dir = match &self.project {
            Some(p) => p.clone(),
            None => {
                let cwd = std::env::current_dir().ok()?;
                if !is_git_repo(&cwd) {
                    return None;
                }
                cwd
            }
        };
        Some(
            dir.canonicalize()
                .unwrap_or(dir)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

fn is_git_repo(dir: &Path) -> bool {
    dir.ancestors().any(|d| d.join(".git").exists())
}

/// Where the live view writes: stdout, or stderr under `--json`.
struct View {
    to_stderr: bool,
    started: Instant,
    tokens: i64,
    cost_pico: i64,
    pending: Option<String>,
}

impl View {
    fn new(to_stderr: bool) -> View {
        View {
            to_stderr,
            started: Instant::now(),
            tokens: 0,
            cost_pico: 0,
            pending: None,
        }
    }

    fn write(&self, text: &str) {
        // A closed terminal must not stop the loop: write errors are ignored here.
        if self.to_stderr {
            let mut e = std::io::stderr().lock();
            let _ = e.write_all(text.as_bytes());
            let _ = e.flush();
        } else {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(text.as_bytes());
            let _ = o.flush();
        }
    }

    fn rows<'a>(&mut self, rows: impl IntoIterator<Item = &'a LogRow>) {
        let mut out = String::new();
        for r in rows {
            // The verbatim emission repeats the statements the other rows show.
            if r.op != RowOp::Model {
                render::push_row(&mut out, r);
            }
        }
        if let Some(p) = self.pending.take() {
            out.push_str(&p);
        }
        self.write(&out);
    }

    fn turn(&mut self, t: &TurnRow) {
        self.tokens += t.usage.prompt + t.usage.completion;
        self.cost_pico += t.usage.cost_pico;
        self.pending = Some(format!(
            "── turn {} · status {} · {} tokens · ${:.6} · {:.1}s\n",
            t.sequence,
            t.status,
            self.tokens,
            self.cost_pico as f64 / 1e12,
            self.started.elapsed().as_secs_f64()
        ));
    }

    fn flush_pending(&mut self) {
        if let Some(p) = self.pending.take() {
            self.write(&p);
        }
    }
}

/// What ended a run, for the final line and `--json`.
struct Outcome {
    session_id: i64,
    run_id: i64,
    loop_id: i64,
    status: u16,
    message: Option<String>,
    turns: usize,
    usage: (i64, i64, i64),
    cost_pico: i64,
}

impl Outcome {
    fn json(&self, wall_ms: u128) -> Value {
        let (p, c, k) = self.usage;
        json!({
            "loopId": self.loop_id,
            "sessionId": self.session_id,
            "runId": self.run_id,
            "status": self.status,
            "message": self.message,
            "turns": self.turns,
            "usage": {"prompt": p, "completion": c, "cached": k, "total": p + c},
            "costPico": self.cost_pico,
            "costUsd": self.cost_pico as f64 / 1e12,
            "wallMs": wall_ms,
        })
    }
}

/// What the main loop of `run` waits on.
enum Wake {
    Event(StoreEvent),
    Interrupt,
    /// A line of stdin a proposal asked for (`None`: stdin ended).
    Line(Option<String>),
}

/// Writes the review's text to stderr (a closed terminal must not stop the loop).
fn say(text: &str) {
    if text.is_empty() {
        return;
    }
    let mut e = std::io::stderr().lock();
    let _ = e.write_all(text.as_bytes());
    let _ = e.flush();
}

/// Calls `interrupted` on every Ctrl-C, and on SIGTERM (so a killed `run` still cancels its
/// loop and stops the local model it started), from a thread with a small runtime, until it
/// answers false. On Unix the handlers are installed before this returns, and a signal
/// stream keeps what arrives between two waits, so a Ctrl-C at any later moment (a
/// proposal's question included) cancels rather than killing the process or going unseen.
fn ctrl_c_to(interrupted: impl Fn() -> bool + Send + 'static) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    #[cfg(unix)]
    let (mut int, mut term) = {
        use tokio::signal::unix::{signal, SignalKind};
        let _in_rt = rt.enter();
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    std::thread::spawn(move || {
        rt.block_on(async move {
            loop {
                #[cfg(unix)]
                let got = match (int.as_mut(), term.as_mut()) {
                    (Some(i), Some(t)) => tokio::select! {
                        r = i.recv() => r.is_some(),
                        r = t.recv() => r.is_some(),
                    },
                    (Some(i), None) => i.recv().await.is_some(),
                    _ => tokio::signal::ctrl_c().await.is_ok(),
                };
                #[cfg(not(unix))]
                let got = tokio::signal::ctrl_c().await.is_ok();
                if !got || !interrupted() {
                    return;
                }
            }
        });
    });
}

/// Runs `agentos run`.
pub fn run(a: RunArgs) -> ExitCode {
    let started = Instant::now();
    let outcome = match &a.connect {
        Some(url) => run_connected(&a, url),
        None => run_embedded(&a),
    };
    match outcome {
        Ok(o) => finish(&a, &o, started),
        Err((code, msg)) => {
            eprintln!("agentos run: {msg}");
            ExitCode::from(code)
        }
    }
}

fn finish(a: &RunArgs, o: &Outcome, started: Instant) -> ExitCode {
    let wall = started.elapsed().as_millis();
    let line = format!(
        "loop {} · status {}{} · {} turns · {} tokens · ${:.6} · {:.1}s\n",
        o.loop_id,
        o.status,
        o.message
            .as_deref()
            .map(|m| format!(" · {m}"))
            .unwrap_or_default(),
        o.turns,
        o.usage.0 + o.usage.1,
        o.cost_pico as f64 / 1e12,
        wall as f64 / 1000.0
    );
    if a.json {
        eprint!("{line}");
        let doc = match serde_json::to_string_pretty(&o.json(wall)) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("agentos run: cannot encode the result: {e}");
                return ExitCode::from(2);
            }
        };
        let c = emit(&format!("{doc}\n"));
        if c != ExitCode::SUCCESS {
            return c;
        }
    } else {
        let c = emit(&line);
        if c != ExitCode::SUCCESS {
            return c;
        }
    }
    ExitCode::from(exit_code_for(o.status))
}

fn run_embedded(a: &RunArgs) -> Result<Outcome, (u8, String)> {
    let model = Model::choose(a.script.as_deref()).map_err(|e| (2, e))?;
    let store = open_store(a.db.as_deref()).map_err(|e| (2, e))?;
    let cfg = EngineConfig {
        model: a.model.clone(),
        ..EngineConfig::default()
    };
    let engine = model.engine(store, cfg).map_err(|e| (2, e))?;
    let result = drive_embedded(a, &engine);
    engine.kernel().shutdown(agentos_abi::ExitReason::Shutdown);
    result
}

fn drive_embedded(a: &RunArgs, engine: &crate::Engine) -> Result<Outcome, (u8, String)> {
    let fail = |e: crate::EngineError| (1u8, e.to_string());
    let root = a.project_root();
    let session = engine
        .create_session(None, root.as_deref(), "{}")
        .map_err(fail)?;
    let run = engine
        .create_run(session.id, "main", Origin::Model)
        .map_err(fail)?;
    let (tx, rx) = mpsc::channel::<Wake>();
    let ev_tx = tx.clone();
    let run_id = run.id;
    let sub = engine.subscribe(move |ev| {
        let ours = match ev {
            StoreEvent::Rows { rows, .. } => rows.first().is_some_and(|r| r.run_id == run_id),
            StoreEvent::Loop { run_id: r, .. } => *r == run_id,
            StoreEvent::Resolved { row, .. } => row.run_id == run_id,
            StoreEvent::Turn { .. } => true,
            _ => false,
        };
        if ours {
            let _ = ev_tx.send(Wake::Event(ev.clone()));
        }
    });
    // The review: a reader thread answers one line of stdin per proposal asked.
    let mut review = a.reviewing().then(|| {
        let line_tx = tx.clone();
        let lines = line_reader(move |l| {
            let _ = line_tx.send(Wake::Line(l));
        });
        (Review::default(), lines)
    });
    ctrl_c_to(move || tx.send(Wake::Interrupt).is_ok());
    let opts = LoopOptions {
        flags: a.flags(),
        max_turns: a.max_turns,
    };
    let task = a.task.join(" ");
    let lp = engine.start_loop(run.id, &task, &opts).map_err(fail)?;
    let mut view = View::new(a.json);
    let mut interrupted = false;
    let result = loop {
        let Ok(w) = rx.recv() else {
            break Err((1, "the engine stopped".to_owned()));
        };
        match w {
            Wake::Interrupt if interrupted => {
                eprintln!("agentos run: interrupted twice; exiting without waiting");
                super::model::exit_now(130);
            }
            Wake::Interrupt => {
                interrupted = true;
                // No more questions: the loop is going away, its proposals with it.
                if review.take().is_some_and(|(r, _)| r.asking()) {
                    eprintln!();
                }
                eprintln!(
                    "agentos run: cancelling loop {} (Ctrl-C again to exit now)",
                    lp.id
                );
                if let Err(e) = engine.cancel(run.id) {
                    break Err((1, e.to_string()));
                }
            }
            Wake::Line(line) => {
                if let Some((r, lines)) = &mut review {
                    let mut text = String::new();
                    let todo = r.answer(line.as_deref(), &mut text);
                    say(&text);
                    if let Err(e) = act_embedded(engine, lines, todo) {
                        break Err(e);
                    }
                }
            }
            Wake::Event(StoreEvent::Rows { rows, .. }) => {
                view.rows(rows.iter());
                if let Some((r, lines)) = &mut review {
                    let proposed = rows.iter().filter(|row| {
                        row.loop_id == lp.id && row.state == Some(RowState::Proposed)
                    });
                    let mut failed = None;
                    for row in proposed {
                        let mut text = String::new();
                        let todo = r.offer(Proposal::of_row(row), &mut text);
                        say(&text);
                        if let Err(e) = act_embedded(engine, lines, todo) {
                            failed = Some(e);
                            break;
                        }
                    }
                    if let Some(e) = failed {
                        break Err(e);
                    }
                }
            }
            Wake::Event(StoreEvent::Resolved { row, .. }) => {
                // The row's new state, as `--connect` shows it (`log/entry` again).
                view.rows(std::iter::once(&*row));
                if let Some((r, lines)) = &mut review {
                    let mut text = String::new();
                    let todo = r.settled(row.id, &mut text);
                    say(&text);
                    if let Err(e) = act_embedded(engine, lines, todo) {
                        break Err(e);
                    }
                }
            }
            Wake::Event(StoreEvent::Turn { turn, .. }) if turn.loop_id == lp.id => view.turn(&turn),
            Wake::Event(StoreEvent::Loop {
                loop_id, status: s, ..
            }) if loop_id == lp.id && status::is_terminal(s) => {
                view.flush_pending();
                break Ok(());
            }
            Wake::Event(_) => {}
        }
    };
    engine.unsubscribe(sub);
    result?;
    let row = engine
        .store()
        .loop_row(lp.id)
        .map_err(|e| (1, e.to_string()))?;
    let turns = engine
        .store()
        .turns(lp.id)
        .map_err(|e| (1, e.to_string()))?;
    let mut usage = (0, 0, 0);
    let mut cost = 0;
    for t in &turns {
        usage.0 += t.usage.prompt;
        usage.1 += t.usage.completion;
        usage.2 += t.usage.cached;
        cost += t.usage.cost_pico;
    }
    Ok(Outcome {
        session_id: session.id,
        run_id: run.id,
        loop_id: lp.id,
        status: row.status,
        message: row.terminal_message,
        turns: turns.len(),
        usage,
        cost_pico: cost,
    })
}

/// Sends the review's decisions through the host API (as the daemon's `loop.resolve` does)
/// and asks the reader for a line when the review wants one.
fn act_embedded(
    engine: &crate::Engine,
    lines: &mpsc::Sender<()>,
    todo: Todo,
) -> Result<(), (u8, String)> {
    for (id, decision, outcome) in todo.resolve {
        match engine.resolve(id, decision, outcome) {
            // Settled meanwhile (timed out, the loop ended): nothing left to decide.
            Ok(()) | Err(crate::EngineError::NotPending(_)) => {}
            Err(e) => return Err((1, format!("resolving proposal {id}: {e}"))),
        }
    }
    if todo.read_line {
        // The reader is gone only after stdin ended, when the review asks for no more lines.
        let _ = lines.send(());
    }
    Ok(())
}

/// `URL` as a WebSocket URL (`host:port` and `http://` accepted).
pub(super) fn ws_url(url: &str) -> String {
    if url.starts_with("ws://") || url.starts_with("wss://") {
        url.to_owned()
    } else if let Some(rest) = url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        format!("ws://{url}")
    }
}

fn run_connected(a: &RunArgs, url: &str) -> Result<Outcome, (u8, String)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| (2, format!("cannot start a runtime: {e}")))?;
    rt.block_on(drive_connected(a, &ws_url(url)))
}

fn rpc_fail(e: ClientError) -> (u8, String) {
    match e {
        ClientError::Connect { .. } => (2, e.to_string()),
        other => (1, other.to_string()),
    }
}

async fn drive_connected(a: &RunArgs, url: &str) -> Result<Outcome, (u8, String)> {
    let client = Client::connect(url).await.map_err(rpc_fail)?;
    let created = client
        .call("session.create", json!({"projectRoot": a.project_root()}))
        .await
        .map_err(rpc_fail)?;
    let flags = serde_json::to_value(a.flags()).unwrap_or(Value::Null);
    let started = client
        .call(
            "loop.run",
            json!({"prompt": a.task.join(" "), "maxTurns": a.max_turns, "flags": flags}),
        )
        .await
        .map_err(rpc_fail)?;
    let loop_id = started["loopId"].as_i64().unwrap_or(-1);
    let mut view = View::new(a.json);
    let mut interrupted = false;
    // One signal listener for the whole run: a `ctrl_c()` made afresh in each turn of the
    // select below missed a Ctrl-C that came while a branch ran (at the question, say).
    let (sig_tx, mut sig_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    ctrl_c_to(move || sig_tx.send(()).is_ok());
    // The review: proposals arrive as `loop/proposal`, answers from a stdin reader thread.
    let (line_tx, mut line_rx) = tokio::sync::mpsc::unbounded_channel::<Option<String>>();
    let mut review = a.reviewing().then(|| {
        let lines = line_reader(move |l| {
            let _ = line_tx.send(l);
        });
        (Review::default(), lines)
    });
    loop {
        tokio::select! {
            n = client.notification() => {
                let Some(n) = n else {
                    return Err((1, "the daemon closed the connection".into()));
                };
                match n.method.as_str() {
                    "log/entry" if n.params["loopId"].as_i64() == Some(loop_id) => {
                        if let Some(row) = crate::daemon::methods::row_from_json(&n.params["entry"]) {
                            view.rows(std::iter::once(&row));
                            // A proposed row again, resolved: settled (here or elsewhere).
                            if let (Some((r, lines)), true) =
                                (&mut review, row.state.is_some_and(|s| s != RowState::Proposed))
                            {
                                let mut text = String::new();
                                let todo = r.settled(row.id, &mut text);
                                say(&text);
                                act_connected(&client, lines, todo).await?;
                            }
                        }
                    }
                    "loop/proposal" if n.params["loopId"].as_i64() == Some(loop_id) => {
                        if let (Some((r, lines)), Some(p)) =
                            (&mut review, Proposal::of_notification(&n.params))
                        {
                            let mut text = String::new();
                            let todo = r.offer(p, &mut text);
                            say(&text);
                            act_connected(&client, lines, todo).await?;
                        }
                    }
                    "loop/terminated" if n.params["loopId"].as_i64() == Some(loop_id) => {
                        let p = &n.params;
                        let u = &p["usage"];
                        return Ok(Outcome {
                            session_id: created["id"].as_i64().unwrap_or(-1),
                            run_id: p["runId"].as_i64().unwrap_or(-1),
                            loop_id,
                            status: p["finalStatus"].as_u64().map_or(500, |s| s as u16),
                            message: p["message"].as_str().map(str::to_owned),
                            turns: p["turns"].as_u64().unwrap_or(0) as usize,
                            usage: (
                                u["prompt"].as_i64().unwrap_or(0),
                                u["completion"].as_i64().unwrap_or(0),
                                u["cached"].as_i64().unwrap_or(0),
                            ),
                            cost_pico: p["costPico"].as_i64().unwrap_or(0),
                        });
                    }
                    _ => {}
                }
            }
            Some(line) = line_rx.recv(), if review.is_some() => {
                if let Some((r, lines)) = &mut review {
                    let mut text = String::new();
                    let todo = r.answer(line.as_deref(), &mut text);
                    say(&text);
                    act_connected(&client, lines, todo).await?;
                }
            }
            Some(()) = sig_rx.recv() => {
                if interrupted {
                    eprintln!("agentos run: interrupted twice; exiting without waiting");
                    super::model::exit_now(130);
                }
                interrupted = true;
                // No more questions: the loop is going away, its proposals with it.
                if review.take().is_some_and(|(r, _)| r.asking()) {
                    eprintln!();
                }
                eprintln!("agentos run: cancelling loop {loop_id} (Ctrl-C again to exit now)");
                client
                    .call("loop.cancel", json!({"reason": "interrupted (Ctrl-C)"}))
                    .await
                    .map_err(rpc_fail)?;
            }
        }
    }
}

/// Sends the review's decisions as `loop.resolve` calls and asks the reader for a line when
/// the review wants one.
async fn act_connected(
    client: &Client,
    lines: &mpsc::Sender<()>,
    todo: Todo,
) -> Result<(), (u8, String)> {
    for (id, decision, outcome) in todo.resolve {
        let mut params = json!({
            "logEntryId": id,
            "decision": serde_json::to_value(decision).unwrap_or(Value::Null),
        });
        if let Some(o) = outcome {
            params["outcome"] = o.into();
        }
        match client.call("loop.resolve", params).await {
            Ok(_) => {}
            // Not pending any more (timed out, the loop ended): nothing left to decide.
            Err(ClientError::Rpc(e)) if e.code == crate::daemon::rpc::INVALID_PARAMS => {}
            Err(e) => return Err(rpc_fail(e)),
        }
    }
    if todo.read_line {
        let _ = lines.send(());
    }
    Ok(())
}

/// `agentos loop --record DIR`: the loop on a deterministic kernel in record mode.
fn record_cmd(
    model: &Model,
    store: std::sync::Arc<crate::store::Store>,
    dir: &Path,
    prompt: &str,
    max_turns: Option<u32>,
) -> ExitCode {
    let llm = match agentos_drivers::llm::LlmDriver::new(model.provider.clone()) {
        Ok(d) => std::sync::Arc::new(d),
        Err(e) => {
            eprintln!("agentos loop: the model device: {e}");
            return ExitCode::from(2);
        }
    };
    let cfg = EngineConfig {
        grammar: model.grammar.clone(),
        ..EngineConfig::default()
    };
    let opts = LoopOptions {
        max_turns,
        ..LoopOptions::default()
    };
    match crate::replay::record(dir, 7, llm, store, cfg, None, prompt, &opts) {
        Ok((lp, rows, rec)) => {
            let mut out = render::render_rows(&rows);
            out.push_str(&format!(
                "\nloop {} · status {} · {} rows recorded into {} (rows hash {}); replay with `agentos replay {}`\n",
                lp.id,
                lp.status,
                rec.rows,
                dir.display(),
                rec.rows_hash,
                dir.display()
            ));
            match emit(&out) {
                c if c != ExitCode::SUCCESS => c,
                _ if lp.status == 200 => ExitCode::SUCCESS,
                _ => ExitCode::from(1),
            }
        }
        Err(e) => {
            eprintln!("agentos loop: recording into {}: {e}", dir.display());
            ExitCode::from(2)
        }
    }
}

/// Runs `agentos loop` (issue 12's verb): one loop, then its log as the model saw it.
pub fn loop_cmd(a: LoopArgs) -> ExitCode {
    let model = match Model::choose(a.script.as_deref()) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("agentos loop: {e}");
            return ExitCode::from(2);
        }
    };
    let store = match open_store(a.db.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("agentos loop: {e}");
            return ExitCode::from(2);
        }
    };
    let prompt = a.prompt.join(" ");
    if let Some(dir) = &a.record {
        return record_cmd(&model, store, dir, &prompt, a.max_turns);
    }
    let engine = match model.engine(store, EngineConfig::default()) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("agentos loop: {e}");
            return ExitCode::from(2);
        }
    };
    let result = (|| -> Result<_, crate::EngineError> {
        let session = engine.create_session(None, None, "{}")?;
        let run = engine.create_run(session.id, "main", Origin::Client)?;
        let opts = LoopOptions {
            max_turns: a.max_turns,
            ..LoopOptions::default()
        };
        let lp = engine.start_loop(run.id, &prompt, &opts)?;
        let lp = engine.wait_loop(lp.id, None)?;
        let rows = engine.loop_log(lp.id)?;
        Ok((session, lp, rows))
    })();
    engine.kernel().shutdown(agentos_abi::ExitReason::Shutdown);
    match result {
        Ok((session, lp, rows)) => {
            let mut out = render::render_rows(&rows);
            out.push_str(&format!(
                "\nsession {} · loop {} · status {}{}\n",
                session.name,
                lp.id,
                lp.status,
                lp.terminal_message
                    .map(|m| format!(" · {m}"))
                    .unwrap_or_default()
            ));
            match emit(&out) {
                c if c != ExitCode::SUCCESS => c,
                _ if lp.status == 200 => ExitCode::SUCCESS,
                _ => ExitCode::from(1),
            }
        }
        Err(e) => {
            eprintln!("agentos loop: {e}");
            ExitCode::from(2)
        }
    }
}
