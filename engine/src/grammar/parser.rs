//! The statement scanner: text → [`ParseResult`].
//!
//! A hand-written byte-level state machine mirroring plurnk's lexer modes
//! (`DEFAULT → OPENED → SIGNAL → PATH → L → BODY`). Openers are found with `memchr`'s
//! substring search for `<<`; bodies are skipped with a `memchr` scan for `:` checked
//! against the exact close literal `:OPsuffix` (which must not be followed by an
//! identifier character, so `:EDIT1` does not close `EDIT`).
//!
//! **Invariants:**
//! - never panics, on any input;
//! - linear time: every scanning primitive starts at or after the point the previous one
//!   stopped (recovery resumes exactly where a header scan gave up), and positions are
//!   computed by a cursor that only moves forward. [`ParseStats::work`] counts every byte
//!   a scan examines so tests can check linearity without timing anything;
//! - at most one error per statement; after a header error, scanning resumes at the next
//!   opener and the skipped bytes are not reported as text;
//! - a statement cut off by the end of input yields an error **and** an
//!   [`UnparsedTail`]; nothing after it is parsed.
//!
//! **API boundary:** [`parse`] and [`parse_with_stats`] only; the state machine is private.

use memchr::{memchr_iter, memmem};

use super::ast::{
    Body, ErrorSource, Item, LineMarker, Op, ParseError, ParseResult, Position, SendBody, Severity,
    Signal, SignalKind, SlotRule, Statement, UnparsedTail,
};
use super::matcher::classify;
use super::target::parse_path;

/// Counters a parse reports about itself; used by tests to check linearity by counting
/// work instead of timing it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParseStats {
    /// Bytes examined by all scanning primitives together (substring searches count the
    /// whole span they searched; the position cursor counts what it walked).
    pub work: u64,
    /// `<<` candidates examined.
    pub openers_examined: u64,
}

/// Parses a statement list (plurnk's `parseStatements`): statements, errors and free text
/// in input order. Never fails; problems become error items.
pub fn parse(text: &str) -> ParseResult {
    parse_with_stats(text).0
}

/// [`parse`], also returning the work counters.
pub fn parse_with_stats(text: &str) -> (ParseResult, ParseStats) {
    let mut p = Parser {
        src: text,
        b: text.as_bytes(),
        items: Vec::new(),
        tail: None,
        cursor: Cursor {
            off: 0,
            line: 1,
            col: 0,
        },
        stats: ParseStats::default(),
        pending_warnings: Vec::new(),
    };
    p.run();
    (
        ParseResult {
            items: p.items,
            unparsed_tail: p.tail,
        },
        p.stats,
    )
}

/// Forward-only offset → (line, column) cursor.
struct Cursor {
    off: usize,
    line: u32,
    col: u32,
}

fn count_chars(s: &[u8]) -> u32 {
    // Count bytes that start a UTF-8 scalar (everything but continuation bytes).
    s.iter().filter(|&&c| (c as i8) >= -0x40).count() as u32
}

/// Why a statement did not produce a statement item.
enum Fail {
    /// Error reported; resume scanning for openers at this offset.
    Recover(usize),
    /// Error reported and the input ended inside the statement: stop.
    Stop,
}

/// A located opener `<<OPsuffix`.
struct Opener {
    start: usize,
    op: Op,
    header: usize,
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

struct Parser<'a> {
    src: &'a str,
    b: &'a [u8],
    items: Vec<Item>,
    tail: Option<UnparsedTail>,
    cursor: Cursor,
    stats: ParseStats,
    pending_warnings: Vec<(usize, String)>,
}

