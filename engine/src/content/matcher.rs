//! Running a matcher body over one entry's content (PLURNK.md §1.3): which lines match.
//!
//! A matcher *selects locations*; READ returns the matching source lines prefixed `N:\t`
//! ([`render_matches`]), FIND reports each span as a `matchSpan`. Ported from plurnk's
//! `plurnk-schemes/src/matcher.ts` (status mapping, one result per source line) and
//! `plurnk-mimetypes/src/query.ts` (`queryGlob`, `queryRegex`):
//!
//! | dialect | here |
//! |---|---|
//! | glob | line by line. Text without glob syntax is a case-sensitive substring search; with syntax it must match the whole line, `*` crossing anything (`TODO*` starts with, `*TODO*` contains). |
//! | regex `#pat#flags` | over the whole content with the `regex` crate; a match spans the lines it touches. Flags `i m s u g` (`g` is implied: every match is reported; `u` is the default). JavaScript-only syntax (lookaround, backreferences) does not compile → 400. Compiled size is bounded, so hostile patterns are 400, never a hang. |
//! | JSONPath `$…` | JSON mimetypes only (else 415; unparseable JSON → 203 with a reason). Supports `$`, `.key`, `.*`, `['key']`/`["key"]`, `[n]` (negative from the end), `[*]`, `[a:b:c]` slices, unions `[0,'k']`, and `..` descent with any of those. Filters `[?…]` → 501. Each selected value reports the lines it spans. |
//! | XPath `//…`, semantic `~…`, code graph `@…` | 501: not implemented in this module (they need a document projection, an embedding index and a symbol graph, which belong to the schemes). |
//!
//! Statuses: 200 matches, 204 none, 203 source not parseable for the dialect (the engine
//! returns the raw text with the reason); errors 400 malformed body, 415 dialect vs
//! mimetype (or binary content), 501 dialect not implemented.
//!
//! **Invariants:** never panics; glob and regex matching are linear in the content;
//! JSONPath evaluation is bounded by [`MAX_JSONPATH_NODES`] selected nodes per step.
//!
//! **API boundary:** takes the parser's [`MatcherBody`] (the declared dialect is
//! authoritative, no re-classification) and the channel's mimetype.

use regex::RegexBuilder;

use super::glob::{has_glob_syntax, Glob};
use super::json::{self, Kind, Node};
use super::lines::LineSpan;
use super::mime::{is_binary, is_json_mimetype};
use super::ContentError;
use crate::grammar::{Dialect, MatcherBody};

/// Compiled regex bound (bytes); larger patterns are refused with 400.
const REGEX_SIZE_LIMIT: usize = 1 << 21;
/// Most nodes a JSONPath step may select before the query is refused (400).
pub const MAX_JSONPATH_NODES: usize = 100_000;

/// What a matcher found in one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchOutcome {
    /// 200 matches, 204 none, 203 source not parseable for the dialect.
    pub status: u16,
    /// Matching line spans (1-based, inclusive), in source order, one per first line.
    pub spans: Vec<LineSpan>,
    /// Why the source could not be parsed (203 only).
    pub reason: Option<String>,
}

impl MatchOutcome {
    fn from_spans(mut spans: Vec<LineSpan>) -> Self {
        spans.sort_by_key(|s| (s.first, s.last));
        spans.dedup_by_key(|s| s.first);
        let status = if spans.is_empty() { 204 } else { 200 };
        MatchOutcome {
            status,
            spans,
            reason: None,
        }
    }
}

/// Runs `body` over `content` (a channel of `mimetype`) and returns the matching spans.
pub fn match_content(
    body: &MatcherBody,
    content: &str,
    mimetype: &str,
) -> Result<MatchOutcome, ContentError> {
    if is_binary(content.as_bytes()) {
        return Err(ContentError::UnsupportedMedia(
            "binary content has no text to match".into(),
        ));
    }
    match body.dialect {
        Dialect::Glob => glob_lines(body.raw.trim_matches(['\n', '\r']), content),
        Dialect::Regex => {
            let pattern = body.pattern.as_deref().unwrap_or(&body.raw);
            regex_spans(pattern, body.flags.as_deref().unwrap_or(""), content)
        }
        Dialect::Jsonpath => {
            if !is_json_mimetype(mimetype) {
                return Err(ContentError::UnsupportedMedia(format!(
                    "JSONPath applies to JSON entries, not {mimetype}"
                )));
            }
            jsonpath_spans(body.raw.trim(), content)
        }
        Dialect::Xpath => Err(not_here("XPath")),
        Dialect::Semantic => Err(not_here("semantic (~) search")),
        Dialect::Graph => Err(not_here("code-graph (@) search")),
    }
}

