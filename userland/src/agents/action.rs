//! Constrained actions: one JSON action object per ReAct step, for models that do not call
//! tools natively but follow a grammar or a JSON schema.
//!
//! A step offers a set of tools; the model answers with exactly one of
//!
//! ```text
//! {"tool": "<name>", "arguments": {…}}              call a tool (arguments match its schema)
//! {"tool": "answer", "arguments": {"text": "…"}}    the final answer, while tools are offered
//! {"answer": "…"}                                   the final answer, when none are
//! ```
//!
//! While tools are offered the answer is one more "tool" (unless a real tool has that name),
//! so the model's first decision is only which name to write; a small model picks better
//! that way than between two object shapes.
//!
//! [`action_gbnf`] writes that choice as a llama.cpp GBNF grammar (each tool's arguments
//! written from its JSON Schema, whitespace fixed, so a small model has no room to wander) and
//! [`action_schema`] as a JSON schema (`anyOf` one object per tool plus the answer) for a
//! `response_format`. [`parse_action`] reads a reply back, tolerantly: fences, tags, text
//! around the object, the OpenAI `{"name", "arguments"}` spelling, arguments written flat
//! beside the name, and an answer cut off by the token limit are all understood; a call to a
//! tool that was not offered, or with arguments that do not match its schema, is an
//! [`InvalidAction`] the turn shows the model (a stall, never a panic).

use agentos_abi::{ToolCall, ToolSpec};
use serde_json::{Map, Value as Json};
use std::collections::HashSet;
use std::fmt::Write as _;

/// How a ReAct step asks the model for its next action.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Actions {
    /// Decide from the LLM device's capabilities: native tool calls when the model has them,
    /// else a grammar when the provider takes one, else a JSON schema, else native.
    #[default]
    Auto,
    /// The request carries the tools; the model calls them natively (and the provider's
    /// tolerant parser recovers calls written into the text).
    Native,
    /// One action object per step, constrained by a GBNF grammar (llama.cpp's `grammar`).
    Grammar,
    /// One action object per step, constrained by a JSON schema (`response_format`).
    JsonSchema,
}

impl Actions {
    /// The concrete mode for a device with these capabilities (an explicit mode stays as it
    /// is; only [`Actions::Auto`] looks at them).
    pub fn resolve(self, caps: &agentos_abi::LlmCapabilities) -> Actions {
        match self {
            Actions::Auto if caps.native_tools => Actions::Native,
            Actions::Auto if caps.grammar => Actions::Grammar,
            Actions::Auto if caps.json_schema => Actions::JsonSchema,
            Actions::Auto => Actions::Native,
            explicit => explicit,
        }
    }

    /// Whether steps ask for one constrained action object.
    pub fn is_constrained(self) -> bool {
        matches!(self, Actions::Grammar | Actions::JsonSchema)
    }

    /// A short name for traces: `auto`, `native`, `grammar`, `json-schema`.
    pub fn name(self) -> &'static str {
        match self {
            Actions::Auto => "auto",
            Actions::Native => "native",
            Actions::Grammar => "grammar",
            Actions::JsonSchema => "json-schema",
        }
    }
}

/// One action the model chose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Call an offered tool (`id` is blank; the turn assigns one). The arguments are JSON text.
    Call(ToolCall),
    /// The final answer.
    Answer(String),
}

/// A reply that is not a valid action: what the model wrote and why it does not count.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid action: {why}")]
pub struct InvalidAction {
    /// Why (shown to the model).
    pub why: String,
}

fn invalid(why: impl Into<String>) -> InvalidAction {
    InvalidAction { why: why.into() }
}

/// The name of the answer when it is offered as a tool.
pub const ANSWER_TOOL: &str = "answer";

/// Whether the answer goes as the `answer` pseudo-tool: tools are offered and none of them is
/// called that.
fn answer_as_tool(tools: &[ToolSpec]) -> bool {
    !tools.is_empty() && tools.iter().all(|t| t.name != ANSWER_TOOL)
}

/// Schemas nested deeper than this are written as any JSON value.
const MAX_SCHEMA_DEPTH: usize = 8;

/// A tool's argument schema (an empty object schema when its text is not JSON).
fn parameters(tool: &ToolSpec) -> Json {
    serde_json::from_str::<Json>(&tool.parameters)
        .ok()
        .filter(Json::is_object)
        .unwrap_or_else(|| serde_json::json!({"type": "object"}))
}

// ---------------------------------------------------------------------------------------------
// The JSON schema

