//! Compiled globs: pathname scopes for FIND/READ, and the line-anchored glob dialect of
//! matcher bodies (PLURNK.md §1.3, §1.4).
//!
//! Pathname syntax: `*` any run of characters except `/`; `**` any run including `/`
//! (`a/**/b` also matches `a/b`); `?` one character except `/`; `[abc]`, `[a-z]`, `[!x]`
//! (or `[^x]`) one character of a class (a negated class never matches `/`); `{a,b}`
//! alternation, nestable; `\x` a literal `x`. A trailing `/` means "everything under this
//! folder" (`docs/` matches `docs/a` and `docs/a/b`, not `docs`). A pattern with none of
//! these is a literal and matches exactly itself. An unclosed `[` or `{` is literal.
//!
//! The line dialect ([`Glob::line`]) is plurnk's content glob (`plurnk-mimetypes`
//! `query.ts`: picomatch with `bash: true`, so a single `*` crosses `/` too): the pattern
//! must match a whole line, so `TODO*` is "starts with" and `*TODO*` is "contains". Plain
//! text without glob syntax is a substring search and never gets here (see
//! [`has_glob_syntax`]).
//!
//! **Invariants:** a [`Glob`] is compiled once into a `regex` automaton, so matching is
//! linear in the path and never backtracks; compilation is bounded (nesting depth,
//! automaton size) and refuses hostile patterns with 400 instead of hanging or panicking.
//!
//! **API boundary:** paths are compared verbatim (case-sensitive, no normalisation of a
//! leading `/` or `./`); the caller passes pathnames in the form its scheme stores them.

use regex::{Regex, RegexBuilder};

use super::ContentError;

/// Deepest `{…}` nesting accepted.
const MAX_BRACE_DEPTH: usize = 32;
/// Compiled automaton bound (bytes); larger patterns are refused with 400.
const SIZE_LIMIT: usize = 1 << 20;

/// A compiled glob, matched against many paths (or lines).
#[derive(Debug, Clone)]
pub struct Glob {
    source: String,
    regex: Regex,
    literal: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Path,
    Line,
}

impl Glob {
    /// Compiles a pathname glob. 400 when the pattern cannot be compiled within bounds.
    pub fn new(pattern: &str) -> Result<Glob, ContentError> {
        Glob::compile(pattern, Mode::Path)
    }

    /// Compiles a whole-line content glob (`*` and `?` cross `/`; no folder rule).
    pub fn line(pattern: &str) -> Result<Glob, ContentError> {
        Glob::compile(pattern, Mode::Line)
    }

    fn compile(pattern: &str, mode: Mode) -> Result<Glob, ContentError> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut body = String::with_capacity(pattern.len() * 2);
        translate(&chars, mode, &mut body, 0)?;
        if mode == Mode::Path && pattern.ends_with('/') && !pattern.ends_with("\\/") {
            body.push_str(".*");
        }
        let regex = RegexBuilder::new(&format!("^(?:{body})$"))
            .dot_matches_new_line(true)
            .size_limit(SIZE_LIMIT)
            .dfa_size_limit(SIZE_LIMIT)
            .build()
            .map_err(|e| ContentError::bad(format!("glob {pattern:?} does not compile: {e}")))?;
        Ok(Glob {
            source: pattern.to_owned(),
            regex,
            literal: !(has_glob_syntax(pattern)
                || pattern.contains('\\')
                || (mode == Mode::Path && pattern.ends_with('/'))),
        })
    }

    /// True when `path` (or line) matches the whole pattern.
    pub fn matches(&self, path: &str) -> bool {
        self.regex.is_match(path)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True when the pattern has no glob syntax and no folder slash: it names exactly one
    /// path, so a scheme can look it up instead of scanning.
    pub fn is_literal(&self) -> bool {
        self.literal
    }
}

