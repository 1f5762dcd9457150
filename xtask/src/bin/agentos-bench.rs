//! # agentos-bench — the BENCHMARKS.md runner
//!
//! `cargo xtask bench [--quick] [NAME...]` builds this binary in release mode and runs it.
//! It owns the measurement protocol, not the workloads: those come from a registry built
//! from `bench_kernel::workloads()` (the kernel workloads) plus `("parse", bench_parse::run)`
//! (the plurnk parser), `("engine_turn", bench_engine::run)` (the turn loop) and
//! `("rpc", bench_rpc::run)` (the daemon on loopback), each a `fn(quick) -> anyhow::Result<serde_json::Value>` returning
//! its report object.
//!
//! Each selected workload runs in a **fresh child process** of this binary
//! (`agentos-bench --one NAME [--quick]`), so memory figures such as `idle_mem` and the
//! allocator's state never leak from one workload into the next. The child prints one
//! compact JSON value on stdout; the parent collects them and prints ONE pretty JSON
//! document: `{"version": 1, "git": SHA, "cores": N, "quick": BOOL, "workloads": {...}}`.
//! Progress and timings go to stderr, so stdout stays machine-readable.
//!
//! Invariants: a workload that is not registered is absent from the document; a workload
//! whose child fails is reported on stderr and left out (never a fake entry), and the
//! runner then exits non-zero after printing the document with the successful ones.

// The workload signature is spelled out in full on purpose (it is the contract).
#[path = "../bench_engine.rs"]
mod bench_engine;
#[allow(clippy::type_complexity)]
#[path = "../bench_kernel.rs"]
mod bench_kernel;
#[path = "../bench_parse.rs"]
mod bench_parse;
#[path = "../bench_remote.rs"]
mod bench_remote;
#[path = "../bench_rpc.rs"]
mod bench_rpc;

use std::{
    path::Path,
    process::{Command, ExitCode, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

/// A workload: takes `quick` (divide every N by 10), returns its report object.
type Workload = fn(bool) -> Result<Value>;

/// The workload keys in BENCHMARKS.md table order; the runner runs them in this order.
const TABLE_ORDER: &[&str] = &[
    "spawn",
    "spawn_burst",
    "pingpong",
    "fanin",
    "ring",
    "caps",
    "recall",
    "journal",
    "seal",
    "remote",
    "parse",
    "engine_turn",
    "rpc",
    "idle_mem",
];

const HELP: &str = "\
agentos-bench — run the BENCHMARKS.md workloads (usually via `cargo xtask bench`)

USAGE:
    agentos-bench [--quick] [NAME...]
    agentos-bench --one NAME [--quick]     (internal: run one workload in this process)

Prints ONE JSON document on stdout; progress on stderr. Each workload runs in its own
child process. Exits non-zero if any workload failed.

OPTIONS:
    --quick       divide every N by 10 (smoke run)
    --one NAME    run only NAME, in this process, printing its JSON value
    --list        print the registered workload names, one per line
    -h, --help    this help
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Mode {
    /// Print help.
    Help,
    /// Print the registered names.
    List,
    /// Run one workload in this process (the child side).
    One {
        /// Workload key.
        name: String,
        /// Smoke-run sizes.
        quick: bool,
    },
    /// Run the selected workloads, each in a child (the parent side).
    Run {
        /// Smoke-run sizes.
        quick: bool,
        /// Requested names; empty means all registered.
        names: Vec<String>,
    },
}

/// Parses the arguments (without the program name).
fn parse_args(args: &[String]) -> Result<Mode> {
    let mut quick = false;
    let mut one: Option<String> = None;
    let mut list = false;
    let mut names = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Mode::Help),
            "--quick" => quick = true,
            "--list" => list = true,
            "--one" => {
                let name = it.next().context("`--one` needs a workload name")?;
                if one.replace(name.clone()).is_some() {
                    bail!("`--one` given twice");
                }
            }
            s if s.starts_with('-') => bail!("unknown option `{s}` (see --help)"),
            s => names.push(s.to_owned()),
        }
    }
    match (one, list) {
        (Some(_), true) => bail!("`--one` and `--list` cannot be combined"),
        (Some(_), false) if !names.is_empty() => {
            bail!("`--one NAME` runs a single workload; extra names given: {names:?}")
        }
        (Some(name), false) => Ok(Mode::One { name, quick }),
        (None, true) => Ok(Mode::List),
        (None, false) => Ok(Mode::Run { quick, names }),
    }
}

