//! COPY and MOVE, orchestrated by the engine over the entry primitives (PLURNK.md §1.4,
//! §2.1; the seed's `#copyOrchestration`): read the source (sliced by `<L>`), check the
//! destination, write it, and for MOVE delete the source. Either end may be a project file
//! (a bare path), read through the loop's `fs` device.
//!
//! Statuses: 201 created; 304 the destination already holds exactly this; 404 no source;
//! 409 the destination exists and differs; 415 source and destination mimetypes differ (or
//! a binary file); 416 the slice is out of range; 400 no destination (MOVE's null body) or a
//! pattern; 403 a destination (or, for MOVE, a source) the origin may not write, a
//! non-member or escaping path, a `view` member written, a read-only `fs` handle (ask mode)
//! asked to write, or a file end in a session without a project root.
//!
//! **Files propose.** Writing a project file or deleting one is a side effect: such a COPY
//! or MOVE answers 202 with a [`Transfer`] and changes nothing until the proposal is
//! accepted, like EDIT (PLURNK.md §3.6). Accepted, the files change first — each write a
//! create (a destination that appeared meanwhile answers 409), each delete a
//! compare-and-swap on the signature the source was read with — then the entry writes
//! (a MOVE's source entry is deleted only then: "MOVE into a proposed file destination
//! defers the source delete until accept"). File → entry COPY needs no proposal (201).
//!
//! **Invariants:** a failed COPY/MOVE changes nothing; MOVE deletes its source only after
//! the destination holds the content; moving an entry onto itself deletes nothing; no disk
//! write without an accepted proposal; an accepted MOVE whose source moved on disk since it
//! was read writes nothing (409 `write_conflict`).

use agentos_abi::Syscalls;
use serde::{Deserialize, Serialize};

use super::dispatch::{Action, DispatchCtx};
use super::effect::Effect;
use super::entry::entry_key;
use super::file::{self, FileEffect, FsHandle};
use super::world::{channel, TurnWorld};
use super::{is_pattern, Address, Manifest};
use crate::content;
use crate::grammar::{parse_path, Body, Op, Signal, Statement};
use crate::store::{EntryKey, EntryWrite, RowTarget};

/// A COPY or MOVE that touches the disk, applied when its proposal is accepted: the file
/// changes in order, then the entry writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// Writes (creates) and deletes of project files.
    pub files: Vec<FileEffect>,
    /// Entry writes once every file change landed (a destination entry; a MOVE's source).
    pub entries: Vec<EntryWrite>,
    /// What the accepted row says.
    pub done: String,
}

/// One end of a COPY or MOVE.
enum End {
    /// An entry of an entry scheme.
    Entry {
        key: EntryKey,
        channel: Option<String>,
        manifest: &'static Manifest,
    },
    /// A project file (bare path).
    File { path: String },
}

impl End {
    fn target(&self) -> RowTarget {
        match self {
            End::Entry { key, channel, .. } => RowTarget {
                scheme: key.scheme.clone(),
                hostname: None,
                pathname: key.pathname.clone(),
                fragment: channel.clone(),
            },
            End::File { path } => file::target(path),
        }
    }

    fn uri(&self) -> String {
        match self {
            End::Entry { key, .. } => key.uri(),
            End::File { path } => path.clone(),
        }
    }

    fn manifest(&self, ctx: &DispatchCtx<'_, '_, impl Syscalls>) -> Option<&'static Manifest> {
        match self {
            End::Entry { manifest, .. } => Some(manifest),
            End::File { .. } => ctx.schemes.get("file"),
        }
    }
}

/// What a source held: the content (sliced), its mimetype, tags, and for a file the
/// signature it was read with.
struct Read {
    content: String,
    mimetype: String,
    tags: Vec<String>,
    sig: Option<file::Sig>,
}

/// What a destination holds now (`None` in `Dest::content`: nothing there yet).
struct Dest {
    content: Option<String>,
    mimetype: String,
}

/// Runs one COPY or MOVE whose source resolved to `src`.
pub async fn copy_or_move<S: Syscalls>(
    ctx: &mut DispatchCtx<'_, '_, S>,
    s: &Statement,
    src: &Address,
) -> Action {
    match run(ctx, s, src).await {
        Ok(a) | Err(a) => a,
    }
}

type R<T> = Result<T, Action>;

