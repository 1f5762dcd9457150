//! PLURNK.md §2.3 (`run://`, mid-E2 forms) and §3.9 (fork) — sibling runs as actors: spawn,
//! collect (425 while running, then the deliverable), message, kill, fork (the fork's log
//! is the parent's up to the fork), scratch written only by its owner, the session's
//! active-run cap (508), and the session's account: every run spends under it, so its quota
//! stops a fork bomb (508 for a spawn it has no process slot for, 413 for a loop it cannot
//! pay) before the machine. Several runs share one scripted model; each role's script is
//! picked by its loop prompt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use agentos_abi::device::{ChatReply, ChatRequest, TokenUsage};
use agentos_abi::Quota;
use agentos_drivers::llm::ScriptedReply;
use agentos_engine::store::{status, LogRow, Origin, RowOp, RowState};
use agentos_engine::turn::proposal::Decision;
use agentos_engine::turn::EngineConfig;
use agentos_engine::LoopOptions;

use crate::common::Harness;

/// A model that plays several roles: the first role whose marker appears in the loop's
/// prompt section answers with its next scripted turn (then `SEND[200]` forever).
fn roles(
    scripts: Vec<(&'static str, Vec<&'static str>)>,
) -> impl Fn(&ChatRequest) -> ScriptedReply + Send + Sync + 'static {
    let seen: Arc<Mutex<HashMap<&'static str, usize>>> = Arc::default();
    move |req: &ChatRequest| {
        let user = req
            .messages
            .last()
            .map(|m| m.content.as_str())
            .unwrap_or("");
        // The prompt section comes first in the user slot.
        let prompt = user.split("\n## ").next().unwrap_or("");
        let (role, turns) = scripts
            .iter()
            .find(|(marker, _)| prompt.contains(marker))
            .or_else(|| scripts.last())
            .expect("a role");
        let mut seen = seen.lock().unwrap();
        let n = seen.entry(role).or_default();
        let text = turns
            .get(*n)
            .copied()
            .unwrap_or("<<PLAN:done:PLAN\n<<SEND[200]:done:SEND");
        *n += 1;
        Ok(ChatReply::text(text))
    }
}

fn project() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::write(d.path().join("notes.txt"), "alpha\n").unwrap();
    d
}

fn model_rows(rows: &[LogRow], t: i64) -> Vec<(String, u16)> {
    rows.iter()
        .filter(|r| r.turn_seq == t && r.origin == Origin::Model)
        .filter(|r| !matches!(r.op, RowOp::Model))
        .filter(|r| !(r.op.as_str() == "PLAN" || r.op.as_str() == "SEND" && r.target.is_none()))
        .map(|r| (r.op.as_str().to_owned(), r.status))
        .collect()
}

#[test]
fn run_spawn_collect_425_message_and_kill() {
    let p = project();
    let h = Harness::in_project_fn(
        EngineConfig::default(),
        p.path(),
        roles(vec![
            // The kid parks on an edit nobody accepts: it stays running.
            (
                "KIDTASK",
                vec!["<<PLAN:edit:PLAN\n<<EDIT(notes.txt):beta:EDIT\n<<SEND[102]:waiting:SEND"],
            ),
            (
                "PARENT",
                vec![
                    "<<PLAN:delegate:PLAN\n<<EDIT(run://kid):KIDTASK edit the notes:EDIT\n<<SEND[102]:spawned:SEND",
                    "<<PLAN:collect:PLAN\n<<READ(run://kid)::READ\n<<SEND(run://kid):hurry up:SEND\n<<SEND(run://nobody):hello:SEND\n<<SEND[102]:waiting:SEND",
                    "<<PLAN:stop it:PLAN\n<<KILL(run://kid)::KILL\n<<KILL(run://nobody)::KILL\n<<SEND[102]:stopped:SEND",
                    "<<PLAN:done:PLAN\n<<SEND[200]:delegated and stopped:SEND",
                ],
            ),
        ]),
    );
    let lp = h.run_loop("PARENT", LoopOptions::default());
    assert_eq!(lp.status, 200, "{lp:?}");
    let rows = h.rows(&lp);
    assert_eq!(model_rows(&rows, 1), vec![("EDIT".into(), 201)]);
    assert_eq!(
        model_rows(&rows, 2),
        vec![
            ("READ".into(), 425),
            ("SEND".into(), 200),
            ("SEND".into(), 404)
        ]
    );
    assert_eq!(
        model_rows(&rows, 3),
        vec![("KILL".into(), 200), ("KILL".into(), 404)]
    );
    // The kid is a run of the session, spawned by the parent; killed, its loop ended 499
    // and its proposal was cancelled with it.
    let kid = h
        .engine
        .store()
        .run_named(h.session.id, "kid")
        .expect("store")
        .expect("kid run");
    assert_eq!(kid.parent_run_id, Some(h.run.id));
    let kid_loops = h.engine.store().loops(kid.id).expect("loops");
    let first = h.engine.wait_loop(kid_loops[0].id, None).expect("kid ends");
    assert_eq!(first.status, 499, "{first:?}");
    assert!(h
        .engine
        .proposals(Some(kid.id))
        .expect("proposals")
        .is_empty());
    assert_eq!(
        std::fs::read_to_string(p.path().join("notes.txt")).unwrap(),
        "alpha\n"
    );
}

