//! Process lifecycle: spawn/exit/waitpid, links, monitors, orphans, panics, `term`, the name
//! registry, shutdown and metrics.

use crate::util::*;
use agentos_abi::*;
use agentos_kernel::*;

/// A child that sleeps `delay` ms (virtual) and then ends with the reason its args name:
/// `Unit` → main returns `Ok`, `"fault:msg"` → main returns `Err(Fault)`, other string →
/// `exit(Other{kind})`.
fn dying(delay: u64) -> KImage {
    image("dying", move |sys: Sys, args| async move {
        if delay > 0 {
            sys.sleep(delay).await;
        }
        match args {
            Value::Str(s) if s.starts_with("fault:") => Err(ExitReason::fault(&s[6..])),
            Value::Str(kind) => match sys.exit(ExitReason::Other { kind }).await {},
            _ => Ok(()),
        }
    })
}

fn reason_cases() -> Vec<(Value, ExitReason)> {
    vec![
        (Value::Unit, ExitReason::Normal),
        (
            Value::from("fault:bad input"),
            ExitReason::fault("bad input"),
        ),
        (
            Value::from("custom"),
            ExitReason::Other {
                kind: "custom".into(),
            },
        ),
    ]
}

/// `(reason from waitpid, now before waitpid, now after waitpid)`.
type WaitObs = (ExitReason, u64, u64);

fn waitpid_scenario(args: Value, child_delay: u64, parent_delay: u64) -> (Kernel, WaitObs, Pid) {
    let out: Log<(WaitObs, Pid)> = log();
    let o = out.clone();
    let (k, r) = run_init(init(move |sys, _| {
        let (o, args) = (o.clone(), args.clone());
        async move {
            let c = sys
                .spawn(
                    dying(child_delay),
                    SpawnOpts {
                        args,
                        ..Default::default()
                    },
                )
                .await?;
            if parent_delay > 0 {
                sys.sleep(parent_delay).await;
            }
            let before = sys.now();
            let reason = sys.waitpid(c.cap).await?;
            push(&o, ((reason, before, sys.now()), c.pid));
            Ok(())
        }
    }));
    assert_eq!(r, ExitReason::Normal);
    let (obs, pid) = snapshot(&out)
        .pop()
        .expect("init recorded the waitpid result");
    (k, obs, pid)
}

#[test]
fn waitpid_before_death_parks_until_the_child_exits_and_returns_its_reason() {
    for (args, want) in reason_cases() {
        let (k, (got, before, after), child) = waitpid_scenario(args, 10, 0);
        assert_eq!(got, want);
        // waitpid parked from t=0 until the child died at t=10.
        assert_eq!((before, after), (0, 10), "reason {want:?}");
        assert_eq!(exit_of(&k, child), Some(want.clone()));
        assert_eq!(exit_ts(&k, child), Some(10));
        assert!(!k.is_alive(child));
    }
}

#[test]
fn waitpid_after_death_returns_the_reason_from_the_reaped_cache() {
    for (args, want) in reason_cases() {
        let (k, (got, before, after), child) = waitpid_scenario(args, 0, 5);
        assert_eq!(got, want);
        // The child died at t=0; waitpid at t=5 answered at once from the reaped cache.
        assert_eq!(exit_ts(&k, child), Some(0));
        assert_eq!((before, after), (5, 5));
    }
}

