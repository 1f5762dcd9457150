//! The `fs` device: the project files of one root, as the engine's bare-path scheme sees them
//! (PLURNK.md §2.3). One [`FsDriver`] serves every project: the root comes from the device
//! cap's scope, so a handle reaches its root and nothing else.
//!
//! # Scope (read at open; anything else is refused with `BadRequest`)
//!
//! - `root` (required): an absolute path to an existing directory, canonicalized at open.
//! - `repos`: the declared git repositories, newline-separated paths relative to the root
//!   (default `.`, the root itself).
//! - `pick`, `hide`, `view`: the session's membership overlay, each a newline-separated list
//!   of patterns relative to the root ([`glob`] describes them: `*`, `?`, `**`, and a pattern
//!   covers everything under what it matches).
//!
//! # Membership ([`members`])
//!
//! members = ⋃ over `repos` of (`git ls-files` ∪ `git ls-files --others --exclude-standard`)
//! ∪ `pick` − `hide`; `view` makes a member read-only. A root that is not a git repository
//! has the `pick` files as its only members. Nothing under a `.git` directory is ever
//! reachable (a write there would be a hook the host runs). The set is cached per handle,
//! recomputed by every `list` and whenever a request names a path the cache does not hold.
//! A member is **binary** when its first 8 KiB hold a NUL byte; binary members are listed
//! (`binary: true`) but reading or writing their content answers 415. A file that is not valid
//! UTF-8 cannot be a `Str` either: `read` answers 415 for it too.
//!
//! # Paths ([`path`])
//!
//! Every path is relative to the root ("bare paths"). An absolute path, a `..` that climbs
//! above the root, or a symlink whose target lies outside the root answers 403 `escape`; the
//! write path also re-checks the parent directory after creating it. A symlinked member whose
//! target leaves the root is not listed. (The check is by canonicalization: a process racing
//! to swap a directory for a symlink between check and use is not defended against here; the
//! `exec` sandbox confines such processes to the root anyway.)
//!
//! # Requests and replies
//!
//! Every domain outcome is `Ok` with a `Value::Map` whose first key is `status` (`U64`,
//! HTTP-like, mapped straight to plurnk statuses); a refusal carries `error` (a short reason)
//! and `message`. A malformed request (not a map, unknown `op`, missing or mistyped field, a
//! write op sent as a read or the reverse) is `Err(DriverError::BadRequest)`; an unexpected
//! disk failure is `Err(DriverError::Failed)`.
//!
//! - read `{op:"list"}` → `{status:200, members:[{path, size, mtime_ns, binary, readonly,
//!   origin}], hidden:[path]}`, sorted by path; `origin` is `repo` (a declared repo lists it)
//!   or `pick`; `hidden` names the files `hide` keeps out; members missing on disk (a tracked
//!   file deleted) are left out. [`list`] computes the same listing without a handle.
//! - read `{op:"read", path}` → `{status:200, path, content:Str, sig:{mtime_ns, size},
//!   readonly}`; 403 `escape` / `protected` / `not_member`, 404 `not_found`, 415 `binary`,
//!   400 `bad_path` for an empty path (the root itself).
//! - write `{op:"write", path, content:Str, expect:{mtime_ns, size}|Unit}` → `{status:200,
//!   path, sig}`. Compare-and-swap: with a sig, the file's current `(mtime_ns, size)` must
//!   equal it; with `Unit` (or no `expect`) the file must not exist (a create). Otherwise 409
//!   `write_conflict` and the disk is untouched. The write is atomic (a temp file in the same
//!   directory, fsync, rename, fsync of the directory) and keeps an existing file's
//!   permissions; missing parent directories inside the root are created. 403 `readonly` for a
//!   `view` member; 403 `not_member` for an existing non-member (an ignored file). **Creating**
//!   a new file is allowed exactly when it would be a member once it exists: it matches `pick`,
//!   or it lies in a declared repo and git would not ignore it — and `hide` does not match it.
//!   415 `binary` when the existing file is binary.
//! - write `{op:"delete", path, expect:{mtime_ns, size}|Unit}` → `{status:200, path}`; 404
//!   `not_found`, 409 `write_conflict` when a given sig does not match (`Unit` or no `expect`
//!   deletes unconditionally), 403 as for a write. A symlinked member is unlinked, not its
//!   target.
//!
//! A read-only handle (a cap without `write`) never reaches `write` (the kernel refuses it);
//! its `list` and `read` report every member `readonly: true`. Disk and git work runs on the
//! driver runtime's blocking pool (only `open` canonicalizes the root inline: the kernel does
//! not count a pending open as I/O in flight); concurrent writes through one driver are serialized so
//! each compare-and-swap is atomic with respect to the others. Everything is free
//! ([`Cost::FREE`](agentos_abi::Cost::FREE)).

