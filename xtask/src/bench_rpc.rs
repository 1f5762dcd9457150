//! The `rpc` bench workload (shared/BENCHMARKS.md): the daemon on loopback.
//!
//! One daemon (`agentos_engine::daemon::Server` on 127.0.0.1:0, a threads(2) kernel, an
//! in-memory store, a zero-latency model) and clients from `daemon::client`, on a runtime
//! of their own:
//! 1. `ping` round trips over one WebSocket, each timed → `p50_us`, `p99_us`
//!    (100,000; after 1,000 untimed warm-up calls);
//! 2. 100 clients doing 1,000 pings each, all at once → `concurrent_per_s` (total calls
//!    over the wall time from the first send to the last answer);
//! 3. one subscriber attached to a session while ONE scripted loop writes 10,000 rows
//!    (turns of PLAN, 48 READs of fresh missing `known://` targets (404, soft: no strike,
//!    no entry written), SEND\[102\], the model row: 51 rows a turn, ~197 turns). The
//!    bench's engine is configured for it: a context window large enough that the loop's
//!    whole log fits (the default window would end the loop 413 after a few turns) and a
//!    turn limit above the turns needed → `notifications_per_s` = 10,000 `log/entry`
//!    notifications over the wall time from the `loop.run` to the 10,000th notification
//!    received. The engine's own writing is inside that window: this is the end-to-end
//!    rate a dashboard sees.
//!
//! `--quick` divides every count by 10. Nothing is estimated: every figure is a clock
//! reading around real calls.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentos_abi::device::{ChatReply, ChatRequest, TokenUsage};
use agentos_abi::driver::BoxFuture;
use agentos_drivers::llm::{LlmDriver, LlmError, Provider};
use agentos_engine::daemon::client::Client;
use agentos_engine::daemon::{DaemonConfig, ProviderInfo, Server};
use agentos_engine::store::Store;
use agentos_engine::turn::EngineConfig;
use agentos_engine::Engine;
use agentos_kernel::{Kernel, KernelConfig};
use anyhow::{bail, Context, Result};
use serde_json::json;

const READS_PER_TURN: u64 = 48;

/// A zero-latency model: every turn READs 48 fresh (missing) entries and continues. READ
/// misses, not EDITs: EDITs grow the session's entries, and the engine's turn cost grows
/// with them, which would measure the engine rather than the notification path.
struct RowModel(AtomicU64);

