//! PLURNK.md §2.3 (`exec://` / `<runtime>://`) and §3.7 (streams) — EXEC proposes, and once
//! accepted runs sandboxed through the loop's `exec` device; a pump process streams its
//! output into `sh:///<loop>/<turn>/<seq>` and the loop shows it as READ rows before its next
//! turn. Needs bubblewrap (the CI installs it): without a sandbox the device refuses.

use std::path::Path;
use std::time::Duration;

use crate::common::{ops, Harness};
use agentos_drivers::{ExecConfig, ExecDriver};
use agentos_engine::store::{LogRow, LoopRow, Origin, RowOp};
use agentos_engine::turn::{EngineConfig, LoopFlags};
use agentos_engine::LoopOptions;

fn yolo() -> LoopOptions {
    LoopOptions {
        flags: LoopFlags {
            yolo: true,
            ..LoopFlags::default()
        },
        max_turns: None,
    }
}

fn project() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::write(d.path().join("README.md"), "hello\n").unwrap();
    d
}

/// The stream rows (plurnk-origin READs of a runtime scheme) of a loop.
fn stream_rows(h: &Harness, lp: &LoopRow) -> Vec<LogRow> {
    h.rows(lp)
        .into_iter()
        .filter(|r| r.origin == Origin::Plurnk && r.op.as_str() == "READ")
        .filter(|r| r.target.as_ref().and_then(|t| t.scheme.as_deref()) == Some("sh"))
        .collect()
}

fn exec_harness(root: &Path, turns: &[&str]) -> Harness {
    Harness::in_project_with(EngineConfig::default(), root, turns, |k| {
        let cfg = ExecConfig::default().with_kill_grace(Duration::from_millis(200));
        k.register_driver(std::sync::Arc::new(
            ExecDriver::new(cfg).expect("exec driver"),
        ))
        .expect("register exec");
    })
}

#[test]
fn exec_echo_streams_into_stdout_and_the_loop_sees_it_next_turn() {
    let p = project();
    let h = exec_harness(
        p.path(),
        &[
            "<<PLAN:run it:PLAN\n<<EXEC[sh]:echo hi; echo oops >&2:EXEC\n<<SEND[102]:running:SEND",
            "<<PLAN:done:PLAN\n<<SEND[200]:it printed hi:SEND",
        ],
    );
    let lp = h.run_loop("say hi", yolo());
    assert_eq!(lp.status, 200, "{lp:?}");
    assert_eq!(h.ops(&lp, 1), ops(&[("EXEC", 102)]));
    let streams = stream_rows(&h, &lp);
    let out = streams
        .iter()
        .find(|r| r.target.as_ref().and_then(|t| t.fragment.as_deref()) == Some("stdout"))
        .expect("a stdout row");
    assert_eq!(out.turn_seq, 2, "shown before the next turn: {streams:?}");
    assert_eq!(out.status, 200);
    assert_eq!(out.rx.as_deref(), Some("hi\n[exit 0]"));
    assert!(out.expanded, "a closed stream's row is open");
    let err = streams
        .iter()
        .find(|r| r.target.as_ref().and_then(|t| t.fragment.as_deref()) == Some("stderr"))
        .expect("a stderr row");
    assert_eq!(err.rx.as_deref(), Some("oops\n"));
    // The stream entry holds the channels, closed.
    let path = out.target.as_ref().unwrap().pathname.clone();
    let e = h
        .engine
        .store()
        .entry(
            h.session.id,
            h.run.id,
            &agentos_engine::schemes::exec::stream_key("sh", &path),
        )
        .expect("entry")
        .expect("stream entry");
    assert_eq!(
        e.channel("stdout").map(|c| c.content.as_str()),
        Some("hi\n")
    );
}

#[test]
fn exec_that_ignores_sigterm_is_sigkilled_after_the_grace() {
    let p = project();
    let h = exec_harness(
        p.path(),
        &[
            "<<PLAN:stubborn:PLAN\n<<EXEC[sh]<1>:trap '' TERM; sleep 30:EXEC\n<<SEND[102]:running:SEND",
            "<<PLAN:done:PLAN\n<<SEND[200]:reaped:SEND",
        ],
    );
    let t0 = std::time::Instant::now();
    let lp = h.run_loop("hang", yolo());
    assert_eq!(lp.status, 200);
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "reaped at its timeout, not after 30 s"
    );
    let out = stream_rows(&h, &lp)
        .into_iter()
        .find(|r| r.target.as_ref().and_then(|t| t.fragment.as_deref()) == Some("stdout"))
        .expect("a stdout row");
    assert_eq!(out.status, 504, "reaped at <T>: {out:?}");
}

