//! The kernel: configuration, boot, the scheduler loop, introspection and shutdown.
//!
//! Processes are futures the kernel polls itself. A scheduler thread takes the lock, picks the
//! next process from the ready set, takes its future out of the PCB, unlocks, polls it (inside
//! `catch_unwind`, so a panic becomes `ExitReason::Fault`), relocks and files the outcome:
//! finished → terminate; pending and notified meanwhile → back in the ready set; pending →
//! waiting. Kernel events (a delivery, a timer, a death) wake processes by pid; foreign futures
//! (driver I/O on tokio, say) wake them through a per-process `Waker`.
//!
//! Deterministic mode runs one scheduler on the calling thread with a virtual clock that moves
//! only when nothing is runnable; multi-threaded mode runs N scheduler threads on a real clock.

use crate::account::AccountId;
use crate::captable::CapTable;
use crate::clock::{Clock, Timers};
use crate::log::{EventLog, LogStats};
use crate::state::{Deferred, Pcb, State, Status, IN_SCHEDULER};
use crate::syscalls::Sys;
use agentos_abi::{
    Body, Budget, Driver, Event, EventKind, ExitReason, Image, Message, Meter, Pid, Quota,
    Resource, Right, SysMsg, Usage, Value,
};
use parking_lot::{Condvar, Mutex, MutexGuard};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::JoinHandle;
use std::time::Duration;
use thiserror::Error;

/// How the kernel schedules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One scheduler (the calling thread, inside `run`/`wait_exit`), a virtual clock and a
    /// seeded RNG: the same program and inputs give the same event trace.
    Deterministic {
        /// Seed for the kernel RNG.
        seed: u64,
    },
    /// N scheduler threads and the real clock.
    Threads(usize),
}

/// Kernel configuration. `Default` is multi-threaded with one scheduler thread per core.
#[derive(Clone, Debug)]
pub struct KernelConfig {
    /// Scheduling mode.
    pub mode: Mode,
    /// Events kept in the ring of the event log.
    pub log_cap: usize,
    /// Exit reasons kept for `waitpid` after death.
    pub reaped_cap: usize,
    /// Reductions per quantum.
    pub quantum: i32,
    /// Context memory: recaller, pager and token counter.
    pub memory: crate::memory::MemoryConfig,
    /// Cluster membership: node id and transport key (`None`: a standalone kernel).
    pub net: Option<crate::remote::NetConfig>,
    /// In record mode, persist every kernel event beside the I/O records (the seed's
    /// `{kind: "event"}` records; read them back with `journal::events_from_store`). On by
    /// default; off keeps the journal to I/O results only.
    pub persist_events: bool,
}

impl Default for KernelConfig {
    fn default() -> Self {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        KernelConfig {
            mode: Mode::Threads(n),
            log_cap: 4096,
            reaped_cap: 1024,
            quantum: crate::state::QUANTUM,
            memory: crate::memory::MemoryConfig::default(),
            net: None,
            persist_events: true,
        }
    }
}

impl KernelConfig {
    /// Deterministic mode with the given seed and default limits.
    pub fn deterministic(seed: u64) -> Self {
        KernelConfig {
            mode: Mode::Deterministic { seed },
            ..Self::default()
        }
    }
    /// Multi-threaded mode with `n` scheduler threads.
    pub fn threads(n: usize) -> Self {
        KernelConfig {
            mode: Mode::Threads(n.max(1)),
            ..Self::default()
        }
    }
}

/// Errors from the kernel's host-side API (not from syscalls).
#[derive(Debug, Error, PartialEq)]
pub enum KernelError {
    /// `boot` granted a device whose driver is not registered.
    #[error("boot: no such driver \"{0}\"")]
    NoDriver(String),
    /// A driver with this name is already registered.
    #[error("a driver named \"{0}\" is already registered")]
    DuplicateDriver(String),
    /// Deterministic run went idle with the awaited process still alive (it waits forever).
    #[error("kernel went idle while process {0} is still alive (deadlock or waiting on nothing)")]
    Idle(Pid),
    /// The kernel has shut down.
    #[error("kernel is shut down")]
    Shutdown,
    /// No such process.
    #[error("no such process {0}")]
    NoSuchProcess(Pid),
    /// A network operation was refused (e.g. no network configuration).
    #[error("net: {0}")]
    Net(String),
    /// The journal store could not be loaded or flushed.
    #[error("journal: {0}")]
    Journal(String),
}

