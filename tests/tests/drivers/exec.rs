//! The `exec` device behind a real kernel: a process started in the project root streams
//! its output as pulled events, exits with a status, stops politely or by force, times out,
//! takes stdin, caps its output, never sees the host's secrets, and — under bubblewrap —
//! has no network and cannot write outside the root.
//!
//! The default policy needs bubblewrap (`apt-get install -y bubblewrap`; `.ci/run` installs
//! it). Where it is unusable these tests fail and say why, unless `AGENTOS_SKIP_BWRAP=1`:
//! then the sandbox tests are skipped (saying so) and the others run unsandboxed.

use crate::common::{reason, req, status, with_scoped};
use crate::util::det;
use agentos_abi::*;
use agentos_drivers::exec::{ExecConfig, ExecDriver, Sandbox};
use agentos_kernel::{Kernel, Sys};
use bytes::Bytes;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn skip_bwrap() -> bool {
    std::env::var("AGENTOS_SKIP_BWRAP").as_deref() == Ok("1")
}

fn unusable(why: &str) -> String {
    format!(
        "bubblewrap is unusable here ({why}). Install it with `apt-get install -y bubblewrap`, \
         or set AGENTOS_SKIP_BWRAP=1 to skip the sandbox tests"
    )
}

/// Kernels with the exec device, one per isolation mode: `sandboxed` (bubblewrap; see the
/// module docs for when it is unusable) and `unsandboxed` (`Sandbox::None`), so each contract
/// test holds in both.
fn kernels_with(cfg: ExecConfig) -> Vec<(&'static str, Kernel)> {
    let mut out = Vec::new();
    let d = ExecDriver::new(cfg.clone()).unwrap();
    match d.refusal() {
        None => out.push(("sandboxed", d)),
        Some(why) if skip_bwrap() => eprintln!("SKIPPED the sandboxed run: {}", unusable(why)),
        Some(why) => panic!("{}", unusable(why)),
    }
    out.push((
        "unsandboxed",
        ExecDriver::new(cfg.with_sandbox(Sandbox::None)).unwrap(),
    ));
    out.into_iter()
        .map(|(mode, d)| {
            let k = det(1);
            k.register_driver(Arc::new(d)).unwrap();
            (mode, k)
        })
        .collect()
}

fn kernels() -> Vec<(&'static str, Kernel)> {
    kernels_with(ExecConfig::default().with_kill_grace(Duration::from_millis(300)))
}

/// A kernel whose exec device is certainly sandboxed, or `None` (said out loud) when the
/// operator skips the sandbox tests.
fn sandboxed_kernel() -> Option<Kernel> {
    match ExecDriver::new(ExecConfig::default().with_sandbox(Sandbox::Bwrap)) {
        Ok(d) => {
            assert!(d.sandboxed());
            let k = det(1);
            k.register_driver(Arc::new(d)).unwrap();
            Some(k)
        }
        Err(e) if skip_bwrap() => {
            eprintln!("SKIPPED: {}", unusable(&e.to_string()));
            None
        }
        Err(e) => panic!("{}", unusable(&e.to_string())),
    }
}

fn scope(root: &Path) -> Scope {
    Scope::new().with(Scope::ROOT, root.to_str().unwrap())
}

fn start(runtime: &str, cwd: &str, command: &str, timeout_ms: Option<u64>) -> Value {
    req(&[
        ("op", "start".into()),
        ("runtime", runtime.into()),
        ("cwd", cwd.into()),
        ("command", command.into()),
        (
            "timeout_ms",
            timeout_ms.map(Value::U64).unwrap_or(Value::Unit),
        ),
    ])
}

fn sh(command: &str) -> Value {
    start("sh", "", command, None)
}

fn op(name: &str, id: u64) -> Value {
    req(&[("op", name.into()), ("id", Value::U64(id))])
}

fn id_of(v: &Result<Value, SysError>) -> u64 {
    assert_eq!(status(v), 102, "started: {v:?}");
    v.as_ref()
        .unwrap()
        .get("id")
        .and_then(Value::as_u64)
        .unwrap()
}

