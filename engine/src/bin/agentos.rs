//! `agentos` — the engine's command-line entry point.
//!
//! Everything lives in [`agentos_engine::cli`]: `run`, `serve`, `sessions`, `log`, `loop`,
//! `parse`, `gbnf`, each with `--help`. This file only hands the process to it, so the
//! binary needs the default `daemon` feature (clap, tokio, axum).

fn main() -> std::process::ExitCode {
    agentos_engine::cli::main()
}
