//! PLURNK.md §4.2 `op.*` at the host API, on a deterministic kernel: `Engine::client_ops`
//! runs a client turn as a client loop of the run (origin `client` rows the model's later
//! loops see), a project-file EDIT proposes and is applied once resolved, `Engine::look`
//! writes nothing, and `Engine::set_root` checks its directory.

use agentos_engine::store::{Origin, RowState, StoreError};
use agentos_engine::turn::proposal::Decision;
use agentos_engine::turn::EngineConfig;
use agentos_engine::{EngineError, LoopOptions};

use crate::common::{user_message, Harness};

#[test]
fn a_client_turn_writes_client_rows_that_the_next_model_loop_sees() {
    let cfg = EngineConfig {
        operator_docs: vec![("OPS".into(), "operator notes".into())],
        ..EngineConfig::default()
    };
    let h = crate::common::harness_with(cfg, &["<<PLAN:done:PLAN\n<<SEND[200]:ok:SEND"]);
    let out = h
        .engine
        .client_ops(
            h.session.id,
            h.run.id,
            "<<EDIT(known:///c.md):from the client:EDIT\n<<READ(known:///c.md)::READ",
        )
        .expect("client ops");
    let got: Vec<(&str, u16)> = out.iter().map(|r| (r.op.as_str(), r.status)).collect();
    assert_eq!(got, [("EDIT", 201), ("READ", 200)]);
    let loop_id = out[0].loop_id.expect("a client loop");
    let client_loop = h.engine.store().loop_row(loop_id).expect("loop");
    assert_eq!(client_loop.status, 200);
    let rows = h.engine.loop_log(loop_id).expect("rows");
    assert!(rows.iter().all(|r| r.origin == Origin::Client), "{rows:?}");
    assert_eq!(
        rows.iter().map(|r| r.id).collect::<Vec<_>>(),
        out.iter().filter_map(|r| r.row_id).collect::<Vec<_>>()
    );
    // The next model loop of the run: turn 1 still foists the operator docs (the first
    // model loop), and the model's log shows the client's rows.
    let lp = h.run_loop("what changed?", LoopOptions::default());
    assert_eq!(lp.status, 200);
    let foisted = h
        .rows(&lp)
        .into_iter()
        .any(|r| r.origin == Origin::Plurnk && r.target.is_some_and(|t| t.pathname == "/OPS.md"));
    assert!(foisted, "operator docs are foisted on the first model loop");
    assert!(
        user_message(&h, 0).contains("known:///c.md"),
        "{}",
        user_message(&h, 0)
    );
}

#[test]
fn a_client_edit_of_a_project_file_proposes_and_lands_once_accepted() {
    let project = agentos_tests::git_project(&[("notes.txt", b"alpha\nbeta\n")]);
    let h = Harness::in_project(EngineConfig::default(), project.path(), &[]);
    let out = h
        .engine
        .client_ops(h.session.id, h.run.id, "<<EDIT(notes.txt)<2>:BETA:EDIT")
        .expect("client ops");
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].status, out[0].state),
        (202, Some(RowState::Proposed))
    );
    let loop_id = out[0].loop_id.expect("loop");
    assert_eq!(
        h.engine.store().loop_row(loop_id).expect("loop").status,
        202
    );
    // Parked: the run takes no other client turn meanwhile.
    match h
        .engine
        .client_ops(h.session.id, h.run.id, "<<READ(notes.txt)::READ")
    {
        Err(EngineError::RunBusy { loop_id: busy, .. }) => assert_eq!(busy, loop_id),
        other => panic!("expected a busy run, got {other:?}"),
    }
    assert_eq!(
        std::fs::read_to_string(project.path().join("notes.txt")).expect("read"),
        "alpha\nbeta\n",
        "nothing is written before the decision"
    );
    h.engine
        .resolve(out[0].row_id.expect("row"), Decision::Accept, None)
        .expect("resolve");
    let lp = h
        .engine
        .wait_loop(loop_id, None)
        .expect("the client loop ends");
    assert_eq!(lp.status, 200);
    assert_eq!(
        std::fs::read_to_string(project.path().join("notes.txt")).expect("read"),
        "alpha\nBETA\n"
    );
    let row = h
        .engine
        .store()
        .log_row(out[0].row_id.expect("row"))
        .expect("row");
    assert_eq!(row.state, Some(RowState::Resolved));
}

