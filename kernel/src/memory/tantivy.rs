//! A tantivy-backed recaller for large swaps (feature `tantivy`).
//!
//! Segments are documents in an in-RAM tantivy index (an `id` fast field and a `text` field);
//! removals are delete-by-term. Writes are batched: the index commits and the reader reloads
//! only when a search follows a change, so a burst of page-outs costs one commit. Tantivy's
//! tokenizer lowercases and splits like [`super::recall::terms`]; ranking is tantivy's BM25.
//! An index error never panics: it is logged with `tracing` and the search returns nothing.

use super::recall::{seg_text, Recaller};
use agentos_abi::{SegId, Value};
use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::{Field, Schema, FAST, INDEXED, TEXT};
use tantivy::{doc, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

/// BM25 through tantivy's inverted index.
pub struct TantivyRecaller {
    index: Index,
    writer: IndexWriter<TantivyDocument>,
    reader: IndexReader,
    id: Field,
    text: Field,
    dirty: bool,
    len: usize,
    ids: rustc_hash::FxHashSet<SegId>,
}

/// Why the tantivy index could not be built.
#[derive(Debug, thiserror::Error)]
#[error("tantivy recaller: {0}")]
pub struct TantivyError(String);

impl TantivyRecaller {
    /// An empty in-RAM index (one indexing thread, a 15 MB writer arena).
    pub fn new() -> Result<Self, TantivyError> {
        let mut sb = Schema::builder();
        let id = sb.add_u64_field("id", INDEXED | FAST);
        let text = sb.add_text_field("text", TEXT);
        let index = Index::create_in_ram(sb.build());
        let e = |e: tantivy::TantivyError| TantivyError(e.to_string());
        let writer = index.writer_with_num_threads(1, 15_000_000).map_err(e)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(e)?;
        Ok(TantivyRecaller {
            index,
            writer,
            reader,
            id,
            text,
            dirty: false,
            len: 0,
            ids: Default::default(),
        })
    }

    fn refresh(&mut self) -> tantivy::Result<()> {
        if self.dirty {
            self.writer.commit()?;
            self.reader.reload()?;
            self.dirty = false;
        }
        Ok(())
    }

    fn try_search(&mut self, query: &str, k: usize) -> tantivy::Result<Vec<SegId>> {
        self.refresh()?;
        let words: Vec<String> = super::recall::terms(query).collect();
        if words.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let parser = QueryParser::for_index(&self.index, vec![self.text]);
        // Plain words only: the query language's operators are not the program's to use.
        let (q, _errors) = parser.parse_query_lenient(&words.join(" "));
        let searcher = self.reader.searcher();
        let top = searcher.search(&q, &TopDocs::with_limit(k).order_by_score())?;
        let mut out = Vec::with_capacity(top.len());
        for (_score, addr) in top {
            let col = searcher
                .segment_reader(addr.segment_ord)
                .fast_fields()
                .u64("id")?;
            if let Some(v) = col.first(addr.doc_id) {
                out.push(SegId(v));
            }
        }
        Ok(out)
    }
}

impl Recaller for TantivyRecaller {
    fn name(&self) -> &'static str {
        "tantivy"
    }
    fn index(&mut self, id: SegId, body: &Value) {
        if self.ids.contains(&id) {
            self.remove(id);
        }
        let r = self
            .writer
            .add_document(doc!(self.id => id.0, self.text => seg_text(body)));
        match r {
            Ok(_) => {
                self.ids.insert(id);
                self.len += 1;
                self.dirty = true;
            }
            Err(e) => tracing::warn!("tantivy recaller: index {}: {e}", id.0),
        }
    }
    fn remove(&mut self, id: SegId) {
        if self.ids.remove(&id) {
            self.writer.delete_term(Term::from_field_u64(self.id, id.0));
            self.len -= 1;
            self.dirty = true;
        }
    }
    fn search(&mut self, query: &str, k: usize) -> Vec<SegId> {
        match self.try_search(query, k) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("tantivy recaller: search: {e}");
                Vec::new()
            }
        }
    }
    fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tantivy_ranks_the_obvious_match_first_and_forgets_removed() {
        let mut r = TantivyRecaller::new().unwrap();
        r.index(
            SegId(1),
            &Value::Str("the zebra migrates across the serengeti".into()),
        );
        r.index(
            SegId(2),
            &Value::Str("compilers turn source into machine code".into()),
        );
        for i in 0..40u64 {
            r.index(
                SegId(100 + i),
                &Value::Str(format!("filler note {i} about nothing")),
            );
        }
        assert_eq!(r.search("zebra serengeti", 3).first(), Some(&SegId(1)));
        assert_eq!(r.search("machine code", 1), vec![SegId(2)]);
        assert!(r.search("xylophone", 3).is_empty());
        r.remove(SegId(1));
        assert!(!r.search("zebra", 3).contains(&SegId(1)));
        assert_eq!(r.len(), 41);
        // Query syntax in the program's text is just words.
        assert_eq!(r.search("compilers:(( AND \"", 3), vec![SegId(2)]);
    }
}
