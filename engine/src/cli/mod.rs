//! # The `agentos` command line
//!
//! The product's front door, parsed with clap (derive): every verb has `--help`, bad usage
//! exits 2 with clap's message. The verbs:
//!
//! - `run TASK` — run an agent on a task: the embedded engine, or a daemon with `--connect`;
//!   a live view of the rows as they are written, `--json` for a final document, proposals
//!   asked on the terminal (`run`, `review`);
//! - `serve` — the daemon ([`crate::daemon`]) until SIGTERM / Ctrl-C, then a drain (`serve`);
//! - `top` — a live terminal view of a daemon (ratatui; `top`);
//! - `sessions`, `log [LOOP]` — what the store holds, a loop as the model saw it (`inspect`);
//! - `loop PROMPT` — one loop, then its log (issue 12's acceptance; kept as it was);
//! - `llm prepare|status|serve|path`, `models` — the local model and what is configured
//!   (`llm`);
//! - `replay DIR` — a loop recorded with `loop --record DIR`, replayed without a model;
//! - `parse [--turn]`, `gbnf` — the grammar tools.
//!
//! Model choice (`model`): a hidden `--script FILE` (turns separated by lines of `---`, for
//! tests), else the `AGENTOS_LLM_*` endpoint, else the local SmolLM2 model, prepared on
//! first use and started and stopped by the command itself. State lives under `AGENTOS_DATA_DIR` (`--db` overrides the database file).
//!
//! **Invariants:** no panic on any argument or input; a failure names what failed and what
//! to do, on stderr; exit codes: 0 success (a loop that ended 200), 1 a loop that failed
//! (500, 508, …) or a command that failed, 2 usage or setup errors, 3 a loop stopped by a
//! limit (413 budget, 429 turns, 504 time), 130 a cancelled loop (499).
//!
//! **API boundary:** [`main`] (what `src/bin/agentos.rs` calls) and [`Cli`]; the verbs'
//! modules are private.

mod inspect;
mod llm;
mod model;
mod parse;
mod replay;
mod review;
mod run;
mod serve;
mod top;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// `agentos` — an operating system for LLM agents.
#[derive(Debug, Parser)]
#[command(
    name = "agentos",
    version,
    about = "agentos — run LLM agents on tasks, from the shell or through a daemon",
    long_about = None
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an agent on a task and show its work live.
    Run(run::RunArgs),
    /// Serve the engine over JSON-RPC on a WebSocket (and /metrics, /healthz).
    Serve(serve::ServeArgs),
    /// A live terminal view of a daemon: processes, loops, token and cost rates.
    Top(top::TopArgs),
    /// List the sessions in the store.
    Sessions(inspect::SessionsArgs),
    /// Print a loop's log as the model saw it (default: the newest loop).
    Log(inspect::LogArgs),
    /// The local model: prepare (fetch, verify, build), status, serve, path.
    Llm(llm::LlmArgs),
    /// Which models are configured, which is local, and which a command would use.
    Models(llm::ModelsArgs),
    /// Run one loop and print its log (scripted model or the AGENTOS_LLM_* endpoint).
    Loop(LoopArgs),
    /// Replay a loop recorded with `loop --record`: no model, no disk, no subprocess.
    Replay(replay::ReplayArgs),
    /// Parse plurnk statements on stdin; print the result as JSON.
    Parse(parse::ParseArgs),
    /// Print the GBNF grammar the engine constrains a model by (a loop holding every scheme).
    Gbnf,
}

/// `agentos loop`.
#[derive(Debug, Args)]
pub struct LoopArgs {
    /// The scripted model: a file of model turns separated by lines of `---`.
    #[arg(long, value_name = "FILE")]
    pub script: Option<PathBuf>,
    /// Turn limit.
    #[arg(long, value_name = "N")]
    pub max_turns: Option<u32>,
    /// The sessions database (default: $AGENTOS_DATA_DIR/sessions.db).
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Record the loop (kernel journal and what was asked) into DIR for `agentos replay`;
    /// the loop then runs on a deterministic kernel.
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,
    /// The prompt (words are joined with spaces).
    #[arg(required = true, value_name = "PROMPT")]
    pub prompt: Vec<String>,
}

/// Parses the process arguments and runs the verb.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Run(a) => run::run(a),
        Command::Serve(a) => serve::serve(a),
        Command::Top(a) => top::top(a),
        Command::Sessions(a) => inspect::sessions(a),
        Command::Log(a) => inspect::log(a),
        Command::Llm(a) => llm::llm(a),
        Command::Models(a) => llm::models(a),
        Command::Loop(a) => run::loop_cmd(a),
        Command::Replay(a) => replay::replay(a),
        Command::Parse(a) => parse::parse(a),
        Command::Gbnf => parse::gbnf(),
    };
    model::stop_local();
    code
}

/// Writes `text` to stdout; exit code 2 when stdout is gone.
fn emit(text: &str) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agentos: {e}");
            ExitCode::from(2)
        }
    }
}

/// The exit code of a loop's terminal status (see the module docs).
pub fn exit_code_for(status: u16) -> u8 {
    match status {
        200 => 0,
        413 | 429 | 504 => 3,
        499 => 130,
        _ => 1,
    }
}

/// Opens the store at `db` or the default path.
fn open_store(db: Option<&std::path::Path>) -> Result<std::sync::Arc<crate::store::Store>, String> {
    let s = match db {
        Some(p) => crate::store::Store::open(p),
        None => {
            let dir = crate::store::data_dir();
            if let Err(e) = std::fs::create_dir_all(&dir) {
                return Err(format!(
                    "cannot create the data directory {}: {e} (set AGENTOS_DATA_DIR)",
                    dir.display()
                ));
            }
            crate::store::Store::open_default()
        }
    };
    s.map(std::sync::Arc::new).map_err(|e| e.to_string())
}
