//! The TCP transport between real nodes on loopback.

use crate::util::*;
use agentos_abi::NodeId;
use agentos_net::frame::{decode_frame, encode_frame, Frame, WIRE_VERSION};
use agentos_net::{PeerEvent, SendError, TcpTransport, Transport};
use bytes::Bytes;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

/// Two connected nodes `a` → `b` (a dials b), with the link up.
fn pair() -> (Node<TcpTransport>, Node<TcpTransport>) {
    let a = tcp_node(tcp_cfg("a", loopback()));
    let b = tcp_node(tcp_cfg("b", loopback()));
    a.t.add_peer(id("b"), b.t.local_addr()).unwrap();
    wait_event(&a.ev, &PeerEvent::Up(id("b")));
    (a, b)
}

/// Send `n` tagged payloads a → b and check b gets them all, in order.
fn exchange(a: &Node<TcpTransport>, b: &Node<TcpTransport>, n: usize) {
    for i in 0..n {
        a.t.send(&id("b"), tagged("a", "b", i)).unwrap();
    }
    check_tagged(&recv_n(&b.rx, n), "b", &["a"], n);
}

/// A raw client that completes the handshake as node `name`, returning the stream.
fn raw_client(addr: SocketAddr, name: &str, expect_peer: &NodeId) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut hello = Vec::new();
    encode_frame(
        &Frame::Hello {
            node: id(name),
            version: WIRE_VERSION,
        },
        &mut hello,
    )
    .unwrap();
    s.write_all(&hello).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    assert_eq!(
        decode_frame(Bytes::from(body)).unwrap(),
        Frame::Hello {
            node: expect_peer.clone(),
            version: WIRE_VERSION
        }
    );
    s
}

/// Wait (bounded by the read timeout) until the server closes `s`.
fn assert_closed_by_peer(mut s: TcpStream) {
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("connection not closed by the transport: {e}"),
    }
}

fn assert_no_down(ev: &std::sync::mpsc::Receiver<PeerEvent>) {
    let evs = drain_events(ev);
    assert!(
        !evs.iter().any(|e| matches!(e, PeerEvent::Down(_))),
        "unexpected {evs:?}"
    );
}

#[test]
fn three_nodes_exchange_payloads_both_ways() {
    let names = ["a", "b", "c"];
    let nodes: Vec<_> = names
        .iter()
        .map(|n| tcp_node(tcp_cfg(n, loopback())))
        .collect();
    for (i, n) in nodes.iter().enumerate() {
        for (j, m) in nodes.iter().enumerate() {
            if i != j {
                n.t.add_peer(id(names[j]), m.t.local_addr()).unwrap();
            }
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        let ups: Vec<PeerEvent> = names
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, m)| PeerEvent::Up(id(m)))
            .collect();
        wait_all(&n.ev, &ups);
    }
    const N: usize = 2_000;
    for k in 0..N {
        for (i, n) in nodes.iter().enumerate() {
            for (j, to) in names.iter().enumerate() {
                if i != j {
                    n.t.send(&id(to), tagged(names[i], to, k)).unwrap();
                }
            }
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        let got = recv_n(&n.rx, 2 * N);
        let others: Vec<&str> = names
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, s)| *s)
            .collect();
        check_tagged(&got, names[i], &others, N);
    }
    for n in &nodes {
        let s = n.t.stats();
        assert_eq!(s.frames_out, 2 * N as u64);
        assert_eq!(s.frames_in, 2 * N as u64);
        assert_eq!(s.connects, 2);
        assert_eq!(s.oversize_closes + s.malformed_closes + s.dropped, 0);
    }
}

