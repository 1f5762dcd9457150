//! # The team example — a supervised team of agents, a process tree, crash recovery
//!
//! `cargo run --release -p agentos-userland --example team` runs a supervised team of agents (see `team.rs`: a conversation agent
//! and ReAct agents with tools under a supervisor with a token budget), on a scripted model by
//! default, an OpenAI-compatible endpoint when `AGENTOS_LLM_BASE_URL` is set, or the local
//! model with `--local` (SmolLM2 on llama-server, prepared on first use like `agentos llm
//! prepare` and started on a free loopback port); it prints a live process table, the answers, usage and metrics.
//!
//! `… --example team -- kernel` boots a kernel in deterministic mode (virtual clock, seeded RNG) and runs
//! a process tree that exercises the runtime's guarantees in one go: a linked worker that
//! crashes (its parent gets a `down`), a monitored spender killed by its token quota, a client
//! whose delegated capability is revoked mid-conversation, and a service that is asked to stop
//! with a catchable `term`. It prints `ps` at a checkpoint, the tail of the event trace, and the
//! metrics (also as Prometheus text). Run it twice: the trace hash is the same every time.
//!
//! `… --example team -- durable` shows crash recovery instead: a child process records a journaled
//! run into a file store and is killed with SIGKILL mid-run; a new kernel recovers from the
//! store (the torn tail truncated), replays the recorded prefix without touching the device,
//! finishes live, and ends with the same result as an uninterrupted run.

mod questions;
mod team;

use agentos_abi::driver::BoxFuture;
use agentos_abi::{
    Body, Cost, Driver, DriverError, DriverHandle, Event, EventKind, ExitReason, Image, Quota,
    Reply, Right, SendError, SendOpts, SpawnOpts, SysMsg, Syscalls, Value,
};
use agentos_kernel::journal::{FileStore, FsyncPolicy};
use agentos_kernel::{BootOpts, KImage, Kernel, KernelConfig, ProcInfo, Sys};
use std::sync::Arc;

/// A toy device: echoes the request back and costs 25 tokens per read (it stands in for an
/// LLM so the demo needs no network).
struct Echo;
struct EchoHandle;

impl Driver for Echo {
    fn name(&self) -> &str {
        "echo"
    }
    fn open(
        &self,
        _at: agentos_abi::OpenCtx,
    ) -> BoxFuture<'static, Result<Arc<dyn DriverHandle>, DriverError>> {
        Box::pin(async { Ok(Arc::new(EchoHandle) as Arc<dyn DriverHandle>) })
    }
}

impl DriverHandle for EchoHandle {
    fn read(&self, req: Value) -> BoxFuture<'static, Result<Reply, DriverError>> {
        Box::pin(async move {
            Ok(Reply {
                value: req,
                cost: Cost {
                    tokens: 25,
                    ..Cost::FREE
                },
            })
        })
    }
}

fn crasher() -> KImage {
    Image::new("crasher", |sys: Sys, _| async move {
        sys.sleep(5).await;
        panic!("worker hit a bug");
    })
}

fn spender() -> KImage {
    Image::new("spender", |sys: Sys, _| async move {
        // The echo device cap arrives from the parent, transferred with a message.
        let m = sys.recv().await;
        let dev = *m
            .caps
            .first()
            .ok_or_else(|| ExitReason::fault("no device cap"))?;
        let h = sys.open(dev).await?;
        for i in 0u64.. {
            sys.read(h, Value::U64(i)).await?;
            sys.sleep(1).await;
        }
        Ok(())
    })
}

fn service() -> KImage {
    Image::new("service", |sys: Sys, _| async move {
        sys.register("greeter")?;
        let mut served = 0u64;
        loop {
            let m = sys.recv().await;
            match m.sys() {
                Some(SysMsg::Term { .. }) => {
                    sys.log(
                        agentos_abi::LogLevel::Info,
                        &format!("served {served}, stopping"),
                    );
                    return Ok(());
                }
                _ => served += 1,
            }
        }
    })
}

