//! The exec scheme: `EXEC[runtime](cwd)<T>:command` and the stream entries it fills
//! (PLURNK.md §2.3 `exec://` / `<runtime>://`, §3.7 streams).
//!
//! EXEC is a `host` effect, so it **proposes** (202); on accept the loop starts the command
//! through its `exec` device handle (sandboxed by the driver) and the row answers 102: the
//! command runs while the loop goes on. Its output lands in the stream entry
//! `<runtime>:///<loop>/<turn>/<seq>` (run scope), channels `stdout` and `stderr`, written by a
//! **pump** process ([`crate::turn::stream`]) that pulls the device one event at a time — so
//! every byte is a journaled device read. The loop turns stream changes into folded READ
//! rows before its next turn, opened when the stream closes. `SEND[200](sh:///L/T/S):text`
//! writes stdin, `SEND[499]` and `KILL` stop it (polite signal, then SIGKILL after the
//! driver's grace); `<T>` bounds it to T seconds (a reap answers 504).
//!
//! **Invariants:** no process starts without an accepted proposal; a loop without an `exec`
//! cap (ask mode, a headless session) answers 403 before anything is proposed.
//!
//! **API boundary:** [`dispatch`], [`ExecStart`], [`StreamTable`], [`exec_call`].

use std::collections::BTreeMap;

use agentos_abi::device::{from_value, to_value};
use agentos_abi::{CapRef, Syscalls, Value};
use serde::{Deserialize, Serialize};

use super::dispatch::{Action, DispatchCtx};
use crate::grammar::{Op, Signal, Statement};
use crate::store::{EntryKey, RowTarget, Scope};

/// The runtimes whose names are stream schemes.
pub const RUNTIMES: [&str; 3] = ["sh", "python", "node"];

/// A command to start when its proposal is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecStart {
    /// `sh`, `python` or `node`.
    pub runtime: String,
    /// Working directory relative to the project root (`""`: the root).
    pub cwd: String,
    /// The command or program text.
    pub command: String,
    /// `<T>` in ms (`None`: unbounded).
    pub timeout_ms: Option<u64>,
}

/// The loop's running streams: stream path (`/L/T/S`) → the device's process id.
pub type StreamTable = BTreeMap<String, u64>;

/// The `exec` device's requests (see `agentos_drivers::exec`).
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ExecRequest<'a> {
    /// Start a process.
    Start {
        /// Runtime.
        runtime: &'a str,
        /// Working directory.
        cwd: &'a str,
        /// Command.
        command: &'a str,
        /// Timeout.
        timeout_ms: Option<u64>,
    },
    /// Follow a process another handle started (its start `token`) → a local id.
    Attach {
        /// The token.
        token: &'a str,
    },
    /// The next event of a process.
    Next {
        /// Process id.
        id: u64,
    },
    /// Write stdin.
    Stdin {
        /// Process id.
        id: u64,
        /// Text.
        data: &'a str,
    },
    /// Close stdin.
    CloseStdin {
        /// Process id.
        id: u64,
    },
    /// SIGTERM, then SIGKILL after the grace.
    Stop {
        /// Process id.
        id: u64,
    },
}

impl ExecRequest<'_> {
    fn is_write(&self) -> bool {
        !matches!(self, ExecRequest::Next { .. } | ExecRequest::Attach { .. })
    }
}

