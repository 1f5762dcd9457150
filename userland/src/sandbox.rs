//! The sandbox: untrusted code as a WebAssembly process that reaches the kernel only through
//! an allowlist of syscalls.
//!
//! [`Sandbox::new`] compiles a module (binary or WAT) once and checks its imports and entry
//! point; [`Sandbox::image`] is a process image any parent can spawn. Each process runs the
//! guest in its own wasmtime store with a fuel budget ([`SandboxOpts::fuel`]) and a memory
//! ceiling ([`SandboxOpts::memory_bytes`]). The guest gets no ambient authority: its only
//! imports are two host functions, and every effect goes through [`Syscalls`] on the
//! process's own handle, so it holds exactly the capabilities its process holds, minus the
//! syscalls the allowlist leaves out.
//!
//! ## The guest ABI
//!
//! A guest exports its linear memory as `memory` and an entry function `main` (or `_start`)
//! taking nothing and returning nothing or an `i32` (0 is a normal exit, anything else a
//! fault). It may import, from module `agentos`:
//!
//! - `call(name_ptr: i32, name_len: i32, args_ptr: i32, args_len: i32) -> i32` — run syscall
//!   `name` (UTF-8) with `args` (JSON text; an empty slice is `null`). A status `>= 0` is the
//!   byte length of the JSON result, now held by the host; a negative status is an error
//!   ([`STATUS_DENIED`], [`STATUS_UNKNOWN`], [`STATUS_FAILED`], [`STATUS_BAD_ARGS`]) whose
//!   message (plain UTF-8 text) is held instead. The guest keeps running either way.
//! - `result(ptr: i32, cap: i32) -> i32` — copy the held result or message to `ptr`, at most
//!   `cap` bytes, and return its full length (so `cap = 0` asks for the length only); or
//!   [`STATUS_BAD_ARGS`] if the range is outside memory.
//!
//! The syscalls, their JSON arguments and results (caps and pids are numbers):
//!
//! | name | args | result |
//! | --- | --- | --- |
//! | `self` | — | this process's pid |
//! | `self_cap` | — | a fresh `send + monitor` cap over this process |
//! | `args` | — | the process's spawn args (always allowed: data, not authority) |
//! | `recv` | — | `{from, kind, body, caps, corr}`; `kind` is `value`, `bytes`, `empty`, `down`, `remote_down`, `term`, `boot` or `local` |
//! | `send` | `{to, body, caps?, corr?}` | `null` |
//! | `remember` | `{body, pin?, tokens?}` | the segment id |
//! | `recall` | `{query, k?}` (k defaults to 5) | `[{id, body, tokens, pinned, summary}]` |
//! | `working_set` | — | the same, coldest first |
//! | `forget` | `{id}` | whether it existed |
//! | `log` | `{level?, msg}` or a string | `null` |
//! | `exit` | `null`, `{error}` or `{kind}` | never returns: the process ends normally, with a fault, or with `Other{kind}` |
//! | `now` | — | the kernel clock in ms |
//! | `sleep` | `{ms}` | `null` |
//! | `yield` | — | `null` |
//! | `budget` / `usage` | — | the account's budget or usage (`null` for unlimited) |
//! | `register` / `lookup` | `{name}` | `null` / a cap or `null` |
//! | `open` | `{device}` | a handle cap |
//! | `read` / `write` | `{handle, req}` / `{handle, data}` | the device's reply |
//!
//! The default allowlist is the seed's: [`DEFAULT_ALLOW`]. A name not in the allowlist is
//! [`STATUS_DENIED`] (checked first, so a denied name reveals nothing); an allowed name that
//! is not in the table is [`STATUS_UNKNOWN`]; a syscall that fails is [`STATUS_FAILED`].
//!
//! A guest that logs a line and exits (trapping, and so faulting, if the log fails):
//!
//! ```wat
//! (module
//!   (import "agentos" "call" (func $call (param i32 i32 i32 i32) (result i32)))
//!   (memory (export "memory") 1)
//!   (data (i32.const 0) "log")
//!   (data (i32.const 16) "{\"level\":\"info\",\"msg\":\"hello from wasm\"}")
//!   (func (export "main")
//!     ;; A negative status is an error: trap on it.
//!     (if (i32.lt_s (call $call (i32.const 0) (i32.const 3) (i32.const 16) (i32.const 40))
//!                   (i32.const 0))
//!       (then unreachable))))
//! ```
//!
//! ## Limits and teardown
//!
//! The guest runs on the process's future as wasmtime async calls: every
//! [`SandboxOpts::yield_interval`] units of fuel it yields, so an infinite loop never holds a
//! kernel scheduler thread, and a syscall that parks (`recv`, a full mailbox, a device read)
//! parks the process, not a thread. Running out of fuel, growing a memory or table past its
//! limit, or trapping ends the process with [`ExitReason::Fault`] naming the cause, after an
//! error log line. The store lives in the process future, so it is dropped when the process
//! ends however it ends (returned, faulted, killed mid-loop or parked inside a syscall, shut
//! down): the kernel drops a dead process's future right after the scheduling step that ended
//! it. [`Sandbox::live`] counts the stores still alive.
//!
//! The guest is metered like a process: its fuel is CPU, charged to the account as
//! [`Meter::Cpu`] reductions (as the wasm device's fuel is) when it stops, however it stops, so
//! it shows in `usage`. It gets no more fuel than the account chain has left (`budget().cpu`),
//! and a guest that burns that — an infinite loop under a cpu quota — ends with
//! `ExitReason::Quota { resource: Meter::Cpu }`.

