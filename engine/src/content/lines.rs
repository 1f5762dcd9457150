//! `<L>` over text entries: numbering for READ, slicing for READ and COPY/MOVE, and the
//! EDIT positional rules (PLURNK.md §1.2, §1.4).
//!
//! Marker algebra (ported from plurnk's E2 `src/core/line-marker.ts` @01df3072, later
//! `plurnk-schemes/src/Slicer.ts`):
//!
//! | marks | meaning |
//! |---|---|
//! | `<N>` | line N (1-based); must exist |
//! | `<N,M>` | lines N..M inclusive; `<0,M>` is an alias for `<1,M>`; `M = -1` means the last line |
//! | `<1,-1>` | everything; valid on empty content too (an empty selection) |
//! | `<0>` / `<-1>` | insertion points before the first / after the last line; they select no lines |
//! | `<N.5>` | EDIT only: insertion point between N and N+1 (any fraction: the floor names the line after which to insert) |
//!
//! Any other negative number, a start past the end, an end past the end, a start after the
//! end, a decimal outside a single EDIT mark, or more than two marks → 416. (Late plurnk
//! clamps an end past the end; E2, which we follow, refuses it.)
//!
//! **Trailing newline rule.** Content is a list of lines plus one flag: whether the last line
//! is terminated by `\n`. `"a\nb\n"` and `"a\nb"` both have two lines. A positional EDIT
//! splits its body the same way (a body's own trailing `\n` is dropped, so `"x\n"` is one
//! line), splices lines, and re-joins them with `\n`, keeping the *original* content's flag
//! (no flag on an empty result). A whole-content replace (no marker, or a missing entry)
//! stores the body verbatim. `\r` is ordinary line content, so CRLF text round-trips
//! byte-for-byte through edits that do not touch those lines.
//!
//! **Invariants:** never panics; every function is linear in its inputs.
//!
//! **API boundary:** marks are the parser's `LineMarker::marks`; `None` means "no marker".

use super::ContentError;

/// An inclusive range of 1-based line (or item) positions. `last == first - 1` is an
/// empty region sitting just before line `first` (a deletion or an empty result).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct LineSpan {
    /// First line, 1-based.
    pub first: usize,
    /// Last line, inclusive.
    pub last: usize,
}

impl LineSpan {
    /// A span over `first..=last`.
    pub fn new(first: usize, last: usize) -> Self {
        LineSpan { first, last }
    }

    /// The empty span sitting just before line `at` (`at >= 1`).
    pub fn empty_at(at: usize) -> Self {
        let at = at.max(1);
        LineSpan {
            first: at,
            last: at - 1,
        }
    }

    /// True when the span covers no line.
    pub fn is_empty(&self) -> bool {
        self.last < self.first
    }

    /// Number of lines covered.
    pub fn len(&self) -> usize {
        (self.last + 1).saturating_sub(self.first)
    }
}

/// Lines selected by READ: the raw text (joined with `\n`, no trailing newline, no `N:\t`
/// prefix) and where it came from. `span` is `None` when the marker was an insertion point
/// (`<0>`, `<-1>`), which selects nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineSlice {
    /// The selected lines.
    pub text: String,
    /// Their 1-based positions in the source.
    pub span: Option<LineSpan>,
}

/// The result of an EDIT on a text (or JSON) entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditOutcome {
    /// The new channel content.
    pub content: String,
    /// 201 created (the entry was missing), 200 updated, 304 unchanged.
    pub status: u16,
    /// The edited region in the new content (lines, 1-based inclusive), for rendering the
    /// log row's "resulting span"; empty for a pure deletion.
    pub span: LineSpan,
}

/// Where a marker points, resolved against a count of positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// An insertion point after position `after` (0 = before the first).
    Insert { after: usize },
    /// Positions `first..=last`; `last = first - 1` only for the whole range of nothing.
    Range { first: usize, last: usize },
}

/// Whether a decimal single mark is an insertion point (EDIT) or meaningless (READ/COPY).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decimals {
    Insert,
    Refuse,
}

