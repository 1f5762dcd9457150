//! The statement AST and the parse-result shape, with serde JSON that matches plurnk's
//! statement record (`op, suffix, signal, target, lineMarker {marks}, body, position`).
//!
//! **Invariant:** every value here is plain owned data; nothing borrows from the input,
//! so a [`ParseResult`] outlives the text it came from and can be stored or sent anywhere.
//!
//! **API boundary:** the JSON field names and shapes are the wire contract (they end up in
//! log rows as `tx`); Rust field names follow Rust conventions and are renamed by serde.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An operation keyword. The E2 set plus `WORK` and `FORK` (grammar 0.74.55+).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Op {
    /// Reasoning text; every turn starts with one. Not counted as an action.
    #[serde(rename = "PLAN")]
    Plan,
    /// Catalog / content search.
    #[serde(rename = "FIND")]
    Find,
    /// Read channel content.
    #[serde(rename = "READ")]
    Read,
    /// Write or patch an entry.
    #[serde(rename = "EDIT")]
    Edit,
    /// Copy an entry (or, mid E2, fork a run).
    #[serde(rename = "COPY")]
    Copy,
    /// Move an entry.
    #[serde(rename = "MOVE")]
    Move,
    /// Expand folded log rows.
    #[serde(rename = "OPEN")]
    Open,
    /// Collapse log rows.
    #[serde(rename = "FOLD")]
    Fold,
    /// Run a command through an executor.
    #[serde(rename = "EXEC")]
    Exec,
    /// Delete an entry, kill a stream or a run.
    #[serde(rename = "KILL")]
    Kill,
    /// Loop disposition (no target) or a directed message.
    #[serde(rename = "SEND")]
    Send,
    /// Spawn a fresh worker run.
    #[serde(rename = "WORK")]
    Work,
    /// Branch the current run's log into a new run.
    #[serde(rename = "FORK")]
    Fork,
}

impl Op {
    /// Every op, in catalogue order.
    pub const ALL: [Op; 13] = [
        Op::Plan,
        Op::Find,
        Op::Read,
        Op::Edit,
        Op::Copy,
        Op::Move,
        Op::Open,
        Op::Fold,
        Op::Exec,
        Op::Kill,
        Op::Send,
        Op::Work,
        Op::Fork,
    ];

    /// The keyword as written after `<<`.
    pub const fn keyword(self) -> &'static str {
        match self {
            Op::Plan => "PLAN",
            Op::Find => "FIND",
            Op::Read => "READ",
            Op::Edit => "EDIT",
            Op::Copy => "COPY",
            Op::Move => "MOVE",
            Op::Open => "OPEN",
            Op::Fold => "FOLD",
            Op::Exec => "EXEC",
            Op::Kill => "KILL",
            Op::Send => "SEND",
            Op::Work => "WORK",
            Op::Fork => "FORK",
        }
    }

    /// Recognises a keyword from its four bytes (every keyword is four ASCII capitals).
    pub fn from_keyword(bytes: &[u8]) -> Option<Op> {
        let k: &[u8; 4] = bytes.get(..4)?.try_into().ok()?;
        Some(match k {
            b"PLAN" => Op::Plan,
            b"FIND" => Op::Find,
            b"READ" => Op::Read,
            b"EDIT" => Op::Edit,
            b"COPY" => Op::Copy,
            b"MOVE" => Op::Move,
            b"OPEN" => Op::Open,
            b"FOLD" => Op::Fold,
            b"EXEC" => Op::Exec,
            b"KILL" => Op::Kill,
            b"SEND" => Op::Send,
            b"WORK" => Op::Work,
            b"FORK" => Op::Fork,
            _ => return None,
        })
    }

    /// Whether the body is a matcher (FIND, READ, OPEN, FOLD).
    pub const fn is_matcher(self) -> bool {
        matches!(self, Op::Find | Op::Read | Op::Open | Op::Fold)
    }

    /// How this op's `[signal]` slot is coerced.
    pub const fn signal_kind(self) -> SignalKind {
        match self {
            Op::Send | Op::Kill => SignalKind::Integer,
            Op::Exec => SignalKind::Executor,
            Op::Work | Op::Fork => SignalKind::None,
            _ => SignalKind::Tags,
        }
    }

    /// Whether `(target)` is required, optional or forbidden.
    pub const fn target_rule(self) -> SlotRule {
        match self {
            Op::Plan => SlotRule::Forbidden,
            Op::Send | Op::Exec => SlotRule::Optional,
            _ => SlotRule::Required,
        }
    }

    /// Whether `<L>` is accepted (EXEC reuses it as `<T,P>`, SEND as the `<T>` park).
    pub const fn accepts_marker(self) -> bool {
        !matches!(self, Op::Plan | Op::Kill | Op::Work | Op::Fork)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.keyword())
    }
}

