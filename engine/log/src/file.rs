//! Real files: the blocking driver, the fault-injecting driver, `open_log`.
//!
//! `FileDriver` executes writer requests with std::fs: positioned buffered
//! writes (`pwrite`), `fdatasync` (`File::sync_data`), segment creation with
//! optional preallocation, and an fsync of the directory after every create
//! and delete. Every call blocks: run it on a dedicated thread or on glommio's
//! blocking pool, never on an executor thread.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{FileOp, IoFailure, LogError};
use crate::record::{Record, RECORD_FRAME_BYTES_MAX};
use crate::recovery::{scan_segment, RecoveryOptions, RecoverySummary, SegmentEnd, SegmentReport};
use crate::segments::{list_segments, segment_path, Lsn};
use crate::writer::{
    IoDriver, IoRequest, Writer, WriterOptions, WriterStart, BATCH_BYTES_MAX_DEFAULT,
};

/// Zeroes written per call when zero-filling a new segment.
const ZERO_FILL_CHUNK_BYTES: usize = 1 << 20;

/// How a new segment gets its space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preallocation {
    /// The file grows with each write; each fdatasync also commits the size.
    None,
    /// `fallocate` the whole segment (unwritten extents, size set).
    Fallocate,
    /// Write zeroes over the whole segment once, so later writes overwrite
    /// allocated, initialised blocks. Costs one extra write of the segment.
    ZeroFill,
}

/// Executes `IoRequest`s on real files in one shard directory.
#[derive(Debug)]
pub struct FileDriver {
    dir: PathBuf,
    dir_handle: File,
    files: BTreeMap<u32, File>,
    preallocation: Preallocation,
}

pub(crate) fn io_error(op: FileOp, path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |error| LogError::Io {
        op,
        path: path.to_path_buf(),
        failure: IoFailure::from(error),
    }
}

impl FileDriver {
    /// A driver for the existing directory `dir`.
    pub fn new(dir: &Path, preallocation: Preallocation) -> Result<Self, LogError> {
        let dir_handle = File::open(dir).map_err(io_error(FileOp::Open, dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            dir_handle,
            files: BTreeMap::new(),
            preallocation,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&mut self, segment: u32) -> io::Result<&File> {
        if !self.files.contains_key(&segment) {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(segment_path(&self.dir, segment))?;
            self.files.insert(segment, file);
        }
        self.files
            .get(&segment)
            .ok_or_else(|| io::Error::other("segment handle vanished"))
    }

    fn create(&mut self, segment: u32, segment_bytes_max: u32) -> io::Result<()> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(segment_path(&self.dir, segment))?;
        let bytes = u64::from(segment_bytes_max);
        match self.preallocation {
            Preallocation::None => {}
            Preallocation::Fallocate => {
                rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, bytes)?;
            }
            Preallocation::ZeroFill => {
                let zeroes = vec![0u8; ZERO_FILL_CHUNK_BYTES.min(segment_bytes_max as usize)];
                let mut at = 0u64;
                while at < bytes {
                    let left = usize::try_from(bytes - at).unwrap_or(usize::MAX);
                    let chunk = zeroes.get(..left.min(zeroes.len())).unwrap_or_default();
                    file.write_all_at(chunk, at)?;
                    at += chunk.len() as u64;
                }
            }
        }
        file.sync_all()?;
        self.dir_handle.sync_all()?;
        // Only the newest segment is written from now on.
        self.files.retain(|&s, _| s > segment);
        self.files.insert(segment, file);
        Ok(())
    }

    fn delete(&mut self, segment: u32) -> io::Result<()> {
        self.files.remove(&segment);
        fs::remove_file(segment_path(&self.dir, segment))?;
        self.dir_handle.sync_all()
    }
}

impl IoDriver for FileDriver {
    fn execute(&mut self, request: &IoRequest) -> Result<(), IoFailure> {
        let result = match request {
            IoRequest::CreateSegment {
                segment,
                segment_bytes_max,
                ..
            } => self.create(*segment, *segment_bytes_max),
            IoRequest::Write {
                segment,
                offset,
                bytes,
                ..
            } => self
                .file(*segment)
                .and_then(|file| file.write_all_at(bytes, u64::from(*offset))),
            IoRequest::Sync { segment, .. } => self.file(*segment).and_then(File::sync_data),
            IoRequest::DeleteSegment { segment, .. } => self.delete(*segment),
        };
        result.map_err(IoFailure::from)
    }
}