/// The `exec` device's reply (one shape for every request and event).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct ExecReply {
    /// HTTP-like status.
    pub status: u16,
    /// Process id (start, attach).
    #[serde(default)]
    pub id: Option<u64>,
    /// Attach token (start).
    #[serde(default)]
    pub token: Option<String>,
    /// `stdout`, `stderr`, `exit`, `closed` (next).
    #[serde(default)]
    pub event: Option<String>,
    /// A chunk (stdout/stderr events).
    #[serde(default)]
    pub data: Option<serde_bytes_compat::Bytes>,
    /// Exit code.
    #[serde(default)]
    pub code: Option<i64>,
    /// Killing signal.
    #[serde(default)]
    pub signal: Option<String>,
    /// Reaped at its timeout.
    #[serde(default)]
    pub timed_out: bool,
    /// Needed SIGKILL.
    #[serde(default)]
    pub killed: bool,
    /// Bytes beyond the cap.
    #[serde(default)]
    pub dropped_stdout: u64,
    /// Bytes beyond the cap.
    #[serde(default)]
    pub dropped_stderr: u64,
    /// Refusal reason.
    #[serde(default)]
    pub error: Option<String>,
    /// Refusal detail.
    #[serde(default)]
    pub message: Option<String>,
}

/// Bytes that deserialize from the abi's `Bytes` value or from a string.
pub mod serde_bytes_compat {
    use serde::de::{self, Deserializer, SeqAccess, Visitor};
    use serde::Deserialize;

    /// Raw bytes.
    #[derive(Debug, Default, Clone, PartialEq, Eq)]
    pub struct Bytes(pub Vec<u8>);

    impl<'de> Deserialize<'de> for Bytes {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Bytes;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                    Ok(Bytes(v.to_vec()))
                }
                fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                    Ok(Bytes(v))
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Bytes, E> {
                    Ok(Bytes(v.as_bytes().to_vec()))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Bytes, A::Error> {
                    let mut out = Vec::new();
                    while let Some(b) = a.next_element::<u8>()? {
                        out.push(b);
                    }
                    Ok(Bytes(out))
                }
            }
            d.deserialize_any(V)
        }
    }
}

impl ExecReply {
    /// `"<status> <error>: <message>"` for a row.
    pub fn failure(&self) -> String {
        let why = self.error.as_deref().unwrap_or("refused");
        match &self.message {
            Some(m) => format!("{} {why}: {m}", self.status),
            None => format!("{} {why}", self.status),
        }
    }
}

/// One request to the `exec` device.
pub async fn exec_call<S: Syscalls>(sys: &S, exec: CapRef, req: &ExecRequest<'_>) -> ExecReply {
    let fail = |m: String| ExecReply {
        status: 500,
        error: Some("exec".into()),
        message: Some(m),
        ..ExecReply::default()
    };
    let v = match to_value(req) {
        Ok(v) => v,
        Err(e) => return fail(format!("encoding an exec request: {e}")),
    };
    let out: Result<Value, _> = if req.is_write() {
        sys.write(exec, v).await
    } else {
        sys.read(exec, v).await
    };
    match out {
        Ok(v) => from_value(v).unwrap_or_else(|e| fail(format!("bad exec reply: {e}"))),
        Err(e) => fail(e.to_string()),
    }
}

/// The stream entry of the EXEC row at `/loop/turn/seq`.
pub fn stream_key(runtime: &str, path: &str) -> EntryKey {
    EntryKey {
        scope: Scope::Run,
        scheme: Some(runtime.to_owned()),
        hostname: None,
        pathname: path.to_owned(),
    }
}

fn stream_target(runtime: &str, path: &str, channel: Option<&str>) -> RowTarget {
    RowTarget {
        scheme: Some(runtime.to_owned()),
        hostname: None,
        pathname: path.to_owned(),
        fragment: channel.map(str::to_owned),
    }
}

