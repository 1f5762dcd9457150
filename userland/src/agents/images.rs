//! The agent images and their protocol: the boot grant a parent sends, the task messages a
//! conversation takes, and the result messages both send back.
//!
//! Boot: an agent's first message grants its authority, the seed's `[llm device, tools device,
//! parent]`. A parent builds it with [`AgentGrant`] (caps in that order, the body saying which
//! are present); a bare message whose caps are positional in the seed's order works too; and an
//! agent booted by the kernel (as init, or by a peer's `spawn_remote`) takes the
//! [`LLM_DEVICE`] and [`TOOLS_DEVICE`] devices of its boot grant, its requester as parent. A
//! child a supervisor starts finds its caps in its args instead, by name (`llm`, `tools`,
//! `parent`: [`AgentGrant::from_args`]), and boots without waiting for a message — so every
//! restart boots the same way.

use super::turn::{llm_capabilities, run_turn, TurnOutcome};
use super::{Actions, TurnSpec, DEFAULT_SYSTEM_PROMPT};
use agentos_abi::device::{ToolsRequest, ValueError};
use agentos_abi::{
    Attenuation, Body, CapRef, ChatMessage, DeviceMessage, ExitReason, Image, LogLevel, Message,
    RememberOpts, Role, SendError, SendOpts, SysError, SysMsg, Syscalls, ToolSpec, Value,
};
use std::sync::Arc;
use thiserror::Error;

/// The device name an agent booted by the kernel takes its LLM device from.
pub const LLM_DEVICE: &str = "llm";

/// The device name an agent booted by the kernel takes its tools device from.
pub const TOOLS_DEVICE: &str = "tools";

/// The `$` tag of a boot grant body.
const BOOT_TAG: &str = "boot";
/// The `$` tag of a result body.
const RESULT_TAG: &str = "result";
/// The `$` tag of a task body.
const TASK_TAG: &str = "task";

fn tag_of(v: &Value) -> Option<&str> {
    v.get("$").and_then(Value::as_str)
}

/// Why an agent could not start.
#[derive(Clone, Debug, Error, PartialEq)]
pub enum AgentBootError {
    /// The first message granted no LLM device.
    #[error("agent boot: the first message grants no llm device")]
    NoLlmDevice,
    /// A granted device could not be opened.
    #[error("agent boot: opening the {device} device: {source}")]
    Open {
        /// Which device (`llm` or `tools`).
        device: &'static str,
        /// Why.
        #[source]
        source: SysError,
    },
    /// The tools device could not list its tools.
    #[error("agent boot: listing the tools: {0}")]
    ListTools(#[source] SysError),
    /// Writing the opening prompt to context memory failed.
    #[error("agent boot: context memory: {0}")]
    Memory(#[source] SysError),
}

impl From<AgentBootError> for ExitReason {
    fn from(e: AgentBootError) -> Self {
        match &e {
            AgentBootError::Open { source, .. }
            | AgentBootError::ListTools(source)
            | AgentBootError::Memory(source) => match source {
                SysError::Quota(m) => return ExitReason::Quota { resource: *m },
                SysError::Shutdown => return ExitReason::Shutdown,
                _ => {}
            },
            AgentBootError::NoLlmDevice => {}
        }
        ExitReason::fault(e.to_string())
    }
}

/// The authority an agent is booted with: device capabilities (`open` right) and where to send
/// results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentGrant {
    /// The LLM device.
    pub llm: CapRef,
    /// The tools device, if the agent may use tools.
    pub tools: Option<CapRef>,
    /// Where results go (a `send` capability), if anywhere.
    pub parent: Option<CapRef>,
}

impl AgentGrant {
    /// A grant a parent can give away while keeping its own caps: open-only caps derived from
    /// its device caps, and a fresh capability to the parent itself for the results.
    pub fn delegate<S: Syscalls>(
        sys: &S,
        llm_device: CapRef,
        tools_device: Option<CapRef>,
    ) -> Result<Self, SysError> {
        // A derivation keeps the device cap's rights (open, and the read/write its handles
        // inherit) and scope.
        let keep = Attenuation::default();
        let llm = sys.attenuate(llm_device, keep.clone())?;
        let tools = match tools_device {
            Some(t) => Some(sys.attenuate(t, keep)?),
            None => None,
        };
        Ok(AgentGrant {
            llm,
            tools,
            parent: Some(sys.self_cap()),
        })
    }