fn not_here(what: &str) -> ContentError {
    ContentError::NotImplemented(format!("{what} matchers are not implemented for entries"))
}

/// READ's rendering of matches: the source line at each span's first line, `N:\t`-prefixed,
/// one per line, joined with `\n`.
pub fn render_matches(content: &str, spans: &[LineSpan]) -> String {
    let body = content.strip_suffix('\n').unwrap_or(content);
    let lines: Vec<&str> = if content.is_empty() {
        Vec::new()
    } else {
        body.split('\n').collect()
    };
    let mut out = String::new();
    let mut last = 0;
    for s in spans {
        if s.first == last {
            continue;
        }
        last = s.first;
        let Some(line) = s.first.checked_sub(1).and_then(|i| lines.get(i)) else {
            continue;
        };
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&s.first.to_string());
        out.push_str(":\t");
        out.push_str(line);
    }
    out
}

/// Lines of `content`, without their terminators (`""` has none).
fn lines_of(content: &str) -> impl Iterator<Item = &str> {
    let body = content.strip_suffix('\n').unwrap_or(content);
    body.split('\n')
        .take(if content.is_empty() { 0 } else { usize::MAX })
}

fn glob_lines(pattern: &str, content: &str) -> Result<MatchOutcome, ContentError> {
    let glob = if has_glob_syntax(pattern) {
        Some(Glob::line(pattern)?)
    } else {
        None
    };
    let spans = lines_of(content)
        .enumerate()
        // a CRLF line's `\r` is its separator, not content (plurnk's logical lines)
        .map(|(i, line)| (i, line.strip_suffix('\r').unwrap_or(line)))
        .filter(|(_, line)| match &glob {
            Some(g) => g.matches(line),
            None => line.contains(pattern),
        })
        .map(|(i, _)| LineSpan::new(i + 1, i + 1))
        .collect();
    Ok(MatchOutcome::from_spans(spans))
}

/// Byte offset → 1-based line, clamped to the content's lines.
struct LineIndex {
    newlines: Vec<usize>,
    total: usize,
}

impl LineIndex {
    fn new(content: &str) -> Self {
        LineIndex {
            newlines: memchr::memchr_iter(b'\n', content.as_bytes()).collect(),
            total: super::lines::line_count(content),
        }
    }

    fn line_of(&self, offset: usize) -> usize {
        (self.newlines.partition_point(|&nl| nl < offset) + 1).min(self.total.max(1))
    }

    /// The lines a byte range `[start, end)` touches.
    fn span(&self, start: usize, end: usize) -> LineSpan {
        let first = self.line_of(start);
        let last = self.line_of(end.saturating_sub(1).max(start)).max(first);
        LineSpan::new(first, last)
    }
}

fn regex_spans(pattern: &str, flags: &str, content: &str) -> Result<MatchOutcome, ContentError> {
    let mut builder = RegexBuilder::new(pattern);
    // ECMAScript counts `\r` as a line terminator for `^`/`$` under `m` and for `.`.
    builder.crlf(true);
    for f in flags.chars() {
        match f {
            'i' => builder.case_insensitive(true),
            'm' => builder.multi_line(true),
            's' => builder.dot_matches_new_line(true),
            'u' | 'g' => &mut builder,
            other => {
                return Err(ContentError::bad(format!(
                    "regex flag {other:?} is not one of i m s u g"
                )))
            }
        };
    }
    let re = builder
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| ContentError::bad(format!("regex #{pattern}# does not compile: {e}")))?;
    if content.is_empty() {
        return Ok(MatchOutcome::from_spans(Vec::new()));
    }
    let index = LineIndex::new(content);
    let spans = re
        .find_iter(content)
        .map(|m| index.span(m.start(), m.end()))
        .collect();
    Ok(MatchOutcome::from_spans(spans))
}

