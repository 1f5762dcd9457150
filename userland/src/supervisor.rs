//! The supervisor: a process that starts children from a spec and restarts them when they die.
//!
//! Build one with [`supervisor`] from a [`SupervisorSpec`] and spawn the [`Image`] like any
//! other; the spawner must hand it a spawn capability (in `SpawnOpts::caps`), and every
//! capability named in a [`ChildSpec::caps`] list.
//!
//! Invariants (the seed's, made explicit):
//! - children start in spec order, each linked to the supervisor, and stop in the reverse order
//!   (on `Term`, when restart intensity is exceeded, when a linked parent dies). Starting is
//!   spawning: a child's own initialisation is not awaited before the next one starts (a
//!   nested supervisor starts its children when it first runs);
//! - [`Restart::Permanent`] children are always restarted, [`Restart::Transient`] ones only
//!   after an abnormal exit (anything but `Normal`/`Shutdown`), [`Restart::Temporary`] ones
//!   never (they leave the child list);
//! - the strategy picks who restarts: [`Strategy::OneForOne`] the child alone,
//!   [`Strategy::OneForAll`] every child (the others are stopped first, in reverse order),
//!   [`Strategy::RestForOne`] the child and the ones started after it; a temporary child stopped
//!   that way is not restarted;
//! - more than [`Intensity::max_restarts`] restarts within [`Intensity::period_ms`] and the
//!   supervisor stops every child and exits with a fault ([`INTENSITY_EXCEEDED`]);
//! - a child that dies again before running [`Backoff::stable_ms`] is flapping: its first
//!   restart is immediate, then each restart waits [`Backoff::base_ms`] doubled per further
//!   flap, up to [`Backoff::max_ms`]; a run of `stable_ms` or more resets it. The wait is a
//!   `sleep` on the kernel clock (virtual in deterministic mode); messages queue meanwhile;
//! - when the supervisor dies, however it dies, its children die too (a scope process holds
//!   their root capabilities and kills them; see `scope`).
//!
//! Messages it understands: `Down` of its children (links), `Term` (stop the children in
//! reverse order, then exit normally), a `Down` from any other linked process (its parent, if
//! the parent spawned it linked: stop everything and exit), and the [`which_children`] request.

use crate::proto::{self, answer, call, drop_caps, genuine_down, genuine_term, tag_of, tagged};
use crate::scope;
use agentos_abi::{
    Attenuation, CapRef, ExitReason, Image, LogLevel, Pid, Quota, Select, SpawnOpts, Started,
    SysError, Syscalls, Value,
};
use std::collections::VecDeque;
use std::sync::Arc;
use thiserror::Error;

/// The fault a supervisor exits with when its restart intensity is exceeded.
pub const INTENSITY_EXCEEDED: &str = "supervisor: restart intensity exceeded";

/// Which children restart when one dies.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Strategy {
    /// Only the child that died.
    #[default]
    OneForOne,
    /// Every child: the others are stopped (reverse order), then all start again in order.
    OneForAll,
    /// The child that died and every child after it in the spec.
    RestForOne,
}

/// When a child is restarted.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Restart {
    /// Always.
    #[default]
    Permanent,
    /// Only after an abnormal exit (not `Normal` or `Shutdown`).
    Transient,
    /// Never; once it exits it leaves the child list.
    Temporary,
}

/// How a child is stopped.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Shutdown {
    /// Kill it at once with reason `Shutdown` (the seed's behaviour).
    #[default]
    Brutal,
    /// Send it a `Term`, wait this many ms of kernel time for it to exit, then kill it.
    Timeout(u64),
}

/// Restart intensity: more than `max_restarts` restarts within `period_ms` and the supervisor
/// gives up.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Intensity {
    /// Restarts tolerated within a period.
    pub max_restarts: u32,
    /// The sliding window, in ms of kernel time.
    pub period_ms: u64,
}

