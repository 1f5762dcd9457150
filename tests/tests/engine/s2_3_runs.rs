//! PLURNK.md §2.3 (`run://`, mid-E2 forms) and §3.9 (fork) — sibling runs as actors: spawn,
//! collect (425 while running, then the deliverable), message, kill, fork (the fork's log
//! is the parent's up to the fork), scratch written only by its owner, and the session's
//! active-run cap (508). Several runs share one scripted model; each role's script is
//! picked by its loop prompt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use agentos_abi::device::{ChatReply, ChatRequest};
use agentos_drivers::llm::ScriptedReply;
use agentos_engine::store::{LogRow, Origin, RowOp};
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
