//! Durability: record → replay without the driver, a missing entry in replay, recover after a
//! torn store, and a crash test that SIGKILLs a recording child process mid-run and recovers.

use crate::util::*;
use agentos_abi::driver::BoxFuture;
use agentos_abi::*;
use agentos_kernel::journal::{FileStore, FsyncPolicy, IoResult, MemoryStore, Record, Store};
use agentos_kernel::*;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A deterministic "oracle" device: `read(U64(i))` answers `mix(salt, i)` and costs one token.
/// It counts live calls, optionally sleeps per call (to slow a recording child down), and can be
/// told to panic if touched at all (replay must never call it).
struct Oracle {
    salt: u64,
    calls: Arc<AtomicU64>,
    delay_us: u64,
    panic_if_called: bool,
}

struct OracleHandle {
    salt: u64,
    calls: Arc<AtomicU64>,
    delay_us: u64,
    panic_if_called: bool,
}

fn mix(a: u64, b: u64) -> u64 {
    let mut s = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    splitmix(&mut s)
}

impl Oracle {
    fn new(salt: u64) -> (Arc<Self>, Arc<AtomicU64>) {
        let calls = Arc::new(AtomicU64::new(0));
        let o = Oracle {
            salt,
            calls: calls.clone(),
            delay_us: 0,
            panic_if_called: false,
        };
        (Arc::new(o), calls)
    }
    fn panicking() -> Arc<Self> {
        Arc::new(Oracle {
            salt: 0,
            calls: Arc::default(),
            delay_us: 0,
            panic_if_called: true,
        })
    }
}

impl Driver for Oracle {
    fn name(&self) -> &str {
        "oracle"
    }
    fn open(
        &self,
        _at: agentos_abi::OpenCtx,
    ) -> BoxFuture<'static, Result<Arc<dyn DriverHandle>, DriverError>> {
        assert!(!self.panic_if_called, "replay touched the driver (open)");
        let h: Arc<dyn DriverHandle> = Arc::new(OracleHandle {
            salt: self.salt,
            calls: self.calls.clone(),
            delay_us: self.delay_us,
            panic_if_called: self.panic_if_called,
        });
        Box::pin(async move { Ok(h) })
    }
}

impl DriverHandle for OracleHandle {
    fn read(&self, req: Value) -> BoxFuture<'static, Result<Reply, DriverError>> {
        assert!(!self.panic_if_called, "replay touched the driver (read)");
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.delay_us > 0 {
            std::thread::sleep(std::time::Duration::from_micros(self.delay_us));
        }
        let out = match req {
            Value::U64(i) if i % 97 == 13 => Err(DriverError::Failed(format!("no answer for {i}"))),
            Value::U64(i) => Ok(Reply {
                value: Value::U64(mix(self.salt, i)),
                cost: Cost {
                    tokens: 1,
                    ..Cost::default()
                },
            }),
            other => Err(DriverError::BadRequest(format!("{other:?}"))),
        };
        Box::pin(async move { out })
    }
}

/// The workload: `n` oracle reads (every 97th answers with an error, which is journaled too),
/// folded into one digest, reported through `out`.
fn worker(n: u64, out: Arc<Mutex<Option<u64>>>) -> KImage {
    init(move |sys, boot| {
        let out = out.clone();
        async move {
            let dev = boot.device("oracle").expect("oracle device");
            let h = sys.open(dev).await?;
            let mut acc = 0u64;
            for i in 0..n {
                let v = match sys.read(h, Value::U64(i)).await {
                    Ok(Value::U64(v)) => v,
                    Ok(_) => 1,
                    Err(SysError::Driver(e)) => e.len() as u64,
                    Err(e) => return Err(e.into()),
                };
                acc = mix(acc, v);
            }
            *out.lock().unwrap() = Some(acc);
            Ok(())
        }
    })
}

fn grant() -> BootOpts {
    BootOpts {
        grant: vec!["oracle".into()],
        ..BootOpts::default()
    }
}

fn run_live(n: u64, salt: u64) -> u64 {
    let k = det(1);
    let (o, _) = Oracle::new(salt);
    k.register_driver(o).unwrap();
    let out = Arc::new(Mutex::new(None));
    assert_eq!(
        boot_with_and_wait(&k, worker(n, out.clone()), grant()),
        ExitReason::Normal
    );
    let v = out.lock().unwrap().expect("worker reported");
    v
}

