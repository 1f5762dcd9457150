//! [`Value`]: a small self-describing data value for message bodies and device requests.
//!
//! It plays the role JSON plays in the seed, without JSON: it serializes with postcard for the
//! wire, the journal and snapshots, and scalar values move between local processes with no
//! allocation at all.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A self-describing value. Scalars are inline; strings, bytes, lists and maps own their data.
#[derive(Clone, PartialEq, Debug, Default, Serialize, Deserialize)]
pub enum Value {
    /// No value.
    #[default]
    Unit,
    /// A boolean.
    Bool(bool),
    /// An unsigned integer.
    U64(u64),
    /// A signed integer.
    I64(i64),
    /// A float.
    F64(f64),
    /// A UTF-8 string.
    Str(String),
    /// Opaque bytes.
    Bytes(Bytes),
    /// An ordered list.
    List(Vec<Value>),
    /// An ordered map with string keys (order is preserved; keys are not deduplicated).
    Map(Vec<(String, Value)>),
}

impl Value {
    /// The value as a u64, if it is one.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::U64(v) => Some(*v),
            Value::I64(v) if *v >= 0 => Some(*v as u64),
            _ => None,
        }
    }
    /// The value as a string slice, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    /// The value as bytes, if it is bytes.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }
    /// Look a key up in a map value (first match).
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(kv) => kv.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::U64(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::I64(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}
impl From<Bytes> for Value {
    fn from(v: Bytes) -> Self {
        Value::Bytes(v)
    }
}
