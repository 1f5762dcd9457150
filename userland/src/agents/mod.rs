//! The agents: [`run_turn`] (one ReAct turn against an LLM device and a tools device) and the
//! two agent images built on it, [`react_agent`] (one task, one answer) and
//! [`conversation_agent`] (a session that answers task messages until told to stop).
//!
//! An agent reaches a model and tools only through devices: it holds handles opened from the
//! device capabilities its parent granted, and everything it spends is what those devices
//! charge its account (tokens from the LLM device's reported usage, one tool call per tool
//! run). The transcript lives in the process's context memory, one segment per chat message, so
//! the kernel pages it under the memory ceiling; each step's prompt is rebuilt from the working
//! set ([`order_for_cache`] then [`pair_tool_calls`]).
//!
//! Invariants of a turn (the seed's `runTurn`):
//! - the step limit starts at `base_steps` and grows by `base_steps` (never past `max_steps`,
//!   never past [`HARD_MAX_STEPS`]) when tool work nears the limit or a reflection is accepted;
//! - the last step of the limit, and every step after a stall, offers no tools, so the turn
//!   always ends with an answer attempt;
//! - a tool call (name plus arguments) runs at most once per turn: duplicates within a step and
//!   repeats of earlier steps are answered from the turn's cache, and a repeat is not progress;
//! - the fresh calls of one step run concurrently (`read_all`);
//! - `stall_limit` steps in a row without a productive fresh call force a final answer;
//! - with a [`DelegatePolicy`], after `after` investigate-only calls in a row the investigation
//!   tools are withheld (and the model told to delegate) until it does something else;
//! - a [`Reflector`] may send an answer back for revision (at most `max_revisions` times) or ask
//!   to continue (at most `max_continue` times); an empty answer gets a nudge;
//! - a tool result enters the transcript capped at [`MAX_TOOL_RESULT_CHARS`] characters;
//! - every tool result answers exactly one tool call in the prompt: calls without a resident
//!   result are dropped, results without a resident call are dropped.
//!
//! Model output is hostile input: a malformed reply, missing or repeated tool-call ids, bad
//! JSON arguments or unknown tools never panic; they become values the model sees next step.
//!
//! How a step asks for its action ([`Actions`], `TurnSpec::actions`): a model that calls tools
//! natively gets the tools in the request; one that cannot, behind a provider that constrains
//! output (a small local model on llama.cpp), is asked for exactly one action object per step
//! — `{"tool": …, "arguments": …}` for an offered tool, or `{"answer": …}` — under a GBNF
//! grammar or a JSON schema built from the offered tools ([`action_gbnf`], [`action_schema`]).
//! `Auto` (the default) asks the LLM device for its capabilities ([`llm_capabilities`]) and
//! logs its choice in the agent's trace; the choice is in the [`TurnOutcome`]. A constrained
//! reply is read by a tolerant parser ([`parse_action`]); an invalid action (an unknown tool,
//! arguments that do not match the schema, not JSON) is shown to the model and counts as a
//! stall, so the stall rails force an answer. When the model's context window is known (the
//! device reports it, or `TurnSpec::context_tokens`), each step's prompt is fitted to it
//! ([`fit`]): old observations are summarized, then the oldest exchanges dropped; the system
//! prompt with the step's tool list, the task and the newest message stay.

mod action;
mod images;
mod json;
mod transcript;
mod turn;
mod window;

pub use action::{
    action_gbnf, action_instructions, action_schema, parse_action, rank_tools, Action, Actions,
    InvalidAction,
};
pub use images::{
    conversation_agent, react_agent, AgentBootError, AgentGrant, AgentResult, AgentTask,
    ConversationSpec, ReactSpec, LLM_DEVICE, TOOLS_DEVICE,
};
pub use transcript::{cap_tool_result, order_for_cache, pair_tool_calls, tool_call_key};
pub use turn::{llm_capabilities, run_turn, TurnError, TurnOutcome};
pub use window::{estimate_tokens, fit, prompt_budget, Fitted, DEFAULT_COMPLETION_RESERVE};

use agentos_abi::{CapRef, ChatMessage, SysError, ToolSpec};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// The system prompt an agent gets when its spec names none (the seed's default).
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a capable autonomous agent. Break the task into \
steps and keep going \u{2014} investigate with tools, then act \u{2014} until it is fully done; \
never stop at a plan or a partial result. Verify before answering, then reply concisely.";

