//! Membership (PLURNK.md §2.3): which files of a root a handle can see.
//!
//! members = ⋃ over the declared repos of (`git ls-files` ∪ untracked-not-ignored files)
//! ∪ `pick` − `hide`; `view` marks members read-only. Nothing under a `.git` directory is
//! ever a member. A declared repo where `git ls-files` fails (the root is not a git
//! repository, git is not installed) contributes nothing, so such a root's members are the
//! `pick` patterns alone. Computing it runs git and walks directories: blocking work that the
//! device does on the driver runtime's blocking pool.

use super::glob::{any_match, Glob};
use super::path::normalize_rel;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::UNIX_EPOCH;

/// How many leading bytes decide whether a file is binary (a NUL among them).
pub const BINARY_SNIFF: usize = 8 * 1024;

/// The membership overlay of a handle, parsed from its scope.
#[derive(Clone, Debug, Default)]
pub struct Overlay {
    /// Declared git repositories, relative to the root (`""` is the root itself).
    pub repos: Vec<String>,
    /// Extra members, even if ignored.
    pub pick: Vec<Glob>,
    /// Never members.
    pub hide: Vec<Glob>,
    /// Read-only members.
    pub view: Vec<Glob>,
}

/// The member set at one moment: normalized relative path → whether `view` makes it read-only.
pub type Members = BTreeMap<String, bool>;

/// What made a path a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A declared repo lists it (tracked, or untracked and not ignored).
    Repo,
    /// Only a `pick` pattern brings it in.
    Pick,
}

/// One member and why it is one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    /// What made it a member.
    pub origin: Origin,
    /// `view` makes it read-only.
    pub view: bool,
}

/// The membership with its reasons: what [`compute`] keeps, and what `hide` took out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    /// Normalized relative path → its standing.
    pub members: BTreeMap<String, Standing>,
    /// Paths a repo or `pick` would make members that `hide` removes, sorted.
    pub hidden: Vec<String>,
}

/// Compute the members of `root` (canonical) under `overlay`.
pub fn compute(root: &Path, overlay: &Overlay) -> Members {
    classify(root, overlay)
        .members
        .into_iter()
        .map(|(p, s)| (p, s.view))
        .collect()
}

/// The members of `root` (canonical) under `overlay`, each with its origin, and the paths
/// `hide` removed. A path both a repo and `pick` bring in counts as a repo member.
pub fn classify(root: &Path, overlay: &Overlay) -> Membership {
    let mut found: BTreeMap<String, Origin> = BTreeMap::new();
    for repo in &overlay.repos {
        for rel in git_members(root, repo) {
            found.insert(rel, Origin::Repo);
        }
    }
    for g in &overlay.pick {
        pick_walk(root, g, &mut found);
    }
    let mut out = Membership::default();
    for (p, origin) in found {
        if any_match(&overlay.hide, &p) {
            out.hidden.push(p);
        } else {
            let view = any_match(&overlay.view, &p);
            out.members.insert(p, Standing { origin, view });
        }
    }
    out
}

/// Whether a file that does not exist yet at `rel` would be a member once created: it matches
/// `pick`, or it lies in a declared repo and git would not ignore it; and `hide` does not
/// match it.
pub fn would_be_member(root: &Path, overlay: &Overlay, rel: &str) -> bool {
    if any_match(&overlay.hide, rel) {
        return false;
    }
    if any_match(&overlay.pick, rel) {
        return true;
    }
    overlay.repos.iter().any(|repo| {
        let inside = if repo.is_empty() {
            Some(rel)
        } else {
            rel.strip_prefix(repo.as_str())
                .and_then(|r| r.strip_prefix('/'))
        };
        let Some(inner) = inside else { return false };
        // `check-ignore` exits 1 when the path is not ignored, 0 when it is, 128 on error
        // (not a repository).
        git(root, repo)
            .args(["check-ignore", "-q", "--", inner])
            .status()
            .map(|s| s.code() == Some(1))
            .unwrap_or(false)
    })
}

fn git(root: &Path, repo: &str) -> Command {
    let mut c = Command::new("git");
    c.arg("-C")
        .arg(root.join(repo))
        // Paths verbatim, never quoted; no pager, no prompts, no repository discovery above
        // the root (a root nested in someone else's repository is not theirs to describe).
        .args(["-c", "core.quotepath=off"])
        .env("GIT_CEILING_DIRECTORIES", root.parent().unwrap_or(root))
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Tracked and untracked-not-ignored files of one repo, as root-relative normalized paths.
fn git_members(root: &Path, repo: &str) -> Vec<String> {
    let out = git(root, repo)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .output();
    let Ok(out) = out else { return Vec::new() };
    if !out.status.success() {
        return Vec::new();
    }
    out.stdout
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        // Non-UTF-8 names cannot be addressed by a `Str` path: they are not members.
        .filter_map(|p| std::str::from_utf8(p).ok())
        .filter_map(|p| {
            let joined = if repo.is_empty() {
                p.to_owned()
            } else {
                format!("{repo}/{p}")
            };
            normalize_rel(&joined).ok()
        })
        .collect()
}

/// Add the files matching `g` (walking from its literal prefix, never into `.git`, never
/// through a symlinked directory).
fn pick_walk(root: &Path, g: &Glob, out: &mut BTreeMap<String, Origin>) {
    let Ok(base) = normalize_rel(&g.literal_prefix()) else {
        return;
    };
    let mut stack = vec![base];
    while let Some(rel) = stack.pop() {
        let abs = root.join(&rel);
        let Ok(meta) = std::fs::symlink_metadata(&abs) else {
            continue;
        };
        if meta.is_dir() {
            let Ok(rd) = std::fs::read_dir(&abs) else {
                continue;
            };
            for e in rd.flatten() {
                let Ok(name) = e.file_name().into_string() else {
                    continue;
                };
                if name == ".git" {
                    continue;
                }
                stack.push(if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                });
            }
        } else if !rel.is_empty() && g.matches(&rel) {
            out.entry(rel).or_insert(Origin::Pick);
        }
    }
}

/// What `list` and `read` report about a file on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: u64,
    /// Size in bytes.
    pub size: u64,
}

impl Stat {
    /// The stat of a file's metadata.
    pub fn of(meta: &std::fs::Metadata) -> Stat {
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Stat {
            mtime_ns,
            size: meta.len(),
        }
    }
}

/// Whether the file at `path` has a NUL byte in its first [`BINARY_SNIFF`] bytes.
pub fn sniff_binary(path: &Path) -> std::io::Result<bool> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; BINARY_SNIFF];
    let mut n = 0;
    while n < buf.len() {
        let got = f.read(&mut buf[n..])?;
        if got == 0 {
            break;
        }
        n += got;
    }
    Ok(buf[..n].contains(&0))
}