/// EXEC: checks and proposes.
pub fn exec<S: Syscalls>(ctx: &DispatchCtx<'_, '_, S>, s: &Statement) -> Action {
    if ctx.devices.exec.is_none() {
        return Action::status(
            403,
            "403 exec: this loop holds no exec device (ask mode or a headless session)",
        );
    }
    let runtime = match &s.signal {
        Some(Signal::Name(n)) => n.clone(),
        _ => "sh".to_owned(),
    };
    if !RUNTIMES.contains(&runtime.as_str()) {
        return Action::status(
            501,
            format!("501 exec: no executor {runtime:?} on this host"),
        );
    }
    let cwd = s
        .target
        .as_ref()
        .map(|t| t.decoded_pathname())
        .unwrap_or_default();
    let command = s.body_raw().trim();
    if command.is_empty() {
        return Action::status(400, "400 exec: empty command");
    }
    let timeout_ms = match s.line_marker.as_ref().and_then(|m| m.marks.first()) {
        Some(t) if *t > 0.0 => Some((*t * 1000.0) as u64),
        _ => None,
    };
    Action {
        status: 202,
        rx: Some(format!("{runtime} in ./{cwd}: {command}")),
        mimetype_rx: Some("text/plain".into()),
        writes_row: true,
        proposal: Some(super::effect::Effect::Exec(ExecStart {
            runtime,
            cwd,
            command: command.to_owned(),
            timeout_ms,
        })),
        ..Action::default()
    }
}

/// READ / SEND / KILL on a stream entry `<runtime>:///L/T/S[#channel]`.
pub async fn dispatch<S: Syscalls>(
    ctx: &mut DispatchCtx<'_, '_, S>,
    s: &Statement,
    runtime: &str,
    path: &str,
    channel: Option<&str>,
) -> Vec<Action> {
    let key = stream_key(runtime, path);
    let target = stream_target(runtime, path, channel);
    match s.op {
        Op::Read => {
            let e = match ctx.world.entry(&key).await {
                Ok(e) => e,
                Err(e) => return vec![Action::internal(e)],
            };
            let Some(e) = e else {
                return vec![
                    Action::status(404, format!("404 no stream {runtime}://{path}")).at(target),
                ];
            };
            let names: Vec<&str> = match channel {
                Some(c) => vec![c],
                None => vec!["stdout", "stderr"],
            };
            let mut out = Vec::new();
            for n in names {
                if let Some(c) = e.channel(n) {
                    out.push(
                        Action {
                            status: 200,
                            rx: Some(c.content.clone()),
                            mimetype_rx: Some(c.mimetype.clone()),
                            writes_row: true,
                            ..Action::default()
                        }
                        .at(stream_target(runtime, path, Some(n))),
                    );
                }
            }
            if out.is_empty() {
                out.push(Action::status(404, format!("404 no such channel on {path}")).at(target));
            }
            out
        }
        Op::Send | Op::Kill => {
            let (Some(exec), Some(id)) = (ctx.devices.exec, ctx.streams.get(path).copied()) else {
                return vec![Action::status(
                    404,
                    format!("404 {runtime}://{path} is not a running stream of this loop"),
                )
                .at(target)];
            };
            let sys = ctx.world.sys();
            let r = match (s.op, s.signal_int()) {
                (Op::Kill, _) | (Op::Send, Some(499)) => {
                    exec_call(sys, exec, &ExecRequest::Stop { id }).await
                }
                (Op::Send, Some(200)) => {
                    let mut text = s.body_raw().to_owned();
                    if !text.ends_with('\n') {
                        text.push('\n');
                    }
                    exec_call(sys, exec, &ExecRequest::Stdin { id, data: &text }).await
                }
                (Op::Send, Some(204)) => exec_call(sys, exec, &ExecRequest::CloseStdin { id }).await,
                _ => {
                    return vec![Action::status(
                        400,
                        "400 a stream takes SEND[200] (stdin), SEND[204] (close stdin), SEND[499] or KILL (stop)",
                    )
                    .at(target)]
                }
            };
            if r.status == 200 {
                vec![Action::ok(match s.op {
                    Op::Kill => "stopping".to_owned(),
                    _ if s.signal_int() == Some(499) => "stopping".to_owned(),
                    _ => "sent".to_owned(),
                })
                .at(target)]
            } else {
                vec![Action::status(r.status, r.failure()).at(target)]
            }
        }
        _ => vec![Action::status(
            501,
            format!(
                "501 {runtime}:// streams take READ, SEND and KILL, not {}",
                s.op
            ),
        )],
    }
}
