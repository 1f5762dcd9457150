//! GBNF generation for constrained decoding (PLURNK.md §1.9).
//!
//! `root ::= preplan plan sep batch-step{0,N} send-final tail`: an op-free preamble, a
//! mandatory `<<PLAN`, whitespace-only separators, a bounded batch of ops, exactly one
//! terminal broadcast `SEND[code]` with an allowed code, then end of stream.
//!
//! Bodies are state machines that cannot contain their close literal: a unit is either a
//! non-`:` character or `:` followed by a proper prefix of the tag and then a character
//! that breaks the match. Suffixes are enumerated (`""`, `"1"`, `"2"` by default) because
//! a grammar cannot back-reference the opener. Matcher bodies, MOVE destinations and paths
//! are single-line. Every repetition is bounded with `{m,n}` — unbounded bodies let small
//! models ramble until `max_tokens`, and nested optionals stall llama.cpp's sampler.
//!
//! **Invariant:** the grammar is deliberately stricter than the parser (no regex paths,
//! no `::` inside bodies, no body ending in a prefix of its close tag, local paths without
//! `:`, URL authorities as `host[:port]` only, MOVE destinations that are paths), so what
//! it accepts is a valid turn for [`parse_turn`]. `engine/tests/gbnf.rs` checks this by
//! sampling derivations of the grammar and parsing each.
//!
//! **API boundary:** [`gbnf`] with [`GbnfOptions`]; the output is plain text for a
//! llama.cpp-compatible backend.
//!
//! [`parse_turn`]: super::parse_turn

use std::fmt::Write as _;

use super::ast::Op;

/// Knobs for the generated grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GbnfOptions {
    /// Allowed terminal SEND codes.
    pub terminal_codes: Vec<u16>,
    /// Enumerated suffixes (`""` must usually be among them).
    pub suffixes: Vec<String>,
    /// Ops allowed in the batch (PLAN and the terminal SEND are always present).
    pub ops: Vec<Op>,
    /// Maximum ops between PLAN and the terminal SEND.
    pub max_ops: u32,
    /// Maximum units in a multi-line body.
    pub max_body: u32,
    /// Maximum units in a single-line body or a path.
    pub max_line: u32,
    /// Maximum units in the PLAN body and the terminal SEND's message.
    pub max_note: u32,
    /// Maximum characters of free preamble (0: the turn starts with `<<PLAN`).
    pub max_preamble: u32,
    /// Schemes whose URLs have no authority (`known:///x` and `known://x` alike), so a path
    /// may follow `scheme://` directly. Other schemes need `scheme://host`.
    pub plain_schemes: Vec<String>,
    /// The executors EXEC's signal may name (`[sh]`); empty: any lowercase name.
    pub executors: Vec<String>,
}

impl Default for GbnfOptions {
    fn default() -> Self {
        GbnfOptions {
            terminal_codes: vec![102, 200, 300, 499],
            suffixes: vec![String::new(), "1".into(), "2".into()],
            ops: vec![
                Op::Find,
                Op::Read,
                Op::Edit,
                Op::Copy,
                Op::Move,
                Op::Open,
                Op::Fold,
                Op::Exec,
                Op::Kill,
                Op::Send,
                Op::Work,
                Op::Fork,
            ],
            max_ops: 8,
            max_body: 400,
            max_line: 160,
            max_note: 400,
            max_preamble: 200,
            plain_schemes: ["known", "unknown", "log", "plurnk", "run", "sh"]
                .map(String::from)
                .to_vec(),
            executors: Vec::new(),
        }
    }
}

fn rule_name(op: Op, suffix: &str) -> String {
    let base = op.keyword().to_ascii_lowercase();
    if suffix.is_empty() {
        format!("{base}-s")
    } else {
        format!("{base}-s{}", suffix.to_ascii_lowercase())
    }
}