mod calls;

use agentos_abi::{ExitReason, Image, LogLevel, Meter, ProcResult, Syscalls, Value};
use calls::Outcome;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use thiserror::Error;
use wasmtime::{
    Caller, Config, Engine, Extern, ExternType, InstancePre, Linker, Module, Store, Trap, Val,
    ValType,
};

/// The seed's default allowlist (`workingSet` is spelled `working_set` here).
pub const DEFAULT_ALLOW: &[&str] = &[
    "self",
    "recv",
    "send",
    "remember",
    "recall",
    "working_set",
    "log",
    "exit",
];

/// `call` status: the syscall is not in the allowlist.
pub const STATUS_DENIED: i32 = -1;
/// `call` status: no syscall has this name.
pub const STATUS_UNKNOWN: i32 = -2;
/// `call` status: the syscall failed (the message says why).
pub const STATUS_FAILED: i32 = -3;
/// `call` / `result` status: a pointer range outside memory, a name that is not UTF-8, args
/// that are not JSON or not the shape the syscall takes, or a result too large to report.
pub const STATUS_BAD_ARGS: i32 = -4;

/// The fiber stack a guest and the syscalls it makes run on.
const GUEST_STACK_BYTES: usize = 4 << 20;

/// The module the host functions are imported from.
pub const HOST_MODULE: &str = "agentos";

/// How a sandboxed process is limited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxOpts {
    /// The syscalls the guest may make (see the module doc for the names).
    pub allow: Vec<String>,
    /// Fuel for the whole run (wasmtime fuel: about one unit per instruction).
    pub fuel: u64,
    /// Bytes the guest's memory may grow to.
    pub memory_bytes: usize,
    /// Elements a table may grow to.
    pub table_elements: usize,
    /// Fuel between yields to the scheduler.
    pub yield_interval: u64,
}

impl Default for SandboxOpts {
    /// [`DEFAULT_ALLOW`], 100 million units of fuel, 16 MiB of memory, 10,000 table elements,
    /// a yield every 50,000 units.
    fn default() -> Self {
        SandboxOpts {
            allow: DEFAULT_ALLOW.iter().map(|s| (*s).to_owned()).collect(),
            fuel: 100_000_000,
            memory_bytes: 16 << 20,
            table_elements: 10_000,
            yield_interval: 50_000,
        }
    }
}

impl SandboxOpts {
    /// The defaults with this allowlist.
    pub fn allowing<I, T>(names: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        SandboxOpts {
            allow: names.into_iter().map(Into::into).collect(),
            ..SandboxOpts::default()
        }
    }
}

/// Why a module cannot be sandboxed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum SandboxError {
    /// The wasm engine could not be created.
    #[error("sandbox: engine: {0}")]
    Engine(String),
    /// The bytes are not a valid module (binary or WAT).
    #[error("sandbox: cannot compile: {0}")]
    Compile(String),
    /// The module imports something the sandbox does not provide, or with the wrong type.
    #[error("sandbox: bad import: {0}")]
    Import(String),
    /// The module exports no `main` or `_start` function of type `[] -> []` or `[] -> [i32]`.
    #[error("sandbox: no entry point: export `main` or `_start` as a function of no arguments returning nothing or an i32")]
    NoEntry,
    /// The module imports host functions but exports no memory for them to use.
    #[error("sandbox: the module imports host functions but exports no `memory`")]
    NoMemory,
}

// The resource limiter is the one the wasm device uses too (`agentos-wasmlimit`).
use agentos_wasmlimit::{LimitExceeded, Limiter};

