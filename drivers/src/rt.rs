//! [`IoRuntime`]: where drivers run their async I/O.
//!
//! The kernel polls process futures on its own scheduler threads, outside any tokio runtime.
//! A driver whose work needs tokio (HTTP, timers, blocking file I/O) spawns that work onto an
//! [`IoRuntime`] and hands the kernel a future that only waits for the result; the tokio task
//! wakes the process through its waker when it finishes. Dropping that future (the process was
//! killed mid-call) aborts the task.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use thiserror::Error;
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;

/// The I/O runtime could not be started.
#[derive(Debug, Error)]
#[error("cannot start the driver I/O runtime: {0}")]
pub struct RuntimeError(pub String);

/// A spawned driver task ended without a result.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TaskError {
    /// The task panicked; the message is the panic payload when it was a string.
    #[error("panicked: {0}")]
    Panicked(String),
    /// The task was cancelled (the runtime shut down).
    #[error("cancelled")]
    Cancelled,
}

/// A handle to the tokio runtime drivers spawn their I/O on. Cheap to clone.
#[derive(Clone, Debug)]
pub struct IoRuntime {
    handle: Handle,
    // Keeps an owned runtime alive as long as some driver uses it.
    _owned: Option<Arc<OwnedRuntime>>,
}

#[derive(Debug)]
struct OwnedRuntime(Option<Runtime>);

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            // Never blocks, so it is safe to drop from inside another runtime.
            rt.shutdown_background();
        }
    }
}

static GLOBAL: OnceLock<Result<IoRuntime, String>> = OnceLock::new();

impl IoRuntime {
    /// Use an existing runtime (the host's).
    pub fn from_handle(handle: Handle) -> Self {
        IoRuntime {
            handle,
            _owned: None,
        }
    }

    /// Start a dedicated multi-threaded runtime with `workers` threads (at least one), shut
    /// down when the last clone is dropped.
    pub fn with_workers(workers: usize) -> Result<Self, RuntimeError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers.max(1))
            .thread_name("agentos-driver-io")
            .enable_all()
            .build()
            .map_err(|e| RuntimeError(e.to_string()))?;
        Ok(IoRuntime {
            handle: rt.handle().clone(),
            _owned: Some(Arc::new(OwnedRuntime(Some(rt)))),
        })
    }

    /// The process-wide driver runtime (two worker threads), started on first use.
    pub fn global() -> Result<Self, RuntimeError> {
        GLOBAL
            .get_or_init(|| Self::with_workers(2).map_err(|e| e.0))
            .clone()
            .map_err(RuntimeError)
    }

    /// The runtime this thread is inside, or else the process-wide one.
    pub fn current_or_global() -> Result<Self, RuntimeError> {
        match Handle::try_current() {
            Ok(h) => Ok(Self::from_handle(h)),
            Err(_) => Self::global(),
        }
    }

    /// The underlying tokio handle.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Run `fut` on the runtime; the returned future resolves with its output and can be
    /// awaited from any executor (the kernel's scheduler included).
    pub fn spawn<F>(&self, fut: F) -> Spawned<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        Spawned(SpawnedState::Task(self.handle.spawn(fut)))
    }

    /// Like [`spawn`](Self::spawn), but poll `fut` once first, here, inside the runtime's
    /// context: work that is done at once (a synchronous tool, a scripted reply) comes back
    /// without a task hop, so it is ready when the kernel first polls the I/O and a
    /// deterministic kernel's trace does not depend on when another thread finished it. Only
    /// work that really waits moves to the runtime. A panic in that first poll is
    /// [`TaskError::Panicked`], as it would be in a task.
    pub fn start<F>(&self, fut: F) -> Spawned<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let mut fut = Box::pin(fut);
        let first = {
            let _in_runtime = self.handle.enter();
            let mut cx = Context::from_waker(std::task::Waker::noop());
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)))
        };
        match first {
            Ok(Poll::Ready(v)) => Spawned(SpawnedState::Done(Some(Ok(v)))),
            Err(payload) => Spawned(SpawnedState::Done(Some(Err(TaskError::Panicked(
                panic_message(payload.as_ref()),
            ))))),
            // A future may be polled again from another executor: the next poll registers
            // the runtime's waker.
            Ok(Poll::Pending) => Spawned(SpawnedState::Task(self.handle.spawn(fut))),
        }
    }

    /// Run blocking `f` on the runtime's blocking pool.
    pub fn spawn_blocking<F, T>(&self, f: F) -> Spawned<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        Spawned(SpawnedState::Task(self.handle.spawn_blocking(f)))
    }
}

/// A task running on an [`IoRuntime`] (or, from [`IoRuntime::start`], already finished).
/// Awaiting it yields the task's output; dropping it aborts the task.
#[derive(Debug)]
pub struct Spawned<T>(SpawnedState<T>);

#[derive(Debug)]
enum SpawnedState<T> {
    Task(JoinHandle<T>),
    Done(Option<Result<T, TaskError>>),
}

// The output is never pinned (it is only moved out), and a JoinHandle is Unpin.
impl<T> Unpin for Spawned<T> {}

impl<T> Future for Spawned<T> {
    type Output = Result<T, TaskError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            SpawnedState::Task(task) => Pin::new(task).poll(cx).map(|r| {
                r.map_err(|e| {
                    if e.is_panic() {
                        TaskError::Panicked(panic_message(e.into_panic().as_ref()))
                    } else {
                        TaskError::Cancelled
                    }
                })
            }),
            SpawnedState::Done(out) => match out.take() {
                Some(v) => Poll::Ready(v),
                None => Poll::Ready(Err(TaskError::Cancelled)),
            },
        }
    }
}

impl<T> Drop for Spawned<T> {
    fn drop(&mut self) {
        if let SpawnedState::Task(task) = &self.0 {
            task.abort();
        }
    }
}

/// The message of a panic payload (`&str` or `String`), or a placeholder.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: Future>(f: F) -> F::Output {
        // A minimal executor that is not tokio, like the kernel's scheduler.
        use std::task::{Wake, Waker};
        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut f = std::pin::pin!(f);
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
            std::thread::park();
        }
    }

    #[test]
    fn spawned_tasks_are_awaitable_outside_tokio() {
        let rt = IoRuntime::global().unwrap();
        let out = block_on(rt.spawn(async {
            tokio::task::yield_now().await;
            41 + 1
        }));
        assert_eq!(out, Ok(42));
    }

    #[test]
    fn a_panicking_task_is_an_error() {
        let rt = IoRuntime::with_workers(1).unwrap();
        let out = block_on(rt.spawn(async {
            if true {
                panic!("boom");
            }
        }));
        assert_eq!(out, Err(TaskError::Panicked("boom".into())));
    }
}
