//! The crate's one error type. Failures of single connections during a run
//! are not errors: they are counted in the report (`errors` by code). This
//! type is for what stops the whole run: a bad scenario, an unusable TLS
//! setup, a worker that cannot be started or that died.

use std::fmt;
use std::path::PathBuf;

/// Why a load run could not be set up or finished.
#[non_exhaustive]
#[derive(Debug)]
pub enum LoadgenError {
    /// The scenario (flags or TOML file) is inconsistent or out of range.
    Scenario(String),
    /// A file could not be read or written.
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The scenario TOML file does not parse.
    Toml {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        detail: String,
    },
    /// The TLS trust setup failed (CA file, fingerprint).
    Tls(tern_client::ClientError),
    /// A worker process could not be started, or broke the worker protocol.
    Worker {
        /// Worker index.
        index: usize,
        /// What happened.
        detail: String,
    },
    /// Encoding or decoding a JSON message or report failed.
    Json(serde_json::Error),
    /// Any other I/O failure (poll setup, spawning threads).
    Io(std::io::Error),
}

impl fmt::Display for LoadgenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Scenario(detail) => write!(f, "scenario: {detail}"),
            Self::File { path, source } => write!(f, "{}: {source}", path.display()),
            Self::Toml { path, detail } => write!(f, "{}: {detail}", path.display()),
            Self::Tls(e) => write!(f, "tls setup: {e}"),
            Self::Worker { index, detail } => write!(f, "worker {index}: {detail}"),
            Self::Json(e) => write!(f, "json: {e}"),
            Self::Io(e) => write!(f, "i/o: {e}"),
        }
    }
}

impl std::error::Error for LoadgenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::File { source, .. } => Some(source),
            Self::Tls(e) => Some(e),
            Self::Json(e) => Some(e),
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<serde_json::Error> for LoadgenError {
    fn from(e: serde_json::Error) -> Self {
        Self::Json(e)
    }
}

impl From<std::io::Error> for LoadgenError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<tern_client::ClientError> for LoadgenError {
    fn from(e: tern_client::ClientError) -> Self {
        Self::Tls(e)
    }
}
