//! A deterministic synthetic model turn for the `parse` benchmark and the linearity tests.
//!
//! [`synthetic_turn`] writes a preamble, a PLAN, a mix of every op (signals, paths of all
//! three kinds, markers with commas, negatives and decimals, nested suffixes, multi-line
//! bodies containing colons and `<<`) and a terminal SEND, padded to a byte target.
//!
//! **Invariant:** the same arguments always give the same text, and the text is a valid
//! turn with exactly `statements` statements (a test checks both).
//!
//! **API boundary:** used by `xtask`'s bench and by tests; not part of the language.

use std::fmt::Write as _;

/// xorshift64*: tiny, deterministic, good enough for picking filler.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

const WORDS: [&str; 24] = [
    "retry", "backoff", "timeout", "client", "server", "config", "parse", "token", "budget",
    "stream", "channel", "entry", "scheme", "render", "packet", "fold", "cursor", "window",
    "session", "loop", "grinder", "strike", "cycle", "marker",
];

fn filler(rng: &mut Rng, bytes: usize, multiline: bool) -> String {
    let mut s = String::with_capacity(bytes + 16);
    let mut line = 0usize;
    while s.len() < bytes {
        let w = WORDS[rng.below(WORDS.len() as u64) as usize];
        s.push_str(w);
        line += w.len() + 1;
        match rng.below(16) {
            0 => s.push_str(": "),
            1 => s.push_str(" <<not an op "),
            _ => s.push(' '),
        }
        if multiline && line > 70 {
            s.push('\n');
            line = 0;
        }
    }
    s
}

/// Builds a valid turn of exactly `statements` statements (at least 2: PLAN and SEND)
/// of roughly `target_bytes` bytes, deterministically from `seed`.
pub fn synthetic_turn(statements: usize, target_bytes: usize, seed: u64) -> String {
    let statements = statements.max(2);
    let mut rng = Rng((seed ^ 0x9E37_79B9_7F4A_7C15).wrapping_mul(0xBF58_476D_1CE4_E5B9) | 1);
    let per = (target_bytes / statements).max(8);
    // Four kinds in fourteen carry multi-line bodies; the rest are ~60–200 bytes. Size
    // the heavy bodies so the whole turn lands near the byte target.
    let heavy = (per * 14).saturating_sub(1160) / 4;
    let mut out = String::with_capacity(target_bytes + statements * 64);
    out.push_str("Looking at the repository layout first.\n");
    let _ = writeln!(out, "<<PLAN:{}:PLAN", filler(&mut rng, per, true));
    for i in 0..statements - 2 {
        let body_multi = filler(&mut rng, heavy.max(8), true);
        let body_line = filler(&mut rng, per.min(120), false);
        let n = rng.below(400) + 1;
        let m = n + rng.below(50);
        let path = format!("src/mod{}/file{}.rs", i % 17, i);
        let stmt = match i % 14 {
            0 => format!("<<FIND[code,rust](src/**)<1,{m}>:#retry|backoff#i:FIND"),
            1 => format!("<<READ({path})<{n},{m}>::READ"),
            2 => format!("<<READ[net](known:///net/{i}.md):$.network.timeout:READ"),
            3 => format!("<<EDIT[net,timeouts](known:///notes/{i}.md)<{n}>:{body_multi}:EDIT"),
            4 => format!("<<EDIT1({path})<{n}.5>:\nExample: <<EDIT(known:///x):hello:EDIT\n{body_multi}\n:EDIT1"),
            5 => format!("<<COPY({path})<{n},{m}>:known:///copies/{i}.rs:COPY"),
            6 => format!("<<MOVE(known:///tmp/{i}.md):known:///archive/{i}.md:MOVE"),
            7 => format!("<<OPEN(log:///1/{i}/**)<0.7,1,{m}>:~{body_line}:OPEN"),
            8 => "<<FOLD(log:///1/**/READ)<1,-1>::FOLD".to_owned(),
            9 => format!("<<EXEC[sh](src)<120,5>:cargo test -q -- {body_line}:EXEC"),
            10 => format!("<<KILL[9](sh:///3/1/{i}#stderr):{body_line}:KILL"),
            11 => format!("<<SEND[200](run://checker):{{\"note\": \"{body_line}\"}}:SEND"),
            12 => format!("<<WORK(run://worker{i}):{body_multi}:WORK"),
            _ => format!("<<FORK2(run://alt{i}):{body_multi}\n:FORK is mentioned here:FORK2"),
        };
        out.push_str(&stmt);
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "<<SEND[102]:{}:SEND",
        filler(&mut rng, per.min(200), false)
    );
    out
}
