//! IPC: bounded mailboxes and sender backpressure, external ingress, dead targets, message
//! fields.

use crate::util::*;
use agentos_abi::*;
use agentos_kernel::*;

/// A receiver with a 2-deep mailbox that first waits for `gate` (a cap in its args) to die,
/// then takes `n` messages, logging each value.
fn gated_receiver(n: u64, got: Log<u64>) -> KImage {
    image("receiver", move |sys: Sys, args| {
        let got = got.clone();
        async move {
            let gate = CapRef(args.as_u64().expect("gate cap in args"));
            sys.waitpid(gate).await?;
            for _ in 0..n {
                let m = sys.recv().await;
                push(&got, body_u64(&m.body).expect("a number"));
            }
            Ok(())
        }
    })
}

/// A sender that sends `0..n` to the cap in its args, logging `(i, now)` after each send.
fn counting_sender(n: u64, sent: Log<(u64, u64)>) -> KImage {
    image("sender", move |sys: Sys, args| {
        let sent = sent.clone();
        async move {
            let to = CapRef(args.as_u64().expect("target cap in args"));
            for i in 0..n {
                sys.send(to, val(i), no_opts()).await?;
                push(&sent, (i, sys.now()));
            }
            Ok(())
        }
    })
}

#[test]
fn a_full_mailbox_parks_the_sender_until_the_receiver_drains_and_preserves_order() {
    let got: Log<u64> = log();
    let sent: Log<(u64, u64)> = log();
    let (g, s) = (got.clone(), sent.clone());
    let k = det(1);
    let init_pid = k
        .boot(
            init(move |sys, _| {
                let (g, s) = (g.clone(), s.clone());
                async move {
                    // gate = 2: parks in recv until the host pokes it.
                    let gate = sys
                        .spawn(
                            image("gate", |sys: Sys, _| async move {
                                let _ = sys.recv().await;
                                Ok(())
                            }),
                            SpawnOpts::default(),
                        )
                        .await?;
                    // receiver = 3, mailbox bound 2; it gets the gate cap.
                    let r = sys
                        .spawn(
                            gated_receiver(10, g),
                            SpawnOpts {
                                args: Value::U64(gate.cap.0),
                                caps: vec![gate.cap],
                                quota: Quota {
                                    max_mailbox: Some(2),
                                    ..Quota::default()
                                },
                                ..Default::default()
                            },
                        )
                        .await?;
                    // sender = 4, with a send-only cap to the receiver.
                    let to = sys.derive(r.cap, Right::Send.into())?;
                    let snd = sys
                        .spawn(
                            counting_sender(10, s),
                            SpawnOpts {
                                args: Value::U64(to.0),
                                caps: vec![to],
                                ..Default::default()
                            },
                        )
                        .await?;
                    assert_eq!(sys.waitpid(snd.cap).await?, ExitReason::Normal);
                    assert_eq!(sys.waitpid(r.cap).await?, ExitReason::Normal);
                    Ok(())
                }
            }),
            BootOpts::default(),
        )
        .unwrap();
    let (gate, receiver, sender) = (Pid(2), Pid(3), Pid(4));

    // Run until nothing can move: the receiver waits on the gate, the sender on the mailbox.
    k.run();
    assert!(k.is_alive(init_pid));
    let r = ps_row(&k, receiver).unwrap();
    assert_eq!(r.mailbox, 2, "the mailbox holds exactly its bound");
    assert_eq!(r.budget.max_mailbox, Some(2));
    let s = ps_row(&k, sender).unwrap();
    assert_eq!(s.status, "waiting", "the sender is parked by backpressure");
    assert_eq!(snapshot(&sent), vec![(0, 0), (1, 0)]);
    assert!(snapshot(&got).is_empty());

    // External ingress to the full mailbox is refused: the body comes back, with a fault.
    let faults_before = k.metrics().faults;
    match k.deliver_external(receiver, val(1000u64)) {
        Err(b) => assert_eq!(body_u64(&b), Some(1000)),
        Ok(()) => panic!("delivery to a full mailbox must fail"),
    }
    assert_eq!(k.metrics().faults, faults_before + 1);
    assert!(faults_of(&k, receiver)
        .iter()
        .any(|e| e.contains("mailbox full")));
    assert_eq!(ps_row(&k, receiver).unwrap().mailbox, 2);

    // Open the gate: the receiver drains and the sender is released message by message.
    k.deliver_external(gate, Body::Empty).unwrap();
    assert_eq!(k.wait_exit(init_pid), Ok(ExitReason::Normal));
    assert_eq!(snapshot(&got), (0..10).collect::<Vec<_>>());
    assert_eq!(snapshot(&sent).len(), 10);

    // The mailbox never held more than its bound: replay the send/recv events.
    let mut depth: i64 = 0;
    let mut max_depth = 0;
    for e in events(&k) {
        match e.kind {
            EventKind::Send { from, to } if from == sender && to == receiver => depth += 1,
            EventKind::Recv { pid } if pid == receiver => depth -= 1,
            _ => {}
        }
        max_depth = max_depth.max(depth);
    }
    assert_eq!(max_depth, 2);
}

