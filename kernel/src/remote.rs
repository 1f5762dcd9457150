//! Kernels as a cluster: routes to peers, authenticated ingress, remote send, spawn and
//! monitor (the seed's `connect`, `ingress`, `handleControl`, `hostRemote`, `registerImage`,
//! `sendDown`, `dial`, `spawnRemote`).
//!
//! A kernel configured with a [`NetConfig`] seals everything it sends to a peer (see
//! [`crate::seal`]) and hands the bytes to the peer's [`Egress`] (a transport from `net`, or
//! any sink). Whatever a transport receives goes to [`Kernel::ingress`], which drops forged,
//! tampered, stale, replayed, misaddressed and undeliverable envelopes, each with a fault event
//! and a counter in [`NetStats`]. Capabilities never cross: a process reaches a remote one
//! through a proxy cap (`Resource::Remote`), which is an address the peer is free to refuse.
//! Control envelopes (to pid 0) carry spawn requests and replies and monitor requests. As in
//! Erlang, when a peer is lost ([`Kernel::peer_down`]) every monitor of a process there and
//! every pending `spawn_remote` to it resolves with `noconnection`.
//!
//! The core is reached only through `seam` (its `Core` trait: clocks, liveness, delivery,
//! events, minting, timers, booting a requested process), and the core reaches this module's
//! state only through the `Cluster` trait it holds it by: `NetState` is this module's alone.
//!
//! **Invariant:** the kernel lock is never held while sealing user bodies or calling a
//! transport; egress produced under the lock (downs from a dying process) is deferred.

use crate::kernel::{BootOpts, Kernel, KernelError};
use crate::seal::{IngressError, NonceGuard, Opened, Sealer};
use crate::seam::{Cluster, Core, RemoteBoot, RemoteSend};
use crate::state::State;
use crate::syscalls::{maybe_yield, Sys};
use crate::KImage;
use agentos_abi::wire::{
    Addr, Egress, EgressError, GatewaySeal, GatewaySealError, WireBody, GATEWAY_BODY_TAG,
};
use agentos_abi::{
    Body, CapRef, EventKind, ExitReason, Message, MonitorRef, NodeId, Pid, Resource, Rights,
    SysError, SysMsg, Value,
};
use bytes::Bytes;
use rustc_hash::FxHashMap;
use serde::Serialize;
use std::fmt;
use std::future::poll_fn;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;

/// How a kernel joins a cluster.
#[derive(Clone)]
pub struct NetConfig {
    /// This node's id (what peers address).
    pub node: NodeId,
    /// The cluster's shared HMAC key.
    pub key: Arc<[u8]>,
    /// Envelopes whose timestamp is further than this from our wire clock are stale.
    pub fresh_window_ms: u64,
    /// How long `spawn_remote` waits for the peer's answer.
    pub spawn_timeout_ms: u64,
    /// How many sending (node, epoch) pairs the nonce guard tracks at most.
    pub nonce_senders: usize,
    /// This boot's nonce epoch (`None`: drawn from the clock and the process id; set it for
    /// reproducible runs).
    pub epoch: Option<u64>,
}

impl NetConfig {
    /// Node `node` with cluster key `key` and the default limits: ±5 min freshness, a 5 s
    /// spawn timeout, 4,096 tracked senders.
    pub fn new(node: impl Into<NodeId>, key: &[u8]) -> Self {
        NetConfig {
            node: node.into(),
            key: Arc::from(key),
            fresh_window_ms: 5 * 60 * 1000,
            spawn_timeout_ms: 5_000,
            nonce_senders: 4096,
            epoch: None,
        }
    }
}

impl fmt::Debug for NetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetConfig")
            .field("node", &self.node)
            .field("key", &"<redacted>")
            .field("fresh_window_ms", &self.fresh_window_ms)
            .field("spawn_timeout_ms", &self.spawn_timeout_ms)
            .finish_non_exhaustive()
    }
}