/// Options for [`Kernel::boot`].
#[derive(Clone, Debug, Default)]
pub struct BootOpts {
    /// The root account's quota.
    pub quota: Quota,
    /// Drivers whose device caps init receives in its boot grant.
    pub grant: Vec<String>,
    /// Args for init's main.
    pub args: Value,
}

/// One row of `ps`.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcInfo {
    /// Pid.
    pub pid: Pid,
    /// Image name.
    pub name: Arc<str>,
    /// Parent (orphans report init).
    pub parent: Option<Pid>,
    /// `runnable`, `running` or `waiting`.
    pub status: &'static str,
    /// Suspended (SIGSTOP).
    pub stopped: bool,
    /// Messages waiting.
    pub mailbox: usize,
    /// Priority.
    pub priority: i32,
    /// Absolute deadline (kernel ms).
    pub deadline: Option<u64>,
    /// What its account has left.
    pub budget: Budget,
    /// What its subtree has spent.
    pub usage: Usage,
    /// Caps it owns.
    pub caps: usize,
    /// Its context memory's paging statistics (all zero until it first remembers).
    pub mem: agentos_abi::MemStats,
}

/// Running counters over the kernel's life.
#[derive(Clone, Debug, PartialEq)]
pub struct Metrics {
    /// Live processes.
    pub processes: usize,
    /// Events emitted.
    pub events: u64,
    /// Spawns.
    pub spawns: u64,
    /// Exits.
    pub exits: u64,
    /// Deliveries.
    pub sends: u64,
    /// Receives.
    pub recvs: u64,
    /// Dispatches.
    pub scheds: u64,
    /// Faults (drops, refusals, crashes).
    pub faults: u64,
    /// Signals.
    pub signals: u64,
    /// Live capabilities.
    pub caps: usize,
    /// Live account nodes.
    pub accounts: usize,
    /// Exits by reason kind.
    pub exits_by_reason: Vec<(String, u64)>,
    /// Charged totals by meter.
    pub charged: Vec<(Meter, u64)>,
}

pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub cv: Condvar,
    pub next_pid: AtomicU64,
    pub mode: Mode,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Context-memory policy (recaller factory, pager, token counter).
    pub memory: crate::memory::MemoryConfig,
    /// Segment ids, kernel-wide, never reused.
    pub next_seg: AtomicU64,
    /// What driver I/O does with the journal.
    pub jmode: crate::journal::JournalMode,
    /// The recorded run (replay and recover).
    pub journal: Option<Arc<crate::journal::Journal>>,
    /// Where results are appended (record and recover). Its own lock: appends never hold
    /// the kernel lock.
    pub store: Mutex<Option<Box<dyn crate::journal::Store>>>,
    /// Seals and opens envelopes (with a network configuration).
    pub sealer: Option<Arc<crate::seal::Sealer>>,
    /// Someone subscribed to events: `log` lines then go to the subscribers too.
    pub tapped: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// Run `f` under the kernel lock, then hand any pending wake-up to an idle thread.
    #[inline]
    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut st = self.state.lock();
        let r = f(&mut st);
        if st.notify {
            st.notify = false;
            self.cv.notify_one();
        }
        r
    }

    /// [`Shared::with`], timed as critical section `k` when the `lockstat` feature is on.
    #[inline]
    #[allow(unused_variables)]
    pub fn with_held<R>(&self, k: crate::syscalls::HeldKind, f: impl FnOnce(&mut State) -> R) -> R {
        #[cfg(feature = "lockstat")]
        {
            self.with(|st| {
                let t = std::time::Instant::now();
                let r = f(st);
                crate::lockstat::record(k, t);
                r
            })
        }
        #[cfg(not(feature = "lockstat"))]
        self.with(f)
    }
}

struct ProcWaker {
    shared: Weak<Shared>,
    pid: Pid,
}

impl Wake for ProcWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(s) = self.shared.upgrade() {
            s.with(|st| st.wake(self.pid));
        }
    }
}

/// An agentos kernel. Cheap to clone (a handle); when the last handle drops, the kernel shuts
/// down (every process is terminated with `Shutdown` and the scheduler threads are joined).
#[derive(Clone)]
pub struct Kernel {
    _owner: Arc<Owner>,
    pub(crate) shared: Arc<Shared>,
}

