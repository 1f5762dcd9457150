//! The `fs` device behind a real kernel: a project root from the cap's scope, git membership
//! with the session overlay, path escapes refused, binary files refused, and compare-and-swap
//! writes that never touch a file that moved on disk.

use crate::common::{reason, req, status, with_scoped};
use crate::util::det;
use agentos_abi::*;
use agentos_drivers::fs::FsDriver;
use agentos_tests::git;
use std::path::Path;
use std::sync::Arc;

/// A project: a git repo with a tracked file, a tracked binary, an untracked file, ignored
/// files, a symlink out of the root; and a directory outside it with a secret.
struct Project {
    root: tempfile::TempDir,
    outside: tempfile::TempDir,
}

impl Project {
    fn new() -> Project {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::write(outside.path().join("secret"), "outside the root").unwrap();
        std::fs::write(r.join("tracked.txt"), "hello\n").unwrap();
        std::fs::write(r.join("bin.dat"), b"\x7fELF\x00\x01\x02").unwrap();
        std::fs::write(r.join(".gitignore"), "ignored.txt\nbuild/\n").unwrap();
        git(r, &["init", "-q"]);
        git(r, &["add", "tracked.txt", "bin.dat", ".gitignore"]);
        git(r, &["commit", "-q", "-m", "init"]);
        std::fs::write(r.join("untracked.txt"), "new\n").unwrap();
        std::fs::write(r.join("ignored.txt"), "ignored\n").unwrap();
        std::fs::create_dir(r.join("build")).unwrap();
        std::fs::write(r.join("build/out.txt"), "artifact\n").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), r.join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path(), r.join("outdir")).unwrap();
        Project { root, outside }
    }

    fn path(&self) -> &Path {
        self.root.path()
    }

    fn scope(&self) -> Scope {
        Scope::new().with(Scope::ROOT, self.path().to_str().unwrap())
    }
}

fn kernel() -> agentos_kernel::Kernel {
    let k = det(1);
    k.register_driver(Arc::new(FsDriver::new().unwrap()))
        .unwrap();
    k
}

fn list() -> Value {
    req(&[("op", "list".into())])
}

fn read(path: &str) -> Value {
    req(&[("op", "read".into()), ("path", path.into())])
}

fn write(path: &str, content: &str, expect: Value) -> Value {
    req(&[
        ("op", "write".into()),
        ("path", path.into()),
        ("content", content.into()),
        ("expect", expect),
    ])
}

fn member_paths(r: &Result<Value, SysError>) -> Vec<(String, bool, bool)> {
    let Some(Value::List(ms)) = r.as_ref().unwrap().get("members") else {
        panic!("no members in {r:?}")
    };
    ms.iter()
        .map(|m| {
            (
                m.get("path").and_then(Value::as_str).unwrap().to_owned(),
                m.get("binary") == Some(&Value::Bool(true)),
                m.get("readonly") == Some(&Value::Bool(true)),
            )
        })
        .collect()
}

fn sig(r: &Result<Value, SysError>) -> Value {
    r.as_ref().unwrap().get("sig").cloned().expect("a sig")
}

#[test]
fn fs_members_are_tracked_and_untracked_files_never_ignored_ones() {
    let p = Project::new();
    let r = with_scoped(&kernel(), "fs", p.scope(), None, |sys, h| async move {
        vec![
            sys.read(h, list()).await,
            sys.read(h, read("tracked.txt")).await,
        ]
    });
    // `link` is an untracked member, but it leads out of the root: not listed.
    assert_eq!(
        member_paths(&r[0]),
        vec![
            (".gitignore".into(), false, false),
            ("bin.dat".into(), true, false),
            ("tracked.txt".into(), false, false),
            ("untracked.txt".into(), false, false),
        ]
    );
    assert_eq!(status(&r[1]), 200);
    let v = r[1].as_ref().unwrap();
    assert_eq!(v.get("content"), Some(&Value::Str("hello\n".into())));
    assert_eq!(v.get("readonly"), Some(&Value::Bool(false)));
    let s = sig(&r[1]);
    assert_eq!(s.get("size"), Some(&Value::U64(6)));
    assert!(s.get("mtime_ns").and_then(Value::as_u64).unwrap() > 0);
}

