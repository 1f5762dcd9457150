//! The file scheme: bare paths are project files, reached only through the loop's `fs`
//! device handle (PLURNK.md §2.3, DESIGN.md "Devices").
//!
//! The driver resolves and checks every path (escapes, symlinks out of the root, non-members:
//! 403; binary: 415); this module turns its answers into rows. A READ materialises the disk
//! snapshot as the file's entry (scheme `NULL`) with its signature (`synced_sig`), so later
//! turns and EDITs diff against what the model saw. EDIT and KILL never touch the disk: they
//! **propose** (202) an [`Effect`] that the loop applies only when the proposal is accepted,
//! as a compare-and-swap on that signature — a disk that moved answers 409 `write_conflict`.
//!
//! **Invariants:** no disk write without an accepted proposal; a read-only `fs` handle (ask
//! mode) makes EDIT/KILL 403 before anything is proposed.
//!
//! **API boundary:** [`dispatch`], [`FileEffect`], [`apply`], [`FsHandle`].

use agentos_abi::device::{from_value, to_value};
use agentos_abi::{CapRef, Syscalls, Value};
use serde::{Deserialize, Serialize};

use super::dispatch::{Action, DispatchCtx};
use super::effect::Effect;
use super::entry::read_entry;
use super::world::{channel, TurnWorld};
use super::{is_pattern, Manifest};
use crate::content::{self, Glob};
use crate::grammar::{Op, Statement};
use crate::store::{EntryKey, RowTarget, Scope};

/// The loop's `fs` handle and whether it may write (ask mode holds a read-only one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsHandle {
    /// The open handle.
    pub cap: CapRef,
    /// Whether the device cap it was opened through carries `write`.
    pub writable: bool,
}

/// A file's disk signature, the compare-and-swap guard of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sig {
    /// Modification time, ns since the epoch.
    pub mtime_ns: u64,
    /// Size in bytes.
    pub size: u64,
}

impl Sig {
    /// `mtime_ns:size`, as stored in `entries.synced_sig`.
    pub fn encode(&self) -> String {
        format!("{}:{}", self.mtime_ns, self.size)
    }

    /// Parses [`Sig::encode`]'s form.
    pub fn decode(s: &str) -> Option<Sig> {
        let (m, z) = s.split_once(':')?;
        Some(Sig {
            mtime_ns: m.parse().ok()?,
            size: z.parse().ok()?,
        })
    }
}

/// A change to a project file, applied when its proposal is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileEffect {
    /// Write a project file (create when `expect` is `None`).
    Write {
        /// Path relative to the project root.
        path: String,
        /// The new content.
        content: String,
        /// The signature the disk must still have.
        expect: Option<Sig>,
    },
    /// Delete a project file.
    Delete {
        /// Path relative to the project root.
        path: String,
        /// The signature the disk must still have.
        expect: Option<Sig>,
    },
}

impl FileEffect {
    /// The project path the effect touches.
    pub fn path(&self) -> &str {
        match self {
            FileEffect::Write { path, .. } | FileEffect::Delete { path, .. } => path,
        }
    }

    fn expect(&self) -> Option<Sig> {
        match self {
            FileEffect::Write { expect, .. } | FileEffect::Delete { expect, .. } => *expect,
        }
    }
}

/// The `fs` device's requests (see `agentos_drivers::fs`).
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum FsRequest<'a> {
    List,
    Read {
        path: &'a str,
    },
    Write {
        path: &'a str,
        content: &'a str,
        expect: Option<Sig>,
    },
    Delete {
        path: &'a str,
        expect: Option<Sig>,
    },
}

/// One member of the project, as `list` reports it.
#[derive(Debug, Clone, Deserialize)]
struct Member {
    path: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    binary: bool,
    #[serde(default)]
    readonly: bool,
}

