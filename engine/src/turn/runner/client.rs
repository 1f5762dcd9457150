//! The one turn of a client loop (see [`crate::turn::client`] for the design): parse the
//! client's text, dispatch every statement with origin `client`, commit every row in one
//! transaction, answer the host, then settle the proposals in order and let accepted
//! commands run to their end.

use agentos_abi::Syscalls;

use super::{LoopRunner, RunnerError, TurnRows};
use crate::grammar::{parse, Item, Op, Severity, Statement};
use crate::schemes::dispatch::{dispatch, DispatchCtx};
use crate::schemes::effect::Effect;
use crate::schemes::world::TurnWorld;
use crate::store::{status, Origin, RowId, RowOp, RowState, TurnRow, TurnUsage};
use crate::turn::client::{ClientRefusal, OpResult, ReplyTo};
use crate::turn::stream::StreamClosed;

/// Where a statement's result is until the turn commits.
enum Pending {
    /// The row at this ordinal of the turn.
    Row(usize),
    /// An action that wrote no row (a successful OPEN/FOLD).
    Bare(OpResult),
}

/// What the dispatch of a client turn collects besides its rows.
#[derive(Default)]
struct Collected {
    pending: Vec<Pending>,
    folds: Vec<(RowId, bool)>,
    proposals: Vec<(usize, Effect)>,
}

impl<S: Syscalls> LoopRunner<S> {
    /// Runs this loop as a client turn over its prompt (the client's statements) and
    /// answers `reply` once every row is committed. Returns the loop's final status (200).
    pub async fn client(mut self, reply: &ReplyTo) -> Result<u16, RunnerError> {
        self.turn_seq = 1;
        self.cur_turn = None;
        let now = self.sys.now() as i64;
        let lp = self.lp.clone();
        let mut rows = TurnRows {
            lp: &lp,
            turn_seq: 1,
            at: now,
            rows: Vec::new(),
            committed: 0,
        };
        let sys = self.sys.clone();
        let mut world = TurnWorld::new(&sys, self.store);
        let mut got = Collected::default();
        let parsed = parse(&lp.prompt);
        for item in &parsed.items {
            match item {
                Item::Statement { statement } => {
                    self.client_statement(&mut world, &mut rows, &mut got, statement)
                        .await;
                }
                Item::Error { error } if error.severity == Severity::Error => {
                    got.pending.push(Pending::Row(rows.next_ordinal()));
                    rows.parse_error(Origin::Client, error);
                }
                _ => {}
            }
        }
        if let Some(t) = &parsed.unparsed_tail {
            got.pending.push(Pending::Row(rows.next_ordinal()));
            rows.unparsed_tail(Origin::Client, t);
        }
        if got.pending.is_empty() {
            got.pending.push(Pending::Row(rows.next_ordinal()));
            rows.error(
                Origin::Client,
                "grammar",
                400,
                "400 no statement: expected <<OP…:OP".into(),
            );
        }
        for (at, _) in &got.proposals {
            if let Some(r) = rows.rows.get_mut(*at) {
                r.state = Some(RowState::Proposed);
            }
        }
        let parked = !got.proposals.is_empty();
        let turn = TurnRow {
            id: 0,
            loop_id: lp.id,
            sequence: 1,
            timestamp: now,
            status: 200,
            usage: TurnUsage::default(),
            packet: "{}".into(),
            finish_reason: None,
            model: None,
        };
        let written = rows.rows.len();
        let loop_status = if parked {
            (status::PARKED, None)
        } else {
            (200, None)
        };
        let committed = match self
            .commit(
                turn.clone(),
                std::mem::take(&mut rows.rows),
                std::mem::take(&mut got.folds),
                world.take_writes(),
                Some(loop_status),
            )
            .await
        {
            Ok(c) => c,
            Err(e) => {
                reply.send(Err(ClientRefusal::Failed(e.to_string())));
                return Err(e);
            }
        };
        self.cur_turn = Some(committed.turn_id);
        let base = self.log.len().saturating_sub(written);
        let results: Vec<OpResult> = got
            .pending
            .into_iter()
            .filter_map(|p| match p {
                Pending::Row(i) => self.log.get(base + i).map(OpResult::of_row),
                Pending::Bare(r) => Some(r),
            })
            .collect();
        reply.send(Ok(results));
        if !parked {
            return Ok(200);
        }
        for (at, effect) in got.proposals {
            let Some(&row_id) = committed.row_ids.get(at) else {
                continue;
            };
            let stale = effect.stale_clobber_risk(&self.sys, self.devices.fs).await;
            self.settle(&mut world, row_id, &effect, stale, 1, at)
                .await?;
        }
        // A command accepted above runs to its end: this loop holds the `exec` handle that
        // started it (closing it would stop the command). Its output lands as READ rows.
        self.wait_streams().await;
        let mut tail = TurnRows {
            lp: &lp,
            turn_seq: 1,
            at: self.sys.now() as i64,
            rows: Vec::new(),
            committed: written,
        };
        self.stream_rows(&mut world, &mut tail).await;
        self.commit(
            turn,
            tail.rows,
            Vec::new(),
            world.into_writes(),
            Some((200, None)),
        )
        .await?;
        Ok(200)
    }

