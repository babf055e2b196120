//! Sans-IO group-commit writer.
//!
//! The writer owns no file and reads no clock. `append` encodes a record into
//! memory and returns its `Lsn`; `poll_io` hands out the I/O to do;
//! `handle_io_done` reports how it went; `durable_lsn` says how far the
//! engine may ack.
//!
//! # Commits
//!
//! I/O goes out in *commits*: `[CreateSegment] Write Sync` (or a lone
//! `DeleteSegment`). One commit is in flight at a time. While its sync runs,
//! new appends accumulate, and the next commit takes all of them (up to
//! `batch_bytes_max`): under load one fdatasync covers many records, with no
//! timer. A commit never spans two segments; a record that does not fit in
//! the active segment opens the next one (`CreateSegment`) and the rest of the
//! old one stays zero or unwritten.
//!
//! # The driver contract
//!
//! The driver executes requests in the order `poll_io` returned them, each
//! one after the previous one has finished (a single blocking thread does
//! this naturally), and reports each with `handle_io_done`. It may take the
//! next request before reporting the previous one.
//!
//! # Poisoning
//!
//! Any failed request poisons the writer for good: `append` returns
//! `LogError::Poisoned`, `poll_io` returns `None`, and `durable_lsn` never
//! moves again. A failed fdatasync may have dropped dirty pages that a retry
//! would then report as clean ("fsyncgate"), so nothing is retried; the only
//! way forward is a restart that rereads the log.

use std::collections::{BTreeSet, VecDeque};

use crate::error::{
    InvalidOptions, InvalidRecord, IoFailure, IoOp, LogError, NotDeletable, PoisonCause,
};
use crate::record::{self, RECORD_HEADER_BYTES, RECORD_PAYLOAD_MAX};
use crate::segments::{Lsn, SEGMENT_ID_MAX, SEGMENT_ID_MIN};

/// Default size of a segment file (64 MiB).
pub const SEGMENT_BYTES_MAX_DEFAULT: u32 = 64 << 20;
/// Default bound on the bytes of one write + fdatasync (2 MiB).
pub const BATCH_BYTES_MAX_DEFAULT: usize = 2 << 20;
/// Default bound on appended bytes not yet durable (64 MiB).
pub const PENDING_BYTES_MAX_DEFAULT: usize = 64 << 20;
/// Spare batch buffers kept for reuse.
const SPARE_BUFFERS_MAX: usize = 2;

/// When a record counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Written, then `fdatasync`ed: survives power loss. The default.
    Fsync,
    /// Written to the page cache only, never synced, yet reported durable.
    /// Survives kill -9 of the process but NOT a power loss or kernel crash.
    /// For benchmarks only.
    UnsafeNoFsync,
}

/// Bounds and durability of a writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterOptions {
    pub durability: Durability,
    /// Size of a segment; a record that would cross it goes to the next one.
    pub segment_bytes_max: u32,
    /// Most bytes in one write + sync. Also the most bytes that can be
    /// written but not synced, which recovery uses to tell a torn tail from
    /// corruption.
    pub batch_bytes_max: usize,
    /// Most appended bytes not yet durable; `append` refuses beyond.
    pub pending_bytes_max: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Fsync,
            segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT,
            batch_bytes_max: BATCH_BYTES_MAX_DEFAULT,
            pending_bytes_max: PENDING_BYTES_MAX_DEFAULT,
        }
    }
}

impl WriterOptions {
    pub fn validate(&self) -> Result<(), LogError> {
        let record_min = RECORD_HEADER_BYTES + 1;
        if (self.segment_bytes_max as usize) < record_min {
            return Err(InvalidOptions::SegmentTooSmall {
                segment_bytes_max: self.segment_bytes_max,
            }
            .into());
        }
        if self.batch_bytes_max < record_min {
            return Err(InvalidOptions::BatchTooSmall {
                batch_bytes_max: self.batch_bytes_max,
            }
            .into());
        }
        if self.pending_bytes_max < self.batch_bytes_max {
            return Err(InvalidOptions::PendingTooSmall {
                pending_bytes_max: self.pending_bytes_max,
                batch_bytes_max: self.batch_bytes_max,
            }
            .into());
        }
        Ok(())
    }

    /// Largest payload these options take: a record must fit one segment and
    /// one batch.
    pub fn payload_bytes_max(&self) -> usize {
        let frame_max = (self.segment_bytes_max as usize).min(self.batch_bytes_max);
        frame_max
            .saturating_sub(RECORD_HEADER_BYTES)
            .min(RECORD_PAYLOAD_MAX)
    }
}

