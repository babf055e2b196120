//! The admin channel: a Unix domain socket (mode 0600) carrying JSON lines,
//! one request and one response per line. `tern ctl` is its client.
//!
//! ```text
//! -> {"cmd":"queues","top":5}
//! <- {"ok":{"cmd":"queues","result":{"top":[{"user":"+15551234567",...}]}}}
//! -> {"cmd":"kick"}
//! <- {"error":{"kind":"bad_request","message":"missing field `user` ..."}}
//! ```
//!
//! The server runs on its own std thread (admin traffic is rare) and calls
//! an [`AdminHandler`] the runtime implements; the handler forwards to the
//! shards over the runtime's channels. Bounded: request lines of at most
//! [`LINE_BYTES_MAX`], [`CONNECTIONS_MAX`] clients at once, idle clients
//! dropped after [`IDLE_TIMEOUT_MS`].

use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tern_core::user::UserId;

use crate::config::ConfigChanges;

use super::metrics::MetricsSnapshot;

/// Longest request or response line, bytes (a `stats` reply of a many-shard
/// server is the largest message: a few KiB per shard).
pub const LINE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Longest request line the server reads.
pub const REQUEST_BYTES_MAX: usize = 64 * 1024;

/// Admin clients served at once; more get a `busy` error.
pub const CONNECTIONS_MAX: usize = 8;

/// A client silent this long is disconnected.
pub const IDLE_TIMEOUT_MS: u64 = 30_000;

/// How long `tern ctl` waits for an answer (a reload may read files).
pub const CLIENT_TIMEOUT_MS: u64 = 30_000;

/// Accept loop poll interval (the listener is non-blocking so `stop` is
/// prompt without a wake-up connection).
pub const ACCEPT_POLL_MS: u64 = 50;

/// Default `top` of `queues`.
pub const QUEUES_TOP_DEFAULT: usize = 10;

/// Largest `top` of `queues` (the core's `inbox::LONGEST_MAX`).
pub const QUEUES_TOP_MAX: usize = tern_core::inbox::LONGEST_MAX;

/// Socket file mode: owner read/write only.
pub const SOCKET_MODE: u32 = 0o600;

fn queues_top_default() -> usize {
    QUEUES_TOP_DEFAULT
}

/// A request line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Version, uptime, shards, connections, readiness.
    Status,
    /// Every metric, as JSON.
    Stats,
    /// The users with the longest queues across shards.
    Queues {
        /// How many (at most [`QUEUES_TOP_MAX`]).
        #[serde(default = "queues_top_default")]
        top: usize,
    },
    /// Disconnect a user's device (it may reconnect; its queue is kept).
    Kick {
        /// The user's phone number (`+15551234567`) or numeric id.
        user: String,
    },
    /// Stop accepting connections; readiness goes false so load
    /// balancers send new clients elsewhere. Connected clients stay.
    Drain,
    /// Re-read the config file and apply what can change live.
    Reload,
}

/// `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    /// Server version.
    pub version: String,
    /// Seconds since start.
    pub uptime_s: u64,
    /// Shards running.
    pub shards: u16,
    /// Open connections, all shards.
    pub connections: u64,
    /// `/readyz` state.
    pub ready: bool,
    /// A drain was requested.
    pub draining: bool,
}

/// One user in a `queues` reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    /// Phone number.
    pub user: String,
    /// Home shard.
    pub shard: u16,
    /// Items queued.
    pub len: u64,
}

/// `queues`: longest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuesReply {
    /// Users, longest queue first, ties by smaller id.
    pub top: Vec<QueueEntry>,
}

impl QueuesReply {
    /// Merges per-shard `Inboxes::longest(n)` answers into the global top
    /// `n` (longest first, ties by smaller user id).
    pub fn merge(per_shard: Vec<(u16, Vec<(UserId, usize)>)>, n: usize) -> QueuesReply {
        let mut all: Vec<(u16, UserId, usize)> = per_shard
            .into_iter()
            .flat_map(|(shard, list)| list.into_iter().map(move |(u, len)| (shard, u, len)))
            .collect();
        all.sort_by(|a, b| b.2.cmp(&a.2).then(a.1.cmp(&b.1)));
        all.truncate(n.min(QUEUES_TOP_MAX));
        QueuesReply {
            top: all
                .into_iter()
                .map(|(shard, user, len)| QueueEntry {
                    user: user.to_phone(),
                    shard,
                    len: u64::try_from(len).unwrap_or(u64::MAX),
                })
                .collect(),
        }
    }
}

