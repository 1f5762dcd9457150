//! Conversions between [`Value`] and JSON, for the LLM and tool edges only.
//!
//! JSON never travels on the message path; it appears where a model reads or writes it (tool
//! arguments, tool schemas, tool results shown to the model).

use agentos_abi::Value;
use serde_json::Value as Json;

/// A JSON value as a [`Value`]: null → `Unit`, integers → `U64`/`I64`, other numbers → `F64`,
/// arrays → `List`, objects → `Map` (key order as parsed).
pub fn json_to_value(j: Json) -> Value {
    match j {
        Json::Null => Value::Unit,
        Json::Bool(b) => Value::Bool(b),
        Json::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::U64(u)
            } else if let Some(i) = n.as_i64() {
                Value::I64(i)
            } else {
                Value::F64(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => Value::Str(s),
        Json::Array(a) => Value::List(a.into_iter().map(json_to_value).collect()),
        Json::Object(o) => Value::Map(o.into_iter().map(|(k, v)| (k, json_to_value(v))).collect()),
    }
}

/// A [`Value`] as JSON: `Unit` → null, bytes → a string when they are UTF-8 and an array of
/// numbers otherwise, non-finite floats → null.
pub fn value_to_json(v: &Value) -> Json {
    match v {
        Value::Unit => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::U64(n) => Json::from(*n),
        Value::I64(n) => Json::from(*n),
        Value::F64(n) => serde_json::Number::from_f64(*n).map_or(Json::Null, Json::Number),
        Value::Str(s) => Json::String(s.clone()),
        Value::Bytes(b) => match std::str::from_utf8(b) {
            Ok(s) => Json::String(s.to_owned()),
            Err(_) => Json::Array(b.iter().map(|x| Json::from(*x)).collect()),
        },
        Value::List(items) => Json::Array(items.iter().map(value_to_json).collect()),
        Value::Map(kv) => Json::Object(
            kv.iter()
                .map(|(k, v)| (k.clone(), value_to_json(v)))
                .collect(),
        ),
    }
}

/// Parse a JSON text into a [`Value`].
pub fn parse_json(text: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str::<Json>(text).map(json_to_value)
}

/// A [`Value`] as compact JSON text.
pub fn to_json_text(v: &Value) -> String {
    value_to_json(v).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_json() {
        let v = Value::Map(vec![
            ("a".into(), Value::U64(1)),
            ("b".into(), Value::I64(-2)),
            ("c".into(), Value::F64(0.5)),
            (
                "d".into(),
                Value::List(vec![Value::Unit, Value::Bool(true), "x".into()]),
            ),
        ]);
        assert_eq!(parse_json(&to_json_text(&v)).unwrap(), v);
        assert!(parse_json("{").is_err());
        assert_eq!(
            value_to_json(&Value::Bytes(bytes::Bytes::from_static(b"hi"))),
            Json::String("hi".into())
        );
    }
}
