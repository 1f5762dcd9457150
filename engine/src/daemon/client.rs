//! A small JSON-RPC client of the daemon, over tokio-tungstenite.
//!
//! One reader task demultiplexes the socket: a response goes to the caller waiting on its
//! id, a response without a known id (a −32700 to a raw frame) to [`Client::orphan`], and a
//! notification to [`Client::notification`]'s queue, in arrival order. `agentos run
//! --connect`, the daemon tests and the `rpc` bench use it.
//!
//! **Invariants:** a call whose connection closes fails with [`ClientError::Closed`], never
//! hangs; notifications are queued unbounded on the client side (the daemon bounds its
//! side), so a slow reader never makes the socket drop a frame.
//!
//! **API boundary:** [`Client`], [`Notification`], [`ClientError`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::stream::{SplitSink, StreamExt};
use futures_util::SinkExt;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::rpc::RpcError;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon could not be reached.
    #[error("cannot connect to {url}: {detail} (is `agentos serve` running?)")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        detail: String,
    },
    /// The connection closed before the answer came.
    #[error("the daemon closed the connection")]
    Closed,
    /// The daemon answered with an error.
    #[error("{0}")]
    Rpc(RpcError),
    /// The daemon answered something that is not JSON-RPC.
    #[error("protocol: {0}")]
    Protocol(String),
}

/// A server notification.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Its method (`log/entry`, `loop/terminated`, …).
    pub method: String,
    /// Its params.
    pub params: Value,
}

/// A connection to the daemon.
pub struct Client {
    sink: tokio::sync::Mutex<SplitSink<Ws, Message>>,
    pending: Pending,
    next_id: AtomicU64,
    notes: tokio::sync::Mutex<mpsc::UnboundedReceiver<Notification>>,
    orphans: tokio::sync::Mutex<mpsc::UnboundedReceiver<Value>>,
    reader: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Client {
    /// Connects to `url` (`ws://127.0.0.1:3044`); must run inside a tokio runtime.
    pub async fn connect(url: &str) -> Result<Client, ClientError> {
        let (ws, _) =
            // Nagle off: a call is one small frame waiting for one small answer.
            tokio_tungstenite::connect_async_with_config(
                url,
                Some(
                    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                        .read_buffer_size(super::READ_BUFFER),
                ),
                true,
            )
                .await
                .map_err(|e| ClientError::Connect {
                    url: url.to_owned(),
                    detail: e.to_string(),
                })?;
        let (sink, mut stream) = ws.split();
        let pending: Pending = Arc::default();
        let (note_tx, notes) = mpsc::unbounded_channel();
        let (orphan_tx, orphans) = mpsc::unbounded_channel();
        let p = pending.clone();
        let reader = tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let text = match msg {
                    Message::Text(t) => t,
                    Message::Close(_) => break,
                    _ => continue,
                };
                let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                let route = |v: Value| {
                    if let Some(m) = v.get("method").and_then(Value::as_str) {
                        let _ = note_tx.send(Notification {
                            method: m.to_owned(),
                            params: v.get("params").cloned().unwrap_or(Value::Null),
                        });
                        return;
                    }
                    let waiter = v
                        .get("id")
                        .and_then(Value::as_u64)
                        .and_then(|id| p.lock().remove(&id));
                    match waiter {
                        Some(w) => {
                            let _ = w.send(v);
                        }
                        None => {
                            let _ = orphan_tx.send(v);
                        }
                    }
                };
                match v {
                    Value::Array(items) => items.into_iter().for_each(route),
                    v => route(v),
                }
            }
            // Fail every waiter: dropping the senders wakes them with an error.
            p.lock().clear();
        });
        Ok(Client {
            sink: tokio::sync::Mutex::new(sink),
            pending,
            next_id: AtomicU64::new(1),
            notes: tokio::sync::Mutex::new(notes),
            orphans: tokio::sync::Mutex::new(orphans),
            reader,
        })
    }

    /// Calls `method` with `params` and waits for its result.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(id, tx);
        let frame = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        if let Err(e) = self.send_text(frame.to_string()).await {
            self.pending.lock().remove(&id);
            return Err(e);
        }
        let v = rx.await.map_err(|_| ClientError::Closed)?;
        result_of(v)
    }

    /// Sends a raw text frame (tests of malformed input).
    pub async fn send_text(&self, text: String) -> Result<(), ClientError> {
        self.sink
            .lock()
            .await
            .send(Message::Text(text.into()))
            .await
            .map_err(|_| ClientError::Closed)
    }

    /// The next response that matched no call (an answer to a raw frame); `None` once closed.
    pub async fn orphan(&self) -> Option<Value> {
        self.orphans.lock().await.recv().await
    }

    /// The next notification; `None` once the connection closed and the queue is empty.
    pub async fn notification(&self) -> Option<Notification> {
        self.notes.lock().await.recv().await
    }

    /// Closes the connection politely.
    pub async fn close(&self) {
        let mut sink = self.sink.lock().await;
        let _ = sink.send(Message::Close(None)).await;
        let _ = sink.close().await;
    }
}

/// A response object to its result or error.
pub fn result_of(v: Value) -> Result<Value, ClientError> {
    if let Some(e) = v.get("error") {
        return Err(ClientError::Rpc(RpcError {
            code: e.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            data: e.get("data").cloned(),
        }));
    }
    match v {
        Value::Object(mut o) => o
            .remove("result")
            .ok_or_else(|| ClientError::Protocol("a response without result or error".into())),
        _ => Err(ClientError::Protocol(
            "a response that is not an object".into(),
        )),
    }
}