/// Counters of the network layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Envelopes accepted and acted on.
    pub accepted: u64,
    /// Dropped: not a well-formed envelope.
    pub malformed: u64,
    /// Dropped: MAC did not verify.
    pub forged: u64,
    /// Dropped: for another node.
    pub misaddressed: u64,
    /// Dropped: outside the freshness window.
    pub stale: u64,
    /// Dropped: nonce seen before.
    pub replayed: u64,
    /// Dropped: dead target, full mailbox, or a body that may not cross.
    pub undeliverable: u64,
    /// Envelopes a transport refused on the way out.
    pub egress_refused: u64,
    /// Peers lost (`peer_down`).
    pub peers_lost: u64,
}

pub(crate) struct PendingSpawn {
    waiter: Pid,
    node: NodeId,
    result: Option<Result<Pid, String>>,
}

/// The cluster state, under the kernel lock.
pub(crate) struct NetState {
    pub sealer: Arc<Sealer>,
    peers: FxHashMap<NodeId, Arc<dyn Egress>>,
    images: FxHashMap<Arc<str>, (KImage, BootOpts)>,
    /// Local target → (node, watcher) of remote monitors.
    remote_monitors: FxHashMap<Pid, Vec<(NodeId, Pid)>>,
    /// Peer → (local watcher, remote target): who gets a `noconnection` if the peer is lost.
    watches: FxHashMap<NodeId, Vec<(Pid, Pid, MonitorRef)>>,
    pending_spawns: FxHashMap<u64, PendingSpawn>,
    nonces: NonceGuard,
    pub stats: NetStats,
    next_corr: u64,
    fresh_ms: u64,
    spawn_timeout_ms: u64,
}

impl NetState {
    pub fn new(cfg: &NetConfig, sealer: Arc<Sealer>) -> Self {
        NetState {
            sealer,
            peers: FxHashMap::default(),
            images: FxHashMap::default(),
            remote_monitors: FxHashMap::default(),
            watches: FxHashMap::default(),
            pending_spawns: FxHashMap::default(),
            nonces: NonceGuard::new(cfg.fresh_window_ms, cfg.nonce_senders),
            stats: NetStats::default(),
            next_corr: 1,
            fresh_ms: cfg.fresh_window_ms,
            spawn_timeout_ms: cfg.spawn_timeout_ms,
        }
    }
}

/// The epoch for a boot without a configured one: distinct across restarts of a node.
pub(crate) fn fresh_epoch() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut z = t ^ (u64::from(std::process::id()) << 32) ^ 0x9E37_79B9_7F4A_7C15;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A user message sealed from a borrowed body: encodes exactly as `WireBody::Msg` (its first
/// variant), so a refused send can still hand the body back.
#[derive(Serialize)]
enum MsgRef<'a> {
    Msg {
        from: Pid,
        body: &'a Body,
        corr: Option<u64>,
    },
}

/// The cluster's state behind the seam, for the cluster's own code.
fn netst(slot: &mut Option<Box<dyn Cluster>>) -> Option<&mut NetState> {
    slot.as_deref_mut()?.as_any_mut().downcast_mut::<NetState>()
}

/// [`netst`], shared.
fn netst_ref(slot: &Option<Box<dyn Cluster>>) -> Option<&NetState> {
    slot.as_deref()?.as_any().downcast_ref::<NetState>()
}

impl Cluster for NetState {
    fn process_died(
        &mut self,
        pid: Pid,
        reason: &ExitReason,
        wire_now: u64,
    ) -> Vec<(Arc<dyn Egress>, Bytes)> {
        let Some(ws) = self.remote_monitors.remove(&pid) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (node, watcher) in ws {
            let Some(e) = self.peers.get(&node).cloned() else {
                continue;
            };
            let to = Addr { node, pid: watcher };
            let down = WireBody::Down {
                pid,
                reason: reason.clone(),
            };
            if let Ok(b) = self.sealer.seal(&to, wire_now, &down) {
                out.push((e, b));
            }
        }
        out
    }

