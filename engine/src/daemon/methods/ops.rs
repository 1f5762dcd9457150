//! The `op.*` methods (PLURNK.md §4.2): a client's own statements in the attached run.
//!
//! Each ergonomic method (`op.find` … `op.exec`) builds one statement from its params —
//! target, signal (tags, a status, a runtime), `<L>` and body — and renders it with the
//! grammar's renderer, which picks a close suffix the body cannot end early (`EDIT1 …
//! :EDIT1`) and percent-encodes what a target cannot hold; the text must parse back as
//! exactly that one statement, else the params are refused. `op.dispatch` renders a
//! statement AST the same way; `op.parse` takes text as it is. All of them then go to
//! [`Engine::client_ops`](crate::Engine::client_ops): one client turn in the attached run
//! (the envelope creates a session and run first on an unattached connection), whose rows
//! reach every subscriber as `log/entry`. `op.look` goes to
//! [`Engine::look`](crate::Engine::look): READs with no row.
//!
//! **Invariants:** bad params are −32602 and create nothing (params are checked before the
//! envelope attaches); a run busy with a loop is `RUN_BUSY` (−32008), never an interleaved
//! turn; malformed DSL in `op.parse` becomes 400 error rows, never an RPC failure.

use serde_json::{json, Map, Value};

use super::{args, blocking, engine_err, Conn};
use crate::daemon::rpc::RpcError;
use crate::grammar::{
    parse, parse_path, render_statement, Body, LineMarker, Op, Severity, Signal, Statement,
};

/// What the `[signal]` slot of an ergonomic op is built from.
#[derive(Clone, Copy)]
enum SignalFrom {
    /// `tags`: an array of tags.
    Tags,
    /// `status`: an integer status (SEND).
    Status,
    /// `runtime`: an executor name (EXEC).
    Runtime,
}

/// How one ergonomic method maps its params onto a statement.
struct Shape {
    method: &'static str,
    op: Op,
    /// The param holding the target, and whether it is required.
    target: (&'static str, bool),
    /// The param holding the body, and whether it is required.
    body: (&'static str, bool),
    signal: SignalFrom,
    line_range: bool,
}

const FIND: Shape = Shape {
    method: "op.find",
    op: Op::Find,
    target: ("scope", true),
    body: ("matcher", false),
    signal: SignalFrom::Tags,
    line_range: true,
};
const READ: Shape = Shape {
    method: "op.read",
    op: Op::Read,
    target: ("target", true),
    body: ("matcher", false),
    signal: SignalFrom::Tags,
    line_range: true,
};
const EDIT: Shape = Shape {
    method: "op.edit",
    op: Op::Edit,
    target: ("target", true),
    body: ("content", true),
    signal: SignalFrom::Tags,
    line_range: true,
};
const COPY: Shape = Shape {
    method: "op.copy",
    op: Op::Copy,
    target: ("source", true),
    body: ("destination", true),
    signal: SignalFrom::Tags,
    line_range: true,
};
const MOVE: Shape = Shape {
    method: "op.move",
    op: Op::Move,
    target: ("source", true),
    body: ("destination", true),
    signal: SignalFrom::Tags,
    line_range: true,
};
const OPEN: Shape = Shape {
    method: "op.open",
    op: Op::Open,
    target: ("target", true),
    body: ("matcher", false),
    signal: SignalFrom::Tags,
    line_range: true,
};
const FOLD: Shape = Shape {
    method: "op.fold",
    op: Op::Fold,
    target: ("target", true),
    body: ("matcher", false),
    signal: SignalFrom::Tags,
    line_range: true,
};
const SEND: Shape = Shape {
    method: "op.send",
    op: Op::Send,
    target: ("recipient", false),
    body: ("content", false),
    signal: SignalFrom::Status,
    line_range: false,
};
const EXEC: Shape = Shape {
    method: "op.exec",
    op: Op::Exec,
    target: ("cwd", false),
    body: ("command", true),
    signal: SignalFrom::Runtime,
    line_range: true,
};

impl Shape {
    /// The params this method takes.
    fn names(&self) -> Vec<&'static str> {
        let mut n = vec![self.target.0, self.body.0];
        n.push(match self.signal {
            SignalFrom::Tags => "tags",
            SignalFrom::Status => "status",
            SignalFrom::Runtime => "runtime",
        });
        if self.line_range {
            n.push("lineRange");
        }
        n
    }
}

fn bad(shape: &Shape, what: impl std::fmt::Display) -> RpcError {
    RpcError::params(format!("{}: {what}", shape.method))
}

/// A string param: `None` when absent or null; a non-string is refused.
fn string<'a>(
    shape: &Shape,
    p: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, RpcError> {
    match p.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(shape, format_args!("`{name}` must be a string"))),
    }
}

