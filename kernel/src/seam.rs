//! The cluster's one seam into the core.
//!
//! The core (`state`, `syscalls`, `kernel`) and the cluster (`remote`) meet here and nowhere
//! else, so a reader can change one without reading the other:
//!
//! - [`Cluster`] is what the core asks of the cluster. The core holds the cluster's state as
//!   `State::net: Option<Box<dyn Cluster>>` without knowing its type, and calls it when a local
//!   process dies (its remote monitors get downs) and when a `spawn_remote` timer fires.
//! - [`Core`] is what a remote send, a remote monitor and ingress need from the core — and all
//!   the cluster touches of it: the clocks, liveness, delivery, waking, events, reductions,
//!   minting the caps a remote interaction hands out, timers, deferred egress, and booting a
//!   process a peer asked for. `State` implements it here.
//! - [`Target`] is where a process capability points: here, or on a peer.
//!
//! **Invariant:** the cluster never reaches into the process table, the cap table or the
//! accounts except through [`Core`]; the core never names the cluster's types.

use crate::state::{Pcb, State};
use agentos_abi::wire::{Addr, Egress};
use agentos_abi::{
    Body, CapRef, EventKind, ExitReason, Message, MonitorRef, NodeId, Pid, ProcFuture, Quota,
    Resource, Right, Rights, SysMsg, Value,
};
use bytes::Bytes;
use std::any::Any;
use std::sync::Arc;

/// Where a process capability points.
pub(crate) enum Target {
    /// A process of this kernel.
    Local(Pid),
    /// A process on a peer node.
    Remote(NodeId, Pid),
}

/// A remote send the cluster prepared under the lock; the core hands it back to finish
/// (seal and hand to the transport) outside the lock.
pub(crate) struct RemoteSend {
    pub egress: Arc<dyn Egress>,
    pub to: Addr,
    pub ts: u64,
    pub corr: Option<u64>,
}

/// What the core asks of the cluster.
pub(crate) trait Cluster: Send {
    /// Local process `pid` died: seal a down for each of its remote monitors (stamped
    /// `wire_now`); the envelopes are sent after the kernel lock is released.
    fn process_died(
        &mut self,
        pid: Pid,
        reason: &ExitReason,
        wire_now: u64,
    ) -> Vec<(Arc<dyn Egress>, Bytes)>;
    /// The timer of `spawn_remote` request `corr` fired. Returns its waiter if the request
    /// is still pending (it is failed now, and the waiter must be woken); `alive` says which
    /// processes still live (a dead waiter's request is dropped).
    fn spawn_timed_out(&mut self, corr: u64, alive: &dyn Fn(Pid) -> bool) -> Option<Pid>;
    /// The cluster's own state, for the cluster's own code.
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// The same, shared.
    fn as_any(&self) -> &dyn Any;
}

/// A process a peer asked this node to start: what to boot it with.
pub(crate) struct RemoteBoot {
    /// Its image name.
    pub name: Arc<str>,
    /// Its main, already built (outside the lock: an image constructor is program code).
    pub fut: ProcFuture,
    /// Its args (kept for snapshots).
    pub args: Value,
    /// Its root account's quota.
    pub quota: Quota,
    /// Drivers whose device caps it is granted.
    pub grant: Vec<String>,
    /// The requester: the node and pid a `send` proxy in its boot grant points at.
    pub reply: (NodeId, Pid),
}

