//! Capabilities: caveat inheritance and expiry on the virtual clock, transitive revoke,
//! revoke-on-exit, ownership transfer with messages, and the spawn authority.

use crate::util::*;
use agentos_abi::*;
use agentos_kernel::*;

/// A process that logs the u64 of every value message until it gets `Term`.
fn logger(got: Log<u64>) -> KImage {
    image("logger", move |sys: Sys, _| {
        let got = got.clone();
        async move {
            loop {
                let m = sys.recv().await;
                match m.sys() {
                    Some(SysMsg::Term { .. }) => return Ok(()),
                    Some(_) => {}
                    None => push(&got, body_u64(&m.body).unwrap_or(u64::MAX)),
                }
            }
        }
    })
}

fn refused_err(r: Result<(), SendError>) -> Option<SysError> {
    match r {
        Err(SendError::Refused(_, e)) => Some(e),
        _ => None,
    }
}

fn invalid(op: &'static str) -> SysError {
    SysError::Cap {
        op,
        err: CapError::Invalid,
    }
}

fn not_held(op: &'static str) -> SysError {
    SysError::Cap {
        op,
        err: CapError::NotHeld,
    }
}

#[test]
fn expiry_caveats_are_inherited_and_expire_on_the_virtual_clock_while_the_root_lives() {
    let got: Log<u64> = log();
    let g = got.clone();
    let (_k, r) = run_init(init(move |sys, _| {
        let g = g.clone();
        async move {
            let t = sys.spawn(logger(g), SpawnOpts::default()).await?;
            let short = sys.attenuate(
                t.cap,
                Attenuation {
                    rights: Some(Right::Send.into()),
                    expires_in_ms: Some(100),
                    scope: None,
                },
            )?;
            // Re-deriving with a longer expiry cannot extend the inherited one.
            let longer = sys.attenuate(
                short,
                Attenuation {
                    rights: None,
                    expires_in_ms: Some(1000),
                    scope: None,
                },
            )?;
            // Nor can a derivation amplify rights.
            assert_eq!(
                sys.derive(short, Rights::SEND_MONITOR),
                Err(SysError::Cap {
                    op: "derive",
                    err: CapError::Amplify(Right::Monitor)
                })
            );
            sys.send(short, val(1u64), no_opts()).await?;
            sys.send(longer, val(2u64), no_opts()).await?;
            sys.sleep(100).await; // t = 100: still inside the caveat (inclusive)
            sys.send(short, val(3u64), no_opts()).await?;
            sys.send(longer, val(4u64), no_opts()).await?;
            sys.sleep(1).await; // t = 101: both dead
            assert_eq!(sys.now(), 101);
            for c in [short, longer] {
                let e = refused_err(sys.send(c, val(99u64), no_opts()).await);
                assert_eq!(e, Some(invalid("send")));
            }
            assert_eq!(
                sys.derive(longer, Right::Send.into()),
                Err(invalid("derive"))
            );
            // The root cap is untouched by its children's caveats.
            sys.send(t.cap, val(5u64), no_opts()).await?;
            sys.term(t.cap).await?;
            assert_eq!(sys.waitpid(t.cap).await?, ExitReason::Normal);
            Ok(())
        }
    }));
    assert_eq!(r, ExitReason::Normal);
    assert_eq!(snapshot(&got), vec![1, 2, 3, 4, 5]);
}

/// A holder: takes `caps[0]` of its first message as the cap to use, then for every `U64(n)`
/// command sends `n` through it and logs the outcome; exits on `Term`.
fn holder(outcomes: Log<(u64, Result<(), SysError>)>) -> KImage {
    image("holder", move |sys: Sys, _| {
        let outcomes = outcomes.clone();
        async move {
            let first = sys.recv().await;
            let cap = first.caps[0];
            let reply = first.caps[1];
            loop {
                let m = sys.recv().await;
                if let Some(SysMsg::Term { .. }) = m.sys() {
                    return Ok(());
                }
                let n = body_u64(&m.body).unwrap();
                let r = sys
                    .send(cap, val(n), no_opts())
                    .await
                    .map_err(SysError::from);
                push(&outcomes, (n, r));
                sys.send(reply, Body::Empty, no_opts()).await?;
            }
        }
    })
}