    fn spawn_timed_out(&mut self, corr: u64, alive: &dyn Fn(Pid) -> bool) -> Option<Pid> {
        let ms = self.spawn_timeout_ms;
        let p = self.pending_spawns.get_mut(&corr)?;
        if !alive(p.waiter) {
            // The waiter died: nobody will collect the answer.
            self.pending_spawns.remove(&corr);
            return None;
        }
        if p.result.is_some() {
            return None;
        }
        p.result = Some(Err(format!(
            "no answer from node \"{}\" in {ms} ms",
            p.node
        )));
        Some(p.waiter)
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl State {
    /// The checks every verified envelope passes before anything acts on it (kernel ingress
    /// and the secure gateway alike): addressed to node `me`, fresh on the wire clock, nonce
    /// never seen. A failure is dropped with a counter and a fault event. Returns the wire
    /// clock it checked against.
    fn admit_envelope(&mut self, me: &str, o: &Opened<'_>) -> Result<u64, IngressError> {
        if o.to_node != me {
            return Err(self.drop_envelope(IngressError::Misaddressed(o.to_node.to_owned())));
        }
        let now = self.wire_now();
        let Some(net) = netst(&mut self.net) else {
            return Err(IngressError::NotConfigured);
        };
        if now.abs_diff(o.ts) > net.fresh_ms {
            return Err(self.drop_envelope(IngressError::Stale { ts: o.ts, now }));
        }
        if !net.nonces.admit_parts(o.from, o.epoch, o.seq, now) {
            return Err(self.drop_envelope(IngressError::Replayed));
        }
        Ok(now)
    }

    /// Record a dropped envelope: a counter and a fault event.
    fn drop_envelope(&mut self, e: IngressError) -> IngressError {
        if let Some(net) = netst(&mut self.net) {
            let s = &mut net.stats;
            match &e {
                IngressError::Malformed(_) => s.malformed += 1,
                IngressError::Forged => s.forged += 1,
                IngressError::Misaddressed(_) => s.misaddressed += 1,
                IngressError::Stale { .. } => s.stale += 1,
                IngressError::Replayed => s.replayed += 1,
                IngressError::Undeliverable(_) => s.undeliverable += 1,
                IngressError::NotConfigured => {}
            }
        }
        Core::emit(
            self,
            EventKind::Fault {
                pid: Pid::KERNEL,
                error: e.to_string(),
            },
        );
        e
    }

    /// Deliver to a local process from the wire: never blocks (a full mailbox drops).
    fn deliver_wire(&mut self, to: Pid, msg: Message) -> Result<(), IngressError> {
        match self.mailbox_full(to) {
            None => Err(IngressError::Undeliverable(format!("no process {to}"))),
            Some(true) => Err(IngressError::Undeliverable(format!(
                "mailbox of {to} is full"
            ))),
            Some(false) => {
                Core::deliver(self, to, msg);
                Ok(())
            }
        }
    }
}

/// A spawn request to host after the lock is released (starting an image is program code).
struct HostRequest {
    from: NodeId,
    reply: Pid,
    name: String,
    args: Value,
    corr: u64,
}

impl Kernel {
    /// This kernel's node id, if it has a network configuration.
    pub fn node(&self) -> Option<NodeId> {
        self.shared.sealer.as_ref().map(|s| s.node().clone())
    }

    /// Route envelopes for `node` to `egress` (replacing any earlier route).
    pub fn connect(&self, node: NodeId, egress: Arc<dyn Egress>) -> Result<(), KernelError> {
        self.shared.with(|st| match netst(&mut st.net) {
            Some(net) => {
                net.peers.insert(node, egress);
                Ok(())
            }
            None => Err(KernelError::Net("connect: no network configuration".into())),
        })
    }

    /// Drop the route to `node`, then resolve everything waiting on it as lost.
    pub fn disconnect(&self, node: &NodeId) {
        self.shared.with(|st| {
            if let Some(net) = netst(&mut st.net) {
                net.peers.remove(node);
            }
        });
        self.peer_down(node);
    }

    /// The connection to `node` is lost (a transport reports it): every monitor of a process
    /// there gets a `RemoteDown` with `NoConnection`, every pending `spawn_remote` to it fails
    /// with `noconnection`, and its monitors of our processes are forgotten. The route stays:
    /// a transport that reconnects carries traffic again.
    pub fn peer_down(&self, node: &NodeId) {
        self.shared.with(|st| {
            let Some(net) = netst(&mut st.net) else {
                return;
            };
            net.stats.peers_lost += 1;
            let watches = net.watches.remove(node).unwrap_or_default();
            let mut woken = Vec::new();
            for p in net.pending_spawns.values_mut() {
                if p.node == *node && p.result.is_none() {
                    p.result = Some(Err("noconnection".into()));
                    woken.push(p.waiter);
                }
            }
            for ws in net.remote_monitors.values_mut() {
                ws.retain(|(n, _)| n != node);
            }
            net.remote_monitors.retain(|_, ws| !ws.is_empty());
            Core::emit(
                st,
                EventKind::Fault {
                    pid: Pid::KERNEL,
                    error: format!("net: lost the connection to node \"{node}\""),
                },
            );
            for (watcher, target, r) in watches {
                let down = SysMsg::RemoteDown {
                    node: node.clone(),
                    pid: target,
                    reason: ExitReason::NoConnection,
                };
                if st.alive(watcher) {
                    let mut m = Message::new(Pid::KERNEL, Body::Sys(down));
                    m.corr = Some(r.0);
                    Core::deliver(st, watcher, m);
                }
            }
            for w in woken {
                Core::wake(st, w);
            }
        });
    }

    /// Publish `image` under `name` so peers may `spawn_remote` it. The spawned process gets
    /// `opts.quota` as its root account and the devices in `opts.grant` (`opts.args` is
    /// ignored: the requester supplies args).
    pub fn register_image(
        &self,
        name: &str,
        image: KImage,
        opts: BootOpts,
    ) -> Result<(), KernelError> {
        self.shared.with(|st| {
            for g in &opts.grant {
                if !st.drivers.contains_key(g.as_str()) {
                    return Err(KernelError::NoDriver(g.clone()));
                }
            }
            match netst(&mut st.net) {
                Some(net) => {
                    net.images.insert(Arc::from(name), (image, opts));
                    Ok(())
                }
                None => Err(KernelError::Net(
                    "register_image: no network configuration".into(),
                )),
            }
        })
    }

    /// Counters of the network layer (zero without a network configuration).
    pub fn net_stats(&self) -> NetStats {
        self.shared
            .with(|st| netst_ref(&st.net).map(|n| n.stats).unwrap_or_default())
    }

    /// Seal an envelope as this node would (for transports' tests and tools; processes send
    /// with `send`).
    pub fn seal(&self, to: &Addr, body: &WireBody) -> Result<Bytes, KernelError> {
        let sealer = self
            .shared
            .sealer
            .as_ref()
            .ok_or_else(|| KernelError::Net("seal: no network configuration".into()))?;
        let ts = self.shared.with(|st| st.wire_now());
        sealer
            .seal(to, ts, body)
            .map_err(|e| KernelError::Net(e.to_string()))
    }

    /// Authenticated ingress: one encoded envelope from a transport. Drops (with a fault event
    /// and a counter) anything forged, tampered, stale, replayed, misaddressed, malformed or
    /// undeliverable; never blocks and never panics.
    pub fn ingress(&self, bytes: &[u8]) -> Result<(), IngressError> {
        let Some(sealer) = self.shared.sealer.as_ref() else {
            return Err(IngressError::NotConfigured);
        };
        // Verify before decoding anything the sender chose; decode outside the lock.
        let opened = sealer.open(bytes).and_then(|o| {
            postcard::from_bytes::<WireBody>(o.body)
                .map(|b| (o, b))
                .map_err(|e| IngressError::Malformed(e.to_string()))
        });
        let mut egress: Vec<(Arc<dyn Egress>, Bytes)> = Vec::new();
        let mut host = None;
        let r = self.shared.with(|st| {
            let (o, body) = match opened {
                Ok(x) => x,
                Err(e) => return Err(st.drop_envelope(e)),
            };
            let now = st.admit_envelope(&sealer.node().0, &o)?;
            let to_pid = o.to_pid;
            let Some(net) = netst(&mut st.net) else {
                return Err(IngressError::NotConfigured);
            };
            let from = o.from;
            let r = match (to_pid == Pid::KERNEL, body) {
                (false, WireBody::Msg { body, corr, .. }) => match body {
                    Body::Sys(_) | Body::Local(_) => Err(IngressError::Undeliverable(
                        "a system message cannot cross the wire".into(),
                    )),
                    body => st.deliver_wire(
                        to_pid,
                        Message {
                            from: Pid::KERNEL,
                            body,
                            caps: Vec::new(),
                            corr,
                            deadline: None,
                        },
                    ),
                },
                (false, WireBody::Down { pid, reason }) => {
                    // A down nobody watches any more (demonitored) is dropped.
                    let watch = net.watches.get_mut(from).and_then(|ws| {
                        let i = ws.iter().position(|w| (w.0, w.1) == (to_pid, pid))?;
                        Some(ws.swap_remove(i).2)
                    });
                    match watch {
                        None => Ok(()),
                        Some(r) => {
                            let down = SysMsg::RemoteDown {
                                node: NodeId::from(from),
                                pid,
                                reason,
                            };
                            let mut m = Message::new(Pid::KERNEL, Body::Sys(down));
                            m.corr = Some(r.0);
                            st.deliver_wire(to_pid, m)
                        }
                    }
                }
                (
                    true,
                    WireBody::SpawnReq {
                        reply,
                        name,
                        args,
                        corr,
                    },
                ) => {
                    host = Some(HostRequest {
                        from: NodeId::from(from),
                        reply,
                        name,
                        args,
                        corr,
                    });
                    Ok(())
                }
                (true, WireBody::SpawnRep { corr, result }) => {
                    match net.pending_spawns.get_mut(&corr) {
                        Some(p) if &*p.node.0 == from && p.result.is_none() => {
                            p.result = Some(result);
                            let w = p.waiter;
                            Core::wake(st, w);
                            Ok(())
                        }
                        _ => Err(IngressError::Undeliverable(format!(
                            "no pending spawn {corr} from \"{from}\""
                        ))),
                    }
                }
                (true, WireBody::MonReq { watcher, target }) => {
                    let alive = st.alive(target);
                    let reason = st.exit_reason(target);
                    let Some(net) = netst(&mut st.net) else {
                        return Err(IngressError::NotConfigured);
                    };
                    if alive {
                        net.remote_monitors
                            .entry(target)
                            .or_default()
                            .push((NodeId::from(from), watcher));
                    } else if let Some(e) = net.peers.get(from).cloned() {
                        // Already dead: the down goes back at once.
                        let to = Addr {
                            node: NodeId::from(from),
                            pid: watcher,
                        };
                        let down = WireBody::Down {
                            pid: target,
                            reason,
                        };
                        if let Ok(b) = net.sealer.seal(&to, now, &down) {
                            egress.push((e, b));
                        }
                    }
                    Ok(())
                }
                (true, _) => Err(IngressError::Malformed(
                    "a data envelope addressed to the control channel".into(),
                )),
                (false, _) => Err(IngressError::Malformed(
                    "a control envelope addressed to a process".into(),
                )),
            };
            match r {
                Ok(()) => {
                    if let Some(net) = netst(&mut st.net) {
                        net.stats.accepted += 1;
                    }
                    Ok(())
                }
                Err(e) => Err(st.drop_envelope(e)),
            }
        });
        if let Some(h) = host {
            self.host_remote(h, &mut egress);
        }
        self.send_all(egress);
        r
    }

    fn send_all(&self, egress: Vec<(Arc<dyn Egress>, Bytes)>) {
        let mut refused = 0;
        for (e, b) in egress {
            if e.send(b).is_err() {
                refused += 1;
            }
        }
        if refused > 0 {
            self.shared.with(|st| {
                if let Some(net) = netst(&mut st.net) {
                    net.stats.egress_refused += refused;
                }
            });
        }
    }

    /// Spawn a peer-requested image (the seed's `hostRemote`) and queue the reply.
    fn host_remote(&self, h: HostRequest, egress: &mut Vec<(Arc<dyn Egress>, Bytes)>) {
        let shared = &self.shared;
        let entry = shared.with(|st| {
            let net = netst_ref(&st.net)?;
            let route = net.peers.get(&h.from).cloned();
            let image = net.images.get(h.name.as_str()).cloned();
            Some((route, image, net.sealer.clone(), st.wire_now()))
        });
        let Some((route, image, sealer, now)) = entry else {
            return;
        };
        let result = match image {
            None => Err(format!("no image registered as \"{}\"", h.name)),
            Some((image, opts)) => {
                let pid = Pid(shared.next_pid.fetch_add(1, Ordering::Relaxed));
                let fut = image.start(Sys::new(shared.clone(), pid), h.args.clone());
                let started = shared.with(|st| {
                    if st.shutting_down() {
                        return false;
                    }
                    let boot = RemoteBoot {
                        name: image.name().clone(),
                        fut,
                        args: h.args,
                        quota: opts.quota,
                        grant: opts.grant.clone(),
                        reply: (h.from.clone(), h.reply),
                    };
                    st.boot_remote(pid, boot);
                    true
                });
                if started {
                    self.start_threads();
                    Ok(pid)
                } else {
                    Err("the node is shutting down".into())
                }
            }
        };
        if let Some(e) = route {
            let to = Addr {
                node: h.from,
                pid: Pid::KERNEL,
            };
            let rep = WireBody::SpawnRep {
                corr: h.corr,
                result,
            };
            if let Ok(b) = sealer.seal(&to, now, &rep) {
                egress.push((e, b));
            }
        }
    }
}

/// The remote syscalls: send, monitor, dial and spawn on a peer.
impl Sys {
    /// Under the lock: everything a remote send needs, or why it cannot happen.
    pub(crate) fn prepare_remote_send(
        &self,
        st: &mut State,
        node: NodeId,
        pid: Pid,
        body: &Body,
        caps: &[CapRef],
        corr: Option<u64>,
    ) -> Result<RemoteSend, SysError> {
        if !caps.is_empty() {
            return Err(SysError::Unsupported(
                "capabilities cannot cross the wire".into(),
            ));
        }
        match body {
            Body::Sys(_) => {
                return Err(SysError::Unsupported(
                    "a system message cannot cross the wire".into(),
                ))
            }
            Body::Local(_) => {
                return Err(SysError::Unsupported(
                    "a typed local body cannot cross the wire (send a Value or Bytes)".into(),
                ))
            }
            _ => {}
        }
        let ts = st.wire_now();
        let Some(net) = netst_ref(&st.net) else {
            return Err(SysError::Unsupported(
                "this kernel has no network configuration".into(),
            ));
        };
        let egress = net
            .peers
            .get(&node)
            .cloned()
            .ok_or_else(|| SysError::NoRoute(node.to_string()))?;
        Ok(RemoteSend {
            egress,
            to: Addr { node, pid },
            ts,
            corr,
        })
    }

    /// Outside the lock: seal and hand to the transport; a refusal hands the body back.
    pub(crate) fn finish_remote_send(
        &self,
        rs: RemoteSend,
        body: Body,
    ) -> Result<(), (Body, SysError)> {
        let Some(sealer) = self.shared.sealer.as_ref() else {
            return Err((
                body,
                SysError::Unsupported("no network configuration".into()),
            ));
        };
        let msg = MsgRef::Msg {
            from: self.pid,
            body: &body,
            corr: rs.corr,
        };
        let bytes = match sealer.seal(&rs.to, rs.ts, &msg) {
            Ok(b) => b,
            Err(e) => return Err((body, SysError::Unsupported(e.to_string()))),
        };
        match rs.egress.send(bytes) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.shared.with(|st| {
                    if let Some(net) = netst(&mut st.net) {
                        net.stats.egress_refused += 1;
                    }
                });
                let why = match e {
                    EgressError::Full(_) => "its queue is full (backpressure: retry later)",
                    EgressError::Closed(_) => "the route is closed",
                };
                Err((
                    body,
                    SysError::Remote(format!("send to node \"{}\": {why}", rs.to.node)),
                ))
            }
        }
    }

