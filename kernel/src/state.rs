//! The kernel's mutable state and the operations on it that every syscall shares: the process
//! table, the ready set, delivery, termination, timers and reductions.
//!
//! All of it sits behind one lock (`Shared::state`). Critical sections are short and never
//! call into program or driver code: futures, cleanups, handle closes and undelivered mailboxes
//! of dead processes are pushed to `deferred` and run by the scheduler after it unlocks, so a
//! program's `Drop` can never deadlock the kernel.

use crate::account::{AccountId, Accounts};
use crate::captable::CapTable;
use crate::clock::{Clock, TimerKind, Timers};
use crate::log::EventLog;
use agentos_abi::driver::DriverHandle;
use agentos_abi::{
    Body, CapRef, Cleanup, Driver, EventKind, ExitReason, Message, Meter, MonitorRef, Pid,
    ProcFuture, SysMsg,
};
use rustc_hash::FxHashMap;
use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::task::Waker;

/// Reductions a process may spend before it must yield (the seed's `QUANTUM`).
pub const QUANTUM: i32 = 2000;
const AGE_EVERY: u32 = 4;
const AGE_MAX: u32 = 8;

thread_local! {
    /// True on kernel scheduler threads: a wake from here needs no cross-thread notify unless
    /// there is more work than this thread will pick up next.
    pub(crate) static IN_SCHEDULER: Cell<bool> = const { Cell::new(false) };
}

/// Where a process is in its life.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Status {
    /// Wants the CPU (queued unless stopped).
    Runnable,
    /// Being polled by a scheduler thread.
    Running,
    /// Parked until a wake.
    Waiting,
}

/// An open device handle as a process holds it.
#[derive(Clone)]
pub(crate) enum IoHandle {
    /// Opened: I/O goes to the driver.
    Open(Arc<dyn DriverHandle>),
    /// Replay and recover: the driver is opened only when an op must run live (replay never
    /// opens it at all), with the rights and scope the handle was minted with.
    Lazy(Arc<dyn Driver>, Arc<agentos_abi::OpenCtx>),
    /// Replay of a device that replays live ([`Driver::replays_live`]): opened and run live,
    /// never answered from the journal (its op numbers are still counted).
    Live(Arc<dyn DriverHandle>),
}

/// The parts of a PCB most processes never touch: links, monitors, waiters, handles,
/// cleanups, names.
#[derive(Default)]
pub(crate) struct PcbExt {
    /// Senders parked on this process's full mailbox, FIFO.
    pub send_waiters: VecDeque<Pid>,
    pub links: Vec<Pid>,
    /// Who monitors this process, each with its monitor reference.
    pub monitors: Vec<(Pid, MonitorRef)>,
    /// The token of the timer that ends this process's current timed park (a receive or an
    /// `await_start` with a deadline); a fired timer with another token is stale.
    pub park_timer: u64,
    /// Caps the spawner handed over by name.
    pub grants: Vec<(Arc<str>, CapRef)>,
    /// The value this process acknowledged its start with (`init_ack`), once it has.
    pub acked: Option<agentos_abi::Value>,
    /// Processes parked in `await_start` on this one.
    pub start_waiters: Vec<Pid>,
    /// Answers delivered to this process's pending `await_start`s.
    pub start_results: Vec<(Pid, agentos_abi::Started)>,
    /// Processes parked in `waitpid` on this one.
    pub exit_waiters: Vec<Pid>,
    /// Exit reasons delivered to this process's pending `waitpid`s.
    pub wait_results: Vec<(Pid, ExitReason)>,
    pub handles: Vec<(CapRef, IoHandle)>,
    pub cleanups: Vec<Cleanup>,
    pub names: Vec<Arc<str>>,
    /// Context memory, created on first `remember` (its own lock: paging awaits the pager).
    pub ctx: Option<Arc<parking_lot::Mutex<crate::memory::Context>>>,
    /// The args main was started with, kept (when not `Unit`) for snapshots.
    pub args: agentos_abi::Value,
    /// The journal's per-process driver-op counter.
    pub io_op: u64,
    /// Recover mode: this process has run past the recorded prefix and is live now.
    pub recovered: bool,
}