/// The guest asked to exit; carried out of the wasm call as its error.
#[derive(Debug, Error)]
#[error("the guest called exit")]
struct ExitRequested;

/// Counts a store as live from creation to drop.
struct LiveGuard(Arc<AtomicUsize>);

impl LiveGuard {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        LiveGuard(count.clone())
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The host side of one guest: its store's data.
struct Guest<S> {
    sys: S,
    args: Value,
    allow: Arc<HashSet<String>>,
    /// The result or error message of the last `call`.
    held: Vec<u8>,
    /// Set by the `exit` syscall.
    exit: Option<ExitReason>,
    limiter: Limiter,
    _live: LiveGuard,
}

/// A compiled, checked guest program.
struct Program<S> {
    name: Arc<str>,
    engine: Engine,
    pre: InstancePre<Guest<S>>,
    entry: &'static str,
    returns_code: bool,
    allow: Arc<HashSet<String>>,
    opts: SandboxOpts,
    live: Arc<AtomicUsize>,
}

/// A WebAssembly program to run as sandboxed processes. Cheap to clone.
pub struct Sandbox<S> {
    program: Arc<Program<S>>,
}

impl<S> Clone for Sandbox<S> {
    fn clone(&self) -> Self {
        Sandbox {
            program: self.program.clone(),
        }
    }
}

/// Compile `wasm` and return a process image running it under `opts`; see [`Sandbox::new`].
pub fn sandbox<S: Syscalls>(
    name: &str,
    wasm: impl AsRef<[u8]>,
    opts: SandboxOpts,
) -> Result<Image<S>, SandboxError> {
    Ok(Sandbox::new(name, wasm, opts)?.image())
}

impl<S: Syscalls> Sandbox<S> {
    /// Compile `wasm` (a binary module or WAT text) and check it: its imports are among the
    /// host functions, it has an entry point, and it exports its memory if it imports any.
    pub fn new(
        name: &str,
        wasm: impl AsRef<[u8]>,
        opts: SandboxOpts,
    ) -> Result<Self, SandboxError> {
        let mut cfg = Config::new();
        cfg.consume_fuel(true);
        // Syscalls run on the guest's fiber stack: leave them room beyond the 512 KiB wasm
        // may use (the stack is reserved, not committed, until touched).
        cfg.async_stack_size(GUEST_STACK_BYTES);
        let engine = Engine::new(&cfg).map_err(|e| SandboxError::Engine(e.to_string()))?;
        let module = Module::new(&engine, wasm.as_ref())
            .map_err(|e| SandboxError::Compile(e.to_string()))?;
        let mut imports_host = false;
        for i in module.imports() {
            if i.module() != HOST_MODULE || !matches!(i.name(), "call" | "result") {
                return Err(SandboxError::Import(format!(
                    "\"{}\".\"{}\" (the sandbox provides only \"{HOST_MODULE}\".\"call\" and \"{HOST_MODULE}\".\"result\")",
                    i.module(),
                    i.name()
                )));
            }
            imports_host = true;
        }
        if imports_host && !matches!(module.get_export("memory"), Some(ExternType::Memory(_))) {
            return Err(SandboxError::NoMemory);
        }
        let (entry, returns_code) = ["main", "_start"]
            .into_iter()
            .find_map(|e| match module.get_export(e) {
                Some(ExternType::Func(ty)) if ty.params().len() == 0 => {
                    let results: Vec<ValType> = ty.results().collect();
                    match results.as_slice() {
                        [] => Some((e, false)),
                        [ValType::I32] => Some((e, true)),
                        _ => None,
                    }
                }
                _ => None,
            })
            .ok_or(SandboxError::NoEntry)?;
        let linker = host_linker::<S>(&engine).map_err(|e| SandboxError::Engine(e.to_string()))?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| SandboxError::Import(e.to_string()))?;
        let opts = SandboxOpts {
            yield_interval: opts.yield_interval.max(1),
            ..opts
        };
        Ok(Sandbox {
            program: Arc::new(Program {
                name: Arc::from(name),
                engine,
                pre,
                entry,
                returns_code,
                allow: Arc::new(opts.allow.iter().cloned().collect()),
                opts,
                live: Arc::new(AtomicUsize::new(0)),
            }),
        })
    }

    /// The process image: each process spawned from it runs the guest in a fresh store.
    pub fn image(&self) -> Image<S> {
        let program = self.program.clone();
        Image::new(&self.program.name, move |sys: S, args: Value| {
            run(program.clone(), sys, args)
        })
    }

    /// The program's name.
    pub fn name(&self) -> &str {
        &self.program.name
    }