/// The `fs` device's reply: a status and what goes with it.
#[derive(Debug, Default, Deserialize)]
struct FsReply {
    status: u16,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    sig: Option<Sig>,
    #[serde(default)]
    readonly: bool,
    #[serde(default)]
    members: Vec<Member>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl FsReply {
    fn failure(&self, path: &str) -> String {
        let why = self.error.as_deref().unwrap_or("refused");
        match &self.message {
            Some(m) => format!("{} {why}: {path}: {m}", self.status),
            None => format!("{} {why}: {path}", self.status),
        }
    }
}

async fn fs_call<S: Syscalls>(sys: &S, fs: CapRef, req: &FsRequest<'_>, write: bool) -> FsReply {
    let v = match to_value(req) {
        Ok(v) => v,
        Err(e) => return fail(format!("encoding an fs request: {e}")),
    };
    let out: Result<Value, _> = if write {
        sys.write(fs, v).await
    } else {
        sys.read(fs, v).await
    };
    match out {
        Ok(v) => from_value(v).unwrap_or_else(|e| fail(format!("bad fs reply: {e}"))),
        // The kernel refuses a write on a read-only handle: that is the cap saying no.
        Err(e @ agentos_abi::SysError::Cap { .. }) => FsReply {
            status: 403,
            error: Some("read_only".into()),
            message: Some(e.to_string()),
            ..FsReply::default()
        },
        Err(e) => fail(e.to_string()),
    }
}

fn fail(message: String) -> FsReply {
    FsReply {
        status: 500,
        error: Some("fs".into()),
        message: Some(message),
        ..FsReply::default()
    }
}

/// The entry key of a project file (`scheme = NULL`, session scope).
pub fn file_key(path: &str) -> EntryKey {
    EntryKey {
        scope: Scope::Session,
        scheme: None,
        hostname: None,
        pathname: path.to_owned(),
    }
}

/// A project file as the disk holds it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Disk {
    /// Its text.
    pub content: String,
    /// Its mimetype (by extension, `text/plain` normalised).
    pub mimetype: String,
    /// Its signature, the guard of a later compare-and-swap.
    pub sig: Option<Sig>,
    /// A `view` member (or a read-only handle): never written.
    pub readonly: bool,
}

/// Reads a project file from disk without materialising it: `Ok(None)` when it does not
/// exist; every other refusal is its row (403 escape or non-member, 415 binary, …).
pub(crate) async fn read_disk<S: Syscalls>(
    sys: &S,
    fs: CapRef,
    path: &str,
) -> Result<Option<Disk>, Action> {
    let r = fs_call(sys, fs, &FsRequest::Read { path }, false).await;
    match r.status {
        200 => Ok(Some(Disk {
            content: r.content.clone().unwrap_or_default(),
            mimetype: mimetype(path),
            sig: r.sig,
            readonly: r.readonly,
        })),
        404 => Ok(None),
        _ => Err(Action::status(r.status, r.failure(path)).at(target(path))),
    }
}

/// A unified diff of a file's change, as a proposal row shows it.
pub(crate) fn diff(path: &str, old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(2)
        .header(&format!("a/{path}"), &format!("b/{path}"))
        .to_string()
}

/// The row target of a project file.
pub(crate) fn target(path: &str) -> RowTarget {
    RowTarget {
        scheme: None,
        hostname: None,
        pathname: path.to_owned(),
        fragment: None,
    }
}

/// A project file's mimetype: by its extension, `text/plain` otherwise (normalised).
pub(crate) fn mimetype(path: &str) -> String {
    content::normalize_mimetype(content::resolve_mimetype(path, "text/plain")).to_owned()
}

/// Reads a file from disk into the turn's world (the materialised snapshot).
async fn materialise<S: Syscalls>(
    world: &mut TurnWorld<'_, S>,
    fs: CapRef,
    path: &str,
) -> Result<(crate::store::Entry, bool), FsReply> {
    let r = fs_call(world.sys(), fs, &FsRequest::Read { path }, false).await;
    if r.status != 200 {
        return Err(r);
    }
    let key = file_key(path);
    let body = r.content.clone().unwrap_or_default();
    world.put(&key, channel("body", body, &mimetype(path)), None);
    if let Some(sig) = r.sig {
        world.sync(&key, sig.encode());
    }
    match world.entry(&key).await {
        Ok(Some(e)) => Ok((e, r.readonly)),
        Ok(None) => Err(fail(format!("{path} vanished from the turn's world"))),
        Err(e) => Err(fail(e.to_string())),
    }
}

/// Dispatches an op on a bare path.
pub async fn dispatch<S: Syscalls>(
    ctx: &mut DispatchCtx<'_, '_, S>,
    s: &Statement,
    path: &str,
    manifest: &'static Manifest,
) -> Vec<Action> {
    let Some(fs) = ctx.devices.fs else {
        return vec![Action::status(
            403,
            "403 file: this session has no project root (no fs device)",
        )];
    };
    let path = path.trim_start_matches("./");
    match s.op {
        Op::Read if is_pattern(path) => read_glob(ctx.world, fs.cap, s, path, manifest).await,
        Op::Read => vec![read_one(ctx.world, fs.cap, s, path, manifest).await],
        Op::Find => vec![find(ctx.world, fs.cap, path).await],
        Op::Edit | Op::Kill if !fs.writable => vec![Action::status(
            403,
            format!("403 file: {path}: this loop holds a read-only fs device (ask mode)"),
        )
        .at(target(path))],
        Op::Edit if is_pattern(path) => vec![Action::status(
            400,
            "400 EDIT writes one file; a glob or folder target is not a file",
        )],
        Op::Edit => vec![edit(ctx.world, fs.cap, s, path).await],
        Op::Kill if is_pattern(path) => vec![Action::status(
            400,
            "400 KILL deletes one file; a glob or folder target is not a file",
        )],
        Op::Kill => vec![kill(ctx.world, fs.cap, path).await],
        _ => vec![Action::status(
            501,
            format!("501 file: bare paths do not implement {}", s.op),
        )],
    }
}