#[test]
fn backpressure_on_the_virtual_clock_releases_the_sender_only_when_the_receiver_wakes() {
    let got: Log<u64> = log();
    let sent: Log<(u64, u64)> = log();
    let (g, s) = (got.clone(), sent.clone());
    let (k, r) = run_init(init(move |sys, _| {
        let (g, s) = (g.clone(), s.clone());
        async move {
            let sleepy = image("sleepy", move |sys: Sys, _| {
                let g = g.clone();
                async move {
                    sys.sleep(10).await;
                    for _ in 0..10 {
                        let m = sys.recv().await;
                        push(&g, body_u64(&m.body).unwrap());
                    }
                    Ok(())
                }
            });
            let r = sys
                .spawn(
                    sleepy,
                    SpawnOpts {
                        quota: Quota {
                            max_mailbox: Some(2),
                            ..Quota::default()
                        },
                        ..Default::default()
                    },
                )
                .await?;
            let to = sys.derive(r.cap, Right::Send.into())?;
            let snd = sys
                .spawn(
                    counting_sender(10, s),
                    SpawnOpts {
                        args: Value::U64(to.0),
                        caps: vec![to],
                        ..Default::default()
                    },
                )
                .await?;
            sys.waitpid(snd.cap).await?;
            sys.waitpid(r.cap).await?;
            Ok(())
        }
    }));
    assert_eq!(r, ExitReason::Normal);
    let sent = snapshot(&sent);
    // Two fit at t=0; the rest waited for the receiver to wake at t=10.
    assert_eq!(&sent[..2], &[(0, 0), (1, 0)]);
    assert!(sent[2..].iter().all(|&(_, t)| t == 10), "{sent:?}");
    assert_eq!(
        sent.iter().map(|x| x.0).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(snapshot(&got), (0..10).collect::<Vec<_>>());
    // No send to the receiver happened between t=0's second send and t=10.
    let (receiver, sender) = (Pid(2), Pid(3));
    let send_ts: Vec<u64> = events(&k)
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Send { from, to } if from == sender && to == receiver => Some(e.ts),
            _ => None,
        })
        .collect();
    assert_eq!(send_ts.len(), 10);
    assert_eq!(send_ts.iter().filter(|&&t| t == 0).count(), 2);
}