/// Position of a key in BENCHMARKS.md order (unknown keys sort after all known ones).
fn table_rank(name: &str) -> usize {
    TABLE_ORDER
        .iter()
        .position(|k| *k == name)
        .unwrap_or(TABLE_ORDER.len())
}

/// Orders a registry by BENCHMARKS.md table order (stable for unknown keys) and rejects
/// duplicate names.
fn order_registry(mut reg: Vec<(&'static str, Workload)>) -> Result<Vec<(&'static str, Workload)>> {
    reg.sort_by_key(|(name, _)| table_rank(name));
    for pair in reg.windows(2) {
        if pair[0].0 == pair[1].0 {
            bail!("workload `{}` is registered twice", pair[0].0);
        }
    }
    Ok(reg)
}

/// All registered workloads, in table order.
fn registry() -> Result<Vec<(&'static str, Workload)>> {
    let mut reg = bench_kernel::workloads();
    reg.push(("parse", bench_parse::run as Workload));
    reg.push(("engine_turn", bench_engine::run as Workload));
    reg.push(("rpc", bench_rpc::run as Workload));
    order_registry(reg)
}

/// The workloads to run: all registered ones when `requested` is empty, otherwise the
/// requested ones (deduplicated) in registry order. An unknown name is an error listing
/// the known ones.
fn select<'a>(registered: &[&'a str], requested: &[String]) -> Result<Vec<&'a str>> {
    let unknown: Vec<&str> = requested
        .iter()
        .map(String::as_str)
        .filter(|r| !registered.contains(r))
        .collect();
    if !unknown.is_empty() {
        bail!(
            "unknown workload(s): {}; registered: {}",
            unknown.join(", "),
            if registered.is_empty() {
                "(none)".to_owned()
            } else {
                registered.join(", ")
            }
        );
    }
    Ok(registered
        .iter()
        .copied()
        .filter(|name| requested.is_empty() || requested.iter().any(|r| r == name))
        .collect())
}

/// Extracts a child's JSON value from its stdout: the last non-empty line must be a JSON
/// object. Earlier lines (a workload should not print to stdout) are returned so the
/// caller can forward them to stderr.
fn parse_child_output(stdout: &[u8]) -> Result<(Value, Vec<String>)> {
    let text = std::str::from_utf8(stdout).context("workload output is not UTF-8")?;
    let mut lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let last = lines.pop().context("workload printed nothing on stdout")?;
    let value: Value = serde_json::from_str(last)
        .with_context(|| format!("workload output is not JSON: {last:?}"))?;
    if !value.is_object() {
        bail!("workload output must be a JSON object, got {value}");
    }
    Ok((value, lines.into_iter().map(str::to_owned).collect()))
}

/// The top-level document of BENCHMARKS.md.
fn assemble(git: &str, cores: usize, quick: bool, results: Vec<(String, Value)>) -> Value {
    let workloads: Map<String, Value> = results.into_iter().collect();
    json!({
        "version": 1,
        "git": git,
        "cores": cores,
        "quick": quick,
        "workloads": workloads,
    })
}

