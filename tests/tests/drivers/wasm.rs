//! The wasm device: exports called with numeric arguments through a device cap, traps, fuel
//! exhaustion, memory limits and missing modules or exports as clear errors, the fuel used as
//! the call's cost in reductions and one tool call charged to the caller's account, and a long
//! call yielding so other processes run while it computes.

use crate::common::run_process;
use crate::util::*;
use agentos_abi::device::{DeviceMessage, WasmRequest};
use agentos_abi::driver::BoxFuture;
use agentos_abi::*;
use agentos_drivers::wasm::{WasmDriver, WasmError, WasmLimits};
use agentos_kernel::{BootOpts, Sys};
use std::sync::Arc;

const MATH: &str = r#"
(module
  (func (export "add") (param i32 i32) (result i32)
    local.get 0 local.get 1 i32.add)
  (func (export "mul64") (param i64 i64) (result i64)
    local.get 0 local.get 1 i64.mul)
  (func (export "hypot") (param f64 f64) (result f64)
    local.get 0 local.get 0 f64.mul local.get 1 local.get 1 f64.mul f64.add f64.sqrt)
  (func (export "half") (param f32) (result f32)
    local.get 0 f32.const 2 f32.div)
  (func (export "divmod") (param i32 i32) (result i32 i32)
    local.get 0 local.get 1 i32.div_s local.get 0 local.get 1 i32.rem_s)
  (func (export "nothing"))
  (func (export "div") (param i32 i32) (result i32)
    local.get 0 local.get 1 i32.div_s)
  (func (export "boom") unreachable)
  (func (export "spin") (loop $l br $l))
  (func (export "count") (param i32) (result i32)
    (local $i i32)
    (block $done
      (loop $l
        local.get $i local.get 0 i32.ge_u br_if $done
        local.get $i i32.const 1 i32.add local.set $i
        br $l))
    local.get $i)
  (memory (export "memory") 1)
  (func (export "grow") (param i32) (result i32)
    local.get 0 memory.grow)
  (global $g (export "g") i32 (i32.const 0))
)
"#;

/// Declares 2 MiB of memory up front.
const BIG: &str = r#"(module (memory 32) (func (export "f") (result i32) i32.const 1))"#;

fn call(module: &str, func: &str, args: Vec<Value>) -> Value {
    WasmRequest {
        module: module.into(),
        func: func.into(),
        args,
        fuel: None,
    }
    .to_value()
}

fn limits() -> WasmLimits {
    WasmLimits {
        fuel_per_call: 1_000_000,
        memory_bytes: 1 << 20,
        ..WasmLimits::default()
    }
}

fn driver() -> WasmDriver {
    WasmDriver::with_limits(limits())
        .unwrap()
        .module("math", MATH)
        .unwrap()
        .module("big", BIG)
        .unwrap()
}

fn kernel() -> agentos_kernel::Kernel {
    let k = det(1);
    k.register_driver(Arc::new(driver())).unwrap();
    k
}

fn driver_msg(r: &Result<Value, SysError>) -> String {
    match r {
        Err(SysError::Driver(m)) => m.clone(),
        other => panic!("expected a driver error, got {other:?}"),
    }
}

