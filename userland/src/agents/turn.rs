//! [`run_turn`]: one ReAct turn, from the transcript in context memory to a final answer.

use super::action::{
    action_gbnf, action_instructions, action_schema, parse_action, Action, Actions,
};
use super::json::to_json_text;
use super::transcript::{
    as_actions, cap_tool_result, prompt_messages, tool_call_key, unproductive, with_instructions,
    CallIds,
};
use super::window::{fit, prompt_budget, tools_tokens};
use super::{TurnSpec, HARD_MAX_STEPS};
use agentos_abi::device::{
    CallOutcome, JsonSchemaFormat, LlmRequest, ToolCallRequest, ToolsRequest, ValueError,
};
use agentos_abi::{
    CapRef, ChatMessage, ChatReply, ChatRequest, DeviceMessage, ExitReason, LlmCapabilities,
    LogLevel, RememberOpts, Role, SysError, Syscalls, ToolCall, ToolSpec, Value,
};
use std::collections::{HashMap, HashSet};
use thiserror::Error;

/// The user message that forces a final answer after a stall.
const STALL_NOTE: &str = "Stop searching \u{2014} recent tool calls returned no usable data. \
Answer now, concisely, with what you already know, and state any uncertainty.";

/// The user message after a step that ended with neither tool calls nor an answer.
const NO_ANSWER_NOTE: &str = "You did not produce a final answer. Take the next concrete step \
with a tool, or give your final answer now.";

/// The start of the user message after an invalid constrained action (the reason follows).
const INVALID_ACTION_NOTE: &str = "That was not a valid action";

/// The end of the recap a constrained answer step closes with.
const RECAP_NOTE: &str = "Give the final answer.";

/// A tool result in the recap is cut to this many characters.
const RECAP_CHARS: usize = 300;

/// `text` cut to `chars` characters (with an ellipsis when cut).
fn cut_chars(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        None => text.to_owned(),
        Some((at, _)) => format!("{}\u{2026}", &text[..at]),
    }
}

/// How a turn ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TurnOutcome {
    /// The final answer (empty if the step limit ran out without one).
    pub answer: String,
    /// Steps taken (LLM calls made for the turn, reflections aside).
    pub steps: u32,
    /// Tokens the turn cost the agent's account (what the LLM device charged).
    pub tokens: u64,
    /// Tool calls run (fresh ones: a repeat answered from the turn's cache is not counted).
    pub tool_calls: u32,
    /// How the steps asked for actions (never [`Actions::Auto`] once a turn ran).
    pub actions: Actions,
}

