//! The KV device: the seed's request shapes, prefix listing, and a redb store that keeps its
//! data across a reopen (a new kernel, a new driver, the same file).

use crate::common::run_process;
use crate::util::det;
use agentos_abi::device::*;
use agentos_abi::*;
use agentos_drivers::kv::KvDriver;
use bytes::Bytes;
use std::sync::Arc;

fn set(k: &str, v: &'static [u8]) -> Value {
    KvRequest::Set {
        key: k.into(),
        value: Bytes::from_static(v),
    }
    .to_value()
}

fn reply(r: &Result<Value, SysError>) -> KvReply {
    KvReply::from_value(r.clone().expect("kv op")).expect("a kv reply")
}

#[test]
fn kv_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.redb");
    {
        let k = det(1);
        let kv = Arc::new(KvDriver::persistent(&path).unwrap());
        k.register_driver(kv.clone()).unwrap();
        let (exit, seen) = run_process(&k, &["kv"], Quota::default(), |sys, h| async move {
            vec![
                sys.write(h[0], set("notes/1", b"first")).await,
                sys.write(h[0], set("notes/2", b"second")).await,
                sys.write(h[0], set("other", b"x")).await,
                sys.write(h[0], KvRequest::Delete("other".into()).to_value())
                    .await,
                sys.read(h[0], KvRequest::Get("notes/1".into()).to_value())
                    .await,
                // The seed's spelling, written by hand.
                sys.read(h[0], Value::Map(vec![("get".into(), "nope".into())]))
                    .await,
                sys.read(h[0], Value::Map(vec![("frob".into(), "x".into())]))
                    .await,
            ]
        });
        assert_eq!(exit, ExitReason::Normal);
        let seen = seen.unwrap();
        let r = &seen.results;
        assert_eq!(reply(&r[0]), KvReply::Done(true));
        assert_eq!(reply(&r[3]), KvReply::Done(true), "delete says it existed");
        assert_eq!(
            reply(&r[4]),
            KvReply::Value(Some(Bytes::from_static(b"first")))
        );
        assert_eq!(reply(&r[5]), KvReply::Value(None));
        assert!(matches!(&r[6], Err(SysError::Driver(m)) if m.contains("bad request")));
        assert_eq!(seen.usage, Usage::default(), "kv is free");
        // Release the file, as a host does at shutdown.
        kv.close();
    }
    let k = det(2);
    k.register_driver(Arc::new(KvDriver::persistent(&path).unwrap()))
        .unwrap();
    let (exit, seen) = run_process(&k, &["kv"], Quota::default(), |sys, h| async move {
        vec![
            sys.read(h[0], KvRequest::List("notes/".into()).to_value())
                .await,
            sys.read(h[0], KvRequest::Get("notes/2".into()).to_value())
                .await,
            sys.read(h[0], KvRequest::List(String::new()).to_value())
                .await,
        ]
    });
    assert_eq!(exit, ExitReason::Normal);
    let r = seen.unwrap().results;
    assert_eq!(
        reply(&r[0]),
        KvReply::Keys(vec!["notes/1".into(), "notes/2".into()])
    );
    assert_eq!(
        reply(&r[1]),
        KvReply::Value(Some(Bytes::from_static(b"second")))
    );
    assert_eq!(
        reply(&r[2]),
        KvReply::Keys(vec!["notes/1".into(), "notes/2".into()])
    );
}

#[test]
fn memory_kv_is_shared_by_the_processes_of_one_kernel() {
    let k = det(1);
    k.register_driver(Arc::new(KvDriver::memory())).unwrap();
    let (_, first) = run_process(&k, &["kv"], Quota::default(), |sys, h| async move {
        vec![sys.write(h[0], set("shared", b"yes")).await]
    });
    assert_eq!(reply(&first.unwrap().results[0]), KvReply::Done(true));
    let (_, second) = run_process(&k, &["kv"], Quota::default(), |sys, h| async move {
        vec![
            sys.read(h[0], KvRequest::Get("shared".into()).to_value())
                .await,
        ]
    });
    assert_eq!(
        reply(&second.unwrap().results[0]),
        KvReply::Value(Some(Bytes::from_static(b"yes")))
    );
}

#[test]
fn one_kv_driver_serves_many_scopes_and_a_read_only_cap_cannot_write() {
    use crate::util::{boot_with_and_wait, init};
    use agentos_kernel::BootOpts;
    let k = det(1);
    k.register_driver(Arc::new(KvDriver::memory())).unwrap();
    let opts = BootOpts {
        grant: vec!["kv".into()],
        ..BootOpts::default()
    };
    let r = boot_with_and_wait(
        &k,
        init(|sys, boot| async move {
            let dev = boot.device("kv").unwrap();
            let tenant = |root: &str| {
                sys.attenuate(
                    dev,
                    Attenuation {
                        scope: Some(Scope::new().with(Scope::ROOT, root)),
                        ..Attenuation::default()
                    },
                )
            };
            let (a, b) = (
                sys.open(tenant("/t/a")?).await?,
                sys.open(tenant("/t/b")?).await?,
            );
            sys.write(a, set("k", b"from a")).await?;
            sys.write(b, set("k", b"from b")).await?;
            let get = |h| sys.read(h, KvRequest::Get("k".into()).to_value());
            assert_eq!(
                reply(&get(a).await),
                KvReply::Value(Some(Bytes::from_static(b"from a")))
            );
            assert_eq!(
                reply(&get(b).await),
                KvReply::Value(Some(Bytes::from_static(b"from b")))
            );
            // The whole store sees both, under their roots; a tenant sees only its own keys.
            let all = sys.open(dev).await?;
            let list = |h| sys.read(h, KvRequest::List(String::new()).to_value());
            assert_eq!(
                reply(&list(all).await),
                KvReply::Keys(vec!["t/a/k".into(), "t/b/k".into()])
            );
            assert_eq!(reply(&list(a).await), KvReply::Keys(vec!["k".into()]));
            // A read-only tenant cap: reads work, a `set` smuggled through `read` is refused.
            let ro = sys.attenuate(
                tenant("/t/a")?,
                Attenuation {
                    rights: Some(Rights::of(&[Right::Open, Right::Read])),
                    ..Attenuation::default()
                },
            )?;
            let h = sys.open(ro).await?;
            assert_eq!(
                reply(&get(h).await),
                KvReply::Value(Some(Bytes::from_static(b"from a")))
            );
            let smuggled = sys.read(h, set("k", b"evil")).await;
            assert!(matches!(&smuggled, Err(SysError::Driver(m)) if m.contains("read-only")));
            // A scope key the driver does not know is refused at open.
            let odd = sys.attenuate(
                dev,
                Attenuation {
                    scope: Some(Scope::new().with("session", "s1")),
                    ..Attenuation::default()
                },
            )?;
            assert!(sys.open(odd).await.is_err());
            Ok(())
        }),
        opts,
    );
    assert_eq!(r, ExitReason::Normal);
}