#[test]
fn numeric_exports_are_called_and_each_call_costs_one_tool_call() {
    let k = kernel();
    let (exit, seen) = run_process(&k, &["wasm"], Quota::default(), |sys, h| async move {
        vec![
            sys.read(
                h[0],
                call("math", "add", vec![Value::U64(2), Value::I64(40)]),
            )
            .await,
            sys.read(
                h[0],
                call("math", "add", vec![Value::I64(-7), Value::Bool(true)]),
            )
            .await,
            // 2^32 - 1 passes as its i32 bit pattern: -1.
            sys.read(
                h[0],
                call(
                    "math",
                    "add",
                    vec![Value::U64(u32::MAX as u64), Value::U64(0)],
                ),
            )
            .await,
            sys.read(
                h[0],
                call(
                    "math",
                    "mul64",
                    vec![Value::I64(3_000_000_000), Value::I64(-3)],
                ),
            )
            .await,
            sys.read(
                h[0],
                call("math", "hypot", vec![Value::F64(3.0), Value::U64(4)]),
            )
            .await,
            sys.read(h[0], call("math", "half", vec![Value::F64(5.0)]))
                .await,
            sys.read(
                h[0],
                call("math", "divmod", vec![Value::I64(17), Value::I64(5)]),
            )
            .await,
            sys.read(h[0], call("math", "nothing", vec![])).await,
        ]
    });
    assert_eq!(exit, ExitReason::Normal);
    let seen = seen.unwrap();
    assert_eq!(
        seen.results,
        vec![
            Ok(Value::I64(42)),
            Ok(Value::I64(-6)),
            Ok(Value::I64(-1)),
            Ok(Value::I64(-9_000_000_000)),
            Ok(Value::F64(5.0)),
            Ok(Value::F64(2.5)),
            Ok(Value::List(vec![Value::I64(3), Value::I64(2)])),
            Ok(Value::Unit),
        ]
    );
    assert_eq!(seen.usage.tool_calls, 8, "one tool call per call");
    // The fuel the calls burnt is CPU on the caller's account.
    assert!(seen.usage.cpu >= 8, "{:?}", seen.usage);
}

#[test]
fn a_missing_module_or_export_and_bad_arguments_are_bad_requests_that_cost_nothing() {
    let k = kernel();
    let (exit, seen) = run_process(&k, &["wasm"], Quota::default(), |sys, h| async move {
        vec![
            sys.read(h[0], call("nope", "add", vec![])).await,
            sys.read(h[0], call("math", "sub", vec![])).await,
            // A global is an export, but not a function.
            sys.read(h[0], call("math", "g", vec![])).await,
            sys.read(h[0], call("math", "add", vec![Value::U64(1)]))
                .await,
            sys.read(
                h[0],
                call("math", "add", vec![Value::U64(1), Value::Str("2".into())]),
            )
            .await,
            sys.read(
                h[0],
                call("math", "add", vec![Value::U64(1), Value::F64(2.0)]),
            )
            .await,
            sys.read(
                h[0],
                call("math", "add", vec![Value::U64(1), Value::U64(1 << 40)]),
            )
            .await,
            sys.read(h[0], Value::Str("add".into())).await,
            sys.read(
                h[0],
                call("math", "add", vec![Value::U64(1), Value::U64(2)]),
            )
            .await,
        ]
    });
    assert_eq!(exit, ExitReason::Normal);
    let seen = seen.unwrap();
    let r = &seen.results;
    assert!(driver_msg(&r[0]).contains("no module \"nope\""), "{r:?}");
    assert!(driver_msg(&r[1]).contains("no exported function \"sub\""));
    assert!(driver_msg(&r[2]).contains("no exported function \"g\""));
    assert!(driver_msg(&r[3]).contains("expected 2 argument(s), got 1"));
    assert!(driver_msg(&r[4]).contains("argument 1"));
    assert!(driver_msg(&r[5]).contains("argument 1"));
    assert!(driver_msg(&r[6]).contains("argument 1"));
    assert!(driver_msg(&r[7]).contains("bad request"));
    assert_eq!(r[8], Ok(Value::I64(3)), "the handle still works");
    assert_eq!(seen.usage.tool_calls, 1, "only the good call was charged");
}

#[test]
fn traps_are_errors_and_the_next_call_starts_fresh() {
    let k = kernel();
    let (exit, seen) = run_process(&k, &["wasm"], Quota::default(), |sys, h| async move {
        vec![
            sys.read(h[0], call("math", "boom", vec![])).await,
            sys.read(
                h[0],
                call("math", "div", vec![Value::U64(1), Value::U64(0)]),
            )
            .await,
            sys.read(
                h[0],
                call("math", "div", vec![Value::U64(9), Value::U64(3)]),
            )
            .await,
        ]
    });
    assert_eq!(exit, ExitReason::Normal);
    let r = seen.unwrap().results;
    assert_eq!(
        driver_msg(&r[0]),
        "wasm: trap: wasm `unreachable` instruction executed"
    );
    assert_eq!(driver_msg(&r[1]), "wasm: trap: integer divide by zero");
    assert_eq!(r[2], Ok(Value::I64(3)));
}

