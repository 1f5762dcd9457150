//! One loop's turns: runTurn (PLURNK.md §3.3) inside runLoop (§3.2), with every rail wired.
//!
//! A turn: the turn-1 foist (operator docs, the prompt as a folded `EDIT
//! plurnk:///prompt/<loop>/1`, the catalog preview), injected prompts, the packet, the
//! grinder, one read of the LLM device, parse, the premature-terminate and idle-turn
//! steers, the turn status, the command cap, dispatch in order, the model's verbatim
//! emission as a folded `model` row, the strike verdict — and one store commit holding all
//! of it, with the loop's terminal status when the turn ends the loop.
//!
//! **Invariants:** one store transaction per turn; errors are rows (`op = 'error'`), never
//! exceptions; the model sees the failures, never strike counts or thresholds; hostile model
//! output ends as parse-error rows.

use std::fmt::Write as _;
use std::sync::Arc;

use agentos_abi::device::{ChatReply, ChatRequest, DeviceMessage};
use agentos_abi::{CapRef, Syscalls};

use super::packet::{self, Packet, PacketInput, Section, Slot};
use super::proposal::{Decision, Proposed, Resolution};
use super::render::{open_tokens, RenderedRow};
use super::{docs, EngineConfig, LoopFlags};
use crate::grammar::{parse_turn, Body, Item, Op, Statement};
use crate::rails::{cap_commands, is_idle_turn, LoopRails, StreakDecision};
use crate::schemes::dispatch::{dispatch, Action, Devices, DispatchCtx};
use crate::schemes::effect::Effect;
use crate::schemes::entry::entry_key;
use crate::schemes::exec::{exec_call, stream_key, ExecRequest, StreamTable};
use crate::schemes::world::{channel, store_call, TurnWorld, WorldError};
use crate::schemes::SchemeRegistry;
use crate::schemes::{copy, file};
use crate::store::device::StoreRequest;
use crate::store::{
    status, LogRow, LoopRow, Origin, RowId, RowOp, RowResolution, RowState, RowTarget, SessionRow,
    TurnCommit, TurnCommitted, TurnId, TurnRow, TurnUsage,
};

mod client;

/// Why a loop process stopped early (the run records the loop as 500 with this).
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] WorldError),
}

/// One loop's state across its turns.
pub struct LoopRunner<S: Syscalls> {
    sys: S,
    store: CapRef,
    /// The LLM device handle (a client loop holds none).
    llm: Option<CapRef>,
    cfg: Arc<EngineConfig>,
    lp: LoopRow,
    schemes: SchemeRegistry,
    /// The GBNF sent with each generate (built from `schemes` under `TurnGrammar::Engine`).
    grammar: Option<String>,
    log: Vec<LogRow>,
    /// `log` rendered row for row, re-rendered only when a row is opened or folded.
    rendered: Vec<RenderedRow>,
    rails: LoopRails,
    system: Vec<Section>,
    requirements: Section,
    prompts: Vec<String>,
    prompts_seen: i64,
    notices: Vec<String>,
    turn_seq: i64,
    max_turns: i64,
    devices: Devices,
    /// The current turn's id once a segment of it is committed (a parked turn).
    cur_turn: Option<TurnId>,
    /// What pumps need: the `exec` and `store` device caps they derive theirs from.
    pumps: Option<Pumps>,
    /// Running streams: path → device process id (for SEND/KILL).
    streams: StreamTable,
    /// Streams whose output the log has not fully shown yet.
    watched: Vec<Watched>,
    me: crate::schemes::run::Me,
    /// Env deltas are the siblings' rows after this id.
    delta_seen: RowId,
}

/// What arrived since the last turn: injected prompts `(n, text)`, env deltas `(run name,
/// row)`, and where the next delta scan starts.
type PreTurn = (Vec<(i64, String)>, Vec<(String, LogRow)>, RowId);

/// The caps a loop starts stream pumps with.
#[derive(Clone)]
pub struct Pumps {
    /// The loop's `exec` device cap (pumps derive theirs from it).
    pub exec_device: CapRef,
    /// The loop's `store` device cap (the pump derives its own from it).
    pub store_device: CapRef,
}

/// A stream the loop shows as it grows.
struct Watched {
    runtime: String,
    path: String,
    pump: agentos_abi::Pid,
    started_turn: i64,
    shown: [usize; 2],
    closed: Option<(u16, String)>,
}

/// A row in the making (ids are assigned at commit).
fn row(lp: &LoopRow, turn_seq: i64, sequence: i64, at: i64, origin: Origin, op: RowOp) -> LogRow {
    LogRow {
        id: 0,
        run_id: lp.run_id,
        loop_id: lp.id,
        turn_id: 0,
        loop_seq: lp.sequence,
        turn_seq,
        sequence,
        at,
        origin,
        source: None,
        op,
        suffix: String::new(),
        signal: None,
        target: None,
        line_marker: None,
        tx: None,
        mimetype_tx: None,
        rx: None,
        mimetype_rx: None,
        status: 200,
        tokens: 0,
        state: None,
        outcome: None,
        expanded: true,
    }
}

/// The rows of one turn, numbered as they are added.
struct TurnRows<'a> {
    lp: &'a LoopRow,
    turn_seq: i64,
    at: i64,
    rows: Vec<LogRow>,
    /// Rows of this turn already committed in earlier segments (a parked turn).
    committed: usize,
}

