//! The prompt expert: long-term memory, personas and the prompt smith behind one object (the
//! seed's `PromptExpert`).
//!
//! - [`PromptExpert::learn`] distills a finished session into lessons in long-term memory;
//! - [`PromptExpert::specialize`] has the model forge a domain persona from the lessons memory
//!   holds for the domain, and registers it;
//! - [`PromptExpert::hire`] instantiates a registered persona for a task, its system prompt
//!   enriched with the lessons recalled for the task: ready for a ReAct or conversation agent.
//!
//! Every model call goes through the expert's [`Chat`]; inside a process that is an
//! [`LlmDevice`](crate::llm::LlmDevice), so the expert's thinking is charged to that process.

use crate::distill::{learn, llm_distiller, Distiller, LearnError, LlmDistiller};
use crate::llm::Chat;
use crate::longmem::{LongMemory, StoreError};
use crate::persona::{instantiate, Instance, Persona, PersonaRegistry};
use crate::promptsmith::{forge_from_memory, ForgeOpts, SmithError, DEFAULT_FORGE_RECALL};
use agentos_abi::{ChatMessage, ToolSpec};
use thiserror::Error;

/// Why [`PromptExpert::specialize`] failed.
#[derive(Debug, Error)]
pub enum SpecializeError {
    /// The smith produced no prompt.
    #[error(transparent)]
    Smith(#[from] SmithError),
    /// Saving the persona failed.
    #[error("saving the persona: {0}")]
    Store(#[source] StoreError),
}

/// How [`PromptExpert::specialize`] shapes the persona.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecializeOpts {
    /// The persona's name (default: the domain).
    pub name: Option<String>,
    /// What it is for.
    pub goal: Option<String>,
    /// Its tools (their names go into the brief).
    pub tools: Vec<ToolSpec>,
}

/// Long-term memory, personas and a model, for learning and hiring specialists.
pub struct PromptExpert<C, D = LlmDistiller<C>> {
    chat: C,
    distiller: D,
    memory: LongMemory,
    personas: PersonaRegistry,
}

impl<C, D> std::fmt::Debug for PromptExpert<C, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptExpert")
            .field("memory", &self.memory)
            .field("personas", &self.personas)
            .finish()
    }
}

impl<C: Chat + Clone> PromptExpert<C> {
    /// An expert over `memory` and `personas` that distills with the model itself.
    pub fn new(chat: C, memory: LongMemory, personas: PersonaRegistry) -> Self {
        PromptExpert {
            distiller: llm_distiller(chat.clone()),
            chat,
            memory,
            personas,
        }
    }
}

impl<C: Chat, D: Distiller> PromptExpert<C, D> {
    /// An expert with its own distiller.
    pub fn with_distiller(
        chat: C,
        distiller: D,
        memory: LongMemory,
        personas: PersonaRegistry,
    ) -> Self {
        PromptExpert {
            chat,
            distiller,
            memory,
            personas,
        }
    }

    /// Fold the reusable lessons of a finished session into long-term memory, tagged `tags`;
    /// how many were new.
    pub async fn learn<T: AsRef<str>>(
        &mut self,
        messages: &[ChatMessage],
        tags: &[T],
    ) -> Result<usize, LearnError> {
        learn(&mut self.memory, &self.distiller, messages, tags).await
    }

    /// Forge (or refresh) the persona for `domain` from the lessons memory holds for it, and
    /// register it (under `opts.name`, default the domain).
    pub async fn specialize(
        &mut self,
        domain: &str,
        opts: SpecializeOpts,
    ) -> Result<Persona, SpecializeError> {
        let forge = ForgeOpts {
            goal: opts.goal,
            tools: opts.tools.iter().map(|t| t.name.clone()).collect(),
            recall: DEFAULT_FORGE_RECALL,
            ..ForgeOpts::default()
        };
        let system = forge_from_memory(&self.chat, domain, &mut self.memory, &forge).await?;
        let persona = Persona {
            name: opts.name.unwrap_or_else(|| domain.to_owned()),
            domain: domain.to_owned(),
            system,
            tools: opts.tools,
            ts: None,
        };
        self.personas.save(persona).map_err(SpecializeError::Store)
    }

    /// Persona `name` made ready for `task`, with up to `recall` lessons recalled into its
    /// prompt; `None` if there is no such persona.
    pub fn hire(&mut self, name: &str, task: &str, recall: usize) -> Option<Instance> {
        let persona = self.personas.get(name)?;
        Some(instantiate(persona, task, Some(&mut self.memory), recall))
    }

    /// The long-term memory.
    pub fn memory(&self) -> &LongMemory {
        &self.memory
    }

    /// The long-term memory, to add or recall lessons directly.
    pub fn memory_mut(&mut self) -> &mut LongMemory {
        &mut self.memory
    }

    /// The personas.
    pub fn personas(&self) -> &PersonaRegistry {
        &self.personas
    }

    /// The personas, to save one directly.
    pub fn personas_mut(&mut self) -> &mut PersonaRegistry {
        &mut self.personas
    }

    /// The model.
    pub fn chat(&self) -> &C {
        &self.chat
    }

    /// Take the memory and personas back (flushing is the memory's own business).
    pub fn into_parts(self) -> (LongMemory, PersonaRegistry) {
        (self.memory, self.personas)
    }
}