/// Pull events until the exit event: `{out, err, exit}`.
async fn drain(sys: &Sys, h: CapRef, id: u64) -> Result<Value, SysError> {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    loop {
        let ev = sys.read(h, op("next", id)).await?;
        let data = || ev.get("data").and_then(Value::as_bytes).cloned().unwrap();
        match ev.get("event").and_then(Value::as_str) {
            Some("stdout") => out.extend_from_slice(&data()),
            Some("stderr") => err.extend_from_slice(&data()),
            Some("exit") => {
                return Ok(req(&[
                    ("out", Value::Bytes(out.into())),
                    ("err", Value::Bytes(err.into())),
                    ("exit", ev),
                ]))
            }
            _ => return Ok(ev),
        }
    }
}

/// Start and drain.
async fn run(sys: &Sys, h: CapRef, start: Value) -> Result<Value, SysError> {
    let started = sys.write(h, start).await?;
    match started.get("id").and_then(Value::as_u64) {
        Some(id) => drain(sys, h, id).await,
        None => Ok(started),
    }
}

fn text(v: &Result<Value, SysError>, chan: &str) -> String {
    let b = v
        .as_ref()
        .unwrap()
        .get(chan)
        .and_then(Value::as_bytes)
        .unwrap();
    String::from_utf8_lossy(b).into_owned()
}

fn exit_field(v: &Result<Value, SysError>, k: &str) -> Value {
    v.as_ref()
        .unwrap()
        .get("exit")
        .and_then(|e| e.get(k))
        .cloned()
        .unwrap_or_else(|| panic!("no exit.{k} in {v:?}"))
}

#[test]
fn exec_streams_stdout_and_stderr_separately_then_exits() {
    for (mode, k) in kernels() {
        eprintln!("exec mode: {mode}");
        let dir = tempfile::tempdir().unwrap();
        let r = with_scoped(&k, "exec", scope(dir.path()), None, |sys, h| async move {
            let started = sys.write(h, sh("echo hi; echo oops >&2; exit 3")).await;
            let id = id_of(&started);
            vec![
                started,
                drain(&sys, h, id).await,
                sys.read(h, op("next", id)).await,
                sys.read(h, op("next", 99)).await,
                sys.read(h, req(&[("op", "next".into())])).await,
            ]
        });
        assert_eq!(text(&r[1], "out"), "hi\n");
        assert_eq!(text(&r[1], "err"), "oops\n");
        assert_eq!(exit_field(&r[1], "code"), Value::I64(3));
        assert_eq!(exit_field(&r[1], "signal"), Value::Unit);
        assert_eq!(exit_field(&r[1], "timed_out"), Value::Bool(false));
        assert_eq!(exit_field(&r[1], "killed"), Value::Bool(false));
        assert_eq!(
            r[2].as_ref().unwrap().get("event"),
            Some(&Value::Str("closed".into())),
            "after the exit event the process is closed"
        );
        assert_eq!((status(&r[3]), reason(&r[3])), (404, "not_found".into()));
        assert!(matches!(&r[4], Err(SysError::Driver(m)) if m.contains("bad request")));
    }
}

#[test]
fn exec_stop_escalates_to_sigkill_when_sigterm_is_ignored() {
    for (mode, k) in kernels() {
        eprintln!("exec mode: {mode}");
        let dir = tempfile::tempdir().unwrap();
        let r = with_scoped(&k, "exec", scope(dir.path()), None, |sys, h| async move {
            let started = sys.write(h, sh("trap '' TERM; echo ready; sleep 30")).await;
            let id = id_of(&started);
            // The trap is set once it has printed.
            let ready = sys.read(h, op("next", id)).await;
            let t = Instant::now();
            let stopped = sys.write(h, op("stop", id)).await;
            let exit = drain(&sys, h, id).await;
            let took = Value::U64(t.elapsed().as_millis() as u64);
            vec![ready, stopped, exit, Ok(took)]
        });
        assert_eq!(
            r[0].as_ref().unwrap().get("data"),
            Some(&Value::Bytes(Bytes::from_static(b"ready\n")))
        );
        assert_eq!(status(&r[1]), 200);
        assert_eq!(exit_field(&r[2], "killed"), Value::Bool(true), "{:?}", r[2]);
        assert_eq!(exit_field(&r[2], "timed_out"), Value::Bool(false));
        let took = r[3].as_ref().unwrap().as_u64().unwrap();
        assert!(
            (300..10_000).contains(&took),
            "SIGKILL came after the grace: {took} ms"
        );
    }
}