impl Default for Intensity {
    /// The seed's: 5 restarts per 5 s.
    fn default() -> Self {
        Intensity {
            max_restarts: 5,
            period_ms: 5_000,
        }
    }
}

/// Flapping backoff: how long a restart of a child that keeps dying waits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Backoff {
    /// The wait before the second restart in a row; it doubles for each further one.
    pub base_ms: u64,
    /// The cap on the wait.
    pub max_ms: u64,
    /// A child that ran this long before dying is stable again: its backoff resets.
    pub stable_ms: u64,
}

impl Default for Backoff {
    /// The seed's: 100 ms doubling up to 30 s; stable after 5 s (its intensity period).
    fn default() -> Self {
        Backoff {
            base_ms: 100,
            max_ms: 30_000,
            stable_ms: 5_000,
        }
    }
}

impl Backoff {
    /// The wait before a restart after `flaps` quick deaths in a row (0 for the first).
    pub fn delay(&self, flaps: u32) -> u64 {
        match flaps {
            0 => 0,
            n => {
                let shift = (n - 1).min(63);
                self.base_ms.saturating_mul(1u64 << shift).min(self.max_ms)
            }
        }
    }
}

/// One child of a supervisor.
pub struct ChildSpec<S> {
    /// Unique within the supervisor; names the child in [`which_children`] and in logs.
    pub id: String,
    /// What to run.
    pub image: Image<S>,
    /// Its args, given again on every start.
    pub args: Value,
    /// When it restarts.
    pub restart: Restart,
    /// How it stops.
    pub shutdown: Shutdown,
    /// Its account limits, on every start.
    pub quota: Quota,
    /// Capabilities the supervisor holds for it, by name. Every start hands the child a fresh
    /// copy of each (same rights, derived, so revoking the supervisor's revokes the copies) and
    /// puts the copy's ref in its args map under that name: the child reads
    /// `CapRef(args.get(name)?.as_u64()?)`, or better `sys.grant(name)` (the copies go as
    /// named grants too). A child with caps needs `Unit` or map args.
    pub caps: Vec<(String, CapRef)>,
    /// Acknowledged start (OTP's `init_ack`): `Some(ms)` makes the supervisor wait, after
    /// spawning this child, until it calls `Syscalls::init_ack` (or dies) before it starts the
    /// next one; a child that does neither within `ms` of kernel time is killed and counts as a
    /// failed start. `None` (the default): started means spawned.
    pub start_ack: Option<u64>,
}

impl<S> Clone for ChildSpec<S> {
    fn clone(&self) -> Self {
        ChildSpec {
            id: self.id.clone(),
            image: self.image.clone(),
            args: self.args.clone(),
            restart: self.restart,
            shutdown: self.shutdown,
            quota: self.quota,
            caps: self.caps.clone(),
            start_ack: self.start_ack,
        }
    }
}

impl<S> std::fmt::Debug for ChildSpec<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("image", &self.image)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .finish_non_exhaustive()
    }
}

impl<S> ChildSpec<S> {
    /// A permanent child with no args, default quota and brutal shutdown.
    pub fn new(id: impl Into<String>, image: Image<S>) -> Self {
        ChildSpec {
            id: id.into(),
            image,
            args: Value::Unit,
            restart: Restart::Permanent,
            shutdown: Shutdown::Brutal,
            quota: Quota::default(),
            caps: Vec::new(),
            start_ack: None,
        }
    }
    /// Wait for this child's `init_ack` (up to `ms` of kernel time) before starting the next.
    pub fn start_ack(mut self, ms: u64) -> Self {
        self.start_ack = Some(ms);
        self
    }
    /// Set its args.
    pub fn args(mut self, args: impl Into<Value>) -> Self {
        self.args = args.into();
        self
    }
    /// Set its restart type.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }
    /// Set how it stops.
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }
    /// Set its account limits.
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quota = quota;
        self
    }
    /// A capability (held by the supervisor) to hand a copy of on every start, its ref put in
    /// the child's args under `name`.
    pub fn cap(mut self, name: impl Into<String>, cap: CapRef) -> Self {
        self.caps.push((name.into(), cap));
        self
    }
}

