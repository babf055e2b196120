//! One server-side TLS session whose buffers belong to the caller
//! (rustls's unbuffered API), so that an idle session holds none.
//!
//! rustls's buffered `ServerConnection` keeps a 4 KiB receive buffer (it
//! reads at least that much at a time) and output queues for the life of
//! the connection: with its state, ~7.5 KiB per idle session here
//! (`examples/tls_session_mem.rs`). `UnbufferedServerConnection` keeps only
//! the protocol state (~3.3 KiB) and works on the caller's bytes:
//!
//! - ciphertext is processed where the runtime read it (the shard's shared
//!   scratch buffer); only an incomplete record is copied into `pending`,
//!   which is freed again as soon as the record completes;
//! - TLS output (the handshake flight, alerts, application records) is
//!   appended to a buffer the caller passes in and drops once written.
//!
//! Sans-IO like the core: bytes in, bytes out, no socket and no clock; the
//! tests drive it against a rustls client in memory.

use std::mem;
use std::sync::Arc;

use rustls::server::{ServerConfig, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError};
use rustls::{Error, InvalidMessage};

/// Ciphertext a session may hold between reads. rustls bounds what it
/// leaves unprocessed itself (one record, at most 16 KiB + 256 + 5 bytes,
/// or during the handshake one handshake message of at most 64 KiB spread
/// over records); this is the backstop should that ever change.
pub(crate) const TLS_PENDING_BYTES_MAX: usize = 96 * 1024;

/// Bytes a TLS 1.3 record adds to its payload: 5 of header, 1 of inner
/// content type, 16 of AEAD tag.
const RECORD_OVERHEAD_BYTES: usize = 22;

/// Largest plaintext per record (TLS 1.3).
const RECORD_PAYLOAD_BYTES_MAX: usize = 16 * 1024;

/// Where decrypted application data goes, record by record.
type PlainSink<'a> = &'a mut dyn FnMut(&[u8]);

/// What to do once rustls is ready to protect application data.
enum Outgoing<'a> {
    Data(&'a [u8]),
    CloseNotify,
}

/// A server-side TLS session with caller-owned buffers.
pub(crate) struct TlsSession {
    conn: UnbufferedServerConnection,
    /// Ciphertext received but not yet processed: the start of a record
    /// (or of a handshake message spread over records). Empty and
    /// unallocated between records.
    pending: Vec<u8>,
    /// `TLS_PENDING_BYTES_MAX`, lowered in tests to reach it.
    pending_max: usize,
    peer_closed: bool,
    /// rustls returned an error: it must not be driven again (it would
    /// process the offending bytes twice).
    failed: bool,
}

impl std::fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSession")
            .field("handshaking", &self.conn.is_handshaking())
            .field("pending", &self.pending.len())
            .field("peer_closed", &self.peer_closed)
            .finish_non_exhaustive()
    }
}

impl TlsSession {
    pub(crate) fn new(config: Arc<ServerConfig>) -> Result<Self, Error> {
        Ok(Self {
            conn: UnbufferedServerConnection::new(config)?,
            pending: Vec::new(),
            pending_max: TLS_PENDING_BYTES_MAX,
            peer_closed: false,
            failed: false,
        })
    }

    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// True once the peer's close_notify was processed: it sends no more.
    pub(crate) fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Ciphertext held until more arrives (0 while idle).
    #[cfg(test)]
    pub(crate) fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// Heap bytes held besides rustls's own state (0 while idle).
    #[cfg(test)]
    pub(crate) fn buffer_capacity(&self) -> usize {
        self.pending.capacity()
    }

