//! The wasm device: pure WebAssembly functions, metered by fuel, bounded in memory.
//!
//! Modules are registered by name before the driver is handed to a kernel
//! ([`WasmDriver::module`]); each is compiled once, then. A module may import nothing: the
//! device gives its code no host functions at all, only its own memory and tables.
//! `read({module, fn, args})` ([`WasmRequest`]) instantiates the module in a fresh store,
//! calls the export with the arguments converted to its numeric parameter types, and answers
//! with its results (`Unit`, one number, or a list). Nothing survives from one call to the
//! next.
//!
//! Limits ([`WasmLimits`]):
//! - **Fuel.** A call (instantiation included) gets `fuel_per_call` units of wasmtime fuel,
//!   or less when the request names a smaller `fuel`. Running out is
//!   [`WasmError::OutOfFuel`]. The fuel used is the call's cost in scheduler reductions, so a
//!   caller that burns a lot of CPU in a call gives up its quantum after it; a call also costs
//!   one tool call, as in the seed. The fuel cannot be bounded by what the caller has left:
//!   reductions are a per-dispatch fairness quantum, not an account meter, and a driver sees
//!   no budget. An error costs nothing (the driver ABI charges replies only), which is why
//!   the per-call limit is the device's own.
//! - **Memory.** No linear memory may grow past `memory_bytes` (one memory per instance); a
//!   module whose declared minimum is larger fails to instantiate and a `memory.grow` past the
//!   limit traps, both as [`WasmError::MemoryLimit`]. Tables are bounded the same way.
//!
//! Where it runs: on the calling process's future, as wasmtime async calls with a fuel yield
//! interval. Every `yield_interval` units of fuel the call returns `Pending` (having woken
//! itself), so a long call never holds a kernel scheduler thread for more than one slice and
//! other processes run in between; a killed caller drops the future and with it the store.
//! This needs no thread per call and keeps the fuel count exact, which a blocking run on a
//! thread pool would too, at the price of a thread parked per call.

use agentos_abi::device::{DeviceMessage, WasmRequest};
use agentos_abi::driver::BoxFuture;
use agentos_abi::{Cost, Driver, DriverError, DriverHandle, OpenCtx, Reply, Value};
use std::collections::HashMap;
use std::sync::Arc;
use thiserror::Error;
use wasmtime::{Config, Engine, ExternType, FuncType, Instance, Module, Store, Trap, Val, ValType};

/// Why a wasm call (or a module registration) failed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum WasmError {
    /// The request is not `{module, fn, args}`.
    #[error("wasm: bad request: {0}")]
    BadRequest(String),
    /// No module is registered under this name.
    #[error("wasm: no module \"{0}\"")]
    NoModule(String),
    /// The module exports no function by this name.
    #[error("wasm: module \"{module}\" has no exported function \"{func}\"")]
    NoExport {
        /// The module.
        module: String,
        /// The missing export.
        func: String,
    },
    /// The arguments do not fit the export's parameters (count or type), or its signature is
    /// not numeric.
    #[error("wasm: bad arguments for \"{func}\": {reason}")]
    BadArgs {
        /// The export.
        func: String,
        /// What was wrong.
        reason: String,
    },
    /// The code trapped (unreachable, division by zero, out-of-bounds access, ...).
    #[error("wasm: trap: {0}")]
    Trap(String),
    /// The call used all the fuel it was given.
    #[error("wasm: out of fuel (limit {0})")]
    OutOfFuel(u64),
    /// A memory or table would grow past its limit.
    #[error("wasm: {0}")]
    MemoryLimit(LimitExceeded),
    /// The module is not valid WebAssembly (or WAT), or imports something.
    #[error("wasm: cannot load module \"{module}\": {reason}")]
    Compile {
        /// The module's name.
        module: String,
        /// What was wrong.
        reason: String,
    },
    /// The module did not instantiate for another reason (too many memories, a failing
    /// allocation).
    #[error("wasm: cannot instantiate \"{module}\": {reason}")]
    Instantiate {
        /// The module's name.
        module: String,
        /// What went wrong.
        reason: String,
    },
    /// The engine could not be created.
    #[error("wasm: engine: {0}")]
    Engine(String),
}

impl From<WasmError> for DriverError {
    fn from(e: WasmError) -> Self {
        match e {
            WasmError::BadRequest(_)
            | WasmError::NoModule(_)
            | WasmError::NoExport { .. }
            | WasmError::BadArgs { .. } => DriverError::BadRequest(e.to_string()),
            _ => DriverError::Failed(e.to_string()),
        }
    }
}

/// A memory or table growth refused by the limiter (the shared one, `agentos-wasmlimit`).
pub use agentos_wasmlimit::LimitExceeded;
use agentos_wasmlimit::Limiter;

/// The device's limits, per call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WasmLimits {
    /// Fuel one call may use (instantiation included); requests may ask for less.
    pub fuel_per_call: u64,
    /// Bytes a linear memory may grow to.
    pub memory_bytes: usize,
    /// Elements a table may grow to.
    pub table_elements: usize,
    /// Fuel between yields to the scheduler.
    pub yield_interval: u64,
}