impl Provider for RowModel {
    fn name(&self) -> &str {
        "bench"
    }
    fn chat<'a>(&'a self, _req: &'a ChatRequest) -> BoxFuture<'a, Result<ChatReply, LlmError>> {
        let k = self.0.fetch_add(1, Ordering::Relaxed);
        let mut content = format!("<<PLAN:bench turn {k}:PLAN\n");
        for i in 0..READS_PER_TURN {
            content.push_str(&format!("<<READ(known:///b/{k}/{i}.md)::READ\n"));
        }
        content.push_str("<<SEND[102]:next:SEND");
        Box::pin(async move {
            Ok(ChatReply {
                content,
                usage: Some(TokenUsage {
                    prompt_tokens: 100,
                    completion_tokens: 10,
                    cached_tokens: 0,
                }),
                ..ChatReply::default()
            })
        })
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e6
}

/// Runs the workload.
pub fn run(quick: bool) -> Result<serde_json::Value> {
    let div = if quick { 10 } else { 1 };
    let pings = 100_000 / div;
    let clients = 100usize;
    let per_client = 1_000 / div;
    let rows_target: usize = 10_000 / div;
    // One loop writes all the rows: the turns it needs, plus the first turn's foisted
    // rows, plus slack (the loop is cancelled by the drain once the target is read).
    let rows_per_turn = READS_PER_TURN as usize + 3;
    let max_turns = u32::try_from(rows_target.div_ceil(rows_per_turn) + 10).unwrap_or(u32::MAX);

    let model = Arc::new(RowModel(AtomicU64::new(0)));
    let kernel = Kernel::new(KernelConfig::threads(2));
    kernel
        .register_driver(Arc::new(LlmDriver::new(model)?))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = Arc::new(Store::open_in_memory()?);
    // A window that holds the whole loop's log (10,000 rows), so the one loop is not ended
    // 413 for outgrowing the default one.
    let engine = Engine::start(
        kernel,
        store,
        EngineConfig {
            context_size: 1 << 40,
            max_turns,
            ..EngineConfig::default()
        },
    )?;
    let mut server = Server::start(
        engine,
        DaemonConfig {
            addr: "127.0.0.1:0".parse()?,
            providers: vec![ProviderInfo {
                alias: "default".into(),
                provider: "bench".into(),
                model: "rows".into(),
            }],
            notify_backlog: 1 << 20,
            ..DaemonConfig::default()
        },
    )?;
    let url = format!("ws://{}", server.addr());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        // 1. ping latency over one connection.
        let c = Client::connect(&url).await?;
        for _ in 0..1_000 {
            c.call("ping", json!(null)).await?;
        }
        let mut lat = Vec::with_capacity(pings);
        for _ in 0..pings {
            let t = Instant::now();
            c.call("ping", json!(null)).await?;
            lat.push(t.elapsed());
        }
        lat.sort_unstable();
        let (p50, p99) = (percentile(&lat, 0.50), percentile(&lat, 0.99));
        eprintln!("rpc: ping p50 {p50:.1} µs, p99 {p99:.1} µs over {pings}");

        // 2. 100 clients at once.
        let mut conns = Vec::with_capacity(clients);
        for _ in 0..clients {
            conns.push(Client::connect(&url).await?);
        }
        let t = Instant::now();
        let mut tasks = Vec::with_capacity(clients);
        for c in conns {
            tasks.push(tokio::spawn(async move {
                for _ in 0..per_client {
                    c.call("ping", json!(null)).await?;
                }
                Ok::<_, anyhow::Error>(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        let wall = t.elapsed().as_secs_f64();
        let concurrent_per_s = (clients * per_client) as f64 / wall;
        eprintln!("rpc: {clients} clients × {per_client} pings: {concurrent_per_s:.0}/s");

        // 3. notifications to one subscriber while a loop writes rows.
        let sub = Client::connect(&url).await?;
        let session = sub.call("session.create", json!({"name": "bench"})).await?;
        let first = sub.notification().await.context("session/created")?;
        if first.method != "session/created" {
            bail!("expected session/created, got {}", first.method);
        }
        let driver = Client::connect(&url).await?;
        driver
            .call("session.attach", json!({"id": session["id"]}))
            .await?;
        let t = Instant::now();
        driver
            .call("loop.run", json!({"prompt": "write rows", "maxTurns": max_turns}))
            .await?;
        let mut seen = 0usize;
        let mut ended = None;
        let mut at_target = None;
        while let Some(n) = sub.notification().await {
            match n.method.as_str() {
                "log/entry" => {
                    seen += 1;
                    if seen == rows_target {
                        at_target = Some(t.elapsed());
                        break;
                    }
                }
                "loop/terminated" => {
                    ended = n.params["finalStatus"].as_u64();
                    break;
                }
                _ => {}
            }
        }
        let Some(window) = at_target else {
            bail!("the loop ended {ended:?} after {seen} rows, short of {rows_target}");
        };
        let notifications_per_s = rows_target as f64 / window.as_secs_f64();
        eprintln!(
            "rpc: {rows_target} log/entry notifications in {:.3} s: {notifications_per_s:.0}/s (one loop, {rows_per_turn} rows a turn)",
            window.as_secs_f64()
        );
        Ok::<_, anyhow::Error>(json!({
            "p50_us": (p50 * 10.0).round() / 10.0,
            "p99_us": (p99 * 10.0).round() / 10.0,
            "pings": pings,
            "concurrent_per_s": concurrent_per_s.round(),
            "clients": clients,
            "pings_per_client": per_client,
            "notifications_per_s": notifications_per_s.round(),
            "notified_rows": rows_target,
            "rows_per_turn": READS_PER_TURN + 3,
            "loops": 1,
        }))
    })?;
    drop(rt);
    server.shutdown();
    Ok(report)
}
