//! Client ops (PLURNK.md §4.2 `op.*`, `op.parse`, `op.look`): statements a client — not the
//! model — dispatches in a run.
//!
//! A client's statements run the engine's way: inside a kernel process, a child of the
//! run's, holding device caps derived like a loop's, through the same scheme registry and [`dispatch`] the model's turns use.
//!
//! - **A client turn** (`op.parse`, every `op.*` but `op.look`) is a **client loop** of the
//!   run: an ordinary `loops` row (its prompt the statement text, `max_turns` 1) that the
//!   run process queues and claims itself, in the slot a model loop would take — so it never
//!   runs beside a model loop of the same run (one loop per run at a time) — and runs in a
//!   child process holding the caps of the loop's flags (the defaults: act mode, a human
//!   resolver), its `fs`/`exec` caps granted by the session from its project root and
//!   overlay as they are when the loop starts (so `session.set_root` reaches it like any
//!   loop), and no `llm` cap. Its rows live in the run's log, so the model's later loops
//!   see what the client did. Its one turn parses the text, dispatches every statement with
//!   origin `client`, and commits every row (parse errors as `op = 'error'` rows, 400), the
//!   entry writes and the loop status in **one** store transaction; the rows reach
//!   subscribers as `log/entry` through the store's commit events. Then it answers the
//!   host. Proposals
//!   (a project-file EDIT, an EXEC) answer 202 like the model's: the loop parks (202) after
//!   that commit and waits for each decision in order (`loop.resolve`, the proposal
//!   timeout), and an accepted command runs to its end before the loop concludes 200 — the
//!   loop holds the `exec` handle that started it, and its output lands as READ rows.
//!   Unlike a model turn, a client turn does not park *between* its statements: every
//!   statement is dispatched before any proposal is decided, so a READ after a proposed
//!   EDIT in one `op.parse` sees the file as it was.
//! - **Serialization with a model loop:** a client turn asked while the run has a loop
//!   running or parked (its stored status 102 or 202) is refused ([`ClientRefusal::Busy`]),
//!   never interleaved into its turns; the client waits for `loop/terminated` (or cancels)
//!   and asks again. Refusing keeps the model's turns exactly what the model produced, and
//!   a client that must act meanwhile can attach another run of the session (entries are
//!   shared by the session).
//! - **A look** (`op.look`) runs READs in a child holding read-only caps (a read-only
//!   `store` cap, the session's ask-mode `fs` cap, no `exec`), writes no row and no loop,
//!   and may run beside an active loop: it cannot change anything that loop sees.
//!
//! **API boundary:** [`OpResult`] (what a host gets back), [`ClientJob`], [`ReplyTo`],
//! [`ClientAnswer`], [`ClientRefusal`] (the messages between the host and the processes),
//! and [`look`]. The client turn itself is `LoopRunner::client` (in `runner`).

use std::sync::mpsc;
use std::sync::Arc;

use agentos_abi::{CapRef, Syscalls};
use serde::{Deserialize, Serialize};

use super::{EngineConfig, LoopFlags};
use crate::grammar::{parse, Op, Severity, Statement};
use crate::schemes::dispatch::{dispatch, Devices, DispatchCtx};
use crate::schemes::exec::StreamTable;
use crate::schemes::world::{store_call, TurnWorld};
use crate::schemes::SchemeRegistry;
use crate::store::device::StoreRequest;
use crate::store::{LogRow, LoopId, RowId, RowState, RunId};

/// One result of a client op: a row it wrote, or what an action answered without a row (a
/// successful OPEN/FOLD, every READ of a look).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpResult {
    /// The log row (`None`: no row was written).
    pub row_id: Option<RowId>,
    /// The client loop it ran in (`None` for a look, which runs in none).
    pub loop_id: Option<LoopId>,
    /// The row's log path `log:///L/T/S/OP` (`None` without a row).
    pub path: Option<String>,
    /// The op keyword (`READ`, `EDIT`, …) or `error` for a parse error.
    pub op: String,
    /// The URI the row points at.
    pub target: Option<String>,
    /// The status (PLURNK.md §1.6); 202 while a proposal waits for `loop.resolve`.
    pub status: u16,
    /// `proposed` for a 202 waiting for a decision.
    pub state: Option<RowState>,
    /// The result text (`rx`).
    pub body: Option<String>,
    /// The mimetype of `body`.
    pub mimetype: Option<String>,
    /// Rows whose fold state an OPEN/FOLD changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<RowId>,
}

impl OpResult {
    /// The result a written row stands for.
    pub fn of_row(r: &LogRow) -> OpResult {
        OpResult {
            row_id: Some(r.id),
            loop_id: Some(r.loop_id),
            path: Some(r.path()),
            op: r.op.as_str().to_owned(),
            target: r.target.as_ref().map(|t| t.uri()),
            status: r.status,
            state: r.state,
            body: r.rx.clone(),
            mimetype: r.mimetype_rx.clone(),
            changed: Vec::new(),
        }
    }

