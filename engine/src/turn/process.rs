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
    Body, CapRef, ExitReason, Image, Message, Pid, Quota, Right, Rights, SendOpts, SpawnOpts,
    SysMsg, Syscalls, Value,
};

use super::proposal::{Proposed, Resolution, Resolver};
use super::runner::{LoopRunner, Pumps};
use super::{EngineConfig, LoopFlags};
use crate::schemes::dispatch::Devices;
use crate::schemes::entry::entry_key;
use crate::schemes::file::FsHandle;
use crate::schemes::run::RunControl;
use crate::schemes::world::{channel, store_call};
use crate::store::device::{StoreRequest, StoreScope, STORE_DEVICE};
use crate::store::{status, EntryWrite, LoopId, LoopRow, RunId, SessionId};

/// The LLM device name the engine uses.
pub const LLM_DEVICE: &str = "llm";

/// The project-files device name (optional: without it every session is headless).
pub const FS_DEVICE: &str = "fs";

/// The subprocess device name (optional: without it no loop can EXEC).
pub const EXEC_DEVICE: &str = "exec";

/// The device caps the engine root boots with.
#[derive(Clone, Copy)]
struct Booted {
    spawn: CapRef,
    store: CapRef,
    llm: CapRef,
    fs: Option<CapRef>,
    exec: Option<CapRef>,
}

/// What the host tells the engine root (delivered with `Kernel::deliver_external`).
#[derive(Debug, Clone, PartialEq)]
pub enum HostCmd {
    /// A loop was queued on a run: wake its drain (spawning the run process if needed).
    Run {
        /// What the run process is granted if it must be spawned.
        grant: RunGrant,
    },
    /// Speak into a run: folded into its active loop, else queued as a new loop.
    Inject {
        /// What the run process is granted if it must be spawned.
        grant: RunGrant,
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
    /// Resolve a pending proposal of the run's active loop.
    Resolve {
        /// The run.
        run_id: RunId,
        /// The decision.
        resolution: Resolution,
    },
}

/// Who a run is and what the engine root grants it: its store slice, and the session's
/// project root for its `fs` cap (none: a headless session holds no `fs` cap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunGrant {
    /// The session.
    pub session_id: SessionId,
    /// The run.
    pub run_id: RunId,
    /// The session's project root.
    pub project_root: Option<String>,
    /// The session's membership overlay `(effect, glob)`: `pick`, `hide`, `view`, `repo`.
    pub overlay: Vec<(String, String)>,
}

impl RunGrant {
    /// The `fs` cap scope of this grant's session (see [`fs_scope`]).
    fn fs_scope(&self, root: &str) -> agentos_abi::Scope {
        fs_scope(root, &self.overlay)
    }
}

/// The `fs` cap scope of a session: its project root, and its membership overlay
/// `(effect, glob)` as newline-separated lists (`repo` constraints become the driver's
/// `repos`). A run's `fs` cap and the host's `Engine::members` use this one mapping.
pub(crate) fn fs_scope(root: &str, overlay: &[(String, String)]) -> agentos_abi::Scope {
    let mut scope = agentos_abi::Scope::new().with(agentos_abi::Scope::ROOT, root);
    for (effect, key) in [
        ("pick", "pick"),
        ("hide", "hide"),
        ("view", "view"),
        ("repo", "repos"),
    ] {
        let globs: Vec<&str> = overlay
            .iter()
            .filter(|(e, _)| e == effect)
            .map(|(_, g)| g.as_str())
            .collect();
        if !globs.is_empty() {
            scope = scope.with(key, &globs.join("\n"));
        }
    }
    scope
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
    /// A host decision on a proposal of the active loop.
    Resolve(Resolution),
}

/// A child's authority and identity, sent once when it is spawned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Start {
    scope: StoreScope,
    store: CapRef,
    llm: CapRef,
    spawn: Option<CapRef>,
    fs: Option<CapRef>,
    exec: Option<CapRef>,
    /// The engine root (a run forwards its loops' [`RunControl`] there).
    root: Option<CapRef>,
    loop_id: LoopId,
}

/// The caps a child is started with, each already derived for it by its parent.
#[derive(Clone, Copy)]
struct Grant {
    store: CapRef,
    llm: CapRef,
    spawn: Option<CapRef>,
    fs: Option<CapRef>,
    exec: Option<CapRef>,
    root: Option<CapRef>,
}