impl TurnRows<'_> {
    fn push(&mut self, mut r: LogRow) -> usize {
        r.sequence = (self.committed + self.rows.len()) as i64 + 1;
        r.tokens = open_tokens(&r);
        self.rows.push(r);
        self.rows.len() - 1
    }

    /// The turn's ordinal of the next row (counting committed segments).
    fn next_ordinal(&self) -> usize {
        self.committed + self.rows.len()
    }

    fn new_row(&self, origin: Origin, op: RowOp) -> LogRow {
        row(self.lp, self.turn_seq, 0, self.at, origin, op)
    }

    /// An error row (`op = 'error'`): status plus a canonical term, no advice.
    fn error(&mut self, origin: Origin, source: &str, status: u16, rx: String) {
        let mut r = self.new_row(origin, RowOp::Error);
        r.source = Some(source.to_owned());
        r.status = status;
        r.rx = Some(rx);
        r.mimetype_rx = Some("text/plain".into());
        self.push(r);
    }

    /// The 400 row of a parse error (model and client turns word it alike).
    fn parse_error(&mut self, origin: Origin, e: &crate::grammar::ParseError) {
        let rx = format!("400 {} at {}:{}", e.message, e.line, e.column);
        self.error(origin, "grammar", 400, rx);
    }

    /// The 400 row of a turn's unparsed tail.
    fn unparsed_tail(&mut self, origin: Origin, t: &crate::grammar::UnparsedTail) {
        let rx = format!(
            "400 unparsed tail from {}:{}: {}",
            t.from.line, t.from.column, t.reason
        );
        self.error(origin, "grammar", 400, rx);
    }

    /// The row of a dispatched statement and its action.
    fn action(&mut self, origin: Origin, s: &Statement, a: Action) {
        let mut r = self.new_row(origin, RowOp::Op(s.op));
        r.suffix = s.suffix.clone();
        r.signal = s
            .signal
            .as_ref()
            .and_then(|sig| serde_json::to_string(sig).ok());
        r.line_marker = s
            .line_marker
            .as_ref()
            .and_then(|m| serde_json::to_string(&m.marks).ok());
        r.target = a.target.or_else(|| s.target.as_ref().map(statement_target));
        r.tx = Some(s.body_raw().to_owned()).filter(|t| !t.is_empty());
        r.mimetype_tx = r.tx.as_ref().map(|_| "text/plain".to_owned());
        r.status = a.status;
        r.rx = a.rx;
        r.mimetype_rx = a.mimetype_rx;
        r.expanded = !a.folded;
        self.push(r);
    }
}

/// A row target from a statement's parsed target (used when the scheme gave none).
fn statement_target(p: &crate::grammar::ParsedPath) -> RowTarget {
    use crate::grammar::ParsedPath;
    match p {
        ParsedPath::Url {
            scheme,
            hostname,
            fragment,
            ..
        } => RowTarget {
            scheme: Some(scheme.clone()),
            hostname: hostname.clone().filter(|h| !h.is_empty()),
            pathname: p.decoded_pathname(),
            fragment: fragment.clone(),
        },
        other => RowTarget {
            scheme: None,
            hostname: None,
            pathname: other.decoded_pathname(),
            fragment: None,
        },
    }
}

fn url_target(scheme: &str, path: &str) -> crate::grammar::ParsedPath {
    crate::grammar::parse_path(&format!("{scheme}://{path}")).unwrap_or(
        crate::grammar::ParsedPath::Local {
            raw: path.to_owned(),
        },
    )
}

/// A statement the engine foists on turn 1 (origin `plurnk`).
fn foist(op: Op, target: crate::grammar::ParsedPath, body: Option<Body>) -> Statement {
    Statement {
        op,
        suffix: String::new(),
        signal: None,
        target: Some(target),
        line_marker: None,
        body,
        position: Default::default(),
    }
}

