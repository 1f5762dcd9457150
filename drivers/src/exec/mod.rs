//! The `exec` device: subprocesses in the project root, sandboxed, their output pulled one
//! event at a time so that every byte passes through a journaled device read (a replay
//! reproduces a run's exec results without running anything).
//!
//! # Scope and configuration
//!
//! A handle needs the scope key `root` (an absolute directory: the project root) and takes no
//! other key. The [`ExecConfig`] given at construction names the runtimes (by default `sh`;
//! `python` → `python3` and `node` when found on the child `PATH` at construction), the
//! per-channel output cap (1 MiB; bytes beyond it are counted in `dropped_*`, not kept), the
//! kill grace (2 s), a default timeout (none), the `PATH` children get, extra read-only binds
//! for the sandbox, and the [`Sandbox`] policy:
//!
//! - [`Sandbox::Auto`] (the default): bubblewrap when `bwrap` is on the configured `PATH`
//!   and a probe run of it (at construction) works; otherwise every `start` is refused with `{status:403, error:"no_sandbox"}`.
//! - [`Sandbox::Bwrap`]: bubblewrap or nothing — [`ExecDriver::new`] fails without it.
//! - [`Sandbox::None`]: **no isolation at all**. Commands run as the host user with the
//!   host's network and file system; only the environment is still scrubbed. For an operator
//!   who has isolated the whole host some other way (a throwaway VM or container).
//!
//! Under bubblewrap a command sees: the project root read-write at its real path; `/usr`,
//! `/bin`, `/sbin`, `/lib*` (as the host lays them out: bound or symlinked), `/etc` and
//! `/opt` read-only; a private `/tmp`, and empty tmpfs over `/home`, `/root` and `/run`;
//! fresh `/proc` and `/dev`; **no network** (`--unshare-net`: only a loopback of its own),
//! its own pid, ipc and uts namespaces, `--new-session` (no terminal to inject into),
//! `--die-with-parent`, and **no capabilities** (`--cap-drop ALL`: run as root, bubblewrap
//! would otherwise leave the command `CAP_SYS_ADMIN` and `CAP_MKNOD`, enough to mount the host
//! disk). Run as root (as in the dev container) no user namespace is needed; an unprivileged
//! host needs bubblewrap to be allowed user namespaces. The command still runs as the host
//! user (root, if the host runs as root), so the read-only system it sees includes what that
//! user can read in `/etc`. [`bwrap_args`] is the
//! exact argument list.
//!
//! The environment is scrubbed: children start from an empty environment plus an allowlist
//! — `PATH` (the configured one), `LANG` (the host's, else `C.UTF-8`) and the host's `LC_*`,
//! `TERM=dumb`, `HOME` and `TMPDIR` (the sandbox's private `/tmp`; without a sandbox the
//! host's temp directory). Nothing else crosses: no provider keys (`*_API_KEY`,
//! `OPENAI_*`, `ANTHROPIC_*`), no `AGENTOS_*`, no `PLURNK_*`.
//!
//! # Requests and replies
//!
//! Replies are `Value::Map`s whose first key is `status` (`U64`, HTTP-like); refusals carry
//! `error` and `message`. A malformed request is `Err(DriverError::BadRequest)`. Each process
//! belongs to the handle that started it; ids are per handle, from 1.
//!
//! - write `{op:"start", runtime:"sh"|"python"|"node", cwd:Str, command:Str,
//!   timeout_ms:U64|Unit}` → `{status:102, id}` at once, before any output. `cwd` is relative
//!   to the root (`""` or `"."` is the root; absent means the root); 403 `escape` when it
//!   leaves the root, 404 `not_found` when it is not a directory, 403 `no_sandbox` when the
//!   policy refuses, **501 `unknown_runtime`** for a runtime this host does not offer, 500
//!   `spawn_failed` when the process cannot be started.
//!   The start reply also carries `token`: an unguessable string that lets another handle
//!   of this driver with the same root read the process's events (below).
//! - read `{op:"attach", token}` → `{status:200, id}`: the process, under a new id of this
//!   handle, for `next` (and `stdin`/`stop`). Closing this handle does not kill an attached
//!   process; closing the handle that started it does. 404 for an unknown or finished
//!   process, 403 when this handle's root differs. This is how a reader process (the
//!   engine's stream pump) follows a command its loop started: kernel handles are per
//!   process.
//! - read `{op:"next", id}` → the next event, waiting for one:
//!   `{status:200, event:"stdout"|"stderr", data:Bytes}` (a chunk as it arrived);
//!   `{status:200, event:"exit", code:I64|Unit, signal:Str|Unit, timed_out, killed,
//!   dropped_stdout:U64, dropped_stderr:U64}` once both pipes are drained; then
//!   `{status:200, event:"closed"}` forever. 404 `not_found` for an id this handle never
//!   started. `next` is cancel-safe: events are buffered per process and one leaves the
//!   buffer only in the poll that returns it, so a reader killed mid-wait loses nothing.
//! - write `{op:"stdin", id, data:Str|Bytes}` → `{status:200}`; 409 `stdin_closed` once
//!   stdin is closed or the process is gone. `{op:"close_stdin", id}` → `{status:200}`.
//! - write `{op:"stop", id}` → `{status:200}`: SIGTERM to the command's tree, SIGKILL after
//!   the grace (`killed:true` in the exit event when that was needed). A timeout does the
//!   same and sets `timed_out:true`.
//!
//! Each process is the leader of its own process group; a stop signals the group and every
//! descendant found in `/proc` (so a child that started its own session is reached too).
//! Under bubblewrap the polite SIGTERM goes to the sandboxed tree, not to bubblewrap itself
//! (which would die and SIGKILL the sandbox at once), and a command killed by signal N is
//! reported by bubblewrap as `code: 128+N`. When the command exits, whatever is left of its
//! process group is SIGKILLed (no background job outlives it), and closing the handle (its
//! kernel process exited) SIGKILLs every process it started: no orphans. A process that
//! daemonizes out of its group and session without a sandbox is beyond reach; under
//! bubblewrap the pid namespace dies with the command. Everything is free.