#[test]
fn run_collect_returns_the_deliverable_once_the_run_ends() {
    let p = project();
    let h = Harness::in_project_fn(
        EngineConfig::default(),
        p.path(),
        roles(vec![
            ("KIDTASK", vec!["<<PLAN:answer:PLAN\n<<SEND[200]:forty-two:SEND"]),
            ("COLLECT", vec!["<<PLAN:collect:PLAN\n<<READ(run://kid)::READ\n<<SEND[102]:read:SEND"]),
            (
                "PARENT",
                vec!["<<PLAN:delegate:PLAN\n<<EDIT(run://kid):KIDTASK answer:EDIT\n<<SEND[200]:spawned:SEND"],
            ),
        ]),
    );
    h.run_loop("PARENT", LoopOptions::default());
    let kid = h
        .engine
        .store()
        .run_named(h.session.id, "kid")
        .unwrap()
        .unwrap();
    let kl = h.engine.store().loops(kid.id).unwrap()[0].id;
    assert_eq!(h.engine.wait_loop(kl, None).unwrap().status, 200);
    let lp = h.run_loop("COLLECT", LoopOptions::default());
    let rows = h.rows(&lp);
    assert_eq!(model_rows(&rows, 1), vec![("READ".into(), 200)]);
    let read = rows
        .iter()
        .find(|r| r.op.as_str() == "READ" && r.origin == Origin::Model)
        .unwrap();
    assert_eq!(read.rx.as_deref(), Some("200 forty-two"));
    // The kid's conclusion reached its parent as a message that woke it (a new loop).
    let woke = h
        .engine
        .store()
        .loops(h.run.id)
        .unwrap()
        .into_iter()
        .find(|l| l.prompt.starts_with("run://kid concluded"))
        .expect("the parent heard the conclusion");
    assert_eq!(woke.prompt, "run://kid concluded 200: forty-two");
}

#[test]
fn run_fork_copies_the_log_up_to_the_fork() {
    let p = project();
    let h = Harness::in_project_fn(
        EngineConfig::default(),
        p.path(),
        roles(vec![
            ("FORKPROMPT", vec!["<<PLAN:fork:PLAN\n<<SEND[200]:fork done:SEND"]),
            (
                "PARENT",
                vec![
                    "<<PLAN:note:PLAN\n<<EDIT(known:///a.md):alpha:EDIT\n<<EDIT(run:///plan.md):my plan:EDIT\n<<SEND[102]:noted:SEND",
                    "<<PLAN:fork:PLAN\n<<COPY(run://self):FORKPROMPT try the other way:COPY\n<<SEND[102]:forked:SEND",
                    "<<PLAN:done:PLAN\n<<SEND[200]:parent done:SEND",
                ],
            ),
        ]),
    );
    let lp = h.run_loop("PARENT", LoopOptions::default());
    assert_eq!(lp.status, 200);
    let parent_rows = h.rows(&lp);
    assert_eq!(model_rows(&parent_rows, 2), vec![("COPY".into(), 201)]);
    let runs = h.engine.store().runs(h.session.id).unwrap();
    let fork = runs
        .iter()
        .find(|r| r.parent_run_id == Some(h.run.id))
        .expect("fork run");
    let fork_loops = h.engine.store().loops(fork.id).unwrap();
    assert_eq!(fork_loops.len(), 2, "the inherited loop and the fork's own");
    assert_eq!(
        fork_loops[0].status, 499,
        "an inherited unfinished loop is clamped"
    );
    assert_eq!(
        h.engine.wait_loop(fork_loops[1].id, None).unwrap().status,
        200
    );
    // The fork's first loop is the parent's log up to the fork (turn 1), row for row.
    let strip = |r: &LogRow| {
        (
            r.turn_seq,
            r.sequence,
            r.origin,
            r.op.as_str().to_owned(),
            r.target.clone(),
            r.tx.clone(),
            r.rx.clone(),
            r.status,
            r.expanded,
        )
    };
    let forked: Vec<_> = h
        .engine
        .loop_log(fork_loops[0].id)
        .unwrap()
        .iter()
        .map(strip)
        .collect();
    let before: Vec<_> = parent_rows
        .iter()
        .filter(|r| r.turn_seq == 1)
        .map(strip)
        .collect();
    assert!(!before.is_empty());
    assert_eq!(forked, before);
    // Its scratch came along.
    let scratch = agentos_engine::store::EntryKey {
        scope: agentos_engine::store::Scope::Run,
        scheme: Some("run".into()),
        hostname: None,
        pathname: "/plan.md".into(),
    };
    let e = h
        .engine
        .store()
        .entry(h.session.id, fork.id, &scratch)
        .unwrap();
    assert_eq!(
        e.and_then(|e| e.channel("body").map(|c| c.content.clone()))
            .as_deref(),
        Some("my plan")
    );
}

