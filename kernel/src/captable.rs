//! The capability table: mint, derive/attenuate, transfer, require, transitive revoke.
//!
//! Caps live in a slab; a [`CapRef`] packs `(generation << 32) | slot`, so `require` is one
//! bounds check, one generation compare and three field tests — no hashing. A slot's
//! generation bumps when its cap is revoked, so a ref is never reused (a slot whose generation
//! would wrap is retired instead of recycled).
//!
//! Invariants (the seed's `CapTable`):
//! - rights only shrink along a derivation and caveats only accumulate (the expiry of a derived
//!   cap is the minimum of its parent's and its own), so re-deriving cannot strip a TTL;
//! - revoke is transitive over derivations and unlinks the revoked cap from its parent, so
//!   dead refs never pile up in a long-lived parent;
//! - each owner's caps are indexed, so revoke-on-exit is O(caps owned), not O(caps minted);
//! - expiry is checked against the kernel clock passed in by the caller (deterministic);
//! - a device cap's scope only narrows along a derivation ([`Scope::narrows`]): a derived cap
//!   inherits its parent's scope and may only add keys or descend a root.

use agentos_abi::{CapError, CapInfo, CapRef, Caveat, Pid, Resource, Right, Rights, Scope};
use rustc_hash::FxHashMap;
use std::sync::Arc;

const NO_EXPIRY: u64 = u64::MAX;
const NONE: u32 = u32::MAX;

/// One slot. The fields `require` reads come first so they share a cache line.
#[repr(C)]
struct Slot {
    gen: u32,
    live: bool,
    rights: Rights,
    owner: Pid,
    expires_at: u64,
    /// Position of this cap in its owner's list (O(1) disown).
    owner_slot: u32,
    /// Position of this cap in its parent's `children` list (O(1) unlink).
    parent_slot: u32,
    resource: Resource,
    /// A device cap's scope (`None`: the whole device).
    scope: Option<Arc<Scope>>,
    parent: Option<CapRef>,
    children: Vec<CapRef>,
}

/// The table of every live capability in a kernel.
pub struct CapTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
    owners: FxHashMap<Pid, Vec<CapRef>>,
    live: usize,
}

impl Default for CapTable {
    fn default() -> Self {
        Self::new()
    }
}

#[inline]
fn split(r: CapRef) -> (u32, usize) {
    ((r.0 >> 32) as u32, (r.0 & 0xffff_ffff) as usize)
}

impl CapTable {
    /// An empty table.
    pub fn new() -> Self {
        CapTable {
            slots: Vec::new(),
            free: Vec::new(),
            owners: FxHashMap::default(),
            live: 0,
        }
    }

    /// Number of live caps.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether the table holds no live cap.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    #[inline]
    fn slot(&self, r: CapRef) -> Option<&Slot> {
        let (gen, idx) = split(r);
        let s = self.slots.get(idx)?;
        (s.live && s.gen == gen).then_some(s)
    }

    fn own(&mut self, owner: Pid, r: CapRef) -> u32 {
        let list = self.owners.entry(owner).or_default();
        list.push(r);
        (list.len() - 1) as u32
    }

    fn disown(&mut self, owner: Pid, r: CapRef, pos: u32) {
        let Some(list) = self.owners.get_mut(&owner) else {
            return;
        };
        let pos = pos as usize;
        if list.get(pos) != Some(&r) {
            return;
        }
        list.swap_remove(pos);
        let moved = list.get(pos).copied();
        if list.is_empty() {
            self.owners.remove(&owner);
        }
        if let Some(m) = moved {
            let (_, idx) = split(m);
            self.slots[idx].owner_slot = pos as u32;
        }
    }