    /// Send the grant to an agent as its first message; the caps move to it.
    pub async fn send<S: Syscalls>(self, sys: &S, agent: CapRef) -> Result<(), SendError> {
        let body = Value::Map(vec![
            ("$".into(), Value::Str(BOOT_TAG.into())),
            ("tools".into(), Value::Bool(self.tools.is_some())),
            ("parent".into(), Value::Bool(self.parent.is_some())),
        ]);
        let caps = std::iter::once(self.llm)
            .chain(self.tools)
            .chain(self.parent)
            .collect();
        sys.send(
            agent,
            Body::Value(body),
            SendOpts {
                caps,
                ..SendOpts::default()
            },
        )
        .await
    }

    /// Read a grant from an agent's args: the convention of a supervisor's child caps
    /// (`userland::supervisor::ChildSpec::cap`), cap refs by name in the args map — `llm`
    /// (required), `tools` and `parent`. `None` when the args hold no `llm` cap.
    pub fn from_args(args: &Value) -> Option<Self> {
        let cap = |name: &str| args.get(name).and_then(Value::as_u64).map(CapRef);
        Some(AgentGrant {
            llm: cap(LLM_DEVICE)?,
            tools: cap(TOOLS_DEVICE),
            parent: cap("parent"),
        })
    }

    /// Read a grant from an agent's first message: a kernel boot grant (devices by name, the
    /// requester as parent), a tagged grant from [`AgentGrant::send`], or caps in the seed's
    /// positional order `[llm, tools, parent]`.
    pub fn from_message(msg: &Message) -> Result<Self, AgentBootError> {
        if let Some(boot @ SysMsg::Boot { reply, .. }) = msg.sys() {
            return Ok(AgentGrant {
                llm: boot.device(LLM_DEVICE).ok_or(AgentBootError::NoLlmDevice)?,
                tools: boot.device(TOOLS_DEVICE),
                parent: *reply,
            });
        }
        let mut caps = msg.caps.iter().copied();
        let llm = caps.next().ok_or(AgentBootError::NoLlmDevice)?;
        let tagged = msg.body.as_value().filter(|v| tag_of(v) == Some(BOOT_TAG));
        let (has_tools, has_parent) = match tagged {
            Some(v) => (
                v.get("tools") == Some(&Value::Bool(true)),
                v.get("parent") == Some(&Value::Bool(true)),
            ),
            None => (true, true),
        };
        let tools = if has_tools { caps.next() } else { None };
        let parent = if has_parent { caps.next() } else { None };
        Ok(AgentGrant { llm, tools, parent })
    }
}

/// An agent's open devices.
struct Devices {
    llm: CapRef,
    tools: Option<CapRef>,
    parent: Option<CapRef>,
    /// The tools to offer: the spec's, or the tools device's list when the spec names none.
    offer: Vec<ToolSpec>,
}

/// Take the boot grant (from the args when they hold one, else the first message), open the
/// devices, settle the tool offer.
async fn boot<S: Syscalls>(
    sys: &S,
    args: &Value,
    spec_tools: &[ToolSpec],
) -> Result<Devices, AgentBootError> {
    let grant = match AgentGrant::from_args(args) {
        Some(g) => g,
        None => AgentGrant::from_message(&sys.recv().await)?,
    };
    let llm = sys
        .open(grant.llm)
        .await
        .map_err(|source| AgentBootError::Open {
            device: LLM_DEVICE,
            source,
        })?;
    let tools = match grant.tools {
        Some(t) => Some(sys.open(t).await.map_err(|source| AgentBootError::Open {
            device: TOOLS_DEVICE,
            source,
        })?),
        None => None,
    };
    let offer = match tools {
        Some(t) if spec_tools.is_empty() => {
            let listed = sys
                .read(t, ToolsRequest::List.to_value())
                .await
                .map_err(AgentBootError::ListTools)?;
            match listed {
                Value::List(items) => items
                    .into_iter()
                    .filter_map(|v| ToolSpec::from_value(v).ok())
                    .collect(),
                _ => Vec::new(),
            }
        }
        _ => spec_tools.to_vec(),
    };
    Ok(Devices {
        llm,
        tools,
        parent: grant.parent,
        offer,
    })
}

async fn remember_message<S: Syscalls>(
    sys: &S,
    msg: &ChatMessage,
    pin: bool,
) -> Result<(), AgentBootError> {
    let opts = RememberOpts {
        pin,
        ..RememberOpts::default()
    };
    sys.remember(msg.to_value(), opts)
        .await
        .map(|_| ())
        .map_err(AgentBootError::Memory)
}

/// What an agent sends its parent after a task: the seed's `{$: "result", answer, steps}`, plus
/// the tokens the turn cost and, from a conversation, the error that ended a failed turn.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentResult {
    /// The final answer (empty when there is none).
    pub answer: String,
    /// Steps the turn took.
    pub steps: u32,
    /// Tokens the turn cost (what the LLM device charged).
    pub tokens: u64,
    /// Tool calls the turn ran.
    pub tool_calls: u32,
    /// Why the turn failed, if it did (conversation agents keep serving after a failed turn).
    pub error: Option<String>,
    /// The task answered, as a ReAct agent reports it (a parent of several agents tells their
    /// results apart by it); `None` from a conversation, whose caller sent the task.
    pub task: Option<String>,
}

