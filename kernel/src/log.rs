//! The bounded event log: the kernel's audit trail, running stats and trace hash.
//!
//! Emitting is a push into a fixed-capacity ring plus a few counter bumps; it never allocates
//! for the hot events (send, recv, sched). The running statistics cover the whole history,
//! not just what the ring still holds. The trace hash folds every event (kind, pids, reason,
//! timestamp) into a 64-bit word-wise multiplicative digest, so two runs can be compared for determinism without
//! keeping their traces.

use agentos_abi::{Event, EventKind, ExitReason, LogLevel, Meter, Pid};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;

/// A process's `log` line as a host sees it (the seed's `onLog`).
#[derive(Clone, Debug, PartialEq)]
pub struct LogLine {
    /// Kernel-clock time in ms.
    pub ts: u64,
    /// The process that logged it.
    pub pid: Pid,
    /// Its level.
    pub level: LogLevel,
    /// The text.
    pub line: Arc<str>,
}

/// What a subscriber receives (`Kernel::subscribe`): every kernel event as it is emitted (the
/// seed's `logSink`) and every process `log` line (`onLog`), in emission order.
#[derive(Clone, Debug, PartialEq)]
pub enum HostEvent {
    /// A kernel event.
    Event(Event),
    /// A process's log line.
    Log(LogLine),
}

/// A subscriber's end (`Kernel::subscribe`): events arrive in batches (one per scheduling step
/// at most), which [`Subscription::try_iter`] and [`Subscription::iter`] flatten.
pub struct Subscription {
    rx: Receiver<Vec<HostEvent>>,
    /// Dropped with the subscription: the kernel forgets a sink whose token is gone.
    _alive: Arc<()>,
}

impl Subscription {
    /// Every event already delivered, without waiting.
    pub fn try_iter(&self) -> impl Iterator<Item = HostEvent> + '_ {
        self.rx.try_iter().flatten()
    }
    /// Every event, waiting for more until the kernel is dropped.
    pub fn iter(&self) -> impl Iterator<Item = HostEvent> + '_ {
        self.rx.iter().flatten()
    }
    /// The next batch, waiting; `None` once the kernel is gone.
    pub fn recv_batch(&self) -> Option<Vec<HostEvent>> {
        self.rx.recv().ok()
    }
}

/// A batch of host events on its way to the subscribers, published after the kernel lock.
pub(crate) struct Publish {
    sinks: Vec<SyncSender<Vec<HostEvent>>>,
    batch: Vec<HostEvent>,
    dropped: Arc<AtomicU64>,
}

impl Publish {
    /// Hand the batch to every subscriber (never waiting: a full channel drops the batch and
    /// counts its events). Runs outside the kernel lock, so a subscriber thread's wake-up
    /// (a futex) never sits inside it.
    pub(crate) fn run(self) {
        let n = self.sinks.len();
        let mut batch = Some(self.batch);
        for (i, s) in self.sinks.into_iter().enumerate() {
            let b = if i + 1 == n {
                batch.take().unwrap_or_default()
            } else {
                batch.clone().unwrap_or_default()
            };
            let len = b.len() as u64;
            if let Err(TrySendError::Full(_)) = s.try_send(b) {
                self.dropped.fetch_add(len, Ordering::Relaxed);
            }
        }
    }
}

/// Where events leave the kernel: subscribers' bounded channels and, in record mode, the
/// journal store. Allocated on first use, so an untapped kernel pays one branch per event.
#[derive(Default)]
struct Taps {
    sinks: Vec<(SyncSender<Vec<HostEvent>>, Arc<()>)>,
    /// Events and log lines waiting to be published to the subscribers.
    pending: Vec<HostEvent>,
    /// Events waiting to be appended to the journal store (outside the kernel lock).
    outbox: Vec<Event>,
    persist: bool,
    /// Events a full subscriber channel could not take.
    dropped: Arc<AtomicU64>,
}

const KINDS: usize = 10;

fn kind_index(k: &EventKind) -> usize {
    match k {
        EventKind::Boot => 0,
        EventKind::Spawn { .. } => 1,
        EventKind::Exit { .. } => 2,
        EventKind::Send { .. } => 3,
        EventKind::Recv { .. } => 4,
        EventKind::Sched { .. } => 5,
        EventKind::Signal { .. } => 6,
        EventKind::Charge { .. } => 7,
        EventKind::Fault { .. } => 8,
        EventKind::Shutdown { .. } => 9,
    }
}

