//! TLS setup end to end: certificate generation and reuse on disk,
//! operator-provided PEM files, and real TLS 1.3 handshakes over loopback TCP
//! between the built ServerConfig and a rustls client.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tern_engine::tls::{
    self, load_or_generate, load_pem_pair, load_tls_source, server_config, PairHalf, TlsError,
    TlsSource,
};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p = std::env::temp_dir().join(format!(
            "tern-tls-test-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn generates_once_then_reloads_same_cert() {
    let dir = TempDir::new("gen");
    let first = load_or_generate(&dir.0, &["chat.tern.test".to_owned()]).unwrap();
    assert!(first.generated);
    let (cert_path, key_path) = tls::default_paths(&dir.0);
    assert_eq!(cert_path, dir.0.join("tls").join("cert.pem"));
    assert_eq!(key_path, dir.0.join("tls").join("key.pem"));
    assert_eq!(first.cert_path, cert_path);
    assert_eq!(first.key_path, key_path);
    assert_eq!(mode(&key_path), 0o600);
    assert_eq!(mode(&cert_path), 0o644);
    assert_eq!(mode(&dir.0.join("tls")), 0o700);
    // Nothing but the pair is left in the directory (no temp files).
    let mut names: Vec<_> = std::fs::read_dir(dir.0.join("tls"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["cert.pem", "key.pem"]);

    assert_eq!(first.cert_chain.len(), 1);
    let fp = &first.fingerprint_sha256;
    assert_eq!(fp.len(), 64);
    assert!(fp
        .chars()
        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
    assert_eq!(*fp, tls::sha256_fingerprint(&first.cert_chain[0]));
    let colon = first.fingerprint_sha256_colon();
    assert_eq!(colon.len(), 95);
    assert_eq!(colon.replace(':', ""), *fp);
    assert!(colon.split(':').all(|pair| pair.len() == 2));

    let cert_bytes = std::fs::read(&cert_path).unwrap();
    let second = load_or_generate(&dir.0, &[]).unwrap();
    assert!(!second.generated);
    assert_eq!(second.fingerprint_sha256, first.fingerprint_sha256);
    assert_eq!(second.cert_chain, first.cert_chain);
    assert_eq!(
        second.key.secret_der(),
        first.key.secret_der(),
        "same key reloaded"
    );
    assert_eq!(std::fs::read(&cert_path).unwrap(), cert_bytes, "untouched");

    // The same through the TlsSource front door.
    let third = load_tls_source(&TlsSource::Embedded {
        data_dir: dir.0.clone(),
        extra_names: vec![],
    })
    .unwrap();
    assert_eq!(third.fingerprint_sha256, first.fingerprint_sha256);
    assert!(!third.generated);
}

#[test]
fn lone_cert_or_key_is_an_error_and_never_overwritten() {
    let dir = TempDir::new("lone");
    let id = load_or_generate(&dir.0, &[]).unwrap();
    let cert = std::fs::read(&id.cert_path).unwrap();
    let key = std::fs::read(&id.key_path).unwrap();

    std::fs::remove_file(&id.key_path).unwrap();
    let err = load_or_generate(&dir.0, &[]).unwrap_err();
    match &err {
        TlsError::MissingPair {
            which,
            present,
            missing,
        } => {
            assert_eq!(*which, PairHalf::Key);
            assert_eq!(present, &id.cert_path);
            assert_eq!(missing, &id.key_path);
        }
        other => panic!("unexpected {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("key.pem") && msg.contains("cert.pem"), "{msg}");
    assert_eq!(std::fs::read(&id.cert_path).unwrap(), cert);
    assert!(!id.key_path.exists(), "no key was generated");

    // Swap: the key is back, the certificate is gone.
    std::fs::write(&id.key_path, &key).unwrap();
    std::fs::remove_file(&id.cert_path).unwrap();
    let err = load_or_generate(&dir.0, &[]).unwrap_err();
    assert!(
        matches!(
            err,
            TlsError::MissingPair {
                which: PairHalf::Cert,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(std::fs::read(&id.key_path).unwrap(), key);
    assert!(!id.cert_path.exists());
}

/// Minimal base64 (standard alphabet, padded) for writing test PEM files.
fn base64(data: &[u8]) -> String {
    const ALPHA: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHA[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(line).unwrap());
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

/// Reads one DER TLV at the start of `d`: (tag, content, rest).
fn der_tlv(d: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = d[0];
    let (len, hdr) = match d[1] {
        n if n < 0x80 => (n as usize, 2),
        0x81 => (d[2] as usize, 3),
        0x82 => (((d[2] as usize) << 8) | d[3] as usize, 4),
        other => panic!("unsupported DER length byte {other:#x}"),
    };
    (tag, &d[hdr..hdr + len], &d[hdr + len..])
}

/// PKCS#8 PrivateKeyInfo -> the SEC1 ECPrivateKey it wraps.
fn pkcs8_to_sec1(pkcs8: &[u8]) -> Vec<u8> {
    let (tag, info, _) = der_tlv(pkcs8);
    assert_eq!(tag, 0x30);
    let (tag, _version, rest) = der_tlv(info);
    assert_eq!(tag, 0x02);
    let (tag, _alg, rest) = der_tlv(rest);
    assert_eq!(tag, 0x30);
    let (tag, sec1, _) = der_tlv(rest);
    assert_eq!(tag, 0x04);
    sec1.to_vec()
}

#[test]
fn operator_pem_pair_loads_with_chain_and_sec1_key() {
    let dir = TempDir::new("operator");
    let leaf = tls::generate_self_signed(&["ops.tern.test".to_owned()]).unwrap();
    let other = tls::generate_self_signed(&[]).unwrap();
    // Chain file: leaf first, then a second certificate (as an intermediate
    // would be), with a comment line between, as operators' bundles have.
    let chain = format!("{}# intermediate\n{}", leaf.cert_pem, other.cert_pem);
    let cert_path = dir.0.join("fullchain.pem");
    std::fs::write(&cert_path, chain).unwrap();

    let pkcs8 = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let sec1 = pkcs8_to_sec1(pkcs8.secret_der());
    let sec1_path = dir.0.join("ec-key.pem");
    std::fs::write(&sec1_path, pem("EC PRIVATE KEY", &sec1)).unwrap();
    let pkcs8_path = dir.0.join("pkcs8-key.pem");
    std::fs::write(&pkcs8_path, &leaf.key_pem).unwrap();

    for key_path in [&sec1_path, &pkcs8_path] {
        let id = load_tls_source(&TlsSource::Files {
            cert: cert_path.clone(),
            key: key_path.clone(),
        })
        .unwrap();
        assert!(!id.generated);
        assert_eq!(id.cert_chain.len(), 2);
        let leaf_der = CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap();
        assert_eq!(id.cert_chain[0], leaf_der);
        assert_eq!(id.fingerprint_sha256, tls::sha256_fingerprint(&leaf_der));
        assert_eq!(&id.key_path, key_path);
        if key_path == &sec1_path {
            assert!(matches!(id.key, PrivateKeyDer::Sec1(_)));
        }
        // rustls accepts the pair (it checks the key matches the leaf) and
        // a client that trusts the leaf completes a handshake.
        let cfg = server_config(&id).unwrap();
        let client = client_trusting(&id.cert_chain[..1], &[b"tern/1"]);
        let out = handshake(cfg, client, ServerName::try_from("ops.tern.test").unwrap());
        assert_eq!(out.server_alpn.as_deref(), Some(&b"tern/1"[..]));
    }

    // A key that does not belong to the certificate is refused by rustls.
    let wrong_key = dir.0.join("wrong.pem");
    std::fs::write(&wrong_key, &other.key_pem).unwrap();
    let id = load_pem_pair(&cert_path, &wrong_key).unwrap();
    assert!(matches!(server_config(&id), Err(TlsError::Rustls(_))));
}

#[test]
fn bad_files_are_named_in_errors() {
    let dir = TempDir::new("bad");
    let good = tls::generate_self_signed(&[]).unwrap();
    let good_cert = dir.0.join("cert.pem");
    let good_key = dir.0.join("key.pem");
    std::fs::write(&good_cert, &good.cert_pem).unwrap();
    std::fs::write(&good_key, &good.key_pem).unwrap();

    let missing = dir.0.join("nope.pem");
    match load_pem_pair(&missing, &good_key).unwrap_err() {
        TlsError::Io { path, .. } => assert_eq!(path, missing),
        other => panic!("unexpected {other:?}"),
    }
    match load_pem_pair(&good_cert, &missing).unwrap_err() {
        TlsError::Io { path, .. } => assert_eq!(path, missing),
        other => panic!("unexpected {other:?}"),
    }

    let garbage = dir.0.join("garbage.pem");
    std::fs::write(&garbage, "this is not a certificate\n").unwrap();
    let err = load_pem_pair(&garbage, &good_key).unwrap_err();
    assert!(
        matches!(&err, TlsError::BadPem { path, .. } if *path == garbage),
        "{err:?}"
    );
    assert!(err.to_string().contains("garbage.pem"));

    let torn = dir.0.join("torn.pem");
    let cut = good.cert_pem.len() / 2;
    std::fs::write(&torn, &good.cert_pem[..cut]).unwrap();
    let err = load_pem_pair(&torn, &good_key).unwrap_err();
    assert!(
        matches!(&err, TlsError::BadPem { path, .. } if *path == torn),
        "{err:?}"
    );

    // A "key" file holding only a certificate.
    let err = load_pem_pair(&good_cert, &good_cert).unwrap_err();
    assert!(
        matches!(&err, TlsError::NoKey { path } if *path == good_cert),
        "{err:?}"
    );
    assert!(err.to_string().contains("holds no private key"));
}

struct Outcome {
    server_version: Option<rustls::ProtocolVersion>,
    client_version: Option<rustls::ProtocolVersion>,
    server_alpn: Option<Vec<u8>>,
    client_alpn: Option<Vec<u8>>,
    kx_group: Option<rustls::NamedGroup>,
    peer_leaf: Vec<u8>,
    echoed: Vec<u8>,
}

fn client_trusting(roots: &[CertificateDer<'static>], alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// Runs server and client on two threads over a loopback TCP socket; the
/// client sends "ping!", the server answers "pong!" and closes cleanly.
fn handshake(
    server_cfg: Arc<rustls::ServerConfig>,
    client_cfg: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
) -> Outcome {
    try_handshake(server_cfg, client_cfg, name).unwrap()
}

fn try_handshake(
    server_cfg: Arc<rustls::ServerConfig>,
    client_cfg: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
) -> Result<Outcome, String> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || -> Result<_, String> {
        let (tcp, _) = listener.accept().map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let conn = rustls::ServerConnection::new(server_cfg).map_err(|e| e.to_string())?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).map_err(|e| e.to_string())?;
        assert_eq!(&buf, b"ping!");
        tls.write_all(b"pong!").map_err(|e| e.to_string())?;
        tls.conn.send_close_notify();
        tls.flush().map_err(|e| e.to_string())?;
        Ok((
            tls.conn.protocol_version(),
            tls.conn.alpn_protocol().map(<[u8]>::to_vec),
        ))
    });

    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn = rustls::ClientConnection::new(client_cfg, name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let client_result = (|| -> Result<_, String> {
        tls.write_all(b"ping!").map_err(|e| e.to_string())?;
        let mut echoed = Vec::new();
        // read_to_end ends at the server's close_notify.
        tls.read_to_end(&mut echoed).map_err(|e| e.to_string())?;
        Ok(echoed)
    })();
    // Unblock the server if the client failed before sending.
    let _ = tls.sock.shutdown(std::net::Shutdown::Both);
    let server_result = server.join().unwrap();
    let echoed = client_result?;
    let (server_version, server_alpn) = server_result?;
    Ok(Outcome {
        server_version,
        client_version: tls.conn.protocol_version(),
        server_alpn,
        client_alpn: tls.conn.alpn_protocol().map(<[u8]>::to_vec),
        kx_group: tls.conn.negotiated_key_exchange_group().map(|g| g.name()),
        peer_leaf: tls
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default(),
        echoed,
    })
}

#[test]
fn real_tls13_handshake_with_generated_cert() {
    let dir = TempDir::new("handshake");
    let id = load_or_generate(&dir.0, &[]).unwrap();
    let server_cfg = server_config(&id).unwrap();
    // The client trusts the certificate by its file, as `tern-chat --cert` would.
    let roots: Vec<_> = CertificateDer::pem_file_iter(&id.cert_path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();

    for name in ["localhost", "127.0.0.1", "::1"] {
        let out = handshake(
            Arc::clone(&server_cfg),
            client_trusting(&roots, &[b"tern/1"]),
            ServerName::try_from(name).unwrap().to_owned(),
        );
        assert_eq!(out.echoed, b"pong!", "{name}");
        assert_eq!(out.server_version, Some(rustls::ProtocolVersion::TLSv1_3));
        assert_eq!(out.client_version, Some(rustls::ProtocolVersion::TLSv1_3));
        assert_eq!(out.server_alpn.as_deref(), Some(&b"tern/1"[..]));
        assert_eq!(out.client_alpn.as_deref(), Some(&b"tern/1"[..]));
        assert_eq!(out.kx_group, Some(rustls::NamedGroup::X25519));
        // What the client saw is what the server prints for pinning.
        assert_eq!(
            tls::sha256_fingerprint(&out.peer_leaf),
            id.fingerprint_sha256
        );
    }

    // The crate's own client config helper does the same.
    let out = handshake(
        Arc::clone(&server_cfg),
        tls::client_config_trusting(&id.cert_chain).unwrap(),
        ServerName::try_from("localhost").unwrap(),
    );
    assert_eq!(out.client_alpn.as_deref(), Some(tls::ALPN_TERN));
    assert_eq!(out.server_version, Some(rustls::ProtocolVersion::TLSv1_3));
}

#[test]
fn handshake_fails_for_wrong_alpn_wrong_name_or_untrusted_cert() {
    let dir = TempDir::new("negative");
    let id = load_or_generate(&dir.0, &[]).unwrap();
    let server_cfg = server_config(&id).unwrap();
    let localhost = || ServerName::try_from("localhost").unwrap();

    // ALPN offered without tern/1: refused by the server.
    let err = try_handshake(
        Arc::clone(&server_cfg),
        client_trusting(&id.cert_chain, &[b"http/1.1"]),
        localhost(),
    )
    .err()
    .expect("handshake must fail");
    assert!(err.to_lowercase().contains("application"), "{err}");

    // A name the certificate does not cover.
    let err = try_handshake(
        Arc::clone(&server_cfg),
        client_trusting(&id.cert_chain, &[b"tern/1"]),
        ServerName::try_from("evil.example").unwrap(),
    )
    .err()
    .expect("handshake must fail");
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    // A client trusting some other certificate.
    let other = tls::generate_self_signed(&[]).unwrap();
    let other_der = CertificateDer::from_pem_slice(other.cert_pem.as_bytes()).unwrap();
    let err = try_handshake(
        Arc::clone(&server_cfg),
        client_trusting(&[other_der], &[b"tern/1"]),
        localhost(),
    )
    .err()
    .expect("handshake must fail");
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    // No ALPN at all is accepted (and none is negotiated).
    let out = handshake(
        Arc::clone(&server_cfg),
        client_trusting(&id.cert_chain, &[]),
        localhost(),
    );
    assert_eq!(out.server_alpn, None);
    assert_eq!(out.echoed, b"pong!");
}
