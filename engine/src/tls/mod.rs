//! TLS setup: the server's certificate and its rustls configuration.
//!
//! - [`cert`]: on embedded defaults a self-signed ECDSA P-256 certificate is
//!   created in `<data_dir>/tls/` on first run and reused afterwards;
//!   operators may give their own PEM cert chain and key instead. Either way
//!   the leaf's SHA-256 fingerprint is computed so the server can print it and
//!   `tern-chat --pin-sha256` can trust it.
//! - [`config`]: a TLS 1.3-only `rustls::ServerConfig` (ring provider, ALPN
//!   `tern/1`, no resumption state), plus a matching client config for tests
//!   and tools that trust a given certificate.
//! - `session`: one server-side session over rustls's unbuffered API, with
//!   buffers owned by the caller so that an idle session holds none.

pub mod cert;
pub mod config;
pub(crate) mod session;

use std::fmt;
use std::path::PathBuf;

pub use cert::{
    colon_fingerprint, default_paths, generate_self_signed, load_or_generate, load_pem_pair,
    load_tls_source, sha256_fingerprint, SelfSigned, TlsIdentity, TlsSource, CERT_FILE_NAME,
    KEY_FILE_NAME, TLS_DIR_NAME, VALIDITY_DAYS,
};
pub use config::{client_config_trusting, server_config, ALPN_TERN};

/// Which half of a certificate/key pair is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairHalf {
    /// The certificate file exists but the key file does not.
    Key,
    /// The key file exists but the certificate file does not.
    Cert,
}

/// Why TLS could not be set up.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// Reading, writing or creating a file or directory failed.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Only one of the embedded cert/key files exists. Nothing is generated
    /// over it: the operator must supply the other half or remove this one.
    MissingPair {
        /// The half that is missing.
        which: PairHalf,
        /// The file that exists.
        present: PathBuf,
        /// The file that does not.
        missing: PathBuf,
    },
    /// A file is not valid PEM, or holds no certificate.
    BadPem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A key file holds no private key (PKCS#8, SEC1 or PKCS#1 RSA).
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// Generating the self-signed certificate failed.
    Generate(String),
    /// rustls rejected the certificate, key or settings (e.g. key and
    /// certificate do not match).
    Rustls(rustls::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "TLS file {}: {source}", path.display()),
            Self::MissingPair {
                which,
                present,
                missing,
            } => {
                let half = match which {
                    PairHalf::Key => "private key",
                    PairHalf::Cert => "certificate",
                };
                write!(
                    f,
                    "TLS {half} {} is missing but {} exists; refusing to generate a new pair \
                     over it: restore the missing file or remove {} to let the server create \
                     a fresh self-signed pair",
                    missing.display(),
                    present.display(),
                    present.display()
                )
            }
            Self::BadPem { path, reason } => {
                write!(f, "TLS file {} is not usable PEM: {reason}", path.display())
            }
            Self::NoKey { path } => write!(
                f,
                "TLS key file {} holds no private key (expected PKCS#8, SEC1 EC or PKCS#1 RSA PEM)",
                path.display()
            ),
            Self::Generate(why) => {
                write!(f, "generating the self-signed certificate failed: {why}")
            }
            Self::Rustls(e) => write!(f, "TLS configuration rejected: {e}"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::Rustls(e) => Some(e),
            _ => None,
        }
    }
}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> Self {
        Self::Rustls(e)
    }
}
