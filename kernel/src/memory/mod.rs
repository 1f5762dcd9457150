//! Context memory: a process's segments, paged under its account's ceiling (the seed's
//! `memory.ts`).
//!
//! A [`Context`] holds resident segments in recency order (coldest first) and a swap of paged
//! ones. When resident tokens pass 80% of the ceiling, [`relieve`] asks the [`Pager`] which
//! segments to evict (coldest unpinned first) until 60% would be reached, moves them to swap
//! and into the [`Recaller`] index, and inserts the pager's summary segment in their place.
//! `recall` moves the best swap matches back (as the hottest) and pages again. If the pinned
//! segments alone exceed the ceiling, paging cannot help: [`MemError::Oom`], which the kernel
//! turns into a `mem` quota exit.
//!
//! **Invariant:** no lock is held while the pager summarizes (it may call an LLM); the
//! context is re-locked to insert the summary. Swap and resident orders are deterministic
//! (no hash-map iteration), so paging is reproducible in deterministic mode.

pub mod recall;
#[cfg(feature = "tantivy")]
pub mod tantivy;

pub use recall::{
    hash_embed, Bm25Recaller, Embed, KeywordRecaller, Recaller, RecallerFactory, VectorRecaller,
};

use agentos_abi::driver::BoxFuture;
use agentos_abi::{MemStats, SegId, Segment, SegmentDump, Value};
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use thiserror::Error;

/// Why a context could not be brought under its ceiling.
#[derive(Debug, Error, PartialEq, Eq, Clone, Copy)]
pub enum MemError {
    /// The pinned segments alone exceed the ceiling.
    #[error("context memory: {size} resident tokens (pinned) exceed the ceiling of {ceiling}")]
    Oom {
        /// Resident tokens after paging everything pageable.
        size: u64,
        /// The ceiling.
        ceiling: u64,
    },
}

/// Counts the tokens of a segment body when the program does not say.
pub trait TokenCounter: Send + Sync {
    /// Tokens in `body` (at least 1).
    fn count(&self, body: &Value) -> u64;
}

/// The seed's estimate: over the value's JSON text, 1.5 tokens per CJK character and one per
/// four other characters, at least 1.
#[derive(Debug, Default, Clone, Copy)]
pub struct EstimateTokens;

fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x3000..=0x9fff | 0xac00..=0xd7af | 0xf900..=0xfaff | 0xff00..=0xffef)
}

/// (characters, CJK characters) of `v`'s JSON text, computed without building it.
fn json_chars(v: &Value) -> (u64, u64) {
    fn s(t: &str) -> (u64, u64) {
        let (mut n, mut cjk) = (2u64, 0u64);
        for c in t.chars() {
            n += if matches!(c, '"' | '\\' | '\n' | '\t' | '\r') {
                2
            } else {
                1
            };
            cjk += u64::from(is_cjk(c));
        }
        (n, cjk)
    }
    match v {
        Value::Unit => (4, 0),
        Value::Bool(b) => (if *b { 4 } else { 5 }, 0),
        Value::U64(n) => (n.to_string().len() as u64, 0),
        Value::I64(n) => (n.to_string().len() as u64, 0),
        Value::F64(n) => (n.to_string().len() as u64, 0),
        Value::Str(t) => s(t),
        // Bytes serialize as an array of numbers: ~4 characters a byte.
        Value::Bytes(b) => (2 + 4 * b.len() as u64, 0),
        Value::List(items) => items.iter().fold((2, 0), |(n, c), i| {
            let (a, b) = json_chars(i);
            (n + a + 1, c + b)
        }),
        Value::Map(kv) => kv.iter().fold((2, 0), |(n, c), (k, v)| {
            let (ka, kb) = s(k);
            let (a, b) = json_chars(v);
            (n + ka + a + 2, c + kb + b)
        }),
    }
}

impl TokenCounter for EstimateTokens {
    fn count(&self, body: &Value) -> u64 {
        let (len, cjk) = json_chars(body);
        let est = (cjk as f64 * 1.5 + (len - cjk) as f64 / 4.0).ceil() as u64;
        est.max(1)
    }
}

