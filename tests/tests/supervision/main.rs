//! Supervision scenarios: the userland `supervisor`, `nursery` and name service on a
//! deterministic kernel (virtual clock), with crashes injected from the host.
//!
//! The host drives a scenario by delivering value messages to processes
//! (`Kernel::deliver_external`) and running the kernel until it is idle, then reads what
//! happened from the event trace (spawn and exit events, with their kernel times) and `ps`.
//! One smoke test runs a supervisor on the threaded kernel, asserting outcomes, not timings.

#![allow(dead_code)]

mod nameservice;
mod nursery;
mod supervisor;
#[path = "../kernel/util.rs"]
mod util;

pub use util::{init, log, push, snapshot, Log};

use agentos_abi::*;
use agentos_kernel::*;
use agentos_userland::{which_children, ChildInfo, SupervisorSpec};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A deterministic kernel (seed 1) whose event ring keeps every event of a scenario.
pub fn det() -> Kernel {
    util::det_with_log(1, 1 << 16)
}

/// A spawn-only cap derived from the boot grant, to hand to a child that must spawn.
pub fn spawn_cap(sys: &Sys, boot: &SysMsg) -> CapRef {
    let SysMsg::Boot { spawn, .. } = boot else {
        panic!("not a boot grant: {boot:?}");
    };
    sys.derive(*spawn, Right::Spawn.into())
        .expect("derive a spawn cap")
}

/// Spawn options that hand the child a spawn cap (so it can spawn in turn).
pub fn with_spawn(sys: &Sys, boot: &SysMsg) -> SpawnOpts {
    SpawnOpts {
        caps: vec![spawn_cap(sys, boot)],
        ..SpawnOpts::default()
    }
}

/// `(kernel ms, pid)` of every spawn of image `name`, in order.
pub fn spawns(k: &Kernel, name: &str) -> Vec<(u64, Pid)> {
    k.trace(usize::MAX)
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Spawn { pid, name: n, .. } if &*n == name => Some((e.ts, pid)),
            _ => None,
        })
        .collect()
}

/// The image names of every spawn in order, leaving out `init`, scopes and alarms.
pub fn spawn_order(k: &Kernel) -> Vec<String> {
    k.trace(usize::MAX)
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Spawn { name, .. } => Some(name.to_string()),
            _ => None,
        })
        .filter(|n| !matches!(n.as_str(), "init" | "alarm") && !n.ends_with(".scope"))
        .collect()
}

/// `(kernel ms, pid, reason)` of every exit, in order.
pub fn exits(k: &Kernel) -> Vec<(u64, Pid, ExitReason)> {
    k.trace(usize::MAX)
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Exit { pid, reason } => Some((e.ts, pid, reason)),
            _ => None,
        })
        .collect()
}

/// The recorded exit reason of `pid`.
pub fn exit_of(k: &Kernel, pid: Pid) -> Option<ExitReason> {
    exits(k)
        .into_iter()
        .find(|(_, p, _)| *p == pid)
        .map(|(_, _, r)| r)
}

/// Live pids running image `name`.
pub fn live(k: &Kernel, name: &str) -> Vec<Pid> {
    k.ps()
        .into_iter()
        .filter(|r| &*r.name == name)
        .map(|r| r.pid)
        .collect()
}

/// The one live pid running image `name`.
pub fn pid_of(k: &Kernel, name: &str) -> Pid {
    match live(k, name).as_slice() {
        [p] => *p,
        other => panic!("expected one live \"{name}\", found {other:?}"),
    }
}

/// The image names of every live process, in pid order.
pub fn alive(k: &Kernel) -> Vec<String> {
    k.ps().into_iter().map(|r| r.name.to_string()).collect()
}

/// Deliver a string value to `pid` from the host, then run the kernel until idle.
pub fn poke(k: &Kernel, pid: Pid, what: &str) {
    k.deliver_external(pid, Body::Value(what.into()))
        .expect("the target is alive");
    k.run();
}

/// What a scripted child does on one start.
#[derive(Clone, Copy, Debug)]
pub enum Act {
    /// Fault at once.
    Crash,
    /// Run this many ms of kernel time, then fault.
    CrashAfter(u64),
    /// Return normally at once.
    Exit,
    /// Serve: `"crash"` faults, `"exit"` returns normally, a `Term` returns normally.
    Run,
}

