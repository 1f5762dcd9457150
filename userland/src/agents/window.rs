//! Prompts that fit the model's context window.
//!
//! Context memory pages a transcript under the process's memory ceiling, but a small model's
//! window can be smaller still. When the window is known (the LLM device reports it, or the
//! turn's spec says), each step's prompt is fitted to it before it is sent: first the oldest
//! observations are summarized (cut to their opening, with a note of what went), then the oldest
//! exchanges are dropped (a call and its results go together, so pairing survives), and only
//! then are the longest remaining messages cut. The system prompt (which carries the step's
//! tools and action format), the task and the newest message are never dropped, and the step's
//! grammar or schema travels outside the prompt, so nothing here can truncate it.

use agentos_abi::{ChatMessage, Role, ToolSpec};

/// The share of the window a prompt may fill (the rest is a margin for the chat template and
/// for the estimate's error on a real tokenizer), in percent.
const FILL_PERCENT: u64 = 85;

/// Completion tokens kept free when the turn sets no `max_tokens`.
pub const DEFAULT_COMPLETION_RESERVE: u32 = 512;

/// An observation longer than this many characters is summarized first.
const SUMMARY_CHARS: usize = 160;

/// A message is never cut below this many characters.
const MIN_CUT_CHARS: usize = 200;

/// The seed's token estimate, defined once in `abi` so every layer counts alike.
pub use agentos_abi::device::estimate_tokens;

/// The estimated prompt tokens of one message (its text, its calls, and the template's few).
pub fn message_tokens(m: &ChatMessage) -> u64 {
    4 + estimate_tokens(&m.content)
        + m.tool_calls
            .iter()
            .map(|c| 4 + estimate_tokens(&c.name) + estimate_tokens(&c.arguments))
            .sum::<u64>()
}

/// The estimated prompt tokens of the tools offered natively.
pub fn tools_tokens(tools: &[ToolSpec]) -> u64 {
    tools
        .iter()
        .map(|t| {
            8 + estimate_tokens(&t.name)
                + estimate_tokens(&t.description)
                + estimate_tokens(&t.parameters)
        })
        .sum()
}

/// The prompt budget of a window of `context` tokens: its fill share, less the completion
/// reserve (at most half the window) and `fixed` tokens sent beside the messages.
pub fn prompt_budget(context: u32, max_tokens: Option<u32>, fixed: u64) -> u64 {
    let context = u64::from(context);
    let reserve = u64::from(max_tokens.unwrap_or(DEFAULT_COMPLETION_RESERVE)).min(context / 2);
    (context * FILL_PERCENT / 100)
        .saturating_sub(reserve)
        .saturating_sub(fixed)
}

/// What fitting did to a prompt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fitted {
    /// Observations summarized.
    pub summarized: usize,
    /// Messages dropped.
    pub dropped: usize,
    /// Messages cut to fit.
    pub cut: usize,
}

impl Fitted {
    /// Whether the prompt was changed at all.
    pub fn changed(&self) -> bool {
        self.summarized + self.dropped + self.cut > 0
    }
}

/// Cut `text` to its first `chars` characters with a note of how many went.
fn cut_text(text: &str, chars: usize, why: &str) -> String {
    match text.char_indices().nth(chars) {
        None => text.to_owned(),
        Some((at, _)) => {
            let dropped = text[at..].chars().count();
            format!("{}\u{2026} [{dropped} chars {why}]", &text[..at])
        }
    }
}