#[test]
fn run_scratch_is_written_only_by_its_owner() {
    let p = project();
    let h = Harness::in_project_fn(
        EngineConfig::default(),
        p.path(),
        roles(vec![
            ("KIDTASK", vec!["<<PLAN:write:PLAN\n<<EDIT(run:///out.md):kid notes:EDIT\n<<SEND[200]:wrote:SEND"]),
            ("LATER", vec!["<<PLAN:peek:PLAN\n<<READ(run://kid/out.md)::READ\n<<EDIT(run://kid/out.md):mine now:EDIT\n<<SEND[102]:peeked:SEND"]),
            ("PARENT", vec!["<<PLAN:delegate:PLAN\n<<EDIT(run://kid):KIDTASK write notes:EDIT\n<<SEND[200]:spawned:SEND"]),
        ]),
    );
    h.run_loop("PARENT", LoopOptions::default());
    let kid = h
        .engine
        .store()
        .run_named(h.session.id, "kid")
        .unwrap()
        .unwrap();
    let kl = h.engine.store().loops(kid.id).unwrap()[0].id;
    h.engine.wait_loop(kl, None).unwrap();
    let lp = h.run_loop("LATER", LoopOptions::default());
    let rows = h.rows(&lp);
    assert_eq!(
        model_rows(&rows, 1),
        vec![("READ".into(), 200), ("EDIT".into(), 403)]
    );
}

#[test]
fn run_active_cap_answers_508() {
    let p = project();
    let cfg = EngineConfig {
        max_active_runs: 1,
        ..EngineConfig::default()
    };
    let h = Harness::in_project_fn(
        cfg,
        p.path(),
        roles(vec![(
            "PARENT",
            vec!["<<PLAN:delegate:PLAN\n<<EDIT(run://kid):KIDTASK:EDIT\n<<SEND[102]:spawned:SEND"],
        )]),
    );
    let lp = h.run_loop("PARENT", LoopOptions::default());
    assert_eq!(model_rows(&h.rows(&lp), 1), vec![("EDIT".into(), 508)]);
    assert!(h
        .engine
        .store()
        .run_named(h.session.id, "kid")
        .unwrap()
        .is_none());
}

#[test]
fn env_delta_appears_in_a_sibling() {
    let p = project();
    let h = Harness::in_project_fn(
        EngineConfig::default(),
        p.path(),
        roles(vec![
            ("FIRST", vec!["<<PLAN:idle:PLAN\n<<SEND[200]:ready:SEND"]),
            ("WRITER", vec!["<<PLAN:write:PLAN\n<<EDIT(known:///shared.md):the answer is 7:EDIT\n<<SEND[200]:wrote:SEND"]),
            ("SECOND", vec!["<<PLAN:look:PLAN\n<<SEND[200]:saw it:SEND"]),
        ]),
    );
    let b = h
        .engine
        .create_run(h.session.id, "b", Origin::Client)
        .expect("run b");
    let first = h
        .engine
        .start_loop(b.id, "FIRST", &LoopOptions::default())
        .unwrap();
    h.engine.wait_loop(first.id, None).unwrap();
    // Run a (the harness's run) edits a shared entry.
    let w = h.run_loop("WRITER", LoopOptions::default());
    assert_eq!(w.status, 200);
    let second = h
        .engine
        .start_loop(b.id, "SECOND", &LoopOptions::default())
        .unwrap();
    let second = h.engine.wait_loop(second.id, None).unwrap();
    let rows = h.engine.loop_log(second.id).unwrap();
    let delta = rows
        .iter()
        .find(|r| r.source.is_some())
        .expect("a delta row in the sibling's next loop");
    assert_eq!(delta.op.as_str(), "EDIT");
    assert_eq!(delta.origin, Origin::Plurnk);
    assert_eq!(
        delta.source.as_deref(),
        Some(format!("run://{}", h.run.name).as_str())
    );
    assert_eq!(delta.tx.as_deref(), Some("the answer is 7"));
    assert!(!delta.expanded, "deltas land folded");
    assert_eq!(delta.turn_seq, 1);
    // The writer does not see its own edit as a delta.
    assert!(h.rows(&w).iter().all(|r| r.source.is_none()));
}

