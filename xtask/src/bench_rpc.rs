//! The `rpc` bench workload (shared/BENCHMARKS.md): the daemon on loopback.
//!
//! One daemon (`agentos_engine::daemon::Server` on 127.0.0.1:0, a threads(2) kernel, an
//! in-memory store, a zero-latency model) and clients from `daemon::client`, on a runtime
//! of their own:
//! 1. `ping` round trips over one WebSocket, each timed → `p50_us`, `p99_us`
//!    (100,000; after 1,000 untimed warm-up calls);
//! 2. 100 clients doing 1,000 pings each, all at once → `concurrent_per_s` (total calls
//!    over the wall time from the first send to the last answer);
//! 3. one subscriber attached to a session while a loop of that session writes 10,000
//!    rows (turns of PLAN, 48 EDITs to fresh targets, SEND, the model row) →
//!    `notifications_per_s` = 10,000 `log/entry` notifications over the wall time from
//!    `loop.run` to the 10,000th notification received. The engine's own writing is
//!    inside that window: this is the end-to-end rate a dashboard sees.
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

const EDITS_PER_TURN: u64 = 48;

/// A zero-latency model: turn `k` edits 48 fresh entries and continues, until `last`.
struct RowModel {
    turn: AtomicU64,
    last: u64,
}

impl Provider for RowModel {
    fn name(&self) -> &str {
        "bench"
    }
    fn chat<'a>(&'a self, _req: &'a ChatRequest) -> BoxFuture<'a, Result<ChatReply, LlmError>> {
        let k = self.turn.fetch_add(1, Ordering::Relaxed);
        let mut content = format!("<<PLAN:bench turn {k}:PLAN\n");
        if k >= self.last {
            content.push_str("<<SEND[200]:done:SEND");
        } else {
            for i in 0..EDITS_PER_TURN {
                content.push_str(&format!("<<EDIT(known:///b/{k}/{i}.md):row {i}:EDIT\n"));
            }
            content.push_str("<<SEND[102]:next:SEND");
        }
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
    let rows_target = 10_000 / div;
    let turns_needed = rows_target / (EDITS_PER_TURN as usize + 3) + 2;

    let model = Arc::new(RowModel {
        turn: AtomicU64::new(0),
        last: turns_needed as u64,
    });
    let kernel = Kernel::new(KernelConfig::threads(2));
    kernel
        .register_driver(Arc::new(LlmDriver::new(model)?))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = Arc::new(Store::open_in_memory()?);
    let cfg = EngineConfig {
        max_turns: turns_needed as u32 + 10,
        ..EngineConfig::default()
    };
    let engine = Engine::start(kernel, store, cfg)?;
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
        sub.call("session.create", json!({"name": "bench"})).await?;
        let first = sub.notification().await.context("session/created")?;
        if first.method != "session/created" {
            bail!("expected session/created, got {}", first.method);
        }
        let t = Instant::now();
        let started = sub.call("loop.run", json!({"prompt": "write rows"})).await?;
        let loop_id = started["loopId"].as_i64().context("loop id")?;
        let mut seen = 0usize;
        let mut status = None;
        let mut at_target = None;
        while let Some(n) = sub.notification().await {
            match n.method.as_str() {
                "log/entry" => {
                    seen += 1;
                    if seen == rows_target {
                        at_target = Some(t.elapsed());
                    }
                }
                "loop/terminated" if n.params["loopId"].as_i64() == Some(loop_id) => {
                    status = n.params["finalStatus"].as_u64();
                    break;
                }
                _ => {}
            }
        }
        let Some(window) = at_target else {
            bail!("the loop ended (status {status:?}) after {seen} rows, short of {rows_target}");
        };
        let notifications_per_s = rows_target as f64 / window.as_secs_f64();
        eprintln!(
            "rpc: {rows_target} log/entry notifications in {:.3} s: {notifications_per_s:.0}/s (loop ended {status:?} after {seen} rows)",
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
            "rows_per_turn": EDITS_PER_TURN + 3,
        }))
    })?;
    drop(rt);
    server.shutdown();
    Ok(report)
}
