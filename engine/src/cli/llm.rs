//! `agentos llm prepare|status|serve|path` and `agentos models`: the local model as a user
//! sees it.
//!
//! The work is [`agentos_drivers::llm::local`]'s; this module draws its progress with
//! indicatif bars (plain lines when stderr is not a terminal) and prints what is prepared
//! and which model a command would use.
//!
//! **Invariant:** a failure says what failed and what to do, on stderr, exit 1 (2 for usage).
//! **API boundary:** [`LlmArgs`], [`llm`], [`ModelsArgs`], [`models`], [`BarProgress`].

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use agentos_drivers::llm::local::{
    LinesProgress, LocalModel, PrepareEvent, PrepareProgress, ServeOptions, MODEL_FILE,
};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::emit;

/// `agentos llm`.
#[derive(Debug, Args)]
pub struct LlmArgs {
    /// What to do with the local model.
    #[command(subcommand)]
    pub command: LlmCommand,
}

/// The `llm` verbs.
#[derive(Debug, Subcommand)]
pub enum LlmCommand {
    /// Fetch and verify SmolLM2-135M, build llama-server (idempotent; cached under
    /// $AGENTOS_LLM_CACHE, default ~/.cache/agentos/llm; minutes, once).
    Prepare,
    /// What is prepared, and where.
    Status {
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run llama-server on 127.0.0.1 in the foreground (Ctrl-C stops it).
    Serve {
        /// The port.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// The context window in tokens.
        #[arg(long, default_value_t = 4096)]
        context: u32,
    },
    /// Print `<llama-server> <model>` (for scripts and tests).
    Path,
}

/// Progress bars on stderr for [`LocalModel::prepare`].
pub struct BarProgress {
    bar: Mutex<Option<ProgressBar>>,
    lines: bool,
}

impl Default for BarProgress {
    fn default() -> Self {
        BarProgress {
            bar: Mutex::new(None),
            lines: !std::io::stderr().is_terminal(),
        }
    }
}

impl BarProgress {
    fn set(&self, bar: Option<ProgressBar>) {
        let mut slot = self.bar.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = slot.take() {
            old.finish_and_clear();
        }
        *slot = bar;
    }

    fn with(&self, f: impl FnOnce(&ProgressBar)) {
        let slot = self.bar.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = slot.as_ref() {
            f(b);
        }
    }

