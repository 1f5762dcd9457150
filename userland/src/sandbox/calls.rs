//! The sandbox's syscall table: a guest's syscall name and JSON arguments mapped onto
//! [`Syscalls`], and the results mapped back to JSON.
//!
//! Values cross as JSON: integers that fit `u64` become `U64`, other integers `I64`, other
//! numbers `F64`, arrays `List`, objects `Map` (keys sorted: JSON objects are unordered, and
//! a map written out with duplicate keys keeps the last). On the way out, bytes that
//! are UTF-8 become a string and other bytes an array of numbers, a non-finite float is
//! `null`, and values nested deeper than [`MAX_DEPTH`] are cut to `null`, so a hostile message
//! cannot exhaust the guest's host stack.

use agentos_abi::{
    Body, Budget, CapRef, ExitReason, LogLevel, Message, RememberOpts, SegId, Segment, SendOpts,
    SysMsg, Syscalls, Usage, Value,
};
use serde_json::{Map, Number, Value as Json};

/// Values nested deeper than this are written as `null`.
pub(crate) const MAX_DEPTH: usize = 64;

/// `recall`'s `k` when the guest names none.
const DEFAULT_RECALL_K: usize = 5;

/// What a syscall came to.
pub(crate) enum Outcome {
    /// It ran; its result.
    Done(Json),
    /// It ran and failed; the message.
    Failed(String),
    /// Its arguments were not the shape it takes.
    BadArgs(String),
    /// No syscall has this name.
    Unknown,
    /// The guest asked to end the process.
    Exit(ExitReason),
}

/// Run syscall `name` with `args` on `sys`. `proc_args` are the process's spawn args.
pub(crate) async fn dispatch<S: Syscalls>(
    sys: &S,
    proc_args: &Value,
    name: &str,
    args: Json,
) -> Outcome {
    match run(sys, proc_args, name, &args).await {
        Ok(out) => out,
        Err(Bad(msg)) => Outcome::BadArgs(msg),
    }
}

/// Arguments of the wrong shape.
struct Bad(String);

fn done(j: impl Into<Json>) -> Result<Outcome, Bad> {
    Ok(Outcome::Done(j.into()))
}

fn failed(e: impl std::fmt::Display) -> Result<Outcome, Bad> {
    Ok(Outcome::Failed(e.to_string()))
}

fn field<'a>(args: &'a Json, key: &str) -> Result<&'a Json, Bad> {
    args.get(key)
        .ok_or_else(|| Bad(format!("missing field `{key}`")))
}

fn u64_field(args: &Json, key: &str) -> Result<u64, Bad> {
    field(args, key)?
        .as_u64()
        .ok_or_else(|| Bad(format!("field `{key}` must be an unsigned integer")))
}

fn str_field<'a>(args: &'a Json, key: &str) -> Result<&'a str, Bad> {
    field(args, key)?
        .as_str()
        .ok_or_else(|| Bad(format!("field `{key}` must be a string")))
}

fn cap_field(args: &Json, key: &str) -> Result<CapRef, Bad> {
    u64_field(args, key).map(CapRef)
}

fn caps_field(args: &Json) -> Result<Vec<CapRef>, Bad> {
    match args.get("caps") {
        None | Some(Json::Null) => Ok(Vec::new()),
        Some(Json::Array(items)) => items
            .iter()
            .map(|c| {
                c.as_u64()
                    .map(CapRef)
                    .ok_or_else(|| Bad("`caps` must be an array of caps".into()))
            })
            .collect(),
        Some(_) => Err(Bad("`caps` must be an array of caps".into())),
    }
}

fn opt_u64(args: &Json, key: &str) -> Result<Option<u64>, Bad> {
    match args.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| Bad(format!("field `{key}` must be an unsigned integer"))),
    }
}

