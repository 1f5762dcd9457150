//! PLURNK.md §1.4 — the op catalogue on the entry schemes: EDIT/READ round trip, the EDIT
//! positional rules and JSON edits, FIND by glob, regex and tag, the COPY/MOVE statuses.

use crate::common::{ops, Harness};
use agentos_engine::store::EntryKey;
use agentos_engine::LoopOptions;

fn entry_body(h: &Harness, path: &str) -> Option<String> {
    h.engine
        .store()
        .entry(h.session.id, h.run.id, &EntryKey::session("known", path))
        .expect("entry")
        .and_then(|e| e.channel("body").map(|c| c.content.clone()))
}

#[test]
fn edit_then_read_round_trip() {
    let h = Harness::new(&[
        "<<PLAN:note it:PLAN\n<<EDIT(known://notes.md):alpha\nbeta:EDIT\n<<SEND[102]:wrote:SEND",
        "<<PLAN:read it back:PLAN\n<<READ(known:///notes.md)::READ\n<<SEND[102]:reading:SEND",
        "<<PLAN:done:PLAN\n<<SEND[200]:notes hold alpha and beta:SEND",
    ]);
    let lp = h.run_loop("remember two words", LoopOptions::default());
    assert_eq!(lp.status, 200, "{lp:?}");
    assert_eq!(
        lp.terminal_message.as_deref(),
        Some("notes hold alpha and beta")
    );
    assert_eq!(h.ops(&lp, 1), ops(&[("EDIT", 201)]));
    assert_eq!(h.ops(&lp, 2), ops(&[("READ", 200)]));
    assert_eq!(h.rx(&lp, 2, "READ"), "1:\talpha\n2:\tbeta");
    assert_eq!(h.turn_statuses(&lp), vec![102, 102, 200]);
}

/// Every row of the EDIT positional table, one statement each, on `known:///e.md` that
/// starts as three lines.
#[test]
fn edit_positional_rules() {
    let cases: &[(&str, &str, u16, &str)] = &[
        // marker, body, status, resulting content
        ("", "one\ntwo\nthree", 201, "one\ntwo\nthree"),
        ("", "one\ntwo\nthree", 304, "one\ntwo\nthree"),
        ("<2>", "TWO", 200, "one\nTWO\nthree"),
        ("<2,3>", "x", 200, "one\nx"),
        ("<0>", "zero", 200, "zero\none\nx"),
        ("<-1>", "end", 200, "zero\none\nx\nend"),
        ("<1.5>", "half", 200, "zero\nhalf\none\nx\nend"),
        ("<9>", "far", 416, "zero\nhalf\none\nx\nend"),
        ("<1,-1>", "", 200, ""),
    ];
    let mut turns = Vec::new();
    for (marker, body, _, _) in cases {
        turns.push(format!(
            "<<PLAN:edit:PLAN\n<<EDIT(known:///e.md){marker}:{body}:EDIT\n<<SEND[102]:next:SEND"
        ));
    }
    turns.push("<<PLAN:done:PLAN\n<<SEND[200]:ok:SEND".into());
    let refs: Vec<&str> = turns.iter().map(String::as_str).collect();
    let mut cfg = agentos_engine::turn::EngineConfig::default();
    cfg.rails.max_strikes = 99;
    let h = crate::common::harness_with(cfg, &refs);
    let lp = h.run_loop("edit", LoopOptions::default());
    assert_eq!(lp.status, 200, "{lp:?}");
    for (i, (marker, _, status, _)) in cases.iter().enumerate() {
        assert_eq!(
            h.ops(&lp, i as i64 + 1),
            ops(&[("EDIT", *status)]),
            "EDIT{marker} (turn {})",
            i + 1
        );
    }
    assert_eq!(
        entry_body(&h, "/e.md").as_deref(),
        Some(cases.last().expect("case").3)
    );
}

/// Structural JSON edits on `known:///list.json`: append, prepend, replace, delete, bad body.
#[test]
fn json_entries_edit_by_item() {
    let steps: &[(&str, &str, u16)] = &[
        ("", "[1, 2, 3]", 201),
        ("<-1>", "4", 200),
        ("<0>", "0", 200),
        ("<2>", "\"one\"", 200),
        ("<5>", "", 200),
        ("<1>", "{not json", 400),
        ("<9>", "5", 416),
    ];
    let mut turns: Vec<String> = steps
        .iter()
        .map(|(m, b, _)| {
            format!("<<PLAN:j:PLAN\n<<EDIT(known:///list.json){m}:{b}:EDIT\n<<SEND[102]:n:SEND")
        })
        .collect();
    turns.push("<<PLAN:done:PLAN\n<<SEND[200]:ok:SEND".into());
    let refs: Vec<&str> = turns.iter().map(String::as_str).collect();
    let mut cfg = agentos_engine::turn::EngineConfig::default();
    cfg.rails.max_strikes = 99;
    let h = crate::common::harness_with(cfg, &refs);
    let lp = h.run_loop("json", LoopOptions::default());
    for (i, (m, _, s)) in steps.iter().enumerate() {
        assert_eq!(h.ops(&lp, i as i64 + 1), ops(&[("EDIT", *s)]), "EDIT{m}");
    }
    let body = entry_body(&h, "/list.json").expect("entry");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v, serde_json::json!([0, "one", 2, 3]));
}

