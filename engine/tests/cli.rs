//! The `agentos` binary end to end: `parse [--turn]`, `gbnf`, `loop`, `run` (embedded and
//! `--connect`, `--json`, exit statuses, the review of proposals with scripted answers on
//! stdin), `sessions`, `log`, and `serve` (RPC, /metrics, /healthz, SIGTERM drain, restart
//! after SIGKILL with the store intact).

use std::io::Write;
use std::process::{Command, Stdio};

fn run(args: &[&str], stdin: &str) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_agentos"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn agentos");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).expect("utf8"),
    )
}

#[test]
fn parse_clean_exits_zero_with_json() {
    let (code, out) = run(&["parse"], "<<READ(a.md)<1,5>::READ");
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["items"][0]["statement"]["op"], "READ");
    assert_eq!(
        v["items"][0]["statement"]["lineMarker"]["marks"],
        serde_json::json!([1, 5])
    );
}

#[test]
fn parse_errors_exit_one() {
    let (code, out) = run(&["parse"], "<<READ:x:READ");
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["items"][0]["error"]["message"], "READ requires a path");
    let (code, out) = run(&["parse"], "<<EDIT(a):open");
    assert_eq!(code, 1);
    assert!(out.contains("unparsedTail"));
}

#[test]
fn parse_turn_checks_the_sandwich() {
    assert_eq!(
        run(&["parse", "--turn"], "<<PLAN:p:PLAN\n<<SEND[102]:x:SEND\n").0,
        0
    );
    let (code, out) = run(&["parse", "--turn"], "<<READ(a)::READ");
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["valid"], false);
    // Clean statements, invalid turn: plain `parse` still exits 0.
    assert_eq!(run(&["parse"], "<<READ(a)::READ").0, 0);
}

#[test]
fn gbnf_prints_the_grammar_and_bad_usage_exits_two() {
    let (code, out) = run(&["gbnf"], "");
    assert_eq!(code, 0);
    assert!(out.contains("root ::= preplan plan sep"));
    assert_eq!(run(&["frobnicate"], "").0, 2);
}

// ---- loop, run, serve, sessions, log ---------------------------------------------------

const TWO_TURNS: &str = "<<PLAN:note:PLAN\n<<EDIT(known://a.md):hi:EDIT\n<<SEND[102]:wrote:SEND\n---\n<<PLAN:done:PLAN\n<<SEND[200]:all done:SEND\n";

fn script(dir: &std::path::Path, text: &str) -> String {
    let p = dir.join("script.txt");
    std::fs::write(&p, text).expect("write script");
    p.to_string_lossy().into_owned()
}

fn run_full(args: &[&str], data: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_agentos"))
        .args(args)
        .env("AGENTOS_DATA_DIR", data)
        .env_remove("AGENTOS_LLM_BASE_URL")
        .env_remove("AGENTOS_LLM_MODEL")
        .stdin(Stdio::null())
        .output()
        .expect("run agentos");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).expect("utf8"),
        String::from_utf8(out.stderr).expect("utf8"),
    )
}

#[test]
fn loop_runs_a_scripted_loop_and_prints_its_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = script(dir.path(), TWO_TURNS);
    let (code, out, err) = run_full(&["loop", "--script", &s, "write", "a", "note"], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("log:///1/1/5/EDIT known:///a.md 201"), "{out}");
    assert!(out.contains("status 200 · all done"), "{out}");
}

