//! The engine's processes: the root, one process per run, one child per loop.
//!
//! ```text
//! engine (root)  holds spawn + the store and llm device caps; spawns runs on demand
//!   └─ run:<id>   named; its mailbox serializes run / inject / cancel; drains queued loops
//!        └─ loop:<id>   one at a time; turns until a terminal status; killed on cancel
//! ```
//!
//! A child gets its authority in one `Start` message: caps derived from its parent's
//! (transferred with the message) and the ids it serves. A run's `store` cap is the root's
//! attenuated to `{session, run}` (a scoped device cap), so the run and its loops can open
//! only their own slice of the database; a loop's is derived from its run's.
//! Loops are queued as `loops` rows (status 100) by the host, so a request survives a run
//! process that is not up yet; `run` wakes the drain, which claims them 100 → 102 in order.
//!
//! **Invariants:** one loop per run at a time (the drain is the run's own mailbox loop); a
//! loop that dies without writing its status gets one from its run — 499 when it was
//! cancelled, 413 when its token quota ran out, 504 past its deadline, 500 with the cause
//! otherwise — so no loop is left 102 by a dead process.

use std::collections::HashMap;
use std::sync::Arc;

use agentos_abi::sys::Attenuation;
use agentos_abi::{
    Body, CapRef, ExitReason, Image, Message, Pid, Quota, SendOpts, SpawnOpts, SysMsg, Syscalls,
    Value,
};

use super::runner::LoopRunner;
use super::{EngineConfig, LoopFlags};
use crate::schemes::entry::entry_key;
use crate::schemes::world::{channel, store_call};
use crate::store::device::{StoreRequest, StoreScope, STORE_DEVICE};
use crate::store::{status, EntryWrite, LoopId, LoopRow, RunId, SessionId};

/// The LLM device name the engine uses.
pub const LLM_DEVICE: &str = "llm";

/// What the host tells the engine root (delivered with `Kernel::deliver_external`).
#[derive(Debug, Clone, PartialEq)]
pub enum HostCmd {
    /// A loop was queued on a run: wake its drain (spawning the run process if needed).
    Run {
        /// The session.
        session_id: SessionId,
        /// The run.
        run_id: RunId,
    },
    /// Speak into a run: folded into its active loop, else queued as a new loop.
    Inject {
        /// The session.
        session_id: SessionId,
        /// The run.
        run_id: RunId,
        /// The prompt.
        prompt: String,
        /// Flags for a loop this queues.
        flags: String,
    },
    /// Cancel the run's active loop (it ends 499).
    Cancel {
        /// The run.
        run_id: RunId,
    },
}

/// What a run process takes in its mailbox.
#[derive(Debug, Clone, PartialEq)]
pub enum RunMsg {
    /// Drain queued loops.
    Run,
    /// Inject a prompt.
    Inject {
        /// The prompt.
        prompt: String,
        /// Flags for a loop this queues.
        flags: String,
    },
    /// Cancel the active loop.
    Cancel,
}

/// A child's authority and identity, sent once when it is spawned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Start {
    scope: StoreScope,
    store: CapRef,
    llm: CapRef,
    spawn: Option<CapRef>,
    loop_id: LoopId,
}

/// Shared by every engine process: the config.
pub struct EngineShared {
    /// The config.
    pub config: Arc<EngineConfig>,
}

fn boot_caps(m: &Message) -> Option<(CapRef, CapRef, CapRef)> {
    let Some(SysMsg::Boot { spawn, devices, .. }) = m.sys() else {
        return None;
    };
    let find = |n: &str| devices.iter().find(|(d, _)| &**d == n).map(|(_, c)| *c);
    Some((*spawn, find(STORE_DEVICE)?, find(LLM_DEVICE)?))
}

