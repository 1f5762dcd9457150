//! The method registry: every JSON-RPC method of PLURNK.md §4.2, once.
//!
//! [`METHODS`] is one table of [`MethodSpec`] — name, description, params, whether it needs
//! an attached session, and its implementation. Dispatch looks methods up in it and
//! `discover` describes it; no method list is written anywhere else. Methods the engine
//! cannot serve yet are registered as [`Imp::Unavailable`] with the reason: they answer
//! −32601 ("not available in this build", JSON-RPC's own wording for the code) and
//! `discover` marks them `available: false`, so a client never mistakes them for working
//! (this build serves every method of §4.2; the `op.*` family lives in `ops`).
//!
//! The envelope (§4.1): a method whose [`Init`] is `AutoCreate` called on an unattached
//! connection first creates a session and its model run and attaches the connection (the
//! client then hears `session/created`); one whose `Init` is `Attached` answers −32000.
//!
//! **Invariants:** handlers never panic on any params (typed decoding, −32602 on mismatch);
//! a connection's attached session is published to its notification tap *before* any work
//! is queued in it, so no row of that work can miss the connection.
//!
//! **API boundary:** [`METHODS`], [`MethodSpec`], [`Init`], [`Imp`], and [`dispatch`] (used by
//! the connection task). JSON stays in this module and `rpc`.

mod ops;

use std::sync::atomic::Ordering;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::rpc::{self, RpcError};
use super::Daemon;
use crate::grammar::parse_path;
use crate::schemes::entry::entry_key;
use crate::schemes::{Address, BUILTIN};
use crate::store::{
    status, LogQuery, LogRow, LoopId, LoopRow, Origin, RunId, RunRow, SessionId, SessionRow,
    StoreError,
};
use crate::turn::LoopFlags;
use crate::{EngineError, LoopOptions};
use ops::{
    op_copy, op_dispatch, op_edit, op_exec, op_find, op_fold, op_look, op_move, op_open, op_parse,
    op_read, op_send,
};

/// What a method needs of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// Nothing: callable on a fresh connection.
    Free,
    /// An attached session; an unattached call creates one (session → run) first.
    AutoCreate,
    /// An attached session; an unattached call is −32000.
    Attached,
}

/// A handler: the connection's state and the params, to a result.
pub type Handler = fn(&mut Conn<'_>, Value) -> Result<Value, RpcError>;

/// How a method is implemented.
#[derive(Clone, Copy)]
pub enum Imp {
    /// Served by this handler.
    Call(Handler),
    /// Registered but not served by this build; the text says why.
    Unavailable(&'static str),
}

/// One registered method.
pub struct MethodSpec {
    /// Wire name.
    pub name: &'static str,
    /// One sentence for `discover`.
    pub description: &'static str,
    /// `(name, "type — meaning")` pairs; a `?` suffix on the name marks it optional.
    pub params: &'static [(&'static str, &'static str)],
    /// What it needs of the connection.
    pub init: Init,
    /// Its implementation.
    pub imp: Imp,
}

/// A connection's state, as handlers see it.
pub struct Conn<'a> {
    /// The daemon.
    pub daemon: &'a Daemon,
    /// The attached session.
    pub session: Option<SessionId>,
    /// The attached run (where `loop.run` queues).
    pub run: Option<RunId>,
    /// The tap's session cell (0 = none), published on attach.
    pub tap_session: &'a std::sync::atomic::AtomicI64,
}

impl Conn<'_> {
    fn attach(&mut self, session: SessionId, run: RunId) {
        self.tap_session.store(session, Ordering::Release);
        self.session = Some(session);
        self.run = Some(run);
    }

    /// The attached session and run; on an unattached connection a new session and its
    /// model run are created and attached first (the envelope).
    fn attached_or_create(&mut self) -> Result<(SessionId, RunId), RpcError> {
        if let (Some(s), Some(r)) = (self.session, self.run) {
            return Ok((s, r));
        }
        let (s, r) = create_session(self, None, None, None)?;
        self.attach(s.id, r.id);
        Ok((s.id, r.id))
    }

    fn attached(&self) -> Result<(SessionId, RunId), RpcError> {
        match (self.session, self.run) {
            (Some(s), Some(r)) => Ok((s, r)),
            _ => Err(not_initialised()),
        }
    }
}

fn not_initialised() -> RpcError {
    RpcError::new(
        rpc::NOT_INITIALISED,
        "not initialised: call session.create or session.attach first",
    )
}