    /// Processes ciphertext read from the socket. Each decrypted record's
    /// plaintext goes to `plain`, in order; TLS bytes for the peer (the
    /// handshake flight, a key update) are appended to `out`. `bytes` is
    /// worked on in place and left in an unspecified state.
    ///
    /// On an error the session is dead: `out` then ends with the alert for
    /// the peer, if rustls made one, and the connection should close after
    /// writing it.
    pub(crate) fn receive(
        &mut self,
        bytes: &mut [u8],
        out: &mut Vec<u8>,
        plain: &mut dyn FnMut(&[u8]),
    ) -> Result<(), Error> {
        if bytes.is_empty() {
            return Ok(());
        }
        let result = if self.pending.is_empty() {
            // The common case: whole records, processed where they were
            // read; only a trailing partial record is kept.
            self.run(bytes, out, Some(plain), None).map(|used| {
                self.pending
                    .extend_from_slice(bytes.get(used..).unwrap_or_default());
            })
        } else {
            self.pending.extend_from_slice(bytes);
            let mut input = mem::take(&mut self.pending);
            let result = self.run(&mut input, out, Some(plain), None);
            if let Ok(used) = result {
                input.drain(..used.min(input.len()));
                // Dropped when empty: an idle session holds no buffer.
                if !input.is_empty() {
                    self.pending = input;
                }
            }
            result.map(drop)
        };
        if let Err(e) = result {
            self.pending = Vec::new();
            return Err(e);
        }
        if self.pending.len() > self.pending_max {
            self.pending = Vec::new();
            return Err(Error::InvalidMessage(InvalidMessage::MessageTooLarge));
        }
        Ok(())
    }

    /// Encrypts `data` as application records appended to `out`. Fails
    /// before the handshake has got far enough to send data (nothing is
    /// appended then) or when the keys are exhausted.
    pub(crate) fn send(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        self.run_pending(out, Outgoing::Data(data))
    }

    /// Appends a close_notify alert to `out`.
    pub(crate) fn close_notify(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        self.run_pending(out, Outgoing::CloseNotify)
    }

    /// Drives rustls to the point where it may protect data, over the
    /// pending bytes (never over an empty stand-in: rustls may be joining a
    /// handshake message there).
    fn run_pending(&mut self, out: &mut Vec<u8>, outgoing: Outgoing<'_>) -> Result<(), Error> {
        let mut input = mem::take(&mut self.pending);
        let result = self.run(&mut input, out, None, Some(outgoing));
        if let Ok(used) = result {
            input.drain(..used.min(input.len()));
        }
        if !input.is_empty() {
            self.pending = input;
        }
        result.map(drop)
    }

    /// Runs rustls's state machine over `input` until it needs more bytes
    /// (having done `outgoing`, if given). Returns how many bytes of `input`
    /// it consumed. On an error, the alert rustls queued is appended to
    /// `out`.
    fn run(
        &mut self,
        input: &mut [u8],
        out: &mut Vec<u8>,
        plain: Option<PlainSink<'_>>,
        outgoing: Option<Outgoing<'_>>,
    ) -> Result<usize, Error> {
        if self.failed {
            return Err(Error::General("TLS session failed earlier".into()));
        }
        let mut used = 0;
        let result = self.run_from(input, &mut used, out, plain, outgoing);
        if result.is_err() {
            self.failed = true;
            self.flush_alert(input.get_mut(used..).unwrap_or_default(), out);
        }
        result.map(|()| used)
    }

    fn run_from(
        &mut self,
        input: &mut [u8],
        used: &mut usize,
        out: &mut Vec<u8>,
        mut plain: Option<PlainSink<'_>>,
        mut outgoing: Option<Outgoing<'_>>,
    ) -> Result<(), Error> {
        loop {
            let rest = input.get_mut(*used..).unwrap_or_default();
            let status = self.conn.process_tls_records(rest);
            let discard = status.discard;
            let state = match status.state {
                Ok(state) => state,
                Err(e) => {
                    *used += discard;
                    return Err(e);
                }
            };
            let settled = match state {
                ConnectionState::ReadTraffic(mut records) => {
                    while let Some(record) = records.next_record() {
                        let record = record?;
                        match plain.as_mut() {
                            Some(plain) => plain(record.payload),
                            // `receive` processes every complete record, so
                            // none can be waiting when sending; never drop
                            // plaintext silently.
                            None => return Err(Error::General("unexpected TLS record".into())),
                        }
                    }
                    false
                }
                ConnectionState::EncodeTlsData(mut data) => {
                    append(out, 0, |buf| encode_result(data.encode(buf)))?;
                    false
                }
                // Encoded bytes are in `out`, which the caller writes before
                // anything appended later.
                ConnectionState::TransmitTlsData(transmit) => {
                    transmit.done();
                    false
                }
                ConnectionState::PeerClosed => {
                    self.peer_closed = true;
                    false
                }
                ConnectionState::WriteTraffic(mut traffic) => match outgoing.take() {
                    Some(Outgoing::Data(data)) => {
                        let records = data.len().div_ceil(RECORD_PAYLOAD_BYTES_MAX);
                        let guess = data.len() + records * RECORD_OVERHEAD_BYTES + 64;
                        append(out, guess, |buf| encrypt_result(traffic.encrypt(data, buf)))?;
                        false
                    }
                    Some(Outgoing::CloseNotify) => {
                        append(out, 64, |buf| {
                            encrypt_result(traffic.queue_close_notify(buf))
                        })?;
                        false
                    }
                    None => true,
                },
                ConnectionState::BlockedHandshake | ConnectionState::Closed => true,
                // 0-RTT is off (`max_early_data_size` is 0), so rustls
                // never offers early data; refuse anything new.
                _ => return Err(Error::General("unexpected TLS state".into())),
            };
            *used += discard;
            if settled {
                break;
            }
        }
        if outgoing.is_some() {
            return Err(Error::HandshakeNotComplete);
        }
        Ok(())
    }

