//! The runLoop rails as pure functions (PLURNK.md §3.2): fingerprints, cycle detection,
//! the strike verdict, the streak → abandon decision and max-commands truncation.
//!
//! **Invariants:**
//! - everything here is deterministic and side-effect free; [`LoopRails`] is plain state
//!   the turn loop owns and feeds one turn at a time;
//! - a turn fingerprint is order-insensitive (sorted per-op fingerprints);
//! - soft statuses 404 and 501 never strike; PLAN and the terminal SEND never count
//!   against the command cap;
//! - gamification policy: nothing here is meant to reach the model — the loop shows the
//!   model its failures, never strike counts, cycles or thresholds.
//!
//! **API boundary:** depends only on [`crate::grammar`] statement types.

use crate::grammar::{format_mark, Body, Op, ParsedPath, Statement};

/// Statuses that do not strike: the model adapted to a finding (not found, not supported).
pub const SOFT_STATUSES: [u16; 2] = [404, 501];
/// Turn status for a turn that produced no ops.
pub const NO_OPS_STATUS: u16 = 422;
/// Loop status when the strike streak reaches the threshold.
pub const STRIKE_OUT_STATUS: u16 = 500;
/// Loop status when the crossing strike was a detected cycle.
pub const LOOP_DETECTED_STATUS: u16 = 508;

/// Rail thresholds (engine defaults: 3 strikes, 3 cycles, period ≤ 4, 99 commands).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RailsConfig {
    /// Struck turns in a row that abandon the loop.
    pub max_strikes: u32,
    /// Repeats of a pattern that make a cycle.
    pub min_cycles: usize,
    /// Longest pattern (in turns) checked for cycles.
    pub max_cycle_period: usize,
    /// Ops dispatched per turn, PLAN and the terminal SEND excluded.
    pub max_commands: usize,
}

impl Default for RailsConfig {
    fn default() -> Self {
        RailsConfig {
            max_strikes: 3,
            min_cycles: 3,
            max_cycle_period: 4,
            max_commands: 99,
        }
    }
}

fn first_chars(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Per-op fingerprint: `OP|scheme://pathname` (bare paths `OP|local:path`, regex paths
/// `OP|regex:#…#`); matcher ops add the body's first 64 characters and `<L>`; EXEC
/// without a cwd uses its command (64 characters); SEND adds its status.
pub fn fingerprint_op(s: &Statement) -> String {
    let op = s.op;
    let mut fp = match &s.target {
        Some(p @ ParsedPath::Url { scheme, .. }) => {
            format!("{op}|{scheme}://{}", p.decoded_pathname())
        }
        Some(p @ ParsedPath::Local { .. }) => format!("{op}|local:{}", p.decoded_pathname()),
        Some(ParsedPath::Regex { raw, .. }) => format!("{op}|regex:{raw}"),
        None if op == Op::Exec => format!("{op}|cmd:{}", first_chars(s.body_raw(), 64)),
        None => op.to_string(),
    };
    if op == Op::Send {
        match s.signal_int() {
            Some(n) => fp.push_str(&format!("|status:{n}")),
            None => fp.push_str("|status:"),
        }
    }
    if op.is_matcher() {
        if let Some(Body::Matcher(m)) = &s.body {
            fp.push_str("|body:");
            fp.push_str(first_chars(&m.raw, 64));
        }
        if let Some(lm) = &s.line_marker {
            let marks: Vec<String> = lm.marks.iter().map(|m| format_mark(*m)).collect();
            fp.push_str("|L:");
            fp.push_str(&marks.join(","));
        }
    }
    fp
}

/// Order-insensitive turn fingerprint: the sorted per-op fingerprints joined by newlines.
pub fn fingerprint_turn<'a>(statements: impl IntoIterator<Item = &'a Statement>) -> String {
    let mut fps: Vec<String> = statements.into_iter().map(fingerprint_op).collect();
    fps.sort_unstable();
    fps.join("\n")
}

/// Cycle detection: for the smallest period `k ≤ max_cycle_period`, are the last
/// `k·min_cycles` entries `min_cycles` repeats of one `k`-pattern? Returns that `k`.
/// `min_cycles < 2` never fires (one occurrence is not a repeat).
pub fn detect_cycle<T: PartialEq>(
    history: &[T],
    min_cycles: usize,
    max_cycle_period: usize,
) -> Option<usize> {
    if min_cycles < 2 {
        return None;
    }
    (1..=max_cycle_period).find(|&k| {
        let n = k.saturating_mul(min_cycles);
        n <= history.len() && {
            let w = &history[history.len() - n..];
            (k..n).all(|i| w[i] == w[i - k])
        }
    })
}

/// Why a turn was struck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrikeReason {
    /// The turn produced no ops (turn status 422).
    NoOps,
    /// An action came back with a hard failure status (≥ 400, not 404/501).
    FailedAction(u16),
    /// Rail errors this turn: a cycle, a grinder fire, an idle or premature steer.
    RailErrors(u32),
}

/// The strike verdict for one turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrikeVerdict {
    /// Whether the turn is struck.
    pub struck: bool,
    /// Every reason that applied, in the order above.
    pub reasons: Vec<StrikeReason>,
}

/// Whether an action status strikes.
pub fn is_strike_status(status: u16) -> bool {
    status >= 400 && !SOFT_STATUSES.contains(&status)
}

