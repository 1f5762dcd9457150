//! The store's row types: what the sessions database holds, as plain owned data.
//!
//! Every type derives serde so it can cross the `store` device as a [`Value`] and reach
//! JSON at the RPC edge; JSON text columns (`flags`, `settings`, `signal`, `packet`, …) stay
//! JSON text here and are decoded only where a consumer needs them.
//!
//! [`Value`]: agentos_abi::Value

use serde::{Deserialize, Serialize};

use crate::grammar::Op;

/// A session id (`sessions.id`).
pub type SessionId = i64;
/// A run id (`runs.id`).
pub type RunId = i64;
/// A loop id (`loops.id`).
pub type LoopId = i64;
/// A turn id (`turns.id`).
pub type TurnId = i64;
/// A log row id (`log_entries.id`).
pub type RowId = i64;
/// An entry id (`entries.id`).
pub type EntryId = i64;

/// Loop statuses (PLURNK.md §1.6).
pub mod status {
    /// Queued: waiting for its run's drain.
    pub const QUEUED: u16 = 100;
    /// Running (or, for a turn, continuing).
    pub const RUNNING: u16 = 102;
    /// Done.
    pub const DONE: u16 = 200;
    /// Parked waiting on proposals or children (not terminal).
    pub const PARKED: u16 = 202;
    /// Budget hard stop.
    pub const BUDGET: u16 = 413;
    /// Max turns.
    pub const MAX_TURNS: u16 = 429;
    /// Cancelled.
    pub const CANCELLED: u16 = 499;
    /// Strike-out, provider failure or a crash.
    pub const FAILED: u16 = 500;
    /// Loop wall-clock timeout.
    pub const TIMEOUT: u16 = 504;
    /// Loop detected.
    pub const LOOP_DETECTED: u16 = 508;
    /// A run the session could not start: its active-run cap or its process quota (a fork
    /// bomb) is reached (PLURNK.md §1.6: 508 "run-cap exceeded").
    pub const RUN_CAP: u16 = 508;

    /// Whether a loop in `s` is finished (everything but 100, 102 and 202).
    pub fn is_terminal(s: u16) -> bool {
        !matches!(s, QUEUED | RUNNING | PARKED)
    }
}

/// Who wrote something (`runs.origin`, `log_entries.origin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The model.
    Model,
    /// A client (a human through the daemon or CLI).
    Client,
    /// The engine itself.
    Plurnk,
    /// A plugin.
    Plugin,
}

impl Origin {
    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Model => "model",
            Origin::Client => "client",
            Origin::Plurnk => "plurnk",
            Origin::Plugin => "plugin",
        }
    }

    /// Parses a column value.
    pub fn parse(s: &str) -> Option<Origin> {
        Some(match s {
            "model" => Origin::Model,
            "client" => Origin::Client,
            "plurnk" => Origin::Plurnk,
            "plugin" => Origin::Plugin,
            _ => return None,
        })
    }
}

/// A session: the world (entries, membership overlay, settings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRow {
    /// Id.
    pub id: SessionId,
    /// Unique name.
    pub name: String,
    /// Creation time (ms since the Unix epoch).
    pub created_at: i64,
    /// Rolled-up cost of every turn in the session, in pico-USD.
    pub cost_pico: i64,
    /// Project root; `None` for a headless session.
    pub project_root: Option<String>,
    /// Settings as JSON text.
    pub settings: String,
}

/// A run: a conversation that owns its log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRow {
    /// Id.
    pub id: RunId,
    /// Its session.
    pub session_id: SessionId,
    /// Name (unique among the session's live runs).
    pub name: String,
    /// Creation time (ms since the Unix epoch).
    pub created_at: i64,
    /// The run it was forked from.
    pub parent_run_id: Option<RunId>,
    /// Rolled-up cost of its turns, in pico-USD.
    pub cost_pico: i64,
    /// Who started it.
    pub origin: Origin,
}

