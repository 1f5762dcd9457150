//! The supervisor: strategies under injected crashes, restart types, restart intensity,
//! flapping backoff on the virtual clock, ordered stop, and the life of its children.

use crate::*;
use agentos_abi::*;
use agentos_kernel::*;
use agentos_userland::supervisor::INTENSITY_EXCEEDED;
use agentos_userland::{
    supervisor, Backoff, ChildInfo, ChildSpec, Restart, Shutdown, Strategy, SupervisorError,
    SupervisorSpec,
};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

fn three(strategy: Strategy) -> SupervisorSpec<Sys> {
    SupervisorSpec::new(strategy)
        .child(ChildSpec::new("a", worker("a")))
        .child(ChildSpec::new("b", worker("b")))
        .child(ChildSpec::new("c", worker("c")))
}

fn info(id: &str, pid: Option<Pid>) -> ChildInfo {
    ChildInfo { id: id.into(), pid }
}

/// The exits of `pids` in trace order, with reasons.
fn exits_among(k: &Kernel, pids: &[Pid]) -> Vec<(Pid, ExitReason)> {
    exits(k)
        .into_iter()
        .filter(|(_, p, _)| pids.contains(p))
        .map(|(_, p, r)| (p, r))
        .collect()
}

fn crashed(name: &str) -> ExitReason {
    ExitReason::fault(format!("{name} crashed"))
}

fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

#[test]
fn children_start_in_spec_order_and_are_reported_by_which_children() {
    let run = SupRun::start(three(Strategy::OneForOne), Quota::default());
    assert_eq!(spawn_order(&run.k), ["supervisor", "a", "b", "c"]);
    let (a, b, c) = (
        pid_of(&run.k, "a"),
        pid_of(&run.k, "b"),
        pid_of(&run.k, "c"),
    );
    assert!(a < b && b < c);
    assert_eq!(
        run.children(),
        vec![info("a", Some(a)), info("b", Some(b)), info("c", Some(c))]
    );
    assert_eq!(run.exit(), None, "the supervisor runs on");
}

#[test]
fn one_for_one_restarts_only_the_crashed_child() {
    let run = SupRun::start(three(Strategy::OneForOne), Quota::default());
    let (a, c) = (pid_of(&run.k, "a"), pid_of(&run.k, "c"));
    let old_b = run.crash("b");
    let new_b = pid_of(&run.k, "b");
    assert_ne!(new_b, old_b);
    assert_eq!(spawn_order(&run.k), ["supervisor", "a", "b", "c", "b"]);
    assert_eq!((pid_of(&run.k, "a"), pid_of(&run.k, "c")), (a, c));
    assert_eq!(exit_of(&run.k, old_b), Some(crashed("b")));
    assert_eq!(
        run.children(),
        vec![
            info("a", Some(a)),
            info("b", Some(new_b)),
            info("c", Some(c))
        ]
    );
    // Again, on another child: still one restart each.
    run.crash("a");
    assert_eq!(spawn_order(&run.k), ["supervisor", "a", "b", "c", "b", "a"]);
    assert_eq!(run.exit(), None);
}

#[test]
fn one_for_all_stops_the_others_in_reverse_order_and_restarts_all_in_order() {
    let run = SupRun::start(three(Strategy::OneForAll), Quota::default());
    let (a, c) = (pid_of(&run.k, "a"), pid_of(&run.k, "c"));
    let b = run.crash("b");
    assert_eq!(
        exits_among(&run.k, &[a, b, c]),
        vec![
            (b, crashed("b")),
            (c, ExitReason::Shutdown),
            (a, ExitReason::Shutdown)
        ]
    );
    assert_eq!(
        spawn_order(&run.k),
        ["supervisor", "a", "b", "c", "a", "b", "c"]
    );
    let now: Vec<Pid> = ["a", "b", "c"].iter().map(|n| pid_of(&run.k, n)).collect();
    assert!(now[0] > c && now[0] < now[1] && now[1] < now[2]);
}

