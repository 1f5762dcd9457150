//! The transcript: how context segments become a prompt, and how tool calls and results are
//! keyed, capped and judged.

use super::action::{answer_text, call_text};
use super::json::canonical_arguments;
use super::MAX_TOOL_RESULT_CHARS;
use agentos_abi::{ChatMessage, DeviceMessage, Role, Segment, ToolCall, Value};
use std::collections::{HashMap, HashSet};

/// Order segments for the provider's prompt cache: pinned non-summary segments first (the
/// system prompt and the task: a stable prefix), then the pager's summaries, then the rest;
/// each group keeps its order.
pub fn order_for_cache(segments: Vec<Segment>) -> Vec<Segment> {
    let mut lead = Vec::new();
    let mut summaries = Vec::new();
    let mut rest = Vec::new();
    for s in segments {
        if s.summary {
            summaries.push(s);
        } else if s.pinned {
            lead.push(s);
        } else {
            rest.push(s);
        }
    }
    lead.extend(summaries);
    lead.extend(rest);
    lead
}

/// Make a transcript valid for a provider: every tool result follows the assistant message that
/// called it, and no call or result is left without its partner.
///
/// Paging can evict a tool result while its call stays resident, or the other way round; a
/// provider refuses both. An assistant message keeps only the calls whose result (by call id) is
/// present, each result placed right after it; an assistant message left with no calls stays
/// as plain text if it has any; tool results appear only after their calls; every other
/// message is kept in order.
pub fn pair_tool_calls(messages: Vec<ChatMessage>) -> Vec<ChatMessage> {
    let mut result_by_id: HashMap<String, ChatMessage> = HashMap::new();
    for m in &messages {
        if m.role == Role::Tool {
            if let Some(id) = m.tool_call_id.as_deref().filter(|id| !id.is_empty()) {
                result_by_id.insert(id.to_owned(), m.clone());
            }
        }
    }
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        match m.role {
            Role::Tool => {}
            Role::Assistant if !m.tool_calls.is_empty() => {
                let answered: Vec<ToolCall> = m
                    .tool_calls
                    .iter()
                    .filter(|c| result_by_id.contains_key(&c.id))
                    .cloned()
                    .collect();
                if answered.is_empty() {
                    if !m.content.trim().is_empty() {
                        out.push(ChatMessage::assistant(m.content));
                    }
                    continue;
                }
                let results: Vec<ChatMessage> = answered
                    .iter()
                    .filter_map(|c| result_by_id.get(&c.id).cloned())
                    .collect();
                out.push(ChatMessage {
                    tool_calls: answered,
                    ..m
                });
                out.extend(results);
            }
            _ => out.push(m),
        }
    }
    out
}

/// The chat messages among the working set's segments, ordered for the cache and paired: the
/// prompt of the next step. Segments that are not chat messages (the default pager summary,
/// anything else a program remembered) are left out.
pub(crate) fn prompt_messages(working_set: Vec<Segment>) -> Vec<ChatMessage> {
    pair_tool_calls(
        order_for_cache(working_set)
            .into_iter()
            .filter_map(|s| ChatMessage::from_value(s.body).ok())
            .collect(),
    )
}

/// Add a constrained step's instructions (its tools and action format) to the prompt: after
/// the first system message's text, or as a system message of their own at the start.
pub(crate) fn with_instructions(mut messages: Vec<ChatMessage>, text: &str) -> Vec<ChatMessage> {
    match messages.first_mut() {
        Some(m) if m.role == Role::System => {
            if !m.content.trim().is_empty() {
                m.content.push_str("\n\n");
            }
            m.content.push_str(text);
        }
        _ => messages.insert(0, ChatMessage::system(text)),
    }
    messages
}

/// A prompt as a model asked for constrained actions reads it: its own tool calls as the action
/// objects it wrote, its plain answers as answer objects, and the tool results that followed a
/// step as one user message (`Result of calc: 126`). A model without native tool calls then
/// never meets a `tool_calls` block or a `tool` role its chat template does not know.
pub(crate) fn as_actions(messages: Vec<ChatMessage>) -> Vec<ChatMessage> {
    let mut out: Vec<ChatMessage> = Vec::with_capacity(messages.len());
    let mut results: Vec<String> = Vec::new();
    let flush = |results: &mut Vec<String>, out: &mut Vec<ChatMessage>| {
        if !results.is_empty() {
            out.push(ChatMessage::user(results.join("\n")));
            results.clear();
        }
    };
    for m in messages {
        match m.role {
            Role::Tool => {
                let name = m.name.as_deref().unwrap_or("the tool");
                results.push(format!("Result of {name}: {}", m.content));
            }
            Role::Assistant if !m.tool_calls.is_empty() => {
                flush(&mut results, &mut out);
                let text: Vec<String> = m.tool_calls.iter().map(call_text).collect();
                out.push(ChatMessage::assistant(text.join("\n")));
            }
            Role::Assistant if !m.content.trim_start().starts_with('{') => {
                flush(&mut results, &mut out);
                out.push(ChatMessage::assistant(answer_text(&m.content)));
            }
            _ => {
                flush(&mut results, &mut out);
                out.push(m);
            }
        }
    }
    flush(&mut results, &mut out);
    out
}