/// A loop: one prompt-driven drain of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoopRow {
    /// Id.
    pub id: LoopId,
    /// Its run.
    pub run_id: RunId,
    /// 1-based ordinal within the run (the `L` of `log:///L/T/S`).
    pub sequence: i64,
    /// Status (see [`status`]).
    pub status: u16,
    /// The prompt it was started with.
    pub prompt: String,
    /// Loop flags as JSON text.
    pub flags: String,
    /// Turn limit asked for (`None`: the engine default).
    pub max_turns: Option<i64>,
    /// When it was queued (ms since the Unix epoch).
    pub created_at: i64,
    /// When it reached a terminal status.
    pub terminated_at: Option<i64>,
    /// Why it ended (`max_turns`, `strike_threshold`, the deliverable, a provider error…).
    pub terminal_message: Option<String>,
}

/// Token usage and cost of one turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnUsage {
    /// Prompt tokens.
    pub prompt: i64,
    /// Completion tokens.
    pub completion: i64,
    /// Cached prompt tokens.
    pub cached: i64,
    /// Cost in pico-USD.
    pub cost_pico: i64,
    /// The provider's context size, when known.
    pub context_size: Option<i64>,
}

/// A turn: one provider round trip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnRow {
    /// Id (0 before it is written).
    pub id: TurnId,
    /// Its loop.
    pub loop_id: LoopId,
    /// 1-based ordinal within the loop.
    pub sequence: i64,
    /// When it ran (kernel clock, ms).
    pub timestamp: i64,
    /// Turn status: the terminal SEND's code, 102 to continue, 422 for no ops, 413 budget.
    pub status: u16,
    /// Usage and cost.
    pub usage: TurnUsage,
    /// The packet summary as JSON text (sections with their tokens, the assistant emission).
    pub packet: String,
    /// Why the model stopped.
    pub finish_reason: Option<String>,
    /// The model that answered.
    pub model: Option<String>,
}

/// What a log row records: an op of the grammar, a parse or rail error, or the model's
/// verbatim emission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RowOp {
    /// An op the model (or the engine, for foisted rows) dispatched.
    Op(Op),
    /// A parse or rail error (`op = 'error'`).
    Error,
    /// The model's verbatim emission (`op = 'model'`).
    Model,
}

impl RowOp {
    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            RowOp::Op(op) => op.keyword(),
            RowOp::Error => "error",
            RowOp::Model => "model",
        }
    }

    /// Parses a column value.
    pub fn parse(s: &str) -> Option<RowOp> {
        match s {
            "error" => Some(RowOp::Error),
            "model" => Some(RowOp::Model),
            _ => Op::from_keyword(s.as_bytes())
                .filter(|op| op.keyword() == s)
                .map(RowOp::Op),
        }
    }
}

/// A proposal's lifecycle state (`log_entries.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowState {
    /// Waiting for a decision.
    Proposed,
    /// Accepted and applied.
    Resolved,
    /// Rejected.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl RowState {
    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            RowState::Proposed => "proposed",
            RowState::Resolved => "resolved",
            RowState::Failed => "failed",
            RowState::Cancelled => "cancelled",
        }
    }

    /// Parses a column value.
    pub fn parse(s: &str) -> Option<RowState> {
        Some(match s {
            "proposed" => RowState::Proposed,
            "resolved" => RowState::Resolved,
            "failed" => RowState::Failed,
            "cancelled" => RowState::Cancelled,
            _ => return None,
        })
    }
}

/// Where a row points: the target URI's parts (`scheme` is `None` for a bare file path).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RowTarget {
    /// Scheme (`None`: a project file).
    pub scheme: Option<String>,
    /// Host, for schemes that keep it (`http`) and `run://name`.
    pub hostname: Option<String>,
    /// Path.
    pub pathname: String,
    /// Channel.
    pub fragment: Option<String>,
}

impl RowTarget {
    /// The target as a URI (`known:///a.md`, `run://x/p`, or the bare path).
    pub fn uri(&self) -> String {
        let mut s = match &self.scheme {
            None => self.pathname.clone(),
            Some(sc) => format!(
                "{sc}://{}{}",
                self.hostname.as_deref().unwrap_or(""),
                self.pathname
            ),
        };
        if let Some(f) = &self.fragment {
            s.push('#');
            s.push_str(f);
        }
        s
    }
}

