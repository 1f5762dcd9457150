//! Long-term memory: normalized dedup, tags, use counts and recall ranking, and persistence
//! across reopen in both stores (a JSON-lines file and a tantivy index, each in a tempdir).

use agentos_userland::longmem::*;
use std::path::Path;

const NO_TAGS: &[&str] = &[];

/// Fill a memory with the lessons every persistence scenario uses.
fn fill(m: &mut LongMemory) {
    assert_eq!(
        m.remember("Run `cargo test -q` before committing", &["Rust", "ci"])
            .unwrap(),
        Some(1)
    );
    assert_eq!(
        m.remember("Pin the toolchain in rust-toolchain.toml", &["rust"])
            .unwrap(),
        Some(2)
    );
    assert_eq!(
        m.remember("Read the error message before searching", NO_TAGS)
            .unwrap(),
        Some(3)
    );
    // The same lessons, spelled differently: all refused.
    for dup in [
        "run `cargo test -q` before committing",
        "  RUN `cargo   test -q`\tbefore committing  ",
        "Pin the toolchain in rust-toolchain.toml\n",
    ] {
        assert_eq!(m.remember(dup, &["other"]).unwrap(), None, "{dup:?}");
    }
    assert_eq!(m.remember(" \n\t ", &["x"]).unwrap(), None);
    assert_eq!(m.len(), 3);
}

/// The persistence scenario against any store: dedup, use counts written on flush or drop,
/// everything back after reopen, ids continuing, dedup still holding against reopened lessons.
fn persists_across_reopen<S: LongMemoryStore + 'static>(open: impl Fn() -> S) {
    {
        let mut m = LongMemory::open(open())
            .unwrap()
            .with_clock(fixed_clock(1_000));
        assert!(m.is_persistent() && m.is_empty());
        fill(&mut m);
        let got = m.recall("cargo test", 2);
        assert_eq!(got.iter().map(|l| l.id).collect::<Vec<_>>(), [1]);
        assert_eq!(got[0].uses, 1);
        // Dropped without a flush: the use count is written on drop.
    }
    {
        let mut m = LongMemory::open(open())
            .unwrap()
            .with_clock(fixed_clock(2_000));
        assert_eq!(m.len(), 3);
        let first = m.get(1).unwrap();
        assert_eq!(first.text, "Run `cargo test -q` before committing");
        assert_eq!(first.tags, ["rust", "ci"], "tags are normalized and kept");
        assert_eq!((first.ts, first.uses), (1_000, 1), "the use count survived");
        assert_eq!(
            m.remember("RUN `CARGO TEST -Q` before   committing", NO_TAGS)
                .unwrap(),
            None,
            "dedup holds against reopened lessons"
        );
        assert_eq!(
            m.remember("Prefer small commits", NO_TAGS).unwrap(),
            Some(4),
            "ids continue after the stored ones"
        );
        m.recall("toolchain", 1);
        m.recall("toolchain", 1);
        m.flush().unwrap();
        // Flushing twice writes nothing new and is fine.
        m.flush().unwrap();
    }
    let m = LongMemory::open(open()).unwrap();
    let all: Vec<(u64, u64, u64)> = m.all().map(|l| (l.id, l.uses, l.ts)).collect();
    assert_eq!(
        all,
        [(1, 1, 1_000), (2, 2, 1_000), (3, 0, 1_000), (4, 0, 2_000)]
    );
}

#[test]
fn a_file_store_dedups_and_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mem").join("lessons.jsonl");
    persists_across_reopen(|| FileStore::open(&path).unwrap());
    // The file is plain JSON lines, one lesson per line, by id.
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[1]["text"], "Pin the toolchain in rust-toolchain.toml");
    assert_eq!(lines[1]["uses"], 2);
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["lessons.jsonl"], "no temporary file is left");
}

#[test]
fn a_tantivy_store_dedups_and_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let index = dir.path().join("index");
    persists_across_reopen(|| TantivyStore::open(&index).unwrap());
    // The index answers BM25 queries over text and tags, plain words only.
    let store = TantivyStore::open(&index).unwrap();
    assert_eq!(store.search("toolchain", 5).unwrap(), [2]);
    assert_eq!(store.search("ci", 5).unwrap(), [1], "tags are searchable");
    assert_eq!(store.search("toolchain:(( AND \"", 5).unwrap(), [2]);
    assert!(store.search("zebra", 5).unwrap().is_empty());
    assert!(store.search("", 5).unwrap().is_empty());
}

