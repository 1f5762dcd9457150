//! PLURNK.md §3.3 — runTurn: the turn-1 foist, the premature-terminate and idle-turn
//! steers, OPEN/FOLD as render directives, hostile model output, cancel mid-generation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use agentos_abi::device::{ChatReply, ChatRequest};
use agentos_abi::driver::BoxFuture;
use agentos_drivers::llm::{LlmDriver, LlmError, Provider};
use agentos_engine::store::{Origin, RowOp, Store};
use agentos_engine::turn::EngineConfig;
use agentos_engine::{Engine, LoopOptions};
use agentos_kernel::{Kernel, KernelConfig};

use crate::common::{ops, user_message, Harness};

#[test]
fn turn_one_foists_the_prompt_folded_and_the_catalog() {
    let h = Harness::new(&["<<PLAN:p:PLAN\n<<SEND[200]:hi:SEND"]);
    let lp = h.run_loop("say hi", LoopOptions::default());
    let foisted: Vec<_> = h
        .rows(&lp)
        .into_iter()
        .filter(|r| r.origin == Origin::Plurnk)
        .map(|r| {
            (
                r.op.as_str().to_owned(),
                r.target.map(|t| t.uri()).unwrap_or_default(),
                r.expanded,
            )
        })
        .collect();
    assert_eq!(
        foisted,
        vec![
            ("EDIT".to_owned(), "plurnk:///prompt/1/1".to_owned(), false),
            ("FIND".to_owned(), "known:///**".to_owned(), true),
            ("FIND".to_owned(), "unknown:///**".to_owned(), true),
        ]
    );
    let user = user_message(&h, 0);
    assert!(
        user.contains("## Plurnk System User Prompt\nsay hi"),
        "{user}"
    );
}

#[test]
fn premature_send_200_is_steered_to_102() {
    let h = Harness::new(&[
        "<<PLAN:p:PLAN\n<<READ(known:///x.md)::READ\n<<SEND[200]:done already:SEND",
        "<<PLAN:p:PLAN\n<<SEND[200]:really done:SEND",
    ]);
    let lp = h.run_loop("x", LoopOptions::default());
    assert_eq!(lp.status, 200);
    assert_eq!(lp.terminal_message.as_deref(), Some("really done"));
    assert_eq!(h.turn_statuses(&lp), vec![102, 200]);
    assert_eq!(h.ops(&lp, 1), ops(&[("error", 409), ("READ", 404)]));
    // The steer is visible to the model next turn as an error pointer.
    assert!(
        user_message(&h, 1).contains("409 log:///1/1/"),
        "{}",
        user_message(&h, 1)
    );
}

#[test]
fn idle_turn_is_a_409_steer() {
    let h = Harness::new(&[
        "<<PLAN:hmm:PLAN\n<<SEND[102]:thinking:SEND",
        "<<PLAN:p:PLAN\n<<SEND[200]:ok:SEND",
    ]);
    let lp = h.run_loop("x", LoopOptions::default());
    assert_eq!(h.ops(&lp, 1), ops(&[("error", 409)]));
    assert_eq!(lp.status, 200);
}

#[test]
fn open_and_fold_change_the_next_packet_and_write_no_row() {
    let h = Harness::new(&[
        "<<PLAN:p:PLAN\n<<EDIT(known:///s.md):SECRET-MARKER:EDIT\n<<SEND[102]:w:SEND",
        "<<PLAN:p:PLAN\n<<FOLD(log:///1/1/**)::FOLD\n<<SEND[102]:fold:SEND",
        "<<PLAN:p:PLAN\n<<OPEN(log:///1/1/5/EDIT)::OPEN\n<<SEND[102]:open:SEND",
        "<<PLAN:p:PLAN\n<<OPEN(log:///1/1/5)::OPEN\n<<SEND[102]:again:SEND",
        "<<PLAN:p:PLAN\n<<SEND[200]:ok:SEND",
    ]);
    let lp = h.run_loop("x", LoopOptions::default());
    assert_eq!(lp.status, 200, "{lp:?}");
    let shows = |i: usize| user_message(&h, i).contains("1:\tSECRET-MARKER");
    assert!(shows(1), "the EDIT row is open in turn 2's packet");
    assert!(!shows(2), "FOLD hid it from turn 3's packet");
    assert!(shows(3), "OPEN brought it back in turn 4's packet");
    assert_eq!(h.ops(&lp, 2), ops(&[]), "a successful FOLD writes no row");
    assert_eq!(h.ops(&lp, 3), ops(&[]), "a successful OPEN writes no row");
    assert_eq!(
        h.ops(&lp, 4),
        ops(&[("OPEN", 304)]),
        "a no-op OPEN answers 304"
    );
}