/// `LogRow::op` as its column text (`EDIT`, `error`, `model`): what clients read, and one
/// serialisation pass for the daemon's `log/entry` notifications.
mod op_text {
    use super::RowOp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(op: &RowOp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(op.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<RowOp, D::Error> {
        let text = String::deserialize(d)?;
        RowOp::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown row op {text:?}")))
    }
}

/// One action: a `log_entries` row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogRow {
    /// Id (0 before it is written).
    pub id: RowId,
    /// Its run.
    pub run_id: RunId,
    /// Its loop.
    pub loop_id: LoopId,
    /// Its turn (0 before it is written).
    pub turn_id: TurnId,
    /// The loop's ordinal within the run (the `L` of `log:///L/T/S`).
    pub loop_seq: i64,
    /// The turn's ordinal within the loop (the `T`).
    pub turn_seq: i64,
    /// 1-based ordinal within the turn (the `S`).
    pub sequence: i64,
    /// When it was written (kernel clock, ms).
    pub at: i64,
    /// Who wrote it.
    pub origin: Origin,
    /// For environment deltas: the run id or `file` that caused it.
    pub source: Option<String>,
    /// What it records (on the wire: the op's keyword, `error` or `model`).
    #[serde(with = "op_text")]
    pub op: RowOp,
    /// The op's suffix.
    pub suffix: String,
    /// The signal as JSON text.
    pub signal: Option<String>,
    /// Where it points.
    pub target: Option<RowTarget>,
    /// The `<L>` marks as JSON text.
    pub line_marker: Option<String>,
    /// What was sent: the statement body (or the whole statement for errors).
    pub tx: Option<String>,
    /// Mimetype of `tx`.
    pub mimetype_tx: Option<String>,
    /// What came back.
    pub rx: Option<String>,
    /// Mimetype of `rx`.
    pub mimetype_rx: Option<String>,
    /// The op's status.
    pub status: u16,
    /// Render weight of the open row, in tokens.
    pub tokens: i64,
    /// Proposal state, for side-effecting 202s.
    pub state: Option<RowState>,
    /// Resolution outcome.
    pub outcome: Option<String>,
    /// Open (`true`) or folded in the model's log.
    pub expanded: bool,
}

impl LogRow {
    /// The row's handle `log:///L/T/S/OP` (errors and model rows end in their kind).
    pub fn path(&self) -> String {
        format!(
            "log:///{}/{}/{}/{}",
            self.loop_seq,
            self.turn_seq,
            self.sequence,
            self.op.as_str()
        )
    }
}

/// Whose an entry is: the whole session's, or one run's scratch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Shared by every run of the session.
    Session,
    /// One run's (its `run_id` is the handle's run).
    Run,
}

impl Scope {
    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Session => "session",
            Scope::Run => "run",
        }
    }
}

/// An entry's identity within a session: scope, scheme (`None` for files), host, path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EntryKey {
    /// Session- or run-scoped.
    pub scope: Scope,
    /// Scheme (`None`: a project file).
    pub scheme: Option<String>,
    /// Host for schemes that keep it.
    pub hostname: Option<String>,
    /// Path, always starting with `/` for registered schemes.
    pub pathname: String,
}

impl EntryKey {
    /// A session-scoped key of a registered scheme.
    pub fn session(scheme: &str, pathname: impl Into<String>) -> Self {
        EntryKey {
            scope: Scope::Session,
            scheme: Some(scheme.to_owned()),
            hostname: None,
            pathname: pathname.into(),
        }
    }

    /// A run-scoped key of a registered scheme.
    pub fn run(scheme: &str, pathname: impl Into<String>) -> Self {
        EntryKey {
            scope: Scope::Run,
            scheme: Some(scheme.to_owned()),
            hostname: None,
            pathname: pathname.into(),
        }
    }

    /// The key as a URI (`known:///a.md`).
    pub fn uri(&self) -> String {
        match &self.scheme {
            None => self.pathname.clone(),
            Some(s) => format!(
                "{s}://{}{}",
                self.hostname.as_deref().unwrap_or(""),
                self.pathname
            ),
        }
    }
}

/// A channel state (metadata, never a gate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelState {
    /// Written once or edited.
    Static,
    /// A stream still being written.
    Active,
    /// A stream that ended.
    Closed,
    /// A stream that failed.
    Errored,
}

