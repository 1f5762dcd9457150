//! The nursery: the first failure cancels the siblings and `join` names it; spawn after join
//! is an error; the scope is cancelled when its owner dies.

use crate::*;
use agentos_abi::*;
use agentos_kernel::*;
use agentos_userland::{nursery, NurseryError};

/// A child that sleeps `ms` of kernel time, then ends as `act` says.
fn after(name: &str, ms: u64, fail: bool) -> KImage {
    let label = name.to_owned();
    Image::new(name, move |sys: Sys, _| {
        let label = label.clone();
        async move {
            sys.sleep(ms).await;
            if fail {
                Err(ExitReason::fault(format!("{label} failed")))
            } else {
                Ok(())
            }
        }
    })
}

/// Boot an owner (as init) running `f`, run the kernel until idle, return it.
fn owner<F, Fut>(f: F) -> Kernel
where
    F: Fn(Sys, SysMsg) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ProcResult> + Send + 'static,
{
    let k = det();
    k.boot(init(f), BootOpts::default()).unwrap();
    k.run();
    k
}

#[test]
fn the_first_failure_cancels_the_siblings_and_join_names_the_child() {
    let joined: Log<(u64, Result<(), NurseryError>)> = log();
    let j = joined.clone();
    let k = owner(move |sys, _| {
        let j = j.clone();
        async move {
            let mut n = nursery(&sys)
                .await
                .map_err(|e| ExitReason::fault(e.to_string()))?;
            for child in [worker("w1"), after("bad", 10, true), worker("w2")] {
                n.spawn(child, SpawnOpts::default()).await.unwrap();
            }
            let r = n.join().await;
            push(&j, (sys.now(), r));
            Ok(())
        }
    });
    let (at, r) = snapshot(&joined).pop().expect("join returned");
    let bad = spawns(&k, "bad")[0].1;
    assert_eq!(
        r,
        Err(NurseryError::ChildFailed {
            name: "bad".into(),
            pid: bad,
            reason: ExitReason::fault("bad failed"),
        })
    );
    assert_eq!(
        at, 10,
        "join returns as soon as the cancelled siblings are gone"
    );
    let msg = r.unwrap_err().to_string();
    assert!(
        msg.contains("\"bad\"") && msg.contains("bad failed"),
        "{msg}"
    );
    // Cancelled at the moment of the failure, newest first.
    let (w1, w2) = (spawns(&k, "w1")[0].1, spawns(&k, "w2")[0].1);
    let ex: Vec<(u64, Pid, ExitReason)> = exits(&k)
        .into_iter()
        .filter(|(_, p, _)| [w1, w2, bad].contains(p))
        .collect();
    assert_eq!(
        ex,
        vec![
            (10, bad, ExitReason::fault("bad failed")),
            (10, w2, ExitReason::Shutdown),
            (10, w1, ExitReason::Shutdown),
        ]
    );
    assert!(k.ps().is_empty(), "left: {:?}", alive(&k));
}

#[test]
fn join_succeeds_when_every_child_ends_normally() {
    let joined: Log<(u64, Result<(), NurseryError>)> = log();
    let j = joined.clone();
    let k = owner(move |sys, _| {
        let j = j.clone();
        async move {
            let mut n = nursery(&sys).await.unwrap();
            n.spawn(after("x", 5, false), SpawnOpts::default())
                .await
                .unwrap();
            n.spawn(after("y", 30, false), SpawnOpts::default())
                .await
                .unwrap();
            let r = n.join().await;
            push(&j, (sys.now(), r));
            // Joining again gives the same outcome.
            push(&j, (sys.now(), n.join().await));
            Ok(())
        }
    });
    assert_eq!(snapshot(&joined), vec![(30, Ok(())), (30, Ok(()))]);
    assert!(k.ps().is_empty());
}

#[test]
fn spawn_after_join_is_an_error() {
    let got: Log<Result<(), NurseryError>> = log();
    let g = got.clone();
    owner(move |sys, _| {
        let g = g.clone();
        async move {
            let mut n = nursery(&sys).await.unwrap();
            n.spawn(after("x", 1, false), SpawnOpts::default())
                .await
                .unwrap();
            n.join().await.unwrap();
            let r = n.spawn(worker("late"), SpawnOpts::default()).await;
            push(&g, r.map(|_| ()));
            Ok(())
        }
    });
    assert_eq!(snapshot(&got), vec![Err(NurseryError::Joined)]);
}

