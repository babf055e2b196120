//! Keeping the shard's log bounded: deleting old segments and copying
//! forward what is still live in them.
//!
//! Oldest first, always. An acknowledgement record may sit in a later
//! segment than the item it removes; deleting that later segment while the
//! item's segment remains would bring the item back at the next replay.
//! Deleting only the oldest segment keeps every ack until the item it
//! removes is gone from every segment.
//!
//! Once a second (at once again after a reclaim, to keep up with a
//! fast-growing log) the task looks at the oldest sealed segment (whose last
//! byte is durable). It reads it on the blocking pool and asks the core
//! which records are still live (`Shard::is_live`: an item still queued,
//! the account event that is the account's current state). Then:
//! - none live: the segment is deleted;
//! - some live, and the log is larger than its budget (`budget_bytes`:
//!   [`LIVE_FACTOR`] times the live state, at least [`SEGMENTS_FLOOR`]
//!   segments): the live records are appended again at the head (checked
//!   live again at that moment, in the same executor turn as the append, so
//!   a later ack always lands after the copy), and once the copies are
//!   durable the core is told where they now lie (`Shard::relocate`) and
//!   the old segment is deleted;
//! - otherwise it is kept, and read again (at most every
//!   [`RESCAN_INTERVAL_MS`]) only while the log is over its budget.
//!
//! A crash between the copy and the delete leaves both on disk; replay
//! restores each item once (see `Shard::replay`). Copying the current
//! account events forward is the account snapshot: an account's history
//! never outlives the segment that holds its current state.
//!
//! Disk bound (documented in ARCHITECTURE.md): segments on disk at most
//! `max(LIVE_FACTOR * live bytes, SEGMENTS_FLOOR * segment size)` plus the
//! active segment and the one being copied.

use std::sync::Arc;
use std::time::Duration;

use tern_core::record::{Record, KIND_ITEM_ACKED};
use tern_log::{Lsn, SegmentReader};

use super::shard::RtRef;
use crate::clock::now_ms;
use crate::ops::metrics::Metrics;

/// How often the task looks at the oldest segment.
pub(crate) const RECLAIM_INTERVAL_MS: u64 = 1_000;
/// A segment found worth keeping is read again only after this long.
pub(crate) const RESCAN_INTERVAL_MS: u64 = 10_000;
/// The log may grow to this many times the bytes of its live state before
/// live records are copied out of old segments.
pub(crate) const LIVE_FACTOR: u64 = 2;
/// ... but copying starts only past this many segments: below it, the
/// write amplification would buy back less than a few segments.
pub(crate) const SEGMENTS_FLOOR: u64 = 4;
/// Records checked or copied per executor turn: a 64 MiB segment holds
/// ~300k records, and the shard's connections must not wait for all.
const RECORDS_PER_TURN: usize = 1_024;
/// Poll interval while waiting for copies to become durable or for
/// fetches to finish before a delete.
const WAIT_POLL_MS: u64 = 5;

/// What to do with the oldest segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Delete,
    CopyForwardThenDelete,
    Keep,
}

/// The log's size budget: `LIVE_FACTOR` times the live state, never below
/// `SEGMENTS_FLOOR` segments.
pub(crate) fn budget_bytes(live_bytes: u64, segment_bytes: u64) -> u64 {
    LIVE_FACTOR
        .saturating_mul(live_bytes)
        .max(SEGMENTS_FLOOR.saturating_mul(segment_bytes))
}

/// Lets the shard's connections and I/O run between chunks: a plain
/// `yield_if_needed` would keep the executor until its 100 ms preemption
/// timer, which the ServerAcks waiting meanwhile would show as latency.
async fn yield_to_connections() {
    glommio::executor().yield_task_queue_now().await;
}

/// Decides for the oldest segment, given how many of its records are live,
/// the log's size on disk and the live state's size.
pub(crate) fn decide(
    live_records: usize,
    disk_bytes: u64,
    live_bytes: u64,
    segment_bytes: u64,
) -> Step {
    if live_records == 0 {
        Step::Delete
    } else if disk_bytes > budget_bytes(live_bytes, segment_bytes) {
        Step::CopyForwardThenDelete
    } else {
        Step::Keep
    }
}

/// One record of the oldest segment, as read by the scan: where it lies
/// and what it is, with a message's body left on disk (acks are skipped at
/// the read: they are never live). ~100 bytes each, so a scan of a 64 MiB
/// segment holds ~30 MiB beside the reader's buffer, not a second copy.
struct Scanned {
    lsn: Lsn,
    kind: u8,
    record: Record,
}

