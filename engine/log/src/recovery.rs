//! Sans-IO recovery: segment bytes in, records and a verdict on the tail out.
//!
//! Each segment is read from its start. Where records stop, the rest of the
//! segment is one of:
//!
//! - nothing (`Clean`), or only zero bytes (`ZeroFill`: preallocated space,
//!   or the unused end of a segment that rolled over). Normal.
//! - a **torn tail** (`TornTail`): only in the LAST segment, and only if the
//!   damage looks like an unfinished write: a record that runs past the end,
//!   or a bad record that is NOT followed by a valid record and has nothing
//!   but zeroes from `torn_bytes_max` past it on. The writer never has more
//!   than one batch (`batch_bytes_max`) written but not synced, so a crash
//!   cannot leave damage wider than that. The caller truncates it.
//! - **corruption** otherwise: any damage in a segment that is not the last,
//!   a bad record followed by a valid one, or non-zero bytes farther than
//!   `torn_bytes_max` past the damage. Recovery stops with
//!   `LogError::Corrupt` naming the segment and offset, unless `repair` is
//!   set: then the segment is cut there (`Repaired`, with what was dropped)
//!   and recovery goes on with the next segment.
//!
//! What this cannot tell apart: damage to the very last record of the last
//! segment looks exactly like a torn write and is truncated (with a warning).

use crate::error::{CorruptReason, InvalidOptions, LogError};
use crate::record::{self, Decoded, Record, RECORD_FRAME_BYTES_MAX, RECORD_HEADER_BYTES};
use crate::segments::{segment_file_name, Lsn};
use crate::writer::BATCH_BYTES_MAX_DEFAULT;

/// How recovery judges damage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryOptions {
    /// Cut a corrupt segment at the damage and go on, instead of failing.
    pub repair: bool,
    /// Most bytes a crash can leave written but not synced: at least the
    /// writer's `batch_bytes_max`, and at least one whole record.
    pub torn_bytes_max: usize,
}

impl Default for RecoveryOptions {
    fn default() -> Self {
        Self {
            repair: false,
            torn_bytes_max: BATCH_BYTES_MAX_DEFAULT,
        }
    }
}

impl RecoveryOptions {
    pub fn validate(&self) -> Result<(), LogError> {
        if self.torn_bytes_max < RECORD_FRAME_BYTES_MAX {
            return Err(InvalidOptions::TornWindowTooSmall {
                torn_bytes_max: self.torn_bytes_max,
            }
            .into());
        }
        Ok(())
    }
}

/// How a segment ends, after its last good record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentEnd {
    /// The last record ends exactly at the end of the segment.
    Clean { offset: u32 },
    /// Only zero bytes from `offset` on.
    ZeroFill { offset: u32, bytes: u64 },
    /// An unfinished write from `offset` on (last segment only): truncate.
    TornTail { offset: u32, bytes: u64 },
    /// Corruption at `offset`, cut because `repair` is set. `records_dropped`
    /// counts the damaged record and the records still readable after it.
    Repaired {
        offset: u32,
        bytes_dropped: u64,
        records_dropped: u64,
        reason: CorruptReason,
    },
}

impl SegmentEnd {
    /// Where the good records end.
    pub fn offset(&self) -> u32 {
        match *self {
            Self::Clean { offset }
            | Self::ZeroFill { offset, .. }
            | Self::TornTail { offset, .. }
            | Self::Repaired { offset, .. } => offset,
        }
    }

    /// True if bytes past `offset` must be cut before the log is used.
    pub fn needs_truncation(&self) -> bool {
        matches!(self, Self::TornTail { .. } | Self::Repaired { .. })
    }
}

#[derive(Debug, Clone, Copy)]
struct Stop {
    offset: usize,
    /// `None`: the record runs past the end of the segment.
    reason: Option<CorruptReason>,
}

/// Iterates over the good records of one segment; `finish` judges the end.
#[derive(Debug)]
pub struct SegmentScan<'a> {
    segment: u32,
    bytes: &'a [u8],
    is_last: bool,
    options: RecoveryOptions,
    offset: usize,
    records: u64,
    stop: Option<Stop>,
    clean: bool,
}

/// Starts scanning `bytes`, the whole content of `segment`. `is_last` says
/// whether it is the newest segment (the only one that may be torn).
pub fn scan_segment<'a>(
    segment: u32,
    bytes: &'a [u8],
    is_last: bool,
    options: &RecoveryOptions,
) -> SegmentScan<'a> {
    SegmentScan {
        segment,
        bytes,
        is_last,
        options: options.clone(),
        offset: 0,
        records: 0,
        stop: None,
        clean: false,
    }
}

