//! The requests and replies programs exchange with the standard devices.
//!
//! A program talks to a device by sending a [`Value`] through `read`/`write` and getting a
//! [`Value`] back. The types here give those values a shape, so userland can talk to any LLM,
//! tool, KV, worker or gateway device without depending on the drivers crate:
//!
//! - LLM: [`ChatRequest`] → [`ChatReply`] (messages, tools, tool calls, usage, finish reason);
//!   [`LlmRequest::Capabilities`] → [`LlmCapabilities`] (native tools, grammar, JSON schema,
//!   context window).
//! - Tools: [`ToolsRequest`] → [`CallOutcome`] (or a list of [`ToolSpec`]).
//! - KV: [`KvRequest`] → [`KvReply`].
//! - Worker: [`WorkerRequest`] → [`CallOutcome`].
//! - Gateway: [`GatewaySend`] (out), [`GatewayInbound`] / [`GatewayReply`] (in).
//! - WASM: [`WasmRequest`] → the export's results.
//!
//! Every type implements [`DeviceMessage`] (`to_value` / `from_value`). Most go through a small
//! serde bridge ([`to_value`] / [`from_value`]) that maps structs to [`Value::Map`], sequences
//! to [`Value::List`], unit enum variants to [`Value::Str`] and data-carrying variants to a
//! one-entry map `{variant: data}`; malformed values are a [`ValueError`] naming what was wrong.
//! JSON appears only as strings that are handed to an LLM verbatim (tool schemas, tool-call
//! arguments, response schemas); nothing here parses it.

use crate::value::Value;
use bytes::Bytes;
use serde::de::{self, IntoDeserializer};
use serde::ser::{self, Serialize};
use serde::Deserialize;
use std::fmt;
use thiserror::Error;

/// A value could not be converted to or from a device type.
#[derive(Clone, PartialEq, Eq, Debug, Error)]
pub enum ValueError {
    /// The type cannot be represented as a [`Value`] (a non-string map key, a 128-bit number).
    #[error("cannot encode as a value: {0}")]
    Encode(String),
    /// The value does not have the shape the type expects.
    #[error("malformed value: {0}")]
    Decode(String),
}

impl ser::Error for ValueError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ValueError::Encode(msg.to_string())
    }
}

impl de::Error for ValueError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ValueError::Decode(msg.to_string())
    }
}

/// A device request or reply that travels as a [`Value`].
pub trait DeviceMessage: Sized {
    /// Encode as a value (the form a program passes to `read`/`write`).
    fn to_value(&self) -> Value;
    /// Decode from a value, with a clear error when it is malformed.
    fn from_value(v: Value) -> Result<Self, ValueError>;
}

/// Implement [`DeviceMessage`] through the serde bridge for types whose encoding cannot fail
/// (string map keys and 64-bit numbers only).
macro_rules! via_serde {
    ($($t:ty),* $(,)?) => {$(
        impl DeviceMessage for $t {
            fn to_value(&self) -> Value {
                // Cannot fail: the type has only string keys and 64-bit numbers.
                to_value(self).unwrap_or_default()
            }
            fn from_value(v: Value) -> Result<Self, ValueError> {
                from_value(v)
            }
        }
    )*};
}

// ---------------------------------------------------------------------------------------------
// LLM chat
// ---------------------------------------------------------------------------------------------

/// The seed's token estimate for a text: 1.5 tokens per CJK character, one per four other
/// characters, rounded up. Pure arithmetic over the text, shared by every layer that budgets
/// a prompt (the LLM device, the agents' window fitting, the engine's packet).
pub fn estimate_tokens(text: &str) -> u64 {
    // ASCII has no CJK: one token per four bytes, without walking the characters.
    if text.is_ascii() {
        return (text.len() as u64).div_ceil(4);
    }
    let (mut cjk, mut other) = (0u64, 0u64);
    for c in text.chars() {
        if matches!(c as u32, 0x3000..=0x9fff | 0xac00..=0xd7af | 0xf900..=0xfaff | 0xff00..=0xffef)
        {
            cjk += 1;
        } else {
            other += 1;
        }
    }
    (cjk * 3).div_ceil(2) + other.div_ceil(4)
}

/// Who wrote a chat message.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Instructions for the model.
    System,
    /// The user (or the program speaking for it).
    #[default]
    User,
    /// The model.
    Assistant,
    /// The result of a tool call, answering an assistant's tool call by id.
    Tool,
}

/// One tool call the model asked for.
#[derive(Clone, PartialEq, Eq, Debug, Default, serde::Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's id for this call; the tool result message refers to it.
    #[serde(default)]
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments, as a JSON text (what the model emitted).
    #[serde(default)]
    pub arguments: String,
}

/// One message of a conversation.
#[derive(Clone, PartialEq, Eq, Debug, Default, serde::Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: Role,
    /// The text.
    #[serde(default)]
    pub content: String,
    /// Tool calls made by an assistant message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a `tool` message: the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For a `tool` message: the tool's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    fn plain(role: Role, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: content.into(),
            ..ChatMessage::default()
        }
    }
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::plain(Role::System, content)
    }
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::plain(Role::User, content)
    }
    /// An assistant message with text only.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::plain(Role::Assistant, content)
    }
    /// An assistant message that made tool calls.
    pub fn assistant_calls(content: impl Into<String>, calls: Vec<ToolCall>) -> Self {
        ChatMessage {
            tool_calls: calls,
            ..Self::plain(Role::Assistant, content)
        }
    }
    /// A tool result answering call `call_id` of tool `name`.
    pub fn tool(
        call_id: impl Into<String>,
        name: impl Into<String>,
        content: impl Into<String>,
    ) -> Self {
        ChatMessage {
            tool_call_id: Some(call_id.into()),
            name: Some(name.into()),
            ..Self::plain(Role::Tool, content)
        }
    }
}

