//! # The turn loop on kernel processes
//!
//! How plurnk's runLoop/runTurn (PLURNK.md §3.2–§3.5, §3.8) runs as processes (DESIGN.md
//! "The engine"): the engine root process owns the device caps and spawns one **session**
//! process per session (its account is the session's budget), which spawns one **run**
//! process per running run; a run serializes `run` / `inject` / `cancel` in its mailbox and drains
//! its queued loops one at a time, each as a **loop** child process; a loop process does
//! the turns — packet, grinder, one read of the LLM device, parse, steers, dispatch, one
//! store transaction — until a terminal status. Cancel kills the loop process, which drops
//! an in-flight model call, and the run records 499.
//!
//! - [`process`]: the root, session, run and loop process images and their messages.
//! - [`client`]: client ops (`op.*`) — a client turn as a client loop of the run, a look
//!   with read-only caps and no row.
//! - [`runner`]: one loop's turns (the rails wired: strikes, cycles, idle and premature
//!   steers, max commands, max turns, the grinder, provider failures).
//! - [`packet`]: the request packet — sections, slots, the budget readout.
//! - [`render`]: how a log row reads in the packet.
//! - [`docs`]: the grammar sheet and the requirements footer the model is taught.
//!
//! **Invariants:** a loop touches the world only through its store and LLM handles; every
//! turn commits in one store transaction; the model never sees strike counts, cycles or
//! thresholds, only the failures that happened (error rows).
//!
//! **API boundary:** [`EngineConfig`], [`LoopFlags`], the process images (used by
//! [`crate::host::Engine`]), and the packet/render functions (used by the bench and tests).

pub mod client;
pub mod docs;
pub mod packet;
pub mod process;
pub mod proposal;
pub mod render;
pub mod runner;
pub mod stream;

use serde::{Deserialize, Serialize};

use crate::rails::RailsConfig;

/// Token estimate used for render weights (the seed's: 1.5 per CJK character, one per four
/// other characters).
pub fn count_tokens(text: &str) -> u64 {
    agentos_abi::device::estimate_tokens(text)
}

/// The GBNF for a loop of this engine holding every built-in scheme (an `act` loop in a
/// session with a project root): [`loop_gbnf`] over [`SchemeRegistry::builtin`], EXEC
/// included.
///
/// [`SchemeRegistry::builtin`]: crate::schemes::SchemeRegistry::builtin
pub fn engine_gbnf() -> String {
    loop_gbnf(&crate::schemes::SchemeRegistry::builtin())
}

/// The GBNF for a loop holding `schemes`: the turn sandwich with the terminal codes the loop
/// understands (102 continue, 200 done, 499 give up) and exactly the ops those schemes serve
/// ([`SchemeRegistry::gbnf_options`]: EXEC with its executors only when the loop holds the
/// `exec` scheme; no WORK or FORK), so a constrained model cannot emit a statement that is
/// refused for not existing, nor miss one the loop could run.
///
/// The bounds keep a turn short: a PLAN or SEND note of at most 160 characters, a short
/// preamble, at most 6 operations. Small models under a loose grammar ramble until
/// `max_tokens` cuts the turn mid-statement (an unparsed tail, so a 400 parse-error row
/// for a turn the grammar itself allowed).
///
/// [`SchemeRegistry::gbnf_options`]: crate::schemes::SchemeRegistry::gbnf_options
pub fn loop_gbnf(schemes: &crate::schemes::SchemeRegistry) -> String {
    use crate::grammar::{gbnf, GbnfOptions};
    gbnf(&schemes.gbnf_options(GbnfOptions {
        terminal_codes: vec![102, 200, 499],
        max_ops: 6,
        max_note: 160,
        max_line: 120,
        max_preamble: 40,
        ..GbnfOptions::default()
    }))
}

/// Which grammar constrains the model's turns ([`EngineConfig::grammar`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TurnGrammar {
    /// None: the provider takes no grammar.
    #[default]
    Off,
    /// The engine's, built for each loop from the schemes it holds ([`loop_gbnf`]): a loop
    /// in ask mode or in a headless session is never offered EXEC.
    Engine,
    /// This GBNF text, for every loop.
    Fixed(String),
}

