//! The engine's processes: the root, one process per session, one per run, one child per
//! loop (a client's statements included), one per look.
//!
//! ```text
//! engine (root)      holds spawn + the device caps; spawns a session process on demand
//!   └─ session:<id>  its account is the session's budget (EngineConfig::session_quota);
//!        │           spawns run processes, grants each loop its fs/exec caps from the
//!        │           session as it is when the loop starts, relays run:// requests
//!        └─ run:<id>   its mailbox serializes run / inject / cancel / client; drains queued
//!             │        loops; exits when idle (its session reaps it), spawned again on demand
//!             ├─ loop:<id>     a model loop; turns until a terminal status; killed on cancel
//!             ├─ client:<id>   a client loop (op.*): one client turn, no llm cap; same slot
//!             └─ look:<run>    a look (op.look): read-only caps, no loop, beside the others
//! ```
//!
//! **Accounts follow the tree** (DESIGN.md "Hierarchy → kernel"): a process's account is a
//! child of its spawner's, so a loop's tokens, dollars and children are charged to its run's
//! account, the session's and the root's, all or nothing. A session quota therefore bounds
//! every run of the session together: a fork bomb (`COPY(run://self)` in every fork) finds
//! the session's `children` slots spent — the spawn answers 508 and the run's queued loops
//! end 508 — or its tokens spent — the loop that cannot pay ends 413 — and never reaches the
//! rest of the machine.
//!
//! A child gets its authority in one start message: caps derived from its parent's
//! (transferred with the message) and the ids it serves. A session's `store` cap is the
//! root's attenuated to `{session}` (a session handle: the session row, its overlay, its
//! runs); a run's is the session's narrowed to `{session, run}`, so the run and its loops
//! open only their own slice of the database. Only the session holds the `fs` and `exec`
//! devices whole: a run asks it for each loop's caps ([`LoopCaps`]), which it derives from
//! the session's project root and membership overlay **read from the store then** — so a
//! `session.set_root` or `session.constrain` reaches a started run at its next loop — with
//! ask mode's attenuation (read-only `fs`, no `exec`).
//!
//! Loops are queued as `loops` rows (status 100) by the host, so a request survives a run
//! process that is not up yet; `run` wakes the drain, which claims them 100 → 102 in order.
//! A client turn (see [`super::client`]) reaches the run like `inject`, through its session
//! (which starts the run if needed): the run queues and claims it itself when it is idle — a
//! client loop (default flags, `max_turns` 1) whose `fs`/`exec` caps the session grants
//! like any loop's, from the session as it is then — and refuses it while a loop is running
//! or parked. A look asks the session for ask mode's caps (a read-only `fs` cap, no `exec`),
//! narrows the run's store cap to reading, and runs beside whatever else the run does.
//!
//! **Invariants:** one loop per run at a time, client loops included (the drain and the
//! client turns are the run's own mailbox loop); a loop that dies without writing its status
//! gets one from its run — 499 when it was cancelled, 413 when a token quota ran out, 504
//! past its deadline, 500 with the cause otherwise — so no loop is left 102 by a dead
//! process; a run the session cannot start has its queued loops ended 508, never left 100;
//! an idle run exits only when its session has sent it nothing it has not read (the
//! [`Idle`] handshake) and no child of it is still up (a look, a loop past its last commit),
//! so no message and no answer is lost with it; a look holds no cap that can write.

use std::collections::HashMap;
use std::sync::Arc;

use agentos_abi::sys::Attenuation;
use agentos_abi::{
    Body, CapRef, ExitReason, Image, Message, Meter, Pid, Quota, Right, Rights, SendOpts,
    SpawnOpts, SysError, SysMsg, Syscalls, Value,
};

use super::client::{ClientJob, ClientRefusal};
use super::proposal::{Proposed, Resolution, Resolver};
use super::runner::{LoopRunner, Pumps};
use super::{EngineConfig, LoopFlags};
use crate::schemes::dispatch::Devices;
use crate::schemes::entry::entry_key;
use crate::schemes::file::FsHandle;
use crate::schemes::run::{RunAnswer, RunControl, RunRequest};
use crate::schemes::world::{channel, store_call};
use crate::store::device::{session_cap_scope, StoreRequest, StoreScope, STORE_DEVICE};
use crate::store::{status, EntryWrite, LoopId, LoopRow, RunId, RunRow, SessionId, SessionRow};

/// The LLM device name the engine uses.
pub const LLM_DEVICE: &str = "llm";

/// The project-files device name (optional: without it every session is headless).
pub const FS_DEVICE: &str = "fs";

/// The subprocess device name (optional: without it no loop can EXEC).
pub const EXEC_DEVICE: &str = "exec";

/// How long a run waits for its session to grant a loop's caps, and a loop for its session
/// to answer a run:// request, in kernel-clock ms.
const ASK_TIMEOUT_MS: u64 = 60_000;

/// The device caps the engine root boots with.
#[derive(Clone, Copy)]
struct Booted {
    spawn: CapRef,
    store: CapRef,
    llm: CapRef,
    fs: Option<CapRef>,
    exec: Option<CapRef>,
}