const KIND_NAMES: [&str; KINDS] = [
    "boot", "spawn", "exit", "send", "recv", "sched", "signal", "charge", "fault", "shutdown",
];

/// Running aggregates over the whole event history.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogStats {
    /// Events by type name.
    pub by_type: Vec<(&'static str, u64)>,
    /// Exits by reason kind.
    pub exits_by_reason: Vec<(String, u64)>,
    /// Charged totals by meter.
    pub charged: Vec<(Meter, u64)>,
}

/// One slot of the ring. The hot events (send, recv, sched: several per message) sit inline in
/// 32 bytes with no drop glue; the rest are boxed. Half the size of an `Event`, so the ring's
/// stores miss the cache half as often — they were the largest cost of `emit` on the message
/// path. A slot's sequence number is implied by its position.
enum Rec {
    Send { ts: u64, from: Pid, to: Pid },
    Recv { ts: u64, pid: Pid },
    Sched { ts: u64, pid: Pid },
    Other(Box<Event>),
}

impl Rec {
    fn event(&self, seq: u64) -> Event {
        let (ts, kind) = match self {
            Rec::Send { ts, from, to } => (
                *ts,
                EventKind::Send {
                    from: *from,
                    to: *to,
                },
            ),
            Rec::Recv { ts, pid } => (*ts, EventKind::Recv { pid: *pid }),
            Rec::Sched { ts, pid } => (*ts, EventKind::Sched { pid: *pid }),
            Rec::Other(e) => return (**e).clone(),
        };
        Event { seq, ts, kind }
    }
}

/// The bounded event log.
pub struct EventLog {
    cap: usize,
    buf: VecDeque<Rec>,
    seq: u64,
    by_type: [u64; KINDS],
    exits: FxHashMap<String, u64>,
    charged: [u64; 8],
    hash: u64,
    taps: Option<Box<Taps>>,
}

const HASH_SEED: u64 = 0xcbf2_9ce4_8422_2325;
const HASH_K: u64 = 0x517c_c1b7_2722_0a95;

/// One word into the digest (FxHash-style: a rotate, a xor and a multiply per word, so the
/// hot events cost a few cycles, not a byte loop).
#[inline]
fn mix(h: u64, v: u64) -> u64 {
    (h.rotate_left(5) ^ v).wrapping_mul(HASH_K)
}

fn mix_str(h: u64, s: &str) -> u64 {
    s.as_bytes().chunks(8).fold(mix(h, s.len() as u64), |h, c| {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        mix(h, u64::from_le_bytes(w))
    })
}

fn meter_index(m: Meter) -> usize {
    m as usize
}

fn mix_reason(h: u64, r: &ExitReason) -> u64 {
    let h = mix_str(h, r.kind());
    match r {
        ExitReason::Killed { by } => mix(h, by.0),
        ExitReason::Linked { pid } => mix(h, pid.0),
        ExitReason::Fault { error } => mix_str(h, error),
        ExitReason::Quota { resource } => mix(h, meter_index(*resource) as u64),
        _ => h,
    }
}

impl EventLog {
    /// A log that keeps the last `cap` events.
    pub fn new(cap: usize) -> Self {
        EventLog {
            cap: cap.max(1),
            buf: VecDeque::with_capacity(cap.clamp(1, 1 << 16)),
            seq: 0,
            by_type: [0; KINDS],
            exits: FxHashMap::default(),
            charged: [0; 8],
            hash: HASH_SEED,
            taps: None,
        }
    }

