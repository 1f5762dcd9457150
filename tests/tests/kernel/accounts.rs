//! Accounts and quotas: kernel-enforced token kills (all-or-nothing), per-child budgets, the
//! concurrent `children` cap, wall time, and a property test over random account trees.

use crate::util::*;
use agentos_abi::*;
use agentos_kernel::*;
use proptest::prelude::*;
use std::sync::atomic::Ordering;
use std::sync::Arc;

fn llm_kernel(tokens_per_read: u64) -> (Kernel, Arc<TokenDriver>) {
    let k = det(1);
    let d = TokenDriver::llm(tokens_per_read);
    k.register_driver(d.clone()).unwrap();
    (k, d)
}

fn llm_boot(tokens: Option<u64>) -> BootOpts {
    BootOpts {
        grant: vec!["llm".into()],
        quota: Quota {
            tokens,
            ..Quota::default()
        },
        ..Default::default()
    }
}

#[test]
fn token_exhaustion_kills_with_quota_tokens_and_the_refused_charge_leaves_no_trace() {
    let (k, drv) = llm_kernel(40);
    let seen: Log<(u64, Option<u64>)> = log();
    let s = seen.clone();
    let pid = k
        .boot(
            init(move |sys, boot| {
                let s = s.clone();
                async move {
                    let dev = boot.device("llm").expect("granted at boot");
                    let h = sys.open(dev).await?;
                    loop {
                        // The kernel ends us inside a read; there is no error to ignore.
                        let v = sys.read(h, Value::Unit).await?;
                        assert_eq!(v, Value::U64(40));
                        push(&s, (sys.usage().tokens, sys.budget().tokens));
                    }
                }
            }),
            llm_boot(Some(100)),
        )
        .unwrap();
    assert_eq!(
        k.wait_exit(pid),
        Ok(ExitReason::Quota {
            resource: Meter::Tokens
        })
    );
    // Two reads went through; the third (40 > 20 left) was refused whole: 80 charged, not 120.
    assert_eq!(snapshot(&seen), vec![(40, Some(60)), (80, Some(20))]);
    assert_eq!(k.metrics().charged, vec![(Meter::Tokens, 80)]);
    let charges: Vec<u64> = events(&k)
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Charge {
                pid: p,
                meter: Meter::Tokens,
                n,
            } if p == pid => Some(n),
            _ => None,
        })
        .collect();
    assert_eq!(charges, vec![40, 40]);
    assert!(faults_of(&k, pid)
        .iter()
        .any(|e| e.contains("quota exceeded: tokens")));
    // The open handle was closed when the kernel killed its owner.
    k.run();
    assert_eq!(drv.closed.load(Ordering::SeqCst), 1);
    assert_eq!(k.caps_owned(pid), 0);
}

/// A child that opens the device cap in its args and reads until it is stopped.
fn reader() -> KImage {
    image("reader", |sys: Sys, args| async move {
        let dev = CapRef(args.as_u64().expect("device cap in args"));
        let h = sys.open(dev).await?;
        loop {
            sys.read(h, Value::Unit).await?;
        }
    })
}

#[test]
fn a_child_with_a_smaller_token_quota_is_killed_while_the_parent_survives() {
    let (k, _drv) = llm_kernel(40);
    let seen: Log<(ExitReason, u64, u64)> = log();
    let s = seen.clone();
    let pid = k
        .boot(
            init(move |sys, boot| {
                let s = s.clone();
                async move {
                    let dev = boot.device("llm").unwrap();
                    let lend =
                        sys.derive(dev, Rights::of(&[Right::Open, Right::Read, Right::Write]))?;
                    let c = sys
                        .spawn(
                            reader(),
                            SpawnOpts {
                                args: Value::U64(lend.0),
                                caps: vec![lend],
                                quota: Quota {
                                    tokens: Some(50),
                                    ..Quota::default()
                                },
                                ..Default::default()
                            },
                        )
                        .await?;
                    let reason = sys.waitpid(c.cap).await?;
                    let after_child = sys.usage().tokens;
                    // The parent's own budget is untouched by the child's limit.
                    let h = sys.open(dev).await?;
                    sys.read(h, Value::Unit).await?;
                    sys.read(h, Value::Unit).await?;
                    push(&s, (reason, after_child, sys.usage().tokens));
                    Ok(())
                }
            }),
            llm_boot(Some(1000)),
        )
        .unwrap();
    assert_eq!(k.wait_exit(pid), Ok(ExitReason::Normal));
    assert_eq!(
        snapshot(&seen),
        vec![(
            ExitReason::Quota {
                resource: Meter::Tokens
            },
            40,
            120
        )]
    );
    assert_eq!(k.metrics().charged, vec![(Meter::Tokens, 120)]);
}

