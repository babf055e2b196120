//! The one error type of this crate, with reason enums (rustls style).

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::segments::Lsn;
use crate::writer::RequestId;

/// Everything that can go wrong in the log.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogError {
    /// The record was refused by `append`; nothing was buffered.
    InvalidRecord(InvalidRecord),
    /// `WriterOptions` or `RecoveryOptions` break a rule.
    InvalidOptions(InvalidOptions),
    /// Appending would take the bytes not yet durable past `pending_bytes_max`.
    /// Nothing was buffered; retry after some of the backlog is durable.
    Backpressure {
        pending_bytes: usize,
        record_bytes: usize,
        pending_bytes_max: usize,
    },
    /// A write, sync, create or delete failed earlier. The log never acks
    /// again in this process (no fsync retry: "fsyncgate"); restart and recover.
    Poisoned(PoisonCause),
    /// The segment number would pass `SEGMENT_ID_MAX` (8 decimal digits).
    SegmentsExhausted { segment: u32 },
    /// `delete_segment` refused.
    SegmentNotDeletable { segment: u32, reason: NotDeletable },
    /// `handle_io_done` got an id that is not in flight.
    UnknownRequest { id: RequestId },
    /// A record before the tail is damaged. `file` is the segment path
    /// (its bare name when the sans-IO recovery does not know the directory).
    /// Start-up stops here unless recovery runs with `repair`.
    Corrupt {
        file: PathBuf,
        segment: u32,
        offset: u32,
        reason: CorruptReason,
    },
    /// A file operation outside the writer (open, recovery, truncation,
    /// reading) failed.
    Io {
        op: FileOp,
        path: PathBuf,
        failure: IoFailure,
    },
    /// `SegmentReader` found no valid record at `lsn` (`read`), or a damaged
    /// one in a sealed segment (`scan`). `file` is the segment path. Unlike
    /// `Corrupt` this is not a start-up verdict: the log stays open.
    Unreadable {
        file: PathBuf,
        lsn: Lsn,
        reason: UnreadableReason,
    },
}

/// Why `append` refused a record.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidRecord {
    /// Kind 0 is reserved: a zero header marks preallocated space.
    KindReserved,
    /// The payload is larger than this log takes (`Writer::payload_bytes_max`).
    PayloadTooLarge {
        payload_bytes: usize,
        payload_bytes_max: usize,
    },
}

/// Which option is out of range.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidOptions {
    /// `segment_bytes_max` must hold at least one record header plus a byte.
    SegmentTooSmall { segment_bytes_max: u32 },
    /// `batch_bytes_max` must hold at least one record header plus a byte.
    BatchTooSmall { batch_bytes_max: usize },
    /// `pending_bytes_max` must be at least `batch_bytes_max`.
    PendingTooSmall {
        pending_bytes_max: usize,
        batch_bytes_max: usize,
    },
    /// Segment numbers run from 1 to `SEGMENT_ID_MAX`.
    SegmentOutOfRange { segment: u32 },
    /// A segment was named twice or out of order.
    SegmentsNotAscending { segment: u32 },
    /// `torn_bytes_max` must hold at least one whole record.
    TornWindowTooSmall { torn_bytes_max: usize },
    /// A `SegmentReader` must be allowed at least one open file.
    ReaderFdsTooFew { fds_max: usize },
}

/// What is wrong with the bytes at a given offset.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorruptReason {
    /// The length field is above `RECORD_PAYLOAD_MAX`.
    LengthTooLarge { payload_bytes: u32 },
    /// Kind 0 with other bytes that are not zero.
    KindReserved,
    /// The CRC32C stored in the header differs from the one computed.
    ChecksumMismatch { stored: u32, computed: u32 },
    /// The record runs past the end of a segment that is not the tail.
    Truncated {
        frame_bytes: u64,
        segment_bytes: u64,
    },
}

/// Why `SegmentReader` returned no record.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnreadableReason {
    /// The bytes there fail the same checks recovery makes.
    Corrupt(CorruptReason),
    /// The segment file ends before the record at this offset does: the
    /// position is past the end, or the file was cut short.
    PastEnd {
        frame_bytes: u64,
        segment_bytes: u64,
    },
    /// Zero bytes where a header should be: preallocated or padding space
    /// where no record was ever written.
    NoRecord,
    /// The file is larger than a segment can be (offsets are `u32`).
    SegmentTooLarge { segment_bytes: u64 },
}

/// Why `delete_segment` refused.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotDeletable {
    /// The segment does not exist, or its deletion was already requested.
    NotLive,
    /// Appends go to this segment.
    Active,
}

/// The file operation that failed.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOp {
    CreateDir,
    ListDir,
    Open,
    Read,
    Truncate,
    Sync,
    SyncDir,
    Remove,
}

/// The writer request whose failure poisoned the log.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOp {
    CreateSegment,
    Write,
    Sync,
    DeleteSegment,
}

/// The first failure seen by the writer: it stays poisoned with this cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoisonCause {
    pub op: IoOp,
    pub segment: u32,
    pub failure: IoFailure,
}

/// An I/O failure reported by a driver, kept as plain data so errors stay
/// `Clone + Eq` (an `io::Error` is neither).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoFailure {
    pub kind: io::ErrorKind,
    pub os_code: Option<i32>,
    pub message: String,
}

