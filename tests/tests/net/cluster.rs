//! Kernels as a cluster over real transports: three kernels on loopback TCP (remote send,
//! spawn of a registered image, monitors of a live and of an already-dead remote process,
//! `noconnection` when a peer is killed), and the same scenario over a real `nats-server`.

use crate::nats::{server_binary, start_server};
use crate::util::*;
use agentos_abi::*;
use agentos_kernel::{BootOpts, KImage, Kernel, KernelConfig, NetConfig, Sys};
use agentos_net::{NatsConfig, NatsTransport, PeerEgress, PeerEvent, TcpTransport, Transport};
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY: &[u8] = b"the cluster key of the net tests";

/// A kernel and its transport; closing both when dropped.
struct Member {
    name: &'static str,
    k: Kernel,
    t: Arc<dyn Transport>,
    /// The transport's peer events, as the kernel also sees them.
    ev: Receiver<PeerEvent>,
}

impl Drop for Member {
    fn drop(&mut self) {
        self.t.close();
        self.k.shutdown(ExitReason::Shutdown);
    }
}

fn kernel(name: &str) -> Kernel {
    Kernel::new(KernelConfig {
        net: Some(NetConfig::new(name, KEY)),
        ..KernelConfig::threads(1)
    })
}

/// Transport callbacks that feed `k`: every payload to `ingress`, a lost peer to `peer_down`
/// (and every peer event to the returned channel, for the test to wait on).
fn callbacks(
    k: &Kernel,
) -> (
    agentos_net::Ingress,
    agentos_net::PeerEvents,
    Receiver<PeerEvent>,
) {
    let (k1, k2) = (k.clone(), k.clone());
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    let ingress: agentos_net::Ingress = Arc::new(move |_from: NodeId, b: Bytes| {
        let _ = k1.ingress(&b);
    });
    let events: agentos_net::PeerEvents = Arc::new(move |ev| {
        if let PeerEvent::Down(n) = &ev {
            k2.peer_down(n);
        }
        if let Ok(tx) = tx.lock() {
            let _ = tx.send(ev);
        }
    });
    (ingress, events, rx)
}

/// Three (or more) kernels on loopback TCP, every one routed to every other.
fn tcp_cluster(names: &[&'static str]) -> Vec<Member> {
    let mut built: Vec<(Member, Arc<TcpTransport>, SocketAddr)> = Vec::new();
    for name in names {
        let k = kernel(name);
        let (ingress, events, ev) = callbacks(&k);
        let t =
            Arc::new(TcpTransport::bind(tcp_cfg(name, loopback()), ingress, events).expect("bind"));
        let addr = t.local_addr();
        built.push((
            Member {
                name,
                k,
                t: t.clone(),
                ev,
            },
            t,
            addr,
        ));
    }
    for (m, t, _) in &built {
        for (peer, _, addr) in &built {
            if peer.name != m.name {
                t.add_peer(id(peer.name), *addr).expect("add peer");
                m.k.connect(id(peer.name), PeerEgress::new(m.t.clone(), id(peer.name)))
                    .expect("connect");
            }
        }
    }
    built.into_iter().map(|(m, _, _)| m).collect()
}

fn member<'a>(c: &'a [Member], name: &str) -> &'a Member {
    c.iter().find(|m| m.name == name).expect("member")
}

/// `wait_exit` bounded by the tests' wait limit.
fn wait_exit(k: &Kernel, pid: Pid) -> ExitReason {
    let (tx, rx) = channel();
    let k = k.clone();
    std::thread::spawn(move || {
        let _ = tx.send(k.wait_exit(pid));
    });
    rx.recv_timeout(WAIT)
        .expect("process did not exit in time")
        .expect("wait_exit")
}

/// On b: answers `args * 2` through its reply cap, then exits `stopped-N` when told N.
fn echo() -> KImage {
    Image::new("echo", |sys: Sys, args| async move {
        let boot = sys.recv().await;
        let Some(SysMsg::Boot {
            reply: Some(reply), ..
        }) = boot.sys().cloned()
        else {
            return Err(ExitReason::fault("no reply cap in the boot grant"));
        };
        sys.send(
            reply,
            Body::Value(Value::U64(args.as_u64().unwrap_or(0) * 2)),
            SendOpts::default(),
        )
        .await?;
        let m = sys.recv().await;
        let n = m.body.as_value().and_then(Value::as_u64).unwrap_or(0);
        sys.exit(ExitReason::Other {
            kind: format!("stopped-{n}"),
        })
        .await;
        Ok(())
    })
}

/// On c: records two values, then exits `sink-done`.
fn sink(got: Arc<Mutex<Vec<u64>>>) -> KImage {
    Image::new("sink", move |sys: Sys, _| {
        let got = got.clone();
        async move {
            let mut n = 0;
            while n < 2 {
                let m = sys.recv().await;
                if let Some(v) = m.body.as_value().and_then(Value::as_u64) {
                    got.lock()
                        .map_err(|_| ExitReason::fault("poisoned"))?
                        .push(v);
                    n += 1;
                }
            }
            Err(ExitReason::Other {
                kind: "sink-done".into(),
            })
        }
    })
}

