//! PLURNK.md §1.4 — the op catalogue on the entry schemes: EDIT/READ round trip, the EDIT
//! positional rules and JSON edits, FIND by glob, regex and tag, COPY/MOVE statuses.

use crate::common::{ops, Harness};
use agentos_engine::LoopOptions;

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