#[test]
fn fs_refuses_escapes_non_members_and_binary_content() {
    let p = Project::new();
    let r = with_scoped(&kernel(), "fs", p.scope(), None, |sys, h| async move {
        let mut out = Vec::new();
        for path in [
            "ignored.txt",
            "build/out.txt",
            "../x",
            "sub/../../x",
            "/etc/passwd",
            "link",
            "outdir/secret",
            ".git/config",
            "bin.dat",
            "missing.txt",
            "./untracked.txt",
        ] {
            out.push(sys.read(h, read(path)).await);
        }
        out.push(sys.read(h, req(&[("op", "read".into())])).await);
        out.push(sys.read(h, req(&[("op", "frob".into())])).await);
        out.push(sys.read(h, write("x", "y", Value::Unit)).await);
        out
    });
    let got: Vec<(u64, String)> = r[..11].iter().map(|x| (status(x), reason(x))).collect();
    let want = [
        (403, "not_member"),
        (403, "not_member"),
        (403, "escape"),
        (403, "escape"),
        (403, "escape"),
        (403, "escape"),
        (403, "escape"),
        (403, "protected"),
        (415, "binary"),
        (404, "not_found"),
        (200, ""),
    ];
    assert_eq!(
        got,
        want.iter()
            .map(|(s, e)| (*s, e.to_string()))
            .collect::<Vec<_>>()
    );
    for bad in &r[11..] {
        assert!(
            matches!(bad, Err(SysError::Driver(m)) if m.contains("bad request")),
            "a malformed request is a BadRequest: {bad:?}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(p.outside.path().join("secret")).unwrap(),
        "outside the root"
    );
}

#[test]
fn fs_writes_are_compare_and_swap_and_atomic() {
    let p = Project::new();
    let root = p.path().to_owned();
    let r = with_scoped(&kernel(), "fs", p.scope(), None, move |sys, h| {
        let root = root.clone();
        async move {
            let mut out = Vec::new();
            let first = sys.read(h, read("tracked.txt")).await;
            let old = sig(&first);
            // 1: the right sig writes.
            let w = sys
                .write(h, write("tracked.txt", "edited\n", old.clone()))
                .await;
            let new = sig(&w);
            assert_eq!(
                std::fs::read_to_string(root.join("tracked.txt")).unwrap(),
                "edited\n"
            );
            out.push(w);
            // 2: the stale sig conflicts.
            out.push(sys.write(h, write("tracked.txt", "stale\n", old)).await);
            // 3: the file moves on disk behind the device's back: the sig it gave conflicts.
            std::fs::write(root.join("tracked.txt"), "changed by someone else\n").unwrap();
            out.push(sys.write(h, write("tracked.txt", "mine\n", new)).await);
            // 4, 5: create (expect unit), then create again conflicts.
            out.push(
                sys.write(h, write("notes/new/plan.md", "plan\n", Value::Unit))
                    .await,
            );
            out.push(
                sys.write(h, write("notes/new/plan.md", "again\n", Value::Unit))
                    .await,
            );
            // 6: an existing non-member (ignored) is not writable, nor creatable in an ignored dir (7).
            out.push(sys.write(h, write("ignored.txt", "x", Value::Unit)).await);
            out.push(sys.write(h, write("build/new.txt", "x", Value::Unit)).await);
            // 8, 9, 10: escapes through a symlinked dir, `..`, and into .git.
            out.push(
                sys.write(h, write("outdir/planted", "x", Value::Unit))
                    .await,
            );
            out.push(sys.write(h, write("../planted", "x", Value::Unit)).await);
            out.push(
                sys.write(h, write(".git/hooks/pre-commit", "x", Value::Unit))
                    .await,
            );
            // 11: a binary member.
            let listed = sys.read(h, list()).await;
            let Some(Value::List(ms)) = listed.as_ref().unwrap().get("members").cloned() else {
                panic!("no members")
            };
            let bin = ms
                .iter()
                .find(|m| m.get("path") == Some(&Value::Str("bin.dat".into())))
                .unwrap();
            let bsig = req(&[
                ("mtime_ns", bin.get("mtime_ns").unwrap().clone()),
                ("size", bin.get("size").unwrap().clone()),
            ]);
            out.push(sys.write(h, write("bin.dat", "text", bsig)).await);
            // 12: the created file is a member now; 13, 14: delete with its sig, then again.
            let created = sys.read(h, read("notes/new/plan.md")).await;
            let csig = sig(&created);
            out.push(created);
            out.push(
                sys.write(
                    h,
                    req(&[
                        ("op", "delete".into()),
                        ("path", "notes/new/plan.md".into()),
                        ("expect", csig),
                    ]),
                )
                .await,
            );
            out.push(
                sys.write(
                    h,
                    req(&[
                        ("op", "delete".into()),
                        ("path", "notes/new/plan.md".into()),
                    ]),
                )
                .await,
            );
            out
        }
    });
    let got: Vec<(u64, String)> = r.iter().map(|x| (status(x), reason(x))).collect();
    let want = [
        (200, ""),
        (409, "write_conflict"),
        (409, "write_conflict"),
        (200, ""),
        (409, "write_conflict"),
        (403, "not_member"),
        (403, "not_member"),
        (403, "escape"),
        (403, "escape"),
        (403, "protected"),
        (415, "binary"),
        (200, ""),
        (200, ""),
        (404, "not_found"),
    ];
    assert_eq!(
        got,
        want.iter()
            .map(|(s, e)| (*s, e.to_string()))
            .collect::<Vec<_>>()
    );
    let root = p.path();
    // The conflicting writes left the disk as the other writer left it.
    assert_eq!(
        std::fs::read_to_string(root.join("tracked.txt")).unwrap(),
        "changed by someone else\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("ignored.txt")).unwrap(),
        "ignored\n"
    );
    assert!(!root.join("build/new.txt").exists());
    assert!(!p.outside.path().join("planted").exists());
    assert!(!root.parent().unwrap().join("planted").exists());
    assert!(!root.join(".git/hooks/pre-commit").exists());
    assert!(!root.join("notes/new/plan.md").exists(), "deleted");
    assert!(root.join("notes/new").is_dir(), "parents were created");
    // No temp file is left behind by the atomic writes.
    let leftovers: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .chain(std::fs::read_dir(root.join("notes/new")).unwrap())
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn fs_a_read_only_cap_cannot_write_and_view_members_are_read_only() {
    let p = Project::new();
    let ro = Rights::of(&[Right::Open, Right::Read]);
    let r = with_scoped(&kernel(), "fs", p.scope(), Some(ro), |sys, h| async move {
        let first = sys.read(h, read("tracked.txt")).await;
        let s = sig(&first);
        vec![
            first,
            sys.write(h, write("tracked.txt", "evil\n", s)).await,
            sys.read(h, list()).await,
        ]
    });
    assert_eq!(
        r[0].as_ref().unwrap().get("readonly"),
        Some(&Value::Bool(true))
    );
    assert!(
        matches!(&r[1], Err(SysError::Cap { .. })),
        "the kernel refuses a write on a read-only handle: {:?}",
        r[1]
    );
    assert!(member_paths(&r[2]).iter().all(|(_, _, ro)| *ro));
    assert_eq!(
        std::fs::read_to_string(p.path().join("tracked.txt")).unwrap(),
        "hello\n"
    );

    // The overlay: `view` is read-only, `hide` is gone, `pick` brings an ignored file in.
    let scope = p
        .scope()
        .with("view", "tracked.txt")
        .with("hide", "untracked.txt\nsecret/**")
        .with("pick", "build");
    let r = with_scoped(&kernel(), "fs", scope.clone(), None, |sys, h| async move {
        let first = sys.read(h, read("tracked.txt")).await;
        let s = sig(&first);
        vec![
            sys.read(h, list()).await,
            sys.write(h, write("tracked.txt", "evil\n", s)).await,
            sys.read(h, read("untracked.txt")).await,
            sys.write(h, write("secret/new.txt", "x", Value::Unit))
                .await,
            sys.read(h, read("build/out.txt")).await,
        ]
    });
    assert_eq!(
        member_paths(&r[0]),
        vec![
            (".gitignore".into(), false, false),
            ("bin.dat".into(), true, false),
            ("build/out.txt".into(), false, false),
            ("tracked.txt".into(), false, true),
        ]
    );
    // Why each is a member, and what `hide` keeps out.
    let listed = r[0].as_ref().unwrap();
    let Some(Value::List(ms)) = listed.get("members") else {
        panic!("no members in {listed:?}")
    };
    let origins: Vec<&str> = ms
        .iter()
        .filter_map(|m| m.get("origin").and_then(Value::as_str))
        .collect();
    assert_eq!(origins, ["repo", "repo", "pick", "repo"]);
    assert_eq!(
        listed.get("hidden"),
        Some(&Value::List(vec![Value::Str("untracked.txt".into())]))
    );
    // The same listing without a handle (what a host shows as the session's members).
    let host = agentos_drivers::fs::list(&scope).unwrap();
    let host_paths: Vec<(String, bool, bool)> = host
        .members
        .iter()
        .map(|m| (m.path.clone(), m.binary, m.readonly))
        .collect();
    assert_eq!(host_paths, member_paths(&r[0]));
    assert_eq!(host.members[2].origin, agentos_drivers::fs::Origin::Pick);
    assert_eq!(host.hidden, ["untracked.txt"]);
    assert!(agentos_drivers::fs::list(&Scope::new()).is_err(), "no root");
    assert!(agentos_drivers::fs::list(&p.scope().with("bogus", "x")).is_err());
    assert_eq!((status(&r[1]), reason(&r[1])), (403, "readonly".into()));
    assert_eq!((status(&r[2]), reason(&r[2])), (403, "not_member".into()));
    assert_eq!((status(&r[3]), reason(&r[3])), (403, "not_member".into()));
    assert_eq!(status(&r[4]), 200);
    assert_eq!(
        std::fs::read_to_string(p.path().join("tracked.txt")).unwrap(),
        "hello\n"
    );
    assert!(!p.path().join("secret").exists());
}

#[test]
fn fs_a_root_outside_git_has_only_picked_members() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "a").unwrap();
    std::fs::create_dir(dir.path().join("docs")).unwrap();
    std::fs::write(dir.path().join("docs/b.md"), "b").unwrap();
    let scope = Scope::new()
        .with(Scope::ROOT, dir.path().to_str().unwrap())
        .with("pick", "**/*.md");
    let r = with_scoped(&kernel(), "fs", scope, None, |sys, h| async move {
        vec![
            sys.read(h, list()).await,
            sys.read(h, read("a.txt")).await,
            sys.write(h, write("docs/c.md", "c", Value::Unit)).await,
            sys.write(h, write("c.txt", "c", Value::Unit)).await,
        ]
    });
    assert_eq!(
        member_paths(&r[0]),
        vec![("docs/b.md".into(), false, false)]
    );
    assert_eq!((status(&r[1]), reason(&r[1])), (403, "not_member".into()));
    assert_eq!(status(&r[2]), 200, "a picked path can be created");
    assert_eq!((status(&r[3]), reason(&r[3])), (403, "not_member".into()));
}

#[test]
fn fs_open_needs_a_root_and_refuses_scope_keys_it_does_not_know() {
    let p = Project::new();
    let k = kernel();
    for scope in [
        Scope::new(),
        p.scope().with("session", "s1"),
        Scope::new().with(Scope::ROOT, "relative/dir"),
        Scope::new().with(Scope::ROOT, "/nonexistent/agentos/root"),
    ] {
        let r = with_scoped(&k, "fs", scope.clone(), None, |_, _| async move {
            vec![Ok(Value::Unit)]
        });
        assert!(
            matches!(&r[0], Err(SysError::Driver(m)) if m.contains("bad request")),
            "open with {scope:?} is refused: {r:?}"
        );
    }
}