/// What the host tells the engine root (delivered with `Kernel::deliver_external`); the
/// root hands it to the session's process.
#[derive(Debug, Clone, PartialEq)]
pub enum HostCmd {
    /// A loop was queued on a run: wake its drain (spawning the run process if needed).
    Run {
        /// The run's session.
        session_id: SessionId,
        /// The run.
        run_id: RunId,
    },
    /// Speak into a run: folded into its active loop, else queued as a new loop.
    Inject {
        /// The run's session.
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
        /// The run's session.
        session_id: SessionId,
        /// The run.
        run_id: RunId,
    },
    /// Resolve a pending proposal of the run's active loop.
    Resolve {
        /// The run's session.
        session_id: SessionId,
        /// The run.
        run_id: RunId,
        /// The decision.
        resolution: Resolution,
    },
    /// Client statements for the run: a client loop, or a look (see [`super::client`]).
    Client {
        /// The run's session.
        session_id: SessionId,
        /// The run.
        run_id: RunId,
        /// The statements and where the answer goes.
        job: ClientJob,
    },
}

impl HostCmd {
    /// The session the command is for.
    pub fn session_id(&self) -> SessionId {
        match self {
            HostCmd::Run { session_id, .. }
            | HostCmd::Inject { session_id, .. }
            | HostCmd::Cancel { session_id, .. }
            | HostCmd::Resolve { session_id, .. }
            | HostCmd::Client { session_id, .. } => *session_id,
        }
    }

    /// Whether the command needs the session's process up (cancel and resolve only act on
    /// a run that is running).
    fn starts(&self) -> bool {
        matches!(
            self,
            HostCmd::Run { .. } | HostCmd::Inject { .. } | HostCmd::Client { .. }
        )
    }
}

/// What a run process takes in its mailbox (from its session).
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
    /// Client statements: a client loop when the run is idle (refused while a loop is
    /// running or parked), or a look beside whatever runs.
    Client(ClientJob),
}

/// A run → its session: grant the caps of a loop about to start (the reply carries the
/// request's correlation id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopCaps {
    /// The loop is in ask mode: a read-only `fs` cap, no `exec` cap.
    pub ask: bool,
}

/// A session → a run: the caps of its next loop (transferred with the message), derived
/// from the session's project root and overlay as the store holds them now.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LoopCapsGranted(Result<(Option<CapRef>, Option<CapRef>), String>);

/// A run → its session: nothing to do. `seen` counts the messages the run has taken from
/// its session since it started; when the session has sent exactly that many, nothing is on
/// its way and the session ends the run (it is spawned again when needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Idle {
    /// Messages taken from the session.
    pub seen: u64,
}

/// A session process's authority, sent once by the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SessionStart {
    session_id: SessionId,
    store: CapRef,
    llm: CapRef,
    spawn: CapRef,
    fs: Option<CapRef>,
    exec: Option<CapRef>,
}

/// A run process's authority, sent once by its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RunStart {
    scope: StoreScope,
    store: CapRef,
    llm: CapRef,
    spawn: CapRef,
    /// The run's session (its loop grants, its run:// requests, its idle notes).
    session: CapRef,
}

/// A loop process's authority, sent once by its run (no `llm` cap for a client loop or a
/// look).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LoopStart {
    store: CapRef,
    llm: Option<CapRef>,
    spawn: Option<CapRef>,
    fs: Option<CapRef>,
    exec: Option<CapRef>,
    loop_id: LoopId,
}

/// A client process's authority and job, sent once by its run: a client loop's (`loop_id`
/// its claimed loop) or a look's (read-only caps, `loop_id` 0).
#[derive(Debug)]
struct ClientStart {
    caps: LoopStart,
    run_id: RunId,
    job: ClientJob,
}

/// Shared by every engine process: the config.
pub struct EngineShared {
    /// The config.
    pub config: Arc<EngineConfig>,
}

/// Why a child could not be started.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StartError {
    /// The account chain refused the spawn (a `children` quota is spent).
    Quota(Meter),
    /// Anything else (a cap the kernel refused, a dead child).
    Other(String),
}

impl StartError {
    /// The status and message a loop that could not be started ends with.
    fn status(&self) -> (u16, String) {
        match self {
            StartError::Quota(m) => (
                status::RUN_CAP,
                format!(
                    "508 the session's {} quota is spent: no process for this run",
                    m.name()
                ),
            ),
            StartError::Other(e) => (status::FAILED, format!("cannot start: {e}")),
        }
    }
}

impl From<SysError> for StartError {
    fn from(e: SysError) -> Self {
        match e {
            SysError::Quota(m) => StartError::Quota(m),
            other => StartError::Other(other.to_string()),
        }
    }
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
fn derive<S: Syscalls>(sys: &S, cap: CapRef, how: Attenuation) -> Result<CapRef, SysError> {
    sys.attenuate(cap, how)
}

fn scoped(scope: agentos_abi::Scope) -> Attenuation {
    Attenuation {
        scope: Some(scope),
        ..Attenuation::default()
    }
}

/// Spawns `image` with `quota` (an account under the caller's), monitors it and hands it
/// `start` with `caps` (derived for it by the caller; ownership moves).
async fn start_child<S: Syscalls, T: Send + Sync + 'static>(
    sys: &S,
    image: Image<S>,
    quota: Quota,
    start: T,
    caps: Vec<CapRef>,
) -> Result<(Pid, CapRef), StartError> {
    let child = sys
        .spawn(
            image,
            SpawnOpts {
                quota,
                ..SpawnOpts::default()
            },
        )
        .await?;
    sys.monitor(child.cap).await?;
    sys.send(
        child.cap,
        Body::local(start),
        SendOpts {
            caps,
            ..SendOpts::default()
        },
    )
    .await
    .map_err(|e| StartError::Other(e.to_string()))?;
    Ok((child.pid, child.cap))
}

