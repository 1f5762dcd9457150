//! The operator's review of proposals in `agentos run` (PLURNK.md §3.6: a human resolver).
//!
//! A loop that proposes (a file EDIT or KILL, an EXEC) parks until someone decides. On a
//! terminal, `run` is that someone: each proposal is printed (op, target, a summary) and the
//! operator answers `[a]ccept / [r]eject / [d]iff`; `d` prints the proposed change (for a file
//! EDIT the unified diff the proposal carries: the snapshot the model edited, on disk when
//! it proposed, against the new content) and asks again. Accept and reject go through the
//! same host call the daemon's `loop.resolve` makes (embedded: `Engine::resolve`; with
//! `--connect`: `loop.resolve`).
//!
//! [`Review`] is the conversation as a state machine with no I/O: proposals and answer lines
//! go in, text to show and decisions to send come out ([`Todo`]). The caller owns the
//! terminal: it reads one line of stdin per [`Todo::read_line`] (on a thread, [`line_reader`],
//! so a blocked read never holds up the live view or Ctrl-C) and sends the decisions.
//!
//! **Invariants:** one proposal is asked at a time, oldest first; an answer is read only when
//! one is asked for (typed-ahead lines are not swallowed by the live view); a proposal settled
//! elsewhere (timeout, another client, the loop's end) leaves the queue; once stdin ends every
//! pending and later proposal is rejected with outcome `no_review_channel`, as when `run` has
//! no terminal at all.

use std::collections::VecDeque;
use std::fmt::Write as _;

use crate::store::{LogRow, RowId, RowTarget};
use crate::turn::proposal::{Decision, NO_REVIEW_CHANNEL};

/// The question, after each proposal and each answer that is not a decision.
const PROMPT: &str = "[a]ccept / [r]eject / [d]iff / [?] help: ";

const HELP: &str = "  a, accept   apply it (the loop goes on with the result)\n  \
                    r, reject   refuse it (the model sees 400 rejected)\n  \
                    d, diff     show the proposed change, then ask again\n  \
                    Ctrl-C      cancel the loop\n";

/// A proposal waiting for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Proposal {
    /// The proposed row.
    pub id: RowId,
    /// Its op (`EDIT`, `KILL`, `EXEC`).
    pub op: String,
    /// What it acts on.
    pub target: String,
    /// What the row answers: a unified diff for a file EDIT, else a description.
    pub body: String,
}

impl Proposal {
    /// The proposal a committed row in state `proposed` makes.
    pub fn of_row(r: &LogRow) -> Proposal {
        Proposal {
            id: r.id,
            op: r.op.as_str().to_owned(),
            target: r.target.as_ref().map(RowTarget::uri).unwrap_or_default(),
            body: r.rx.clone().unwrap_or_default(),
        }
    }

    /// The proposal a daemon's `loop/proposal` notification carries (`None` without an id).
    pub fn of_notification(p: &serde_json::Value) -> Option<Proposal> {
        let target = <RowTarget as serde::Deserialize>::deserialize(&p["target"])
            .map(|t| t.uri())
            .unwrap_or_default();
        Some(Proposal {
            id: p["logEntryId"].as_i64()?,
            op: p["op"].as_str().unwrap_or("?").to_owned(),
            target,
            body: p["body"].as_str().unwrap_or_default().to_owned(),
        })
    }

    /// Whether the body is a unified diff (what a file EDIT proposes).
    fn is_diff(&self) -> bool {
        self.body.starts_with("--- ") && self.body.contains("\n+++ ")
    }

    /// One line: op, target, and the size of the change or what it does.
    pub fn summary(&self) -> String {
        let mut s = format!("proposal {} · {}", self.id, self.op);
        if !self.target.is_empty() {
            let _ = write!(s, " {}", self.target);
        }
        if self.is_diff() {
            let (mut add, mut del) = (0, 0);
            for l in self.body.lines() {
                if l.starts_with('+') && !l.starts_with("+++ ") {
                    add += 1;
                } else if l.starts_with('-') && !l.starts_with("--- ") {
                    del += 1;
                }
            }
            let _ = write!(s, " · +{add} -{del} lines");
        } else if let Some(first) = self.body.lines().next().filter(|l| !l.is_empty()) {
            let _ = write!(s, " · {first}");
        }
        s
    }

    /// What `d` shows.
    fn diff(&self) -> String {
        let mut s = if self.is_diff() {
            self.body.clone()
        } else {
            format!(
                "(no diff: {} proposes a change that is not a file edit)\n{}",
                self.op, self.body
            )
        };
        if !s.ends_with('\n') {
            s.push('\n');
        }
        s
    }
}

/// An answer the operator typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Accept,
    Reject,
    Diff,
    Help,
}

fn parse(line: &str) -> Answer {
    match line.trim().to_ascii_lowercase().as_str() {
        "a" | "accept" | "y" | "yes" => Answer::Accept,
        "r" | "reject" | "n" | "no" => Answer::Reject,
        "d" | "diff" => Answer::Diff,
        _ => Answer::Help,
    }
}

