//! PLURNK.md §5 — the sessions store: durable rows across opens, refusal of corrupt and
//! foreign files, migrations recorded, the immutability and cost rollup triggers, and the
//! `store` device's scope.

use std::sync::Arc;

use agentos_abi::device::ChatReply;
use agentos_abi::device::TokenUsage;
use agentos_drivers::llm::ScriptedProvider;
use agentos_engine::store::{schema, Origin, Store, StoreError};
use agentos_engine::turn::EngineConfig;
use agentos_engine::LoopOptions;

use crate::common::Harness;

#[test]
fn a_second_store_open_sees_the_same_rows() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("sessions.db");
    let store = Arc::new(Store::open(&path).expect("open"));
    let provider = Arc::new(ScriptedProvider::new([
        ChatReply::text("<<PLAN:p:PLAN\n<<EDIT(known:///k.md):kept:EDIT\n<<SEND[102]:w:SEND"),
        ChatReply::text("<<PLAN:p:PLAN\n<<SEND[200]:ok:SEND"),
    ]));
    let h = Harness::with(EngineConfig::default(), provider, Some(store));
    let lp = h.run_loop("persist", LoopOptions::default());
    let rows = h.rows(&lp);
    let again = Store::open(&path).expect("second open");
    assert_eq!(again.log_rows(h.run.id).expect("rows"), rows);
    assert_eq!(again.loop_row(lp.id).expect("loop").status, 200);
    assert_eq!(again.turns(lp.id).expect("turns").len(), 2);
    assert_eq!(
        again.schema_version().expect("version"),
        schema::MIGRATIONS.len() as i64
    );
}

#[test]
fn a_corrupt_file_is_an_error_at_open() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("sessions.db");
    std::fs::write(&path, vec![0x5a; 8192]).expect("write");
    let err = Store::open(&path).expect_err("garbage is not a database");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert_eq!(
        std::fs::read(&path).expect("read"),
        vec![0x5a; 8192],
        "the file is untouched"
    );
}

#[test]
fn a_foreign_sqlite_file_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("other.db");
    {
        let c = rusqlite::Connection::open(&path).expect("sqlite");
        c.execute_batch("CREATE TABLE notes (x TEXT); INSERT INTO notes VALUES ('mine');")
            .expect("ddl");
    }
    let err = Store::open(&path).expect_err("foreign");
    assert!(matches!(err, StoreError::Foreign { .. }), "{err}");
    let c = rusqlite::Connection::open(&path).expect("sqlite");
    let n: i64 = c
        .query_row("SELECT count(*) FROM notes", [], |r| r.get(0))
        .expect("count");
    assert_eq!(n, 1, "nothing was reset");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("sessions.db");
    drop(Store::open(&path).expect("create"));
    {
        let c = rusqlite::Connection::open(&path).expect("sqlite");
        c.execute_batch("PRAGMA user_version = 999;").expect("bump");
    }
    let err = Store::open(&path).expect_err("too new");
    assert!(
        matches!(err, StoreError::TooNew { found: 999, .. }),
        "{err}"
    );
}

