//! The syscall surface: what a process can do, as a trait a kernel implements.
//!
//! Programs are written against [`Syscalls`], not against a kernel type, so userland (and any
//! fork of it) keeps working on any kernel that implements this trait. Names follow the seed in
//! snake_case. Blocking syscalls are `async`: they park the process and let others run.
//!
//! `dial` and `spawn_remote` reach processes on other nodes through proxy capabilities; a proxy
//! carries an address, never authority on the peer.

use crate::cap::{CapInfo, Rights, Scope};
use crate::error::{SendError, SysError};
use crate::exit::ExitReason;
use crate::ids::{CapRef, MonitorRef, NodeId, Pid};
use crate::memory::{RememberOpts, SegId, Segment};
use crate::msg::{Body, Message, SysMsg};
use crate::quota::{Budget, Quota, Usage};
use crate::value::Value;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// What a process's main returns. `Err(reason)` ends it with that reason.
pub type ProcResult = Result<(), ExitReason>;

/// A process's main future, boxed so the kernel can hold processes of any image.
pub type ProcFuture = Pin<Box<dyn Future<Output = ProcResult> + Send + 'static>>;

impl From<SysError> for ExitReason {
    fn from(e: SysError) -> Self {
        match e {
            SysError::Quota(m) => ExitReason::Quota { resource: m },
            other => ExitReason::Fault {
                error: other.to_string(),
            },
        }
    }
}

impl From<SendError> for ExitReason {
    fn from(e: SendError) -> Self {
        SysError::from(e).into()
    }
}

type MainFn<S> = dyn Fn(S, Value) -> ProcFuture + Send + Sync;

/// A process image: a name plus an async main that receives its syscall handle and args.
pub struct Image<S> {
    name: Arc<str>,
    main: Arc<MainFn<S>>,
}

impl<S> Clone for Image<S> {
    fn clone(&self) -> Self {
        Image {
            name: self.name.clone(),
            main: self.main.clone(),
        }
    }
}

impl<S> fmt::Debug for Image<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Image({})", self.name)
    }
}

impl<S: 'static> Image<S> {
    /// An image from an async function or closure.
    pub fn new<F, Fut>(name: &str, main: F) -> Self
    where
        F: Fn(S, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ProcResult> + Send + 'static,
    {
        Image {
            name: Arc::from(name),
            main: Arc::new(move |s, a| Box::pin(main(s, a))),
        }
    }
    /// The same main under another name (one agent image, many roles in `ps`).
    pub fn renamed(mut self, name: &str) -> Self {
        self.name = Arc::from(name);
        self
    }
    /// The image name (shown in `ps` and the event log).
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }
    /// Start the main: build the future the kernel will poll.
    pub fn start(&self, sys: S, args: Value) -> ProcFuture {
        (self.main)(sys, args)
    }
}

/// Options for `send`.
#[derive(Debug, Default, Clone)]
pub struct SendOpts {
    /// Capabilities to transfer with the message (the caller must own them; ownership moves).
    pub caps: Vec<CapRef>,
    /// Correlation id.
    pub corr: Option<u64>,
    /// Advisory deadline (kernel-clock ms).
    pub deadline: Option<u64>,
}

/// Options for `spawn`.
#[derive(Debug, Default, Clone)]
pub struct SpawnOpts {
    /// Arguments handed to the child's main.
    pub args: Value,
    /// The child's account limits (a child account under the caller's).
    pub quota: Quota,
    /// Capabilities to transfer to the child.
    pub caps: Vec<CapRef>,
    /// Capabilities to transfer to the child under a name, as the boot grant names devices:
    /// the child finds them with [`Syscalls::grant`] instead of raw numbers in its args.
    pub grants: Vec<(Arc<str>, CapRef)>,
    /// Link parent and child: each gets a `down` message when the other dies.
    pub link: bool,
    /// Scheduling priority (higher runs first; 0 is normal).
    pub priority: i32,
    /// Relative deadline in ms: the child is terminated with `Deadline` if still alive then.
    pub deadline_ms: Option<u64>,
}

/// What `spawn` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spawned {
    /// The child's pid.
    pub pid: Pid,
    /// A `send + monitor + kill` capability over the child, owned by the caller.
    pub cap: CapRef,
}

/// Options for `sched`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SchedOpts {
    /// New priority.
    pub priority: Option<i32>,
    /// New relative deadline in ms (re-arms the deadline).
    pub deadline_ms: Option<u64>,
}

