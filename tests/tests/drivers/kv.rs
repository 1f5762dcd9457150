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
