//! The statement corpus: every op, slot and marker form, each with its exact AST (as the
//! JSON wire shape, so field names and null-vs-absent are checked too).

use agentos_engine::grammar::{parse, Item, Position};
use serde_json::{json, Value};

fn only_statement(src: &str) -> Value {
    let r = parse(src);
    assert!(!r.has_errors(), "{src:?} produced errors: {:#?}", r.items);
    assert_eq!(r.items.len(), 1, "{src:?} produced {:#?}", r.items);
    match &r.items[0] {
        Item::Statement { statement } => {
            assert_eq!(statement.position, Position { line: 1, column: 0 });
            serde_json::to_value(statement).expect("statement serializes")
        }
        other => panic!("{src:?}: expected a statement, got {other:?}"),
    }
}

fn st(op: &str, suffix: &str, signal: Value, target: Value, lm: Value, body: Value) -> Value {
    json!({
        "op": op, "suffix": suffix, "signal": signal, "target": target,
        "lineMarker": lm, "body": body, "position": {"line": 1, "column": 0}
    })
}

fn local(raw: &str) -> Value {
    json!({"kind": "local", "raw": raw})
}

fn opaque(raw: &str, scheme: &str, pathname: &str, fragment: Option<&str>) -> Value {
    json!({
        "kind": "url", "raw": raw, "scheme": scheme, "username": null, "password": null,
        "hostname": null, "port": null, "pathname": pathname, "search": {}, "fragment": fragment
    })
}

fn rx_path(raw: &str, pattern: &str, flags: &str) -> Value {
    json!({"kind": "regex", "raw": raw, "pattern": pattern, "flags": flags})
}

fn m(dialect: &str, raw: &str) -> Value {
    json!({"dialect": dialect, "raw": raw})
}

fn mrx(raw: &str, pattern: &str, flags: &str) -> Value {
    json!({"dialect": "regex", "raw": raw, "pattern": pattern, "flags": flags})
}

fn lm(marks: Value) -> Value {
    json!({ "marks": marks })
}

fn send(raw: &str, parsed: Value) -> Value {
    json!({"raw": raw, "json": parsed})
}

const N: Value = Value::Null;

fn tags(t: &[&str]) -> Value {
    json!(t)
}

