//! The runLoop rails: fingerprints, cycles, strikes, streak → abandon, command cap.

use agentos_engine::grammar::{parse, parse_turn, Statement};
use agentos_engine::rails::{
    cap_commands, detect_cycle, fingerprint_op, fingerprint_turn, is_idle_turn, next_streak,
    strike_verdict, LoopRails, RailsConfig, StreakDecision, StrikeReason,
};

fn stmts(src: &str) -> Vec<Statement> {
    let r = parse(src);
    assert!(!r.has_errors(), "{:?}", r.items);
    r.statements().cloned().collect()
}

fn one(src: &str) -> Statement {
    stmts(src).remove(0)
}

#[test]
fn per_op_fingerprints() {
    assert_eq!(
        fingerprint_op(&one("<<EDIT(known:///fixed):v1:EDIT")),
        "EDIT|known:///fixed"
    );
    assert_eq!(
        fingerprint_op(&one("<<EDIT(src/a%29b.rs)<3>:x:EDIT")),
        "EDIT|local:src/a)b.rs"
    );
    assert_eq!(
        fingerprint_op(&one("<<FIND(#\\.rs$#i)::FIND")),
        "FIND|regex:#\\.rs$#i"
    );
    assert_eq!(
        fingerprint_op(&one("<<READ(https://h.io/x%29?q=1)<1,-1>:*TODO*:READ")),
        "READ|https:///x)|body:*TODO*|L:1,-1"
    );
    assert_eq!(
        fingerprint_op(&one("<<FIND(known:///**)<0.7,1,10>:~why:FIND")),
        "FIND|known:///**|body:~why|L:0.7,1,10"
    );
    let long = "x".repeat(100);
    assert_eq!(
        fingerprint_op(&one(&format!("<<EXEC[sh]:{long}:EXEC"))),
        format!("EXEC|cmd:{}", "x".repeat(64))
    );
    assert_eq!(
        fingerprint_op(&one("<<EXEC(src):make:EXEC")),
        "EXEC|local:src"
    );
    assert_eq!(
        fingerprint_op(&one("<<SEND[102]:anything:SEND")),
        "SEND|status:102"
    );
    assert_eq!(
        fingerprint_op(&one("<<SEND(run://x):hi:SEND")),
        "SEND|run://x|status:"
    );
    assert_eq!(
        fingerprint_op(&one("<<PLAN:different every time:PLAN")),
        "PLAN"
    );
}

#[test]
fn turn_fingerprint_is_order_insensitive() {
    let a = stmts("<<READ(a)::READ <<EDIT(b):x:EDIT");
    let b = stmts("<<EDIT(b):y:EDIT <<READ(a)::READ");
    assert_eq!(fingerprint_turn(&a), fingerprint_turn(&b));
    assert_ne!(
        fingerprint_turn(&a),
        fingerprint_turn(&stmts("<<READ(c)::READ <<EDIT(b):x:EDIT"))
    );
}

#[test]
fn cycle_detection() {
    assert_eq!(detect_cycle(&["a", "a"], 3, 4), None);
    assert_eq!(detect_cycle(&["a", "a", "a"], 3, 4), Some(1));
    assert_eq!(
        detect_cycle(&["x", "a", "b", "a", "b", "a", "b"], 3, 4),
        Some(2)
    );
    assert_eq!(detect_cycle(&["a", "b", "a", "b", "a", "c"], 3, 4), None);
    let period5: Vec<u32> = (0..15).map(|i| i % 5).collect();
    assert_eq!(
        detect_cycle(&period5, 3, 4),
        None,
        "period above max_cycle_period"
    );
    assert_eq!(detect_cycle(&period5, 3, 5), Some(5));
    assert_eq!(
        detect_cycle(&["a"; 10], 1, 4),
        None,
        "min_cycles < 2 never fires"
    );
    assert_eq!(detect_cycle::<u8>(&[], 3, 4), None);
}

#[test]
fn strike_verdicts() {
    assert_eq!(strike_verdict(0, &[], 0).reasons, vec![StrikeReason::NoOps]);
    assert!(
        !strike_verdict(2, &[200, 201, 304, 404, 501, 102, 202], 0).struck,
        "soft 404/501 never strike"
    );
    assert_eq!(
        strike_verdict(2, &[200, 409, 500], 0).reasons,
        vec![StrikeReason::FailedAction(409)]
    );
    assert_eq!(
        strike_verdict(1, &[200], 2).reasons,
        vec![StrikeReason::RailErrors(2)]
    );
    let all = strike_verdict(0, &[416], 1);
    assert!(all.struck);
    assert_eq!(
        all.reasons,
        vec![
            StrikeReason::NoOps,
            StrikeReason::FailedAction(416),
            StrikeReason::RailErrors(1)
        ]
    );
}

