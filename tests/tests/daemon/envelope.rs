//! The envelope and error codes of PLURNK.md §4.1: ping, discover from the registry,
//! −32700 / −32600 / −32601 / −32602 / −32000 / −32001 / −32002 / −32003 / −32005, and
//! the auto-create of a session by a work method on an unattached connection.

use std::collections::BTreeSet;

use agentos_engine::daemon::methods::METHODS;
use serde_json::json;

use crate::common::{block_on, code, connect, next, one_turn_model, start, until_terminated};

#[test]
fn ping_and_discover_describe_every_registered_method() {
    let d = start(one_turn_model());
    block_on(async {
        let c = connect(&d.url).await;
        assert_eq!(c.call("ping", json!(null)).await.expect("ping"), json!({}));
        let cat = c.call("discover", json!({})).await.expect("discover");
        let listed: BTreeSet<&str> = cat["methods"]
            .as_array()
            .expect("methods")
            .iter()
            .map(|m| m["name"].as_str().expect("name"))
            .collect();
        let registered: BTreeSet<&str> = METHODS.iter().map(|m| m.name).collect();
        assert_eq!(listed, registered);
        for m in cat["methods"].as_array().expect("methods") {
            assert!(m["requiresInit"].is_boolean(), "{m}");
            assert!(m["params"].is_object(), "{m}");
            assert!(
                m["description"].as_str().is_some_and(|s| !s.is_empty()),
                "{m}"
            );
        }
        let by_name = |n: &str| {
            cat["methods"]
                .as_array()
                .and_then(|a| a.iter().find(|m| m["name"] == n))
                .cloned()
                .expect("listed")
        };
        assert_eq!(by_name("ping")["requiresInit"], false);
        assert_eq!(by_name("loop.run")["requiresInit"], true);
        assert_eq!(by_name("loop.run")["available"], true);
        assert_eq!(by_name("loop.resolve")["available"], true);
        assert_eq!(by_name("session.members")["available"], true);
        // Issue 14: every method of PLURNK.md §4.2 works in this build.
        for m in cat["methods"].as_array().expect("methods") {
            assert_eq!(m["available"], true, "{m}");
        }
        let notes: Vec<&str> = cat["notifications"]
            .as_array()
            .expect("notifications")
            .iter()
            .filter_map(|n| n["name"].as_str())
            .collect();
        assert_eq!(
            notes,
            [
                "log/entry",
                "loop/proposal",
                "loop/terminated",
                "session/created"
            ]
        );
        assert!(cat["capabilities"]["schemes"]
            .as_array()
            .is_some_and(|s| s.contains(&json!("known"))));
    });
}

#[test]
fn malformed_frames_get_errors_and_the_connection_lives_on() {
    let d = start(one_turn_model());
    block_on(async {
        let c = connect(&d.url).await;
        c.send_text("{not json".into()).await.expect("send");
        let r = c.orphan().await.expect("answer");
        assert_eq!(r["error"]["code"], -32700, "{r}");
        assert_eq!(r["id"], json!(null));
        c.send_text(r#"{"jsonrpc":"2.0","id":"x","method":5}"#.into())
            .await
            .expect("send");
        let r = c.orphan().await.expect("answer");
        assert_eq!(r["error"]["code"], -32600, "{r}");
        assert_eq!(r["id"], "x");
        c.send_text(r#"[]"#.into()).await.expect("send");
        assert_eq!(c.orphan().await.expect("answer")["error"]["code"], -32600);
        // A batch answers each call; a client notification (no id) gets nothing.
        c.send_text(
            r#"[{"jsonrpc":"2.0","id":"a","method":"ping"},{"jsonrpc":"2.0","method":"ping"},{"jsonrpc":"2.0","id":"b","method":"nope"}]"#
                .into(),
        )
        .await
        .expect("send");
        let a = c.orphan().await.expect("a");
        let b = c.orphan().await.expect("b");
        assert_eq!(a["result"], json!({}));
        assert_eq!(b["error"]["code"], -32601);
        assert_eq!(
            c.call("ping", json!({})).await.expect("still alive"),
            json!({})
        );
    });
}

#[test]
fn unknown_methods_are_method_not_found() {
    let d = start(one_turn_model());
    block_on(async {
        let c = connect(&d.url).await;
        assert_eq!(code(c.call("frobnicate", json!({})).await), -32601);
        c.call("session.create", json!({})).await.expect("create");
        match c.call("op.frobnicate", json!({"scope": "."})).await {
            Err(agentos_engine::daemon::client::ClientError::Rpc(e)) => {
                assert_eq!(e.code, -32601);
                assert!(e.message.contains("discover"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn bad_params_and_missing_things_have_their_codes() {
    let d = start(one_turn_model());
    block_on(async {
        let c = connect(&d.url).await;
        assert_eq!(
            code(c.call("session.create", json!({"name": 5})).await),
            -32602
        );
        assert_eq!(code(c.call("loop.run", json!({})).await), -32602);
        assert_eq!(code(c.call("loop.run", json!([1, 2])).await), -32602);
        assert_eq!(
            code(c.call("session.attach", json!({"id": 999})).await),
            -32001
        );
        assert_eq!(
            code(c.call("log.read", json!({"loopId": 999})).await),
            -32002
        );
        // Nothing above created a session.
        let s = c.call("session.list", json!({})).await.expect("list");
        assert_eq!(s["sessions"], json!([]));
        c.call("session.create", json!({"name": "one"}))
            .await
            .expect("create");
        assert_eq!(
            code(c.call("session.create", json!({"name": "one"})).await),
            -32602
        );
        assert_eq!(
            code(
                c.call("entry.read", json!({"target": "known:///missing.md"}))
                    .await
            ),
            -32003
        );
        assert_eq!(
            code(
                c.call("entry.read", json!({"target": "http://example.com/x"}))
                    .await
            ),
            -32005
        );
        let docs = c
            .call("entry.read", json!({"target": "plurnk:///docs/known.md"}))
            .await
            .expect("docs entry");
        assert_eq!(docs["status"], 200);
        assert!(docs["entry"]["channels"][0]["content"]
            .as_str()
            .is_some_and(|s| !s.is_empty()));
    });
}

#[test]
fn uninitialised_calls_are_refused_and_work_auto_creates_a_session() {
    let d = start(one_turn_model());
    block_on(async {
        let c = connect(&d.url).await;
        assert_eq!(
            code(c.call("session.rename", json!({"name": "x"})).await),
            -32000
        );
        assert_eq!(code(c.call("loop.cancel", json!({})).await), -32000);
        assert_eq!(
            code(c.call("entry.read", json!({"target": "known:///a"})).await),
            -32000
        );
        assert_eq!(code(c.call("log.read", json!({})).await), -32000);
        let r = c
            .call("loop.run", json!({"prompt": "hello"}))
            .await
            .expect("run");
        assert_eq!(r["action"], "enqueued_new_loop");
        assert_eq!(r["finalStatus"], 100);
        let loop_id = r["loopId"].as_i64().expect("loop id");
        let first = next(&c).await;
        assert_eq!(first.method, "session/created");
        assert_eq!(first.params["sessionId"], r["sessionId"]);
        let rest = until_terminated(&c, loop_id).await;
        assert_eq!(rest.last().expect("end").params["finalStatus"], 200);
        // Now attached: the same connection renames its session.
        let renamed = c
            .call("session.rename", json!({"name": "auto"}))
            .await
            .expect("rename");
        assert_eq!(renamed["name"], "auto");
    });
}