/// A process control block.
pub(crate) struct Pcb {
    pub name: Arc<str>,
    pub parent: Option<Pid>,
    pub account: AccountId,
    pub status: Status,
    pub queued: bool,
    pub stopped: bool,
    pub notified: bool,
    pub fut: Option<ProcFuture>,
    pub waker: Option<Waker>,
    pub priority: i32,
    pub deadline: Option<u64>,
    pub deadline_token: u64,
    pub age: u32,
    pub enq: u64,
    pub reductions: i32,
    pub mailbox: VecDeque<Message>,
    pub max_mailbox: Option<u32>,
    /// The target whose mailbox this process is parked on (dedups registration).
    pub blocked_on: Option<Pid>,
    /// Rarely used state, allocated on first use so an idle process stays small.
    pub x: Option<Box<PcbExt>>,
    pub spawn_hint: Option<CapRef>,
}

impl Pcb {
    pub fn new(name: Arc<str>, parent: Option<Pid>, account: AccountId) -> Self {
        Pcb {
            name,
            parent,
            account,
            status: Status::Waiting,
            queued: false,
            stopped: false,
            notified: false,
            fut: None,
            waker: None,
            priority: 0,
            deadline: None,
            deadline_token: 0,
            age: 0,
            enq: 0,
            reductions: QUANTUM,
            mailbox: VecDeque::new(),
            max_mailbox: None,
            blocked_on: None,
            x: None,
            spawn_hint: None,
        }
    }

    /// The extension, allocated on first use.
    pub fn ext(&mut self) -> &mut PcbExt {
        self.x.get_or_insert_with(Box::default)
    }

    #[inline]
    fn special(&self) -> bool {
        self.priority != 0 || self.deadline.is_some()
    }
}

/// Work that must run outside the kernel lock.
pub(crate) enum Deferred {
    Cleanup(Cleanup),
    Close(Arc<dyn DriverHandle>),
    DropFuture(ProcFuture),
    DropMailbox(VecDeque<Message>),
    /// An envelope for a peer (remote downs), handed to its transport after the lock.
    Egress(Arc<dyn agentos_abi::wire::Egress>, bytes::Bytes),
    /// Kernel events for the journal store (record mode), appended after the lock.
    Persist(Vec<agentos_abi::Event>),
    /// A batch of host events for the subscribers, published after the lock.
    Publish(crate::log::Publish),
}

/// The kernel state behind the lock.
pub(crate) struct State {
    pub procs: FxHashMap<Pid, Box<Pcb>>,
    pub caps: CapTable,
    pub accounts: Accounts,
    pub clock: Clock,
    pub timers: Timers,
    pub log: EventLog,
    pub ready: VecDeque<Pid>,
    pub special: usize,
    pub enq_seq: u64,
    pub init: Option<Pid>,
    pub registry: FxHashMap<Arc<str>, Pid>,
    pub reaped: FxHashMap<Pid, ExitReason>,
    pub reaped_order: VecDeque<Pid>,
    pub reaped_cap: usize,
    pub drivers: FxHashMap<Arc<str>, Arc<dyn Driver>>,
    pub deferred: Vec<Deferred>,
    pub ext_waiters: FxHashMap<Pid, Vec<SyncSender<ExitReason>>>,
    pub shutdown: bool,
    pub idle_threads: usize,
    pub notify: bool,
    pub io_inflight: usize,
    pub rng: u64,
    pub quantum: i32,
    /// Cluster state (routes, remote monitors, pending remote spawns, the nonce guard),
    /// behind the seam: the core does not know its type.
    pub net: Option<Box<dyn crate::seam::Cluster>>,
    /// Live local monitors: reference → (watcher, target).
    pub mrefs: FxHashMap<MonitorRef, (Pid, Pid)>,
    /// The next monitor reference (never reused).
    pub next_mref: u64,
}