impl Parser<'_> {
    fn pos(&mut self, off: usize) -> Position {
        let off = off.min(self.b.len());
        let c = &mut self.cursor;
        if off < c.off {
            // Not reached by construction; restart rather than report a wrong position.
            *c = Cursor {
                off: 0,
                line: 1,
                col: 0,
            };
        }
        let seg = &self.b[c.off..off];
        self.stats.work += seg.len() as u64;
        let mut last_nl = None;
        let mut n = 0u32;
        for i in memchr_iter(b'\n', seg) {
            n += 1;
            last_nl = Some(i);
        }
        match last_nl {
            Some(i) => {
                c.line += n;
                c.col = count_chars(&seg[i + 1..]);
            }
            None => c.col += count_chars(seg),
        }
        c.off = off;
        Position {
            line: c.line,
            column: c.col,
        }
    }

    fn push_error(&mut self, off: usize, source: ErrorSource, message: String) {
        let p = self.pos(off);
        self.items.push(Item::Error {
            error: ParseError {
                line: p.line,
                column: p.column,
                source,
                severity: Severity::Error,
                message,
            },
        });
    }

    /// Describes what sits at `off` for "got …" messages.
    fn got(&self, off: usize) -> String {
        match self.b.get(off) {
            None => "end of input".to_owned(),
            Some(b'\n') => "newline".to_owned(),
            Some(b'<') if self.b.get(off + 1) == Some(&b'<') => "'<<'".to_owned(),
            Some(_) => match self.src.get(off..).and_then(|s| s.chars().next()) {
                Some(ch) => format!("'{ch}'"),
                None => "an invalid character".to_owned(),
            },
        }
    }

    fn run(&mut self) {
        let len = self.b.len();
        let mut text_from = Some(0usize);
        let mut scan = 0usize;
        loop {
            let opener = self.find_opener(scan);
            let stop = opener.as_ref().map_or(len, |o| o.start);
            match text_from {
                Some(from) => self.flush_text(from, stop),
                None => self.pending_warnings.clear(),
            }
            let Some(o) = opener else { break };
            match self.statement(&o) {
                Ok(end) => {
                    text_from = Some(end);
                    scan = end;
                }
                Err(Fail::Recover(at)) => {
                    text_from = None;
                    scan = at.max(o.start + 2);
                }
                Err(Fail::Stop) => break,
            }
        }
    }

    /// Emits `[from, to)` as a text item when it holds non-whitespace, then any near-miss
    /// warnings found inside it.
    fn flush_text(&mut self, from: usize, to: usize) {
        if from < to {
            let text = &self.src[from..to];
            self.stats.work += text.len() as u64;
            if text.chars().any(|c| !c.is_whitespace()) {
                let position = self.pos(from);
                self.items.push(Item::Text {
                    text: text.to_owned(),
                    position,
                });
            }
        }
        for (off, message) in std::mem::take(&mut self.pending_warnings) {
            let p = self.pos(off);
            self.items.push(Item::Error {
                error: ParseError {
                    line: p.line,
                    column: p.column,
                    source: ErrorSource::Lexer,
                    severity: Severity::Warning,
                    message,
                },
            });
        }
    }

    /// Finds the next `<<OP` at or after `from`, recording near-miss warnings on the way.
    fn find_opener(&mut self, from: usize) -> Option<Opener> {
        let b = self.b;
        let mut at = from;
        while at < b.len() {
            let Some(k) = memmem::find(&b[at..], b"<<") else {
                self.stats.work += (b.len() - at) as u64;
                return None;
            };
            self.stats.work += (k + 2) as u64;
            self.stats.openers_examined += 1;
            let p = at + k;
            if let Some(op) = b.get(p + 2..).and_then(Op::from_keyword) {
                let mut h = p + 6;
                while h < b.len() && is_ident(b[h]) {
                    h += 1;
                }
                self.stats.work += (h - p - 6) as u64;
                return Some(Opener {
                    start: p,
                    op,
                    header: h,
                });
            }
            if let Some(msg) = near_miss(&b[p + 2..]) {
                self.pending_warnings.push((p, msg));
            }
            at = p + 1;
        }
        None
    }

    /// Parses one statement from its opener. `Ok(end)` is the offset after the close tag.
    fn statement(&mut self, o: &Opener) -> Result<usize, Fail> {
        let b = self.b;
        let len = b.len();
        let position = self.pos(o.start);
        let tag = &self.src[o.start + 2..o.header];
        let mut i = o.header;
        // 0 = after the open tag, 1 = after [signal], 2 = after (target), 3 = after <L>.
        let mut state = 0u8;
        let mut signal: Option<(usize, usize)> = None;
        let mut target: Option<(usize, usize)> = None;
        let mut marker: Option<(usize, usize)> = None;
        let slot_names = ["", "signal", "path", "line marker"];
        loop {
            let ws_start = i;
            while i < len && is_ws(b[i]) {
                i += 1;
            }
            self.stats.work += (i - ws_start) as u64;
            if i >= len {
                return Err(self.truncated(
                    position,
                    i,
                    "expected ':' to open the body; got end of input".into(),
                ));
            }
            let c = b[i];
            let order_error = |slot: u8| -> String {
                if slot == state {
                    format!("duplicate {}", slot_names[slot as usize])
                } else {
                    format!(
                        "{} must come before the {}",
                        slot_names[slot as usize], slot_names[state as usize]
                    )
                }
            };
            match c {
                b'[' => {
                    if state >= 1 {
                        self.push_error(i, ErrorSource::Parser, order_error(1));
                        return Err(Fail::Recover(i));
                    }
                    let (start, end) = self.scan_signal(i, position)?;
                    signal = Some((start, end));
                    i = end + 1;
                    state = 1;
                }
                b'(' => {
                    if state >= 2 {
                        self.push_error(i, ErrorSource::Parser, order_error(2));
                        return Err(Fail::Recover(i));
                    }
                    let (start, end) = self.scan_target(i, position)?;
                    target = Some((start, end));
                    i = end + 1;
                    state = 2;
                }
                b'<' if b.get(i + 1) != Some(&b'<') => {
                    if state >= 3 {
                        self.push_error(i, ErrorSource::Parser, order_error(3));
                        return Err(Fail::Recover(i));
                    }
                    let (start, end) = self.scan_marker(i, position)?;
                    marker = Some((start, end));
                    i = end + 1;
                    state = 3;
                }
                b':' => {
                    i += 1;
                    break;
                }
                _ => {
                    let expected = [
                        "'[', '(', '<' or ':'",
                        "'(', '<' or ':'",
                        "'<' or ':'",
                        "':'",
                    ][state as usize];
                    let after = match state {
                        0 => format!("<<{tag}"),
                        s => format!("the {}", slot_names[s as usize]),
                    };
                    let msg = format!("expected {expected} after {after}; got {}", self.got(i));
                    self.push_error(i, ErrorSource::Parser, msg);
                    return Err(Fail::Recover(i));
                }
            }
        }

        // Body: up to the exact close literal `:OPsuffix` not followed by an ident char.
        let body_start = i;
        let close_len = 1 + tag.len();
        let Some(body_end) = self.find_close(body_start, tag.as_bytes()) else {
            let msg = format!("expected close tag ':{tag}'; got end of input");
            return Err(self.truncated(position, len, msg));
        };
        let end = body_end + close_len;
        let ctx = Slots {
            op: o.op,
            suffix: &tag[4..],
            position,
            start: o.start,
            signal,
            target,
            marker,
            body: (body_start, body_end),
        };
        match self.build(ctx) {
            Ok(statement) => {
                self.items.push(Item::Statement { statement });
                Ok(end)
            }
            Err((off, msg)) => {
                self.push_error(off, ErrorSource::Visitor, msg);
                Ok(end)
            }
        }
    }

    /// Reports a statement cut off by the end of input and records the unparsed tail.
    fn truncated(&mut self, from: Position, at: usize, message: String) -> Fail {
        let source = if message.contains("close tag") || message.contains("to close") {
            ErrorSource::Lexer
        } else {
            ErrorSource::Parser
        };
        self.push_error(at, source, message.clone());
        self.tail = Some(UnparsedTail {
            from,
            reason: message,
        });
        Fail::Stop
    }

    /// Offset of the close literal's `:`, or `None` at end of input.
    fn find_close(&mut self, from: usize, tag: &[u8]) -> Option<usize> {
        let b = self.b;
        let hay = &b[from..];
        let followed_ok = |k: usize| {
            let after = from + k + 1 + tag.len();
            after >= b.len() || !is_ident(b[after])
        };
        if tag.len() <= 16 {
            for k in memchr_iter(b':', hay) {
                self.stats.work += 1 + tag.len() as u64;
                if hay.get(k + 1..k + 1 + tag.len()) == Some(tag) && followed_ok(k) {
                    self.stats.work += k as u64;
                    return Some(from + k);
                }
            }
        } else {
            let mut needle = Vec::with_capacity(tag.len() + 1);
            needle.push(b':');
            needle.extend_from_slice(tag);
            for k in memmem::find_iter(hay, &needle) {
                if followed_ok(k) {
                    self.stats.work += (k + needle.len()) as u64;
                    return Some(from + k);
                }
            }
        }
        self.stats.work += hay.len() as u64;
        None
    }

    /// Scans `[ … ]` starting at the `[`; returns the content span.
    fn scan_signal(&mut self, open: usize, stmt: Position) -> Result<(usize, usize), Fail> {
        let b = self.b;
        let mut j = open + 1;
        while j < b.len() {
            match b[j] {
                b']' => {
                    self.stats.work += (j - open) as u64;
                    return Ok((open + 1, j));
                }
                b'\n' => {
                    self.push_error(
                        j,
                        ErrorSource::Lexer,
                        "expected ']' to close the signal; got newline".into(),
                    );
                    return Err(Fail::Recover(j));
                }
                b'<' if b.get(j + 1) == Some(&b'<') => {
                    self.push_error(
                        j,
                        ErrorSource::Lexer,
                        "unrecognized character '<<' in signal".into(),
                    );
                    return Err(Fail::Recover(j));
                }
                _ => j += 1,
            }
        }
        self.stats.work += (j - open) as u64;
        Err(self.truncated(
            stmt,
            j,
            "expected ']' to close the signal; got end of input".into(),
        ))
    }

    /// Scans `( … )` starting at the `(`; a leading `#` makes a regex unit that may
    /// contain `)`. Returns the content span.
    fn scan_target(&mut self, open: usize, stmt: Position) -> Result<(usize, usize), Fail> {
        let b = self.b;
        let mut j = open + 1;
        let bad_ltlt = |j: usize| b[j] == b'<' && b.get(j + 1) == Some(&b'<');
        if b.get(j) == Some(&b'#') {
            j += 1;
            let closed = loop {
                if j >= b.len() {
                    break false;
                }
                match b[j] {
                    b'\\' if b.get(j + 1).is_some_and(|&c| c != b'\n') => j += 2,
                    b'#' => break true,
                    b'\n' => {
                        let msg = "expected '#' to close the regex path; got newline".into();
                        self.push_error(j, ErrorSource::Lexer, msg);
                        return Err(Fail::Recover(j));
                    }
                    _ if bad_ltlt(j) => {
                        self.push_error(
                            j,
                            ErrorSource::Lexer,
                            "unrecognized character '<<' in path".into(),
                        );
                        return Err(Fail::Recover(j));
                    }
                    _ => j += 1,
                }
            };
            if !closed {
                self.stats.work += (b.len() - open) as u64;
                let msg = "expected '#' to close the regex path; got end of input".into();
                return Err(self.truncated(stmt, b.len(), msg));
            }
            j += 1;
            while j < b.len() && b[j].is_ascii_alphabetic() {
                j += 1;
            }
            self.stats.work += (j - open) as u64;
            if j >= b.len() {
                let msg = "expected ')' to close the path; got end of input".into();
                return Err(self.truncated(stmt, j, msg));
            }
            if b[j] != b')' {
                let msg = format!("expected ')' after the regex path; got {}", self.got(j));
                self.push_error(j, ErrorSource::Parser, msg);
                return Err(Fail::Recover(j));
            }
            return Ok((open + 1, j));
        }
        while j < b.len() {
            match b[j] {
                b')' => {
                    self.stats.work += (j - open) as u64;
                    return Ok((open + 1, j));
                }
                b'\n' => {
                    self.push_error(
                        j,
                        ErrorSource::Lexer,
                        "expected ')' to close the path; got newline".into(),
                    );
                    return Err(Fail::Recover(j));
                }
                _ if bad_ltlt(j) => {
                    self.push_error(
                        j,
                        ErrorSource::Lexer,
                        "unrecognized character '<<' in path".into(),
                    );
                    return Err(Fail::Recover(j));
                }
                _ => j += 1,
            }
        }
        self.stats.work += (j - open) as u64;
        Err(self.truncated(
            stmt,
            j,
            "expected ')' to close the path; got end of input".into(),
        ))
    }

    /// Scans `< … >` starting at the `<`; returns the content span.
    fn scan_marker(&mut self, open: usize, stmt: Position) -> Result<(usize, usize), Fail> {
        let b = self.b;
        let mut j = open + 1;
        while j < b.len() {
            match b[j] {
                b'>' => {
                    self.stats.work += (j - open) as u64;
                    return Ok((open + 1, j));
                }
                b'\n' | b'<' => {
                    let msg = if b[j] == b'<' && b.get(j + 1) == Some(&b'<') {
                        "unrecognized character '<<' in line marker".to_owned()
                    } else {
                        format!("expected '>' to close the line marker; got {}", self.got(j))
                    };
                    self.push_error(j, ErrorSource::Lexer, msg);
                    return Err(Fail::Recover(j));
                }
                _ => j += 1,
            }
        }
        self.stats.work += (j - open) as u64;
        Err(self.truncated(
            stmt,
            j,
            "expected '>' to close the line marker; got end of input".into(),
        ))
    }

    /// Visitor stage: per-op coercion and slot rules. `Err((offset, message))`.
    fn build(&mut self, s: Slots<'_>) -> Result<Statement, (usize, String)> {
        let src = self.src;
        let op = s.op;
        let text = |(a, b): (usize, usize)| &src[a..b];

        let signal = match s.signal {
            None => None,
            Some(span) => coerce_signal(op, text(span)).map_err(|m| (span.0 - 1, m))?,
        };

        let target = match (s.target, op.target_rule()) {
            (None, SlotRule::Required) => return Err((s.start, format!("{op} requires a path"))),
            (Some(span), SlotRule::Forbidden) => {
                return Err((span.0 - 1, format!("{op} takes no path")))
            }
            (None, _) => None,
            (Some(span), _) => {
                Some(parse_path(text(span)).map_err(|e| (span.0 - 1, e.to_string()))?)
            }
        };

        let line_marker = match s.marker {
            None => None,
            Some(span) if !op.accepts_marker() => {
                return Err((span.0 - 1, format!("{op} takes no line marker")))
            }
            Some(span) => {
                let raw = text(span);
                let marks = parse_marks(raw)
                    .ok_or_else(|| (span.0 - 1, format!("malformed line marker '<{raw}>'")))?;
                Some(LineMarker { marks })
            }
        };

        let raw_body = text(s.body);
        let body = if raw_body.is_empty() {
            None
        } else if op.is_matcher() {
            Some(Body::Matcher(classify(raw_body)))
        } else if op == Op::Move {
            let p = parse_path(raw_body)
                .map_err(|e| (s.body.0, format!("invalid destination: {e}")))?;
            Some(Body::Path(p))
        } else if op == Op::Send {
            Some(Body::Send(SendBody {
                raw: raw_body.to_owned(),
                json: best_effort_json(raw_body),
            }))
        } else {
            Some(Body::Text(raw_body.to_owned()))
        };

        Ok(Statement {
            op,
            suffix: s.suffix.to_owned(),
            signal,
            target,
            line_marker,
            body,
            position: s.position,
        })
    }
}