impl<S: Syscalls> LoopRunner<S> {
    /// Loads a claimed loop: its row, its session, the run's log so far. `llm` is `None`
    /// for a client loop, which never asks a model.
    pub async fn load(
        sys: S,
        store: CapRef,
        llm: Option<CapRef>,
        cfg: Arc<EngineConfig>,
        loop_id: i64,
        devices: Devices,
        pumps: Option<Pumps>,
    ) -> Result<Self, RunnerError> {
        let lp: LoopRow = store_call(&sys, store, &StoreRequest::Loop { loop_id }).await?;
        let session: SessionRow = store_call(&sys, store, &StoreRequest::Session).await?;
        let log: Vec<LogRow> = store_call(&sys, store, &StoreRequest::Log).await?;
        let flags = LoopFlags::from_json(&lp.flags).unwrap_or_default();
        let schemes = SchemeRegistry::builtin()
            .resolve_for_loop(&flags)
            .for_devices(&devices);
        let grammar = match &cfg.grammar {
            super::TurnGrammar::Off => None,
            super::TurnGrammar::Engine => Some(super::loop_gbnf(&schemes)),
            super::TurnGrammar::Fixed(g) => Some(g.clone()),
        };
        let mut system = vec![
            Section::new(
                "definition",
                Slot::System,
                None,
                docs::GRAMMAR_SHEET.to_owned(),
            ),
            Section::new(
                "tools",
                Slot::System,
                None,
                "* Begin every response with a PLAN statement that says what you will do next."
                    .to_owned(),
            ),
            Section::new(
                "schemes",
                Slot::System,
                Some("## Plurnk System Schemes"),
                schemes.teach(),
            ),
        ];
        if let Some(p) = &cfg.system_policy {
            system.push(Section::new(
                "system-policy",
                Slot::System,
                Some("## Plurnk System Policy"),
                p.clone(),
            ));
        }
        if let Some(root) = &session.project_root {
            if let Ok(p) = std::fs::read_to_string(std::path::Path::new(root).join("AGENTS.md")) {
                system.push(Section::new(
                    "project-policy",
                    Slot::System,
                    Some("## Project Policy"),
                    p,
                ));
            }
        }
        let requirements = Section::new(
            "requirements",
            Slot::User,
            Some("## Plurnk System Requirements"),
            cfg.requirements.clone(),
        );
        let max_turns = lp.max_turns.unwrap_or(cfg.max_turns as i64);
        let rendered = log.iter().map(RenderedRow::of).collect();
        // Deltas start at this run's last row (a fresh run starts now, not at history).
        let delta_seen = match log.last() {
            Some(r) => r.id,
            None => store_call(&sys, store, &StoreRequest::MaxRowId).await?,
        };
        let me = crate::schemes::run::Me {
            run_id: lp.run_id,
            loop_id: lp.id,
            flags: lp.flags.clone(),
            max_active_runs: cfg.max_active_runs,
            asked: Default::default(),
        };
        Ok(LoopRunner {
            rendered,
            prompts: vec![lp.prompt.clone()],
            sys,
            store,
            llm,
            rails: LoopRails::new(cfg.rails),
            cfg,
            lp,
            schemes,
            grammar,
            log,
            system,
            requirements,
            prompts_seen: 1,
            notices: Vec::new(),
            turn_seq: 0,
            max_turns,
            devices,
            cur_turn: None,
            pumps,
            streams: StreamTable::new(),
            watched: Vec::new(),
            me,
            delta_seen,
        })
    }

    /// Runs turns until the loop has a terminal status (written with its last turn).
    pub async fn run(mut self) -> Result<u16, RunnerError> {
        loop {
            if self.turn_seq >= self.max_turns {
                let _: LoopRow = store_call(
                    &self.sys,
                    self.store,
                    &StoreRequest::SetStatus {
                        loop_id: self.lp.id,
                        status: status::MAX_TURNS,
                        message: Some("max_turns".into()),
                    },
                )
                .await?;
                return Ok(status::MAX_TURNS);
            }
            if let Some(s) = self.turn().await? {
                return Ok(s);
            }
        }
    }

    fn errors_section(&mut self, pending: &[LogRow]) -> String {
        let mut s = String::new();
        let prev = self.turn_seq - 1;
        let recent = self
            .log
            .iter()
            .filter(|r| r.loop_id == self.lp.id && r.turn_seq == prev)
            .chain(pending);
        for r in recent.filter(|r| r.status >= 400) {
            let _ = writeln!(s, "{} {}", r.status, r.path());
        }
        for n in self.notices.drain(..) {
            let _ = writeln!(s, "notice: {n}");
        }
        s
    }

    fn build(&self, pending: &[LogRow], errors: &str) -> Packet {
        packet::build(&PacketInput {
            system: &self.system,
            requirements: &self.requirements,
            prompts: &self.prompts,
            errors,
            log: &self.log,
            rendered: Some(&self.rendered),
            pending,
            ceiling: self.cfg.prompt_ceiling(),
        })
    }

    async fn generate(&mut self, packet: &Packet) -> Result<ChatReply, String> {
        let req = ChatRequest {
            messages: packet.messages(),
            grammar: self.grammar.clone(),
            max_tokens: Some(self.cfg.max_output_tokens),
            temperature: self.cfg.temperature,
            model: self.cfg.model.clone(),
            ..ChatRequest::default()
        };
        let Some(llm) = self.llm else {
            return Err("this loop holds no llm device".into());
        };
        let mut v = Some(req.to_value());
        let mut last = String::new();
        for attempt in 0..=self.cfg.provider_retries {
            // The request is only copied when a retry may need it again.
            let this = if attempt == self.cfg.provider_retries {
                v.take().unwrap_or_default()
            } else {
                v.clone().unwrap_or_default()
            };
            match self.sys.read(llm, this).await {
                Ok(out) => {
                    return ChatReply::from_value(out).map_err(|e| format!("provider reply: {e}"))
                }
                Err(e) => {
                    last = e.to_string();
                    if attempt < self.cfg.provider_retries {
                        self.notices
                            .push(format!("provider failure, retried: {last}"));
                    }
                }
            }
        }
        Err(last)
    }