async fn run<S: Syscalls>(
    sys: &S,
    proc_args: &Value,
    name: &str,
    args: &Json,
) -> Result<Outcome, Bad> {
    match name {
        "self" => done(sys.self_pid().0),
        "self_cap" => done(sys.self_cap().0),
        "args" => done(value_to_json(proc_args)),
        "recv" => done(message_to_json(sys.recv().await)),
        "send" => {
            let to = cap_field(args, "to")?;
            let body = json_to_value(args.get("body").unwrap_or(&Json::Null));
            let opts = SendOpts {
                caps: caps_field(args)?,
                corr: opt_u64(args, "corr")?,
                deadline: None,
            };
            match sys.send(to, Body::Value(body), opts).await {
                Ok(()) => done(Json::Null),
                Err(e) => failed(e),
            }
        }
        "remember" => {
            let body = json_to_value(field(args, "body")?);
            let opts = RememberOpts {
                tokens: opt_u64(args, "tokens")?,
                pin: args.get("pin").and_then(Json::as_bool).unwrap_or(false),
            };
            match sys.remember(body, opts).await {
                Ok(id) => done(id.0),
                Err(e) => failed(e),
            }
        }
        "recall" => {
            let query = str_field(args, "query")?;
            let k = opt_u64(args, "k")?.map_or(DEFAULT_RECALL_K, |k| {
                usize::try_from(k).unwrap_or(usize::MAX)
            });
            match sys.recall(query, k).await {
                Ok(segs) => done(segments_to_json(&segs)),
                Err(e) => failed(e),
            }
        }
        "working_set" => done(segments_to_json(&sys.working_set())),
        "forget" => done(sys.forget(SegId(u64_field(args, "id")?))),
        "log" => {
            let (level, msg) = match args {
                Json::String(s) => (LogLevel::Info, s.as_str()),
                _ => (
                    match args.get("level").and_then(Json::as_str).unwrap_or("info") {
                        "debug" => LogLevel::Debug,
                        "info" => LogLevel::Info,
                        "warn" => LogLevel::Warn,
                        "error" => LogLevel::Error,
                        other => return Err(Bad(format!("unknown log level \"{other}\""))),
                    },
                    str_field(args, "msg")?,
                ),
            };
            sys.log(level, msg);
            done(Json::Null)
        }
        "exit" => Ok(Outcome::Exit(exit_reason(args)?)),
        "now" => done(sys.now()),
        "sleep" => {
            sys.sleep(u64_field(args, "ms")?).await;
            done(Json::Null)
        }
        "yield" => {
            sys.yield_now().await;
            done(Json::Null)
        }
        "budget" => done(budget_to_json(&sys.budget())),
        "usage" => done(usage_to_json(&sys.usage())),
        "register" => match sys.register(str_field(args, "name")?) {
            Ok(()) => done(Json::Null),
            Err(e) => failed(e),
        },
        "lookup" => {
            let found = sys.lookup(str_field(args, "name")?).await;
            done(found.map_or(Json::Null, |c| Json::from(c.0)))
        }
        "open" => match sys.open(cap_field(args, "device")?).await {
            Ok(h) => done(h.0),
            Err(e) => failed(e),
        },
        "read" => {
            let handle = cap_field(args, "handle")?;
            let req = json_to_value(args.get("req").unwrap_or(&Json::Null));
            match sys.read(handle, req).await {
                Ok(v) => done(value_to_json(&v)),
                Err(e) => failed(e),
            }
        }
        "write" => {
            let handle = cap_field(args, "handle")?;
            let data = json_to_value(args.get("data").unwrap_or(&Json::Null));
            match sys.write(handle, data).await {
                Ok(v) => done(value_to_json(&v)),
                Err(e) => failed(e),
            }
        }
        _ => Ok(Outcome::Unknown),
    }
}

/// `null` or `{}` is a normal exit, `{error}` a fault, `{kind}` a program-defined reason.
fn exit_reason(args: &Json) -> Result<ExitReason, Bad> {
    if args.is_null() || args.as_object().is_some_and(Map::is_empty) {
        return Ok(ExitReason::Normal);
    }
    if let Some(e) = args.get("error") {
        let msg = e
            .as_str()
            .ok_or_else(|| Bad("field `error` must be a string".into()))?;
        return Ok(ExitReason::fault(msg));
    }
    if let Some(k) = args.get("kind") {
        let kind = k
            .as_str()
            .ok_or_else(|| Bad("field `kind` must be a string".into()))?;
        return Ok(if kind == "normal" {
            ExitReason::Normal
        } else {
            ExitReason::Other {
                kind: kind.to_owned(),
            }
        });
    }
    Err(Bad("expected null, {error} or {kind}".into()))
}

