//! Long-term memory: distilled lessons that outlive a session (the seed's `LongMemory`).
//!
//! A [`Lesson`] is a short reusable tactic with tags, a timestamp and a use count. The memory
//! is lossy by design and deduplicates on the *normalized* text (trimmed, runs of whitespace
//! collapsed, lowercased), so the same lesson learned twice is stored once ("no lesson rot").
//!
//! [`LongMemory::recall`] ranks lessons for a query with the seed's keyword scoring: each query
//! term (a maximal run of letters and digits, lowercased, counted once) scores a point when the
//! lesson's text contains it and another when one of the lesson's tags is exactly that term.
//! Only positive scores are returned, best first; ties go to the more used lesson, then to the
//! older one. Recalling bumps the returned lessons' `uses` (a popularity signal).
//!
//! Persistence goes through [`LongMemoryStore`]: [`FileStore`] (a JSON-lines file replaced
//! atomically on each write) and, with the `tantivy` feature, `TantivyStore` (an on-disk tantivy
//! index, also searchable by BM25). A new lesson is written through before it joins the memory,
//! so memory and store agree even when a write fails; use counts are written with the next new
//! lesson, by [`LongMemory::flush`], or (best effort) when the memory is dropped.
//!
//! The stores do host file I/O: they are how a program is given durable storage, in the way the
//! seed's `persist` option is handed to its `LongMemory`.

use crate::persist::JsonLinesTable;
pub use crate::persist::StoreError;
use agentos_abi::Syscalls;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A lesson's id, unique within one memory (and its store).
pub type LessonId = u64;

/// A clock in milliseconds. Programs pass [`sys_clock`] (the kernel's clock, virtual in
/// deterministic mode); [`system_clock`] is the default.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The host's wall clock, in ms since the Unix epoch.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    })
}

/// The kernel clock of the process that owns `sys`.
pub fn sys_clock<S: Syscalls>(sys: &S) -> Clock {
    let sys = sys.clone();
    Arc::new(move || sys.now())
}

/// A fixed clock (for tests and replays).
pub fn fixed_clock(ms: u64) -> Clock {
    Arc::new(move || ms)
}

/// One distilled lesson.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lesson {
    /// Its id.
    pub id: LessonId,
    /// The lesson, trimmed.
    pub text: String,
    /// Tags (trimmed, lowercased, deduplicated).
    #[serde(default)]
    pub tags: Vec<String>,
    /// When it was learned (ms, by the memory's clock).
    #[serde(default)]
    pub ts: u64,
    /// How many times it was recalled.
    #[serde(default)]
    pub uses: u64,
}