    /// One turn; `Some(status)` when it ended the loop.
    async fn turn(&mut self) -> Result<Option<u16>, RunnerError> {
        self.turn_seq += 1;
        let now = self.sys.now() as i64;
        let lp = self.lp.clone();
        self.cur_turn = None;
        let mut rows = TurnRows {
            lp: &lp,
            turn_seq: self.turn_seq,
            at: now,
            rows: Vec::new(),
            committed: 0,
        };
        let sys = self.sys.clone();
        let mut world = TurnWorld::new(&sys, self.store);
        let mut folds: Vec<(i64, bool)> = Vec::new();
        let mut turn_errors = 0u32;

        // Turn 1: foist the operator docs (first model loop of the run: no prompt row yet —
        // client loops write none), the prompt, the catalog.
        if self.turn_seq == 1 {
            let prompted = self.log.iter().any(|r| {
                r.op == RowOp::Op(Op::Edit)
                    && r.target.as_ref().is_some_and(|t| {
                        t.scheme.as_deref() == Some("plurnk") && t.pathname.starts_with("/prompt/")
                    })
            });
            if !prompted {
                for (alias, _) in &self.cfg.operator_docs {
                    let st = foist(
                        Op::Read,
                        url_target("plurnk", &format!("/{alias}.md")),
                        None,
                    );
                    self.dispatch_into(&mut world, &mut rows, &mut folds, Origin::Plurnk, &st)
                        .await;
                }
            }
            let path = format!("/prompt/{}/1", self.lp.sequence);
            let key = entry_key("plurnk", &path);
            world.put(
                &key,
                channel("body", self.lp.prompt.clone(), "text/markdown"),
                None,
            );
            let mut r = rows.new_row(Origin::Plurnk, RowOp::Op(Op::Edit));
            r.target = Some(RowTarget {
                scheme: Some("plurnk".into()),
                hostname: None,
                pathname: path,
                fragment: None,
            });
            r.status = 201;
            r.tx = Some(self.lp.prompt.clone());
            r.rx = Some(self.lp.prompt.clone());
            r.expanded = false;
            rows.push(r);
            for scheme in ["known", "unknown"] {
                if self.schemes.get(scheme).is_some() {
                    let st = foist(
                        Op::Find,
                        url_target(scheme, "/**"),
                        Some(Body::Matcher(crate::grammar::matcher::classify(""))),
                    );
                    self.dispatch_into(&mut world, &mut rows, &mut folds, Origin::Plurnk, &st)
                        .await;
                }
            }
        }

        // Streams: wait a breath for last turn's commands, then show what they wrote.
        self.stream_rows(&mut world, &mut rows).await;

        // One store read for what arrived since the last turn: the siblings' edits of shared
        // entries (env deltas, folded) and the prompts injected into this loop.
        let (injected, deltas, next): PreTurn = store_call(
            &self.sys,
            self.store,
            &StoreRequest::PreTurn {
                loop_seq: self.lp.sequence,
                after: self.delta_seen,
            },
        )
        .await?;
        self.delta_rows(&mut rows, deltas, next);
        for (n, text) in injected {
            if n <= self.prompts_seen {
                continue;
            }
            self.prompts_seen = n;
            self.prompts.push(text.clone());
            let mut r = rows.new_row(Origin::Client, RowOp::Op(Op::Edit));
            r.target = Some(RowTarget {
                scheme: Some("plurnk".into()),
                hostname: None,
                pathname: format!("/prompt/{}/{n}", self.lp.sequence),
                fragment: None,
            });
            r.status = 201;
            r.tx = Some(text.clone());
            r.rx = Some(text);
            r.expanded = false;
            rows.push(r);
        }

        // The packet, and the grinder on real overflow.
        let errors = self.errors_section(&rows.rows);
        let mut packet = self.build(&rows.rows, &errors);
        let ceiling = self.cfg.prompt_ceiling();
        if packet.tokens > ceiling {
            let newest = self.log.iter().map(|r| (r.loop_seq, r.turn_seq)).max();
            for (r, shown) in self.log.iter_mut().zip(self.rendered.iter_mut()) {
                if Some((r.loop_seq, r.turn_seq)) == newest && r.expanded && r.op != RowOp::Error {
                    r.expanded = false;
                    *shown = RenderedRow::of(r);
                    folds.push((r.id, false));
                }
            }
            for r in rows.rows.iter_mut().filter(|r| r.op != RowOp::Error) {
                r.expanded = false;
            }
            rows.error(Origin::Plurnk, "rail", 413, "413 Budget Overflow".into());
            // Turn 1 overflow is the environment, never a strike.
            if self.turn_seq > 1 {
                turn_errors += 1;
            }
            let errors = self.errors_section(&rows.rows);
            packet = self.build(&rows.rows, &errors);
            if packet.tokens > ceiling {
                let turn = self.turn_row(now, status::BUDGET, &packet, None, None);
                let writes = world.into_writes();
                self.commit(
                    turn,
                    rows.rows,
                    folds,
                    writes,
                    Some((status::BUDGET, Some("budget_overflow".into()))),
                )
                .await?;
                return Ok(Some(status::BUDGET));
            }
        }

        // Generate.
        let reply = match self.generate(&packet).await {
            Ok(r) => r,
            Err(cause) => {
                rows.error(
                    Origin::Plurnk,
                    "provider",
                    500,
                    format!("500 provider: {cause}"),
                );
                let turn = self.turn_row(now, status::FAILED, &packet, None, None);
                let writes = world.into_writes();
                self.commit(
                    turn,
                    rows.rows,
                    folds,
                    writes,
                    Some((status::FAILED, Some(format!("provider: {cause}")))),
                )
                .await?;
                return Ok(Some(status::FAILED));
            }
        };

        // Parse; errors become rows.
        let parsed = parse_turn(&reply.content);
        let statements: Vec<Statement> = parsed.result.statements().cloned().collect();
        for item in &parsed.result.items {
            if let Item::Error { error } = item {
                if error.severity == crate::grammar::Severity::Error {
                    rows.parse_error(Origin::Model, error);
                }
            }
        }
        if let Some(t) = &parsed.result.unparsed_tail {
            rows.unparsed_tail(Origin::Model, t);
        }

        // The terminal SEND and the steers.
        let terminal = statements
            .last()
            .filter(|s| s.op == Op::Send && s.target.is_none())
            .and_then(|s| s.signal_int());
        let mut code = terminal;
        if let Some(c) = code {
            if !matches!(c, 102 | 200 | 499) {
                rows.error(
                    Origin::Plurnk,
                    "rail",
                    400,
                    format!("400 SEND[{c}] is not a loop disposition (102, 200 or 499)"),
                );
                turn_errors += 1;
                code = Some(102);
            }
        }
        let retrieval = statements
            .iter()
            .any(|s| matches!(s.op, Op::Read | Op::Find));
        if code == Some(200) && retrieval {
            rows.error(
                Origin::Plurnk,
                "rail",
                409,
                "409 Premature Termination".into(),
            );
            turn_errors += 1;
            code = Some(102);
        }
        if is_idle_turn(&statements) {
            rows.error(Origin::Plurnk, "rail", 409, "409 Idle Turn".into());
            turn_errors += 1;
        }
        let turn_status = match code {
            Some(c) if c >= 200 => c as u16,
            _ if statements.is_empty() => crate::rails::NO_OPS_STATUS,
            _ => status::RUNNING,
        };

        // Dispatch in order under the command cap.
        let cap = cap_commands(&statements, self.cfg.rails.max_commands);
        if cap.dropped > 0 {
            rows.error(
                Origin::Plurnk,
                "rail",
                429,
                format!("429 Max Commands Exceeded ({} dropped)", cap.dropped),
            );
        }
        let turn_row = self.turn_row(
            now,
            turn_status,
            &packet,
            Some(&reply),
            Some(&reply.content),
        );
        let mut statuses = Vec::with_capacity(cap.dispatch.len());
        let last = statements.len().checked_sub(1);
        for (i, s) in statements.iter().enumerate() {
            if !cap.dispatch.iter().any(|d| std::ptr::eq(*d, s)) {
                continue;
            }
            let is_terminal = Some(i) == last && terminal.is_some();
            if s.op == Op::Plan || is_terminal {
                let mut r = rows.new_row(Origin::Model, RowOp::Op(s.op));
                r.suffix = s.suffix.clone();
                r.signal = s
                    .signal
                    .as_ref()
                    .and_then(|x| serde_json::to_string(x).ok());
                r.status = if s.op == Op::Send {
                    s.signal_int().map_or(102, |c| c.clamp(100, 599) as u16)
                } else {
                    200
                };
                r.rx = Some(s.body_raw().to_owned()).filter(|b| !b.is_empty());
                r.tx = r.rx.clone();
                statuses.push(r.status);
                rows.push(r);
                continue;
            }
            let before = rows.next_ordinal();
            let proposals = self
                .dispatch_into(&mut world, &mut rows, &mut folds, Origin::Model, s)
                .await;
            for (at, effect) in proposals {
                self.park(&mut rows, &mut world, &mut folds, &turn_row, at, effect)
                    .await?;
            }
            // A parked statement's rows were committed with its segment; their final
            // statuses are in the log now.
            let first = before.saturating_sub(rows.committed);
            let parked = rows.committed.saturating_sub(before);
            if parked > 0 {
                let n = self.log.len();
                statuses.extend(self.log[n - parked..].iter().map(|r| r.status));
            }
            statuses.extend(rows.rows[first..].iter().map(|r| r.status));
        }

        // The model's verbatim emission, folded.
        let mut m = rows.new_row(Origin::Model, RowOp::Model);
        m.rx = Some(reply.content.clone());
        m.mimetype_rx = Some("text/plain".into());
        m.expanded = false;
        rows.push(m);

        // Rails: strikes, cycles; the loop's disposition.
        let verdict = self.rails.observe(&statements, &statuses, turn_errors);
        let loop_status = if let Some(c) = code.filter(|c| *c >= 200) {
            let body = statements.last().map(|s| s.body_raw().to_owned());
            Some((c as u16, body))
        } else if let StreakDecision::Abandon { status: s, .. } = verdict.decision {
            let why = if s == crate::rails::LOOP_DETECTED_STATUS {
                "loop_detected"
            } else {
                "strike_threshold"
            };
            Some((s, Some(why.to_owned())))
        } else if self.turn_seq >= self.max_turns {
            Some((status::MAX_TURNS, Some("max_turns".to_owned())))
        } else {
            None
        };
        let writes = world.into_writes();
        let end = loop_status.as_ref().map(|(s, _)| *s);
        self.commit(turn_row, rows.rows, folds, writes, loop_status)
            .await?;
        Ok(end)
    }

