//! SIGSTOP/SIGCONT: a suspended process is never dispatched until resumed.

use crate::util::*;
use agentos_abi::*;
use agentos_kernel::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A worker that bumps `counter` and yields, `n` times.
fn spinner(n: u64, counter: Arc<AtomicU64>) -> KImage {
    image("spinner", move |sys: Sys, _| {
        let counter = counter.clone();
        async move {
            for _ in 0..n {
                counter.fetch_add(1, Ordering::SeqCst);
                sys.yield_now().await;
            }
            Ok(())
        }
    })
}

#[test]
fn a_suspended_process_does_not_run_until_resumed() {
    let w_count = Arc::new(AtomicU64::new(0));
    let b_count = Arc::new(AtomicU64::new(0));
    let seen: Log<(u64, u64, u64)> = log();
    let (wc, bc, s) = (w_count.clone(), b_count.clone(), seen.clone());
    let k = det(1);
    let init_pid = k
        .boot(
            init(move |sys, _| {
                let (wc, bc, s) = (wc.clone(), bc.clone(), s.clone());
                async move {
                    let w = sys
                        .spawn(spinner(200, wc.clone()), SpawnOpts::default())
                        .await?;
                    for _ in 0..5 {
                        sys.yield_now().await;
                    }
                    // Only the kill right may stop a process.
                    let weak = sys.derive(w.cap, Rights::SEND_MONITOR)?;
                    assert_eq!(
                        sys.suspend(weak).await,
                        Err(SysError::Cap {
                            op: "suspend",
                            err: CapError::Lacks(Right::Kill)
                        })
                    );
                    sys.suspend(w.cap).await?;
                    let at_stop = wc.load(Ordering::SeqCst);
                    // Other work runs to completion and virtual time passes meanwhile.
                    let b = sys
                        .spawn(spinner(50, bc.clone()), SpawnOpts::default())
                        .await?;
                    sys.waitpid(b.cap).await?;
                    sys.sleep(100).await;
                    s.lock().unwrap().push((
                        at_stop,
                        wc.load(Ordering::SeqCst),
                        bc.load(Ordering::SeqCst),
                    ));
                    // Wait for the host, then let the worker go.
                    let _ = sys.recv().await;
                    sys.resume(w.cap).await?;
                    assert_eq!(sys.waitpid(w.cap).await?, ExitReason::Normal);
                    Ok(())
                }
            }),
            BootOpts::default(),
        )
        .unwrap();
    let w = Pid(2);
    k.run();
    let (at_stop, after, b) = snapshot(&seen)[0];
    assert!(
        at_stop > 0 && at_stop < 200,
        "the worker ran a little before the stop"
    );
    assert_eq!(after, at_stop, "no progress while stopped");
    assert_eq!(b, 50, "the other process ran to completion");
    assert_eq!(w_count.load(Ordering::SeqCst), at_stop);
    let row = ps_row(&k, w).unwrap();
    assert!(row.stopped);
    assert!(k.now() >= 100);

    k.deliver_external(init_pid, Body::Empty).unwrap();
    assert_eq!(k.wait_exit(init_pid), Ok(ExitReason::Normal));
    assert_eq!(w_count.load(Ordering::SeqCst), 200);

    // The trace: Stop, then no dispatch of the worker, then Cont.
    let ev = events(&k);
    let stop = ev
        .iter()
        .position(|e| {
            e.kind
                == EventKind::Signal {
                    pid: w,
                    sig: Signal::Stop,
                }
        })
        .expect("a Stop signal event");
    let cont = ev
        .iter()
        .position(|e| {
            e.kind
                == EventKind::Signal {
                    pid: w,
                    sig: Signal::Cont,
                }
        })
        .expect("a Cont signal event");
    assert!(stop < cont);
    assert!(!ev[stop..cont]
        .iter()
        .any(|e| e.kind == EventKind::Sched { pid: w }));
    assert!(ev[cont..]
        .iter()
        .any(|e| e.kind == EventKind::Sched { pid: w }));
}

#[test]
fn a_timer_firing_while_stopped_does_not_dispatch_until_resume() {
    let woke: Log<u64> = log();
    let wk = woke.clone();
    let (_k, r) = run_init(init(move |sys, _| {
        let wk = wk.clone();
        async move {
            let wk2 = wk.clone();
            let nap = image("nap", move |sys: Sys, _| {
                let wk = wk2.clone();
                async move {
                    sys.sleep(10).await;
                    push(&wk, sys.now());
                    Ok(())
                }
            });
            let c = sys.spawn(nap, SpawnOpts::default()).await?;
            sys.yield_now().await; // it parks in sleep
            sys.suspend(c.cap).await?;
            sys.suspend(c.cap).await?; // idempotent
            sys.sleep(50).await; // its timer fired at t=10
            assert!(wk.lock().unwrap().is_empty(), "stopped: must not have run");
            sys.resume(c.cap).await?;
            sys.resume(c.cap).await?; // idempotent
            sys.waitpid(c.cap).await?;
            Ok(())
        }
    }));
    assert_eq!(r, ExitReason::Normal);
    assert_eq!(snapshot(&woke), vec![50]);
}

#[test]
fn a_stopped_process_can_still_be_killed() {
    let (k, r) = run_init(init(|sys, _| async move {
        let c = sys.spawn(until_term(), SpawnOpts::default()).await?;
        sys.suspend(c.cap).await?;
        sys.signal(
            c.cap,
            Some(ExitReason::Other {
                kind: "reaped".into(),
            }),
        )
        .await?;
        assert_eq!(
            sys.waitpid(c.cap).await?,
            ExitReason::Other {
                kind: "reaped".into()
            }
        );
        Ok(())
    }));
    assert_eq!(r, ExitReason::Normal);
    assert_eq!(k.metrics().processes, 0);
}
