//! Recallers: the indexes over swapped (paged-out) segments that `recall` searches.
//!
//! A [`Recaller`] indexes a segment when it pages out and forgets it when it comes back or is
//! forgotten, so its candidates are exactly the swap. Four are here, behind the one trait:
//! [`KeywordRecaller`] (the seed's substring count), [`Bm25Recaller`] (BM25 over an inverted
//! index: the default, since it answers in time proportional to the query's postings rather
//! than the swap size), [`VectorRecaller`] (cosine over a pluggable [`Embed`], the seed's
//! hashed bag of words by default) and, with the `tantivy` feature, `TantivyRecaller`.
//!
//! Ranking ties break by segment id (older first) so results are deterministic.

use agentos_abi::{SegId, Value};
use rustc_hash::FxHashMap;
use std::sync::Arc;

/// An index over swapped segments.
pub trait Recaller: Send {
    /// A short name for reports (`"bm25"`, …).
    fn name(&self) -> &'static str;
    /// Index a segment that just paged out.
    fn index(&mut self, id: SegId, body: &Value);
    /// Drop a segment (recalled or forgotten); unknown ids are ignored.
    fn remove(&mut self, id: SegId);
    /// The ids of the best `k` matches for `query`, best first; only positive matches.
    fn search(&mut self, query: &str, k: usize) -> Vec<SegId>;
    /// Segments indexed.
    fn len(&self) -> usize;
    /// Whether nothing is indexed.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Builds a fresh recaller for each process's context.
pub type RecallerFactory = Arc<dyn Fn() -> Box<dyn Recaller> + Send + Sync>;

/// The text a segment is searched by: a string as is, any other value's strings and numbers
/// joined by spaces (the seed uses the JSON text; words are what matter), lowercased.
pub fn seg_text(body: &Value) -> String {
    fn walk(v: &Value, out: &mut String) {
        match v {
            Value::Unit => {}
            Value::Bool(b) => push_word(out, if *b { "true" } else { "false" }),
            Value::U64(n) => push_word(out, &n.to_string()),
            Value::I64(n) => push_word(out, &n.to_string()),
            Value::F64(n) => push_word(out, &n.to_string()),
            Value::Str(s) => push_word(out, s),
            Value::Bytes(_) => {}
            Value::List(items) => items.iter().for_each(|i| walk(i, out)),
            Value::Map(kv) => {
                for (k, v) in kv {
                    push_word(out, k);
                    walk(v, out);
                }
            }
        }
    }
    fn push_word(out: &mut String, w: &str) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    let mut s = String::new();
    walk(body, &mut s);
    s.to_lowercase()
}

/// Split text into lowercase terms: maximal runs of alphanumeric characters (CJK included).
pub fn terms(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
}

/// Sort (score, id) pairs best first, ties by id, keep `k`.
fn top_k<S: PartialOrd + Copy>(mut scored: Vec<(S, SegId)>, k: usize) -> Vec<SegId> {
    let by = |a: &(S, SegId), b: &(S, SegId)| {
        b.0.partial_cmp(&a.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.1.cmp(&b.1))
    };
    if scored.len() > k && k > 0 {
        scored.select_nth_unstable_by(k - 1, by);
        scored.truncate(k);
    }
    scored.sort_unstable_by(by);
    scored.truncate(k);
    scored.into_iter().map(|(_, id)| id).collect()
}

/// The seed's keyword recaller: a segment scores the number of query terms its text contains
/// (as substrings). Linear in the swap; fine for small contexts.
#[derive(Default)]
pub struct KeywordRecaller {
    text: FxHashMap<SegId, String>,
}

impl KeywordRecaller {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Recaller for KeywordRecaller {
    fn name(&self) -> &'static str {
        "keyword"
    }
    fn index(&mut self, id: SegId, body: &Value) {
        self.text.insert(id, seg_text(body));
    }
    fn remove(&mut self, id: SegId) {
        self.text.remove(&id);
    }
    fn search(&mut self, query: &str, k: usize) -> Vec<SegId> {
        let q: Vec<String> = terms(query).collect();
        let scored = self
            .text
            .iter()
            .map(|(id, t)| (q.iter().filter(|w| t.contains(w.as_str())).count(), *id))
            .filter(|(n, _)| *n > 0)
            .collect();
        top_k(scored, k)
    }
    fn len(&self) -> usize {
        self.text.len()
    }
}

struct Bm25Doc {
    id: SegId,
    len: u32,
    /// Distinct term ids of the document (to unlink its postings on removal).
    terms: Vec<u32>,
}

/// BM25 (k1 = 1.5, b = 0.75, the seed's parameters) over an inverted index: a query touches
/// only the postings of its own terms, so latency does not grow with the swap as a scan would.
pub struct Bm25Recaller {
    vocab: FxHashMap<Box<str>, u32>,
    /// term id → (doc slot, term frequency).
    postings: Vec<Vec<(u32, u32)>>,
    docs: Vec<Option<Bm25Doc>>,
    free: Vec<u32>,
    slot_of: FxHashMap<SegId, u32>,
    total_len: u64,
    k1: f32,
    b: f32,
}

impl Default for Bm25Recaller {
    fn default() -> Self {
        Bm25Recaller {
            vocab: FxHashMap::default(),
            postings: Vec::new(),
            docs: Vec::new(),
            free: Vec::new(),
            slot_of: FxHashMap::default(),
            total_len: 0,
            k1: 1.5,
            b: 0.75,
        }
    }
}

impl Bm25Recaller {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Recaller for Bm25Recaller {
    fn name(&self) -> &'static str {
        "bm25"
    }
    fn index(&mut self, id: SegId, body: &Value) {
        if self.slot_of.contains_key(&id) {
            self.remove(id);
        }
        let text = seg_text(body);
        let mut tf: FxHashMap<u32, u32> = FxHashMap::default();
        let mut len = 0u32;
        for w in terms(&text) {
            len += 1;
            let next = self.vocab.len() as u32;
            let t = *self.vocab.entry(w.into_boxed_str()).or_insert(next);
            if t as usize == self.postings.len() {
                self.postings.push(Vec::new());
            }
            *tf.entry(t).or_insert(0) += 1;
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.docs.push(None);
                (self.docs.len() - 1) as u32
            }
        };
        let mut dterms = Vec::with_capacity(tf.len());
        for (t, n) in tf {
            self.postings[t as usize].push((slot, n));
            dterms.push(t);
        }
        self.docs[slot as usize] = Some(Bm25Doc {
            id,
            len,
            terms: dterms,
        });
        self.slot_of.insert(id, slot);
        self.total_len += u64::from(len);
    }
    fn remove(&mut self, id: SegId) {
        let Some(slot) = self.slot_of.remove(&id) else {
            return;
        };
        let Some(doc) = self.docs[slot as usize].take() else {
            return;
        };
        for t in doc.terms {
            let list = &mut self.postings[t as usize];
            if let Some(i) = list.iter().position(|(s, _)| *s == slot) {
                list.swap_remove(i);
            }
        }
        self.total_len -= u64::from(doc.len);
        self.free.push(slot);
    }
    fn search(&mut self, query: &str, k: usize) -> Vec<SegId> {
        let n = self.slot_of.len().max(1) as f32;
        let avg = (self.total_len as f32 / n).max(1.0);
        let mut qt: Vec<u32> = terms(query)
            .filter_map(|w| self.vocab.get(w.as_str()).copied())
            .collect();
        qt.sort_unstable();
        qt.dedup();
        let mut acc: FxHashMap<u32, f32> = FxHashMap::default();
        for t in qt {
            let list = &self.postings[t as usize];
            if list.is_empty() {
                continue;
            }
            let df = list.len() as f32;
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            for &(slot, tf) in list {
                let Some(d) = &self.docs[slot as usize] else {
                    continue;
                };
                let tf = tf as f32;
                let norm = self.k1 * (1.0 - self.b + self.b * d.len as f32 / avg);
                *acc.entry(slot).or_insert(0.0) += idf * (tf * (self.k1 + 1.0)) / (tf + norm);
            }
        }
        let scored = acc
            .into_iter()
            .filter(|(_, s)| *s > 0.0)
            .filter_map(|(slot, s)| self.docs[slot as usize].as_ref().map(|d| (s, d.id)))
            .collect();
        top_k(scored, k)
    }
    fn len(&self) -> usize {
        self.slot_of.len()
    }
}