    /// `monitor` of a remote process: ask the peer; if it cannot be asked, the down arrives
    /// at once with `NoConnection` (Erlang's semantics for an unreachable node).
    pub(crate) async fn remote_monitor(
        &self,
        node: NodeId,
        target: Pid,
    ) -> Result<MonitorRef, SysError> {
        let me = self.pid;
        let mref = self.shared.with(Core::mint_mref);
        let prepared = self.shared.with(|st| {
            let ts = st.wire_now();
            let y = Core::tick(st, me, 1);
            let net = netst(&mut st.net)?;
            net.watches
                .entry(node.clone())
                .or_default()
                .push((me, target, mref));
            Some((net.peers.get(&node).cloned(), net.sealer.clone(), ts, y))
        });
        let sent = match &prepared {
            Some((Some(e), sealer, ts, _)) => {
                let to = Addr {
                    node: node.clone(),
                    pid: Pid::KERNEL,
                };
                let req = WireBody::MonReq {
                    watcher: me,
                    target,
                };
                sealer
                    .seal(&to, *ts, &req)
                    .ok()
                    .is_some_and(|b| e.send(b).is_ok())
            }
            _ => false,
        };
        if !sent {
            self.shared.with(|st| {
                if let Some(ws) = netst(&mut st.net).and_then(|n| n.watches.get_mut(&node)) {
                    if let Some(i) = ws.iter().position(|w| w.2 == mref) {
                        ws.swap_remove(i);
                    }
                }
                let down = SysMsg::RemoteDown {
                    node: node.clone(),
                    pid: target,
                    reason: ExitReason::NoConnection,
                };
                let mut m = Message::new(Pid::KERNEL, Body::Sys(down));
                m.corr = Some(mref.0);
                Core::deliver(st, me, m);
            });
        }
        if let Some((_, _, _, y)) = prepared {
            maybe_yield(y).await;
        }
        Ok(mref)
    }

