//! rustls configuration for the Tern listener (and a matching client side).
//!
//! - TLS 1.3 only, ring crypto provider. Key exchange is X25519 first (then
//!   P-256, P-384): ring has no X25519MLKEM768, the post-quantum hybrid that
//!   is rustls's default with aws-lc-rs. X25519 alone is also slightly cheaper
//!   per handshake (see ../shared/NOTES.md).
//! - ALPN `tern/1`. A client offering ALPN without `tern/1` is refused by
//!   rustls; a client offering no ALPN at all is accepted.
//! - No client certificates: devices authenticate inside the protocol with
//!   their device key.
//! - No resumption state: no TLS 1.3 tickets are sent and no session cache is
//!   kept. Phones keep one long-lived connection and reconnect rarely, so
//!   resumption saves little, while tickets cost bytes on every handshake and
//!   a session cache costs memory per client on a box holding millions.

use std::sync::Arc;

use rustls::client::ClientConfig;
use rustls::server::{NoServerSessionStorage, ServerConfig};
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;

use super::{TlsError, TlsIdentity};

/// The ALPN protocol id of the Tern binary protocol, version 1 (defined
/// with the protocol in tern-wire).
pub const ALPN_TERN: &[u8] = tern_wire::ALPN;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the server's TLS configuration from its certificate and key.
///
/// Fails with [`TlsError::Rustls`] if rustls rejects the pair (for example a
/// key that does not match the certificate).
pub fn server_config(identity: &TlsIdentity) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(identity.cert_chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = vec![ALPN_TERN.to_vec()];
    // No resumption: see the module docs. The default ticketer already never
    // produces tickets; zero also stops stateful "tickets" (session ids).
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    Ok(Arc::new(config))
}

/// A TLS 1.3 client configuration (ring, ALPN `tern/1`) that trusts exactly
/// the given certificates as roots, e.g. the server's self-signed leaf. For
/// tests, the load generator and tools; `tern-chat` has its own options.
pub fn client_config_trusting(
    roots: &[CertificateDer<'static>],
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in roots {
        store.add(cert.clone())?;
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_TERN.to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{generate_self_signed, sha256_fingerprint};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::PrivateKeyDer;
    use std::path::PathBuf;

    fn identity_from(cert_pem: &str, key_pem: &str) -> TlsIdentity {
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        TlsIdentity {
            fingerprint_sha256: sha256_fingerprint(&cert),
            cert_chain: vec![cert],
            key: PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap(),
            cert_path: PathBuf::from("mem-cert"),
            key_path: PathBuf::from("mem-key"),
            generated: true,
        }
    }

    #[test]
    fn server_config_settings() {
        let pair = generate_self_signed(&[]).unwrap();
        let cfg = server_config(&identity_from(&pair.cert_pem, &pair.key_pem)).unwrap();
        assert_eq!(cfg.alpn_protocols, vec![b"tern/1".to_vec()]);
        assert_eq!(cfg.send_tls13_tickets, 0);
        assert!(!cfg.ticketer.enabled());
        assert!(!cfg.session_storage.can_cache());
        let kx: Vec<_> = cfg
            .crypto_provider()
            .kx_groups
            .iter()
            .map(|g| g.name())
            .collect();
        assert_eq!(kx.first(), Some(&rustls::NamedGroup::X25519));
    }

    #[test]
    fn mismatched_key_is_rejected() {
        let a = generate_self_signed(&[]).unwrap();
        let b = generate_self_signed(&[]).unwrap();
        let err = server_config(&identity_from(&a.cert_pem, &b.key_pem)).unwrap_err();
        assert!(matches!(err, TlsError::Rustls(_)), "{err:?}");
    }
}
