//! The run scheme (PLURNK.md §2.3 `run://`, mid-E2 forms; §3.9 fork): sibling runs as
//! actors, and per-run scratch.
//!
//! - `EDIT(run://name):task` spawns a fresh run (its parent: this run) with a loop on `task`;
//!   a live run of that name answers 409, the session's active-run cap 508, and so does a
//!   session whose account has no process slot left for it (its `children` quota).
//! - `COPY(run://src):prompt` forks `src` (`self` for this run): a new run whose log is a
//!   deep copy, with a loop on `prompt` (508 as for a spawn).
//! - `SEND(run://name):msg` speaks into it (folded into its loop, or a new loop: it wakes);
//!   404 if there is no such run.
//! - `KILL(run://name)` ends its active loop (499); an idle run answers 200 as well.
//! - `READ(run://name)` collects its deliverable: 425 while it runs, else its last loop's
//!   terminal message.
//! - `run://name/path` is that run's scratch: anyone in the session reads it, only the owner
//!   (`run://self/path`, `run:///path`) writes it (403 otherwise).
//!
//! The loop asks its own run process to act ([`RunRequest`]); the run forwards it to its
//! session's process, which starts the other run's process as a child of its own — so the
//! new run spends from the session's account — and answers ([`RunAnswer`]). A session whose
//! quota leaves no process for the run (its `children` are spent: a fork bomb) answers 508,
//! and the new run's loop ends 508. Spawned loops inherit the spawning loop's flags.
//!
//! **API boundary:** [`dispatch`], [`RunControl`], [`RunRequest`], [`RunAnswer`], [`Me`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use agentos_abi::{Body, SendOpts, Syscalls};

use super::dispatch::{Action, DispatchCtx};
use super::entry::read_entry;
use super::world::{channel, store_call};
use crate::grammar::{Op, Statement};
use crate::store::device::StoreRequest;
use crate::store::{status, EntryKey, LoopId, LoopRow, RowTarget, RunId, RunRow};

/// An action on a run of the same session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunControl {
    /// Start (or wake) the run's process: it has queued loops.
    Wake {
        /// The run.
        run_id: RunId,
    },
    /// Speak into the run.
    Inject {
        /// The run.
        run_id: RunId,
        /// The message.
        prompt: String,
        /// Flags for a loop this queues.
        flags: String,
    },
    /// End the run's active loop (499).
    Cancel {
        /// The run.
        run_id: RunId,
    },
}

/// A loop → its run → its session: act on a run of the session. The run stamps `loop_id`
/// (only its active loop speaks for it); with one, the session answers [`RunAnswer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRequest {
    /// The asking loop (`None`: nobody waits for an answer).
    pub loop_id: Option<LoopId>,
    /// The loop's request number, echoed in the answer.
    pub id: u64,
    /// What to do.
    pub control: RunControl,
}

/// A session → a run → its loop: how a [`RunRequest`] went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAnswer {
    /// The loop that asked.
    pub loop_id: LoopId,
    /// Its request number.
    pub id: u64,
    /// `Some((status, message))` when the session refused: 404 no such run in the session,
    /// 508 its quota leaves the run no process.
    pub refused: Option<(u16, String)>,
}

/// How long a loop waits for its session's answer, in kernel-clock ms.
const ANSWER_TIMEOUT_MS: u64 = 60_000;

/// Who the dispatching loop is, for run:// (its run and loop, its flags, the session's cap).
#[derive(Debug, Clone)]
pub struct Me {
    /// The loop's run.
    pub run_id: RunId,
    /// The loop.
    pub loop_id: LoopId,
    /// The loop's flags as JSON (inherited by the runs it spawns).
    pub flags: String,
    /// Active runs allowed per session (508 beyond).
    pub max_active_runs: usize,
    /// The loop's last request number.
    pub asked: Arc<AtomicU64>,
}

/// Asks the session (through this loop's run) to act and waits for its answer:
/// `Err((status, message))` when it refused or did not answer.
async fn control<S: Syscalls>(sys: &S, me: &Me, c: RunControl) -> Result<(), (u16, String)> {
    let gone = |why: String| (500, format!("500 {why}"));
    let run = sys
        .lookup(&format!("run:{}", me.run_id))
        .await
        .ok_or_else(|| gone("this loop's run process is gone".into()))?;
    let id = me.asked.fetch_add(1, Ordering::Relaxed) + 1;
    let req = RunRequest {
        loop_id: Some(me.loop_id),
        id,
        control: c,
    };
    sys.send(run, Body::local(req), SendOpts::default())
        .await
        .map_err(|e| gone(e.to_string()))?;
    let loop_id = me.loop_id;
    let deadline = sys.now().saturating_add(ANSWER_TIMEOUT_MS);
    let m = sys
        .recv_where(
            move |m| {
                matches!(&m.body, Body::Local(b)
                    if b.downcast_ref::<RunAnswer>()
                        .is_some_and(|a| a.loop_id == loop_id && a.id == id))
            },
            Some(deadline),
        )
        .await
        .ok_or_else(|| gone("the session did not answer".into()))?;
    match m.body.downcast::<RunAnswer>() {
        Ok(RunAnswer {
            refused: Some(r), ..
        }) => Err(r),
        Ok(_) => Ok(()),
        Err(_) => Err(gone("a garbled answer".into())),
    }
}

