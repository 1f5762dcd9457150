//! The `store` device: the sessions database behind the kernel's driver ABI.
//!
//! A run and its loops touch the database only through handles of this device, so every
//! row they write is a device I/O (journaled, replayable) and a handle can write only its
//! own run's rows and its own session's entries. The confinement is the device cap's
//! **scope** (DESIGN.md "Scoped devices"): the engine root attenuates its `store` cap to
//! `{session = S}` for a session's process, which narrows it to `{session = S, run = R}`
//! for each run; the kernel hands that scope to [`StoreDriver`] at `open`, and derivation
//! can only narrow it. An unscoped store cap opens nothing — there is no ambient "admin"
//! handle — and a read-only cap reads but never writes (mutations go through `write`, which
//! the kernel refuses on a handle without the `write` right).
//!
//! A **session handle** (`{session = S}` alone) serves only what a session's process needs:
//! the session row and its overlay (to grant each loop its `fs` cap), whether a run is the
//! session's, and ending the queued loops of a run it could not start (`Session`,
//! `Constraints`, `SessionRun`, `EndQueued`). Everything else needs a run handle.
//!
//! **Invariants:** a handle never reads another run's log or writes outside its
//! `(session, run)`; a session handle touches no log and no entry; requests and replies are
//! [`StoreRequest`] / reply values encoded with the abi serde bridge; a malformed request is
//! a `BadRequest`, never a panic.
//!
//! **API boundary:** [`StoreDriver`] (register it with the kernel), [`StoreScope`] (and
//! [`StoreScope::cap_scope`], the cap scope that names it; [`session_cap_scope`] for a
//! session handle), [`StoreRequest`].

use std::sync::Arc;

use agentos_abi::device::{from_value, to_value};
use agentos_abi::driver::BoxFuture;
use agentos_abi::driver::OpenCtx;
use agentos_abi::{Driver, DriverError, DriverHandle, Reply, Value};
use serde::{Deserialize, Serialize};

use super::{
    EntryKey, EntryWrite, LoopId, RowId, RowResolution, RunId, Scope, SessionId, Store, StoreError,
    TurnCommit,
};

/// The device name.
pub const STORE_DEVICE: &str = "store";

/// What a handle may touch: one session's entries and one run's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreScope {
    /// The session.
    pub session_id: SessionId,
    /// The run.
    pub run_id: RunId,
}

impl StoreScope {
    /// The device-cap scope that confines a `store` handle to this session and run.
    pub fn cap_scope(&self) -> agentos_abi::Scope {
        agentos_abi::Scope::new()
            .with("session", &self.session_id.to_string())
            .with("run", &self.run_id.to_string())
    }

    /// Reads a store scope from a device cap's scope: exactly the keys `session` and `run`,
    /// both ids.
    pub fn from_cap_scope(scope: &agentos_abi::Scope) -> Result<StoreScope, String> {
        let id = |k: &str| -> Result<i64, String> {
            let v = scope.get(k).ok_or_else(|| {
                format!("a store handle needs a `{k}` scope (the engine grants it per run)")
            })?;
            v.parse()
                .map_err(|_| format!("scope `{k}` is not an id: {v:?}"))
        };
        if let Some((k, _)) = scope.iter().find(|(k, _)| !matches!(*k, "session" | "run")) {
            return Err(format!("unknown scope key `{k}`"));
        }
        Ok(StoreScope {
            session_id: id("session")?,
            run_id: id("run")?,
        })
    }
}

/// The device-cap scope of a session handle: `{session = S}` alone.
pub fn session_cap_scope(session_id: SessionId) -> agentos_abi::Scope {
    agentos_abi::Scope::new().with("session", &session_id.to_string())
}

/// The session of a session handle's scope (exactly the key `session`), if it is one.
fn session_only(scope: &agentos_abi::Scope) -> Option<SessionId> {
    let mut keys = scope.iter();
    match (keys.next(), keys.next()) {
        (Some(("session", v)), None) => v.parse().ok(),
        _ => None,
    }
}

