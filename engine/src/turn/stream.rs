//! Stream pumps: one kernel process per running command (PLURNK.md §3.7 streams).
//!
//! A pump opens its own `exec` handle (kernel handles are per process) and follows the
//! command its loop started through the start's attach token, with its own `store` cap. It pulls
//! the device one event at a time (`next`: every byte is a journaled device read, so a replay
//! reproduces the output without a subprocess), writes each chunk into the stream entry's
//! `stdout` / `stderr` channel (state `active`, then `closed`), and when the command ends
//! tells its loop [`StreamClosed`], which wakes a loop waiting on it. A pump never decides
//! anything: stopping, stdin and timeouts go through the loop's own handle.
//!
//! **Invariants:** a stream entry is written only by its pump; the channel states end
//! `closed` (or `errored` when the device failed), never left `active` by a pump that
//! finished.

use agentos_abi::{Body, CapRef, Image, SendOpts, Syscalls, Value};

use crate::schemes::exec::{exec_call, ExecReply, ExecRequest};
use crate::schemes::world::store_call;
use crate::store::device::StoreRequest;
use crate::store::{Channel, ChannelState, EntryKey, EntryWrite};

/// What a pump is started with (sent with its caps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PumpStart {
    /// An `exec` device cap (the loop's, derived): the pump opens its own handle.
    pub exec: CapRef,
    /// The start's attach token.
    pub token: String,
    /// A `store` device cap confined to the run.
    pub store: CapRef,
    /// Where [`StreamClosed`] goes (the loop).
    pub notify: CapRef,
    /// The stream entry.
    pub key: EntryKey,
}

/// A pump → its loop: the command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamClosed {
    /// The stream path (`/L/T/S`).
    pub path: String,
    /// 200 exit 0; 500 another exit code; 504 reaped at its timeout; 499 stopped; 502 the
    /// device failed.
    pub status: u16,
    /// One line: exit code or signal, dropped bytes.
    pub summary: String,
}

fn chan(name: &str, bytes: &[u8], state: ChannelState) -> Channel {
    let content = String::from_utf8_lossy(bytes).into_owned();
    Channel {
        name: name.to_owned(),
        tokens: super::count_tokens(&content) as i64,
        content,
        mimetype: "text/plain".into(),
        state,
    }
}

/// The close status and summary of an exit event.
pub fn close_of(r: &ExecReply) -> (u16, String) {
    let mut summary = match (&r.code, &r.signal) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => format!("killed by {s}"),
        (None, None) => "ended".to_owned(),
    };
    if r.dropped_stdout + r.dropped_stderr > 0 {
        summary.push_str(&format!(
            " ({} stdout / {} stderr bytes over the cap, not kept)",
            r.dropped_stdout, r.dropped_stderr
        ));
    }
    let status = if r.timed_out {
        504
    } else if r.killed || (r.code.is_none() && r.signal.is_some()) {
        499
    } else if r.code == Some(0) {
        200
    } else {
        500
    };
    (status, summary)
}

/// The pump process image.
pub fn pump_image<S: Syscalls>() -> Image<S> {
    Image::new("stream", move |sys: S, _args: Value| async move {
        let start = loop {
            let m = sys.recv().await;
            if let Ok(s) = m.body.downcast::<PumpStart>() {
                break s;
            }
        };
        let store = sys.open(start.store).await?;
        let exec = sys.open(start.exec).await?;
        let attached = exec_call(
            &sys,
            exec,
            &ExecRequest::Attach {
                token: &start.token,
            },
        )
        .await;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let write = |out: &[u8], err: &[u8], state: ChannelState| {
            let key = start.key.clone();
            let w = vec![
                EntryWrite::Put {
                    key: key.clone(),
                    channel: chan("stdout", out, state),
                    tags: None,
                },
                EntryWrite::Put {
                    key,
                    channel: chan("stderr", err, state),
                    tags: None,
                },
            ];
            StoreRequest::Write(w)
        };
        let _: Result<(), _> =
            store_call(&sys, store, &write(&out, &err, ChannelState::Active)).await;
        let (status, summary) = loop {
            let Some(id) = attached.id.filter(|_| attached.status == 200) else {
                break (502, attached.failure());
            };
            let r = exec_call(&sys, exec, &ExecRequest::Next { id }).await;
            match (r.status, r.event.as_deref()) {
                (200, Some("stdout")) | (200, Some("stderr")) => {
                    let data = r.data.map(|b| b.0).unwrap_or_default();
                    if r.event.as_deref() == Some("stdout") {
                        out.extend_from_slice(&data);
                    } else {
                        err.extend_from_slice(&data);
                    }
                    let _: Result<(), _> =
                        store_call(&sys, store, &write(&out, &err, ChannelState::Active)).await;
                }
                (200, Some("exit")) => break close_of(&r),
                (200, Some("closed")) => break (200, "ended".to_owned()),
                _ => break (502, r.failure()),
            }
        };
        let state = if status == 502 {
            ChannelState::Errored
        } else {
            ChannelState::Closed
        };
        let _: Result<(), _> = store_call(&sys, store, &write(&out, &err, state)).await;
        let note = StreamClosed {
            path: start.key.pathname.clone(),
            status,
            summary,
        };
        let _ = sys
            .send(start.notify, Body::local(note), SendOpts::default())
            .await;
        Ok(())
    })
}
