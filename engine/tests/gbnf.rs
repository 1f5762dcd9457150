//! The generated GBNF: well-formed (every referenced rule defined, every rule reachable),
//! mandatory PLAN, terminal SEND codes, enumerated suffixes, bounded repetition; the
//! engine's grammar offers exactly the ops its schemes serve (EXEC with its executors when
//! the loop holds the exec scheme, not otherwise); and the grammar and the parser agree.

use std::collections::{BTreeMap, BTreeSet};

use agentos_engine::grammar::{gbnf, parse_turn, GbnfOptions, Op};

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
    assert!(rules(&g)["root"].starts_with("preplan plan sep batch-step{0,8} send-final"));
    check_closed(&g);
    check_closed(&agentos_engine::turn::engine_gbnf());
    let ask = agentos_engine::turn::LoopFlags {
        mode: "ask".into(),
        ..Default::default()
    };
    check_closed(&agentos_engine::turn::loop_gbnf(
        &agentos_engine::schemes::SchemeRegistry::builtin().resolve_for_loop(&ask),
    ));
}

/// Every referenced rule is defined and every rule is reachable from `root`.
fn check_closed(g: &str) {
    let rules = rules(g);
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
    // Bodies forbid their own close literal, in any letter case: no unit can complete
    // ':EDIT1' (nor ':edit1').
    assert_eq!(
        rules["edit-s1-body-unit"],
        "[^:] | \":\" [^:Ee] | \":\" [Ee] [^:Dd] | \":\" [Ee] [Dd] [^:Ii] | \":\" [Ee] [Dd] [Ii] [^:Tt] | \":\" [Ee] [Dd] [Ii] [Tt] [^:1]"
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

// ---------------------------------------------------------------------------------------
// The grammar and the parser agree: every string the GBNF derives is a valid turn.
//
// A small interpreter for the GBNF subset `gbnf` emits (literals, character classes with
// negation and escapes, rule references, groups, alternation, `{m,n}`) samples random
// derivations. Character classes draw from a palette of the characters that matter to the
// parser (delimiters, close-tag letters, URL punctuation), so the corners get hit.

#[derive(Debug, Clone)]
enum Atom {
    Lit(String),
    Class { neg: bool, items: Vec<(char, char)> },
    Rule(String),
    Group(Vec<Vec<Item>>),
}

#[derive(Debug, Clone)]
struct Item {
    atom: Atom,
    min: u32,
    max: u32,
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl Lexer<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i] == b' ' {
            self.i += 1;
        }
    }
    fn esc(&mut self) -> char {
        let c = self.s[self.i] as char;
        self.i += 1;
        if c != '\\' {
            return c;
        }
        let e = self.s[self.i] as char;
        self.i += 1;
        match e {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            other => other,
        }
    }
    fn alts(&mut self) -> Vec<Vec<Item>> {
        let mut alts = vec![self.seq()];
        loop {
            self.ws();
            if self.s.get(self.i) == Some(&b'|') {
                self.i += 1;
                alts.push(self.seq());
            } else {
                return alts;
            }
        }
    }
    fn seq(&mut self) -> Vec<Item> {
        let mut items = Vec::new();
        loop {
            self.ws();
            let Some(&c) = self.s.get(self.i) else {
                return items;
            };
            let atom = match c {
                b'|' | b')' => return items,
                b'"' => {
                    self.i += 1;
                    let mut lit = String::new();
                    while self.s[self.i] != b'"' {
                        lit.push(self.esc());
                    }
                    self.i += 1;
                    Atom::Lit(lit)
                }
                b'[' => {
                    self.i += 1;
                    let neg = self.s[self.i] == b'^';
                    if neg {
                        self.i += 1;
                    }
                    let mut items = Vec::new();
                    while self.s[self.i] != b']' {
                        let a = self.esc();
                        if self.s[self.i] == b'-' && self.s[self.i + 1] != b']' {
                            self.i += 1;
                            let b = self.esc();
                            items.push((a, b));
                        } else {
                            items.push((a, a));
                        }
                    }
                    self.i += 1;
                    Atom::Class { neg, items }
                }
                b'(' => {
                    self.i += 1;
                    let g = self.alts();
                    assert_eq!(self.s[self.i], b')');
                    self.i += 1;
                    Atom::Group(g)
                }
                _ => {
                    let st = self.i;
                    while self.i < self.s.len()
                        && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'-')
                    {
                        self.i += 1;
                    }
                    assert!(self.i > st, "unexpected {:?}", c as char);
                    Atom::Rule(String::from_utf8(self.s[st..self.i].to_vec()).unwrap())
                }
            };
            let (mut min, mut max) = (1, 1);
            if self.s.get(self.i) == Some(&b'{') {
                let end = self.i + self.s[self.i..].iter().position(|&c| c == b'}').unwrap();
                let inner = std::str::from_utf8(&self.s[self.i + 1..end]).unwrap();
                let (a, b) = inner.split_once(',').unwrap_or((inner, inner));
                min = a.parse().unwrap();
                max = b.parse().unwrap();
                self.i = end + 1;
            } else if self.s.get(self.i) == Some(&b'?') {
                self.i += 1;
                (min, max) = (0, 1);
            }
            items.push(Item { atom, min, max });
        }
    }
}