    fn alloc(
        &mut self,
        owner: Pid,
        resource: Resource,
        rights: Rights,
        expires_at: u64,
        parent: Option<CapRef>,
        scope: Option<Arc<Scope>>,
    ) -> CapRef {
        let idx = match self.free.pop() {
            Some(i) => i as usize,
            None => {
                self.slots.push(Slot {
                    gen: 0,
                    live: false,
                    rights: Rights::NONE,
                    owner: Pid(0),
                    expires_at: NO_EXPIRY,
                    owner_slot: NONE,
                    parent_slot: NONE,
                    resource: Resource::Spawn,
                    scope: None,
                    parent: None,
                    children: Vec::new(),
                });
                self.slots.len() - 1
            }
        };
        let s = &mut self.slots[idx];
        s.gen += 1;
        s.live = true;
        s.rights = rights;
        s.owner = owner;
        s.expires_at = expires_at;
        s.resource = resource;
        s.scope = scope;
        s.parent = parent;
        s.parent_slot = NONE;
        let r = CapRef(((s.gen as u64) << 32) | idx as u64);
        let pos = self.own(owner, r);
        self.slots[idx].owner_slot = pos;
        self.live += 1;
        r
    }

    /// Kernel-internal: create authority from nothing. Never reachable from a syscall.
    pub fn mint(&mut self, owner: Pid, resource: Resource, rights: Rights) -> CapRef {
        self.alloc(owner, resource, rights, NO_EXPIRY, None, None)
    }

    /// Kernel-internal: mint a cap carrying a scope (an empty scope is stored as none).
    pub fn mint_scoped(
        &mut self,
        owner: Pid,
        resource: Resource,
        rights: Rights,
        scope: Option<Arc<Scope>>,
    ) -> CapRef {
        let scope = scope.filter(|s| !s.is_empty());
        self.alloc(owner, resource, rights, NO_EXPIRY, None, scope)
    }

    /// Derive a weaker cap from one `owner` holds: `rights` must be a subset of the parent's
    /// (`None` keeps them all) and `caveats` are added to the inherited ones.
    pub fn attenuate(
        &mut self,
        owner: Pid,
        parent: CapRef,
        rights: Option<Rights>,
        caveats: &[Caveat],
        now: u64,
    ) -> Result<CapRef, CapError> {
        self.narrow(owner, parent, rights, caveats, None, now)
    }

    /// [`CapTable::attenuate`] that may also narrow a device cap's scope: `scope` is laid over
    /// the parent's ([`Scope::overlay`]) and the result must narrow it, or `CapError::Widen`.
    pub fn narrow(
        &mut self,
        owner: Pid,
        parent: CapRef,
        rights: Option<Rights>,
        caveats: &[Caveat],
        scope: Option<&Scope>,
        now: u64,
    ) -> Result<CapRef, CapError> {
        let p = self.lookup(parent, now).ok_or(CapError::Invalid)?;
        if p.owner != owner {
            return Err(CapError::NotHeld);
        }
        let want = rights.unwrap_or(p.rights);
        if let Some(extra) = want.minus(p.rights).iter().next() {
            return Err(CapError::Amplify(extra));
        }
        let mut expires = p.expires_at;
        for c in caveats {
            match *c {
                Caveat::Expires { at } => expires = expires.min(at),
            }
        }
        let pscope = self.slot(parent).and_then(|s| s.scope.clone());
        let nscope = match scope {
            None => pscope,
            // Only a device cap (one that can still `open`) carries a scope to narrow: an open
            // handle's scope is the one its driver handle was opened with, fixed.
            Some(_) if !matches!(p.resource, Resource::Device(_)) || !p.rights.has(Right::Open) => {
                return Err(CapError::WrongKind("device"))
            }
            Some(ask) => {
                let empty = Scope::new();
                let base = pscope.as_deref().unwrap_or(&empty);
                let n = base.overlay(ask);
                if !n.narrows(base) {
                    return Err(CapError::Widen);
                }
                (!n.is_empty()).then(|| Arc::new(n))
            }
        };
        let resource = p.resource.clone();
        let child = self.alloc(owner, resource, want, expires, Some(parent), nscope);
        let (_, pidx) = split(parent);
        let kids = &mut self.slots[pidx].children;
        kids.push(child);
        let pos = (kids.len() - 1) as u32;
        let (_, cidx) = split(child);
        self.slots[cidx].parent_slot = pos;
        Ok(child)
    }

