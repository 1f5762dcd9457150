//! # The daemon: `agentos serve`
//!
//! One [`Engine`] (a multi-threaded kernel with the engine's devices) behind a JSON-RPC 2.0
//! server over WebSocket (PLURNK.md §4; upgrade on `/` or `/rpc`), with `GET /metrics`
//! (Prometheus text: the kernel's counters plus loops, turns, tokens, cost, connections),
//! `GET /healthz` and the web dashboard (`GET /`: one embedded page, `dashboard.html`, that
//! speaks the same JSON-RPC) on the same port. [`Server::start`] binds and serves on its own tokio runtime; [`Server::shutdown`]
//! drains. The parts:
//!
//! - [`rpc`] — framing and error codes (the only JSON parsing of the wire);
//! - [`methods`] — the one method table, its envelope (auto-create / −32000) and handlers;
//! - `hub` — the store subscriber that fans committed writes out to connections as
//!   notifications (`log/entry`, `loop/terminated`, `session/created`) and counts them;
//! - [`client`] — a small async client (used by `agentos run --connect`, tests and bench).
//!
//! A connection is one task: it reads a frame, dispatches it inline (store calls are short
//! SQLite transactions), writes the answer, and in between flushes the notifications its
//! hub queue holds. A response is always written before the notifications of the work it
//! started, because both leave through the same task in that order; notifications queued
//! before a request is read are written before its response.
//!
//! **Invariants:**
//! - notifications come from the store's commit events, never from polling;
//! - malformed input never panics: bad JSON is −32700, a bad envelope −32600, a binary
//!   frame −32600, and a frame over [`DaemonConfig::max_message_bytes`] closes *that*
//!   connection with 1009 while every other connection keeps working;
//! - a client that disconnects loses nothing: its loops run on and their rows are readable
//!   later through `log.read`;
//! - [`Server::shutdown`] cancels every queued and running loop (499), waits for them to
//!   end, closes connections (1001), stops the kernel and then marks any loop still open
//!   as interrupted, so no loop is left 102; a daemon started on an existing store should
//!   call [`Store::interrupt_unfinished`](crate::store::Store::interrupt_unfinished) first.
//!
//! **API boundary:** [`Server`], [`DaemonConfig`], [`ProviderInfo`], [`DrainReport`],
//! [`DaemonError`]; the wire is PLURNK.md §4 as listed by `discover`.

pub mod client;
mod hub;
pub mod methods;
pub mod rpc;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use crate::store::{status, StoreEvent, SubscriberId};
use crate::Engine;
use hub::Hub;
use methods::Conn;

/// The default bind address (PLURNK.md §3.10: 127.0.0.1:3044).
pub const DEFAULT_ADDR: &str = "127.0.0.1:3044";

/// The web dashboard served at `GET /`: one page, its script and style inline.
const DASHBOARD: &str = include_str!("dashboard.html");

/// The default largest accepted frame: 4 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 << 20;

/// One model alias the daemon serves (`providers.list`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderInfo {
    /// The alias clients name.
    pub alias: String,
    /// The provider family (`openai`, `scripted`…).
    pub provider: String,
    /// The model id.
    pub model: String,
}

/// How to run the daemon.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Where to listen (port 0: any free port; see [`Server::addr`]).
    pub addr: SocketAddr,
    /// The model aliases, the active one first.
    pub providers: Vec<ProviderInfo>,
    /// Largest accepted WebSocket message; a larger one closes its connection with 1009.
    pub max_message_bytes: usize,
    /// Notifications a connection may have queued before it is closed for falling behind.
    pub notify_backlog: usize,
    /// How long the drain waits for cancelled loops to end.
    pub drain_timeout: Duration,
    /// Server worker threads.
    pub worker_threads: usize,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            addr: DEFAULT_ADDR
                .parse()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 3044))),
            providers: Vec::new(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            notify_backlog: 1 << 16,
            drain_timeout: Duration::from_secs(10),
            worker_threads: 2,
        }
    }
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The runtime could not be built.
    #[error("cannot start the server runtime: {0}")]
    Runtime(std::io::Error),
    /// The address could not be bound.
    #[error(
        "cannot listen on {addr}: {source} (is another agentos serve running? set AGENTOS_PORT)"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// What a drain did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Loops cancelled (queued or running at shutdown).
    pub cancelled: usize,
    /// Loops still open after the kernel stopped, marked interrupted.
    pub interrupted: usize,
}

