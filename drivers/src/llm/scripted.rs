//! [`ScriptedProvider`]: a provider for tests that answers from a script and records what it
//! was asked.

use super::{LlmError, Provider};
use agentos_abi::device::{ChatReply, ChatRequest, LlmCapabilities};
use agentos_abi::driver::BoxFuture;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// One scripted answer: a reply or a failure.
pub type ScriptedReply = Result<ChatReply, LlmError>;

type Responder = Arc<dyn Fn(&ChatRequest) -> ScriptedReply + Send + Sync>;

enum Script {
    Queue(VecDeque<ScriptedReply>),
    Closure(Responder),
}

/// Answers from a queue of replies (an empty queue is an error) or from a closure, and keeps
/// every request it received. It reports [`LlmCapabilities::native`] unless told otherwise
/// ([`ScriptedProvider::with_capabilities`]), so a test can play a model that cannot call tools
/// natively but follows a grammar.
pub struct ScriptedProvider {
    script: Mutex<Script>,
    requests: Mutex<Vec<ChatRequest>>,
    capabilities: LlmCapabilities,
    asked: AtomicUsize,
}

impl ScriptedProvider {
    /// Answer with these replies, in order.
    pub fn new(replies: impl IntoIterator<Item = ChatReply>) -> Self {
        Self::results(replies.into_iter().map(Ok))
    }

    /// Answer with these outcomes (replies or failures), in order.
    pub fn results(outcomes: impl IntoIterator<Item = ScriptedReply>) -> Self {
        ScriptedProvider {
            script: Mutex::new(Script::Queue(outcomes.into_iter().collect())),
            requests: Mutex::new(Vec::new()),
            capabilities: LlmCapabilities::native(),
            asked: AtomicUsize::new(0),
        }
    }

    /// Answer every request with `f(request)`.
    pub fn with(f: impl Fn(&ChatRequest) -> ScriptedReply + Send + Sync + 'static) -> Self {
        ScriptedProvider {
            script: Mutex::new(Script::Closure(Arc::new(f))),
            requests: Mutex::new(Vec::new()),
            capabilities: LlmCapabilities::native(),
            asked: AtomicUsize::new(0),
        }
    }

    /// Report `caps` when asked what the provider can do.
    pub fn with_capabilities(mut self, caps: LlmCapabilities) -> Self {
        self.capabilities = caps;
        self
    }

    /// Queue another outcome (no effect on a closure script).
    pub fn push(&self, outcome: ScriptedReply) {
        if let Script::Queue(q) = &mut *self.script.lock() {
            q.push_back(outcome);
        }
    }

    /// How many times it was asked for its capabilities.
    pub fn capability_requests(&self) -> usize {
        self.asked.load(Ordering::Relaxed)
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<ChatRequest> {
        self.requests.lock().clone()
    }

    fn answer(&self, req: &ChatRequest) -> ScriptedReply {
        self.requests.lock().push(req.clone());
        let responder = match &mut *self.script.lock() {
            Script::Queue(q) => {
                return q
                    .pop_front()
                    .unwrap_or_else(|| Err(LlmError::Scripted("no more scripted replies".into())))
            }
            Script::Closure(f) => f.clone(),
        };
        responder(req)
    }
}

impl Provider for ScriptedProvider {
    fn name(&self) -> &str {
        "scripted"
    }
    fn chat<'a>(&'a self, req: &'a ChatRequest) -> BoxFuture<'a, Result<ChatReply, LlmError>> {
        let out = self.answer(req);
        Box::pin(async move { out })
    }
    fn capabilities(&self) -> BoxFuture<'_, Result<LlmCapabilities, LlmError>> {
        self.asked.fetch_add(1, Ordering::Relaxed);
        let caps = self.capabilities;
        Box::pin(async move { Ok(caps) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentos_abi::device::ChatMessage;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn queue_then_exhausted_and_recorded() {
        let p = ScriptedProvider::new([ChatReply::text("one")]);
        let req = ChatRequest::new(vec![ChatMessage::user("hi")]);
        assert_eq!(block_on(p.chat(&req)).unwrap().content, "one");
        assert!(matches!(block_on(p.chat(&req)), Err(LlmError::Scripted(_))));
        assert_eq!(p.requests().len(), 2);
        let echo = ScriptedProvider::with(|r| Ok(ChatReply::text(r.messages[0].content.clone())));
        assert_eq!(block_on(echo.chat(&req)).unwrap().content, "hi");
        assert_eq!(block_on(echo.capabilities()), Ok(LlmCapabilities::native()));
        let grammar = LlmCapabilities {
            grammar: true,
            context_tokens: Some(2048),
            ..LlmCapabilities::default()
        };
        let small = ScriptedProvider::new([]).with_capabilities(grammar);
        assert_eq!(block_on(small.capabilities()), Ok(grammar));
        assert_eq!(small.capability_requests(), 1);
    }
}
