//! The HTTP-like replies of the `fs` and `exec` devices: a `Value::Map` whose first key is
//! `status`, refusals adding `error` (a short reason) and `message`.

use agentos_abi::Value;

/// A `{status, ...fields}` map.
pub(crate) fn reply(status: u64, fields: Vec<(&str, Value)>) -> Value {
    let mut m = vec![("status".to_owned(), Value::U64(status))];
    m.extend(fields.into_iter().map(|(k, v)| (k.to_owned(), v)));
    Value::Map(m)
}

/// A refusal: `{status, error, message}`.
pub(crate) fn refuse(status: u64, error: &str, message: impl Into<String>) -> Value {
    reply(
        status,
        vec![
            ("error", Value::Str(error.into())),
            ("message", Value::Str(message.into())),
        ],
    )
}