impl State {
    #[inline]
    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    #[inline]
    pub fn emit(&mut self, kind: EventKind) {
        let ts = self.clock.now();
        self.log.emit(ts, kind);
    }

    /// splitmix64: the kernel's seeded RNG (deterministic for a given seed and call order).
    pub fn random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn enqueue(&mut self, pid: Pid) {
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        self.enq_seq += 1;
        p.enq = self.enq_seq;
        p.queued = true;
        if p.special() {
            self.special += 1;
        }
        self.ready.push_back(pid);
        if self.idle_threads > 0 && (self.ready.len() > 1 || !IN_SCHEDULER.get()) {
            self.notify = true;
        }
    }

    /// Make a process want the CPU. Safe to call spuriously.
    #[inline]
    pub fn wake(&mut self, pid: Pid) {
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        match p.status {
            Status::Running => p.notified = true,
            Status::Waiting => {
                p.status = Status::Runnable;
                if !p.stopped && !p.queued {
                    self.enqueue(pid);
                }
            }
            Status::Runnable => {
                if !p.stopped && !p.queued {
                    self.enqueue(pid);
                }
            }
        }
    }

    /// Pick the next process to run: highest effective priority (priority + aging boost), then
    /// earliest deadline, then FIFO. While no special process is queued this is an O(1) FIFO
    /// pop; both paths give the same order (the seed's `pickNext`).
    pub fn pick(&mut self) -> Option<Pid> {
        if self.special == 0 {
            while let Some(pid) = self.ready.pop_front() {
                if let Some(p) = self.procs.get_mut(&pid) {
                    if p.queued {
                        p.queued = false;
                        if !p.stopped {
                            p.age = 0;
                            return Some(pid);
                        }
                    }
                }
            }
            return None;
        }
        let mut best: Option<Pid> = None;
        let mut live = Vec::with_capacity(self.ready.len());
        for pid in self.ready.drain(..) {
            let Some(p) = self.procs.get_mut(&pid) else {
                continue;
            };
            if !p.queued {
                continue;
            }
            if p.stopped {
                p.queued = false;
                continue;
            }
            live.push(pid);
            best = match best {
                Some(b) if !higher(&self.procs[&pid], &self.procs[&b]) => Some(b),
                _ => Some(pid),
            };
        }
        let best = best?;
        let mut spec = 0;
        for pid in live {
            let p = self.procs.get_mut(&pid).expect("live pid just seen");
            if pid == best {
                p.age = 0;
                p.queued = false;
                continue;
            }
            p.age += 1;
            if p.special() {
                spec += 1;
            }
            self.ready.push_back(pid);
        }
        self.special = spec;
        Some(best)
    }

    /// End-of-syscall fairness point: charge reductions; true when the quantum is spent (or the
    /// process was stopped) and the caller must yield. Arranges the re-enqueue.
    #[inline]
    pub fn tick(&mut self, pid: Pid, cost: u32) -> bool {
        let Some(p) = self.procs.get_mut(&pid) else {
            return false;
        };
        p.reductions -= cost.max(1) as i32;
        if p.reductions > 0 && !p.stopped {
            return false;
        }
        p.notified = true;
        true
    }

    /// Put a message in a live process's mailbox; transferred caps change owner now.
    pub fn deliver(&mut self, to: Pid, msg: Message) {
        for c in &msg.caps {
            self.caps.transfer(*c, to);
        }
        let from = msg.from;
        if let Some(p) = self.procs.get_mut(&to) {
            p.mailbox.push_back(msg);
            self.emit(EventKind::Send { from, to });
            self.wake(to);
        }
    }

    /// Arm (or re-arm) a deadline `ms` from now.
    pub fn arm_deadline(&mut self, pid: Pid, ms: u64) {
        let at = self.now().saturating_add(ms);
        let token = self.timers.arm(at, TimerKind::Deadline(pid));
        if let Some(p) = self.procs.get_mut(&pid) {
            p.deadline = Some(at);
            p.deadline_token = token;
        }
        if self.idle_threads > 0 {
            self.notify = true;
        }
    }