/// A tool the model may call.
#[derive(Clone, PartialEq, Eq, Debug, Default, serde::Serialize, Deserialize)]
pub struct ToolSpec {
    /// The tool's name.
    pub name: String,
    /// What it does (shown to the model).
    #[serde(default)]
    pub description: String,
    /// The JSON Schema of its arguments, as a JSON text.
    #[serde(default = "empty_object_schema")]
    pub parameters: String,
}

fn empty_object_schema() -> String {
    r#"{"type":"object","properties":{}}"#.to_owned()
}

/// Constrain the reply to a JSON Schema (OpenAI `response_format: json_schema`).
#[derive(Clone, PartialEq, Eq, Debug, Default, serde::Serialize, Deserialize)]
pub struct JsonSchemaFormat {
    /// A name for the schema.
    #[serde(default)]
    pub name: String,
    /// The JSON Schema, as a JSON text.
    pub schema: String,
    /// Ask the provider for strict adherence.
    #[serde(default)]
    pub strict: bool,
}

/// A chat completion request: what a program sends to an LLM device.
#[derive(Clone, PartialEq, Debug, Default, serde::Serialize, Deserialize)]
pub struct ChatRequest {
    /// The conversation so far.
    pub messages: Vec<ChatMessage>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolSpec>,
    /// Constrain the reply to a JSON Schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<JsonSchemaFormat>,
    /// A GBNF grammar (llama.cpp-style servers only; ignored by providers that lack it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grammar: Option<String>,
    /// Upper bound on completion tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Ask the provider to stream (the device still returns one assembled reply).
    #[serde(default)]
    pub stream: bool,
    /// Override the device's default model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Whether (and which) tool the model must call; `None` is the provider's default (auto).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
}

/// How the model may use the offered tools.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// No tool calls.
    None,
    /// At least one tool call.
    Required,
    /// A call to this tool.
    Tool(String),
}

impl ChatRequest {
    /// A request with these messages and nothing else set.
    pub fn new(messages: Vec<ChatMessage>) -> Self {
        ChatRequest {
            messages,
            ..ChatRequest::default()
        }
    }
}

/// Token usage of one completion, as the provider reported it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, serde::Serialize, Deserialize)]
pub struct TokenUsage {
    /// Prompt (input) tokens, cached ones included.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Completion (output) tokens.
    #[serde(default)]
    pub completion_tokens: u64,
    /// Prompt tokens served from the provider's prompt cache.
    #[serde(default)]
    pub cached_tokens: u64,
}