/// What a supervisor runs and how it restarts.
pub struct SupervisorSpec<S> {
    /// Who restarts when a child dies.
    pub strategy: Strategy,
    /// When to give up.
    pub intensity: Intensity,
    /// How a flapping child's restarts are spaced.
    pub backoff: Backoff,
    /// The children, in start order.
    pub children: Vec<ChildSpec<S>>,
}

impl<S> std::fmt::Debug for SupervisorSpec<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisorSpec")
            .field("strategy", &self.strategy)
            .field("intensity", &self.intensity)
            .field("backoff", &self.backoff)
            .field("children", &self.children)
            .finish()
    }
}

impl<S> SupervisorSpec<S> {
    /// A spec with this strategy, default intensity and backoff, and no children yet.
    pub fn new(strategy: Strategy) -> Self {
        SupervisorSpec {
            strategy,
            intensity: Intensity::default(),
            backoff: Backoff::default(),
            children: Vec::new(),
        }
    }
    /// Add a child (after the ones already there).
    pub fn child(mut self, child: ChildSpec<S>) -> Self {
        self.children.push(child);
        self
    }
    /// Set the restart intensity.
    pub fn intensity(mut self, max_restarts: u32, period_ms: u64) -> Self {
        self.intensity = Intensity {
            max_restarts,
            period_ms,
        };
        self
    }
    /// Set the flapping backoff.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
}

/// Why a supervisor could not be built or asked something.
#[derive(Clone, PartialEq, Debug, Error)]
pub enum SupervisorError {
    /// Two children share an id.
    #[error("supervisor: duplicate child id \"{0}\"")]
    DuplicateChild(String),
    /// A child has capabilities but args that are neither `Unit` nor a map.
    #[error("supervisor: child \"{0}\" has caps, so its args must be a map")]
    ArgsNotAMap(String),
    /// The request could not be delivered (the supervisor is dead, or the cap lacks `send`).
    #[error("supervisor: {0}")]
    Sys(#[from] SysError),
    /// The supervisor answered something this client does not understand.
    #[error("supervisor: malformed reply")]
    BadReply,
}

/// A child as [`which_children`] reports it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ChildInfo {
    /// Its spec id.
    pub id: String,
    /// Its current pid, or `None` while it is not running (a transient child that finished,
    /// or one waiting out its backoff).
    pub pid: Option<Pid>,
}

/// The supervisor image for `spec`. Fails if two children share an id.
pub fn supervisor<S: Syscalls>(spec: SupervisorSpec<S>) -> Result<Image<S>, SupervisorError> {
    for (i, c) in spec.children.iter().enumerate() {
        if spec.children[..i].iter().any(|o| o.id == c.id) {
            return Err(SupervisorError::DuplicateChild(c.id.clone()));
        }
        if !c.caps.is_empty() && !matches!(c.args, Value::Unit | Value::Map(_)) {
            return Err(SupervisorError::ArgsNotAMap(c.id.clone()));
        }
    }
    let spec = Arc::new(spec);
    Ok(Image::new("supervisor", move |sys: S, _args: Value| {
        let spec = spec.clone();
        async move { Sup::new(sys, spec).run().await }
    }))
}

/// Ask the supervisor behind `sup` (a `send` cap) for its children, in spec order. Other
/// messages stay in the mailbox, in order. A supervisor waiting out a backoff answers once the
/// wait is over; with a `send + monitor` cap, one that dies first fails the call.
pub async fn which_children<S: Syscalls>(
    sys: &S,
    sup: CapRef,
) -> Result<Vec<ChildInfo>, SupervisorError> {
    let reply = call(sys, sup, tagged("which_children", Vec::new())).await?;
    proto::drop_caps(sys, &reply);
    let Some(Value::List(items)) = reply.body.as_value().and_then(|v| v.get("children")) else {
        return Err(SupervisorError::BadReply);
    };
    items
        .iter()
        .map(|it| {
            let id = it.get("id").and_then(Value::as_str);
            let pid = it.get("pid").and_then(Value::as_u64).map(Pid);
            id.map(|id| ChildInfo {
                id: id.to_owned(),
                pid,
            })
            .ok_or(SupervisorError::BadReply)
        })
        .collect()
}

