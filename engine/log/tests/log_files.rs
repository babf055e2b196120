//! The log over real files in a temporary directory: reopen, torn tails at
//! every offset, corruption, repair, rollover and deletion, fsync failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use std::fs;
use std::path::Path;

use tern_log::record::frame_bytes;
use tern_log::{
    drive, open_log, segment_file_name, CorruptReason, Durability, FaultPlan, FaultyDriver,
    FileDriver, IoDriver, IoOp, LogError, LogOptions, Lsn, Preallocation, SegmentEnd,
    WriterOptions,
};

fn options(preallocation: Preallocation) -> LogOptions {
    LogOptions {
        writer: WriterOptions {
            durability: Durability::Fsync,
            segment_bytes_max: 16 << 10,
            batch_bytes_max: 4 << 10,
            pending_bytes_max: 1 << 20,
        },
        repair: false,
        preallocation,
    }
}

fn payload(i: usize) -> Vec<u8> {
    (0..20 + (i * 13) % 41)
        .map(|j| (i * 31 + j) as u8)
        .collect()
}

fn kind(i: usize) -> u8 {
    1 + (i % 250) as u8
}

/// Appends `count` records starting at index `first`, syncing every
/// `sync_every`; returns their LSNs.
fn write_records(
    writer: &mut tern_log::Writer,
    driver: &mut dyn IoDriver,
    first: usize,
    count: usize,
    sync_every: usize,
) -> Vec<Lsn> {
    let mut lsns = Vec::new();
    for i in first..first + count {
        lsns.push(writer.append(kind(i), &payload(i)).unwrap());
        if (i + 1) % sync_every == 0 {
            drive(writer, driver).unwrap();
        }
    }
    drive(writer, driver).unwrap();
    assert_eq!(writer.durable_lsn(), *lsns.last().unwrap());
    lsns
}

