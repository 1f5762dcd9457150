//! Hierarchical accounts: quotas that bind a whole subtree of processes.
//!
//! Invariants (the seed's `Account`):
//! - a charge is all-or-nothing up the whole ancestor chain: it is checked at every level
//!   before any level is debited, so a refused charge leaves no trace;
//! - refunds never fail and are not pre-checked;
//! - usage aggregates upward: every ancestor sees the spend of its subtree;
//! - `children` is a concurrent cap (like cgroup `pids.max`): a child takes a slot when it is
//!   created and gives it back when its process exits; tokens, tool calls, usd and cpu are
//!   cumulative;
//! - wall time, the memory ceiling and the mailbox bound are per process, never bubbled.
//!
//! Accounts live in a slab and are reference counted by their process and their child
//! accounts, so an account outlives its process for as long as a descendant still charges
//! through it.

use agentos_abi::{Budget, Meter, Quota, Usage};

/// Handle to an account in [`Accounts`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct AccountId(u32);

#[derive(Clone, Debug)]
struct Node {
    parent: Option<AccountId>,
    /// Remaining at this level for the chained meters (tokens, tool_calls, usd, children, cpu).
    rem: [Option<u64>; 5],
    /// Subtree usage seen at this level.
    spent: [u64; 5],
    wall_ms: Option<u64>,
    mem: Option<u64>,
    max_mailbox: Option<u32>,
    born_at: u64,
    refs: u32,
}

/// The account tree of one kernel.
#[derive(Default)]
pub struct Accounts {
    nodes: Vec<Option<Node>>,
    free: Vec<u32>,
}

fn idx(m: Meter) -> usize {
    // Callers only pass chained meters; anything else maps to a harmless index never charged.
    m.chained_index().unwrap_or(0)
}

impl Accounts {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    fn node(&self, a: AccountId) -> &Node {
        self.nodes[a.0 as usize]
            .as_ref()
            .expect("account id refers to a live node")
    }

    fn node_mut(&mut self, a: AccountId) -> &mut Node {
        self.nodes[a.0 as usize]
            .as_mut()
            .expect("account id refers to a live node")
    }

