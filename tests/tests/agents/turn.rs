//! `run_turn` against a scripted LLM device and a real tools device: tool round trips, the
//! per-turn call cache, stalls, delegate steering, reflection budgets, step-limit growth and the
//! no-answer nudge.

use crate::common::*;
use crate::util::*;
use agentos_abi::*;
use agentos_drivers::llm::ScriptedProvider;
use agentos_userland::agents::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn spec(tools: &[&str]) -> TurnSpec<agentos_kernel::Sys> {
    TurnSpec {
        tools: tool_specs(tools),
        ..TurnSpec::default()
    }
}

fn outcome(t: &Turned) -> TurnOutcome {
    assert_eq!(t.exit, ExitReason::Normal);
    match &t.outcome {
        Some(Ok(o)) => o.clone(),
        other => panic!("the turn did not finish: {other:?}"),
    }
}

#[test]
fn a_tool_call_round_trips_through_the_tools_device() {
    let p = Arc::new(ScriptedProvider::new([
        call("c1", "add", r#"{"a":2,"b":3}"#),
        text("5"),
    ]));
    let ran = log();
    let k = kernel(&p, &ran);
    let t = run_one_turn(&k, spec(&["add"]), Quota::default());
    let o = outcome(&t);
    assert_eq!(o.answer, "5");
    assert_eq!(o.steps, 2);
    assert_eq!(
        o.tokens,
        2 * REPLY_TOKENS,
        "tokens are what the device charged"
    );
    assert_eq!(t.usage.tokens, 2 * REPLY_TOKENS);
    assert_eq!(t.usage.tool_calls, 1);
    assert_eq!(runs(&ran, "add"), 1);

    let reqs = p.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        reqs[0].messages,
        vec![ChatMessage::system(SYSTEM), ChatMessage::user(TASK)]
    );
    assert_eq!(offered(&reqs[0]), ["add"]);
    assert_eq!(
        reqs[1].messages[2..],
        [
            ChatMessage::assistant_calls(
                "",
                vec![ToolCall {
                    id: "c1".into(),
                    name: "add".into(),
                    arguments: r#"{"a":2,"b":3}"#.into(),
                }]
            ),
            ChatMessage::tool("c1", "add", "5"),
        ]
    );
}