#[test]
fn oversize_frame_closes_only_that_connection() {
    let (a, b) = pair();
    exchange(&a, &b, 10);

    // After a valid handshake: a length prefix far above max_frame.
    let mut s = raw_client(b.t.local_addr(), "intruder", &id("b"));
    s.write_all(&u32::MAX.to_le_bytes()).unwrap();
    assert_closed_by_peer(s);
    assert_eq!(b.t.stats().oversize_closes, 1);

    // Before any handshake: a non-agentos client (an HTTP request reads as a huge length).
    let mut s = TcpStream::connect(b.t.local_addr()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_closed_by_peer(s);
    assert_eq!(b.t.stats().oversize_closes, 2);

    // The node and its other connection are untouched.
    exchange(&a, &b, 500);
    assert_no_down(&a.ev);
    assert!(a.t.is_up(&id("b")));
}

#[test]
fn garbage_frame_closes_only_that_connection() {
    let (a, b) = pair();
    exchange(&a, &b, 10);

    // After a valid handshake: a frame whose body is not a postcard Frame.
    let mut s = raw_client(b.t.local_addr(), "intruder", &id("b"));
    s.write_all(&5u32.to_le_bytes()).unwrap();
    s.write_all(&[0xff; 5]).unwrap();
    assert_closed_by_peer(s);
    assert_eq!(b.t.stats().malformed_closes, 1);

    // A frame that decodes but leaves trailing bytes (Bye + junk).
    let mut s = raw_client(b.t.local_addr(), "intruder", &id("b"));
    s.write_all(&3u32.to_le_bytes()).unwrap();
    s.write_all(&[2, 0, 0]).unwrap();
    assert_closed_by_peer(s);
    assert_eq!(b.t.stats().malformed_closes, 2);

    // A garbage handshake.
    let mut s = TcpStream::connect(b.t.local_addr()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(&3u32.to_le_bytes()).unwrap();
    s.write_all(&[9, 9, 9]).unwrap();
    assert_closed_by_peer(s);
    assert_eq!(b.t.stats().malformed_closes, 3);

    // Valid frames before the garbage reach ingress; the connection then closes.
    let mut s = raw_client(b.t.local_addr(), "mixed", &id("b"));
    let mut out = Vec::new();
    encode_frame(&Frame::Data(Bytes::from_static(b"first")), &mut out).unwrap();
    out.extend_from_slice(&4u32.to_le_bytes());
    out.extend_from_slice(&[0x80; 4]);
    s.write_all(&out).unwrap();
    assert_closed_by_peer(s);
    assert_eq!(
        recv_n(&b.rx, 1),
        vec![(id("mixed"), Bytes::from_static(b"first"))]
    );
    assert_eq!(b.t.stats().malformed_closes, 4);

    exchange(&a, &b, 500);
    assert_no_down(&a.ev);
}

#[test]
fn restarted_peer_is_reconnected_and_traffic_resumes() {
    let (a, b) = pair();
    let b_addr = b.t.local_addr();
    exchange(&a, &b, 100);

    // Kill b: a sees the link go down.
    drop(b);
    wait_event(&a.ev, &PeerEvent::Down(id("b")));
    assert!(!a.t.is_up(&id("b")));

    // Sends while b is away are queued, not refused.
    for i in 0..50 {
        a.t.send(&id("b"), tagged("a", "b", i)).unwrap();
    }
    assert_eq!(a.t.pending(&id("b")), Some(50));

    // b restarts on the same port; a reconnects and flushes what was queued, in order.
    let b2 = tcp_node(tcp_cfg("b", b_addr));
    wait_event(&a.ev, &PeerEvent::Up(id("b")));
    let got = recv_n(&b2.rx, 50);
    check_tagged(&got, "b", &["a"], 50);

    // And new traffic flows.
    exchange(&a, &b2, 1_000);
    let s = a.t.stats();
    assert_eq!((s.connects, s.reconnects), (2, 1));
}

#[test]
fn restart_mid_stream_resumes_in_order() {
    let (a, b) = pair();
    let b_addr = b.t.local_addr();
    // A stream is flowing when b dies.
    for i in 0..5_000 {
        a.t.send(&id("b"), tagged("a", "b", i)).unwrap();
    }
    recv_n(&b.rx, 1);
    drop(b);
    wait_event(&a.ev, &PeerEvent::Down(id("b")));
    for i in 5_000..6_000 {
        a.t.send(&id("b"), tagged("a", "b", i)).unwrap();
    }
    let b2 = tcp_node(tcp_cfg("b", b_addr));
    wait_event(&a.ev, &PeerEvent::Up(id("b")));
    // Whatever was in flight when b died may be lost; everything queued after the loss
    // arrives, in order, ending with the last payload sent.
    let mut last = None;
    loop {
        let (from, p) = recv_n(&b2.rx, 1).pop().unwrap();
        assert_eq!(from, id("a"));
        let s = std::str::from_utf8(&p).unwrap();
        let i: usize = s.rsplit('#').next().unwrap().parse().unwrap();
        if let Some(prev) = last {
            assert!(i > prev, "out of order: {i} after {prev}");
        }
        last = Some(i);
        if i == 5_999 {
            break;
        }
    }
}

#[test]
fn pending_overflow_returns_full_with_the_payload() {
    let mut cfg = tcp_cfg("a", loopback());
    cfg.pending_cap = 4;
    cfg.max_frame = 1024;
    let a = tcp_node(cfg);
    // A peer address where nothing listens: the link never comes up, the queue only fills.
    let dead = {
        let l = std::net::TcpListener::bind(loopback()).unwrap();
        l.local_addr().unwrap()
    };
    a.t.add_peer(id("x"), dead).unwrap();
    for i in 0..4 {
        a.t.send(&id("x"), tagged("a", "x", i)).unwrap();
    }
    let fifth = tagged("a", "x", 4);
    match a.t.send(&id("x"), fifth.clone()) {
        Err(SendError::Full(p)) => assert_eq!(p, fifth),
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(a.t.pending(&id("x")), Some(4));
    assert_eq!(a.t.stats().rejected_full, 1);

    let p = Bytes::from_static(b"to nobody");
    match a.t.send(&id("nobody"), p.clone()) {
        Err(SendError::UnknownPeer(back)) => assert_eq!(back, p),
        other => panic!("expected UnknownPeer, got {other:?}"),
    }
    let big = Bytes::from(vec![0u8; 1024]);
    match a.t.send(&id("x"), big.clone()) {
        Err(e @ SendError::TooLarge(_)) => assert_eq!(e.into_payload(), big),
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn killed_peer_yields_down() {
    let a = tcp_node(tcp_cfg("a", loopback()));
    let b = tcp_node(tcp_cfg("b", loopback()));
    let c = tcp_node(tcp_cfg("c", loopback()));
    a.t.add_peer(id("b"), b.t.local_addr()).unwrap();
    a.t.add_peer(id("c"), c.t.local_addr()).unwrap();
    wait_all(&a.ev, &[PeerEvent::Up(id("b")), PeerEvent::Up(id("c"))]);
    drop(b);
    wait_event(&a.ev, &PeerEvent::Down(id("b")));
    // c is unaffected.
    a.t.send(&id("c"), Bytes::from_static(b"still here"))
        .unwrap();
    assert_eq!(
        recv_n(&c.rx, 1),
        vec![(id("a"), Bytes::from_static(b"still here"))]
    );
    assert!(a.t.is_up(&id("c")));
    assert!(!drain_events(&a.ev).contains(&PeerEvent::Down(id("c"))));
}

#[test]
fn graceful_close_flushes_queued_payloads() {
    let (a, b) = pair();
    const N: usize = 20_000;
    for i in 0..N {
        a.t.send(&id("b"), tagged("a", "b", i)).unwrap();
    }
    a.t.close();
    // Everything sent before close arrives, even what was still queued when close began.
    let got = recv_n(&b.rx, N);
    check_tagged(&got, "b", &["a"], N);
    assert_eq!(a.t.stats().frames_out, N as u64);
    assert_eq!(a.t.stats().dropped, 0);

    let p = Bytes::from_static(b"late");
    match a.t.send(&id("b"), p.clone()) {
        Err(SendError::Closed(back)) => assert_eq!(back, p),
        other => panic!("expected Closed, got {other:?}"),
    }
    assert!(a.t.add_peer(id("c"), b.t.local_addr()).is_err());
    a.t.close(); // idempotent

    // After close the listening port is released: a new node can bind it.
    let a_addr = a.t.local_addr();
    drop(a);
    let _again = tcp_node(tcp_cfg("a", a_addr));
}

#[test]
fn large_payloads_cross_intact() {
    let (a, b) = pair();
    let sizes = [0usize, 1, 127, 128, 65_535, 65_536, 1 << 20, 5 << 20];
    for (i, n) in sizes.iter().enumerate() {
        let p: Vec<u8> = (0..*n).map(|k| (k * 31 + i) as u8).collect();
        a.t.send(&id("b"), Bytes::from(p)).unwrap();
    }
    let got = recv_n(&b.rx, sizes.len());
    for (i, ((_, p), n)) in got.iter().zip(sizes).enumerate() {
        assert_eq!(p.len(), n);
        assert!(p.iter().enumerate().all(|(k, b)| *b == (k * 31 + i) as u8));
    }
}

#[test]
fn transport_is_object_safe() {
    let (a, b) = pair();
    let t: Box<dyn Transport> = Box::new(a.t);
    assert_eq!(t.node(), &id("a"));
    t.send(&id("b"), Bytes::from_static(b"via dyn")).unwrap();
    assert_eq!(
        recv_n(&b.rx, 1),
        vec![(id("a"), Bytes::from_static(b"via dyn"))]
    );
    t.close();
}
