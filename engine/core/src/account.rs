//! The accounts of the users homed on one shard: for each, the hash of its
//! current device key and the key's generation.
//!
//! State changes only through [`AccountEvent`]s passed to
//! [`AccountTable::apply`]; live registration builds the event, the caller logs
//! it, and the same `apply` replays it after a restart. One code path, so
//! replay cannot drift from live behaviour.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tern_wire::{DeviceKey, ErrorCode, DEVICE_KEY_LEN};

use crate::hash::IdMap;
use crate::user::UserId;

/// SHA-256 of a device key: all the server keeps of it.
pub type KeyHash = [u8; 32];

/// Hashes a device key for storage and comparison.
///
/// Plain SHA-256, no slow KDF (argon2, scrypt, bcrypt): those exist to make
/// guessing *low-entropy human passwords* expensive. A device key is 256
/// bits from a CSPRNG; finding a key for a stolen hash means searching
/// 2^256 candidates, out of reach at any hash speed. A slow KDF would add
/// nothing but CPU per login, which at millions of logins after a restart
/// is an outage (and a denial-of-service lever).
pub fn key_hash(key: &DeviceKey) -> KeyHash {
    Sha256::digest(key.0).into()
}

/// A new random device key.
pub fn new_device_key(rng: &mut impl rand::RngCore) -> DeviceKey {
    let mut key = [0u8; DEVICE_KEY_LEN];
    rng.fill_bytes(&mut key);
    DeviceKey(key)
}

/// A change to the account table: the unit the log records and replays.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountEvent {
    /// `user` registered (again) with a key hashing to `key_hash`; its
    /// device generation is now `generation`, and every older key is dead.
    Registered {
        /// The user.
        user: UserId,
        /// Device generation, 1 for the first registration.
        generation: u32,
        /// Hash of the new device key.
        key_hash: KeyHash,
    },
}

/// Why an account change was refused.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountError {
    /// The user re-registered `u32::MAX` times; no generation is left.
    GenerationExhausted {
        /// The user.
        user: UserId,
    },
    /// A replayed event does not advance the generation (log out of order
    /// or corrupt).
    StaleGeneration {
        /// The user.
        user: UserId,
        /// Generation already held.
        current: u32,
        /// Generation in the event.
        event: u32,
    },
}

impl AccountEvent {
    /// The user the event is about.
    pub fn user(&self) -> UserId {
        match self {
            Self::Registered { user, .. } => *user,
        }
    }

    /// The device generation the event sets.
    pub fn generation(&self) -> u32 {
        match self {
            Self::Registered { generation, .. } => *generation,
        }
    }
}

impl AccountError {
    /// The protocol code for this error.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::Internal
    }
}

impl fmt::Display for AccountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::GenerationExhausted { user } => {
                write!(f, "user {user}: device generations exhausted")
            }
            Self::StaleGeneration {
                user,
                current,
                event,
            } => write!(
                f,
                "user {user}: event generation {event} does not advance current {current}"
            ),
        }
    }
}

impl std::error::Error for AccountError {}

/// Why a login was refused. The client only ever sees `LoginFailed`; the
/// reason is for logs and metrics.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginFail {
    /// No account for this user on this shard.
    UnknownUser,
    /// The key is not the current one (wrong, or replaced).
    BadKey,
}

impl LoginFail {
    /// The protocol code for this error: the same for both reasons, so a
    /// client cannot probe which numbers are registered.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::LoginFailed
    }
}

impl fmt::Display for LoginFail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownUser => write!(f, "login failed: unknown user"),
            Self::BadKey => write!(f, "login failed: wrong or replaced device key"),
        }
    }
}

impl std::error::Error for LoginFail {}

#[derive(Clone, Copy)]
struct Account {
    key_hash: KeyHash,
    generation: u32,
}

/// The account table of one shard.
#[derive(Default)]
pub struct AccountTable {
    /// Keyed fast hash: its keys are registered numbers (each one went
    /// through an SMS PIN), see `crate::hash` on HashDoS.
    accounts: IdMap<UserId, Account>,
}

impl fmt::Debug for AccountTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountTable")
            .field("len", &self.accounts.len())
            .finish_non_exhaustive()
    }
}