/// One JSONPath selector inside a segment.
#[derive(Debug, Clone, PartialEq)]
enum Selector {
    Name(String),
    Wildcard,
    Index(i64),
    Slice(Option<i64>, Option<i64>, Option<i64>),
}

/// A child (`.x`, `[…]`) or descendant (`..x`, `..[…]`) segment.
#[derive(Debug, Clone, PartialEq)]
struct Segment {
    descendant: bool,
    selectors: Vec<Selector>,
}

fn jsonpath_spans(path: &str, content: &str) -> Result<MatchOutcome, ContentError> {
    let segments = parse_jsonpath(path)?;
    let root = match json::parse(content) {
        Ok(root) => root,
        Err(reason) => {
            return Ok(MatchOutcome {
                status: 203,
                spans: Vec::new(),
                reason: Some(format!("content is not valid JSON: {reason}")),
            })
        }
    };
    let selected = eval_jsonpath(&segments, &root)?;
    let index = LineIndex::new(content);
    let spans = selected
        .iter()
        .map(|n| index.span(n.start, n.end))
        .collect();
    Ok(MatchOutcome::from_spans(spans))
}

fn eval_jsonpath<'a>(segments: &[Segment], root: &'a Node) -> Result<Vec<&'a Node>, ContentError> {
    let mut nodes = vec![root];
    for seg in segments {
        let mut next: Vec<&'a Node> = Vec::new();
        for &node in &nodes {
            if seg.descendant {
                let mut stack = vec![node];
                while let Some(n) = stack.pop() {
                    select(n, &seg.selectors, &mut next);
                    guard(next.len())?;
                    match &n.kind {
                        Kind::Array(items) => stack.extend(items.iter().rev()),
                        Kind::Object(ms) => stack.extend(ms.iter().rev().map(|m| &m.value)),
                        Kind::Scalar(_) => {}
                    }
                }
            } else {
                select(node, &seg.selectors, &mut next);
                guard(next.len())?;
            }
        }
        nodes = next;
    }
    Ok(nodes)
}

fn guard(n: usize) -> Result<(), ContentError> {
    if n > MAX_JSONPATH_NODES {
        Err(ContentError::bad(format!(
            "JSONPath selects more than {MAX_JSONPATH_NODES} nodes; narrow the query"
        )))
    } else {
        Ok(())
    }
}

fn select<'a>(node: &'a Node, selectors: &[Selector], out: &mut Vec<&'a Node>) {
    for sel in selectors {
        match (sel, &node.kind) {
            (Selector::Name(k), Kind::Object(ms)) => {
                out.extend(ms.iter().filter(|m| &m.key == k).map(|m| &m.value));
            }
            (Selector::Wildcard, Kind::Object(ms)) => out.extend(ms.iter().map(|m| &m.value)),
            (Selector::Wildcard, Kind::Array(items)) => out.extend(items.iter()),
            (Selector::Index(i), Kind::Array(items)) => {
                let len = items.len() as i64;
                let at = if *i < 0 { len + i } else { *i };
                if (0..len).contains(&at) {
                    out.extend(items.get(at as usize));
                }
            }
            (Selector::Slice(start, end, step), Kind::Array(items)) => {
                slice(items, *start, *end, *step, out);
            }
            _ => {}
        }
    }
}

/// RFC 9535 §2.3.4 array slice.
fn slice<'a>(
    items: &'a [Node],
    start: Option<i64>,
    end: Option<i64>,
    step: Option<i64>,
    out: &mut Vec<&'a Node>,
) {
    let len = items.len() as i64;
    let step = step.unwrap_or(1);
    if step == 0 {
        return;
    }
    let norm = |i: i64| if i >= 0 { i } else { len + i };
    if step > 0 {
        let lo = norm(start.unwrap_or(0)).clamp(0, len);
        let hi = norm(end.unwrap_or(len)).clamp(0, len);
        let mut i = lo;
        while i < hi {
            out.extend(items.get(i as usize));
            i += step;
        }
    } else {
        let hi = norm(start.unwrap_or(len - 1)).clamp(-1, len - 1);
        let lo = end.map_or(-1, |e| norm(e).clamp(-1, len - 1));
        let mut i = hi;
        while lo < i {
            out.extend(items.get(i as usize));
            i += step;
        }
    }
}

