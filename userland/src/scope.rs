//! The scope process: the keeper of a group of children that must not outlive their owner.
//!
//! Links in this kernel deliver a `Down` message; they never kill. So a child would outlive a
//! supervisor or nursery owner that was killed, or faulted, before it could stop its children
//! itself. The scope closes that gap: the owner spawns it, and after spawning each child the
//! owner hands the scope the child's *root* capability (keeping a derived copy for itself).
//! Capabilities die with their owner and derived ones with their parent, so the root must live
//! outside the owner for the scope to still hold authority over the children once the owner is
//! gone. The scope monitors the owner and every child; when the owner dies, however it dies,
//! the scope kills the children still alive (newest first) and exits.
//!
//! Two modes:
//! - **guard** (a supervisor's): a child's root is given up when the child dies, so a
//!   supervisor restarting forever does not grow the scope's capability table.
//! - **nursery**: additionally, the first child to exit abnormally cancels every sibling at
//!   once (and any child adopted later), and the owner can `join`: the scope answers when every
//!   child has exited, naming the first failure, then exits. Roots are kept until then, so the
//!   owner's copies stay valid until the join.
//!
//! Protocol (value messages, owner → scope): `{"$": "adopt", "pid"}` carrying the child's root
//! capability; `{"$": "join"}` carrying a reply capability, answered with
//! `{"$": "joined", "failed": Unit | {"pid", "reason"}}`. Messages from anyone else are dropped.

use crate::proto::{answer, drop_caps, genuine_down, reason_to_value, tag_of, tagged, u64_field};
use agentos_abi::{
    Body, CapRef, ExitReason, Image, Pid, Rights, SendOpts, SpawnOpts, Spawned, SysError, Syscalls,
    Value,
};

/// Which behaviour a scope has.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Mode {
    /// Kill the children when the owner dies; nothing else.
    Guard,
    /// Also cancel the siblings on the first abnormal exit and answer `join`.
    Nursery,
}

/// Spawn a scope owned by the caller. The caller must hold a spawn capability; the scope is a
/// child of the caller (it counts against the caller's `children` quota).
pub(crate) async fn open<S: Syscalls>(sys: &S, mode: Mode) -> Result<Spawned, SysError> {
    let owner = sys.self_cap();
    let args = tagged(
        "scope",
        vec![
            ("owner", Value::U64(sys.self_pid().0)),
            ("cap", Value::U64(owner.0)),
            ("nursery", Value::Bool(mode == Mode::Nursery)),
        ],
    );
    let name = match mode {
        Mode::Guard => "supervisor.scope",
        Mode::Nursery => "nursery.scope",
    };
    let opts = SpawnOpts {
        args,
        caps: vec![owner],
        ..SpawnOpts::default()
    };
    match sys.spawn(Image::new(name, scope_main::<S>), opts).await {
        Ok(s) => Ok(s),
        Err(e) => {
            let _ = sys.revoke(owner);
            Err(e)
        }
    }
}

/// Hand a freshly spawned child to the scope: the scope takes the root capability and the
/// caller gets back a derived copy with the same rights (valid while the scope keeps the
/// root). If the scope cannot take it, the child is killed (nothing would then bound its
/// life) and the error is returned.
pub(crate) async fn adopt<S: Syscalls>(
    sys: &S,
    scope: CapRef,
    child: Spawned,
) -> Result<CapRef, SysError> {
    let mine = match sys.derive(child.cap, Rights::CHILD) {
        Ok(c) => c,
        Err(e) => {
            let _ = sys.signal(child.cap, Some(ExitReason::Shutdown)).await;
            return Err(e);
        }
    };
    let msg = tagged("adopt", vec![("pid", Value::U64(child.pid.0))]);
    let opts = SendOpts {
        caps: vec![child.cap],
        ..SendOpts::default()
    };
    match sys.send(scope, Body::Value(msg), opts).await {
        Ok(()) => Ok(mine),
        Err(e) => {
            let _ = sys.signal(child.cap, Some(ExitReason::Shutdown)).await;
            let _ = sys.revoke(child.cap);
            Err(e.into())
        }
    }
}

struct Kid {
    pid: Pid,
    cap: CapRef,
    alive: bool,
}

async fn kill_all<S: Syscalls>(sys: &S, kids: &mut [Kid]) {
    for k in kids.iter_mut().rev().filter(|k| k.alive) {
        let _ = sys.signal(k.cap, Some(ExitReason::Shutdown)).await;
        k.alive = false;
    }
}

async fn scope_main<S: Syscalls>(sys: S, args: Value) -> Result<(), ExitReason> {
    let field = |k: &str| args.get(k).and_then(Value::as_u64);
    let (Some(owner), Some(owner_cap)) = (field("owner").map(Pid), field("cap").map(CapRef)) else {
        return Err(ExitReason::fault("scope: bad arguments"));
    };
    let nursery = args.get("nursery") == Some(&Value::Bool(true));
    // If the owner is already dead the down arrives at once. The capability is not needed
    // after this: the monitor outlives it.
    sys.monitor(owner_cap).await?;
    let _ = sys.revoke(owner_cap);

    let mut kids: Vec<Kid> = Vec::new();
    let mut failed: Option<(Pid, ExitReason)> = None;
    let mut join: Option<agentos_abi::Message> = None;
    loop {
        if join.is_some() && kids.iter().all(|k| !k.alive) {
            if let Some(req) = join.take() {
                let f = match &failed {
                    Some((pid, reason)) => Value::Map(vec![
                        ("pid".to_owned(), Value::U64(pid.0)),
                        ("reason".to_owned(), reason_to_value(reason)),
                    ]),
                    None => Value::Unit,
                };
                answer(&sys, req, tagged("joined", vec![("failed", f)]), Vec::new()).await;
                return Ok(());
            }
        }
        let m = sys.recv().await;
        if let Some((pid, reason)) = genuine_down(&m) {
            if pid == owner {
                kill_all(&sys, &mut kids).await;
                return Ok(());
            }
            let Some(i) = kids.iter().position(|k| k.pid == pid && k.alive) else {
                continue;
            };
            kids[i].alive = false;
            if !nursery {
                let _ = sys.revoke(kids[i].cap);
                kids.remove(i);
            } else if failed.is_none() && !reason.is_normal() {
                failed = Some((pid, reason.clone()));
                kill_all(&sys, &mut kids).await;
            }
            continue;
        }
        if m.from != owner {
            drop_caps(&sys, &m);
            continue;
        }
        match tag_of(&m) {
            Some("adopt") => {
                let (Some(pid), Some(&cap)) = (u64_field(&m, "pid").map(Pid), m.caps.first())
                else {
                    drop_caps(&sys, &m);
                    continue;
                };
                // A child adopted into a cancelled nursery is cancelled at once.
                if failed.is_some() {
                    let _ = sys.signal(cap, Some(ExitReason::Shutdown)).await;
                    let _ = sys.revoke(cap);
                    continue;
                }
                kids.push(Kid {
                    pid,
                    cap,
                    alive: true,
                });
                // Already dead? Then the down arrives at once.
                if sys.monitor(cap).await.is_err() {
                    kids.pop();
                    let _ = sys.revoke(cap);
                }
            }
            Some("join") if nursery && join.is_none() => join = Some(m),
            _ => drop_caps(&sys, &m),
        }
    }
}
