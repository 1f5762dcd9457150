//! The name service: register and look up; a looked-up cap is send-only; names of dead owners
//! vanish (and the caps looked up from them are revoked); only owners unregister; forged downs
//! and repeated lookups change nothing.

use crate::*;
use agentos_abi::*;
use agentos_kernel::*;
use agentos_userland::{lookup, name_service, register, unregister};

/// The caps of one scenario: `names` is a send cap to the service.
fn names_cap(sys: &Sys, svc: &Spawned) -> CapRef {
    sys.derive(svc.cap, Right::Send.into()).unwrap()
}

/// A process that registers `name`, tells `ready` (a send cap in its args under "ready"),
/// then logs every string it receives into `heard` until told `"exit"`.
fn owner(name: &'static str, heard: Log<String>) -> KImage {
    Image::new(name, move |sys: Sys, args: Value| {
        let heard = heard.clone();
        async move {
            let arg = |k: &str| CapRef(args.get(k).and_then(Value::as_u64).unwrap());
            register(&sys, arg("names"), name)
                .await
                .map_err(|e| ExitReason::fault(e.to_string()))?;
            sys.send(
                arg("ready"),
                Body::Value("ready".into()),
                SendOpts::default(),
            )
            .await?;
            loop {
                let m = sys.recv().await;
                match m.body.as_value().and_then(Value::as_str) {
                    Some("exit") => return Ok(()),
                    Some(s) => push(&heard, s.to_owned()),
                    None => {}
                }
            }
        }
    })
}

/// Spawn `owner(name)` with a send cap to the service and one back to the caller, and wait for
/// its "ready" (registration delivered before it).
async fn start_owner(sys: &Sys, svc: &Spawned, name: &'static str, heard: Log<String>) -> Spawned {
    let names = names_cap(sys, svc);
    let ready = sys.self_cap();
    let args = Value::Map(vec![
        ("names".into(), Value::U64(names.0)),
        ("ready".into(), Value::U64(ready.0)),
    ]);
    let o = sys
        .spawn(
            owner(name, heard),
            SpawnOpts {
                args,
                caps: vec![names, ready],
                ..SpawnOpts::default()
            },
        )
        .await
        .unwrap();
    loop {
        let m = sys.recv().await;
        if m.body.as_value().and_then(Value::as_str) == Some("ready") {
            return o;
        }
    }
}

fn run(f: impl Fn(Sys, SysMsg) -> ProcFuture + Send + Sync + 'static) -> Kernel {
    let k = det();
    k.boot(init(f), BootOpts::default()).unwrap();
    k.run();
    k
}

fn err_text<T>(r: Result<T, SysError>) -> String {
    r.err().map(|e| e.to_string()).unwrap_or_default()
}

#[test]
fn a_registered_name_looks_up_to_a_cap_that_reaches_its_owner() {
    let heard: Log<String> = log();
    let found: Log<(bool, bool)> = log();
    let (h, f) = (heard.clone(), found.clone());
    run(move |sys, _| {
        let (h, f) = (h.clone(), f.clone());
        Box::pin(async move {
            let svc = sys.spawn(name_service(), SpawnOpts::default()).await?;
            let names = names_cap(&sys, &svc);
            start_owner(&sys, &svc, "echo", h).await;
            let echo = lookup(&sys, names, "echo").await.unwrap();
            let none = lookup(&sys, names, "nobody").await.unwrap();
            push(&f, (echo.is_some(), none.is_some()));
            sys.send(
                echo.unwrap(),
                Body::Value("hello".into()),
                SendOpts::default(),
            )
            .await?;
            assert_eq!(sys.mailbox_len(), 0);
            Ok(())
        })
    });
    assert_eq!(snapshot(&found), vec![(true, false)]);
    assert_eq!(snapshot(&heard), vec!["hello".to_owned()]);
}

#[test]
fn a_looked_up_cap_is_send_only() {
    let errs: Log<Vec<String>> = log();
    let e = errs.clone();
    run(move |sys, _| {
        let e = e.clone();
        Box::pin(async move {
            let svc = sys.spawn(name_service(), SpawnOpts::default()).await?;
            let names = names_cap(&sys, &svc);
            let o = start_owner(&sys, &svc, "svc", log()).await;
            let cap = lookup(&sys, names, "svc").await.unwrap().unwrap();
            let got = vec![
                err_text(sys.derive(cap, Right::Monitor.into())),
                err_text(sys.derive(cap, Rights::CHILD)),
                err_text(sys.monitor(cap).await),
                err_text(sys.signal(cap, None).await),
                err_text(sys.term(cap).await),
                err_text(sys.waitpid(cap).await),
            ];
            push(&e, got);
            // Deriving what it already has is fine; sending works.
            let again = sys.derive(cap, Right::Send.into())?;
            sys.send(again, Body::Value("exit".into()), SendOpts::default())
                .await?;
            sys.waitpid(o.cap).await?;
            Ok(())
        })
    });
    assert_eq!(
        snapshot(&errs).pop().unwrap(),
        vec![
            "derive: cannot amplify right \"monitor\"",
            "derive: cannot amplify right \"monitor\"",
            "monitor: capability lacks right \"monitor\"",
            "signal: capability lacks right \"kill\"",
            "term: capability lacks right \"kill\"",
            "waitpid: capability lacks right \"monitor\"",
        ]
    );
}

