//! Property: after a crash at any point, recovery returns every record up to
//! the last `durable_lsn`, in order, then possibly some later ones (a prefix
//! of what was appended), and nothing corrupt.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use proptest::prelude::*;
use tern_log::{
    open_log, recover, segment_file_name, Durability, IoDriver, IoFailure, IoRequest, LogOptions,
    Lsn, MemDisk, Preallocation, RecoveryOptions, Writer, WriterOptions, WriterStart,
};

#[derive(Debug, Clone)]
enum Step {
    Append(usize),
    /// Run I/O until the writer is idle.
    DriveAll,
    /// Run this many requests, possibly stopping between a write and its sync.
    DriveSome(usize),
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        prop_oneof![
            6 => (0usize..400).prop_map(Step::Append),
            1 => Just(Step::DriveAll),
            2 => (1usize..4).prop_map(Step::DriveSome),
        ],
        1..60,
    )
}

fn writer_options() -> WriterOptions {
    WriterOptions {
        durability: Durability::Fsync,
        segment_bytes_max: 2048,
        batch_bytes_max: 1024,
        pending_bytes_max: 1 << 20,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Appended {
    lsn: Lsn,
    kind: u8,
    payload: Vec<u8>,
}

fn make_record(serial: usize, len: usize) -> (u8, Vec<u8>) {
    let payload = (0..len).map(|j| (serial * 7 + j) as u8).collect();
    (1 + (serial % 200) as u8, payload)
}

/// Runs `steps` against the writer, recording every accepted append.
fn run_steps(
    steps: &[Step],
    writer: &mut Writer,
    driver: &mut dyn IoDriver,
    appended: &mut Vec<Appended>,
    serial: &mut usize,
) {
    for step in steps {
        match step {
            Step::Append(len) => {
                let (kind, payload) = make_record(*serial, *len);
                *serial += 1;
                let lsn = writer.append(kind, &payload).unwrap();
                appended.push(Appended { lsn, kind, payload });
            }
            Step::DriveAll => {
                tern_log::drive(writer, driver).unwrap();
            }
            Step::DriveSome(count) => {
                for _ in 0..*count {
                    let Some(request) = writer.poll_io() else {
                        break;
                    };
                    let result = driver.execute(&request);
                    writer.handle_io_done(request.id(), result).unwrap();
                }
            }
        }
    }
}

/// Wraps the file driver and remembers, per segment, how many bytes were
/// written and how many of those a completed fdatasync covered: the test's
/// own view of what is on stable storage, independent of the writer's.
struct SyncTracker<'a> {
    inner: &'a mut dyn IoDriver,
    written: BTreeMap<u32, u32>,
    synced: BTreeMap<u32, u32>,
}

impl IoDriver for SyncTracker<'_> {
    fn execute(&mut self, request: &IoRequest) -> Result<(), IoFailure> {
        self.inner.execute(request)?;
        match request {
            IoRequest::CreateSegment { segment, .. } => {
                self.written.insert(*segment, 0);
                self.synced.insert(*segment, 0);
            }
            IoRequest::Write {
                segment,
                offset,
                bytes,
                ..
            } => {
                let end = offset + bytes.len() as u32;
                let written = self.written.entry(*segment).or_default();
                *written = (*written).max(end);
            }
            IoRequest::Sync { segment, .. } => {
                let written = self.written.get(segment).copied().unwrap_or(0);
                self.synced.insert(*segment, written);
            }
            IoRequest::DeleteSegment { segment, .. } => {
                self.written.remove(segment);
                self.synced.remove(segment);
            }
        }
        Ok(())
    }
}

/// Checks that `got` is a prefix of `appended` covering everything durable;
/// returns its length.
fn check_prefix(got: &[Appended], appended: &[Appended], durable: Lsn) -> usize {
    let durable_count = appended.iter().filter(|a| a.lsn <= durable).count();
    assert!(
        got.len() >= durable_count,
        "lost durable records: got {}, durable {durable_count}",
        got.len()
    );
    assert!(got.len() <= appended.len());
    assert_eq!(
        got,
        &appended[..got.len()],
        "recovered records are not a prefix"
    );
    got.len()
}