fn client() -> KImage {
    Image::new("client", |sys: Sys, _| async move {
        let m = sys.recv().await;
        let to = *m
            .caps
            .first()
            .ok_or_else(|| ExitReason::fault("no service cap"))?;
        loop {
            match sys
                .send(to, Body::Value("hello".into()), SendOpts::default())
                .await
            {
                Ok(()) => sys.sleep(2).await,
                Err(SendError::Refused(_, e)) => {
                    sys.log(agentos_abi::LogLevel::Warn, &format!("send refused: {e}"));
                    return Err(ExitReason::Other {
                        kind: "revoked".into(),
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
    })
}

fn init() -> KImage {
    Image::new("init", |sys: Sys, _| async move {
        let boot = sys.recv().await;
        let echo = boot
            .sys()
            .and_then(|b| b.device("echo"))
            .ok_or_else(|| ExitReason::fault("no echo device"))?;

        let svc = sys.spawn(service(), SpawnOpts::default()).await?;
        let worker = sys
            .spawn(
                crasher(),
                SpawnOpts {
                    link: true,
                    ..SpawnOpts::default()
                },
            )
            .await?;
        let quota = Quota {
            tokens: Some(100),
            ..Quota::default()
        };
        let spend = sys
            .spawn(
                spender(),
                SpawnOpts {
                    quota,
                    ..SpawnOpts::default()
                },
            )
            .await?;
        sys.monitor(spend.cap).await?;
        sys.send(
            spend.cap,
            Body::Empty,
            SendOpts {
                caps: vec![echo],
                ..SendOpts::default()
            },
        )
        .await?;

        // Delegate a send-only cap to the service, then revoke it later.
        let cli = sys.spawn(client(), SpawnOpts::default()).await?;
        let delegated = sys.derive(svc.cap, Right::Send.into())?;
        let mine = sys.derive(delegated, Right::Send.into())?;
        sys.send(
            cli.cap,
            Body::Empty,
            SendOpts {
                caps: vec![mine],
                ..SendOpts::default()
            },
        )
        .await?;
        sys.monitor(cli.cap).await?;

        // Let the tree run for a while (the host prints `ps` at t=8ms), then revoke.
        sys.sleep(10).await;
        sys.revoke(delegated)?; // transitively kills the client's derived cap
        let mut downs = 0;
        while downs < 3 {
            if let Some(SysMsg::Down { pid, reason }) = sys.recv().await.sys() {
                sys.log(
                    agentos_abi::LogLevel::Info,
                    &format!("down {pid}: {reason}"),
                );
                downs += 1;
            }
        }
        sys.term(svc.cap).await?;
        let r = sys.waitpid(svc.cap).await?;
        let _ = (worker, r);
        Ok(())
    })
}

fn print_ps(rows: &[ProcInfo]) {
    println!(
        "{:>4} {:>6}  {:<10} {:<9} {:>4} {:>8} {:>9} {:>5}",
        "PID", "PARENT", "NAME", "STATUS", "MBOX", "TOKENS", "TOK-LEFT", "CAPS"
    );
    for r in rows {
        let left = r.budget.tokens.map_or("∞".to_owned(), |t| t.to_string());
        println!(
            "{:>4} {:>6}  {:<10} {:<9} {:>4} {:>8} {:>9} {:>5}",
            r.pid.0,
            r.parent.map_or("-".to_owned(), |p| p.0.to_string()),
            r.name,
            if r.stopped { "stopped" } else { r.status },
            r.mailbox,
            r.usage.tokens,
            left,
            r.caps
        );
    }
}

fn describe(e: &Event) -> String {
    let what = match &e.kind {
        EventKind::Boot => "boot".to_owned(),
        EventKind::Spawn { pid, parent, name } => {
            format!(
                "spawn  {pid} {name} (parent {})",
                parent.map_or("-".into(), |p| p.to_string())
            )
        }
        EventKind::Exit { pid, reason } => format!("exit   {pid}: {reason}"),
        EventKind::Send { from, to } => format!("send   {from} -> {to}"),
        EventKind::Recv { pid } => format!("recv   {pid}"),
        EventKind::Sched { pid } => format!("sched  {pid}"),
        EventKind::Signal { pid, sig } => format!("signal {pid} {sig:?}"),
        EventKind::Charge { pid, meter, n } => format!("charge {pid} {} {n}", meter.name()),
        EventKind::Fault { pid, error } => format!("fault  {pid}: {error}"),
        EventKind::Shutdown { reason } => format!("shutdown: {reason}"),
    };
    format!("#{:<5} t={:>3}ms  {what}", e.seq, e.ts)
}

/// The durable demo's device: `read(U64(i))` answers a digest of `i`, slowly when asked to
/// (so the recording child can be killed mid-run), and counts live calls.
struct Oracle {
    delay_us: u64,
    calls: Arc<std::sync::atomic::AtomicU64>,
}
struct OracleHandle(u64, Arc<std::sync::atomic::AtomicU64>);

impl Driver for Oracle {
    fn name(&self) -> &str {
        "oracle"
    }
    fn open(
        &self,
        _at: agentos_abi::OpenCtx,
    ) -> BoxFuture<'static, Result<Arc<dyn DriverHandle>, DriverError>> {
        let h: Arc<dyn DriverHandle> = Arc::new(OracleHandle(self.delay_us, self.calls.clone()));
        Box::pin(async move { Ok(h) })
    }
}

impl DriverHandle for OracleHandle {
    fn read(&self, req: Value) -> BoxFuture<'static, Result<Reply, DriverError>> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.0 > 0 {
            std::thread::sleep(std::time::Duration::from_micros(self.0));
        }
        let i = req.as_u64().unwrap_or(0);
        let v = i.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) ^ 0x5eed;
        Box::pin(async move {
            Ok(Reply {
                value: Value::U64(v),
                cost: Cost {
                    tokens: 1,
                    ..Cost::FREE
                },
            })
        })
    }
}

const DURABLE_OPS: u64 = 20_000;

/// The journaled workload: DURABLE_OPS device reads folded into a digest, reported to `out`.
fn durable_worker(out: Arc<std::sync::Mutex<Option<u64>>>) -> KImage {
    Image::new("worker", move |sys: Sys, _| {
        let out = out.clone();
        async move {
            let boot = sys.recv().await;
            let dev = boot
                .sys()
                .and_then(|b| b.device("oracle"))
                .ok_or_else(|| ExitReason::fault("no device"))?;
            let h = sys.open(dev).await?;
            let mut acc = 0u64;
            for i in 0..DURABLE_OPS {
                let v = sys.read(h, Value::U64(i)).await?.as_u64().unwrap_or(0);
                acc = acc.rotate_left(5) ^ v;
            }
            if let Ok(mut o) = out.lock() {
                *o = Some(acc);
            }
            Ok(())
        }
    })
}

fn durable_kernel_run(k: &Kernel, delay_us: u64) -> anyhow::Result<(u64, u64)> {
    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    k.register_driver(Arc::new(Oracle {
        delay_us,
        calls: calls.clone(),
    }))?;
    let out = Arc::new(std::sync::Mutex::new(None));
    let pid = k.boot(
        durable_worker(out.clone()),
        BootOpts {
            grant: vec!["oracle".into()],
            ..BootOpts::default()
        },
    )?;
    let r = k.wait_exit(pid)?;
    anyhow::ensure!(r.is_normal(), "worker exited {r}");
    let v = out
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .ok_or_else(|| anyhow::anyhow!("no result"))?;
    Ok((v, calls.load(std::sync::atomic::Ordering::Relaxed)))
}

fn durable_child(path: &str) -> anyhow::Result<()> {
    let (fs, _) = FileStore::open(path, FsyncPolicy::default())?;
    let k = Kernel::record(KernelConfig::deterministic(1), Box::new(fs));
    durable_kernel_run(&k, 100)?;
    Ok(())
}

fn durable() -> anyhow::Result<()> {
    let path = std::env::temp_dir().join(format!("agentos-team-journal-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    println!(
        "== record: a child process journals {DURABLE_OPS} device reads into {} ==",
        path.display()
    );
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["durable-child", &path.to_string_lossy()])
        .spawn()?;
    let start = std::time::Instant::now();
    while std::fs::metadata(&path).map_or(0, |m| m.len()) < 400_000 {
        anyhow::ensure!(
            child.try_wait()?.is_none(),
            "the child finished before it could be killed"
        );
        anyhow::ensure!(
            start.elapsed().as_secs() < 60,
            "the child never wrote its journal"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill()?; // SIGKILL: no flush, no destructor, mid-write
    child.wait()?;
    let on_disk = std::fs::metadata(&path)?.len();
    println!(
        "killed it with SIGKILL after {:.0?}; {on_disk} bytes on disk",
        start.elapsed()
    );

    let (fs, report) = FileStore::open(&path, FsyncPolicy::default())?;
    println!(
        "\n== recover: {} complete records kept, torn tail of {} bytes truncated ==",
        report.records, report.truncated_bytes
    );
    let k = Kernel::recover_from(KernelConfig::deterministic(1), Box::new(fs))?;
    let (recovered, live_calls) = durable_kernel_run(&k, 0)?;
    k.flush_journal()?;
    let stats = k.journal_stats();
    drop(k);
    println!(
        "replayed {} ops from the journal (device untouched), ran {live_calls} live",
        DURABLE_OPS - live_calls
    );
    if let Some(s) = stats {
        println!(
            "the store now holds {} records ({} fsyncs in recovery)",
            s.records, s.fsyncs
        );
    }
    let (reference, _) = durable_kernel_run(&Kernel::new(KernelConfig::deterministic(1)), 0)?;
    println!("\nrecovered result     {recovered:016x}\nuninterrupted result {reference:016x}");
    let _ = std::fs::remove_file(&path);
    anyhow::ensure!(
        recovered == reference,
        "recovery diverged from the uninterrupted run"
    );
    println!("same result: nothing committed was lost, nothing ran twice");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--help" | "-h") => {
            println!("team [--fast] [--local]  a supervised team of agents (scripted model;");
            println!(
                "                         AGENTOS_LLM_BASE_URL: an OpenAI-compatible endpoint;"
            );
            println!(
                "                         --local: SmolLM2 on llama-server, prepared on first use;"
            );
            println!("                         --fast: no pacing of the scripted model)");
            println!("team kernel              a small process tree on a deterministic kernel");
            println!("team durable             record a run, SIGKILL it mid-flight, recover it");
            return Ok(());
        }
        Some("durable") => return durable(),
        Some("durable-child") => return durable_child(args.get(1).map_or("", String::as_str)),
        Some("kernel") => {}
        _ => return team::run(team::TeamOpts::parse(&args)?),
    }
    // A panicking process is part of the show; keep its message out of the way of the output.
    std::panic::set_hook(Box::new(|_| {}));
    let k = Kernel::new(KernelConfig::deterministic(42));
    k.register_driver(Arc::new(Echo))?;
    let pid = k.boot(
        init(),
        BootOpts {
            quota: Quota {
                tokens: Some(1_000),
                ..Quota::default()
            },
            grant: vec!["echo".into()],
            ..BootOpts::default()
        },
    )?;

    k.run_for(8); // virtual time: exactly 8 ms of the tree's life
    println!("== ps at t={}ms ==", k.now());
    print_ps(&k.ps());
    let reason = k.wait_exit(pid)?;

    println!("\n== init exited: {reason} at t={}ms ==", k.now());
    let trace = k.trace(4096);
    println!("\n== audit trail (lifecycle, signals, charges, faults) ==");
    for e in trace.iter().filter(|e| {
        !matches!(
            e.kind,
            EventKind::Send { .. } | EventKind::Recv { .. } | EventKind::Sched { .. }
        )
    }) {
        println!("{}", describe(e));
    }
    println!("\n== event trace tail (last 12) ==");
    for e in &trace[trace.len().saturating_sub(12)..] {
        println!("{}", describe(e));
    }
    let m = k.metrics();
    println!("\n== metrics ==");
    println!(
        "processes={} events={} spawns={} exits={} sends={} recvs={} faults={} signals={}",
        m.processes, m.events, m.spawns, m.exits, m.sends, m.recvs, m.faults, m.signals
    );
    println!(
        "exits by reason: {}",
        m.exits_by_reason
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "charged: {}",
        m.charged
            .iter()
            .map(|(k, v)| format!("{}={v}", k.name()))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "trace hash: {:016x} (deterministic: same on every run)",
        k.trace_hash()
    );
    println!("\n== prometheus ==");
    print!("{}", k.metrics_text());
    Ok(())
}
