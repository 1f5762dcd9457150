//! Sandbox scenarios: WebAssembly guests (written in WAT here) as processes of a deterministic
//! kernel. Allowed syscalls reach the kernel (log, send to the parent, recv); a denied one is
//! an error status the guest sees and survives; fuel stops an infinite loop and the memory
//! limit a memory bomb, as fault exits while the kernel keeps running other processes; and a
//! killed guest's store is dropped, whether it was computing or parked inside a syscall.

#[path = "../kernel/util.rs"]
mod util;

use agentos_abi::*;
use agentos_kernel::{BootOpts, Kernel, Sys};
use agentos_userland::sandbox::*;
use util::*;

/// Builds a guest module: the host imports, a memory, helpers that build JSON in a scratch
/// buffer, the literals the body uses (as data segments) and the body as `main`.
///
/// Helpers: `$reset` empties the buffer, `$lit (ptr len)` appends a literal, `$held` appends
/// the result held by the host, `$int (v)` appends a decimal, `$stash` keeps the held result
/// aside and `$unstash` appends it; `$sys (name..)` calls a syscall with the buffer as its
/// args and `$sys0 (name..)` with none.
#[derive(Default)]
struct Guest {
    lits: Vec<(u32, String)>,
    next: u32,
}

/// Where the scratch buffer starts; literals live below it.
const BUF: u32 = 4096;
/// Where `$stash` keeps a result.
const STASH: u32 = 32768;

impl Guest {
    /// `(i32.const ptr) (i32.const len)` of literal `s`, added on first use.
    fn lit(&mut self, s: &str) -> String {
        let at = match self.lits.iter().find(|(_, l)| l == s) {
            Some((at, _)) => *at,
            None => {
                let at = self.next;
                self.lits.push((at, s.to_owned()));
                self.next += s.len() as u32;
                assert!(self.next < BUF, "literals overflow the scratch buffer");
                at
            }
        };
        format!("(i32.const {at}) (i32.const {})", s.len())
    }

    /// Append literal `s` to the buffer.
    fn append(&mut self, s: &str) -> String {
        format!("(call $lit {})", self.lit(s))
    }

    /// `$sys` with the buffer as args, for syscall `name`.
    fn sys(&mut self, name: &str) -> String {
        format!("(call $sys {})", self.lit(name))
    }

    /// `$sys0` (no args) for syscall `name`.
    fn sys0(&mut self, name: &str) -> String {
        format!("(call $sys0 {})", self.lit(name))
    }

    /// Build `{"to":<args>,"body":` in the buffer: the parent's cap comes in the spawn args.
    fn start_send_to_parent(&mut self) -> String {
        format!(
            "(call $reset) {} (drop {}) (call $held) {}",
            self.append("{\"to\":"),
            self.sys0("args"),
            self.append(",\"body\":")
        )
    }