    async fn dispatch_into(
        &self,
        world: &mut TurnWorld<'_, S>,
        rows: &mut TurnRows<'_>,
        folds: &mut Vec<(i64, bool)>,
        origin: Origin,
        s: &Statement,
    ) -> Vec<(usize, Effect)> {
        let mut ctx = DispatchCtx {
            world,
            schemes: &self.schemes,
            log: &self.log,
            origin,
            devices: &self.devices,
            streams: &self.streams,
            me: &self.me,
        };
        let mut proposals = Vec::new();
        for mut a in dispatch(&mut ctx, s).await {
            folds.extend(a.folds.iter().copied());
            if a.writes_row {
                let effect = a.proposal.take();
                let at = rows.next_ordinal();
                rows.action(origin, s, a);
                if let Some(e) = effect {
                    proposals.push((at, e));
                }
            }
        }
        proposals
    }

    /// Parks the loop on a proposal (PLURNK.md §3.6): commits the turn up to and including
    /// the proposed row (loop status 202), tells the run, waits for the decision (or the
    /// timeout), applies an accept through the device, records the resolution on the row
    /// and resumes (102). `at` is the row's ordinal in the turn.
    async fn park(
        &mut self,
        rows: &mut TurnRows<'_>,
        world: &mut TurnWorld<'_, S>,
        folds: &mut Vec<(i64, bool)>,
        turn: &TurnRow,
        at: usize,
        effect: Effect,
    ) -> Result<(), RunnerError> {
        let Some(i) = at.checked_sub(rows.committed) else {
            return Ok(());
        };
        if let Some(r) = rows.rows.get_mut(i) {
            r.state = Some(RowState::Proposed);
        }
        let stale = effect.stale_clobber_risk(&self.sys, self.devices.fs).await;
        let segment = std::mem::take(&mut rows.rows);
        rows.committed += segment.len();
        let committed = self
            .commit(
                turn.clone(),
                segment,
                std::mem::take(folds),
                world.take_writes(),
                Some((status::PARKED, None)),
            )
            .await?;
        self.cur_turn = Some(committed.turn_id);
        let Some(&row_id) = committed.row_ids.get(i) else {
            return Ok(());
        };
        self.settle(world, row_id, &effect, stale, turn.sequence, at)
            .await?;
        let _: LoopRow = store_call(
            &self.sys,
            self.store,
            &StoreRequest::SetStatus {
                loop_id: self.lp.id,
                status: status::RUNNING,
                message: None,
            },
        )
        .await?;
        Ok(())
    }

