//! The engine crate's error type.

use std::fmt;

/// Why the server could not start or run.
#[non_exhaustive]
#[derive(Debug)]
pub enum EngineError {
    /// A listener could not bind.
    Bind(String),
    /// An executor or thread could not start.
    Start(String),
    /// TLS material could not be loaded or generated.
    Tls(crate::tls::TlsError),
    /// The SMS gateway configuration is unusable.
    Sms(crate::sms::SmsError),
    /// The data directory could not be created or used.
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// A configuration value is out of range.
    Config(String),
    /// A shard's log could not be opened or replayed (the message names
    /// the file and offset).
    Log(String),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bind(e) => write!(f, "cannot listen: {e}"),
            Self::Start(e) => write!(f, "cannot start: {e}"),
            Self::Tls(e) => write!(f, "TLS: {e}"),
            Self::Sms(e) => write!(f, "SMS gateway: {e}"),
            Self::DataDir { path, source } => {
                write!(f, "data directory {}: {source}", path.display())
            }
            Self::Config(e) => write!(f, "configuration: {e}"),
            Self::Log(e) => write!(f, "log: {e}"),
        }
    }
}

impl std::error::Error for EngineError {}

impl From<crate::tls::TlsError> for EngineError {
    fn from(e: crate::tls::TlsError) -> Self {
        Self::Tls(e)
    }
}

impl From<crate::sms::SmsError> for EngineError {
    fn from(e: crate::sms::SmsError) -> Self {
        Self::Sms(e)
    }
}
