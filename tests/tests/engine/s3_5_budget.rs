//! PLURNK.md §3.5 — the budget: the grinder folds the newest turn boundary and writes a 413
//! row; a packet that still cannot fit ends the loop 413.

use crate::common::{harness_with, user_message};
use agentos_engine::store::RowOp;
use agentos_engine::turn::EngineConfig;
use agentos_engine::LoopOptions;

fn small_window() -> EngineConfig {
    EngineConfig {
        context_size: 4000,
        max_output_tokens: 500,
        ..EngineConfig::default()
    }
}

#[test]
fn grinder_folds_the_newest_turn_and_writes_413() {
    let big = "word ".repeat(2600);
    let t1 = format!("<<PLAN:p:PLAN\n<<EDIT(known:///big.md):{big}:EDIT\n<<SEND[102]:w:SEND");
    let h = harness_with(small_window(), &[&t1, "<<PLAN:p:PLAN\n<<SEND[200]:ok:SEND"]);
    let lp = h.run_loop("x", LoopOptions::default());
    assert_eq!(lp.status, 200, "{lp:?}");
    let rows = h.rows(&lp);
    let overflow = rows
        .iter()
        .find(|r| r.turn_seq == 2 && r.op == RowOp::Error)
        .expect("a 413 row in turn 2");
    assert_eq!(overflow.status, 413);
    let edit = rows
        .iter()
        .find(|r| {
            r.turn_seq == 1
                && r.op.as_str() == "EDIT"
                && r.origin == agentos_engine::store::Origin::Model
        })
        .expect("edit row");
    assert!(!edit.expanded, "the grinder folded turn 1's EDIT");
    assert!(
        !user_message(&h, 1).contains("word word word"),
        "the fold reached the packet"
    );
    let sent = h.provider.requests()[1]
        .messages
        .iter()
        .map(|m| m.content.len())
        .sum::<usize>();
    assert!(
        sent < 12_000,
        "packet after the fold is small: {sent} bytes"
    );
}

#[test]
fn packet_that_cannot_fit_ends_413() {
    let prompt = "task ".repeat(4000);
    let h = harness_with(small_window(), &["<<PLAN:p:PLAN\n<<SEND[200]:never:SEND"]);
    let lp = h.run_loop(&prompt, LoopOptions::default());
    assert_eq!(lp.status, 413);
    assert_eq!(lp.terminal_message.as_deref(), Some("budget_overflow"));
    assert!(
        h.provider.requests().is_empty(),
        "no model call for a packet over budget"
    );
    assert_eq!(h.turn_statuses(&lp), vec![413]);
}