/// Strike verdict: no ops (422) OR any action status ≥ 400 except soft 404/501 OR rail
/// errors > 0.
pub fn strike_verdict(
    ops_emitted: usize,
    action_statuses: &[u16],
    turn_errors: u32,
) -> StrikeVerdict {
    let mut reasons = Vec::new();
    if ops_emitted == 0 {
        reasons.push(StrikeReason::NoOps);
    }
    if let Some(&s) = action_statuses.iter().find(|&&s| is_strike_status(s)) {
        reasons.push(StrikeReason::FailedAction(s));
    }
    if turn_errors > 0 {
        reasons.push(StrikeReason::RailErrors(turn_errors));
    }
    StrikeVerdict {
        struck: !reasons.is_empty(),
        reasons,
    }
}

/// What the loop does after a turn's strike accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreakDecision {
    /// Keep going with this streak.
    Continue {
        /// The updated streak.
        streak: u32,
    },
    /// Abandon the loop.
    Abandon {
        /// The streak that crossed the threshold.
        streak: u32,
        /// 508 when this turn's cycle detection fired, else 500.
        status: u16,
    },
}

/// Streak update: struck → `streak + 1`, abandoning at `max_strikes`; clean → 0.
pub fn next_streak(
    streak: u32,
    struck: bool,
    max_strikes: u32,
    cycle_fired: bool,
) -> StreakDecision {
    if !struck {
        return StreakDecision::Continue { streak: 0 };
    }
    let streak = streak.saturating_add(1);
    if streak >= max_strikes {
        let status = if cycle_fired {
            LOOP_DETECTED_STATUS
        } else {
            STRIKE_OUT_STATUS
        };
        StreakDecision::Abandon { streak, status }
    } else {
        StreakDecision::Continue { streak }
    }
}

/// Whether `s` is the turn's terminal broadcast SEND (last statement, SEND, no path).
fn terminal_index(statements: &[Statement]) -> Option<usize> {
    let last = statements.len().checked_sub(1)?;
    let s = &statements[last];
    (s.op == Op::Send && s.target.is_none()).then_some(last)
}

/// An idle turn: a continue (`SEND[102]`) whose ops are only PLAN/SEND — a rail error.
pub fn is_idle_turn(statements: &[Statement]) -> bool {
    let continues =
        terminal_index(statements).is_some_and(|i| statements[i].signal_int() == Some(102));
    continues
        && statements
            .iter()
            .all(|s| matches!(s.op, Op::Plan | Op::Send))
}

/// The ops to dispatch after the max-commands cap.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandCap<'a> {
    /// Statements to dispatch, in order (PLAN and the terminal SEND always kept).
    pub dispatch: Vec<&'a Statement>,
    /// Counted ops dropped past the cap (one `max_commands_exceeded` row if > 0).
    pub dropped: usize,
}

/// Applies the max-commands cap; PLAN and the terminal SEND are never counted or dropped.
pub fn cap_commands(statements: &[Statement], max_commands: usize) -> CommandCap<'_> {
    let terminal = terminal_index(statements);
    let mut counted = 0usize;
    let mut dropped = 0usize;
    let mut dispatch = Vec::with_capacity(statements.len().min(max_commands.saturating_add(2)));
    for (i, s) in statements.iter().enumerate() {
        if s.op == Op::Plan || Some(i) == terminal {
            dispatch.push(s);
        } else if counted < max_commands {
            counted += 1;
            dispatch.push(s);
        } else {
            dropped += 1;
        }
    }
    CommandCap { dispatch, dropped }
}

/// What [`LoopRails::observe`] concluded about one turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnRails {
    /// The turn fingerprint pushed onto the history.
    pub fingerprint: String,
    /// The cycle period, when detection fired this turn.
    pub cycle: Option<usize>,
    /// The strike verdict.
    pub verdict: StrikeVerdict,
    /// Continue or abandon.
    pub decision: StreakDecision,
}

/// Strike state for one loop: `{streak, history}` plus the thresholds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoopRails {
    /// Thresholds.
    pub config: RailsConfig,
    /// Struck turns in a row.
    pub streak: u32,
    /// Turn fingerprints so far.
    pub history: Vec<String>,
}

impl LoopRails {
    /// Fresh state with `config`.
    pub fn new(config: RailsConfig) -> Self {
        LoopRails {
            config,
            streak: 0,
            history: Vec::new(),
        }
    }

    /// Steps 6–7 of runLoop for one turn: push the fingerprint, detect a cycle, add rail
    /// errors (`extra_turn_errors` = grinder fires, idle/premature steers), decide.
    pub fn observe(
        &mut self,
        statements: &[Statement],
        action_statuses: &[u16],
        extra_turn_errors: u32,
    ) -> TurnRails {
        let fingerprint = fingerprint_turn(statements);
        self.history.push(fingerprint.clone());
        let cycle = detect_cycle(
            &self.history,
            self.config.min_cycles,
            self.config.max_cycle_period,
        );
        let turn_errors = extra_turn_errors + u32::from(cycle.is_some());
        let verdict = strike_verdict(statements.len(), action_statuses, turn_errors);
        let decision = next_streak(
            self.streak,
            verdict.struck,
            self.config.max_strikes,
            cycle.is_some(),
        );
        self.streak = match decision {
            StreakDecision::Continue { streak } | StreakDecision::Abandon { streak, .. } => streak,
        };
        TurnRails {
            fingerprint,
            cycle,
            verdict,
            decision,
        }
    }
}
