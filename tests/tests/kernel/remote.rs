//! Kernels as a cluster over an in-memory wire (deterministic kernels, pumped by the test):
//! remote send, spawn of a registered image, monitors of live and dead remote processes,
//! every kind of bad envelope dropped and counted, noconnection on peer loss, spawn timeouts,
//! and what may not cross the wire.

use crate::util::*;
use agentos_abi::wire::{Addr, EgressError, Nonce, WireBody};
use agentos_abi::*;
use agentos_kernel::seal::{IngressError, Sealer};
use agentos_kernel::*;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

const KEY: &[u8] = b"cluster key for tests";

/// Envelopes in flight: (destination node, bytes).
type Wire = Arc<Mutex<VecDeque<(String, Bytes)>>>;

struct Cluster {
    nodes: Vec<(String, Kernel)>,
    wire: Wire,
}

fn node_cfg(name: &str, seed: u64) -> KernelConfig {
    let mut net = NetConfig::new(name, KEY);
    net.epoch = Some(seed);
    KernelConfig {
        net: Some(net),
        ..KernelConfig::deterministic(seed)
    }
}

impl Cluster {
    /// Deterministic kernels, each connected to every other through the shared wire.
    fn new(names: &[&str]) -> Cluster {
        let wire: Wire = Arc::default();
        let nodes: Vec<(String, Kernel)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), Kernel::new(node_cfg(n, i as u64 + 1))))
            .collect();
        for (_, k) in &nodes {
            for (peer, _) in &nodes {
                let (w, p) = (wire.clone(), peer.clone());
                let egress = move |b: Bytes| -> Result<(), EgressError> {
                    w.lock().unwrap().push_back((p.clone(), b));
                    Ok(())
                };
                k.connect(NodeId::from(peer.as_str()), Arc::new(egress))
                    .unwrap();
            }
        }
        Cluster { nodes, wire }
    }

    fn k(&self, name: &str) -> &Kernel {
        &self.nodes.iter().find(|(n, _)| n == name).unwrap().1
    }

    /// Run every kernel and carry every envelope until nothing moves. Virtual time advances
    /// (timers fire) only while the wire is empty, so no timeout beats a reply in flight.
    fn pump(&self) {
        for _ in 0..1000 {
            for (_, k) in &self.nodes {
                k.run_for(0);
            }
            let mut batch: Vec<_> = self.wire.lock().unwrap().drain(..).collect();
            if batch.is_empty() {
                for (_, k) in &self.nodes {
                    k.run();
                }
                batch = self.wire.lock().unwrap().drain(..).collect();
                if batch.is_empty() {
                    return;
                }
            }
            for (to, b) in batch {
                let _ = self.k(&to).ingress(&b);
            }
        }
        panic!("the cluster never went quiet");
    }
}

async fn recv_value(sys: &Sys) -> Message {
    loop {
        let m = sys.recv().await;
        if !matches!(m.sys(), Some(SysMsg::Boot { .. })) {
            return m;
        }
    }
}

#[test]
fn a_process_sends_to_a_process_on_another_node() {
    let c = Cluster::new(&["a", "b"]);
    let got = log::<(u64, Option<u64>, Pid)>();
    let g = got.clone();
    let receiver = c
        .k("b")
        .boot(
            image("receiver", move |sys: Sys, _| {
                let g = g.clone();
                async move {
                    let m = recv_value(&sys).await;
                    push(&g, (body_u64(&m.body).unwrap_or(0), m.corr, m.from));
                    Ok(())
                }
            }),
            BootOpts::default(),
        )
        .unwrap();
    let sender = c
        .k("a")
        .boot(
            init(move |sys, _| async move {
                let to = sys.dial(&NodeId::from("b"), receiver)?;
                sys.send(
                    to,
                    val(42u64),
                    SendOpts {
                        corr: Some(7),
                        ..SendOpts::default()
                    },
                )
                .await?;
                Ok(())
            }),
            BootOpts::default(),
        )
        .unwrap();
    c.pump();
    assert_eq!(c.k("a").wait_exit(sender), Ok(ExitReason::Normal));
    assert_eq!(c.k("b").wait_exit(receiver), Ok(ExitReason::Normal));
    assert_eq!(snapshot(&got), vec![(42, Some(7), Pid::KERNEL)]);
    assert_eq!(c.k("b").net_stats().accepted, 1);
}

