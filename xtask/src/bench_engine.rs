//! The `engine_turn` bench workload (shared/BENCHMARKS.md): the engine's own time per turn
//! with a zero-latency scripted model — packet build, grinder check, parse, dispatch of 5
//! ops against `known://`, one store transaction — on runs whose logs already hold 10, 100
//! and 1,000 rows; and the packet render rate.
//!
//! Protocol: for each log size N, 20 runs, each alone in its session, are each prefilled with exactly N rows (written
//! through the store, untimed), then each runs one loop of 10 turns (200 turns in all) on a
//! multi-threaded kernel with a file-backed store (WAL). Every turn writes 8 rows (PLAN, 5
//! ops, SEND, the model row), so a run's log holds N to N + 80 rows while it is measured;
//! the report says so. The wall time of the loops divided by the turns is `ms_per_turn_N`
//! (loop start — spawning the loop process and loading the log — is included, once per
//! 10 turns). `packet_mb_per_s` renders the packet of a 1,000-row log 200 times.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use agentos_abi::device::{ChatReply, ChatRequest, TokenUsage};
use agentos_abi::driver::BoxFuture;
use agentos_drivers::llm::{LlmDriver, LlmError, Provider};
use agentos_engine::grammar::Op;
use agentos_engine::store::{LogRow, Origin, RowOp, RowTarget, Store, TurnCommit, TurnRow};
use agentos_engine::turn::packet::{self, PacketInput, Section, Slot};
use agentos_engine::turn::{docs, EngineConfig};
use agentos_engine::{Engine, LoopOptions};
use agentos_kernel::{Kernel, KernelConfig};
use anyhow::{bail, Context, Result};
use serde_json::json;

const RUNS: usize = 20;
const TURNS_PER_RUN: u32 = 10;

fn turn_text(k: u64) -> String {
    format!(
        "<<PLAN:bench turn {k}:PLAN\n\
         <<EDIT(known:///bench/{k}.md):line {k}:EDIT\n\
         <<READ(known:///bench/{k}.md)::READ\n\
         <<EDIT(known:///bench/{k}.md)<-1>:more {k}:EDIT\n\
         <<READ(known:///bench/{k}.md)<2>::READ\n\
         <<FIND(known:///bench/{k}.md)::FIND\n\
         <<SEND[102]:next:SEND"
    )
}

/// The zero-latency model: answers the next bench turn at once, reports usage (so the
/// device does not estimate it) and keeps nothing (a test provider's request log would be
/// measured otherwise).
struct BenchModel(AtomicU64);

impl Provider for BenchModel {
    fn name(&self) -> &str {
        "bench"
    }
    fn chat<'a>(&'a self, _req: &'a ChatRequest) -> BoxFuture<'a, Result<ChatReply, LlmError>> {
        let k = self.0.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            Ok(ChatReply {
                content: turn_text(k),
                usage: Some(TokenUsage {
                    prompt_tokens: 1000,
                    completion_tokens: 60,
                    cached_tokens: 0,
                }),
                ..ChatReply::default()
            })
        })
    }
}

/// A synthetic row as a 1,000-row log would hold: a READ with a ~200-byte result.
fn filler(run_id: i64, loop_id: i64, i: i64) -> LogRow {
    LogRow {
        id: 0,
        run_id,
        loop_id,
        turn_id: 0,
        loop_seq: 0,
        turn_seq: 0,
        sequence: i + 1,
        at: 0,
        origin: Origin::Model,
        source: None,
        op: RowOp::Op(Op::Read),
        suffix: String::new(),
        signal: None,
        target: Some(RowTarget {
            scheme: Some("known".into()),
            hostname: None,
            pathname: format!("/filler/{i}.md"),
            fragment: None,
        }),
        line_marker: None,
        tx: None,
        mimetype_tx: None,
        rx: Some(format!(
            "1:\tfiller row {i} {}",
            "lorem ipsum dolor ".repeat(10)
        )),
        mimetype_rx: Some("text/markdown".into()),
        status: 200,
        tokens: 60,
        state: None,
        outcome: None,
        expanded: true,
    }
}

/// Writes exactly `n` rows into a finished loop of `run_id`.
fn prefill(store: &Store, session_id: i64, run_id: i64, n: usize) -> Result<Vec<LogRow>> {
    let lp = store.create_loop(run_id, "prefill", "{}", None)?;
    store.set_loop_status(lp.id, 102, None)?;
    let rows: Vec<LogRow> = (0..n as i64).map(|i| filler(run_id, lp.id, i)).collect();
    let turn = TurnRow {
        id: 0,
        loop_id: lp.id,
        sequence: 1,
        timestamp: 0,
        status: 200,
        usage: Default::default(),
        packet: "{}".into(),
        finish_reason: None,
        model: None,
    };
    store.commit_turn(
        session_id,
        run_id,
        TurnCommit {
            turn,
            turn_id: None,
            rows: rows.clone(),
            folds: vec![],
            entries: vec![],
            loop_status: Some((200, Some("prefill".into()))),
        },
    )?;
    Ok(rows)
}

