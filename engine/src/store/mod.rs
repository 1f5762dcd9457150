//! # The sessions store
//!
//! One SQLite database (rusqlite, bundled SQLite) holding plurnk's schema (PLURNK.md §5):
//! sessions, runs, loops, turns, entries with their channels and tags, the log, stream
//! subscriptions and the membership overlay. [`Store`] is the typed API over it; the
//! [`device`] module puts it behind the kernel's driver ABI as the `store` device, scoped to
//! one session and run per handle.
//!
//! **Invariants:**
//! - the schema is STRICT and migrated at open inside a transaction per migration, recorded
//!   in `user_version`; a file that is not an agentos database (another `application_id`, a
//!   newer schema, or not SQLite at all) is an error at open, never a reset;
//! - a turn's rows, fold changes, entry writes and loop status commit in **one transaction**
//!   ([`Store::commit_turn`]) or not at all;
//! - log rows are immutable but for their resolution and fold state (a trigger enforces it);
//! - subscribers hear about a write only after it committed, outside the connection lock.
//!
//! **API boundary:** [`Store`] (open, sessions, runs, loops, turns, the log, entries,
//! [`Store::subscribe`]) and the row types of [`rows`]. SQL never leaves this module.

pub mod device;
pub mod rows;
pub mod schema;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use thiserror::Error;

pub use rows::*;

