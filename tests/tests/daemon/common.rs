//! The daemon harness: a server on 127.0.0.1:0 over an in-memory (or given) store, a
//! threads(2) kernel with a scripted model, and helpers to wait for notifications.

use std::sync::Arc;
use std::time::Duration;

use agentos_abi::device::ChatReply;
use agentos_drivers::llm::{LlmDriver, ScriptedProvider};
use agentos_engine::daemon::client::{Client, Notification};
use agentos_engine::daemon::{DaemonConfig, ProviderInfo, Server};
use agentos_engine::store::Store;
use agentos_engine::turn::EngineConfig;
use agentos_engine::Engine;
use agentos_kernel::{Kernel, KernelConfig};
use serde_json::Value;

/// A wait bound that only turns a hang into a failure.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub struct Daemon {
    pub server: Server,
    pub url: String,
}

/// A model that answers `turns` in order.
pub fn scripted(turns: &[&str]) -> Arc<ScriptedProvider> {
    Arc::new(ScriptedProvider::new(
        turns.iter().map(|t| ChatReply::text(*t)),
    ))
}

/// A model that finishes every loop in one turn.
pub fn one_turn_model() -> Arc<ScriptedProvider> {
    Arc::new(ScriptedProvider::with(|_| {
        Ok(ChatReply::text("<<PLAN:answer:PLAN\n<<SEND[200]:ok:SEND"))
    }))
}

pub fn start(provider: Arc<ScriptedProvider>) -> Daemon {
    start_with(provider, None, DaemonConfig::default())
}

pub fn start_with(
    provider: Arc<ScriptedProvider>,
    store: Option<Arc<Store>>,
    cfg: DaemonConfig,
) -> Daemon {
    let k = Kernel::new(KernelConfig::threads(2));
    k.register_driver(Arc::new(LlmDriver::new(provider).expect("llm driver")))
        .expect("register llm");
    let store = store.unwrap_or_else(|| Arc::new(Store::open_in_memory().expect("store")));
    let engine = Engine::start(k, store, EngineConfig::default()).expect("engine");
    let cfg = DaemonConfig {
        addr: "127.0.0.1:0".parse().expect("addr"),
        providers: vec![ProviderInfo {
            alias: "default".into(),
            provider: "scripted".into(),
            model: "script".into(),
        }],
        ..cfg
    };
    let server = Server::start(engine, cfg).expect("server");
    let url = format!("ws://{}", server.addr());
    Daemon { server, url }
}

/// Runs `f` on a fresh client runtime (the server has its own).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

pub async fn connect(url: &str) -> Client {
    tokio::time::timeout(PATIENCE, Client::connect(url))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// The next notification, failing on a hang or a closed connection.
pub async fn next(c: &Client) -> Notification {
    tokio::time::timeout(PATIENCE, c.notification())
        .await
        .expect("a notification in time")
        .expect("the connection is open")
}

/// Collects notifications until `loop/terminated` for `loop_id`; returns them all.
pub async fn until_terminated(c: &Client, loop_id: i64) -> Vec<Notification> {
    let mut out = Vec::new();
    loop {
        let n = next(c).await;
        let done = n.method == "loop/terminated" && n.params["loopId"].as_i64() == Some(loop_id);
        out.push(n);
        if done {
            return out;
        }
    }
}

/// The error code of a failed call.
pub fn code(r: Result<Value, agentos_engine::daemon::client::ClientError>) -> i64 {
    match r {
        Err(agentos_engine::daemon::client::ClientError::Rpc(e)) => e.code,
        other => panic!("expected an RPC error, got {other:?}"),
    }
}

/// Collects notifications until one satisfies `done`; returns them all (that one last).
pub async fn until(c: &Client, done: impl Fn(&Notification) -> bool) -> Vec<Notification> {
    let mut out = Vec::new();
    loop {
        let n = next(c).await;
        let stop = done(&n);
        out.push(n);
        if stop {
            return out;
        }
    }
}

/// Collects notifications until a `log/entry` has arrived for every row id in `ids`;
/// returns those entries by id order of `ids`.
pub async fn rows_notified(c: &Client, ids: &[i64]) -> Vec<Value> {
    let mut seen: std::collections::BTreeMap<i64, Value> = std::collections::BTreeMap::new();
    while ids.iter().any(|i| !seen.contains_key(i)) {
        let n = next(c).await;
        if n.method == "log/entry" {
            if let Some(id) = n.params["entry"]["id"].as_i64() {
                seen.insert(id, n.params["entry"].clone());
            }
        }
    }
    ids.iter().map(|i| seen[i].clone()).collect()
}
