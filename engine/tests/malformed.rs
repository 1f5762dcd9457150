//! Malformed inputs: the exact error (message, source, position), recovery at the next
//! opener, the unparsed tail, stray `<<FOOBAR` text and near-miss warnings.

use agentos_engine::grammar::{
    parse, ErrorSource, Item, ParseError, Position, Severity, UnparsedTail,
};

/// A compact view of the items: `S:OP`, `T:text`, `E:line:col:source:message`,
/// `W:line:col:message`.
fn view(src: &str) -> (Vec<String>, Option<UnparsedTail>) {
    let r = parse(src);
    let items = r
        .items
        .iter()
        .map(|i| match i {
            Item::Statement { statement } => format!("S:{}", statement.op),
            Item::Text { text, .. } => format!("T:{text}"),
            Item::Error {
                error:
                    ParseError {
                        line,
                        column,
                        source,
                        severity: Severity::Error,
                        message,
                    },
            } => {
                let src = match source {
                    ErrorSource::Lexer => "lexer",
                    ErrorSource::Parser => "parser",
                    ErrorSource::Visitor => "visitor",
                };
                format!("E:{line}:{column}:{src}:{message}")
            }
            Item::Error { error } => format!("W:{}:{}:{}", error.line, error.column, error.message),
        })
        .collect();
    (items, r.unparsed_tail)
}

fn errs(src: &str) -> Vec<String> {
    let (items, tail) = view(src);
    assert!(tail.is_none(), "{src:?}: unexpected tail {tail:?}");
    items
}

#[test]
fn header_errors_have_exact_messages_and_positions() {
    let cases: &[(&str, &str)] = &[
        (
            "<<EDIT foo:x:EDIT",
            "E:1:7:parser:expected '[', '(', '<' or ':' after <<EDIT; got 'f'",
        ),
        (
            "<<EDIT[a]x:EDIT",
            "E:1:9:parser:expected '(', '<' or ':' after the signal; got 'x'",
        ),
        (
            "<<EDIT(a)x",
            "E:1:9:parser:expected '<' or ':' after the path; got 'x'",
        ),
        (
            "<<EDIT(a)<1>x",
            "E:1:12:parser:expected ':' after the line marker; got 'x'",
        ),
        (
            "<<EDIT(a)[t]:x:EDIT",
            "E:1:9:parser:signal must come before the path",
        ),
        ("<<EDIT(a)(b):x:EDIT", "E:1:9:parser:duplicate path"),
        (
            "<<EDIT(a)<1><2>:x:EDIT",
            "E:1:12:parser:duplicate line marker",
        ),
        (
            "<<EDIT<1>(a):x:EDIT",
            "E:1:9:parser:path must come before the line marker",
        ),
        (
            "<<EDIT[a\n]",
            "E:1:8:lexer:expected ']' to close the signal; got newline",
        ),
        (
            "<<EDIT(a\n)",
            "E:1:8:lexer:expected ')' to close the path; got newline",
        ),
        (
            "<<EDIT(a)<1\n>",
            "E:1:11:lexer:expected '>' to close the line marker; got newline",
        ),
        (
            "<<EDIT(a)<a>:x:EDIT",
            "E:1:9:visitor:malformed line marker '<a>'",
        ),
        (
            "<<EDIT(a)<1,,2>:x:EDIT",
            "E:1:9:visitor:malformed line marker '<1,,2>'",
        ),
        (
            "<<EDIT(a)<1.>:x:EDIT",
            "E:1:9:visitor:malformed line marker '<1.>'",
        ),
        (
            "<<EDIT(a)< 1>:x:EDIT",
            "E:1:9:visitor:malformed line marker '< 1>'",
        ),
        (
            "<<SEND[admin]:x:SEND",
            "E:1:6:visitor:SEND signal must be an integer; got \"admin\"",
        ),
        (
            "<<SEND[200,102]:x:SEND",
            "E:1:6:visitor:SEND signal must be a single integer; got 2 values",
        ),
        (
            "<<KILL[9x](a):x:KILL",
            "E:1:6:visitor:KILL signal must be an integer; got \"9x\"",
        ),
        (
            "<<EXEC[sh,node]:x:EXEC",
            "E:1:6:visitor:EXEC signal must be a single executor name; got 2 values",
        ),
        (
            "<<EXEC[1sh]:x:EXEC",
            "E:1:6:visitor:EXEC signal must be an executor name; got \"1sh\"",
        ),
        (
            "<<WORK[x](run://a):x:WORK",
            "E:1:6:visitor:WORK takes no signal",
        ),
        ("<<READ:x:READ", "E:1:0:visitor:READ requires a path"),
        ("<<PLAN(a):x:PLAN", "E:1:6:visitor:PLAN takes no path"),
        (
            "<<KILL(a)<1>::KILL",
            "E:1:9:visitor:KILL takes no line marker",
        ),
        (
            "<<PLAN<1>:x:PLAN",
            "E:1:6:visitor:PLAN takes no line marker",
        ),
        ("<<READ()::READ", "E:1:6:visitor:empty path"),
        (
            "<<READ(http://h:99999/)::READ",
            "E:1:6:visitor:invalid URI in path: invalid port '99999'",
        ),
        (
            "<<READ(#a#q)::READ",
            "E:1:6:visitor:invalid regex flags 'q' in path",
        ),
        (
            "<<READ(#a#i x)::READ",
            "E:1:11:parser:expected ')' after the regex path; got ' '",
        ),
        (
            "<<MOVE(a):http://h:x/:MOVE",
            "E:1:10:visitor:invalid destination: invalid URI in path: invalid port 'x'",
        ),
    ];
    for (src, want) in cases {
        assert_eq!(errs(src), vec![(*want).to_owned()], "for {src:?}");
    }
}