/// The JSON schema of one action over `tools`: `anyOf` a call object per tool and the answer
/// object. With no tools it is the answer object alone.
pub fn action_schema(tools: &[ToolSpec]) -> String {
    let answer = serde_json::json!({
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
        "additionalProperties": false,
    });
    if tools.is_empty() {
        return answer.to_string();
    }
    let answer = if answer_as_tool(tools) {
        serde_json::json!({
            "type": "object",
            "properties": {
                "tool": {"const": ANSWER_TOOL},
                "arguments": {
                    "type": "object",
                    "properties": {"text": {"type": "string"}},
                    "required": ["text"],
                    "additionalProperties": false,
                },
            },
            "required": ["tool", "arguments"],
            "additionalProperties": false,
        })
    } else {
        answer
    };
    let mut any: Vec<Json> = tools
        .iter()
        .map(|t| {
            serde_json::json!({
                "type": "object",
                "properties": {
                    "tool": {"const": t.name},
                    "arguments": parameters(t),
                },
                "required": ["tool", "arguments"],
                "additionalProperties": false,
            })
        })
        .collect();
    any.push(answer);
    serde_json::json!({ "anyOf": any }).to_string()
}

// ---------------------------------------------------------------------------------------------
// The grammar

/// A GBNF literal for `text`.
fn lit(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\x{:02X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A GBNF literal for a JSON value as JSON text.
fn json_lit(v: &Json) -> String {
    lit(&v.to_string())
}

/// The shared rules every action grammar carries.
const BASE_RULES: &str = r#"string ::= "\"" char* "\""
char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})
integer ::= "-"? ("0" | [1-9] [0-9]{0,15})
number ::= "-"? ("0" | [1-9] [0-9]{0,15}) ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})?
boolean ::= "true" | "false"
null ::= "null"
value ::= object | array | string | number | boolean | null
object ::= "{" (string ": " value (", " string ": " value)*)? "}"
array ::= "[" (value (", " value)*)? "]"
"#;

/// Writes the rules of a grammar, one per schema node that needs one.
struct Rules {
    rules: Vec<(String, String)>,
    names: HashSet<String>,
}

impl Rules {
    /// A fresh rule name from `hint` (GBNF names are `[a-z0-9-]`).
    fn name(&mut self, hint: &str) -> String {
        let mut base: String = hint
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        base = base.trim_matches('-').to_owned();
        if base.is_empty() || base.starts_with(|c: char| c.is_ascii_digit()) {
            base.insert_str(0, "r-");
        }
        let mut name = base.clone();
        let mut n = 1u32;
        while self.names.contains(&name)
            || matches!(
                name.as_str(),
                "root"
                    | "string"
                    | "char"
                    | "integer"
                    | "number"
                    | "boolean"
                    | "null"
                    | "value"
                    | "object"
                    | "array"
            )
        {
            n += 1;
            name = format!("{base}-{n}");
        }
        self.names.insert(name.clone());
        name
    }

    fn add(&mut self, hint: &str, body: String) -> String {
        let name = self.name(hint);
        self.rules.push((name.clone(), body));
        name
    }

    /// An expression matching `schema`, with fixed whitespace.
    fn expr(&mut self, schema: &Json, hint: &str, depth: usize) -> String {
        if depth > MAX_SCHEMA_DEPTH {
            return "value".into();
        }
        let Some(obj) = schema.as_object() else {
            // `true`, or something that is not a schema: any value.
            return "value".into();
        };
        if let Some(c) = obj.get("const") {
            return json_lit(c);
        }
        if let Some(Json::Array(options)) = obj.get("enum") {
            if !options.is_empty() {
                let alts: Vec<String> = options.iter().map(json_lit).collect();
                return format!("({})", alts.join(" | "));
            }
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(Json::Array(options)) = obj.get(key) {
                if !options.is_empty() {
                    let alts: Vec<String> = options
                        .iter()
                        .enumerate()
                        .map(|(i, o)| self.expr(o, &format!("{hint}-{i}"), depth + 1))
                        .collect();
                    return format!("({})", alts.join(" | "));
                }
            }
        }
        match obj.get("type") {
            Some(Json::String(t)) => self.typed(t, obj, hint, depth),
            Some(Json::Array(types)) => {
                let alts: Vec<String> = types
                    .iter()
                    .filter_map(Json::as_str)
                    .map(|t| self.typed(t, obj, hint, depth))
                    .collect();
                if alts.is_empty() {
                    "value".into()
                } else {
                    format!("({})", alts.join(" | "))
                }
            }
            _ if obj.contains_key("properties") => self.typed("object", obj, hint, depth),
            _ => "value".into(),
        }
    }

