//! JSON at the LLM edge: tool results are shown to the model as JSON text, and tool-call
//! arguments (JSON text the model wrote) are normalized to key the per-turn call cache.

use agentos_abi::Value;
use std::fmt::Write as _;

/// Values nested deeper than this are written as `null` (a tool result is data from outside).
const MAX_DEPTH: usize = 128;

/// `v` as JSON text, map entries in their order. Bytes that are UTF-8 are written as a string,
/// other bytes as an array of numbers; a non-finite float is `null`.
pub(crate) fn to_json_text(v: &Value) -> String {
    let mut out = String::new();
    write_value(v, &mut out, 0);
    out
}

fn write_str(s: &str, out: &mut String) {
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        // Cannot fail for a `str`; write an empty string rather than panic.
        Err(_) => out.push_str("\"\""),
    }
}

fn write_value(v: &Value, out: &mut String, depth: usize) {
    if depth > MAX_DEPTH {
        out.push_str("null");
        return;
    }
    match v {
        Value::Unit => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::U64(n) => {
            let _ = write!(out, "{n}");
        }
        Value::I64(n) => {
            let _ = write!(out, "{n}");
        }
        Value::F64(x) => match serde_json::Number::from_f64(*x) {
            Some(n) => {
                let _ = write!(out, "{n}");
            }
            None => out.push_str("null"),
        },
        Value::Str(s) => write_str(s, out),
        Value::Bytes(b) => match std::str::from_utf8(b) {
            Ok(s) => write_str(s, out),
            Err(_) => {
                out.push('[');
                for (i, byte) in b.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{byte}");
                }
                out.push(']');
            }
        },
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out, depth + 1);
            }
            out.push(']');
        }
        Value::Map(entries) => {
            out.push('{');
            for (i, (k, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(k, out);
                out.push(':');
                write_value(item, out, depth + 1);
            }
            out.push('}');
        }
    }
}

/// A canonical form of a tool call's JSON arguments: parsed and re-serialized (object keys
/// sorted, whitespace dropped), so equal arguments written differently compare equal. Blank
/// arguments are `{}`; text that is not JSON is kept as written (trimmed).
pub(crate) fn canonical_arguments(arguments: &str) -> String {
    let text = arguments.trim();
    if text.is_empty() {
        return "{}".to_owned();
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(parsed) => parsed.to_string(),
        Err(_) => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_render_as_json_in_map_order() {
        let v = Value::Map(vec![
            ("z".into(), Value::U64(1)),
            (
                "a".into(),
                Value::List(vec![Value::Unit, Value::Bool(true)]),
            ),
            ("s".into(), Value::Str("say \"hi\"\n".into())),
            ("f".into(), Value::F64(f64::NAN)),
            ("n".into(), Value::I64(-2)),
        ]);
        assert_eq!(
            to_json_text(&v),
            r#"{"z":1,"a":[null,true],"s":"say \"hi\"\n","f":null,"n":-2}"#
        );
        assert_eq!(to_json_text(&Value::F64(1.5)), "1.5");
    }

    #[test]
    fn arguments_are_canonical() {
        assert_eq!(canonical_arguments(""), "{}");
        assert_eq!(canonical_arguments("  "), "{}");
        assert_eq!(
            canonical_arguments(r#"{ "b": 2, "a": [1, 2] }"#),
            canonical_arguments(r#"{"a":[1,2],"b":2}"#)
        );
        assert_eq!(canonical_arguments(" {oops "), "{oops");
    }

    #[test]
    fn deep_values_do_not_overflow() {
        let mut v = Value::Unit;
        for _ in 0..1_000 {
            v = Value::List(vec![v]);
        }
        let text = to_json_text(&v);
        assert!(text.starts_with("[[[") && text.contains("null"));
    }
}
