//! `<L>` over `.json` entries: positions are top-level *items*, not lines (PLURNK.md §1.2,
//! §1.4 "JSON entries edit structurally by item").
//!
//! Items: an array's elements; an object's key/value pairs (each read back as a single-key
//! object); a scalar is one item, itself. Ported from plurnk's E2 `src/core/line-marker.ts`
//! (`sliceJsonItems`, `applyJsonItemEdit` @01df3072):
//!
//! - READ/COPY ([`select_items`]): the selected items as a JSON array, pretty-printed;
//!   `<0>`/`<-1>` select nothing (`[]`); out of range 416; malformed content 400.
//! - EDIT ([`apply_json_edit`]): a non-empty body must parse as JSON (else 400); an array
//!   body is the items to splice, any other value is one item; an empty (or whitespace-only)
//!   body deletes the selection. `<N>` replaces, `<N,M>` replaces a range, `<0>` prepends,
//!   `<-1>` appends, `<N.5>` inserts between N and N+1 (the line rule, carried over to items),
//!   `<1,-1>` + empty body clears to `[]` / `{}`. An empty body at `<0>`/`<-1>` is a no-op.
//!   Object sources take object bodies only (400 otherwise) and splice their pairs; a key that
//!   ends up twice keeps its first position and its last value (what `Object.fromEntries`
//!   does). Scalar sources take only `<1>` or `<1,-1>`, with zero items (→ `null`) or one
//!   (→ that item); anything else is 400, as plurnk has it ("no implicit promotion").
//! - Missing entry, no marker, or empty existing content: the (validated) body becomes the
//!   content verbatim.
//!
//! Output is pretty-printed with two-space indentation (`JSON.stringify(v, null, 2)`), keys
//! in source order; numbers and strings keep their source spelling (`1.0` stays `1.0`,
//! escapes stay as written). A trailing newline on the original content is kept (our text
//! rule; plurnk drops it).
//!
//! **Invariants:** never panics; nesting deeper than [`MAX_DEPTH`] is refused (400), which
//! bounds every recursion here; scalars are validated by `serde_json`, so anything accepted
//! is valid JSON.
//!
//! **API boundary:** [`EditOutcome`] and its statuses are the same as for text edits; the
//! span counts lines of the new content covering the spliced items.

use std::collections::HashMap;

use super::lines::{line_count, resolve, Decimals, EditOutcome, LineSpan, Target};
use super::ContentError;

/// Deepest array/object nesting accepted (serde_json's own default recursion limit).
pub const MAX_DEPTH: usize = 128;

/// A parsed JSON value with its byte span in the source.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// Byte offset of the first character.
    pub start: usize,
    /// Byte offset one past the last character.
    pub end: usize,
    /// The value.
    pub kind: Kind,
}

/// A JSON value's shape; scalars keep their validated source text.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Scalar(String),
    Array(Vec<Node>),
    Object(Vec<Member>),
}

/// One key/value pair of an object.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    /// The decoded key.
    pub key: String,
    /// The key as written, quotes included.
    pub raw_key: String,
    /// Byte offset of the key's opening quote.
    pub start: usize,
    /// The value.
    pub value: Node,
}

/// Parses a whole JSON document (surrounding whitespace allowed). The error is a message
/// with the line and column of the problem.
pub(crate) fn parse(src: &str) -> Result<Node, String> {
    let mut p = Parser {
        src,
        b: src.as_bytes(),
        pos: 0,
    };
    p.ws();
    let node = p.value(0)?;
    p.ws();
    if p.pos != p.b.len() {
        return Err(p.fail("unexpected characters after the JSON value"));
    }
    Ok(node)
}

