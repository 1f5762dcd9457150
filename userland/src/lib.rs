//! # agentos-userland — programs written against the syscall surface
//!
//! This crate owns the seed's userland, function by function. Here today, the supervision
//! layer: [`mod@supervisor`] (one_for_one, one_for_all, rest_for_one; permanent, transient and
//! temporary children; restart intensity; flapping backoff on the kernel clock), [`mod@nursery`]
//! (structured concurrency: the first failure cancels the siblings, `join` names it) and
//! [`nameservice`] (a process mapping names to send-only capabilities, cleaned up when owners
//! die), and [`agents`]: `run_turn` and the ReAct and conversation agent images (an agent
//! reaches models and tools only through device handles and spends only what those devices
//! charge its account; a model without native tool calls is asked for one grammar- or
//! schema-constrained action per step), and `sandbox` (feature `sandbox`): untrusted code as WebAssembly processes that reach the
//! kernel only through a syscall allowlist, under fuel and memory limits, torn down with their
//! process.
//!
//! Every program is an [`agentos_abi::Image`] constructor or an async helper generic over
//! `S: Syscalls`, with a small typed error. Protocols between processes are tagged
//! [`agentos_abi::Value`] maps (`{"$": tag, ..}`), so mailboxes stay snapshottable; a helper
//! that waits for an answer does so with a selective receive, so every other message stays in
//! the mailbox, in order, and it monitors the server for the call, so a server that dies before
//! answering fails the call instead of leaving it waiting.
//!
//! **Invariant:** userland never reaches into the kernel: every effect goes through a syscall,
//! so a program holds exactly the authority its capabilities grant. Links here deliver `Down`
//! messages and never kill, so whatever must not outlive its owner (a supervisor's or a
//! nursery's children) is held by a scope process that kills it when the owner dies.
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

pub mod agents;
pub mod distill;
pub mod evolve;
pub mod expert;
pub mod llm;
pub mod longmem;
pub mod nameservice;
pub mod nursery;
mod persist;
pub mod persona;
pub mod promptsmith;
mod proto;
#[cfg(feature = "sandbox")]
pub mod sandbox;
mod scope;
pub mod supervisor;

pub use nameservice::{lookup, name_service, register, unregister, NameError};
pub use nursery::{nursery, Nursery, NurseryError};
pub use supervisor::{
    supervisor, which_children, Backoff, ChildInfo, ChildSpec, Intensity, Restart, Shutdown,
    Strategy, SupervisorError, SupervisorSpec,
};

// The README is the crate page on a registry; its examples run as doctests here (`cargo xtask
// tidy` checks that this hook exists and that the README has a Rust example).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
