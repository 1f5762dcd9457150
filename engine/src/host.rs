//! # The host API
//!
//! [`Engine`] is what a host — the CLI's `agentos run`, the daemon, a test — calls: create
//! sessions and runs, set a session's project root, start / inject / cancel a loop, run a
//! client's own statements in a run ([`Engine::client_ops`], [`Engine::look`]), read the
//! log, subscribe to row writes, wait for a loop to end, resolve a proposal, list a
//! session's project members. It owns a kernel with the engine's devices and boots the
//! engine root process; everything a loop does happens in kernel processes through device
//! I/O, and the host only queues work (rows in the store) and sends messages.
//!
//! **Invariants:** the host never writes a run's rows (only sessions, runs, queued loops
//! and session documents) — a client's statements are dispatched by a process of the run;
//! a queued loop survives a run process that is not up yet; `wait_loop` and `client_ops`
//! never hang on an idle deterministic kernel — they report it.
//!
//! **API boundary:** [`Engine`], [`LoopOptions`], [`EngineError`], [`Account`], and the
//! client ops' [`OpResult`]. The kernel must have an `llm` driver registered before
//! [`Engine::start`].

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use agentos_abi::{Body, Budget, Pid, Quota, Usage};
use agentos_kernel::{BootOpts, Kernel, Mode};

use crate::schemes::world::channel;
use crate::schemes::BUILTIN;
use crate::store::device::{StoreDriver, STORE_DEVICE};
use crate::store::{
    status, EntryKey, EntryWrite, LogQuery, LogRow, LoopId, LoopRow, Origin, RowId, RowState,
    RunId, RunRow, SessionId, SessionRow, Store, StoreError, StoreEvent, SubscriberId,
};
pub use crate::turn::client::OpResult;
use crate::turn::client::{ClientAnswer, ClientJob, ClientRefusal, ReplyTo};
use crate::turn::process::{root_image, EngineShared, HostCmd, EXEC_DEVICE, FS_DEVICE, LLM_DEVICE};
use crate::turn::proposal::{Decision, Resolution};
use crate::turn::{EngineConfig, LoopFlags};

/// How long [`Engine::client_ops`] and [`Engine::look`] wait for the run's answer on a
/// multi-threaded kernel (plurnk's `PLURNK_SERVICE_RPC_TIMEOUT` default, 30 s). The answer
/// comes once the statements are dispatched and committed, not when proposals are decided.
pub const CLIENT_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a host call failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The kernel refused (a missing driver, a shut-down kernel).
    #[error("kernel: {0}")]
    Kernel(String),
    /// The engine root is gone (the kernel shut down).
    #[error("the engine is not running")]
    NotRunning,
    /// A deterministic kernel went idle with the loop unfinished.
    #[error("loop {loop_id} is stuck at status {status}: the kernel is idle")]
    Stuck {
        /// The loop.
        loop_id: LoopId,
        /// Its status.
        status: u16,
    },
    /// Waiting for a loop timed out.
    #[error("timed out waiting for loop {0}")]
    Timeout(LoopId),
    /// `resolve` named a row that is not a pending proposal.
    #[error("log row {0} is not a pending proposal")]
    NotPending(RowId),
    /// Client statements were asked of a run whose loop is running or parked: a client
    /// turn runs between loops, never inside one.
    #[error("run {run_id} is busy with loop {loop_id}; client ops run between loops (wait for loop/terminated, or loop.cancel)")]
    RunBusy {
        /// The run.
        run_id: RunId,
        /// Its active loop.
        loop_id: LoopId,
    },
    /// The request cannot be run as asked (a look that is not READs, a run of another
    /// session).
    #[error("{0}")]
    BadRequest(String),
    /// The client statements were taken but failed before an answer (the text says why).
    #[error("client ops failed: {0}")]
    ClientOps(String),
    /// The run did not answer client statements in time.
    #[error("run {run_id} did not answer within {waited:?}")]
    NoAnswer {
        /// The run.
        run_id: RunId,
        /// How long the host waited.
        waited: Duration,
    },
    /// A session's project files could not be listed (its root is gone or unreadable, or an
    /// overlay pattern is malformed).
    #[error("the project files of session {session_id}: {message}")]
    Members {
        /// The session.
        session_id: SessionId,
        /// What is wrong.
        message: String,
    },
}

