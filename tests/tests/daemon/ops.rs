//! PLURNK.md §4.2 `op.*` — a client's own statements over a real WebSocket: each ergonomic
//! method builds one statement, `op.parse` takes raw DSL, `op.dispatch` an AST, all run as
//! one client turn in the attached run (rows with origin `client`, notified as `log/entry`);
//! `op.look` reads with no row. Side effects propose 202 like the model's, and a client turn
//! is refused while the run's loop is running or parked.

use serde_json::{json, Value};

use crate::common::{
    block_on, code, connect, one_turn_model, rows_notified, scripted, start, until,
    until_terminated,
};
use agentos_engine::daemon::client::Client;

/// The results of an op call.
fn results(v: &Value) -> &Vec<Value> {
    v["results"].as_array().expect("results")
}

/// The row ids of an op call's results (every result wrote a row).
fn row_ids(v: &Value) -> Vec<i64> {
    results(v)
        .iter()
        .map(|r| r["rowId"].as_i64().expect("a row"))
        .collect()
}

async fn log_len(c: &Client) -> usize {
    let l = c.call("log.read", json!({})).await.expect("log");
    l["entries"].as_array().expect("entries").len()
}

#[test]
fn op_edit_then_op_read_round_trip_a_known_entry_and_both_rows_are_notified() {
    let d = start(one_turn_model());
    block_on(async {
        let c = connect(&d.url).await;
        // Unattached: the envelope creates the session and run.
        let body = "alpha\nbeta :EDIT here\n";
        let e = c
            .call(
                "op.edit",
                json!({"target": "known:///notes/a.md", "content": body, "tags": ["notes"]}),
            )
            .await
            .expect("op.edit");
        // The body holds the close literal, so the statement is quoted with a suffix.
        let text = e["statement"].as_str().expect("statement");
        assert!(
            text.starts_with("<<EDIT1[notes](known:///notes/a.md):"),
            "{text}"
        );
        let r = &results(&e)[0];
        assert_eq!(
            (r["op"].as_str(), r["status"].as_u64()),
            (Some("EDIT"), Some(201)),
            "{e}"
        );
        let read = c
            .call("op.read", json!({"target": "known:///notes/a.md"}))
            .await
            .expect("op.read");
        let got = &results(&read)[0];
        assert_eq!(got["status"], 200, "{read}");
        assert!(
            got["body"]
                .as_str()
                .is_some_and(|b| b.contains("2:\tbeta :EDIT here")),
            "{read}"
        );
        let ids = [
            r["rowId"].as_i64().expect("edit row"),
            got["rowId"].as_i64().expect("read row"),
        ];
        let notified = rows_notified(&c, &ids).await;
        for n in &notified {
            assert_eq!(n["origin"], "client", "{n}");
        }
        assert_eq!(notified[0]["op"], "EDIT");
        assert_eq!(notified[1]["op"], "READ");
        let entry = c
            .call("entry.read", json!({"target": "known:///notes/a.md"}))
            .await
            .expect("entry");
        assert_eq!(entry["entry"]["channels"][0]["content"], body, "{entry}");
        assert_eq!(entry["entry"]["tags"], json!(["notes"]));
    });
}

#[test]
fn op_find_lists_the_entries_in_its_scope() {
    let d = start(one_turn_model());
    block_on(async {
        let c = connect(&d.url).await;
        c.call("session.create", json!({})).await.expect("create");
        for (t, body) in [
            ("known:///kb/x.md", "retry policy"),
            ("known:///kb/y.md", "timeouts"),
        ] {
            c.call("op.edit", json!({"target": t, "content": body}))
                .await
                .expect("edit");
        }
        let all = c
            .call("op.find", json!({"scope": "known:///kb/"}))
            .await
            .expect("find");
        let r = &results(&all)[0];
        assert_eq!(
            (r["op"].as_str(), r["status"].as_u64()),
            (Some("FIND"), Some(200)),
            "{all}"
        );
        let items: Vec<Value> =
            serde_json::from_str(r["body"].as_str().expect("json")).expect("json");
        let paths: Vec<&str> = items.iter().filter_map(|i| i["path"].as_str()).collect();
        assert_eq!(paths, ["known:///kb/x.md", "known:///kb/y.md"]);
        let matched = c
            .call(
                "op.find",
                json!({"scope": "known:///kb/", "matcher": "retry"}),
            )
            .await
            .expect("find with a matcher");
        let items: Vec<Value> =
            serde_json::from_str(results(&matched)[0]["body"].as_str().expect("json"))
                .expect("json");
        let paths: Vec<&str> = items.iter().filter_map(|i| i["path"].as_str()).collect();
        assert_eq!(paths, ["known:///kb/x.md"]);
    });
}

