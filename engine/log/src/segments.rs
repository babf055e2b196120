//! Segment files and log positions.
//!
//! A shard's log is a directory of segments named `NNNNNNNN.log` (8 decimal
//! digits, from `00000001.log`). Segment numbers only grow; reclaim deletes
//! old ones, so the numbers in a directory may have gaps. A record's log
//! sequence number (`Lsn`) is its position: segment number and byte offset.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{FileOp, IoFailure, LogError};

/// First segment number.
pub const SEGMENT_ID_MIN: u32 = 1;
/// Last segment number that fits the 8-digit file name.
pub const SEGMENT_ID_MAX: u32 = 99_999_999;
/// File name suffix of a segment.
pub const SEGMENT_SUFFIX: &str = ".log";
const SEGMENT_DIGITS: usize = 8;

/// Log sequence number: where a record starts. Ordered by segment, then
/// offset; `Lsn::ZERO` is before every record (segment numbers start at 1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn {
    pub segment: u32,
    pub offset: u32,
}

impl Lsn {
    /// Before every record: "nothing yet".
    pub const ZERO: Lsn = Lsn {
        segment: 0,
        offset: 0,
    };

    pub const fn new(segment: u32, offset: u32) -> Self {
        Self { segment, offset }
    }

    /// Packs into a `u64` (segment in the high half) preserving order, for
    /// compact indexes.
    pub const fn to_u64(self) -> u64 {
        ((self.segment as u64) << 32) | self.offset as u64
    }

    // Each half of a u64 fits a u32 exactly: nothing is truncated.
    #[allow(clippy::cast_possible_truncation)]
    pub const fn from_u64(packed: u64) -> Self {
        Self {
            segment: (packed >> 32) as u32,
            offset: (packed & 0xFFFF_FFFF) as u32,
        }
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.segment, self.offset)
    }
}

/// `00000042.log` for segment 42.
pub fn segment_file_name(segment: u32) -> String {
    format!("{segment:0width$}{SEGMENT_SUFFIX}", width = SEGMENT_DIGITS)
}

/// The segment number in a file name, if it is exactly `NNNNNNNN.log` with a
/// number in `SEGMENT_ID_MIN..=SEGMENT_ID_MAX`.
pub fn parse_segment_file_name(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEGMENT_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let segment: u32 = digits.parse().ok()?;
    (SEGMENT_ID_MIN..=SEGMENT_ID_MAX)
        .contains(&segment)
        .then_some(segment)
}

/// Path of a segment in a shard directory.
pub fn segment_path(dir: &Path, segment: u32) -> PathBuf {
    dir.join(segment_file_name(segment))
}

/// The segment numbers present in `dir`, ascending. Other files are ignored
/// (with a warning if they look like a damaged segment name).
pub fn list_segments(dir: &Path) -> Result<Vec<u32>, LogError> {
    let io_error = |failure: std::io::Error| LogError::Io {
        op: FileOp::ListDir,
        path: dir.to_path_buf(),
        failure: IoFailure::from(failure),
    };
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error)? {
        let entry = entry.map_err(io_error)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        match parse_segment_file_name(name) {
            Some(segment) => segments.push(segment),
            None if name.ends_with(SEGMENT_SUFFIX) => {
                tracing::warn!(dir = %dir.display(), file = name, "ignoring file that is not a segment name");
            }
            None => {}
        }
    }
    segments.sort_unstable();
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(segment_file_name(1), "00000001.log");
        assert_eq!(segment_file_name(SEGMENT_ID_MAX), "99999999.log");
        for segment in [1, 9, 10, 12_345_678, SEGMENT_ID_MAX] {
            assert_eq!(
                parse_segment_file_name(&segment_file_name(segment)),
                Some(segment)
            );
        }
    }

    #[test]
    fn bad_names_rejected() {
        for name in [
            "00000000.log",
            "1.log",
            "000000001.log",
            "0000000a.log",
            "00000001.log.tmp",
            "00000001.LOG",
            "+0000001.log",
            "",
        ] {
            assert_eq!(parse_segment_file_name(name), None, "{name}");
        }
    }

    #[test]
    fn lsn_order_and_packing() {
        let a = Lsn::new(1, 4_000_000_000);
        let b = Lsn::new(2, 0);
        assert!(Lsn::ZERO < a && a < b);
        assert!(a.to_u64() < b.to_u64());
        for lsn in [Lsn::ZERO, a, b, Lsn::new(SEGMENT_ID_MAX, u32::MAX)] {
            assert_eq!(Lsn::from_u64(lsn.to_u64()), lsn);
        }
        assert_eq!(b.to_string(), "2:0");
    }

    #[test]
    fn listing_sorts_and_ignores_strangers() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "00000003.log",
            "00000001.log",
            "notes.txt",
            "00000002.log.tmp",
            "12.log",
        ] {
            fs::write(dir.path().join(name), b"").unwrap();
        }
        assert_eq!(list_segments(dir.path()).unwrap(), vec![1, 3]);
        let missing = dir.path().join("missing");
        assert!(matches!(
            list_segments(&missing),
            Err(LogError::Io {
                op: FileOp::ListDir,
                ..
            })
        ));
    }
}