/// `kick`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KickReply {
    /// Phone number.
    pub user: String,
    /// Whether a device of the user was connected (and is now told to go).
    pub was_online: bool,
}

/// `drain`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainReply {
    /// A drain was already under way.
    pub already_draining: bool,
    /// Connections still open when draining began.
    pub connections: u64,
}

/// `reload`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReply {
    /// The file re-read, if any.
    pub file: Option<String>,
    /// Keys changed and applied now.
    pub applied: Vec<String>,
    /// Keys changed that take effect only after a restart.
    pub needs_restart: Vec<String>,
}

impl ReloadReply {
    /// The reply for `changes` read from `file` (all live ones applied).
    pub fn from_changes(file: Option<&Path>, changes: ConfigChanges) -> Self {
        Self {
            file: file.map(|p| p.display().to_string()),
            applied: changes.live,
            needs_restart: changes.restart,
        }
    }
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", content = "result", rename_all = "snake_case")]
pub enum Reply {
    /// To `status`.
    Status(StatusReply),
    /// To `stats`.
    Stats(MetricsSnapshot),
    /// To `queues`.
    Queues(QueuesReply),
    /// To `kick`.
    Kick(KickReply),
    /// To `drain`.
    Drain(DrainReply),
    /// To `reload`.
    Reload(ReloadReply),
}

/// Why a command failed.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request did not parse or names nothing valid.
    BadRequest,
    /// The user (or other object) does not exist.
    NotFound,
    /// Too many admin clients at once.
    Busy,
    /// The command ran and failed (e.g. the reloaded config is invalid).
    Failed,
    /// A kind from a newer server.
    #[serde(other)]
    Other,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::BadRequest => "bad request",
            ErrorKind::NotFound => "not found",
            ErrorKind::Busy => "busy",
            ErrorKind::Failed => "failed",
            ErrorKind::Other => "error",
        })
    }
}

/// An error answer; also what [`AdminHandler`] methods return on failure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandError {
    /// Kind.
    pub kind: ErrorKind,
    /// Human-readable cause.
    pub message: String,
}

impl CommandError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// A response line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Success.
    Ok(Reply),
    /// Failure.
    Error(CommandError),
}

impl Response {
    /// `Ok(reply)` or [`AdminError::Command`].
    pub fn into_result(self) -> Result<Reply, AdminError> {
        match self {
            Response::Ok(r) => Ok(r),
            Response::Error(e) => Err(AdminError::Command(e)),
        }
    }
}

/// What the runtime implements to serve the admin commands. Called on
/// admin threads: forward to the shards over channels and wait (bounded)
/// for their answers.
pub trait AdminHandler: Send + Sync + 'static {
    /// `status`.
    fn status(&self) -> StatusReply;
    /// `stats` (usually `metrics.snapshot()`).
    fn stats(&self) -> MetricsSnapshot;
    /// `queues`: the top `top` users by queue length across shards (see
    /// [`QueuesReply::merge`]). `top` is already capped at
    /// [`QUEUES_TOP_MAX`].
    fn queues(&self, top: usize) -> Result<QueuesReply, CommandError>;
    /// `kick`: the user's home shard closes its connection with a reason.
    fn kick(&self, user: UserId) -> Result<KickReply, CommandError>;
    /// `drain`: stop accepting, clear readiness, tell clients to move.
    fn drain(&self) -> Result<DrainReply, CommandError>;
    /// `reload`: re-read the config, apply live keys, report the rest.
    fn reload(&self) -> Result<ReloadReply, CommandError>;
}

