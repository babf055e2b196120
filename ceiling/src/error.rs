//! The crate's one error type: what stops the ceiling from starting. A
//! single connection's failure is not an error of the server; it ends that
//! connection (and its pair) and is counted by [`crate::Close`].

use std::fmt;
use std::net::SocketAddr;

/// Why the ceiling could not start.
#[non_exhaustive]
#[derive(Debug)]
pub enum CeilingError {
    /// A setting is out of range or inconsistent.
    Config(String),
    /// The TLS certificate or configuration could not be set up.
    Tls(tern_engine::tls::TlsError),
    /// A core's listener could not bind.
    Bind {
        /// The address it tried.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// An executor could not be started, or died while starting.
    Start(String),
}

impl fmt::Display for CeilingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(why) => write!(f, "configuration: {why}"),
            Self::Tls(e) => write!(f, "{e}"),
            Self::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            Self::Start(why) => write!(f, "start: {why}"),
        }
    }
}

impl std::error::Error for CeilingError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Tls(e) => Some(e),
            Self::Bind { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<tern_engine::tls::TlsError> for CeilingError {
    fn from(e: tern_engine::tls::TlsError) -> Self {
        Self::Tls(e)
    }
}
