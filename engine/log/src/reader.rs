//! Reading records back while the log is open: one record by its `Lsn`
//! (message bodies kept only on disk), or every record of a sealed segment
//! (reclaim decides whether a segment still holds anything live).
//!
//! The checks are recovery's: `read` decodes with [`record::decode`] and
//! `scan` runs [`scan_segment`], so a record this reader returns is one
//! recovery would return too. Nothing is cached but file descriptors, at most
//! `fds_max` of them, least recently used first out.
//!
//! Every call blocks (`pread`): run it on a dedicated thread or on glommio's
//! blocking pool, never on an executor thread.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{CorruptReason, FileOp, InvalidOptions, LogError, UnreadableReason};
use crate::file::io_error;
use crate::record::{self, Decoded, Record, RECORD_HEADER_BYTES};
use crate::recovery::{scan_segment, RecoveryOptions, SegmentReport};
use crate::segments::{segment_path, Lsn};

/// Default bound on the read-only segment files a reader keeps open. A shard
/// reads mostly from its few newest segments; an older one costs one
/// `open` when it is needed again.
pub const READER_FDS_MAX: usize = 16;

/// A record read back, owning its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRecord {
    pub kind: u8,
    pub payload: Vec<u8>,
}

/// Reads records of one shard directory through a bounded cache of
/// read-only file descriptors. See the module docs.
#[derive(Debug)]
pub struct SegmentReader {
    dir: PathBuf,
    fds_max: usize,
    /// Open segments, most recently used last.
    files: Vec<(u32, File)>,
    fds_opened: u64,
}