/// Emits `unit` alternatives for a body that cannot contain `:tag` — in any letter case:
/// the parser closes only on the exact tag, but a small model writes `:edit` for `:EDIT`
/// about as often as not, and a body that may contain `:edit` runs on to the token limit.
fn body_rules(out: &mut String, name: &str, tag: &str, single_line: bool, max: u32) {
    let nl = if single_line { "\\n" } else { "" };
    let chars: Vec<char> = tag.chars().collect();
    let either = |c: char| -> String {
        if c.is_ascii_alphabetic() {
            format!("{}{}", c.to_ascii_uppercase(), c.to_ascii_lowercase())
        } else {
            c.to_string()
        }
    };
    let mut alts = vec![format!("[^:{nl}]")];
    for k in 0..chars.len() {
        let mut alt = String::from("\":\"");
        for &c in &chars[..k] {
            let _ = write!(alt, " [{}]", either(c));
        }
        let _ = write!(alt, " [^:{}{nl}]", either(chars[k]));
        alts.push(alt);
    }
    let _ = writeln!(out, "{name}-unit ::= {}", alts.join(" | "));
    let _ = writeln!(out, "{name} ::= {name}-unit{{0,{max}}}");
}

/// Emits `name`, a path the parser reads without a visitor error (PLURNK.md §2.1, §1.1).
///
/// - a local path: no `:` at all (so never mistaken for a URL), not starting with `#`
///   (a regex path, which this grammar does not generate);
/// - a URL with an authority: `scheme://host[:port]` and then `/`, `?` or `#` and the rest,
///   the host in unreserved characters and the port at most four digits (a `u16`);
/// - a URL without one, for the schemes in `opts.plain_schemes` (`known:///x`,
///   `known://x`), and `file:///…`.
///
/// `rest` is the class of the free characters; MOVE destinations pass one without `:` so
/// the body can never contain its close tag.
fn path_rules(out: &mut String, name: &str, rest: &str, opts: &GbnfOptions) {
    let n = opts.max_line;
    let _ = writeln!(out, "{name} ::= {name}-local | {name}-auth | {name}-plain");
    let first = rest.replacen(']', "#:]", 1);
    let no_colon = if rest.contains(':') {
        rest.to_owned()
    } else {
        rest.replacen(']', ":]", 1)
    };
    let _ = writeln!(out, "{name}-local ::= {first} {no_colon}{{0,{n}}}");
    let _ = writeln!(
        out,
        "{name}-auth ::= [a-z] [a-z0-9+.-]{{0,15}} \"://\" [a-zA-Z0-9._~-]{{1,63}} (\":\" [0-9]{{1,4}}){{0,1}} ([/?#] {rest}{{0,{n}}}){{0,1}}"
    );
    let plain: Vec<String> = opts
        .plain_schemes
        .iter()
        .map(|s| format!("\"{s}://\""))
        .chain(std::iter::once("\"file://\" [/?#]".to_owned()))
        .collect();
    let _ = writeln!(
        out,
        "{name}-plain ::= ({}) {rest}{{0,{n}}}",
        plain.join(" | ")
    );
}