pub mod glob;
pub mod members;
pub mod path;

use crate::rt::{IoRuntime, RuntimeError};
use crate::status::{refuse, reply};
use agentos_abi::driver::BoxFuture;
use agentos_abi::{Driver, DriverError, DriverHandle, OpenCtx, Reply, Right, Scope, Value};
use glob::Glob;
pub use members::Origin;
use members::{classify, compute, sniff_binary, would_be_member, Members, Overlay, Stat};
use parking_lot::Mutex;
use path::{canonical_root, contain, normalize_rel, PathError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The device name.
pub const FS_DEVICE: &str = "fs";

/// The scope keys an `fs` handle understands.
pub const FS_SCOPE_KEYS: [&str; 5] = [Scope::ROOT, "repos", "pick", "hide", "view"];

/// The `fs` device. Cheap to share; every handle carries its own root and overlay.
pub struct FsDriver {
    name: String,
    runtime: IoRuntime,
    write_lock: Arc<Mutex<()>>,
}

impl FsDriver {
    /// An `fs` device on the current tokio runtime, or else the process-wide driver runtime.
    pub fn new() -> Result<Self, RuntimeError> {
        Ok(Self::on(IoRuntime::current_or_global()?))
    }

    /// An `fs` device whose disk work runs on `runtime`.
    pub fn on(runtime: IoRuntime) -> Self {
        FsDriver {
            name: FS_DEVICE.into(),
            runtime,
            write_lock: Arc::new(Mutex::new(())),
        }
    }

    /// Register under another device name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

/// Parse the overlay keys of a scope (the root is checked separately).
fn overlay_of(scope: &Scope) -> Result<Overlay, String> {
    if let Some((k, _)) = scope.iter().find(|(k, _)| !FS_SCOPE_KEYS.contains(k)) {
        return Err(format!("unknown scope key \"{k}\""));
    }
    let repos = match scope.get("repos") {
        None => vec![String::new()],
        Some(v) => v
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| normalize_rel(l).map_err(|e| format!("repo {l:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?,
    };
    let globs = |k: &str| scope.get(k).map(Glob::list).unwrap_or_default();
    Ok(Overlay {
        repos,
        pick: globs("pick"),
        hide: globs("hide"),
        view: globs("view"),
    })
}

impl Driver for FsDriver {
    fn name(&self) -> &str {
        &self.name
    }

    fn open(&self, at: OpenCtx) -> BoxFuture<'static, Result<Arc<dyn DriverHandle>, DriverError>> {
        let name = self.name.clone();
        let bad = move |m: String| DriverError::BadRequest(format!("{name}: {m}"));
        let overlay = match overlay_of(&at.scope) {
            Ok(o) => o,
            Err(m) => return Box::pin(async move { Err(bad(m)) }),
        };
        let Some(root) = at.scope.root().map(str::to_owned) else {
            let e = bad("an fs handle needs a `root` scope (the project directory)".into());
            return Box::pin(async move { Err(e) });
        };
        // Resolved here, inline: one realpath and one stat. The kernel does not count an open
        // as I/O in flight (a deterministic kernel would call a pending open idle), and the
        // heavy work (git, walks) waits for the first request.
        let root = match canonical_root(&root) {
            Ok(r) => r,
            Err(m) => return Box::pin(async move { Err(bad(m)) }),
        };
        let h: Arc<dyn DriverHandle> = Arc::new(FsHandle {
            inner: Arc::new(FsInner {
                root,
                overlay,
                writable: at.rights.has(Right::Write),
                members: Mutex::new(None),
                write_lock: self.write_lock.clone(),
            }),
            runtime: self.runtime.clone(),
        });
        Box::pin(async move { Ok(h) })
    }
}

/// A parsed request.
#[derive(Debug)]
enum FsOp {
    List,
    Read {
        path: String,
    },
    Write {
        path: String,
        content: String,
        expect: Option<Stat>,
    },
    Delete {
        path: String,
        expect: Option<Stat>,
    },
}

impl FsOp {
    fn parse(v: &Value) -> Result<FsOp, String> {
        let op = v
            .get("op")
            .and_then(Value::as_str)
            .ok_or("a request is a map with a string `op`")?;
        let path = || -> Result<String, String> {
            v.get("path")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("`{op}` needs a string `path`"))
        };
        let expect = || -> Result<Option<Stat>, String> {
            match v.get("expect") {
                None | Some(Value::Unit) => Ok(None),
                Some(sig) => sig_of(sig)
                    .map(Some)
                    .ok_or_else(|| "`expect` is {mtime_ns, size} or unit".to_owned()),
            }
        };
        Ok(match op {
            "list" => FsOp::List,
            "read" => FsOp::Read { path: path()? },
            "write" => FsOp::Write {
                path: path()?,
                content: v
                    .get("content")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or("`write` needs a string `content`")?,
                expect: expect()?,
            },
            "delete" => FsOp::Delete {
                path: path()?,
                expect: expect()?,
            },
            other => return Err(format!("unknown op {other:?}")),
        })
    }

    fn is_write(&self) -> bool {
        matches!(self, FsOp::Write { .. } | FsOp::Delete { .. })
    }
}

fn sig_of(v: &Value) -> Option<Stat> {
    Some(Stat {
        mtime_ns: v.get("mtime_ns")?.as_u64()?,
        size: v.get("size")?.as_u64()?,
    })
}

fn sig_value(s: Stat) -> Value {
    Value::Map(vec![
        ("mtime_ns".into(), Value::U64(s.mtime_ns)),
        ("size".into(), Value::U64(s.size)),
    ])
}

/// One member as `list` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// Normalized path relative to the root.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: u64,
    /// A NUL byte in its first [`members::BINARY_SNIFF`] bytes.
    pub binary: bool,
    /// `view` makes it read-only (or the handle is read-only).
    pub readonly: bool,
    /// What made it a member.
    pub origin: Origin,
}

/// What `list` answers: the members present on disk as files, sorted by path, and the
/// paths `hide` removed (present on disk as files too).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// The members.
    pub members: Vec<Listed>,
    /// The hidden would-be members, sorted.
    pub hidden: Vec<String>,
}