/// A pager summarizer: given the evicted segments, the summary segment that replaces them.
pub type Summarize = Arc<dyn Fn(Vec<Segment>) -> BoxFuture<'static, SegmentDump> + Send + Sync>;

/// Decides what pages out, and what summary replaces it.
pub trait Pager: Send + Sync {
    /// From the resident segments, coldest first, the ids to evict to free `need` tokens.
    fn select(&self, coldest_first: &mut dyn Iterator<Item = &Segment>, need: u64) -> Vec<SegId>;
    /// The summary segment for `victims` (not all summaries), or `None` for no summary.
    fn summarize(&self, victims: Vec<Segment>) -> BoxFuture<'static, Option<SegmentDump>>;
}

/// The seed's pager: evict the coldest unpinned segments until `need` tokens are freed and
/// replace them with one summary segment — `{kind: "summary", of: n}` costing
/// min(48, ⌈freed/4⌉) tokens, or what the [`Summarize`] hook (e.g. an LLM) writes.
#[derive(Clone, Default)]
pub struct DefaultPager {
    summarize: Option<Summarize>,
}

impl DefaultPager {
    /// The default summary.
    pub fn new() -> Self {
        Self::default()
    }
    /// Summaries written by `f` (an LLM summarizer, say).
    pub fn with_summarizer(f: Summarize) -> Self {
        DefaultPager { summarize: Some(f) }
    }
}

impl Pager for DefaultPager {
    fn select(&self, coldest_first: &mut dyn Iterator<Item = &Segment>, need: u64) -> Vec<SegId> {
        let mut evict = Vec::new();
        let mut freed = 0;
        for s in coldest_first {
            if s.pinned {
                continue;
            }
            evict.push(s.id);
            freed += s.tokens;
            if freed >= need {
                break;
            }
        }
        evict
    }
    fn summarize(&self, victims: Vec<Segment>) -> BoxFuture<'static, Option<SegmentDump>> {
        match &self.summarize {
            Some(f) => {
                let fut = f(victims);
                Box::pin(async move { Some(fut.await) })
            }
            None => {
                let freed: u64 = victims.iter().map(|s| s.tokens).sum();
                let body = Value::Map(vec![
                    ("kind".into(), Value::Str("summary".into())),
                    ("of".into(), Value::U64(victims.len() as u64)),
                ]);
                let dump = SegmentDump {
                    body,
                    tokens: freed.div_ceil(4).min(48),
                    pinned: false,
                    summary: true,
                };
                Box::pin(std::future::ready(Some(dump)))
            }
        }
    }
}

/// How the kernel builds and pages contexts. `Default`: BM25 recall, the seed's pager and
/// token estimate.
#[derive(Clone)]
pub struct MemoryConfig {
    /// A fresh recaller for each context.
    pub recaller: RecallerFactory,
    /// The paging policy.
    pub pager: Arc<dyn Pager>,
    /// Token counting for `remember` without an explicit count.
    pub tokens: Arc<dyn TokenCounter>,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            recaller: Arc::new(|| Box::new(Bm25Recaller::new()) as Box<dyn Recaller>),
            pager: Arc::new(DefaultPager::new()),
            tokens: Arc::new(EstimateTokens),
        }
    }
}

impl MemoryConfig {
    /// The default, with the recaller `f` builds.
    pub fn with_recaller(f: impl Fn() -> Box<dyn Recaller> + Send + Sync + 'static) -> Self {
        MemoryConfig {
            recaller: Arc::new(f),
            ..Self::default()
        }
    }
}

impl fmt::Debug for MemoryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryConfig")
            .field("recaller", &(self.recaller)().name())
            .finish_non_exhaustive()
    }
}

/// One process's context memory.
pub struct Context {
    ceiling: Option<u64>,
    /// Recency sequence → segment; iteration is coldest first.
    resident: BTreeMap<u64, Segment>,
    seq_of: FxHashMap<SegId, u64>,
    next_seq: u64,
    /// Paged-out segments by id (ids grow with age, so this is oldest first).
    swap: BTreeMap<SegId, Segment>,
    size: u64,
    recaller: Box<dyn Recaller>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("stats", &self.stats())
            .field("recaller", &self.recaller.name())
            .finish()
    }
}

