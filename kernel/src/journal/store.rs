//! Stores: where journal records live. In memory, or an append-only file of checksummed
//! postcard frames with group commit.
//!
//! File format: an 8-byte header (`AOSJ` + `ABI_VERSION` as u32 LE), then frames
//! `[u32 LE payload length][u32 LE crc32(payload)][postcard payload]`. Opening scans the frames
//! and truncates at the first one that is incomplete, oversized, fails its checksum or does not
//! decode — a torn tail from a crash is cut, never misread. Appends go through a large buffer;
//! group commit writes it out after `every_records` appends or `every_ms` since the last commit
//! (checked at append time) and asks the store's sync thread to `fdatasync`, so the appending
//! process never waits on the disk; requests that pile up while a sync runs are served by the
//! next one. `flush` (and drop) commits and waits until the data is durable.

use super::Record;
use agentos_abi::ABI_VERSION;
use parking_lot::Mutex;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use thiserror::Error;

const MAGIC: &[u8; 4] = b"AOSJ";
const HEADER: u64 = 8;
const MAX_FRAME: u32 = 16 << 20;

/// A store failure.
#[derive(Debug, Error)]
pub enum StoreError {
    /// An I/O error, with what was being done to which file.
    #[error("{op} {path}: {err}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        err: std::io::Error,
    },
    /// The file is not a journal (bad magic); it is left untouched.
    #[error("{path}: not an agentos journal (bad header)")]
    NotAJournal {
        /// The file.
        path: PathBuf,
    },
    /// Written under another ABI version.
    #[error("journal written under ABI v{found}, this kernel is v{expected}")]
    Version {
        /// The file's version.
        found: u32,
        /// Ours.
        expected: u32,
    },
    /// A record could not be encoded.
    #[error("encode: {0}")]
    Encode(String),
}

/// Counters of a store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Records held (loaded at open plus appended).
    pub records: u64,
    /// Bytes on disk (or encoded, in memory).
    pub bytes: u64,
    /// Group commits: buffer written out and a sync requested (by policy or `flush`).
    pub commits: u64,
    /// fsyncs done (at most `commits`: concurrent requests share one).
    pub fsyncs: u64,
    /// The longest single fsync, in µs.
    pub fsync_max_us: u64,
    /// All fsyncs together, in µs.
    pub fsync_total_us: u64,
}

/// Where journal records go.
pub trait Store: Send {
    /// Append one record (buffered; durable per the store's policy).
    fn append(&mut self, rec: &Record) -> Result<(), StoreError>;
    /// Make everything appended so far durable.
    fn flush(&mut self) -> Result<(), StoreError>;
    /// Every complete, valid record, in order.
    fn load(&mut self) -> Result<Vec<Record>, StoreError>;
    /// Counters.
    fn stats(&self) -> StoreStats;
}

/// An in-memory store. Clones share the same records, so a test can keep a handle after giving
/// one to a kernel.
#[derive(Clone, Default)]
pub struct MemoryStore {
    recs: Arc<Mutex<Vec<Record>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemoryStore {
    fn append(&mut self, rec: &Record) -> Result<(), StoreError> {
        self.recs.lock().push(rec.clone());
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    fn load(&mut self) -> Result<Vec<Record>, StoreError> {
        Ok(self.recs.lock().clone())
    }
    fn stats(&self) -> StoreStats {
        StoreStats {
            records: self.recs.lock().len() as u64,
            ..StoreStats::default()
        }
    }
}

/// Group-commit policy. Both `None`: only explicit `flush` syncs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsyncPolicy {
    /// Sync after this many appends.
    pub every_records: Option<u32>,
    /// Sync when this many ms have passed since the last sync (checked at append time).
    pub every_ms: Option<u64>,
}

impl Default for FsyncPolicy {
    /// Every 4,096 records or 5 ms, whichever comes first: while records flow, at most 5 ms
    /// (or 4,096 records) of work is exposed to a power loss; `flush` closes the gap.
    fn default() -> Self {
        FsyncPolicy {
            every_records: Some(4096),
            every_ms: Some(5),
        }
    }
}

/// What opening a file store found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Complete records kept.
    pub records: u64,
    /// Bytes of torn or corrupt tail cut off.
    pub truncated_bytes: u64,
}

/// The sync thread's shared state: commit generations requested and made durable.
#[derive(Default)]
struct SyncState {
    requested: u64,
    durable: u64,
    fsyncs: u64,
    max_us: u64,
    total_us: u64,
    error: Option<String>,
    stop: bool,
}

#[derive(Default)]
struct Syncer {
    state: Mutex<SyncState>,
    cv: parking_lot::Condvar,
}