/// Parses a JSONPath query into segments (400 on malformed, 501 on filters).
fn parse_jsonpath(path: &str) -> Result<Vec<Segment>, ContentError> {
    let chars: Vec<char> = path.chars().collect();
    let bad = |what: &str| ContentError::bad(format!("JSONPath {path:?}: {what}"));
    if chars.first() != Some(&'$') {
        return Err(bad("must start with $"));
    }
    let mut i = 1;
    let mut segments = Vec::new();
    while i < chars.len() {
        if chars[i].is_whitespace() {
            i += 1;
            continue;
        }
        let descendant = chars[i] == '.' && chars.get(i + 1) == Some(&'.');
        // `.x` / `.*` after a single dot; `..x`, `..*` and `..[…]` after two; `[…]` bare
        let dotted = chars[i] == '.';
        if descendant {
            i += 2;
        } else if dotted {
            i += 1;
        } else if chars[i] != '[' {
            return Err(bad(&format!("unexpected {:?}", chars[i])));
        }
        let selectors = match chars.get(i) {
            Some('[') if descendant || !dotted => {
                let (sels, next) = parse_brackets(&chars, i + 1).map_err(|e| match e {
                    BracketError::Filter => ContentError::NotImplemented(
                        "JSONPath filter expressions [?…] are not implemented".into(),
                    ),
                    BracketError::Malformed(what) => bad(&what),
                })?;
                i = next;
                sels
            }
            Some('*') if dotted => {
                i += 1;
                vec![Selector::Wildcard]
            }
            Some(&c) if dotted && is_name_char(c) => {
                let start = i;
                while chars.get(i).is_some_and(|&c| is_name_char(c)) {
                    i += 1;
                }
                vec![Selector::Name(chars[start..i].iter().collect())]
            }
            _ => return Err(bad("expected a name, * or [ after .")),
        };
        segments.push(Segment {
            descendant,
            selectors,
        });
    }
    Ok(segments)
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-' || !c.is_ascii()
}

enum BracketError {
    Filter,
    Malformed(String),
}

/// Parses selectors after `[` up to the closing `]`; returns them and the index after `]`.
fn parse_brackets(chars: &[char], mut i: usize) -> Result<(Vec<Selector>, usize), BracketError> {
    let malformed = |s: &str| BracketError::Malformed(s.to_owned());
    let mut sels = Vec::new();
    loop {
        while chars.get(i).is_some_and(|c| c.is_whitespace()) {
            i += 1;
        }
        match chars.get(i) {
            Some('?') => return Err(BracketError::Filter),
            Some('*') => {
                sels.push(Selector::Wildcard);
                i += 1;
            }
            Some(&q @ ('\'' | '"')) => {
                let (name, next) =
                    parse_quoted(chars, i + 1, q).ok_or_else(|| malformed("bad quoted name"))?;
                sels.push(Selector::Name(name));
                i = next;
            }
            Some(c) if c.is_ascii_digit() || *c == '-' || *c == ':' => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_ascii_digit() || matches!(c, '-' | ':' | ' '))
                {
                    i += 1;
                }
                let text: String = chars[start..i].iter().filter(|c| **c != ' ').collect();
                sels.push(
                    parse_index_or_slice(&text).ok_or_else(|| malformed("bad index or slice"))?,
                );
            }
            _ => return Err(malformed("expected a selector inside [ ]")),
        }
        while chars.get(i).is_some_and(|c| c.is_whitespace()) {
            i += 1;
        }
        match chars.get(i) {
            Some(',') => i += 1,
            Some(']') => return Ok((sels, i + 1)),
            _ => return Err(malformed("expected , or ]")),
        }
    }
}

fn parse_int(s: &str) -> Option<i64> {
    if s.is_empty()
        || s.starts_with('+')
        || (s.len() > 1 && s.starts_with('0'))
        || s.starts_with("-0")
    {
        return None;
    }
    s.parse().ok()
}

fn parse_index_or_slice(s: &str) -> Option<Selector> {
    if !s.contains(':') {
        return parse_int(s).map(Selector::Index);
    }
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() > 3 {
        return None;
    }
    let opt = |p: Option<&&str>| -> Option<Option<i64>> {
        match p {
            None => Some(None),
            Some(&"") => Some(None),
            Some(p) => parse_int(p).map(Some),
        }
    };
    Some(Selector::Slice(
        opt(parts.first())?,
        opt(parts.get(1))?,
        opt(parts.get(2))?,
    ))
}

