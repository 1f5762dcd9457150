//! Plumbing shared by the supervision programs: tagged [`Value`] messages, an [`ExitReason`]
//! codec, genuine-system-message checks, and request/reply with a correlation id on a
//! selective receive.
//!
//! Every protocol here is plain [`Value`] data (never `Body::Local`), so a mailbox holding it
//! can still be snapshotted. A message is a map whose `"$"` entry is its tag, as in the seed.

use agentos_abi::{
    Body, CapRef, ExitReason, Message, Meter, Pid, Right, Select, SendOpts, SysError, SysMsg,
    Syscalls, Value,
};

/// A tagged message: `{"$": tag, fields..}`.
pub(crate) fn tagged(tag: &str, fields: Vec<(&str, Value)>) -> Value {
    let mut kv = Vec::with_capacity(fields.len() + 1);
    kv.push(("$".to_owned(), Value::Str(tag.to_owned())));
    kv.extend(fields.into_iter().map(|(k, v)| (k.to_owned(), v)));
    Value::Map(kv)
}

/// The tag of a value message, if it is one.
pub(crate) fn tag_of(m: &Message) -> Option<&str> {
    m.body.as_value()?.get("$")?.as_str()
}

/// A string field of a value message.
pub(crate) fn str_field<'a>(m: &'a Message, key: &str) -> Option<&'a str> {
    m.body.as_value()?.get(key)?.as_str()
}

/// A u64 field of a value message.
pub(crate) fn u64_field(m: &Message, key: &str) -> Option<u64> {
    m.body.as_value()?.get(key)?.as_u64()
}

/// A genuine `Down`: one the kernel generated, whose sender is the dead process itself.
///
/// Any process can put a `Body::Sys` in a send, so a `Down` claiming some *other* process died
/// is a forgery and is ignored by every program here.
pub(crate) fn genuine_down(m: &Message) -> Option<(Pid, &ExitReason)> {
    match m.sys()? {
        SysMsg::Down { pid, reason } if m.from == *pid => Some((*pid, reason)),
        _ => None,
    }
}

/// A genuine `Term`: its `from` field names its sender.
pub(crate) fn genuine_term(m: &Message) -> bool {
    matches!(m.sys(), Some(SysMsg::Term { from }) if *from == m.from)
}

/// Give up every capability a message carried (ones a program has no use for), so they do not
/// pile up in its capability table.
pub(crate) fn drop_caps<S: Syscalls>(sys: &S, m: &Message) {
    for c in &m.caps {
        let _ = sys.revoke(*c);
    }
}

const METERS: [Meter; 7] = [
    Meter::Tokens,
    Meter::ToolCalls,
    Meter::Usd,
    Meter::Children,
    Meter::WallMs,
    Meter::Mem,
    Meter::Mailbox,
];

/// An exit reason as a value: `{"kind": .., ..fields}`.
pub(crate) fn reason_to_value(r: &ExitReason) -> Value {
    let kind = ("kind".to_owned(), Value::Str(r.kind().to_owned()));
    let extra = match r {
        ExitReason::Killed { by } => Some(("by", Value::U64(by.0))),
        ExitReason::Fault { error } => Some(("error", Value::Str(error.clone()))),
        ExitReason::Quota { resource } => Some(("resource", Value::from(resource.name()))),
        ExitReason::Linked { pid } => Some(("pid", Value::U64(pid.0))),
        ExitReason::Other { .. } => Some(("other", Value::Bool(true))),
        _ => None,
    };
    let mut kv = vec![kind];
    kv.extend(extra.map(|(k, v)| (k.to_owned(), v)));
    Value::Map(kv)
}

/// The exit reason [`reason_to_value`] encoded.
pub(crate) fn reason_from_value(v: &Value) -> Option<ExitReason> {
    let kind = v.get("kind")?.as_str()?;
    if v.get("other").is_some() {
        return Some(ExitReason::Other {
            kind: kind.to_owned(),
        });
    }
    let pid = |k: &str| v.get(k).and_then(Value::as_u64).map(Pid);
    Some(match kind {
        "normal" => ExitReason::Normal,
        "shutdown" => ExitReason::Shutdown,
        "killed" => ExitReason::Killed { by: pid("by")? },
        "fault" => ExitReason::fault(v.get("error")?.as_str()?),
        "quota" => {
            let name = v.get("resource")?.as_str()?;
            ExitReason::Quota {
                resource: METERS.into_iter().find(|m| m.name() == name)?,
            }
        }
        "deadline" => ExitReason::Deadline,
        "linked" => ExitReason::Linked { pid: pid("pid")? },
        "noconnection" => ExitReason::NoConnection,
        _ => return None,
    })
}

