//! The ceiling's wire rules, sans-IO: u32 little-endian length-prefixed
//! frames (Tern's own framing), a 20-byte hello that names the pair, and
//! an incremental checker of frame boundaries that never looks inside a
//! payload.
//!
//! ```text
//! client → server, first frame:  len=20 | "TCH1" | own id u64 LE | peer id u64 LE
//! server → client, first frame:  len=20 | "TCP1" | own id u64 LE | peer id u64 LE   (paired)
//!                            or  len=N  | "TCE1" | reason, UTF-8 (refused, then close)
//! then, both ways: any frames, forwarded verbatim to the peer
//! ```
//!
//! tern-loadgen speaks this too (`loadgen/src/raw.rs`); its smoke test runs
//! against this crate, so the two cannot drift apart unnoticed.

/// Bytes of the length prefix in front of every frame.
pub const LEN_PREFIX_BYTES: usize = 4;
/// Payload bytes of a hello and of a paired answer.
pub const HELLO_PAYLOAD_BYTES: usize = 20;
/// The length prefix of a hello or paired frame: 20, little-endian.
const HELLO_PREFIX: [u8; LEN_PREFIX_BYTES] = [20, 0, 0, 0];
/// A whole hello frame, prefix included.
pub const HELLO_FRAME_BYTES: usize = LEN_PREFIX_BYTES + HELLO_PAYLOAD_BYTES;
/// Marks a client's hello.
pub const HELLO_MAGIC: [u8; 4] = *b"TCH1";
/// Marks the server's "paired" answer.
pub const PAIRED_MAGIC: [u8; 4] = *b"TCP1";
/// Marks the server's refusal (a reason follows; the connection closes).
pub const REFUSED_MAGIC: [u8; 4] = *b"TCE1";
/// Longest reason text in a refusal, so a refusal is one small frame.
pub const REFUSED_REASON_BYTES_MAX: usize = 200;

/// What a hello says: who this connection is and whom it wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Hello {
    /// This connection's id.
    pub own: u64,
    /// The id of the connection it is to be paired with.
    pub peer: u64,
}

fn ids_frame(magic: [u8; 4], h: Hello) -> [u8; HELLO_FRAME_BYTES] {
    let mut f = [0u8; HELLO_FRAME_BYTES];
    let parts: [&[u8]; 4] = [
        &HELLO_PREFIX,
        &magic,
        &h.own.to_le_bytes(),
        &h.peer.to_le_bytes(),
    ];
    let mut at = 0;
    for p in parts {
        if let Some(dst) = f.get_mut(at..at + p.len()) {
            dst.copy_from_slice(p);
        }
        at += p.len();
    }
    f
}

/// A client's hello frame.
pub fn encode_hello(h: Hello) -> [u8; HELLO_FRAME_BYTES] {
    ids_frame(HELLO_MAGIC, h)
}

/// The server's "paired" frame for the connection that sent `h`.
pub fn encode_paired(h: Hello) -> [u8; HELLO_FRAME_BYTES] {
    ids_frame(PAIRED_MAGIC, h)
}

/// The server's refusal frame: magic, then `reason` cut to
/// [`REFUSED_REASON_BYTES_MAX`] bytes (at a character boundary).
pub fn encode_refused(reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(REFUSED_REASON_BYTES_MAX);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let text = reason.get(..end).unwrap_or_default().as_bytes();
    let payload_len = REFUSED_MAGIC.len() + text.len();
    let mut f = Vec::with_capacity(LEN_PREFIX_BYTES + payload_len);
    // At most 4 + 200 bytes: fits in u32.
    f.extend_from_slice(&u32::try_from(payload_len).unwrap_or(u32::MAX).to_le_bytes());
    f.extend_from_slice(&REFUSED_MAGIC);
    f.extend_from_slice(text);
    f
}

fn parse_ids(magic: [u8; 4], payload: &[u8]) -> Option<Hello> {
    if payload.len() != HELLO_PAYLOAD_BYTES || payload.get(..4)? != magic {
        return None;
    }
    let own = u64::from_le_bytes(payload.get(4..12)?.try_into().ok()?);
    let peer = u64::from_le_bytes(payload.get(12..20)?.try_into().ok()?);
    Some(Hello { own, peer })
}