/// The dedup key of a lesson text: trimmed, whitespace runs collapsed to one space, lowercased.
pub fn normalize(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// The search terms of `text`: maximal runs of letters and digits (any script), lowercased.
pub fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Tags as stored: trimmed, lowercased, blanks dropped, first occurrence kept.
pub fn normalize_tags<T: AsRef<str>>(tags: &[T]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in tags {
        let t = t.as_ref().trim().to_lowercase();
        if !t.is_empty() && !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

/// Where a [`LongMemory`] keeps its lessons between runs.
pub trait LongMemoryStore: Send {
    /// Every stored lesson.
    fn load(&mut self) -> Result<Vec<Lesson>, StoreError>;
    /// Insert or replace these lessons (by id), all or none.
    fn put(&mut self, lessons: &[Lesson]) -> Result<(), StoreError>;
}

/// Lessons in a JSON-lines file (one lesson per line, by id), replaced atomically on each write.
#[derive(Debug)]
pub struct FileStore {
    table: JsonLinesTable<LessonId, Lesson>,
}

impl FileStore {
    /// Open the store at `path` (the file is created on the first write). A line that is not a
    /// lesson is an error, not a silent loss.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, StoreError> {
        Ok(FileStore {
            table: JsonLinesTable::open(path, |l: &Lesson| l.id)?,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        self.table.path()
    }
}

impl LongMemoryStore for FileStore {
    fn load(&mut self) -> Result<Vec<Lesson>, StoreError> {
        Ok(self.table.rows())
    }
    fn put(&mut self, lessons: &[Lesson]) -> Result<(), StoreError> {
        self.table.upsert(lessons.iter().map(|l| (l.id, l.clone())))
    }
}

#[cfg(feature = "tantivy")]
pub use tantivy_store::TantivyStore;

#[cfg(feature = "tantivy")]
mod tantivy_store {
    use super::{terms, Lesson, LessonId, LongMemoryStore, StoreError};
    use std::path::{Path, PathBuf};
    use tantivy::collector::TopDocs;
    use tantivy::directory::MmapDirectory;
    use tantivy::query::QueryParser;
    use tantivy::schema::{Field, Schema, Value as _, FAST, INDEXED, STORED, TEXT};
    use tantivy::{doc, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

    /// The writer's memory arena (tantivy's minimum for one indexing thread).
    const WRITER_ARENA: usize = 15_000_000;

    /// Lessons in an on-disk tantivy index: one document per lesson (its id, the lesson as
    /// stored JSON, and its text and tags as an indexed field). A write replaces the lessons'
    /// documents and commits, so a reopened store sees exactly the committed lessons. The
    /// index is also searchable by BM25 ([`TantivyStore::search`]).
    pub struct TantivyStore {
        dir: PathBuf,
        index: Index,
        writer: IndexWriter<TantivyDocument>,
        reader: IndexReader,
        id: Field,
        lesson: Field,
        text: Field,
    }

    impl std::fmt::Debug for TantivyStore {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("TantivyStore")
                .field("dir", &self.dir)
                .finish()
        }
    }

    impl TantivyStore {
        /// Open (or create) the index in directory `dir`. One store at a time may hold a
        /// directory: tantivy locks it for the writer.
        pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
            let dir = dir.into();
            std::fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
            let err = |e: &dyn std::fmt::Display| StoreError::Index {
                path: dir.clone(),
                reason: e.to_string(),
            };
            let mut sb = Schema::builder();
            let id = sb.add_u64_field("id", INDEXED | FAST | STORED);
            let lesson = sb.add_text_field("lesson", STORED);
            let text = sb.add_text_field("text", TEXT);
            let mmap = MmapDirectory::open(&dir).map_err(|e| err(&e))?;
            let index = Index::open_or_create(mmap, sb.build()).map_err(|e| err(&e))?;
            let writer = index
                .writer_with_num_threads(1, WRITER_ARENA)
                .map_err(|e| err(&e))?;
            let reader = index
                .reader_builder()
                .reload_policy(ReloadPolicy::Manual)
                .try_into()
                .map_err(|e: tantivy::TantivyError| err(&e))?;
            Ok(TantivyStore {
                dir,
                index,
                writer,
                reader,
                id,
                lesson,
                text,
            })
        }

        /// The index directory.
        pub fn dir(&self) -> &Path {
            &self.dir
        }

        fn index_error(&self, e: impl std::fmt::Display) -> StoreError {
            StoreError::Index {
                path: self.dir.clone(),
                reason: e.to_string(),
            }
        }

        /// The ids of the `k` stored lessons that best match `query` (BM25 over text and tags),
        /// best first. The query is plain words: tantivy's query operators are ignored.
        pub fn search(&self, query: &str, k: usize) -> Result<Vec<LessonId>, StoreError> {
            let words = terms(query);
            if words.is_empty() || k == 0 {
                return Ok(Vec::new());
            }
            let parser = QueryParser::for_index(&self.index, vec![self.text]);
            let (q, _errors) = parser.parse_query_lenient(&words.join(" "));
            let searcher = self.reader.searcher();
            let top = searcher
                .search(&q, &TopDocs::with_limit(k).order_by_score())
                .map_err(|e| self.index_error(e))?;
            let mut out = Vec::with_capacity(top.len());
            for (_score, addr) in top {
                let col = searcher
                    .segment_reader(addr.segment_ord)
                    .fast_fields()
                    .u64("id")
                    .map_err(|e| self.index_error(e))?;
                if let Some(v) = col.first(addr.doc_id) {
                    out.push(v);
                }
            }
            Ok(out)
        }

        fn try_put(&mut self, lessons: &[Lesson]) -> Result<(), StoreError> {
            for l in lessons {
                let json = serde_json::to_string(l).map_err(|e| self.index_error(e))?;
                let searchable = format!("{} {}", l.text, l.tags.join(" "));
                self.writer.delete_term(Term::from_field_u64(self.id, l.id));
                self.writer
                    .add_document(
                        doc!(self.id => l.id, self.lesson => json, self.text => searchable),
                    )
                    .map_err(|e| self.index_error(e))?;
            }
            self.writer.commit().map_err(|e| self.index_error(e))?;
            self.reader.reload().map_err(|e| self.index_error(e))
        }
    }

    impl LongMemoryStore for TantivyStore {
        fn load(&mut self) -> Result<Vec<Lesson>, StoreError> {
            self.reader.reload().map_err(|e| self.index_error(e))?;
            let searcher = self.reader.searcher();
            let mut out = Vec::new();
            let mut n = 0usize;
            for seg in searcher.segment_readers() {
                let store = seg.get_store_reader(1).map_err(|e| self.index_error(e))?;
                for doc_id in seg.doc_ids_alive() {
                    n += 1;
                    let corrupt = |reason: String| StoreError::Corrupt {
                        path: self.dir.clone(),
                        line: n,
                        reason,
                    };
                    let d: TantivyDocument =
                        store.get(doc_id).map_err(|e| corrupt(e.to_string()))?;
                    let json = d
                        .get_first(self.lesson)
                        .and_then(|v| v.as_str())
                        .ok_or_else(|| corrupt("a document without a stored lesson".into()))?;
                    let lesson: Lesson =
                        serde_json::from_str(json).map_err(|e| corrupt(e.to_string()))?;
                    out.push(lesson);
                }
            }
            out.sort_by_key(|l| l.id);
            Ok(out)
        }

        fn put(&mut self, lessons: &[Lesson]) -> Result<(), StoreError> {
            if lessons.is_empty() {
                return Ok(());
            }
            let r = self.try_put(lessons);
            if r.is_err() {
                // Drop whatever of this batch was staged: all or none.
                let _ = self.writer.rollback();
            }
            r
        }
    }
}

/// Long-term memory: deduplicated lessons, recalled by keyword and tag.
pub struct LongMemory {
    by: BTreeMap<LessonId, Lesson>,
    /// Normalized text → the lesson holding it.
    seen: HashMap<String, LessonId>,
    /// Lowercased text of each lesson, searched by recall.
    haystack: HashMap<LessonId, String>,
    store: Option<Box<dyn LongMemoryStore>>,
    clock: Clock,
    next_id: LessonId,
    /// Lessons whose use counts changed since the last write.
    dirty: BTreeSet<LessonId>,
}

impl fmt::Debug for LongMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LongMemory")
            .field("lessons", &self.by.len())
            .field("persistent", &self.store.is_some())
            .field("dirty", &self.dirty.len())
            .finish()
    }
}

impl Default for LongMemory {
    fn default() -> Self {
        Self::new()
    }
}

impl LongMemory {
    /// An empty memory that is not persisted, on the host clock.
    pub fn new() -> Self {
        LongMemory {
            by: BTreeMap::new(),
            seen: HashMap::new(),
            haystack: HashMap::new(),
            store: None,
            clock: system_clock(),
            next_id: 1,
            dirty: BTreeSet::new(),
        }
    }

    /// A memory persisted in `store`, holding what the store holds (deduplicated again on
    /// load, so a store written by another program cannot smuggle in duplicates).
    pub fn open(store: impl LongMemoryStore + 'static) -> Result<Self, StoreError> {
        let mut store: Box<dyn LongMemoryStore> = Box::new(store);
        let mut mem = LongMemory::new();
        for l in store.load()? {
            mem.next_id = mem.next_id.max(l.id.saturating_add(1));
            mem.ingest(l);
        }
        mem.store = Some(store);
        Ok(mem)
    }

    /// Use `clock` for new lessons' timestamps.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn ingest(&mut self, mut l: Lesson) -> bool {
        let n = normalize(&l.text);
        if n.is_empty() || self.seen.contains_key(&n) || self.by.contains_key(&l.id) {
            return false;
        }
        l.tags = normalize_tags(&l.tags);
        self.seen.insert(n, l.id);
        self.haystack.insert(l.id, l.text.to_lowercase());
        self.by.insert(l.id, l);
        true
    }

    /// Add a lesson with `tags`. Returns its id, or `None` when the text is blank or normalizes
    /// to a lesson already held. The lesson (and any pending use counts) is written to the store
    /// first; if that fails the memory is unchanged.
    pub fn remember<T: AsRef<str>>(
        &mut self,
        text: &str,
        tags: &[T],
    ) -> Result<Option<LessonId>, StoreError> {
        let key = normalize(text);
        if key.is_empty() || self.seen.contains_key(&key) {
            return Ok(None);
        }
        let lesson = Lesson {
            id: self.next_id,
            text: text.trim().to_owned(),
            tags: normalize_tags(tags),
            ts: (self.clock)(),
            uses: 0,
        };
        if let Some(store) = &mut self.store {
            let mut batch: Vec<Lesson> = self
                .dirty
                .iter()
                .filter_map(|id| self.by.get(id).cloned())
                .collect();
            batch.push(lesson.clone());
            store.put(&batch)?;
            self.dirty.clear();
        }
        let id = lesson.id;
        self.next_id += 1;
        self.ingest(lesson);
        Ok(Some(id))
    }

    /// The ids of the best `k` lessons for `query` (among those `keep` accepts), without
    /// touching their use counts.
    fn rank(&self, query: &str, k: usize, keep: impl Fn(&Lesson) -> bool) -> Vec<LessonId> {
        let mut q: Vec<String> = Vec::new();
        for t in terms(query) {
            if !q.contains(&t) {
                q.push(t);
            }
        }
        if q.is_empty() || k == 0 {
            return Vec::new();
        }
        let mut scored: Vec<(usize, u64, LessonId)> = self
            .by
            .values()
            .filter(|l| keep(l))
            .filter_map(|l| {
                let hay = self.haystack.get(&l.id).map(String::as_str).unwrap_or("");
                let score: usize = q
                    .iter()
                    .map(|t| {
                        usize::from(hay.contains(t.as_str())) + usize::from(l.tags.contains(t))
                    })
                    .sum();
                (score > 0).then_some((score, l.uses, l.id))
            })
            .collect();
        scored.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        scored.truncate(k);
        scored.into_iter().map(|(_, _, id)| id).collect()
    }

    fn bump(&mut self, ids: Vec<LessonId>) -> Vec<Lesson> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(l) = self.by.get_mut(&id) {
                l.uses = l.uses.saturating_add(1);
                out.push(l.clone());
                if self.store.is_some() {
                    self.dirty.insert(id);
                }
            }
        }
        out
    }

    /// The `k` most relevant lessons for `query`, best first; bumps their use counts.
    pub fn recall(&mut self, query: &str, k: usize) -> Vec<Lesson> {
        let ids = self.rank(query, k, |_| true);
        self.bump(ids)
    }

    /// Like [`LongMemory::recall`], among the lessons tagged `tag` only.
    pub fn recall_tagged(&mut self, query: &str, tag: &str, k: usize) -> Vec<Lesson> {
        let tag = tag.trim().to_lowercase();
        let ids = self.rank(query, k, |l| l.tags.contains(&tag));
        self.bump(ids)
    }

    /// The `k` most relevant lessons for `query`, best first, without counting a use.
    pub fn search(&self, query: &str, k: usize) -> Vec<&Lesson> {
        self.rank(query, k, |_| true)
            .into_iter()
            .filter_map(|id| self.by.get(&id))
            .collect()
    }

    /// Write pending use counts to the store.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        let Some(store) = &mut self.store else {
            return Ok(());
        };
        if self.dirty.is_empty() {
            return Ok(());
        }
        let batch: Vec<Lesson> = self
            .dirty
            .iter()
            .filter_map(|id| self.by.get(id).cloned())
            .collect();
        store.put(&batch)?;
        self.dirty.clear();
        Ok(())
    }

    /// A lesson by id.
    pub fn get(&self, id: LessonId) -> Option<&Lesson> {
        self.by.get(&id)
    }

    /// Every lesson, oldest first.
    pub fn all(&self) -> impl Iterator<Item = &Lesson> {
        self.by.values()
    }

    /// The lessons tagged `tag`, oldest first.
    pub fn tagged<'a>(&'a self, tag: &str) -> impl Iterator<Item = &'a Lesson> + 'a {
        let tag = tag.trim().to_lowercase();
        self.by.values().filter(move |l| l.tags.contains(&tag))
    }

    /// How many lessons it holds.
    pub fn len(&self) -> usize {
        self.by.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.by.is_empty()
    }

    /// Whether it is persisted.
    pub fn is_persistent(&self) -> bool {
        self.store.is_some()
    }
}