/// Spans of one delimited statement, handed to the visitor stage.
struct Slots<'s> {
    op: Op,
    suffix: &'s str,
    position: Position,
    start: usize,
    signal: Option<(usize, usize)>,
    target: Option<(usize, usize)>,
    marker: Option<(usize, usize)>,
    body: (usize, usize),
}

/// Coerces signal text per op (PLURNK.md §1.1).
pub(crate) fn coerce_signal(op: Op, raw: &str) -> Result<Option<Signal>, String> {
    let parts = || {
        raw.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|p| !p.is_empty())
    };
    match op.signal_kind() {
        SignalKind::Tags => Ok(Some(Signal::Tags(parts().map(str::to_owned).collect()))),
        SignalKind::None => Err(format!("{op} takes no signal")),
        SignalKind::Integer => {
            let n = parts().count();
            if n == 0 {
                return Ok(None);
            }
            if n > 1 {
                return Err(format!(
                    "{op} signal must be a single integer; got {n} values"
                ));
            }
            let t = raw.trim();
            let digits = t.strip_prefix('-').unwrap_or(t);
            match t.parse::<i64>() {
                Ok(v) if !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()) => {
                    Ok(Some(Signal::Int(v)))
                }
                _ => Err(format!("{op} signal must be an integer; got \"{t}\"")),
            }
        }
        SignalKind::Executor => {
            let n = parts().count();
            if n == 0 {
                return Ok(None);
            }
            if n > 1 {
                return Err(format!(
                    "{op} signal must be a single executor name; got {n} values"
                ));
            }
            let t = raw.trim();
            let mut bytes = t.bytes();
            let ok = bytes
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
                && bytes
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-' | b'+'));
            if ok {
                Ok(Some(Signal::Name(t.to_owned())))
            } else {
                Err(format!("{op} signal must be an executor name; got \"{t}\""))
            }
        }
    }
}

