//! Target decomposition: `(target)` text (and the MOVE destination body) into a
//! [`ParsedPath`] — a bare local path, a `scheme://` URL split WHATWG-style, or a
//! `#pattern#flags` path-name regex.
//!
//! **Invariant:** pure string work, no allocation beyond the result, never panics.
//!
//! **API boundary:** [`parse_path`] is public so RPC layers and scheme handlers decompose
//! paths exactly as statements do; [`decode_path_parens`] is the consumer-side decode of
//! `%28`/`%29` (the seed's `decodePathParens`).

use std::collections::BTreeMap;

use super::ast::{ParsedPath, QueryValue};

/// Schemes whose `scheme://X` carries an authority (userinfo, host, port). Every other
/// scheme is opaque: what follows `://` is path.
pub const AUTHORITY_SCHEMES: [&str; 7] = ["http", "https", "ws", "wss", "ftp", "ftps", "file"];

/// Why a target could not be decomposed (the message goes into a visitor error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `()` or an empty MOVE destination.
    #[error("empty path")]
    Empty,
    /// A URL whose authority is malformed.
    #[error("invalid URI in path: {0}")]
    InvalidUri(String),
    /// A `#…` target without its closing `#`.
    #[error("unterminated regex path: expected '#' after the pattern")]
    UnterminatedRegex,
    /// Flags outside `[igmsu]` or repeated.
    #[error("invalid regex flags '{0}' in path")]
    BadFlags(String),
}

/// Length of a `scheme://` prefix (including `://`) if `s` starts with one.
fn scheme_len(s: &[u8]) -> Option<usize> {
    let first = *s.first()?;
    if !first.is_ascii_alphabetic() {
        return None;
    }
    let mut i = 1;
    while i < s.len() && (s[i].is_ascii_alphanumeric() || matches!(s[i], b'+' | b'.' | b'-')) {
        i += 1;
    }
    if s.get(i..i + 3) == Some(b"://") {
        Some(i)
    } else {
        None
    }
}

/// Splits `#pattern#flags` into pattern and flags, honouring `\#` escapes. `s` starts
/// with `#`; everything after the closing `#` must be valid flags.
pub(crate) fn split_regex(s: &str) -> Result<(String, String), PathError> {
    let b = s.as_bytes();
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'#' => {
                let flags = &s[i + 1..];
                check_flags(flags)?;
                return Ok((s[1..i].to_owned(), flags.to_owned()));
            }
            _ => i += 1,
        }
    }
    Err(PathError::UnterminatedRegex)
}

/// Accepts ECMAScript flags `[igmsu]*`, each at most once.
pub(crate) fn check_flags(flags: &str) -> Result<(), PathError> {
    let mut seen = 0u8;
    for c in flags.bytes() {
        let bit = match c {
            b'i' => 1,
            b'g' => 2,
            b'm' => 4,
            b's' => 8,
            b'u' => 16,
            _ => return Err(PathError::BadFlags(flags.to_owned())),
        };
        if seen & bit != 0 {
            return Err(PathError::BadFlags(flags.to_owned()));
        }
        seen |= bit;
    }
    Ok(())
}