    /// The result of an action that writes no row (a look's READ, an OPEN or FOLD): its
    /// target as resolved, else as written.
    pub(crate) fn bare(
        s: &Statement,
        a: crate::schemes::dispatch::Action,
        loop_id: Option<LoopId>,
    ) -> OpResult {
        let target = a
            .target
            .as_ref()
            .map(|t| t.uri())
            .or_else(|| s.target.as_ref().map(|t| t.raw().to_owned()));
        OpResult {
            row_id: None,
            loop_id,
            path: None,
            op: s.op.keyword().to_owned(),
            target,
            status: a.status,
            state: None,
            changed: a.folds.iter().map(|(id, _)| *id).collect(),
            body: a.rx,
            mimetype: a.mimetype_rx,
        }
    }
}

/// Why a client job was not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientRefusal {
    /// The run has a loop running or parked; a client turn waits for it to end.
    Busy {
        /// That loop.
        loop_id: i64,
    },
    /// The job could not be started or its turn failed (the text says why).
    Failed(String),
}

/// What a client job answers: its results in statement order, or why it did not run.
pub type ClientAnswer = Result<Vec<OpResult>, ClientRefusal>;

/// Where a client job's answer goes: the host waits on the other end. Equal only to itself
/// (a copy of the same channel).
#[derive(Clone)]
pub struct ReplyTo(Arc<mpsc::Sender<ClientAnswer>>);

impl ReplyTo {
    /// A reply channel: the sending half for the job, the receiving half for the host.
    pub fn channel() -> (ReplyTo, mpsc::Receiver<ClientAnswer>) {
        let (tx, rx) = mpsc::channel();
        (ReplyTo(Arc::new(tx)), rx)
    }

    /// Answers (a host that stopped waiting is not an error).
    pub fn send(&self, answer: ClientAnswer) {
        let _ = self.0.send(answer);
    }
}

impl std::fmt::Debug for ReplyTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplyTo")
    }
}

impl PartialEq for ReplyTo {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// A client's statements for a run, and where the answer goes.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientJob {
    /// The statements, as DSL text.
    pub text: String,
    /// A look: READs only, no row, read-only caps.
    pub look: bool,
    /// Where the answer goes.
    pub reply: ReplyTo,
}

/// Checks a look's text: one or more READ statements and nothing malformed. `Err` says
/// what is wrong (the host answers it as bad params; a look writes no error row).
pub fn check_look(text: &str) -> Result<Vec<Statement>, String> {
    let parsed = parse(text);
    if let Some(t) = &parsed.unparsed_tail {
        return Err(format!(
            "unparsed tail from {}:{}: {}",
            t.from.line, t.from.column, t.reason
        ));
    }
    if let Some(e) = parsed.errors().find(|e| e.severity == Severity::Error) {
        return Err(format!("{} at {}:{}", e.message, e.line, e.column));
    }
    let statements: Vec<Statement> = parsed.statements().cloned().collect();
    if statements.is_empty() {
        return Err("no statement: a look takes READ statements (<<READ(target)::READ)".into());
    }
    if let Some(s) = statements.iter().find(|s| s.op != Op::Read) {
        return Err(format!("a look runs READ only, not {}", s.op));
    }
    Ok(statements)
}

/// Runs a look: each READ dispatched with origin `client` against the run's log and the
/// session's entries, nothing written (entry writes of the turn's world are dropped).
/// `devices` should be read-only (the caller derives them so).
pub async fn look<S: Syscalls>(
    sys: &S,
    store: CapRef,
    devices: &Devices,
    run_id: RunId,
    cfg: &EngineConfig,
    text: &str,
) -> ClientAnswer {
    let statements = check_look(text).map_err(ClientRefusal::Failed)?;
    let log: Vec<LogRow> = store_call(sys, store, &StoreRequest::Log)
        .await
        .map_err(|e| ClientRefusal::Failed(e.to_string()))?;
    let flags = LoopFlags {
        mode: "ask".into(),
        ..LoopFlags::default()
    };
    let schemes = SchemeRegistry::builtin()
        .resolve_for_loop(&flags)
        .for_devices(devices);
    let me = crate::schemes::run::Me {
        run_id,
        loop_id: 0,
        flags: flags.to_json(),
        max_active_runs: cfg.max_active_runs,
        asked: Default::default(),
    };
    let streams = StreamTable::new();
    let mut world = TurnWorld::new(sys, store);
    let mut out = Vec::new();
    for s in &statements {
        let mut ctx = DispatchCtx {
            world: &mut world,
            schemes: &schemes,
            log: &log,
            origin: crate::store::Origin::Client,
            devices,
            streams: &streams,
            me: &me,
        };
        for a in dispatch(&mut ctx, s).await {
            out.push(OpResult::bare(s, a, None));
        }
    }
    Ok(out)
}