#[test]
fn a_killed_parked_sender_does_not_swallow_the_wakeup_of_the_next_sender() {
    let got: Log<u64> = log();
    let g = got.clone();
    let k = det(1);
    let init_pid = k
        .boot(
            init(move |sys, _| {
                let g = g.clone();
                async move {
                    let g2 = g.clone();
                    let recv2 = image("receiver", move |sys: Sys, _| {
                        let g = g2.clone();
                        async move {
                            sys.sleep(10).await;
                            for _ in 0..2 {
                                let m = sys.recv().await;
                                push(&g, body_u64(&m.body).unwrap());
                            }
                            Ok(())
                        }
                    });
                    let r = sys
                        .spawn(
                            recv2,
                            SpawnOpts {
                                quota: Quota {
                                    max_mailbox: Some(1),
                                    ..Quota::default()
                                },
                                ..Default::default()
                            },
                        )
                        .await?;
                    // A sends 1 (fits) then 2 (parks); B sends 3 (parks behind A).
                    let sender = |vals: Vec<u64>| {
                        image("sender", move |sys: Sys, args| {
                            let vals = vals.clone();
                            async move {
                                let to = CapRef(args.as_u64().unwrap());
                                for v in vals {
                                    sys.send(to, val(v), no_opts()).await?;
                                }
                                Ok(())
                            }
                        })
                    };
                    let ta = sys.derive(r.cap, Right::Send.into())?;
                    let a = sys
                        .spawn(
                            sender(vec![1, 2]),
                            SpawnOpts {
                                args: Value::U64(ta.0),
                                caps: vec![ta],
                                ..Default::default()
                            },
                        )
                        .await?;
                    let tb = sys.derive(r.cap, Right::Send.into())?;
                    let b = sys
                        .spawn(
                            sender(vec![3]),
                            SpawnOpts {
                                args: Value::U64(tb.0),
                                caps: vec![tb],
                                ..Default::default()
                            },
                        )
                        .await?;
                    sys.sleep(5).await; // both senders are parked now
                    sys.signal(a.cap, None).await?;
                    assert_eq!(sys.waitpid(b.cap).await?, ExitReason::Normal);
                    assert_eq!(sys.waitpid(r.cap).await?, ExitReason::Normal);
                    Ok(())
                }
            }),
            BootOpts::default(),
        )
        .unwrap();
    assert_eq!(k.wait_exit(init_pid), Ok(ExitReason::Normal));
    assert_eq!(snapshot(&got), vec![1, 3]);
}

#[test]
fn sending_to_a_dead_process_returns_closed_with_the_body() {
    let (_k, r) = run_init(init(|sys, _| async move {
        let c = sys.spawn(exits_with(), SpawnOpts::default()).await?;
        sys.waitpid(c.cap).await?;
        match sys.send(c.cap, val(5u64), no_opts()).await {
            Err(SendError::Closed(b)) => assert_eq!(body_u64(&b), Some(5)),
            other => panic!("expected Closed, got {other:?}"),
        }
        Ok(())
    }));
    assert_eq!(r, ExitReason::Normal);
}

#[test]
fn deliver_external_to_a_dead_pid_returns_the_body_with_a_fault() {
    let k = det(1);
    let pid = k.boot(exits_with(), BootOpts::default()).unwrap();
    assert_eq!(k.wait_exit(pid), Ok(ExitReason::Normal));
    match k.deliver_external(pid, val(9u64)) {
        Err(b) => assert_eq!(body_u64(&b), Some(9)),
        Ok(()) => panic!("delivery to a dead pid must fail"),
    }
    assert!(faults_of(&k, pid)
        .iter()
        .any(|e| e.contains("no such process")));
    assert!(k.deliver_external(Pid(999), Body::Empty).is_err());
}

#[test]
fn deliver_external_arrives_from_the_kernel_pseudo_process() {
    let got: Log<(Pid, Option<u64>)> = log();
    let g = got.clone();
    let k = det(1);
    let pid = k
        .boot(
            init(move |sys, _| {
                let g = g.clone();
                async move {
                    let m = sys.recv().await;
                    push(&g, (m.from, body_u64(&m.body)));
                    Ok(())
                }
            }),
            BootOpts::default(),
        )
        .unwrap();
    k.run();
    k.deliver_external(pid, val(3u64)).unwrap();
    assert_eq!(k.wait_exit(pid), Ok(ExitReason::Normal));
    assert_eq!(snapshot(&got), vec![(Pid::KERNEL, Some(3))]);
}