impl Drop for LongMemory {
    fn drop(&mut self) {
        // Use counts are a popularity signal: losing the last few to a failed write is fine.
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_collapses_case_and_space() {
        assert_eq!(
            normalize("  Cache the\tTARGET\n dir "),
            "cache the target dir"
        );
        assert_eq!(normalize(" \n\t"), "");
        assert_eq!(
            terms("cargo-build, µs & 日本語!"),
            ["cargo", "build", "µs", "日本語"]
        );
        assert_eq!(
            normalize_tags(&[" Rust", "rust", "", "CI "]),
            ["rust", "ci"]
        );
    }

    #[test]
    fn duplicates_and_blanks_are_refused() {
        let mut m = LongMemory::new().with_clock(fixed_clock(5));
        let id = m.remember("Run the tests first", &["ci"]).unwrap();
        assert_eq!(id, Some(1));
        assert_eq!(
            m.remember("  run THE tests   first ", &[] as &[&str])
                .unwrap(),
            None
        );
        assert_eq!(m.remember("   ", &["x"]).unwrap(), None);
        assert_eq!(m.len(), 1);
        let l = m.get(1).unwrap();
        assert_eq!(
            (l.ts, l.uses, l.tags.clone()),
            (5, 0, vec!["ci".to_owned()])
        );
    }

    #[test]
    fn recall_scores_words_then_tags_then_uses() {
        let mut m = LongMemory::new();
        m.remember("prefer cargo nextest for speed", &["rust"])
            .unwrap();
        m.remember("pin the toolchain in CI", &["ci"]).unwrap();
        m.remember("cache cargo registries in CI", &["ci", "rust"])
            .unwrap();
        assert!(m.recall("", 3).is_empty());
        assert!(m.recall("zebra", 3).is_empty());
        assert!(m.recall("cargo", 0).is_empty());
        let ids = |v: Vec<Lesson>| v.into_iter().map(|l| l.id).collect::<Vec<_>>();
        // "cargo ci": lesson 3 has both words and the tag (3), lesson 2 the word and the tag
        // (2), lesson 1 one word.
        assert_eq!(ids(m.recall("cargo ci", 3)), [3, 2, 1]);
        assert_eq!(ids(m.recall("toolchain", 1)), [2]);
        // "ci": lessons 2 and 3 tie at 2 points; lesson 2 has been used more.
        assert_eq!(ids(m.recall("CI ci", 5)), [2, 3]);
        assert_eq!(m.get(2).unwrap().uses, 3);
        // Among the rust-tagged: equal score, lesson 3 used more.
        assert_eq!(ids(m.recall_tagged("cargo", "RUST", 5)), [3, 1]);
        // Equal score and uses: the older first.
        let mut fresh = LongMemory::new();
        fresh.remember("alpha beta", &[] as &[&str]).unwrap();
        fresh.remember("beta alpha gamma", &[] as &[&str]).unwrap();
        assert_eq!(ids(fresh.recall("alpha", 5)), [1, 2]);
        assert_eq!(m.search("toolchain", 5).len(), 1);
        assert_eq!(m.get(2).unwrap().uses, 3, "search does not count a use");
    }
}