fn compile(g: &str) -> BTreeMap<String, Vec<Vec<Item>>> {
    rules(g)
        .into_iter()
        .map(|(name, rhs)| {
            let mut lx = Lexer {
                s: rhs.as_bytes(),
                i: 0,
            };
            let alts = lx.alts();
            assert_eq!(lx.i, rhs.len(), "rule {name} not fully read");
            (name, alts)
        })
        .collect()
}

struct Sampler<'g> {
    rules: &'g BTreeMap<String, Vec<Vec<Item>>>,
    state: u64,
}

/// Characters worth trying wherever a class admits them.
const PALETTE: &str =
    "::::##(()<<>>[]//..,,--__ \n\t%@?=&*~$!'\"\\|{}^;0123456789aAbxyzPLANSENDEITRCOPYMVFKWXG1éλ😀";

impl Sampler<'_> {
    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn count(&mut self, min: u32, max: u32) -> u32 {
        if min == max {
            return min;
        }
        match self.below(8) {
            0 => min,
            1 => max.min(min + 40),
            _ => min + self.below(u64::from((max - min).min(6)) + 1) as u32,
        }
    }
    fn class(&mut self, neg: bool, items: &[(char, char)]) -> char {
        let admits = |c: char| items.iter().any(|&(a, b)| a <= c && c <= b) != neg;
        let palette: Vec<char> = PALETTE.chars().filter(|&c| admits(c)).collect();
        if !palette.is_empty() && self.below(4) != 0 {
            return palette[self.below(palette.len() as u64) as usize];
        }
        loop {
            let c = char::from_u32(self.below(0x80) as u32).unwrap();
            if admits(c) {
                return c;
            }
        }
    }
    fn alts(&mut self, alts: &[Vec<Item>], out: &mut String) {
        let k = self.below(alts.len() as u64) as usize;
        for it in &alts[k] {
            for _ in 0..self.count(it.min, it.max) {
                match &it.atom {
                    Atom::Lit(l) => out.push_str(l),
                    Atom::Class { neg, items } => {
                        let c = self.class(*neg, items);
                        out.push(c);
                    }
                    Atom::Rule(r) => {
                        let rules = self.rules;
                        self.alts(&rules[r], out);
                    }
                    Atom::Group(g) => self.alts(g, out),
                }
            }
        }
    }
}

