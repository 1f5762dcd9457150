//! The kernel workloads of `shared/BENCHMARKS.md`: spawn, spawn_burst, pingpong, fanin, ring,
//! caps and idle_mem.
//!
//! Each runs the kernel in its default multi-threaded mode (one scheduler thread per core) and
//! times only the measured phase, from inside the process that drives it (after boot, before
//! shutdown). The process programs are ordinary syscall-surface code: every message really
//! goes through `send`/`recv` with capability checks, accounts and the event log on.

use agentos_abi::{
    Body, ExitReason, Image, Message, Pid, Quota, Resource, Right, Rights, SendOpts, SpawnOpts,
    SysMsg, Syscalls, Value,
};
use agentos_kernel::captable::CapTable;
use agentos_kernel::{BootOpts, KImage, Kernel, KernelConfig, Mode, Sys};
use anyhow::{anyhow, Context as _, Result};
use serde_json::{json, Value as Json};
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The kernel workloads, by BENCHMARKS.md key.
pub fn workloads() -> Vec<(&'static str, fn(bool) -> anyhow::Result<serde_json::Value>)> {
    vec![
        ("spawn", spawn as fn(bool) -> Result<Json>),
        ("spawn_burst", spawn_burst),
        ("pingpong", pingpong),
        ("fanin", fanin),
        ("ring", ring),
        ("caps", caps),
        ("recall", recall),
        ("journal", journal),
        ("seal", seal),
        ("remote", crate::bench_remote::remote),
        ("idle_mem", idle_mem),
    ]
}

fn scale(n: u64, quick: bool) -> u64 {
    if quick {
        (n / 10).max(1)
    } else {
        n
    }
}

fn kernel() -> (Kernel, String) {
    let cfg = KernelConfig::default();
    let mode = match cfg.mode {
        Mode::Threads(n) => format!("threads({n})"),
        Mode::Deterministic { seed } => format!("deterministic({seed})"),
    };
    (Kernel::new(cfg), mode)
}

/// Shared slot the driving process writes its measurements into.
type Slot<T> = Arc<Mutex<Option<T>>>;

fn slot<T>() -> Slot<T> {
    Arc::new(Mutex::new(None))
}

fn take<T>(s: &Slot<T>) -> Result<T> {
    s.lock()
        .map_err(|_| anyhow!("poisoned"))?
        .take()
        .ok_or_else(|| anyhow!("the workload's driver process did not report"))
}

/// Boot `init`, wait for it, and insist it exited normally.
fn run_init(k: &Kernel, init: KImage, quota: Quota) -> Result<()> {
    let pid = k.boot(
        init,
        BootOpts {
            quota,
            ..BootOpts::default()
        },
    )?;
    match k.wait_exit(pid)? {
        ExitReason::Normal => Ok(()),
        other => Err(anyhow!("driver process exited with {other}")),
    }
}

/// Boot an init that takes its boot grant, runs `f` (the workload's driver) and hands back
/// what `f` measured. The kernel must end with init exiting normally.
fn drive<T, F, Fut>(k: &Kernel, f: F) -> Result<T>
where
    T: Send + 'static,
    F: Fn(Sys) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<T, ExitReason>> + Send + 'static,
{
    let out: Slot<T> = slot();
    let o = out.clone();
    let f = Arc::new(f);
    let init = Image::new("init", move |sys: Sys, _| {
        let (o, f) = (o.clone(), f.clone());
        async move {
            boot_msg(&sys).await;
            let v = f(sys).await?;
            *o.lock().map_err(|_| ExitReason::fault("poisoned"))? = Some(v);
            Ok(())
        }
    });
    run_init(k, init, Quota::default())?;
    take(&out)
}

/// The kernel lock's mean hold per send, receive and dispatch since the last reset (with the
/// `lockstat` feature; `null` without it).
fn lock_holds() -> Json {
    #[cfg(feature = "lockstat")]
    {
        let clock = agentos_kernel::lockstat::clock_overhead_ns();
        let mut m: serde_json::Map<String, Json> = agentos_kernel::lockstat::report()
            .into_iter()
            .map(|(k, n, ns)| {
                // Inside a measured section sits one clock read's worth of the pair.
                let net = (ns - clock / 2.0).max(0.0);
                (
                    k.to_owned(),
                    json!({"count": n, "mean_ns": ns, "net_ns": net}),
                )
            })
            .collect();
        m.insert("clock_overhead_ns".into(), json!(clock));
        Json::Object(m)
    }
    #[cfg(not(feature = "lockstat"))]
    Json::Null
}

