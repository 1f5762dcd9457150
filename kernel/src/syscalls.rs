//! [`Sys`]: the per-process syscall handle, the kernel's implementation of
//! [`agentos_abi::Syscalls`].
//!
//! Each syscall takes the kernel lock once for its decision (plus once more around driver I/O,
//! which runs unlocked), charges reductions with `tick`, and yields if the quantum is spent.
//! A syscall made by a process that has already been terminated (killed by another thread
//! mid-poll) parks forever: its future is dropped by the scheduler, never resumed.

use crate::journal::{IoResult, JournalMode, Record};
use crate::kernel::{arm_wall, Shared};
use crate::seam::{RemoteSend, Target};
use crate::state::{IoHandle, Pcb, State};
use agentos_abi::driver::{BoxFuture, DriverHandle};
use agentos_abi::sys::{Attenuation, Cleanup, LogLevel};
use agentos_abi::{
    Body, Budget, CapError, CapInfo, CapRef, Caveat, Cost, DriverError, EventKind, ExitReason,
    Image, Message, MonitorRef, NodeId, OpenCtx, Pid, RememberOpts, Reply, Resource, Right, Rights,
    SchedOpts, SegId, Segment, Select, SendError, SendOpts, Signal, SpawnOpts, Spawned, Started,
    SysError, SysMsg, Syscalls, Usage, Value,
};
use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Which critical section a `with_held` times (the `lockstat` feature).
#[cfg(feature = "lockstat")]
pub(crate) type HeldKind = crate::lockstat::Held;
/// Which critical section a `with_held` times (unused without the `lockstat` feature).
#[cfg(not(feature = "lockstat"))]
#[derive(Clone, Copy)]
pub(crate) enum HeldKind {
    Send,
    Recv,
}

/// The syscall handle a process receives. Cloning it is one reference-count bump.
#[derive(Clone)]
pub struct Sys {
    pub(crate) shared: Arc<Shared>,
    pub(crate) pid: Pid,
}

/// Returns `Pending` once, then `Ready`: the second half of a quantum-spent yield (the
/// re-enqueue was arranged under the lock by `tick`).
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            Poll::Pending
        }
    }
}

#[inline]
pub(crate) async fn maybe_yield(y: bool) {
    if y {
        YieldOnce(false).await
    }
}

fn cap_err(op: &'static str) -> impl Fn(CapError) -> SysError {
    move |err| SysError::Cap { op, err }
}

/// Resolve a cap to the process it designates, local or remote.
fn resolve_target(
    st: &State,
    holder: Pid,
    cap: CapRef,
    right: Right,
    op: &'static str,
) -> Result<Target, SysError> {
    match st
        .caps
        .require(holder, cap, right, st.now())
        .map_err(cap_err(op))?
    {
        Resource::Process(p) => Ok(Target::Local(*p)),
        Resource::Remote { node, pid } => Ok(Target::Remote(node.clone(), *pid)),
        _ => Err(SysError::Cap {
            op,
            err: CapError::WrongKind("process"),
        }),
    }
}

/// Resolve a cap to a local process pid, for the syscalls that only act locally.
fn target_pid(
    st: &State,
    holder: Pid,
    cap: CapRef,
    right: Right,
    op: &'static str,
) -> Result<Pid, SysError> {
    match resolve_target(st, holder, cap, right, op)? {
        Target::Local(p) => Ok(p),
        Target::Remote(node, _) => Err(SysError::Unsupported(format!(
            "{op}: a process on node \"{node}\" can only be sent to and monitored \
             (authority never crosses the wire)"
        ))),
    }
}

/// Poll a set of driver futures concurrently; results in order.
struct JoinAll {
    futs: Vec<Option<BoxFuture<'static, Result<Reply, DriverError>>>>,
    out: Vec<Option<Result<Reply, DriverError>>>,
}

impl Future for JoinAll {
    type Output = Vec<Result<Reply, DriverError>>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut pending = false;
        for (f, o) in this.futs.iter_mut().zip(this.out.iter_mut()) {
            if let Some(fut) = f {
                match fut.as_mut().poll(cx) {
                    Poll::Ready(r) => {
                        *o = Some(r);
                        *f = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            return Poll::Pending;
        }
        Poll::Ready(
            this.out
                .iter_mut()
                .map(|o| {
                    o.take()
                        .unwrap_or(Err(DriverError::Failed("lost result".into())))
                })
                .collect(),
        )
    }
}

/// How a send went: delivered locally (yield due?), or sealed for a peer after the lock.
enum Sent {
    Local(bool),
    Remote(RemoteSend, Body, bool),
}

/// What `begin_io` hands the I/O path.
struct IoStart {
    slot: IoHandle,
    first_op: u64,
    recovered: bool,
    /// Run live even in replay (a device that replays live).
    live: bool,
}

/// What `replay_one` decided: answered (`None`: the process died), or run it live.
enum ReplayStep {
    Done(Option<bool>, Result<Value, SysError>),
    Live(IoStart),
}

/// One op's answer, from the driver or the journal.
type IoOutcome = Result<Reply, SysError>;

/// A reply's cost and value (errors cost nothing).
fn split(r: IoOutcome) -> (Cost, Result<Value, SysError>) {
    match r {
        Ok(r) => (r.cost, Ok(r.value)),
        Err(e) => (Cost::FREE, Err(e)),
    }
}

/// Keeps driver I/O counted in flight until it settles. A process killed mid-I/O drops its
/// future, and with it this guard, which leaves the count: otherwise a deterministic kernel
/// would wait forever for I/O nobody will settle.
struct Inflight<'a> {
    shared: &'a Arc<Shared>,
    armed: bool,
}

impl<'a> Inflight<'a> {
    fn new(shared: &'a Arc<Shared>) -> Self {
        Inflight {
            shared,
            armed: true,
        }
    }

    /// The I/O settles normally (`settle` leaves the count).
    fn settled(mut self) {
        self.armed = false;
    }
}

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared
                .with(|st| st.io_inflight = st.io_inflight.saturating_sub(1));
        }
    }
}

impl Sys {
    pub(crate) fn new(shared: Arc<Shared>, pid: Pid) -> Self {
        Sys { shared, pid }
    }

    /// The next value of the kernel's seeded RNG (deterministic in deterministic mode).
    pub fn random(&self) -> u64 {
        self.shared.with(|st| st.random())
    }

    /// Park forever: the process is dead and will never be polled again.
    pub(crate) async fn dead<T>(&self) -> T {
        std::future::pending().await
    }

