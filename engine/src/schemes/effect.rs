//! What an accepted proposal does (PLURNK.md §3.6 `applyResolution`): each scheme that
//! proposes names its side effect here, and applies it through its own device.

use serde::{Deserialize, Serialize};

use super::copy::Transfer;
use super::exec::ExecStart;
use super::file::FileEffect;

/// A side effect waiting for a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    /// Write or delete a project file (the `fs` device, compare-and-swap).
    File(FileEffect),
    /// Start a command (the `exec` device); its output streams into an entry.
    Exec(ExecStart),
    /// A COPY or MOVE that writes or deletes project files (the `fs` device), then entries.
    Copy(Transfer),
}

impl Effect {
    /// Whether applying it now could clobber a change made since it was proposed (the disk
    /// moved under a file it writes); `yolo` rejects such a proposal. A command has none.
    pub async fn stale_clobber_risk<S: agentos_abi::Syscalls>(
        &self,
        sys: &S,
        fs: Option<super::file::FsHandle>,
    ) -> bool {
        match self {
            Effect::File(f) => super::file::stale_clobber_risk(sys, fs, f).await,
            Effect::Copy(t) => super::copy::stale_clobber_risk(sys, fs, t).await,
            Effect::Exec(_) => false,
        }
    }
}