impl Origin {
    /// `repo` or `pick` (the overlay effect that brings the member in).
    pub fn as_str(&self) -> &'static str {
        match self {
            Origin::Repo => "repo",
            Origin::Pick => "pick",
        }
    }
}

/// The listing of `membership` under `root`: members missing on disk, or not files (a
/// tracked file deleted, a submodule), are left out.
fn listing_of(root: &Path, membership: members::Membership, writable: bool) -> Listing {
    let file = |rel: &str| {
        let abs = contain(root, rel).ok()?;
        let meta = std::fs::metadata(&abs).ok()?;
        meta.is_file().then_some((abs, meta))
    };
    let mut out = Listing::default();
    for (rel, standing) in membership.members {
        let Some((abs, meta)) = file(&rel) else {
            continue;
        };
        let st = Stat::of(&meta);
        out.members.push(Listed {
            binary: sniff_binary(&abs).unwrap_or(false),
            size: st.size,
            mtime_ns: st.mtime_ns,
            readonly: standing.view || !writable,
            origin: standing.origin,
            path: rel,
        });
    }
    out.hidden = membership
        .hidden
        .into_iter()
        .filter(|rel| file(rel).is_some())
        .collect();
    out
}

/// What a writable handle opened with `scope` answers to `list`, computed here on the
/// calling thread without a handle: for a host that shows a project's membership outside a
/// process (the engine daemon's `session.members`). The scope is checked as `open` checks
/// it; the error says what is wrong with it. This blocks (git, directory walks, a stat and a
/// sniff per member).
pub fn list(scope: &Scope) -> Result<Listing, String> {
    let overlay = overlay_of(scope)?;
    let root = scope
        .root()
        .ok_or("an fs scope needs a `root` (the project directory)")?;
    let root = canonical_root(root)?;
    let membership = classify(&root, &overlay);
    Ok(listing_of(&root, membership, true))
}

