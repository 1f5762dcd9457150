//! The client side of the NATS text protocol: parsing server operations, encoding `PUB`.
//!
//! Server operations are `INFO {json}`, `MSG <subject> <sid> [reply-to] <#bytes>` followed by
//! the payload and CRLF, `PING`, `PONG`, `+OK` and `-ERR <message>`; names are
//! case-insensitive and arguments are separated by spaces or tabs. Parsing is incremental
//! over the connection's read buffer and zero-copy: a message payload is a slice of it.

use bytes::{Buf, Bytes, BytesMut};
use std::ops::Range;

/// One operation received from the server.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ServerOp {
    /// Server information (JSON).
    Info(Bytes),
    /// A message on one of our subscriptions.
    Msg {
        /// The reply subject, which carries the sender's own subject.
        reply: Option<Bytes>,
        /// The payload.
        payload: Bytes,
    },
    /// The server asks for a `PONG`.
    Ping,
    /// The answer to one of our `PING`s.
    Pong,
    /// Acknowledgement (only in verbose mode).
    Ok,
    /// A server error (the server may close the connection after it).
    Err(Bytes),
}

/// A violation of the protocol by the server (the connection is dropped and redialed).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProtoError {
    /// A control line longer than the limit.
    #[error("control line too long")]
    LineTooLong,
    /// An operation this client does not know.
    #[error("unknown operation")]
    UnknownOp,
    /// A `MSG` line with the wrong arguments.
    #[error("malformed MSG")]
    BadMsg,
    /// A `MSG` larger than the limit.
    #[error("message too large")]
    TooLarge,
    /// A payload not followed by CRLF.
    #[error("payload not terminated by CRLF")]
    MissingCrlf,
}

const MAX_ARGS: usize = 5;

/// Split `line` (found at `base` in the buffer) into at most `MAX_ARGS` token ranges.
fn tokens(line: &[u8], base: usize) -> Result<([Range<usize>; MAX_ARGS], usize), ProtoError> {
    let mut out: [Range<usize>; MAX_ARGS] = Default::default();
    let mut n = 0;
    let mut i = 0;
    while i < line.len() {
        while i < line.len() && (line[i] == b' ' || line[i] == b'\t') {
            i += 1;
        }
        if i == line.len() {
            break;
        }
        let start = i;
        while i < line.len() && line[i] != b' ' && line[i] != b'\t' {
            i += 1;
        }
        if n == MAX_ARGS {
            return Err(ProtoError::BadMsg);
        }
        out[n] = base + start..base + i;
        n += 1;
    }
    Ok((out, n))
}

fn parse_usize(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.iter().try_fold(0usize, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(usize::from(b - b'0'))
    })
}

/// Parse the next operation from `buf`, consuming it. `Ok(None)` means more input is needed
/// (room for it is reserved). `max_line` bounds a control line, `max_payload` a message.
pub(crate) fn parse_op(
    buf: &mut BytesMut,
    max_line: usize,
    max_payload: usize,
) -> Result<Option<ServerOp>, ProtoError> {
    let scan = buf.len().min(max_line + 2);
    let Some(nl) = buf[..scan].iter().position(|&b| b == b'\n') else {
        if buf.len() > max_line + 1 {
            return Err(ProtoError::LineTooLong);
        }
        return Ok(None);
    };
    let line_end = if nl > 0 && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    let op_end = buf[..line_end]
        .iter()
        .position(|&b| b == b' ' || b == b'\t')
        .unwrap_or(line_end);
    let rest_start = op_end;
    let op = buf[..op_end].to_ascii_uppercase();
    let simple = |buf: &mut BytesMut, op: ServerOp| {
        buf.advance(nl + 1);
        Ok(Some(op))
    };
    match &op[..] {
        b"MSG" => {
            let (args, n) = tokens(&buf[rest_start..line_end], rest_start)?;
            let (reply, size) = match n {
                3 => (None, args[2].clone()),
                4 => (Some(args[2].clone()), args[3].clone()),
                _ => return Err(ProtoError::BadMsg),
            };
            let size = parse_usize(&buf[size]).ok_or(ProtoError::BadMsg)?;
            if size > max_payload {
                return Err(ProtoError::TooLarge);
            }
            let total = nl + 1 + size + 2;
            if buf.len() < total {
                buf.reserve(total - buf.len());
                return Ok(None);
            }
            if &buf[nl + 1 + size..total] != b"\r\n" {
                return Err(ProtoError::MissingCrlf);
            }
            let head = buf.split_to(nl + 1).freeze();
            let payload = buf.split_to(size).freeze();
            buf.advance(2);
            Ok(Some(ServerOp::Msg {
                reply: reply.map(|r| head.slice(r)),
                payload,
            }))
        }
        b"PING" => simple(buf, ServerOp::Ping),
        b"PONG" => simple(buf, ServerOp::Pong),
        b"+OK" => simple(buf, ServerOp::Ok),
        b"INFO" | b"-ERR" => {
            let line = buf.split_to(nl + 1).freeze();
            let arg = line.slice(rest_start..line_end);
            let arg = trim(arg);
            Ok(Some(if &op[..] == b"INFO" {
                ServerOp::Info(arg)
            } else {
                ServerOp::Err(arg)
            }))
        }
        _ => Err(ProtoError::UnknownOp),
    }
}

