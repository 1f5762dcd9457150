//! The OpenAI-compatible provider: `POST {base}/v1/chat/completions`.
//!
//! Speaks the chat-completions wire format that OpenAI, llama.cpp's server, vLLM and Ollama
//! share: system/user/assistant/tool messages, function tools and `tool_calls`,
//! `response_format: json_schema`, llama.cpp's `grammar` (sent only when the config says the
//! server supports it), usage with `prompt_tokens_details.cached_tokens`, and streaming
//! (server-sent events whose content and tool-call deltas are assembled into one reply).

use super::http::{client, endpoint, post_json, read_json, read_sse, RetryPolicy};
use super::toolparse::parse_tool_calls_from_content;
use super::{LlmError, Provider};
use agentos_abi::device::{
    ChatMessage, ChatReply, ChatRequest, FinishReason, LlmCapabilities, Role, TokenUsage, ToolCall,
    ToolChoice,
};
use agentos_abi::driver::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::time::Duration;

/// Configuration of an [`OpenAiProvider`].
#[derive(Clone, Debug, PartialEq)]
pub struct OpenAiConfig {
    /// Server root, with or without the trailing `/v1` (`https://api.openai.com/v1`,
    /// `http://127.0.0.1:8080`).
    pub base_url: String,
    /// Bearer token; local servers usually need none.
    pub api_key: Option<String>,
    /// Model used when a request names none.
    pub model: String,
    /// The server understands llama.cpp's `grammar` field (GBNF); otherwise it is not sent.
    pub supports_grammar: bool,
    /// The server honours `response_format: json_schema`.
    pub supports_json_schema: bool,
    /// The model calls the request's tools natively. A small local model behind a chat
    /// template without tools does not; agents then ask for constrained actions instead.
    pub native_tools: bool,
    /// The model's context window in tokens, when known.
    pub context_tokens: Option<u32>,
    /// When `context_tokens` is unknown, ask the server (llama.cpp's `GET /props`,
    /// `default_generation_settings.n_ctx`) once.
    pub probe_context: bool,
    /// Look for tool calls written into the content when the server returns no `tool_calls`.
    pub parse_content_tool_calls: bool,
    /// Whole-request timeout (streamed bodies included).
    pub timeout: Duration,
    /// Connection timeout.
    pub connect_timeout: Duration,
    /// Retries on 429/5xx.
    pub retry: RetryPolicy,
}