#[test]
fn messages_keep_fifo_order_corr_deadline_and_typed_local_bodies() {
    #[derive(Debug, PartialEq)]
    struct Job {
        id: u32,
        payload: Vec<String>,
    }
    let got: Log<String> = log();
    let g = got.clone();
    let (_k, r) = run_init(init(move |sys, _| {
        let g = g.clone();
        async move {
            let g2 = g.clone();
            let sink = image("sink", move |sys: Sys, _| {
                let g = g2.clone();
                async move {
                    for _ in 0..4 {
                        let m = sys.recv().await;
                        let line = match m.body {
                            Body::Value(v) => format!("value {v:?} corr={:?}", m.corr),
                            Body::Bytes(b) => {
                                format!("bytes {} deadline={:?}", b.len(), m.deadline)
                            }
                            b @ Body::Local(_) => {
                                let job: Job = b.downcast().expect("a Job");
                                format!("job {} {:?}", job.id, job.payload)
                            }
                            other => format!("other {other:?}"),
                        };
                        push(&g, format!("{} from {}", line, m.from));
                    }
                    Ok(())
                }
            });
            let s = sys.spawn(sink, SpawnOpts::default()).await?;
            sys.send(
                s.cap,
                val("hello"),
                SendOpts {
                    corr: Some(41),
                    ..Default::default()
                },
            )
            .await?;
            sys.send(
                s.cap,
                Body::Bytes(bytes_of(3)),
                SendOpts {
                    deadline: Some(500),
                    ..Default::default()
                },
            )
            .await?;
            sys.send(
                s.cap,
                Body::local(Job {
                    id: 7,
                    payload: vec!["a".into()],
                }),
                no_opts(),
            )
            .await?;
            sys.send(s.cap, Body::Empty, no_opts()).await?;
            sys.waitpid(s.cap).await?;
            Ok(())
        }
    }));
    assert_eq!(r, ExitReason::Normal);
    assert_eq!(
        snapshot(&got),
        vec![
            "value Str(\"hello\") corr=Some(41) from 1",
            "bytes 3 deadline=Some(500) from 1",
            "job 7 [\"a\"] from 1",
            "other Empty from 1",
        ]
    );
}

fn bytes_of(n: usize) -> bytes::Bytes {
    bytes::Bytes::from(vec![0u8; n])
}

#[test]
fn a_sender_parked_on_a_full_mailbox_gets_closed_when_the_receiver_dies() {
    let got: Log<Option<u64>> = log();
    let g = got.clone();
    let (_k, r) = run_init(init(move |sys, _| {
        let g = g.clone();
        async move {
            let r = sys
                .spawn(
                    image("deaf", |sys: Sys, _| async move {
                        sys.sleep(1_000).await;
                        Ok(())
                    }),
                    SpawnOpts {
                        quota: Quota {
                            max_mailbox: Some(1),
                            ..Quota::default()
                        },
                        ..Default::default()
                    },
                )
                .await?;
            let to = sys.derive(r.cap, Right::Send.into())?;
            let g2 = g.clone();
            let pusher = image("pusher", move |sys: Sys, args| {
                let g = g2.clone();
                async move {
                    let to = CapRef(args.as_u64().unwrap());
                    sys.send(to, val(1u64), no_opts()).await?;
                    // Parks: the mailbox is full and the receiver never reads.
                    match sys.send(to, val(2u64), no_opts()).await {
                        Err(SendError::Closed(b)) => push(&g, body_u64(&b)),
                        other => panic!("expected Closed, got {other:?}"),
                    }
                    Ok(())
                }
            });
            let p = sys
                .spawn(
                    pusher,
                    SpawnOpts {
                        args: Value::U64(to.0),
                        caps: vec![to],
                        ..Default::default()
                    },
                )
                .await?;
            sys.sleep(10).await;
            sys.signal(r.cap, None).await?;
            assert_eq!(sys.waitpid(p.cap).await?, ExitReason::Normal);
            Ok(())
        }
    }));
    assert_eq!(r, ExitReason::Normal);
    assert_eq!(
        snapshot(&got),
        vec![Some(2)],
        "the undelivered body came back"
    );
}