/// Parses a `kick` target: `+15551234567` or `15551234567`.
pub fn parse_user(s: &str) -> Result<UserId, CommandError> {
    let s = s.trim();
    let r = if s.starts_with('+') {
        UserId::from_phone(s)
    } else {
        match s.parse::<u64>() {
            Ok(id) => UserId::from_wire(id),
            Err(_) => UserId::from_phone(s),
        }
    };
    r.map_err(|e| CommandError::new(ErrorKind::BadRequest, format!("user `{s}`: {e}")))
}

/// Answers one request line (the server's whole logic, without I/O).
pub fn dispatch(line: &str, handler: &dyn AdminHandler) -> Response {
    let req: Request = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => {
            return Response::Error(CommandError::new(
                ErrorKind::BadRequest,
                format!("cannot parse request: {e}"),
            ))
        }
    };
    let result = match req {
        Request::Status => Ok(Reply::Status(handler.status())),
        Request::Stats => Ok(Reply::Stats(handler.stats())),
        Request::Queues { top } => handler.queues(top.min(QUEUES_TOP_MAX)).map(Reply::Queues),
        Request::Kick { user } => parse_user(&user).and_then(|u| handler.kick(u).map(Reply::Kick)),
        Request::Drain => handler.drain().map(Reply::Drain),
        Request::Reload => handler.reload().map(Reply::Reload),
    };
    match result {
        Ok(r) => Response::Ok(r),
        Err(e) => Response::Error(e),
    }
}

/// Why the admin channel failed.
#[non_exhaustive]
#[derive(Debug)]
pub enum AdminError {
    /// The socket could not be created.
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Another server answers on this socket.
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// `tern ctl` could not connect (server not running, wrong path, no
    /// permission).
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Reading or writing the socket failed.
    Io(std::io::Error),
    /// The other side sent something that is not a valid message.
    Protocol(String),
    /// The server answered with an error.
    Command(CommandError),
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminError::Bind { path, source } => {
                write!(f, "cannot create admin socket {}: {source}", path.display())
            }
            AdminError::InUse { path } => write!(
                f,
                "admin socket {} is in use by a running server",
                path.display()
            ),
            AdminError::Connect { path, source } => write!(
                f,
                "cannot connect to admin socket {} (is the server running?): {source}",
                path.display()
            ),
            AdminError::Io(e) => write!(f, "admin socket: {e}"),
            AdminError::Protocol(e) => write!(f, "admin protocol: {e}"),
            AdminError::Command(e) => write!(f, "{}: {}", e.kind, e.message),
        }
    }
}

impl std::error::Error for AdminError {}

/// The admin socket server. Stops (and removes its socket file) on
/// [`AdminServer::stop`] or drop.
pub struct AdminServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminServer")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl AdminServer {
    /// Creates the socket at `path` with mode 0600 and serves `handler` on
    /// a new thread. A stale socket file (no server answering) is
    /// replaced; a live one is an error.
    pub fn spawn(path: &Path, handler: Arc<dyn AdminHandler>) -> Result<AdminServer, AdminError> {
        let listener = bind_private(path)?;
        listener
            .set_nonblocking(true)
            .map_err(|source| AdminError::Bind {
                path: path.to_path_buf(),
                source,
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("tern-admin".into())
            .spawn(move || accept_loop(&listener, &handler, &stop2))
            .map_err(|source| AdminError::Bind {
                path: path.to_path_buf(),
                source,
            })?;
        tracing::info!(socket = %path.display(), "admin socket ready");
        Ok(AdminServer {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting, waits for the accept thread, removes the socket.
    /// Connections being served finish their current request.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Binds under a temporary name, sets mode 0600, then renames into place,
/// so the socket is never reachable at `path` with a wider mode.
fn bind_private(path: &Path) -> Result<UnixListener, AdminError> {
    let bind_err = |source| AdminError::Bind {
        path: path.to_path_buf(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(bind_err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            )));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(AdminError::InUse {
                path: path.to_path_buf(),
            });
        }
        std::fs::remove_file(path).map_err(bind_err)?;
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).map_err(bind_err)?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "admin.sock".into());
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(bind_err)?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(SOCKET_MODE))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(bind_err(e));
    }
    Ok(listener)
}