    fn println(&self, line: &str) {
        let slot = self.bar.lock().unwrap_or_else(|p| p.into_inner());
        match slot.as_ref() {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }
}

impl PrepareProgress for BarProgress {
    fn event(&self, e: PrepareEvent<'_>) {
        if self.lines {
            return LinesProgress.event(e);
        }
        match e {
            PrepareEvent::Step { n, of, what } => {
                self.set(None);
                eprintln!("llm: [{n}/{of}] {what}");
            }
            PrepareEvent::Download {
                file,
                total,
                resumed,
            } => {
                let bar = match total {
                    Some(t) => ProgressBar::new(t).with_style(
                        ProgressStyle::with_template(
                            "  {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    ),
                    None => ProgressBar::new_spinner(),
                };
                bar.set_message(if resumed > 0 {
                    format!("{file} (resumed)")
                } else {
                    file.to_owned()
                });
                bar.set_position(resumed);
                self.set(Some(bar));
            }
            PrepareEvent::Bytes(n) => self.with(|b| b.set_position(n)),
            PrepareEvent::Percent(p) => {
                let fresh = self
                    .bar
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .is_none_or(|b| b.length() != Some(100));
                if fresh {
                    let bar = ProgressBar::new(100).with_style(
                        ProgressStyle::with_template("  building [{bar:30}] {pos}% {elapsed}")
                            .unwrap_or_else(|_| ProgressStyle::default_bar())
                            .progress_chars("=> "),
                    );
                    bar.enable_steady_tick(Duration::from_millis(500));
                    self.set(Some(bar));
                }
                self.with(|b| b.set_position(u64::from(p)));
            }
            PrepareEvent::Note(s) => self.println(&format!("  {s}")),
            PrepareEvent::Done(s) => {
                self.set(None);
                eprintln!("  {s}");
            }
        }
    }
}

fn size(n: Option<u64>) -> String {
    n.map_or_else(
        || "missing".to_owned(),
        |n| format!("{:.1} MB", n as f64 / 1e6),
    )
}

/// Runs `agentos llm`.
pub fn llm(a: LlmArgs) -> ExitCode {
    let local = LocalModel::from_env();
    let fail = |e: String| {
        eprintln!("agentos llm: {e}");
        ExitCode::FAILURE
    };
    match a.command {
        LlmCommand::Prepare => match local.prepare(&BarProgress::default()) {
            Ok((server, model)) => {
                eprintln!(
                    "llm: ready. `agentos run \"…\"` uses it; `agentos llm serve` serves it."
                );
                emit(&format!("{} {}\n", server.display(), model.display()))
            }
            Err(e) => fail(e.to_string()),
        },
        LlmCommand::Status { json } => {
            let st = local.status();
            if json {
                return emit(&format!(
                    "{}\n",
                    json!({
                        "cache": st.cache,
                        "ready": st.ready(),
                        "model": {"path": st.model.0, "bytes": st.model.1},
                        "server": {"path": st.server.0, "bytes": st.server.1},
                    })
                ));
            }
            emit(&format!(
                "cache         {}\nmodel         {:<10} {}\nllama-server  {:<10} {}\n{}\n",
                st.cache.display(),
                size(st.model.1),
                st.model.0.display(),
                size(st.server.1),
                st.server.0.display(),
                if st.ready() {
                    "ready"
                } else {
                    "not prepared: run `agentos llm prepare` (or just `agentos run \"…\"`)"
                }
            ))
        }
        LlmCommand::Path => {
            let st = local.status();
            if !st.ready() {
                return fail(format!(
                    "not prepared in {}: run `agentos llm prepare`",
                    st.cache.display()
                ));
            }
            emit(&format!(
                "{} {}\n",
                st.server.0.display(),
                st.model.0.display()
            ))
        }
        LlmCommand::Serve { port, context } => {
            let opts = ServeOptions {
                port,
                context,
                inherit_output: true,
                ..ServeOptions::default()
            };
            let mut server = match local.serve(&opts) {
                Ok(s) => s,
                Err(e) => return fail(e.to_string()),
            };
            eprintln!(
                "llm: serving on http://127.0.0.1:{port} — AGENTOS_LLM_BASE_URL={} \
                 AGENTOS_LLM_MODEL=smollm2 AGENTOS_LLM_GRAMMAR=1",
                server.base_url()
            );
            match server.wait() {
                Ok(s) if s.success() => ExitCode::SUCCESS,
                Ok(s) => fail(format!("llama-server exited ({s})")),
                Err(e) => fail(format!("waiting for llama-server: {e}")),
            }
        }
    }
}

/// `agentos models`.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// One JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `agentos models`: the configured endpoint, the local model, and the default.
pub fn models(a: ModelsArgs) -> ExitCode {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let endpoint = env("AGENTOS_LLM_MODEL").map(|m| {
        json!({
            "baseUrl": env("AGENTOS_LLM_BASE_URL").unwrap_or_else(|| "https://api.openai.com/v1".into()),
            "model": m,
            "grammar": matches!(env("AGENTOS_LLM_GRAMMAR").as_deref(), Some("1" | "true" | "yes")),
            "apiKey": env("AGENTOS_LLM_API_KEY").is_some(),
        })
    });
    let local = LocalModel::from_env();
    let st = local.status();
    let local_on = super::model::local_enabled();
    let default = if endpoint.is_some() {
        "endpoint"
    } else if local_on {
        "local"
    } else {
        "none"
    };
    if a.json {
        return emit(&format!(
            "{}\n",
            json!({
                "endpoint": endpoint,
                "aliases": [{"alias": "default", "uses": default}],
                "local": {
                    "name": MODEL_FILE, "ready": st.ready(), "enabled": local_on,
                    "cache": st.cache,
                    "model": {"path": st.model.0, "bytes": st.model.1},
                    "server": {"path": st.server.0, "bytes": st.server.1},
                },
                "default": default,
            })
        ));
    }
    let mut out = String::new();
    match &endpoint {
        Some(e) => out.push_str(&format!(
            "endpoint      {} model {}{}{}  (AGENTOS_LLM_*)\n",
            e["baseUrl"].as_str().unwrap_or(""),
            e["model"].as_str().unwrap_or(""),
            if e["grammar"] == true {
                " · grammar"
            } else {
                ""
            },
            if e["apiKey"] == true {
                " · api key set"
            } else {
                ""
            },
        )),
        None => out.push_str(
            "endpoint      none (set AGENTOS_LLM_BASE_URL and AGENTOS_LLM_MODEL for an \
             OpenAI-compatible one)\n",
        ),
    }
    out.push_str(&format!(
        "local         {MODEL_FILE} on llama-server: {}{}\n              model  {:<10} {}\n              server {:<10} {}\n",
        if st.ready() { "prepared" } else { "not prepared (prepared on first use, or `agentos llm prepare`)" },
        if local_on { "" } else { " · disabled by AGENTOS_LLM_LOCAL=0" },
        size(st.model.1),
        st.model.0.display(),
        size(st.server.1),
        st.server.0.display(),
    ));
    out.push_str(&format!(
        "default       {}\n",
        match default {
            "endpoint" => "the endpoint (AGENTOS_LLM_MODEL)",
            "local" if st.ready() => "the local model (started and stopped by agentos)",
            "local" => "the local model, prepared on first use (a download and a build, once)",
            _ => "none: set AGENTOS_LLM_BASE_URL/AGENTOS_LLM_MODEL, or unset AGENTOS_LLM_LOCAL",
        }
    ));
    emit(&out)
}