/// Runs until the shard's log is gone or poisoned.
pub(crate) async fn run(rt: RtRef, metrics: Option<Arc<Metrics>>) {
    let mut kept: Option<(u32, u64)> = None;
    let mut progressed = false;
    loop {
        // After a reclaim, the next segment at once: the log may be
        // growing faster than one segment per interval.
        if !progressed {
            glommio::timer::sleep(Duration::from_millis(RECLAIM_INTERVAL_MS)).await;
        }
        progressed = false;
        let Some(candidate) = candidate(&rt, kept) else {
            if rt.borrow().log.is_none() || rt.borrow().core.is_poisoned() {
                return;
            }
            continue;
        };
        match reclaim_one(&rt, candidate).await {
            Ok(Some(copied)) => {
                kept = None;
                progressed = true;
                let shard = rt.borrow().core.shard();
                tracing::info!(shard, segment = candidate, copied, "log segment reclaimed");
                if let Some(m) = metrics.as_ref().and_then(|m| m.shard(shard)) {
                    m.log_segments_reclaimed.inc();
                    m.log_records_copied.add(copied);
                }
            }
            Ok(None) => kept = Some((candidate, now_ms())),
            Err(e) => {
                // The shard keeps serving; its log just stops shrinking.
                // A damaged segment also stops the next start-up, naming
                // it, unless the operator repairs it.
                tracing::error!(
                    shard = rt.borrow().core.shard(),
                    segment = candidate,
                    error = %e,
                    "log reclaim stopped: an old segment could not be read"
                );
                return;
            }
        }
    }
}

/// The oldest segment, if it is sealed, fully durable, and not a kept one
/// looked at recently.
fn candidate(rt: &RtRef, kept: Option<(u32, u64)>) -> Option<u32> {
    let r = rt.borrow();
    let log = r.log.as_ref()?;
    if r.core.is_poisoned() || log.reclaim_reader.is_none() {
        return None;
    }
    let oldest = log.writer.live_segments().next()?;
    if oldest >= log.writer.active_segment() || log.writer.durable_lsn().segment <= oldest {
        return None;
    }
    match kept {
        Some((segment, at_ms)) if segment == oldest => {
            // Kept once already: reading it again pays only if copying
            // would now happen (the log is over its budget), and not too
            // often. Under budget, the next new oldest segment is looked
            // at instead, when one comes.
            let segment_bytes = u64::from(log.writer.options().segment_bytes_max);
            let disk_bytes =
                (log.writer.live_segments().count() as u64).saturating_mul(segment_bytes);
            let over = disk_bytes > budget_bytes(r.core.live_log_bytes(), segment_bytes);
            (over && now_ms() >= at_ms + RESCAN_INTERVAL_MS).then_some(oldest)
        }
        _ => Some(oldest),
    }
}

/// Reclaims `segment` if it can: `Some(records copied)` once deleted,
/// `None` if kept.
async fn reclaim_one(rt: &RtRef, segment: u32) -> Result<Option<u64>, String> {
    let records = scan(rt, segment).await?;
    let mut live: Vec<Scanned> = Vec::new();
    let mut records = records.into_iter().peekable();
    while records.peek().is_some() {
        {
            let r = rt.borrow();
            live.extend(
                records
                    .by_ref()
                    .take(RECORDS_PER_TURN)
                    .filter(|s| r.core.is_live(&s.record)),
            );
        }
        yield_to_connections().await;
    }
    let step = {
        let r = rt.borrow();
        let Some(log) = r.log.as_ref() else {
            return Ok(None);
        };
        let segment_bytes = u64::from(log.writer.options().segment_bytes_max);
        let segments = log.writer.live_segments().count() as u64;
        decide(
            live.len(),
            segments.saturating_mul(segment_bytes),
            r.core.live_log_bytes(),
            segment_bytes,
        )
    };
    let copied = match step {
        Step::Keep => return Ok(None),
        Step::Delete => 0,
        Step::CopyForwardThenDelete => match copy_forward(rt, live).await {
            Some(n) => n,
            None => return Ok(None),
        },
    };
    delete_when_no_fetch(rt, segment).await;
    Ok(Some(copied))
}

/// Reads every record of `segment` but acks, on the blocking pool.
async fn scan(rt: &RtRef, segment: u32) -> Result<Vec<Scanned>, String> {
    let Some(mut reader) = take_reader(rt) else {
        return Ok(Vec::new());
    };
    let (reader, result) = glommio::executor()
        .spawn_blocking(move || {
            let mut records = Vec::new();
            let mut bad = None;
            let result = reader.scan(segment, |lsn: Lsn, raw| {
                if raw.kind == KIND_ITEM_ACKED || bad.is_some() {
                    return;
                }
                match Record::decode_without_body(raw.kind, raw.payload) {
                    Ok((record, _)) => records.push(Scanned {
                        lsn,
                        kind: raw.kind,
                        record,
                    }),
                    Err(e) => bad = Some(format!("record at {lsn}: {e}")),
                }
            });
            let result = match (result, bad) {
                (Err(e), _) => Err(e.to_string()),
                (Ok(_), Some(e)) => Err(e),
                (Ok(_), None) => Ok(records),
            };
            (reader, result)
        })
        .await;
    put_reader(rt, reader);
    result
}

