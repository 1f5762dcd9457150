//! render → parse round trip as a property over generated ASTs.

use agentos_engine::grammar::matcher::classify;
use agentos_engine::grammar::render::safe_suffix;
use agentos_engine::grammar::{
    parse, parse_path, render_statement, render_statements, Body, Item, LineMarker, Op, ParsedPath,
    Position, SendBody, Signal, SignalKind, SlotRule, Statement,
};
use proptest::prelude::*;

fn op() -> impl Strategy<Value = Op> {
    prop::sample::select(Op::ALL.to_vec())
}

fn local_raw() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_./*-][a-zA-Z0-9_./* (%-]{0,16}"
        .prop_filter("not a regex or url", |s| !s.starts_with('#'))
}

fn url_raw() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["known", "sh", "log", "run", "https", "http", "file"]),
        "[a-z0-9]{1,8}",
        prop::collection::vec("[a-zA-Z0-9_.*-]{1,6}", 0..3),
        prop::option::of("q=[a-z]{1,3}(&r=[a-z0-9+]{0,3})?"),
        prop::option::of("[a-z]{1,6}"),
    )
        .prop_map(|(scheme, host, segs, query, frag)| {
            let mut s = format!("{scheme}://");
            if scheme != "file" {
                s.push_str(&host);
            }
            for seg in segs {
                s.push('/');
                s.push_str(&seg);
            }
            if let Some(q) = query {
                s.push('?');
                s.push_str(&q);
            }
            if let Some(f) = frag {
                s.push('#');
                s.push_str(&f);
            }
            s
        })
}

fn regex_raw() -> impl Strategy<Value = String> {
    (
        "[a-z.*+?|()\\[\\]$^ ]{0,10}",
        prop::sample::select(vec!["", "i", "gi", "ms", "u"]),
    )
        .prop_map(|(p, f)| format!("#{p}#{f}"))
}

fn path() -> impl Strategy<Value = ParsedPath> {
    prop_oneof![local_raw(), url_raw(), regex_raw()]
        .prop_map(|raw| parse_path(&raw).expect("generated paths are valid"))
}

fn body_raw() -> impl Strategy<Value = String> {
    let frags = vec![
        "a",
        "b c",
        " ",
        "\n",
        ":",
        "::",
        ":EDIT",
        ":READ",
        ":SEND",
        ":PLAN",
        ":FIND",
        "1",
        "<<",
        "<<EDIT(x):y:EDIT",
        "é",
        ")",
        "#",
        "$",
        "~",
        "@",
        "//",
        "{",
        "}",
        "\"",
        "x#i",
    ];
    prop::collection::vec(prop::sample::select(frags), 0..10).prop_map(|v| v.concat())
}

fn marks() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(
        prop_oneof![
            (-50i32..500).prop_map(f64::from),
            (-99i32..999).prop_map(|k| f64::from(k) / 10.0)
        ],
        1..4,
    )
}

fn statement() -> impl Strategy<Value = Statement> {
    (
        op(),
        prop::sample::select(vec!["", "1", "2", "x_9"]),
        prop::collection::vec("[a-z0-9_.-]{1,8}", 0..4),
        prop::option::of(-999i64..999),
        prop::option::of("[a-z_][a-z0-9_.+-]{0,8}"),
        prop::bool::ANY,
        path(),
        prop::option::of(marks()),
        body_raw(),
        prop_oneof![Just(None), path().prop_map(Some)],
        prop::bool::ANY,
    )
        .prop_map(
            |(
                op,
                suffix,
                tags,
                int,
                name,
                with_signal,
                target,
                marks,
                raw,
                move_dest,
                json_send,
            )| {
                let signal = match op.signal_kind() {
                    SignalKind::Tags => with_signal.then_some(Signal::Tags(tags)),
                    SignalKind::Integer => int.map(Signal::Int),
                    SignalKind::Executor => name.map(Signal::Name),
                    SignalKind::None => None,
                };
                let target = match op.target_rule() {
                    SlotRule::Required => Some(target),
                    SlotRule::Optional => with_signal.then_some(target),
                    SlotRule::Forbidden => None,
                };
                let line_marker = marks
                    .filter(|_| op.accepts_marker())
                    .map(|marks| LineMarker { marks });
                let body = if op.is_matcher() {
                    (!raw.is_empty()).then(|| Body::Matcher(classify(&raw)))
                } else if op == Op::Move {
                    move_dest.map(Body::Path)
                } else if op == Op::Send {
                    if json_send {
                        let raw = format!("{{\"n\": {}}}", raw.len());
                        let json = serde_json::from_str(&raw).ok();
                        Some(Body::Send(SendBody { raw, json }))
                    } else {
                        (!raw.is_empty()).then(|| {
                            Body::Send(SendBody {
                                raw: format!("msg {raw}"),
                                json: None,
                            })
                        })
                    }
                } else {
                    (!raw.is_empty()).then_some(Body::Text(raw))
                };
                Statement {
                    op,
                    suffix: suffix.to_owned(),
                    signal,
                    target,
                    line_marker,
                    body,
                    position: Position::default(),
                }
            },
        )
}

fn reparsed(text: &str) -> Vec<Statement> {
    let r = parse(text);
    assert!(
        !r.has_errors(),
        "rendered text {text:?} has errors: {:#?}",
        r.items
    );
    r.items
        .into_iter()
        .map(|i| match i {
            Item::Statement { mut statement } => {
                statement.position = Position::default();
                statement
            }
            Item::Text { text: t, .. } => panic!("unexpected text {t:?} in {text:?}"),
            Item::Error { error } => panic!("unexpected {error} in {text:?}"),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn render_then_parse_is_identity(s in statement()) {
        let text = render_statement(&s);
        let mut expected = s.clone();
        expected.suffix = safe_suffix(&s);
        let got = reparsed(&text);
        prop_assert_eq!(got, vec![expected], "rendered: {:?}", text);
    }

    #[test]
    fn rendering_is_stable(s in statement()) {
        // Rendering what was parsed from a rendering gives the same text.
        let text = render_statement(&s);
        let again = render_statement(&reparsed(&text)[0]);
        prop_assert_eq!(again, text);
    }

    #[test]
    fn statement_lists_round_trip(list in prop::collection::vec(statement(), 0..6)) {
        let text = render_statements(&list);
        let expected: Vec<Statement> = list
            .iter()
            .map(|s| Statement { suffix: safe_suffix(s), ..s.clone() })
            .collect();
        prop_assert_eq!(reparsed(&text), expected);
    }
}

#[test]
fn renderer_bumps_the_suffix_when_the_body_holds_the_close_literal() {
    let s = Statement {
        op: Op::Edit,
        suffix: String::new(),
        signal: None,
        target: Some(parse_path("a.md").expect("path")),
        line_marker: None,
        body: Some(Body::Text("x :EDIT y :EDIT1\nz".into())),
        position: Position::default(),
    };
    assert_eq!(
        render_statement(&s),
        "<<EDIT2(a.md):x :EDIT y :EDIT1\nz:EDIT2"
    );
    let canonical = "<<READ[a,b](src/x.rs)<1,-1,2.5>:~why:READ";
    let parsed = reparsed(canonical);
    assert_eq!(render_statement(&parsed[0]), canonical);
}