impl TokenUsage {
    /// Prompt plus completion tokens.
    pub fn total(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// Why the model stopped.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A natural stop or a stop sequence.
    #[default]
    Stop,
    /// The token limit.
    Length,
    /// The model called tools.
    ToolCalls,
    /// The provider filtered the content.
    ContentFilter,
    /// Something else the provider reported.
    Other,
}

/// A chat completion: what an LLM device answers.
#[derive(Clone, PartialEq, Eq, Debug, Default, serde::Serialize, Deserialize)]
pub struct ChatReply {
    /// The assistant's text.
    #[serde(default)]
    pub content: String,
    /// Tool calls the model made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Provider-reported usage (absent when the provider reported none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TokenUsage>,
    /// Why it stopped.
    #[serde(default)]
    pub finish_reason: FinishReason,
    /// The model that answered.
    #[serde(default)]
    pub model: String,
}

impl ChatReply {
    /// A plain text reply (no tool calls, no usage).
    pub fn text(content: impl Into<String>) -> Self {
        ChatReply {
            content: content.into(),
            ..ChatReply::default()
        }
    }
    /// The assistant message to append to the conversation for this reply.
    pub fn to_message(&self) -> ChatMessage {
        ChatMessage::assistant_calls(self.content.clone(), self.tool_calls.clone())
    }
}

/// What a program may ask an LLM device: a chat completion, or what the device's provider
/// can do.
#[derive(Clone, PartialEq, Debug)]
pub enum LlmRequest {
    /// Complete a chat: a [`ChatRequest`] value. The reply is a [`ChatReply`].
    Chat(Box<ChatRequest>),
    /// What the provider can do: the string `"capabilities"`. The reply is an
    /// [`LlmCapabilities`]; it costs nothing. A device that predates the request answers it
    /// with an error, which a program takes as [`LlmCapabilities::native`].
    Capabilities,
}

/// The string a program reads from an LLM device to ask for its [`LlmCapabilities`].
pub const LLM_CAPABILITIES: &str = "capabilities";

impl DeviceMessage for LlmRequest {
    fn to_value(&self) -> Value {
        match self {
            LlmRequest::Chat(c) => c.to_value(),
            LlmRequest::Capabilities => Value::Str(LLM_CAPABILITIES.into()),
        }
    }
    fn from_value(v: Value) -> Result<Self, ValueError> {
        match v {
            Value::Str(s) if s == LLM_CAPABILITIES => Ok(LlmRequest::Capabilities),
            v => ChatRequest::from_value(v).map(|c| LlmRequest::Chat(Box::new(c))),
        }
    }
}

/// What an LLM device's provider can do with a [`ChatRequest`]: whether the model calls tools
/// natively, whether its output can be constrained (a GBNF `grammar`, a `response_format` JSON
/// schema) and how large its context window is.
///
/// An agent uses it to choose how a ReAct step asks for an action: native tool calls when the
/// model has them, otherwise one constrained action object per step.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, serde::Serialize, Deserialize)]
pub struct LlmCapabilities {
    /// The model calls the request's `tools` natively (a `tool_calls` block in the reply).
    #[serde(default)]
    pub native_tools: bool,
    /// The provider honours [`ChatRequest::grammar`] (llama.cpp's GBNF).
    #[serde(default)]
    pub grammar: bool,
    /// The provider honours [`ChatRequest::response_format`] (a JSON schema).
    #[serde(default)]
    pub json_schema: bool,
    /// The model's context window in tokens (prompt and completion), where the provider
    /// reports it or was told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_tokens: Option<u32>,
}

impl LlmCapabilities {
    /// A provider with native tool calls and nothing else known: what a device that cannot
    /// answer [`LlmRequest::Capabilities`] is taken to be.
    pub fn native() -> Self {
        LlmCapabilities {
            native_tools: true,
            ..LlmCapabilities::default()
        }
    }
    /// Whether output can be constrained at all (grammar or JSON schema).
    pub fn can_constrain(&self) -> bool {
        self.grammar || self.json_schema
    }
}

// ---------------------------------------------------------------------------------------------
// Tools and worker tasks
// ---------------------------------------------------------------------------------------------

/// Call tool `name` with `args`.
///
/// `args` is any value; a tools device also accepts the JSON text of an LLM tool call's
/// arguments as `args` (a [`Value::Str`]) and parses it at its edge. The seed's spelling
/// `{tool, input}` is accepted too.
#[derive(Clone, PartialEq, Debug, Default, serde::Serialize, Deserialize)]
pub struct ToolCallRequest {
    /// The tool's name.
    #[serde(alias = "tool")]
    pub name: String,
    /// Its arguments.
    #[serde(default, alias = "input", with = "value_as_data")]
    pub args: Value,
}

/// What a program asks a tools device.
#[derive(Clone, PartialEq, Debug)]
pub enum ToolsRequest {
    /// Run a tool: `{name, args}`.
    Call(ToolCallRequest),
    /// List the tools and their schemas: the string `"list"`. The reply is a list of
    /// [`ToolSpec`] values.
    List,
}

impl DeviceMessage for ToolsRequest {
    fn to_value(&self) -> Value {
        match self {
            ToolsRequest::Call(c) => c.to_value(),
            ToolsRequest::List => Value::Str("list".into()),
        }
    }
    fn from_value(v: Value) -> Result<Self, ValueError> {
        match v {
            Value::Str(s) if s == "list" => Ok(ToolsRequest::List),
            v => ToolCallRequest::from_value(v).map(ToolsRequest::Call),
        }
    }
}

/// Run worker task `task` with `input` (the seed's `{task, input}`).
#[derive(Clone, PartialEq, Debug, Default, serde::Serialize, Deserialize)]
pub struct WorkerRequest {
    /// The registered task's name.
    pub task: String,
    /// Its input.
    #[serde(default, with = "value_as_data")]
    pub input: Value,
}

/// The outcome of a tool call or worker task: its value, or `{error: message}`.
///
/// A failed tool is a value the program sees, not a device failure, matching the seed.
#[derive(Clone, PartialEq, Debug)]
pub enum CallOutcome {
    /// The result.
    Ok(Value),
    /// The error message (an unknown tool, a tool that failed, a task that panicked).
    Err(String),
}

impl DeviceMessage for CallOutcome {
    fn to_value(&self) -> Value {
        match self {
            CallOutcome::Ok(v) => v.clone(),
            CallOutcome::Err(e) => Value::Map(vec![("error".into(), Value::Str(e.clone()))]),
        }
    }
    /// A one-entry map `{error: <string>}` is an error; anything else is a result.
    fn from_value(v: Value) -> Result<Self, ValueError> {
        if let Value::Map(kv) = &v {
            if let [(k, Value::Str(msg))] = kv.as_slice() {
                if k == "error" {
                    return Ok(CallOutcome::Err(msg.clone()));
                }
            }
        }
        Ok(CallOutcome::Ok(v))
    }
}

// ---------------------------------------------------------------------------------------------
// KV
// ---------------------------------------------------------------------------------------------

/// A key/value request, in the seed's shape: `{get: key}`, `{set: {key, value}}`,
/// `{delete: key}`, `{list: prefix}`.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvRequest {
    /// Read one key. Reply: [`KvReply::Value`].
    Get(String),
    /// Write one key. Reply: [`KvReply::Done`] (`true`).
    Set {
        /// The key.
        key: String,
        /// The value (a string value is stored as its UTF-8 bytes).
        value: Bytes,
    },
    /// Remove one key. Reply: [`KvReply::Done`] (whether it existed).
    Delete(String),
    /// The keys starting with a prefix, in key order. Reply: [`KvReply::Keys`].
    List(String),
}

/// A key/value reply.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum KvReply {
    /// The value of a key, or none: [`Value::Bytes`] or [`Value::Unit`].
    Value(Option<Bytes>),
    /// A write's outcome: [`Value::Bool`].
    Done(bool),
    /// Keys: a [`Value::List`] of [`Value::Str`].
    Keys(Vec<String>),
}

