//! PLURNK.md §2.3 (bare paths / the file scheme) and §3.6 (proposals) — a temp git
//! repository as the session's project root, reached only through the loop's `fs` cap:
//! members read, non-members / escapes / symlinks out answer 403, binary 415, EDIT proposes
//! (202) and only an accepted proposal writes the disk, with compare-and-swap on the
//! snapshot it was made against.

use std::path::Path;

use agentos_tests::git;

use crate::common::{ops, Harness};
use agentos_engine::store::{LoopRow, Origin, RowState};
use agentos_engine::turn::proposal::Decision;
use agentos_engine::turn::{EngineConfig, LoopFlags};
use agentos_engine::LoopOptions;

/// A repository with a tracked text file, a tracked binary, an ignored file and a symlink
/// pointing out of the root; and a directory outside it.
struct Project {
    root: tempfile::TempDir,
    _outside: tempfile::TempDir,
}

impl Project {
    fn new() -> Project {
        let root = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let r = root.path();
        std::fs::write(outside.path().join("secret"), "outside the root").unwrap();
        std::fs::write(r.join("notes.txt"), "alpha\nbeta\n").unwrap();
        std::fs::write(r.join("blob.bin"), b"\x7fELF\x00\x01\x02").unwrap();
        std::fs::write(r.join(".gitignore"), "private.txt\n").unwrap();
        git(r, &["init", "-q"]);
        git(r, &["add", "notes.txt", "blob.bin", ".gitignore"]);
        git(r, &["commit", "-q", "-m", "init"]);
        std::fs::write(r.join("private.txt"), "ignored\n").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), r.join("leak")).unwrap();
        Project {
            root,
            _outside: outside,
        }
    }

    fn path(&self) -> &Path {
        self.root.path()
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel)).expect("file")
    }
}

fn flags(f: impl FnOnce(&mut LoopFlags)) -> LoopOptions {
    let mut flags = LoopFlags::default();
    f(&mut flags);
    LoopOptions {
        flags,
        max_turns: None,
    }
}

/// Starts a loop and drives the kernel until the loop parks on a proposal (status 202);
/// the proposal's timeout (virtual clock) is far away, so nothing times out meanwhile.
fn run_until_parked(h: &Harness, prompt: &str, opts: LoopOptions) -> LoopRow {
    let lp = h.engine.start_loop(h.run.id, prompt, &opts).expect("start");
    h.engine.kernel().run_for(1_000);
    let now = h.engine.store().loop_row(lp.id).expect("loop");
    assert_eq!(now.status, 202, "the loop parks on its proposal: {now:?}");
    now
}

const EDIT_NOTES: &str =
    "<<PLAN:fix:PLAN\n<<EDIT(notes.txt)<2>:BETA:EDIT\n<<SEND[102]:proposed:SEND";
const DONE: &str = "<<PLAN:done:PLAN\n<<SEND[200]:done:SEND";

#[test]
fn a_member_is_read_through_the_fs_device() {
    let p = Project::new();
    let h = Harness::in_project(
        EngineConfig::default(),
        p.path(),
        &[
            "<<PLAN:look:PLAN\n<<READ(notes.txt)::READ\n<<FIND(**)::FIND\n<<SEND[102]:reading:SEND",
            DONE,
        ],
    );
    let lp = h.run_loop("read the notes", LoopOptions::default());
    assert_eq!(lp.status, 200, "{lp:?}");
    assert_eq!(h.ops(&lp, 1), ops(&[("READ", 200), ("FIND", 200)]));
    assert_eq!(h.rx(&lp, 1, "READ"), "1:\talpha\n2:\tbeta");
    let listing = h.rx(&lp, 1, "FIND");
    assert!(listing.contains("notes.txt"), "{listing}");
    assert!(
        !listing.contains("private.txt"),
        "ignored files are not members: {listing}"
    );
}