/// JSON as a [`Value`].
pub(crate) fn json_to_value(j: &Json) -> Value {
    match j {
        Json::Null => Value::Unit,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::U64(u)
            } else if let Some(i) = n.as_i64() {
                Value::I64(i)
            } else {
                Value::F64(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => Value::Str(s.clone()),
        Json::Array(a) => Value::List(a.iter().map(json_to_value).collect()),
        Json::Object(o) => Value::Map(
            o.iter()
                .map(|(k, v)| (k.clone(), json_to_value(v)))
                .collect(),
        ),
    }
}

/// A [`Value`] as JSON, cut to `null` below [`MAX_DEPTH`].
pub(crate) fn value_to_json(v: &Value) -> Json {
    to_json(v, 0)
}

fn to_json(v: &Value, depth: usize) -> Json {
    if depth > MAX_DEPTH {
        return Json::Null;
    }
    match v {
        Value::Unit => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::U64(n) => Json::from(*n),
        Value::I64(n) => Json::from(*n),
        Value::F64(x) => Number::from_f64(*x).map_or(Json::Null, Json::Number),
        Value::Str(s) => Json::String(s.clone()),
        Value::Bytes(b) => bytes_to_json(b),
        Value::List(items) => Json::Array(items.iter().map(|i| to_json(i, depth + 1)).collect()),
        Value::Map(kv) => Json::Object(
            kv.iter()
                .map(|(k, v)| (k.clone(), to_json(v, depth + 1)))
                .collect(),
        ),
    }
}

fn bytes_to_json(b: &[u8]) -> Json {
    match std::str::from_utf8(b) {
        Ok(s) => Json::String(s.to_owned()),
        Err(_) => Json::Array(b.iter().map(|x| Json::from(*x)).collect()),
    }
}

fn object<const N: usize>(entries: [(&str, Json); N]) -> Json {
    Json::Object(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

fn opt<T: Into<Json>>(v: Option<T>) -> Json {
    v.map_or(Json::Null, Into::into)
}

/// A received message: `{from, kind, body, caps, corr}`.
fn message_to_json(m: Message) -> Json {
    let (kind, body) = match &m.body {
        Body::Empty => ("empty", Json::Null),
        Body::Value(v) => ("value", value_to_json(v)),
        Body::Bytes(b) => ("bytes", bytes_to_json(b)),
        Body::Local(_) => ("local", Json::Null),
        Body::Sys(SysMsg::Down { pid, reason }) => (
            "down",
            object([("pid", pid.0.into()), ("reason", reason.to_string().into())]),
        ),
        Body::Sys(SysMsg::RemoteDown { node, pid, reason }) => (
            "remote_down",
            object([
                ("node", node.to_string().into()),
                ("pid", pid.0.into()),
                ("reason", reason.to_string().into()),
            ]),
        ),
        Body::Sys(SysMsg::Term { from }) => ("term", object([("from", from.0.into())])),
        Body::Sys(SysMsg::Boot {
            spawn,
            devices,
            reply,
        }) => (
            "boot",
            object([
                ("spawn", spawn.0.into()),
                (
                    "devices",
                    Json::Object(
                        devices
                            .iter()
                            .map(|(n, c)| (n.to_string(), Json::from(c.0)))
                            .collect(),
                    ),
                ),
                ("reply", opt(reply.map(|c| c.0))),
            ]),
        ),
    };
    object([
        ("from", m.from.0.into()),
        ("kind", kind.into()),
        ("body", body),
        (
            "caps",
            Json::Array(m.caps.iter().map(|c| Json::from(c.0)).collect()),
        ),
        ("corr", opt(m.corr)),
    ])
}

fn segments_to_json(segs: &[Segment]) -> Json {
    Json::Array(
        segs.iter()
            .map(|s| {
                object([
                    ("id", s.id.0.into()),
                    ("body", value_to_json(&s.body)),
                    ("tokens", s.tokens.into()),
                    ("pinned", s.pinned.into()),
                    ("summary", s.summary.into()),
                ])
            })
            .collect(),
    )
}

fn budget_to_json(b: &Budget) -> Json {
    object([
        ("tokens", opt(b.tokens)),
        ("tool_calls", opt(b.tool_calls)),
        ("usd_micros", opt(b.usd_micros)),
        ("children", opt(b.children)),
        ("wall_ms", opt(b.wall_ms)),
        ("mem", opt(b.mem)),
        ("max_mailbox", opt(b.max_mailbox)),
    ])
}

fn usage_to_json(u: &Usage) -> Json {
    object([
        ("tokens", u.tokens.into()),
        ("tool_calls", u.tool_calls.into()),
        ("usd_micros", u.usd_micros.into()),
        ("children", u.children.into()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_cross_as_json_and_back() {
        // Keys in sorted order: that is the order a JSON object comes back in.
        let v = Value::Map(vec![
            (
                "l".into(),
                Value::List(vec![Value::Unit, Value::Bool(true), Value::Str("s".into())]),
            ),
            ("n".into(), Value::U64(7)),
            ("neg".into(), Value::I64(-2)),
            ("x".into(), Value::F64(0.5)),
        ]);
        assert_eq!(json_to_value(&value_to_json(&v)), v);
        assert_eq!(value_to_json(&Value::F64(f64::NAN)), Json::Null);
        assert_eq!(
            value_to_json(&Value::Bytes(vec![0xff, 1].into())),
            serde_json::json!([255, 1])
        );
    }

    #[test]
    fn deep_values_are_cut() {
        let mut v = Value::Unit;
        for _ in 0..1_000 {
            v = Value::List(vec![v]);
        }
        let text = value_to_json(&v).to_string();
        assert!(text.starts_with("[[[") && text.contains("null"));
    }

    #[test]
    fn exit_reasons_from_json() {
        use serde_json::json;
        assert!(matches!(exit_reason(&Json::Null), Ok(ExitReason::Normal)));
        assert!(matches!(exit_reason(&json!({})), Ok(ExitReason::Normal)));
        assert!(matches!(
            exit_reason(&json!({"error": "bad"})),
            Ok(ExitReason::Fault { error }) if error == "bad"
        ));
        assert!(matches!(
            exit_reason(&json!({"kind": "done"})),
            Ok(ExitReason::Other { kind }) if kind == "done"
        ));
        assert!(exit_reason(&json!(3)).is_err());
    }
}
