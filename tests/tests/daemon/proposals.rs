//! PLURNK.md §4.2 `loop.resolve` / `proposal.list` and §3.6 — over a real WebSocket: a loop
//! in a project proposes an edit, the client lists it, accepts it, and the file changes.

use serde_json::json;

use crate::common::{block_on, code, connect, scripted, start, until_terminated, PATIENCE};

#[test]
fn a_client_accepts_a_proposal_and_the_file_changes() {
    let project = agentos_tests::git_project(&[("notes.txt", b"alpha\nbeta\n")]);
    let root = project.path();
    let d = start(scripted(&[
        "<<PLAN:fix:PLAN\n<<EDIT(notes.txt)<2>:BETA:EDIT\n<<SEND[102]:proposed:SEND",
        "<<PLAN:done:PLAN\n<<SEND[200]:fixed:SEND",
    ]));
    block_on(async {
        let c = connect(&d.url).await;
        c.call(
            "session.create",
            json!({ "projectRoot": root.to_str().unwrap() }),
        )
        .await
        .expect("create");
        let run = c
            .call("loop.run", json!({ "prompt": "capitalise beta" }))
            .await
            .expect("run");
        let loop_id = run["loopId"].as_i64().expect("loop id");
        // Wait (bounded) for the proposal to be listed.
        let deadline = std::time::Instant::now() + PATIENCE;
        let row = loop {
            let l = c.call("proposal.list", json!({})).await.expect("list");
            if let Some(p) = l["proposals"].as_array().and_then(|a| a.first()) {
                break p.clone();
            }
            assert!(std::time::Instant::now() < deadline, "no proposal appeared");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert_eq!(row["status"], 202);
        assert_eq!(
            std::fs::read_to_string(root.join("notes.txt")).unwrap(),
            "alpha\nbeta\n"
        );
        let id = row["id"].as_i64().expect("row id");
        assert_eq!(
            code(
                c.call(
                    "loop.resolve",
                    json!({ "logEntryId": id, "decision": "maybe" })
                )
                .await
            ),
            -32602
        );
        c.call(
            "loop.resolve",
            json!({ "logEntryId": id, "decision": "accept" }),
        )
        .await
        .expect("resolve");
        let notes = until_terminated(&c, loop_id).await;
        let end = notes.last().unwrap();
        assert_eq!(end.params["finalStatus"], 200, "{end:?}");
        assert_eq!(
            std::fs::read_to_string(root.join("notes.txt")).unwrap(),
            "alpha\nBETA\n"
        );
        // A decision lands once.
        assert_eq!(
            code(
                c.call(
                    "loop.resolve",
                    json!({ "logEntryId": id, "decision": "accept" })
                )
                .await
            ),
            -32602
        );
    });
}