#[test]
fn the_children_quota_caps_concurrent_spawns_and_frees_a_slot_on_exit() {
    let seen: Log<String> = log();
    let s = seen.clone();
    let k = det(1);
    let pid = k
        .boot(
            init(move |sys, _| {
                let s = s.clone();
                async move {
                    let a = sys.spawn(until_term(), SpawnOpts::default()).await?;
                    let b = sys.spawn(until_term(), SpawnOpts::default()).await?;
                    push(
                        &s,
                        format!(
                            "usage {} left {:?}",
                            sys.usage().children,
                            sys.budget().children
                        ),
                    );
                    let third = sys.spawn(until_term(), SpawnOpts::default()).await;
                    assert_eq!(third.err(), Some(SysError::Quota(Meter::Children)));
                    push(&s, "third refused".into());
                    sys.term(a.cap).await?;
                    sys.waitpid(a.cap).await?;
                    push(
                        &s,
                        format!(
                            "usage {} left {:?}",
                            sys.usage().children,
                            sys.budget().children
                        ),
                    );
                    let c = sys.spawn(until_term(), SpawnOpts::default()).await?;
                    push(&s, "respawned".into());
                    sys.term(b.cap).await?;
                    sys.term(c.cap).await?;
                    sys.waitpid(b.cap).await?;
                    sys.waitpid(c.cap).await?;
                    Ok(())
                }
            }),
            BootOpts {
                quota: Quota {
                    children: Some(2),
                    ..Quota::default()
                },
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(k.wait_exit(pid), Ok(ExitReason::Normal));
    assert_eq!(
        snapshot(&seen),
        vec![
            "usage 2 left Some(0)",
            "third refused",
            "usage 1 left Some(1)",
            "respawned"
        ]
    );
    assert!(faults_of(&k, pid)
        .iter()
        .any(|e| e.contains("spawn refused: quota exceeded: children")));
    assert_eq!(k.metrics().spawns, 4);
}

#[test]
fn the_children_quota_binds_the_whole_subtree() {
    // init allows 2 live descendants in all; a child that tries to spawn 3 gets 1 (itself
    // holds the other slot).
    let seen: Log<Vec<bool>> = log();
    let s = seen.clone();
    let k = det(1);
    let pid = k
        .boot(
            init(move |sys, boot| {
                let s = s.clone();
                async move {
                    let s2 = s.clone();
                    let mid = image("mid", move |sys: Sys, _| {
                        let s = s2.clone();
                        async move {
                            let mut ok = Vec::new();
                            let mut kids = Vec::new();
                            for _ in 0..3 {
                                match sys.spawn(until_term(), SpawnOpts::default()).await {
                                    Ok(c) => {
                                        ok.push(true);
                                        kids.push(c);
                                    }
                                    Err(SysError::Quota(Meter::Children)) => ok.push(false),
                                    Err(e) => return Err(e.into()),
                                }
                            }
                            push(&s, ok);
                            for c in kids {
                                sys.term(c.cap).await?;
                                sys.waitpid(c.cap).await?;
                            }
                            Ok(())
                        }
                    });
                    let m = sys
                        .spawn(mid, giving(vec![child_spawn(&sys, &boot)]))
                        .await?;
                    sys.waitpid(m.cap).await?;
                    Ok(())
                }
            }),
            BootOpts {
                quota: Quota {
                    children: Some(2),
                    ..Quota::default()
                },
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(k.wait_exit(pid), Ok(ExitReason::Normal));
    assert_eq!(snapshot(&seen), vec![vec![true, false, false]]);
}

#[test]
fn wall_time_quota_kills_a_sleeping_child_with_quota_wall_ms() {
    let seen: Log<(Pid, ExitReason)> = log();
    let s = seen.clone();
    let (k, r) = run_init(init(move |sys, _| {
        let s = s.clone();
        async move {
            let sleeper = |ms: u64| {
                image("sleeper", move |sys: Sys, _| async move {
                    sys.sleep(ms).await;
                    Ok(())
                })
            };
            let wall = Quota {
                wall_ms: Some(50),
                ..Quota::default()
            };
            let slow = sys
                .spawn(
                    sleeper(1000),
                    SpawnOpts {
                        quota: wall,
                        ..Default::default()
                    },
                )
                .await?;
            let quick = sys
                .spawn(
                    sleeper(10),
                    SpawnOpts {
                        quota: wall,
                        ..Default::default()
                    },
                )
                .await?;
            push(&s, (slow.pid, sys.waitpid(slow.cap).await?));
            push(&s, (quick.pid, sys.waitpid(quick.cap).await?));
            Ok(())
        }
    }));
    assert_eq!(r, ExitReason::Normal);
    let seen = snapshot(&seen);
    assert_eq!(
        seen[0].1,
        ExitReason::Quota {
            resource: Meter::WallMs
        }
    );
    assert_eq!(seen[1].1, ExitReason::Normal);
    let t = exit_ts(&k, seen[0].0).unwrap();
    assert!((50..=51).contains(&t), "killed just past its 50ms, at {t}");
    assert_eq!(exit_ts(&k, seen[1].0), Some(10));
}

// ---- property: random account trees -------------------------------------------------------

#[derive(Clone, Debug)]
struct PlanNode {
    parent: Option<usize>,
    quota: Option<u64>,
    charges: Vec<u64>,
}

#[derive(Clone, Debug)]
struct Plan {
    root_quota: Option<u64>,
    nodes: Vec<PlanNode>,
}

fn plan_strategy() -> impl Strategy<Value = Plan> {
    let node = (
        any::<prop::sample::Index>(),
        prop::option::weighted(0.6, 0u64..200),
        prop::collection::vec(1u64..60, 0..5),
    );
    (
        prop::option::weighted(0.5, 0u64..400),
        prop::collection::vec(node, 1..12),
    )
        .prop_map(|(root_quota, raw)| Plan {
            root_quota,
            nodes: raw
                .into_iter()
                .enumerate()
                .map(|(i, (pidx, quota, charges))| PlanNode {
                    parent: (i > 0).then(|| pidx.index(i)),
                    quota,
                    charges,
                })
                .collect(),
        })
}

/// The expected outcome of a plan: successful charges `(node, n)` in order, and which nodes
/// were killed. Execution is a sequential DFS: each node charges, then spawns and waits for
/// its children in index order.
fn model(plan: &Plan) -> (Vec<(usize, u64)>, Vec<bool>) {
    let n = plan.nodes.len();
    let mut rem: Vec<Option<u64>> = plan.nodes.iter().map(|p| p.quota).collect();
    let mut root = plan.root_quota;
    let mut ok = Vec::new();
    let mut killed = vec![false; n];
    fn chain(plan: &Plan, mut i: usize) -> Vec<usize> {
        let mut v = vec![i];
        while let Some(p) = plan.nodes[i].parent {
            v.push(p);
            i = p;
        }
        v
    }
    fn visit(
        plan: &Plan,
        i: usize,
        rem: &mut Vec<Option<u64>>,
        root: &mut Option<u64>,
        ok: &mut Vec<(usize, u64)>,
        killed: &mut Vec<bool>,
    ) {
        let ch = chain(plan, i);
        for &c in &plan.nodes[i].charges {
            let fits =
                ch.iter().all(|&a| rem[a].is_none_or(|r| c <= r)) && root.is_none_or(|r| c <= r);
            if !fits {
                killed[i] = true;
                return;
            }
            for &a in &ch {
                if let Some(r) = rem[a].as_mut() {
                    *r -= c;
                }
            }
            if let Some(r) = root.as_mut() {
                *r -= c;
            }
            ok.push((i, c));
        }
        for j in 0..plan.nodes.len() {
            if plan.nodes[j].parent == Some(i) {
                visit(plan, j, rem, root, ok, killed);
            }
        }
    }
    visit(plan, 0, &mut rem, &mut root, &mut ok, &mut killed);
    (ok, killed)
}

type Outcome = (Vec<(usize, u64)>, Vec<(usize, ExitReason)>, u64);

fn plan_node(
    plan: Arc<Plan>,
    charged: Log<(usize, u64)>,
    reasons: Log<(usize, ExitReason)>,
) -> KImage {
    image("node", move |sys: Sys, args| {
        let (plan, charged, reasons) = (plan.clone(), charged.clone(), reasons.clone());
        async move {
            let arg = |k: &str| args.get(k).and_then(Value::as_u64).unwrap();
            let (i, dev, spawn) = (arg("i") as usize, CapRef(arg("dev")), CapRef(arg("spawn")));
            let h = sys.open(dev).await?;
            for &c in &plan.nodes[i].charges {
                let v = sys.read(h, Value::U64(c)).await?;
                assert_eq!(v, Value::U64(c));
                push(&charged, (i, c));
            }
            for j in 0..plan.nodes.len() {
                if plan.nodes[j].parent != Some(i) {
                    continue;
                }
                let d = sys.derive(dev, Rights::of(&[Right::Open, Right::Read, Right::Write]))?;
                let sp = sys.derive(spawn, Right::Spawn.into())?;
                let c = sys
                    .spawn(
                        plan_node(plan.clone(), charged.clone(), reasons.clone()),
                        SpawnOpts {
                            args: Value::Map(vec![
                                ("i".into(), Value::U64(j as u64)),
                                ("dev".into(), Value::U64(d.0)),
                                ("spawn".into(), Value::U64(sp.0)),
                            ]),
                            caps: vec![d, sp],
                            quota: Quota {
                                tokens: plan.nodes[j].quota,
                                ..Quota::default()
                            },
                            ..Default::default()
                        },
                    )
                    .await?;
                let r = sys.waitpid(c.cap).await?;
                push(&reasons, (j, r));
            }
            Ok(())
        }
    })
}

fn run_plan(plan: &Plan) -> (Kernel, Outcome) {
    let (k, _drv) = llm_kernel(0);
    let root_quota = plan.root_quota;
    let plan = Arc::new(plan.clone());
    let charged: Log<(usize, u64)> = log();
    let reasons: Log<(usize, ExitReason)> = log();
    let root_usage: Log<u64> = log();
    let (c, r, u) = (charged.clone(), reasons.clone(), root_usage.clone());
    let pid = k
        .boot(
            init(move |sys, boot| {
                let (plan, c, r, u) = (plan.clone(), c.clone(), r.clone(), u.clone());
                async move {
                    let d = sys.derive(
                        boot.device("llm").unwrap(),
                        Rights::of(&[Right::Open, Right::Read, Right::Write]),
                    )?;
                    let sp = child_spawn(&sys, &boot);
                    let node0 = sys
                        .spawn(
                            plan_node(plan.clone(), c, r.clone()),
                            SpawnOpts {
                                args: Value::Map(vec![
                                    ("i".into(), Value::U64(0)),
                                    ("dev".into(), Value::U64(d.0)),
                                    ("spawn".into(), Value::U64(sp.0)),
                                ]),
                                caps: vec![d, sp],
                                quota: Quota {
                                    tokens: plan.nodes[0].quota,
                                    ..Quota::default()
                                },
                                ..Default::default()
                            },
                        )
                        .await?;
                    let reason = sys.waitpid(node0.cap).await?;
                    push(&r, (0, reason));
                    push(&u, sys.usage().tokens);
                    Ok(())
                }
            }),
            llm_boot(root_quota),
        )
        .unwrap();
    assert_eq!(k.wait_exit(pid), Ok(ExitReason::Normal));
    let out = (
        snapshot(&charged),
        snapshot(&reasons),
        snapshot(&root_usage)[0],
    );
    (k, out)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_account_trees_charge_exactly_the_successful_reads_within_every_quota(plan in plan_strategy()) {
        let (k, (charged, reasons, root_usage)) = run_plan(&plan);
        let (want_charged, want_killed) = model(&plan);
        let total: u64 = charged.iter().map(|(_, c)| c).sum();

        // Usage at the root is exactly the sum of successful charges, and the kernel agrees.
        prop_assert_eq!(root_usage, total);
        let metered = k.metrics().charged.iter().find(|(m, _)| *m == Meter::Tokens).map_or(0, |(_, v)| *v);
        prop_assert_eq!(metered, total);
        if let Some(q) = plan.root_quota {
            prop_assert!(total <= q);
        }
        // No account's subtree spend exceeds its quota.
        for (i, node) in plan.nodes.iter().enumerate() {
            if let Some(q) = node.quota {
                let sub: u64 = charged
                    .iter()
                    .filter(|(j, _)| {
                        let mut cur = Some(*j);
                        while let Some(c) = cur {
                            if c == i {
                                return true;
                            }
                            cur = plan.nodes[c].parent;
                        }
                        false
                    })
                    .map(|(_, c)| c)
                    .sum();
                prop_assert!(sub <= q, "node {} spent {} over quota {}", i, sub, q);
            }
        }
        // The exact sequence of successful charges and kills matches the model.
        prop_assert_eq!(&charged, &want_charged);
        for (i, r) in &reasons {
            let want = if want_killed[*i] {
                ExitReason::Quota { resource: Meter::Tokens }
            } else {
                ExitReason::Normal
            };
            prop_assert_eq!(r, &want, "node {}", i);
        }
    }
}