impl<'a> Iterator for SegmentScan<'a> {
    type Item = (Lsn, Record<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.stop.is_some() || self.clean {
            return None;
        }
        let rest = self.bytes.get(self.offset..).unwrap_or_default();
        if rest.is_empty() {
            self.clean = true;
            return None;
        }
        match record::decode(rest) {
            Decoded::Complete { record, len } => {
                let lsn = Lsn::new(self.segment, offset_u32(self.offset));
                self.offset += len;
                self.records += 1;
                Some((lsn, record))
            }
            Decoded::Incomplete => {
                self.stop = Some(Stop {
                    offset: self.offset,
                    reason: None,
                });
                None
            }
            Decoded::Corrupt { reason } => {
                self.stop = Some(Stop {
                    offset: self.offset,
                    reason: Some(reason),
                });
                None
            }
        }
    }
}

impl SegmentScan<'_> {
    /// Good records seen so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Reads any records left, then says how the segment ends, or why it is
    /// corrupt.
    pub fn finish(mut self) -> Result<SegmentEnd, LogError> {
        while self.next().is_some() {}
        let Some(stop) = self.stop else {
            return Ok(SegmentEnd::Clean {
                offset: offset_u32(self.offset),
            });
        };
        let rest = self.bytes.get(stop.offset..).unwrap_or_default();
        let offset = offset_u32(stop.offset);
        let rest_bytes = rest.len() as u64;
        if is_zero(rest) {
            return Ok(SegmentEnd::ZeroFill {
                offset,
                bytes: rest_bytes,
            });
        }
        if self.is_last && self.looks_torn(rest) {
            return Ok(SegmentEnd::TornTail {
                offset,
                bytes: rest_bytes,
            });
        }
        let reason = stop.reason.unwrap_or(CorruptReason::Truncated {
            frame_bytes: record::announced_frame_bytes(rest).unwrap_or(RECORD_HEADER_BYTES) as u64,
            segment_bytes: self.bytes.len() as u64,
        });
        if self.options.repair {
            return Ok(SegmentEnd::Repaired {
                offset,
                bytes_dropped: rest_bytes,
                records_dropped: records_in_damage(rest),
                reason,
            });
        }
        Err(LogError::Corrupt {
            file: segment_file_name(self.segment).into(),
            segment: self.segment,
            offset,
            reason,
        })
    }

    /// Could the bad bytes at the start of `rest` be an unfinished write?
    fn looks_torn(&self, rest: &[u8]) -> bool {
        // Nothing but zeroes farther than one unsynced batch past the damage.
        if let Some(beyond) = rest.get(self.options.torn_bytes_max..) {
            if !is_zero(beyond) {
                return false;
            }
        }
        // A whole frame followed by a valid record: the damage is mid-log.
        if let Some(frame_bytes) = record::announced_frame_bytes(rest) {
            if let Some(next) = rest.get(frame_bytes..) {
                if matches!(record::decode(next), Decoded::Complete { .. }) {
                    return false;
                }
            }
        }
        true
    }
}

/// The damaged record plus the valid records that follow it, if its length
/// field is believable.
fn records_in_damage(rest: &[u8]) -> u64 {
    let mut records = 1u64;
    let Some(mut at) = record::announced_frame_bytes(rest) else {
        return records;
    };
    while let Some(Decoded::Complete { len, .. }) = rest.get(at..).map(record::decode) {
        records += 1;
        at += len;
    }
    records
}

fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

/// Segments never exceed `segment_bytes_max: u32`, so every record offset
/// fits; a larger file saturates (and fails elsewhere as corrupt).
fn offset_u32(offset: usize) -> u32 {
    u32::try_from(offset).unwrap_or(u32::MAX)
}

/// One segment's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentReport {
    pub segment: u32,
    pub records: u64,
    pub end: SegmentEnd,
}

/// What `recover` found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecoverySummary {
    pub records: u64,
    /// The last good record (`Lsn::ZERO` if none).
    pub last_lsn: Lsn,
    pub segments: Vec<SegmentReport>,
}

