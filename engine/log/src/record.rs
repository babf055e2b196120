//! On-disk record framing.
//!
//! ```text
//! offset 0: length   u32 LE   payload bytes, at most RECORD_PAYLOAD_MAX
//! offset 4: kind     u8       1..=255 (0 is reserved: zeroes mark preallocated space)
//! offset 5: crc      u32 LE   CRC32C (Castagnoli) over length ‖ kind ‖ payload
//! offset 9: payload  [u8; length]
//! ```
//!
//! A record never straddles two segments. The checksum covers the length too,
//! so a flipped length bit is caught once the (wrong) frame is read whole;
//! a length above `RECORD_PAYLOAD_MAX` is caught from the first four bytes.

use crate::error::{CorruptReason, InvalidRecord};

/// Bytes of the header in front of every payload.
pub const RECORD_HEADER_BYTES: usize = 9;
/// Largest payload a record may carry (1 MiB).
pub const RECORD_PAYLOAD_MAX: usize = 1 << 20;
/// Largest record on disk, header included.
pub const RECORD_FRAME_BYTES_MAX: usize = RECORD_HEADER_BYTES + RECORD_PAYLOAD_MAX;
/// The kind no record may have: a zero header is preallocated space.
pub const KIND_RESERVED: u8 = 0;

const LENGTH_BYTES: usize = 4;
const KIND_OFFSET: usize = 4;
const CRC_OFFSET: usize = 5;

/// A record as the engine sees it; the kinds are the engine's business.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub kind: u8,
    pub payload: &'a [u8],
}

/// What `decode` found at the start of a byte slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole, checksummed record occupying the first `len` bytes.
    Complete { record: Record<'a>, len: usize },
    /// The slice ends before the record does (a torn tail, or not read yet).
    Incomplete,
    /// The bytes cannot be a record.
    Corrupt { reason: CorruptReason },
}

/// Bytes a record with this payload takes on disk.
pub const fn frame_bytes(payload_bytes: usize) -> usize {
    RECORD_HEADER_BYTES + payload_bytes
}

/// Checks `kind` and `payload` against the format's rules.
pub fn validate(kind: u8, payload_bytes: usize) -> Result<(), InvalidRecord> {
    if kind == KIND_RESERVED {
        return Err(InvalidRecord::KindReserved);
    }
    if payload_bytes > RECORD_PAYLOAD_MAX {
        return Err(InvalidRecord::PayloadTooLarge {
            payload_bytes,
            payload_bytes_max: RECORD_PAYLOAD_MAX,
        });
    }
    Ok(())
}

/// Appends one framed record to `out` and returns the bytes added.
pub fn encode(kind: u8, payload: &[u8], out: &mut Vec<u8>) -> Result<usize, InvalidRecord> {
    validate(kind, payload.len())?;
    // validate() bounds the payload to RECORD_PAYLOAD_MAX, far below u32::MAX.
    let length = u32::try_from(payload.len()).map_err(|_| InvalidRecord::PayloadTooLarge {
        payload_bytes: payload.len(),
        payload_bytes_max: RECORD_PAYLOAD_MAX,
    })?;
    let length_bytes = length.to_le_bytes();
    let crc = checksum(length_bytes, kind, payload);
    let start = out.len();
    out.reserve(frame_bytes(payload.len()));
    out.extend_from_slice(&length_bytes);
    out.push(kind);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
    debug_assert_eq!(out.len() - start, frame_bytes(payload.len()));
    Ok(out.len() - start)
}

/// Decodes the record at the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Decoded<'_> {
    let Some(length_bytes) = read_array::<LENGTH_BYTES>(bytes, 0) else {
        return Decoded::Incomplete;
    };
    let length = u32::from_le_bytes(length_bytes);
    let payload_bytes = length as usize; // u32 fits usize on every target we build for.
    if payload_bytes > RECORD_PAYLOAD_MAX {
        return Decoded::Corrupt {
            reason: CorruptReason::LengthTooLarge {
                payload_bytes: length,
            },
        };
    }
    let Some(&kind) = bytes.get(KIND_OFFSET) else {
        return Decoded::Incomplete;
    };
    if kind == KIND_RESERVED {
        return Decoded::Corrupt {
            reason: CorruptReason::KindReserved,
        };
    }
    let Some(crc_bytes) = read_array::<4>(bytes, CRC_OFFSET) else {
        return Decoded::Incomplete;
    };
    let len = frame_bytes(payload_bytes);
    let Some(payload) = bytes.get(RECORD_HEADER_BYTES..len) else {
        return Decoded::Incomplete;
    };
    let stored = u32::from_le_bytes(crc_bytes);
    let computed = checksum(length_bytes, kind, payload);
    if stored != computed {
        return Decoded::Corrupt {
            reason: CorruptReason::ChecksumMismatch { stored, computed },
        };
    }
    Decoded::Complete {
        record: Record { kind, payload },
        len,
    }
}

/// The whole frame size announced by a header, if the length field is there
/// and plausible (at most `RECORD_PAYLOAD_MAX`).
pub fn announced_frame_bytes(bytes: &[u8]) -> Option<usize> {
    let length = u32::from_le_bytes(read_array::<LENGTH_BYTES>(bytes, 0)?) as usize;
    (length <= RECORD_PAYLOAD_MAX).then_some(frame_bytes(length))
}