mod proc;

pub use proc::signal_name;

use crate::fs::path::{canonical_root, contain, normalize_rel, PathError};
use crate::rt::{IoRuntime, RuntimeError};
use crate::status::{refuse, reply};
use agentos_abi::driver::BoxFuture;
use agentos_abi::{Driver, DriverError, DriverHandle, OpenCtx, Reply, Scope, Value};
use bytes::Bytes;
use parking_lot::Mutex;
use proc::{Chan, Control, Limits, Proc};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::io::AsyncWriteExt;

/// The device name.
pub const EXEC_DEVICE: &str = "exec";

/// The `PATH` children get by default: the system directories a sandbox can see.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How commands are isolated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Sandbox {
    /// Bubblewrap when it is installed and works, else refuse every start.
    #[default]
    Auto,
    /// Bubblewrap, required: the driver cannot be built without it.
    Bwrap,
    /// No isolation (the operator opted out; see the module docs for the danger).
    None,
}

/// A runtime: the program and the arguments that precede the command text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Runtime {
    /// The interpreter (an absolute path, resolved at construction).
    pub program: PathBuf,
    /// Arguments before the command (`-c` for `sh` and python, `-e` for node).
    pub args: Vec<String>,
}

/// How the `exec` device runs commands.
#[derive(Clone, Debug)]
pub struct ExecConfig {
    /// The runtimes a `start` may name.
    pub runtimes: BTreeMap<String, Runtime>,
    /// Bytes kept per channel (stdout, stderr) of one process; the rest is counted.
    pub output_cap: usize,
    /// Between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// The timeout of a `start` that gives none (`None`: no timeout).
    pub default_timeout: Option<Duration>,
    /// The isolation policy.
    pub sandbox: Sandbox,
    /// The `PATH` children get (and where runtimes and `bwrap` are looked up).
    pub path: String,
    /// Extra host directories the sandbox binds read-only at the same path (a toolchain
    /// under `$HOME`, say); missing ones are skipped.
    pub ro_binds: Vec<PathBuf>,
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig::detect(DEFAULT_PATH)
    }
}