    /// After an error rustls queues the alert for the peer; move it out.
    ///
    /// Only while rustls has TLS bytes queued: it hands those out before
    /// looking at the input again, whereas a turn with nothing queued would
    /// deframe the offending record a second time. `rest` is the
    /// unconsumed input all the same, never a stand-in: rustls may hold
    /// positions in it (a handshake message being joined) and panics when
    /// they are out of range.
    fn flush_alert(&mut self, rest: &mut [u8], out: &mut Vec<u8>) {
        // Queued records are few (the alert, rarely part of a flight).
        for _ in 0..8 {
            if !self.conn.wants_write() {
                return;
            }
            let status = self.conn.process_tls_records(rest);
            let Ok(ConnectionState::EncodeTlsData(mut data)) = status.state else {
                return;
            };
            if append(out, 0, |buf| encode_result(data.encode(buf))).is_err() {
                return;
            }
        }
    }
}

fn encode_result(r: Result<usize, EncodeError>) -> Result<usize, Option<usize>> {
    match r {
        Ok(n) => Ok(n),
        Err(EncodeError::InsufficientSize(e)) => Err(Some(e.required_size)),
        Err(_) => Err(None),
    }
}

fn encrypt_result(r: Result<usize, EncryptError>) -> Result<usize, Option<usize>> {
    match r {
        Ok(n) => Ok(n),
        Err(EncryptError::InsufficientSize(e)) => Err(Some(e.required_size)),
        Err(_) => Err(None),
    }
}