/// The `fs` cap scope of a session: its root, and the overlay as newline-separated lists
/// (`repo` constraints become the driver's `repos`). A loop's `fs` cap and the host's
/// `Engine::members` use this one mapping.
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

/// The engine root: boots with the devices and a spawn cap, spawns a session process per
/// session on demand (its account under the root's, with the configured session quota) and
/// hands each host command to its session.
pub fn root_image<S: Syscalls>(shared: Arc<EngineShared>) -> Image<S> {
    Image::new("engine", move |sys: S, _args: Value| {
        let shared = shared.clone();
        async move {
            let boot = sys.recv().await;
            let booted = boot_caps(&boot).ok_or_else(|| {
                agentos_abi::SysError::Driver("engine: boot grant lacks store or llm".into())
            })?;
            let mut sessions: HashMap<SessionId, (Pid, CapRef)> = HashMap::new();
            loop {
                let m = sys.recv().await;
                if let Some(SysMsg::Down { pid, .. }) = m.sys() {
                    let pid = *pid;
                    sessions.retain(|_, (p, _)| *p != pid);
                    continue;
                }
                // Host commands come from outside the kernel, never from a process.
                if m.from != Pid::KERNEL {
                    continue;
                }
                let Ok(cmd) = m.body.downcast::<HostCmd>() else {
                    continue;
                };
                let sid = cmd.session_id();
                let cap = match sessions.get(&sid) {
                    Some((_, c)) => *c,
                    None if !cmd.starts() => continue,
                    None => match start_session(&sys, &shared, booted, sid).await {
                        Ok((pid, cap)) => {
                            sessions.insert(sid, (pid, cap));
                            cap
                        }
                        Err(e) => {
                            sys.log(
                                agentos_abi::sys::LogLevel::Error,
                                &format!("engine: cannot start session {sid}: {e:?}"),
                            );
                            continue;
                        }
                    },
                };
                let _ = sys.send(cap, Body::local(cmd), SendOpts::default()).await;
            }
        }
    })
}

/// Spawns the process of session `sid`: the store narrowed to the session, the other
/// devices whole (it narrows them per loop), a spawn cap for its runs.
async fn start_session<S: Syscalls>(
    sys: &S,
    shared: &Arc<EngineShared>,
    b: Booted,
    sid: SessionId,
) -> Result<(Pid, CapRef), StartError> {
    let start = SessionStart {
        session_id: sid,
        store: derive(sys, b.store, scoped(session_cap_scope(sid)))?,
        llm: derive(sys, b.llm, Attenuation::default())?,
        spawn: sys.derive(b.spawn, Right::Spawn.into())?,
        fs: b
            .fs
            .map(|c| derive(sys, c, Attenuation::default()))
            .transpose()?,
        exec: b
            .exec
            .map(|c| derive(sys, c, Attenuation::default()))
            .transpose()?,
    };
    let mut caps = vec![start.store, start.llm, start.spawn];
    caps.extend(start.fs);
    caps.extend(start.exec);
    start_child(
        sys,
        session_image(shared.clone(), sid),
        shared.config.session_quota,
        start,
        caps,
    )
    .await
}

async fn recv_start<S: Syscalls, T: Send + Sync + 'static>(sys: &S) -> (T, Pid) {
    loop {
        let m = sys.recv().await;
        let from = m.from;
        if let Ok(s) = m.body.downcast::<T>() {
            return (s, from);
        }
    }
}

/// A run process as its session knows it.
struct RunProc {
    pid: Pid,
    cap: CapRef,
    /// Messages the session has sent it since it started (see [`Idle`]).
    sent: u64,
}

/// The session's state: its caps, its open store handle, its live runs.
struct Session<'a, S: Syscalls> {
    sys: &'a S,
    shared: &'a Arc<EngineShared>,
    start: SessionStart,
    store: CapRef,
    runs: HashMap<RunId, RunProc>,
}