#[test]
fn a_process_cannot_forge_a_system_message() {
    let seen: Log<String> = log();
    let s = seen.clone();
    let k = det(1);
    let pid = k
        .boot(
            init(move |sys, _| {
                let s = s.clone();
                async move {
                    let victim = sys
                        .spawn(
                            image("victim", |sys: Sys, _| async move {
                                let _ = sys.recv().await;
                                Ok(())
                            }),
                            SpawnOpts::default(),
                        )
                        .await?;
                    for forged in [
                        SysMsg::Term { from: Pid(1) },
                        SysMsg::Down {
                            pid: Pid(99),
                            reason: ExitReason::Normal,
                        },
                    ] {
                        let e = sys
                            .send(victim.cap, Body::Sys(forged), no_opts())
                            .await
                            .expect_err("refused");
                        // The refused body comes back whole.
                        assert!(matches!(e, SendError::Refused(Body::Sys(_), _)));
                        push(&s, e.to_string());
                    }
                    // The victim got nothing forged: a real message still reaches it first.
                    sys.send(victim.cap, val(1u64), no_opts()).await?;
                    sys.waitpid(victim.cap).await?;
                    Ok(())
                }
            }),
            BootOpts::default(),
        )
        .unwrap();
    assert_eq!(k.wait_exit(pid).unwrap(), ExitReason::Normal);
    let seen = snapshot(&seen);
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter()
            .all(|m| m.contains("cannot send a system message")),
        "{seen:?}"
    );
    assert_eq!(faults_of(&k, pid).len(), 2);
}

/// Parked senders resume together once the mailbox has drained to half its bound, not one per
/// message taken: each then sends a run of messages per wake-up (what a fan-in under
/// backpressure needs), and nothing is lost or reordered.
#[test]
fn blocked_senders_resume_in_a_batch_once_the_mailbox_drains_to_half() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let taken = Arc::new(AtomicU64::new(0));
    // (message index, messages the receiver had taken when that send completed)
    let sent: Log<(u64, u64)> = log();
    let got: Log<u64> = log();
    let (t, s, g) = (taken.clone(), sent.clone(), got.clone());
    let (_k, r) = run_init(init(move |sys, _| {
        let (t, s, g) = (t.clone(), s.clone(), g.clone());
        async move {
            let (rt, rg) = (t.clone(), g.clone());
            let receiver = image("receiver", move |sys: Sys, _| {
                let (t, g) = (rt.clone(), rg.clone());
                async move {
                    for _ in 0..8 {
                        let m = sys.recv().await;
                        push(&g, body_u64(&m.body).unwrap_or(u64::MAX));
                        t.fetch_add(1, Ordering::SeqCst);
                        sys.yield_now().await; // let a woken sender run at once
                    }
                    Ok(())
                }
            });
            let quota = Quota {
                max_mailbox: Some(4),
                ..Quota::default()
            };
            let rx = sys
                .spawn(
                    receiver,
                    SpawnOpts {
                        quota,
                        ..SpawnOpts::default()
                    },
                )
                .await?;
            for i in 0..8u64 {
                sys.send(rx.cap, val(i), no_opts()).await?;
                push(&s, (i, t.load(Ordering::SeqCst)));
            }
            sys.waitpid(rx.cap).await?;
            Ok(())
        }
    }));
    assert_eq!(r, ExitReason::Normal);
    assert_eq!(
        snapshot(&got),
        (0..8).collect::<Vec<_>>(),
        "nothing lost or reordered"
    );
    let sent = snapshot(&sent);
    // The first send that had to park (the fifth) completed only after the receiver had
    // drained the mailbox to half (two taken), not after the first message it took.
    let first_parked = sent.iter().find(|(i, _)| *i == 4).map(|(_, t)| *t);
    assert_eq!(first_parked, Some(2), "{sent:?}");
}