/// The cluster scenario, on whatever transport joins a, b and c.
fn send_spawn_monitor(c: &[Member]) {
    let (a, b, cc) = (member(c, "a"), member(c, "b"), member(c, "c"));
    b.k.register_image("echo", echo(), BootOpts::default())
        .expect("register");
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink_pid =
        cc.k.boot(sink(got.clone()), BootOpts::default())
            .expect("boot sink");
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let s2 = seen.clone();
    let driver = Image::new("driver", move |sys: Sys, _| {
        let seen = s2.clone();
        async move {
            let note = |s: String| {
                seen.lock()
                    .map(|mut v| v.push(s))
                    .map_err(|_| ExitReason::fault("poisoned"))
            };
            let _boot = sys.recv().await;
            let (nb, nc) = (NodeId::from("b"), NodeId::from("c"));
            // Remote send.
            let to_sink = sys.dial(&nc, sink_pid)?;
            sys.send(to_sink, Body::Value(Value::U64(7)), SendOpts::default())
                .await?;
            // Remote spawn of a registered image; it answers through its reply cap.
            let echo = sys.spawn_remote(&nb, "echo", Value::U64(21)).await?;
            sys.monitor(echo).await?;
            let answer = sys.recv().await;
            note(format!(
                "answer {:?}",
                answer.body.as_value().and_then(Value::as_u64)
            ))?;
            sys.send(echo, Body::Value(Value::U64(5)), SendOpts::default())
                .await?;
            let down = sys.recv().await;
            note(format!("{:?}", down.sys()))?;
            // Monitor a live remote process that then dies.
            sys.monitor(to_sink).await?;
            sys.send(to_sink, Body::Value(Value::U64(8)), SendOpts::default())
                .await?;
            let down = sys.recv().await;
            note(format!("{:?}", down.sys()))?;
            // Monitor it again, now that it is dead: the down comes at once.
            sys.monitor(to_sink).await?;
            let down = sys.recv().await;
            note(format!("{:?}", down.sys()))?;
            Ok(())
        }
    });
    let pid = a.k.boot(driver, BootOpts::default()).expect("boot driver");
    assert_eq!(
        wait_exit(&a.k, pid),
        ExitReason::Normal,
        "{:?}",
        seen.lock().unwrap()
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0], "answer Some(42)");
    assert!(
        seen[1].contains("RemoteDown")
            && seen[1].contains("\"b\"")
            && seen[1].contains("stopped-5"),
        "{seen:?}"
    );
    let sink_down = format!("Some(RemoteDown {{ node: NodeId(\"c\"), pid: {sink_pid:?}, reason: Other {{ kind: \"sink-done\" }} }})");
    assert_eq!(seen[2], sink_down, "a live remote process that then dies");
    assert_eq!(seen[3], sink_down, "an already-dead remote process");
    assert_eq!(*got.lock().unwrap(), vec![7, 8]);
    for m in c {
        let s = m.k.net_stats();
        assert_eq!(
            (s.forged, s.replayed, s.stale, s.malformed),
            (0, 0, 0, 0),
            "{}: {s:?}",
            m.name
        );
    }
}

#[test]
fn three_kernels_on_tcp_send_spawn_and_monitor_across_nodes() {
    let c = tcp_cluster(&["a", "b", "c"]);
    send_spawn_monitor(&c);
}

#[test]
fn killing_a_peer_on_tcp_yields_noconnection_downs() {
    let c = tcp_cluster(&["a", "b"]);
    let (a, b) = (member(&c, "a"), member(&c, "b"));
    let forever =
        b.k.boot(
            Image::new("forever", |sys: Sys, _| async move {
                loop {
                    sys.recv().await;
                }
            }),
            BootOpts::default(),
        )
        .expect("boot");
    let (ready_tx, ready_rx) = channel::<()>();
    let ready = Arc::new(Mutex::new(Some(ready_tx)));
    let seen = Arc::new(Mutex::new(None));
    let s2 = seen.clone();
    let watcher = Image::new("watcher", move |sys: Sys, _| {
        let (seen, ready) = (s2.clone(), ready.clone());
        async move {
            let _boot = sys.recv().await;
            let cap = sys.dial(&NodeId::from("b"), forever)?;
            sys.monitor(cap).await?;
            sys.send(cap, Body::Value(Value::U64(1)), SendOpts::default())
                .await?;
            if let Some(tx) = ready.lock().ok().and_then(|mut r| r.take()) {
                let _ = tx.send(());
            }
            let down = sys.recv().await;
            *seen.lock().map_err(|_| ExitReason::fault("poisoned"))? = down.sys().cloned();
            Ok(())
        }
    });
    let pid = a.k.boot(watcher, BootOpts::default()).expect("boot");
    ready_rx.recv_timeout(WAIT).expect("the watcher monitors");
    // A peer that was never reached is not "lost": wait until a's link to b is up.
    wait_event(&a.ev, &PeerEvent::Up(id("b")));
    // Kill b's side of the wire: its sockets close, a's transport reports b down.
    b.t.close();
    assert_eq!(wait_exit(&a.k, pid), ExitReason::Normal);
    assert_eq!(
        *seen.lock().unwrap(),
        Some(SysMsg::RemoteDown {
            node: NodeId::from("b"),
            pid: forever,
            reason: ExitReason::NoConnection
        })
    );
    assert!(a.k.net_stats().peers_lost >= 1);
}