#[test]
fn spawn_remote_runs_a_registered_image_that_answers_through_its_reply_cap_and_is_monitored() {
    let c = Cluster::new(&["a", "b"]);
    let echo = image("echo", |sys: Sys, args| async move {
        let boot = sys.recv().await;
        let reply = match boot.sys() {
            Some(SysMsg::Boot { reply: Some(r), .. }) => *r,
            other => return Err(ExitReason::fault(format!("no reply cap in {other:?}"))),
        };
        let n = args.as_u64().unwrap_or(0);
        sys.send(reply, val(n * 2), SendOpts::default()).await?;
        let m = sys.recv().await; // wait to be told to stop
        sys.exit(ExitReason::Other {
            kind: format!("stopped-{}", body_u64(&m.body).unwrap_or(0)),
        })
        .await;
        Ok(())
    });
    c.k("b")
        .register_image("echo", echo, BootOpts::default())
        .unwrap();
    let seen = log::<String>();
    let s2 = seen.clone();
    let a = c
        .k("a")
        .boot(
            init(move |sys, _| {
                let seen = s2.clone();
                async move {
                    let b = NodeId::from("b");
                    let child = sys.spawn_remote(&b, "echo", Value::U64(21)).await?;
                    sys.monitor(child).await?;
                    let m = sys.recv().await;
                    push(&seen, format!("answer {}", body_u64(&m.body).unwrap_or(0)));
                    sys.send(child, val(5u64), SendOpts::default()).await?;
                    let m = sys.recv().await;
                    match m.sys() {
                        Some(SysMsg::RemoteDown { node, reason, .. }) => {
                            push(&seen, format!("down from {node}: {reason}"))
                        }
                        other => push(&seen, format!("unexpected {other:?}")),
                    }
                    let missing = sys.spawn_remote(&b, "nope", Value::Unit).await;
                    push(&seen, format!("{}", missing.unwrap_err()));
                    Ok(())
                }
            }),
            BootOpts::default(),
        )
        .unwrap();
    c.pump();
    assert_eq!(c.k("a").wait_exit(a), Ok(ExitReason::Normal));
    let seen = snapshot(&seen);
    assert_eq!(seen[0], "answer 42");
    assert!(
        seen[1].starts_with("down from b:") && seen[1].contains("stopped-5"),
        "{seen:?}"
    );
    assert!(
        seen[2].contains("no image registered as \"nope\""),
        "{seen:?}"
    );
}

#[test]
fn monitoring_an_already_dead_remote_process_yields_its_down_at_once() {
    let c = Cluster::new(&["a", "b"]);
    let short = c
        .k("b")
        .boot(
            image("short", |_, _| async {
                Err(ExitReason::Other {
                    kind: "done".into(),
                })
            }),
            BootOpts::default(),
        )
        .unwrap();
    c.pump();
    assert!(c.k("b").wait_exit(short).is_ok());
    let seen = log::<SysMsg>();
    let s2 = seen.clone();
    let a = c
        .k("a")
        .boot(
            init(move |sys, _| {
                let seen = s2.clone();
                async move {
                    let cap = sys.dial(&NodeId::from("b"), short)?;
                    sys.monitor(cap).await?;
                    if let Body::Sys(s) = sys.recv().await.body {
                        push(&seen, s);
                    }
                    Ok(())
                }
            }),
            BootOpts::default(),
        )
        .unwrap();
    c.pump();
    assert_eq!(c.k("a").wait_exit(a), Ok(ExitReason::Normal));
    assert_eq!(
        snapshot(&seen),
        vec![SysMsg::RemoteDown {
            node: NodeId::from("b"),
            pid: short,
            reason: ExitReason::Other {
                kind: "done".into()
            }
        }]
    );
}

/// A receiver on "b" that records what reaches it.
fn b_receiver(c: &Cluster) -> (Pid, Log<u64>) {
    let got = log::<u64>();
    let g = got.clone();
    let pid = c
        .k("b")
        .boot(
            image("receiver", move |sys: Sys, _| {
                let g = g.clone();
                async move {
                    loop {
                        let m = sys.recv().await;
                        if let Some(v) = body_u64(&m.body) {
                            push(&g, v);
                        }
                    }
                }
            }),
            BootOpts::default(),
        )
        .unwrap();
    c.pump();
    (pid, got)
}

fn msg(v: u64) -> WireBody {
    WireBody::Msg {
        from: Pid(1),
        body: val(v),
        corr: None,
    }
}