/// The daemon's shared state.
pub struct Daemon {
    engine: Engine,
    hub: Hub,
    config: DaemonConfig,
}

impl Daemon {
    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

#[derive(Clone)]
struct AppState {
    daemon: Arc<Daemon>,
    closing: watch::Receiver<bool>,
}

/// A running daemon.
pub struct Server {
    runtime: Option<tokio::runtime::Runtime>,
    daemon: Arc<Daemon>,
    addr: SocketAddr,
    closing: watch::Sender<bool>,
    subscription: SubscriberId,
    drained: Option<DrainReport>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("addr", &self.addr).finish()
    }
}

impl Server {
    /// Binds `config.addr` and serves `engine` on a runtime of its own.
    pub fn start(engine: Engine, config: DaemonConfig) -> Result<Server, DaemonError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.worker_threads.max(1))
            .thread_name("agentos-rpc")
            .enable_all()
            .build()
            .map_err(DaemonError::Runtime)?;
        // Bound with std so `start` also works from inside another runtime (tests).
        let bind_err = |source| DaemonError::Bind {
            addr: config.addr,
            source,
        };
        let std_listener = std::net::TcpListener::bind(config.addr).map_err(bind_err)?;
        std_listener.set_nonblocking(true).map_err(bind_err)?;
        let addr = std_listener.local_addr().map_err(bind_err)?;
        let listener = {
            let _in_rt = runtime.enter();
            tokio::net::TcpListener::from_std(std_listener).map_err(bind_err)?
        };
        let daemon = Arc::new(Daemon {
            engine,
            hub: Hub::default(),
            config,
        });
        let weak = Arc::downgrade(&daemon);
        let subscription = daemon.engine.subscribe(move |ev| {
            if let Some(d) = weak.upgrade() {
                d.hub.on_event(ev);
            }
        });
        let (closing, closing_rx) = watch::channel(false);
        let state = AppState {
            daemon: daemon.clone(),
            closing: closing_rx.clone(),
        };
        let app = Router::new()
            .route("/", get(root))
            .route("/rpc", get(root))
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .with_state(state);
        let mut stop = closing_rx;
        // Small request/response frames: no Nagle delay on either side of a round trip.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        runtime.spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|c| *c).await;
                })
                .await;
        });
        Ok(Server {
            runtime: Some(runtime),
            daemon,
            addr,
            closing,
            subscription,
            drained: None,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The engine it serves.
    pub fn engine(&self) -> &Engine {
        &self.daemon.engine
    }

    /// Blocks until SIGTERM or SIGINT (Ctrl-C) arrives.
    pub fn wait_for_signal(&self) {
        let Some(rt) = &self.runtime else { return };
        rt.block_on(async {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{signal, SignalKind};
                match signal(SignalKind::terminate()) {
                    Ok(mut term) => {
                        tokio::select! {
                            _ = term.recv() => {}
                            _ = tokio::signal::ctrl_c() => {}
                        }
                    }
                    Err(_) => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
            }
            #[cfg(not(unix))]
            {
                let _ = tokio::signal::ctrl_c().await;
            }
        });
    }

    /// Drains: cancels every queued and running loop (499), waits for them to end (up to
    /// [`DaemonConfig::drain_timeout`]), closes connections, stops the kernel, marks what
    /// is still open as interrupted. Idempotent.
    pub fn shutdown(&mut self) -> DrainReport {
        if let Some(r) = self.drained {
            return r;
        }
        let d = &self.daemon;
        let active = d.hub.active_loops();
        let mut runs: Vec<_> = active.iter().map(|(_, r)| *r).collect();
        runs.sort_unstable();
        runs.dedup();
        let mut cancelled = 0;
        for run in runs {
            if let Ok(ids) = methods::cancel_run(d, run, "daemon shutting down") {
                cancelled += ids.len();
            }
        }
        let deadline = std::time::Instant::now() + d.config.drain_timeout;
        for (loop_id, _) in &active {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let _ = d
                .engine
                .wait_loop(*loop_id, Some(left.max(Duration::from_millis(1))));
        }
        let _ = self.closing.send(true);
        if let Some(rt) = self.runtime.take() {
            // Give connections a moment to send their 1001 (not possible from inside
            // another runtime, where blocking is not allowed; they are dropped then).
            if tokio::runtime::Handle::try_current().is_err() {
                rt.block_on(d.hub.all_gone(Duration::from_secs(2)));
            }
            if tokio::runtime::Handle::try_current().is_err() {
                rt.shutdown_timeout(Duration::from_secs(2));
            } else {
                rt.shutdown_background();
            }
        }
        d.engine.unsubscribe(self.subscription);
        d.engine
            .kernel()
            .shutdown(agentos_abi::ExitReason::Shutdown);
        let interrupted = d.engine.store().interrupt_unfinished().unwrap_or(0);
        let report = DrainReport {
            cancelled,
            interrupted,
        };
        self.drained = Some(report);
        report
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Bytes a WebSocket read asks the socket for. tungstenite zero-fills this much before every
/// read (its default, 128 KiB, was an eighth of a ping's round trip); a JSON-RPC frame is
/// small, and a larger one still arrives in more reads.
pub(crate) const READ_BUFFER: usize = 8 * 1024;

async fn root(
    State(st): State<AppState>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    match ws {
        Ok(ws) => {
            let max = st.daemon.config.max_message_bytes;
            ws.max_message_size(max)
                .max_frame_size(max)
                .read_buffer_size(READ_BUFFER)
                .on_upgrade(move |socket| connection(st.daemon, socket, st.closing))
        }
        // Not an upgrade: the dashboard (one embedded page, no build step, no CDN).
        Err(_) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            DASHBOARD,
        )
            .into_response(),
    }
}

async fn metrics(State(st): State<AppState>) -> Response {
    let mut text = st.daemon.engine.kernel().metrics_text();
    text.push_str(&st.daemon.hub.metrics_text());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn healthz(State(st): State<AppState>) -> Response {
    match st.daemon.engine.store().schema_version() {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}\n")).into_response(),
    }
}

/// Answers one text frame with the text to send back: `None` when nothing is owed
/// (client notifications only). A single call's answer is serialised straight to text.
fn answer(conn: &mut Conn<'_>, text: &str) -> Option<String> {
    match rpc::decode(text) {
        rpc::Frame::Invalid(e) => Some(rpc::error_response(&Value::Null, &e).to_string()),
        rpc::Frame::Single(Ok(c)) => answer_call(conn, c),
        rpc::Frame::Single(Err(bad)) => answer_one(conn, Err(bad)).map(|v| v.to_string()),
        rpc::Frame::Batch(items) => {
            let out: Vec<Value> = items
                .into_iter()
                .filter_map(|c| answer_one(conn, c))
                .collect();
            (!out.is_empty()).then(|| Value::Array(out).to_string())
        }
    }
}

/// One well-formed call answered as text, without building the envelope as a `Value`.
fn answer_call(conn: &mut Conn<'_>, call: rpc::Call) -> Option<String> {
    conn.daemon.hub.count_request();
    let result = methods::dispatch(conn, &call.method, call.params);
    let id = call.id?;
    Some(match result {
        Ok(v) => rpc::response_text(&id, &v),
        Err(e) => rpc::error_response(&id, &e).to_string(),
    })
}

fn answer_one(
    conn: &mut Conn<'_>,
    call: Result<rpc::Call, (Value, rpc::RpcError)>,
) -> Option<Value> {
    conn.daemon.hub.count_request();
    let call = match call {
        Ok(c) => c,
        Err((id, e)) => return Some(rpc::error_response(&id, &e)),
    };
    let result = methods::dispatch(conn, &call.method, call.params);
    let id = call.id?;
    Some(match result {
        Ok(v) => rpc::response(&id, v),
        Err(e) => rpc::error_response(&id, &e),
    })
}

/// The notification a store event becomes for this connection, if any.
fn notification_for(d: &Daemon, ev: &StoreEvent) -> Vec<String> {
    match ev {
        StoreEvent::Session(s) => vec![rpc::notification(
            "session/created",
            json!({"sessionId": s.id, "session": methods::session_json(s)}),
        )
        .to_string()],
        // The hot path (a dashboard watching a loop): each row serialised to text in one
        // pass, no `Value` tree.
        StoreEvent::Rows { session_id, rows } => {
            let mut out: Vec<String> = rows
                .iter()
                .map(|r| log_entry_text(*session_id, r))
                .collect();
            // A proposed row also asks for a decision (PLURNK.md §4.3 `loop/proposal`).
            for r in rows
                .iter()
                .filter(|r| r.state == Some(crate::store::RowState::Proposed))
            {
                out.push(
                    rpc::notification(
                        "loop/proposal",
                        json!({
                            "logEntryId": r.id,
                            "sessionId": session_id,
                            "runId": r.run_id,
                            "loopId": r.loop_id,
                            "turnId": r.turn_id,
                            "op": r.op.as_str(),
                            "target": r.target,
                            "body": r.rx,
                        }),
                    )
                    .to_string(),
                );
            }
            out
        }
        // A resolution is the row's new state: the same `log/entry`, again.
        StoreEvent::Resolved { session_id, row } => vec![log_entry_text(*session_id, row)],
        StoreEvent::Loop {
            session_id,
            run_id,
            loop_id,
            status: s,
            message,
        } if status::is_terminal(*s) => {
            let turns = d.engine.store().turns(*loop_id).unwrap_or_default();
            let (mut p, mut c, mut k, mut cost) = (0i64, 0i64, 0i64, 0i64);
            for t in &turns {
                p += t.usage.prompt;
                c += t.usage.completion;
                k += t.usage.cached;
                cost += t.usage.cost_pico;
            }
            vec![rpc::notification(
                "loop/terminated",
                json!({
                    "sessionId": session_id,
                    "runId": run_id,
                    "loopId": loop_id,
                    "finalStatus": s,
                    "message": message,
                    "hitMaxTurns": *s == status::MAX_TURNS,
                    "turns": turns.len(),
                    "usage": {"prompt": p, "completion": c, "cached": k, "total": p + c},
                    "costPico": cost,
                }),
            )
            .to_string()]
        }
        _ => Vec::new(),
    }
}

/// One `log/entry` notification as text.
fn log_entry_text(session_id: crate::store::SessionId, r: &crate::store::LogRow) -> String {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Params<'a> {
        session_id: i64,
        run_id: i64,
        loop_id: i64,
        entry: methods::RowWire<'a>,
    }
    #[derive(serde::Serialize)]
    struct Note<'a> {
        jsonrpc: &'static str,
        method: &'static str,
        params: Params<'a>,
    }
    serde_json::to_string(&Note {
        jsonrpc: "2.0",
        method: "log/entry",
        params: Params {
            session_id,
            run_id: r.run_id,
            loop_id: r.loop_id,
            entry: methods::RowWire::of(r),
        },
    })
    .unwrap_or_default()
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

async fn connection(d: Arc<Daemon>, mut ws: WebSocket, mut closing: watch::Receiver<bool>) {
    let (tx, mut rx) = mpsc::channel::<StoreEvent>(d.config.notify_backlog.max(1));
    let tap = d.hub.add(tx);
    let tap_session: &AtomicI64 = &tap.session;
    let mut conn = Conn {
        daemon: &d,
        session: None,
        run: None,
        tap_session,
    };
    loop {
        tokio::select! {
            biased;
            _ = async { let _ = closing.wait_for(|c| *c).await; } => {
                let _ = ws.send(close(1001, "daemon shutting down")).await;
                break;
            }
            ev = rx.recv() => {
                let Some(ev) = ev else {
                    if tap.overflowed.load(Ordering::Acquire) {
                        let _ = ws.send(close(1008, "fell behind on notifications")).await;
                    }
                    break;
                };
                // Feed this event and whatever else is queued, then flush once.
                let mut sent = 0u64;
                let mut next = Some(ev);
                let mut failed = false;
                while let Some(ev) = next.take() {
                    for n in notification_for(&d, &ev) {
                        if ws.feed(Message::Text(n.into())).await.is_err() {
                            failed = true;
                        }
                        sent += 1;
                    }
                    if failed || sent > 256 {
                        break;
                    }
                    next = rx.try_recv().ok();
                }
                if failed || ws.flush().await.is_err() {
                    break;
                }
                d.hub.count_notifications(sent);
            }
            frame = ws.recv() => {
                let reply = match frame {
                    None | Some(Ok(Message::Close(_))) => break,
                    Some(Err(_)) => {
                        // Over the size limit or a protocol violation: this connection only.
                        let _ = ws.send(close(1009, "message too big or malformed")).await;
                        break;
                    }
                    Some(Ok(Message::Text(t))) => answer(&mut conn, t.as_str()),
                    Some(Ok(Message::Binary(_))) => Some(rpc::error_response(
                        &Value::Null,
                        &rpc::RpcError::new(rpc::INVALID_REQUEST, "binary frames are not JSON-RPC; send text"),
                    ).to_string()),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
                };
                if let Some(text) = reply {
                    if ws.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
            }
        }
    }
    d.hub.remove(tap.id);
}
