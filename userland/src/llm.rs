//! The model edge of the learning modules: [`Chat`], one chat completion, and [`LlmDevice`],
//! the implementation every program uses, which reads the LLM device through its syscall handle
//! (`read(handle, ChatRequest)` answered by a `ChatReply`), exactly as the agents do. A
//! completion is therefore charged to the calling process's account by the device (tokens from
//! the reported usage, dollars by the device's price table), and a spent quota surfaces as a
//! [`SysError::Quota`] inside [`ChatError::Device`].
//!
//! Tests and hosts may implement [`Chat`] directly, or wrap an async closure in [`ChatFn`].

use agentos_abi::device::ValueError;
use agentos_abi::{CapRef, ChatMessage, ChatReply, ChatRequest, DeviceMessage, SysError, Syscalls};
use std::future::Future;
use std::sync::Arc;
use thiserror::Error;

/// Why a completion failed. Model *output* never causes one: callers treat whatever text comes
/// back as untrusted input and parse it defensively.
#[derive(Clone, Debug, Error, PartialEq)]
pub enum ChatError {
    /// Reading the LLM device failed (no such handle, quota spent, driver error, shutdown).
    #[error("llm device: {0}")]
    Device(#[source] SysError),
    /// The device answered a value that is not a chat reply.
    #[error("llm device answered a value that is not a chat reply: {0}")]
    NotAChatReply(#[source] ValueError),
    /// Another completion source failed.
    #[error("completion: {0}")]
    Other(String),
}

impl ChatError {
    /// Whether the process cannot go on (its quota ran out, the kernel is shutting down).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            ChatError::Device(SysError::Quota(_) | SysError::Shutdown)
        )
    }
}

/// One chat completion.
pub trait Chat: Send + Sync {
    /// Complete `req`.
    fn chat(&self, req: ChatRequest) -> impl Future<Output = Result<ChatReply, ChatError>> + Send;
}

impl<C: Chat> Chat for &C {
    fn chat(&self, req: ChatRequest) -> impl Future<Output = Result<ChatReply, ChatError>> + Send {
        (**self).chat(req)
    }
}

impl<C: Chat> Chat for Arc<C> {
    fn chat(&self, req: ChatRequest) -> impl Future<Output = Result<ChatReply, ChatError>> + Send {
        (**self).chat(req)
    }
}

/// An open LLM device: completions are `read`s of `handle` through `sys`, charged to the
/// process that owns `sys`.
#[derive(Clone, Debug)]
pub struct LlmDevice<S> {
    sys: S,
    handle: CapRef,
}

impl<S: Syscalls> LlmDevice<S> {
    /// Complete through `handle`, an LLM device handle already opened by `sys`.
    pub fn new(sys: S, handle: CapRef) -> Self {
        LlmDevice { sys, handle }
    }

    /// Open the LLM device capability `device` and complete through it.
    pub async fn open(sys: S, device: CapRef) -> Result<Self, SysError> {
        let handle = sys.open(device).await?;
        Ok(LlmDevice { sys, handle })
    }

    /// The device handle.
    pub fn handle(&self) -> CapRef {
        self.handle
    }
}

impl<S: Syscalls> Chat for LlmDevice<S> {
    async fn chat(&self, req: ChatRequest) -> Result<ChatReply, ChatError> {
        let reply = self
            .sys
            .read(self.handle, req.to_value())
            .await
            .map_err(ChatError::Device)?;
        ChatReply::from_value(reply).map_err(ChatError::NotAChatReply)
    }
}

/// A [`Chat`] from an async closure (for hosts and tests).
#[derive(Clone, Debug)]
pub struct ChatFn<F>(pub F);

impl<F, Fut> Chat for ChatFn<F>
where
    F: Fn(ChatRequest) -> Fut + Send + Sync,
    Fut: Future<Output = Result<ChatReply, ChatError>> + Send,
{
    fn chat(&self, req: ChatRequest) -> impl Future<Output = Result<ChatReply, ChatError>> + Send {
        (self.0)(req)
    }
}

/// Ask for a plain-text completion of `system` then `user`, bounded by `max_tokens`; the reply's
/// text (possibly empty: the caller decides what an empty answer means).
pub(crate) async fn complete_text<C: Chat>(
    chat: &C,
    system: &str,
    user: String,
    max_tokens: u32,
) -> Result<String, ChatError> {
    let req = ChatRequest {
        max_tokens: Some(max_tokens),
        ..ChatRequest::new(vec![ChatMessage::system(system), ChatMessage::user(user)])
    };
    Ok(chat.chat(req).await?.content)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    /// Poll a future that is ready without waiting (the closures here never wait).
    fn now<F: Future>(f: F) -> F::Output {
        let mut f = pin!(f);
        match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("the future waited"),
        }
    }

    #[test]
    fn closures_arcs_and_references_complete() {
        let chat = ChatFn(|req: ChatRequest| async move {
            Ok(ChatReply::text(format!(
                "{} messages, max {:?}",
                req.messages.len(),
                req.max_tokens
            )))
        });
        let text = now(complete_text(&chat, "sys", "hi".into(), 7)).unwrap();
        assert_eq!(text, "2 messages, max Some(7)");
        let shared = Arc::new(chat);
        assert_eq!(
            now(complete_text(&shared, "s", "u".into(), 1)).unwrap(),
            "2 messages, max Some(1)"
        );
        let failing = ChatFn(|_req: ChatRequest| async { Err(ChatError::Other("down".into())) });
        let err = now(complete_text(&&failing, "s", "u".into(), 1)).unwrap_err();
        assert_eq!(err, ChatError::Other("down".into()));
        assert!(!err.is_fatal());
        assert!(ChatError::Device(SysError::Shutdown).is_fatal());
    }
}
