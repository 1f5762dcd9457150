//! The secure gateway: bodies a process forwards leave sealed with the kernel's transport key,
//! and inbound requests reach a process only if they were sealed for this node with the same
//! key, are fresh and are not replays; the reply goes back sealed for the sender.

use crate::common::run_process;
use agentos_abi::device::*;
use agentos_abi::wire::GatewaySealError;
use agentos_abi::*;
use agentos_drivers::gateway::{GatewayDriver, GatewayError};
use agentos_kernel::*;
use bytes::Bytes;
use std::sync::{Arc, Mutex};

const KEY: &[u8] = b"gateway cluster key";

fn node(name: &str, key: &[u8], seed: u64, fresh_ms: u64) -> Kernel {
    let mut net = NetConfig::new(name, key);
    net.epoch = Some(seed);
    net.fresh_window_ms = fresh_ms;
    Kernel::new(KernelConfig {
        net: Some(net),
        ..KernelConfig::deterministic(seed)
    })
}

/// Node `name`'s sealed gateway whose forwards are collected; a process sends `bodies` to the
/// given nodes (sleeping `ms` of virtual time before each) and the sealed bytes come back.
fn forwarded(k: &Kernel, sends: Vec<(u64, &'static str, Value)>) -> Vec<(String, Bytes)> {
    let out: Arc<Mutex<Vec<(String, Bytes)>>> = Arc::default();
    let log = out.clone();
    let g = GatewayDriver::new(4)
        .forwarding(move |to, body| {
            let ok = body.as_bytes().is_some();
            if let Value::Bytes(b) = body {
                log.lock().unwrap().push((to, b));
            }
            Value::Bool(ok)
        })
        .sealed(k.gateway_seal().expect("networked kernel"));
    k.register_driver(Arc::new(g)).unwrap();
    let sends = Arc::new(sends);
    let (exit, seen) = run_process(k, &["gateway"], Quota::default(), move |sys, h| {
        let sends = sends.clone();
        async move {
            let mut r = Vec::new();
            for (ms, to, body) in sends.iter() {
                sys.sleep(*ms).await;
                let send = GatewaySend {
                    to: (*to).into(),
                    body: body.clone(),
                };
                r.push(sys.write(h[0], send.to_value()).await);
            }
            r
        }
    });
    assert_eq!(exit, ExitReason::Normal);
    assert!(seen
        .unwrap()
        .results
        .iter()
        .all(|r| r == &Ok(Value::Bool(true))));
    let v = out.lock().unwrap().clone();
    v
}

#[test]
fn sealed_requests_are_served_and_answered_sealed_for_the_sender() {
    let a = node("a", KEY, 1, 60_000);
    let b = node("b", KEY, 2, 60_000);
    let sent = forwarded(&b, vec![(0, "a", Value::U64(21))]);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, "a");
    let request = sent[0].1.clone();

    let g = GatewayDriver::new(4).sealed(a.gateway_seal().unwrap());
    let client = g.client();
    a.register_driver(Arc::new(g)).unwrap();
    let host = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let plain = client.call(Value::U64(1)).await;
            let reply = client.call_sealed(&request).await;
            let replayed = client.call_sealed(&request).await;
            (plain, reply, replayed)
        })
    });
    let (exit, seen) = run_process(&a, &["gateway"], Quota::default(), |sys, h| async move {
        let req = sys.read(h[0], Value::Unit).await;
        let Ok(inbound) = req.and_then(|v| {
            GatewayInbound::from_value(v).map_err(|e| SysError::Driver(e.to_string()))
        }) else {
            return vec![Err(SysError::Driver("no inbound request".into()))];
        };
        let doubled = Value::U64(inbound.body.as_u64().unwrap_or(0) * 2);
        let reply = GatewayReply {
            id: inbound.id,
            reply: doubled,
        };
        vec![Ok(inbound.body), sys.write(h[0], reply.to_value()).await]
    });
    assert_eq!(exit, ExitReason::Normal);
    assert_eq!(seen.unwrap().results[0], Ok(Value::U64(21)));
    let (plain, reply, replayed) = host.join().unwrap();
    assert!(
        matches!(plain, Err(GatewayError::WrongDoor(_))),
        "{plain:?}"
    );
    let reply = reply.expect("served");
    assert!(
        matches!(replayed, Err(GatewayError::Seal(GatewaySealError::Refused(ref m))) if m.contains("replayed")),
        "{replayed:?}"
    );
    // The reply opens on b, from a, and only once.
    let seal_b = b.gateway_seal().unwrap();
    assert_eq!(seal_b.open(&reply), Ok((NodeId::from("a"), Value::U64(42))));
    assert!(seal_b.open(&reply).is_err());
    assert_eq!(a.net_stats().replayed, 1);
}

