//! A device's credentials and the small text key file that keeps them.
//!
//! The file is `key = value` lines (`#` starts a comment):
//!
//! ```text
//! # Tern device key for +15551234567. Secret: it logs in as you.
//! user_id = 15551234567
//! device_key = <64 hex digits>
//! generation = 1
//! ```
//!
//! It is written to a temporary file with mode 0600 (owner read/write only)
//! and renamed over the old one, so a crash never leaves half a key.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use tern_wire::DeviceKey;

use crate::error::{ArgumentReason, ClientError};
use crate::ids::display_user_id;

/// Largest key file accepted by [`Credentials::load`]; a real one is ~200 B.
pub const KEY_FILE_LEN_MAX: u64 = 4096;

/// What a registered device needs to log in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The user id (the phone number's digits).
    pub user_id: u64,
    /// The device key (secret; `Debug` redacts it).
    pub key: DeviceKey,
    /// The registration generation the key belongs to.
    pub generation: u32,
}

impl Credentials {
    /// The key file text.
    pub fn to_key_file(&self) -> String {
        format!(
            "# Tern device key for {}. Secret: it logs in as you.\n\
             user_id = {}\n\
             device_key = {}\n\
             generation = {}\n",
            display_user_id(self.user_id),
            self.user_id,
            self.key.to_hex(),
            self.generation
        )
    }

    /// Parses key file text; `path` only names the file in errors. Unknown
    /// keys are ignored (newer writers); `generation` defaults to 0.
    pub fn parse_key_file(text: &str, path: &Path) -> Result<Self, ClientError> {
        let bad = |detail: &str| {
            ClientError::InvalidArgument(ArgumentReason::BadKeyFile {
                path: path.to_path_buf(),
                detail: detail.to_owned(),
            })
        };
        let mut user_id = None;
        let mut key = None;
        let mut generation = 0u32;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, value) = line
                .split_once('=')
                .ok_or_else(|| bad("a line is not `key = value`"))?;
            let value = value.trim();
            match name.trim() {
                "user_id" => {
                    let id = value
                        .parse::<u64>()
                        .map_err(|_| bad("user_id is not a number"))?;
                    user_id = Some(id);
                }
                "device_key" => {
                    key = Some(
                        DeviceKey::from_hex(value)
                            .ok_or_else(|| bad("device_key is not 64 hex digits"))?,
                    );
                }
                "generation" => {
                    generation = value
                        .parse::<u32>()
                        .map_err(|_| bad("generation is not a number"))?;
                }
                _ => {}
            }
        }
        Ok(Self {
            user_id: user_id.ok_or_else(|| bad("user_id is missing"))?,
            key: key.ok_or_else(|| bad("device_key is missing"))?,
            generation,
        })
    }

    /// Reads a key file.
    pub fn load(path: &Path) -> Result<Self, ClientError> {
        let len = fs::metadata(path)?.len();
        if len > KEY_FILE_LEN_MAX {
            return Err(ClientError::InvalidArgument(ArgumentReason::BadKeyFile {
                path: path.to_path_buf(),
                detail: format!("{len} bytes, more than a key file ever holds"),
            }));
        }
        let text = fs::read_to_string(path)?;
        Self::parse_key_file(&text, path)
    }

    /// Writes the key file with mode 0600, atomically (temporary file, then
    /// rename over `path`).
    pub fn save(&self, path: &Path) -> Result<(), ClientError> {
        let tmp = temp_path(path);
        // A stale temporary file from a crash may have other permissions;
        // start from nothing so the mode below applies.
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let written = (|| -> std::io::Result<()> {
            let mut file = options.open(&tmp)?;
            file.write_all(self.to_key_file().as_bytes())?;
            file.sync_all()?;
            fs::rename(&tmp, path)
        })();
        if written.is_err() {
            // Best effort: the write already failed; do not leave a copy of
            // the key behind. The original error is what the caller needs.
            let _ = fs::remove_file(&tmp);
        }
        written.map_err(ClientError::from)
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials {
            user_id: 15_551_234_567,
            key: DeviceKey(core::array::from_fn(|i| u8::try_from(i * 3).unwrap())),
            generation: 7,
        }
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("tern-client-{tag}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn key_file_text_round_trips() {
        let c = creds();
        let text = c.to_key_file();
        assert!(text.contains("user_id = 15551234567"));
        assert!(text.contains(&c.key.to_hex()));
        assert_eq!(
            Credentials::parse_key_file(&text, Path::new("k")).unwrap(),
            c
        );
    }

    #[test]
    fn key_file_parse_rejects_missing_and_bad_fields() {
        let p = Path::new("k");
        let hex = creds().key.to_hex();
        for bad in [
            String::new(),
            "user_id = 1\n".to_owned(),
            format!("device_key = {hex}\n"),
            format!("user_id = x\ndevice_key = {hex}\n"),
            "user_id = 1\ndevice_key = abcd\n".to_owned(),
            format!("user_id = 1\ndevice_key = {hex}\ngeneration = -1\n"),
            format!("user_id 1\ndevice_key = {hex}\n"),
        ] {
            assert!(
                matches!(
                    Credentials::parse_key_file(&bad, p),
                    Err(ClientError::InvalidArgument(
                        ArgumentReason::BadKeyFile { .. }
                    ))
                ),
                "accepted {bad:?}"
            );
        }
        let ok = format!("# c\n\nuser_id=1\ndevice_key={hex}\nfuture = x\n");
        let c = Credentials::parse_key_file(&ok, p).unwrap();
        assert_eq!((c.user_id, c.generation), (1, 0));
    }

    #[test]
    fn save_then_load_round_trips_with_owner_only_mode() {
        let dir = temp_dir("keyfile");
        let path = dir.join("tern-device.key");
        let c = creds();
        c.save(&path).unwrap();
        assert_eq!(Credentials::load(&path).unwrap(), c);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        // Overwrite an existing, world-readable file: the new one is 0600.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
            let c2 = Credentials { generation: 8, ..c };
            c2.save(&path).unwrap();
            assert_eq!(Credentials::load(&path).unwrap(), c2);
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert!(!temp_path(&path).exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn load_refuses_oversized_and_missing_files() {
        let dir = temp_dir("keyfile-big");
        let path = dir.join("big.key");
        fs::write(&path, vec![b'#'; 5000]).unwrap();
        assert!(matches!(
            Credentials::load(&path),
            Err(ClientError::InvalidArgument(
                ArgumentReason::BadKeyFile { .. }
            ))
        ));
        assert!(matches!(
            Credentials::load(&dir.join("absent.key")),
            Err(ClientError::Io(_))
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