/// The host's ownership of a kernel. Scheduler threads and process futures hold `Shared`, not
/// this, so dropping the last `Kernel` breaks the process → syscall handle → kernel cycle.
struct Owner {
    shared: Arc<Shared>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        shutdown(&self.shared, ExitReason::Shutdown);
    }
}

fn run_deferred(shared: &Shared, items: Vec<Deferred>) {
    for d in items {
        if let Deferred::Persist(evs) = d {
            persist(shared, evs);
            continue;
        }
        // Program code (cleanups, drops) must never take the scheduler down.
        let _ = catch_unwind(AssertUnwindSafe(move || match d {
            Deferred::Cleanup(f) => f(),
            Deferred::Close(h) => h.close(),
            Deferred::DropFuture(f) => drop(f),
            Deferred::DropMailbox(m) => drop(m),
            Deferred::Egress(e, b) => {
                if let Err(err) = e.send(b) {
                    tracing::debug!("remote down not sent: {err}");
                }
            }
            Deferred::Persist(_) => {}
            Deferred::Publish(p) => p.run(),
        }));
    }
}

/// Append kernel events to the journal store (never under the kernel lock).
pub(crate) fn persist(shared: &Shared, evs: Vec<Event>) {
    let mut store = shared.store.lock();
    if let Some(s) = store.as_mut() {
        for e in evs {
            if let Err(err) = s.append(&crate::journal::Record::Event(e)) {
                tracing::warn!("journal: event not persisted: {err}");
                break;
            }
        }
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        format!("panic: {s}")
    } else if let Some(s) = p.downcast_ref::<String>() {
        format!("panic: {s}")
    } else {
        "panic".to_owned()
    }
}

/// Why a scheduler loop returned.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    Idle,
    Horizon,
    Target,
    Shutdown,
}

impl Kernel {
    /// A new kernel. In multi-threaded mode the scheduler threads start at the first `boot`.
    pub fn new(cfg: KernelConfig) -> Self {
        Kernel::build(cfg, crate::journal::JournalMode::Live, None, None)
    }