#[test]
fn three_kernels_on_nats_send_spawn_and_monitor_across_nodes() {
    let Some(bin) = server_binary() else { return };
    let server = start_server(&bin, None);
    let prefix = format!("agentos.cluster{}", std::process::id());
    let mut members = Vec::new();
    for name in ["a", "b", "c"] {
        let k = kernel(name);
        let (ingress, events, ev) = callbacks(&k);
        let mut cfg = NatsConfig::new(id(name), server.addr.clone());
        cfg.subject_prefix = prefix.clone();
        cfg.backoff_base = Duration::from_millis(5);
        let t = Arc::new(NatsTransport::connect(cfg, ingress, events).expect("connect"));
        t.wait_ready(WAIT).expect("nats ready");
        members.push((
            Member {
                name,
                k,
                t: t.clone(),
                ev,
            },
            t,
        ));
    }
    for (m, t) in &members {
        for (peer, _) in &members {
            if peer.name != m.name {
                t.add_peer(id(peer.name)).expect("add peer");
                m.k.connect(id(peer.name), PeerEgress::new(m.t.clone(), id(peer.name)))
                    .expect("connect");
            }
        }
    }
    let c: Vec<Member> = members.into_iter().map(|(m, _)| m).collect();
    send_spawn_monitor(&c);
}

#[test]
fn bad_envelopes_arriving_over_tcp_are_dropped_and_counted_and_good_ones_still_flow() {
    use agentos_abi::wire::{Addr, WireBody};
    use agentos_kernel::seal::Sealer;
    let c = tcp_cluster(&["a", "b"]);
    let (a, b) = (member(&c, "a"), member(&c, "b"));
    let (got_tx, got_rx) = channel::<u64>();
    let got_tx = Mutex::new(got_tx);
    let rx_pid =
        b.k.boot(
            Image::new("receiver", move |sys: Sys, _| {
                let tx = got_tx.lock().ok().map(|t| t.clone());
                async move {
                    let tx = tx.ok_or_else(|| ExitReason::fault("poisoned"))?;
                    loop {
                        let m = sys.recv().await;
                        if let Some(v) = m.body.as_value().and_then(Value::as_u64) {
                            let _ = tx.send(v);
                        }
                    }
                }
            }),
            BootOpts::default(),
        )
        .expect("boot");
    let to = Addr {
        node: id("b"),
        pid: rx_pid,
    };
    let msg = |v: u64| WireBody::Msg {
        from: Pid(1),
        body: Body::Value(Value::U64(v)),
        corr: None,
    };
    let genuine = a.k.seal(&to, &msg(1)).expect("seal");
    let forged = Sealer::new(id("a"), b"a key that is not the cluster's", 5)
        .seal(&to, 0, &msg(2))
        .expect("seal");
    let mut tampered = a.k.seal(&to, &msg(3)).expect("seal").to_vec();
    let at = tampered.len() - 40;
    tampered[at] ^= 1;
    let insider = Sealer::new(id("a"), KEY, 6);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let stale = insider
        .seal(&to, now_ms - 10 * 60 * 1000, &msg(4))
        .expect("seal");
    for bytes in [
        genuine.clone(),
        forged,
        Bytes::from(tampered),
        stale,
        genuine,
    ] {
        a.t.send(&id("b"), bytes).expect("queued");
    }
    // Per-link order holds: once a later genuine message arrives, all of the above were judged.
    let last = a.k.seal(&to, &msg(9)).expect("seal");
    a.t.send(&id("b"), last).expect("queued");
    let mut seen = Vec::new();
    while seen.last() != Some(&9) {
        seen.push(
            got_rx
                .recv_timeout(WAIT)
                .expect("the genuine messages arrive"),
        );
    }
    assert_eq!(
        seen,
        vec![1, 9],
        "only genuine, fresh, first-time envelopes reach the process"
    );
    let s = b.k.net_stats();
    assert_eq!((s.forged, s.stale, s.replayed), (2, 1, 1), "{s:?}");
}
