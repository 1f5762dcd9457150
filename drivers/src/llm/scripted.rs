//! [`ScriptedProvider`]: a provider for tests that answers from a script and records what it
//! was asked.

use super::{LlmError, Provider};
use agentos_abi::device::{ChatReply, ChatRequest};
use agentos_abi::driver::BoxFuture;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;

/// One scripted answer: a reply or a failure.
pub type ScriptedReply = Result<ChatReply, LlmError>;

type Responder = Arc<dyn Fn(&ChatRequest) -> ScriptedReply + Send + Sync>;

enum Script {
    Queue(VecDeque<ScriptedReply>),
    Closure(Responder),
}

/// Answers from a queue of replies (an empty queue is an error) or from a closure, and keeps
/// every request it received.
pub struct ScriptedProvider {
    script: Mutex<Script>,
    requests: Mutex<Vec<ChatRequest>>,
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
        }
    }

    /// Answer every request with `f(request)`.
    pub fn with(f: impl Fn(&ChatRequest) -> ScriptedReply + Send + Sync + 'static) -> Self {
        ScriptedProvider {
            script: Mutex::new(Script::Closure(Arc::new(f))),
            requests: Mutex::new(Vec::new()),
        }
    }

    /// Queue another outcome (no effect on a closure script).
    pub fn push(&self, outcome: ScriptedReply) {
        if let Script::Queue(q) = &mut *self.script.lock() {
            q.push_back(outcome);
        }
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
    }
}