/// Where a writer starts. It always starts a fresh segment: recovered
/// segments are never appended to, so each keeps the prefix recovery checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterStart {
    /// The segment the writer creates first; above every existing one.
    pub first_segment: u32,
    /// The last record already on disk and synced (`Lsn::ZERO` if none).
    pub durable_lsn: Lsn,
    /// Segments already on disk, ascending (may be deleted later).
    pub existing_segments: Vec<u32>,
}

impl WriterStart {
    /// A log with no segment yet.
    pub fn empty() -> Self {
        Self {
            first_segment: SEGMENT_ID_MIN,
            durable_lsn: Lsn::ZERO,
            existing_segments: Vec::new(),
        }
    }
}

/// Identifies one request from `poll_io` until `handle_io_done`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// I/O for the driver to perform.
#[derive(Debug, PartialEq, Eq)]
pub enum IoRequest {
    /// Create the segment file (it does not exist), optionally preallocate
    /// `segment_bytes_max`, make the file and its directory entry durable.
    CreateSegment {
        id: RequestId,
        segment: u32,
        segment_bytes_max: u32,
    },
    /// Write all of `bytes` at `offset` in the segment.
    Write {
        id: RequestId,
        segment: u32,
        offset: u32,
        bytes: Vec<u8>,
    },
    /// `fdatasync` the segment.
    Sync { id: RequestId, segment: u32 },
    /// Remove the segment file and make the removal durable.
    DeleteSegment { id: RequestId, segment: u32 },
}

impl IoRequest {
    pub fn id(&self) -> RequestId {
        match self {
            Self::CreateSegment { id, .. }
            | Self::Write { id, .. }
            | Self::Sync { id, .. }
            | Self::DeleteSegment { id, .. } => *id,
        }
    }

    pub fn segment(&self) -> u32 {
        match self {
            Self::CreateSegment { segment, .. }
            | Self::Write { segment, .. }
            | Self::Sync { segment, .. }
            | Self::DeleteSegment { segment, .. } => *segment,
        }
    }

    pub fn op(&self) -> IoOp {
        match self {
            Self::CreateSegment { .. } => IoOp::CreateSegment,
            Self::Write { .. } => IoOp::Write,
            Self::Sync { .. } => IoOp::Sync,
            Self::DeleteSegment { .. } => IoOp::DeleteSegment,
        }
    }

    /// The write buffer, to hand back with `Writer::recycle`.
    pub fn into_bytes(self) -> Option<Vec<u8>> {
        match self {
            Self::Write { bytes, .. } => Some(bytes),
            _ => None,
        }
    }
}

/// Executes requests; see the driver contract in the module docs.
pub trait IoDriver {
    fn execute(&mut self, request: &IoRequest) -> Result<(), IoFailure>;
}

/// Runs requests on a blocking driver until the writer has nothing to do.
/// Returns how many requests ran, or `Poisoned` if one failed.
pub fn drive<D: IoDriver + ?Sized>(writer: &mut Writer, driver: &mut D) -> Result<usize, LogError> {
    let mut executed = 0usize;
    while let Some(request) = writer.poll_io() {
        let result = driver.execute(&request);
        executed += 1;
        let id = request.id();
        if let Some(bytes) = request.into_bytes() {
            writer.recycle(bytes);
        }
        writer.handle_io_done(id, result)?;
    }
    match writer.poison_cause() {
        Some(cause) => Err(LogError::Poisoned(cause.clone())),
        None => Ok(executed),
    }
}

/// Counters, for metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    pub records_appended: u64,
    pub bytes_appended: u64,
    pub records_durable: u64,
    pub bytes_durable: u64,
    pub writes_done: u64,
    pub syncs_done: u64,
    pub segments_created: u64,
    pub segments_deleted: u64,
    pub backpressure_refusals: u64,
}

#[derive(Debug)]
struct Chunk {
    segment: u32,
    offset: u32,
    bytes: Vec<u8>,
    records: u64,
    last_lsn: Lsn,
}

#[derive(Debug)]
enum Op {
    Create { segment: u32 },
    Data(Chunk),
    Delete { segment: u32 },
}

#[derive(Debug, Default)]
struct Commit {
    to_emit: VecDeque<IoRequest>,
    in_flight: Vec<(RequestId, IoOp, u32)>,
    /// Set when the commit carries records: they become durable with it.
    durable_lsn_after: Option<Lsn>,
    records: u64,
    bytes: usize,
    creates: bool,
    deletes: bool,
}

