//! The entry schemes: `known://`, `unknown://` and `plurnk://` (PLURNK.md §2.3).
//!
//! READ (lines, matchers, fan-out over globs and folders), FIND (the catalog, tag filters,
//! matcher bodies, result ranges), EDIT (the positional rules and structural JSON edits of
//! [`crate::content`]), KILL and `SEND[410]` (delete). OPEN and FOLD are log directives:
//! on an entry they answer 501.
//!
//! **Invariants:** reads and writes go through the turn's [`TurnWorld`]; an EDIT that
//! changes nothing writes nothing (304); `plurnk:///prompt/…` entries are run-scoped.
//!
//! **API boundary:** [`dispatch`] (called by [`super::dispatch`]) and [`entry_key`].

use agentos_abi::Syscalls;
use serde_json::json;

use super::dispatch::{Action, DispatchCtx};
use super::world::{channel, TurnWorld};
use super::{is_pattern, Address, Manifest};
use crate::content::{self, ContentError, Glob};
use crate::grammar::{Body, MatcherBody, Op, Signal, Statement};
use crate::store::{Entry, EntryKey, RowTarget, Scope};

/// The store key of an exact entry address: `plurnk:///prompt/…` is run-scoped, everything
/// else of these schemes session-scoped.
pub fn entry_key(scheme: &str, pathname: &str) -> EntryKey {
    if scheme == "plurnk" && pathname.starts_with("/prompt/") {
        EntryKey::run(scheme, pathname)
    } else {
        EntryKey::session(scheme, pathname)
    }
}

fn target_of(key: &EntryKey, channel: Option<&str>) -> RowTarget {
    RowTarget {
        scheme: key.scheme.clone(),
        hostname: key.hostname.clone(),
        pathname: key.pathname.clone(),
        fragment: channel.map(str::to_owned),
    }
}

fn tags_of(s: &Statement) -> Vec<String> {
    match &s.signal {
        Some(Signal::Tags(t)) => t.clone(),
        _ => Vec::new(),
    }
}

fn marks_of(s: &Statement) -> Option<&[f64]> {
    s.line_marker.as_ref().map(|m| m.marks.as_slice())
}

fn matcher_of(s: &Statement) -> Option<&MatcherBody> {
    match &s.body {
        Some(Body::Matcher(m)) if !m.raw.trim().is_empty() => Some(m),
        _ => None,
    }
}

fn is_json(pathname: &str, mimetype: &str) -> bool {
    pathname.ends_with(".json") || content::is_json_mimetype(mimetype)
}

/// Dispatches a non-COPY/MOVE op to an entry scheme.
pub async fn dispatch<S: Syscalls>(
    ctx: &mut DispatchCtx<'_, '_, S>,
    s: &Statement,
    addr: &Address,
    manifest: &'static Manifest,
) -> Vec<Action> {
    let Address::Entry {
        scheme,
        pathname,
        channel: ch,
    } = addr
    else {
        return vec![Action::status(400, "400 not an entry address")];
    };
    let r = match s.op {
        Op::Read => read(ctx.world, s, scheme, pathname, ch.as_deref(), manifest).await,
        Op::Find => find(ctx.world, s, scheme, pathname, manifest)
            .await
            .map(|a| vec![a]),
        Op::Edit => edit(ctx.world, s, scheme, pathname, ch.as_deref(), manifest)
            .await
            .map(|a| vec![a]),
        Op::Kill => kill(ctx.world, s, scheme, pathname).await.map(|a| vec![a]),
        Op::Send if s.signal_int() == Some(410) => {
            kill(ctx.world, s, scheme, pathname).await.map(|a| vec![a])
        }
        Op::Send => Ok(vec![Action::status(
            501,
            format!("501 {scheme}:// takes only SEND[410] (delete)"),
        )]),
        Op::Open | Op::Fold => Ok(vec![Action::status(
            501,
            format!(
                "501 {} applies to log:/// rows, not {scheme}:// entries",
                s.op
            ),
        )]),
        _ => Ok(vec![Action::status(
            501,
            format!("501 {scheme}:// does not implement {}", s.op),
        )]),
    };
    r.unwrap_or_else(|e| vec![Action::internal(e)])
}

type R<T> = Result<T, super::world::WorldError>;