#[test]
fn a_corrupt_file_is_an_error_not_a_silent_loss() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lessons.jsonl");
    std::fs::write(
        &path,
        "{\"id\":1,\"text\":\"Keep going\"}\nnot json at all\n",
    )
    .unwrap();
    let err = FileStore::open(&path).unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt { line: 2, .. }),
        "got {err}"
    );
    // Optional fields default: a minimal line is a lesson.
    std::fs::write(&path, "{\"id\":7,\"text\":\"Keep going on\"}\n").unwrap();
    let m = LongMemory::open(FileStore::open(&path).unwrap()).unwrap();
    let l = m.get(7).unwrap();
    assert_eq!((l.uses, l.ts, l.tags.len()), (0, 0, 0));
}

/// A store whose writes fail while `fail` is set, counting what it was asked to write.
struct Flaky {
    fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
    puts: std::sync::Arc<std::sync::Mutex<Vec<Vec<u64>>>>,
}

impl LongMemoryStore for Flaky {
    fn load(&mut self) -> Result<Vec<Lesson>, StoreError> {
        Ok(Vec::new())
    }
    fn put(&mut self, lessons: &[Lesson]) -> Result<(), StoreError> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Io {
                path: Path::new("flaky").to_owned(),
                source: std::io::Error::other("disk full"),
            });
        }
        self.puts
            .lock()
            .unwrap()
            .push(lessons.iter().map(|l| l.id).collect());
        Ok(())
    }
}

#[test]
fn a_failed_write_leaves_the_memory_unchanged_and_pending_uses_are_kept() {
    let fail = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let puts = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut m = LongMemory::open(Flaky {
        fail: fail.clone(),
        puts: puts.clone(),
    })
    .unwrap();
    m.remember("Check the logs first", NO_TAGS).unwrap();
    m.recall("logs", 1);
    fail.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(m.remember("Retry with backoff", NO_TAGS).is_err());
    assert_eq!(m.len(), 1, "the lesson was not added");
    assert!(m.search("backoff", 1).is_empty());
    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    // The same lesson goes in now, under the id it would have had, with the pending use.
    assert_eq!(m.remember("Retry with backoff", NO_TAGS).unwrap(), Some(2));
    assert_eq!(*puts.lock().unwrap(), vec![vec![1], vec![1, 2]]);
}

#[test]
fn recall_ranks_by_words_and_tags_then_uses_then_age() {
    let mut m = LongMemory::new();
    m.remember("Quote paths that may contain spaces", &["shell"])
        .unwrap(); // 1
    m.remember("Use set -euo pipefail in scripts", &["shell", "bash"])
        .unwrap(); // 2
    m.remember("Prefer rg over grep for large trees", &["search"])
        .unwrap(); // 3
    m.remember("Grep the logs for the first error", &["debugging"])
        .unwrap(); // 4
    let ids = |v: Vec<Lesson>| v.into_iter().map(|l| l.id).collect::<Vec<u64>>();

    // "shell scripts": lesson 2 has the tag "shell" and the word "scripts" (2 points), lesson
    // 1 only the tag (1 point).
    assert_eq!(ids(m.recall("shell scripts", 4)), [2, 1]);
    // Substring matching, as the seed: "grep" is in lessons 3 and 4 (case-insensitive).
    assert_eq!(ids(m.recall("GREP", 4)), [3, 4]);
    // k bounds the answer; only positive matches come back.
    assert_eq!(ids(m.recall("grep", 1)).len(), 1);
    assert!(m.recall("kubernetes", 4).is_empty());
    assert!(m.recall("  ,;  ", 4).is_empty());

    // Lessons 3 and 4 tied on "grep" (same uses, so the older came first); now lesson 3 has
    // been recalled twice, lesson 4 once.
    assert_eq!(m.get(3).unwrap().uses, 2);
    assert_eq!(m.get(4).unwrap().uses, 1);
    m.recall("grep logs", 1); // lesson 4: two words
    m.recall("grep logs", 1);
    assert_eq!(m.get(4).unwrap().uses, 3);
    assert_eq!(
        ids(m.recall("grep", 2)),
        [4, 3],
        "the more used lesson first"
    );

    // Restricted to a tag.
    assert_eq!(
        ids(m.recall_tagged("grep spaces scripts", "SHELL", 4)),
        [1, 2]
    );
    assert!(m.recall_tagged("grep", "nope", 4).is_empty());
    assert_eq!(m.tagged("bash").map(|l| l.id).collect::<Vec<_>>(), [2]);
    // Searching counts no use.
    let before = m.get(2).unwrap().uses;
    assert_eq!(m.search("pipefail", 3).len(), 1);
    assert_eq!(m.get(2).unwrap().uses, before);
}
