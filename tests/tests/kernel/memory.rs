//! Context memory through the syscalls: paging thresholds and the summary segment, recall and
//! re-paging, pinned overflow as a `mem` quota exit, `inspect`, and snapshot → restore into a
//! smaller ceiling.

use crate::util::*;
use agentos_abi::*;
use agentos_kernel::snapshot::{Snapshot, SnapshotError};
use agentos_kernel::*;
use std::sync::{Arc, Mutex};

fn with_mem(mem: u64) -> SpawnOpts {
    SpawnOpts {
        quota: Quota {
            mem: Some(mem),
            ..Quota::default()
        },
        ..SpawnOpts::default()
    }
}

fn note(i: u64, topic: &str) -> Value {
    Value::Str(format!("note {i} about {topic}"))
}

const TOPICS: [&str; 5] = ["apples", "bridges", "compilers", "dolphins", "estuaries"];

#[test]
fn paging_keeps_resident_tokens_between_sixty_and_eighty_percent_with_a_summary() {
    let seen: Arc<Mutex<Vec<(u64, usize, bool)>>> = Arc::default();
    let s2 = seen.clone();
    let k = det(1);
    let img = init(move |sys, _| {
        let seen = s2.clone();
        async move {
            let child = image("mem", move |sys: Sys, _| {
                let seen = seen.clone();
                async move {
                    for i in 0..30 {
                        sys.remember(
                            note(i, TOPICS[i as usize % 5]),
                            RememberOpts {
                                tokens: Some(10),
                                pin: false,
                            },
                        )
                        .await?;
                        let ws = sys.working_set();
                        let size: u64 = ws.iter().map(|s| s.tokens).sum();
                        seen.lock()
                            .unwrap()
                            .push((size, ws.len(), ws.iter().any(|s| s.summary)));
                    }
                    Ok(())
                }
            });
            let c = sys.spawn(child, with_mem(100)).await?;
            assert_eq!(sys.waitpid(c.cap).await?, ExitReason::Normal);
            Ok(())
        }
    });
    assert_eq!(boot_and_wait(&k, img), ExitReason::Normal);
    let seen = seen.lock().unwrap().clone();
    // Up to 80 tokens nothing pages; the 9th segment (90 > 80) triggers paging down to ≤ 60.
    assert_eq!(seen[7], (80, 8, false));
    let (size, _, summary) = seen[8];
    assert!(size <= 60 + 48, "paged down (summary counted): {size}");
    assert!(summary, "the pager wrote a summary segment");
    assert!(
        seen.iter().all(|(s, _, _)| *s <= 100),
        "never above the ceiling"
    );
}

#[test]
fn recall_brings_paged_segments_back_and_pages_others_out() {
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let g2 = got.clone();
    let k = det(2);
    let img = init(move |sys, _| {
        let got = g2.clone();
        async move {
            let child = image("mem", move |sys: Sys, _| {
                let got = got.clone();
                async move {
                    let first = sys
                        .remember(
                            Value::Str("the zebra migrates across the serengeti".into()),
                            RememberOpts {
                                tokens: Some(10),
                                pin: false,
                            },
                        )
                        .await?;
                    for i in 0..40 {
                        sys.remember(
                            note(i, TOPICS[i as usize % 5]),
                            RememberOpts {
                                tokens: Some(10),
                                pin: false,
                            },
                        )
                        .await?;
                    }
                    assert!(
                        sys.working_set().iter().all(|s| s.id != first),
                        "the first note paged out"
                    );
                    let back = sys.recall("zebra serengeti", 2).await?;
                    assert_eq!(
                        back.first().map(|s| s.id),
                        Some(first),
                        "the obvious match ranks first"
                    );
                    assert!(
                        sys.working_set().iter().any(|s| s.id == first),
                        "recalled into the working set"
                    );
                    let size: u64 = sys.working_set().iter().map(|s| s.tokens).sum();
                    assert!(size <= 80, "re-paged after recall: {size}");
                    for s in back {
                        if let Value::Str(t) = s.body {
                            got.lock().unwrap().push(t);
                        }
                    }
                    assert!(sys.forget(first));
                    assert!(!sys.working_set().iter().any(|s| s.id == first));
                    Ok(())
                }
            });
            let c = sys.spawn(child, with_mem(100)).await?;
            assert_eq!(sys.waitpid(c.cap).await?, ExitReason::Normal);
            Ok(())
        }
    });
    assert_eq!(boot_and_wait(&k, img), ExitReason::Normal);
    assert!(got.lock().unwrap()[0].contains("zebra"));
}

#[test]
fn pinned_segments_that_overflow_the_ceiling_are_a_mem_quota_exit() {
    let k = det(3);
    let img = init(|sys, _| async move {
        let child = image("hog", |sys: Sys, _| async move {
            for i in 0..20 {
                sys.remember(
                    note(i, "pinned"),
                    RememberOpts {
                        tokens: Some(10),
                        pin: true,
                    },
                )
                .await?;
            }
            Ok(())
        });
        let c = sys.spawn(child, with_mem(50)).await?;
        let r = sys.waitpid(c.cap).await?;
        assert_eq!(
            r,
            ExitReason::Quota {
                resource: Meter::Mem
            }
        );
        Ok(())
    });
    assert_eq!(boot_and_wait(&k, img), ExitReason::Normal);
    assert!(k
        .metrics()
        .exits_by_reason
        .iter()
        .any(|(r, n)| r == "quota" && *n == 1));
}