#[test]
fn exec_cannot_reach_the_network_or_write_outside_the_root_under_bubblewrap() {
    let p = project();
    let outside = tempfile::tempdir().expect("tempdir");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let cmd = format!(
        "echo inside > made.txt; echo leak > {out}/leak.txt 2>/dev/null; \
         python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)\" 2>/dev/null \
         && echo connected || echo refused",
        out = outside.path().display()
    );
    let turn1 = format!("<<PLAN:probe:PLAN\n<<EXEC[sh]:{cmd}:EXEC\n<<SEND[102]:probing:SEND");
    let h = exec_harness(
        p.path(),
        &[&turn1, "<<PLAN:done:PLAN\n<<SEND[200]:probed:SEND"],
    );
    let lp = h.run_loop("probe the sandbox", yolo());
    assert_eq!(lp.status, 200);
    let out = stream_rows(&h, &lp)
        .into_iter()
        .find(|r| r.target.as_ref().and_then(|t| t.fragment.as_deref()) == Some("stdout"))
        .expect("a stdout row");
    assert!(
        out.rx.as_deref().unwrap_or("").starts_with("refused"),
        "no network: {out:?}"
    );
    assert!(
        listener.accept().is_err(),
        "nothing reached the host's loopback"
    );
    assert_eq!(
        std::fs::read_to_string(p.path().join("made.txt"))
            .ok()
            .as_deref(),
        Some("inside\n"),
        "the project root is writable"
    );
    assert!(
        !outside.path().join("leak.txt").exists(),
        "nothing outside the root is writable"
    );
}

#[test]
fn exec_proposes_and_a_rejected_command_never_runs() {
    let p = project();
    let h = exec_harness(
        p.path(),
        &[
            "<<PLAN:run it:PLAN\n<<EXEC[sh]:echo ran > ran.txt:EXEC\n<<SEND[102]:running:SEND",
            "<<PLAN:done:PLAN\n<<SEND[200]:ok:SEND",
        ],
    );
    let opts = LoopOptions {
        flags: LoopFlags {
            no_proposals: true,
            ..LoopFlags::default()
        },
        max_turns: None,
    };
    let lp = h.run_loop("run", opts);
    assert_eq!(h.ops(&lp, 1), ops(&[("EXEC", 400)]));
    assert!(!p.path().join("ran.txt").exists());
}

#[test]
fn ask_mode_has_no_exec_cap_so_exec_is_403() {
    let p = project();
    let h = exec_harness(
        p.path(),
        &[
            "<<PLAN:run it:PLAN\n<<EXEC[sh]:echo hi:EXEC\n<<SEND[102]:running:SEND",
            "<<PLAN:done:PLAN\n<<SEND[200]:ok:SEND",
        ],
    );
    let opts = LoopOptions {
        flags: LoopFlags {
            mode: "ask".into(),
            yolo: true,
            ..LoopFlags::default()
        },
        max_turns: None,
    };
    let lp = h.run_loop("run", opts);
    assert_eq!(h.ops(&lp, 1), ops(&[("EXEC", 403)]));
    let _ = RowOp::Model;
}

/// PLURNK.md §1.9 (GBNF for constrained decoding): under the engine's grammar a loop holding
/// the exec scheme is offered EXEC with its executors; a loop in ask mode (no exec cap) and
/// a headless session's loop are not — the grammar follows the schemes the loop holds.
#[test]
fn the_grammar_offers_exec_only_to_a_loop_that_holds_the_exec_scheme() {
    use agentos_engine::turn::TurnGrammar;
    let p = project();
    let done = "<<PLAN:done:PLAN\n<<SEND[200]:done:SEND";
    let cfg = EngineConfig {
        grammar: TurnGrammar::Engine,
        ..EngineConfig::default()
    };
    let h = Harness::in_project(cfg.clone(), p.path(), &[done, done]);
    h.run_loop("act", LoopOptions::default());
    let ask = LoopOptions {
        flags: LoopFlags {
            mode: "ask".into(),
            ..LoopFlags::default()
        },
        max_turns: None,
    };
    h.run_loop("ask", ask);
    let headless = crate::common::harness_with(cfg, &[done]);
    headless.run_loop("headless", LoopOptions::default());

    let grammar = |h: &Harness, i: usize| h.provider.requests()[i].grammar.clone();
    let act = grammar(&h, 0).expect("a grammar is sent");
    assert!(act.contains("\"<<EXEC\""), "{act}");
    assert!(act.contains("exec-signal ::= \"[\" (\"sh\" | \"python\" | \"node\") \"]\""));
    for g in [grammar(&h, 1), grammar(&headless, 0)] {
        let g = g.expect("a grammar is sent");
        assert!(!g.contains("<<EXEC"), "{g}");
        assert!(g.contains("\"<<READ\""), "{g}");
    }
}