/// Entries of `scheme` matching a glob/folder `pattern` and every tag of `tags`.
pub(super) async fn matching<S: Syscalls>(
    world: &mut TurnWorld<'_, S>,
    scheme: &str,
    pattern: &str,
    tags: &[String],
) -> Result<Result<Vec<Entry>, ContentError>, super::world::WorldError> {
    // An exact path is one keyed read, not a listing of the whole scheme.
    if !is_pattern(pattern) {
        let found = world.entry(&entry_key(scheme, pattern)).await?;
        return Ok(Ok(found
            .into_iter()
            .filter(|e| tags.iter().all(|t| e.tags.contains(t)))
            .collect()));
    }
    let glob = match Glob::new(pattern) {
        Ok(g) => g,
        Err(e) => return Ok(Err(e)),
    };
    let mut all = world.entries(Scope::Session, Some(scheme)).await?;
    if scheme == "plurnk" {
        all.extend(world.entries(Scope::Run, Some(scheme)).await?);
    }
    Ok(Ok(all
        .into_iter()
        .filter(|e| glob.matches(&e.key.pathname))
        .filter(|e| tags.iter().all(|t| e.tags.contains(t)))
        .collect()))
}

async fn read<S: Syscalls>(
    world: &mut TurnWorld<'_, S>,
    s: &Statement,
    scheme: &str,
    pathname: &str,
    ch: Option<&str>,
    manifest: &Manifest,
) -> R<Vec<Action>> {
    if is_pattern(pathname) {
        let found = match matching(world, scheme, pathname, &tags_of(s)).await? {
            Ok(f) => f,
            Err(e) => return Ok(vec![Action::content(e)]),
        };
        if found.is_empty() {
            return Ok(vec![Action::status(
                404,
                format!("404 no {scheme}:// entry matches {pathname}"),
            )]);
        }
        return Ok(found
            .iter()
            .map(|e| read_entry(e, s, ch, manifest))
            .collect());
    }
    let key = entry_key(scheme, pathname);
    Ok(vec![match world.entry(&key).await? {
        None => Action::status(404, format!("404 {} not found", key.uri())).at(target_of(&key, ch)),
        Some(e) => read_entry(&e, s, ch, manifest),
    }])
}

/// READ of one entry: lines by marker, or the lines a matcher selects, `N:\t`-numbered.
pub(super) fn read_entry(
    e: &Entry,
    s: &Statement,
    ch: Option<&str>,
    manifest: &Manifest,
) -> Action {
    let name = ch.unwrap_or(manifest.default_channel);
    let target = target_of(&e.key, ch);
    let Some(c) = e.channel(name) else {
        return Action::status(404, format!("404 {} has no channel {name}", e.key.uri()))
            .at(target);
    };
    if let Some(m) = matcher_of(s) {
        return match content::match_content(m, &c.content, &c.mimetype) {
            Err(err) => Action::content(err).at(target),
            Ok(out) if out.status == 203 => Action {
                status: 203,
                rx: Some(content::number_lines(&c.content, 1)),
                mimetype_rx: Some(c.mimetype.clone()),
                writes_row: true,
                ..Action::default()
            }
            .at(target),
            Ok(out) => Action {
                status: out.status,
                rx: Some(content::render_matches(&c.content, &out.spans)),
                mimetype_rx: Some(c.mimetype.clone()),
                writes_row: true,
                ..Action::default()
            }
            .at(target),
        };
    }
    let marks = marks_of(s);
    let rx = if is_json(&e.key.pathname, &c.mimetype) && marks.is_some() {
        content::select_items(&c.content, marks.unwrap_or_default())
    } else {
        content::select_lines(&c.content, marks)
            .map(|sl| content::number_lines(&sl.text, sl.span.map_or(1, |sp| sp.first)))
    };
    match rx {
        Err(err) => Action::content(err).at(target),
        Ok(rx) => Action {
            status: 200,
            rx: Some(rx),
            mimetype_rx: Some(c.mimetype.clone()),
            writes_row: true,
            ..Action::default()
        }
        .at(target),
    }
}

