//! An in-memory disk for tests and deterministic simulation.
//!
//! It executes writer requests like the file driver does and remembers, per
//! segment, how much was written and how much of that was synced, so a test
//! can take the image a crash would leave: everything synced, plus any prefix
//! of what was written after (a torn write).

use std::collections::BTreeMap;
use std::io;

use crate::error::IoFailure;
use crate::writer::{IoDriver, IoRequest};

#[derive(Debug, Clone, Default)]
struct MemSegment {
    bytes: Vec<u8>,
    written_bytes: usize,
    synced_bytes: usize,
}

/// Segments in memory; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct MemDisk {
    segments: BTreeMap<u32, MemSegment>,
    preallocate: bool,
}

fn failure(kind: io::ErrorKind, message: &str) -> IoFailure {
    IoFailure {
        kind,
        os_code: None,
        message: message.to_owned(),
    }
}

impl MemDisk {
    /// `preallocate`: new segments are full-size and zero-filled, as with the
    /// file driver's preallocation.
    pub fn new(preallocate: bool) -> Self {
        Self {
            segments: BTreeMap::new(),
            preallocate,
        }
    }

    /// Segment numbers present, ascending.
    pub fn segments(&self) -> Vec<u32> {
        self.segments.keys().copied().collect()
    }

    /// `(written, synced)` byte counts of a segment.
    pub fn watermarks(&self, segment: u32) -> Option<(usize, usize)> {
        self.segments
            .get(&segment)
            .map(|s| (s.written_bytes, s.synced_bytes))
    }

    /// What the files hold now; also what survives kill -9 of the process
    /// (the page cache outlives it).
    pub fn image(&self) -> Vec<(u32, Vec<u8>)> {
        self.segments
            .iter()
            .map(|(&segment, s)| (segment, s.bytes.clone()))
            .collect()
    }

    /// What a power loss could leave: per segment, `keep(segment, synced,
    /// written)` chooses how many written bytes survive; it is clamped to
    /// `synced..=written`. Lost bytes read as zero in a preallocated segment
    /// and are absent otherwise.
    pub fn crash_image(
        &self,
        mut keep: impl FnMut(u32, usize, usize) -> usize,
    ) -> Vec<(u32, Vec<u8>)> {
        self.segments
            .iter()
            .map(|(&segment, s)| {
                let kept = keep(segment, s.synced_bytes, s.written_bytes)
                    .clamp(s.synced_bytes, s.written_bytes);
                let mut bytes = s.bytes.clone();
                if self.preallocate {
                    if let Some(lost) = bytes.get_mut(kept..s.written_bytes) {
                        lost.fill(0);
                    }
                } else {
                    bytes.truncate(kept);
                }
                (segment, bytes)
            })
            .collect()
    }
}

