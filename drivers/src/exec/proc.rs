//! One subprocess of the `exec` device: its event queue, the tasks that pump its pipes, and
//! the supervisor that waits for it, enforces its timeout and stops it.

use agentos_abi::Value;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdin};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

/// What the handle asks the supervisor to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Control {
    /// SIGTERM now, SIGKILL after the grace.
    Stop,
    /// SIGKILL now (the handle is closing).
    Kill,
}

/// stdout or stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Chan {
    Out = 0,
    Err = 1,
}

impl Chan {
    fn name(self) -> &'static str {
        match self {
            Chan::Out => "stdout",
            Chan::Err => "stderr",
        }
    }
}

#[derive(Default)]
struct State {
    /// Events not yet taken by a `next`.
    queue: VecDeque<Value>,
    /// Bytes kept per channel (at most the cap).
    kept: [usize; 2],
    /// Bytes dropped per channel (beyond the cap).
    dropped: [u64; 2],
    /// The exit event has been taken: every later `next` answers `closed`.
    finished: bool,
}

/// A running (or finished) subprocess as its handle sees it.
pub(crate) struct Proc {
    /// The pid of the spawned process (bubblewrap's, under the sandbox): the leader of the
    /// process group the tree lives in.
    pub(crate) pid: u32,
    /// Whether it runs under bubblewrap (then a polite stop spares bubblewrap itself).
    pub(crate) sandboxed: bool,
    state: Mutex<State>,
    notify: Notify,
    pub(crate) stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    pub(crate) control: mpsc::UnboundedSender<Control>,
    cap: usize,
}

/// The `closed` event (after the exit event was taken).
pub(crate) fn closed_event() -> Value {
    Value::Map(vec![
        ("status".into(), Value::U64(200)),
        ("event".into(), Value::Str("closed".into())),
    ])
}

impl Proc {
    pub(crate) fn new(
        pid: u32,
        sandboxed: bool,
        stdin: Option<ChildStdin>,
        cap: usize,
    ) -> (Arc<Proc>, mpsc::UnboundedReceiver<Control>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let p = Proc {
            pid,
            sandboxed,
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            stdin: tokio::sync::Mutex::new(stdin),
            control: tx,
            cap,
        };
        (Arc::new(p), rx)
    }

    fn push(&self, ev: Value) {
        self.state.lock().queue.push_back(ev);
        self.notify.notify_waiters();
    }

    fn output(&self, chan: Chan, data: &[u8]) {
        let mut s = self.state.lock();
        let i = chan as usize;
        let take = data.len().min(self.cap - s.kept[i]);
        s.kept[i] += take;
        s.dropped[i] += (data.len() - take) as u64;
        if take > 0 {
            s.queue.push_back(Value::Map(vec![
                ("status".into(), Value::U64(200)),
                ("event".into(), Value::Str(chan.name().into())),
                (
                    "data".into(),
                    Value::Bytes(Bytes::copy_from_slice(&data[..take])),
                ),
            ]));
        }
        drop(s);
        self.notify.notify_waiters();
    }

    /// The next event, waiting for one. Cancel-safe: an event leaves the queue only in the
    /// poll that returns it, so a reader dropped while waiting loses nothing. Needs no tokio
    /// runtime (the kernel polls it on its own threads).
    pub(crate) async fn next(self: Arc<Self>) -> Value {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.state.lock();
                if let Some(ev) = s.queue.pop_front() {
                    if ev.get("event").and_then(Value::as_str) == Some("exit") {
                        s.finished = true;
                    }
                    return ev;
                }
                if s.finished {
                    return closed_event();
                }
            }
            notified.await;
        }
    }
}

/// Copy one pipe into the process's queue until EOF.
pub(crate) async fn pump(proc: Arc<Proc>, chan: Chan, mut pipe: impl AsyncReadExt + Unpin) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => proc.output(chan, &buf[..n]),
        }
    }
}