/// Applies a result-position marker (`<N>`, `<N,M>`, negatives from the end) to a list
/// (FIND results, selected log rows); decimals (score thresholds) and bad ranges are 416.
pub(super) fn result_range<T>(
    items: Vec<T>,
    marks: Option<&[f64]>,
) -> Result<Vec<T>, ContentError> {
    let Some(marks) = marks else { return Ok(items) };
    let n = items.len() as i64;
    let idx = |m: f64| -> Result<i64, ContentError> {
        if m.fract() != 0.0 || !m.is_finite() {
            return Err(ContentError::RangeNotSatisfiable(format!(
                "<{m}>: a score threshold needs a semantic (~) matcher"
            )));
        }
        let m = m as i64;
        Ok(if m < 0 { n + 1 + m } else { m })
    };
    let (a, b) = match marks {
        [a] => (idx(*a)?, idx(*a)?),
        [a, b] => (idx(*a)?, idx(*b)?),
        _ => {
            return Err(ContentError::RangeNotSatisfiable(
                "a result range takes one or two positions".into(),
            ))
        }
    };
    if n == 0 {
        return Ok(items);
    }
    // A range reaching past the last result takes what there is (`<1,20>` over 7 rows is
    // all 7); one that starts past it, or runs backwards, selects nothing sensible: 416.
    let b = b.min(n);
    if a < 1 || a > n || a > b {
        return Err(ContentError::RangeNotSatisfiable(format!(
            "results {a}..{b} of {n}"
        )));
    }
    Ok(items
        .into_iter()
        .skip((a - 1) as usize)
        .take((b - a + 1) as usize)
        .collect())
}

async fn find<S: Syscalls>(
    world: &mut TurnWorld<'_, S>,
    s: &Statement,
    scheme: &str,
    pathname: &str,
    manifest: &Manifest,
) -> R<Action> {
    let found = match matching(world, scheme, pathname, &tags_of(s)).await? {
        Ok(f) => f,
        Err(e) => return Ok(Action::content(e)),
    };
    Ok(catalog(&found, s, manifest.default_channel))
}

/// FIND's answer over `found`: catalog items (`path`, `tags`, `channels`), one per match
/// of the matcher body when there is one, sliced by the result range.
pub(super) fn catalog(found: &[Entry], s: &Statement, default_channel: &str) -> Action {
    let matcher = matcher_of(s);
    let mut items = Vec::new();
    for e in found {
        let mut channels = serde_json::Map::new();
        for c in &e.channels {
            channels.insert(
                format!("{}#{}", e.key.uri(), c.name),
                json!({"mimetype": c.mimetype, "tokens": c.tokens, "lines": content::line_count(&c.content)}),
            );
        }
        let mut item = json!({"path": e.key.uri(), "channels": channels});
        if !e.tags.is_empty() {
            item["tags"] = json!(e.tags);
        }
        match matcher {
            None => items.push(item),
            Some(m) => {
                let Some(c) = e.channel(default_channel) else {
                    continue;
                };
                match content::match_content(m, &c.content, &c.mimetype) {
                    Err(err) if err.status() == 415 => continue,
                    Err(err) => return Action::content(err),
                    Ok(out) => {
                        for sp in out.spans {
                            let mut it = item.clone();
                            it["matchSpan"] = json!([sp.first, sp.last]);
                            items.push(it);
                        }
                    }
                }
            }
        }
    }
    let items = match result_range(items, marks_of(s)) {
        Ok(i) => i,
        Err(e) => return Action::content(e),
    };
    let status = if items.is_empty() { 204 } else { 200 };
    Action {
        status,
        rx: Some(serde_json::Value::Array(items).to_string()),
        mimetype_rx: Some("application/json".into()),
        writes_row: true,
        ..Action::default()
    }
}

