//! JSON-RPC 2.0 framing: requests in, responses and notifications out, plurnk's error codes.
//!
//! This module owns the one place JSON meets the daemon's wire (PLURNK.md §4.1): a text
//! frame is decoded into a [`Frame`] (one request, a notification from the client, or a
//! batch), answered by [`response`] / [`error_response`], and server pushes are built by
//! [`notification`]. Nothing here knows a method; the registry does.
//!
//! **Invariants:** decoding never panics on any input; a frame that is not JSON is −32700
//! and one that is JSON but not a request object is −32600, both with `id: null`; a request
//! without an `id` is a notification and gets no response (JSON-RPC 2.0 §4.1).
//!
//! **API boundary:** [`RpcError`] and the `code` constants are what the rest of the daemon
//! returns; [`Frame`] / [`Call`] are what it dispatches.

use serde_json::{json, Map, Value};

/// Invalid JSON was received.
pub const PARSE_ERROR: i64 = -32700;
/// The JSON sent is not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;
/// The method does not exist or is not available in this build.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Invalid method parameters.
pub const INVALID_PARAMS: i64 = -32602;
/// Internal error.
pub const INTERNAL_ERROR: i64 = -32603;
/// plurnk: the connection is not attached to a session.
pub const NOT_INITIALISED: i64 = -32000;
/// plurnk: session not found.
pub const SESSION_NOT_FOUND: i64 = -32001;
/// plurnk: loop not found.
pub const LOOP_NOT_FOUND: i64 = -32002;
/// plurnk: entry not found.
pub const ENTRY_NOT_FOUND: i64 = -32003;
/// plurnk: provider unavailable.
pub const PROVIDER_UNAVAILABLE: i64 = -32004;
/// plurnk: scheme unavailable.
pub const SCHEME_UNAVAILABLE: i64 = -32005;
/// plurnk: mimetype unavailable.
pub const MIMETYPE_UNAVAILABLE: i64 = -32006;
/// plurnk: timeout.
pub const TIMEOUT: i64 = -32007;
/// agentos: the run has a loop running or parked, so a client op (which runs between
/// loops) is refused; `data.loopId` names the loop.
pub const RUN_BUSY: i64 = -32008;

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// The code (standard or plurnk's).
    pub code: i64,
    /// A sentence naming what failed.
    pub message: String,
    /// Extra detail.
    pub data: Option<Value>,
}

impl RpcError {
    /// An error with a code and a message.
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// −32602 with a message.
    pub fn params(message: impl Into<String>) -> RpcError {
        RpcError::new(INVALID_PARAMS, message)
    }

    /// −32603 with a message.
    pub fn internal(message: impl Into<String>) -> RpcError {
        RpcError::new(INTERNAL_ERROR, message)
    }

    /// Adds `data`.
    pub fn with_data(mut self, data: Value) -> RpcError {
        self.data = Some(data);
        self
    }

    /// The error object as JSON.
    pub fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("code".into(), self.code.into());
        o.insert("message".into(), self.message.clone().into());
        if let Some(d) = &self.data {
            o.insert("data".into(), d.clone());
        }
        Value::Object(o)
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for RpcError {}

/// One call decoded from a frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The request id (`None`: a client notification, answered with nothing).
    pub id: Option<Value>,
    /// The method name.
    pub method: String,
    /// The params (`null` when absent).
    pub params: Value,
}

/// What one text frame holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// One call.
    Single(Result<Call, (Value, RpcError)>),
    /// A batch: each element a call or an invalid element (with the id it carried).
    Batch(Vec<Result<Call, (Value, RpcError)>>),
    /// Not JSON, or an empty batch: answered with one error, `id: null`.
    Invalid(RpcError),
}

/// Decodes a text frame.
pub fn decode(text: &str) -> Frame {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return Frame::Invalid(RpcError::new(PARSE_ERROR, format!("parse error: {e}"))),
    };
    match v {
        Value::Array(items) if items.is_empty() => {
            Frame::Invalid(RpcError::new(INVALID_REQUEST, "an empty batch"))
        }
        Value::Array(items) => Frame::Batch(items.into_iter().map(call_of).collect()),
        other => Frame::Single(call_of(other)),
    }
}

fn call_of(v: Value) -> Result<Call, (Value, RpcError)> {
    let Value::Object(mut o) = v else {
        return Err((
            Value::Null,
            RpcError::new(INVALID_REQUEST, "a request must be a JSON object"),
        ));
    };
    let id = o.remove("id");
    let reply_id = id.clone().unwrap_or(Value::Null);
    let invalid = |m: &str| Err((reply_id.clone(), RpcError::new(INVALID_REQUEST, m)));
    match &id {
        None | Some(Value::Null | Value::String(_) | Value::Number(_)) => {}
        Some(_) => return invalid("`id` must be a string, a number or null"),
    }
    if o.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return invalid("`jsonrpc` must be \"2.0\"");
    }
    let method = match o.remove("method") {
        Some(Value::String(m)) => m,
        _ => return invalid("`method` must be a string"),
    };
    let params = o.remove("params").unwrap_or(Value::Null);
    if !matches!(params, Value::Null | Value::Object(_) | Value::Array(_)) {
        return invalid("`params` must be an object or an array");
    }
    Ok(Call { id, method, params })
}

/// A success response.
pub fn response(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// A success response as text, serialised in one pass (the hot path: no envelope `Value`).
pub fn response_text(id: &Value, result: &Value) -> String {
    #[derive(serde::Serialize)]
    struct Response<'a> {
        jsonrpc: &'static str,
        id: &'a Value,
        result: &'a Value,
    }
    serde_json::to_string(&Response {
        jsonrpc: "2.0",
        id,
        result,
    })
    .unwrap_or_else(|_| response(id, result.clone()).to_string())
}

/// An error response.
pub fn error_response(id: &Value, e: &RpcError) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": e.to_json()})
}

/// A server notification.
pub fn notification(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "method": method, "params": params})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_requests_and_refuses_junk() {
        match decode(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#) {
            Frame::Single(Ok(c)) => {
                assert_eq!(c.method, "ping");
                assert_eq!(c.id, Some(json!(1)));
                assert_eq!(c.params, Value::Null);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(decode("{nope"), Frame::Invalid(e) if e.code == PARSE_ERROR));
        assert!(matches!(decode("[]"), Frame::Invalid(e) if e.code == INVALID_REQUEST));
        assert!(
            matches!(decode(r#"{"id":2,"method":"x"}"#), Frame::Single(Err((id, e))) if e.code == INVALID_REQUEST && id == json!(2))
        );
        assert!(
            matches!(decode(r#"{"jsonrpc":"2.0","id":2,"method":"x","params":3}"#), Frame::Single(Err((_, e))) if e.code == INVALID_REQUEST)
        );
        match decode(r#"[{"jsonrpc":"2.0","id":1,"method":"a"}, 7]"#) {
            Frame::Batch(items) => {
                assert!(items[0].is_ok());
                assert!(items[1].is_err());
            }
            other => panic!("{other:?}"),
        }
    }
}