    /// Waits for the decision on the committed proposed row `row_id` (or the timeout),
    /// applies an accept through the device and records the resolution on the row (in the
    /// store and in this loop's log). `ordinal` is the row's ordinal in turn `turn_seq`.
    async fn settle(
        &mut self,
        world: &mut TurnWorld<'_, S>,
        row_id: RowId,
        effect: &Effect,
        stale: bool,
        turn_seq: i64,
        ordinal: usize,
    ) -> Result<(), RunnerError> {
        let resolution = match self.await_decision(row_id, stale).await {
            None => RowResolution {
                state: RowState::Cancelled,
                status: 499,
                outcome: Some("timeout".into()),
                rx: None,
            },
            Some(Resolution {
                decision: Decision::Accept,
                outcome,
                ..
            }) => match self.apply(world, effect, turn_seq, ordinal).await {
                Ok((status, rx)) => RowResolution {
                    state: RowState::Resolved,
                    status,
                    outcome,
                    rx: Some(rx),
                },
                Err((status, outcome, message)) => RowResolution {
                    state: RowState::Failed,
                    status,
                    outcome: Some(outcome),
                    rx: Some(message),
                },
            },
            Some(Resolution {
                decision: Decision::Reject,
                outcome,
                ..
            }) => RowResolution {
                state: RowState::Failed,
                status: 400,
                outcome: outcome.or_else(|| Some("rejected".into())),
                rx: None,
            },
            Some(Resolution {
                decision: Decision::Cancel,
                outcome,
                ..
            }) => RowResolution {
                state: RowState::Cancelled,
                status: 499,
                outcome: outcome.or_else(|| Some("loop_aborted".into())),
                rx: None,
            },
        };
        let row: LogRow = store_call(
            &self.sys,
            self.store,
            &StoreRequest::Resolve { row_id, resolution },
        )
        .await?;
        if let Ok(k) = self.log.binary_search_by_key(&row_id, |r| r.id) {
            self.rendered[k] = RenderedRow::of(&row);
            self.log[k] = row;
        }
        Ok(())
    }