#[allow(clippy::too_many_lines)]
fn corpus() -> Vec<(&'static str, Value)> {
    vec![
        // PLAN
        ("<<PLAN:find where retries are configured:PLAN", st("PLAN", "", N, N, N, json!("find where retries are configured"))),
        ("<<PLAN[design,risk]:two steps:PLAN", st("PLAN", "", tags(&["design", "risk"]), N, N, json!("two steps"))),
        ("<<PLAN::PLAN", st("PLAN", "", N, N, N, N)),
        ("<<PLAN1:mentions :PLAN inside:PLAN1", st("PLAN", "1", N, N, N, json!("mentions :PLAN inside"))),
        // FIND
        ("<<FIND(src/**):#retry|backoff#i:FIND", st("FIND", "", N, local("src/**"), N, mrx("#retry|backoff#i", "retry|backoff", "i"))),
        (
            "<<FIND(known:///**)<0.7,1,10>:~retry policy rationale:FIND",
            st("FIND", "", N, opaque("known:///**", "known", "/**", None), lm(json!([0.7, 1, 10])), m("semantic", "~retry policy rationale")),
        ),
        ("<<FIND[rust, net ,](src/):TODO*:FIND", st("FIND", "", tags(&["rust", "net"]), local("src/"), N, m("glob", "TODO*"))),
        (r"<<FIND(#\.rs$#i)::FIND", st("FIND", "", N, rx_path(r"#\.rs$#i", r"\.rs$", "i"), N, N)),
        (r"<<FIND(#(a|b)\#x#)::FIND", st("FIND", "", N, rx_path(r"#(a|b)\#x#", r"(a|b)\#x", ""), N, N)),
        ("<<FIND(src/**):@parse_turn:FIND", st("FIND", "", N, local("src/**"), N, m("graph", "@parse_turn"))),
        ("<<FIND(src/**):@<Parser:FIND", st("FIND", "", N, local("src/**"), N, m("graph", "@<Parser"))),
        ("<<FIND(src/**):@>run:FIND", st("FIND", "", N, local("src/**"), N, m("graph", "@>run"))),
        ("<<FIND(src/**):@ :FIND", st("FIND", "", N, local("src/**"), N, m("glob", "@ "))),
        ("<<FIND(src/**):~:FIND", st("FIND", "", N, local("src/**"), N, m("glob", "~"))),
        (
            "<<FIND(docs/**)<1,20>://section[@id='x']/p:FIND",
            st("FIND", "", N, local("docs/**"), lm(json!([1, 20])), m("xpath", "//section[@id='x']/p")),
        ),
        ("<<FIND(docs/**)://section[:FIND", st("FIND", "", N, local("docs/**"), N, m("glob", "//section["))),
        ("<<FIND(a.json):$..price:FIND", st("FIND", "", N, local("a.json"), N, m("jsonpath", "$..price"))),
        ("<<FIND(a.json):$foo:FIND", st("FIND", "", N, local("a.json"), N, m("glob", "$foo"))),
        ("<<FIND(src/**):#unclosed:FIND", st("FIND", "", N, local("src/**"), N, m("glob", "#unclosed"))),
        ("<<FIND(src/**):#a#x:FIND", st("FIND", "", N, local("src/**"), N, m("glob", "#a#x"))),
        ("<<FIND(src/**):#(a#:FIND", st("FIND", "", N, local("src/**"), N, m("glob", "#(a#"))),
        // READ
        ("<<READ(config/app.json):$.network.timeout:READ", st("READ", "", N, local("config/app.json"), N, m("jsonpath", "$.network.timeout"))),
        ("<<READ(src/net/client.rs)<40,80>::READ", st("READ", "", N, local("src/net/client.rs"), lm(json!([40, 80])), N)),
        ("<<READ(src/a.rs)<-1-5>::READ", st("READ", "", N, local("src/a.rs"), lm(json!([-1, 5])), N)),
        ("<<READ(src/a.rs)<1, 5>::READ", st("READ", "", N, local("src/a.rs"), lm(json!([1, 5])), N)),
        ("<<READ(src/a.rs)<3>:*TODO*:READ", st("READ", "", N, local("src/a.rs"), lm(json!([3])), m("glob", "*TODO*"))),
        (
            "<<READ[net](sh:///1/2/3#stderr)<38,40>::READ",
            st("READ", "", tags(&["net"]), opaque("sh:///1/2/3#stderr", "sh", "/1/2/3", Some("stderr")), lm(json!([38, 40])), N),
        ),
        ("<<READ(notes (draft%29.md)::READ", st("READ", "", N, local("notes (draft%29.md"), N, N)),
        ("<<READ (a.md) <2> ::READ", st("READ", "", N, local("a.md"), lm(json!([2])), N)),
        ("<<READ\n(a.md)\n::READ", st("READ", "", N, local("a.md"), N, N)),
        (
            "<<READ(https://Example.COM:443/x?q=a+b&r=%2F#top):x:READ",
            st(
                "READ",
                "",
                N,
                json!({
                    "kind": "url", "raw": "https://Example.COM:443/x?q=a+b&r=%2F#top", "scheme": "https",
                    "username": null, "password": null, "hostname": "example.com", "port": null,
                    "pathname": "/x", "search": {"q": "a b", "r": "/"}, "fragment": "top"
                }),
                N,
                m("glob", "x"),
            ),
        ),
        (
            "<<READ(http://localhost:8080)::READ",
            st(
                "READ",
                "",
                N,
                json!({
                    "kind": "url", "raw": "http://localhost:8080", "scheme": "http", "username": null,
                    "password": null, "hostname": "localhost", "port": 8080, "pathname": "/",
                    "search": {}, "fragment": null
                }),
                N,
                N,
            ),
        ),
        (
            "<<READ(file:///etc/hosts)::READ",
            st(
                "READ",
                "",
                N,
                json!({
                    "kind": "url", "raw": "file:///etc/hosts", "scheme": "file", "username": null,
                    "password": null, "hostname": null, "port": null, "pathname": "/etc/hosts",
                    "search": {}, "fragment": null
                }),
                N,
                N,
            ),
        ),
        ("<<READ(run://checker)::READ", st("READ", "", N, opaque("run://checker", "run", "checker", None), N, N)),
        ("<<READ(a.md)<2.5>::READ", st("READ", "", N, local("a.md"), lm(json!([2.5])), N)),
        // EDIT
        (
            "<<EDIT(src/net/client.rs)<52>:    let timeout = Duration::from_secs(30);:EDIT",
            st("EDIT", "", N, local("src/net/client.rs"), lm(json!([52])), json!("    let timeout = Duration::from_secs(30);")),
        ),
        (
            "<<EDIT[net,timeouts](known:///net/timeouts.md):Client timeout lives in src/net/client.rs line 52.:EDIT",
            st(
                "EDIT",
                "",
                tags(&["net", "timeouts"]),
                opaque("known:///net/timeouts.md", "known", "/net/timeouts.md", None),
                N,
                json!("Client timeout lives in src/net/client.rs line 52."),
            ),
        ),
        (
            "<<EDIT1(known:///howto/edit.md):\nExample: <<EDIT(known:///x):hello:EDIT\n:EDIT1",
            st(
                "EDIT",
                "1",
                N,
                opaque("known:///howto/edit.md", "known", "/howto/edit.md", None),
                N,
                json!("\nExample: <<EDIT(known:///x):hello:EDIT\n"),
            ),
        ),
        ("<<EDIT(a.md)<1,-1>::EDIT", st("EDIT", "", N, local("a.md"), lm(json!([1, -1])), N)),
        ("<<EDIT(a.md)<0>:header\n:EDIT", st("EDIT", "", N, local("a.md"), lm(json!([0])), json!("header\n"))),
        ("<<EDIT(a.md)<-1>:tail:EDIT", st("EDIT", "", N, local("a.md"), lm(json!([-1])), json!("tail"))),
        ("<<EDIT(a.md):x:EDITED more:EDIT", st("EDIT", "", N, local("a.md"), N, json!("x:EDITED more"))),
        ("<<EDITfoo_2(a.md):a :EDIT b:EDITfoo_2", st("EDIT", "foo_2", N, local("a.md"), N, json!("a :EDIT b"))),
        ("<<EDIT[](a.md):x:EDIT", st("EDIT", "", tags(&[]), local("a.md"), N, json!("x"))),
        (
            "<<EDIT(run://checker):Verify the timeout change.:EDIT",
            st("EDIT", "", N, opaque("run://checker", "run", "checker", None), N, json!("Verify the timeout change.")),
        ),
        // COPY
        ("<<COPY(src/a.rs)<1,10>:known:///b.rs:COPY", st("COPY", "", N, local("src/a.rs"), lm(json!([1, 10])), json!("known:///b.rs"))),
        (
            "<<COPY[keep](run://self):Try the alternative.:COPY",
            st("COPY", "", tags(&["keep"]), opaque("run://self", "run", "self", None), N, json!("Try the alternative.")),
        ),
        // MOVE
        (
            "<<MOVE(known:///tmp/a.md):known:///archive/a.md:MOVE",
            st(
                "MOVE",
                "",
                N,
                opaque("known:///tmp/a.md", "known", "/tmp/a.md", None),
                N,
                opaque("known:///archive/a.md", "known", "/archive/a.md", None),
            ),
        ),
        ("<<MOVE(a.md):b.md:MOVE", st("MOVE", "", N, local("a.md"), N, local("b.md"))),
        ("<<MOVE(a.md)::MOVE", st("MOVE", "", N, local("a.md"), N, N)),
        // OPEN
        (
            "<<OPEN(log:///1/**)<1,5>:READ:OPEN",
            st("OPEN", "", N, opaque("log:///1/**", "log", "/1/**", None), lm(json!([1, 5])), m("glob", "READ")),
        ),
        (
            "<<OPEN[err](log:///2/*):~failing tests:OPEN",
            st("OPEN", "", tags(&["err"]), opaque("log:///2/*", "log", "/2/*", None), N, m("semantic", "~failing tests")),
        ),
        // FOLD
        (
            "<<FOLD(log:///1/**/READ)<1,20>::FOLD",
            st("FOLD", "", N, opaque("log:///1/**/READ", "log", "/1/**/READ", None), lm(json!([1, 20])), N),
        ),
        (
            "<<FOLD(log:///**):#READ|FIND#:FOLD",
            st("FOLD", "", N, opaque("log:///**", "log", "/**", None), N, mrx("#READ|FIND#", "READ|FIND", "")),
        ),
        // EXEC
        ("<<EXEC[sh]<120>:cargo test -q:EXEC", st("EXEC", "", json!("sh"), N, lm(json!([120])), json!("cargo test -q"))),
        ("<<EXEC:ls -la:EXEC", st("EXEC", "", N, N, N, json!("ls -la"))),
        ("<<EXEC[](src)<120,5>:make:EXEC", st("EXEC", "", N, local("src"), lm(json!([120, 5])), json!("make"))),
        ("<<EXEC[python3.11]:print(1):EXEC", st("EXEC", "", json!("python3.11"), N, N, json!("print(1)"))),
        ("<<EXEC[ node ]:x:EXEC", st("EXEC", "", json!("node"), N, N, json!("x"))),
        (
            "<<EXEC1[node]:console.log(\":EXEC is text\"):EXEC1",
            st("EXEC", "1", json!("node"), N, N, json!("console.log(\":EXEC is text\")")),
        ),
        (
            "<<EXEC[sh]<0>:tail -f log\n:EXEC",
            st("EXEC", "", json!("sh"), N, lm(json!([0])), json!("tail -f log\n")),
        ),
        // KILL
        ("<<KILL[9](sh:///3/1/2)::KILL", st("KILL", "", json!(9), opaque("sh:///3/1/2", "sh", "/3/1/2", None), N, N)),
        (
            "<<KILL(known:///scratch/old.md)::KILL",
            st("KILL", "", N, opaque("known:///scratch/old.md", "known", "/scratch/old.md", None), N, N),
        ),
        (
            "<<KILL(run://checker):no longer needed:KILL",
            st("KILL", "", N, opaque("run://checker", "run", "checker", None), N, json!("no longer needed")),
        ),
        ("<<KILL[](a.md)::KILL", st("KILL", "", N, local("a.md"), N, N)),
        // SEND
        (
            "<<SEND[102]:searching for retry config:SEND",
            st("SEND", "", json!(102), N, N, send("searching for retry config", N)),
        ),
        ("<<SEND[200]:{\"answer\": 42}:SEND", st("SEND", "", json!(200), N, N, send("{\"answer\": 42}", json!({"answer": 42})))),
        (
            "<<SEND(run://checker):also check the retry path:SEND",
            st("SEND", "", N, opaque("run://checker", "run", "checker", None), N, send("also check the retry path", N)),
        ),
        ("<<SEND[102]<-1>:park:SEND", st("SEND", "", json!(102), N, lm(json!([-1])), send("park", N))),
        ("<<SEND[499](sh:///1/2/3)::SEND", st("SEND", "", json!(499), opaque("sh:///1/2/3", "sh", "/1/2/3", None), N, N)),
        ("<<SEND[]:x:SEND", st("SEND", "", N, N, N, send("x", N))),
        ("<<SEND[ -1 ]:[1, 2]:SEND", st("SEND", "", json!(-1), N, N, send("[1, 2]", json!([1, 2])))),
        // WORK / FORK
        (
            "<<WORK(run://checker):Verify the tests.:WORK",
            st("WORK", "", N, opaque("run://checker", "run", "checker", None), N, json!("Verify the tests.")),
        ),
        ("<<FORK(run://alt):Try plan B.:FORK", st("FORK", "", N, opaque("run://alt", "run", "alt", None), N, json!("Try plan B."))),
        (
            "<<FORK1(run://alt):mention :FORK here:FORK1",
            st("FORK", "1", N, opaque("run://alt", "run", "alt", None), N, json!("mention :FORK here")),
        ),
    ]
}

