//! The Anthropic provider: `POST {base}/v1/messages`.
//!
//! System messages become the top-level `system` text; assistant tool calls become `tool_use`
//! blocks and tool results `tool_result` blocks in a user turn (consecutive turns of one role
//! are merged, as the API requires alternation). Usage maps `input_tokens` plus
//! `cache_read_input_tokens` and `cache_creation_input_tokens` to prompt tokens, with the cache
//! reads as cached tokens. Streaming assembles `text_delta` and `input_json_delta` events.
//! `response_format` and `grammar` have no Anthropic equivalent and are not sent.

use super::http::{client, endpoint, post_json, read_json, read_sse, RetryPolicy};
use super::openai::schema_json;
use super::{LlmError, Provider};
use agentos_abi::device::{ChatReply, ChatRequest, FinishReason, Role, TokenUsage, ToolCall};
use agentos_abi::driver::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::time::Duration;

/// Configuration of an [`AnthropicProvider`].
#[derive(Clone, Debug, PartialEq)]
pub struct AnthropicConfig {
    /// Server root, with or without `/v1` (`https://api.anthropic.com`).
    pub base_url: String,
    /// The `x-api-key`.
    pub api_key: Option<String>,
    /// Model used when a request names none.
    pub model: String,
    /// `max_tokens` when the request sets none (the API requires one).
    pub default_max_tokens: u32,
    /// The `anthropic-version` header.
    pub api_version: String,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Connection timeout.
    pub connect_timeout: Duration,
    /// Retries on 429/5xx (529 "overloaded" included).
    pub retry: RetryPolicy,
}

impl AnthropicConfig {
    /// A config for `model` at `base_url` with defaults.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        AnthropicConfig {
            base_url: base_url.into(),
            api_key: None,
            model: model.into(),
            default_max_tokens: 1024,
            api_version: "2023-06-01".into(),
            timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
        }
    }

    /// From the environment: `AGENTOS_LLM_BASE_URL` (default `https://api.anthropic.com`),
    /// `AGENTOS_LLM_API_KEY`, `AGENTOS_LLM_MODEL` (required).
    pub fn from_env() -> Result<Self, LlmError> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let model = get("AGENTOS_LLM_MODEL")
            .ok_or_else(|| LlmError::Config("AGENTOS_LLM_MODEL is not set".into()))?;
        let base =
            get("AGENTOS_LLM_BASE_URL").unwrap_or_else(|| "https://api.anthropic.com".into());
        let mut cfg = AnthropicConfig::new(base, model);
        cfg.api_key = get("AGENTOS_LLM_API_KEY");
        Ok(cfg)
    }
}

/// An Anthropic messages-API provider.
#[derive(Debug)]
pub struct AnthropicProvider {
    cfg: AnthropicConfig,
    url: String,
    http: reqwest::Client,
}

impl AnthropicProvider {
    /// A provider for `cfg`.
    pub fn new(cfg: AnthropicConfig) -> Result<Self, LlmError> {
        let http = client(cfg.timeout, cfg.connect_timeout)?;
        let url = endpoint(&cfg.base_url, "messages");
        Ok(AnthropicProvider { cfg, url, http })
    }

    async fn complete(&self, req: &ChatRequest) -> Result<ChatReply, LlmError> {
        let model = req.model.as_deref().unwrap_or(&self.cfg.model);
        let body = wire_request(req, model, self.cfg.default_max_tokens)?;
        let body = serde_json::to_vec(&body)
            .map_err(|e| LlmError::InvalidRequest(format!("encoding request: {e}")))?;
        let mut headers = vec![("anthropic-version", self.cfg.api_version.clone())];
        if let Some(k) = &self.cfg.api_key {
            headers.push(("x-api-key", k.clone()));
        }
        let resp = post_json(&self.http, &self.url, &headers, body, &self.cfg.retry).await?;
        let mut reply = if req.stream {
            let mut acc = StreamAssembly::default();
            read_sse(resp, |ev| acc.event(&ev.event, &ev.data)).await?;
            acc.finish()?
        } else {
            from_wire_response(read_json::<WireResponse>(resp).await?)
        };
        if reply.model.is_empty() {
            reply.model = model.to_owned();
        }
        Ok(reply)
    }
}