fn hostile_turns() -> Vec<String> {
    // A fixed pseudo-random byte soup (xorshift), decoded lossily as a provider would.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x & 0xff) as u8
        })
        .collect();
    let soup = String::from_utf8_lossy(&bytes).into_owned();
    let heredoc = format!(
        "<<PLAN:p:PLAN\n<<EDIT(known:///x.md):{}",
        "a".repeat(1 << 20)
    );
    vec![soup, heredoc, "<<<<READ(((<1,2,>>>:::READ<<SEND[".into()]
}

#[test]
fn hostile_model_output_ends_as_parse_error_rows() {
    let turns = hostile_turns();
    let refs: Vec<&str> = turns.iter().map(String::as_str).collect();
    let h = Harness::new(&refs);
    let lp = h.run_loop("x", LoopOptions::default());
    assert_eq!(lp.status, 500, "three struck turns: {lp:?}");
    let rows = h.rows(&lp);
    let errors: Vec<_> = rows
        .iter()
        .filter(|r| r.turn_seq == 2 && r.op == RowOp::Error)
        .collect();
    assert!(errors.iter().all(|r| r.status == 400), "{errors:?}");
    assert!(
        errors
            .iter()
            .any(|r| r.rx.as_deref().unwrap_or("").contains("unparsed tail")),
        "{errors:?}"
    );
    // Nothing after the unterminated heredoc ran: no entry was written.
    assert_eq!(h.ops(&lp, 2).iter().filter(|(o, _)| o == "EDIT").count(), 0);
    // The verbatim emission is kept, folded.
    let model = rows
        .iter()
        .find(|r| r.turn_seq == 2 && r.op == RowOp::Model)
        .expect("model row");
    assert!(!model.expanded);
    assert_eq!(model.rx.as_ref().map(String::len), Some(turns[1].len()));
}

/// A provider that never answers: it reports the call, then waits forever; dropping the
/// call is reported too.
struct Gate {
    called: Mutex<Option<mpsc::Sender<()>>>,
    dropped: Arc<AtomicBool>,
    dropped_tx: Mutex<Option<mpsc::Sender<()>>>,
}

struct DropFlag(Arc<AtomicBool>, Option<mpsc::Sender<()>>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
        if let Some(tx) = self.1.take() {
            let _ = tx.send(());
        }
    }
}

impl Provider for Gate {
    fn name(&self) -> &str {
        "gate"
    }
    fn chat<'a>(&'a self, _req: &'a ChatRequest) -> BoxFuture<'a, Result<ChatReply, LlmError>> {
        if let Some(tx) = self.called.lock().expect("lock").take() {
            let _ = tx.send(());
        }
        let flag = DropFlag(
            self.dropped.clone(),
            self.dropped_tx.lock().expect("lock").take(),
        );
        Box::pin(async move {
            let _flag = flag;
            std::future::pending::<()>().await;
            Err(LlmError::Scripted("unreachable".into()))
        })
    }
}

#[test]
fn cancel_mid_generation_ends_499_and_drops_the_model_call() {
    let (called_tx, called_rx) = mpsc::channel();
    let (dropped_tx, dropped_rx) = mpsc::channel();
    let dropped = Arc::new(AtomicBool::new(false));
    let gate = Arc::new(Gate {
        called: Mutex::new(Some(called_tx)),
        dropped: dropped.clone(),
        dropped_tx: Mutex::new(Some(dropped_tx)),
    });
    let k = Kernel::new(KernelConfig::deterministic(3));
    k.register_driver(Arc::new(LlmDriver::new(gate).expect("driver")))
        .expect("register");
    let engine = Engine::start(
        k,
        Arc::new(Store::open_in_memory().expect("store")),
        EngineConfig::default(),
    )
    .expect("engine");
    let s = engine.create_session(None, None, "{}").expect("session");
    let run = engine.create_run(s.id, "main", Origin::Model).expect("run");
    let lp = engine
        .start_loop(run.id, "wait", &LoopOptions::default())
        .expect("loop");
    let done = std::thread::scope(|sc| {
        let engine = &engine;
        sc.spawn(move || {
            called_rx
                .recv_timeout(Duration::from_secs(30))
                .expect("the model was called");
            engine.cancel(run.id).expect("cancel");
        });
        engine.wait_loop(lp.id, None)
    })
    .expect("loop ends");
    assert_eq!(done.status, 499);
    assert_eq!(done.terminal_message.as_deref(), Some("cancelled"));
    dropped_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the in-flight model call was dropped");
    assert!(dropped.load(Ordering::SeqCst));
    // No turn was committed for the interrupted turn.
    assert!(engine.store().turns(lp.id).expect("turns").is_empty());
}
