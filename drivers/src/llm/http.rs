//! The HTTP edge shared by the providers: retries with backoff, `Retry-After`, endpoint URLs
//! and a server-sent-events parser.

use super::LlmError;
use reqwest::header::HeaderMap;
use std::time::Duration;

/// How a provider retries a request that got HTTP 429 or 5xx, or could not connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 = never retry).
    pub max_retries: u32,
    /// The first backoff; each retry doubles it.
    pub base_delay: Duration,
    /// The longest single wait, whether from backoff or from the server's `Retry-After`.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Never retry.
    pub fn none() -> Self {
        RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        }
    }

    /// The exponential backoff before retry number `attempt` (0-based), capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
        self.base_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

/// The wait a server asked for: `retry-after-ms` (OpenAI) or `Retry-After` in seconds.
/// An HTTP-date `Retry-After` is not understood and falls back to backoff.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let num = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|n| n.is_finite() && *n >= 0.0)
    };
    if let Some(ms) = num("retry-after-ms") {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    num("retry-after").map(Duration::from_secs_f64)
}

/// `base` + `/v1/` + `path`, tolerating a base that already ends in `/v1`.
pub(crate) fn endpoint(base: &str, path: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/v1") {
        format!("{base}/{path}")
    } else {
        format!("{base}/v1/{path}")
    }
}

/// Build a client with these timeouts (rustls, no system proxy).
pub(crate) fn client(
    timeout: Duration,
    connect_timeout: Duration,
) -> Result<reqwest::Client, LlmError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(connect_timeout)
        .build()
        .map_err(|e| LlmError::Config(format!("http client: {e}")))
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// POST `body` as JSON to `url`, retrying 429/5xx and connection failures under `policy`.
/// Returns the first successful response.
pub(crate) async fn post_json(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&'static str, String)],
    body: Vec<u8>,
    policy: &RetryPolicy,
) -> Result<reqwest::Response, LlmError> {
    let mut attempt = 0u32;
    loop {
        let mut rb = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone());
        for (k, v) in headers {
            rb = rb.header(*k, v.as_str());
        }
        match rb.send().await {
            Ok(resp) if resp.status().is_success() => return Ok(resp),
            Ok(resp) => {
                let status = resp.status();
                let retryable = status.as_u16() == 429 || status.is_server_error();
                if retryable && attempt < policy.max_retries {
                    let wait = retry_after(resp.headers())
                        .map(|d| d.min(policy.max_delay))
                        .unwrap_or_else(|| policy.backoff(attempt));
                    tracing::debug!(%url, status = status.as_u16(), ?wait, attempt, "llm retry");
                    drop(resp);
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                    continue;
                }
                let text = resp.text().await.unwrap_or_default();
                return Err(LlmError::Status {
                    status: status.as_u16(),
                    body: truncate(text, 512),
                });
            }
            Err(e) if e.is_connect() && attempt < policy.max_retries => {
                let wait = policy.backoff(attempt);
                tracing::debug!(%url, error = %e, ?wait, attempt, "llm retry after connect error");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(e) if e.is_timeout() => return Err(LlmError::Transport(format!("timed out: {e}"))),
            Err(e) => return Err(LlmError::Transport(e.to_string())),
        }
    }
}

/// Read a whole (non-streamed) body and parse it as JSON into `T`.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
) -> Result<T, LlmError> {
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| LlmError::Transport(e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        LlmError::BadResponse(format!(
            "{e}: {}",
            truncate(String::from_utf8_lossy(&bytes).into_owned(), 256)
        ))
    })
}

/// One server-sent event.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub(crate) struct SseEvent {
    /// The `event:` field (empty when absent).
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// An incremental server-sent-events parser (lines split on `\n`, `\r\n` tolerated).
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    buf: Vec<u8>,
    cur: SseEvent,
    has_data: bool,
}

impl SseParser {
    /// Feed bytes; returns the events they completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            self.line(line, &mut out);
        }
        out
    }

    /// End of stream: a final event not followed by a blank line.
    pub fn finish(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            let line = String::from_utf8_lossy(&rest).into_owned();
            self.line(line.trim_end_matches('\r'), &mut out);
        }
        self.line("", &mut out);
        out
    }

    fn line(&mut self, line: &str, out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if self.has_data {
                out.push(std::mem::take(&mut self.cur));
            }
            self.cur = SseEvent::default();
            self.has_data = false;
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.cur.data.push('\n');
                }
                self.cur.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.cur.event = value.to_owned(),
            _ => {}
        }
    }
}

/// Read a streamed body, handing each server-sent event to `on_event`.
pub(crate) async fn read_sse(
    mut resp: reqwest::Response,
    mut on_event: impl FnMut(SseEvent) -> Result<(), LlmError>,
) -> Result<(), LlmError> {
    let mut parser = SseParser::default();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| LlmError::Transport(format!("reading stream: {e}")))?
    {
        for ev in parser.push(&chunk) {
            on_event(ev)?;
        }
    }
    for ev in parser.finish() {
        on_event(ev)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_across_chunks() {
        let mut p = SseParser::default();
        assert!(p.push(b"event: a\ndata: {\"x\"").is_empty());
        let evs = p.push(b":1}\r\n\r\n: comment\ndata: one\ndata: two\n\ndata: [DONE]");
        assert_eq!(
            evs,
            vec![
                SseEvent {
                    event: "a".into(),
                    data: "{\"x\":1}".into()
                },
                SseEvent {
                    event: String::new(),
                    data: "one\ntwo".into()
                }
            ]
        );
        assert_eq!(p.finish()[0].data, "[DONE]");
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy {
            max_retries: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
        };
        assert_eq!(p.backoff(0), Duration::from_millis(100));
        assert_eq!(p.backoff(1), Duration::from_millis(200));
        assert_eq!(p.backoff(2), Duration::from_millis(350));
        assert_eq!(p.backoff(40), Duration::from_millis(350));
    }

    #[test]
    fn endpoints_and_retry_after() {
        assert_eq!(
            endpoint("http://h:1", "chat/completions"),
            "http://h:1/v1/chat/completions"
        );
        assert_eq!(endpoint("http://h/v1/", "messages"), "http://h/v1/messages");
        let mut h = HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", "150".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
        let mut d = HeaderMap::new();
        d.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&d), None);
    }
}