    /// Derive with a subset of rights and no new caveat.
    pub fn derive(
        &mut self,
        owner: Pid,
        parent: CapRef,
        rights: Rights,
        now: u64,
    ) -> Result<CapRef, CapError> {
        self.attenuate(owner, parent, Some(rights), &[], now)
    }

    /// Hand ownership to another process (delegation rides on IPC, like fd passing).
    /// Returns false if the cap is not live.
    pub fn transfer(&mut self, r: CapRef, to: Pid) -> bool {
        let Some(s) = self.slot(r) else { return false };
        let (from, pos) = (s.owner, s.owner_slot);
        if from == to {
            return true;
        }
        self.disown(from, r, pos);
        let npos = self.own(to, r);
        let (_, idx) = split(r);
        let s = &mut self.slots[idx];
        s.owner = to;
        s.owner_slot = npos;
        true
    }

    /// A live, satisfied cap: its owner, resource and rights; `None` if unknown, revoked or
    /// expired at `now`.
    #[inline]
    pub fn lookup(&self, r: CapRef, now: u64) -> Option<CapView<'_>> {
        let s = self.slot(r)?;
        (now <= s.expires_at).then_some(CapView {
            owner: s.owner,
            rights: s.rights,
            resource: &s.resource,
            expires_at: s.expires_at,
            scope: s.scope.as_deref(),
        })
    }

    /// The gate every privileged syscall passes: `holder` owns a live cap granting `right`.
    #[inline]
    pub fn require(
        &self,
        holder: Pid,
        r: CapRef,
        right: Right,
        now: u64,
    ) -> Result<&Resource, CapError> {
        let (gen, idx) = split(r);
        let s = match self.slots.get(idx) {
            Some(s) if s.live && s.gen == gen && now <= s.expires_at => s,
            _ => return Err(CapError::Invalid),
        };
        if s.owner != holder {
            return Err(CapError::NotHeld);
        }
        if !s.rights.has(right) {
            return Err(CapError::Lacks(right));
        }
        Ok(&s.resource)
    }

    /// Does `pid` own a live cap over a resource like `kind` (compared by variant)?
    /// O(caps owned); the kernel keeps a hint so spawn rarely scans.
    pub fn find_owned(
        &self,
        pid: Pid,
        pred: impl Fn(&Resource) -> bool,
        now: u64,
    ) -> Option<CapRef> {
        let list = self.owners.get(&pid)?;
        list.iter()
            .copied()
            .find(|r| self.lookup(*r, now).is_some_and(|c| pred(c.resource)))
    }

    /// Revoke a cap and, transitively, everything derived from it. Returns how many caps died.
    pub fn revoke(&mut self, r: CapRef) -> usize {
        let Some(s) = self.slot(r) else { return 0 };
        // Unlink upward so the parent does not accumulate dead refs.
        if let (Some(par), pos) = (s.parent, s.parent_slot) {
            if let Some(ps) = self.slot(par) {
                let _ = ps;
                let (_, pidx) = split(par);
                let kids = &mut self.slots[pidx].children;
                let pos = pos as usize;
                if kids.get(pos) == Some(&r) {
                    kids.swap_remove(pos);
                    if let Some(&m) = kids.get(pos) {
                        let (_, midx) = split(m);
                        self.slots[midx].parent_slot = pos as u32;
                    }
                }
            }
        }
        // Iterative, so a deep derivation chain cannot overflow the stack.
        let mut stack = vec![r];
        let mut n = 0;
        while let Some(c) = stack.pop() {
            let (gen, idx) = split(c);
            let Some(s) = self.slots.get_mut(idx) else {
                continue;
            };
            if !s.live || s.gen != gen {
                continue;
            }
            s.live = false;
            s.parent = None;
            s.resource = Resource::Spawn; // drop any Arc it held
            s.scope = None;
            stack.append(&mut s.children);
            let (owner, pos) = (s.owner, s.owner_slot);
            let retire = s.gen == u32::MAX;
            self.disown(owner, c, pos);
            if !retire {
                self.free.push(idx as u32);
            }
            self.live -= 1;
            n += 1;
        }
        n
    }

    /// On process exit: drop all authority it held, in O(caps it owned).
    pub fn revoke_owned_by(&mut self, pid: Pid) -> usize {
        let Some(list) = self.owners.remove(&pid) else {
            return 0;
        };
        list.into_iter().map(|r| self.revoke(r)).sum()
    }

    /// Number of live caps `pid` owns.
    pub fn owned_count(&self, pid: Pid) -> usize {
        self.owners.get(&pid).map_or(0, Vec::len)
    }

    /// A read-only description of a live cap.
    pub fn info(&self, r: CapRef, now: u64) -> Option<CapInfo> {
        self.lookup(r, now).map(|c| CapInfo {
            owner: c.owner,
            resource: c.resource.clone(),
            rights: c.rights,
            expires_at: (c.expires_at != NO_EXPIRY).then_some(c.expires_at),
            scope: c.scope.cloned().unwrap_or_default(),
        })
    }

    /// The scope of a live cap (`None`: unscoped, or not live).
    pub fn scope(&self, r: CapRef) -> Option<Arc<Scope>> {
        self.slot(r).and_then(|s| s.scope.clone())
    }
}