impl Context {
    /// An empty context under `ceiling` tokens (`None`: unlimited, nothing pages).
    pub fn new(ceiling: Option<u64>, recaller: Box<dyn Recaller>) -> Self {
        Context {
            ceiling,
            resident: BTreeMap::new(),
            seq_of: FxHashMap::default(),
            next_seq: 0,
            swap: BTreeMap::new(),
            size: 0,
            recaller,
        }
    }

    /// Rebuild a context from a dump with fresh ids from `next`, then page it under `ceiling`
    /// (the seed's `Context.from`). Fails if the pinned segments alone exceed the ceiling.
    pub async fn from_dump<N: Fn() -> SegId>(
        ceiling: Option<u64>,
        recaller: Box<dyn Recaller>,
        dump: Vec<SegmentDump>,
        pager: &dyn Pager,
        next: &N,
    ) -> Result<Context, MemError> {
        let mut c = Context::new(ceiling, recaller);
        for s in dump {
            c.insert(next(), s.body, s.tokens, s.pinned, s.summary);
        }
        let c = Mutex::new(c);
        relieve(&c, pager, next).await?;
        Ok(c.into_inner())
    }

    /// Add a resident segment as the hottest. Call [`relieve`] after.
    pub fn insert(&mut self, id: SegId, body: Value, tokens: u64, pinned: bool, summary: bool) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.size += tokens;
        self.seq_of.insert(id, seq);
        self.resident.insert(
            seq,
            Segment {
                id,
                body,
                tokens,
                pinned,
                summary,
            },
        );
    }

    /// The ceiling in tokens.
    pub fn ceiling(&self) -> Option<u64> {
        self.ceiling
    }

    /// Resident tokens.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Paging starts above this many resident tokens (80% of the ceiling).
    pub fn watermark(&self) -> Option<u64> {
        self.ceiling.map(|c| c * 8 / 10)
    }

    /// The resident segments, coldest first.
    pub fn working_set(&self) -> Vec<Segment> {
        self.resident.values().cloned().collect()
    }

    /// Move the best `k` swap matches for `query` back into the resident set (as the hottest)
    /// and return them, best first. Call [`relieve`] after.
    pub fn recall_ids(&mut self, query: &str, k: usize) -> Vec<Segment> {
        let ids = self.recaller.search(query, k);
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(s) = self.swap.remove(&id) else {
                continue;
            };
            self.recaller.remove(id);
            out.push(s.clone());
            self.insert(s.id, s.body, s.tokens, s.pinned, s.summary);
        }
        out
    }

    /// Set or clear the pinned flag of a resident segment; false if it is not resident.
    pub fn pin(&mut self, id: SegId, on: bool) -> bool {
        match self.seq_of.get(&id).and_then(|q| self.resident.get_mut(q)) {
            Some(s) => {
                s.pinned = on;
                true
            }
            None => false,
        }
    }

    /// Drop a segment, resident or swapped; false if there is none.
    pub fn forget(&mut self, id: SegId) -> bool {
        if let Some(q) = self.seq_of.remove(&id) {
            if let Some(s) = self.resident.remove(&q) {
                self.size -= s.tokens;
            }
            return true;
        }
        if self.swap.remove(&id).is_some() {
            self.recaller.remove(id);
            return true;
        }
        false
    }

    /// Paging statistics.
    pub fn stats(&self) -> MemStats {
        MemStats {
            resident: self.resident.len(),
            swapped: self.swap.len(),
            size: self.size,
            ceiling: self.ceiling,
        }
    }

    /// The durable state: resident (coldest first) then swapped segments, without ids.
    pub fn dump(&self) -> Vec<SegmentDump> {
        self.resident
            .values()
            .chain(self.swap.values())
            .map(|s| SegmentDump {
                body: s.body.clone(),
                tokens: s.tokens,
                pinned: s.pinned,
                summary: s.summary,
            })
            .collect()
    }

    /// Move `ids` from resident to swap (and the recall index); returns them.
    fn page_out(&mut self, ids: &[SegId]) -> Vec<Segment> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(q) = self.seq_of.remove(id) else {
                continue;
            };
            let Some(s) = self.resident.remove(&q) else {
                continue;
            };
            self.size -= s.tokens;
            self.recaller.index(s.id, &s.body);
            out.push(s.clone());
            self.swap.insert(s.id, s);
        }
        out
    }
}

