//! The NATS transport against a real `nats-server` on loopback.
//!
//! The server binary must be installed (`apt-get install -y nats-server`); set
//! `AGENTOS_SKIP_NATS=1` to skip these tests where it is not, or `NATS_SERVER_BIN` to point
//! at a binary outside `PATH`.

use crate::util::*;
use agentos_net::{NatsConfig, NatsTransport, PeerEvent, SendError, Transport};
use bytes::Bytes;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::channel;
use std::time::Duration;

/// A `nats-server` child process, killed on drop.
pub(crate) struct NatsServer {
    child: Child,
    pub(crate) addr: String,
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server binary, or `None` if the tests are to be skipped.
pub(crate) fn server_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        return Some(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    // Debian installs it in /usr/sbin, which is not on every user's PATH.
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/usr/local/bin"].map(PathBuf::from));
    if let Some(found) = dirs
        .into_iter()
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
    {
        return Some(found);
    }
    if std::env::var("AGENTOS_SKIP_NATS").as_deref() == Ok("1") {
        eprintln!("nats-server not found; skipping (AGENTOS_SKIP_NATS=1)");
        return None;
    }
    panic!(
        "nats-server not found on PATH (nor in /usr/sbin, /usr/local/sbin, /usr/local/bin). \
         Install it with `apt-get install -y nats-server`, point NATS_SERVER_BIN at it, or set \
         AGENTOS_SKIP_NATS=1 to skip the NATS tests."
    );
}

/// Start a server on loopback: on `port`, or on a random free one if `None`.
pub(crate) fn start_server(bin: &PathBuf, port: Option<u16>) -> NatsServer {
    let port_arg = port.map_or("-1".to_string(), |p| p.to_string());
    let mut child = Command::new(bin)
        .args(["-a", "127.0.0.1", "-p", &port_arg])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        // Keep draining the log so the server never blocks on it.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(at) = line.find("Listening for client connections on ") {
                let addr = line[at + "Listening for client connections on ".len()..].trim();
                let _ = tx.send(addr.to_string());
            }
        }
    });
    let addr = match rx.recv_timeout(WAIT) {
        Ok(addr) => addr,
        Err(_) => {
            let _ = child.kill();
            panic!("nats-server did not report its client port");
        }
    };
    NatsServer { child, addr }
}

fn nats_cfg(name: &str, server: &str, prefix: &str) -> NatsConfig {
    let mut cfg = NatsConfig::new(id(name), server);
    cfg.subject_prefix = prefix.to_string();
    cfg.backoff_base = Duration::from_millis(5);
    cfg.backoff_max = Duration::from_millis(100);
    cfg
}

fn nats_node(cfg: NatsConfig) -> Node<NatsTransport> {
    let (ingress, events, rx, ev) = sinks();
    let t = NatsTransport::connect(cfg, ingress, events).expect("connect");
    Node { t, rx, ev }
}

const NAMES: [&str; 3] = ["a", "b", "c"];

fn three_nodes(server: &str, prefix: &str) -> Vec<Node<NatsTransport>> {
    let nodes: Vec<_> = NAMES
        .iter()
        .map(|n| nats_node(nats_cfg(n, server, prefix)))
        .collect();
    for (i, n) in nodes.iter().enumerate() {
        n.t.wait_ready(WAIT).expect("subscribed");
        for (j, other) in NAMES.iter().enumerate() {
            if i != j {
                n.t.add_peer(id(other)).unwrap();
                // Up at once: the server link is already up.
                assert_eq!(drain_events(&n.ev), vec![PeerEvent::Up(id(other))]);
            }
        }
    }
    nodes
}

/// Every node sends `n` tagged payloads to every other; each receives them all, attributed
/// and in order per sender.
fn all_to_all(nodes: &[Node<NatsTransport>], n: usize) {
    for k in 0..n {
        for (i, node) in nodes.iter().enumerate() {
            for (j, to) in NAMES.iter().enumerate() {
                if i != j {
                    node.t.send(&id(to), tagged(NAMES[i], to, k)).unwrap();
                }
            }
        }
    }
    for (i, node) in nodes.iter().enumerate() {
        let got = recv_n(&node.rx, 2 * n);
        let others: Vec<&str> = NAMES
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, s)| *s)
            .collect();
        check_tagged(&got, NAMES[i], &others, n);
    }
}

#[test]
fn three_nodes_exchange_payloads_over_nats() {
    let Some(bin) = server_binary() else { return };
    let server = start_server(&bin, None);
    let nodes = three_nodes(&server.addr, "agentos.test");
    all_to_all(&nodes, 2_000);
    for n in &nodes {
        let s = n.t.stats();
        assert_eq!((s.frames_out, s.frames_in), (4_000, 4_000));
        assert_eq!(s.discarded_in + s.malformed_closes + s.dropped, 0);
    }

    // Payloads go through untouched, including empty and binary ones.
    let binary = Bytes::from((0..=255u8).cycle().take(100_000).collect::<Vec<u8>>());
    for p in [
        Bytes::new(),
        Bytes::from_static(b"\r\nMSG x 1 2\r\n"),
        binary,
    ] {
        nodes[0].t.send(&id("b"), p.clone()).unwrap();
        assert_eq!(recv_n(&nodes[1].rx, 1), vec![(id("a"), p)]);
    }

    // Limits: the server's max_payload (1 MiB by default) and subject-safe names.
    let big = Bytes::from(vec![0u8; 2 << 20]);
    assert!(matches!(
        nodes[0].t.send(&id("b"), big),
        Err(SendError::TooLarge(_))
    ));
    assert!(matches!(
        nodes[0].t.send(&id("b c"), Bytes::new()),
        Err(SendError::UnknownPeer(_))
    ));

    // A graceful close flushes what is queued.
    const N: usize = 10_000;
    for i in 0..N {
        nodes[0].t.send(&id("c"), tagged("a", "c", i)).unwrap();
    }
    nodes[0].t.close();
    check_tagged(&recv_n(&nodes[2].rx, N), "c", &["a"], N);
    assert!(matches!(
        nodes[0].t.send(&id("c"), Bytes::new()),
        Err(SendError::Closed(_))
    ));
}

#[test]
fn nats_server_restart_is_survived() {
    let Some(bin) = server_binary() else { return };
    let server = start_server(&bin, None);
    let port: u16 = server
        .addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port in server address");
    let nodes = three_nodes(&server.addr, "agentos.restart");
    all_to_all(&nodes, 100);

    drop(server);
    for (i, n) in nodes.iter().enumerate() {
        let downs: Vec<PeerEvent> = NAMES
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, m)| PeerEvent::Down(id(m)))
            .collect();
        assert_eq!(wait_all(&n.ev, &downs), vec![]);
        assert!(!n.t.is_connected());
    }

    let _server = start_server(&bin, Some(port));
    for (i, n) in nodes.iter().enumerate() {
        n.t.wait_ready(WAIT).expect("resubscribed");
        let ups: Vec<PeerEvent> = NAMES
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, m)| PeerEvent::Up(id(m)))
            .collect();
        assert_eq!(wait_all(&n.ev, &ups), vec![]);
    }
    all_to_all(&nodes, 100);
    for n in &nodes {
        assert_eq!(n.t.stats().reconnects, 1);
    }
}
