//! One client connection's bytes: a non-blocking TCP socket (bound to a
//! chosen 127.x.y.z source address before connect), with a rustls
//! `ClientConnection` on top unless the run is plaintext. The protocol
//! itself lives in the user's `ClientSession`; this type only moves bytes.
//!
//! Sockets are registered with mio for both readable and writable,
//! edge-triggered, once: reads go on until `WouldBlock`, and writes stop at
//! `WouldBlock` and resume on the next writable edge.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::pki_types::ServerName;
use rustls::ClientConnection;
use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// Where a connection is in its set-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// `connect()` in progress.
    TcpConnecting,
    /// TLS handshake in progress.
    Handshaking,
    /// Bytes of the protocol flow.
    Open,
}

/// Why a connection ended, as a short stable name for the error table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ConnError {
    /// The server closed the connection.
    Eof,
    /// A socket error.
    Io(ErrorKind),
    /// A TLS error.
    Tls(String),
}

impl ConnError {
    /// The error table key.
    pub(crate) fn key(&self) -> String {
        match self {
            Self::Eof => "local:closed_by_server".to_owned(),
            Self::Io(kind) => format!("local:io:{kind:?}"),
            Self::Tls(e) => format!("local:tls:{e}"),
        }
    }
}

fn tls_err(e: &rustls::Error) -> ConnError {
    // Keep the key short and stable: the variant name only.
    let text = format!("{e:?}");
    let name = text
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("Other");
    ConnError::Tls(name.to_owned())
}

/// A connection's socket and TLS state.
#[derive(Debug)]
pub(crate) struct Conn {
    sock: TcpStream,
    tls: Option<Box<ClientConnection>>,
    pub(crate) stage: Stage,
    /// Distinguishes this connection's events from an earlier one of the
    /// same user (same token slot).
    pub(crate) generation: u32,
    /// When `connect()` was called.
    pub(crate) started: Instant,
    /// When TCP was up (the TLS handshake starts then).
    pub(crate) tcp_up: Option<Instant>,
    /// When TCP (and TLS) were up.
    pub(crate) opened: Option<Instant>,
    /// Plaintext mode: bytes not yet written.
    out: Vec<u8>,
    out_pos: usize,
}

/// mio token of a user's connection: user slot in the low 32 bits,
/// connection generation in the high ones.
pub(crate) fn token(user: usize, generation: u32) -> Token {
    let user = u64::try_from(user).unwrap_or(u64::MAX) & 0xffff_ffff;
    Token(usize::try_from(u64::from(generation) << 32 | user).unwrap_or(usize::MAX))
}

/// Splits a token into (user slot, generation).
pub(crate) fn untoken(t: Token) -> (usize, u32) {
    let v = u64::try_from(t.0).unwrap_or(u64::MAX);
    (
        usize::try_from(v & 0xffff_ffff).unwrap_or(usize::MAX),
        u32::try_from(v >> 32).unwrap_or(u32::MAX),
    )
}