    fn handle(
        &self,
        st: &mut State,
        handle: CapRef,
        right: Right,
        op: &'static str,
    ) -> Result<IoHandle, SysError> {
        let now = st.now();
        match st
            .caps
            .require(self.pid, handle, right, now)
            .map_err(cap_err(op))?
        {
            Resource::Device(_) => {}
            _ => {
                return Err(SysError::Cap {
                    op,
                    err: CapError::WrongKind("device handle"),
                })
            }
        }
        let p = st.procs.get(&self.pid).ok_or(SysError::NoSuchProcess)?;
        p.x.as_ref()
            .and_then(|x| x.handles.iter().find(|(c, _)| *c == handle))
            .map(|(_, h)| h.clone())
            .ok_or(SysError::Handle(
                "open (this cap is a device, not an open handle)",
            ))
    }

    /// After driver I/O: leave the in-flight count, charge the cost, tick. `None` means the
    /// process died meanwhile (killed, or terminated by a quota on this very charge).
    fn settle(&self, costs: &[agentos_abi::Cost]) -> Option<bool> {
        self.shared.with(|st| {
            st.io_inflight = st.io_inflight.saturating_sub(1);
            self.charge_tick(st, costs)
        })
    }

    fn charge_tick(&self, st: &mut State, costs: &[agentos_abi::Cost]) -> Option<bool> {
        if !st.procs.contains_key(&self.pid) {
            return None;
        }
        let mut red = 0u32;
        for c in costs {
            st.charge(self.pid, c).ok()?;
            red = red.saturating_add(c.reductions.max(1));
        }
        Some(st.tick(self.pid, red.max(1)))
    }

    /// Replay and recover: under one lock, check the handle, take the op number and, when the
    /// journal answers, charge and tick too. Otherwise the op goes live (recover only), already
    /// counted in flight.
    fn replay_one(&self, handle: CapRef, op: &'static str) -> Result<ReplayStep, SysError> {
        let right = if op == "write" {
            Right::Write
        } else {
            Right::Read
        };
        let journal = self.shared.journal.as_deref();
        let replay = self.shared.jmode == JournalMode::Replay;
        self.shared.with(|st| {
            let slot = self.handle(st, handle, right, op)?;
            let Some(p) = st.procs.get_mut(&self.pid) else {
                return Ok(ReplayStep::Done(None, Err(SysError::NoSuchProcess)));
            };
            let x = p.ext();
            let n = x.io_op;
            x.io_op += 1;
            if let IoHandle::Live(_) = slot {
                st.io_inflight += 1;
                return Ok(ReplayStep::Live(IoStart {
                    slot,
                    first_op: n,
                    recovered: false,
                    live: true,
                }));
            }
            let hit = if x.recovered {
                None
            } else {
                journal.and_then(|j| j.get(self.pid.0, n))
            };
            match hit {
                Some(r) => {
                    let (cost, res) = match r {
                        IoResult::Ok(r) => (r.cost, Ok(r.value.clone())),
                        IoResult::Err(e) => (Cost::FREE, Err(SysError::Driver(e.clone()))),
                    };
                    Ok(ReplayStep::Done(self.charge_tick(st, &[cost]), res))
                }
                None if replay => {
                    let e = SysError::Replay(format!("no journal entry for {}:{n}", self.pid));
                    Ok(ReplayStep::Done(self.charge_tick(st, &[]), Err(e)))
                }
                None => {
                    x.recovered = true;
                    st.io_inflight += 1;
                    Ok(ReplayStep::Live(IoStart {
                        slot,
                        first_op: n,
                        recovered: true,
                        live: false,
                    }))
                }
            }
        })
    }

    /// Check the handle, reserve `n` journal op numbers, and enter the in-flight count.
    fn begin_io(&self, handle: CapRef, op: &'static str, n: u64) -> Result<IoStart, SysError> {
        let right = if op == "write" {
            Right::Write
        } else {
            Right::Read
        };
        let journaled = self.shared.jmode != JournalMode::Live;
        self.shared.with(|st| {
            let slot = self.handle(st, handle, right, op)?;
            let (first_op, recovered) = match st.procs.get_mut(&self.pid) {
                Some(p) if journaled => {
                    let x = p.ext();
                    let first = x.io_op;
                    x.io_op += n;
                    (first, x.recovered)
                }
                _ => (0, false),
            };
            st.io_inflight += 1;
            let live = matches!(slot, IoHandle::Live(_));
            Ok(IoStart {
                slot,
                first_op,
                recovered,
                live,
            })
        })
    }

    /// The journal's answer for op `op`, if the mode takes answers from it: `Ok(Some(r))`
    /// answered, `Ok(None)` run it live, `Err` a replay that ran past the recording. In
    /// recover mode the first miss flips the process to live for good.
    fn journaled(&self, op: u64, recovered: &mut bool) -> Result<Option<IoOutcome>, SysError> {
        let mode = self.shared.jmode;
        if matches!(mode, JournalMode::Live | JournalMode::Record)
            || (mode == JournalMode::Recover && *recovered)
        {
            return Ok(None);
        }
        let hit = self
            .shared
            .journal
            .as_ref()
            .and_then(|j| j.get(self.pid.0, op));
        match (hit, mode) {
            (Some(IoResult::Ok(r)), _) => Ok(Some(Ok(r.clone()))),
            (Some(IoResult::Err(e)), _) => Ok(Some(Err(SysError::Driver(e.clone())))),
            (None, JournalMode::Replay) => Err(SysError::Replay(format!(
                "no journal entry for {}:{op}",
                self.pid
            ))),
            (None, _) => {
                *recovered = true;
                self.shared.with(|st| {
                    if let Some(p) = st.procs.get_mut(&self.pid) {
                        p.ext().recovered = true;
                    }
                });
                Ok(None)
            }
        }
    }

    /// The driver handle behind `slot`, opening a lazily opened one now.
    async fn live_handle(
        &self,
        cap: CapRef,
        slot: &IoHandle,
    ) -> Result<Arc<dyn DriverHandle>, DriverError> {
        match slot {
            IoHandle::Open(h) | IoHandle::Live(h) => Ok(h.clone()),
            IoHandle::Lazy(d, at) => {
                let h = d.open((**at).clone()).await?;
                self.shared.with(|st| {
                    let alive = st.procs.get_mut(&self.pid).and_then(|p| {
                        let x = p.x.as_mut()?;
                        let e = x.handles.iter_mut().find(|(c, _)| *c == cap)?;
                        e.1 = IoHandle::Open(h.clone());
                        Some(())
                    });
                    if alive.is_none() {
                        st.deferred.push(crate::state::Deferred::Close(h.clone()));
                    }
                });
                Ok(h)
            }
        }
    }

