//! The default demo: a supervised team of agents.
//!
//! A lead process (init) holds the `llm` and `tools` devices. It starts a one-for-one
//! supervisor under a token budget (the supervisor's account; every agent's account is a child
//! of it, so the whole team shares the budget) with four children: a conversation agent
//! (`concierge`, permanent, registered by name), two ReAct agents with one task each
//! (`researcher`, `analyst`, transient) and a `courier` that crashes on its first run and is
//! restarted. The agents get their device caps from the supervisor on every start. The lead
//! collects the ReAct agents' answers, asks the concierge two questions, then stops the team.
//!
//! The model is, by default, a scripted one (rules over the request, so the run needs no
//! network and gives the same answers every time); with `AGENTOS_LLM_BASE_URL` set, any
//! OpenAI-compatible endpoint; with `--local`, the SmolLM2 model (prepared on first use, like `agentos llm prepare`),
//! served by a llama-server this demo starts on loopback. While it runs the demo prints the
//! process table whenever it changes; at the end, the answers, the usage and the metrics.

use crate::questions::{team_tools, turn_spec, Tally, CONCIERGE_PROMPT, QUESTIONS};
use agentos_abi::device::{ChatReply, ChatRequest, FinishReason, Role, ToolCall};
use agentos_abi::{
    Body, CapRef, EventKind, ExitReason, Image, Message, Quota, Right, SendOpts, SpawnOpts, SysMsg,
    Syscalls, Value,
};
use agentos_drivers::llm::local::{LinesProgress, LocalModel, LocalServer, ServeOptions};
use agentos_drivers::llm::{
    LlmDriver, LlmError, OpenAiConfig, OpenAiProvider, Provider, ScriptedProvider,
};
use agentos_drivers::tools::ToolDriver;
use agentos_kernel::{BootOpts, KImage, Kernel, KernelConfig, ProcInfo, Sys};
use agentos_userland::agents::{
    conversation_agent, react_agent, AgentResult, AgentTask, ConversationSpec, ReactSpec,
};
use agentos_userland::supervisor::SupervisorSpec;
use agentos_userland::supervisor::{supervisor, Backoff, ChildSpec, Restart, Strategy};
use anyhow::{bail, Context as _, Result};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The team's token budget: the supervisor's account, shared by every agent under it.
const TEAM_TOKENS: u64 = 60_000;

/// Where the model comes from.
enum Model {
    Scripted { pace_ms: u64 },
    Endpoint,
    Local,
}

/// Options of the team example.
pub struct TeamOpts {
    model: Model,
}

impl TeamOpts {
    /// Parse `[--local] [--fast]`.
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut local = false;
        let mut fast = false;
        for a in args {
            match a.as_str() {
                "--local" => local = true,
                "--fast" => fast = true,
                other => bail!("unknown argument {other:?} (try --help)"),
            }
        }
        let model = if local {
            Model::Local
        } else if std::env::var_os("AGENTOS_LLM_BASE_URL").is_some() {
            Model::Endpoint
        } else {
            Model::Scripted {
                pace_ms: if fast { 0 } else { 60 },
            }
        };
        Ok(TeamOpts { model })
    }
}

// ---------------------------------------------------------------------------------------------
// The scripted model: rules over the request, so answers do not depend on which agent asks
// first.

fn call(name: &str, args: serde_json::Value) -> ChatReply {
    ChatReply {
        tool_calls: vec![ToolCall {
            id: format!("call_{name}"),
            name: name.into(),
            arguments: args.to_string(),
        }],
        finish_reason: FinishReason::ToolCalls,
        ..ChatReply::default()
    }
}