/// Loop flags (`loops.flags`), merged over the defaults (PLURNK.md §2.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LoopFlags {
    /// `act` (default) or `ask` (read-only).
    pub mode: String,
    /// Auto-accept proposals.
    pub yolo: bool,
    /// Drop schemes that need the web.
    pub no_web: bool,
    /// Drop schemes that need a human.
    pub no_interaction: bool,
    /// Auto-reject proposals.
    pub no_proposals: bool,
    /// Token budget of the loop (an account quota on its process).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_tokens: Option<u64>,
}

impl Default for LoopFlags {
    fn default() -> Self {
        LoopFlags {
            mode: "act".into(),
            yolo: false,
            no_web: false,
            no_interaction: false,
            no_proposals: false,
            budget_tokens: None,
        }
    }
}

impl LoopFlags {
    /// Whether the loop is read-only.
    pub fn is_ask(&self) -> bool {
        self.mode == "ask"
    }

    /// Parses `loops.flags` JSON (unknown keys ignored, missing keys default).
    pub fn from_json(s: &str) -> Result<LoopFlags, serde_json::Error> {
        serde_json::from_str(s)
    }

    /// The flags as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

/// Operator knobs of the engine (PLURNK.md §3.10), with the engine defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Strikes, cycles, max commands.
    pub rails: RailsConfig,
    /// Turns per loop when `loop.run` asks for none (plurnk: 50).
    pub max_turns: u32,
    /// The model's context window in tokens.
    pub context_size: u64,
    /// Completion tokens reserved per turn (`max_tokens` on every generate).
    pub max_output_tokens: u32,
    /// Fraction of the window held back for tokenizer disagreement (0.05 = 5 %).
    pub safety: f64,
    /// The grammar sent with every generate (off when the provider takes none).
    pub grammar: TurnGrammar,
    /// Operator docs `(ALIAS, markdown)`, materialised as `plurnk:///<ALIAS>.md` and READ on
    /// the first turn of a run's first loop.
    pub operator_docs: Vec<(String, String)>,
    /// The system policy section (`~/.plurnk/AGENTS.md` in plurnk).
    pub system_policy: Option<String>,
    /// The requirements footer.
    pub requirements: String,
    /// Sampling temperature sent with every generate (`None`: the provider's default).
    pub temperature: Option<f64>,
    /// Model name asked for (`None`: the device's default).
    pub model: Option<String>,
    /// Provider failures retried within a turn before the loop ends 500.
    pub provider_retries: u32,
    /// How long a proposal waits for a decision before it is cancelled (499 `timeout`), in
    /// kernel-clock ms (plurnk: `PLURNK_SERVICE_PROPOSAL_TIMEOUT_MS`, 300 000).
    pub proposal_timeout_ms: u64,
    /// How long a turn waits for the commands the previous turn started before showing
    /// their output (plurnk's `PLURNK_SERVICE_EXEC_WAIT_MS`), kernel-clock ms; 0 never waits.
    pub exec_wait_ms: u64,
    /// Runs of one session with a loop queued, running or parked, beyond which a spawn or
    /// fork answers 508 (plurnk: `PLURNK_SERVICE_SESSION_RUNS_MAX_ACTIVE`).
    pub max_active_runs: usize,
    /// Each session's budget: the quota of its process's account, under which every run and
    /// loop of the session spends (tokens, dollars, tool calls up the chain; `children`
    /// bounds the session's live run and loop processes together, so a fork bomb finds its
    /// spawns refused with 508). Unlimited by default.
    pub session_quota: agentos_abi::Quota,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            rails: RailsConfig::default(),
            max_turns: 50,
            context_size: 32_768,
            max_output_tokens: 1024,
            safety: 0.05,
            grammar: TurnGrammar::Off,
            operator_docs: Vec::new(),
            system_policy: None,
            requirements: docs::REQUIREMENTS.to_owned(),
            temperature: None,
            model: None,
            provider_retries: 1,
            proposal_timeout_ms: 300_000,
            exec_wait_ms: 2_000,
            max_active_runs: 8,
            session_quota: agentos_abi::Quota::UNLIMITED,
        }
    }
}

impl EngineConfig {
    /// The prompt budget: the window minus the completion reserve and the safety margin.
    pub fn prompt_ceiling(&self) -> u64 {
        let safety = (self.context_size as f64 * self.safety) as u64;
        self.context_size
            .saturating_sub(self.max_output_tokens as u64)
            .saturating_sub(safety)
    }
}