    fn typed(&mut self, t: &str, obj: &Map<String, Json>, hint: &str, depth: usize) -> String {
        match t {
            "string" => "string".into(),
            "integer" => "integer".into(),
            "number" => "number".into(),
            "boolean" => "boolean".into(),
            "null" => "null".into(),
            "array" => match obj.get("items") {
                Some(items) if items.is_object() => {
                    let item = self.expr(items, &format!("{hint}-item"), depth + 1);
                    let body = format!("\"[\" ({item} (\", \" {item})*)? \"]\"");
                    self.add(hint, body)
                }
                _ => "array".into(),
            },
            "object" => self.object(obj, hint, depth),
            _ => "value".into(),
        }
    }

    /// An object with its properties in schema order: the required ones always, each optional
    /// one maybe; no other keys. Without properties, any object.
    fn object(&mut self, obj: &Map<String, Json>, hint: &str, depth: usize) -> String {
        let Some(Json::Object(props)) = obj.get("properties") else {
            return "object".into();
        };
        if props.is_empty() {
            return "object".into();
        }
        let required: HashSet<&str> = obj
            .get("required")
            .and_then(Json::as_array)
            .map(|r| r.iter().filter_map(Json::as_str).collect())
            .unwrap_or_default();
        let mut must = Vec::new();
        let mut may = Vec::new();
        for (key, schema) in props {
            let value = self.expr(schema, &format!("{hint}-{key}"), depth + 1);
            let pair = format!(
                "{} {value}",
                lit(&format!("{}: ", Json::from(key.as_str())))
            );
            if required.contains(key.as_str()) {
                must.push(pair);
            } else {
                may.push(pair);
            }
        }
        let body = if must.is_empty() {
            let one = format!("({})", may.join(" | "));
            format!("\"{{\" ({one} (\", \" {one})*)? \"}}\"")
        } else {
            let mut b = format!("\"{{\" {}", must.join(" \", \" "));
            for m in &may {
                let _ = write!(b, " (\", \" {m})?");
            }
            b.push_str(" \"}\"");
            b
        };
        self.add(hint, body)
    }
}

/// The GBNF grammar of one action over `tools`: a call to one of them (arguments written from
/// its JSON Schema) or the answer. With no tools only the answer is allowed.
pub fn action_gbnf(tools: &[ToolSpec]) -> String {
    let mut rules = Rules {
        rules: Vec::new(),
        names: HashSet::new(),
    };
    let mut alts = Vec::new();
    for t in tools {
        let args = rules.expr(&parameters(t), &format!("{}-args", t.name), 0);
        let head = format!(
            "{{\"tool\": {}, \"arguments\": ",
            Json::from(t.name.as_str())
        );
        let call = rules.add(
            &format!("call-{}", t.name),
            format!("{} {args} \"}}\"", lit(&head)),
        );
        alts.push(call);
    }
    alts.push("answer".into());
    let mut out = format!("root ::= {}\n", alts.join(" | "));
    if answer_as_tool(tools) {
        out.push_str(
            "answer ::= \"{\\\"tool\\\": \\\"answer\\\", \\\"arguments\\\": {\\\"text\\\": \" string \"}}\"\n",
        );
    } else {
        out.push_str("answer ::= \"{\\\"answer\\\": \" string \"}\"\n");
    }
    for (name, body) in &rules.rules {
        let _ = writeln!(out, "{name} ::= {body}");
    }
    out.push_str(BASE_RULES);
    out
}

// ---------------------------------------------------------------------------------------------
// What the model is told

/// A one-line signature of a tool for the prompt: `calc(expr: string) — Evaluate …`.
fn signature(t: &ToolSpec) -> String {
    let params = parameters(t);
    let props = params.get("properties").and_then(Json::as_object);
    let args: Vec<String> = props
        .map(|p| {
            p.iter()
                .map(|(k, s)| {
                    let ty = s.get("type").and_then(Json::as_str).unwrap_or("value");
                    format!("{k}: {ty}")
                })
                .collect()
        })
        .unwrap_or_default();
    let desc = t.description.trim();
    if desc.is_empty() {
        format!("{}({})", t.name, args.join(", "))
    } else {
        format!("{}({}) \u{2014} {desc}", t.name, args.join(", "))
    }
}

