//! `agentos replay DIR` — replay a loop recorded with `agentos loop --record DIR`: no model,
//! no disk write, no subprocess; the log is rebuilt in memory, printed, and compared with the
//! recorded one (exit 0 when identical, 1 when the replay diverged).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::emit;
use crate::replay::replay as replay_dir;
use crate::turn::{render, EngineConfig};

/// `agentos replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The recording directory (`agentos loop --record DIR` wrote it).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Print only the verdict, not the replayed log.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs the verb.
pub fn replay(a: ReplayArgs) -> ExitCode {
    let r = match replay_dir(&a.dir, EngineConfig::default()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "agentos replay: {e}\n(record one with `agentos loop --record {} PROMPT`)",
                a.dir.display()
            );
            return ExitCode::from(2);
        }
    };
    let mut out = if a.quiet {
        String::new()
    } else {
        render::render_rows(&r.rows)
    };
    let verdict = if r.matches() {
        "identical"
    } else {
        "DIFFERENT"
    };
    out.push_str(&format!(
        "\nreplayed {} rows (recorded {}) · status {} (recorded {}) · rows hash {} (recorded {}): {verdict}\n",
        r.rows.len(),
        r.recording.rows,
        r.lp.status,
        r.recording.status,
        r.rows_hash,
        r.recording.rows_hash,
    ));
    match emit(&out) {
        c if c != ExitCode::SUCCESS => c,
        _ if r.matches() => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}
