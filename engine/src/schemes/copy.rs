//! COPY and MOVE, orchestrated by the engine over the entry primitives (PLURNK.md §1.4,
//! §2.1; the seed's `#copyOrchestration`): read the source (sliced by `<L>`), check the
//! destination, write it, and for MOVE delete the source.
//!
//! Statuses: 201 created; 304 the destination already holds exactly this; 404 no source;
//! 409 the destination exists and differs; 415 source and destination mimetypes differ;
//! 416 the slice is out of range; 400 no destination (MOVE's null body) or a pattern
//! source; 403 a destination (or, for MOVE, a source) the origin may not write.
//!
//! **Invariants:** a failed COPY/MOVE changes nothing; MOVE deletes its source only after
//! the destination holds the content; moving an entry onto itself deletes nothing.

use agentos_abi::Syscalls;

use super::dispatch::{Action, DispatchCtx};
use super::entry::entry_key;
use super::world::channel;
use super::{is_pattern, Address};
use crate::content;
use crate::grammar::{parse_path, Body, Op, Signal, Statement};
use crate::store::RowTarget;

/// Runs one COPY or MOVE whose source resolved to `src`.
pub async fn copy_or_move<S: Syscalls>(
    ctx: &mut DispatchCtx<'_, '_, S>,
    s: &Statement,
    src: &Address,
) -> Action {
    match run(ctx, s, src).await {
        Ok(a) => a,
        Err(e) => Action::status(500, format!("500 {e}")),
    }
}

async fn run<S: Syscalls>(
    ctx: &mut DispatchCtx<'_, '_, S>,
    s: &Statement,
    src: &Address,
) -> Result<Action, super::world::WorldError> {
    let Address::Entry {
        scheme: src_scheme,
        pathname: src_path,
        channel: src_ch,
    } = src
    else {
        return Ok(Action::status(
            501,
            format!("501 {} from {}:// is not supported", s.op, src.scheme()),
        ));
    };
    if is_pattern(src_path) {
        return Ok(Action::status(
            400,
            format!("400 {} takes one source entry, not a pattern", s.op),
        ));
    }
    let dest_path = match &s.body {
        Some(Body::Path(p)) => Ok(p.clone()),
        Some(b) if !b.raw().trim().is_empty() => parse_path(b.raw().trim()),
        _ => {
            return Ok(Action::status(
                400,
                format!("400 {} needs a destination URI as its body", s.op),
            ))
        }
    };
    let dest_path = match dest_path {
        Ok(p) => p,
        Err(e) => return Ok(Action::status(400, format!("400 destination: {e}"))),
    };
    let dest = Address::resolve(&dest_path);
    let Address::Entry {
        scheme: dest_scheme,
        pathname: dest_pathname,
        channel: dest_ch,
    } = &dest
    else {
        let status = if matches!(dest, Address::File { .. } | Address::Regex { .. }) {
            403
        } else {
            501
        };
        return Ok(Action::status(
            status,
            format!(
                "{status} {} into {}:// is not available",
                s.op,
                dest.scheme()
            ),
        ));
    };
    if is_pattern(dest_pathname) {
        return Ok(Action::status(400, "400 the destination must be one entry"));
    }
    let Some(dm) = ctx.schemes.get(dest_scheme) else {
        return Ok(Action::status(
            403,
            format!("403 {dest_scheme}:// is not available to this loop"),
        ));
    };
    if !dm.writable(ctx.origin) {
        return Ok(Action::status(
            403,
            format!(
                "403 {dest_scheme}:// is not writable by the {}",
                ctx.origin.as_str()
            ),
        ));
    }
    let Some(sm) = ctx.schemes.get(src_scheme) else {
        return Ok(Action::status(
            403,
            format!("403 {src_scheme}:// is not available to this loop"),
        ));
    };
    if s.op == Op::Move && !sm.writable(ctx.origin) {
        return Ok(Action::status(
            403,
            format!(
                "403 {src_scheme}:// is not writable by the {}",
                ctx.origin.as_str()
            ),
        ));
    }
    let src_key = entry_key(src_scheme, src_path);
    let dest_key = entry_key(dest_scheme, dest_pathname);
    let target = RowTarget {
        scheme: dest_key.scheme.clone(),
        hostname: None,
        pathname: dest_key.pathname.clone(),
        fragment: dest_ch.clone(),
    };
    let Some(src_entry) = ctx.world.entry(&src_key).await? else {
        return Ok(Action::status(
            404,
            format!("404 {} not found", src_key.uri()),
        ));
    };
    let src_name = src_ch.as_deref().unwrap_or(sm.default_channel);
    let Some(sc) = src_entry.channel(src_name) else {
        return Ok(Action::status(
            404,
            format!("404 {} has no channel {src_name}", src_key.uri()),
        ));
    };
    let marks = s.line_marker.as_ref().map(|m| m.marks.as_slice());
    let src_json = src_path.ends_with(".json") || content::is_json_mimetype(&sc.mimetype);
    let sliced = match (src_json, marks) {
        (true, Some(m)) => content::select_items(&sc.content, m),
        _ => content::slice_raw(&sc.content, marks),
    };
    let body = match sliced {
        Ok(b) => b,
        Err(e) => return Ok(Action::status(e.status(), format!("{} {e}", e.status()))),
    };
    let dest_name = dest_ch.as_deref().unwrap_or(dm.default_channel);
    let dest_entry = ctx.world.entry(&dest_key).await?;
    let dest_chan = dest_entry.as_ref().and_then(|e| e.channel(dest_name));
    let dest_mime = dest_chan.map_or_else(
        || content::resolve_mimetype(dest_pathname, "text/markdown").to_owned(),
        |c| c.mimetype.clone(),
    );
    if content::normalize_mimetype(&dest_mime) != content::normalize_mimetype(&sc.mimetype) {
        return Ok(Action::status(
            415,
            format!(
                "415 {} is {} but {} is {dest_mime}",
                src_key.uri(),
                sc.mimetype,
                dest_key.uri()
            ),
        )
        .at(target));
    }
    if src_key == dest_key && src_name == dest_name {
        return Ok(Action::status(304, "304 source and destination are the same entry").at(target));
    }
    let status = match dest_chan {
        Some(c) if c.content == body => 304,
        Some(_) => {
            return Ok(
                Action::status(409, format!("409 {} exists and differs", dest_key.uri()))
                    .at(target),
            )
        }
        None => 201,
    };
    if status == 201 {
        let tags = match &s.signal {
            Some(Signal::Tags(t)) if !t.is_empty() => t.clone(),
            _ => src_entry.tags.clone(),
        };
        ctx.world.put(
            &dest_key,
            channel(dest_name, body.clone(), &dest_mime),
            Some(tags),
        );
    }
    if s.op == Op::Move {
        ctx.world.delete(&src_key);
    }
    let verb = if s.op == Op::Move { "moved" } else { "copied" };
    Ok(Action {
        status,
        rx: Some(format!(
            "{verb} {} → {} ({} lines)",
            src_key.uri(),
            dest_key.uri(),
            content::line_count(&body)
        )),
        mimetype_rx: Some("text/plain".into()),
        writes_row: true,
        ..Action::default()
    }
    .at(target))
}