    /// The limits every process of this program runs under.
    pub fn opts(&self) -> &SandboxOpts {
        &self.program.opts
    }

    /// Guest stores alive right now (one per running process of this program).
    pub fn live(&self) -> usize {
        self.program.live.load(Ordering::SeqCst)
    }
}

/// The two host functions, over any syscall handle.
fn host_linker<S: Syscalls>(engine: &Engine) -> wasmtime::Result<Linker<Guest<S>>> {
    let mut linker = Linker::new(engine);
    linker.func_wrap_async(
        HOST_MODULE,
        "call",
        |mut caller: Caller<'_, Guest<S>>, (np, nl, ap, al): (i32, i32, i32, i32)| {
            Box::new(async move { host_call(&mut caller, [np, nl], [ap, al]).await })
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "result",
        |mut caller: Caller<'_, Guest<S>>, ptr: i32, cap: i32| -> i32 {
            host_result(&mut caller, ptr, cap)
        },
    )?;
    Ok(linker)
}

/// The guest's exported memory.
fn memory<S>(caller: &mut Caller<'_, Guest<S>>) -> Option<wasmtime::Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Some(m),
        _ => None,
    }
}

/// `[ptr, len]` as a range of `mem`, if it lies inside it.
fn range(mem: &[u8], [ptr, len]: [i32; 2]) -> Option<std::ops::Range<usize>> {
    let start = usize::try_from(ptr as u32).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    (end <= mem.len()).then_some(start..end)
}

/// Hold `bytes` for `result` and answer with their length, or with `status` and the message.
fn hold<S>(caller: &mut Caller<'_, Guest<S>>, outcome: Result<Vec<u8>, (i32, String)>) -> i32 {
    let (status, bytes) = match outcome {
        Ok(bytes) => match i32::try_from(bytes.len()) {
            Ok(n) => (n, bytes),
            Err(_) => (
                STATUS_BAD_ARGS,
                b"sandbox: the result is too large to report".to_vec(),
            ),
        },
        Err((status, msg)) => (status, msg.into_bytes()),
    };
    caller.data_mut().held = bytes;
    status
}

async fn host_call<S: Syscalls>(
    caller: &mut Caller<'_, Guest<S>>,
    name: [i32; 2],
    args: [i32; 2],
) -> wasmtime::Result<i32> {
    let Some(mem) = memory(caller) else {
        let msg = "sandbox: the guest exports no memory".to_owned();
        return Ok(hold(caller, Err((STATUS_BAD_ARGS, msg))));
    };
    let data = mem.data(&*caller);
    let (Some(name_at), Some(args_at)) = (range(data, name), range(data, args)) else {
        let msg = "sandbox: a pointer range lies outside memory".to_owned();
        return Ok(hold(caller, Err((STATUS_BAD_ARGS, msg))));
    };
    let Ok(name) = std::str::from_utf8(&data[name_at]).map(str::to_owned) else {
        let msg = "sandbox: the syscall name is not UTF-8".to_owned();
        return Ok(hold(caller, Err((STATUS_BAD_ARGS, msg))));
    };
    let guest = caller.data();
    // Denied before anything else is looked at; `args` is data the guest was given.
    if name != "args" && !guest.allow.contains(&name) {
        let msg = format!("sandbox: syscall \"{name}\" denied");
        return Ok(hold(caller, Err((STATUS_DENIED, msg))));
    }
    let args_text = &data[args_at];
    let args = if args_text.iter().all(u8::is_ascii_whitespace) {
        Ok(serde_json::Value::Null)
    } else {
        serde_json::from_slice(args_text)
    };
    let args = match args {
        Ok(a) => a,
        Err(e) => {
            let msg = format!("sandbox: {name}: args are not JSON: {e}");
            return Ok(hold(caller, Err((STATUS_BAD_ARGS, msg))));
        }
    };
    let (sys, proc_args) = (guest.sys.clone(), guest.args.clone());
    match calls::dispatch(&sys, &proc_args, &name, args).await {
        Outcome::Done(json) => Ok(hold(caller, Ok(json.to_string().into_bytes()))),
        Outcome::Failed(msg) => Ok(hold(caller, Err((STATUS_FAILED, msg)))),
        Outcome::BadArgs(msg) => Ok(hold(
            caller,
            Err((STATUS_BAD_ARGS, format!("sandbox: {name}: {msg}"))),
        )),
        Outcome::Unknown => {
            let msg = format!("sandbox: no syscall \"{name}\"");
            Ok(hold(caller, Err((STATUS_UNKNOWN, msg))))
        }
        Outcome::Exit(reason) => {
            caller.data_mut().exit = Some(reason);
            Err(wasmtime::Error::new(ExitRequested))
        }
    }
}

