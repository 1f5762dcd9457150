//! Helpers for agent scenarios: a kernel with a scripted LLM device and a tools device, scripted
//! replies, and an init process that runs one turn and reports what happened.

#![allow(dead_code)]

use crate::util::*;
use agentos_abi::*;
use agentos_drivers::llm::{LlmDriver, ScriptedProvider};
use agentos_drivers::tools::{ToolDriver, ToolError, ToolRegistry};
use agentos_kernel::*;
use agentos_userland::agents::*;
use std::sync::Arc;

/// Tokens every scripted reply reports (prompt + completion).
pub const REPLY_TOKENS: u64 = 15;

fn usage() -> Option<TokenUsage> {
    Some(TokenUsage {
        prompt_tokens: 10,
        completion_tokens: 5,
        cached_tokens: 0,
    })
}

/// A text reply (costing [`REPLY_TOKENS`]).
pub fn text(content: &str) -> ChatReply {
    ChatReply {
        usage: usage(),
        ..ChatReply::text(content)
    }
}

/// A reply calling tools: `(id, name, JSON arguments)` each.
pub fn calls(list: &[(&str, &str, &str)]) -> ChatReply {
    ChatReply {
        tool_calls: list
            .iter()
            .map(|(id, name, args)| ToolCall {
                id: (*id).into(),
                name: (*name).into(),
                arguments: (*args).into(),
            })
            .collect(),
        usage: usage(),
        finish_reason: agentos_abi::device::FinishReason::ToolCalls,
        ..ChatReply::default()
    }
}

/// A reply calling one tool.
pub fn call(id: &str, name: &str, args: &str) -> ChatReply {
    calls(&[(id, name, args)])
}

/// Every tool run, by tool name and arguments, in order.
pub type ToolLog = Log<(String, Value)>;

/// The test tools: `add` (a + b), `lookup` (always an error), `read_file` (echoes `path`),
/// `delegate` (a canned summary). Each run is logged.
pub fn tools(ran: &ToolLog) -> ToolRegistry {
    let mut r = ToolRegistry::new();
    let obj = r#"{"type":"object"}"#;
    let l = ran.clone();
    r.register_sync("add", "add a and b", obj, move |args| {
        push(&l, ("add".to_owned(), args.clone()));
        let get = |k| {
            args.get(k)
                .and_then(Value::as_u64)
                .ok_or_else(|| ToolError::new(format!("missing {k}")))
        };
        Ok(Value::U64(get("a")? + get("b")?))
    })
    .expect("register add");
    let l = ran.clone();
    r.register_sync("lookup", "look a thing up", obj, move |args| {
        push(&l, ("lookup".to_owned(), args));
        Err(ToolError::new("not found"))
    })
    .expect("register lookup");
    let l = ran.clone();
    r.register_sync("read_file", "read a file", obj, move |args| {
        push(&l, ("read_file".to_owned(), args.clone()));
        let path = args.get("path").and_then(Value::as_str).unwrap_or("?");
        Ok(Value::Str(format!("contents of {path}")))
    })
    .expect("register read_file");
    let l = ran.clone();
    r.register_sync("delegate", "investigate in a sub-agent", obj, move |args| {
        push(&l, ("delegate".to_owned(), args));
        Ok(Value::Str("a distilled summary".into()))
    })
    .expect("register delegate");
    r
}

/// How many times tool `name` ran.
pub fn runs(ran: &ToolLog, name: &str) -> usize {
    snapshot(ran).iter().filter(|(n, _)| n == name).count()
}

/// A deterministic kernel with `provider` as its `llm` device and the test tools as `tools`.
pub fn kernel(provider: &Arc<ScriptedProvider>, ran: &ToolLog) -> Kernel {
    let k = det(7);
    k.register_driver(Arc::new(
        LlmDriver::new(provider.clone()).expect("llm driver"),
    ))
    .expect("register llm");
    k.register_driver(Arc::new(ToolDriver::new(tools(ran)).expect("tools driver")))
        .expect("register tools");
    k
}

/// Boot options granting both devices under `quota`.
pub fn grant(quota: Quota) -> BootOpts {
    BootOpts {
        grant: vec!["llm".into(), "tools".into()],
        quota,
        ..BootOpts::default()
    }
}

/// The specs of the test tools, as an agent offers them.
pub fn tool_specs(names: &[&str]) -> Vec<ToolSpec> {
    let ran = log();
    let all = tools(&ran).specs();
    names
        .iter()
        .filter_map(|n| all.iter().find(|s| s.name == *n).cloned())
        .collect()
}

/// What a turn run by [`run_one_turn`] reported.
#[derive(Debug, Clone)]
pub struct Turned {
    /// How init exited.
    pub exit: ExitReason,
    /// The turn's result, if init got that far.
    pub outcome: Option<Result<TurnOutcome, TurnError>>,
    /// Init's account usage after the turn.
    pub usage: Usage,
}

/// The system prompt of the turn scenarios.
pub const SYSTEM: &str = "You are a test agent.";
/// The task of the turn scenarios.
pub const TASK: &str = "Add 2 and 3.";

/// Boot init with both devices, pin the system prompt and the task, run one turn under `spec`.
pub fn run_one_turn(k: &Kernel, spec: TurnSpec<Sys>, quota: Quota) -> Turned {
    let seen: Log<(Result<TurnOutcome, TurnError>, Usage)> = log();
    let out = seen.clone();
    let image = init(move |sys: Sys, boot: SysMsg| {
        let spec = spec.clone();
        let out = out.clone();
        async move {
            let open = |name: &'static str| {
                let dev = boot.device(name);
                let sys = sys.clone();
                async move {
                    let dev = dev.ok_or_else(|| ExitReason::fault(format!("no {name}")))?;
                    sys.open(dev).await.map_err(ExitReason::from)
                }
            };
            let llm = open("llm").await?;
            let tools = open("tools").await?;
            let pin = RememberOpts {
                pin: true,
                ..RememberOpts::default()
            };
            sys.remember(ChatMessage::system(SYSTEM).to_value(), pin)
                .await?;
            sys.remember(ChatMessage::user(TASK).to_value(), pin)
                .await?;
            let r = run_turn(&sys, llm, Some(tools), &spec).await;
            push(&out, (r, sys.usage()));
            Ok(())
        }
    });
    let exit = boot_with_and_wait(k, image, grant(quota));
    let (outcome, usage) = match snapshot(&seen).pop() {
        Some((o, u)) => (Some(o), u),
        None => (None, Usage::default()),
    };
    Turned {
        exit,
        outcome,
        usage,
    }
}

/// The names of the tools a request offered.
pub fn offered(req: &ChatRequest) -> Vec<String> {
    req.tools.iter().map(|t| t.name.clone()).collect()
}

/// The last message of a request's prompt.
pub fn last_message(req: &ChatRequest) -> ChatMessage {
    req.messages.last().cloned().unwrap_or_default()
}
