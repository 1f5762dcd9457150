//! The request packet (PLURNK.md §3.8): named sections in two slots, measured in tokens,
//! with the budget readout of §3.5.
//!
//! System slot: `definition` (the grammar sheet), `tools`, `schemes`, `system-policy`,
//! `project-policy`, `budget` (last: "budget is law"). User slot: `prompt`, `errors`, `log`,
//! `requirements` (last, closest to the assistant turn). The wire form is two chat
//! messages: the system sections joined, the user sections joined.
//!
//! **Invariants:** the packet is a pure function of its input; `tokens` is the sum of its
//! sections' tokens; the sections that do not change within a loop are measured once.
//!
//! **API boundary:** [`Section`], [`Packet`], [`PacketInput`], [`build`].

use std::fmt::Write as _;

use agentos_abi::device::ChatMessage;
use serde_json::json;

use super::count_tokens;
use super::render::RenderedRow;
use crate::store::LogRow;

/// Which chat message a section goes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// The system message.
    System,
    /// The user message.
    User,
}

/// One named section.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    /// Its name (`definition`, `log`, …).
    pub name: &'static str,
    /// Its slot.
    pub slot: Slot,
    /// Its header line, if any.
    pub header: Option<&'static str>,
    /// Its content.
    pub content: String,
    /// Tokens of header and content.
    pub tokens: u64,
}

impl Section {
    /// A measured section.
    pub fn new(
        name: &'static str,
        slot: Slot,
        header: Option<&'static str>,
        content: String,
    ) -> Self {
        let tokens = count_tokens(&content) + header.map_or(0, count_tokens);
        Section {
            name,
            slot,
            header,
            content,
            tokens,
        }
    }
}

/// The assembled packet.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    /// Sections in order.
    pub sections: Vec<Section>,
    /// Total render weight.
    pub tokens: u64,
}

impl Packet {
    /// The two chat messages the provider receives.
    pub fn messages(&self) -> Vec<ChatMessage> {
        let join = |slot: Slot| {
            let mut s = String::new();
            for sec in self.sections.iter().filter(|s| s.slot == slot) {
                if sec.content.is_empty() {
                    continue;
                }
                if !s.is_empty() {
                    s.push_str("\n\n");
                }
                if let Some(h) = sec.header {
                    s.push_str(h);
                    s.push('\n');
                }
                s.push_str(&sec.content);
            }
            s
        };
        vec![
            ChatMessage::system(join(Slot::System)),
            ChatMessage::user(join(Slot::User)),
        ]
    }

    /// The stored summary: section names, slots and tokens (the content is recomputable
    /// from the log, so it is not stored per turn).
    pub fn summary(&self) -> serde_json::Value {
        json!({
            "tokens": self.tokens,
            "sections": self.sections.iter().map(|s| json!({
                "name": s.name,
                "slot": if s.slot == Slot::System { "system" } else { "user" },
                "tokens": s.tokens,
            })).collect::<Vec<_>>(),
        })
    }

    /// A section by name.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }
}

/// What a packet is built from.
pub struct PacketInput<'a> {
    /// Sections fixed for the loop, system slot, in order (definition, tools, schemes,
    /// policies).
    pub system: &'a [Section],
    /// The requirements footer.
    pub requirements: &'a Section,
    /// The active prompts of the loop, oldest first.
    pub prompts: &'a [String],
    /// The errors section (pointers and notices), may be empty.
    pub errors: &'a str,
    /// The run's committed log rows.
    pub log: &'a [LogRow],
    /// `log` rendered, row for row (the runner's cache); `None` renders them here.
    pub rendered: Option<&'a [RenderedRow]>,
    /// This turn's rows written before the model call (foist, deltas, grinder).
    pub pending: &'a [LogRow],
    /// The prompt budget.
    pub ceiling: u64,
}