fn measure(n: usize, runs: usize) -> Result<(f64, usize)> {
    let dir = std::env::temp_dir().join(format!("agentos-bench-engine-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let store = Arc::new(Store::open(dir.join("sessions.db"))?);
    let provider = Arc::new(BenchModel(AtomicU64::new(0)));
    let kernel = Kernel::new(KernelConfig::default());
    kernel.register_driver(Arc::new(LlmDriver::new(provider)?))?;
    let cfg = EngineConfig {
        context_size: 1 << 22,
        ..EngineConfig::default()
    };
    let engine = Engine::start(kernel.clone(), store.clone(), cfg)?;
    let mut run_ids = Vec::new();
    for r in 0..runs {
        // One session per run: the workload is one run's turn on its own log; runs sharing a
        // session would also pull each other's EDITs as env deltas (more rows per turn).
        let session = engine.create_session(None, None, "{}")?;
        let run = engine.create_run(session.id, &format!("bench-{r}"), Origin::Model)?;
        prefill(&store, session.id, run.id, n)?;
        run_ids.push(run.id);
    }
    let opts = LoopOptions {
        max_turns: Some(TURNS_PER_RUN),
        ..LoopOptions::default()
    };
    let mut max_rows = 0;
    let t0 = Instant::now();
    for run in &run_ids {
        let lp = engine.start_loop(*run, "bench", &opts)?;
        let done = engine.wait_loop(lp.id, None)?;
        if done.status != 429 {
            bail!(
                "engine_turn: loop ended {} ({:?}), expected 429 after {TURNS_PER_RUN} turns",
                done.status,
                done.terminal_message
            );
        }
    }
    let elapsed = t0.elapsed();
    for run in &run_ids {
        max_rows = max_rows.max(store.log_rows(*run)?.len());
    }
    let errors = run_ids
        .iter()
        .map(|r| store.log_rows(*r))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .filter(|r| r.status >= 400)
        .count();
    if errors > 0 {
        bail!("engine_turn: {errors} rows failed (the bench turns must be clean)");
    }
    kernel.shutdown(agentos_abi::ExitReason::Shutdown);
    let _ = std::fs::remove_dir_all(&dir);
    let turns = (runs as u32 * TURNS_PER_RUN) as f64;
    Ok((elapsed.as_secs_f64() * 1e3 / turns, max_rows))
}

fn packet_rate(iterations: usize) -> Result<(f64, usize)> {
    let log: Vec<LogRow> = (0..1000)
        .map(|i| {
            let mut r = filler(1, 1, i);
            r.loop_seq = 1;
            r.turn_seq = 1 + i / 8;
            r
        })
        .collect();
    let system = vec![Section::new(
        "definition",
        Slot::System,
        None,
        docs::GRAMMAR_SHEET.to_owned(),
    )];
    let req = Section::new(
        "requirements",
        Slot::User,
        None,
        docs::REQUIREMENTS.to_owned(),
    );
    let prompts = vec!["bench".to_owned()];
    let input = PacketInput {
        system: &system,
        requirements: &req,
        prompts: &prompts,
        errors: "",
        log: &log,
        rendered: None,
        pending: &[],
        ceiling: 1 << 22,
    };
    let bytes: usize = packet::build(&input)
        .messages()
        .iter()
        .map(|m| m.content.len())
        .sum();
    let t0 = Instant::now();
    let mut total = 0usize;
    for _ in 0..iterations {
        let p = std::hint::black_box(packet::build(std::hint::black_box(&input)));
        total += p.sections.len();
    }
    let secs = t0.elapsed().as_secs_f64();
    std::hint::black_box(total);
    Ok((bytes as f64 * iterations as f64 / secs / 1e6, bytes))
}

/// Runs the workload.
pub fn run(quick: bool) -> Result<serde_json::Value> {
    let runs = if quick { RUNS / 10 } else { RUNS };
    let mut out = serde_json::Map::new();
    for n in [10usize, 100, 1000] {
        eprintln!("engine_turn: {runs} runs × {TURNS_PER_RUN} turns on logs of {n} rows");
        let (ms, max_rows) = measure(n, runs).with_context(|| format!("log of {n} rows"))?;
        eprintln!("engine_turn: {n} rows → {ms:.3} ms/turn (log reached {max_rows} rows)");
        out.insert(format!("ms_per_turn_{n}"), json!(ms));
        out.insert(
            format!("rows_while_measured_{n}"),
            json!(format!("{n}..{max_rows}")),
        );
    }
    let (mbps, bytes) = packet_rate(if quick { 20 } else { 200 })?;
    eprintln!("engine_turn: packet of 1000 rows ({bytes} bytes) renders at {mbps:.1} MB/s");
    out.insert("packet_mb_per_s".into(), json!(mbps));
    out.insert("packet_bytes_1000".into(), json!(bytes));
    out.insert("turns".into(), json!(runs as u32 * TURNS_PER_RUN));
    out.insert("ops_per_turn".into(), json!(5));
    out.insert(
        "mode".into(),
        json!("threads(default), file store (WAL), scripted zero-latency model"),
    );
    Ok(serde_json::Value::Object(out))
}