#[test]
fn log_rows_are_immutable_but_for_resolution_and_folding() {
    let path = tempfile::tempdir().expect("tmp");
    let file = path.path().join("s.db");
    let store = Store::open(&file).expect("open");
    let s = store
        .create_session(Some("t"), None, "{}")
        .expect("session");
    let r = store
        .create_run(s.id, "main", Origin::Model, None)
        .expect("run");
    drop(store);
    let c = rusqlite::Connection::open(&file).expect("sqlite");
    c.execute_batch(&format!(
        "INSERT INTO loops (id, run_id, sequence, status, prompt, created_at) VALUES (1, {r}, 1, 102, 'p', 0);
         INSERT INTO turns (id, loop_id, sequence, timestamp, status, usage_cost_pico) VALUES (1, 1, 1, 0, 102, 7);
         INSERT INTO log_entries (id, run_id, loop_id, turn_id, sequence, at, origin, op, tx, status_rx)
           VALUES (1, {r}, 1, 1, 1, 0, 'model', 'READ', 'x', 200);",
        r = r.id
    ))
    .expect("rows");
    let changed_tx = c.execute("UPDATE log_entries SET tx = 'y' WHERE id = 1", []);
    assert!(changed_tx.is_err(), "tx is immutable");
    c.execute(
        "UPDATE log_entries SET expanded = 0, status_rx = 400, state = 'failed' WHERE id = 1",
        [],
    )
    .expect("fold and resolution may change");
    // Cost rollup: the turn's 7 pico-USD reached the run and the session.
    let (run_cost, session_cost): (i64, i64) = c
        .query_row(
            "SELECT r.cost_pico, s.cost_pico FROM runs r JOIN sessions s ON s.id = r.session_id",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("costs");
    assert_eq!((run_cost, session_cost), (7, 7));
    c.execute("UPDATE turns SET usage_cost_pico = 10 WHERE id = 1", [])
        .expect("update");
    let run_cost: i64 = c
        .query_row("SELECT cost_pico FROM runs", [], |r| r.get(0))
        .expect("cost");
    assert_eq!(run_cost, 10);
    // A terminal status stamps terminated_at.
    c.execute("UPDATE loops SET status = 200 WHERE id = 1", [])
        .expect("finish");
    let stamped: Option<i64> = c
        .query_row("SELECT terminated_at FROM loops WHERE id = 1", [], |r| {
            r.get(0)
        })
        .expect("stamp");
    assert!(stamped.is_some());
}

#[test]
fn turn_usage_and_cost_land_on_the_turn_row() {
    let reply = ChatReply {
        content: "<<PLAN:p:PLAN\n<<SEND[200]:ok:SEND".into(),
        usage: Some(TokenUsage {
            prompt_tokens: 1000,
            completion_tokens: 20,
            cached_tokens: 0,
        }),
        model: "gpt-4o-mini".into(),
        ..ChatReply::default()
    };
    let h = Harness::with(
        EngineConfig::default(),
        Arc::new(ScriptedProvider::new([reply])),
        None,
    );
    let lp = h.run_loop("x", LoopOptions::default());
    let t = &h.turns(&lp)[0];
    assert_eq!((t.usage.prompt, t.usage.completion), (1000, 20));
    assert_eq!(t.model.as_deref(), Some("gpt-4o-mini"));
    assert!(t.usage.cost_pico > 0, "{t:?}");
    let run = h.engine.store().run(h.run.id).expect("run");
    assert_eq!(run.cost_pico, t.usage.cost_pico, "rolled up to the run");
    let packet: serde_json::Value = serde_json::from_str(&t.packet).expect("packet json");
    assert!(packet["sections"].as_array().is_some_and(|s| s.len() >= 8));
}

#[test]
fn a_store_handle_cannot_write_another_runs_rows() {
    use agentos_engine::store::{LogRow, TurnCommit, TurnRow};
    let store = Store::open_in_memory().expect("store");
    let s = store.create_session(None, None, "{}").expect("session");
    let mine = store
        .create_run(s.id, "mine", Origin::Model, None)
        .expect("run");
    let theirs = store
        .create_run(s.id, "theirs", Origin::Model, None)
        .expect("run");
    let their_loop = store.create_loop(theirs.id, "p", "{}", None).expect("loop");
    let turn = TurnRow {
        id: 0,
        loop_id: their_loop.id,
        sequence: 1,
        timestamp: 0,
        status: 102,
        usage: Default::default(),
        packet: "{}".into(),
        finish_reason: None,
        model: None,
    };
    let commit = TurnCommit {
        turn,
        turn_id: None,
        rows: Vec::<LogRow>::new(),
        folds: vec![],
        entries: vec![],
        loop_status: None,
    };
    let err = store
        .commit_turn(s.id, mine.id, commit)
        .expect_err("scoped");
    assert!(matches!(err, StoreError::Refused(_)), "{err}");
    assert!(store.turns(their_loop.id).expect("turns").is_empty());
}

/// The `store` device: an unscoped cap opens nothing; a cap attenuated to a session and run
/// reads its own run's loops and is refused another run's; a scope cannot be widened.
#[test]
fn the_store_device_is_scoped_by_its_cap() {
    use agentos_abi::device::{from_value, to_value};
    use agentos_abi::sys::Attenuation;
    use agentos_abi::{Image, SysMsg, Syscalls};
    use agentos_engine::store::device::{StoreDriver, StoreRequest, StoreScope};
    use agentos_engine::store::LoopRow;
    use agentos_kernel::{BootOpts, Kernel, KernelConfig, Sys};
    use std::sync::Mutex;

    let store = Arc::new(Store::open_in_memory().expect("store"));
    let s = store.create_session(None, None, "{}").expect("session");
    let mine = store
        .create_run(s.id, "mine", Origin::Model, None)
        .expect("run");
    let theirs = store
        .create_run(s.id, "theirs", Origin::Model, None)
        .expect("run");
    let my_loop = store.create_loop(mine.id, "p", "{}", None).expect("loop");
    let their_loop = store.create_loop(theirs.id, "q", "{}", None).expect("loop");
    let k = Kernel::new(KernelConfig::deterministic(1));
    k.register_driver(Arc::new(StoreDriver::new(store.clone())))
        .expect("register");
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let out = seen.clone();
    let (mine_id, theirs_id) = (my_loop.id, their_loop.id);
    let mine_scope = StoreScope {
        session_id: s.id,
        run_id: mine.id,
    };
    let their_scope = StoreScope {
        session_id: s.id,
        run_id: theirs.id,
    };
    let img = Image::new("probe", move |sys: Sys, _| {
        let out = out.clone();
        async move {
            let boot = sys.recv().await;
            let dev = match boot.sys() {
                Some(SysMsg::Boot { devices, .. }) => devices[0].1,
                _ => return Ok(()),
            };
            let say = |m: String| out.lock().expect("lock").push(m);
            let first = match sys.open(dev).await {
                Ok(_) => "opened".to_owned(),
                Err(e) => format!("refused: {e}"),
            };
            say(first);
            let scoped = sys.attenuate(
                dev,
                Attenuation {
                    scope: Some(mine_scope.cap_scope()),
                    ..Attenuation::default()
                },
            )?;
            let wider = sys.attenuate(
                scoped,
                Attenuation {
                    scope: Some(their_scope.cap_scope()),
                    ..Attenuation::default()
                },
            );
            say(format!(
                "widen: {}",
                if wider.is_ok() { "allowed" } else { "refused" }
            ));
            let h = sys.open(scoped).await?;
            let ask = |id| to_value(&StoreRequest::Loop { loop_id: id }).expect("value");
            let own: LoopRow = from_value(sys.read(h, ask(mine_id)).await?).expect("row");
            say(format!("own loop {}", own.prompt));
            let other = match sys.read(h, ask(theirs_id)).await {
                Ok(_) => "read theirs".to_owned(),
                Err(e) => format!("theirs refused: {e}"),
            };
            say(other);
            Ok(())
        }
    });
    let pid = k
        .boot(
            img,
            BootOpts {
                grant: vec!["store".into()],
                ..BootOpts::default()
            },
        )
        .expect("boot");
    k.wait_exit(pid).expect("exit");
    let seen = seen.lock().expect("lock").clone();
    assert!(
        seen[0].starts_with("refused:") && seen[0].contains("scope"),
        "{seen:?}"
    );
    assert_eq!(seen[1], "widen: refused");
    assert_eq!(seen[2], "own loop p");
    assert!(
        seen[3].starts_with("theirs refused") && seen[3].contains("not in run"),
        "{seen:?}"
    );
}