fn check_agreement(g: &str, n: u64) {
    let rules = compile(g);
    let mut bad = Vec::new();
    for seed in 1..=n {
        let mut s = Sampler {
            rules: &rules,
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        };
        let mut text = String::new();
        s.alts(&rules["root"], &mut text);
        let t = parse_turn(&text);
        if !t.valid {
            let errs: Vec<String> = t
                .result
                .items
                .iter()
                .filter_map(|i| match i {
                    agentos_engine::grammar::Item::Error { error } => Some(error.message.clone()),
                    _ => None,
                })
                .chain(t.violations.iter().map(|v| v.message.clone()))
                .collect();
            bad.push(format!("seed {seed}: {errs:?}\n{text:?}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {n} grammar derivations are not valid turns; first ones:\n{}",
        bad.len(),
        bad.iter().take(6).cloned().collect::<Vec<_>>().join("\n\n")
    );
}

#[test]
fn every_derivation_of_the_engine_grammar_is_a_valid_turn() {
    check_agreement(&agentos_engine::turn::engine_gbnf(), 4000);
}

#[test]
fn every_derivation_of_the_default_grammar_is_a_valid_turn() {
    check_agreement(&gbnf(&GbnfOptions::default()), 4000);
}

/// End offsets reachable by matching `alts` against `s` from each offset in `from`.
fn match_alts(
    rules: &BTreeMap<String, Vec<Vec<Item>>>,
    alts: &[Vec<Item>],
    s: &[char],
    from: &BTreeSet<usize>,
) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    for seq in alts {
        let mut cur = from.clone();
        for it in seq {
            let mut reach = if it.min == 0 {
                cur.clone()
            } else {
                BTreeSet::new()
            };
            let mut frontier = cur;
            for k in 1..=it.max {
                frontier = match &it.atom {
                    Atom::Lit(l) => {
                        let l: Vec<char> = l.chars().collect();
                        frontier
                            .iter()
                            .filter(|&&p| s.get(p..p + l.len()) == Some(&l[..]))
                            .map(|&p| p + l.len())
                            .collect()
                    }
                    Atom::Class { neg, items } => frontier
                        .iter()
                        .filter(|&&p| {
                            s.get(p).is_some_and(|&c| {
                                items.iter().any(|&(a, b)| a <= c && c <= b) != *neg
                            })
                        })
                        .map(|&p| p + 1)
                        .collect(),
                    Atom::Rule(r) => match_alts(rules, &rules[r], s, &frontier),
                    Atom::Group(g) => match_alts(rules, g, s, &frontier),
                };
                if frontier.is_empty() {
                    break;
                }
                if k >= it.min {
                    reach.extend(frontier.iter().copied());
                }
            }
            cur = reach;
            if cur.is_empty() {
                break;
            }
        }
        out.extend(cur);
    }
    out
}

/// Whether the grammar derives exactly `text`.
fn accepts(g: &str, text: &str) -> bool {
    let rules = compile(g);
    let s: Vec<char> = text.chars().collect();
    match_alts(&rules, &rules["root"], &s, &BTreeSet::from([0])).contains(&s.len())
}

/// Turns the parser rejects that an earlier grammar derived (found by the sampler above
/// and by real-model runs). Each is checked against both sides: the parser rejects it and
/// the grammar no longer derives it; the valid neighbour next to it is accepted by both.
#[test]
fn known_disagreements_are_closed() {
    let g = agentos_engine::turn::engine_gbnf();
    let cases = [
        // MOVE's body is read as a path: a leading `#` makes an (unterminated) regex path.
        (
            "<<PLAN:p:PLAN\n<<MOVE(a.md):#b:MOVE\n<<SEND[102]:x:SEND",
            "<<PLAN:p:PLAN\n<<MOVE(a.md):b.md:MOVE\n<<SEND[102]:x:SEND",
        ),
        // An authority URL with a non-numeric port.
        (
            "<<PLAN:p:PLAN\n<<READ(http://x:abc/y)::READ\n<<SEND[102]:x:SEND",
            "<<PLAN:p:PLAN\n<<READ(http://x:80/y)::READ\n<<SEND[102]:x:SEND",
        ),
        // An authority URL with no host.
        (
            "<<PLAN:p:PLAN\n<<READ(https:///y)::READ\n<<SEND[102]:x:SEND",
            "<<PLAN:p:PLAN\n<<READ(known:///y)::READ\n<<SEND[102]:x:SEND",
        ),
        // A host with a space in it.
        (
            "<<PLAN:p:PLAN\n<<FIND(http://a b/)::FIND\n<<SEND[102]:x:SEND",
            "<<PLAN:p:PLAN\n<<FIND(a b/)::FIND\n<<SEND[102]:x:SEND",
        ),
        // A MOVE destination with a bad port.
        (
            "<<PLAN:p:PLAN\n<<MOVE(a.md):file://h:x/b:MOVE\n<<SEND[102]:x:SEND",
            "<<PLAN:p:PLAN\n<<MOVE(a.md):file:///b:MOVE\n<<SEND[102]:x:SEND",
        ),
    ];
    for (bad, good) in cases {
        assert!(!parse_turn(bad).valid, "parser accepts {bad:?}");
        assert!(!accepts(&g, bad), "grammar derives {bad:?}");
        assert!(parse_turn(good).valid, "parser rejects {good:?}");
        assert!(accepts(&g, good), "grammar does not derive {good:?}");
    }
}

// ---------------------------------------------------------------------------------------
// The engine's grammar is built from its schemes: EXEC is there exactly when the loop holds
// the exec scheme, and every op offered is one some scheme serves.

fn turn(ops: &str) -> String {
    format!("<<PLAN:p:PLAN\n{ops}\n<<SEND[102]:x:SEND")
}

#[test]
fn the_engine_grammar_offers_exec_with_the_exec_schemes_executors() {
    let g = agentos_engine::turn::engine_gbnf();
    let r = rules(&g);
    assert!(r["op"].split(" | ").any(|a| a == "exec-s"), "{}", r["op"]);
    assert_eq!(
        r["exec-signal"],
        "\"[\" (\"sh\" | \"python\" | \"node\") \"]\""
    );
    for ok in [
        "<<EXEC[sh]<60>:cargo test -q:EXEC",
        "<<EXEC[python](src):print(1)\nprint(2):EXEC",
        "<<EXEC:ls -la:EXEC",
        "<<EXEC1[node]<10,2>:console.log(':EXEC'):EXEC1",
    ] {
        let t = turn(ok);
        assert!(parse_turn(&t).valid, "parser rejects {t:?}");
        assert!(accepts(&g, &t), "grammar does not derive {t:?}");
    }
    // An executor the engine has no runtime for is not offered.
    let ruby = turn("<<EXEC[ruby]:puts 1:EXEC");
    assert!(parse_turn(&ruby).valid);
    assert!(!accepts(&g, &ruby), "grammar derives {ruby:?}");
}

#[test]
fn a_loop_without_the_exec_scheme_is_not_offered_exec() {
    use agentos_engine::schemes::SchemeRegistry;
    use agentos_engine::turn::{loop_gbnf, LoopFlags};
    let ask = LoopFlags {
        mode: "ask".into(),
        ..LoopFlags::default()
    };
    let g = loop_gbnf(&SchemeRegistry::builtin().resolve_for_loop(&ask));
    let r = rules(&g);
    assert!(!r.contains_key("exec-s") && !r.contains_key("exec-signal"));
    assert!(!accepts(&g, &turn("<<EXEC[sh]:ls:EXEC")));
    assert!(accepts(&g, &turn("<<READ(src/main.rs)<1,40>::READ")));
    check_agreement(&g, 1000);
}

#[test]
fn the_engine_grammar_offers_exactly_the_ops_its_schemes_serve() {
    let r = rules(&agentos_engine::turn::engine_gbnf());
    let offered: BTreeSet<&str> = r["op"].split(" | ").collect();
    for op in Op::ALL.iter().filter(|o| **o != Op::Plan) {
        let served = agentos_engine::schemes::BUILTIN
            .iter()
            .any(|m| m.model_visible && m.ops.contains(op));
        let name = format!("{}-s", op.keyword().to_ascii_lowercase());
        assert_eq!(
            offered.contains(name.as_str()),
            served,
            "{op:?}: offered by the grammar vs served by a scheme"
        );
    }
    // Nothing serves WORK or FORK in this build, so the grammar cannot emit them.
    assert!(!offered.contains("work-s") && !offered.contains("fork-s"));
}

/// No body can hold its own closer in another letter case (`:edit` in an EDIT body): the
/// parser would take it as text, but a small model that writes `:edit` for `:EDIT` then
/// runs to the token limit.
#[test]
fn no_body_holds_its_closer_in_another_case() {
    let g = agentos_engine::turn::engine_gbnf();
    assert!(!accepts(&g, &turn("<<EDIT(known:///a.md):tea:edit\n:EDIT")));
    assert!(!accepts(&g, &turn("<<READ(known:///a.md):x:Read:READ")));
    assert!(accepts(&g, &turn("<<EDIT(known:///a.md):tea: editor:EDIT")));
}