/// A quoted name after its opening quote: the decoded name and the index after the close.
fn parse_quoted(chars: &[char], mut i: usize, quote: char) -> Option<(String, usize)> {
    let mut out = String::new();
    loop {
        let c = *chars.get(i)?;
        i += 1;
        if c == quote {
            return Some((out, i));
        }
        if c != '\\' {
            out.push(c);
            continue;
        }
        let e = *chars.get(i)?;
        i += 1;
        out.push(match e {
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => {
                let hex: String = chars.get(i..i + 4)?.iter().collect();
                i += 4;
                char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?
            }
            other => other,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grammar::matcher::classify;
    use proptest::prelude::*;

    const MD: &str = "# Notes\nTODO: write tests\nsome text\n  TODO later\ndone\n";

    fn run(raw: &str, content: &str, mimetype: &str) -> Result<MatchOutcome, ContentError> {
        match_content(&classify(raw), content, mimetype)
    }

    fn lines(raw: &str, content: &str, mimetype: &str) -> Vec<usize> {
        match run(raw, content, mimetype) {
            Ok(o) => o.spans.iter().map(|s| s.first).collect(),
            Err(e) => panic!("{raw}: {e}"),
        }
    }

    #[test]
    fn glob_dialect_table() {
        let rows: &[(&str, &[usize])] = &[
            ("TODO", &[2, 4]),
            ("TODO*", &[2]),
            ("*TODO*", &[2, 4]),
            ("*later", &[4]),
            ("done", &[5]),
            ("todo", &[]),
            ("#  Notes", &[]),
            ("[st]ome*", &[3]),
            ("{done,# Notes}", &[1, 5]),
        ];
        for (raw, want) in rows {
            assert_eq!(lines(raw, MD, "text/markdown"), *want, "{raw}");
        }
    }

    #[test]
    fn match_status_is_200_or_204() {
        assert_eq!(run("TODO", MD, "text/markdown").map(|o| o.status), Ok(200));
        assert_eq!(
            run("absent", MD, "text/markdown").map(|o| o.status),
            Ok(204)
        );
        assert_eq!(run("x", "", "text/markdown").map(|o| o.status), Ok(204));
    }

    #[test]
    fn regex_dialect_with_flags() {
        assert_eq!(lines("#^TODO#m", MD, "text/markdown"), vec![2]);
        assert_eq!(lines("#^TODO#", MD, "text/markdown"), Vec::<usize>::new());
        assert_eq!(lines("#todo#i", MD, "text/markdown"), vec![2, 4]);
        assert_eq!(lines("#todo#gi", MD, "text/markdown"), vec![2, 4]);
        assert_eq!(lines("#(?<w>TODO)#u", MD, "text/markdown"), vec![2, 4]);
        // a multi-line match spans the lines it touches; `s` lets `.` cross newlines
        let o = run("#tests.some#s", MD, "text/markdown").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.spans, vec![LineSpan::new(2, 3)]);
        // CRLF content: `$` under `m` stops before `\r\n`, globs ignore the `\r`
        assert_eq!(lines("#b$#m", "ab\r\ncd\r\n", "text/markdown"), vec![1]);
        assert_eq!(lines("*b", "ab\r\ncd\r\n", "text/markdown"), vec![1]);
        // two hits on one line are one result
        assert_eq!(lines("#o#", "foo\n", "text/markdown"), vec![1]);
    }

    #[test]
    fn regex_errors_are_400() {
        for raw in ["#(?=x)#", "#\\1(a)#"] {
            let body = classify(raw);
            assert_eq!(body.dialect, Dialect::Regex, "{raw}");
            assert_eq!(
                match_content(&body, MD, "text/markdown").map_err(|e| e.status()),
                Err(400),
                "{raw}"
            );
        }
        let sticky = MatcherBody {
            dialect: Dialect::Regex,
            raw: "#a#y".into(),
            pattern: Some("a".into()),
            flags: Some("y".into()),
        };
        assert_eq!(
            match_content(&sticky, MD, "text/markdown").map_err(|e| e.status()),
            Err(400)
        );
        let huge = MatcherBody {
            dialect: Dialect::Regex,
            raw: String::new(),
            pattern: Some("(\\w{50}){50}".repeat(20)),
            flags: Some(String::new()),
        };
        assert_eq!(
            match_content(&huge, MD, "text/markdown").map_err(|e| e.status()),
            Err(400)
        );
    }

    const JSON: &str = "{\n  \"users\": [\n    {\"name\": \"ann\", \"age\": 3},\n    {\n      \"name\": \"bob\"\n    }\n  ],\n  \"meta\": {\"name\": \"m\"}\n}\n";

    #[test]
    fn jsonpath_dialect_table() {
        let rows: &[(&str, &[usize])] = &[
            ("$", &[1]),
            ("$.users", &[2]),
            ("$.users[0]", &[3]),
            ("$.users[-1]", &[4]),
            ("$.users[1].name", &[5]),
            ("$['meta']", &[8]),
            ("$[\"meta\"].name", &[8]),
            ("$.users[*].name", &[3, 5]),
            ("$..name", &[3, 5, 8]),
            ("$.users[0:1]", &[3]),
            ("$.users[::-1]", &[3, 4]),
            ("$.users[0,1]", &[3, 4]),
            ("$.*", &[2, 8]),
            ("$..*", &[2, 3, 4, 5, 8]),
            ("$.missing", &[]),
            ("$.users[5]", &[]),
        ];
        for (raw, want) in rows {
            assert_eq!(lines(raw, JSON, "application/json"), *want, "{raw}");
        }
        let o = run("$.users[1]", JSON, "application/json").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.spans, vec![LineSpan::new(4, 6)]);
        assert_eq!(
            run("$", JSON, "application/json").map(|o| o.spans),
            Ok(vec![LineSpan::new(1, 9)])
        );
    }

    #[test]
    fn jsonpath_statuses() {
        assert_eq!(
            run("$.a", "{}", "text/markdown").map_err(|e| e.status()),
            Err(415)
        );
        let o = run("$.a", "{nope", "application/json").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.status, 203);
        assert!(o.reason.is_some());
        assert_eq!(
            run("$[?@.a]", "{}", "application/json").map_err(|e| e.status()),
            Err(501)
        );
        assert_eq!(
            run("$.a", "{\"b\":1}", "application/json").map(|o| o.status),
            Ok(204)
        );
    }

    #[test]
    fn malformed_jsonpath_is_400() {
        for path in ["$[", "$['a'", "$[01]", "$[1:2:3:4]", "$.[1]"] {
            let body = MatcherBody {
                dialect: Dialect::Jsonpath,
                raw: path.into(),
                pattern: None,
                flags: None,
            };
            assert_eq!(
                match_content(&body, "[]", "application/json").map_err(|e| e.status()),
                Err(400),
                "{path}"
            );
        }
    }

    #[test]
    fn unimplemented_dialects_are_501() {
        for raw in ["//section", "~how do i", "@main"] {
            let body = classify(raw);
            assert_ne!(body.dialect, Dialect::Glob, "{raw}");
            assert_eq!(
                match_content(&body, MD, "text/markdown").map_err(|e| e.status()),
                Err(501),
                "{raw}"
            );
        }
    }

    #[test]
    fn binary_content_is_415() {
        assert_eq!(
            run("x", "a\0b", "text/markdown").map_err(|e| e.status()),
            Err(415)
        );
    }

    #[test]
    fn render_matches_gives_source_lines() {
        let o = run("*TODO*", MD, "text/markdown").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            render_matches(MD, &o.spans),
            "2:\tTODO: write tests\n4:\t  TODO later"
        );
        assert_eq!(render_matches(MD, &[LineSpan::new(99, 99)]), "");
    }

    proptest! {
        #[test]
        fn matcher_never_panics(raw in "[#$~@/a-z*?\\[\\]{}().:,'\"0-9\\\\-]{0,16}", content in "[a-z{}\\[\\]\":,0-9 \n]{0,40}") {
            let body = classify(&raw);
            for mt in ["text/markdown", "application/json"] {
                if let Ok(o) = match_content(&body, &content, mt) {
                    prop_assert!(matches!(o.status, 200 | 203 | 204));
                    let _ = render_matches(&content, &o.spans);
                }
            }
        }
    }
}