impl Syncer {
    /// The sync thread: fdatasync whenever a generation newer than the durable one is asked
    /// for; one sync covers every request made before it started.
    fn run(&self, file: File) {
        let mut st = self.state.lock();
        loop {
            while st.requested == st.durable && !st.stop {
                self.cv.wait(&mut st);
            }
            if st.requested == st.durable && st.stop {
                return;
            }
            let target = st.requested;
            drop(st);
            let t = Instant::now();
            let r = file.sync_data();
            let us = t.elapsed().as_micros() as u64;
            st = self.state.lock();
            st.fsyncs += 1;
            st.max_us = st.max_us.max(us);
            st.total_us += us;
            if let Err(e) = r {
                st.error.get_or_insert(e.to_string());
            }
            st.durable = target;
            self.cv.notify_all();
        }
    }
}

/// An append-only file of checksummed frames.
pub struct FileStore {
    path: PathBuf,
    out: BufWriter<File>,
    policy: FsyncPolicy,
    buf: Vec<u8>,
    since_sync: u32,
    last_sync: Instant,
    stats: StoreStats,
    syncer: Arc<Syncer>,
    sync_thread: Option<std::thread::JoinHandle<()>>,
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |err| StoreError::Io {
        op,
        path: path.to_owned(),
        err,
    }
}

/// Scan frames after the header; returns (records, end offset of the last good frame).
fn scan(bytes: &[u8]) -> (Vec<Record>, u64) {
    let mut recs = Vec::new();
    let mut at = HEADER as usize;
    while let Some(head) = bytes.get(at..at + 8) {
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len > MAX_FRAME {
            break;
        }
        let Some(payload) = bytes.get(at + 8..at + 8 + len as usize) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        match postcard::from_bytes::<Record>(payload) {
            Ok(r) => recs.push(r),
            Err(_) => break,
        }
        at += 8 + len as usize;
    }
    (recs, at as u64)
}

impl FileStore {
    /// Open (or create) a journal file, truncating any torn tail, positioned to append.
    pub fn open(
        path: impl AsRef<Path>,
        policy: FsyncPolicy,
    ) -> Result<(Self, OpenReport), StoreError> {
        let path = path.as_ref().to_owned();
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("open", &path))?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).map_err(io("read", &path))?;
        let mut report = OpenReport::default();
        let mut keep;
        if (bytes.len() as u64) < HEADER {
            // Empty, or a header torn by a crash during creation: start afresh.
            report.truncated_bytes = bytes.len() as u64;
            f.set_len(0).map_err(io("truncate", &path))?;
            f.seek(SeekFrom::Start(0)).map_err(io("seek", &path))?;
            f.write_all(MAGIC).map_err(io("write", &path))?;
            f.write_all(&ABI_VERSION.to_le_bytes())
                .map_err(io("write", &path))?;
            f.sync_data().map_err(io("sync", &path))?;
            keep = HEADER;
        } else {
            if &bytes[..4] != MAGIC {
                return Err(StoreError::NotAJournal { path });
            }
            let v = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
            if v != ABI_VERSION {
                return Err(StoreError::Version {
                    found: v,
                    expected: ABI_VERSION,
                });
            }
            let (recs, end) = scan(&bytes);
            report.records = recs.len() as u64;
            keep = end;
            if end < bytes.len() as u64 {
                report.truncated_bytes = bytes.len() as u64 - end;
                f.set_len(end).map_err(io("truncate", &path))?;
                f.sync_data().map_err(io("sync", &path))?;
            }
        }
        f.seek(SeekFrom::Start(keep)).map_err(io("seek", &path))?;
        keep = keep.max(HEADER);
        let syncer = Arc::new(Syncer::default());
        let sync_file = f.try_clone().map_err(io("dup", &path))?;
        let s2 = syncer.clone();
        let sync_thread = std::thread::Builder::new()
            .name("agentos-journal-sync".into())
            .spawn(move || s2.run(sync_file))
            .map_err(io("spawn sync thread for", &path))?;
        let store = FileStore {
            out: BufWriter::with_capacity(1 << 20, f),
            path,
            policy,
            buf: Vec::with_capacity(256),
            since_sync: 0,
            last_sync: Instant::now(),
            stats: StoreStats {
                records: report.records,
                bytes: keep,
                ..StoreStats::default()
            },
            syncer,
            sync_thread: Some(sync_thread),
        };
        Ok((store, report))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Group commit: write the buffer out and ask the sync thread for an fdatasync; returns
    /// the generation that will be durable. A failure of an earlier sync surfaces here.
    fn commit(&mut self) -> Result<u64, StoreError> {
        self.out.flush().map_err(io("write", &self.path))?;
        self.stats.commits += 1;
        self.since_sync = 0;
        self.last_sync = Instant::now();
        let mut st = self.syncer.state.lock();
        if let Some(e) = st.error.take() {
            return Err(StoreError::Io {
                op: "sync",
                path: self.path.clone(),
                err: std::io::Error::other(e),
            });
        }
        st.requested += 1;
        self.syncer.cv.notify_all();
        Ok(st.requested)
    }

    /// Block until generation `g` is durable.
    fn wait_durable(&self, g: u64) -> Result<(), StoreError> {
        let mut st = self.syncer.state.lock();
        while st.durable < g {
            self.syncer.cv.wait(&mut st);
        }
        match st.error.take() {
            Some(e) => Err(StoreError::Io {
                op: "sync",
                path: self.path.clone(),
                err: std::io::Error::other(e),
            }),
            None => Ok(()),
        }
    }
}

