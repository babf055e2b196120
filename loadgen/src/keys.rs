//! The device-key cache: users registered by an earlier run log in directly
//! next time. One JSON object per line:
//! `{"phone":"+15550000000","user_id":15550000000,"key":"<64 hex>","generation":1}`.
//! The file holds secrets (each key logs in as its user): it is written
//! with mode 0600, to a temporary file renamed over the old one.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tern_wire::DeviceKey;

use crate::error::LoadgenError;

/// One cached registration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    /// E.164 number.
    pub phone: String,
    /// The number's digits.
    pub user_id: u64,
    /// Device key, hex.
    pub key: String,
    /// Registration generation.
    pub generation: u32,
}

impl KeyEntry {
    /// The device key, if the hex is well formed.
    pub fn device_key(&self) -> Option<DeviceKey> {
        DeviceKey::from_hex(&self.key)
    }
}

/// Loads the cache; a missing file is an empty cache, bad lines are
/// skipped.
pub fn load(path: &Path) -> Result<HashMap<u64, KeyEntry>, LoadgenError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(source) => {
            return Err(LoadgenError::File {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<KeyEntry>(l).ok())
        .filter(|e| e.device_key().is_some())
        .map(|e| (e.user_id, e))
        .collect())
}

/// Writes the whole cache (sorted by user id) atomically, mode 0600.
pub fn save(path: &Path, keys: &HashMap<u64, KeyEntry>) -> Result<(), LoadgenError> {
    let file_err = |source| LoadgenError::File {
        path: path.to_path_buf(),
        source,
    };
    let mut entries: Vec<&KeyEntry> = keys.values().collect();
    entries.sort_by_key(|e| e.user_id);
    let mut text = String::with_capacity(entries.len() * 128);
    for e in entries {
        text.push_str(&serde_json::to_string(e)?);
        text.push('\n');
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(file_err)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(file_err)?;
    f.write_all(text.as_bytes()).map_err(file_err)?;
    f.sync_all().map_err(file_err)?;
    std::fs::rename(&tmp, path).map_err(file_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn save_then_load_round_trips_with_private_mode() {
        let dir = std::env::temp_dir().join(format!("tern-loadgen-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("keys.jsonl");
        assert!(load(&path).unwrap().is_empty());
        let mut keys = HashMap::new();
        for i in 0..3u64 {
            keys.insert(
                100 + i,
                KeyEntry {
                    phone: format!("+{}", 100 + i),
                    user_id: 100 + i,
                    key: DeviceKey([u8::try_from(i).unwrap(); 32]).to_hex(),
                    generation: 1,
                },
            );
        }
        save(&path, &keys).unwrap();
        assert_eq!(load(&path).unwrap(), keys);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Junk lines and bad keys are skipped.
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("junk\n{\"phone\":\"+1\",\"user_id\":1,\"key\":\"zz\",\"generation\":1}\n");
        std::fs::write(&path, text).unwrap();
        assert_eq!(load(&path).unwrap().len(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