/// Options for `attenuate`.
#[derive(Debug, Default, Clone)]
pub struct Attenuation {
    /// The rights to keep (`None` keeps all of the parent's).
    pub rights: Option<Rights>,
    /// Add an expiry caveat this many ms from now on the kernel clock.
    pub expires_in_ms: Option<u64>,
    /// Narrow a device cap's scope: these pairs are laid over the parent's scope
    /// ([`Scope::overlay`]) and the result must narrow it ([`Scope::narrows`]), or the
    /// attenuation fails with `CapError::Widen`. `None` keeps the parent's scope.
    pub scope: Option<Scope>,
}

/// Which message a selective receive takes: the first in the mailbox that matches. The others
/// stay where they are, in order. Matching is plain data, so the kernel tests it under its
/// lock without running program code; for a predicate over the body use
/// [`Syscalls::recv_where`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// Any message (a plain receive).
    #[default]
    Any,
    /// A message carrying this correlation id.
    Corr(u64),
    /// A message from this sender.
    From(Pid),
    /// The kernel's `Down` for this process (a genuine one: sent by the dead process itself).
    Down(Pid),
    /// A reply to a request: a message with correlation id `corr`, or the kernel's `Down` /
    /// `RemoteDown` for `monitor` (a monitor's down carries its reference as its correlation
    /// id), so a client that monitors its server never waits for a reply from the dead.
    Reply {
        /// The request's correlation id.
        corr: u64,
        /// The monitor on the server.
        monitor: MonitorRef,
    },
}

impl Select {
    /// Whether `m` is what this selects.
    pub fn matches(&self, m: &Message) -> bool {
        let down =
            |p: Pid| matches!(m.sys(), Some(SysMsg::Down { pid, .. }) if *pid == p && m.from == p);
        match *self {
            Select::Any => true,
            Select::Corr(c) => m.corr == Some(c),
            Select::From(p) => m.from == p,
            Select::Down(p) => down(p),
            Select::Reply { corr, monitor } => {
                m.corr == Some(corr)
                    || (m.corr == Some(monitor.0)
                        && matches!(
                            m.sys(),
                            Some(SysMsg::Down { .. } | SysMsg::RemoteDown { .. })
                        ))
            }
        }
    }
}

/// How a started child answered [`Syscalls::await_start`].
#[derive(Debug, Clone, PartialEq)]
pub enum Started {
    /// It called [`Syscalls::init_ack`] with this value.
    Acked(Value),
    /// It died before acknowledging.
    Exited(ExitReason),
}

/// Log levels for the `log` syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected.
    Warn,
    /// A failure.
    Error,
}

/// A cleanup action run when the process terminates, however it terminates.
pub type Cleanup = Box<dyn FnOnce() + Send>;

