//! The notification hub: the daemon's one store subscriber, fanning committed writes out to
//! connections and keeping the counters `/metrics` reports.
//!
//! The store calls [`Hub::on_event`] on the writer's thread right after a commit; the hub
//! updates its counters and pushes the event (cheap: rows and turns are behind `Arc`s) into
//! the bounded queue of every connection that wants it — `session/created` to everyone, a
//! session's rows and loop ends to the connections attached to that session. JSON is built
//! later, on the connection's task.
//!
//! **Invariants:** the hub never blocks the writer (a `try_send`, never a wait); a
//! connection whose queue is full is *dropped from the hub* (its task then closes the socket
//! with 1008), never silently skipped, so a client either sees every notification of its
//! session in commit order or learns that it fell behind; the active-loop set holds exactly
//! the loops whose last status event was 100, 102 or 202.
//!
//! **API boundary:** crate-internal. [`Hub::add`] / [`Hub::remove`] for connections,
//! [`Hub::active_loops`] for the drain, [`Hub::metrics_text`] for `/metrics`,
//! [`Hub::stats_json`] / [`Hub::recent_loops`] for `daemon.stats`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;

use crate::store::{status, LoopId, RunId, SessionId, StoreEvent};

/// What a connection's tap sees: the session it is attached to (0 = none) and its queue.
struct Tap {
    session: Arc<AtomicI64>,
    tx: mpsc::Sender<StoreEvent>,
}

/// The handle a connection keeps on its tap.
pub(crate) struct TapHandle {
    /// The hub's id for it.
    pub id: u64,
    /// The attached session (0 = none); set before any work is started for the session.
    pub session: Arc<AtomicI64>,
    /// Whether the hub dropped it for falling behind.
    pub overflowed: Arc<AtomicBool>,
}

#[derive(Default)]
struct Counters {
    loops_queued: AtomicU64,
    turns: AtomicU64,
    rows: AtomicU64,
    tokens_prompt: AtomicU64,
    tokens_completion: AtomicU64,
    tokens_cached: AtomicU64,
    cost_pico: AtomicU64,
    sessions: AtomicU64,
    requests: AtomicU64,
    notifications: AtomicU64,
    connections: AtomicI64,
    overflows: AtomicU64,
}

/// A loop that ended: `(loop, run, status, message)`.
pub(crate) type Ended = (LoopId, RunId, u16, Option<String>);

/// Loops kept in the recently-ended list.
const RECENT: usize = 20;

/// The fan-out and the counters.
#[derive(Default)]
pub(crate) struct Hub {
    taps: RwLock<HashMap<u64, Tap>>,
    overflow_flags: Mutex<HashMap<u64, Arc<AtomicBool>>>,
    next: AtomicU64,
    active: Mutex<BTreeMap<LoopId, RunId>>,
    terminal: Mutex<BTreeMap<u16, u64>>,
    recent: Mutex<VecDeque<Ended>>,
    c: Counters,
    gone: tokio::sync::Notify,
}

impl Hub {
    /// Registers a connection whose queue is `tx`.
    pub fn add(&self, tx: mpsc::Sender<StoreEvent>) -> TapHandle {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let session = Arc::new(AtomicI64::new(0));
        let overflowed = Arc::new(AtomicBool::new(false));
        self.taps.write().insert(
            id,
            Tap {
                session: session.clone(),
                tx,
            },
        );
        self.overflow_flags.lock().insert(id, overflowed.clone());
        self.c.connections.fetch_add(1, Ordering::Relaxed);
        TapHandle {
            id,
            session,
            overflowed,
        }
    }

    /// Forgets a connection (idempotent).
    pub fn remove(&self, id: u64) {
        self.taps.write().remove(&id);
        if self.overflow_flags.lock().remove(&id).is_some() {
            self.c.connections.fetch_sub(1, Ordering::Relaxed);
        }
        self.gone.notify_waiters();
    }

