//! The agent images end to end: a parent spawns an agent, grants it devices with the boot
//! protocol and gets result messages back; a token quota that runs out mid-turn ends the agent
//! with a quota exit.

use crate::common::*;
use crate::util::*;
use agentos_abi::*;
use agentos_drivers::llm::{LlmError, ScriptedProvider};
use agentos_kernel::Sys;
use agentos_userland::agents::*;
use std::sync::Arc;

/// What the parent of a spawned agent saw.
#[derive(Debug, Clone)]
struct ParentSaw {
    /// Result messages, with their correlation ids.
    results: Vec<(AgentResult, Option<u64>)>,
    /// How the agent exited.
    exit: ExitReason,
    /// The parent's subtree usage at the end.
    usage: Usage,
}

/// Boot a parent (holding both devices) that spawns `agent`, sends it a grant (with the tools
/// device if `with_tools`), sends `tasks` (with correlation ids 1, 2, ...), collects `expect`
/// results, then terms the agent if it is still running and waits for it.
fn parent_of(
    k: &agentos_kernel::Kernel,
    agent: Image<Sys>,
    with_tools: bool,
    tasks: Vec<AgentTask>,
    expect: usize,
) -> (ExitReason, Option<ParentSaw>) {
    let saw: Log<ParentSaw> = log();
    let out = saw.clone();
    let image = init(move |sys: Sys, boot: SysMsg| {
        let agent = agent.clone();
        let tasks = tasks.clone();
        let out = out.clone();
        async move {
            let llm = boot
                .device("llm")
                .ok_or_else(|| ExitReason::fault("no llm"))?;
            let tools = boot.device("tools").filter(|_| with_tools);
            let child = sys.spawn(agent, SpawnOpts::default()).await?;
            let grant = AgentGrant::delegate(&sys, llm, tools)?;
            grant.send(&sys, child.cap).await?;
            for (i, t) in tasks.iter().enumerate() {
                let opts = SendOpts {
                    corr: Some(i as u64 + 1),
                    ..SendOpts::default()
                };
                sys.send(child.cap, Body::Value(t.to_value()), opts).await?;
            }
            let mut results = Vec::new();
            while results.len() < expect {
                let m = sys.recv().await;
                if let Some(v) = m.body.as_value() {
                    let r =
                        AgentResult::from_value(v).map_err(|e| ExitReason::fault(e.to_string()))?;
                    assert_eq!(m.from, child.pid, "results come from the agent");
                    results.push((r, m.corr));
                }
            }
            // A conversation runs until told to stop; a finished react agent is already gone.
            let _ = sys.term(child.cap).await;
            let exit = sys.waitpid(child.cap).await?;
            push(
                &out,
                ParentSaw {
                    results,
                    exit,
                    usage: sys.usage(),
                },
            );
            Ok(())
        }
    });
    let exit = boot_with_and_wait(k, image, grant(Quota::default()));
    (exit, snapshot(&saw).pop())
}