impl AgentResult {
    fn from_outcome(o: TurnOutcome) -> Self {
        AgentResult {
            answer: o.answer,
            steps: o.steps,
            tokens: o.tokens,
            tool_calls: o.tool_calls,
            error: None,
            task: None,
        }
    }

    /// As a message value: `{$: "result", answer, steps, tokens, tool_calls[, error][, task]}`.
    pub fn to_value(&self) -> Value {
        let mut kv = vec![
            ("$".into(), Value::Str(RESULT_TAG.into())),
            ("answer".into(), Value::Str(self.answer.clone())),
            ("steps".into(), Value::U64(self.steps.into())),
            ("tokens".into(), Value::U64(self.tokens)),
            ("tool_calls".into(), Value::U64(self.tool_calls.into())),
        ];
        if let Some(e) = &self.error {
            kv.push(("error".into(), Value::Str(e.clone())));
        }
        if let Some(t) = &self.task {
            kv.push(("task".into(), Value::Str(t.clone())));
        }
        Value::Map(kv)
    }

    /// Read a result message value.
    pub fn from_value(v: &Value) -> Result<Self, ValueError> {
        if tag_of(v) != Some(RESULT_TAG) {
            return Err(ValueError::Decode(format!(
                "not an agent result (no $: \"result\"): {v:?}"
            )));
        }
        let answer = match v.get("answer") {
            Some(Value::Str(s)) => s.clone(),
            _ => return Err(ValueError::Decode("agent result without an answer".into())),
        };
        let steps = v
            .get("steps")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| ValueError::Decode("agent result without steps".into()))?;
        Ok(AgentResult {
            answer,
            steps,
            tokens: v.get("tokens").and_then(Value::as_u64).unwrap_or(0),
            tool_calls: v
                .get("tool_calls")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
            error: v.get("error").and_then(Value::as_str).map(str::to_owned),
            task: v.get("task").and_then(Value::as_str).map(str::to_owned),
        })
    }
}

/// A task for a conversation agent: `{$: "task", task}` (a bare string value is a task too).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentTask {
    /// What the user asks.
    pub task: String,
}

impl AgentTask {
    /// A task.
    pub fn new(task: impl Into<String>) -> Self {
        AgentTask { task: task.into() }
    }

    /// As a message value.
    pub fn to_value(&self) -> Value {
        Value::Map(vec![
            ("$".into(), Value::Str(TASK_TAG.into())),
            ("task".into(), Value::Str(self.task.clone())),
        ])
    }

    /// Read a task from a message value: a map with a string `task`, or a bare string.
    pub fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Str(s) => Some(AgentTask::new(s.clone())),
            Value::Map(_) => v.get("task").and_then(Value::as_str).map(AgentTask::new),
            _ => None,
        }
    }
}

/// Send `result` to `parent`. A parent that is gone is not the agent's failure: it is logged.
async fn report<S: Syscalls>(
    sys: &S,
    parent: Option<CapRef>,
    result: &AgentResult,
    corr: Option<u64>,
) -> Result<(), ExitReason> {
    let Some(parent) = parent else {
        return Ok(());
    };
    let opts = SendOpts {
        corr,
        ..SendOpts::default()
    };
    match sys.send(parent, Body::Value(result.to_value()), opts).await {
        Ok(()) => Ok(()),
        Err(SendError::Refused(_, SysError::Shutdown)) => Err(ExitReason::Shutdown),
        Err(e) => {
            sys.log(LogLevel::Warn, &format!("agent result not delivered: {e}"));
            Ok(())
        }
    }
}

