//! Timed and selective receive, mailbox introspection, demonitor, acknowledged start, and the
//! things a program could not see or say before (cap inspection, named grants, a forgotten
//! exit).

use crate::util::*;
use agentos_abi::*;
use agentos_kernel::*;
use std::time::{Duration, Instant};

/// Send `v` (with an optional correlation id) to yourself.
async fn to_self(sys: &Sys, v: u64, corr: Option<u64>) {
    let me = sys.self_cap();
    let opts = SendOpts {
        corr,
        ..SendOpts::default()
    };
    sys.send(me, val(v), opts).await.expect("send to self");
}

#[test]
fn a_receive_timeout_fires_on_the_virtual_clock_without_wall_time_passing() {
    let seen: Log<(bool, u64)> = log();
    let s = seen.clone();
    let wall = Instant::now();
    let (k, r) = run_init(init(move |sys, _| {
        let s = s.clone();
        async move {
            // An hour of kernel time.
            let m = sys.recv_timeout(3_600_000).await;
            push(&s, (m.is_none(), sys.now()));
            Ok(())
        }
    }));
    assert_eq!(r, ExitReason::Normal);
    assert_eq!(snapshot(&seen), vec![(true, 3_600_000)]);
    assert!(
        wall.elapsed() < Duration::from_secs(5),
        "no wall time waited"
    );
    assert_eq!(k.now(), 3_600_000);
}

#[test]
fn a_message_before_the_deadline_wins_and_the_stale_timer_does_not_move_the_clock() {
    let seen: Log<(u64, u64)> = log();
    let s = seen.clone();
    let (k, r) = run_init(init(move |sys, _| {
        let s = s.clone();
        async move {
            let me = sys.self_cap();
            let sender = image("late", |sys: Sys, args| async move {
                sys.sleep(10).await;
                let to = sys.grant("to").expect("named grant");
                assert_eq!(args, Value::Unit, "no raw cap numbers in args");
                sys.send(to, val(42u64), no_opts()).await?;
                Ok(())
            });
            let opts = SpawnOpts {
                grants: vec![("to".into(), me)],
                ..SpawnOpts::default()
            };
            sys.spawn(sender, opts).await?;
            let m = sys
                .recv_timeout(1_000)
                .await
                .expect("arrives before the deadline");
            push(&s, (body_u64(&m.body).unwrap(), sys.now()));
            Ok(())
        }
    }));
    assert_eq!(r, ExitReason::Normal);
    assert_eq!(snapshot(&seen), vec![(42, 10)]);
    // The answered receive's timer was dropped, not fired: the clock never went to 1000.
    assert_eq!(k.now(), 10);
}

#[test]
fn selective_receive_takes_the_correlated_message_and_keeps_the_rest_in_order() {
    let seen: Log<u64> = log();
    let s = seen.clone();
    let (_k, r) = run_init(init(move |sys, _| {
        let s = s.clone();
        async move {
            to_self(&sys, 1, None).await;
            to_self(&sys, 2, Some(7)).await;
            to_self(&sys, 3, None).await;
            to_self(&sys, 4, Some(7)).await;
            assert_eq!(sys.mailbox_len(), 4);
            let m = sys.recv_until(Select::Corr(7), None).await.unwrap();
            push(&s, body_u64(&m.body).unwrap());
            // Nothing matches: times out, and takes nothing.
            let at = sys.now() + 5;
            assert!(sys.recv_until(Select::Corr(99), Some(at)).await.is_none());
            assert_eq!(sys.mailbox_len(), 3);
            for _ in 0..3 {
                let m = sys.recv().await;
                push(&s, body_u64(&m.body).unwrap());
            }
            Ok(())
        }
    }));
    assert_eq!(r, ExitReason::Normal);
    assert_eq!(snapshot(&seen), vec![2, 1, 3, 4]);
}

#[test]
fn a_predicate_receive_waits_for_a_match_and_keeps_the_rest_in_order() {
    let seen: Log<u64> = log();
    let s = seen.clone();
    let (_k, r) = run_init(init(move |sys, _| {
        let s = s.clone();
        async move {
            let me = sys.self_cap();
            for v in [1u64, 2, 3] {
                to_self(&sys, v, None).await;
            }
            // The match (10) comes later, from another process, after two more non-matches.
            let late = image("late", |sys: Sys, _| async move {
                let to = sys.grant("to").unwrap();
                for v in [4u64, 5, 10, 6] {
                    sys.sleep(1).await;
                    sys.send(to, val(v), no_opts()).await?;
                }
                Ok(())
            });
            let opts = SpawnOpts {
                grants: vec![("to".into(), me)],
                ..SpawnOpts::default()
            };
            sys.spawn(late, opts).await?;
            let mut judged = 0;
            let m = sys
                .recv_where(
                    |m| {
                        judged += 1;
                        body_u64(&m.body) == Some(10)
                    },
                    None,
                )
                .await
                .unwrap();
            push(&s, body_u64(&m.body).unwrap());
            // Each message was offered to the predicate once.
            assert_eq!(judged, 6);
            sys.sleep(5).await;
            while let Some(m) = sys.try_recv(Select::Any) {
                push(&s, body_u64(&m.body).unwrap());
            }
            assert_eq!(sys.mailbox_len(), 0);
            // A predicate receive with a deadline and nothing matching gives up.
            to_self(&sys, 1, None).await;
            let at = sys.now() + 3;
            assert!(sys.recv_where(|_| false, Some(at)).await.is_none());
            assert_eq!(sys.mailbox_len(), 1);
            Ok(())
        }
    }));
    assert_eq!(r, ExitReason::Normal);
    assert_eq!(snapshot(&seen), vec![10, 1, 2, 3, 4, 5, 6]);
}

