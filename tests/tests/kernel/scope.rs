//! Device caps that carry their authority: a handle gets only the `read`/`write` rights of the
//! device cap it was opened through, and the cap's scope reaches the driver at open; no
//! derivation widens either.

use crate::util::*;
use agentos_abi::driver::BoxFuture;
use agentos_abi::*;
use agentos_kernel::*;
use proptest::prelude::*;
use std::sync::{Arc, Mutex};

/// A driver that records every open it sees and echoes reads and writes.
struct Recorder {
    opens: Arc<Mutex<Vec<OpenCtx>>>,
}

struct Echo;

impl DriverHandle for Echo {
    fn read(&self, req: Value) -> BoxFuture<'static, Result<Reply, DriverError>> {
        Box::pin(async move { Ok(Reply::free(req)) })
    }
    fn write(&self, data: Value) -> BoxFuture<'static, Result<Reply, DriverError>> {
        Box::pin(async move { Ok(Reply::free(data)) })
    }
}

impl Driver for Recorder {
    fn name(&self) -> &str {
        "fs"
    }
    fn open(&self, at: OpenCtx) -> BoxFuture<'static, Result<Arc<dyn DriverHandle>, DriverError>> {
        self.opens.lock().unwrap().push(at);
        Box::pin(async move { Ok(Arc::new(Echo) as Arc<dyn DriverHandle>) })
    }
}

fn fs_kernel() -> (Kernel, Arc<Mutex<Vec<OpenCtx>>>) {
    let k = det(1);
    let opens = Arc::new(Mutex::new(Vec::new()));
    k.register_driver(Arc::new(Recorder {
        opens: opens.clone(),
    }))
    .unwrap();
    (k, opens)
}

fn grant_fs() -> BootOpts {
    BootOpts {
        grant: vec!["fs".into()],
        ..BootOpts::default()
    }
}

fn scoped(rights: Option<Rights>, scope: Option<Scope>) -> Attenuation {
    Attenuation {
        rights,
        expires_in_ms: None,
        scope,
    }
}

#[test]
fn a_read_only_device_cap_opens_a_read_only_handle() {
    let (k, opens) = fs_kernel();
    let r = boot_with_and_wait(
        &k,
        init(|sys, boot| async move {
            let dev = boot.device("fs").unwrap();
            let ro = sys.derive(dev, Rights::of(&[Right::Open, Right::Read]))?;
            let h = sys.open(ro).await?;
            assert_eq!(sys.cap_info(h)?.rights, Right::Read.into());
            assert_eq!(sys.read(h, Value::from("x")).await?, Value::from("x"));
            assert_eq!(
                sys.write(h, Value::from("y")).await,
                Err(SysError::Cap {
                    op: "write",
                    err: CapError::Lacks(Right::Write)
                })
            );
            // The handle cannot be re-derived into a writable one.
            assert_eq!(
                sys.derive(h, Rights::READ_WRITE),
                Err(SysError::Cap {
                    op: "derive",
                    err: CapError::Amplify(Right::Write)
                })
            );
            // The full device cap still opens read + write.
            let rw = sys.open(dev).await?;
            assert_eq!(sys.cap_info(rw)?.rights, Rights::READ_WRITE);
            assert_eq!(sys.write(rw, Value::from("y")).await?, Value::from("y"));
            // An open-only cap opens a handle that can do nothing.
            let bare = sys.derive(dev, Right::Open.into())?;
            let h = sys.open(bare).await?;
            assert!(sys.read(h, Value::Unit).await.is_err());
            Ok(())
        }),
        grant_fs(),
    );
    assert_eq!(r, ExitReason::Normal);
    let rights: Vec<Rights> = opens.lock().unwrap().iter().map(|o| o.rights).collect();
    assert_eq!(
        rights,
        vec![Right::Read.into(), Rights::READ_WRITE, Rights::NONE]
    );
}

#[test]
fn the_driver_receives_the_scope_and_derivation_only_narrows_it() {
    let (k, opens) = fs_kernel();
    let r = boot_with_and_wait(
        &k,
        init(|sys, boot| async move {
            let dev = boot.device("fs").unwrap();
            let proj = sys.attenuate(
                dev,
                scoped(
                    None,
                    Some(
                        Scope::new()
                            .with(Scope::ROOT, "/srv/proj")
                            .with("session", "s1"),
                    ),
                ),
            )?;
            let src = sys.attenuate(
                proj,
                scoped(
                    None,
                    Some(
                        Scope::new()
                            .with(Scope::ROOT, "/srv/proj/src")
                            .with("run", "r7"),
                    ),
                ),
            )?;
            let widen = |s: Scope| sys.attenuate(src, scoped(None, Some(s)));
            let widen_err = Err(SysError::Cap {
                op: "attenuate",
                err: CapError::Widen,
            });
            assert_eq!(
                widen(Scope::new().with(Scope::ROOT, "/srv/proj")),
                widen_err
            );
            assert_eq!(
                widen(Scope::new().with(Scope::ROOT, "/srv/proj/src/../../etc")),
                widen_err
            );
            assert_eq!(widen(Scope::new().with("session", "s2")), widen_err);
            assert_eq!(widen(Scope::new().with("run", "r8")), widen_err);
            // Re-deriving without a scope keeps it.
            let same = sys.attenuate(
                src,
                scoped(Some(Rights::of(&[Right::Open, Right::Read])), None),
            )?;
            let info = sys.cap_info(same)?;
            assert_eq!(info.scope.root(), Some("/srv/proj/src"));
            assert_eq!(info.scope.get("session"), Some("s1"));
            let h = sys.open(same).await?;
            assert_eq!(sys.cap_info(h)?.scope, info.scope);
            // An open handle's scope is the driver's, fixed at open: it cannot be re-scoped.
            assert_eq!(
                sys.attenuate(h, scoped(None, Some(Scope::new().with("run", "r7")))),
                Err(SysError::Cap {
                    op: "attenuate",
                    err: CapError::WrongKind("device")
                })
            );
            // Only device caps carry a scope.
            let me = sys.self_cap();
            assert_eq!(
                sys.attenuate(me, scoped(None, Some(Scope::new().with("x", "y")))),
                Err(SysError::Cap {
                    op: "attenuate",
                    err: CapError::WrongKind("device")
                })
            );
            Ok(())
        }),
        grant_fs(),
    );
    assert_eq!(r, ExitReason::Normal);
    let seen = opens.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].scope,
        Scope::new()
            .with(Scope::ROOT, "/srv/proj/src")
            .with("run", "r7")
            .with("session", "s1")
    );
    assert_eq!(seen[0].rights, Right::Read.into());
}