struct Parser<'a> {
    src: &'a str,
    b: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn fail(&self, what: &str) -> String {
        let upto = self.src.get(..self.pos).unwrap_or(self.src);
        let line = upto.matches('\n').count() + 1;
        let column = upto.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("{what} at line {line} column {column}")
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.pos) {
            self.pos += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node, String> {
        if depth > MAX_DEPTH {
            return Err(self.fail(&format!("nesting deeper than {MAX_DEPTH}")));
        }
        let start = self.pos;
        let kind = match self.b.get(self.pos) {
            Some(b'[') => Kind::Array(self.array(depth)?),
            Some(b'{') => Kind::Object(self.object(depth)?),
            Some(b'"') => Kind::Scalar(self.string()?.1),
            Some(b't') => self.literal("true")?,
            Some(b'f') => self.literal("false")?,
            Some(b'n') => self.literal("null")?,
            Some(b'-' | b'0'..=b'9') => self.number()?,
            Some(_) => return Err(self.fail("expected a JSON value")),
            None => return Err(self.fail("unexpected end of input")),
        };
        Ok(Node {
            start,
            end: self.pos,
            kind,
        })
    }

    fn literal(&mut self, word: &str) -> Result<Kind, String> {
        if self.b.get(self.pos..self.pos + word.len()) == Some(word.as_bytes()) {
            self.pos += word.len();
            Ok(Kind::Scalar(word.to_owned()))
        } else {
            Err(self.fail("expected a JSON value"))
        }
    }

    fn number(&mut self) -> Result<Kind, String> {
        let start = self.pos;
        while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = self.b.get(self.pos) {
            self.pos += 1;
        }
        let raw = self.src.get(start..self.pos).unwrap_or("");
        match serde_json::from_str::<serde_json::Number>(raw) {
            Ok(_) => Ok(Kind::Scalar(raw.to_owned())),
            Err(_) => {
                self.pos = start;
                Err(self.fail(&format!("invalid number {raw:?}")))
            }
        }
    }

    /// A string: (decoded, raw with quotes).
    fn string(&mut self) -> Result<(String, String), String> {
        let start = self.pos;
        let mut j = self.pos + 1;
        loop {
            match memchr::memchr2(b'"', b'\\', self.b.get(j..).unwrap_or_default()) {
                Some(k) if self.b.get(j + k) == Some(&b'\\') => j += k + 2,
                Some(k) => {
                    j += k + 1;
                    break;
                }
                None => return Err(self.fail("unterminated string")),
            }
        }
        let raw = self
            .src
            .get(start..j)
            .ok_or_else(|| self.fail("unterminated string"))?;
        match serde_json::from_str::<String>(raw) {
            Ok(decoded) => {
                self.pos = j;
                Ok((decoded, raw.to_owned()))
            }
            Err(e) => Err(self.fail(&format!("invalid string ({e})"))),
        }
    }

    fn array(&mut self, depth: usize) -> Result<Vec<Node>, String> {
        self.pos += 1;
        self.ws();
        let mut items = Vec::new();
        if self.b.get(self.pos) == Some(&b']') {
            self.pos += 1;
            return Ok(items);
        }
        loop {
            self.ws();
            items.push(self.value(depth + 1)?);
            self.ws();
            match self.b.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(items);
                }
                _ => return Err(self.fail("expected ',' or ']'")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Vec<Member>, String> {
        self.pos += 1;
        self.ws();
        let mut members: Vec<Member> = Vec::new();
        if self.b.get(self.pos) == Some(&b'}') {
            self.pos += 1;
            return Ok(members);
        }
        loop {
            self.ws();
            if self.b.get(self.pos) != Some(&b'"') {
                return Err(self.fail("expected a string key"));
            }
            let start = self.pos;
            let (key, raw_key) = self.string()?;
            self.ws();
            if self.b.get(self.pos) != Some(&b':') {
                return Err(self.fail("expected ':'"));
            }
            self.pos += 1;
            self.ws();
            let value = self.value(depth + 1)?;
            members.push(Member {
                key,
                raw_key,
                start,
                value,
            });
            self.ws();
            match self.b.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(dedupe(members));
                }
                _ => return Err(self.fail("expected ',' or '}'")),
            }
        }
    }
}