    /// Stop watching a remote process: its down, when the peer sends it, is dropped. (The peer
    /// is not told; its monitor fires once into nothing.) True if the watch was live.
    pub(crate) fn remote_demonitor(&self, st: &mut State, mref: MonitorRef) -> bool {
        let me = self.pid;
        let Some(net) = netst(&mut st.net) else {
            return false;
        };
        for ws in net.watches.values_mut() {
            if let Some(i) = ws.iter().position(|w| w.2 == mref && w.0 == me) {
                ws.swap_remove(i);
                return true;
            }
        }
        false
    }

    pub(crate) fn do_dial(&self, node: &NodeId, pid: Pid) -> Result<CapRef, SysError> {
        let me = self.pid;
        self.shared.with(|st| {
            if !st.alive(me) {
                return Err(SysError::NoSuchProcess);
            }
            Ok(st.mint(
                me,
                Resource::Remote {
                    node: node.clone(),
                    pid,
                },
                Rights::SEND_MONITOR,
            ))
        })
    }

    pub(crate) async fn do_spawn_remote(
        &self,
        node: &NodeId,
        name: &str,
        args: Value,
    ) -> Result<CapRef, SysError> {
        let me = self.pid;
        let Some(sealer) = self.shared.sealer.clone() else {
            return Err(SysError::Unsupported(
                "spawn_remote: this kernel has no network configuration".into(),
            ));
        };
        let (egress, corr, ts) = self.shared.with(|st| {
            let ts = st.wire_now();
            let now = Core::now(st);
            let net = netst(&mut st.net)
                .ok_or_else(|| SysError::Unsupported("no network configuration".into()))?;
            let egress = net
                .peers
                .get(node)
                .cloned()
                .ok_or_else(|| SysError::NoRoute(node.to_string()))?;
            let corr = net.next_corr;
            net.next_corr += 1;
            net.pending_spawns.insert(
                corr,
                PendingSpawn {
                    waiter: me,
                    node: node.clone(),
                    result: None,
                },
            );
            let at = now.saturating_add(net.spawn_timeout_ms);
            st.arm_spawn_timeout(at, corr);
            Ok::<_, SysError>((egress, corr, ts))
        })?;
        let req = WireBody::SpawnReq {
            reply: me,
            name: name.to_owned(),
            args,
            corr,
        };
        let to = Addr {
            node: node.clone(),
            pid: Pid::KERNEL,
        };
        let sent = match sealer.seal(&to, ts, &req) {
            Ok(b) => egress.send(b).map_err(|e| format!("egress refused: {e}")),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = sent {
            self.shared.with(|st| {
                if let Some(net) = netst(&mut st.net) {
                    net.pending_spawns.remove(&corr);
                }
            });
            return Err(SysError::Remote(format!(
                "spawn_remote \"{name}\" on \"{node}\": {e}"
            )));
        }
        let r: Result<(CapRef, bool), String> = poll_fn(|_| {
            self.shared.with(|st| {
                if !st.alive(me) {
                    return Poll::Pending;
                }
                let done = match netst(&mut st.net) {
                    Some(net) => match net.pending_spawns.get_mut(&corr).map(|p| p.result.take()) {
                        Some(Some(r)) => {
                            net.pending_spawns.remove(&corr);
                            r
                        }
                        Some(None) => return Poll::Pending,
                        None => Err("the pending spawn was lost".into()),
                    },
                    None => Err("network state gone".into()),
                };
                Poll::Ready(done.map(|pid| {
                    let cap = st.mint(
                        me,
                        Resource::Remote {
                            node: node.clone(),
                            pid,
                        },
                        Rights::SEND_MONITOR,
                    );
                    (cap, Core::tick(st, me, 5))
                }))
            })
        })
        .await;
        match r {
            Ok((cap, y)) => {
                maybe_yield(y).await;
                Ok(cap)
            }
            Err(e) => Err(SysError::Remote(format!(
                "spawn_remote \"{name}\" on \"{node}\": {e}"
            ))),
        }
    }
}

/// The kernel's sealer as a [`GatewaySeal`], for the secure gateway device. It holds the
/// kernel weakly (a device registered in the kernel must not keep it alive) and shares the
/// kernel's nonce guard, freshness window and drop counters with envelope ingress.
struct KernelGatewaySeal {
    shared: std::sync::Weak<crate::kernel::Shared>,
    sealer: Arc<Sealer>,
}

impl GatewaySeal for KernelGatewaySeal {
    fn node(&self) -> NodeId {
        self.sealer.node().clone()
    }

