//! The key/value device: `get`, `set`, `delete` and `list` (by prefix), values as bytes.
//!
//! Requests are [`KvRequest`] values in the seed's shape (`{get: key}`, `{set: {key, value}}`,
//! `{delete: key}`, `{list: prefix}`), accepted on `read` and on `write` alike; replies are
//! [`KvReply`] values. Two stores: [`MemoryKv`] (a sorted map) and [`RedbKv`] (a redb file
//! that survives reopening). Store operations on a persistent store run on the driver
//! runtime's blocking pool, never on a kernel scheduler thread. KV operations are free.
//!
//! Scoped devices: a device cap whose scope has a `root` (say `/tenant/a`) opens a handle that
//! sees only the keys under `tenant/a/`, as if they were the whole store (keys are prefixed on
//! the way in and the prefix is stripped from `list` on the way out), so one driver serves many
//! tenants with no ambient authority. A handle without the `write` right answers `get` and
//! `list` only. Any other scope key is refused at open.

use crate::rt::{IoRuntime, RuntimeError};
use agentos_abi::device::{DeviceMessage, KvReply, KvRequest};
use agentos_abi::driver::BoxFuture;
use agentos_abi::{Driver, DriverError, DriverHandle, OpenCtx, Reply, Right, Scope, Value};
use bytes::Bytes;
use parking_lot::RwLock;
use redb::{ReadableDatabase, TableDefinition};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use thiserror::Error;

/// A store failed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("kv store: {0}")]
pub struct KvError(pub String);

/// A key/value store.
pub trait KvStore: Send + Sync + 'static {
    /// The value of `key`, if any.
    fn get(&self, key: &str) -> Result<Option<Bytes>, KvError>;
    /// Set `key` to `value`.
    fn set(&self, key: &str, value: Bytes) -> Result<(), KvError>;
    /// Remove `key`; whether it existed.
    fn delete(&self, key: &str) -> Result<bool, KvError>;
    /// The keys starting with `prefix`, in key order.
    fn list(&self, prefix: &str) -> Result<Vec<String>, KvError>;
    /// Whether operations may block on I/O (then the driver runs them off the scheduler).
    fn blocking(&self) -> bool;
    /// Release external resources (a file lock); later operations fail. Default: nothing.
    fn close(&self) {}
}

/// Run one request against a store.
pub fn apply(store: &dyn KvStore, req: KvRequest) -> Result<KvReply, KvError> {
    Ok(match req {
        KvRequest::Get(k) => KvReply::Value(store.get(&k)?),
        KvRequest::Set { key, value } => {
            store.set(&key, value)?;
            KvReply::Done(true)
        }
        KvRequest::Delete(k) => KvReply::Done(store.delete(&k)?),
        KvRequest::List(prefix) => KvReply::Keys(store.list(&prefix)?),
    })
}

/// An in-memory store.
#[derive(Default)]
pub struct MemoryKv {
    map: RwLock<BTreeMap<String, Bytes>>,
}

impl MemoryKv {
    /// An empty store.
    pub fn new() -> Self {
        MemoryKv::default()
    }
}

impl KvStore for MemoryKv {
    fn get(&self, key: &str) -> Result<Option<Bytes>, KvError> {
        Ok(self.map.read().get(key).cloned())
    }
    fn set(&self, key: &str, value: Bytes) -> Result<(), KvError> {
        self.map.write().insert(key.to_owned(), value);
        Ok(())
    }
    fn delete(&self, key: &str) -> Result<bool, KvError> {
        Ok(self.map.write().remove(key).is_some())
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>, KvError> {
        Ok(self
            .map
            .read()
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect())
    }
    fn blocking(&self) -> bool {
        false
    }
}

const TABLE: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new("kv");

/// A persistent store in a redb file: every `set`/`delete` is a committed transaction.
/// The file stays locked until the store is dropped or [`KvStore::close`]d.
pub struct RedbKv {
    db: RwLock<Option<Arc<redb::Database>>>,
}

fn kv_err(e: impl std::fmt::Display) -> KvError {
    KvError(e.to_string())
}

impl RedbKv {
    /// Open (or create) the store at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, KvError> {
        let db = redb::Database::create(path).map_err(kv_err)?;
        // Create the table so reads on a fresh file find it.
        let tx = db.begin_write().map_err(kv_err)?;
        tx.open_table(TABLE).map_err(kv_err)?;
        tx.commit().map_err(kv_err)?;
        Ok(RedbKv {
            db: RwLock::new(Some(Arc::new(db))),
        })
    }

