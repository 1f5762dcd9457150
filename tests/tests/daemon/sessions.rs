//! The session and loop methods: list, attach (by id, by run name, `plurnk` reserved),
//! runs, prompts, rename, set_root, providers.list, loop.inject and loop.cancel.

use serde_json::json;

use crate::common::{block_on, code, connect, one_turn_model, start, until_terminated};

#[test]
fn sessions_runs_prompts_and_rename() {
    let d = start(one_turn_model());
    block_on(async {
        let c = connect(&d.url).await;
        let s = c
            .call(
                "session.create",
                json!({"name": "work", "projectRoot": "/tmp/p", "settings": {"ask": true}}),
            )
            .await
            .expect("create");
        assert_eq!(s["runName"], "main");
        assert_eq!(s["projectRoot"], "/tmp/p");
        for p in ["first", "second"] {
            let r = c.call("loop.run", json!({"prompt": p})).await.expect("run");
            until_terminated(&c, r["loopId"].as_i64().expect("id")).await;
        }
        let prompts = c
            .call("session.prompts", json!({"limit": 1}))
            .await
            .expect("prompts");
        assert_eq!(prompts["prompts"].as_array().map(Vec::len), Some(1));
        assert_eq!(prompts["prompts"][0]["prompt"], "second");
        let other = connect(&d.url).await;
        assert_eq!(
            code(
                other
                    .call(
                        "session.attach",
                        json!({"id": s["id"], "runName": "plurnk"})
                    )
                    .await
            ),
            -32602
        );
        let side = other
            .call("session.attach", json!({"id": s["id"], "runName": "side"}))
            .await
            .expect("attach new run");
        assert_eq!(side["runName"], "side");
        let runs = other.call("session.runs", json!({})).await.expect("runs");
        let names: Vec<&str> = runs["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert_eq!(names, ["side", "main"], "newest first");
        let back = other
            .call(
                "session.attach",
                json!({"id": s["id"], "runId": s["runId"]}),
            )
            .await
            .expect("attach by id");
        assert_eq!(back["runName"], "main");
        other
            .call("session.rename", json!({"name": "renamed"}))
            .await
            .expect("rename");
        let list = c.call("session.list", json!({})).await.expect("list");
        assert_eq!(list["sessions"][0]["name"], "renamed");
        assert_eq!(list["sessions"][0]["settings"]["ask"], true);
        let providers = c
            .call("providers.list", json!({}))
            .await
            .expect("providers");
        assert_eq!(providers["aliases"][0]["provider"], "scripted");
        assert_eq!(providers["aliases"][0]["active"], true);
    });
}

#[test]
fn inject_queues_on_an_idle_run_and_cancel_reports_nothing_to_cancel() {
    let d = start(one_turn_model());
    block_on(async {
        let c = connect(&d.url).await;
        c.call("session.create", json!({})).await.expect("create");
        let cancel = c.call("loop.cancel", json!({})).await.expect("cancel");
        assert_eq!(cancel["cancelled"], false);
        let inj = c
            .call("loop.inject", json!({"prompt": "hi"}))
            .await
            .expect("inject");
        assert_eq!(inj["action"], "enqueued_new_loop");
        // The injected prompt became a loop that ends; its termination reaches us.
        loop {
            let n = crate::common::next(&c).await;
            if n.method == "loop/terminated" {
                assert_eq!(n.params["finalStatus"], 200);
                break;
            }
        }
    });
}

#[test]
fn set_root_moves_the_attached_session_and_refuses_a_missing_directory() {
    let d = start(one_turn_model());
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    let root = |p: &tempfile::TempDir| p.path().to_str().expect("utf-8").to_owned();
    block_on(async {
        let c = connect(&d.url).await;
        c.call("session.create", json!({"projectRoot": root(&a)}))
            .await
            .expect("create");
        let set = c
            .call("session.set_root", json!({"projectRoot": root(&b)}))
            .await
            .expect("set_root");
        assert_eq!(set["projectRoot"], root(&b));
        let list = c.call("session.list", json!({})).await.expect("list");
        assert_eq!(list["sessions"][0]["projectRoot"], root(&b));
        let missing = format!("{}/nope", root(&b));
        assert_eq!(
            code(
                c.call("session.set_root", json!({"projectRoot": missing}))
                    .await
            ),
            -32602
        );
        c.call("session.set_root", json!({"projectRoot": null}))
            .await
            .expect("headless");
        let list = c.call("session.list", json!({})).await.expect("list");
        assert!(list["sessions"][0]["projectRoot"].is_null(), "{list}");
    });
}