#[test]
fn run_json_reports_the_loop_and_the_live_view_goes_to_stderr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = script(dir.path(), TWO_TURNS);
    let (code, out, err) = run_full(
        &["run", "--script", &s, "--json", "write a note"],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(v["status"], 200);
    assert_eq!(v["message"], "all done");
    assert_eq!(v["turns"], 2);
    assert!(v["loopId"].as_i64().is_some());
    assert!(v["usage"]["total"].is_i64());
    assert!(v["costPico"].is_i64());
    assert!(v["wallMs"].is_u64());
    assert!(
        err.contains("log:///1/1/5/EDIT known:///a.md 201"),
        "live view: {err}"
    );
    assert!(err.contains("── turn 2 · status 200"), "progress: {err}");
    // The state is in AGENTOS_DATA_DIR: `sessions` and `log` read it back.
    let (code, out, _) = run_full(&["sessions"], dir.path());
    assert_eq!(code, 0);
    assert!(out.contains("session-1"), "{out}");
    let (code, out, _) = run_full(&["log"], dir.path());
    assert_eq!(code, 0);
    assert!(out.contains("log:///1/2/2/SEND 200"), "{out}");
    assert!(out.contains("status 200 · all done"), "{out}");
    let (code, out, _) = run_full(&["log", "--json", "1"], dir.path());
    assert_eq!(code, 0);
    assert!(out
        .lines()
        .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
}

#[test]
fn run_exit_status_maps_the_terminal_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = script(dir.path(), TWO_TURNS);
    // One turn allowed, the script needs two: 429, exit 3.
    let (code, out, err) = run_full(
        &["run", "--script", &s, "--json", "--max-turns", "1", "x"],
        dir.path(),
    );
    assert_eq!(code, 3, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["status"], 429);
    // No model configured and the local default turned off: a setup error naming what to set.
    let out = Command::new(env!("CARGO_BIN_EXE_agentos"))
        .args(["run", "x"])
        .env("AGENTOS_DATA_DIR", dir.path())
        .env_remove("AGENTOS_LLM_BASE_URL")
        .env_remove("AGENTOS_LLM_MODEL")
        .env("AGENTOS_LLM_LOCAL", "0")
        .stdin(Stdio::null())
        .output()
        .expect("run agentos");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("AGENTOS_LLM_BASE_URL"), "{err}");
    // The local default on first use, with its index unreachable: the failed step and the fix.
    let cache = dir.path().join("llm-cache");
    let out = Command::new(env!("CARGO_BIN_EXE_agentos"))
        .args(["run", "x"])
        .env("AGENTOS_DATA_DIR", dir.path())
        .env_remove("AGENTOS_LLM_BASE_URL")
        .env_remove("AGENTOS_LLM_MODEL")
        .env_remove("AGENTOS_LLM_LOCAL")
        .env("AGENTOS_LLM_CACHE", &cache)
        .env("AGENTOS_LLM_INDEX", "http://127.0.0.1:9/simple")
        .stdin(Stdio::null())
        .output()
        .expect("run agentos");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("prepared now in"), "{err}");
    assert!(err.contains("preparing the local model failed"), "{err}");
    assert!(err.contains("AGENTOS_LLM_INDEX"), "{err}");
    // `models` and `llm status` report an unprepared cache without touching the network.
    let out = Command::new(env!("CARGO_BIN_EXE_agentos"))
        .args(["models", "--json"])
        .env_remove("AGENTOS_LLM_BASE_URL")
        .env_remove("AGENTOS_LLM_MODEL")
        .env_remove("AGENTOS_LLM_LOCAL")
        .env("AGENTOS_LLM_CACHE", &cache)
        .output()
        .expect("run agentos");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("models --json");
    assert_eq!(v["default"], "local");
    assert_eq!(v["local"]["ready"], false);
    assert!(v["endpoint"].is_null());
    let out = Command::new(env!("CARGO_BIN_EXE_agentos"))
        .args(["llm", "path"])
        .env("AGENTOS_LLM_CACHE", &cache)
        .output()
        .expect("run agentos");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("agentos llm prepare"));
    // Every verb has --help.
    for verb in [
        "run", "serve", "top", "sessions", "log", "loop", "parse", "gbnf", "llm", "models",
    ] {
        let (code, out, _) = run_full(&[verb, "--help"], dir.path());
        assert_eq!(code, 0, "{verb}");
        assert!(out.contains("Usage: agentos"), "{verb}: {out}");
    }
    for sub in ["prepare", "status", "serve", "path"] {
        let (code, out, _) = run_full(&["llm", sub, "--help"], dir.path());
        assert_eq!(code, 0, "llm {sub}");
        assert!(out.contains("Usage: agentos llm"), "llm {sub}: {out}");
    }
}

// ---- run: the review of proposals ---------------------------------------------------

/// A model that proposes an edit of `notes.txt`, then finishes.
const PROPOSES: &str = "<<PLAN:fix:PLAN\n<<EDIT(notes.txt)<2>:BETA:EDIT\n<<SEND[102]:proposed:SEND\n---\n<<PLAN:done:PLAN\n<<SEND[200]:fixed:SEND\n";

/// A temp git repository holding `notes.txt` (`alpha`, `beta`), committed.
fn notes_project() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::write(d.path().join("notes.txt"), "alpha\nbeta\n").expect("write");
    for args in [
        &["init", "-q"][..],
        &["add", "-A"],
        &["commit", "-q", "-m", "init"],
    ] {
        let out = Command::new("git")
            .arg("-C")
            .arg(d.path())
            .args([
                "-c",
                "user.name=agentos-test",
                "-c",
                "user.email=test@agentos.invalid",
            ])
            .args(["-c", "commit.gpgsign=false"])
            .args(args)
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {out:?}");
    }
    d
}