#[test]
fn exec_stop_is_polite_first() {
    for (mode, k) in kernels_with(ExecConfig::default().with_kill_grace(Duration::from_secs(20))) {
        eprintln!("exec mode: {mode}");
        let dir = tempfile::tempdir().unwrap();
        let r = with_scoped(&k, "exec", scope(dir.path()), None, |sys, h| async move {
            let started = sys.write(h, sh("echo ready; sleep 30")).await;
            let id = id_of(&started);
            let ready = sys.read(h, op("next", id)).await;
            let t = Instant::now();
            sys.write(h, op("stop", id)).await.unwrap();
            let exit = drain(&sys, h, id).await;
            vec![ready, exit, Ok(Value::U64(t.elapsed().as_millis() as u64))]
        });
        assert_eq!(
            exit_field(&r[1], "killed"),
            Value::Bool(false),
            "{:?}",
            r[1]
        );
        // Unsandboxed the shell dies of SIGTERM; bubblewrap reports that as 128 + 15.
        let (code, signal) = (exit_field(&r[1], "code"), exit_field(&r[1], "signal"));
        assert!(
            signal == Value::Str("TERM".into()) || code == Value::I64(143),
            "{code:?} {signal:?}"
        );
        let took = r[2].as_ref().unwrap().as_u64().unwrap();
        assert!(took < 10_000, "SIGTERM was enough: {took} ms");
    }
}

#[test]
fn exec_timeout_stops_the_process() {
    for (mode, k) in kernels() {
        eprintln!("exec mode: {mode}");
        let dir = tempfile::tempdir().unwrap();
        let r = with_scoped(&k, "exec", scope(dir.path()), None, |sys, h| async move {
            vec![run(&sys, h, start("sh", ".", "sleep 30", Some(200))).await]
        });
        assert_eq!(
            exit_field(&r[0], "timed_out"),
            Value::Bool(true),
            "{:?}",
            r[0]
        );
        assert_eq!(exit_field(&r[0], "killed"), Value::Bool(false));
    }
}

#[test]
fn exec_stdin_round_trips_through_cat() {
    for (mode, k) in kernels() {
        eprintln!("exec mode: {mode}");
        let dir = tempfile::tempdir().unwrap();
        let r = with_scoped(&k, "exec", scope(dir.path()), None, |sys, h| async move {
            let started = sys.write(h, sh("cat")).await;
            let id = id_of(&started);
            let data =
                |d: Value| req(&[("op", "stdin".into()), ("id", Value::U64(id)), ("data", d)]);
            vec![
                sys.write(h, data("hello\n".into())).await,
                sys.write(h, data(Value::Bytes(Bytes::from_static(b"bytes\n"))))
                    .await,
                sys.write(h, op("close_stdin", id)).await,
                drain(&sys, h, id).await,
                sys.write(h, data("late\n".into())).await,
            ]
        });
        assert_eq!(status(&r[0]), 200);
        assert_eq!(status(&r[1]), 200);
        assert_eq!(status(&r[2]), 200);
        assert_eq!(text(&r[3], "out"), "hello\nbytes\n");
        assert_eq!(exit_field(&r[3], "code"), Value::I64(0));
        assert_eq!((status(&r[4]), reason(&r[4])), (409, "stdin_closed".into()));
    }
}

