//! The worker device: tasks on a bounded pool while the calling process is parked, a panicking
//! task reported as a failed read (the pool and the kernel live on), and the concurrency limit.

use crate::common::run_process;
use crate::util::det;
use agentos_abi::device::*;
use agentos_abi::*;
use agentos_drivers::worker::WorkerDriver;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

fn task(name: &str, input: Value) -> Value {
    WorkerRequest {
        task: name.into(),
        input,
    }
    .to_value()
}

#[test]
fn a_panicking_task_fails_its_read_and_the_pool_keeps_working() {
    let k = det(1);
    let w = WorkerDriver::new(1)
        .unwrap()
        .task("square", |v| {
            let n = v.as_u64().ok_or("not a number")?;
            Ok(Value::U64(n * n))
        })
        .task("explode", |_| panic!("task bug"));
    k.register_driver(Arc::new(w)).unwrap();
    let (exit, seen) = run_process(&k, &["worker"], Quota::default(), |sys, h| async move {
        vec![
            sys.read(h[0], task("square", Value::U64(12))).await,
            sys.read(h[0], task("explode", Value::Unit)).await,
            sys.read(h[0], task("square", Value::Str("x".into()))).await,
            sys.read(h[0], task("missing", Value::Unit)).await,
            sys.read(h[0], task("square", Value::U64(3))).await,
        ]
    });
    assert_eq!(
        exit,
        ExitReason::Normal,
        "a task panic never reaches the process"
    );
    let seen = seen.unwrap();
    let r = &seen.results;
    assert_eq!(r[0], Ok(Value::U64(144)));
    assert!(
        matches!(&r[1], Err(SysError::Driver(m)) if m.contains("panicked: task bug")),
        "{:?}",
        r[1]
    );
    assert!(matches!(&r[2], Err(SysError::Driver(m)) if m.contains("not a number")));
    assert!(matches!(&r[3], Err(SysError::Driver(m)) if m.contains("no such task")));
    assert_eq!(r[4], Ok(Value::U64(9)), "the single worker thread survived");
    assert_eq!(
        seen.usage.tool_calls, 2,
        "finished tasks cost a tool call each"
    );
}

#[test]
fn no_more_than_the_limit_run_at_once() {
    const LIMIT: usize = 2;
    const JOBS: usize = 5;
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    let started_tx = Mutex::new(started_tx);
    let gate_rx = Arc::new(Mutex::new(gate_rx));
    let (r, p) = (running.clone(), peak.clone());
    let w = WorkerDriver::new(LIMIT).unwrap().task("hold", move |v| {
        let now = r.fetch_add(1, Ordering::SeqCst) + 1;
        p.fetch_max(now, Ordering::SeqCst);
        let _ = started_tx.lock().unwrap().send(());
        // Wait for the test to let this job finish.
        let _ = gate_rx.lock().unwrap().recv();
        r.fetch_sub(1, Ordering::SeqCst);
        Ok(v)
    });
    let k = det(1);
    k.register_driver(Arc::new(w)).unwrap();

    // The conductor: lets one job finish each time one starts, once the pool is full.
    let running_seen = running.clone();
    let conductor = std::thread::spawn(move || {
        let mut full_at_start = 0;
        for i in 0..JOBS {
            started_rx.recv().unwrap();
            if i + 1 >= LIMIT {
                full_at_start = full_at_start.max(running_seen.load(Ordering::SeqCst));
                gate_tx.send(()).unwrap();
            }
        }
        for _ in 0..LIMIT - 1 {
            gate_tx.send(()).unwrap();
        }
        full_at_start
    });

    let (exit, seen) = run_process(&k, &["worker"], Quota::default(), |sys, h| async move {
        let reqs = (0..JOBS as u64)
            .map(|i| task("hold", Value::U64(i)))
            .collect();
        match sys.read_all(h[0], reqs).await {
            Ok(vs) => vs.into_iter().map(Ok).collect(),
            Err(e) => vec![Err(e)],
        }
    });
    let full_at_start = conductor.join().unwrap();
    assert_eq!(exit, ExitReason::Normal);
    let seen = seen.unwrap();
    let values: Vec<_> = seen.results.into_iter().map(Result::unwrap).collect();
    assert_eq!(values, (0..JOBS as u64).map(Value::U64).collect::<Vec<_>>());
    assert_eq!(full_at_start, LIMIT, "the pool filled up");
    assert_eq!(
        peak.load(Ordering::SeqCst),
        LIMIT,
        "and never ran more than its limit"
    );
    assert_eq!(seen.usage.tool_calls, JOBS as u64);
}