#[test]
fn op_copy_and_op_move_carry_an_entry_between_known_paths() {
    let d = start(one_turn_model());
    block_on(async {
        let c = connect(&d.url).await;
        c.call("session.create", json!({})).await.expect("create");
        c.call(
            "op.edit",
            json!({"target": "known:///a.md", "content": "one\ntwo\n"}),
        )
        .await
        .expect("edit");
        let copied = c
            .call(
                "op.copy",
                json!({"source": "known:///a.md", "destination": "known:///b.md"}),
            )
            .await
            .expect("copy");
        assert_eq!(results(&copied)[0]["status"], 201, "{copied}");
        let moved = c
            .call(
                "op.move",
                json!({"source": "known:///b.md", "destination": "known:///c.md"}),
            )
            .await
            .expect("move");
        assert_eq!(results(&moved)[0]["status"], 201, "{moved}");
        let content = |v: &Value| v["entry"]["channels"][0]["content"].clone();
        let a = c
            .call("entry.read", json!({"target": "known:///a.md"}))
            .await
            .expect("a");
        let cc = c
            .call("entry.read", json!({"target": "known:///c.md"}))
            .await
            .expect("c");
        assert_eq!(content(&a), "one\ntwo\n");
        assert_eq!(content(&cc), "one\ntwo\n");
        assert_eq!(
            code(
                c.call("entry.read", json!({"target": "known:///b.md"}))
                    .await
            ),
            -32003,
            "the move removed its source"
        );
        // A second copy onto an identical destination changes nothing.
        let again = c
            .call(
                "op.copy",
                json!({"source": "known:///a.md", "destination": "known:///c.md"}),
            )
            .await
            .expect("copy again");
        assert_eq!(results(&again)[0]["status"], 304, "{again}");
    });
}

#[test]
fn op_fold_and_op_open_change_a_rows_display_without_writing_a_row() {
    let d = start(one_turn_model());
    block_on(async {
        let c = connect(&d.url).await;
        c.call("session.create", json!({})).await.expect("create");
        let e = c
            .call(
                "op.edit",
                json!({"target": "known:///f.md", "content": "x"}),
            )
            .await
            .expect("edit");
        let row = results(&e)[0].clone();
        let (id, path) = (
            row["rowId"].as_i64().expect("id"),
            row["path"].as_str().expect("path"),
        );
        let expanded = |entries: &Value| {
            entries["entries"]
                .as_array()
                .and_then(|a| a.iter().find(|r| r["id"] == id))
                .map(|r| r["expanded"].clone())
                .expect("the row")
        };
        let before = log_len(&c).await;
        let folded = c
            .call("op.fold", json!({"target": path}))
            .await
            .expect("fold");
        let f = &results(&folded)[0];
        assert_eq!(f["status"], 200, "{folded}");
        assert_eq!(f["rowId"], Value::Null, "a successful FOLD writes no row");
        assert_eq!(f["changed"], json!([id]));
        assert_eq!(log_len(&c).await, before);
        let log = c.call("log.read", json!({})).await.expect("log");
        assert_eq!(expanded(&log), false);
        let opened = c
            .call("op.open", json!({"target": path}))
            .await
            .expect("open");
        assert_eq!(results(&opened)[0]["status"], 200, "{opened}");
        let log = c.call("log.read", json!({})).await.expect("log");
        assert_eq!(expanded(&log), true);
        // Already open: a 304 row says so.
        let again = c
            .call("op.open", json!({"target": path}))
            .await
            .expect("open again");
        assert_eq!(results(&again)[0]["status"], 304, "{again}");
        assert!(results(&again)[0]["rowId"].is_i64());
    });
}

#[test]
fn op_send_410_deletes_an_entry_and_a_send_without_recipient_is_only_logged() {
    let d = start(one_turn_model());
    block_on(async {
        let c = connect(&d.url).await;
        c.call("session.create", json!({})).await.expect("create");
        c.call(
            "op.edit",
            json!({"target": "known:///gone.md", "content": "bye"}),
        )
        .await
        .expect("edit");
        let sent = c
            .call(
                "op.send",
                json!({"recipient": "known:///gone.md", "status": 410}),
            )
            .await
            .expect("send");
        assert_eq!(sent["statement"], "<<SEND[410](known:///gone.md)::SEND");
        assert_eq!(results(&sent)[0]["status"], 200, "{sent}");
        assert_eq!(
            code(
                c.call("entry.read", json!({"target": "known:///gone.md"}))
                    .await
            ),
            -32003
        );
        let note = c
            .call("op.send", json!({"content": "hello from the client"}))
            .await
            .expect("broadcast send");
        let r = &results(&note)[0];
        assert_eq!(
            (r["op"].as_str(), r["status"].as_u64()),
            (Some("SEND"), Some(200)),
            "{note}"
        );
        assert_eq!(r["body"], "hello from the client");
    });
}