/// Every method, in the order `discover` lists them.
pub static METHODS: &[MethodSpec] = &[
    MethodSpec {
        name: "ping",
        description: "Liveness check; answers {}.",
        params: &[],
        init: Init::Free,
        imp: Imp::Call(ping),
    },
    MethodSpec {
        name: "discover",
        description: "This catalog: methods, notifications, capabilities, versions.",
        params: &[],
        init: Init::Free,
        imp: Imp::Call(discover),
    },
    MethodSpec {
        name: "session.create",
        description: "Creates a session and its model run and attaches the connection.",
        params: &[
            ("name?", "string — unique session name (default session-<id>)"),
            ("projectRoot?", "string|null — project directory; null = headless"),
            ("settings?", "object — per-session settings"),
        ],
        init: Init::Free,
        imp: Imp::Call(session_create),
    },
    MethodSpec {
        name: "session.list",
        description: "Every session, oldest first.",
        params: &[],
        init: Init::Free,
        imp: Imp::Call(session_list),
    },
    MethodSpec {
        name: "session.attach",
        description: "Binds the connection to a session and one of its runs (rebind allowed).",
        params: &[
            ("id", "integer — session id"),
            ("runId?", "integer — a run of that session"),
            ("runName?", "string — a run by name, created if absent (`plurnk` is reserved)"),
        ],
        init: Init::Free,
        imp: Imp::Call(session_attach),
    },
    MethodSpec {
        name: "session.runs",
        description: "A session's runs, newest first, with their origin.",
        params: &[("id?", "integer — session id (default: the attached one)")],
        init: Init::Free,
        imp: Imp::Call(session_runs),
    },
    MethodSpec {
        name: "session.prompts",
        description: "Prior prompts of a session's loops, newest first.",
        params: &[
            ("id?", "integer — session id (default: the attached one)"),
            ("limit?", "integer — at most this many"),
        ],
        init: Init::Free,
        imp: Imp::Call(session_prompts),
    },
    MethodSpec {
        name: "session.set_root",
        description: "Sets the attached session's project root.",
        params: &[("projectRoot", "string|null — directory, or null for headless")],
        init: Init::Attached,
        imp: Imp::Call(session_set_root),
    },
    MethodSpec {
        name: "session.rename",
        description: "Renames the attached session (run names are frozen).",
        params: &[("name", "string — the new unique name")],
        init: Init::Attached,
        imp: Imp::Call(session_rename),
    },
    MethodSpec {
        name: "session.constrain",
        description: "Adds a membership constraint to the attached session.",
        params: &[
            ("effect", "string — pick | hide | view | repo"),
            ("glob", "string — paths it applies to"),
        ],
        init: Init::Attached,
        imp: Imp::Call(session_constrain),
    },
    MethodSpec {
        name: "session.unconstrain",
        description: "Removes a membership constraint.",
        params: &[
            ("effect", "string — pick | hide | view | repo"),
            ("glob", "string — paths it applies to"),
        ],
        init: Init::Attached,
        imp: Imp::Call(session_unconstrain),
    },
    MethodSpec {
        name: "session.constraints",
        description: "The attached session's membership constraints.",
        params: &[],
        init: Init::Attached,
        imp: Imp::Call(session_constraints),
    },
    MethodSpec {
        name: "session.members",
        description: "The attached session's project files after the overlay: {members:[{path, effect: repo|pick|view, access: rw|ro}], hidden:[path]}; a headless session has none.",
        params: &[],
        init: Init::Attached,
        imp: Imp::Call(session_members),
    },
    MethodSpec {
        name: "loop.run",
        description: "Queues a loop on the attached run; returns at once, the outcome arrives as loop/terminated.",
        params: &[
            ("prompt", "string — the task"),
            ("maxTurns?", "integer — turn limit"),
            ("flags?", "object — {mode: act|ask, yolo, noProposals, noWeb, noInteraction, budgetTokens}"),
        ],
        init: Init::AutoCreate,
        imp: Imp::Call(loop_run),
    },
    MethodSpec {
        name: "loop.inject",
        description: "Speaks into the attached run: folded into its active loop's next turn, else queued as a loop.",
        params: &[
            ("prompt", "string — what to say"),
            ("flags?", "object — flags for a loop this queues"),
        ],
        init: Init::AutoCreate,
        imp: Imp::Call(loop_inject),
    },
    MethodSpec {
        name: "loop.resolve",
        description: "Resolves a proposal (accept / reject / cancel).",
        params: &[
            ("logEntryId", "integer — the proposed row"),
            ("decision", "string — accept | reject | cancel"),
            ("body?", "string — replacement body"),
            ("outcome?", "string — why"),
        ],
        init: Init::Attached,
        imp: Imp::Call(loop_resolve),
    },
    MethodSpec {
        name: "loop.cancel",
        description: "Cancels the attached run's running and queued loops; they close 499.",
        params: &[("reason?", "string — recorded as the terminal message")],
        init: Init::Attached,
        imp: Imp::Call(loop_cancel),
    },
    MethodSpec {
        name: "run.fork",
        description: "Forks a run: a new run with a copy of its log, sharing the world.",
        params: &[("runId?", "integer — the run (default: the attached one)")],
        init: Init::Attached,
        imp: Imp::Call(run_fork),
    },
    MethodSpec {
        name: "proposal.list",
        description: "Pending proposals (rows in state proposed) of the attached run, or of every run of the session with `all`.",
        params: &[("all?", "boolean — every run of the attached session")],
        init: Init::Attached,
        imp: Imp::Call(proposal_list),
    },
    MethodSpec {
        name: "providers.list",
        description: "The model aliases this daemon serves.",
        params: &[],
        init: Init::Free,
        imp: Imp::Call(providers_list),
    },
    MethodSpec {
        name: "daemon.stats",
        description: "agentos extension: the daemon's counters, active and recently ended loops.",
        params: &[],
        init: Init::Free,
        imp: Imp::Call(daemon_stats),
    },
    MethodSpec {
        name: "kernel.ps",
        description: "agentos extension: the kernel's process table.",
        params: &[],
        init: Init::Free,
        imp: Imp::Call(kernel_ps),
    },
    MethodSpec {
        name: "entry.read",
        description: "Reads one entry of the attached session (known://, unknown://, plurnk://).",
        params: &[("target", "string — the entry URI")],
        init: Init::Attached,
        imp: Imp::Call(entry_read),
    },
    MethodSpec {
        name: "log.read",
        description: "Log rows in write order, filtered; default scope: the attached run.",
        params: &[
            ("runId?", "integer — a run's rows"),
            ("loopId?", "integer — a loop's rows"),
            ("turnId?", "integer — a turn's rows"),
            ("loopSeq?", "integer — rows of the run's loop with this ordinal"),
            ("turnSeq?", "integer — rows of turns with this ordinal"),
            ("sequence?", "integer — rows with this ordinal in their turn"),
            ("sinceId?", "integer — rows with a larger id"),
            ("limit?", "integer — at most this many"),
        ],
        init: Init::Free,
        imp: Imp::Call(log_read),
    },
    MethodSpec {
        name: "op.find",
        description: "FIND in the attached run as a client turn: {results, statement}.",
        params: &[
            ("scope", "string — where: an entry, a folder (trailing /), a glob or #regex#"),
            ("matcher?", "string — what to look for in the content"),
            ("tags?", "array — tag filter"),
            ("lineRange?", "number|array — result range / score threshold <L>"),
        ],
        init: Init::AutoCreate,
        imp: Imp::Call(op_find),
    },
    MethodSpec {
        name: "op.read",
        description: "READ in the attached run as a client turn: {results, statement}.",
        params: &[
            ("target", "string — the entry, glob or folder"),
            ("matcher?", "string — select matching lines"),
            ("tags?", "array — tag filter"),
            ("lineRange?", "number|array — lines <L>"),
        ],
        init: Init::AutoCreate,
        imp: Imp::Call(op_read),
    },
    MethodSpec {
        name: "op.edit",
        description: "EDIT in the attached run as a client turn (a project file proposes 202): {results, statement}.",
        params: &[
            ("target", "string — the entry (#channel optional)"),
            ("content", "string — the literal body (empty clears)"),
            ("tags?", "array — tags to add"),
            ("lineRange?", "number|array — lines <L> the content replaces"),
        ],
        init: Init::AutoCreate,
        imp: Imp::Call(op_edit),
    },
    MethodSpec {
        name: "op.copy",
        description: "COPY in the attached run as a client turn: {results, statement}.",
        params: &[
            ("source", "string — the entry copied"),
            ("destination", "string — where it goes"),
            ("tags?", "array — the copy's tags"),
            ("lineRange?", "number|array — source lines <L>"),
        ],
        init: Init::AutoCreate,
        imp: Imp::Call(op_copy),
    },
    MethodSpec {
        name: "op.move",
        description: "MOVE in the attached run as a client turn: {results, statement}.",
        params: &[
            ("source", "string — the entry moved"),
            ("destination", "string — where it goes"),
            ("tags?", "array — the moved entry's tags"),
            ("lineRange?", "number|array — source lines <L>"),
        ],
        init: Init::AutoCreate,
        imp: Imp::Call(op_move),
    },
    MethodSpec {
        name: "op.open",
        description: "OPEN log rows of the attached run (a client turn; success writes no row): {results, statement}.",
        params: &[
            ("target", "string — log:///L/T/S rows (globs allowed)"),
            ("matcher?", "string — rows whose result matches"),
            ("tags?", "array — tag filter"),
            ("lineRange?", "number|array — result range <L>"),
        ],
        init: Init::AutoCreate,
        imp: Imp::Call(op_open),
    },
    MethodSpec {
        name: "op.fold",
        description: "FOLD log rows of the attached run (a client turn; success writes no row): {results, statement}.",
        params: &[
            ("target", "string — log:///L/T/S rows (globs allowed)"),
            ("matcher?", "string — rows whose result matches"),
            ("tags?", "array — tag filter"),
            ("lineRange?", "number|array — result range <L>"),
        ],
        init: Init::AutoCreate,
        imp: Imp::Call(op_fold),
    },
    MethodSpec {
        name: "op.send",
        description: "SEND in the attached run as a client turn (no recipient: logged, no effect): {results, statement}.",
        params: &[
            ("recipient?", "string — run://name, a stream, an entry (SEND[410] deletes)"),
            ("status?", "integer — the HTTP-style status signal"),
            ("content?", "string — the message"),
        ],
        init: Init::AutoCreate,
        imp: Imp::Call(op_send),
    },
    MethodSpec {
        name: "op.exec",
        description: "EXEC in the attached run as a client turn (proposes 202; loop.resolve decides): {results, statement}.",
        params: &[
            ("command", "string — the command or program"),
            ("cwd?", "string — working directory in the project"),
            ("runtime?", "string — sh (default), python, node"),
            ("lineRange?", "number|array — <T,P>: timeout and poll seconds"),
        ],
        init: Init::AutoCreate,
        imp: Imp::Call(op_exec),
    },
    MethodSpec {
        name: "op.dispatch",
        description: "Dispatches one statement AST (plurnk's PlurnkStatement shape) in the attached run as a client turn: {results, statement}.",
        params: &[("statement", "object — {op, signal?, target?, lineMarker?, body?}")],
        init: Init::AutoCreate,
        imp: Imp::Call(op_dispatch),
    },
    MethodSpec {
        name: "op.parse",
        description: "Parses raw DSL and dispatches every statement as one client turn (parse errors become 400 error rows): {results}.",
        params: &[("text", "string — statements")],
        init: Init::AutoCreate,
        imp: Imp::Call(op_parse),
    },
    MethodSpec {
        name: "op.look",
        description: "READ with no log row and no loop (client inspection, read-only caps): {results}.",
        params: &[("text", "string — READ statements")],
        init: Init::AutoCreate,
        imp: Imp::Call(op_look),
    },
];