impl Conn {
    /// Starts a non-blocking connect from `source` (port chosen by the
    /// kernel) and registers the socket.
    pub(crate) fn connect(
        server: SocketAddr,
        source: Option<Ipv4Addr>,
        tls: Option<(&Arc<rustls::ClientConfig>, &ServerName<'static>)>,
        registry: &Registry,
        user: usize,
        generation: u32,
        now: Instant,
    ) -> io::Result<Self> {
        let domain = if server.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
        let sock = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
        sock.set_nonblocking(true)?;
        sock.set_nodelay(true)?;
        if let (Some(ip), true) = (source, server.is_ipv4()) {
            sock.bind(&SocketAddr::from((ip, 0)).into())?;
        }
        match sock.connect(&server.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        let mut sock = TcpStream::from_std(std::net::TcpStream::from(sock));
        registry.register(
            &mut sock,
            token(user, generation),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let tls = match tls {
            Some((config, name)) => {
                let mut c = ClientConnection::new(Arc::clone(config), name.clone())
                    .map_err(|e| io::Error::other(e.to_string()))?;
                // Our own windows bound what is queued; never refuse bytes
                // the session already committed to.
                c.set_buffer_limit(None);
                Some(Box::new(c))
            }
            None => None,
        };
        Ok(Self {
            sock,
            tls,
            stage: Stage::TcpConnecting,
            generation,
            started: now,
            tcp_up: None,
            opened: None,
            out: Vec::new(),
            out_pos: 0,
        })
    }

    /// Advances set-up after a socket event. Returns true when the
    /// connection just became [`Stage::Open`].
    pub(crate) fn progress(
        &mut self,
        now: Instant,
        scratch: &mut [u8],
        mut on_plaintext: impl FnMut(&[u8]) -> bool,
    ) -> Result<bool, ConnError> {
        if self.stage == Stage::TcpConnecting {
            if let Some(e) = self
                .sock
                .take_error()
                .map_err(|e| ConnError::Io(e.kind()))?
            {
                return Err(ConnError::Io(e.kind()));
            }
            match self.sock.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotConnected => return Ok(false),
                Err(e) => return Err(ConnError::Io(e.kind())),
            }
            self.tcp_up = Some(now);
            if self.tls.is_some() {
                self.stage = Stage::Handshaking;
            } else {
                self.stage = Stage::Open;
                self.opened = Some(now);
                return Ok(true);
            }
        }
        if self.stage == Stage::Handshaking {
            self.flush_tls()?;
            self.read(scratch, &mut on_plaintext)?;
            let handshaking = self.tls.as_ref().is_some_and(|t| t.is_handshaking());
            if !handshaking {
                self.stage = Stage::Open;
                self.opened = Some(now);
                return Ok(true);
            }
            self.flush_tls()?;
            return Ok(false);
        }
        Ok(false)
    }

    /// Reads everything the socket has; hands decrypted bytes to
    /// `on_plaintext` (which returns false to stop: the session broke).
    pub(crate) fn read(
        &mut self,
        scratch: &mut [u8],
        on_plaintext: &mut impl FnMut(&[u8]) -> bool,
    ) -> Result<(), ConnError> {
        match self.tls.as_deref_mut() {
            None => loop {
                match self.sock.read(scratch) {
                    Ok(0) => return Err(ConnError::Eof),
                    Ok(n) => {
                        if !on_plaintext(scratch.get(..n).unwrap_or_default()) {
                            return Ok(());
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(ConnError::Io(e.kind())),
                }
            },
            Some(tls) => loop {
                match tls.read_tls(&mut self.sock) {
                    Ok(0) => return Err(ConnError::Eof),
                    Ok(_) => {
                        let state = tls.process_new_packets().map_err(|e| tls_err(&e))?;
                        let mut left = state.plaintext_bytes_to_read();
                        while left > 0 {
                            match tls.reader().read(scratch) {
                                Ok(0) => return Err(ConnError::Eof),
                                Ok(n) => {
                                    left = left.saturating_sub(n);
                                    if !on_plaintext(scratch.get(..n).unwrap_or_default()) {
                                        return Ok(());
                                    }
                                }
                                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                                Err(e) => return Err(ConnError::Io(e.kind())),
                            }
                        }
                        if state.peer_has_closed() {
                            return Err(ConnError::Eof);
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(ConnError::Io(e.kind())),
                }
            },
        }
    }

    /// Queues `data` (plaintext protocol bytes) and writes what the socket
    /// takes.
    pub(crate) fn write(&mut self, data: &[u8]) -> Result<(), ConnError> {
        match self.tls.as_deref_mut() {
            Some(tls) => {
                if !data.is_empty() {
                    tls.writer()
                        .write_all(data)
                        .map_err(|e| ConnError::Io(e.kind()))?;
                }
                self.flush_tls()
            }
            None => {
                if self.out_pos == self.out.len() {
                    self.out.clear();
                    self.out_pos = 0;
                }
                self.out.extend_from_slice(data);
                self.flush_plain()
            }
        }
    }

    /// Writes queued bytes (after a writable edge).
    pub(crate) fn flush(&mut self) -> Result<(), ConnError> {
        if self.stage == Stage::TcpConnecting {
            return Ok(());
        }
        if self.tls.is_some() {
            self.flush_tls()
        } else {
            self.flush_plain()
        }
    }

    fn flush_tls(&mut self) -> Result<(), ConnError> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return Ok(());
        };
        while tls.wants_write() {
            match tls.write_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(ConnError::Io(e.kind())),
            }
        }
        Ok(())
    }

    fn flush_plain(&mut self) -> Result<(), ConnError> {
        while let Some(rest) = self.out.get(self.out_pos..).filter(|r| !r.is_empty()) {
            match self.sock.write(rest) {
                Ok(0) => return Err(ConnError::Io(ErrorKind::WriteZero)),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(ConnError::Io(e.kind())),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Ok(())
    }

    /// Closes abortively (RST, no TIME_WAIT on our side, so source ports
    /// are free again at once) and deregisters.
    pub(crate) fn close(mut self, registry: &Registry) {
        let _ = SockRef::from(&self.sock).set_linger(Some(Duration::ZERO));
        let _ = registry.deregister(&mut self.sock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_user_and_generation() {
        for (u, g) in [(0usize, 0u32), (19_999, 7), (123, u32::MAX)] {
            assert_eq!(untoken(token(u, g)), (u, g));
        }
        assert_ne!(token(5, 1), token(5, 2));
    }

    #[test]
    fn error_keys_are_short() {
        assert_eq!(ConnError::Eof.key(), "local:closed_by_server");
        assert_eq!(
            ConnError::Io(ErrorKind::ConnectionRefused).key(),
            "local:io:ConnectionRefused"
        );
        let e = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        assert_eq!(tls_err(&e).key(), "local:tls:InvalidCertificate");
    }
}
