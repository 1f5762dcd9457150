//! The generated GBNF: well-formed (every referenced rule defined, every rule reachable),
//! mandatory PLAN, terminal SEND codes, enumerated suffixes, bounded repetition.

use std::collections::{BTreeMap, BTreeSet};

use agentos_engine::grammar::{gbnf, GbnfOptions, Op};

/// rule name → right-hand side.
fn rules(g: &str) -> BTreeMap<String, String> {
    g.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, rhs) = l.split_once(" ::= ").expect("rule line");
            (name.to_owned(), rhs.to_owned())
        })
        .collect()
}

/// Identifiers referenced outside string literals and character classes.
fn references(rhs: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut chars = rhs.chars().peekable();
    let mut word = String::new();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == '"' {
                        break;
                    }
                }
            }
            '[' => {
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == ']' {
                        break;
                    }
                }
            }
            '{' => {
                for d in chars.by_ref() {
                    if d == '}' {
                        break;
                    }
                }
            }
            c if c.is_ascii_alphanumeric() || c == '-' => {
                word.push(c);
                continue;
            }
            _ => {}
        }
        if !word.is_empty() {
            out.insert(std::mem::take(&mut word));
        }
    }
    if !word.is_empty() {
        out.insert(word);
    }
    out
}

#[test]
fn grammar_is_closed_and_reachable() {
    let g = gbnf(&GbnfOptions::default());
    let rules = rules(&g);
    assert!(rules["root"].starts_with("preplan plan sep batch-step{0,8} send-final"));
    for (name, rhs) in &rules {
        for r in references(rhs) {
            assert!(
                rules.contains_key(&r),
                "rule {name} references undefined {r}"
            );
        }
    }
    let mut seen = BTreeSet::from(["root".to_owned()]);
    let mut todo = vec!["root".to_owned()];
    while let Some(n) = todo.pop() {
        for r in references(&rules[&n]) {
            if seen.insert(r.clone()) {
                todo.push(r);
            }
        }
    }
    let unreachable: Vec<_> = rules.keys().filter(|k| !seen.contains(*k)).collect();
    assert!(unreachable.is_empty(), "unreachable rules {unreachable:?}");
}

#[test]
fn plan_send_codes_and_suffixes() {
    let g = gbnf(&GbnfOptions::default());
    let rules = rules(&g);
    assert_eq!(rules["code"], "\"102\" | \"200\" | \"300\" | \"499\"");
    assert_eq!(rules["plan"], "plan-s | plan-s1 | plan-s2");
    assert_eq!(
        rules["plan-s1"],
        "\"<<PLAN1\" tag-signal{0,1} \":\" plan-s1-body \":PLAN1\""
    );
    assert_eq!(
        rules["send-final"],
        "final-send-s | final-send-s1 | final-send-s2"
    );
    for op in Op::ALL.iter().filter(|o| **o != Op::Plan) {
        for sfx in ["", "1", "2"] {
            let name = format!("{}-s{sfx}", op.keyword().to_ascii_lowercase());
            assert!(rules.contains_key(&name), "missing {name}");
            assert!(
                rules["op"].split(" | ").any(|a| a == name),
                "{name} not in op"
            );
        }
    }
    // Bodies forbid their own close literal: no unit can complete ':EDIT1'.
    assert_eq!(
        rules["edit-s1-body-unit"],
        "[^:] | \":\" [^:E] | \":E\" [^:D] | \":ED\" [^:I] | \":EDI\" [^:T] | \":EDIT\" [^:1]"
    );
    // Matcher bodies are single-line and every repetition is bounded.
    assert!(rules["read-s-body-unit"].starts_with("[^:\\n]"));
    assert!(
        !g.contains('*') || g.lines().all(|l| !l.contains("}*") && !l.ends_with(")*")),
        "unbounded star"
    );
    assert!(!g.contains("+ ") && !g.contains(")+"), "unbounded plus");
}

#[test]
fn options_change_the_grammar() {
    let opts = GbnfOptions {
        terminal_codes: vec![102, 200],
        suffixes: vec![String::new()],
        ops: vec![Op::Read],
        ..GbnfOptions::default()
    };
    let rules = rules(&gbnf(&opts));
    assert_eq!(rules["code"], "\"102\" | \"200\"");
    assert_eq!(rules["op"], "read-s");
    assert!(!rules.contains_key("edit-s"));
}