#[test]
fn streak_and_abandon() {
    assert_eq!(
        next_streak(2, false, 3, false),
        StreakDecision::Continue { streak: 0 }
    );
    assert_eq!(
        next_streak(0, true, 3, false),
        StreakDecision::Continue { streak: 1 }
    );
    assert_eq!(
        next_streak(2, true, 3, false),
        StreakDecision::Abandon {
            streak: 3,
            status: 500
        }
    );
    assert_eq!(
        next_streak(2, true, 3, true),
        StreakDecision::Abandon {
            streak: 3,
            status: 508
        }
    );
}

#[test]
fn identical_turns_cycle_on_turn_3_and_abandon_on_turn_5() {
    let turn = parse_turn("<<PLAN:fix it again:PLAN\n<<EDIT(known:///fixed):same content:EDIT\n<<SEND[102]:retrying:SEND");
    assert!(turn.valid);
    let statements = turn.turn.expect("valid").statements();
    let mut rails = LoopRails::new(RailsConfig::default());
    let mut log = Vec::new();
    for n in 1..=5 {
        // The EDIT creates (201) then is a no-op (304): never a failure status.
        let statuses = if n == 1 {
            [200, 201, 102]
        } else {
            [200, 304, 102]
        };
        let r = rails.observe(&statements, &statuses, 0);
        log.push((n, r.cycle, r.verdict.struck, r.decision));
    }
    assert_eq!(
        log,
        vec![
            (1, None, false, StreakDecision::Continue { streak: 0 }),
            (2, None, false, StreakDecision::Continue { streak: 0 }),
            (3, Some(1), true, StreakDecision::Continue { streak: 1 }),
            (4, Some(1), true, StreakDecision::Continue { streak: 2 }),
            (
                5,
                Some(1),
                true,
                StreakDecision::Abandon {
                    streak: 3,
                    status: 508
                }
            ),
        ]
    );
}

#[test]
fn a_clean_turn_resets_the_streak() {
    let mut rails = LoopRails::new(RailsConfig::default());
    let bad = stmts("<<PLAN:p:PLAN <<READ(a)::READ <<SEND[102]:x:SEND");
    let good = stmts("<<PLAN:p:PLAN <<READ(b)::READ <<SEND[102]:x:SEND");
    assert_eq!(
        rails.observe(&bad, &[200, 500, 102], 0).decision,
        StreakDecision::Continue { streak: 1 }
    );
    assert_eq!(
        rails.observe(&bad, &[200, 415, 102], 0).decision,
        StreakDecision::Continue { streak: 2 }
    );
    assert_eq!(
        rails.observe(&good, &[200, 200, 102], 0).decision,
        StreakDecision::Continue { streak: 0 }
    );
    assert_eq!(
        rails.observe(&good, &[], 0).decision,
        StreakDecision::Continue { streak: 0 }
    );
    assert_eq!(
        rails.observe(&[], &[], 0).verdict.reasons,
        vec![StrikeReason::NoOps]
    );
}

#[test]
fn idle_turns() {
    assert!(is_idle_turn(&stmts("<<PLAN:p:PLAN <<SEND[102]:x:SEND")));
    assert!(!is_idle_turn(&stmts("<<PLAN:p:PLAN <<SEND[200]:done:SEND")));
    assert!(!is_idle_turn(&stmts(
        "<<PLAN:p:PLAN <<READ(a)::READ <<SEND[102]:x:SEND"
    )));
}

#[test]
fn command_cap_never_counts_plan_or_terminal_send() {
    let s = stmts("<<PLAN:p:PLAN <<READ(a)::READ <<READ(b)::READ <<PLAN:q:PLAN <<READ(c)::READ <<SEND(run://x):m:SEND <<SEND[102]:x:SEND");
    let cap = cap_commands(&s, 2);
    let kept: Vec<String> = cap.dispatch.iter().map(|s| fingerprint_op(s)).collect();
    assert_eq!(
        kept,
        vec![
            "PLAN",
            "READ|local:a",
            "READ|local:b",
            "PLAN",
            "SEND|status:102"
        ]
    );
    assert_eq!(cap.dropped, 2);
    let all = cap_commands(&s, 99);
    assert_eq!((all.dispatch.len(), all.dropped), (7, 0));
    let none = cap_commands(&s, 0);
    assert_eq!((none.dispatch.len(), none.dropped), (3, 4));
}