/// Notifications the daemon pushes, with what they carry.
pub static NOTIFICATIONS: &[(&str, &str)] = &[
    (
        "log/entry",
        "{sessionId, runId, loopId, entry} — every log row written in the attached session (again when a proposal is resolved)",
    ),
    (
        "loop/proposal",
        "{logEntryId, sessionId, runId, loopId, turnId, op, target, body} — a row waits for loop.resolve",
    ),
    (
        "loop/terminated",
        "{sessionId, runId, loopId, finalStatus, message, hitMaxTurns, turns, usage, costPico}",
    ),
    (
        "session/created",
        "{sessionId, session} — to every connection",
    ),
];

/// Looks a method up.
pub fn find(name: &str) -> Option<&'static MethodSpec> {
    METHODS.iter().find(|m| m.name == name)
}

/// Runs one call: lookup, the envelope, the handler.
pub fn dispatch(conn: &mut Conn<'_>, method: &str, params: Value) -> Result<Value, RpcError> {
    let Some(spec) = find(method) else {
        return Err(RpcError::new(
            rpc::METHOD_NOT_FOUND,
            format!("method not found: {method} (call discover for the catalog)"),
        ));
    };
    let handler = match spec.imp {
        Imp::Call(h) => h,
        Imp::Unavailable(why) => {
            return Err(RpcError::new(
                rpc::METHOD_NOT_FOUND,
                format!("{method} is not available in this build: {why}"),
            )
            .with_data(json!({"available": false})))
        }
    };
    // `AutoCreate` methods call [`Conn::attached_or_create`] once their params decoded,
    // so a malformed call never leaves a session behind.
    if conn.session.is_none() && spec.init == Init::Attached {
        return Err(not_initialised());
    }
    handler(conn, params)
}