#[test]
fn a_duplicate_call_runs_once_and_repeats_are_answered_from_the_cache() {
    let p = Arc::new(ScriptedProvider::new([
        // The same call twice in one step, spelled differently.
        calls(&[
            ("c1", "add", r#"{"a":1,"b":1}"#),
            ("c2", "add", r#"{ "b": 1, "a": 1 }"#),
        ]),
        // And again in the next step.
        call("c3", "add", r#"{"a":1,"b":1}"#),
        text("2"),
    ]));
    let ran = log();
    let k = kernel(&p, &ran);
    let t = run_one_turn(&k, spec(&["add"]), Quota::default());
    let o = outcome(&t);
    assert_eq!((o.answer.as_str(), o.steps), ("2", 3));
    assert_eq!(runs(&ran, "add"), 1, "the tool ran once");
    assert_eq!(t.usage.tool_calls, 1, "and was charged once");

    let reqs = p.requests();
    let results: Vec<(Option<String>, String)> = reqs[2]
        .messages
        .iter()
        .filter(|m| m.role == Role::Tool)
        .map(|m| (m.tool_call_id.clone(), m.content.clone()))
        .collect();
    assert_eq!(
        results,
        vec![
            (Some("c1".into()), "2".into()),
            (Some("c2".into()), "2".into()),
            (Some("c3".into()), "2".into()),
        ],
        "every call gets its result"
    );
}

#[test]
fn a_stall_forces_a_final_answer_without_tools() {
    let asked = Arc::new(AtomicUsize::new(0));
    let n = asked.clone();
    let p = Arc::new(ScriptedProvider::with(move |req| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        Ok(if req.tools.is_empty() {
            text("best guess: unknown")
        } else {
            // Fresh calls every time, but each returns an error: no usable data.
            call(&format!("c{i}"), "lookup", &format!(r#"{{"q":{i}}}"#))
        })
    }));
    let ran = log();
    let k = kernel(&p, &ran);
    let t = run_one_turn(
        &k,
        TurnSpec {
            stall_limit: 2,
            ..spec(&["lookup"])
        },
        Quota::default(),
    );
    let o = outcome(&t);
    assert_eq!(o.answer, "best guess: unknown");
    assert_eq!(o.steps, 3);
    assert_eq!(runs(&ran, "lookup"), 2);
    let reqs = p.requests();
    assert_eq!(reqs.len(), 3);
    assert!(
        reqs[2].tools.is_empty(),
        "a forced answer is offered no tools"
    );
    let note = last_message(&reqs[2]);
    assert_eq!(note.role, Role::User);
    assert!(note.content.starts_with("Stop searching"), "{note:?}");
    let err = reqs[2]
        .messages
        .iter()
        .find(|m| m.role == Role::Tool)
        .map(|m| m.content.clone());
    assert_eq!(err.as_deref(), Some(r#"{"error":"not found"}"#));
}

#[test]
fn delegate_steering_withholds_investigation_tools_until_the_model_delegates() {
    let p = Arc::new(ScriptedProvider::new([
        call("r1", "read_file", r#"{"path":"a.rs"}"#),
        call("r2", "read_file", r#"{"path":"b.rs"}"#),
        // Steered now; the model reads once more anyway (a tool it was not offered).
        call("r3", "read_file", r#"{"path":"c.rs"}"#),
        call("d1", "delegate", r#"{"question":"where is X?"}"#),
        text("X is in b.rs"),
    ]));
    let ran = log();
    let k = kernel(&p, &ran);
    let policy = DelegatePolicy {
        after: 2,
        via: "delegate".into(),
        withhold: vec!["read_file".into()],
        investigate: vec!["read_file".into()],
    };
    let t = run_one_turn(
        &k,
        TurnSpec {
            delegate: Some(policy),
            ..spec(&["add", "delegate", "read_file"])
        },
        Quota::default(),
    );
    let o = outcome(&t);
    assert_eq!((o.answer.as_str(), o.steps), ("X is in b.rs", 5));

    let reqs = p.requests();
    let all = ["add", "delegate", "read_file"];
    assert_eq!(offered(&reqs[0]), all);
    assert_eq!(offered(&reqs[1]), all);
    assert_eq!(offered(&reqs[2]), ["add", "delegate"], "read_file withheld");
    assert_eq!(offered(&reqs[3]), ["add", "delegate"], "still steering");
    assert_eq!(offered(&reqs[4]), all, "delegating ends the steering");

    let note = last_message(&reqs[2]);
    assert_eq!(note.role, Role::User);
    assert!(
        note.content
            .starts_with("You've made 2 direct file-read/search calls in a row"),
        "{note:?}"
    );
    assert!(note.content.contains("call `delegate` instead"));
    let notes = reqs[4]
        .messages
        .iter()
        .filter(|m| m.role == Role::User && m.content.starts_with("You've made"))
        .count();
    assert_eq!(notes, 1, "the model is told once per streak");
    assert_eq!(runs(&ran, "read_file"), 3);
    assert_eq!(runs(&ran, "delegate"), 1);
}

#[test]
fn reflection_revises_and_continues_within_their_budgets() {
    let p = Arc::new(ScriptedProvider::new([
        text("draft"),
        text("second"),
        text("third"),
    ]));
    let ran = log();
    let k = kernel(&p, &ran);
    let verdicts: Log<String> = log();
    let v = verdicts.clone();
    let reflector = move |transcript: &[ChatMessage]| {
        let last = transcript
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        push(&v, last);
        match snapshot(&v).len() {
            1 => Some(Reflection::revise("Check the units.")),
            2 => Some(Reflection::continue_with("Also convert to km.")),
            // Over the revision budget: accepted as is.
            _ => Some(Reflection::revise("Again.")),
        }
    };
    let t = run_one_turn(
        &k,
        TurnSpec {
            max_revisions: 1,
            max_continue: 1,
            reflector: Some(Arc::new(reflector)),
            ..spec(&[])
        },
        Quota::default(),
    );
    let o = outcome(&t);
    assert_eq!((o.answer.as_str(), o.steps), ("third", 3));
    assert_eq!(
        snapshot(&verdicts),
        ["draft", "second", "third"],
        "the reflector judges the answer at the end of the transcript"
    );
    let reqs = p.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(
        reqs[1].messages[2..],
        [
            ChatMessage::assistant("draft"),
            ChatMessage::user("Check the units.")
        ]
    );
    assert_eq!(
        reqs[2].messages[4..],
        [
            ChatMessage::assistant("second"),
            ChatMessage::user("Also convert to km.")
        ]
    );
}

#[test]
fn a_reflection_past_its_budget_or_on_the_last_step_is_not_applied() {
    let p = Arc::new(ScriptedProvider::new([text("only"), text("unused")]));
    let ran = log();
    let k = kernel(&p, &ran);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let reflector = move |_: &[ChatMessage]| {
        c.fetch_add(1, Ordering::SeqCst);
        Some(Reflection::continue_with("more"))
    };
    let t = run_one_turn(
        &k,
        TurnSpec {
            max_continue: 0,
            reflector: Some(Arc::new(reflector)),
            ..spec(&[])
        },
        Quota::default(),
    );
    assert_eq!(outcome(&t).answer, "only");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(p.requests().len(), 1);

    // With a one-step limit there is no room to revise: the reflector is not even asked.
    let p = Arc::new(ScriptedProvider::new([text("at once")]));
    let k = kernel(&p, &ran);
    let c = calls.clone();
    let reflector = move |_: &[ChatMessage]| {
        c.fetch_add(1, Ordering::SeqCst);
        Some(Reflection::revise("no"))
    };
    let t = run_one_turn(
        &k,
        TurnSpec {
            max_steps: Some(1),
            reflector: Some(Arc::new(reflector)),
            ..spec(&["add"])
        },
        Quota::default(),
    );
    let o = outcome(&t);
    assert_eq!((o.answer.as_str(), o.steps), ("at once", 1));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(
        p.requests()[0].tools.is_empty(),
        "the only step must answer"
    );
}

/// A provider that calls `add` with fresh arguments whenever tools are offered, and answers
/// "final" when they are not.
fn busy_model() -> Arc<ScriptedProvider> {
    let n = Arc::new(AtomicUsize::new(0));
    Arc::new(ScriptedProvider::with(move |req| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        Ok(if req.tools.is_empty() {
            text("final")
        } else {
            call(&format!("c{i}"), "add", &format!(r#"{{"a":{i},"b":1}}"#))
        })
    }))
}

#[test]
fn the_step_limit_grows_by_base_steps_up_to_the_ceiling() {
    let p = busy_model();
    let ran = log();
    let k = kernel(&p, &ran);
    let t = run_one_turn(
        &k,
        TurnSpec {
            base_steps: 2,
            max_steps: Some(5),
            ..spec(&["add"])
        },
        Quota::default(),
    );
    let o = outcome(&t);
    // Limit 2 → 4 (after step 0) → 5 (after step 2, capped by the ceiling).
    assert_eq!((o.answer.as_str(), o.steps), ("final", 5));
    let reqs = p.requests();
    assert_eq!(reqs.len(), 5);
    assert!(reqs[..4].iter().all(|r| offered(r) == ["add"]));
    assert!(reqs[4].tools.is_empty(), "the last step answers");
    assert_eq!(runs(&ran, "add"), 4);

    // A ceiling equal to the base leaves no room to grow.
    let p = busy_model();
    let k = kernel(&p, &ran);
    let t = run_one_turn(
        &k,
        TurnSpec {
            base_steps: 2,
            max_steps: Some(2),
            ..spec(&["add"])
        },
        Quota::default(),
    );
    assert_eq!(outcome(&t).steps, 2);
    assert_eq!(p.requests().len(), 2);
}

#[test]
fn an_empty_reply_is_nudged_towards_an_answer() {
    let p = Arc::new(ScriptedProvider::new([text("  "), text("done")]));
    let ran = log();
    let k = kernel(&p, &ran);
    let t = run_one_turn(&k, spec(&["add"]), Quota::default());
    let o = outcome(&t);
    assert_eq!((o.answer.as_str(), o.steps), ("done", 2));
    let nudge = last_message(&p.requests()[1]);
    assert_eq!(nudge.role, Role::User);
    assert!(nudge
        .content
        .starts_with("You did not produce a final answer"));
}

#[test]
fn hostile_tool_calls_become_results_the_model_sees() {
    let p = Arc::new(ScriptedProvider::new([
        // No ids, an unknown tool, arguments that are not JSON, and a repeated id.
        calls(&[
            ("", "nope", "{}"),
            ("", "add", "{oops"),
            ("x", "add", r#"{"a":1,"b":2}"#),
            ("x", "add", r#"{"a":2,"b":2}"#),
        ]),
        text("ok"),
    ]));
    let ran = log();
    let k = kernel(&p, &ran);
    let t = run_one_turn(&k, spec(&["add"]), Quota::default());
    assert_eq!(outcome(&t).answer, "ok");
    let reqs = p.requests();
    let msgs = &reqs[1].messages;
    let assistant = &msgs[2];
    let ids: Vec<&str> = assistant.tool_calls.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["call_0_0", "call_0_1", "x", "call_0_3"]);
    let results: Vec<(&str, &str)> = msgs[3..]
        .iter()
        .map(|m| (m.tool_call_id.as_deref().unwrap_or(""), m.content.as_str()))
        .collect();
    assert_eq!(
        results[0],
        ("call_0_0", r#"{"error":"no such tool: nope"}"#)
    );
    assert_eq!(results[1].0, "call_0_1");
    assert!(results[1].1.contains("invalid arguments for add"));
    assert_eq!(results[2], ("x", "3"));
    assert_eq!(results[3], ("call_0_3", "4"));
}

#[test]
fn a_zero_step_ceiling_still_allows_one_answering_step() {
    let p = busy_model();
    let ran = log();
    let k = kernel(&p, &ran);
    let t = run_one_turn(
        &k,
        TurnSpec {
            max_steps: Some(0),
            ..spec(&["add"])
        },
        Quota::default(),
    );
    let o = outcome(&t);
    assert_eq!((o.answer.as_str(), o.steps), ("final", 1));
    assert!(p.requests()[0].tools.is_empty());
    assert_eq!(runs(&ran, "add"), 0);
}

#[test]
fn the_same_scripted_turn_gives_the_same_trace() {
    let hash = || {
        let p = Arc::new(ScriptedProvider::new([
            calls(&[
                ("c1", "add", r#"{"a":1,"b":2}"#),
                ("c2", "read_file", r#"{"path":"x"}"#),
            ]),
            text("3"),
        ]));
        let ran = log();
        let k = kernel(&p, &ran);
        let t = run_one_turn(&k, spec(&["add", "read_file"]), Quota::default());
        assert_eq!(outcome(&t).answer, "3");
        k.trace_hash()
    };
    assert_eq!(hash(), hash());
}
