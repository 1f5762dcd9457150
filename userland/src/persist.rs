//! File persistence shared by the learning stores: a keyed table kept in memory and written out
//! whole, as JSON lines, with an atomic replace (write a temporary file beside the target, sync
//! it, rename it over the target, sync the directory). A reader therefore sees either the old
//! file or the new one, never a torn write; a crash leaves at most a stray temporary file, which
//! the next write replaces.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why a store could not load or save.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// A stored record could not be read back (the store refuses to load rather than drop it).
    #[error("{path}:{line}: not a stored record: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The 1-based line (or document number, for an index).
        line: usize,
        /// Why.
        reason: String,
    },
    /// A search index failed.
    #[error("index {path}: {reason}")]
    Index {
        /// The index directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl StoreError {
    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        StoreError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// The temporary file a write goes through: `.<name>.tmp` beside the target.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "store".to_owned());
    path.with_file_name(format!(".{name}.tmp"))
}

/// Replace `path` with `bytes` atomically (temp file, fsync, rename, fsync of the directory).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
    let tmp = temp_path(path);
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(StoreError::io(&tmp, e));
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(StoreError::io(path, e));
    }
    // The rename is durable once the directory entry is; not every platform can sync a
    // directory, and the data itself is already synced, so a failure here is not an error.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Read a JSON-lines file: one record per non-blank line; a missing file is empty. A line that
/// does not parse is [`StoreError::Corrupt`].
pub(crate) fn read_json_lines<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>, StoreError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(path, e)),
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row = serde_json::from_str(line).map_err(|e| StoreError::Corrupt {
            path: path.to_owned(),
            line: i + 1,
            reason: e.to_string(),
        })?;
        out.push(row);
    }
    Ok(out)
}

/// A keyed table persisted as a JSON-lines file, in key order, rewritten atomically on change.
#[derive(Debug)]
pub(crate) struct JsonLinesTable<K, T> {
    path: PathBuf,
    rows: BTreeMap<K, T>,
}

impl<K: Ord + Clone, T: Serialize + DeserializeOwned + Clone> JsonLinesTable<K, T> {
    /// Open the table at `path` (created on the first write), keying rows by `key`. Later rows
    /// with an earlier row's key replace it.
    pub(crate) fn open(
        path: impl Into<PathBuf>,
        key: impl Fn(&T) -> K,
    ) -> Result<Self, StoreError> {
        let path = path.into();
        let rows = read_json_lines::<T>(&path)?
            .into_iter()
            .map(|r| (key(&r), r))
            .collect();
        Ok(JsonLinesTable { path, rows })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Every row, in key order.
    pub(crate) fn rows(&self) -> Vec<T> {
        self.rows.values().cloned().collect()
    }

    /// Insert or replace `rows` and write the file; on failure the table is unchanged.
    pub(crate) fn upsert(
        &mut self,
        rows: impl IntoIterator<Item = (K, T)>,
    ) -> Result<(), StoreError> {
        let mut next = self.rows.clone();
        next.extend(rows);
        let mut text = String::new();
        for row in next.values() {
            let line = serde_json::to_string(row).map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                line: 0,
                reason: format!("cannot encode a record: {e}"),
            })?;
            text.push_str(&line);
            text.push('\n');
        }
        write_atomic(&self.path, text.as_bytes())?;
        self.rows = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_atomically_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("t.jsonl");
        let mut t: JsonLinesTable<u64, (u64, String)> =
            JsonLinesTable::open(&path, |r: &(u64, String)| r.0).unwrap();
        assert!(t.rows().is_empty());
        t.upsert([(2, (2, "b".into())), (1, (1, "a".into()))])
            .unwrap();
        t.upsert([(2, (2, "B".into()))]).unwrap();
        let again: JsonLinesTable<u64, (u64, String)> =
            JsonLinesTable::open(&path, |r: &(u64, String)| r.0).unwrap();
        assert_eq!(again.rows(), vec![(1, "a".into()), (2, "B".into())]);
        assert!(
            !temp_path(&path).exists(),
            "no temporary file is left behind"
        );
    }

    #[test]
    fn a_bad_line_is_reported_with_its_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        fs::write(&path, "[1,\"a\"]\n\n{oops\n").unwrap();
        let err = read_json_lines::<(u64, String)>(&path).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { line: 3, .. }), "{err}");
    }
}
