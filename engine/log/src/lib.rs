//! Tern's per-shard append-only log.
//!
//! Generic records `(kind: u8, payload)` framed with a length and a CRC32C
//! ([`record`]), in numbered segment files ([`segments`]), appended through a
//! sans-IO group-commit [`writer`] whose I/O a driver performs ([`file`](mod@file) for
//! real files, [`mem`] in memory), and read back at start by the sans-IO
//! [`recovery`], which truncates a torn tail and stops at corruption. While
//! the log is open, the [`reader`] reads records back by position, with the
//! same checks.
//!
//! The engine gives the kinds and payloads their meaning; this crate only
//! promises that a record at or below [`Writer::durable_lsn`] is on disk and
//! is read back by recovery, in order, or recovery fails loudly.

#![forbid(unsafe_code)]

pub mod error;
pub mod file;
pub mod mem;
pub mod reader;
pub mod record;
pub mod recovery;
pub mod segments;
pub mod writer;

pub use error::{
    CorruptReason, FileOp, InvalidOptions, InvalidRecord, IoFailure, IoOp, LogError, NotDeletable,
    PoisonCause, UnreadableReason,
};
pub use file::{
    open_log, open_log_with, FaultPlan, FaultyDriver, FileDriver, LogOptions, OpenedLog,
    Preallocation, Recovered, RecoveredRecord, TruncatedTail,
};
pub use mem::MemDisk;
pub use reader::{OwnedRecord, SegmentReader, READER_FDS_MAX};
pub use record::{
    Decoded, Record, RECORD_FRAME_BYTES_MAX, RECORD_HEADER_BYTES, RECORD_PAYLOAD_MAX,
};
pub use recovery::{
    recover, scan_segment, RecoveryOptions, RecoverySummary, SegmentEnd, SegmentReport, SegmentScan,
};
pub use segments::{segment_file_name, Lsn, SEGMENT_ID_MAX, SEGMENT_ID_MIN};
pub use writer::{
    drive, Durability, IoDriver, IoRequest, RequestId, Writer, WriterOptions, WriterStart,
    WriterStats,
};