    fn db(&self) -> Result<Arc<redb::Database>, KvError> {
        self.db
            .read()
            .clone()
            .ok_or_else(|| KvError("store is closed".into()))
    }
}

impl KvStore for RedbKv {
    fn get(&self, key: &str) -> Result<Option<Bytes>, KvError> {
        let tx = self.db()?.begin_read().map_err(kv_err)?;
        let t = tx.open_table(TABLE).map_err(kv_err)?;
        Ok(t.get(key)
            .map_err(kv_err)?
            .map(|v| Bytes::copy_from_slice(v.value())))
    }
    fn set(&self, key: &str, value: Bytes) -> Result<(), KvError> {
        let tx = self.db()?.begin_write().map_err(kv_err)?;
        {
            let mut t = tx.open_table(TABLE).map_err(kv_err)?;
            t.insert(key, value.as_ref()).map_err(kv_err)?;
        }
        tx.commit().map_err(kv_err)
    }
    fn delete(&self, key: &str) -> Result<bool, KvError> {
        let tx = self.db()?.begin_write().map_err(kv_err)?;
        let existed = {
            let mut t = tx.open_table(TABLE).map_err(kv_err)?;
            let old = t.remove(key).map_err(kv_err)?;
            old.is_some()
        };
        tx.commit().map_err(kv_err)?;
        Ok(existed)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>, KvError> {
        let tx = self.db()?.begin_read().map_err(kv_err)?;
        let t = tx.open_table(TABLE).map_err(kv_err)?;
        let mut out = Vec::new();
        for entry in t.range::<&str>(prefix..).map_err(kv_err)? {
            let (k, _) = entry.map_err(kv_err)?;
            let k = k.value();
            if !k.starts_with(prefix) {
                break;
            }
            out.push(k.to_owned());
        }
        Ok(out)
    }
    fn blocking(&self) -> bool {
        true
    }
    fn close(&self) {
        // The database closes when the last in-flight operation drops its reference.
        self.db.write().take();
    }
}

/// The KV device over a [`KvStore`]. Every process that opens it shares the store.
pub struct KvDriver {
    name: String,
    store: Arc<dyn KvStore>,
    runtime: Option<IoRuntime>,
}

impl KvDriver {
    /// A `kv` device over an in-memory store.
    pub fn memory() -> Self {
        KvDriver {
            name: "kv".into(),
            store: Arc::new(MemoryKv::new()),
            runtime: None,
        }
    }

    /// A `kv` device over the redb file at `path` (created if missing).
    pub fn persistent(path: impl AsRef<Path>) -> Result<Self, KvDriverError> {
        Self::over(Arc::new(RedbKv::open(path)?))
    }

    /// A `kv` device over any store; blocking stores run on the process-wide driver runtime.
    pub fn over(store: Arc<dyn KvStore>) -> Result<Self, KvDriverError> {
        let runtime = if store.blocking() {
            Some(IoRuntime::current_or_global()?)
        } else {
            None
        };
        Ok(KvDriver {
            name: "kv".into(),
            store,
            runtime,
        })
    }

    /// Register under another device name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn KvStore> {
        &self.store
    }

    /// Close the store (release its file); later operations fail with a device error.
    pub fn close(&self) {
        self.store.close();
    }
}

/// A KV device could not be built.
#[derive(Debug, Error)]
pub enum KvDriverError {
    /// The store failed to open.
    #[error(transparent)]
    Store(#[from] KvError),
    /// The driver runtime failed to start.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl Driver for KvDriver {
    fn name(&self) -> &str {
        &self.name
    }
    fn open(&self, at: OpenCtx) -> BoxFuture<'static, Result<Arc<dyn DriverHandle>, DriverError>> {
        if let Some((k, _)) = at.scope.iter().find(|(k, _)| *k != Scope::ROOT) {
            let e = DriverError::BadRequest(format!("{}: unknown scope key \"{k}\"", self.name));
            return Box::pin(async move { Err(e) });
        }
        let prefix = match at.scope.root() {
            Some(r) => {
                let r = r.trim_matches('/');
                if r.is_empty() {
                    String::new()
                } else {
                    format!("{r}/")
                }
            }
            None => String::new(),
        };
        let h: Arc<dyn DriverHandle> = Arc::new(KvHandle {
            store: self.store.clone(),
            runtime: self.runtime.clone(),
            prefix,
            writable: at.rights.has(Right::Write),
        });
        Box::pin(async move { Ok(h) })
    }
}