fn notes(project: &tempfile::TempDir) -> String {
    std::fs::read_to_string(project.path().join("notes.txt")).expect("notes.txt")
}

/// `agentos ARGS` with `answers` on stdin (then closed): exit code, stdout, stderr.
fn run_answering(args: &[&str], data: &std::path::Path, answers: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_agentos"))
        .args(args)
        .env("AGENTOS_DATA_DIR", data)
        .env_remove("AGENTOS_LLM_BASE_URL")
        .env_remove("AGENTOS_LLM_MODEL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn agentos");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(answers.as_bytes()).expect("write answers");
    drop(stdin);
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).expect("utf8"),
        String::from_utf8(out.stderr).expect("utf8"),
    )
}

/// The rows of the newest loop in the store under `data`, as `log --json` prints them.
fn logged_rows(data: &std::path::Path, loop_id: i64) -> Vec<serde_json::Value> {
    let (code, out, err) = run_full(&["log", "--json", &loop_id.to_string()], data);
    assert_eq!(code, 0, "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON row"))
        .collect()
}

/// The EDIT row of notes.txt: (status, state, outcome).
fn edit_row(rows: &[serde_json::Value]) -> (i64, String, String) {
    let r = rows
        .iter()
        .find(|r| r["op"] == "EDIT" && r["targetUri"] == "notes.txt")
        .expect("the EDIT row");
    (
        r["status"].as_i64().expect("status"),
        r["state"].as_str().unwrap_or_default().to_owned(),
        r["outcome"].as_str().unwrap_or_default().to_owned(),
    )
}

#[test]
fn run_review_diff_then_accept_writes_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let project = notes_project();
    let s = script(dir.path(), PROPOSES);
    let root = project.path().to_str().expect("utf-8");
    let args = [
        "run",
        "--script",
        &s,
        "--project",
        root,
        "--review",
        "--json",
        "fix",
    ];
    let (code, out, err) = run_answering(&args, dir.path(), "d\na\n");
    assert_eq!(code, 0, "{err}");
    assert_eq!(notes(&project), "alpha\nBETA\n");
    // Asked with a summary, the diff shown on `d`, asked again, then accepted.
    let asked = err.find("EDIT notes.txt · +1 -1 lines").expect(&err);
    let diff = err[asked..].find("-beta\n+BETA\n").expect(&err) + asked;
    let again = err[diff..]
        .find("[a]ccept / [r]eject / [d]iff")
        .expect(&err)
        + diff;
    assert!(err[again..].contains("accepted"), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["status"], 200);
    let (status, state, _) = edit_row(&logged_rows(dir.path(), v["loopId"].as_i64().unwrap()));
    assert_eq!((status, state.as_str()), (200, "resolved"));
}

#[test]
fn run_review_reject_leaves_the_file_and_the_model_sees_400() {
    let dir = tempfile::tempdir().expect("tempdir");
    let project = notes_project();
    let s = script(dir.path(), PROPOSES);
    let root = project.path().to_str().expect("utf-8");
    let args = [
        "run",
        "--script",
        &s,
        "--project",
        root,
        "--review",
        "--json",
        "fix",
    ];
    let (code, out, err) = run_answering(&args, dir.path(), "r\n");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("rejected"), "{err}");
    assert_eq!(notes(&project), "alpha\nbeta\n");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let (status, state, outcome) =
        edit_row(&logged_rows(dir.path(), v["loopId"].as_i64().unwrap()));
    assert_eq!(
        (status, state.as_str(), outcome.as_str()),
        (400, "failed", "rejected")
    );
    // The loop as the model saw it: the EDIT answered 400.
    let (_, log, _) = run_full(&["log"], dir.path());
    assert!(log.contains("log:///1/1/5/EDIT notes.txt 400"), "{log}");
}

#[test]
fn run_without_a_terminal_or_with_stdin_closed_rejects_proposals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let project = notes_project();
    let s = script(dir.path(), PROPOSES);
    let root = project.path().to_str().expect("utf-8");
    // No terminal (stdin is /dev/null) and no --review: rejected at once, never asked.
    let (code, out, err) = run_full(
        &["run", "--script", &s, "--project", root, "--json", "fix"],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("[a]ccept"), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let rows = logged_rows(dir.path(), v["loopId"].as_i64().unwrap());
    assert_eq!(edit_row(&rows).2, "no_review_channel");
    // Asked, but stdin ends before an answer: the same.
    let args = [
        "run",
        "--script",
        &s,
        "--project",
        root,
        "--review",
        "--json",
        "fix",
    ];
    let (code, out, err) = run_answering(&args, dir.path(), "");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("[a]ccept"), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let rows = logged_rows(dir.path(), v["loopId"].as_i64().unwrap());
    assert_eq!(edit_row(&rows).2, "no_review_channel");
    assert_eq!(notes(&project), "alpha\nbeta\n");
}