/// Which calls a `FaultyDriver` fails (1-based counts per kind of request).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultPlan {
    /// Fail the Nth write without writing anything.
    pub fail_write_nth: Option<u64>,
    /// Fail the Nth sync (the data may or may not be on disk).
    pub fail_sync_nth: Option<u64>,
    /// Fail the Nth segment creation.
    pub fail_create_nth: Option<u64>,
    /// Write only the first `keep_bytes` of the Nth write, then fail it.
    pub tear_write_nth: Option<(u64, usize)>,
}

/// Wraps a driver and injects the failures of a `FaultPlan`.
#[derive(Debug)]
pub struct FaultyDriver<D> {
    inner: D,
    plan: FaultPlan,
    writes: u64,
    syncs: u64,
    creates: u64,
    faults_injected: u64,
}

impl<D: IoDriver> FaultyDriver<D> {
    pub fn new(inner: D, plan: FaultPlan) -> Self {
        Self {
            inner,
            plan,
            writes: 0,
            syncs: 0,
            creates: 0,
            faults_injected: 0,
        }
    }

    pub fn faults_injected(&self) -> u64 {
        self.faults_injected
    }

    pub fn inner(&self) -> &D {
        &self.inner
    }

    pub fn into_inner(self) -> D {
        self.inner
    }

    fn inject(&mut self, what: &str) -> Result<(), IoFailure> {
        self.faults_injected += 1;
        Err(IoFailure::injected(what))
    }
}

impl<D: IoDriver> IoDriver for FaultyDriver<D> {
    fn execute(&mut self, request: &IoRequest) -> Result<(), IoFailure> {
        match request {
            IoRequest::Write {
                id,
                segment,
                offset,
                bytes,
            } => {
                self.writes += 1;
                if self.plan.fail_write_nth == Some(self.writes) {
                    return self.inject("write");
                }
                if let Some((nth, keep_bytes)) = self.plan.tear_write_nth {
                    if nth == self.writes {
                        let torn = IoRequest::Write {
                            id: *id,
                            segment: *segment,
                            offset: *offset,
                            bytes: bytes.get(..keep_bytes).unwrap_or(bytes).to_vec(),
                        };
                        self.inner.execute(&torn)?;
                        return self.inject("torn write");
                    }
                }
            }
            IoRequest::Sync { .. } => {
                self.syncs += 1;
                if self.plan.fail_sync_nth == Some(self.syncs) {
                    return self.inject("fdatasync");
                }
            }
            IoRequest::CreateSegment { .. } => {
                self.creates += 1;
                if self.plan.fail_create_nth == Some(self.creates) {
                    return self.inject("create segment");
                }
            }
            IoRequest::DeleteSegment { .. } => {}
        }
        self.inner.execute(request)
    }
}

/// Options of `open_log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    pub writer: WriterOptions,
    /// Cut corrupt segments at the damage instead of refusing to start.
    pub repair: bool,
    pub preallocation: Preallocation,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            writer: WriterOptions::default(),
            repair: false,
            preallocation: Preallocation::Fallocate,
        }
    }
}

/// A record read back by `open_log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredRecord {
    pub lsn: Lsn,
    pub kind: u8,
    pub payload: Vec<u8>,
}

/// A torn tail cut off at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TruncatedTail {
    pub segment: u32,
    pub offset: u32,
    pub bytes: u64,
}

/// What `open_log` read and fixed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recovered {
    /// Every record, in order (empty from `open_log_with`, which visits them).
    pub records: Vec<RecoveredRecord>,
    pub summary: RecoverySummary,
    /// The torn tail of the last segment, if one was truncated.
    pub torn_tail_truncated: Option<TruncatedTail>,
    /// Segments cut at corruption because `repair` was set.
    pub repaired: Vec<SegmentReport>,
    /// Bytes of segment files read.
    pub bytes_read: u64,
}

/// A log ready to append to, with what recovery found.
#[derive(Debug)]
pub struct OpenedLog {
    pub writer: Writer,
    pub driver: FileDriver,
    pub recovered: Recovered,
}

/// Opens (creating if needed) the log in `dir`, recovers it, truncates a
/// torn tail, and returns a writer that continues in a new segment. Records
/// are collected into `recovered.records`.
pub fn open_log(dir: &Path, options: &LogOptions) -> Result<OpenedLog, LogError> {
    let mut records = Vec::new();
    let mut opened = open_log_with(dir, options, |lsn, record| {
        records.push(RecoveredRecord {
            lsn,
            kind: record.kind,
            payload: record.payload.to_vec(),
        })
    })?;
    opened.recovered.records = records;
    Ok(opened)
}