impl IoDriver for MemDisk {
    fn execute(&mut self, request: &IoRequest) -> Result<(), IoFailure> {
        match request {
            IoRequest::CreateSegment {
                segment,
                segment_bytes_max,
                ..
            } => {
                if self.segments.contains_key(segment) {
                    return Err(failure(io::ErrorKind::AlreadyExists, "segment exists"));
                }
                let bytes = if self.preallocate {
                    vec![0; *segment_bytes_max as usize]
                } else {
                    Vec::new()
                };
                self.segments.insert(
                    *segment,
                    MemSegment {
                        bytes,
                        written_bytes: 0,
                        synced_bytes: 0,
                    },
                );
                Ok(())
            }
            IoRequest::Write {
                segment,
                offset,
                bytes,
                ..
            } => {
                let s = self
                    .segments
                    .get_mut(segment)
                    .ok_or_else(|| failure(io::ErrorKind::NotFound, "no such segment"))?;
                let start = *offset as usize;
                if start != s.written_bytes {
                    // The writer only appends; anything else is a bug worth failing on.
                    return Err(failure(
                        io::ErrorKind::InvalidInput,
                        "write is not an append",
                    ));
                }
                let end = start + bytes.len();
                if s.bytes.len() < end {
                    s.bytes.resize(end, 0);
                }
                if let Some(target) = s.bytes.get_mut(start..end) {
                    target.copy_from_slice(bytes);
                }
                s.written_bytes = end;
                Ok(())
            }
            IoRequest::Sync { segment, .. } => {
                let s = self
                    .segments
                    .get_mut(segment)
                    .ok_or_else(|| failure(io::ErrorKind::NotFound, "no such segment"))?;
                s.synced_bytes = s.written_bytes;
                Ok(())
            }
            IoRequest::DeleteSegment { segment, .. } => self
                .segments
                .remove(segment)
                .map(|_| ())
                .ok_or_else(|| failure(io::ErrorKind::NotFound, "no such segment")),
        }
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // Test data: small lengths and byte patterns.
mod tests {
    use super::*;
    use crate::recovery::{recover, RecoveryOptions, SegmentEnd};
    use crate::segments::Lsn;
    use crate::writer::{drive, Durability, Writer, WriterOptions, WriterStart};

    fn options() -> WriterOptions {
        WriterOptions {
            durability: Durability::Fsync,
            segment_bytes_max: 4096,
            batch_bytes_max: 1024,
            pending_bytes_max: 1 << 20,
        }
    }

    fn payload(i: usize) -> Vec<u8> {
        (0..(i * 37) % 300).map(|j| (i + j) as u8).collect()
    }

    #[test]
    fn writer_and_recovery_agree_over_segments() {
        for preallocate in [false, true] {
            let mut disk = MemDisk::new(preallocate);
            let mut w = Writer::new(options(), WriterStart::empty()).unwrap();
            let mut expected = Vec::new();
            for i in 0..200 {
                let lsn = w.append(1 + (i % 9) as u8, &payload(i)).unwrap();
                expected.push((lsn, 1 + (i % 9) as u8, payload(i)));
                if i % 17 == 0 {
                    drive(&mut w, &mut disk).unwrap();
                }
            }
            drive(&mut w, &mut disk).unwrap();
            assert_eq!(w.durable_lsn(), expected.last().unwrap().0);
            assert!(disk.segments().len() > 3, "rolled over several segments");
            let image = disk.image();
            let refs: Vec<(u32, &[u8])> = image.iter().map(|(s, b)| (*s, &b[..])).collect();
            let mut got = Vec::new();
            let summary = recover(&refs, &RecoveryOptions::default(), |lsn, r| {
                got.push((lsn, r.kind, r.payload.to_vec()))
            })
            .unwrap();
            assert_eq!(got, expected);
            assert!(summary.torn_tail().is_none());
        }
    }

    #[test]
    fn any_power_loss_keeps_everything_durable() {
        // Stop the writer in the middle of a commit, then lose any part of
        // what was written but not synced.
        for preallocate in [false, true] {
            let mut disk = MemDisk::new(preallocate);
            let mut w = Writer::new(options(), WriterStart::empty()).unwrap();
            let mut appended = Vec::new();
            for i in 0..60 {
                appended.push(w.append(2, &payload(i)).unwrap());
            }
            drive(&mut w, &mut disk).unwrap();
            for i in 60..70 {
                appended.push(w.append(2, &payload(i)).unwrap());
            }
            // Execute the next commit up to its Write, not its Sync.
            let write_segment = loop {
                let request = w.poll_io().unwrap();
                disk.execute(&request).unwrap();
                if request.op() == crate::error::IoOp::Write {
                    break request.segment();
                }
            };
            let durable = w.durable_lsn();
            let (written, synced) = disk.watermarks(write_segment).unwrap();
            assert!(written > synced);
            for keep_extra in 0..=(written - synced) {
                let image = disk.crash_image(|_, synced, _| synced + keep_extra);
                let refs: Vec<(u32, &[u8])> = image.iter().map(|(s, b)| (*s, &b[..])).collect();
                let mut got = Vec::new();
                let summary =
                    recover(&refs, &RecoveryOptions::default(), |lsn, _| got.push(lsn)).unwrap();
                let must: Vec<Lsn> = appended.iter().copied().filter(|l| *l <= durable).collect();
                assert_eq!(&got[..must.len()], &must[..], "keep {keep_extra}");
                assert!(got.iter().all(|l| appended.contains(l)));
                let last = summary.segments.last().unwrap().end;
                assert!(
                    matches!(
                        last,
                        SegmentEnd::Clean { .. }
                            | SegmentEnd::ZeroFill { .. }
                            | SegmentEnd::TornTail { .. }
                    ),
                    "{last:?}"
                );
            }
        }
    }

    #[test]
    fn driver_refuses_what_the_writer_never_asks() {
        let mut disk = MemDisk::new(false);
        let create = IoRequest::CreateSegment {
            id: crate::writer::RequestId(1),
            segment: 1,
            segment_bytes_max: 100,
        };
        disk.execute(&create).unwrap();
        assert_eq!(
            disk.execute(&create).map_err(|f| f.kind),
            Err(io::ErrorKind::AlreadyExists)
        );
        let gap = IoRequest::Write {
            id: crate::writer::RequestId(2),
            segment: 1,
            offset: 5,
            bytes: vec![1],
        };
        assert!(disk.execute(&gap).is_err());
        let missing = IoRequest::Sync {
            id: crate::writer::RequestId(3),
            segment: 9,
        };
        assert!(disk.execute(&missing).is_err());
    }
}
