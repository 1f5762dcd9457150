//! The `parse` bench workload (shared/BENCHMARKS.md): the plurnk parser on a 1 MB model
//! turn of 1,000 mixed statements (all ops, markers, nested suffixes, multi-line bodies),
//! parsed 100 times (10 with `--quick`). Reports `mb_per_s` and `statements_per_s`.
//!
//! Only the parse loop is timed; building and validating the turn happen before the clock
//! starts. Progress goes to stderr; the caller prints the JSON.

use std::hint::black_box;
use std::time::Instant;

use agentos_engine::grammar::corpus::synthetic_turn;
use agentos_engine::grammar::parse;

/// Statements in the turn.
const STATEMENTS: usize = 1_000;
/// Target size of the turn in bytes.
const BYTES: usize = 1 << 20;
/// Fixed seed: the turn is the same on every run and machine.
const SEED: u64 = 0x5EED_7A17;

/// Runs the workload and returns its JSON report.
pub fn run(quick: bool) -> anyhow::Result<serde_json::Value> {
    let text = synthetic_turn(STATEMENTS, BYTES, SEED);
    let iterations: u32 = if quick { 10 } else { 100 };

    // Validate once (also warms caches and the allocator) before timing.
    let check = parse(&text);
    let statements = check.statements().count();
    anyhow::ensure!(
        !check.has_errors(),
        "parse bench: the synthetic turn has parse errors"
    );
    anyhow::ensure!(
        statements == STATEMENTS,
        "parse bench: expected {STATEMENTS} statements, got {statements}"
    );
    eprintln!(
        "parse: {} bytes, {statements} statements, {iterations} iterations",
        text.len()
    );

    let start = Instant::now();
    let mut items = 0usize;
    for _ in 0..iterations {
        let result = parse(black_box(&text));
        items += result.items.len();
        drop(black_box(result));
    }
    let secs = start.elapsed().as_secs_f64().max(f64::MIN_POSITIVE);
    black_box(items);

    let total_bytes = text.len() as f64 * f64::from(iterations);
    let mb_per_s = total_bytes / (1024.0 * 1024.0) / secs;
    let statements_per_s = (statements as f64 * f64::from(iterations)) / secs;
    eprintln!("parse: {mb_per_s:.1} MB/s, {statements_per_s:.0} statements/s");
    Ok(serde_json::json!({
        "mb_per_s": mb_per_s,
        "statements_per_s": statements_per_s,
        "bytes": text.len(),
        "statements": statements,
        "iterations": iterations,
    }))
}