fn checksum(length_bytes: [u8; 4], kind: u8, payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&length_bytes);
    let crc = crc32c::crc32c_append(crc, &[kind]);
    crc32c::crc32c_append(crc, payload)
}

fn read_array<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // Test data: small lengths and byte patterns.
mod tests {
    use super::*;

    fn encoded(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let len = encode(kind, payload, &mut out).unwrap();
        assert_eq!(len, out.len());
        out
    }

    #[test]
    fn round_trip_various_sizes() {
        for size in [0usize, 1, 8, 200, 4096, 65_537] {
            let payload: Vec<u8> = (0..size).map(|i| (i * 7 + 3) as u8).collect();
            let bytes = encoded(42, &payload);
            assert_eq!(bytes.len(), RECORD_HEADER_BYTES + size);
            match decode(&bytes) {
                Decoded::Complete { record, len } => {
                    assert_eq!(len, bytes.len());
                    assert_eq!(record.kind, 42);
                    assert_eq!(record.payload, &payload[..]);
                }
                other => panic!("size {size}: {other:?}"),
            }
        }
    }

    #[test]
    fn round_trip_max_payload_and_refuses_one_more() {
        let payload = vec![0xA5; RECORD_PAYLOAD_MAX];
        let bytes = encoded(255, &payload);
        assert!(
            matches!(decode(&bytes), Decoded::Complete { len, .. } if len == RECORD_FRAME_BYTES_MAX)
        );
        let too_big = vec![0; RECORD_PAYLOAD_MAX + 1];
        let mut out = vec![1, 2, 3];
        assert_eq!(
            encode(1, &too_big, &mut out),
            Err(InvalidRecord::PayloadTooLarge {
                payload_bytes: RECORD_PAYLOAD_MAX + 1,
                payload_bytes_max: RECORD_PAYLOAD_MAX
            })
        );
        assert_eq!(
            out,
            vec![1, 2, 3],
            "a refused record leaves the buffer alone"
        );
    }

    #[test]
    fn kind_zero_refused() {
        let mut out = Vec::new();
        assert_eq!(encode(0, b"x", &mut out), Err(InvalidRecord::KindReserved));
        assert!(out.is_empty());
    }

    #[test]
    fn decodes_first_of_several_records() {
        let mut bytes = encoded(1, b"first");
        encode(2, b"second", &mut bytes).unwrap();
        let Decoded::Complete { record, len } = decode(&bytes) else {
            panic!("first record");
        };
        assert_eq!((record.kind, record.payload), (1, &b"first"[..]));
        let Decoded::Complete { record, .. } = decode(&bytes[len..]) else {
            panic!("second record");
        };
        assert_eq!((record.kind, record.payload), (2, &b"second"[..]));
    }

    #[test]
    fn every_truncation_is_incomplete() {
        let bytes = encoded(7, b"hello, durable world");
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), Decoded::Incomplete, "cut at {cut}");
        }
        assert!(matches!(decode(&bytes), Decoded::Complete { .. }));
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let bytes = encoded(7, b"0123456789abcdef");
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            match decode(&damaged) {
                Decoded::Corrupt { .. } | Decoded::Incomplete => {}
                Decoded::Complete { record, len } => {
                    panic!("bit {bit} undetected: {record:?} {len}")
                }
            }
        }
    }

    #[test]
    fn length_bit_flips_detected_even_with_trailing_data() {
        // With more bytes after the record (the next record), a flipped length
        // bit must still not decode as a valid record.
        let mut bytes = encoded(7, b"0123456789abcdef");
        let first = bytes.len();
        for i in 0..10u8 {
            encode(9, &[i; 100], &mut bytes).unwrap();
        }
        for bit in 0..32 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(decode(&damaged), Decoded::Complete { .. }),
                "length bit {bit} undetected (record was {first} bytes)"
            );
        }
    }

    #[test]
    fn oversized_length_is_corrupt_from_four_bytes() {
        let length = (RECORD_PAYLOAD_MAX as u32 + 1).to_le_bytes();
        assert_eq!(
            decode(&length),
            Decoded::Corrupt {
                reason: CorruptReason::LengthTooLarge {
                    payload_bytes: RECORD_PAYLOAD_MAX as u32 + 1
                }
            }
        );
        assert_eq!(announced_frame_bytes(&length), None);
        assert_eq!(announced_frame_bytes(&5u32.to_le_bytes()), Some(14));
        assert_eq!(announced_frame_bytes(&[1, 2]), None);
    }

    #[test]
    fn zero_header_is_reserved_kind() {
        assert_eq!(
            decode(&[0u8; 32]),
            Decoded::Corrupt {
                reason: CorruptReason::KindReserved
            }
        );
    }

    #[test]
    fn checksum_is_castagnoli() {
        // CRC32C("123456789") = 0xE3069283, the standard check value; the
        // IEEE polynomial (crc32fast) would give 0xCBF43926.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        let bytes = encoded(1, b"");
        let stored = u32::from_le_bytes(bytes[5..9].try_into().unwrap());
        let mut input = 0u32.to_le_bytes().to_vec();
        input.push(1);
        assert_eq!(stored, crc32c::crc32c(&input));
    }
}