fn tags(shape: &Shape, v: &Value) -> Result<Vec<String>, RpcError> {
    let list = v
        .as_array()
        .ok_or_else(|| bad(shape, "`tags` must be an array of strings"))?;
    list.iter()
        .map(|t| {
            let t = t
                .as_str()
                .ok_or_else(|| bad(shape, "`tags` must be an array of strings"))?;
            if t.is_empty()
                || t.contains([',', ']', '['])
                || t.contains("<<")
                || t.contains(char::is_whitespace)
            {
                return Err(bad(
                    shape,
                    format_args!(
                        "tag {t:?} must be non-empty, without whitespace, commas or brackets"
                    ),
                ));
            }
            Ok(t.to_owned())
        })
        .collect()
}

/// `lineRange`: one number or an array of numbers → `<L>`.
fn line_range(shape: &Shape, v: &Value) -> Result<LineMarker, RpcError> {
    let refuse = || {
        bad(
            shape,
            "`lineRange` must be a number or a non-empty array of numbers",
        )
    };
    let marks: Vec<f64> = match v {
        Value::Number(n) => vec![n.as_f64().ok_or_else(refuse)?],
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .map(|m| m.as_f64().filter(|f| f.is_finite()).ok_or_else(refuse))
            .collect::<Result<_, _>>()?,
        _ => return Err(refuse()),
    };
    Ok(LineMarker { marks })
}

/// The statement an ergonomic method's params describe.
fn statement(shape: &Shape, p: Value) -> Result<Statement, RpcError> {
    let p = match p {
        Value::Null => Map::new(),
        Value::Object(m) => m,
        _ => return Err(bad(shape, "params must be an object of named parameters")),
    };
    let names = shape.names();
    if let Some(k) = p.keys().find(|k| !names.contains(&k.as_str())) {
        return Err(bad(
            shape,
            format_args!("unknown param `{k}` (it takes {})", names.join(", ")),
        ));
    }
    let (tname, trequired) = shape.target;
    let target = match string(shape, &p, tname)? {
        Some(t) => {
            Some(parse_path(t).map_err(|e| bad(shape, format_args!("`{tname}` {t:?}: {e}")))?)
        }
        None if trequired => return Err(bad(shape, format_args!("`{tname}` is required"))),
        None => None,
    };
    let (bname, brequired) = shape.body;
    let body = match string(shape, &p, bname)? {
        Some(b) => b.to_owned(),
        None if brequired => return Err(bad(shape, format_args!("`{bname}` is required"))),
        None => String::new(),
    };
    let signal = match shape.signal {
        SignalFrom::Tags => match p.get("tags") {
            None | Some(Value::Null) => None,
            Some(v) => Some(Signal::Tags(tags(shape, v)?)).filter(|s| s != &Signal::Tags(vec![])),
        },
        SignalFrom::Status => match p.get("status") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_i64() {
                Some(n) if (100..=599).contains(&n) => Some(Signal::Int(n)),
                _ => return Err(bad(shape, "`status` must be an integer from 100 to 599")),
            },
        },
        SignalFrom::Runtime => string(shape, &p, "runtime")?.map(|r| Signal::Name(r.to_owned())),
    };
    let line_marker = match p.get("lineRange") {
        None | Some(Value::Null) => None,
        Some(v) => Some(line_range(shape, v)?),
    };
    Ok(Statement {
        op: shape.op,
        suffix: String::new(),
        signal,
        target,
        line_marker,
        body: Some(Body::Text(body)).filter(|b| !b.raw().is_empty()),
        position: Default::default(),
    })
}

/// Renders `s` and checks that the grammar reads exactly one statement of the same op back.
fn render_checked(s: &Statement, method: &str) -> Result<String, RpcError> {
    let text = render_statement(s);
    let parsed = parse(&text);
    let refuse = |why: String| {
        RpcError::params(format!(
            "{method}: these params do not make a {} statement: {why}",
            s.op
        ))
    };
    if let Some(t) = &parsed.unparsed_tail {
        return Err(refuse(t.reason.clone()));
    }
    if let Some(e) = parsed.errors().find(|e| e.severity == Severity::Error) {
        return Err(refuse(e.message.clone()));
    }
    let mut statements = parsed.statements();
    match (statements.next(), statements.next()) {
        (Some(one), None) if one.op == s.op => Ok(text),
        _ => Err(refuse(format!("it renders as {text:?}"))),
    }
}

