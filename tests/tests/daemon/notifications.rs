//! PLURNK.md §4.3: a loop's rows arrive as `log/entry` in write order, then one
//! `loop/terminated`; what was notified is exactly what `log.read` returns; a connection
//! hears only its own session's rows.

use std::time::Duration;

use serde_json::json;

use crate::common::{block_on, connect, next, scripted, start, until_terminated};

const THREE_TURNS: [&str; 3] = [
    "<<PLAN:note it:PLAN\n<<EDIT(known://notes.md):alpha\nbeta:EDIT\n<<SEND[102]:wrote:SEND",
    "<<PLAN:read it back:PLAN\n<<READ(known:///notes.md)::READ\n<<SEND[102]:reading:SEND",
    "<<PLAN:done:PLAN\n<<SEND[200]:notes hold alpha and beta:SEND",
];

#[test]
fn a_loop_streams_its_rows_in_order_then_terminates() {
    let d = start(scripted(&THREE_TURNS));
    block_on(async {
        let c = connect(&d.url).await;
        let s = c
            .call("session.create", json!({"name": "notes"}))
            .await
            .expect("create");
        assert_eq!(next(&c).await.method, "session/created");
        let r = c
            .call("loop.run", json!({"prompt": "remember two words"}))
            .await
            .expect("run");
        let loop_id = r["loopId"].as_i64().expect("loop id");
        let notes = until_terminated(&c, loop_id).await;
        let (end, rows) = notes.split_last().expect("some");
        assert!(rows.iter().all(|n| n.method == "log/entry"), "{rows:?}");
        assert!(rows.iter().all(|n| n.params["sessionId"] == s["id"]));
        let ids: Vec<i64> = rows
            .iter()
            .map(|n| n.params["entry"]["id"].as_i64().expect("row id"))
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "write order: {ids:?}");
        let turns: Vec<i64> = rows
            .iter()
            .map(|n| n.params["entry"]["turnSeq"].as_i64().expect("turn"))
            .collect();
        assert_eq!(turns.first(), Some(&1));
        assert_eq!(turns.last(), Some(&3));
        assert!(rows.iter().any(|n| n.params["entry"]["op"] == "EDIT"
            && n.params["entry"]["status"] == 201
            && n.params["entry"]["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("log:///1/1/"))));
        assert_eq!(end.params["finalStatus"], 200);
        assert_eq!(end.params["message"], "notes hold alpha and beta");
        assert_eq!(end.params["turns"], 3);
        assert_eq!(end.params["hitMaxTurns"], false);
        let read = c
            .call("log.read", json!({"loopId": loop_id}))
            .await
            .expect("log");
        let read_ids: Vec<i64> = read["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| e["id"].as_i64().expect("id"))
            .collect();
        assert_eq!(read_ids, ids, "notified rows are the log");
        let t2 = c
            .call(
                "log.read",
                json!({"loopId": loop_id, "turnSeq": 2, "limit": 2}),
            )
            .await
            .expect("log");
        let t2 = t2["entries"].as_array().expect("entries");
        assert_eq!(t2.len(), 2);
        assert!(t2.iter().all(|e| e["turnSeq"] == 2));
        let since = c
            .call("log.read", json!({"sinceId": ids[ids.len() - 2]}))
            .await
            .expect("log");
        assert_eq!(since["entries"].as_array().map(Vec::len), Some(1));
    });
}

#[test]
fn a_connection_hears_only_its_own_session() {
    let d = start(scripted(&["<<PLAN:p:PLAN\n<<SEND[200]:done:SEND"]));
    block_on(async {
        let a = connect(&d.url).await;
        let b = connect(&d.url).await;
        a.call("session.create", json!({"name": "a"}))
            .await
            .expect("a");
        b.call("session.create", json!({"name": "b"}))
            .await
            .expect("b");
        let r = b
            .call("loop.run", json!({"prompt": "go"}))
            .await
            .expect("run");
        until_terminated(&b, r["loopId"].as_i64().expect("id")).await;
        // Everything pushed to `a` before this answer is already queued on its side.
        a.call("ping", json!({})).await.expect("ping");
        let mut heard = Vec::new();
        while let Ok(Some(n)) = tokio::time::timeout(Duration::ZERO, a.notification()).await {
            heard.push(n.method);
        }
        assert_eq!(heard, ["session/created", "session/created"]);
    });
}
