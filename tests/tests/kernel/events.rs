//! Events leave the kernel: subscribers see kernel events and process log lines as they
//! happen, and in record mode every event is persisted beside the I/O records.

use crate::util::*;
use agentos_abi::*;
use agentos_kernel::journal::{events_from_store, MemoryStore, Record, Store};
use agentos_kernel::*;

fn chatty() -> KImage {
    init(|sys, _| async move {
        let child = sys
            .spawn(
                image("child", |sys: Sys, _| async move {
                    sys.log(LogLevel::Info, "child says hi");
                    Ok(())
                }),
                SpawnOpts::default(),
            )
            .await?;
        sys.waitpid(child.cap).await?;
        sys.log(LogLevel::Warn, "init done");
        Ok(())
    })
}

#[test]
fn a_subscriber_sees_events_and_log_lines_in_order_as_they_happen() {
    let k = det_with_log(1, 1 << 12);
    let rx = k.subscribe(1024);
    let r = boot_and_wait(&k, chatty());
    assert_eq!(r, ExitReason::Normal);
    let got: Vec<HostEvent> = rx.try_iter().collect();
    let events: Vec<Event> = got
        .iter()
        .filter_map(|h| match h {
            HostEvent::Event(e) => Some(e.clone()),
            HostEvent::Log(_) => None,
        })
        .collect();
    // Every event the ring holds, in the same order, with the same sequence numbers.
    assert_eq!(events, k.trace(usize::MAX));
    let lines: Vec<(Pid, LogLevel, String)> = got
        .iter()
        .filter_map(|h| match h {
            HostEvent::Log(l) => Some((l.pid, l.level, l.line.to_string())),
            HostEvent::Event(_) => None,
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            (Pid(2), LogLevel::Info, "child says hi".to_owned()),
            (Pid(1), LogLevel::Warn, "init done".to_owned()),
        ]
    );
    // The child's line comes between its spawn and its exit.
    let pos = |pred: &dyn Fn(&HostEvent) -> bool| got.iter().position(pred).unwrap();
    let spawn = pos(&|h| {
        matches!(
            h,
            HostEvent::Event(Event {
                kind: EventKind::Spawn { pid: Pid(2), .. },
                ..
            })
        )
    });
    let line = pos(&|h| matches!(h, HostEvent::Log(l) if l.pid == Pid(2)));
    let exit = pos(&|h| {
        matches!(
            h,
            HostEvent::Event(Event {
                kind: EventKind::Exit { pid: Pid(2), .. },
                ..
            })
        )
    });
    assert!(spawn < line && line < exit);
    assert_eq!(k.sink_drops(), 0);
}

#[test]
fn a_slow_subscriber_loses_events_but_never_stalls_the_kernel_and_a_dropped_one_unsubscribes() {
    let k = det_with_log(1, 1 << 14);
    let small = k.subscribe(2); // two batches
    let gone = k.subscribe(2);
    drop(gone);
    // Thousands of events: many batches, more than the channel holds.
    let r = boot_and_wait(
        &k,
        init(|sys, _| async move {
            let me = sys.self_cap();
            for i in 0..1000u64 {
                sys.send(me, val(i), no_opts()).await?;
                sys.recv().await;
                sys.yield_now().await;
            }
            Ok(())
        }),
    );
    assert_eq!(r, ExitReason::Normal);
    // Every event is either delivered or counted as dropped; none waited for the subscriber.
    let got = small.try_iter().count() as u64;
    assert!(got > 0);
    assert!(k.sink_drops() > 0);
    assert_eq!(got + k.sink_drops(), k.trace(usize::MAX).len() as u64);
}

#[test]
fn in_record_mode_every_event_is_persisted_beside_the_io_records() {
    let store = MemoryStore::new();
    let k = Kernel::record(
        KernelConfig {
            log_cap: 1 << 12,
            ..KernelConfig::deterministic(1)
        },
        Box::new(store.clone()),
    );
    k.register_driver(TokenDriver::llm(3)).unwrap();
    let opts = BootOpts {
        grant: vec!["llm".into()],
        ..BootOpts::default()
    };
    let r = boot_with_and_wait(
        &k,
        init(|sys, boot| async move {
            let h = sys.open(boot.device("llm").unwrap()).await?;
            sys.read(h, Value::Unit).await?;
            let c = sys.spawn(exits_with(), SpawnOpts::default()).await?;
            sys.waitpid(c.cap).await?;
            Ok(())
        }),
        opts,
    );
    assert_eq!(r, ExitReason::Normal);
    k.flush_journal().unwrap();
    let recs = store.clone().load().unwrap();
    assert!(recs.iter().any(|r| matches!(r, Record::Io { .. })));
    let persisted = events_from_store(&recs);
    assert_eq!(
        persisted,
        k.trace(usize::MAX),
        "the audit trail survives the process"
    );
    // Who used which capability: the charge of the device read is there.
    assert!(persisted.iter().any(|e| matches!(
        e.kind,
        EventKind::Charge {
            pid: Pid(1),
            meter: Meter::Tokens,
            n: 3
        }
    )));
    // A replay of the same store ignores the event records.
    let again = Kernel::replay_from(KernelConfig::deterministic(1), Box::new(store)).unwrap();
    drop(again);
}