/// An integral mark as an `i64`, or `None` for NaN, infinities, fractions and huge values.
fn integral(x: f64) -> Option<i64> {
    if x.is_finite() && x.fract() == 0.0 && x.abs() < 9.0e15 {
        Some(x as i64)
    } else {
        None
    }
}

/// Resolves `marks` against `total` positions (`unit` names them in messages).
pub(crate) fn resolve(
    marks: &[f64],
    total: usize,
    decimals: Decimals,
    unit: &str,
) -> Result<Target, ContentError> {
    let show = |m: f64| crate::grammar::format_mark(m);
    match *marks {
        [x] => {
            if let Some(n) = integral(x) {
                return match n {
                    0 => Ok(Target::Insert { after: 0 }),
                    -1 => Ok(Target::Insert { after: total }),
                    n if n >= 1 && (n as u64) <= total as u64 => Ok(Target::Range {
                        first: n as usize,
                        last: n as usize,
                    }),
                    _ => Err(ContentError::range(out_of_range(unit, &show(x), total))),
                };
            }
            if decimals == Decimals::Refuse || !x.is_finite() {
                return Err(ContentError::range(format!(
                    "{unit} position {} is not a whole number; decimals mean nothing here",
                    show(x)
                )));
            }
            let floor = x.floor();
            if floor < 0.0 || floor > total as f64 {
                return Err(ContentError::range(format!(
                    "insertion point {} is outside 0..{total}",
                    show(x)
                )));
            }
            Ok(Target::Insert {
                after: floor as usize,
            })
        }
        [a, b] => {
            let (Some(a), Some(b)) = (integral(a), integral(b)) else {
                return Err(ContentError::range(format!(
                    "{unit} range {},{} must use whole numbers",
                    show(a),
                    show(b)
                )));
            };
            if total == 0 {
                // `<1,-1>` (and its `<0,-1>` alias) is the whole, possibly empty, content.
                // Ported from plurnk-schemes Slicer `#normalize` (later than E2, which 416'd).
                if (a == 0 || a == 1) && b == -1 {
                    return Ok(Target::Range { first: 1, last: 0 });
                }
                return Err(ContentError::range(format!(
                    "{unit} range {a},{b} cannot select from empty content"
                )));
            }
            let first = if a == 0 { 1 } else { a };
            let last = if b == -1 { total as i64 } else { b };
            let total_i = total as i64;
            if first < 1 || first > total_i {
                return Err(ContentError::range(format!(
                    "range start {a} is outside the available {unit} range 1..{total}"
                )));
            }
            if last < 1 || last > total_i {
                return Err(ContentError::range(format!(
                    "range end {b} is outside the available {unit} range 1..{total}"
                )));
            }
            if first > last {
                return Err(ContentError::range(format!(
                    "range start {a} is after its end {b}"
                )));
            }
            Ok(Target::Range {
                first: first as usize,
                last: last as usize,
            })
        }
        _ => Err(ContentError::range(format!(
            "a {unit} marker takes one position or a two-position range; got {} marks",
            marks.len()
        ))),
    }
}

fn out_of_range(unit: &str, shown: &str, total: usize) -> String {
    if total == 0 {
        format!("{unit} {shown} cannot select from empty content")
    } else {
        format!("{unit} {shown} is outside the available {unit} range 1..{total}")
    }
}

/// Splits content into lines and reports whether the last one ends in `\n`.
/// `""` has no lines; `"\n"` has one empty line.
fn split(content: &str) -> (Vec<&str>, bool) {
    if content.is_empty() {
        return (Vec::new(), false);
    }
    let trailing = content.ends_with('\n');
    let body = if trailing {
        &content[..content.len() - 1]
    } else {
        content
    };
    (body.split('\n').collect(), trailing)
}

/// Number of lines in `content` (a trailing `\n` terminates, it does not start a line).
pub fn line_count(content: &str) -> usize {
    if content.is_empty() {
        return 0;
    }
    let newlines = memchr::memchr_iter(b'\n', content.as_bytes()).count();
    if content.ends_with('\n') {
        newlines
    } else {
        newlines + 1
    }
}