/// The group-commit state machine. See the module docs.
#[derive(Debug)]
pub struct Writer {
    options: WriterOptions,
    payload_bytes_max: usize,
    /// Closed work, in order, not yet part of a commit.
    ops: VecDeque<Op>,
    /// The open batch taking appends; always after everything in `ops`.
    tail: Option<Chunk>,
    commit: Option<Commit>,
    request_id_next: u64,
    append_segment: u32,
    append_offset: u32,
    last_lsn: Lsn,
    durable_lsn: Lsn,
    /// Appended bytes not yet durable (queued, open or in flight).
    pending_bytes: usize,
    live_segments: BTreeSet<u32>,
    spare_buffers: Vec<Vec<u8>>,
    poisoned: Option<PoisonCause>,
    stats: WriterStats,
}

impl Writer {
    pub fn new(options: WriterOptions, start: WriterStart) -> Result<Self, LogError> {
        options.validate()?;
        let first = start.first_segment;
        if !(SEGMENT_ID_MIN..=SEGMENT_ID_MAX).contains(&first) {
            return Err(InvalidOptions::SegmentOutOfRange { segment: first }.into());
        }
        let mut live_segments = BTreeSet::new();
        let mut previous = 0u32;
        for &segment in &start.existing_segments {
            if segment <= previous || segment >= first {
                return Err(InvalidOptions::SegmentsNotAscending { segment }.into());
            }
            previous = segment;
            live_segments.insert(segment);
        }
        if start.durable_lsn.segment >= first {
            return Err(InvalidOptions::SegmentsNotAscending {
                segment: start.durable_lsn.segment,
            }
            .into());
        }
        live_segments.insert(first);
        let payload_bytes_max = options.payload_bytes_max();
        let mut ops = VecDeque::new();
        ops.push_back(Op::Create { segment: first });
        Ok(Self {
            options,
            payload_bytes_max,
            ops,
            tail: None,
            commit: None,
            request_id_next: 1,
            append_segment: first,
            append_offset: 0,
            last_lsn: start.durable_lsn,
            durable_lsn: start.durable_lsn,
            pending_bytes: 0,
            live_segments,
            spare_buffers: Vec::new(),
            poisoned: None,
            stats: WriterStats::default(),
        })
    }

    /// Buffers a record and returns its position. It is durable once
    /// `durable_lsn() >= ` that position.
    pub fn append(&mut self, kind: u8, payload: &[u8]) -> Result<Lsn, LogError> {
        if let Some(cause) = &self.poisoned {
            return Err(LogError::Poisoned(cause.clone()));
        }
        record::validate(kind, payload.len())?;
        if payload.len() > self.payload_bytes_max {
            return Err(InvalidRecord::PayloadTooLarge {
                payload_bytes: payload.len(),
                payload_bytes_max: self.payload_bytes_max,
            }
            .into());
        }
        let record_bytes = record::frame_bytes(payload.len());
        if self.pending_bytes + record_bytes > self.options.pending_bytes_max {
            self.stats.backpressure_refusals += 1;
            return Err(LogError::Backpressure {
                pending_bytes: self.pending_bytes,
                record_bytes,
                pending_bytes_max: self.options.pending_bytes_max,
            });
        }
        // Roll over to a new segment if the record does not fit.
        if u64::from(self.append_offset) + record_bytes as u64
            > u64::from(self.options.segment_bytes_max)
        {
            let next = self.append_segment + 1;
            if next > SEGMENT_ID_MAX {
                return Err(LogError::SegmentsExhausted { segment: next });
            }
            self.seal_tail();
            self.ops.push_back(Op::Create { segment: next });
            self.live_segments.insert(next);
            self.append_segment = next;
            self.append_offset = 0;
        }
        if let Some(tail) = &self.tail {
            if tail.bytes.len() + record_bytes > self.options.batch_bytes_max {
                self.seal_tail();
            }
        }
        let lsn = Lsn::new(self.append_segment, self.append_offset);
        let (segment, offset) = (self.append_segment, self.append_offset);
        let spare = &mut self.spare_buffers;
        let tail = self.tail.get_or_insert_with(|| Chunk {
            segment,
            offset,
            bytes: spare.pop().unwrap_or_default(),
            records: 0,
            last_lsn: lsn,
        });
        assert_eq!(
            tail.segment, segment,
            "the open batch is in the append segment"
        );
        let written = record::encode(kind, payload, &mut tail.bytes)?;
        assert_eq!(written, record_bytes);
        assert!(tail.bytes.len() <= self.options.batch_bytes_max);
        tail.records += 1;
        tail.last_lsn = lsn;
        // Checked above: offset + record_bytes <= segment_bytes_max (a u32).
        self.append_offset = u32::try_from(u64::from(self.append_offset) + record_bytes as u64)
            .unwrap_or(self.options.segment_bytes_max);
        assert!(lsn > self.last_lsn, "LSNs strictly increase");
        self.last_lsn = lsn;
        self.pending_bytes += record_bytes;
        self.stats.records_appended += 1;
        self.stats.bytes_appended += record_bytes as u64;
        Ok(lsn)
    }