#[test]
fn non_members_escapes_and_symlinks_out_are_403_and_binary_is_415() {
    let p = Project::new();
    let h = Harness::in_project(
        EngineConfig {
            rails: agentos_engine::rails::RailsConfig {
                max_strikes: 99,
                ..Default::default()
            },
            ..EngineConfig::default()
        },
        p.path(),
        &[
            "<<PLAN:probe:PLAN\n<<READ(private.txt)::READ\n<<READ(../secret)::READ\n<<READ(leak)::READ\n<<READ(blob.bin)::READ\n<<SEND[102]:probing:SEND",
            DONE,
        ],
    );
    let lp = h.run_loop("probe", LoopOptions::default());
    assert_eq!(
        h.ops(&lp, 1),
        ops(&[("READ", 403), ("READ", 403), ("READ", 403), ("READ", 415)])
    );
    assert_eq!(lp.status, 200, "{lp:?}");
}

#[test]
fn a_headless_session_has_no_file_scheme() {
    let h = Harness::new(&[
        "<<PLAN:look:PLAN\n<<READ(notes.txt)::READ\n<<SEND[102]:reading:SEND",
        DONE,
    ]);
    let lp = h.run_loop("read", LoopOptions::default());
    assert_eq!(h.ops(&lp, 1), ops(&[("READ", 403)]));
}

#[test]
fn edit_proposes_and_accept_writes_the_disk() {
    let p = Project::new();
    let h = Harness::in_project(EngineConfig::default(), p.path(), &[EDIT_NOTES, DONE]);
    let lp = run_until_parked(&h, "capitalise beta", LoopOptions::default());
    assert_eq!(
        p.read("notes.txt"),
        "alpha\nbeta\n",
        "nothing is written before accept"
    );
    let pending = h.engine.proposals(Some(h.run.id)).expect("proposals");
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].status, 202);
    assert!(pending[0].rx.as_deref().unwrap_or("").contains("+BETA"));
    h.engine
        .resolve(pending[0].id, Decision::Accept, None)
        .expect("resolve");
    let lp = h.engine.wait_loop(lp.id, None).expect("loop ends");
    assert_eq!(lp.status, 200, "{lp:?}");
    assert_eq!(p.read("notes.txt"), "alpha\nBETA\n");
    let row = h.engine.store().log_row(pending[0].id).expect("row");
    assert_eq!((row.status, row.state), (200, Some(RowState::Resolved)));
    assert!(h.engine.proposals(None).expect("proposals").is_empty());
    // The snapshot follows the write: the session's file entry holds the new body.
    assert_eq!(h.ops(&lp, 1), ops(&[("EDIT", 200)]));
}

#[test]
fn accept_after_the_file_changed_on_disk_is_409_write_conflict() {
    let p = Project::new();
    let h = Harness::in_project(EngineConfig::default(), p.path(), &[EDIT_NOTES, DONE]);
    let lp = run_until_parked(&h, "capitalise beta", LoopOptions::default());
    std::fs::write(
        p.path().join("notes.txt"),
        "someone else wrote this, longer\n",
    )
    .unwrap();
    let row = h.engine.proposals(None).expect("proposals")[0].id;
    h.engine
        .resolve(row, Decision::Accept, None)
        .expect("resolve");
    h.engine.wait_loop(lp.id, None).expect("loop ends");
    let row = h.engine.store().log_row(row).expect("row");
    assert_eq!(row.status, 409, "{row:?}");
    assert_eq!(row.state, Some(RowState::Failed));
    assert_eq!(row.outcome.as_deref(), Some("write_conflict"));
    assert_eq!(p.read("notes.txt"), "someone else wrote this, longer\n");
}