impl Store for FileStore {
    fn append(&mut self, rec: &Record) -> Result<(), StoreError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let buf = postcard::to_extend(rec, buf).map_err(|e| StoreError::Encode(e.to_string()))?;
        let len = buf.len() as u32;
        let mut head = [0u8; 8];
        head[..4].copy_from_slice(&len.to_le_bytes());
        head[4..].copy_from_slice(&crc32fast::hash(&buf).to_le_bytes());
        let w = self
            .out
            .write_all(&head)
            .and_then(|_| self.out.write_all(&buf));
        self.buf = buf;
        w.map_err(io("write", &self.path))?;
        self.stats.records += 1;
        self.stats.bytes += 8 + len as u64;
        self.since_sync += 1;
        let due_n = self
            .policy
            .every_records
            .is_some_and(|n| self.since_sync >= n);
        let due_t = self
            .policy
            .every_ms
            .is_some_and(|ms| self.last_sync.elapsed().as_millis() as u64 >= ms);
        if due_n || due_t {
            self.commit()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        let g = if self.since_sync > 0 {
            self.commit()?
        } else {
            self.syncer.state.lock().requested
        };
        self.wait_durable(g)
    }

    fn load(&mut self) -> Result<Vec<Record>, StoreError> {
        self.out.flush().map_err(io("write", &self.path))?;
        let mut bytes = Vec::new();
        let mut f = File::open(&self.path).map_err(io("open", &self.path))?;
        f.read_to_end(&mut bytes).map_err(io("read", &self.path))?;
        if bytes.len() < HEADER as usize {
            return Ok(Vec::new());
        }
        Ok(scan(&bytes).0)
    }

    fn stats(&self) -> StoreStats {
        let st = self.syncer.state.lock();
        StoreStats {
            fsyncs: st.fsyncs,
            fsync_max_us: st.max_us,
            fsync_total_us: st.total_us,
            ..self.stats
        }
    }
}