    /// Append a live result to the store (record and recover modes).
    fn journal_live(&self, op: u64, r: &Result<Reply, DriverError>) -> Result<(), SysError> {
        if !matches!(
            self.shared.jmode,
            JournalMode::Record | JournalMode::Recover
        ) {
            return Ok(());
        }
        let result = match r {
            Ok(rep) => IoResult::Ok(rep.clone()),
            Err(e) => IoResult::Err(e.to_string()),
        };
        let rec = Record::Io {
            pid: self.pid.0,
            op,
            result,
        };
        let err = match self.shared.store.lock().as_mut() {
            Some(s) => s.append(&rec).err(),
            None => None,
        };
        match err {
            None => Ok(()),
            Some(e) => {
                let msg = format!("append {}:{op}: {e}", self.pid);
                self.shared.with(|st| {
                    st.emit(EventKind::Fault {
                        pid: self.pid,
                        error: format!("journal: {msg}"),
                    })
                });
                Err(SysError::Journal(msg))
            }
        }
    }

    /// One journaled driver read or write.
    async fn io_one(&self, handle: CapRef, req: Value, write: bool) -> Result<Value, SysError> {
        let op = if write { "write" } else { "read" };
        let io = match self.shared.jmode {
            JournalMode::Replay | JournalMode::Recover => match self.replay_one(handle, op)? {
                ReplayStep::Done(None, _) => return self.dead().await,
                ReplayStep::Done(Some(y), res) => {
                    maybe_yield(y).await;
                    return res;
                }
                ReplayStep::Live(io) => io,
            },
            JournalMode::Live | JournalMode::Record => self.begin_io(handle, op, 1)?,
        };
        let inflight = Inflight::new(&self.shared);
        let mut recovered = io.recovered;
        let answer = if io.live {
            Ok(None)
        } else {
            self.journaled(io.first_op, &mut recovered)
        };
        let (cost, res) = match answer {
            Err(e) => (Cost::FREE, Err(e)),
            Ok(Some(r)) => split(r),
            Ok(None) => {
                let r = match self.live_handle(handle, &io.slot).await {
                    Ok(h) if write => h.write(req).await,
                    Ok(h) => h.read(req).await,
                    Err(e) => Err(e),
                };
                let j = self.journal_live(io.first_op, &r);
                let (cost, res) = split(r.map_err(|e| SysError::Driver(e.to_string())));
                (cost, j.and(res))
            }
        };
        inflight.settled();
        self.finish_io(cost, res).await
    }

    /// The tail of one driver read or write: settle (charge + tick), yield if due, and hand
    /// back the result.
    async fn finish_io(&self, cost: Cost, res: Result<Value, SysError>) -> Result<Value, SysError> {
        match self.settle(&[cost]) {
            None => self.dead().await,
            Some(y) => {
                maybe_yield(y).await;
                res
            }
        }
    }

    /// A timed park found nothing: at or past `deadline` answer `None` (ticked), otherwise arm
    /// the park timer once and stay parked.
    fn park_until<T>(
        &self,
        st: &mut State,
        deadline: Option<u64>,
        armed: &mut bool,
    ) -> Poll<(Option<T>, bool)> {
        let Some(at) = deadline else {
            return Poll::Pending;
        };
        if st.clock.refresh() >= at {
            if *armed {
                st.disarm_park(self.pid);
            }
            return Poll::Ready((None, st.tick(self.pid, 1)));
        }
        if !*armed {
            st.arm_park(self.pid, at);
            *armed = true;
        }
        Poll::Pending
    }

    async fn simple(
        &self,
        target: CapRef,
        op: &'static str,
        f: impl FnOnce(&mut State, Pid, Pid),
    ) -> Result<(), SysError> {
        let me = self.pid;
        let r = self.shared.with(|st| {
            if !st.procs.contains_key(&me) {
                return None;
            }
            Some(target_pid(st, me, target, Right::Kill, op).map(|t| {
                f(st, me, t);
                st.tick(me, 1)
            }))
        });
        match r {
            None => self.dead().await,
            Some(Ok(y)) => {
                maybe_yield(y).await;
                Ok(())
            }
            Some(Err(e)) => Err(e),
        }
    }
}

impl Syscalls for Sys {
    fn self_pid(&self) -> Pid {
        self.pid
    }

    fn self_cap(&self) -> CapRef {
        self.shared.with(|st| {
            st.caps
                .mint(self.pid, Resource::Process(self.pid), Rights::SEND_MONITOR)
        })
    }

    fn register(&self, name: &str) -> Result<(), SysError> {
        self.shared.with(|st| {
            if !st.procs.contains_key(&self.pid) {
                return Err(SysError::NoSuchProcess);
            }
            if let Some(cur) = st.registry.get(name) {
                if *cur != self.pid && st.procs.contains_key(cur) {
                    return Err(SysError::NameTaken(name.to_owned()));
                }
            }
            let key: Arc<str> = Arc::from(name);
            st.registry.insert(key.clone(), self.pid);
            if let Some(p) = st.procs.get_mut(&self.pid) {
                let x = p.ext();
                if !x.names.iter().any(|n| **n == *name) {
                    x.names.push(key);
                }
            }
            Ok(())
        })
    }

    fn unregister(&self, name: &str) {
        self.shared.with(|st| {
            if st.registry.get(name) == Some(&self.pid) {
                st.registry.remove(name);
            }
            if let Some(p) = st.procs.get_mut(&self.pid) {
                if let Some(x) = p.x.as_mut() {
                    x.names.retain(|n| **n != *name);
                }
            }
        })
    }

    async fn lookup(&self, name: &str) -> Option<CapRef> {
        let (r, y) = self.shared.with(|st| {
            let found = match st.registry.get(name).copied() {
                Some(owner) if st.procs.contains_key(&owner) => Some(st.caps.mint(
                    self.pid,
                    Resource::Process(owner),
                    Right::Send.into(),
                )),
                Some(_) => {
                    st.registry.remove(name);
                    None
                }
                None => None,
            };
            (found, st.tick(self.pid, 1))
        });
        maybe_yield(y).await;
        r
    }