#[test]
fn revoking_a_root_kills_every_derived_cap_including_ones_held_by_others() {
    let got: Log<u64> = log();
    let outcomes: Log<(u64, Result<(), SysError>)> = log();
    let (g, o) = (got.clone(), outcomes.clone());
    let (k, r) = run_init(init(move |sys, _| {
        let (g, o) = (g.clone(), o.clone());
        async move {
            let g2 = g.clone();
            let named = image("named", move |sys: Sys, a| {
                let g = g2.clone();
                async move {
                    sys.register("target")?;
                    logger(g).start(sys, a).await
                }
            });
            let t = sys.spawn(named, SpawnOpts::default()).await?;
            let h = sys.spawn(holder(o), SpawnOpts::default()).await?;
            sys.yield_now().await;
            let root = sys.lookup("target").await.expect("registered");
            let d1 = sys.derive(root, Right::Send.into())?;
            let d2 = sys.derive(d1, Right::Send.into())?;
            let me = sys.self_cap();
            sys.send(h.cap, Body::Empty, with_caps(vec![d2, me]))
                .await?;
            sys.send(h.cap, val(1u64), no_opts()).await?;
            let _ = sys.recv().await; // holder done with 1
            sys.revoke(root)?;
            // Revoked: the root, the middle of the chain, and the holder's leaf.
            assert_eq!(
                refused_err(sys.send(root, val(9u64), no_opts()).await),
                Some(invalid("send"))
            );
            assert_eq!(
                refused_err(sys.send(d1, val(9u64), no_opts()).await),
                Some(invalid("send"))
            );
            assert_eq!(sys.revoke(root), Err(invalid("revoke")));
            sys.send(h.cap, val(2u64), no_opts()).await?;
            let _ = sys.recv().await; // holder done with 2
                                      // The process itself is fine: a fresh lookup reaches it.
            let fresh = sys.lookup("target").await.expect("still registered");
            sys.send(fresh, val(3u64), no_opts()).await?;
            sys.term(h.cap).await?;
            sys.term(t.cap).await?;
            sys.waitpid(h.cap).await?;
            sys.waitpid(t.cap).await?;
            Ok(())
        }
    }));
    assert_eq!(r, ExitReason::Normal);
    assert_eq!(snapshot(&got), vec![1, 3]);
    assert_eq!(
        snapshot(&outcomes),
        vec![(1, Ok(())), (2, Err(invalid("send")))]
    );
    assert_eq!(k.cap_count(), 0);
}

#[test]
fn revoking_a_middle_cap_spares_its_parent() {
    let got: Log<u64> = log();
    let g = got.clone();
    let (_k, r) = run_init(init(move |sys, _| {
        let g = g.clone();
        async move {
            let t = sys.spawn(logger(g), SpawnOpts::default()).await?;
            let d1 = sys.derive(t.cap, Rights::SEND_MONITOR)?;
            let d2 = sys.derive(d1, Right::Send.into())?;
            let d3 = sys.derive(d2, Right::Send.into())?;
            sys.revoke(d2)?;
            assert_eq!(
                refused_err(sys.send(d3, val(9u64), no_opts()).await),
                Some(invalid("send"))
            );
            sys.send(d1, val(1u64), no_opts()).await?;
            sys.send(t.cap, val(2u64), no_opts()).await?;
            sys.term(t.cap).await?;
            sys.waitpid(d1).await?;
            Ok(())
        }
    }));
    assert_eq!(r, ExitReason::Normal);
    assert_eq!(snapshot(&got), vec![1, 2]);
}