impl Provider for AnthropicProvider {
    fn name(&self) -> &str {
        "anthropic"
    }
    fn chat<'a>(&'a self, req: &'a ChatRequest) -> BoxFuture<'a, Result<ChatReply, LlmError>> {
        Box::pin(self.complete(req))
    }
}

// ---- wire format: request ----

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "String::is_empty")]
    system: String,
    messages: Vec<WireMessage>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

#[derive(Serialize)]
struct WireMessage {
    role: &'static str,
    content: Vec<Json>,
}

#[derive(Serialize)]
struct WireTool<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    description: &'a str,
    input_schema: Json,
}

fn wire_request<'a>(
    req: &'a ChatRequest,
    model: &'a str,
    default_max: u32,
) -> Result<WireRequest<'a>, LlmError> {
    let mut system = String::new();
    let mut messages: Vec<WireMessage> = Vec::new();
    for m in &req.messages {
        let (role, blocks) = match m.role {
            Role::System => {
                if !system.is_empty() {
                    system.push_str("\n\n");
                }
                system.push_str(&m.content);
                continue;
            }
            Role::User => ("user", vec![text_block(&m.content)]),
            Role::Assistant => {
                let mut blocks = Vec::new();
                if !m.content.is_empty() {
                    blocks.push(text_block(&m.content));
                }
                for c in &m.tool_calls {
                    let input = if c.arguments.trim().is_empty() {
                        Json::Object(Default::default())
                    } else {
                        schema_json(&format!("arguments of tool call {}", c.id), &c.arguments)?
                    };
                    blocks.push(serde_json::json!({
                        "type": "tool_use", "id": c.id, "name": c.name, "input": input
                    }));
                }
                ("assistant", blocks)
            }
            Role::Tool => (
                "user",
                vec![serde_json::json!({
                    "type": "tool_result",
                    "tool_use_id": m.tool_call_id.as_deref().unwrap_or_default(),
                    "content": m.content,
                })],
            ),
        };
        match messages.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => messages.push(WireMessage {
                role,
                content: blocks,
            }),
        }
    }
    let tools = req
        .tools
        .iter()
        .map(|t| {
            Ok(WireTool {
                name: &t.name,
                description: &t.description,
                input_schema: schema_json(
                    &format!("parameters of tool {}", t.name),
                    &t.parameters,
                )?,
            })
        })
        .collect::<Result<Vec<_>, LlmError>>()?;
    Ok(WireRequest {
        model,
        max_tokens: req.max_tokens.unwrap_or(default_max),
        system,
        messages,
        tools,
        tool_choice: req.tool_choice.as_ref().map(|c| match c {
            agentos_abi::device::ToolChoice::Auto => serde_json::json!({"type": "auto"}),
            agentos_abi::device::ToolChoice::None => serde_json::json!({"type": "none"}),
            agentos_abi::device::ToolChoice::Required => serde_json::json!({"type": "any"}),
            agentos_abi::device::ToolChoice::Tool(name) => {
                serde_json::json!({"type": "tool", "name": name})
            }
        }),
        temperature: req.temperature,
        stream: req.stream,
    })
}

fn text_block(t: &str) -> Json {
    serde_json::json!({"type": "text", "text": t})
}

// ---- wire format: response ----