/// How to run a loop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoopOptions {
    /// Flags (mode, yolo, budget…).
    pub flags: LoopFlags,
    /// Turn limit (`None`: the engine's default).
    pub max_turns: Option<u32>,
}

/// A session's or a run's account, as the kernel reports it for its process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The process holding it.
    pub pid: Pid,
    /// The image name of the process whose account is its parent (`engine` for a session,
    /// `session:<id>` for a run).
    pub parent: Option<String>,
    /// What the account's subtree has spent (tokens, usd, tool calls; `children` live now).
    pub usage: Usage,
    /// What is left at this level (`None`: unlimited here).
    pub budget: Budget,
}

/// The engine: a kernel with the store device, the engine root process, and the store.
pub struct Engine {
    kernel: Kernel,
    store: Arc<Store>,
    shared: Arc<EngineShared>,
    root: Pid,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("root", &self.root).finish()
    }
}

impl Engine {
    /// Registers the `store` device on `kernel` (which must already have an `llm` driver)
    /// and boots the engine root.
    pub fn start(
        kernel: Kernel,
        store: Arc<Store>,
        config: EngineConfig,
    ) -> Result<Engine, EngineError> {
        for m in BUILTIN.iter() {
            store.register_scheme(&m.record())?;
        }
        kernel
            .register_driver(Arc::new(StoreDriver::new(store.clone())))
            .map_err(|e| EngineError::Kernel(e.to_string()))?;
        // Project files: one `fs` driver serves every session's root (a host may register
        // its own, e.g. on another I/O runtime).
        if !kernel.has_driver(FS_DEVICE) {
            let fs = agentos_drivers::FsDriver::new()
                .map_err(|e| EngineError::Kernel(format!("fs device: {e}")))?;
            kernel
                .register_driver(Arc::new(fs))
                .map_err(|e| EngineError::Kernel(e.to_string()))?;
        }
        // Commands: sandboxed with bubblewrap when it works here, else refused (the driver's
        // `Sandbox::Auto`); a host registers its own `exec` driver for another policy.
        if !kernel.has_driver(EXEC_DEVICE) {
            let exec = agentos_drivers::ExecDriver::new(agentos_drivers::ExecConfig::default())
                .map_err(|e| EngineError::Kernel(format!("exec device: {e}")))?;
            kernel
                .register_driver(Arc::new(exec))
                .map_err(|e| EngineError::Kernel(e.to_string()))?;
        }
        let shared = Arc::new(EngineShared {
            config: Arc::new(config),
        });
        let mut grant = vec![STORE_DEVICE.into(), LLM_DEVICE.into()];
        for d in [FS_DEVICE, EXEC_DEVICE] {
            if kernel.has_driver(d) {
                grant.push(d.into());
            }
        }
        let root = kernel
            .boot(
                root_image(shared.clone()),
                BootOpts {
                    quota: Quota::default(),
                    grant,
                    ..BootOpts::default()
                },
            )
            .map_err(|e| EngineError::Kernel(e.to_string()))?;
        Ok(Engine {
            kernel,
            store,
            shared,
            root,
        })
    }

    /// The kernel the engine runs on.
    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    /// The sessions store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The engine's configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    /// Creates a session and materialises its documentation entries (`plurnk:///docs/<scheme>.md`
    /// for every scheme, `plurnk:///<ALIAS>.md` for every operator doc).
    pub fn create_session(
        &self,
        name: Option<&str>,
        project_root: Option<&str>,
        settings_json: &str,
    ) -> Result<SessionRow, EngineError> {
        let s = self
            .store
            .create_session(name, project_root, settings_json)?;
        let mut docs: Vec<EntryWrite> = BUILTIN
            .iter()
            .map(|m| EntryWrite::Put {
                key: EntryKey::session("plurnk", format!("/docs/{}.md", m.name)),
                channel: channel("body", m.documentation.to_owned(), "text/markdown"),
                tags: None,
            })
            .collect();
        for (alias, text) in &self.shared.config.operator_docs {
            docs.push(EntryWrite::Put {
                key: EntryKey::session("plurnk", format!("/{alias}.md")),
                channel: channel("body", text.clone(), "text/markdown"),
                tags: None,
            });
        }
        self.store.write_entries(s.id, 0, &docs)?;
        Ok(s)
    }

