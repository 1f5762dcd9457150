//! # tidy — the workspace's structural rules, checked mechanically
//!
//! DESIGN.md states a handful of rules that code review alone forgets over time. This module
//! turns each into a function that takes the workspace root and returns a list of problems
//! (an empty list means the rule holds):
//!
//! - [`check_essays`]: every crate root (`src/lib.rs`, `src/main.rs`, every `src/bin/*.rs`
//!   and any other lib/bin target cargo knows about) opens with a `//!` essay of at least
//!   [`MIN_ESSAY_LINES`] non-empty lines.
//! - [`check_edges`]: dependency edges between workspace crates follow DESIGN.md "Layers",
//!   read from `cargo metadata --no-deps` (normal and build dependencies; dev-dependencies
//!   are free except on `xtask` and `agentos-tests`).
//! - [`check_abi_io`]: `agentos-abi` does no I/O — no tokio-family dependency, no `std::fs`,
//!   `std::net` or `tokio` in `abi/src`.
//! - [`check_forbidden_macros`]: no `todo!`, `unimplemented!` or `dbg!` call in any `.rs`
//!   file under a member's `src/`.
//! - [`check_architecture`]: `ARCHITECTURE.md` exists at the root and has, for each layer
//!   crate, a section with an `**Invariant:**` and an `**API boundary:**` line.
//! - [`check_crates`]: every publishable library crate has registry metadata (no placeholder
//!   URLs), a README with a Rust example, that README included in `src/lib.rs` as a doctest,
//!   and no `include_str!`/`include_bytes!` outside its directory.
//!
//! `cargo xtask tidy` runs them all through [`run`]; the `#[test]`s at the bottom run each
//! one against the real workspace too, so a plain `cargo test` enforces the rules, and
//! negative fixtures (tempdir workspaces, fake metadata) prove that each check can fail.
//!
//! Source scanning ignores comments and string literals (see [`strip_comments_and_strings`]),
//! so a doc comment saying "abi never uses tokio" is not a violation.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// Minimum number of non-empty `//!` lines a crate root's opening essay must have.
pub const MIN_ESSAY_LINES: usize = 3;

/// Workspace package name → layer name, as in DESIGN.md "Layers". A new workspace crate must
/// be added here (and to DESIGN.md) before tidy accepts it.
pub const LAYERS: &[(&str, &str)] = &[
    ("agentos-abi", "abi"),
    ("agentos-kernel", "kernel"),
    ("agentos-drivers", "drivers"),
    ("agentos-net", "net"),
    ("agentos-userland", "userland"),
    ("agentos-engine", "engine"),
    ("agentos-wasmlimit", "wasmlimit"),
    ("xtask", "xtask"),
    ("agentos-tests", "tests"),
];

/// The layer crates that ARCHITECTURE.md must describe.
pub const ARCH_CRATES: &[&str] = &[
    "abi",
    "kernel",
    "drivers",
    "net",
    "userland",
    "engine",
    "wasmlimit",
];

/// Dependencies that mean "does I/O" and are therefore forbidden in `agentos-abi`.
const IO_CRATES: &[&str] = &["tokio", "mio", "async-std", "smol"];

