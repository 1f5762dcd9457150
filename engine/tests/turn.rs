//! The turn sandwich: optional preamble, PLAN first, whitespace between ops, terminal SEND.

use agentos_engine::grammar::{parse_turn, Op};

fn violations(src: &str) -> Vec<String> {
    parse_turn(src)
        .violations
        .iter()
        .map(|v| format!("{}:{}:{}", v.line, v.column, v.message))
        .collect()
}

#[test]
fn a_full_turn_is_valid_and_split_into_parts() {
    let src = "Let me look.\n<<PLAN:inspect the config:PLAN\n<<READ(config/app.json):$.network.timeout:READ\n\
               <<READ(src/net/client.rs)<40,80>::READ\n<<SEND[102]:reading client and config:SEND\n";
    let t = parse_turn(src);
    assert!(t.valid, "{:?}", t.violations);
    let turn = t.turn.expect("valid turn");
    assert_eq!(turn.preamble.as_deref(), Some("Let me look.\n"));
    assert_eq!(turn.plan.op, Op::Plan);
    assert_eq!(
        turn.ops.iter().map(|s| s.op).collect::<Vec<_>>(),
        vec![Op::Read, Op::Read]
    );
    assert_eq!(turn.code(), Some(102));
    assert_eq!(turn.statements().len(), 4);
}

#[test]
fn minimal_turn_without_preamble_or_ops() {
    let t = parse_turn("<<PLAN:done already:PLAN <<SEND[200]:42:SEND");
    assert!(t.valid);
    let turn = t.turn.expect("valid");
    assert!(turn.preamble.is_none() && turn.ops.is_empty());
}

#[test]
fn plan_must_come_first() {
    assert_eq!(
        violations("<<READ(a)::READ\n<<PLAN:p:PLAN\n<<SEND[102]:x:SEND"),
        vec!["1:0:a turn must start with <<PLAN; got <<READ"]
    );
    assert_eq!(
        violations("just text"),
        vec!["1:9:a turn must start with <<PLAN; got end of input"]
    );
}

#[test]
fn terminal_send_is_required_and_broadcast() {
    assert_eq!(
        violations("<<PLAN:p:PLAN\n<<READ(a)::READ\n"),
        vec!["3:0:a turn must end with a terminal <<SEND[code]; got end of input"]
    );
    assert_eq!(
        violations("<<PLAN:p:PLAN\n<<SEND(run://x):hi:SEND"),
        vec!["2:23:a turn must end with a terminal <<SEND[code]; got end of input"]
    );
    assert_eq!(
        violations("<<PLAN:p:PLAN"),
        vec!["1:13:a turn must end with a terminal <<SEND[code]; got end of input"]
    );
    // A directed SEND mid-turn is an ordinary op; a broadcast one is not.
    assert!(parse_turn("<<PLAN:p:PLAN <<SEND(run://x):hi:SEND <<SEND[102]:x:SEND").valid);
    assert_eq!(
        violations("<<PLAN:p:PLAN <<SEND[102]:a:SEND <<READ(a)::READ <<SEND[200]:b:SEND"),
        vec!["1:14:a broadcast <<SEND may only end the turn"]
    );
}

#[test]
fn only_whitespace_between_ops_and_after_send() {
    assert_eq!(
        violations("<<PLAN:p:PLAN\nnow reading\n<<READ(a)::READ\n<<SEND[102]:x:SEND"),
        vec!["1:13:only whitespace may separate operations; got text"]
    );
    assert_eq!(
        violations("<<PLAN:p:PLAN\n<<SEND[102]:x:SEND\nthanks!"),
        vec!["2:18:nothing may follow the terminal <<SEND; got text"]
    );
    assert!(parse_turn("<<PLAN:p:PLAN\n\t \n<<SEND[102]:x:SEND\n\n  ").valid);
}

#[test]
fn parse_errors_and_tails_invalidate_the_turn() {
    let t = parse_turn("<<PLAN:p:PLAN\n<<READ:x:READ\n<<SEND[102]:x:SEND");
    assert!(!t.valid && t.violations.is_empty() && t.turn.is_none());
    let t = parse_turn("<<PLAN:p:PLAN\n<<SEND[102]:never closed");
    assert!(!t.valid && t.result.unparsed_tail.is_some());
}

#[test]
fn turn_json_carries_validity() {
    let v = serde_json::to_value(parse_turn("<<PLAN:p:PLAN <<SEND[102]:x:SEND")).expect("json");
    assert_eq!(v["valid"], true);
    assert_eq!(v["violations"], serde_json::json!([]));
    assert_eq!(v["items"].as_array().map(Vec::len), Some(2));
}
