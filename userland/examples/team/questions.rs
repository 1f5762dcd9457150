//! The team's tools and the four questions it answers, with what a right answer says.
//!
//! Shared by the demo (`team.rs`) and by the real-model test
//! (`tests/tests/agents/real_model.rs` includes this file), so both measure the same thing:
//! how many of the four answers are right and how many tool calls the agents made.

use agentos_abi::Value;
use agentos_drivers::tools::{ToolError, ToolRegistry, ToolRegistryError};
use agentos_kernel::Sys;
use agentos_userland::agents::TurnSpec;
use std::fmt;

/// One of the team's questions: who answers it, the task, the tool that answers it and the
/// words a right answer contains (any one of them, as a whole word).
#[derive(Clone, Copy, Debug)]
pub struct Question {
    /// The agent that answers it (`researcher`, `analyst` or `concierge`).
    pub agent: &'static str,
    /// The task.
    pub task: &'static str,
    /// The tool that answers it.
    pub tool: &'static str,
    /// A right answer contains one of these words.
    pub expect: &'static [&'static str],
}

/// The four questions: one for each ReAct agent, two for the concierge (in this order).
pub const QUESTIONS: [Question; 4] = [
    Question {
        agent: "researcher",
        task: "What is the capital of France?",
        tool: "lookup",
        expect: &["Paris"],
    },
    Question {
        agent: "analyst",
        task: "Compute (17 + 25) * 3.",
        tool: "calc",
        expect: &["126"],
    },
    Question {
        agent: "concierge",
        task: "How many words are in the sentence 'agents deserve operating systems too'?",
        tool: "word_count",
        expect: &["5", "five"],
    },
    Question {
        agent: "concierge",
        task: "What is the capital of Japan?",
        tool: "lookup",
        expect: &["Tokyo"],
    },
];

/// The concierge's system prompt.
pub const CONCIERGE_PROMPT: &str =
    "You are the team's concierge. Answer briefly; use the tools when they help.";

/// Whether `answer` is right for `q`: it contains one of the expected words as a whole word
/// (case aside; a number as a whole number), so "18 words" is not 5, "1.5" is not 5 and
/// "Parisian" is not Paris.
pub fn is_right(q: &Question, answer: &str) -> bool {
    let words: Vec<String> = answer
        .split(|c: char| !(c.is_alphanumeric() || c == '.' || c == ','))
        .map(|w| w.trim_matches(['.', ',']))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    q.expect
        .iter()
        .any(|e| words.iter().any(|w| *w == e.to_lowercase()))
}

/// The figures of a run: answers right of those asked, and tool calls made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Right answers.
    pub right: u32,
    /// Questions asked.
    pub asked: u32,
    /// Tool calls the agents made.
    pub tool_calls: u64,
}

impl Tally {
    /// Count one answer to `q` that made `tool_calls` calls.
    pub fn add(&mut self, q: &Question, answer: &str, tool_calls: u64) {
        self.asked += 1;
        self.right += u32::from(is_right(q, answer));
        self.tool_calls += tool_calls;
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} answers right, {} tool call{}",
            self.right,
            self.asked,
            self.tool_calls,
            if self.tool_calls == 1 { "" } else { "s" }
        )
    }
}

/// How the agents' turns run: on a real model short turns at temperature 0 (a small model
/// wanders), on the scripted one the defaults.
pub fn turn_spec(real: bool) -> TurnSpec<Sys> {
    TurnSpec {
        max_steps: Some(if real { 3 } else { 8 }),
        base_steps: if real { 3 } else { 4 },
        max_tokens: Some(if real { 96 } else { 256 }),
        temperature: real.then_some(0.0),
        ..TurnSpec::default()
    }
}

