//! # xtask — agentos automation, in Rust
//!
//! `cargo xtask <command>` (an alias in `.cargo/config.toml`) is the one entry point for
//! everything we automate, written in Rust so it runs the same on every machine that has
//! a toolchain, with no shell or Python dependency beyond the thin `.ci/run` wrapper.
//!
//! - `ci` — the gate: rustfmt check, clippy with `-D warnings`, the test suite (nextest
//!   when installed, plus doctests; `cargo test` otherwise), a `--no-run` build of benches
//!   when any exist, `cargo package` of every crate, the `downstream` check, then `tidy`. It
//!   fails fast on the first failing step, names it, and exits non-zero.
//! - `downstream` — crates outside the workspace that take one layer each (abi + kernel; abi +
//!   userland on the kernel), generated in a temp dir, checked for their dependency graph and
//!   run; see the `downstream` module.
//! - `tidy` — the structural rules of DESIGN.md (crate-root essays, layer edges, abi without
//!   I/O, no `todo!`/`dbg!`, ARCHITECTURE.md coverage, crates that package alone); see the `tidy` module. The same
//!   checks run as unit tests, so `cargo test` alone enforces them.
//! - `bench` — builds and runs the `agentos-bench` binary in release mode and passes its
//!   single JSON document through on stdout (BENCHMARKS.md).
//!
//! The product's verbs are not here: the local model is `agentos llm prepare|serve|status`
//! (the `agentos` binary, `engine/src/cli/`), and the supervised-team demo is the userland
//! crate's example (`cargo run --release -p agentos-userland --example team`).
//!
//! Every subprocess uses the cargo that invoked us (`$CARGO`) and runs at the workspace
//! root, so `cargo xtask` works from any directory inside the repository. Bad arguments give
//! a usage message and exit code 2, never a panic.

mod downstream;
mod tidy;

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};

const HELP: &str = "\
cargo xtask — agentos automation

USAGE:
    cargo xtask <COMMAND> [ARGS...]

COMMANDS:
    ci                 fmt --check, clippy -D warnings, tests (nextest + doctests, or
                       cargo test), bench --no-run (if any benches), rustdoc -D warnings,
                       the team example (--fast), cargo package, downstream, tidy; fails fast
    tidy               check the DESIGN.md rules: crate-root essays, layer edges, abi has
                       no I/O, no todo!/unimplemented!/dbg!, ARCHITECTURE.md per crate,
                       crate metadata and README doctests
    downstream         build and run crates outside the workspace that take one layer each
    bench [--quick] [NAME...]
                       run the BENCHMARKS.md workloads in release mode; prints one JSON
                       document on stdout, progress on stderr
    help [COMMAND]     print this help, or a command's help

Run `cargo xtask help <COMMAND>` (or `cargo xtask <COMMAND> --help`) for details.
The local model is `agentos llm` (cargo run -p agentos-engine -- llm --help); the team
demo is `cargo run --release -p agentos-userland --example team`.
";

const HELP_CI: &str = "\
cargo xtask ci — the CI gate

USAGE:
    cargo xtask ci

