//! The TCP transport: one outbound connection per peer carrying length-prefixed postcard
//! frames, batched writes, a bounded pending queue, reconnect with backoff.
//!
//! Each node dials every peer it was told about (`add_peer`) and writes only on that
//! connection; it reads only on the connections it accepted. So a pair of nodes uses two
//! connections, one per direction, and no simultaneous-connect race exists. The dialer sends
//! `Hello{node}` and waits for the acceptor's `Hello` (which must name the expected peer)
//! before the link counts as up. A link is lost when a write fails or the acceptor closes
//! its side; the dialer then reports `Down`, backs off and reconnects, keeping the payloads
//! still queued.

use crate::backoff::Backoff;
use crate::frame::{
    data_frame_len, encode_data, encode_frame, Frame, FrameError, FrameReader, DEFAULT_MAX_FRAME,
    LEN_PREFIX, WIRE_VERSION,
};
use crate::runtime::{reached, Phase, RuntimeHost};
use crate::stats::{bump, Counters, TransportStats};
use crate::transport::{Ingress, NetError, PeerEvent, PeerEvents, SendError, Transport};
use agentos_abi::NodeId;
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// The largest frame accepted during a handshake (a `Hello` is tiny).
const MAX_HANDSHAKE_FRAME: usize = 64 * 1024;

/// Configuration of a [`TcpTransport`].
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// This node's id, sent in every handshake.
    pub node: NodeId,
    /// The address to listen on (port 0 picks a free port; see [`TcpTransport::local_addr`]).
    pub listen: SocketAddr,
    /// The largest frame body accepted or sent (default 16 MiB, at most `u32::MAX`). An
    /// inbound length prefix above it closes that connection; a payload whose frame would
    /// exceed it is refused with `TooLarge`.
    pub max_frame: usize,
    /// Payloads that may wait per peer before `send` returns `Full` (default 65,536).
    pub pending_cap: usize,
    /// Payload bytes gathered into one write (default 1 MiB): every queued frame up to this
    /// size goes out in a single `write_all`.
    pub max_batch_bytes: usize,
    /// First reconnect delay (default 50 ms).
    pub backoff_base: Duration,
    /// Largest reconnect delay (default 5 s).
    pub backoff_max: Duration,
    /// Seed for the reconnect jitter (mixed with each peer's id).
    pub jitter_seed: u64,
    /// Bound on one connection attempt (default 2 s).
    pub connect_timeout: Duration,
    /// Bound on a handshake, either side (default 5 s).
    pub handshake_timeout: Duration,
    /// Bound on the flush in a graceful [`Transport::close`] (default 5 s).
    pub close_timeout: Duration,
    /// Worker threads of the transport's own runtime (default 1).
    pub worker_threads: usize,
    /// Run on this (multi-thread, IO and time enabled) runtime instead of an own one.
    pub runtime: Option<tokio::runtime::Handle>,
}

