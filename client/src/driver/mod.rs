//! A blocking driver: one TCP (+ TLS 1.3) connection, one
//! [`ClientSession`], one thread.
//!
//! The loop: write what the session queued, read with a timeout bounded by
//! the session's next timer, feed the bytes in, drive timers, hand events
//! to the caller. Acknowledgements (`DeliverAck`) for events are written on
//! the next loop turn, i.e. after the caller had the event.

mod transport;

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::SessionConfig;
use crate::credentials::Credentials;
use crate::error::ClientError;
use crate::event::{DropReason, Event};
use crate::session::ClientSession;
use crate::tls::{self, Trust};

use transport::Transport;

/// The server port used when an address names none.
pub const DEFAULT_PORT: u16 = 7443;

/// The server address used when none is given: the local machine.
pub const DEFAULT_SERVER: &str = "127.0.0.1:7443";

/// Default bound on TCP connect and on each TLS handshake read.
pub const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// Default bound on a blocked socket write (a server that stopped reading).
pub const WRITE_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// Bytes read from the socket per call.
const READ_BUF_LEN: usize = 16 * 1024;

/// Shortest socket read timeout (zero means "forever" to the OS).
const READ_WAIT_MIN: Duration = Duration::from_millis(1);

/// Longest single wait in [`Client::run`] before looping again.
const RUN_WAIT_MAX: Duration = Duration::from_secs(3600);

/// How a [`Client`] connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriverConfig {
    /// `HOST:PORT` (`[v6]:PORT`); a missing port means [`DEFAULT_PORT`].
    pub server: String,
    /// Name checked against the certificate (and sent as SNI); the host
    /// part of `server` when `None`.
    pub server_name: Option<String>,
    /// How the server is trusted.
    pub trust: Trust,
    /// The session's limits.
    pub session: SessionConfig,
    /// Bound on TCP connect and on each handshake read.
    pub connect_timeout_ms: u64,
    /// Bound on a blocked socket write.
    pub write_timeout_ms: u64,
}

impl DriverConfig {
    /// Defaults for everything but where and whom to trust.
    pub fn new(server: impl Into<String>, trust: Trust) -> Self {
        Self {
            server: server.into(),
            server_name: None,
            trust,
            session: SessionConfig::default(),
            connect_timeout_ms: CONNECT_TIMEOUT_MS_DEFAULT,
            write_timeout_ms: WRITE_TIMEOUT_MS_DEFAULT,
        }
    }
}

/// What [`Client::request_pin`] learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinSent {
    /// Digits in the PIN.
    pub pin_len: u8,
    /// Seconds until it expires.
    pub expires_in_s: u32,
}

/// What [`Client::send_text_acked`] learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acked {
    /// The message's id on this client.
    pub client_msg_id: u64,
    /// The server's id for it.
    pub server_msg_id: u64,
    /// Server time of the ack.
    pub timestamp_ms: u64,
}

/// A blocking client: a [`ClientSession`] driven over a real connection.
#[derive(Debug)]
pub struct Client {
    config: DriverConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    session: ClientSession,
    transport: Option<Transport>,
    /// Events set aside by [`Self::wait_for`]; handed out first.
    backlog: VecDeque<Event>,
    rx_buf: Vec<u8>,
    tx_buf: Vec<u8>,
}

impl Client {
    /// Connects (TCP, then TLS unless plaintext was chosen) and sends
    /// `Hello`. See [`ClientSession::new`] about `first_client_msg_id`.
    pub fn connect(config: DriverConfig, first_client_msg_id: u64) -> Result<Self, ClientError> {
        let tls = tls::client_config(&config.trust)?;
        let transport = transport::connect(&config, tls.as_ref())?;
        let session = ClientSession::new(config.session.clone(), first_client_msg_id);
        let mut client = Self {
            config,
            tls,
            session,
            transport: Some(transport),
            backlog: VecDeque::new(),
            rx_buf: vec![0; READ_BUF_LEN],
            tx_buf: Vec::new(),
        };
        client.session.hello()?;
        client.flush()?;
        Ok(client)
    }

    /// The session, for inspection.
    pub fn session(&self) -> &ClientSession {
        &self.session
    }

    /// The session, to queue operations directly; they are written on the
    /// next [`Self::flush`] or wait.
    pub fn session_mut(&mut self) -> &mut ClientSession {
        &mut self.session
    }

    /// True while a connection is open.
    pub fn is_connected(&self) -> bool {
        self.transport.is_some()
    }

