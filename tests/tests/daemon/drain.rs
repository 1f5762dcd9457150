//! The drain and a restart: shutdown cancels running and queued loops (499) and leaves
//! none open; a daemon started again on the same store finds every session and row.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use agentos_abi::device::ChatReply;
use agentos_drivers::llm::ScriptedProvider;
use agentos_engine::daemon::DaemonConfig;
use agentos_engine::store::{status, Store};
use serde_json::json;

use crate::common::{block_on, connect, next, one_turn_model, start_with, until_terminated};

/// A model that never finishes: a fresh EDIT target every turn, so no cycle is detected.
fn endless() -> Arc<ScriptedProvider> {
    let n = AtomicUsize::new(0);
    Arc::new(ScriptedProvider::with(move |_| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        Ok(ChatReply::text(format!(
            "<<PLAN:again:PLAN\n<<EDIT(known://f{i}.md):x:EDIT\n<<SEND[102]:more:SEND"
        )))
    }))
}

#[test]
fn shutdown_cancels_running_and_queued_loops() {
    let store = Arc::new(Store::open_in_memory().expect("store"));
    let mut d = start_with(endless(), Some(store.clone()), DaemonConfig::default());
    let (running, queued) = block_on(async {
        let c = connect(&d.url).await;
        c.call("session.create", json!({})).await.expect("create");
        let a = c
            .call("loop.run", json!({"prompt": "forever", "maxTurns": 100000}))
            .await
            .expect("run");
        let b = c
            .call("loop.run", json!({"prompt": "after"}))
            .await
            .expect("run");
        // Wait until the first loop has written rows: it is running.
        loop {
            let n = next(&c).await;
            if n.method == "log/entry" && n.params["entry"]["turnSeq"].as_i64() >= Some(2) {
                break;
            }
        }
        (
            a["loopId"].as_i64().expect("a"),
            b["loopId"].as_i64().expect("b"),
        )
    });
    let report = d.server.shutdown();
    assert_eq!(report.cancelled, 2, "{report:?}");
    for id in [running, queued] {
        let lp = store.loop_row(id).expect("loop");
        assert_eq!(lp.status, status::CANCELLED, "{lp:?}");
    }
}

#[test]
fn a_restarted_daemon_finds_its_sessions_and_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sessions.db");
    let (session_id, loop_id, rows) = {
        let store = Arc::new(Store::open(&path).expect("store"));
        let d = start_with(one_turn_model(), Some(store), DaemonConfig::default());
        block_on(async {
            let c = connect(&d.url).await;
            let s = c
                .call("session.create", json!({"name": "durable"}))
                .await
                .expect("create");
            let r = c
                .call("loop.run", json!({"prompt": "once"}))
                .await
                .expect("run");
            let id = r["loopId"].as_i64().expect("id");
            until_terminated(&c, id).await;
            let log = c
                .call("log.read", json!({"loopId": id}))
                .await
                .expect("log");
            (
                s["id"].as_i64().expect("sid"),
                id,
                log["entries"].as_array().map(Vec::len).expect("rows"),
            )
        })
    };
    let store = Arc::new(Store::open(&path).expect("reopen"));
    assert_eq!(store.interrupt_unfinished().expect("interrupt"), 0);
    let d = start_with(one_turn_model(), Some(store), DaemonConfig::default());
    block_on(async {
        let c = connect(&d.url).await;
        let list = c.call("session.list", json!({})).await.expect("list");
        assert_eq!(list["sessions"][0]["name"], "durable");
        c.call("session.attach", json!({"id": session_id}))
            .await
            .expect("attach");
        let log = c
            .call("log.read", json!({"loopId": loop_id}))
            .await
            .expect("log");
        assert_eq!(log["entries"].as_array().map(Vec::len), Some(rows));
        let prompts = c.call("session.prompts", json!({})).await.expect("prompts");
        assert_eq!(prompts["prompts"][0]["prompt"], "once");
    });
}