#[test]
fn corpus_has_at_least_sixty_statements_covering_every_op() {
    let c = corpus();
    assert!(c.len() >= 60, "corpus has {}", c.len());
    for op in [
        "PLAN", "FIND", "READ", "EDIT", "COPY", "MOVE", "OPEN", "FOLD", "EXEC", "KILL", "SEND",
        "WORK", "FORK",
    ] {
        assert!(c.iter().any(|(_, v)| v["op"] == op), "no {op} in corpus");
    }
}

#[test]
fn every_corpus_statement_parses_to_its_exact_ast() {
    for (src, expected) in corpus() {
        assert_eq!(only_statement(src), expected, "AST mismatch for {src:?}");
    }
}

#[test]
fn statement_json_round_trips_through_serde() {
    for (src, _) in corpus() {
        let r = parse(src);
        let json = serde_json::to_string(&r).expect("serialize");
        let back: agentos_engine::grammar::ParseResult =
            serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, r, "serde round trip for {src:?}");
    }
}

#[test]
fn positions_track_lines_and_unicode_columns() {
    let src = "préface ✓ <<PLAN:p:PLAN\n  <<READ(a.md)::READ <<SEND[102]:ok:SEND";
    let r = parse(src);
    let got: Vec<(String, Position)> = r
        .items
        .iter()
        .map(|i| match i {
            Item::Statement { statement } => (statement.op.to_string(), statement.position),
            Item::Text { text, position } => (format!("text:{text}"), *position),
            Item::Error { error } => (format!("error:{}", error.message), error.position()),
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "text:préface ✓ ".to_owned(),
                Position { line: 1, column: 0 }
            ),
            (
                "PLAN".to_owned(),
                Position {
                    line: 1,
                    column: 10
                }
            ),
            ("READ".to_owned(), Position { line: 2, column: 2 }),
            (
                "SEND".to_owned(),
                Position {
                    line: 2,
                    column: 21
                }
            ),
        ]
    );
}
