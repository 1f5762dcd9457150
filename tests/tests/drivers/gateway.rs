//! The gateway device: host code pushes requests that a process reads and answers, and the
//! seed's outbound forwarding (`write({to, body})`), one reduction per operation.

use crate::common::run_process;
use crate::util::det;
use agentos_abi::device::*;
use agentos_abi::*;
use agentos_drivers::gateway::{GatewayDriver, GatewayError};
use std::sync::{Arc, Mutex};

#[test]
fn host_requests_are_served_by_a_process_and_outbound_bodies_forwarded() {
    let forwarded: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let log = forwarded.clone();
    let g = GatewayDriver::new(8).forwarding(move |to, body| {
        log.lock().unwrap().push((to, body));
        Value::Bool(true)
    });
    let client = g.client();
    let k = det(1);
    k.register_driver(Arc::new(g)).unwrap();

    // The host side runs on its own thread, as a web handler would.
    let host = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let a = client.call(Value::U64(20)).await;
            let b = client.call(Value::U64(21)).await;
            (a, b)
        })
    });

    let (exit, seen) = run_process(&k, &["gateway"], Quota::default(), |sys, h| async move {
        let mut out = Vec::new();
        for _ in 0..2 {
            let req = match sys.read(h[0], Value::Unit).await {
                Ok(v) => v,
                Err(e) => return vec![Err(e)],
            };
            let Ok(inbound) = GatewayInbound::from_value(req) else {
                return vec![Err(SysError::Driver("not an inbound request".into()))];
            };
            let answer = Value::U64(inbound.body.as_u64().unwrap_or(0) * 2);
            out.push(
                sys.write(
                    h[0],
                    GatewayReply {
                        id: inbound.id,
                        reply: answer,
                    }
                    .to_value(),
                )
                .await,
            );
        }
        out.push(
            sys.write(
                h[0],
                GatewaySend {
                    to: "node-b".into(),
                    body: "hello".into(),
                }
                .to_value(),
            )
            .await,
        );
        out
    });
    assert_eq!(exit, ExitReason::Normal);
    assert_eq!(
        host.join().unwrap(),
        (Ok(Value::U64(40)), Ok(Value::U64(42)))
    );
    let seen = seen.unwrap();
    assert_eq!(
        seen.results,
        vec![
            Ok(Value::Bool(true)),
            Ok(Value::Bool(true)),
            Ok(Value::Bool(true))
        ]
    );
    assert_eq!(
        *forwarded.lock().unwrap(),
        vec![("node-b".to_owned(), Value::Str("hello".into()))]
    );
}

#[test]
fn a_request_taken_by_a_process_that_exits_unanswered_fails_on_the_host() {
    let g = GatewayDriver::new(1);
    let client = g.client();
    let k = det(1);
    k.register_driver(Arc::new(g)).unwrap();
    let pending = client.try_call(Value::Unit).unwrap();
    let (exit, seen) = run_process(&k, &["gateway"], Quota::default(), |sys, h| async move {
        vec![sys.read(h[0], Value::Unit).await] // and exit without replying
    });
    assert_eq!(exit, ExitReason::Normal);
    assert!(seen.unwrap().results[0].is_ok());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert_eq!(rt.block_on(pending), Err(GatewayError::Dropped));
}