/// A child image whose n-th start does `acts[n]` (`Run` past the end). Every start is counted
/// in `starts`.
pub fn scripted(name: &str, acts: Vec<Act>, starts: Arc<AtomicUsize>) -> KImage {
    let acts = Arc::new(acts);
    let label: Arc<str> = Arc::from(name);
    Image::new(name, move |sys: Sys, _args| {
        let n = starts.fetch_add(1, Ordering::SeqCst);
        let act = acts.get(n).copied().unwrap_or(Act::Run);
        let label = label.clone();
        async move {
            match act {
                Act::Crash => Err(ExitReason::fault(format!("{label} crashed"))),
                Act::CrashAfter(ms) => {
                    sys.sleep(ms).await;
                    Err(ExitReason::fault(format!("{label} crashed")))
                }
                Act::Exit => Ok(()),
                Act::Run => loop {
                    let m = sys.recv().await;
                    if let Some(SysMsg::Term { .. }) = m.sys() {
                        return Ok(());
                    }
                    match m.body.as_value().and_then(Value::as_str) {
                        Some("crash") => return Err(ExitReason::fault(format!("{label} crashed"))),
                        Some("exit") => return Ok(()),
                        _ => {}
                    }
                },
            }
        }
    })
}

/// A child that serves until told otherwise (see [`Act::Run`]).
pub fn worker(name: &str) -> KImage {
    scripted(name, Vec::new(), Arc::new(AtomicUsize::new(0)))
}

/// A supervisor booted under a driving init, with the kernel run until idle.
///
/// Init spawns the supervisor (unlinked, with a spawn cap), monitors it and serves the host:
/// `"children"` asks `which_children` and logs the answer, `"term"` sends the supervisor a
/// `Term`, `"kill"` kills it. When the supervisor dies init logs the reason and returns.
pub struct SupRun {
    /// The kernel.
    pub k: Kernel,
    /// Init's pid.
    pub init: Pid,
    /// The supervisor's pid.
    pub sup: Pid,
    /// Answers to `"children"`, in order.
    pub answers: Log<Vec<ChildInfo>>,
    /// The supervisor's exit reason, once it died.
    pub exit: Log<ExitReason>,
}

impl SupRun {
    /// Boot a supervisor built from `spec` with `quota`, and run until idle.
    pub fn start(spec: SupervisorSpec<Sys>, quota: Quota) -> SupRun {
        let image = agentos_userland::supervisor(spec).expect("a valid spec");
        let answers: Log<Vec<ChildInfo>> = log();
        let exit: Log<ExitReason> = log();
        let sup_pid: Log<Pid> = log();
        let (a, x, sp) = (answers.clone(), exit.clone(), sup_pid.clone());
        let k = det();
        let init_pid = k
            .boot(
                init(move |sys, boot| {
                    let (a, x, sp, image) = (a.clone(), x.clone(), sp.clone(), image.clone());
                    async move {
                        let opts = SpawnOpts {
                            quota,
                            ..with_spawn(&sys, &boot)
                        };
                        let sup = sys.spawn(image, opts).await?;
                        push(&sp, sup.pid);
                        sys.monitor(sup.cap).await?;
                        loop {
                            let m = sys.recv().await;
                            if let Some(SysMsg::Down { pid, reason }) = m.sys() {
                                if *pid == sup.pid {
                                    push(&x, reason.clone());
                                    return Ok(());
                                }
                            }
                            match m.body.as_value().and_then(Value::as_str) {
                                Some("children") => {
                                    let list = which_children(&sys, sup.cap)
                                        .await
                                        .map_err(|e| ExitReason::fault(e.to_string()))?;
                                    push(&a, list);
                                }
                                Some("term") => sys.term(sup.cap).await?,
                                Some("kill") => sys.signal(sup.cap, None).await?,
                                _ => {}
                            }
                        }
                    }
                }),
                BootOpts::default(),
            )
            .expect("boot");
        k.run();
        let sup = snapshot(&sup_pid)[0];
        SupRun {
            k,
            init: init_pid,
            sup,
            answers,
            exit,
        }
    }

    /// Ask the supervisor for its children (through init).
    pub fn children(&self) -> Vec<ChildInfo> {
        poke(&self.k, self.init, "children");
        snapshot(&self.answers)
            .pop()
            .expect("init logged an answer")
    }

    /// The supervisor's exit reason, if it died.
    pub fn exit(&self) -> Option<ExitReason> {
        snapshot(&self.exit).pop()
    }

    /// Crash the live child running image `name` and run until idle.
    pub fn crash(&self, name: &str) -> Pid {
        let pid = pid_of(&self.k, name);
        poke(&self.k, pid, "crash");
        pid
    }
}