/// Runs `agentos ARGS` with a silent, open stdin, waits (reading stderr) for the first
/// proposal's question, sends SIGINT (Ctrl-C) and collects what follows: exit code, the JSON
/// document on stdout, the rest of stderr.
fn interrupt_at_question(
    args: &[&str],
    data: &std::path::Path,
) -> (Option<i32>, serde_json::Value, String) {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_agentos"))
        .args(args)
        .env("AGENTOS_DATA_DIR", data)
        .env_remove("AGENTOS_LLM_BASE_URL")
        .env_remove("AGENTOS_LLM_MODEL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn agentos");
    let mut stderr = child.stderr.take().expect("stderr");
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&seen).contains("[a]ccept") {
        match stderr.read(&mut byte) {
            Ok(1) => seen.push(byte[0]),
            other => panic!(
                "stderr ended before the question: {other:?}\n{}",
                String::from_utf8_lossy(&seen)
            ),
        }
    }
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).expect("stderr");
    // Stdin (still open) is closed only now, with the child gone.
    let out = child.wait_with_output().expect("wait");
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code(), v, rest)
}

#[test]
fn run_review_ctrl_c_at_the_question_cancels_the_loop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let project = notes_project();
    let s = script(dir.path(), PROPOSES);
    let root = project.path().to_str().expect("utf-8");
    let args = [
        "run",
        "--script",
        &s,
        "--project",
        root,
        "--review",
        "--json",
        "fix",
    ];
    let (code, v, rest) = interrupt_at_question(&args, dir.path());
    assert_eq!(code, Some(130), "{rest}");
    assert!(rest.contains("cancelling loop"), "{rest}");
    assert_eq!(v["status"], 499);
    assert_eq!(notes(&project), "alpha\nbeta\n");
    let rows = logged_rows(dir.path(), v["loopId"].as_i64().unwrap());
    let (status, state, _) = edit_row(&rows);
    assert_eq!((status, state.as_str()), (499, "cancelled"));
}

/// A `agentos serve --port 0` child and the address it printed.
struct Served {
    child: std::process::Child,
    addr: String,
}