/// A refusal decided before any I/O: a status row, pointing at a project file if it names
/// one (small, unlike an [`Action`]).
struct Refusal {
    status: u16,
    message: String,
    file: Option<String>,
}

impl Refusal {
    fn new(status: u16, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
            file: None,
        }
    }

    fn at(mut self, path: &str) -> Refusal {
        self.file = Some(path.to_owned());
        self
    }
}

impl From<Refusal> for Action {
    fn from(r: Refusal) -> Action {
        let a = Action::status(r.status, r.message);
        match r.file {
            Some(p) => a.at(file::target(&p)),
            None => a,
        }
    }
}

fn no_fs() -> Refusal {
    Refusal::new(
        403,
        "403 file: this session has no project root (no fs device)",
    )
}

/// The end `addr` names: an entry of an available scheme, or a project file.
fn end_of(
    ctx: &DispatchCtx<'_, '_, impl Syscalls>,
    addr: &Address,
    op: Op,
    role: &str,
) -> Result<End, Refusal> {
    match addr {
        Address::Entry {
            scheme,
            pathname,
            channel,
        } => {
            if is_pattern(pathname) {
                return Err(Refusal::new(
                    400,
                    format!("400 the {role} of {op} must be one entry, not a pattern"),
                ));
            }
            let manifest = ctx.schemes.get(scheme).ok_or_else(|| {
                Refusal::new(
                    403,
                    format!("403 {scheme}:// is not available to this loop"),
                )
            })?;
            Ok(End::Entry {
                key: entry_key(scheme, pathname),
                channel: channel.clone(),
                manifest,
            })
        }
        Address::File { path } => {
            let path = path.trim_start_matches("./");
            if is_pattern(path) {
                return Err(Refusal::new(
                    400,
                    format!("400 the {role} of {op} must be one file, not a pattern"),
                ));
            }
            if ctx.devices.fs.is_none() || ctx.schemes.get("file").is_none() {
                return Err(no_fs());
            }
            Ok(End::File {
                path: path.to_owned(),
            })
        }
        Address::Regex { .. } => Err(Refusal::new(
            400,
            format!("400 the {role} of {op} must be one entry, not a regex scope"),
        )),
        other => Err(Refusal::new(
            501,
            format!("501 {op} with {}:// is not supported", other.scheme()),
        )),
    }
}

/// The loop's `fs` handle, which must be writable to change a file.
fn writable_fs(ctx: &DispatchCtx<'_, '_, impl Syscalls>, path: &str) -> Result<FsHandle, Refusal> {
    match ctx.devices.fs {
        Some(fs) if fs.writable => Ok(fs),
        Some(_) => Err(Refusal::new(
            403,
            format!("403 file: {path}: this loop holds a read-only fs device (ask mode)"),
        )
        .at(path)),
        None => Err(no_fs()),
    }
}

/// Reads the source and slices it by the statement's `<L>`.
async fn read_source<S: Syscalls>(
    ctx: &mut DispatchCtx<'_, '_, S>,
    s: &Statement,
    src: &End,
) -> R<Read> {
    let (whole, mimetype, tags, sig) = match src {
        End::Entry {
            key,
            channel,
            manifest,
        } => {
            let Some(e) = ctx.world.entry(key).await.map_err(Action::internal)? else {
                return Err(Action::status(404, format!("404 {} not found", key.uri())));
            };
            let name = channel.as_deref().unwrap_or(manifest.default_channel);
            let Some(c) = e.channel(name) else {
                return Err(Action::status(
                    404,
                    format!("404 {} has no channel {name}", key.uri()),
                ));
            };
            (c.content.clone(), c.mimetype.clone(), e.tags.clone(), None)
        }
        End::File { path } => {
            let fs = ctx.devices.fs.ok_or_else(no_fs)?;
            match file::read_disk(ctx.world.sys(), fs.cap, path).await? {
                Some(d) => (d.content, d.mimetype, Vec::new(), d.sig),
                None => {
                    return Err(Action::status(404, format!("404 not_found: {path}"))
                        .at(file::target(path)))
                }
            }
        }
    };
    let marks = s.line_marker.as_ref().map(|m| m.marks.as_slice());
    let json = src.uri().ends_with(".json") || content::is_json_mimetype(&mimetype);
    let sliced = match (json, marks) {
        (true, Some(m)) => content::select_items(&whole, m),
        _ => content::slice_raw(&whole, marks),
    };
    let content = sliced.map_err(Action::content)?;
    Ok(Read {
        content,
        mimetype,
        tags,
        sig,
    })
}