/// True when `s` contains glob syntax (`*`, `?`, `[`, `{`); plain text is a literal.
pub fn has_glob_syntax(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

/// Appends the regex for `chars` to `out`.
fn translate(
    chars: &[char],
    mode: Mode,
    out: &mut String,
    depth: usize,
) -> Result<(), ContentError> {
    if depth > MAX_BRACE_DEPTH {
        return Err(ContentError::bad(format!(
            "glob alternation nests deeper than {MAX_BRACE_DEPTH}"
        )));
    }
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                let lit = chars.get(i + 1).copied().unwrap_or('\\');
                push_literal(out, lit);
                i += 2;
            }
            '*' => {
                let mut j = i;
                while chars.get(j) == Some(&'*') {
                    j += 1;
                }
                let globstar = j - i >= 2;
                if mode == Mode::Line || globstar {
                    let at_segment_start = i == 0 || chars[i - 1] == '/';
                    if mode == Mode::Path && at_segment_start && chars.get(j) == Some(&'/') {
                        out.push_str("(?:.*/)?");
                        j += 1;
                    } else {
                        out.push_str(".*");
                    }
                } else {
                    out.push_str("[^/]*");
                }
                i = j;
            }
            '?' => {
                out.push_str(if mode == Mode::Path { "[^/]" } else { "." });
                i += 1;
            }
            '[' => match class_end(chars, i) {
                Some(end) => {
                    push_class(out, &chars[i + 1..end], mode)?;
                    i = end + 1;
                }
                None => {
                    push_literal(out, '[');
                    i += 1;
                }
            },
            '{' => match brace_alternatives(chars, i) {
                Some((alts, end)) => {
                    out.push_str("(?:");
                    for (k, (a, b)) in alts.iter().enumerate() {
                        if k > 0 {
                            out.push('|');
                        }
                        translate(&chars[*a..*b], mode, out, depth + 1)?;
                    }
                    out.push(')');
                    i = end + 1;
                }
                None => {
                    push_literal(out, '{');
                    i += 1;
                }
            },
            _ => {
                push_literal(out, c);
                i += 1;
            }
        }
    }
    Ok(())
}

fn push_literal(out: &mut String, c: char) {
    let mut buf = [0u8; 4];
    out.push_str(&regex::escape(c.encode_utf8(&mut buf)));
}

/// Index of the `]` closing the class opened at `open`; a `]` right after `[` or `[!` is a
/// member, not the close.
fn class_end(chars: &[char], open: usize) -> Option<usize> {
    let mut j = open + 1;
    if matches!(chars.get(j), Some('!' | '^')) {
        j += 1;
    }
    if chars.get(j) == Some(&']') {
        j += 1;
    }
    while j < chars.len() {
        match chars[j] {
            '\\' => j += 2,
            ']' => return Some(j),
            _ => j += 1,
        }
    }
    None
}

fn push_class(out: &mut String, inner: &[char], mode: Mode) -> Result<(), ContentError> {
    let (negated, members) = match inner.first() {
        Some('!' | '^') => (true, &inner[1..]),
        _ => (false, inner),
    };
    out.push('[');
    if negated {
        out.push('^');
        if mode == Mode::Path {
            out.push('/');
        }
    }
    let mut k = 0;
    while k < members.len() {
        let mut c = members[k];
        if c == '\\' {
            k += 1;
            c = members.get(k).copied().unwrap_or('\\');
        }
        if members.get(k + 1) == Some(&'-') && k + 2 < members.len() {
            let mut hi = members[k + 2];
            let mut step = 3;
            if hi == '\\' {
                hi = members.get(k + 3).copied().unwrap_or('\\');
                step = 4;
            }
            if hi < c {
                return Err(ContentError::bad(format!(
                    "glob class range {c}-{hi} is reversed"
                )));
            }
            push_class_char(out, c);
            out.push('-');
            push_class_char(out, hi);
            k += step;
        } else {
            push_class_char(out, c);
            k += 1;
        }
    }
    out.push(']');
    Ok(())
}

fn push_class_char(out: &mut String, c: char) {
    if matches!(c, '\\' | '[' | ']' | '^' | '-' | '&' | '~') {
        out.push('\\');
    }
    out.push(c);
}