    fn insert(&mut self, n: Node) -> AccountId {
        match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = Some(n);
                AccountId(i)
            }
            None => {
                self.nodes.push(Some(n));
                AccountId((self.nodes.len() - 1) as u32)
            }
        }
    }

    /// A root account (no parent), held by one process.
    pub fn root(&mut self, q: &Quota, now: u64) -> AccountId {
        self.insert(Node {
            parent: None,
            rem: [q.tokens, q.tool_calls, q.usd_micros, q.children, q.cpu],
            spent: [0; 5],
            wall_ms: q.wall_ms,
            mem: q.mem,
            max_mailbox: q.max_mailbox,
            born_at: now,
            refs: 1,
        })
    }

    /// A child account under `parent`: takes one `children` slot on the parent's chain.
    pub fn child(&mut self, parent: AccountId, q: &Quota, now: u64) -> Result<AccountId, Meter> {
        self.charge(parent, Meter::Children, 1)?;
        self.node_mut(parent).refs += 1;
        let id = self.root(q, now);
        self.node_mut(id).parent = Some(parent);
        Ok(id)
    }

    /// Charge `n` of a chained meter against `a` and every ancestor, all or nothing.
    pub fn charge(&mut self, a: AccountId, meter: Meter, n: u64) -> Result<(), Meter> {
        if n == 0 {
            return Ok(());
        }
        let i = idx(meter);
        let mut cur = Some(a);
        while let Some(id) = cur {
            let node = self.node(id);
            if node.rem[i].is_some_and(|left| n > left) {
                return Err(meter);
            }
            cur = node.parent;
        }
        let mut cur = Some(a);
        while let Some(id) = cur {
            let node = self.node_mut(id);
            if let Some(left) = node.rem[i].as_mut() {
                *left -= n;
            }
            node.spent[i] += n;
            cur = node.parent;
        }
        Ok(())
    }

    /// Charge several chained meters at once, all or nothing across the meters as well as up
    /// the chain: if any meter at any level would go below zero nothing is charged and that
    /// meter is returned (the first refused, in the order given). A meter listed twice is
    /// charged the sum.
    pub fn charge_all(&mut self, a: AccountId, charges: &[(Meter, u64)]) -> Result<(), Meter> {
        let mut sum = [0u64; 5];
        // The order meters were first named in, so the refusal reported is the first one.
        let mut order = [usize::MAX; 5];
        let mut k = 0;
        for &(meter, n) in charges {
            let i = idx(meter);
            if n > 0 && sum[i] == 0 {
                order[k] = i;
                k += 1;
            }
            sum[i] = sum[i].saturating_add(n);
        }
        let order = &order[..k];
        for &i in order {
            let n = sum[i];
            let mut cur = Some(a);
            while let Some(id) = cur {
                let node = self.node(id);
                if node.rem[i].is_some_and(|left| n > left) {
                    return Err(Meter::CHAINED[i]);
                }
                cur = node.parent;
            }
        }
        for &i in order {
            let n = sum[i];
            let mut cur = Some(a);
            while let Some(id) = cur {
                let node = self.node_mut(id);
                if let Some(left) = node.rem[i].as_mut() {
                    *left -= n;
                }
                node.spent[i] += n;
                cur = node.parent;
            }
        }
        Ok(())
    }

    /// Give `n` back up the chain. Never fails.
    pub fn refund(&mut self, a: AccountId, meter: Meter, n: u64) {
        let i = idx(meter);
        let mut cur = Some(a);
        while let Some(id) = cur {
            let node = self.node_mut(id);
            if let Some(left) = node.rem[i].as_mut() {
                *left = left.saturating_add(n);
            }
            node.spent[i] = node.spent[i].saturating_sub(n);
            cur = node.parent;
        }
    }

    /// The owning process exited: free its `children` slot in the parent's subtree and drop
    /// the process's reference (the node lives on while descendants reference it).
    pub fn release(&mut self, a: AccountId) {
        if let Some(p) = self.node(a).parent {
            self.refund(p, Meter::Children, 1);
        }
        self.unref(a);
    }

    fn unref(&mut self, a: AccountId) {
        let mut cur = Some(a);
        while let Some(id) = cur {
            let node = self.node_mut(id);
            node.refs -= 1;
            if node.refs > 0 {
                return;
            }
            cur = node.parent;
            self.nodes[id.0 as usize] = None;
            self.free.push(id.0);
        }
    }

    /// Whether the process's wall-clock lifetime is spent at `now`.
    pub fn wall_exceeded(&self, a: AccountId, now: u64) -> bool {
        let n = self.node(a);
        n.wall_ms.is_some_and(|w| now.saturating_sub(n.born_at) > w)
    }

    /// The wall-time limit, if any.
    pub fn wall_ms(&self, a: AccountId) -> Option<u64> {
        self.node(a).wall_ms
    }

    /// The mailbox bound of the account's process.
    pub fn max_mailbox(&self, a: AccountId) -> Option<u32> {
        self.node(a).max_mailbox
    }

    /// What is left at this level.
    pub fn remaining(&self, a: AccountId, now: u64) -> Budget {
        let n = self.node(a);
        Budget {
            tokens: n.rem[0],
            tool_calls: n.rem[1],
            usd_micros: n.rem[2],
            children: n.rem[3],
            cpu: self.least_left(a, 4),
            wall_ms: n
                .wall_ms
                .map(|w| w.saturating_sub(now.saturating_sub(n.born_at))),
            mem: n.mem,
            max_mailbox: n.max_mailbox,
        }
    }

    /// Usage of this account's subtree.
    pub fn usage(&self, a: AccountId) -> Usage {
        let s = self.node(a).spent;
        Usage {
            tokens: s[0],
            tool_calls: s[1],
            usd_micros: s[2],
            children: s[3],
            cpu: s[4],
        }
    }

    /// The least left of chained meter `i` over `a` and its ancestors (`None`: unlimited).
    fn least_left(&self, a: AccountId, i: usize) -> Option<u64> {
        let mut least: Option<u64> = None;
        let mut cur = Some(a);
        while let Some(id) = cur {
            let n = self.node(id);
            if let Some(l) = n.rem[i] {
                least = Some(least.map_or(l, |m| m.min(l)));
            }
            cur = n.parent;
        }
        least
    }

    /// Number of live account nodes (for leak tests and metrics).
    pub fn live(&self) -> usize {
        self.nodes.len() - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(tokens: Option<u64>) -> Quota {
        Quota {
            tokens,
            ..Quota::default()
        }
    }

    #[test]
    fn charge_bubbles_and_refuses_atomically() {
        let mut a = Accounts::new();
        let root = a.root(&q(Some(100)), 0);
        let mid = a.child(root, &q(Some(50)), 0).unwrap();
        let leaf = a.child(mid, &q(None), 0).unwrap();
        a.charge(leaf, Meter::Tokens, 40).unwrap();
        assert_eq!(a.usage(root).tokens, 40);
        assert_eq!(a.remaining(mid, 0).tokens, Some(10));
        assert_eq!(a.charge(leaf, Meter::Tokens, 11), Err(Meter::Tokens));
        // Nothing moved on the refused charge.
        assert_eq!(a.usage(leaf).tokens, 40);
        assert_eq!(a.remaining(root, 0).tokens, Some(60));
    }

    #[test]
    fn children_is_a_concurrent_cap() {
        let mut a = Accounts::new();
        let root = a.root(
            &Quota {
                children: Some(1),
                ..Quota::default()
            },
            0,
        );
        let c1 = a.child(root, &Quota::default(), 0).unwrap();
        assert_eq!(a.child(root, &Quota::default(), 0), Err(Meter::Children));
        a.release(c1);
        assert!(a.child(root, &Quota::default(), 0).is_ok());
    }

    #[test]
    fn nodes_are_freed_when_unreferenced() {
        let mut a = Accounts::new();
        let root = a.root(&Quota::default(), 0);
        let c = a.child(root, &Quota::default(), 0).unwrap();
        let g = a.child(c, &Quota::default(), 0).unwrap();
        a.release(c); // the process of c exits; g still charges through it
        a.charge(g, Meter::Tokens, 5).unwrap();
        assert_eq!(a.usage(root).tokens, 5);
        a.release(g);
        assert_eq!(a.live(), 1);
    }

    #[test]
    fn wall_time_is_per_process() {
        let mut a = Accounts::new();
        let root = a.root(
            &Quota {
                wall_ms: Some(10),
                ..Quota::default()
            },
            100,
        );
        assert!(!a.wall_exceeded(root, 110));
        assert!(a.wall_exceeded(root, 111));
        assert_eq!(a.remaining(root, 105).wall_ms, Some(5));
    }

    proptest! {
        /// A charge of several meters either debits all of them at every level or changes
        /// nothing: a cost that exceeds one meter leaves the others uncharged too.
        #[test]
        fn a_multi_meter_charge_is_all_or_nothing_across_meters(
            limits in proptest::collection::vec((proptest::option::of(0u64..100), proptest::option::of(0u64..100)), 1..5),
            charges in proptest::collection::vec((0usize..5, 0u64..60, 0u64..60), 1..30),
        ) {
            let mut a = Accounts::new();
            let quota = |(t, c): (Option<u64>, Option<u64>)| Quota { tokens: t, tool_calls: c, ..Quota::default() };
            let mut chain = vec![a.root(&quota(limits[0]), 0)];
            for l in &limits[1..] {
                let parent = *chain.last().unwrap();
                chain.push(a.child(parent, &quota(*l), 0).unwrap());
            }
            let state = |a: &Accounts| -> Vec<(Usage, Budget)> {
                chain.iter().map(|c| (a.usage(*c), a.remaining(*c, 0))).collect()
            };
            for (at, t, c) in charges {
                let acc = chain[at % chain.len()];
                let before = state(&a);
                let res = a.charge_all(acc, &[(Meter::Tokens, t), (Meter::ToolCalls, c)]);
                let after = state(&a);
                match res {
                    Err(_) => prop_assert_eq!(before, after),
                    Ok(()) => {
                        let lvl = chain.iter().position(|x| *x == acc).unwrap();
                        for (i, (b, f)) in before.iter().zip(&after).enumerate() {
                            let (dt, dc) = if i <= lvl { (t, c) } else { (0, 0) };
                            prop_assert_eq!(f.0.tokens, b.0.tokens + dt);
                            prop_assert_eq!(f.0.tool_calls, b.0.tool_calls + dc);
                        }
                    }
                }
            }
        }

        /// Whatever the limits and charges, a charge either debits every level of the chain by
        /// exactly n or changes nothing anywhere; and no level ever goes below zero.
        #[test]
        fn charge_is_all_or_nothing_across_the_chain(
            limits in proptest::collection::vec(proptest::option::of(0u64..200), 1..6),
            charges in proptest::collection::vec((0usize..6, 1u64..80), 1..40),
        ) {
            let mut a = Accounts::new();
            let mut chain = vec![a.root(&q(limits[0]), 0)];
            for l in &limits[1..] {
                let parent = *chain.last().unwrap();
                chain.push(a.child(parent, &q(*l), 0).unwrap());
            }
            for (at, n) in charges {
                let acc = chain[at % chain.len()];
                let before: Vec<_> = chain.iter().map(|c| (a.remaining(*c, 0).tokens, a.usage(*c).tokens)).collect();
                let res = a.charge(acc, Meter::Tokens, n);
                let after: Vec<_> = chain.iter().map(|c| (a.remaining(*c, 0).tokens, a.usage(*c).tokens)).collect();
                let depth = at % chain.len();
                match res {
                    Ok(()) => {
                        for (i, (b, f)) in before.iter().zip(&after).enumerate() {
                            if i <= depth {
                                prop_assert_eq!(f.1, b.1 + n);
                                prop_assert_eq!(f.0, b.0.map(|x| x - n));
                            } else {
                                prop_assert_eq!(f, b);
                            }
                        }
                    }
                    Err(_) => {
                        prop_assert_eq!(&before, &after);
                        prop_assert!(before[..=depth].iter().any(|b| b.0.is_some_and(|x| x < n)));
                    }
                }
            }
        }
    }
}