    /// Record an event at kernel time `ts`.
    #[inline]
    pub fn emit(&mut self, ts: u64, kind: EventKind) {
        self.by_type[kind_index(&kind)] += 1;
        let mut h = mix(mix(self.hash, ts), kind_index(&kind) as u64);
        match &kind {
            EventKind::Spawn { pid, parent, name } => {
                h = mix_str(mix(mix(h, pid.0), parent.map_or(0, |p| p.0 + 1)), name)
            }
            EventKind::Exit { pid, reason } => {
                // Look up before inserting: no allocation for a kind seen before.
                match self.exits.get_mut(reason.kind()) {
                    Some(n) => *n += 1,
                    None => {
                        self.exits.insert(reason.kind().to_owned(), 1);
                    }
                }
                h = mix_reason(mix(h, pid.0), reason);
            }
            EventKind::Send { from, to } => h = mix(mix(h, from.0), to.0),
            EventKind::Recv { pid } | EventKind::Sched { pid } => h = mix(h, pid.0),
            EventKind::Signal { pid, sig } => h = mix(mix(h, pid.0), *sig as u64),
            EventKind::Charge { pid, meter, n } => {
                self.charged[meter_index(*meter)] += n;
                h = mix(mix(mix(h, pid.0), meter_index(*meter) as u64), *n);
            }
            EventKind::Fault { pid, error } => h = mix_str(mix(h, pid.0), error),
            EventKind::Shutdown { reason } => h = mix_reason(h, reason),
            EventKind::Boot => {}
        }
        self.hash = h;
        if self.buf.len() == self.cap {
            self.buf.pop_front();
        }
        if let Some(t) = self.taps.as_deref_mut() {
            let ev = Event {
                seq: self.seq,
                ts,
                kind: kind.clone(),
            };
            if !t.sinks.is_empty() {
                t.pending.push(HostEvent::Event(ev.clone()));
            }
            if t.persist {
                t.outbox.push(ev);
            }
        }
        let rec = match kind {
            EventKind::Send { from, to } => Rec::Send { ts, from, to },
            EventKind::Recv { pid } => Rec::Recv { ts, pid },
            EventKind::Sched { pid } => Rec::Sched { ts, pid },
            kind => Rec::Other(Box::new(Event {
                seq: self.seq,
                ts,
                kind,
            })),
        };
        self.buf.push_back(rec);
        self.seq += 1;
    }

    /// A new subscriber: a bounded channel of `capacity` batches. When it is full, a batch
    /// for it is dropped and its events counted ([`EventLog::sink_drops`]); the kernel never
    /// waits for a subscriber. Dropping the subscription unsubscribes.
    pub fn subscribe(&mut self, capacity: usize) -> Subscription {
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity.max(1));
        let alive = Arc::new(());
        self.taps
            .get_or_insert_with(Box::default)
            .sinks
            .push((tx, alive.clone()));
        Subscription { rx, _alive: alive }
    }

    /// Whether anyone listens for log lines.
    pub fn has_sinks(&self) -> bool {
        self.taps.as_ref().is_some_and(|t| !t.sinks.is_empty())
    }

    /// Queue a process's log line for the subscribers.
    pub fn log_line(&mut self, line: LogLine) {
        if let Some(t) = self.taps.as_deref_mut().filter(|t| !t.sinks.is_empty()) {
            t.pending.push(HostEvent::Log(line));
        }
    }

    /// Whether host events wait to be published.
    #[inline]
    pub fn has_pending(&self) -> bool {
        self.pending_len() > 0
    }

    /// How many host events wait to be published.
    #[inline]
    pub fn pending_len(&self) -> usize {
        self.taps.as_ref().map_or(0, |t| t.pending.len())
    }

    /// Take the pending host events as one batch to publish after the lock (subscribers
    /// that went away are forgotten here).
    pub(crate) fn take_pending(&mut self) -> Option<Publish> {
        let t = self.taps.as_deref_mut()?;
        if t.pending.is_empty() {
            return None;
        }
        // A dropped subscription unsubscribes.
        t.sinks.retain(|(_, alive)| Arc::strong_count(alive) > 1);
        if t.sinks.is_empty() {
            t.pending.clear();
            return None;
        }
        Some(Publish {
            sinks: t.sinks.iter().map(|(s, _)| s.clone()).collect(),
            batch: std::mem::take(&mut t.pending),
            dropped: t.dropped.clone(),
        })
    }

    /// Keep every event from now on for the journal store (record mode).
    pub fn persist(&mut self) {
        self.taps.get_or_insert_with(Box::default).persist = true;
    }

    /// Whether events wait to be appended to the store.
    #[inline]
    pub fn has_outbox(&self) -> bool {
        self.taps.as_ref().is_some_and(|t| !t.outbox.is_empty())
    }

    /// Take the events waiting for the store.
    pub fn take_outbox(&mut self) -> Vec<Event> {
        self.taps
            .as_deref_mut()
            .map(|t| std::mem::take(&mut t.outbox))
            .unwrap_or_default()
    }

    /// Events a full subscriber channel had to drop, over the kernel's life.
    pub fn sink_drops(&self) -> u64 {
        self.taps
            .as_ref()
            .map_or(0, |t| t.dropped.load(Ordering::Relaxed))
    }

    /// The last `n` events, oldest first.
    pub fn tail(&self, n: usize) -> Vec<Event> {
        let skip = self.buf.len().saturating_sub(n);
        let first = self.seq - self.buf.len() as u64;
        self.buf
            .iter()
            .enumerate()
            .skip(skip)
            .map(|(i, r)| r.event(first + i as u64))
            .collect()
    }

    /// Total events ever emitted.
    pub fn count(&self) -> u64 {
        self.seq
    }

    /// Count of events of one type name (`"send"`, `"fault"`, ...).
    pub fn count_of(&self, name: &str) -> u64 {
        KIND_NAMES
            .iter()
            .position(|n| *n == name)
            .map_or(0, |i| self.by_type[i])
    }

    /// The running digest of every event so far.
    pub fn trace_hash(&self) -> u64 {
        self.hash
    }

    /// Aggregates over the whole history.
    pub fn stats(&self) -> LogStats {
        let mut exits: Vec<_> = self.exits.iter().map(|(k, v)| (k.clone(), *v)).collect();
        exits.sort();
        let meters = [
            Meter::Tokens,
            Meter::ToolCalls,
            Meter::Usd,
            Meter::Children,
            Meter::WallMs,
            Meter::Mem,
            Meter::Mailbox,
            Meter::Cpu,
        ];
        LogStats {
            by_type: KIND_NAMES.iter().copied().zip(self.by_type).collect(),
            exits_by_reason: exits,
            charged: meters
                .into_iter()
                .filter(|m| self.charged[meter_index(*m)] > 0)
                .map(|m| (m, self.charged[meter_index(m)]))
                .collect(),
        }
    }
}

