//! PLURNK.md §3.9 (and DESIGN.md "The engine") — runs as processes: one drain per run,
//! inject folds into the active loop or queues one, a budget is an account quota, provider
//! failures end the loop 500 with their cause.

use std::sync::Arc;

use agentos_drivers::llm::{LlmError, ScriptedProvider};
use agentos_engine::store::{Origin, RowOp};
use agentos_engine::turn::{EngineConfig, LoopFlags};
use agentos_engine::LoopOptions;

use crate::common::{say, Harness};

#[test]
fn queued_loops_drain_one_at_a_time_in_order() {
    let h = Harness::new(&[
        "<<PLAN:p:PLAN\n<<SEND[200]:first:SEND",
        "<<PLAN:p:PLAN\n<<SEND[200]:second:SEND",
    ]);
    let a = h
        .engine
        .start_loop(h.run.id, "one", &LoopOptions::default())
        .expect("a");
    let b = h
        .engine
        .start_loop(h.run.id, "two", &LoopOptions::default())
        .expect("b");
    let b = h.engine.wait_loop(b.id, None).expect("b ends");
    let a = h.engine.store().loop_row(a.id).expect("a");
    assert_eq!(
        (a.status, a.terminal_message.as_deref()),
        (200, Some("first"))
    );
    assert_eq!(
        (b.status, b.terminal_message.as_deref()),
        (200, Some("second"))
    );
    assert_eq!((a.sequence, b.sequence), (1, 2));
    // The second loop's rows come after the first's: one drain, never interleaved.
    let log = h.engine.log(h.run.id).expect("log");
    let firsts: Vec<i64> = log.iter().map(|r| r.loop_seq).collect();
    assert!(firsts.windows(2).all(|w| w[0] <= w[1]), "{firsts:?}");
    // The run was a kernel process under its session's; idle, it has exited (its session
    // starts it again for its next loop), while the session's account keeps what it spent.
    assert_eq!(h.engine.run_account(h.run.id), None);
    let session = h
        .engine
        .session_account(h.session.id)
        .expect("the session's process");
    assert_eq!(session.parent.as_deref(), Some("engine"));
    assert!(session.usage.tokens > 0, "{session:?}");
}

#[test]
fn inject_folds_into_the_active_loop() {
    let h = Harness::new(&[
        "<<PLAN:p:PLAN\n<<EDIT(known:///n.md):x:EDIT\n<<SEND[102]:c:SEND",
        "<<PLAN:p:PLAN\n<<EDIT(known:///m.md):y:EDIT\n<<SEND[102]:c:SEND",
        "<<PLAN:p:PLAN\n<<SEND[200]:ok:SEND",
    ]);
    let lp = h
        .engine
        .start_loop(h.run.id, "start", &LoopOptions::default())
        .expect("loop");
    h.engine
        .inject(h.run.id, "also: be brief", &LoopFlags::default())
        .expect("inject");
    let lp = h.engine.wait_loop(lp.id, None).expect("ends");
    assert_eq!(lp.status, 200);
    assert_eq!(
        h.engine.store().loops(h.run.id).expect("loops").len(),
        1,
        "no new loop"
    );
    let rows = h.rows(&lp);
    let injected = rows
        .iter()
        .find(|r| r.origin == Origin::Client)
        .expect("an injected prompt row");
    assert_eq!(
        injected.target.as_ref().map(|t| t.uri()).as_deref(),
        Some("plurnk:///prompt/1/2")
    );
    let t = injected.turn_seq as usize;
    let user = crate::common::user_message(&h, t - 1);
    assert!(user.contains("start\n\nalso: be brief"), "{user}");
}

#[test]
fn inject_on_an_idle_run_queues_a_loop() {
    let h = Harness::new(&[
        "<<PLAN:p:PLAN\n<<SEND[200]:one:SEND",
        "<<PLAN:p:PLAN\n<<SEND[200]:two:SEND",
    ]);
    let first = h.run_loop("one", LoopOptions::default());
    assert_eq!(first.status, 200);
    h.engine
        .inject(h.run.id, "two", &LoopFlags::default())
        .expect("inject");
    h.engine.kernel().run();
    let loops = h.engine.store().loops(h.run.id).expect("loops");
    assert_eq!(loops.len(), 2);
    assert_eq!((loops[1].prompt.as_str(), loops[1].status), ("two", 200));
}

#[test]
fn a_token_budget_is_an_account_quota_and_ends_413() {
    let turn = "<<PLAN:p:PLAN\n<<EDIT(known:///n.md):x:EDIT\n<<SEND[102]:c:SEND";
    let h = Harness::new(&[turn, turn, turn, turn]);
    let flags = LoopFlags {
        budget_tokens: Some(500),
        ..LoopFlags::default()
    };
    let lp = h.run_loop(
        "spend",
        LoopOptions {
            flags,
            max_turns: None,
        },
    );
    assert_eq!(lp.status, 413, "{lp:?}");
    assert!(
        lp.terminal_message
            .as_deref()
            .unwrap_or("")
            .contains("tokens"),
        "{lp:?}"
    );
}

#[test]
fn provider_failure_ends_500_with_its_cause() {
    let provider = Arc::new(ScriptedProvider::results([
        say("<<PLAN:p:PLAN\n<<EDIT(known:///n.md):x:EDIT\n<<SEND[102]:c:SEND"),
        Err(LlmError::Transport("connection refused".into())),
        Err(LlmError::Transport("connection refused".into())),
    ]));
    let h = Harness::with(EngineConfig::default(), provider, None);
    let lp = h.run_loop("x", LoopOptions::default());
    assert_eq!(lp.status, 500);
    assert!(
        lp.terminal_message
            .as_deref()
            .unwrap_or("")
            .contains("connection refused"),
        "{lp:?}"
    );
    let rows = h.rows(&lp);
    let err = rows
        .iter()
        .find(|r| r.op == RowOp::Error)
        .expect("error row");
    assert_eq!((err.turn_seq, err.status), (2, 500));
    // The first turn's edit committed; the failed turn changed nothing else.
    assert_eq!(h.turn_statuses(&lp), vec![102, 500]);
}

#[test]
fn a_provider_failure_is_retried_once_as_telemetry() {
    let provider = Arc::new(ScriptedProvider::results([
        Err(LlmError::Transport("blip".into())),
        say("<<PLAN:p:PLAN\n<<EDIT(known:///n.md):x:EDIT\n<<SEND[102]:c:SEND"),
        say("<<PLAN:p:PLAN\n<<SEND[200]:ok:SEND"),
    ]));
    let h = Harness::with(EngineConfig::default(), provider, None);
    let lp = h.run_loop("x", LoopOptions::default());
    assert_eq!(lp.status, 200);
    // The retry notice reaches the next packet once.
    let next = crate::common::user_message(&h, 2);
    assert!(next.contains("notice: provider failure, retried"), "{next}");
    assert!(!crate::common::user_message(&h, 1).contains("notice:"));
}