/// Simulates a power loss: each segment keeps what a completed fdatasync
/// covered (segments from earlier lives were synced at open) and loses any
/// suffix of the rest (cut, or zeroed if preallocated). `cuts` picks points.
fn crash(dir: &Path, synced: &BTreeMap<u32, u32>, cuts: &[u32], preallocated: bool) {
    let mut cuts = cuts.iter().cycle();
    for segment in tern_log::segments::list_segments(dir).unwrap() {
        let path = dir.join(segment_file_name(segment));
        let len = fs::metadata(&path).unwrap().len() as u32;
        let keep_min = synced.get(&segment).copied().unwrap_or(len);
        assert!(
            keep_min <= len,
            "synced bytes missing from {}",
            path.display()
        );
        let span = len - keep_min;
        let cut = keep_min + cuts.next().copied().unwrap_or(0) % (span + 1);
        if preallocated {
            let mut bytes = fs::read(&path).unwrap();
            bytes[cut as usize..].fill(0);
            fs::write(&path, bytes).unwrap();
        } else {
            fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(u64::from(cut))
                .unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn real_files_crash_anywhere_recover_everything_durable(
        lives in prop::collection::vec((steps(), prop::collection::vec(any::<u32>(), 4)), 1..4),
        preallocated in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions {
            writer: writer_options(),
            repair: false,
            preallocation: if preallocated { Preallocation::Fallocate } else { Preallocation::None },
        };
        let mut appended: Vec<Appended> = Vec::new();
        let mut serial = 0usize;
        for (steps, cuts) in &lives {
            let mut log = open_log(dir.path(), &options).unwrap();
            let got: Vec<Appended> = log
                .recovered
                .records
                .iter()
                .map(|r| Appended { lsn: r.lsn, kind: r.kind, payload: r.payload.clone() })
                .collect();
            // Everything from the previous life was already checked; here the
            // log must be exactly what survived.
            prop_assert_eq!(&got, &appended);
            let mut tracker = SyncTracker {
                inner: &mut log.driver,
                written: BTreeMap::new(),
                synced: BTreeMap::new(),
            };
            run_steps(steps, &mut log.writer, &mut tracker, &mut appended, &mut serial);
            let synced = tracker.synced;
            let durable = log.writer.durable_lsn();
            drop(log);
            crash(dir.path(), &synced, cuts, preallocated);
            let reopened = open_log(dir.path(), &options).unwrap();
            let got: Vec<Appended> = reopened
                .recovered
                .records
                .iter()
                .map(|r| Appended { lsn: r.lsn, kind: r.kind, payload: r.payload.clone() })
                .collect();
            let kept = check_prefix(&got, &appended, durable);
            appended.truncate(kept);
            prop_assert_eq!(
                reopened.writer.durable_lsn(),
                appended.last().map_or(durable, |a| a.lsn)
            );
        }
    }

    #[test]
    fn mem_disk_power_loss_keeps_every_durable_record(
        steps in steps(),
        keeps in prop::collection::vec(any::<u32>(), 4),
        preallocate in any::<bool>(),
    ) {
        let mut disk = MemDisk::new(preallocate);
        let mut writer = Writer::new(writer_options(), WriterStart::empty()).unwrap();
        let mut appended = Vec::new();
        let mut serial = 0;
        run_steps(&steps, &mut writer, &mut disk, &mut appended, &mut serial);
        let durable = writer.durable_lsn();
        let mut keeps = keeps.iter().cycle();
        let image = disk.crash_image(|_, synced, written| {
            synced + *keeps.next().unwrap() as usize % (written - synced + 1)
        });
        let refs: Vec<(u32, &[u8])> = image.iter().map(|(s, b)| (*s, &b[..])).collect();
        let mut got = Vec::new();
        let summary = recover(&refs, &RecoveryOptions::default(), |lsn, r| {
            got.push(Appended { lsn, kind: r.kind, payload: r.payload.to_vec() })
        })
        .unwrap();
        check_prefix(&got, &appended, durable);
        prop_assert!(summary.repaired().next().is_none());
    }
}