/// Limits the supervisor enforces.
pub(crate) struct Limits {
    pub(crate) timeout: Option<Duration>,
    pub(crate) grace: Duration,
}

/// Wait for the process, obeying stop/kill requests and the timeout; then drain both pipes
/// and queue the exit event.
pub(crate) async fn supervise(
    proc: Arc<Proc>,
    mut child: Child,
    readers: [tokio::task::JoinHandle<()>; 2],
    mut control: mpsc::UnboundedReceiver<Control>,
    limits: Limits,
) {
    let deadline = limits.timeout.map(|t| Instant::now() + t);
    let mut timed_out = false;
    let mut killed = false;
    let mut kill_at: Option<Instant> = None;
    let mut control_open = true;
    let far = || Instant::now() + Duration::from_secs(86_400 * 365);
    let status = loop {
        let stop_pending = kill_at.is_none();
        tokio::select! {
            st = child.wait() => break st,
            c = control.recv(), if control_open => match c {
                Some(Control::Stop) if stop_pending => {
                    signal_tree(proc.pid, proc.sandboxed, libc::SIGTERM);
                    kill_at = Some(Instant::now() + limits.grace);
                }
                Some(Control::Stop) => {}
                Some(Control::Kill) => {
                    signal_tree(proc.pid, false, libc::SIGKILL);
                    killed = true;
                    kill_at = Some(far());
                }
                None => control_open = false,
            },
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(far)),
                if deadline.is_some() && stop_pending && !timed_out => {
                timed_out = true;
                signal_tree(proc.pid, proc.sandboxed, libc::SIGTERM);
                kill_at = Some(Instant::now() + limits.grace);
            }
            _ = tokio::time::sleep_until(kill_at.unwrap_or_else(far)),
                if kill_at.is_some() && !killed => {
                signal_tree(proc.pid, false, libc::SIGKILL);
                killed = true;
            }
        }
    };
    // The command is gone: nothing of its tree may outlive it (a background job holding the
    // pipes open would also keep the exit event from ever coming).
    kill_group(proc.pid, libc::SIGKILL);
    let [out, err] = readers;
    let drained = tokio::time::timeout(limits.grace.max(Duration::from_millis(100)), async {
        let _ = out.await;
        let _ = err.await;
    })
    .await;
    if drained.is_err() {
        // A grandchild that left the group still holds a pipe: stop waiting for it.
        tracing::warn!(
            pid = proc.pid,
            "exec: pipes still open after exit; abandoned"
        );
    }
    proc.stdin.lock().await.take();
    let (code, signal) = match status {
        Ok(st) => {
            use std::os::unix::process::ExitStatusExt;
            (
                st.code()
                    .map(|c| Value::I64(c.into()))
                    .unwrap_or(Value::Unit),
                st.signal()
                    .map(|s| Value::Str(signal_name(s)))
                    .unwrap_or(Value::Unit),
            )
        }
        Err(_) => (Value::Unit, Value::Unit),
    };
    let dropped = proc.state.lock().dropped;
    proc.push(Value::Map(vec![
        ("status".into(), Value::U64(200)),
        ("event".into(), Value::Str("exit".into())),
        ("code".into(), code),
        ("signal".into(), signal),
        ("timed_out".into(), Value::Bool(timed_out)),
        ("killed".into(), Value::Bool(killed)),
        ("dropped_stdout".into(), Value::U64(dropped[0])),
        ("dropped_stderr".into(), Value::U64(dropped[1])),
    ]));
}

/// The short name of a signal (`TERM`, `KILL`, …; `SIG<n>` for the rest).
pub fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGHUP => "HUP".into(),
        libc::SIGINT => "INT".into(),
        libc::SIGQUIT => "QUIT".into(),
        libc::SIGILL => "ILL".into(),
        libc::SIGABRT => "ABRT".into(),
        libc::SIGBUS => "BUS".into(),
        libc::SIGFPE => "FPE".into(),
        libc::SIGKILL => "KILL".into(),
        libc::SIGSEGV => "SEGV".into(),
        libc::SIGPIPE => "PIPE".into(),
        libc::SIGALRM => "ALRM".into(),
        libc::SIGTERM => "TERM".into(),
        libc::SIGXCPU => "XCPU".into(),
        n => format!("SIG{n}"),
    }
}