fn assert_records(got: &[tern_log::RecoveredRecord], lsns: &[Lsn], first: usize) {
    assert_eq!(got.len(), lsns.len(), "record count");
    for (n, (record, lsn)) in got.iter().zip(lsns).enumerate() {
        let i = first + n;
        assert_eq!(record.lsn, *lsn, "lsn of record {i}");
        assert_eq!(record.kind, kind(i), "kind of record {i}");
        assert_eq!(record.payload, payload(i), "payload of record {i}");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn write_sync_reopen_all_there_across_lives() {
    for preallocation in [Preallocation::None, Preallocation::Fallocate] {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(preallocation);
        let mut log = open_log(dir.path(), &opts).unwrap();
        let mut lsns = write_records(&mut log.writer, &mut log.driver, 0, 1000, 50);
        assert!(log.writer.active_segment() >= 3, "spans several segments");
        drop(log);

        let mut log = open_log(dir.path(), &opts).unwrap();
        assert_records(&log.recovered.records, &lsns, 0);
        assert_eq!(log.recovered.torn_tail_truncated, None);
        assert_eq!(log.writer.durable_lsn(), *lsns.last().unwrap());
        let more = write_records(&mut log.writer, &mut log.driver, 1000, 300, 7);
        assert!(more[0] > *lsns.last().unwrap(), "LSNs keep growing");
        lsns.extend(more);
        drop(log);

        let log = open_log(dir.path(), &opts).unwrap();
        assert_records(&log.recovered.records, &lsns, 0);
        assert_eq!(log.recovered.summary.records, 1300);
    }
}

#[test]
fn truncating_last_segment_at_every_offset_of_last_three_records() {
    let source = tempfile::tempdir().unwrap();
    let opts = options(Preallocation::None);
    let mut log = open_log(source.path(), &opts).unwrap();
    let lsns = write_records(&mut log.writer, &mut log.driver, 0, 40, 10);
    drop(log);
    let last_segment = lsns.last().unwrap().segment;
    let segment_file = segment_file_name(last_segment);
    let full_len = fs::metadata(source.path().join(&segment_file))
        .unwrap()
        .len() as u32;
    let starts: Vec<u32> = lsns
        .iter()
        .filter(|l| l.segment == last_segment)
        .map(|l| l.offset)
        .collect();
    assert!(starts.len() > 3);
    let from = starts[starts.len() - 3];

    let scratch = tempfile::tempdir().unwrap();
    for (case, cut) in (from..full_len).enumerate() {
        for zero_fill in [false, true] {
            // Torn by truncation (a growing file), or by zeroes after `cut`
            // (a preallocated file whose last pages never reached the disk).
            let dir = scratch.path().join(format!("cut-{cut}-{zero_fill}"));
            copy_dir(source.path(), &dir);
            let path = dir.join(&segment_file);
            if zero_fill {
                let mut bytes = fs::read(&path).unwrap();
                bytes[cut as usize..].fill(0);
                bytes.resize(bytes.len() + 4096, 0);
                fs::write(&path, bytes).unwrap();
            } else {
                fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_len(u64::from(cut))
                    .unwrap();
            }
            let mut log = open_log(&dir, &opts).unwrap();
            let complete = lsns
                .iter()
                .filter(|l| l.segment < last_segment || frame_end(l, &lsns, full_len) <= cut)
                .count();
            assert_records(&log.recovered.records, &lsns[..complete], 0);
            let boundary = if complete == lsns.len() {
                full_len
            } else {
                lsns[complete].offset
            };
            let torn = log.recovered.torn_tail_truncated;
            if cut == boundary && !zero_fill {
                assert_eq!(torn, None, "cut {cut} on a record boundary");
            } else if !zero_fill {
                let torn = torn.unwrap_or_else(|| panic!("cut {cut}: no torn tail"));
                assert_eq!((torn.segment, torn.offset), (last_segment, boundary));
                assert_eq!(torn.bytes, u64::from(cut - boundary));
            } else if cut != boundary {
                assert!(torn.is_some(), "cut {cut}: partial record before zeroes");
            }
            assert_eq!(
                fs::metadata(&path).unwrap().len(),
                u64::from(boundary),
                "cut {cut} zero_fill {zero_fill}: file cut back to the last whole record"
            );
            assert_eq!(log.writer.durable_lsn(), lsns[complete - 1]);
            // The log goes on: append, reopen, everything in order (every 5th
            // case, to keep the test quick).
            if case % 5 == 0 {
                let next = log.writer.append(9, b"after recovery").unwrap();
                drive(&mut log.writer, &mut log.driver).unwrap();
                drop(log);
                let log = open_log(&dir, &opts).unwrap();
                assert_records(&log.recovered.records[..complete], &lsns[..complete], 0);
                let tail = &log.recovered.records[complete..];
                assert_eq!(tail.len(), 1);
                assert_eq!(
                    (tail[0].lsn, &tail[0].payload[..]),
                    (next, &b"after recovery"[..])
                );
            }
            fs::remove_dir_all(&dir).unwrap();
        }
    }
}

/// End offset of the record at `lsn` (the next record's start in the same
/// segment, or the segment's length for the last one).
fn frame_end(lsn: &Lsn, lsns: &[Lsn], segment_len: u32) -> u32 {
    lsns.iter()
        .find(|l| l.segment == lsn.segment && l.offset > lsn.offset)
        .map_or(segment_len, |l| l.offset)
}

#[test]
fn flipped_byte_in_early_segment_fails_naming_file_and_offset_then_repair() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(Preallocation::Fallocate);
    let mut log = open_log(dir.path(), &opts).unwrap();
    let lsns = write_records(&mut log.writer, &mut log.driver, 0, 1200, 100);
    drop(log);
    let segments: Vec<u32> = lsns.iter().map(|l| l.segment).collect();
    assert!(*segments.last().unwrap() >= 3);

    // A byte in the middle of segment 1, inside record `victim`'s payload.
    let in_first: Vec<usize> = (0..lsns.len()).filter(|&i| lsns[i].segment == 1).collect();
    let victim = in_first[in_first.len() / 2];
    let victim_lsn = lsns[victim];
    let path = dir.path().join(segment_file_name(1));
    let mut bytes = fs::read(&path).unwrap();
    bytes[victim_lsn.offset as usize + 12] ^= 0x5A;
    fs::write(&path, &bytes).unwrap();

    let err = open_log(dir.path(), &opts).unwrap_err();
    match &err {
        LogError::Corrupt {
            file,
            segment,
            offset,
            reason,
        } => {
            assert_eq!(file, &path);
            assert_eq!((*segment, *offset), (1, victim_lsn.offset));
            assert!(matches!(reason, CorruptReason::ChecksumMismatch { .. }));
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(
        message.contains(&format!("offset {}", victim_lsn.offset)),
        "{message}"
    );
    // Refusing to start changed nothing on disk.
    assert_eq!(fs::read(&path).unwrap(), bytes);

    let repair = LogOptions {
        repair: true,
        ..opts.clone()
    };
    let log = open_log(dir.path(), &repair).unwrap();
    let dropped_in_first = in_first.len() - (victim - in_first[0]);
    let expected: Vec<usize> = (0..lsns.len())
        .filter(|&i| lsns[i].segment != 1 || i < victim)
        .collect();
    assert_eq!(log.recovered.records.len(), expected.len());
    for (record, &i) in log.recovered.records.iter().zip(&expected) {
        assert_eq!((record.lsn, &record.payload), (lsns[i], &payload(i)));
    }
    assert_eq!(log.recovered.repaired.len(), 1);
    match log.recovered.repaired[0].end {
        SegmentEnd::Repaired {
            offset,
            records_dropped,
            bytes_dropped,
            ..
        } => {
            assert_eq!(offset, victim_lsn.offset);
            assert_eq!(records_dropped, dropped_in_first as u64);
            assert!(bytes_dropped > 0);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        u64::from(victim_lsn.offset),
        "repair cut the segment at the damage"
    );
    drop(log);
    // The repair is on disk: a normal open now works and sees the same.
    let log = open_log(dir.path(), &opts).unwrap();
    assert_eq!(log.recovered.records.len(), expected.len());
    assert!(log.recovered.repaired.is_empty());
}

#[test]
fn rollover_and_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(Preallocation::Fallocate);
    let mut log = open_log(dir.path(), &opts).unwrap();
    let lsns = write_records(&mut log.writer, &mut log.driver, 0, 2000, 64);
    let active = log.writer.active_segment();
    assert!(active >= 5, "rolled over into segment {active}");
    // Every record sits inside one segment of at most segment_bytes_max.
    for (i, lsn) in lsns.iter().enumerate() {
        let end = u64::from(lsn.offset) + frame_bytes(payload(i).len()) as u64;
        assert!(end <= u64::from(opts.writer.segment_bytes_max));
    }
    for segment in 1..=3 {
        log.writer.delete_segment(segment).unwrap();
    }
    assert!(log.writer.delete_segment(active).is_err());
    drive(&mut log.writer, &mut log.driver).unwrap();
    for segment in 1..=3 {
        assert!(!dir.path().join(segment_file_name(segment)).exists());
    }
    assert!(dir.path().join(segment_file_name(4)).exists());
    assert_eq!(log.writer.stats().segments_deleted, 3);
    drop(log);

    let log = open_log(dir.path(), &opts).unwrap();
    let kept: Vec<usize> = (0..lsns.len()).filter(|&i| lsns[i].segment > 3).collect();
    assert_eq!(log.recovered.records.len(), kept.len());
    assert_eq!(log.recovered.records[0].lsn, lsns[kept[0]]);
    assert_eq!(log.recovered.records[0].payload, payload(kept[0]));
    assert_eq!(
        log.writer.live_segments().collect::<Vec<_>>(),
        (4..=active + 1).collect::<Vec<_>>()
    );
}

#[test]
fn fsync_failure_poisons_and_never_acks_again() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(Preallocation::Fallocate);
    let log = open_log(dir.path(), &opts).unwrap();
    let mut writer = log.writer;
    let plan = FaultPlan {
        fail_sync_nth: Some(4),
        ..FaultPlan::default()
    };
    let mut driver = FaultyDriver::new(log.driver, plan);
    let mut acked = Vec::new();
    let mut poisoned_at = None;
    for i in 0..100 {
        match writer.append(kind(i), &payload(i)) {
            Ok(lsn) => acked.push(lsn),
            Err(LogError::Poisoned(cause)) => {
                assert_eq!(cause.op, IoOp::Sync);
                poisoned_at.get_or_insert(i);
                continue;
            }
            Err(other) => panic!("{other:?}"),
        }
        if i % 10 == 9 {
            let _ = drive(&mut writer, &mut driver);
        }
    }
    let poisoned_at = poisoned_at.expect("the 4th sync failed and poisoned the log");
    assert_eq!(poisoned_at, 40, "appends fail right after the failed sync");
    assert_eq!(driver.faults_injected(), 1);
    let durable = writer.durable_lsn();
    assert_eq!(
        durable, acked[29],
        "only the first three synced batches are durable"
    );
    assert_eq!(writer.stats().syncs_done, 3);
    // Nothing moves any more: no request, no retry, no ack.
    assert!(writer.poll_io().is_none());
    assert!(matches!(
        drive(&mut writer, &mut driver),
        Err(LogError::Poisoned(_))
    ));
    assert!(matches!(writer.append(1, b"x"), Err(LogError::Poisoned(_))));
    assert_eq!(writer.durable_lsn(), durable);
    drop((writer, driver));

    // A restart rereads what is on disk: every acked record is there.
    let log = open_log(dir.path(), &opts).unwrap();
    let got = &log.recovered.records;
    assert!(got.len() >= 30);
    assert_records(&got[..30], &acked[..30], 0);
}

#[test]
fn torn_write_poisons_then_reopen_truncates_it() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(Preallocation::None);
    let log = open_log(dir.path(), &opts).unwrap();
    let mut writer = log.writer;
    let plan = FaultPlan {
        tear_write_nth: Some((3, 5)),
        ..FaultPlan::default()
    };
    let mut driver = FaultyDriver::new(log.driver, plan);
    let mut lsns = Vec::new();
    for i in 0..30 {
        lsns.push(writer.append(kind(i), &payload(i)).unwrap());
        if i % 10 == 9 {
            let _ = drive(&mut writer, &mut driver);
        }
    }
    let cause = writer.poison_cause().cloned().unwrap();
    assert_eq!(cause.op, IoOp::Write);
    assert_eq!(writer.durable_lsn(), lsns[19]);
    drop((writer, driver));
    let log = open_log(dir.path(), &opts).unwrap();
    assert_records(&log.recovered.records, &lsns[..20], 0);
    let torn = log.recovered.torn_tail_truncated.unwrap();
    assert_eq!(
        (torn.segment, torn.offset, torn.bytes),
        (lsns[20].segment, lsns[20].offset, 5)
    );
}

#[test]
fn failed_write_and_failed_create_poison() {
    for plan in [
        FaultPlan {
            fail_write_nth: Some(2),
            ..FaultPlan::default()
        },
        FaultPlan {
            fail_create_nth: Some(2),
            ..FaultPlan::default()
        },
    ] {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(Preallocation::None);
        let log = open_log(dir.path(), &opts).unwrap();
        let mut writer = log.writer;
        let mut driver = FaultyDriver::new(log.driver, plan);
        let mut last_durable = Lsn::ZERO;
        let mut failed = false;
        // Big records so the second create comes soon.
        for i in 0..400 {
            if writer.append(kind(i), &[7; 500]).is_err() {
                failed = true;
                break;
            }
            if drive(&mut writer, &mut driver).is_err() {
                failed = true;
                break;
            }
            assert!(writer.durable_lsn() > last_durable);
            last_durable = writer.durable_lsn();
        }
        assert!(failed, "{plan:?} never fired");
        assert_eq!(writer.durable_lsn(), last_durable, "{plan:?}");
        assert!(matches!(writer.append(1, b"x"), Err(LogError::Poisoned(_))));
    }
}

#[test]
fn unsafe_no_fsync_acks_on_write_and_survives_process_death() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(Preallocation::Fallocate);
    opts.writer.durability = Durability::UnsafeNoFsync;
    let mut log = open_log(dir.path(), &opts).unwrap();
    let lsns = write_records(&mut log.writer, &mut log.driver, 0, 300, 30);
    assert_eq!(log.writer.stats().syncs_done, 0);
    drop(log);
    // Dropping without any fsync is what kill -9 does: the page cache keeps it.
    let log = open_log(dir.path(), &opts).unwrap();
    assert_records(&log.recovered.records, &lsns, 0);
}