/// How an op's `[signal]` content is coerced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalKind {
    /// CSV tags; whitespace and stray commas tolerated; `[]` is an empty list.
    Tags,
    /// One signed integer (HTTP status for SEND, unix signal for KILL); `[]` is null.
    Integer,
    /// One executor name (EXEC); `[]` is null.
    Executor,
    /// The op takes no signal.
    None,
}

/// Whether a slot is required, optional or forbidden for an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRule {
    /// Must be present.
    Required,
    /// May be present.
    Optional,
    /// Must be absent.
    Forbidden,
}

/// Where something starts: line is 1-based, column is 0-based and counts Unicode scalar
/// values (the ANTLR convention plurnk reports).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Position {
    /// 1-based line.
    pub line: u32,
    /// 0-based column in characters.
    pub column: u32,
}

/// The `[signal]` slot after per-op coercion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Signal {
    /// Tag list (FIND READ EDIT COPY MOVE OPEN FOLD PLAN).
    Tags(Vec<String>),
    /// Integer (SEND status, KILL unix signal).
    Int(i64),
    /// Executor name (EXEC).
    Name(String),
}

/// The `<L>` slot: a list of numbers (`<1,-1>` → `[1, -1]`, `<0.7,1,10>` → `[0.7, 1, 10]`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LineMarker {
    /// The numbers in order; integral values serialize as JSON integers.
    #[serde(serialize_with = "ser_marks")]
    pub marks: Vec<f64>,
}

fn ser_marks<S: Serializer>(marks: &[f64], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(marks.len()))?;
    for &m in marks {
        if m.fract() == 0.0 && m.abs() < 9.0e15 && !(m == 0.0 && m.is_sign_negative()) {
            seq.serialize_element(&(m as i64))?;
        } else {
            seq.serialize_element(&m)?;
        }
    }
    seq.end()
}

/// Formats a mark the way it is written in a marker (`1`, `-1`, `2.5`).
pub fn format_mark(m: f64) -> String {
    if m.fract() == 0.0 && m.abs() < 9.0e15 && !(m == 0.0 && m.is_sign_negative()) {
        format!("{}", m as i64)
    } else {
        format!("{m}")
    }
}

/// A query-string value: one value, or several when the key repeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum QueryValue {
    /// The key appeared once.
    One(String),
    /// The key appeared several times, in order.
    Many(Vec<String>),
}

/// A parsed `(target)` (and the MOVE destination body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ParsedPath {
    /// A bare local path (no `scheme://`), resolved as `file` at runtime.
    Local {
        /// The text as written (`%29` stays encoded).
        raw: String,
    },
    /// A `scheme://…` URL decomposed WHATWG-style.
    Url {
        /// The text as written.
        raw: String,
        /// Lower-cased scheme without `://`.
        scheme: String,
        /// Userinfo name (authority schemes only).
        username: Option<String>,
        /// Userinfo password (authority schemes only).
        password: Option<String>,
        /// Host (authority schemes only; lower-cased).
        hostname: Option<String>,
        /// Explicit non-default port (authority schemes only).
        port: Option<u16>,
        /// Path part, before `?` and `#`; still percent-encoded.
        pathname: String,
        /// Query parameters (`+` and `%XX` decoded); empty when there is no query.
        search: BTreeMap<String, QueryValue>,
        /// Fragment without `#`: the channel (`sh:///1/2/3#stderr` → `stderr`).
        fragment: Option<String>,
    },
    /// A path-name regex target `#pattern#flags`.
    Regex {
        /// The text as written, `#…#flags` included.
        raw: String,
        /// The pattern between the hashes (`\#` kept as written).
        pattern: String,
        /// ECMAScript flags (`[igmsu]*`).
        flags: String,
    },
}