    /// Arm a timer that wakes `pid` at absolute time `at`.
    pub fn arm_wake(&mut self, pid: Pid, at: u64) {
        self.timers.arm(at, TimerKind::Wake(pid));
        if self.idle_threads > 0 {
            self.notify = true;
        }
    }

    /// Fire one timer.
    pub fn fire(&mut self, kind: TimerKind, token: u64) {
        match kind {
            TimerKind::Wake(pid) => self.wake(pid),
            TimerKind::Park(pid) => {
                if self.park_live(pid, token) {
                    self.wake(pid)
                }
            }
            TimerKind::Deadline(pid) => {
                if self
                    .procs
                    .get(&pid)
                    .is_some_and(|p| p.deadline_token == token)
                {
                    self.terminate(pid, ExitReason::Deadline);
                }
            }
            TimerKind::SpawnTimeout(corr) => {
                let procs = &self.procs;
                let waiter = self
                    .net
                    .as_mut()
                    .and_then(|n| n.spawn_timed_out(corr, &|p| procs.contains_key(&p)));
                if let Some(w) = waiter {
                    self.wake(w);
                }
            }
            TimerKind::Wall(pid) => {
                if self.procs.contains_key(&pid) {
                    self.terminate(
                        pid,
                        ExitReason::Quota {
                            resource: Meter::WallMs,
                        },
                    );
                }
            }
        }
    }

    /// Arm the timer that ends `pid`'s current timed park at `at` (replacing any earlier one).
    pub fn arm_park(&mut self, pid: Pid, at: u64) {
        let token = self.timers.arm(at, TimerKind::Park(pid));
        if let Some(p) = self.procs.get_mut(&pid) {
            p.ext().park_timer = token;
        }
        if self.idle_threads > 0 {
            self.notify = true;
        }
    }

    /// The timed park is over (answered or timed out): its timer, if still pending, is stale.
    pub fn disarm_park(&mut self, pid: Pid) {
        if let Some(x) = self.procs.get_mut(&pid).and_then(|p| p.x.as_mut()) {
            x.park_timer = 0;
        }
    }

    /// Whether a `Park` timer with `token` still ends a park of `pid`.
    pub fn park_live(&self, pid: Pid, token: u64) -> bool {
        self.procs
            .get(&pid)
            .and_then(|p| p.x.as_ref())
            .is_some_and(|x| x.park_timer == token)
    }

    /// Whether a timer would do nothing if fired (a stale park): the idle scheduler drops it
    /// without moving the virtual clock, so an answered receive leaves no trace in time.
    pub fn timer_stale(&self, kind: TimerKind, token: u64) -> bool {
        matches!(kind, TimerKind::Park(pid) if !self.park_live(pid, token))
    }

    /// Take message `i` of `me`'s mailbox as a receive: release senders parked on a full
    /// mailbox once it has drained to half, emit `recv`. The caller ticks.
    pub fn take_msg(&mut self, me: Pid, i: usize) -> Option<Message> {
        let p = self.procs.get_mut(&me)?;
        let m = if i == 0 {
            p.mailbox.pop_front()?
        } else {
            p.mailbox.remove(i)?
        };
        // Senders parked on a full mailbox wake in a batch once it has drained to half
        // (hysteresis): each then sends a run of messages instead of one message per park/wake
        // round trip, which is what a fan-in under backpressure spends its time on otherwise.
        // FIFO order among them is kept.
        let low_water = p.max_mailbox.map_or(usize::MAX, |l| l as usize / 2);
        if p.mailbox.len() <= low_water {
            if let Some(x) = p.x.as_mut().filter(|x| !x.send_waiters.is_empty()) {
                let mut waiters = std::mem::take(&mut x.send_waiters);
                for w in waiters.drain(..) {
                    if let Some(wp) = self.procs.get_mut(&w) {
                        wp.blocked_on = None;
                    }
                    self.wake(w);
                }
                // Keep the queue's allocation for the next time.
                if let Some(x) = self.procs.get_mut(&me).and_then(|p| p.x.as_mut()) {
                    x.send_waiters = waiters;
                }
            }
        }
        self.emit(EventKind::Recv { pid: me });
        Some(m)
    }