/// What the caller does after a step of the review.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Todo {
    /// Decisions to send, in order: the row, the decision, the outcome (`None`: the
    /// decision's default).
    pub resolve: Vec<(RowId, Decision, Option<&'static str>)>,
    /// Read one more line of stdin and hand it to [`Review::answer`].
    pub read_line: bool,
}

/// The review of one loop's proposals (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Review {
    /// Pending proposals; the front one is being asked.
    queue: VecDeque<Proposal>,
    /// A line was asked for and has not come back yet.
    reading: bool,
    /// Stdin ended: no one is left to ask.
    closed: bool,
}

impl Review {
    /// Whether a question is on the screen (the next output starts on a fresh line).
    pub fn asking(&self) -> bool {
        !self.queue.is_empty()
    }

    /// A new proposal: asked now if nothing else is, else queued. Text to show goes to `say`.
    pub fn offer(&mut self, p: Proposal, say: &mut String) -> Todo {
        let mut todo = Todo::default();
        if self.queue.iter().any(|q| q.id == p.id) {
            return todo;
        }
        if self.closed {
            let _ = writeln!(say, "{} · rejected: stdin is closed", p.summary());
            todo.resolve
                .push((p.id, Decision::Reject, Some(NO_REVIEW_CHANNEL)));
            return todo;
        }
        self.queue.push_back(p);
        if self.queue.len() == 1 {
            self.ask(true, say, &mut todo);
        }
        todo
    }

    /// A line of stdin (`None`: stdin ended or failed).
    pub fn answer(&mut self, line: Option<&str>, say: &mut String) -> Todo {
        self.reading = false;
        let mut todo = Todo::default();
        let Some(line) = line else {
            self.closed = true;
            if !self.queue.is_empty() {
                say.push_str("\nstdin closed: rejecting the pending proposals\n");
            }
            for p in self.queue.drain(..) {
                todo.resolve
                    .push((p.id, Decision::Reject, Some(NO_REVIEW_CHANNEL)));
            }
            return todo;
        };
        // A line typed while nothing is asked (the proposal was settled elsewhere).
        let Some(front) = self.queue.front() else {
            return todo;
        };
        match parse(line) {
            a @ (Answer::Accept | Answer::Reject) => {
                let (decision, word) = if a == Answer::Accept {
                    (Decision::Accept, "accepted")
                } else {
                    (Decision::Reject, "rejected")
                };
                let _ = writeln!(say, "proposal {} {word}", front.id);
                todo.resolve.push((front.id, decision, None));
                self.queue.pop_front();
                self.ask(true, say, &mut todo);
            }
            Answer::Diff => {
                say.push_str(&front.diff());
                self.ask(false, say, &mut todo);
            }
            Answer::Help => {
                say.push_str(HELP);
                self.ask(false, say, &mut todo);
            }
        }
        todo
    }

    /// Proposal `id` was settled without this review (timeout, another client, the loop
    /// ended): it leaves the queue, and the next one is asked if it was the one asked.
    pub fn settled(&mut self, id: RowId, say: &mut String) -> Todo {
        let mut todo = Todo::default();
        let Some(i) = self.queue.iter().position(|p| p.id == id) else {
            return todo;
        };
        self.queue.remove(i);
        if i == 0 {
            let _ = writeln!(say, "\nproposal {id} was settled elsewhere");
            self.ask(true, say, &mut todo);
        }
        todo
    }

    /// Asks about the front proposal (with its summary when `introduce`).
    fn ask(&mut self, introduce: bool, say: &mut String, todo: &mut Todo) {
        let Some(p) = self.queue.front() else {
            return;
        };
        if introduce {
            let _ = writeln!(say, "{}", p.summary());
        }
        say.push_str(PROMPT);
        if !self.reading {
            self.reading = true;
            todo.read_line = true;
        }
    }
}