/// No turn runs more steps than this, whatever its spec says.
pub const HARD_MAX_STEPS: u32 = 384;

/// A tool result longer than this many characters is cut, with a note saying how much went.
pub const MAX_TOOL_RESULT_CHARS: usize = 8_000;

/// The default `base_steps`: the first step limit, and what each extension adds.
pub const DEFAULT_BASE_STEPS: u32 = 16;

/// The default `stall_limit`.
pub const DEFAULT_STALL_LIMIT: u32 = 3;

/// The default `max_revisions`.
pub const DEFAULT_MAX_REVISIONS: u32 = 2;

/// The default `max_continue`.
pub const DEFAULT_MAX_CONTINUE: u32 = 24;

/// Steer a model that keeps investigating by itself towards a delegation tool.
///
/// After `after` investigate-only tool calls in a row (steps whose every call names one of the
/// `investigate` tools), the model is told once to use `via` instead, and the `withhold` tools
/// are left out of its offer until a step calls something else.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DelegatePolicy {
    /// Investigate-only calls in a row before steering starts.
    pub after: u32,
    /// The delegation tool the model is pointed at (one that runs a sub-agent).
    pub via: String,
    /// Tools left out of the offer while steering.
    pub withhold: Vec<String>,
    /// Tools whose calls count as direct investigation.
    pub investigate: Vec<String>,
}

impl DelegatePolicy {
    /// The user message that starts steering, after `calls` investigate-only calls.
    pub fn steering_note(&self, calls: u32) -> String {
        let via = &self.via;
        format!(
            "You've made {calls} direct file-read/search calls in a row \u{2014} that floods the \
             transcript and your own context. For broad investigation (\"where/how/analyze\", or \
             scanning several files), call `{via}` instead: it runs in a sub-agent and returns a \
             distilled summary, keeping your context clean. The read/search tools are withheld \
             this round, so delegate to `{via}` or act on what you already know. Prefer `{via}` \
             over shell for searching."
        )
    }
}

/// What a reflection asks of an answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReflectionKind {
    /// The answer is wrong or incomplete: revise it (bounded by `max_revisions`).
    #[default]
    Revise,
    /// The work is not finished: keep going (bounded by `max_continue`).
    Continue,
}

/// A reflector's verdict on an answer: a correction the model gets as a user message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reflection {
    /// What to tell the model (an empty correction is no correction).
    pub correction: String,
    /// Revise or continue.
    pub kind: ReflectionKind,
}

impl Reflection {
    /// Send the answer back for revision with `correction`.
    pub fn revise(correction: impl Into<String>) -> Self {
        Reflection {
            correction: correction.into(),
            kind: ReflectionKind::Revise,
        }
    }
    /// Ask the model to continue the work with `correction`.
    pub fn continue_with(correction: impl Into<String>) -> Self {
        Reflection {
            correction: correction.into(),
            kind: ReflectionKind::Continue,
        }
    }
}

/// The future a [`Reflector`] returns.
pub type ReflectFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Reflection>, SysError>> + Send + 'a>>;

/// Judges a candidate answer. It sees the prompt transcript (the answer is its last message) and
/// may use the agent's own syscall handle and LLM handle (a critic's calls are charged to the
/// agent). `Ok(None)` accepts the answer.
///
/// A plain closure `Fn(&[ChatMessage]) -> Option<Reflection>` is a reflector.
pub trait Reflector<S>: Send + Sync {
    /// The verdict on the answer at the end of `transcript`.
    fn reflect<'a>(
        &'a self,
        sys: &'a S,
        llm: CapRef,
        transcript: &'a [ChatMessage],
    ) -> ReflectFuture<'a>;
}

impl<S, F> Reflector<S> for F
where
    F: Fn(&[ChatMessage]) -> Option<Reflection> + Send + Sync,
{
    fn reflect<'a>(
        &'a self,
        _sys: &'a S,
        _llm: CapRef,
        transcript: &'a [ChatMessage],
    ) -> ReflectFuture<'a> {
        let verdict = self(transcript);
        Box::pin(async move { Ok(verdict) })
    }
}

