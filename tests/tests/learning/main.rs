//! The learning modules: long-term memory (dedup, tags, uses, recall ranking, persistence in a
//! JSON-lines file and a tantivy index), distillation (parsing hostile model output, learning),
//! personas (a persisted registry, instantiation), the prompt smith and evolution (tournaments
//! with a margin, generations, metered fitness), and the prompt expert end to end on a
//! deterministic kernel whose LLM device is a scripted provider. No network, no wall clock.

mod common;
mod distill;
mod evolve;
mod expert;
mod longmem;
mod persona;
#[path = "../kernel/util.rs"]
mod util;