/// `f` with every reply reporting 100 prompt + 10 completion tokens: each turn charges
/// exactly 110 tokens up its account chain.
fn costing(
    f: impl Fn(&ChatRequest) -> ScriptedReply + Send + Sync + 'static,
) -> impl Fn(&ChatRequest) -> ScriptedReply + Send + Sync + 'static {
    move |req: &ChatRequest| {
        f(req).map(|mut r| {
            r.usage = Some(TokenUsage {
                prompt_tokens: 100,
                completion_tokens: 10,
                cached_tokens: 0,
            });
            r
        })
    }
}

#[test]
fn a_runs_spending_is_its_own_account_under_its_sessions() {
    let p = agentos_tests::git_project(&[("notes.txt", b"alpha\n")]);
    let h = Harness::in_project_fn(
        EngineConfig::default(),
        p.path(),
        costing(roles(vec![
            (
                "PARK",
                vec![
                    "<<PLAN:edit:PLAN\n<<EDIT(notes.txt):beta:EDIT\n<<SEND[102]:proposed:SEND",
                    "<<PLAN:done:PLAN\n<<SEND[200]:parked once:SEND",
                ],
            ),
            ("QUICK", vec!["<<PLAN:done:PLAN\n<<SEND[200]:quick:SEND"]),
        ])),
    );
    let quick = h.run_loop("QUICK", LoopOptions::default());
    assert_eq!(quick.status, 200, "{quick:?}");
    let session = h.engine.session_account(h.session.id).expect("session");
    assert_eq!(session.parent.as_deref(), Some("engine"));
    assert_eq!(session.usage.tokens, 110, "one turn of the main run");

    // Another session spends under its own account, not this one's.
    let other = h
        .engine
        .create_session(None, Some(p.path().to_str().unwrap()), "{}")
        .expect("session 2");
    let c = h
        .engine
        .create_run(other.id, "c", Origin::Client)
        .expect("run c");
    let lc = h
        .engine
        .start_loop(c.id, "QUICK", &LoopOptions::default())
        .expect("start c");
    assert_eq!(h.engine.wait_loop(lc.id, None).unwrap().status, 200);
    assert_eq!(
        h.engine.session_account(other.id).unwrap().usage.tokens,
        110
    );
    assert_eq!(
        h.engine.session_account(h.session.id).unwrap().usage.tokens,
        110
    );

    // A second run of the session parks on a proposal: its process is alive, its account a
    // child of the session's, holding exactly its own spending.
    let b = h
        .engine
        .create_run(h.session.id, "b", Origin::Client)
        .expect("run b");
    let parked = h
        .engine
        .start_loop(b.id, "PARK", &LoopOptions::default())
        .expect("start");
    h.engine.kernel().run_for(1_000);
    assert_eq!(h.engine.store().loop_row(parked.id).unwrap().status, 202);
    let run_b = h.engine.run_account(b.id).expect("run b's process");
    let expected_parent = format!("session:{}", h.session.id);
    assert_eq!(run_b.parent.as_deref(), Some(expected_parent.as_str()));
    assert_eq!(run_b.usage.tokens, 110, "run b's own turn");
    assert_eq!(run_b.usage.children, 1, "its parked loop");
    // The main run is idle: its process has exited; its spending stayed with the session.
    assert_eq!(h.engine.run_account(h.run.id), None);
    let session = h.engine.session_account(h.session.id).expect("session");
    assert_eq!(session.usage.tokens, 220, "both runs' turns roll up");

    // Run b resumes, takes one more turn and ends; the session has seen all three.
    let row = h.engine.proposals(Some(b.id)).unwrap()[0].id;
    h.engine.resolve(row, Decision::Reject, None).unwrap();
    let parked = h.engine.wait_loop(parked.id, None).unwrap();
    assert_eq!(parked.status, 200, "{parked:?}");
    assert_eq!(
        h.engine.store().log_row(row).unwrap().state,
        Some(RowState::Failed)
    );
    assert_eq!(
        h.engine.session_account(h.session.id).unwrap().usage.tokens,
        330
    );
}