#[test]
fn rest_for_one_restarts_the_child_and_the_ones_after_it() {
    let spec = three(Strategy::RestForOne).child(ChildSpec::new("d", worker("d")));
    let run = SupRun::start(spec, Quota::default());
    let (a, c, d) = (
        pid_of(&run.k, "a"),
        pid_of(&run.k, "c"),
        pid_of(&run.k, "d"),
    );
    let b = run.crash("b");
    assert_eq!(
        exits_among(&run.k, &[a, b, c, d]),
        vec![
            (b, crashed("b")),
            (d, ExitReason::Shutdown),
            (c, ExitReason::Shutdown)
        ]
    );
    assert_eq!(
        spawn_order(&run.k),
        ["supervisor", "a", "b", "c", "d", "b", "c", "d"]
    );
    assert_eq!(pid_of(&run.k, "a"), a, "the child before it is untouched");
}

#[test]
fn permanent_transient_and_temporary_children_follow_their_restart_types() {
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(ChildSpec::new(
            "perm",
            scripted("perm", vec![Act::Exit], counter()),
        ))
        .child(
            ChildSpec::new("trans-ok", scripted("trans-ok", vec![Act::Exit], counter()))
                .restart(Restart::Transient),
        )
        .child(
            ChildSpec::new(
                "trans-bad",
                scripted("trans-bad", vec![Act::Crash], counter()),
            )
            .restart(Restart::Transient),
        )
        .child(
            ChildSpec::new("temp", scripted("temp", vec![Act::Crash], counter()))
                .restart(Restart::Temporary),
        );
    let run = SupRun::start(spec, Quota::default());
    // A permanent child restarts even after a normal exit; a transient one only after a
    // failure; a temporary one never.
    assert_eq!(spawns(&run.k, "perm").len(), 2);
    assert_eq!(spawns(&run.k, "trans-ok").len(), 1);
    assert_eq!(spawns(&run.k, "trans-bad").len(), 2);
    assert_eq!(spawns(&run.k, "temp").len(), 1);
    // The finished transient child stays in the list without a pid; the temporary one left.
    assert_eq!(
        run.children(),
        vec![
            info("perm", Some(pid_of(&run.k, "perm"))),
            info("trans-ok", None),
            info("trans-bad", Some(pid_of(&run.k, "trans-bad"))),
        ]
    );
    // A transient child that was restarted after a failure and now exits normally stays down.
    poke(&run.k, pid_of(&run.k, "trans-bad"), "exit");
    assert_eq!(spawns(&run.k, "trans-bad").len(), 2);
    assert!(live(&run.k, "trans-bad").is_empty());
}

#[test]
fn one_for_all_does_not_restart_a_temporary_sibling_it_stopped() {
    let spec = SupervisorSpec::new(Strategy::OneForAll)
        .child(ChildSpec::new("a", worker("a")))
        .child(ChildSpec::new("temp", worker("temp")).restart(Restart::Temporary))
        .child(ChildSpec::new("trans", worker("trans")).restart(Restart::Transient));
    let run = SupRun::start(spec, Quota::default());
    let temp = pid_of(&run.k, "temp");
    run.crash("a");
    assert_eq!(exit_of(&run.k, temp), Some(ExitReason::Shutdown));
    assert_eq!(
        spawn_order(&run.k),
        ["supervisor", "a", "temp", "trans", "a", "trans"]
    );
    let ids: Vec<String> = run.children().into_iter().map(|c| c.id).collect();
    assert_eq!(ids, ["a", "trans"]);
}

#[test]
fn intensity_exceeded_makes_the_supervisor_exit_with_a_fault_and_takes_its_children() {
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(2, 1_000)
        .backoff(Backoff {
            base_ms: 10,
            max_ms: 10,
            stable_ms: 1_000,
        })
        .child(ChildSpec::new("steady", worker("steady")))
        .child(ChildSpec::new(
            "bad",
            scripted("bad", vec![Act::Crash; 10], counter()),
        ));
    let run = SupRun::start(spec, Quota::default());
    assert_eq!(run.exit(), Some(ExitReason::fault(INTENSITY_EXCEEDED)));
    // The first start and two restarts; the third death in the window is one too many.
    let bad: Vec<u64> = spawns(&run.k, "bad").iter().map(|(t, _)| *t).collect();
    assert_eq!(bad, vec![0, 0, 10]);
    let steady = spawns(&run.k, "steady")[0].1;
    assert_eq!(exit_of(&run.k, steady), Some(ExitReason::Shutdown));
    assert!(
        run.k.ps().is_empty(),
        "no child, scope or alarm outlives it: {:?}",
        alive(&run.k)
    );
}