#[test]
fn exit_revokes_everything_the_process_owned_and_everything_derived_from_it() {
    let got: Log<u64> = log();
    let outcomes: Log<(u64, Result<(), SysError>)> = log();
    let (g, o) = (got.clone(), outcomes.clone());
    let k = det(1);
    let init_pid = k
        .boot(
            init(move |sys, _| {
                let (g, o) = (g.clone(), o.clone());
                async move {
                    let g2 = g.clone();
                    let named = image("named", move |sys: Sys, a| {
                        let g = g2.clone();
                        async move {
                            sys.register("target")?;
                            logger(g).start(sys, a).await
                        }
                    });
                    // target = 2, holder = 3, lender = 4.
                    let t = sys.spawn(named, SpawnOpts::default()).await?;
                    let h = sys.spawn(holder(o), SpawnOpts::default()).await?;
                    let to_holder = sys.derive(h.cap, Right::Send.into())?;
                    let me = sys.self_cap();
                    let lender = image("lender", |sys: Sys, args| async move {
                        let to_holder = CapRef(args.get("holder").unwrap().as_u64().unwrap());
                        let reply = CapRef(args.get("reply").unwrap().as_u64().unwrap());
                        let root = sys.lookup("target").await.expect("registered");
                        let lent = sys.derive(root, Right::Send.into())?;
                        sys.send(root, val(1u64), no_opts()).await?;
                        // Lend a derived cap (ownership moves) plus a way to reply to init.
                        sys.send(to_holder, Body::Empty, with_caps(vec![lent, reply]))
                            .await?;
                        Ok(())
                    });
                    let l = sys
                        .spawn(
                            lender,
                            SpawnOpts {
                                args: Value::Map(vec![
                                    ("holder".into(), Value::U64(to_holder.0)),
                                    ("reply".into(), Value::U64(me.0)),
                                ]),
                                caps: vec![to_holder, me],
                                ..Default::default()
                            },
                        )
                        .await?;
                    assert_eq!(sys.waitpid(l.cap).await?, ExitReason::Normal);
                    // The lender is dead; the holder still has its (now dead) cap.
                    sys.send(h.cap, val(2u64), no_opts()).await?;
                    let _ = sys.recv().await;
                    sys.term(h.cap).await?;
                    sys.waitpid(h.cap).await?;
                    // Park with the target alive so the host can look at the table.
                    let _ = sys.recv().await;
                    sys.term(t.cap).await?;
                    Ok(())
                }
            }),
            BootOpts::default(),
        )
        .unwrap();
    k.run();
    let (target, holder_pid, lender) = (Pid(2), Pid(3), Pid(4));
    assert!(k.is_alive(target));
    assert!(!k.is_alive(lender) && !k.is_alive(holder_pid));
    assert_eq!(k.caps_owned(lender), 0);
    assert_eq!(k.caps_owned(holder_pid), 0);
    assert!(k.caps_owned(init_pid) > 0);
    // The holder's send through the lent cap failed as a capability error, not as a dead
    // target: the target is alive, the cap died with its lender's root.
    assert_eq!(snapshot(&outcomes), vec![(2, Err(invalid("send")))]);
    assert_eq!(snapshot(&got), vec![1]);
    k.deliver_external(init_pid, Body::Empty).unwrap();
    assert_eq!(k.wait_exit(init_pid), Ok(ExitReason::Normal));
    k.run();
    assert_eq!(k.cap_count(), 0);
}

