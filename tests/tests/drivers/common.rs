//! Helpers for driver scenarios: boot a process with device grants and collect what it saw.

#![allow(dead_code)]

use crate::util::*;
use agentos_abi::*;
use agentos_kernel::*;
use std::future::Future;
use std::sync::Arc;

/// What a test process reports: the results of its device calls and its account usage.
#[derive(Clone, Debug)]
pub struct Seen {
    pub results: Vec<Result<Value, SysError>>,
    pub usage: Usage,
}

/// Boot `body(sys, handles)` as init with `grant`ed devices opened (in order) under `quota`,
/// run it to exit and return its exit reason and what it reported (if it got that far).
pub fn run_process<F, Fut>(
    k: &Kernel,
    grant: &[&str],
    quota: Quota,
    body: F,
) -> (ExitReason, Option<Seen>)
where
    F: Fn(Sys, Vec<CapRef>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<Result<Value, SysError>>> + Send + 'static,
{
    let seen: Log<Seen> = log();
    let out = seen.clone();
    let names: Vec<String> = grant.iter().map(|s| s.to_string()).collect();
    let body = Arc::new(body);
    let image = init(move |sys: Sys, boot: SysMsg| {
        let names = names.clone();
        let out = out.clone();
        let body = body.clone();
        async move {
            let mut handles = Vec::new();
            for n in &names {
                let dev = boot
                    .device(n)
                    .ok_or_else(|| ExitReason::fault("no device"))?;
                let h = sys
                    .open(dev)
                    .await
                    .map_err(|e| ExitReason::fault(e.to_string()))?;
                handles.push(h);
            }
            let results = body(sys.clone(), handles).await;
            push(
                &out,
                Seen {
                    results,
                    usage: sys.usage(),
                },
            );
            Ok(())
        }
    });
    let reason = boot_with_and_wait(
        k,
        image,
        BootOpts {
            grant: grant.iter().map(|s| s.to_string()).collect(),
            quota,
            ..Default::default()
        },
    );
    (reason, snapshot(&seen).pop())
}