/// Runs `text` as one client turn in the attached run → `{results, statement}`.
fn client_turn(conn: &mut Conn<'_>, text: String) -> Result<Value, RpcError> {
    let (sid, rid) = conn.attached_or_create()?;
    let engine = &conn.daemon.engine;
    let results = blocking(|| engine.client_ops(sid, rid, &text)).map_err(engine_err)?;
    Ok(json!({ "results": results, "statement": text, "sessionId": sid, "runId": rid }))
}

fn ergonomic(conn: &mut Conn<'_>, p: Value, shape: &Shape) -> Result<Value, RpcError> {
    let s = statement(shape, p)?;
    let text = render_checked(&s, shape.method)?;
    client_turn(conn, text)
}

/// `op.find`.
pub(super) fn op_find(conn: &mut Conn<'_>, p: Value) -> Result<Value, RpcError> {
    ergonomic(conn, p, &FIND)
}

/// `op.read`.
pub(super) fn op_read(conn: &mut Conn<'_>, p: Value) -> Result<Value, RpcError> {
    ergonomic(conn, p, &READ)
}

/// `op.edit`.
pub(super) fn op_edit(conn: &mut Conn<'_>, p: Value) -> Result<Value, RpcError> {
    ergonomic(conn, p, &EDIT)
}

/// `op.copy`.
pub(super) fn op_copy(conn: &mut Conn<'_>, p: Value) -> Result<Value, RpcError> {
    ergonomic(conn, p, &COPY)
}

/// `op.move`.
pub(super) fn op_move(conn: &mut Conn<'_>, p: Value) -> Result<Value, RpcError> {
    ergonomic(conn, p, &MOVE)
}

/// `op.open`.
pub(super) fn op_open(conn: &mut Conn<'_>, p: Value) -> Result<Value, RpcError> {
    ergonomic(conn, p, &OPEN)
}

/// `op.fold`.
pub(super) fn op_fold(conn: &mut Conn<'_>, p: Value) -> Result<Value, RpcError> {
    ergonomic(conn, p, &FOLD)
}

/// `op.send`.
pub(super) fn op_send(conn: &mut Conn<'_>, p: Value) -> Result<Value, RpcError> {
    ergonomic(conn, p, &SEND)
}

/// `op.exec`.
pub(super) fn op_exec(conn: &mut Conn<'_>, p: Value) -> Result<Value, RpcError> {
    ergonomic(conn, p, &EXEC)
}

#[derive(serde::Deserialize)]
struct DispatchParams {
    statement: Value,
}

/// `op.dispatch {statement}`: the AST, rendered canonically and run as a client turn.
pub(super) fn op_dispatch(conn: &mut Conn<'_>, p: Value) -> Result<Value, RpcError> {
    let p: DispatchParams = args(p)?;
    let s: Statement = serde_json::from_value(p.statement).map_err(|e| {
        RpcError::params(format!(
            "op.dispatch: `statement` is not a statement AST: {e}"
        ))
    })?;
    let text = render_checked(&s, "op.dispatch")?;
    client_turn(conn, text)
}

#[derive(serde::Deserialize)]
struct TextParams {
    text: String,
}

/// `op.parse {text}`: every statement of the text as one client turn; malformed parts are
/// 400 error rows among the results.
pub(super) fn op_parse(conn: &mut Conn<'_>, p: Value) -> Result<Value, RpcError> {
    let p: TextParams = args(p)?;
    if p.text.trim().is_empty() {
        return Err(RpcError::params("op.parse: `text` is empty"));
    }
    let mut v = client_turn(conn, p.text)?;
    if let Value::Object(o) = &mut v {
        o.remove("statement");
    }
    Ok(v)
}

/// `op.look {text}`: READs with no row and no loop.
pub(super) fn op_look(conn: &mut Conn<'_>, p: Value) -> Result<Value, RpcError> {
    let p: TextParams = args(p)?;
    crate::turn::client::check_look(&p.text)
        .map_err(|e| RpcError::params(format!("op.look: {e}")))?;
    let (sid, rid) = conn.attached_or_create()?;
    let engine = &conn.daemon.engine;
    let results = blocking(|| engine.look(sid, rid, &p.text)).map_err(engine_err)?;
    Ok(json!({ "results": results, "sessionId": sid, "runId": rid }))
}