#[test]
fn forged_tampered_misaddressed_and_stale_payloads_never_reach_a_process() {
    let a = node("a", KEY, 1, 1_000);
    let b = node("b", KEY, 2, 60_000);
    let other_key = node("m", b"another key", 3, 60_000);
    // b seals one for a now, one for a after 5 s of its virtual clock, one for "z".
    let from_b = forwarded(
        &b,
        vec![
            (0, "a", "fresh".into()),
            (5_000, "a", "late".into()),
            (0, "z", "elsewhere".into()),
        ],
    );
    let from_m = forwarded(&other_key, vec![(0, "a", "forged".into())]);
    let seal_a = a.gateway_seal().unwrap();

    let mut tampered = from_b[0].1.to_vec();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0x01;
    let refused = |r: Result<(NodeId, Value), GatewaySealError>, what: &str| match r {
        Err(GatewaySealError::Refused(m)) => m,
        other => panic!("{what}: expected a refusal, got {other:?}"),
    };
    let m = refused(seal_a.open(&tampered), "tampered");
    assert!(m.contains("MAC") || m.contains("malformed"), "{m}");
    let m = refused(seal_a.open(&from_m[0].1), "forged");
    assert!(m.contains("MAC"), "{m}");
    let m = refused(seal_a.open(&from_b[1].1), "stale");
    assert!(m.contains("stale"), "{m}");
    let m = refused(seal_a.open(&from_b[2].1), "misaddressed");
    assert!(m.contains("misaddressed"), "{m}");
    let m = refused(seal_a.open(b"short"), "garbage");
    assert!(m.contains("malformed"), "{m}");
    // The genuine one still opens after all that.
    assert_eq!(
        seal_a.open(&from_b[0].1),
        Ok((NodeId::from("b"), Value::Str("fresh".into())))
    );
    let s = a.net_stats();
    assert_eq!((s.stale, s.misaddressed), (1, 1), "{s:?}");
    // Forged by another key, tampered (MAC or, if a header byte flipped, decoding), garbage.
    assert_eq!(s.malformed + s.forged, 3, "{s:?}");
    assert!(s.forged >= 1, "{s:?}");
}

#[test]
fn a_kernel_envelope_is_not_a_gateway_payload_nor_the_reverse() {
    let a = node("a", KEY, 1, 60_000);
    let b = node("b", KEY, 2, 60_000);
    let envelope = b
        .seal(
            &agentos_abi::wire::Addr {
                node: NodeId::from("a"),
                pid: Pid::KERNEL,
            },
            &agentos_abi::wire::WireBody::MonReq {
                watcher: Pid(1),
                target: Pid(1),
            },
        )
        .unwrap();
    assert!(a.gateway_seal().unwrap().open(&envelope).is_err());
    let payload = b
        .gateway_seal()
        .unwrap()
        .seal(&NodeId::from("a"), &Value::U64(1))
        .unwrap();
    assert!(a.ingress(&payload).is_err());
    assert!(Kernel::new(KernelConfig::deterministic(9))
        .gateway_seal()
        .is_err());
}
