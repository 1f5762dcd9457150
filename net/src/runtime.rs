//! The tokio runtime a transport runs on, and its lifecycle phase.

use crate::transport::NetError;
use parking_lot::Mutex;
use std::future::Future;
use std::time::Duration;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::watch;

/// Where a transport is in its life. Tasks watch it and wind down as it advances.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    /// Accepting sends.
    Running,
    /// `close` was called: flush queued payloads to connected peers, then stop writing.
    Draining,
    /// Everything stops; sockets are dropped.
    Stopped,
}

/// Wait until the phase is at least `at_least`.
pub(crate) async fn reached(rx: &mut watch::Receiver<Phase>, at_least: Phase) {
    if rx.wait_for(|p| *p >= at_least).await.is_err() {
        // The sender is gone: the transport is being torn down.
        std::future::pending::<()>().await;
    }
}

/// The runtime hosting a transport's tasks: its own (the default) or one supplied by the host.
pub(crate) struct RuntimeHost {
    handle: Handle,
    own: Mutex<Option<Runtime>>,
}

impl RuntimeHost {
    /// Use `external` if given, else start a multi-thread runtime with `workers` threads.
    pub(crate) fn new(
        external: Option<Handle>,
        workers: usize,
        name: &str,
    ) -> Result<Self, NetError> {
        if let Some(handle) = external {
            return Ok(RuntimeHost {
                handle,
                own: Mutex::new(None),
            });
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers.max(1))
            .thread_name(name)
            .enable_io()
            .enable_time()
            .build()
            .map_err(NetError::Runtime)?;
        Ok(RuntimeHost {
            handle: rt.handle().clone(),
            own: Mutex::new(Some(rt)),
        })
    }

    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Run `fut` to completion from a plain thread. If the caller is itself inside a tokio
    /// runtime (where blocking on a runtime panics), the wait happens on a helper thread.
    pub(crate) fn block_on<F>(&self, fut: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        if Handle::try_current().is_err() {
            return self.handle.block_on(fut);
        }
        std::thread::scope(|s| match s.spawn(|| self.handle.block_on(fut)).join() {
            Ok(out) => out,
            Err(panic) => std::panic::resume_unwind(panic),
        })
    }

    /// Shut an owned runtime down, dropping every task (and so every socket) before returning
    /// when called from a plain thread. A supplied runtime is left running.
    pub(crate) fn shutdown(&self) {
        let Some(rt) = self.own.lock().take() else {
            return;
        };
        if Handle::try_current().is_ok() {
            rt.shutdown_background();
        } else {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}