impl DeviceMessage for KvReply {
    fn to_value(&self) -> Value {
        match self {
            KvReply::Value(Some(b)) => Value::Bytes(b.clone()),
            KvReply::Value(None) => Value::Unit,
            KvReply::Done(b) => Value::Bool(*b),
            KvReply::Keys(ks) => Value::List(ks.iter().cloned().map(Value::Str).collect()),
        }
    }
    fn from_value(v: Value) -> Result<Self, ValueError> {
        match v {
            Value::Bytes(b) => Ok(KvReply::Value(Some(b))),
            Value::Unit => Ok(KvReply::Value(None)),
            Value::Bool(b) => Ok(KvReply::Done(b)),
            Value::List(items) => items
                .into_iter()
                .map(|i| match i {
                    Value::Str(s) => Ok(s),
                    other => Err(ValueError::Decode(format!(
                        "kv key list holds a non-string: {other:?}"
                    ))),
                })
                .collect::<Result<_, _>>()
                .map(KvReply::Keys),
            other => Err(ValueError::Decode(format!(
                "not a kv reply (bytes, unit, bool or list): {other:?}"
            ))),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Gateway
// ---------------------------------------------------------------------------------------------

/// Forward `body` to `to` through a gateway (the seed's `write({to, body})`).
#[derive(Clone, PartialEq, Debug, Default, serde::Serialize, Deserialize)]
pub struct GatewaySend {
    /// The destination, as the gateway's forwarder understands it.
    pub to: String,
    /// What to send.
    #[serde(default, with = "value_as_data")]
    pub body: Value,
}

/// An inbound request a process read from a gateway.
#[derive(Clone, PartialEq, Debug, Default, serde::Serialize, Deserialize)]
pub struct GatewayInbound {
    /// The request's id; the reply names it.
    pub id: u64,
    /// What the outside caller sent.
    #[serde(default, with = "value_as_data")]
    pub body: Value,
}

/// A process's reply to inbound request `id`.
#[derive(Clone, PartialEq, Debug, Default, serde::Serialize, Deserialize)]
pub struct GatewayReply {
    /// The inbound request's id.
    pub id: u64,
    /// The answer handed back to the outside caller.
    #[serde(default, with = "value_as_data")]
    pub reply: Value,
}

// ---------------------------------------------------------------------------------------------
// WASM
// ---------------------------------------------------------------------------------------------

/// Call export `func` of the WASM module registered as `module` with numeric `args` (the
/// seed's `{module, fn, args}`; `func` travels under the key `fn`).
///
/// Each argument converts to the export's parameter type: an integer (`U64`/`I64`) to `i32` or
/// `i64` when it fits (an `i32` also takes `2^31..2^32` as its two's-complement bit pattern),
/// any number to `f32`/`f64`, `Bool` to `0`/`1`. The reply is the export's results: `Unit` for
/// none, the value for one (`I64` for `i32`/`i64`, `F64` for `f32`/`f64`), a `List` for several.
/// `fuel`, when given, lowers the device's per-call fuel limit for this call.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct WasmRequest {
    /// The registered module's name.
    pub module: String,
    /// The exported function to call.
    pub func: String,
    /// Its arguments, in order.
    pub args: Vec<Value>,
    /// At most this much fuel for the call (never more than the device allows).
    pub fuel: Option<u64>,
}

impl DeviceMessage for WasmRequest {
    fn to_value(&self) -> Value {
        let mut kv = vec![
            ("module".to_owned(), Value::Str(self.module.clone())),
            ("fn".to_owned(), Value::Str(self.func.clone())),
            ("args".to_owned(), Value::List(self.args.clone())),
        ];
        if let Some(f) = self.fuel {
            kv.push(("fuel".to_owned(), Value::U64(f)));
        }
        Value::Map(kv)
    }
    /// `args` may be missing (no arguments); `module` and `fn` are required strings.
    fn from_value(v: Value) -> Result<Self, ValueError> {
        let Value::Map(kv) = v else {
            return Err(ValueError::Decode(
                "wasm request: expected a map {module, fn, args}".into(),
            ));
        };
        let mut req = WasmRequest::default();
        let (mut module, mut func) = (None, None);
        for (k, v) in kv {
            match (k.as_str(), v) {
                ("module", Value::Str(s)) => module = Some(s),
                ("fn", Value::Str(s)) => func = Some(s),
                ("args", Value::List(a)) => req.args = a,
                ("args", Value::Unit) => {}
                ("fuel", Value::Unit) => {}
                ("fuel", f) => {
                    req.fuel = Some(f.as_u64().ok_or_else(|| {
                        ValueError::Decode("wasm request: fuel must be an unsigned integer".into())
                    })?)
                }
                ("module" | "fn" | "args", _) => {
                    return Err(ValueError::Decode(format!(
                        "wasm request: field `{k}` has the wrong type"
                    )))
                }
                _ => {}
            }
        }
        req.module =
            module.ok_or_else(|| ValueError::Decode("wasm request: missing `module`".into()))?;
        req.func = func.ok_or_else(|| ValueError::Decode("wasm request: missing `fn`".into()))?;
        Ok(req)
    }
}

via_serde!(
    ChatMessage,
    ToolCall,
    ToolSpec,
    JsonSchemaFormat,
    ChatRequest,
    TokenUsage,
    ChatReply,
    LlmCapabilities,
    ToolCallRequest,
    WorkerRequest,
    KvRequest,
    GatewaySend,
    GatewayInbound,
    GatewayReply,
);

// ---------------------------------------------------------------------------------------------
// The serde bridge
// ---------------------------------------------------------------------------------------------

/// Encode any serde type as a [`Value`]: structs and maps become [`Value::Map`] (fields in
/// declaration order), sequences and tuples [`Value::List`], `None`/unit [`Value::Unit`], unit
/// enum variants [`Value::Str`], other variants a one-entry map `{variant: data}`.
pub fn to_value<T: Serialize + ?Sized>(v: &T) -> Result<Value, ValueError> {
    v.serialize(ValueSerializer)
}

/// Decode a serde type from a [`Value`] (the inverse of [`to_value`]). Integers convert between
/// widths when they fit, a missing optional field is `None`, and a mismatch is a
/// [`ValueError::Decode`] that names the field or type.
pub fn from_value<T: de::DeserializeOwned>(v: Value) -> Result<T, ValueError> {
    T::deserialize(ValueDeserializer(v))
}

/// `#[serde(with = "value_as_data")]` for a [`Value`] field: the value is written as plain data
/// (a map as a map, a string as a string) rather than as the tagged `Value` enum, so it
/// round-trips through [`to_value`]/[`from_value`] unchanged. Decoding needs a self-describing
/// format (a `Value`, JSON), which is how device messages travel.
pub mod value_as_data {
    use super::Value;
    use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde::ser::{SerializeMap, Serializer};
    use serde::Serialize;
    use std::fmt;

    /// Serialize `v` as plain data.
    pub fn serialize<S: Serializer>(v: &Value, s: S) -> Result<S::Ok, S::Error> {
        Data(v).serialize(s)
    }

    /// Deserialize plain data into a [`Value`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(DataVisitor)
    }

    struct Data<'a>(&'a Value);