    /// Fire every timer due at the current time. Returns how many fired.
    pub fn fire_due(&mut self) -> usize {
        let now = self.now();
        let mut n = 0;
        while let Some(t) = self.timers.pop_due(now) {
            self.fire(t.kind, t.token);
            n += 1;
        }
        n
    }

    /// Charge a driver cost to `pid`'s account chain. On exhaustion the process is terminated
    /// with `Quota` (kernel-enforced: a program cannot ignore it) and `Err` is returned.
    pub fn charge(&mut self, pid: Pid, cost: &agentos_abi::Cost) -> Result<(), Meter> {
        let Some(acct) = self.procs.get(&pid).map(|p| p.account) else {
            return Ok(());
        };
        let charges = [
            (Meter::Tokens, cost.tokens),
            (Meter::ToolCalls, cost.tool_calls),
            (Meter::Usd, cost.usd_micros),
            // The reductions a driver reports (the wasm device's fuel) are CPU spent on the
            // caller's behalf; the default of one per op is scheduling only.
            (Meter::Cpu, cost.reductions as u64),
        ];
        // All or nothing across the meters too: a cost that exceeds one meter charges none.
        if let Err(m) = self.accounts.charge_all(acct, &charges) {
            let n = charges.iter().find(|(mm, _)| *mm == m).map_or(0, |c| c.1);
            self.emit(EventKind::Fault {
                pid,
                error: format!("quota exceeded: {} (charge of {n} refused)", m.name()),
            });
            self.terminate(pid, ExitReason::Quota { resource: m });
            return Err(m);
        }
        for (meter, n) in charges {
            if n > 0 {
                self.emit(EventKind::Charge { pid, meter, n });
            }
        }
        Ok(())
    }

