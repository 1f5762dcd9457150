//! PLURNK.md §2.3 (bare paths / the file scheme) and §3.6 (proposals) — a temp git
//! repository as the session's project root, reached only through the loop's `fs` cap:
//! members read, non-members / escapes / symlinks out answer 403, binary 415, EDIT proposes
//! (202) and only an accepted proposal writes the disk, with compare-and-swap on the
//! snapshot it was made against. COPY/MOVE with a file at either end (§1.4, §1.6): a file
//! read into an entry is written at once, anything that writes or deletes a file proposes.

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

// ---- COPY / MOVE with project files (PLURNK.md §1.4, §1.6, §2.1 cross-scheme, §3.6) ------

fn entry_body(h: &Harness, scheme: &str, path: &str) -> Option<String> {
    let key = agentos_engine::store::EntryKey {
        scope: agentos_engine::store::Scope::Session,
        scheme: Some(scheme.into()),
        hostname: None,
        pathname: path.into(),
    };
    h.engine
        .store()
        .entry(h.session.id, h.run.id, &key)
        .expect("store")
        .and_then(|e| e.channel("body").map(|c| c.content.clone()))
}

fn lenient() -> EngineConfig {
    EngineConfig {
        rails: agentos_engine::rails::RailsConfig {
            max_strikes: 99,
            ..Default::default()
        },
        ..EngineConfig::default()
    }
}

/// §1.4 COPY and §1.6 201/304/409/416: a file copied into known:// is read through the fs
/// device and written at once (the destination is an entry: no proposal); `<L>` slices it;
/// an identical destination is 304, a different one 409; the disk is untouched.
#[test]
fn copy_a_file_into_known_is_201_then_304_or_409() {
    let p = Project::new();
    let h = Harness::in_project(
        lenient(),
        p.path(),
        &[
            "<<PLAN:copy:PLAN\n<<COPY(notes.txt):known:///notes.md:COPY\n<<COPY(notes.txt):known:///notes.md:COPY\n<<EDIT(known:///other.md):different:EDIT\n<<COPY(notes.txt):known:///other.md:COPY\n<<COPY(notes.txt)<2>:known:///beta.md:COPY\n<<COPY(notes.txt)<9>:known:///nine.md:COPY\n<<SEND[102]:copied:SEND",
            DONE,
        ],
    );
    let lp = h.run_loop("copy the notes", LoopOptions::default());
    assert_eq!(lp.status, 200, "{lp:?}");
    assert_eq!(
        h.ops(&lp, 1),
        ops(&[
            ("COPY", 201),
            ("COPY", 304),
            ("EDIT", 201),
            ("COPY", 409),
            ("COPY", 201),
            ("COPY", 416),
        ])
    );
    assert_eq!(
        entry_body(&h, "known", "/notes.md").as_deref(),
        Some("alpha\nbeta\n")
    );
    assert_eq!(
        entry_body(&h, "known", "/beta.md").as_deref(),
        Some("beta\n")
    );
    assert_eq!(
        entry_body(&h, "known", "/other.md").as_deref(),
        Some("different")
    );
    assert_eq!(p.read("notes.txt"), "alpha\nbeta\n");
    assert!(h.engine.proposals(None).expect("proposals").is_empty());
}

/// §1.4 COPY into a file and §3.6: writing a project file is a side effect, so the COPY
/// proposes (202) and nothing is written until it is accepted; accepted, the file is created
/// atomically and the row resolves 200.
#[test]
fn copy_into_a_file_proposes_and_accept_creates_it() {
    let p = Project::new();
    let h = Harness::in_project(
        EngineConfig::default(),
        p.path(),
        &[
            "<<PLAN:draft:PLAN\n<<EDIT(known:///draft.md):hello\nworld:EDIT\n<<COPY(known:///draft.md):draft.txt:COPY\n<<SEND[102]:proposed:SEND",
            DONE,
        ],
    );
    let lp = run_until_parked(&h, "write the draft out", LoopOptions::default());
    assert!(
        !p.path().join("draft.txt").exists(),
        "nothing before accept"
    );
    let pending = h.engine.proposals(Some(h.run.id)).expect("proposals");
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].op.as_str(), "COPY");
    assert!(
        pending[0].rx.as_deref().unwrap_or("").contains("+hello"),
        "{pending:?}"
    );
    h.engine
        .resolve(pending[0].id, Decision::Accept, None)
        .expect("resolve");
    let lp = h.engine.wait_loop(lp.id, None).expect("loop ends");
    assert_eq!(lp.status, 200, "{lp:?}");
    assert_eq!(p.read("draft.txt"), "hello\nworld");
    let row = h.engine.store().log_row(pending[0].id).expect("row");
    assert_eq!((row.status, row.state), (200, Some(RowState::Resolved)));
    // A COPY is not a MOVE: the source entry stays.
    assert_eq!(
        entry_body(&h, "known", "/draft.md").as_deref(),
        Some("hello\nworld")
    );
}

