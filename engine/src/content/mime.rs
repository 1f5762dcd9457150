//! Mimetypes from path extensions, and the binary check (PLURNK.md §2.1, §2.3).
//!
//! Rules (ported from plurnk `src/core/path-mimetype.ts` and its tests @1f5c19ff):
//! the extension comes from the *last* path segment (`a.json/b` has none); a leading dot is
//! a file name, not an extension (`.env`); a known extension wins over the scheme default;
//! an unknown or missing one falls back to the scheme default, verbatim; `text/plain`
//! derived from an extension is normalised to `text/markdown` (the text primitive), while a
//! scheme that *declares* `text/plain` (exec stdout/stderr) keeps it.
//!
//! **Invariants:** total functions; extension matching is ASCII case-insensitive.
//!
//! **API boundary:** the table is deliberately small (the formats entries hold and common
//! source files); an unknown extension is not an error.

/// The text primitive every text-like mimetype normalises to.
pub const TEXT_MARKDOWN: &str = "text/markdown";
/// The JSON mimetype (`.json` entries edit structurally).
pub const APPLICATION_JSON: &str = "application/json";

/// The mimetype a path's extension names, normalised; `None` when the last segment has no
/// extension or an unknown one.
pub fn mimetype_for_path(path: &str) -> Option<&'static str> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let dot = name.rfind('.')?;
    if dot == 0 || dot + 1 == name.len() {
        return None;
    }
    let ext = name[dot + 1..].to_ascii_lowercase();
    let mimetype = match ext.as_str() {
        "json" => APPLICATION_JSON,
        "md" | "markdown" | "txt" | "text" => "text/plain",
        "yaml" | "yml" => "application/yaml",
        "toml" => "application/toml",
        "xml" => "application/xml",
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "csv" => "text/csv",
        "svg" => "image/svg+xml",
        "js" | "mjs" | "cjs" => "text/javascript",
        "ts" | "mts" | "cts" => "text/typescript",
        "tsx" => "text/tsx",
        "jsx" => "text/jsx",
        "rs" => "text/x-rust",
        "py" => "text/x-python",
        "go" => "text/x-go",
        "c" | "h" => "text/x-c",
        "cc" | "cpp" | "cxx" | "hpp" | "hh" => "text/x-c++",
        "java" => "text/x-java",
        "kt" | "kts" => "text/x-kotlin",
        "rb" => "text/x-ruby",
        "php" => "text/x-php",
        "swift" => "text/x-swift",
        "sh" | "bash" => "text/x-shellscript",
        "sql" => "text/x-sql",
        "lua" => "text/x-lua",
        _ => return None,
    };
    Some(normalize_mimetype(mimetype))
}

/// The entry mimetype for `path` under a scheme whose default is `scheme_default`: the
/// extension's mimetype when known, else the default unchanged.
pub fn resolve_mimetype<'a>(path: &str, scheme_default: &'a str) -> &'a str {
    mimetype_for_path(path).unwrap_or(scheme_default)
}

/// `text/plain` → `text/markdown` (the text primitive); anything else unchanged.
pub fn normalize_mimetype(mimetype: &str) -> &str {
    if mimetype.eq_ignore_ascii_case("text/plain") {
        TEXT_MARKDOWN
    } else {
        mimetype
    }
}

/// True for `application/json` and `+json` suffix types (`application/ld+json`),
/// ignoring parameters such as `; charset=utf-8`.
pub fn is_json_mimetype(mimetype: &str) -> bool {
    let essence = mimetype.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case(APPLICATION_JSON)
        || essence.to_ascii_lowercase().ends_with("+json")
}

/// Binary content: any NUL byte (plurnk `mimetype-binary.ts`; READ/EDIT on it → 415).
pub fn is_binary(bytes: &[u8]) -> bool {
    memchr::memchr(0, bytes).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_table() {
        let cases = [
            ("users.json", Some(APPLICATION_JSON)),
            ("a/b/users.JSON", Some(APPLICATION_JSON)),
            ("README.md", Some(TEXT_MARKDOWN)),
            ("notes.txt", Some(TEXT_MARKDOWN)),
            ("config.yaml", Some("application/yaml")),
            ("src/lib.rs", Some("text/x-rust")),
            ("main.py", Some("text/x-python")),
            ("users", None),
            (".env", None),
            ("a.json/b", None),
            ("data.xyz", None),
            ("trailing.", None),
            ("", None),
        ];
        for (path, want) in cases {
            assert_eq!(mimetype_for_path(path), want, "{path}");
        }
    }

    #[test]
    fn scheme_default_applies_verbatim_when_no_extension() {
        assert_eq!(resolve_mimetype("users", TEXT_MARKDOWN), TEXT_MARKDOWN);
        assert_eq!(resolve_mimetype("stdout", "text/plain"), "text/plain");
        assert_eq!(
            resolve_mimetype("users.json", TEXT_MARKDOWN),
            APPLICATION_JSON
        );
        assert_eq!(resolve_mimetype("notes.txt", "text/plain"), TEXT_MARKDOWN);
    }

    #[test]
    fn json_mimetypes() {
        assert!(is_json_mimetype("application/json"));
        assert!(is_json_mimetype("application/json; charset=utf-8"));
        assert!(is_json_mimetype("application/ld+json"));
        assert!(!is_json_mimetype("text/markdown"));
    }

    #[test]
    fn nul_byte_means_binary() {
        assert!(is_binary(b"ab\0c"));
        assert!(!is_binary("héllo\n".as_bytes()));
        assert!(!is_binary(b""));
    }
}
