//! DESIGN.md "Replay" — a loop recorded with the kernel journal replays with no model, no
//! disk writes and no subprocess, and rebuilds the same log rows.

use std::sync::Arc;

use agentos_drivers::llm::{LlmDriver, ScriptedProvider};
use agentos_engine::replay::{record, replay, rows_hash};
use agentos_engine::store::Store;
use agentos_engine::turn::{EngineConfig, LoopFlags};
use agentos_engine::LoopOptions;

use crate::common::say;

#[test]
fn replay_reproduces_the_rows_without_model_disk_or_subprocess() {
    let project = agentos_tests::git_project(&[("notes.txt", b"alpha\nbeta\n")]);
    let root = project.path();
    let turns = [
        "<<PLAN:look:PLAN\n<<READ(notes.txt)::READ\n<<EDIT(known:///plan.md):fix beta:EDIT\n<<SEND[102]:reading:SEND",
        "<<PLAN:fix:PLAN\n<<EDIT(notes.txt)<2>:BETA:EDIT\n<<EXEC[sh]:echo ran > ran.txt; echo done:EXEC\n<<SEND[102]:fixing:SEND",
        "<<PLAN:done:PLAN\n<<SEND[200]:fixed:SEND",
    ];
    let provider = Arc::new(ScriptedProvider::results(turns.iter().map(|t| say(t))));
    let llm = Arc::new(LlmDriver::new(provider).unwrap());
    let rec_dir = tempfile::tempdir().unwrap();
    let opts = LoopOptions {
        flags: LoopFlags {
            yolo: true,
            ..LoopFlags::default()
        },
        max_turns: None,
    };
    let (lp, rows, rec) = record(
        rec_dir.path(),
        11,
        llm,
        Arc::new(Store::open_in_memory().unwrap()),
        EngineConfig::default(),
        Some(root.to_str().unwrap()),
        "fix the notes",
        &opts,
    )
    .expect("record");
    assert_eq!(lp.status, 200, "{lp:?}");
    assert_eq!(rec.rows_hash, rows_hash(&rows));
    assert!(rows
        .iter()
        .any(|r| r.op.as_str() == "EXEC" && r.status == 102));
    assert_eq!(
        std::fs::read_to_string(root.join("notes.txt")).unwrap(),
        "alpha\nBETA\n"
    );
    assert!(root.join("ran.txt").exists());

    // Put the world back; a replay must not touch it.
    std::fs::write(root.join("notes.txt"), "alpha\nbeta\n").unwrap();
    std::fs::remove_file(root.join("ran.txt")).unwrap();

    let r = replay(rec_dir.path(), EngineConfig::default()).expect("replay");
    assert_eq!(r.lp.status, 200);
    assert_eq!(r.rows.len(), rows.len());
    assert_eq!(r.rows_hash, rec.rows_hash, "the same rows, rebuilt");
    assert!(r.matches());
    assert_eq!(
        std::fs::read_to_string(root.join("notes.txt")).unwrap(),
        "alpha\nbeta\n",
        "no disk write in a replay"
    );
    assert!(!root.join("ran.txt").exists(), "no subprocess in a replay");
}

#[test]
fn a_replay_of_a_missing_or_foreign_recording_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = replay(dir.path(), EngineConfig::default()).unwrap_err();
    assert!(e.to_string().contains("recording.json"), "{e}");
    std::fs::write(dir.path().join("recording.json"), "{\"not\": 1}").unwrap();
    let e = replay(dir.path(), EngineConfig::default()).unwrap_err();
    assert!(e.to_string().contains("not a recording"), "{e}");
}
