//! # Entry content: line arithmetic, structural JSON edits, globs, matchers, mimetypes
//!
//! Pure functions over the text an entry channel holds, shared by the entry schemes
//! (`known://`, `unknown://`, run scratch, later `file`). Strings in, strings or typed
//! results out: no I/O, no database, no kernel. This is the Rust home of what plurnk keeps
//! in `plurnk-schemes/src/Slicer.ts` (E2: `src/core/line-marker.ts`), `matcher.ts`,
//! `path-mimetype.ts` and `mimetype-binary.ts` (PLURNK.md §1.2–§1.4, §2.1).
//!
//! - [`lines`] — `<L>` over text: [`number_lines`] (READ's `N:\t` prefix),
//!   [`select_lines`] (READ), [`slice_raw`] (COPY/MOVE source slicing), [`apply_edit`]
//!   (the EDIT positional rules table) and [`render_span`] (the edited region with context
//!   for the log row).
//! - [`json`] — `<L>` over `.json` entries, where positions are top-level items:
//!   [`select_items`] and [`apply_json_edit`].
//! - [`glob`] — compiled pathname globs for FIND/READ scopes ([`Glob`]).
//! - [`matcher`] — running a matcher body over one entry's content ([`match_content`]),
//!   returning line spans; [`render_matches`] gives READ's source lines.
//! - [`mime`] — mimetype from a path's extension and the binary (NUL byte) check.
//!
//! [`edit_content`] picks the JSON or the line rules from the channel's mimetype.
//!
//! Every fallible function returns a [`ContentError`] whose [`ContentError::status`] is the
//! HTTP-like status plurnk logs for that failure: 400 bad body, 415 mimetype mismatch, 416
//! out-of-range or meaningless marker, 501 dialect not implemented here.
//!
//! **Invariants:** nothing here panics on any input (every index is checked, recursion is
//! bounded by [`json::MAX_DEPTH`], regexes are size-bounded); every function is a
//! deterministic function of its arguments; line numbers are 1-based and a trailing `\n`
//! terminates the last line rather than starting a new one (`"a\nb\n"` has two lines).
//!
//! **API boundary:** depends only on [`crate::grammar`] (for [`MatcherBody`] and
//! [`Dialect`]) and on `serde_json`/`regex`. Marks arrive as the parser's
//! `LineMarker::marks` slice; what a status means for the log and the loop (strikes, soft
//! statuses) is the engine's business, not this module's.
//!
//! [`MatcherBody`]: crate::grammar::MatcherBody
//! [`Dialect`]: crate::grammar::Dialect

pub mod glob;
pub mod json;
pub mod lines;
pub mod matcher;
pub mod mime;

pub use glob::Glob;
pub use json::{apply_json_edit, select_items};
pub use lines::{
    apply_edit, line_count, number_lines, render_span, select_lines, slice_raw, EditOutcome,
    LineSlice, LineSpan,
};
pub use matcher::{match_content, render_matches, MatchOutcome};
pub use mime::{
    is_binary, is_json_mimetype, mimetype_for_path, normalize_mimetype, resolve_mimetype,
};

/// EDIT dispatch by mimetype: JSON mimetypes edit structurally ([`apply_json_edit`]),
/// everything else by line ([`apply_edit`]). Binary current content (a NUL byte) is 415.
pub fn edit_content(
    mimetype: &str,
    current: Option<&str>,
    marks: Option<&[f64]>,
    body: &str,
) -> Result<EditOutcome, ContentError> {
    if current.is_some_and(|c| is_binary(c.as_bytes())) {
        return Err(ContentError::UnsupportedMedia(
            "binary content cannot be edited".into(),
        ));
    }
    if is_json_mimetype(mimetype) {
        apply_json_edit(current, marks, body)
    } else {
        apply_edit(current, marks, body)
    }
}

/// Why a content operation failed, carrying the status plurnk logs for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    /// 400: the body (EDIT content, matcher expression) is malformed.
    #[error("{0}")]
    BadBody(String),
    /// 415: the operation does not apply to this mimetype (JSONPath over markdown, binary).
    #[error("{0}")]
    UnsupportedMedia(String),
    /// 416: the `<L>` marker is out of range or meaningless here (a decimal on READ).
    #[error("{0}")]
    RangeNotSatisfiable(String),
    /// 501: the dialect or feature is not implemented by this module.
    #[error("{0}")]
    NotImplemented(String),
}

impl ContentError {
    /// The HTTP-like status plurnk logs for this failure.
    pub fn status(&self) -> u16 {
        match self {
            ContentError::BadBody(_) => 400,
            ContentError::UnsupportedMedia(_) => 415,
            ContentError::RangeNotSatisfiable(_) => 416,
            ContentError::NotImplemented(_) => 501,
        }
    }

    pub(crate) fn range(msg: impl Into<String>) -> Self {
        ContentError::RangeNotSatisfiable(msg.into())
    }

    pub(crate) fn bad(msg: impl Into<String>) -> Self {
        ContentError::BadBody(msg.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_content_dispatches_on_mimetype() {
        let json = edit_content("application/json", Some("[1]"), Some(&[-1.0]), "2");
        assert_eq!(json.map(|o| o.content), Ok("[\n  1,\n  2\n]".to_owned()));
        let text = edit_content("text/markdown", Some("[1]"), Some(&[-1.0]), "2");
        assert_eq!(text.map(|o| o.content), Ok("[1]\n2".to_owned()));
        let binary = edit_content("text/markdown", Some("a\0b"), None, "x");
        assert_eq!(binary.map_err(|e| e.status()), Err(415));
    }

    #[test]
    fn each_error_carries_its_status() {
        assert_eq!(ContentError::bad("x").status(), 400);
        assert_eq!(ContentError::UnsupportedMedia("x".into()).status(), 415);
        assert_eq!(ContentError::range("x").status(), 416);
        assert_eq!(ContentError::NotImplemented("x".into()).status(), 501);
    }
}