    fn seal(&self, to: &NodeId, body: &Value) -> Result<Bytes, GatewaySealError> {
        let shared = self
            .shared
            .upgrade()
            .ok_or_else(|| GatewaySealError::Encode("the kernel is gone".into()))?;
        let ts = shared.with(|st| st.wire_now());
        let to = Addr {
            node: to.clone(),
            pid: Pid::KERNEL,
        };
        self.sealer
            .seal(&to, ts, &(GATEWAY_BODY_TAG, body))
            .map_err(|e| GatewaySealError::Encode(e.to_string()))
    }

    fn open(&self, sealed: &[u8]) -> Result<(NodeId, Value), GatewaySealError> {
        let shared = self
            .shared
            .upgrade()
            .ok_or_else(|| GatewaySealError::Refused("the kernel is gone".into()))?;
        let refuse = |e: IngressError| GatewaySealError::Refused(e.to_string());
        // Verify the MAC before decoding anything the sender chose.
        let opened = self.sealer.open(sealed).and_then(|o| {
            match postcard::from_bytes::<(u8, Value)>(o.body) {
                Ok((GATEWAY_BODY_TAG, v)) => Ok((o, v)),
                Ok((tag, _)) => Err(IngressError::Malformed(format!(
                    "not a gateway payload (tag {tag:#04x})"
                ))),
                Err(e) => Err(IngressError::Malformed(e.to_string())),
            }
        });
        shared.with(|st| {
            let (o, body) = opened.map_err(|e| refuse(st.drop_envelope(e)))?;
            if o.to_pid != Pid::KERNEL {
                let e = IngressError::Misaddressed(o.to_node.to_owned());
                return Err(refuse(st.drop_envelope(e)));
            }
            st.admit_envelope(&self.sealer.node().0, &o)
                .map_err(refuse)?;
            Ok((NodeId::from(o.from), body))
        })
    }
}

impl Kernel {
    /// This kernel's transport key as a [`GatewaySeal`] for the secure gateway device
    /// (`agentos_drivers::gateway::GatewayDriver::sealed`): payloads it seals open only on a
    /// node with the same cluster key, and what it opens passed the same MAC, address,
    /// freshness and replay checks as envelope ingress (failures count in [`NetStats`]).
    pub fn gateway_seal(&self) -> Result<Arc<dyn GatewaySeal>, KernelError> {
        let sealer = self
            .shared
            .sealer
            .clone()
            .ok_or_else(|| KernelError::Net("gateway seal: no network configuration".into()))?;
        Ok(Arc::new(KernelGatewaySeal {
            shared: Arc::downgrade(&self.shared),
            sealer,
        }))
    }
}