impl RecoverySummary {
    /// Adds a segment's report; `last_lsn` is the last record it visited.
    pub fn push(&mut self, report: SegmentReport, last_lsn: Option<Lsn>) {
        self.records += report.records;
        if let Some(lsn) = last_lsn {
            assert!(lsn > self.last_lsn, "records are recovered in order");
            self.last_lsn = lsn;
        }
        self.segments.push(report);
    }

    /// The torn tail, if the last segment had one.
    pub fn torn_tail(&self) -> Option<SegmentReport> {
        self.segments
            .iter()
            .copied()
            .find(|r| matches!(r.end, SegmentEnd::TornTail { .. }))
    }

    /// Segments cut by `repair`.
    pub fn repaired(&self) -> impl Iterator<Item = SegmentReport> + '_ {
        self.segments
            .iter()
            .copied()
            .filter(|r| matches!(r.end, SegmentEnd::Repaired { .. }))
    }
}

/// Recovers segments held in memory, oldest first: calls `visit` with every
/// good record in order and returns what was found at each segment's end.
pub fn recover(
    segments: &[(u32, &[u8])],
    options: &RecoveryOptions,
    mut visit: impl FnMut(Lsn, Record<'_>),
) -> Result<RecoverySummary, LogError> {
    options.validate()?;
    let mut summary = RecoverySummary::default();
    let mut previous = 0u32;
    for (index, &(segment, bytes)) in segments.iter().enumerate() {
        if segment <= previous {
            return Err(InvalidOptions::SegmentsNotAscending { segment }.into());
        }
        previous = segment;
        let is_last = index + 1 == segments.len();
        let mut scan = scan_segment(segment, bytes, is_last, options);
        let mut last = None;
        for (lsn, record) in &mut scan {
            visit(lsn, record);
            last = Some(lsn);
        }
        let records = scan.records();
        let end = scan.finish()?;
        summary.push(
            SegmentReport {
                segment,
                records,
                end,
            },
            last,
        );
    }
    Ok(summary)
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // Test data: small lengths and byte patterns.
mod tests {
    use super::*;
    use crate::record::encode;

    fn options() -> RecoveryOptions {
        RecoveryOptions::default()
    }

    /// Records of 20..=40 byte payloads; returns bytes and record starts.
    fn segment_bytes(count: usize, seed: u8) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = Vec::new();
        let mut starts = Vec::new();
        for i in 0..count {
            starts.push(bytes.len());
            let payload: Vec<u8> = (0..20 + i % 21).map(|j| seed ^ (i + j) as u8).collect();
            encode(1 + (i % 200) as u8, &payload, &mut bytes).unwrap();
        }
        (bytes, starts)
    }

    fn collect(
        segments: &[(u32, &[u8])],
        options: &RecoveryOptions,
    ) -> Result<(Vec<Lsn>, RecoverySummary), LogError> {
        let mut lsns = Vec::new();
        let summary = recover(segments, options, |lsn, _| lsns.push(lsn))?;
        Ok((lsns, summary))
    }

    #[test]
    fn clean_segments_yield_every_record_in_order() {
        let (a, a_starts) = segment_bytes(10, 1);
        let (b, b_starts) = segment_bytes(7, 2);
        let (lsns, summary) = collect(&[(1, &a), (3, &b)], &options()).unwrap();
        let expected: Vec<Lsn> = a_starts
            .iter()
            .map(|&o| Lsn::new(1, o as u32))
            .chain(b_starts.iter().map(|&o| Lsn::new(3, o as u32)))
            .collect();
        assert_eq!(lsns, expected);
        assert_eq!(summary.records, 17);
        assert_eq!(summary.last_lsn, *expected.last().unwrap());
        assert_eq!(
            summary.segments[1].end,
            SegmentEnd::Clean {
                offset: b.len() as u32
            }
        );
        assert_eq!(summary.torn_tail(), None);
    }

    #[test]
    fn payloads_come_back_intact() {
        let mut bytes = Vec::new();
        encode(9, b"alpha", &mut bytes).unwrap();
        encode(10, b"", &mut bytes).unwrap();
        let mut seen = Vec::new();
        recover(&[(1, &bytes)], &options(), |lsn, r| {
            seen.push((lsn.offset, r.kind, r.payload.to_vec()))
        })
        .unwrap();
        assert_eq!(seen, vec![(0, 9, b"alpha".to_vec()), (14, 10, Vec::new())]);
    }

    #[test]
    fn zero_fill_after_last_record_is_normal_everywhere() {
        let (mut a, _) = segment_bytes(5, 1);
        let valid = a.len();
        a.resize(valid + 4096, 0);
        let (b, _) = segment_bytes(3, 2);
        let (_, summary) = collect(&[(1, &a), (2, &b)], &options()).unwrap();
        assert_eq!(
            summary.segments[0].end,
            SegmentEnd::ZeroFill {
                offset: valid as u32,
                bytes: 4096
            }
        );
        let (_, summary) = collect(&[(2, &a)], &options()).unwrap();
        assert!(matches!(
            summary.segments[0].end,
            SegmentEnd::ZeroFill { .. }
        ));
        assert!(!summary.segments[0].end.needs_truncation());
    }

    #[test]
    fn every_truncation_of_last_three_records_is_a_torn_tail() {
        let (bytes, starts) = segment_bytes(12, 3);
        let first_cut = starts[starts.len() - 3];
        for cut in first_cut..bytes.len() {
            let truncated = &bytes[..cut];
            let (lsns, summary) = collect(&[(5, truncated)], &options()).unwrap();
            let complete = starts.iter().filter(|&&s| s < cut).count() - 1;
            let complete = if starts.contains(&cut) {
                complete + 1
            } else {
                complete
            };
            assert_eq!(lsns.len(), complete, "cut {cut}");
            let end = summary.segments[0].end;
            if starts.contains(&cut) {
                assert_eq!(end, SegmentEnd::Clean { offset: cut as u32 });
            } else {
                let boundary = starts[complete] as u32;
                assert_eq!(
                    end,
                    SegmentEnd::TornTail {
                        offset: boundary,
                        bytes: (cut - boundary as usize) as u64
                    },
                    "cut {cut}"
                );
            }
        }
    }

    #[test]
    fn torn_tail_in_preallocated_segment() {
        // A partial record followed by the preallocated zeroes.
        let (bytes, starts) = segment_bytes(6, 4);
        let cut = starts[5] + 7;
        let mut image = bytes[..cut].to_vec();
        image.resize(64 << 10, 0);
        let (lsns, summary) = collect(&[(1, &image)], &options()).unwrap();
        assert_eq!(lsns.len(), 5);
        assert_eq!(
            summary.segments[0].end,
            SegmentEnd::TornTail {
                offset: starts[5] as u32,
                bytes: (image.len() - starts[5]) as u64
            }
        );
    }

    #[test]
    fn truncation_in_an_earlier_segment_is_corrupt() {
        let (a, starts) = segment_bytes(6, 1);
        let (b, _) = segment_bytes(2, 2);
        let cut = starts[5] + 3;
        let err = collect(&[(1, &a[..cut]), (2, &b)], &options()).unwrap_err();
        match err {
            LogError::Corrupt {
                file,
                segment,
                offset,
                reason,
            } => {
                assert_eq!(file.to_str(), Some("00000001.log"));
                assert_eq!((segment, offset), (1, starts[5] as u32));
                assert!(matches!(reason, CorruptReason::Truncated { .. }));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_crc_followed_by_valid_record_is_corrupt_even_in_last_segment() {
        let (mut bytes, starts) = segment_bytes(10, 5);
        bytes[starts[8] + RECORD_HEADER_BYTES + 2] ^= 0x40;
        let err = collect(&[(4, &bytes)], &options()).unwrap_err();
        assert!(
            matches!(err, LogError::Corrupt { segment: 4, offset, reason: CorruptReason::ChecksumMismatch { .. }, .. } if offset == starts[8] as u32),
            "{err:?}"
        );
        assert!(err.to_string().contains("00000004.log"));
        assert!(err.to_string().contains(&format!("offset {}", starts[8])));
    }

    #[test]
    fn bad_crc_on_final_record_of_last_segment_is_torn() {
        let (mut bytes, starts) = segment_bytes(10, 6);
        let last = *starts.last().unwrap();
        bytes[last + RECORD_HEADER_BYTES] ^= 1;
        let (lsns, summary) = collect(&[(1, &bytes)], &options()).unwrap();
        assert_eq!(lsns.len(), 9);
        assert_eq!(
            summary.segments[0].end,
            SegmentEnd::TornTail {
                offset: last as u32,
                bytes: (bytes.len() - last) as u64
            }
        );
    }

    #[test]
    fn damage_far_before_the_end_of_last_segment_is_corrupt() {
        // A length that runs past the end looks torn, unless there are more
        // bytes after it than one unsynced batch could hold.
        let (mut bytes, starts) = segment_bytes(400, 7);
        let opts = RecoveryOptions {
            torn_bytes_max: RECORD_FRAME_BYTES_MAX,
            ..options()
        };
        let mut tail = Vec::new();
        while tail.len() < RECORD_FRAME_BYTES_MAX + 100 {
            encode(3, &[9; 1000], &mut tail).unwrap();
        }
        bytes.extend_from_slice(&tail);
        // A plausible but wrong length on record 1: its frame ends inside
        // later records (checksum mismatch), with far more than one batch of
        // data after it.
        let at = starts[1];
        bytes[at..at + 4].copy_from_slice(&((1u32 << 20) - 5).to_le_bytes());
        let err = collect(&[(1, &bytes)], &opts).unwrap_err();
        assert!(
            matches!(err, LogError::Corrupt { offset, .. } if offset == at as u32),
            "{err:?}"
        );
    }

    #[test]
    fn flipped_bit_anywhere_in_an_early_segment_is_corrupt_or_detected() {
        let (a, starts) = segment_bytes(8, 8);
        let (b, _) = segment_bytes(3, 9);
        for byte in 0..a.len() {
            let mut damaged = a.clone();
            damaged[byte] ^= 0x10;
            let err = collect(&[(1, &damaged), (2, &b)], &options()).unwrap_err();
            let record_start = *starts.iter().rev().find(|&&s| s <= byte).unwrap();
            assert!(
                matches!(err, LogError::Corrupt { segment: 1, offset, .. } if offset == record_start as u32),
                "byte {byte}: {err:?}"
            );
        }
    }

    #[test]
    fn repair_cuts_the_segment_and_goes_on() {
        let (mut a, starts) = segment_bytes(10, 1);
        let (b, b_starts) = segment_bytes(4, 2);
        a[starts[6] + RECORD_HEADER_BYTES] ^= 0xFF;
        let opts = RecoveryOptions {
            repair: true,
            ..options()
        };
        let (lsns, summary) = collect(&[(1, &a), (2, &b)], &opts).unwrap();
        assert_eq!(lsns.len(), 6 + b_starts.len());
        let repaired: Vec<_> = summary.repaired().collect();
        assert_eq!(repaired.len(), 1);
        match repaired[0].end {
            SegmentEnd::Repaired {
                offset,
                bytes_dropped,
                records_dropped,
                reason,
            } => {
                assert_eq!(offset, starts[6] as u32);
                assert_eq!(bytes_dropped, (a.len() - starts[6]) as u64);
                assert_eq!(records_dropped, 4, "the damaged record and the 3 after it");
                assert!(matches!(reason, CorruptReason::ChecksumMismatch { .. }));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(summary.last_lsn, Lsn::new(2, b_starts[3] as u32));
    }

    #[test]
    fn garbage_header_is_corrupt_not_zero() {
        let (mut a, _) = segment_bytes(3, 1);
        let valid = a.len();
        a.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]);
        let (b, _) = segment_bytes(1, 1);
        let err = collect(&[(1, &a), (2, &b)], &options()).unwrap_err();
        assert!(matches!(
            err,
            LogError::Corrupt { offset, reason: CorruptReason::KindReserved, .. } if offset == valid as u32
        ));
        // In the last segment, the same bytes are a torn tail.
        let (_, summary) = collect(&[(1, &a)], &options()).unwrap();
        assert!(matches!(
            summary.segments[0].end,
            SegmentEnd::TornTail { .. }
        ));
    }

    #[test]
    fn segments_must_ascend_and_options_validate() {
        let (a, _) = segment_bytes(1, 1);
        assert!(matches!(
            collect(&[(2, &a), (2, &a)], &options()),
            Err(LogError::InvalidOptions(
                InvalidOptions::SegmentsNotAscending { segment: 2 }
            ))
        ));
        let tiny = RecoveryOptions {
            torn_bytes_max: 10,
            ..options()
        };
        assert!(matches!(
            collect(&[(1, &a)], &tiny),
            Err(LogError::InvalidOptions(_))
        ));
        let (lsns, summary) = collect(&[], &options()).unwrap();
        assert!(lsns.is_empty());
        assert_eq!(summary.last_lsn, Lsn::ZERO);
    }

    #[test]
    fn empty_last_segment_is_clean_at_zero() {
        let (lsns, summary) = collect(&[(1, &[])], &options()).unwrap();
        assert!(lsns.is_empty());
        assert_eq!(summary.segments[0].end, SegmentEnd::Clean { offset: 0 });
    }
}
