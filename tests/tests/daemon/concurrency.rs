//! Many clients at once: 100 connections each create a session and run a loop to its end,
//! each hearing exactly its own loop.

use serde_json::json;

use crate::common::{block_on, connect, one_turn_model, start, until_terminated};

#[test]
fn a_hundred_clients_run_loops_at_once() {
    let d = start(one_turn_model());
    block_on(async {
        let mut tasks = Vec::new();
        for i in 0..100 {
            let url = d.url.clone();
            tasks.push(tokio::spawn(async move {
                let c = connect(&url).await;
                let s = c
                    .call("session.create", json!({"name": format!("client-{i}")}))
                    .await
                    .expect("create");
                let r = c
                    .call("loop.run", json!({"prompt": format!("task {i}")}))
                    .await
                    .expect("run");
                let loop_id = r["loopId"].as_i64().expect("id");
                let notes = until_terminated(&c, loop_id).await;
                for n in notes.iter().filter(|n| n.method == "log/entry") {
                    assert_eq!(
                        n.params["sessionId"], s["id"],
                        "only its own session's rows"
                    );
                }
                notes.last().expect("end").params["finalStatus"].as_i64()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.expect("task"), Some(200));
        }
        let c = connect(&d.url).await;
        let list = c.call("session.list", json!({})).await.expect("list");
        assert_eq!(list["sessions"].as_array().map(Vec::len), Some(100));
    });
}
