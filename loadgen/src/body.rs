//! Message bodies made by the generator: a fixed-width header the recipient
//! parses (run nonce, per-sender sequence, send time), then padding.
//!
//! The send time is microseconds since the worker's start `Instant`: sender
//! and recipient of a pair always live in the same worker process, so the
//! recipient measures send → Deliver on the same clock.

/// Header bytes: 8 hex digits of run nonce, 16 of sequence, 16 of send time.
pub const BODY_HEADER_LEN: usize = 40;

/// What the recipient reads back from a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyHeader {
    /// Random per run: bodies from an earlier run (left in an offline
    /// queue) are recognised and ignored.
    pub run: u32,
    /// The sender's message number in this run, from 0.
    pub seq: u64,
    /// Send time, microseconds since the worker's epoch.
    pub sent_us: u64,
}

/// Writes a body of exactly `len` bytes (at least the header) into `out`.
pub fn encode(header: BodyHeader, len: usize, out: &mut String) {
    use std::fmt::Write;
    out.clear();
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{:08x}{:016x}{:016x}",
        header.run, header.seq, header.sent_us
    );
    while out.len() < len {
        out.push('.');
    }
}

/// Parses the header of a generator body; `None` for anything else.
pub fn decode(text: &str) -> Option<BodyHeader> {
    let run = u32::from_str_radix(text.get(0..8)?, 16).ok()?;
    let seq = u64::from_str_radix(text.get(8..24)?, 16).ok()?;
    let sent_us = u64::from_str_radix(text.get(24..40)?, 16).ok()?;
    Some(BodyHeader { run, seq, sent_us })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_pads_to_length() {
        let h = BodyHeader {
            run: 0xdead_beef,
            seq: 42,
            sent_us: 1_234_567,
        };
        let mut s = String::new();
        encode(h, 100, &mut s);
        assert_eq!(s.len(), 100);
        assert_eq!(decode(&s), Some(h));
        encode(h, BODY_HEADER_LEN, &mut s);
        assert_eq!(s.len(), BODY_HEADER_LEN);
        assert_eq!(decode(&s), Some(h));
    }

    #[test]
    fn foreign_bodies_do_not_parse() {
        assert_eq!(decode("hello"), None);
        assert_eq!(decode(&"z".repeat(40)), None);
        assert_eq!(decode(""), None);
    }
}
