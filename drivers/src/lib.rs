//! # agentos-drivers — how agents touch the world
//!
//! This crate owns the standard devices. Each is an [`agentos_abi::Driver`] the host registers
//! with a kernel; a process holding the device capability opens it and exchanges the request
//! and reply values defined in [`agentos_abi::device`]:
//!
//! - [`llm`]: [`llm::LlmDriver`] over a [`llm::Provider`] — OpenAI-compatible chat completions
//!   ([`llm::OpenAiProvider`]: tools, tool calls, JSON-schema responses, llama.cpp grammars,
//!   streaming, cached-token usage, retries honouring `Retry-After`, tool calls recovered from
//!   the text of small models), Anthropic messages ([`llm::AnthropicProvider`]) and a
//!   [`llm::ScriptedProvider`] for tests. Costs are the provider's reported tokens, priced per
//!   model by a [`llm::PriceTable`]; tokens are estimated only when no usage is reported.
//! - [`tools`]: [`tools::ToolRegistry`] of named async tools with JSON Schemas, and
//!   [`tools::ToolDriver`]; one tool call charged per call.
//! - [`kv`]: [`kv::KvDriver`] over an in-memory ([`kv::MemoryKv`]) or redb
//!   ([`kv::RedbKv`]) store.
//! - [`worker`]: [`worker::WorkerDriver`], named CPU-bound tasks on a bounded
//!   [`worker::WorkerPool`].
//! - [`gateway`]: [`gateway::GatewayDriver`], outbound forwarding (the seed's gateway) and an
//!   inbound request queue that host code feeds through a [`gateway::GatewayClient`].
//! - `wasm` (feature `wasm`): `wasm::WasmDriver`, named WebAssembly modules (wasmtime) whose exports are
//!   called with numeric arguments, each call in a fresh store under a fuel limit (charged as
//!   reductions, plus one tool call) and a memory limit.
//! - [`fs`]: [`fs::FsDriver`], the project files of the root in the cap's scope: git
//!   membership with the session's `pick`/`hide`/`view` overlay, bare paths checked inside
//!   the driver (escapes and symlinks out of the root are 403), binary files 415, atomic
//!   compare-and-swap writes (409 when the disk moved). Replies are maps with an HTTP-like
//!   `status`; the module docs are the contract.
//! - [`exec`]: [`exec::ExecDriver`], subprocesses in the scoped root under bubblewrap (no
//!   network, only the root writable, a scrubbed environment), output pulled one `next` event
//!   at a time so each byte is a journaled read; stop = SIGTERM, SIGKILL after a grace; a
//!   closed handle kills what it started.
//! - [`rt`]: [`rt::IoRuntime`], the tokio runtime drivers run their I/O on. The kernel polls
//!   processes on its own threads, so a driver spawns its I/O there and returns a future that
//!   only waits for the result. [`json`]: `Value` ⇄ JSON at the LLM and tool edges.
//!
//! The seed's secure gateway (sealing forwarded bodies with the transport key) and a local
//! model provider are not here yet.
//!
//! **Invariant:** a driver never panics on bad input and never blocks a kernel scheduler
//! thread on I/O: every failure is a value the caller sees (a `DriverError`, or an
//! `{error: ..}` value where the seed says so), panics inside tools and worker tasks are
//! caught, and every operation reports its cost (tokens, tool calls, usd, reductions) so the
//! kernel can charge the caller's account before the result is delivered. JSON appears only at
//! the HTTP and tool edges, never on the message path.
//!
//! **Features:** `http` (default: the OpenAI and Anthropic providers, on reqwest) and `wasm`
//! (off: the wasm device, on wasmtime). With neither, the crate is the device logic on tokio
//! and redb. README.md has the matrix and a runnable example.
//!
//! **API boundary:** drivers implement the driver ABI in `agentos-abi` (`Driver`/`DriverHandle`,
//! with requests and replies from `agentos_abi::device`) and depend on `agentos-abi` only —
//! never on the kernel. A fork of the kernel keeps every driver; userland talks to these
//! devices through `agentos_abi::device` without depending on this crate.

pub mod exec;
pub mod fs;
pub mod gateway;
pub mod json;
pub mod kv;
pub mod llm;
pub mod rt;
mod status;
pub mod tools;
#[cfg(feature = "wasm")]
pub mod wasm;
pub mod worker;

pub use exec::{ExecConfig, ExecDriver, Sandbox};
pub use fs::FsDriver;
pub use gateway::{GatewayClient, GatewayDriver};
pub use kv::KvDriver;
#[cfg(feature = "http")]
pub use llm::{AnthropicProvider, OpenAiProvider};
pub use llm::{LlmDriver, Provider, ScriptedProvider};
pub use rt::IoRuntime;
pub use tools::{ToolDriver, ToolRegistry};
#[cfg(feature = "wasm")]
pub use wasm::WasmDriver;
pub use worker::WorkerDriver;

// The README is the crate page on a registry; its examples run as doctests here (`cargo xtask
// tidy` checks that this hook exists and that the README has a Rust example).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