struct FsHandle {
    inner: Arc<FsInner>,
    runtime: IoRuntime,
}

struct FsInner {
    root: PathBuf,
    overlay: Overlay,
    writable: bool,
    members: Mutex<Option<Arc<Members>>>,
    write_lock: Arc<Mutex<()>>,
}

/// The outcome of a blocking op: a reply value, or a disk failure.
type OpResult = Result<Value, String>;

impl FsHandle {
    fn run(&self, req: Value, write: bool) -> BoxFuture<'static, Result<Reply, DriverError>> {
        let op = match FsOp::parse(&req) {
            Ok(op) if op.is_write() == write => op,
            Ok(op) => {
                let e = DriverError::BadRequest(format!(
                    "fs: {op:?} goes through {}",
                    if write { "read" } else { "write" }
                ));
                return Box::pin(async move { Err(e) });
            }
            Err(m) => {
                let e = DriverError::BadRequest(format!("fs: {m}"));
                return Box::pin(async move { Err(e) });
            }
        };
        let inner = self.inner.clone();
        let task = self.runtime.spawn_blocking(move || inner.apply(op));
        Box::pin(async move {
            match task.await {
                Ok(Ok(v)) => Ok(Reply::free(v)),
                Ok(Err(m)) => Err(DriverError::Failed(format!("fs: {m}"))),
                Err(e) => Err(DriverError::Failed(format!("fs task {e}"))),
            }
        })
    }
}

impl DriverHandle for FsHandle {
    fn read(&self, req: Value) -> BoxFuture<'static, Result<Reply, DriverError>> {
        self.run(req, false)
    }
    fn write(&self, data: Value) -> BoxFuture<'static, Result<Reply, DriverError>> {
        self.run(data, true)
    }
}

/// A path refusal as a reply (or a disk failure).
fn path_refusal(e: PathError) -> OpResult {
    match e {
        PathError::Io(m) => Err(m),
        PathError::Protected => Ok(refuse(403, "protected", e.to_string())),
        PathError::Empty => Ok(refuse(400, "bad_path", e.to_string())),
        PathError::Absolute | PathError::Escape | PathError::Nul => {
            Ok(refuse(403, "escape", e.to_string()))
        }
    }
}