impl SegmentReader {
    /// A reader of `dir` keeping at most `READER_FDS_MAX` files open.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            fds_max: READER_FDS_MAX,
            files: Vec::new(),
            fds_opened: 0,
        }
    }

    /// A reader keeping at most `fds_max` (at least 1) files open.
    pub fn with_fds_max(dir: &Path, fds_max: usize) -> Result<Self, LogError> {
        if fds_max == 0 {
            return Err(InvalidOptions::ReaderFdsTooFew { fds_max }.into());
        }
        Ok(Self {
            fds_max,
            ..Self::new(dir)
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Files open now (at most `fds_max`).
    pub fn open_fds(&self) -> usize {
        self.files.len()
    }

    /// Files opened so far: a cache miss each.
    pub fn fds_opened(&self) -> u64 {
        self.fds_opened
    }

    /// Closes the file of `segment`, if open. Call it when the segment is
    /// deleted: an open descriptor would keep the deleted file readable and
    /// its disk space allocated.
    pub fn forget(&mut self, segment: u32) {
        self.files.retain(|(s, _)| *s != segment);
    }

    /// The record that starts at `lsn`, checked as recovery checks it
    /// (length bound, reserved kind, CRC32C over the whole frame).
    pub fn read(&mut self, lsn: Lsn) -> Result<OwnedRecord, LogError> {
        let path = segment_path(&self.dir, lsn.segment);
        let offset = u64::from(lsn.offset);
        let file = self.file(lsn.segment)?;
        let mut header = [0u8; RECORD_HEADER_BYTES];
        read_exact_at(file, &mut header, offset, &path, lsn)?;
        if header.iter().all(|&b| b == 0) {
            return Err(unreadable(&path, lsn, UnreadableReason::NoRecord));
        }
        match record::decode(&header) {
            Decoded::Complete { record, .. } => {
                // An empty payload: the header is the whole record.
                return Ok(OwnedRecord {
                    kind: record.kind,
                    payload: Vec::new(),
                });
            }
            Decoded::Corrupt { reason } => {
                return Err(unreadable(&path, lsn, UnreadableReason::Corrupt(reason)))
            }
            Decoded::Incomplete => {}
        }
        // `decode` checks the length against RECORD_PAYLOAD_MAX before it asks
        // for more bytes, so this is `Some` and the allocation is bounded.
        let Some(frame_bytes) = record::announced_frame_bytes(&header) else {
            let payload_bytes = header.first_chunk().map_or(0, |b| u32::from_le_bytes(*b));
            return Err(unreadable(
                &path,
                lsn,
                UnreadableReason::Corrupt(CorruptReason::LengthTooLarge { payload_bytes }),
            ));
        };
        let mut frame = Vec::with_capacity(frame_bytes);
        frame.extend_from_slice(&header);
        frame.resize(frame_bytes, 0);
        let (_, payload) = frame.split_at_mut(RECORD_HEADER_BYTES);
        read_exact_at(
            file,
            payload,
            offset + RECORD_HEADER_BYTES as u64,
            &path,
            lsn,
        )?;
        let kind = match record::decode(&frame) {
            Decoded::Complete { record, len } => {
                debug_assert_eq!(len, frame_bytes);
                record.kind
            }
            Decoded::Corrupt { reason } => {
                return Err(unreadable(&path, lsn, UnreadableReason::Corrupt(reason)))
            }
            Decoded::Incomplete => {
                // The frame holds exactly the bytes the header announced.
                return Err(unreadable(
                    &path,
                    lsn,
                    UnreadableReason::PastEnd {
                        frame_bytes: frame_bytes as u64,
                        segment_bytes: file_bytes(file),
                    },
                ));
            }
        };
        frame.drain(..RECORD_HEADER_BYTES);
        Ok(OwnedRecord {
            kind,
            payload: frame,
        })
    }

    /// Reads the whole of a sealed `segment` and calls `visit` with every
    /// record, in order, until the records end (end of file or zero
    /// padding). Damage anywhere, a record cut short at the end included, is
    /// an `Unreadable` error: a sealed segment has no torn tail. Records
    /// before the damage have been visited by then.
    ///
    /// Not for the segment being appended to: its last batch may be written
    /// but not yet whole.
    pub fn scan(
        &mut self,
        segment: u32,
        mut visit: impl FnMut(Lsn, Record<'_>),
    ) -> Result<SegmentReport, LogError> {
        let path = segment_path(&self.dir, segment);
        let file = self.file(segment)?;
        let segment_bytes = file
            .metadata()
            .map_err(io_error(FileOp::Read, &path))?
            .len();
        if u32::try_from(segment_bytes).is_err() {
            return Err(unreadable(
                &path,
                Lsn::new(segment, 0),
                UnreadableReason::SegmentTooLarge { segment_bytes },
            ));
        }
        // Checked above: the length fits a u32, so it fits a usize.
        let mut bytes = vec![0u8; usize::try_from(segment_bytes).unwrap_or(usize::MAX)];
        file.read_exact_at(&mut bytes, 0)
            .map_err(io_error(FileOp::Read, &path))?;
        // Not the last segment: any damage is corruption, never a torn tail.
        let mut scan = scan_segment(segment, &bytes, false, &RecoveryOptions::default());
        for (lsn, record) in &mut scan {
            visit(lsn, record);
        }
        let records = scan.records();
        let end = scan.finish().map_err(|error| match error {
            LogError::Corrupt {
                segment,
                offset,
                reason,
                ..
            } => unreadable(
                &path,
                Lsn::new(segment, offset),
                UnreadableReason::Corrupt(reason),
            ),
            other => other,
        })?;
        Ok(SegmentReport {
            segment,
            records,
            end,
        })
    }

    /// The open file of `segment`, opening it (and closing the least
    /// recently used one at the bound) on a miss.
    fn file(&mut self, segment: u32) -> Result<&File, LogError> {
        if let Some(at) = self.files.iter().position(|(s, _)| *s == segment) {
            let entry = self.files.remove(at);
            self.files.push(entry);
        } else {
            let path = segment_path(&self.dir, segment);
            let file = File::open(&path).map_err(io_error(FileOp::Open, &path))?;
            self.fds_opened += 1;
            if self.files.len() >= self.fds_max {
                self.files.remove(0);
            }
            self.files.push((segment, file));
        }
        assert!(self.files.len() <= self.fds_max, "fd cache over its bound");
        // The entry for `segment` was just pushed or moved to the end.
        self.files
            .last()
            .map(|(_, file)| file)
            .ok_or_else(|| LogError::Io {
                op: FileOp::Open,
                path: segment_path(&self.dir, segment),
                failure: io::Error::other("segment file missing from the cache").into(),
            })
    }
}

fn unreadable(path: &Path, lsn: Lsn, reason: UnreadableReason) -> LogError {
    LogError::Unreadable {
        file: path.to_path_buf(),
        lsn,
        reason,
    }
}

fn file_bytes(file: &File) -> u64 {
    file.metadata().map_or(0, |m| m.len())
}

/// `pread` of exactly `buf.len()` bytes; the end of the file is `PastEnd`.
fn read_exact_at(
    file: &File,
    buf: &mut [u8],
    offset: u64,
    path: &Path,
    lsn: Lsn,
) -> Result<(), LogError> {
    match file.read_exact_at(buf, offset) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
            let segment_bytes = file_bytes(file);
            let frame_end = offset + buf.len() as u64;
            Err(unreadable(
                path,
                lsn,
                UnreadableReason::PastEnd {
                    frame_bytes: frame_end.saturating_sub(u64::from(lsn.offset)),
                    segment_bytes,
                },
            ))
        }
        Err(error) => Err(io_error(FileOp::Read, path)(error)),
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // Test data: small lengths and byte patterns.
mod tests {
    use std::fs::OpenOptions;

    use super::*;
    use crate::file::{open_log, LogOptions, OpenedLog, Preallocation};
    use crate::writer::{drive, Durability, WriterOptions};

    const SEGMENT_BYTES: u32 = 4 << 10;

    fn options(preallocation: Preallocation) -> LogOptions {
        LogOptions {
            writer: WriterOptions {
                durability: Durability::Fsync,
                segment_bytes_max: SEGMENT_BYTES,
                batch_bytes_max: 2 << 10,
                pending_bytes_max: 1 << 20,
            },
            repair: false,
            preallocation,
        }
    }

    /// Record `i`: kind 1..=200, payload of 0..=299 bytes (some empty).
    fn record(i: usize) -> (u8, Vec<u8>) {
        let kind = 1 + (i % 200) as u8;
        let len = (i * 37) % 300;
        (kind, (0..len).map(|j| (i * 7 + j) as u8).collect())
    }

    /// Writes `count` records through the real writer and file driver;
    /// returns the open log (the last segment is still active) and what was
    /// written, in order.
    fn write_log(
        dir: &Path,
        preallocation: Preallocation,
        count: usize,
    ) -> (OpenedLog, Vec<(Lsn, u8, Vec<u8>)>) {
        let mut log = open_log(dir, &options(preallocation)).unwrap();
        let mut written = Vec::new();
        for i in 0..count {
            let (kind, payload) = record(i);
            let lsn = log.writer.append(kind, &payload).unwrap();
            written.push((lsn, kind, payload));
            if i % 5 == 4 {
                drive(&mut log.writer, &mut log.driver).unwrap();
            }
        }
        drive(&mut log.writer, &mut log.driver).unwrap();
        assert_eq!(log.writer.durable_lsn(), written.last().unwrap().0);
        (log, written)
    }

    fn flip_byte(path: &Path, at: u64) {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, at).unwrap();
        file.write_all_at(&[byte[0] ^ 0x20], at).unwrap();
    }

    fn reason(error: &LogError) -> UnreadableReason {
        match error {
            LogError::Unreadable { reason, .. } => *reason,
            other => panic!("not Unreadable: {other:?}"),
        }
    }

    #[test]
    fn reads_back_every_record_by_lsn() {
        for preallocation in [
            Preallocation::None,
            Preallocation::Fallocate,
            Preallocation::ZeroFill,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let (log, written) = write_log(dir.path(), preallocation, 120);
            assert!(
                log.writer.active_segment() >= 3,
                "the records span several segments"
            );
            let mut reader = SegmentReader::new(dir.path());
            // Backwards, so the cache does not just follow the writer.
            for (lsn, kind, payload) in written.iter().rev() {
                let got = reader.read(*lsn).unwrap();
                assert_eq!(
                    (got.kind, &got.payload),
                    (*kind, payload),
                    "{lsn} {preallocation:?}"
                );
            }
        }
    }

    #[test]
    fn a_flipped_byte_is_a_crc_error_naming_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, written) = write_log(dir.path(), Preallocation::Fallocate, 40);
        let (lsn, _, payload) = written
            .iter()
            .find(|(lsn, _, payload)| lsn.segment == 1 && lsn.offset > 0 && payload.len() > 10)
            .unwrap()
            .clone();
        let path = segment_path(dir.path(), 1);
        let mut reader = SegmentReader::new(dir.path());
        reader.read(lsn).unwrap(); // Cached fd: the damage must still be seen.
        flip_byte(
            &path,
            u64::from(lsn.offset) + RECORD_HEADER_BYTES as u64 + 3,
        );
        let error = reader.read(lsn).unwrap_err();
        assert!(
            matches!(
                reason(&error),
                UnreadableReason::Corrupt(CorruptReason::ChecksumMismatch { .. })
            ),
            "{error:?}"
        );
        let text = error.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains(&format!("offset {}", lsn.offset)), "{text}");
        assert!(text.contains("CRC32C mismatch"), "{text}");
        assert!(!payload.is_empty());

        // A flipped high bit of the length is caught from the header alone.
        let (next, ..) = written
            .iter()
            .find(|(l, ..)| l.segment == 1 && *l > lsn)
            .unwrap();
        flip_byte(&path, u64::from(next.offset) + 3);
        let error = reader.read(*next).unwrap_err();
        assert!(
            matches!(
                reason(&error),
                UnreadableReason::Corrupt(CorruptReason::LengthTooLarge { .. })
            ),
            "{error:?}"
        );
    }

    #[test]
    fn positions_without_a_record_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (log, written) = write_log(dir.path(), Preallocation::Fallocate, 60);
        let mut reader = SegmentReader::new(dir.path());
        // Padding: the zeroes after the last record of a sealed segment.
        let (last_in_1, _, payload) = written.iter().rfind(|(l, ..)| l.segment == 1).unwrap();
        let end_of_records = last_in_1.offset + (RECORD_HEADER_BYTES + payload.len()) as u32;
        assert!(end_of_records < SEGMENT_BYTES, "segment 1 has padding");
        let error = reader.read(Lsn::new(1, end_of_records)).unwrap_err();
        assert_eq!(reason(&error), UnreadableReason::NoRecord, "{error}");
        // Past the end of the (preallocated) file.
        let error = reader.read(Lsn::new(1, SEGMENT_BYTES)).unwrap_err();
        assert_eq!(
            reason(&error),
            UnreadableReason::PastEnd {
                frame_bytes: RECORD_HEADER_BYTES as u64,
                segment_bytes: u64::from(SEGMENT_BYTES)
            },
            "{error}"
        );
        assert!(error.to_string().contains("00000001.log"), "{error}");
        // A header in the last bytes whose record would run past the end.
        let path = segment_path(dir.path(), 1);
        let near_end = u64::from(SEGMENT_BYTES) - 12;
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        let mut frame = Vec::new();
        record::encode(7, &[1; 50], &mut frame).unwrap();
        file.write_all_at(&frame[..12], near_end).unwrap();
        let error = reader.read(Lsn::new(1, near_end as u32)).unwrap_err();
        assert_eq!(
            reason(&error),
            UnreadableReason::PastEnd {
                frame_bytes: frame.len() as u64,
                segment_bytes: u64::from(SEGMENT_BYTES)
            },
            "{error}"
        );
        // The middle of a record is not a record.
        let (inside, _, payload) = written
            .iter()
            .find(|(l, _, p)| l.segment == 2 && p.len() > 20)
            .unwrap();
        assert!(reader.read(Lsn::new(2, inside.offset + 1)).is_err());
        let got = reader.read(*inside).unwrap();
        assert_eq!(&got.payload, payload);
        // A segment that does not exist.
        let missing = log.writer.active_segment() + 1;
        let error = reader.read(Lsn::new(missing, 0)).unwrap_err();
        assert!(
            matches!(error, LogError::Io { op: FileOp::Open, ref failure, .. } if failure.kind == io::ErrorKind::NotFound),
            "{error:?}"
        );
    }

    #[test]
    fn past_the_end_of_a_growing_file() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, written) = write_log(dir.path(), Preallocation::None, 10);
        let (last, _, payload) = written.last().unwrap();
        let end = last.offset + (RECORD_HEADER_BYTES + payload.len()) as u32;
        let mut reader = SegmentReader::new(dir.path());
        for offset in [end, end + 1000] {
            let error = reader.read(Lsn::new(last.segment, offset)).unwrap_err();
            assert!(
                matches!(reason(&error), UnreadableReason::PastEnd { segment_bytes, .. } if segment_bytes == u64::from(end)),
                "{error}"
            );
        }
    }

    #[test]
    fn scan_visits_exactly_the_written_records() {
        for preallocation in [Preallocation::None, Preallocation::Fallocate] {
            let dir = tempfile::tempdir().unwrap();
            let (log, written) = write_log(dir.path(), preallocation, 150);
            let mut reader = SegmentReader::new(dir.path());
            let active = log.writer.active_segment();
            let mut seen = Vec::new();
            for segment in 1..active {
                let report = reader
                    .scan(segment, |lsn, r| {
                        seen.push((lsn, r.kind, r.payload.to_vec()));
                    })
                    .unwrap();
                assert_eq!(report.segment, segment);
                let expected = written.iter().filter(|(l, ..)| l.segment == segment);
                assert_eq!(report.records, expected.count() as u64);
                assert!(!report.end.needs_truncation(), "{:?}", report.end);
            }
            let sealed: Vec<_> = written
                .iter()
                .filter(|(l, ..)| l.segment < active)
                .cloned()
                .collect();
            assert_eq!(seen, sealed, "{preallocation:?}");
        }
    }

    #[test]
    fn scan_reports_damage_in_a_sealed_segment() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, written) = write_log(dir.path(), Preallocation::Fallocate, 60);
        let in_1: Vec<_> = written.iter().filter(|(l, ..)| l.segment == 1).collect();
        let (damaged, ..) = in_1[in_1.len() / 2];
        let path = segment_path(dir.path(), 1);
        flip_byte(&path, u64::from(damaged.offset) + 5); // The stored CRC.
        let mut reader = SegmentReader::new(dir.path());
        let mut visited = 0usize;
        let error = reader.scan(1, |_, _| visited += 1).unwrap_err();
        assert_eq!(visited, in_1.len() / 2, "the records before the damage");
        match &error {
            LogError::Unreadable {
                file,
                lsn,
                reason: UnreadableReason::Corrupt(CorruptReason::ChecksumMismatch { .. }),
            } => {
                assert_eq!(file, &path);
                assert_eq!(lsn, damaged);
            }
            other => panic!("{other:?}"),
        }
        assert!(error
            .to_string()
            .contains(&format!("offset {}", damaged.offset)));

        // A sealed segment cut inside its last record has no torn tail.
        let (last, _, payload) = written.iter().rfind(|(l, ..)| l.segment == 2).unwrap();
        let cut = u64::from(last.offset) + RECORD_HEADER_BYTES as u64 + payload.len() as u64 / 2;
        let file = OpenOptions::new()
            .write(true)
            .open(segment_path(dir.path(), 2))
            .unwrap();
        file.set_len(cut).unwrap();
        let error = reader.scan(2, |_, _| {}).unwrap_err();
        assert!(
            matches!(
                reason(&error),
                UnreadableReason::Corrupt(CorruptReason::Truncated { .. })
            ),
            "{error:?}"
        );
    }

    #[test]
    fn fd_cache_stays_within_its_bound_and_forget_closes() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, written) = write_log(dir.path(), Preallocation::None, 200);
        let segments = log.writer.active_segment();
        assert!(segments >= 5, "{segments}");
        let mut reader = SegmentReader::with_fds_max(dir.path(), 2).unwrap();
        for (lsn, kind, payload) in &written {
            let got = reader.read(*lsn).unwrap();
            assert_eq!((got.kind, &got.payload), (*kind, payload));
            assert!(reader.open_fds() <= 2);
        }
        // In order: one open per segment, the rest are cache hits.
        assert_eq!(reader.fds_opened(), u64::from(segments));
        // Alternating between two segments stays in the cache ...
        let a = written.iter().find(|(l, ..)| l.segment == 1).unwrap().0;
        let b = written.iter().find(|(l, ..)| l.segment == 2).unwrap().0;
        let opened = reader.fds_opened();
        for _ in 0..10 {
            reader.read(a).unwrap();
            reader.read(b).unwrap();
        }
        assert_eq!(reader.fds_opened(), opened + 2);
        // ... a third evicts the least recently used (a), which reopens.
        let c = written.iter().find(|(l, ..)| l.segment == 3).unwrap().0;
        reader.read(c).unwrap();
        reader.read(b).unwrap();
        assert_eq!(reader.fds_opened(), opened + 3);
        reader.read(a).unwrap();
        assert_eq!(reader.fds_opened(), opened + 4);
        assert_eq!(reader.open_fds(), 2);

        // Reclaim: the writer deletes segment 1; without `forget`, the open
        // fd would still read the deleted file.
        log.writer.delete_segment(1).unwrap();
        drive(&mut log.writer, &mut log.driver).unwrap();
        assert!(reader.read(a).is_ok(), "the cached fd outlives the file");
        reader.forget(1);
        assert_eq!(reader.open_fds(), 1);
        let error = reader.read(a).unwrap_err();
        assert!(
            matches!(error, LogError::Io { op: FileOp::Open, ref failure, .. } if failure.kind == io::ErrorKind::NotFound),
            "{error:?}"
        );
        assert_eq!(reader.open_fds(), 1, "a failed open caches nothing");
    }

    #[test]
    fn default_bound_and_zero_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (log, written) = write_log(dir.path(), Preallocation::None, 700);
        assert!(log.writer.active_segment() as usize > READER_FDS_MAX);
        let mut reader = SegmentReader::new(dir.path());
        for (lsn, ..) in &written {
            reader.read(*lsn).unwrap();
        }
        assert_eq!(reader.open_fds(), READER_FDS_MAX);
        assert_eq!(
            SegmentReader::with_fds_max(dir.path(), 0).unwrap_err(),
            LogError::InvalidOptions(InvalidOptions::ReaderFdsTooFew { fds_max: 0 })
        );
        assert_eq!(reader.dir(), dir.path());
    }
}
