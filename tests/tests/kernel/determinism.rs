//! Determinism: a program whose whole shape comes from the kernel's seeded RNG gives the same
//! trace hash every run for a seed, and different traces for different seeds. Plus the
//! multi-threaded scheduler running a large spawn tree to completion.

use crate::util::*;
use agentos_abi::*;
use agentos_kernel::*;
use std::collections::HashSet;

/// A random tree node: random priority, random naps, a random number of children that each
/// send a random number of values (and then `done`) back through a random-sized mailbox, and
/// an occasional abnormal exit.
fn chaos_node() -> KImage {
    image("chaos", |sys: Sys, args| async move {
        let depth = args.get("depth").and_then(Value::as_u64).unwrap();
        let parent = args.get("parent").and_then(Value::as_u64).map(CapRef);
        let rnd = |m: u64| sys.random() % m;
        sys.sched(SchedOpts {
            priority: Some(rnd(5) as i32 - 2),
            deadline_ms: None,
        });
        sys.sleep(rnd(20)).await;
        let kids = match depth {
            0 => 1 + rnd(3),
            1 | 2 => rnd(4),
            _ => 0,
        };
        let mut caps = Vec::new();
        for _ in 0..kids {
            let me = sys.self_cap();
            let mut give = vec![me];
            if depth + 1 < 3 {
                // The child will spawn too: delegate a spawn cap (found by kind).
                let own = args
                    .get("spawn")
                    .and_then(Value::as_u64)
                    .map(CapRef)
                    .unwrap();
                give.push(sys.derive(own, Right::Spawn.into())?);
            }
            let spawn_ref = give.get(1).map_or(0, |c| c.0);
            let c = sys
                .spawn(
                    chaos_node(),
                    SpawnOpts {
                        args: Value::Map(vec![
                            ("depth".into(), Value::U64(depth + 1)),
                            ("parent".into(), Value::U64(me.0)),
                            ("spawn".into(), Value::U64(spawn_ref)),
                        ]),
                        caps: give,
                        priority: rnd(7) as i32 - 3,
                        quota: Quota {
                            max_mailbox: (rnd(2) == 0).then(|| 1 + rnd(3) as u32),
                            ..Quota::default()
                        },
                        ..Default::default()
                    },
                )
                .await?;
            caps.push(c.cap);
            if rnd(3) == 0 {
                sys.yield_now().await;
            }
        }
        // Collect every child's values until each has said done.
        let mut done = 0;
        let mut sum = 0u64;
        while done < kids {
            let m = sys.recv().await;
            match m.body {
                Body::Value(Value::U64(v)) => sum = sum.wrapping_add(v),
                Body::Value(Value::Str(_)) => done += 1,
                _ => {}
            }
            if rnd(4) == 0 {
                sys.sleep(rnd(5)).await;
            }
        }
        for c in caps {
            sys.waitpid(c).await?;
        }
        if let Some(p) = parent {
            for _ in 0..rnd(4) {
                sys.send(p, val(rnd(1000) + sum), no_opts()).await?;
                if rnd(2) == 0 {
                    sys.sleep(rnd(3)).await;
                }
            }
            sys.send(p, val("done"), no_opts()).await?;
        }
        match rnd(10) {
            0 => Err(ExitReason::fault(format!("chaos {sum}"))),
            1 => match sys.exit(ExitReason::Other { kind: "odd".into() }).await {},
            _ => Ok(()),
        }
    })
}

fn chaos_root() -> KImage {
    init(|sys, boot| async move {
        let sp = child_spawn(&sys, &boot);
        chaos_node()
            .start(
                sys,
                Value::Map(vec![
                    ("depth".into(), Value::U64(0)),
                    ("spawn".into(), Value::U64(sp.0)),
                ]),
            )
            .await
    })
}

/// `(trace hash, events, final clock, spawns)` of one run.
fn chaos_run(seed: u64) -> (u64, u64, u64, u64) {
    let k = det(seed);
    let pid = k.boot(chaos_root(), BootOpts::default()).unwrap();
    let r = k.wait_exit(pid).expect("the chaos tree finishes");
    k.run();
    assert_eq!(
        k.metrics().processes,
        0,
        "seed {seed}: everything exited ({r:?})"
    );
    let m = k.metrics();
    (k.trace_hash(), m.events, k.now(), m.spawns)
}

#[test]
fn the_same_seed_gives_the_same_trace_hash_and_different_seeds_differ() {
    let mut hashes = HashSet::new();
    let mut shapes = HashSet::new();
    for seed in 0..60u64 {
        let a = chaos_run(seed);
        let b = chaos_run(seed);
        assert_eq!(a, b, "seed {seed} is not reproducible");
        assert!(a.3 >= 2, "seed {seed}: the tree spawned something");
        hashes.insert(a.0);
        shapes.insert((a.1, a.2, a.3));
    }
    assert!(
        hashes.len() >= 57,
        "only {} distinct hashes over 60 seeds",
        hashes.len()
    );
    assert!(
        shapes.len() > 10,
        "seeds should shape the run: {} shapes",
        shapes.len()
    );
}

