//! The shard's log in the runtime: recovery at start, and the group-commit
//! writer's I/O.
//!
//! `tern-log`'s `Writer` is a sans-IO state machine; this module feeds it
//! the core's `Action::Append` records and runs the file I/O it asks for on
//! glommio's blocking pool (the file driver blocks in `pwrite` and
//! `fdatasync`, never on the executor thread). One request runs at a time;
//! while an fdatasync is in flight new appends pile up and go out together
//! in the next batch: that is the group commit. When the durable position
//! moves, the core hears `handle_durable(seq)` for the last record at or
//! below it and releases the answers it held back.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::path::Path;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Instant;

use tern_core::record::Record;
use tern_core::shard::Shard;
use tern_core::user::UserId;
use tern_log::{FileDriver, IoDriver, IoRequest, LogOptions, Lsn, SegmentReader, Writer};

use super::shard::{drain_actions, RtRef};
use crate::clock::now_ms;
use crate::error::EngineError;
use crate::sms::SmsGateway;

/// Appended bytes waiting for disk above which new stores are refused
/// (`Shard::set_log_backpressure`): this fraction of the writer's hard
/// bound `pending_bytes_max`, so acks and receipts, which are never
/// refused, still have room below the bound.
const BACKPRESSURE_ON_DIVISOR: usize = 2;
/// ... and below which they are taken again (hysteresis).
const BACKPRESSURE_OFF_DIVISOR: usize = 4;

/// A shard's open log.
#[derive(Debug)]
pub(crate) struct ShardLog {
    pub(super) writer: Writer,
    /// Reads bodies back for `Action::Fetch`; `None` while a read runs on
    /// the blocking pool.
    pub(super) fetch_reader: Option<SegmentReader>,
    /// Reads old segments for reclaim; `None` while a scan runs.
    pub(super) reclaim_reader: Option<SegmentReader>,
    /// Fetches waiting for the fetch reader: at most one per user (the
    /// core marks a queue fetching until answered), so bounded by the
    /// online users.
    pub(super) fetches: VecDeque<(UserId, Vec<(u64, u64)>)>,
    pub(super) fetch_waker: Option<Waker>,
    /// `None` while a request runs on the blocking pool.
    driver: Option<FileDriver>,
    /// Core sequence numbers with the log position of their record, in
    /// order, until durable.
    seqs: VecDeque<(u64, Lsn)>,
    payload: Vec<u8>,
    waker: Option<Waker>,
}

/// What recovery found, for the start-up log line.
#[derive(Debug)]
pub(crate) struct RecoveryReport {
    pub(crate) records: u64,
    pub(crate) bytes: u64,
    pub(crate) elapsed_ms: u128,
    pub(crate) torn_tail_bytes: u64,
}

/// Opens `dir` (creating it), replays every record into `core`, and
/// returns the log positioned to append.
pub(crate) fn open_and_recover(
    dir: &Path,
    options: &LogOptions,
    core: &mut Shard,
) -> Result<(ShardLog, RecoveryReport), EngineError> {
    let started = Instant::now();
    let mut replay_error = None;
    let opened = tern_log::open_log_with(dir, options, |lsn, record| {
        if replay_error.is_some() {
            return;
        }
        let result = core
            .replay_payload(record.kind, record.payload, lsn.to_u64())
            .map_err(|e| format!("{}: record at {lsn}: {e}", dir.display()));
        if let Err(e) = result {
            replay_error = Some(e);
        }
    })
    .map_err(|e| EngineError::Log(format!("{}: {e}", dir.display())))?;
    if let Some(e) = replay_error {
        return Err(EngineError::Log(e));
    }
    core.finish_recovery();
    let report = RecoveryReport {
        records: opened.recovered.summary.records,
        bytes: opened.recovered.bytes_read,
        elapsed_ms: started.elapsed().as_millis(),
        torn_tail_bytes: opened.recovered.torn_tail_truncated.map_or(0, |t| t.bytes),
    };
    Ok((
        ShardLog {
            fetch_reader: Some(SegmentReader::new(dir)),
            reclaim_reader: Some(SegmentReader::new(dir)),
            fetches: VecDeque::new(),
            fetch_waker: None,
            writer: opened.writer,
            driver: Some(opened.driver),
            seqs: VecDeque::new(),
            payload: Vec::new(),
            waker: None,
        },
        report,
    ))
}

impl ShardLog {
    /// Appends the core's record `seq`; returns where it lies. An error
    /// (log poisoned, or more bytes pending than the hard bound) means the
    /// record will never be durable: the caller poisons the core.
    pub(crate) fn append(&mut self, seq: u64, record: &Record) -> Result<Lsn, String> {
        let mut payload = std::mem::take(&mut self.payload);
        payload.clear();
        record.encode(&mut payload);
        let lsn = self.append_raw(record.kind(), &payload);
        self.payload = payload;
        let lsn = lsn?;
        self.seqs.push_back((seq, lsn));
        Ok(lsn)
    }

    /// Appends an already encoded record no core sequence waits for
    /// (reclaim's copies).
    pub(super) fn append_raw(&mut self, kind: u8, payload: &[u8]) -> Result<Lsn, String> {
        let lsn = self
            .writer
            .append(kind, payload)
            .map_err(|e| e.to_string())?;
        self.wake_io();
        Ok(lsn)
    }

