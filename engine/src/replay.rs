//! # Record and replay a loop (DESIGN.md "Replay")
//!
//! Every effect of a loop is a device I/O, so a kernel in record mode writes every model
//! reply, file read, command output and database answer to a journal. A replay boots a kernel
//! that answers every device op from that journal — no model, no disk write, no subprocess —
//! except the sessions store, which replays **live** ([`agentos_abi::Driver::replays_live`])
//! into a fresh in-memory database, so the replay rebuilds the log row for row. The rows are
//! compared by [`rows_hash`].
//!
//! A recording is a directory: `journal.bin` (the kernel journal) and `recording.json`
//! ([`Recording`]: what the host asked for, in the order it asked, and the hash of the rows
//! the recorded run produced). Replay needs the same engine configuration and the same host
//! calls; the kernel is deterministic (one scheduler, virtual clock, seeded), which gives the
//! same pids and op order.
//!
//! **API boundary:** [`Recording`], [`record`], [`replay`], [`rows_hash`], [`ReplayError`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use agentos_abi::Driver;
use agentos_kernel::journal::{FileStore, FsyncPolicy};
use agentos_kernel::{Kernel, KernelConfig};
use serde::{Deserialize, Serialize};

use crate::host::{Engine, EngineError, LoopOptions};
use crate::store::{LogRow, LoopRow, Origin, Store};
use crate::turn::{EngineConfig, LoopFlags};

/// Why recording or replaying failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The recording directory or its files.
    #[error("{path}: {why}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// The kernel journal.
    #[error("journal: {0}")]
    Journal(String),
}

/// What a recorded loop was asked: enough for a replay to ask the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recording {
    /// The kernel's seed.
    pub seed: u64,
    /// The session's project root.
    pub project_root: Option<String>,
    /// The loop's prompt.
    pub prompt: String,
    /// Its flags.
    pub flags: LoopFlags,
    /// Its turn limit.
    pub max_turns: Option<u32>,
    /// The loop's terminal status.
    pub status: u16,
    /// [`rows_hash`] of the loop's rows.
    pub rows_hash: String,
    /// How many rows.
    pub rows: usize,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> ReplayError + '_ {
    move |e| ReplayError::Io {
        path: path.to_owned(),
        why: e.to_string(),
    }
}

/// A hash of what a log shows, row by row: ordinals, origin, source, op, target, what was sent
/// and received, status, resolution and fold state (not ids or wall times). FNV-1a, 64 bits,
/// over a canonical JSON of those fields.
pub fn rows_hash(rows: &[LogRow]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for r in rows {
        let canon = serde_json::json!([
            r.loop_seq,
            r.turn_seq,
            r.sequence,
            r.origin.as_str(),
            r.source,
            r.op.as_str(),
            r.suffix,
            r.signal,
            r.target,
            r.line_marker,
            r.tx,
            r.rx,
            r.status,
            r.state.map(|s| s.as_str()),
            r.outcome,
            r.expanded,
        ]);
        for b in canon.to_string().bytes().chain([b'\n']) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

fn run_loop(
    engine: &Engine,
    project_root: Option<&str>,
    prompt: &str,
    opts: &LoopOptions,
) -> Result<(LoopRow, Vec<LogRow>), EngineError> {
    let session = engine.create_session(None, project_root, "{}")?;
    let run = engine.create_run(session.id, "main", Origin::Client)?;
    let lp = engine.start_loop(run.id, prompt, opts)?;
    let lp = engine.wait_loop(lp.id, None)?;
    let rows = engine.loop_log(lp.id)?;
    Ok((lp, rows))
}

/// Runs one loop on a deterministic kernel in record mode and writes the recording into
/// `dir` (created if missing). `llm` is the model device (any provider); `store` the sessions
/// database the run writes to. Returns the loop, its rows and the recording.
#[allow(clippy::too_many_arguments)]
pub fn record(
    dir: &Path,
    seed: u64,
    llm: Arc<dyn Driver>,
    store: Arc<Store>,
    config: EngineConfig,
    project_root: Option<&str>,
    prompt: &str,
    opts: &LoopOptions,
) -> Result<(LoopRow, Vec<LogRow>, Recording), ReplayError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let jpath = dir.join("journal.bin");
    if jpath.exists() {
        std::fs::remove_file(&jpath).map_err(io_err(&jpath))?;
    }
    let (journal, _) = FileStore::open(&jpath, FsyncPolicy::default())
        .map_err(|e| ReplayError::Journal(e.to_string()))?;
    let kernel = Kernel::record(KernelConfig::deterministic(seed), Box::new(journal));
    kernel
        .register_driver(llm)
        .map_err(|e| ReplayError::Journal(e.to_string()))?;
    let engine = Engine::start(kernel, store, config)?;
    let out = run_loop(&engine, project_root, prompt, opts);
    engine
        .kernel()
        .flush_journal()
        .map_err(|e| ReplayError::Journal(e.to_string()))?;
    engine.kernel().shutdown(agentos_abi::ExitReason::Shutdown);
    let (lp, rows) = out?;
    let rec = Recording {
        seed,
        project_root: project_root.map(str::to_owned),
        prompt: prompt.to_owned(),
        flags: opts.flags.clone(),
        max_turns: opts.max_turns,
        status: lp.status,
        rows_hash: rows_hash(&rows),
        rows: rows.len(),
    };
    let mpath = dir.join("recording.json");
    let text = serde_json::to_string_pretty(&rec).map_err(|e| ReplayError::Io {
        path: mpath.clone(),
        why: e.to_string(),
    })?;
    std::fs::write(&mpath, text).map_err(io_err(&mpath))?;
    Ok((lp, rows, rec))
}

/// What a replay produced.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// The recording replayed.
    pub recording: Recording,
    /// The replayed loop.
    pub lp: LoopRow,
    /// Its rows, rebuilt.
    pub rows: Vec<LogRow>,
    /// [`rows_hash`] of the rebuilt rows.
    pub rows_hash: String,
}

