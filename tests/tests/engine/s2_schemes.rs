//! PLURNK.md §2 — schemes: the address rules, the writer check, the log ledger, the plurnk
//! runtime entries, fan-out READ, matcher READ, KILL and `SEND[410]`, and the statuses of
//! what this build does not serve.

use crate::common::{ops, Harness};
use agentos_engine::LoopOptions;

#[test]
fn authority_and_path_forms_name_one_entry() {
    let h = Harness::new(&[
        "<<PLAN:p:PLAN\n<<EDIT(unknown://q.md):why?:EDIT\n<<EDIT(unknown:///q.md)<-1>:because:EDIT\n<<READ(unknown://q.md)::READ\n<<SEND[102]:c:SEND",
        "<<PLAN:p:PLAN\n<<SEND[200]:ok:SEND",
    ]);
    let lp = h.run_loop("x", LoopOptions::default());
    assert_eq!(
        h.ops(&lp, 1),
        ops(&[("EDIT", 201), ("EDIT", 200), ("READ", 200)])
    );
    assert_eq!(h.rx(&lp, 1, "READ"), "1:\twhy?\n2:\tbecause");
}

#[test]
fn writers_ledger_and_runtime_entries() {
    let h = Harness::new(&[
        concat!(
            "<<PLAN:p:PLAN\n",
            "<<READ(plurnk:///docs/known.md)::READ\n",
            "<<EDIT(plurnk:///prompt/1/1):overwrite my task:EDIT\n",
            "<<KILL(log:///1/1/1)::KILL\n",
            "<<READ(plurnk:///prompt/1/1)::READ\n",
            "<<SEND[102]:c:SEND"
        ),
        // The ledger holds committed turns: turn 1's rows are readable from turn 2 on.
        "<<PLAN:p:PLAN\n<<READ(log:///1/1/1)::READ\n<<FIND(log:///1/**/EDIT)::FIND\n<<READ(log:///9/9/9)::READ\n<<SEND[102]:c:SEND",
        "<<PLAN:p:PLAN\n<<SEND[200]:ok:SEND",
    ]);
    let lp = h.run_loop("the task", LoopOptions::default());
    assert_eq!(
        h.ops(&lp, 1),
        ops(&[("READ", 200), ("EDIT", 403), ("KILL", 405), ("READ", 200)])
    );
    assert_eq!(
        h.ops(&lp, 2),
        ops(&[("READ", 200), ("FIND", 200), ("READ", 404)])
    );
    let found = h
        .rows(&lp)
        .into_iter()
        .find(|r| r.turn_seq == 2 && r.op.as_str() == "FIND")
        .and_then(|r| r.rx)
        .unwrap_or_default();
    let found: serde_json::Value = serde_json::from_str(&found).expect("json");
    let paths: Vec<&str> = found
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|i| i["path"].as_str())
        .collect();
    assert_eq!(paths, vec!["log:///1/1/1/EDIT", "log:///1/1/6/EDIT"]);
    assert!(h.rx(&lp, 1, "READ").contains("long-term knowledge base"));
    let rows = h.rows(&lp);
    let prompt_read = rows
        .iter()
        .filter(|r| r.turn_seq == 1 && r.op.as_str() == "READ")
        .filter(|r| r.origin == agentos_engine::store::Origin::Model)
        .nth(1)
        .and_then(|r| r.rx.clone())
        .unwrap_or_default();
    assert_eq!(
        prompt_read, "1:\tthe task",
        "the model cannot overwrite its prompt"
    );
}

#[test]
fn glob_read_fans_out_and_matchers_select_lines() {
    let h = Harness::new(&[
        "<<PLAN:p:PLAN\n<<EDIT(known:///n/a.md):alpha\nbeta:EDIT\n<<EDIT(known:///n/b.md):gamma:EDIT\n<<SEND[102]:c:SEND",
        "<<PLAN:p:PLAN\n<<READ(known:///n/**)::READ\n<<READ(known:///n/a.md):beta:READ\n<<READ(known:///n/a.md):zeta:READ\n<<READ(known:///none/**)::READ\n<<SEND[102]:c:SEND",
        "<<PLAN:p:PLAN\n<<SEND[200]:ok:SEND",
    ]);
    let lp = h.run_loop("x", LoopOptions::default());
    assert_eq!(
        h.ops(&lp, 2),
        ops(&[
            ("READ", 200),
            ("READ", 200),
            ("READ", 200),
            ("READ", 204),
            ("READ", 404)
        ])
    );
    let reads: Vec<_> = h
        .rows(&lp)
        .into_iter()
        .filter(|r| r.turn_seq == 2 && r.op.as_str() == "READ")
        .map(|r| {
            (
                r.target.map(|t| t.uri()).unwrap_or_default(),
                r.rx.unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        reads[0],
        ("known:///n/a.md".into(), "1:\talpha\n2:\tbeta".into())
    );
    assert_eq!(reads[1], ("known:///n/b.md".into(), "1:\tgamma".into()));
    assert_eq!(reads[2].1, "2:\tbeta");
}

#[test]
fn kill_and_send_410_delete() {
    let h = Harness::new(&[
        "<<PLAN:p:PLAN\n<<EDIT(known:///a.md):a:EDIT\n<<EDIT(known:///b.md):b:EDIT\n<<SEND[102]:c:SEND",
        "<<PLAN:p:PLAN\n<<KILL(known:///a.md)::KILL\n<<SEND[410](known:///b.md)::SEND\n<<KILL(known:///a.md)::KILL\n<<READ(known:///b.md)::READ\n<<SEND[102]:c:SEND",
        "<<PLAN:p:PLAN\n<<SEND[200]:ok:SEND",
    ]);
    let lp = h.run_loop("x", LoopOptions::default());
    assert_eq!(
        h.ops(&lp, 2),
        ops(&[("KILL", 200), ("SEND", 200), ("KILL", 404), ("READ", 404)])
    );
}

#[test]
fn what_this_build_does_not_serve() {
    let h = Harness::new(&[
        concat!(
            "<<PLAN:p:PLAN\n",
            "<<READ(src/lib.rs)::READ\n",
            "<<READ(https://example.com/x)::READ\n",
            "<<EXEC[sh]:ls:EXEC\n",
            "<<OPEN(known:///a.md)::OPEN\n",
            "<<SEND[102]:c:SEND"
        ),
        "<<PLAN:p:PLAN\n<<SEND[200]:ok:SEND",
    ]);
    let lp = h.run_loop("x", LoopOptions::default());
    // A headless session holds no fs device (403); http is not a scheme here (501, soft);
    // no exec device (403); OPEN is a log directive (501).
    assert_eq!(
        h.ops(&lp, 1),
        ops(&[("READ", 403), ("READ", 501), ("EXEC", 403), ("OPEN", 501)])
    );
}
