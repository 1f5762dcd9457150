//! Shared helpers for the kernel scenarios: kernels, init wrappers, shared logs, trace queries
//! and an in-test metered driver.

#![allow(dead_code)]

use agentos_abi::driver::BoxFuture;
use agentos_abi::*;
use agentos_kernel::*;
use std::future::Future;
use std::sync::{Arc, Mutex};

/// A log shared between the host and the processes of one test.
pub type Log<T> = Arc<Mutex<Vec<T>>>;

/// A fresh, empty shared log.
pub fn log<T>() -> Log<T> {
    Arc::new(Mutex::new(Vec::new()))
}

/// Append to a shared log.
pub fn push<T>(log: &Log<T>, v: T) {
    log.lock().unwrap().push(v);
}

/// A snapshot of a shared log.
pub fn snapshot<T: Clone>(log: &Log<T>) -> Vec<T> {
    log.lock().unwrap().clone()
}

/// A deterministic kernel (virtual clock) with the given seed.
pub fn det(seed: u64) -> Kernel {
    Kernel::new(KernelConfig::deterministic(seed))
}

/// A deterministic kernel whose event ring keeps `cap` events.
pub fn det_with_log(seed: u64, cap: usize) -> Kernel {
    Kernel::new(KernelConfig {
        log_cap: cap,
        ..KernelConfig::deterministic(seed)
    })
}

/// An init image: takes its `Boot` grant off the mailbox first, then runs `f(sys, boot)`.
pub fn init<F, Fut>(f: F) -> KImage
where
    F: Fn(Sys, SysMsg) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ProcResult> + Send + 'static,
{
    let f = Arc::new(f);
    Image::new("init", move |sys: Sys, _args| {
        let f = f.clone();
        async move {
            let boot = sys.recv().await;
            let grant = match boot.body {
                Body::Sys(s @ SysMsg::Boot { .. }) => s,
                other => panic!("first message of a booted process must be Boot, got {other:?}"),
            };
            f(sys, grant).await
        }
    })
}

/// A plain image from a closure.
pub fn image<F, Fut>(name: &str, f: F) -> KImage
where
    F: Fn(Sys, Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ProcResult> + Send + 'static,
{
    Image::new(name, f)
}

/// Boot `image` as init with default options in `k` and run until it exits.
pub fn boot_and_wait(k: &Kernel, image: KImage) -> ExitReason {
    boot_with_and_wait(k, image, BootOpts::default())
}

/// Boot `image` as init with `opts` in `k` and run until it exits.
pub fn boot_with_and_wait(k: &Kernel, image: KImage, opts: BootOpts) -> ExitReason {
    let pid = k.boot(image, opts).expect("boot");
    k.wait_exit(pid).expect("init exits")
}

/// A fresh deterministic kernel (seed 1), boot `image` as init and run until it exits.
pub fn run_init(image: KImage) -> (Kernel, ExitReason) {
    let k = det(1);
    let r = boot_and_wait(&k, image);
    (k, r)
}

/// Every event kind still in the ring, oldest first.
pub fn events(k: &Kernel) -> Vec<Event> {
    k.trace(usize::MAX)
}

/// `(pid, reason)` of every Exit event in the ring, in order.
pub fn exits(k: &Kernel) -> Vec<(Pid, ExitReason)> {
    events(k)
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Exit { pid, reason } => Some((pid, reason)),
            _ => None,
        })
        .collect()
}

/// The recorded exit reason of `pid` in the trace.
pub fn exit_of(k: &Kernel, pid: Pid) -> Option<ExitReason> {
    exits(k)
        .into_iter()
        .find(|(p, _)| *p == pid)
        .map(|(_, r)| r)
}

/// The kernel-clock time of `pid`'s Exit event.
pub fn exit_ts(k: &Kernel, pid: Pid) -> Option<u64> {
    events(k).into_iter().find_map(|e| match e.kind {
        EventKind::Exit { pid: p, .. } if p == pid => Some(e.ts),
        _ => None,
    })
}

/// Fault events for `pid`, their error strings.
pub fn faults_of(k: &Kernel, pid: Pid) -> Vec<String> {
    events(k)
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Fault { pid: p, error } if p == pid => Some(error),
            _ => None,
        })
        .collect()
}