    pub(crate) fn build(
        cfg: KernelConfig,
        jmode: crate::journal::JournalMode,
        journal: Option<Arc<crate::journal::Journal>>,
        store: Option<Box<dyn crate::journal::Store>>,
    ) -> Self {
        let (clock, seed) = match cfg.mode {
            Mode::Deterministic { seed } => (Clock::virtual_clock(), seed),
            Mode::Threads(_) => (Clock::real(), 0x5eed),
        };
        let mut log = EventLog::new(cfg.log_cap);
        if jmode == crate::journal::JournalMode::Record && cfg.persist_events {
            // The seed persists every event beside the I/O records, except in recover mode
            // (the recovered prefix's events are in the store already).
            log.persist();
        }
        let mut state = State {
            procs: FxHashMap::default(),
            caps: CapTable::new(),
            accounts: crate::account::Accounts::new(),
            clock,
            timers: Timers::default(),
            log,
            ready: VecDeque::new(),
            special: 0,
            enq_seq: 0,
            init: None,
            registry: FxHashMap::default(),
            reaped: FxHashMap::default(),
            reaped_order: VecDeque::new(),
            reaped_cap: cfg.reaped_cap.max(1),
            drivers: FxHashMap::default(),
            deferred: Vec::new(),
            ext_waiters: FxHashMap::default(),
            shutdown: false,
            idle_threads: 0,
            notify: false,
            io_inflight: 0,
            rng: seed,
            quantum: cfg.quantum.max(1),
            net: None,
            mrefs: FxHashMap::default(),
            next_mref: 0,
        };
        let sealer = cfg.net.as_ref().map(|n| {
            let epoch = n.epoch.unwrap_or_else(crate::remote::fresh_epoch);
            Arc::new(crate::seal::Sealer::new(n.node.clone(), &n.key, epoch))
        });
        if let (Some(n), Some(s)) = (&cfg.net, &sealer) {
            state.net = Some(Box::new(crate::remote::NetState::new(n, s.clone())));
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            cv: Condvar::new(),
            next_pid: AtomicU64::new(1),
            mode: cfg.mode,
            threads: Mutex::new(Vec::new()),
            memory: cfg.memory,
            next_seg: AtomicU64::new(1),
            jmode,
            journal,
            store: Mutex::new(store),
            sealer,
            tapped: std::sync::atomic::AtomicBool::new(false),
        });
        Kernel {
            _owner: Arc::new(Owner {
                shared: shared.clone(),
            }),
            shared,
        }
    }

    /// The scheduling mode.
    pub fn mode(&self) -> Mode {
        self.shared.mode
    }

    /// Register a driver so device capabilities can name it.
    pub fn register_driver(&self, driver: Arc<dyn Driver>) -> Result<(), KernelError> {
        let name: Arc<str> = Arc::from(driver.name());
        self.shared.with(|st| {
            if st.drivers.contains_key(&name) {
                return Err(KernelError::DuplicateDriver(name.to_string()));
            }
            st.drivers.insert(name, driver);
            Ok(())
        })
    }

    /// Whether a driver is registered under `name`.
    pub fn has_driver(&self, name: &str) -> bool {
        self.shared.with(|st| st.drivers.contains_key(name))
    }

    /// Boot a root process. The first boot creates init (pid 1), to which orphans belong. The
    /// process's first message is a `Boot` grant holding a spawn cap and the granted devices.
    pub fn boot(&self, image: Image<Sys>, opts: BootOpts) -> Result<Pid, KernelError> {
        let pid = Pid(self.shared.next_pid.fetch_add(1, Ordering::Relaxed));
        let fut = image.start(Sys::new(self.shared.clone(), pid), opts.args.clone());
        let r = self.shared.with(|st| {
            if st.shutdown {
                return Err(KernelError::Shutdown);
            }
            for g in &opts.grant {
                if !st.drivers.contains_key(g.as_str()) {
                    return Err(KernelError::NoDriver(g.clone()));
                }
            }
            let now = st.now();
            if st.init.is_none() {
                st.emit(EventKind::Boot);
                st.init = Some(pid);
            }
            let acct = st.accounts.root(&opts.quota, now);
            let mut pcb = Pcb::new(image.name().clone(), None, acct);
            pcb.fut = Some(fut);
            pcb.max_mailbox = opts.quota.max_mailbox;
            if opts.args != Value::Unit {
                pcb.ext().args = opts.args.clone();
            }
            st.procs.insert(pid, Box::new(pcb));
            let spawn = st.caps.mint(pid, Resource::Spawn, Right::Spawn.into());
            let mut devices = Vec::new();
            for g in &opts.grant {
                let name: Arc<str> = Arc::from(g.as_str());
                let c = st
                    .caps
                    .mint(pid, Resource::Device(name.clone()), device_rights());
                devices.push((name, c));
            }
            if let Some(p) = st.procs.get_mut(&pid) {
                p.spawn_hint = Some(spawn);
                p.mailbox.push_back(Message::new(
                    pid,
                    Body::Sys(SysMsg::Boot {
                        spawn,
                        devices,
                        reply: None,
                    }),
                ));
            }
            st.emit(EventKind::Spawn {
                pid,
                parent: None,
                name: image.name().clone(),
            });
            arm_wall(st, pid, acct);
            st.wake(pid);
            Ok(pid)
        });
        if r.is_ok() {
            self.start_threads();
        }
        r
    }

    pub(crate) fn start_threads(&self) {
        let Mode::Threads(n) = self.shared.mode else {
            return;
        };
        let mut threads = self.shared.threads.lock();
        if !threads.is_empty() {
            return;
        }
        for i in 0..n {
            let shared = self.shared.clone();
            let h = std::thread::Builder::new()
                .name(format!("agentos-sched-{i}"))
                .spawn(move || {
                    schedule(&shared, None, None);
                })
                .expect("spawn scheduler thread");
            threads.push(h);
        }
    }

    /// Deterministic mode: run the scheduler on this thread until nothing is runnable, no timer
    /// is pending and no driver I/O is in flight. Multi-threaded mode: block until no process is
    /// alive.
    pub fn run(&self) {
        match self.shared.mode {
            Mode::Deterministic { .. } => {
                schedule(&self.shared, None, None);
            }
            Mode::Threads(_) => {
                let mut st = self.shared.state.lock();
                while !st.procs.is_empty() && !st.shutdown {
                    self.shared.cv.wait_for(&mut st, Duration::from_millis(5));
                }
            }
        }
    }

    /// Advance the kernel by `ms` of kernel time. Deterministic mode: run the scheduler on this
    /// thread until every timer due by then has fired and nothing is runnable, leaving the
    /// virtual clock at exactly now + `ms` (the way to observe a system that never goes idle,
    /// e.g. one with periodic sleepers). Multi-threaded mode: sleep that long.
    pub fn run_for(&self, ms: u64) {
        match self.shared.mode {
            Mode::Deterministic { .. } => {
                let horizon = self.shared.with(|st| st.now().saturating_add(ms));
                schedule(&self.shared, None, Some(horizon));
            }
            Mode::Threads(_) => std::thread::sleep(Duration::from_millis(ms)),
        }
    }

    /// Wait for `pid` to exit and return its reason. In deterministic mode this runs the
    /// scheduler on the calling thread; if the system goes idle with `pid` still alive that is
    /// an error rather than a hang.
    pub fn wait_exit(&self, pid: Pid) -> Result<ExitReason, KernelError> {
        if pid.0 == 0 || pid.0 >= self.shared.next_pid.load(Ordering::Relaxed) {
            return Err(KernelError::NoSuchProcess(pid));
        }
        match self.shared.mode {
            Mode::Deterministic { .. } => {
                let stop = schedule(&self.shared, Some(pid), None);
                self.shared.with(|st| {
                    if st.procs.contains_key(&pid) {
                        Err(if stop == Stop::Shutdown {
                            KernelError::Shutdown
                        } else {
                            KernelError::Idle(pid)
                        })
                    } else {
                        Ok(st.reaped_reason(pid))
                    }
                })
            }
            Mode::Threads(_) => {
                let (tx, rx) = std::sync::mpsc::sync_channel(1);
                let done = self.shared.with(|st| {
                    if st.procs.contains_key(&pid) {
                        st.ext_waiters.entry(pid).or_default().push(tx);
                        None
                    } else {
                        Some(st.reaped_reason(pid))
                    }
                });
                match done {
                    Some(r) => Ok(r),
                    None => rx.recv().map_err(|_| KernelError::Shutdown),
                }
            }
        }
    }

    /// Deliver a message from outside the kernel (a gateway, a transport). Returns the body
    /// back, with a fault event, if the target is dead or its bounded mailbox is full.
    pub fn deliver_external(&self, pid: Pid, body: Body) -> Result<(), Body> {
        self.shared.with(|st| {
            let full = match st.procs.get(&pid) {
                None => {
                    st.emit(EventKind::Fault {
                        pid,
                        error: "ingress: no such process — dropped".into(),
                    });
                    return Err(body);
                }
                Some(p) => p.max_mailbox.is_some_and(|l| p.mailbox.len() >= l as usize),
            };
            if full {
                st.emit(EventKind::Fault {
                    pid,
                    error: "ingress: mailbox full — dropped".into(),
                });
                return Err(body);
            }
            st.deliver(pid, Message::new(Pid::KERNEL, body));
            Ok(())
        })
    }

    /// The userland `ps`: every live process, by pid.
    pub fn ps(&self) -> Vec<ProcInfo> {
        self.shared.with(|st| {
            let now = st.now();
            let mut rows: Vec<ProcInfo> = st
                .procs
                .iter()
                .map(|(pid, p)| ProcInfo {
                    pid: *pid,
                    name: p.name.clone(),
                    parent: st.effective_parent(p),
                    status: match p.status {
                        Status::Runnable => "runnable",
                        Status::Running => "running",
                        Status::Waiting => "waiting",
                    },
                    stopped: p.stopped,
                    mailbox: p.mailbox.len(),
                    priority: p.priority,
                    deadline: p.deadline,
                    budget: st.accounts.remaining(p.account, now),
                    usage: st.accounts.usage(p.account),
                    caps: st.caps.owned_count(*pid),
                    mem: p
                        .x
                        .as_ref()
                        .and_then(|x| x.ctx.as_ref())
                        .map(|c| c.lock().stats())
                        .unwrap_or_default(),
                })
                .collect();
            rows.sort_by_key(|r| r.pid);
            rows
        })
    }

    /// The last `n` events of the log, oldest first.
    pub fn trace(&self, n: usize) -> Vec<Event> {
        self.shared.with(|st| st.log.tail(n))
    }

    /// A 64-bit digest of every event so far (equal for equal traces).
    pub fn trace_hash(&self) -> u64 {
        self.shared.with(|st| st.log.trace_hash())
    }

    /// Running counters over the whole history.
    pub fn metrics(&self) -> Metrics {
        self.shared.with(|st| {
            let LogStats {
                by_type,
                exits_by_reason,
                charged,
            } = st.log.stats();
            let get = |n: &str| by_type.iter().find(|(k, _)| *k == n).map_or(0, |(_, v)| *v);
            Metrics {
                processes: st.procs.len(),
                events: st.log.count(),
                spawns: get("spawn"),
                exits: get("exit"),
                sends: get("send"),
                recvs: get("recv"),
                scheds: get("sched"),
                faults: get("fault"),
                signals: get("signal"),
                caps: st.caps.len(),
                accounts: st.accounts.live(),
                exits_by_reason,
                charged,
            }
        })
    }

    /// The same counters in Prometheus text exposition format.
    pub fn metrics_text(&self) -> String {
        let m = self.metrics();
        let mut out = String::new();
        let mut line = |name: &str, help: &str, kind: &str, v: String| {
            out.push_str(&format!(
                "# HELP agentos_{name} {help}\n# TYPE agentos_{name} {kind}\n"
            ));
            out.push_str(&v);
        };
        line(
            "processes",
            "Live processes.",
            "gauge",
            format!("agentos_processes {}\n", m.processes),
        );
        line(
            "capabilities",
            "Live capabilities.",
            "gauge",
            format!("agentos_capabilities {}\n", m.caps),
        );
        for (name, help, v) in [
            ("events_total", "Events emitted.", m.events),
            ("spawns_total", "Processes spawned.", m.spawns),
            ("sends_total", "Messages delivered.", m.sends),
            ("recvs_total", "Messages received.", m.recvs),
            ("scheds_total", "Dispatches.", m.scheds),
            (
                "faults_total",
                "Faults (drops, refusals, crashes).",
                m.faults,
            ),
            ("signals_total", "Signals applied.", m.signals),
        ] {
            line(name, help, "counter", format!("agentos_{name} {v}\n"));
        }
        let mut exits = format!("agentos_exits_total {}\n", m.exits);
        for (k, v) in &m.exits_by_reason {
            exits.push_str(&format!(
                "agentos_exits_total{{reason=\"{}\"}} {v}\n",
                k.replace(['"', '\\', '\n'], "_")
            ));
        }
        line(
            "exits_total",
            "Process exits, in all and by reason.",
            "counter",
            exits,
        );
        let mut charged = String::new();
        for (meter, v) in &m.charged {
            charged.push_str(&format!(
                "agentos_charged_total{{meter=\"{}\"}} {v}\n",
                meter.name()
            ));
        }
        line(
            "charged_total",
            "Metered spend by meter.",
            "counter",
            charged,
        );
        out
    }

    /// The kernel clock in ms.
    pub fn now(&self) -> u64 {
        self.shared.with(|st| st.clock.refresh())
    }

    /// Whether `pid` is alive.
    pub fn is_alive(&self, pid: Pid) -> bool {
        self.shared.with(|st| st.procs.contains_key(&pid))
    }

    /// Live capabilities in the table.
    pub fn cap_count(&self) -> usize {
        self.shared.with(|st| st.caps.len())
    }

    /// Caps owned by `pid`.
    pub fn caps_owned(&self, pid: Pid) -> usize {
        self.shared.with(|st| st.caps.owned_count(pid))
    }

    /// The next value of the kernel's seeded RNG.
    pub fn random(&self) -> u64 {
        self.shared.with(|st| st.random())
    }

    /// Subscribe to the kernel's events and its processes' `log` lines as they happen (the
    /// seed's `logSink` and `onLog`): they arrive in batches, at most one per scheduling step,
    /// published after the kernel lock is released, on a bounded channel of `capacity`
    /// batches. A subscriber that falls behind loses batches (their events are counted by
    /// [`Kernel::sink_drops`]); the kernel never waits for one. Within a scheduler thread the
    /// order is emission order; with several threads two batches may arrive out of order
    /// (events carry their sequence number). Dropping the subscription unsubscribes.
    pub fn subscribe(&self, capacity: usize) -> crate::log::Subscription {
        let rx = self.shared.with(|st| st.log.subscribe(capacity));
        self.shared.tapped.store(true, Ordering::Relaxed);
        rx
    }

    /// Events that subscribers' full channels dropped, over the kernel's life.
    pub fn sink_drops(&self) -> u64 {
        self.shared.with(|st| st.log.sink_drops())
    }

    /// Graceful shutdown: terminate every live process with `reason` (pid order), emit a
    /// shutdown event, stop and join the scheduler threads. Idempotent.
    pub fn shutdown(&self, reason: ExitReason) {
        shutdown(&self.shared, reason);
    }
}

