//! Proposals (PLURNK.md §3.6): the messages of a 202's lifecycle and the resolvers.
//!
//! A side-effecting action answers 202: the loop process commits its turn up to that row
//! (state `proposed`, loop status 202), tells its run [`Proposed`], and parks in a selective
//! receive with a deadline for the [`Resolution`] of that row. The run holds the loop's
//! [`Resolver`]: `yolo` and `noProposals` answer at once (they are resolvers, not branches in
//! the loop); a human resolver leaves the decision to the host (`Engine::resolve`, the
//! daemon's `loop.resolve`), which the run forwards. No answer by the deadline cancels the
//! proposal (499 `timeout`); a loop killed while parked leaves its proposals cancelled (the
//! run marks them when it records the loop's end).

use serde::{Deserialize, Serialize};

use super::LoopFlags;
use crate::store::{LoopId, RowId};

/// A loop → its run: row `row_id` proposes and the loop is parked on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proposed {
    /// The parked loop.
    pub loop_id: LoopId,
    /// The proposed row.
    pub row_id: RowId,
    /// The disk moved since the snapshot the proposal was made against.
    pub stale_clobber_risk: bool,
}

/// What a resolver decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Apply the effect (an apply failure downgrades to a reject).
    Accept,
    /// Refuse it (400 `rejected`).
    Reject,
    /// Withdraw it (499 `loop_aborted`).
    Cancel,
}

impl Decision {
    /// Parses `accept` / `reject` / `cancel`.
    pub fn parse(s: &str) -> Option<Decision> {
        match s {
            "accept" => Some(Decision::Accept),
            "reject" => Some(Decision::Reject),
            "cancel" => Some(Decision::Cancel),
            _ => None,
        }
    }
}

/// A decision on one proposed row, delivered to the parked loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The row.
    pub row_id: RowId,
    /// The decision.
    pub decision: Decision,
    /// Why, when the resolver says (else the decision's default outcome).
    pub outcome: Option<String>,
}

/// The outcome of a proposal rejected because no one can review it (PLURNK.md §3.6
/// `noProposals`; also `agentos run` without a terminal).
pub const NO_REVIEW_CHANNEL: &str = "no_review_channel";

/// Who decides a loop's proposals, from its flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    /// A client decides (`loop.resolve`); the proposal times out otherwise.
    Human,
    /// Server-side YOLO: accept, unless the disk moved under the snapshot.
    Yolo,
    /// No review channel: reject at once.
    NoProposals,
}

impl Resolver {
    /// The resolver a loop with `flags` gets (`noProposals` wins over `yolo`).
    pub fn for_flags(flags: &LoopFlags) -> Resolver {
        if flags.no_proposals {
            Resolver::NoProposals
        } else if flags.yolo {
            Resolver::Yolo
        } else {
            Resolver::Human
        }
    }

    /// An immediate decision, or `None` when a human must decide.
    pub fn decide(&self, p: &Proposed) -> Option<Resolution> {
        let (decision, outcome) = match self {
            Resolver::Human => return None,
            Resolver::Yolo if p.stale_clobber_risk => (Decision::Reject, "stale_clobber_risk"),
            Resolver::Yolo => (Decision::Accept, "yolo"),
            Resolver::NoProposals => (Decision::Reject, NO_REVIEW_CHANNEL),
        };
        Some(Resolution {
            row_id: p.row_id,
            decision,
            outcome: Some(outcome.into()),
        })
    }
}