    async fn recv(&self) -> Message {
        let me = self.pid;
        let (msg, y) = poll_fn(|_| {
            self.shared.with_held(HeldKind::Recv, |st| {
                let Some(m) = st.take_msg(me, 0) else {
                    return Poll::Pending;
                };
                Poll::Ready((m, st.tick(me, 1)))
            })
        })
        .await;
        maybe_yield(y).await;
        msg
    }

    async fn recv_until(&self, select: Select, deadline: Option<u64>) -> Option<Message> {
        let me = self.pid;
        let mut armed = false;
        let (msg, y) = poll_fn(|_| {
            self.shared.with(|st| {
                let Some(p) = st.procs.get(&me) else {
                    return Poll::Pending;
                };
                let found = match select {
                    Select::Any => (!p.mailbox.is_empty()).then_some(0),
                    sel => p.mailbox.iter().position(|m| sel.matches(m)),
                };
                if let Some(i) = found {
                    let m = st.take_msg(me, i);
                    if armed {
                        st.disarm_park(me);
                    }
                    return Poll::Ready((m, st.tick(me, 1)));
                }
                self.park_until(st, deadline, &mut armed)
            })
        })
        .await;
        maybe_yield(y).await;
        msg
    }

    async fn recv_where<F>(&self, mut pred: F, deadline: Option<u64>) -> Option<Message>
    where
        F: FnMut(&Message) -> bool + Send,
    {
        let me = self.pid;
        let mut armed = false;
        // Messages before `seen` have been offered to `pred` and refused.
        let mut seen = 0usize;
        let (msg, y) = poll_fn(|_| {
            // Take the unseen tail out of the mailbox and judge it outside the kernel lock:
            // `pred` is program code. Only this process ever takes from its own mailbox, and
            // new messages only ever go on the end, so putting the refused ones back at `seen`
            // keeps the mailbox in arrival order.
            let batch = self.shared.with(|st| {
                let p = st.procs.get_mut(&me)?;
                (p.mailbox.len() > seen).then(|| p.mailbox.drain(seen..).collect::<Vec<_>>())
            });
            let hit = batch.as_ref().and_then(|b| b.iter().position(&mut pred));
            self.shared.with(|st| {
                let Some(p) = st.procs.get_mut(&me) else {
                    if let Some(b) = batch {
                        st.deferred
                            .push(crate::state::Deferred::DropMailbox(b.into_iter().collect()));
                    }
                    return Poll::Pending;
                };
                if let Some(mut b) = batch {
                    let later = p.mailbox.split_off(seen);
                    let n = b.len();
                    let taken = hit.map(|i| b.remove(i));
                    p.mailbox.extend(b);
                    p.mailbox.extend(later);
                    if let Some(m) = taken {
                        // Account for it as a receive of the message now at `seen + i`'s place:
                        // put it back at the front of the unseen part and take it from there.
                        let at = seen + hit.unwrap_or(0);
                        p.mailbox.insert(at, m);
                        let m = st.take_msg(me, at);
                        if armed {
                            st.disarm_park(me);
                        }
                        return Poll::Ready((m, st.tick(me, 1)));
                    }
                    seen += n;
                }
                self.park_until(st, deadline, &mut armed)
            })
        })
        .await;
        maybe_yield(y).await;
        msg
    }

    fn try_recv(&self, select: Select) -> Option<Message> {
        let me = self.pid;
        self.shared.with(|st| {
            let p = st.procs.get(&me)?;
            let i = p.mailbox.iter().position(|m| select.matches(m))?;
            let m = st.take_msg(me, i);
            st.tick(me, 1);
            m
        })
    }

    fn mailbox_len(&self) -> usize {
        self.shared
            .with(|st| st.procs.get(&self.pid).map_or(0, |p| p.mailbox.len()))
    }

    async fn send(&self, to: CapRef, body: Body, opts: SendOpts) -> Result<(), SendError> {
        let me = self.pid;
        let mut slot = Some((body, opts));
        let r = poll_fn(|_| {
            self.shared.with_held(HeldKind::Send, |st| {
                if !st.procs.contains_key(&me) {
                    return Poll::Ready(None);
                }
                let Some((body, opts)) = slot.take() else {
                    return Poll::Ready(None);
                };
                let tpid = match resolve_target(st, me, to, Right::Send, "send") {
                    Ok(Target::Local(t)) => t,
                    Ok(Target::Remote(node, pid)) => {
                        return Poll::Ready(Some(
                            match self
                                .prepare_remote_send(st, node, pid, &body, &opts.caps, opts.corr)
                            {
                                Ok(rs) => Ok(Sent::Remote(rs, body, st.tick(me, 1))),
                                Err(e) => Err(SendError::Refused(body, e)),
                            },
                        ));
                    }
                    Err(e) => return Poll::Ready(Some(Err(SendError::Refused(body, e)))),
                };
                // System messages (down, exit, term, boot…) are the kernel's word: a process
                // that could send one could forge a death or a stop request.
                if matches!(body, Body::Sys(_)) {
                    let why = "send: a process cannot send a system message (only the kernel does)";
                    st.emit(EventKind::Fault {
                        pid: me,
                        error: why.into(),
                    });
                    let e = SysError::Unsupported(why.into());
                    return Poll::Ready(Some(Err(SendError::Refused(body, e))));
                }
                let now = st.now();
                for c in &opts.caps {
                    if st.caps.lookup(*c, now).is_none_or(|v| v.owner != me) {
                        let e = SysError::Cap {
                            op: "send",
                            err: CapError::NotHeld,
                        };
                        return Poll::Ready(Some(Err(SendError::Refused(body, e))));
                    }
                }
                let Some(t) = st.procs.get_mut(&tpid) else {
                    return Poll::Ready(Some(Err(SendError::Closed(body))));
                };
                if t.max_mailbox.is_some_and(|l| t.mailbox.len() >= l as usize) && tpid != me {
                    // Backpressure: park until the receiver takes a message or dies.
                    let registered = st.procs.get(&me).and_then(|p| p.blocked_on) == Some(tpid);
                    if !registered {
                        if let Some(t) = st.procs.get_mut(&tpid) {
                            t.ext().send_waiters.push_back(me);
                        }
                        if let Some(p) = st.procs.get_mut(&me) {
                            p.blocked_on = Some(tpid);
                        }
                    }
                    slot = Some((body, opts));
                    return Poll::Pending;
                }
                let msg = Message {
                    from: me,
                    body,
                    caps: opts.caps,
                    corr: opts.corr,
                    deadline: opts.deadline,
                };
                st.deliver(tpid, msg);
                Poll::Ready(Some(Ok(Sent::Local(st.tick(me, 1)))))
            })
        })
        .await;
        match r {
            None => self.dead().await,
            Some(Ok(Sent::Local(y))) => {
                maybe_yield(y).await;
                Ok(())
            }
            Some(Ok(Sent::Remote(rs, body, y))) => {
                let r = self
                    .finish_remote_send(rs, body)
                    .map_err(|(body, e)| SendError::Refused(body, e));
                maybe_yield(y).await;
                r
            }
            Some(Err(e)) => Err(e),
        }
    }