/// The first executable called `name` on `path`.
pub fn which(name: &str, path: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    path.split(':').filter(|d| !d.is_empty()).find_map(|d| {
        let p = Path::new(d).join(name);
        let meta = std::fs::metadata(&p).ok()?;
        (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then_some(p)
    })
}

impl ExecConfig {
    /// The defaults, with runtimes looked up on `path` (which children also get): `sh`
    /// always (`/bin/sh` if not found), `python` and `node` when present.
    pub fn detect(path: &str) -> Self {
        let mut runtimes = BTreeMap::new();
        let rt = |program: PathBuf, flag: &str| Runtime {
            program,
            args: vec![flag.to_owned()],
        };
        runtimes.insert(
            "sh".to_owned(),
            rt(which("sh", path).unwrap_or_else(|| "/bin/sh".into()), "-c"),
        );
        if let Some(p) = which("python3", path) {
            runtimes.insert("python".to_owned(), rt(p, "-c"));
        }
        if let Some(p) = which("node", path) {
            runtimes.insert("node".to_owned(), rt(p, "-e"));
        }
        ExecConfig {
            runtimes,
            output_cap: 1 << 20,
            kill_grace: Duration::from_secs(2),
            default_timeout: None,
            sandbox: Sandbox::Auto,
            path: path.to_owned(),
            ro_binds: Vec::new(),
        }
    }

    /// This config with another sandbox policy.
    pub fn with_sandbox(mut self, sandbox: Sandbox) -> Self {
        self.sandbox = sandbox;
        self
    }

    /// This config with another kill grace.
    pub fn with_kill_grace(mut self, grace: Duration) -> Self {
        self.kill_grace = grace;
        self
    }

    /// This config with another per-channel output cap.
    pub fn with_output_cap(mut self, bytes: usize) -> Self {
        self.output_cap = bytes;
        self
    }

    /// This config with a default timeout.
    pub fn with_default_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.default_timeout = timeout;
        self
    }
}

/// The `exec` device could not be built.
#[derive(Debug, Error)]
pub enum ExecError {
    /// The driver runtime failed to start.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// [`Sandbox::Bwrap`] was required and bubblewrap is missing or does not work here.
    #[error("bubblewrap is required but unusable: {0}")]
    NoSandbox(String),
}

/// What the driver decided about isolation at construction.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Plan {
    Bwrap(PathBuf),
    Unsandboxed,
    Refuse(String),
}

/// Where `bwrap` is (on the children's `PATH`) and whether it works here (a probe run with
/// the flags `start` uses).
fn probe_bwrap(path: &str) -> Result<PathBuf, String> {
    let bwrap = which("bwrap", path).ok_or_else(|| format!("bwrap is not on PATH {path:?}"))?;
    let root = std::env::temp_dir();
    let out = std::process::Command::new(&bwrap)
        .args(bwrap_args(&root, &root, &[]))
        .arg("--")
        .arg(which("true", DEFAULT_PATH).unwrap_or_else(|| "/bin/true".into()))
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bwrap.display()))?;
    if out.status.success() {
        Ok(bwrap)
    } else {
        Err(format!(
            "{} does not work here: {}",
            bwrap.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The bubblewrap arguments (before `--` and the command) for a command in `cwd` with the
/// project `root` writable. See the module docs for what they grant.
pub fn bwrap_args(root: &Path, cwd: &Path, ro_binds: &[PathBuf]) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |xs: &[&dyn AsRef<std::ffi::OsStr>]| {
        a.extend(xs.iter().map(|x| x.as_ref().to_owned()));
    };
    push(&[
        &"--die-with-parent",
        &"--new-session",
        // Run as root, bubblewrap would leave the command every capability (mount, mknod a
        // block device and mount the host disk, ...): drop them all.
        &"--cap-drop",
        &"ALL",
        &"--unshare-net",
        &"--unshare-pid",
        &"--unshare-ipc",
        &"--unshare-uts",
        &"--ro-bind",
        &"/usr",
        &"/usr",
    ]);
    for d in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
        match std::fs::symlink_metadata(d) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(d) {
                    push(&[&"--symlink", &target, &d]);
                }
            }
            Ok(m) if m.is_dir() => push(&[&"--ro-bind", &d, &d]),
            _ => {}
        }
    }
    push(&[
        &"--ro-bind-try",
        &"/etc",
        &"/etc",
        &"--ro-bind-try",
        &"/opt",
        &"/opt",
        &"--proc",
        &"/proc",
        &"--dev",
        &"/dev",
        &"--tmpfs",
        &"/tmp",
        &"--tmpfs",
        &"/home",
        &"--tmpfs",
        &"/root",
        &"--tmpfs",
        &"/run",
    ]);
    for b in ro_binds {
        push(&[&"--ro-bind-try", b, b]);
    }
    push(&[&"--bind", &root, &root, &"--chdir", &cwd]);
    a
}