impl AccountTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The event that registers `user` with `key_hash`, without applying
    /// it: log it, then [`apply`](Self::apply) it once durable.
    pub fn prepare_register(
        &self,
        user: UserId,
        key_hash: KeyHash,
    ) -> Result<AccountEvent, AccountError> {
        let current = self.generation(user).unwrap_or(0);
        let generation = current
            .checked_add(1)
            .ok_or(AccountError::GenerationExhausted { user })?;
        Ok(AccountEvent::Registered {
            user,
            generation,
            key_hash,
        })
    }

    /// Registers `user` with a new key (prepare + apply). The returned
    /// event carries the new generation; sessions of this user logged in
    /// with an older generation are to be kicked (`DeviceReplaced`).
    pub fn register(
        &mut self,
        user: UserId,
        key_hash: KeyHash,
    ) -> Result<AccountEvent, AccountError> {
        let event = self.prepare_register(user, key_hash)?;
        self.apply(&event)?;
        Ok(event)
    }

    /// Applies an event, live or replayed. Generations must strictly
    /// increase per user (gaps are fine: a snapshot restores a table
    /// without its history).
    pub fn apply(&mut self, event: &AccountEvent) -> Result<(), AccountError> {
        match *event {
            AccountEvent::Registered {
                user,
                generation,
                key_hash,
            } => {
                let current = self.generation(user).unwrap_or(0);
                if generation <= current {
                    return Err(AccountError::StaleGeneration {
                        user,
                        current,
                        event: generation,
                    });
                }
                self.accounts.insert(
                    user,
                    Account {
                        key_hash,
                        generation,
                    },
                );
                Ok(())
            }
        }
    }

    /// Checks a login. Hashes the key (the bulk of the work, done for known
    /// and unknown users alike) and compares in constant time.
    /// Returns the generation the session runs under.
    pub fn verify(&self, user: UserId, key: &DeviceKey) -> Result<u32, LoginFail> {
        let given = key_hash(key);
        match self.accounts.get(&user) {
            Some(account) => {
                if bool::from(account.key_hash.ct_eq(&given)) {
                    Ok(account.generation)
                } else {
                    Err(LoginFail::BadKey)
                }
            }
            None => Err(LoginFail::UnknownUser),
        }
    }

    /// The current generation of `user`, if registered.
    pub fn generation(&self, user: UserId) -> Option<u32> {
        self.accounts.get(&user).map(|a| a.generation)
    }

    /// True when `event` is exactly the account's current state (same
    /// generation and key): replaying it changes nothing (a copy made by
    /// log reclaim), and it is the record reclaim must keep.
    pub fn is_current(&self, event: &AccountEvent) -> bool {
        match *event {
            AccountEvent::Registered {
                user,
                generation,
                key_hash,
            } => self
                .accounts
                .get(&user)
                .is_some_and(|a| a.generation == generation && a.key_hash == key_hash),
        }
    }

    /// True when `user` is registered here.
    pub fn contains(&self, user: UserId) -> bool {
        self.accounts.contains_key(&user)
    }

    /// Registered users.
    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    /// True when no user is registered.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    /// The table as events, one per user, sorted by user: applying them to
    /// an empty table rebuilds this one (a snapshot for log compaction).
    pub fn snapshot(&self) -> Vec<AccountEvent> {
        let mut events: Vec<AccountEvent> = self
            .accounts
            .iter()
            .map(|(&user, a)| AccountEvent::Registered {
                user,
                generation: a.generation,
                key_hash: a.key_hash,
            })
            .collect();
        events.sort_unstable_by_key(AccountEvent::user);
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const ALICE: UserId = UserId(15_551_230_001);
    const BOB: UserId = UserId(15_551_230_002);

    #[test]
    fn key_hash_is_sha256() {
        // SHA-256 of 32 zero bytes.
        let h = key_hash(&DeviceKey([0u8; 32]));
        assert_eq!(
            h[..4],
            [0x66, 0x68, 0x7a, 0xad],
            "sha256(0^32) starts 66687aad"
        );
    }

    #[test]
    fn register_and_login() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut acc = AccountTable::new();
        let key = new_device_key(&mut rng);
        let ev = acc.register(ALICE, key_hash(&key)).unwrap();
        assert!(matches!(
            ev,
            AccountEvent::Registered {
                generation: 1,
                user: ALICE,
                ..
            }
        ));
        assert_eq!(acc.verify(ALICE, &key), Ok(1));
        let other = new_device_key(&mut rng);
        assert_ne!(key, other);
        assert_eq!(acc.verify(ALICE, &other), Err(LoginFail::BadKey));
        assert_eq!(acc.verify(BOB, &key), Err(LoginFail::UnknownUser));
        assert_eq!(LoginFail::UnknownUser.code(), ErrorCode::LoginFailed);
        assert_eq!(LoginFail::BadKey.code(), ErrorCode::LoginFailed);
    }

    #[test]
    fn reregistration_kills_the_old_key() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut acc = AccountTable::new();
        let old = new_device_key(&mut rng);
        let new = new_device_key(&mut rng);
        acc.register(ALICE, key_hash(&old)).unwrap();
        let ev = acc.register(ALICE, key_hash(&new)).unwrap();
        assert_eq!(ev.generation(), 2);
        assert_eq!(ev.user(), ALICE);
        assert_eq!(acc.verify(ALICE, &old), Err(LoginFail::BadKey));
        assert_eq!(acc.verify(ALICE, &new), Ok(2));
        // Even re-registering with the old key again gives a new generation.
        acc.register(ALICE, key_hash(&old)).unwrap();
        assert_eq!(acc.verify(ALICE, &old), Ok(3));
        assert_eq!(acc.verify(ALICE, &new), Err(LoginFail::BadKey));
    }

    #[test]
    fn replay_rebuilds_the_same_table() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut live = AccountTable::new();
        let mut log = Vec::new();
        let mut keys = Vec::new();
        for i in 0..50u64 {
            let user = UserId(15_550_000_000 + i % 7);
            let key = new_device_key(&mut rng);
            log.push(live.register(user, key_hash(&key)).unwrap());
            keys.push((user, key));
        }
        let mut replayed = AccountTable::new();
        for ev in &log {
            replayed.apply(ev).unwrap();
        }
        assert_eq!(replayed.snapshot(), live.snapshot());
        assert_eq!(replayed.len(), 7);
        // Only the last key per user works, in both tables.
        for (i, (user, key)) in keys.iter().enumerate() {
            let last = keys[i + 1..].iter().all(|(u, _)| u != user);
            assert_eq!(live.verify(*user, key).is_ok(), last);
            assert_eq!(replayed.verify(*user, key).is_ok(), last);
        }
        // A snapshot replays into an equal table.
        let mut from_snapshot = AccountTable::new();
        for ev in live.snapshot() {
            from_snapshot.apply(&ev).unwrap();
        }
        assert_eq!(from_snapshot.snapshot(), live.snapshot());
        // Replaying the log twice is refused: generations must advance.
        assert!(matches!(
            replayed.apply(&log[0]),
            Err(AccountError::StaleGeneration { .. })
        ));
    }

    #[test]
    fn generation_bound() {
        let mut acc = AccountTable::new();
        // One below the top: the next registration takes u32::MAX.
        acc.apply(&AccountEvent::Registered {
            user: ALICE,
            generation: u32::MAX - 1,
            key_hash: [1; 32],
        })
        .unwrap();
        let ev = acc.register(ALICE, [2; 32]).unwrap();
        assert!(matches!(
            ev,
            AccountEvent::Registered {
                generation: u32::MAX,
                ..
            }
        ));
        // One past: refused with a typed error, nothing changes.
        assert_eq!(
            acc.register(ALICE, [3; 32]),
            Err(AccountError::GenerationExhausted { user: ALICE })
        );
        assert_eq!(acc.generation(ALICE), Some(u32::MAX));
    }

    #[test]
    fn prepare_does_not_apply() {
        let mut acc = AccountTable::new();
        let ev = acc.prepare_register(ALICE, [9; 32]).unwrap();
        assert!(!acc.contains(ALICE));
        assert!(acc.is_empty());
        acc.apply(&ev).unwrap();
        assert_eq!(acc.generation(ALICE), Some(1));
    }
}