fn accept_loop(listener: &UnixListener, handler: &Arc<dyn AdminHandler>, stop: &AtomicBool) {
    let active = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                if active.load(Ordering::SeqCst) >= CONNECTIONS_MAX {
                    let _ = stream.set_nonblocking(false);
                    let mut s = stream;
                    let busy = Response::Error(CommandError::new(
                        ErrorKind::Busy,
                        format!("more than {CONNECTIONS_MAX} admin clients at once"),
                    ));
                    let _ = write_line(&mut s, &busy);
                    continue;
                }
                active.fetch_add(1, Ordering::SeqCst);
                let handler = Arc::clone(handler);
                let active2 = Arc::clone(&active);
                let spawned = std::thread::Builder::new()
                    .name("tern-admin-conn".into())
                    .spawn(move || {
                        serve_conn(stream, handler.as_ref());
                        active2.fetch_sub(1, Ordering::SeqCst);
                    });
                if let Err(e) = spawned {
                    active.fetch_sub(1, Ordering::SeqCst);
                    tracing::warn!(error = %e, "admin: cannot start a connection thread");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(ACCEPT_POLL_MS));
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin: accept failed");
                std::thread::sleep(Duration::from_millis(ACCEPT_POLL_MS));
            }
        }
    }
}

fn serve_conn(stream: UnixStream, handler: &dyn AdminHandler) {
    if stream.set_nonblocking(false).is_err()
        || stream
            .set_read_timeout(Some(Duration::from_millis(IDLE_TIMEOUT_MS)))
            .is_err()
        || stream
            .set_write_timeout(Some(Duration::from_millis(IDLE_TIMEOUT_MS)))
            .is_err()
    {
        return;
    }
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let line = match read_line(&mut reader, REQUEST_BYTES_MAX) {
            Ok(Some(line)) => line,
            Ok(None) => return,
            Err(AdminError::Protocol(msg)) => {
                let _ = write_line(
                    &mut writer,
                    &Response::Error(CommandError::new(ErrorKind::BadRequest, msg)),
                );
                return;
            }
            Err(_) => return,
        };
        if line.trim().is_empty() {
            continue;
        }
        let response = dispatch(&line, handler);
        if write_line(&mut writer, &response).is_err() {
            return;
        }
    }
}

/// Reads one `\n`-terminated line of at most `max` bytes. `Ok(None)` at a
/// clean end of stream.
fn read_line<R: BufRead>(r: &mut R, max: usize) -> Result<Option<String>, AdminError> {
    let mut buf = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let n = r
        .take(limit)
        .read_until(b'\n', &mut buf)
        .map_err(AdminError::Io)?;
    if n == 0 {
        return Ok(None);
    }
    // A line cut by the end of the stream is taken as the last line; one
    // cut by the bound is refused.
    if buf.last() != Some(&b'\n') && buf.len() > max {
        return Err(AdminError::Protocol(format!(
            "line longer than {max} bytes"
        )));
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| AdminError::Protocol("line is not UTF-8".into()))
}

fn write_line<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), AdminError> {
    let mut bytes = serde_json::to_vec(msg).map_err(|e| AdminError::Protocol(e.to_string()))?;
    bytes.push(b'\n');
    w.write_all(&bytes).map_err(AdminError::Io)?;
    w.flush().map_err(AdminError::Io)
}

/// Sends one request to the server at `path` and reads its response.
pub fn admin_request(path: &Path, req: &Request) -> Result<Response, AdminError> {
    let stream = UnixStream::connect(path).map_err(|source| AdminError::Connect {
        path: path.to_path_buf(),
        source,
    })?;
    let timeout = Some(Duration::from_millis(CLIENT_TIMEOUT_MS));
    stream.set_read_timeout(timeout).map_err(AdminError::Io)?;
    stream.set_write_timeout(timeout).map_err(AdminError::Io)?;
    let mut writer = stream.try_clone().map_err(AdminError::Io)?;
    write_line(&mut writer, req)?;
    let mut reader = BufReader::new(stream);
    let line = read_line(&mut reader, LINE_BYTES_MAX)?
        .ok_or_else(|| AdminError::Protocol("the server closed without answering".into()))?;
    serde_json::from_str(&line)
        .map_err(|e| AdminError::Protocol(format!("cannot parse response: {e}")))
}