/// The `exec` device.
pub struct ExecDriver {
    name: String,
    shared: Arc<Shared>,
}

struct Shared {
    config: ExecConfig,
    plan: Plan,
    runtime: IoRuntime,
    /// Attach tokens → (the starting handle's root, the process), while it lives.
    tokens: Mutex<std::collections::HashMap<String, (PathBuf, std::sync::Weak<Proc>)>>,
}

/// An unguessable attach token (128 bits from the OS-seeded hasher, the clock and a counter).
fn new_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let half = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(n);
        h.write_u64(t);
        h.write_u64(salt);
        h.finish()
    };
    format!("{:016x}{:016x}", half(1), half(2))
}

impl ExecDriver {
    /// An `exec` device with `config`, on the current tokio runtime or else the process-wide
    /// driver runtime. Probes bubblewrap unless the policy is [`Sandbox::None`].
    pub fn new(config: ExecConfig) -> Result<Self, ExecError> {
        Self::on(IoRuntime::current_or_global()?, config)
    }

    /// An `exec` device whose processes are driven on `runtime`.
    pub fn on(runtime: IoRuntime, config: ExecConfig) -> Result<Self, ExecError> {
        let plan = match config.sandbox {
            Sandbox::None => Plan::Unsandboxed,
            Sandbox::Bwrap => Plan::Bwrap(probe_bwrap(&config.path).map_err(ExecError::NoSandbox)?),
            Sandbox::Auto => match probe_bwrap(&config.path) {
                Ok(b) => Plan::Bwrap(b),
                Err(why) => Plan::Refuse(why),
            },
        };
        Ok(ExecDriver {
            name: EXEC_DEVICE.into(),
            shared: Arc::new(Shared {
                config,
                plan,
                runtime,
                tokens: Mutex::new(std::collections::HashMap::new()),
            }),
        })
    }

    /// Register under another device name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Whether commands run under bubblewrap.
    pub fn sandboxed(&self) -> bool {
        matches!(self.shared.plan, Plan::Bwrap(_))
    }

    /// Why every start is refused, when the policy is [`Sandbox::Auto`] and bubblewrap is
    /// unusable.
    pub fn refusal(&self) -> Option<&str> {
        match &self.shared.plan {
            Plan::Refuse(why) => Some(why),
            _ => None,
        }
    }
}

impl Driver for ExecDriver {
    fn name(&self) -> &str {
        &self.name
    }

