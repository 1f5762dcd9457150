//! Helpers for the learning scenarios: scripted completions on the host ([`HostChat`] over a
//! closure, recording requests) and a deterministic kernel whose `llm` device is a
//! [`ScriptedProvider`], with an init process that gets an [`LlmDevice`] to run a body with.

#![allow(dead_code)]

use crate::util::*;
use agentos_abi::*;
use agentos_drivers::llm::{LlmDriver, ModelPrice, PriceTable, ScriptedProvider};
use agentos_kernel::*;
use agentos_userland::llm::{Chat, ChatError, LlmDevice};
use std::future::Future;
use std::sync::{Arc, Mutex};

/// Tokens every scripted reply reports (prompt + completion) unless it says otherwise.
pub const REPLY_TOKENS: u64 = 15;

/// The model name scripted replies carry, priced by [`prices`].
pub const MODEL: &str = "scripted-model";

/// A text reply costing [`REPLY_TOKENS`].
pub fn text(content: &str) -> ChatReply {
    reply_costing(content, 10, 5)
}

/// A text reply reporting `prompt` + `completion` tokens.
pub fn reply_costing(content: &str, prompt: u64, completion: u64) -> ChatReply {
    ChatReply {
        usage: Some(TokenUsage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            cached_tokens: 0,
        }),
        model: MODEL.into(),
        ..ChatReply::text(content)
    }
}

/// The system prompt of a request ("" if none).
pub fn system_of(req: &ChatRequest) -> String {
    req.messages
        .iter()
        .find(|m| m.role == Role::System)
        .map(|m| m.content.clone())
        .unwrap_or_default()
}

/// The last user message of a request ("" if none).
pub fn user_of(req: &ChatRequest) -> String {
    req.messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.clone())
        .unwrap_or_default()
}

/// Requests a host-side scripted model received.
pub type Requests = Arc<Mutex<Vec<ChatRequest>>>;

/// What a host-side model answers a request with.
type Answer = Arc<dyn Fn(&ChatRequest) -> Result<String, ChatError> + Send + Sync>;

/// A host-side model: answers with a closure (each reply costing [`REPLY_TOKENS`]) and records
/// every request.
#[derive(Clone)]
pub struct HostChat {
    answer: Answer,
    seen: Requests,
}

impl Chat for HostChat {
    fn chat(
        &self,
        req: ChatRequest,
    ) -> impl std::future::Future<Output = Result<ChatReply, ChatError>> + Send {
        let out = (self.answer)(&req).map(|t| text(&t));
        self.seen.lock().unwrap().push(req);
        std::future::ready(out)
    }
}

/// A host-side model answering `f(request)`, and the log of its requests.
pub fn host_chat(
    f: impl Fn(&ChatRequest) -> Result<String, ChatError> + Send + Sync + 'static,
) -> (HostChat, Requests) {
    let seen: Requests = Arc::new(Mutex::new(Vec::new()));
    let chat = HostChat {
        answer: Arc::new(f),
        seen: seen.clone(),
    };
    (chat, seen)
}

/// The price table of the learning kernels: [`MODEL`] at $1 per million input tokens and $2
/// per million output tokens (so a micro-dollar per prompt token).
pub fn prices() -> PriceTable {
    let mut t = PriceTable::empty();
    t.set(
        MODEL,
        ModelPrice {
            input: 1.0,
            cached_input: 1.0,
            output: 2.0,
        },
    );
    t
}

/// A deterministic kernel with `provider` as its priced `llm` device.
pub fn kernel(provider: &Arc<ScriptedProvider>) -> Kernel {
    let k = det(11);
    k.register_driver(Arc::new(
        LlmDriver::new(provider.clone())
            .expect("llm driver")
            .with_prices(prices()),
    ))
    .expect("register llm");
    k
}

/// What [`in_process`] saw.
#[derive(Debug)]
pub struct Ran<T> {
    /// How init exited.
    pub exit: ExitReason,
    /// What the body returned, if init got that far.
    pub out: Option<T>,
    /// Init's account usage when the body returned.
    pub usage: Usage,
}

/// Boot init with the `llm` device under `quota`, open it, and run `body` with an
/// [`LlmDevice`] over it; collect what it returns.
pub fn in_process<T, F, Fut>(k: &Kernel, quota: Quota, body: F) -> Ran<T>
where
    T: Send + 'static,
    F: Fn(Sys, LlmDevice<Sys>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let seen: Arc<Mutex<Option<(T, Usage)>>> = Arc::new(Mutex::new(None));
    let out = seen.clone();
    let body = Arc::new(body);
    let image = init(move |sys: Sys, boot: SysMsg| {
        let out = out.clone();
        let body = body.clone();
        async move {
            let dev = boot
                .device("llm")
                .ok_or_else(|| ExitReason::fault("no llm device"))?;
            let llm = LlmDevice::open(sys.clone(), dev).await?;
            let r = body(sys.clone(), llm).await;
            *out.lock().unwrap() = Some((r, sys.usage()));
            Ok(())
        }
    });
    let exit = boot_with_and_wait(
        k,
        image,
        BootOpts {
            grant: vec!["llm".into()],
            quota,
            ..BootOpts::default()
        },
    );
    let taken = seen.lock().unwrap().take();
    match taken {
        Some((out, usage)) => Ran {
            exit,
            out: Some(out),
            usage,
        },
        None => Ran {
            exit,
            out: None,
            usage: Usage::default(),
        },
    }
}
