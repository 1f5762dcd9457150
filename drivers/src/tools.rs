//! The tools device: a registry of named async tools, each with a JSON Schema for its
//! arguments, so an agent can offer them to an LLM and run the calls it makes.
//!
//! `read({name, args})` (or the seed's `{tool, input}`) runs a tool and answers with its value;
//! an unknown tool, arguments that are not valid JSON, a tool error or a tool panic is an
//! `{error: message}` value, not a device failure (the seed's semantics), and every call costs
//! one tool call. `read("list")` answers with the tools' [`ToolSpec`]s, free.

use crate::json::parse_json;
use crate::rt::{IoRuntime, RuntimeError};
use agentos_abi::device::{CallOutcome, DeviceMessage, ToolSpec, ToolsRequest};
use agentos_abi::driver::BoxFuture;
use agentos_abi::{Cost, Driver, DriverError, DriverHandle, OpenCtx, Reply, Value};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use thiserror::Error;

/// What a tool returns when it fails; the caller sees `{error: message}`.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ToolError(pub String);

impl ToolError {
    /// A tool error with this message.
    pub fn new(msg: impl Into<String>) -> Self {
        ToolError(msg.into())
    }
}

/// A registration was refused.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ToolRegistryError {
    /// The name is already registered.
    #[error("tool {0} is already registered")]
    Duplicate(String),
    /// The schema is not a JSON object.
    #[error("schema of tool {name} is not a JSON object: {why}")]
    BadSchema {
        /// The tool.
        name: String,
        /// What is wrong with it.
        why: String,
    },
}

/// A tool's implementation: arguments in, value out.
pub type ToolFn = Arc<dyn Fn(Value) -> BoxFuture<'static, Result<Value, ToolError>> + Send + Sync>;

/// A named tool: its spec (shown to models) and its implementation.
#[derive(Clone)]
pub struct Tool {
    spec: ToolSpec,
    run: ToolFn,
}

impl Tool {
    /// What a model sees: name, description and the JSON Schema of the arguments.
    pub fn spec(&self) -> &ToolSpec {
        &self.spec
    }
}

/// Named tools, listed in name order.
#[derive(Clone, Default)]
pub struct ToolRegistry {
    tools: BTreeMap<String, Tool>,
}

impl ToolRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        ToolRegistry::default()
    }

    /// Register an async tool. `schema` is the JSON Schema of its arguments (a JSON object).
    pub fn register<F, Fut>(
        &mut self,
        name: &str,
        description: &str,
        schema: &str,
        f: F,
    ) -> Result<&mut Self, ToolRegistryError>
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, ToolError>> + Send + 'static,
    {
        if self.tools.contains_key(name) {
            return Err(ToolRegistryError::Duplicate(name.to_owned()));
        }
        match serde_json::from_str::<serde_json::Value>(schema) {
            Ok(serde_json::Value::Object(_)) => {}
            Ok(other) => {
                return Err(ToolRegistryError::BadSchema {
                    name: name.to_owned(),
                    why: format!("got {other}"),
                })
            }
            Err(e) => {
                return Err(ToolRegistryError::BadSchema {
                    name: name.to_owned(),
                    why: e.to_string(),
                })
            }
        }
        let run: ToolFn = Arc::new(move |args| Box::pin(f(args)));
        self.tools.insert(
            name.to_owned(),
            Tool {
                spec: ToolSpec {
                    name: name.to_owned(),
                    description: description.to_owned(),
                    parameters: schema.to_owned(),
                },
                run,
            },
        );
        Ok(self)
    }

    /// Register a synchronous tool. It runs inline on the calling process's scheduler thread
    /// (no task hop, and a deterministic kernel stays deterministic): keep it short, and put
    /// CPU-bound work on the worker device.
    pub fn register_sync<F>(
        &mut self,
        name: &str,
        description: &str,
        schema: &str,
        f: F,
    ) -> Result<&mut Self, ToolRegistryError>
    where
        F: Fn(Value) -> Result<Value, ToolError> + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.register(name, description, schema, move |args| {
            let f = f.clone();
            async move { f(args) }
        })
    }

    /// The specs of every tool, in name order (to put in a [`agentos_abi::ChatRequest`]).
    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools.values().map(|t| t.spec.clone()).collect()
    }

    /// A tool by name.
    pub fn get(&self, name: &str) -> Option<&Tool> {
        self.tools.get(name)
    }

    /// Number of tools.
    pub fn len(&self) -> usize {
        self.tools.len()
    }

    /// No tools registered.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    /// Start tool `name` on `args`. A string `args` holding a JSON object or array (an LLM
    /// tool call's arguments) is parsed first. Failures are [`CallOutcome::Err`].
    pub fn call(&self, name: &str, args: Value) -> BoxFuture<'static, CallOutcome> {
        let Some(tool) = self.tools.get(name) else {
            let msg = format!("no such tool: {name}");
            return Box::pin(async move { CallOutcome::Err(msg) });
        };
        let args = match args {
            Value::Str(s) if s.trim_start().starts_with(['{', '[']) => match parse_json(&s) {
                Ok(v) => v,
                Err(e) => {
                    let msg = format!("invalid arguments for {name}: {e}");
                    return Box::pin(async move { CallOutcome::Err(msg) });
                }
            },
            other => other,
        };
        let fut = (tool.run)(args);
        Box::pin(async move {
            match fut.await {
                Ok(v) => CallOutcome::Ok(v),
                Err(e) => CallOutcome::Err(e.0),
            }
        })
    }
}