#[test]
fn a_fork_bomb_hits_the_session_quota_not_the_machine() {
    let p = project();
    const TOKENS: u64 = 2_200; // twenty turns at 110 tokens
    let cfg = EngineConfig {
        // The store's active-run cap out of the way: the account is what stops it.
        max_active_runs: 100_000,
        session_quota: Quota {
            tokens: Some(TOKENS),
            children: Some(4),
            ..Quota::UNLIMITED
        },
        ..EngineConfig::default()
    };
    // Every loop whose prompt says BOMB forks itself twice; the conclusions its forks send
    // back are acknowledged.
    let h = Harness::in_project_fn(
        cfg,
        p.path(),
        costing(|req: &ChatRequest| {
            let user = req
                .messages
                .last()
                .map(|m| m.content.as_str())
                .unwrap_or("");
            let prompt = user.split("\n## ").next().unwrap_or("");
            Ok(ChatReply::text(if prompt.contains("BOMB") {
                "<<PLAN:fork:PLAN\n<<COPY(run://self):BOMB:COPY\n<<COPY(run://self):BOMB:COPY\n<<SEND[200]:forked:SEND"
            } else {
                "<<PLAN:noted:PLAN\n<<SEND[200]:noted:SEND"
            }))
        }),
    );
    let first = h.run_loop("BOMB", LoopOptions::default());
    assert_eq!(first.status, 200, "{first:?}");
    // Let the bomb go off until nothing can run any more.
    h.engine.kernel().run();

    let runs = h.engine.store().runs(h.session.id).unwrap();
    let mut loops = Vec::new();
    let mut copies = Vec::new();
    for r in &runs {
        loops.extend(h.engine.store().loops(r.id).unwrap());
        copies.extend(
            h.engine
                .log(r.id)
                .unwrap()
                .into_iter()
                .filter(|row| row.op.as_str() == "COPY" && row.origin == Origin::Model),
        );
    }
    // It stopped: every loop ended, and at most two forks per paid turn were made.
    assert!(
        loops.iter().all(|l| status::is_terminal(l.status)),
        "{loops:?}"
    );
    assert!(runs.len() <= 1 + 2 * 20, "{} runs", runs.len());
    // Spawns beyond the session's process slots were refused 508, naming the quota…
    let refused: Vec<&LogRow> = copies.iter().filter(|r| r.status == 508).collect();
    assert!(!refused.is_empty(), "no spawn hit the children quota");
    assert!(
        refused.iter().all(|r| r
            .rx
            .as_deref()
            .is_some_and(|rx| rx.contains("children quota"))),
        "{refused:?}"
    );
    // (the refused forks' loops ended 508 with the same reason, not left queued)…
    assert!(loops.iter().any(|l| l.status == status::RUN_CAP
        && l.terminal_message
            .as_deref()
            .is_some_and(|m| m.contains("children quota"))));
    // …and once its tokens were spent, the loop that could not pay ended 413.
    assert!(
        loops.iter().any(|l| l.status == status::BUDGET
            && l.terminal_message.as_deref() == Some("budget: tokens quota exhausted")),
        "{loops:?}"
    );
    let session = h.engine.session_account(h.session.id).expect("session");
    assert!(session.usage.tokens <= TOKENS, "{session:?}");
    assert_eq!(
        session.usage.children, 0,
        "every run has exited: {session:?}"
    );
    assert!(runs.iter().all(|r| h.engine.run_account(r.id).is_none()));

    // The machine is fine: another session runs a loop as usual.
    let other = h.engine.create_session(None, None, "{}").unwrap();
    let run = h
        .engine
        .create_run(other.id, "calm", Origin::Client)
        .unwrap();
    let lp = h
        .engine
        .start_loop(run.id, "hello", &LoopOptions::default())
        .unwrap();
    assert_eq!(h.engine.wait_loop(lp.id, None).unwrap().status, 200);
}