impl ParsedPath {
    /// The text as written.
    pub fn raw(&self) -> &str {
        match self {
            ParsedPath::Local { raw }
            | ParsedPath::Url { raw, .. }
            | ParsedPath::Regex { raw, .. } => raw,
        }
    }

    /// The scheme, `None` for local and regex targets.
    pub fn scheme(&self) -> Option<&str> {
        match self {
            ParsedPath::Url { scheme, .. } => Some(scheme),
            _ => None,
        }
    }

    /// The pathname a consumer addresses: the URL pathname or the local raw with `%28`/`%29`
    /// decoded; a regex target's raw source untouched (its parens are syntax).
    pub fn decoded_pathname(&self) -> String {
        match self {
            ParsedPath::Regex { raw, .. } => raw.clone(),
            ParsedPath::Url { pathname, .. } => super::target::decode_path_parens(pathname),
            ParsedPath::Local { raw } => super::target::decode_path_parens(raw),
        }
    }
}

/// Matcher dialect, chosen by the body's first characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// `//…` XPath 1.0.
    Xpath,
    /// `#pattern#flags`.
    Regex,
    /// `$…` JSONPath.
    Jsonpath,
    /// `~query` semantic search.
    Semantic,
    /// `@sym`, `@<sym`, `@>sym` code graph.
    Graph,
    /// Anything else (and any body that fails its indicated dialect).
    Glob,
}

/// A matcher body (FIND, READ, OPEN, FOLD).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatcherBody {
    /// The detected dialect.
    pub dialect: Dialect,
    /// The body as written.
    pub raw: String,
    /// Regex pattern (regex dialect only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Regex flags (regex dialect only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<String>,
}

/// A SEND body: the raw text plus a best-effort JSON parse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendBody {
    /// The body as written.
    pub raw: String,
    /// `raw` parsed as JSON, or null when it is not JSON.
    pub json: Option<serde_json::Value>,
}

/// A statement body, typed per op (PLURNK.md §1.4).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Body {
    /// EDIT, EXEC, KILL, PLAN, COPY, WORK, FORK: opaque text.
    Text(String),
    /// FIND, READ, OPEN, FOLD.
    Matcher(MatcherBody),
    /// MOVE: the destination.
    Path(ParsedPath),
    /// SEND.
    Send(SendBody),
}

impl Body {
    /// The body text exactly as it appears between `:` and the close tag.
    pub fn raw(&self) -> &str {
        match self {
            Body::Text(t) => t,
            Body::Matcher(m) => &m.raw,
            Body::Path(p) => p.raw(),
            Body::Send(s) => &s.raw,
        }
    }
}

/// One parsed statement `<<OPsuffix[signal](target)<L>:body:OPsuffix`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Statement {
    /// The op keyword.
    pub op: Op,
    /// The suffix glued to the op (`EDIT1` → `"1"`), empty when absent.
    pub suffix: String,
    /// The coerced signal, `None` when the slot is absent (or `[]` for SEND/EXEC/KILL).
    pub signal: Option<Signal>,
    /// The parsed target, `None` when absent.
    pub target: Option<ParsedPath>,
    /// The `<L>` marker, `None` when absent.
    pub line_marker: Option<LineMarker>,
    /// The typed body, `None` for an empty body (`::`).
    pub body: Option<Body>,
    /// Where the `<<` opener is.
    pub position: Position,
}

impl Statement {
    /// The raw body text, `""` when empty.
    pub fn body_raw(&self) -> &str {
        self.body.as_ref().map_or("", Body::raw)
    }

