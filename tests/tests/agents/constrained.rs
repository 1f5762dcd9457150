//! Constrained actions in `run_turn`: an LLM device whose provider cannot call tools natively
//! but follows a grammar (or a JSON schema) is asked for one action object per step; the
//! request carries the grammar or schema built from the offered tools, the action is parsed and
//! dispatched to the tools device, an invalid action is a stall the model sees (never a crash),
//! the choice is automatic, overridable and in the agent's trace, and prompts fit the window
//! the device reports.

use crate::common::*;
use crate::util::*;
use agentos_abi::*;
use agentos_drivers::llm::ScriptedProvider;
use agentos_kernel::{HostEvent, Sys};
use agentos_userland::agents::*;
use std::sync::Arc;

/// A provider that cannot call tools natively but takes a GBNF grammar.
fn grammar_only() -> LlmCapabilities {
    LlmCapabilities {
        grammar: true,
        ..LlmCapabilities::default()
    }
}

/// `add` as a small model is offered it: with the schema of its arguments.
fn add_spec() -> ToolSpec {
    ToolSpec {
        name: "add".into(),
        description: "add a and b".into(),
        parameters: r#"{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"integer"}},"required":["a","b"]}"#.into(),
    }
}

fn read_spec() -> ToolSpec {
    ToolSpec {
        name: "read_file".into(),
        description: "read a file".into(),
        parameters:
            r#"{"type":"object","properties":{"path":{"type":"string"}},"required":["path"]}"#
                .into(),
    }
}

fn spec(tools: Vec<ToolSpec>) -> TurnSpec<Sys> {
    TurnSpec {
        tools,
        ..TurnSpec::default()
    }
}

fn scripted(caps: LlmCapabilities, replies: &[&str]) -> Arc<ScriptedProvider> {
    Arc::new(ScriptedProvider::new(replies.iter().map(|r| text(r))).with_capabilities(caps))
}

fn outcome(t: &Turned) -> TurnOutcome {
    assert_eq!(t.exit, ExitReason::Normal);
    match &t.outcome {
        Some(Ok(o)) => o.clone(),
        other => panic!("the turn did not finish: {other:?}"),
    }
}