#[test]
fn find_by_glob_regex_and_tag() {
    let h = Harness::new(&[
        "<<PLAN:seed:PLAN\n<<EDIT[net](known:///net/timeouts.md):retry after 30s:EDIT\n<<EDIT[net,db](known:///db/pool.md):pool size 8:EDIT\n<<EDIT(known:///readme.md):hello:EDIT\n<<SEND[102]:seeded:SEND",
        "<<PLAN:find:PLAN\n<<FIND(known:///net/)::FIND\n<<FIND(known:///**):#retry|pool#i:FIND\n<<FIND[db](known:///**)::FIND\n<<FIND(known:///nothing/**)::FIND\n<<SEND[102]:looking:SEND",
        "<<PLAN:done:PLAN\n<<SEND[200]:found:SEND",
    ]);
    let lp = h.run_loop("find things", LoopOptions::default());
    assert_eq!(lp.status, 200);
    assert_eq!(
        h.ops(&lp, 1),
        ops(&[("EDIT", 201), ("EDIT", 201), ("EDIT", 201)])
    );
    assert_eq!(
        h.ops(&lp, 2),
        ops(&[("FIND", 200), ("FIND", 200), ("FIND", 200), ("FIND", 204)])
    );
    let rows: Vec<_> = h
        .rows(&lp)
        .into_iter()
        .filter(|r| r.turn_seq == 2 && r.op.as_str() == "FIND")
        .map(|r| {
            serde_json::from_str::<serde_json::Value>(r.rx.as_deref().unwrap_or("[]"))
                .expect("json")
        })
        .collect();
    let paths = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|i| i["path"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    assert_eq!(paths(&rows[0]), vec!["known:///net/timeouts.md"]);
    assert_eq!(
        paths(&rows[1]),
        vec!["known:///net/timeouts.md", "known:///db/pool.md"]
    );
    assert_eq!(rows[1][0]["matchSpan"], serde_json::json!([1, 1]));
    assert_eq!(paths(&rows[2]), vec!["known:///db/pool.md"]);
}

/// The COPY/MOVE status table: 201, 304, 409, 404, 415, 416, 400, and MOVE deletes its source.
#[test]
fn copy_and_move_statuses() {
    let h = Harness::new(&[
        "<<PLAN:seed:PLAN\n<<EDIT(known:///a.md):one\ntwo:EDIT\n<<EDIT(known:///b.md):other:EDIT\n<<EDIT(known:///c.json):[1]:EDIT\n<<SEND[102]:s:SEND",
        concat!(
            "<<PLAN:copy:PLAN\n",
            "<<COPY(known:///a.md):known:///a2.md:COPY\n",
            "<<COPY(known:///a.md):known:///a2.md:COPY\n",
            "<<COPY(known:///a.md):known:///b.md:COPY\n",
            "<<COPY(known:///missing.md):known:///x.md:COPY\n",
            "<<COPY(known:///c.json):known:///c.md:COPY\n",
            "<<COPY(known:///a.md)<5,6>:known:///slice.md:COPY\n",
            "<<COPY(known:///a.md)<2>:known:///second.md:COPY\n",
            "<<MOVE(known:///a2.md):unknown:///moved.md:MOVE\n",
            "<<MOVE(known:///b.md)::MOVE\n",
            "<<SEND[102]:c:SEND"
        ),
        "<<PLAN:done:PLAN\n<<SEND[200]:ok:SEND",
    ]);
    let lp = h.run_loop("copy", LoopOptions::default());
    assert_eq!(
        h.ops(&lp, 2),
        ops(&[
            ("COPY", 201),
            ("COPY", 304),
            ("COPY", 409),
            ("COPY", 404),
            ("COPY", 415),
            ("COPY", 416),
            ("COPY", 201),
            ("MOVE", 201),
            ("MOVE", 400),
        ])
    );
    assert_eq!(entry_body(&h, "/second.md").as_deref(), Some("two\n"));
    assert_eq!(entry_body(&h, "/a2.md"), None, "MOVE deleted its source");
    let moved = h
        .engine
        .store()
        .entry(
            h.session.id,
            h.run.id,
            &EntryKey::session("unknown", "/moved.md"),
        )
        .expect("entry");
    assert!(moved.is_some());
}