    async fn spawn(&self, image: Image<Self>, opts: SpawnOpts) -> Result<Spawned, SysError> {
        let me = self.pid;
        let cpid = Pid(self.shared.next_pid.fetch_add(1, Ordering::Relaxed));
        // Build the child's future outside the lock: an image constructor is program code.
        let mut opts = opts;
        let args = std::mem::take(&mut opts.args);
        // Kept for snapshots; a `Unit` (the common case) costs nothing.
        let mut keep = (args != Value::Unit).then(|| args.clone());
        let fut = image.start(Sys::new(self.shared.clone(), cpid), args);
        let r = self.shared.with(|st| {
            let now = st.now();
            let parent = st.procs.get(&me)?;
            let (acct, hint) = (parent.account, parent.spawn_hint);
            let ok = |st: &State, c: CapRef| {
                st.caps
                    .require(me, c, Right::Spawn, now)
                    .is_ok_and(|r| matches!(r, Resource::Spawn))
            };
            if !hint.is_some_and(|h| ok(st, h)) {
                let found = st
                    .caps
                    .find_owned(me, |r| matches!(r, Resource::Spawn), now)
                    .filter(|c| ok(st, *c));
                match found {
                    Some(c) => {
                        if let Some(p) = st.procs.get_mut(&me) {
                            p.spawn_hint = Some(c);
                        }
                    }
                    None => {
                        return Some(Err(SysError::Cap {
                            op: "spawn",
                            err: CapError::NoSpawn,
                        }))
                    }
                }
            }
            for c in opts.caps.iter().chain(opts.grants.iter().map(|(_, c)| c)) {
                if st.caps.lookup(*c, now).is_none_or(|v| v.owner != me) {
                    return Some(Err(SysError::Cap {
                        op: "spawn",
                        err: CapError::NotHeld,
                    }));
                }
            }
            let cacct = match st.accounts.child(acct, &opts.quota, now) {
                Ok(a) => a,
                Err(m) => {
                    st.emit(EventKind::Fault {
                        pid: me,
                        error: format!("spawn refused: quota exceeded: {}", m.name()),
                    });
                    return Some(Err(SysError::Quota(m)));
                }
            };
            let mut pcb = Pcb::new(image.name().clone(), Some(me), cacct);
            pcb.max_mailbox = opts.quota.max_mailbox;
            pcb.priority = opts.priority;
            if opts.link {
                pcb.ext().links.push(me);
            }
            if let Some(a) = keep.take() {
                pcb.ext().args = a;
            }
            st.procs.insert(cpid, Box::new(pcb));
            if opts.link {
                if let Some(p) = st.procs.get_mut(&me) {
                    p.ext().links.push(cpid);
                }
            }
            for c in &opts.caps {
                st.caps.transfer(*c, cpid);
            }
            if !opts.grants.is_empty() {
                for (_, c) in &opts.grants {
                    st.caps.transfer(*c, cpid);
                }
                if let Some(p) = st.procs.get_mut(&cpid) {
                    p.ext().grants = std::mem::take(&mut opts.grants);
                }
            }
            let cap = st.caps.mint(me, Resource::Process(cpid), Rights::CHILD);
            if let Some(ms) = opts.deadline_ms {
                st.arm_deadline(cpid, ms);
            }
            arm_wall(st, cpid, cacct);
            st.emit(EventKind::Spawn {
                pid: cpid,
                parent: Some(me),
                name: image.name().clone(),
            });
            // The child's future goes in last so a refused spawn drops it outside the lock.
            Some(Ok((cap, st.tick(me, 5))))
        });
        match r {
            None => {
                drop(fut);
                self.dead().await
            }
            Some(Err(e)) => {
                drop(fut);
                Err(e)
            }
            Some(Ok((cap, y))) => {
                self.shared.with(|st| {
                    if let Some(p) = st.procs.get_mut(&cpid) {
                        p.fut = Some(fut);
                        st.wake(cpid);
                        None
                    } else {
                        Some(fut) // killed before it ever ran
                    }
                });
                maybe_yield(y).await;
                Ok(Spawned { pid: cpid, cap })
            }
        }
    }

    async fn exit(&self, reason: ExitReason) -> Infallible {
        self.shared.with(|st| st.terminate(self.pid, reason));
        self.dead().await
    }

    fn derive(&self, cap: CapRef, rights: Rights) -> Result<CapRef, SysError> {
        self.shared.with(|st| {
            let now = st.now();
            st.caps
                .derive(self.pid, cap, rights, now)
                .map_err(cap_err("derive"))
        })
    }

    fn attenuate(&self, cap: CapRef, how: Attenuation) -> Result<CapRef, SysError> {
        self.shared.with(|st| {
            let now = st.now();
            let caveats: Vec<Caveat> = how
                .expires_in_ms
                .map(|ms| Caveat::Expires {
                    at: now.saturating_add(ms),
                })
                .into_iter()
                .collect();
            st.caps
                .narrow(self.pid, cap, how.rights, &caveats, how.scope.as_ref(), now)
                .map_err(cap_err("attenuate"))
        })
    }

    fn revoke(&self, cap: CapRef) -> Result<(), SysError> {
        self.shared.with(|st| {
            let now = st.now();
            match st.caps.lookup(cap, now) {
                None => Err(SysError::Cap {
                    op: "revoke",
                    err: CapError::Invalid,
                }),
                Some(c) if c.owner != self.pid => Err(SysError::Cap {
                    op: "revoke",
                    err: CapError::NotHeld,
                }),
                Some(_) => {
                    st.caps.revoke(cap);
                    Ok(())
                }
            }
        })
    }

