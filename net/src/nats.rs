//! The NATS transport: a small client of the NATS text protocol over tokio TCP.
//!
//! Each node subscribes to its own subject `<prefix>.<node>` and publishes a payload for node
//! `to` on `<prefix>.<to>` with its own subject as the reply subject, which is how the
//! receiver learns `from` (a claim, like everything else here, that the kernel's seal
//! confirms). Payloads are carried as they are. Any node with a valid subject name is
//! reachable: peers need not be configured; [`NatsTransport::add_peer`] only asks for
//! `Up`/`Down` reports about a node.
//!
//! One connection to the server carries everything, with one bounded pending queue (not one
//! per peer) drained in batches: all queued `PUB`s up to the batch size go out in one write.
//! The connection is redialed with backoff and jitter when lost; the subscription is
//! renewed each time. NATS core delivery is at most once: a payload published while its
//! destination is not subscribed is lost.
//!
//! Limits: no TLS, no authentication, no server pool (one `server` address); the server's
//! `max_payload` bounds a payload. NATS has no notion of a peer connection, so `Up`/`Down`
//! follow this node's server connection: a peer that dies while the server stays up is not
//! reported (the kernel's own liveness checks must cover that).

mod proto;

use crate::backoff::Backoff;
use crate::runtime::{reached, Phase, RuntimeHost};
use crate::stats::{bump, Counters, TransportStats};
use crate::transport::{Ingress, NetError, PeerEvent, PeerEvents, SendError, Transport};
use agentos_abi::NodeId;
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use proto::{check_subject, encode_pub, parse_op, ServerOp};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// The longest control line accepted from the server (an `INFO` can list many URLs).
const MAX_CONTROL_LINE: usize = 64 * 1024;
/// Bytes the read buffer grows by.
const READ_CHUNK: usize = 64 * 1024;
/// Sender ids remembered to avoid an allocation per received message.
const SENDER_CACHE: usize = 4096;
/// The largest message accepted from the server whatever its `INFO` says (the NATS server
/// itself refuses a `max_payload` above 64 MiB).
const MAX_INBOUND: usize = 64 << 20;

/// Configuration of a [`NatsTransport`].
#[derive(Clone, Debug)]
pub struct NatsConfig {
    /// This node's id; it subscribes to `<subject_prefix>.<node>`.
    pub node: NodeId,
    /// The server, as `host:port` (default `127.0.0.1:4222`).
    pub server: String,
    /// The subject prefix shared by the cluster (default `agentos.node`).
    pub subject_prefix: String,
    /// Payloads that may wait (for all destinations together) before `send` returns `Full`
    /// (default 65,536).
    pub pending_cap: usize,
    /// Payload bytes gathered into one write (default 1 MiB).
    pub max_batch_bytes: usize,
    /// The largest payload sent (default 1 MiB, the server default); lowered to the server's
    /// `max_payload` when it announces a smaller one. Larger payloads are refused `TooLarge`.
    pub max_payload: usize,
    /// First reconnect delay (default 50 ms).
    pub backoff_base: Duration,
    /// Largest reconnect delay (default 5 s).
    pub backoff_max: Duration,
    /// Seed for the reconnect jitter (mixed with the node id).
    pub jitter_seed: u64,
    /// Bound on one connection attempt (default 2 s).
    pub connect_timeout: Duration,
    /// Bound on the protocol handshake (INFO, CONNECT, SUB, PING/PONG; default 5 s).
    pub handshake_timeout: Duration,
    /// Bound on the flush in a graceful [`Transport::close`] (default 5 s).
    pub close_timeout: Duration,
    /// Worker threads of the transport's own runtime (default 1).
    pub worker_threads: usize,
    /// Run on this (multi-thread, IO and time enabled) runtime instead of an own one.
    pub runtime: Option<tokio::runtime::Handle>,
}

impl NatsConfig {
    /// The defaults for `node` using the server at `server` (`host:port`).
    pub fn new(node: NodeId, server: impl Into<String>) -> Self {
        NatsConfig {
            node,
            server: server.into(),
            subject_prefix: "agentos.node".into(),
            pending_cap: 65_536,
            max_batch_bytes: 1 << 20,
            max_payload: 1 << 20,
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            jitter_seed: 0x5eed,
            connect_timeout: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(5),
            close_timeout: Duration::from_secs(5),
            worker_threads: 1,
            runtime: None,
        }
    }
}

/// A node transport over a NATS server. See the module docs.
pub struct NatsTransport {
    shared: Arc<Shared>,
    host: RuntimeHost,
    link: Mutex<Option<JoinHandle<()>>>,
    closed: AtomicBool,
}

