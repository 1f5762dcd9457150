//! The gateway device: the door between a process and code outside the kernel.
//!
//! Outbound (the seed's `gatewayDriver(forward)`): `write({to, body})` hands `(to, body)` to
//! the host's forward function and answers with what it returns. Inbound: host code holding a
//! [`GatewayClient`] pushes requests onto a bounded queue; a process `read`s the next one as
//! `{id, body}` (parking until one arrives) and answers with `write({id, reply})`, which
//! completes the host's pending call. A request taken by a process that exits without replying
//! fails on the host side with [`GatewayError::Dropped`]. Every operation costs one reduction.
//!
//! The secure gateway (the seed's `secureGatewayDriver`): a gateway built with
//! [`GatewayDriver::sealed`] and the kernel's transport key (`Kernel::gateway_seal`) seals every
//! forwarded body for its destination node — the forward function gets the sealed bytes — and
//! takes inbound requests only as sealed payloads ([`GatewayClient::call_sealed`]): the MAC,
//! the address, freshness and the nonce are checked before a process sees the body, and the
//! reply goes back sealed for the sender. A refused payload is an error to the host (and a
//! fault event and a counter in the kernel), never a request.

use agentos_abi::device::{DeviceMessage, GatewayInbound, GatewayReply, GatewaySend};
use agentos_abi::driver::BoxFuture;
use agentos_abi::wire::{GatewaySeal, GatewaySealError};
use agentos_abi::NodeId;
use agentos_abi::{Cost, Driver, DriverError, DriverHandle, OpenCtx, Reply, Value};
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

/// The host function outbound bodies go to: `(to, body) → value`.
pub type ForwardFn = Arc<dyn Fn(String, Value) -> Value + Send + Sync>;

/// An inbound call failed on the host side.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum GatewayError {
    /// The inbound queue is full.
    #[error("gateway queue is full")]
    Full,
    /// The gateway is gone.
    #[error("gateway is closed")]
    Closed,
    /// The process that took the request exited without replying.
    #[error("the request was dropped without a reply")]
    Dropped,
    /// A secure gateway takes only sealed payloads ([`GatewayClient::call_sealed`]); a plain
    /// gateway has no key to open them with.
    #[error("this gateway {0}")]
    WrongDoor(&'static str),
    /// The sealed payload was refused (forged, tampered, misaddressed, stale or replayed), or
    /// the reply could not be sealed.
    #[error(transparent)]
    Seal(#[from] GatewaySealError),
}

struct Inbound {
    body: Value,
    reply: oneshot::Sender<Value>,
}

struct Shared {
    rx: tokio::sync::Mutex<mpsc::Receiver<Inbound>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Value>>>,
    next_id: AtomicU64,
}

/// The host's side of a gateway's inbound queue. Cheap to clone.
#[derive(Clone)]
pub struct GatewayClient {
    tx: mpsc::Sender<Inbound>,
    seal: Option<Arc<dyn GatewaySeal>>,
}

impl GatewayClient {
    /// Push `body` and wait for a process's reply (waits for room when the queue is full).
    /// A secure gateway refuses this with [`GatewayError::WrongDoor`]: use
    /// [`call_sealed`](Self::call_sealed).
    pub async fn call(&self, body: Value) -> Result<Value, GatewayError> {
        if self.seal.is_some() {
            return Err(GatewayError::WrongDoor("takes only sealed payloads"));
        }
        self.push(body).await
    }

    /// Open a payload sealed for this node, push its body, wait for a process's reply and
    /// return the reply sealed for the payload's sender.
    pub async fn call_sealed(&self, sealed: &[u8]) -> Result<Bytes, GatewayError> {
        let Some(seal) = &self.seal else {
            return Err(GatewayError::WrongDoor("is not sealed"));
        };
        let (from, body) = seal.open(sealed)?;
        let reply = self.push(body).await?;
        Ok(seal.seal(&from, &reply)?)
    }

    async fn push(&self, body: Value) -> Result<Value, GatewayError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Inbound { body, reply })
            .await
            .map_err(|_| GatewayError::Closed)?;
        rx.await.map_err(|_| GatewayError::Dropped)
    }

    /// Push `body` without waiting for room; the returned future waits for the reply.
    pub fn try_call(
        &self,
        body: Value,
    ) -> Result<BoxFuture<'static, Result<Value, GatewayError>>, GatewayError> {
        if self.seal.is_some() {
            return Err(GatewayError::WrongDoor("takes only sealed payloads"));
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Inbound { body, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => GatewayError::Full,
                mpsc::error::TrySendError::Closed(_) => GatewayError::Closed,
            })?;
        Ok(Box::pin(async move {
            rx.await.map_err(|_| GatewayError::Dropped)
        }))
    }
}