fn budget_text(input: &PacketInput<'_>, weights: &[u64], usage: u64, log_tokens: u64) -> String {
    let rows = weights.len();
    let c = input.ceiling;
    let pct = (usage * 100).checked_div(c).unwrap_or(100);
    let free = c.saturating_sub(usage);
    let mut s = format!(
        "Token Ceiling {c} · Token Usage {usage} ({pct}%) · Tokens Free {free}\nLog entries: {rows} entries, {log_tokens} tokens\n"
    );
    // The tables only earn their tokens once the window is half full.
    if pct >= 50 {
        let mut by_turn: Vec<((i64, i64), u64)> = Vec::new();
        let mut heavy: Vec<(&LogRow, u64)> = Vec::new();
        for (r, &w) in input.log.iter().chain(input.pending).zip(weights) {
            match by_turn.last_mut() {
                Some((k, t)) if *k == (r.loop_seq, r.turn_seq) => *t += w,
                _ => by_turn.push(((r.loop_seq, r.turn_seq), w)),
            }
            if r.expanded {
                heavy.push((r, w));
            }
        }
        s.push_str("| turn | tokens |\n|---|--:|\n");
        for ((l, t), w) in &by_turn {
            let _ = writeln!(s, "| {l}/{t} | {w} |");
        }
        heavy.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.id.cmp(&b.0.id)));
        if !heavy.is_empty() {
            s.push_str("Heaviest items:\n| item | tokens |\n|---|--:|\n");
            for (r, w) in heavy.iter().take(5) {
                let _ = writeln!(s, "| {} | {w} |", r.path());
            }
        }
    }
    s
}

/// Builds the packet.
pub fn build(input: &PacketInput<'_>) -> Packet {
    let owned: Vec<RenderedRow>;
    let cached = match input.rendered {
        Some(c) if c.len() == input.log.len() => c,
        _ => {
            owned = input.log.iter().map(RenderedRow::of).collect();
            &owned
        }
    };
    let pending: Vec<RenderedRow> = input.pending.iter().map(RenderedRow::of).collect();
    let all = || cached.iter().chain(&pending);
    let mut log = String::with_capacity(all().map(|r| r.text.len()).sum());
    let mut weights = Vec::with_capacity(cached.len() + pending.len());
    for r in all() {
        log.push_str(&r.text);
        weights.push(r.tokens);
    }
    let log_tokens: u64 = weights.iter().sum();
    let mut prompt = String::new();
    for p in input.prompts {
        if !prompt.is_empty() {
            prompt.push_str("\n\n");
        }
        prompt.push_str(p);
    }
    let prompt = Section::new(
        "prompt",
        Slot::User,
        Some("## Plurnk System User Prompt"),
        prompt,
    );
    let errors = Section::new(
        "errors",
        Slot::User,
        Some("## Plurnk System Errors"),
        input.errors.to_owned(),
    );
    const LOG_HEADER: &str = "## Plurnk System Log";
    let log = Section {
        name: "log",
        slot: Slot::User,
        header: Some(LOG_HEADER),
        tokens: log_tokens + count_tokens(LOG_HEADER),
        content: log,
    };
    let rest: u64 = input.system.iter().map(|s| s.tokens).sum::<u64>()
        + prompt.tokens
        + errors.tokens
        + log.tokens
        + input.requirements.tokens;
    // Two passes: the readout's own weight is part of the usage it reports.
    let first = budget_text(input, &weights, rest, log_tokens);
    let own = count_tokens(&first) + 8;
    let budget = Section::new(
        "budget",
        Slot::System,
        Some("## Plurnk System Budget"),
        budget_text(input, &weights, rest + own, log_tokens),
    );
    let mut sections = Vec::with_capacity(input.system.len() + 5);
    sections.extend(input.system.iter().cloned());
    sections.push(budget);
    sections.push(prompt);
    sections.push(errors);
    sections.push(log);
    sections.push(input.requirements.clone());
    let tokens = sections.iter().map(|s| s.tokens).sum();
    Packet { sections, tokens }
}