/// Send `req` to the server `to` with a fresh reply capability (`caps[0]`) and a correlation
/// id, then wait for the value message carrying that id, leaving every other message in the
/// mailbox in order (a selective receive).
///
/// When `to` grants `monitor` the server is monitored for the call: if it dies between taking
/// the request and answering, the call fails with `NoSuchProcess` instead of waiting forever,
/// and the monitor is stopped (its down flushed) either way. A send-only `to` cannot be
/// monitored; the call then waits for the answer as before.
///
/// The correlation id is the reply capability's ref: refs are never reused, so it is unique.
pub(crate) async fn call<S: Syscalls>(
    sys: &S,
    to: CapRef,
    req: Value,
) -> Result<Message, SysError> {
    let watch = match sys.cap_info(to) {
        Ok(i) if i.rights.has(Right::Monitor) => Some(sys.monitor(to).await?),
        _ => None,
    };
    let reply = sys.self_cap();
    let corr = reply.0;
    let opts = SendOpts {
        caps: vec![reply],
        corr: Some(corr),
        deadline: None,
    };
    if let Err(e) = sys.send(to, Body::Value(req), opts).await {
        // Nothing was delivered, so the reply capability is still ours.
        let _ = sys.revoke(reply);
        if let Some(w) = watch {
            sys.demonitor(w, true);
        }
        return Err(e.into());
    }
    let select = match watch {
        Some(monitor) => Select::Reply { corr, monitor },
        None => Select::Corr(corr),
    };
    loop {
        let Some(m) = sys.recv_until(select, None).await else {
            continue;
        };
        if m.sys().is_some() {
            // The server died first. Its capability to answer us went with it.
            return Err(SysError::NoSuchProcess);
        }
        if m.body.as_value().is_none() {
            // Not an answer (a foreign message that reused the id): give its caps up.
            drop_caps(sys, &m);
            continue;
        }
        if let Some(w) = watch {
            sys.demonitor(w, true);
        }
        return Ok(m);
    }
}

/// Answer a request made with [`call`]: send `body` (and `caps`) through the request's reply
/// capability with its correlation id, then give the reply capability up. Extra capabilities a
/// request carried are given up too. A client that died meanwhile is not an error; the
/// capabilities that were to go with the reply are then revoked.
pub(crate) async fn answer<S: Syscalls>(sys: &S, req: Message, body: Value, caps: Vec<CapRef>) {
    let Some(&reply) = req.caps.first() else {
        for c in caps {
            let _ = sys.revoke(c);
        }
        return;
    };
    let opts = SendOpts {
        caps: caps.clone(),
        corr: req.corr,
        deadline: None,
    };
    if sys.send(reply, Body::Value(body), opts).await.is_err() {
        for c in caps {
            let _ = sys.revoke(c);
        }
    }
    drop_caps(sys, &req);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_exit_reason_round_trips_through_a_value() {
        let all = [
            ExitReason::Normal,
            ExitReason::Shutdown,
            ExitReason::Killed { by: Pid(7) },
            ExitReason::fault("boom"),
            ExitReason::Quota {
                resource: Meter::Tokens,
            },
            ExitReason::Quota {
                resource: Meter::Mailbox,
            },
            ExitReason::Deadline,
            ExitReason::Linked { pid: Pid(3) },
            ExitReason::NoConnection,
            ExitReason::Other {
                kind: "fault".into(),
            },
            ExitReason::Other {
                kind: "custom".into(),
            },
        ];
        for r in all {
            assert_eq!(reason_from_value(&reason_to_value(&r)), Some(r.clone()));
        }
    }

    #[test]
    fn a_tagged_message_reads_back() {
        let m = Message::new(
            Pid(2),
            Body::Value(tagged(
                "lookup",
                vec![("name", "db".into()), ("n", Value::U64(4))],
            )),
        );
        assert_eq!(tag_of(&m), Some("lookup"));
        assert_eq!(str_field(&m, "name"), Some("db"));
        assert_eq!(u64_field(&m, "n"), Some(4));
        assert_eq!(tag_of(&Message::new(Pid(2), Body::Empty)), None);
    }

    #[test]
    fn a_down_is_genuine_only_from_the_dead_process_itself() {
        let down = |from, pid| {
            Message::new(
                Pid(from),
                Body::Sys(SysMsg::Down {
                    pid: Pid(pid),
                    reason: ExitReason::Normal,
                }),
            )
        };
        assert!(genuine_down(&down(5, 5)).is_some());
        assert!(genuine_down(&down(4, 5)).is_none(), "a forged down");
        let term =
            |from, claimed| Message::new(Pid(from), Body::Sys(SysMsg::Term { from: Pid(claimed) }));
        assert!(genuine_term(&term(1, 1)));
        assert!(!genuine_term(&term(2, 1)));
    }
}