/// Convenience for tests: a pid's events of one kind in a trace.
pub fn events_for(trace: &[Event], pid: Pid) -> impl Iterator<Item = &Event> {
    trace.iter().filter(move |e| match &e.kind {
        EventKind::Spawn { pid: p, .. }
        | EventKind::Exit { pid: p, .. }
        | EventKind::Recv { pid: p }
        | EventKind::Sched { pid: p }
        | EventKind::Signal { pid: p, .. }
        | EventKind::Charge { pid: p, .. }
        | EventKind::Fault { pid: p, .. } => *p == pid,
        EventKind::Send { from, to } => *from == pid || *to == pid,
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_slot_is_half_an_event_and_reads_back_the_same() {
        assert!(std::mem::size_of::<Rec>() <= 32);
        assert!(std::mem::size_of::<Event>() >= 48);
        let mut l = EventLog::new(8);
        let kinds = [
            EventKind::Send {
                from: Pid(1),
                to: Pid(2),
            },
            EventKind::Recv { pid: Pid(2) },
            EventKind::Sched { pid: Pid(2) },
            EventKind::Fault {
                pid: Pid(2),
                error: "x".into(),
            },
        ];
        for (i, k) in kinds.iter().enumerate() {
            l.emit(i as u64 * 10, k.clone());
        }
        let back = l.tail(10);
        for (i, (e, k)) in back.iter().zip(&kinds).enumerate() {
            assert_eq!((e.seq, e.ts, &e.kind), (i as u64, i as u64 * 10, k));
        }
    }

    #[test]
    fn ring_is_bounded_and_stats_cover_history() {
        let mut l = EventLog::new(3);
        for i in 0..10 {
            l.emit(i, EventKind::Recv { pid: Pid(i) });
        }
        l.emit(
            10,
            EventKind::Exit {
                pid: Pid(1),
                reason: ExitReason::Normal,
            },
        );
        assert_eq!(l.tail(100).len(), 3);
        assert_eq!(l.tail(1)[0].seq, 10);
        assert_eq!(l.count(), 11);
        assert_eq!(l.count_of("recv"), 10);
        assert_eq!(l.stats().exits_by_reason, vec![("normal".to_owned(), 1)]);
    }

    #[test]
    fn trace_hash_depends_on_content_and_order() {
        let run = |a: u64, b: u64| {
            let mut l = EventLog::new(8);
            l.emit(
                0,
                EventKind::Send {
                    from: Pid(a),
                    to: Pid(b),
                },
            );
            l.emit(1, EventKind::Recv { pid: Pid(b) });
            l.trace_hash()
        };
        assert_eq!(run(1, 2), run(1, 2));
        assert_ne!(run(1, 2), run(2, 1));
    }
}