/// Why a turn could not finish. Model output never causes one: a bad tool call is a result the
/// model sees. A quota exhausted by a device charge usually ends the process in the kernel
/// before the turn sees anything; when it surfaces here, [`ExitReason::from`] keeps it a quota
/// exit.
#[derive(Clone, Debug, Error, PartialEq)]
pub enum TurnError {
    /// Reading the LLM device failed.
    #[error("llm device: {0}")]
    Llm(#[source] SysError),
    /// The LLM device answered something that is not a chat reply.
    #[error("llm device answered a value that is not a chat reply: {0}")]
    NotAChatReply(#[source] ValueError),
    /// Reading the tools device failed.
    #[error("tools device: {0}")]
    Tools(#[source] SysError),
    /// Writing the transcript to context memory failed.
    #[error("context memory: {0}")]
    Memory(#[source] SysError),
    /// The reflector failed.
    #[error("reflection: {0}")]
    Reflection(#[source] SysError),
}

impl TurnError {
    /// The syscall error underneath, if there is one.
    pub fn sys_error(&self) -> Option<&SysError> {
        match self {
            TurnError::Llm(e) | TurnError::Tools(e) | TurnError::Memory(e) => Some(e),
            TurnError::Reflection(e) => Some(e),
            TurnError::NotAChatReply(_) => None,
        }
    }
    /// Whether the process cannot go on (a quota ran out, the kernel is shutting down), as
    /// opposed to a failure a conversation can report and survive.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self.sys_error(),
            Some(SysError::Quota(_) | SysError::Shutdown)
        )
    }
}

impl From<TurnError> for ExitReason {
    fn from(e: TurnError) -> Self {
        match e.sys_error() {
            Some(SysError::Quota(m)) => ExitReason::Quota { resource: *m },
            Some(SysError::Shutdown) => ExitReason::Shutdown,
            _ => ExitReason::fault(e.to_string()),
        }
    }
}

async fn remember<S: Syscalls>(sys: &S, msg: ChatMessage) -> Result<(), TurnError> {
    sys.remember(msg.to_value(), RememberOpts::default())
        .await
        .map(|_| ())
        .map_err(TurnError::Memory)
}

/// The arguments a tools device gets for a call: the model's JSON text (the device parses it),
/// or an empty map when the model wrote none.
fn call_args(call: &ToolCall) -> Value {
    if call.arguments.trim().is_empty() {
        Value::Map(Vec::new())
    } else {
        Value::Str(call.arguments.clone())
    }
}

/// What one step's tool calls did.
struct ToolStep {
    /// At least one fresh call returned usable data.
    progressed: bool,
    /// Fresh calls run.
    ran: u32,
}

/// What the LLM device can do, asked with [`LlmRequest::Capabilities`]. A device that cannot
/// answer (one that predates the request, or answers something else) is taken to call tools
/// natively and report nothing more ([`LlmCapabilities::native`]); only a quota or a shutdown is
/// an error.
pub async fn llm_capabilities<S: Syscalls>(
    sys: &S,
    llm: CapRef,
) -> Result<LlmCapabilities, TurnError> {
    match sys.read(llm, LlmRequest::Capabilities.to_value()).await {
        Ok(v) => Ok(LlmCapabilities::from_value(v).unwrap_or_else(|_| LlmCapabilities::native())),
        Err(e @ (SysError::Quota(_) | SysError::Shutdown)) => Err(TurnError::Llm(e)),
        Err(_) => Ok(LlmCapabilities::native()),
    }
}

/// How the turn's steps ask the model, settled once per turn.
struct Asking {
    /// Native tool calls or a constrained action.
    actions: Actions,
    /// The context window to fit each prompt into, if known.
    context: Option<u32>,
    /// The turn's task (the last user message when the turn began): never dropped by fitting.
    task: Option<String>,
}

/// The turn's state between steps.
struct Turn<'a, S> {
    sys: &'a S,
    llm: CapRef,
    spec: &'a TurnSpec<S>,
    asking: Asking,
    /// Tool results of this turn by call key: each distinct call runs once per turn.
    results: HashMap<String, Value>,
    call_ids: CallIds,
    /// What this turn's distinct tool calls returned, in order (`calc returned 126`): the recap
    /// a constrained answer step ends with.
    recap: Vec<String>,
}

/// What one step's reply asks for.
enum Step {
    /// Run these tool calls (the assistant's text beside them).
    Calls(String, Vec<ToolCall>),
    /// This is the answer.
    Answer(String),
    /// A constrained reply that is no valid action: the text, and why.
    Invalid(String, String),
}

impl<S: Syscalls> Turn<'_, S> {
    /// Record the assistant's calls, run the fresh ones concurrently, record every result.
    async fn run_tools(
        &mut self,
        tools: CapRef,
        content: String,
        mut calls: Vec<ToolCall>,
        step: u32,
    ) -> Result<ToolStep, TurnError> {
        self.call_ids.assign(&mut calls, step);
        remember(
            self.sys,
            ChatMessage::assistant_calls(content, calls.clone()),
        )
        .await?;
        let keys: Vec<String> = calls.iter().map(tool_call_key).collect();
        let mut ran: HashSet<&str> = HashSet::new();
        let mut fresh: Vec<(&str, Value)> = Vec::new();
        for (call, key) in calls.iter().zip(&keys) {
            if !self.results.contains_key(key) && ran.insert(key) {
                let req = ToolsRequest::Call(ToolCallRequest {
                    name: call.name.clone(),
                    args: call_args(call),
                });
                fresh.push((key, req.to_value()));
            }
        }
        let fresh_count = u32::try_from(fresh.len()).unwrap_or(u32::MAX);
        let mut recapped: HashSet<&str> = HashSet::new();
        let fresh_calls: Vec<(String, String)> = calls
            .iter()
            .zip(&keys)
            .filter(|(_, k)| ran.contains(k.as_str()) && recapped.insert(k.as_str()))
            .map(|(c, k)| (c.name.clone(), k.clone()))
            .collect();
        if !fresh.is_empty() {
            let (fresh_keys, reqs): (Vec<&str>, Vec<Value>) = fresh.into_iter().unzip();
            let outs = self
                .sys
                .read_all(tools, reqs)
                .await
                .map_err(TurnError::Tools)?;
            let mut outs = outs.into_iter();
            for key in fresh_keys {
                let out = outs.next().unwrap_or_else(|| {
                    CallOutcome::Err("the tools device gave no result".into()).to_value()
                });
                self.results.insert(key.to_owned(), out);
            }
        }
        for (name, key) in fresh_calls {
            let out = self.results.get(&key).map(to_json_text).unwrap_or_default();
            let out = cut_chars(&out, RECAP_CHARS);
            self.recap.push(format!("{name} returned {out}"));
        }
        let mut progressed = false;
        for (call, key) in calls.iter().zip(&keys) {
            let out = self.results.get(key).cloned().unwrap_or(Value::Unit);
            let content = cap_tool_result(to_json_text(&out));
            remember(
                self.sys,
                ChatMessage::tool(call.id.clone(), call.name.clone(), content),
            )
            .await?;
            if ran.contains(key.as_str()) && !unproductive(&out) {
                progressed = true;
            }
        }
        Ok(ToolStep {
            progressed,
            ran: fresh_count,
        })
    }

    /// The next step's prompt, fitted to the window: for a constrained step with the offered
    /// tools and the action format after the system prompt, and the transcript as actions.
    fn prompt(&self, offer: &[ToolSpec]) -> Vec<ChatMessage> {
        let mut messages = prompt_messages(self.sys.working_set());
        let constrained = self.asking.actions.is_constrained();
        if constrained {
            let text = action_instructions(offer, self.asking.task.as_deref());
            messages = with_instructions(messages, &text);
        }
        if let Some(context) = self.asking.context {
            let fixed = if constrained { 0 } else { tools_tokens(offer) };
            let budget = prompt_budget(context, self.spec.max_tokens, fixed);
            let (fitted, did) = fit(messages, budget, self.asking.task.as_deref());
            if did.changed() {
                self.sys.log(
                    LogLevel::Debug,
                    &format!(
                        "turn: prompt fitted to a {context}-token window ({} observations \
                         summarized, {} messages left out, {} cut)",
                        did.summarized, did.dropped, did.cut
                    ),
                );
            }
            messages = fitted;
        }
        if constrained {
            // An answer step after tool work shows the evidence without the call objects
            // (which a small model copies into its answer) and ends with the task and what
            // the tools returned, side by side: a small model answers from what is nearest.
            let recap = offer.is_empty() && !self.recap.is_empty();
            if recap {
                messages.retain(|m| m.role != Role::Assistant || m.tool_calls.is_empty());
            }
            messages = as_actions(messages);
            if recap {
                let task = self
                    .asking
                    .task
                    .as_deref()
                    .map_or(String::new(), |t| format!("Task: {t}\n"));
                messages.push(ChatMessage::user(format!(
                    "{task}Tool results: {}\n{RECAP_NOTE}",
                    self.recap.join("; ")
                )));
            }
        }
        messages
    }

    /// Ask the LLM device for the next step, offering `offer`.
    async fn ask(&self, offer: &[ToolSpec]) -> Result<ChatReply, TurnError> {
        let messages = self.prompt(offer);
        let mut req = ChatRequest {
            max_tokens: self.spec.max_tokens,
            temperature: self.spec.temperature,
            ..ChatRequest::new(messages)
        };
        match self.asking.actions {
            Actions::Grammar => req.grammar = Some(action_gbnf(offer)),
            Actions::JsonSchema => {
                req.response_format = Some(JsonSchemaFormat {
                    name: "action".into(),
                    schema: action_schema(offer),
                    strict: false,
                });
            }
            Actions::Native | Actions::Auto => req.tools = offer.to_vec(),
        }
        let reply = self
            .sys
            .read(self.llm, req.to_value())
            .await
            .map_err(TurnError::Llm)?;
        ChatReply::from_value(reply).map_err(TurnError::NotAChatReply)
    }

    /// What a reply asks for. `can_call`: tools may run this step.
    fn read_step(&self, reply: ChatReply, offer: &[ToolSpec], can_call: bool) -> Step {
        if can_call && !reply.tool_calls.is_empty() {
            return Step::Calls(reply.content, reply.tool_calls);
        }
        if !self.asking.actions.is_constrained() {
            return Step::Answer(reply.content);
        }
        match parse_action(&reply.content, offer) {
            Ok(Action::Call(call)) if can_call => Step::Calls(String::new(), vec![call]),
            Ok(Action::Call(call)) => Step::Invalid(
                reply.content,
                format!("no tools can be called now (not even `{}`)", call.name),
            ),
            Ok(Action::Answer(answer)) => Step::Answer(answer),
            Err(e) => Step::Invalid(reply.content, e.why),
        }
    }
}

/// Settle how the turn asks: the spec's mode, or (for `Auto`) the LLM device's capabilities.
async fn settle<S: Syscalls>(
    sys: &S,
    llm: CapRef,
    tools: Option<CapRef>,
    spec: &TurnSpec<S>,
) -> Result<Asking, TurnError> {
    let task = prompt_messages(sys.working_set())
        .into_iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content);
    let (actions, context, why) = match spec.actions {
        Actions::Auto => {
            let caps = llm_capabilities(sys, llm).await?;
            let actions = Actions::Auto.resolve(&caps);
            let why = if caps.native_tools {
                "the model calls tools natively"
            } else if actions.is_constrained() {
                "the model has no native tool calls; its provider constrains output"
            } else {
                "the model has no native tool calls and its provider cannot constrain output"
            };
            (actions, spec.context_tokens.or(caps.context_tokens), why)
        }
        explicit => (
            explicit,
            spec.context_tokens,
            "set by the spec, or settled when the agent booted",
        ),
    };
    // Without tools there is nothing to choose between: the reply's text is the answer.
    let actions = if tools.is_none() || spec.tools.is_empty() {
        Actions::Native
    } else {
        actions
    };
    sys.log(
        LogLevel::Info,
        &format!(
            "turn: {} actions ({why}){}",
            actions.name(),
            context.map_or(String::new(), |c| format!(", a {c}-token window"))
        ),
    );
    Ok(Asking {
        actions,
        context,
        task,
    })
}

