//! `agentos serve`: the daemon in the foreground until SIGTERM or Ctrl-C.
//!
//! Opens the store (`--db`, else `$AGENTOS_DATA_DIR/sessions.db`), marks loops a previous
//! daemon left open as interrupted, starts a multi-threaded kernel with the model's `llm`
//! device and the engine, and serves it ([`crate::daemon::Server`]). The first stdout line
//! is `listening on HOST:PORT` (scripts and tests read the port from it when they pass
//! `--port 0`). On SIGTERM or Ctrl-C it drains: running loops end 499, the store closes.
//!
//! **Invariant:** a loop is never left 102 across a restart: interrupted at start, cancelled
//! or interrupted at stop.
//! **API boundary:** [`ServeArgs`], [`serve`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::model::Model;
use super::open_store;
use crate::daemon::{DaemonConfig, Server};
use crate::turn::EngineConfig;

/// `agentos serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on.
    #[arg(long, env = "AGENTOS_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// The port (0: any free port).
    #[arg(long, env = "AGENTOS_PORT", default_value_t = 3044)]
    pub port: u16,
    /// The sessions database (default: $AGENTOS_DATA_DIR/sessions.db).
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// A scripted model (tests): model turns separated by lines of `---`.
    #[arg(long, value_name = "FILE", hide = true)]
    pub script: Option<PathBuf>,
}

/// Runs `agentos serve`.
pub fn serve(a: ServeArgs) -> ExitCode {
    let fail = |e: String| {
        eprintln!("agentos serve: {e}");
        ExitCode::from(2)
    };
    let model = match Model::choose(a.script.as_deref()) {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    let store = match open_store(a.db.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    match store.interrupt_unfinished() {
        Ok(0) => {}
        Ok(n) => eprintln!(
            "agentos serve: {n} loop(s) left open by a previous daemon marked interrupted (499)"
        ),
        Err(e) => return fail(e.to_string()),
    }
    let db = store
        .path()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let engine = match model.engine(store, EngineConfig::default()) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    let config = DaemonConfig {
        addr: SocketAddr::new(a.host, a.port),
        providers: vec![model.info.clone()],
        ..DaemonConfig::default()
    };
    let mut server = match Server::start(engine, config) {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()),
    };
    let addr = server.addr();
    println!("listening on {addr}");
    eprintln!(
        "agentos serve: JSON-RPC on ws://{addr} · metrics http://{addr}/metrics · store {db} · model {} ({})",
        model.info.model, model.info.provider
    );
    server.wait_for_signal();
    eprintln!("agentos serve: draining");
    let report = server.shutdown();
    eprintln!(
        "agentos serve: stopped ({} loop(s) cancelled, {} interrupted)",
        report.cancelled, report.interrupted
    );
    ExitCode::SUCCESS
}