    /// Waits until every connection has gone, or `timeout` passed.
    pub async fn all_gone(&self, timeout: std::time::Duration) {
        let wait = async {
            loop {
                let gone = self.gone.notified();
                if self.c.connections.load(Ordering::Relaxed) <= 0 {
                    return;
                }
                gone.await;
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
    }

    /// Counts one request.
    pub fn count_request(&self) {
        self.c.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts notifications sent.
    pub fn count_notifications(&self, n: u64) {
        self.c.notifications.fetch_add(n, Ordering::Relaxed);
    }

    /// Loops queued, running or parked, with their runs.
    pub fn active_loops(&self) -> Vec<(LoopId, RunId)> {
        self.active.lock().iter().map(|(l, r)| (*l, *r)).collect()
    }

    /// The store listener.
    pub fn on_event(&self, ev: &StoreEvent) {
        let target: Option<SessionId> = match ev {
            StoreEvent::Session(_) => {
                self.c.sessions.fetch_add(1, Ordering::Relaxed);
                None
            }
            StoreEvent::Run(_) | StoreEvent::Folds { .. } => return,
            StoreEvent::Resolved { session_id, .. } => Some(*session_id),
            StoreEvent::Turn { turn, .. } => {
                let u = &turn.usage;
                self.c.turns.fetch_add(1, Ordering::Relaxed);
                self.c
                    .tokens_prompt
                    .fetch_add(u.prompt.max(0) as u64, Ordering::Relaxed);
                self.c
                    .tokens_completion
                    .fetch_add(u.completion.max(0) as u64, Ordering::Relaxed);
                self.c
                    .tokens_cached
                    .fetch_add(u.cached.max(0) as u64, Ordering::Relaxed);
                self.c
                    .cost_pico
                    .fetch_add(u.cost_pico.max(0) as u64, Ordering::Relaxed);
                return;
            }
            StoreEvent::Rows { session_id, rows } => {
                self.c.rows.fetch_add(rows.len() as u64, Ordering::Relaxed);
                Some(*session_id)
            }
            StoreEvent::Loop {
                session_id,
                run_id,
                loop_id,
                status: s,
                ..
            } => {
                if status::is_terminal(*s) {
                    self.active.lock().remove(loop_id);
                    *self.terminal.lock().entry(*s).or_default() += 1;
                    let mut recent = self.recent.lock();
                    if recent.len() == RECENT {
                        recent.pop_front();
                    }
                    let message = match ev {
                        StoreEvent::Loop { message, .. } => message.clone(),
                        _ => None,
                    };
                    recent.push_back((*loop_id, *run_id, *s, message));
                } else {
                    if *s == status::QUEUED {
                        self.c.loops_queued.fetch_add(1, Ordering::Relaxed);
                    }
                    self.active.lock().insert(*loop_id, *run_id);
                    return;
                }
                Some(*session_id)
            }
        };
        let mut full = Vec::new();
        for (id, tap) in self.taps.read().iter() {
            if let Some(s) = target {
                if tap.session.load(Ordering::Acquire) != s {
                    continue;
                }
            }
            if let Err(mpsc::error::TrySendError::Full(_)) = tap.tx.try_send(ev.clone()) {
                full.push(*id);
            }
        }
        if !full.is_empty() {
            let mut taps = self.taps.write();
            let flags = self.overflow_flags.lock();
            for id in full {
                // Dropping the sender closes the queue: the connection drains what it has,
                // sees the end, checks its flag and closes with 1008.
                taps.remove(&id);
                if let Some(f) = flags.get(&id) {
                    f.store(true, Ordering::Release);
                }
                self.c.overflows.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Loops that ended lately, oldest first: `(loop, run, status, message)`.
    pub fn recent_loops(&self) -> Vec<Ended> {
        self.recent.lock().iter().cloned().collect()
    }

    /// The counters as JSON (`daemon.stats`).
    pub fn stats_json(&self) -> serde_json::Value {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let ended: serde_json::Map<String, serde_json::Value> = self
            .terminal
            .lock()
            .iter()
            .map(|(s, n)| (s.to_string(), (*n).into()))
            .collect();
        serde_json::json!({
            "loopsActive": self.active.lock().len(),
            "loopsQueued": get(&self.c.loops_queued),
            "loopsEnded": ended,
            "turns": get(&self.c.turns),
            "rows": get(&self.c.rows),
            "tokens": {
                "prompt": get(&self.c.tokens_prompt),
                "completion": get(&self.c.tokens_completion),
                "cached": get(&self.c.tokens_cached),
            },
            "costPico": get(&self.c.cost_pico),
            "sessionsCreated": get(&self.c.sessions),
            "connections": self.c.connections.load(Ordering::Relaxed),
            "requests": get(&self.c.requests),
            "notifications": get(&self.c.notifications),
        })
    }

    /// The daemon's counters in Prometheus text format (the kernel's are added by the caller).
    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, help: &str, kind: &str, lines: &[(String, String)]| {
            let _ = writeln!(out, "# HELP agentos_{name} {help}");
            let _ = writeln!(out, "# TYPE agentos_{name} {kind}");
            for (labels, v) in lines {
                let _ = writeln!(out, "agentos_{name}{labels} {v}");
            }
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        let plain = |v: String| vec![(String::new(), v)];
        metric(
            "loops_active",
            "Loops queued, running or parked.",
            "gauge",
            &plain(self.active.lock().len().to_string()),
        );
        metric(
            "loops_queued_total",
            "Loops queued since the daemon started.",
            "counter",
            &plain(get(&self.c.loops_queued)),
        );
        let ended: Vec<(String, String)> = self
            .terminal
            .lock()
            .iter()
            .map(|(s, n)| (format!("{{status=\"{s}\"}}"), n.to_string()))
            .collect();
        metric(
            "loops_ended_total",
            "Loops that reached a terminal status, by status.",
            "counter",
            &ended,
        );
        metric(
            "turns_total",
            "Turns written.",
            "counter",
            &plain(get(&self.c.turns)),
        );
        metric(
            "log_rows_total",
            "Log rows written.",
            "counter",
            &plain(get(&self.c.rows)),
        );
        metric(
            "tokens_total",
            "Model tokens, by kind.",
            "counter",
            &[
                ("{kind=\"prompt\"}".into(), get(&self.c.tokens_prompt)),
                (
                    "{kind=\"completion\"}".into(),
                    get(&self.c.tokens_completion),
                ),
                ("{kind=\"cached\"}".into(), get(&self.c.tokens_cached)),
            ],
        );
        let pico = self.c.cost_pico.load(Ordering::Relaxed);
        metric(
            "cost_usd_total",
            "Model cost in US dollars.",
            "counter",
            &plain(format!("{:.12}", pico as f64 / 1e12)),
        );
        metric(
            "sessions_created_total",
            "Sessions created.",
            "counter",
            &plain(get(&self.c.sessions)),
        );
        metric(
            "rpc_connections",
            "Open WebSocket connections.",
            "gauge",
            &plain(self.c.connections.load(Ordering::Relaxed).to_string()),
        );
        metric(
            "rpc_requests_total",
            "JSON-RPC calls answered.",
            "counter",
            &plain(get(&self.c.requests)),
        );
        metric(
            "rpc_notifications_total",
            "Notifications pushed.",
            "counter",
            &plain(get(&self.c.notifications)),
        );
        metric(
            "rpc_overflows_total",
            "Connections closed for falling behind on notifications.",
            "counter",
            &plain(get(&self.c.overflows)),
        );
        out
    }
}