    /// The next request to execute, if any. See the driver contract.
    pub fn poll_io(&mut self) -> Option<IoRequest> {
        if self.poisoned.is_some() {
            return None;
        }
        if self.commit.is_none() {
            self.commit = self.next_commit();
        }
        let commit = self.commit.as_mut()?;
        let request = commit.to_emit.pop_front()?;
        commit
            .in_flight
            .push((request.id(), request.op(), request.segment()));
        Some(request)
    }

    /// Reports the outcome of a request from `poll_io`. A failure poisons the
    /// writer. Errors only for an id that is not in flight.
    pub fn handle_io_done(
        &mut self,
        id: RequestId,
        result: Result<(), IoFailure>,
    ) -> Result<(), LogError> {
        let Some(commit) = self.commit.as_mut() else {
            return Err(LogError::UnknownRequest { id });
        };
        let Some(index) = commit.in_flight.iter().position(|(rid, ..)| *rid == id) else {
            return Err(LogError::UnknownRequest { id });
        };
        let (_, op, segment) = commit.in_flight.remove(index);
        if self.poisoned.is_some() {
            return Ok(()); // Late completions after poisoning change nothing.
        }
        if let Err(failure) = result {
            tracing::error!(
                ?op,
                segment,
                error = %failure,
                durable_lsn = %self.durable_lsn,
                "log I/O failed: log poisoned, no further acks, no retry; restart to recover"
            );
            commit.to_emit.clear();
            self.poisoned = Some(PoisonCause {
                op,
                segment,
                failure,
            });
            return Ok(());
        }
        match op {
            IoOp::Write => self.stats.writes_done += 1,
            IoOp::Sync => self.stats.syncs_done += 1,
            IoOp::CreateSegment => self.stats.segments_created += 1,
            IoOp::DeleteSegment => self.stats.segments_deleted += 1,
        }
        if commit.in_flight.is_empty() && commit.to_emit.is_empty() {
            self.finish_commit();
        }
        Ok(())
    }

    /// Every record at or below this position is written and synced (or
    /// written, under `UnsafeNoFsync`). Never moves after poisoning.
    pub fn durable_lsn(&self) -> Lsn {
        self.durable_lsn
    }

    /// The last record appended (`durable_lsn` at start if none yet).
    pub fn last_lsn(&self) -> Lsn {
        self.last_lsn
    }

    /// Appended bytes not yet durable.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// True when everything appended is durable and nothing is in flight.
    pub fn is_idle(&self) -> bool {
        self.ops.is_empty() && self.tail.is_none() && self.commit.is_none()
    }

    pub fn poison_cause(&self) -> Option<&PoisonCause> {
        self.poisoned.as_ref()
    }

    pub fn stats(&self) -> WriterStats {
        self.stats
    }

    pub fn options(&self) -> &WriterOptions {
        &self.options
    }

    /// Largest payload `append` takes with these options.
    pub fn payload_bytes_max(&self) -> usize {
        self.payload_bytes_max
    }

    /// The segment appends go to.
    pub fn active_segment(&self) -> u32 {
        self.append_segment
    }