impl<S: Syscalls> Session<'_, S> {
    /// Sends `body` to a live run, counting it.
    async fn send(&mut self, run_id: RunId, body: Body, caps: Vec<CapRef>) -> bool {
        let Some(r) = self.runs.get_mut(&run_id) else {
            return false;
        };
        let opts = SendOpts {
            caps,
            ..SendOpts::default()
        };
        if self.sys.send(r.cap, body, opts).await.is_ok() {
            r.sent += 1;
            true
        } else {
            self.runs.remove(&run_id);
            false
        }
    }

    /// The run's process, spawned if it is not up. `Err((status, message))`: the run is not
    /// this session's (404) or the session's quota leaves it no process (508; its queued
    /// loops are ended 508 then, so none waits for a process that will not come).
    async fn ensure(&mut self, run_id: RunId) -> Result<(), (u16, String)> {
        if self.runs.contains_key(&run_id) {
            return Ok(());
        }
        let sys = self.sys;
        let run: Option<RunRow> = store_call(sys, self.store, &StoreRequest::SessionRun { run_id })
            .await
            .map_err(|e| (500, format!("500 {e}")))?;
        if run.is_none() {
            return Err((404, format!("404 no run {run_id} in this session")));
        }
        let scope = StoreScope {
            session_id: self.start.session_id,
            run_id,
        };
        let started = async {
            let start = RunStart {
                scope,
                store: derive(sys, self.start.store, scoped(scope.cap_scope()))?,
                llm: derive(sys, self.start.llm, Attenuation::default())?,
                spawn: sys.derive(self.start.spawn, Right::Spawn.into())?,
                session: sys.self_cap(),
            };
            let caps = vec![start.store, start.llm, start.spawn, start.session];
            start_child(
                sys,
                run_image(self.shared.clone(), run_id),
                Quota::default(),
                start,
                caps,
            )
            .await
        }
        .await;
        match started {
            Ok((pid, cap)) => {
                self.runs.insert(run_id, RunProc { pid, cap, sent: 0 });
                Ok(())
            }
            Err(e) => {
                let (s, msg) = e.status();
                let _: Result<usize, _> = store_call(
                    sys,
                    self.store,
                    &StoreRequest::EndQueued {
                        run_id,
                        status: s,
                        message: msg.clone(),
                    },
                )
                .await;
                sys.log(
                    agentos_abi::sys::LogLevel::Warn,
                    &format!("session {}: run {run_id}: {msg}", self.start.session_id),
                );
                Err((s, msg))
            }
        }
    }

    /// Delivers `msg` to the run, starting it if needed (a run that died meanwhile is
    /// started again once).
    async fn deliver(&mut self, run_id: RunId, msg: RunMsg) -> Result<(), (u16, String)> {
        for _ in 0..2 {
            self.ensure(run_id).await?;
            if self
                .send(run_id, Body::local(msg.clone()), Vec::new())
                .await
            {
                return Ok(());
            }
        }
        Err((500, format!("500 run {run_id}'s process is gone")))
    }

    /// Sends `msg` to the run if its process is up (cancel and resolve act on a running
    /// loop only).
    async fn if_live(&mut self, run_id: RunId, msg: RunMsg) {
        let _ = self.send(run_id, Body::local(msg), Vec::new()).await;
    }

    async fn host(&mut self, cmd: HostCmd) {
        let refused = match cmd {
            HostCmd::Run { run_id, .. } => self.deliver(run_id, RunMsg::Run).await,
            HostCmd::Inject {
                run_id,
                prompt,
                flags,
                ..
            } => self.deliver(run_id, RunMsg::Inject { prompt, flags }).await,
            HostCmd::Cancel { run_id, .. } => {
                self.if_live(run_id, RunMsg::Cancel).await;
                Ok(())
            }
            HostCmd::Resolve {
                run_id, resolution, ..
            } => {
                self.if_live(run_id, RunMsg::Resolve(resolution)).await;
                Ok(())
            }
            HostCmd::Client { run_id, job, .. } => {
                let reply = job.reply.clone();
                let r = self.deliver(run_id, RunMsg::Client(job)).await;
                // The host waits for an answer: a run that cannot take the job says why.
                if let Err((_, why)) = &r {
                    reply.send(Err(ClientRefusal::Failed(why.clone())));
                }
                r
            }
        };
        if let Err((_, why)) = refused {
            self.sys.log(
                agentos_abi::sys::LogLevel::Warn,
                &format!("session {}: {why}", self.start.session_id),
            );
        }
    }

    /// A run's loop acts on a run of the session; the answer goes back through the run.
    async fn control(&mut self, from: RunId, req: RunRequest) {
        let refused = match req.control {
            RunControl::Wake { run_id } => self.deliver(run_id, RunMsg::Run).await,
            RunControl::Inject {
                run_id,
                prompt,
                flags,
            } => self.deliver(run_id, RunMsg::Inject { prompt, flags }).await,
            RunControl::Cancel { run_id } => {
                self.if_live(run_id, RunMsg::Cancel).await;
                Ok(())
            }
        }
        .err();
        if let Some(loop_id) = req.loop_id {
            let answer = RunAnswer {
                loop_id,
                id: req.id,
                refused,
            };
            self.send(from, Body::local(answer), Vec::new()).await;
        }
    }

    /// The caps of a run's next loop, from the session's root and overlay as they are now.
    async fn loop_caps(&self, ask: bool) -> Result<(Option<CapRef>, Option<CapRef>), String> {
        let sys = self.sys;
        let session: SessionRow = store_call(sys, self.store, &StoreRequest::Session)
            .await
            .map_err(|e| e.to_string())?;
        let Some(root) = session.project_root.as_deref() else {
            return Ok((None, None));
        };
        let overlay: Vec<(String, String)> =
            store_call(sys, self.store, &StoreRequest::Constraints)
                .await
                .map_err(|e| e.to_string())?;
        let fs = match self.start.fs {
            Some(fs) => Some(
                derive(
                    sys,
                    fs,
                    Attenuation {
                        rights: ask.then(|| Rights::of(&[Right::Open, Right::Read])),
                        scope: Some(fs_scope(root, &overlay)),
                        ..Attenuation::default()
                    },
                )
                .map_err(|e| e.to_string())?,
            ),
            None => None,
        };
        let exec = match self.start.exec {
            Some(exec) if !ask => Some(
                derive(
                    sys,
                    exec,
                    scoped(agentos_abi::Scope::new().with(agentos_abi::Scope::ROOT, root)),
                )
                .map_err(|e| e.to_string())?,
            ),
            _ => None,
        };
        Ok((fs, exec))
    }
}