#[derive(Deserialize)]
struct WireResponse {
    model: Option<String>,
    content: Option<Vec<WireBlock>>,
    stop_reason: Option<String>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireBlock {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
    id: Option<String>,
    name: Option<String>,
    input: Option<Json>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct WireUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
}

impl WireUsage {
    fn usage(&self) -> TokenUsage {
        let cached = self.cache_read_input_tokens.unwrap_or(0);
        TokenUsage {
            prompt_tokens: self.input_tokens.unwrap_or(0)
                + cached
                + self.cache_creation_input_tokens.unwrap_or(0),
            completion_tokens: self.output_tokens.unwrap_or(0),
            cached_tokens: cached,
        }
    }
}

fn stop_reason(s: Option<&str>) -> FinishReason {
    match s {
        None | Some("end_turn" | "stop_sequence") => FinishReason::Stop,
        Some("max_tokens") => FinishReason::Length,
        Some("tool_use") => FinishReason::ToolCalls,
        Some("refusal") => FinishReason::ContentFilter,
        Some(_) => FinishReason::Other,
    }
}

fn input_text(input: Option<Json>) -> String {
    match input {
        None | Some(Json::Null) => "{}".into(),
        Some(j) => j.to_string(),
    }
}

fn from_wire_response(r: WireResponse) -> ChatReply {
    let mut content = String::new();
    let mut tool_calls = Vec::new();
    for b in r.content.unwrap_or_default() {
        match b.kind.as_str() {
            "text" => content.push_str(b.text.as_deref().unwrap_or_default()),
            "tool_use" => tool_calls.push(ToolCall {
                id: b.id.unwrap_or_default(),
                name: b.name.unwrap_or_default(),
                arguments: input_text(b.input),
            }),
            _ => {}
        }
    }
    ChatReply {
        content,
        tool_calls,
        usage: r.usage.as_ref().map(WireUsage::usage),
        finish_reason: stop_reason(r.stop_reason.as_deref()),
        model: r.model.unwrap_or_default(),
    }
}

// ---- streaming ----

#[derive(Deserialize)]
struct WireEvent {
    #[serde(rename = "type")]
    kind: String,
    message: Option<WireResponse>,
    index: Option<usize>,
    content_block: Option<WireBlock>,
    delta: Option<WireDelta>,
    usage: Option<WireUsage>,
    error: Option<Json>,
}

#[derive(Deserialize)]
struct WireDelta {
    #[serde(rename = "type")]
    kind: Option<String>,
    text: Option<String>,
    partial_json: Option<String>,
    stop_reason: Option<String>,
}

enum Block {
    Text(String),
    Tool(ToolCall),
    Other,
}

#[derive(Default)]
struct StreamAssembly {
    blocks: Vec<(usize, Block)>,
    usage: WireUsage,
    saw_usage: bool,
    stop: Option<String>,
    model: String,
}

impl StreamAssembly {
    fn block(&mut self, index: usize) -> Option<&mut Block> {
        self.blocks
            .iter_mut()
            .find(|(i, _)| *i == index)
            .map(|(_, b)| b)
    }

    fn merge_usage(&mut self, u: WireUsage) {
        self.saw_usage = true;
        let m = &mut self.usage;
        m.input_tokens = u.input_tokens.or(m.input_tokens);
        m.output_tokens = u.output_tokens.or(m.output_tokens);
        m.cache_read_input_tokens = u.cache_read_input_tokens.or(m.cache_read_input_tokens);
        m.cache_creation_input_tokens = u
            .cache_creation_input_tokens
            .or(m.cache_creation_input_tokens);
    }