/// How a turn runs: the tools it offers and its budgets of steps, stalls and reflections.
pub struct TurnSpec<S> {
    /// The tools offered to the model (the images fill this from the tools device when empty).
    pub tools: Vec<ToolSpec>,
    /// The hard step ceiling of a turn (clamped to `1..=`[`HARD_MAX_STEPS`]; `None`: the
    /// hard maximum).
    pub max_steps: Option<u32>,
    /// The first step limit, and what each extension adds (at least 1).
    pub base_steps: u32,
    /// Unproductive tool steps in a row that force a final answer (at least 1).
    pub stall_limit: u32,
    /// The completion-token bound passed to the LLM device.
    pub max_tokens: Option<u32>,
    /// Revise reflections accepted per turn.
    pub max_revisions: u32,
    /// Continue reflections accepted per turn.
    pub max_continue: u32,
    /// Steer towards a delegation tool after too much direct investigation.
    pub delegate: Option<DelegatePolicy>,
    /// Judge answers before they are final.
    pub reflector: Option<Arc<dyn Reflector<S>>>,
    /// How a step asks for its action: [`Actions::Auto`] (the default) decides from the LLM
    /// device's capabilities; the others force a mode.
    pub actions: Actions,
    /// The model's context window in tokens (`None`: what the LLM device reports, if it
    /// does). Each step's prompt is fitted to it.
    pub context_tokens: Option<u32>,
    /// The sampling temperature passed to the LLM device (`None`: the provider's default).
    pub temperature: Option<f64>,
}

impl<S> Default for TurnSpec<S> {
    fn default() -> Self {
        TurnSpec {
            tools: Vec::new(),
            max_steps: None,
            base_steps: DEFAULT_BASE_STEPS,
            stall_limit: DEFAULT_STALL_LIMIT,
            max_tokens: None,
            max_revisions: DEFAULT_MAX_REVISIONS,
            max_continue: DEFAULT_MAX_CONTINUE,
            delegate: None,
            reflector: None,
            actions: Actions::Auto,
            context_tokens: None,
            temperature: None,
        }
    }
}

impl<S> Clone for TurnSpec<S> {
    fn clone(&self) -> Self {
        TurnSpec {
            tools: self.tools.clone(),
            max_steps: self.max_steps,
            base_steps: self.base_steps,
            stall_limit: self.stall_limit,
            max_tokens: self.max_tokens,
            max_revisions: self.max_revisions,
            max_continue: self.max_continue,
            delegate: self.delegate.clone(),
            reflector: self.reflector.clone(),
            actions: self.actions,
            context_tokens: self.context_tokens,
            temperature: self.temperature,
        }
    }
}

impl<S> fmt::Debug for TurnSpec<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnSpec")
            .field(
                "tools",
                &self.tools.iter().map(|t| &t.name).collect::<Vec<_>>(),
            )
            .field("max_steps", &self.max_steps)
            .field("base_steps", &self.base_steps)
            .field("stall_limit", &self.stall_limit)
            .field("max_tokens", &self.max_tokens)
            .field("max_revisions", &self.max_revisions)
            .field("max_continue", &self.max_continue)
            .field("delegate", &self.delegate)
            .field("reflector", &self.reflector.is_some())
            .field("actions", &self.actions)
            .field("context_tokens", &self.context_tokens)
            .field("temperature", &self.temperature)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_keep_the_seed_wording() {
        assert_eq!(
            DEFAULT_SYSTEM_PROMPT,
            "You are a capable autonomous agent. Break the task into steps and keep going \u{2014} investigate with tools, then act \u{2014} until it is fully done; never stop at a plan or a partial result. Verify before answering, then reply concisely."
        );
        let policy = DelegatePolicy {
            after: 3,
            via: "explore".into(),
            ..DelegatePolicy::default()
        };
        assert_eq!(
            policy.steering_note(3),
            "You've made 3 direct file-read/search calls in a row \u{2014} that floods the transcript and your own context. For broad investigation (\"where/how/analyze\", or scanning several files), call `explore` instead: it runs in a sub-agent and returns a distilled summary, keeping your context clean. The read/search tools are withheld this round, so delegate to `explore` or act on what you already know. Prefer `explore` over shell for searching."
        );
    }
}