#[test]
fn restarts_spread_wider_than_the_period_never_exceed_the_intensity() {
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(1, 100)
        .backoff(Backoff {
            base_ms: 1_000,
            max_ms: 1_000,
            stable_ms: 100,
        })
        .child(ChildSpec::new(
            "slow",
            scripted("slow", vec![Act::CrashAfter(150); 5], counter()),
        ));
    let run = SupRun::start(spec, Quota::default());
    let times: Vec<u64> = spawns(&run.k, "slow").iter().map(|(t, _)| *t).collect();
    assert_eq!(times, vec![0, 150, 300, 450, 600, 750]);
    assert_eq!(run.exit(), None);
}

#[test]
fn flapping_backoff_doubles_on_the_virtual_clock_up_to_its_cap() {
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(100, 100_000)
        .backoff(Backoff {
            base_ms: 100,
            max_ms: 400,
            stable_ms: 10_000,
        })
        .child(ChildSpec::new(
            "flappy",
            scripted("flappy", vec![Act::Crash; 6], counter()),
        ));
    let run = SupRun::start(spec, Quota::default());
    let times: Vec<u64> = spawns(&run.k, "flappy").iter().map(|(t, _)| *t).collect();
    // Immediate, then 100, 200, 400 and the 400 cap twice.
    assert_eq!(times, vec![0, 0, 100, 300, 700, 1_100, 1_500]);
    assert_eq!(run.exit(), None);
    assert_eq!(live(&run.k, "flappy").len(), 1);
}

#[test]
fn flapping_backoff_resets_after_a_stable_run() {
    let acts = vec![
        Act::Crash,
        Act::Crash,
        Act::Crash,
        Act::CrashAfter(1_000),
        Act::Crash,
        Act::Crash,
    ];
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(100, 100_000)
        .backoff(Backoff {
            base_ms: 100,
            max_ms: 10_000,
            stable_ms: 1_000,
        })
        .child(ChildSpec::new(
            "flappy",
            scripted("flappy", acts, counter()),
        ));
    let run = SupRun::start(spec, Quota::default());
    let times: Vec<u64> = spawns(&run.k, "flappy").iter().map(|(t, _)| *t).collect();
    // 0 → 0 → +100 → +200; then a 1 s run: the next restart is immediate again (1300),
    // and the doubling starts over (+100, +200) instead of going on with +400.
    assert_eq!(times, vec![0, 0, 100, 300, 1_300, 1_400, 1_600]);
}

#[test]
fn term_stops_the_children_in_reverse_start_order_then_the_supervisor_exits_normally() {
    let run = SupRun::start(three(Strategy::OneForOne), Quota::default());
    let (a, b, c) = (
        pid_of(&run.k, "a"),
        pid_of(&run.k, "b"),
        pid_of(&run.k, "c"),
    );
    poke(&run.k, run.init, "term");
    assert_eq!(
        exits_among(&run.k, &[a, b, c, run.sup]),
        vec![
            (c, ExitReason::Shutdown),
            (b, ExitReason::Shutdown),
            (a, ExitReason::Shutdown),
            (run.sup, ExitReason::Normal)
        ]
    );
    assert_eq!(run.exit(), Some(ExitReason::Normal));
    assert!(run.k.ps().is_empty(), "left: {:?}", alive(&run.k));
}

/// A child that ignores `Term`.
fn stubborn() -> KImage {
    Image::new("stubborn", |sys: Sys, _| async move {
        loop {
            let _ = sys.recv().await;
        }
    })
}