#[test]
fn exec_output_beyond_the_cap_is_counted_not_kept() {
    for (mode, k) in kernels_with(ExecConfig::default().with_output_cap(1000)) {
        eprintln!("exec mode: {mode}");
        let dir = tempfile::tempdir().unwrap();
        let r = with_scoped(&k, "exec", scope(dir.path()), None, |sys, h| async move {
            vec![run(&sys, h, sh("head -c 5000 /dev/zero; printf abc >&2")).await]
        });
        let out = r[0]
            .as_ref()
            .unwrap()
            .get("out")
            .and_then(Value::as_bytes)
            .unwrap();
        assert_eq!(out.len(), 1000);
        assert_eq!(exit_field(&r[0], "dropped_stdout"), Value::U64(4000));
        assert_eq!(text(&r[0], "err"), "abc");
        assert_eq!(exit_field(&r[0], "dropped_stderr"), Value::U64(0));
    }
}

#[test]
fn exec_environment_is_scrubbed_of_secrets() {
    // Names no other test reads, in the shapes the scrub must stop.
    for (k, v) in [
        ("EXECTEST_FAKE_API_KEY", "leak-1"),
        ("OPENAI_EXECTEST_FAKE", "leak-2"),
        ("ANTHROPIC_EXECTEST_FAKE", "leak-3"),
        ("AGENTOS_EXECTEST_FAKE", "leak-4"),
    ] {
        std::env::set_var(k, v);
    }
    for (mode, k) in kernels() {
        eprintln!("exec mode: {mode}");
        let dir = tempfile::tempdir().unwrap();
        let r = with_scoped(&k, "exec", scope(dir.path()), None, |sys, h| async move {
            vec![run(&sys, h, sh("env")).await]
        });
        let env = text(&r[0], "out");
        assert!(!env.contains("leak-"), "{env}");
        assert!(
            !env.contains("_API_KEY") && !env.contains("AGENTOS_"),
            "{env}"
        );
        assert!(env.lines().any(|l| l == "TERM=dumb"), "{env}");
        assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
        assert!(env.lines().any(|l| l.starts_with("HOME=")), "{env}");
    }
}

#[test]
fn exec_cwd_stays_inside_the_root_and_runtimes_are_known() {
    for (mode, k) in kernels() {
        eprintln!("exec mode: {mode}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let r = with_scoped(&k, "exec", scope(dir.path()), None, |sys, h| async move {
            vec![
                run(&sys, h, start("sh", "sub", "pwd", None)).await,
                sys.write(h, start("sh", "../", "pwd", None)).await,
                sys.write(h, start("sh", "/", "pwd", None)).await,
                sys.write(h, start("sh", "nodir", "pwd", None)).await,
                sys.write(h, start("cobol", "", "DISPLAY 'HI'", None)).await,
                sys.write(h, req(&[("op", "start".into()), ("runtime", "sh".into())]))
                    .await,
            ]
        });
        let sub = dir.path().canonicalize().unwrap().join("sub");
        assert_eq!(text(&r[0], "out").trim_end(), sub.to_str().unwrap());
        assert_eq!((status(&r[1]), reason(&r[1])), (403, "escape".into()));
        assert_eq!((status(&r[2]), reason(&r[2])), (403, "escape".into()));
        assert_eq!((status(&r[3]), reason(&r[3])), (404, "not_found".into()));
        assert_eq!(
            (status(&r[4]), reason(&r[4])),
            (501, "unknown_runtime".into())
        );
        assert!(matches!(&r[5], Err(SysError::Driver(m)) if m.contains("bad request")));
        // No root, or a scope key it does not know: the open is refused.
        for s in [Scope::new(), scope(dir.path()).with("session", "s1")] {
            let r = with_scoped(
                &k,
                "exec",
                s,
                None,
                |_, _| async move { vec![Ok(Value::Unit)] },
            );
            assert!(matches!(&r[0], Err(SysError::Driver(m)) if m.contains("bad request")));
        }
    }
}

/// Whether a live (non-zombie) process has `marker` in its command line.
fn running(marker: &str) -> bool {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|c| String::from_utf8_lossy(&c).contains(marker))
}