    fn open(&self, at: OpenCtx) -> BoxFuture<'static, Result<Arc<dyn DriverHandle>, DriverError>> {
        let name = self.name.clone();
        let bad = move |m: String| DriverError::BadRequest(format!("{name}: {m}"));
        if let Some((k, _)) = at.scope.iter().find(|(k, _)| *k != Scope::ROOT) {
            let e = bad(format!("unknown scope key \"{k}\""));
            return Box::pin(async move { Err(e) });
        }
        let Some(root) = at.scope.root().map(str::to_owned) else {
            let e = bad("an exec handle needs a `root` scope (the project directory)".into());
            return Box::pin(async move { Err(e) });
        };
        // Inline (one realpath): the kernel does not count an open as I/O in flight.
        let root = match canonical_root(&root) {
            Ok(r) => r,
            Err(m) => return Box::pin(async move { Err(bad(m)) }),
        };
        let h: Arc<dyn DriverHandle> = Arc::new(ExecHandle {
            st: Arc::new(HandleState {
                shared: self.shared.clone(),
                root,
                next_id: AtomicU64::new(1),
                procs: Mutex::new(BTreeMap::new()),
                attached: Mutex::new(std::collections::BTreeSet::new()),
                closed: AtomicBool::new(false),
            }),
        });
        Box::pin(async move { Ok(h) })
    }
}

struct ExecHandle {
    st: Arc<HandleState>,
}

struct HandleState {
    shared: Arc<Shared>,
    root: PathBuf,
    next_id: AtomicU64,
    procs: Mutex<BTreeMap<u64, Arc<Proc>>>,
    /// Processes this handle attached to (another handle started them: a close here does
    /// not kill them).
    attached: Mutex<std::collections::BTreeSet<u64>>,
    closed: AtomicBool,
}

fn ready(r: Result<Value, DriverError>) -> BoxFuture<'static, Result<Reply, DriverError>> {
    Box::pin(async move { r.map(Reply::free) })
}

fn bad(m: impl std::fmt::Display) -> DriverError {
    DriverError::BadRequest(format!("exec: {m}"))
}

/// A parsed `start`.
struct Start {
    runtime: String,
    cwd: String,
    command: String,
    timeout: Option<Duration>,
}

fn field_str(v: &Value, k: &str) -> Result<String, DriverError> {
    v.get(k)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| bad(format!("`{k}` must be a string")))
}

fn field_id(v: &Value) -> Result<u64, DriverError> {
    v.get("id")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("`id` must be an integer"))
}

impl Start {
    fn parse(v: &Value) -> Result<Start, DriverError> {
        let timeout = match v.get("timeout_ms") {
            None | Some(Value::Unit) => None,
            Some(t) => {
                Some(Duration::from_millis(t.as_u64().ok_or_else(|| {
                    bad("`timeout_ms` must be an integer or unit")
                })?))
            }
        };
        Ok(Start {
            runtime: field_str(v, "runtime")?,
            cwd: match v.get("cwd") {
                None | Some(Value::Unit) => String::new(),
                Some(_) => field_str(v, "cwd")?,
            },
            command: field_str(v, "command")?,
            timeout,
        })
    }
}

impl HandleState {
    fn proc(&self, id: u64) -> Option<Arc<Proc>> {
        self.procs.lock().get(&id).cloned()
    }

    fn not_found(id: u64) -> Value {
        refuse(404, "not_found", format!("no process {id} on this handle"))
    }