/// Parses a hello payload (prefix removed); `None` if it is not one.
pub fn decode_hello(payload: &[u8]) -> Option<Hello> {
    parse_ids(HELLO_MAGIC, payload)
}

/// Parses a "paired" payload (prefix removed); `None` if it is not one.
pub fn decode_paired(payload: &[u8]) -> Option<Hello> {
    parse_ids(PAIRED_MAGIC, payload)
}

/// The reason in a refusal payload (prefix removed), if it is one.
pub fn decode_refused(payload: &[u8]) -> Option<String> {
    let text = payload.strip_prefix(&REFUSED_MAGIC)?;
    Some(String::from_utf8_lossy(text).into_owned())
}

/// A frame announced a payload above the bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLarge {
    /// The announced payload length.
    pub len: u32,
}

/// Follows frame boundaries in a byte stream, checking each announced
/// length against the bound; payload bytes are skipped, never read.
#[derive(Clone, Debug)]
pub struct Framer {
    frame_bytes_max: u32,
    header: [u8; LEN_PREFIX_BYTES],
    header_len: usize,
    payload_left: u32,
    frames: u64,
}

impl Framer {
    /// A framer at a frame boundary.
    pub fn new(frame_bytes_max: u32) -> Self {
        Self {
            frame_bytes_max,
            header: [0; LEN_PREFIX_BYTES],
            header_len: 0,
            payload_left: 0,
            frames: 0,
        }
    }

    /// Frames whose length prefix has been seen.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// True at a frame boundary (no partial prefix or payload pending).
    pub fn at_boundary(&self) -> bool {
        self.header_len == 0 && self.payload_left == 0
    }

    /// Walks `bytes`, the next piece of the stream.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), TooLarge> {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let skip = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                bytes = bytes.get(skip..).unwrap_or_default();
                // skip <= payload_left, which is a u32.
                self.payload_left -= u32::try_from(skip).unwrap_or(self.payload_left);
                continue;
            }
            let want = LEN_PREFIX_BYTES - self.header_len;
            let take = want.min(bytes.len());
            if let (Some(dst), Some(src)) = (
                self.header.get_mut(self.header_len..self.header_len + take),
                bytes.get(..take),
            ) {
                dst.copy_from_slice(src);
            }
            self.header_len += take;
            bytes = bytes.get(take..).unwrap_or_default();
            if self.header_len == LEN_PREFIX_BYTES {
                let len = u32::from_le_bytes(self.header);
                if len > self.frame_bytes_max {
                    return Err(TooLarge { len });
                }
                self.header_len = 0;
                self.payload_left = len;
                self.frames += 1;
            }
        }
        Ok(())
    }
}

/// Why a hello was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HelloError {
    /// The first frame's length is not [`HELLO_PAYLOAD_BYTES`].
    BadLength(u32),
    /// Right length, wrong magic.
    BadMagic,
}

/// Collects the first frame of a connection; whatever follows it in the
/// same reads is kept as `early` bytes for the peer.
#[derive(Clone, Debug, Default)]
pub struct HelloBuf {
    buf: [u8; HELLO_FRAME_BYTES],
    len: usize,
    /// Bytes after the hello (forwarded once the pair is made).
    pub early: Vec<u8>,
}

