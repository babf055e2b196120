//! TLS client setup: TLS 1.3 only, rustls with the ring provider, and three
//! ways to trust the server (a CA/certificate file, a pinned leaf
//! fingerprint, or, named loudly, no TLS at all).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::error::{ClientError, ConfigReason};

/// Bytes in a SHA-256 certificate fingerprint.
pub const FINGERPRINT_LEN: usize = 32;

/// SHA-256 of a certificate's DER encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertFingerprint(pub [u8; FINGERPRINT_LEN]);

impl CertFingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }

    /// Parses 64 hex digits, with or without colons between bytes
    /// (`AB:CD:...` as printed by `openssl x509 -fingerprint -sha256`).
    pub fn parse(s: &str) -> Result<Self, ClientError> {
        let bad = |detail: String| ClientError::Config(ConfigReason::BadFingerprint(detail));
        let s = s.trim();
        let s = s
            .strip_prefix("sha256:")
            .or_else(|| s.strip_prefix("SHA256:"))
            .or_else(|| s.strip_prefix("sha256 Fingerprint="))
            .unwrap_or(s);
        let digits: String = s.chars().filter(|&c| c != ':').collect();
        let bytes = hex::decode(&digits).map_err(|e| bad(e.to_string()))?;
        let got = bytes.len();
        <[u8; FINGERPRINT_LEN]>::try_from(bytes)
            .map(Self)
            .map_err(|_| bad(format!("{got} bytes")))
    }

    /// Lowercase hex with colons between bytes.
    pub fn to_colon_hex(&self) -> String {
        self.0
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

impl fmt::Display for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertFingerprint({self})")
    }
}

/// How the client decides to trust the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// Verify the server's certificate chain and name against the
    /// certificates in this PEM file: a CA, or the server's own self-signed
    /// certificate.
    CaFile(PathBuf),
    /// Accept exactly the leaf certificate with this SHA-256 fingerprint
    /// (name and expiry are not checked: the pin is the trust). The TLS 1.3
    /// handshake signature is still verified, so only the holder of that
    /// certificate's private key gets through.
    PinnedSha256(CertFingerprint),
    /// No TLS: plain TCP, readable and forgeable by anyone on the path.
    /// For local tests and debugging only.
    InsecurePlaintext,
}

/// The ring crypto provider used everywhere in this crate.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client configuration for `trust` (TLS 1.3 only), or `None`
/// for [`Trust::InsecurePlaintext`].
pub fn client_config(trust: &Trust) -> Result<Option<Arc<rustls::ClientConfig>>, ClientError> {
    let provider = crypto_provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClientError::Config(ConfigReason::Tls(e.to_string())))?;
    let mut config = match trust {
        Trust::InsecurePlaintext => return Ok(None),
        Trust::CaFile(path) => {
            let ca_file_error = |detail: String| {
                ClientError::Config(ConfigReason::CaFile {
                    path: path.clone(),
                    detail,
                })
            };
            let mut roots = RootCertStore::empty();
            for cert in
                CertificateDer::pem_file_iter(path).map_err(|e| ca_file_error(e.to_string()))?
            {
                let cert = cert.map_err(|e| ca_file_error(e.to_string()))?;
                roots.add(cert).map_err(|e| {
                    ClientError::Config(ConfigReason::BadTrustAnchor(e.to_string()))
                })?;
            }
            if roots.is_empty() {
                return Err(ClientError::Config(ConfigReason::NoCertificates(
                    path.clone(),
                )));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::PinnedSha256(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCertVerifier {
                pin: *pin,
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![tern_wire::ALPN.to_vec()];
    Ok(Some(Arc::new(config)))
}

/// Trusts exactly one leaf certificate, by SHA-256 fingerprint, and checks
/// the handshake signatures with the provider's algorithms.
#[derive(Debug)]
struct PinnedCertVerifier {
    pin: CertFingerprint,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if CertFingerprint::of_der(end_entity) == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Never reached (TLS 1.3 only), but correct if it were.
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_parses_with_and_without_colons() {
        let fp = CertFingerprint::of_der(b"not really a certificate");
        let plain = fp.to_string();
        assert_eq!(plain.len(), 64);
        assert_eq!(CertFingerprint::parse(&plain).unwrap(), fp);
        assert_eq!(CertFingerprint::parse(&fp.to_colon_hex()).unwrap(), fp);
        assert_eq!(
            CertFingerprint::parse(&fp.to_colon_hex().to_uppercase()).unwrap(),
            fp
        );
        assert_eq!(
            CertFingerprint::parse(&format!("sha256:{plain}")).unwrap(),
            fp
        );
    }

    #[test]
    fn fingerprint_rejects_wrong_length_and_junk() {
        let fp = CertFingerprint::of_der(b"x").to_string();
        for bad in [&fp[..62], "zz", "", &format!("{fp}00")] {
            assert!(
                matches!(
                    CertFingerprint::parse(bad),
                    Err(ClientError::Config(ConfigReason::BadFingerprint(_)))
                ),
                "accepted {bad:?}"
            );
        }
    }

    #[test]
    fn ca_file_errors_are_config_errors() {
        let missing = PathBuf::from("/nonexistent/tern-ca.pem");
        assert!(matches!(
            client_config(&Trust::CaFile(missing)),
            Err(ClientError::Config(ConfigReason::CaFile { .. }))
        ));
        let dir = std::env::temp_dir().join(format!("tern-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no pem here\n").unwrap();
        assert!(matches!(
            client_config(&Trust::CaFile(empty)),
            Err(ClientError::Config(ConfigReason::NoCertificates(_)))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn plaintext_has_no_tls_config_and_pin_has_one() {
        assert!(client_config(&Trust::InsecurePlaintext).unwrap().is_none());
        let pin = CertFingerprint([7; FINGERPRINT_LEN]);
        assert!(client_config(&Trust::PinnedSha256(pin)).unwrap().is_some());
    }
}