#[test]
fn reject_leaves_the_disk_untouched() {
    let p = Project::new();
    let h = Harness::in_project(EngineConfig::default(), p.path(), &[EDIT_NOTES, DONE]);
    let lp = run_until_parked(&h, "capitalise beta", LoopOptions::default());
    let row = h.engine.proposals(None).expect("proposals")[0].id;
    h.engine
        .resolve(row, Decision::Reject, Some("not now"))
        .expect("resolve");
    let lp = h.engine.wait_loop(lp.id, None).expect("loop ends");
    assert_eq!(lp.status, 200);
    let row = h.engine.store().log_row(row).expect("row");
    assert_eq!((row.status, row.state), (400, Some(RowState::Failed)));
    assert_eq!(row.outcome.as_deref(), Some("not now"));
    assert_eq!(p.read("notes.txt"), "alpha\nbeta\n");
    // A decision lands once.
    assert!(h.engine.resolve(row.id, Decision::Accept, None).is_err());
}

#[test]
fn an_unanswered_proposal_times_out_499() {
    let p = Project::new();
    let cfg = EngineConfig {
        proposal_timeout_ms: 60_000,
        ..EngineConfig::default()
    };
    let h = Harness::in_project(cfg, p.path(), &[EDIT_NOTES, DONE]);
    // Nobody answers: the virtual clock reaches the deadline as soon as the kernel idles.
    let lp = h.run_loop("capitalise beta", LoopOptions::default());
    assert_eq!(lp.status, 200);
    let rows = h.rows(&lp);
    let edit = rows
        .iter()
        .find(|r| r.op.as_str() == "EDIT" && r.origin == Origin::Model)
        .expect("edit row");
    assert_eq!((edit.status, edit.state), (499, Some(RowState::Cancelled)));
    assert_eq!(edit.outcome.as_deref(), Some("timeout"));
    assert_eq!(p.read("notes.txt"), "alpha\nbeta\n");
}

#[test]
fn a_loop_cancelled_while_parked_leaves_its_proposals_cancelled() {
    let p = Project::new();
    let h = Harness::in_project(EngineConfig::default(), p.path(), &[EDIT_NOTES, DONE]);
    let lp = run_until_parked(&h, "capitalise beta", LoopOptions::default());
    let row = h.engine.proposals(None).expect("proposals")[0].id;
    h.engine.cancel(h.run.id).expect("cancel");
    let lp = h.engine.wait_loop(lp.id, None).expect("loop ends");
    assert_eq!(lp.status, 499);
    let row = h.engine.store().log_row(row).expect("row");
    assert_eq!((row.status, row.state), (499, Some(RowState::Cancelled)));
    assert_eq!(row.outcome.as_deref(), Some("loop_aborted"));
    assert_eq!(p.read("notes.txt"), "alpha\nbeta\n");
}

#[test]
fn yolo_accepts_and_the_loop_runs_end_to_end() {
    let p = Project::new();
    let h = Harness::in_project(
        EngineConfig::default(),
        p.path(),
        &[
            EDIT_NOTES,
            "<<PLAN:check:PLAN\n<<READ(notes.txt)::READ\n<<SEND[102]:checking:SEND",
            DONE,
        ],
    );
    let lp = h.run_loop("capitalise beta", flags(|f| f.yolo = true));
    assert_eq!(lp.status, 200, "{lp:?}");
    assert_eq!(p.read("notes.txt"), "alpha\nBETA\n");
    assert_eq!(h.ops(&lp, 1), ops(&[("EDIT", 200)]));
    assert_eq!(h.rx(&lp, 2, "READ"), "1:\talpha\n2:\tBETA");
}

#[test]
fn no_proposals_rejects_with_no_review_channel() {
    let p = Project::new();
    let h = Harness::in_project(EngineConfig::default(), p.path(), &[EDIT_NOTES, DONE]);
    let lp = h.run_loop("capitalise beta", flags(|f| f.no_proposals = true));
    let edit = h
        .rows(&lp)
        .into_iter()
        .find(|r| r.op.as_str() == "EDIT" && r.origin == Origin::Model)
        .expect("edit row");
    assert_eq!(edit.status, 400);
    assert_eq!(edit.outcome.as_deref(), Some("no_review_channel"));
    assert_eq!(p.read("notes.txt"), "alpha\nbeta\n");
}