/// An example call of a tool for the prompt, with placeholder arguments.
fn example(t: &ToolSpec) -> String {
    let params = parameters(t);
    let mut args = Map::new();
    if let Some(props) = params.get("properties").and_then(Json::as_object) {
        for (k, s) in props {
            let v = match s.get("type").and_then(Json::as_str) {
                Some("integer" | "number") => Json::from(1),
                Some("boolean") => Json::from(true),
                Some("array") => Json::Array(Vec::new()),
                Some("object") => Json::Object(Map::new()),
                _ => Json::from("..."),
            };
            args.insert(k.clone(), v);
        }
    }
    format!(
        "{{\"tool\": {}, \"arguments\": {}}}",
        Json::from(t.name.as_str()),
        spaced(&Json::Object(args))
    )
}

/// Words that say nothing about which tool fits.
const STOP_WORDS: [&str; 24] = [
    "a", "an", "and", "are", "as", "be", "by", "e", "eg", "for", "g", "how", "in", "is", "it",
    "many", "of", "on", "or", "the", "this", "to", "what", "with",
];

/// The words (and arithmetic signs) of a text, lowercased, without stop words.
fn words(text: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut word = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_alphanumeric() {
            word.extend(c.to_lowercase());
            continue;
        }
        if !word.is_empty() && !STOP_WORDS.contains(&word.as_str()) {
            out.insert(std::mem::take(&mut word));
        }
        word.clear();
        if matches!(c, '+' | '-' | '*' | '/' | '=') {
            out.insert(c.to_string());
        }
    }
    out
}

/// The offered tools, the ones whose name and description share the most words with `task`
/// first (a stable order otherwise). A small model leans towards the first tool it is shown,
/// so the one that fits the task is listed, and used in the example, first.
pub fn rank_tools(tools: &[ToolSpec], task: &str) -> Vec<ToolSpec> {
    let task = words(task);
    let mut ranked: Vec<(usize, &ToolSpec)> = tools
        .iter()
        .map(|t| {
            let mut known = words(&t.description);
            known.extend(words(&t.name.replace(['_', '-'], " ")));
            (known.intersection(&task).count(), t)
        })
        .collect();
    ranked.sort_by_key(|(score, _)| std::cmp::Reverse(*score));
    ranked.into_iter().map(|(_, t)| t.clone()).collect()
}

/// What a constrained step tells the model, after its system prompt: the offered tools (the
/// ones that fit `task` best first) and the action format. With no tools, only the answer
/// format.
pub fn action_instructions(tools: &[ToolSpec], task: Option<&str>) -> String {
    if tools.is_empty() {
        return "Reply with your final answer as one JSON object: {\"answer\": \"...\"}".into();
    }
    let as_tool = answer_as_tool(tools);
    let tools = rank_tools(tools, task.unwrap_or_default());
    let mut out = String::from("Tools:\n");
    for t in &tools {
        let _ = writeln!(out, "- {}", signature(t));
    }
    if as_tool {
        let _ = writeln!(
            out,
            "- {ANSWER_TOOL}(text: string) \u{2014} Give your final answer."
        );
        out.push_str("Reply with one JSON object: ");
        out.push_str(&example(&tools[0]));
    } else {
        out.push_str("Reply with one JSON object. To use a tool: ");
        out.push_str(&example(&tools[0]));
        out.push_str("\nWhen you know the answer: {\"answer\": \"...\"}");
    }
    out
}

/// How a tool call reads in a constrained transcript: the action object the model wrote.
pub fn call_text(call: &ToolCall) -> String {
    let args = serde_json::from_str::<Json>(call.arguments.trim())
        .unwrap_or_else(|_| Json::Object(Map::new()));
    let head = format!(
        "{{\"tool\": {}, \"arguments\": ",
        Json::from(call.name.as_str())
    );
    format!("{head}{}}}", spaced(&args))
}

/// An answer as the action object the model wrote.
pub fn answer_text(answer: &str) -> String {
    format!("{{\"answer\": {}}}", Json::from(answer))
}