fn host_result<S>(caller: &mut Caller<'_, Guest<S>>, ptr: i32, cap: i32) -> i32 {
    let Some(mem) = memory(caller) else {
        return STATUS_BAD_ARGS;
    };
    let (data, guest) = mem.data_and_store_mut(&mut *caller);
    let held = &guest.held;
    let Ok(full) = i32::try_from(held.len()) else {
        return STATUS_BAD_ARGS;
    };
    let n = full.min(cap.max(0));
    let Some(at) = range(data, [ptr, n]) else {
        return STATUS_BAD_ARGS;
    };
    data[at].copy_from_slice(&held[..n as usize]);
    full
}

/// Run one guest to its end: instantiate, call the entry point, map how it ended to the
/// process's exit.
async fn run<S: Syscalls>(program: Arc<Program<S>>, sys: S, args: Value) -> ProcResult {
    let opts = &program.opts;
    let guest = Guest {
        sys: sys.clone(),
        args,
        allow: program.allow.clone(),
        held: Vec::new(),
        exit: None,
        limiter: Limiter {
            memory_bytes: opts.memory_bytes,
            table_elements: opts.table_elements,
        },
        _live: LiveGuard::new(&program.live),
    };
    let mut store = Store::new(&program.engine, guest);
    store.limiter(|g| &mut g.limiter);
    // The guest's fuel is CPU charged to the account (Meter::Cpu): it may burn no more than
    // the account chain has left, and what it burns is charged when it stops, however it stops.
    let left = sys.budget().cpu;
    let fuel = left.map_or(opts.fuel, |l| l.min(opts.fuel));
    let by_quota = left.is_some_and(|l| l < opts.fuel);
    let setup = store
        .set_fuel(fuel)
        .and_then(|()| store.fuel_async_yield_interval(Some(opts.yield_interval)));
    if let Err(e) = setup {
        return Err(fault(&sys, &program.name, &format!("engine: {e}")));
    }
    let ran = match program.pre.instantiate_async(&mut store).await {
        Ok(instance) => match instance.get_func(&mut store, program.entry) {
            Some(entry) => {
                let mut results = vec![Val::I32(0); usize::from(program.returns_code)];
                entry
                    .call_async(&mut store, &[], &mut results)
                    .await
                    .map(|()| results.first().and_then(Val::i32).unwrap_or(0))
            }
            None => Err(wasmtime::Error::msg("the entry point is gone")),
        },
        Err(e) => Err(e),
    };
    let burnt = fuel.saturating_sub(store.get_fuel().unwrap_or(0));
    // Within what the chain had left, so this never refuses unless a sibling spent the rest
    // meanwhile — then the kernel ends the process with the quota exit, as it should.
    sys.charge(Meter::Cpu, burnt)
        .await
        .map_err(ExitReason::from)?;
    let out_of_fuel =
        matches!(&ran, Err(e) if matches!(e.downcast_ref::<Trap>(), Some(Trap::OutOfFuel)));
    if by_quota && out_of_fuel {
        sys.log(
            LogLevel::Error,
            &format!(
                "sandbox {}: cpu quota spent ({burnt} reductions)",
                program.name
            ),
        );
        return Err(ExitReason::Quota {
            resource: Meter::Cpu,
        });
    }
    match ran {
        Ok(0) => Ok(()),
        Ok(code) => Err(fault(
            &sys,
            &program.name,
            &format!("{} returned {code}", program.entry),
        )),
        Err(e) => match store.data_mut().exit.take() {
            Some(ExitReason::Normal) => Ok(()),
            Some(reason) => Err(reason),
            None => Err(fault(&sys, &program.name, &describe(&e, opts.fuel))),
        },
    }
}

/// What stopped the guest, in words.
fn describe(e: &wasmtime::Error, fuel: u64) -> String {
    if let Some(l) = e.downcast_ref::<LimitExceeded>() {
        return l.to_string();
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => format!("out of fuel (limit {fuel})"),
        Some(t) => format!("trap: {}", t.to_string().trim_start_matches("wasm trap: ")),
        None => e.to_string(),
    }
}

/// Log why the guest stopped and make the fault exit.
fn fault<S: Syscalls>(sys: &S, name: &str, why: &str) -> ExitReason {
    let msg = format!("sandbox {name}: {why}");
    sys.log(LogLevel::Error, &msg);
    ExitReason::fault(msg)
}