fn shutdown(shared: &Arc<Shared>, reason: ExitReason) {
    let deferred = shared.with(|st| {
        if st.shutdown {
            return Vec::new();
        }
        st.shutdown = true;
        let mut pids: Vec<Pid> = st.procs.keys().copied().collect();
        pids.sort();
        for pid in pids {
            st.terminate(pid, reason.clone());
        }
        st.emit(EventKind::Shutdown { reason });
        st.ready.clear();
        shared.cv.notify_all();
        let evs = st.log.take_outbox();
        if !evs.is_empty() {
            st.deferred.push(Deferred::Persist(evs));
        }
        if let Some(p) = st.log.take_pending() {
            st.deferred.push(Deferred::Publish(p));
        }
        std::mem::take(&mut st.deferred)
    });
    run_deferred(shared, deferred);
    let threads = std::mem::take(&mut *shared.threads.lock());
    let me = std::thread::current().id();
    for t in threads {
        if t.thread().id() != me {
            let _ = t.join();
        }
    }
    // Futures that a thread was polling at shutdown were deferred by that thread.
    let rest = shared.with(|st| std::mem::take(&mut st.deferred));
    run_deferred(shared, rest);
}

/// What a granted device cap holds: `open`, and the `read` and `write` its handles inherit
/// (attenuate it to hand out a read-only device).
pub(crate) fn device_rights() -> agentos_abi::Rights {
    agentos_abi::Rights::of(&[Right::Open, Right::Read, Right::Write])
}