#[test]
fn host_wait_exit_reports_init_fault_and_other_reasons() {
    for (args, want) in reason_cases() {
        let k = det(3);
        let pid = k
            .boot(
                dying(0),
                BootOpts {
                    args,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(k.wait_exit(pid), Ok(want.clone()));
        // After death, the host sees the same reason again (reaped cache).
        assert_eq!(k.wait_exit(pid), Ok(want));
        assert_eq!(k.metrics().processes, 0);
    }
}

#[test]
fn wait_exit_reports_idle_instead_of_hanging_on_a_stuck_process() {
    let k = det(1);
    let pid = k.boot(until_term(), BootOpts::default()).unwrap();
    assert_eq!(k.wait_exit(pid), Err(KernelError::Idle(pid)));
    assert!(k.is_alive(pid));
}

#[test]
fn wait_exit_of_a_pid_never_spawned_is_an_error() {
    let k = det(1);
    let pid = k.boot(until_term(), BootOpts::default()).unwrap();
    let never = Pid(pid.0 + 100);
    assert_eq!(k.wait_exit(never), Err(KernelError::NoSuchProcess(never)));
}

#[test]
fn linked_child_death_delivers_down_to_parent_which_survives() {
    let got: Log<(Pid, Pid, ExitReason, Pid)> = log();
    let g = got.clone();
    let (k, r) = run_init(init(move |sys, _| {
        let g = g.clone();
        async move {
            // An unlinked child that faults first: it must not produce a Down for us.
            let quiet = sys
                .spawn(
                    dying(0),
                    SpawnOpts {
                        args: "fault:unlinked".into(),
                        ..Default::default()
                    },
                )
                .await?;
            let linked = sys
                .spawn(
                    dying(5),
                    SpawnOpts {
                        args: "fault:linked boom".into(),
                        link: true,
                        ..Default::default()
                    },
                )
                .await?;
            let m = sys.recv().await;
            match m.sys() {
                Some(SysMsg::Down { pid, reason }) => {
                    push(&g, (m.from, *pid, reason.clone(), linked.pid))
                }
                other => panic!("expected Down, got {other:?}"),
            }
            assert_eq!(sys.waitpid(quiet.cap).await?, ExitReason::fault("unlinked"));
            Ok(())
        }
    }));
    assert_eq!(
        r,
        ExitReason::Normal,
        "a linked death is a message, not a kill"
    );
    let (from, pid, reason, linked) = snapshot(&got).pop().unwrap();
    assert_eq!(pid, linked);
    assert_eq!(from, linked);
    assert_eq!(reason, ExitReason::fault("linked boom"));
    assert_eq!(exit_of(&k, Pid::INIT), Some(ExitReason::Normal));
}

#[test]
fn linked_parent_death_delivers_down_to_child() {
    let got: Log<(Pid, SysMsg)> = log();
    let g = got.clone();
    let k = det(1);
    let init_pid = k
        .boot(
            init(move |sys, boot| {
                let g = g.clone();
                async move {
                    let g2 = g.clone();
                    let sp = child_spawn(&sys, &boot);
                    let parent = image("parent", move |sys: Sys, _| {
                        let g = g2.clone();
                        async move {
                            let child = image("child", move |sys: Sys, _| {
                                let g = g.clone();
                                async move {
                                    let m = sys.recv().await;
                                    push(&g, (sys.self_pid(), m.sys().cloned().expect("sys msg")));
                                    Ok(())
                                }
                            });
                            sys.spawn(
                                child,
                                SpawnOpts {
                                    link: true,
                                    ..Default::default()
                                },
                            )
                            .await?;
                            // Let the child park in recv, then die abnormally.
                            sys.yield_now().await;
                            match sys.exit(ExitReason::Other { kind: "bye".into() }).await {}
                        }
                    });
                    let p = sys.spawn(parent, giving(vec![sp])).await?;
                    let r = sys.waitpid(p.cap).await?;
                    assert_eq!(r, ExitReason::Other { kind: "bye".into() });
                    Ok(())
                }
            }),
            BootOpts::default(),
        )
        .unwrap();
    k.run();
    assert_eq!(exit_of(&k, init_pid), Some(ExitReason::Normal));
    let got = snapshot(&got);
    assert_eq!(got.len(), 1, "the linked child got exactly one message");
    let (child, msg) = got[0].clone();
    let parent = Pid(2);
    assert_eq!(
        msg,
        SysMsg::Down {
            pid: parent,
            reason: ExitReason::Other { kind: "bye".into() }
        }
    );
    // The child handled the Down and exited normally: links do not kill.
    assert_eq!(exit_of(&k, child), Some(ExitReason::Normal));
    assert_eq!(k.metrics().processes, 0);
}

#[test]
fn monitor_of_a_dead_target_delivers_an_immediate_down_with_the_recorded_reason() {
    let got: Log<(Message, Pid, u64)> = log();
    let g = got.clone();
    let (_k, r) = run_init(init(move |sys, _| {
        let g = g.clone();
        async move {
            let c = sys
                .spawn(
                    dying(0),
                    SpawnOpts {
                        args: "gone".into(),
                        ..Default::default()
                    },
                )
                .await?;
            sys.sleep(7).await; // the child is long dead
            sys.monitor(c.cap).await?;
            let m = sys.recv().await;
            push(&g, (m, c.pid, sys.now()));
            Ok(())
        }
    }));
    assert_eq!(r, ExitReason::Normal);
    let (m, child, now) = snapshot_take(&got);
    assert_eq!(
        m.sys(),
        Some(&SysMsg::Down {
            pid: child,
            reason: ExitReason::Other {
                kind: "gone".into()
            }
        })
    );
    assert_eq!(now, 7, "the down arrived without waiting");
}

fn snapshot_take<T>(l: &Log<T>) -> T {
    l.lock().unwrap().pop().expect("a recorded value")
}

#[test]
fn monitor_of_a_live_target_delivers_down_on_its_death() {
    let got: Log<(Message, Pid, u64)> = log();
    let g = got.clone();
    let (_k, r) = run_init(init(move |sys, _| {
        let g = g.clone();
        async move {
            let c = sys
                .spawn(
                    dying(10),
                    SpawnOpts {
                        args: "fault:late".into(),
                        ..Default::default()
                    },
                )
                .await?;
            let first = sys.monitor(c.cap).await?;
            // Each monitor is its own (Erlang's semantics): two monitors, two downs, each
            // carrying its reference.
            let second = sys.monitor(c.cap).await?;
            let m = sys.recv().await;
            let t = sys.now();
            assert_eq!(m.corr, Some(first.0));
            let again = sys.recv().await;
            assert_eq!(again.corr, Some(second.0));
            assert_eq!(again.sys(), m.sys());
            // Nothing else arrives: a marker sent to ourselves is the next message.
            sys.send(sys.self_cap(), val(99u64), no_opts()).await?;
            let next = sys.recv().await;
            assert_eq!(body_u64(&next.body), Some(99), "exactly two downs");
            push(&g, (m, c.pid, t));
            Ok(())
        }
    }));
    assert_eq!(r, ExitReason::Normal);
    let (m, child, now) = snapshot_take(&got);
    assert_eq!(
        m.sys(),
        Some(&SysMsg::Down {
            pid: child,
            reason: ExitReason::fault("late")
        })
    );
    assert_eq!(now, 10);
}

#[test]
fn monitor_and_waitpid_need_the_monitor_right() {
    let (_k, r) = run_init(init(|sys, _| async move {
        let c = sys.spawn(until_term(), SpawnOpts::default()).await?;
        let send_only = sys.derive(c.cap, Right::Send.into())?;
        assert_eq!(
            sys.monitor(send_only).await,
            Err(SysError::Cap {
                op: "monitor",
                err: CapError::Lacks(Right::Monitor)
            })
        );
        assert_eq!(
            sys.waitpid(send_only).await,
            Err(SysError::Cap {
                op: "waitpid",
                err: CapError::Lacks(Right::Monitor)
            })
        );
        sys.term(c.cap).await?;
        assert_eq!(sys.waitpid(c.cap).await?, ExitReason::Normal);
        Ok(())
    }));
    assert_eq!(r, ExitReason::Normal);
}

#[test]
fn orphans_are_reparented_to_init_in_ps() {
    let k = det(1);
    let init_pid = k
        .boot(
            init(|sys, boot| async move {
                let parent = image("parent", |sys: Sys, _| async move {
                    sys.spawn(until_term(), SpawnOpts::default()).await?;
                    Ok(())
                });
                let p = sys
                    .spawn(parent, giving(vec![child_spawn(&sys, &boot)]))
                    .await?;
                assert_eq!(sys.waitpid(p.cap).await?, ExitReason::Normal);
                // Stay alive so the orphan has an init to belong to.
                let _ = sys.recv().await;
                Ok(())
            }),
            BootOpts::default(),
        )
        .unwrap();
    k.run();
    let parent = Pid(2);
    let orphan = Pid(3);
    assert!(!k.is_alive(parent));
    let row = ps_row(&k, orphan).expect("the orphan outlives its parent");
    assert_eq!(row.parent, Some(init_pid));
    assert_eq!(init_pid, Pid::INIT);
    // The spawn event still names the real parent.
    assert!(events(&k).iter().any(|e| e.kind
        == EventKind::Spawn {
            pid: orphan,
            parent: Some(parent),
            name: "until-term".into()
        }));
    k.shutdown(ExitReason::Shutdown);
}

#[test]
fn a_panicking_process_faults_with_its_message_and_the_kernel_keeps_running() {
    let got: Log<(Pid, ExitReason)> = log();
    let g = got.clone();
    let (k, r) = run_init(init(move |sys, _| {
        let g = g.clone();
        async move {
            let bomb = image("bomb", |sys: Sys, _| async move {
                sys.yield_now().await;
                panic!("boom at {}", 42);
            });
            let b = sys.spawn(bomb, SpawnOpts::default()).await?;
            let ok = sys.spawn(dying(3), SpawnOpts::default()).await?;
            push(&g, (b.pid, sys.waitpid(b.cap).await?));
            push(&g, (ok.pid, sys.waitpid(ok.cap).await?));
            // The kernel still spawns and runs processes after the panic.
            let again = sys.spawn(dying(1), SpawnOpts::default()).await?;
            push(&g, (again.pid, sys.waitpid(again.cap).await?));
            Ok(())
        }
    }));
    assert_eq!(r, ExitReason::Normal);
    let got = snapshot(&got);
    let (bomb, reason) = got[0].clone();
    match &reason {
        ExitReason::Fault { error } => assert!(error.contains("boom at 42"), "{error}"),
        other => panic!("expected Fault, got {other:?}"),
    }
    assert_eq!(got[1].1, ExitReason::Normal);
    assert_eq!(got[2].1, ExitReason::Normal);
    assert!(faults_of(&k, bomb).iter().any(|e| e.contains("boom at 42")));
    assert_eq!(exit_of(&k, bomb), Some(reason));
}

#[test]
fn a_panic_inside_a_cleanup_does_not_take_the_kernel_down() {
    let ran: Log<&'static str> = log();
    let r2 = ran.clone();
    let (k, r) = run_init(init(move |sys, _| {
        let ran = r2.clone();
        async move {
            let ran2 = ran.clone();
            let messy = image("messy", move |sys: Sys, _| {
                let ran = ran2.clone();
                async move {
                    let a = ran.clone();
                    sys.on_cleanup(Box::new(move || push(&a, "first-registered")));
                    sys.on_cleanup(Box::new(|| panic!("cleanup boom")));
                    let b = ran.clone();
                    sys.on_cleanup(Box::new(move || push(&b, "last-registered")));
                    Ok(())
                }
            });
            let m = sys.spawn(messy, SpawnOpts::default()).await?;
            assert_eq!(sys.waitpid(m.cap).await?, ExitReason::Normal);
            sys.sleep(1).await;
            let after = sys.spawn(dying(1), SpawnOpts::default()).await?;
            assert_eq!(sys.waitpid(after.cap).await?, ExitReason::Normal);
            push(&ran, "init-continued");
            Ok(())
        }
    }));
    assert_eq!(r, ExitReason::Normal);
    // Cleanups run LIFO; the panicking one in the middle does not stop the one after it.
    assert_eq!(
        snapshot(&ran),
        vec!["last-registered", "first-registered", "init-continued"]
    );
    // And the host can keep using the kernel.
    let again = k.boot(dying(0), BootOpts::default()).unwrap();
    assert_eq!(k.wait_exit(again), Ok(ExitReason::Normal));
}

#[test]
fn term_is_delivered_as_a_catchable_message_and_the_target_exits_normally() {
    let got: Log<String> = log();
    let g = got.clone();
    let (k, r) = run_init(init(move |sys, _| {
        let g = g.clone();
        async move {
            let g2 = g.clone();
            let svc = image("svc", move |sys: Sys, _| {
                let g = g2.clone();
                async move {
                    let g3 = g.clone();
                    sys.on_cleanup(Box::new(move || push(&g3, "cleanup".into())));
                    loop {
                        let m = sys.recv().await;
                        if let Some(SysMsg::Term { from }) = m.sys() {
                            push(&g, format!("term from {from}"));
                            push(&g, "flushing".into());
                            return Ok(());
                        }
                        push(&g, format!("work {:?}", body_u64(&m.body)));
                    }
                }
            });
            let s = sys.spawn(svc, SpawnOpts::default()).await?;
            sys.send(s.cap, val(1u64), no_opts()).await?;
            sys.term(s.cap).await?;
            assert_eq!(sys.waitpid(s.cap).await?, ExitReason::Normal);
            Ok(())
        }
    }));
    assert_eq!(r, ExitReason::Normal);
    assert_eq!(
        snapshot(&got),
        vec!["work Some(1)", "term from 1", "flushing", "cleanup"]
    );
    let svc = Pid(2);
    assert!(events(&k).iter().any(|e| e.kind
        == EventKind::Signal {
            pid: svc,
            sig: Signal::Term
        }));
    assert_eq!(exit_of(&k, svc), Some(ExitReason::Normal));
}

#[test]
fn signal_kills_with_killed_by_and_needs_the_kill_right() {
    let (k, r) = run_init(init(|sys, _| async move {
        let c = sys.spawn(until_term(), SpawnOpts::default()).await?;
        let no_kill = sys.derive(c.cap, Rights::SEND_MONITOR)?;
        assert_eq!(
            sys.signal(no_kill, None).await,
            Err(SysError::Cap {
                op: "signal",
                err: CapError::Lacks(Right::Kill)
            })
        );
        sys.signal(c.cap, None).await?;
        assert_eq!(
            sys.waitpid(c.cap).await?,
            ExitReason::Killed { by: sys.self_pid() }
        );
        Ok(())
    }));
    assert_eq!(r, ExitReason::Normal);
    assert!(events(&k).iter().any(|e| e.kind
        == EventKind::Signal {
            pid: Pid(2),
            sig: Signal::Kill
        }));
}

#[test]
fn registry_names_are_first_come_resolve_to_send_caps_and_vanish_with_the_owner() {
    let got: Log<String> = log();
    let g = got.clone();
    let (_k, r) = run_init(init(move |sys, _| {
        let g = g.clone();
        async move {
            let g2 = g.clone();
            let svc = image("svc", move |sys: Sys, _| {
                let g = g2.clone();
                async move {
                    sys.register("echo")?;
                    // Re-registering our own name is fine.
                    sys.register("echo")?;
                    let m = sys.recv().await;
                    push(&g, format!("svc got {:?}", body_u64(&m.body)));
                    Ok(())
                }
            });
            let s = sys.spawn(svc, SpawnOpts::default()).await?;
            sys.yield_now().await; // let it register
            assert_eq!(
                sys.register("echo"),
                Err(SysError::NameTaken("echo".into()))
            );
            let c = sys.lookup("echo").await.expect("registered name resolves");
            // The looked-up cap is send-only.
            assert_eq!(
                sys.signal(c, None).await,
                Err(SysError::Cap {
                    op: "signal",
                    err: CapError::Lacks(Right::Kill)
                })
            );
            sys.send(c, val(7u64), no_opts()).await?;
            assert_eq!(sys.waitpid(s.cap).await?, ExitReason::Normal);
            assert_eq!(
                sys.lookup("echo").await,
                None,
                "the name died with its owner"
            );
            assert!(sys.lookup("nobody").await.is_none());
            // The name is free again.
            sys.register("echo")?;
            assert!(sys.lookup("echo").await.is_some());
            sys.unregister("echo");
            assert!(sys.lookup("echo").await.is_none());
            push(&g, "done".into());
            Ok(())
        }
    }));
    assert_eq!(r, ExitReason::Normal);
    assert_eq!(snapshot(&got), vec!["svc got Some(7)", "done"]);
}

#[test]
fn shutdown_terminates_every_live_process_with_shutdown_and_logs_it() {
    let cleaned: Log<Pid> = log();
    let c2 = cleaned.clone();
    let k = det(1);
    let init_pid = k
        .boot(
            init(move |sys, _| {
                let cleaned = c2.clone();
                async move {
                    for _ in 0..3 {
                        let cl = cleaned.clone();
                        let w = image("worker", move |sys: Sys, _| {
                            let cl = cl.clone();
                            async move {
                                let me = sys.self_pid();
                                sys.on_cleanup(Box::new(move || push(&cl, me)));
                                let _ = sys.recv().await;
                                Ok(())
                            }
                        });
                        sys.spawn(w, SpawnOpts::default()).await?;
                    }
                    let _ = sys.recv().await;
                    Ok(())
                }
            }),
            BootOpts::default(),
        )
        .unwrap();
    k.run();
    assert_eq!(k.ps().len(), 4);
    k.shutdown(ExitReason::Shutdown);
    k.shutdown(ExitReason::Shutdown); // idempotent
    assert!(k.ps().is_empty());
    let ex = exits(&k);
    assert_eq!(ex.len(), 4);
    assert!(ex.iter().all(|(_, r)| *r == ExitReason::Shutdown));
    let mut pids: Vec<Pid> = ex.iter().map(|(p, _)| *p).collect();
    pids.sort();
    assert_eq!(pids, vec![init_pid, Pid(2), Pid(3), Pid(4)]);
    let shutdowns: Vec<_> = events(&k)
        .into_iter()
        .filter(|e| matches!(e.kind, EventKind::Shutdown { .. }))
        .collect();
    assert_eq!(shutdowns.len(), 1);
    assert_eq!(
        shutdowns[0].kind,
        EventKind::Shutdown {
            reason: ExitReason::Shutdown
        }
    );
    let mut cl = snapshot(&cleaned);
    cl.sort();
    assert_eq!(cl, vec![Pid(2), Pid(3), Pid(4)], "cleanups ran at shutdown");
    assert_eq!(k.wait_exit(init_pid), Ok(ExitReason::Shutdown));
    assert_eq!(
        k.boot(dying(0), BootOpts::default()),
        Err(KernelError::Shutdown)
    );
}

#[test]
fn metrics_count_the_history_and_render_as_prometheus_text() {
    let (k, r) = run_init(init(|sys, _| async move {
        let a = sys.spawn(dying(0), SpawnOpts::default()).await?;
        let b = sys
            .spawn(
                dying(0),
                SpawnOpts {
                    args: "fault:x".into(),
                    ..Default::default()
                },
            )
            .await?;
        sys.waitpid(a.cap).await?;
        sys.waitpid(b.cap).await?;
        sys.send(sys.self_cap(), val(1u64), no_opts()).await?;
        let _ = sys.recv().await;
        Ok(())
    }));
    assert_eq!(r, ExitReason::Normal);
    let m = k.metrics();
    assert_eq!(m.processes, 0);
    assert_eq!(m.spawns, 3);
    assert_eq!(m.exits, 3);
    // The boot grant is placed directly; our own marker is the one delivery.
    assert_eq!(m.sends, 1);
    assert_eq!(m.recvs, 2);
    assert!(m.faults >= 1);
    assert!(m.scheds >= 3);
    assert_eq!(m.caps, 0, "every cap died with its owner");
    assert_eq!(m.accounts, 0, "every account was released");
    let by = |k: &str| {
        m.exits_by_reason
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| *v)
    };
    assert_eq!(by("normal"), Some(2));
    assert_eq!(by("fault"), Some(1));
    let text = k.metrics_text();
    assert!(text.contains("agentos_processes 0\n"), "{text}");
    assert!(
        text.contains("agentos_exits_total{reason=\"normal\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("agentos_exits_total{reason=\"fault\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("agentos_spawns_total 3\n"), "{text}");
    assert!(text.contains("# TYPE agentos_processes gauge"), "{text}");
}