/// Generates the turn grammar.
pub fn gbnf(opts: &GbnfOptions) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# plurnk turn grammar (E2 heredoc form), generated by agentos-engine"
    );
    let _ = writeln!(
        out,
        "root ::= preplan plan sep batch-step{{0,{}}} send-final tail",
        opts.max_ops
    );
    if opts.max_preamble == 0 {
        let _ = writeln!(out, "preplan ::= \"\"");
    } else {
        let _ = writeln!(out, "preplan ::= [^<]{{0,{}}}", opts.max_preamble);
    }
    let _ = writeln!(out, "sep ::= [ \\t\\n]{{1,3}}");
    let _ = writeln!(out, "tail ::= [\\n]{{0,1}}");
    let _ = writeln!(out, "tag ::= [a-zA-Z0-9_./-]{{1,32}}");
    let _ = writeln!(out, "tag-signal ::= \"[\" tag (\",\" tag){{0,5}} \"]\"");
    let _ = writeln!(out, "int-signal ::= \"[\" \"-\"{{0,1}} [0-9]{{1,3}} \"]\"");
    if !opts.ops.contains(&Op::Exec) {
        // No EXEC, no executor signal (every rule stays reachable).
    } else if opts.executors.is_empty() {
        let _ = writeln!(out, "exec-signal ::= \"[\" [a-z] [a-z0-9_]{{0,15}} \"]\"");
    } else {
        let names: Vec<String> = opts.executors.iter().map(|e| format!("\"{e}\"")).collect();
        let _ = writeln!(out, "exec-signal ::= \"[\" ({}) \"]\"", names.join(" | "));
    }
    let _ = writeln!(out, "path ::= \"(\" path-text \")\"");
    path_rules(&mut out, "path-text", "[^)<\\n]", opts);
    path_rules(&mut out, "dest", "[^)<\\n:]", opts);
    let _ = writeln!(
        out,
        "num ::= \"-\"{{0,1}} [0-9]{{1,6}} (\".\" [0-9]{{1,3}}){{0,1}}"
    );
    let _ = writeln!(out, "marker ::= \"<\" num (\",\" num){{0,2}} \">\"");
    let codes: Vec<String> = opts
        .terminal_codes
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect();
    let _ = writeln!(out, "code ::= {}", codes.join(" | "));

    // PLAN and the terminal SEND.
    let mut plan_alts = Vec::new();
    let mut send_alts = Vec::new();
    for sfx in &opts.suffixes {
        let plan = rule_name(Op::Plan, sfx);
        plan_alts.push(plan.clone());
        let _ = writeln!(
            out,
            "{plan} ::= \"<<PLAN{sfx}\" tag-signal{{0,1}} \":\" {plan}-body \":PLAN{sfx}\""
        );
        body_rules(
            &mut out,
            &format!("{plan}-body"),
            &format!("PLAN{sfx}"),
            false,
            opts.max_note,
        );
        let send = format!("final-{}", rule_name(Op::Send, sfx));
        send_alts.push(send.clone());
        let _ = writeln!(
            out,
            "{send} ::= \"<<SEND{sfx}[\" code \"]\" marker{{0,1}} \":\" {send}-body \":SEND{sfx}\""
        );
        body_rules(
            &mut out,
            &format!("{send}-body"),
            &format!("SEND{sfx}"),
            false,
            opts.max_note,
        );
    }
    let _ = writeln!(out, "plan ::= {}", plan_alts.join(" | "));
    let _ = writeln!(out, "send-final ::= {}", send_alts.join(" | "));

    // Batch ops.
    let mut op_alts = Vec::new();
    for &op in &opts.ops {
        if op == Op::Plan {
            continue;
        }
        for sfx in &opts.suffixes {
            let name = rule_name(op, sfx);
            op_alts.push(name.clone());
            let kw = op.keyword();
            let header = match op {
                Op::Find | Op::Read | Op::Open | Op::Fold | Op::Edit | Op::Copy | Op::Move => {
                    "tag-signal{0,1} path marker{0,1}"
                }
                Op::Exec => "exec-signal{0,1} path{0,1} marker{0,1}",
                Op::Kill => "int-signal{0,1} path",
                // A batch SEND is directed (has a path); the broadcast one is send-final.
                Op::Send => "int-signal{0,1} path",
                Op::Work | Op::Fork | Op::Plan => "path",
            };
            let single = op.is_matcher();
            let max = if single { opts.max_line } else { opts.max_body };
            let _ = writeln!(
                out,
                "{name} ::= \"<<{kw}{sfx}\" {header} \":\" {name}-body \":{kw}{sfx}\""
            );
            if op == Op::Move {
                // The parser reads MOVE's body as a path: a destination, or nothing.
                let _ = writeln!(out, "{name}-body ::= dest{{0,1}}");
                continue;
            }
            body_rules(
                &mut out,
                &format!("{name}-body"),
                &format!("{kw}{sfx}"),
                single,
                max,
            );
        }
    }
    if op_alts.is_empty() {
        let _ = writeln!(out, "batch-step ::= \"\"");
    } else {
        let _ = writeln!(out, "op ::= {}", op_alts.join(" | "));
        let _ = writeln!(out, "batch-step ::= op sep");
    }
    out
}