impl IoFailure {
    /// A failure made up by a fault-injecting driver.
    pub fn injected(what: &str) -> Self {
        Self {
            kind: io::ErrorKind::Other,
            os_code: Some(5), // EIO, what a failing disk reports.
            message: format!("injected fault: {what}"),
        }
    }
}

impl From<io::Error> for IoFailure {
    fn from(error: io::Error) -> Self {
        Self {
            kind: error.kind(),
            os_code: error.raw_os_error(),
            message: error.to_string(),
        }
    }
}

impl fmt::Display for IoFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Display for CorruptReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LengthTooLarge { payload_bytes } => {
                write!(f, "record length {payload_bytes} is above the maximum")
            }
            Self::KindReserved => f.write_str("record kind 0 (reserved) in a non-zero header"),
            Self::ChecksumMismatch { stored, computed } => write!(
                f,
                "CRC32C mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            Self::Truncated {
                frame_bytes,
                segment_bytes,
            } => write!(
                f,
                "record of {frame_bytes} bytes runs past the end of the segment ({segment_bytes} bytes)"
            ),
        }
    }
}

impl fmt::Display for UnreadableReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Corrupt(reason) => reason.fmt(f),
            Self::PastEnd {
                frame_bytes,
                segment_bytes,
            } => write!(
                f,
                "{frame_bytes} bytes of record do not fit before the end of the segment ({segment_bytes} bytes)"
            ),
            Self::NoRecord => f.write_str("zero bytes, no record was written there"),
            Self::SegmentTooLarge { segment_bytes } => write!(
                f,
                "segment of {segment_bytes} bytes is larger than any segment can be"
            ),
        }
    }
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidRecord(InvalidRecord::KindReserved) => {
                f.write_str("record kind 0 is reserved")
            }
            Self::InvalidRecord(InvalidRecord::PayloadTooLarge {
                payload_bytes,
                payload_bytes_max,
            }) => write!(
                f,
                "record payload of {payload_bytes} bytes is above the maximum of {payload_bytes_max}"
            ),
            Self::InvalidOptions(reason) => write!(f, "invalid log options: {reason:?}"),
            Self::Backpressure {
                pending_bytes,
                record_bytes,
                pending_bytes_max,
            } => write!(
                f,
                "log backpressure: {pending_bytes} bytes not yet durable + {record_bytes} > {pending_bytes_max}"
            ),
            Self::Poisoned(cause) => write!(
                f,
                "log poisoned by a failed {:?} on segment {}: {} (no retry; restart to recover)",
                cause.op, cause.segment, cause.failure
            ),
            Self::SegmentsExhausted { segment } => {
                write!(f, "segment number {segment} is past the maximum")
            }
            Self::SegmentNotDeletable { segment, reason } => {
                write!(f, "segment {segment} cannot be deleted: {reason:?}")
            }
            Self::UnknownRequest { id } => write!(f, "no I/O request {id:?} in flight"),
            Self::Corrupt {
                file,
                segment: _,
                offset,
                reason,
            } => write!(
                f,
                "log corrupt in {} at offset {offset}: {reason}; start-up stopped \
                 (the repair option truncates the segment there and drops what follows in it)",
                file.display()
            ),
            Self::Io { op, path, failure } => {
                write!(f, "log {op:?} failed on {}: {failure}", path.display())
            }
            Self::Unreadable { file, lsn, reason } => write!(
                f,
                "no valid log record {lsn} in {} at offset {}: {reason}",
                file.display(),
                lsn.offset
            ),
        }
    }
}

impl std::error::Error for LogError {}

impl From<InvalidRecord> for LogError {
    fn from(reason: InvalidRecord) -> Self {
        Self::InvalidRecord(reason)
    }
}

impl From<InvalidOptions> for LogError {
    fn from(reason: InvalidOptions) -> Self {
        Self::InvalidOptions(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_message_names_file_offset_and_the_way_out() {
        let error = LogError::Corrupt {
            file: PathBuf::from("/data/shard-0/00000003.log"),
            segment: 3,
            offset: 4096,
            reason: CorruptReason::ChecksumMismatch {
                stored: 1,
                computed: 2,
            },
        };
        let text = error.to_string();
        assert!(text.contains("/data/shard-0/00000003.log"), "{text}");
        assert!(text.contains("offset 4096"), "{text}");
        assert!(text.contains("CRC32C mismatch"), "{text}");
        assert!(text.contains("repair"), "{text}");
    }

    #[test]
    fn poisoned_message_says_no_retry() {
        let error = LogError::Poisoned(PoisonCause {
            op: IoOp::Sync,
            segment: 7,
            failure: IoFailure::injected("fdatasync"),
        });
        let text = error.to_string();
        assert!(
            text.contains("Sync") && text.contains("segment 7"),
            "{text}"
        );
        assert!(text.contains("no retry"), "{text}");
    }

    #[test]
    fn io_failure_keeps_kind_and_os_code() {
        let failure = IoFailure::from(io::Error::from_raw_os_error(28)); // ENOSPC
        assert_eq!(failure.os_code, Some(28));
        assert_eq!(failure.kind, io::ErrorKind::StorageFull);
        assert_eq!(IoFailure::injected("x").os_code, Some(5));
        let from_reason: LogError = InvalidRecord::KindReserved.into();
        assert_eq!(from_reason.to_string(), "record kind 0 is reserved");
    }
}