/// What the cluster needs from the core.
pub(crate) trait Core {
    /// The kernel clock in ms.
    fn now(&self) -> u64;
    /// The clock envelopes are stamped with: the virtual clock in deterministic mode, Unix
    /// time in ms otherwise (so nodes started at different times agree).
    fn wire_now(&self) -> u64;
    /// Whether local process `pid` is alive.
    fn alive(&self, pid: Pid) -> bool;
    /// Whether `pid`'s bounded mailbox is full (`None`: no such process).
    fn mailbox_full(&self, pid: Pid) -> Option<bool>;
    /// The exit reason of a dead local process (`Normal` once forgotten).
    fn exit_reason(&self, pid: Pid) -> ExitReason;
    /// Put a message in a live local process's mailbox and wake it.
    fn deliver(&mut self, to: Pid, msg: Message);
    /// Make a local process runnable.
    fn wake(&mut self, pid: Pid);
    /// Emit a kernel event.
    fn emit(&mut self, kind: EventKind);
    /// Charge `cost` reductions to `pid`; true when it must yield.
    fn tick(&mut self, pid: Pid, cost: u32) -> bool;
    /// Mint a capability (the proxies a remote interaction hands out).
    fn mint(&mut self, owner: Pid, resource: Resource, rights: Rights) -> CapRef;
    /// A fresh monitor reference.
    fn mint_mref(&mut self) -> MonitorRef;
    /// Arm the timer that fails `spawn_remote` request `corr` at `at`.
    fn arm_spawn_timeout(&mut self, at: u64, corr: u64);
    /// Whether the kernel is shutting down.
    fn shutting_down(&self) -> bool;
    /// Boot process `pid` as a peer asked: a root account, a spawn cap, the granted device
    /// caps and a `send` proxy to the requester in its boot grant; it is init's child.
    fn boot_remote(&mut self, pid: Pid, b: RemoteBoot);
}

impl Core for State {
    fn now(&self) -> u64 {
        self.clock.now()
    }
    fn wire_now(&self) -> u64 {
        if self.clock.is_virtual() {
            self.now()
        } else {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        }
    }
    fn alive(&self, pid: Pid) -> bool {
        self.procs.contains_key(&pid)
    }
    fn mailbox_full(&self, pid: Pid) -> Option<bool> {
        let p = self.procs.get(&pid)?;
        Some(p.max_mailbox.is_some_and(|l| p.mailbox.len() >= l as usize))
    }
    fn exit_reason(&self, pid: Pid) -> ExitReason {
        self.reaped_reason(pid)
    }
    fn deliver(&mut self, to: Pid, msg: Message) {
        State::deliver(self, to, msg)
    }
    fn wake(&mut self, pid: Pid) {
        State::wake(self, pid)
    }
    fn emit(&mut self, kind: EventKind) {
        State::emit(self, kind)
    }
    fn tick(&mut self, pid: Pid, cost: u32) -> bool {
        State::tick(self, pid, cost)
    }
    fn mint(&mut self, owner: Pid, resource: Resource, rights: Rights) -> CapRef {
        self.caps.mint(owner, resource, rights)
    }
    fn mint_mref(&mut self) -> MonitorRef {
        State::mint_mref(self)
    }
    fn arm_spawn_timeout(&mut self, at: u64, corr: u64) {
        self.timers
            .arm(at, crate::clock::TimerKind::SpawnTimeout(corr));
        if self.idle_threads > 0 {
            self.notify = true;
        }
    }
    fn shutting_down(&self) -> bool {
        self.shutdown
    }
    fn boot_remote(&mut self, pid: Pid, b: RemoteBoot) {
        let now = self.now();
        let acct = self.accounts.root(&b.quota, now);
        let mut pcb = Pcb::new(b.name.clone(), self.init, acct);
        pcb.fut = Some(b.fut);
        pcb.max_mailbox = b.quota.max_mailbox;
        if b.args != Value::Unit {
            pcb.ext().args = b.args;
        }
        self.procs.insert(pid, Box::new(pcb));
        let spawn = self.caps.mint(pid, Resource::Spawn, Right::Spawn.into());
        let mut devices = Vec::new();
        for g in &b.grant {
            let name: Arc<str> = Arc::from(g.as_str());
            let c = self.caps.mint(
                pid,
                Resource::Device(name.clone()),
                crate::kernel::device_rights(),
            );
            devices.push((name, c));
        }
        let (node, rpid) = b.reply;
        let reply = self.caps.mint(
            pid,
            Resource::Remote { node, pid: rpid },
            Right::Send.into(),
        );
        if let Some(p) = self.procs.get_mut(&pid) {
            p.spawn_hint = Some(spawn);
            p.mailbox.push_back(Message::new(
                pid,
                Body::Sys(SysMsg::Boot {
                    spawn,
                    devices,
                    reply: Some(reply),
                }),
            ));
        }
        let parent = self.init;
        self.emit(EventKind::Spawn {
            pid,
            parent,
            name: b.name,
        });
        crate::kernel::arm_wall(self, pid, acct);
        State::wake(self, pid);
    }
}