/// Like `open_log`, but hands each record to `visit` instead of keeping it.
pub fn open_log_with(
    dir: &Path,
    options: &LogOptions,
    mut visit: impl FnMut(Lsn, Record<'_>),
) -> Result<OpenedLog, LogError> {
    options.writer.validate()?;
    create_dir(dir)?;
    let recovery_options = RecoveryOptions {
        repair: options.repair,
        // Generous: a smaller batch setting than the one that wrote the log
        // must not turn its torn tail into "corruption".
        torn_bytes_max: options
            .writer
            .batch_bytes_max
            .max(BATCH_BYTES_MAX_DEFAULT)
            .max(RECORD_FRAME_BYTES_MAX),
    };
    let mut segments = list_segments(dir)?;
    let mut recovered = Recovered::default();
    let mut buffer = Vec::new();
    for (index, &segment) in segments.iter().enumerate() {
        let path = segment_path(dir, segment);
        buffer.clear();
        File::open(&path)
            .and_then(|mut file| file.read_to_end(&mut buffer))
            .map_err(io_error(FileOp::Read, &path))?;
        recovered.bytes_read += buffer.len() as u64;
        let is_last = index + 1 == segments.len();
        let mut scan = scan_segment(segment, &buffer, is_last, &recovery_options);
        let mut last = None;
        for (lsn, record) in &mut scan {
            visit(lsn, record);
            last = Some(lsn);
        }
        let records = scan.records();
        let end = scan.finish().map_err(|error| match error {
            LogError::Corrupt {
                segment,
                offset,
                reason,
                ..
            } => LogError::Corrupt {
                file: path.clone(),
                segment,
                offset,
                reason,
            },
            other => other,
        })?;
        let report = SegmentReport {
            segment,
            records,
            end,
        };
        recovered.summary.push(report, last);
        match end {
            SegmentEnd::TornTail { offset, bytes } => {
                tracing::warn!(
                    file = %path.display(),
                    offset,
                    bytes,
                    "log: torn tail (unfinished write at a crash) truncated"
                );
                truncate(&path, offset)?;
                recovered.torn_tail_truncated = Some(TruncatedTail {
                    segment,
                    offset,
                    bytes,
                });
            }
            SegmentEnd::Repaired {
                offset,
                bytes_dropped,
                records_dropped,
                reason,
            } => {
                tracing::error!(
                    file = %path.display(),
                    offset,
                    bytes_dropped,
                    records_dropped,
                    %reason,
                    "log: REPAIR cut a corrupt segment; records after the damage in it are lost"
                );
                truncate(&path, offset)?;
                recovered.repaired.push(report);
            }
            SegmentEnd::ZeroFill { offset, .. } if is_last => {
                // Unused preallocated space: the writer starts a new segment.
                truncate(&path, offset)?;
            }
            SegmentEnd::Clean { .. } | SegmentEnd::ZeroFill { .. } => {
                // A killed process leaves written pages in the page cache:
                // make them durable before anything read back is acted on.
                sync_file(&path)?;
            }
        }
    }
    // An empty last segment (created, then a crash before any record) is
    // removed and its number reused, so crash loops do not pile up segments.
    let mut first_segment = segments
        .last()
        .map_or(crate::segments::SEGMENT_ID_MIN, |s| s + 1);
    if let Some(last) = recovered.summary.segments.last() {
        if last.records == 0 && last.end.offset() == 0 {
            let path = segment_path(dir, last.segment);
            fs::remove_file(&path).map_err(io_error(FileOp::Remove, &path))?;
            first_segment = last.segment;
            segments.pop();
        }
    }
    sync_dir(dir)?;
    if first_segment > crate::segments::SEGMENT_ID_MAX {
        return Err(LogError::SegmentsExhausted {
            segment: first_segment,
        });
    }
    let writer = Writer::new(
        options.writer.clone(),
        WriterStart {
            first_segment,
            durable_lsn: recovered.summary.last_lsn,
            existing_segments: segments.clone(),
        },
    )?;
    let driver = FileDriver::new(dir, options.preallocation)?;
    tracing::info!(
        dir = %dir.display(),
        records = recovered.summary.records,
        segments = segments.len(),
        bytes_read = recovered.bytes_read,
        last_lsn = %recovered.summary.last_lsn,
        torn_tail = recovered.torn_tail_truncated.is_some(),
        repaired = recovered.repaired.len(),
        "log recovered"
    );
    Ok(OpenedLog {
        writer,
        driver,
        recovered,
    })
}

fn create_dir(dir: &Path) -> Result<(), LogError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(io_error(FileOp::CreateDir, dir))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(())
}