    fn cap_info(&self, cap: CapRef) -> Result<CapInfo, SysError> {
        self.shared.with(|st| {
            let now = st.now();
            match st.caps.info(cap, now) {
                None => Err(SysError::Cap {
                    op: "cap_info",
                    err: CapError::Invalid,
                }),
                Some(i) if i.owner != self.pid => Err(SysError::Cap {
                    op: "cap_info",
                    err: CapError::NotHeld,
                }),
                Some(i) => Ok(i),
            }
        })
    }

    fn grant(&self, name: &str) -> Option<CapRef> {
        self.shared.with(|st| {
            let now = st.now();
            let p = st.procs.get(&self.pid)?;
            let (_, c) = p.x.as_ref()?.grants.iter().find(|(n, _)| &**n == name)?;
            st.caps
                .lookup(*c, now)
                .is_some_and(|v| v.owner == self.pid)
                .then_some(*c)
        })
    }

    fn init_ack(&self, info: Value) {
        let me = self.pid;
        self.shared.with(|st| {
            let Some(p) = st.procs.get_mut(&me) else {
                return;
            };
            let x = p.ext();
            if x.acked.is_some() {
                return;
            }
            x.acked = Some(info.clone());
            let waiters = std::mem::take(&mut x.start_waiters);
            for w in waiters {
                if let Some(wp) = st.procs.get_mut(&w) {
                    wp.ext()
                        .start_results
                        .push((me, Started::Acked(info.clone())));
                }
                st.wake(w);
            }
        })
    }

    async fn await_start(&self, child: CapRef, deadline: Option<u64>) -> Result<Started, SysError> {
        let me = self.pid;
        let t = self
            .shared
            .with(|st| target_pid(st, me, child, Right::Monitor, "await_start"))?;
        let mut registered = false;
        let mut armed = false;
        let (r, y) = poll_fn(|_| {
            self.shared.with(|st| {
                let Some(p) = st.procs.get_mut(&me) else {
                    return Poll::Pending;
                };
                let found = p.x.as_mut().and_then(|x| {
                    let i = x.start_results.iter().position(|(pid, _)| *pid == t)?;
                    Some(x.start_results.swap_remove(i).1)
                });
                let found = found.or_else(|| match st.procs.get(&t) {
                    None => Some(Started::Exited(st.reaped_reason(t))),
                    Some(tp) => {
                        tp.x.as_ref()
                            .and_then(|x| x.acked.clone())
                            .map(Started::Acked)
                    }
                });
                if let Some(r) = found {
                    if let Some(x) = st.procs.get_mut(&t).and_then(|tp| tp.x.as_mut()) {
                        x.start_waiters.retain(|w| *w != me);
                    }
                    if armed {
                        st.disarm_park(me);
                    }
                    return Poll::Ready((Ok(r), st.tick(me, 1)));
                }
                if !registered {
                    if let Some(tp) = st.procs.get_mut(&t) {
                        tp.ext().start_waiters.push(me);
                    }
                    registered = true;
                }
                match self.park_until::<()>(st, deadline, &mut armed) {
                    Poll::Ready((_, y)) => {
                        if let Some(x) = st.procs.get_mut(&t).and_then(|tp| tp.x.as_mut()) {
                            x.start_waiters.retain(|w| *w != me);
                        }
                        Poll::Ready((Err(SysError::Timeout), y))
                    }
                    Poll::Pending => Poll::Pending,
                }
            })
        })
        .await;
        maybe_yield(y).await;
        r
    }

    async fn open(&self, device: CapRef) -> Result<CapRef, SysError> {
        let me = self.pid;
        let (driver, name, at) = self.shared.with(|st| {
            let now = st.now();
            let view = st
                .caps
                .lookup(device, now)
                .filter(|v| v.owner == me)
                .ok_or(SysError::Cap {
                    op: "open",
                    err: CapError::NotHeld,
                });
            // `require` gives the precise error (invalid, not held, lacks open).
            st.caps
                .require(me, device, Right::Open, now)
                .map_err(cap_err("open"))?;
            let view = view?;
            match view.resource {
                Resource::Device(name) => {
                    let name = name.clone();
                    let d = st
                        .drivers
                        .get(&name)
                        .cloned()
                        .ok_or_else(|| SysError::NoDriver(name.to_string()))?;
                    // The handle gets the device cap's read/write rights and nothing more.
                    let at = OpenCtx {
                        pid: me,
                        rights: Rights(view.rights.0 & Rights::READ_WRITE.0),
                        scope: view.scope.cloned().unwrap_or_default(),
                    };
                    Ok((d, name, at))
                }
                _ => Err(SysError::Cap {
                    op: "open",
                    err: CapError::WrongKind("device"),
                }),
            }
        })?;
        let (rights, scope) = (at.rights, at.scope.clone());
        // Replay answers from the journal and never touches a driver; recover opens it at the
        // first op that runs live.
        let handle = match self.shared.jmode {
            JournalMode::Replay if driver.replays_live() => IoHandle::Live(
                driver
                    .open(at)
                    .await
                    .map_err(|e| SysError::Driver(e.to_string()))?,
            ),
            JournalMode::Replay | JournalMode::Recover => IoHandle::Lazy(driver, Arc::new(at)),
            JournalMode::Live | JournalMode::Record => IoHandle::Open(
                driver
                    .open(at)
                    .await
                    .map_err(|e| SysError::Driver(e.to_string()))?,
            ),
        };
        let r = self.shared.with(|st| {
            if !st.procs.contains_key(&me) {
                if let IoHandle::Open(h) | IoHandle::Live(h) = handle {
                    st.deferred.push(crate::state::Deferred::Close(h));
                }
                return None;
            }
            let scope = (!scope.is_empty()).then(|| Arc::new(scope));
            let hcap = st
                .caps
                .mint_scoped(me, Resource::Device(name), rights, scope);
            if let Some(p) = st.procs.get_mut(&me) {
                p.ext().handles.push((hcap, handle));
            }
            Some((hcap, st.tick(me, 2)))
        });
        match r {
            None => self.dead().await,
            Some((c, y)) => {
                maybe_yield(y).await;
                Ok(c)
            }
        }
    }

    async fn read(&self, handle: CapRef, req: Value) -> Result<Value, SysError> {
        self.io_one(handle, req, false).await
    }