/// §1.4 MOVE (COPY + delete source) between files and §3.6: one proposal writes the
/// destination and deletes the source on accept (yolo accepts it here).
#[test]
fn move_a_file_to_a_file_proposes_then_writes_and_deletes() {
    let p = Project::new();
    let h = Harness::in_project(
        EngineConfig::default(),
        p.path(),
        &[
            "<<PLAN:rename:PLAN\n<<MOVE(notes.txt):docs/notes.txt:MOVE\n<<SEND[102]:moving:SEND",
            "<<PLAN:check:PLAN\n<<READ(docs/notes.txt)::READ\n<<READ(notes.txt)::READ\n<<SEND[102]:checking:SEND",
            DONE,
        ],
    );
    let lp = h.run_loop("move the notes", flags(|f| f.yolo = true));
    assert_eq!(lp.status, 200, "{lp:?}");
    assert_eq!(h.ops(&lp, 1), ops(&[("MOVE", 200)]));
    assert_eq!(h.ops(&lp, 2), ops(&[("READ", 200), ("READ", 404)]));
    assert_eq!(p.read("docs/notes.txt"), "alpha\nbeta\n");
    assert!(!p.path().join("notes.txt").exists());
}

/// §1.4 MOVE from a file into known:// and §3.6: the destination is an entry, but deleting
/// the source file is a side effect, so the MOVE proposes; rejected, neither the entry nor
/// the disk changes.
#[test]
fn move_a_file_into_known_proposes_and_reject_changes_nothing() {
    let p = Project::new();
    let h = Harness::in_project(
        EngineConfig::default(),
        p.path(),
        &[
            "<<PLAN:archive:PLAN\n<<MOVE(notes.txt):known:///archive/notes.md:MOVE\n<<SEND[102]:moving:SEND",
            DONE,
        ],
    );
    let lp = run_until_parked(&h, "archive the notes", LoopOptions::default());
    assert_eq!(entry_body(&h, "known", "/archive/notes.md"), None);
    let row = h.engine.proposals(None).expect("proposals")[0].id;
    h.engine
        .resolve(row, Decision::Reject, None)
        .expect("resolve");
    let lp = h.engine.wait_loop(lp.id, None).expect("loop ends");
    assert_eq!(lp.status, 200, "{lp:?}");
    let row = h.engine.store().log_row(row).expect("row");
    assert_eq!((row.status, row.state), (400, Some(RowState::Failed)));
    assert_eq!(entry_body(&h, "known", "/archive/notes.md"), None);
    assert_eq!(p.read("notes.txt"), "alpha\nbeta\n");
}

/// §3.6 "MOVE into a proposed file destination defers the source delete until accept": the
/// known:// source is still there while the proposal waits, and gone once it is accepted.
#[test]
fn move_known_into_a_file_defers_the_source_delete_until_accept() {
    let p = Project::new();
    let h = Harness::in_project(
        EngineConfig::default(),
        p.path(),
        &[
            "<<PLAN:publish:PLAN\n<<EDIT(known:///todo.md):ship it:EDIT\n<<MOVE(known:///todo.md):TODO.txt:MOVE\n<<SEND[102]:moving:SEND",
            DONE,
        ],
    );
    let lp = run_until_parked(&h, "publish the todo", LoopOptions::default());
    assert_eq!(
        entry_body(&h, "known", "/todo.md").as_deref(),
        Some("ship it"),
        "the source waits for the decision"
    );
    let row = h.engine.proposals(None).expect("proposals")[0].id;
    h.engine
        .resolve(row, Decision::Accept, None)
        .expect("resolve");
    let lp = h.engine.wait_loop(lp.id, None).expect("loop ends");
    assert_eq!(lp.status, 200, "{lp:?}");
    assert_eq!(p.read("TODO.txt"), "ship it");
    assert_eq!(entry_body(&h, "known", "/todo.md"), None);
}