    /// Dispatches one client statement into `rows`. PLAN and a broadcast SEND (no
    /// recipient) are logged with no effect: the loop's disposition is the model's business.
    async fn client_statement(
        &self,
        world: &mut TurnWorld<'_, S>,
        rows: &mut TurnRows<'_>,
        got: &mut Collected,
        s: &Statement,
    ) {
        let broadcast = s.op == Op::Send && s.target.is_none();
        if s.op == Op::Plan || broadcast {
            let mut r = rows.new_row(Origin::Client, RowOp::Op(s.op));
            r.suffix = s.suffix.clone();
            r.signal = s
                .signal
                .as_ref()
                .and_then(|x| serde_json::to_string(x).ok());
            r.status = if broadcast {
                s.signal_int().map_or(200, |c| c.clamp(100, 599) as u16)
            } else {
                200
            };
            r.rx = Some(s.body_raw().to_owned()).filter(|b| !b.is_empty());
            r.tx = r.rx.clone();
            got.pending.push(Pending::Row(rows.next_ordinal()));
            rows.push(r);
            return;
        }
        let mut ctx = DispatchCtx {
            world,
            schemes: &self.schemes,
            log: &self.log,
            origin: Origin::Client,
            devices: &self.devices,
            streams: &self.streams,
            me: &self.me,
        };
        for mut a in dispatch(&mut ctx, s).await {
            got.folds.extend(a.folds.iter().copied());
            if a.writes_row {
                let at = rows.next_ordinal();
                if let Some(e) = a.proposal.take() {
                    got.proposals.push((at, e));
                }
                got.pending.push(Pending::Row(at));
                rows.action(Origin::Client, s, a);
            } else {
                got.pending
                    .push(Pending::Bare(OpResult::bare(s, a, Some(rows.lp.id))));
            }
        }
    }

    /// Waits until every stream this loop started has closed (its pump's note). Unbounded
    /// but for the command's own `<T>`: `loop.cancel` kills the loop, and with it the
    /// commands.
    async fn wait_streams(&mut self) {
        use agentos_abi::Body;
        while self.watched.iter().any(|w| w.closed.is_none()) {
            let pumps: Vec<agentos_abi::Pid> = self
                .watched
                .iter()
                .filter(|w| w.closed.is_none())
                .map(|w| w.pump)
                .collect();
            let got = self
                .sys
                .recv_where(
                    move |m| {
                        pumps.contains(&m.from)
                            && matches!(&m.body, Body::Local(b)
                                if b.downcast_ref::<StreamClosed>().is_some())
                    },
                    None,
                )
                .await;
            let Some(m) = got else { break };
            let from = m.from;
            let Ok(c) = m.body.downcast::<StreamClosed>() else {
                break;
            };
            // By the pump that sent it: each pump closes once.
            if let Some(w) = self.watched.iter_mut().find(|w| w.pump == from) {
                w.closed = Some((c.status, c.summary));
            }
        }
    }
}