/// Sends a raw line (tests, debugging) and returns the raw response line.
pub fn admin_request_raw(path: &Path, line: &str) -> Result<String, AdminError> {
    let mut stream = UnixStream::connect(path).map_err(|source| AdminError::Connect {
        path: path.to_path_buf(),
        source,
    })?;
    let timeout = Some(Duration::from_millis(CLIENT_TIMEOUT_MS));
    stream.set_read_timeout(timeout).map_err(AdminError::Io)?;
    stream.write_all(line.as_bytes()).map_err(AdminError::Io)?;
    if !line.ends_with('\n') {
        stream.write_all(b"\n").map_err(AdminError::Io)?;
    }
    let mut reader = BufReader::new(stream);
    read_line(&mut reader, LINE_BYTES_MAX)?
        .map(|l| l.trim_end().to_string())
        .ok_or_else(|| AdminError::Protocol("the server closed without answering".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_the_documented_json_shape() {
        let r: Request = serde_json::from_str(r#"{"cmd":"queues"}"#).unwrap();
        assert_eq!(
            r,
            Request::Queues {
                top: QUEUES_TOP_DEFAULT
            }
        );
        let r: Request = serde_json::from_str(r#"{"cmd":"kick","user":"+15551234567"}"#).unwrap();
        assert_eq!(
            r,
            Request::Kick {
                user: "+15551234567".into()
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"queues","top":1,"x":1}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"queues","top":-1}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"reboot"}"#).is_err());
        let resp = Response::Ok(Reply::Drain(DrainReply {
            already_draining: false,
            connections: 3,
        }));
        assert_eq!(
            serde_json::to_string(&resp).unwrap(),
            r#"{"ok":{"cmd":"drain","result":{"already_draining":false,"connections":3}}}"#
        );
        let err = Response::Error(CommandError::new(ErrorKind::NotFound, "no"));
        assert_eq!(
            serde_json::to_string(&err).unwrap(),
            r#"{"error":{"kind":"not_found","message":"no"}}"#
        );
    }

    #[test]
    fn merge_orders_by_length_then_user_and_caps() {
        let merged = QueuesReply::merge(
            vec![
                (0, vec![(UserId(10_000_003), 5), (UserId(10_000_001), 2)]),
                (1, vec![(UserId(10_000_002), 5), (UserId(10_000_004), 9)]),
            ],
            3,
        );
        let got: Vec<(&str, u16, u64)> = merged
            .top
            .iter()
            .map(|e| (e.user.as_str(), e.shard, e.len))
            .collect();
        assert_eq!(
            got,
            vec![
                ("+10000004", 1, 9),
                ("+10000002", 1, 5),
                ("+10000003", 0, 5)
            ]
        );
    }

    #[test]
    fn parse_user_accepts_phone_or_id() {
        assert_eq!(parse_user("+15551234567").unwrap(), UserId(15_551_234_567));
        assert_eq!(parse_user("15551234567").unwrap(), UserId(15_551_234_567));
        assert_eq!(parse_user("12").unwrap_err().kind, ErrorKind::BadRequest);
        assert_eq!(parse_user("bob").unwrap_err().kind, ErrorKind::BadRequest);
    }

    #[test]
    fn read_line_bounds() {
        let mut r = BufReader::new(&b"abc\ndef"[..]);
        assert_eq!(read_line(&mut r, 10).unwrap().as_deref(), Some("abc\n"));
        assert_eq!(read_line(&mut r, 10).unwrap().as_deref(), Some("def"));
        assert_eq!(read_line(&mut r, 10).unwrap(), None);
        // `max` bytes and the newline fit; one more byte does not.
        let mut r = BufReader::new(&b"0123456789\n"[..]);
        assert_eq!(
            read_line(&mut r, 10).unwrap().as_deref(),
            Some("0123456789\n")
        );
        let mut r = BufReader::new(&b"01234567890\n"[..]);
        assert!(matches!(
            read_line(&mut r, 10),
            Err(AdminError::Protocol(_))
        ));
    }
}