fn io_msg(what: &str, p: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", p.display())
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl FsInner {
    fn apply(&self, op: FsOp) -> OpResult {
        match op {
            FsOp::List => self.list(),
            FsOp::Read { path } => self.read(&path),
            FsOp::Write {
                path,
                content,
                expect,
            } => {
                let _serial = self.write_lock.lock();
                self.write(&path, &content, expect)
            }
            FsOp::Delete { path, expect } => {
                let _serial = self.write_lock.lock();
                self.delete(&path, expect)
            }
        }
    }

    fn refresh(&self) -> Arc<Members> {
        let m = Arc::new(compute(&self.root, &self.overlay));
        *self.members.lock() = Some(m.clone());
        m
    }

    /// Whether `rel` is a member (`Some(view)`), refreshing the cache when it misses.
    fn member(&self, rel: &str) -> Option<bool> {
        let cached = self.members.lock().clone();
        if let Some(ro) = cached.and_then(|m| m.get(rel).copied()) {
            return Some(ro);
        }
        self.refresh().get(rel).copied()
    }

    fn remember(&self, rel: &str, present: bool) {
        let mut guard = self.members.lock();
        if let Some(m) = guard.as_mut() {
            let m = Arc::make_mut(m);
            if present {
                m.entry(rel.to_owned()).or_insert(false);
            } else {
                m.remove(rel);
            }
        }
    }

    fn readonly(&self, view: bool) -> bool {
        view || !self.writable
    }

    /// A non-empty normalized path, or the refusal to send.
    fn rel(&self, path: &str) -> Result<String, OpResult> {
        match normalize_rel(path) {
            Ok(r) if r.is_empty() => Err(path_refusal(PathError::Empty)),
            Ok(r) => Ok(r),
            Err(e) => Err(path_refusal(e)),
        }
    }

    fn list(&self) -> OpResult {
        let membership = classify(&self.root, &self.overlay);
        let members: Members = membership
            .members
            .iter()
            .map(|(p, s)| (p.clone(), s.view))
            .collect();
        *self.members.lock() = Some(Arc::new(members));
        let listing = listing_of(&self.root, membership, self.writable);
        let out: Vec<Value> = listing
            .members
            .into_iter()
            .map(|m| {
                Value::Map(vec![
                    ("path".into(), Value::Str(m.path)),
                    ("size".into(), Value::U64(m.size)),
                    ("mtime_ns".into(), Value::U64(m.mtime_ns)),
                    ("binary".into(), Value::Bool(m.binary)),
                    ("readonly".into(), Value::Bool(m.readonly)),
                    ("origin".into(), Value::Str(m.origin.as_str().into())),
                ])
            })
            .collect();
        let hidden = listing.hidden.into_iter().map(Value::Str).collect();
        Ok(reply(
            200,
            vec![
                ("members", Value::List(out)),
                ("hidden", Value::List(hidden)),
            ],
        ))
    }

    fn read(&self, path: &str) -> OpResult {
        let rel = match self.rel(path) {
            Ok(r) => r,
            Err(refusal) => return refusal,
        };
        let abs = match contain(&self.root, &rel) {
            Ok(a) => a,
            Err(e) => return path_refusal(e),
        };
        let exists = std::fs::metadata(&abs)
            .map(|m| m.is_file())
            .unwrap_or(false);
        let Some(view) = self.member(&rel) else {
            return Ok(if exists {
                refuse(403, "not_member", format!("{rel} is not a project member"))
            } else {
                refuse(404, "not_found", format!("{rel} does not exist"))
            });
        };
        if !exists {
            return Ok(refuse(404, "not_found", format!("{rel} does not exist")));
        }
        let bytes = match std::fs::read(&abs) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(refuse(404, "not_found", format!("{rel} does not exist")))
            }
            Err(e) => return Err(io_msg("read", &abs, e)),
        };
        let meta = std::fs::metadata(&abs).map_err(|e| io_msg("stat", &abs, e))?;
        if bytes[..bytes.len().min(members::BINARY_SNIFF)].contains(&0) {
            return Ok(refuse(415, "binary", format!("{rel} is a binary file")));
        }
        let content = match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(_) => return Ok(refuse(415, "binary", format!("{rel} is not UTF-8 text"))),
        };
        Ok(reply(
            200,
            vec![
                ("path", Value::Str(rel)),
                ("content", Value::Str(content)),
                ("sig", sig_value(Stat::of(&meta))),
                ("readonly", Value::Bool(self.readonly(view))),
            ],
        ))
    }

    /// The write/delete permission check: `Ok(())` or the refusal to send.
    fn may_change(&self, rel: &str, creating: bool) -> Result<(), Value> {
        if glob::any_match(&self.overlay.hide, rel) {
            return Err(refuse(403, "not_member", format!("{rel} is hidden")));
        }
        match self.member(rel) {
            Some(true) => Err(refuse(
                403,
                "readonly",
                format!("{rel} is read-only (view)"),
            )),
            Some(false) => Ok(()),
            None if creating && would_be_member(&self.root, &self.overlay, rel) => Ok(()),
            None => Err(refuse(
                403,
                "not_member",
                format!("{rel} is not a project member"),
            )),
        }
    }

    fn write(&self, path: &str, content: &str, expect: Option<Stat>) -> OpResult {
        let rel = match self.rel(path) {
            Ok(r) => r,
            Err(refusal) => return refusal,
        };
        let target = match contain(&self.root, &rel) {
            Ok(a) => a,
            Err(e) => return path_refusal(e),
        };
        let current = match std::fs::symlink_metadata(&target) {
            Ok(_) => Some(std::fs::metadata(&target).map_err(|e| io_msg("stat", &target, e))?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_msg("stat", &target, e)),
        };
        if let Err(refusal) = self.may_change(&rel, current.is_none()) {
            return Ok(refusal);
        }
        match (&current, expect) {
            (None, None) => {}
            (Some(meta), Some(want)) if meta.is_file() && Stat::of(meta) == want => {}
            (Some(meta), _) if !meta.is_file() => {
                return Ok(refuse(
                    409,
                    "write_conflict",
                    format!("{rel} is not a file"),
                ))
            }
            (Some(_), None) => {
                return Ok(refuse(
                    409,
                    "write_conflict",
                    format!("{rel} exists (expected to create it)"),
                ))
            }
            (_, Some(_)) => {
                return Ok(refuse(
                    409,
                    "write_conflict",
                    format!("{rel} changed on disk since it was read"),
                ))
            }
        }
        if current.is_some() && sniff_binary(&target).map_err(|e| io_msg("read", &target, e))? {
            return Ok(refuse(415, "binary", format!("{rel} is a binary file")));
        }
        let Some(parent) = target.parent().map(Path::to_path_buf) else {
            return path_refusal(PathError::Escape);
        };
        std::fs::create_dir_all(&parent).map_err(|e| io_msg("create", &parent, e))?;
        // The parent now exists: check again that it resolves inside the root (a directory
        // swapped for a symlink since the first check is caught here).
        match parent.canonicalize() {
            Ok(c) if c.starts_with(&self.root) => {}
            Ok(_) => return path_refusal(PathError::Escape),
            Err(e) => return Err(io_msg("resolve", &parent, e)),
        }
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = parent.join(format!(
            ".{name}.agentos-{}-{}.tmp",
            std::process::id(),
            TMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| -> std::io::Result<()> {
            // `create_new` is O_EXCL: it never follows a symlink planted at the temp name.
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            if let Some(meta) = &current {
                f.set_permissions(meta.permissions())?;
            }
            f.write_all(content.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &target)?;
            // Make the rename durable; a directory that cannot be opened or synced is not a
            // reason to report a write that happened as failed.
            if let Ok(d) = std::fs::File::open(&parent) {
                let _ = d.sync_all();
            }
            Ok(())
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_msg("write", &target, e));
        }
        let meta = std::fs::metadata(&target).map_err(|e| io_msg("stat", &target, e))?;
        self.remember(&rel, true);
        Ok(reply(
            200,
            vec![
                ("path", Value::Str(rel)),
                ("sig", sig_value(Stat::of(&meta))),
            ],
        ))
    }

    fn delete(&self, path: &str, expect: Option<Stat>) -> OpResult {
        let rel = match self.rel(path) {
            Ok(r) => r,
            Err(refusal) => return refusal,
        };
        // The entry itself (a symlink is unlinked, not followed): its parent, resolved.
        let (parent_rel, name) = match rel.rsplit_once('/') {
            Some((p, n)) => (p, n),
            None => ("", rel.as_str()),
        };
        let entry = match contain(&self.root, parent_rel) {
            Ok(p) => p.join(name),
            Err(e) => return path_refusal(e),
        };
        let Ok(lmeta) = std::fs::symlink_metadata(&entry) else {
            return Ok(refuse(404, "not_found", format!("{rel} does not exist")));
        };
        if lmeta.is_dir() {
            return Ok(refuse(404, "not_found", format!("{rel} is not a file")));
        }
        if let Err(refusal) = self.may_change(&rel, false) {
            return Ok(refusal);
        }
        if let Some(want) = expect {
            let now = std::fs::metadata(&entry).map(|m| Stat::of(&m)).ok();
            if now != Some(want) {
                return Ok(refuse(
                    409,
                    "write_conflict",
                    format!("{rel} changed on disk since it was read"),
                ));
            }
        }
        std::fs::remove_file(&entry).map_err(|e| io_msg("delete", &entry, e))?;
        self.remember(&rel, false);
        Ok(reply(200, vec![("path", Value::Str(rel))]))
    }
}
