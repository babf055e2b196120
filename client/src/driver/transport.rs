//! The byte pipe under a blocking client: TCP, with rustls on top unless
//! the caller chose plaintext.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

use crate::error::{ClientError, ConfigReason};

use super::{DriverConfig, DEFAULT_PORT};

/// A connected transport.
#[derive(Debug)]
pub(crate) enum Transport {
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    Plain(TcpStream),
}

impl Transport {
    pub(crate) fn socket(&self) -> &TcpStream {
        match self {
            Self::Tls(s) => &s.sock,
            Self::Plain(s) => s,
        }
    }

    /// One read, bounded by the socket's read timeout. `Ok(0)` is end of
    /// stream.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tls(s) => s.read(buf),
            Self::Plain(s) => s.read(buf),
        }
    }

    /// Writes all of `bytes` and pushes them to the socket.
    pub(crate) fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Self::Tls(s) => {
                s.write_all(bytes)?;
                s.flush()
            }
            Self::Plain(s) => s.write_all(bytes),
        }
    }

    /// Best-effort close: TLS close_notify, then TCP shutdown. Errors are
    /// moot: the connection is being abandoned either way.
    pub(crate) fn shutdown(&mut self) {
        if let Self::Tls(s) = self {
            s.conn.send_close_notify();
            let _ = s.conn.complete_io(&mut s.sock);
        }
        let _ = self.socket().shutdown(Shutdown::Both);
    }
}

/// Splits `HOST:PORT` (`[v6]:PORT` for IPv6); a missing port means
/// [`DEFAULT_PORT`].
pub(crate) fn split_host_port(server: &str) -> Result<(String, u16), ClientError> {
    let bad = |detail: &str| {
        ClientError::Config(ConfigReason::BadAddress(format!("`{server}`: {detail}")))
    };
    let server = server.trim();
    let (host, port) = if let Some(rest) = server.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| bad("missing `]` after an IPv6 address"))?;
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err(bad("expected `:PORT` after `]`")),
        }
    } else {
        match server.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err(bad("write IPv6 addresses as [ADDR]:PORT"))
            }
            Some((host, port)) => (host, Some(port)),
            None => (server, None),
        }
    };
    if host.is_empty() {
        return Err(bad("empty host"));
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| bad("port is not a number 0-65535"))?,
        None => DEFAULT_PORT,
    };
    Ok((host.to_owned(), port))
}

/// Opens TCP (trying each resolved address in turn), then the TLS 1.3
/// handshake when `tls` is given. Handshake failures (untrusted
/// certificate, wrong pin) come back as [`ClientError::Tls`].
pub(crate) fn connect(
    config: &DriverConfig,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Transport, ClientError> {
    let (host, port) = split_host_port(&config.server)?;
    let connect_timeout = Duration::from_millis(config.connect_timeout_ms.max(1));
    let addrs = (host.as_str(), port).to_socket_addrs().map_err(|e| {
        ClientError::Config(ConfigReason::BadAddress(format!(
            "`{}`: {e}",
            config.server
        )))
    })?;
    let mut last_error = None;
    let mut sock = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, connect_timeout) {
            Ok(s) => {
                sock = Some(s);
                break;
            }
            Err(e) => last_error = Some(e),
        }
    }
    let mut sock = match (sock, last_error) {
        (Some(s), _) => s,
        (None, Some(e)) => return Err(ClientError::Io(e)),
        (None, None) => {
            return Err(ClientError::Config(ConfigReason::BadAddress(format!(
                "`{}` resolves to no address",
                config.server
            ))))
        }
    };
    sock.set_nodelay(true)?;
    sock.set_write_timeout(Some(Duration::from_millis(config.write_timeout_ms.max(1))))?;
    let Some(tls) = tls else {
        return Ok(Transport::Plain(sock));
    };
    let name = config.server_name.clone().unwrap_or(host);
    let server_name = ServerName::try_from(name.clone())
        .map_err(|_| ClientError::Config(ConfigReason::InvalidServerName(name)))?;
    let mut conn = ClientConnection::new(Arc::clone(tls), server_name)?;
    sock.set_read_timeout(Some(connect_timeout))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    Ok(Transport::Tls(Box::new(StreamOwned::new(conn, sock))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(
            split_host_port("127.0.0.1:5222").unwrap(),
            ("127.0.0.1".to_owned(), 5222)
        );
        assert_eq!(
            split_host_port("chat.example").unwrap(),
            ("chat.example".to_owned(), DEFAULT_PORT)
        );
        assert_eq!(split_host_port("[::1]:9").unwrap(), ("::1".to_owned(), 9));
        assert_eq!(
            split_host_port("[::1]").unwrap(),
            ("::1".to_owned(), DEFAULT_PORT)
        );
        for bad in ["::1:80", ":80", "host:99999", "host:x", "[::1", "[::1]x"] {
            assert!(
                matches!(
                    split_host_port(bad),
                    Err(ClientError::Config(ConfigReason::BadAddress(_)))
                ),
                "accepted {bad:?}"
            );
        }
    }
}