async fn read_one<S: Syscalls>(
    world: &mut TurnWorld<'_, S>,
    fs: CapRef,
    s: &Statement,
    path: &str,
    manifest: &'static Manifest,
) -> Action {
    match materialise(world, fs, path).await {
        Ok((e, _)) => read_entry(&e, s, None, manifest),
        Err(r) => Action::status(r.status, r.failure(path)).at(target(path)),
    }
}

async fn members<S: Syscalls>(
    world: &mut TurnWorld<'_, S>,
    fs: CapRef,
    pattern: &str,
) -> Result<Vec<Member>, Action> {
    let r = fs_call(world.sys(), fs, &FsRequest::List, false).await;
    if r.status != 200 {
        return Err(Action::status(r.status, r.failure(pattern)));
    }
    // `src/` names a folder: everything under it.
    let pattern = if pattern.is_empty() || pattern == "." || pattern == "/" {
        "**".to_owned()
    } else if let Some(dir) = pattern.strip_suffix('/') {
        format!("{dir}/**")
    } else {
        pattern.to_owned()
    };
    let glob = Glob::new(&pattern).map_err(|e| Action::status(400, format!("400 {e}")))?;
    Ok(r.members
        .into_iter()
        .filter(|m| glob.matches(&m.path))
        .collect())
}

async fn read_glob<S: Syscalls>(
    world: &mut TurnWorld<'_, S>,
    fs: CapRef,
    s: &Statement,
    pattern: &str,
    manifest: &'static Manifest,
) -> Vec<Action> {
    let found = match members(world, fs, pattern).await {
        Ok(m) => m,
        Err(a) => return vec![a],
    };
    if found.is_empty() {
        return vec![Action::status(
            404,
            format!("404 no project file matches {pattern}"),
        )];
    }
    let mut out = Vec::with_capacity(found.len());
    for m in found.iter().filter(|m| !m.binary) {
        out.push(read_one(world, fs, s, &m.path, manifest).await);
    }
    if out.is_empty() {
        out.push(Action::status(
            415,
            format!("415 every file matching {pattern} is binary"),
        ));
    }
    out
}

/// FIND on a bare path: the project members the glob matches, one per line.
async fn find<S: Syscalls>(world: &mut TurnWorld<'_, S>, fs: CapRef, pattern: &str) -> Action {
    let pattern = if pattern.is_empty() { "**" } else { pattern };
    let found = match members(world, fs, pattern).await {
        Ok(m) => m,
        Err(a) => return a,
    };
    if found.is_empty() {
        return Action::status(404, format!("404 no project file matches {pattern}"));
    }
    let mut rx = String::new();
    for m in &found {
        use std::fmt::Write as _;
        let _ = write!(rx, "{}\t{} bytes", m.path, m.size);
        if m.binary {
            rx.push_str("\tbinary");
        }
        if m.readonly {
            rx.push_str("\tread-only");
        }
        rx.push('\n');
    }
    Action {
        status: 200,
        rx: Some(rx),
        mimetype_rx: Some("text/plain".into()),
        writes_row: true,
        ..Action::default()
    }
}

/// The snapshot an EDIT diffs against: the materialised entry if the model has seen the
/// file, else the disk now. `Ok(None)`: the file does not exist (EDIT creates it).
async fn snapshot<S: Syscalls>(
    world: &mut TurnWorld<'_, S>,
    fs: CapRef,
    path: &str,
) -> Result<Option<(String, Option<Sig>)>, Action> {
    let key = file_key(path);
    if let Ok(Some(e)) = world.entry(&key).await {
        if let (Some(sig), Some(body)) = (e.synced_sig.as_deref(), e.channel("body")) {
            return Ok(Some((body.content.clone(), Sig::decode(sig))));
        }
    }
    match materialise(world, fs, path).await {
        Ok((e, readonly)) => {
            if readonly {
                return Err(Action::status(
                    403,
                    format!("403 read_only: {path} is a view-only member"),
                )
                .at(target(path)));
            }
            let body = e.channel("body").map(|c| c.content.clone());
            let sig = e.synced_sig.as_deref().and_then(Sig::decode);
            Ok(Some((body.unwrap_or_default(), sig)))
        }
        Err(r) if r.status == 404 => Ok(None),
        Err(r) => Err(Action::status(r.status, r.failure(path)).at(target(path))),
    }
}

