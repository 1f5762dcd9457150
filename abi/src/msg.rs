//! Messages: what moves between process mailboxes.
//!
//! A message body is either program data ([`Body::Value`], [`Body::Bytes`], or a typed
//! [`Body::Local`] value that moves between local processes without serialization) or a
//! kernel-generated [`SysMsg`]. Capabilities passed along are ownership transfers (fd passing).

use crate::exit::ExitReason;
use crate::ids::{CapRef, Pid};
use crate::value::Value;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::fmt;
use std::sync::Arc;

/// A message in a mailbox.
#[derive(Debug, Serialize, Deserialize)]
pub struct Message {
    /// The sender (`Pid::KERNEL` for external and kernel deliveries).
    pub from: Pid,
    /// The payload.
    pub body: Body,
    /// Capabilities transferred with the message; the receiver now owns them.
    pub caps: Vec<CapRef>,
    /// Correlation id for request/reply protocols.
    pub corr: Option<u64>,
    /// A kernel-clock deadline (ms) the sender attached; advisory for the receiver.
    pub deadline: Option<u64>,
}

impl Message {
    /// A message with just a sender and a body.
    pub fn new(from: Pid, body: Body) -> Self {
        Message {
            from,
            body,
            caps: Vec::new(),
            corr: None,
            deadline: None,
        }
    }
    /// The system message in the body, if it is one.
    pub fn sys(&self) -> Option<&SysMsg> {
        match &self.body {
            Body::Sys(s) => Some(s),
            _ => None,
        }
    }
}

/// A message body.
#[derive(Serialize, Deserialize, Default)]
pub enum Body {
    /// No payload.
    #[default]
    Empty,
    /// Structured, serializable data.
    Value(Value),
    /// Opaque bytes.
    Bytes(Bytes),
    /// A kernel-generated system message.
    Sys(SysMsg),
    /// A typed Rust value moved between local processes without serialization. It cannot cross
    /// the wire or enter a snapshot; trying to serialize it is an error. (It must stay the last
    /// variant: serde numbers the variants after a skipped one differently on the way back in.)
    #[serde(skip)]
    Local(Box<dyn Any + Send>),
}

impl Body {
    /// Wrap a typed local value.
    pub fn local<T: Any + Send>(v: T) -> Body {
        Body::Local(Box::new(v))
    }
    /// Take a typed local value out, if the body holds a `T`.
    pub fn downcast<T: Any>(self) -> Result<T, Body> {
        match self {
            Body::Local(b) => match b.downcast::<T>() {
                Ok(v) => Ok(*v),
                Err(b) => Err(Body::Local(b)),
            },
            other => Err(other),
        }
    }
    /// The value, if the body is a [`Body::Value`].
    pub fn as_value(&self) -> Option<&Value> {
        match self {
            Body::Value(v) => Some(v),
            _ => None,
        }
    }
    /// A copy of the body, if it is not a [`Body::Local`] (typed local values are moved, never
    /// copied).
    pub fn try_clone(&self) -> Option<Body> {
        match self {
            Body::Empty => Some(Body::Empty),
            Body::Value(v) => Some(Body::Value(v.clone())),
            Body::Bytes(b) => Some(Body::Bytes(b.clone())),
            Body::Sys(s) => Some(Body::Sys(s.clone())),
            Body::Local(_) => None,
        }
    }
    /// Whether the body can be serialized (everything but [`Body::Local`]).
    pub fn is_serializable(&self) -> bool {
        !matches!(self, Body::Local(_))
    }
}

impl From<Value> for Body {
    fn from(v: Value) -> Self {
        Body::Value(v)
    }
}

impl From<SysMsg> for Body {
    fn from(s: SysMsg) -> Self {
        Body::Sys(s)
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::Empty => f.write_str("Empty"),
            Body::Value(v) => f.debug_tuple("Value").field(v).finish(),
            Body::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Body::Local(_) => f.write_str("Local(..)"),
            Body::Sys(s) => f.debug_tuple("Sys").field(s).finish(),
        }
    }
}

/// Messages the kernel itself generates.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub enum SysMsg {
    /// The first message every booted process receives: its authority.
    Boot {
        /// The spawn capability.
        spawn: CapRef,
        /// Device capabilities (`open` right), by driver name.
        devices: Vec<(Arc<str>, CapRef)>,
        /// For a process spawned at a peer's request: a `send` proxy cap to the requester.
        reply: Option<CapRef>,
    },
    /// A linked or monitored process died.
    Down {
        /// The dead process.
        pid: Pid,
        /// Why it died.
        reason: ExitReason,
    },
    /// A monitored process on another node died, or the connection to that node was lost
    /// (`reason` is then `NoConnection`).
    RemoteDown {
        /// The node it lived on.
        node: crate::ids::NodeId,
        /// Its pid there.
        pid: Pid,
        /// Why.
        reason: ExitReason,
    },
    /// A graceful, catchable stop request (SIGTERM).
    Term {
        /// Who asked.
        from: Pid,
    },
}

impl SysMsg {
    /// Find a device cap in a boot grant by driver name.
    pub fn device(&self, name: &str) -> Option<CapRef> {
        match self {
            SysMsg::Boot { devices, .. } => {
                devices.iter().find(|(n, _)| &**n == name).map(|(_, c)| *c)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::Meter;

    #[test]
    fn messages_round_trip_through_postcard() {
        let msg = Message {
            from: Pid(7),
            body: Body::Sys(SysMsg::Down {
                pid: Pid(9),
                reason: ExitReason::Quota {
                    resource: Meter::Tokens,
                },
            }),
            caps: vec![CapRef(3)],
            corr: Some(11),
            deadline: None,
        };
        let bytes = postcard::to_allocvec(&msg).unwrap();
        let back: Message = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.from, Pid(7));
        assert_eq!(back.sys(), msg.sys());
        assert_eq!(back.caps, vec![CapRef(3)]);
        assert_eq!(back.corr, Some(11));
    }

    #[test]
    fn a_local_body_refuses_to_serialize_instead_of_losing_data() {
        let body = Body::local(vec![1u8, 2, 3]);
        assert!(!body.is_serializable());
        assert!(postcard::to_allocvec(&body).is_err());
        assert_eq!(body.downcast::<Vec<u8>>().unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn boot_grant_finds_devices_by_name() {
        let boot = SysMsg::Boot {
            spawn: CapRef(1),
            devices: vec![(Arc::from("llm"), CapRef(2))],
            reply: None,
        };
        assert_eq!(boot.device("llm"), Some(CapRef(2)));
        assert_eq!(boot.device("kv"), None);
    }
}
