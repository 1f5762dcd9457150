//! The prompt smith: have the model write a domain system prompt from a [`Brief`], improve one
//! from feedback, or write one from the lessons long-term memory holds for a domain (the seed's
//! `forgePrompt`, `refinePrompt` and `forgeFromMemory`).
//!
//! The model's reply is untrusted: [`clean_prompt`] trims it and unwraps a code fence or a pair
//! of quotes around the whole reply (the model is told not to add them, and some do anyway); a
//! reply that is empty after that is [`SmithError::EmptyPrompt`] rather than a blank prompt that
//! would silently replace a working one.

use crate::llm::{complete_text, Chat, ChatError};
use crate::longmem::LongMemory;
use thiserror::Error;

/// The smith's system prompt (the seed's wording).
pub const SMITH_SYSTEM: &str = "You are a world-class prompt engineer. Write a SYSTEM PROMPT for \
an autonomous, tool-using agent specialized in the given domain. It must: state the persona + \
quality bar; prescribe a ground\u{2192}act\u{2192}verify workflow; be concrete and concise \
(\u{2264}200 words); and bake in any supplied lessons. Output ONLY the system prompt text \u{2014} \
no preamble, no quotes.";

/// What [`refine_prompt`] adds to [`SMITH_SYSTEM`] (the seed's wording).
pub const REFINE_SUFFIX: &str =
    " You are given a CURRENT prompt and FEEDBACK; return an improved version.";

/// The default completion bound of a forge or a refinement.
pub const DEFAULT_SMITH_MAX_TOKENS: u32 = 600;

/// How many lessons [`forge_from_memory`] recalls by default.
pub const DEFAULT_FORGE_RECALL: usize = 8;

/// What the smith is asked to write a prompt for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Brief {
    /// The domain.
    pub domain: String,
    /// What agents in it are for.
    pub goal: Option<String>,
    /// The names of the tools they will have.
    pub tools: Vec<String>,
    /// Lessons to bake in.
    pub lessons: Vec<String>,
}

impl Brief {
    /// A brief for `domain` with nothing else.
    pub fn new(domain: impl Into<String>) -> Self {
        Brief {
            domain: domain.into(),
            ..Brief::default()
        }
    }

    /// The brief as the smith reads it: `Domain:`, then `Goal:`, `Available tools:` and
    /// `Lessons to bake in:` when present.
    pub fn text(&self) -> String {
        let mut parts = vec![format!("Domain: {}", self.domain)];
        if let Some(goal) = self.goal.as_deref().filter(|g| !g.is_empty()) {
            parts.push(format!("Goal: {goal}"));
        }
        if !self.tools.is_empty() {
            parts.push(format!("Available tools: {}", self.tools.join(", ")));
        }
        if !self.lessons.is_empty() {
            let list = self
                .lessons
                .iter()
                .map(|l| format!("- {l}"))
                .collect::<Vec<_>>()
                .join("\n");
            parts.push(format!("Lessons to bake in:\n{list}"));
        }
        parts.join("\n")
    }
}