impl TcpConfig {
    /// The defaults for `node` listening on `listen`.
    pub fn new(node: NodeId, listen: SocketAddr) -> Self {
        TcpConfig {
            node,
            listen,
            max_frame: DEFAULT_MAX_FRAME,
            pending_cap: 65_536,
            max_batch_bytes: 1 << 20,
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

/// A node transport over TCP. See the module docs for the connection model.
pub struct TcpTransport {
    shared: Arc<Shared>,
    host: RuntimeHost,
    local_addr: SocketAddr,
    /// Peer link tasks, awaited by a graceful close.
    links: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
}

struct Shared {
    cfg: TcpConfig,
    ingress: Ingress,
    events: PeerEvents,
    counters: Counters,
    peers: RwLock<HashMap<NodeId, Arc<PeerLink>>>,
    phase: watch::Sender<Phase>,
    accepting: AtomicBool,
}

/// The outbound side of one peer: its address, pending queue and link state.
struct PeerLink {
    node: NodeId,
    addr: Mutex<SocketAddr>,
    queue: Mutex<VecDeque<Bytes>>,
    /// Signalled when the queue goes from empty to non-empty.
    wake: Notify,
    up: AtomicBool,
}

impl TcpTransport {
    /// Bind `cfg.listen` and start accepting. Received payloads go to `ingress`, link changes
    /// to `events`. Peers are added with [`TcpTransport::add_peer`].
    pub fn bind(
        mut cfg: TcpConfig,
        ingress: Ingress,
        events: PeerEvents,
    ) -> Result<Self, NetError> {
        // The length prefix is a u32.
        cfg.max_frame = cfg.max_frame.min(u32::MAX as usize);
        let host = RuntimeHost::new(cfg.runtime.clone(), cfg.worker_threads, "agentos-net-tcp")?;
        let bind_err = |source| NetError::Bind {
            addr: cfg.listen,
            source,
        };
        let std_listener = std::net::TcpListener::bind(cfg.listen).map_err(bind_err)?;
        std_listener.set_nonblocking(true).map_err(bind_err)?;
        let local_addr = std_listener.local_addr().map_err(bind_err)?;
        let listener = {
            let _enter = host.handle().enter();
            TcpListener::from_std(std_listener).map_err(bind_err)?
        };
        let (phase, _) = watch::channel(Phase::Running);
        let shared = Arc::new(Shared {
            cfg,
            ingress,
            events,
            counters: Counters::default(),
            peers: RwLock::new(HashMap::new()),
            phase,
            accepting: AtomicBool::new(true),
        });
        host.handle().spawn(accept_loop(shared.clone(), listener));
        Ok(TcpTransport {
            shared,
            host,
            local_addr,
            links: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        })
    }

    /// The address the transport listens on (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Make `node` (listening at `addr`) a peer: start dialing it. Adding a known peer again
    /// changes its address, used from the next connection attempt on.
    pub fn add_peer(&self, node: NodeId, addr: SocketAddr) -> Result<(), NetError> {
        if !self.shared.accepting.load(Ordering::Acquire) {
            return Err(NetError::Closed);
        }
        let mut peers = self.shared.peers.write();
        if let Some(link) = peers.get(&node) {
            *link.addr.lock() = addr;
            return Ok(());
        }
        let link = Arc::new(PeerLink {
            node: node.clone(),
            addr: Mutex::new(addr),
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            up: AtomicBool::new(false),
        });
        peers.insert(node, link.clone());
        drop(peers);
        let task = self
            .host
            .handle()
            .spawn(run_link(self.shared.clone(), link));
        self.links.lock().push(task);
        Ok(())
    }

    /// Whether the link to `node` is currently up.
    pub fn is_up(&self, node: &NodeId) -> bool {
        self.shared
            .peers
            .read()
            .get(node)
            .is_some_and(|l| l.up.load(Ordering::Acquire))
    }

    /// Payloads waiting in `node`'s pending queue, if it is a peer.
    pub fn pending(&self, node: &NodeId) -> Option<usize> {
        self.shared
            .peers
            .read()
            .get(node)
            .map(|l| l.queue.lock().len())
    }

    fn stop(&self) {
        self.shared.accepting.store(false, Ordering::Release);
        self.shared.phase.send_replace(Phase::Stopped);
        for task in self.links.lock().drain(..) {
            task.abort();
        }
        self.host.shutdown();
    }
}

impl Transport for TcpTransport {
    fn node(&self) -> &NodeId {
        &self.shared.cfg.node
    }

    fn send(&self, to: &NodeId, payload: Bytes) -> Result<(), SendError> {
        let shared = &*self.shared;
        if !shared.accepting.load(Ordering::Acquire) {
            return Err(SendError::Closed(payload));
        }
        if data_frame_len(payload.len()) > shared.cfg.max_frame {
            return Err(SendError::TooLarge(payload));
        }
        let peers = shared.peers.read();
        let Some(link) = peers.get(to) else {
            return Err(SendError::UnknownPeer(payload));
        };
        let mut queue = link.queue.lock();
        if queue.len() >= shared.cfg.pending_cap {
            drop(queue);
            bump(&shared.counters.rejected_full, 1);
            return Err(SendError::Full(payload));
        }
        let was_empty = queue.is_empty();
        queue.push_back(payload);
        drop(queue);
        if was_empty {
            link.wake.notify_one();
        }
        Ok(())
    }

    fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.shared.accepting.store(false, Ordering::Release);
        self.shared.phase.send_replace(Phase::Draining);
        let links = std::mem::take(&mut *self.links.lock());
        let bound = self.shared.cfg.close_timeout;
        self.host.block_on(async move {
            let all = async {
                for link in links {
                    let _ = link.await;
                }
            };
            let _ = tokio::time::timeout(bound, all).await;
        });
        self.stop();
    }

    fn stats(&self) -> TransportStats {
        self.shared.counters.snapshot()
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------
// Inbound: accept, handshake, read frames, hand payloads to ingress.

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut phase = shared.phase.subscribe();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = reached(&mut phase, Phase::Stopped) => return,
        };
        match accepted {
            Ok((stream, _)) => {
                bump(&shared.counters.accepted, 1);
                tokio::spawn(serve_inbound(shared.clone(), stream));
            }
            // Out of descriptors or similar: pause instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn serve_inbound(shared: Arc<Shared>, stream: TcpStream) {
    let mut phase = shared.phase.subscribe();
    tokio::select! {
        _ = read_inbound(&shared, stream) => {}
        _ = reached(&mut phase, Phase::Stopped) => {}
    }
}

/// Why reading a frame stopped.
enum ReadError {
    Frame(FrameError),
    /// A well-formed frame that is not allowed here (a second `Hello`).
    Unexpected,
    Eof,
    Io,
}

/// Read one frame, pulling more input as needed.
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut FrameReader,
    rd: &mut R,
) -> Result<Frame, ReadError> {
    loop {
        match reader.next_frame() {
            Ok(Some(frame)) => return Ok(frame),
            Ok(None) => {}
            Err(e) => return Err(ReadError::Frame(e)),
        }
        match rd.read_buf(reader.buffer()).await {
            Ok(0) => return Err(ReadError::Eof),
            Ok(_) => {}
            Err(_) => return Err(ReadError::Io),
        }
    }
}

/// Count a protocol error that closes a connection.
fn count_close(c: &Counters, e: &FrameError) {
    match e {
        FrameError::Oversize { .. } => bump(&c.oversize_closes, 1),
        FrameError::Malformed(_) | FrameError::Trailing(_) => bump(&c.malformed_closes, 1),
    }
}

async fn read_inbound(shared: &Shared, stream: TcpStream) {
    let c = &shared.counters;
    let _ = stream.set_nodelay(true);
    // Keep the write half alive for the whole connection: dropping it would send FIN, which
    // the dialer reads as a lost link.
    let (mut rd, mut wr) = stream.into_split();
    let mut reader = FrameReader::new(shared.cfg.max_frame);

    let hello = tokio::time::timeout(
        shared.cfg.handshake_timeout,
        read_frame(&mut reader, &mut rd),
    )
    .await;
    let from = match hello {
        Ok(Ok(Frame::Hello { node, version })) if version == WIRE_VERSION => node,
        Ok(Err(ReadError::Frame(e))) => return count_close(c, &e),
        _ => return bump(&c.handshake_failures, 1),
    };
    let mut reply = Vec::new();
    let me = Frame::Hello {
        node: shared.cfg.node.clone(),
        version: WIRE_VERSION,
    };
    if encode_frame(&me, &mut reply).is_err() || wr.write_all(&reply).await.is_err() {
        return bump(&c.handshake_failures, 1);
    }

    let (mut frames, mut bytes) = (0u64, 0u64);
    let end = loop {
        match reader.next_frame() {
            Ok(Some(Frame::Data(payload))) => {
                frames += 1;
                bytes += payload.len() as u64;
                (shared.ingress)(from.clone(), payload);
                continue;
            }
            Ok(Some(Frame::Bye)) => break None,
            Ok(Some(Frame::Hello { .. })) => break Some(ReadError::Unexpected),
            Ok(None) => {}
            Err(e) => break Some(ReadError::Frame(e)),
        }
        bump(&c.frames_in, std::mem::take(&mut frames));
        bump(&c.bytes_in, std::mem::take(&mut bytes));
        match rd.read_buf(reader.buffer()).await {
            Ok(0) => break Some(ReadError::Eof),
            Ok(_) => {}
            Err(_) => break Some(ReadError::Io),
        }
    };
    bump(&c.frames_in, frames);
    bump(&c.bytes_in, bytes);
    match end {
        Some(ReadError::Frame(e)) => count_close(c, &e),
        Some(ReadError::Unexpected) => bump(&c.malformed_closes, 1),
        _ => {}
    }
    drop(wr);
}

// ---------------------------------------------------------------------------------------
// Outbound: one task per peer dials, handshakes, drains the queue in batches, reconnects.

/// How a link ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LinkEnd {
    /// The connection failed or the peer closed it: reconnect.
    Lost,
    /// A graceful close flushed the queue and said `Bye`.
    Drained,
    /// The transport stopped.
    Stopped,
}

/// Why a dial failed.
enum DialError {
    Connect,
    Handshake,
}

async fn run_link(shared: Arc<Shared>, link: Arc<PeerLink>) {
    let cfg = &shared.cfg;
    let c = &shared.counters;
    let mut phase = shared.phase.subscribe();
    let mut backoff = Backoff::for_peer(
        cfg.backoff_base,
        cfg.backoff_max,
        cfg.jitter_seed,
        &link.node,
    );
    let mut batch = Batch::default();
    let mut ever_up = false;
    while *phase.borrow() == Phase::Running {
        let addr = *link.addr.lock();
        let dialed = tokio::select! {
            r = dial(&shared, &link.node, addr) => r,
            _ = reached(&mut phase, Phase::Draining) => break,
        };
        match dialed {
            Ok((rd, wr)) => {
                bump(&c.connects, 1);
                if ever_up {
                    bump(&c.reconnects, 1);
                }
                ever_up = true;
                backoff.reset();
                link.up.store(true, Ordering::Release);
                (shared.events)(PeerEvent::Up(link.node.clone()));
                let end = drive_link(&shared, &link, rd, wr, &mut phase, &mut batch).await;
                link.up.store(false, Ordering::Release);
                (shared.events)(PeerEvent::Down(link.node.clone()));
                if end != LinkEnd::Lost {
                    break;
                }
            }
            Err(DialError::Connect) => bump(&c.connect_failures, 1),
            Err(DialError::Handshake) => {
                bump(&c.connect_failures, 1);
                bump(&c.handshake_failures, 1);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = reached(&mut phase, Phase::Draining) => break,
        }
    }
    let left = link.queue.lock().drain(..).count();
    bump(&c.dropped, left as u64);
}

/// Connect to `peer` at `addr` and complete the handshake.
async fn dial(
    shared: &Shared,
    peer: &NodeId,
    addr: SocketAddr,
) -> Result<(OwnedReadHalf, OwnedWriteHalf), DialError> {
    let cfg = &shared.cfg;
    let stream = match tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        _ => return Err(DialError::Connect),
    };
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let mut hello = Vec::new();
    let me = Frame::Hello {
        node: cfg.node.clone(),
        version: WIRE_VERSION,
    };
    encode_frame(&me, &mut hello).map_err(|_| DialError::Handshake)?;
    let handshake = async {
        wr.write_all(&hello).await.map_err(|_| DialError::Connect)?;
        let mut reader = FrameReader::new(MAX_HANDSHAKE_FRAME);
        match read_frame(&mut reader, &mut rd).await {
            Ok(Frame::Hello { node, version }) if node == *peer && version == WIRE_VERSION => {
                Ok(())
            }
            Err(ReadError::Eof | ReadError::Io) => Err(DialError::Connect),
            Ok(_) | Err(ReadError::Frame(_) | ReadError::Unexpected) => Err(DialError::Handshake),
        }
    };
    match tokio::time::timeout(cfg.handshake_timeout, handshake).await {
        Ok(Ok(())) => Ok((rd, wr)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(DialError::Handshake),
    }
}

/// The reusable buffers of one link's writer.
#[derive(Default)]
struct Batch {
    items: Vec<Bytes>,
    buf: Vec<u8>,
    frames: u64,
    payload_bytes: u64,
}

impl Batch {
    /// Move queued payloads (up to about `max_bytes`) into the write buffer; returns how many.
    fn fill(&mut self, link: &PeerLink, max_bytes: usize) -> u64 {
        {
            let mut queue = link.queue.lock();
            let mut size = 0usize;
            while size < max_bytes {
                let Some(p) = queue.pop_front() else { break };
                size += LEN_PREFIX + p.len();
                self.items.push(p);
            }
        }
        for p in self.items.drain(..) {
            encode_data(&p, &mut self.buf);
            self.frames += 1;
            self.payload_bytes += p.len() as u64;
        }
        self.frames
    }

    fn clear(&mut self, max_bytes: usize) {
        self.frames = 0;
        self.payload_bytes = 0;
        self.buf.clear();
        // Do not keep a huge buffer around after one oversized batch.
        if self.buf.capacity() > 4 * max_bytes.max(64 * 1024) {
            self.buf = Vec::new();
        }
    }
}

/// Write queued payloads to an established link until it is lost or the transport closes.
async fn drive_link(
    shared: &Shared,
    link: &PeerLink,
    mut rd: OwnedReadHalf,
    mut wr: OwnedWriteHalf,
    phase: &mut watch::Receiver<Phase>,
    batch: &mut Batch,
) -> LinkEnd {
    let c = &shared.counters;
    let max_bytes = shared.cfg.max_batch_bytes;
    // The acceptor never sends after its Hello (except a Bye before closing): reading only
    // detects that it went away.
    let mut probe = [0u8; 256];
    loop {
        let now = *phase.borrow();
        if now == Phase::Stopped {
            return LinkEnd::Stopped;
        }
        let n = batch.fill(link, max_bytes);
        if n > 0 {
            let written = tokio::select! {
                r = wr.write_all(&batch.buf) => r,
                _ = reached(phase, Phase::Stopped) => Err(std::io::ErrorKind::Interrupted.into()),
            };
            if written.is_ok() {
                bump(&c.frames_out, n);
                bump(&c.bytes_out, batch.payload_bytes);
            } else {
                bump(&c.dropped, n);
            }
            batch.clear(max_bytes);
            if written.is_err() {
                return if *phase.borrow() == Phase::Stopped {
                    LinkEnd::Stopped
                } else {
                    LinkEnd::Lost
                };
            }
            continue;
        }
        if now == Phase::Draining {
            let mut bye = Vec::new();
            if encode_frame(&Frame::Bye, &mut bye).is_ok() {
                tokio::select! {
                    _ = async { let _ = wr.write_all(&bye).await; let _ = wr.shutdown().await; } => {}
                    _ = reached(phase, Phase::Stopped) => return LinkEnd::Stopped,
                }
            }
            return LinkEnd::Drained;
        }
        tokio::select! {
            _ = link.wake.notified() => {}
            _ = reached(phase, Phase::Draining) => {}
            r = rd.read(&mut probe) => match r {
                Ok(0) | Err(_) => return LinkEnd::Lost,
                Ok(_) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn runs_on_a_supplied_runtime() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let lo = SocketAddr::from(([127, 0, 0, 1], 0));
        let (tx, rx) = channel();
        let (etx, erx) = channel();
        let mut cfg_b = TcpConfig::new(NodeId::from("b"), lo);
        cfg_b.runtime = Some(rt.handle().clone());
        let b = TcpTransport::bind(
            cfg_b,
            Arc::new(move |from, p| {
                let _ = tx.send((from, p));
            }),
            Arc::new(|_| {}),
        )
        .unwrap();
        let mut cfg_a = TcpConfig::new(NodeId::from("a"), lo);
        cfg_a.runtime = Some(rt.handle().clone());
        let a = TcpTransport::bind(
            cfg_a,
            Arc::new(|_, _| {}),
            Arc::new(move |e| {
                let _ = etx.send(e);
            }),
        )
        .unwrap();
        a.add_peer(NodeId::from("b"), b.local_addr()).unwrap();
        a.send(&NodeId::from("b"), Bytes::from_static(b"hi"))
            .unwrap();
        let wait = Duration::from_secs(10);
        assert_eq!(
            rx.recv_timeout(wait).unwrap(),
            (NodeId::from("a"), Bytes::from_static(b"hi"))
        );
        assert_eq!(
            erx.recv_timeout(wait).unwrap(),
            PeerEvent::Up(NodeId::from("b"))
        );
        // Dropping b stops its tasks on the shared runtime; a sees the link go.
        drop(b);
        assert_eq!(
            erx.recv_timeout(wait).unwrap(),
            PeerEvent::Down(NodeId::from("b"))
        );
        a.close();
        assert!(matches!(
            a.send(&NodeId::from("b"), Bytes::new()),
            Err(SendError::Closed(_))
        ));
    }
}