/// Parses marker content `NUM ((',' ' '? | '-') NUM)*`, NUM = `-?\d+(\.\d+)?`.
pub(crate) fn parse_marks(raw: &str) -> Option<Vec<f64>> {
    let b = raw.as_bytes();
    let mut marks = Vec::new();
    let mut i = 0;
    loop {
        let start = i;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        let d0 = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == d0 {
            return None;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            let f0 = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i == f0 {
                return None;
            }
        }
        marks.push(raw[start..i].parse::<f64>().ok()?);
        match b.get(i) {
            None => return Some(marks),
            Some(b',') => {
                i += 1;
                if b.get(i) == Some(&b' ') {
                    i += 1;
                }
            }
            Some(b'-') => i += 1,
            Some(_) => return None,
        }
    }
}

/// Parses a SEND body as JSON when it looks like JSON; `None` otherwise.
fn best_effort_json(raw: &str) -> Option<serde_json::Value> {
    let first = raw.trim_start().bytes().next()?;
    if matches!(
        first,
        b'{' | b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n'
    ) {
        serde_json::from_str(raw)
            .ok()
            .filter(|v: &serde_json::Value| !v.is_null())
    } else {
        None
    }
}

/// Common wrong op names models emit, mapped to the op they meant.
const ALIASES: [(&str, Op); 34] = [
    ("CLOSE", Op::Fold),
    ("COLLAPSE", Op::Fold),
    ("HIDE", Op::Fold),
    ("SHOW", Op::Open),
    ("EXPAND", Op::Open),
    ("UNFOLD", Op::Open),
    ("DELETE", Op::Kill),
    ("REMOVE", Op::Kill),
    ("RM", Op::Kill),
    ("STOP", Op::Kill),
    ("WRITE", Op::Edit),
    ("CREATE", Op::Edit),
    ("UPDATE", Op::Edit),
    ("APPEND", Op::Edit),
    ("PATCH", Op::Edit),
    ("RUN", Op::Exec),
    ("SHELL", Op::Exec),
    ("BASH", Op::Exec),
    ("SEARCH", Op::Find),
    ("GREP", Op::Find),
    ("LIST", Op::Find),
    ("CAT", Op::Read),
    ("VIEW", Op::Read),
    ("GET", Op::Read),
    ("RENAME", Op::Move),
    ("MV", Op::Move),
    ("CP", Op::Copy),
    ("REPLY", Op::Send),
    ("DONE", Op::Send),
    ("THINK", Op::Plan),
    ("REASON", Op::Plan),
    ("SPAWN", Op::Work),
    ("BRANCH", Op::Fork),
    ("ANSWER", Op::Send),
];

