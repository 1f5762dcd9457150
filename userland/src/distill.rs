//! Distillation: turn a finished session into at most three reusable lessons and fold them into
//! long-term memory (the seed's `llmDistiller`, `parseLessons` and `learn`).
//!
//! [`LlmDistiller`] shows the model the session's transcript (system messages left out, the
//! last [`TRANSCRIPT_CHARS`] characters) under [`DISTILL_SYSTEM`] and parses the reply with
//! [`parse_lessons`]. The reply is hostile input: parsing never panics and keeps only lines that
//! look like a lesson (bullets and numbering stripped, control characters blanked, more than
//! [`MIN_LESSON_CHARS`] and at most [`MAX_LESSON_CHARS`] characters, no headings, no repeats), at most
//! [`MAX_LESSONS`] of them. [`learn`] stores each through [`LongMemory::remember`], which
//! deduplicates against everything already learned.

use crate::llm::{complete_text, Chat, ChatError};
use crate::longmem::{normalize, LongMemory, StoreError};
use agentos_abi::{ChatMessage, Role};
use std::future::Future;
use thiserror::Error;

/// The distiller's system prompt (the seed's wording).
pub const DISTILL_SYSTEM: &str = "You distill a finished agent session into AT MOST 3 short, \
REUSABLE lessons \u{2014} concrete tactics or gotchas that would help on a similar task next time \
(NOT a recap of what happened). One per line, imperative, \u{2264}140 chars, no numbering. If \
nothing is genuinely reusable, output nothing.";

/// At most this many lessons come out of one session.
pub const MAX_LESSONS: usize = 3;

/// A lesson has more than this many characters.
pub const MIN_LESSON_CHARS: usize = 8;

/// A line longer than this (twice what the model is asked for) is prose, not a lesson.
pub const MAX_LESSON_CHARS: usize = 280;

/// The distiller sees the last this-many characters of the transcript.
pub const TRANSCRIPT_CHARS: usize = 6_000;

/// The default completion bound of a distillation.
pub const DEFAULT_DISTILL_MAX_TOKENS: u32 = 400;

/// The lessons in a model's reply: one per line, list markers (`-`, `*`, `•`, `+`, digits,
/// `.`, `)`) and surrounding space stripped, control characters blanked and inner whitespace
/// collapsed; lines of at most [`MIN_LESSON_CHARS`] or more than [`MAX_LESSON_CHARS`]
/// characters dropped, headings (lines ending in `:`, such as a "Here are the lessons:"
/// preamble) dropped, repeats (after normalization) dropped; the first [`MAX_LESSONS`] kept.
pub fn parse_lessons(text: &str) -> Vec<String> {
    let is_marker = |c: char| {
        matches!(c, '-' | '*' | '\u{2022}' | '+' | '.' | ')')
            || c.is_ascii_digit()
            || c.is_whitespace()
    };
    let mut out: Vec<String> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for line in text.lines() {
        if out.len() == MAX_LESSONS {
            break;
        }
        let cleaned: String = line
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let lesson = cleaned
            .trim_start_matches(is_marker)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let n = lesson.chars().count();
        if n <= MIN_LESSON_CHARS || n > MAX_LESSON_CHARS || lesson.ends_with(':') {
            continue;
        }
        let key = normalize(&lesson);
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        out.push(lesson);
    }
    out
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

/// The transcript a distiller reads: every non-system message as `role: content`, one per
/// line, cut to its last [`TRANSCRIPT_CHARS`] characters.
pub fn session_transcript(messages: &[ChatMessage]) -> String {
    let full = messages
        .iter()
        .filter(|m| m.role != Role::System)
        .map(|m| format!("{}: {}", role_name(m.role), m.content))
        .collect::<Vec<_>>()
        .join("\n");
    let n = full.chars().count();
    if n <= TRANSCRIPT_CHARS {
        return full;
    }
    full.chars().skip(n - TRANSCRIPT_CHARS).collect()
}

/// Turns a finished session into candidate lessons.
///
/// A plain closure `Fn(&[ChatMessage]) -> Vec<String>` is a distiller.
pub trait Distiller: Send + Sync {
    /// The lessons of the session `messages`.
    fn distill(
        &self,
        messages: &[ChatMessage],
    ) -> impl Future<Output = Result<Vec<String>, ChatError>> + Send;
}

impl<F> Distiller for F
where
    F: Fn(&[ChatMessage]) -> Vec<String> + Send + Sync,
{
    fn distill(
        &self,
        messages: &[ChatMessage],
    ) -> impl Future<Output = Result<Vec<String>, ChatError>> + Send {
        let lessons = self(messages);
        async move { Ok(lessons) }
    }
}

/// The model-backed distiller (the seed's `llmDistiller`).
#[derive(Clone, Debug)]
pub struct LlmDistiller<C> {
    chat: C,
    max_tokens: u32,
}

/// A distiller asking `chat`, with completions bounded by [`DEFAULT_DISTILL_MAX_TOKENS`].
pub fn llm_distiller<C: Chat>(chat: C) -> LlmDistiller<C> {
    LlmDistiller {
        chat,
        max_tokens: DEFAULT_DISTILL_MAX_TOKENS,
    }
}

impl<C: Chat> LlmDistiller<C> {
    /// Bound completions by `max_tokens`.
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = max_tokens;
        self
    }
}