/// A borrowed view of a live capability.
#[derive(Debug, Clone, Copy)]
pub struct CapView<'a> {
    /// The owner.
    pub owner: Pid,
    /// The rights.
    pub rights: Rights,
    /// The resource.
    pub resource: &'a Resource,
    /// Kernel-clock expiry (u64::MAX when none).
    pub expires_at: u64,
    /// A device cap's scope (`None`: the whole device).
    pub scope: Option<&'a Scope>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P1: Pid = Pid(1);
    const P2: Pid = Pid(2);

    #[test]
    fn require_checks_owner_right_and_liveness() {
        let mut t = CapTable::new();
        let c = t.mint(P1, Resource::Process(P2), Rights::SEND_MONITOR);
        assert!(t.require(P1, c, Right::Send, 0).is_ok());
        assert_eq!(t.require(P2, c, Right::Send, 0), Err(CapError::NotHeld));
        assert_eq!(
            t.require(P1, c, Right::Kill, 0),
            Err(CapError::Lacks(Right::Kill))
        );
        t.revoke(c);
        assert_eq!(t.require(P1, c, Right::Send, 0), Err(CapError::Invalid));
    }

    #[test]
    fn refs_are_never_reused_after_revoke() {
        let mut t = CapTable::new();
        let a = t.mint(P1, Resource::Spawn, Right::Spawn.into());
        t.revoke(a);
        let b = t.mint(P1, Resource::Spawn, Right::Spawn.into());
        assert_ne!(a, b);
        assert!(t.lookup(a, 0).is_none());
        assert!(t.lookup(b, 0).is_some());
    }

    #[test]
    fn derive_cannot_amplify() {
        let mut t = CapTable::new();
        let c = t.mint(P1, Resource::Process(P2), Rights::SEND_MONITOR);
        assert_eq!(
            t.derive(P1, c, Rights::CHILD, 0),
            Err(CapError::Amplify(Right::Kill))
        );
        assert_eq!(
            t.derive(P2, c, Right::Send.into(), 0),
            Err(CapError::NotHeld)
        );
    }

    #[test]
    fn caveats_are_inherited_and_expire_on_the_given_clock() {
        let mut t = CapTable::new();
        let root = t.mint(P1, Resource::Process(P2), Rights::CHILD);
        let ttl = t
            .attenuate(P1, root, None, &[Caveat::Expires { at: 100 }], 0)
            .unwrap();
        // A later, longer caveat cannot extend the inherited one.
        let re = t
            .attenuate(P1, ttl, None, &[Caveat::Expires { at: 10_000 }], 0)
            .unwrap();
        assert!(t.require(P1, re, Right::Send, 100).is_ok());
        assert_eq!(t.require(P1, re, Right::Send, 101), Err(CapError::Invalid));
        assert_eq!(t.require(P1, ttl, Right::Send, 101), Err(CapError::Invalid));
        assert!(t.require(P1, root, Right::Send, 101).is_ok());
    }

    #[test]
    fn revoke_is_transitive_and_unlinks_upward() {
        let mut t = CapTable::new();
        let root = t.mint(P1, Resource::Process(P2), Rights::CHILD);
        let a = t.derive(P1, root, Rights::SEND_MONITOR, 0).unwrap();
        let b = t.derive(P1, a, Right::Send.into(), 0).unwrap();
        t.transfer(b, P2);
        let sib = t.derive(P1, root, Right::Send.into(), 0).unwrap();
        assert_eq!(t.revoke(a), 2);
        assert!(t.lookup(b, 0).is_none());
        assert!(t.lookup(sib, 0).is_some());
        assert_eq!(t.slot(root).unwrap().children, vec![sib]);
        assert_eq!(t.owned_count(P2), 0);
        assert_eq!(t.revoke(root), 2);
        assert!(t.is_empty());
    }

    #[test]
    fn revoke_owned_by_drops_exactly_that_owners_caps() {
        let mut t = CapTable::new();
        let mine: Vec<_> = (0..10)
            .map(|_| t.mint(P1, Resource::Spawn, Right::Spawn.into()))
            .collect();
        let other = t.mint(P2, Resource::Spawn, Right::Spawn.into());
        // A derivation handed to P2 dies with P1's parent cap.
        let given = t.derive(P1, mine[3], Right::Spawn.into(), 0).unwrap();
        t.transfer(given, P2);
        assert_eq!(t.revoke_owned_by(P1), 11);
        assert!(t.lookup(other, 0).is_some());
        assert!(t.lookup(given, 0).is_none());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn transfer_changes_owner() {
        let mut t = CapTable::new();
        let c = t.mint(P1, Resource::Process(P2), Rights::SEND_MONITOR);
        assert!(t.transfer(c, P2));
        assert_eq!(t.require(P1, c, Right::Send, 0), Err(CapError::NotHeld));
        assert!(t.require(P2, c, Right::Send, 0).is_ok());
        assert_eq!(t.owned_count(P1), 0);
        assert_eq!(t.owned_count(P2), 1);
    }

    #[test]
    fn deep_chain_revoke_does_not_overflow() {
        let mut t = CapTable::new();
        let root = t.mint(P1, Resource::Spawn, Right::Spawn.into());
        let mut cur = root;
        for _ in 0..200_000 {
            cur = t.derive(P1, cur, Right::Spawn.into(), 0).unwrap();
        }
        assert_eq!(t.revoke(root), 200_001);
        assert!(t.is_empty());
    }

    proptest! {
        /// A derived cap never has more rights than its parent, whatever is asked for.
        #[test]
        fn derived_rights_are_a_subset_of_the_parent(
            root_bits in 0u8..128, asks in proptest::collection::vec(0u8..128, 1..20)
        ) {
            let mut t = CapTable::new();
            let root = t.mint(P1, Resource::Spawn, Rights(root_bits));
            let mut chain = vec![root];
            for ask in asks {
                let parent = *chain.last().unwrap();
                let prights = t.lookup(parent, 0).unwrap().rights;
                match t.derive(P1, parent, Rights(ask), 0) {
                    Ok(c) => {
                        let r = t.lookup(c, 0).unwrap().rights;
                        prop_assert!(prights.contains(r));
                        prop_assert_eq!(r, Rights(ask));
                        chain.push(c);
                    }
                    Err(CapError::Amplify(x)) => prop_assert!(!prights.has(x) && Rights(ask).has(x)),
                    Err(e) => prop_assert!(false, "unexpected {e:?}"),
                }
            }
            // Revoking the root kills every derivation.
            prop_assert_eq!(t.revoke(root), chain.len());
            prop_assert!(t.is_empty());
        }
    }
}