fn args<T: DeserializeOwned>(v: Value) -> Result<T, RpcError> {
    let v = match v {
        Value::Null => json!({}),
        Value::Array(_) => {
            return Err(RpcError::params(
                "params must be an object of named parameters",
            ))
        }
        o => o,
    };
    serde_json::from_value(v).map_err(|e| RpcError::params(format!("invalid params: {e}")))
}

/// Maps engine failures onto the wire.
fn engine_err(e: EngineError) -> RpcError {
    match e {
        EngineError::Store(s) => store_err(s),
        EngineError::NotRunning => RpcError::internal("the engine is not running"),
        e @ EngineError::BadRequest(_) => RpcError::params(e.to_string()),
        e @ EngineError::RunBusy { loop_id, .. } => {
            RpcError::new(rpc::RUN_BUSY, e.to_string()).with_data(json!({ "loopId": loop_id }))
        }
        e @ EngineError::NoAnswer { .. } => RpcError::new(rpc::TIMEOUT, e.to_string()),
        other => RpcError::internal(other.to_string()),
    }
}

fn store_err(e: StoreError) -> RpcError {
    match e {
        StoreError::NotFound(what) if what.starts_with("session") => {
            RpcError::new(rpc::SESSION_NOT_FOUND, format!("{what} not found"))
        }
        StoreError::NotFound(what) if what.starts_with("loop") => {
            RpcError::new(rpc::LOOP_NOT_FOUND, format!("{what} not found"))
        }
        StoreError::NotFound(what) => RpcError::params(format!("{what} not found")),
        StoreError::Conflict(m) | StoreError::Refused(m) => RpcError::params(m),
        other => RpcError::internal(other.to_string()),
    }
}

/// Runs `f`, which blocks on the engine (a client op waits for its run's answer), without
/// stalling the other tasks of this worker: on a multi-threaded runtime the worker hands
/// its tasks off first.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Value, RpcError> {
    serde_json::to_value(v).map_err(|e| RpcError::internal(format!("cannot encode: {e}")))
}

/// A session as the wire shows it (settings decoded).
pub fn session_json(s: &SessionRow) -> Value {
    json!({
        "id": s.id,
        "name": s.name,
        "createdAt": s.created_at,
        "costPico": s.cost_pico,
        "projectRoot": s.project_root,
        "settings": serde_json::from_str::<Value>(&s.settings).unwrap_or(Value::Null),
    })
}

/// A log row as the wire shows it: its fields, `op` as the column value (`EDIT`,
/// `error`, `model`), plus `path` (`log:///L/T/S/OP`) and `targetUri`.
pub fn row_json(r: &LogRow) -> Value {
    serde_json::to_value(RowWire::of(r)).unwrap_or(Value::Null)
}

/// A row as the wire shows it: its fields (`op` as its keyword) plus `path` and
/// `targetUri`. Serialised directly, without an intermediate `Value`, by the notifications.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RowWire<'a> {
    #[serde(flatten)]
    row: &'a LogRow,
    path: String,
    target_uri: Option<String>,
}