/// The per-turn cache key of a tool call: its name and its canonical arguments.
pub fn tool_call_key(call: &ToolCall) -> String {
    format!("{}:{}", call.name, canonical_arguments(&call.arguments))
}

/// Cut a tool result to [`MAX_TOOL_RESULT_CHARS`] characters, noting how many were dropped.
pub fn cap_tool_result(text: String) -> String {
    match text.char_indices().nth(MAX_TOOL_RESULT_CHARS) {
        None => text,
        Some((cut, _)) => {
            let dropped = text[cut..].chars().count();
            let mut kept = text;
            kept.truncate(cut);
            kept.push_str(&format!("\n\u{2026}[truncated {dropped} chars]"));
            kept
        }
    }
}

/// Whether a tool's answer carries no usable data: an `{error}` map, or an HTTP-like `status`
/// outside 2xx.
pub(crate) fn unproductive(out: &Value) -> bool {
    let Value::Map(entries) = out else {
        return false;
    };
    if entries.iter().any(|(k, _)| k == "error") {
        return true;
    }
    let status = match out.get("status") {
        Some(Value::U64(n)) => Some(*n as f64),
        Some(Value::I64(n)) => Some(*n as f64),
        Some(Value::F64(x)) => Some(*x),
        _ => None,
    };
    status.is_some_and(|s| !(200.0..300.0).contains(&s))
}

/// Tool-call ids in use in the transcript. Models (local ones especially) repeat ids or leave
/// them out; since a result is paired to its call by id, every call gets an id no other resident
/// call has.
#[derive(Debug, Default)]
pub(crate) struct CallIds {
    used: HashSet<String>,
}

impl CallIds {
    /// The ids already used by the resident transcript.
    pub(crate) fn resident(messages: &[ChatMessage]) -> Self {
        let mut used = HashSet::new();
        for m in messages {
            used.extend(m.tool_calls.iter().map(|c| c.id.clone()));
            if let Some(id) = &m.tool_call_id {
                used.insert(id.clone());
            }
        }
        CallIds { used }
    }

