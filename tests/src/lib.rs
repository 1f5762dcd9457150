//! # agentos-tests — cross-layer scenarios
//!
//! The one integration-test crate of the workspace. Its tests live under `tests/tests/`, one
//! binary per area (`kernel/` today), with modules by topic inside; unit tests stay beside the
//! code they test. Every test is deterministic: a virtual clock, seeded randomness, no sleeps,
//! no outside network.

use std::path::Path;
use std::process::Command;

/// Runs `git` in `dir` with a throwaway identity and no signing; panics (a test failure) with
/// git's output when it fails.
pub fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=agentos-test",
            "-c",
            "user.email=test@agentos.invalid",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .expect("git runs (.ci/run installs it)");
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

/// A temp git repository holding `files` (path, content), all tracked and committed: a
/// project root for the engine's file, exec and run tests.
pub fn git_project(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    for (path, content) in files {
        let p = d.path().join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, content).expect("write");
    }
    git(d.path(), &["init", "-q"]);
    git(d.path(), &["add", "-A"]);
    git(d.path(), &["commit", "-q", "-m", "init"]);
    d
}