/// A one-task ReAct agent. How its steps ask for actions (native tool calls or one
/// constrained action object) is `turn.actions`: automatic unless set.
pub struct ReactSpec<S> {
    /// The system prompt (`None`: [`DEFAULT_SYSTEM_PROMPT`]).
    pub system: Option<String>,
    /// The task.
    pub task: String,
    /// How its turn runs.
    pub turn: TurnSpec<S>,
}

impl<S> Default for ReactSpec<S> {
    fn default() -> Self {
        ReactSpec {
            system: None,
            task: String::new(),
            turn: TurnSpec::default(),
        }
    }
}

impl<S> Clone for ReactSpec<S> {
    fn clone(&self) -> Self {
        ReactSpec {
            system: self.system.clone(),
            task: self.task.clone(),
            turn: self.turn.clone(),
        }
    }
}

impl<S> std::fmt::Debug for ReactSpec<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReactSpec")
            .field("system", &self.system)
            .field("task", &self.task)
            .field("turn", &self.turn)
            .finish()
    }
}

/// The ReAct agent image: boot (first message: the grant), pin the system prompt and the task,
/// run one turn, send `{$: "result", answer, steps, tokens}` to the parent and exit normally.
/// A failed turn ends the process (a quota stays a quota exit); nothing is sent then.
pub fn react_agent<S: Syscalls>(spec: ReactSpec<S>) -> Image<S> {
    let spec = Arc::new(spec);
    Image::new("react-agent", move |sys: S, args: Value| {
        let spec = spec.clone();
        async move {
            let mut devices = boot(&sys, &args, &spec.turn.tools).await?;
            let system = spec.system.as_deref().unwrap_or(DEFAULT_SYSTEM_PROMPT);
            remember_message(&sys, &ChatMessage::system(system), true).await?;
            remember_message(&sys, &ChatMessage::user(spec.task.clone()), true).await?;
            let mut turn = spec.turn.clone();
            turn.tools = std::mem::take(&mut devices.offer);
            let outcome = run_turn(&sys, devices.llm, devices.tools, &turn).await?;
            report(
                &sys,
                devices.parent,
                &AgentResult {
                    task: Some(spec.task.clone()),
                    ..AgentResult::from_outcome(outcome)
                },
                None,
            )
            .await
        }
    })
}

/// A conversation agent.
pub struct ConversationSpec<S> {
    /// The system prompt when the history has none (`None`: [`DEFAULT_SYSTEM_PROMPT`]).
    pub system: Option<String>,
    /// Earlier messages to resume from; its first system message is pinned.
    pub history: Vec<ChatMessage>,
    /// How each turn runs.
    pub turn: TurnSpec<S>,
    /// A name to register once booted (so clients find a restarted agent by name).
    pub register_as: Option<String>,
}

impl<S> Default for ConversationSpec<S> {
    fn default() -> Self {
        ConversationSpec {
            system: None,
            history: Vec::new(),
            turn: TurnSpec::default(),
            register_as: None,
        }
    }
}

impl<S> Clone for ConversationSpec<S> {
    fn clone(&self) -> Self {
        ConversationSpec {
            system: self.system.clone(),
            history: self.history.clone(),
            turn: self.turn.clone(),
            register_as: self.register_as.clone(),
        }
    }
}

impl<S> std::fmt::Debug for ConversationSpec<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConversationSpec")
            .field("system", &self.system)
            .field("history", &self.history.len())
            .field("turn", &self.turn)
            .field("register_as", &self.register_as)
            .finish()
    }
}

