//! Dispatch: one statement → one or more action results (PLURNK.md §3.4).
//!
//! Order of checks: the address rules, the loop's active schemes (a dropped or absent
//! scheme answers 403), the writer check for mutating ops (403), then the route: COPY and
//! MOVE are engine-orchestrated ([`super::copy`]), log targets go to [`super::log`], entry
//! schemes to [`super::entry`]; an op a scheme does not implement answers 501 (soft).
//!
//! **Invariants:** every dispatched statement yields at least one [`Action`] (one log row)
//! unless it is a successful OPEN/FOLD (a render directive); a store failure is a 500
//! action, never a lost statement.
//!
//! **API boundary:** [`dispatch`], [`DispatchCtx`], [`Action`].

use agentos_abi::Syscalls;

use super::world::TurnWorld;
use super::{Address, SchemeRegistry};
use crate::grammar::{Op, Statement};
use crate::store::{LogRow, Origin, RowId, RowTarget};

/// What one action came back with: the row's result half.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Action {
    /// Status (PLURNK.md §1.6).
    pub status: u16,
    /// The result text shown when the row is open.
    pub rx: Option<String>,
    /// Mimetype of `rx`.
    pub mimetype_rx: Option<String>,
    /// The target this row points at (fan-out rows point at each match).
    pub target: Option<RowTarget>,
    /// Fold-state changes of earlier rows (OPEN/FOLD).
    pub folds: Vec<(RowId, bool)>,
    /// Whether this action writes a row (a successful OPEN/FOLD does not).
    pub writes_row: bool,
    /// Whether the row lands folded.
    pub folded: bool,
    /// A side effect waiting for a decision: the row is a 202 proposal (PLURNK.md §3.6)
    /// and the loop parks until it is resolved.
    pub proposal: Option<super::effect::Effect>,
}

impl Action {
    /// A 500 row for a failure of the store or the turn's world (not the model's doing).
    pub(crate) fn internal(e: impl std::fmt::Display) -> Action {
        Action::status(500, format!("500 {e}"))
    }

    /// The row of a content error: its status and the reason.
    pub(crate) fn content(e: crate::content::ContentError) -> Action {
        Action::status(e.status(), format!("{} {e}", e.status()))
    }

    /// A row with `status` and a short reason as its result.
    pub fn status(status: u16, rx: impl Into<String>) -> Action {
        Action {
            status,
            rx: Some(rx.into()),
            mimetype_rx: Some("text/plain".into()),
            writes_row: true,
            ..Action::default()
        }
    }

    /// A 200 row with `rx` as markdown.
    pub fn ok(rx: impl Into<String>) -> Action {
        Action {
            status: 200,
            rx: Some(rx.into()),
            mimetype_rx: Some("text/markdown".into()),
            writes_row: true,
            ..Action::default()
        }
    }

    /// Points the row at `target`.
    pub fn at(mut self, target: RowTarget) -> Action {
        self.target = Some(target);
        self
    }
}

/// What dispatch needs besides the statement.
pub struct DispatchCtx<'w, 'a, S: Syscalls> {
    /// The turn's world.
    pub world: &'w mut TurnWorld<'a, S>,
    /// The loop's active schemes.
    pub schemes: &'w SchemeRegistry,
    /// The run's log so far (for log:// targets).
    pub log: &'w [LogRow],
    /// Who is dispatching.
    pub origin: Origin,
    /// The loop's device handles beyond the store.
    pub devices: &'w Devices,
    /// The loop's running streams.
    pub streams: &'w super::exec::StreamTable,
    /// Who is dispatching (for run://).
    pub me: &'w super::run::Me,
}

/// The device handles a loop holds besides the store and the LLM: what its flags granted
/// (DESIGN.md "Flags are capabilities"). An absent handle makes its scheme answer 403.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Devices {
    /// The project root (absent: headless session).
    pub fs: Option<super::file::FsHandle>,
    /// Subprocesses (absent: ask mode or a headless session).
    pub exec: Option<agentos_abi::CapRef>,
}

/// Whether `op` mutates its target (the writer check applies).
fn mutates(op: Op) -> bool {
    matches!(
        op,
        Op::Edit | Op::Copy | Op::Move | Op::Exec | Op::Kill | Op::Send
    )
}

/// Dispatches one statement. PLAN and the broadcast SEND are the loop's business and never
/// reach here.
pub async fn dispatch<S: Syscalls>(ctx: &mut DispatchCtx<'_, '_, S>, s: &Statement) -> Vec<Action> {
    match s.op {
        Op::Plan => return vec![Action::ok("")],
        Op::Exec => return vec![super::exec::exec(ctx, s)],
        Op::Work | Op::Fork => {
            return vec![Action::status(
                501,
                "501 run:// workers are not available in this engine build",
            )]
        }
        _ => {}
    }
    let Some(target) = &s.target else {
        return vec![Action::status(400, "400 missing target")];
    };
    let addr = Address::resolve(target);
    let scheme = addr.scheme().to_owned();
    match &addr {
        Address::Regex { pattern, flags } if matches!(s.op, Op::Find | Op::Read) => {
            return super::entry::regex_scope(ctx, s, pattern, flags).await;
        }
        Address::File { path } if !matches!(s.op, Op::Copy | Op::Move) => {
            return match ctx.schemes.get("file") {
                Some(m) => super::file::dispatch(ctx, s, path, m).await,
                None => vec![Action::status(
                    403,
                    "403 file: this loop holds no fs device (headless session)",
                )],
            };
        }
        Address::File { .. } => {
            return vec![super::copy::copy_or_move(ctx, s, &addr).await];
        }
        Address::Regex { .. } => {
            return vec![Action::status(
                400,
                format!("400 {} takes one target, not a regex scope", s.op),
            )];
        }
        Address::Run { name, path } => {
            if ctx.schemes.get("run").is_none() {
                return vec![Action::status(
                    403,
                    "403 run:// is not available to this loop",
                )];
            }
            return super::run::dispatch(ctx, s, name, path.as_deref()).await;
        }
        Address::Stream {
            runtime,
            path,
            channel,
        } => {
            return super::exec::dispatch(ctx, s, runtime, path, channel.as_deref()).await;
        }
        Address::Unsupported { scheme } => {
            return vec![Action::status(
                501,
                format!("501 scheme {scheme}:// is not implemented"),
            )];
        }
        _ => {}
    }
    let Some(manifest) = ctx.schemes.get(&scheme) else {
        return vec![Action::status(
            403,
            format!("403 {scheme}:// is not available to this loop"),
        )];
    };
    // COPY/MOVE check their destination's writers themselves; KILL on the log is 405.
    let gate = mutates(s.op) && !matches!(s.op, Op::Copy | Op::Move);
    if gate && !(s.op == Op::Kill && scheme == "log") && !manifest.writable(ctx.origin) {
        return vec![Action::status(
            403,
            format!(
                "403 {scheme}:// is not writable by the {}",
                ctx.origin.as_str()
            ),
        )];
    }
    match s.op {
        Op::Copy | Op::Move => vec![super::copy::copy_or_move(ctx, s, &addr).await],
        _ if scheme == "log" => super::log::dispatch(ctx, s, &addr),
        _ => super::entry::dispatch(ctx, s, &addr, manifest).await,
    }
}