/// Shared by every engine process: the config.
pub struct EngineShared {
    /// The config.
    pub config: Arc<EngineConfig>,
}

fn boot_caps(m: &Message) -> Option<Booted> {
    let Some(SysMsg::Boot { spawn, devices, .. }) = m.sys() else {
        return None;
    };
    let find = |n: &str| devices.iter().find(|(d, _)| &**d == n).map(|(_, c)| *c);
    Some(Booted {
        spawn: *spawn,
        store: find(STORE_DEVICE)?,
        llm: find(LLM_DEVICE)?,
        fs: find(FS_DEVICE),
        exec: find(EXEC_DEVICE),
    })
}

/// A copy of `cap` narrowed by `how` (the kernel refuses a widening).
fn derive<S: Syscalls>(sys: &S, cap: CapRef, how: Attenuation) -> Result<CapRef, String> {
    sys.attenuate(cap, how).map_err(|e| e.to_string())
}

/// Spawns `image`, monitors it and hands it `grant` (caps its parent derived for it) in
/// its `Start`.
async fn start_child<S: Syscalls>(
    sys: &S,
    image: Image<S>,
    quota: Quota,
    scope: StoreScope,
    grant: Grant,
    loop_id: LoopId,
) -> Result<(Pid, CapRef), String> {
    let child = sys
        .spawn(
            image,
            SpawnOpts {
                quota,
                ..SpawnOpts::default()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    sys.monitor(child.cap).await.map_err(|e| e.to_string())?;
    let mut caps = vec![grant.store, grant.llm];
    caps.extend(grant.spawn);
    caps.extend(grant.fs);
    caps.extend(grant.exec);
    caps.extend(grant.root);
    let start = Start {
        scope,
        store: grant.store,
        llm: grant.llm,
        spawn: grant.spawn,
        fs: grant.fs,
        exec: grant.exec,
        root: grant.root,
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

/// What the root derives for a run: the store confined to `{session, run}`, the `fs` device
/// confined to the session's project root (none for a headless session).
fn run_grant<S: Syscalls>(sys: &S, g: &RunGrant, b: Booted) -> Result<Grant, String> {
    let Booted {
        spawn,
        store,
        llm,
        fs,
        exec,
    } = b;
    let scope = StoreScope {
        session_id: g.session_id,
        run_id: g.run_id,
    };
    let fs = match (fs, g.project_root.as_deref()) {
        (Some(fs), Some(root)) => Some(derive(
            sys,
            fs,
            Attenuation {
                scope: Some(g.fs_scope(root)),
                ..Attenuation::default()
            },
        )?),
        _ => None,
    };
    let exec = match (exec, g.project_root.as_deref()) {
        (Some(exec), Some(root)) => Some(derive(
            sys,
            exec,
            Attenuation {
                scope: Some(agentos_abi::Scope::new().with(agentos_abi::Scope::ROOT, root)),
                ..Attenuation::default()
            },
        )?),
        _ => None,
    };
    Ok(Grant {
        store: derive(
            sys,
            store,
            Attenuation {
                scope: Some(scope.cap_scope()),
                ..Attenuation::default()
            },
        )?,
        llm: derive(sys, llm, Attenuation::default())?,
        spawn: Some(
            sys.derive(spawn, Right::Spawn.into())
                .map_err(|e| e.to_string())?,
        ),
        fs,
        exec,
        root: Some(sys.self_cap()),
    })
}

/// What a run derives for a loop, from the loop's flags (DESIGN.md "Flags are
/// capabilities"): `mode=ask` gets a read-only `fs` cap and no `exec` cap; a loop that may
/// EXEC also gets a spawn cap for its stream pumps.
fn loop_grant<S: Syscalls>(sys: &S, run: &Start, flags: &LoopFlags) -> Result<Grant, String> {
    let fs = match run.fs {
        Some(fs) => Some(derive(
            sys,
            fs,
            Attenuation {
                rights: flags
                    .is_ask()
                    .then(|| Rights::of(&[Right::Open, Right::Read])),
                ..Attenuation::default()
            },
        )?),
        None => None,
    };
    let exec = match run.exec {
        Some(e) if !flags.is_ask() => Some(derive(sys, e, Attenuation::default())?),
        _ => None,
    };
    let spawn = match (run.spawn, exec) {
        (Some(s), Some(_)) => Some(
            sys.derive(s, Right::Spawn.into())
                .map_err(|e| e.to_string())?,
        ),
        _ => None,
    };
    Ok(Grant {
        store: derive(sys, run.store, Attenuation::default())?,
        llm: derive(sys, run.llm, Attenuation::default())?,
        spawn,
        fs,
        exec,
        root: None,
    })
}

/// The engine root: boots with the `store` and `llm` devices and a spawn cap, spawns a run
/// process per run on demand and forwards host commands to it.
pub fn root_image<S: Syscalls>(shared: Arc<EngineShared>) -> Image<S> {
    Image::new("engine", move |sys: S, _args: Value| {
        let shared = shared.clone();
        async move {
            let boot = sys.recv().await;
            let booted = boot_caps(&boot).ok_or_else(|| {
                agentos_abi::SysError::Driver("engine: boot grant lacks store or llm".into())
            })?;
            let mut runs: HashMap<RunId, (Pid, CapRef, RunGrant)> = HashMap::new();
            loop {
                let m = sys.recv().await;
                if let Some(SysMsg::Down { pid, .. }) = m.sys() {
                    let pid = *pid;
                    runs.retain(|_, (p, ..)| *p != pid);
                    continue;
                }
                let from = m.from;
                let cmd = match m.body.downcast::<HostCmd>() {
                    // Host commands come from outside the kernel, never from a process.
                    Ok(c) if from == Pid::KERNEL => c,
                    Ok(_) => continue,
                    Err(body) => match body.downcast::<RunControl>() {
                        // A run acting on a sibling: the sibling gets what the asking run
                        // holds (its session, project root and overlay), never more.
                        Ok(c) => {
                            let Some(asker) = runs
                                .values()
                                .find(|(p, ..)| *p == from)
                                .map(|r| r.2.clone())
                            else {
                                continue;
                            };
                            let same_session = |id: RunId| {
                                runs.get(&id)
                                    .is_none_or(|r| r.2.session_id == asker.session_id)
                            };
                            let sibling = |run_id: RunId| RunGrant {
                                run_id,
                                ..asker.clone()
                            };
                            match c {
                                RunControl::Wake { run_id } if same_session(run_id) => {
                                    HostCmd::Run {
                                        grant: sibling(run_id),
                                    }
                                }
                                RunControl::Inject {
                                    run_id,
                                    prompt,
                                    flags,
                                } if same_session(run_id) => HostCmd::Inject {
                                    grant: sibling(run_id),
                                    prompt,
                                    flags,
                                },
                                RunControl::Cancel { run_id } if same_session(run_id) => {
                                    HostCmd::Cancel { run_id }
                                }
                                _ => continue,
                            }
                        }
                        Err(_) => continue,
                    },
                };
                let (grant, msg) = match cmd {
                    HostCmd::Run { grant } => (grant, RunMsg::Run),
                    HostCmd::Inject {
                        grant,
                        prompt,
                        flags,
                    } => (grant, RunMsg::Inject { prompt, flags }),
                    HostCmd::Cancel { run_id } | HostCmd::Resolve { run_id, .. }
                        if !runs.contains_key(&run_id) =>
                    {
                        continue
                    }
                    HostCmd::Cancel { run_id } => {
                        let cap = runs[&run_id].1;
                        let _ = sys
                            .send(cap, Body::local(RunMsg::Cancel), SendOpts::default())
                            .await;
                        continue;
                    }
                    HostCmd::Resolve { run_id, resolution } => {
                        let cap = runs[&run_id].1;
                        let _ = sys
                            .send(
                                cap,
                                Body::local(RunMsg::Resolve(resolution)),
                                SendOpts::default(),
                            )
                            .await;
                        continue;
                    }
                };
                let run_id = grant.run_id;
                let cap = match runs.get(&run_id) {
                    Some((_, c, _)) => *c,
                    None => {
                        let scope = StoreScope {
                            session_id: grant.session_id,
                            run_id,
                        };
                        let started = match run_grant(&sys, &grant, booted) {
                            Ok(g) => {
                                start_child(
                                    &sys,
                                    run_image(shared.clone()),
                                    Quota::default(),
                                    scope,
                                    g,
                                    0,
                                )
                                .await
                            }
                            Err(e) => Err(e),
                        };
                        match started {
                            Ok((pid, cap)) => {
                                runs.insert(run_id, (pid, cap, grant.clone()));
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
            // The active loop: its row, pid, cap, whether it was cancelled, its resolver.
            let mut active: Option<(LoopRow, Pid, CapRef, bool, Resolver)> = None;
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
                            let resolver = Resolver::for_flags(&flags);
                            let started = match loop_grant(&sys, &start, &flags) {
                                Ok(g) => {
                                    start_child(
                                        &sys,
                                        loop_image(shared.clone()),
                                        quota,
                                        scope,
                                        g,
                                        lp.id,
                                    )
                                    .await
                                }
                                Err(e) => Err(e),
                            };
                            match started {
                                Ok((pid, cap)) => active = Some((lp, pid, cap, false, resolver)),
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
                    if let Some((lp, apid, _, cancelled, _)) = &active {
                        if apid == pid {
                            // Nothing stays waiting on a dead loop.
                            let _: Result<usize, _> = store_call(
                                &sys,
                                store,
                                &StoreRequest::CancelProposals { loop_id: lp.id },
                            )
                            .await;
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
                            // A run a model spawned tells its parent how it concluded (a
                            // SEND delta from run://name; it wakes an idle parent).
                            let ended: Result<LoopRow, _> =
                                store_call(&sys, store, &StoreRequest::Loop { loop_id: lp.id })
                                    .await;
                            let me: Result<crate::store::RunRow, _> =
                                store_call(&sys, store, &StoreRequest::Run).await;
                            if let (Ok(l), Ok(me), Some(root)) = (ended, me, start.root) {
                                if let (Some(parent), crate::store::Origin::Model) =
                                    (me.parent_run_id, me.origin)
                                {
                                    let note = RunControl::Inject {
                                        run_id: parent,
                                        prompt: format!(
                                            "run://{} concluded {}: {}",
                                            me.name,
                                            l.status,
                                            l.terminal_message.unwrap_or_default()
                                        ),
                                        flags: l.flags,
                                    };
                                    let _ = sys
                                        .send(root, Body::local(note), SendOpts::default())
                                        .await;
                                }
                            }
                            active = None;
                        }
                    }
                    continue;
                }
                let from = m.from;
                let body = match m.body.downcast::<RunControl>() {
                    Ok(c) => {
                        // Only the active loop speaks for this run.
                        if let (Some((_, pid, ..)), Some(root)) = (&active, start.root) {
                            if *pid == from {
                                let _ = sys.send(root, Body::local(c), SendOpts::default()).await;
                            }
                        }
                        continue;
                    }
                    Err(b) => b,
                };
                let body = match body.downcast::<Proposed>() {
                    Ok(p) => {
                        // A parked loop: its resolver may answer at once (yolo,
                        // noProposals); a human one waits for the host.
                        if let Some((lp, _, cap, _, resolver)) = &active {
                            if lp.id == p.loop_id {
                                if let Some(r) = resolver.decide(&p) {
                                    let _ =
                                        sys.send(*cap, Body::local(r), SendOpts::default()).await;
                                }
                            }
                        }
                        continue;
                    }
                    Err(b) => b,
                };
                let Ok(msg) = body.downcast::<RunMsg>() else {
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
                        if let Some((_, _, cap, cancelled, _)) = &mut active {
                            *cancelled = true;
                            let _ = sys.signal(*cap, None).await;
                        }
                    }
                    RunMsg::Resolve(r) => {
                        if let Some((_, _, cap, ..)) = &active {
                            let _ = sys.send(*cap, Body::local(r), SendOpts::default()).await;
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
            let mut devices = Devices::default();
            let mut pumps = None;
            // The spawn cap the loop holds lets it start stream pumps.
            if let (Some(exec), Some(_)) = (start.exec, start.spawn) {
                devices.exec = Some(sys.open(exec).await?);
                pumps = Some(Pumps {
                    exec_device: exec,
                    store_device: start.store,
                });
            }
            if let Some(fs) = start.fs {
                let writable = sys.cap_info(fs).is_ok_and(|i| i.rights.has(Right::Write));
                devices.fs = Some(FsHandle {
                    cap: sys.open(fs).await?,
                    writable,
                });
            }
            let runner = LoopRunner::load(
                sys.clone(),
                store,
                llm,
                shared.config.clone(),
                start.loop_id,
                devices,
                pumps,
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