/// A text embedding for [`VectorRecaller`]: returns a unit-length (or zero) vector; every
/// call must return the same dimension.
pub type Embed = Arc<dyn Fn(&str) -> Vec<f32> + Send + Sync>;

/// The seed's default embedding: a bag of words hashed (FNV-1a) into `dim` buckets, L2-normalized.
pub fn hash_embed(dim: usize) -> Embed {
    let dim = dim.max(1);
    Arc::new(move |text: &str| {
        let mut v = vec![0f32; dim];
        for w in terms(text) {
            let mut x: u32 = 2_166_136_261;
            for c in w.encode_utf16() {
                x ^= u32::from(c);
                x = x.wrapping_mul(16_777_619);
            }
            v[x as usize % dim] += 1.0;
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    })
}

/// Cosine similarity over embeddings (the seed's `VectorRecaller`). Linear in the swap.
pub struct VectorRecaller {
    embed: Embed,
    vecs: FxHashMap<SegId, Vec<f32>>,
}

impl VectorRecaller {
    /// With the given embedding.
    pub fn new(embed: Embed) -> Self {
        VectorRecaller {
            embed,
            vecs: FxHashMap::default(),
        }
    }
}

impl Default for VectorRecaller {
    /// The seed's 64-bucket hash embedding.
    fn default() -> Self {
        VectorRecaller::new(hash_embed(64))
    }
}

impl Recaller for VectorRecaller {
    fn name(&self) -> &'static str {
        "vector"
    }
    fn index(&mut self, id: SegId, body: &Value) {
        let v = (self.embed)(&seg_text(body));
        self.vecs.insert(id, v);
    }
    fn remove(&mut self, id: SegId) {
        self.vecs.remove(&id);
    }
    fn search(&mut self, query: &str, k: usize) -> Vec<SegId> {
        let q = (self.embed)(&query.to_lowercase());
        let scored = self
            .vecs
            .iter()
            .filter(|(_, v)| v.len() == q.len())
            .map(|(id, v)| (v.iter().zip(&q).map(|(a, b)| a * b).sum::<f32>(), *id))
            .filter(|(s, _)| *s > 0.0)
            .collect();
        top_k(scored, k)
    }
    fn len(&self) -> usize {
        self.vecs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(r: &mut dyn Recaller) {
        let docs = [
            "the zebra migrates across the serengeti every year",
            "compilers turn source code into machine code",
            "dolphins sleep with one half of the brain",
            "bridges are built from steel and concrete",
            "an estuary is where a river meets the sea",
        ];
        for (i, d) in docs.iter().enumerate() {
            r.index(SegId(i as u64 + 1), &Value::Str(d.to_string()));
        }
        for i in 0..50u64 {
            r.index(
                SegId(100 + i),
                &Value::Str(format!("filler note number {i} about nothing")),
            );
        }
    }

    fn ranks_the_obvious_match_first(mut r: Box<dyn Recaller>) {
        corpus(r.as_mut());
        assert_eq!(r.len(), 55);
        assert_eq!(
            r.search("zebra serengeti", 3).first(),
            Some(&SegId(1)),
            "{}",
            r.name()
        );
        assert_eq!(
            r.search("machine code compilers", 3).first(),
            Some(&SegId(2)),
            "{}",
            r.name()
        );
        assert_eq!(r.search("river sea", 1), vec![SegId(5)], "{}", r.name());
        if r.name() != "vector" {
            // (Hashed embeddings collide, so the vector recaller may still score a miss.)
            assert!(
                r.search("xylophone", 3).is_empty(),
                "{}: no match, no result",
                r.name()
            );
        }
        r.remove(SegId(1));
        assert!(
            !r.search("zebra", 3).contains(&SegId(1)),
            "{}: removed",
            r.name()
        );
        assert_eq!(r.len(), 54);
    }

    #[test]
    fn keyword_ranks_the_obvious_match_first() {
        ranks_the_obvious_match_first(Box::new(KeywordRecaller::new()));
    }

    #[test]
    fn bm25_ranks_the_obvious_match_first() {
        ranks_the_obvious_match_first(Box::new(Bm25Recaller::new()));
    }

    #[test]
    fn vector_ranks_the_obvious_match_first() {
        ranks_the_obvious_match_first(Box::new(VectorRecaller::default()));
    }

    #[test]
    fn bm25_reuses_slots_and_keeps_postings_consistent() {
        let mut r = Bm25Recaller::new();
        for round in 0..3u64 {
            for i in 0..20u64 {
                r.index(
                    SegId(round * 100 + i),
                    &Value::Str(format!("alpha beta w{i}")),
                );
            }
            for i in 0..20u64 {
                r.remove(SegId(round * 100 + i));
            }
        }
        assert_eq!(r.len(), 0);
        assert!(r.search("alpha", 5).is_empty());
        assert_eq!(r.docs.len(), 20, "slots are reused");
        r.index(SegId(7), &Value::Str("alpha".into()));
        r.index(SegId(7), &Value::Str("gamma".into()));
        assert_eq!(r.search("gamma", 5), vec![SegId(7)]);
        assert!(r.search("alpha", 5).is_empty(), "re-index replaces");
    }

    #[test]
    fn structured_bodies_are_searched_by_their_words() {
        let mut r = Bm25Recaller::new();
        let body = Value::Map(vec![
            ("role".into(), Value::Str("user".into())),
            ("text".into(), Value::Str("Where is the Lighthouse?".into())),
        ]);
        r.index(SegId(1), &body);
        r.index(SegId(2), &Value::Str("unrelated".into()));
        assert_eq!(r.search("lighthouse", 2), vec![SegId(1)]);
    }

    #[test]
    fn cjk_text_is_tokenized() {
        let mut r = KeywordRecaller::new();
        r.index(SegId(1), &Value::Str("東京 タワー".into()));
        r.index(SegId(2), &Value::Str("大阪".into()));
        assert_eq!(r.search("東京", 2), vec![SegId(1)]);
    }
}