struct Slot {
    /// The running child: pid and the supervisor's (derived) capability over it.
    live: Option<(Pid, CapRef)>,
    /// Kernel time of its last start.
    started_at: u64,
    /// Quick deaths in a row.
    flaps: u32,
    /// A temporary child that exited: out of the child list for good.
    gone: bool,
}

struct Sup<S: Syscalls> {
    sys: S,
    spec: Arc<SupervisorSpec<S>>,
    slots: Vec<Slot>,
    /// The scope holding the children's root caps.
    scope: Option<(Pid, CapRef)>,
    /// Children the supervisor stopped itself: their downs are expected, not crashes.
    stopping: Vec<Pid>,
    /// Kernel times of recent restarts (the intensity window).
    restarts: VecDeque<u64>,
}

impl<S: Syscalls> Sup<S> {
    fn new(sys: S, spec: Arc<SupervisorSpec<S>>) -> Self {
        let slots = spec
            .children
            .iter()
            .map(|_| Slot {
                live: None,
                started_at: 0,
                flaps: 0,
                gone: false,
            })
            .collect();
        Sup {
            sys,
            spec,
            slots,
            scope: None,
            stopping: Vec::new(),
            restarts: VecDeque::new(),
        }
    }

    async fn run(mut self) -> Result<(), ExitReason> {
        let scope = scope::open(&self.sys, scope::Mode::Guard)
            .await
            .map_err(|e| ExitReason::fault(format!("supervisor: cannot open its scope: {e}")))?;
        self.sys.monitor(scope.cap).await?;
        self.scope = Some((scope.pid, scope.cap));
        for i in 0..self.slots.len() {
            if let Err(e) = self.start(i).await {
                let id = self.spec.children[i].id.clone();
                self.stop_all().await;
                return Err(ExitReason::fault(format!(
                    "supervisor: child \"{id}\" failed to start: {e}"
                )));
            }
        }
        loop {
            let m = self.sys.recv().await;
            if let Some((pid, reason)) = genuine_down(&m) {
                let reason = reason.clone();
                self.on_down(pid, reason).await?;
            } else if genuine_term(&m) {
                self.stop_all().await;
                return Ok(());
            } else if tag_of(&m) == Some("which_children") {
                let list = self.children_value();
                answer(
                    &self.sys,
                    m,
                    tagged("children", vec![("children", list)]),
                    vec![],
                )
                .await;
            } else {
                // Anything unknown.
                drop_caps(&self.sys, &m);
            }
        }
    }

    fn children_value(&self) -> Value {
        let items = self
            .spec
            .children
            .iter()
            .zip(&self.slots)
            .filter(|(_, s)| !s.gone)
            .map(|(c, s)| {
                let pid = s.live.map_or(Value::Unit, |(p, _)| Value::U64(p.0));
                Value::Map(vec![
                    ("id".to_owned(), Value::Str(c.id.clone())),
                    ("pid".to_owned(), pid),
                ])
            })
            .collect();
        Value::List(items)
    }