/// One step of a random derivation history.
#[derive(Debug, Clone)]
enum Step {
    /// Attenuate cap `i` to these rights and lay this scope over it.
    Narrow(usize, u8, Vec<(u8, u8)>),
    /// Give cap `i` to the other process and back (ownership round trip through IPC).
    Transfer(usize),
    /// Open cap `i`.
    Open(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (
            0usize..8,
            0u8..128,
            proptest::collection::vec((0u8..4, 0u8..6), 0..3)
        )
            .prop_map(|(i, r, s)| Step::Narrow(i, r, s)),
        (0usize..8).prop_map(Step::Transfer),
        (0usize..8).prop_map(Step::Open),
    ]
}

const KEYS: [&str; 4] = [Scope::ROOT, "session", "run", "other"];
const ROOTS: [&str; 6] = ["/a", "/a/b", "/a/b/../c", "/", "/a/./b/c", "/a/../../x"];
const VALS: [&str; 6] = ["s1", "s2", "r1", "", "s1", "x"];

fn scope_of(pairs: &[(u8, u8)]) -> Scope {
    pairs.iter().fold(Scope::new(), |s, (k, v)| {
        let key = KEYS[*k as usize];
        let val = if key == Scope::ROOT {
            ROOTS[*v as usize]
        } else {
            VALS[*v as usize]
        };
        s.with(key, val)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    /// No sequence of derive/attenuate/transfer/open yields a cap or a handle with more rights
    /// or a wider scope than the cap it came from.
    #[test]
    fn no_history_widens_rights_or_scope(steps in proptest::collection::vec(step(), 1..24)) {
        let (k, opens) = fs_kernel();
        let checked: Log<(Rights, Scope, Rights, Scope)> = log();
        let c = checked.clone();
        let r = boot_with_and_wait(&k, init(move |sys, boot| {
            let (steps, c) = (steps.clone(), c.clone());
            async move {
                let root = sys.attenuate(boot.device("fs").unwrap(), scoped(None, Some(Scope::new().with(Scope::ROOT, "/a"))))?;
                // Every cap we hold, with the cap it came from.
                let mut caps: Vec<(CapRef, CapRef)> = vec![(root, root)];
                let bounce = image("bounce", |sys: Sys, _| async move {
                    loop {
                        let m = sys.recv().await;
                        let Some(&back) = m.caps.get(1) else { return Ok(()) };
                        sys.send(back, Body::Empty, with_caps(vec![m.caps[0]])).await?;
                    }
                });
                let peer = sys.spawn(bounce, SpawnOpts::default()).await?;
                for s in steps {
                    match s {
                        Step::Narrow(i, bits, pairs) => {
                            let (from, _) = caps[i % caps.len()];
                            let want = Rights(bits);
                            let scope = (!pairs.is_empty()).then(|| scope_of(&pairs));
                            if let Ok(n) = sys.attenuate(from, scoped(Some(want), scope)) {
                                caps.push((n, from));
                            }
                        }
                        Step::Transfer(i) => {
                            let (cap, _) = caps[i % caps.len()];
                            let back = sys.self_cap();
                            sys.send(peer.cap, Body::Empty, with_caps(vec![cap, back])).await?;
                            let m = sys.recv().await;
                            assert_eq!(m.caps.first().copied(), Some(cap));
                        }
                        Step::Open(i) => {
                            let (from, _) = caps[i % caps.len()];
                            if let Ok(h) = sys.open(from).await {
                                caps.push((h, from));
                            }
                        }
                    }
                }
                for (cap, from) in caps {
                    let (a, b) = (sys.cap_info(cap)?, sys.cap_info(from)?);
                    push(&c, (a.rights, a.scope, b.rights, b.scope));
                }
                sys.signal(peer.cap, None).await?;
                Ok(())
            }
        }), grant_fs());
        prop_assert_eq!(r, ExitReason::Normal);
        let root = Scope::new().with(Scope::ROOT, "/a");
        for (rights, scope, prights, pscope) in snapshot(&checked) {
            prop_assert!(prights.contains(rights), "{rights:?} ⊄ {prights:?}");
            prop_assert!(scope.narrows(&pscope), "{scope:?} wider than {pscope:?}");
            prop_assert!(scope.narrows(&root));
        }
        for o in opens.lock().unwrap().iter() {
            prop_assert!(Rights::READ_WRITE.contains(o.rights));
            prop_assert!(o.scope.narrows(&root));
        }
    }
}