/// The gateway device.
pub struct GatewayDriver {
    name: String,
    forward: Option<ForwardFn>,
    seal: Option<Arc<dyn GatewaySeal>>,
    shared: Arc<Shared>,
    client: GatewayClient,
}

impl GatewayDriver {
    /// A `gateway` device with an inbound queue of `capacity` requests and no forwarder.
    pub fn new(capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        GatewayDriver {
            name: "gateway".into(),
            forward: None,
            seal: None,
            shared: Arc::new(Shared {
                rx: tokio::sync::Mutex::new(rx),
                pending: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
            }),
            client: GatewayClient { tx, seal: None },
        }
    }

    /// Make this a secure gateway sealing with `seal` (the kernel's transport key, from
    /// `Kernel::gateway_seal`): forwarded bodies are sealed for their destination node and
    /// inbound requests must come sealed (see the module docs).
    pub fn sealed(mut self, seal: Arc<dyn GatewaySeal>) -> Self {
        self.client.seal = Some(seal.clone());
        self.seal = Some(seal);
        self
    }

    /// Forward outbound `write({to, body})` to `f` (the seed's `gatewayDriver(forward)`).
    pub fn forwarding(
        mut self,
        f: impl Fn(String, Value) -> Value + Send + Sync + 'static,
    ) -> Self {
        self.forward = Some(Arc::new(f));
        self
    }

    /// Register under another device name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The host's handle for pushing inbound requests.
    pub fn client(&self) -> GatewayClient {
        self.client.clone()
    }
}

impl Driver for GatewayDriver {
    fn name(&self) -> &str {
        &self.name
    }
    fn open(&self, at: OpenCtx) -> BoxFuture<'static, Result<Arc<dyn DriverHandle>, DriverError>> {
        if let Err(e) = at.unscoped(&self.name) {
            return Box::pin(async move { Err(e) });
        }
        let h: Arc<dyn DriverHandle> = Arc::new(GatewayHandle {
            forward: self.forward.clone(),
            seal: self.seal.clone(),
            shared: self.shared.clone(),
            taken: Arc::new(Mutex::new(Vec::new())),
        });
        Box::pin(async move { Ok(h) })
    }
}

struct GatewayHandle {
    forward: Option<ForwardFn>,
    seal: Option<Arc<dyn GatewaySeal>>,
    shared: Arc<Shared>,
    /// Ids this handle read and has not answered yet (dropped when its process exits).
    taken: Arc<Mutex<Vec<u64>>>,
}

const ONE_REDUCTION: Cost = Cost {
    tokens: 0,
    tool_calls: 0,
    usd_micros: 0,
    reductions: 1,
};