/// Why the smith produced no prompt.
#[derive(Clone, Debug, Error, PartialEq)]
pub enum SmithError {
    /// The completion failed.
    #[error("prompt smith: {0}")]
    Chat(#[from] ChatError),
    /// The model answered nothing usable.
    #[error("prompt smith: the model answered an empty prompt")]
    EmptyPrompt,
}

/// The prompt in a model's reply: trimmed, with one enclosing code fence (and its language tag)
/// or one pair of enclosing quotes removed.
pub fn clean_prompt(reply: &str) -> String {
    let mut text = reply.trim();
    if let Some(inner) = text.strip_prefix("```") {
        let inner = inner.strip_suffix("```").unwrap_or(inner);
        // The rest of the opening line is a language tag.
        text = match inner.split_once('\n') {
            Some((tag, body)) if !tag.trim().contains(' ') => body,
            _ => inner,
        }
        .trim();
    }
    for (open, close) in [('"', '"'), ('\'', '\''), ('\u{201c}', '\u{201d}')] {
        if text.chars().count() >= 2 && text.starts_with(open) && text.ends_with(close) {
            let inner = &text[open.len_utf8()..text.len() - close.len_utf8()];
            // Only a wrapping pair: quotes inside mean the text itself quotes something.
            if !inner.contains(open) && !inner.contains(close) {
                text = inner.trim();
            }
            break;
        }
    }
    text.to_owned()
}

fn usable(reply: &str) -> Result<String, SmithError> {
    let p = clean_prompt(reply);
    if p.is_empty() {
        Err(SmithError::EmptyPrompt)
    } else {
        Ok(p)
    }
}

/// Have the model write a system prompt for `brief`.
pub async fn forge_prompt<C: Chat>(
    chat: &C,
    brief: &Brief,
    max_tokens: u32,
) -> Result<String, SmithError> {
    let reply = complete_text(chat, SMITH_SYSTEM, brief.text(), max_tokens).await?;
    usable(&reply)
}

/// Have the model improve `base` given `feedback`.
pub async fn refine_prompt<C: Chat>(
    chat: &C,
    base: &str,
    feedback: &str,
    max_tokens: u32,
) -> Result<String, SmithError> {
    let system = format!("{SMITH_SYSTEM}{REFINE_SUFFIX}");
    let user = format!("CURRENT PROMPT:\n{base}\n\nFEEDBACK:\n{feedback}");
    let reply = complete_text(chat, &system, user, max_tokens).await?;
    usable(&reply)
}

/// What [`forge_from_memory`] adds to the domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForgeOpts {
    /// The agents' goal (also part of the recall query).
    pub goal: Option<String>,
    /// The names of their tools.
    pub tools: Vec<String>,
    /// Lessons to recall.
    pub recall: usize,
    /// The completion bound.
    pub max_tokens: u32,
}

impl Default for ForgeOpts {
    fn default() -> Self {
        ForgeOpts {
            goal: None,
            tools: Vec::new(),
            recall: DEFAULT_FORGE_RECALL,
            max_tokens: DEFAULT_SMITH_MAX_TOKENS,
        }
    }
}

/// Recall the lessons memory holds for `domain` (and the goal; their uses are counted) and have
/// the model write a prompt that bakes them in.
pub async fn forge_from_memory<C: Chat>(
    chat: &C,
    domain: &str,
    memory: &mut LongMemory,
    opts: &ForgeOpts,
) -> Result<String, SmithError> {
    let query = match opts.goal.as_deref() {
        Some(goal) if !goal.is_empty() => format!("{domain} {goal}"),
        _ => domain.to_owned(),
    };
    let lessons = memory
        .recall(&query, opts.recall)
        .into_iter()
        .map(|l| l.text)
        .collect();
    let brief = Brief {
        domain: domain.to_owned(),
        goal: opts.goal.clone(),
        tools: opts.tools.clone(),
        lessons,
    };
    forge_prompt(chat, &brief, opts.max_tokens).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn briefs_read_like_the_seed() {
        assert_eq!(Brief::new("sql").text(), "Domain: sql");
        let b = Brief {
            domain: "sql".into(),
            goal: Some("fast queries".into()),
            tools: vec!["psql".into(), "explain".into()],
            lessons: vec!["Index foreign keys".into()],
        };
        assert_eq!(
            b.text(),
            "Domain: sql\nGoal: fast queries\nAvailable tools: psql, explain\nLessons to bake in:\n- Index foreign keys"
        );
    }

    #[test]
    fn replies_are_unwrapped() {
        assert_eq!(clean_prompt("  You are X.  "), "You are X.");
        assert_eq!(clean_prompt("```text\nYou are X.\n```"), "You are X.");
        assert_eq!(clean_prompt("```\nYou are X.\n```"), "You are X.");
        assert_eq!(clean_prompt("\"You are X.\""), "You are X.");
        assert_eq!(clean_prompt("\u{201c}You are X.\u{201d}"), "You are X.");
        assert_eq!(
            clean_prompt("\"Say \"hi\" first.\""),
            "\"Say \"hi\" first.\"",
            "inner quotes: not a wrapping pair"
        );
        assert_eq!(clean_prompt("```"), "");
        assert_eq!(clean_prompt("\""), "\"");
        assert_eq!(clean_prompt("   "), "");
    }
}
