//! The LLM device: a [`Provider`] behind the driver ABI.
//!
//! A process reads a [`ChatRequest`] value from its handle; the driver decodes it, calls the
//! provider on the driver I/O runtime and answers with the [`ChatReply`] value and a [`Cost`]:
//! tokens are the provider-reported usage (prompt + completion) and micro-dollars come from a
//! per-model [`PriceTable`]. Only when a provider reports no usage are tokens estimated from
//! the text (the seed's estimate: 1.5 per CJK character, one per four other characters).
//!
//! A process may also read the string `"capabilities"` ([`LlmRequest::Capabilities`]): the
//! device answers, free of charge, the provider's [`LlmCapabilities`] — whether the model calls
//! tools natively, whether it takes a GBNF grammar or a JSON-schema response format, and its
//! context window where the provider knows it. That is how an agent decides between native
//! tool calls and constrained actions without depending on this crate.
//!
//! Providers: [`OpenAiProvider`] (OpenAI-compatible `/v1/chat/completions`: llama.cpp, vLLM,
//! Ollama and OpenAI itself), [`AnthropicProvider`] (`/v1/messages`) and [`ScriptedProvider`]
//! for tests. A provider failure is an [`LlmError`] value and reaches the process as a
//! `DriverError`; nothing here panics on a bad request or a bad response.

#[cfg(feature = "http")]
mod anthropic;
#[cfg(feature = "http")]
mod http;
#[cfg(feature = "http")]
pub mod local;
#[cfg(feature = "http")]
mod openai;
mod price;
mod scripted;
mod toolparse;

#[cfg(feature = "http")]
pub use anthropic::{AnthropicConfig, AnthropicProvider};
#[cfg(feature = "http")]
pub use http::RetryPolicy;
#[cfg(feature = "http")]
pub use openai::{OpenAiConfig, OpenAiProvider};
pub use price::{ModelPrice, PriceTable};
pub use scripted::{ScriptedProvider, ScriptedReply};
pub use toolparse::parse_tool_calls_from_content;

use crate::rt::IoRuntime;
use agentos_abi::device::{
    ChatReply, ChatRequest, DeviceMessage, LlmCapabilities, LlmRequest, TokenUsage,
};
use agentos_abi::driver::BoxFuture;
use agentos_abi::{Cost, Driver, DriverError, DriverHandle, OpenCtx, Reply, Value};
use std::sync::Arc;
use thiserror::Error;

/// Why a provider call failed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum LlmError {
    /// The request cannot be sent as is (a tool schema that is not JSON, say).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The provider answered with an error status (after any retries).
    #[error("provider returned HTTP {status}: {body}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// The connection failed or timed out.
    #[error("transport: {0}")]
    Transport(String),
    /// The provider's response could not be understood.
    #[error("bad response: {0}")]
    BadResponse(String),
    /// The provider is misconfigured (a missing model, a bad base URL).
    #[error("config: {0}")]
    Config(String),
    /// A scripted provider ran out of replies, or a scripted failure.
    #[error("scripted: {0}")]
    Scripted(String),
}

impl From<LlmError> for DriverError {
    fn from(e: LlmError) -> Self {
        match e {
            LlmError::InvalidRequest(m) => DriverError::BadRequest(m),
            other => DriverError::Failed(format!("llm: {other}")),
        }
    }
}

/// A chat-completion backend.
pub trait Provider: Send + Sync + 'static {
    /// A short name for diagnostics ("openai", "anthropic", "scripted").
    fn name(&self) -> &str;
    /// Answer one chat request. Runs on the driver I/O runtime (tokio), so it may do I/O.
    fn chat<'a>(&'a self, req: &'a ChatRequest) -> BoxFuture<'a, Result<ChatReply, LlmError>>;
    /// What the provider can do: native tool calls, grammars, JSON schemas, the context
    /// window. Answered from its configuration (a provider may ask its server once, and
    /// should remember the answer). The default is [`LlmCapabilities::native`].
    fn capabilities(&self) -> BoxFuture<'_, Result<LlmCapabilities, LlmError>> {
        Box::pin(async { Ok(LlmCapabilities::native()) })
    }
}

/// The seed's token estimate, defined once in `abi` so every layer counts alike.
pub use agentos_abi::device::estimate_tokens;

/// Estimated usage of a request/reply pair, for providers that report none.
pub fn estimate_usage(req: &ChatRequest, reply: &ChatReply) -> TokenUsage {
    let prompt: u64 = req
        .messages
        .iter()
        .map(|m| {
            4 + estimate_tokens(&m.content)
                + m.tool_calls
                    .iter()
                    .map(|c| estimate_tokens(&c.name) + estimate_tokens(&c.arguments))
                    .sum::<u64>()
        })
        .sum::<u64>()
        + req
            .tools
            .iter()
            .map(|t| {
                estimate_tokens(&t.name)
                    + estimate_tokens(&t.description)
                    + estimate_tokens(&t.parameters)
            })
            .sum::<u64>();
    let completion = estimate_tokens(&reply.content)
        + reply
            .tool_calls
            .iter()
            .map(|c| estimate_tokens(&c.name) + estimate_tokens(&c.arguments))
            .sum::<u64>();
    TokenUsage {
        prompt_tokens: prompt,
        completion_tokens: completion.max(1),
        cached_tokens: 0,
    }
}