#[test]
fn an_infinite_loop_runs_out_of_fuel() {
    let k = kernel();
    let (exit, seen) = run_process(&k, &["wasm"], Quota::default(), |sys, h| async move {
        let mut low = WasmRequest::from_value(call("math", "count", vec![Value::U64(100_000)]))
            .expect("a request");
        low.fuel = Some(1_000);
        vec![
            sys.read(h[0], call("math", "spin", vec![])).await,
            // Within the device's limit, but not within the fuel the request allows.
            sys.read(h[0], low.to_value()).await,
            sys.read(h[0], call("math", "count", vec![Value::U64(1_000)]))
                .await,
        ]
    });
    assert_eq!(exit, ExitReason::Normal);
    let r = seen.unwrap().results;
    assert!(
        driver_msg(&r[0]).contains("out of fuel (limit 1000000)"),
        "{r:?}"
    );
    assert!(driver_msg(&r[1]).contains("out of fuel (limit 1000)"));
    assert_eq!(r[2], Ok(Value::I64(1_000)));
}

#[test]
fn memory_cannot_grow_past_the_limit() {
    let k = kernel();
    let (exit, seen) = run_process(&k, &["wasm"], Quota::default(), |sys, h| async move {
        vec![
            // 1 page + 15 pages = 1 MiB, the limit: allowed; memory.grow returns the old size.
            sys.read(h[0], call("math", "grow", vec![Value::U64(15)]))
                .await,
            // 1 page + 16 pages is past it.
            sys.read(h[0], call("math", "grow", vec![Value::U64(16)]))
                .await,
            // A module that declares 2 MiB does not even instantiate.
            sys.read(h[0], call("big", "f", vec![])).await,
        ]
    });
    assert_eq!(exit, ExitReason::Normal);
    let r = seen.unwrap().results;
    assert_eq!(r[0], Ok(Value::I64(1)));
    let (grow, declared) = (driver_msg(&r[1]), driver_msg(&r[2]));
    assert!(
        grow.contains("memory limit exceeded: 1114112 wanted, 1048576 allowed"),
        "{grow}"
    );
    assert!(
        declared.contains("memory limit exceeded: 2097152 wanted"),
        "{declared}"
    );
}

#[test]
fn the_fuel_used_is_the_cost_in_reductions() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let d = driver();
    let h = rt
        .block_on(d.open(agentos_abi::OpenCtx::new(Pid(1))))
        .unwrap();
    let cost = |n: u64| {
        rt.block_on(h.read(call("math", "count", vec![Value::U64(n)])))
            .unwrap()
            .cost
    };
    let (small, large, again) = (cost(10), cost(10_000), cost(10));
    assert_eq!(small, again, "fuel is deterministic");
    assert_eq!(small.tool_calls, 1);
    assert!(small.reductions > 10, "{small:?}");
    assert!(large.reductions > 100 * small.reductions / 2, "{large:?}");
    assert!(large.reductions < 1_000_000);
    // The typed error maps to the caller's error kinds.
    let e = rt
        .block_on(h.read(call("math", "spin", vec![])))
        .unwrap_err();
    assert_eq!(
        e,
        DriverError::from(WasmError::OutOfFuel(limits().fuel_per_call))
    );
    let e = rt.block_on(h.read(call("x", "f", vec![]))).unwrap_err();
    assert_eq!(e, DriverError::from(WasmError::NoModule("x".into())));
    assert!(matches!(e, DriverError::BadRequest(_)));
}

