//! Personas: named, domain-specialized system prompts with their tools (the seed's
//! `PersonaRegistry` and `instantiate`).
//!
//! A [`PersonaRegistry`] holds personas by name; saving a name again replaces it. It is
//! persisted through [`PersonaStore`] ([`PersonaFile`]: a JSON-lines file replaced atomically on
//! each save), and a save is written through before it takes effect.
//!
//! [`instantiate`] turns a persona and a task into an [`Instance`]: the persona's system prompt,
//! enriched with the lessons long-term memory recalls for the persona's domain and the task,
//! plus the task and the persona's tools. An instance is what the ReAct and conversation agent
//! images take: `system` is their spec's system prompt, `task` the ReAct spec's task (or a
//! conversation's task message), `tools` the turn's tool offer (empty: whatever the tools
//! device lists). [`Instance::to_value`] carries it as image arguments.

use crate::longmem::{system_clock, Clock, Lesson, LongMemory, StoreError};
use crate::persist::JsonLinesTable;
use agentos_abi::device::{from_value, to_value, ValueError};
use agentos_abi::{ToolSpec, Value};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// How many lessons [`instantiate`] recalls by default.
pub const DEFAULT_RECALL: usize = 4;

/// The heading of the lessons appended to an instance's system prompt (the seed's wording).
pub const LESSONS_HEADING: &str = "Lessons from past work (apply when relevant):";

/// A named, domain-specialized agent configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persona {
    /// Its name (unique in a registry).
    pub name: String,
    /// The domain it specializes in.
    pub domain: String,
    /// Its system prompt.
    pub system: String,
    /// The tools it offers (empty: whatever the tools device lists).
    #[serde(default)]
    pub tools: Vec<ToolSpec>,
    /// When it was saved (ms); stamped by the registry when `None`.
    #[serde(default)]
    pub ts: Option<u64>,
}

impl Persona {
    /// A persona without tools or timestamp.
    pub fn new(
        name: impl Into<String>,
        domain: impl Into<String>,
        system: impl Into<String>,
    ) -> Self {
        Persona {
            name: name.into(),
            domain: domain.into(),
            system: system.into(),
            tools: Vec::new(),
            ts: None,
        }
    }

    /// With these tools.
    pub fn with_tools(mut self, tools: Vec<ToolSpec>) -> Self {
        self.tools = tools;
        self
    }
}

/// Where a [`PersonaRegistry`] keeps its personas between runs.
pub trait PersonaStore: Send {
    /// Every stored persona.
    fn load(&mut self) -> Result<Vec<Persona>, StoreError>;
    /// Insert or replace `persona` (by name).
    fn save(&mut self, persona: &Persona) -> Result<(), StoreError>;
}

/// Personas in a JSON-lines file (one per line, by name), replaced atomically on each save.
#[derive(Debug)]
pub struct PersonaFile {
    table: JsonLinesTable<String, Persona>,
}

impl PersonaFile {
    /// Open the store at `path` (the file is created on the first save).
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, StoreError> {
        Ok(PersonaFile {
            table: JsonLinesTable::open(path, |p: &Persona| p.name.clone())?,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        self.table.path()
    }
}

impl PersonaStore for PersonaFile {
    fn load(&mut self) -> Result<Vec<Persona>, StoreError> {
        Ok(self.table.rows())
    }
    fn save(&mut self, persona: &Persona) -> Result<(), StoreError> {
        self.table.upsert([(persona.name.clone(), persona.clone())])
    }
}

/// Personas by name.
pub struct PersonaRegistry {
    by: BTreeMap<String, Persona>,
    store: Option<Box<dyn PersonaStore>>,
    clock: Clock,
}

impl fmt::Debug for PersonaRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PersonaRegistry")
            .field("personas", &self.by.keys().collect::<Vec<_>>())
            .field("persistent", &self.store.is_some())
            .finish()
    }
}

impl Default for PersonaRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl PersonaRegistry {
    /// An empty registry that is not persisted, on the host clock.
    pub fn new() -> Self {
        PersonaRegistry {
            by: BTreeMap::new(),
            store: None,
            clock: system_clock(),
        }
    }

    /// A registry persisted in `store`, holding what it holds.
    pub fn open(store: impl PersonaStore + 'static) -> Result<Self, StoreError> {
        let mut store: Box<dyn PersonaStore> = Box::new(store);
        let by = store
            .load()?
            .into_iter()
            .map(|p| (p.name.clone(), p))
            .collect();
        Ok(PersonaRegistry {
            by,
            store: Some(store),
            clock: system_clock(),
        })
    }

    /// Stamp saves with `clock`.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Save (or replace) `persona` by name, stamping it now if it has no timestamp; the saved
    /// persona. Written to the store first: on failure the registry is unchanged.
    pub fn save(&mut self, mut persona: Persona) -> Result<Persona, StoreError> {
        if persona.ts.is_none() {
            persona.ts = Some((self.clock)());
        }
        if let Some(store) = &mut self.store {
            store.save(&persona)?;
        }
        self.by.insert(persona.name.clone(), persona.clone());
        Ok(persona)
    }