/// Spawns `image` and hands it derived caps in its `Start`; its store cap is confined to
/// `scope` (an attenuation, which the kernel refuses if it would widen the parent's).
#[allow(clippy::too_many_arguments)]
async fn start_child<S: Syscalls>(
    sys: &S,
    image: Image<S>,
    quota: Quota,
    deadline_ms: Option<u64>,
    scope: StoreScope,
    (store, llm, spawn): (CapRef, CapRef, Option<CapRef>),
    loop_id: LoopId,
) -> Result<(Pid, CapRef), String> {
    let child = sys
        .spawn(
            image,
            SpawnOpts {
                quota,
                deadline_ms,
                ..SpawnOpts::default()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    sys.monitor(child.cap).await.map_err(|e| e.to_string())?;
    // Copies of the parent's caps with their rights (a device handle gets the read/write
    // rights of the cap it is opened through); the store copy is confined to the scope.
    let store = sys
        .attenuate(
            store,
            Attenuation {
                scope: Some(scope.cap_scope()),
                ..Attenuation::default()
            },
        )
        .map_err(|e| e.to_string())?;
    let llm = sys
        .attenuate(llm, Attenuation::default())
        .map_err(|e| e.to_string())?;
    let spawn = match spawn {
        Some(s) => Some(
            sys.attenuate(s, Attenuation::default())
                .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let mut caps = vec![store, llm];
    caps.extend(spawn);
    let start = Start {
        scope,
        store,
        llm,
        spawn,
        loop_id,
    };
    sys.send(
        child.cap,
        Body::local(start),
        SendOpts {
            caps,
            ..SendOpts::default()
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok((child.pid, child.cap))
}

/// The engine root: boots with the `store` and `llm` devices and a spawn cap, spawns a run
/// process per run on demand and forwards host commands to it.
pub fn root_image<S: Syscalls>(shared: Arc<EngineShared>) -> Image<S> {
    Image::new("engine", move |sys: S, _args: Value| {
        let shared = shared.clone();
        async move {
            let boot = sys.recv().await;
            let (spawn, store, llm) = boot_caps(&boot).ok_or_else(|| {
                agentos_abi::SysError::Driver("engine: boot grant lacks store or llm".into())
            })?;
            let mut runs: HashMap<RunId, (Pid, CapRef)> = HashMap::new();
            loop {
                let m = sys.recv().await;
                if let Some(SysMsg::Down { pid, .. }) = m.sys() {
                    let pid = *pid;
                    runs.retain(|_, (p, _)| *p != pid);
                    continue;
                }
                let Ok(cmd) = m.body.downcast::<HostCmd>() else {
                    continue;
                };
                let (session_id, run_id, msg) = match cmd {
                    HostCmd::Run { session_id, run_id } => (session_id, run_id, RunMsg::Run),
                    HostCmd::Inject {
                        session_id,
                        run_id,
                        prompt,
                        flags,
                    } => (session_id, run_id, RunMsg::Inject { prompt, flags }),
                    HostCmd::Cancel { run_id } => match runs.get(&run_id) {
                        Some((_, cap)) => {
                            let _ = sys
                                .send(*cap, Body::local(RunMsg::Cancel), SendOpts::default())
                                .await;
                            continue;
                        }
                        None => continue,
                    },
                };
                let cap = match runs.get(&run_id) {
                    Some((_, c)) => *c,
                    None => {
                        let scope = StoreScope { session_id, run_id };
                        match start_child(
                            &sys,
                            run_image(shared.clone()),
                            Quota::default(),
                            None,
                            scope,
                            (store, llm, Some(spawn)),
                            0,
                        )
                        .await
                        {
                            Ok((pid, cap)) => {
                                runs.insert(run_id, (pid, cap));
                                cap
                            }
                            Err(e) => {
                                sys.log(
                                    agentos_abi::sys::LogLevel::Error,
                                    &format!("engine: cannot start run {run_id}: {e}"),
                                );
                                continue;
                            }
                        }
                    }
                };
                let _ = sys.send(cap, Body::local(msg), SendOpts::default()).await;
            }
        }
    })
}

async fn recv_start<S: Syscalls>(sys: &S) -> Start {
    loop {
        let m = sys.recv().await;
        if let Ok(s) = m.body.downcast::<Start>() {
            return s;
        }
    }
}

/// Why a loop process died, as the loop's status and message (when it wrote none itself).
fn exit_status(reason: &ExitReason, cancelled: bool) -> (u16, String) {
    match reason {
        _ if cancelled => (status::CANCELLED, "cancelled".into()),
        ExitReason::Quota { resource } => (
            status::BUDGET,
            format!("budget: {} quota exhausted", resource.name()),
        ),
        ExitReason::Deadline => (status::TIMEOUT, "loop timeout".into()),
        ExitReason::Killed { .. } => (status::CANCELLED, "killed".into()),
        ExitReason::Fault { error } => (status::FAILED, format!("loop crashed: {error}")),
        other => (
            status::FAILED,
            format!("loop ended without a status ({other:?})"),
        ),
    }
}

/// A run: drains its queued loops one at a time; `inject` folds a prompt into the active
/// loop (its next turn) or queues a loop; `cancel` kills the active loop.
pub fn run_image<S: Syscalls>(shared: Arc<EngineShared>) -> Image<S> {
    Image::new("run", move |sys: S, _args: Value| {
        let shared = shared.clone();
        async move {
            let start = recv_start(&sys).await;
            let scope = start.scope;
            let _ = sys.register(&format!("run:{}", scope.run_id));
            let store = sys.open(start.store).await?;
            let spawn = start.spawn;
            // The active loop: (loop id, its ordinal, child pid, child cap, cancelled?).
            let mut active: Option<(LoopRow, Pid, CapRef, bool)> = None;
            loop {
                if active.is_none() {
                    // Drain: claim the oldest queued loop and start it.
                    let next: Result<Option<LoopRow>, _> =
                        store_call(&sys, store, &StoreRequest::NextQueued).await;
                    if let Ok(Some(lp)) = next {
                        let claimed: Result<bool, _> =
                            store_call(&sys, store, &StoreRequest::Claim { loop_id: lp.id }).await;
                        if matches!(claimed, Ok(true)) {
                            let flags = LoopFlags::from_json(&lp.flags).unwrap_or_default();
                            let quota = Quota {
                                tokens: flags.budget_tokens,
                                ..Quota::default()
                            };
                            match start_child(
                                &sys,
                                loop_image(shared.clone()),
                                quota,
                                None,
                                scope,
                                (start.store, start.llm, None),
                                lp.id,
                            )
                            .await
                            {
                                Ok((pid, cap)) => active = Some((lp, pid, cap, false)),
                                Err(e) => {
                                    let _: Result<LoopRow, _> = store_call(
                                        &sys,
                                        store,
                                        &StoreRequest::SetStatus {
                                            loop_id: lp.id,
                                            status: status::FAILED,
                                            message: Some(format!("cannot start loop: {e}")),
                                        },
                                    )
                                    .await;
                                }
                            }
                            if active.is_none() {
                                continue;
                            }
                        }
                    }
                }
                let m = sys.recv().await;
                if let Some(SysMsg::Down { pid, reason }) = m.sys() {
                    if let Some((lp, apid, _, cancelled)) = &active {
                        if apid == pid {
                            let cur: Result<LoopRow, _> =
                                store_call(&sys, store, &StoreRequest::Loop { loop_id: lp.id })
                                    .await;
                            if matches!(&cur, Ok(l) if !status::is_terminal(l.status)) {
                                let (s, msg) = exit_status(reason, *cancelled);
                                let _: Result<LoopRow, _> = store_call(
                                    &sys,
                                    store,
                                    &StoreRequest::SetStatus {
                                        loop_id: lp.id,
                                        status: s,
                                        message: Some(msg),
                                    },
                                )
                                .await;
                            }
                            active = None;
                        }
                    }
                    continue;
                }
                let Ok(msg) = m.body.downcast::<RunMsg>() else {
                    continue;
                };
                match msg {
                    RunMsg::Run => {}
                    RunMsg::Inject { prompt, flags } => match &active {
                        Some((lp, ..)) => {
                            // The loop's own prompt is n = 1; injected ones follow.
                            let seen: Vec<(i64, String)> = store_call(
                                &sys,
                                store,
                                &StoreRequest::Prompts {
                                    loop_seq: lp.sequence,
                                },
                            )
                            .await
                            .unwrap_or_default();
                            let n = seen.last().map_or(1, |(n, _)| *n).max(1) + 1;
                            let key = entry_key("plurnk", &format!("/prompt/{}/{n}", lp.sequence));
                            let w = EntryWrite::Put {
                                key,
                                channel: channel("body", prompt, "text/markdown"),
                                tags: None,
                            };
                            let _: Result<(), _> =
                                store_call(&sys, store, &StoreRequest::Write(vec![w])).await;
                        }
                        None => {
                            let _: Result<LoopRow, _> = store_call(
                                &sys,
                                store,
                                &StoreRequest::Queue {
                                    prompt,
                                    flags,
                                    max_turns: None,
                                },
                            )
                            .await;
                        }
                    },
                    RunMsg::Cancel => {
                        if let Some((_, _, cap, cancelled)) = &mut active {
                            *cancelled = true;
                            let _ = sys.signal(*cap, None).await;
                        }
                    }
                }
                let _ = spawn;
            }
        }
    })
}

/// A loop: opens its handles and runs turns until the loop has a terminal status.
pub fn loop_image<S: Syscalls>(shared: Arc<EngineShared>) -> Image<S> {
    Image::new("loop", move |sys: S, _args: Value| {
        let shared = shared.clone();
        async move {
            let start = recv_start(&sys).await;
            let store = sys.open(start.store).await?;
            let llm = sys.open(start.llm).await?;
            let runner = LoopRunner::load(
                sys.clone(),
                store,
                llm,
                shared.config.clone(),
                start.loop_id,
            )
            .await
            .map_err(|e| agentos_abi::SysError::Driver(e.to_string()))?;
            runner
                .run()
                .await
                .map_err(|e| agentos_abi::SysError::Driver(e.to_string()))?;
            Ok(())
        }
    })
}