/// Why a store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The file could not be opened or created.
    #[error("cannot open the sessions database {path}: {detail}")]
    Open {
        /// The database path.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The file exists but is not a readable SQLite database.
    #[error("{path} is corrupt or not a SQLite database ({detail}); move it aside or point AGENTOS_DATA_DIR elsewhere")]
    Corrupt {
        /// The database path.
        path: PathBuf,
        /// SQLite's words.
        detail: String,
    },
    /// The file is a SQLite database of another application.
    #[error("{path} is a SQLite database of another application (application_id {application_id:#x}); refusing to touch it")]
    Foreign {
        /// The database path.
        path: PathBuf,
        /// Its application id.
        application_id: i32,
    },
    /// The database was written by a newer agentos.
    #[error(
        "{path} has schema version {found}; this agentos knows up to {known} — upgrade agentos"
    )]
    TooNew {
        /// The database path.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
    /// A migration failed (the database keeps its previous version).
    #[error("migration {version} failed: {detail}")]
    Migration {
        /// The version it would have reached.
        version: usize,
        /// SQLite's words.
        detail: String,
    },
    /// Something asked for does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A write outside the handle's session and run, or an illegal transition.
    #[error("refused: {0}")]
    Refused(String),
    /// A uniqueness conflict (a session name in use, say).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Any other SQLite failure.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// A committed change, as subscribers hear it.
#[derive(Debug, Clone)]
pub enum StoreEvent {
    /// A session was created.
    Session(SessionRow),
    /// A run was created.
    Run(RunRow),
    /// A loop changed status (queued, claimed, terminated).
    Loop {
        /// Its session.
        session_id: SessionId,
        /// Its run.
        run_id: RunId,
        /// The loop.
        loop_id: LoopId,
        /// The new status.
        status: u16,
        /// The terminal message, if any.
        message: Option<String>,
    },
    /// A turn was written.
    Turn {
        /// Its session.
        session_id: SessionId,
        /// The turn row, with its id.
        turn: Arc<TurnRow>,
    },
    /// Log rows were written, in order.
    Rows {
        /// Their session.
        session_id: SessionId,
        /// The rows, with ids.
        rows: Arc<[LogRow]>,
    },
    /// A proposed row was resolved (accepted, rejected, cancelled); `row` is its new state.
    Resolved {
        /// Its session.
        session_id: SessionId,
        /// The row after the resolution.
        row: Arc<LogRow>,
    },
    /// Earlier rows were opened or folded.
    Folds {
        /// Their session.
        session_id: SessionId,
        /// `(row, expanded)` pairs.
        folds: Arc<[(RowId, bool)]>,
    },
}

/// A subscription handle; pass it to [`Store::unsubscribe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriberId(u64);

type Listener = Arc<dyn Fn(&StoreEvent) + Send + Sync>;

/// The sessions database. Cheap to share behind an `Arc`; one connection under a mutex
/// (SQLite serializes writers anyway, and WAL keeps readers of other connections unblocked).
pub struct Store {
    conn: Mutex<Connection>,
    path: Option<PathBuf>,
    listeners: RwLock<Vec<(SubscriberId, Listener)>>,
    next_listener: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// The default database path: `$AGENTOS_DATA_DIR/sessions.db`, else the user's data
/// directory (`~/.local/share/agentos/sessions.db` on Linux), else `./.agentos/sessions.db`.
pub fn default_path() -> PathBuf {
    data_dir().join("sessions.db")
}

/// The directory agentos keeps its state in: `$AGENTOS_DATA_DIR`, else the user's data
/// directory joined with `agentos`, else `./.agentos`.
pub fn data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("AGENTOS_DATA_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    dirs::data_dir()
        .map(|d| d.join("agentos"))
        .unwrap_or_else(|| PathBuf::from(".agentos"))
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn classify_open_error(path: &Path, e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path: path.to_owned(),
            detail: e.to_string(),
        },
        _ => StoreError::Open {
            path: path.to_owned(),
            detail: e.to_string(),
        },
    }
}

impl Store {
    /// Opens (creating if needed) the database at `path`, migrating it to the current schema.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                path: path.to_owned(),
                detail: format!("cannot create {}: {e}", dir.display()),
            })?;
        }
        let conn = Connection::open(path).map_err(|e| classify_open_error(path, e))?;
        Store::init(conn, Some(path.to_owned()))
    }

    /// An in-memory database (tests, benches, throwaway runs).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let conn = Connection::open_in_memory()?;
        Store::init(conn, None)
    }

    /// The default database: [`default_path`].
    pub fn open_default() -> Result<Store, StoreError> {
        Store::open(default_path())
    }

    /// Where the database lives (`None` in memory).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn init(mut conn: Connection, path: Option<PathBuf>) -> Result<Store, StoreError> {
        let shown = path.clone().unwrap_or_else(|| PathBuf::from(":memory:"));
        let err = |e: rusqlite::Error| classify_open_error(&shown, e);
        // The first read of the header is where a foreign or corrupt file shows itself.
        let app_id: i32 = conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .map_err(err)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        if tables > 0 && app_id != schema::APPLICATION_ID {
            return Err(StoreError::Foreign {
                path: shown,
                application_id: app_id,
            });
        }
        let known = schema::MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew {
                path: shown,
                found: version,
                known,
            });
        }
        if path.is_some() {
            let mode: String = conn
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
                .map_err(err)?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StoreError::Open {
                    path: shown,
                    detail: format!("could not switch to WAL (journal_mode is {mode})"),
                });
            }
        }
        // NORMAL under WAL: a commit never fsyncs (checkpoints do), so a crash loses at most
        // the last commits and never corrupts; every committed turn survives a process crash.
        conn.execute_batch(
            "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
        )
        .map_err(err)?;
        for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(version as usize) {
            let fail = |e: rusqlite::Error| StoreError::Migration {
                version: i + 1,
                detail: e.to_string(),
            };
            let tx = conn.transaction().map_err(fail)?;
            tx.execute_batch(sql).map_err(fail)?;
            tx.execute_batch(&format!(
                "PRAGMA application_id = {}; PRAGMA user_version = {};",
                schema::APPLICATION_ID,
                i + 1
            ))
            .map_err(fail)?;
            tx.commit().map_err(fail)?;
        }
        // Every statement the store runs stays prepared (about 60 shapes, log filters included).
        conn.set_prepared_statement_cache_capacity(256);
        Ok(Store {
            conn: Mutex::new(conn),
            path,
            listeners: RwLock::new(Vec::new()),
            next_listener: AtomicU64::new(1),
        })
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .lock()
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    // ---- subscriptions -------------------------------------------------------------------

    /// Calls `f` after every committed write, in commit order. `f` runs on the writer's
    /// thread, outside the connection lock: keep it short (push into a channel).
    pub fn subscribe(&self, f: impl Fn(&StoreEvent) + Send + Sync + 'static) -> SubscriberId {
        let id = SubscriberId(self.next_listener.fetch_add(1, Ordering::Relaxed));
        self.listeners.write().push((id, Arc::new(f)));
        id
    }

    /// Stops a subscription (no-op if it is gone).
    pub fn unsubscribe(&self, id: SubscriberId) {
        self.listeners.write().retain(|(i, _)| *i != id);
    }

    fn has_listeners(&self) -> bool {
        !self.listeners.read().is_empty()
    }

    fn emit(&self, ev: StoreEvent) {
        let ls: Vec<Listener> = self
            .listeners
            .read()
            .iter()
            .map(|(_, l)| l.clone())
            .collect();
        for l in ls {
            l(&ev);
        }
    }

    // ---- schemes -------------------------------------------------------------------------

    /// Records a scheme's manifest in the `schemes` table (replacing an older record), so
    /// the database describes the schemes its rows point into.
    pub fn register_scheme(&self, s: &SchemeRecord) -> Result<(), StoreError> {
        self.conn.lock().execute_cached(
            "INSERT INTO schemes (name, model_visible, category, default_scope, default_channel, channel_orientations, writable_by, volatile) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (name) DO UPDATE SET model_visible = excluded.model_visible, \
             category = excluded.category, default_scope = excluded.default_scope, default_channel = excluded.default_channel, \
             channel_orientations = excluded.channel_orientations, writable_by = excluded.writable_by, volatile = excluded.volatile",
            params![
                s.name,
                s.model_visible as i64,
                s.category,
                s.default_scope.as_str(),
                s.default_channel,
                s.channels_json,
                s.writable_by_json,
                s.volatile as i64
            ],
        )?;
        Ok(())
    }

    /// The recorded schemes, by name.
    pub fn schemes(&self) -> Result<Vec<SchemeRecord>, StoreError> {
        let conn = self.conn.lock();
        let mut st = conn.prepare_cached(
            "SELECT name, model_visible, category, default_scope, default_channel, channel_orientations, writable_by, volatile FROM schemes ORDER BY name",
        )?;
        let rows = st.query_map([], |r| {
            let scope: String = r.get(3)?;
            Ok(SchemeRecord {
                name: r.get(0)?,
                model_visible: r.get::<_, i64>(1)? != 0,
                category: r.get(2)?,
                default_scope: if scope == "run" {
                    Scope::Run
                } else {
                    Scope::Session
                },
                default_channel: r.get(4)?,
                channels_json: r.get(5)?,
                writable_by_json: r.get(6)?,
                volatile: r.get::<_, i64>(7)? != 0,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ---- sessions and runs ---------------------------------------------------------------

    /// Creates a session; a `None` name picks `session-<id>`.
    pub fn create_session(
        &self,
        name: Option<&str>,
        project_root: Option<&str>,
        settings_json: &str,
    ) -> Result<SessionRow, StoreError> {
        serde_json::from_str::<serde_json::Value>(settings_json)
            .map_err(|e| StoreError::Refused(format!("settings are not JSON: {e}")))?;
        let row = {
            let mut conn = self.conn.lock();
            let tx = conn.transaction()?;
            let now = wall_ms();
            let placeholder = format!("session-pending-{now}-{}", rand_suffix());
            let taken = name.unwrap_or(&placeholder);
            let r = tx.execute_cached(
                "INSERT INTO sessions (name, created_at, project_root, settings) VALUES (?1, ?2, ?3, ?4)",
                params![taken, now, project_root, settings_json],
            );
            if let Err(e) = r {
                if is_unique(&e) {
                    return Err(StoreError::Conflict(format!(
                        "a session named {taken:?} exists"
                    )));
                }
                return Err(e.into());
            }
            let id = tx.last_insert_rowid();
            if name.is_none() {
                tx.execute_cached(
                    "UPDATE sessions SET name = ?1 WHERE id = ?2",
                    params![format!("session-{id}"), id],
                )?;
            }
            let row = session_by_id(&tx, id)?;
            tx.commit()?;
            row
        };
        self.emit(StoreEvent::Session(row.clone()));
        Ok(row)
    }

    /// Every session, oldest first.
    pub fn sessions(&self) -> Result<Vec<SessionRow>, StoreError> {
        let conn = self.conn.lock();
        let mut st = conn.prepare_cached(
            "SELECT id, name, created_at, cost_pico, project_root, settings FROM sessions ORDER BY id",
        )?;
        let rows = st.query_map([], session_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One session.
    pub fn session(&self, id: SessionId) -> Result<SessionRow, StoreError> {
        session_by_id(&self.conn.lock(), id)
    }

    /// A session by name.
    pub fn session_named(&self, name: &str) -> Result<Option<SessionRow>, StoreError> {
        let conn = self.conn.lock();
        Ok(conn
            .query_row_cached(
                "SELECT id, name, created_at, cost_pico, project_root, settings FROM sessions WHERE name = ?1",
                [name],
                session_from_row,
            )
            .optional()?)
    }

    /// Renames a session (run names are frozen; session names are not).
    pub fn rename_session(&self, id: SessionId, name: &str) -> Result<(), StoreError> {
        let n = self
            .conn
            .lock()
            .execute_cached(
                "UPDATE sessions SET name = ?1 WHERE id = ?2",
                params![name, id],
            )
            .map_err(|e| {
                if is_unique(&e) {
                    StoreError::Conflict(format!("a session named {name:?} exists"))
                } else {
                    e.into()
                }
            })?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("session {id}")));
        }
        Ok(())
    }

    /// Sets a session's project root (`None`: headless). A run sees it from its next loop
    /// on: the engine grants each loop its `fs` and `exec` caps from the session as it is
    /// when the loop starts.
    pub fn set_project_root(
        &self,
        id: SessionId,
        project_root: Option<&str>,
    ) -> Result<(), StoreError> {
        let n = self.conn.lock().execute(
            "UPDATE sessions SET project_root = ?1 WHERE id = ?2",
            params![project_root, id],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("session {id}")));
        }
        Ok(())
    }

    /// Creates a run in a session.
    pub fn create_run(
        &self,
        session_id: SessionId,
        name: &str,
        origin: Origin,
        parent_run_id: Option<RunId>,
    ) -> Result<RunRow, StoreError> {
        let row = {
            let mut conn = self.conn.lock();
            let tx = conn.transaction()?;
            session_by_id(&tx, session_id)?;
            tx.execute_cached(
                "INSERT INTO runs (session_id, name, created_at, parent_run_id, origin) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![session_id, name, wall_ms(), parent_run_id, origin.as_str()],
            )?;
            let id = tx.last_insert_rowid();
            let row = run_by_id(&tx, id)?;
            tx.commit()?;
            row
        };
        self.emit(StoreEvent::Run(row.clone()));
        Ok(row)
    }

    /// One run.
    pub fn run(&self, id: RunId) -> Result<RunRow, StoreError> {
        run_by_id(&self.conn.lock(), id)
    }

    /// A session's runs, newest first.
    pub fn runs(&self, session_id: SessionId) -> Result<Vec<RunRow>, StoreError> {
        let conn = self.conn.lock();
        let mut st = conn.prepare_cached(
            "SELECT id, session_id, name, created_at, parent_run_id, cost_pico, origin FROM runs WHERE session_id = ?1 ORDER BY id DESC",
        )?;
        let rows = st.query_map([session_id], run_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ---- loops ---------------------------------------------------------------------------

    /// Queues a loop (status 100) on a run.
    pub fn create_loop(
        &self,
        run_id: RunId,
        prompt: &str,
        flags_json: &str,
        max_turns: Option<i64>,
    ) -> Result<LoopRow, StoreError> {
        serde_json::from_str::<serde_json::Value>(flags_json)
            .map_err(|e| StoreError::Refused(format!("flags are not JSON: {e}")))?;
        let (row, session_id) = {
            let mut conn = self.conn.lock();
            let tx = conn.transaction()?;
            let run = run_by_id(&tx, run_id)?;
            let seq: i64 = tx.query_row_cached(
                "SELECT ifnull(max(sequence), 0) + 1 FROM loops WHERE run_id = ?1",
                [run_id],
                |r| r.get(0),
            )?;
            tx.execute_cached(
                "INSERT INTO loops (run_id, sequence, status, prompt, flags, max_turns, created_at) VALUES (?1, ?2, 100, ?3, ?4, ?5, ?6)",
                params![run_id, seq, prompt, flags_json, max_turns, wall_ms()],
            )?;
            let id = tx.last_insert_rowid();
            let row = loop_by_id(&tx, id)?;
            tx.commit()?;
            (row, run.session_id)
        };
        self.emit(StoreEvent::Loop {
            session_id,
            run_id,
            loop_id: row.id,
            status: row.status,
            message: None,
        });
        Ok(row)
    }

    /// One loop.
    pub fn loop_row(&self, id: LoopId) -> Result<LoopRow, StoreError> {
        loop_by_id(&self.conn.lock(), id)
    }

    /// A run's loops, oldest first.
    pub fn loops(&self, run_id: RunId) -> Result<Vec<LoopRow>, StoreError> {
        let conn = self.conn.lock();
        let mut st = conn.prepare_cached(&format!(
            "SELECT {LOOP_COLS} FROM loops WHERE run_id = ?1 ORDER BY sequence"
        ))?;
        let rows = st.query_map([run_id], loop_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Sets a loop's status (and terminal message). A terminal loop never changes again:
    /// the update is refused, so a late cancel cannot overwrite a finished loop's outcome.
    pub fn set_loop_status(
        &self,
        loop_id: LoopId,
        status: u16,
        message: Option<&str>,
    ) -> Result<LoopRow, StoreError> {
        let (row, session_id) = {
            let mut conn = self.conn.lock();
            let tx = conn.transaction()?;
            let row = set_loop_status_tx(&tx, loop_id, status, message)?;
            let session_id = run_by_id(&tx, row.run_id)?.session_id;
            tx.commit()?;
            (row, session_id)
        };
        self.emit(StoreEvent::Loop {
            session_id,
            run_id: row.run_id,
            loop_id,
            status: row.status,
            message: row.terminal_message.clone(),
        });
        Ok(row)
    }

    /// Claims a queued loop for its run's drain (100 → 102); false if it was not queued.
    pub fn claim_loop(&self, loop_id: LoopId) -> Result<bool, StoreError> {
        let row = self.loop_row(loop_id)?;
        if row.status != status::QUEUED {
            return Ok(false);
        }
        self.set_loop_status(loop_id, status::RUNNING, None)?;
        Ok(true)
    }

    /// Ends every queued loop of a run with `status` and `message` (a run the engine could
    /// not start). Returns how many.
    pub fn end_queued(
        &self,
        run_id: RunId,
        status: u16,
        message: &str,
    ) -> Result<usize, StoreError> {
        let queued: Vec<LoopId> = self
            .loops(run_id)?
            .into_iter()
            .filter(|l| l.status == status::QUEUED)
            .map(|l| l.id)
            .collect();
        for id in &queued {
            self.set_loop_status(*id, status, Some(message))?;
        }
        Ok(queued.len())
    }

    /// Marks every loop left queued or running (by a host that died) as interrupted: 499
    /// with message `interrupted`. Returns how many.
    pub fn interrupt_unfinished(&self) -> Result<usize, StoreError> {
        let ids: Vec<LoopId> = {
            let conn = self.conn.lock();
            let mut st = conn.prepare("SELECT id FROM loops WHERE status IN (100, 102, 202)")?;
            let r = st.query_map([], |r| r.get(0))?;
            r.collect::<Result<_, _>>()?
        };
        for id in &ids {
            self.set_loop_status(*id, status::CANCELLED, Some("interrupted"))?;
        }
        Ok(ids.len())
    }

    // ---- turns and the log ---------------------------------------------------------------

    /// Writes one turn in one transaction: the turn row, its log rows, fold changes of
    /// earlier rows, entry writes and the loop's new status. `session_id`/`run_id` are the
    /// writer's scope: the loop must belong to the run, every row to the run, every
    /// run-scoped entry write to the run.
    pub fn commit_turn(
        &self,
        session_id: SessionId,
        run_id: RunId,
        commit: TurnCommit,
    ) -> Result<TurnCommitted, StoreError> {
        let TurnCommit {
            mut turn,
            turn_id: append_to,
            mut rows,
            folds,
            entries,
            loop_status,
        } = commit;
        let (committed, loop_row) = {
            let mut conn = self.conn.lock();
            let tx = conn.transaction()?;
            let lp = loop_by_id(&tx, turn.loop_id)?;
            let run = run_by_id(&tx, lp.run_id)?;
            if lp.run_id != run_id || run.session_id != session_id {
                return Err(StoreError::Refused(format!(
                    "loop {} is not in run {run_id} of session {session_id}",
                    lp.id
                )));
            }
            let turn_id = match append_to {
                Some(id) => {
                    // A later segment of a parked turn: the turn must be this loop's.
                    turn = tx
                        .query_row_cached(
                            "SELECT id, loop_id, sequence, timestamp, status, usage_prompt, usage_completion, usage_cached, usage_cost_pico, usage_context_size, packet, finish_reason, model FROM turns WHERE id = ?1",
                            [id],
                            turn_from_row,
                        )
                        .optional()?
                        .filter(|t| t.loop_id == lp.id)
                        .ok_or_else(|| {
                            StoreError::Refused(format!("turn {id} is not in loop {}", lp.id))
                        })?;
                    id
                }
                None => {
                    tx.execute_cached(
                        "INSERT INTO turns (loop_id, sequence, timestamp, status, usage_prompt, usage_completion, usage_cached, usage_cost_pico, usage_context_size, packet, finish_reason, model) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                        params![
                            turn.loop_id,
                            turn.sequence,
                            turn.timestamp,
                            turn.status,
                            turn.usage.prompt,
                            turn.usage.completion,
                            turn.usage.cached,
                            turn.usage.cost_pico,
                            turn.usage.context_size,
                            turn.packet,
                            turn.finish_reason,
                            turn.model,
                        ],
                    )?;
                    let id = tx.last_insert_rowid();
                    turn.id = id;
                    id
                }
            };
            let mut row_ids = Vec::with_capacity(rows.len());
            {
                let mut ins = tx.prepare_cached(INSERT_ROW)?;
                for r in rows.iter_mut() {
                    if r.run_id != run_id || r.loop_id != lp.id {
                        return Err(StoreError::Refused(format!(
                            "row for run {} loop {} in a commit of run {run_id} loop {}",
                            r.run_id, r.loop_id, lp.id
                        )));
                    }
                    r.turn_id = turn_id;
                    r.loop_seq = lp.sequence;
                    r.turn_seq = turn.sequence;
                    insert_row(&mut ins, r)?;
                    r.id = tx.last_insert_rowid();
                    row_ids.push(r.id);
                }
            }
            if !folds.is_empty() {
                let mut up = tx.prepare_cached(
                    "UPDATE log_entries SET expanded = ?1 WHERE id = ?2 AND run_id = ?3",
                )?;
                for (id, expanded) in &folds {
                    up.execute(params![*expanded as i64, id, run_id])?;
                }
            }
            for w in &entries {
                apply_entry_write(&tx, session_id, run_id, w)?;
            }
            let loop_row = match &loop_status {
                Some((s, m)) => Some(set_loop_status_tx(&tx, lp.id, *s, m.as_deref())?),
                None => None,
            };
            tx.commit()?;
            (TurnCommitted { turn_id, row_ids }, loop_row)
        };
        if self.has_listeners() {
            if append_to.is_none() {
                self.emit(StoreEvent::Turn {
                    session_id,
                    turn: Arc::new(turn),
                });
            }
            if !rows.is_empty() {
                self.emit(StoreEvent::Rows {
                    session_id,
                    rows: rows.into(),
                });
            }
            if !folds.is_empty() {
                self.emit(StoreEvent::Folds {
                    session_id,
                    folds: folds.into(),
                });
            }
            if let Some(l) = loop_row {
                self.emit(StoreEvent::Loop {
                    session_id,
                    run_id,
                    loop_id: l.id,
                    status: l.status,
                    message: l.terminal_message,
                });
            }
        }
        Ok(committed)
    }

    /// Resolves a proposed row of `run_id` (PLURNK.md §3.6) → the updated row. Refused when
    /// the row is not this run's or is no longer `proposed` (a decision lands once).
    pub fn resolve_row(
        &self,
        run_id: RunId,
        row_id: RowId,
        res: &RowResolution,
    ) -> Result<LogRow, StoreError> {
        if res.state == RowState::Proposed {
            return Err(StoreError::Refused(
                "a resolution must leave the proposed state".into(),
            ));
        }
        let (row, session_id) = {
            let mut conn = self.conn.lock();
            let tx = conn.transaction()?;
            let n = tx.execute_cached(
                "UPDATE log_entries SET state = ?1, status_rx = ?2, outcome = ?3, rx = COALESCE(?4, rx) \
                 WHERE id = ?5 AND run_id = ?6 AND state = 'proposed'",
                params![
                    res.state.as_str(),
                    res.status,
                    res.outcome,
                    res.rx,
                    row_id,
                    run_id
                ],
            )?;
            if n == 0 {
                return Err(StoreError::Refused(format!(
                    "row {row_id} is not a pending proposal of run {run_id}"
                )));
            }
            let row = row_by_id(&tx, row_id)?;
            let session_id = run_by_id(&tx, run_id)?.session_id;
            tx.commit()?;
            (row, session_id)
        };
        if self.has_listeners() {
            self.emit(StoreEvent::Resolved {
                session_id,
                row: Arc::new(row.clone()),
            });
        }
        Ok(row)
    }

    /// Cancels every pending proposal of a loop (499 `loop_aborted`): a loop that dies while
    /// parked leaves nothing waiting. Returns how many it cancelled.
    pub fn cancel_proposals(&self, loop_id: LoopId) -> Result<usize, StoreError> {
        let pending = self.proposals(&LogQuery {
            loop_id: Some(loop_id),
            ..LogQuery::default()
        })?;
        let res = RowResolution {
            state: RowState::Cancelled,
            status: 499,
            outcome: Some("loop_aborted".into()),
            rx: None,
        };
        let mut n = 0;
        for r in pending {
            if self.resolve_row(r.run_id, r.id, &res).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Pending proposals (rows in state `proposed`) matching `q`, oldest first.
    pub fn proposals(&self, q: &LogQuery) -> Result<Vec<LogRow>, StoreError> {
        let conn = self.conn.lock();
        let (sql, args) = q.select(" AND e.state = 'proposed'", false);
        let mut st = conn.prepare_cached(&sql)?;
        let rows = st.query_map(rusqlite::params_from_iter(args), log_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One log row by id.
    pub fn log_row(&self, row_id: RowId) -> Result<LogRow, StoreError> {
        let conn = self.conn.lock();
        row_by_id(&conn, row_id)
    }

    /// Env deltas (PLURNK.md §3.7): the session's other runs' successful EDITs of shared
    /// entries (`known`, `unknown`, project files) written after row `after`, oldest first,
    /// at most `limit`, each with its run's name; and the newest row id at the time of the
    /// query (the next look starts there, so no row is scanned twice).
    pub fn deltas(
        &self,
        session_id: SessionId,
        run_id: RunId,
        after: RowId,
        limit: u32,
    ) -> Result<(Vec<(String, LogRow)>, RowId), StoreError> {
        let conn = self.conn.lock();
        let newest: RowId =
            conn.query_row_cached("SELECT COALESCE(MAX(id), 0) FROM log_entries", [], |r| {
                r.get(0)
            })?;
        let mut st = conn.prepare_cached(&format!(
            // `CROSS JOIN` fixes the plan: the session's runs (runs_session), then each run's
            // rows after `after` (a range of log_entries_run) — only this session's new rows
            // are read, however busy the other sessions are.
            "SELECT {ROW_COLS}, r.name FROM runs r CROSS JOIN log_entries e CROSS JOIN loops l CROSS JOIN turns t \
             WHERE r.session_id = ?1 AND r.id <> ?2 AND e.run_id = r.id AND e.id > ?3 AND l.id = e.loop_id AND t.id = e.turn_id AND e.op = 'EDIT' \
             AND e.origin IN ('model', 'client') AND e.status_rx IN (200, 201) \
             AND (e.scheme IS NULL OR e.scheme IN ('known', 'unknown')) \
             AND (e.state IS NULL OR e.state = 'resolved') ORDER BY e.id LIMIT {limit}"
        ))?;
        // The limit is in the text, not a parameter: SQLite plans with a bound LIMIT's value,
        // so rebinding one re-prepares the statement on every call.
        let rows = st.query_map(params![session_id, run_id, after], |r| {
            Ok((r.get::<_, String>(27)?, log_from_row(r)?))
        })?;
        let rows: Vec<(String, LogRow)> = rows.collect::<Result<_, _>>()?;
        // A full page may stop short of `newest`: continue from its last row then.
        let next = if rows.len() as u32 == limit {
            rows.last().map_or(newest, |(_, r)| r.id)
        } else {
            newest
        };
        Ok((rows, next))
    }

    /// The newest log row id of a session (0 when it has none).
    pub fn max_row_id(&self, session_id: SessionId) -> Result<RowId, StoreError> {
        let conn = self.conn.lock();
        Ok(conn.query_row_cached(
            "SELECT COALESCE(MAX(e.id), 0) FROM log_entries e JOIN runs r ON r.id = e.run_id WHERE r.session_id = ?1",
            [session_id],
            |r| r.get(0),
        )?)
    }

    /// The session's live run named `name` (the newest of that name), if any.
    pub fn run_named(
        &self,
        session_id: SessionId,
        name: &str,
    ) -> Result<Option<RunRow>, StoreError> {
        let conn = self.conn.lock();
        let id: Option<RunId> = conn
            .query_row_cached(
                "SELECT id FROM runs WHERE session_id = ?1 AND name = ?2 ORDER BY id DESC LIMIT 1",
                params![session_id, name],
                |r| r.get(0),
            )
            .optional()?;
        id.map(|id| run_by_id(&conn, id)).transpose()
    }

    /// How many of a session's runs have a loop queued, running or parked.
    pub fn active_runs(&self, session_id: SessionId) -> Result<usize, StoreError> {
        let conn = self.conn.lock();
        let n: i64 = conn.query_row_cached(
            "SELECT COUNT(DISTINCT r.id) FROM runs r JOIN loops l ON l.run_id = r.id \
             WHERE r.session_id = ?1 AND l.status IN (100, 102, 202)",
            [session_id],
            |r| r.get(0),
        )?;
        Ok(n as usize)
    }

    /// Forks `source` (PLURNK.md §3.9): a new run of the same session, `parent_run_id` set,
    /// whose log is a deep copy of the source's — loops (unfinished ones clamped to 499
    /// `inherited`), turns (their cost not counted twice: copies carry 0) and rows with their
    /// fold state — and whose run-scope entries are copies of the source's. One transaction.
    pub fn fork_run(
        &self,
        session_id: SessionId,
        source: RunId,
        name: &str,
        origin: Origin,
    ) -> Result<RunRow, StoreError> {
        let row = {
            let mut conn = self.conn.lock();
            let tx = conn.transaction()?;
            let src = run_by_id(&tx, source)?;
            if src.session_id != session_id {
                return Err(StoreError::Refused(format!(
                    "run {source} is not in session {session_id}"
                )));
            }
            tx.execute_cached(
                "INSERT INTO runs (session_id, name, created_at, parent_run_id, origin) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![session_id, name, wall_ms(), source, origin.as_str()],
            )?;
            let new = tx.last_insert_rowid();
            if name.is_empty() {
                tx.execute_cached(
                    "UPDATE runs SET name = ?1 WHERE id = ?2",
                    params![format!("{}-{new}", src.name), new],
                )?;
            }
            let loops: Vec<(i64, i64)> = {
                let mut st = tx.prepare(
                    "SELECT id, sequence FROM loops WHERE run_id = ?1 ORDER BY sequence",
                )?;
                let r = st.query_map([source], |r| Ok((r.get(0)?, r.get(1)?)))?;
                r.collect::<Result<_, _>>()?
            };
            for (old_loop, _) in loops {
                tx.execute_cached(
                    "INSERT INTO loops (run_id, sequence, status, prompt, flags, max_turns, attributions, open_paths, created_at, terminated_at, terminal_message) \
                     SELECT ?1, sequence, CASE WHEN status IN (100, 102, 202) THEN 499 ELSE status END, prompt, flags, max_turns, attributions, open_paths, created_at, \
                     COALESCE(terminated_at, ?3), CASE WHEN status IN (100, 102, 202) THEN 'inherited' ELSE terminal_message END FROM loops WHERE id = ?2",
                    params![new, old_loop, wall_ms()],
                )?;
                let new_loop = tx.last_insert_rowid();
                let turns: Vec<i64> = {
                    let mut st =
                        tx.prepare("SELECT id FROM turns WHERE loop_id = ?1 ORDER BY sequence")?;
                    let r = st.query_map([old_loop], |r| r.get(0))?;
                    r.collect::<Result<_, _>>()?
                };
                for old_turn in turns {
                    tx.execute_cached(
                        "INSERT INTO turns (loop_id, sequence, timestamp, status, usage_prompt, usage_completion, usage_cached, usage_cost_pico, usage_context_size, packet, finish_reason, model) \
                         SELECT ?1, sequence, timestamp, status, usage_prompt, usage_completion, usage_cached, 0, usage_context_size, packet, finish_reason, model FROM turns WHERE id = ?2",
                        params![new_loop, old_turn],
                    )?;
                    let new_turn = tx.last_insert_rowid();
                    tx.execute_cached(
                        "INSERT INTO log_entries (run_id, loop_id, turn_id, sequence, at, origin, source, op, suffix, signal, scheme, username, password, hostname, port, pathname, search, fragment, line_marker, tx, mimetype_tx, rx, mimetype_rx, status_rx, tokens, state, outcome, attrs, expanded) \
                         SELECT ?1, ?2, ?3, sequence, at, origin, source, op, suffix, signal, scheme, username, password, hostname, port, pathname, search, fragment, line_marker, tx, mimetype_tx, rx, mimetype_rx, status_rx, tokens, \
                         CASE WHEN state = 'proposed' THEN 'cancelled' ELSE state END, CASE WHEN state = 'proposed' THEN 'inherited' ELSE outcome END, attrs, expanded \
                         FROM log_entries WHERE turn_id = ?4 ORDER BY id",
                        params![new, new_loop, new_turn, old_turn],
                    )?;
                }
            }
            let entries: Vec<i64> = {
                let mut st = tx.prepare(
                    "SELECT id FROM entries WHERE scope = 'run' AND run_id = ?1 ORDER BY id",
                )?;
                let r = st.query_map([source], |r| r.get(0))?;
                r.collect::<Result<_, _>>()?
            };
            for old in entries {
                tx.execute_cached(
                    "INSERT INTO entries (scope, session_id, run_id, scheme, username, password, hostname, port, pathname, params, attributes, membership_origin, deep_hash, synced_sig, updated_at) \
                     SELECT scope, session_id, ?1, scheme, username, password, hostname, port, pathname, params, attributes, membership_origin, deep_hash, synced_sig, updated_at FROM entries WHERE id = ?2",
                    params![new, old],
                )?;
                let e = tx.last_insert_rowid();
                tx.execute_cached(
                    "INSERT INTO entry_channels (entry_id, name, content, mimetype, tokens, state) SELECT ?1, name, content, mimetype, tokens, state FROM entry_channels WHERE entry_id = ?2",
                    params![e, old],
                )?;
                tx.execute_cached(
                    "INSERT INTO entry_tags (entry_id, tag) SELECT ?1, tag FROM entry_tags WHERE entry_id = ?2",
                    params![e, old],
                )?;
            }
            let row = run_by_id(&tx, new)?;
            tx.commit()?;
            row
        };
        self.emit(StoreEvent::Run(row.clone()));
        Ok(row)
    }

    /// Adds a membership constraint to a session (PLURNK.md §2.3: `pick`, `hide`, `view`,
    /// `repo`). Returns whether it was new.
    pub fn constrain(
        &self,
        session_id: SessionId,
        effect: &str,
        glob: &str,
    ) -> Result<bool, StoreError> {
        if !matches!(effect, "pick" | "hide" | "view" | "repo") {
            return Err(StoreError::Refused(format!(
                "constraint effect {effect:?} is not pick, hide, view or repo"
            )));
        }
        let conn = self.conn.lock();
        session_by_id(&conn, session_id)?;
        let n = conn.execute_cached(
            "INSERT OR IGNORE INTO session_constraints (session_id, effect, glob) VALUES (?1, ?2, ?3)",
            params![session_id, effect, glob],
        )?;
        Ok(n == 1)
    }

    /// Removes a membership constraint. Returns whether it existed.
    pub fn unconstrain(
        &self,
        session_id: SessionId,
        effect: &str,
        glob: &str,
    ) -> Result<bool, StoreError> {
        let conn = self.conn.lock();
        let n = conn.execute_cached(
            "DELETE FROM session_constraints WHERE session_id = ?1 AND effect = ?2 AND glob = ?3",
            params![session_id, effect, glob],
        )?;
        Ok(n == 1)
    }

    /// A session's membership constraints `(effect, glob)`, sorted.
    pub fn constraints(&self, session_id: SessionId) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.conn.lock();
        let mut st = conn.prepare_cached(
            "SELECT effect, glob FROM session_constraints WHERE session_id = ?1 ORDER BY effect, glob",
        )?;
        let rows = st.query_map([session_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A run's whole log in write order, with loop and turn ordinals.
    pub fn log_rows(&self, run_id: RunId) -> Result<Vec<LogRow>, StoreError> {
        self.log_query(&LogQuery {
            run_id: Some(run_id),
            ..LogQuery::default()
        })
    }

    /// Log rows matching `q`, in write order.
    pub fn log_query(&self, q: &LogQuery) -> Result<Vec<LogRow>, StoreError> {
        let conn = self.conn.lock();
        let (sql, args) = q.select("", true);
        let mut st = conn.prepare_cached(&sql)?;
        let rows = st.query_map(rusqlite::params_from_iter(args), log_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A loop's turns, in order.
    pub fn turns(&self, loop_id: LoopId) -> Result<Vec<TurnRow>, StoreError> {
        let conn = self.conn.lock();
        let mut st = conn.prepare_cached(
            "SELECT id, loop_id, sequence, timestamp, status, usage_prompt, usage_completion, usage_cached, usage_cost_pico, usage_context_size, packet, finish_reason, model FROM turns WHERE loop_id = ?1 ORDER BY sequence",
        )?;
        let rows = st.query_map([loop_id], turn_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ---- entries -------------------------------------------------------------------------

    /// One entry of a session (session-scoped) or of `run_id` (run-scoped).
    pub fn entry(
        &self,
        session_id: SessionId,
        run_id: RunId,
        key: &EntryKey,
    ) -> Result<Option<Entry>, StoreError> {
        let conn = self.conn.lock();
        entry_tx(&conn, session_id, run_id, key)
    }

    /// Every entry of `scheme` in a scope (session-scoped, or `run_id`'s), with channels and
    /// tags, most recently updated last (the catalog order).
    pub fn entries(
        &self,
        session_id: SessionId,
        run_id: RunId,
        scope: Scope,
        scheme: Option<&str>,
    ) -> Result<Vec<Entry>, StoreError> {
        let conn = self.conn.lock();
        // Per scope, as in `entry_id`: the scope's partial key index, not a scan.
        let (sql, owner) = match scope {
            Scope::Session => (
                "SELECT id, scope, scheme, hostname, pathname, updated_at, synced_sig FROM entries \
                 WHERE session_id = ?1 AND scope = 'session' AND ifnull(scheme, '') = ifnull(?2, '') \
                 ORDER BY updated_at, id",
                session_id,
            ),
            Scope::Run => (
                "SELECT id, scope, scheme, hostname, pathname, updated_at, synced_sig FROM entries \
                 WHERE run_id = ?1 AND scope = 'run' AND ifnull(scheme, '') = ifnull(?2, '') \
                 ORDER BY updated_at, id",
                run_id,
            ),
        };
        let mut st = conn.prepare_cached(sql)?;
        let heads = st
            .query_map(params![owner, scheme], entry_head)?
            .collect::<Result<Vec<_>, _>>()?;
        heads
            .into_iter()
            .map(|h| fill_entry(&conn, h))
            .collect::<Result<_, _>>()
    }

    /// Applies entry writes in one transaction (host-side writes: client edits, docs).
    pub fn write_entries(
        &self,
        session_id: SessionId,
        run_id: RunId,
        writes: &[EntryWrite],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        for w in writes {
            apply_entry_write(&tx, session_id, run_id, w)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The prompts written for loop `loop_seq` of `run_id` (`plurnk:///prompt/<loop>/<n>`),
    /// in order of `n`.
    pub fn prompts(
        &self,
        session_id: SessionId,
        run_id: RunId,
        loop_seq: i64,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let prefix = format!("/prompt/{loop_seq}/");
        let entries = self.entries(session_id, run_id, Scope::Run, Some("plurnk"))?;
        let mut out: Vec<(i64, String)> = entries
            .into_iter()
            .filter_map(|e| {
                let n: i64 = e.key.pathname.strip_prefix(&prefix)?.parse().ok()?;
                let body = e.channel("body")?.content.clone();
                Some((n, body))
            })
            .collect();
        out.sort_by_key(|(n, _)| *n);
        Ok(out)
    }
}

/// A row of the `schemes` table: what a manifest says about storage.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemeRecord {
    /// The URI scheme.
    pub name: String,
    /// Shown to the model.
    pub model_visible: bool,
    /// `data`, `logging` or `control`.
    pub category: String,
    /// Default entry scope.
    pub default_scope: Scope,
    /// Channel used without a fragment.
    pub default_channel: String,
    /// Channels and mimetypes, as a JSON object.
    pub channels_json: String,
    /// Writer tiers, as a JSON array.
    pub writable_by_json: String,
    /// Fast-changing content.
    pub volatile: bool,
}

/// A filter for [`Store::log_query`]; unset fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogQuery {
    /// Only this run's rows.
    pub run_id: Option<RunId>,
    /// Only this loop's rows.
    pub loop_id: Option<LoopId>,
    /// Only this turn's rows.
    pub turn_id: Option<TurnId>,
    /// Only rows with a larger id.
    pub since_id: Option<RowId>,
    /// At most this many.
    pub limit: Option<u32>,
}

impl LogQuery {
    /// The SELECT for this filter with only the set conditions (plus `extra`), and its
    /// arguments: a `?n IS NULL OR …` form would make SQLite scan every row of every run,
    /// so each filter shape is its own (cached) statement that uses the run or loop index.
    fn select(&self, extra: &str, limit: bool) -> (String, Vec<i64>) {
        let mut sql = format!(
            "SELECT {ROW_COLS} FROM log_entries e JOIN loops l ON l.id = e.loop_id \
             JOIN turns t ON t.id = e.turn_id WHERE 1 = 1{extra}"
        );
        let mut args = Vec::with_capacity(5);
        for (col, v) in [
            (" AND e.run_id = ?", self.run_id),
            (" AND e.loop_id = ?", self.loop_id),
            (" AND e.turn_id = ?", self.turn_id),
            (" AND e.id > ?", self.since_id),
        ] {
            if let Some(v) = v {
                sql.push_str(col);
                args.push(v);
            }
        }
        sql.push_str(" ORDER BY e.id");
        if let (true, Some(n)) = (limit, self.limit) {
            sql.push_str(" LIMIT ?");
            args.push(i64::from(n));
        }
        (sql, args)
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(wall_ms() as u64);
    h.finish()
}

fn is_unique(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::ConstraintViolation)
    ) && e.to_string().contains("UNIQUE")
}

const LOOP_COLS: &str = "id, run_id, sequence, status, prompt, flags, max_turns, created_at, terminated_at, terminal_message";

fn session_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRow> {
    Ok(SessionRow {
        id: r.get(0)?,
        name: r.get(1)?,
        created_at: r.get(2)?,
        cost_pico: r.get(3)?,
        project_root: r.get(4)?,
        settings: r.get(5)?,
    })
}

fn session_by_id(c: &Connection, id: SessionId) -> Result<SessionRow, StoreError> {
    c.query_row_cached(
        "SELECT id, name, created_at, cost_pico, project_root, settings FROM sessions WHERE id = ?1",
        [id],
        session_from_row,
    )
    .optional()?
    .ok_or_else(|| StoreError::NotFound(format!("session {id}")))
}

fn bad_column(i: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        i,
        rusqlite::types::Type::Text,
        format!("unexpected {what}").into(),
    )
}

fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    let origin: String = r.get(6)?;
    Ok(RunRow {
        id: r.get(0)?,
        session_id: r.get(1)?,
        name: r.get(2)?,
        created_at: r.get(3)?,
        parent_run_id: r.get(4)?,
        cost_pico: r.get(5)?,
        origin: Origin::parse(&origin).ok_or_else(|| bad_column(6, "origin"))?,
    })
}

fn run_by_id(c: &Connection, id: RunId) -> Result<RunRow, StoreError> {
    c.prepare_cached(
        "SELECT id, session_id, name, created_at, parent_run_id, cost_pico, origin FROM runs WHERE id = ?1",
    )?
    .query_row([id], run_from_row)
    .optional()?
    .ok_or_else(|| StoreError::NotFound(format!("run {id}")))
}

fn loop_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LoopRow> {
    Ok(LoopRow {
        id: r.get(0)?,
        run_id: r.get(1)?,
        sequence: r.get(2)?,
        status: r.get(3)?,
        prompt: r.get(4)?,
        flags: r.get(5)?,
        max_turns: r.get(6)?,
        created_at: r.get(7)?,
        terminated_at: r.get(8)?,
        terminal_message: r.get(9)?,
    })
}

fn loop_by_id(c: &Connection, id: LoopId) -> Result<LoopRow, StoreError> {
    c.prepare_cached(&format!("SELECT {LOOP_COLS} FROM loops WHERE id = ?1"))?
        .query_row([id], loop_from_row)
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("loop {id}")))
}

fn set_loop_status_tx(
    tx: &Transaction<'_>,
    loop_id: LoopId,
    status: u16,
    message: Option<&str>,
) -> Result<LoopRow, StoreError> {
    let cur = loop_by_id(tx, loop_id)?;
    if status::is_terminal(cur.status) {
        return Err(StoreError::Refused(format!(
            "loop {loop_id} already ended with {}",
            cur.status
        )));
    }
    tx.execute_cached(
        "UPDATE loops SET status = ?1, terminal_message = coalesce(?2, terminal_message) WHERE id = ?3",
        params![status, message, loop_id],
    )?;
    loop_by_id(tx, loop_id)
}

fn turn_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TurnRow> {
    Ok(TurnRow {
        id: r.get(0)?,
        loop_id: r.get(1)?,
        sequence: r.get(2)?,
        timestamp: r.get(3)?,
        status: r.get(4)?,
        usage: TurnUsage {
            prompt: r.get(5)?,
            completion: r.get(6)?,
            cached: r.get(7)?,
            cost_pico: r.get(8)?,
            context_size: r.get(9)?,
        },
        packet: r.get(10)?,
        finish_reason: r.get(11)?,
        model: r.get(12)?,
    })
}

const ROW_COLS: &str = "e.id, e.run_id, e.loop_id, e.turn_id, l.sequence, t.sequence, e.sequence, e.at, e.origin, e.source, e.op, e.suffix, e.signal, e.scheme, e.hostname, e.pathname, e.fragment, e.line_marker, e.tx, e.mimetype_tx, e.rx, e.mimetype_rx, e.status_rx, e.tokens, e.state, e.outcome, e.expanded";

const INSERT_ROW: &str = "INSERT INTO log_entries (run_id, loop_id, turn_id, sequence, at, origin, source, op, suffix, signal, scheme, hostname, pathname, fragment, line_marker, tx, mimetype_tx, rx, mimetype_rx, status_rx, tokens, state, outcome, expanded) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24)";

fn insert_row(st: &mut rusqlite::CachedStatement<'_>, r: &LogRow) -> rusqlite::Result<usize> {
    let t = r.target.as_ref();
    st.execute(params![
        r.run_id,
        r.loop_id,
        r.turn_id,
        r.sequence,
        r.at,
        r.origin.as_str(),
        r.source,
        r.op.as_str(),
        r.suffix,
        r.signal,
        t.and_then(|t| t.scheme.as_deref()),
        t.and_then(|t| t.hostname.as_deref()),
        t.map(|t| t.pathname.as_str()),
        t.and_then(|t| t.fragment.as_deref()),
        r.line_marker,
        r.tx,
        r.mimetype_tx,
        r.rx,
        r.mimetype_rx,
        r.status,
        r.tokens,
        r.state.map(RowState::as_str),
        r.outcome,
        r.expanded as i64,
    ])
}

fn row_by_id(c: &Connection, id: RowId) -> Result<LogRow, StoreError> {
    c.query_row_cached(
        &format!(
            "SELECT {ROW_COLS} FROM log_entries e JOIN loops l ON l.id = e.loop_id JOIN turns t ON t.id = e.turn_id WHERE e.id = ?1"
        ),
        [id],
        log_from_row,
    )
    .optional()?
    .ok_or_else(|| StoreError::NotFound(format!("log row {id}")))
}

fn log_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LogRow> {
    let origin: String = r.get(8)?;
    let op: String = r.get(10)?;
    let pathname: Option<String> = r.get(15)?;
    let state: Option<String> = r.get(24)?;
    let expanded: i64 = r.get(26)?;
    Ok(LogRow {
        id: r.get(0)?,
        run_id: r.get(1)?,
        loop_id: r.get(2)?,
        turn_id: r.get(3)?,
        loop_seq: r.get(4)?,
        turn_seq: r.get(5)?,
        sequence: r.get(6)?,
        at: r.get(7)?,
        origin: Origin::parse(&origin).ok_or_else(|| bad_column(8, "origin"))?,
        source: r.get(9)?,
        op: RowOp::parse(&op).ok_or_else(|| bad_column(10, "op"))?,
        suffix: r.get(11)?,
        signal: r.get(12)?,
        target: match pathname {
            None => None,
            Some(pathname) => Some(RowTarget {
                scheme: r.get(13)?,
                hostname: r.get(14)?,
                pathname,
                fragment: r.get(16)?,
            }),
        },
        line_marker: r.get(17)?,
        tx: r.get(18)?,
        mimetype_tx: r.get(19)?,
        rx: r.get(20)?,
        mimetype_rx: r.get(21)?,
        status: r.get(22)?,
        tokens: r.get(23)?,
        state: match state {
            None => None,
            Some(s) => Some(RowState::parse(&s).ok_or_else(|| bad_column(24, "state"))?),
        },
        outcome: r.get(25)?,
        expanded: expanded != 0,
    })
}

struct EntryHead {
    id: EntryId,
    key: EntryKey,
    updated_at: i64,
    synced_sig: Option<String>,
}

fn entry_head(r: &rusqlite::Row<'_>) -> rusqlite::Result<EntryHead> {
    let scope: String = r.get(1)?;
    Ok(EntryHead {
        id: r.get(0)?,
        key: EntryKey {
            scope: if scope == "run" {
                Scope::Run
            } else {
                Scope::Session
            },
            scheme: r.get(2)?,
            hostname: r.get(3)?,
            pathname: r.get(4)?,
        },
        updated_at: r.get(5)?,
        synced_sig: r.get(6)?,
    })
}

fn fill_entry(c: &Connection, h: EntryHead) -> Result<Entry, StoreError> {
    let mut st = c.prepare_cached(
        "SELECT name, content, mimetype, tokens, state FROM entry_channels WHERE entry_id = ?1 ORDER BY name",
    )?;
    let channels = st
        .query_map([h.id], |r| {
            let state: String = r.get(4)?;
            Ok(Channel {
                name: r.get(0)?,
                content: r.get(1)?,
                mimetype: r.get(2)?,
                tokens: r.get(3)?,
                state: ChannelState::parse(&state).ok_or_else(|| bad_column(4, "state"))?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut st = c.prepare_cached("SELECT tag FROM entry_tags WHERE entry_id = ?1 ORDER BY tag")?;
    let tags = st
        .query_map([h.id], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(Entry {
        id: h.id,
        key: h.key,
        channels,
        tags,
        updated_at: h.updated_at,
        synced_sig: h.synced_sig,
    })
}

fn entry_id(
    c: &Connection,
    session_id: SessionId,
    run_id: RunId,
    key: &EntryKey,
) -> Result<Option<EntryId>, StoreError> {
    // One statement per scope, each naming its scope literally, so SQLite can use that
    // scope's partial key index (a `scope = ?` parameter would scan every entry).
    let sql = match key.scope {
        Scope::Session => {
            "SELECT id FROM entries WHERE session_id = ?1 AND scope = 'session' \
             AND ifnull(scheme, '') = ifnull(?2, '') AND ifnull(hostname, '') = ifnull(?3, '') AND pathname = ?4"
        }
        Scope::Run => {
            "SELECT id FROM entries WHERE run_id = ?1 AND scope = 'run' \
             AND ifnull(scheme, '') = ifnull(?2, '') AND ifnull(hostname, '') = ifnull(?3, '') AND pathname = ?4"
        }
    };
    let owner = match key.scope {
        Scope::Session => session_id,
        Scope::Run => run_id,
    };
    Ok(c.prepare_cached(sql)?
        .query_row(
            params![owner, key.scheme, key.hostname, key.pathname],
            |r| r.get(0),
        )
        .optional()?)
}

fn entry_tx(
    c: &Connection,
    session_id: SessionId,
    run_id: RunId,
    key: &EntryKey,
) -> Result<Option<Entry>, StoreError> {
    let Some(id) = entry_id(c, session_id, run_id, key)? else {
        return Ok(None);
    };
    let (updated_at, synced_sig): (i64, Option<String>) = c.query_row_cached(
        "SELECT updated_at, synced_sig FROM entries WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    fill_entry(
        c,
        EntryHead {
            id,
            key: key.clone(),
            updated_at,
            synced_sig,
        },
    )
    .map(Some)
}

fn apply_entry_write(
    tx: &Transaction<'_>,
    session_id: SessionId,
    run_id: RunId,
    w: &EntryWrite,
) -> Result<(), StoreError> {
    let key = w.key();
    let existing = entry_id(tx, session_id, run_id, key)?;
    match w {
        EntryWrite::Delete { .. } => {
            if let Some(id) = existing {
                tx.execute_cached("DELETE FROM entries WHERE id = ?1", [id])?;
            }
        }
        EntryWrite::Sync { sig, .. } => {
            if let Some(id) = existing {
                tx.execute_cached(
                    "UPDATE entries SET synced_sig = ?1, membership_origin = COALESCE(membership_origin, 'git') WHERE id = ?2",
                    params![sig, id],
                )?;
            }
        }
        EntryWrite::Put { channel, tags, .. } => {
            let id = match existing {
                Some(id) => id,
                None => {
                    let owner = (key.scope == Scope::Run).then_some(run_id);
                    tx.execute_cached(
                        "INSERT INTO entries (scope, session_id, run_id, scheme, hostname, pathname) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![key.scope.as_str(), session_id, owner, key.scheme, key.hostname, key.pathname],
                    )?;
                    tx.last_insert_rowid()
                }
            };
            tx.prepare_cached(
                "INSERT INTO entry_channels (entry_id, name, content, mimetype, tokens, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (entry_id, name) DO UPDATE SET content = excluded.content, mimetype = excluded.mimetype, \
                 tokens = excluded.tokens, state = excluded.state",
            )?
            .execute(params![
                id,
                channel.name,
                channel.content,
                channel.mimetype,
                channel.tokens,
                channel.state.as_str()
            ])?;
            if let Some(tags) = tags {
                tx.execute_cached("DELETE FROM entry_tags WHERE entry_id = ?1", [id])?;
                let mut ins = tx.prepare_cached(
                    "INSERT OR IGNORE INTO entry_tags (entry_id, tag) VALUES (?1, ?2)",
                )?;
                for t in tags {
                    ins.execute(params![id, t])?;
                }
            }
        }
    }
    Ok(())
}

/// `execute` and `query_row` through the connection's statement cache: rusqlite's own
/// prepare the statement on every call, and a turn's commit runs the same few statements
/// each time.
trait CachedExt {
    fn execute_cached<P: rusqlite::Params>(&self, sql: &str, p: P) -> rusqlite::Result<usize>;
    fn query_row_cached<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        p: P,
        f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T>;
}

impl CachedExt for Connection {
    fn execute_cached<P: rusqlite::Params>(&self, sql: &str, p: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(p)
    }
    fn query_row_cached<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        p: P,
        f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(p, f)
    }
}