#[test]
fn registration_compiles_once_and_refuses_bad_modules() {
    let d = WasmDriver::new().unwrap();
    assert!(matches!(
        d.module("junk", b"\0asm\x01\0\0\0\x05"),
        Err(WasmError::Compile { module, .. }) if module == "junk"
    ));
    let d = WasmDriver::new().unwrap();
    let imports = r#"(module (import "env" "f" (func)) (func (export "g") call 0))"#;
    match d.module("imp", imports) {
        Err(WasmError::Compile { reason, .. }) => {
            assert!(reason.contains("\"env\".\"f\""), "{reason}")
        }
        other => panic!("expected a compile error, got {:?}", other.err()),
    }
    let d = driver().named("calc");
    assert_eq!(d.modules(), vec!["big".to_owned(), "math".to_owned()]);
    assert_eq!(agentos_abi::Driver::name(&d), "calc");
}

/// The wasm device, logging when a call's driver future resolves (before the kernel charges
/// its cost and resumes the caller).
struct Logged {
    inner: WasmDriver,
    order: Log<&'static str>,
}

struct LoggedHandle {
    inner: Arc<dyn DriverHandle>,
    order: Log<&'static str>,
}

impl Driver for Logged {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn open(
        &self,
        at: agentos_abi::OpenCtx,
    ) -> BoxFuture<'static, Result<Arc<dyn DriverHandle>, DriverError>> {
        let (open, order) = (self.inner.open(at), self.order.clone());
        Box::pin(async move {
            let h: Arc<dyn DriverHandle> = Arc::new(LoggedHandle {
                inner: open.await?,
                order,
            });
            Ok(h)
        })
    }
}

impl DriverHandle for LoggedHandle {
    fn read(&self, req: Value) -> BoxFuture<'static, Result<Reply, DriverError>> {
        let (call, order) = (self.inner.read(req), self.order.clone());
        Box::pin(async move {
            let r = call.await;
            push(&order, "call done");
            r
        })
    }
}

/// Init spawns a process, then calls a long export: the order in which the child ran and the
/// call finished.
fn long_call_order(yield_interval: u64) -> Vec<&'static str> {
    let k = det(3);
    let order: Log<&'static str> = log();
    let inner = WasmDriver::with_limits(WasmLimits {
        fuel_per_call: 100_000_000,
        yield_interval,
        ..WasmLimits::default()
    })
    .unwrap()
    .module("math", MATH)
    .unwrap();
    k.register_driver(Arc::new(Logged {
        inner,
        order: order.clone(),
    }))
    .unwrap();
    let o = order.clone();
    let exit = boot_with_and_wait(
        &k,
        init(move |sys: Sys, boot: SysMsg| {
            let o = o.clone();
            async move {
                let dev = boot.device("wasm").expect("granted");
                let h = sys.open(dev).await?;
                let o2 = o.clone();
                let other = image("other", move |_sys: Sys, _| {
                    let o = o2.clone();
                    async move {
                        push(&o, "other ran");
                        Ok(())
                    }
                });
                let child = sys.spawn(other, SpawnOpts::default()).await?;
                push(&o, "call starts");
                // Millions of instructions.
                let r = sys
                    .read(h, call("math", "count", vec![Value::U64(2_000_000)]))
                    .await?;
                assert_eq!(r, Value::I64(2_000_000));
                sys.waitpid(child.cap).await?;
                Ok(())
            }
        }),
        BootOpts {
            grant: vec!["wasm".into()],
            ..BootOpts::default()
        },
    );
    assert_eq!(exit, ExitReason::Normal);
    snapshot(&order)
}

#[test]
fn a_long_call_yields_so_other_processes_run_meanwhile() {
    // Yielding every 10,000 units of fuel, the child runs while the call computes ...
    assert_eq!(
        long_call_order(10_000),
        vec!["call starts", "other ran", "call done"]
    );
    // ... and with no yield inside the call it could only run after it.
    assert_eq!(
        long_call_order(u64::MAX),
        vec!["call starts", "call done", "other ran"]
    );
}