/// Duplicate keys: the first position, the last value (`JSON.parse` semantics).
fn dedupe(members: Vec<Member>) -> Vec<Member> {
    dedupe_flagged(members.into_iter().map(|m| (m, false)).collect())
        .into_iter()
        .map(|(m, _)| m)
        .collect()
}

/// [`dedupe`] carrying a flag that follows the winning value.
fn dedupe_flagged(members: Vec<(Member, bool)>) -> Vec<(Member, bool)> {
    let mut index: HashMap<String, usize> = HashMap::with_capacity(members.len());
    let mut out: Vec<(Member, bool)> = Vec::with_capacity(members.len());
    for (m, flag) in members {
        match index.get(&m.key) {
            Some(&i) => {
                if let Some(slot) = out.get_mut(i) {
                    slot.0.value = m.value;
                    slot.1 = flag;
                }
            }
            None => {
                index.insert(m.key.clone(), out.len());
                out.push((m, flag));
            }
        }
    }
    out
}

/// Pretty-prints `node` (two-space indent) into `out`.
fn print(node: &Node, indent: usize, out: &mut String) {
    match &node.kind {
        Kind::Scalar(raw) => out.push_str(raw),
        Kind::Array(items) if items.is_empty() => out.push_str("[]"),
        Kind::Object(members) if members.is_empty() => out.push_str("{}"),
        Kind::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                out.push_str(if i == 0 { "\n" } else { ",\n" });
                pad(out, indent + 1);
                print(item, indent + 1, out);
            }
            out.push('\n');
            pad(out, indent);
            out.push(']');
        }
        Kind::Object(members) => {
            out.push('{');
            for (i, m) in members.iter().enumerate() {
                out.push_str(if i == 0 { "\n" } else { ",\n" });
                pad(out, indent + 1);
                print_member(m, indent + 1, out);
            }
            out.push('\n');
            pad(out, indent);
            out.push('}');
        }
    }
}

fn print_member(m: &Member, indent: usize, out: &mut String) {
    out.push_str(&m.raw_key);
    out.push_str(": ");
    print(&m.value, indent, out);
}

fn pad(out: &mut String, indent: usize) {
    for _ in 0..indent {
        out.push_str("  ");
    }
}