#[test]
fn kernel_rng_is_seeded_and_the_host_and_processes_share_it() {
    let draw = |seed: u64| {
        let k = det(seed);
        let got: Log<u64> = log();
        let g = got.clone();
        let pid = k
            .boot(
                image("draw", move |sys: Sys, _| {
                    let g = g.clone();
                    async move {
                        for _ in 0..4 {
                            push(&g, sys.random());
                        }
                        Ok(())
                    }
                }),
                BootOpts::default(),
            )
            .unwrap();
        k.wait_exit(pid).unwrap();
        let mut v = snapshot(&got);
        v.push(k.random());
        v
    };
    assert_eq!(draw(7), draw(7));
    assert_ne!(draw(7), draw(8));
    // The kernel RNG is splitmix64 over the seed.
    let mut s = 7;
    let want: Vec<u64> = (0..5).map(|_| splitmix(&mut s)).collect();
    assert_eq!(draw(7), want);
}

// ---- multi-threaded mode ------------------------------------------------------------------

/// A tree node: `fanout[depth]` children each; reports its subtree size to its parent.
fn tree_node(fanout: &'static [u64]) -> KImage {
    image("tree", move |sys: Sys, args| async move {
        let depth = args.get("depth").and_then(Value::as_u64).unwrap() as usize;
        let parent = CapRef(args.get("parent").and_then(Value::as_u64).unwrap());
        let spawn = args.get("spawn").and_then(Value::as_u64).map(CapRef);
        let n = fanout.get(depth).copied().unwrap_or(0);
        let mut kids = Vec::new();
        for _ in 0..n {
            let me = sys.self_cap();
            let mut caps = vec![me];
            let mut a = vec![
                ("depth".into(), Value::U64(depth as u64 + 1)),
                ("parent".into(), Value::U64(me.0)),
            ];
            if fanout.get(depth + 1).is_some() {
                let sp = sys.derive(spawn.unwrap(), Right::Spawn.into())?;
                caps.push(sp);
                a.push(("spawn".into(), Value::U64(sp.0)));
            }
            let c = sys
                .spawn(
                    tree_node(fanout),
                    SpawnOpts {
                        args: Value::Map(a),
                        caps,
                        ..Default::default()
                    },
                )
                .await?;
            kids.push(c.cap);
        }
        let mut total = 1u64;
        for _ in 0..n {
            let m = sys.recv().await;
            total += body_u64(&m.body).expect("a subtree count");
        }
        for c in kids {
            let r = sys.waitpid(c).await?;
            if r != ExitReason::Normal {
                return Err(ExitReason::fault(format!("child ended {r:?}")));
            }
        }
        sys.send(parent, val(total), no_opts()).await?;
        Ok(())
    })
}

#[test]
fn threaded_kernel_runs_a_thousand_process_spawn_tree_to_completion() {
    // init spawns 10, each of those 9, each of those 10: 10 + 90 + 900 = 1000 processes.
    static FANOUT: [u64; 3] = [10, 9, 10];
    let k = Kernel::new(KernelConfig::threads(2));
    let total: Log<u64> = log();
    let t = total.clone();
    let pid = k
        .boot(
            init(move |sys, boot| {
                let t = t.clone();
                async move {
                    let mut kids = Vec::new();
                    for _ in 0..FANOUT[0] {
                        let me = sys.self_cap();
                        let sp = child_spawn(&sys, &boot);
                        let c = sys
                            .spawn(
                                tree_node(&FANOUT),
                                SpawnOpts {
                                    args: Value::Map(vec![
                                        ("depth".into(), Value::U64(1)),
                                        ("parent".into(), Value::U64(me.0)),
                                        ("spawn".into(), Value::U64(sp.0)),
                                    ]),
                                    caps: vec![me, sp],
                                    ..Default::default()
                                },
                            )
                            .await?;
                        kids.push(c.cap);
                    }
                    let mut sum = 0;
                    for _ in 0..FANOUT[0] {
                        sum += body_u64(&sys.recv().await.body).expect("a subtree count");
                    }
                    for c in kids {
                        assert_eq!(sys.waitpid(c).await?, ExitReason::Normal);
                    }
                    push(&t, sum);
                    Ok(())
                }
            }),
            BootOpts::default(),
        )
        .unwrap();
    assert_eq!(k.wait_exit(pid), Ok(ExitReason::Normal));
    assert_eq!(snapshot(&total), vec![1000]);
    let m = k.metrics();
    assert_eq!(m.spawns, 1001);
    assert_eq!(m.exits, 1001);
    assert_eq!(m.processes, 0);
    assert_eq!(
        m.exits_by_reason,
        vec![("normal".to_owned(), 1001)],
        "every process exited normally"
    );
    k.shutdown(ExitReason::Shutdown);
    assert_eq!(k.cap_count(), 0);
}