/// The row of a refused or failed [`control`].
fn refused((status, message): (u16, String)) -> Action {
    Action::status(status, message)
}

fn target(name: &str, path: Option<&str>) -> RowTarget {
    RowTarget {
        scheme: Some("run".into()),
        hostname: Some(name.to_owned()),
        pathname: path.unwrap_or("/").to_owned(),
        fragment: None,
    }
}

type R<T> = Result<T, Action>;

/// The run `name` designates (`self`/`.`: this run); `None` when there is none.
async fn resolve<S: Syscalls>(ctx: &mut DispatchCtx<'_, '_, S>, name: &str) -> R<Option<RunRow>> {
    let sys = ctx.world.sys();
    let store = ctx.world.store();
    if matches!(name, "self" | ".") {
        return store_call(sys, store, &StoreRequest::Run)
            .await
            .map(Some)
            .map_err(Action::internal);
    }
    store_call(
        sys,
        store,
        &StoreRequest::RunNamed {
            name: name.to_owned(),
        },
    )
    .await
    .map_err(Action::internal)
}

/// Dispatches an op on `run://name[/path]`.
pub async fn dispatch<S: Syscalls>(
    ctx: &mut DispatchCtx<'_, '_, S>,
    s: &Statement,
    name: &str,
    path: Option<&str>,
) -> Vec<Action> {
    let r = match path {
        Some(p) => scratch(ctx, s, name, p).await,
        None => actor(ctx, s, name).await,
    };
    vec![r.unwrap_or_else(|a| a)]
}

async fn scratch<S: Syscalls>(
    ctx: &mut DispatchCtx<'_, '_, S>,
    s: &Statement,
    name: &str,
    path: &str,
) -> R<Action> {
    let Some(run) = resolve(ctx, name).await? else {
        return Ok(Action::status(404, format!("404 no run named {name}")));
    };
    let own = run.id == ctx.me.run_id;
    let key = EntryKey::run("run", path);
    let t = target(name, Some(path));
    let manifest = ctx
        .schemes
        .get("run")
        .ok_or_else(|| Action::status(403, "403 run:// is not available to this loop"))?;
    match s.op {
        Op::Read => {
            let e = if own {
                ctx.world.entry(&key).await.map_err(Action::internal)?
            } else {
                store_call(
                    ctx.world.sys(),
                    ctx.world.store(),
                    &StoreRequest::RunEntry {
                        run_id: run.id,
                        key: key.clone(),
                    },
                )
                .await
                .map_err(Action::internal)?
            };
            Ok(match e {
                Some(e) => read_entry(&e, s, None, manifest).at(t),
                None => Action::status(404, format!("404 run://{name}{path} not found")).at(t),
            })
        }
        Op::Edit | Op::Kill if !own => Ok(Action::status(
            403,
            format!("403 run://{name}{path}: only its own run writes a scratch entry"),
        )
        .at(t)),
        Op::Edit => {
            let existing = ctx.world.entry(&key).await.map_err(Action::internal)?;
            let current = existing.as_ref().and_then(|e| e.channel("body"));
            let marks = s.line_marker.as_ref().map(|m| m.marks.as_slice());
            let out = crate::content::apply_edit(
                current.map(|c| c.content.as_str()),
                marks,
                s.body_raw(),
            )
            .map_err(Action::content)?;
            let rx = crate::content::render_span(&out.content, out.span, 2);
            if out.status != 304 {
                ctx.world
                    .put(&key, channel("body", out.content, "text/markdown"), None);
            }
            Ok(Action {
                status: out.status,
                rx: Some(rx),
                mimetype_rx: Some("text/markdown".into()),
                writes_row: true,
                ..Action::default()
            }
            .at(t))
        }
        Op::Kill => Ok(
            match ctx.world.entry(&key).await.map_err(Action::internal)? {
                Some(_) => {
                    ctx.world.delete(&key);
                    Action::ok(format!("deleted run://{name}{path}")).at(t)
                }
                None => Action::status(404, format!("404 run://{name}{path} not found")).at(t),
            },
        ),
        _ => Ok(Action::status(
            501,
            format!("501 run scratch takes READ, EDIT and KILL, not {}", s.op),
        )),
    }
}

async fn loops_of<S: Syscalls>(ctx: &DispatchCtx<'_, '_, S>, run: RunId) -> R<Vec<LoopRow>> {
    store_call(
        ctx.world.sys(),
        ctx.world.store(),
        &StoreRequest::RunLoops { run_id: run },
    )
    .await
    .map_err(Action::internal)
}

/// The 508 a spawn or fork answers when the session already runs its cap of active runs.
async fn at_cap<S: Syscalls>(ctx: &DispatchCtx<'_, '_, S>) -> R<Option<Action>> {
    let active: usize = store_call(
        ctx.world.sys(),
        ctx.world.store(),
        &StoreRequest::ActiveRuns,
    )
    .await
    .map_err(Action::internal)?;
    Ok((active >= ctx.me.max_active_runs).then(|| {
        Action::status(
            508,
            format!(
                "508 the session already has {active} active runs (cap {})",
                ctx.me.max_active_runs
            ),
        )
    }))
}

