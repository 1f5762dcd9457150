//! The name service: a process that maps names to capabilities.
//!
//! Spawn [`name_service`] and hand clients `send` capabilities to it; they use [`register`],
//! [`unregister`] and [`lookup`]. (The kernel's own `Syscalls::register`/`lookup` registry is
//! separate; this is the seed's process-based one, which holds capabilities, not pids.)
//!
//! Invariants:
//! - a registration is the registrant's own `send + monitor` capability ([`register`] sends
//!   `self_cap`); the latest registration of a name wins, as in the seed;
//! - [`lookup`] returns a *send-only* capability derived from the registration: the looked-up
//!   process can be messaged, never monitored, killed or re-derived into more;
//! - that capability lives as long as the registration: when the name is dropped (its owner
//!   unregisters it, re-registers it, or dies) the service revokes the registration and every
//!   capability looked up from it;
//! - the names of a dead owner vanish: the service monitors every registrant;
//! - only the owner of a name can unregister it, and a forged `Down` (one not sent by the dead
//!   process itself) removes nothing;
//! - the service keeps no capability it has no use for (reply capabilities are given up after
//!   the answer).
//!
//! Protocol (value messages): `{"$": "register", "name"}` carrying the registrant's cap;
//! `{"$": "unregister", "name"}`; `{"$": "lookup", "name"}` carrying a reply cap, answered with
//! `{"$": "resolved", "name", "found"}` carrying the send-only cap when found. `Term` stops it.

use crate::proto::{
    answer, call, drop_caps, genuine_down, genuine_term, str_field, tag_of, tagged,
};
use agentos_abi::{
    Body, CapRef, Image, LogLevel, Message, Pid, Right, SendOpts, SysError, Syscalls, Value,
};
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;

/// Why a name-service call failed.
#[derive(Clone, PartialEq, Debug, Error)]
pub enum NameError {
    /// The request could not be delivered (the service is dead, or the cap lacks `send`).
    #[error("names: {0}")]
    Sys(#[from] SysError),
    /// The service answered something this client does not understand.
    #[error("names: malformed reply")]
    BadReply,
}

/// The name-service image (named `names`). It needs no capabilities of its own.
pub fn name_service<S: Syscalls>() -> Image<S> {
    Image::new("names", |sys: S, _args: Value| async move {
        Names::default().serve(&sys).await;
        Ok(())
    })
}

/// Register `name` for the calling process with the service behind `names`. The latest
/// registration of a name wins. One-way: it returns once the request is delivered.
pub async fn register<S: Syscalls>(sys: &S, names: CapRef, name: &str) -> Result<(), NameError> {
    let me = sys.self_cap();
    let req = tagged("register", vec![("name", Value::from(name))]);
    let opts = SendOpts {
        caps: vec![me],
        ..SendOpts::default()
    };
    if let Err(e) = sys.send(names, Body::Value(req), opts).await {
        let _ = sys.revoke(me);
        return Err(NameError::Sys(e.into()));
    }
    Ok(())
}

/// Drop `name` if the calling process holds it (a no-op otherwise). One-way.
pub async fn unregister<S: Syscalls>(sys: &S, names: CapRef, name: &str) -> Result<(), NameError> {
    let req = tagged("unregister", vec![("name", Value::from(name))]);
    sys.send(names, Body::Value(req), SendOpts::default())
        .await
        .map_err(|e| NameError::Sys(e.into()))
}

/// Look `name` up: a send-only capability to its owner, or `None`. Other messages stay in the
/// mailbox, in order. With a `send + monitor` cap to the service, a service that dies before
/// answering fails the lookup (`NoSuchProcess`) instead of leaving it waiting.
pub async fn lookup<S: Syscalls>(
    sys: &S,
    names: CapRef,
    name: &str,
) -> Result<Option<CapRef>, NameError> {
    let req = tagged("lookup", vec![("name", Value::from(name))]);
    let reply = call(sys, names, req).await?;
    let found = reply.body.as_value().and_then(|v| v.get("found"));
    match (found, reply.caps.as_slice()) {
        (Some(Value::Bool(true)), [cap]) => Ok(Some(*cap)),
        (Some(Value::Bool(false)), []) => Ok(None),
        _ => {
            drop_caps(sys, &reply);
            Err(NameError::BadReply)
        }
    }
}

struct Entry {
    owner: Pid,
    cap: CapRef,
}

#[derive(Default)]
struct Names {
    reg: BTreeMap<String, Entry>,
    owned: BTreeMap<Pid, BTreeSet<String>>,
}

impl Names {
    async fn serve<S: Syscalls>(&mut self, sys: &S) {
        loop {
            let m = sys.recv().await;
            if let Some((pid, _)) = genuine_down(&m) {
                for name in self.owned.remove(&pid).unwrap_or_default() {
                    self.drop_name(sys, &name);
                }
                continue;
            }
            if genuine_term(&m) {
                return;
            }
            match tag_of(&m) {
                Some("register") => self.register(sys, m).await,
                Some("unregister") => {
                    if let Some(name) = str_field(&m, "name") {
                        if self.reg.get(name).is_some_and(|e| e.owner == m.from) {
                            let name = name.to_owned();
                            self.drop_name(sys, &name);
                        }
                    }
                    drop_caps(sys, &m);
                }
                Some("lookup") => {
                    let give = str_field(&m, "name")
                        .and_then(|n| self.reg.get(n))
                        .and_then(|e| sys.derive(e.cap, Right::Send.into()).ok());
                    let name = str_field(&m, "name").unwrap_or_default().to_owned();
                    let body = tagged(
                        "resolved",
                        vec![("name", name.into()), ("found", give.is_some().into())],
                    );
                    answer(sys, m, body, give.into_iter().collect()).await;
                }
                _ => drop_caps(sys, &m),
            }
        }
    }

    async fn register<S: Syscalls>(&mut self, sys: &S, m: Message) {
        let (Some(name), Some(&cap)) = (str_field(&m, "name"), m.caps.first()) else {
            drop_caps(sys, &m);
            return;
        };
        let name = name.to_owned();
        for extra in &m.caps[1..] {
            let _ = sys.revoke(*extra);
        }
        let owner = m.from;
        if !self.owned.contains_key(&owner) {
            // The owner's first name: watch it, so its names vanish with it. A cap that cannot
            // monitor cannot be registered.
            if let Err(e) = sys.monitor(cap).await {
                sys.log(
                    LogLevel::Warn,
                    &format!("names: registration of \"{name}\" by {owner} refused: {e}"),
                );
                let _ = sys.revoke(cap);
                return;
            }
        }
        self.drop_name(sys, &name);
        self.reg.insert(name.clone(), Entry { owner, cap });
        self.owned.entry(owner).or_default().insert(name);
    }

    /// Remove `name` and revoke its registration (and every capability looked up from it).
    fn drop_name<S: Syscalls>(&mut self, sys: &S, name: &str) {
        if let Some(e) = self.reg.remove(name) {
            let _ = sys.revoke(e.cap);
            if let Some(set) = self.owned.get_mut(&e.owner) {
                set.remove(name);
            }
        }
    }
}