    /// Drops the current connection (if any) and opens a new one. Pending
    /// operations survive: with credentials from an earlier login, the
    /// session logs in again by itself and re-sends them, in order, after
    /// `LoginOk`.
    pub fn reconnect(&mut self) -> Result<(), ClientError> {
        self.disconnect();
        let transport = transport::connect(&self.config, self.tls.as_ref())?;
        self.transport = Some(transport);
        self.session.on_connected(Instant::now())?;
        self.session.hello()?;
        self.flush()
    }

    /// Closes the connection; the session keeps its pending operations.
    pub fn disconnect(&mut self) {
        if let Some(mut transport) = self.transport.take() {
            transport.shutdown();
        }
        self.session.on_disconnected();
    }

    /// Writes whatever the session queued.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        if !self.session.has_transmit() {
            return Ok(());
        }
        let Some(transport) = self.transport.as_mut() else {
            return Err(ClientError::NotConnected);
        };
        self.tx_buf.clear();
        self.session.poll_transmit(&mut self.tx_buf);
        if let Err(e) = transport.write_all(&self.tx_buf) {
            self.lose_transport();
            return Err(closed_or(e));
        }
        Ok(())
    }

    /// The next event, waiting at most `timeout`; `Ok(None)` when none came.
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<Event>, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(event) = self.take_event() {
                return Ok(Some(event));
            }
            if Instant::now() >= deadline {
                self.flush()?;
                return Ok(None);
            }
            self.pump(deadline)?;
        }
    }

    /// Hands every event to `on_event` until it returns `Break` (then
    /// `Ok`) or the connection fails (then the error). The callback gets the
    /// session to queue answers (e.g. `mark_read`).
    pub fn run(
        &mut self,
        mut on_event: impl FnMut(&mut ClientSession, Event) -> ControlFlow<()>,
    ) -> Result<(), ClientError> {
        loop {
            while let Some(event) = self.take_event() {
                if on_event(&mut self.session, event).is_break() {
                    return self.flush();
                }
            }
            self.pump(Instant::now() + RUN_WAIT_MAX)?;
        }
    }

    /// Waits until `pick` maps an event to an answer. Other events are set
    /// aside for [`Self::next_event`] / [`Self::run`]; `Kicked` ends the
    /// wait with [`ClientError::Kicked`].
    pub fn wait_for<T>(
        &mut self,
        waiting_for: &'static str,
        timeout: Duration,
        mut pick: impl FnMut(&Event) -> Option<Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(event) = self.session.poll_event() {
                if let Some(answer) = pick(&event) {
                    return answer;
                }
                if let Event::Kicked { reason, message } = event {
                    return Err(ClientError::Kicked { reason, message });
                }
                self.backlog.push_back(event);
            }
            if Instant::now() >= deadline {
                self.flush()?;
                return Err(ClientError::TimedOut { waiting_for });
            }
            self.pump(deadline)?;
        }
    }

    /// Asks for a PIN by SMS and waits for the server's answer.
    pub fn request_pin(&mut self, phone: &str, timeout: Duration) -> Result<PinSent, ClientError> {
        self.session.request_pin(phone)?;
        self.wait_for("PinSent", timeout, |event| match event {
            Event::PinSent {
                pin_len,
                expires_in_s,
                ..
            } => Some(Ok(PinSent {
                pin_len: *pin_len,
                expires_in_s: *expires_in_s,
            })),
            other => unrelated_rejection(other),
        })
    }

    /// Sends the PIN and waits for the device key.
    pub fn verify_pin(
        &mut self,
        phone: &str,
        pin: &str,
        timeout: Duration,
    ) -> Result<Credentials, ClientError> {
        self.session.verify_pin(phone, pin)?;
        self.wait_for("Registered", timeout, |event| match event {
            Event::Registered {
                user_id,
                key,
                generation,
            } => Some(Ok(Credentials {
                user_id: *user_id,
                key: *key,
                generation: *generation,
            })),
            other => unrelated_rejection(other),
        })
    }

    /// Logs in and waits for `LoginOk`; returns the number of inbox items
    /// queued on the server (they arrive as events next).
    pub fn login(
        &mut self,
        credentials: &Credentials,
        timeout: Duration,
    ) -> Result<u32, ClientError> {
        self.session.login(credentials.user_id, credentials.key)?;
        self.wait_for("LoginOk", timeout, |event| match event {
            Event::LoggedIn { queued, .. } => Some(Ok(*queued)),
            Event::LoginFailed { code, message, .. } => Some(Err(ClientError::Rejected {
                code: *code,
                message: message.clone(),
            })),
            other => unrelated_rejection(other),
        })
    }

    /// Queues a text message; returns its `client_msg_id`. Its
    /// [`Event::Acked`] comes later.
    pub fn send_text(&mut self, to: u64, text: &str) -> Result<u64, ClientError> {
        let id = self.session.send_text(to, text, Instant::now())?;
        self.flush()?;
        Ok(id)
    }

    /// Sends a text message and waits for its `ServerAck`. Retries (same
    /// id) happen inside while waiting.
    pub fn send_text_acked(
        &mut self,
        to: u64,
        text: &str,
        timeout: Duration,
    ) -> Result<Acked, ClientError> {
        let id = self.send_text(to, text)?;
        self.wait_for_ack(id, timeout)
    }

    /// Waits for the `ServerAck` of operation `client_msg_id`.
    pub fn wait_for_ack(
        &mut self,
        client_msg_id: u64,
        timeout: Duration,
    ) -> Result<Acked, ClientError> {
        self.wait_for("ServerAck", timeout, |event| match event {
            Event::Acked {
                client_msg_id: acked,
                server_msg_id,
                timestamp_ms,
            } if *acked == client_msg_id => Some(Ok(Acked {
                client_msg_id,
                server_msg_id: *server_msg_id,
                timestamp_ms: *timestamp_ms,
            })),
            Event::ServerError {
                code,
                message,
                client_msg_id: failed,
                ..
            } if *failed == client_msg_id && !crate::session::is_transient(*code) => {
                Some(Err(ClientError::Rejected {
                    code: *code,
                    message: message.clone(),
                }))
            }
            Event::Dropped {
                client_msg_id: dropped,
                reason: DropReason::TooLargeForServer { len, max },
            } if *dropped == client_msg_id => {
                Some(Err(ClientError::Encode(tern_wire::Error::EncodeTooLarge {
                    len: *len,
                    max: *max,
                })))
            }
            _ => None,
        })
    }

    /// Queues a read receipt; returns the operation's `client_msg_id`.
    pub fn mark_read(&mut self, peer: u64, read_client_msg_id: u64) -> Result<u64, ClientError> {
        let id = self
            .session
            .mark_read(peer, read_client_msg_id, Instant::now())?;
        self.flush()?;
        Ok(id)
    }

    /// Writes what is queued, then closes the connection. The queued bytes
    /// include `DeliverAck`s for every message already received, so take
    /// the remaining events first (`next_event(Duration::ZERO)` until
    /// `None`) if they must not go unseen.
    pub fn close(mut self) {
        // Best effort: the connection is going away either way.
        let _ = self.flush();
        self.disconnect();
    }

    // ---- Internals -----------------------------------------------------

    fn take_event(&mut self) -> Option<Event> {
        self.backlog
            .pop_front()
            .or_else(|| self.session.poll_event())
    }

    /// One loop turn: write, read once (until input, the session's next
    /// timer, or `until`), feed input, drive timers.
    fn pump(&mut self, until: Instant) -> Result<(), ClientError> {
        self.flush()?;
        let Some(transport) = self.transport.as_mut() else {
            return Err(ClientError::NotConnected);
        };
        let wake = self
            .session
            .poll_timeout()
            .map_or(until, |timer| timer.min(until));
        let wait = wake
            .saturating_duration_since(Instant::now())
            .max(READ_WAIT_MIN);
        let read = transport
            .socket()
            .set_read_timeout(Some(wait))
            .and_then(|()| transport.read(&mut self.rx_buf));
        match read {
            Ok(0) => {
                self.lose_transport();
                return Err(ClientError::ConnectionClosed);
            }
            Ok(n) => {
                let bytes = self.rx_buf.get(..n).unwrap_or_default();
                if let Err(e) = self.session.handle_bytes(bytes, Instant::now()) {
                    self.lose_transport();
                    return Err(e);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                self.lose_transport();
                return Err(closed_or(e));
            }
        }
        self.session.handle_timeout(Instant::now())
    }

    /// The connection died under us: forget it without a goodbye.
    fn lose_transport(&mut self) {
        self.transport = None;
        self.session.on_disconnected();
    }
}

/// Maps "the peer went away" I/O errors to [`ClientError::ConnectionClosed`].
fn closed_or(e: std::io::Error) -> ClientError {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => {
            ClientError::ConnectionClosed
        }
        _ => ClientError::from(e),
    }
}

/// A server error not tied to any operation (`client_msg_id == 0`) answers
/// the registration/login step being waited for.
fn unrelated_rejection<T>(event: &Event) -> Option<Result<T, ClientError>> {
    match event {
        Event::ServerError {
            code,
            message,
            client_msg_id: 0,
            ..
        } => Some(Err(ClientError::Rejected {
            code: *code,
            message: message.clone(),
        })),
        _ => None,
    }
}