    /// The integer signal (SEND status / KILL signal), if any.
    pub fn signal_int(&self) -> Option<i64> {
        match self.signal {
            Some(Signal::Int(n)) => Some(n),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawStatement {
    op: Op,
    #[serde(default)]
    suffix: String,
    #[serde(default)]
    signal: Option<Signal>,
    #[serde(default)]
    target: Option<ParsedPath>,
    #[serde(default)]
    line_marker: Option<LineMarker>,
    #[serde(default)]
    body: Option<serde_json::Value>,
    #[serde(default)]
    position: Position,
}

impl<'de> Deserialize<'de> for Statement {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let raw = RawStatement::deserialize(d)?;
        // The body's JSON shape depends on the op, so it is decoded after the op is known.
        let body = match raw.body {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(if raw.op.is_matcher() {
                Body::Matcher(serde_json::from_value(v).map_err(D::Error::custom)?)
            } else if raw.op == Op::Move {
                Body::Path(serde_json::from_value(v).map_err(D::Error::custom)?)
            } else if raw.op == Op::Send {
                Body::Send(serde_json::from_value(v).map_err(D::Error::custom)?)
            } else {
                Body::Text(serde_json::from_value(v).map_err(D::Error::custom)?)
            }),
        };
        Ok(Statement {
            op: raw.op,
            suffix: raw.suffix,
            signal: raw.signal,
            target: raw.target,
            line_marker: raw.line_marker,
            body,
            position: raw.position,
        })
    }
}

/// Which stage found an error (plurnk's vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorSource {
    /// Character level: a forbidden character, end of input inside a slot or body.
    Lexer,
    /// Structure: slot order, missing `:`, unexpected characters in the header.
    Parser,
    /// Meaning: per-op slot rules, coercion, URL decomposition.
    Visitor,
}

/// How bad an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The statement was not produced.
    Error,
    /// Advisory only (near-miss op names); the text is kept.
    Warning,
}

/// A parse error or warning, positioned where the problem was detected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParseError {
    /// 1-based line.
    pub line: u32,
    /// 0-based column.
    pub column: u32,
    /// Which stage found it.
    pub source: ErrorSource,
    /// Error or warning.
    pub severity: Severity,
    /// Protocol-vocabulary message.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

// `source` is plurnk's field name (lexer/parser/visitor), not an error cause.
impl std::error::Error for ParseError {}

impl ParseError {
    /// The error's position.
    pub fn position(&self) -> Position {
        Position {
            line: self.line,
            column: self.column,
        }
    }
}

/// One item of a parse result, in input order.
// Statements dominate a parse result; boxing them would cost an allocation per statement
// to shrink the rare error and text items.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Item {
    /// A well-formed statement.
    Statement {
        /// The statement.
        statement: Statement,
    },
    /// A malformed statement (at most one per statement) or a warning.
    Error {
        /// The error.
        error: ParseError,
    },
    /// Free text between statements (only runs containing non-whitespace are kept).
    Text {
        /// The text as written.
        text: String,
        /// Where it starts.
        position: Position,
    },
}

/// Where parsing stopped early: the input ended inside a statement. Nothing from `from`
/// on may be executed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnparsedTail {
    /// The opener of the truncated statement.
    pub from: Position,
    /// Why (the same message as the error item).
    pub reason: String,
}

/// The result of [`parse`](super::parse): items in order plus an optional unparsed tail.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParseResult {
    /// Statements, errors and text in input order.
    pub items: Vec<Item>,
    /// Set when the input ended inside a statement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unparsed_tail: Option<UnparsedTail>,
}

impl ParseResult {
    /// The statements, in order.
    pub fn statements(&self) -> impl Iterator<Item = &Statement> {
        self.items.iter().filter_map(|i| match i {
            Item::Statement { statement } => Some(statement),
            _ => None,
        })
    }

    /// Errors and warnings, in order.
    pub fn errors(&self) -> impl Iterator<Item = &ParseError> {
        self.items.iter().filter_map(|i| match i {
            Item::Error { error } => Some(error),
            _ => None,
        })
    }

    /// Whether any error-severity item or an unparsed tail is present (warnings don't count).
    pub fn has_errors(&self) -> bool {
        self.unparsed_tail.is_some() || self.errors().any(|e| e.severity == Severity::Error)
    }
}
