//! What the dashboard and `agentos top` read: the page at `GET /` (embedded, no CDN) and
//! the `daemon.stats` / `kernel.ps` extension methods.

use std::io::{Read, Write};

use serde_json::json;

use crate::common::{block_on, connect, one_turn_model, start, until_terminated};

fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

#[test]
fn the_dashboard_page_is_served_whole_from_the_binary() {
    let d = start(one_turn_model());
    let page = http_get(d.server.addr(), "/");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("text/html"));
    assert!(page.contains("<title>agentos</title>"));
    assert!(
        page.contains("new WebSocket("),
        "it speaks the JSON-RPC wire"
    );
    assert!(!page.contains("<script src="), "no external scripts");
    assert!(!page.contains("https://"), "no CDN");
}

#[test]
fn stats_and_process_table_describe_the_daemon() {
    let d = start(one_turn_model());
    block_on(async {
        let c = connect(&d.url).await;
        c.call("session.create", json!({})).await.expect("create");
        let r = c
            .call("loop.run", json!({"prompt": "one"}))
            .await
            .expect("run");
        let id = r["loopId"].as_i64().expect("id");
        until_terminated(&c, id).await;
        let stats = c.call("daemon.stats", json!({})).await.expect("stats");
        assert_eq!(stats["turns"], 1, "{stats}");
        assert_eq!(stats["loopsEnded"]["200"], 1, "{stats}");
        assert_eq!(stats["recentLoops"][0]["loopId"], id, "{stats}");
        assert_eq!(stats["connections"], 1, "{stats}");
        let ps = c.call("kernel.ps", json!({})).await.expect("ps");
        let names: Vec<&str> = ps["processes"]
            .as_array()
            .expect("processes")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(names.contains(&"engine"), "{names:?}");
    });
}
