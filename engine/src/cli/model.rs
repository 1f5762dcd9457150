//! Which model a command talks to, and the kernel it runs on.
//!
//! Most specific first: a hidden `--script FILE` (scripted turns separated by lines of
//! `---`; tests and demos), else the OpenAI-compatible endpoint of `AGENTOS_LLM_BASE_URL` /
//! `AGENTOS_LLM_MODEL` / `AGENTOS_LLM_API_KEY` (`AGENTOS_LLM_GRAMMAR=1` sends the plurnk
//! GBNF), else the embedded default: the local SmolLM2 model
//! ([`agentos_drivers::llm::local`]), prepared on first use with progress bars and served
//! by a `llama-server` this process starts on a free loopback port and stops when the
//! command ends ([`stop_local`], also on the Ctrl-C paths through [`exit_now`]).
//! `AGENTOS_LLM_LOCAL=0` turns the local default off (then the command says what to set).
//!
//! **Invariant:** a missing or unreadable model is a setup error (exit 2) with a sentence
//! naming the fix, never a panic; a llama-server we started never outlives the command.
//! **API boundary:** [`Model::choose`], [`Model::engine`], [`stop_local`], [`exit_now`],
//! [`local_enabled`].

use std::path::Path;
use std::sync::{Arc, Mutex};

use agentos_drivers::llm::local::{LocalModel, LocalServer, ServeOptions, MODEL_ALIAS};
use agentos_drivers::llm::{LlmDriver, OpenAiConfig, OpenAiProvider, Provider, ScriptedProvider};
use agentos_kernel::{Kernel, KernelConfig};

use crate::daemon::ProviderInfo;
use crate::store::Store;
use crate::turn::{EngineConfig, TurnGrammar};
use crate::Engine;

/// The llama-server this process started, if any.
static LOCAL: Mutex<Option<LocalServer>> = Mutex::new(None);

/// Stops the llama-server this process started (a no-op when none).
pub fn stop_local() {
    let server = LOCAL.lock().unwrap_or_else(|p| p.into_inner()).take();
    drop(server);
}

/// Stops what this process started, then exits with `code` (the second Ctrl-C).
pub fn exit_now(code: i32) -> ! {
    stop_local();
    std::process::exit(code)
}

/// Whether the local model is the default when no endpoint is set (`AGENTOS_LLM_LOCAL`
/// other than `0`/`false`/`no`).
pub fn local_enabled() -> bool {
    !matches!(
        std::env::var("AGENTOS_LLM_LOCAL").as_deref(),
        Ok("0" | "false" | "no")
    )
}

/// A chosen model: the provider, what `providers.list` says of it, and the grammar to send.
pub struct Model {
    /// The provider.
    pub provider: Arc<dyn Provider>,
    /// Its description.
    pub info: ProviderInfo,
    /// The grammar to send with each turn (off when the endpoint takes none).
    pub grammar: TurnGrammar,
}

/// The text of a scripted model file: its turns.
pub fn script_turns(text: &str) -> Vec<agentos_abi::device::ChatReply> {
    text.split("\n---\n")
        .map(|t| agentos_abi::device::ChatReply::text(t.trim()))
        .collect()
}

impl Model {
    /// The scripted model of `script`, else the `AGENTOS_LLM_*` endpoint, else the local
    /// model (prepared and started here; see the module docs).
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
                grammar: TurnGrammar::Off,
            });
        }
        match OpenAiProvider::from_env() {
            Ok(p) => {
                let grammar = if p.config().supports_grammar {
                    TurnGrammar::Engine
                } else {
                    TurnGrammar::Off
                };
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
            Err(_) if std::env::var_os("AGENTOS_LLM_MODEL").is_none() && local_enabled() => {
                Model::local()
            }
            Err(e) => Err(format!(
                "no model: {e}. Set AGENTOS_LLM_BASE_URL and AGENTOS_LLM_MODEL to an \
                 OpenAI-compatible endpoint, or unset AGENTOS_LLM_LOCAL=0 to use the local \
                 SmolLM2 (`agentos llm prepare`), or run against a daemon with --connect"
            )),
        }
    }

    /// The local model: prepared when missing, served on a free loopback port.
    fn local() -> Result<Model, String> {
        let local = LocalModel::from_env();
        if !local.is_prepared() {
            eprintln!(
                "agentos: no model endpoint is set (AGENTOS_LLM_BASE_URL/AGENTOS_LLM_MODEL), so \
                 the local SmolLM2-135M is prepared now in {} — a ~170 MB download and a \
                 ~10-minute build of llama-server, once",
                local.cache().display()
            );
            local
                .prepare(&super::llm::BarProgress::default())
                .map_err(|e| {
                    format!(
                        "preparing the local model failed: {e}\n(or set AGENTOS_LLM_BASE_URL \
                         and AGENTOS_LLM_MODEL to an OpenAI-compatible endpoint)"
                    )
                })?;
        }
        let server = local
            .serve(&ServeOptions::default())
            .map_err(|e| format!("starting the local model failed: {e}"))?;
        let base = server.base_url();
        eprintln!("agentos: local model on {base} (stopped when this command ends)");
        *LOCAL.lock().unwrap_or_else(|p| p.into_inner()) = Some(server);
        let provider = OpenAiProvider::new(OpenAiConfig::llama_cpp(base.clone(), MODEL_ALIAS))
            .map_err(|e| format!("the local model's provider: {e}"))?;
        Ok(Model {
            provider: Arc::new(provider),
            info: ProviderInfo {
                alias: "default".into(),
                provider: "local".into(),
                model: format!("{MODEL_ALIAS} ({base})"),
            },
            grammar: TurnGrammar::Engine,
        })
    }

    /// A multi-threaded kernel with this model's `llm` device, and the engine on it.
    pub fn engine(&self, store: Arc<Store>, mut cfg: EngineConfig) -> Result<Engine, String> {
        if cfg.grammar == TurnGrammar::Off {
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