fn temp_path(tag: &str) -> PathBuf {
    let mut p = std::env::temp_dir();
    p.push(format!(
        "agentos-test-{tag}-{}-{}",
        std::process::id(),
        splitmix(&mut (tag.len() as u64 + 7))
    ));
    let _ = std::fs::remove_file(&p);
    p
}

fn io_records(recs: &[Record]) -> Vec<(u64, u64)> {
    recs.iter()
        .filter_map(|r| match r {
            Record::Io { pid, op, .. } => Some((*pid, *op)),
            Record::Event(_) => None,
        })
        .collect()
}

#[test]
fn record_then_replay_gives_the_same_results_without_touching_the_driver() {
    let n = 300;
    let store = MemoryStore::new();
    let k = Kernel::record(KernelConfig::deterministic(1), Box::new(store.clone()));
    let (o, calls) = Oracle::new(77);
    k.register_driver(o).unwrap();
    let out = Arc::new(Mutex::new(None));
    assert_eq!(
        boot_with_and_wait(&k, worker(n, out.clone()), grant()),
        ExitReason::Normal
    );
    let recorded = out.lock().unwrap().unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), n);
    let usage_recorded = k
        .trace(100_000)
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Charge { .. }))
        .count();
    k.flush_journal().unwrap();
    drop(k);

    let mut replay_store = store.clone();
    let recs = replay_store.load().unwrap();
    assert_eq!(
        io_records(&recs).len() as u64,
        n,
        "one I/O record per driver op (the kernel events are persisted beside them)"
    );
    assert!(
        recs.iter().any(|r| matches!(
            r,
            Record::Io {
                result: IoResult::Err(_),
                ..
            }
        )),
        "errors are journaled"
    );

    // Replay: a driver that panics if touched, and the same program.
    let k = Kernel::replay_from(KernelConfig::deterministic(1), Box::new(store)).unwrap();
    k.register_driver(Oracle::panicking()).unwrap();
    let out = Arc::new(Mutex::new(None));
    assert_eq!(
        boot_with_and_wait(&k, worker(n, out.clone()), grant()),
        ExitReason::Normal
    );
    assert_eq!(out.lock().unwrap().unwrap(), recorded);
    // Costs come back from the journal too: the same charges, event for event.
    let usage_replayed = k
        .trace(100_000)
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Charge { .. }))
        .count();
    assert_eq!(usage_replayed, usage_recorded);
}

#[test]
fn replay_that_runs_past_the_recording_is_a_clear_error() {
    let store = MemoryStore::new();
    let k = Kernel::record(KernelConfig::deterministic(1), Box::new(store.clone()));
    k.register_driver(Oracle::new(1).0).unwrap();
    boot_with_and_wait(&k, worker(10, Arc::default()), grant());
    drop(k);

    let k = Kernel::replay_from(KernelConfig::deterministic(1), Box::new(store)).unwrap();
    k.register_driver(Oracle::panicking()).unwrap();
    let seen = log::<String>();
    let s2 = seen.clone();
    let img = init(move |sys, boot| {
        let seen = s2.clone();
        async move {
            let h = sys.open(boot.device("oracle").unwrap()).await?;
            for i in 0..11 {
                if let Err(e) = sys.read(h, Value::U64(i)).await {
                    push(&seen, e.to_string());
                }
            }
            Ok(())
        }
    });
    boot_with_and_wait(&k, img, grant());
    let errs = snapshot(&seen);
    let last = errs.last().expect("the 11th read fails");
    assert!(
        last.contains("replay") && last.contains("1:10"),
        "got {last}"
    );
}