/// The conversation agent image: boot (first message: the grant), load the history (pinning its
/// first system message, or the spec's system prompt when it has none), then for each task
/// message remember it as a user turn, run a turn and send the result to the parent (echoing the
/// task's correlation id). A failed turn is reported in the result's `error` and the
/// conversation goes on; a quota or a shutdown ends it. A `Term` ends it normally; messages that
/// are not tasks are ignored.
pub fn conversation_agent<S: Syscalls>(spec: ConversationSpec<S>) -> Image<S> {
    let spec = Arc::new(spec);
    Image::new("conversation-agent", move |sys: S, args: Value| {
        let spec = spec.clone();
        async move {
            let mut devices = boot(&sys, &args, &spec.turn.tools).await?;
            if let Some(name) = &spec.register_as {
                sys.register(name)?;
            }
            let mut pinned_system = false;
            for m in &spec.history {
                let pin = m.role == Role::System && !pinned_system;
                pinned_system |= pin;
                remember_message(&sys, m, pin).await?;
            }
            if !pinned_system {
                let system = spec.system.as_deref().unwrap_or(DEFAULT_SYSTEM_PROMPT);
                remember_message(&sys, &ChatMessage::system(system), true).await?;
            }
            let mut turn = spec.turn.clone();
            turn.tools = std::mem::take(&mut devices.offer);
            // Ask the LLM device once how to ask it, not on every task.
            if turn.actions == Actions::Auto {
                let caps = llm_capabilities(&sys, devices.llm).await?;
                turn.actions = Actions::Auto.resolve(&caps);
                turn.context_tokens = turn.context_tokens.or(caps.context_tokens);
            }
            loop {
                let msg = sys.recv().await;
                let task = match &msg.body {
                    Body::Sys(SysMsg::Term { .. }) => return Ok(()),
                    Body::Value(v) => AgentTask::from_value(v),
                    _ => None,
                };
                let Some(task) = task else {
                    sys.log(
                        LogLevel::Debug,
                        "conversation agent: ignored a message that is not a task",
                    );
                    continue;
                };
                remember_message(&sys, &ChatMessage::user(task.task), false).await?;
                let result = match run_turn(&sys, devices.llm, devices.tools, &turn).await {
                    Ok(outcome) => AgentResult::from_outcome(outcome),
                    Err(e) if e.is_fatal() => return Err(e.into()),
                    Err(e) => AgentResult {
                        error: Some(e.to_string()),
                        ..AgentResult::default()
                    },
                };
                report(&sys, devices.parent, &result, msg.corr).await?;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentos_abi::Pid;

    #[test]
    fn results_round_trip() {
        let r = AgentResult {
            answer: "42".into(),
            steps: 3,
            tokens: 120,
            tool_calls: 2,
            error: None,
            task: Some("the question".into()),
        };
        assert_eq!(AgentResult::from_value(&r.to_value()), Ok(r.clone()));
        let failed = AgentResult {
            error: Some("llm device: driver: down".into()),
            ..r
        };
        assert_eq!(AgentResult::from_value(&failed.to_value()), Ok(failed));
        assert!(AgentResult::from_value(&Value::Str("result".into())).is_err());
        let no_steps = Value::Map(vec![
            ("$".into(), Value::Str("result".into())),
            ("answer".into(), Value::Str("x".into())),
        ]);
        assert!(AgentResult::from_value(&no_steps).is_err());
    }

    #[test]
    fn tasks_are_maps_or_strings() {
        let t = AgentTask::new("hi");
        assert_eq!(AgentTask::from_value(&t.to_value()), Some(t));
        assert_eq!(
            AgentTask::from_value(&Value::Str("yo".into())),
            Some(AgentTask::new("yo"))
        );
        assert_eq!(AgentTask::from_value(&Value::U64(1)), None);
        assert_eq!(AgentTask::from_value(&Value::Map(vec![])), None);
    }

    fn msg(body: Body, caps: Vec<CapRef>) -> Message {
        Message {
            caps,
            ..Message::new(Pid(1), body)
        }
    }

    #[test]
    fn grants_read_tagged_positional_and_kernel_boots() {
        let tagged = Value::Map(vec![
            ("$".into(), Value::Str("boot".into())),
            ("tools".into(), Value::Bool(false)),
            ("parent".into(), Value::Bool(true)),
        ]);
        let g = AgentGrant::from_message(&msg(Body::Value(tagged), vec![CapRef(1), CapRef(3)]));
        assert_eq!(
            g,
            Ok(AgentGrant {
                llm: CapRef(1),
                tools: None,
                parent: Some(CapRef(3))
            })
        );
        let seed = AgentGrant::from_message(&msg(Body::Empty, vec![CapRef(1), CapRef(2)]));
        assert_eq!(
            seed,
            Ok(AgentGrant {
                llm: CapRef(1),
                tools: Some(CapRef(2)),
                parent: None
            })
        );
        assert_eq!(
            AgentGrant::from_message(&msg(Body::Empty, vec![])),
            Err(AgentBootError::NoLlmDevice)
        );
        let boot = SysMsg::Boot {
            spawn: CapRef(9),
            devices: vec![
                (Arc::from("llm"), CapRef(4)),
                (Arc::from("tools"), CapRef(5)),
            ],
            reply: None,
        };
        assert_eq!(
            AgentGrant::from_message(&msg(Body::Sys(boot), vec![])),
            Ok(AgentGrant {
                llm: CapRef(4),
                tools: Some(CapRef(5)),
                parent: None
            })
        );
    }
}