fn trim(b: Bytes) -> Bytes {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    b.slice(start..end.max(start))
}

/// Append `PUB <prefix>.<to> <reply> <len>\r\n<payload>\r\n` to `out`.
pub(crate) fn encode_pub(prefix: &str, to: &str, reply: &str, payload: &[u8], out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = payload.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.reserve(prefix.len() + to.len() + reply.len() + payload.len() + 32);
    out.extend_from_slice(b"PUB ");
    out.extend_from_slice(prefix.as_bytes());
    out.push(b'.');
    out.extend_from_slice(to.as_bytes());
    out.push(b' ');
    out.extend_from_slice(reply.as_bytes());
    out.push(b' ');
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// Check that `s` can be (part of) a NATS subject: non-empty dot-separated tokens without
/// whitespace, control or wildcard characters.
pub(crate) fn check_subject(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("empty");
    }
    if s.split('.').any(str::is_empty) {
        return Err("empty subject token");
    }
    if s.bytes()
        .any(|b| b <= b' ' || b == 0x7f || b == b'*' || b == b'>')
    {
        return Err("whitespace, control or wildcard character");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Vec<ServerOp> {
        let mut buf = BytesMut::new();
        let mut ops = Vec::new();
        // Feed byte by byte: every prefix must parse as "need more".
        for b in input {
            buf.extend_from_slice(&[*b]);
            while let Some(op) = parse_op(&mut buf, 1024, 1024).unwrap() {
                ops.push(op);
            }
        }
        assert!(buf.is_empty());
        ops
    }

    #[test]
    fn parses_server_ops_incrementally() {
        let ops = parse_all(
            b"INFO {\"max_payload\":1048576} \r\nPING\r\npong\r\n+OK\r\n\
              MSG agentos.node.b 1 agentos.node.a 5\r\nhello\r\n\
              MSG s 1 0\r\n\r\nmsg\tx  2   3\r\na\r\n\r\n-ERR 'Unknown Protocol Operation'\r\n",
        );
        assert_eq!(
            ops,
            vec![
                ServerOp::Info(Bytes::from_static(b"{\"max_payload\":1048576}")),
                ServerOp::Ping,
                ServerOp::Pong,
                ServerOp::Ok,
                ServerOp::Msg {
                    reply: Some(Bytes::from_static(b"agentos.node.a")),
                    payload: Bytes::from_static(b"hello"),
                },
                ServerOp::Msg {
                    reply: None,
                    payload: Bytes::new(),
                },
                ServerOp::Msg {
                    reply: None,
                    payload: Bytes::from_static(b"a\r\n"),
                },
                ServerOp::Err(Bytes::from_static(b"'Unknown Protocol Operation'")),
            ]
        );
    }

    #[test]
    fn rejects_protocol_violations() {
        let bad = |s: &[u8]| parse_op(&mut BytesMut::from(s), 64, 16).unwrap_err();
        assert_eq!(bad(b"BOGUS\r\n"), ProtoError::UnknownOp);
        assert_eq!(bad(b"MSG a\r\n"), ProtoError::BadMsg);
        assert_eq!(bad(b"MSG a 1 b c d e\r\n"), ProtoError::BadMsg);
        assert_eq!(bad(b"MSG a 1 x\r\n"), ProtoError::BadMsg);
        assert_eq!(
            bad(b"MSG a 1 99999999999999999999999\r\n"),
            ProtoError::BadMsg
        );
        assert_eq!(bad(b"MSG a 1 17\r\n"), ProtoError::TooLarge);
        assert_eq!(bad(b"MSG a 1 2\r\nabXY"), ProtoError::MissingCrlf);
        assert_eq!(bad(&[b'x'; 100]), ProtoError::LineTooLong);
    }

    #[test]
    fn pub_encoding_and_subject_checks() {
        let mut out = Vec::new();
        encode_pub("agentos.node", "b", "agentos.node.a", b"xyz", &mut out);
        encode_pub("p", "c", "p.a", b"", &mut out);
        assert_eq!(
            &out[..],
            b"PUB agentos.node.b agentos.node.a 3\r\nxyz\r\nPUB p.c p.a 0\r\n\r\n"
        );
        assert!(check_subject("agentos.node").is_ok());
        assert!(check_subject("node-1").is_ok());
        for bad in ["", "a..b", ".a", "a.", "a b", "a*", "a.>", "a\r\n"] {
            assert!(check_subject(bad).is_err(), "{bad:?}");
        }
    }
}