/// The syscall surface, implemented by a kernel for each process (the handle closes over its
/// pid). Every privileged call is gated by a capability the caller must own.
pub trait Syscalls: Clone + Send + Sync + Sized + 'static {
    /// This process's pid.
    fn self_pid(&self) -> Pid;
    /// Mint a `send + monitor` capability over this process (hand it out so others can reach you).
    fn self_cap(&self) -> CapRef;
    /// Register a service name for this process (first come; names vanish when it dies).
    fn register(&self, name: &str) -> Result<(), SysError>;
    /// Drop a name this process holds (no-op otherwise).
    fn unregister(&self, name: &str);
    /// Look a name up: a fresh `send` capability over its owner, or `None`.
    fn lookup(&self, name: &str) -> impl Future<Output = Option<CapRef>> + Send;
    /// Take the next message, parking until one arrives.
    fn recv(&self) -> impl Future<Output = Message> + Send;
    /// Erlang's `receive … after`: take the first message `select` matches, leaving the rest
    /// of the mailbox in order, parking until one arrives; `None` once the kernel clock reaches
    /// `deadline` (absolute ms, as `now` reads it; `None` waits forever). In deterministic mode
    /// the deadline is a virtual-clock timer: it fires when nothing else can run, without wall
    /// time passing.
    fn recv_until(
        &self,
        select: Select,
        deadline: Option<u64>,
    ) -> impl Future<Output = Option<Message>> + Send;
    /// A receive that gives up after `ms` of kernel time: `recv_until(Select::Any, now + ms)`.
    fn recv_timeout(&self, ms: u64) -> impl Future<Output = Option<Message>> + Send {
        let deadline = self.now().saturating_add(ms);
        self.recv_until(Select::Any, Some(deadline))
    }
    /// Selective receive with a predicate over the message: the first message `pred` accepts,
    /// the rest left in order; `None` at `deadline`. `pred` runs in this process, never under
    /// the kernel lock, and sees each message at most once per call.
    fn recv_where<F>(
        &self,
        pred: F,
        deadline: Option<u64>,
    ) -> impl Future<Output = Option<Message>> + Send
    where
        F: FnMut(&Message) -> bool + Send;
    /// Take the first message `select` matches without parking; `None` if there is none.
    fn try_recv(&self, select: Select) -> Option<Message>;
    /// How many messages wait in this process's mailbox.
    fn mailbox_len(&self) -> usize;
    /// Send `body` to the process `to` designates (`send` right). Parks while the target's
    /// bounded mailbox is full (backpressure); parked senders resume, in the order they parked,
    /// once the receiver has drained it to half. A failed send hands the body back.
    fn send(
        &self,
        to: CapRef,
        body: Body,
        opts: SendOpts,
    ) -> impl Future<Output = Result<(), SendError>> + Send;
    /// Spawn a child (needs a held `spawn` capability; charges `children` up the account chain).
    fn spawn(
        &self,
        image: Image<Self>,
        opts: SpawnOpts,
    ) -> impl Future<Output = Result<Spawned, SysError>> + Send;
    /// End this process now with `reason`. Never returns.
    fn exit(&self, reason: ExitReason) -> impl Future<Output = Infallible> + Send;
    /// Derive a cap with a subset of the parent's rights (revoked with the parent).
    fn derive(&self, cap: CapRef, rights: Rights) -> Result<CapRef, SysError>;
    /// Derive a cap with fewer rights and/or added caveats (an expiry on the kernel clock).
    fn attenuate(&self, cap: CapRef, how: Attenuation) -> Result<CapRef, SysError>;
    /// Revoke a cap this process owns and, transitively, everything derived from it.
    fn revoke(&self, cap: CapRef) -> Result<(), SysError>;
    /// Inspect a cap this process owns: what it designates, its rights, expiry and scope.
    fn cap_info(&self, cap: CapRef) -> Result<CapInfo, SysError>;
    /// A capability the spawner handed over by name ([`SpawnOpts::grants`]), if this process
    /// still owns it.
    fn grant(&self, name: &str) -> Option<CapRef>;
    /// OTP's `init_ack`: tell whoever waits in [`Syscalls::await_start`] on this process that
    /// it has started, with `info`. Only the first call counts.
    fn init_ack(&self, info: Value);
    /// Wait for a child's [`Syscalls::init_ack`] (`monitor` right on it): its value, or its
    /// exit reason if it died first; `Err(SysError::Timeout)` once the kernel clock reaches
    /// `deadline` (absolute ms).
    fn await_start(
        &self,
        child: CapRef,
        deadline: Option<u64>,
    ) -> impl Future<Output = Result<Started, SysError>> + Send;
    /// Open a device (`open` right on a device cap): returns a handle cap with the device
    /// cap's `read`/`write` rights (and no others) and its scope, which the driver receives.
    fn open(&self, device: CapRef) -> impl Future<Output = Result<CapRef, SysError>> + Send;
    /// One driver read; its cost is charged to this process's account chain.
    fn read(
        &self,
        handle: CapRef,
        req: Value,
    ) -> impl Future<Output = Result<Value, SysError>> + Send;
    /// Many driver reads run concurrently while the process is parked; results in order.
    fn read_all(
        &self,
        handle: CapRef,
        reqs: Vec<Value>,
    ) -> impl Future<Output = Result<Vec<Value>, SysError>> + Send;
    /// One driver write; its cost is charged.
    fn write(
        &self,
        handle: CapRef,
        data: Value,
    ) -> impl Future<Output = Result<Value, SysError>> + Send;
    /// Monitor a process (`monitor` right): a `down` message arrives when it dies, at once if
    /// it is already dead. Returns the monitor's reference, which the `down` carries as its
    /// correlation id. Each call is a monitor of its own (Erlang's semantics): monitoring twice
    /// gives two references and two downs, and a link's down is separate from a monitor's.
    fn monitor(&self, target: CapRef) -> impl Future<Output = Result<MonitorRef, SysError>> + Send;
    /// Stop a monitor. With `flush`, a `down` for it already in the mailbox is removed too (one
    /// a link to the same process put there stays). Returns false if the monitor was not active
    /// (already fired, stopped, or never this process's).
    fn demonitor(&self, mref: MonitorRef, flush: bool) -> bool;
    /// Wait for a process to exit (`monitor` right); works after its death too, while the
    /// bounded reaped cache remembers it (`SysError::Forgotten` after that).
    fn waitpid(&self, target: CapRef) -> impl Future<Output = Result<ExitReason, SysError>> + Send;
    /// Force-terminate a process (`kill` right); default reason `Killed { by: self }`.
    fn signal(
        &self,
        target: CapRef,
        reason: Option<ExitReason>,
    ) -> impl Future<Output = Result<(), SysError>> + Send;
    /// SIGSTOP (`kill` right): the target is never dispatched until resumed.
    fn suspend(&self, target: CapRef) -> impl Future<Output = Result<(), SysError>> + Send;
    /// SIGCONT (`kill` right).
    fn resume(&self, target: CapRef) -> impl Future<Output = Result<(), SysError>> + Send;
    /// SIGTERM (`kill` right): a catchable `Term` message in the target's mailbox.
    fn term(&self, target: CapRef) -> impl Future<Output = Result<(), SysError>> + Send;
    /// Sleep on the kernel clock.
    fn sleep(&self, ms: u64) -> impl Future<Output = ()> + Send;
    /// Give up the CPU and re-enter the ready set.
    fn yield_now(&self) -> impl Future<Output = ()> + Send;
    /// Change this process's priority and/or deadline.
    fn sched(&self, opts: SchedOpts);
    /// Charge this process's account for work it metered itself — a sandbox's guest fuel as
    /// [`crate::quota::Meter::Cpu`] reductions — all or nothing up the chain, like a driver's
    /// cost. Only the cumulative meters (tokens, tool calls, usd, cpu) can be charged. A charge
    /// the quota refuses ends the process with a quota exit (it does not return).
    fn charge(
        &self,
        meter: crate::quota::Meter,
        n: u64,
    ) -> impl Future<Output = Result<(), SysError>> + Send;
    /// What this process's account has left.
    fn budget(&self) -> Budget;
    /// What this process's account subtree has spent.
    fn usage(&self) -> Usage;
    /// The kernel clock in ms (virtual in deterministic mode).
    fn now(&self) -> u64;
    /// Emit a diagnostic line.
    fn log(&self, level: LogLevel, msg: &str);
    /// Run `f` when this process terminates, however it terminates (LIFO order).
    fn on_cleanup(&self, f: Cleanup);
    /// Add a segment to this process's context memory. Past 80% of the account's `mem`
    /// ceiling the coldest unpinned segments page out (down to 60%, with a summary segment);
    /// if pinned segments alone exceed the ceiling the process ends with a `mem` quota exit.
    fn remember(
        &self,
        body: Value,
        opts: RememberOpts,
    ) -> impl Future<Output = Result<SegId, SysError>> + Send;
    /// The resident segments, coldest first.
    fn working_set(&self) -> Vec<Segment>;
    /// Bring the best `k` paged-out matches for `query` back into the working set (then page
    /// again if needed); returns them, best first.
    fn recall(
        &self,
        query: &str,
        k: usize,
    ) -> impl Future<Output = Result<Vec<Segment>, SysError>> + Send;
    /// A `send + monitor` proxy capability to process `pid` on node `node` (an address: the
    /// peer decides what reaches its processes). Sending through it needs a connected peer.
    fn dial(&self, node: &NodeId, pid: Pid) -> Result<CapRef, SysError>;
    /// Ask node `node` to spawn the image it registered as `name`; parks until the peer answers
    /// (or a timeout). Returns a `send + monitor` proxy capability to the new process, which
    /// receives a `send` proxy back to the caller in its boot grant.
    fn spawn_remote(
        &self,
        node: &NodeId,
        name: &str,
        args: Value,
    ) -> impl Future<Output = Result<CapRef, SysError>> + Send;
    /// Drop a segment, resident or paged out; false if there is none.
    fn forget(&self, id: SegId) -> bool;
    /// Pin (never page out) or unpin a resident segment; false if it is not resident.
    fn pin(&self, id: SegId, on: bool) -> bool;
}