/// The `ps` row of `pid`, if alive.
pub fn ps_row(k: &Kernel, pid: Pid) -> Option<ProcInfo> {
    k.ps().into_iter().find(|r| r.pid == pid)
}

/// A process that parks in `recv` until it gets a `Term` (then exits normally); other
/// messages are ignored.
pub fn until_term() -> KImage {
    image("until-term", |sys: Sys, _| async move {
        loop {
            let m = sys.recv().await;
            if let Some(SysMsg::Term { .. }) = m.sys() {
                return Ok(());
            }
        }
    })
}

/// A process that exits at once with the reason encoded in its args: `Unit` → returns `Ok`,
/// `Str("fault:..")` → returns `Err(Fault)`, `Str(kind)` → `exit(Other{kind})`.
pub fn exits_with() -> KImage {
    image("exits-with", |sys: Sys, args| async move {
        match args {
            Value::Str(s) if s.starts_with("fault:") => Err(ExitReason::fault(&s[6..])),
            Value::Str(kind) => match sys.exit(ExitReason::Other { kind }).await {},
            _ => Ok(()),
        }
    })
}

/// A value body.
pub fn val(v: impl Into<Value>) -> Body {
    Body::Value(v.into())
}

/// The u64 in a value body.
pub fn body_u64(b: &Body) -> Option<u64> {
    b.as_value().and_then(Value::as_u64)
}

/// Default send options.
pub fn no_opts() -> SendOpts {
    SendOpts::default()
}

/// Send options carrying `caps`.
pub fn with_caps(caps: Vec<CapRef>) -> SendOpts {
    SendOpts {
        caps,
        ..SendOpts::default()
    }
}

/// A metered "llm" driver: a read with `U64(n)` costs `n` tokens, any other request costs the
/// driver's default `tokens`. Every reply echoes the token count charged.
pub struct TokenDriver {
    /// Registered name.
    pub name: &'static str,
    /// Default tokens per read.
    pub tokens: u64,
    /// Handles closed so far (the kernel closes them when the process exits).
    pub closed: Arc<std::sync::atomic::AtomicUsize>,
}

impl TokenDriver {
    /// An `llm` driver charging `tokens` per read by default.
    pub fn llm(tokens: u64) -> Arc<Self> {
        Arc::new(TokenDriver {
            name: "llm",
            tokens,
            closed: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        })
    }
}

struct TokenHandle {
    tokens: u64,
    closed: Arc<std::sync::atomic::AtomicUsize>,
}

impl Driver for TokenDriver {
    fn name(&self) -> &str {
        self.name
    }
    fn open(
        &self,
        _at: agentos_abi::OpenCtx,
    ) -> BoxFuture<'static, Result<Arc<dyn DriverHandle>, DriverError>> {
        let h: Arc<dyn DriverHandle> = Arc::new(TokenHandle {
            tokens: self.tokens,
            closed: self.closed.clone(),
        });
        Box::pin(async move { Ok(h) })
    }
}

impl DriverHandle for TokenHandle {
    fn read(&self, req: Value) -> BoxFuture<'static, Result<Reply, DriverError>> {
        let tokens = req.as_u64().unwrap_or(self.tokens);
        Box::pin(async move {
            Ok(Reply {
                value: Value::U64(tokens),
                cost: Cost {
                    tokens,
                    ..Cost::default()
                },
            })
        })
    }
    fn close(&self) {
        self.closed
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// splitmix64 step, for test-side pseudo-randomness driven by a seed.
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The spawn cap in a `Boot` grant.
pub fn boot_spawn(boot: &SysMsg) -> CapRef {
    match boot {
        SysMsg::Boot { spawn, .. } => *spawn,
        other => panic!("not a boot grant: {other:?}"),
    }
}

/// A spawn-only cap derived from the boot grant, to hand to a child that must spawn.
pub fn child_spawn(sys: &Sys, boot: &SysMsg) -> CapRef {
    sys.derive(boot_spawn(boot), Right::Spawn.into())
        .expect("derive a spawn cap")
}

/// Spawn options that hand `caps` to the child (and nothing else).
pub fn giving(caps: Vec<CapRef>) -> SpawnOpts {
    SpawnOpts {
        caps,
        ..SpawnOpts::default()
    }
}
