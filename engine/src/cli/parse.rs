//! `agentos parse [--turn]` and `agentos gbnf`: the grammar tools.
//!
//! `parse` reads stdin and prints the parse result as JSON: exit 0 on a clean parse, 1 on
//! errors (with `--turn`, also when the turn sandwich is violated), 2 on I/O errors.
//!
//! **Invariant:** any input is answered with JSON; the parser never panics.
//! **API boundary:** [`parse`], [`gbnf`], [`ParseArgs`] for the CLI's dispatch.

use std::io::Read;
use std::process::ExitCode;

use clap::Args;

use super::emit;
use crate::grammar::{parse as parse_text, parse_turn};

/// `agentos parse`.
#[derive(Debug, Args)]
pub struct ParseArgs {
    /// Check a whole model turn (PLAN first, a terminal SEND last).
    #[arg(long)]
    pub turn: bool,
}

/// Runs `parse`.
pub fn parse(a: ParseArgs) -> ExitCode {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("agentos parse: cannot read stdin: {e}");
        return ExitCode::from(2);
    }
    let (json, clean) = if a.turn {
        let t = parse_turn(&input);
        (serde_json::to_string_pretty(&t), t.valid)
    } else {
        let r = parse_text(&input);
        let clean = !r.has_errors();
        (serde_json::to_string_pretty(&r), clean)
    };
    let json = match json {
        Ok(j) => j,
        Err(e) => {
            eprintln!("agentos parse: cannot encode the result: {e}");
            return ExitCode::from(2);
        }
    };
    match emit(&format!("{json}\n")) {
        c if c != ExitCode::SUCCESS => c,
        _ if clean => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}

/// Runs `gbnf`: the grammar the engine constrains a loop holding every scheme by.
pub fn gbnf() -> ExitCode {
    emit(&crate::turn::engine_gbnf())
}