fn scripted_model(req: &ChatRequest) -> ChatReply {
    let Some(last) = req.messages.last() else {
        return ChatReply::text("I have nothing to answer.");
    };
    let offered = |t: &str| req.tools.iter().any(|s| s.name == t);
    if last.role == Role::Tool {
        let tool = last.name.as_deref().unwrap_or("tool");
        let result = last.content.trim_matches('"');
        let task = req
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map_or("", |m| m.content.as_str());
        return ChatReply::text(match tool {
            "lookup" => format!("{result}. (Looked up for: {task})"),
            "calc" => format!("The result is {result}."),
            "word_count" => format!("That sentence has {result} words."),
            _ => format!("{tool} says: {result}"),
        });
    }
    let task = last.content.to_lowercase();
    if let Some(i) = task.find("capital of ") {
        if offered("lookup") {
            let place: String = task[i..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == ' ')
                .collect();
            return call("lookup", serde_json::json!({ "query": place.trim() }));
        }
    }
    if task.contains("compute") && offered("calc") {
        let expr: String = last
            .content
            .chars()
            .filter(|c| c.is_ascii_digit() || "+-*/() ".contains(*c))
            .collect();
        return call("calc", serde_json::json!({ "expr": expr.trim() }));
    }
    if let (Some(a), Some(b)) = (last.content.find('\''), last.content.rfind('\'')) {
        if a < b && offered("word_count") {
            let text = &last.content[a + 1..b];
            return call("word_count", serde_json::json!({ "text": text }));
        }
    }
    ChatReply::text("Done.")
}

/// A provider that takes `ms` of real time per call (so the live table has something to show).
struct Paced {
    inner: ScriptedProvider,
    ms: u64,
}

