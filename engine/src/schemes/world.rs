//! [`TurnWorld`]: the session's entries as one turn sees them.
//!
//! Reads go to the `store` device (one device read per entry or listing, cached for the
//! turn); writes stay in an overlay that later reads of the same turn see, and leave as
//! the turn's [`EntryWrite`]s, committed with its rows in one transaction. So a turn's
//! effects on the world are atomic with its log: a loop killed mid-turn changed nothing.
//!
//! **Invariants:** the overlay is the only place a scheme writes; a read after a write in
//! the same turn sees the write; listings merge the overlay over the stored entries.
//!
//! **API boundary:** [`TurnWorld`] over any [`Syscalls`] implementation holding a store
//! handle.

use std::collections::BTreeMap;

use agentos_abi::device::{from_value, to_value};
use agentos_abi::{CapRef, Syscalls, Value};

use crate::store::device::StoreRequest;
use crate::store::{Channel, ChannelState, Entry, EntryKey, EntryWrite, Scope};

/// A failed store access, as a message for a 500 row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("store: {0}")]
pub struct WorldError(pub String);

/// Sends one request to the store device and decodes the reply.
pub async fn store_call<S: Syscalls, T: serde::de::DeserializeOwned>(
    sys: &S,
    handle: CapRef,
    req: &StoreRequest,
) -> Result<T, WorldError> {
    let v = to_value(req).map_err(|e| WorldError(e.to_string()))?;
    let out: Value = if req.is_write() {
        sys.write(handle, v).await
    } else {
        sys.read(handle, v).await
    }
    .map_err(|e| WorldError(e.to_string()))?;
    from_value(out).map_err(|e| WorldError(format!("bad reply: {e}")))
}

/// The world for one turn: cached reads, an overlay of writes.
pub struct TurnWorld<'a, S: Syscalls> {
    sys: &'a S,
    store: CapRef,
    /// What this turn read or wrote, by key (`None`: absent or deleted).
    seen: BTreeMap<EntryKey, Option<Entry>>,
    /// Listings already fetched this turn, by (scope, scheme).
    listed: BTreeMap<(Scope, Option<String>), Vec<EntryKey>>,
    writes: Vec<EntryWrite>,
    next_updated: i64,
}

impl<'a, S: Syscalls> TurnWorld<'a, S> {
    /// A world over the store handle `store`.
    pub fn new(sys: &'a S, store: CapRef) -> Self {
        TurnWorld {
            sys,
            store,
            seen: BTreeMap::new(),
            listed: BTreeMap::new(),
            writes: Vec::new(),
            // This turn's writes sort after every stored entry (whose logical clock is small)
            // and among themselves in write order, as the store will order them at commit.
            next_updated: i64::MAX / 2,
        }
    }

    /// The syscall handle (for schemes that need another device).
    pub fn sys(&self) -> &'a S {
        self.sys
    }

    /// The store handle (for requests beyond entries: runs, loops).
    pub fn store(&self) -> CapRef {
        self.store
    }

    /// One entry, as this turn sees it.
    pub async fn entry(&mut self, key: &EntryKey) -> Result<Option<Entry>, WorldError> {
        if let Some(e) = self.seen.get(key) {
            return Ok(e.clone());
        }
        let e: Option<Entry> = store_call(
            self.sys,
            self.store,
            &StoreRequest::Entry { key: key.clone() },
        )
        .await?;
        self.seen.insert(key.clone(), e.clone());
        Ok(e)
    }

    /// Every entry of `scheme` in `scope`, as this turn sees them, in catalog order (least
    /// recently updated first; this turn's writes last).
    pub async fn entries(
        &mut self,
        scope: Scope,
        scheme: Option<&str>,
    ) -> Result<Vec<Entry>, WorldError> {
        let lk = (scope, scheme.map(str::to_owned));
        if !self.listed.contains_key(&lk) {
            let stored: Vec<Entry> = store_call(
                self.sys,
                self.store,
                &StoreRequest::Entries {
                    scope,
                    scheme: scheme.map(str::to_owned),
                },
            )
            .await?;
            let keys = stored.iter().map(|e| e.key.clone()).collect();
            for e in stored {
                self.seen.entry(e.key.clone()).or_insert(Some(e));
            }
            self.listed.insert(lk.clone(), keys);
        }
        let mut out: Vec<Entry> = Vec::new();
        let mut keys: Vec<&EntryKey> = self.listed[&lk].iter().collect();
        // Entries created by this turn's writes join the listing.
        for k in self.seen.keys() {
            if k.scope == scope && k.scheme.as_deref() == scheme && !keys.contains(&k) {
                keys.push(k);
            }
        }
        for k in keys {
            if let Some(Some(e)) = self.seen.get(k) {
                out.push(e.clone());
            }
        }
        out.sort_by_key(|e| (e.updated_at, e.id));
        Ok(out)
    }

    /// Writes one channel of an entry (creating it); `tags` replaces the tags when `Some`.
    pub fn put(&mut self, key: &EntryKey, channel: Channel, tags: Option<Vec<String>>) {
        self.next_updated += 1;
        let entry = self.seen.entry(key.clone()).or_insert(None);
        let e = entry.get_or_insert_with(|| Entry {
            id: 0,
            key: key.clone(),
            channels: Vec::new(),
            tags: Vec::new(),
            updated_at: 0,
            synced_sig: None,
        });
        e.updated_at = self.next_updated;
        match e.channels.iter_mut().find(|c| c.name == channel.name) {
            Some(c) => *c = channel.clone(),
            None => e.channels.push(channel.clone()),
        }
        if let Some(t) = &tags {
            e.tags = t.clone();
        }
        self.writes.push(EntryWrite::Put {
            key: key.clone(),
            channel,
            tags,
        });
    }

    /// Deletes an entry.
    pub fn delete(&mut self, key: &EntryKey) {
        self.seen.insert(key.clone(), None);
        self.writes.push(EntryWrite::Delete { key: key.clone() });
    }

    /// Records the disk signature a project file's body came from (after its `put`).
    pub fn sync(&mut self, key: &EntryKey, sig: String) {
        if let Some(Some(e)) = self.seen.get_mut(key) {
            e.synced_sig = Some(sig.clone());
        }
        self.writes.push(EntryWrite::Sync {
            key: key.clone(),
            sig,
        });
    }

    /// The writes to commit with the turn, in order.
    pub fn into_writes(self) -> Vec<EntryWrite> {
        self.writes
    }

    /// Takes the writes so far (a turn that parks commits them with its first segment;
    /// what this turn has seen stays, and matches the store once they are committed).
    pub fn take_writes(&mut self) -> Vec<EntryWrite> {
        std::mem::take(&mut self.writes)
    }

    /// Whether the turn wrote anything.
    pub fn is_dirty(&self) -> bool {
        !self.writes.is_empty()
    }
}

/// A static channel with its token count.
pub fn channel(name: &str, content: String, mimetype: &str) -> Channel {
    Channel {
        name: name.to_owned(),
        tokens: crate::turn::count_tokens(&content) as i64,
        content,
        mimetype: mimetype.to_owned(),
        state: ChannelState::Static,
    }
}