#[test]
fn a_shutdown_timeout_asks_with_term_and_kills_when_the_time_is_up() {
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(ChildSpec::new("polite", worker("polite")).shutdown(Shutdown::Timeout(500)))
        .child(ChildSpec::new("stubborn", stubborn()).shutdown(Shutdown::Timeout(200)));
    let run = SupRun::start(spec, Quota::default());
    let (polite, stub) = (pid_of(&run.k, "polite"), pid_of(&run.k, "stubborn"));
    poke(&run.k, run.init, "term");
    let ex = exits(&run.k);
    let at = |pid| ex.iter().find(|(_, p, _)| *p == pid).cloned().unwrap();
    // The stubborn child (last started) goes first: killed when its 200 ms are up.
    assert_eq!(at(stub), (200, stub, ExitReason::Shutdown));
    // The polite one leaves on its own as soon as it is asked.
    assert_eq!(at(polite), (200, polite, ExitReason::Normal));
    assert_eq!(at(run.sup).2, ExitReason::Normal);
    assert!(run.k.ps().is_empty(), "left: {:?}", alive(&run.k));
}

#[test]
fn a_killed_supervisor_takes_its_children_with_it() {
    let run = SupRun::start(three(Strategy::OneForOne), Quota::default());
    let kids: Vec<Pid> = ["a", "b", "c"].iter().map(|n| pid_of(&run.k, n)).collect();
    poke(&run.k, run.init, "kill");
    assert_eq!(
        run.exit(),
        Some(ExitReason::Killed { by: run.init }),
        "init killed it"
    );
    for pid in kids {
        assert_eq!(exit_of(&run.k, pid), Some(ExitReason::Shutdown));
    }
    assert!(run.k.ps().is_empty(), "left: {:?}", alive(&run.k));
}

#[test]
fn a_supervisor_spawned_linked_stops_when_its_parent_dies() {
    let k = det();
    let image = supervisor(three(Strategy::OneForOne)).unwrap();
    k.boot(
        init(move |sys, boot| {
            let image = image.clone();
            async move {
                let opts = SpawnOpts {
                    link: true,
                    ..with_spawn(&sys, &boot)
                };
                sys.spawn(image, opts).await?;
                // Wait for the host, then die abnormally.
                let _ = sys.recv().await;
                Err(ExitReason::fault("parent gone"))
            }
        }),
        BootOpts::default(),
    )
    .unwrap();
    k.run();
    let sup = pid_of(&k, "supervisor");
    let kids: Vec<Pid> = ["a", "b", "c"].iter().map(|n| pid_of(&k, n)).collect();
    poke(&k, Pid::INIT, "die");
    assert_eq!(
        exit_of(&k, sup),
        Some(ExitReason::Linked { pid: Pid::INIT })
    );
    assert_eq!(
        exits_among(&k, &kids),
        vec![
            (kids[2], ExitReason::Shutdown),
            (kids[1], ExitReason::Shutdown),
            (kids[0], ExitReason::Shutdown)
        ]
    );
    assert!(k.ps().is_empty(), "left: {:?}", alive(&k));
}

#[test]
fn a_child_that_cannot_start_fails_the_supervisor_and_stops_the_ones_started() {
    // Three live children in the supervisor's subtree: its scope, "a" and "b".
    let quota = Quota {
        children: Some(3),
        ..Quota::default()
    };
    let run = SupRun::start(three(Strategy::OneForOne), quota);
    let Some(ExitReason::Fault { error }) = run.exit() else {
        panic!("expected a fault, got {:?}", run.exit());
    };
    assert!(
        error.contains("child \"c\" failed to start") && error.contains("children"),
        "{error}"
    );
    for (_, pid) in spawns(&run.k, "a").into_iter().chain(spawns(&run.k, "b")) {
        assert_eq!(exit_of(&run.k, pid), Some(ExitReason::Shutdown));
    }
    assert!(run.k.ps().is_empty(), "left: {:?}", alive(&run.k));
}

#[test]
fn duplicate_child_ids_are_refused() {
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(ChildSpec::new("a", worker("a")))
        .child(ChildSpec::new("a", worker("b")));
    assert_eq!(
        supervisor(spec).err(),
        Some(SupervisorError::DuplicateChild("a".into()))
    );
    let spec = SupervisorSpec::new(Strategy::OneForOne).child(
        ChildSpec::new("a", worker("a"))
            .args(7u64)
            .cap("x", CapRef(1)),
    );
    assert_eq!(
        supervisor(spec).err(),
        Some(SupervisorError::ArgsNotAMap("a".into()))
    );
}