impl OpenAiConfig {
    /// A config for `model` at `base_url` with defaults: no key, no grammar, JSON schemas and
    /// native tool calls, an unknown context window (not probed), content tool-call parsing
    /// on, 120 s timeout, 10 s connect timeout, 3 retries.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        OpenAiConfig {
            base_url: base_url.into(),
            api_key: None,
            model: model.into(),
            supports_grammar: false,
            supports_json_schema: true,
            native_tools: true,
            context_tokens: None,
            probe_context: false,
            parse_content_tool_calls: true,
            timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
        }
    }

    /// A llama.cpp server (`llama-server`) running a small local model: GBNF grammars and JSON
    /// schemas are honoured, the model is not trusted with native tool calls (so agents ask
    /// for one constrained action per step), and the context window is asked of the server.
    /// Set `native_tools` for a model whose chat template does call tools well.
    pub fn llama_cpp(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        OpenAiConfig {
            supports_grammar: true,
            native_tools: false,
            probe_context: true,
            ..OpenAiConfig::new(base_url, model)
        }
    }

    /// What this config says the provider can do (`context_tokens` as configured).
    pub fn capabilities(&self) -> LlmCapabilities {
        LlmCapabilities {
            native_tools: self.native_tools,
            grammar: self.supports_grammar,
            json_schema: self.supports_json_schema,
            context_tokens: self.context_tokens,
        }
    }

    /// From the environment: `AGENTOS_LLM_BASE_URL` (default `https://api.openai.com/v1`),
    /// `AGENTOS_LLM_API_KEY` (optional), `AGENTOS_LLM_MODEL` (required),
    /// `AGENTOS_LLM_GRAMMAR` (`1`/`true` when the server takes GBNF grammars — a llama.cpp
    /// server, whose context window is then probed), `AGENTOS_LLM_NATIVE_TOOLS` (`0`/`false`
    /// when the model does not call tools natively), `AGENTOS_LLM_JSON_SCHEMA` (`0`/`false`
    /// when the server refuses `response_format: json_schema`) and `AGENTOS_LLM_CONTEXT` (the
    /// context window in tokens).
    pub fn from_env() -> Result<Self, LlmError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`OpenAiConfig::from_env`], reading variables through `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, LlmError> {
        let model = get("AGENTOS_LLM_MODEL")
            .filter(|m| !m.is_empty())
            .ok_or_else(|| LlmError::Config("AGENTOS_LLM_MODEL is not set".into()))?;
        let base = get("AGENTOS_LLM_BASE_URL")
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| "https://api.openai.com/v1".into());
        let mut cfg = OpenAiConfig::new(base, model);
        cfg.api_key = get("AGENTOS_LLM_API_KEY").filter(|k| !k.is_empty());
        cfg.supports_grammar = matches!(
            get("AGENTOS_LLM_GRAMMAR").as_deref(),
            Some("1" | "true" | "yes")
        );
        cfg.probe_context = cfg.supports_grammar;
        let off = |k: &str| matches!(get(k).as_deref(), Some("0" | "false" | "no"));
        cfg.native_tools = !off("AGENTOS_LLM_NATIVE_TOOLS");
        cfg.supports_json_schema = !off("AGENTOS_LLM_JSON_SCHEMA");
        if let Some(n) = get("AGENTOS_LLM_CONTEXT").filter(|n| !n.trim().is_empty()) {
            let n = n.trim().parse::<u32>().map_err(|e| {
                LlmError::Config(format!(
                    "AGENTOS_LLM_CONTEXT {n:?} is not a token count: {e}"
                ))
            })?;
            cfg.context_tokens = Some(n);
        }
        Ok(cfg)
    }
}

/// An OpenAI-compatible chat-completions provider.
#[derive(Debug)]
pub struct OpenAiProvider {
    cfg: OpenAiConfig,
    url: String,
    http: reqwest::Client,
    /// The context window the server reported (`Some(None)`: asked, not reported).
    probed: parking_lot::Mutex<Option<Option<u32>>>,
}

impl OpenAiProvider {
    /// A provider for `cfg`.
    pub fn new(cfg: OpenAiConfig) -> Result<Self, LlmError> {
        let http = client(cfg.timeout, cfg.connect_timeout)?;
        let url = endpoint(&cfg.base_url, "chat/completions");
        Ok(OpenAiProvider {
            cfg,
            url,
            http,
            probed: parking_lot::Mutex::new(None),
        })
    }

    /// A provider configured from the environment (see [`OpenAiConfig::from_env`]).
    pub fn from_env() -> Result<Self, LlmError> {
        Self::new(OpenAiConfig::from_env()?)
    }

    /// The config in use.
    pub fn config(&self) -> &OpenAiConfig {
        &self.cfg
    }

    async fn complete(&self, req: &ChatRequest) -> Result<ChatReply, LlmError> {
        let model = req.model.as_deref().unwrap_or(&self.cfg.model);
        let body = wire_request(req, model, self.cfg.supports_grammar)?;
        let body = serde_json::to_vec(&body)
            .map_err(|e| LlmError::InvalidRequest(format!("encoding request: {e}")))?;
        let headers: Vec<(&'static str, String)> = match &self.cfg.api_key {
            Some(k) => vec![("authorization", format!("Bearer {k}"))],
            None => Vec::new(),
        };
        let resp = post_json(&self.http, &self.url, &headers, body, &self.cfg.retry).await?;
        let mut reply = if req.stream {
            let mut acc = StreamAssembly::default();
            read_sse(resp, |ev| acc.event(&ev.data)).await?;
            acc.finish()
        } else {
            from_wire_response(read_json::<WireResponse>(resp).await?)?
        };
        if reply.model.is_empty() {
            reply.model = model.to_owned();
        }
        if reply.tool_calls.is_empty() && self.cfg.parse_content_tool_calls {
            if let Some((rest, calls)) = parse_tool_calls_from_content(&reply.content, &req.tools) {
                reply.content = rest;
                reply.tool_calls = calls;
                reply.finish_reason = FinishReason::ToolCalls;
            }
        }
        Ok(reply)
    }
}

impl OpenAiProvider {
    /// The context window: configured, or asked of the server once (`probe_context`). A server
    /// that does not answer leaves it unknown; that is not an error.
    async fn context_tokens(&self) -> Option<u32> {
        if self.cfg.context_tokens.is_some() || !self.cfg.probe_context {
            return self.cfg.context_tokens;
        }
        if let Some(known) = *self.probed.lock() {
            return known;
        }
        let mut rb = self.http.get(props_url(&self.cfg.base_url));
        if let Some(k) = &self.cfg.api_key {
            rb = rb.header("authorization", format!("Bearer {k}"));
        }
        let found = match rb.send().await {
            Ok(resp) if resp.status().is_success() => match read_json::<Json>(resp).await {
                Ok(j) => context_from_props(&j),
                Err(_) => None,
            },
            _ => None,
        };
        *self.probed.lock() = Some(found);
        found
    }
}

/// llama.cpp's `/props` endpoint for a base URL (with or without `/v1`).
fn props_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    let root = base.strip_suffix("/v1").unwrap_or(base);
    format!("{root}/props")
}

/// The context window in a llama.cpp `/props` answer.
fn context_from_props(j: &Json) -> Option<u32> {
    j.get("default_generation_settings")
        .and_then(|d| d.get("n_ctx"))
        .or_else(|| j.get("n_ctx"))
        .and_then(Json::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n > 0)
}

impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        "openai"
    }
    fn chat<'a>(&'a self, req: &'a ChatRequest) -> BoxFuture<'a, Result<ChatReply, LlmError>> {
        Box::pin(self.complete(req))
    }
    fn capabilities(&self) -> BoxFuture<'_, Result<LlmCapabilities, LlmError>> {
        Box::pin(async move {
            Ok(LlmCapabilities {
                context_tokens: self.context_tokens().await,
                ..self.cfg.capabilities()
            })
        })
    }
}

// ---- wire format: request ----

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<WireResponseFormat<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    grammar: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<WireStreamOptions>,
}

#[derive(Serialize)]
struct WireStreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<WireToolCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

#[derive(Serialize)]
struct WireToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunctionCall<'a>,
}

#[derive(Serialize)]
struct WireFunctionCall<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct WireTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunctionDef<'a>,
}

#[derive(Serialize)]
struct WireFunctionDef<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    description: &'a str,
    parameters: Json,
}

#[derive(Serialize)]
struct WireResponseFormat<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    json_schema: WireJsonSchema<'a>,
}

#[derive(Serialize)]
struct WireJsonSchema<'a> {
    name: &'a str,
    schema: Json,
    strict: bool,
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

/// Parse a JSON text the program supplied (a schema) for the wire.
pub(crate) fn schema_json(what: &str, text: &str) -> Result<Json, LlmError> {
    serde_json::from_str(text)
        .map_err(|e| LlmError::InvalidRequest(format!("{what} is not valid JSON: {e}")))
}

fn wire_message(m: &ChatMessage) -> WireMessage<'_> {
    let calls: Vec<WireToolCall<'_>> = m
        .tool_calls
        .iter()
        .map(|c| WireToolCall {
            id: &c.id,
            kind: "function",
            function: WireFunctionCall {
                name: &c.name,
                arguments: if c.arguments.is_empty() {
                    "{}"
                } else {
                    &c.arguments
                },
            },
        })
        .collect();
    // An assistant turn that only calls tools has `content: null`.
    let content = if m.role == Role::Assistant && !calls.is_empty() && m.content.is_empty() {
        None
    } else {
        Some(m.content.as_str())
    };
    WireMessage {
        role: role_name(m.role),
        content,
        tool_calls: calls,
        tool_call_id: if m.role == Role::Tool {
            m.tool_call_id.as_deref()
        } else {
            None
        },
    }
}

fn wire_request<'a>(
    req: &'a ChatRequest,
    model: &'a str,
    grammar_ok: bool,
) -> Result<WireRequest<'a>, LlmError> {
    let tools = req
        .tools
        .iter()
        .map(|t| {
            Ok(WireTool {
                kind: "function",
                function: WireFunctionDef {
                    name: &t.name,
                    description: &t.description,
                    parameters: schema_json(
                        &format!("parameters of tool {}", t.name),
                        &t.parameters,
                    )?,
                },
            })
        })
        .collect::<Result<Vec<_>, LlmError>>()?;
    let response_format = match &req.response_format {
        Some(f) => Some(WireResponseFormat {
            kind: "json_schema",
            json_schema: WireJsonSchema {
                name: if f.name.is_empty() {
                    "response"
                } else {
                    &f.name
                },
                schema: schema_json("response_format schema", &f.schema)?,
                strict: f.strict,
            },
        }),
        None => None,
    };
    // llama.cpp refuses a custom grammar together with tools ("Cannot use custom grammar
    // constraints with tools"): when the grammar goes out, the tools stay home — the grammar
    // shapes the call as text and the reply parser still recovers it against `req.tools`.
    let grammar = if grammar_ok {
        req.grammar.as_deref()
    } else {
        None
    };
    let (tools, tool_choice) = if grammar.is_some() {
        (Vec::new(), None)
    } else {
        (tools, req.tool_choice.as_ref())
    };
    Ok(WireRequest {
        model,
        messages: req.messages.iter().map(wire_message).collect(),
        tools,
        response_format,
        tool_choice: tool_choice.map(|c| match c {
            ToolChoice::Auto => Json::from("auto"),
            ToolChoice::None => Json::from("none"),
            ToolChoice::Required => Json::from("required"),
            ToolChoice::Tool(name) => {
                serde_json::json!({"type": "function", "function": {"name": name}})
            }
        }),
        grammar,
        max_tokens: req.max_tokens,
        temperature: req.temperature,
        stream: req.stream,
        stream_options: req.stream.then_some(WireStreamOptions {
            include_usage: true,
        }),
    })
}

// ---- wire format: response ----

#[derive(Deserialize)]
struct WireResponse {
    model: Option<String>,
    choices: Option<Vec<WireChoice>>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: Option<WireOutMessage>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireOutMessage {
    content: Option<String>,
    tool_calls: Option<Vec<WireOutToolCall>>,
}

#[derive(Deserialize)]
struct WireOutToolCall {
    id: Option<String>,
    function: Option<WireOutFunction>,
}

#[derive(Deserialize)]
struct WireOutFunction {
    name: Option<String>,
    arguments: Option<Json>,
}

#[derive(Deserialize)]
struct WireUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<WirePromptDetails>,
}

#[derive(Deserialize)]
struct WirePromptDetails {
    cached_tokens: Option<u64>,
}

impl WireUsage {
    fn usage(&self) -> TokenUsage {
        TokenUsage {
            prompt_tokens: self.prompt_tokens.unwrap_or(0),
            completion_tokens: self.completion_tokens.unwrap_or(0),
            cached_tokens: self
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
        }
    }
}

fn finish_reason(s: Option<&str>) -> FinishReason {
    match s {
        None | Some("stop") => FinishReason::Stop,
        Some("length") => FinishReason::Length,
        Some("tool_calls" | "function_call") => FinishReason::ToolCalls,
        Some("content_filter") => FinishReason::ContentFilter,
        Some(_) => FinishReason::Other,
    }
}

fn arguments_text(a: Option<Json>) -> String {
    match a {
        None | Some(Json::Null) => "{}".to_owned(),
        Some(Json::String(s)) => s,
        Some(other) => other.to_string(),
    }
}

fn from_wire_response(r: WireResponse) -> Result<ChatReply, LlmError> {
    let choice = r
        .choices
        .and_then(|c| c.into_iter().next())
        .ok_or_else(|| LlmError::BadResponse("no choices in the response".into()))?;
    let msg = choice.message.unwrap_or(WireOutMessage {
        content: None,
        tool_calls: None,
    });
    let tool_calls = msg
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let f = c.function.unwrap_or(WireOutFunction {
                name: None,
                arguments: None,
            });
            ToolCall {
                id: c.id.unwrap_or_else(|| format!("call_{i}")),
                name: f.name.unwrap_or_default(),
                arguments: arguments_text(f.arguments),
            }
        })
        .collect();
    Ok(ChatReply {
        content: msg.content.unwrap_or_default(),
        tool_calls,
        usage: r.usage.as_ref().map(WireUsage::usage),
        finish_reason: finish_reason(choice.finish_reason.as_deref()),
        model: r.model.unwrap_or_default(),
    })
}

// ---- streaming ----

#[derive(Deserialize)]
struct WireChunk {
    model: Option<String>,
    choices: Option<Vec<WireChunkChoice>>,
    usage: Option<WireUsage>,
    error: Option<Json>,
}

#[derive(Deserialize)]
struct WireChunkChoice {
    delta: Option<WireDelta>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireDelta {
    content: Option<String>,
    tool_calls: Option<Vec<WireDeltaToolCall>>,
}

#[derive(Deserialize)]
struct WireDeltaToolCall {
    index: Option<usize>,
    id: Option<String>,
    function: Option<WireDeltaFunction>,
}

#[derive(Deserialize)]
struct WireDeltaFunction {
    name: Option<String>,
    arguments: Option<String>,
}

/// Assembles streamed chunks into one reply.
#[derive(Default)]
struct StreamAssembly {
    content: String,
    calls: Vec<ToolCall>,
    usage: Option<TokenUsage>,
    finish: Option<String>,
    model: String,
    done: bool,
}

impl StreamAssembly {
    fn event(&mut self, data: &str) -> Result<(), LlmError> {
        let data = data.trim();
        if data.is_empty() || self.done {
            return Ok(());
        }
        if data == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let chunk: WireChunk = serde_json::from_str(data)
            .map_err(|e| LlmError::BadResponse(format!("stream chunk: {e}")))?;
        if let Some(err) = chunk.error {
            return Err(LlmError::BadResponse(format!("stream error: {err}")));
        }
        if let Some(m) = chunk.model {
            self.model = m;
        }
        if let Some(u) = chunk.usage {
            self.usage = Some(u.usage());
        }
        for choice in chunk.choices.unwrap_or_default() {
            if let Some(f) = choice.finish_reason {
                self.finish = Some(f);
            }
            let Some(delta) = choice.delta else { continue };
            if let Some(c) = delta.content {
                self.content.push_str(&c);
            }
            for tc in delta.tool_calls.unwrap_or_default() {
                let index = tc.index.unwrap_or(self.calls.len().saturating_sub(1));
                if index >= 1024 {
                    return Err(LlmError::BadResponse(format!("tool call index {index}")));
                }
                while self.calls.len() <= index {
                    self.calls.push(ToolCall::default());
                }
                let call = &mut self.calls[index];
                if let Some(id) = tc.id {
                    call.id = id;
                }
                if let Some(f) = tc.function {
                    if let Some(n) = f.name {
                        call.name.push_str(&n);
                    }
                    if let Some(a) = f.arguments {
                        call.arguments.push_str(&a);
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(self) -> ChatReply {
        let calls = self
            .calls
            .into_iter()
            .enumerate()
            .map(|(i, mut c)| {
                if c.id.is_empty() {
                    c.id = format!("call_{i}");
                }
                if c.arguments.is_empty() {
                    c.arguments = "{}".into();
                }
                c
            })
            .collect();
        ChatReply {
            content: self.content,
            tool_calls: calls,
            usage: self.usage,
            finish_reason: finish_reason(self.finish.as_deref()),
            model: self.model,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentos_abi::device::{JsonSchemaFormat, ToolSpec};

    #[test]
    fn request_has_the_wire_shape() {
        let mut req = ChatRequest::new(vec![
            ChatMessage::system("s"),
            ChatMessage::assistant_calls(
                "",
                vec![ToolCall {
                    id: "c1".into(),
                    name: "add".into(),
                    arguments: "{}".into(),
                }],
            ),
            ChatMessage::tool("c1", "add", "3"),
        ]);
        req.tools = vec![ToolSpec {
            name: "add".into(),
            description: "d".into(),
            parameters: r#"{"type":"object"}"#.into(),
        }];
        req.response_format = Some(JsonSchemaFormat {
            name: String::new(),
            schema: r#"{"type":"object"}"#.into(),
            strict: true,
        });
        req.grammar = Some("root ::= \"x\"".into());
        req.stream = true;
        let j = serde_json::to_value(wire_request(&req, "m", false).unwrap()).unwrap();
        assert_eq!(j["messages"][1]["content"], Json::Null);
        assert_eq!(j["messages"][1]["tool_calls"][0]["function"]["name"], "add");
        assert_eq!(j["messages"][2]["tool_call_id"], "c1");
        assert_eq!(j["tools"][0]["function"]["parameters"]["type"], "object");
        assert_eq!(j["response_format"]["json_schema"]["name"], "response");
        assert_eq!(j["stream_options"]["include_usage"], true);
        assert!(j.get("grammar").is_none(), "grammar only when supported");
        let j = serde_json::to_value(wire_request(&req, "m", true).unwrap()).unwrap();
        assert_eq!(j["grammar"], "root ::= \"x\"");
        assert!(
            j.get("tools").is_none(),
            "llama.cpp refuses a grammar with tools"
        );
        req.tools[0].parameters = "{not json".into();
        assert!(matches!(
            wire_request(&req, "m", false),
            Err(LlmError::InvalidRequest(_))
        ));
        req.tools[0].parameters = r#"{"type":"object"}"#.into();
        req.tool_choice = Some(ToolChoice::Tool("add".into()));
        let j = serde_json::to_value(wire_request(&req, "m", false).unwrap()).unwrap();
        assert_eq!(j["tool_choice"]["function"]["name"], "add");
        req.tool_choice = Some(ToolChoice::Required);
        let j = serde_json::to_value(wire_request(&req, "m", false).unwrap()).unwrap();
        assert_eq!(j["tool_choice"], "required");
    }

    #[test]
    fn llama_cpp_constrains_and_probes_its_context() {
        let c = OpenAiConfig::llama_cpp("http://127.0.0.1:8080/v1", "smollm2");
        let caps = c.capabilities();
        assert!(!caps.native_tools && caps.grammar && caps.json_schema);
        assert!(c.probe_context && c.context_tokens.is_none());
        assert_eq!(props_url("http://h:1/v1/"), "http://h:1/props");
        assert_eq!(props_url("http://h:1"), "http://h:1/props");
        let props: Json = serde_json::json!({"default_generation_settings": {"n_ctx": 4096}});
        assert_eq!(context_from_props(&props), Some(4096));
        assert_eq!(
            context_from_props(&serde_json::json!({"n_ctx": 512})),
            Some(512)
        );
        assert_eq!(context_from_props(&serde_json::json!({"n_ctx": -1})), None);
        assert_eq!(context_from_props(&serde_json::json!([])), None);
    }

    #[test]
    fn stream_deltas_assemble() {
        let mut a = StreamAssembly::default();
        for d in [
            r#"{"model":"m","choices":[{"delta":{"role":"assistant","content":"He"}}]}"#,
            r#"{"choices":[{"delta":{"content":"llo"}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c","type":"function","function":{"name":"add","arguments":""}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]},"finish_reason":"tool_calls"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":1}}}"#,
            "[DONE]",
        ] {
            a.event(d).unwrap();
        }
        let r = a.finish();
        assert_eq!(r.content, "Hello");
        assert_eq!(r.tool_calls[0].arguments, r#"{"a":1}"#);
        assert_eq!(r.finish_reason, FinishReason::ToolCalls);
        assert_eq!(r.usage.unwrap().cached_tokens, 1);
        assert!(StreamAssembly::default().event("{oops").is_err());
    }

    #[test]
    fn env_config() {
        let env = |k: &str| match k {
            "AGENTOS_LLM_MODEL" => Some("qwen".to_owned()),
            "AGENTOS_LLM_BASE_URL" => Some("http://127.0.0.1:8080".to_owned()),
            "AGENTOS_LLM_GRAMMAR" => Some("1".to_owned()),
            _ => None,
        };
        let c = OpenAiConfig::from_lookup(env).unwrap();
        assert_eq!((c.model.as_str(), c.supports_grammar), ("qwen", true));
        assert_eq!(c.api_key, None);
        assert!(c.probe_context && c.native_tools && c.supports_json_schema);
        let small = |k: &str| match k {
            "AGENTOS_LLM_MODEL" => Some("smollm2".to_owned()),
            "AGENTOS_LLM_NATIVE_TOOLS" => Some("0".to_owned()),
            "AGENTOS_LLM_JSON_SCHEMA" => Some("false".to_owned()),
            "AGENTOS_LLM_CONTEXT" => Some("2048".to_owned()),
            _ => None,
        };
        let c = OpenAiConfig::from_lookup(small).unwrap();
        assert_eq!(
            c.capabilities(),
            LlmCapabilities {
                native_tools: false,
                grammar: false,
                json_schema: false,
                context_tokens: Some(2048),
            }
        );
        let bad = |k: &str| match k {
            "AGENTOS_LLM_MODEL" => Some("m".to_owned()),
            "AGENTOS_LLM_CONTEXT" => Some("lots".to_owned()),
            _ => None,
        };
        assert!(matches!(
            OpenAiConfig::from_lookup(bad),
            Err(LlmError::Config(_))
        ));
        assert!(matches!(
            OpenAiConfig::from_lookup(|_| None),
            Err(LlmError::Config(_))
        ));
    }
}