#[test]
fn forged_tampered_replayed_stale_misaddressed_and_malformed_envelopes_are_dropped_and_counted() {
    let c = Cluster::new(&["a", "b"]);
    let (rx, got) = b_receiver(&c);
    let b = c.k("b");
    let to_b = Addr {
        node: NodeId::from("b"),
        pid: rx,
    };

    // A genuine envelope from "a" is delivered once; the same bytes again are a replay.
    let good = c.k("a").seal(&to_b, &msg(1)).unwrap();
    assert_eq!(b.ingress(&good), Ok(()));
    assert_eq!(b.ingress(&good), Err(IngressError::Replayed));

    // Forged: sealed with another key.
    let forger = Sealer::new(NodeId::from("a"), b"not the cluster key", 99);
    let forged = forger.seal(&to_b, 0, &msg(2)).unwrap();
    assert_eq!(b.ingress(&forged), Err(IngressError::Forged));

    // Tampered: one byte of the body changed after sealing.
    let mut tampered = c.k("a").seal(&to_b, &msg(3)).unwrap().to_vec();
    let at = tampered.len() - 40;
    tampered[at] ^= 0x20;
    assert_eq!(b.ingress(&tampered), Err(IngressError::Forged));

    // Stale: a valid MAC, but sealed ten minutes in the future of b's clock.
    let insider = Sealer::new(NodeId::from("a"), KEY, 1234);
    let stale = insider.seal(&to_b, 10 * 60 * 1000, &msg(4)).unwrap();
    assert!(matches!(b.ingress(&stale), Err(IngressError::Stale { .. })));

    // Misaddressed: sealed for node "c", delivered to "b".
    let elsewhere = insider
        .seal(
            &Addr {
                node: NodeId::from("c"),
                pid: rx,
            },
            0,
            &msg(5),
        )
        .unwrap();
    assert_eq!(
        b.ingress(&elsewhere),
        Err(IngressError::Misaddressed("c".into()))
    );

    // Malformed: not an envelope at all, and an empty frame.
    assert!(matches!(
        b.ingress(b"definitely not an envelope, just bytes from the wire"),
        Err(IngressError::Malformed(_))
    ));
    assert!(matches!(b.ingress(&[]), Err(IngressError::Malformed(_))));

    // Undeliverable: a system message smuggled across, and a dead target.
    let sys_msg = WireBody::Msg {
        from: Pid(1),
        body: Body::Sys(SysMsg::Term { from: Pid(1) }),
        corr: None,
    };
    let smuggled = insider.seal(&to_b, 0, &sys_msg).unwrap();
    assert!(matches!(
        b.ingress(&smuggled),
        Err(IngressError::Undeliverable(_))
    ));
    let dead = insider
        .seal(
            &Addr {
                node: NodeId::from("b"),
                pid: Pid(999),
            },
            0,
            &msg(6),
        )
        .unwrap();
    assert!(matches!(
        b.ingress(&dead),
        Err(IngressError::Undeliverable(_))
    ));

    c.pump();
    assert_eq!(
        snapshot(&got),
        vec![1],
        "only the genuine envelope reached the process"
    );
    let s = b.net_stats();
    assert_eq!(
        (
            s.accepted,
            s.replayed,
            s.forged,
            s.stale,
            s.misaddressed,
            s.malformed,
            s.undeliverable
        ),
        (1, 1, 2, 1, 1, 2, 2),
        "{s:?}"
    );
    let faults = events(b).iter().filter(|e| matches!(&e.kind, EventKind::Fault { error, .. } if error.starts_with("transport:"))).count();
    assert_eq!(faults, 9, "one fault event per dropped envelope");
}

#[test]
fn a_nonce_seen_before_is_refused_even_when_resealed_with_a_new_timestamp() {
    // The MAC covers the nonce, so a replay cannot be freshened without the key; and a sender
    // holding the key that reuses a nonce is caught by the guard.
    let c = Cluster::new(&["a", "b"]);
    let (rx, got) = b_receiver(&c);
    let to_b = Addr {
        node: NodeId::from("b"),
        pid: rx,
    };
    let s = Sealer::new(NodeId::from("a"), KEY, 77);
    let first = s.seal(&to_b, 0, &msg(1)).unwrap();
    assert_eq!(c.k("b").ingress(&first), Ok(()));
    let mut env: agentos_abi::wire::Envelope = postcard::from_bytes(&first).unwrap();
    env.ts = 1;
    let retimed = postcard::to_allocvec(&env).unwrap();
    assert_eq!(c.k("b").ingress(&retimed), Err(IngressError::Forged));
    assert_eq!(
        env.nonce,
        Nonce {
            node: NodeId::from("a"),
            epoch: 77,
            seq: 0
        }
    );
    c.pump();
    assert_eq!(snapshot(&got), vec![1]);
}