impl Default for WasmLimits {
    /// 10 million units of fuel, 16 MiB of memory, 10,000 table elements, a yield every
    /// 100,000 units.
    fn default() -> Self {
        WasmLimits {
            fuel_per_call: 10_000_000,
            memory_bytes: 16 << 20,
            table_elements: 10_000,
            yield_interval: 100_000,
        }
    }
}

/// The wasm device: named, precompiled modules whose exports processes call.
pub struct WasmDriver {
    name: String,
    engine: Engine,
    modules: Arc<HashMap<String, Module>>,
    limits: WasmLimits,
}

impl WasmDriver {
    /// A `wasm` device with no modules and the default limits.
    pub fn new() -> Result<Self, WasmError> {
        Self::with_limits(WasmLimits::default())
    }

    /// A `wasm` device with no modules and these limits.
    pub fn with_limits(limits: WasmLimits) -> Result<Self, WasmError> {
        let mut cfg = Config::new();
        cfg.consume_fuel(true);
        let engine = Engine::new(&cfg).map_err(|e| WasmError::Engine(e.to_string()))?;
        Ok(WasmDriver {
            name: "wasm".into(),
            engine,
            modules: Arc::new(HashMap::new()),
            limits: WasmLimits {
                yield_interval: limits.yield_interval.max(1),
                ..limits
            },
        })
    }

    /// Compile and register (or replace) module `name` from a binary module or WAT text.
    /// A module that imports anything is refused: the device provides no imports.
    pub fn module(mut self, name: &str, wasm: impl AsRef<[u8]>) -> Result<Self, WasmError> {
        let compile_err = |reason: String| WasmError::Compile {
            module: name.to_owned(),
            reason,
        };
        let module =
            Module::new(&self.engine, wasm.as_ref()).map_err(|e| compile_err(e.to_string()))?;
        if let Some(i) = module.imports().next() {
            return Err(compile_err(format!(
                "it imports \"{}\".\"{}\" and the wasm device provides no imports",
                i.module(),
                i.name()
            )));
        }
        let mut modules = (*self.modules).clone();
        modules.insert(name.to_owned(), module);
        self.modules = Arc::new(modules);
        Ok(self)
    }

    /// Register under another device name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The limits.
    pub fn limits(&self) -> WasmLimits {
        self.limits
    }

    /// The registered module names, sorted.
    pub fn modules(&self) -> Vec<String> {
        let mut names: Vec<String> = self.modules.keys().cloned().collect();
        names.sort();
        names
    }
}

impl Driver for WasmDriver {
    fn name(&self) -> &str {
        &self.name
    }
    fn open(&self, at: OpenCtx) -> BoxFuture<'static, Result<Arc<dyn DriverHandle>, DriverError>> {
        if let Err(e) = at.unscoped(&self.name) {
            return Box::pin(async move { Err(e) });
        }
        let h: Arc<dyn DriverHandle> = Arc::new(WasmHandle {
            engine: self.engine.clone(),
            modules: self.modules.clone(),
            limits: self.limits,
        });
        Box::pin(async move { Ok(h) })
    }
}

struct WasmHandle {
    engine: Engine,
    modules: Arc<HashMap<String, Module>>,
    limits: WasmLimits,
}

/// A call checked against its module before anything runs.
struct Prepared {
    module: Module,
    name: String,
    func: String,
    params: Vec<Val>,
    results: usize,
    fuel: u64,
}

impl WasmHandle {
    fn prepare(&self, req: Value) -> Result<Prepared, WasmError> {
        let req = WasmRequest::from_value(req).map_err(|e| WasmError::BadRequest(e.to_string()))?;
        let module = self
            .modules
            .get(&req.module)
            .ok_or_else(|| WasmError::NoModule(req.module.clone()))?
            .clone();
        let ty = match module.get_export(&req.func) {
            Some(ExternType::Func(ty)) => ty,
            _ => {
                return Err(WasmError::NoExport {
                    module: req.module,
                    func: req.func,
                })
            }
        };
        let params = convert_args(&ty, &req.args).map_err(|reason| WasmError::BadArgs {
            func: req.func.clone(),
            reason,
        })?;
        let fuel = req.fuel.map_or(self.limits.fuel_per_call, |f| {
            f.min(self.limits.fuel_per_call)
        });
        let results = ty.results().len();
        Ok(Prepared {
            module,
            name: req.module,
            func: req.func,
            params,
            results,
            fuel,
        })
    }
}

impl DriverHandle for WasmHandle {
    fn read(&self, req: Value) -> BoxFuture<'static, Result<Reply, DriverError>> {
        let call = match self.prepare(req) {
            Ok(c) => c,
            Err(e) => return Box::pin(async move { Err(e.into()) }),
        };
        let engine = self.engine.clone();
        let limits = self.limits;
        Box::pin(async move {
            let (value, used) = run(&engine, limits, call).await?;
            Ok(Reply {
                value,
                cost: Cost {
                    tool_calls: 1,
                    reductions: u32::try_from(used).unwrap_or(u32::MAX).max(1),
                    ..Cost::default()
                },
            })
        })
    }
}