/// What the destination holds now; a `view` member or an unwritable handle refuses.
async fn read_dest<S: Syscalls>(ctx: &mut DispatchCtx<'_, '_, S>, dest: &End) -> R<Dest> {
    match dest {
        End::Entry {
            key,
            channel,
            manifest,
        } => {
            let name = channel.as_deref().unwrap_or(manifest.default_channel);
            let e = ctx.world.entry(key).await.map_err(Action::internal)?;
            let c = e.as_ref().and_then(|e| e.channel(name));
            Ok(Dest {
                content: c.map(|c| c.content.clone()),
                mimetype: c.map_or_else(
                    || content::resolve_mimetype(&key.pathname, "text/markdown").to_owned(),
                    |c| c.mimetype.clone(),
                ),
            })
        }
        End::File { path } => {
            let fs = writable_fs(ctx, path)?;
            match file::read_disk(ctx.world.sys(), fs.cap, path).await? {
                Some(d) if d.readonly => Err(Action::status(
                    403,
                    format!("403 read_only: {path} is a view-only member"),
                )
                .at(file::target(path))),
                Some(d) => Ok(Dest {
                    content: Some(d.content),
                    mimetype: d.mimetype,
                }),
                None => Ok(Dest {
                    content: None,
                    mimetype: file::mimetype(path),
                }),
            }
        }
    }
}

async fn run<S: Syscalls>(
    ctx: &mut DispatchCtx<'_, '_, S>,
    s: &Statement,
    src: &Address,
) -> R<Action> {
    let src = end_of(ctx, src, s.op, "source")?;
    let dest_path = match &s.body {
        Some(Body::Path(p)) => Ok(p.clone()),
        Some(b) if !b.raw().trim().is_empty() => parse_path(b.raw().trim()),
        _ => {
            return Err(Action::status(
                400,
                format!("400 {} needs a destination URI as its body", s.op),
            ))
        }
    };
    let dest_path = dest_path.map_err(|e| Action::status(400, format!("400 destination: {e}")))?;
    let dest = end_of(ctx, &Address::resolve(&dest_path), s.op, "destination")?;
    let target = dest.target();
    // Writers: the destination's scheme, and for MOVE the source's.
    for (end, needed) in [(&dest, true), (&src, s.op == Op::Move)] {
        let m = end.manifest(ctx).ok_or_else(|| {
            Action::status(
                403,
                "403 file: this loop holds no fs device (headless session)",
            )
        })?;
        if needed && !m.writable(ctx.origin) {
            return Err(Action::status(
                403,
                format!(
                    "403 {}:// is not writable by the {}",
                    m.name,
                    ctx.origin.as_str()
                ),
            )
            .at(target.clone()));
        }
    }
    let read = read_source(ctx, s, &src)
        .await
        .map_err(|a| at_if_none(a, &target))?;
    if let (Op::Move, End::File { path }) = (s.op, &src) {
        writable_fs(ctx, path)?;
    }
    let now = read_dest(ctx, &dest).await?;
    if content::normalize_mimetype(&now.mimetype) != content::normalize_mimetype(&read.mimetype) {
        return Err(Action::status(
            415,
            format!(
                "415 {} is {} but {} is {}",
                src.uri(),
                read.mimetype,
                dest.uri(),
                now.mimetype
            ),
        )
        .at(target));
    }
    if same(&src, &dest) {
        return Ok(Action::status(304, "304 source and destination are the same entry").at(target));
    }
    let created = match &now.content {
        Some(c) if *c == read.content => false,
        Some(_) => {
            return Err(
                Action::status(409, format!("409 {} exists and differs", dest.uri())).at(target),
            )
        }
        None => true,
    };
    let verb = if s.op == Op::Move { "moved" } else { "copied" };
    let done = format!(
        "{verb} {} → {} ({} lines)",
        src.uri(),
        dest.uri(),
        content::line_count(&read.content)
    );
    let status = if created { 201 } else { 304 };

    // What the world gets and what the disk would get.
    let mut entries = Vec::new();
    let mut files = Vec::new();
    let mut shown = String::new();
    match &dest {
        End::Entry {
            key,
            channel: ch,
            manifest,
        } if created => {
            let tags = match &s.signal {
                Some(Signal::Tags(t)) if !t.is_empty() => t.clone(),
                _ => read.tags.clone(),
            };
            let name = ch.as_deref().unwrap_or(manifest.default_channel);
            entries.push(EntryWrite::Put {
                key: key.clone(),
                channel: channel(name, read.content.clone(), &now.mimetype),
                tags: Some(tags),
            });
        }
        End::File { path } if created => {
            shown.push_str(&file::diff(path, "", &read.content));
            files.push(FileEffect::Write {
                path: path.clone(),
                content: read.content.clone(),
                expect: None,
            });
        }
        _ => {}
    }
    if s.op == Op::Move {
        match &src {
            End::Entry { key, .. } => entries.push(EntryWrite::Delete { key: key.clone() }),
            End::File { path } => {
                shown.push_str(&format!("delete {path}\n"));
                files.push(FileEffect::Delete {
                    path: path.clone(),
                    expect: read.sig,
                });
            }
        }
    }
    if files.is_empty() {
        apply_entries(ctx.world, &entries);
        return Ok(Action {
            status,
            rx: Some(done),
            mimetype_rx: Some("text/plain".into()),
            writes_row: true,
            ..Action::default()
        }
        .at(target));
    }
    Ok(Action {
        status: 202,
        rx: Some(format!("{done}\n{shown}")),
        mimetype_rx: Some("text/x-diff".into()),
        writes_row: true,
        proposal: Some(Effect::Copy(Transfer {
            files,
            entries,
            done,
        })),
        ..Action::default()
    }
    .at(target))
}