    /// Applies an accepted effect: `(status, rx)`, or the failure that downgrades the accept.
    async fn apply(
        &mut self,
        world: &mut TurnWorld<'_, S>,
        effect: &Effect,
        turn_seq: i64,
        ordinal: usize,
    ) -> Result<(u16, String), (u16, String, String)> {
        let e = match effect {
            Effect::File(f) => {
                return file::apply(world, self.devices.fs, f)
                    .await
                    .map(|rx| (200, rx))
            }
            Effect::Copy(t) => {
                return copy::apply(world, self.devices.fs, t)
                    .await
                    .map(|rx| (200, rx))
            }
            Effect::Exec(e) => e,
        };
        let (Some(exec), Some(pumps)) = (self.devices.exec, self.pumps.clone()) else {
            return Err((
                403,
                "no_exec_device".into(),
                "this loop holds no exec device".into(),
            ));
        };
        let path = format!("/{}/{}/{}", self.lp.sequence, turn_seq, ordinal + 1);
        let r = exec_call(
            &self.sys,
            exec,
            &ExecRequest::Start {
                runtime: &e.runtime,
                cwd: &e.cwd,
                command: &e.command,
                timeout_ms: e.timeout_ms,
            },
        )
        .await;
        let (Some(id), Some(token)) = (r.id.filter(|_| r.status == 102), r.token.clone()) else {
            let outcome = r.error.clone().unwrap_or_else(|| "exec_failed".into());
            return Err((r.status.max(400), outcome, r.failure()));
        };
        let pump = self
            .start_pump(&pumps, token, stream_key(&e.runtime, &path))
            .await;
        match pump {
            Ok(pid) => {
                self.streams.insert(path.clone(), id);
                self.watched.push(Watched {
                    runtime: e.runtime.clone(),
                    path: path.clone(),
                    pump: pid,
                    started_turn: turn_seq,
                    shown: [0, 0],
                    closed: None,
                });
                Ok((102, format!("running: {}://{path}", e.runtime)))
            }
            Err(why) => {
                let _ = exec_call(&self.sys, exec, &ExecRequest::Stop { id }).await;
                Err((500, "pump_failed".into(), why))
            }
        }
    }