    /// Creates a run in a session.
    pub fn create_run(
        &self,
        session_id: SessionId,
        name: &str,
        origin: Origin,
    ) -> Result<RunRow, EngineError> {
        Ok(self.store.create_run(session_id, name, origin, None)?)
    }

    /// The session of a run.
    fn session_of(&self, run_id: RunId) -> Result<SessionId, EngineError> {
        Ok(self.store.run(run_id)?.session_id)
    }

    /// Sets a session's project root (`None`: headless). Runs already started see it from
    /// their next loop: each loop is granted its `fs` and `exec` caps from the session as it
    /// is when the loop starts. The root must be an existing directory.
    pub fn set_root(
        &self,
        session_id: SessionId,
        project_root: Option<&str>,
    ) -> Result<(), EngineError> {
        if let Some(root) = project_root {
            if !std::path::Path::new(root).is_dir() {
                return Err(EngineError::Store(StoreError::Refused(format!(
                    "project root {root:?} is not a directory"
                ))));
            }
        }
        Ok(self.store.set_project_root(session_id, project_root)?)
    }

    /// What a session's account has spent and has left (the account of its process, which
    /// every run and loop of the session spends under); `None` while the session has no
    /// process (no loop has run in it since the engine started).
    pub fn session_account(&self, session_id: SessionId) -> Option<Account> {
        self.account(&format!("session:{session_id}"))
    }

    /// What a run's account has spent and has left; `None` while the run has no process
    /// (it is idle: a run's process lives while it has loops to run).
    pub fn run_account(&self, run_id: RunId) -> Option<Account> {
        self.account(&format!("run:{run_id}"))
    }

    fn account(&self, name: &str) -> Option<Account> {
        let ps = self.kernel.ps();
        let p = ps.iter().find(|p| &*p.name == name)?;
        let parent = p
            .parent
            .and_then(|pp| ps.iter().find(|q| q.pid == pp))
            .map(|q| q.name.to_string());
        Some(Account {
            pid: p.pid,
            parent,
            usage: p.usage,
            budget: p.budget,
        })
    }

    fn tell(&self, cmd: HostCmd) -> Result<(), EngineError> {
        self.kernel
            .deliver_external(self.root, Body::local(cmd))
            .map_err(|_| EngineError::NotRunning)
    }

    /// Queues a loop on a run and wakes the run's drain. Returns the queued loop (status
    /// 100); its outcome arrives as a `Loop` store event, or through [`Engine::wait_loop`].
    pub fn start_loop(
        &self,
        run_id: RunId,
        prompt: &str,
        opts: &LoopOptions,
    ) -> Result<LoopRow, EngineError> {
        let session_id = self.session_of(run_id)?;
        let lp = self.store.create_loop(
            run_id,
            prompt,
            &opts.flags.to_json(),
            opts.max_turns.map(i64::from),
        )?;
        self.tell(HostCmd::Run { session_id, run_id })?;
        Ok(lp)
    }

    /// Speaks into a run: the prompt joins its active loop's next turn, or queues a loop.
    pub fn inject(
        &self,
        run_id: RunId,
        prompt: &str,
        flags: &LoopFlags,
    ) -> Result<(), EngineError> {
        self.tell(HostCmd::Inject {
            session_id: self.session_of(run_id)?,
            run_id,
            prompt: prompt.to_owned(),
            flags: flags.to_json(),
        })
    }

    /// Cancels a run's active loop: its process is killed (an in-flight model call is
    /// dropped) and the loop ends 499.
    pub fn cancel(&self, run_id: RunId) -> Result<(), EngineError> {
        let session_id = self.session_of(run_id)?;
        self.tell(HostCmd::Cancel { session_id, run_id })
    }