    /// A linked or monitored process died.
    async fn on_down(&mut self, pid: Pid, reason: ExitReason) -> Result<(), ExitReason> {
        if let Some(k) = self.stopping.iter().position(|p| *p == pid) {
            self.stopping.swap_remove(k);
            return Ok(());
        }
        if self.scope.is_some_and(|(p, _)| p == pid) {
            self.scope = None;
            self.stop_all().await;
            return Err(ExitReason::fault("supervisor: its scope process died"));
        }
        let Some(i) = self
            .slots
            .iter()
            .position(|s| s.live.is_some_and(|(p, _)| p == pid))
        else {
            // Not a child, not the scope, not stopping: the only other link is the parent's.
            self.stop_all().await;
            return if reason.is_normal() {
                Ok(())
            } else {
                Err(ExitReason::Linked { pid })
            };
        };
        self.slots[i].live = None;
        let c = &self.spec.children[i];
        match c.restart {
            Restart::Temporary => {
                self.slots[i].gone = true;
                return Ok(());
            }
            Restart::Transient if reason.is_normal() => return Ok(()),
            _ => {}
        }
        self.sys.log(
            LogLevel::Warn,
            &format!("supervisor: child \"{}\" ({pid}) exited: {reason}", c.id),
        );
        self.restart(i).await
    }

    /// Restart after child `i` died, per the strategy; a start that fails counts as another
    /// death of that child.
    async fn restart(&mut self, mut i: usize) -> Result<(), ExitReason> {
        loop {
            let now = self.sys.now();
            let Intensity {
                max_restarts,
                period_ms,
            } = self.spec.intensity;
            self.restarts.push_back(now);
            while self
                .restarts
                .front()
                .is_some_and(|t| now.saturating_sub(*t) > period_ms)
            {
                self.restarts.pop_front();
            }
            if self.restarts.len() > max_restarts as usize {
                self.stop_all().await;
                return Err(ExitReason::fault(INTENSITY_EXCEEDED));
            }
            let backoff = self.spec.backoff;
            let slot = &mut self.slots[i];
            if now.saturating_sub(slot.started_at) >= backoff.stable_ms {
                slot.flaps = 0;
            }
            let delay = backoff.delay(slot.flaps);
            slot.flaps = slot.flaps.saturating_add(1);

            let n = self.slots.len();
            let group: Vec<usize> = match self.spec.strategy {
                Strategy::OneForOne => vec![i],
                Strategy::OneForAll => (0..n).collect(),
                Strategy::RestForOne => (i..n).collect(),
            };
            for &j in group.iter().rev() {
                if j != i && self.slots[j].live.is_some() {
                    self.stop(j).await;
                    if self.spec.children[j].restart == Restart::Temporary {
                        self.slots[j].gone = true;
                    }
                }
            }
            if delay > 0 {
                self.sys.log(
                    LogLevel::Info,
                    &format!(
                        "supervisor: child \"{}\" is flapping; restarting in {delay} ms",
                        self.spec.children[i].id
                    ),
                );
                self.sys.sleep(delay).await;
            }
            let mut failed = None;
            for &j in &group {
                if self.slots[j].gone || self.slots[j].live.is_some() {
                    continue;
                }
                if let Err(e) = self.start(j).await {
                    self.sys.log(
                        LogLevel::Warn,
                        &format!(
                            "supervisor: child \"{}\" failed to restart: {e}",
                            self.spec.children[j].id
                        ),
                    );
                    failed = Some(j);
                    break;
                }
            }
            match failed {
                Some(j) => i = j,
                None => return Ok(()),
            }
        }
    }