    /// Segments on disk or being created, not being deleted, ascending.
    pub fn live_segments(&self) -> impl Iterator<Item = u32> + '_ {
        self.live_segments.iter().copied()
    }

    /// Queues the deletion of an old segment (reclaim). It runs after the
    /// I/O queued before it.
    pub fn delete_segment(&mut self, segment: u32) -> Result<(), LogError> {
        if let Some(cause) = &self.poisoned {
            return Err(LogError::Poisoned(cause.clone()));
        }
        if segment == self.append_segment {
            return Err(LogError::SegmentNotDeletable {
                segment,
                reason: NotDeletable::Active,
            });
        }
        if !self.live_segments.remove(&segment) {
            return Err(LogError::SegmentNotDeletable {
                segment,
                reason: NotDeletable::NotLive,
            });
        }
        assert!(segment < self.append_segment);
        self.ops.push_back(Op::Delete { segment });
        Ok(())
    }

    /// Hands a write buffer back for reuse.
    pub fn recycle(&mut self, mut bytes: Vec<u8>) {
        if self.spare_buffers.len() < SPARE_BUFFERS_MAX
            && bytes.capacity() <= self.options.batch_bytes_max.saturating_mul(2)
        {
            bytes.clear();
            self.spare_buffers.push(bytes);
        }
    }

    fn seal_tail(&mut self) {
        if let Some(tail) = self.tail.take() {
            self.ops.push_back(Op::Data(tail));
        }
    }

    fn next_op(&mut self) -> Option<Op> {
        self.ops
            .pop_front()
            .or_else(|| self.tail.take().map(Op::Data))
    }

    fn take_data_for(&mut self, segment: u32) -> Option<Chunk> {
        match self.ops.front() {
            Some(Op::Data(chunk)) if chunk.segment == segment => match self.ops.pop_front() {
                Some(Op::Data(chunk)) => Some(chunk),
                _ => None,
            },
            Some(_) => None,
            None if self.tail.as_ref().is_some_and(|t| t.segment == segment) => self.tail.take(),
            None => None,
        }
    }

    fn request_id(&mut self) -> RequestId {
        let id = RequestId(self.request_id_next);
        self.request_id_next += 1;
        id
    }

    fn next_commit(&mut self) -> Option<Commit> {
        let mut commit = Commit::default();
        let data = match self.next_op()? {
            Op::Delete { segment } => {
                let id = self.request_id();
                commit
                    .to_emit
                    .push_back(IoRequest::DeleteSegment { id, segment });
                commit.deletes = true;
                return Some(commit);
            }
            Op::Create { segment } => {
                let id = self.request_id();
                commit.to_emit.push_back(IoRequest::CreateSegment {
                    id,
                    segment,
                    segment_bytes_max: self.options.segment_bytes_max,
                });
                commit.creates = true;
                match self.take_data_for(segment) {
                    Some(chunk) => chunk,
                    None => return Some(commit),
                }
            }
            Op::Data(chunk) => chunk,
        };
        assert!(!data.bytes.is_empty() && data.records > 0);
        assert!(data.last_lsn > self.durable_lsn);
        commit.durable_lsn_after = Some(data.last_lsn);
        commit.records = data.records;
        commit.bytes = data.bytes.len();
        let segment = data.segment;
        let id = self.request_id();
        commit.to_emit.push_back(IoRequest::Write {
            id,
            segment,
            offset: data.offset,
            bytes: data.bytes,
        });
        if self.options.durability == Durability::Fsync {
            let id = self.request_id();
            commit.to_emit.push_back(IoRequest::Sync { id, segment });
        }
        Some(commit)
    }

    fn finish_commit(&mut self) {
        let Some(commit) = self.commit.take() else {
            return;
        };
        assert!(commit.in_flight.is_empty() && commit.to_emit.is_empty());
        if let Some(lsn) = commit.durable_lsn_after {
            assert!(lsn > self.durable_lsn, "durable_lsn only moves forward");
            assert!(lsn <= self.last_lsn);
            assert!(commit.bytes <= self.pending_bytes);
            self.durable_lsn = lsn;
            self.pending_bytes -= commit.bytes;
            self.stats.records_durable += commit.records;
            self.stats.bytes_durable += commit.bytes as u64;
        }
        debug_assert!(!(commit.creates && commit.deletes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_options() -> WriterOptions {
        WriterOptions {
            durability: Durability::Fsync,
            segment_bytes_max: 1024,
            batch_bytes_max: 256,
            pending_bytes_max: 4096,
        }
    }

    fn writer(options: WriterOptions) -> Writer {
        Writer::new(options, WriterStart::empty()).unwrap()
    }

    /// Completes every request successfully; returns them (without bytes).
    fn run_all(w: &mut Writer) -> Vec<(IoOp, u32, usize)> {
        let mut seen = Vec::new();
        while let Some(req) = w.poll_io() {
            let len = match &req {
                IoRequest::Write { bytes, .. } => bytes.len(),
                _ => 0,
            };
            seen.push((req.op(), req.segment(), len));
            w.handle_io_done(req.id(), Ok(())).unwrap();
        }
        seen
    }

    #[test]
    fn first_request_creates_the_first_segment() {
        let mut w = writer(small_options());
        assert_eq!(
            w.poll_io(),
            Some(IoRequest::CreateSegment {
                id: RequestId(1),
                segment: 1,
                segment_bytes_max: 1024
            })
        );
        assert_eq!(w.poll_io(), None, "one commit at a time");
        w.handle_io_done(RequestId(1), Ok(())).unwrap();
        assert!(w.is_idle());
        assert_eq!(w.durable_lsn(), Lsn::ZERO);
    }

    #[test]
    fn append_write_sync_then_durable() {
        let mut w = writer(small_options());
        let lsn = w.append(1, b"hello").unwrap();
        assert_eq!(lsn, Lsn::new(1, 0));
        let create = w.poll_io().unwrap();
        assert_eq!(create.op(), IoOp::CreateSegment);
        let write = w.poll_io().unwrap();
        let sync = w.poll_io().unwrap();
        assert_eq!(w.poll_io(), None);
        match &write {
            IoRequest::Write {
                segment,
                offset,
                bytes,
                ..
            } => {
                assert_eq!((*segment, *offset), (1, 0));
                assert_eq!(bytes.len(), 14);
                assert!(
                    matches!(record::decode(bytes), record::Decoded::Complete { record, .. } if record.payload == b"hello")
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(sync.op(), IoOp::Sync);
        w.handle_io_done(create.id(), Ok(())).unwrap();
        w.handle_io_done(write.id(), Ok(())).unwrap();
        assert_eq!(
            w.durable_lsn(),
            Lsn::ZERO,
            "written but not synced is not durable"
        );
        w.handle_io_done(sync.id(), Ok(())).unwrap();
        assert_eq!(w.durable_lsn(), lsn);
        assert_eq!(w.pending_bytes(), 0);
        assert!(w.is_idle());
    }

    #[test]
    fn group_commit_accumulates_while_sync_in_flight() {
        let mut w = writer(WriterOptions {
            batch_bytes_max: 64 << 10,
            segment_bytes_max: 1 << 20,
            pending_bytes_max: 1 << 20,
            ..small_options()
        });
        run_all(&mut w);
        let first = w.append(1, &[7; 200]).unwrap();
        let write = w.poll_io().unwrap();
        let sync = w.poll_io().unwrap();
        let mut last = first;
        for _ in 0..100 {
            last = w.append(1, &[8; 200]).unwrap();
        }
        assert_eq!(
            w.poll_io(),
            None,
            "nothing new goes out while the sync runs"
        );
        w.handle_io_done(write.id(), Ok(())).unwrap();
        w.handle_io_done(sync.id(), Ok(())).unwrap();
        assert_eq!(w.durable_lsn(), first);
        let batch = run_all(&mut w);
        assert_eq!(
            batch,
            vec![(IoOp::Write, 1, 100 * 209), (IoOp::Sync, 1, 0)],
            "the 100 records share one write and one sync"
        );
        assert_eq!(w.durable_lsn(), last);
        assert_eq!(w.stats().syncs_done, 2);
        assert_eq!(w.stats().records_durable, 101);
    }

    #[test]
    fn batches_bounded_by_batch_bytes_max() {
        let mut w = writer(small_options()); // batch 256: 2 records of 109 bytes
        for _ in 0..5 {
            w.append(3, &[1; 100]).unwrap();
        }
        let ops = run_all(&mut w);
        let writes: Vec<usize> = ops
            .iter()
            .filter(|(op, ..)| *op == IoOp::Write)
            .map(|(.., len)| *len)
            .collect();
        assert_eq!(writes, vec![218, 218, 109]);
        assert!(writes.iter().all(|&len| len <= 256));
        assert_eq!(ops.iter().filter(|(op, ..)| *op == IoOp::Sync).count(), 3);
        assert_eq!(w.durable_lsn(), Lsn::new(1, 4 * 109));
    }

    #[test]
    fn records_never_straddle_segments() {
        let mut w = writer(WriterOptions {
            segment_bytes_max: 300,
            batch_bytes_max: 300,
            pending_bytes_max: 4096,
            ..small_options()
        });
        let lsns: Vec<Lsn> = (0..5).map(|_| w.append(2, &[0; 100]).unwrap()).collect();
        // 109-byte frames: two fit in 300 bytes, the third rolls over.
        assert_eq!(
            lsns,
            vec![
                Lsn::new(1, 0),
                Lsn::new(1, 109),
                Lsn::new(2, 0),
                Lsn::new(2, 109),
                Lsn::new(3, 0)
            ]
        );
        let ops = run_all(&mut w);
        assert_eq!(
            ops,
            vec![
                (IoOp::CreateSegment, 1, 0),
                (IoOp::Write, 1, 218),
                (IoOp::Sync, 1, 0),
                (IoOp::CreateSegment, 2, 0),
                (IoOp::Write, 2, 218),
                (IoOp::Sync, 2, 0),
                (IoOp::CreateSegment, 3, 0),
                (IoOp::Write, 3, 109),
                (IoOp::Sync, 3, 0),
            ]
        );
        assert_eq!(w.durable_lsn(), Lsn::new(3, 0));
        assert_eq!(w.live_segments().collect::<Vec<_>>(), vec![1, 2, 3]);
    }

    #[test]
    fn backpressure_at_pending_bytes_max() {
        let mut w = writer(WriterOptions {
            pending_bytes_max: 256,
            ..small_options()
        });
        w.append(1, &[0; 100]).unwrap();
        w.append(1, &[0; 100]).unwrap(); // 218 pending
        let refused = w.append(1, &[0; 100]);
        assert_eq!(
            refused,
            Err(LogError::Backpressure {
                pending_bytes: 218,
                record_bytes: 109,
                pending_bytes_max: 256
            })
        );
        assert_eq!(
            w.append(1, &[0; 29]).map(|l| l.offset),
            Ok(218),
            "exactly at the bound fits"
        );
        assert_eq!(w.pending_bytes(), 256);
        run_all(&mut w);
        assert_eq!(w.pending_bytes(), 0);
        w.append(1, &[0; 100]).unwrap();
        assert_eq!(w.stats().backpressure_refusals, 1);
    }

    #[test]
    fn invalid_records_refused() {
        let mut w = writer(small_options());
        assert_eq!(
            w.append(0, b"x"),
            Err(LogError::InvalidRecord(InvalidRecord::KindReserved))
        );
        let max = w.payload_bytes_max();
        assert_eq!(max, 256 - RECORD_HEADER_BYTES);
        assert!(w.append(1, &vec![0; max]).is_ok());
        assert_eq!(
            w.append(1, &vec![0; max + 1]),
            Err(LogError::InvalidRecord(InvalidRecord::PayloadTooLarge {
                payload_bytes: max + 1,
                payload_bytes_max: max
            }))
        );
    }

    #[test]
    fn options_validated() {
        let bad = [
            WriterOptions {
                segment_bytes_max: 9,
                ..small_options()
            },
            WriterOptions {
                batch_bytes_max: 5,
                ..small_options()
            },
            WriterOptions {
                pending_bytes_max: 100,
                ..small_options()
            },
        ];
        for options in bad {
            assert!(matches!(
                Writer::new(options, WriterStart::empty()),
                Err(LogError::InvalidOptions(_))
            ));
        }
        let start = WriterStart {
            first_segment: 3,
            durable_lsn: Lsn::new(2, 5),
            existing_segments: vec![2, 1],
        };
        assert!(matches!(
            Writer::new(small_options(), start),
            Err(LogError::InvalidOptions(
                InvalidOptions::SegmentsNotAscending { segment: 1 }
            ))
        ));
        let zero = WriterStart {
            first_segment: 0,
            ..WriterStart::empty()
        };
        assert!(Writer::new(small_options(), zero).is_err());
        assert!(WriterOptions::default().validate().is_ok());
        assert_eq!(
            WriterOptions::default().payload_bytes_max(),
            RECORD_PAYLOAD_MAX
        );
    }

    #[test]
    fn failed_sync_poisons_forever() {
        let mut w = writer(small_options());
        run_all(&mut w);
        let good = w.append(1, b"good").unwrap();
        run_all(&mut w);
        assert_eq!(w.durable_lsn(), good);
        w.append(1, b"doomed").unwrap();
        let write = w.poll_io().unwrap();
        let sync = w.poll_io().unwrap();
        w.handle_io_done(write.id(), Ok(())).unwrap();
        w.handle_io_done(sync.id(), Err(IoFailure::injected("sync")))
            .unwrap();
        let cause = w.poison_cause().unwrap().clone();
        assert_eq!((cause.op, cause.segment), (IoOp::Sync, 1));
        assert_eq!(w.durable_lsn(), good, "the failed sync acks nothing");
        assert_eq!(w.poll_io(), None, "no retry");
        assert_eq!(w.append(1, b"more"), Err(LogError::Poisoned(cause.clone())));
        assert_eq!(w.delete_segment(1), Err(LogError::Poisoned(cause)));
        assert_eq!(w.durable_lsn(), good);
    }

    #[test]
    fn failed_write_poisons_and_late_sync_success_is_ignored() {
        let mut w = writer(small_options());
        w.append(1, b"a").unwrap();
        let create = w.poll_io().unwrap();
        let write = w.poll_io().unwrap();
        let sync = w.poll_io().unwrap();
        w.handle_io_done(create.id(), Ok(())).unwrap();
        w.handle_io_done(write.id(), Err(IoFailure::injected("write")))
            .unwrap();
        // The driver ran the queued sync anyway and it succeeded.
        w.handle_io_done(sync.id(), Ok(())).unwrap();
        assert_eq!(w.durable_lsn(), Lsn::ZERO);
        assert_eq!(w.poison_cause().map(|c| c.op), Some(IoOp::Write));
        assert!(matches!(w.append(1, b"b"), Err(LogError::Poisoned(_))));
    }

    #[test]
    fn failed_create_poisons() {
        let mut w = writer(small_options());
        let create = w.poll_io().unwrap();
        w.handle_io_done(create.id(), Err(IoFailure::injected("create")))
            .unwrap();
        assert!(matches!(w.append(1, b"x"), Err(LogError::Poisoned(_))));
        assert_eq!(w.poll_io(), None);
    }

    #[test]
    fn unknown_request_id_is_an_error() {
        let mut w = writer(small_options());
        assert_eq!(
            w.handle_io_done(RequestId(99), Ok(())),
            Err(LogError::UnknownRequest { id: RequestId(99) })
        );
        let create = w.poll_io().unwrap();
        w.handle_io_done(create.id(), Ok(())).unwrap();
        assert!(
            w.handle_io_done(create.id(), Ok(())).is_err(),
            "reported twice"
        );
    }

    #[test]
    fn unsafe_no_fsync_never_syncs() {
        let mut w = writer(WriterOptions {
            durability: Durability::UnsafeNoFsync,
            ..small_options()
        });
        let lsn = w.append(1, b"fast").unwrap();
        let ops = run_all(&mut w);
        assert_eq!(ops, vec![(IoOp::CreateSegment, 1, 0), (IoOp::Write, 1, 13)]);
        assert_eq!(w.durable_lsn(), lsn);
        assert_eq!(w.stats().syncs_done, 0);
    }

    #[test]
    fn delete_segment_rules() {
        let mut w = writer(WriterOptions {
            segment_bytes_max: 120,
            batch_bytes_max: 120,
            ..small_options()
        });
        for _ in 0..3 {
            w.append(1, &[0; 100]).unwrap(); // one record per segment
        }
        assert_eq!(w.active_segment(), 3);
        assert_eq!(
            w.delete_segment(3),
            Err(LogError::SegmentNotDeletable {
                segment: 3,
                reason: NotDeletable::Active
            })
        );
        assert_eq!(
            w.delete_segment(7),
            Err(LogError::SegmentNotDeletable {
                segment: 7,
                reason: NotDeletable::NotLive
            })
        );
        w.delete_segment(1).unwrap();
        assert!(w.delete_segment(1).is_err(), "deleted twice");
        let ops = run_all(&mut w);
        let delete_at = ops
            .iter()
            .position(|(op, ..)| *op == IoOp::DeleteSegment)
            .unwrap();
        let last_write_1 = ops
            .iter()
            .rposition(|(op, seg, _)| *op == IoOp::Write && *seg == 1)
            .unwrap();
        assert!(delete_at > last_write_1, "deletion runs after earlier I/O");
        assert_eq!(w.live_segments().collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(w.stats().segments_deleted, 1);
    }

    #[test]
    fn existing_segments_are_deletable_and_lsns_continue() {
        let start = WriterStart {
            first_segment: 5,
            durable_lsn: Lsn::new(4, 900),
            existing_segments: vec![2, 4],
        };
        let mut w = Writer::new(small_options(), start).unwrap();
        assert_eq!(w.durable_lsn(), Lsn::new(4, 900));
        assert_eq!(w.append(1, b"x").unwrap(), Lsn::new(5, 0));
        w.delete_segment(2).unwrap();
        w.delete_segment(4).unwrap();
        run_all(&mut w);
        assert_eq!(w.live_segments().collect::<Vec<_>>(), vec![5]);
    }

    #[test]
    fn buffers_are_recycled() {
        let mut w = writer(small_options());
        run_all(&mut w);
        w.append(1, &[0; 100]).unwrap();
        let write = w.poll_io().unwrap();
        let sync = w.poll_io().unwrap();
        let id = write.id();
        let bytes = write.into_bytes().unwrap();
        let capacity = bytes.capacity();
        w.recycle(bytes);
        w.handle_io_done(id, Ok(())).unwrap();
        w.handle_io_done(sync.id(), Ok(())).unwrap();
        w.append(1, &[0; 10]).unwrap();
        let write = w.poll_io().unwrap();
        let bytes = write.into_bytes().unwrap();
        assert_eq!(bytes.len(), 19);
        assert_eq!(bytes.capacity(), capacity, "the recycled buffer was reused");
    }

    #[test]
    fn segment_numbers_run_out_cleanly() {
        let start = WriterStart {
            first_segment: SEGMENT_ID_MAX,
            ..WriterStart::empty()
        };
        let mut w = Writer::new(
            WriterOptions {
                segment_bytes_max: 120,
                batch_bytes_max: 120,
                ..small_options()
            },
            start,
        )
        .unwrap();
        w.append(1, &[0; 100]).unwrap();
        assert_eq!(
            w.append(1, &[0; 100]),
            Err(LogError::SegmentsExhausted {
                segment: SEGMENT_ID_MAX + 1
            })
        );
    }
}
