//! The `remote` workload: two kernels (nodes) over a real transport on loopback; a process on
//! node A sends N messages with a 64-byte body to a process on node B, which acknowledges the
//! last. Every envelope is sealed (HMAC) by A's kernel and verified by B's. Measured over TCP
//! and, when a `nats-server` binary is available, over NATS through a real server.

use agentos_abi::{
    Body, ExitReason, Image, NodeId, Pid, SendError, SendOpts, SysError, Syscalls, Value,
};
use agentos_kernel::{BootOpts, Kernel, KernelConfig, NetConfig, Sys};
use agentos_net::{
    Ingress, NatsConfig, NatsTransport, PeerEgress, PeerEvents, TcpConfig, TcpTransport, Transport,
};
use anyhow::{anyhow, Result};
use bytes::Bytes;
use serde_json::{json, Value as Json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEY: &[u8] = b"bench cluster key, 32 bytes long";

fn node_kernel(name: &str) -> Kernel {
    Kernel::new(KernelConfig {
        net: Some(NetConfig::new(name, KEY)),
        ..KernelConfig::threads(1)
    })
}

fn feed(k: &Kernel) -> (Ingress, PeerEvents) {
    let (k1, k2) = (k.clone(), k.clone());
    let ingress: Ingress = Arc::new(move |_from: NodeId, b: Bytes| {
        let _ = k1.ingress(&b);
    });
    let events: PeerEvents = Arc::new(move |ev| {
        if let agentos_net::PeerEvent::Down(n) = ev {
            k2.peer_down(&n);
        }
    });
    (ingress, events)
}

/// Send `n` messages from a process on `a` to one on `b`; the time until B's ack arrives.
fn run(a: &Kernel, b: &Kernel, n: u64) -> Result<Duration> {
    let out: Arc<Mutex<Option<Duration>>> = Arc::default();
    // B: the first message names the sender; count n messages, then ack through a dial.
    let receiver = Image::new("receiver", move |sys: Sys, _| async move {
        let mut seen = 0u64;
        let mut ack = None;
        while seen < n {
            let m = sys.recv().await;
            match m.body {
                Body::Value(Value::U64(sender)) if ack.is_none() => {
                    ack = Some(sys.dial(&NodeId::from("a"), Pid(sender))?);
                    seen += 1;
                }
                Body::Bytes(_) => seen += 1,
                _ => {}
            }
        }
        let to = ack.ok_or_else(|| ExitReason::fault("no sender named"))?;
        sys.send(to, Body::Value(Value::U64(seen)), SendOpts::default())
            .await?;
        Ok(())
    });
    let rpid = b.boot(receiver, BootOpts::default())?;
    let o = out.clone();
    let sender = Image::new("sender", move |sys: Sys, _| {
        let o = o.clone();
        async move {
            let _boot = sys.recv().await;
            let to = sys.dial(&NodeId::from("b"), rpid)?;
            let payload = Bytes::from(vec![0x5a; 64]);
            let t = Instant::now();
            let mut body = Body::Value(Value::U64(sys.self_pid().0));
            let mut i = 0;
            while i < n {
                match sys.send(to, body, SendOpts::default()).await {
                    Ok(()) => {
                        i += 1;
                        body = Body::Bytes(payload.clone());
                    }
                    // The transport's queue is full: the body comes back; wait for it to drain.
                    Err(SendError::Refused(b, SysError::Remote(_))) => {
                        body = b;
                        sys.sleep(1).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let ack = sys.recv().await;
            if ack.body.as_value().and_then(Value::as_u64) != Some(n) {
                return Err(ExitReason::fault(format!("bad ack {:?}", ack.body)));
            }
            *o.lock().map_err(|_| ExitReason::fault("poisoned"))? = Some(t.elapsed());
            Ok(())
        }
    });
    let spid = a.boot(sender, BootOpts::default())?;
    match a.wait_exit(spid)? {
        ExitReason::Normal => {}
        other => return Err(anyhow!("sender exited {other}")),
    }
    b.wait_exit(rpid)?;
    let d = out.lock().map_err(|_| anyhow!("poisoned"))?.take();
    d.ok_or_else(|| anyhow!("the sender did not report"))
}

fn tcp(n: u64) -> Result<f64> {
    let (a, b) = (node_kernel("a"), node_kernel("b"));
    let listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let (ia, ea) = feed(&a);
    let (ib, eb) = feed(&b);
    let ta: Arc<TcpTransport> = Arc::new(TcpTransport::bind(
        TcpConfig::new(NodeId::from("a"), listen),
        ia,
        ea,
    )?);
    let tb: Arc<TcpTransport> = Arc::new(TcpTransport::bind(
        TcpConfig::new(NodeId::from("b"), listen),
        ib,
        eb,
    )?);
    ta.add_peer(NodeId::from("b"), tb.local_addr())?;
    tb.add_peer(NodeId::from("a"), ta.local_addr())?;
    a.connect(
        NodeId::from("b"),
        PeerEgress::new(ta.clone(), NodeId::from("b")),
    )?;
    b.connect(
        NodeId::from("a"),
        PeerEgress::new(tb.clone(), NodeId::from("a")),
    )?;
    let r = run(&a, &b, n);
    ta.close();
    tb.close();
    a.shutdown(ExitReason::Shutdown);
    b.shutdown(ExitReason::Shutdown);
    Ok(n as f64 / r?.as_secs_f64())
}

/// A `nats-server` binary, if one is installed (Debian puts it in /usr/sbin).
fn nats_binary() -> Option<std::path::PathBuf> {
    let mut dirs: Vec<std::path::PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/usr/local/bin"].map(std::path::PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

fn nats(n: u64) -> Result<Option<f64>> {
    let Some(bin) = nats_binary() else {
        return Ok(None);
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut server = std::process::Command::new(bin)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let result = (|| -> Result<f64> {
        let addr = format!("127.0.0.1:{port}");
        let (a, b) = (node_kernel("a"), node_kernel("b"));
        let (ia, ea) = feed(&a);
        let (ib, eb) = feed(&b);
        let connect = |name: &str, i, e| -> Result<Arc<NatsTransport>> {
            let mut cfg = NatsConfig::new(NodeId::from(name), addr.clone());
            cfg.subject_prefix = format!("agentos.bench{}", std::process::id());
            // The server may take a moment to listen: connect retries with backoff.
            let t = Arc::new(NatsTransport::connect(cfg, i, e)?);
            t.wait_ready(Duration::from_secs(10))?;
            Ok(t)
        };
        let ta = connect("a", ia, ea)?;
        let tb = connect("b", ib, eb)?;
        ta.add_peer(NodeId::from("b"))?;
        tb.add_peer(NodeId::from("a"))?;
        a.connect(
            NodeId::from("b"),
            PeerEgress::new(ta.clone(), NodeId::from("b")),
        )?;
        b.connect(
            NodeId::from("a"),
            PeerEgress::new(tb.clone(), NodeId::from("a")),
        )?;
        let r = run(&a, &b, n);
        ta.close();
        tb.close();
        a.shutdown(ExitReason::Shutdown);
        b.shutdown(ExitReason::Shutdown);
        Ok(n as f64 / r?.as_secs_f64())
    })();
    let _ = server.kill();
    let _ = server.wait();
    result.map(Some)
}

/// The `remote` workload.
pub fn remote(quick: bool) -> Result<Json> {
    let n = if quick { 20_000 } else { 200_000 };
    let tcp = tcp(n)?;
    let mut out = json!({
        "messages": n, "body_bytes": 64, "msgs_per_s": tcp,
        "transport": "tcp loopback, sealed + verified", "mode": "2 kernels, threads(1) each"
    });
    match nats(n) {
        Ok(Some(v)) => out["nats_msgs_per_s"] = json!(v),
        Ok(None) => out["nats"] = json!("not measured: no nats-server binary"),
        Err(e) => out["nats"] = json!(format!("not measured: {e}")),
    }
    Ok(out)
}