/// `calc`: integer arithmetic with + - * / and parentheses.
pub fn calc(expr: &str) -> Result<i64, String> {
    struct P<'a> {
        s: &'a [u8],
        i: usize,
    }
    impl P<'_> {
        fn ws(&mut self) {
            while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
                self.i += 1;
            }
        }
        fn expr(&mut self, depth: u32) -> Result<i64, String> {
            let mut v = self.term(depth)?;
            loop {
                self.ws();
                match self.s.get(self.i) {
                    Some(b'+') => {
                        self.i += 1;
                        v = v.checked_add(self.term(depth)?).ok_or("overflow")?;
                    }
                    Some(b'-') => {
                        self.i += 1;
                        v = v.checked_sub(self.term(depth)?).ok_or("overflow")?;
                    }
                    _ => return Ok(v),
                }
            }
        }
        fn term(&mut self, depth: u32) -> Result<i64, String> {
            let mut v = self.atom(depth)?;
            loop {
                self.ws();
                match self.s.get(self.i) {
                    Some(b'*') => {
                        self.i += 1;
                        v = v.checked_mul(self.atom(depth)?).ok_or("overflow")?;
                    }
                    Some(b'/') => {
                        self.i += 1;
                        let d = self.atom(depth)?;
                        v = v.checked_div(d).ok_or("division by zero")?;
                    }
                    _ => return Ok(v),
                }
            }
        }
        fn atom(&mut self, depth: u32) -> Result<i64, String> {
            if depth > 64 {
                return Err("nested too deeply".into());
            }
            self.ws();
            match self.s.get(self.i) {
                Some(b'(') => {
                    self.i += 1;
                    let v = self.expr(depth + 1)?;
                    self.ws();
                    if self.s.get(self.i) != Some(&b')') {
                        return Err(format!("expected ')' at {}", self.i));
                    }
                    self.i += 1;
                    Ok(v)
                }
                Some(b'-') => {
                    self.i += 1;
                    Ok(-self.atom(depth + 1)?)
                }
                Some(c) if c.is_ascii_digit() => {
                    let start = self.i;
                    while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
                        self.i += 1;
                    }
                    std::str::from_utf8(&self.s[start..self.i])
                        .ok()
                        .and_then(|t| t.parse().ok())
                        .ok_or_else(|| "number too large".into())
                }
                _ => Err(format!("expected a number at {}", self.i)),
            }
        }
    }
    let mut p = P {
        s: expr.as_bytes(),
        i: 0,
    };
    let v = p.expr(0)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("unexpected input at {}", p.i));
    }
    Ok(v)
}

/// What the `lookup` tool knows.
pub const FACTS: &[(&str, &str)] = &[
    ("capital of france", "Paris"),
    ("capital of japan", "Tokyo"),
    ("capital of kenya", "Nairobi"),
    ("speed of light", "299,792,458 m/s"),
];

/// The team's tools: `calc`, `lookup` and `word_count`.
pub fn team_tools() -> Result<ToolRegistry, ToolRegistryError> {
    let mut r = ToolRegistry::new();
    let str_arg = |args: &Value, k: &str| {
        args.get(k)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ToolError::new(format!("missing string argument `{k}`")))
    };
    r.register_sync(
        "calc",
        "Evaluate an integer arithmetic expression (+ - * / and parentheses).",
        r#"{"type":"object","properties":{"expr":{"type":"string"}},"required":["expr"]}"#,
        move |args| {
            let e = str_arg(&args, "expr")?;
            calc(&e).map(Value::I64).map_err(ToolError::new)
        },
    )?;
    r.register_sync(
        "lookup",
        "Look up a fact, e.g. 'capital of France'.",
        r#"{"type":"object","properties":{"query":{"type":"string"}},"required":["query"]}"#,
        move |args| {
            let q = str_arg(&args, "query")?.to_lowercase();
            FACTS
                .iter()
                .find(|(k, _)| q.contains(k))
                .map(|(_, v)| Value::Str((*v).into()))
                .ok_or_else(|| ToolError::new(format!("no fact about {q:?}")))
        },
    )?;
    r.register_sync(
        "word_count",
        "Count the words of a text.",
        r#"{"type":"object","properties":{"text":{"type":"string"}},"required":["text"]}"#,
        move |args| {
            let t = str_arg(&args, "text")?;
            Ok(Value::U64(t.split_whitespace().count() as u64))
        },
    )?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calc_follows_precedence_and_refuses_junk() {
        assert_eq!(calc("(17 + 25) * 3"), Ok(126));
        assert_eq!(calc("2+3*4"), Ok(14));
        assert_eq!(calc("-(2-5)"), Ok(3));
        assert!(calc("1/0").is_err());
        assert!(calc("2+").is_err());
        assert!(calc("(((1)").is_err());
        assert!(calc(&"(".repeat(10_000)).is_err());
    }

    #[test]
    fn answers_are_right_by_whole_words() {
        let [paris, sum, words, _] = QUESTIONS;
        assert!(is_right(&paris, "The capital of France is Paris."));
        assert!(!is_right(&paris, "Parisian"));
        assert!(is_right(&sum, "(17 + 25) * 3 = 126"));
        assert!(!is_right(&sum, "1260"));
        assert!(is_right(&words, "It has five words."));
        assert!(!is_right(&words, "18 words"));
        assert!(!is_right(&words, "1.5"));
        assert!(is_right(&words, "5."));
        let mut t = Tally::default();
        t.add(&paris, "Paris", 1);
        t.add(&words, "18 words", 0);
        assert_eq!(t.to_string(), "1 of 2 answers right, 1 tool call");
    }
}