/// Prefixes every line with its number and a tab (`N:\t`), counting from `first_line`;
/// READ's output form. Lines are joined with `\n`, no trailing newline; `""` stays `""`.
pub fn number_lines(content: &str, first_line: usize) -> String {
    let (lines, _) = split(content);
    let mut out = String::with_capacity(content.len() + lines.len() * 6);
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&(first_line + i).to_string());
        out.push_str(":\t");
        out.push_str(line);
    }
    out
}

/// Selects lines for READ. `None` selects everything. Insertion points (`<0>`, `<-1>`)
/// select nothing (200, empty text); decimals, other negatives and out-of-range positions
/// are 416.
pub fn select_lines(content: &str, marks: Option<&[f64]>) -> Result<LineSlice, ContentError> {
    let (lines, _) = split(content);
    let target = match marks {
        None => Target::Range {
            first: 1,
            last: lines.len(),
        },
        Some(m) => resolve(m, lines.len(), Decimals::Refuse, "line")?,
    };
    Ok(match target {
        Target::Insert { .. } => LineSlice {
            text: String::new(),
            span: None,
        },
        Target::Range { first, last } => LineSlice {
            text: lines
                .get(first.saturating_sub(1)..last)
                .unwrap_or_default()
                .join("\n"),
            span: Some(LineSpan::new(first, last)),
        },
    })
}

/// Slices source lines for COPY/MOVE: the selected lines verbatim, each terminated by `\n`
/// (nothing for an empty selection), no `N:\t` prefix. `None` copies the content unchanged.
/// Same marker rules and 416s as [`select_lines`].
pub fn slice_raw(content: &str, marks: Option<&[f64]>) -> Result<String, ContentError> {
    let Some(marks) = marks else {
        return Ok(content.to_owned());
    };
    let slice = select_lines(content, Some(marks))?;
    let mut text = slice.text;
    if slice.span.is_some_and(|s| !s.is_empty()) {
        text.push('\n');
    }
    Ok(text)
}

/// Applies an EDIT to a text entry (PLURNK.md §1.4, the EDIT positional rules table):
///
/// - missing entry (`current == None`): the body becomes the content, any marker is
///   ignored → 201;
/// - no marker: the body replaces the whole content (an empty body clears it);
/// - `<N>` / `<N,M>`: the body's lines replace those lines (an empty body deletes them);
/// - `<0>` / `<-1>`: prepend / append the body's lines;
/// - `<N.5>`: insert the body's lines between N and N+1;
/// - `<1,-1>` with an empty body clears.
///
/// Status is 200, or 304 when the result equals the current content. See the module doc
/// for the trailing-newline rule.
pub fn apply_edit(
    current: Option<&str>,
    marks: Option<&[f64]>,
    body: &str,
) -> Result<EditOutcome, ContentError> {
    let Some(current) = current else {
        return Ok(EditOutcome {
            content: body.to_owned(),
            status: 201,
            span: LineSpan::new(1, line_count(body)),
        });
    };
    let Some(marks) = marks else {
        return Ok(finish(
            current,
            body.to_owned(),
            LineSpan::new(1, line_count(body)),
        ));
    };
    let (lines, trailing) = split(current);
    let (body_lines, _) = split(body);
    let (before, after) = match resolve(marks, lines.len(), Decimals::Insert, "line")? {
        Target::Insert { after } => (after, after),
        Target::Range { first, last } => (first - 1, last),
    };
    let mut out: Vec<&str> = Vec::with_capacity(lines.len() + body_lines.len());
    out.extend_from_slice(lines.get(..before).unwrap_or_default());
    out.extend_from_slice(&body_lines);
    out.extend_from_slice(lines.get(after..).unwrap_or_default());
    let mut content = out.join("\n");
    if trailing && !out.is_empty() {
        content.push('\n');
    }
    let span = LineSpan::new(before + 1, before + body_lines.len());
    Ok(finish(current, content, span))
}

fn finish(current: &str, content: String, span: LineSpan) -> EditOutcome {
    let status = if content == current { 304 } else { 200 };
    EditOutcome {
        content,
        status,
        span,
    }
}