/// The tools device over a [`ToolRegistry`].
pub struct ToolDriver {
    name: String,
    registry: Arc<ToolRegistry>,
    runtime: IoRuntime,
}

impl ToolDriver {
    /// A `tools` device over `registry`, running tools on the process-wide driver runtime.
    pub fn new(registry: ToolRegistry) -> Result<Self, RuntimeError> {
        Ok(ToolDriver {
            name: "tools".into(),
            registry: Arc::new(registry),
            runtime: IoRuntime::current_or_global()?,
        })
    }

    /// Register under another device name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Run tools on `runtime`.
    pub fn with_runtime(mut self, runtime: IoRuntime) -> Self {
        self.runtime = runtime;
        self
    }

    /// The registry (e.g. for its specs).
    pub fn registry(&self) -> &ToolRegistry {
        &self.registry
    }
}

impl Driver for ToolDriver {
    fn name(&self) -> &str {
        &self.name
    }
    fn open(&self, at: OpenCtx) -> BoxFuture<'static, Result<Arc<dyn DriverHandle>, DriverError>> {
        if let Err(e) = at.unscoped(&self.name) {
            return Box::pin(async move { Err(e) });
        }
        let h: Arc<dyn DriverHandle> = Arc::new(ToolHandle {
            registry: self.registry.clone(),
            runtime: self.runtime.clone(),
        });
        Box::pin(async move { Ok(h) })
    }
}

struct ToolHandle {
    registry: Arc<ToolRegistry>,
    runtime: IoRuntime,
}

const ONE_CALL: Cost = Cost {
    tokens: 0,
    tool_calls: 1,
    usd_micros: 0,
    reductions: 0,
};

impl DriverHandle for ToolHandle {
    fn read(&self, req: Value) -> BoxFuture<'static, Result<Reply, DriverError>> {
        let call = match ToolsRequest::from_value(req) {
            Ok(ToolsRequest::List) => {
                let specs =
                    Value::List(self.registry.specs().iter().map(|s| s.to_value()).collect());
                return Box::pin(async move { Ok(Reply::free(specs)) });
            }
            Ok(ToolsRequest::Call(c)) => c,
            Err(e) => {
                return Box::pin(async move { Err(DriverError::BadRequest(format!("tools: {e}"))) })
            }
        };
        let name = call.name.clone();
        // Done at once (every synchronous tool): no task hop (see `IoRuntime::start`).
        let task = self
            .runtime
            .start(self.registry.call(&call.name, call.args));
        Box::pin(async move {
            let outcome = match task.await {
                Ok(o) => o,
                Err(e) => CallOutcome::Err(format!("tool {name} {e}")),
            };
            Ok(Reply {
                value: outcome.to_value(),
                cost: ONE_CALL,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> ToolRegistry {
        let mut r = ToolRegistry::new();
        r.register_sync("add", "adds a and b", r#"{"type":"object"}"#, |args| {
            let a = args
                .get("a")
                .and_then(Value::as_u64)
                .ok_or_else(|| ToolError::new("a?"))?;
            let b = args.get("b").and_then(Value::as_u64).unwrap_or(0);
            Ok(Value::U64(a + b))
        })
        .unwrap();
        r
    }

    #[test]
    fn registration_checks_names_and_schemas() {
        let mut r = registry();
        assert!(matches!(
            r.register_sync("add", "", "{}", Ok),
            Err(ToolRegistryError::Duplicate(_))
        ));
        assert!(matches!(
            r.register_sync("x", "", "[1]", Ok),
            Err(ToolRegistryError::BadSchema { .. })
        ));
        assert_eq!(r.specs()[0].name, "add");
    }

    #[test]
    fn calls_parse_json_arguments() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let r = registry();
        let out = rt.block_on(r.call("add", Value::Str(r#"{"a":2,"b":3}"#.into())));
        assert_eq!(out, CallOutcome::Ok(Value::U64(5)));
        let out = rt.block_on(r.call("add", Value::Str("{oops".into())));
        assert!(matches!(out, CallOutcome::Err(m) if m.contains("invalid arguments")));
        let out = rt.block_on(r.call("add", Value::Unit));
        assert_eq!(out, CallOutcome::Err("a?".into()));
        let out = rt.block_on(r.call("nope", Value::Unit));
        assert_eq!(out, CallOutcome::Err("no such tool: nope".into()));
    }
}