struct Shared {
    cfg: NatsConfig,
    /// `<prefix>.<node>`: subscribed to, and the reply subject of every publish.
    own_subject: String,
    ingress: Ingress,
    events: PeerEvents,
    counters: Counters,
    queue: Mutex<VecDeque<(NodeId, Bytes)>>,
    /// Signalled when the queue goes from empty to non-empty.
    wake: Notify,
    /// The payload bound for sends (config, lowered by the server's INFO).
    max_payload: AtomicUsize,
    /// The payload bound for receives (the larger of config and the server's INFO).
    max_inbound: AtomicUsize,
    watch: Mutex<Watch>,
    /// True while subscribed on a live server connection.
    ready: watch::Sender<bool>,
    phase: watch::Sender<Phase>,
    accepting: AtomicBool,
}

/// Nodes whose reachability is reported, and whether the server link is up.
struct Watch {
    connected: bool,
    peers: Vec<NodeId>,
}

impl NatsTransport {
    /// Start a transport for `cfg.node`: connect to the server (in the background, redialing
    /// until it answers) and subscribe. Use [`NatsTransport::wait_ready`] before relying on
    /// delivery to this node.
    pub fn connect(
        cfg: NatsConfig,
        ingress: Ingress,
        events: PeerEvents,
    ) -> Result<Self, NetError> {
        let invalid = |name: &str, why| NetError::InvalidName {
            name: name.to_owned(),
            why,
        };
        check_subject(&cfg.subject_prefix).map_err(|why| invalid(&cfg.subject_prefix, why))?;
        check_subject(&cfg.node.0).map_err(|why| invalid(&cfg.node.0, why))?;
        let host = RuntimeHost::new(cfg.runtime.clone(), cfg.worker_threads, "agentos-net-nats")?;
        let (phase, _) = watch::channel(Phase::Running);
        let (ready, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            own_subject: format!("{}.{}", cfg.subject_prefix, cfg.node),
            max_payload: AtomicUsize::new(cfg.max_payload),
            max_inbound: AtomicUsize::new(cfg.max_payload.min(MAX_INBOUND)),
            cfg,
            ingress,
            events,
            counters: Counters::default(),
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            watch: Mutex::new(Watch {
                connected: false,
                peers: Vec::new(),
            }),
            ready,
            phase,
            accepting: AtomicBool::new(true),
        });
        let link = host.handle().spawn(run_link(shared.clone()));
        Ok(NatsTransport {
            shared,
            host,
            link: Mutex::new(Some(link)),
            closed: AtomicBool::new(false),
        })
    }

    /// Block until the transport is subscribed on a live server connection, or `timeout`.
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), NetError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(NetError::Closed);
        }
        let mut rx = self.shared.ready.subscribe();
        let waited = self.host.block_on(async move {
            tokio::time::timeout(timeout, async move { rx.wait_for(|r| *r).await.is_ok() }).await
        });
        match waited {
            Ok(true) => Ok(()),
            Ok(false) => Err(NetError::Closed),
            Err(_) => Err(NetError::Timeout),
        }
    }

    /// Whether the transport is subscribed on a live server connection.
    pub fn is_connected(&self) -> bool {
        *self.shared.ready.borrow()
    }

    /// The subject this node receives on.
    pub fn subject(&self) -> &str {
        &self.shared.own_subject
    }

    /// Report `Up`/`Down` for `node` as the server link comes and goes (`Up` at once if it
    /// is up now). Sending to a node does not require this.
    pub fn add_peer(&self, node: NodeId) -> Result<(), NetError> {
        check_subject(&node.0).map_err(|why| NetError::InvalidName {
            name: node.0.to_string(),
            why,
        })?;
        if !self.shared.accepting.load(Ordering::Acquire) {
            return Err(NetError::Closed);
        }
        let mut w = self.shared.watch.lock();
        if w.peers.contains(&node) {
            return Ok(());
        }
        w.peers.push(node.clone());
        if w.connected {
            (self.shared.events)(PeerEvent::Up(node));
        }
        Ok(())
    }

    fn stop(&self) {
        self.shared.accepting.store(false, Ordering::Release);
        self.shared.phase.send_replace(Phase::Stopped);
        if let Some(link) = self.link.lock().take() {
            link.abort();
        }
        self.host.shutdown();
    }
}

impl Transport for NatsTransport {
    fn node(&self) -> &NodeId {
        &self.shared.cfg.node
    }