/// JSON text with the grammar's fixed whitespace (`": "` and `", "`).
fn spaced(v: &Json) -> String {
    match v {
        Json::Object(m) => {
            let parts: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}: {}", Json::from(k.as_str()), spaced(v)))
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
        Json::Array(items) => {
            let parts: Vec<String> = items.iter().map(spaced).collect();
            format!("[{}]", parts.join(", "))
        }
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Reading a reply

/// Keys that name the tool of a call.
const NAME_KEYS: [&str; 5] = ["tool", "name", "action", "function", "tool_name"];
/// Keys that hold a call's arguments.
const ARG_KEYS: [&str; 5] = ["arguments", "args", "parameters", "input", "tool_input"];
/// Tool names a model uses for the final answer.
const ANSWER_NAMES: [&str; 4] = ["answer", "final_answer", "final", "respond"];

/// Read one action from a reply's text against the offered `tools`.
///
/// Text holding no JSON object is taken as the answer (a provider that ignored the
/// constraint). A JSON object that is neither a call nor an answer, a call to a tool not
/// offered, or arguments that do not match the tool's schema are an [`InvalidAction`].
pub fn parse_action(content: &str, tools: &[ToolSpec]) -> Result<Action, InvalidAction> {
    let text = unwrap_text(content);
    let Some(start) = text.find('{') else {
        return Ok(Action::Answer(content.trim().to_owned()));
    };
    let mut stream = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Json>();
    match stream.next() {
        Some(Ok(Json::Object(obj))) => from_object(obj, tools),
        Some(Ok(_)) => Err(invalid("the reply is not one JSON object")),
        Some(Err(e)) => match salvage_answer(&text[start..]) {
            Some(a) => Ok(Action::Answer(a)),
            None if text[..start].trim().is_empty() => {
                Err(invalid(format!("the reply is not valid JSON ({e})")))
            }
            // Prose with a stray brace: the prose is the answer.
            None => Ok(Action::Answer(content.trim().to_owned())),
        },
        None => Ok(Action::Answer(content.trim().to_owned())),
    }
}

/// The text inside a ```fence or `<tool_call>` tags, if the reply has one.
fn unwrap_text(content: &str) -> &str {
    let t = content.trim();
    if let Some(inner) = t.strip_prefix("<tool_call>") {
        return inner.split("</tool_call>").next().unwrap_or(inner).trim();
    }
    if let Some(after) = t.strip_prefix("```") {
        let body = after.split_once('\n').map_or(after, |(_, b)| b);
        return body.split("```").next().unwrap_or(body).trim();
    }
    t
}

/// The answer in an object cut off by the token limit: `{"answer": "text…` without its end.
fn salvage_answer(text: &str) -> Option<String> {
    let compact: String = text
        .chars()
        .filter(|c| !c.is_whitespace())
        .take(64)
        .collect();
    let key = if compact.starts_with("{\"tool\":\"answer\"") {
        "\"text\""
    } else {
        "\"answer\""
    };
    let at = text.find(key)?;
    let rest = text[at + key.len()..].trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let body = rest.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => {}
                Some(other) => out.push(other),
                None => break,
            },
            c => out.push(c),
        }
    }
    let out = out.trim().to_owned();
    (!out.is_empty()).then_some(out)
}

fn answer_of(v: &Json) -> String {
    match v {
        Json::String(s) => s.trim().to_owned(),
        Json::Object(m) => ["answer", "text", "content", "result"]
            .iter()
            .find_map(|k| m.get(*k))
            .map_or_else(|| v.to_string(), answer_of),
        other => other.to_string(),
    }
}

fn from_object(mut obj: Map<String, Json>, tools: &[ToolSpec]) -> Result<Action, InvalidAction> {
    // OpenAI's own shape written as text: {"function": {"name", "arguments"}}.
    if let Some(Json::Object(f)) = obj.get("function") {
        if f.contains_key("name") {
            let f = f.clone();
            obj = f;
        }
    }
    let name_key = NAME_KEYS
        .iter()
        .find(|k| obj.get(**k).is_some_and(Json::is_string));
    let Some(name_key) = name_key else {
        if let Some(a) = obj.get("answer") {
            return Ok(Action::Answer(answer_of(a)));
        }
        return Err(invalid(
            "the object names no tool and gives no answer; reply {\"tool\": …, \"arguments\": {…}} or {\"answer\": …}",
        ));
    };
    let name = obj
        .get(*name_key)
        .and_then(Json::as_str)
        .unwrap_or_default()
        .trim()
        .to_owned();
    let args = match ARG_KEYS.iter().find_map(|k| obj.get(*k)) {
        Some(Json::String(s)) => match serde_json::from_str::<Json>(s) {
            Ok(v @ Json::Object(_)) => v,
            _ => Json::String(s.clone()),
        },
        Some(Json::Null) | None => {
            // Arguments written flat beside the name.
            let mut flat = obj.clone();
            flat.remove(*name_key);
            Json::Object(flat)
        }
        Some(v) => v.clone(),
    };
    let Some(tool) = tools.iter().find(|t| t.name == name) else {
        if ANSWER_NAMES.contains(&name.to_ascii_lowercase().as_str()) {
            return Ok(Action::Answer(answer_of(&args)));
        }
        if let Some(a) = obj.get("answer") {
            return Ok(Action::Answer(answer_of(a)));
        }
        let offered: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
        return Err(invalid(if offered.is_empty() {
            format!("no tools are offered now (not even `{name}`); give your answer")
        } else {
            format!(
                "there is no tool `{name}`; the tools are {}",
                offered.join(", ")
            )
        }));
    };
    check(&args, &parameters(tool), "arguments", 0)
        .map_err(|why| invalid(format!("{}: {why}", tool.name)))?;
    Ok(Action::Call(ToolCall {
        id: String::new(),
        name: tool.name.clone(),
        arguments: args.to_string(),
    }))
}

