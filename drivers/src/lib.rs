//! # agentos-drivers — how agents touch the world
//!
//! This crate will own the standard devices: `llm` (OpenAI-compatible and Anthropic providers
//! plus a scripted provider for tests), `tools` (a registry of named async tools with JSON
//! Schemas), `kv` (in-memory and persistent key/value), `gateway` (sealed and unsealed),
//! `worker` (a bounded CPU pool) and `wasm` (wasmtime with fuel and memory limits).
//!
//! **Invariant:** a driver never panics on bad input; every failure is a value the caller sees,
//! and every operation reports its cost (tokens, tool calls, usd, reductions) so the kernel can
//! charge the caller's account before the result is delivered.
//!
//! **API boundary:** drivers implement the driver ABI in `agentos-abi` (`Driver`/`DriverHandle`)
//! and depend on `agentos-abi` only — never on the kernel. A fork of the kernel keeps every driver.
//!
//! Status: the device implementations land with the drivers issue; until then this crate holds
//! only this essay, and the kernel's own tests use small in-test drivers written against the ABI.