/// A request to the `store` device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StoreRequest {
    /// The handle's session row.
    Session,
    /// The session's membership overlay `(effect, glob)`, sorted → `Vec<(String, String)>`.
    Constraints,
    /// A run of the handle's session → `Option<RunRow>` (`None`: no such run in this
    /// session).
    SessionRun {
        /// The run.
        run_id: RunId,
    },
    /// End every queued loop of a run of the session → how many (a run the session could
    /// not start: its process quota is spent).
    EndQueued {
        /// The run.
        run_id: RunId,
        /// The loops' status.
        status: u16,
        /// Why.
        message: String,
    },
    /// A loop of the handle's run → `LoopRow`.
    Loop {
        /// The loop.
        loop_id: LoopId,
    },
    /// The oldest queued loop of the run → `Option<LoopRow>`.
    NextQueued,
    /// Claim a queued loop (100 → 102) → `bool`.
    Claim {
        /// The loop.
        loop_id: LoopId,
    },
    /// Set a loop's status → `LoopRow` (refused once terminal).
    SetStatus {
        /// The loop.
        loop_id: LoopId,
        /// The status.
        status: u16,
        /// Why.
        message: Option<String>,
    },
    /// Queue a loop on the run → `LoopRow`.
    Queue {
        /// The prompt.
        prompt: String,
        /// Flags as JSON text.
        flags: String,
        /// Turn limit.
        max_turns: Option<i64>,
    },
    /// The run's whole log → `Vec<LogRow>`.
    Log,
    /// The prompts of loop `loop_seq` → `Vec<(i64, String)>`.
    Prompts {
        /// The loop's ordinal.
        loop_seq: i64,
    },
    /// One entry → `Option<Entry>`.
    Entry {
        /// The entry.
        key: EntryKey,
    },
    /// Every entry of a scheme in a scope → `Vec<Entry>`.
    Entries {
        /// Session or run scope.
        scope: Scope,
        /// The scheme (`None`: files).
        scheme: Option<String>,
    },
    /// Commit a turn → `TurnCommitted`.
    Commit(TurnCommit),
    /// Apply entry writes in one transaction → `()`.
    Write(Vec<EntryWrite>),
    /// Resolve one of the run's proposed rows → the updated `LogRow`.
    Resolve {
        /// The row.
        row_id: RowId,
        /// How it ended.
        resolution: RowResolution,
    },
    /// Cancel a loop's pending proposals (499 `loop_aborted`) → how many.
    CancelProposals {
        /// The loop.
        loop_id: LoopId,
    },
    /// The run's pending proposals → `Vec<LogRow>`.
    Proposals,
    /// The handle's own run → `RunRow`.
    Run,
    /// The session's newest row id → `RowId`.
    MaxRowId,
    /// What arrived since the last turn, in one read → `(prompts, deltas, next)`: the
    /// [`StoreRequest::Prompts`] of loop `loop_seq` and the env deltas after row `after`
    /// (`(run name, row)` pairs, at most 100) with the row the next look starts after.
    PreTurn {
        /// The loop's ordinal.
        loop_seq: i64,
        /// Deltas after this row.
        after: RowId,
    },
    /// A run of the session by name → `Option<RunRow>`.
    RunNamed {
        /// The name.
        name: String,
    },
    /// The loops of a run of the session → `Vec<LoopRow>`.
    RunLoops {
        /// The run.
        run_id: RunId,
    },
    /// How many runs of the session are active → `usize`.
    ActiveRuns,
    /// A new run of the session (parent: the handle's run) with a queued loop →
    /// `(RunRow, LoopRow)`. Refused while a live run holds the name.
    SpawnRun {
        /// Its name.
        name: String,
        /// Its first loop's prompt.
        prompt: String,
        /// Flags (inherited from the spawning loop).
        flags: String,
    },
    /// Fork a run of the session with a queued loop → `(RunRow, LoopRow)`.
    ForkRun {
        /// The run forked.
        source: RunId,
        /// The fork's name.
        name: String,
        /// Its loop's prompt.
        prompt: String,
        /// Flags.
        flags: String,
    },
    /// An entry of another run of the session (its scratch; read-only) → `Option<Entry>`.
    RunEntry {
        /// The run.
        run_id: RunId,
        /// The entry (run scope).
        key: EntryKey,
    },
    /// Every entry of a scheme in another run's scratch → `Vec<Entry>`.
    RunEntries {
        /// The run.
        run_id: RunId,
        /// The scheme.
        scheme: Option<String>,
    },
}

impl StoreRequest {
    /// Whether the request changes the database (it must go through `write`).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            StoreRequest::Claim { .. }
                | StoreRequest::EndQueued { .. }
                | StoreRequest::SetStatus { .. }
                | StoreRequest::Queue { .. }
                | StoreRequest::Commit(_)
                | StoreRequest::Write(_)
                | StoreRequest::Resolve { .. }
                | StoreRequest::CancelProposals { .. }
                | StoreRequest::SpawnRun { .. }
                | StoreRequest::ForkRun { .. }
        )
    }
}

/// The `store` driver. One serves every run; each handle is confined by its cap's scope.
pub struct StoreDriver {
    store: Arc<Store>,
}

impl StoreDriver {
    /// A driver over `store`.
    pub fn new(store: Arc<Store>) -> Self {
        StoreDriver { store }
    }

    /// The store behind the device.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }
}

impl Driver for StoreDriver {
    fn name(&self) -> &str {
        STORE_DEVICE
    }