impl Replayed {
    /// Whether the replay rebuilt the recorded log exactly.
    pub fn matches(&self) -> bool {
        self.rows_hash == self.recording.rows_hash && self.lp.status == self.recording.status
    }
}

/// Replays the recording in `dir` with `config` (the one it was recorded with): a kernel
/// that answers every device op from the journal except the store, which rebuilds the log in
/// a fresh in-memory database. No model is called, no file written, no command run.
pub fn replay(dir: &Path, config: EngineConfig) -> Result<Replayed, ReplayError> {
    let mpath = dir.join("recording.json");
    let text = std::fs::read_to_string(&mpath).map_err(io_err(&mpath))?;
    let recording: Recording = serde_json::from_str(&text).map_err(|e| ReplayError::Io {
        path: mpath.clone(),
        why: format!("not a recording: {e}"),
    })?;
    let jpath = dir.join("journal.bin");
    if !jpath.is_file() {
        return Err(ReplayError::Io {
            path: jpath,
            why: "no journal here".into(),
        });
    }
    let (journal, _) = FileStore::open(&jpath, FsyncPolicy::default())
        .map_err(|e| ReplayError::Journal(e.to_string()))?;
    let kernel = Kernel::replay_from(
        KernelConfig::deterministic(recording.seed),
        Box::new(journal),
    )
    .map_err(|e| ReplayError::Journal(e.to_string()))?;
    // The model device is never touched in a replay (its answers come from the journal);
    // one is registered because the engine boots with an `llm` cap.
    let never = agentos_drivers::llm::LlmDriver::new(Arc::new(
        agentos_drivers::ScriptedProvider::new(Vec::new()),
    ))
    .map_err(|e| ReplayError::Journal(e.to_string()))?;
    kernel
        .register_driver(Arc::new(never))
        .map_err(|e| ReplayError::Journal(e.to_string()))?;
    let store = Arc::new(Store::open_in_memory().map_err(EngineError::from)?);
    let engine = Engine::start(kernel, store, config)?;
    let opts = LoopOptions {
        flags: recording.flags.clone(),
        max_turns: recording.max_turns,
    };
    let out = run_loop(
        &engine,
        recording.project_root.as_deref(),
        &recording.prompt,
        &opts,
    );
    engine.kernel().shutdown(agentos_abi::ExitReason::Shutdown);
    let (lp, rows) = out?;
    let rows_hash = rows_hash(&rows);
    Ok(Replayed {
        recording,
        lp,
        rows,
        rows_hash,
    })
}
