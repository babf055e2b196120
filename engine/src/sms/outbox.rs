//! The embedded default gateway: an append-only JSON-lines file.
//!
//! Each SMS becomes one line of `<data_dir>/sms-outbox.jsonl`:
//! `{"ts_ms":1700000000000,"phone":"+15551234567","pin":"123456","text":"..."}`.
//!
//! ## Why the file is opened per call
//!
//! Each `send_pin` opens the file with `O_APPEND | O_CREAT`, writes the whole
//! line with a single `write(2)`, and closes it. No `File` and no lock is
//! shared between the shards' blocking threads: the kernel's `O_APPEND`
//! (offset update and write are one atomic step on a local file system) is the
//! only serialization point, and it also holds across processes (two servers
//! on one data dir, a test appending while the server does). Opening per call
//! also means an operator or a test may delete or rotate the file at any time
//! and the next SMS recreates it, instead of writing into an unlinked inode.
//! The cost, one `open` and `close` per SMS, is nothing next to the PIN rate
//! limits that sit in front of this gateway.
//!
//! A short write (only possible on errors such as a full disk) is reported as
//! an error and never completed with a second `write`, because a second write
//! could land after another appender's line and interleave.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{SmsError, SmsGateway, SmsMessage};

/// File name of the outbox inside the data dir.
pub const OUTBOX_FILE_NAME: &str = "sms-outbox.jsonl";

/// One line of the outbox file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Wall-clock time of the append, milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// Destination number (E.164).
    pub phone: String,
    /// The PIN sent.
    pub pin: String,
    /// The full SMS text.
    pub text: String,
}

/// Development gateway: appends each SMS to a JSON-lines file and logs it.
#[derive(Clone, Debug)]
pub struct OutboxGateway {
    path: PathBuf,
}

impl OutboxGateway {
    /// The outbox at `<data_dir>/sms-outbox.jsonl`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join(OUTBOX_FILE_NAME),
        }
    }

    /// An outbox at an explicit file path.
    pub fn with_path(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The outbox file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open(&self) -> std::io::Result<File> {
        let open = || {
            OpenOptions::new()
                .append(true)
                .create(true)
                // The file holds live PINs: readable by the server's user only.
                .mode(0o600)
                .open(&self.path)
        };
        match open() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(parent) = self.path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                open()
            }
            other => other,
        }
    }

    fn append(&self, msg: &SmsMessage) -> std::io::Result<()> {
        let entry = OutboxEntry {
            ts_ms: now_ms(),
            phone: msg.phone.clone(),
            pin: msg.pin.clone(),
            text: msg.text.clone(),
        };
        // JSON escapes control characters, so the line holds no raw newline.
        let mut line = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut file = self.open()?;
        // One write(2) per line: see the module docs.
        let written = file.write(&line)?;
        if written != line.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("short append: {written} of {} bytes", line.len()),
            ));
        }
        Ok(())
    }
}

impl SmsGateway for OutboxGateway {
    fn send_pin(&self, msg: &SmsMessage) -> Result<(), SmsError> {
        self.append(msg).map_err(|source| SmsError::Outbox {
            path: self.path.clone(),
            source,
        })?;
        // This is the development gateway: the PIN is logged on purpose, so a
        // person running `tern serve` locally can read it from the console.
        // The HTTP gateway never logs PINs.
        tracing::info!(
            phone = %msg.phone,
            pin = %msg.pin,
            outbox = %self.path.display(),
            "SMS PIN written to outbox"
        );
        Ok(())
    }

    fn name(&self) -> &'static str {
        "outbox"
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Reads every well-formed entry of an outbox file, in append order.
///
/// A missing or unreadable file reads as empty; lines that do not parse (a
/// torn tail after a crash, say) are skipped.
pub fn read_outbox(path: &Path) -> Vec<OutboxEntry> {
    let Ok(file) = File::open(path) else {
        return Vec::new();
    };
    BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str::<OutboxEntry>(&line).ok())
        .collect()
}

/// The PIN of the newest (last appended) outbox entry for `phone`.
pub fn latest_pin_for(path: &Path, phone: &str) -> Option<String> {
    let Ok(file) = File::open(path) else {
        return None;
    };
    let mut latest = None;
    for line in BufReader::new(file).lines().map_while(Result::ok) {
        if let Ok(entry) = serde_json::from_str::<OutboxEntry>(&line) {
            if entry.phone == phone {
                latest = Some(entry.pin);
            }
        }
    }
    latest
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tern-outbox-unit-{tag}-{}-{}",
            std::process::id(),
            now_ms()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn creates_file_and_dir_with_private_mode_and_skips_torn_lines() {
        let dir = temp_dir("create");
        let nested = dir.join("not-yet");
        let gw = OutboxGateway::new(&nested);
        assert_eq!(gw.name(), "outbox");
        assert!(!gw.path().exists());
        gw.send_pin(&SmsMessage::pin_code("+15550000001", "111111", 10))
            .unwrap();
        let mode = std::fs::metadata(gw.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        // A torn line (no closing brace, no newline) is skipped by readers.
        let mut f = OpenOptions::new().append(true).open(gw.path()).unwrap();
        f.write_all(b"{\"ts_ms\":1,\"phone\":\"+1555000\n").unwrap();
        gw.send_pin(&SmsMessage::pin_code("+15550000001", "222222", 10))
            .unwrap();
        let entries = read_outbox(gw.path());
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].pin, "111111");
        assert_eq!(entries[1].pin, "222222");
        assert_eq!(
            entries[1].text,
            "Your Tern code is 222222. It expires in 10 minutes."
        );
        assert!(entries[0].ts_ms > 1_600_000_000_000);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_file_reads_empty() {
        let p = std::env::temp_dir().join("tern-outbox-definitely-missing.jsonl");
        assert!(read_outbox(&p).is_empty());
        assert_eq!(latest_pin_for(&p, "+1"), None);
    }

    #[test]
    fn unwritable_path_is_an_outbox_error() {
        let dir = temp_dir("err");
        // The outbox path is a directory: open fails.
        let gw = OutboxGateway::with_path(dir.clone());
        let err = gw
            .send_pin(&SmsMessage::pin_code("+1", "1", 10))
            .unwrap_err();
        match err {
            SmsError::Outbox { path, .. } => assert_eq!(path, dir),
            other => panic!("unexpected error {other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