fn reset_lock_holds() {
    #[cfg(feature = "lockstat")]
    agentos_kernel::lockstat::reset();
}

fn rate(n: u64, d: Duration) -> (f64, f64) {
    let s = d.as_secs_f64().max(1e-9);
    (n as f64 / s, d.as_nanos() as f64 / n.max(1) as f64)
}

async fn boot_msg(sys: &Sys) {
    let _ = sys.recv().await;
}

fn noop_child() -> KImage {
    Image::new("child", |_sys: Sys, _| async { Ok(()) })
}

fn spawn(quick: bool) -> Result<Json> {
    let n = scale(100_000, quick);
    let (k, mode) = kernel();
    let d = drive(&k, move |sys| async move {
        let child = noop_child();
        let t = Instant::now();
        for _ in 0..n {
            let c = sys.spawn(child.clone(), SpawnOpts::default()).await?;
            let r = sys.waitpid(c.cap).await?;
            if r != ExitReason::Normal {
                return Err(ExitReason::fault(format!("child exited {r}")));
            }
        }
        Ok(t.elapsed())
    })?;
    let (per_s, ns) = rate(n, d);
    Ok(json!({"n": n, "per_s": per_s, "ns_per_op": ns, "mode": mode}))
}

fn spawn_burst(quick: bool) -> Result<Json> {
    let n = scale(100_000, quick);
    let (k, mode) = kernel();
    let d = drive(&k, move |sys| async move {
        let child = noop_child();
        let t = Instant::now();
        for _ in 0..n {
            let c = sys.spawn(child.clone(), SpawnOpts::default()).await?;
            sys.monitor(c.cap).await?;
        }
        let mut downs = 0;
        while downs < n {
            if let Some(SysMsg::Down { .. }) = sys.recv().await.sys() {
                downs += 1;
            }
        }
        Ok(t.elapsed())
    })?;
    let (per_s, ns) = rate(n, d);
    Ok(json!({"n": n, "per_s": per_s, "ns_per_op": ns, "mode": mode}))
}

fn u64_of(m: &Message) -> Option<u64> {
    match &m.body {
        Body::Value(Value::U64(v)) => Some(*v),
        _ => None,
    }
}

/// One pingpong run of `n` round trips; with `tapped`, a host subscriber takes every event
/// (drained by its own thread) while it runs. Returns the timed part, the mode and, tapped,
/// how many host events the subscriber got and how many its channel dropped; and the lock
/// holds (`lockstat`).
fn pingpong_run(n: u64, tapped: bool) -> Result<(Duration, String, u64, u64, Json)> {
    let (k, mode) = kernel();
    let drain = tapped.then(|| {
        let rx = k.subscribe(1 << 16);
        std::thread::spawn(move || rx.iter().count() as u64)
    });
    let d = drive(&k, move |sys| async move {
        let pong = Image::new("pong", |sys: Sys, _| async move {
            let hello = sys.recv().await;
            let back = *hello
                .caps
                .first()
                .ok_or_else(|| ExitReason::fault("no reply cap"))?;
            loop {
                let m = sys.recv().await;
                let v = u64_of(&m).unwrap_or(0);
                sys.send(back, m.body, SendOpts::default()).await?;
                if v == 0 {
                    return Ok(());
                }
            }
        });
        let c = sys.spawn(pong, SpawnOpts::default()).await?;
        let me = sys.self_cap();
        let hello = SendOpts {
            caps: vec![me],
            ..SendOpts::default()
        };
        sys.send(c.cap, Body::Empty, hello).await?;
        reset_lock_holds();
        let t = Instant::now();
        for i in (0..n).rev() {
            sys.send(c.cap, Body::Value(Value::U64(i)), SendOpts::default())
                .await?;
            let m = sys.recv().await;
            if u64_of(&m) != Some(i) {
                return Err(ExitReason::fault("pong answered out of order"));
            }
        }
        let d = t.elapsed();
        sys.waitpid(c.cap).await?;
        Ok(d)
    })?;
    let lock = lock_holds();
    let drops = k.sink_drops();
    drop(k);
    let got = match drain {
        Some(t) => t.join().map_err(|_| anyhow!("the drain thread panicked"))?,
        None => 0,
    };
    Ok((d, mode, got, drops, lock))
}

