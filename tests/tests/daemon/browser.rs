//! The dashboard in a real browser: headless Chromium (Debian's `chromium`, which `.ci/run`
//! installs) driven over the DevTools protocol — plain JSON frames on a WebSocket, sent with
//! the daemon's own client (`send_text`; CDP answers arrive as its orphans). The daemon runs
//! on a free loopback port with a scripted model; the test loads `/`, starts a loop from the
//! page's form, waits until the loop's rows are in the page's DOM, and checks the process
//! table, the usage line and the proposal cards with their accept/reject buttons.
//!
//! Skipped, with the reason printed, only when no `chromium` binary is found.
//!
//! Then a real proposal: a session on a temp git project, a loop whose model proposes an
//! edit; the card appears, the test clicks accept in the page, and the file on disk changes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agentos_engine::daemon::client::Client;
use serde_json::{json, Value};

use crate::common::{block_on, scripted, start, PATIENCE};

/// The Chromium binary: `$AGENTOS_CHROMIUM`, else `chromium` / `chromium-browser` on PATH.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("AGENTOS_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| [d.join("chromium"), d.join("chromium-browser")])
        .find(|p| p.is_file())
}

/// A headless Chromium child, killed on drop, with its DevTools port.
struct Browser {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Starts Chromium on `url`; waits for its "DevTools listening on" line.
    fn launch(bin: &std::path::Path, url: &str) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = Command::new(bin)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
                "--window-size=1400,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(rest) = line.split("DevTools listening on ws://").nth(1) {
                        let port = rest
                            .split('/')
                            .next()
                            .and_then(|hp| hp.rsplit(':').next())
                            .and_then(|p| p.parse::<u16>().ok());
                        let _ = tx.send(port);
                        sent = true;
                    }
                }
                // Keep draining, so the browser never blocks on a full pipe.
            }
        });
        let port = rx
            .recv_timeout(PATIENCE)
            .ok()
            .flatten()
            .expect("chromium printed its DevTools port");
        Browser {
            child,
            port,
            _profile: profile,
        }
    }

    /// The page target's DevTools WebSocket URL (from `/json/list`).
    fn page_ws(&self) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
            if let Ok(body) = http_get(addr, "/json/list") {
                if let Ok(Value::Array(targets)) = serde_json::from_str::<Value>(&body) {
                    if let Some(ws) = targets
                        .iter()
                        .find(|t| t["type"] == "page")
                        .and_then(|t| t["webSocketDebuggerUrl"].as_str())
                    {
                        return ws.to_owned();
                    }
                }
            }
            assert!(Instant::now() < deadline, "no page target in /json/list");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A GET that reads the body by its Content-Length (DevTools' server keeps the
/// connection open even when asked to close it).
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        &s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut r = BufReader::new(s);
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// A DevTools session on one page: CDP commands over the daemon client's raw frames.
struct Page {
    ws: Client,
    next: u64,
}

impl Page {
    async fn cmd(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = 1_000_000 + self.next;
        let frame = json!({"id": id, "method": method, "params": params});
        self.ws
            .send_text(frame.to_string())
            .await
            .expect("send a CDP command");
        loop {
            let v = tokio::time::timeout(PATIENCE, self.ws.orphan())
                .await
                .expect("a CDP answer in time")
                .expect("the DevTools socket is open");
            if v["id"].as_u64() == Some(id) {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `expr` in the page (awaiting a promise) and returns its value.
    async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .cmd(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(
            r.get("exceptionDetails").is_none(),
            "{expr} threw: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Polls `expr` until it is `true`; on a timeout fails with `what` and the page's state.
    async fn until(&mut self, expr: &str, what: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            // Not loaded yet (an exception) counts as not yet true.
            let r = self
                .cmd(
                    "Runtime.evaluate",
                    json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
                )
                .await;
            if r.get("exceptionDetails").is_none() && r["result"]["value"] == json!(true) {
                return;
            }
            if Instant::now() > deadline {
                let state = self.eval(STATE).await;
                panic!("timed out waiting for {what}; the page: {state}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What the page shows, as one JSON value.
const STATE: &str = r##"(() => ({
  conn: document.getElementById("conn").textContent,
  status: document.getElementById("status").textContent,
  usage: document.getElementById("usage").textContent,
  rows: [...document.querySelectorAll("#log .row .meta")].map((m) => m.textContent),
  ps: [...document.querySelectorAll("#ps tr")].map((tr) => [...tr.children].map((td) => td.textContent)),
  sessions: [...document.querySelectorAll("#sessions li")].map((li) => li.textContent),
  proposals: document.getElementById("proposals").textContent,
  cards: [...document.querySelectorAll("#plist .proposal")].map((d) => ({
    row: d.dataset.row, text: d.textContent,
    accept: !!d.querySelector("button.accept"), reject: !!d.querySelector("button.reject") })),
}))()"##;

#[test]
fn the_dashboard_runs_a_loop_in_a_real_browser() {
    let Some(bin) = chromium() else {
        eprintln!(
            "browser test skipped: no `chromium` on PATH (Debian: apt-get install chromium; \
             .ci/run installs it; or set AGENTOS_CHROMIUM)"
        );
        return;
    };
    let d = start(scripted(&[
        "<<PLAN:write the note:PLAN\n<<EDIT(known://note.md):hello from the browser:EDIT\n<<SEND[102]:wrote it:SEND",
        "<<PLAN:done:PLAN\n<<SEND[200]:all done:SEND",
        "<<PLAN:fix:PLAN\n<<EDIT(notes.txt)<2>:BETA:EDIT\n<<SEND[102]:proposed:SEND",
        "<<PLAN:done:PLAN\n<<SEND[200]:fixed the notes:SEND",
    ]));
    // A project for the real proposal at the end.
    let project = agentos_tests::git_project(&[("notes.txt", b"alpha\nbeta\n")]);
    let root = project.path();
    let addr = d.server.addr();
    let browser = Browser::launch(&bin, &format!("http://{addr}/"));
    let page_ws = browser.page_ws();
    block_on(async {
        let mut page = Page {
            ws: Client::connect(&page_ws).await.expect("DevTools socket"),
            next: 0,
        };
        page.until(
            r##"document.getElementById("conn").textContent.startsWith("connected")
               && document.getElementById("proposals").textContent !== "…""##,
            "the page to connect to the daemon",
        )
        .await;
        // Start a loop from the page's form (auto-creates a session and attaches to it).
        page.eval(
            r##"document.getElementById("ptext").value = "write a note";
               document.getElementById("prompt").requestSubmit(); true"##,
        )
        .await;
        page.until(
            r##"document.getElementById("status").textContent.includes("ended 200")"##,
            "the loop to end 200",
        )
        .await;
        page.until(
            r##"[...document.querySelectorAll("#log .row .meta")].some((m) => m.textContent.includes("known:///note.md"))
               && [...document.querySelectorAll("#log .row .meta")].some((m) => m.textContent.includes("SEND"))"##,
            "the loop's rows in the DOM",
        )
        .await;
        page.until(
            r##"[...document.querySelectorAll("#ps tr")].some((tr) => tr.textContent.includes("engine"))"##,
            "the process table",
        )
        .await;
        let state = page.eval(STATE).await;
        assert!(
            state["usage"]
                .as_str()
                .is_some_and(|u| u.starts_with("1 loops ended") && u.contains("tokens")),
            "usage: {state}"
        );
        assert!(
            state["status"]
                .as_str()
                .is_some_and(|s| s.contains("all done") && s.contains("2 turns")),
            "{state}"
        );
        assert!(
            state["sessions"].as_array().is_some_and(|s| !s.is_empty()),
            "{state}"
        );
        // The rows the page shows are the rows the store holds, in order.
        let rows: Vec<String> = state["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .filter_map(|r| r.as_str().map(str::to_owned))
            .collect();
        let edit = rows.iter().position(|r| r.contains("EDIT"));
        let last_send = rows.iter().rposition(|r| r.contains("SEND"));
        assert!(
            edit.is_some() && last_send.is_some() && edit < last_send,
            "{rows:?}"
        );

        // Proposals: a pending 202 row (the shape loop.resolve will produce) renders as a
        // card with accept and reject buttons; a later row of the same id that is no longer
        // pending removes it.
        page.eval(
            r##"trackProposal({ id: 9001, loopId: 1, runId: -1, status: 202, state: "proposed",
                 op: "EDIT", action: "EDIT", targetUri: "file:///tmp/x.txt",
                 path: "log:///1/3/1/EDIT", tx: "new contents", expanded: true }); true"##,
        )
        .await;
        let state = page.eval(STATE).await;
        let cards = state["cards"].as_array().expect("cards");
        assert_eq!(cards.len(), 1, "{state}");
        assert_eq!(cards[0]["row"], "9001");
        assert_eq!(cards[0]["accept"], true);
        assert_eq!(cards[0]["reject"], true);
        assert!(
            cards[0]["text"]
                .as_str()
                .is_some_and(|t| t.contains("file:///tmp/x.txt") && t.contains("new contents")),
            "{state}"
        );
        // Clicking accept calls loop.resolve; row 9001 does not exist, so the daemon refuses
        // it and the page says so (the card stays).
        page.eval(r##"document.querySelector("#plist .proposal button.accept").click(); true"##)
            .await;
        page.until(
            r##"document.getElementById("status").textContent.startsWith("loop.resolve failed")"##,
            "the refused loop.resolve to be shown",
        )
        .await;
        page.eval(
            r##"trackProposal({ id: 9001, loopId: 1, runId: -1, status: 200, state: "resolved",
                 op: "EDIT", path: "log:///1/3/1/EDIT", expanded: false }); true"##,
        )
        .await;
        let state = page.eval(STATE).await;
        assert_eq!(state["cards"], json!([]), "{state}");

        // A real proposal: a session on a project, a loop that proposes an edit; the card
        // appears, accept is clicked, and the file on disk changes.
        page.eval(&format!(
            r##"call("session.create", {{ projectRoot: {root:?} }}).then((r) => showSession(r.id)); true"##,
            root = root.to_str().expect("utf-8 path")
        ))
        .await;
        page.eval(
            r##"document.getElementById("ptext").value = "capitalise beta";
               document.getElementById("prompt").requestSubmit(); true"##,
        )
        .await;
        page.until(
            r##"document.querySelector("#plist .proposal button.accept") !== null"##,
            "the proposal card",
        )
        .await;
        assert_eq!(
            std::fs::read_to_string(root.join("notes.txt")).unwrap(),
            "alpha\nbeta\n"
        );
        page.eval(r##"document.querySelector("#plist .proposal button.accept").click(); true"##)
            .await;
        page.until(
            r##"document.querySelector("#plist .proposal") === null
               && document.getElementById("status").textContent.includes("fixed the notes")"##,
            "the accepted proposal to be applied and the loop to end",
        )
        .await;
        assert_eq!(
            std::fs::read_to_string(root.join("notes.txt")).unwrap(),
            "alpha\nBETA\n",
            "accept in the browser wrote the file"
        );
    });
    drop(browser);
}
