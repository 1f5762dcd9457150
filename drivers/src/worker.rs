//! The worker device: CPU-bound tasks on a bounded thread pool.
//!
//! Tasks are registered by name as `Fn(Value) -> Result<Value, String>`. `read({task, input})`
//! queues the task on a [`WorkerPool`] of a fixed number of threads (the concurrency limit)
//! and the calling process waits, parked, until it finishes. As in the seed, an unknown task is
//! a bad request and a failed task fails the read; a panicking task is caught on its worker
//! thread and reported as a failure, so neither the pool nor the kernel goes down. A finished
//! task costs one tool call.

use crate::rt::panic_message;
use agentos_abi::device::{DeviceMessage, WorkerRequest};
use agentos_abi::driver::BoxFuture;
use agentos_abi::{Cost, Driver, DriverError, DriverHandle, OpenCtx, Reply, Value};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::Arc;
use thiserror::Error;
use tokio::sync::oneshot;

/// A CPU-bound task.
pub type TaskFn = Arc<dyn Fn(Value) -> Result<Value, String> + Send + Sync>;

/// Why a task produced no value.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum TaskFailure {
    /// The task returned an error.
    #[error("{0}")]
    Failed(String),
    /// The task panicked.
    #[error("panicked: {0}")]
    Panicked(String),
    /// The pool shut down before the task ran.
    #[error("worker pool is shut down")]
    PoolClosed,
}

/// The pool could not be started.
#[derive(Debug, Error)]
#[error("cannot start worker thread: {0}")]
pub struct PoolError(#[from] std::io::Error);

struct Job {
    task: TaskFn,
    input: Value,
    reply: oneshot::Sender<Result<Value, TaskFailure>>,
}

/// A fixed set of threads running queued tasks; at most `threads` run at once and the rest
/// wait in FIFO order. Dropping the pool lets queued jobs finish, then the threads exit.
pub struct WorkerPool {
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    threads: usize,
}

impl WorkerPool {
    /// A pool of `threads` worker threads (at least one).
    pub fn new(threads: usize) -> Result<Self, PoolError> {
        let threads = threads.max(1);
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("agentos-worker-{i}"))
                .spawn(move || worker_loop(&rx))?;
        }
        Ok(WorkerPool {
            queue: Mutex::new(Some(tx)),
            threads,
        })
    }

    /// The concurrency limit.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Queue `task(input)`; the future resolves when it has run.
    pub fn run(
        &self,
        task: TaskFn,
        input: Value,
    ) -> BoxFuture<'static, Result<Value, TaskFailure>> {
        let (reply, rx) = oneshot::channel();
        let sent = match &*self.queue.lock() {
            Some(q) => q.send(Job { task, input, reply }).is_ok(),
            None => false,
        };
        Box::pin(async move {
            if !sent {
                return Err(TaskFailure::PoolClosed);
            }
            rx.await.unwrap_or(Err(TaskFailure::PoolClosed))
        })
    }

    /// Stop taking jobs; queued jobs still run.
    pub fn close(&self) {
        self.queue.lock().take();
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.close();
    }
}

fn worker_loop(rx: &std::sync::Mutex<mpsc::Receiver<Job>>) {
    loop {
        let job = {
            let Ok(guard) = rx.lock() else { return };
            match guard.recv() {
                Ok(j) => j,
                Err(_) => return,
            }
        };
        if job.reply.is_closed() {
            continue; // the caller went away (its process died)
        }
        let Job { task, input, reply } = job;
        let out = match catch_unwind(AssertUnwindSafe(|| task(input))) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(TaskFailure::Failed(e)),
            Err(p) => Err(TaskFailure::Panicked(panic_message(p.as_ref()))),
        };
        let _ = reply.send(out);
    }
}

/// The worker device: named tasks over a [`WorkerPool`].
pub struct WorkerDriver {
    name: String,
    tasks: Arc<HashMap<String, TaskFn>>,
    pool: Arc<WorkerPool>,
}

impl WorkerDriver {
    /// A `worker` device with no tasks yet, over a pool of `threads` threads.
    pub fn new(threads: usize) -> Result<Self, PoolError> {
        Ok(WorkerDriver {
            name: "worker".into(),
            tasks: Arc::new(HashMap::new()),
            pool: Arc::new(WorkerPool::new(threads)?),
        })
    }

    /// Register (or replace) task `name`. Call before registering the driver with a kernel.
    pub fn task<F>(mut self, name: &str, f: F) -> Self
    where
        F: Fn(Value) -> Result<Value, String> + Send + Sync + 'static,
    {
        let mut tasks = (*self.tasks).clone();
        tasks.insert(name.to_owned(), Arc::new(f));
        self.tasks = Arc::new(tasks);
        self
    }

    /// Register under another device name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The pool.
    pub fn pool(&self) -> &Arc<WorkerPool> {
        &self.pool
    }
}

impl Driver for WorkerDriver {
    fn name(&self) -> &str {
        &self.name
    }
    fn open(&self, at: OpenCtx) -> BoxFuture<'static, Result<Arc<dyn DriverHandle>, DriverError>> {
        if let Err(e) = at.unscoped(&self.name) {
            return Box::pin(async move { Err(e) });
        }
        let h: Arc<dyn DriverHandle> = Arc::new(WorkerHandle {
            tasks: self.tasks.clone(),
            pool: self.pool.clone(),
        });
        Box::pin(async move { Ok(h) })
    }
}

struct WorkerHandle {
    tasks: Arc<HashMap<String, TaskFn>>,
    pool: Arc<WorkerPool>,
}

impl DriverHandle for WorkerHandle {
    fn read(&self, req: Value) -> BoxFuture<'static, Result<Reply, DriverError>> {
        let req = match WorkerRequest::from_value(req) {
            Ok(r) => r,
            Err(e) => {
                return Box::pin(
                    async move { Err(DriverError::BadRequest(format!("worker: {e}"))) },
                )
            }
        };
        let Some(task) = self.tasks.get(&req.task).cloned() else {
            let msg = format!("worker: no such task \"{}\"", req.task);
            return Box::pin(async move { Err(DriverError::BadRequest(msg)) });
        };
        let name = req.task;
        let run = self.pool.run(task, req.input);
        Box::pin(async move {
            match run.await {
                Ok(value) => Ok(Reply {
                    value,
                    cost: Cost {
                        tool_calls: 1,
                        ..Cost::default()
                    },
                }),
                Err(e) => Err(DriverError::Failed(format!("worker task {name}: {e}"))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn tasks_run_fail_and_panic_without_killing_the_pool() {
        let pool = WorkerPool::new(1).unwrap();
        let double: TaskFn = Arc::new(|v| Ok(Value::U64(v.as_u64().unwrap_or(0) * 2)));
        let fail: TaskFn = Arc::new(|_| Err("nope".into()));
        let boom: TaskFn = Arc::new(|_| panic!("kaboom"));
        assert_eq!(
            block_on(pool.run(double.clone(), Value::U64(4))),
            Ok(Value::U64(8))
        );
        assert_eq!(
            block_on(pool.run(fail, Value::Unit)),
            Err(TaskFailure::Failed("nope".into()))
        );
        assert_eq!(
            block_on(pool.run(boom, Value::Unit)),
            Err(TaskFailure::Panicked("kaboom".into()))
        );
        // The single worker thread survived the panic.
        assert_eq!(
            block_on(pool.run(double.clone(), Value::U64(1))),
            Ok(Value::U64(2))
        );
        pool.close();
        assert_eq!(
            block_on(pool.run(double, Value::U64(1))),
            Err(TaskFailure::PoolClosed)
        );
    }
}