    /// Decides a pending proposal (PLURNK.md §3.6): the decision goes to the parked loop
    /// through its run's mailbox; the row's new state arrives as a `Resolved` store event.
    /// `outcome` overrides the decision's default reason.
    pub fn resolve(
        &self,
        row_id: RowId,
        decision: Decision,
        outcome: Option<&str>,
    ) -> Result<(), EngineError> {
        let row = self.store.log_row(row_id)?;
        if row.state != Some(RowState::Proposed) {
            return Err(EngineError::NotPending(row_id));
        }
        self.tell(HostCmd::Resolve {
            session_id: self.session_of(row.run_id)?,
            run_id: row.run_id,
            resolution: Resolution {
                row_id,
                decision,
                outcome: outcome.map(str::to_owned),
            },
        })
    }

    /// Runs a client's statements (DSL text) as one client turn of `run_id`, which must be a
    /// run of `session_id` (see [`crate::turn::client`]): dispatched with origin `client` by
    /// a process of the run that holds its device caps, every row (parse errors as `error`
    /// rows) committed in one transaction and notified as store events. Returns one result
    /// per row, or per action that writes none (a successful OPEN/FOLD), in order. A
    /// proposal answers 202 (state `proposed`) and is decided later through
    /// [`Engine::resolve`]. Refused with [`EngineError::RunBusy`] while the run has a loop
    /// running or parked. Blocks until the run answers (a deterministic kernel is driven
    /// on this thread).
    pub fn client_ops(
        &self,
        session_id: SessionId,
        run_id: RunId,
        text: &str,
    ) -> Result<Vec<OpResult>, EngineError> {
        self.client_job(session_id, run_id, text, false)
    }

    /// Runs READ statements for a client with no log row and no loop (PLURNK.md `op.look`),
    /// in a child of the run holding read-only caps; allowed beside an active loop. Text that
    /// is not one or more well-formed READs is [`EngineError::BadRequest`].
    pub fn look(
        &self,
        session_id: SessionId,
        run_id: RunId,
        text: &str,
    ) -> Result<Vec<OpResult>, EngineError> {
        crate::turn::client::check_look(text).map_err(EngineError::BadRequest)?;
        self.client_job(session_id, run_id, text, true)
    }

    fn client_job(
        &self,
        session_id: SessionId,
        run_id: RunId,
        text: &str,
        look: bool,
    ) -> Result<Vec<OpResult>, EngineError> {
        if self.session_of(run_id)? != session_id {
            return Err(EngineError::BadRequest(format!(
                "run {run_id} is not in session {session_id}"
            )));
        }
        let (reply, rx) = ReplyTo::channel();
        self.tell(HostCmd::Client {
            session_id,
            run_id,
            job: ClientJob {
                text: text.to_owned(),
                look,
                reply,
            },
        })?;
        let answer = self.await_answer(run_id, &rx)?;
        answer.map_err(|r| match r {
            ClientRefusal::Busy { loop_id } => EngineError::RunBusy { run_id, loop_id },
            ClientRefusal::Failed(why) => EngineError::ClientOps(why),
        })
    }

    /// Waits for a client job's answer: a deterministic kernel is run on this thread until
    /// it is quiet (its clock is not advanced, so a proposal's deadline does not pass); a
    /// multi-threaded one is waited on up to [`CLIENT_ANSWER_TIMEOUT`].
    fn await_answer(
        &self,
        run_id: RunId,
        rx: &mpsc::Receiver<ClientAnswer>,
    ) -> Result<ClientAnswer, EngineError> {
        let gone = || EngineError::ClientOps("the run's process ended before it answered".into());
        if let Mode::Deterministic { .. } = self.kernel.mode() {
            self.kernel.run_for(0);
            return match rx.try_recv() {
                Ok(a) => Ok(a),
                Err(mpsc::TryRecvError::Disconnected) => Err(gone()),
                Err(mpsc::TryRecvError::Empty) => Err(EngineError::NoAnswer {
                    run_id,
                    waited: Duration::ZERO,
                }),
            };
        }
        match rx.recv_timeout(CLIENT_ANSWER_TIMEOUT) {
            Ok(a) => Ok(a),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(gone()),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(EngineError::NoAnswer {
                run_id,
                waited: CLIENT_ANSWER_TIMEOUT,
            }),
        }
    }