fn kill_group(pgid: u32, sig: i32) {
    if let Ok(pgid) = i32::try_from(pgid) {
        if pgid > 1 {
            // SAFETY: kill(2) with a negative pid signals a process group; no memory is
            // touched. ESRCH (the group is gone) is the expected outcome after an exit.
            unsafe {
                libc::kill(-pgid, sig);
            }
        }
    }
}

fn kill_pid(pid: u32, sig: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        if pid > 1 {
            // SAFETY: kill(2) on one pid; no memory is touched.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }
}

/// Signal the process tree rooted at `pid`: its process group (unless `spare_root`: under
/// bubblewrap a polite signal must reach the command, not bubblewrap, which would die and
/// take the sandbox down at once) and every descendant found in `/proc` (which also reaches
/// processes that started their own session, as the sandbox's `--new-session` does).
pub(crate) fn signal_tree(pid: u32, spare_root: bool, sig: i32) {
    let tree = descendants(pid);
    if !spare_root {
        kill_group(pid, sig);
        kill_pid(pid, sig);
    }
    for d in tree {
        kill_pid(d, sig);
    }
}

/// Every live descendant of `root`, from a scan of `/proc/*/stat`.
fn descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(ppid) = parent_of(&e.path().join("stat")) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        if let Some(cs) = children.get(&p) {
            for c in cs {
                if !out.contains(c) {
                    out.push(*c);
                    stack.push(*c);
                }
            }
        }
    }
    out
}

/// The parent pid from a `/proc/<pid>/stat` file (the field after the parenthesized name).
fn parent_of(stat: &Path) -> Option<u32> {
    let s = std::fs::read_to_string(stat).ok()?;
    let after = &s[s.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_children_are_found_in_proc() {
        let mut c = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let me = std::process::id();
        assert!(descendants(me).contains(&c.id()));
        signal_tree(c.id(), false, libc::SIGKILL);
        let st = c.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.signal(), Some(libc::SIGKILL));
        assert_eq!(signal_name(libc::SIGTERM), "TERM");
    }

    #[test]
    fn a_reader_dropped_mid_wait_loses_no_event_and_the_cap_counts_the_rest() {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        let poll = |f: &mut std::pin::Pin<Box<dyn Future<Output = Value> + Send>>| {
            f.as_mut().poll(&mut Context::from_waker(Waker::noop()))
        };
        let (p, _control) = Proc::new(0, false, None, 10);
        let mut waiting: std::pin::Pin<Box<dyn Future<Output = Value> + Send>> =
            Box::pin(p.clone().next());
        assert!(poll(&mut waiting).is_pending());
        // The reader is killed while it waits; then output arrives.
        drop(waiting);
        p.output(Chan::Out, b"hello world!");
        p.output(Chan::Err, b"e");
        let mut next: std::pin::Pin<Box<dyn Future<Output = Value> + Send>> =
            Box::pin(p.clone().next());
        let Poll::Ready(ev) = poll(&mut next) else {
            panic!("the buffered event is there")
        };
        assert_eq!(
            ev.get("data"),
            Some(&Value::Bytes(Bytes::from_static(b"hello worl")))
        );
        assert_eq!(p.state.lock().dropped, [2, 0]);
        let mut next: std::pin::Pin<Box<dyn Future<Output = Value> + Send>> =
            Box::pin(p.clone().next());
        let Poll::Ready(ev) = poll(&mut next) else {
            panic!("stderr is next")
        };
        assert_eq!(ev.get("event"), Some(&Value::Str("stderr".into())));
    }
}