    /// A replay rebuilds the log in a fresh database: the store answers live, so the rows a
    /// replayed loop writes are really written (and must come out the same).
    fn replays_live(&self) -> bool {
        true
    }

    fn open(&self, at: OpenCtx) -> BoxFuture<'static, Result<Arc<dyn DriverHandle>, DriverError>> {
        let r = match StoreScope::from_cap_scope(&at.scope) {
            Ok(scope) => Ok(Arc::new(StoreHandle {
                store: self.store.clone(),
                scope: HandleScope::Run(scope),
            }) as Arc<dyn DriverHandle>),
            Err(e) => match session_only(&at.scope) {
                Some(session_id) => Ok(Arc::new(StoreHandle {
                    store: self.store.clone(),
                    scope: HandleScope::Session(session_id),
                }) as Arc<dyn DriverHandle>),
                None => Err(DriverError::BadRequest(format!("store: {e}"))),
            },
        };
        Box::pin(async move { r })
    }
}

/// What a handle was opened for: one run of a session, or the session alone.
#[derive(Debug, Clone, Copy)]
enum HandleScope {
    Run(StoreScope),
    Session(SessionId),
}

struct StoreHandle {
    store: Arc<Store>,
    scope: HandleScope,
}

fn err(e: StoreError) -> DriverError {
    match e {
        StoreError::Refused(m) => DriverError::BadRequest(format!("store: refused: {m}")),
        other => DriverError::Failed(format!("store: {other}")),
    }
}

fn reply<T: Serialize>(v: Result<T, StoreError>) -> Result<Reply, DriverError> {
    let v = v.map_err(err)?;
    to_value(&v)
        .map(Reply::free)
        .map_err(|e| DriverError::Failed(format!("store: encoding a reply: {e}")))
}