#[test]
fn op_exec_proposes_202_and_runs_once_accepted_while_the_run_refuses_other_client_turns() {
    let project = agentos_tests::git_project(&[("README.md", b"hello\n")]);
    let d = start(one_turn_model());
    block_on(async {
        let c = connect(&d.url).await;
        c.call(
            "session.create",
            json!({ "projectRoot": project.path().to_str().expect("utf-8") }),
        )
        .await
        .expect("create");
        let ex = c
            .call("op.exec", json!({"command": "echo hi", "runtime": "sh"}))
            .await
            .expect("exec");
        let r = results(&ex)[0].clone();
        assert_eq!(r["status"], 202, "{ex}");
        assert_eq!(r["state"], "proposed");
        let (id, loop_id) = (
            r["rowId"].as_i64().expect("row"),
            r["loopId"].as_i64().expect("loop"),
        );
        let asked = until(&c, |n| n.method == "loop/proposal").await;
        assert_eq!(asked.last().expect("proposal").params["logEntryId"], id);
        // The client loop is parked on its proposal: another client turn waits its turn.
        match c.call("op.read", json!({"target": "README.md"})).await {
            Err(agentos_engine::daemon::client::ClientError::Rpc(e)) => {
                assert_eq!(e.code, -32008, "{e:?}");
                assert_eq!(
                    e.data.as_ref().map(|d| d["loopId"].clone()),
                    Some(json!(loop_id))
                );
            }
            other => panic!("expected a busy run, got {other:?}"),
        }
        // A look reads beside it.
        let look = c
            .call("op.look", json!({"text": "<<READ(README.md)::READ"}))
            .await
            .expect("look while parked");
        assert_eq!(results(&look)[0]["status"], 200, "{look}");
        c.call(
            "loop.resolve",
            json!({"logEntryId": id, "decision": "accept"}),
        )
        .await
        .expect("accept");
        let notes = until_terminated(&c, loop_id).await;
        assert_eq!(notes.last().expect("end").params["finalStatus"], 200);
        let out = notes
            .iter()
            .filter(|n| n.method == "log/entry")
            .map(|n| &n.params["entry"])
            .find(|e| e["op"] == "READ" && e["target"]["fragment"] == "stdout")
            .expect("the command's stdout row");
        assert_eq!(out["rx"], "hi\n[exit 0]", "{out}");
        let resolved = notes
            .iter()
            .filter(|n| n.method == "log/entry")
            .map(|n| &n.params["entry"])
            .find(|e| e["id"] == id)
            .expect("the resolved proposal");
        assert_eq!(resolved["state"], "resolved", "{resolved}");
        // The run is free again.
        let read = c
            .call("op.read", json!({"target": "README.md"}))
            .await
            .expect("read");
        assert_eq!(results(&read)[0]["status"], 200, "{read}");
    });
}

#[test]
fn a_client_turn_is_refused_while_a_model_loop_is_parked_and_runs_after_it() {
    let project = agentos_tests::git_project(&[("notes.txt", b"alpha\n")]);
    let d = start(scripted(&[
        "<<PLAN:fix:PLAN\n<<EDIT(notes.txt):ALPHA:EDIT\n<<SEND[102]:proposed:SEND",
        "<<PLAN:done:PLAN\n<<SEND[200]:fixed:SEND",
    ]));
    block_on(async {
        let c = connect(&d.url).await;
        c.call(
            "session.create",
            json!({ "projectRoot": project.path().to_str().expect("utf-8") }),
        )
        .await
        .expect("create");
        let run = c
            .call("loop.run", json!({"prompt": "shout"}))
            .await
            .expect("run");
        let loop_id = run["loopId"].as_i64().expect("loop");
        let asked = until(&c, |n| n.method == "loop/proposal").await;
        let id = asked.last().expect("proposal").params["logEntryId"].clone();
        assert_eq!(
            code(
                c.call(
                    "op.edit",
                    json!({"target": "known:///k.md", "content": "k"})
                )
                .await
            ),
            -32008
        );
        c.call(
            "loop.resolve",
            json!({"logEntryId": id, "decision": "reject"}),
        )
        .await
        .expect("reject");
        let notes = until_terminated(&c, loop_id).await;
        assert_eq!(notes.last().expect("end").params["finalStatus"], 200);
        let e = c
            .call(
                "op.edit",
                json!({"target": "known:///k.md", "content": "k"}),
            )
            .await
            .expect("edit after the loop");
        assert_eq!(results(&e)[0]["status"], 201, "{e}");
    });
}