/// Reads one line of stdin per request on a thread of its own and hands it to `deliver`
/// (`None` at the end of stdin or on a read error, after which the thread ends). Returns the
/// request sender; dropping it ends the thread once a pending read returns.
pub(super) fn line_reader(
    deliver: impl Fn(Option<String>) + Send + 'static,
) -> std::sync::mpsc::Sender<()> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        while rx.recv().is_ok() {
            let mut line = String::new();
            let got = match stdin.lock().read_line(&mut line) {
                Ok(0) | Err(_) => None,
                Ok(_) => Some(line),
            };
            let end = got.is_none();
            deliver(got);
            if end {
                return;
            }
        }
    });
    tx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(id: RowId) -> Proposal {
        Proposal {
            id,
            op: "EDIT".into(),
            target: "notes.txt".into(),
            body: "--- a/notes.txt\n+++ b/notes.txt\n@@ -1,2 +1,2 @@\n alpha\n-beta\n+BETA\n"
                .into(),
        }
    }

    #[test]
    fn a_proposal_is_asked_and_accepted() {
        let mut r = Review::default();
        let mut say = String::new();
        let t = r.offer(edit(7), &mut say);
        assert_eq!(
            t,
            Todo {
                resolve: vec![],
                read_line: true
            }
        );
        assert!(
            say.contains("proposal 7 · EDIT notes.txt · +1 -1 lines"),
            "{say}"
        );
        assert!(say.ends_with(PROMPT));
        assert!(r.asking());
        let t = r.answer(Some("a\n"), &mut say);
        assert_eq!(t.resolve, [(7, Decision::Accept, None)]);
        assert!(!t.read_line, "nothing else to ask");
        assert!(!r.asking());
    }

    #[test]
    fn diff_shows_the_change_then_asks_again_and_reject_refuses() {
        let mut r = Review::default();
        let mut say = String::new();
        r.offer(edit(7), &mut say);
        say.clear();
        let t = r.answer(Some("d"), &mut say);
        assert!(t.resolve.is_empty());
        assert!(t.read_line);
        assert!(say.contains("-beta\n+BETA\n"), "{say}");
        assert!(say.ends_with(PROMPT));
        say.clear();
        let t = r.answer(Some("what?"), &mut say);
        assert!(t.resolve.is_empty() && t.read_line);
        assert!(say.contains("a, accept"), "{say}");
        let t = r.answer(Some(" R "), &mut say);
        assert_eq!(t.resolve, [(7, Decision::Reject, None)]);
    }

    #[test]
    fn proposals_are_asked_one_at_a_time_oldest_first() {
        let mut r = Review::default();
        let mut say = String::new();
        assert!(r.offer(edit(1), &mut say).read_line);
        say.clear();
        let t = r.offer(edit(2), &mut say);
        assert_eq!(t, Todo::default(), "queued behind the one asked");
        assert!(say.is_empty());
        assert_eq!(r.offer(edit(2), &mut say), Todo::default(), "offered once");
        let t = r.answer(Some("yes"), &mut say);
        assert_eq!(t.resolve, [(1, Decision::Accept, None)]);
        assert!(t.read_line);
        assert!(say.contains("proposal 2 · EDIT"), "{say}");
        let t = r.answer(Some("no"), &mut say);
        assert_eq!(t.resolve, [(2, Decision::Reject, None)]);
    }

    #[test]
    fn a_proposal_settled_elsewhere_moves_the_question_on() {
        let mut r = Review::default();
        let mut say = String::new();
        r.offer(edit(1), &mut say);
        r.offer(edit(2), &mut say);
        say.clear();
        // The line for 1 is still being read: no second read is asked for.
        let t = r.settled(1, &mut say);
        assert_eq!(t, Todo::default());
        assert!(say.contains("proposal 1 was settled elsewhere"), "{say}");
        assert!(say.contains("proposal 2 · EDIT"), "{say}");
        assert_eq!(r.settled(99, &mut say), Todo::default());
        let t = r.answer(Some("a"), &mut say);
        assert_eq!(t.resolve, [(2, Decision::Accept, None)]);
        // A line that comes back with nothing asked is dropped.
        r.settled(2, &mut say);
        assert_eq!(r.answer(Some("a"), &mut say), Todo::default());
    }

    #[test]
    fn the_end_of_stdin_rejects_everything_pending_and_later() {
        let mut r = Review::default();
        let mut say = String::new();
        r.offer(edit(1), &mut say);
        r.offer(edit(2), &mut say);
        let t = r.answer(None, &mut say);
        assert_eq!(
            t.resolve,
            [
                (1, Decision::Reject, Some(NO_REVIEW_CHANNEL)),
                (2, Decision::Reject, Some(NO_REVIEW_CHANNEL))
            ]
        );
        assert!(!t.read_line);
        let t = r.offer(edit(3), &mut say);
        assert_eq!(t.resolve, [(3, Decision::Reject, Some(NO_REVIEW_CHANNEL))]);
        assert!(!t.read_line);
    }

    #[test]
    fn a_proposal_that_is_not_an_edit_summarises_and_has_no_diff() {
        let p = Proposal {
            id: 4,
            op: "EXEC".into(),
            target: String::new(),
            body: "sh in ./: cargo test".into(),
        };
        assert_eq!(p.summary(), "proposal 4 · EXEC · sh in ./: cargo test");
        assert!(p.diff().starts_with("(no diff: EXEC"));
        let n = serde_json::json!({
            "logEntryId": 9, "op": "EDIT",
            "target": {"scheme": null, "hostname": null, "pathname": "notes.txt", "fragment": null},
            "body": edit(9).body,
        });
        assert_eq!(Proposal::of_notification(&n), Some(edit(9)));
        assert_eq!(Proposal::of_notification(&serde_json::json!({})), None);
    }
}