#[test]
fn demonitor_with_flush_leaves_no_stale_down() {
    let (_k, r) = run_init(init(|sys, _| async move {
        // A monitor that already fired: its down is queued; flush removes exactly it.
        let quick = sys.spawn(exits_with(), SpawnOpts::default()).await?;
        let mref = sys.monitor(quick.cap).await?;
        let other = sys.monitor(quick.cap).await?;
        assert_ne!(other, mref, "each monitor has its own reference");
        sys.sleep(1).await;
        assert_eq!(sys.mailbox_len(), 2, "and its own down");
        assert!(!sys.demonitor(mref, true), "it had fired already");
        assert_eq!(sys.mailbox_len(), 1, "flush removed exactly its down");
        let left = sys.try_recv(Select::Any).unwrap();
        assert_eq!(left.corr, Some(other.0));
        // A live monitor stopped before the death: no down ever arrives.
        let slow = sys.spawn(until_term(), SpawnOpts::default()).await?;
        let mref = sys.monitor(slow.cap).await?;
        assert!(sys.demonitor(mref, false));
        assert!(!sys.demonitor(mref, false), "only once");
        sys.signal(slow.cap, None).await?;
        assert!(sys.recv_timeout(100).await.is_none());
        // A down carries its monitor's ref as the correlation id.
        let third = sys.spawn(until_term(), SpawnOpts::default()).await?;
        let mref = sys.monitor(third.cap).await?;
        sys.signal(third.cap, None).await?;
        let down = sys.recv_until(Select::Down(third.pid), None).await.unwrap();
        assert_eq!(down.corr, Some(mref.0));
        Ok(())
    }));
    assert_eq!(r, ExitReason::Normal);
}

#[test]
fn await_start_returns_the_ack_a_death_or_a_timeout() {
    let (_k, r) = run_init(init(|sys, _| async move {
        let acker = image("acker", |sys: Sys, _| async move {
            sys.sleep(5).await;
            sys.init_ack(Value::from("ready"));
            sys.init_ack(Value::from("again")); // only the first counts
            let _ = sys.recv().await;
            Ok(())
        });
        let a = sys.spawn(acker, SpawnOpts::default()).await?;
        assert_eq!(
            sys.await_start(a.cap, Some(sys.now() + 100)).await?,
            Started::Acked(Value::from("ready"))
        );
        assert_eq!(sys.now(), 5);
        // Asking again after the ack answers at once.
        assert_eq!(
            sys.await_start(a.cap, None).await?,
            Started::Acked(Value::from("ready"))
        );
        let dies = sys
            .spawn(
                exits_with(),
                SpawnOpts {
                    args: Value::from("fault:boom"),
                    ..SpawnOpts::default()
                },
            )
            .await?;
        assert_eq!(
            sys.await_start(dies.cap, None).await?,
            Started::Exited(ExitReason::fault("boom"))
        );
        let mute = sys.spawn(until_term(), SpawnOpts::default()).await?;
        let t0 = sys.now();
        assert_eq!(
            sys.await_start(mute.cap, Some(t0 + 50)).await,
            Err(SysError::Timeout)
        );
        assert_eq!(sys.now(), t0 + 50);
        sys.signal(mute.cap, None).await?;
        sys.signal(a.cap, None).await?;
        Ok(())
    }));
    assert_eq!(r, ExitReason::Normal);
}

#[test]
fn a_process_can_inspect_the_caps_it_holds() {
    let (_k, r) = run_init(init(|sys, boot| async move {
        let child = sys.spawn(until_term(), SpawnOpts::default()).await?;
        let info = sys.cap_info(child.cap)?;
        assert_eq!(info.resource, Resource::Process(child.pid));
        assert_eq!(info.rights, Rights::CHILD);
        assert_eq!(info.expires_at, None);
        let short = sys.attenuate(
            child.cap,
            Attenuation {
                rights: Some(Right::Send.into()),
                expires_in_ms: Some(30),
                scope: None,
            },
        )?;
        let info = sys.cap_info(short)?;
        assert_eq!(info.rights, Right::Send.into());
        assert_eq!(info.expires_at, Some(sys.now() + 30));
        let spawn = boot_spawn(&boot);
        assert_eq!(sys.cap_info(spawn)?.resource, Resource::Spawn);
        assert!(matches!(
            sys.cap_info(CapRef(0xdead_0000_0000)),
            Err(SysError::Cap {
                err: CapError::Invalid,
                ..
            })
        ));
        sys.signal(child.cap, None).await?;
        Ok(())
    }));
    assert_eq!(r, ExitReason::Normal);
}

#[test]
fn waitpid_on_a_process_the_reaped_cache_forgot_says_it_does_not_know() {
    let k = Kernel::new(KernelConfig {
        reaped_cap: 1,
        ..KernelConfig::deterministic(1)
    });
    let r = boot_and_wait(
        &k,
        init(|sys, _| async move {
            let first = sys.spawn(exits_with(), SpawnOpts::default()).await?;
            let second = sys.spawn(exits_with(), SpawnOpts::default()).await?;
            sys.sleep(1).await;
            assert_eq!(sys.waitpid(second.cap).await?, ExitReason::Normal);
            assert_eq!(
                sys.waitpid(first.cap).await,
                Err(SysError::Forgotten(first.pid))
            );
            Ok(())
        }),
    );
    assert_eq!(r, ExitReason::Normal);
}