#[test]
fn unpinning_lets_segments_page_and_inspect_shows_the_working_set() {
    let k = det(4);
    let pid_slot: Arc<Mutex<Option<Pid>>> = Arc::default();
    let p2 = pid_slot.clone();
    let img = init(move |sys, _| {
        let p2 = p2.clone();
        async move {
            let child = image("mem", |sys: Sys, _| async move {
                let a = sys
                    .remember(
                        Value::Str("keep me".into()),
                        RememberOpts {
                            tokens: Some(30),
                            pin: true,
                        },
                    )
                    .await?;
                sys.remember(
                    Value::Str("b".into()),
                    RememberOpts {
                        tokens: Some(30),
                        pin: false,
                    },
                )
                .await?;
                assert!(sys.pin(a, false));
                sys.recv().await; // parked: the host inspects
                Ok(())
            });
            let c = sys.spawn(child, with_mem(100)).await?;
            *p2.lock().unwrap() = Some(c.pid);
            sys.waitpid(c.cap).await?;
            Ok(())
        }
    });
    let init_pid = k.boot(img, BootOpts::default()).unwrap();
    k.run();
    let child = pid_slot.lock().unwrap().unwrap();
    let ws = k.inspect(child).expect("live process");
    assert_eq!(ws.len(), 2);
    assert_eq!(ws[0].body, Value::Str("keep me".into()));
    assert!(!ws[0].pinned);
    let stats = k.ps().into_iter().find(|p| p.pid == child).unwrap().mem;
    assert_eq!(
        (stats.resident, stats.size, stats.ceiling),
        (2, 60, Some(100))
    );
    k.deliver_external(child, Body::Empty).unwrap();
    assert_eq!(k.wait_exit(init_pid), Ok(ExitReason::Normal));
    assert_eq!(k.inspect(child), None);
}

/// A process that remembers its notes, then parks; on restore it reports its context size.
fn notebook(report: Arc<Mutex<Vec<(usize, u64, usize)>>>) -> KImage {
    image("notebook", move |sys: Sys, args| {
        let report = report.clone();
        async move {
            if args.get("restored").is_none() {
                for i in 0..8 {
                    sys.remember(
                        note(i, TOPICS[i as usize % 5]),
                        RememberOpts {
                            tokens: Some(10),
                            pin: i == 0,
                        },
                    )
                    .await?;
                }
            }
            let m = loop {
                let m = sys.recv().await;
                if !matches!(m.sys(), Some(SysMsg::Boot { .. })) {
                    break m;
                }
            };
            let ws = sys.working_set();
            report.lock().unwrap().push((
                ws.len(),
                ws.iter().map(|s| s.tokens).sum(),
                body_u64(&m.body).unwrap_or(0) as usize,
            ));
            Ok(())
        }
    })
}

#[test]
fn snapshot_round_trips_through_bytes_and_restores_into_a_smaller_ceiling() {
    let report: Arc<Mutex<Vec<(usize, u64, usize)>>> = Arc::default();
    let k = det(5);
    let nb = notebook(report.clone());
    let pid = k
        .boot(
            nb.clone(),
            BootOpts {
                quota: Quota {
                    mem: Some(200),
                    tokens: Some(500),
                    ..Quota::default()
                },
                args: Value::Map(vec![]),
                ..BootOpts::default()
            },
        )
        .unwrap();
    k.run();
    // The notebook is parked in recv: queue a message for the snapshot to carry across.
    k.deliver_external(pid, val(7u64)).unwrap();
    let snap = k.snapshot(pid).expect("snapshot");
    assert_eq!(snap.context.len(), 8);
    let bytes = snap.to_bytes().unwrap();
    let snap = Snapshot::from_bytes(&bytes).unwrap();
    assert_eq!(snap.account.tokens, Some(500));

    let k2 = det(6);
    let restored = Image::new("notebook", {
        let inner = notebook(report.clone());
        move |sys: Sys, _args| {
            inner.start(
                sys,
                Value::Map(vec![("restored".into(), Value::Bool(true))]),
            )
        }
    });
    let rp = k2
        .restore(
            snap,
            restored,
            RestoreOpts {
                mem: Some(50),
                ..RestoreOpts::default()
            },
        )
        .unwrap();
    let ws = k2.inspect(rp).unwrap();
    let size: u64 = ws.iter().map(|s| s.tokens).sum();
    assert!(size <= 50, "re-paged under the smaller ceiling: {size}");
    assert!(
        ws.iter().any(|s| s.pinned),
        "the pinned note stays resident"
    );
    assert_eq!(k2.wait_exit(rp), Ok(ExitReason::Normal));
    // The restored process found the carried message in its restored mailbox.
    let r = report.lock().unwrap().clone();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].2, 7);
    assert!(r[0].1 <= 50);
}

#[test]
fn a_snapshot_from_another_abi_version_is_refused_with_a_clear_error() {
    let k = det(7);
    let pid = k
        .boot(notebook(Arc::default()), BootOpts::default())
        .unwrap();
    k.run();
    let mut snap = k.snapshot(pid).unwrap();
    snap.abi = ABI_VERSION + 1;
    let bytes = snap.to_bytes().unwrap();
    let err = Snapshot::from_bytes(&bytes).unwrap_err();
    assert_eq!(
        err,
        SnapshotError::AbiMismatch {
            found: ABI_VERSION + 1,
            expected: ABI_VERSION
        }
    );
    assert!(err.to_string().contains("ABI mismatch"));
    let err = k
        .restore(snap, notebook(Arc::default()), RestoreOpts::default())
        .unwrap_err();
    assert!(matches!(err, SnapshotError::AbiMismatch { .. }));
}
