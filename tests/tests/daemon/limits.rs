//! Frame limits: a 16 MiB frame closes its own connection and nobody else's.

use serde_json::json;

use crate::common::{block_on, connect, one_turn_model, start, until_terminated};

#[test]
fn a_16_mib_frame_is_refused_while_another_client_keeps_working() {
    let d = start(one_turn_model());
    block_on(async {
        let big = connect(&d.url).await;
        let other = connect(&d.url).await;
        assert_eq!(
            other.call("ping", json!({})).await.expect("ping"),
            json!({})
        );
        let frame = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
            "x".repeat(16 << 20)
        );
        // The write may fail half-way when the daemon closes the socket; either way the
        // connection ends without an answer.
        let _ = big.send_text(frame).await;
        assert!(
            big.notification().await.is_none(),
            "the big client is closed"
        );
        assert!(big.call("ping", json!({})).await.is_err());
        assert_eq!(
            other.call("ping", json!({})).await.expect("ping"),
            json!({})
        );
        let r = other
            .call("loop.run", json!({"prompt": "still here"}))
            .await
            .expect("run");
        let end = until_terminated(&other, r["loopId"].as_i64().expect("id")).await;
        assert_eq!(end.last().expect("end").params["finalStatus"], 200);
        // And a new client is served.
        let fresh = connect(&d.url).await;
        assert_eq!(
            fresh.call("ping", json!({})).await.expect("ping"),
            json!({})
        );
    });
}
