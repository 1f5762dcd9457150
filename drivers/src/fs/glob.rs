//! The patterns of a membership overlay (`pick`, `hide`, `view`): small globs over paths
//! relative to the project root.
//!
//! A pattern is matched against whole path components: `*` matches any run of characters
//! within one component, `?` one character, and a component that is exactly `**` matches any
//! number of components (zero included). A pattern also matches everything *under* a path it
//! matches, so `docs` and `docs/` cover the directory, `vendor/*` covers every entry of
//! `vendor` and what lies below. There are no character classes and no basename-anywhere rule:
//! `**/*.log` is how to say "any `.log` file".

/// A compiled pattern: its components.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    parts: Vec<String>,
}

impl Glob {
    /// Parse a pattern (leading `./` and trailing `/` are ignored). `None` for an empty or
    /// blank line, which matches nothing.
    pub fn new(pattern: &str) -> Option<Glob> {
        let parts: Vec<String> = pattern
            .trim()
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(str::to_owned)
            .collect();
        if parts.is_empty() {
            None
        } else {
            Some(Glob { parts })
        }
    }

    /// Parse a newline-separated list of patterns (a scope value).
    pub fn list(value: &str) -> Vec<Glob> {
        value.lines().filter_map(Glob::new).collect()
    }

    /// The components before the first one with a wildcard: the directory (or file) a walk for
    /// this pattern starts from.
    pub fn literal_prefix(&self) -> String {
        self.parts
            .iter()
            .take_while(|p| !p.contains(['*', '?']))
            .cloned()
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Whether `path` (normalized, relative) or one of its ancestors matches.
    pub fn matches(&self, path: &str) -> bool {
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let pat: Vec<&str> = self.parts.iter().map(String::as_str).collect();
        (1..=comps.len()).any(|n| match_parts(&pat, &comps[..n]))
    }
}

/// Whether any pattern of `globs` matches `path`.
pub fn any_match(globs: &[Glob], path: &str) -> bool {
    globs.iter().any(|g| g.matches(path))
}

fn match_parts(pat: &[&str], path: &[&str]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|i| match_parts(rest, &path[i..])),
        Some((p, rest)) => match path.split_first() {
            Some((c, prest)) => {
                match_component(p.as_bytes(), c.as_bytes()) && match_parts(rest, prest)
            }
            None => false,
        },
    }
}

fn match_component(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| match_component(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && match_component(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && match_component(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, path: &str) -> bool {
        Glob::new(p).unwrap().matches(path)
    }

    #[test]
    fn globs_match_components_and_everything_below() {
        assert!(m("docs", "docs/a.md"));
        assert!(m("docs/", "docs/x/y"));
        assert!(m("./docs/a.md", "docs/a.md"));
        assert!(!m("docs", "docsx/a.md"));
        assert!(m("*.md", "a.md"));
        assert!(!m("*.md", "sub/a.md"));
        assert!(m("**/*.md", "sub/deep/a.md"));
        assert!(m("**/*.md", "a.md"));
        assert!(m("src/**/mod.rs", "src/mod.rs"));
        assert!(m("vendor/*", "vendor/lib/x.c"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(Glob::new("  ").is_none());
        assert_eq!(Glob::new("src/*/x").unwrap().literal_prefix(), "src");
        assert_eq!(Glob::list("a\n\n b \n").len(), 2);
    }
}