#[test]
fn crash_loops_do_not_pile_up_empty_segments() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(Preallocation::Fallocate);
    let mut log = open_log(dir.path(), &opts).unwrap();
    let lsns = write_records(&mut log.writer, &mut log.driver, 0, 10, 10);
    drop(log);
    for _ in 0..5 {
        // Start, create the new segment, die before writing a record.
        let mut log = open_log(dir.path(), &opts).unwrap();
        assert_eq!(log.writer.active_segment(), 2);
        drive(&mut log.writer, &mut log.driver).unwrap();
        assert!(dir.path().join(segment_file_name(2)).exists());
    }
    let log = open_log(dir.path(), &opts).unwrap();
    assert_records(&log.recovered.records, &lsns, 0);
    let files = fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(files, 1, "only segment 1 remains");
}

#[test]
fn driver_works_without_open_log() {
    // The sans-IO pieces compose without open_log: fresh directory, writer
    // from WriterStart::empty, FileDriver by hand.
    let dir = tempfile::tempdir().unwrap();
    let mut driver = FileDriver::new(dir.path(), Preallocation::ZeroFill).unwrap();
    let mut writer = tern_log::Writer::new(
        options(Preallocation::ZeroFill).writer,
        tern_log::WriterStart::empty(),
    )
    .unwrap();
    let lsns = write_records(&mut writer, &mut driver, 0, 500, 25);
    let log = open_log(dir.path(), &options(Preallocation::ZeroFill)).unwrap();
    assert_records(&log.recovered.records, &lsns, 0);
}