/// Instantiate and call; the result value and the fuel used.
async fn run(
    engine: &Engine,
    limits: WasmLimits,
    call: Prepared,
) -> Result<(Value, u64), WasmError> {
    let mut store = Store::new(
        engine,
        Limiter {
            memory_bytes: limits.memory_bytes,
            table_elements: limits.table_elements,
        },
    );
    store.limiter(|l| l);
    let engine_err = |e: wasmtime::Error| WasmError::Engine(e.to_string());
    store.set_fuel(call.fuel).map_err(engine_err)?;
    store
        .fuel_async_yield_interval(Some(limits.yield_interval))
        .map_err(engine_err)?;
    let instance = Instance::new_async(&mut store, &call.module, &[])
        .await
        .map_err(|e| {
            classify(e, call.fuel).unwrap_or_else(|reason| WasmError::Instantiate {
                module: call.name.clone(),
                reason,
            })
        })?;
    let func = instance
        .get_func(&mut store, &call.func)
        .ok_or_else(|| WasmError::NoExport {
            module: call.name.clone(),
            func: call.func.clone(),
        })?;
    let mut results = vec![Val::I32(0); call.results];
    func.call_async(&mut store, &call.params, &mut results)
        .await
        .map_err(|e| classify(e, call.fuel).unwrap_or_else(WasmError::Trap))?;
    let used = call.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
    let mut values: Vec<Value> = results.iter().map(result_value).collect();
    let value = match values.len() {
        0 => Value::Unit,
        1 => values.pop().unwrap_or_default(),
        _ => Value::List(values),
    };
    Ok((value, used))
}

/// A wasmtime error as a typed one: out of fuel, a limit, or another trap. `Err` carries the
/// message of anything else.
fn classify(e: wasmtime::Error, fuel: u64) -> Result<WasmError, String> {
    if let Some(l) = e.downcast_ref::<LimitExceeded>() {
        return Ok(WasmError::MemoryLimit(*l));
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Ok(WasmError::OutOfFuel(fuel)),
        // Trap's text starts with "wasm trap: "; the error says that already.
        Some(t) => Ok(WasmError::Trap(
            t.to_string().trim_start_matches("wasm trap: ").to_owned(),
        )),
        None => Err(e.to_string()),
    }
}

/// Convert request arguments to the export's parameter types.
fn convert_args(ty: &FuncType, args: &[Value]) -> Result<Vec<Val>, String> {
    let params: Vec<ValType> = ty.params().collect();
    for r in ty.results() {
        if !is_numeric(&r) {
            return Err(format!("its result type {r} is not a number"));
        }
    }
    if params.len() != args.len() {
        return Err(format!(
            "expected {} argument(s), got {}",
            params.len(),
            args.len()
        ));
    }
    params
        .iter()
        .zip(args)
        .enumerate()
        .map(|(i, (p, a))| {
            convert_arg(p, a).ok_or_else(|| format!("argument {i}: {a:?} is not a {p}"))
        })
        .collect()
}

fn is_numeric(t: &ValType) -> bool {
    matches!(t, ValType::I32 | ValType::I64 | ValType::F32 | ValType::F64)
}

fn convert_arg(ty: &ValType, v: &Value) -> Option<Val> {
    let int = match v {
        Value::U64(n) => Some(i128::from(*n)),
        Value::I64(n) => Some(i128::from(*n)),
        Value::Bool(b) => Some(i128::from(*b)),
        _ => None,
    };
    let float = match v {
        Value::F64(x) => Some(*x),
        Value::U64(n) => Some(*n as f64),
        Value::I64(n) => Some(*n as f64),
        _ => None,
    };
    match ty {
        // An i32 takes the signed range and, as its bit pattern, the unsigned one.
        ValType::I32 => int.and_then(|n| {
            i32::try_from(n)
                .ok()
                .or_else(|| u32::try_from(n).ok().map(|u| u as i32))
                .map(Val::I32)
        }),
        ValType::I64 => int.and_then(|n| {
            i64::try_from(n)
                .ok()
                .or_else(|| u64::try_from(n).ok().map(|u| u as i64))
                .map(Val::I64)
        }),
        ValType::F32 => float.map(|x| Val::F32((x as f32).to_bits())),
        ValType::F64 => float.map(|x| Val::F64(x.to_bits())),
        _ => None,
    }
}

fn result_value(v: &Val) -> Value {
    match v {
        Val::I32(n) => Value::I64(i64::from(*n)),
        Val::I64(n) => Value::I64(*n),
        Val::F32(bits) => Value::F64(f64::from(f32::from_bits(*bits))),
        Val::F64(bits) => Value::F64(f64::from_bits(*bits)),
        // Unreachable: result types were checked to be numeric before the call.
        _ => Value::Unit,
    }
}