/// One named check: its label and the function implementing it.
type Check = (&'static str, fn(&Path) -> Result<Vec<String>>);

/// All checks, in the order [`run`] executes them.
pub const CHECKS: &[Check] = &[
    ("essays", check_essays),
    ("edges", check_edges),
    ("abi-io", check_abi_io),
    ("macros", check_forbidden_macros),
    ("architecture", check_architecture),
    ("crates", check_crates),
];

/// Runs every check against the workspace at `root`, printing one status line per check to
/// stderr. Fails (after running all of them) if any check found a problem or could not run.
pub fn run(root: &Path) -> Result<()> {
    let mut total = 0usize;
    for (name, check) in CHECKS {
        match check(root) {
            Ok(problems) if problems.is_empty() => eprintln!("tidy: {name}: ok"),
            Ok(problems) => {
                eprintln!("tidy: {name}: {} problem(s)", problems.len());
                for p in &problems {
                    eprintln!("  - {p}");
                }
                total += problems.len();
            }
            Err(e) => {
                eprintln!("tidy: {name}: could not run: {e:#}");
                total += 1;
            }
        }
    }
    if total > 0 {
        bail!("tidy found {total} problem(s); see above");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// cargo metadata
// ---------------------------------------------------------------------------------------

/// Path of the cargo binary: `$CARGO` at run time (set by cargo for the processes it runs),
/// then at build time, then plain `cargo` from `PATH`.
pub fn cargo_bin() -> String {
    std::env::var("CARGO")
        .ok()
        .or_else(|| option_env!("CARGO").map(str::to_owned))
        .unwrap_or_else(|| "cargo".to_owned())
}

/// `cargo metadata --format-version 1 --no-deps` for the workspace whose manifest is
/// `root/Cargo.toml`, parsed as JSON.
pub fn cargo_metadata(root: &Path) -> Result<Value> {
    let manifest = root.join("Cargo.toml");
    let out = Command::new(cargo_bin())
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .context("running `cargo metadata`")?;
    if !out.status.success() {
        bail!(
            "`cargo metadata` for {} failed ({}): {}",
            manifest.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("parsing `cargo metadata` output")
}

/// The `packages` array of a metadata document (empty if absent).
fn packages(meta: &Value) -> &[Value] {
    meta["packages"].as_array().map_or(&[], Vec::as_slice)
}

/// The directory holding a package's `Cargo.toml`.
fn package_dir(pkg: &Value) -> Option<PathBuf> {
    Path::new(pkg["manifest_path"].as_str()?)
        .parent()
        .map(Path::to_path_buf)
}

/// The layer name of a workspace package, if it is in [`LAYERS`].
fn layer_of(package: &str) -> Option<&'static str> {
    LAYERS
        .iter()
        .find(|(p, _)| *p == package)
        .map(|(_, layer)| *layer)
}

// ---------------------------------------------------------------------------------------
// (a) essays
// ---------------------------------------------------------------------------------------

/// Every crate root of every workspace member opens with a `//!` essay of at least
/// [`MIN_ESSAY_LINES`] non-empty lines.
pub fn check_essays(root: &Path) -> Result<Vec<String>> {
    let meta = cargo_metadata(root)?;
    let mut problems = Vec::new();
    for file in crate_roots(&meta)? {
        match fs::read_to_string(&file) {
            Ok(text) => problems.extend(essay_problem(&rel(root, &file), &text)),
            Err(e) => problems.push(format!("{}: cannot read: {e}", rel(root, &file))),
        }
    }
    Ok(problems)
}

/// The crate roots of the workspace: each member's lib/bin/proc-macro target sources plus
/// every `src/bin/*.rs` (so a bin file is covered even if a manifest renames it), sorted.
pub fn crate_roots(meta: &Value) -> Result<Vec<PathBuf>> {
    let mut roots = BTreeSet::new();
    for pkg in packages(meta) {
        for target in pkg["targets"].as_array().map_or(&[][..], Vec::as_slice) {
            let kinds = target["kind"].as_array().map_or(&[][..], Vec::as_slice);
            let is_root = kinds.iter().any(|k| {
                matches!(
                    k.as_str(),
                    Some("lib" | "rlib" | "dylib" | "cdylib" | "staticlib" | "proc-macro" | "bin")
                )
            });
            if let (true, Some(src)) = (is_root, target["src_path"].as_str()) {
                roots.insert(PathBuf::from(src));
            }
        }
        if let Some(dir) = package_dir(pkg) {
            let bin_dir = dir.join("src").join("bin");
            if bin_dir.is_dir() {
                for entry in fs::read_dir(&bin_dir)
                    .with_context(|| format!("listing {}", bin_dir.display()))?
                {
                    let path = entry?.path();
                    if path.extension().is_some_and(|e| e == "rs") && path.is_file() {
                        roots.insert(path);
                    }
                }
            }
        }
    }
    Ok(roots.into_iter().collect())
}

/// Checks one crate root's text; `None` if it opens with a long-enough `//!` essay.
/// Leading blank lines are allowed; anything else before the essay is not.
pub fn essay_problem(name: &str, text: &str) -> Option<String> {
    let mut lines = text.lines().skip_while(|l| l.trim().is_empty()).peekable();
    if !lines
        .peek()
        .is_some_and(|l| l.trim_start().starts_with("//!"))
    {
        return Some(format!(
            "{name}: crate root must open with a `//!` essay (what the crate owns, its \
             invariants, its API boundary; DESIGN.md \"Conventions\")"
        ));
    }
    let non_empty = lines
        .map(str::trim_start)
        .take_while(|l| l.starts_with("//!"))
        .filter(|l| !l.trim_start_matches("//!").trim().is_empty())
        .count();
    (non_empty < MIN_ESSAY_LINES).then(|| {
        format!(
            "{name}: the opening `//!` essay has {non_empty} non-empty line(s); at least \
             {MIN_ESSAY_LINES} are required (what it owns, its invariants, its API boundary)"
        )
    })
}

// ---------------------------------------------------------------------------------------
// (b) edges
// ---------------------------------------------------------------------------------------

/// Dependency edges between workspace crates follow DESIGN.md "Layers".
pub fn check_edges(root: &Path) -> Result<Vec<String>> {
    Ok(edge_problems(&cargo_metadata(root)?))
}

/// Whether layer `from` may have a normal/build dependency on layer `to`.
pub fn edge_allowed(from: &str, to: &str) -> bool {
    if matches!(to, "xtask" | "tests") {
        return false;
    }
    match from {
        "kernel" | "net" => to == "abi",
        // The wasm limiter is a leaf both wasm runners share (abi has no runtime to hold it).
        "drivers" | "userland" => matches!(to, "abi" | "wasmlimit"),
        "engine" => matches!(
            to,
            "abi" | "kernel" | "drivers" | "net" | "userland" | "wasmlimit"
        ),
        "xtask" | "tests" => true,
        _ => false, // abi depends on nothing; unknown crates are reported separately
    }
}

/// What layer `from` may depend on, for error messages.
fn allowed_text(from: &str) -> &'static str {
    match from {
        "abi" => "abi depends on no workspace crate",
        "wasmlimit" => "wasmlimit depends on no workspace crate",
        "kernel" | "net" => "it may depend on abi only",
        "drivers" | "userland" => "it may depend on abi and wasmlimit only",
        "engine" => "it may depend on abi, kernel, drivers, net, userland, wasmlimit",
        _ => "it may depend on any library crate",
    }
}

/// The edge check on an already-loaded metadata document (testable with fake JSON).
pub fn edge_problems(meta: &Value) -> Vec<String> {
    let members: BTreeSet<&str> = packages(meta)
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    let mut problems = BTreeSet::new();
    for name in &members {
        if layer_of(name).is_none() {
            problems.insert(format!(
                "workspace crate `{name}` is not in the layer table: add it to DESIGN.md \
                 \"Layers\" and to LAYERS in xtask/src/tidy.rs"
            ));
        }
    }
    for pkg in packages(meta) {
        let Some(from_pkg) = pkg["name"].as_str() else {
            continue;
        };
        let Some(from) = layer_of(from_pkg) else {
            continue;
        };
        for dep in pkg["dependencies"]
            .as_array()
            .map_or(&[][..], Vec::as_slice)
        {
            let Some(to_pkg) = dep["name"].as_str() else {
                continue;
            };
            if !members.contains(to_pkg) {
                continue; // an external library; not a layer edge
            }
            let Some(to) = layer_of(to_pkg) else {
                continue; // already reported as unknown
            };
            let kind = dep["kind"].as_str().unwrap_or("normal");
            let ok = match kind {
                "dev" => !matches!(to, "xtask" | "tests"),
                _ => edge_allowed(from, to),
            };
            if !ok {
                let why = if matches!(to, "xtask" | "tests") {
                    "no crate may depend on xtask or agentos-tests"
                } else {
                    allowed_text(from)
                };
                problems.insert(format!(
                    "forbidden edge {from} → {to} ({from_pkg} has a {kind} dependency on \
                     {to_pkg}): {why}; see DESIGN.md \"Layers\""
                ));
            }
        }
    }
    problems.into_iter().collect()
}

// ---------------------------------------------------------------------------------------
// (c) abi has no I/O
// ---------------------------------------------------------------------------------------

/// `agentos-abi` has no I/O: no tokio-family dependency and no `std::fs`, `std::net` or
/// `tokio` in its sources.
pub fn check_abi_io(root: &Path) -> Result<Vec<String>> {
    let meta = cargo_metadata(root)?;
    let Some(abi) = packages(&meta)
        .iter()
        .find(|p| p["name"].as_str() == Some("agentos-abi"))
    else {
        return Ok(vec!["no `agentos-abi` package in the workspace".to_owned()]);
    };
    let mut problems = abi_dependency_problems(abi);
    let src = package_dir(abi)
        .context("agentos-abi has no manifest_path")?
        .join("src");
    for file in rust_files(&src)? {
        let text =
            fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        problems.extend(abi_source_problems(&rel(root, &file), &text));
    }
    Ok(problems)
}

/// Forbidden (normal or build) I/O dependencies of the abi package's metadata entry.
fn abi_dependency_problems(abi: &Value) -> Vec<String> {
    let mut problems = BTreeSet::new();
    for dep in abi["dependencies"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
    {
        let name = dep["name"].as_str().unwrap_or("");
        let kind = dep["kind"].as_str().unwrap_or("normal");
        let io = IO_CRATES.contains(&name) || name.starts_with("tokio-");
        if io && kind != "dev" {
            problems.insert(format!(
                "agentos-abi has a {kind} dependency on `{name}`: abi is serde types only, \
                 no I/O, no tokio (DESIGN.md \"Layers\")"
            ));
        }
    }
    problems.into_iter().collect()
}

/// I/O uses in one abi source file (comments and string literals ignored).
pub fn abi_source_problems(name: &str, text: &str) -> Vec<String> {
    let code = strip_comments_and_strings(text);
    let mut problems = Vec::new();
    for (i, line) in code.lines().enumerate() {
        let mut found: Vec<&str> = Vec::new();
        for needle in ["std::fs", "std::net"] {
            if contains_path(line, needle) {
                found.push(needle);
            }
        }
        if contains_word(line, "tokio") {
            found.push("tokio");
        }
        if let Some(at) = line.find("std::{") {
            let group = brace_group(&line[at + "std::".len()..]);
            for word in ["fs", "net"] {
                if contains_word(group, word) {
                    found.push(if word == "fs" { "std::fs" } else { "std::net" });
                }
            }
        }
        for what in found {
            problems.push(format!(
                "{name}:{}: `{what}` in agentos-abi: abi does no I/O (DESIGN.md \"Layers\")",
                i + 1
            ));
        }
    }
    problems
}

/// The text of a `{…}` group at the start of `s`, up to its matching `}` (or the end).
fn brace_group(s: &str) -> &str {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return &s[..=i];
                }
            }
            _ => {}
        }
    }
    s
}