#[test]
fn losing_a_peer_resolves_its_monitors_and_pending_spawns_with_noconnection() {
    let c = Cluster::new(&["a", "b"]);
    let (rx, _) = b_receiver(&c);
    let seen = log::<String>();
    let s2 = seen.clone();
    let a = c
        .k("a")
        .boot(
            init(move |sys, _| {
                let seen = s2.clone();
                async move {
                    let b = NodeId::from("b");
                    let cap = sys.dial(&b, rx)?;
                    sys.monitor(cap).await?;
                    // Nobody registered "slow" on b yet, but the link dies before any answer.
                    let r = sys.spawn_remote(&b, "slow", Value::Unit).await;
                    push(&seen, format!("spawn: {}", r.unwrap_err()));
                    let m = sys.recv().await;
                    push(&seen, format!("{:?}", m.sys()));
                    Ok(())
                }
            }),
            BootOpts::default(),
        )
        .unwrap();
    // Run a only: the monitor request and the spawn request sit on the wire, unanswered.
    c.k("a").run_for(0);
    c.wire.lock().unwrap().clear();
    c.k("a").peer_down(&NodeId::from("b"));
    assert_eq!(c.k("a").wait_exit(a), Ok(ExitReason::Normal));
    let seen = snapshot(&seen);
    assert!(seen[0].contains("noconnection"), "{seen:?}");
    assert!(
        seen[1].contains("RemoteDown") && seen[1].contains("NoConnection"),
        "{seen:?}"
    );
    assert_eq!(c.k("a").net_stats().peers_lost, 1);
}

#[test]
fn an_unanswered_spawn_remote_times_out_on_the_kernel_clock() {
    let mut cfg = node_cfg("a", 1);
    if let Some(n) = cfg.net.as_mut() {
        n.spawn_timeout_ms = 250;
    }
    let k = Kernel::new(cfg);
    let black_hole = |_b: Bytes| -> Result<(), EgressError> { Ok(()) };
    k.connect(NodeId::from("void"), Arc::new(black_hole))
        .unwrap();
    let when = log::<(u64, String)>();
    let w = when.clone();
    let r = boot_and_wait(
        &k,
        init(move |sys, _| {
            let w = w.clone();
            async move {
                let e = sys
                    .spawn_remote(&NodeId::from("void"), "x", Value::Unit)
                    .await
                    .unwrap_err();
                push(&w, (sys.now(), e.to_string()));
                Ok(())
            }
        }),
    );
    assert_eq!(r, ExitReason::Normal);
    let (t, e) = snapshot(&when)[0].clone();
    assert_eq!(t, 250);
    assert!(e.contains("no answer from node \"void\" in 250 ms"), "{e}");
}

#[test]
fn caps_local_bodies_and_system_messages_never_cross_and_come_back_to_the_sender() {
    let c = Cluster::new(&["a", "b"]);
    let seen = log::<String>();
    let s2 = seen.clone();
    let a = c
        .k("a")
        .boot(
            init(move |sys, _| {
                let seen = s2.clone();
                async move {
                    let far = sys.dial(&NodeId::from("b"), Pid(1))?;
                    let me = sys.self_cap();
                    let e = sys
                        .send(
                            far,
                            val(1u64),
                            SendOpts {
                                caps: vec![me],
                                ..SendOpts::default()
                            },
                        )
                        .await
                        .unwrap_err();
                    let text = e.to_string();
                    push(
                        &seen,
                        format!("{text} / body back: {}", body_u64(&e.into_body()).is_some()),
                    );
                    let e = sys
                        .send(far, Body::local(5u32), SendOpts::default())
                        .await
                        .unwrap_err();
                    let text = e.to_string();
                    push(
                        &seen,
                        format!(
                            "{text} / body back: {:?}",
                            e.into_body().downcast::<u32>().ok()
                        ),
                    );
                    let e = sys
                        .send(
                            far,
                            Body::Sys(SysMsg::Term { from: Pid(1) }),
                            SendOpts::default(),
                        )
                        .await
                        .unwrap_err();
                    push(&seen, e.to_string());
                    let nowhere = sys.dial(&NodeId::from("z"), Pid(1))?;
                    let e = sys
                        .send(nowhere, val(1u64), SendOpts::default())
                        .await
                        .unwrap_err();
                    push(&seen, e.to_string());
                    let e = sys.signal(far, None).await.unwrap_err();
                    push(&seen, e.to_string());
                    let e = sys.waitpid(far).await.unwrap_err();
                    push(&seen, e.to_string());
                    Ok(())
                }
            }),
            BootOpts::default(),
        )
        .unwrap();
    c.pump();
    assert_eq!(c.k("a").wait_exit(a), Ok(ExitReason::Normal));
    let seen = snapshot(&seen);
    assert!(
        seen[0].contains("capabilities cannot cross") && seen[0].ends_with("body back: true"),
        "{seen:?}"
    );
    assert!(
        seen[1].contains("local body cannot cross") && seen[1].ends_with("Some(5)"),
        "{seen:?}"
    );
    assert!(seen[2].contains("system message cannot cross"), "{seen:?}");
    assert!(seen[3].contains("no route to node \"z\""), "{seen:?}");
    assert!(
        seen[4].contains("lacks right \"kill\""),
        "a dialed proxy cannot kill: {seen:?}"
    );
    assert!(seen[5].contains("authority never crosses"), "{seen:?}");
    assert!(
        c.wire.lock().unwrap().is_empty(),
        "nothing was put on the wire"
    );
}