    /// A persona by name.
    pub fn get(&self, name: &str) -> Option<&Persona> {
        self.by.get(name)
    }

    /// Every persona, by name.
    pub fn list(&self) -> impl Iterator<Item = &Persona> {
        self.by.values()
    }

    /// The personas of `domain`, by name.
    pub fn for_domain<'a>(&'a self, domain: &'a str) -> impl Iterator<Item = &'a Persona> + 'a {
        self.by.values().filter(move |p| p.domain == domain)
    }

    /// How many it holds.
    pub fn len(&self) -> usize {
        self.by.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.by.is_empty()
    }
}

/// A persona made ready for one task: what an agent image is configured with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// The persona it came from.
    pub persona: String,
    /// The task.
    pub task: String,
    /// The system prompt: the persona's, with the recalled lessons appended.
    pub system: String,
    /// The tools to offer (empty: whatever the tools device lists).
    #[serde(default)]
    pub tools: Vec<ToolSpec>,
    /// The lessons that were recalled into the prompt.
    #[serde(default)]
    pub lessons: Vec<Lesson>,
}

impl Instance {
    /// As image arguments: `{persona, task, system, tools, lessons}`.
    pub fn to_value(&self) -> Value {
        // Cannot fail: string keys and 64-bit numbers only.
        to_value(self).unwrap_or_default()
    }

    /// Read image arguments written by [`Instance::to_value`].
    pub fn from_value(v: Value) -> Result<Self, ValueError> {
        from_value(v)
    }
}

/// The system prompt `system` with `lessons` appended under [`LESSONS_HEADING`] (unchanged when
/// there are none).
pub fn with_lessons(system: &str, lessons: &[Lesson]) -> String {
    if lessons.is_empty() {
        return system.to_owned();
    }
    let list = lessons
        .iter()
        .map(|l| format!("- {}", l.text))
        .collect::<Vec<_>>()
        .join("\n");
    format!("{system}\n\n{LESSONS_HEADING}\n{list}")
}

/// Make `persona` ready for `task`: recall up to `recall` lessons for `"{domain} {task}"` from
/// `memory` (counting their use) and append them to the system prompt.
pub fn instantiate(
    persona: &Persona,
    task: &str,
    memory: Option<&mut LongMemory>,
    recall: usize,
) -> Instance {
    let lessons = match memory {
        Some(m) => m.recall(&format!("{} {task}", persona.domain), recall),
        None => Vec::new(),
    };
    Instance {
        persona: persona.name.clone(),
        task: task.to_owned(),
        system: with_lessons(&persona.system, &lessons),
        tools: persona.tools.clone(),
        lessons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lessons_are_appended_under_the_seed_heading() {
        let l = |text: &str| Lesson {
            id: 1,
            text: text.into(),
            tags: vec![],
            ts: 0,
            uses: 0,
        };
        assert_eq!(with_lessons("Be good.", &[]), "Be good.");
        assert_eq!(
            with_lessons("Be good.", &[l("Do a"), l("Do b")]),
            "Be good.\n\nLessons from past work (apply when relevant):\n- Do a\n- Do b"
        );
    }

    #[test]
    fn instances_round_trip_as_values() {
        let i = Instance {
            persona: "p".into(),
            task: "t".into(),
            system: "s".into(),
            tools: vec![ToolSpec {
                name: "add".into(),
                ..ToolSpec::default()
            }],
            lessons: vec![],
        };
        assert_eq!(Instance::from_value(i.to_value()), Ok(i));
    }
}

impl<S> From<Instance> for crate::agents::ReactSpec<S> {
    /// A ReAct agent for the instance's task, with its system prompt and tools.
    fn from(i: Instance) -> Self {
        crate::agents::ReactSpec {
            system: Some(i.system),
            task: i.task,
            turn: crate::agents::TurnSpec {
                tools: i.tools,
                ..crate::agents::TurnSpec::default()
            },
        }
    }
}

impl<S> From<Instance> for crate::agents::ConversationSpec<S> {
    /// A conversation agent with the instance's system prompt and tools (the instance's task
    /// is the caller's first message to send).
    fn from(i: Instance) -> Self {
        crate::agents::ConversationSpec {
            system: Some(i.system),
            turn: crate::agents::TurnSpec {
                tools: i.tools,
                ..crate::agents::TurnSpec::default()
            },
            ..crate::agents::ConversationSpec::default()
        }
    }
}

#[cfg(test)]
mod agent_spec_tests {
    use super::*;

    #[test]
    fn an_instance_becomes_an_agent_spec() {
        let i = Instance {
            persona: "sre".into(),
            task: "why is the disk full?".into(),
            system: "You are an SRE.".into(),
            tools: Vec::new(),
            lessons: Vec::new(),
        };
        let r: crate::agents::ReactSpec<()> = i.clone().into();
        assert_eq!(r.system.as_deref(), Some("You are an SRE."));
        assert_eq!(r.task, "why is the disk full?");
        let c: crate::agents::ConversationSpec<()> = i.into();
        assert_eq!(c.system.as_deref(), Some("You are an SRE."));
        assert!(c.history.is_empty());
    }
}
