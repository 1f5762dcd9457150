//! The context-memory syscalls behind `remember`, `working_set`, `recall`, `forget` and `pin`.
//!
//! Each process's [`Context`] is created on first use (an idle process carries none) with the
//! account's memory ceiling, and sits behind its own small mutex rather than the kernel lock:
//! only the owning process mutates it, and paging awaits the pager (which may call an LLM
//! summarizer) without holding any lock. Lock order is kernel → context, never the reverse.
//! When the pinned segments alone exceed the ceiling the kernel ends the process with
//! `Quota { resource: Mem }` and a fault event saying why.

use crate::memory::{relieve, Context, MemError};
use crate::syscalls::{maybe_yield, Sys};
use agentos_abi::{EventKind, ExitReason, Meter, RememberOpts, SegId, Segment, SysError, Value};
use parking_lot::Mutex;
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Sys {
    /// This process's context, created on first use; `None` if the process is dead.
    fn context(&self) -> Option<Arc<Mutex<Context>>> {
        let shared = &self.shared;
        shared.with(|st| {
            let acct = st.procs.get(&self.pid)?.account;
            let mem = st.accounts.remaining(acct, st.now()).mem;
            let p = st.procs.get_mut(&self.pid)?;
            let c = p.ext().ctx.get_or_insert_with(|| {
                Arc::new(Mutex::new(Context::new(mem, (shared.memory.recaller)())))
            });
            Some(c.clone())
        })
    }

    fn existing_context(&self) -> Option<Arc<Mutex<Context>>> {
        self.shared.with(|st| {
            st.procs
                .get(&self.pid)
                .and_then(|p| p.x.as_ref())
                .and_then(|x| x.ctx.clone())
        })
    }

    fn next_seg(&self) -> SegId {
        SegId(self.shared.next_seg.fetch_add(1, Ordering::Relaxed))
    }

    /// Page the context under its watermark and tick; on OOM terminate with a `mem` quota
    /// exit. `Some(yield)` to go on, `None` when the process is now dead.
    async fn page(&self, ctx: &Mutex<Context>, cost: u32) -> Option<bool> {
        let next = || self.next_seg();
        match relieve(ctx, &*self.shared.memory.pager, &next).await {
            Ok(()) => self.shared.with(|st| {
                st.procs
                    .contains_key(&self.pid)
                    .then(|| st.tick(self.pid, cost))
            }),
            Err(e @ MemError::Oom { .. }) => {
                self.shared.with(|st| {
                    st.emit(EventKind::Fault {
                        pid: self.pid,
                        error: e.to_string(),
                    });
                    st.terminate(
                        self.pid,
                        ExitReason::Quota {
                            resource: Meter::Mem,
                        },
                    );
                });
                None
            }
        }
    }

    pub(crate) async fn do_remember(
        &self,
        body: Value,
        opts: RememberOpts,
    ) -> Result<SegId, SysError> {
        let Some(ctx) = self.context() else {
            return self.dead().await;
        };
        let tokens = opts
            .tokens
            .unwrap_or_else(|| self.shared.memory.tokens.count(&body));
        let id = self.next_seg();
        ctx.lock().insert(id, body, tokens, opts.pin, false);
        match self.page(&ctx, 1).await {
            None => self.dead().await,
            Some(y) => {
                maybe_yield(y).await;
                Ok(id)
            }
        }
    }

    pub(crate) async fn do_recall(&self, query: &str, k: usize) -> Result<Vec<Segment>, SysError> {
        let Some(ctx) = self.context() else {
            return self.dead().await;
        };
        let back = ctx.lock().recall_ids(query, k);
        match self.page(&ctx, 2).await {
            None => self.dead().await,
            Some(y) => {
                maybe_yield(y).await;
                Ok(back)
            }
        }
    }

    pub(crate) fn do_working_set(&self) -> Vec<Segment> {
        self.existing_context()
            .map(|c| c.lock().working_set())
            .unwrap_or_default()
    }

    pub(crate) fn do_forget(&self, id: SegId) -> bool {
        self.existing_context().is_some_and(|c| c.lock().forget(id))
    }

    pub(crate) fn do_pin(&self, id: SegId, on: bool) -> bool {
        self.existing_context()
            .is_some_and(|c| c.lock().pin(id, on))
    }
}