    fn send(&self, to: &NodeId, payload: Bytes) -> Result<(), SendError> {
        let shared = &*self.shared;
        if !shared.accepting.load(Ordering::Acquire) {
            return Err(SendError::Closed(payload));
        }
        if check_subject(&to.0).is_err() {
            return Err(SendError::UnknownPeer(payload));
        }
        if payload.len() > shared.max_payload.load(Ordering::Relaxed) {
            return Err(SendError::TooLarge(payload));
        }
        let mut queue = shared.queue.lock();
        if queue.len() >= shared.cfg.pending_cap {
            drop(queue);
            bump(&shared.counters.rejected_full, 1);
            return Err(SendError::Full(payload));
        }
        let was_empty = queue.is_empty();
        queue.push_back((to.clone(), payload));
        drop(queue);
        if was_empty {
            shared.wake.notify_one();
        }
        Ok(())
    }

    fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.shared.accepting.store(false, Ordering::Release);
        self.shared.phase.send_replace(Phase::Draining);
        let link = self.link.lock().take();
        let bound = self.shared.cfg.close_timeout;
        if let Some(link) = link {
            self.host.block_on(async move {
                let _ = tokio::time::timeout(bound, link).await;
            });
        }
        self.stop();
    }

    fn stats(&self) -> TransportStats {
        self.shared.counters.snapshot()
    }
}

impl Drop for NatsTransport {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------

/// The parts of the server's `INFO` this client uses.
#[derive(Deserialize)]
struct ServerInfo {
    #[serde(default)]
    max_payload: Option<u64>,
    #[serde(default)]
    auth_required: bool,
    #[serde(default)]
    tls_required: bool,
}

/// The client's `CONNECT` options.
#[derive(Serialize)]
struct ConnectOptions<'a> {
    verbose: bool,
    pedantic: bool,
    tls_required: bool,
    name: &'a str,
    lang: &'a str,
    version: &'a str,
    protocol: u8,
    echo: bool,
    headers: bool,
}

/// How a session ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LinkEnd {
    Lost,
    Drained,
    Stopped,
}

/// Why a dial failed.
enum DialError {
    Connect,
    Handshake,
    Protocol,
}

/// A connection that completed the handshake.
struct Session {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    buf: BytesMut,
}

fn set_link(shared: &Shared, up: bool) {
    let mut w = shared.watch.lock();
    if w.connected == up {
        return;
    }
    w.connected = up;
    for peer in &w.peers {
        let ev = if up {
            PeerEvent::Up(peer.clone())
        } else {
            PeerEvent::Down(peer.clone())
        };
        (shared.events)(ev);
    }
}