#[test]
fn a_grammar_step_carries_the_action_grammar_and_dispatches_the_parsed_call() {
    let p = scripted(
        grammar_only(),
        &[
            r#"{"tool": "add", "arguments": {"a": 2, "b": 3}}"#,
            r#"{"answer": "2 + 3 = 5"}"#,
        ],
    );
    let ran = log();
    let k = kernel(&p, &ran);
    let t = run_one_turn(&k, spec(vec![add_spec()]), Quota::default());
    let o = outcome(&t);
    assert_eq!(o.answer, "2 + 3 = 5");
    assert_eq!((o.steps, o.tool_calls, o.actions), (2, 1, Actions::Grammar));
    assert_eq!(runs(&ran, "add"), 1);
    assert_eq!(t.usage.tool_calls, 1);

    let reqs = p.requests();
    assert_eq!(reqs.len(), 2);
    let first = &reqs[0];
    assert!(first.tools.is_empty(), "no native tools with a grammar");
    assert!(first.response_format.is_none());
    let grammar = first.grammar.as_deref().expect("the step's grammar");
    assert_eq!(grammar, action_gbnf(&[add_spec()]));
    assert!(
        grammar.starts_with("root ::= call-add | answer"),
        "{grammar}"
    );
    let system = &first.messages[0];
    assert_eq!(system.role, Role::System);
    assert!(system.content.starts_with(SYSTEM));
    assert!(
        system.content.contains("- add(a: integer, b: integer)"),
        "the tools are in the prompt: {}",
        system.content
    );
    assert_eq!(first.messages[1], ChatMessage::user(TASK));
    // The next step reads the call as the action the model wrote and the result as a message.
    assert_eq!(
        reqs[1].messages[2..],
        [
            ChatMessage::assistant(r#"{"tool": "add", "arguments": {"a": 2, "b": 3}}"#),
            ChatMessage::user("Result of add: 5"),
        ]
    );
}

#[test]
fn a_json_schema_provider_gets_the_action_schema_as_its_response_format() {
    let caps = LlmCapabilities {
        json_schema: true,
        ..LlmCapabilities::default()
    };
    let p = scripted(
        caps,
        &[
            "```json\n{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": 1}}\n```",
            r#"{"answer": "2"}"#,
        ],
    );
    let ran = log();
    let k = kernel(&p, &ran);
    let o = outcome(&run_one_turn(&k, spec(vec![add_spec()]), Quota::default()));
    assert_eq!((o.answer.as_str(), o.actions), ("2", Actions::JsonSchema));
    assert_eq!(
        runs(&ran, "add"),
        1,
        "a fenced, OpenAI-spelled call still runs"
    );
    let first = &p.requests()[0];
    assert!(first.tools.is_empty() && first.grammar.is_none());
    let format = first.response_format.as_ref().expect("a response format");
    assert_eq!(format.schema, action_schema(&[add_spec()]));
    assert!(format.schema.contains(r#""const":"add""#));
}

#[test]
fn the_answer_step_after_tool_work_ends_with_the_task_and_the_results() {
    let p = scripted(
        grammar_only(),
        &[
            r#"{"tool": "add", "arguments": {"a": 2, "b": 3}}"#,
            r#"{"answer": "5"}"#,
        ],
    );
    let ran = log();
    let k = kernel(&p, &ran);
    let o = outcome(&run_one_turn(
        &k,
        TurnSpec {
            max_steps: Some(2),
            base_steps: 2,
            ..spec(vec![add_spec()])
        },
        Quota::default(),
    ));
    assert_eq!((o.answer.as_str(), o.tool_calls), ("5", 1));
    let last = p.requests().pop().expect("two requests");
    assert!(last
        .grammar
        .as_deref()
        .is_some_and(|g| g.starts_with("root ::= answer\n")));
    assert_eq!(
        last.messages[1..],
        [
            ChatMessage::user(TASK),
            ChatMessage::user("Result of add: 5"),
            ChatMessage::user(
                "Task: Add 2 and 3.\nTool results: add returned 5\nGive the final answer."
            ),
        ],
        "the evidence and the recap, without the call objects"
    );
}

#[test]
fn an_invalid_action_is_a_stall_the_model_sees_not_a_crash() {
    let p = scripted(
        grammar_only(),
        &[
            r#"{"tool": "rm", "arguments": {"path": "/"}}"#,
            r#"{"tool": "add", "arguments": {"a": "two", "b": 3}}"#,
            r#"{"answer": "I could not add them."}"#,
        ],
    );
    let ran = log();
    let k = kernel(&p, &ran);
    let t = run_one_turn(
        &k,
        TurnSpec {
            stall_limit: 2,
            ..spec(vec![add_spec()])
        },
        Quota::default(),
    );
    let o = outcome(&t);
    assert_eq!(o.answer, "I could not add them.");
    assert_eq!((o.steps, o.tool_calls), (3, 0));
    assert_eq!(
        runs(&ran, "add") + runs(&ran, "rm"),
        0,
        "nothing invalid ran"
    );
    let reqs = p.requests();
    let second = &reqs[1].messages;
    assert_eq!(
        second[second.len() - 2..],
        [
            ChatMessage::assistant(r#"{"tool": "rm", "arguments": {"path": "/"}}"#),
            ChatMessage::user(
                "That was not a valid action: there is no tool `rm`; the tools are add."
            ),
        ]
    );
    // Two invalid actions are two stalls: the third step must answer, and its grammar says so.
    let third = &reqs[2];
    assert!(
        third
            .grammar
            .as_deref()
            .is_some_and(|g| g.starts_with("root ::= answer\n")),
        "{:?}",
        third.grammar
    );
    assert!(last_message(third).content.starts_with("Stop searching"));
    assert!(third
        .messages
        .iter()
        .any(|m| m.content.contains("add: `a`: must be of type integer")));
}

#[test]
fn hostile_constrained_replies_never_end_the_turn_badly() {
    let p = scripted(
        grammar_only(),
        &[
            "{",
            r#"{"tool": 7}"#,
            "",
            r#"{"answer": "cut off by the tok"#,
        ],
    );
    let ran = log();
    let k = kernel(&p, &ran);
    let o = outcome(&run_one_turn(
        &k,
        TurnSpec {
            stall_limit: 5,
            ..spec(vec![add_spec()])
        },
        Quota::default(),
    ));
    // Two invalid actions, an empty answer (nudged), then an answer cut off mid-string.
    assert_eq!(o.answer, "cut off by the tok");
    assert_eq!(o.steps, 4);
    assert_eq!(runs(&ran, "add"), 0);
}

#[test]
fn native_providers_keep_native_tool_calls() {
    let p = Arc::new(ScriptedProvider::new([
        call("c1", "add", r#"{"a":2,"b":3}"#),
        text("5"),
    ]));
    let ran = log();
    let k = kernel(&p, &ran);
    let o = outcome(&run_one_turn(&k, spec(vec![add_spec()]), Quota::default()));
    assert_eq!(
        (o.answer.as_str(), o.actions, o.tool_calls),
        ("5", Actions::Native, 1)
    );
    let first = &p.requests()[0];
    assert_eq!(offered(first), ["add"]);
    assert!(first.grammar.is_none() && first.response_format.is_none());
    assert_eq!(
        first.messages[0],
        ChatMessage::system(SYSTEM),
        "no action format"
    );
}

#[test]
fn the_spec_overrides_the_automatic_choice() {
    // A native provider told to use a grammar...
    let p = Arc::new(ScriptedProvider::new([text(r#"{"answer": "ok"}"#)]));
    let ran = log();
    let k = kernel(&p, &ran);
    let o = outcome(&run_one_turn(
        &k,
        TurnSpec {
            actions: Actions::Grammar,
            ..spec(vec![add_spec()])
        },
        Quota::default(),
    ));
    assert_eq!((o.answer.as_str(), o.actions), ("ok", Actions::Grammar));
    assert!(p.requests()[0].grammar.is_some());
    // ...and a grammar provider told to call tools natively.
    let p = scripted(grammar_only(), &["plain text"]);
    let k = kernel(&p, &ran);
    let o = outcome(&run_one_turn(
        &k,
        TurnSpec {
            actions: Actions::Native,
            ..spec(vec![add_spec()])
        },
        Quota::default(),
    ));
    assert_eq!(
        (o.answer.as_str(), o.actions),
        ("plain text", Actions::Native)
    );
    let first = &p.requests()[0];
    assert_eq!(offered(first), ["add"]);
    assert!(first.grammar.is_none());
}

#[test]
fn the_choice_is_in_the_agents_trace() {
    let p = scripted(grammar_only(), &[r#"{"answer": "hi"}"#]);
    let ran = log();
    let k = kernel(&p, &ran);
    let rx = k.subscribe(1 << 12);
    let t = run_one_turn(&k, spec(vec![add_spec()]), Quota::default());
    assert_eq!(outcome(&t).answer, "hi");
    let lines: Vec<String> = rx
        .try_iter()
        .filter_map(|h| match h {
            HostEvent::Log(l) => Some(l.line.to_string()),
            HostEvent::Event(_) => None,
        })
        .collect();
    assert!(
        lines.iter().any(|l| l.starts_with("turn: grammar actions")),
        "{lines:?}"
    );
}

#[test]
fn a_react_agent_on_a_grammar_device_calls_its_tools_as_actions() {
    let p = scripted(
        grammar_only(),
        &[
            r#"{"tool": "add", "arguments": {"a": 40, "b": 2}}"#,
            r#"{"answer": "42"}"#,
        ],
    );
    let ran = log();
    let k = kernel(&p, &ran);
    let saw: Log<AgentResult> = log();
    let out = saw.clone();
    let agent = react_agent::<Sys>(ReactSpec {
        task: "What is 40 + 2?".into(),
        turn: spec(vec![add_spec()]),
        ..ReactSpec::default()
    });
    let image = init(move |sys: Sys, boot: SysMsg| {
        let agent = agent.clone();
        let out = out.clone();
        async move {
            let llm = boot
                .device("llm")
                .ok_or_else(|| ExitReason::fault("no llm"))?;
            let tools = boot.device("tools");
            let child = sys.spawn(agent, SpawnOpts::default()).await?;
            AgentGrant::delegate(&sys, llm, tools)?
                .send(&sys, child.cap)
                .await?;
            let m = sys.recv().await;
            if let Some(v) = m.body.as_value() {
                let r = AgentResult::from_value(v).map_err(|e| ExitReason::fault(e.to_string()))?;
                push(&out, r);
            }
            sys.waitpid(child.cap).await?;
            Ok(())
        }
    });
    assert_eq!(
        boot_with_and_wait(&k, image, grant(Quota::default())),
        ExitReason::Normal
    );
    let r = snapshot(&saw).pop().expect("a result");
    assert_eq!((r.answer.as_str(), r.tool_calls, r.steps), ("42", 1, 2));
    assert_eq!(runs(&ran, "add"), 1);
}

#[test]
fn prompts_fit_the_window_the_device_reports() {
    // Each read returns a long result; a 700-token window cannot hold three of them.
    let long = |i: usize| format!("{i}{}", "p".repeat(1_200));
    let calls: Vec<String> = (0..3)
        .map(|i| {
            format!(
                r#"{{"tool": "read_file", "arguments": {{"path": "{}"}}}}"#,
                long(i)
            )
        })
        .collect();
    let caps = LlmCapabilities {
        context_tokens: Some(1_400),
        ..grammar_only()
    };
    let mut replies: Vec<&str> = calls.iter().map(String::as_str).collect();
    replies.push(r#"{"answer": "read them"}"#);
    let p = scripted(caps, &replies);
    let ran = log();
    let k = kernel(&p, &ran);
    let o = outcome(&run_one_turn(
        &k,
        TurnSpec {
            max_tokens: Some(64),
            ..spec(vec![read_spec(), add_spec()])
        },
        Quota::default(),
    ));
    assert_eq!((o.answer.as_str(), o.tool_calls), ("read them", 3));
    let budget = prompt_budget(1_400, Some(64), 0);
    for (i, req) in p.requests().iter().enumerate() {
        let tokens: u64 = req
            .messages
            .iter()
            .map(|m| 4 + estimate_tokens(&m.content))
            .sum();
        assert!(tokens <= budget + 64, "request {i}: {tokens} > {budget}");
        // The system prompt with the step's tools and the task are always there, whole.
        assert!(req.messages[0]
            .content
            .contains("- read_file(path: string)"));
        assert!(req.messages[0]
            .content
            .contains("- add(a: integer, b: integer)"));
        assert_eq!(req.messages[1], ChatMessage::user(TASK));
        assert!(req
            .grammar
            .as_deref()
            .is_some_and(|g| g.contains("call-read-file")));
    }
    let last = p.requests().pop().expect("requests");
    let text: String = last.messages.iter().map(|m| m.content.as_str()).collect();
    assert!(
        text.contains("to fit the context window"),
        "older observations were summarized or left out"
    );
    assert!(
        last_message(&last).content.contains(&long(2)),
        "the newest observation is whole"
    );
}