    impl Serialize for Data<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self.0 {
                Value::Unit => s.serialize_unit(),
                Value::Bool(b) => s.serialize_bool(*b),
                Value::U64(n) => s.serialize_u64(*n),
                Value::I64(n) => s.serialize_i64(*n),
                Value::F64(n) => s.serialize_f64(*n),
                Value::Str(t) => s.serialize_str(t),
                Value::Bytes(b) => s.serialize_bytes(b),
                Value::List(items) => s.collect_seq(items.iter().map(Data)),
                Value::Map(kv) => {
                    let mut m = s.serialize_map(Some(kv.len()))?;
                    for (k, v) in kv {
                        m.serialize_entry(k, &Data(v))?;
                    }
                    m.end()
                }
            }
        }
    }

    struct DataVisitor;

    impl<'de> Visitor<'de> for DataVisitor {
        type Value = Value;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any data value")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
            Ok(Value::Unit)
        }
        fn visit_none<E: de::Error>(self) -> Result<Value, E> {
            Ok(Value::Unit)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(DataVisitor)
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
            Ok(Value::I64(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
            Ok(Value::U64(v))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
            Ok(Value::F64(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
            Ok(Value::Str(v.to_owned()))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
            Ok(Value::Str(v))
        }
        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
            Ok(Value::Bytes(bytes::Bytes::copy_from_slice(v)))
        }
        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Value, E> {
            Ok(Value::Bytes(v.into()))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
            let mut items = Vec::with_capacity(a.size_hint().unwrap_or(0).min(1024));
            while let Some(DataOwned(v)) = a.next_element()? {
                items.push(v);
            }
            Ok(Value::List(items))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
            let mut kv = Vec::with_capacity(a.size_hint().unwrap_or(0).min(1024));
            while let Some((k, DataOwned(v))) = a.next_entry::<String, DataOwned>()? {
                kv.push((k, v));
            }
            Ok(Value::Map(kv))
        }
    }

    struct DataOwned(Value);

    impl<'de> serde::Deserialize<'de> for DataOwned {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(DataVisitor).map(DataOwned)
        }
    }
}

struct ValueSerializer;

/// Collects a sequence or tuple.
struct SeqSer(Vec<Value>);