fn serve(data: &std::path::Path, script_path: &str) -> Served {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_agentos"))
        .args(["serve", "--port", "0", "--script", script_path])
        .env("AGENTOS_DATA_DIR", data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the address");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    Served { child, addr }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

#[test]
fn serve_answers_drains_on_sigterm_and_restarts_with_the_store_intact() {
    use agentos_engine::daemon::client::Client;
    use serde_json::json;
    let dir = tempfile::tempdir().expect("tempdir");
    let s = script(dir.path(), TWO_TURNS);
    let mut d = serve(dir.path(), &s);
    let url = format!("ws://{}", d.addr);
    let loop_id = block_on(async {
        let c = Client::connect(&url).await.expect("connect");
        c.call("session.create", json!({"name": "kept"}))
            .await
            .expect("create");
        let r = c
            .call("loop.run", json!({"prompt": "note"}))
            .await
            .expect("run");
        let id = r["loopId"].as_i64().expect("id");
        while let Some(n) = c.notification().await {
            if n.method == "loop/terminated" {
                assert_eq!(n.params["finalStatus"], 200);
                break;
            }
        }
        id
    });
    // /metrics and /healthz on the same port.
    let metrics = http_get(&d.addr, "/metrics");
    assert!(metrics.contains("agentos_turns_total 2"), "{metrics}");
    assert!(metrics.contains("agentos_processes"), "{metrics}");
    assert!(
        metrics.contains("agentos_loops_ended_total{status=\"200\"} 1"),
        "{metrics}"
    );
    assert!(http_get(&d.addr, "/healthz").ends_with("ok\n"));
    let st = Command::new("kill")
        .args(["-TERM", &d.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    let status = d.child.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "a drained daemon exits 0");
    // A loop left running by a daemon that died hard: the next daemon marks it interrupted.
    let db = dir.path().join("sessions.db");
    let stuck = {
        let store = agentos_engine::store::Store::open(&db).expect("store");
        let run = store.runs(1).expect("runs")[0].id;
        let lp = store
            .create_loop(run, "left running", "{}", None)
            .expect("loop");
        assert!(store.claim_loop(lp.id).expect("claim"));
        lp.id
    };
    let mut d2 = serve(dir.path(), &s);
    let url = format!("ws://{}", d2.addr);
    block_on(async {
        let c = Client::connect(&url).await.expect("connect");
        let list = c.call("session.list", json!({})).await.expect("list");
        assert_eq!(list["sessions"][0]["name"], "kept");
        let log = c
            .call("log.read", json!({"loopId": loop_id}))
            .await
            .expect("log");
        assert!(log["entries"].as_array().is_some_and(|e| e.len() > 3));
    });
    // `run --connect` drives the daemon: same live view, same JSON document.
    let (code, out, err) = run_full(&["run", "--connect", &url, "--json", "again"], dir.path());
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        (v["status"].as_i64(), v["turns"].as_i64()),
        (Some(200), Some(2))
    );
    assert!(err.contains("EDIT known:///a.md 201"), "{err}");
    let _ = d2.child.kill();
    let _ = d2.child.wait();
    let store = agentos_engine::store::Store::open(&db).expect("store");
    let lp = store.loop_row(stuck).expect("loop");
    assert_eq!(
        (lp.status, lp.terminal_message.as_deref()),
        (499, Some("interrupted"))
    );
    // SIGKILL above left nothing open: every loop is terminal.
    assert_eq!(store.interrupt_unfinished().expect("interrupt"), 0);
}

/// A minimal HTTP/1.1 GET over loopback.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

#[test]
fn loop_record_then_replay_rebuilds_the_same_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = script(dir.path(), TWO_TURNS);
    let rec = dir.path().join("rec");
    let rec_s = rec.to_str().expect("utf-8");
    let (code, out, err) = run_full(
        &[
            "loop", "--script", &s, "--record", rec_s, "write", "a", "note",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("recorded into"), "{out}");
    // The replay needs no script: the model's answers come from the journal.
    let (code, out, err) = run_full(&["replay", rec_s], dir.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("log:///1/1/5/EDIT known:///a.md 201"), "{out}");
    assert!(out.contains(": identical"), "{out}");
    let (code, _, err) = run_full(
        &["replay", dir.path().join("nothing").to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(code, 2);
    assert!(err.contains("recording.json"), "{err}");
}

#[test]
fn run_connect_reviews_proposals_over_the_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let project = notes_project();
    let s = script(dir.path(), PROPOSES);
    let mut d = serve(dir.path(), &s);
    let url = format!("ws://{}", d.addr);
    let root = project.path().to_str().expect("utf-8");
    let args = [
        "run",
        "--connect",
        &url,
        "--project",
        root,
        "--review",
        "--json",
        "fix",
    ];
    let (code, out, err) = run_answering(&args, dir.path(), "d\na\n");
    let _ = d.child.kill();
    let _ = d.child.wait();
    assert_eq!(code, 0, "{err}");
    let asked = err.find("EDIT notes.txt · +1 -1 lines").expect(&err);
    assert!(err[asked..].contains("-beta\n+BETA\n"), "{err}");
    assert!(err[asked..].contains("accepted"), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["status"], 200);
    assert_eq!(notes(&project), "alpha\nBETA\n");
    // Rejected over the daemon (a fresh daemon replays the script; the file is back as
    // it was so the edit proposes again): the disk is untouched.
    std::fs::write(project.path().join("notes.txt"), "alpha\nbeta\n").expect("reset");
    let mut d = serve(dir.path(), &s);
    let url = format!("ws://{}", d.addr);
    let args = [
        "run",
        "--connect",
        &url,
        "--project",
        root,
        "--review",
        "--json",
        "again",
    ];
    let (code, _, err) = run_answering(&args, dir.path(), "r\n");
    let _ = d.child.kill();
    let _ = d.child.wait();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("EDIT notes.txt · +1 -1 lines"), "{err}");
    assert!(err.contains("rejected"), "{err}");
    assert_eq!(notes(&project), "alpha\nbeta\n");
    // Ctrl-C at the question cancels the daemon's loop.
    let mut d = serve(dir.path(), &s);
    let url = format!("ws://{}", d.addr);
    let args = [
        "run",
        "--connect",
        &url,
        "--project",
        root,
        "--review",
        "--json",
        "stop",
    ];
    let (code, v, rest) = interrupt_at_question(&args, dir.path());
    let _ = d.child.kill();
    let _ = d.child.wait();
    assert_eq!(code, Some(130), "{rest}");
    assert!(rest.contains("cancelling loop"), "{rest}");
    assert_eq!(v["status"], 499);
    assert_eq!(notes(&project), "alpha\nbeta\n");
}