/// Reads the payloads of `records` back (for copying), on the blocking
/// pool.
async fn read_payloads(rt: &RtRef, records: &[Scanned]) -> Result<Vec<Vec<u8>>, String> {
    let Some(mut reader) = take_reader(rt) else {
        return Err("reclaim reader busy".to_string());
    };
    let lsns: Vec<Lsn> = records.iter().map(|s| s.lsn).collect();
    let (reader, result) = glommio::executor()
        .spawn_blocking(move || {
            let result = lsns
                .iter()
                .map(|&lsn| reader.read(lsn).map(|r| r.payload))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string());
            (reader, result)
        })
        .await;
    put_reader(rt, reader);
    result
}

fn take_reader(rt: &RtRef) -> Option<SegmentReader> {
    rt.borrow_mut()
        .log
        .as_mut()
        .and_then(|l| l.reclaim_reader.take())
}

fn put_reader(rt: &RtRef, reader: SegmentReader) {
    if let Some(log) = rt.borrow_mut().log.as_mut() {
        log.reclaim_reader = Some(reader);
    }
}

/// Appends the records still live again; once durable, tells the core
/// where they are. `None` if the log failed meanwhile.
async fn copy_forward(rt: &RtRef, live: Vec<Scanned>) -> Option<u64> {
    let mut copies: Vec<(Record, Lsn)> = Vec::with_capacity(live.len());
    let mut last = Lsn::ZERO;
    for chunk in live.chunks(RECORDS_PER_TURN) {
        let payloads = match read_payloads(rt, chunk).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "reclaim could not read records to copy");
                return None;
            }
        };
        let mut r = rt.borrow_mut();
        let r = &mut *r;
        let log = r.log.as_mut()?;
        for (scanned, payload) in chunk.iter().zip(payloads) {
            // Checked again here, in the turn that appends: an ack after
            // this point is appended after the copy.
            if !r.core.is_live(&scanned.record) {
                continue;
            }
            match log.append_raw(scanned.kind, &payload) {
                Ok(lsn) => {
                    last = lsn;
                    copies.push((scanned.record.clone(), lsn));
                }
                // The log refuses appends only when poisoned or far
                // behind: stop; the segment is looked at again later.
                Err(e) => {
                    tracing::warn!(error = %e, "reclaim copy refused by the log");
                    return None;
                }
            }
        }
    }
    // The copies must be on disk before anything reads them or the
    // originals go.
    loop {
        {
            let r = rt.borrow();
            let log = r.log.as_ref()?;
            if r.core.is_poisoned() {
                return None;
            }
            if log.writer.durable_lsn() >= last {
                break;
            }
        }
        glommio::timer::sleep(Duration::from_millis(WAIT_POLL_MS)).await;
    }
    let copied = copies.len() as u64;
    for chunk in copies.chunks(RECORDS_PER_TURN) {
        {
            let mut r = rt.borrow_mut();
            for (record, lsn) in chunk {
                r.core.relocate(record, lsn.to_u64());
            }
        }
        yield_to_connections().await;
    }
    Some(copied)
}

/// Deletes `segment` once no fetch is queued or running: a fetch asked for
/// before the relocation may still name a position in it.
async fn delete_when_no_fetch(rt: &RtRef, segment: u32) {
    loop {
        {
            let mut r = rt.borrow_mut();
            let Some(log) = r.log.as_mut() else {
                return;
            };
            if log.fetches.is_empty() && log.fetch_reader.is_some() {
                if let Err(e) = log.writer.delete_segment(segment) {
                    tracing::warn!(segment, error = %e, "log segment not deleted");
                    return;
                }
                log.wake_io();
                if let Some(reader) = log.fetch_reader.as_mut() {
                    reader.forget(segment);
                }
                if let Some(reader) = log.reclaim_reader.as_mut() {
                    reader.forget(segment);
                }
                return;
            }
        }
        glommio::timer::sleep(Duration::from_millis(WAIT_POLL_MS)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 64 << 20;

    #[test]
    fn a_segment_with_nothing_live_is_deleted_whatever_the_size() {
        assert_eq!(decide(0, SEG, 0, SEG), Step::Delete);
        assert_eq!(decide(0, 100 * SEG, 100 * SEG, SEG), Step::Delete);
    }

    #[test]
    fn live_records_are_copied_only_past_the_budget() {
        // Below the floor of 4 segments: kept.
        assert_eq!(decide(1, 4 * SEG, 0, SEG), Step::Keep);
        assert_eq!(decide(1, 5 * SEG, 0, SEG), Step::CopyForwardThenDelete);
        // Lots of live data: up to twice it.
        let live = 10 * SEG;
        assert_eq!(decide(1, 20 * SEG, live, SEG), Step::Keep);
        assert_eq!(decide(1, 21 * SEG, live, SEG), Step::CopyForwardThenDelete);
        assert_eq!(budget_bytes(live, SEG), 20 * SEG);
        assert_eq!(budget_bytes(u64::MAX, SEG), u64::MAX);
    }
}