#[test]
fn ltlt_inside_a_slot_is_rejected_and_recovery_resumes_there() {
    assert_eq!(
        errs("<<EDIT(a<<READ(b)::READ"),
        vec![
            "E:1:8:lexer:unrecognized character '<<' in path".to_owned(),
            "S:READ".to_owned()
        ]
    );
    assert_eq!(
        errs("<<EDIT[a<<READ(b)::READ"),
        vec![
            "E:1:8:lexer:unrecognized character '<<' in signal".to_owned(),
            "S:READ".to_owned()
        ]
    );
    assert_eq!(
        errs("<<EDIT(a)<1<<READ(b)::READ"),
        vec![
            "E:1:11:lexer:unrecognized character '<<' in line marker".to_owned(),
            "S:READ".to_owned()
        ]
    );
    assert_eq!(
        errs("<<EDIT<<READ(b)::READ"),
        vec![
            "E:1:6:parser:expected '[', '(', '<' or ':' after <<EDIT; got '<<'".to_owned(),
            "S:READ".to_owned()
        ]
    );
}

#[test]
fn one_error_per_statement_and_skipped_bytes_are_not_text() {
    // The bad header's remainder (`oops :x:EDIT trailing`) is skipped, not reported.
    assert_eq!(
        errs("<<PLAN:p:PLAN\n<<EDIT(a) oops :x:EDIT trailing\n<<SEND[102]:ok:SEND"),
        vec![
            "S:PLAN".to_owned(),
            "E:2:10:parser:expected '<' or ':' after the path; got 'o'".to_owned(),
            "S:SEND".to_owned()
        ]
    );
    // A visitor error consumes exactly its statement; what follows is parsed normally.
    assert_eq!(
        errs("<<SEND[x]:a:SEND after <<READ(b)::READ"),
        vec![
            "E:1:6:visitor:SEND signal must be an integer; got \"x\"".to_owned(),
            "T: after ".to_owned(),
            "S:READ".to_owned()
        ]
    );
}

#[test]
fn unclosed_body_yields_error_and_unparsed_tail() {
    let (items, tail) = view("<<PLAN:p:PLAN\n<<EDIT(a.md):never closed\n<<SEND[102]:x:SEND");
    assert_eq!(
        items,
        vec![
            "S:PLAN".to_owned(),
            "E:3:18:lexer:expected close tag ':EDIT'; got end of input".to_owned()
        ]
    );
    assert_eq!(
        tail,
        Some(UnparsedTail {
            from: Position { line: 2, column: 0 },
            reason: "expected close tag ':EDIT'; got end of input".to_owned()
        })
    );
}