impl HelloBuf {
    /// Takes the next piece of the stream.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), HelloError> {
        let take = (HELLO_FRAME_BYTES - self.len).min(bytes.len());
        if let (Some(dst), Some(src)) = (
            self.buf.get_mut(self.len..self.len + take),
            bytes.get(..take),
        ) {
            dst.copy_from_slice(src);
        }
        self.len += take;
        if self.len >= LEN_PREFIX_BYTES {
            let mut prefix = [0u8; LEN_PREFIX_BYTES];
            prefix.copy_from_slice(self.buf.get(..LEN_PREFIX_BYTES).unwrap_or(&[0; 4]));
            let len = u32::from_le_bytes(prefix);
            // Refuse at once rather than wait for a payload we will refuse.
            if usize::try_from(len).ok() != Some(HELLO_PAYLOAD_BYTES) {
                return Err(HelloError::BadLength(len));
            }
        }
        self.early
            .extend_from_slice(bytes.get(take..).unwrap_or_default());
        Ok(())
    }

    /// The hello once it is complete: `None` while bytes are missing.
    pub fn hello(&self) -> Option<Result<Hello, HelloError>> {
        if self.len < HELLO_FRAME_BYTES {
            return None;
        }
        let payload = self.buf.get(LEN_PREFIX_BYTES..)?;
        Some(decode_hello(payload).ok_or(HelloError::BadMagic))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn hello_and_paired_round_trip() {
        assert_eq!(
            u32::from_le_bytes(HELLO_PREFIX) as usize,
            HELLO_PAYLOAD_BYTES
        );
        let h = Hello {
            own: 7,
            peer: u64::MAX,
        };
        let f = encode_hello(h);
        assert_eq!(&f[..4], &20u32.to_le_bytes());
        assert_eq!(decode_hello(&f[4..]), Some(h));
        assert_eq!(decode_paired(&f[4..]), None, "magic differs");
        let p = encode_paired(h);
        assert_eq!(decode_paired(&p[4..]), Some(h));
        assert_eq!(decode_hello(&f[4..19]), None, "short");
    }

    #[test]
    fn refusal_is_short_and_cut_at_a_char_boundary() {
        let f = encode_refused("nope");
        assert_eq!(&f[..4], &8u32.to_le_bytes());
        assert_eq!(decode_refused(&f[4..]).as_deref(), Some("nope"));
        let long = "é".repeat(300);
        let f = encode_refused(&long);
        let text = decode_refused(&f[4..]).unwrap();
        assert!(text.len() <= REFUSED_REASON_BYTES_MAX);
        assert!(text.chars().all(|c| c == 'é'));
        assert_eq!(decode_refused(b"TCP1xx"), None);
    }

    #[test]
    fn framer_follows_boundaries_across_any_split() {
        let mut stream = Vec::new();
        for len in [0u32, 1, 5, 300, 0, 64] {
            stream.extend_from_slice(&len.to_le_bytes());
            stream.extend(std::iter::repeat_n(0xAB, len as usize));
        }
        for piece in [1, 2, 3, 7, 64, stream.len()] {
            let mut f = Framer::new(300);
            for chunk in stream.chunks(piece) {
                f.feed(chunk).unwrap();
            }
            assert_eq!(f.frames(), 6, "piece {piece}");
            assert!(f.at_boundary());
        }
        let mut f = Framer::new(300);
        f.feed(&stream[..6]).unwrap();
        assert!(!f.at_boundary());
    }

    #[test]
    fn framer_refuses_an_oversized_prefix_before_its_payload() {
        let mut f = Framer::new(1_000);
        f.feed(&3u32.to_le_bytes()).unwrap();
        f.feed(b"abc").unwrap();
        f.feed(&[0xE9, 0x03]).unwrap(); // half of 1001
        assert_eq!(f.feed(&[0, 0]), Err(TooLarge { len: 1_001 }));
        let mut f = Framer::new(1_000);
        assert_eq!(
            f.feed(&u32::MAX.to_le_bytes()),
            Err(TooLarge { len: u32::MAX })
        );
    }

    #[test]
    fn hello_buf_splits_hello_from_early_bytes() {
        let h = Hello { own: 1, peer: 2 };
        let mut bytes = encode_hello(h).to_vec();
        bytes.extend_from_slice(b"\x01\0\0\0z");
        let mut hb = HelloBuf::default();
        hb.feed(&bytes[..3]).unwrap();
        assert!(hb.hello().is_none());
        hb.feed(&bytes[3..]).unwrap();
        assert_eq!(hb.hello(), Some(Ok(h)));
        assert_eq!(hb.early, b"\x01\0\0\0z");
    }

    #[test]
    fn hello_buf_refuses_bad_length_early_and_bad_magic() {
        let mut hb = HelloBuf::default();
        assert_eq!(
            hb.feed(&(1u32 << 30).to_le_bytes()),
            Err(HelloError::BadLength(1 << 30))
        );
        let mut hb = HelloBuf::default();
        let mut f = encode_hello(Hello { own: 1, peer: 2 });
        f[4] = b'X';
        hb.feed(&f).unwrap();
        assert_eq!(hb.hello(), Some(Err(HelloError::BadMagic)));
    }
}
