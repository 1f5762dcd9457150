//! The nursery: structured concurrency for a group of children.
//!
//! A process opens a [`Nursery`] with [`nursery`], spawns children into it, and [`joins`]
//! it. Invariants (the seed's):
//! - the first child to exit abnormally (anything but `Normal` or `Shutdown`) cancels every
//!   sibling at once, and any child spawned into the nursery after that; cancelled children are
//!   killed with reason `Shutdown`;
//! - `join` waits for every child and reports the first failure, naming the child (its image
//!   name and pid) and why it exited;
//! - spawning after `join` is an error ([`NurseryError::Joined`]);
//! - the scope is cancelled when its owner dies, however it dies (killed, faulted, or simply
//!   returned without joining): no child outlives the process that opened the nursery.
//!
//! The watching is done by a small scope process the nursery spawns (see `scope`), so siblings
//! are cancelled the moment a child fails, whatever the owner is doing, and children's downs
//! never land in the owner's mailbox. The owner needs a spawn capability; the scope counts as
//! one more child against its `children` quota.
//!
//! [`joins`]: Nursery::join

use crate::proto::{call, drop_caps, reason_from_value, tagged};
use crate::scope;
use agentos_abi::{CapRef, ExitReason, Image, Pid, SpawnOpts, Spawned, SysError, Syscalls, Value};
use std::sync::Arc;
use thiserror::Error;

/// Why a nursery operation failed.
#[derive(Clone, PartialEq, Debug, Error)]
pub enum NurseryError {
    /// `spawn` after `join`.
    #[error("nursery: spawn after join")]
    Joined,
    /// The nursery's scope process could not be spawned.
    #[error("nursery: cannot open: {0}")]
    Open(SysError),
    /// The child could not be spawned.
    #[error("nursery: spawn failed: {0}")]
    Spawn(SysError),
    /// The scope process is gone (it dies only with its owner or after a join).
    #[error("nursery: scope lost: {0}")]
    Scope(SysError),
    /// The scope answered something this nursery does not understand.
    #[error("nursery: malformed reply from the scope")]
    BadReply,
    /// A child exited abnormally; its siblings were cancelled.
    #[error("nursery: child \"{name}\" ({pid}) exited {reason} — scope cancelled")]
    ChildFailed {
        /// The child's image name.
        name: String,
        /// Its pid.
        pid: Pid,
        /// Why it exited.
        reason: ExitReason,
    },
}

/// A structured-concurrency scope owned by the process that opened it.
pub struct Nursery<S: Syscalls> {
    sys: S,
    scope: CapRef,
    kids: Vec<(Pid, Arc<str>)>,
    outcome: Option<Result<(), NurseryError>>,
}

impl<S: Syscalls> std::fmt::Debug for Nursery<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nursery")
            .field("children", &self.kids)
            .field("joined", &self.outcome.is_some())
            .finish()
    }
}

/// Open a nursery owned by the calling process (spawns its scope process).
pub async fn nursery<S: Syscalls>(sys: &S) -> Result<Nursery<S>, NurseryError> {
    let s = scope::open(sys, scope::Mode::Nursery)
        .await
        .map_err(NurseryError::Open)?;
    Ok(Nursery {
        sys: sys.clone(),
        scope: s.cap,
        kids: Vec::new(),
        outcome: None,
    })
}

impl<S: Syscalls> Nursery<S> {
    /// Spawn a child into the nursery. The returned capability (send, monitor, kill) stays
    /// valid until the nursery is joined.
    pub async fn spawn(
        &mut self,
        image: Image<S>,
        opts: SpawnOpts,
    ) -> Result<Spawned, NurseryError> {
        if self.outcome.is_some() {
            return Err(NurseryError::Joined);
        }
        let name = image.name().clone();
        let child = self
            .sys
            .spawn(image, opts)
            .await
            .map_err(NurseryError::Spawn)?;
        let cap = scope::adopt(&self.sys, self.scope, child)
            .await
            .map_err(NurseryError::Scope)?;
        self.kids.push((child.pid, name));
        Ok(Spawned {
            pid: child.pid,
            cap,
        })
    }

    /// The children spawned so far: pid and image name, in spawn order.
    pub fn children(&self) -> &[(Pid, Arc<str>)] {
        &self.kids
    }

    /// Whether `join` has completed.
    pub fn is_joined(&self) -> bool {
        self.outcome.is_some()
    }

    /// Wait until every child has exited. `Err(ChildFailed)` names the first child that exited
    /// abnormally (its siblings were cancelled). Other messages stay in the mailbox, in order;
    /// if the nursery's scope process dies before answering, `join` fails instead of waiting.
    /// Joining again returns the same outcome.
    pub async fn join(&mut self) -> Result<(), NurseryError> {
        if let Some(o) = &self.outcome {
            return o.clone();
        }
        let reply = call(&self.sys, self.scope, tagged("join", Vec::new()))
            .await
            .map_err(NurseryError::Scope)?;
        drop_caps(&self.sys, &reply);
        let outcome = match reply.body.as_value().and_then(|v| v.get("failed")) {
            Some(Value::Unit) => Ok(()),
            Some(f) => {
                let pid = f.get("pid").and_then(Value::as_u64).map(Pid);
                let reason = f.get("reason").and_then(reason_from_value);
                match (pid, reason) {
                    (Some(pid), Some(reason)) => {
                        let name = self
                            .kids
                            .iter()
                            .find(|(p, _)| *p == pid)
                            .map_or_else(|| "?".to_owned(), |(_, n)| n.to_string());
                        Err(NurseryError::ChildFailed { name, pid, reason })
                    }
                    _ => Err(NurseryError::BadReply),
                }
            }
            None => Err(NurseryError::BadReply),
        };
        self.outcome = Some(outcome.clone());
        outcome
    }
}