#[test]
fn op_parse_dispatches_two_statements_as_one_turn() {
    let d = start(one_turn_model());
    block_on(async {
        let c = connect(&d.url).await;
        c.call("session.create", json!({})).await.expect("create");
        let p = c
            .call(
                "op.parse",
                json!({"text": "<<EDIT(known:///p.md):one:EDIT\n<<READ(known:///p.md)::READ"}),
            )
            .await
            .expect("parse");
        let rs = results(&p);
        assert_eq!(rs.len(), 2, "{p}");
        assert_eq!(
            (rs[0]["op"].as_str(), rs[0]["status"].as_u64()),
            (Some("EDIT"), Some(201))
        );
        // The READ sees the EDIT of the same turn.
        assert_eq!(
            (rs[1]["op"].as_str(), rs[1]["status"].as_u64()),
            (Some("READ"), Some(200))
        );
        assert_eq!(rs[1]["body"], "1:\tone");
        // One loop, one turn: log:///L/1/1 and log:///L/1/2.
        assert_eq!(rs[0]["loopId"], rs[1]["loopId"]);
        let (p0, p1) = (
            rs[0]["path"].as_str().unwrap(),
            rs[1]["path"].as_str().unwrap(),
        );
        assert!(
            p0.ends_with("/1/1/EDIT") && p1.ends_with("/1/2/READ"),
            "{p0} {p1}"
        );
        let ids = row_ids(&p);
        let turns: Vec<Value> = rows_notified(&c, &ids)
            .await
            .iter()
            .map(|e| e["turnId"].clone())
            .collect();
        assert_eq!(turns[0], turns[1]);
        // The run's model loops still drain after client loops.
        let run = c
            .call("loop.run", json!({"prompt": "hi"}))
            .await
            .expect("run");
        let notes = until_terminated(&c, run["loopId"].as_i64().expect("loop")).await;
        assert_eq!(notes.last().expect("end").params["finalStatus"], 200);
    });
}

