//! Tool calls written into the message text, the way small local models emit them.
//!
//! Some models (and servers without native tool-call support) answer with a bare JSON object
//! `{"name": .., "arguments": ..}` in the content instead of a `tool_calls` block, sometimes
//! inside a ```json fence or `<tool_call>…</tool_call>` tags, sometimes after a sentence. This
//! parser recognises those shapes, but only for tools the request offered, so a JSON answer to
//! a `response_format` request is never mistaken for a call.

use agentos_abi::device::{ToolCall, ToolSpec};
use serde_json::Value as Json;

/// Tool calls found in `content` naming one of `tools`, and the text left around them.
/// `None` when the content holds no such call.
pub fn parse_tool_calls_from_content(
    content: &str,
    tools: &[ToolSpec],
) -> Option<(String, Vec<ToolCall>)> {
    if tools.is_empty() {
        return None;
    }
    let mut calls = Vec::new();
    let mut rest = String::new();
    // 1. <tool_call>…</tool_call> blocks (Hermes / Qwen style).
    if content.contains("<tool_call>") {
        let mut tail = content;
        while let Some(start) = tail.find("<tool_call>") {
            rest.push_str(&tail[..start]);
            let after = &tail[start + "<tool_call>".len()..];
            let (inner, next) = match after.find("</tool_call>") {
                Some(end) => (&after[..end], &after[end + "</tool_call>".len()..]),
                None => (after, ""),
            };
            calls.extend(calls_in(inner, tools));
            tail = next;
        }
        rest.push_str(tail);
        return finish(rest, calls);
    }
    // 2. Fenced code blocks.
    if let Some(start) = content.find("```") {
        let after = &content[start + 3..];
        if let Some(end) = after.find("```") {
            let block = &after[..end];
            let body = block
                .split_once('\n')
                .filter(|(lang, _)| !lang.trim_start().starts_with(['{', '[']))
                .map_or(block, |(_, b)| b);
            let found = calls_in(body, tools);
            if !found.is_empty() {
                rest.push_str(&content[..start]);
                rest.push_str(&after[end + 3..]);
                return finish(rest, found);
            }
        }
    }
    // 3. The whole text, or the outermost {…} / […] span inside it.
    let trimmed = content.trim();
    let found = calls_in(trimmed, tools);
    if !found.is_empty() {
        return finish(String::new(), found);
    }
    for (open, close) in [('{', '}'), ('[', ']')] {
        if let (Some(s), Some(e)) = (content.find(open), content.rfind(close)) {
            if s < e {
                let found = calls_in(&content[s..=e], tools);
                if !found.is_empty() {
                    rest.push_str(&content[..s]);
                    rest.push_str(&content[e + 1..]);
                    return finish(rest, found);
                }
            }
        }
    }
    None
}

fn finish(rest: String, calls: Vec<ToolCall>) -> Option<(String, Vec<ToolCall>)> {
    if calls.is_empty() {
        None
    } else {
        Some((rest.trim().to_owned(), calls))
    }
}

/// Calls in one JSON text: an object or an array of objects.
fn calls_in(text: &str, tools: &[ToolSpec]) -> Vec<ToolCall> {
    let Ok(j) = serde_json::from_str::<Json>(text.trim()) else {
        return Vec::new();
    };
    let objects = match j {
        Json::Array(items) => items,
        obj @ Json::Object(_) => vec![obj],
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    for (i, o) in objects.into_iter().enumerate() {
        // {"function": {"name", "arguments"}} (OpenAI's own shape, written as text).
        let o = match o.get("function") {
            Some(f @ Json::Object(_)) => f.clone(),
            _ => o,
        };
        let Some(name) = o
            .get("name")
            .or_else(|| o.get("tool"))
            .and_then(Json::as_str)
        else {
            continue;
        };
        if !tools.iter().any(|t| t.name == name) {
            continue;
        }
        let args = ["arguments", "parameters", "args", "input"]
            .iter()
            .find_map(|k| o.get(*k));
        let arguments = match args {
            None | Some(Json::Null) => "{}".to_owned(),
            Some(Json::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        out.push(ToolCall {
            id: format!("call_{i}"),
            name: name.to_owned(),
            arguments,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> Vec<ToolSpec> {
        vec![ToolSpec {
            name: "add".into(),
            ..ToolSpec::default()
        }]
    }

    #[test]
    fn bare_object() {
        let (rest, calls) =
            parse_tool_calls_from_content(r#" {"name":"add","arguments":{"a":1}} "#, &tools())
                .unwrap();
        assert_eq!(rest, "");
        assert_eq!(calls[0].name, "add");
        assert_eq!(calls[0].arguments, r#"{"a":1}"#);
    }

    #[test]
    fn fenced_tagged_and_embedded() {
        let fenced = "Sure.\n```json\n{\"name\":\"add\",\"parameters\":{\"a\":2}}\n```";
        let (rest, calls) = parse_tool_calls_from_content(fenced, &tools()).unwrap();
        assert_eq!(
            (rest.as_str(), calls[0].arguments.as_str()),
            ("Sure.", r#"{"a":2}"#)
        );
        let tagged = "<tool_call>{\"name\":\"add\",\"arguments\":\"{\\\"a\\\":3}\"}</tool_call>";
        let (_, calls) = parse_tool_calls_from_content(tagged, &tools()).unwrap();
        assert_eq!(calls[0].arguments, r#"{"a":3}"#);
        let embedded = r#"I will call it: {"name": "add", "arguments": {}}"#;
        let (rest, calls) = parse_tool_calls_from_content(embedded, &tools()).unwrap();
        assert_eq!((rest.as_str(), calls.len()), ("I will call it:", 1));
        let arr = r#"[{"name":"add"},{"name":"add","arguments":{"a":1}}]"#;
        assert_eq!(
            parse_tool_calls_from_content(arr, &tools())
                .unwrap()
                .1
                .len(),
            2
        );
    }

    #[test]
    fn unknown_names_and_plain_json_are_not_calls() {
        assert!(
            parse_tool_calls_from_content(r#"{"name":"rm","arguments":{}}"#, &tools()).is_none()
        );
        assert!(parse_tool_calls_from_content(r#"{"answer": 42}"#, &tools()).is_none());
        assert!(parse_tool_calls_from_content("hello", &tools()).is_none());
        assert!(parse_tool_calls_from_content(r#"{"name":"add"}"#, &[]).is_none());
    }
}