impl StoreHandle {
    fn call(&self, req: Value, write: bool) -> BoxFuture<'static, Result<Reply, DriverError>> {
        // SQLite under WAL with synchronous=NORMAL never fsyncs on commit, so a request is
        // bounded by page-cache work: it runs inline, which keeps a turn's rows on the
        // scheduler thread that produced them and a deterministic kernel deterministic.
        let r = match from_value::<StoreRequest>(req) {
            Ok(req) if req.is_write() != write => Err(DriverError::BadRequest(format!(
                "store: {} request through {}",
                if write { "a read" } else { "a write" },
                if write { "write" } else { "read" }
            ))),
            Ok(req) => match self.scope {
                HandleScope::Run(scope) => self.serve(scope, req),
                HandleScope::Session(session_id) => self.serve_session(session_id, req),
            },
            Err(e) => Err(DriverError::BadRequest(format!("store: {e}"))),
        };
        Box::pin(async move { r })
    }

    fn own_loop(&self, scope: StoreScope, loop_id: LoopId) -> Result<super::LoopRow, StoreError> {
        let l = self.store.loop_row(loop_id)?;
        if l.run_id != scope.run_id {
            return Err(StoreError::Refused(format!(
                "loop {loop_id} is not in run {}",
                scope.run_id
            )));
        }
        Ok(l)
    }

    fn same_session(&self, session_id: SessionId, run: RunId) -> Result<(), StoreError> {
        let r = self.store.run(run)?;
        if r.session_id != session_id {
            return Err(StoreError::Refused(format!(
                "run {run} is not in session {session_id}"
            )));
        }
        Ok(())
    }

    /// `run` if it is one of `session_id`'s runs (`None` for another session's or none).
    fn session_run(
        &self,
        session_id: SessionId,
        run: RunId,
    ) -> Result<Option<super::RunRow>, StoreError> {
        match self.store.run(run) {
            Ok(r) if r.session_id == session_id => Ok(Some(r)),
            Ok(_) | Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A session handle's requests (the rest are refused).
    fn serve_session(
        &self,
        session_id: SessionId,
        req: StoreRequest,
    ) -> Result<Reply, DriverError> {
        let s = &self.store;
        match req {
            StoreRequest::Session => reply(s.session(session_id)),
            StoreRequest::Constraints => reply(s.constraints(session_id)),
            StoreRequest::SessionRun { run_id } => reply(self.session_run(session_id, run_id)),
            StoreRequest::EndQueued {
                run_id,
                status,
                message,
            } => reply(
                self.same_session(session_id, run_id)
                    .and_then(|_| s.end_queued(run_id, status, &message)),
            ),
            _ => Err(DriverError::BadRequest(
                "store: a session handle serves only Session, Constraints, SessionRun and \
                 EndQueued (the rest needs a run in the handle's scope)"
                    .into(),
            )),
        }
    }

    fn serve(&self, scope: StoreScope, req: StoreRequest) -> Result<Reply, DriverError> {
        let StoreScope { session_id, run_id } = scope;
        let s = &self.store;
        match req {
            StoreRequest::Session => reply(s.session(session_id)),
            StoreRequest::Constraints => reply(s.constraints(session_id)),
            StoreRequest::SessionRun { run_id: other } => {
                reply(self.session_run(session_id, other))
            }
            StoreRequest::EndQueued { .. } => Err(DriverError::BadRequest(
                "store: only a session handle ends another run's queued loops".into(),
            )),
            StoreRequest::Loop { loop_id } => reply(self.own_loop(scope, loop_id)),
            StoreRequest::NextQueued => reply(
                s.loops(run_id)
                    .map(|ls| ls.into_iter().find(|l| l.status == super::status::QUEUED)),
            ),
            StoreRequest::Claim { loop_id } => reply(
                self.own_loop(scope, loop_id)
                    .and_then(|_| s.claim_loop(loop_id)),
            ),
            StoreRequest::SetStatus {
                loop_id,
                status,
                message,
            } => reply(
                self.own_loop(scope, loop_id)
                    .and_then(|_| s.set_loop_status(loop_id, status, message.as_deref())),
            ),
            StoreRequest::Queue {
                prompt,
                flags,
                max_turns,
            } => reply(s.create_loop(run_id, &prompt, &flags, max_turns)),
            StoreRequest::Log => reply(s.log_rows(run_id)),
            StoreRequest::Prompts { loop_seq } => reply(s.prompts(session_id, run_id, loop_seq)),
            StoreRequest::Entry { key } => reply(s.entry(session_id, run_id, &key)),
            StoreRequest::Entries { scope, scheme } => {
                reply(s.entries(session_id, run_id, scope, scheme.as_deref()))
            }
            StoreRequest::Commit(c) => reply(s.commit_turn(session_id, run_id, c)),
            StoreRequest::Write(w) => reply(s.write_entries(session_id, run_id, &w)),
            StoreRequest::Resolve { row_id, resolution } => {
                reply(s.resolve_row(run_id, row_id, &resolution))
            }
            StoreRequest::CancelProposals { loop_id } => reply(
                self.own_loop(scope, loop_id)
                    .and_then(|_| s.cancel_proposals(loop_id)),
            ),
            StoreRequest::Run => reply(s.run(run_id)),
            StoreRequest::MaxRowId => reply(s.max_row_id(session_id)),
            StoreRequest::PreTurn { loop_seq, after } => reply((|| {
                let prompts = s.prompts(session_id, run_id, loop_seq)?;
                let (deltas, next) = s.deltas(session_id, run_id, after, 100)?;
                Ok((prompts, deltas, next))
            })()),
            StoreRequest::RunNamed { name } => reply(s.run_named(session_id, &name)),
            StoreRequest::RunLoops { run_id: other } => reply(
                self.same_session(session_id, other)
                    .and_then(|_| s.loops(other)),
            ),
            StoreRequest::ActiveRuns => reply(s.active_runs(session_id)),
            StoreRequest::SpawnRun {
                name,
                prompt,
                flags,
            } => reply((|| {
                if let Some(r) = s.run_named(session_id, &name)? {
                    let live = s
                        .loops(r.id)?
                        .iter()
                        .any(|l| !super::status::is_terminal(l.status));
                    if live {
                        return Err(StoreError::Refused(format!("run {name} is live")));
                    }
                }
                let r = s.create_run(session_id, &name, super::Origin::Model, Some(run_id))?;
                let l = s.create_loop(r.id, &prompt, &flags, None)?;
                Ok((r, l))
            })()),
            StoreRequest::ForkRun {
                source,
                name,
                prompt,
                flags,
            } => reply((|| {
                let r = s.fork_run(session_id, source, &name, super::Origin::Model)?;
                let l = s.create_loop(r.id, &prompt, &flags, None)?;
                Ok((r, l))
            })()),
            StoreRequest::RunEntry { run_id: other, key } => reply(
                self.same_session(session_id, other)
                    .and_then(|_| s.entry(session_id, other, &key)),
            ),
            StoreRequest::RunEntries {
                run_id: other,
                scheme,
            } => reply(
                self.same_session(session_id, other)
                    .and_then(|_| s.entries(session_id, other, Scope::Run, scheme.as_deref())),
            ),
            StoreRequest::Proposals => reply(s.proposals(&super::LogQuery {
                run_id: Some(run_id),
                ..super::LogQuery::default()
            })),
        }
    }
}

impl DriverHandle for StoreHandle {
    fn read(&self, req: Value) -> BoxFuture<'static, Result<Reply, DriverError>> {
        self.call(req, false)
    }

    fn write(&self, data: Value) -> BoxFuture<'static, Result<Reply, DriverError>> {
        self.call(data, true)
    }
}