impl Drop for FileStore {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::error!("journal flush on drop failed: {e}");
        }
        self.syncer.state.lock().stop = true;
        self.syncer.cv.notify_all();
        if let Some(t) = self.sync_thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{IoResult, Journal};
    use agentos_abi::{Cost, Reply, Value};

    fn tmp(tag: &str) -> PathBuf {
        let mut p = std::env::temp_dir();
        p.push(format!("agentos-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    fn rec(i: u64) -> Record {
        let result = if i % 7 == 3 {
            IoResult::Err(format!("failure {i}"))
        } else {
            IoResult::Ok(Reply {
                value: Value::Bytes(bytes::Bytes::from(vec![i as u8; 64])),
                cost: Cost {
                    tokens: i,
                    ..Cost::FREE
                },
            })
        };
        Record::Io {
            pid: 1 + i % 3,
            op: i,
            result,
        }
    }

    #[test]
    fn file_store_round_trips_and_reopen_appends_after_existing_frames() {
        let p = tmp("roundtrip");
        {
            let (mut s, r) = FileStore::open(&p, FsyncPolicy::default()).unwrap();
            assert_eq!(r, OpenReport::default());
            for i in 0..10 {
                s.append(&rec(i)).unwrap();
            }
        }
        let (mut s, r) = FileStore::open(&p, FsyncPolicy::default()).unwrap();
        assert_eq!(
            r,
            OpenReport {
                records: 10,
                truncated_bytes: 0
            }
        );
        for i in 10..15 {
            s.append(&rec(i)).unwrap();
        }
        assert_eq!(s.load().unwrap(), (0..15).map(rec).collect::<Vec<_>>());
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn truncated_at_every_byte_offset_opens_cleanly_and_keeps_every_complete_frame() {
        let p = tmp("every-offset");
        let mut ends = vec![];
        {
            let (mut s, _) = FileStore::open(&p, FsyncPolicy::default()).unwrap();
            for i in 0..20 {
                s.append(&rec(i)).unwrap();
                s.flush().unwrap();
                ends.push(std::fs::metadata(&p).unwrap().len());
            }
        }
        let full = std::fs::read(&p).unwrap();
        let q = tmp("every-offset-cut");
        for cut in 0..=full.len() {
            std::fs::write(&q, &full[..cut]).unwrap();
            let (mut s, r) = FileStore::open(&q, FsyncPolicy::default()).unwrap();
            let complete = ends.iter().filter(|e| **e <= cut as u64).count();
            assert_eq!(r.records as usize, complete, "cut at {cut}");
            s.append(&rec(99)).unwrap();
            s.flush().unwrap();
            drop(s);
            let (mut s, _) = FileStore::open(&q, FsyncPolicy::default()).unwrap();
            let got = s.load().unwrap();
            let mut want: Vec<_> = (0..complete as u64).map(rec).collect();
            want.push(rec(99));
            assert_eq!(got, want, "cut at {cut}");
        }
        let _ = std::fs::remove_file(&p);
        let _ = std::fs::remove_file(&q);
    }

    #[test]
    fn a_flipped_byte_truncates_from_that_frame_and_is_never_misread() {
        let p = tmp("flip");
        let mut ends = vec![];
        {
            let (mut s, _) = FileStore::open(&p, FsyncPolicy::default()).unwrap();
            for i in 0..10 {
                s.append(&rec(i)).unwrap();
                s.flush().unwrap();
                ends.push(std::fs::metadata(&p).unwrap().len());
            }
        }
        let mut bytes = std::fs::read(&p).unwrap();
        let mid = (ends[4] + 20) as usize; // inside frame 5's payload
        bytes[mid] ^= 0x5a;
        std::fs::write(&p, &bytes).unwrap();
        let (mut s, r) = FileStore::open(&p, FsyncPolicy::default()).unwrap();
        assert_eq!(r.records, 5);
        assert_eq!(r.truncated_bytes, bytes.len() as u64 - ends[4]);
        assert_eq!(s.load().unwrap(), (0..5).map(rec).collect::<Vec<_>>());
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn another_abi_version_or_a_foreign_file_is_a_clear_error() {
        let p = tmp("version");
        let mut h = MAGIC.to_vec();
        h.extend_from_slice(&(ABI_VERSION + 1).to_le_bytes());
        std::fs::write(&p, &h).unwrap();
        assert!(matches!(
            FileStore::open(&p, FsyncPolicy::default()),
            Err(StoreError::Version { .. })
        ));
        std::fs::write(&p, b"hello, world").unwrap();
        assert!(matches!(
            FileStore::open(&p, FsyncPolicy::default()),
            Err(StoreError::NotAJournal { .. })
        ));
        assert_eq!(
            std::fs::read(&p).unwrap(),
            b"hello, world",
            "a foreign file is left untouched"
        );
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn group_commit_syncs_every_n_records_and_on_flush() {
        let p = tmp("group");
        let policy = FsyncPolicy {
            every_records: Some(10),
            every_ms: None,
        };
        let (mut s, _) = FileStore::open(&p, policy).unwrap();
        for i in 0..95 {
            s.append(&rec(i)).unwrap();
        }
        assert_eq!(s.stats().commits, 9, "a group commit every 10 records");
        s.flush().unwrap();
        let st = s.stats();
        assert_eq!(st.commits, 10, "flush commits the tail");
        assert!(
            st.fsyncs >= 1 && st.fsyncs <= 10,
            "syncs shared between commits: {st:?}"
        );
        s.flush().unwrap();
        assert_eq!(s.stats().commits, 10, "nothing new, no commit");
        assert_eq!(s.stats().fsyncs, st.fsyncs, "nothing new, no sync");
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn a_record_with_a_64_byte_value_stays_under_100_bytes() {
        let p = tmp("size");
        let (mut s, _) = FileStore::open(&p, FsyncPolicy::default()).unwrap();
        let r = Record::Io {
            pid: 1,
            op: 999_999,
            result: IoResult::Ok(Reply {
                value: Value::Bytes(bytes::Bytes::from(vec![7u8; 64])),
                cost: Cost::FREE,
            }),
        };
        let before = s.stats().bytes;
        s.append(&r).unwrap();
        let per = s.stats().bytes - before;
        assert!(per <= 100, "{per} bytes");
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn memory_store_handles_share_records_and_the_journal_indexes_them() {
        let mut a = MemoryStore::new();
        let mut b = a.clone();
        for i in 0..6 {
            a.append(&rec(i)).unwrap();
        }
        let recs = b.load().unwrap();
        assert_eq!(recs.len(), 6);
        let j = Journal::from_records(recs.clone());
        assert_eq!(j.len(), 6);
        assert_eq!(
            j.get(1 + 4 % 3, 4),
            Some(&match rec(4) {
                Record::Io { result, .. } => result,
                Record::Event(_) => unreachable!("only io records here"),
            })
        );
        assert_eq!(j.get(9, 9), None);
    }
}