/// Page `ctx` until it is at or under its watermark, or only pinned segments remain; then
/// fail with [`MemError::Oom`] if it is still over the ceiling. Summary segments get ids from
/// `next`. The lock is released while the pager summarizes.
pub async fn relieve<N: Fn() -> SegId>(
    ctx: &Mutex<Context>,
    pager: &dyn Pager,
    next: &N,
) -> Result<(), MemError> {
    loop {
        let (victims, before) = {
            let mut c = ctx.lock();
            let (Some(ceiling), Some(wm)) = (c.ceiling, c.watermark()) else {
                return Ok(());
            };
            if c.size <= wm {
                break;
            }
            let need = c.size - ceiling * 6 / 10;
            let evict = pager.select(&mut c.resident.values(), need);
            if evict.is_empty() {
                break;
            }
            let before = c.size;
            (c.page_out(&evict), before)
        };
        if victims.is_empty() {
            break;
        }
        if !victims.iter().all(|s| s.summary) {
            if let Some(sum) = pager.summarize(victims).await {
                ctx.lock()
                    .insert(next(), sum.body, sum.tokens, sum.pinned, true);
            }
        }
        if ctx.lock().size >= before {
            break;
        }
    }
    let c = ctx.lock();
    match c.ceiling {
        Some(ceiling) if c.size > ceiling => Err(MemError::Oom {
            size: c.size,
            ceiling,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        crate::durable::block_on(f)
    }

    fn ids() -> impl Fn() -> SegId {
        let n = AtomicU64::new(1000);
        move || SegId(n.fetch_add(1, Ordering::Relaxed))
    }

    fn ctx(ceiling: u64) -> Mutex<Context> {
        Mutex::new(Context::new(Some(ceiling), Box::new(Bm25Recaller::new())))
    }

    #[test]
    fn nothing_pages_at_or_under_the_watermark() {
        let c = ctx(100);
        let next = ids();
        for i in 0..8 {
            c.lock()
                .insert(SegId(i), Value::Str(format!("n{i}")), 10, false, false);
            block_on(relieve(&c, &DefaultPager::new(), &next)).unwrap();
        }
        assert_eq!(
            c.lock().stats(),
            MemStats {
                resident: 8,
                swapped: 0,
                size: 80,
                ceiling: Some(100)
            }
        );
    }

    #[test]
    fn over_the_watermark_pages_coldest_first_down_to_sixty_percent_plus_a_summary() {
        let c = ctx(100);
        let next = ids();
        for i in 0..9 {
            c.lock()
                .insert(SegId(i), Value::Str(format!("n{i}")), 10, i == 0, false);
        }
        block_on(relieve(&c, &DefaultPager::new(), &next)).unwrap();
        let c = c.into_inner();
        let ws = c.working_set();
        // need = 90 - 60 = 30: segments 1, 2, 3 go (0 is pinned), summary ⌈30/4⌉ = 8 tokens.
        assert_eq!(c.stats().swapped, 3);
        assert_eq!(ws.first().map(|s| s.id), Some(SegId(0)));
        assert!(ws.iter().all(|s| ![1, 2, 3].contains(&s.id.0)));
        let last = ws.last().unwrap();
        assert!(last.summary && last.tokens == 8);
        assert_eq!(c.size(), 68);
    }

    #[test]
    fn pinned_overflow_is_oom() {
        let c = ctx(50);
        for i in 0..6 {
            c.lock().insert(SegId(i), Value::Unit, 10, true, false);
        }
        let r = block_on(relieve(&c, &DefaultPager::new(), &ids()));
        assert_eq!(
            r,
            Err(MemError::Oom {
                size: 60,
                ceiling: 50
            })
        );
    }

    #[test]
    fn a_summarizer_hook_writes_the_summary() {
        let pager = DefaultPager::with_summarizer(Arc::new(|victims: Vec<Segment>| {
            let words: Vec<String> = victims
                .iter()
                .filter_map(|s| s.body.as_str().map(str::to_owned))
                .collect();
            Box::pin(async move {
                SegmentDump {
                    body: Value::Str(words.join("+")),
                    tokens: 3,
                    pinned: false,
                    summary: true,
                }
            }) as BoxFuture<'static, SegmentDump>
        }));
        // 12 tokens over a watermark of 9: evict 6 (a, b) to get down to 7, plus the summary.
        let c = ctx(12);
        for (i, w) in ["a", "b", "c", "d"].iter().enumerate() {
            c.lock()
                .insert(SegId(i as u64), Value::Str(w.to_string()), 3, false, false);
        }
        block_on(relieve(&c, &pager, &ids())).unwrap();
        let ws = c.lock().working_set();
        assert!(
            ws.iter()
                .any(|s| s.summary && s.body == Value::Str("a+b".into())),
            "{ws:?}"
        );
    }

    #[test]
    fn recall_moves_back_as_hottest_and_forget_drops_from_swap() {
        let c = ctx(100);
        let next = ids();
        c.lock()
            .insert(SegId(1), Value::Str("the zebra".into()), 50, false, false);
        c.lock()
            .insert(SegId(2), Value::Str("a giraffe".into()), 40, false, false);
        block_on(relieve(&c, &DefaultPager::new(), &next)).unwrap();
        assert_eq!(c.lock().stats().swapped, 1);
        let back = c.lock().recall_ids("zebra", 3);
        assert_eq!(
            back.iter().map(|s| s.id).collect::<Vec<_>>(),
            vec![SegId(1)]
        );
        assert_eq!(c.lock().working_set().last().map(|s| s.id), Some(SegId(1)));
        block_on(relieve(&c, &DefaultPager::new(), &next)).unwrap();
        assert!(c.lock().size() <= 80);
        let swapped: Vec<SegId> = c.lock().swap.keys().copied().collect();
        for id in swapped {
            assert!(c.lock().forget(id));
        }
        assert_eq!(c.lock().stats().swapped, 0);
        assert!(!c.lock().forget(SegId(999)));
    }

    #[test]
    fn from_dump_repages_under_a_smaller_ceiling() {
        let c = ctx(1000);
        for i in 0..10 {
            c.lock()
                .insert(SegId(i), Value::Str(format!("n{i}")), 10, i == 0, false);
        }
        let dump = c.lock().dump();
        let r = block_on(Context::from_dump(
            Some(40),
            Box::new(KeywordRecaller::new()),
            dump.clone(),
            &DefaultPager::new(),
            &ids(),
        ))
        .unwrap();
        assert!(r.size() <= 40);
        assert!(r.working_set().iter().any(|s| s.pinned));
        assert_eq!(
            r.dump().iter().filter(|s| !s.summary).count(),
            10,
            "nothing lost"
        );
        let err = block_on(Context::from_dump(
            Some(5),
            Box::new(KeywordRecaller::new()),
            dump,
            &DefaultPager::new(),
            &ids(),
        ));
        assert!(matches!(err, Err(MemError::Oom { .. })));
    }

    #[test]
    fn the_token_estimate_follows_the_seed() {
        let t = EstimateTokens;
        // "hello world" as JSON is 13 characters: ⌈13/4⌉ = 4.
        assert_eq!(t.count(&Value::Str("hello world".into())), 4);
        // Two CJK characters + 2 quotes: ⌈2·1.5 + 2/4⌉ = 4.
        assert_eq!(t.count(&Value::Str("東京".into())), 4);
        assert_eq!(t.count(&Value::Unit), 1);
    }
}