    /// Terminate a process: the seed's `terminate`, in O(what it owns).
    pub fn terminate(&mut self, pid: Pid, reason: ExitReason) {
        let Some(mut p) = self.procs.remove(&pid) else {
            return;
        };
        let mut x = p.x.take().map(|b| *b).unwrap_or_default();
        // A sender parked on someone's full mailbox leaves that queue, or the wake-up meant for
        // the next live sender would be spent on a dead one.
        if let Some(t) = p.blocked_on.take() {
            if let Some(tx) = self.procs.get_mut(&t).and_then(|tp| tp.x.as_mut()) {
                tx.send_waiters.retain(|w| *w != pid);
            }
        }
        if p.queued && p.special() {
            self.special = self.special.saturating_sub(1);
        }
        self.accounts.release(p.account);
        while let Some(c) = x.cleanups.pop() {
            self.deferred.push(Deferred::Cleanup(c));
        }
        for (_, h) in x.handles.drain(..) {
            if let IoHandle::Open(h) | IoHandle::Live(h) = h {
                self.deferred.push(Deferred::Close(h));
            }
        }
        self.caps.revoke_owned_by(pid);
        for name in x.names.drain(..) {
            if self.registry.get(&name) == Some(&pid) {
                self.registry.remove(&name);
            }
        }
        self.emit(EventKind::Exit {
            pid,
            reason: reason.clone(),
        });
        if let ExitReason::Fault { error } = &reason {
            self.emit(EventKind::Fault {
                pid,
                error: error.clone(),
            });
        }
        // Each link gets a down (no correlation id), and each monitor its own down carrying its
        // reference as the correlation id (Erlang's semantics: a reference names one monitor,
        // so `demonitor` can stop or flush exactly it, and a request/reply that monitors its
        // server for one call never takes a down meant for someone else).
        for w in x.links.drain(..) {
            if let Some(wx) = self.procs.get_mut(&w).and_then(|wp| wp.x.as_mut()) {
                wx.links.retain(|l| *l != pid);
            }
            if self.procs.contains_key(&w) {
                let down = SysMsg::Down {
                    pid,
                    reason: reason.clone(),
                };
                self.deliver(w, Message::new(pid, Body::Sys(down)));
            }
        }
        for (w, r) in x.monitors.drain(..) {
            self.mrefs.remove(&r);
            if self.procs.contains_key(&w) {
                let down = SysMsg::Down {
                    pid,
                    reason: reason.clone(),
                };
                let mut m = Message::new(pid, Body::Sys(down));
                m.corr = Some(r.0);
                self.deliver(w, m);
            }
        }
        for w in x.start_waiters.drain(..) {
            if let Some(wp) = self.procs.get_mut(&w) {
                wp.ext()
                    .start_results
                    .push((pid, agentos_abi::Started::Exited(reason.clone())));
            }
            self.wake(w);
        }
        if self.net.is_some() {
            // Its remote monitors get downs, sealed now and sent after the lock.
            let now = crate::seam::Core::wire_now(self);
            if let Some(n) = self.net.as_mut() {
                for (e, b) in n.process_died(pid, &reason, now) {
                    self.deferred.push(Deferred::Egress(e, b));
                }
            }
        }
        for w in x.send_waiters.drain(..) {
            if let Some(wp) = self.procs.get_mut(&w) {
                wp.blocked_on = None;
            }
            self.wake(w);
        }
        for w in x.exit_waiters.drain(..) {
            if let Some(wp) = self.procs.get_mut(&w) {
                wp.ext().wait_results.push((pid, reason.clone()));
            }
            self.wake(w);
        }
        if let Some(ws) = self.ext_waiters.remove(&pid) {
            for w in ws {
                let _ = w.try_send(reason.clone());
            }
        }
        self.reaped.insert(pid, reason);
        self.reaped_order.push_back(pid);
        while self.reaped_order.len() > self.reaped_cap {
            if let Some(old) = self.reaped_order.pop_front() {
                self.reaped.remove(&old);
            }
        }
        if !p.mailbox.is_empty() {
            self.deferred
                .push(Deferred::DropMailbox(std::mem::take(&mut p.mailbox)));
        }
        if let Some(f) = p.fut.take() {
            self.deferred.push(Deferred::DropFuture(f));
        }
    }

    /// The parent as `ps` reports it: a dead parent's children belong to init.
    pub fn effective_parent(&self, p: &Pcb) -> Option<Pid> {
        match p.parent {
            Some(pp) if !self.procs.contains_key(&pp) => match self.init {
                Some(i) if self.procs.contains_key(&i) => Some(i),
                _ => Some(pp),
            },
            other => other,
        }
    }

    /// The exit reason of a dead process, if still in the bounded reaped cache.
    pub fn reaped_reason(&self, pid: Pid) -> ExitReason {
        self.reaped.get(&pid).cloned().unwrap_or(ExitReason::Normal)
    }

    /// The exit reason of a dead process, or `None` once the bounded cache has forgotten it.
    pub fn reaped_known(&self, pid: Pid) -> Option<ExitReason> {
        self.reaped.get(&pid).cloned()
    }

    /// A fresh monitor reference.
    pub fn mint_mref(&mut self) -> MonitorRef {
        self.next_mref += 1;
        MonitorRef(self.next_mref)
    }
}

fn age_boost(age: u32) -> i64 {
    (age / AGE_EVERY).min(AGE_MAX) as i64
}

/// Does `a` run before `b`? Effective priority, then EDF, then FIFO.
fn higher(a: &Pcb, b: &Pcb) -> bool {
    let ea = a.priority as i64 + age_boost(a.age);
    let eb = b.priority as i64 + age_boost(b.age);
    if ea != eb {
        return ea > eb;
    }
    let da = a.deadline.unwrap_or(u64::MAX);
    let db = b.deadline.unwrap_or(u64::MAX);
    if da != db {
        return da < db;
    }
    a.enq < b.enq
}