#[test]
fn a_cap_sent_with_a_message_changes_owner() {
    let got: Log<u64> = log();
    let outcomes: Log<(u64, Result<(), SysError>)> = log();
    let (g, o) = (got.clone(), outcomes.clone());
    let (k, r) = run_init(init(move |sys, _| {
        let (g, o) = (g.clone(), o.clone());
        async move {
            let t = sys.spawn(logger(g), SpawnOpts::default()).await?;
            let h = sys.spawn(holder(o), SpawnOpts::default()).await?;
            let c = sys.derive(t.cap, Right::Send.into())?;
            sys.send(c, val(1u64), no_opts()).await?;
            let me = sys.self_cap();
            sys.send(h.cap, Body::Empty, with_caps(vec![c, me])).await?;
            // The sender no longer holds it.
            assert_eq!(
                refused_err(sys.send(c, val(9u64), no_opts()).await),
                Some(not_held("send"))
            );
            assert_eq!(sys.derive(c, Right::Send.into()), Err(not_held("derive")));
            assert_eq!(sys.revoke(c), Err(not_held("revoke")));
            // Sending a cap you do not own is refused and the body comes back.
            match sys.send(h.cap, val(77u64), with_caps(vec![c])).await {
                Err(SendError::Refused(b, e)) => {
                    assert_eq!(body_u64(&b), Some(77));
                    assert_eq!(e, not_held("send"));
                }
                other => panic!("expected Refused, got {other:?}"),
            }
            // So is spawning with one.
            assert_eq!(
                sys.spawn(until_term(), giving(vec![c])).await.err(),
                Some(not_held("spawn"))
            );
            // The receiver can use it.
            sys.send(h.cap, val(2u64), no_opts()).await?;
            let _ = sys.recv().await;
            sys.term(h.cap).await?;
            sys.term(t.cap).await?;
            sys.waitpid(h.cap).await?;
            sys.waitpid(t.cap).await?;
            Ok(())
        }
    }));
    assert_eq!(r, ExitReason::Normal);
    assert_eq!(snapshot(&got), vec![1, 2]);
    assert_eq!(snapshot(&outcomes), vec![(2, Ok(()))]);
    // The refused spawn created nothing.
    assert_eq!(k.metrics().spawns, 3);
}

#[test]
fn spawning_needs_a_spawn_cap_which_children_only_get_by_delegation() {
    let got: Log<Result<(), SysError>> = log();
    let g = got.clone();
    let (_k, r) = run_init(init(move |sys, boot| {
        let g = g.clone();
        async move {
            let g2 = g.clone();
            let tries = image("tries", move |sys: Sys, _| {
                let g = g2.clone();
                async move {
                    let r = sys.spawn(exits_with(), SpawnOpts::default()).await;
                    push(&g, r.map(|_| ()));
                    Ok(())
                }
            });
            let bare = sys.spawn(tries.clone(), SpawnOpts::default()).await?;
            sys.waitpid(bare.cap).await?;
            let granted = sys
                .spawn(tries, giving(vec![child_spawn(&sys, &boot)]))
                .await?;
            sys.waitpid(granted.cap).await?;
            Ok(())
        }
    }));
    assert_eq!(r, ExitReason::Normal);
    assert_eq!(
        snapshot(&got),
        vec![
            Err(SysError::Cap {
                op: "spawn",
                err: CapError::NoSpawn
            }),
            Ok(())
        ]
    );
}

#[test]
fn a_cap_over_a_process_of_the_wrong_kind_is_rejected() {
    let (_k, r) = run_init(init(|sys, boot| async move {
        let spawn = boot_spawn(&boot);
        assert_eq!(
            refused_err(sys.send(spawn, Body::Empty, no_opts()).await),
            Some(SysError::Cap {
                op: "send",
                err: CapError::Lacks(Right::Send)
            })
        );
        assert_eq!(
            sys.open(spawn).await,
            Err(SysError::Cap {
                op: "open",
                err: CapError::Lacks(Right::Open)
            })
        );
        // Forged refs are just invalid.
        assert_eq!(
            refused_err(sys.send(CapRef(0xdead_beef), Body::Empty, no_opts()).await),
            Some(invalid("send"))
        );
        Ok(())
    }));
    assert_eq!(r, ExitReason::Normal);
}