/// §3.6 compare-and-swap: a MOVE whose source file changed on disk after it was read is
/// refused at accept (409 `write_conflict`) before anything is written: no destination, the
/// source as the other writer left it.
#[test]
fn an_accepted_move_whose_source_moved_on_disk_writes_nothing() {
    let p = Project::new();
    let h = Harness::in_project(
        EngineConfig::default(),
        p.path(),
        &[
            "<<PLAN:rename:PLAN\n<<MOVE(notes.txt):renamed.txt:MOVE\n<<SEND[102]:moving:SEND",
            DONE,
        ],
    );
    let lp = run_until_parked(&h, "rename the notes", LoopOptions::default());
    std::fs::write(p.path().join("notes.txt"), "rewritten meanwhile, longer\n").unwrap();
    let row = h.engine.proposals(None).expect("proposals")[0].id;
    h.engine
        .resolve(row, Decision::Accept, None)
        .expect("resolve");
    h.engine.wait_loop(lp.id, None).expect("loop ends");
    let row = h.engine.store().log_row(row).expect("row");
    assert_eq!(row.status, 409, "{row:?}");
    assert_eq!(row.outcome.as_deref(), Some("write_conflict"));
    assert!(!p.path().join("renamed.txt").exists());
    assert_eq!(p.read("notes.txt"), "rewritten meanwhile, longer\n");
}

/// §1.6 refusals with files at either end: a missing source 404; a non-member, an escape
/// and a symlink out 403; a binary file 415 (as source and as destination); a mimetype
/// mismatch 415; an existing different file 409 — none of them proposes anything.
#[test]
fn copy_and_move_with_files_refuse_with_404_403_415_and_409() {
    let p = Project::new();
    let h = Harness::in_project(
        lenient(),
        p.path(),
        &[
            "<<PLAN:probe:PLAN\n<<COPY(nope.txt):known:///n.md:COPY\n<<COPY(private.txt):known:///p.md:COPY\n<<COPY(notes.txt):../escaped.txt:COPY\n<<COPY(leak):known:///l.md:COPY\n<<COPY(blob.bin):known:///b.md:COPY\n<<SEND[102]:probing:SEND",
            "<<PLAN:more:PLAN\n<<EDIT(known:///x.md):x:EDIT\n<<COPY(known:///x.md):blob.bin:COPY\n<<COPY(notes.txt):known:///n.json:COPY\n<<COPY(notes.txt):.gitignore:COPY\n<<SEND[102]:probing:SEND",
            DONE,
        ],
    );
    let lp = h.run_loop("probe", LoopOptions::default());
    assert_eq!(lp.status, 200, "{lp:?}");
    assert_eq!(
        h.ops(&lp, 1),
        ops(&[
            ("COPY", 404),
            ("COPY", 403),
            ("COPY", 403),
            ("COPY", 403),
            ("COPY", 415),
        ])
    );
    assert_eq!(
        h.ops(&lp, 2),
        ops(&[("EDIT", 201), ("COPY", 415), ("COPY", 415), ("COPY", 409)])
    );
    assert!(h.engine.proposals(None).expect("proposals").is_empty());
    assert!(!p.path().parent().unwrap().join("escaped.txt").exists());
    assert_eq!(p.read(".gitignore"), "private.txt\n");
}

/// §2.2 ask mode: a loop holding a read-only `fs` cap copies from files but never writes or
/// deletes one (403 before anything is proposed); a headless session has no files at all.
#[test]
fn ask_mode_copies_from_files_but_never_writes_them_and_headless_has_none() {
    let p = Project::new();
    let h = Harness::in_project(
        lenient(),
        p.path(),
        &[
            "<<PLAN:try:PLAN\n<<COPY(notes.txt):known:///n.md:COPY\n<<COPY(known:///n.md):copy.txt:COPY\n<<MOVE(notes.txt):known:///m.md:MOVE\n<<SEND[102]:trying:SEND",
            DONE,
        ],
    );
    let lp = h.run_loop("try", flags(|f| f.mode = "ask".into()));
    assert_eq!(
        h.ops(&lp, 1),
        ops(&[("COPY", 201), ("COPY", 403), ("MOVE", 403)])
    );
    assert!(!p.path().join("copy.txt").exists());
    assert_eq!(p.read("notes.txt"), "alpha\nbeta\n");
    assert_eq!(entry_body(&h, "known", "/m.md"), None);

    let headless = Harness::new(&[
        "<<PLAN:try:PLAN\n<<COPY(notes.txt):known:///n.md:COPY\n<<SEND[102]:trying:SEND",
        DONE,
    ]);
    let lp = headless.run_loop("try", LoopOptions::default());
    assert_eq!(headless.ops(&lp, 1), ops(&[("COPY", 403)]));
}
