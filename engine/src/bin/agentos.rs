//! `agentos` — the engine's command-line entry point.
//!
//! - `agentos parse [--turn]`: read text on stdin, print the parse result as JSON on
//!   stdout; exit 0 on a clean parse, 1 when there are errors (or, with `--turn`, when the
//!   turn sandwich is violated).
//! - `agentos gbnf`: print the constrained-decoding grammar.
//! - `agentos loop [--script FILE] [--max-turns N] [--db PATH] PROMPT`: run one loop on a
//!   scripted model (`--script`: turns separated by lines of `---`) or on the
//!   `AGENTOS_LLM_*` endpoint, and print its log as the model saw it; exit 0 when the loop
//!   ends 200, 1 otherwise.
//!
//! Exit code 2 means a usage or I/O error.

use std::io::{Read, Write};
use std::process::ExitCode;

use agentos_engine::grammar::{gbnf, parse, parse_turn, GbnfOptions};

const USAGE: &str = "\
usage: agentos parse [--turn] < text
       agentos gbnf
       agentos loop [--script FILE] [--max-turns N] [--db PATH] PROMPT

loop: runs one loop and prints its log. The model is the scripted one of --script (model
turns separated by lines of `---`), else the OpenAI-compatible endpoint of
AGENTOS_LLM_BASE_URL / AGENTOS_LLM_MODEL / AGENTOS_LLM_API_KEY (AGENTOS_LLM_GRAMMAR=1 sends
the plurnk GBNF). The sessions database is --db, else $AGENTOS_DATA_DIR/sessions.db.
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["parse"] => run_parse(false),
        ["parse", "--turn"] | ["--turn", "parse"] => run_parse(true),
        ["gbnf"] => emit(&gbnf(&GbnfOptions::default())),
        ["loop", rest @ ..] => run_loop(rest),
        ["help" | "--help" | "-h"] => emit(USAGE),
        _ => {
            eprint!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn emit(text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agentos: {e}");
            ExitCode::from(2)
        }
    }
}

fn run_parse(turn: bool) -> ExitCode {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("agentos: cannot read stdin: {e}");
        return ExitCode::from(2);
    }
    let (json, clean) = if turn {
        let t = parse_turn(&input);
        (serde_json::to_string_pretty(&t), t.valid)
    } else {
        let r = parse(&input);
        let clean = !r.has_errors();
        (serde_json::to_string_pretty(&r), clean)
    };
    let json = match json {
        Ok(j) => j,
        Err(e) => {
            eprintln!("agentos: cannot encode the result: {e}");
            return ExitCode::from(2);
        }
    };
    match emit(&format!("{json}\n")) {
        c if c != ExitCode::SUCCESS => c,
        _ if clean => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}

struct LoopArgs<'a> {
    script: Option<&'a str>,
    max_turns: Option<u32>,
    db: Option<&'a str>,
    prompt: String,
}

fn loop_args<'a>(args: &[&'a str]) -> Result<LoopArgs<'a>, String> {
    let mut out = LoopArgs {
        script: None,
        max_turns: None,
        db: None,
        prompt: String::new(),
    };
    let mut words = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--script" => out.script = Some(it.next().ok_or("--script needs a file")?),
            "--db" => out.db = Some(it.next().ok_or("--db needs a path")?),
            "--max-turns" => {
                let n = it.next().ok_or("--max-turns needs a number")?;
                out.max_turns = Some(
                    n.parse()
                        .map_err(|_| format!("--max-turns: {n:?} is not a number"))?,
                );
            }
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            w => words.push(w),
        }
    }
    if words.is_empty() {
        return Err("loop needs a prompt".into());
    }
    out.prompt = words.join(" ");
    Ok(out)
}

fn run_loop(args: &[&str]) -> ExitCode {
    use agentos_drivers::llm::{LlmDriver, OpenAiProvider, Provider, ScriptedProvider};
    use agentos_engine::store::{Origin, Store};
    use agentos_engine::turn::{render, EngineConfig};
    use agentos_engine::{Engine, LoopOptions};
    use std::sync::Arc;

    let a = match loop_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("agentos loop: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut cfg = EngineConfig::default();
    let provider: Arc<dyn Provider> = match a.script {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => {
                let turns: Vec<_> = text
                    .split("\n---\n")
                    .map(|t| agentos_abi::device::ChatReply::text(t.trim()))
                    .collect();
                Arc::new(ScriptedProvider::new(turns))
            }
            Err(e) => {
                eprintln!("agentos loop: cannot read the script {path}: {e}");
                return ExitCode::from(2);
            }
        },
        None => match OpenAiProvider::from_env() {
            Ok(p) => {
                if p.config().supports_grammar {
                    cfg.grammar = Some(agentos_engine::turn::engine_gbnf());
                }
                Arc::new(p)
            }
            Err(e) => {
                eprintln!("agentos loop: no model: {e} (set AGENTOS_LLM_BASE_URL and AGENTOS_LLM_MODEL, or pass --script FILE)");
                return ExitCode::from(2);
            }
        },
    };
    let store = match a.db {
        Some(p) => Store::open(p),
        None => Store::open_default(),
    };
    let store = match store {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("agentos loop: {e}");
            return ExitCode::from(2);
        }
    };
    let kernel = agentos_kernel::Kernel::new(agentos_kernel::KernelConfig::threads(2));
    let driver = match LlmDriver::new(provider) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("agentos loop: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = kernel.register_driver(Arc::new(driver)) {
        eprintln!("agentos loop: {e}");
        return ExitCode::from(2);
    }
    let result = (|| -> Result<_, agentos_engine::EngineError> {
        let engine = Engine::start(kernel.clone(), store, cfg)?;
        let session = engine.create_session(None, None, "{}")?;
        let run = engine.create_run(session.id, "main", Origin::Client)?;
        let opts = LoopOptions {
            max_turns: a.max_turns,
            ..LoopOptions::default()
        };
        let lp = engine.start_loop(run.id, &a.prompt, &opts)?;
        let lp = engine.wait_loop(lp.id, None)?;
        let rows = engine.loop_log(lp.id)?;
        Ok((session, lp, rows))
    })();
    kernel.shutdown(agentos_abi::ExitReason::Shutdown);
    match result {
        Ok((session, lp, rows)) => {
            let mut out = render::render_rows(&rows);
            out.push_str(&format!(
                "\nsession {} · loop {} · status {}{}\n",
                session.name,
                lp.id,
                lp.status,
                lp.terminal_message
                    .map(|m| format!(" · {m}"))
                    .unwrap_or_default()
            ));
            match emit(&out) {
                c if c != ExitCode::SUCCESS => c,
                _ if lp.status == 200 => ExitCode::SUCCESS,
                _ => ExitCode::from(1),
            }
        }
        Err(e) => {
            eprintln!("agentos loop: {e}");
            ExitCode::from(2)
        }
    }
}
