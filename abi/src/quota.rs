//! Quotas, budgets and usage: what an account may spend and what it has spent.

use serde::{Deserialize, Serialize};

/// A metered resource.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum Meter {
    /// LLM tokens (cumulative).
    Tokens,
    /// Tool calls (cumulative).
    ToolCalls,
    /// Dollars, in micro-dollars (cumulative; integer so charges are exact).
    Usd,
    /// Live children in the subtree (a concurrent cap, like cgroup pids.max).
    Children,
    /// Wall time of one process, in ms (per process, not bubbled).
    WallMs,
    /// Context memory ceiling in tokens (per process).
    Mem,
    /// Mailbox depth (per process).
    Mailbox,
    /// CPU in scheduler reductions (cumulative, charged up the chain): the reductions a
    /// driver reports in its cost (the wasm device's fuel) and what a process charges for work
    /// it metered itself (a sandbox guest's fuel). Plain syscalls tick the scheduler's quantum
    /// but are not charged here.
    Cpu,
}

impl Meter {
    /// The meters that are charged up the account chain.
    pub const CHAINED: [Meter; 5] = [
        Meter::Tokens,
        Meter::ToolCalls,
        Meter::Usd,
        Meter::Children,
        Meter::Cpu,
    ];

    /// The snake_case name used in events, metrics and errors.
    pub fn name(self) -> &'static str {
        match self {
            Meter::Tokens => "tokens",
            Meter::ToolCalls => "tool_calls",
            Meter::Usd => "usd",
            Meter::Children => "children",
            Meter::WallMs => "wall_ms",
            Meter::Mem => "mem",
            Meter::Mailbox => "max_mailbox",
            Meter::Cpu => "cpu",
        }
    }
    /// Index into per-meter arrays for the chained meters.
    pub fn chained_index(self) -> Option<usize> {
        match self {
            Meter::Tokens => Some(0),
            Meter::ToolCalls => Some(1),
            Meter::Usd => Some(2),
            Meter::Children => Some(3),
            Meter::Cpu => Some(4),
            _ => None,
        }
    }
}

/// Limits for an account. `None` means unlimited at this level (ancestors still apply).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Quota {
    /// LLM tokens for the whole subtree.
    pub tokens: Option<u64>,
    /// Tool calls for the whole subtree.
    pub tool_calls: Option<u64>,
    /// Micro-dollars for the whole subtree.
    pub usd_micros: Option<u64>,
    /// Concurrent live children in the subtree.
    pub children: Option<u64>,
    /// Wall-clock lifetime of this process in ms.
    pub wall_ms: Option<u64>,
    /// Context-memory ceiling of this process, in tokens.
    pub mem: Option<u64>,
    /// Maximum mailbox depth of this process; a full mailbox blocks local senders.
    pub max_mailbox: Option<u32>,
    /// CPU for the whole subtree, in reductions ([`Meter::Cpu`]).
    pub cpu: Option<u64>,
}

impl Quota {
    /// No limits at all.
    pub const UNLIMITED: Quota = Quota {
        tokens: None,
        tool_calls: None,
        usd_micros: None,
        children: None,
        wall_ms: None,
        mem: None,
        max_mailbox: None,
        cpu: None,
    };
}

/// What is left to spend, as `budget()` reports it. `None` means unlimited at this level.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Budget {
    /// Tokens left at this level.
    pub tokens: Option<u64>,
    /// Tool calls left at this level.
    pub tool_calls: Option<u64>,
    /// Micro-dollars left at this level.
    pub usd_micros: Option<u64>,
    /// Child slots left at this level.
    pub children: Option<u64>,
    /// Wall time left in ms.
    pub wall_ms: Option<u64>,
    /// Memory ceiling in tokens.
    pub mem: Option<u64>,
    /// Mailbox bound.
    pub max_mailbox: Option<u32>,
    /// CPU reductions left: the least left at any level of the chain (unlike the other
    /// fields), so a process can bound work it meters itself by what it may still spend.
    pub cpu: Option<u64>,
}

/// Usage aggregated over an account's subtree (charges bubble up to every ancestor).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens spent.
    pub tokens: u64,
    /// Tool calls made.
    pub tool_calls: u64,
    /// Micro-dollars spent.
    pub usd_micros: u64,
    /// Live children right now (concurrent).
    pub children: u64,
    /// CPU reductions charged.
    pub cpu: u64,
}