    /// Start a process (inside the I/O runtime: tokio's process reaper lives there).
    fn start(self: &Arc<Self>, s: Start) -> Value {
        let cfg = &self.shared.config;
        let Some(rt) = cfg.runtimes.get(&s.runtime) else {
            let known: Vec<&str> = cfg.runtimes.keys().map(String::as_str).collect();
            return refuse(
                501,
                "unknown_runtime",
                format!(
                    "runtime {:?} is not offered here (known: {})",
                    s.runtime,
                    known.join(", ")
                ),
            );
        };
        if let Plan::Refuse(why) = &self.shared.plan {
            return refuse(
                403,
                "no_sandbox",
                format!(
                    "commands need a sandbox and bubblewrap is unusable ({why}); install \
                     bubblewrap (apt-get install bubblewrap) or opt out with Sandbox::None \
                     (no isolation at all)"
                ),
            );
        }
        let cwd = match normalize_rel(&s.cwd).and_then(|rel| contain(&self.root, &rel)) {
            Ok(c) => c,
            Err(PathError::Io(m)) => return refuse(500, "spawn_failed", m),
            Err(e) => return refuse(403, "escape", format!("cwd {:?}: {e}", s.cwd)),
        };
        if !cwd.is_dir() {
            return refuse(
                404,
                "not_found",
                format!("cwd {:?} is not a directory", s.cwd),
            );
        }
        let (tmp, sandboxed) = match &self.shared.plan {
            Plan::Bwrap(_) => (PathBuf::from("/tmp"), true),
            _ => (std::env::temp_dir(), false),
        };
        let mut cmd = match &self.shared.plan {
            Plan::Bwrap(bwrap) => {
                let mut c = tokio::process::Command::new(bwrap);
                c.args(bwrap_args(&self.root, &cwd, &cfg.ro_binds))
                    .arg("--")
                    .arg(&rt.program);
                c
            }
            _ => tokio::process::Command::new(&rt.program),
        };
        cmd.args(&rt.args)
            .arg(&s.command)
            .current_dir(&cwd)
            .env_clear()
            .env("PATH", &cfg.path)
            .env(
                "LANG",
                std::env::var("LANG").unwrap_or_else(|_| "C.UTF-8".into()),
            )
            .envs(std::env::vars().filter(|(k, _)| k.starts_with("LC_")))
            .env("TERM", "dumb")
            .env("HOME", &tmp)
            .env("TMPDIR", &tmp)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return refuse(
                    500,
                    "spawn_failed",
                    format!("cannot start {}: {e}", rt.program.display()),
                )
            }
        };
        let Some(pid) = child.id() else {
            return refuse(500, "spawn_failed", "the process vanished at start");
        };
        let (out, err) = (child.stdout.take(), child.stderr.take());
        let (proc, control) = Proc::new(pid, sandboxed, child.stdin.take(), cfg.output_cap);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.procs.lock().insert(id, proc.clone());
        let token = new_token();
        {
            let mut tokens = self.shared.tokens.lock();
            tokens.retain(|_, (_, p)| p.strong_count() > 0);
            tokens.insert(token.clone(), (self.root.clone(), Arc::downgrade(&proc)));
        }
        let h = self.shared.runtime.handle();
        let readers = [
            h.spawn(pump_opt(proc.clone(), Chan::Out, out)),
            h.spawn(pump_opt(proc.clone(), Chan::Err, err)),
        ];
        let limits = Limits {
            timeout: s.timeout.or(cfg.default_timeout),
            grace: cfg.kill_grace,
        };
        h.spawn(proc::supervise(proc, child, readers, control, limits));
        // A close that raced this start: the process must not outlive its handle.
        if self.closed.load(Ordering::SeqCst) {
            self.kill_all();
        }
        reply(
            102,
            vec![("id", Value::U64(id)), ("token", Value::Str(token))],
        )
    }

    /// Makes another handle's process readable here (same root; the token is the proof).
    fn attach(&self, token: &str) -> Value {
        let found = self.shared.tokens.lock().get(token).cloned();
        let Some((root, proc)) = found else {
            return refuse(404, "not_found", "no process holds this token");
        };
        if root != self.root {
            return refuse(403, "escape", "the process runs under another project root");
        }
        let Some(proc) = proc.upgrade() else {
            return refuse(404, "not_found", "the process is gone");
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.procs.lock().insert(id, proc);
        self.attached.lock().insert(id);
        reply(200, vec![("id", Value::U64(id))])
    }

    fn kill_all(&self) {
        let attached = self.attached.lock().clone();
        for (_, p) in self
            .procs
            .lock()
            .iter()
            .filter(|(id, _)| !attached.contains(id))
        {
            let _ = p.control.send(Control::Kill);
            proc::signal_tree(p.pid, false, libc::SIGKILL);
        }
    }
}

async fn pump_opt<R: tokio::io::AsyncRead + Unpin>(proc: Arc<Proc>, chan: Chan, pipe: Option<R>) {
    if let Some(p) = pipe {
        proc::pump(proc, chan, p).await;
    }
}

