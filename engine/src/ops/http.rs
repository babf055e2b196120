//! The operations HTTP endpoint, served on a glommio executor: `GET
//! /metrics` (Prometheus text), `GET /healthz` (alive), `GET /readyz`
//! (recovered and listening). One request per connection
//! (`Connection: close`); no hyper, no tokio.
//!
//! Bounded: the request head is read into at most `header_bytes_max`
//! bytes (else 431), within `read_timeout_ms` (else 408 and close: a
//! slowloris client cannot hold a connection open), and at most
//! `connections_max` connections are served at once (more are closed at
//! once). Request bodies are never read.

use std::cell::Cell;
use std::net::Shutdown;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use super::metrics::{render_prometheus, Metrics};

/// Default bound on the request head (request line and headers).
pub const HEADER_BYTES_MAX_DEFAULT: usize = 8 * 1024;

/// Smallest `header_bytes_max` accepted by the config.
pub const HEADER_BYTES_MIN: usize = 1024;

/// Default time a client has to send its request head.
pub const READ_TIMEOUT_MS_DEFAULT: u64 = 5_000;

/// Default connections served at once.
pub const CONNECTIONS_MAX_DEFAULT: usize = 64;

/// Time a client has to take the response.
pub const WRITE_TIMEOUT_MS: u64 = 5_000;

/// After answering an early error (408, 431), how long unread request
/// bytes are drained so the client sees the response rather than a reset.
pub const LINGER_MS: u64 = 500;

/// At most this many bytes are drained while lingering.
pub const LINGER_BYTES_MAX: usize = 64 * 1024;

/// Pause after a failed accept (e.g. out of file descriptors).
pub const ACCEPT_BACKOFF_MS: u64 = 100;

/// Bounds of the endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Largest request head.
    pub header_bytes_max: usize,
    /// Time to send the request head.
    pub read_timeout_ms: u64,
    /// Connections served at once.
    pub connections_max: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_bytes_max: HEADER_BYTES_MAX_DEFAULT,
            read_timeout_ms: READ_TIMEOUT_MS_DEFAULT,
            connections_max: CONNECTIONS_MAX_DEFAULT,
        }
    }
}

/// What the endpoint serves. Shared by every shard and the admin thread.
#[derive(Debug)]
pub struct OpsState {
    /// The registry.
    pub metrics: Arc<Metrics>,
    /// True once recovery is done and the listeners accept: `/readyz` is
    /// 200 only then. The runtime sets it (and clears it on drain/stop).
    pub ready: Arc<AtomicBool>,
    /// Bounds.
    pub limits: HttpLimits,
}

impl OpsState {
    /// State with default bounds, not ready.
    pub fn new(metrics: Arc<Metrics>) -> Arc<OpsState> {
        Arc::new(OpsState {
            metrics,
            ready: Arc::new(AtomicBool::new(false)),
            limits: HttpLimits::default(),
        })
    }

    /// State with explicit bounds and ready flag.
    pub fn with(metrics: Arc<Metrics>, ready: Arc<AtomicBool>, limits: HttpLimits) -> Arc<Self> {
        Arc::new(OpsState {
            metrics,
            ready,
            limits,
        })
    }

    /// State from the `[ops]` config section.
    pub fn from_config(
        metrics: Arc<Metrics>,
        ready: Arc<AtomicBool>,
        ops: &crate::config::OpsConfig,
    ) -> Arc<Self> {
        Self::with(
            metrics,
            ready,
            HttpLimits {
                header_bytes_max: ops.http_header_bytes_max,
                read_timeout_ms: ops.http_read_timeout_ms,
                connections_max: CONNECTIONS_MAX_DEFAULT,
            },
        )
    }
}

/// Serves the endpoint on `listener` until the task is dropped (drop or
/// cancel the glommio task at shutdown). Run it on one executor only.
pub async fn serve(listener: TcpListener, state: Arc<OpsState>) {
    let active = Rc::new(Cell::new(0usize));
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "ops endpoint: accept failed");
                glommio::timer::sleep(Duration::from_millis(ACCEPT_BACKOFF_MS)).await;
                continue;
            }
        };
        if active.get() >= state.limits.connections_max {
            // Over the bound: close at once, nothing read or written.
            drop(stream);
            continue;
        }
        active.set(active.get() + 1);
        let state = Arc::clone(&state);
        let active = Rc::clone(&active);
        glommio::spawn_local(async move {
            handle(stream, &state).await;
            active.set(active.get().saturating_sub(1));
        })
        .detach();
    }
}

/// A parsed request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The path, without the query string.
    pub path: String,
}

/// Why a request head was refused.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// The head is still incomplete: read more.
    Incomplete,
    /// Longer than `header_bytes_max`.
    TooLarge,
    /// Not an HTTP/1.x request line.
    Malformed,
}

