//! `agentos` — the engine's command-line entry point.
//!
//! - `agentos parse [--turn]`: read text on stdin, print the parse result as JSON on
//!   stdout; exit 0 on a clean parse, 1 when there are errors (or, with `--turn`, when the
//!   turn sandwich is violated).
//! - `agentos gbnf`: print the constrained-decoding grammar.
//!
//! Exit code 2 means a usage or I/O error. Later issues add subcommands.

use std::io::{Read, Write};
use std::process::ExitCode;

use agentos_engine::grammar::{gbnf, parse, parse_turn, GbnfOptions};

const USAGE: &str = "usage: agentos parse [--turn] < text\n       agentos gbnf\n";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["parse"] => run_parse(false),
        ["parse", "--turn"] | ["--turn", "parse"] => run_parse(true),
        ["gbnf"] => emit(&gbnf(&GbnfOptions::default())),
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