    fn event(&mut self, _name: &str, data: &str) -> Result<(), LlmError> {
        if data.trim().is_empty() {
            return Ok(());
        }
        let ev: WireEvent = serde_json::from_str(data)
            .map_err(|e| LlmError::BadResponse(format!("stream event: {e}")))?;
        match ev.kind.as_str() {
            "message_start" => {
                if let Some(m) = ev.message {
                    if let Some(model) = m.model {
                        self.model = model;
                    }
                    if let Some(u) = m.usage {
                        self.merge_usage(u);
                    }
                }
            }
            "content_block_start" => {
                let index = ev.index.unwrap_or(self.blocks.len());
                let block = match ev.content_block {
                    Some(b) if b.kind == "text" => Block::Text(b.text.unwrap_or_default()),
                    Some(b) if b.kind == "tool_use" => Block::Tool(ToolCall {
                        id: b.id.unwrap_or_default(),
                        name: b.name.unwrap_or_default(),
                        arguments: String::new(),
                    }),
                    _ => Block::Other,
                };
                self.blocks.push((index, block));
            }
            "content_block_delta" => {
                let index = ev.index.unwrap_or(0);
                let Some(d) = ev.delta else { return Ok(()) };
                match (self.block(index), d.kind.as_deref()) {
                    (Some(Block::Text(t)), Some("text_delta")) => {
                        t.push_str(d.text.as_deref().unwrap_or_default())
                    }
                    (Some(Block::Tool(c)), Some("input_json_delta")) => c
                        .arguments
                        .push_str(d.partial_json.as_deref().unwrap_or_default()),
                    (None, _) => {
                        return Err(LlmError::BadResponse(format!(
                            "delta for unknown content block {index}"
                        )))
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(d) = ev.delta {
                    if d.stop_reason.is_some() {
                        self.stop = d.stop_reason;
                    }
                }
                if let Some(u) = ev.usage {
                    self.merge_usage(u);
                }
            }
            "error" => {
                return Err(LlmError::BadResponse(format!(
                    "stream error: {}",
                    ev.error.unwrap_or(Json::Null)
                )))
            }
            // ping, content_block_stop, message_stop and future event types.
            _ => {}
        }
        Ok(())
    }

    fn finish(mut self) -> Result<ChatReply, LlmError> {
        self.blocks.sort_by_key(|(i, _)| *i);
        let mut content = String::new();
        let mut tool_calls = Vec::new();
        for (_, b) in self.blocks {
            match b {
                Block::Text(t) => content.push_str(&t),
                Block::Tool(mut c) => {
                    if c.arguments.trim().is_empty() {
                        c.arguments = "{}".into();
                    }
                    tool_calls.push(c);
                }
                Block::Other => {}
            }
        }
        Ok(ChatReply {
            content,
            tool_calls,
            usage: self.saw_usage.then(|| self.usage.usage()),
            finish_reason: stop_reason(self.stop.as_deref()),
            model: self.model,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentos_abi::device::ChatMessage;

    #[test]
    fn request_merges_turns_and_lifts_system() {
        let req = ChatRequest::new(vec![
            ChatMessage::system("a"),
            ChatMessage::system("b"),
            ChatMessage::user("q"),
            ChatMessage::assistant_calls(
                "thinking",
                vec![
                    ToolCall {
                        id: "t1".into(),
                        name: "add".into(),
                        arguments: r#"{"a":1}"#.into(),
                    },
                    ToolCall {
                        id: "t2".into(),
                        name: "add".into(),
                        arguments: String::new(),
                    },
                ],
            ),
            ChatMessage::tool("t1", "add", "1"),
            ChatMessage::tool("t2", "add", "2"),
        ]);
        let j = serde_json::to_value(wire_request(&req, "claude", 99).unwrap()).unwrap();
        assert_eq!(j["system"], "a\n\nb");
        assert_eq!(j["max_tokens"], 99);
        assert_eq!(j["messages"].as_array().unwrap().len(), 3);
        assert_eq!(j["messages"][1]["content"][1]["type"], "tool_use");
        assert_eq!(j["messages"][1]["content"][1]["input"]["a"], 1);
        assert_eq!(j["messages"][2]["content"][1]["tool_use_id"], "t2");
    }

    #[test]
    fn stream_events_assemble() {
        let mut a = StreamAssembly::default();
        for d in [
            r#"{"type":"message_start","message":{"model":"claude","usage":{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":1}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"tu","name":"add","input":{}}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"2}"}}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":7}}"#,
            r#"{"type":"message_stop"}"#,
        ] {
            a.event("", d).unwrap();
        }
        let r = a.finish().unwrap();
        assert_eq!(r.content, "Hi");
        assert_eq!(r.tool_calls[0].arguments, r#"{"a":2}"#);
        assert_eq!(r.finish_reason, FinishReason::ToolCalls);
        assert_eq!(
            r.usage,
            Some(TokenUsage {
                prompt_tokens: 15,
                completion_tokens: 7,
                cached_tokens: 5
            })
        );
    }
}