/// The LLM device. Register it with the kernel; processes holding its device capability
/// open it and `read` [`ChatRequest`] values.
pub struct LlmDriver {
    name: String,
    provider: Arc<dyn Provider>,
    prices: Arc<PriceTable>,
    runtime: IoRuntime,
}

impl LlmDriver {
    /// An `llm` device over `provider`, with the default price table and the process-wide
    /// driver runtime.
    pub fn new(provider: Arc<dyn Provider>) -> Result<Self, crate::rt::RuntimeError> {
        Ok(LlmDriver {
            name: "llm".into(),
            provider,
            prices: Arc::new(PriceTable::common()),
            runtime: IoRuntime::current_or_global()?,
        })
    }

    /// Register under another device name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Price calls with `prices`.
    pub fn with_prices(mut self, prices: PriceTable) -> Self {
        self.prices = Arc::new(prices);
        self
    }

    /// Run provider calls on `runtime`.
    pub fn with_runtime(mut self, runtime: IoRuntime) -> Self {
        self.runtime = runtime;
        self
    }
}

impl Driver for LlmDriver {
    fn name(&self) -> &str {
        &self.name
    }
    fn open(&self, at: OpenCtx) -> BoxFuture<'static, Result<Arc<dyn DriverHandle>, DriverError>> {
        if let Err(e) = at.unscoped(&self.name) {
            return Box::pin(async move { Err(e) });
        }
        let h: Arc<dyn DriverHandle> = Arc::new(LlmHandle {
            provider: self.provider.clone(),
            prices: self.prices.clone(),
            runtime: self.runtime.clone(),
        });
        Box::pin(async move { Ok(h) })
    }
}

struct LlmHandle {
    provider: Arc<dyn Provider>,
    prices: Arc<PriceTable>,
    runtime: IoRuntime,
}

/// The cost of one completion: reported (or estimated) tokens, priced by model.
pub fn chat_cost(prices: &PriceTable, usage: &TokenUsage, model: &str) -> Cost {
    Cost {
        tokens: usage.total(),
        usd_micros: prices.usd_micros(model, usage),
        ..Cost::default()
    }
}

impl DriverHandle for LlmHandle {
    fn read(&self, req: Value) -> BoxFuture<'static, Result<Reply, DriverError>> {
        let req = match LlmRequest::from_value(req) {
            Ok(LlmRequest::Chat(r)) => *r,
            Ok(LlmRequest::Capabilities) => return self.capabilities(),
            Err(e) => return Box::pin(async move { Err(DriverError::BadRequest(e.to_string())) }),
        };
        let provider = self.provider.clone();
        let prices = self.prices.clone();
        // A scripted reply is ready at once and skips the task hop (`IoRuntime::start`).
        let task = self.runtime.start(async move {
            let reply = provider.chat(&req).await?;
            let usage = match reply.usage {
                Some(u) => u,
                None => estimate_usage(&req, &reply),
            };
            let model = if reply.model.is_empty() {
                req.model.clone().unwrap_or_default()
            } else {
                reply.model.clone()
            };
            let cost = chat_cost(&prices, &usage, &model);
            Ok::<_, LlmError>(Reply {
                value: reply.to_value(),
                cost,
            })
        });
        Box::pin(async move {
            match task.await {
                Ok(r) => r.map_err(DriverError::from),
                Err(e) => Err(DriverError::Failed(format!("llm provider task {e}"))),
            }
        })
    }
}

impl LlmHandle {
    /// Answer [`LlmRequest::Capabilities`]: the provider's, free of charge.
    fn capabilities(&self) -> BoxFuture<'static, Result<Reply, DriverError>> {
        let provider = self.provider.clone();
        let task = self.runtime.start(async move {
            let caps = provider.capabilities().await?;
            Ok::<_, LlmError>(Reply {
                value: caps.to_value(),
                cost: Cost::FREE,
            })
        });
        Box::pin(async move {
            match task.await {
                Ok(r) => r.map_err(DriverError::from),
                Err(e) => Err(DriverError::Failed(format!("llm provider task {e}"))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentos_abi::device::ChatMessage;

    #[test]
    fn estimates_follow_the_seed() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("abcde"), 2);
        assert_eq!(estimate_tokens("你好"), 3);
        let req = ChatRequest::new(vec![ChatMessage::user("abcdefgh")]);
        let u = estimate_usage(&req, &ChatReply::text("abcd"));
        assert_eq!((u.prompt_tokens, u.completion_tokens), (6, 1));
    }

    #[test]
    fn provider_errors_map_to_driver_errors() {
        assert_eq!(
            DriverError::from(LlmError::InvalidRequest("x".into())),
            DriverError::BadRequest("x".into())
        );
        assert!(matches!(
            DriverError::from(LlmError::Status {
                status: 500,
                body: "b".into()
            }),
            DriverError::Failed(m) if m.contains("500")
        ));
    }
}