    async fn start_pump(
        &self,
        pumps: &Pumps,
        token: String,
        key: crate::store::EntryKey,
    ) -> Result<agentos_abi::Pid, String> {
        use agentos_abi::sys::Attenuation;
        use agentos_abi::{Body, SendOpts, SpawnOpts};
        let child = self
            .sys
            .spawn(super::stream::pump_image(), SpawnOpts::default())
            .await
            .map_err(|e| e.to_string())?;
        let exec = self
            .sys
            .attenuate(pumps.exec_device, Attenuation::default())
            .map_err(|e| e.to_string())?;
        let store = self
            .sys
            .attenuate(pumps.store_device, Attenuation::default())
            .map_err(|e| e.to_string())?;
        let notify = self.sys.self_cap();
        let start = super::stream::PumpStart {
            exec,
            store,
            notify,
            token,
            key,
        };
        self.sys
            .send(
                child.cap,
                Body::local(start),
                SendOpts {
                    caps: vec![exec, store, notify],
                    ..SendOpts::default()
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(child.pid)
    }

    /// Before a turn: waits up to `exec_wait_ms` for the streams the previous turn started
    /// (plurnk's post-EXEC breath), takes the close notes that arrived, and adds a folded
    /// READ row per channel that grew — opened once its stream closed.
    async fn stream_rows(&mut self, world: &mut TurnWorld<'_, S>, rows: &mut TurnRows<'_>) {
        use agentos_abi::{Body, Select};
        if self.watched.is_empty() {
            return;
        }
        let prev = self.turn_seq - 1;
        let deadline = self.sys.now().saturating_add(self.cfg.exec_wait_ms);
        while self
            .watched
            .iter()
            .any(|w| w.closed.is_none() && w.started_turn == prev)
            && self.cfg.exec_wait_ms > 0
        {
            let pumps: Vec<agentos_abi::Pid> = self.watched.iter().map(|w| w.pump).collect();
            let got = self
                .sys
                .recv_where(
                    move |m| {
                        pumps.contains(&m.from)
                            && matches!(&m.body, Body::Local(b)
                                if b.downcast_ref::<super::stream::StreamClosed>().is_some())
                    },
                    Some(deadline),
                )
                .await;
            match got.and_then(|m| m.body.downcast::<super::stream::StreamClosed>().ok()) {
                Some(c) => self.note_closed(c),
                None => break,
            }
        }
        for i in 0..self.watched.len() {
            let pump = self.watched[i].pump;
            while let Some(m) = self.sys.try_recv(Select::From(pump)) {
                if let Ok(c) = m.body.downcast::<super::stream::StreamClosed>() {
                    self.note_closed(c);
                }
            }
        }
        let mut done = Vec::new();
        for (i, w) in self.watched.iter_mut().enumerate() {
            let key = stream_key(&w.runtime, &w.path);
            let Ok(Some(e)) = world.entry(&key).await else {
                continue;
            };
            for (k, name) in ["stdout", "stderr"].into_iter().enumerate() {
                let Some(c) = e.channel(name) else { continue };
                let grew = c.content.len() != w.shown[k];
                let show = grew || (w.closed.is_some() && k == 0);
                if !show {
                    continue;
                }
                w.shown[k] = c.content.len();
                let mut r = rows.new_row(Origin::Plurnk, RowOp::Op(Op::Read));
                r.target = Some(RowTarget {
                    scheme: Some(w.runtime.clone()),
                    hostname: None,
                    pathname: w.path.clone(),
                    fragment: Some(name.to_owned()),
                });
                let mut rx = c.content.clone();
                if let (Some((_, summary)), 0) = (&w.closed, k) {
                    if !rx.is_empty() && !rx.ends_with('\n') {
                        rx.push('\n');
                    }
                    rx.push_str(&format!("[{summary}]"));
                }
                r.status = w.closed.as_ref().map_or(102, |(s, _)| *s);
                r.rx = Some(rx);
                r.mimetype_rx = Some("text/plain".into());
                r.expanded = w.closed.is_some();
                rows.push(r);
            }
            if w.closed.is_some() {
                done.push(i);
            }
        }
        for i in done.into_iter().rev() {
            let w = self.watched.remove(i);
            self.streams.remove(&w.path);
        }
    }

    /// Env deltas (PLURNK.md §3.7): other runs' EDITs of shared entries since this run's
    /// last look become folded EDIT rows with their `source`. They never wake a run: they
    /// are only pulled here, before a turn the run takes anyway.
    fn delta_rows(&mut self, rows: &mut TurnRows<'_>, deltas: Vec<(String, LogRow)>, next: RowId) {
        self.delta_seen = self.delta_seen.max(next);
        for (name, d) in deltas {
            let mut r = rows.new_row(Origin::Plurnk, RowOp::Op(Op::Edit));
            r.source = Some(format!("run://{name}"));
            r.target = d.target;
            r.tx = d.tx;
            r.mimetype_tx = d.mimetype_tx;
            r.rx = d.rx;
            r.mimetype_rx = d.mimetype_rx;
            r.status = d.status;
            r.expanded = false;
            rows.push(r);
        }
    }

    fn note_closed(&mut self, c: super::stream::StreamClosed) {
        if let Some(w) = self.watched.iter_mut().find(|w| w.path == c.path) {
            w.closed = Some((c.status, c.summary));
        }
    }

    /// Tells the run about the proposal and waits for its resolution; `None` at the
    /// proposal timeout.
    async fn await_decision(&self, row_id: RowId, stale: bool) -> Option<Resolution> {
        use agentos_abi::{Body, SendOpts};
        let note = Proposed {
            loop_id: self.lp.id,
            row_id,
            stale_clobber_risk: stale,
        };
        if let Some(run) = self.sys.lookup(&format!("run:{}", self.lp.run_id)).await {
            let _ = self
                .sys
                .send(run, Body::local(note), SendOpts::default())
                .await;
        }
        let deadline = self.sys.now().saturating_add(self.cfg.proposal_timeout_ms);
        let m = self
            .sys
            .recv_where(
                move |m| {
                    matches!(&m.body, Body::Local(b)
                        if b.downcast_ref::<Resolution>().is_some_and(|r| r.row_id == row_id))
                },
                Some(deadline),
            )
            .await?;
        m.body.downcast::<Resolution>().ok()
    }

    fn turn_row(
        &self,
        now: i64,
        status: u16,
        packet: &Packet,
        reply: Option<&ChatReply>,
        content: Option<&str>,
    ) -> TurnRow {
        let usage = reply.and_then(|r| r.usage).unwrap_or_default();
        let model = reply.map(|r| r.model.clone()).filter(|m| !m.is_empty());
        let cost_pico = reply.map_or(0, |_| {
            let m = model.as_deref().or(self.cfg.model.as_deref()).unwrap_or("");
            agentos_drivers::llm::PriceTable::common().usd_micros(m, &usage) as i64 * 1_000_000
        });
        let mut summary = packet.summary();
        if let Some(c) = content {
            summary["assistant"] = serde_json::json!({
                "content": c,
                "tokens": super::count_tokens(c),
            });
        }
        TurnRow {
            id: 0,
            loop_id: self.lp.id,
            sequence: self.turn_seq,
            timestamp: now,
            status,
            usage: TurnUsage {
                prompt: usage.prompt_tokens as i64,
                completion: usage.completion_tokens as i64,
                cached: usage.cached_tokens as i64,
                cost_pico,
                context_size: Some(self.cfg.context_size as i64),
            },
            packet: summary.to_string(),
            finish_reason: reply.map(|r| {
                serde_json::to_value(r.finish_reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            }),
            model,
        }
    }

    async fn commit(
        &mut self,
        turn: TurnRow,
        rows: Vec<LogRow>,
        folds: Vec<(i64, bool)>,
        entries: Vec<crate::store::EntryWrite>,
        loop_status: Option<(u16, Option<String>)>,
    ) -> Result<TurnCommitted, RunnerError> {
        let commit = TurnCommit {
            turn,
            turn_id: self.cur_turn,
            rows,
            folds,
            entries,
            loop_status,
        };
        let req = StoreRequest::Commit(commit);
        let committed: TurnCommitted = store_call(&self.sys, self.store, &req).await?;
        let StoreRequest::Commit(TurnCommit {
            mut rows, folds, ..
        }) = req
        else {
            return Ok(committed);
        };
        for (r, id) in rows.iter_mut().zip(&committed.row_ids) {
            r.id = *id;
            r.turn_id = committed.turn_id;
        }
        for (id, expanded) in folds {
            // Row ids increase with the log, so a fold finds its row by binary search.
            if let Ok(i) = self.log.binary_search_by_key(&id, |r| r.id) {
                if self.log[i].expanded != expanded {
                    self.log[i].expanded = expanded;
                    self.rendered[i] = RenderedRow::of(&self.log[i]);
                }
            }
        }
        self.rendered.extend(rows.iter().map(RenderedRow::of));
        self.log.extend(rows);
        Ok(committed)
    }
}