#[test]
fn ask_mode_holds_a_read_only_fs_cap_so_edit_is_403() {
    let p = Project::new();
    let h = Harness::in_project(
        EngineConfig::default(),
        p.path(),
        &[
            "<<PLAN:try:PLAN\n<<READ(notes.txt)::READ\n<<EDIT(notes.txt)<2>:BETA:EDIT\n<<SEND[102]:trying:SEND",
            DONE,
        ],
    );
    let lp = h.run_loop("capitalise beta", flags(|f| f.mode = "ask".into()));
    assert_eq!(h.ops(&lp, 1), ops(&[("READ", 200), ("EDIT", 403)]));
    assert_eq!(p.read("notes.txt"), "alpha\nbeta\n");
}

/// PLURNK.md §4.2 `session.set_root` / `session.constrain` and §2.3 membership: a run whose
/// process is already up (its first loop parked, its second queued behind it) sees the new
/// project root and overlay at its next loop — the engine grants each loop its `fs` cap
/// from the session as it is then, not as it was when the run started.
#[test]
fn a_started_run_sees_set_root_and_constrain_at_its_next_loop() {
    let a = Project::new();
    let b = agentos_tests::git_project(&[("other.txt", b"one\n"), ("secret.txt", b"hush\n")]);
    let h = Harness::in_project(
        EngineConfig::default(),
        a.path(),
        &[
            EDIT_NOTES,
            DONE,
            "<<PLAN:look:PLAN\n<<READ(other.txt)::READ\n<<READ(secret.txt)::READ\n<<READ(notes.txt)::READ\n<<EDIT(other.txt)<1>:ONE:EDIT\n<<SEND[102]:looking:SEND",
            DONE,
        ],
    );
    let first = run_until_parked(&h, "capitalise beta", LoopOptions::default());
    let run = h.engine.run_account(h.run.id).expect("the run's process");

    // The operator moves the session to another repository and hides a file in it.
    h.engine
        .set_root(h.session.id, Some(b.path().to_str().unwrap()))
        .expect("set_root");
    assert!(h
        .engine
        .store()
        .constrain(h.session.id, "hide", "secret.txt")
        .expect("constrain"));
    let second = h
        .engine
        .start_loop(h.run.id, "look around", &LoopOptions::default())
        .expect("queue");
    let row = h.engine.proposals(None).expect("proposals")[0].id;
    h.engine
        .resolve(row, Decision::Reject, None)
        .expect("resolve");
    // (Run the kernel only so far: idle, it would move the virtual clock past the second
    // loop's proposal timeout.)
    h.engine.kernel().run_for(1_000);
    let first = h.engine.store().loop_row(first.id).expect("loop");
    assert_eq!(first.status, 200, "{first:?}");

    // The second loop runs in the same run process, parked on its own proposal now.
    let parked = h.engine.store().loop_row(second.id).expect("loop");
    assert_eq!(parked.status, 202, "{parked:?}");
    assert_eq!(
        h.engine.run_account(h.run.id).map(|r| r.pid),
        Some(run.pid),
        "the run's process did not restart"
    );
    assert_eq!(
        h.ops(&parked, 1),
        ops(&[("READ", 200), ("READ", 403), ("READ", 404), ("EDIT", 202)])
    );
    assert_eq!(h.rx(&parked, 1, "READ"), "1:\tone");
    let row = h.engine.proposals(None).expect("proposals")[0].id;
    h.engine
        .resolve(row, Decision::Accept, None)
        .expect("resolve");
    let second = h.engine.wait_loop(second.id, None).expect("second ends");
    assert_eq!(second.status, 200, "{second:?}");
    // The accepted write went to the new root; the old one is untouched.
    assert_eq!(
        std::fs::read_to_string(b.path().join("other.txt")).unwrap(),
        "ONE\n"
    );
    assert_eq!(a.read("notes.txt"), "alpha\nbeta\n");
}
