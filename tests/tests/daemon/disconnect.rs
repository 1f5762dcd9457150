//! A client that disconnects mid-loop loses nothing: the loop runs to its end and every
//! row is readable afterwards from another connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use agentos_abi::device::ChatReply;
use agentos_drivers::llm::ScriptedProvider;
use parking_lot::Mutex;
use serde_json::json;

use crate::common::{block_on, connect, next, start, PATIENCE};

#[test]
fn a_client_that_leaves_mid_loop_loses_nothing() {
    // Turn 2 waits for the test to open the gate, so the loop is surely mid-way when the
    // client leaves.
    let (open_gate, gate) = mpsc::channel::<()>();
    let gate = Mutex::new(gate);
    let calls = AtomicUsize::new(0);
    let model = Arc::new(ScriptedProvider::with(move |_| {
        match calls.fetch_add(1, Ordering::SeqCst) {
            0 => Ok(ChatReply::text(
                "<<PLAN:write:PLAN\n<<EDIT(known://kept.md):kept:EDIT\n<<SEND[102]:more:SEND",
            )),
            _ => {
                let _ = gate.lock().recv_timeout(PATIENCE);
                Ok(ChatReply::text(
                    "<<PLAN:end:PLAN\n<<SEND[200]:finished alone:SEND",
                ))
            }
        }
    }));
    let d = start(model);
    let (session_id, loop_id) = block_on(async {
        let c = connect(&d.url).await;
        let s = c.call("session.create", json!({})).await.expect("create");
        let r = c
            .call("loop.run", json!({"prompt": "go"}))
            .await
            .expect("run");
        let loop_id = r["loopId"].as_i64().expect("id");
        // Wait for turn 1's rows: the loop is running.
        loop {
            let n = next(&c).await;
            if n.method == "log/entry"
                && n.params["entry"]["op"] == "EDIT"
                && n.params["entry"]["origin"] == "model"
            {
                break;
            }
        }
        c.close().await;
        drop(c);
        (s["id"].as_i64().expect("sid"), loop_id)
    });
    open_gate.send(()).expect("open the gate");
    let lp = d
        .server
        .engine()
        .wait_loop(loop_id, Some(PATIENCE))
        .expect("the loop ends without its client");
    assert_eq!(lp.status, 200);
    block_on(async {
        let c = connect(&d.url).await;
        c.call("session.attach", json!({"id": session_id}))
            .await
            .expect("attach");
        let log = c
            .call("log.read", json!({"loopId": loop_id}))
            .await
            .expect("log");
        let entries = log["entries"].as_array().expect("entries");
        assert!(entries
            .iter()
            .any(|e| e["op"] == "EDIT" && e["status"] == 201));
        assert!(entries
            .iter()
            .any(|e| e["op"] == "SEND" && e["status"] == 200 && e["turnSeq"] == 2));
        let kept = c
            .call("entry.read", json!({"target": "known:///kept.md"}))
            .await
            .expect("the entry written before the disconnect");
        assert_eq!(kept["status"], 200);
    });
}