    /// Start child `i`: spawn it linked with fresh copies of its caps, and hand its root
    /// capability to the scope.
    async fn start(&mut self, i: usize) -> Result<(), SysError> {
        let c = &self.spec.children[i];
        self.slots[i].started_at = self.sys.now();
        let mut caps = Vec::with_capacity(c.caps.len());
        for (_, cap) in &c.caps {
            match self.sys.attenuate(*cap, Attenuation::default()) {
                Ok(copy) => caps.push(copy),
                Err(e) => {
                    for copy in caps {
                        let _ = self.sys.revoke(copy);
                    }
                    return Err(e);
                }
            }
        }
        let args = if caps.is_empty() {
            c.args.clone()
        } else {
            // The copies go first: a map lookup takes the first match.
            let mut kv: Vec<(String, Value)> = c
                .caps
                .iter()
                .zip(&caps)
                .map(|((name, _), copy)| (name.clone(), Value::U64(copy.0)))
                .collect();
            if let Value::Map(more) = &c.args {
                kv.extend(more.iter().cloned());
            }
            Value::Map(kv)
        };
        let grants = c
            .caps
            .iter()
            .zip(&caps)
            .map(|((name, _), copy)| (Arc::from(name.as_str()), *copy))
            .collect();
        let opts = SpawnOpts {
            args,
            quota: c.quota,
            grants,
            link: true,
            ..SpawnOpts::default()
        };
        let spawned = match self.sys.spawn(c.image.clone(), opts).await {
            Ok(s) => s,
            Err(e) => {
                for copy in caps {
                    let _ = self.sys.revoke(copy);
                }
                return Err(e);
            }
        };
        let Some((_, scope)) = self.scope else {
            return Err(SysError::NoSuchProcess);
        };
        let mine = match scope::adopt(&self.sys, scope, spawned).await {
            Ok(mine) => mine,
            Err(e) => {
                // adopt killed it; its down is expected.
                self.stopping.push(spawned.pid);
                return Err(e);
            }
        };
        self.slots[i].live = Some((spawned.pid, mine));
        let Some(ms) = c.start_ack else {
            return Ok(());
        };
        let deadline = self.sys.now().saturating_add(ms);
        let failed = match self.sys.await_start(mine, Some(deadline)).await {
            Ok(Started::Acked(_)) => return Ok(()),
            Ok(Started::Exited(reason)) => {
                SysError::Unsupported(format!("exited before acknowledging its start: {reason}"))
            }
            Err(e) => {
                let _ = self.sys.signal(mine, Some(ExitReason::Shutdown)).await;
                e
            }
        };
        // A start that failed: its down (it is linked) is expected, not a crash to restart.
        self.slots[i].live = None;
        self.stopping.push(spawned.pid);
        Err(failed)
    }

    /// Stop child `i` per its shutdown spec and wait until it is dead.
    async fn stop(&mut self, i: usize) {
        let Some((pid, cap)) = self.slots[i].live.take() else {
            return;
        };
        match self.spec.children[i].shutdown {
            Shutdown::Brutal => {
                // Terminated synchronously: its down is already on the way to the mailbox.
                self.stopping.push(pid);
                let _ = self.sys.signal(cap, Some(ExitReason::Shutdown)).await;
            }
            Shutdown::Timeout(ms) => self.stop_gently(pid, cap, ms).await,
        }
    }

    /// `Term`, then wait up to `ms` of kernel time for the child's down (it is linked, so one
    /// always comes), killing it if the time runs out first. Other messages stay in the
    /// mailbox, in order (a selective receive with a deadline).
    async fn stop_gently(&mut self, pid: Pid, cap: CapRef, ms: u64) {
        let _ = self.sys.term(cap).await;
        let deadline = self.sys.now().saturating_add(ms);
        if self
            .sys
            .recv_until(Select::Down(pid), Some(deadline))
            .await
            .is_some()
        {
            return;
        }
        let _ = self.sys.signal(cap, Some(ExitReason::Shutdown)).await;
        let _ = self.sys.recv_until(Select::Down(pid), None).await;
    }

    /// Stop every child, last started first.
    async fn stop_all(&mut self) {
        for i in (0..self.slots.len()).rev() {
            self.stop(i).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_second_restart_up_to_the_cap() {
        let b = Backoff {
            base_ms: 100,
            max_ms: 500,
            stable_ms: 1_000,
        };
        let waits: Vec<u64> = (0..6).map(|f| b.delay(f)).collect();
        assert_eq!(waits, vec![0, 100, 200, 400, 500, 500]);
        assert_eq!(b.delay(u32::MAX), 500, "no overflow on a long flap run");
    }
}