impl DriverHandle for ExecHandle {
    fn read(&self, req: Value) -> BoxFuture<'static, Result<Reply, DriverError>> {
        match req.get("op").and_then(Value::as_str) {
            Some("next") => {
                let id = match field_id(&req) {
                    Ok(id) => id,
                    Err(e) => return ready(Err(e)),
                };
                match self.st.proc(id) {
                    // Polled right here by the kernel: no task between the queue and the
                    // reader, so nothing can be taken from the queue and then lost.
                    Some(p) => Box::pin(async move { Ok(Reply::free(p.next().await)) }),
                    None => ready(Ok(HandleState::not_found(id))),
                }
            }
            Some("attach") => {
                let token = match field_str(&req, "token") {
                    Ok(t) => t,
                    Err(e) => return ready(Err(e)),
                };
                ready(Ok(self.st.attach(&token)))
            }
            Some(op) => ready(Err(bad(format!(
                "unknown read op {op:?} (reads: next, attach)"
            )))),
            None => ready(Err(bad("a request is a map with a string `op`"))),
        }
    }

    fn write(&self, data: Value) -> BoxFuture<'static, Result<Reply, DriverError>> {
        let st = self.st.clone();
        let op = data.get("op").and_then(Value::as_str).map(str::to_owned);
        match op.as_deref() {
            Some("start") => {
                let s = match Start::parse(&data) {
                    Ok(s) => s,
                    Err(e) => return ready(Err(e)),
                };
                let task = self.st.shared.runtime.start(async move { st.start(s) });
                Box::pin(async move {
                    task.await
                        .map(Reply::free)
                        .map_err(|e| DriverError::Failed(format!("exec start task {e}")))
                })
            }
            Some(op @ ("stdin" | "close_stdin" | "stop")) => {
                let id = match field_id(&data) {
                    Ok(id) => id,
                    Err(e) => return ready(Err(e)),
                };
                let Some(p) = st.proc(id) else {
                    return ready(Ok(HandleState::not_found(id)));
                };
                match op {
                    "stop" => {
                        let _ = p.control.send(Control::Stop);
                        ready(Ok(reply(200, vec![])))
                    }
                    "close_stdin" => {
                        let task = self.st.shared.runtime.start(async move {
                            p.stdin.lock().await.take();
                        });
                        Box::pin(async move {
                            task.await
                                .map(|()| Reply::free(reply(200, vec![])))
                                .map_err(|e| DriverError::Failed(format!("exec stdin task {e}")))
                        })
                    }
                    _ => {
                        let bytes = match data.get("data") {
                            Some(Value::Str(s)) => Bytes::from(s.clone().into_bytes()),
                            Some(Value::Bytes(b)) => b.clone(),
                            _ => return ready(Err(bad("`data` must be a string or bytes"))),
                        };
                        let task = self.st.shared.runtime.start(async move {
                            let mut guard = p.stdin.lock().await;
                            let Some(w) = guard.as_mut() else {
                                return refuse(409, "stdin_closed", "stdin is closed");
                            };
                            match async {
                                w.write_all(&bytes).await?;
                                w.flush().await
                            }
                            .await
                            {
                                Ok(()) => reply(200, vec![]),
                                Err(e) => {
                                    guard.take();
                                    refuse(409, "stdin_closed", format!("stdin: {e}"))
                                }
                            }
                        });
                        Box::pin(async move {
                            task.await
                                .map(Reply::free)
                                .map_err(|e| DriverError::Failed(format!("exec stdin task {e}")))
                        })
                    }
                }
            }
            Some(op) => ready(Err(bad(format!(
                "unknown write op {op:?} (writes: start, stdin, close_stdin, stop)"
            )))),
            None => ready(Err(bad("a request is a map with a string `op`"))),
        }
    }

    fn close(&self) {
        self.st.closed.store(true, Ordering::SeqCst);
        self.st.kill_all();
    }
}