/// A path-name regex scope `#pattern#flags` (FIND and READ): every entry of the loop's
/// entry schemes whose path or URI the pattern matches. (Project files join the scope when
/// the session has an fs device.)
pub async fn regex_scope<S: Syscalls>(
    ctx: &mut DispatchCtx<'_, '_, S>,
    s: &Statement,
    pattern: &str,
    flags: &str,
) -> Vec<Action> {
    let mut b = regex::RegexBuilder::new(pattern);
    b.case_insensitive(flags.contains('i'))
        .multi_line(flags.contains('m'))
        .dot_matches_new_line(flags.contains('s'))
        .size_limit(1 << 21);
    let re = match b.build() {
        Ok(re) => re,
        Err(e) => return vec![Action::status(400, format!("400 regex scope: {e}"))],
    };
    let tags = tags_of(s);
    let mut found = Vec::new();
    for m in ctx
        .schemes
        .all()
        .filter(|m| m.category == super::Category::Data)
    {
        if m.name == "plurnk" {
            continue;
        }
        match ctx.world.entries(Scope::Session, Some(m.name)).await {
            Ok(es) => found.extend(es.into_iter().filter(|e| {
                (re.is_match(&e.key.pathname) || re.is_match(&e.key.uri()))
                    && tags.iter().all(|t| e.tags.contains(t))
            })),
            Err(e) => return vec![Action::internal(e)],
        }
    }
    match s.op {
        Op::Find => vec![catalog(&found, s, "body")],
        Op::Read if found.is_empty() => vec![Action::status(
            404,
            format!("404 no entry matches #{pattern}#{flags}"),
        )],
        Op::Read => found
            .iter()
            .filter_map(|e| ctx.schemes.get(e.key.scheme.as_deref()?).map(|m| (e, m)))
            .map(|(e, m)| read_entry(e, s, None, m))
            .collect(),
        _ => vec![Action::status(
            400,
            format!("400 {} takes one target, not a regex scope", s.op),
        )],
    }
}

async fn edit<S: Syscalls>(
    world: &mut TurnWorld<'_, S>,
    s: &Statement,
    scheme: &str,
    pathname: &str,
    ch: Option<&str>,
    manifest: &Manifest,
) -> R<Action> {
    if is_pattern(pathname) {
        return Ok(Action::status(
            400,
            "400 EDIT writes one entry; a glob or folder target is not an entry",
        ));
    }
    let key = entry_key(scheme, pathname);
    let target = target_of(&key, ch);
    let name = ch.unwrap_or(manifest.default_channel);
    let existing = world.entry(&key).await?;
    let current = existing.as_ref().and_then(|e| e.channel(name));
    let mimetype = current.map_or_else(
        || content::resolve_mimetype(pathname, "text/markdown").to_owned(),
        |c| c.mimetype.clone(),
    );
    let body = s.body_raw();
    let outcome = if is_json(pathname, &mimetype) {
        content::apply_json_edit(current.map(|c| c.content.as_str()), marks_of(s), body)
    } else {
        content::apply_edit(current.map(|c| c.content.as_str()), marks_of(s), body)
    };
    let out = match outcome {
        Ok(o) => o,
        Err(e) => return Ok(Action::content(e).at(target)),
    };
    let mut tags = existing
        .as_ref()
        .map(|e| e.tags.clone())
        .unwrap_or_default();
    let before = tags.len();
    for t in tags_of(s) {
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    tags.sort();
    let new_tags = tags.len() != before;
    let status = if out.status == 304 && new_tags {
        200
    } else {
        out.status
    };
    let rx = content::render_span(&out.content, out.span, 2);
    if status != 304 {
        world.put(&key, channel(name, out.content, &mimetype), Some(tags));
    }
    Ok(Action {
        status,
        rx: Some(rx),
        mimetype_rx: Some(mimetype),
        writes_row: true,
        ..Action::default()
    }
    .at(target))
}

async fn kill<S: Syscalls>(
    world: &mut TurnWorld<'_, S>,
    s: &Statement,
    scheme: &str,
    pathname: &str,
) -> R<Action> {
    if is_pattern(pathname) {
        let found = match matching(world, scheme, pathname, &tags_of(s)).await? {
            Ok(f) => f,
            Err(e) => return Ok(Action::content(e)),
        };
        if found.is_empty() {
            return Ok(Action::status(
                404,
                format!("404 no entry matches {pathname}"),
            ));
        }
        let mut gone = Vec::new();
        for e in &found {
            world.delete(&e.key);
            gone.push(e.key.uri());
        }
        return Ok(Action::ok(format!("deleted {}", gone.join(", "))));
    }
    let key = entry_key(scheme, pathname);
    let target = target_of(&key, None);
    Ok(match world.entry(&key).await? {
        None => Action::status(404, format!("404 {} not found", key.uri())).at(target),
        Some(_) => {
            world.delete(&key);
            Action::ok(format!("deleted {}", key.uri())).at(target)
        }
    })
}
