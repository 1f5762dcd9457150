//! Matcher-body dialect detection for FIND, READ, OPEN and FOLD (PLURNK.md §1.3).
//!
//! The dialect is chosen by the body's first characters: `//` XPath, `#…#flags` regex,
//! `$` JSONPath, `~` semantic, `@` code graph, else glob. A body that fails a light
//! structural check for its indicated dialect **falls back to glob** — never an error.
//!
//! **Invariant:** detection is a single pass over the body with no backtracking, so it is
//! linear in the body and cannot fail.
//!
//! **API boundary:** validation here is structural only (balanced brackets and quotes,
//! regex delimiters and flags); executing a matcher is the scheme's job.

use super::ast::{Dialect, MatcherBody};
use super::target::split_regex;

/// Classifies a matcher body, falling back to glob when the indicated dialect's
/// structure is invalid.
pub fn classify(raw: &str) -> MatcherBody {
    let glob = || MatcherBody {
        dialect: Dialect::Glob,
        raw: raw.to_owned(),
        pattern: None,
        flags: None,
    };
    let simple = |dialect| MatcherBody {
        dialect,
        raw: raw.to_owned(),
        pattern: None,
        flags: None,
    };
    let b = raw.as_bytes();
    match b.first() {
        Some(b'/') if b.get(1) == Some(&b'/') => {
            if valid_xpath(raw) {
                simple(Dialect::Xpath)
            } else {
                glob()
            }
        }
        Some(b'#') => match split_regex(raw) {
            Ok((pattern, flags)) if !pattern.is_empty() && balanced_regex(&pattern) => {
                MatcherBody {
                    dialect: Dialect::Regex,
                    raw: raw.to_owned(),
                    pattern: Some(pattern),
                    flags: Some(flags),
                }
            }
            _ => glob(),
        },
        Some(b'$') => {
            if valid_jsonpath(raw) {
                simple(Dialect::Jsonpath)
            } else {
                glob()
            }
        }
        Some(b'~') => {
            if raw[1..].trim().is_empty() {
                glob()
            } else {
                simple(Dialect::Semantic)
            }
        }
        Some(b'@') => {
            if valid_graph(raw) {
                simple(Dialect::Graph)
            } else {
                glob()
            }
        }
        _ => glob(),
    }
}

/// Brackets and quotes balance, no newline, and the expression doesn't end on an axis
/// separator.
fn valid_xpath(raw: &str) -> bool {
    let body = raw.trim_end();
    if body.len() <= 2 || body.ends_with('/') || body.contains('\n') {
        return false;
    }
    balanced(body, true)
}

/// `$` alone, or `$` followed by `.`, `..` or `[` with balanced brackets and quotes.
fn valid_jsonpath(raw: &str) -> bool {
    let body = raw.trim_end();
    if body.contains('\n') {
        return false;
    }
    let rest = &body[1..];
    if rest.is_empty() {
        return true;
    }
    if !(rest.starts_with('.') || rest.starts_with('[')) || rest.ends_with('.') {
        return false;
    }
    balanced(body, true)
}

/// `@sym`, `@<sym`, `@>sym` with a non-empty single-token symbol.
fn valid_graph(raw: &str) -> bool {
    let rest = raw[1..].trim_end();
    let sym = rest.strip_prefix(['<', '>']).unwrap_or(rest);
    !sym.is_empty() && !sym.contains(char::is_whitespace)
}

/// Regex pattern: `(`/`)` and `[`/`]` balance outside escapes and classes.
fn balanced_regex(pattern: &str) -> bool {
    let b = pattern.as_bytes();
    let (mut depth, mut in_class, mut i) = (0i64, false, 0);
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'[' if !in_class => in_class = true,
            b']' if in_class => in_class = false,
            b'(' if !in_class => depth += 1,
            b')' if !in_class => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => {}
        }
        i += 1;
    }
    depth == 0 && !in_class && i == b.len()
}

/// Generic bracket/quote balance for XPath and JSONPath.
fn balanced(s: &str, quotes: bool) -> bool {
    let mut stack: Vec<u8> = Vec::new();
    let mut quote: Option<u8> = None;
    for &c in s.as_bytes() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            b'\'' | b'"' if quotes => quote = Some(c),
            b'(' | b'[' | b'{' => stack.push(c),
            b')' | b']' | b'}' => {
                let want = match c {
                    b')' => b'(',
                    b']' => b'[',
                    _ => b'{',
                };
                if stack.pop() != Some(want) {
                    return false;
                }
            }
            _ => {}
        }
    }
    stack.is_empty() && quote.is_none()
}
