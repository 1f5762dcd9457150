//! Agent scenarios: `run_turn` and the ReAct and conversation agent images on a deterministic
//! kernel, talking to a scripted LLM device (`ScriptedProvider` behind an `LlmDriver`) and a
//! real tools device (`ToolRegistry` behind a `ToolDriver`), both granted at boot.

mod common;
mod constrained;
mod images;
mod real_model;
mod turn;
#[path = "../kernel/util.rs"]
mod util;