impl DriverHandle for GatewayHandle {
    /// The next inbound request, `{id, body}`; parks until one arrives.
    fn read(&self, _req: Value) -> BoxFuture<'static, Result<Reply, DriverError>> {
        let shared = self.shared.clone();
        let taken = self.taken.clone();
        Box::pin(async move {
            let next = shared.rx.lock().await.recv().await;
            let Some(Inbound { body, reply }) = next else {
                return Err(DriverError::Failed("gateway: inbound queue closed".into()));
            };
            let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
            shared.pending.lock().insert(id, reply);
            taken.lock().push(id);
            Ok(Reply {
                value: GatewayInbound { id, body }.to_value(),
                cost: ONE_REDUCTION,
            })
        })
    }

    /// `{id, reply}` answers inbound request `id`; `{to, body}` forwards outbound.
    fn write(&self, data: Value) -> BoxFuture<'static, Result<Reply, DriverError>> {
        let out = if data.get("id").is_some() {
            GatewayReply::from_value(data)
                .map_err(|e| DriverError::BadRequest(format!("gateway reply: {e}")))
                .and_then(|r| {
                    self.taken.lock().retain(|i| *i != r.id);
                    match self.shared.pending.lock().remove(&r.id) {
                        // The host may have stopped waiting; the reply is still delivered.
                        Some(tx) => Ok(Value::Bool(tx.send(r.reply).is_ok())),
                        None => Err(DriverError::BadRequest(format!(
                            "gateway: no pending request {}",
                            r.id
                        ))),
                    }
                })
        } else {
            match (&self.forward, GatewaySend::from_value(data)) {
                (_, Err(e)) => Err(DriverError::BadRequest(format!("gateway send: {e}"))),
                (None, Ok(_)) => Err(DriverError::Unsupported),
                (Some(f), Ok(s)) => match &self.seal {
                    None => Ok(f(s.to, s.body)),
                    Some(seal) => seal
                        .seal(&NodeId::from(s.to.as_str()), &s.body)
                        .map(|sealed| f(s.to, Value::Bytes(sealed)))
                        .map_err(|e| DriverError::Failed(e.to_string())),
                },
            }
        };
        Box::pin(async move {
            out.map(|value| Reply {
                value,
                cost: ONE_REDUCTION,
            })
        })
    }

    fn close(&self) {
        let ids = std::mem::take(&mut *self.taken.lock());
        let mut pending = self.shared.pending.lock();
        for id in ids {
            pending.remove(&id); // the host's call fails with Dropped
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_round_trip_and_forwarding() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let g = GatewayDriver::new(4)
                .forwarding(|to, body| Value::List(vec![Value::Str(to), body]));
            let client = g.client();
            let h = g
                .open(agentos_abi::OpenCtx::new(agentos_abi::Pid(1)))
                .await
                .unwrap();
            let call = tokio::spawn(async move { client.call(Value::U64(7)).await });
            let inbound =
                GatewayInbound::from_value(h.read(Value::Unit).await.unwrap().value).unwrap();
            assert_eq!(inbound.body, Value::U64(7));
            let ack = h
                .write(
                    GatewayReply {
                        id: inbound.id,
                        reply: "ok".into(),
                    }
                    .to_value(),
                )
                .await
                .unwrap();
            assert_eq!(ack.cost.reductions, 1);
            assert_eq!(call.await.unwrap(), Ok(Value::Str("ok".into())));
            let fwd = h
                .write(
                    GatewaySend {
                        to: "peer".into(),
                        body: Value::U64(1),
                    }
                    .to_value(),
                )
                .await
                .unwrap();
            assert_eq!(fwd.value, Value::List(vec!["peer".into(), Value::U64(1)]));
            assert!(h
                .write(
                    GatewayReply {
                        id: 99,
                        reply: Value::Unit
                    }
                    .to_value()
                )
                .await
                .is_err());
        });
    }

    #[test]
    fn a_closed_handle_drops_its_requests() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let g = GatewayDriver::new(1);
            let client = g.client();
            let h = g
                .open(agentos_abi::OpenCtx::new(agentos_abi::Pid(1)))
                .await
                .unwrap();
            let pending = client.try_call(Value::Unit).unwrap();
            assert_eq!(client.try_call(Value::Unit).err(), Some(GatewayError::Full));
            h.read(Value::Unit).await.unwrap();
            h.close();
            assert_eq!(pending.await, Err(GatewayError::Dropped));
        });
    }
}