#[test]
fn op_parse_of_malformed_text_answers_parse_error_rows_and_the_connection_lives() {
    let d = start(one_turn_model());
    block_on(async {
        let c = connect(&d.url).await;
        c.call("session.create", json!({})).await.expect("create");
        let unclosed = c
            .call(
                "op.parse",
                json!({"text": "<<EDIT(known:///x.md):never closed"}),
            )
            .await
            .expect("parse");
        let rs = results(&unclosed);
        assert!(!rs.is_empty(), "{unclosed}");
        for r in rs {
            assert_eq!(
                (r["op"].as_str(), r["status"].as_u64()),
                (Some("error"), Some(400)),
                "{r}"
            );
            assert!(r["rowId"].is_i64());
        }
        assert_eq!(
            code(
                c.call("entry.read", json!({"target": "known:///x.md"}))
                    .await
            ),
            -32003,
            "nothing after an unparsed tail runs"
        );
        let prose = c
            .call("op.parse", json!({"text": "just some words"}))
            .await
            .expect("parse prose");
        let r = &results(&prose)[0];
        assert_eq!(
            (r["op"].as_str(), r["status"].as_u64()),
            (Some("error"), Some(400)),
            "{prose}"
        );
        // A malformed statement beside a good one: the error row and the good row.
        let mixed = c
            .call(
                "op.parse",
                json!({"text": "<<READ(known:///a<<b)::READ\n<<EDIT(known:///ok.md):fine:EDIT"}),
            )
            .await
            .expect("parse mixed");
        let ops: Vec<(&str, u64)> = results(&mixed)
            .iter()
            .map(|r| {
                (
                    r["op"].as_str().unwrap_or(""),
                    r["status"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        assert_eq!(ops, [("error", 400), ("EDIT", 201)], "{mixed}");
        assert_eq!(c.call("ping", json!({})).await.expect("alive"), json!({}));
    });
}

#[test]
fn op_look_reads_without_writing_a_row() {
    let d = start(one_turn_model());
    block_on(async {
        let c = connect(&d.url).await;
        c.call("session.create", json!({})).await.expect("create");
        c.call(
            "op.edit",
            json!({"target": "known:///l.md", "content": "seen\n"}),
        )
        .await
        .expect("edit");
        let before = log_len(&c).await;
        let look = c
            .call("op.look", json!({"text": "<<READ(known:///l.md)::READ"}))
            .await
            .expect("look");
        let r = &results(&look)[0];
        assert_eq!(r["status"], 200, "{look}");
        assert_eq!(r["rowId"], Value::Null);
        assert_eq!(r["body"], "1:\tseen");
        let missing = c
            .call("op.look", json!({"text": "<<READ(known:///nope.md)::READ"}))
            .await
            .expect("look at nothing");
        assert_eq!(results(&missing)[0]["status"], 404, "{missing}");
        assert_eq!(log_len(&c).await, before, "a look writes no row");
        let loops = c.call("session.prompts", json!({})).await.expect("prompts");
        assert_eq!(
            loops["prompts"].as_array().map(Vec::len),
            Some(1),
            "only the edit's loop: {loops}"
        );
        for text in [
            "<<EDIT(known:///l.md):no:EDIT",
            "<<READ(known:///l.md):unclosed",
            "words",
        ] {
            assert_eq!(
                code(c.call("op.look", json!({"text": text})).await),
                -32602,
                "{text}"
            );
        }
    });
}

#[test]
fn op_dispatch_runs_a_statement_ast() {
    let d = start(one_turn_model());
    block_on(async {
        let c = connect(&d.url).await;
        c.call("session.create", json!({})).await.expect("create");
        let parsed =
            agentos_engine::grammar::parse("<<EDIT[ast](known:///ast.md)<-1>:from an AST:EDIT");
        let st = parsed.statements().next().expect("a statement");
        let ast = serde_json::to_value(st).expect("ast json");
        let r = c
            .call("op.dispatch", json!({"statement": ast}))
            .await
            .expect("dispatch");
        assert_eq!(
            r["statement"],
            "<<EDIT[ast](known:///ast.md)<-1>:from an AST:EDIT"
        );
        assert_eq!(results(&r)[0]["status"], 201, "{r}");
        let e = c
            .call("entry.read", json!({"target": "known:///ast.md"}))
            .await
            .expect("entry");
        assert_eq!(e["entry"]["channels"][0]["content"], "from an AST");
        for bad in [
            json!({"op": "NOPE"}),
            json!("text"),
            json!({"op": "READ", "body": 5}),
        ] {
            assert_eq!(
                code(c.call("op.dispatch", json!({"statement": bad})).await),
                -32602,
                "{bad}"
            );
        }
    });
}

#[test]
fn bad_params_of_op_methods_are_invalid_params_and_create_nothing() {
    let d = start(one_turn_model());
    block_on(async {
        let c = connect(&d.url).await;
        let cases = [
            ("op.read", json!({})),
            ("op.read", json!({"target": 5})),
            (
                "op.read",
                json!({"target": "known:///x.md", "lineRange": "1-2"}),
            ),
            (
                "op.read",
                json!({"target": "known:///x.md", "lineRange": []}),
            ),
            ("op.edit", json!({"target": "known:///x.md"})),
            (
                "op.edit",
                json!({"target": "known:///x.md", "content": "c", "tags": ["a,b"]}),
            ),
            (
                "op.edit",
                json!({"target": "known:///x.md", "content": "c", "tags": "a"}),
            ),
            ("op.find", json!({"scope": "known:///", "content": "typo"})),
            ("op.copy", json!({"source": "known:///a.md"})),
            ("op.move", json!({"destination": "known:///b.md"})),
            ("op.send", json!({"status": 42, "content": "x"})),
            ("op.exec", json!({"cwd": "."})),
            ("op.open", json!([1, 2])),
            ("op.parse", json!({"text": "   "})),
            ("op.parse", json!({})),
            ("op.look", json!({})),
            ("op.dispatch", json!({})),
        ];
        for (m, p) in cases {
            match c.call(m, p.clone()).await {
                Err(agentos_engine::daemon::client::ClientError::Rpc(e)) => {
                    assert_eq!(e.code, -32602, "{m} {p}: {e:?}");
                    assert!(e.message.len() > 10, "a clear message: {e:?}");
                }
                other => panic!("{m} {p}: expected −32602, got {other:?}"),
            }
        }
        let s = c.call("session.list", json!({})).await.expect("list");
        assert_eq!(s["sessions"], json!([]), "no bad call created a session");
    });
}
