//! # agentos-userland — programs written against the syscall surface
//!
//! This crate will own the seed's userland, function by function: `supervisor` (one_for_one,
//! one_for_all, rest_for_one, restart intensity, flapping backoff), `nursery` (structured
//! concurrency), `nameservice`, the ReAct and conversation agents with `run_turn`, the WASM
//! `sandbox`, `longmem`, `distill`, `persona`, `promptsmith`, `evolve` and `expert`.
//!
//! **Invariant:** userland never reaches into the kernel: every effect goes through a syscall,
//! so a program holds exactly the authority its capabilities grant.
//!
//! **API boundary:** depends on `agentos-abi` (the syscall trait, messages, driver ABI) and not on
//! `agentos-kernel`; the kernel is only a dev-dependency for tests.
//!
//! The learning modules turn finished work into better prompts: `longmem` (deduplicated lessons,
//! recalled by keyword and tag, persisted through a store trait with a JSON-lines file and,
//! behind the `tantivy` feature, a tantivy index), `distill` (a session into at most three
//! lessons, parsed defensively from model output), `persona` (named domain prompts, and
//! `instantiate` to ready one for a task), `promptsmith` (the model writes and refines system
//! prompts), `evolve` (tournaments with a margin, generations of refinements, metered fitness)
//! and `expert` (all of them behind `PromptExpert`: learn, specialize, hire). They reach a model
//! through `llm::Chat`, which in a process is the LLM device read through its syscall handle, so
//! the calls are charged to the caller's account.
//!
//! Status: the learning modules are here; the rest of the programs land with the userland issue.

pub mod distill;
pub mod evolve;
pub mod expert;
pub mod llm;
pub mod longmem;
mod persist;
pub mod persona;
pub mod promptsmith;