#[test]
fn a_react_agent_boots_from_its_grant_and_reports_its_result() {
    let p = Arc::new(ScriptedProvider::new([
        call("c1", "add", r#"{"a":2,"b":3}"#),
        text("2 + 3 = 5"),
    ]));
    let ran = log();
    let k = kernel(&p, &ran);
    let agent = react_agent::<Sys>(ReactSpec {
        task: "What is 2 + 3?".into(),
        ..ReactSpec::default()
    });
    assert_eq!(&**agent.name(), "react-agent");
    let (exit, saw) = parent_of(&k, agent, true, vec![], 1);
    assert_eq!(exit, ExitReason::Normal);
    let saw = saw.expect("the parent finished");
    assert_eq!(
        saw.results,
        vec![(
            AgentResult {
                answer: "2 + 3 = 5".into(),
                steps: 2,
                tokens: 2 * REPLY_TOKENS,
                tool_calls: 1,
                error: None,
                task: Some("What is 2 + 3?".into()),
            },
            None
        )]
    );
    assert_eq!(saw.exit, ExitReason::Normal);
    assert_eq!(
        saw.usage.tokens,
        2 * REPLY_TOKENS,
        "charged up to the parent"
    );
    assert_eq!(saw.usage.tool_calls, 1);
    assert_eq!(runs(&ran, "add"), 1);

    let reqs = p.requests();
    assert_eq!(
        reqs[0].messages,
        vec![
            ChatMessage::system(DEFAULT_SYSTEM_PROMPT),
            ChatMessage::user("What is 2 + 3?")
        ],
        "the system prompt and the task lead the prompt"
    );
    assert_eq!(
        offered(&reqs[0]),
        ["add", "delegate", "lookup", "read_file"],
        "with no tools in its spec the agent offers what the tools device lists"
    );
}

#[test]
fn a_react_agent_without_a_tools_device_answers_directly() {
    let p = Arc::new(ScriptedProvider::new([
        // A model that calls a tool anyway: with no tools device its text is the answer.
        ChatReply {
            content: "I would add them: 5".into(),
            ..call("c1", "add", "{}")
        },
    ]));
    let ran = log();
    let k = kernel(&p, &ran);
    let agent = react_agent::<Sys>(ReactSpec {
        system: Some("Be brief.".into()),
        task: "2+3?".into(),
        turn: TurnSpec {
            tools: tool_specs(&["add"]),
            ..TurnSpec::default()
        },
    });
    let (exit, saw) = parent_of(&k, agent, false, vec![], 1);
    assert_eq!(exit, ExitReason::Normal);
    let saw = saw.expect("the parent finished");
    assert_eq!(saw.results[0].0.answer, "I would add them: 5");
    assert_eq!(saw.results[0].0.steps, 1);
    assert_eq!(runs(&ran, "add"), 0);
    assert_eq!(
        p.requests()[0].messages[0],
        ChatMessage::system("Be brief.")
    );
}

#[test]
fn a_token_quota_exhausted_mid_turn_ends_the_agent_with_a_quota_exit() {
    // Every reply costs 40 tokens and calls a tool with fresh arguments: the third LLM call
    // takes the account past its 100 tokens.
    let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let p = Arc::new(ScriptedProvider::with(move |_| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(ChatReply {
            usage: Some(TokenUsage {
                prompt_tokens: 30,
                completion_tokens: 10,
                cached_tokens: 0,
            }),
            ..call(&format!("c{i}"), "add", &format!(r#"{{"a":{i},"b":0}}"#))
        })
    }));
    let ran = log();
    let k = kernel(&p, &ran);
    // Booted by the kernel: the agent takes `llm` and `tools` from its boot grant.
    let agent = react_agent::<Sys>(ReactSpec {
        task: "count forever".into(),
        ..ReactSpec::default()
    });
    let pid = k
        .boot(
            agent,
            grant(Quota {
                tokens: Some(100),
                ..Quota::default()
            }),
        )
        .expect("boot");
    let exit = k.wait_exit(pid).expect("the agent exits");
    assert_eq!(
        exit,
        ExitReason::Quota {
            resource: Meter::Tokens
        }
    );
    assert_eq!(
        p.requests().len(),
        3,
        "the third call was made, then charged"
    );
    assert_eq!(runs(&ran, "add"), 2, "its tool calls never ran");
    assert_eq!(exit_of(&k, pid), Some(exit));
}

#[test]
fn a_conversation_agent_answers_each_task_in_one_running_transcript() {
    let p = Arc::new(ScriptedProvider::results([
        Ok(text("Paris")),
        Err(LlmError::Scripted("provider down".into())),
        Ok(text("Berlin")),
    ]));
    let ran = log();
    let k = kernel(&p, &ran);
    let agent = conversation_agent::<Sys>(ConversationSpec {
        history: vec![
            ChatMessage::user("hi"),
            ChatMessage::system("You are terse."),
            ChatMessage::assistant("hello"),
        ],
        ..ConversationSpec::default()
    });
    assert_eq!(&**agent.name(), "conversation-agent");
    let tasks = vec![
        AgentTask::new("Capital of France?"),
        AgentTask::new("Capital of Italy?"),
        AgentTask::new("Capital of Germany?"),
    ];
    let (exit, saw) = parent_of(&k, agent, false, tasks, 3);
    assert_eq!(exit, ExitReason::Normal);
    let saw = saw.expect("the parent finished");
    let got: Vec<(&str, u32, Option<u64>)> = saw
        .results
        .iter()
        .map(|(r, corr)| (r.answer.as_str(), r.steps, *corr))
        .collect();
    assert_eq!(
        got,
        vec![
            ("Paris", 1, Some(1)),
            ("", 0, Some(2)),
            ("Berlin", 1, Some(3))
        ],
        "one result per task, correlated"
    );
    assert_eq!(saw.results[0].0.error, None);
    let err = saw.results[1].0.error.clone().unwrap_or_default();
    assert!(err.contains("provider down"), "{err}");
    assert_eq!(saw.exit, ExitReason::Normal, "a term ends the conversation");

    let reqs = p.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(
        reqs[0].messages,
        vec![
            ChatMessage::system("You are terse."),
            ChatMessage::user("hi"),
            ChatMessage::assistant("hello"),
            ChatMessage::user("Capital of France?"),
        ],
        "the history's system message is pinned and leads"
    );
    assert!(reqs[0].tools.is_empty(), "no tools device, no tools");
    assert_eq!(
        reqs[2].messages[3..],
        [
            ChatMessage::user("Capital of France?"),
            ChatMessage::assistant("Paris"),
            ChatMessage::user("Capital of Italy?"),
            ChatMessage::user("Capital of Germany?"),
        ]
    );
}

#[test]
fn a_conversation_agent_on_a_grammar_device_asks_for_actions_and_probes_once() {
    let caps = LlmCapabilities {
        grammar: true,
        context_tokens: Some(8_192),
        ..LlmCapabilities::default()
    };
    let p = Arc::new(
        ScriptedProvider::new([
            text(r#"{"tool": "add", "arguments": {"a": 2, "b": 3}}"#),
            text(r#"{"answer": "5"}"#),
            text(r#"{"answer": "Paris"}"#),
        ])
        .with_capabilities(caps),
    );
    let ran = log();
    let k = kernel(&p, &ran);
    let add = ToolSpec {
        name: "add".into(),
        description: "add a and b".into(),
        parameters: r#"{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"integer"}},"required":["a","b"]}"#.into(),
    };
    let agent = conversation_agent::<Sys>(ConversationSpec {
        system: Some("Answer briefly.".into()),
        turn: TurnSpec {
            tools: vec![add.clone()],
            ..TurnSpec::default()
        },
        ..ConversationSpec::default()
    });
    let tasks = vec![
        AgentTask::new("What is 2 + 3?"),
        AgentTask::new("Capital of France?"),
    ];
    let (exit, saw) = parent_of(&k, agent, true, tasks, 2);
    assert_eq!(exit, ExitReason::Normal);
    let saw = saw.expect("the parent finished");
    let got: Vec<(&str, u32)> = saw
        .results
        .iter()
        .map(|(r, _)| (r.answer.as_str(), r.tool_calls))
        .collect();
    assert_eq!(got, vec![("5", 1), ("Paris", 0)]);
    assert_eq!(runs(&ran, "add"), 1);
    assert_eq!(p.capability_requests(), 1, "asked once, at boot");
    let reqs = p.requests();
    let grammar = action_gbnf(std::slice::from_ref(&add));
    assert!(reqs
        .iter()
        .all(|r| r.tools.is_empty() && r.grammar.as_deref() == Some(grammar.as_str())));
    // The second task sees the first as the actions and answer the model wrote.
    assert_eq!(
        reqs[2].messages[1..],
        [
            ChatMessage::user("What is 2 + 3?"),
            ChatMessage::assistant(r#"{"tool": "add", "arguments": {"a": 2, "b": 3}}"#),
            ChatMessage::user("Result of add: 5"),
            ChatMessage::assistant(r#"{"answer": "5"}"#),
            ChatMessage::user("Capital of France?"),
        ]
    );
    assert!(reqs[2].messages[0]
        .content
        .starts_with("Answer briefly.\n\nTools:\n- add("));
}

#[test]
fn a_conversation_agent_without_history_pins_its_system_prompt() {
    let p = Arc::new(ScriptedProvider::new([text("pong")]));
    let ran = log();
    let k = kernel(&p, &ran);
    let agent = conversation_agent::<Sys>(ConversationSpec {
        system: Some("Answer in one word.".into()),
        ..ConversationSpec::default()
    });
    let (exit, saw) = parent_of(&k, agent, true, vec![AgentTask::new("ping")], 1);
    assert_eq!(exit, ExitReason::Normal);
    assert_eq!(
        saw.expect("the parent finished").results[0].0.answer,
        "pong"
    );
    assert_eq!(
        p.requests()[0].messages,
        vec![
            ChatMessage::system("Answer in one word."),
            ChatMessage::user("ping")
        ]
    );
}

/// A supervised agent finds its devices in its args (the supervisor's child caps), so a crash
/// and restart boots it again without anyone resending a grant.
#[test]
fn a_supervised_agent_boots_from_its_args_and_again_after_a_restart() {
    use agentos_userland::{supervisor, ChildSpec, Restart, Strategy, SupervisorSpec};
    // The first run's model call fails (the agent exits with a fault); the restart answers.
    let p = Arc::new(ScriptedProvider::results([
        Err(LlmError::Transport("connection reset".into())),
        Ok(text("restarted and answered")),
    ]));
    let ran = log();
    let k = kernel(&p, &ran);
    let got: Log<AgentResult> = log();
    let out = got.clone();
    let image = init(move |sys: Sys, boot: SysMsg| {
        let out = out.clone();
        async move {
            let SysMsg::Boot { spawn, .. } = &boot else {
                return Err(ExitReason::fault("no boot grant"));
            };
            let llm = boot
                .device("llm")
                .ok_or_else(|| ExitReason::fault("no llm"))?;
            let me = sys.derive(sys.self_cap(), Right::Send.into())?;
            let sup_spawn = sys.derive(*spawn, Right::Spawn.into())?;
            let agent = react_agent(ReactSpec {
                task: "Say something.".into(),
                ..ReactSpec::default()
            });
            let spec = SupervisorSpec::new(Strategy::OneForOne).child(
                ChildSpec::new("agent", agent)
                    .restart(Restart::Transient)
                    .cap("llm", llm)
                    .cap("parent", me),
            );
            let image = supervisor(spec).map_err(|e| ExitReason::fault(e.to_string()))?;
            let opts = SpawnOpts {
                caps: vec![llm, me, sup_spawn],
                ..SpawnOpts::default()
            };
            let sup = sys.spawn(image, opts).await?;
            loop {
                let m = sys.recv().await;
                if let Some(r) = m
                    .body
                    .as_value()
                    .and_then(|v| AgentResult::from_value(v).ok())
                {
                    push(&out, r);
                    break;
                }
            }
            sys.term(sup.cap).await?;
            Ok(())
        }
    });
    let exit = boot_with_and_wait(&k, image, grant(Quota::default()));
    assert_eq!(exit, ExitReason::Normal);
    let got = snapshot(&got);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].answer, "restarted and answered");
    assert_eq!(got[0].task.as_deref(), Some("Say something."));
    assert_eq!(
        p.requests().len(),
        2,
        "one failed call, one after the restart"
    );
    let agent_spawns = k
        .trace(4096)
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::Spawn { name, .. } if &**name == "react-agent"))
        .count();
    assert_eq!(agent_spawns, 2);
}