#[test]
fn the_scope_is_cancelled_when_its_owner_is_killed() {
    let k = det();
    k.boot(
        init(|sys, boot| async move {
            let own = Image::new("owner", |sys: Sys, _| async move {
                let mut n = nursery(&sys).await.unwrap();
                n.spawn(worker("w1"), SpawnOpts::default()).await.unwrap();
                n.spawn(worker("w2"), SpawnOpts::default()).await.unwrap();
                // Never joins: waits forever.
                let _ = n.join().await;
                Ok(())
            });
            let o = sys.spawn(own, with_spawn(&sys, &boot)).await?;
            sys.recv().await; // the host's go
            sys.signal(o.cap, None).await?;
            Ok(())
        }),
        BootOpts::default(),
    )
    .unwrap();
    k.run();
    let (w1, w2) = (pid_of(&k, "w1"), pid_of(&k, "w2"));
    poke(&k, Pid::INIT, "go");
    assert_eq!(exit_of(&k, w2), Some(ExitReason::Shutdown));
    assert_eq!(exit_of(&k, w1), Some(ExitReason::Shutdown));
    assert!(k.ps().is_empty(), "left: {:?}", alive(&k));
}

#[test]
fn an_owner_that_returns_without_joining_cancels_its_children() {
    let k = owner(|sys, _| async move {
        let mut n = nursery(&sys).await.unwrap();
        n.spawn(worker("w"), SpawnOpts::default()).await.unwrap();
        sys.sleep(50).await;
        Ok(())
    });
    let w = spawns(&k, "w")[0].1;
    assert_eq!(
        exits(&k).into_iter().find(|(_, p, _)| *p == w),
        Some((50, w, ExitReason::Shutdown))
    );
    assert!(k.ps().is_empty(), "left: {:?}", alive(&k));
}

#[test]
fn a_child_spawned_after_a_failure_is_cancelled_at_once() {
    let got: Log<Result<(), NurseryError>> = log();
    let g = got.clone();
    let k = owner(move |sys, _| {
        let g = g.clone();
        async move {
            let mut n = nursery(&sys).await.unwrap();
            n.spawn(after("bad", 1, true), SpawnOpts::default())
                .await
                .unwrap();
            sys.sleep(10).await; // the failure happened meanwhile
            n.spawn(worker("late"), SpawnOpts::default()).await.unwrap();
            push(&g, n.join().await);
            Ok(())
        }
    });
    let late = spawns(&k, "late")[0].1;
    assert_eq!(exit_of(&k, late), Some(ExitReason::Shutdown));
    let r = snapshot(&got).pop().unwrap();
    assert!(
        matches!(&r, Err(NurseryError::ChildFailed { name, .. }) if name == "bad"),
        "{r:?}"
    );
}

#[test]
fn join_leaves_messages_that_arrive_meanwhile_in_the_mailbox_in_order() {
    let kept: Log<Vec<String>> = log();
    let kc = kept.clone();
    owner(move |sys, _| {
        let kc = kc.clone();
        async move {
            let mut n = nursery(&sys).await.unwrap();
            let me = sys.self_cap();
            let pinger = Image::new("pinger", move |sys: Sys, _| async move {
                sys.send(me, Body::Value("ping".into()), SendOpts::default())
                    .await?;
                sys.sleep(5).await;
                Ok(())
            });
            let opts = SpawnOpts {
                caps: vec![me],
                ..SpawnOpts::default()
            };
            n.spawn(pinger, opts).await.unwrap();
            n.join().await.unwrap();
            let mut kept = Vec::new();
            while let Some(m) = sys.try_recv(Select::Any) {
                if let Some(s) = m.body.as_value().and_then(Value::as_str) {
                    kept.push(s.to_owned());
                }
            }
            push(&kc, kept);
            Ok(())
        }
    });
    assert_eq!(snapshot(&kept), vec![vec!["ping".to_owned()]]);
}

#[test]
fn a_nursery_childs_cap_works_until_the_join() {
    let got: Log<(Result<(), String>, Result<(), String>)> = log();
    let g = got.clone();
    owner(move |sys, _| {
        let g = g.clone();
        async move {
            let mut n = nursery(&sys).await.unwrap();
            let c = n.spawn(worker("w"), SpawnOpts::default()).await.unwrap();
            // Send, monitor and kill rights: ask it to exit, then watch it go.
            let before = sys
                .send(c.cap, Body::Value("exit".into()), SendOpts::default())
                .await
                .map_err(|e| e.to_string());
            let waited = sys
                .waitpid(c.cap)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
            n.join().await.unwrap();
            push(&g, (before, waited));
            Ok(())
        }
    });
    assert_eq!(snapshot(&got), vec![(Ok(()), Ok(()))]);
}
