//! Reading PINs from the server's SMS outbox file
//! (`<data-dir>/sms-outbox.jsonl`, one JSON object per line with `phone`
//! and `pin`).
//!
//! Thousands of registrations must not each re-read the whole file, so the
//! index remembers how far it has read and parses only what was appended
//! since. The server appends the line before it answers `PinSent`, so a
//! refresh after `PinSent` always finds the new PIN; the newest line for a
//! number wins.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Longest outbox line kept while waiting for its end (a real one is
/// ~150 bytes); a longer partial line is dropped.
pub const LINE_LEN_MAX: usize = 64 * 1024;

#[derive(Deserialize)]
struct Line {
    phone: String,
    pin: String,
}

/// The newest PIN per phone number, read incrementally.
#[derive(Debug)]
pub struct OutboxIndex {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    pins: HashMap<String, String>,
    lines: u64,
}

impl OutboxIndex {
    /// An index of the file at `path` (nothing read yet).
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            offset: 0,
            partial: Vec::new(),
            pins: HashMap::new(),
            lines: 0,
        }
    }

    /// Reads what was appended since the last call. A file that shrank
    /// (rotated or deleted and recreated) is read again from the start.
    pub fn refresh(&mut self) -> std::io::Result<()> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        if len < self.offset {
            self.offset = 0;
            self.partial.clear();
        }
        if len == self.offset {
            return Ok(());
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        let read = file.take(len - self.offset).read_to_end(&mut buf)?;
        self.offset += read as u64;
        self.partial.extend_from_slice(&buf);
        let mut start = 0;
        while let Some(nl) = self
            .partial
            .get(start..)
            .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
        {
            let line = self.partial.get(start..start + nl).unwrap_or_default();
            if let Ok(l) = serde_json::from_slice::<Line>(line) {
                self.pins.insert(l.phone, l.pin);
                self.lines += 1;
            }
            start += nl + 1;
        }
        self.partial.drain(..start.min(self.partial.len()));
        if self.partial.len() > LINE_LEN_MAX {
            self.partial.clear();
        }
        Ok(())
    }

    /// The newest PIN for `phone`, after reading anything new.
    pub fn pin_for(&mut self, phone: &str) -> std::io::Result<Option<String>> {
        self.refresh()?;
        Ok(self.pins.get(phone).cloned())
    }

    /// Well-formed lines read so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tern-loadgen-outbox-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("sms-outbox.jsonl")
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn reads_incrementally_and_newest_pin_wins() {
        let path = temp("incr");
        let mut idx = OutboxIndex::new(&path);
        assert_eq!(
            idx.pin_for("+1").unwrap(),
            None,
            "missing file reads as empty"
        );
        append(
            &path,
            "{\"ts_ms\":1,\"phone\":\"+1555\",\"pin\":\"111111\",\"text\":\"x\"}\n",
        );
        assert_eq!(idx.pin_for("+1555").unwrap().as_deref(), Some("111111"));
        // A torn tail waits for its newline.
        append(&path, "{\"ts_ms\":2,\"phone\":\"+1555\",\"pin\":\"222");
        assert_eq!(idx.pin_for("+1555").unwrap().as_deref(), Some("111111"));
        append(&path, "222\",\"text\":\"x\"}\nnot json\n");
        assert_eq!(idx.pin_for("+1555").unwrap().as_deref(), Some("222222"));
        assert_eq!(idx.lines(), 2);
        // Truncation: read again from the start.
        std::fs::write(&path, "{\"phone\":\"+1666\",\"pin\":\"333333\"}\n").unwrap();
        assert_eq!(idx.pin_for("+1666").unwrap().as_deref(), Some("333333"));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