/// Renders `span` of `content` with `context` lines either side, numbered `N:\t` — the
/// "resulting span (edited region + context)" of an EDIT log row (plurnk
/// `src/content/edited-span.ts` uses a context of 2). An empty span renders the context
/// around the point where lines were removed; empty content renders `""`.
pub fn render_span(content: &str, span: LineSpan, context: usize) -> String {
    let (lines, _) = split(content);
    if lines.is_empty() {
        return String::new();
    }
    let total = lines.len();
    let (start, end) = if span.is_empty() {
        // the removal point sits between lines `first - 1` and `first`
        let at = span.first.clamp(1, total + 1);
        (
            at.saturating_sub(context).max(1),
            (at - 1 + context).clamp(1, total),
        )
    } else {
        let lo = span.first.clamp(1, total);
        let hi = span.last.clamp(lo, total);
        (lo.saturating_sub(context).max(1), (hi + context).min(total))
    };
    let (start, end) = (start.min(end), start.max(end));
    let text = lines.get(start - 1..end).unwrap_or_default().join("\n");
    number_lines(&text, start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TEXT: &str = "alpha\nbeta\ngamma\ndelta\n";

    fn edit(current: Option<&str>, marks: Option<&[f64]>, body: &str) -> EditOutcome {
        match apply_edit(current, marks, body) {
            Ok(o) => o,
            Err(e) => panic!("edit failed: {e}"),
        }
    }

    #[test]
    fn line_count_treats_trailing_newline_as_terminator() {
        assert_eq!(line_count(""), 0);
        assert_eq!(line_count("a"), 1);
        assert_eq!(line_count("a\n"), 1);
        assert_eq!(line_count("a\nb"), 2);
        assert_eq!(line_count("\n"), 1);
        assert_eq!(line_count(TEXT), 4);
    }

    #[test]
    fn number_lines_prefixes_from_first_line() {
        assert_eq!(number_lines("a\nb\n", 1), "1:\ta\n2:\tb");
        assert_eq!(number_lines("x", 7), "7:\tx");
        assert_eq!(number_lines("", 1), "");
        assert_eq!(number_lines("\n", 1), "1:\t");
    }

    #[test]
    fn select_lines_table() {
        type Case<'a> = (&'a [f64], &'a str, Option<(usize, usize)>);
        let cases: &[Case<'_>] = &[
            (&[2.0], "beta", Some((2, 2))),
            (&[2.0, 3.0], "beta\ngamma", Some((2, 3))),
            (&[1.0, -1.0], "alpha\nbeta\ngamma\ndelta", Some((1, 4))),
            (&[0.0, 2.0], "alpha\nbeta", Some((1, 2))),
            (&[3.0, -1.0], "gamma\ndelta", Some((3, 4))),
            (&[0.0], "", None),
            (&[-1.0], "", None),
        ];
        for (marks, text, span) in cases {
            let s = select_lines(TEXT, Some(marks)).unwrap_or_else(|e| panic!("{marks:?}: {e}"));
            assert_eq!(s.text, *text, "{marks:?}");
            assert_eq!(s.span, span.map(|(a, b)| LineSpan::new(a, b)), "{marks:?}");
        }
    }

    #[test]
    fn select_lines_without_marker_is_everything() {
        let s = select_lines(TEXT, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.text, "alpha\nbeta\ngamma\ndelta");
        assert_eq!(s.span, Some(LineSpan::new(1, 4)));
    }

    #[test]
    fn select_lines_refuses_out_of_range_and_decimals_with_416() {
        let bad: &[&[f64]] = &[
            &[5.0],
            &[-2.0],
            &[2.5],
            &[3.0, 2.0],
            &[1.0, 5.0],
            &[5.0, -1.0],
            &[1.5, 2.0],
            &[1.0, 2.0, 3.0],
            &[],
            &[f64::NAN],
            &[f64::INFINITY],
        ];
        for marks in bad {
            let e = select_lines(TEXT, Some(marks)).err();
            assert_eq!(e.map(|e| e.status()), Some(416), "{marks:?}");
        }
    }

    #[test]
    fn whole_range_on_empty_content_is_an_empty_selection() {
        let s = select_lines("", Some(&[1.0, -1.0])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.text, "");
        assert_eq!(
            select_lines("", Some(&[1.0])).map_err(|e| e.status()),
            Err(416)
        );
    }

    #[test]
    fn slice_raw_terminates_each_line() {
        assert_eq!(
            slice_raw(TEXT, Some(&[2.0, 3.0])),
            Ok("beta\ngamma\n".into())
        );
        assert_eq!(slice_raw("a\nb", Some(&[2.0])), Ok("b\n".into()));
        assert_eq!(slice_raw(TEXT, Some(&[0.0])), Ok(String::new()));
        assert_eq!(slice_raw("a\nb", None), Ok("a\nb".into()));
        assert_eq!(
            slice_raw(TEXT, Some(&[9.0])).map_err(|e| e.status()),
            Err(416)
        );
    }

    /// Every row of the EDIT positional rules table (PLURNK.md §1.4).
    #[test]
    fn edit_positional_rules_table() {
        type Row<'a> = (Option<&'a [f64]>, &'a str, &'a str, (usize, usize));
        let rows: &[Row<'_>] = &[
            // none + text → replace whole content (verbatim)
            (None, "new\n", "new\n", (1, 1)),
            // none + empty → clear
            (None, "", "", (1, 0)),
            // <N> + text → replace line N; the body may span lines
            (Some(&[2.0]), "B", "alpha\nB\ngamma\ndelta\n", (2, 2)),
            (
                Some(&[2.0]),
                "B1\nB2",
                "alpha\nB1\nB2\ngamma\ndelta\n",
                (2, 3),
            ),
            // <N,M> + text → replace N..M
            (Some(&[2.0, 3.0]), "X", "alpha\nX\ndelta\n", (2, 2)),
            // <0> prepend, <-1> append
            (
                Some(&[0.0]),
                "top",
                "top\nalpha\nbeta\ngamma\ndelta\n",
                (1, 1),
            ),
            (
                Some(&[-1.0]),
                "end",
                "alpha\nbeta\ngamma\ndelta\nend\n",
                (5, 5),
            ),
            // <N.5> inserts between N and N+1
            (
                Some(&[2.5]),
                "mid",
                "alpha\nbeta\nmid\ngamma\ndelta\n",
                (3, 3),
            ),
            (
                Some(&[0.5]),
                "first",
                "first\nalpha\nbeta\ngamma\ndelta\n",
                (1, 1),
            ),
            (
                Some(&[4.5]),
                "last",
                "alpha\nbeta\ngamma\ndelta\nlast\n",
                (5, 5),
            ),
            // <1,-1> + empty → clear
            (Some(&[1.0, -1.0]), "", "", (1, 0)),
            // <1,-1> + text → replace everything line-wise
            (Some(&[1.0, -1.0]), "only", "only\n", (1, 1)),
            // empty body on <N>/<N,M> deletes those lines
            (Some(&[2.0]), "", "alpha\ngamma\ndelta\n", (2, 1)),
            (Some(&[1.0, 3.0]), "", "delta\n", (1, 0)),
        ];
        for (marks, body, want, span) in rows {
            let o = edit(Some(TEXT), *marks, body);
            assert_eq!(o.content, *want, "{marks:?} {body:?}");
            assert_eq!(o.status, 200, "{marks:?} {body:?}");
            assert_eq!(o.span, LineSpan::new(span.0, span.1), "{marks:?} {body:?}");
        }
    }

    #[test]
    fn edit_on_missing_entry_ignores_the_marker_and_creates() {
        for marks in [
            None,
            Some(&[3.0][..]),
            Some(&[-1.0][..]),
            Some(&[9.0, 12.0][..]),
        ] {
            let o = edit(None, marks, "hello\nworld\n");
            assert_eq!(o.content, "hello\nworld\n");
            assert_eq!(o.status, 201);
            assert_eq!(o.span, LineSpan::new(1, 2));
        }
    }

    #[test]
    fn identical_edit_is_304() {
        assert_eq!(edit(Some(TEXT), None, TEXT).status, 304);
        assert_eq!(edit(Some(TEXT), Some(&[2.0]), "beta").status, 304);
        assert_eq!(edit(Some(""), None, "").status, 304);
        assert_eq!(edit(Some(TEXT), Some(&[0.0]), "").status, 304);
    }

    #[test]
    fn edit_markers_out_of_range_are_416() {
        let bad: &[&[f64]] = &[
            &[5.0],
            &[-2.0],
            &[5.5],
            &[-0.5],
            &[2.0, 5.0],
            &[3.0, 2.0],
            &[1.5, 2.0],
            &[1.0, 2.0, 3.0],
        ];
        for marks in bad {
            let e = apply_edit(Some(TEXT), Some(marks), "x").err();
            assert_eq!(e.map(|e| e.status()), Some(416), "{marks:?}");
        }
    }

    #[test]
    fn trailing_newline_follows_the_original_content() {
        // original terminated: result terminated, body's own newline dropped
        assert_eq!(edit(Some("a\nb\n"), Some(&[2.0]), "x\n").content, "a\nx\n");
        // original unterminated: result unterminated, even if the body has one
        assert_eq!(edit(Some("a\nb"), Some(&[2.0]), "x\n").content, "a\nx");
        assert_eq!(edit(Some("a\nb"), Some(&[-1.0]), "c").content, "a\nb\nc");
        // a body of one blank line inserts one empty line
        assert_eq!(edit(Some("a\nb\n"), Some(&[1.5]), "\n").content, "a\n\nb\n");
        // deleting every line leaves no stray newline
        assert_eq!(edit(Some("a\n"), Some(&[1.0]), "").content, "");
        // whole-content replace is verbatim
        assert_eq!(edit(Some("a\n"), None, "b").content, "b");
    }

    #[test]
    fn edits_on_empty_existing_content() {
        assert_eq!(edit(Some(""), Some(&[-1.0]), "x").content, "x");
        assert_eq!(edit(Some(""), Some(&[0.0]), "x").content, "x");
        assert_eq!(edit(Some(""), Some(&[1.0, -1.0]), "x\ny").content, "x\ny");
        assert_eq!(
            apply_edit(Some(""), Some(&[1.0]), "x").map_err(|e| e.status()),
            Err(416)
        );
    }

    #[test]
    fn crlf_lines_round_trip_untouched() {
        let o = edit(Some("a\r\nb\r\nc\r\n"), Some(&[2.0]), "B\r");
        assert_eq!(o.content, "a\r\nB\r\nc\r\n");
    }

    #[test]
    fn render_span_adds_context() {
        let text = "1\n2\n3\n4\n5\n6\n7\n";
        assert_eq!(
            render_span(text, LineSpan::new(4, 4), 2),
            "2:\t2\n3:\t3\n4:\t4\n5:\t5\n6:\t6"
        );
        assert_eq!(render_span(text, LineSpan::new(1, 1), 1), "1:\t1\n2:\t2");
        assert_eq!(render_span(text, LineSpan::empty_at(3), 1), "2:\t2\n3:\t3");
        assert_eq!(render_span(text, LineSpan::empty_at(8), 1), "7:\t7");
        assert_eq!(render_span("", LineSpan::empty_at(1), 2), "");
        assert_eq!(render_span(text, LineSpan::new(50, 60), 0), "7:\t7");
    }

    proptest! {
        #[test]
        fn apply_edit_never_panics(
            current in proptest::option::of(".{0,40}"),
            marks in proptest::option::of(proptest::collection::vec(
                prop_oneof![(-3i32..8).prop_map(f64::from), any::<f64>(), (-30i32..80).prop_map(|x| f64::from(x) / 10.0)],
                0..4)),
            body in ".{0,20}",
        ) {
            let r = apply_edit(current.as_deref(), marks.as_deref(), &body);
            if let Ok(o) = &r {
                prop_assert!(matches!(o.status, 200 | 201 | 304));
                let _ = render_span(&o.content, o.span, 2);
            }
            if let Some(c) = &current {
                let _ = select_lines(c, marks.as_deref());
                let _ = slice_raw(c, marks.as_deref());
            }
        }

        #[test]
        fn slice_raw_of_everything_reassembles_terminated_content(lines in proptest::collection::vec("[a-z\r]{0,5}", 1..6)) {
            let content = format!("{}\n", lines.join("\n"));
            prop_assert_eq!(slice_raw(&content, Some(&[1.0, -1.0])), Ok(content.clone()));
        }
    }
}
