//! Which model a command talks to, and the kernel it runs on.
//!
//! Most specific first: a hidden `--script FILE` (scripted turns separated by lines of
//! `---`; tests and demos), else the OpenAI-compatible endpoint of `AGENTOS_LLM_BASE_URL` /
//! `AGENTOS_LLM_MODEL` / `AGENTOS_LLM_API_KEY` (`AGENTOS_LLM_GRAMMAR=1` sends the plurnk
//! GBNF). Without either the command stops and says what to set.
//!
//! **Invariant:** a missing or unreadable model is a setup error (exit 2) with a sentence
//! naming the fix, never a panic.
//! **API boundary:** [`Model::choose`], [`Model::engine`].

use std::path::Path;
use std::sync::Arc;

use agentos_drivers::llm::{LlmDriver, OpenAiProvider, Provider, ScriptedProvider};
use agentos_kernel::{Kernel, KernelConfig};

use crate::daemon::ProviderInfo;
use crate::store::Store;
use crate::turn::EngineConfig;
use crate::Engine;

/// A chosen model: the provider, what `providers.list` says of it, and the grammar to send.
pub struct Model {
    /// The provider.
    pub provider: Arc<dyn Provider>,
    /// Its description.
    pub info: ProviderInfo,
    /// The GBNF to send with each turn, when the endpoint takes one.
    pub grammar: Option<String>,
}

/// The text of a scripted model file: its turns.
pub fn script_turns(text: &str) -> Vec<agentos_abi::device::ChatReply> {
    text.split("\n---\n")
        .map(|t| agentos_abi::device::ChatReply::text(t.trim()))
        .collect()
}

impl Model {
    /// The scripted model of `script`, else the `AGENTOS_LLM_*` endpoint.
    pub fn choose(script: Option<&Path>) -> Result<Model, String> {
        if let Some(path) = script {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the script {}: {e}", path.display()))?;
            return Ok(Model {
                provider: Arc::new(ScriptedProvider::new(script_turns(&text))),
                info: ProviderInfo {
                    alias: "default".into(),
                    provider: "scripted".into(),
                    model: path.display().to_string(),
                },
                grammar: None,
            });
        }
        match OpenAiProvider::from_env() {
            Ok(p) => {
                let grammar = p.config().supports_grammar.then(crate::turn::engine_gbnf);
                let info = ProviderInfo {
                    alias: "default".into(),
                    provider: "openai".into(),
                    model: p.config().model.clone(),
                };
                Ok(Model {
                    provider: Arc::new(p),
                    info,
                    grammar,
                })
            }
            Err(e) => Err(format!(
                "no model: {e}. Set AGENTOS_LLM_BASE_URL and AGENTOS_LLM_MODEL to an \
                 OpenAI-compatible endpoint (for the local SmolLM2: `cargo xtask llm serve`, \
                 then AGENTOS_LLM_BASE_URL=http://127.0.0.1:8080 AGENTOS_LLM_MODEL=smollm2 \
                 AGENTOS_LLM_GRAMMAR=1), or run against a daemon with --connect"
            )),
        }
    }

    /// A multi-threaded kernel with this model's `llm` device, and the engine on it.
    pub fn engine(&self, store: Arc<Store>, mut cfg: EngineConfig) -> Result<Engine, String> {
        if cfg.grammar.is_none() {
            cfg.grammar = self.grammar.clone();
        }
        let kernel = Kernel::new(KernelConfig::threads(2));
        let driver = LlmDriver::new(self.provider.clone()).map_err(|e| e.to_string())?;
        kernel
            .register_driver(Arc::new(driver))
            .map_err(|e| e.to_string())?;
        Engine::start(kernel, store, cfg).map_err(|e| e.to_string())
    }
}