    pub(super) fn wake_io(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Turns the core's refusal of new stores on when the bytes waiting
    /// for disk cross the high-water mark, and off again below the low one.
    pub(crate) fn update_backpressure(&self, core: &mut Shard) {
        let pending = self.writer.pending_bytes();
        let bound = self.writer.options().pending_bytes_max;
        let on = core.log_backpressure();
        let turn = if !on && pending >= bound / BACKPRESSURE_ON_DIVISOR {
            true
        } else if on && pending <= bound / BACKPRESSURE_OFF_DIVISOR {
            false
        } else {
            return;
        };
        if turn {
            tracing::warn!(
                shard = core.shard(),
                pending_bytes = pending,
                "log behind: refusing new messages (ShardUnavailable) until it drains"
            );
        } else {
            tracing::info!(
                shard = core.shard(),
                pending_bytes = pending,
                "log drained: taking new messages again"
            );
        }
        core.set_log_backpressure(turn);
    }

    /// Queues a read-back of spilled bodies for the fetch task.
    pub(crate) fn fetch(&mut self, user: UserId, items: Vec<(u64, u64)>) {
        self.fetches.push_back((user, items));
        if let Some(w) = self.fetch_waker.take() {
            w.wake();
        }
    }

    /// No I/O is running or waiting: the shard may exit (glommio's blocking
    /// pool must not answer an executor that is gone). A poisoned writer
    /// keeps its failed batch forever but runs nothing more.
    pub(crate) fn is_idle(&self) -> bool {
        self.driver.is_some()
            && (self.writer.is_idle() || self.writer.poison_cause().is_some())
            && self.fetch_reader.is_some()
            && self.reclaim_reader.is_some()
    }

    /// Pops the core sequence numbers now durable; returns the last and
    /// how many records this commit made durable.
    fn durable_seq(&mut self) -> Option<(u64, u64)> {
        let durable = self.writer.durable_lsn();
        let mut last = None;
        let mut count = 0u64;
        while let Some(&(seq, lsn)) = self.seqs.front() {
            if lsn > durable {
                break;
            }
            self.seqs.pop_front();
            last = Some(seq);
            count += 1;
        }
        last.map(|seq| (seq, count))
    }
}

/// The shard's log task: runs the writer's I/O until the shard stops.
/// Records fdatasync latency and group-commit batch sizes in `metrics`.
pub(crate) async fn run(
    rt: RtRef,
    sms: Arc<dyn SmsGateway>,
    metrics: Option<Arc<crate::ops::metrics::Metrics>>,
    ready: Arc<std::sync::atomic::AtomicBool>,
) {
    loop {
        let next = poll_fn(|cx| {
            let mut r = rt.borrow_mut();
            let Some(log) = r.log.as_mut() else {
                return Poll::Ready(None);
            };
            if log.writer.poison_cause().is_some() {
                // Never retried: the process must restart and recover.
                return Poll::Ready(None);
            }
            match (log.writer.poll_io(), log.driver.take()) {
                (Some(request), Some(driver)) => Poll::Ready(Some((request, driver))),
                (request, driver) => {
                    debug_assert!(request.is_none(), "one request at a time");
                    log.driver = driver;
                    log.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await;
        let Some((request, mut driver)) = next else {
            return;
        };
        let is_sync = matches!(request, IoRequest::Sync { .. });
        let io_started = Instant::now();
        let (driver, request, result) = glommio::executor()
            .spawn_blocking(move || {
                let result = driver.execute(&request);
                (driver, request, result)
            })
            .await;
        let shard_metrics = metrics
            .as_ref()
            .and_then(|m| m.shard(rt.borrow().core.shard()));
        if is_sync {
            if let Some(m) = shard_metrics {
                let us = u64::try_from(io_started.elapsed().as_micros()).unwrap_or(u64::MAX);
                m.fsync_latency_us.record(us);
            }
        }
        {
            let mut r = rt.borrow_mut();
            let r = &mut *r;
            let Some(log) = r.log.as_mut() else {
                return;
            };
            log.driver = Some(driver);
            let id = request.id();
            if let IoRequest::Write { .. } = request {
                if let Some(bytes) = request.into_bytes() {
                    log.writer.recycle(bytes);
                }
            }
            if let Err(e) = log.writer.handle_io_done(id, result) {
                tracing::error!(error = %e, "log bookkeeping error");
            }
            if let Some(cause) = log.writer.poison_cause() {
                tracing::error!(
                    shard = r.core.shard(),
                    cause = ?cause,
                    "SHARD POISONED: log I/O failed; no further acknowledgements; restart to recover"
                );
                r.core.poison();
                // Not ready: the shard can no longer store anything.
                ready.store(false, std::sync::atomic::Ordering::SeqCst);
            } else {
                log.update_backpressure(&mut r.core);
                if let Some((seq, batch)) = log.durable_seq() {
                    if let Some(m) = shard_metrics {
                        m.commit_batch_items.record(batch);
                    }
                    r.core.handle_durable(seq, now_ms());
                }
            }
        }
        drain_actions(&rt, &sms);
    }
}