fn truncate(path: &Path, offset: u32) -> Result<(), LogError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error(FileOp::Open, path))?;
    file.set_len(u64::from(offset))
        .map_err(io_error(FileOp::Truncate, path))?;
    file.sync_all().map_err(io_error(FileOp::Sync, path))
}

fn sync_file(path: &Path) -> Result<(), LogError> {
    File::open(path)
        .and_then(|file| file.sync_data())
        .map_err(io_error(FileOp::Sync, path))
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error(FileOp::SyncDir, dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::IoOp;
    use crate::writer::{drive, Durability, RequestId};

    fn options() -> LogOptions {
        LogOptions {
            writer: WriterOptions {
                durability: Durability::Fsync,
                segment_bytes_max: 8 << 10,
                batch_bytes_max: 4 << 10,
                pending_bytes_max: 1 << 20,
            },
            repair: false,
            preallocation: Preallocation::None,
        }
    }

    #[test]
    fn driver_creates_writes_syncs_deletes() {
        for preallocation in [
            Preallocation::None,
            Preallocation::Fallocate,
            Preallocation::ZeroFill,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let mut driver = FileDriver::new(dir.path(), preallocation).unwrap();
            let create = IoRequest::CreateSegment {
                id: RequestId(1),
                segment: 1,
                segment_bytes_max: 1 << 16,
            };
            driver.execute(&create).unwrap();
            let expected_len = if preallocation == Preallocation::None {
                0
            } else {
                1 << 16
            };
            let path = segment_path(dir.path(), 1);
            assert_eq!(
                fs::metadata(&path).unwrap().len(),
                expected_len,
                "{preallocation:?}"
            );
            assert_eq!(
                driver.execute(&create).map_err(|f| f.kind),
                Err(io::ErrorKind::AlreadyExists),
                "never clobbers an existing segment"
            );
            let write = IoRequest::Write {
                id: RequestId(2),
                segment: 1,
                offset: 3,
                bytes: b"abc".to_vec(),
            };
            driver.execute(&write).unwrap();
            driver
                .execute(&IoRequest::Sync {
                    id: RequestId(3),
                    segment: 1,
                })
                .unwrap();
            assert_eq!(&fs::read(&path).unwrap()[..6], b"\0\0\0abc");
            driver
                .execute(&IoRequest::DeleteSegment {
                    id: RequestId(4),
                    segment: 1,
                })
                .unwrap();
            assert!(!path.exists());
            let sync_gone = IoRequest::Sync {
                id: RequestId(5),
                segment: 1,
            };
            assert_eq!(
                driver.execute(&sync_gone).map_err(|f| f.kind),
                Err(io::ErrorKind::NotFound)
            );
        }
    }

    #[test]
    fn open_append_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open_log(dir.path(), &options()).unwrap();
        assert!(log.recovered.records.is_empty());
        let a = log.writer.append(1, b"one").unwrap();
        let b = log.writer.append(2, b"two").unwrap();
        drive(&mut log.writer, &mut log.driver).unwrap();
        assert_eq!(log.writer.durable_lsn(), b);
        drop(log);
        let log = open_log(dir.path(), &options()).unwrap();
        let got: Vec<_> = log
            .recovered
            .records
            .iter()
            .map(|r| (r.lsn, r.kind, r.payload.clone()))
            .collect();
        assert_eq!(got, vec![(a, 1, b"one".to_vec()), (b, 2, b"two".to_vec())]);
        assert_eq!(log.writer.durable_lsn(), b);
        assert_eq!(
            log.writer.active_segment(),
            2,
            "a reopened log writes a new segment"
        );
    }

    #[test]
    fn faulty_driver_counts_and_tears() {
        let dir = tempfile::tempdir().unwrap();
        let inner = FileDriver::new(dir.path(), Preallocation::None).unwrap();
        let plan = FaultPlan {
            tear_write_nth: Some((2, 5)),
            ..FaultPlan::default()
        };
        let mut driver = FaultyDriver::new(inner, plan);
        let mut w = Writer::new(options().writer, WriterStart::empty()).unwrap();
        w.append(1, b"first").unwrap();
        drive(&mut w, &mut driver).unwrap();
        w.append(1, b"second").unwrap();
        let err = drive(&mut w, &mut driver).unwrap_err();
        assert!(
            matches!(err, LogError::Poisoned(ref c) if c.op == IoOp::Write),
            "{err:?}"
        );
        assert_eq!(driver.faults_injected(), 1);
        let len = fs::metadata(segment_path(dir.path(), 1)).unwrap().len();
        assert_eq!(len, 14 + 5, "the torn write left 5 bytes");
    }
}