    async fn read_all(&self, handle: CapRef, reqs: Vec<Value>) -> Result<Vec<Value>, SysError> {
        let n = reqs.len();
        let io = self.begin_io(handle, "read_all", n as u64)?;
        let inflight = Inflight::new(&self.shared);
        let mut recovered = io.recovered;
        let mut out: Vec<Option<IoOutcome>> = (0..n).map(|_| None).collect();
        let mut live: Vec<(usize, Value)> = Vec::new();
        for (i, req) in reqs.into_iter().enumerate() {
            let answer = if io.live {
                Ok(None)
            } else {
                self.journaled(io.first_op + i as u64, &mut recovered)
            };
            match answer {
                Ok(Some(r)) => out[i] = Some(r),
                Err(e) => out[i] = Some(Err(e)),
                Ok(None) => live.push((i, req)),
            }
        }
        if !live.is_empty() {
            match self.live_handle(handle, &io.slot).await {
                Ok(h) => {
                    let futs = live.iter().map(|(_, r)| Some(h.read(r.clone()))).collect();
                    let results = JoinAll {
                        futs,
                        out: live.iter().map(|_| None).collect(),
                    }
                    .await;
                    for ((i, _), r) in live.iter().zip(results) {
                        let j = self.journal_live(io.first_op + *i as u64, &r);
                        let r = r.map_err(|e| SysError::Driver(e.to_string()));
                        out[*i] = Some(match j {
                            Ok(()) => r,
                            Err(e) => r.and(Err(e)),
                        });
                    }
                }
                Err(e) => {
                    for (i, _) in &live {
                        out[*i] = Some(Err(SysError::Driver(e.to_string())));
                    }
                }
            }
        }
        inflight.settled();
        let costs: Vec<Cost> = out
            .iter()
            .filter_map(|r| r.as_ref().and_then(|r| r.as_ref().ok()).map(|r| r.cost))
            .collect();
        match self.settle(&costs) {
            None => self.dead().await,
            Some(y) => {
                maybe_yield(y).await;
                out.into_iter()
                    .map(|r| {
                        r.unwrap_or_else(|| Err(SysError::Driver("lost result".into())))
                            .map(|r| r.value)
                    })
                    .collect()
            }
        }
    }

    async fn write(&self, handle: CapRef, data: Value) -> Result<Value, SysError> {
        self.io_one(handle, data, true).await
    }

    async fn monitor(&self, target: CapRef) -> Result<MonitorRef, SysError> {
        let me = self.pid;
        let t = self
            .shared
            .with(|st| resolve_target(st, me, target, Right::Monitor, "monitor"))?;
        let t = match t {
            Target::Local(t) => t,
            Target::Remote(node, pid) => return self.remote_monitor(node, pid).await,
        };
        let (r, y) = self.shared.with(|st| {
            let r = match st.procs.get(&t) {
                Some(_) => {
                    let r = st.mint_mref();
                    st.mrefs.insert(r, (me, t));
                    if let Some(tp) = st.procs.get_mut(&t) {
                        tp.ext().monitors.push((me, r));
                    }
                    r
                }
                None => {
                    // Already dead: the down arrives at once.
                    let r = st.mint_mref();
                    let reason = st.reaped_reason(t);
                    let mut m = Message::new(t, Body::Sys(SysMsg::Down { pid: t, reason }));
                    m.corr = Some(r.0);
                    st.deliver(me, m);
                    r
                }
            };
            (r, st.tick(me, 1))
        });
        maybe_yield(y).await;
        Ok(r)
    }

    fn demonitor(&self, mref: MonitorRef, flush: bool) -> bool {
        let me = self.pid;
        self.shared.with(|st| {
            let active = match st.mrefs.get(&mref).copied() {
                Some((w, t)) if w == me => {
                    st.mrefs.remove(&mref);
                    if let Some(x) = st.procs.get_mut(&t).and_then(|p| p.x.as_mut()) {
                        x.monitors.retain(|(_, r)| *r != mref);
                    }
                    true
                }
                _ => self.remote_demonitor(st, mref),
            };
            if flush {
                if let Some(p) = st.procs.get_mut(&me) {
                    let ours = |m: &Message| {
                        m.corr == Some(mref.0)
                            && matches!(
                                m.sys(),
                                Some(SysMsg::Down { .. } | SysMsg::RemoteDown { .. })
                            )
                    };
                    if let Some(i) = p.mailbox.iter().position(ours) {
                        if let Some(m) = p.mailbox.remove(i) {
                            st.deferred
                                .push(crate::state::Deferred::DropMailbox([m].into()));
                        }
                    }
                }
            }
            active
        })
    }

    async fn waitpid(&self, target: CapRef) -> Result<ExitReason, SysError> {
        let me = self.pid;
        let t = self
            .shared
            .with(|st| target_pid(st, me, target, Right::Monitor, "waitpid"))?;
        let mut registered = false;
        let (reason, y) = poll_fn(|_| {
            self.shared.with(|st| {
                let Some(p) = st.procs.get_mut(&me) else {
                    return Poll::Pending;
                };
                let found = p.x.as_mut().and_then(|x| {
                    let i = x.wait_results.iter().position(|(pid, _)| *pid == t)?;
                    Some(x.wait_results.swap_remove(i).1)
                });
                if let Some(r) = found {
                    return Poll::Ready((Ok(r), st.tick(me, 1)));
                }
                if !registered {
                    match st.procs.get_mut(&t) {
                        Some(tp) => {
                            tp.ext().exit_waiters.push(me);
                            registered = true;
                        }
                        None => {
                            let r = st.reaped_known(t).ok_or(SysError::Forgotten(t));
                            return Poll::Ready((r, st.tick(me, 1)));
                        }
                    }
                }
                Poll::Pending
            })
        })
        .await;
        maybe_yield(y).await;
        reason
    }

    async fn signal(&self, target: CapRef, reason: Option<ExitReason>) -> Result<(), SysError> {
        let reason = reason.unwrap_or(ExitReason::Killed { by: self.pid });
        self.simple(target, "signal", move |st, _me, t| {
            if st.procs.contains_key(&t) {
                st.emit(EventKind::Signal {
                    pid: t,
                    sig: Signal::Kill,
                });
                st.terminate(t, reason);
            }
        })
        .await?;
        // Killing yourself ends you here.
        if !self.shared.with(|st| st.procs.contains_key(&self.pid)) {
            return self.dead().await;
        }
        Ok(())
    }

    async fn suspend(&self, target: CapRef) -> Result<(), SysError> {
        self.simple(target, "suspend", |st, _me, t| {
            if let Some(p) = st.procs.get_mut(&t) {
                if !p.stopped {
                    p.stopped = true;
                    st.emit(EventKind::Signal {
                        pid: t,
                        sig: Signal::Stop,
                    });
                }
            }
        })
        .await
    }

