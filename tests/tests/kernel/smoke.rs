use agentos_abi::*;
use agentos_kernel::*;

fn pingpong_image(n: u64) -> KImage {
    Image::new("init", move |sys: Sys, _| async move {
        let boot = sys.recv().await;
        assert!(matches!(boot.sys(), Some(SysMsg::Boot { .. })));
        let me = sys.self_cap();
        let pong = Image::new("pong", |sys: Sys, _| async move {
            let m = sys.recv().await;
            let back = m.caps[0];
            loop {
                let m = sys.recv().await;
                if let Body::Value(Value::U64(i)) = m.body {
                    sys.send(back, Body::Value(Value::U64(i)), SendOpts::default())
                        .await?;
                    if i == 0 {
                        return Ok(());
                    }
                }
            }
        });
        let child = sys.spawn(pong, SpawnOpts::default()).await?;
        sys.send(
            child.cap,
            Body::Empty,
            SendOpts {
                caps: vec![me],
                ..Default::default()
            },
        )
        .await?;
        for i in (0..n).rev() {
            sys.send(child.cap, Body::Value(Value::U64(i)), SendOpts::default())
                .await?;
            let r = sys.recv().await;
            assert!(matches!(r.body, Body::Value(Value::U64(x)) if x == i));
        }
        let r = sys.waitpid(child.cap).await?;
        assert_eq!(r, ExitReason::Normal);
        Ok(())
    })
}

#[test]
fn pingpong_deterministic() {
    let k = Kernel::new(KernelConfig::deterministic(1));
    let init = k.boot(pingpong_image(1000), BootOpts::default()).unwrap();
    assert_eq!(k.wait_exit(init), Ok(ExitReason::Normal));
}

#[test]
fn pingpong_threads() {
    let k = Kernel::new(KernelConfig::threads(2));
    let init = k.boot(pingpong_image(10_000), BootOpts::default()).unwrap();
    assert_eq!(k.wait_exit(init), Ok(ExitReason::Normal));
}