#[test]
fn every_start_hands_the_child_a_fresh_copy_of_its_caps_in_its_args() {
    let got: Log<(u64, Result<(), String>)> = log();
    let g = got.clone();
    let greeter = Image::new("greeter", move |sys: Sys, args: Value| {
        let g = g.clone();
        async move {
            let to = CapRef(args.get("home").and_then(Value::as_u64).unwrap());
            assert_eq!(args.get("greeting").and_then(Value::as_str), Some("hi"));
            let r = sys
                .send(to, Body::Value("hi".into()), SendOpts::default())
                .await;
            push(&g, (to.0, r.map_err(|e| e.to_string())));
            // Then serve like a worker.
            loop {
                let m = sys.recv().await;
                if m.body.as_value().and_then(Value::as_str) == Some("crash") {
                    return Err(ExitReason::fault("greeter crashed"));
                }
            }
        }
    });
    let k = det();
    let hellos: Log<Pid> = log();
    let h = hellos.clone();
    k.boot(
        init(move |sys, boot| {
            let (greeter, h) = (greeter.clone(), h.clone());
            async move {
                let home = sys.self_cap();
                let spec = SupervisorSpec::new(Strategy::OneForOne).child(
                    ChildSpec::new("greeter", greeter)
                        .args(Value::Map(vec![("greeting".into(), "hi".into())]))
                        .cap("home", home),
                );
                let mut opts = with_spawn(&sys, &boot);
                opts.caps.push(home);
                sys.spawn(supervisor(spec).unwrap(), opts).await?;
                loop {
                    let m = sys.recv().await;
                    if m.body.as_value().and_then(Value::as_str) == Some("hi") {
                        push(&h, m.from);
                    }
                }
            }
        }),
        BootOpts::default(),
    )
    .unwrap();
    k.run();
    let first = pid_of(&k, "greeter");
    poke(&k, first, "crash");
    let second = pid_of(&k, "greeter");
    assert_eq!(snapshot(&hellos), vec![first, second]);
    let got = snapshot(&got);
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|(_, r)| r.is_ok()), "{got:?}");
    assert_ne!(got[0].0, got[1].0, "a fresh copy on each start");
}

#[test]
fn restarts_do_not_grow_the_capability_tables_of_the_supervisor_or_its_scope() {
    let run = SupRun::start(
        SupervisorSpec::new(Strategy::OneForOne)
            .intensity(1_000, 1_000)
            .child(ChildSpec::new("a", worker("a"))),
        Quota::default(),
    );
    let scope = pid_of(&run.k, "supervisor.scope");
    run.crash("a");
    let after_one = (run.k.caps_owned(run.sup), run.k.caps_owned(scope));
    for _ in 0..5 {
        run.crash("a");
    }
    assert_eq!(spawns(&run.k, "a").len(), 7);
    assert_eq!(
        (run.k.caps_owned(run.sup), run.k.caps_owned(scope)),
        after_one
    );
}

#[test]
fn which_children_keeps_unrelated_messages_for_the_caller() {
    let k = det();
    let seen: Log<(Vec<ChildInfo>, Vec<String>)> = log();
    let s = seen.clone();
    k.boot(
        init(move |sys, boot| {
            let s = s.clone();
            async move {
                let sup = sys
                    .spawn(
                        supervisor(three(Strategy::OneForOne)).unwrap(),
                        with_spawn(&sys, &boot),
                    )
                    .await?;
                // Two messages land before the answer does.
                let me = sys.self_cap();
                sys.send(me, Body::Value("one".into()), SendOpts::default())
                    .await?;
                sys.send(me, Body::Value("two".into()), SendOpts::default())
                    .await?;
                let list = agentos_userland::which_children(&sys, sup.cap)
                    .await
                    .map_err(|e| ExitReason::fault(e.to_string()))?;
                // They are still in the mailbox, in order.
                let mut kept = Vec::new();
                while let Some(m) = sys.try_recv(Select::Any) {
                    if let Some(s) = m.body.as_value().and_then(Value::as_str) {
                        kept.push(s.to_owned());
                    }
                }
                push(&s, (list, kept));
                Ok(())
            }
        }),
        BootOpts::default(),
    )
    .unwrap();
    k.run();
    let (list, kept) = snapshot(&seen).pop().expect("init answered");
    assert_eq!(list.len(), 3);
    assert_eq!(kept, ["one", "two"]);
}