    /// Give each call a fresh id if its own is blank or taken (`call_<step>_<i>`, suffixed until
    /// unused), and record it.
    pub(crate) fn assign(&mut self, calls: &mut [ToolCall], step: u32) {
        for (i, call) in calls.iter_mut().enumerate() {
            if call.id.trim().is_empty() || self.used.contains(&call.id) {
                let base = format!("call_{step}_{i}");
                let mut id = base.clone();
                let mut n = 1u32;
                while self.used.contains(&id) {
                    id = format!("{base}_{n}");
                    n += 1;
                }
                call.id = id;
            }
            self.used.insert(call.id.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentos_abi::SegId;

    fn call(id: &str, name: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: "{}".into(),
        }
    }

    fn seg(id: u64, pinned: bool, summary: bool) -> Segment {
        Segment {
            id: SegId(id),
            body: Value::U64(id),
            tokens: 1,
            pinned,
            summary,
        }
    }

    #[test]
    fn pinned_prefix_then_summaries_then_the_rest() {
        let segs = vec![
            seg(1, false, false),
            seg(2, true, false),
            seg(3, false, true),
            seg(4, true, false),
            seg(5, true, true),
            seg(6, false, false),
        ];
        let order: Vec<u64> = order_for_cache(segs).iter().map(|s| s.id.0).collect();
        assert_eq!(order, vec![2, 4, 3, 5, 1, 6]);
    }

    #[test]
    fn calls_and_results_pair_up_and_orphans_go() {
        let msgs = vec![
            ChatMessage::system("sys"),
            // Result of c1 arrives before its call (paging reordered things).
            ChatMessage::tool("c1", "read", "one"),
            ChatMessage::assistant_calls("thinking", vec![call("c1", "read"), call("c2", "read")]),
            ChatMessage::user("next"),
            // A call whose result was paged out, with text: kept as text.
            ChatMessage::assistant_calls("only text survives", vec![call("c3", "read")]),
            // A call with no result and no text: dropped.
            ChatMessage::assistant_calls(" ", vec![call("c4", "read")]),
            // An orphan result: dropped.
            ChatMessage::tool("c9", "read", "orphan"),
        ];
        let out = pair_tool_calls(msgs);
        assert_eq!(
            out,
            vec![
                ChatMessage::system("sys"),
                ChatMessage::assistant_calls("thinking", vec![call("c1", "read")]),
                ChatMessage::tool("c1", "read", "one"),
                ChatMessage::user("next"),
                ChatMessage::assistant("only text survives"),
            ]
        );
    }

    #[test]
    fn long_results_are_capped_on_char_boundaries() {
        assert_eq!(cap_tool_result("short".into()), "short");
        let exact = "é".repeat(MAX_TOOL_RESULT_CHARS);
        assert_eq!(cap_tool_result(exact.clone()), exact);
        let long = "é".repeat(MAX_TOOL_RESULT_CHARS + 5);
        let capped = cap_tool_result(long);
        assert!(capped.starts_with(&"é".repeat(MAX_TOOL_RESULT_CHARS)));
        assert!(capped.ends_with("\n\u{2026}[truncated 5 chars]"));
    }

    #[test]
    fn errors_and_bad_statuses_are_unproductive() {
        let err = Value::Map(vec![("error".into(), Value::Str("no".into()))]);
        assert!(unproductive(&err));
        let bad = Value::Map(vec![("status".into(), Value::U64(404))]);
        assert!(unproductive(&bad));
        let ok = Value::Map(vec![("status".into(), Value::U64(204))]);
        assert!(!unproductive(&ok));
        assert!(!unproductive(&Value::Str("error".into())));
        assert!(!unproductive(&Value::Unit));
    }

    #[test]
    fn call_keys_ignore_argument_spelling() {
        let a = ToolCall {
            id: "x".into(),
            name: "f".into(),
            arguments: r#"{"b":1, "a":2}"#.into(),
        };
        let b = ToolCall {
            id: "y".into(),
            name: "f".into(),
            arguments: r#"{"a":2,"b":1}"#.into(),
        };
        assert_eq!(tool_call_key(&a), tool_call_key(&b));
        assert_ne!(tool_call_key(&a), tool_call_key(&call("x", "g")));
        assert_eq!(tool_call_key(&call("x", "f")), "f:{}");
    }

    #[test]
    fn constrained_prompts_read_as_actions_and_results() {
        let msgs = vec![
            ChatMessage::system("sys"),
            ChatMessage::user("task"),
            ChatMessage::assistant_calls(
                "",
                vec![ToolCall {
                    id: "a".into(),
                    name: "calc".into(),
                    arguments: r#"{"expr":"1+2"}"#.into(),
                }],
            ),
            ChatMessage::tool("a", "calc", "3"),
            ChatMessage::assistant("It is 3."),
            ChatMessage::assistant(r#"{"tool": "rm"}"#),
        ];
        let out = as_actions(with_instructions(msgs, "Tools: calc"));
        assert_eq!(
            out,
            vec![
                ChatMessage::system("sys\n\nTools: calc"),
                ChatMessage::user("task"),
                ChatMessage::assistant(r#"{"tool": "calc", "arguments": {"expr": "1+2"}}"#),
                ChatMessage::user("Result of calc: 3"),
                ChatMessage::assistant(r#"{"answer": "It is 3."}"#),
                ChatMessage::assistant(r#"{"tool": "rm"}"#),
            ]
        );
        let bare = with_instructions(vec![ChatMessage::user("hi")], "Tools: none");
        assert_eq!(bare[0], ChatMessage::system("Tools: none"));
    }

    #[test]
    fn blank_and_repeated_ids_are_replaced() {
        let resident = vec![ChatMessage::assistant_calls("", vec![call("call_0", "f")])];
        let mut ids = CallIds::resident(&resident);
        let mut calls = vec![
            call("call_0", "f"),
            call("", "f"),
            call("ok", "f"),
            call("ok", "g"),
        ];
        ids.assign(&mut calls, 3);
        let got: Vec<&str> = calls.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(got, vec!["call_3_0", "call_3_1", "ok", "call_3_3"]);
    }
}