    async fn resume(&self, target: CapRef) -> Result<(), SysError> {
        self.simple(target, "resume", |st, _me, t| {
            let Some(p) = st.procs.get_mut(&t) else {
                return;
            };
            if !p.stopped {
                return;
            }
            p.stopped = false;
            let runnable = p.status == crate::state::Status::Runnable;
            st.emit(EventKind::Signal {
                pid: t,
                sig: Signal::Cont,
            });
            if runnable {
                st.wake(t);
            }
        })
        .await
    }

    async fn term(&self, target: CapRef) -> Result<(), SysError> {
        self.simple(target, "term", |st, me, t| {
            if st.procs.contains_key(&t) {
                st.emit(EventKind::Signal {
                    pid: t,
                    sig: Signal::Term,
                });
                st.deliver(t, Message::new(me, Body::Sys(SysMsg::Term { from: me })));
            }
        })
        .await
    }

    async fn sleep(&self, ms: u64) {
        let me = self.pid;
        let until = self.shared.with(|st| st.clock.refresh().saturating_add(ms));
        let mut armed = false;
        let y = poll_fn(|_| {
            self.shared.with(|st| {
                if !st.procs.contains_key(&me) {
                    return Poll::Pending;
                }
                if st.clock.refresh() >= until {
                    return Poll::Ready(st.tick(me, 1));
                }
                if !armed {
                    st.arm_wake(me, until);
                    armed = true;
                }
                Poll::Pending
            })
        })
        .await;
        maybe_yield(y).await;
    }

    async fn yield_now(&self) {
        self.shared.with(|st| {
            if let Some(p) = st.procs.get_mut(&self.pid) {
                p.notified = true;
            }
        });
        YieldOnce(false).await
    }

    fn sched(&self, opts: SchedOpts) {
        self.shared.with(|st| {
            if let Some(p) = st.procs.get_mut(&self.pid) {
                if let Some(pr) = opts.priority {
                    p.priority = pr;
                }
            }
            if let Some(ms) = opts.deadline_ms {
                st.arm_deadline(self.pid, ms);
            }
        })
    }

    async fn charge(&self, meter: agentos_abi::Meter, n: u64) -> Result<(), SysError> {
        use agentos_abi::Meter;
        let mut cost = Cost::FREE;
        match meter {
            Meter::Tokens => cost.tokens = n,
            Meter::ToolCalls => cost.tool_calls = n,
            Meter::Usd => cost.usd_micros = n,
            Meter::Cpu => {
                // Cost::reductions is 32-bit; the account meter is not.
                return match self.shared.with(|st| {
                    if !st.procs.contains_key(&self.pid) {
                        return None;
                    }
                    let acct = st.procs.get(&self.pid).map(|p| p.account)?;
                    match st.accounts.charge_all(acct, &[(Meter::Cpu, n)]) {
                        Ok(()) => {
                            if n > 0 {
                                st.emit(EventKind::Charge {
                                    pid: self.pid,
                                    meter: Meter::Cpu,
                                    n,
                                });
                            }
                            Some(st.tick(self.pid, 1))
                        }
                        Err(m) => {
                            st.emit(EventKind::Fault {
                                pid: self.pid,
                                error: format!("quota exceeded: cpu (charge of {n} refused)"),
                            });
                            st.terminate(self.pid, ExitReason::Quota { resource: m });
                            None
                        }
                    }
                }) {
                    None => self.dead().await,
                    Some(y) => {
                        maybe_yield(y).await;
                        Ok(())
                    }
                };
            }
            other => {
                return Err(SysError::Unsupported(format!(
                    "charge: {} is not a cumulative meter",
                    other.name()
                )))
            }
        }
        match self.shared.with(|st| self.charge_tick(st, &[cost])) {
            None => self.dead().await,
            Some(y) => {
                maybe_yield(y).await;
                Ok(())
            }
        }
    }

    fn budget(&self) -> Budget {
        self.shared.with(|st| {
            let now = st.now();
            st.procs
                .get(&self.pid)
                .map(|p| st.accounts.remaining(p.account, now))
                .unwrap_or_default()
        })
    }

    fn usage(&self) -> Usage {
        self.shared.with(|st| {
            st.procs
                .get(&self.pid)
                .map(|p| st.accounts.usage(p.account))
                .unwrap_or_default()
        })
    }

    fn now(&self) -> u64 {
        self.shared.with(|st| st.clock.refresh())
    }

    fn log(&self, level: LogLevel, msg: &str) {
        let pid = self.pid.0;
        match level {
            LogLevel::Debug => tracing::debug!(pid, "{msg}"),
            LogLevel::Info => tracing::info!(pid, "{msg}"),
            LogLevel::Warn => tracing::warn!(pid, "{msg}"),
            LogLevel::Error => tracing::error!(pid, "{msg}"),
        }
        if self.shared.tapped.load(Ordering::Relaxed) {
            self.shared.with(|st| {
                if st.log.has_sinks() {
                    let line = crate::log::LogLine {
                        ts: st.now(),
                        pid: self.pid,
                        level,
                        line: Arc::from(msg),
                    };
                    st.log.log_line(line);
                }
            });
        }
    }

    fn on_cleanup(&self, f: Cleanup) {
        let rejected = self.shared.with(|st| match st.procs.get_mut(&self.pid) {
            Some(p) => {
                p.ext().cleanups.push(f);
                None
            }
            None => Some(f),
        });
        // Registered by a process already dead: run it now rather than lose it.
        if let Some(f) = rejected {
            f();
        }
    }

    fn dial(&self, node: &NodeId, pid: Pid) -> Result<CapRef, SysError> {
        self.do_dial(node, pid)
    }

    async fn spawn_remote(
        &self,
        node: &NodeId,
        name: &str,
        args: Value,
    ) -> Result<CapRef, SysError> {
        self.do_spawn_remote(node, name, args).await
    }

    async fn remember(&self, body: Value, opts: RememberOpts) -> Result<SegId, SysError> {
        self.do_remember(body, opts).await
    }

    fn working_set(&self) -> Vec<Segment> {
        self.do_working_set()
    }

    async fn recall(&self, query: &str, k: usize) -> Result<Vec<Segment>, SysError> {
        self.do_recall(query, k).await
    }

    fn forget(&self, id: SegId) -> bool {
        self.do_forget(id)
    }

    fn pin(&self, id: SegId, on: bool) -> bool {
        self.do_pin(id, on)
    }
}
