//! PLURNK.md §4.2 `session.set_root` beyond `sessions.rs`: a session moves between headless
//! and a project root, and the run's loops and client turns started afterwards hold the new
//! root's `fs` cap (each loop is granted its caps from the session as it is then); a path
//! that is not an existing directory, or a `projectRoot` that is not a string, is refused.

use serde_json::{json, Value};

use crate::common::{block_on, code, connect, scripted, start, until_terminated};
use agentos_engine::daemon::client::Client;

const READ_TURN: &str = "<<PLAN:look:PLAN\n<<READ(notes.txt)::READ\n<<SEND[102]:reading:SEND";
const DONE_TURN: &str = "<<PLAN:done:PLAN\n<<SEND[200]:ok:SEND";

/// Runs a loop whose model READs notes.txt and returns that READ row.
async fn loop_reads_notes(c: &Client) -> Value {
    let run = c
        .call("loop.run", json!({"prompt": "read notes"}))
        .await
        .expect("run");
    let loop_id = run["loopId"].as_i64().expect("loop");
    let notes = until_terminated(c, loop_id).await;
    assert_eq!(notes.last().expect("end").params["finalStatus"], 200);
    let log = c
        .call("log.read", json!({"loopId": loop_id}))
        .await
        .expect("log");
    log["entries"]
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|r| r["op"] == "READ" && r["origin"] == "model")
                .cloned()
        })
        .expect("the model's READ row")
}

#[test]
fn set_root_moves_a_headless_session_into_a_project_and_back() {
    let project = agentos_tests::git_project(&[("notes.txt", b"the notes\n")]);
    let root = project.path().to_str().expect("utf-8");
    let d = start(scripted(&[
        READ_TURN, DONE_TURN, READ_TURN, DONE_TURN, READ_TURN, DONE_TURN,
    ]));
    block_on(async {
        let c = connect(&d.url).await;
        let s = c.call("session.create", json!({})).await.expect("create");
        assert_eq!(s["projectRoot"], Value::Null);
        // Headless: the loop holds no fs cap.
        let row = loop_reads_notes(&c).await;
        assert_eq!(row["status"], 403, "{row}");
        let set = c
            .call("session.set_root", json!({"projectRoot": root}))
            .await
            .expect("set_root");
        assert_eq!(set["projectRoot"], root);
        let listed = c.call("session.list", json!({})).await.expect("list");
        assert_eq!(listed["sessions"][0]["projectRoot"], set["projectRoot"]);
        // The run's next loop holds the new root.
        let row = loop_reads_notes(&c).await;
        assert_eq!(row["status"], 200, "{row}");
        assert!(
            row["rx"].as_str().is_some_and(|b| b.contains("the notes")),
            "{row}"
        );
        // So does a client turn.
        let r = c
            .call("op.read", json!({"target": "notes.txt"}))
            .await
            .expect("op.read");
        assert_eq!(r["results"][0]["status"], 200, "{r}");
        let members = c.call("session.members", json!({})).await.expect("members");
        assert_eq!(members["members"][0]["path"], "notes.txt");
        // Back to headless.
        let set = c
            .call("session.set_root", json!({"projectRoot": null}))
            .await
            .expect("headless");
        assert_eq!(set["projectRoot"], Value::Null);
        let row = loop_reads_notes(&c).await;
        assert_eq!(row["status"], 403, "{row}");
        let members = c.call("session.members", json!({})).await.expect("members");
        assert_eq!(members["members"], json!([]));
    });
}

#[test]
fn set_root_refuses_what_is_not_an_existing_directory() {
    let project = agentos_tests::git_project(&[("notes.txt", b"n\n")]);
    let file = project.path().join("notes.txt");
    let d = start(scripted(&[]));
    block_on(async {
        let c = connect(&d.url).await;
        assert_eq!(
            code(
                c.call("session.set_root", json!({"projectRoot": null}))
                    .await
            ),
            -32000,
            "unattached"
        );
        c.call("session.create", json!({})).await.expect("create");
        let gone = project.path().join("no/such/dir");
        for p in [
            json!({"projectRoot": gone.to_str().expect("utf-8")}),
            json!({"projectRoot": file.to_str().expect("utf-8")}),
            json!({"projectRoot": ""}),
            json!({"projectRoot": 5}),
            json!({}),
        ] {
            match c.call("session.set_root", p.clone()).await {
                Err(agentos_engine::daemon::client::ClientError::Rpc(e)) => {
                    assert_eq!(e.code, -32602, "{p}: {e:?}");
                    assert!(
                        e.message.contains("project root")
                            || e.message.contains("projectRoot")
                            || e.message.contains("invalid params"),
                        "{e:?}"
                    );
                }
                other => panic!("{p}: expected −32602, got {other:?}"),
            }
        }
        let listed = c.call("session.list", json!({})).await.expect("list");
        assert_eq!(
            listed["sessions"][0]["projectRoot"],
            Value::Null,
            "unchanged"
        );
    });
}