#[test]
fn exec_closing_the_handle_kills_every_process_it_started() {
    for (mode, k) in kernels() {
        eprintln!("exec mode: {mode}");
        let dir = tempfile::tempdir().unwrap();
        let marker = "30.4217";
        let r = with_scoped(
            &k,
            "exec",
            scope(dir.path()),
            None,
            move |sys, h| async move {
                let started = sys
                    .write(h, sh(&format!("sleep {marker} & sleep {marker}")))
                    .await;
                let t = Instant::now();
                while !running(marker) && t.elapsed() < Duration::from_secs(10) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                // The process exits here without stopping its command: the kernel closes the handle.
                vec![started, Ok(Value::Bool(running(marker)))]
            },
        );
        assert_eq!(status(&r[0]), 102);
        assert_eq!(r[1], Ok(Value::Bool(true)), "the command was running");
        let t = Instant::now();
        while running(marker) && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!running(marker), "no orphan outlives its handle");
    }
}

#[test]
fn exec_without_a_usable_sandbox_refuses_every_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ExecConfig::detect("/nonexistent/bin");
    assert!(ExecDriver::new(cfg.clone().with_sandbox(Sandbox::Bwrap)).is_err());
    let d = ExecDriver::new(cfg).unwrap();
    assert!(d.refusal().is_some() && !d.sandboxed());
    let k = det(1);
    k.register_driver(Arc::new(d)).unwrap();
    let r = with_scoped(&k, "exec", scope(dir.path()), None, |sys, h| async move {
        vec![sys.write(h, sh("echo never")).await]
    });
    assert_eq!((status(&r[0]), reason(&r[0])), (403, "no_sandbox".into()));
    let msg = r[0]
        .as_ref()
        .unwrap()
        .get("message")
        .and_then(Value::as_str)
        .unwrap();
    assert!(msg.contains("apt-get install bubblewrap"), "{msg}");
}

#[test]
fn sandboxed_commands_have_no_network() {
    let Some(k) = sandboxed_kernel() else { return };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "import socket\n\
         for addr in [('127.0.0.1', {port}), ('1.1.1.1', 80)]:\n\
         \x20   try:\n\
         \x20       socket.create_connection(addr, timeout=2)\n\
         \x20       print('connected', addr[0])\n\
         \x20   except OSError as e:\n\
         \x20       print('refused', addr[0], e.errno)\n"
    );
    let r = with_scoped(&k, "exec", scope(dir.path()), None, move |sys, h| {
        let script = script.clone();
        async move { vec![run(&sys, h, start("python", "", &script, None)).await] }
    });
    let out = text(&r[0], "out");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("refused")).count(),
        2,
        "{r:?}"
    );
    assert!(!out.contains("connected"), "{out}");
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "nothing reached the host's loopback"
    );
}

#[test]
fn sandboxed_writes_reach_the_root_and_nothing_else() {
    let Some(k) = sandboxed_kernel() else { return };
    let dir = tempfile::tempdir().unwrap();
    let tag = format!("agentos-escape-{}", std::process::id());
    let script = format!(
        "echo in > inside.txt\n\
         echo out > /tmp/{tag} && echo tmp-private\n\
         echo home > \"$HOME/{tag}\"\n\
         mkdir -p /root/{tag} && echo r > /root/{tag}/x && echo root-private\n\
         echo etc > /etc/{tag} 2>/dev/null || echo etc-refused\n\
         echo usr > /usr/{tag} 2>/dev/null || echo usr-refused\n\
         mount -t tmpfs none /usr 2>/dev/null || echo mount-refused\n\
         grep -q '^CapEff:[[:space:]]*0*$' /proc/self/status && echo no-capabilities\n"
    );
    let r = with_scoped(&k, "exec", scope(dir.path()), None, move |sys, h| {
        let script = script.clone();
        async move { vec![run(&sys, h, sh(&script)).await] }
    });
    let out = text(&r[0], "out");
    for line in [
        "tmp-private",
        "root-private",
        "etc-refused",
        "usr-refused",
        "mount-refused",
        "no-capabilities",
    ] {
        assert!(out.lines().any(|l| l == line), "{line} in {out:?} {r:?}");
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("inside.txt")).unwrap(),
        "in\n"
    );
    for host in [
        format!("/tmp/{tag}"),
        format!("/root/{tag}"),
        format!("/etc/{tag}"),
        format!("/usr/{tag}"),
    ] {
        assert!(!Path::new(&host).exists(), "{host} reached the host");
    }
}