fn pingpong(quick: bool) -> Result<Json> {
    let n = scale(1_000_000, quick);
    let (d, mode, _, _, lock) = pingpong_run(n, false)?;
    // The send path with events leaving the kernel: a subscriber drains every event.
    let (dt, _, got, drops, _) = pingpong_run(n, true)?;
    let (msgs_per_s, _) = rate(2 * n, d);
    Ok(json!({
        "round_trips": n, "msgs_per_s": msgs_per_s,
        "rtt_ns": d.as_nanos() as f64 / n as f64, "mode": mode, "lock_hold": lock,
        "rtt_ns_subscribed": dt.as_nanos() as f64 / n as f64,
        "subscriber_got": got, "subscriber_dropped": drops
    }))
}

fn fanin(quick: bool) -> Result<Json> {
    let p = 100u64;
    let m = scale(10_000, quick);
    let total = p * m;
    let (k, mode) = kernel();
    let d = drive(&k, move |sys| async move {
        let sink = Image::new("sink", move |sys: Sys, _| async move {
            let mut sum = 0u64;
            for _ in 0..total {
                let msg = sys.recv().await;
                sum = sum.wrapping_add(u64_of(&msg).unwrap_or(0));
            }
            black_box(sum);
            Ok(())
        });
        let quota = Quota {
            max_mailbox: Some(1024),
            ..Quota::default()
        };
        let s = sys
            .spawn(
                sink,
                SpawnOpts {
                    quota,
                    ..SpawnOpts::default()
                },
            )
            .await?;
        // Each producer gets a send-only cap to the sink with its first message.
        let producer = Image::new("producer", move |sys: Sys, _| async move {
            let first = sys.recv().await;
            let to = *first
                .caps
                .first()
                .ok_or_else(|| ExitReason::fault("no sink cap"))?;
            for i in 0..m {
                sys.send(to, Body::Value(Value::U64(i)), SendOpts::default())
                    .await?;
            }
            Ok(())
        });
        let mut producers = Vec::new();
        for _ in 0..p {
            producers.push(sys.spawn(producer.clone(), SpawnOpts::default()).await?);
        }
        reset_lock_holds();
        let t = Instant::now();
        for c in &producers {
            let to = sys.derive(s.cap, Right::Send.into())?;
            let opts = SendOpts {
                caps: vec![to],
                ..SendOpts::default()
            };
            sys.send(c.cap, Body::Empty, opts).await?;
        }
        sys.waitpid(s.cap).await?;
        Ok(t.elapsed())
    })?;
    let (msgs_per_s, _) = rate(total, d);
    Ok(json!({
        "producers": p, "per_producer": m, "max_mailbox": 1024,
        "msgs_per_s": msgs_per_s, "mode": mode, "lock_hold": lock_holds()
    }))
}

/// A ring member: its first message carries the next member's cap and a cap back to init;
/// then it forwards the token, counting down hops, until an empty message stops it.
fn ring_member() -> KImage {
    Image::new("ring", |sys: Sys, _| async move {
        let wiring = sys.recv().await;
        let next = *wiring
            .caps
            .first()
            .ok_or_else(|| ExitReason::fault("unwired"))?;
        let done = *wiring
            .caps
            .get(1)
            .ok_or_else(|| ExitReason::fault("no init cap"))?;
        loop {
            let m = sys.recv().await;
            match u64_of(&m) {
                Some(left) if left > 0 => {
                    let to = if left == 1 { done } else { next };
                    sys.send(to, Body::Value(Value::U64(left - 1)), SendOpts::default())
                        .await?;
                }
                Some(_) => {}
                None => return Ok(()),
            }
        }
    })
}

