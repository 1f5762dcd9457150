//! A tiny HTTP/1.1 server for provider tests: serves a fixed list of canned responses, one per
//! connection (`Connection: close`), and records every request it received.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// A response body: whole (with `Content-Length`) or chunked (`Transfer-Encoding: chunked`,
/// one HTTP chunk per string — how streaming servers send server-sent events).
pub enum Payload {
    Full(String),
    Chunks(Vec<String>),
}

/// One canned response.
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub payload: Payload,
}

impl Canned {
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Canned {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            payload: Payload::Full(body.to_string()),
        }
    }
    pub fn sse(events: Vec<String>) -> Self {
        Canned {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            payload: Payload::Chunks(events),
        }
    }
    pub fn with_header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
}

/// One received request.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub struct Server {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl Server {
    /// Serve `responses` in order, one connection each, then stop accepting.
    pub fn start(responses: Vec<Canned>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            for canned in responses {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                serve(stream, canned, &log);
            }
        });
        Server { addr, requests }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Read one request, record it, then answer (recorded first, so a client that has its answer
/// always finds its request in the log).
fn serve(stream: TcpStream, canned: Canned, log: &Mutex<Vec<Recorded>>) -> Option<()> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_owned());
            if k == "content-length" {
                len = v.parse().ok()?;
            }
            headers.push((k, v));
        }
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    log.lock().unwrap().push(Recorded {
        method,
        path,
        headers,
        body,
    });

    let mut out = stream;
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nconnection: close\r\n",
        canned.status,
        reason(canned.status)
    );
    for (k, v) in &canned.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    match canned.payload {
        Payload::Full(b) => {
            head.push_str(&format!("content-length: {}\r\n\r\n", b.len()));
            out.write_all(head.as_bytes()).ok()?;
            out.write_all(b.as_bytes()).ok()?;
        }
        Payload::Chunks(chunks) => {
            head.push_str("transfer-encoding: chunked\r\n\r\n");
            out.write_all(head.as_bytes()).ok()?;
            for c in chunks {
                out.write_all(format!("{:x}\r\n{c}\r\n", c.len()).as_bytes())
                    .ok()?;
                out.flush().ok()?;
            }
            out.write_all(b"0\r\n\r\n").ok()?;
        }
    }
    out.flush().ok()?;
    let _ = out.shutdown(std::net::Shutdown::Write);
    Some(())
}