#[test]
fn the_names_of_a_dead_owner_vanish_and_their_looked_up_caps_are_revoked() {
    let seen: Log<(bool, String)> = log();
    let s = seen.clone();
    let k = run(move |sys, _| {
        let s = s.clone();
        Box::pin(async move {
            let svc = sys.spawn(name_service(), SpawnOpts::default()).await?;
            let names = names_cap(&sys, &svc);
            let o = start_owner(&sys, &svc, "db", log()).await;
            let db = lookup(&sys, names, "db").await.unwrap().unwrap();
            sys.signal(o.cap, None).await?;
            // The service hears of the death before it reads our next lookup.
            let after = lookup(&sys, names, "db").await.unwrap();
            let sent = sys
                .send(db, Body::Value("late".into()), SendOpts::default())
                .await;
            push(
                &s,
                (
                    after.is_some(),
                    sent.err().map(|e| e.to_string()).unwrap_or_default(),
                ),
            );
            Ok(())
        })
    });
    assert_eq!(
        snapshot(&seen),
        vec![(
            false,
            "send: send: invalid or revoked capability".to_owned()
        )]
    );
    // The service kept no capability for the dead owner.
    let svc = pid_of(&k, "names");
    assert_eq!(k.caps_owned(svc), 0);
}

#[test]
fn a_stranger_cannot_unregister_a_name() {
    let seen: Log<bool> = log();
    let s = seen.clone();
    run(move |sys, _| {
        let s = s.clone();
        Box::pin(async move {
            let svc = sys.spawn(name_service(), SpawnOpts::default()).await?;
            let names = names_cap(&sys, &svc);
            start_owner(&sys, &svc, "cache", log()).await;
            // Init is not the owner: its unregister is ignored.
            unregister(&sys, names, "cache").await.unwrap();
            let still = lookup(&sys, names, "cache").await.unwrap().is_some();
            push(&s, still);
            Ok(())
        })
    });
    assert_eq!(snapshot(&seen), vec![true]);
}

#[test]
fn an_owner_unregisters_its_own_name_and_a_new_registration_wins() {
    let seen: Log<Vec<bool>> = log();
    let s = seen.clone();
    run(move |sys, _| {
        let s = s.clone();
        Box::pin(async move {
            let svc = sys.spawn(name_service(), SpawnOpts::default()).await?;
            let names = names_cap(&sys, &svc);
            let mut out = Vec::new();
            register(&sys, names, "me").await.unwrap();
            let first = lookup(&sys, names, "me").await.unwrap().unwrap();
            // Re-registering replaces the registration: the old lookup's cap is revoked.
            register(&sys, names, "me").await.unwrap();
            let second = lookup(&sys, names, "me").await.unwrap().unwrap();
            out.push(
                sys.send(first, Body::Empty, SendOpts::default())
                    .await
                    .is_err(),
            );
            out.push(
                sys.send(second, Body::Empty, SendOpts::default())
                    .await
                    .is_ok(),
            );
            unregister(&sys, names, "me").await.unwrap();
            out.push(lookup(&sys, names, "me").await.unwrap().is_none());
            out.push(
                sys.send(second, Body::Empty, SendOpts::default())
                    .await
                    .is_err(),
            );
            push(&s, out);
            Ok(())
        })
    });
    assert_eq!(snapshot(&seen), vec![vec![true, true, true, true]]);
}