/// Short commit hash of the workspace, or `"unknown"`.
fn git_short_sha() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."));
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(root)
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Child side: run one workload here and print its value as one JSON line.
fn run_one(reg: &[(&'static str, Workload)], name: &str, quick: bool) -> Result<()> {
    let names: Vec<&str> = reg.iter().map(|(n, _)| *n).collect();
    select(&names, &[name.to_owned()])?;
    let (_, workload) = reg
        .iter()
        .find(|(n, _)| *n == name)
        .context("workload vanished from the registry")?;
    let value = workload(quick).with_context(|| format!("workload `{name}` failed"))?;
    if !value.is_object() {
        bail!("workload `{name}` returned {value}, not a JSON object");
    }
    println!("{}", serde_json::to_string(&value)?);
    Ok(())
}

/// Runs one workload in a child process and returns its value.
fn run_child(exe: &Path, name: &str, quick: bool) -> Result<Value> {
    let mut cmd = Command::new(exe);
    cmd.arg("--one").arg(name);
    if quick {
        cmd.arg("--quick");
    }
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .stdout(Stdio::piped())
        .output()
        .with_context(|| format!("could not start {}", exe.display()))?;
    if !out.status.success() {
        bail!("child process exited with {}", out.status);
    }
    let (value, stray) = parse_child_output(&out.stdout)?;
    for line in stray {
        eprintln!("bench: {name}: (stray stdout) {line}");
    }
    Ok(value)
}

/// Parent side: run each selected workload in a child, print the document. Returns the
/// names that failed.
fn run_all(reg: &[(&'static str, Workload)], quick: bool, names: &[String]) -> Result<Vec<String>> {
    let registered: Vec<&str> = reg.iter().map(|(n, _)| *n).collect();
    let selected = select(&registered, names)?;
    let exe = std::env::current_exe().context("cannot locate the agentos-bench executable")?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let git = git_short_sha();
    eprintln!(
        "bench: {} workload(s){}, git {git}, {cores} core(s)",
        selected.len(),
        if quick { " (quick)" } else { "" }
    );
    let started = Instant::now();
    let mut results = Vec::new();
    let mut failed = Vec::new();
    for name in selected {
        eprintln!("bench: running {name}...");
        let t = Instant::now();
        match run_child(&exe, name, quick) {
            Ok(value) => {
                eprintln!("bench: {name} done in {:.2?}", t.elapsed());
                results.push((name.to_owned(), value));
            }
            Err(e) => {
                eprintln!("bench: {name} FAILED after {:.2?}: {e:#}", t.elapsed());
                failed.push(name.to_owned());
            }
        }
    }
    let doc = assemble(&git, cores, quick, results);
    println!("{}", serde_json::to_string_pretty(&doc)?);
    eprintln!("bench: finished in {:.2?}", started.elapsed());
    Ok(failed)
}

fn main() -> ExitCode {
    let args: Vec<String> = match std::env::args_os()
        .skip(1)
        .map(|a| a.into_string())
        .collect::<Result<_, _>>()
    {
        Ok(args) => args,
        Err(bad) => {
            eprintln!("agentos-bench: argument {bad:?} is not UTF-8");
            return ExitCode::from(2);
        }
    };
    let mode = match parse_args(&args) {
        Ok(mode) => mode,
        Err(e) => {
            eprintln!("agentos-bench: {e:#}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    let result = registry().and_then(|reg| match mode {
        Mode::Help => {
            print!("{HELP}");
            Ok(Vec::new())
        }
        Mode::List => {
            for (name, _) in &reg {
                println!("{name}");
            }
            Ok(Vec::new())
        }
        Mode::One { name, quick } => run_one(&reg, &name, quick).map(|()| Vec::new()),
        Mode::Run { quick, names } => run_all(&reg, quick, &names),
    });
    match result {
        Ok(failed) if failed.is_empty() => ExitCode::SUCCESS,
        Ok(failed) => {
            eprintln!(
                "agentos-bench: {} workload(s) failed: {}",
                failed.len(),
                failed.join(", ")
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("agentos-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(list: &[&str]) -> Vec<String> {
        list.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_args() {
        assert_eq!(
            parse_args(&[]).ok(),
            Some(Mode::Run {
                quick: false,
                names: vec![]
            })
        );
        assert_eq!(
            parse_args(&s(&["pingpong", "--quick", "ring"])).ok(),
            Some(Mode::Run {
                quick: true,
                names: s(&["pingpong", "ring"])
            })
        );
        assert_eq!(
            parse_args(&s(&["--one", "parse", "--quick"])).ok(),
            Some(Mode::One {
                name: "parse".into(),
                quick: true
            })
        );
        assert_eq!(parse_args(&s(&["x", "--help"])).ok(), Some(Mode::Help));
        assert_eq!(parse_args(&s(&["--list"])).ok(), Some(Mode::List));
    }

    #[test]
    fn rejects_bad_args() {
        assert!(parse_args(&s(&["--one"])).is_err());
        assert!(parse_args(&s(&["--one", "a", "b"])).is_err());
        assert!(parse_args(&s(&["--one", "a", "--one", "b"])).is_err());
        assert!(parse_args(&s(&["--fast"])).is_err());
        assert!(parse_args(&s(&["--one", "a", "--list"])).is_err());
    }

    fn ok(_: bool) -> Result<Value> {
        Ok(json!({}))
    }

    #[test]
    fn registry_is_in_table_order_and_rejects_duplicates() {
        let reg = order_registry(vec![
            ("parse", ok as Workload),
            ("zzz_extra", ok),
            ("idle_mem", ok),
            ("spawn", ok),
            ("pingpong", ok),
        ])
        .expect("no duplicates");
        let names: Vec<&str> = reg.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            ["spawn", "pingpong", "parse", "idle_mem", "zzz_extra"]
        );
        assert!(order_registry(vec![("parse", ok as Workload), ("parse", ok)]).is_err());
    }

    #[test]
    fn the_real_registry_is_consistent() {
        let reg = registry().expect("registry builds");
        assert!(reg.iter().any(|(n, _)| *n == "parse"));
        for (name, _) in &reg {
            assert!(
                TABLE_ORDER.contains(name),
                "`{name}` is not a BENCHMARKS.md key"
            );
        }
    }

    #[test]
    fn selects_workloads() {
        let reg = ["spawn", "pingpong", "parse"];
        assert_eq!(select(&reg, &[]).ok(), Some(reg.to_vec()));
        assert_eq!(
            select(&reg, &s(&["parse", "spawn", "parse"])).ok(),
            Some(vec!["spawn", "parse"])
        );
        let err = select(&reg, &s(&["ring", "parse"])).expect_err("ring is unknown");
        let msg = format!("{err:#}");
        assert!(msg.contains("ring"), "{msg}");
        assert!(msg.contains("spawn, pingpong, parse"), "{msg}");
    }

    #[test]
    fn parses_child_output() {
        let (v, stray) = parse_child_output(b"{\"mb_per_s\":12.5}\n").expect("valid");
        assert_eq!(v, json!({"mb_per_s": 12.5}));
        assert!(stray.is_empty());
        let (v, stray) = parse_child_output(b"hello\n{\"a\":1}\n\n").expect("valid");
        assert_eq!(v, json!({"a": 1}));
        assert_eq!(stray, ["hello"]);
        assert!(parse_child_output(b"").is_err());
        assert!(parse_child_output(b"not json\n").is_err());
        assert!(parse_child_output(b"[1,2]\n").is_err());
        assert!(parse_child_output(&[0xff, 0xfe]).is_err());
    }

    /// A fake child: a shell script standing in for `agentos-bench --one NAME`.
    #[cfg(unix)]
    fn fake_exe(tag: &str, body: &str) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!(
            "agentos-bench-fake-{tag}-{}.sh",
            std::process::id()
        ));
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    #[cfg(unix)]
    #[test]
    fn runs_children_and_reports_failures() {
        // the child receives `--one NAME [--quick]` and its last stdout line is the value
        let ok = fake_exe("ok", "echo \"args: $*\"; echo '{\"n\": 1}'");
        let v = run_child(&ok, "parse", true).expect("child succeeds");
        assert_eq!(v, json!({"n": 1}));
        let echo = fake_exe("echo", "printf '{\"args\": \"%s\"}\\n' \"$*\"");
        let v = run_child(&echo, "ring", true).expect("child succeeds");
        assert_eq!(v, json!({"args": "--one ring --quick"}));
        let v = run_child(&echo, "ring", false).expect("child succeeds");
        assert_eq!(v, json!({"args": "--one ring"}));
        // a failing child is an error even if it printed something
        let bad = fake_exe("bad", "echo '{\"n\": 1}'; exit 3");
        let err = run_child(&bad, "parse", false).expect_err("exit 3 fails");
        assert!(format!("{err:#}").contains("exit status: 3"), "{err:#}");
        // a child that prints no JSON is an error
        let silent = fake_exe("silent", "true");
        assert!(run_child(&silent, "parse", false).is_err());
        for p in [ok, echo, bad, silent] {
            let _ = std::fs::remove_file(p);
        }
    }

    #[test]
    fn assembles_the_document() {
        let doc = assemble(
            "abc1234",
            8,
            true,
            vec![
                (
                    "pingpong".into(),
                    json!({"msgs_per_s": 1.0, "mode": "multi"}),
                ),
                ("parse".into(), json!({"mb_per_s": 2.0})),
            ],
        );
        assert_eq!(
            doc,
            json!({
                "version": 1,
                "git": "abc1234",
                "cores": 8,
                "quick": true,
                "workloads": {
                    "pingpong": {"msgs_per_s": 1.0, "mode": "multi"},
                    "parse": {"mb_per_s": 2.0},
                }
            })
        );
        let empty = assemble("unknown", 1, false, vec![]);
        assert_eq!(empty["workloads"], json!({}));
    }
}