/// Appends what `write` puts into a buffer to `out`: first into `guess`
/// bytes, and if that is too small (`Err(Some(required))`), once more into
/// exactly the size rustls asked for. `Err(None)` is a failure.
fn append(
    out: &mut Vec<u8>,
    guess: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> Result<(), Error> {
    let start = out.len();
    out.resize(start + guess, 0);
    let mut result = write(out.get_mut(start..).unwrap_or_default());
    if let Err(Some(required)) = result {
        out.resize(start + required, 0);
        result = write(out.get_mut(start..).unwrap_or_default());
    }
    match result {
        Ok(n) => {
            out.truncate(start + n);
            Ok(())
        }
        Err(_) => {
            out.truncate(start);
            Err(Error::EncryptError)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{
        client_config_trusting, generate_self_signed, server_config, sha256_fingerprint,
        TlsIdentity,
    };
    use rustls::ClientConnection;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use std::io::{Read, Write};

    fn configs() -> (Arc<ServerConfig>, Arc<rustls::ClientConfig>) {
        let pair = generate_self_signed(&[]).unwrap();
        let cert = CertificateDer::from_pem_slice(pair.cert_pem.as_bytes()).unwrap();
        let identity = TlsIdentity {
            fingerprint_sha256: sha256_fingerprint(&cert),
            cert_chain: vec![cert.clone()],
            key: PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).unwrap(),
            cert_path: "mem-cert".into(),
            key_path: "mem-key".into(),
            generated: true,
        };
        (
            server_config(&identity).unwrap(),
            client_config_trusting(&[cert]).unwrap(),
        )
    }

    /// A client and a server session joined in memory.
    struct Pair {
        client: ClientConnection,
        server: TlsSession,
        /// Plaintext the server received.
        got: Vec<u8>,
        /// How many bytes the server gets per `receive` (to split records).
        chunk: usize,
    }

    impl Pair {
        fn new() -> Self {
            let (s, c) = configs();
            let name = ServerName::try_from("localhost").unwrap();
            Self {
                client: ClientConnection::new(c, name).unwrap(),
                server: TlsSession::new(s).unwrap(),
                got: Vec::new(),
                chunk: usize::MAX,
            }
        }

        /// Client → server; returns what the server wants to send back.
        fn client_sends(&mut self) -> Result<Vec<u8>, (Error, Vec<u8>)> {
            let mut wire = Vec::new();
            while self.client.wants_write() {
                self.client.write_tls(&mut wire).unwrap();
            }
            self.server_receives(wire)
        }

        fn server_receives(&mut self, wire: Vec<u8>) -> Result<Vec<u8>, (Error, Vec<u8>)> {
            let mut out = Vec::new();
            for piece in wire.chunks(self.chunk.min(wire.len().max(1))) {
                let mut piece = piece.to_vec();
                let got = &mut self.got;
                if let Err(e) = self
                    .server
                    .receive(&mut piece, &mut out, &mut |p| got.extend_from_slice(p))
                {
                    return Err((e, out));
                }
            }
            Ok(out)
        }

        /// Server output → client; returns the client's new plaintext.
        fn client_receives(&mut self, mut wire: &[u8]) -> Vec<u8> {
            let mut plain = Vec::new();
            while !wire.is_empty() {
                self.client.read_tls(&mut wire).unwrap();
                self.client.process_new_packets().unwrap();
                let _ = self.client.reader().read_to_end(&mut plain);
            }
            plain
        }

        fn handshake(&mut self) {
            for _ in 0..4 {
                let back = self.client_sends().unwrap();
                self.client_receives(&back);
                if !self.client.is_handshaking() && !self.server.is_handshaking() {
                    return;
                }
            }
            panic!("handshake did not finish");
        }
    }

    #[test]
    fn handshake_and_data_both_ways_hold_no_buffer_when_idle() {
        let mut p = Pair::new();
        p.handshake();
        assert_eq!(p.server.conn.alpn_protocol(), Some(&b"tern/1"[..]));
        p.client.writer().write_all(b"hello server").unwrap();
        let back = p.client_sends().unwrap();
        assert!(back.is_empty());
        assert_eq!(p.got, b"hello server");
        let mut out = Vec::new();
        p.server.send(b"hello client", &mut out).unwrap();
        assert_eq!(p.client_receives(&out), b"hello client");
        assert_eq!(p.server.buffer_capacity(), 0, "idle: no buffer");
    }

    #[test]
    fn records_split_byte_by_byte_are_reassembled_then_released() {
        let mut p = Pair::new();
        p.chunk = 1;
        p.handshake();
        let msg: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        p.client.writer().write_all(&msg).unwrap();
        p.chunk = 7;
        p.client_sends().unwrap();
        assert_eq!(p.got, msg);
        assert_eq!(p.server.pending_bytes(), 0);
        assert_eq!(p.server.buffer_capacity(), 0);
    }

    #[test]
    fn large_send_is_split_into_records() {
        let mut p = Pair::new();
        p.handshake();
        let msg: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let mut out = Vec::new();
        p.server.send(&msg, &mut out).unwrap();
        assert!(out.len() >= msg.len() + 7 * RECORD_OVERHEAD_BYTES);
        assert_eq!(p.client_receives(&out), msg);
    }

    #[test]
    fn key_update_from_the_client_is_followed() {
        let mut p = Pair::new();
        p.handshake();
        p.client.refresh_traffic_keys().unwrap();
        p.client.writer().write_all(b"after update").unwrap();
        let back = p.client_sends().unwrap();
        assert_eq!(p.got, b"after update");
        p.client_receives(&back);
        // The server answers the requested update before its next data.
        let mut out = Vec::new();
        p.server.send(b"reply", &mut out).unwrap();
        assert_eq!(p.client_receives(&out), b"reply");
        p.client.writer().write_all(b"again").unwrap();
        p.client_sends().unwrap();
        assert_eq!(p.got, b"after updateagain");
    }

    #[test]
    fn close_notify_both_ways() {
        let mut p = Pair::new();
        p.handshake();
        p.client.send_close_notify();
        p.client_sends().unwrap();
        assert!(p.server.peer_closed());
        let mut out = Vec::new();
        p.server.close_notify(&mut out).unwrap();
        assert!(!out.is_empty());
        p.client_receives(&out);
        assert!(p.client.reader().read(&mut [0u8; 8]).is_ok_and(|n| n == 0));
    }

    #[test]
    fn sending_before_the_handshake_fails_without_output() {
        let mut p = Pair::new();
        let mut out = Vec::new();
        let err = p.server.send(b"too early", &mut out).unwrap_err();
        assert!(matches!(err, Error::HandshakeNotComplete), "{err:?}");
        assert!(out.is_empty());
    }

    #[test]
    fn garbage_gets_an_alert_and_an_error() {
        let mut p = Pair::new();
        p.handshake();
        // An application-data record whose AEAD tag cannot verify.
        let mut record = vec![0x17, 0x03, 0x03, 0x00, 0x20];
        record.extend_from_slice(&[0xAA; 0x20]);
        let (err, out) = p.server_receives(record).unwrap_err();
        assert!(matches!(err, Error::DecryptError), "{err:?}");
        let mut wire = out.as_slice();
        p.client.read_tls(&mut wire).unwrap();
        let alert = p.client.process_new_packets().unwrap_err();
        assert!(
            matches!(
                alert,
                Error::AlertReceived(rustls::AlertDescription::BadRecordMac)
            ),
            "{alert:?}"
        );
        assert_eq!(p.server.buffer_capacity(), 0);
        // A failed session refuses further work instead of reprocessing.
        assert!(p.server.send(b"late", &mut Vec::new()).is_err());
        let mut more = vec![0x17, 0x03, 0x03, 0x00, 0x01, 0x00];
        assert!(p
            .server
            .receive(&mut more, &mut Vec::new(), &mut |_| {})
            .is_err());
    }

    #[test]
    fn oversized_record_header_is_refused_at_once() {
        let mut p = Pair::new();
        p.handshake();
        // Claims 0xFFFF bytes: beyond any TLS 1.3 record, refused on the
        // header, long before the pending bound.
        let (err, _) = p
            .server_receives(vec![0x17, 0x03, 0x03, 0xFF, 0xFF, 0])
            .unwrap_err();
        assert!(matches!(err, Error::InvalidMessage(_)), "{err:?}");
    }

    #[test]
    fn unfinished_handshake_message_stays_under_the_bound() {
        let mut p = Pair::new();
        let mut out = Vec::new();
        // A ClientHello announced at 0xFFFF bytes, rustls's largest, sent
        // record by record and never valid: rustls holds it, then refuses
        // it; what it leaves pending never passes the bound.
        let record = |first: bool| {
            let mut r = vec![0x16, 0x03, 0x01, 0x40, 0x00];
            if first {
                r.extend_from_slice(&[0x01, 0x00, 0xFF, 0xFF]);
            }
            r.resize(5 + 0x4000, 0);
            r
        };
        let mut first = true;
        let err = loop {
            let mut bytes = record(first);
            first = false;
            if let Err(e) = p.server.receive(&mut bytes, &mut out, &mut |_| {}) {
                break e;
            }
            assert!(p.server.pending_bytes() <= TLS_PENDING_BYTES_MAX);
        };
        assert!(
            !matches!(err, Error::InvalidMessage(InvalidMessage::MessageTooLarge)),
            "{err:?}"
        );
        assert_eq!(p.server.buffer_capacity(), 0);
    }

    #[test]
    fn pending_input_at_the_bound() {
        let mut p = Pair::new();
        p.handshake();
        let record = |p: &mut Pair, byte: u8| {
            p.client.writer().write_all(&[byte; 300]).unwrap();
            let mut wire = Vec::new();
            while p.client.wants_write() {
                p.client.write_tls(&mut wire).unwrap();
            }
            wire
        };
        let wire = record(&mut p, 5);
        let partial = wire.len() - 1;
        p.server.pending_max = partial;
        p.server_receives(wire[..partial].to_vec()).unwrap();
        assert_eq!(p.server.pending_bytes(), partial, "at the bound: kept");
        p.server_receives(wire[partial..].to_vec()).unwrap();
        assert_eq!(p.got, [5; 300]);
        assert_eq!(p.server.buffer_capacity(), 0);

        p.server.pending_max = partial - 1;
        let wire = record(&mut p, 6);
        let (err, _) = p.server_receives(wire[..partial].to_vec()).unwrap_err();
        assert!(
            matches!(err, Error::InvalidMessage(InvalidMessage::MessageTooLarge)),
            "{err:?}"
        );
        assert_eq!(p.server.buffer_capacity(), 0);
    }
}