fn ring(quick: bool) -> Result<Json> {
    let p = scale(10_000, quick);
    let laps = 100u64;
    let hops = p * laps;
    let (k, mode) = kernel();
    let (setup, d) = drive(&k, move |sys| async move {
        let member = ring_member();
        let setup = Instant::now();
        let mut members = Vec::with_capacity(p as usize);
        for _ in 0..p {
            members.push(sys.spawn(member.clone(), SpawnOpts::default()).await?);
        }
        let me = sys.self_cap();
        for i in 0..p as usize {
            let next = sys.derive(members[(i + 1) % p as usize].cap, Right::Send.into())?;
            let caps = vec![next, sys.derive(me, Right::Send.into())?];
            let opts = SendOpts {
                caps,
                ..SendOpts::default()
            };
            sys.send(members[i].cap, Body::Empty, opts).await?;
        }
        let setup = setup.elapsed();
        let t = Instant::now();
        sys.send(
            members[0].cap,
            Body::Value(Value::U64(hops)),
            SendOpts::default(),
        )
        .await?;
        while u64_of(&sys.recv().await) != Some(0) {}
        let laps_t = t.elapsed();
        for c in &members {
            sys.send(c.cap, Body::Empty, SendOpts::default()).await?;
        }
        Ok((setup, laps_t))
    })?;
    let (hops_per_s, ns) = rate(hops, d);
    Ok(json!({
        "processes": p, "laps": laps, "hops_per_s": hops_per_s, "ns_per_hop": ns,
        "setup_ns_per_proc": setup.as_nanos() as f64 / p as f64, "mode": mode
    }))
}

fn caps(quick: bool) -> Result<Json> {
    let n = scale(100_000, quick) as usize;
    let checks = scale(1_000_000, quick) as usize;
    let owner = Pid(1);
    let mut t = CapTable::new();
    let root = t.mint(owner, Resource::Process(Pid(2)), Rights::CHILD);
    let mut all = Vec::with_capacity(n + 1);
    all.push(root);
    // Breadth-first tree with fan-out 10: cap i's children are 10i+1 ..= 10i+10.
    let start = Instant::now();
    let mut parent = 0;
    while all.len() < n + 1 {
        let p = all[parent];
        for _ in 0..10 {
            if all.len() == n + 1 {
                break;
            }
            let c = t
                .derive(owner, p, Rights::SEND_MONITOR, 0)
                .map_err(|e| anyhow!("derive: {e}"))?;
            all.push(c);
        }
        parent += 1;
    }
    let derive_t = start.elapsed();
    // Random live refs from a seeded splitmix64, drawn before the timed loop.
    let mut s = 0x5eed_u64;
    let idx: Vec<u32> = (0..checks)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) % all.len() as u64) as u32
        })
        .collect();
    let start = Instant::now();
    let mut ok = 0u64;
    for &i in &idx {
        if t.require(owner, all[i as usize], Right::Send, 0).is_ok() {
            ok += 1;
        }
    }
    let require_t = start.elapsed();
    if ok != checks as u64 {
        return Err(anyhow!("only {ok} of {checks} require checks passed"));
    }
    let start = Instant::now();
    let revoked = t.revoke(root);
    let revoke_t = start.elapsed();
    if revoked != n + 1 || !t.is_empty() {
        return Err(anyhow!("revoke killed {revoked} caps, expected {}", n + 1));
    }
    Ok(json!({
        "caps": n, "checks": checks,
        "derive_per_s": n as f64 / derive_t.as_secs_f64(),
        "require_ns": require_t.as_nanos() as f64 / checks as f64,
        "revoke_per_s": revoked as f64 / revoke_t.as_secs_f64(),
        "mode": "captable (single-threaded data structure)"
    }))
}

fn rss_bytes() -> Result<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").context("reading /proc/self/statm")?;
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .context("statm has no rss field")?
        .parse()?;
    Ok(pages * 4096)
}