/// Check `v` against the parts of `schema` that matter for a call: types, required keys,
/// enums and consts (formats, patterns and bounds are the tool's business).
fn check(v: &Json, schema: &Json, at: &str, depth: usize) -> Result<(), String> {
    let Some(s) = schema.as_object() else {
        return Ok(());
    };
    if depth > MAX_SCHEMA_DEPTH {
        return Ok(());
    }
    if let Some(c) = s.get("const") {
        if v != c {
            return Err(format!("{at} must be {c}"));
        }
    }
    if let Some(Json::Array(options)) = s.get("enum") {
        if !options.contains(v) {
            let list: Vec<String> = options.iter().map(Json::to_string).collect();
            return Err(format!("{at} must be one of {}", list.join(", ")));
        }
    }
    let types: Vec<&str> = match s.get("type") {
        Some(Json::String(t)) => vec![t.as_str()],
        Some(Json::Array(ts)) => ts.iter().filter_map(Json::as_str).collect(),
        _ if s.contains_key("properties") => vec!["object"],
        _ => Vec::new(),
    };
    if !types.is_empty() && !types.iter().any(|t| is_type(v, t)) {
        return Err(format!("{at}: must be of type {}", types.join(" or ")));
    }
    if let Json::Object(m) = v {
        if let Some(Json::Array(required)) = s.get("required") {
            for k in required.iter().filter_map(Json::as_str) {
                if !m.contains_key(k) {
                    return Err(format!("{at}: missing the required `{k}`"));
                }
            }
        }
        if let Some(Json::Object(props)) = s.get("properties") {
            for (k, item) in m {
                match props.get(k) {
                    Some(p) => check(item, p, &format!("`{k}`"), depth + 1)?,
                    None if s.get("additionalProperties") == Some(&Json::Bool(false)) => {
                        return Err(format!("{at}: unknown key `{k}`"));
                    }
                    None => {}
                }
            }
        }
    }
    if let (Json::Array(items), Some(item)) = (v, s.get("items")) {
        for (i, x) in items.iter().enumerate() {
            check(x, item, &format!("{at}[{i}]"), depth + 1)?;
        }
    }
    Ok(())
}