/// A session: its process's account is the session's budget; it spawns the session's runs
/// (their accounts under its own), grants their loops' caps and relays their run:// requests.
pub fn session_image<S: Syscalls>(shared: Arc<EngineShared>, sid: SessionId) -> Image<S> {
    Image::new(&format!("session:{sid}"), move |sys: S, _args: Value| {
        let shared = shared.clone();
        async move {
            let (start, root): (SessionStart, Pid) = recv_start(&sys).await;
            let _ = sys.register(&format!("session:{}", start.session_id));
            let store = sys.open(start.store).await?;
            let mut s = Session {
                sys: &sys,
                shared: &shared,
                start,
                store,
                runs: HashMap::new(),
            };
            loop {
                let m = sys.recv().await;
                if let Some(SysMsg::Down { pid, .. }) = m.sys() {
                    let pid = *pid;
                    s.runs.retain(|_, r| r.pid != pid);
                    continue;
                }
                let from = m.from;
                let corr = m.corr;
                if from == root {
                    if let Ok(cmd) = m.body.downcast::<HostCmd>() {
                        s.host(cmd).await;
                    }
                    continue;
                }
                // Everything else comes from the session's own runs.
                let Some(run_id) = s
                    .runs
                    .iter()
                    .find(|(_, r)| r.pid == from)
                    .map(|(id, _)| *id)
                else {
                    continue;
                };
                let body = match m.body.downcast::<RunRequest>() {
                    Ok(req) => {
                        s.control(run_id, req).await;
                        continue;
                    }
                    Err(b) => b,
                };
                let body = match body.downcast::<LoopCaps>() {
                    Ok(LoopCaps { ask }) => {
                        let granted = s.loop_caps(ask).await;
                        let caps = match &granted {
                            Ok((fs, exec)) => fs.iter().chain(exec.iter()).copied().collect(),
                            Err(_) => Vec::new(),
                        };
                        if let Some(r) = s.runs.get_mut(&run_id) {
                            let opts = SendOpts {
                                caps,
                                corr,
                                ..SendOpts::default()
                            };
                            let body = Body::local(LoopCapsGranted(granted));
                            if sys.send(r.cap, body, opts).await.is_ok() {
                                r.sent += 1;
                            }
                        }
                        continue;
                    }
                    Err(b) => b,
                };
                if let Ok(Idle { seen }) = body.downcast::<Idle>() {
                    // Nothing on its way to the run: end it (a later message starts it
                    // again). Otherwise it has mail to read and will say so again.
                    if s.runs.get(&run_id).is_some_and(|r| r.sent == seen) {
                        if let Some(r) = s.runs.remove(&run_id) {
                            let _ = sys.signal(r.cap, Some(ExitReason::Normal)).await;
                        }
                    }
                }
            }
        }
    })
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

/// The run's view of its session: its cap and pid, and how many messages it took from it.
struct Upstream {
    cap: CapRef,
    pid: Pid,
    seen: u64,
    next_corr: u64,
}

impl Upstream {
    /// Asks the session for a loop's caps and waits for them (they arrive owned by the run,
    /// which hands them to the loop).
    async fn loop_caps<S: Syscalls>(
        &mut self,
        sys: &S,
        ask: bool,
    ) -> Result<(Option<CapRef>, Option<CapRef>), String> {
        self.next_corr += 1;
        let corr = self.next_corr;
        sys.send(
            self.cap,
            Body::local(LoopCaps { ask }),
            SendOpts {
                corr: Some(corr),
                ..SendOpts::default()
            },
        )
        .await
        .map_err(|e| format!("the session is gone: {e}"))?;
        let deadline = sys.now().saturating_add(ASK_TIMEOUT_MS);
        // From the session, not only by correlation id: a child's `Down` carries its
        // monitor's reference as its id, and a look or a finishing loop may end meanwhile.
        let session = self.pid;
        let m = sys
            .recv_where(
                move |m| m.from == session && m.corr == Some(corr),
                Some(deadline),
            )
            .await
            .ok_or_else(|| "the session granted no caps in time".to_owned())?;
        self.seen += 1;
        match m.body.downcast::<LoopCapsGranted>() {
            Ok(LoopCapsGranted(r)) => r,
            Err(_) => Err("the session answered something else".into()),
        }
    }
}

/// The caps a run derives for a loop: its own store, its llm for a model loop (`model`; a
/// client loop never asks a model), a spawn cap when the loop may EXEC (for its stream
/// pumps), and the session's `fs`/`exec` grant, passed on whole.
fn loop_start<S: Syscalls>(
    sys: &S,
    run: &RunStart,
    loop_id: LoopId,
    (fs, exec): (Option<CapRef>, Option<CapRef>),
    model: bool,
) -> Result<(LoopStart, Vec<CapRef>), SysError> {
    let spawn = match exec {
        Some(_) => Some(sys.derive(run.spawn, Right::Spawn.into())?),
        None => None,
    };
    let llm = match model {
        true => Some(derive(sys, run.llm, Attenuation::default())?),
        false => None,
    };
    let start = LoopStart {
        store: derive(sys, run.store, Attenuation::default())?,
        llm,
        spawn,
        fs,
        exec,
        loop_id,
    };
    let mut caps = vec![start.store];
    caps.extend(start.llm);
    caps.extend(start.spawn);
    caps.extend(start.fs);
    caps.extend(start.exec);
    Ok((start, caps))
}

/// What a run derives for a look from the session's ask-mode grant: its store cap narrowed
/// to reading, the read-only `fs` cap — no `exec`, `llm` or spawn cap: a look changes
/// nothing.
fn look_start<S: Syscalls>(
    sys: &S,
    run: &RunStart,
    (fs, _exec): (Option<CapRef>, Option<CapRef>),
) -> Result<(LoopStart, Vec<CapRef>), SysError> {
    let start = LoopStart {
        store: derive(
            sys,
            run.store,
            Attenuation {
                rights: Some(Rights::of(&[Right::Open, Right::Read])),
                ..Attenuation::default()
            },
        )?,
        llm: None,
        spawn: None,
        fs,
        exec: None,
        loop_id: 0,
    };
    let mut caps = vec![start.store];
    caps.extend(start.fs);
    Ok((start, caps))
}

/// The loop a run is running (or parked on).
struct Active {
    lp: LoopRow,
    pid: Pid,
    cap: CapRef,
    /// Cancel asked for it (its death is then 499).
    cancelled: bool,
    resolver: Resolver,
    /// A client loop: a model's parent run hears nothing of it, an inject does not fold
    /// into it.
    client: bool,
}

/// What a drain step did.
enum Drained {
    /// A loop started.
    Started(Active),
    /// A queued loop could not start and now has a terminal status: look again.
    Ended,
    /// Nothing to start (nothing queued, or the store failed).
    Empty,
}

/// Claims the run's oldest queued loop and starts it.
async fn drain<S: Syscalls>(
    sys: &S,
    shared: &Arc<EngineShared>,
    start: &RunStart,
    store: CapRef,
    up: &mut Upstream,
) -> Drained {
    let next: Result<Option<LoopRow>, _> = store_call(sys, store, &StoreRequest::NextQueued).await;
    let Some(lp) = next.ok().flatten() else {
        return Drained::Empty;
    };
    let claimed: Result<bool, _> =
        store_call(sys, store, &StoreRequest::Claim { loop_id: lp.id }).await;
    match claimed {
        Ok(true) => {}
        // Not queued any more: look again.
        Ok(false) => return Drained::Ended,
        Err(_) => return Drained::Empty,
    }
    let flags = LoopFlags::from_json(&lp.flags).unwrap_or_default();
    let quota = Quota {
        tokens: flags.budget_tokens,
        ..Quota::default()
    };
    let resolver = Resolver::for_flags(&flags);
    let started = match up.loop_caps(sys, flags.is_ask()).await {
        Ok(granted) => match loop_start(sys, start, lp.id, granted, true) {
            Ok((ls, caps)) => {
                start_child(sys, loop_image(shared.clone(), lp.id), quota, ls, caps).await
            }
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(StartError::Other(e)),
    };
    match started {
        Ok((pid, cap)) => Drained::Started(Active {
            lp,
            pid,
            cap,
            cancelled: false,
            resolver,
            client: false,
        }),
        Err(e) => {
            let (s, msg) = e.status();
            let ended: Result<LoopRow, _> = store_call(
                sys,
                store,
                &StoreRequest::SetStatus {
                    loop_id: lp.id,
                    status: s,
                    message: Some(msg),
                },
            )
            .await;
            if ended.is_ok() {
                Drained::Ended
            } else {
                Drained::Empty
            }
        }
    }
}

/// A loop died: cancel what waits on it, give it a status if it wrote none, and tell the
/// parent of a run a model spawned how its model loop concluded (a SEND delta from
/// `run://name`; it wakes an idle parent).
async fn loop_ended<S: Syscalls>(
    sys: &S,
    store: CapRef,
    up: &Upstream,
    a: &Active,
    reason: &ExitReason,
) {
    let lp = &a.lp;
    let _: Result<usize, _> = store_call(
        sys,
        store,
        &StoreRequest::CancelProposals { loop_id: lp.id },
    )
    .await;
    let cur: Result<LoopRow, _> =
        store_call(sys, store, &StoreRequest::Loop { loop_id: lp.id }).await;
    if matches!(&cur, Ok(l) if !status::is_terminal(l.status)) {
        let (s, msg) = exit_status(reason, a.cancelled);
        let _: Result<LoopRow, _> = store_call(
            sys,
            store,
            &StoreRequest::SetStatus {
                loop_id: lp.id,
                status: s,
                message: Some(msg),
            },
        )
        .await;
    }
    if a.client {
        return;
    }
    let ended: Result<LoopRow, _> =
        store_call(sys, store, &StoreRequest::Loop { loop_id: lp.id }).await;
    let me: Result<RunRow, _> = store_call(sys, store, &StoreRequest::Run).await;
    if let (Ok(l), Ok(me)) = (ended, me) {
        if let (Some(parent), crate::store::Origin::Model) = (me.parent_run_id, me.origin) {
            let note = RunRequest {
                loop_id: None,
                id: 0,
                control: RunControl::Inject {
                    run_id: parent,
                    prompt: format!(
                        "run://{} concluded {}: {}",
                        me.name,
                        l.status,
                        l.terminal_message.unwrap_or_default()
                    ),
                    flags: l.flags,
                },
            };
            let _ = sys
                .send(up.cap, Body::local(note), SendOpts::default())
                .await;
        }
    }
}

/// What a client job started in the run.
enum ClientStarted {
    /// A look, beside whatever runs: its process.
    Look(Pid),
    /// A client loop: the run's active loop now.
    Loop(Active),
    /// Nothing (the job was answered: refused, or it could not start).
    Nothing,
}

/// Starts a client job (see [`super::client`]): a look in a child with read-only caps, or —
/// when the run has no active loop — a client loop the run queues and claims itself (the
/// drain is this process, so nothing else claims it), its caps granted by the session as it
/// is now, like any loop's. A busy run answers [`ClientRefusal::Busy`].
async fn start_client<S: Syscalls>(
    sys: &S,
    shared: &Arc<EngineShared>,
    start: &RunStart,
    store: CapRef,
    up: &mut Upstream,
    active: Option<&Active>,
    job: ClientJob,
) -> ClientStarted {
    let fail = |job: &ClientJob, why: String| job.reply.send(Err(ClientRefusal::Failed(why)));
    let run_id = start.scope.run_id;
    if job.look {
        let started = match up.loop_caps(sys, true).await {
            Ok(granted) => match look_start(sys, start, granted) {
                Ok((caps, transfer)) => {
                    let image = client_image(shared.clone(), format!("look:{run_id}"));
                    let cs = ClientStart {
                        caps,
                        run_id,
                        job: job.clone(),
                    };
                    start_child(sys, image, Quota::default(), cs, transfer).await
                }
                Err(e) => Err(e.into()),
            },
            Err(e) => Err(StartError::Other(e)),
        };
        return match started {
            Ok((pid, _)) => ClientStarted::Look(pid),
            Err(e) => {
                fail(&job, format!("cannot start the look: {}", e.status().1));
                ClientStarted::Nothing
            }
        };
    }
    if let Some(a) = active {
        job.reply
            .send(Err(ClientRefusal::Busy { loop_id: a.lp.id }));
        return ClientStarted::Nothing;
    }
    let flags = LoopFlags::default();
    let queued: Result<LoopRow, _> = store_call(
        sys,
        store,
        &StoreRequest::Queue {
            prompt: job.text.clone(),
            flags: flags.to_json(),
            max_turns: Some(1),
        },
    )
    .await;
    let lp = match queued {
        Ok(lp) => lp,
        Err(e) => {
            fail(&job, format!("cannot queue the client loop: {e}"));
            return ClientStarted::Nothing;
        }
    };
    let claimed: Result<bool, _> =
        store_call(sys, store, &StoreRequest::Claim { loop_id: lp.id }).await;
    if !matches!(claimed, Ok(true)) {
        fail(&job, format!("client loop {} was not claimed", lp.id));
        return ClientStarted::Nothing;
    }
    let started = match up.loop_caps(sys, flags.is_ask()).await {
        Ok(granted) => match loop_start(sys, start, lp.id, granted, false) {
            Ok((caps, transfer)) => {
                let image = client_image(shared.clone(), format!("client:{}", lp.id));
                let cs = ClientStart {
                    caps,
                    run_id,
                    job: job.clone(),
                };
                start_child(sys, image, Quota::default(), cs, transfer).await
            }
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(StartError::Other(e)),
    };
    match started {
        Ok((pid, cap)) => ClientStarted::Loop(Active {
            lp,
            pid,
            cap,
            cancelled: false,
            resolver: Resolver::for_flags(&flags),
            client: true,
        }),
        Err(e) => {
            let (s, msg) = e.status();
            let _: Result<LoopRow, _> = store_call(
                sys,
                store,
                &StoreRequest::SetStatus {
                    loop_id: lp.id,
                    status: s,
                    message: Some(msg.clone()),
                },
            )
            .await;
            fail(&job, format!("cannot start the client loop: {msg}"));
            ClientStarted::Nothing
        }
    }
}

/// A run: drains its queued loops one at a time; `inject` folds a prompt into the active
/// model loop (its next turn) or queues a loop; `cancel` kills the active loop; client
/// statements run as a client loop between loops, a look beside them; idle (no loop, no
/// child up), it tells its session, which may end it.
pub fn run_image<S: Syscalls>(shared: Arc<EngineShared>, run_id: RunId) -> Image<S> {
    Image::new(&format!("run:{run_id}"), move |sys: S, _args: Value| {
        let shared = shared.clone();
        async move {
            let (start, session_pid): (RunStart, Pid) = recv_start(&sys).await;
            let scope = start.scope;
            let _ = sys.register(&format!("run:{}", scope.run_id));
            let store = sys.open(start.store).await?;
            let mut up = Upstream {
                cap: start.session,
                pid: session_pid,
                seen: 0,
                next_corr: 0,
            };
            let mut active: Option<Active> = None;
            // Loops past their last commit (a terminal status) whose process has not ended
            // yet: they no longer hold the run, their end is still recorded.
            let mut finishing: Vec<Active> = Vec::new();
            // Looks still running.
            let mut looks: Vec<Pid> = Vec::new();
            loop {
                if active.is_none() {
                    match drain(&sys, &shared, &start, store, &mut up).await {
                        Drained::Started(a) => active = Some(a),
                        // A loop that could not start may leave others queued.
                        Drained::Ended => continue,
                        // Idle once no child is up either (ending the run would end it).
                        Drained::Empty if looks.is_empty() && finishing.is_empty() => {
                            let idle = Idle { seen: up.seen };
                            let _ = sys
                                .send(up.cap, Body::local(idle), SendOpts::default())
                                .await;
                        }
                        Drained::Empty => {}
                    }
                }
                let m = sys.recv().await;
                if m.from == up.pid {
                    up.seen += 1;
                }
                if let Some(SysMsg::Down { pid, reason }) = m.sys() {
                    let pid = *pid;
                    looks.retain(|p| *p != pid);
                    let ended = if active.as_ref().is_some_and(|a| a.pid == pid) {
                        active.take()
                    } else {
                        finishing
                            .iter()
                            .position(|a| a.pid == pid)
                            .map(|i| finishing.swap_remove(i))
                    };
                    // None: a look that finished, or a stale monitor.
                    if let Some(a) = ended {
                        loop_ended(&sys, store, &up, &a, reason).await;
                    }
                    continue;
                }
                let from = m.from;
                let body = match m.body.downcast::<RunRequest>() {
                    Ok(mut req) => {
                        // Only the active loop speaks for this run.
                        if let Some(a) = &active {
                            if a.pid == from {
                                req.loop_id = Some(a.lp.id);
                                let _ = sys
                                    .send(up.cap, Body::local(req), SendOpts::default())
                                    .await;
                            }
                        }
                        continue;
                    }
                    Err(b) => b,
                };
                let body = match body.downcast::<RunAnswer>() {
                    Ok(ans) => {
                        if let Some(a) = &active {
                            if a.lp.id == ans.loop_id {
                                let _ =
                                    sys.send(a.cap, Body::local(ans), SendOpts::default()).await;
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
                        if let Some(a) = &active {
                            if a.lp.id == p.loop_id {
                                if let Some(r) = a.resolver.decide(&p) {
                                    let _ =
                                        sys.send(a.cap, Body::local(r), SendOpts::default()).await;
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
                        Some(a) if !a.client => {
                            // The loop's own prompt is n = 1; injected ones follow.
                            let seen: Vec<(i64, String)> = store_call(
                                &sys,
                                store,
                                &StoreRequest::Prompts {
                                    loop_seq: a.lp.sequence,
                                },
                            )
                            .await
                            .unwrap_or_default();
                            let n = seen.last().map_or(1, |(n, _)| *n).max(1) + 1;
                            let key =
                                entry_key("plurnk", &format!("/prompt/{}/{n}", a.lp.sequence));
                            let w = EntryWrite::Put {
                                key,
                                channel: channel("body", prompt, "text/markdown"),
                                tags: None,
                            };
                            let _: Result<(), _> =
                                store_call(&sys, store, &StoreRequest::Write(vec![w])).await;
                        }
                        // No model loop to fold it into (a client loop asks no model): it
                        // queues, and the drain starts it when the run is free.
                        _ => {
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
                        if let Some(a) = &mut active {
                            a.cancelled = true;
                            let _ = sys.signal(a.cap, None).await;
                        }
                    }
                    RunMsg::Resolve(r) => {
                        if let Some(a) = &active {
                            let _ = sys.send(a.cap, Body::local(r), SendOpts::default()).await;
                        }
                    }
                    RunMsg::Client(job) => {
                        // The store says whether the active loop still holds the run: one
                        // past its last commit only has to exit (its `loop/terminated` may
                        // reach a client before its process is down).
                        if let (Some(a), false) = (&active, job.look) {
                            let cur: Result<LoopRow, _> =
                                store_call(&sys, store, &StoreRequest::Loop { loop_id: a.lp.id })
                                    .await;
                            if matches!(&cur, Ok(l) if status::is_terminal(l.status)) {
                                finishing.extend(active.take());
                            }
                        }
                        let started = start_client(
                            &sys,
                            &shared,
                            &start,
                            store,
                            &mut up,
                            active.as_ref(),
                            job,
                        )
                        .await;
                        match started {
                            ClientStarted::Look(pid) => looks.push(pid),
                            ClientStarted::Loop(a) => active = Some(a),
                            ClientStarted::Nothing => {}
                        }
                    }
                }
            }
        }
    })
}

/// Opens a loop's device handles beyond the store (`fs` writable or not by its cap's
/// rights; `exec` only with a spawn cap for its pumps) and what its pumps need.
async fn open_devices<S: Syscalls>(
    sys: &S,
    start: &LoopStart,
) -> Result<(Devices, Option<Pumps>), SysError> {
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
    Ok((devices, pumps))
}

/// A model loop: opens its handles and runs turns until the loop has a terminal status.
pub fn loop_image<S: Syscalls>(shared: Arc<EngineShared>, loop_id: LoopId) -> Image<S> {
    Image::new(&format!("loop:{loop_id}"), move |sys: S, _args: Value| {
        let shared = shared.clone();
        async move {
            let (start, _): (LoopStart, Pid) = recv_start(&sys).await;
            let store = sys.open(start.store).await?;
            let llm = match start.llm {
                Some(l) => Some(sys.open(l).await?),
                None => None,
            };
            let (devices, pumps) = open_devices(&sys, &start).await?;
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

/// A client job's process (see [`super::client`]), named `name`: a look (read-only caps, no
/// loop) answers its READs and ends; a client loop runs its one client turn, answering once
/// its rows are committed, and ends when its proposals are settled.
pub fn client_image<S: Syscalls>(shared: Arc<EngineShared>, name: String) -> Image<S> {
    Image::new(&name, move |sys: S, _args: Value| {
        let shared = shared.clone();
        async move {
            let (cs, _): (ClientStart, Pid) = recv_start(&sys).await;
            let ClientStart {
                caps: start,
                run_id,
                job,
            } = cs;
            let failed = |e: &dyn std::fmt::Display| {
                job.reply.send(Err(ClientRefusal::Failed(e.to_string())));
                SysError::Driver(e.to_string())
            };
            let store = sys.open(start.store).await.map_err(|e| failed(&e))?;
            let (devices, pumps) = open_devices(&sys, &start).await.map_err(|e| failed(&e))?;
            if job.look {
                let answer =
                    super::client::look(&sys, store, &devices, run_id, &shared.config, &job.text)
                        .await;
                job.reply.send(answer);
                return Ok(());
            }
            let runner = LoopRunner::load(
                sys.clone(),
                store,
                None,
                shared.config.clone(),
                start.loop_id,
                devices,
                pumps,
            )
            .await
            .map_err(|e| failed(&e))?;
            runner
                .client(&job.reply)
                .await
                .map_err(|e| SysError::Driver(e.to_string()))?;
            Ok(())
        }
    })
}