fn idle_mem(quick: bool) -> Result<Json> {
    let n = scale(100_000, quick);
    let (k, mode) = kernel();
    let parked: Slot<u64> = slot();
    let (go_tx, go_rx) = std::sync::mpsc::sync_channel::<()>(1);
    let go_tx = Arc::new(Mutex::new(Some(go_tx)));
    let p2 = parked.clone();
    let init = Image::new("init", move |sys: Sys, _| {
        let go = go_tx.clone();
        let p2 = p2.clone();
        async move {
            boot_msg(&sys).await;
            // Tell the host we are booted, then wait for its "measure now" mark.
            if let Some(tx) = go.lock().unwrap().take() {
                let _ = tx.send(());
            }
            sys.recv().await;
            let child = Image::new("idle", |sys: Sys, _| async move {
                sys.recv().await;
                Ok(())
            });
            let mut kids = Vec::with_capacity(n as usize);
            for _ in 0..n {
                kids.push(sys.spawn(child.clone(), SpawnOpts::default()).await?.cap);
            }
            // Let every child run to its recv (FIFO: they are all ahead of us).
            sys.yield_now().await;
            sys.sleep(100).await;
            *p2.lock().unwrap() = Some(n);
            sys.recv().await; // parked until the host has measured
            for c in kids {
                let _ = sys.send(c, Body::Empty, SendOpts::default()).await;
            }
            Ok(())
        }
    });
    let pid = k.boot(init, BootOpts::default())?;
    go_rx
        .recv_timeout(Duration::from_secs(30))
        .context("init never booted")?;
    let before = rss_bytes()?;
    k.deliver_external(pid, Body::Empty)
        .map_err(|_| anyhow!("init gone"))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while parked.lock().unwrap().is_none() {
        if Instant::now() > deadline {
            return Err(anyhow!("children never parked"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = rss_bytes()?;
    let waiting = k
        .ps()
        .iter()
        .filter(|p| p.status == "waiting" && &*p.name == "idle")
        .count();
    k.deliver_external(pid, Body::Empty)
        .map_err(|_| anyhow!("init gone"))?;
    match k.wait_exit(pid)? {
        ExitReason::Normal => {}
        other => return Err(anyhow!("init exited {other}")),
    }
    Ok(json!({
        "processes": n, "parked_in_recv": waiting,
        "rss_before": before, "rss_after": after,
        "bytes_per_proc": (after.saturating_sub(before)) as f64 / n as f64, "mode": mode
    }))
}

/// A device answering every read with the same 64-byte value (the journal workload's driver).
struct Blob64;
struct Blob64Handle(Value);

impl agentos_abi::Driver for Blob64 {
    fn name(&self) -> &str {
        "blob"
    }
    fn open(
        &self,
        _at: agentos_abi::OpenCtx,
    ) -> agentos_abi::driver::BoxFuture<
        'static,
        Result<Arc<dyn agentos_abi::DriverHandle>, agentos_abi::DriverError>,
    > {
        let v = Value::Bytes(bytes_of(64));
        Box::pin(async move { Ok(Arc::new(Blob64Handle(v)) as Arc<dyn agentos_abi::DriverHandle>) })
    }
}

impl agentos_abi::DriverHandle for Blob64Handle {
    fn read(
        &self,
        _req: Value,
    ) -> agentos_abi::driver::BoxFuture<'static, Result<agentos_abi::Reply, agentos_abi::DriverError>>
    {
        let v = self.0.clone();
        Box::pin(async move { Ok(agentos_abi::Reply::free(v)) })
    }
}

fn bytes_of(n: usize) -> bytes::Bytes {
    bytes::Bytes::from((0..n).map(|i| i as u8).collect::<Vec<u8>>())
}

/// One process doing `n` reads of the blob device; returns the elapsed time of the reads.
fn journal_run(k: &Kernel, n: u64) -> Result<Duration> {
    let out: Slot<Duration> = slot();
    let o = out.clone();
    let init = Image::new("reader", move |sys: Sys, _| {
        let o = o.clone();
        async move {
            let boot = sys.recv().await;
            let dev = boot
                .sys()
                .and_then(|b| b.device("blob"))
                .ok_or_else(|| ExitReason::fault("no blob device"))?;
            let h = sys.open(dev).await?;
            let t = Instant::now();
            let mut len = 0usize;
            for _ in 0..n {
                if let Value::Bytes(b) = sys.read(h, Value::Unit).await? {
                    len += b.len();
                }
            }
            black_box(len);
            *o.lock().map_err(|_| ExitReason::fault("poisoned"))? = Some(t.elapsed());
            Ok(())
        }
    });
    let pid = k.boot(
        init,
        BootOpts {
            grant: vec!["blob".into()],
            ..BootOpts::default()
        },
    )?;
    match k.wait_exit(pid)? {
        ExitReason::Normal => take(&out),
        other => Err(anyhow!("reader exited {other}")),
    }
}

fn journal(quick: bool) -> Result<Json> {
    use agentos_kernel::journal::{FileStore, FsyncPolicy};
    let n = scale(1_000_000, quick);
    let path = std::env::temp_dir().join(format!("agentos-bench-journal-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let (fs, _) = FileStore::open(&path, FsyncPolicy::default())?;
    let k = Kernel::record(KernelConfig::default(), Box::new(fs));
    k.register_driver(Arc::new(Blob64))?;
    let rec = journal_run(&k, n)?;
    let t = Instant::now();
    k.flush_journal()?;
    let final_sync = t.elapsed();
    let stats = k
        .journal_stats()
        .ok_or_else(|| anyhow!("no journal store"))?;
    drop(k);
    let bytes = std::fs::metadata(&path)?.len();

    let t = Instant::now();
    let (fs, report) = FileStore::open(&path, FsyncPolicy::default())?;
    let k = Kernel::replay_from(KernelConfig::default(), Box::new(fs))?;
    let load = t.elapsed();
    // Registered so the boot grant names it; replay never opens or calls it.
    k.register_driver(Arc::new(Blob64))?;
    let rep = journal_run(&k, n)?;
    drop(k);
    let _ = std::fs::remove_file(&path);
    if report.records != n {
        return Err(anyhow!(
            "store holds {} records, expected {n}",
            report.records
        ));
    }
    let (record_per_s, _) = rate(n, rec);
    let (replay_per_s, _) = rate(n, rep);
    Ok(json!({
        "records": n, "record_per_s": record_per_s, "replay_per_s": replay_per_s,
        "replay_load_ms": load.as_secs_f64() * 1e3,
        "bytes_per_record": bytes as f64 / n as f64, "fsyncs": stats.fsyncs,
        "fsyncs_per_s": stats.fsyncs as f64 / rec.as_secs_f64(),
        "commits": stats.commits,
        "commit_interval_ms": rec.as_secs_f64() * 1e3 / stats.commits.max(1) as f64,
        "fsync_mean_us": stats.fsync_total_us as f64 / stats.fsyncs.max(1) as f64,
        "fsync_max_us": stats.fsync_max_us,
        "policy": "every 4096 records or 5 ms", "final_flush_ms": final_sync.as_secs_f64() * 1e3,
        "mode": "threads(2), file store"
    }))
}

/// Pseudo-words from a seeded splitmix64: a fixed vocabulary.
fn vocabulary(n: usize, seed: u64) -> Vec<String> {
    let mut s = seed;
    let mut next = move || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let r = next();
        let len = 4 + (r % 6) as usize;
        let w: String = (0..len)
            .map(|i| (b'a' + ((r >> (5 * i + 8)) % 26) as u8) as char)
            .collect();
        if seen.insert(w.clone()) {
            out.push(w);
        }
    }
    out
}

fn recall(quick: bool) -> Result<Json> {
    use agentos_abi::RememberOpts;
    let n = scale(100_000, quick);
    let q = if quick { 100 } else { 1_000 };
    let vocab = Arc::new(vocabulary(5_000, 42));
    let (k, mode) = kernel();
    let out: Slot<Vec<Duration>> = slot();
    let o = out.clone();
    let init = Image::new("rememberer", move |sys: Sys, _| {
        let (vocab, o) = (vocab.clone(), o.clone());
        async move {
            let mut s = 7u64;
            let mut rnd = move |m: usize| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as usize) % m
            };
            // ~50 tokens each: 38 words of ~6.5 letters ≈ 250 characters.
            for _ in 0..n {
                let text: Vec<&str> = (0..38).map(|_| vocab[rnd(vocab.len())].as_str()).collect();
                sys.remember(Value::Str(text.join(" ")), RememberOpts::default())
                    .await?;
            }
            let mut lat = Vec::with_capacity(q);
            for _ in 0..q {
                let w = |r: usize| vocab[r].as_str();
                let query = format!(
                    "{} {} {}",
                    w(rnd(vocab.len())),
                    w(rnd(vocab.len())),
                    w(rnd(vocab.len()))
                );
                let t = Instant::now();
                let got = sys.recall(&query, 4).await?;
                lat.push(t.elapsed());
                black_box(got.len());
            }
            *o.lock().map_err(|_| ExitReason::fault("poisoned"))? = Some(lat);
            Ok(())
        }
    });
    // A 2,000-token ceiling pages almost all of the ~5 M tokens out.
    run_init(
        &k,
        init,
        Quota {
            mem: Some(2_000),
            ..Quota::default()
        },
    )?;
    let lat = take(&out)?;
    let mut lat = lat;
    lat.sort();
    let total: Duration = lat.iter().sum();
    let pct =
        |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e6;
    let name = (KernelConfig::default().memory.recaller)().name();
    Ok(json!({
        "segments": n, "queries": q, "k": 4,
        "queries_per_s": q as f64 / total.as_secs_f64(),
        "p50_us": pct(0.50), "p99_us": pct(0.99),
        "recaller": name, "mode": mode
    }))
}

/// Seal then verify (MAC check, then decode of the body) `n` envelopes with a 256-byte body.
/// `per_s` does both on one thread; `per_s_two_threads` runs it as two nodes do — one thread
/// seals (node A), another opens (node B), in batches through a bounded channel.
fn seal(quick: bool) -> Result<Json> {
    use agentos_abi::wire::{Addr, WireBody};
    use agentos_abi::{Body, NodeId, Pid};
    use agentos_kernel::seal::Sealer;
    let n = scale(1_000_000, quick);
    let key = b"an agentos cluster key of 32 b.";
    let to = Addr {
        node: NodeId::from("node-b"),
        pid: Pid(42),
    };
    let payload = bytes_of(256);
    let seal_one = |s: &Sealer, i: u64| -> Result<bytes::Bytes> {
        let body = WireBody::Msg {
            from: Pid(7),
            body: Body::Bytes(payload.clone()),
            corr: Some(i),
        };
        s.seal(&to, i, &body).map_err(|e| anyhow!("{e}"))
    };
    let open_one = |r: &Sealer, env: &[u8]| -> Result<usize> {
        let opened = r.open(env).map_err(|e| anyhow!("{e}"))?;
        match postcard::from_bytes::<WireBody>(opened.body)? {
            WireBody::Msg {
                body: Body::Bytes(b),
                ..
            } => Ok(b.len()),
            _ => Err(anyhow!("decoded the wrong body")),
        }
    };

    // One thread: seal, then verify, envelope by envelope.
    let (sender, receiver) = (
        Sealer::new(NodeId::from("node-a"), key, 1),
        Sealer::new(NodeId::from("node-b"), key, 2),
    );
    let t = Instant::now();
    let mut checked = 0usize;
    for i in 0..n {
        let env = seal_one(&sender, i)?;
        checked += open_one(&receiver, &env)?;
    }
    let one = t.elapsed();
    if checked != 256 * n as usize {
        return Err(anyhow!(
            "verified {checked} body bytes, expected {}",
            256 * n
        ));
    }

    // Two nodes: sealing and verifying run concurrently.
    let (sender, receiver) = (
        Sealer::new(NodeId::from("node-a"), key, 3),
        Sealer::new(NodeId::from("node-b"), key, 4),
    );
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<bytes::Bytes>>(8);
    let t = Instant::now();
    let checked = std::thread::scope(|sc| -> Result<usize> {
        let verifier = sc.spawn(|| -> Result<usize> {
            let mut checked = 0;
            for batch in rx {
                for env in batch {
                    checked += open_one(&receiver, &env)?;
                }
            }
            Ok(checked)
        });
        let mut i = 0;
        while i < n {
            let m = 1024.min(n - i);
            let batch = (i..i + m)
                .map(|j| seal_one(&sender, j))
                .collect::<Result<Vec<_>>>()?;
            tx.send(batch)
                .map_err(|_| anyhow!("the verifier stopped"))?;
            i += m;
        }
        drop(tx);
        verifier
            .join()
            .map_err(|_| anyhow!("the verifier panicked"))?
    })?;
    let two = t.elapsed();
    if checked != 256 * n as usize {
        return Err(anyhow!(
            "verified {checked} body bytes, expected {}",
            256 * n
        ));
    }
    let (per_s, ns) = rate(n, one);
    let (per_s_two, ns_two) = rate(n, two);
    Ok(json!({
        "pairs": n, "body_bytes": 256, "per_s": per_s, "ns_per_pair": ns,
        "per_s_two_threads": per_s_two, "ns_per_pair_two_threads": ns_two,
        "what": "seal (postcard + HMAC-SHA256) then open (HMAC verify + postcard decode), one thread; *_two_threads: sealer and verifier on their own threads, as two nodes"
    }))
}