fn is_type(v: &Json, t: &str) -> bool {
    match t {
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|x| x.fract() == 0.0),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentos_abi::LlmCapabilities;

    fn tool(name: &str, params: &str) -> ToolSpec {
        ToolSpec {
            name: name.into(),
            description: format!("the {name} tool"),
            parameters: params.into(),
        }
    }

    fn calc() -> ToolSpec {
        tool(
            "calc",
            r#"{"type":"object","properties":{"expr":{"type":"string"}},"required":["expr"]}"#,
        )
    }

    fn add() -> ToolSpec {
        tool(
            "add",
            r#"{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"integer"},"note":{"type":"string"}},"required":["a","b"]}"#,
        )
    }

    #[test]
    fn auto_prefers_native_then_grammar_then_schema() {
        let caps = |native_tools, grammar, json_schema| LlmCapabilities {
            native_tools,
            grammar,
            json_schema,
            context_tokens: None,
        };
        assert_eq!(
            Actions::Auto.resolve(&caps(true, true, true)),
            Actions::Native
        );
        assert_eq!(
            Actions::Auto.resolve(&caps(false, true, true)),
            Actions::Grammar
        );
        assert_eq!(
            Actions::Auto.resolve(&caps(false, false, true)),
            Actions::JsonSchema
        );
        assert_eq!(
            Actions::Auto.resolve(&caps(false, false, false)),
            Actions::Native
        );
        assert_eq!(
            Actions::JsonSchema.resolve(&caps(true, true, true)),
            Actions::JsonSchema
        );
        assert!(Actions::Grammar.is_constrained() && !Actions::Native.is_constrained());
    }

    #[test]
    fn the_grammar_offers_each_tool_and_the_answer() {
        let g = action_gbnf(&[calc(), add()]);
        assert!(
            g.starts_with("root ::= call-calc | call-add | answer\n"),
            "{g}"
        );
        assert!(
            g.contains(r#"call-calc ::= "{\"tool\": \"calc\", \"arguments\": " calc-args "}""#),
            "{g}"
        );
        assert!(
            g.contains(r#"calc-args ::= "{" "\"expr\": " string "}""#),
            "{g}"
        );
        assert!(
            g.contains(r#"add-args ::= "{" "\"a\": " integer ", " "\"b\": " integer (", " "\"note\": " string)? "}""#),
            "{g}"
        );
        assert!(
            g.contains(
                r#"answer ::= "{\"tool\": \"answer\", \"arguments\": {\"text\": " string "}}""#
            ),
            "{g}"
        );
        let only_answer = action_gbnf(&[]);
        assert!(
            only_answer
                .starts_with("root ::= answer\nanswer ::= \"{\\\"answer\\\": \" string \"}\"\n"),
            "{only_answer}"
        );
        // A real tool called `answer` keeps its name; the answer is the plain object then.
        let real = action_gbnf(&[tool("answer", "{}")]);
        assert!(
            real.contains(r#"answer ::= "{\"answer\": " string "}""#),
            "{real}"
        );
        assert!(real.contains("call-answer ::="), "{real}");
        // Odd names and schemas still make a grammar with unique, valid rule names.
        let odd = action_gbnf(&[
            tool("9 lives!", "not json"),
            tool(
                "9_lives",
                r#"{"type":"object","properties":{"xs":{"type":"array","items":{"enum":["a","b"]}}}}"#,
            ),
        ]);
        assert!(odd.contains("call-9-lives ::="), "{odd}");
        assert!(odd.contains("call-9-lives-2 ::="), "{odd}");
        assert!(odd.contains(r#"("\"a\"" | "\"b\"")"#), "{odd}");
        for line in odd.lines() {
            let (name, _) = line.split_once(" ::= ").expect("a rule per line");
            assert!(name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        }
    }

    #[test]
    fn the_schema_is_any_of_the_calls_and_the_answer() {
        let s: Json = serde_json::from_str(&action_schema(&[calc()])).unwrap();
        let any = s["anyOf"].as_array().unwrap();
        assert_eq!(any.len(), 2);
        assert_eq!(any[0]["properties"]["tool"]["const"], "calc");
        assert_eq!(any[0]["properties"]["arguments"]["required"][0], "expr");
        assert_eq!(any[1]["properties"]["tool"]["const"], "answer");
        assert_eq!(any[1]["properties"]["arguments"]["required"][0], "text");
        let alone: Json = serde_json::from_str(&action_schema(&[])).unwrap();
        assert_eq!(alone["required"][0], "answer");
    }

    #[test]
    fn calls_and_answers_parse_in_their_many_spellings() {
        let tools = [calc(), add()];
        let call = |s: &str| match parse_action(s, &tools) {
            Ok(Action::Call(c)) => (c.name, c.arguments),
            other => panic!("{s}: {other:?}"),
        };
        let answer = |s: &str| match parse_action(s, &tools) {
            Ok(Action::Answer(a)) => a,
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(
            call(r#"{"tool": "calc", "arguments": {"expr": "1+2"}}"#),
            ("calc".into(), r#"{"expr":"1+2"}"#.into())
        );
        assert_eq!(
            call("```json\n{\"name\": \"add\", \"arguments\": \"{\\\"a\\\": 1, \\\"b\\\": 2}\"}\n```").0,
            "add"
        );
        assert_eq!(
            call(r#"<tool_call>{"function": {"name": "calc", "arguments": {"expr": "2"}}}</tool_call>"#).1,
            r#"{"expr":"2"}"#
        );
        assert_eq!(
            call(r#"I'll compute it. {"tool": "calc", "expr": "3*3"}"#).1,
            r#"{"expr":"3*3"}"#
        );
        assert_eq!(answer(r#"{"answer": "Paris"}"#), "Paris");
        assert_eq!(
            answer(r#"{"tool": "answer", "arguments": {"text": "42"}}"#),
            "42"
        );
        assert_eq!(answer("The capital is Paris."), "The capital is Paris.");
        assert_eq!(
            answer(r#"{"answer": "Tokyo is the cap"#),
            "Tokyo is the cap"
        );
        assert_eq!(answer("5 {words}"), "5 {words}");
    }

    #[test]
    fn calls_outside_the_offer_or_their_schema_are_invalid() {
        let tools = [calc(), add()];
        let why = |s: &str| match parse_action(s, &tools) {
            Err(e) => e.why,
            other => panic!("{s}: {other:?}"),
        };
        assert!(why(r#"{"tool": "rm", "arguments": {}}"#).contains("no tool `rm`"));
        assert!(why(r#"{"tool": "calc", "arguments": {}}"#).contains("required `expr`"));
        assert!(why(r#"{"tool": "add", "arguments": {"a": "one", "b": 2}}"#)
            .contains("`a`: must be of type integer"));
        assert!(why(r#"{"tool": "calc", "arguments": "1+2"}"#)
            .contains("arguments: must be of type object"));
        assert!(why(r#"{"thought": "hmm"}"#).contains("names no tool"));
        assert!(why(r#"{"tool": "calc", "arguments": {"expr": "1"#).contains("not valid JSON"));
        assert!(why("{1, 2}").contains("not valid JSON"));
        match parse_action(r#"{"tool": "calc", "arguments": {"expr": "1"}}"#, &[]) {
            Err(e) => assert!(e.why.contains("no tools are offered")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hostile_text_never_panics() {
        let tools = [calc()];
        for s in [
            "",
            "{",
            "}{",
            "{\"answer\":",
            "{\"answer\": \"\\",
            "{\"tool\": 5}",
            "```",
            "<tool_call>",
            "{\"function\": {\"name\": 3}}",
            &"{".repeat(10_000),
            &format!("{{\"answer\": \"{}\"}}", "é".repeat(1000)),
        ] {
            let _ = parse_action(s, &tools);
        }
    }

    #[test]
    fn transcripts_read_as_the_actions_the_model_writes() {
        let c = ToolCall {
            id: "x".into(),
            name: "calc".into(),
            arguments: r#"{"expr":"1+2"}"#.into(),
        };
        assert_eq!(
            call_text(&c),
            r#"{"tool": "calc", "arguments": {"expr": "1+2"}}"#
        );
        assert_eq!(answer_text("a \"b\""), r#"{"answer": "a \"b\""}"#);
        let text = action_instructions(&[calc()], None);
        assert!(
            text.contains("- calc(expr: string) \u{2014} the calc tool"),
            "{text}"
        );
        assert!(
            text.contains(r#"{"tool": "calc", "arguments": {"expr": "..."}}"#),
            "{text}"
        );
        assert!(action_instructions(&[], None).contains("{\"answer\": \"...\"}"));
    }

    #[test]
    fn the_tool_that_fits_the_task_is_listed_first() {
        let lookup = ToolSpec {
            name: "lookup".into(),
            description: "Look up a fact, e.g. 'capital of France'.".into(),
            ..ToolSpec::default()
        };
        let words = ToolSpec {
            name: "word_count".into(),
            description: "Count the words of a text.".into(),
            ..ToolSpec::default()
        };
        let arith = ToolSpec {
            name: "calc".into(),
            description: "Evaluate an integer arithmetic expression (+ - * /).".into(),
            ..ToolSpec::default()
        };
        let tools = [arith, lookup, words];
        let first = |task: &str| rank_tools(&tools, task)[0].name.clone();
        assert_eq!(first("What is the capital of Japan?"), "lookup");
        assert_eq!(first("How many words are in 'a b c'?"), "word_count");
        assert_eq!(first("Compute (17 + 25) * 3."), "calc");
        assert_eq!(
            first("Tell me a joke."),
            "calc",
            "no fit keeps the offered order"
        );
        let text = action_instructions(&tools, Some("What is the capital of Japan?"));
        assert!(text.starts_with("Tools:\n- lookup("), "{text}");
        assert!(
            text.contains("- answer(text: string) \u{2014} Give your final answer."),
            "{text}"
        );
        assert!(
            text.ends_with(r#"Reply with one JSON object: {"tool": "lookup", "arguments": {}}"#),
            "{text}"
        );
    }
}