/// Run one ReAct turn: ask the model, run the tools it calls, feed the results back, until it
/// answers or the step limit runs out. The transcript so far (system prompt, task, earlier
/// turns) is whatever chat messages the process's context memory holds; the turn appends to it.
///
/// `llm` is an open LLM device handle; `tools` an open tools device handle, if the agent has
/// tools (without one, tool calls are not run and the reply's text is the answer). See the
/// [module docs](super) for the invariants.
pub async fn run_turn<S: Syscalls>(
    sys: &S,
    llm: CapRef,
    tools: Option<CapRef>,
    spec: &TurnSpec<S>,
) -> Result<TurnOutcome, TurnError> {
    let ceiling = spec
        .max_steps
        .unwrap_or(HARD_MAX_STEPS)
        .clamp(1, HARD_MAX_STEPS);
    let base = spec.base_steps.max(1);
    let stall_limit = spec.stall_limit.max(1);
    let tokens_before = sys.usage().tokens;
    let asking = settle(sys, llm, tools, spec).await?;
    let resident = prompt_messages(sys.working_set());
    let mut turn = Turn {
        sys,
        llm,
        spec,
        asking,
        results: HashMap::new(),
        call_ids: CallIds::resident(&resident),
        recap: Vec::new(),
    };
    drop(resident);

    let mut limit = base.min(ceiling);
    let mut answer = String::new();
    let mut step: u32 = 0;
    let mut stalled: u32 = 0;
    let mut forced = false;
    let mut investigated: u32 = 0;
    let mut steered = false;
    let mut revisions: u32 = 0;
    let mut continues: u32 = 0;
    let mut tool_calls: u32 = 0;

    while step < limit {
        // The last step of the limit and every step after a stall must answer.
        let no_tools = forced || step + 1 >= limit;
        let steering = spec
            .delegate
            .as_ref()
            .filter(|d| investigated >= d.after && !no_tools);
        if let Some(policy) = steering {
            if !steered {
                steered = true;
                remember(sys, ChatMessage::user(policy.steering_note(investigated))).await?;
            }
        }
        let offer: Vec<ToolSpec> = if no_tools {
            Vec::new()
        } else {
            spec.tools
                .iter()
                .filter(|t| steering.is_none_or(|p| !p.withhold.contains(&t.name)))
                .cloned()
                .collect()
        };
        let reply = turn.ask(&offer).await?;

        let step_is = turn.read_step(reply, &offer, tools.is_some() && !no_tools);
        let calls = match step_is {
            Step::Calls(content, calls) => Some((content, calls)),
            Step::Answer(text) => {
                answer = text;
                None
            }
            Step::Invalid(raw, why) => {
                // The model sees what it wrote and why it does not count; it is not progress.
                sys.log(LogLevel::Warn, &format!("turn: invalid action: {why}"));
                remember(sys, ChatMessage::assistant(raw)).await?;
                remember(
                    sys,
                    ChatMessage::user(format!("{INVALID_ACTION_NOTE}: {why}.")),
                )
                .await?;
                stalled += 1;
                if stalled >= stall_limit && !forced {
                    forced = true;
                    remember(sys, ChatMessage::user(STALL_NOTE)).await?;
                }
                step += 1;
                continue;
            }
        };
        if let (Some(tools), Some((content, calls))) = (tools, calls) {
            let investigate_only = spec.delegate.as_ref().map(|d| {
                let n = calls
                    .iter()
                    .filter(|c| d.investigate.contains(&c.name))
                    .count();
                (n > 0 && n == calls.len()).then_some(n)
            });
            let done = turn.run_tools(tools, content, calls, step).await?;
            tool_calls = tool_calls.saturating_add(done.ran);
            match investigate_only {
                Some(Some(n)) => {
                    investigated =
                        investigated.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
                }
                Some(None) => {
                    investigated = 0;
                    steered = false;
                }
                None => {}
            }
            if done.progressed {
                stalled = 0;
            } else {
                stalled += 1;
                if stalled >= stall_limit && !forced {
                    forced = true;
                    remember(sys, ChatMessage::user(STALL_NOTE)).await?;
                }
            }
            // Tool work nearing the limit earns more steps, up to the ceiling.
            if !forced && step + 2 >= limit && limit < ceiling {
                limit = ceiling.min(limit.saturating_add(base));
            }
            step += 1;
            continue;
        }

        remember(sys, ChatMessage::assistant(answer.clone())).await?;
        if !answer.trim().is_empty() && !forced && step + 1 < limit {
            if let Some(reflector) = &spec.reflector {
                let transcript = prompt_messages(sys.working_set());
                let verdict = reflector
                    .reflect(sys, llm, &transcript)
                    .await
                    .map_err(TurnError::Reflection)?;
                if let Some(r) = verdict.filter(|r| !r.correction.is_empty()) {
                    let (used, allowed) = match r.kind {
                        super::ReflectionKind::Continue => (&mut continues, spec.max_continue),
                        super::ReflectionKind::Revise => (&mut revisions, spec.max_revisions),
                    };
                    if *used < allowed {
                        *used += 1;
                        limit = ceiling.min(limit.saturating_add(base));
                        answer.clear();
                        remember(sys, ChatMessage::user(r.correction)).await?;
                        step += 1;
                        continue;
                    }
                }
            }
        }
        if !answer.trim().is_empty() || step + 1 >= limit {
            break;
        }
        remember(sys, ChatMessage::user(NO_ANSWER_NOTE)).await?;
        step += 1;
    }

    Ok(TurnOutcome {
        answer,
        steps: (step + 1).min(limit),
        tokens: sys.usage().tokens.saturating_sub(tokens_before),
        tool_calls,
        actions: turn.asking.actions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_keep_the_seed_wording() {
        assert_eq!(
            STALL_NOTE,
            "Stop searching \u{2014} recent tool calls returned no usable data. Answer now, concisely, with what you already know, and state any uncertainty."
        );
        assert_eq!(
            NO_ANSWER_NOTE,
            "You did not produce a final answer. Take the next concrete step with a tool, or give your final answer now."
        );
    }

    #[test]
    fn quota_and_shutdown_failures_keep_their_exit_reasons() {
        let quota = TurnError::Llm(SysError::Quota(agentos_abi::Meter::Tokens));
        assert!(quota.is_fatal());
        assert_eq!(
            ExitReason::from(quota),
            ExitReason::Quota {
                resource: agentos_abi::Meter::Tokens
            }
        );
        assert_eq!(
            ExitReason::from(TurnError::Memory(SysError::Shutdown)),
            ExitReason::Shutdown
        );
        let driver = TurnError::Tools(SysError::Driver("boom".into()));
        assert!(!driver.is_fatal());
        assert!(
            matches!(ExitReason::from(driver), ExitReason::Fault { error } if error.contains("tools device"))
        );
    }

    #[test]
    fn blank_arguments_become_an_empty_map() {
        let mut c = ToolCall {
            id: "a".into(),
            name: "f".into(),
            arguments: " ".into(),
        };
        assert_eq!(call_args(&c), Value::Map(Vec::new()));
        c.arguments = r#"{"x":1}"#.into();
        assert_eq!(call_args(&c), Value::Str(r#"{"x":1}"#.into()));
    }
}