impl ChannelState {
    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelState::Static => "static",
            ChannelState::Active => "active",
            ChannelState::Closed => "closed",
            ChannelState::Errored => "errored",
        }
    }

    /// Parses a column value.
    pub fn parse(s: &str) -> Option<ChannelState> {
        Some(match s {
            "static" => ChannelState::Static,
            "active" => ChannelState::Active,
            "closed" => ChannelState::Closed,
            "errored" => ChannelState::Errored,
            _ => return None,
        })
    }
}

/// One named channel of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    /// Name (`body`, `stdout`, …).
    pub name: String,
    /// Content.
    pub content: String,
    /// Mimetype.
    pub mimetype: String,
    /// Content depth in tokens.
    pub tokens: i64,
    /// State.
    pub state: ChannelState,
}

/// An entry with its channels and tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Id.
    pub id: EntryId,
    /// Identity.
    pub key: EntryKey,
    /// Channels by name.
    pub channels: Vec<Channel>,
    /// Tags, sorted.
    pub tags: Vec<String>,
    /// Logical write counter (higher = more recent).
    pub updated_at: i64,
    /// For a project file: the disk signature (`mtime_ns:size`) its body was materialised
    /// from, the compare-and-swap guard of an accepted EDIT.
    #[serde(default)]
    pub synced_sig: Option<String>,
}

impl Entry {
    /// The channel named `name`.
    pub fn channel(&self, name: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| c.name == name)
    }
}

/// A change to the world, applied in a turn's transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryWrite {
    /// Create or replace one channel of an entry (creating the entry if needed); `tags`
    /// replaces the entry's tags when `Some`, adds nothing when `None`.
    Put {
        /// The entry.
        key: EntryKey,
        /// The channel written.
        channel: Channel,
        /// Replacement tags.
        tags: Option<Vec<String>>,
    },
    /// Delete an entry with its channels and tags.
    Delete {
        /// The entry.
        key: EntryKey,
    },
    /// Record the disk signature a project file's body was materialised from (after a
    /// `Put` of the same entry; no-op for an absent entry).
    Sync {
        /// The entry.
        key: EntryKey,
        /// `mtime_ns:size`.
        sig: String,
    },
}

impl EntryWrite {
    /// The entry this write touches.
    pub fn key(&self) -> &EntryKey {
        match self {
            EntryWrite::Put { key, .. }
            | EntryWrite::Delete { key }
            | EntryWrite::Sync { key, .. } => key,
        }
    }
}

/// Everything one turn writes, committed in one transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnCommit {
    /// The turn row (its id is assigned by the store). Ignored when `turn_id` is set.
    pub turn: TurnRow,
    /// Append to this already-written turn instead of inserting `turn`: a turn that parks on
    /// a proposal commits in segments (the rows up to the proposal, then the rest), so the
    /// proposed row is durable and resolvable while the loop waits.
    #[serde(default)]
    pub turn_id: Option<TurnId>,
    /// The turn's log rows in order (ids and `turn_id` assigned by the store).
    pub rows: Vec<LogRow>,
    /// Fold-state changes of earlier rows (`(row, expanded)`): OPEN/FOLD and the grinder.
    pub folds: Vec<(RowId, bool)>,
    /// Entry writes, in dispatch order.
    pub entries: Vec<EntryWrite>,
    /// A new loop status and terminal message, when the turn ends the loop.
    pub loop_status: Option<(u16, Option<String>)>,
}

/// How a proposal ended (PLURNK.md §3.6): the row's new state, status, outcome and result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RowResolution {
    /// `resolved`, `failed` or `cancelled`.
    pub state: RowState,
    /// The row's new status (200 applied, 400 rejected, 499 cancelled, or the apply's
    /// failure status).
    pub status: u16,
    /// Why (`rejected`, `loop_aborted`, `timeout`, `no_review_channel`, `write_conflict`…).
    pub outcome: Option<String>,
    /// A new result text, when the resolution changes what the row shows.
    pub rx: Option<String>,
}

/// What the store assigned to a committed turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnCommitted {
    /// The turn's id.
    pub turn_id: TurnId,
    /// The rows' ids, in order.
    pub row_ids: Vec<RowId>,
}