/// Decomposes target text. A leading `#` makes a regex target, `scheme://` a URL,
/// anything else a local path.
pub fn parse_path(raw: &str) -> Result<ParsedPath, PathError> {
    if raw.is_empty() {
        return Err(PathError::Empty);
    }
    if raw.starts_with('#') {
        let (pattern, flags) = split_regex(raw)?;
        return Ok(ParsedPath::Regex {
            raw: raw.to_owned(),
            pattern,
            flags,
        });
    }
    let Some(slen) = scheme_len(raw.as_bytes()) else {
        return Ok(ParsedPath::Local {
            raw: raw.to_owned(),
        });
    };
    let scheme = raw[..slen].to_ascii_lowercase();
    let rest = &raw[slen + 3..];
    // Fragment first (everything after the first '#'), then the query.
    let (before_frag, fragment) = match rest.find('#') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let (before_query, query) = match before_frag.find('?') {
        Some(i) => (&before_frag[..i], Some(&before_frag[i + 1..])),
        None => (before_frag, None),
    };
    let fragment = fragment.filter(|f| !f.is_empty()).map(str::to_owned);
    let search = query.map(parse_query).unwrap_or_default();

    if !AUTHORITY_SCHEMES.contains(&scheme.as_str()) {
        return Ok(ParsedPath::Url {
            raw: raw.to_owned(),
            scheme,
            username: None,
            password: None,
            hostname: None,
            port: None,
            pathname: before_query.to_owned(),
            search,
            fragment,
        });
    }

    let (authority, path) = match before_query.find('/') {
        Some(i) => (&before_query[..i], &before_query[i..]),
        None => (before_query, ""),
    };
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(u) => match u.find(':') {
            Some(i) => (Some(&u[..i]), Some(&u[i + 1..])),
            None => (Some(u), None),
        },
    };
    let (host, port_text) = split_host_port(hostport);
    if host.is_empty() && scheme != "file" {
        return Err(PathError::InvalidUri(format!("missing host in '{raw}'")));
    }
    if host
        .bytes()
        .any(|c| matches!(c, b' ' | b'<' | b'>' | b'\\' | b'^' | b'|' | b'%'))
    {
        return Err(PathError::InvalidUri(format!("invalid host '{host}'")));
    }
    let port = match port_text {
        None | Some("") => None,
        Some(p) => {
            let n: u16 = p
                .parse()
                .ok()
                .filter(|_| p.bytes().all(|c| c.is_ascii_digit()))
                .ok_or_else(|| PathError::InvalidUri(format!("invalid port '{p}'")))?;
            (Some(n) != default_port(&scheme)).then_some(n)
        }
    };
    let pathname = if path.is_empty() && scheme != "file" {
        "/".to_owned()
    } else {
        path.to_owned()
    };
    let pathname = if pathname.is_empty() {
        "/".to_owned()
    } else {
        pathname
    };
    Ok(ParsedPath::Url {
        raw: raw.to_owned(),
        scheme,
        username: username.filter(|s| !s.is_empty()).map(str::to_owned),
        password: password.filter(|s| !s.is_empty()).map(str::to_owned),
        hostname: (!host.is_empty()).then(|| host.to_ascii_lowercase()),
        port,
        pathname,
        search,
        fragment,
    })
}

fn split_host_port(hostport: &str) -> (&str, Option<&str>) {
    if hostport.starts_with('[') {
        // IPv6 literal: the port follows the closing bracket.
        return match hostport.find(']') {
            Some(i) => {
                let rest = &hostport[i + 1..];
                (&hostport[..=i], rest.strip_prefix(':'))
            }
            None => (hostport, None),
        };
    }
    match hostport.rfind(':') {
        Some(i) => (&hostport[..i], Some(&hostport[i + 1..])),
        None => (hostport, None),
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        "ftp" => Some(21),
        _ => None,
    }
}

/// Parses `a=1&b=2&a=3` the way `URLSearchParams` does (`+` is a space, `%XX` decoded,
/// empty pairs skipped, repeated keys collected in order).
fn parse_query(q: &str) -> BTreeMap<String, QueryValue> {
    let mut out: BTreeMap<String, QueryValue> = BTreeMap::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = match pair.find('=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, ""),
        };
        let (k, v) = (form_decode(k), form_decode(v));
        match out.get_mut(&k) {
            None => {
                out.insert(k, QueryValue::One(v));
            }
            Some(QueryValue::One(first)) => {
                let first = std::mem::take(first);
                out.insert(k, QueryValue::Many(vec![first, v]));
            }
            Some(QueryValue::Many(all)) => all.push(v),
        }
    }
    out
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decodes `%28` → `(` and `%29` → `)` and nothing else: a literal `)` must
/// be percent-encoded inside `(target)`, and consumers address the decoded name.
pub fn decode_path_parens(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let code = tail.get(1..3);
        match code {
            Some("28") => out.push('('),
            Some("29") => out.push(')'),
            _ => {
                out.push('%');
                rest = &tail[1..];
                continue;
            }
        }
        rest = &tail[3..];
    }
    out.push_str(rest);
    out
}

/// Encodes `)` as `%29` so a path can be rendered inside `(target)`.
pub fn encode_path_parens(s: &str) -> String {
    s.replace(')', "%29")
}