/// Parses the request line once the head is complete (`\r\n\r\n`, or
/// `\n\n` from lenient clients) within `max` bytes.
pub fn parse_head(buf: &[u8], max: usize) -> Result<RequestHead, HeadError> {
    let end = find(buf, b"\r\n\r\n").or_else(|| find(buf, b"\n\n"));
    match end {
        Some(end) if end <= max => {}
        Some(_) => return Err(HeadError::TooLarge),
        None if buf.len() > max => return Err(HeadError::TooLarge),
        None => return Err(HeadError::Incomplete),
    }
    let line_end = find(buf, b"\n").unwrap_or(buf.len());
    let line = buf.get(..line_end).unwrap_or_default();
    let line = std::str::from_utf8(line).map_err(|_| HeadError::Malformed)?;
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed);
    };
    if !version.starts_with("HTTP/1.")
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !target.starts_with('/')
    {
        return Err(HeadError::Malformed);
    }
    let path = target.split('?').next().unwrap_or(target);
    Ok(RequestHead {
        method: method.to_string(),
        path: path.to_string(),
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A response: status, content type, body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body (not sent for HEAD).
    pub body: String,
    /// Extra header line (`Allow: GET, HEAD`), without CRLF.
    pub extra_header: Option<&'static str>,
}

impl Response {
    fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.to_string(),
            extra_header: None,
        }
    }

    /// The bytes on the wire.
    pub fn encode(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        if let Some(h) = self.extra_header {
            out.push_str(h);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if !head_only {
            bytes.extend_from_slice(self.body.as_bytes());
        }
        bytes
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Routes one request.
pub fn route(head: &RequestHead, state: &OpsState) -> Response {
    if head.method != "GET" && head.method != "HEAD" {
        let mut r = Response::text(405, "method not allowed\n");
        r.extra_header = Some("Allow: GET, HEAD");
        return r;
    }
    match head.path.as_str() {
        "/metrics" => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: render_prometheus(&state.metrics),
            extra_header: None,
        },
        "/healthz" => Response::text(200, "ok\n"),
        "/readyz" => {
            if state.ready.load(Ordering::Acquire) {
                Response::text(200, "ready\n")
            } else {
                Response::text(503, "not ready\n")
            }
        }
        _ => Response::text(404, "not found\n"),
    }
}

async fn handle(mut stream: TcpStream, state: &OpsState) {
    let limits = state.limits;
    let read = glommio::timer::timeout(Duration::from_millis(limits.read_timeout_ms), async {
        Ok(read_head(&mut stream, limits.header_bytes_max).await)
    })
    .await;
    let (response, head_only, linger) = match read {
        Err(_) => (Response::text(408, "request timeout\n"), false, true),
        Ok(Err(HeadError::TooLarge)) => (
            Response::text(431, "request header fields too large\n"),
            false,
            true,
        ),
        Ok(Err(_)) => (Response::text(400, "bad request\n"), false, true),
        Ok(Ok(None)) => return, // closed before a full head
        Ok(Ok(Some(head))) => (route(&head, state), head.method == "HEAD", false),
    };
    let bytes = response.encode(head_only);
    let _ = glommio::timer::timeout(Duration::from_millis(WRITE_TIMEOUT_MS), async {
        stream.write_all(&bytes).await?;
        stream.flush().await?;
        Ok(())
    })
    .await;
    let _ = stream.shutdown(Shutdown::Write).await;
    if linger {
        // Drain what the client is still sending so closing does not
        // reset the connection before it read the answer.
        let _ = glommio::timer::timeout(Duration::from_millis(LINGER_MS), async {
            let mut scratch = [0u8; 4096];
            let mut drained = 0usize;
            while drained < LINGER_BYTES_MAX {
                match stream.read(&mut scratch).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => drained += n,
                }
            }
            Ok(())
        })
        .await;
    }
    let _ = stream.close().await;
}

/// Reads until the head is complete. `Ok(None)`: the peer closed first.
async fn read_head(stream: &mut TcpStream, max: usize) -> Result<Option<RequestHead>, HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(n) => n,
        };
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        match parse_head(&buf, max) {
            Ok(head) => return Ok(Some(head)),
            Err(HeadError::Incomplete) => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_head_bounds_and_shapes() {
        let ok = b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n";
        let h = parse_head(ok, 1024).unwrap();
        assert_eq!((h.method.as_str(), h.path.as_str()), ("GET", "/metrics"));
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nHost", 1024),
            Err(HeadError::Incomplete)
        );
        // The end marker at exactly the bound is fine; one past is not.
        let head = b"GET / HTTP/1.1\r\n\r\n";
        let end = head.len() - 4;
        assert!(parse_head(head, end).is_ok());
        assert_eq!(parse_head(head, end - 1), Err(HeadError::TooLarge));
        assert_eq!(parse_head(&[b'a'; 2000], 1024), Err(HeadError::TooLarge));
        assert_eq!(
            parse_head(b"GET /\r\n\r\n", 1024),
            Err(HeadError::Malformed)
        );
        assert_eq!(
            parse_head(b"get / HTTP/1.1\r\n\r\n", 1024),
            Err(HeadError::Malformed)
        );
        assert_eq!(
            parse_head(b"GET x HTTP/1.1\r\n\r\n", 1024),
            Err(HeadError::Malformed)
        );
        assert_eq!(
            parse_head(b"GET / SPDY/3\r\n\r\n", 1024),
            Err(HeadError::Malformed)
        );
        assert!(parse_head(b"GET /healthz HTTP/1.0\n\n", 1024).is_ok());
    }

    #[test]
    fn routes() {
        let state = OpsState::new(Metrics::new_at(1, 0));
        let req = |m: &str, p: &str| RequestHead {
            method: m.into(),
            path: p.into(),
        };
        assert_eq!(route(&req("GET", "/healthz"), &state).status, 200);
        assert_eq!(route(&req("GET", "/readyz"), &state).status, 503);
        state.ready.store(true, Ordering::Release);
        assert_eq!(route(&req("GET", "/readyz"), &state).status, 200);
        assert_eq!(route(&req("GET", "/nope"), &state).status, 404);
        let post = route(&req("POST", "/metrics"), &state);
        assert_eq!(post.status, 405);
        assert!(String::from_utf8(post.encode(false))
            .unwrap()
            .contains("Allow: GET, HEAD\r\n"));
        let m = route(&req("GET", "/metrics"), &state);
        assert!(m.body.contains("# TYPE tern_connections gauge"));
        let head = String::from_utf8(m.encode(true)).unwrap();
        assert!(head.ends_with("\r\n\r\n"));
        assert!(head.contains(&format!("Content-Length: {}\r\n", m.body.len())));
    }
}
