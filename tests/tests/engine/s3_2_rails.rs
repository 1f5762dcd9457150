//! PLURNK.md §3.2 — the runLoop rails: soft statuses, strikes, cycles, no-op turns, max
//! turns, the command cap.

use crate::common::{harness_with, ops, Harness};
use agentos_engine::turn::EngineConfig;
use agentos_engine::LoopOptions;

#[test]
fn soft_404_does_not_strike() {
    // Four turns each with a 404 READ; without the soft rule the third would end the loop.
    let miss = "<<PLAN:look:PLAN\n<<READ(known:///nope.md)::READ\n<<SEND[102]:l:SEND";
    let h = Harness::new(&[
        miss,
        miss.replace("nope", "nope2").as_str(),
        &miss.replace("nope", "nope3"),
        &miss.replace("nope", "nope4"),
        "<<PLAN:d:PLAN\n<<SEND[200]:gave up looking:SEND",
    ]);
    let lp = h.run_loop("find it", LoopOptions::default());
    assert_eq!(lp.status, 200, "{lp:?}");
    assert_eq!(h.ops(&lp, 3), ops(&[("READ", 404)]));
}

#[test]
fn three_struck_turns_end_the_loop_500() {
    let bad = |n: u32| {
        format!("<<PLAN:p:PLAN\n<<EDIT(known:///j{n}.json)<3>:{{not json:EDIT\n<<SEND[102]:x:SEND")
    };
    let turns = [
        bad(1),
        bad(2),
        bad(3),
        "<<PLAN:never:PLAN\n<<SEND[200]:x:SEND".into(),
    ];
    let refs: Vec<&str> = turns.iter().map(String::as_str).collect();
    let h = Harness::new(&refs);
    let lp = h.run_loop("fail", LoopOptions::default());
    assert_eq!(lp.status, 500);
    assert_eq!(lp.terminal_message.as_deref(), Some("strike_threshold"));
    assert_eq!(h.turn_statuses(&lp).len(), 3);
    assert_eq!(h.ops(&lp, 1), ops(&[("EDIT", 400)]));
}

#[test]
fn identical_turn_cycles_at_3_and_ends_508_at_5() {
    let same = "<<PLAN:again:PLAN\n<<EDIT(known:///fixed.md):same:EDIT\n<<SEND[102]:again:SEND";
    let h = Harness::new(&[same; 8]);
    let lp = h.run_loop("loop", LoopOptions::default());
    assert_eq!(lp.status, 508, "{lp:?}");
    assert_eq!(h.turn_statuses(&lp).len(), 5);
    assert_eq!(h.ops(&lp, 1), ops(&[("EDIT", 201)]));
    assert_eq!(h.ops(&lp, 2), ops(&[("EDIT", 304)]));
}

#[test]
fn no_op_turn_is_422() {
    let h = Harness::new(&[
        "I will think about it.",
        "<<PLAN:ok:PLAN\n<<SEND[200]:done:SEND",
    ]);
    let lp = h.run_loop("think", LoopOptions::default());
    assert_eq!(lp.status, 200);
    assert_eq!(h.turn_statuses(&lp), vec![422, 200]);
}

#[test]
fn max_turns_ends_429() {
    let t = |n: u32| format!("<<PLAN:p:PLAN\n<<EDIT(known:///n{n}.md):x:EDIT\n<<SEND[102]:c:SEND");
    let turns: Vec<String> = (1..=5).map(t).collect();
    let refs: Vec<&str> = turns.iter().map(String::as_str).collect();
    let h = Harness::new(&refs);
    let lp = h.run_loop(
        "count",
        LoopOptions {
            max_turns: Some(3),
            ..LoopOptions::default()
        },
    );
    assert_eq!(lp.status, 429);
    assert_eq!(lp.terminal_message.as_deref(), Some("max_turns"));
    assert_eq!(h.turn_statuses(&lp), vec![102, 102, 102]);
}

#[test]
fn max_commands_writes_one_429_row() {
    let mut cfg = EngineConfig::default();
    cfg.rails.max_commands = 2;
    let h = harness_with(
        cfg,
        &[
            "<<PLAN:p:PLAN\n<<EDIT(known:///1.md):a:EDIT\n<<EDIT(known:///2.md):b:EDIT\n<<EDIT(known:///3.md):c:EDIT\n<<EDIT(known:///4.md):d:EDIT\n<<SEND[102]:c:SEND",
            "<<PLAN:d:PLAN\n<<SEND[200]:ok:SEND",
        ],
    );
    let lp = h.run_loop("many", LoopOptions::default());
    assert_eq!(
        h.ops(&lp, 1),
        ops(&[("error", 429), ("EDIT", 201), ("EDIT", 201)])
    );
    let rx = h
        .rows(&lp)
        .into_iter()
        .find(|r| r.status == 429)
        .and_then(|r| r.rx)
        .unwrap_or_default();
    assert!(rx.contains("2 dropped"), "{rx}");
}
