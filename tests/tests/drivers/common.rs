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

/// Boot init holding the `device` cap, attenuate it to `scope` (and to `rights`, when given),
/// open it and run `body(sys, handle)`; return what the body reported. A refused open is
/// reported as the only result.
pub fn with_scoped<F, Fut>(
    k: &Kernel,
    device: &str,
    scope: Scope,
    rights: Option<Rights>,
    body: F,
) -> Vec<Result<Value, SysError>>
where
    F: Fn(Sys, CapRef) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<Result<Value, SysError>>> + Send + 'static,
{
    let seen: Log<Vec<Result<Value, SysError>>> = log();
    let out = seen.clone();
    let name = device.to_owned();
    let body = Arc::new(body);
    let image = init(move |sys: Sys, boot: SysMsg| {
        let (name, out, body, scope) = (name.clone(), out.clone(), body.clone(), scope.clone());
        async move {
            let dev = boot
                .device(&name)
                .ok_or_else(|| ExitReason::fault("no device"))?;
            let cap = sys.attenuate(
                dev,
                Attenuation {
                    rights,
                    scope: Some(scope),
                    ..Attenuation::default()
                },
            )?;
            let results = match sys.open(cap).await {
                Ok(h) => body(sys.clone(), h).await,
                Err(e) => vec![Err(e)],
            };
            push(&out, results);
            Ok(())
        }
    });
    let reason = boot_with_and_wait(
        k,
        image,
        BootOpts {
            grant: vec![device.to_owned()],
            ..Default::default()
        },
    );
    assert_eq!(
        reason,
        ExitReason::Normal,
        "the test process exits normally"
    );
    snapshot(&seen).pop().unwrap_or_default()
}

/// A request map from `(key, value)` pairs.
pub fn req(pairs: &[(&str, Value)]) -> Value {
    Value::Map(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    )
}

/// The `status` of a device reply (panics on a failed call or a reply without one).
pub fn status(r: &Result<Value, SysError>) -> u64 {
    match r {
        Ok(v) => v
            .get("status")
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("no status in {v:?}")),
        Err(e) => panic!("the call failed: {e}"),
    }
}

/// The `error` reason of a refusal (`""` when there is none).
pub fn reason(r: &Result<Value, SysError>) -> String {
    r.as_ref()
        .ok()
        .and_then(|v| v.get("error"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}
