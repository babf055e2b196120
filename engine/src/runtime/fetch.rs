//! Reading queued message bodies back from the shard's log.
//!
//! A message stored while its recipient is offline keeps only its log
//! position in memory (see `tern_core::inbox`). When the recipient's
//! device is ready for it, the core asks for the next few records with
//! `Action::Fetch`; this task reads them with `pread` on glommio's blocking
//! pool (from the page cache, usually: they were written recently or are
//! read in order) and hands the items back with `Shard::handle_fetched`.
//! One read batch runs at a time per shard; requests wait in
//! `ShardLog::fetches` (at most one per user).
//!
//! A record that cannot be read back (I/O error, CRC mismatch, not the
//! item asked for) means the disk lost durable data: the shard is poisoned
//! and stops taking new messages, loudly.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

use tern_core::inbox::Item;
use tern_core::record::Record;
use tern_core::user::UserId;
use tern_log::{Lsn, SegmentReader};

use super::shard::{drain_actions, RtRef};
use crate::clock::now_ms;
use crate::sms::SmsGateway;

/// Runs until the shard's log is gone (shutdown drops the task once no
/// read is in flight: `ShardLog::is_idle`).
pub(crate) async fn run(rt: RtRef, sms: Arc<dyn SmsGateway>) {
    loop {
        let next = poll_fn(|cx| {
            let mut r = rt.borrow_mut();
            let Some(log) = r.log.as_mut() else {
                return Poll::Ready(None);
            };
            if !log.fetches.is_empty() {
                if let Some(reader) = log.fetch_reader.take() {
                    if let Some(job) = log.fetches.pop_front() {
                        return Poll::Ready(Some((job, reader)));
                    }
                    log.fetch_reader = Some(reader);
                }
            }
            log.fetch_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        let Some(((user, wanted), mut reader)) = next else {
            return;
        };
        let (reader, result) = glommio::executor()
            .spawn_blocking(move || {
                let result = read_items(&mut reader, user, &wanted);
                (reader, result)
            })
            .await;
        {
            let mut r = rt.borrow_mut();
            let r = &mut *r;
            if let Some(log) = r.log.as_mut() {
                log.fetch_reader = Some(reader);
            }
            match result {
                Ok(items) => r.core.handle_fetched(user, items, now_ms()),
                Err(e) => {
                    tracing::error!(
                        shard = r.core.shard(),
                        user = user.0,
                        error = %e,
                        "SHARD POISONED: a queued message could not be read back from the log"
                    );
                    r.core.handle_fetch_failed(user);
                }
            }
        }
        drain_actions(&rt, &sms);
    }
}

/// Reads the item records at `wanted` (`(id, packed log position)`) of
/// `user`'s queue and checks each is the item asked for.
fn read_items(
    reader: &mut SegmentReader,
    user: UserId,
    wanted: &[(u64, u64)],
) -> Result<Vec<Item>, String> {
    let mut items = Vec::with_capacity(wanted.len());
    for &(id, loc) in wanted {
        let lsn = Lsn::from_u64(loc);
        let owned = reader.read(lsn).map_err(|e| e.to_string())?;
        let record = Record::decode(owned.kind, &owned.payload)
            .map_err(|e| format!("record at {lsn}: {e}"))?;
        match record {
            Record::ItemStored { to, item, .. } if to == user && item.id() == id => {
                items.push(item);
            }
            other => {
                return Err(format!(
                    "record at {lsn} is not item {id} of user {}: kind {}",
                    user.0,
                    other.kind()
                ))
            }
        }
    }
    Ok(items)
}