/// A top-level item as printed: an array element, or a member (as a one-key object when
/// read back alone).
enum Item<'a> {
    Value(&'a Node),
    Member(&'a Member),
}

/// Prints a top-level container of `items` and returns the text plus each item's line span.
fn print_items(items: &[Item<'_>], object: bool) -> (String, Vec<LineSpan>) {
    let (open, close) = if object { ('{', '}') } else { ('[', ']') };
    let mut out = String::new();
    let mut spans = Vec::with_capacity(items.len());
    if items.is_empty() {
        out.push(open);
        out.push(close);
        return (out, spans);
    }
    out.push(open);
    let mut line = 1;
    for (i, item) in items.iter().enumerate() {
        out.push_str(if i == 0 { "\n" } else { ",\n" });
        line += 1;
        pad(&mut out, 1);
        let before = out.len();
        match item {
            Item::Value(n) => print(n, 1, &mut out),
            Item::Member(m) => print_member(m, 1, &mut out),
        }
        let grown = out
            .get(before..)
            .map_or(0, |s| memchr::memchr_iter(b'\n', s.as_bytes()).count());
        spans.push(LineSpan::new(line, line + grown));
        line += grown;
    }
    out.push('\n');
    out.push(close);
    (out, spans)
}

/// Reads top-level items for READ/COPY of a `.json` entry: always a JSON array (object pairs
/// as one-key objects, a scalar as itself). `<0>`/`<-1>` give `[]`; decimals and out-of-range
/// positions are 416; content that is not JSON is 400.
pub fn select_items(content: &str, marks: &[f64]) -> Result<String, ContentError> {
    let root = parse(content).map_err(|e| ContentError::bad(format!("malformed JSON: {e}")))?;
    let total = match &root.kind {
        Kind::Array(items) => items.len(),
        Kind::Object(members) => members.len(),
        Kind::Scalar(_) => 1,
    };
    let (first, last) = match resolve(marks, total, Decimals::Refuse, "item")? {
        Target::Insert { .. } => return Ok("[]".to_owned()),
        Target::Range { first, last } => (first, last),
    };
    let range = first.saturating_sub(1)..last;
    let picked: Vec<Node> = match &root.kind {
        Kind::Array(items) => items.get(range).unwrap_or_default().to_vec(),
        Kind::Object(members) => members
            .get(range)
            .unwrap_or_default()
            .iter()
            .map(|m| Node {
                start: m.start,
                end: m.value.end,
                kind: Kind::Object(vec![m.clone()]),
            })
            .collect(),
        Kind::Scalar(_) => vec![root.clone()],
    };
    let mut out = String::new();
    print(
        &Node {
            start: 0,
            end: 0,
            kind: Kind::Array(picked),
        },
        0,
        &mut out,
    );
    Ok(out)
}

/// Applies an EDIT to a `.json` entry structurally; see the module doc for the rules.
/// Statuses: 201 created, 200 updated, 304 unchanged; errors 400 (malformed body or source,
/// wrong body shape for an object or scalar source) and 416 (marker out of range).
pub fn apply_json_edit(
    current: Option<&str>,
    marks: Option<&[f64]>,
    body: &str,
) -> Result<EditOutcome, ContentError> {
    let body_node = if body.trim().is_empty() {
        None
    } else {
        Some(parse(body).map_err(|e| ContentError::bad(format!("malformed JSON body: {e}")))?)
    };
    let whole = |status_from: Option<&str>| {
        let content = if body_node.is_some() {
            body.to_owned()
        } else {
            String::new()
        };
        let span = LineSpan::new(1, line_count(&content));
        match status_from {
            None => EditOutcome {
                content,
                status: 201,
                span,
            },
            Some(cur) => finish(cur, content, span),
        }
    };
    let Some(current) = current else {
        return Ok(whole(None));
    };
    let Some(marks) = marks else {
        return Ok(whole(Some(current)));
    };
    if current.trim().is_empty() {
        return Ok(whole(Some(current)));
    }
    let root =
        parse(current).map_err(|e| ContentError::bad(format!("malformed JSON source: {e}")))?;
    let items: Vec<Node> = match body_node {
        None => Vec::new(),
        Some(Node {
            kind: Kind::Array(items),
            ..
        }) => items,
        Some(node) => vec![node],
    };
    if items.is_empty() && matches!(marks, [m] if *m == 0.0 || *m == -1.0) {
        return Ok(finish(current, current.to_owned(), LineSpan::empty_at(1)));
    }
    let trailing = current.ends_with('\n');
    let (mut text, span) = match root.kind {
        Kind::Array(elems) => edit_array(elems, marks, items)?,
        Kind::Object(members) => edit_object(members, marks, items)?,
        Kind::Scalar(_) => edit_scalar(marks, items)?,
    };
    if trailing {
        text.push('\n');
    }
    Ok(finish(current, text, span))
}

fn finish(current: &str, content: String, span: LineSpan) -> EditOutcome {
    let status = if content == current { 304 } else { 200 };
    EditOutcome {
        content,
        status,
        span,
    }
}

/// Splice bounds: items `before..after` of the source are replaced.
fn bounds(marks: &[f64], total: usize) -> Result<(usize, usize), ContentError> {
    Ok(match resolve(marks, total, Decimals::Insert, "item")? {
        Target::Insert { after } => (after, after),
        Target::Range { first, last } => (first - 1, last),
    })
}

/// The line span of items `from..from + count` given each printed item's span; an empty
/// insertion sits before the item now at `from` (or before the closing bracket).
fn spliced_span(spans: &[LineSpan], text: &str, from: usize, count: usize) -> LineSpan {
    if count == 0 {
        let at = spans
            .get(from)
            .map_or_else(|| line_count(text).max(1), |s| s.first);
        return LineSpan::empty_at(at);
    }
    match (spans.get(from), spans.get(from + count - 1)) {
        (Some(a), Some(b)) => LineSpan::new(a.first, b.last),
        _ => LineSpan::new(1, line_count(text)),
    }
}

fn edit_array(
    elems: Vec<Node>,
    marks: &[f64],
    items: Vec<Node>,
) -> Result<(String, LineSpan), ContentError> {
    let (before, after) = bounds(marks, elems.len())?;
    let count = items.len();
    let mut out: Vec<Node> = Vec::with_capacity(elems.len() + count);
    let mut rest = elems.into_iter();
    out.extend(rest.by_ref().take(before));
    out.extend(items);
    out.extend(rest.skip(after - before));
    let refs: Vec<Item<'_>> = out.iter().map(Item::Value).collect();
    let (text, spans) = print_items(&refs, false);
    let span = spliced_span(&spans, &text, before, count);
    Ok((text, span))
}

fn edit_object(
    members: Vec<Member>,
    marks: &[f64],
    items: Vec<Node>,
) -> Result<(String, LineSpan), ContentError> {
    let mut incoming: Vec<(Member, bool)> = Vec::new();
    for item in items {
        match item.kind {
            Kind::Object(ms) => incoming.extend(ms.into_iter().map(|m| (m, true))),
            _ => {
                return Err(ContentError::bad(
                    "an object entry takes object bodies (key/value pairs to splice)",
                ))
            }
        }
    }
    let (before, after) = bounds(marks, members.len())?;
    let mut out: Vec<(Member, bool)> = Vec::with_capacity(members.len() + incoming.len());
    let mut rest = members.into_iter().map(|m| (m, false));
    out.extend(rest.by_ref().take(before));
    out.extend(incoming);
    out.extend(rest.skip(after - before));
    let out = dedupe_flagged(out);
    let refs: Vec<Item<'_>> = out.iter().map(|(m, _)| Item::Member(m)).collect();
    let (text, spans) = print_items(&refs, true);
    let flagged: Vec<usize> = out
        .iter()
        .enumerate()
        .filter_map(|(i, (_, f))| f.then_some(i))
        .collect();
    let span = match (flagged.first(), flagged.last()) {
        (Some(&a), Some(&b)) => match (spans.get(a), spans.get(b)) {
            (Some(x), Some(y)) => LineSpan::new(x.first, y.last),
            _ => LineSpan::new(1, line_count(&text)),
        },
        _ => spliced_span(&spans, &text, before.min(out.len()), 0),
    };
    Ok((text, span))
}

fn edit_scalar(marks: &[f64], items: Vec<Node>) -> Result<(String, LineSpan), ContentError> {
    let whole =
        matches!(marks, [a] if *a == 1.0) || matches!(marks, [a, b] if *a == 1.0 && *b == -1.0);
    if !whole {
        return Err(ContentError::bad(
            "a scalar JSON entry takes only <1> or <1,-1> (no implicit promotion to an array)",
        ));
    }
    let mut items = items.into_iter();
    let text =
        match (items.next(), items.next()) {
            (None, _) => "null".to_owned(),
            (Some(item), None) => {
                let mut out = String::new();
                print(&item, 0, &mut out);
                out
            }
            (Some(_), Some(_)) => return Err(ContentError::bad(
                "a scalar JSON entry takes zero or one item (no implicit promotion to an array)",
            )),
        };
    let span = LineSpan::new(1, line_count(&text));
    Ok((text, span))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn edit(current: Option<&str>, marks: Option<&[f64]>, body: &str) -> EditOutcome {
        apply_json_edit(current, marks, body).unwrap_or_else(|e| panic!("{marks:?} {body:?}: {e}"))
    }

    fn compact(s: &str) -> String {
        match serde_json::from_str::<serde_json::Value>(s) {
            Ok(v) => v.to_string(),
            Err(e) => panic!("not JSON: {s:?}: {e}"),
        }
    }

    fn status(r: Result<EditOutcome, ContentError>) -> u16 {
        r.map_or_else(|e| e.status(), |o| o.status)
    }

    const ARR: &str = "[1, 2, 3]";
    const OBJ: &str = r#"{"a": 1, "b": 2, "c": 3}"#;

    /// Every JSON edit rule (PLURNK.md §1.4, plurnk `applyJsonItemEdit`) on an array.
    #[test]
    fn array_edit_rules() {
        let rows: &[(&[f64], &str, &str)] = &[
            (&[-1.0], "4", "[1,2,3,4]"),
            (&[-1.0], "[4, 5]", "[1,2,3,4,5]"),
            (&[0.0], "0", "[0,1,2,3]"),
            (&[2.0], "\"two\"", r#"[1,"two",3]"#),
            (&[2.0], "[20, 21]", "[1,20,21,3]"),
            (&[2.0], r#"{"x": 1}"#, r#"[1,{"x":1},3]"#),
            (&[1.0, 2.0], "9", "[9,3]"),
            (&[2.0], "", "[1,3]"),
            (&[1.0, 2.0], "", "[3]"),
            (&[1.0, -1.0], "", "[]"),
            (&[1.0, -1.0], "[7]", "[7]"),
            (&[1.5], "1.5", "[1,1.5,2,3]"),
            (&[2.0], "[[5]]", "[1,[5],3]"),
        ];
        for (marks, body, want) in rows {
            let o = edit(Some(ARR), Some(marks), body);
            assert_eq!(compact(&o.content), *want, "{marks:?} {body:?}");
            assert_eq!(o.status, 200);
        }
    }

    #[test]
    fn object_edit_rules() {
        let rows: &[(&[f64], &str, &str)] = &[
            (&[-1.0], r#"{"d": 4}"#, r#"{"a":1,"b":2,"c":3,"d":4}"#),
            (&[0.0], r#"{"z": 0}"#, r#"{"z":0,"a":1,"b":2,"c":3}"#),
            (&[2.0], r#"{"B": 20}"#, r#"{"a":1,"B":20,"c":3}"#),
            (
                &[2.0, 3.0],
                r#"[{"x": 1}, {"y": 2}]"#,
                r#"{"a":1,"x":1,"y":2}"#,
            ),
            (&[2.0], "", r#"{"a":1,"c":3}"#),
            (&[1.0, -1.0], "", "{}"),
            // a re-used key keeps its first position, takes the last value
            (&[-1.0], r#"{"a": 9}"#, r#"{"a":9,"b":2,"c":3}"#),
        ];
        for (marks, body, want) in rows {
            let o = edit(Some(OBJ), Some(marks), body);
            // compare in order: serde_json's Map sorts keys, so compare printed text
            let got: String = o.content.split_whitespace().collect();
            let want_ws: String = want.chars().filter(|c| !c.is_whitespace()).collect();
            assert_eq!(got, want_ws, "{marks:?} {body:?}");
        }
    }

    #[test]
    fn object_entry_refuses_non_object_bodies() {
        assert_eq!(status(apply_json_edit(Some(OBJ), Some(&[1.0]), "5")), 400);
        assert_eq!(
            status(apply_json_edit(Some(OBJ), Some(&[-1.0]), "[1]")),
            400
        );
    }

    #[test]
    fn scalar_entry_rules() {
        assert_eq!(edit(Some("5"), Some(&[1.0]), "6").content, "6");
        assert_eq!(edit(Some("5"), Some(&[1.0, -1.0]), "[7]").content, "7");
        assert_eq!(edit(Some("5"), Some(&[1.0]), "").content, "null");
        assert_eq!(
            edit(Some("5"), Some(&[1.0]), r#"{"a":1}"#).content,
            "{\n  \"a\": 1\n}"
        );
        assert_eq!(
            status(apply_json_edit(Some("5"), Some(&[1.0]), "[1, 2]")),
            400
        );
        assert_eq!(status(apply_json_edit(Some("5"), Some(&[-1.0]), "6")), 400);
        assert_eq!(status(apply_json_edit(Some("5"), Some(&[2.0]), "6")), 400);
    }

    #[test]
    fn malformed_body_or_source_is_400() {
        assert_eq!(
            status(apply_json_edit(Some(ARR), Some(&[1.0]), "{nope")),
            400
        );
        assert_eq!(status(apply_json_edit(None, None, "not json")), 400);
        assert_eq!(status(apply_json_edit(Some("[1,"), Some(&[1.0]), "2")), 400);
        assert_eq!(
            status(apply_json_edit(Some(ARR), Some(&[1.0]), "[1,]")),
            400
        );
        assert_eq!(status(apply_json_edit(Some(ARR), Some(&[1.0]), "01")), 400);
        assert_eq!(
            status(apply_json_edit(Some(ARR), Some(&[1.0]), "\"\\x\"")),
            400
        );
        assert_eq!(status(apply_json_edit(Some(ARR), Some(&[1.0]), "1 2")), 400);
    }

    #[test]
    fn out_of_range_is_416() {
        for marks in [
            &[4.0][..],
            &[-2.0],
            &[0.0, 5.0],
            &[3.0, 2.0],
            &[7.5],
            &[1.0, 2.0, 3.0],
        ] {
            assert_eq!(
                status(apply_json_edit(Some(ARR), Some(marks), "1")),
                416,
                "{marks:?}"
            );
        }
        assert_eq!(status(apply_json_edit(Some("[]"), Some(&[1.0]), "1")), 416);
        assert_eq!(
            status(apply_json_edit(Some("{}"), Some(&[1.0, 2.0]), "{}")),
            416
        );
    }

    #[test]
    fn empty_containers_take_appends_and_whole_range() {
        assert_eq!(
            compact(&edit(Some("[]"), Some(&[-1.0]), "1").content),
            "[1]"
        );
        assert_eq!(
            compact(&edit(Some("[]"), Some(&[1.0, -1.0]), "[1,2]").content),
            "[1,2]"
        );
        assert_eq!(
            compact(&edit(Some("{}"), Some(&[0.0]), r#"{"k":1}"#).content),
            r#"{"k":1}"#
        );
    }

    #[test]
    fn empty_body_at_an_insertion_point_is_a_no_op() {
        let o = edit(Some(ARR), Some(&[-1.0]), "");
        assert_eq!((o.content.as_str(), o.status), (ARR, 304));
        assert_eq!(edit(Some(ARR), Some(&[0.0]), "  \n").status, 304);
    }

    #[test]
    fn missing_entry_no_marker_and_empty_content_take_the_body_verbatim() {
        let o = edit(None, Some(&[3.0]), "[1, 2]");
        assert_eq!((o.content.as_str(), o.status), ("[1, 2]", 201));
        let o = edit(Some(ARR), None, r#"{"x": 1}"#);
        assert_eq!((o.content.as_str(), o.status), (r#"{"x": 1}"#, 200));
        assert_eq!(edit(Some(ARR), None, ARR).status, 304);
        assert_eq!(edit(Some(ARR), None, "").content, "");
        assert_eq!(edit(Some(""), Some(&[-1.0]), "[1]").content, "[1]");
    }

    #[test]
    fn output_is_two_space_pretty_and_keeps_source_spelling() {
        let o = edit(
            Some("[1.0, \"\\u00e9\"]\n"),
            Some(&[-1.0]),
            r#"{"k": [true, null]}"#,
        );
        assert_eq!(
            o.content,
            "[\n  1.0,\n  \"\\u00e9\",\n  {\n    \"k\": [\n      true,\n      null\n    ]\n  }\n]\n"
        );
        assert_eq!(o.span, LineSpan::new(4, 9));
    }

    #[test]
    fn edit_span_covers_spliced_items() {
        // [\n 1,\n 2,\n 3\n] → item k is on line k+1
        assert_eq!(
            edit(Some(ARR), Some(&[2.0]), "[20, 21]").span,
            LineSpan::new(3, 4)
        );
        assert_eq!(
            edit(Some(ARR), Some(&[2.0]), "").span,
            LineSpan::empty_at(3)
        );
        assert_eq!(
            edit(Some(OBJ), Some(&[-1.0]), r#"{"d": 4}"#).span,
            LineSpan::new(5, 5)
        );
    }

    #[test]
    fn select_items_table() {
        assert_eq!(
            compact(&select_items(ARR, &[2.0]).unwrap_or_default()),
            "[2]"
        );
        assert_eq!(
            compact(&select_items(ARR, &[2.0, -1.0]).unwrap_or_default()),
            "[2,3]"
        );
        assert_eq!(
            compact(&select_items(ARR, &[0.0]).unwrap_or_default()),
            "[]"
        );
        assert_eq!(
            compact(&select_items(ARR, &[-1.0]).unwrap_or_default()),
            "[]"
        );
        assert_eq!(
            compact(&select_items(OBJ, &[2.0]).unwrap_or_default()),
            r#"[{"b":2}]"#
        );
        assert_eq!(
            compact(&select_items("\"s\"", &[1.0]).unwrap_or_default()),
            r#"["s"]"#
        );
        assert_eq!(
            compact(&select_items("[]", &[1.0, -1.0]).unwrap_or_default()),
            "[]"
        );
        assert_eq!(select_items(ARR, &[4.0]).map_err(|e| e.status()), Err(416));
        assert_eq!(select_items(ARR, &[1.5]).map_err(|e| e.status()), Err(416));
        assert_eq!(select_items("{", &[1.0]).map_err(|e| e.status()), Err(400));
    }

    #[test]
    fn parser_refuses_deep_nesting_without_overflowing() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse(&deep).is_err());
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn parser_keeps_spans_and_decodes_keys() {
        let src = "{\n  \"a\\n\": [1, 2]\n}";
        let root = parse(src).unwrap_or_else(|e| panic!("{e}"));
        let Kind::Object(ms) = &root.kind else {
            panic!("object")
        };
        assert_eq!(ms[0].key, "a\n");
        assert_eq!(&src[ms[0].value.start..ms[0].value.end], "[1, 2]");
        assert_eq!((root.start, root.end), (0, src.len()));
    }

    proptest! {
        #[test]
        fn apply_json_edit_never_panics(
            current in proptest::option::of(prop_oneof![
                Just("[1,2,3]".to_owned()), Just("{\"a\":1}".to_owned()), Just("5".to_owned()),
                Just("[]".to_owned()), "[\\[\\]{}\":,0-9a-z ]{0,20}"]),
            marks in proptest::option::of(proptest::collection::vec(
                prop_oneof![(-3i32..6).prop_map(f64::from), any::<f64>()], 0..4)),
            body in prop_oneof![Just(String::new()), Just("[9]".to_owned()), Just("{\"k\":2}".to_owned()),
                "[\\[\\]{}\":,0-9a-z ]{0,16}"],
        ) {
            if let Ok(o) = apply_json_edit(current.as_deref(), marks.as_deref(), &body) {
                prop_assert!(matches!(o.status, 200 | 201 | 304));
            }
            if let (Some(c), Some(m)) = (&current, &marks) {
                let _ = select_items(c, m);
            }
        }

        #[test]
        fn printed_output_is_valid_json(v in proptest::collection::vec(0i64..100, 0..6), n in -1i32..4) {
            let src = serde_json::to_string(&v).unwrap_or_default();
            if let Ok(o) = apply_json_edit(Some(&src), Some(&[f64::from(n)]), "[\"x\", {\"y\": [1]}]") {
                prop_assert!(serde_json::from_str::<serde_json::Value>(&o.content).is_ok());
            }
        }
    }
}