async fn run_link(shared: Arc<Shared>) {
    let cfg = &shared.cfg;
    let c = &shared.counters;
    let mut phase = shared.phase.subscribe();
    let mut backoff = Backoff::for_peer(
        cfg.backoff_base,
        cfg.backoff_max,
        cfg.jitter_seed,
        &cfg.node,
    );
    let mut senders = SenderCache::default();
    let mut batch = PubBatch::default();
    let mut ever_up = false;
    while *phase.borrow() == Phase::Running {
        let dialed = tokio::select! {
            r = dial(&shared, &mut senders) => r,
            _ = reached(&mut phase, Phase::Draining) => break,
        };
        match dialed {
            Ok(session) => {
                bump(&c.connects, 1);
                if ever_up {
                    bump(&c.reconnects, 1);
                }
                ever_up = true;
                backoff.reset();
                // Link state first, so that after `wait_ready` an `add_peer` reports Up at once.
                set_link(&shared, true);
                shared.ready.send_replace(true);
                let end = run_session(&shared, session, &mut phase, &mut senders, &mut batch).await;
                shared.ready.send_replace(false);
                set_link(&shared, false);
                if end != LinkEnd::Lost {
                    break;
                }
            }
            Err(DialError::Connect) => bump(&c.connect_failures, 1),
            Err(DialError::Handshake) => {
                bump(&c.connect_failures, 1);
                bump(&c.handshake_failures, 1);
            }
            Err(DialError::Protocol) => {
                bump(&c.connect_failures, 1);
                bump(&c.malformed_closes, 1);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = reached(&mut phase, Phase::Draining) => break,
        }
    }
    let left = shared.queue.lock().drain(..).count();
    bump(&c.dropped, left as u64);
}

/// Read the next server operation, pulling input as needed.
async fn read_op(
    shared: &Shared,
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
) -> Result<ServerOp, DialError> {
    loop {
        let limit = shared.max_inbound.load(Ordering::Relaxed);
        match parse_op(buf, MAX_CONTROL_LINE, limit) {
            Ok(Some(op)) => return Ok(op),
            Ok(None) => {}
            Err(_) => return Err(DialError::Protocol),
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        match rd.read_buf(buf).await {
            Ok(0) | Err(_) => return Err(DialError::Connect),
            Ok(_) => {}
        }
    }
}

fn apply_info(shared: &Shared, json: &[u8]) -> Result<(), DialError> {
    let info: ServerInfo = serde_json::from_slice(json).map_err(|_| DialError::Protocol)?;
    if info.auth_required || info.tls_required {
        return Err(DialError::Handshake);
    }
    if let Some(max) = info.max_payload {
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        shared
            .max_payload
            .store(shared.cfg.max_payload.min(max), Ordering::Relaxed);
        shared.max_inbound.store(
            shared.cfg.max_payload.max(max).min(MAX_INBOUND),
            Ordering::Relaxed,
        );
    }
    Ok(())
}

/// Connect, read INFO, send CONNECT + SUB + PING and wait for the PONG that proves the
/// subscription is registered. Messages that arrive before the PONG are delivered.
async fn dial(shared: &Shared, senders: &mut SenderCache) -> Result<Session, DialError> {
    let cfg = &shared.cfg;
    let stream =
        match tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(&cfg.server)).await {
            Ok(Ok(s)) => s,
            _ => return Err(DialError::Connect),
        };
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let handshake = async {
        match read_op(shared, &mut rd, &mut buf).await? {
            ServerOp::Info(json) => apply_info(shared, &json)?,
            _ => return Err(DialError::Protocol),
        }
        let name = format!("agentos-{}", cfg.node);
        let opts = ConnectOptions {
            verbose: false,
            pedantic: false,
            tls_required: false,
            name: &name,
            lang: "rust",
            version: env!("CARGO_PKG_VERSION"),
            protocol: 1,
            echo: true,
            headers: false,
        };
        let opts = serde_json::to_string(&opts).map_err(|_| DialError::Handshake)?;
        let hello = format!("CONNECT {opts}\r\nSUB {} 1\r\nPING\r\n", shared.own_subject);
        wr.write_all(hello.as_bytes())
            .await
            .map_err(|_| DialError::Connect)?;
        loop {
            match read_op(shared, &mut rd, &mut buf).await? {
                ServerOp::Pong => return Ok(()),
                ServerOp::Ping => wr
                    .write_all(b"PONG\r\n")
                    .await
                    .map_err(|_| DialError::Connect)?,
                ServerOp::Info(json) => apply_info(shared, &json)?,
                ServerOp::Msg { reply, payload } => deliver(shared, senders, reply, payload),
                ServerOp::Ok => {}
                ServerOp::Err(_) => return Err(DialError::Handshake),
            }
        }
    };
    match tokio::time::timeout(cfg.handshake_timeout, handshake).await {
        Ok(Ok(())) => Ok(Session { rd, wr, buf }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(DialError::Handshake),
    }
}

/// Remembers the `NodeId` of recent senders so a message costs no allocation for its `from`.
#[derive(Default)]
struct SenderCache {
    ids: HashMap<Box<[u8]>, NodeId>,
}

impl SenderCache {
    /// The sender named by a reply subject `<prefix>.<node>`, if it is one.
    fn sender(&mut self, prefix: &str, reply: &[u8]) -> Option<NodeId> {
        let name = reply.strip_prefix(prefix.as_bytes())?.strip_prefix(b".")?;
        if let Some(id) = self.ids.get(name) {
            return Some(id.clone());
        }
        let name_str = std::str::from_utf8(name).ok()?;
        check_subject(name_str).ok()?;
        if self.ids.len() >= SENDER_CACHE {
            self.ids.clear();
        }
        let id = NodeId::from(name_str);
        self.ids.insert(name.into(), id.clone());
        Some(id)
    }
}

/// Hand a received message to ingress, or count it as discarded if it has no sender.
fn deliver(shared: &Shared, senders: &mut SenderCache, reply: Option<Bytes>, payload: Bytes) {
    let from = reply.and_then(|r| senders.sender(&shared.cfg.subject_prefix, &r));
    match from {
        Some(from) => {
            bump(&shared.counters.frames_in, 1);
            bump(&shared.counters.bytes_in, payload.len() as u64);
            (shared.ingress)(from, payload);
        }
        None => bump(&shared.counters.discarded_in, 1),
    }
}

/// Signals between the reader and the writer of one session.
#[derive(Default)]
struct SessionSignals {
    /// The server sent `PING`: the writer owes a `PONG`.
    pong_due: AtomicBool,
    /// Wakes the writer for a `PONG`.
    writer: Notify,
    /// The server answered one of our `PING`s.
    pong: Notify,
}

async fn run_session(
    shared: &Shared,
    session: Session,
    phase: &mut watch::Receiver<Phase>,
    senders: &mut SenderCache,
    batch: &mut PubBatch,
) -> LinkEnd {
    let Session {
        mut rd,
        mut wr,
        mut buf,
    } = session;
    let signals = SessionSignals::default();
    tokio::select! {
        end = read_session(shared, &mut rd, &mut buf, senders, &signals) => end,
        end = write_session(shared, &mut wr, phase, batch, &signals) => end,
    }
}

async fn read_session(
    shared: &Shared,
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    senders: &mut SenderCache,
    signals: &SessionSignals,
) -> LinkEnd {
    loop {
        match read_op(shared, rd, buf).await {
            Ok(ServerOp::Msg { reply, payload }) => deliver(shared, senders, reply, payload),
            Ok(ServerOp::Ping) => {
                signals.pong_due.store(true, Ordering::Release);
                signals.writer.notify_one();
            }
            Ok(ServerOp::Pong) => signals.pong.notify_one(),
            Ok(ServerOp::Info(json)) => {
                if apply_info(shared, &json).is_err() {
                    bump(&shared.counters.malformed_closes, 1);
                    return LinkEnd::Lost;
                }
            }
            // A fatal server error is followed by the server closing the connection.
            Ok(ServerOp::Ok | ServerOp::Err(_)) => {}
            Err(DialError::Protocol) => {
                bump(&shared.counters.malformed_closes, 1);
                return LinkEnd::Lost;
            }
            Err(_) => return LinkEnd::Lost,
        }
    }
}

/// The reusable buffers of the writer.
#[derive(Default)]
struct PubBatch {
    items: Vec<(NodeId, Bytes)>,
    buf: Vec<u8>,
    frames: u64,
    payload_bytes: u64,
}

impl PubBatch {
    fn fill(&mut self, shared: &Shared) -> u64 {
        let max_bytes = shared.cfg.max_batch_bytes;
        {
            let mut queue = shared.queue.lock();
            let mut size = 0usize;
            while size < max_bytes {
                let Some(item) = queue.pop_front() else { break };
                size += item.1.len() + 64;
                self.items.push(item);
            }
        }
        let prefix = &shared.cfg.subject_prefix;
        for (to, payload) in self.items.drain(..) {
            encode_pub(prefix, &to.0, &shared.own_subject, &payload, &mut self.buf);
            self.frames += 1;
            self.payload_bytes += payload.len() as u64;
        }
        self.frames
    }

    fn clear(&mut self, max_bytes: usize) {
        self.frames = 0;
        self.payload_bytes = 0;
        self.buf.clear();
        if self.buf.capacity() > 4 * max_bytes.max(64 * 1024) {
            self.buf = Vec::new();
        }
    }
}

async fn write_session(
    shared: &Shared,
    wr: &mut OwnedWriteHalf,
    phase: &mut watch::Receiver<Phase>,
    batch: &mut PubBatch,
    signals: &SessionSignals,
) -> LinkEnd {
    let c = &shared.counters;
    loop {
        let now = *phase.borrow();
        if now == Phase::Stopped {
            return LinkEnd::Stopped;
        }
        if signals.pong_due.swap(false, Ordering::AcqRel) {
            batch.buf.extend_from_slice(b"PONG\r\n");
        }
        let n = batch.fill(shared);
        if !batch.buf.is_empty() {
            let written = tokio::select! {
                r = wr.write_all(&batch.buf) => r.is_ok(),
                _ = reached(phase, Phase::Stopped) => false,
            };
            if written {
                bump(&c.frames_out, n);
                bump(&c.bytes_out, batch.payload_bytes);
            } else {
                bump(&c.dropped, n);
            }
            batch.clear(shared.cfg.max_batch_bytes);
            if !written {
                return if *phase.borrow() == Phase::Stopped {
                    LinkEnd::Stopped
                } else {
                    LinkEnd::Lost
                };
            }
            continue;
        }
        if now == Phase::Draining {
            // Everything is written; a PING answered by a PONG proves the server processed
            // every PUB before it.
            let flushed = async {
                if wr.write_all(b"PING\r\n").await.is_ok() {
                    signals.pong.notified().await;
                }
            };
            tokio::select! {
                _ = flushed => return LinkEnd::Drained,
                _ = reached(phase, Phase::Stopped) => return LinkEnd::Stopped,
            }
        }
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = signals.writer.notified() => {}
            _ = reached(phase, Phase::Draining) => {}
        }
    }
}