impl Provider for Paced {
    fn name(&self) -> &str {
        "scripted"
    }
    fn chat<'a>(
        &'a self,
        req: &'a ChatRequest,
    ) -> agentos_abi::driver::BoxFuture<'a, Result<ChatReply, LlmError>> {
        Box::pin(async move {
            if self.ms > 0 {
                tokio::time::sleep(Duration::from_millis(self.ms)).await;
            }
            self.inner.chat(req).await
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

/// Crashes on its first run (a lost connection, say), delivers on the next.
fn courier(runs: Arc<AtomicU32>) -> KImage {
    Image::new("courier", move |sys: Sys, args: Value| {
        let runs = runs.clone();
        async move {
            let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
            sys.sleep(20).await;
            if run == 1 {
                return Err(ExitReason::fault("courier: lost the connection"));
            }
            if let Some(parent) = args.get("parent").and_then(Value::as_u64).map(CapRef) {
                let note = Value::Map(vec![
                    ("$".into(), "delivered".into()),
                    ("run".into(), Value::U64(u64::from(run))),
                ]);
                sys.send(parent, Body::Value(note), SendOpts::default())
                    .await?;
            }
            Ok(())
        }
    })
}

/// What the lead reports to the host.
#[derive(Default)]
struct Report {
    answers: Vec<(String, String, AgentResult)>,
    notes: Vec<String>,
}

fn lead(report: Arc<Mutex<Report>>, real: bool, courier_runs: Arc<AtomicU32>) -> KImage {
    Image::new("lead", move |sys: Sys, _| {
        let report = report.clone();
        let courier_runs = courier_runs.clone();
        async move {
            let (llm, tools, spawn) = {
                let boot = sys.recv().await;
                let Some(boot @ SysMsg::Boot { spawn, .. }) = boot.sys() else {
                    return Err(ExitReason::fault("no boot grant"));
                };
                let dev = |name: &str| {
                    boot.device(name)
                        .ok_or_else(|| ExitReason::fault(format!("no {name} device")))
                };
                (dev("llm")?, dev("tools")?, *spawn)
            };
            // The supervisor gets the devices, a spawn-only copy of the lead's spawn cap and a
            // send-only cap to the lead (its children's `parent`); it hands each child fresh
            // copies on every start.
            let sup_spawn = sys.derive(spawn, Right::Spawn.into())?;
            let me = sys.derive(sys.self_cap(), Right::Send.into())?;
            let agent = |id: &str, image: Image<Sys>, restart: Restart| {
                ChildSpec::new(id, image.renamed(id))
                    .restart(restart)
                    .cap("llm", llm)
                    .cap("tools", tools)
                    .cap("parent", me)
            };
            let research = ReactSpec {
                task: QUESTIONS[0].task.into(),
                turn: turn_spec(real),
                ..ReactSpec::default()
            };
            let analysis = ReactSpec {
                task: QUESTIONS[1].task.into(),
                turn: turn_spec(real),
                ..ReactSpec::default()
            };
            let concierge = ConversationSpec {
                system: Some(CONCIERGE_PROMPT.into()),
                turn: turn_spec(real),
                register_as: Some("concierge".into()),
                ..ConversationSpec::default()
            };
            let spec = SupervisorSpec::new(Strategy::OneForOne)
                .backoff(Backoff {
                    base_ms: 50,
                    max_ms: 1_000,
                    stable_ms: 1_000,
                })
                .child(agent(
                    "concierge",
                    conversation_agent(concierge),
                    Restart::Permanent,
                ))
                .child(agent(
                    "researcher",
                    react_agent(research),
                    Restart::Transient,
                ))
                .child(agent("analyst", react_agent(analysis), Restart::Transient))
                .child(
                    ChildSpec::new("courier", courier(courier_runs))
                        .restart(Restart::Transient)
                        .cap("parent", me),
                );
            let team = sys
                .spawn(
                    supervisor(spec).map_err(|e| ExitReason::fault(e.to_string()))?,
                    SpawnOpts {
                        quota: Quota {
                            tokens: Some(TEAM_TOKENS),
                            ..Quota::default()
                        },
                        caps: vec![llm, tools, me, sup_spawn],
                        link: true,
                        ..SpawnOpts::default()
                    },
                )
                .await?;

            // The two ReAct answers and the courier's delivery, in whatever order they come.
            let (mut answers, mut delivered) = (0, false);
            while answers < 2 || !delivered {
                let m: Message = sys.recv().await;
                let Some(v) = m.body.as_value() else {
                    if let Some(SysMsg::Down { reason, .. }) = m.sys() {
                        return Err(ExitReason::fault(format!("the team went down: {reason}")));
                    }
                    continue;
                };
                let entry = match v.get("$").and_then(Value::as_str) {
                    Some("result") => {
                        let r = AgentResult::from_value(v).unwrap_or_default();
                        let task = r.task.clone().unwrap_or_default();
                        let id = QUESTIONS
                            .iter()
                            .find(|q| q.task == task)
                            .map_or("?", |q| q.agent);
                        answers += 1;
                        Ok((id.to_owned(), task, r))
                    }
                    Some("delivered") => {
                        delivered = true;
                        let run = v.get("run").and_then(Value::as_u64).unwrap_or(0);
                        Err(format!(
                            "courier delivered on run {run} (it crashed on run 1; the supervisor restarted it)"
                        ))
                    }
                    _ => continue,
                };
                let mut report = report
                    .lock()
                    .map_err(|_| ExitReason::fault("report lock"))?;
                match entry {
                    Ok(answer) => report.answers.push(answer),
                    Err(note) => report.notes.push(note),
                }
            }

            // The concierge registered its name when it booted.
            let concierge = loop {
                if let Some(c) = sys.lookup("concierge").await {
                    break c;
                }
                sys.sleep(5).await;
            };
            for q in &QUESTIONS[2..] {
                sys.send(
                    concierge,
                    Body::Value(AgentTask::new(q.task).to_value()),
                    SendOpts::default(),
                )
                .await?;
                let r = loop {
                    let m = sys.recv().await;
                    if let Some(v) = m.body.as_value() {
                        if v.get("$").and_then(Value::as_str) == Some("result") {
                            break AgentResult::from_value(v).unwrap_or_default();
                        }
                    }
                };
                report
                    .lock()
                    .map_err(|_| ExitReason::fault("report lock"))?
                    .answers
                    .push(("concierge".into(), q.task.into(), r));
            }
            // Stop the team: the supervisor stops its children, in reverse start order.
            sys.term(team.cap).await?;
            let _ = sys.waitpid(team.cap).await;
            Ok(())
        }
    })
}

// ---------------------------------------------------------------------------------------------
// The host side

/// The local model on a free loopback port (prepared first when missing), stopped on drop.
fn start_local_model() -> Result<LocalServer> {
    let local = LocalModel::from_env();
    if !local.is_prepared() {
        eprintln!(
            "demo: preparing the local model in {} (a download and a build, once)",
            local.cache().display()
        );
        local.prepare(&LinesProgress)?;
    }
    eprintln!("demo: starting llama-server on loopback …");
    Ok(local.serve(&ServeOptions::default())?)
}

fn table(rows: &[ProcInfo]) -> String {
    let mut out = format!(
        "{:>4} {:>6}  {:<16} {:<9} {:>4} {:>7} {:>6} {:>9}\n",
        "PID", "PARENT", "NAME", "STATUS", "MBOX", "TOKENS", "TOOLS", "TOK-LEFT"
    );
    for r in rows {
        out.push_str(&format!(
            "{:>4} {:>6}  {:<16} {:<9} {:>4} {:>7} {:>6} {:>9}\n",
            r.pid.0,
            r.parent.map_or("-".to_owned(), |p| p.0.to_string()),
            r.name,
            if r.stopped { "stopped" } else { r.status },
            r.mailbox,
            r.usage.tokens,
            r.usage.tool_calls,
            r.budget.tokens.map_or("∞".to_owned(), |t| t.to_string()),
        ));
    }
    out
}

/// Run the team demo.
pub fn run(opts: TeamOpts) -> Result<()> {
    let mut _server = None;
    let paced = matches!(opts.model, Model::Scripted { pace_ms } if pace_ms > 0);
    let (provider, label, real): (Arc<dyn Provider>, String, bool) = match opts.model {
        Model::Scripted { pace_ms } => (
            Arc::new(Paced {
                inner: ScriptedProvider::with(|req| Ok(scripted_model(req))),
                ms: pace_ms,
            }),
            "the scripted model (set AGENTOS_LLM_BASE_URL or pass --local for a real one)".into(),
            false,
        ),
        Model::Endpoint => {
            let p = OpenAiProvider::from_env().context("configuring the endpoint from env")?;
            let url = std::env::var("AGENTOS_LLM_BASE_URL").unwrap_or_default();
            (Arc::new(p), format!("the endpoint at {url}"), true)
        }
        Model::Local => {
            let srv = start_local_model()?;
            // llama.cpp takes grammars; SmolLM2 does not call tools natively, so the agents ask
            // for one grammar-constrained action per step (and fit the window /props reports).
            let p = OpenAiProvider::new(OpenAiConfig::llama_cpp(srv.base_url(), "smollm2"))?;
            let label = format!("the local SmolLM2-135M at {}", srv.base_url());
            _server = Some(srv);
            (Arc::new(p), label, true)
        }
    };
    println!("== agentos team demo on {label} ==");
    println!(
        "team budget: {TEAM_TOKENS} tokens (the supervisor's account, shared by its agents)\n"
    );
    let k = Kernel::new(KernelConfig::deterministic(7));
    // The agents' own trace lines (how their turns ask for actions, invalid actions).
    let trace_lines = k.subscribe(1 << 14);
    k.register_driver(Arc::new(LlmDriver::new(provider)?))?;
    k.register_driver(Arc::new(ToolDriver::new(team_tools()?)?))?;
    let report = Arc::new(Mutex::new(Report::default()));
    let courier_runs = Arc::new(AtomicU32::new(0));
    let lead_pid = k.boot(
        lead(report.clone(), real, courier_runs),
        BootOpts {
            grant: vec!["llm".into(), "tools".into()],
            ..BootOpts::default()
        },
    )?;

    // The live table: the scheduler runs on this thread (deterministic mode); a watcher thread
    // prints the process table whenever it changes.
    let done = AtomicBool::new(false);
    let started = Instant::now();
    let exit = std::thread::scope(|s| {
        s.spawn(|| {
            let mut last = String::new();
            while !done.load(Ordering::Acquire) {
                let t = table(&k.ps());
                if t != last {
                    println!(
                        "-- t={:>5} ms (kernel clock {} ms) --",
                        started.elapsed().as_millis(),
                        k.now()
                    );
                    print!("{t}");
                    last = t;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        });
        let r = k.wait_exit(lead_pid);
        done.store(true, Ordering::Release);
        r
    })?;
    println!("\n== the lead exited: {exit} ==");

    let report = report
        .lock()
        .map_err(|_| anyhow::anyhow!("report lock poisoned"))?;
    println!("\n== answers ==");
    let mut tally = Tally::default();
    for (id, task, r) in &report.answers {
        let answer = if r.answer.trim().is_empty() {
            "(no answer)"
        } else {
            r.answer.trim()
        };
        let verdict = match QUESTIONS.iter().find(|q| q.task == task) {
            Some(q) => {
                tally.add(q, &r.answer, u64::from(r.tool_calls));
                let right = crate::questions::is_right(q, &r.answer);
                format!(
                    "{}, its tool is {}",
                    if right { "right" } else { "wrong" },
                    q.tool
                )
            }
            None => "?".into(),
        };
        println!(
            "[{id}] {task}\n    \u{2192} {answer}   ({verdict}; {} steps, {} tool calls, {} tokens)",
            r.steps, r.tool_calls, r.tokens
        );
        if let Some(e) = &r.error {
            println!("    error: {e}");
        }
    }
    for n in &report.notes {
        println!("note: {n}");
    }
    // Every abnormal exit, by process name: what a supervisor restarted, and why.
    let trace = k.trace(1 << 16);
    let mut names = std::collections::HashMap::new();
    let mut failures = Vec::new();
    for e in &trace {
        match &e.kind {
            EventKind::Spawn { pid, name, .. } => {
                names.insert(*pid, name.clone());
            }
            EventKind::Exit { pid, reason }
                if !matches!(reason, ExitReason::Normal | ExitReason::Shutdown) =>
            {
                let name = names.get(pid).map_or("?", |n| &**n);
                failures.push(format!("t={:>5} ms  {name} ({pid}): {reason}", e.ts));
            }
            _ => {}
        }
    }
    if !failures.is_empty() {
        println!("\n== abnormal exits ==");
        for f in &failures {
            println!("{f}");
        }
    }
    let lines: Vec<String> = trace_lines
        .try_iter()
        .filter_map(|h| match h {
            agentos_kernel::HostEvent::Log(l) if l.line.starts_with("turn:") => {
                let name = names.get(&l.pid).map_or("?", |n| &**n);
                Some(format!("t={:>5} ms  {name} ({}): {}", l.ts, l.pid, l.line))
            }
            _ => None,
        })
        .collect();
    if !lines.is_empty() {
        println!("\n== agent trace ==");
        for l in lines.iter().take(40) {
            println!("{l}");
        }
        if lines.len() > 40 {
            println!("({} more lines)", lines.len() - 40);
        }
    }
    let m = k.metrics();
    println!("\n== usage ==");
    for (meter, n) in &m.charged {
        println!("{:<11} {n}", meter.name());
    }
    let tokens: u64 = report.answers.iter().map(|(_, _, r)| r.tokens).sum();
    println!("answers cost {tokens} of the team's {TEAM_TOKENS} tokens");
    println!("\n== metrics ==");
    println!(
        "processes={} events={} spawns={} exits={} sends={} recvs={} faults={}",
        m.processes, m.events, m.spawns, m.exits, m.sends, m.recvs, m.faults
    );
    println!(
        "exits by reason: {}",
        m.exits_by_reason
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    match (real, paced) {
        (false, false) => println!("trace hash: {:016x} (the same on every run)", k.trace_hash()),
        (false, true) => println!(
            "trace hash: {:016x} (the scripted model's pacing is real time; --fast gives the same hash on every run)",
            k.trace_hash()
        ),
        _ => {}
    }
    println!("\n== tally ==\n{tally}");
    if exit != ExitReason::Normal {
        bail!("the lead exited abnormally: {exit}");
    }
    Ok(())
}