/// A refusal about the source points at the destination row unless it names its own target.
fn at_if_none(a: Action, target: &RowTarget) -> Action {
    if a.target.is_some() {
        a
    } else {
        a.at(target.clone())
    }
}

fn same(a: &End, b: &End) -> bool {
    match (a, b) {
        (
            End::Entry {
                key: ka,
                channel: ca,
                manifest: ma,
            },
            End::Entry {
                key: kb,
                channel: cb,
                manifest: mb,
            },
        ) => {
            ka == kb
                && ca.as_deref().unwrap_or(ma.default_channel)
                    == cb.as_deref().unwrap_or(mb.default_channel)
        }
        (End::File { path: a }, End::File { path: b }) => a == b,
        _ => false,
    }
}

fn apply_entries<S: Syscalls>(world: &mut TurnWorld<'_, S>, entries: &[EntryWrite]) {
    for w in entries {
        match w {
            EntryWrite::Put { key, channel, tags } => {
                world.put(key, channel.clone(), tags.clone());
            }
            EntryWrite::Delete { key } => world.delete(key),
            EntryWrite::Sync { key, sig } => world.sync(key, sig.clone()),
        }
    }
}

/// Whether the disk moved since the transfer was proposed (a yolo resolver rejects rather
/// than clobber).
pub async fn stale_clobber_risk<S: Syscalls>(sys: &S, fs: Option<FsHandle>, t: &Transfer) -> bool {
    for f in &t.files {
        if file::stale_clobber_risk(sys, fs, f).await {
            return true;
        }
    }
    false
}

/// Applies an accepted transfer: every file change through the `fs` handle (a source that
/// moved on disk since it was read stops it before anything is written), then the entry
/// writes. `Err((status, outcome, message))` when it failed, which downgrades the accept.
pub async fn apply<S: Syscalls>(
    world: &mut TurnWorld<'_, S>,
    fs: Option<FsHandle>,
    t: &Transfer,
) -> Result<String, (u16, String, String)> {
    // The deletes' compare-and-swap, checked up front so a MOVE does not leave a copy.
    for f in &t.files {
        if let FileEffect::Delete { path, .. } = f {
            if file::stale_clobber_risk(world.sys(), fs, f).await {
                return Err((
                    409,
                    "write_conflict".into(),
                    format!("409 write_conflict: {path} changed on disk since it was read"),
                ));
            }
        }
    }
    for (i, f) in t.files.iter().enumerate() {
        if let Err((status, outcome, message)) = file::apply(world, fs, f).await {
            let message = if i == 0 {
                message
            } else {
                format!("{message} (after {} was written)", t.files[0].path())
            };
            return Err((status, outcome, message));
        }
    }
    apply_entries(world, &t.entries);
    Ok(t.done.clone())
}
