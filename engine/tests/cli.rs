//! The `agentos` binary: `parse [--turn]` and `gbnf`, with their exit codes.

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
