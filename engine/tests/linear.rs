//! Parsing is linear on adversarial input. Work is counted by the parser itself
//! ([`ParseStats::work`]: every byte any scan examined) — nothing here measures time.

use agentos_engine::grammar::corpus::synthetic_turn;
use agentos_engine::grammar::{parse_turn, parse_with_stats, ParseStats};

const MB: usize = 1 << 20;

/// Builds an adversarial input of about `bytes` bytes by repeating `unit` after `head`.
fn repeat(head: &str, unit: &str, bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + unit.len());
    s.push_str(head);
    while s.len() < bytes {
        s.push_str(unit);
    }
    s
}

fn check(name: &str, make: impl Fn(usize) -> String) {
    let small = make(MB);
    let big = make(10 * MB);
    let (r_small, s_small): (_, ParseStats) = parse_with_stats(&small);
    let (r_big, s_big) = parse_with_stats(&big);
    // Linear with a small constant: no byte is examined more than a few times.
    for (len, s) in [(small.len(), s_small), (big.len(), s_big)] {
        assert!(
            s.work <= 8 * len as u64 + 4096,
            "{name}: work {} for {len} bytes",
            s.work
        );
    }
    // 10x the input is ~10x the work, not ~100x.
    let ratio = s_big.work as f64 / s_small.work.max(1) as f64;
    assert!(ratio < 11.5, "{name}: work ratio {ratio}");
    // Results scale the same way (sanity: the parse really ran to the end).
    assert!(r_big.items.len() >= r_small.items.len(), "{name}");
}

#[test]
fn a_sea_of_openers() {
    check("<<", |n| repeat("", "<<", n));
    check("<<<", |n| repeat("", "<<<", n));
}

#[test]
fn a_sea_of_colons_in_an_unclosed_body() {
    check("colons", |n| repeat("<<EDIT(a):", ":", n));
    check("near closes", |n| {
        repeat("<<EDIT(a):", ":EDI:EDITx:EDIT1", n)
    });
}

#[test]
fn many_unclosed_bodies() {
    check("unclosed", |n| {
        repeat("", "<<EDIT(a):body without close ", n)
    });
}

#[test]
fn broken_headers_everywhere() {
    check("open paths", |n| repeat("", "<<EDIT(", n));
    check("open markers", |n| repeat("", "<<READ(a)<1,", n));
    check("open signals", |n| repeat("", "<<FIND[a,", n));
    check("bad header chars", |n| repeat("", "<<SEND[102] x ", n));
    check("regex paths", |n| repeat("", "<<FIND(#a\\#", n));
    check("unterminated marker", |n| repeat("<<READ(a)<", "1,", n));
}

#[test]
fn near_miss_floods() {
    check("near misses", |n| repeat("", "<<CLOSE <<FOOBAR ", n));
}

#[test]
fn long_suffix_with_near_close_literals() {
    // Close tag ':EDIT' + 4096 'a's; the body repeats it with the last byte wrong.
    let k = 4096;
    check("long suffix", |n| {
        let sfx = "a".repeat(k);
        let mut near = format!(":EDIT{}", "a".repeat(k - 1));
        near.push('b');
        repeat(&format!("<<EDIT{sfx}(x):"), &near, n)
    });
}

#[test]
fn valid_statements_scale_linearly() {
    check("synthetic", |n| synthetic_turn(n / 1000, n, 7));
}

#[test]
fn synthetic_turn_is_deterministic_and_valid() {
    let a = synthetic_turn(1000, MB, 42);
    assert!(a == synthetic_turn(1000, MB, 42), "same seed, same text");
    assert!(
        a != synthetic_turn(1000, MB, 43),
        "another seed, another text"
    );
    assert!(
        a.len() > MB * 9 / 10 && a.len() < MB * 3 / 2,
        "len {}",
        a.len()
    );
    let t = parse_turn(&a);
    assert!(t.valid, "{:?} {:?}", t.violations, t.result.errors().next());
    assert_eq!(t.result.statements().count(), 1000);
    let ops: std::collections::BTreeSet<_> = t.result.statements().map(|s| s.op).collect();
    assert_eq!(ops.len(), 13, "every op appears");
}