async fn edit<S: Syscalls>(
    world: &mut TurnWorld<'_, S>,
    fs: CapRef,
    s: &Statement,
    path: &str,
) -> Action {
    let (base, expect) = match snapshot(world, fs, path).await {
        Ok(Some((b, sig))) => (Some(b), sig),
        Ok(None) => (None, None),
        Err(a) => return a,
    };
    let marks = s.line_marker.as_ref().map(|m| m.marks.as_slice());
    let out = match content::apply_edit(base.as_deref(), marks, s.body_raw()) {
        Ok(o) => o,
        Err(e) => return Action::content(e).at(target(path)),
    };
    if out.status == 304 {
        return Action::status(304, format!("304 {path} unchanged")).at(target(path));
    }
    Action {
        status: 202,
        rx: Some(diff(path, base.as_deref().unwrap_or(""), &out.content)),
        mimetype_rx: Some("text/x-diff".into()),
        writes_row: true,
        proposal: Some(Effect::File(FileEffect::Write {
            path: path.to_owned(),
            content: out.content,
            expect,
        })),
        ..Action::default()
    }
    .at(target(path))
}

async fn kill<S: Syscalls>(world: &mut TurnWorld<'_, S>, fs: CapRef, path: &str) -> Action {
    match snapshot(world, fs, path).await {
        Ok(Some((_, expect))) => Action {
            status: 202,
            rx: Some(format!("delete {path}")),
            mimetype_rx: Some("text/plain".into()),
            writes_row: true,
            proposal: Some(Effect::File(FileEffect::Delete {
                path: path.to_owned(),
                expect,
            })),
            ..Action::default()
        }
        .at(target(path)),
        Ok(None) => Action::status(404, format!("404 not_found: {path}")).at(target(path)),
        Err(a) => a,
    }
}

/// Whether the disk moved since the proposal's snapshot (plurnk's `staleClobberRisk`: a
/// yolo resolver rejects rather than clobber).
pub async fn stale_clobber_risk<S: Syscalls>(
    sys: &S,
    fs: Option<FsHandle>,
    e: &FileEffect,
) -> bool {
    let Some(fs) = fs else { return false };
    let r = fs_call(sys, fs.cap, &FsRequest::Read { path: e.path() }, false).await;
    match (r.status, e.expect()) {
        (200, Some(want)) => r.sig != Some(want),
        (404, None) => false,
        (404, Some(_)) | (200, None) => true,
        _ => false,
    }
}

/// Applies an accepted proposal's effect through the `fs` handle. `Ok(rx)` when the disk
/// now holds it (and the file's entry is re-synced in `world`); `Err((status, outcome,
/// message))` when the apply failed, which downgrades the accept to a reject.
pub async fn apply<S: Syscalls>(
    world: &mut TurnWorld<'_, S>,
    fs: Option<FsHandle>,
    e: &FileEffect,
) -> Result<String, (u16, String, String)> {
    let Some(fs) = fs else {
        return Err((
            403,
            "no_fs_device".into(),
            "this loop holds no fs device".into(),
        ));
    };
    let r = match e {
        FileEffect::Write {
            path,
            content,
            expect,
        } => {
            fs_call(
                world.sys(),
                fs.cap,
                &FsRequest::Write {
                    path,
                    content,
                    expect: *expect,
                },
                true,
            )
            .await
        }
        FileEffect::Delete { path, expect } => {
            fs_call(
                world.sys(),
                fs.cap,
                &FsRequest::Delete {
                    path,
                    expect: *expect,
                },
                true,
            )
            .await
        }
    };
    if r.status != 200 {
        let outcome = r.error.clone().unwrap_or_else(|| "apply_failed".into());
        return Err((r.status, outcome, r.failure(e.path())));
    }
    let key = file_key(e.path());
    match e {
        FileEffect::Write { path, content, .. } => {
            world.put(
                &key,
                channel("body", content.clone(), &mimetype(path)),
                None,
            );
            if let Some(sig) = r.sig {
                world.sync(&key, sig.encode());
            }
            Ok(format!("written {path}"))
        }
        FileEffect::Delete { path, .. } => {
            world.delete(&key);
            Ok(format!("deleted {path}"))
        }
    }
}