struct KvHandle {
    store: Arc<dyn KvStore>,
    runtime: Option<IoRuntime>,
    /// The scope's key namespace (`""`: the whole store).
    prefix: String,
    /// Whether the handle has the `write` right (else `set` and `delete` are refused).
    writable: bool,
}

impl KvHandle {
    fn op(&self, req: Value) -> BoxFuture<'static, Result<Reply, DriverError>> {
        let req = match KvRequest::from_value(req) {
            Ok(r) => r,
            Err(e) => {
                return Box::pin(async move { Err(DriverError::BadRequest(format!("kv: {e}"))) })
            }
        };
        if !self.writable && matches!(req, KvRequest::Set { .. } | KvRequest::Delete(_)) {
            let e = DriverError::BadRequest("kv: read-only handle".into());
            return Box::pin(async move { Err(e) });
        }
        let p = &self.prefix;
        let req = match req {
            KvRequest::Get(k) => KvRequest::Get(format!("{p}{k}")),
            KvRequest::Set { key, value } => KvRequest::Set {
                key: format!("{p}{key}"),
                value,
            },
            KvRequest::Delete(k) => KvRequest::Delete(format!("{p}{k}")),
            KvRequest::List(k) => KvRequest::List(format!("{p}{k}")),
        };
        let store = self.store.clone();
        let strip = self.prefix.len();
        let done = move |r: Result<KvReply, KvError>| {
            r.map(|reply| match reply {
                KvReply::Keys(ks) => {
                    KvReply::Keys(ks.into_iter().map(|k| k[strip..].to_owned()).collect())
                }
                other => other,
            })
            .map(|reply| Reply::free(reply.to_value()))
            .map_err(|e| DriverError::Failed(e.to_string()))
        };
        match &self.runtime {
            None => {
                let out = done(apply(&*store, req));
                Box::pin(async move { out })
            }
            Some(rt) => {
                let task = rt.spawn_blocking(move || apply(&*store, req));
                Box::pin(async move {
                    match task.await {
                        Ok(r) => done(r),
                        Err(e) => Err(DriverError::Failed(format!("kv task {e}"))),
                    }
                })
            }
        }
    }
}

impl DriverHandle for KvHandle {
    fn read(&self, req: Value) -> BoxFuture<'static, Result<Reply, DriverError>> {
        self.op(req)
    }
    fn write(&self, data: Value) -> BoxFuture<'static, Result<Reply, DriverError>> {
        self.op(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(store: &dyn KvStore) {
        store.set("a/1", Bytes::from_static(b"x")).unwrap();
        store.set("a/2", Bytes::from_static(b"y")).unwrap();
        store.set("b", Bytes::from_static(b"z")).unwrap();
        assert_eq!(store.get("a/1").unwrap(), Some(Bytes::from_static(b"x")));
        assert_eq!(store.get("zz").unwrap(), None);
        assert_eq!(store.list("a/").unwrap(), vec!["a/1", "a/2"]);
        assert_eq!(store.list("").unwrap().len(), 3);
        assert!(store.delete("a/1").unwrap());
        assert!(!store.delete("a/1").unwrap());
        assert_eq!(store.list("a").unwrap(), vec!["a/2"]);
    }

    #[test]
    fn memory_store() {
        exercise(&MemoryKv::new());
    }

    #[test]
    fn redb_store_persists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.redb");
        let first = RedbKv::open(&path).unwrap();
        exercise(&first);
        assert!(
            RedbKv::open(&path).is_err(),
            "the file is locked while open"
        );
        first.close();
        assert_eq!(first.get("b"), Err(KvError("store is closed".into())));
        let again = RedbKv::open(&path).unwrap();
        assert_eq!(again.list("").unwrap(), vec!["a/2", "b"]);
        assert_eq!(again.get("b").unwrap(), Some(Bytes::from_static(b"z")));
    }
}