impl<'a> RowWire<'a> {
    /// The wire form of `r`.
    pub fn of(r: &'a LogRow) -> RowWire<'a> {
        RowWire {
            row: r,
            path: r.path(),
            target_uri: r.target.as_ref().map(|t| t.uri()),
        }
    }
}

/// The inverse of [`row_json`] (clients rendering notified rows).
pub fn row_from_json(v: &Value) -> Option<LogRow> {
    use serde::Deserialize;
    LogRow::deserialize(v).ok()
}

fn run_json(r: &RunRow) -> Value {
    serde_json::to_value(r).unwrap_or(Value::Null)
}

fn ping(_: &mut Conn<'_>, _: Value) -> Result<Value, RpcError> {
    Ok(json!({}))
}

fn discover(conn: &mut Conn<'_>, _: Value) -> Result<Value, RpcError> {
    let methods: Vec<Value> = METHODS
        .iter()
        .map(|m| {
            let params: serde_json::Map<String, Value> = m
                .params
                .iter()
                .map(|(n, d)| ((*n).to_owned(), Value::from(*d)))
                .collect();
            let mut o = json!({
                "name": m.name,
                "description": m.description,
                "params": params,
                "requiresInit": m.init != Init::Free,
                "autoCreate": m.init == Init::AutoCreate,
                "longRunning": false,
                "available": matches!(m.imp, Imp::Call(_)),
            });
            if let (Imp::Unavailable(why), Value::Object(map)) = (m.imp, &mut o) {
                map.insert("unavailableReason".into(), why.into());
            }
            o
        })
        .collect();
    let notifications: Vec<Value> = NOTIFICATIONS
        .iter()
        .map(|(n, d)| json!({"name": n, "params": d}))
        .collect();
    let providers: Vec<&str> = conn
        .daemon
        .config
        .providers
        .iter()
        .map(|p| p.provider.as_str())
        .collect();
    let schemes: Vec<&str> = BUILTIN.iter().map(|m| m.name).collect();
    let mut mimetypes: Vec<&str> = BUILTIN
        .iter()
        .flat_map(|m| m.channels.iter().map(|(_, t)| *t))
        .collect();
    mimetypes.sort_unstable();
    mimetypes.dedup();
    Ok(json!({
        "methods": methods,
        "notifications": notifications,
        "capabilities": {"providers": providers, "schemes": schemes, "mimetypes": mimetypes},
        "versions": {"service": {"installed": env!("CARGO_PKG_VERSION")}},
    }))
}

fn create_session(
    conn: &Conn<'_>,
    name: Option<&str>,
    root: Option<&str>,
    settings: Option<&Value>,
) -> Result<(SessionRow, RunRow), RpcError> {
    let settings = match settings {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(v @ Value::Object(_)) => v.to_string(),
        Some(_) => return Err(RpcError::params("settings must be an object")),
    };
    let engine = &conn.daemon.engine;
    let s = engine
        .create_session(name, root, &settings)
        .map_err(engine_err)?;
    let r = engine
        .create_run(s.id, "main", Origin::Model)
        .map_err(engine_err)?;
    Ok((s, r))
}

fn attached_json(s: &SessionRow, r: &RunRow) -> Value {
    json!({
        "id": s.id,
        "name": s.name,
        "runId": r.id,
        "runName": r.name,
        "projectRoot": s.project_root,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateParams {
    name: Option<String>,
    project_root: Option<String>,
    settings: Option<Value>,
}

fn session_create(conn: &mut Conn<'_>, p: Value) -> Result<Value, RpcError> {
    let p: CreateParams = args(p)?;
    let (s, r) = create_session(
        conn,
        p.name.as_deref(),
        p.project_root.as_deref(),
        p.settings.as_ref(),
    )?;
    conn.attach(s.id, r.id);
    Ok(attached_json(&s, &r))
}

fn session_list(conn: &mut Conn<'_>, _: Value) -> Result<Value, RpcError> {
    let sessions = conn.daemon.engine.store().sessions().map_err(store_err)?;
    let list: Vec<Value> = sessions.iter().map(session_json).collect();
    Ok(json!({ "sessions": list }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AttachParams {
    id: SessionId,
    run_id: Option<RunId>,
    run_name: Option<String>,
}

fn session_attach(conn: &mut Conn<'_>, p: Value) -> Result<Value, RpcError> {
    let p: AttachParams = args(p)?;
    let store = conn.daemon.engine.store();
    let s = store.session(p.id).map_err(store_err)?;
    let runs = store.runs(s.id).map_err(store_err)?;
    let run = match (p.run_id, p.run_name.as_deref()) {
        (Some(id), _) => runs
            .into_iter()
            .find(|r| r.id == id)
            .ok_or_else(|| RpcError::params(format!("run {id} is not in session {}", s.id)))?,
        (None, Some("plurnk")) => {
            return Err(RpcError::params("the run name `plurnk` is reserved"))
        }
        (None, Some(name)) => match runs.into_iter().find(|r| r.name == name) {
            Some(r) => r,
            None => conn
                .daemon
                .engine
                .create_run(s.id, name, Origin::Model)
                .map_err(engine_err)?,
        },
        (None, None) => match runs.into_iter().find(|r| r.origin == Origin::Model) {
            Some(r) => r,
            None => conn
                .daemon
                .engine
                .create_run(s.id, "main", Origin::Model)
                .map_err(engine_err)?,
        },
    };
    conn.attach(s.id, run.id);
    Ok(attached_json(&s, &run))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionRef {
    id: Option<SessionId>,
    limit: Option<usize>,
}

fn session_of(conn: &Conn<'_>, id: Option<SessionId>) -> Result<SessionId, RpcError> {
    match id.or(conn.session) {
        Some(id) => {
            conn.daemon.engine.store().session(id).map_err(store_err)?;
            Ok(id)
        }
        None => Err(not_initialised()),
    }
}

fn session_runs(conn: &mut Conn<'_>, p: Value) -> Result<Value, RpcError> {
    let p: SessionRef = args(p)?;
    let id = session_of(conn, p.id)?;
    let runs = conn.daemon.engine.store().runs(id).map_err(store_err)?;
    let list: Vec<Value> = runs.iter().map(run_json).collect();
    Ok(json!({ "runs": list }))
}

fn session_prompts(conn: &mut Conn<'_>, p: Value) -> Result<Value, RpcError> {
    let p: SessionRef = args(p)?;
    let id = session_of(conn, p.id)?;
    let store = conn.daemon.engine.store();
    let mut loops: Vec<LoopRow> = Vec::new();
    for r in store.runs(id).map_err(store_err)? {
        loops.extend(store.loops(r.id).map_err(store_err)?);
    }
    loops.sort_by_key(|l| std::cmp::Reverse(l.id));
    let list: Vec<Value> = loops
        .iter()
        .take(p.limit.unwrap_or(usize::MAX))
        .map(|l| {
            json!({
                "loopId": l.id,
                "runId": l.run_id,
                "prompt": l.prompt,
                "createdAt": l.created_at,
                "status": l.status,
            })
        })
        .collect();
    Ok(json!({ "prompts": list }))
}

#[derive(Deserialize)]
struct RenameParams {
    name: String,
}

fn session_rename(conn: &mut Conn<'_>, p: Value) -> Result<Value, RpcError> {
    let p: RenameParams = args(p)?;
    let (sid, _) = conn.attached()?;
    if p.name.trim().is_empty() {
        return Err(RpcError::params("a session name cannot be empty"));
    }
    conn.daemon
        .engine
        .store()
        .rename_session(sid, &p.name)
        .map_err(store_err)?;
    Ok(json!({"id": sid, "name": p.name}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RootParams {
    project_root: Option<String>,
}

fn session_set_root(conn: &mut Conn<'_>, p: Value) -> Result<Value, RpcError> {
    // `projectRoot` is required: null means headless, a missing key is a mistake (an empty
    // `{}` must not silently detach a session from its project).
    if p.get("projectRoot").is_none() {
        return Err(RpcError::new(
            rpc::INVALID_PARAMS,
            "projectRoot is required: a directory, or null for a headless session",
        ));
    }
    let p: RootParams = args(p)?;
    let (sid, _) = conn.attached()?;
    conn.daemon
        .engine
        .set_root(sid, p.project_root.as_deref())
        .map_err(engine_err)?;
    Ok(json!({ "id": sid, "projectRoot": p.project_root,
        "note": "loops started from now on see the new root" }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunParams {
    prompt: String,
    max_turns: Option<u32>,
    flags: Option<LoopFlags>,
}

fn loop_run(conn: &mut Conn<'_>, p: Value) -> Result<Value, RpcError> {
    let p: RunParams = args(p)?;
    let (sid, rid) = conn.attached_or_create()?;
    let opts = LoopOptions {
        flags: p.flags.unwrap_or_default(),
        max_turns: p.max_turns,
    };
    let lp = conn
        .daemon
        .engine
        .start_loop(rid, &p.prompt, &opts)
        .map_err(engine_err)?;
    Ok(json!({
        "loopId": lp.id,
        "sessionId": sid,
        "runId": rid,
        "action": "enqueued_new_loop",
        "finalStatus": lp.status,
    }))
}

#[derive(Deserialize)]
struct InjectParams {
    prompt: String,
    flags: Option<LoopFlags>,
}

fn active_loop(conn: &Conn<'_>, run: RunId) -> Result<Option<LoopId>, RpcError> {
    let loops = conn.daemon.engine.store().loops(run).map_err(store_err)?;
    Ok(loops
        .iter()
        .rev()
        .find(|l| l.status == status::RUNNING || l.status == status::PARKED)
        .map(|l| l.id))
}

fn loop_inject(conn: &mut Conn<'_>, p: Value) -> Result<Value, RpcError> {
    let p: InjectParams = args(p)?;
    let (sid, rid) = conn.attached_or_create()?;
    let active = active_loop(conn, rid)?;
    conn.daemon
        .engine
        .inject(rid, &p.prompt, &p.flags.unwrap_or_default())
        .map_err(engine_err)?;
    Ok(json!({
        "action": if active.is_some() { "injected_next_turn" } else { "enqueued_new_loop" },
        "loopId": active,
        "sessionId": sid,
        "runId": rid,
    }))
}

#[derive(Deserialize)]
struct CancelParams {
    reason: Option<String>,
}

#[derive(Deserialize)]
struct ConstraintParams {
    effect: String,
    glob: String,
}

fn session_constrain(conn: &mut Conn<'_>, p: Value) -> Result<Value, RpcError> {
    let p: ConstraintParams = args(p)?;
    let (sid, _) = conn.attached()?;
    let added = conn
        .daemon
        .engine
        .store()
        .constrain(sid, &p.effect, &p.glob)
        .map_err(|e| match e {
            StoreError::Refused(m) => RpcError::params(m),
            other => store_err(other),
        })?;
    Ok(json!({ "added": added, "effect": p.effect, "glob": p.glob,
        "note": "loops started from now on see the new overlay" }))
}

fn session_unconstrain(conn: &mut Conn<'_>, p: Value) -> Result<Value, RpcError> {
    let p: ConstraintParams = args(p)?;
    let (sid, _) = conn.attached()?;
    let removed = conn
        .daemon
        .engine
        .store()
        .unconstrain(sid, &p.effect, &p.glob)
        .map_err(store_err)?;
    Ok(json!({ "removed": removed, "effect": p.effect, "glob": p.glob }))
}

fn session_constraints(conn: &mut Conn<'_>, _p: Value) -> Result<Value, RpcError> {
    let (sid, _) = conn.attached()?;
    let c = conn
        .daemon
        .engine
        .store()
        .constraints(sid)
        .map_err(store_err)?;
    let list: Vec<Value> = c
        .into_iter()
        .map(|(effect, glob)| json!({ "effect": effect, "glob": glob }))
        .collect();
    Ok(json!({ "constraints": list }))
}

/// `session.members`: each member with the overlay effect that decides its standing —
/// `view` (read-only), else `pick` (only a pick brings it in), else `repo` — and its access.
fn session_members(conn: &mut Conn<'_>, _p: Value) -> Result<Value, RpcError> {
    let (sid, _) = conn.attached()?;
    // Git and a walk of the project: off the connection's async worker, like the ops.
    let engine = &conn.daemon.engine;
    let Some(listing) = blocking(|| engine.members(sid)).map_err(engine_err)? else {
        return Ok(json!({ "members": [], "hidden": [] }));
    };
    let members: Vec<Value> = listing
        .members
        .iter()
        .map(|m| {
            let effect = if m.readonly {
                "view"
            } else {
                m.origin.as_str()
            };
            json!({
                "path": m.path,
                "effect": effect,
                "access": if m.readonly { "ro" } else { "rw" },
                "size": m.size,
                "binary": m.binary,
            })
        })
        .collect();
    Ok(json!({ "members": members, "hidden": listing.hidden }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResolveParams {
    log_entry_id: i64,
    decision: String,
    outcome: Option<String>,
}

fn loop_resolve(conn: &mut Conn<'_>, p: Value) -> Result<Value, RpcError> {
    let p: ResolveParams = args(p)?;
    let (sid, _) = conn.attached()?;
    let decision = crate::turn::proposal::Decision::parse(&p.decision).ok_or_else(|| {
        RpcError::params(format!(
            "decision must be accept, reject or cancel, not {:?}",
            p.decision
        ))
    })?;
    let engine = &conn.daemon.engine;
    let row = engine.store().log_row(p.log_entry_id).map_err(store_err)?;
    let run = engine.store().run(row.run_id).map_err(store_err)?;
    if run.session_id != sid {
        return Err(RpcError::new(
            rpc::LOOP_NOT_FOUND,
            format!(
                "log entry {} is not in the attached session",
                p.log_entry_id
            ),
        ));
    }
    engine
        .resolve(p.log_entry_id, decision, p.outcome.as_deref())
        .map_err(|e| match e {
            EngineError::NotPending(id) => {
                RpcError::params(format!("log entry {id} is not a pending proposal"))
            }
            other => engine_err(other),
        })?;
    Ok(json!({ "status": 202, "logEntryId": p.log_entry_id, "decision": p.decision }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ForkParams {
    run_id: Option<RunId>,
}

fn run_fork(conn: &mut Conn<'_>, p: Value) -> Result<Value, RpcError> {
    let p: ForkParams = args(p)?;
    let (sid, rid) = conn.attached()?;
    let source = p.run_id.unwrap_or(rid);
    let r = conn
        .daemon
        .engine
        .store()
        .fork_run(sid, source, "", crate::store::Origin::Client)
        .map_err(store_err)?;
    Ok(json!({ "runId": r.id, "runName": r.name, "parentRunId": r.parent_run_id }))
}

#[derive(Deserialize)]
struct ProposalParams {
    all: Option<bool>,
}

fn proposal_list(conn: &mut Conn<'_>, p: Value) -> Result<Value, RpcError> {
    let p: ProposalParams = args(p)?;
    let (sid, rid) = conn.attached()?;
    let engine = &conn.daemon.engine;
    let rows = if p.all.unwrap_or(false) {
        let mut all = Vec::new();
        for r in engine.store().runs(sid).map_err(store_err)? {
            all.extend(engine.proposals(Some(r.id)).map_err(engine_err)?);
        }
        all
    } else {
        engine.proposals(Some(rid)).map_err(engine_err)?
    };
    Ok(json!({ "proposals": rows }))
}

fn loop_cancel(conn: &mut Conn<'_>, p: Value) -> Result<Value, RpcError> {
    let p: CancelParams = args(p)?;
    let (_, rid) = conn.attached()?;
    let reason = p.reason.unwrap_or_else(|| "cancelled by the client".into());
    let cancelled = cancel_run(conn.daemon, rid, &reason).map_err(engine_err)?;
    Ok(json!({
        "cancelled": !cancelled.is_empty(),
        "loopIds": cancelled,
        "runId": rid,
        "reason": reason,
    }))
}

/// Cancels a run's loops: queued ones close 499 at once (the host may write a queued loop's
/// status), the running one through the engine (its process is killed, its run writes 499).
pub(crate) fn cancel_run(d: &Daemon, run: RunId, reason: &str) -> Result<Vec<LoopId>, EngineError> {
    let store = d.engine.store();
    let mut out = Vec::new();
    let mut running = false;
    for l in store.loops(run)? {
        match l.status {
            status::QUEUED => {
                // A drain may claim it between the read and the write; then the write is
                // refused or the claim is, and the running loop is cancelled below.
                if store
                    .set_loop_status(l.id, status::CANCELLED, Some(reason))
                    .is_ok()
                {
                    out.push(l.id);
                } else {
                    running = true;
                }
            }
            status::RUNNING | status::PARKED => {
                running = true;
                out.push(l.id);
            }
            _ => {}
        }
    }
    if running {
        d.engine.cancel(run)?;
    }
    Ok(out)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProviderJson<'a> {
    alias: &'a str,
    provider: &'a str,
    model: &'a str,
    active: bool,
}

fn providers_list(conn: &mut Conn<'_>, _: Value) -> Result<Value, RpcError> {
    let list: Vec<ProviderJson<'_>> = conn
        .daemon
        .config
        .providers
        .iter()
        .enumerate()
        .map(|(i, p)| ProviderJson {
            alias: &p.alias,
            provider: &p.provider,
            model: &p.model,
            active: i == 0,
        })
        .collect();
    Ok(json!({ "aliases": to_json(&list)? }))
}

#[derive(Deserialize)]
struct EntryParams {
    target: String,
}

fn entry_read(conn: &mut Conn<'_>, p: Value) -> Result<Value, RpcError> {
    let p: EntryParams = args(p)?;
    let (sid, rid) = conn.attached()?;
    let parsed = parse_path(&p.target)
        .map_err(|e| RpcError::params(format!("target {:?}: {e}", p.target)))?;
    let (scheme, pathname) = match Address::resolve(&parsed) {
        Address::Entry {
            scheme, pathname, ..
        } => (scheme, pathname),
        other => {
            return Err(RpcError::new(
                rpc::SCHEME_UNAVAILABLE,
                format!(
                    "entry.read reads known://, unknown:// and plurnk:// entries; {}:// is not readable here",
                    other.scheme()
                ),
            ))
        }
    };
    let key = entry_key(&scheme, &pathname);
    match conn
        .daemon
        .engine
        .store()
        .entry(sid, rid, &key)
        .map_err(store_err)?
    {
        Some(e) => Ok(json!({"status": 200, "entry": to_json(&e)?})),
        None => Err(RpcError::new(
            rpc::ENTRY_NOT_FOUND,
            format!("entry not found: {}", key.uri()),
        )),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogParams {
    run_id: Option<RunId>,
    loop_id: Option<LoopId>,
    turn_id: Option<i64>,
    loop_seq: Option<i64>,
    turn_seq: Option<i64>,
    sequence: Option<i64>,
    since_id: Option<i64>,
    limit: Option<u32>,
}

fn log_read(conn: &mut Conn<'_>, p: Value) -> Result<Value, RpcError> {
    let p: LogParams = args(p)?;
    let store = conn.daemon.engine.store();
    if let Some(l) = p.loop_id {
        store.loop_row(l).map_err(store_err)?;
    }
    let run_id = match (p.run_id, p.loop_id, p.turn_id) {
        (None, None, None) => Some(conn.run.ok_or_else(not_initialised)?),
        (r, _, _) => r,
    };
    let post = p.loop_seq.is_some() || p.turn_seq.is_some() || p.sequence.is_some();
    let q = LogQuery {
        run_id,
        loop_id: p.loop_id,
        turn_id: p.turn_id,
        since_id: p.since_id,
        limit: if post { None } else { p.limit },
    };
    let rows = store.log_query(&q).map_err(store_err)?;
    let keep = |r: &&LogRow| {
        p.loop_seq.is_none_or(|s| r.loop_seq == s)
            && p.turn_seq.is_none_or(|s| r.turn_seq == s)
            && p.sequence.is_none_or(|s| r.sequence == s)
    };
    let entries: Vec<Value> = rows
        .iter()
        .filter(keep)
        .take(p.limit.map_or(usize::MAX, |l| l as usize))
        .map(row_json)
        .collect();
    Ok(json!({ "entries": entries }))
}

fn daemon_stats(conn: &mut Conn<'_>, _: Value) -> Result<Value, RpcError> {
    let d = conn.daemon;
    let store = d.engine.store();
    let mut stats = d.hub.stats_json();
    let active: Vec<Value> = d
        .hub
        .active_loops()
        .into_iter()
        .filter_map(|(l, r)| {
            let row = store.loop_row(l).ok()?;
            Some(json!({"loopId": l, "runId": r, "status": row.status, "prompt": row.prompt}))
        })
        .collect();
    let recent: Vec<Value> = d
        .hub
        .recent_loops()
        .into_iter()
        .rev()
        .map(|(l, r, s, m)| json!({"loopId": l, "runId": r, "status": s, "message": m}))
        .collect();
    if let Value::Object(o) = &mut stats {
        o.insert("activeLoops".into(), active.into());
        o.insert("recentLoops".into(), recent.into());
    }
    Ok(stats)
}

fn kernel_ps(conn: &mut Conn<'_>, _: Value) -> Result<Value, RpcError> {
    let procs: Vec<Value> = conn
        .daemon
        .engine
        .kernel()
        .ps()
        .into_iter()
        .map(|p| {
            json!({
                "pid": p.pid.0,
                "name": &*p.name,
                "parent": p.parent.map(|q| q.0),
                "status": p.status,
                "stopped": p.stopped,
                "mailbox": p.mailbox,
                "priority": p.priority,
                "caps": p.caps,
                "usage": to_json(&p.usage).unwrap_or(Value::Null),
            })
        })
        .collect();
    Ok(json!({ "processes": procs }))
}
