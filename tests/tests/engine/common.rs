//! The engine harness: a deterministic kernel, a scripted model, an in-memory (or file)
//! store, one session and one run. Scenario tests feed model emissions turn by turn and
//! read back the rows, turn statuses and the loop's terminal status.

use std::sync::Arc;

use agentos_abi::device::ChatReply;
use agentos_drivers::llm::{LlmDriver, ScriptedProvider, ScriptedReply};
use agentos_engine::store::{LogRow, LoopRow, Origin, RowOp, RunRow, SessionRow, Store, TurnRow};
use agentos_engine::turn::EngineConfig;
use agentos_engine::{Engine, LoopOptions};
use agentos_kernel::{Kernel, KernelConfig};

pub struct Harness {
    pub engine: Engine,
    pub provider: Arc<ScriptedProvider>,
    pub session: SessionRow,
    pub run: RunRow,
}

/// A model turn that replies `text`.
pub fn say(text: &str) -> ScriptedReply {
    Ok(ChatReply::text(text))
}

impl Harness {
    /// A harness whose model answers `turns` in order.
    pub fn new(turns: &[&str]) -> Harness {
        Self::with(
            EngineConfig::default(),
            Arc::new(ScriptedProvider::results(turns.iter().map(|t| say(t)))),
            None,
        )
    }

    /// A harness with a config, a provider and optionally a store.
    pub fn with(
        cfg: EngineConfig,
        provider: Arc<ScriptedProvider>,
        store: Option<Arc<Store>>,
    ) -> Harness {
        Self::build(cfg, provider, store, None)
    }

    /// A harness whose session's project root is `root`, its model answering `turns`.
    pub fn in_project(cfg: EngineConfig, root: &std::path::Path, turns: &[&str]) -> Harness {
        Self::build(
            cfg,
            Arc::new(ScriptedProvider::results(turns.iter().map(|t| say(t)))),
            None,
            Some(root.to_str().expect("utf-8 temp path")),
        )
    }

    /// A harness in a project whose model is a function of the request (several runs share
    /// one provider; a role picks its script by the loop prompt).
    pub fn in_project_fn(
        cfg: EngineConfig,
        root: &std::path::Path,
        f: impl Fn(&agentos_abi::device::ChatRequest) -> agentos_drivers::llm::ScriptedReply
            + Send
            + Sync
            + 'static,
    ) -> Harness {
        Self::build(
            cfg,
            Arc::new(ScriptedProvider::with(f)),
            None,
            Some(root.to_str().expect("utf-8 temp path")),
        )
    }

    /// [`Harness::in_project`] with `register` adding drivers (e.g. an `exec` device with a
    /// short kill grace) before the engine registers its defaults.
    pub fn in_project_with(
        cfg: EngineConfig,
        root: &std::path::Path,
        turns: &[&str],
        register: impl FnOnce(&Kernel),
    ) -> Harness {
        let k = Kernel::new(KernelConfig::deterministic(7));
        register(&k);
        Self::build_on(
            k,
            cfg,
            Arc::new(ScriptedProvider::results(turns.iter().map(|t| say(t)))),
            None,
            Some(root.to_str().expect("utf-8 temp path")),
        )
    }

    fn build(
        cfg: EngineConfig,
        provider: Arc<ScriptedProvider>,
        store: Option<Arc<Store>>,
        root: Option<&str>,
    ) -> Harness {
        let k = Kernel::new(KernelConfig::deterministic(7));
        Self::build_on(k, cfg, provider, store, root)
    }

    fn build_on(
        k: Kernel,
        cfg: EngineConfig,
        provider: Arc<ScriptedProvider>,
        store: Option<Arc<Store>>,
        root: Option<&str>,
    ) -> Harness {
        k.register_driver(Arc::new(
            LlmDriver::new(provider.clone()).expect("llm driver"),
        ))
        .expect("register llm");
        let store = store.unwrap_or_else(|| Arc::new(Store::open_in_memory().expect("store")));
        let engine = Engine::start(k, store, cfg).expect("engine");
        let session = engine.create_session(None, root, "{}").expect("session");
        let run = engine
            .create_run(session.id, "main", Origin::Model)
            .expect("run");
        Harness {
            engine,
            provider,
            session,
            run,
        }
    }

    /// Runs one loop to its end.
    pub fn run_loop(&self, prompt: &str, opts: LoopOptions) -> LoopRow {
        let lp = self
            .engine
            .start_loop(self.run.id, prompt, &opts)
            .expect("start");
        self.engine.wait_loop(lp.id, None).expect("loop ends")
    }

    pub fn rows(&self, lp: &LoopRow) -> Vec<LogRow> {
        self.engine.loop_log(lp.id).expect("log")
    }

    pub fn turns(&self, lp: &LoopRow) -> Vec<TurnRow> {
        self.engine.store().turns(lp.id).expect("turns")
    }

    /// The turn statuses in order.
    pub fn turn_statuses(&self, lp: &LoopRow) -> Vec<u16> {
        self.turns(lp).iter().map(|t| t.status).collect()
    }

    /// `(op, status)` of the model's rows of turn `t` (1-based), PLAN, the terminal SEND and
    /// the verbatim `model` row left out; error rows show as `error`.
    pub fn ops(&self, lp: &LoopRow, t: i64) -> Vec<(String, u16)> {
        self.rows(lp)
            .into_iter()
            .filter(|r| r.turn_seq == t && r.op != RowOp::Model)
            .filter(|r| !matches!(r.op, RowOp::Op(agentos_engine::grammar::Op::Plan)))
            .filter(|r| {
                !(matches!(r.op, RowOp::Op(agentos_engine::grammar::Op::Send))
                    && r.target.is_none())
            })
            .filter(|r| r.origin != Origin::Plurnk || r.op == RowOp::Error)
            .map(|r| (r.op.as_str().to_owned(), r.status))
            .collect()
    }

    /// The open result of the first row of turn `t` with op `op`.
    pub fn rx(&self, lp: &LoopRow, t: i64, op: &str) -> String {
        self.rows(lp)
            .into_iter()
            .find(|r| r.turn_seq == t && r.op.as_str() == op && r.origin == Origin::Model)
            .and_then(|r| r.rx)
            .unwrap_or_default()
    }
}

/// `(op, status)` pairs from a compact spec.
pub fn ops(spec: &[(&str, u16)]) -> Vec<(String, u16)> {
    spec.iter().map(|(o, s)| (o.to_string(), *s)).collect()
}

/// A harness with `cfg` whose model answers `turns` in order.
pub fn harness_with(cfg: EngineConfig, turns: &[&str]) -> Harness {
    Harness::with(
        cfg,
        Arc::new(ScriptedProvider::results(turns.iter().map(|t| say(t)))),
        None,
    )
}

/// The user message the model got on request `i` (0-based).
pub fn user_message(h: &Harness, i: usize) -> String {
    h.provider.requests()[i].messages[1].content.clone()
}