#[test]
fn nested_supervisors_restart_inside_and_go_down_as_one_tree() {
    let k = det();
    k.boot(
        init(|sys, boot| async move {
            // The inner supervisor needs a spawn cap of its own: the outer one holds it for
            // the child and hands a fresh copy on every start.
            let for_inner = spawn_cap(&sys, &boot);
            let inner = SupervisorSpec::new(Strategy::OneForOne)
                .child(ChildSpec::new("x", worker("x")))
                .child(ChildSpec::new("y", worker("y")));
            let outer = SupervisorSpec::new(Strategy::OneForOne)
                .child(ChildSpec::new("inner", supervisor(inner).unwrap()).cap("spawn", for_inner))
                .child(ChildSpec::new("z", worker("z")));
            let mut opts = with_spawn(&sys, &boot);
            opts.caps.push(for_inner);
            let o = sys.spawn(supervisor(outer).unwrap(), opts).await?;
            loop {
                let m = sys.recv().await;
                if m.body.as_value().and_then(Value::as_str) == Some("term") {
                    sys.term(o.cap).await?;
                    return Ok(());
                }
            }
        }),
        BootOpts::default(),
    )
    .unwrap();
    k.run();
    // Start order is spawn order: the outer supervisor does not wait for the inner one to
    // start its own children before it starts z.
    assert_eq!(spawn_order(&k), ["supervisor", "supervisor", "z", "x", "y"]);
    // A crash deep in the tree is handled by the inner supervisor alone.
    poke(&k, pid_of(&k, "x"), "crash");
    assert_eq!(
        spawn_order(&k),
        ["supervisor", "supervisor", "z", "x", "y", "x"]
    );
    assert_eq!(live(&k, "supervisor").len(), 2);
    // Stopping the outer one stops z, then kills the inner one, whose scope takes x and y.
    let (x, y) = (pid_of(&k, "x"), pid_of(&k, "y"));
    poke(&k, Pid::INIT, "term");
    assert_eq!(exit_of(&k, x), Some(ExitReason::Shutdown));
    assert_eq!(exit_of(&k, y), Some(ExitReason::Shutdown));
    assert!(k.ps().is_empty(), "left: {:?}", alive(&k));
}

#[test]
fn the_same_supervision_scenario_gives_the_same_trace() {
    let hash = || {
        let spec = SupervisorSpec::new(Strategy::RestForOne)
            .backoff(Backoff {
                base_ms: 50,
                max_ms: 200,
                stable_ms: 1_000,
            })
            .child(ChildSpec::new("a", worker("a")))
            .child(ChildSpec::new(
                "b",
                scripted(
                    "b",
                    vec![Act::Crash, Act::Crash, Act::CrashAfter(30)],
                    counter(),
                ),
            ))
            .child(ChildSpec::new("c", worker("c")).shutdown(Shutdown::Timeout(20)));
        let run = SupRun::start(spec, Quota::default());
        run.crash("b");
        poke(&run.k, run.init, "term");
        (run.k.trace_hash(), run.k.now(), run.exit())
    };
    let first = hash();
    assert_eq!(first.2, Some(ExitReason::Normal));
    assert_eq!(first, hash());
}