/// `needle` (a path like `std::fs`) occurs not followed by an identifier character, so that
/// `std::fs` matches `std::fs::read` but `std::fsx` does not.
fn contains_path(line: &str, needle: &str) -> bool {
    line.match_indices(needle).any(|(at, _)| {
        let before_ok = line[..at].chars().next_back().is_none_or(|c| !is_ident(c));
        let after_ok = line[at + needle.len()..]
            .chars()
            .next()
            .is_none_or(|c| !is_ident(c));
        before_ok && after_ok
    })
}

/// `word` occurs delimited by non-identifier characters.
fn contains_word(line: &str, word: &str) -> bool {
    contains_path(line, word)
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

// ---------------------------------------------------------------------------------------
// (d) forbidden macros
// ---------------------------------------------------------------------------------------

/// Macro calls that must not be committed. Spelled in pieces so this file passes itself.
const FORBIDDEN_MACROS: &[&str] = &[
    concat!("todo", "!("),
    concat!("unimplemented", "!("),
    concat!("dbg", "!("),
];

/// No `.rs` file under any member's `src/` calls `todo!`, `unimplemented!` or `dbg!`.
pub fn check_forbidden_macros(root: &Path) -> Result<Vec<String>> {
    let meta = cargo_metadata(root)?;
    let mut problems = Vec::new();
    for pkg in packages(&meta) {
        let Some(src) = package_dir(pkg).map(|d| d.join("src")) else {
            continue;
        };
        for file in rust_files(&src)? {
            let text =
                fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            problems.extend(forbidden_macro_problems(&rel(root, &file), &text));
        }
    }
    Ok(problems)
}

/// Forbidden macro calls in one file (comments and string literals ignored).
pub fn forbidden_macro_problems(name: &str, text: &str) -> Vec<String> {
    let code = strip_comments_and_strings(text);
    let mut problems = Vec::new();
    for (i, line) in code.lines().enumerate() {
        for mac in FORBIDDEN_MACROS {
            let hit = line
                .match_indices(mac)
                .any(|(at, _)| line[..at].chars().next_back().is_none_or(|c| !is_ident(c)));
            if hit {
                problems.push(format!(
                    "{name}:{}: `{})` must not be committed",
                    i + 1,
                    mac
                ));
            }
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------
// (e) ARCHITECTURE.md
// ---------------------------------------------------------------------------------------

/// `ARCHITECTURE.md` exists at `root` and describes every layer crate.
pub fn check_architecture(root: &Path) -> Result<Vec<String>> {
    let path = root.join("ARCHITECTURE.md");
    match fs::read_to_string(&path) {
        Ok(text) => Ok(architecture_problems(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![format!(
            "ARCHITECTURE.md is missing at {}: it must have a section per crate ({}) \
             with an `**Invariant:**` and an `**API boundary:**` line",
            root.display(),
            ARCH_CRATES.join(", ")
        )]),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The crate a markdown heading names: its first word, lowercased, without backticks,
/// emphasis, trailing `/` or `:` and an `agentos-` prefix (so `## \`agentos-net\` — wire`,
/// `## net/` and `### Net` all name `net`).
fn heading_crate(heading: &str) -> String {
    let word = heading.split_whitespace().next().unwrap_or("");
    let word = word.trim_matches(|c: char| matches!(c, '`' | '*' | '_' | '/' | ':' | '.'));
    let word = word.to_lowercase();
    word.strip_prefix("agentos-").unwrap_or(&word).to_owned()
}

/// Parses a markdown heading line into (level, text).
fn heading(line: &str) -> Option<(usize, &str)> {
    let level = line.chars().take_while(|&c| c == '#').count();
    let rest = &line[level..];
    (level > 0 && rest.starts_with(' ')).then(|| (level, rest.trim()))
}

/// Problems in ARCHITECTURE.md's text: for each of [`ARCH_CRATES`] there must be a heading
/// naming the crate, and within its section (up to the next heading of the same or a higher
/// level) a line containing `**Invariant:**` and one containing `**API boundary:**`, each
/// followed by text.
pub fn architecture_problems(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut in_fence = false;
    let headings: Vec<(usize, usize, String)> = lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            if l.trim_start().starts_with("```") {
                in_fence = !in_fence;
            }
            if in_fence {
                return None;
            }
            heading(l).map(|(level, h)| (i, level, heading_crate(h)))
        })
        .collect();
    let mut problems = Vec::new();
    for krate in ARCH_CRATES {
        let Some(pos) = headings.iter().position(|(_, _, c)| c == krate) else {
            problems.push(format!(
                "ARCHITECTURE.md: no section heading for `{krate}` (expected e.g. `## {krate}` \
                 or `## agentos-{krate}`)"
            ));
            continue;
        };
        let (start, level, _) = headings[pos];
        let end = headings[pos + 1..]
            .iter()
            .find(|(_, l, _)| *l <= level)
            .map_or(lines.len(), |(i, _, _)| *i);
        let section = &lines[start + 1..end];
        for marker in ["**Invariant:**", "**API boundary:**"] {
            let present = section.iter().any(|l| {
                l.find(marker)
                    .is_some_and(|at| !l[at + marker.len()..].trim().is_empty())
            });
            if !present {
                problems.push(format!(
                    "ARCHITECTURE.md: section `{krate}` (line {}) has no `{marker} …` line",
                    start + 1
                ));
            }
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------
// (f) crates package alone
// ---------------------------------------------------------------------------------------

/// Every publishable library crate can be packaged and read on its own: registry metadata
/// (description, license, readme, keywords, categories; no placeholder URLs), a README in the
/// crate with at least one Rust example, that README included in `src/lib.rs` as a doctest
/// (`#[doc = include_str!("../README.md")]`, so the example compiles and runs in `cargo test
/// --doc`), and no `include_str!`/`include_bytes!` reaching outside the crate directory (what
/// `cargo package` would leave behind).
pub fn check_crates(root: &Path) -> Result<Vec<String>> {
    let meta = cargo_metadata(root)?;
    let mut problems = Vec::new();
    for pkg in packages(&meta) {
        let name = pkg["name"].as_str().unwrap_or("?");
        // `publish = false` is `[]` in metadata; xtask and agentos-tests are not for others.
        let publishable = !pkg["publish"].as_array().is_some_and(Vec::is_empty);
        let lib = pkg["targets"]
            .as_array()
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .find(|t| {
                t["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "lib"))
            });
        let (true, Some(lib), Some(dir)) = (publishable, lib, package_dir(pkg)) else {
            continue;
        };
        problems.extend(manifest_problems(pkg));
        let Some(readme) = pkg["readme"].as_str().map(|r| dir.join(r)) else {
            continue; // reported by manifest_problems
        };
        match fs::read_to_string(&readme) {
            Ok(text) if !has_rust_example(&text) => problems.push(format!(
                "{}: no Rust example (a ```rust block rustdoc runs, not `ignore`): \
                 the README must show the crate in use",
                rel(root, &readme)
            )),
            Ok(_) => {}
            Err(_) => problems.push(format!(
                "{name}: README {} is missing: say what the layer is, what it depends on, \
                 its features, and give an example",
                rel(root, &readme)
            )),
        }
        let lib_src = PathBuf::from(lib["src_path"].as_str().unwrap_or_default());
        let hook = format!(
            "doc=include_str!(\"{}\")",
            relative_from(lib_src.parent().unwrap_or(&dir), &readme)
        );
        match fs::read_to_string(&lib_src) {
            Ok(text) => {
                let squeezed: String = text.chars().filter(|c| !c.is_whitespace()).collect();
                if !squeezed.contains(&hook) {
                    problems.push(format!(
                        "{}: does not include its README as a doctest; add \
                         `#[cfg(doctest)] #[doc = include_str!(\"{}\")] pub struct \
                         ReadmeDoctests;` (or `#![doc = include_str!(..)]`)",
                        rel(root, &lib_src),
                        relative_from(lib_src.parent().unwrap_or(&dir), &readme)
                    ));
                }
            }
            Err(e) => problems.push(format!("{}: cannot read: {e}", rel(root, &lib_src))),
        }
        for file in rust_files(&dir.join("src"))? {
            let text =
                fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            for (line, arg) in included_paths(&text) {
                let target = normalize(&file.parent().unwrap_or(&dir).join(&arg));
                if !target.starts_with(normalize(&dir)) {
                    problems.push(format!(
                        "{}:{line}: includes \"{arg}\", outside the crate: `cargo package` \
                         leaves it behind",
                        rel(root, &file)
                    ));
                }
            }
        }
    }
    Ok(problems)
}

/// Missing or placeholder registry metadata in one package's `cargo metadata` entry.
pub fn manifest_problems(pkg: &Value) -> Vec<String> {
    let name = pkg["name"].as_str().unwrap_or("?");
    let mut problems = Vec::new();
    for field in ["description", "license", "readme"] {
        if pkg[field].as_str().is_none_or(|s| s.trim().is_empty()) {
            problems.push(format!("{name}: Cargo.toml has no `{field}`"));
        }
    }
    for field in ["keywords", "categories"] {
        if pkg[field].as_array().is_none_or(Vec::is_empty) {
            problems.push(format!("{name}: Cargo.toml has no `{field}`"));
        }
    }
    for field in ["repository", "homepage", "documentation"] {
        if let Some(url) = pkg[field].as_str() {
            if ["example.", ".invalid", "localhost", "todo", "tbd"]
                .iter()
                .any(|p| url.to_ascii_lowercase().contains(p))
            {
                problems.push(format!(
                    "{name}: `{field}` is a placeholder ({url}); leave out what the project \
                     does not have"
                ));
            }
        }
    }
    problems
}

/// Whether markdown `text` has a fenced code block rustdoc compiles and runs as a doctest:
/// no info string, or only `rust` and the doctest attributes that still run it.
pub fn has_rust_example(text: &str) -> bool {
    let mut in_fence = false;
    for line in text.lines() {
        let t = line.trim_start();
        let Some(info) = t.strip_prefix("```") else {
            continue;
        };
        if in_fence {
            in_fence = false;
            continue;
        }
        in_fence = true;
        let runs = info
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|w| !w.is_empty())
            .all(|w| {
                matches!(
                    w,
                    "rust" | "should_panic" | "edition2018" | "edition2021" | "edition2024"
                )
            });
        if runs {
            return true;
        }
    }
    false
}

/// `(line, path)` of every `include_str!("…")`/`include_bytes!("…")` with a literal path,
/// outside `//` comments.
pub fn included_paths(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for mac in ["include_str!(", "include_bytes!("] {
            for (at, _) in code.match_indices(mac) {
                let rest = code[at + mac.len()..].trim_start();
                if let Some(lit) = rest.strip_prefix('"') {
                    if let Some(end) = lit.find('"') {
                        out.push((i + 1, lit[..end].to_owned()));
                    }
                }
            }
        }
    }
    out
}

/// `path` with `.` and `..` resolved lexically (no file system access).
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The relative path from directory `from` to `to` (both absolute), with `/` separators.
fn relative_from(from: &Path, to: &Path) -> String {
    let (from, to) = (normalize(from), normalize(to));
    let common = from
        .components()
        .zip(to.components())
        .take_while(|(a, b)| a == b)
        .count();
    let ups = from.components().count() - common;
    let mut parts: Vec<String> = vec!["..".to_owned(); ups];
    parts.extend(
        to.components()
            .skip(common)
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

// ---------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------

/// All `.rs` files under `dir`, recursively, sorted; empty if `dir` does not exist.
pub fn rust_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `path` relative to `root` for messages (unchanged if it is not under `root`).
fn rel(root: &Path, path: &Path) -> String {
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let path_c = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    path_c
        .strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Rust source with comments removed and string/char literal contents blanked, preserving
/// line structure (so line numbers still match). Handles `//` and nested `/* */` comments,
/// `"…"` with escapes, raw strings `r#"…"#`, byte strings, and tells char literals from
/// lifetimes. It is a scanner for lint purposes, not a full lexer.
pub fn strip_comments_and_strings(src: &str) -> String {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0usize;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                    out.push_str("  ");
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    out.push_str("  ");
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
        } else if (c == 'r' || (c == 'b' && next == Some('r')))
            && (i == 0 || !is_ident(chars[i - 1]))
            && {
                let j = if c == 'b' { i + 2 } else { i + 1 };
                let hashes = chars[j.min(chars.len())..]
                    .iter()
                    .take_while(|&&h| h == '#')
                    .count();
                chars.get(j + hashes) == Some(&'"')
            }
        {
            // raw string: r"…", r#"…"#, br"…"
            let j = if c == 'b' { i + 2 } else { i + 1 };
            let hashes = chars[j..].iter().take_while(|&&h| h == '#').count();
            out.push('"');
            i = j + hashes + 1;
            while i < chars.len() {
                if chars[i] == '"'
                    && chars[i + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|&&h| h == '#')
                        .count()
                        == hashes
                {
                    i += 1 + hashes;
                    break;
                }
                blank(&mut out, chars[i]);
                i += 1;
            }
            out.push('"');
        } else if c == '"' {
            out.push('"');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
                if let Some(&ch) = chars.get(i) {
                    blank(&mut out, ch);
                }
                i += 1;
            }
            out.push('"');
            i += 1;
        } else if c == '\'' {
            // char literal ('x', '\n', '\u{..}') or a lifetime ('a)
            let close = if next == Some('\\') {
                chars[(i + 3).min(chars.len())..]
                    .iter()
                    .take(10)
                    .position(|&ch| ch == '\'')
                    .map(|p| i + 3 + p)
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match close {
                Some(end) => {
                    out.push_str("' '");
                    i = end + 1;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// tests
// ---------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The real workspace root (xtask's parent directory).
    fn workspace_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask has a parent directory")
            .to_path_buf()
    }

    fn assert_clean(name: &str, problems: Result<Vec<String>>) {
        let problems = problems.unwrap_or_else(|e| panic!("tidy {name} could not run: {e:#}"));
        assert!(
            problems.is_empty(),
            "tidy {name} found {} problem(s):\n  - {}",
            problems.len(),
            problems.join("\n  - ")
        );
    }

    // ---- the rules, enforced on the real workspace by `cargo test` ----

    #[test]
    fn workspace_crate_roots_have_essays() {
        assert_clean("essays", check_essays(&workspace_root()));
    }

    #[test]
    fn workspace_edges_follow_layers() {
        assert_clean("edges", check_edges(&workspace_root()));
    }

    #[test]
    fn workspace_abi_has_no_io() {
        assert_clean("abi-io", check_abi_io(&workspace_root()));
    }

    #[test]
    fn workspace_has_no_forbidden_macros() {
        assert_clean("macros", check_forbidden_macros(&workspace_root()));
    }

    #[test]
    fn workspace_architecture_md_describes_every_layer() {
        assert_clean("architecture", check_architecture(&workspace_root()));
    }

    #[test]
    fn workspace_crates_package_alone() {
        assert_clean("crates", check_crates(&workspace_root()));
    }

    // ---- fixtures ----

    /// A temporary directory removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let dir = std::env::temp_dir().join(format!(
                "xtask-tidy-{tag}-{}-{}-{nanos}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&dir).expect("create tempdir");
            TempDir(dir)
        }

        fn write(&self, rel: &str, text: &str) {
            let path = self.0.join(rel);
            fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            fs::write(path, text).expect("write fixture");
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const GOOD_ESSAY: &str = "//! # fixture\n//!\n//! Owns nothing.\n//! Never does anything.\n";

    /// A two-member fake workspace: `agentos-abi` (lib) and `agentos-kernel` (lib + bin).
    fn fake_workspace(tag: &str, kernel_lib: &str) -> TempDir {
        let t = TempDir::new(tag);
        t.write(
            "Cargo.toml",
            "[workspace]\nresolver = \"2\"\nmembers = [\"abi\", \"kernel\"]\n",
        );
        t.write(
            "abi/Cargo.toml",
            "[package]\nname = \"agentos-abi\"\nversion = \"0.0.0\"\nedition = \"2021\"\n",
        );
        t.write(
            "abi/src/lib.rs",
            &format!("{GOOD_ESSAY}\npub fn f() {{}}\n"),
        );
        t.write(
            "kernel/Cargo.toml",
            "[package]\nname = \"agentos-kernel\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\
             [dependencies]\nagentos-abi = { path = \"../abi\" }\n",
        );
        t.write("kernel/src/lib.rs", kernel_lib);
        t.write(
            "kernel/src/bin/tool.rs",
            &format!("{GOOD_ESSAY}\nfn main() {{}}\n"),
        );
        t
    }

    #[test]
    fn essays_pass_on_a_good_fixture() {
        let t = fake_workspace("essay-ok", &format!("{GOOD_ESSAY}\npub fn g() {{}}\n"));
        assert_clean("essays", check_essays(&t.0));
        assert_clean("edges", check_edges(&t.0));
        assert_clean("abi-io", check_abi_io(&t.0));
        assert_clean("macros", check_forbidden_macros(&t.0));
    }

    #[test]
    fn a_crate_root_without_an_essay_fails() {
        let t = fake_workspace("essay-missing", "pub fn g() {}\n");
        let problems = check_essays(&t.0).expect("check runs");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("kernel/src/lib.rs"), "{problems:?}");
        assert!(problems[0].contains("must open with"), "{problems:?}");
    }

    #[test]
    fn a_bin_without_an_essay_fails() {
        let t = fake_workspace("essay-bin", GOOD_ESSAY);
        t.write("kernel/src/bin/other.rs", "fn main() {}\n");
        let problems = check_essays(&t.0).expect("check runs");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("other.rs"), "{problems:?}");
    }

    #[test]
    fn a_short_essay_fails() {
        assert!(essay_problem("x", "//! # title\n//!\n//! one line\n\nfn f() {}").is_some());
        assert!(essay_problem("x", "\n\n//! a\n//! b\n//! c\nfn f() {}").is_none());
        assert!(essay_problem("x", "#![allow(x)]\n//! a\n//! b\n//! c\n").is_some());
        assert!(essay_problem("x", "").is_some());
        // the essay is the *opening* block: later `//!` lines do not count
        assert!(essay_problem("x", "//! a\n//! b\nuse x;\n//! c\n").is_some());
    }

    #[test]
    fn macros_in_code_fail_but_not_in_comments_or_strings() {
        let todo = concat!("todo", "!()");
        let dbg = concat!("dbg", "!(x)");
        let bad = format!("fn f() {{\n    {todo}\n}}\nfn g() {{ let _ = {dbg}; }}\n");
        let problems = forbidden_macro_problems("f.rs", &bad);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("f.rs:2:"), "{problems:?}");
        assert!(problems[1].starts_with("f.rs:4:"), "{problems:?}");
        let fine = format!(
            "/// call {todo} later\n// {dbg}\nconst S: &str = \"{todo}\";\n/* {todo} */\n\
             macro_rules! my_{todo} {{ () => {{}} }}\n"
        );
        assert_eq!(
            forbidden_macro_problems("f.rs", &fine),
            Vec::<String>::new()
        );
    }

    #[test]
    fn macro_fixture_in_workspace_fails() {
        let lib = format!(
            "{GOOD_ESSAY}pub fn g() {{ {} }}\n",
            concat!("unimplemented", "!()")
        );
        let t = fake_workspace("macros", &lib);
        let problems = check_forbidden_macros(&t.0).expect("check runs");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("kernel/src/lib.rs:5"), "{problems:?}");
    }

    #[test]
    fn abi_io_is_detected_in_code_but_not_in_docs() {
        let bad = "use std::fs::File;\nuse std::{io::{Read}, net::TcpStream};\nasync fn f() { tokio::spawn(x); }\n";
        let problems = abi_source_problems("lib.rs", bad);
        assert_eq!(problems.len(), 3, "{problems:?}");
        let fine = "//! abi never uses tokio, std::fs or std::net.\nconst X: &str = \"tokio\";\nuse std::fmt;\nstruct Fsx; // std::fsx\n";
        assert_eq!(abi_source_problems("lib.rs", fine), Vec::<String>::new());
    }

    #[test]
    fn abi_io_fixture_fails_on_source_and_dependency() {
        let t = fake_workspace("abi-io", GOOD_ESSAY);
        t.write(
            "abi/src/io.rs",
            "pub fn r() -> Vec<u8> { std::fs::read(\"x\").unwrap_or_default() }\n",
        );
        let problems = check_abi_io(&t.0).expect("check runs");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("abi/src/io.rs:1"), "{problems:?}");

        let abi = json!({"name": "agentos-abi", "dependencies": [
            {"name": "tokio", "kind": null},
            {"name": "tokio-util", "kind": "build"},
            {"name": "tokio", "kind": "dev"},
            {"name": "serde", "kind": null},
        ]});
        let problems = abi_dependency_problems(&abi);
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    // ---- crates ----

    const META: &str = "description = \"d\"\nlicense = \"MIT\"\nreadme = \"README.md\"\n\
                        keywords = [\"k\"]\ncategories = [\"os\"]\n";
    const HOOK: &str = "#[cfg(doctest)]\n#[doc = include_str!(\"../README.md\")]\npub struct R;\n";
    const README: &str = "# k\n\n```text\nnot rust\n```\n\n```rust\nassert!(true);\n```\n";

    /// The fake workspace with a kernel crate that packages alone, given its manifest
    /// metadata, README (if any) and lib.rs tail.
    fn crate_fixture(tag: &str, meta: &str, readme: Option<&str>, lib_tail: &str) -> TempDir {
        let t = fake_workspace(tag, &format!("{GOOD_ESSAY}{lib_tail}"));
        t.write(
            "kernel/Cargo.toml",
            &format!(
                "[package]\nname = \"agentos-kernel\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\
                 {meta}[dependencies]\nagentos-abi = {{ path = \"../abi\" }}\n"
            ),
        );
        if let Some(text) = readme {
            t.write("kernel/README.md", text);
        }
        // abi is not under test here: publish = false takes it out of the check.
        t.write(
            "abi/Cargo.toml",
            "[package]\nname = \"agentos-abi\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n",
        );
        t
    }

    #[test]
    fn a_crate_with_metadata_readme_and_hook_passes() {
        let t = crate_fixture("crates-ok", META, Some(README), HOOK);
        assert_clean("crates", check_crates(&t.0));
    }

    #[test]
    fn missing_metadata_readme_example_or_hook_fails() {
        let t = crate_fixture(
            "crates-meta",
            "readme = \"README.md\"\n",
            Some(README),
            HOOK,
        );
        let problems = check_crates(&t.0).expect("check runs");
        assert_eq!(problems.len(), 4, "{problems:?}"); // description, license, keywords, categories

        let t = crate_fixture("crates-readme", META, None, HOOK);
        let problems = check_crates(&t.0).expect("check runs");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("is missing"), "{problems:?}");

        let ignored = "```rust,ignore\nx\n```\n```sh\ncargo\n```\n";
        let t = crate_fixture("crates-example", META, Some(ignored), HOOK);
        let problems = check_crates(&t.0).expect("check runs");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("no Rust example"), "{problems:?}");

        let t = crate_fixture("crates-hook", META, Some(README), "pub fn f() {}\n");
        let problems = check_crates(&t.0).expect("check runs");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("as a doctest"), "{problems:?}");
    }

    #[test]
    fn placeholder_urls_and_includes_outside_the_crate_fail() {
        let meta = format!("{META}repository = \"https://example.invalid/x\"\n");
        let tail = format!("{HOOK}const A: &str = include_str!(\"../../ARCHITECTURE.md\");\n");
        let t = crate_fixture("crates-url", &meta, Some(README), &tail);
        let problems = check_crates(&t.0).expect("check runs");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("placeholder"), "{problems:?}");
        assert!(problems[1].contains("outside the crate"), "{problems:?}");
    }

    #[test]
    fn rust_examples_and_included_paths_are_recognized() {
        assert!(has_rust_example("```\nlet x = 1;\n```"));
        assert!(has_rust_example("```rust,should_panic\npanic!()\n```"));
        assert!(!has_rust_example(
            "```rust,no_run\nx\n```\n```toml\n[x]\n```"
        ));
        // the closing fence of a text block is not an opening one
        assert!(!has_rust_example("```text\nx\n```\n"));
        assert_eq!(
            included_paths("let a = include_str!(\"x.html\"); // include_bytes!(\"y\")\n"),
            vec![(1, "x.html".to_owned())]
        );
        assert_eq!(
            relative_from(Path::new("/a/b/src"), Path::new("/a/b/README.md")),
            "../README.md"
        );
    }

    // ---- edges, with fake metadata ----

    fn meta(edges: &[(&str, &str, Option<&str>)]) -> Value {
        let names = [
            "agentos-abi",
            "agentos-kernel",
            "agentos-drivers",
            "agentos-net",
            "agentos-userland",
            "agentos-engine",
            "agentos-wasmlimit",
            "xtask",
            "agentos-tests",
        ];
        let pkgs: Vec<Value> = names
            .iter()
            .map(|n| {
                let deps: Vec<Value> = edges
                    .iter()
                    .filter(|(from, _, _)| from == n)
                    .map(|(_, to, kind)| json!({"name": to, "kind": kind, "path": "/x"}))
                    .chain([json!({"name": "serde", "kind": null})])
                    .collect();
                json!({"name": n, "manifest_path": format!("/ws/{n}/Cargo.toml"),
                       "dependencies": deps, "targets": []})
            })
            .collect();
        json!({ "packages": pkgs })
    }

    #[test]
    fn design_edges_are_allowed() {
        let m = meta(&[
            ("agentos-kernel", "agentos-abi", None),
            ("agentos-drivers", "agentos-abi", None),
            ("agentos-net", "agentos-abi", Some("build")),
            ("agentos-userland", "agentos-abi", None),
            ("agentos-userland", "agentos-kernel", Some("dev")),
            ("agentos-drivers", "agentos-kernel", Some("dev")),
            ("agentos-engine", "agentos-kernel", None),
            ("agentos-engine", "agentos-userland", None),
            ("xtask", "agentos-engine", None),
            ("agentos-tests", "agentos-net", None),
            ("agentos-abi", "agentos-kernel", Some("dev")),
            ("agentos-drivers", "agentos-wasmlimit", None),
            ("agentos-userland", "agentos-wasmlimit", None),
        ]);
        assert_eq!(edge_problems(&m), Vec::<String>::new());
    }

    #[test]
    fn the_wasm_limiter_is_a_leaf_the_kernel_does_not_use() {
        let m = meta(&[
            ("agentos-wasmlimit", "agentos-abi", None),
            ("agentos-kernel", "agentos-wasmlimit", None),
        ]);
        let problems = edge_problems(&m);
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn kernel_to_drivers_is_forbidden() {
        let m = meta(&[("agentos-kernel", "agentos-drivers", None)]);
        let problems = edge_problems(&m);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("kernel → drivers"), "{problems:?}");
        assert!(problems[0].contains("DESIGN.md \"Layers\""), "{problems:?}");
    }

    #[test]
    fn other_forbidden_edges() {
        for (from, to, kind) in [
            ("agentos-abi", "agentos-kernel", None),
            ("agentos-userland", "agentos-kernel", None),
            ("agentos-drivers", "agentos-net", Some("build")),
            ("agentos-engine", "agentos-tests", None),
            ("agentos-kernel", "xtask", Some("dev")),
            ("xtask", "agentos-tests", Some("dev")),
        ] {
            let problems = edge_problems(&meta(&[(from, to, kind)]));
            assert_eq!(problems.len(), 1, "{from} -> {to}: {problems:?}");
        }
    }

    #[test]
    fn unknown_workspace_crate_is_reported() {
        let mut m = meta(&[]);
        m["packages"]
            .as_array_mut()
            .expect("array")
            .push(json!({"name": "agentos-extra", "dependencies": []}));
        let problems = edge_problems(&m);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("agentos-extra"), "{problems:?}");
    }

    // ---- ARCHITECTURE.md ----

    fn arch_doc(skip: &str, skip_marker: &str) -> String {
        let mut doc = String::from("# Architecture\n\nIntro.\n\n");
        for c in ARCH_CRATES {
            if *c == skip {
                continue;
            }
            doc.push_str(&format!("## `agentos-{c}` — the {c} layer\n\nProse.\n\n"));
            if !(c == &"net" && skip_marker == "inv") {
                doc.push_str(&format!(
                    "- **Invariant:** {c} never does the wrong thing.\n"
                ));
            }
            if !(c == &"net" && skip_marker == "api") {
                doc.push_str(&format!("- **API boundary:** {c}'s public surface.\n"));
            }
            doc.push_str("\n### Details\n\nMore.\n\n");
        }
        doc
    }

    #[test]
    fn architecture_fixture_passes() {
        let t = TempDir::new("arch-ok");
        t.write("ARCHITECTURE.md", &arch_doc("", ""));
        assert_clean("architecture", check_architecture(&t.0));
        // other heading spellings
        let doc = "## abi\n**Invariant:** a\n**API boundary:** b\n\
                   ## Kernel/\n**Invariant:** a\n**API boundary:** b\n\
                   ## `drivers`\n**Invariant:** a\n**API boundary:** b\n\
                   # net: wires\n**Invariant:** a\n**API boundary:** b\n\
                   ## userland — programs\n**Invariant:** a\n**API boundary:** b\n\
                   ## agentos-engine\n**Invariant:** a\n**API boundary:** b\n\
                   ## wasmlimit\n**Invariant:** a\n**API boundary:** b\n";
        assert_eq!(architecture_problems(doc), Vec::<String>::new());
    }

    #[test]
    fn architecture_missing_file_fails() {
        let t = TempDir::new("arch-missing");
        let problems = check_architecture(&t.0).expect("check runs");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("missing"), "{problems:?}");
    }

    #[test]
    fn architecture_missing_section_or_marker_fails() {
        let problems = architecture_problems(&arch_doc("userland", ""));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("`userland`"), "{problems:?}");

        let problems = architecture_problems(&arch_doc("", "inv"));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("**Invariant:**"), "{problems:?}");

        let problems = architecture_problems(&arch_doc("", "api"));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("**API boundary:**"), "{problems:?}");

        // a marker belonging to the next section does not count for this one
        let doc = "## abi\n\n## kernel\n**Invariant:** a\n**API boundary:** b\n";
        let problems = architecture_problems(doc);
        assert!(
            problems.iter().any(|p| p.contains("section `abi`")),
            "{problems:?}"
        );
        // an empty marker does not count
        let doc = "## abi\n**Invariant:**\n**API boundary:** b\n";
        let problems = architecture_problems(doc);
        assert!(
            problems.iter().any(|p| p.contains("section `abi`")),
            "{problems:?}"
        );
        // a heading inside a code fence is not a section
        let doc = "```\n## abi\n**Invariant:** a\n**API boundary:** b\n```\n";
        let problems = architecture_problems(doc);
        assert!(problems.iter().any(|p| p.contains("`abi`")), "{problems:?}");
    }

    #[test]
    fn stripping_keeps_lines_and_handles_literals() {
        let src =
            "let a = '\"'; let q = '\\''; // c\nlet b = \"x // y\";\nfn f<'a>(x: &'a str) {}\n\
                   let r = r#\"raw \" todo\"#;\n/* a\n /* nested */ b */ let c = 1;\n";
        let out = strip_comments_and_strings(src);
        assert_eq!(out.lines().count(), src.lines().count());
        assert!(!out.contains("// c"));
        assert!(!out.contains("x // y"));
        assert!(!out.contains("todo"));
        assert!(!out.contains("nested"));
        assert!(out.contains("fn f<'a>(x: &'a str)"));
        assert!(out.contains("let c = 1;"));
    }
}