    /// A session's project members after its membership overlay (PLURNK.md §2.3): what a
    /// writable `fs` handle of its runs lists, and the files `hide` keeps out; `None` for a
    /// headless session. The same membership code as the `fs` device
    /// (`agentos_drivers::fs::list`), run on the calling thread: it blocks on git and the
    /// disk. Runs read the overlay when their loop starts, so a constraint added since shows
    /// here before a running loop sees it.
    pub fn members(
        &self,
        session_id: SessionId,
    ) -> Result<Option<agentos_drivers::fs::Listing>, EngineError> {
        let session = self.store.session(session_id)?;
        let Some(root) = session.project_root else {
            return Ok(None);
        };
        let overlay = self.store.constraints(session_id)?;
        let scope = crate::turn::process::fs_scope(&root, &overlay);
        agentos_drivers::fs::list(&scope)
            .map(Some)
            .map_err(|message| EngineError::Members {
                session_id,
                message,
            })
    }

    /// Pending proposals, oldest first: of one run, or of every run when `run_id` is `None`.
    pub fn proposals(&self, run_id: Option<RunId>) -> Result<Vec<LogRow>, EngineError> {
        Ok(self.store.proposals(&LogQuery {
            run_id,
            ..LogQuery::default()
        })?)
    }

    /// A run's log, in write order.
    pub fn log(&self, run_id: RunId) -> Result<Vec<LogRow>, EngineError> {
        Ok(self.store.log_rows(run_id)?)
    }

    /// One loop's rows, in write order.
    pub fn loop_log(&self, loop_id: LoopId) -> Result<Vec<LogRow>, EngineError> {
        Ok(self.store.log_query(&LogQuery {
            loop_id: Some(loop_id),
            ..LogQuery::default()
        })?)
    }

    /// Calls `f` after every committed store write (rows, turns, loop statuses, sessions).
    pub fn subscribe(&self, f: impl Fn(&StoreEvent) + Send + Sync + 'static) -> SubscriberId {
        self.store.subscribe(f)
    }

    /// Stops a subscription.
    pub fn unsubscribe(&self, id: SubscriberId) {
        self.store.unsubscribe(id)
    }

    /// Waits until a loop has a terminal status and returns it. A deterministic kernel is
    /// driven on this thread; a multi-threaded one is waited on (up to `timeout`).
    pub fn wait_loop(
        &self,
        loop_id: LoopId,
        timeout: Option<Duration>,
    ) -> Result<LoopRow, EngineError> {
        if let Mode::Deterministic { .. } = self.kernel.mode() {
            loop {
                let before = self.store.loop_row(loop_id)?;
                if status::is_terminal(before.status) {
                    return Ok(before);
                }
                self.kernel.run();
                let after = self.store.loop_row(loop_id)?;
                if status::is_terminal(after.status) {
                    return Ok(after);
                }
                if after == before {
                    return Err(EngineError::Stuck {
                        loop_id,
                        status: after.status,
                    });
                }
            }
        }
        let (tx, rx) = mpsc::channel::<()>();
        let sub = self.store.subscribe(move |ev| {
            if let StoreEvent::Loop {
                loop_id: l,
                status: s,
                ..
            } = ev
            {
                if *l == loop_id && status::is_terminal(*s) {
                    let _ = tx.send(());
                }
            }
        });
        let result = (|| {
            let deadline = timeout.map(|t| std::time::Instant::now() + t);
            loop {
                let row = self.store.loop_row(loop_id)?;
                if status::is_terminal(row.status) {
                    return Ok(row);
                }
                let wait = match deadline {
                    Some(d) => d.saturating_duration_since(std::time::Instant::now()),
                    None => Duration::from_secs(3600),
                };
                if wait.is_zero() {
                    return Err(EngineError::Timeout(loop_id));
                }
                // The event only wakes us; the row is the truth (checked above).
                let _ = rx.recv_timeout(wait.min(Duration::from_millis(250)));
            }
        })();
        self.store.unsubscribe(sub);
        result
    }
}