Runs, in order, failing fast with the name of the failed step:
    1. cargo fmt --all -- --check
    2. cargo clippy --workspace --all-targets -- -D warnings
       cargo clippy --all-targets --no-default-features -p <each library crate> -- -D warnings
    3. cargo nextest run --workspace && cargo test --workspace --doc
       (or `cargo test --workspace` when cargo-nextest is not installed)
    4. cargo bench --workspace --no-run     (only if some crate has benches)
    5. cargo doc --workspace --no-deps      (RUSTDOCFLAGS=-D warnings)
    6. cargo run -p agentos-userland --example team -- --fast
                                            (the README's team example runs to completion)
    7. cargo package --workspace --no-verify --allow-dirty --exclude xtask --exclude agentos-tests
                                            (every library crate packages: versioned deps,
                                            metadata, files; the build is step 8's job)
    8. downstream                           (see `cargo xtask help downstream`)
    9. tidy                                 (see `cargo xtask help tidy`)
Exits non-zero if any step fails.
";

const HELP_TIDY: &str = "\
cargo xtask tidy — mechanical checks of DESIGN.md rules

USAGE:
    cargo xtask tidy

Checks:
    essays        every crate root (src/lib.rs, src/main.rs, src/bin/*.rs) opens with a
                  `//!` essay of at least 3 non-empty lines
    edges         workspace dependency edges follow DESIGN.md \"Layers\"
                  (from `cargo metadata --no-deps`)
    abi-io        agentos-abi has no tokio dependency and no std::fs/std::net/tokio use
    macros        no todo!( / unimplemented!( / dbg!( under any */src/
    architecture  ARCHITECTURE.md has, per crate (abi kernel drivers net userland engine),
                  a section heading naming it with `**Invariant:**` and `**API boundary:**`
                  lines
    crates        every publishable library crate has description, license, readme,
                  keywords, categories (no placeholder URLs), a README with a Rust example
                  that runs, the README included in src/lib.rs as a doctest, and no
                  include_str!/include_bytes! outside its directory
The same checks run as unit tests of xtask (`cargo test -p xtask tidy`).
";

const HELP_DOWNSTREAM: &str = "\
cargo xtask downstream — one layer, taken alone from outside the workspace

USAGE:
    cargo xtask downstream

Generates in a temp dir (removed afterwards) two crates that are not workspace members:
    agentos-downstream-kernel     agentos-abi + agentos-kernel, by path: boots a kernel and
                                  runs a process that spawns a child and trades messages
    agentos-downstream-userland   agentos-abi + agentos-userland (+ agentos-kernel to run on):
                                  a supervisor restarts a crashed worker
For each, `cargo tree` must show no other agentos layer and none of wasmtime, tantivy,
tokio, reqwest; then `cargo run` must print the expected line. Both start from the
workspace's Cargo.lock and build in the workspace's target directory (CARGO_TARGET_DIR when
set), so CI reuses what its test step built.
";

const HELP_BENCH: &str = "\
cargo xtask bench — BENCHMARKS.md workloads

USAGE:
    cargo xtask bench [--quick] [NAME...]

Builds and runs `agentos-bench` in release mode. Each workload runs in a fresh process;
the result is ONE JSON document on stdout:
    {\"version\": 1, \"git\": SHA, \"cores\": N, \"quick\": BOOL, \"workloads\": {NAME: {...}}}
Progress goes to stderr. Workloads that are not implemented yet are absent.

OPTIONS:
    --quick    divide every N by 10 (smoke run)
    NAME...    run only these workloads (default: all registered)
";

/// A parsed command line.
#[derive(Debug, PartialEq, Eq)]
enum Cmd {
    /// Print a help text.
    Help(&'static str),
    /// `ci`.
    Ci,
    /// `tidy`.
    Tidy,
    /// `downstream`.
    Downstream,
    /// `bench` with the arguments for `agentos-bench`.
    Bench(Vec<OsString>),
}

/// The help text for a command name, if it is one.
fn help_for(cmd: &str) -> Option<&'static str> {
    Some(match cmd {
        "ci" => HELP_CI,
        "tidy" => HELP_TIDY,
        "downstream" => HELP_DOWNSTREAM,
        "bench" => HELP_BENCH,
        "help" => HELP,
        _ => return None,
    })
}

/// Parses the arguments after `cargo xtask`. An `Err` is a usage error message.
fn parse(args: &[OsString]) -> Result<Cmd, String> {
    let Some(first) = args.first() else {
        return Err("no command given".to_owned());
    };
    let Some(cmd) = first.to_str() else {
        return Err(format!("unknown command {first:?}"));
    };
    let rest = &args[1..];
    let wants_help = |rest: &[OsString]| rest.iter().any(|a| a == "--help" || a == "-h");
    let no_args = |name: &str| -> Result<(), String> {
        match rest.first() {
            None => Ok(()),
            Some(a) => Err(format!("`{name}` takes no arguments (got {a:?})")),
        }
    };
    match cmd {
        "-h" | "--help" => Ok(Cmd::Help(HELP)),
        "help" => match rest {
            [] => Ok(Cmd::Help(HELP)),
            [topic] => topic
                .to_str()
                .and_then(help_for)
                .map(Cmd::Help)
                .ok_or_else(|| format!("no help for unknown command {topic:?}")),
            _ => Err("`help` takes at most one command name".to_owned()),
        },
        "ci" if wants_help(rest) => Ok(Cmd::Help(HELP_CI)),
        "ci" => no_args("ci").map(|()| Cmd::Ci),
        "tidy" if wants_help(rest) => Ok(Cmd::Help(HELP_TIDY)),
        "tidy" => no_args("tidy").map(|()| Cmd::Tidy),
        "downstream" if wants_help(rest) => Ok(Cmd::Help(HELP_DOWNSTREAM)),
        "downstream" => no_args("downstream").map(|()| Cmd::Downstream),
        "bench" if wants_help(rest) => Ok(Cmd::Help(HELP_BENCH)),
        "bench" => {
            for a in rest {
                match a.to_str() {
                    Some("--quick") => {}
                    Some(s) if s.starts_with('-') => {
                        return Err(format!("`bench`: unknown option `{s}`"))
                    }
                    Some(_) => {}
                    None => return Err(format!("`bench`: workload name {a:?} is not UTF-8")),
                }
            }
            Ok(Cmd::Bench(rest.to_vec()))
        }
        "demo" => Err(
            "`demo` moved: cargo run --release -p agentos-userland --example team \
                       [-- --fast|--local|kernel|durable]"
                .to_owned(),
        ),
        "llm" => Err(
            "`llm` moved into the product: cargo run --release -p agentos-engine -- \
                      llm prepare|status|serve|path"
                .to_owned(),
        ),
        other => Err(format!("unknown command `{other}`")),
    }
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let cmd = match parse(&args) {
        Ok(cmd) => cmd,
        Err(msg) if args.is_empty() => {
            eprintln!("xtask: {msg}\n\n{HELP}");
            return ExitCode::from(2);
        }
        Err(msg) => {
            eprintln!("xtask: {msg}\nRun `cargo xtask --help` for usage.");
            return ExitCode::from(2);
        }
    };
    let root = workspace_root();
    let result = match cmd {
        Cmd::Help(text) => {
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Ci => ci(&root).map(|()| ExitCode::SUCCESS),
        Cmd::Tidy => tidy::run(&root).map(|()| ExitCode::SUCCESS),
        Cmd::Downstream => downstream::run(&root).map(|()| ExitCode::SUCCESS),
        Cmd::Bench(args) => run_release_bin(&root, "agentos-bench", &args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: the parent of this crate's manifest directory.
fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// A `cargo` command at the workspace root, using the cargo that invoked us.
fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new(tidy::cargo_bin());
    cmd.current_dir(root);
    cmd
}

/// Runs a command to completion with inherited stdio; an error names `label` and the status.
fn run_step(label: &str, mut cmd: Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{label}`"))?;
    if !status.success() {
        bail!("step `{label}` failed ({status})");
    }
    Ok(())
}

/// Whether `cargo nextest` is installed.
fn has_nextest(root: &Path) -> bool {
    cargo(root)
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether any workspace member has a bench target (a `benches/` dir or `[[bench]]`).
fn has_benches(root: &Path) -> Result<bool> {
    let meta = tidy::cargo_metadata(root)?;
    let packages = meta["packages"].as_array().map_or(&[][..], Vec::as_slice);
    Ok(packages.iter().any(|p| {
        let targets = p["targets"].as_array().map_or(&[][..], Vec::as_slice);
        let in_targets = targets.iter().any(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bench"))
        });
        let benches_dir = p["manifest_path"]
            .as_str()
            .and_then(|m| Path::new(m).parent())
            .is_some_and(|d| d.join("benches").is_dir());
        in_targets || benches_dir
    }))
}

/// The ci steps as (label, cargo arguments); tidy is appended by [`ci`] itself.
fn ci_steps(nextest: bool, benches: bool) -> Vec<Vec<&'static str>> {
    let mut steps = vec![
        vec!["fmt", "--all", "--", "--check"],
        vec![
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        // Features are a contract: every library crate, tests included, also builds without
        // its default features. One invocation: the selected crates ask nothing heavy of each
        // other, so each gets its minimal feature set (the workspace run above has them all).
        {
            // The library crates are the layers ARCHITECTURE.md describes (tidy's tables).
            let mut v = vec!["clippy", "--all-targets", "--no-default-features"];
            for (pkg, dir) in tidy::LAYERS {
                if tidy::ARCH_CRATES.contains(dir) {
                    v.extend(["-p", *pkg]);
                }
            }
            v.extend(["--", "-D", "warnings"]);
            v
        },
    ];
    if nextest {
        steps.push(vec!["nextest", "run", "--workspace"]);
        steps.push(vec!["test", "--workspace", "--doc"]);
    } else {
        steps.push(vec!["test", "--workspace"]);
    }
    if benches {
        steps.push(vec!["bench", "--workspace", "--no-run"]);
    }
    // Rustdoc with -D warnings (set by `ci`): every intra-doc link resolves.
    steps.push(vec!["doc", "--workspace", "--no-deps", "-q"]);
    // The README's team example must run to completion on a fresh clone.
    steps.push(vec![
        "run",
        "-q",
        "-p",
        "agentos-userland",
        "--example",
        "team",
        "--",
        "--fast",
    ]);
    // Every library crate packages (versioned path deps, metadata, the files it needs).
    // `--no-verify`: verifying rebuilds every packaged crate and all its dependencies under a
    // fresh profile (minutes per wasmtime build on CI's machine); what verification would catch
    // is covered more cheaply by the downstream step (each layer built from outside the
    // workspace) and tidy's `crates` check (no include outside the crate directory).
    // `--allow-dirty`: packaging is checked, not a release cut, so a local run with uncommitted
    // work must not fail on it.
    steps.push(vec![
        "package",
        "--workspace",
        "--no-verify",
        "--allow-dirty",
        "--exclude",
        "xtask",
        "--exclude",
        "agentos-tests",
    ]);
    steps
}

/// `cargo xtask ci`.
fn ci(root: &Path) -> Result<()> {
    let started = Instant::now();
    let nextest = has_nextest(root);
    if !nextest {
        eprintln!("xtask ci: cargo-nextest not installed; using `cargo test`");
    }
    let steps = ci_steps(nextest, has_benches(root)?);
    let total = steps.len() + 2;
    for (i, args) in steps.iter().enumerate() {
        let label = format!("cargo {}", args.join(" "));
        eprintln!("\n==> [{}/{total}] {label}", i + 1);
        let step_start = Instant::now();
        let mut cmd = cargo(root);
        cmd.args(args);
        if args[0] == "doc" {
            // Broken intra-doc links and doc warnings fail the build, like clippy's.
            cmd.env("RUSTDOCFLAGS", "-D warnings");
        }
        run_step(&label, cmd).context("xtask ci failed")?;
        eprintln!("    ok ({:.1?})", step_start.elapsed());
    }
    eprintln!("\n==> [{}/{total}] downstream", total - 1);
    let step_start = Instant::now();
    downstream::run(root).context("xtask ci failed at step `downstream`")?;
    eprintln!("    ok ({:.1?})", step_start.elapsed());
    eprintln!("\n==> [{total}/{total}] tidy");
    tidy::run(root).context("xtask ci failed at step `tidy`")?;
    eprintln!(
        "\nxtask ci: all {total} steps passed in {:.1?}",
        started.elapsed()
    );
    Ok(())
}

/// Builds and runs a bin of this package in release mode, stdio inherited (so a bench's
/// stdout passes through unchanged); returns its exit status as ours.
fn run_release_bin(root: &Path, bin: &str, args: &[OsString]) -> Result<ExitCode> {
    let status = cargo(root)
        .args(["run", "--release", "--package", "xtask", "--bin", bin, "--"])
        .args(args)
        .status()
        .with_context(|| format!("could not start `cargo run --bin {bin}`"))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1).max(1)),
        None => {
            eprintln!("xtask: `{bin}` was terminated by a signal ({status})");
            ExitCode::FAILURE
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_commands() {
        assert_eq!(parse(&args(&["ci"])), Ok(Cmd::Ci));
        assert_eq!(parse(&args(&["tidy"])), Ok(Cmd::Tidy));
        assert_eq!(parse(&args(&["downstream"])), Ok(Cmd::Downstream));
        assert_eq!(
            parse(&args(&["bench", "--quick", "pingpong"])),
            Ok(Cmd::Bench(args(&["--quick", "pingpong"])))
        );
        assert_eq!(parse(&args(&["bench"])), Ok(Cmd::Bench(vec![])));
        // Moved into the product: a usage error that says where.
        assert!(parse(&args(&["demo"]))
            .unwrap_err()
            .contains("--example team"));
        assert!(parse(&args(&["llm", "prepare"]))
            .unwrap_err()
            .contains("agentos-engine -- llm"));
    }

    #[test]
    fn help_variants() {
        assert_eq!(parse(&args(&["--help"])), Ok(Cmd::Help(HELP)));
        assert_eq!(parse(&args(&["help"])), Ok(Cmd::Help(HELP)));
        assert_eq!(parse(&args(&["help", "bench"])), Ok(Cmd::Help(HELP_BENCH)));
        assert_eq!(parse(&args(&["ci", "--help"])), Ok(Cmd::Help(HELP_CI)));
        assert_eq!(parse(&args(&["tidy", "-h"])), Ok(Cmd::Help(HELP_TIDY)));
        assert_eq!(
            parse(&args(&["bench", "--help"])),
            Ok(Cmd::Help(HELP_BENCH))
        );
    }

    #[test]
    fn usage_errors() {
        assert!(parse(&args(&[])).is_err());
        assert!(parse(&args(&["nope"])).is_err());
        assert!(parse(&args(&["llm", "frobnicate"])).is_err());
        assert!(parse(&args(&["ci", "extra"])).is_err());
        assert!(parse(&args(&["tidy", "--fix"])).is_err());
        assert!(parse(&args(&["bench", "--slow"])).is_err());
        assert!(parse(&args(&["help", "nope"])).is_err());
    }

    #[test]
    fn ci_steps_choose_the_test_runner() {
        let with = ci_steps(true, false);
        assert!(with.contains(&vec!["nextest", "run", "--workspace"]));
        assert!(with.contains(&vec!["test", "--workspace", "--doc"]));
        assert!(!with.iter().any(|s| s[0] == "bench"));
        let without = ci_steps(false, true);
        assert!(without.contains(&vec!["test", "--workspace"]));
        assert!(!without.iter().any(|s| s[0] == "nextest"));
        assert!(without.contains(&vec!["bench", "--workspace", "--no-run"]));
        assert_eq!(
            without[without.len() - 2].last(),
            Some(&"--fast"),
            "the team example runs before packaging"
        );
        assert_eq!(without.last().map(|s| s[0]), Some("package"));
        assert!(without.last().is_some_and(|s| s.contains(&"--no-verify")));
        assert_eq!(without[0], vec!["fmt", "--all", "--", "--check"]);
        assert!(without[2].contains(&"--no-default-features"));
    }

    #[test]
    fn root_is_the_workspace() {
        assert!(workspace_root().join("Cargo.toml").is_file());
        assert!(workspace_root().join("xtask").is_dir());
    }
}