impl<C: Chat> Distiller for LlmDistiller<C> {
    fn distill(
        &self,
        messages: &[ChatMessage],
    ) -> impl Future<Output = Result<Vec<String>, ChatError>> + Send {
        let transcript = session_transcript(messages);
        async move {
            // An empty session has nothing to teach: no model call, no cost.
            if transcript.trim().is_empty() {
                return Ok(Vec::new());
            }
            let text =
                complete_text(&self.chat, DISTILL_SYSTEM, transcript, self.max_tokens).await?;
            Ok(parse_lessons(&text))
        }
    }
}

/// Why [`learn`] failed.
#[derive(Debug, Error)]
pub enum LearnError {
    /// The distiller failed.
    #[error("distill: {0}")]
    Distill(#[source] ChatError),
    /// Storing a lesson failed (the lessons before it are kept).
    #[error("store: {0}")]
    Store(#[source] StoreError),
}

/// Distill `messages` and remember each lesson with `tags`; the number of lessons that were new.
pub async fn learn<D: Distiller, T: AsRef<str>>(
    mem: &mut LongMemory,
    distiller: &D,
    messages: &[ChatMessage],
    tags: &[T],
) -> Result<usize, LearnError> {
    let lessons = distiller
        .distill(messages)
        .await
        .map_err(LearnError::Distill)?;
    let mut added = 0;
    for lesson in lessons {
        if mem
            .remember(&lesson, tags)
            .map_err(LearnError::Store)?
            .is_some()
        {
            added += 1;
        }
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_keeps_the_seed_wording() {
        assert_eq!(
            DISTILL_SYSTEM,
            "You distill a finished agent session into AT MOST 3 short, REUSABLE lessons \u{2014} concrete tactics or gotchas that would help on a similar task next time (NOT a recap of what happened). One per line, imperative, \u{2264}140 chars, no numbering. If nothing is genuinely reusable, output nothing."
        );
    }

    #[test]
    fn transcripts_skip_system_and_keep_the_tail() {
        let msgs = vec![
            ChatMessage::system("sys"),
            ChatMessage::user("hi"),
            ChatMessage::assistant("yo"),
        ];
        assert_eq!(session_transcript(&msgs), "user: hi\nassistant: yo");
        let long = vec![ChatMessage::user("é".repeat(10_000))];
        let t = session_transcript(&long);
        assert_eq!(t.chars().count(), TRANSCRIPT_CHARS);
        assert!(t.chars().all(|c| c == 'é'));
    }
}