/// Collects a tuple variant: `{variant: [..]}`.
struct VariantSeqSer(&'static str, Vec<Value>);

/// Collects a map or struct.
struct MapSer {
    entries: Vec<(String, Value)>,
    key: Option<String>,
}

/// Collects a struct variant: `{variant: {..}}`.
struct VariantMapSer(&'static str, Vec<(String, Value)>);

impl ser::Serializer for ValueSerializer {
    type Ok = Value;
    type Error = ValueError;
    type SerializeSeq = SeqSer;
    type SerializeTuple = SeqSer;
    type SerializeTupleStruct = SeqSer;
    type SerializeTupleVariant = VariantSeqSer;
    type SerializeMap = MapSer;
    type SerializeStruct = MapSer;
    type SerializeStructVariant = VariantMapSer;

    fn serialize_bool(self, v: bool) -> Result<Value, ValueError> {
        Ok(Value::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Value, ValueError> {
        Ok(Value::I64(v.into()))
    }
    fn serialize_i16(self, v: i16) -> Result<Value, ValueError> {
        Ok(Value::I64(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Result<Value, ValueError> {
        Ok(Value::I64(v.into()))
    }
    fn serialize_i64(self, v: i64) -> Result<Value, ValueError> {
        Ok(Value::I64(v))
    }
    fn serialize_u8(self, v: u8) -> Result<Value, ValueError> {
        Ok(Value::U64(v.into()))
    }
    fn serialize_u16(self, v: u16) -> Result<Value, ValueError> {
        Ok(Value::U64(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Result<Value, ValueError> {
        Ok(Value::U64(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Result<Value, ValueError> {
        Ok(Value::U64(v))
    }
    fn serialize_f32(self, v: f32) -> Result<Value, ValueError> {
        Ok(Value::F64(v.into()))
    }
    fn serialize_f64(self, v: f64) -> Result<Value, ValueError> {
        Ok(Value::F64(v))
    }
    fn serialize_char(self, v: char) -> Result<Value, ValueError> {
        Ok(Value::Str(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Value, ValueError> {
        Ok(Value::Str(v.to_owned()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Value, ValueError> {
        Ok(Value::Bytes(Bytes::copy_from_slice(v)))
    }
    fn serialize_none(self) -> Result<Value, ValueError> {
        Ok(Value::Unit)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<Value, ValueError> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<Value, ValueError> {
        Ok(Value::Unit)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Value, ValueError> {
        Ok(Value::Unit)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Value, ValueError> {
        Ok(Value::Str(variant.to_owned()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        v: &T,
    ) -> Result<Value, ValueError> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<Value, ValueError> {
        Ok(Value::Map(vec![(variant.to_owned(), to_value(v)?)]))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqSer, ValueError> {
        Ok(SeqSer(Vec::with_capacity(len.unwrap_or(0))))
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqSer, ValueError> {
        Ok(SeqSer(Vec::with_capacity(len)))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<SeqSer, ValueError> {
        Ok(SeqSer(Vec::with_capacity(len)))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<VariantSeqSer, ValueError> {
        Ok(VariantSeqSer(variant, Vec::with_capacity(len)))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<MapSer, ValueError> {
        Ok(MapSer {
            entries: Vec::with_capacity(len.unwrap_or(0)),
            key: None,
        })
    }
    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<MapSer, ValueError> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<VariantMapSer, ValueError> {
        Ok(VariantMapSer(variant, Vec::with_capacity(len)))
    }
}

impl ser::SerializeSeq for SeqSer {
    type Ok = Value;
    type Error = ValueError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), ValueError> {
        self.0.push(to_value(v)?);
        Ok(())
    }
    fn end(self) -> Result<Value, ValueError> {
        Ok(Value::List(self.0))
    }
}

impl ser::SerializeTuple for SeqSer {
    type Ok = Value;
    type Error = ValueError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), ValueError> {
        ser::SerializeSeq::serialize_element(self, v)
    }
    fn end(self) -> Result<Value, ValueError> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for SeqSer {
    type Ok = Value;
    type Error = ValueError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), ValueError> {
        ser::SerializeSeq::serialize_element(self, v)
    }
    fn end(self) -> Result<Value, ValueError> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleVariant for VariantSeqSer {
    type Ok = Value;
    type Error = ValueError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), ValueError> {
        self.1.push(to_value(v)?);
        Ok(())
    }
    fn end(self) -> Result<Value, ValueError> {
        Ok(Value::Map(vec![(self.0.to_owned(), Value::List(self.1))]))
    }
}

impl ser::SerializeMap for MapSer {
    type Ok = Value;
    type Error = ValueError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), ValueError> {
        self.key = Some(k.serialize(KeySerializer)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), ValueError> {
        let key = self
            .key
            .take()
            .ok_or_else(|| ValueError::Encode("map value without a key".into()))?;
        self.entries.push((key, to_value(v)?));
        Ok(())
    }
    fn end(self) -> Result<Value, ValueError> {
        Ok(Value::Map(self.entries))
    }
}

impl ser::SerializeStruct for MapSer {
    type Ok = Value;
    type Error = ValueError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), ValueError> {
        self.entries.push((key.to_owned(), to_value(v)?));
        Ok(())
    }
    fn end(self) -> Result<Value, ValueError> {
        Ok(Value::Map(self.entries))
    }
}

impl ser::SerializeStructVariant for VariantMapSer {
    type Ok = Value;
    type Error = ValueError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), ValueError> {
        self.1.push((key.to_owned(), to_value(v)?));
        Ok(())
    }
    fn end(self) -> Result<Value, ValueError> {
        Ok(Value::Map(vec![(self.0.to_owned(), Value::Map(self.1))]))
    }
}

/// Map keys must be strings (or things with an obvious string form).
struct KeySerializer;

fn bad_key() -> ValueError {
    ValueError::Encode("map keys must be strings".into())
}

impl ser::Serializer for KeySerializer {
    type Ok = String;
    type Error = ValueError;
    type SerializeSeq = ser::Impossible<String, ValueError>;
    type SerializeTuple = ser::Impossible<String, ValueError>;
    type SerializeTupleStruct = ser::Impossible<String, ValueError>;
    type SerializeTupleVariant = ser::Impossible<String, ValueError>;
    type SerializeMap = ser::Impossible<String, ValueError>;
    type SerializeStruct = ser::Impossible<String, ValueError>;
    type SerializeStructVariant = ser::Impossible<String, ValueError>;

    fn serialize_bool(self, v: bool) -> Result<String, ValueError> {
        Ok(v.to_string())
    }
    fn serialize_i8(self, v: i8) -> Result<String, ValueError> {
        Ok(v.to_string())
    }
    fn serialize_i16(self, v: i16) -> Result<String, ValueError> {
        Ok(v.to_string())
    }
    fn serialize_i32(self, v: i32) -> Result<String, ValueError> {
        Ok(v.to_string())
    }
    fn serialize_i64(self, v: i64) -> Result<String, ValueError> {
        Ok(v.to_string())
    }
    fn serialize_u8(self, v: u8) -> Result<String, ValueError> {
        Ok(v.to_string())
    }
    fn serialize_u16(self, v: u16) -> Result<String, ValueError> {
        Ok(v.to_string())
    }
    fn serialize_u32(self, v: u32) -> Result<String, ValueError> {
        Ok(v.to_string())
    }
    fn serialize_u64(self, v: u64) -> Result<String, ValueError> {
        Ok(v.to_string())
    }
    fn serialize_f32(self, _v: f32) -> Result<String, ValueError> {
        Err(bad_key())
    }
    fn serialize_f64(self, _v: f64) -> Result<String, ValueError> {
        Err(bad_key())
    }
    fn serialize_char(self, v: char) -> Result<String, ValueError> {
        Ok(v.to_string())
    }
    fn serialize_str(self, v: &str) -> Result<String, ValueError> {
        Ok(v.to_owned())
    }
    fn serialize_bytes(self, _v: &[u8]) -> Result<String, ValueError> {
        Err(bad_key())
    }
    fn serialize_none(self) -> Result<String, ValueError> {
        Err(bad_key())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<String, ValueError> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<String, ValueError> {
        Err(bad_key())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<String, ValueError> {
        Err(bad_key())
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<String, ValueError> {
        Ok(variant.to_owned())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        v: &T,
    ) -> Result<String, ValueError> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _v: &T,
    ) -> Result<String, ValueError> {
        Err(bad_key())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, ValueError> {
        Err(bad_key())
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, ValueError> {
        Err(bad_key())
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, ValueError> {
        Err(bad_key())
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, ValueError> {
        Err(bad_key())
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, ValueError> {
        Err(bad_key())
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, ValueError> {
        Err(bad_key())
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, ValueError> {
        Err(bad_key())
    }
}

/// Reads a serde type out of an owned [`Value`].
struct ValueDeserializer(Value);

fn unexpected(v: &Value) -> de::Unexpected<'_> {
    match v {
        Value::Unit => de::Unexpected::Unit,
        Value::Bool(b) => de::Unexpected::Bool(*b),
        Value::U64(n) => de::Unexpected::Unsigned(*n),
        Value::I64(n) => de::Unexpected::Signed(*n),
        Value::F64(n) => de::Unexpected::Float(*n),
        Value::Str(s) => de::Unexpected::Str(s),
        Value::Bytes(b) => de::Unexpected::Bytes(b),
        Value::List(_) => de::Unexpected::Seq,
        Value::Map(_) => de::Unexpected::Map,
    }
}

impl<'de> de::Deserializer<'de> for ValueDeserializer {
    type Error = ValueError;

    fn deserialize_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self.0 {
            Value::Unit => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::U64(n) => visitor.visit_u64(n),
            Value::I64(n) => visitor.visit_i64(n),
            Value::F64(n) => visitor.visit_f64(n),
            Value::Str(s) => visitor.visit_string(s),
            Value::Bytes(b) => visitor.visit_byte_buf(b.to_vec()),
            Value::List(items) => {
                let len = items.len();
                let mut seq = SeqDe(items.into_iter());
                let out = visitor.visit_seq(&mut seq)?;
                if seq.0.as_slice().is_empty() {
                    Ok(out)
                } else {
                    Err(de::Error::invalid_length(len, &"fewer elements"))
                }
            }
            Value::Map(kv) => visitor.visit_map(MapDe {
                entries: kv.into_iter(),
                value: None,
            }),
        }
    }

    fn deserialize_option<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self.0 {
            Value::Unit => visitor.visit_none(),
            v => visitor.visit_some(ValueDeserializer(v)),
        }
    }

    fn deserialize_newtype_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        match self.0 {
            Value::Str(s) => visitor.visit_enum(s.into_deserializer()),
            Value::Map(kv) if kv.len() == 1 => {
                let mut kv = kv;
                match kv.pop() {
                    Some((variant, value)) => visitor.visit_enum(EnumDe { variant, value }),
                    None => Err(ValueError::Decode("empty enum map".into())),
                }
            }
            other => Err(de::Error::invalid_type(
                unexpected(&other),
                &"a variant name or a one-entry map {variant: data}",
            )),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

struct SeqDe(std::vec::IntoIter<Value>);

impl<'de> de::SeqAccess<'de> for SeqDe {
    type Error = ValueError;
    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, ValueError> {
        match self.0.next() {
            Some(v) => seed.deserialize(ValueDeserializer(v)).map(Some),
            None => Ok(None),
        }
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct MapDe {
    entries: std::vec::IntoIter<(String, Value)>,
    value: Option<Value>,
}

impl<'de> de::MapAccess<'de> for MapDe {
    type Error = ValueError;
    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ValueError> {
        match self.entries.next() {
            Some((k, v)) => {
                self.value = Some(v);
                let key: de::value::StringDeserializer<ValueError> = k.into_deserializer();
                seed.deserialize(key).map(Some)
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ValueError> {
        match self.value.take() {
            Some(v) => seed.deserialize(ValueDeserializer(v)),
            None => Err(ValueError::Decode(
                "map value requested before its key".into(),
            )),
        }
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

struct EnumDe {
    variant: String,
    value: Value,
}

impl<'de> de::EnumAccess<'de> for EnumDe {
    type Error = ValueError;
    type Variant = VariantDe;
    fn variant_seed<V: de::DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, VariantDe), ValueError> {
        let name: de::value::StringDeserializer<ValueError> = self.variant.into_deserializer();
        let v = seed.deserialize(name)?;
        Ok((v, VariantDe(self.value)))
    }
}

struct VariantDe(Value);

impl<'de> de::VariantAccess<'de> for VariantDe {
    type Error = ValueError;
    fn unit_variant(self) -> Result<(), ValueError> {
        match self.0 {
            Value::Unit => Ok(()),
            other => Err(de::Error::invalid_type(unexpected(&other), &"unit variant")),
        }
    }
    fn newtype_variant_seed<T: de::DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, ValueError> {
        seed.deserialize(ValueDeserializer(self.0))
    }
    fn tuple_variant<V: de::Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        de::Deserializer::deserialize_seq(ValueDeserializer(self.0), visitor)
    }
    fn struct_variant<V: de::Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        de::Deserializer::deserialize_map(ValueDeserializer(self.0), visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Value {
        Value::Str(x.into())
    }

    #[test]
    fn chat_request_round_trips_and_has_a_plain_shape() {
        let req = ChatRequest {
            messages: vec![
                ChatMessage::system("be brief"),
                ChatMessage::user("hi"),
                ChatMessage::assistant_calls(
                    "",
                    vec![ToolCall {
                        id: "c1".into(),
                        name: "add".into(),
                        arguments: r#"{"a":1}"#.into(),
                    }],
                ),
                ChatMessage::tool("c1", "add", "2"),
            ],
            tools: vec![ToolSpec {
                name: "add".into(),
                description: "adds".into(),
                parameters: r#"{"type":"object"}"#.into(),
            }],
            max_tokens: Some(64),
            temperature: Some(0.5),
            stream: true,
            ..ChatRequest::default()
        };
        let v = req.to_value();
        let msgs = v.get("messages");
        assert!(matches!(msgs, Some(Value::List(l)) if l.len() == 4));
        assert_eq!(v.get("max_tokens"), Some(&Value::U64(64)));
        assert_eq!(v.get("grammar"), None, "None fields are left out");
        let Some(Value::List(l)) = msgs else {
            unreachable!()
        };
        assert_eq!(l[0].get("role"), Some(&s("system")));
        assert_eq!(ChatRequest::from_value(v), Ok(req));
    }

    #[test]
    fn a_hand_written_request_decodes_with_defaults() {
        let v = Value::Map(vec![(
            "messages".into(),
            Value::List(vec![Value::Map(vec![
                ("role".into(), s("user")),
                ("content".into(), s("hello")),
            ])]),
        )]);
        let req = ChatRequest::from_value(v).unwrap();
        assert_eq!(req.messages, vec![ChatMessage::user("hello")]);
        assert!(!req.stream);
        assert_eq!(req.max_tokens, None);
    }

    #[test]
    fn malformed_values_give_clear_errors() {
        let e = ChatRequest::from_value(Value::Map(vec![])).unwrap_err();
        assert!(e.to_string().contains("messages"), "{e}");
        let e = ChatRequest::from_value(s("hi")).unwrap_err();
        assert!(matches!(e, ValueError::Decode(_)));
        let bad_role = Value::Map(vec![(
            "messages".into(),
            Value::List(vec![Value::Map(vec![("role".into(), s("wizard"))])]),
        )]);
        let e = ChatRequest::from_value(bad_role).unwrap_err();
        assert!(e.to_string().contains("wizard"), "{e}");
        let e = ChatRequest::from_value(Value::Map(vec![
            ("messages".into(), Value::List(vec![])),
            ("max_tokens".into(), Value::I64(-1)),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("-1"), "{e}");
    }

    #[test]
    fn kv_requests_have_the_seed_shape() {
        let set = KvRequest::Set {
            key: "a".into(),
            value: Bytes::from_static(b"1"),
        };
        let v = set.to_value();
        assert_eq!(
            v,
            Value::Map(vec![(
                "set".into(),
                Value::Map(vec![
                    ("key".into(), s("a")),
                    ("value".into(), Value::Bytes(Bytes::from_static(b"1")))
                ])
            )])
        );
        assert_eq!(KvRequest::from_value(v), Ok(set));
        let get = Value::Map(vec![("get".into(), s("a"))]);
        assert_eq!(KvRequest::from_value(get), Ok(KvRequest::Get("a".into())));
        let text = Value::Map(vec![(
            "set".into(),
            Value::Map(vec![("key".into(), s("k")), ("value".into(), s("text"))]),
        )]);
        assert_eq!(
            KvRequest::from_value(text),
            Ok(KvRequest::Set {
                key: "k".into(),
                value: Bytes::from_static(b"text")
            })
        );
        assert!(KvRequest::from_value(Value::Map(vec![("frob".into(), s("a"))])).is_err());
        for r in [
            KvReply::Value(None),
            KvReply::Value(Some(Bytes::from_static(b"x"))),
            KvReply::Done(true),
            KvReply::Keys(vec!["a".into()]),
        ] {
            assert_eq!(KvReply::from_value(r.to_value()), Ok(r));
        }
    }

    #[test]
    fn tool_requests_keep_args_as_data_and_accept_the_seed_spelling() {
        let args = Value::Map(vec![("a".into(), Value::U64(1)), ("b".into(), s("x"))]);
        let call = ToolCallRequest {
            name: "add".into(),
            args: args.clone(),
        };
        let v = call.to_value();
        assert_eq!(v.get("args"), Some(&args));
        assert_eq!(
            ToolsRequest::from_value(v),
            Ok(ToolsRequest::Call(call.clone()))
        );
        let seed = Value::Map(vec![("tool".into(), s("add")), ("input".into(), args)]);
        assert_eq!(ToolsRequest::from_value(seed), Ok(ToolsRequest::Call(call)));
        assert_eq!(ToolsRequest::from_value(s("list")), Ok(ToolsRequest::List));
        let err = CallOutcome::Err("boom".into());
        assert_eq!(CallOutcome::from_value(err.to_value()), Ok(err));
        let ok = CallOutcome::Ok(Value::List(vec![Value::Unit, Value::F64(1.5)]));
        assert_eq!(CallOutcome::from_value(ok.to_value()), Ok(ok));
    }

    #[test]
    fn reply_round_trips() {
        let r = ChatReply {
            content: "ok".into(),
            tool_calls: vec![],
            usage: Some(TokenUsage {
                prompt_tokens: 10,
                completion_tokens: 2,
                cached_tokens: 4,
            }),
            finish_reason: FinishReason::ToolCalls,
            model: "m".into(),
        };
        let v = r.to_value();
        assert_eq!(v.get("finish_reason"), Some(&s("tool_calls")));
        assert_eq!(ChatReply::from_value(v), Ok(r));
        let g = GatewayReply {
            id: 3,
            reply: s("x"),
        };
        assert_eq!(GatewayReply::from_value(g.to_value()), Ok(g));
    }

    #[test]
    fn llm_requests_are_chats_or_the_capabilities_string() {
        let chat = ChatRequest::new(vec![ChatMessage::user("hi")]);
        let v = LlmRequest::Chat(Box::new(chat.clone())).to_value();
        assert_eq!(v, chat.to_value(), "a chat request keeps its plain shape");
        assert_eq!(
            LlmRequest::from_value(v),
            Ok(LlmRequest::Chat(Box::new(chat)))
        );
        assert_eq!(LlmRequest::Capabilities.to_value(), s("capabilities"));
        assert_eq!(
            LlmRequest::from_value(s("capabilities")),
            Ok(LlmRequest::Capabilities)
        );
        assert!(LlmRequest::from_value(s("capabilitie")).is_err());
        let caps = LlmCapabilities {
            native_tools: false,
            grammar: true,
            json_schema: true,
            context_tokens: Some(4096),
        };
        assert_eq!(LlmCapabilities::from_value(caps.to_value()), Ok(caps));
        assert!(caps.can_constrain());
        // A device that knows fewer fields answers a map the reader fills with defaults.
        let old = Value::Map(vec![("grammar".into(), Value::Bool(true))]);
        assert_eq!(
            LlmCapabilities::from_value(old),
            Ok(LlmCapabilities {
                grammar: true,
                ..LlmCapabilities::default()
            })
        );
        assert!(LlmCapabilities::native().native_tools);
        assert!(!LlmCapabilities::native().can_constrain());
    }

    #[test]
    fn wasm_request_round_trips_and_rejects_bad_shapes() {
        let r = WasmRequest {
            module: "math".into(),
            func: "add".into(),
            args: vec![Value::I64(2), Value::F64(0.5)],
            fuel: Some(10),
        };
        let v = r.to_value();
        assert_eq!(v.get("fn"), Some(&s("add")));
        assert_eq!(WasmRequest::from_value(v), Ok(r));
        let bare = Value::Map(vec![("module".into(), s("m")), ("fn".into(), s("f"))]);
        assert_eq!(WasmRequest::from_value(bare).map(|r| r.args), Ok(vec![]));
        for bad in [
            Value::Unit,
            Value::Map(vec![("module".into(), s("m"))]),
            Value::Map(vec![
                ("module".into(), s("m")),
                ("fn".into(), Value::U64(1)),
            ]),
            Value::Map(vec![
                ("module".into(), s("m")),
                ("fn".into(), s("f")),
                ("args".into(), s("1,2")),
            ]),
        ] {
            assert!(WasmRequest::from_value(bad).is_err());
        }
    }
}