    /// The module, with `body` as `main`'s body (locals may be declared first).
    fn module(self, body: &str) -> String {
        let data: String = self
            .lits
            .iter()
            .map(|(at, s)| {
                format!(
                    "(data (i32.const {at}) \"{}\")\n",
                    s.replace('\\', "\\\\").replace('"', "\\\"")
                )
            })
            .collect();
        format!(
            r#"(module
  (import "agentos" "call" (func $call (param i32 i32 i32 i32) (result i32)))
  (import "agentos" "result" (func $result (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $pos (mut i32) (i32.const {BUF}))
  {data}
  (func $reset (global.set $pos (i32.const {BUF})))
  (func $lit (param $at i32) (param $len i32)
    (memory.copy (global.get $pos) (local.get $at) (local.get $len))
    (global.set $pos (i32.add (global.get $pos) (local.get $len))))
  (func $held
    (global.set $pos
      (i32.add (global.get $pos) (call $result (global.get $pos) (i32.const 16384)))))
  (global $stashed (mut i32) (i32.const 0))
  (func $stash (global.set $stashed (call $result (i32.const {STASH}) (i32.const 16384))))
  (func $unstash (call $lit (i32.const {STASH}) (global.get $stashed)))
  (func $int (param $v i32)
    (local $lo i32) (local $hi i32) (local $t i32)
    (if (i32.lt_s (local.get $v) (i32.const 0))
      (then
        (i32.store8 (global.get $pos) (i32.const 45))
        (global.set $pos (i32.add (global.get $pos) (i32.const 1)))
        (local.set $v (i32.sub (i32.const 0) (local.get $v)))))
    (local.set $lo (global.get $pos))
    (loop $digit
      (i32.store8 (global.get $pos)
        (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
      (global.set $pos (i32.add (global.get $pos) (i32.const 1)))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
      (br_if $digit (local.get $v)))
    (local.set $hi (i32.sub (global.get $pos) (i32.const 1)))
    (block $done
      (loop $swap
        (br_if $done (i32.ge_u (local.get $lo) (local.get $hi)))
        (local.set $t (i32.load8_u (local.get $lo)))
        (i32.store8 (local.get $lo) (i32.load8_u (local.get $hi)))
        (i32.store8 (local.get $hi) (local.get $t))
        (local.set $lo (i32.add (local.get $lo) (i32.const 1)))
        (local.set $hi (i32.sub (local.get $hi) (i32.const 1)))
        (br $swap))))
  (func $sys (param $name i32) (param $len i32) (result i32)
    (call $call (local.get $name) (local.get $len)
      (i32.const {BUF}) (i32.sub (global.get $pos) (i32.const {BUF}))))
  (func $sys0 (param $name i32) (param $len i32) (result i32)
    (call $call (local.get $name) (local.get $len) (i32.const 0) (i32.const 0)))
  (func (export "main")
    {body}))
"#
        )
    }
}

/// A guest that spins forever.
const SPIN: &str = r#"(module (func (export "main") (loop $l (br $l))))"#;

/// Spawn options that hand a sandboxed child a cap to its parent (in its caps, and its
/// number as the args).
fn parent_grant(sys: &Sys) -> SpawnOpts {
    let me = sys.self_cap();
    SpawnOpts {
        args: Value::U64(me.0),
        caps: vec![me],
        ..SpawnOpts::default()
    }
}

/// Boot `f` as init in a fresh deterministic kernel and run it to its exit.
fn run<F, Fut>(f: F) -> (Kernel, ExitReason)
where
    F: Fn(Sys, SysMsg) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ProcResult> + Send + 'static,
{
    let k = det(5);
    let exit = boot_with_and_wait(&k, init(f), BootOpts::default());
    (k, exit)
}

/// The next value message (skipping everything else).
async fn next_value(sys: &Sys) -> (Pid, Value) {
    loop {
        let m = sys.recv().await;
        if let Body::Value(v) = m.body {
            return (m.from, v);
        }
    }
}

#[test]
fn a_guest_logs_receives_and_sends_to_its_parent() {
    let mut g = Guest::default();
    let log_args = g.lit(r#"{"level":"info","msg":"hello from wasm"}"#);
    let log_name = g.lit("log");
    let body = format!(
        "(local $s i32)
         (local.set $s (call $call {log_name} {log_args}))
         ;; 1. the log's status
         {to} (call $int (local.get $s)) {close} (drop {send})
         ;; 2. a string
         {to} {hello} {close} (drop {send})
         ;; 3. the message it receives, echoed whole
         (drop {recv}) (call $stash)
         {to} (call $unstash) {close} (drop {send})",
        to = g.start_send_to_parent(),
        close = g.append("}"),
        send = g.sys("send"),
        hello = g.append("\"hello\""),
        recv = g.sys0("recv"),
    );
    let wat = g.module(&body);
    let sb: Sandbox<Sys> = Sandbox::new("greeter", &wat, SandboxOpts::default()).unwrap();
    let live = sb.clone();
    let saw: Log<Value> = log();
    let out = saw.clone();
    let (k, exit) = run(move |sys, _| {
        let (sb, out) = (sb.clone(), out.clone());
        async move {
            let child = sys.spawn(sb.image(), parent_grant(&sys)).await?;
            for _ in 0..2 {
                let (from, v) = next_value(&sys).await;
                assert_eq!(from, child.pid);
                push(&out, v);
            }
            sys.send(child.cap, Body::Value("ping".into()), no_opts())
                .await?;
            push(&out, next_value(&sys).await.1);
            assert_eq!(sys.waitpid(child.cap).await?, ExitReason::Normal);
            Ok(())
        }
    });
    assert_eq!(exit, ExitReason::Normal);
    let saw = snapshot(&saw);
    // `log` answered `null`: a 4-byte result.
    assert_eq!(saw[0], Value::U64(4));
    assert_eq!(saw[1], Value::Str("hello".into()));
    let echo = &saw[2];
    assert_eq!(
        echo.get("from"),
        Some(&Value::U64(1)),
        "from init: {echo:?}"
    );
    assert_eq!(echo.get("kind"), Some(&Value::Str("value".into())));
    assert_eq!(echo.get("body"), Some(&Value::Str("ping".into())));
    assert_eq!(echo.get("caps"), Some(&Value::List(vec![])));
    assert_eq!(live.live(), 0, "the store went with the process");
    assert!(k.ps().is_empty());
}

#[test]
fn a_denied_syscall_is_an_error_status_and_the_guest_keeps_running() {
    let mut g = Guest::default();
    let body = format!(
        "(local $denied i32) (local $unknown i32) (local $bad i32) (local $failed i32)
         (local $len i32)
         (call $reset) {empty}
         (local.set $denied {spawn})
         (local.set $unknown {frob})
         (call $reset) {not_json}
         (local.set $bad {send})
         (call $reset) {nowhere}
         (local.set $failed {send})
         ;; The held message is the last error's; its length, with cap 0.
         (local.set $len (call $result (i32.const 0) (i32.const 0)))
         {to} {open}
           (call $int (local.get $denied)) {comma}
           (call $int (local.get $unknown)) {comma}
           (call $int (local.get $bad)) {comma}
           (call $int (local.get $failed)) {comma}
           (call $int (i32.gt_s (local.get $len) (i32.const 0)))
         {close} (drop {send})",
        empty = g.append("{}"),
        spawn = g.sys("spawn"),
        frob = g.sys("frobnicate"),
        not_json = g.append("{not json"),
        send = g.sys("send"),
        nowhere = g.append(r#"{"to":999999,"body":1}"#),
        to = g.start_send_to_parent(),
        open = g.append("["),
        comma = g.append(","),
        close = g.append("]}"),
    );
    let wat = g.module(&body);
    let mut allow: Vec<String> = DEFAULT_ALLOW.iter().map(|s| s.to_string()).collect();
    allow.push("frobnicate".into());
    let sb: Sandbox<Sys> = Sandbox::new("prober", &wat, SandboxOpts::allowing(allow)).unwrap();
    let saw: Log<Value> = log();
    let out = saw.clone();
    let (_k, exit) = run(move |sys, _| {
        let (sb, out) = (sb.clone(), out.clone());
        async move {
            let child = sys.spawn(sb.image(), parent_grant(&sys)).await?;
            push(&out, next_value(&sys).await.1);
            assert_eq!(sys.waitpid(child.cap).await?, ExitReason::Normal);
            Ok(())
        }
    });
    assert_eq!(exit, ExitReason::Normal);
    let statuses: Vec<i64> = [
        STATUS_DENIED,
        STATUS_UNKNOWN,
        STATUS_BAD_ARGS,
        STATUS_FAILED,
    ]
    .iter()
    .map(|s| i64::from(*s))
    .collect();
    let got = snapshot(&saw);
    let Value::List(items) = &got[0] else {
        panic!("expected a list, got {got:?}")
    };
    let nums: Vec<i64> = items
        .iter()
        .map(|v| match v {
            Value::I64(n) => *n,
            Value::U64(n) => *n as i64,
            other => panic!("not a number: {other:?}"),
        })
        .collect();
    assert_eq!(nums[..4], statuses[..], "denied, unknown, bad args, failed");
    assert_eq!(nums[4], 1, "the error message was held for the guest");
}

#[test]
fn an_infinite_loop_is_stopped_by_fuel_while_other_processes_run() {
    let opts = SandboxOpts {
        fuel: 5_000_000,
        yield_interval: 10_000,
        ..SandboxOpts::default()
    };
    let sb: Sandbox<Sys> = Sandbox::new("spin", SPIN, opts).unwrap();
    let live = sb.clone();
    let order: Log<String> = log();
    let out = order.clone();
    let (k, exit) = run(move |sys, _| {
        let (sb, out) = (sb.clone(), out.clone());
        async move {
            let spinner = sys.spawn(sb.image(), SpawnOpts::default()).await?;
            sys.monitor(spinner.cap).await?;
            let me = sys.self_cap();
            let ticker = image("ticker", move |sys: Sys, _| async move {
                for i in 0..3u64 {
                    sys.send(me, Body::Value(Value::U64(i)), no_opts()).await?;
                    sys.yield_now().await;
                }
                Ok(())
            });
            sys.spawn(
                ticker,
                SpawnOpts {
                    caps: vec![me],
                    ..SpawnOpts::default()
                },
            )
            .await?;
            loop {
                let m = sys.recv().await;
                match m.body {
                    Body::Value(v) => push(&out, format!("tick {v:?}")),
                    Body::Sys(SysMsg::Down { pid, reason }) if pid == spinner.pid => {
                        push(&out, format!("spinner down: {reason}"));
                        return Ok(());
                    }
                    _ => {}
                }
            }
        }
    });
    assert_eq!(exit, ExitReason::Normal);
    let order = snapshot(&order);
    assert_eq!(
        order[..3],
        ["tick U64(0)", "tick U64(1)", "tick U64(2)"],
        "the ticker ran while the guest spun: {order:?}"
    );
    assert_eq!(
        order[3],
        "spinner down: fault: sandbox spin: out of fuel (limit 5000000)"
    );
    let spinner = Pid(2);
    assert_eq!(
        exit_of(&k, spinner),
        Some(ExitReason::fault(
            "sandbox spin: out of fuel (limit 5000000)"
        ))
    );
    assert_eq!(live.live(), 0);
}

#[test]
fn a_memory_bomb_is_stopped_by_the_memory_limit() {
    let bomb = r#"(module (memory 1)
        (func (export "main") (loop $l (drop (memory.grow (i32.const 1))) (br $l))))"#;
    let fat = r#"(module (memory 64) (func (export "main")))"#;
    let opts = SandboxOpts {
        memory_bytes: 1 << 20,
        ..SandboxOpts::default()
    };
    let bomb: Sandbox<Sys> = Sandbox::new("bomb", bomb, opts.clone()).unwrap();
    let fat: Sandbox<Sys> = Sandbox::new("fat", fat, opts).unwrap();
    let reasons: Log<ExitReason> = log();
    let out = reasons.clone();
    let (_k, exit) = run(move |sys, _| {
        let (bomb, fat, out) = (bomb.clone(), fat.clone(), out.clone());
        async move {
            for sb in [bomb, fat] {
                let c = sys.spawn(sb.image(), SpawnOpts::default()).await?;
                push(&out, sys.waitpid(c.cap).await?);
            }
            Ok(())
        }
    });
    assert_eq!(exit, ExitReason::Normal);
    assert_eq!(
        snapshot(&reasons),
        vec![
            ExitReason::fault(
                "sandbox bomb: memory limit exceeded: 1114112 wanted, 1048576 allowed"
            ),
            ExitReason::fault(
                "sandbox fat: memory limit exceeded: 4194304 wanted, 1048576 allowed"
            ),
        ]
    );
}

#[test]
fn a_killed_guest_is_torn_down_mid_loop_and_mid_syscall() {
    // Tells its parent it is alive, waits for a message, then spins with all the fuel in
    // the world.
    let mut g = Guest::default();
    let body = format!(
        "{to} {up} (drop {send})
         (drop {recv})
         {to} {spinning} (drop {send})
         (loop $l (br $l))",
        to = g.start_send_to_parent(),
        up = g.append("\"up\"}"),
        spinning = g.append("\"spinning\"}"),
        send = g.sys("send"),
        recv = g.sys0("recv"),
    );
    let wat = g.module(&body);
    let opts = SandboxOpts {
        fuel: u64::MAX,
        ..SandboxOpts::default()
    };
    let sb: Sandbox<Sys> = Sandbox::new("forever", &wat, opts).unwrap();
    let seen: Log<(String, usize)> = log();
    let out = seen.clone();
    let outer = sb.clone();
    let (k, exit) = run(move |sys, _| {
        let (sb, out) = (sb.clone(), out.clone());
        async move {
            // One killed while parked in `recv` (inside a host call) ...
            let parked = sys.spawn(sb.image(), parent_grant(&sys)).await?;
            assert_eq!(next_value(&sys).await.1, Value::Str("up".into()));
            push(&out, ("parked".into(), sb.live()));
            // ... one killed while spinning.
            let spinning = sys.spawn(sb.image(), parent_grant(&sys)).await?;
            assert_eq!(next_value(&sys).await.1, Value::Str("up".into()));
            sys.send(spinning.cap, Body::Value("go".into()), no_opts())
                .await?;
            assert_eq!(next_value(&sys).await.1, Value::Str("spinning".into()));
            push(&out, ("both".into(), sb.live()));
            for c in [parked, spinning] {
                sys.signal(c.cap, None).await?;
                let why = sys.waitpid(c.cap).await?;
                assert_eq!(why, ExitReason::Killed { by: sys.self_pid() });
                // The kernel drops a dead process's future outside its lock, once the
                // current poll step (ours) ends.
                sys.yield_now().await;
                push(&out, (format!("killed {}", c.pid), sb.live()));
            }
            Ok(())
        }
    });
    assert_eq!(exit, ExitReason::Normal);
    assert_eq!(
        snapshot(&seen),
        vec![
            ("parked".to_owned(), 1),
            ("both".to_owned(), 2),
            ("killed 2".to_owned(), 1),
            ("killed 3".to_owned(), 0),
        ]
    );
    assert_eq!(outer.live(), 0);
    assert!(k.ps().is_empty(), "the kernel finished");
}

#[test]
fn traps_exit_calls_and_exit_codes_end_the_process_as_they_say() {
    let trap = r#"(module (func (export "main") unreachable))"#;
    let code = r#"(module (func (export "_start") (result i32) i32.const 7))"#;
    let zero = r#"(module (func (export "main") (result i32) i32.const 0))"#;
    let exit_with = |args: &str| {
        let mut g = Guest::default();
        let body = format!(
            "(call $reset) {} (drop {}) unreachable",
            g.append(args),
            g.sys("exit")
        );
        g.module(&body)
    };
    let guests: Vec<(&str, String)> = vec![
        ("trap", trap.into()),
        ("code", code.into()),
        ("zero", zero.into()),
        ("bye", exit_with("null")),
        ("oops", exit_with(r#"{"error":"gave up"}"#)),
        ("done", exit_with(r#"{"kind":"done"}"#)),
    ];
    let images: Vec<Image<Sys>> = guests
        .iter()
        .map(|(name, wat)| sandbox(name, wat, SandboxOpts::default()).unwrap())
        .collect();
    let reasons: Log<ExitReason> = log();
    let out = reasons.clone();
    let (_k, exit) = run(move |sys, _| {
        let (images, out) = (images.clone(), out.clone());
        async move {
            for im in images {
                let c = sys.spawn(im, SpawnOpts::default()).await?;
                push(&out, sys.waitpid(c.cap).await?);
            }
            Ok(())
        }
    });
    assert_eq!(exit, ExitReason::Normal);
    assert_eq!(
        snapshot(&reasons),
        [
            ExitReason::fault("sandbox trap: trap: wasm `unreachable` instruction executed"),
            ExitReason::fault("sandbox code: _start returned 7"),
            ExitReason::Normal,
            ExitReason::Normal,
            ExitReason::fault("gave up"),
            ExitReason::Other {
                kind: "done".into()
            },
        ]
    );
}

#[test]
fn modules_that_cannot_be_sandboxed_are_refused_up_front() {
    let new = |wat: &str| Sandbox::<Sys>::new("x", wat, SandboxOpts::default()).err();
    assert!(matches!(new("(module"), Some(SandboxError::Compile(_))));
    assert!(matches!(
        new(r#"(module (import "env" "open" (func)) (func (export "main")))"#),
        Some(SandboxError::Import(m)) if m.contains("\"env\".\"open\"")
    ));
    // The right name with the wrong type is refused too.
    assert!(matches!(
        new(
            r#"(module (import "agentos" "call" (func)) (memory (export "memory") 1)
                       (func (export "main")))"#
        ),
        Some(SandboxError::Import(_))
    ));
    assert_eq!(
        new(r#"(module (func (export "run")))"#),
        Some(SandboxError::NoEntry)
    );
    assert_eq!(
        new(r#"(module (func (export "main") (param i32)))"#),
        Some(SandboxError::NoEntry)
    );
    assert_eq!(
        new(
            r#"(module (import "agentos" "result" (func (param i32 i32) (result i32)))
                       (func (export "main")))"#
        ),
        Some(SandboxError::NoMemory)
    );
    let ok = Sandbox::<Sys>::new("ok", SPIN, SandboxOpts::default()).unwrap();
    assert_eq!(ok.name(), "ok");
    assert_eq!(ok.opts().allow.len(), DEFAULT_ALLOW.len());
    assert_eq!(ok.live(), 0);
}

#[test]
fn a_guest_remembers_and_reads_its_working_set() {
    let mut g = Guest::default();
    let body = format!(
        "(local $id i32)
         (call $reset) {note}
         (local.set $id {remember})
         (drop {working_set}) (call $stash)
         {to} (call $unstash) {close} (drop {send})",
        note = g.append(r#"{"body":{"note":"buy milk"},"pin":true}"#),
        remember = g.sys("remember"),
        working_set = g.sys0("working_set"),
        to = g.start_send_to_parent(),
        close = g.append("}"),
        send = g.sys("send"),
    );
    let sb: Sandbox<Sys> = Sandbox::new("notes", g.module(&body), SandboxOpts::default()).unwrap();
    let saw: Log<Value> = log();
    let out = saw.clone();
    let (_k, exit) = run(move |sys, _| {
        let (sb, out) = (sb.clone(), out.clone());
        async move {
            let child = sys.spawn(sb.image(), parent_grant(&sys)).await?;
            push(&out, next_value(&sys).await.1);
            assert_eq!(sys.waitpid(child.cap).await?, ExitReason::Normal);
            Ok(())
        }
    });
    assert_eq!(exit, ExitReason::Normal);
    let saw = snapshot(&saw);
    let Value::List(segs) = &saw[0] else {
        panic!("expected the working set, got {saw:?}")
    };
    assert_eq!(segs.len(), 1, "{segs:?}");
    let note = Value::Map(vec![("note".into(), Value::Str("buy milk".into()))]);
    assert_eq!(segs[0].get("body"), Some(&note));
    assert_eq!(segs[0].get("pinned"), Some(&Value::Bool(true)));
}

#[test]
fn the_module_doc_example_runs() {
    // The guest from the `sandbox` module doc, verbatim.
    let wat = r#"(module
  (import "agentos" "call" (func $call (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "log")
  (data (i32.const 16) "{\"level\":\"info\",\"msg\":\"hello from wasm\"}")
  (func (export "main")
    ;; A negative status is an error: trap on it.
    (if (i32.lt_s (call $call (i32.const 0) (i32.const 3) (i32.const 16) (i32.const 40))
                  (i32.const 0))
      (then unreachable))))"#;
    let image = sandbox::<Sys>("doc", wat, SandboxOpts::default()).unwrap();
    let (_k, exit) = run(move |sys, _| {
        let image = image.clone();
        async move {
            let c = sys.spawn(image, SpawnOpts::default()).await?;
            assert_eq!(sys.waitpid(c.cap).await?, ExitReason::Normal);
            Ok(())
        }
    });
    assert_eq!(exit, ExitReason::Normal);
}

#[test]
fn a_guest_in_an_infinite_loop_ends_with_a_cpu_quota_exit_and_its_fuel_shows_in_usage() {
    let opts = SandboxOpts {
        fuel: 50_000_000,
        yield_interval: 10_000,
        ..SandboxOpts::default()
    };
    let sb: Sandbox<Sys> = Sandbox::new("spin", SPIN, opts).unwrap();
    let seen: Log<(ExitReason, Usage, Usage)> = log();
    let s = seen.clone();
    let (_k, exit) = run(move |sys, _| {
        let (sb, s) = (sb.clone(), s.clone());
        async move {
            let quota = Quota {
                cpu: Some(300_000),
                ..Quota::default()
            };
            let spinner = sys
                .spawn(
                    sb.image(),
                    SpawnOpts {
                        quota,
                        ..SpawnOpts::default()
                    },
                )
                .await?;
            let reason = sys.waitpid(spinner.cap).await?;
            // A guest that stops on its own fuel limit is charged too.
            let small = sys.spawn(sb.image(), SpawnOpts::default()).await?;
            let before = sys.usage();
            sys.waitpid(small.cap).await?;
            push(&s, (reason, before, sys.usage()));
            Ok(())
        }
    });
    assert_eq!(exit, ExitReason::Normal);
    let (reason, after_quota, after_all) = snapshot(&seen).pop().unwrap();
    assert_eq!(
        reason,
        ExitReason::Quota {
            resource: Meter::Cpu
        }
    );
    // Its fuel reached its parent's usage (usage bubbles up): exactly the quota.
    assert_eq!(after_quota.cpu, 300_000);
    // The unbounded guest ran out of its own fuel (50 M) and that was charged as well.
    assert_eq!(after_all.cpu, 300_000 + 50_000_000);
}
