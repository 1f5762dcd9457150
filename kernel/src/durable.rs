//! The kernel's durability and memory surface for hosts: journal modes (record, replay,
//! recover), `inspect`, and snapshot/restore.
//!
//! Journal semantics (the seed's `journaled`, `replayFrom`, `recoverFrom`): every driver read or
//! write result is keyed by (pid, per-process op counter). Record appends each live result to the
//! store; replay answers every op from the recorded journal and never touches a driver (a
//! missing entry is a clear `SysError::Replay`); recover answers from the journal until a
//! process runs past what was recorded, then continues live and appends to the same store, so a
//! second crash is recoverable too. Replay relies on the same pids and op order, which
//! deterministic mode guarantees for the same program and inputs.

use crate::journal::{Journal, JournalMode, Store, StoreStats};
use crate::kernel::{arm_wall, Kernel, KernelConfig, KernelError};
use crate::memory::{relieve, Context};
use crate::snapshot::{SnapMessage, Snapshot, SnapshotError};
use crate::state::Pcb;
use crate::syscalls::Sys;
use agentos_abi::{EventKind, Pid, Quota, SegId, Segment, Value, ABI_VERSION};
use parking_lot::Mutex;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Options for [`Kernel::restore`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RestoreOpts {
    /// The restored process's parent (`None`: a root).
    pub parent: Option<Pid>,
    /// A new context-memory ceiling (e.g. smaller than the original's); the context re-pages
    /// under it. `None` keeps the snapshot's.
    pub mem: Option<u64>,
}

/// Drive a future to completion on this thread (restore's re-paging; the default pager never
/// pends, a custom one is woken from wherever it does its I/O).
pub(crate) fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::task::{Context as Cx, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Cx::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

impl Kernel {
    /// A kernel whose driver I/O goes through the journal in `mode`, backed by `store`.
    /// Replay and recover load the store first; record and recover append to it.
    pub fn with_journal(
        cfg: KernelConfig,
        mode: JournalMode,
        mut store: Box<dyn Store>,
    ) -> Result<Kernel, KernelError> {
        let journal = match mode {
            JournalMode::Replay | JournalMode::Recover => {
                let recs = store
                    .load()
                    .map_err(|e| KernelError::Journal(e.to_string()))?;
                Some(Arc::new(Journal::from_records(recs)))
            }
            JournalMode::Live | JournalMode::Record => None,
        };
        let keep = matches!(mode, JournalMode::Record | JournalMode::Recover);
        Ok(Kernel::build(cfg, mode, journal, keep.then_some(store)))
    }

    /// Record every driver result into `store` (the seed's record mode).
    pub fn record(cfg: KernelConfig, store: Box<dyn Store>) -> Kernel {
        Kernel::build(cfg, JournalMode::Record, None, Some(store))
    }

    /// Re-run a recorded program: every driver op answers from `store`, no driver is touched.
    pub fn replay_from(cfg: KernelConfig, store: Box<dyn Store>) -> Result<Kernel, KernelError> {
        Kernel::with_journal(cfg, JournalMode::Replay, store)
    }

    /// Crash recovery: replay the recorded prefix, then continue live, appending to `store`.
    pub fn recover_from(cfg: KernelConfig, store: Box<dyn Store>) -> Result<Kernel, KernelError> {
        Kernel::with_journal(cfg, JournalMode::Recover, store)
    }

    /// Make every journaled record durable now (write out and fsync).
    pub fn flush_journal(&self) -> Result<(), KernelError> {
        let evs = self.shared.with(|st| st.log.take_outbox());
        if !evs.is_empty() {
            crate::kernel::persist(&self.shared, evs);
        }
        match self.shared.store.lock().as_mut() {
            Some(s) => s.flush().map_err(|e| KernelError::Journal(e.to_string())),
            None => Ok(()),
        }
    }

    /// The journal store's counters, if this kernel writes one.
    pub fn journal_stats(&self) -> Option<StoreStats> {
        self.shared.store.lock().as_ref().map(|s| s.stats())
    }

    /// The resident context (working set) of a live process, coldest first; `None` if dead.
    pub fn inspect(&self, pid: Pid) -> Option<Vec<Segment>> {
        let ctx = self.shared.with(|st| {
            st.procs
                .get(&pid)
                .map(|p| p.x.as_ref().and_then(|x| x.ctx.clone()))
        })?;
        Some(ctx.map(|c| c.lock().working_set()).unwrap_or_default())
    }

    /// Snapshot a live process's durable state.
    pub fn snapshot(&self, pid: Pid) -> Result<Snapshot, SnapshotError> {
        let (mut snap, ctx) = self.shared.with(|st| {
            let now = st.now();
            let p = st
                .procs
                .get(&pid)
                .ok_or(SnapshotError::NoSuchProcess(pid))?;
            let mut mailbox = Vec::with_capacity(p.mailbox.len());
            for m in &p.mailbox {
                mailbox.push(SnapMessage::copy(m).ok_or(SnapshotError::LocalMessage(pid))?);
            }
            let x = p.x.as_ref();
            let snap = Snapshot {
                abi: ABI_VERSION,
                image: p.name.to_string(),
                args: x.map(|x| x.args.clone()).unwrap_or_default(),
                priority: p.priority,
                deadline_ms: p.deadline.map(|d| d.saturating_sub(now)),
                stopped: p.stopped,
                account: st.accounts.remaining(p.account, now),
                mailbox,
                context: Vec::new(),
            };
            Ok((snap, x.and_then(|x| x.ctx.clone())))
        })?;
        if let Some(c) = ctx {
            snap.context = c.lock().dump();
        }
        Ok(snap)
    }

    /// Restore a snapshot into this kernel as a fresh process running `image` (which must have
    /// the snapshot's image name). The context is rebuilt and re-paged under `opts.mem` if given;
    /// capabilities are not restored (authority is kernel-local): the restorer re-grants them.
    pub fn restore(
        &self,
        snap: Snapshot,
        image: crate::KImage,
        opts: RestoreOpts,
    ) -> Result<Pid, SnapshotError> {
        snap.check_abi()?;
        if **image.name() != *snap.image {
            return Err(SnapshotError::WrongImage {
                snapshot: snap.image,
                given: image.name().to_string(),
            });
        }
        let b = snap.account;
        let quota = Quota {
            tokens: b.tokens,
            tool_calls: b.tool_calls,
            usd_micros: b.usd_micros,
            children: b.children,
            wall_ms: b.wall_ms,
            mem: opts.mem.or(b.mem),
            max_mailbox: b.max_mailbox,
            cpu: b.cpu,
        };
        let shared = &self.shared;
        let ctx = if snap.context.is_empty() {
            None
        } else {
            let mut c = Context::new(quota.mem, (shared.memory.recaller)());
            for s in snap.context {
                let id = SegId(shared.next_seg.fetch_add(1, Ordering::Relaxed));
                c.insert(id, s.body, s.tokens, s.pinned, s.summary);
            }
            let c = Mutex::new(c);
            let next = || SegId(shared.next_seg.fetch_add(1, Ordering::Relaxed));
            block_on(relieve(&c, &*shared.memory.pager, &next))
                .map_err(|e| SnapshotError::Memory(e.to_string()))?;
            Some(Arc::new(c))
        };
        let pid = Pid(shared.next_pid.fetch_add(1, Ordering::Relaxed));
        let fut = image.start(Sys::new(shared.clone(), pid), snap.args.clone());
        let r = shared.with(|st| {
            if st.shutdown {
                return Err(SnapshotError::Shutdown);
            }
            let now = st.now();
            let acct = st.accounts.root(&quota, now);
            let mut pcb = Pcb::new(image.name().clone(), opts.parent, acct);
            pcb.fut = Some(fut);
            pcb.max_mailbox = quota.max_mailbox;
            pcb.priority = snap.priority;
            pcb.stopped = snap.stopped;
            pcb.mailbox = snap
                .mailbox
                .into_iter()
                .map(SnapMessage::into_message)
                .collect();
            if ctx.is_some() || snap.args != Value::Unit {
                let x = pcb.ext();
                x.ctx = ctx;
                x.args = snap.args;
            }
            st.procs.insert(pid, Box::new(pcb));
            if let Some(ms) = snap.deadline_ms {
                st.arm_deadline(pid, ms);
            }
            arm_wall(st, pid, acct);
            st.emit(EventKind::Spawn {
                pid,
                parent: opts.parent,
                name: image.name().clone(),
            });
            st.wake(pid);
            Ok(pid)
        });
        if r.is_ok() {
            self.start_threads();
        }
        r
    }
}