#[test]
fn a_forged_down_does_not_drop_a_name() {
    let seen: Log<bool> = log();
    let s = seen.clone();
    run(move |sys, _| {
        let s = s.clone();
        Box::pin(async move {
            let svc = sys.spawn(name_service(), SpawnOpts::default()).await?;
            let names = names_cap(&sys, &svc);
            let o = start_owner(&sys, &svc, "bank", log()).await;
            let forged = SysMsg::Down {
                pid: o.pid,
                reason: ExitReason::Normal,
            };
            // The kernel refuses a system message from a process outright; were one to get
            // through, the service would still ignore a down not sent by the dead process.
            let refused = sys
                .send(names, Body::Sys(forged), SendOpts::default())
                .await;
            assert!(
                matches!(&refused, Err(SendError::Refused(_, e)) if e.to_string().contains("system message")),
                "{refused:?}"
            );
            let still = lookup(&sys, names, "bank").await.unwrap().is_some();
            push(&s, still);
            Ok(())
        })
    });
    assert_eq!(snapshot(&seen), vec![true]);
}

#[test]
fn lookups_leave_no_capabilities_behind_in_the_service() {
    let k = run(move |sys, _| {
        Box::pin(async move {
            let svc = sys.spawn(name_service(), SpawnOpts::default()).await?;
            let names = names_cap(&sys, &svc);
            start_owner(&sys, &svc, "hot", log()).await;
            for _ in 0..50 {
                lookup(&sys, names, "hot").await.unwrap();
                lookup(&sys, names, "cold").await.unwrap();
            }
            Ok(())
        })
    });
    // One registration, so one cap, whatever the number of lookups.
    assert_eq!(k.caps_owned(pid_of(&k, "names")), 1);
}

#[test]
fn a_registration_whose_cap_cannot_monitor_is_refused() {
    let seen: Log<bool> = log();
    let s = seen.clone();
    let k = run(move |sys, _| {
        let s = s.clone();
        Box::pin(async move {
            let svc = sys.spawn(name_service(), SpawnOpts::default()).await?;
            let names = names_cap(&sys, &svc);
            // Hand-rolled register with a send-only cap: the owner could never be watched.
            let weak = sys.derive(sys.self_cap(), Right::Send.into())?;
            let req = Value::Map(vec![
                ("$".into(), "register".into()),
                ("name".into(), "ghost".into()),
            ]);
            sys.send(
                names,
                Body::Value(req),
                SendOpts {
                    caps: vec![weak],
                    ..SendOpts::default()
                },
            )
            .await?;
            let found = lookup(&sys, names, "ghost").await.unwrap().is_some();
            push(&s, found);
            Ok(())
        })
    });
    assert_eq!(snapshot(&seen), vec![false]);
    assert_eq!(k.caps_owned(pid_of(&k, "names")), 0);
}

/// A server that takes one request and then never answers: it parks until killed.
fn mute_server() -> KImage {
    Image::new("mute", |sys: Sys, _| async move {
        let _request = sys.recv().await;
        loop {
            let _ = sys.recv().await;
        }
    })
}

/// A process that sleeps `ms`, then kills the process behind its "victim" grant.
fn killer(ms: u64) -> KImage {
    Image::new("killer", move |sys: Sys, _| async move {
        sys.sleep(ms).await;
        let victim = sys.grant("victim").expect("victim grant");
        sys.signal(victim, None).await?;
        Ok(())
    })
}

#[test]
fn a_server_killed_between_request_and_reply_fails_lookup_and_which_children() {
    let got: Log<(String, String, u64, usize)> = log();
    let g = got.clone();
    run(move |sys, _| {
        let g = g.clone();
        Box::pin(async move {
            let mut errs = Vec::new();
            for _ in 0..2 {
                let srv = sys.spawn(mute_server(), SpawnOpts::default()).await?;
                let kill = sys.derive(srv.cap, Right::Kill.into())?;
                let opts = SpawnOpts {
                    grants: vec![("victim".into(), kill)],
                    ..SpawnOpts::default()
                };
                sys.spawn(killer(5), opts).await?;
                // srv.cap grants send + monitor: the call watches the server.
                let e = if errs.is_empty() {
                    lookup(&sys, srv.cap, "anything")
                        .await
                        .err()
                        .map(|e| e.to_string())
                } else {
                    agentos_userland::which_children(&sys, srv.cap)
                        .await
                        .err()
                        .map(|e| e.to_string())
                };
                errs.push(e.expect("the call fails instead of waiting forever"));
            }
            // Nothing stale is left behind: no down, no reply.
            push(
                &g,
                (
                    errs[0].clone(),
                    errs[1].clone(),
                    sys.now(),
                    sys.mailbox_len(),
                ),
            );
            Ok(())
        })
    });
    let got = snapshot(&got);
    assert_eq!(got.len(), 1, "init finished");
    let (lookup_err, which_err, now, left) = got[0].clone();
    assert!(lookup_err.contains("no such process"), "{lookup_err}");
    assert!(which_err.contains("no such process"), "{which_err}");
    assert_eq!(now, 10);
    assert_eq!(left, 0);
}