/// For a `{` at `open`: the alternatives (as index ranges) and the index of the matching
/// `}`, when the braces close and hold at least one top-level comma.
fn brace_alternatives(chars: &[char], open: usize) -> Option<(Vec<(usize, usize)>, usize)> {
    let mut depth = 0usize;
    let mut alts = Vec::new();
    let mut start = open + 1;
    let mut j = open;
    while j < chars.len() {
        match chars[j] {
            '\\' => j += 1,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    if alts.is_empty() {
                        return None;
                    }
                    alts.push((start, j));
                    return Some((alts, j));
                }
            }
            ',' if depth == 1 => {
                alts.push((start, j));
                start = j + 1;
            }
            _ => {}
        }
        j += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn glob(p: &str) -> Glob {
        Glob::new(p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    #[test]
    fn pathname_glob_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("notes/todo.md", "notes/todo.md", true),
            ("notes/todo.md", "notes/todo.mdx", false),
            ("*.md", "a.md", true),
            ("*.md", "dir/a.md", false),
            ("**/*.md", "a.md", true),
            ("**/*.md", "dir/sub/a.md", true),
            ("**", "any/thing/at/all", true),
            ("src/**/lib.rs", "src/lib.rs", true),
            ("src/**/lib.rs", "src/a/b/lib.rs", true),
            ("src/**/lib.rs", "srcx/lib.rs", false),
            ("a**b", "a/x/b", true),
            ("?.md", "a.md", true),
            ("?.md", "ab.md", false),
            ("?", "/", false),
            ("[abc].md", "b.md", true),
            ("[abc].md", "d.md", false),
            ("[a-c]x", "bx", true),
            ("[!a]x", "bx", true),
            ("[!a]x", "ax", false),
            ("[!a]x", "/x", false),
            ("[^a]x", "bx", true),
            ("[]]", "]", true),
            ("*.{md,json}", "a.json", true),
            ("*.{md,json}", "a.txt", false),
            ("{a,b{c,d}}", "bd", true),
            ("{a,b{c,d}}", "b", false),
            ("docs/", "docs/a", true),
            ("docs/", "docs/a/b.md", true),
            ("docs/", "docs", false),
            ("docs/", "docsx/a", false),
            ("a[b", "a[b", true),
            ("a{b", "a{b", true),
            ("{solo}", "{solo}", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "axb", false),
            ("a.b", "axb", false),
            ("(x)+", "(x)+", true),
            ("", "", true),
            ("", "a", false),
            ("héllo/*", "héllo/wörld", true),
        ];
        for (p, path, want) in cases {
            assert_eq!(glob(p).matches(path), *want, "{p} vs {path}");
        }
    }

    #[test]
    fn literal_patterns_are_reported() {
        assert!(glob("notes/a.md").is_literal());
        assert!(!glob("notes/*.md").is_literal());
        assert!(!glob("notes/").is_literal());
        assert_eq!(glob("x*").as_str(), "x*");
    }

    #[test]
    fn line_glob_is_whole_line_and_crosses_slashes() {
        let todo = Glob::line("TODO*").unwrap_or_else(|e| panic!("{e}"));
        assert!(todo.matches("TODO: fix a/b"));
        assert!(!todo.matches("  TODO"));
        let contains = Glob::line("*TODO*").unwrap_or_else(|e| panic!("{e}"));
        assert!(contains.matches("// a/b TODO c"));
        assert!(!contains.matches("todo"));
        assert!(Glob::line("a?c").map(|g| g.matches("a/c")).unwrap_or(false));
    }

    #[test]
    fn hostile_patterns_are_refused_not_hung() {
        let deep = format!("{}a{}", "{a,".repeat(200), "}".repeat(200));
        assert_eq!(
            Glob::new(&deep).map(|_| ()).map_err(|e| e.status()),
            Err(400)
        );
        assert_eq!(
            Glob::new("[z-a]").map(|_| ()).map_err(|e| e.status()),
            Err(400)
        );
        // huge repetition stays within the size limit or is refused; either way no panic
        let big = "{a,b}".repeat(4000);
        let _ = Glob::new(&big);
    }

    proptest! {
        #[test]
        fn glob_never_panics(p in "[a-c*?/\\[\\]{},!^\\\\.-]{0,24}", path in "[a-c/.]{0,16}") {
            if let Ok(g) = Glob::new(&p) {
                let _ = g.matches(&path);
            }
            if let Ok(g) = Glob::line(&p) {
                let _ = g.matches(&path);
            }
        }

        #[test]
        fn literal_path_matches_itself(p in "[a-z0-9_./-]{1,20}") {
            prop_assume!(!p.ends_with('/'));
            prop_assert!(glob(&p).matches(&p));
        }
    }
}