#[test]
fn the_supervisor_restarts_and_stops_on_a_threaded_kernel_too() {
    let starts = counter();
    let st = starts.clone();
    let k = Kernel::new(KernelConfig::threads(2));
    let init_pid = k
        .boot(
            init(move |sys, boot| {
                let st = st.clone();
                async move {
                    let spec = SupervisorSpec::new(Strategy::OneForAll)
                        .backoff(Backoff {
                            base_ms: 5,
                            max_ms: 5,
                            stable_ms: 1_000,
                        })
                        .child(ChildSpec::new("a", worker("a")))
                        .child(ChildSpec::new(
                            "flappy",
                            scripted("flappy", vec![Act::Crash, Act::Crash], st.clone()),
                        ));
                    let sup = sys
                        .spawn(supervisor(spec).unwrap(), with_spawn(&sys, &boot))
                        .await?;
                    while st.load(std::sync::atomic::Ordering::SeqCst) < 3 {
                        sys.sleep(1).await;
                    }
                    sys.term(sup.cap).await?;
                    assert_eq!(sys.waitpid(sup.cap).await?, ExitReason::Normal);
                    Ok(())
                }
            }),
            BootOpts::default(),
        )
        .unwrap();
    assert_eq!(k.wait_exit(init_pid), Ok(ExitReason::Normal));
    assert_eq!(starts.load(std::sync::atomic::Ordering::SeqCst), 3);
    // Every process the supervisor started is gone (init was the last to exit).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !k.ps().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(k.ps().is_empty(), "left: {:?}", alive(&k));
    k.shutdown(ExitReason::Shutdown);
}

/// A child that acknowledges its start after `ms` of kernel time (never, for `None`), then
/// parks until killed.
fn slow_starter(ms: Option<u64>) -> KImage {
    Image::new("starter", move |sys: Sys, _| async move {
        if let Some(ms) = ms {
            sys.sleep(ms).await;
            sys.init_ack(Value::Unit);
        }
        loop {
            let _ = sys.recv().await;
        }
    })
}

#[test]
fn ordered_start_waits_for_each_childs_acknowledgement() {
    let k = det();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(ChildSpec::new("a", slow_starter(Some(10)).renamed("a")).start_ack(100))
        .child(ChildSpec::new("b", slow_starter(Some(3)).renamed("b")).start_ack(100))
        .child(ChildSpec::new("c", worker("c")));
    let img = supervisor(spec).unwrap();
    k.boot(
        init(move |sys, boot| {
            let img = img.clone();
            async move {
                // init stays alive: the supervisor's spawn cap is derived from init's.
                let s = sys.spawn(img, with_spawn(&sys, &boot)).await?;
                sys.waitpid(s.cap).await?;
                Ok(())
            }
        }),
        BootOpts::default(),
    )
    .unwrap();
    k.run_for(1_000);
    // b is spawned only once a has acknowledged (t=10), c once b has (t=13).
    assert_eq!(spawns(&k, "a")[0].0, 0);
    assert_eq!(spawns(&k, "b")[0].0, 10);
    assert_eq!(spawns(&k, "c")[0].0, 13);
}

#[test]
fn a_child_that_never_acknowledges_fails_the_start_at_its_timeout() {
    let k = det();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(ChildSpec::new("a", worker("a")))
        .child(ChildSpec::new("mute", slow_starter(None).renamed("mute")).start_ack(50))
        .child(ChildSpec::new("c", worker("c")));
    let sup_pid: Log<Pid> = log();
    let sp = sup_pid.clone();
    let img = supervisor(spec).unwrap();
    k.boot(
        init(move |sys, boot| {
            let (img, sp) = (img.clone(), sp.clone());
            async move {
                let s = sys.spawn(img, with_spawn(&sys, &boot)).await?;
                push(&sp, s.pid);
                sys.waitpid(s.cap).await?;
                Ok(())
            }
        }),
        BootOpts::default(),
    )
    .unwrap();
    k.run_for(1_000);
    let sup = snapshot(&sup_pid)[0];
    let (t, _, reason) = exits(&k)
        .into_iter()
        .find(|(_, p, _)| *p == sup)
        .expect("the supervisor gave up");
    assert_eq!(t, 50);
    assert!(
        matches!(&reason, ExitReason::Fault { error } if error.contains("mute") && error.contains("timed out")),
        "{reason:?}"
    );
    assert!(spawns(&k, "c").is_empty(), "nothing after the failed start");
    assert!(live(&k, "a").is_empty(), "the started ones were stopped");
}
