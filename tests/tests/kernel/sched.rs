//! Scheduling: priority, then earliest deadline, then FIFO; aging (boost = age/4, capped at
//! 8); deadlines that terminate, and `sched` re-arming them.

use crate::util::*;
use agentos_abi::*;
use agentos_kernel::*;

/// A child that logs `"{name}1"`, yields `rounds - 1` times logging `"{name}{k}"` after each,
/// then exits. Its name comes in its args.
fn recorder(rounds: u32, order: Log<String>) -> KImage {
    image("recorder", move |sys: Sys, args| {
        let order = order.clone();
        async move {
            let name = args.as_str().unwrap().to_owned();
            for k in 1..=rounds {
                if k > 1 {
                    sys.yield_now().await;
                }
                push(&order, format!("{name}{k}"));
            }
            Ok(())
        }
    })
}

/// Spawn one recorder per `(name, priority, deadline_ms)` from init (which then sleeps so it
/// never competes), run to completion and return the log.
fn dispatch_order(rounds: u32, specs: Vec<(&'static str, i32, Option<u64>)>) -> Vec<String> {
    let order: Log<String> = log();
    let o = order.clone();
    let (_k, r) = run_init(init(move |sys, _| {
        let (o, specs) = (o.clone(), specs.clone());
        async move {
            let mut kids = Vec::new();
            for (name, priority, deadline_ms) in specs {
                kids.push(
                    sys.spawn(
                        recorder(rounds, o.clone()),
                        SpawnOpts {
                            args: name.into(),
                            priority,
                            deadline_ms,
                            ..Default::default()
                        },
                    )
                    .await?,
                );
            }
            sys.sleep(1).await;
            for c in kids {
                assert_eq!(sys.waitpid(c.cap).await?, ExitReason::Normal);
            }
            Ok(())
        }
    }));
    assert_eq!(r, ExitReason::Normal);
    snapshot(&order)
}

#[test]
fn dispatch_order_is_priority_then_earliest_deadline_then_fifo() {
    let got = dispatch_order(
        1,
        vec![
            ("a", 0, None),
            ("b", 5, None),
            ("c", 0, Some(100)),
            ("d", 0, Some(50)),
            ("e", 5, Some(200)),
            ("f", 0, None),
            ("g", -1, None),
            ("h", 5, Some(100)),
        ],
    );
    assert_eq!(got, vec!["h1", "e1", "b1", "d1", "c1", "a1", "f1", "g1"]);
}

#[test]
fn equal_processes_round_robin_in_fifo_order_across_yields() {
    let got = dispatch_order(2, vec![("a", 0, None), ("b", 0, None), ("c", 0, None)]);
    assert_eq!(got, vec!["a1", "b1", "c1", "a2", "b2", "c2"]);
}

#[test]
fn a_higher_priority_process_keeps_the_cpu_across_its_yields() {
    let got = dispatch_order(2, vec![("l", 0, None), ("h", 5, None), ("m", 0, None)]);
    assert_eq!(got, vec!["h1", "h2", "l1", "m1", "l2", "m2"]);
}

#[test]
fn an_earlier_deadline_wins_among_equal_priorities_across_yields() {
    let got = dispatch_order(2, vec![("late", 1, Some(500)), ("soon", 1, Some(20))]);
    assert_eq!(got, vec!["soon1", "soon2", "late1", "late2"]);
}

/// One low-priority recorder spawned first, then two high-priority workers of `rounds`
/// yields each; returns the log.
fn starvation_run(high: i32, rounds: u32) -> Vec<String> {
    dispatch_order(
        rounds,
        vec![("low", 0, None), ("x", high, None), ("y", high, None)],
    )
}

#[test]
fn aging_lets_a_low_priority_process_run_despite_a_stream_of_higher_priority_work() {
    let got = starvation_run(3, 40);
    let at = got.iter().position(|s| s == "low1").unwrap();
    // The low process ages one step per dispatch it loses; at age 12 its boost (12/4 = 3)
    // ties the workers' priority and FIFO (it has waited longest) picks it.
    assert_eq!(at, 12, "{got:?}");
    let highs_after = got[at..].iter().filter(|s| !s.starts_with("low")).count();
    assert!(highs_after > 40, "the workers were far from done: {got:?}");
}

#[test]
fn the_aging_boost_is_capped_at_eight() {
    // A gap of 9 cannot be closed by aging: the low process waits for all the work.
    let got = starvation_run(9, 30);
    assert_eq!(got.iter().position(|s| s == "low1"), Some(60), "{got:?}");
    // A gap of exactly 8 is closed at age 32.
    let got = starvation_run(8, 30);
    assert_eq!(got.iter().position(|s| s == "low1"), Some(32), "{got:?}");
}

// ---- deadlines ----------------------------------------------------------------------------

fn sleeper(ms: u64, sched: Option<SchedOpts>) -> KImage {
    image("sleeper", move |sys: Sys, _| async move {
        if let Some(o) = sched {
            sys.sched(o);
        }
        sys.sleep(ms).await;
        Ok(())
    })
}

/// Spawn one sleeper with `deadline_ms`; return `(reason, exit time)`.
fn deadline_case(deadline_ms: u64, sleep: u64, sched: Option<SchedOpts>) -> (ExitReason, u64) {
    let (k, r) = run_init(init(move |sys, _| async move {
        let c = sys
            .spawn(
                sleeper(sleep, sched),
                SpawnOpts {
                    deadline_ms: Some(deadline_ms),
                    ..Default::default()
                },
            )
            .await?;
        sys.waitpid(c.cap).await?;
        Ok(())
    }));
    assert_eq!(r, ExitReason::Normal);
    let child = Pid(2);
    (exit_of(&k, child).unwrap(), exit_ts(&k, child).unwrap())
}

#[test]
fn a_child_still_running_at_its_deadline_is_terminated_with_deadline() {
    assert_eq!(deadline_case(10, 100, None), (ExitReason::Deadline, 10));
}

#[test]
fn a_child_finishing_before_its_deadline_exits_normally() {
    assert_eq!(deadline_case(100, 10, None), (ExitReason::Normal, 10));
}

#[test]
fn sched_rearms_the_deadline_later_and_the_old_one_is_void() {
    let later = SchedOpts {
        deadline_ms: Some(200),
        ..Default::default()
    };
    assert_eq!(deadline_case(10, 50, Some(later)), (ExitReason::Normal, 50));
}

#[test]
fn sched_rearms_the_deadline_sooner() {
    let sooner = SchedOpts {
        deadline_ms: Some(5),
        ..Default::default()
    };
    assert_eq!(
        deadline_case(100, 50, Some(sooner)),
        (ExitReason::Deadline, 5)
    );
}

#[test]
fn sched_can_arm_a_deadline_on_a_process_that_had_none() {
    let got: Log<Option<u64>> = log();
    let g = got.clone();
    let k = det(1);
    let pid = k
        .boot(
            init(move |sys, _| {
                let g = g.clone();
                async move {
                    sys.sleep(3).await;
                    sys.sched(SchedOpts {
                        priority: Some(2),
                        deadline_ms: Some(20),
                    });
                    push(&g, Some(sys.now()));
                    sys.sleep(100).await;
                    push(&g, None);
                    Ok(())
                }
            }),
            BootOpts::default(),
        )
        .unwrap();
    assert_eq!(k.wait_exit(pid), Ok(ExitReason::Deadline));
    assert_eq!(snapshot(&got), vec![Some(3)]);
    assert_eq!(exit_ts(&k, pid), Some(23));
}

#[test]
fn ps_reports_priority_and_absolute_deadline() {
    let k = det(1);
    let pid = k
        .boot(
            init(|sys, _| async move {
                sys.spawn(
                    until_term(),
                    SpawnOpts {
                        priority: 4,
                        deadline_ms: Some(1000),
                        ..Default::default()
                    },
                )
                .await?;
                let _ = sys.recv().await;
                Ok(())
            }),
            BootOpts::default(),
        )
        .unwrap();
    // A second root process that dies at t=5 lets the host stop the scheduler there.
    let marker = k
        .boot(
            image("marker", |sys: Sys, _| async move {
                sys.sleep(5).await;
                Ok(())
            }),
            BootOpts::default(),
        )
        .unwrap();
    assert_eq!(marker, Pid(2));
    assert_eq!(k.wait_exit(marker), Ok(ExitReason::Normal));
    assert_eq!(k.now(), 5);
    let child = Pid(3);
    let row = ps_row(&k, child).unwrap();
    assert_eq!(row.priority, 4);
    assert_eq!(row.deadline, Some(1000));
    assert_eq!(row.status, "waiting");
    assert_eq!(row.parent, Some(pid));
    assert_eq!(ps_row(&k, pid).unwrap().priority, 0);
    assert_eq!(ps_row(&k, pid).unwrap().deadline, None);
    // Left alone, the deadline fires.
    k.run();
    assert_eq!(exit_of(&k, child), Some(ExitReason::Deadline));
    assert_eq!(exit_ts(&k, child), Some(1000));
    k.shutdown(ExitReason::Shutdown);
}