#[test]
fn a_look_writes_nothing_and_takes_only_reads() {
    let h = Harness::new(&[]);
    h.engine
        .client_ops(h.session.id, h.run.id, "<<EDIT(known:///l.md):x:EDIT")
        .expect("edit");
    let rows = h.engine.log(h.run.id).expect("log").len();
    let loops = h.engine.store().loops(h.run.id).expect("loops").len();
    let out = h
        .engine
        .look(h.session.id, h.run.id, "<<READ(known:///l.md)::READ")
        .expect("look");
    assert_eq!(
        (out[0].status, out[0].row_id, out[0].body.as_deref()),
        (200, None, Some("1:\tx"))
    );
    assert_eq!(h.engine.log(h.run.id).expect("log").len(), rows);
    assert_eq!(
        h.engine.store().loops(h.run.id).expect("loops").len(),
        loops
    );
    for bad in [
        "<<KILL(known:///l.md)::KILL",
        "no statement here",
        "<<READ(known:///l.md):",
    ] {
        assert!(
            matches!(
                h.engine.look(h.session.id, h.run.id, bad),
                Err(EngineError::BadRequest(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn client_ops_and_set_root_refuse_what_does_not_fit() {
    let h = Harness::new(&[]);
    let other = h.engine.create_session(None, None, "{}").expect("session");
    assert!(matches!(
        h.engine
            .client_ops(other.id, h.run.id, "<<READ(known:///a.md)::READ"),
        Err(EngineError::BadRequest(_))
    ));
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("f.txt");
    std::fs::write(&file, "x").expect("write");
    for bad in [file.to_str().expect("utf-8"), "/no/such/dir/here", ""] {
        assert!(
            matches!(
                h.engine.set_root(h.session.id, Some(bad)),
                Err(EngineError::Store(StoreError::Refused(_)))
            ),
            "{bad}"
        );
    }
    let root = dir.path().to_str().expect("utf-8");
    h.engine
        .set_root(h.session.id, Some(root))
        .expect("set root");
    let s = h.engine.store().session(h.session.id).expect("session");
    assert_eq!(s.project_root.as_deref(), Some(root));
    h.engine.set_root(h.session.id, None).expect("headless");
    let s = h.engine.store().session(h.session.id).expect("session");
    assert_eq!(s.project_root, None);
}

/// A client's statements get their `fs` caps the way a model loop does — from the session
/// as it is when they start — so `set_root` reaches them in a run whose process is already
/// up: a look beside a parked model loop reads the new root, and so does the next client
/// turn, whose accepted EDIT lands there.
#[test]
fn client_ops_see_the_sessions_root_as_it_is_when_they_start() {
    let a = agentos_tests::git_project(&[("notes.txt", b"alpha\nbeta\n")]);
    let b = agentos_tests::git_project(&[("other.txt", b"one\n")]);
    let h = Harness::in_project(
        EngineConfig::default(),
        a.path(),
        &[
            "<<PLAN:fix:PLAN\n<<EDIT(notes.txt)<2>:BETA:EDIT\n<<SEND[102]:proposed:SEND",
            "<<PLAN:done:PLAN\n<<SEND[200]:done:SEND",
        ],
    );
    let lp = h
        .engine
        .start_loop(h.run.id, "capitalise beta", &LoopOptions::default())
        .expect("start");
    h.engine.kernel().run_for(1_000);
    assert_eq!(h.engine.store().loop_row(lp.id).expect("loop").status, 202);
    let run = h.engine.run_account(h.run.id).expect("the run's process");

    h.engine
        .set_root(h.session.id, Some(b.path().to_str().expect("utf-8")))
        .expect("set_root");
    // A look runs beside the parked loop, in the same run process, with the new root.
    let out = h
        .engine
        .look(h.session.id, h.run.id, "<<READ(other.txt)::READ")
        .expect("look");
    assert_eq!(
        (out[0].status, out[0].body.as_deref()),
        (200, Some("1:\tone"))
    );
    assert_eq!(
        h.engine.run_account(h.run.id).map(|r| r.pid),
        Some(run.pid),
        "the look ran in the started run"
    );
    // A client turn waits for the model loop; then it runs with the new root too.
    assert!(matches!(
        h.engine
            .client_ops(h.session.id, h.run.id, "<<READ(other.txt)::READ"),
        Err(EngineError::RunBusy { .. })
    ));
    let row = h.engine.proposals(Some(h.run.id)).expect("proposals")[0].id;
    h.engine
        .resolve(row, Decision::Reject, None)
        .expect("resolve");
    assert_eq!(h.engine.wait_loop(lp.id, None).expect("ends").status, 200);
    let out = h
        .engine
        .client_ops(
            h.session.id,
            h.run.id,
            "<<READ(other.txt)::READ\n<<EDIT(other.txt)<1>:ONE:EDIT",
        )
        .expect("client ops");
    let got: Vec<(&str, u16)> = out.iter().map(|r| (r.op.as_str(), r.status)).collect();
    assert_eq!(got, [("READ", 200), ("EDIT", 202)]);
    h.engine
        .resolve(out[1].row_id.expect("row"), Decision::Accept, None)
        .expect("resolve");
    let client_loop = out[1].loop_id.expect("loop");
    assert_eq!(
        h.engine
            .wait_loop(client_loop, None)
            .expect("the client loop ends")
            .status,
        200
    );
    assert_eq!(
        std::fs::read_to_string(b.path().join("other.txt")).expect("read"),
        "ONE\n"
    );
    assert_eq!(
        std::fs::read_to_string(a.path().join("notes.txt")).expect("read"),
        "alpha\nbeta\n"
    );
}