/// An advisory for `<<WORD` that is not an op but looks like one was meant.
fn near_miss(after: &[u8]) -> Option<String> {
    let n = after
        .iter()
        .take(11)
        .take_while(|c| c.is_ascii_alphabetic())
        .count();
    if !(2..=10).contains(&n) {
        return None;
    }
    let word = std::str::from_utf8(&after[..n]).ok()?;
    let upper = word.to_ascii_uppercase();
    let suggest = Op::from_keyword(upper.as_bytes())
        .filter(|_| n == 4)
        .or_else(|| ALIASES.iter().find(|(w, _)| *w == upper).map(|(_, op)| *op))
        .or_else(|| {
            Op::ALL
                .into_iter()
                .find(|op| one_edit(upper.as_bytes(), op.keyword().as_bytes()))
        })?;
    Some(format!(
        "unknown operation '<<{word}'; did you mean {suggest}?"
    ))
}

/// One substitution or one adjacent transposition away from `op` (same length only, to
/// keep shell heredocs like `<<END` quiet).
fn one_edit(w: &[u8], op: &[u8]) -> bool {
    if w.len() != op.len() {
        return false;
    }
    let mut diff = (0..w.len()).filter(|&i| w[i] != op[i]);
    match (diff.next(), diff.next(), diff.next()) {
        (Some(_), None, _) => true,
        (Some(a), Some(b), None) => b == a + 1 && w[a] == op[b] && w[b] == op[a],
        _ => false,
    }
}
