//! The demo's four questions, with their tools, on the real local model: SmolLM2-135M on
//! llama-server, as `agentos llm prepare` prepared it. Skipped (with a note) unless
//! `AGENTOS_REAL_LLM=1`; the test starts its own server on a free loopback port and kills it
//! when done. It runs the team as the demo does (two ReAct agents with one question each, a
//! conversation agent with two), on constrained actions as the LLM device advertises them, and
//! reports how many answers are right and how many tool calls the agents made — and the same
//! figures with native tool calls forced, the way the agents ran before constrained actions.

#[path = "../../../userland/examples/team/questions.rs"]
mod questions;

use crate::util::*;
use agentos_abi::*;
use agentos_drivers::llm::local::LocalServer;
use agentos_drivers::llm::{LlmDriver, OpenAiConfig, OpenAiProvider};
use agentos_drivers::tools::ToolDriver;
use agentos_kernel::{BootOpts, Kernel, Sys};
use agentos_userland::agents::*;
use questions::{is_right, team_tools, turn_spec, Tally, CONCIERGE_PROMPT, QUESTIONS};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The local model's server (the demo's: a 4096-token window), when `AGENTOS_REAL_LLM=1`.
fn start() -> Option<LocalServer> {
    agentos_drivers::llm::local::real_llm_for_tests(2).expect("the local model")
}

/// One answer: the agent, the question's index, the result.
type Answered = (usize, AgentResult);

/// Run the team's four questions on `server` with `actions`; the answers in question order.
fn run_team(server: &LocalServer, actions: Actions) -> Vec<Answered> {
    let mut cfg = OpenAiConfig::llama_cpp(server.base_url(), "smollm2");
    // A busy 2-core machine can be slow; a slow answer is not a failure here.
    cfg.timeout = Duration::from_secs(600);
    let provider = OpenAiProvider::new(cfg).expect("provider");
    let k: Kernel = det(7);
    k.register_driver(Arc::new(LlmDriver::new(Arc::new(provider)).expect("llm")))
        .expect("register llm");
    k.register_driver(Arc::new(
        ToolDriver::new(team_tools().expect("tools")).expect("tools driver"),
    ))
    .expect("register tools");
    let turn = || TurnSpec {
        actions,
        ..turn_spec(true)
    };
    let react = |i: usize| {
        react_agent::<Sys>(ReactSpec {
            task: QUESTIONS[i].task.into(),
            turn: turn(),
            ..ReactSpec::default()
        })
    };
    let agents = [react(0), react(1)];
    let concierge = conversation_agent::<Sys>(ConversationSpec {
        system: Some(CONCIERGE_PROMPT.into()),
        turn: turn(),
        ..ConversationSpec::default()
    });
    let seen: Log<Answered> = log();
    let out = seen.clone();
    let image = init(move |sys: Sys, boot: SysMsg| {
        let agents = agents.clone();
        let concierge = concierge.clone();
        let out = out.clone();
        async move {
            let llm = boot
                .device("llm")
                .ok_or_else(|| ExitReason::fault("no llm"))?;
            let tools = boot.device("tools");
            let mut children = Vec::new();
            for agent in agents {
                let child = sys.spawn(agent, SpawnOpts::default()).await?;
                AgentGrant::delegate(&sys, llm, tools)?
                    .send(&sys, child.cap)
                    .await?;
                children.push(child);
            }
            let conv = sys.spawn(concierge, SpawnOpts::default()).await?;
            AgentGrant::delegate(&sys, llm, tools)?
                .send(&sys, conv.cap)
                .await?;
            for (i, q) in QUESTIONS.iter().enumerate().skip(2) {
                let opts = SendOpts {
                    corr: Some(i as u64),
                    ..SendOpts::default()
                };
                sys.send(
                    conv.cap,
                    Body::Value(AgentTask::new(q.task).to_value()),
                    opts,
                )
                .await?;
            }
            let mut answered = 0;
            while answered < QUESTIONS.len() {
                let m = sys.recv().await;
                let Some(r) = m
                    .body
                    .as_value()
                    .and_then(|v| AgentResult::from_value(v).ok())
                else {
                    continue;
                };
                let i = match (&r.task, m.corr) {
                    (Some(t), _) => QUESTIONS.iter().position(|q| q.task == t),
                    (None, Some(c)) => usize::try_from(c).ok(),
                    (None, None) => None,
                };
                if let Some(i) = i {
                    push(&out, (i, r));
                    answered += 1;
                }
            }
            let _ = sys.term(conv.cap).await;
            for c in children.iter().chain([&conv]) {
                let _ = sys.waitpid(c.cap).await;
            }
            Ok(())
        }
    });
    let exit = boot_with_and_wait(
        &k,
        image,
        BootOpts {
            grant: vec!["llm".into(), "tools".into()],
            ..BootOpts::default()
        },
    );
    assert_eq!(exit, ExitReason::Normal, "the team ran to the end");
    let mut answers = snapshot(&seen);
    answers.sort_by_key(|(i, _)| *i);
    answers
}

fn tally(label: &str, answers: &[Answered]) -> Tally {
    let mut t = Tally::default();
    for (i, r) in answers {
        let q = &QUESTIONS[*i];
        t.add(q, &r.answer, u64::from(r.tool_calls));
        eprintln!(
            "real model [{label}] {} {:?} (its tool: {}) \u{2192} {:?} ({}; {} tool calls, {} steps{})",
            q.agent,
            q.task,
            q.tool,
            r.answer,
            if is_right(q, &r.answer) {
                "right"
            } else {
                "wrong"
            },
            r.tool_calls,
            r.steps,
            r.error
                .as_deref()
                .map_or(String::new(), |e| format!(", error: {e}"))
        );
    }
    eprintln!("real model [{label}] tally: {t}");
    t
}

#[test]
fn real_llm_team_answers_the_demo_questions_with_constrained_tool_calls() {
    let Some(server) = start() else {
        return;
    };
    let started = Instant::now();
    let native = tally("native tool calls", &run_team(&server, Actions::Native));
    let constrained = tally("constrained actions", &run_team(&server, Actions::Auto));
    eprintln!(
        "real model: before (native) {native}; after (constrained) {constrained}; {:.0?}",
        started.elapsed()
    );
    assert_eq!(constrained.asked, 4, "every question was answered");
    // The figures are the report; the floor below is what every run on SmolLM2-135M has met
    // (2 of 4 right with 4 tool calls, against 1 of 4 with none on native calls), kept low
    // enough that a busy llama-server batching the agents' requests differently still passes.
    assert!(
        constrained.tool_calls >= 2,
        "the agents call tools on constrained actions: {constrained}"
    );
    assert!(
        constrained.right >= 1,
        "constrained actions still answer: {constrained}"
    );
}