async fn actor<S: Syscalls>(
    ctx: &mut DispatchCtx<'_, '_, S>,
    s: &Statement,
    name: &str,
) -> R<Action> {
    let t = target(name, None);
    let sys = ctx.world.sys();
    let store = ctx.world.store();
    match s.op {
        Op::Edit => {
            if matches!(name, "self" | ".") {
                return Ok(Action::status(400, "400 EDIT(run://self) names no new run").at(t));
            }
            let task = s.body_raw().trim();
            if task.is_empty() {
                return Ok(Action::status(400, "400 a spawned run needs a task").at(t));
            }
            if let Some(full) = at_cap(ctx).await? {
                return Ok(full.at(t));
            }
            let spawned: Result<(RunRow, LoopRow), _> = store_call(
                sys,
                store,
                &StoreRequest::SpawnRun {
                    name: name.to_owned(),
                    prompt: task.to_owned(),
                    flags: ctx.me.flags.clone(),
                },
            )
            .await;
            let (run, _) = match spawned {
                Ok(x) => x,
                Err(e) if e.0.contains("is live") => {
                    return Ok(Action::status(409, format!("409 run://{name} is live")).at(t))
                }
                Err(e) => return Err(Action::internal(e)),
            };
            if let Err(r) = control(sys, ctx.me, RunControl::Wake { run_id: run.id }).await {
                return Ok(refused(r).at(t));
            }
            Ok(Action::status(201, format!("spawned run://{name}")).at(t))
        }
        Op::Copy => {
            let Some(src) = resolve(ctx, name).await? else {
                return Ok(Action::status(404, format!("404 no run named {name}")).at(t));
            };
            let prompt = s.body_raw().trim();
            if prompt.is_empty() {
                return Ok(Action::status(400, "400 a fork needs a prompt").at(t));
            }
            if let Some(full) = at_cap(ctx).await? {
                return Ok(full.at(t));
            }
            let (run, _): (RunRow, LoopRow) = store_call(
                sys,
                store,
                &StoreRequest::ForkRun {
                    source: src.id,
                    name: String::new(),
                    prompt: prompt.to_owned(),
                    flags: ctx.me.flags.clone(),
                },
            )
            .await
            .map_err(Action::internal)?;
            let t = target(&run.name, None);
            if let Err(r) = control(sys, ctx.me, RunControl::Wake { run_id: run.id }).await {
                return Ok(refused(r).at(t));
            }
            Ok(Action::status(201, format!("forked run://{}", run.name)).at(t))
        }
        Op::Send => {
            let Some(run) = resolve(ctx, name).await? else {
                return Ok(Action::status(404, format!("404 no run named {name}")).at(t));
            };
            if run.id == ctx.me.run_id {
                return Ok(
                    Action::status(400, "400 SEND to run://self: speak in your own log").at(t),
                );
            }
            let sent = control(
                sys,
                ctx.me,
                RunControl::Inject {
                    run_id: run.id,
                    prompt: s.body_raw().to_owned(),
                    flags: ctx.me.flags.clone(),
                },
            )
            .await;
            if let Err(r) = sent {
                return Ok(refused(r).at(t));
            }
            Ok(Action::ok(format!("sent to run://{name}")).at(t))
        }
        Op::Kill => {
            let Some(run) = resolve(ctx, name).await? else {
                return Ok(Action::status(404, format!("404 no run named {name}")).at(t));
            };
            if run.id == ctx.me.run_id {
                return Ok(Action::status(
                    400,
                    "400 KILL(run://self): end your loop with SEND[499]",
                )
                .at(t));
            }
            let live = loops_of(ctx, run.id)
                .await?
                .iter()
                .any(|l| !status::is_terminal(l.status));
            if !live {
                return Ok(Action::ok(format!("run://{name} is idle")).at(t));
            }
            if let Err(r) = control(sys, ctx.me, RunControl::Cancel { run_id: run.id }).await {
                return Ok(refused(r).at(t));
            }
            Ok(Action::ok(format!("terminated run://{name} (its loop ends 499)")).at(t))
        }
        Op::Read => {
            let Some(run) = resolve(ctx, name).await? else {
                return Ok(Action::status(404, format!("404 no run named {name}")).at(t));
            };
            let loops = loops_of(ctx, run.id).await?;
            if loops.iter().any(|l| !status::is_terminal(l.status)) {
                return Ok(Action::status(425, format!("425 run://{name} is still running")).at(t));
            }
            Ok(match loops.last() {
                None => Action::status(404, format!("404 run://{name} has run no loop")).at(t),
                Some(l) => Action::ok(format!(
                    "{} {}",
                    l.status,
                    l.terminal_message.as_deref().unwrap_or("")
                ))
                .at(t),
            })
        }
        _ => Ok(Action::status(
            501,
            format!(
                "501 run://{name} takes EDIT, COPY, SEND, KILL and READ, not {}",
                s.op
            ),
        )),
    }
}