#[test]
fn recover_replays_the_surviving_prefix_then_continues_live_and_appends() {
    let n = 400;
    let reference = run_live(n, 5);
    let path = temp_path("recover");
    {
        let (fs, _) = FileStore::open(&path, FsyncPolicy::default()).unwrap();
        // I/O records only, so the cut below lands inside them.
        let cfg = KernelConfig {
            persist_events: false,
            ..KernelConfig::deterministic(1)
        };
        let k = Kernel::record(cfg, Box::new(fs));
        k.register_driver(Oracle::new(5).0).unwrap();
        boot_with_and_wait(&k, worker(n, Arc::default()), grant());
        k.flush_journal().unwrap();
    }
    // Tear the store: cut the file in the middle of a frame about two thirds in.
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len * 2 / 3 + 3)
        .unwrap();

    let (mut fs, report) = FileStore::open(&path, FsyncPolicy::default()).unwrap();
    assert!(report.truncated_bytes > 0, "the torn tail is truncated");
    let prefix = io_records(&fs.load().unwrap()).len() as u64;
    assert!(prefix > 0 && prefix < n);
    let k = Kernel::recover_from(KernelConfig::deterministic(1), Box::new(fs)).unwrap();
    let (o, calls) = Oracle::new(5);
    k.register_driver(o).unwrap();
    let out = Arc::new(Mutex::new(None));
    assert_eq!(
        boot_with_and_wait(&k, worker(n, out.clone()), grant()),
        ExitReason::Normal
    );
    assert_eq!(
        out.lock().unwrap().unwrap(),
        reference,
        "same final result as an uninterrupted run"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        n - prefix,
        "the prefix came from the journal"
    );
    k.flush_journal().unwrap();
    drop(k);

    let (mut fs, _) = FileStore::open(&path, FsyncPolicy::default()).unwrap();
    let ops = io_records(&fs.load().unwrap());
    assert_eq!(
        ops,
        (0..n).map(|op| (1, op)).collect::<Vec<_>>(),
        "every op exactly once, in order"
    );
    let _ = std::fs::remove_file(&path);
}

const CRASH_ENV: &str = "AGENTOS_CRASH_CHILD_STORE";
const CRASH_N: u64 = 20_000;

/// The child half of the crash test: records the workload into the file store named by
/// `AGENTOS_CRASH_CHILD_STORE`, slowly, until the parent SIGKILLs it. Does nothing otherwise.
#[test]
#[ignore = "run only as the crash test's child process"]
fn crash_child_records_until_killed() {
    let Ok(path) = std::env::var(CRASH_ENV) else {
        return;
    };
    let (fs, _) = FileStore::open(
        &path,
        FsyncPolicy {
            every_records: Some(64),
            every_ms: Some(2),
        },
    )
    .unwrap();
    let k = Kernel::record(KernelConfig::deterministic(1), Box::new(fs));
    let (o, _) = Oracle::new(9);
    let o = Arc::new(Oracle {
        salt: o.salt,
        calls: o.calls.clone(),
        delay_us: 50,
        panic_if_called: false,
    });
    k.register_driver(o).unwrap();
    boot_with_and_wait(&k, worker(CRASH_N, Arc::default()), grant());
}

#[test]
fn a_run_killed_with_sigkill_mid_flight_recovers_to_the_uninterrupted_result() {
    let path = temp_path("crash");
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args([
            "durability::crash_child_records_until_killed",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_ENV, &path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until a good part of the run is on disk (bounded: the child takes > 1 s in all).
    let mut waited = 0;
    while std::fs::metadata(&path).map_or(0, |m| m.len()) < 100_000 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child finished before it could be killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
        waited += 1;
        assert!(waited < 6_000, "the child never wrote its journal");
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let (mut fs, _) = FileStore::open(&path, FsyncPolicy::default()).unwrap();
    let prefix = io_records(&fs.load().unwrap()).len() as u64;
    assert!(
        prefix > 0 && prefix < CRASH_N,
        "killed mid-run with {prefix} records on disk"
    );
    let k = Kernel::recover_from(KernelConfig::deterministic(1), Box::new(fs)).unwrap();
    let (o, calls) = Oracle::new(9);
    k.register_driver(o).unwrap();
    let out = Arc::new(Mutex::new(None));
    assert_eq!(
        boot_with_and_wait(&k, worker(CRASH_N, out.clone()), grant()),
        ExitReason::Normal
    );
    k.flush_journal().unwrap();
    drop(k);
    assert_eq!(out.lock().unwrap().unwrap(), run_live(CRASH_N, 9));
    assert_eq!(calls.load(Ordering::SeqCst), CRASH_N - prefix);
    let (mut fs, _) = FileStore::open(&path, FsyncPolicy::default()).unwrap();
    assert_eq!(
        io_records(&fs.load().unwrap()).len() as u64,
        CRASH_N,
        "the store now holds the whole run, once"
    );
    let _ = std::fs::remove_file(&path);
}