pub(crate) fn arm_wall(st: &mut State, pid: Pid, acct: AccountId) {
    if let Some(w) = st.accounts.wall_ms(acct) {
        let at = st.now().saturating_add(w).saturating_add(1);
        st.timers.arm(at, crate::clock::TimerKind::Wall(pid));
        if st.idle_threads > 0 {
            st.notify = true;
        }
    }
}

/// Host events published to subscribers per batch while the kernel is busy.
const PUBLISH_BATCH: usize = 256;

/// The scheduler loop. Returns when (deterministic) the system is idle or `until` has died,
/// or (threads) at shutdown.
fn schedule(shared: &Arc<Shared>, until: Option<Pid>, horizon: Option<u64>) -> Stop {
    let deterministic = matches!(shared.mode, Mode::Deterministic { .. });
    let was = IN_SCHEDULER.replace(true);
    let mut st = shared.state.lock();
    let mut ticks = 0u32;
    #[cfg(feature = "lockstat")]
    let mut held_since: Option<std::time::Instant> = None;
    let stop = loop {
        if st.shutdown {
            break Stop::Shutdown;
        }
        if let Some(t) = until {
            if !st.procs.contains_key(&t) {
                break Stop::Target;
            }
        }
        if st.log.has_outbox() {
            let evs = st.log.take_outbox();
            st.deferred.push(Deferred::Persist(evs));
        }
        // Host events go out in batches of a few hundred while the kernel is busy (one
        // channel send and one subscriber wake-up per batch, after the lock), and all at once
        // when it goes idle.
        if st.log.pending_len() >= PUBLISH_BATCH {
            if let Some(p) = st.log.take_pending() {
                st.deferred.push(Deferred::Publish(p));
            }
        }
        if !st.deferred.is_empty() {
            let d = std::mem::take(&mut st.deferred);
            MutexGuard::unlocked(&mut st, || run_deferred(shared, d));
            #[cfg(feature = "lockstat")]
            {
                held_since = Some(std::time::Instant::now());
            }
            continue;
        }
        if !deterministic {
            // The clock is read every 16 dispatches (ms resolution; a dispatch is ~100 ns), so
            // timers fire at most a few µs late and the message path pays no clock_gettime.
            ticks = ticks.wrapping_add(1);
            if ticks & 15 == 0 || st.ready.is_empty() {
                st.clock.refresh();
            }
            st.fire_due();
        }
        let Some(pid) = st.pick() else {
            if st.log.has_pending() {
                if let Some(p) = st.log.take_pending() {
                    st.deferred.push(Deferred::Publish(p));
                }
                continue;
            }
            if deterministic && st.io_inflight == 0 {
                // Time advances only when nothing is runnable.
                match st.timers.next_fire() {
                    Some(at) if horizon.is_some_and(|h| at > h) => {
                        if let Some(h) = horizon {
                            st.clock.advance_to(h);
                        }
                        break Stop::Horizon;
                    }
                    _ => {}
                }
                match st.timers.pop_next() {
                    Some(t) if st.timer_stale(t.kind, t.token) => continue,
                    Some(t) => {
                        st.clock.advance_to(t.fire);
                        st.fire(t.kind, t.token);
                        continue;
                    }
                    None => {
                        if let Some(h) = horizon {
                            st.clock.advance_to(h);
                        }
                        break Stop::Idle;
                    }
                }
            }
            st.idle_threads += 1;
            match (deterministic, st.timers.next_fire()) {
                (false, Some(at)) => {
                    let wait = Duration::from_millis(at.saturating_sub(st.now()));
                    shared
                        .cv
                        .wait_for(&mut st, wait.max(Duration::from_micros(100)));
                }
                _ => {
                    shared.cv.wait_for(&mut st, Duration::from_millis(50));
                }
            }
            st.idle_threads -= 1;
            #[cfg(feature = "lockstat")]
            {
                // The wait released the lock: the hold starts again now.
                held_since = Some(std::time::Instant::now());
            }
            continue;
        };
        let quantum = st.quantum;
        let Some(p) = st.procs.get_mut(&pid) else {
            continue;
        };
        let Some(mut fut) = p.fut.take() else {
            continue;
        };
        p.status = Status::Running;
        p.notified = false;
        p.reductions = quantum;
        // The waker travels with the future (taken, not cloned: no refcount traffic).
        let waker = p.waker.take().unwrap_or_else(|| {
            Waker::from(Arc::new(ProcWaker {
                shared: Arc::downgrade(shared),
                pid,
            }))
        });
        st.emit(EventKind::Sched { pid });
        if st.notify {
            st.notify = false;
            shared.cv.notify_one();
        }
        #[cfg(feature = "lockstat")]
        if let Some(t) = held_since.take() {
            crate::lockstat::record(crate::lockstat::Held::Dispatch, t);
        }
        let res = MutexGuard::unlocked(&mut st, || {
            let mut cx = Context::from_waker(&waker);
            catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)))
        });
        #[cfg(feature = "lockstat")]
        {
            held_since = Some(std::time::Instant::now());
        }
        match res {
            Ok(Poll::Pending) => match st.procs.get_mut(&pid) {
                Some(p) => {
                    p.fut = Some(fut);
                    p.waker = Some(waker);
                    if p.notified {
                        p.notified = false;
                        p.status = Status::Runnable;
                        if !p.stopped {
                            // Re-enqueue at the back (a yield or a wake during the poll).
                            st.wake(pid);
                        }
                    } else {
                        p.status = Status::Waiting;
                    }
                }
                None => st.deferred.push(Deferred::DropFuture(fut)),
            },
            Ok(Poll::Ready(r)) => {
                st.terminate(pid, r.err().unwrap_or(ExitReason::Normal));
                st.deferred.push(Deferred::DropFuture(fut));
            }
            Err(panic) => {
                st.terminate(
                    pid,
                    ExitReason::Fault {
                        error: panic_message(&*panic),
                    },
                );
                st.deferred.push(Deferred::DropFuture(fut));
            }
        }
        if st.notify {
            st.notify = false;
            shared.cv.notify_one();
        }
    };
    if st.log.has_outbox() {
        let evs = st.log.take_outbox();
        st.deferred.push(Deferred::Persist(evs));
    }
    if let Some(p) = st.log.take_pending() {
        st.deferred.push(Deferred::Publish(p));
    }
    let d = std::mem::take(&mut st.deferred);
    drop(st);
    run_deferred(shared, d);
    IN_SCHEDULER.set(was);
    stop
}