/// Fit `messages` (a prompt: pairing already done) into `budget` estimated tokens.
///
/// The first message when it is a system message, the last message equal to `task` (the turn's
/// task) and the newest message are kept whole unless nothing else is left to shrink; a
/// message that was dropped is replaced by one note saying how many went.
pub fn fit(
    messages: Vec<ChatMessage>,
    budget: u64,
    task: Option<&str>,
) -> (Vec<ChatMessage>, Fitted) {
    let mut fitted = Fitted::default();
    let total =
        |ms: &[Option<ChatMessage>]| -> u64 { ms.iter().flatten().map(message_tokens).sum() };
    let mut ms: Vec<Option<ChatMessage>> = messages.into_iter().map(Some).collect();
    if total(&ms) <= budget || ms.is_empty() {
        return (ms.into_iter().flatten().collect(), fitted);
    }
    let n = ms.len();
    let system = usize::from(ms[0].as_ref().is_some_and(|m| m.role == Role::System));
    let task_at = task.and_then(|t| {
        ms.iter().rposition(|m| {
            m.as_ref()
                .is_some_and(|m| m.role == Role::User && m.content == t)
        })
    });
    let protected = |i: usize| i < system || Some(i) == task_at || i + 1 == n;
    // Units: an assistant message with calls and the results that follow it go together.
    let mut units: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        if ms[i].as_ref().is_some_and(|m| !m.tool_calls.is_empty()) {
            while j < n && ms[j].as_ref().is_some_and(|m| m.role == Role::Tool) {
                j += 1;
            }
        }
        units.push((i, j));
        i = j;
    }
    let last_unit = units.len().saturating_sub(1);

    // 1. Summarize old observations, oldest first (never the newest unit's).
    'summarize: for &(a, b) in &units[..last_unit] {
        for slot in ms.iter_mut().take(b).skip(a) {
            let Some(m) = slot else { continue };
            if m.role == Role::Tool && m.content.chars().count() > SUMMARY_CHARS {
                m.content = cut_text(
                    &m.content,
                    SUMMARY_CHARS,
                    "elided to fit the context window",
                );
                fitted.summarized += 1;
            }
        }
        if total(&ms) <= budget {
            break 'summarize;
        }
    }

    // 2. Drop the oldest unprotected units; the first one's place takes a note.
    let note = |dropped: usize| {
        ChatMessage::user(format!(
            "[{dropped} earlier messages were left out to fit the context window]"
        ))
    };
    let mut note_at = None;
    for &(a, b) in &units {
        if total(&ms) <= budget {
            break;
        }
        if (a..b).any(protected) {
            continue;
        }
        for slot in ms.iter_mut().take(b).skip(a) {
            *slot = None;
            fitted.dropped += 1;
        }
        let at = *note_at.get_or_insert(a);
        ms[at] = Some(note(fitted.dropped));
    }

    // 3. Cut the longest messages (the system prompt last of all). Every cut shortens a
    // message by at least the note it adds, and nothing is cut below the floor, so this ends.
    for _ in 0..64 {
        let sum = total(&ms);
        if sum <= budget {
            break;
        }
        let over = sum - budget;
        let longest = ms
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.as_ref().map(|m| (i, m.content.chars().count())))
            .filter(|(_, len)| *len > MIN_CUT_CHARS + 64)
            .max_by_key(|(i, len)| (usize::from(*i >= system), *len));
        let Some((i, len)) = longest else { break };
        let shrink = usize::try_from(over.saturating_mul(4)).unwrap_or(usize::MAX);
        let keep = len
            .saturating_sub(shrink.saturating_add(64))
            .max(MIN_CUT_CHARS);
        if let Some(m) = ms[i].as_mut() {
            m.content = cut_text(&m.content, keep, "cut to fit the context window");
        }
        fitted.cut += 1;
    }
    (ms.into_iter().flatten().collect(), fitted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentos_abi::ToolCall;

    fn call(id: &str) -> ChatMessage {
        ChatMessage::assistant_calls(
            "",
            vec![ToolCall {
                id: id.into(),
                name: "read".into(),
                arguments: "{}".into(),
            }],
        )
    }

    fn transcript(results: usize, size: usize) -> Vec<ChatMessage> {
        let mut ms = vec![ChatMessage::system("sys"), ChatMessage::user("the task")];
        for i in 0..results {
            let id = format!("c{i}");
            ms.push(call(&id));
            ms.push(ChatMessage::tool(&id, "read", "x".repeat(size)));
        }
        ms
    }

    fn tokens(ms: &[ChatMessage]) -> u64 {
        ms.iter().map(message_tokens).sum()
    }

    #[test]
    fn estimates_and_budgets() {
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("你好"), 3);
        assert_eq!(prompt_budget(4096, Some(96), 0), 4096 * 85 / 100 - 96);
        assert_eq!(prompt_budget(1000, None, 0), 850 - 500);
        assert_eq!(prompt_budget(100, Some(10), 1_000), 0);
    }

    #[test]
    fn a_prompt_that_fits_is_untouched() {
        let ms = transcript(2, 100);
        let (out, f) = fit(ms.clone(), 10_000, Some("the task"));
        assert_eq!((out, f.changed()), (ms, false));
    }

    #[test]
    fn old_observations_are_summarized_before_anything_is_dropped() {
        let ms = transcript(3, 2_000);
        let (out, f) = fit(ms.clone(), 700, Some("the task"));
        assert_eq!(f.dropped, 0, "{f:?}");
        assert_eq!(f.summarized, 2);
        assert_eq!(out.len(), ms.len());
        assert!(out[3].content.contains("elided to fit the context window"));
        assert_eq!(out[7].content, ms[7].content, "the newest result is whole");
        assert!(tokens(&out) <= 700);
    }

    #[test]
    fn then_the_oldest_exchanges_go_whole_and_the_task_stays() {
        let ms = transcript(12, 400);
        let (out, f) = fit(ms, 160, Some("the task"));
        assert!(f.dropped >= 2 && f.dropped % 2 == 0, "{f:?}");
        assert_eq!(out[0], ChatMessage::system("sys"));
        assert_eq!(out[1], ChatMessage::user("the task"));
        assert!(out[2].content.contains("earlier messages were left out"));
        // Every call still has its result right after it.
        for (i, m) in out.iter().enumerate() {
            if !m.tool_calls.is_empty() {
                assert_eq!(
                    out[i + 1].tool_call_id.as_deref(),
                    Some(m.tool_calls[0].id.as_str())
                );
            }
        }
        assert_eq!(out.last().map(|m| m.content.len()), Some(400));
        assert!(tokens(&out) <= 160, "{}", tokens(&out));
    }

    #[test]
    fn as_a_last_resort_long_messages_are_cut_but_never_below_a_floor() {
        let ms = vec![
            ChatMessage::system("s".repeat(100)),
            ChatMessage::user("t".repeat(4_000)),
        ];
        let (out, f) = fit(ms, 200, Some(&"t".repeat(4_000)));
        assert_eq!(f.cut, 1);
        assert!(out[1].content.contains("cut to fit the context window"));
        assert!(tokens(&out) <= 200, "{}", tokens(&out));
        // Nothing left to cut: it gives up rather than loop.
        let tiny = vec![ChatMessage::system("s".repeat(150)), ChatMessage::user("t")];
        let (out, _) = fit(tiny.clone(), 1, None);
        assert_eq!(out, tiny);
    }
}
