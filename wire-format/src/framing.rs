//! Length-prefix framing: `u32` little-endian payload length, then payload.

use crate::error::Error;

/// Bytes taken by the length prefix.
pub const LEN_PREFIX_BYTES: usize = 4;

/// Outcome of [`check`] on a buffer that starts at a frame boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// A whole frame is in the buffer: payload at
    /// `LEN_PREFIX_BYTES..frame_len`.
    Complete {
        /// Prefix plus payload, in bytes.
        frame_len: usize,
    },
    /// More bytes are needed; `frame_len` is known once the prefix is in.
    Incomplete {
        /// Total frame length if the prefix has arrived.
        frame_len: Option<usize>,
    },
}

/// Looks at the length prefix at the start of `buf` without allocating.
/// Rejects a zero or oversized length as soon as the 4 prefix bytes are in,
/// so a hostile peer cannot make the reader buffer more than `max_frame_len`.
pub fn check(buf: &[u8], max_frame_len: u32) -> Result<Check, Error> {
    let Some(prefix) = buf.get(..LEN_PREFIX_BYTES) else {
        return Ok(Check::Incomplete { frame_len: None });
    };
    let mut len_bytes = [0u8; LEN_PREFIX_BYTES];
    len_bytes.copy_from_slice(prefix);
    let len = u32::from_le_bytes(len_bytes);
    if len == 0 {
        return Err(Error::EmptyFrame);
    }
    if len > max_frame_len {
        return Err(Error::FrameTooLarge {
            len,
            max: max_frame_len,
        });
    }
    let frame_len = LEN_PREFIX_BYTES + len as usize;
    if buf.len() >= frame_len {
        Ok(Check::Complete { frame_len })
    } else {
        Ok(Check::Incomplete {
            frame_len: Some(frame_len),
        })
    }
}

/// Splits the first whole frame off `buf`: `Ok(Some((payload, consumed)))`,
/// or `Ok(None)` when more bytes are needed.
pub fn split(buf: &[u8], max_frame_len: u32) -> Result<Option<(&[u8], usize)>, Error> {
    match check(buf, max_frame_len)? {
        Check::Complete { frame_len } => {
            let payload = buf
                .get(LEN_PREFIX_BYTES..frame_len)
                .ok_or(Error::EmptyFrame)?;
            Ok(Some((payload, frame_len)))
        }
        Check::Incomplete { .. } => Ok(None),
    }
}

/// Appends the length prefix for a payload of `payload_len` bytes.
pub fn put_prefix(out: &mut Vec<u8>, payload_len: u32) {
    out.extend_from_slice(&payload_len.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_until_prefix_and_payload_arrive() {
        let frame = [3u8, 0, 0, 0, 7, 8, 9];
        for cut in 0..LEN_PREFIX_BYTES {
            assert_eq!(
                check(&frame[..cut], 16),
                Ok(Check::Incomplete { frame_len: None })
            );
        }
        for cut in LEN_PREFIX_BYTES..frame.len() {
            assert_eq!(
                check(&frame[..cut], 16),
                Ok(Check::Incomplete { frame_len: Some(7) })
            );
        }
        assert_eq!(check(&frame, 16), Ok(Check::Complete { frame_len: 7 }));
        assert_eq!(split(&frame, 16), Ok(Some((&frame[4..], 7))));
    }

    #[test]
    fn length_at_bound_is_accepted_and_one_past_is_rejected() {
        let max = 1024u32;
        let at = max.to_le_bytes();
        assert_eq!(
            check(&at, max),
            Ok(Check::Incomplete {
                frame_len: Some(4 + 1024)
            })
        );
        let past = (max + 1).to_le_bytes();
        assert_eq!(
            check(&past, max),
            Err(Error::FrameTooLarge { len: 1025, max })
        );
        assert_eq!(
            check(&u32::MAX.to_le_bytes(), max),
            Err(Error::FrameTooLarge { len: u32::MAX, max })
        );
    }

    #[test]
    fn zero_length_is_rejected() {
        assert_eq!(check(&[0, 0, 0, 0], 16), Err(Error::EmptyFrame));
    }
}