#[test]
fn suffix_mismatch_is_an_unclosed_body() {
    let (items, tail) = view("<<EDIT1(a):body:EDIT");
    assert_eq!(
        items,
        vec!["E:1:20:lexer:expected close tag ':EDIT1'; got end of input".to_owned()]
    );
    assert_eq!(tail.map(|t| t.from), Some(Position { line: 1, column: 0 }));
}

#[test]
fn truncated_headers_also_yield_a_tail() {
    let cases: &[(&str, &str)] = &[
        (
            "<<EDIT(a)",
            "E:1:9:parser:expected ':' to open the body; got end of input",
        ),
        (
            "<<EDIT[a",
            "E:1:8:lexer:expected ']' to close the signal; got end of input",
        ),
        (
            "<<EDIT(a",
            "E:1:8:lexer:expected ')' to close the path; got end of input",
        ),
        (
            "<<EDIT(a)<1",
            "E:1:11:lexer:expected '>' to close the line marker; got end of input",
        ),
        (
            "<<EDIT(#ab",
            "E:1:10:lexer:expected '#' to close the regex path; got end of input",
        ),
    ];
    for (src, want) in cases {
        let (items, tail) = view(src);
        assert_eq!(items, vec![(*want).to_owned()], "for {src:?}");
        assert_eq!(
            tail.map(|t| t.from),
            Some(Position { line: 1, column: 0 }),
            "for {src:?}"
        );
    }
}

#[test]
fn stray_openers_are_text_and_near_misses_warn() {
    let (items, tail) = view("see <<FOOBAR and <<CLOSE(log:///1):x:CLOSE then <<edit here");
    assert!(tail.is_none());
    assert_eq!(
        items,
        vec![
            "T:see <<FOOBAR and <<CLOSE(log:///1):x:CLOSE then <<edit here".to_owned(),
            "W:1:17:unknown operation '<<CLOSE'; did you mean FOLD?".to_owned(),
            "W:1:48:unknown operation '<<edit'; did you mean EDIT?".to_owned(),
        ]
    );
    let r = parse("<<FOOBAR <<RAED(a)::RAED");
    assert!(!r.has_errors(), "warnings are not errors");
    assert_eq!(
        r.errors().map(|e| e.message.clone()).collect::<Vec<_>>(),
        vec!["unknown operation '<<RAED'; did you mean READ?"]
    );
    // Shell heredocs stay quiet.
    assert_eq!(parse("cat <<EOF\nhi\nEOF\n<<END").errors().count(), 0);
}

#[test]
fn recovery_parses_everything_after_several_bad_statements() {
    let src = "<<READ:x:READ\n<<EDIT(a) b\n<<FIND(src/**):x:FIND\n<<SEND[nope]:x:SEND\n<<SEND[200]:done:SEND\n";
    let (items, tail) = view(src);
    assert!(tail.is_none());
    assert_eq!(
        items,
        vec![
            "E:1:0:visitor:READ requires a path".to_owned(),
            "E:2:10:parser:expected '<' or ':' after the path; got 'b'".to_owned(),
            "S:FIND".to_owned(),
            "E:4:6:visitor:SEND signal must be an integer; got \"nope\"".to_owned(),
            "S:SEND".to_owned(),
        ]
    );
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A deterministic sweep over short strings from a hostile alphabet.
    let alphabet: &[&str] = &[
        "<<", "EDIT", "SEND", ":", "[", "]", "(", ")", "<", ">", "#", "\\", "\n", "1", ",", "-",
        "é", " ",
    ];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..20_000 {
        let mut s = String::new();
        for _ in 0..(state % 24) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            s.push_str(alphabet[(state % alphabet.len() as u64) as usize]);
        }
        let r = parse(&s);
        let _ = serde_json::to_string(&r).expect("serializes");
        state = state.wrapping_add(0x9E37_79B9);
    }
}
