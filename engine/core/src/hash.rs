//! A fast keyed hasher for the core's maps keyed by integers: user ids
//! ([`UserId`](crate::user::UserId)), server message ids, job numbers,
//! connection ids ([`ConnId`](crate::conn::ConnId)).
//!
//! Why not std's default: `RandomState` is SipHash-1-3, about 147
//! instructions per `u64` key, and a durable 1:1 message cycle looks up
//! user-keyed maps about 29 times (16.6 % of the cycle's instructions,
//! benches/README.md). [`IdHasher`] is one xor and the splitmix64
//! finalizer ([`mix64`]): about 10 instructions.
//!
//! HashDoS: user ids are phone numbers, and a peer picks which numbers it
//! registers, logs in as and sends to. With an unkeyed hash it could pick
//! numbers that share a bucket and turn each lookup into a walk of all of
//! them. So every map gets its own secret 64-bit key, drawn from a
//! per-thread CSPRNG-seeded sequence (`rand::random`, OS entropy): the
//! hash of `x` is `mix64(key ^ x)`. `mix64` is a bijection with full
//! avalanche, so without the key the bucket of a number cannot be
//! predicted, and distinct ids never collide on the full 64 bits. This is
//! not a keyed PRF like SipHash: an attacker able to time many lookups
//! might learn something of a key. It is used only for maps whose keys
//! are registered or authenticated users, server-chosen numbers, and ids
//! the server hands out; maps filled straight from unauthenticated input
//! (PIN requests, rate limiters keyed by phone or address) stay on
//! SipHash, where a lookup is rare and its cost does not matter. Per-map
//! keys also rule out the quadratic slowdown of copying one map into
//! another in iteration order (same hash function, smaller table).
//!
//! Keys are the only randomness in the core that does not come in through
//! an argument. Like std's `RandomState`, they change memory layout and
//! iteration order between processes, never what a shard does with a
//! given input: nothing in the core depends on map iteration order for
//! its output.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};

use crate::user::mix64;

/// A `HashMap` keyed by ids, with [`IdBuildHasher`].
pub type IdMap<K, V> = HashMap<K, V, IdBuildHasher>;

/// A `HashSet` of ids, with [`IdBuildHasher`].
pub type IdSet<K> = HashSet<K, IdBuildHasher>;

/// Step between the keys handed to successive maps of a thread: the
/// splitmix64 increment (the golden ratio in 64 bits), so the keys are the
/// splitmix64 sequence of a random start.
const KEY_STEP: u64 = 0x9E37_79B9_7F4A_7C15;

thread_local! {
    /// Next key base of this thread. Seeded once per thread from the
    /// thread-local CSPRNG (itself seeded from OS entropy).
    static NEXT_KEY_BASE: Cell<u64> = Cell::new(rand::random());
}

/// Builds [`IdHasher`]s with one map's secret key.
#[derive(Clone, Copy)]
pub struct IdBuildHasher {
    key: u64,
}

impl IdBuildHasher {
    /// A builder with a fresh secret key (see the module documentation).
    pub fn new() -> Self {
        let base = NEXT_KEY_BASE.with(|next| {
            let base = next.get();
            next.set(base.wrapping_add(KEY_STEP));
            base
        });
        Self { key: mix64(base) }
    }

    /// A builder with a chosen key: for tests that need the same layout on
    /// every run. Never for maps a peer can fill.
    pub fn with_key(key: u64) -> Self {
        Self { key }
    }
}

impl Default for IdBuildHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for IdBuildHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret: never printed.
        f.debug_struct("IdBuildHasher").finish_non_exhaustive()
    }
}

impl BuildHasher for IdBuildHasher {
    type Hasher = IdHasher;

    #[inline]
    fn build_hasher(&self) -> IdHasher {
        IdHasher { state: self.key }
    }
}

/// The hasher of [`IdBuildHasher`]: each word written is folded in with
/// `state = mix64(state ^ word)`, starting from the map's key. Integer
/// keys are one word; other keys (a `ConnId` is two `u32`s) are a few.
#[derive(Clone, Copy)]
pub struct IdHasher {
    state: u64,
}

impl std::fmt::Debug for IdHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The state starts as the secret key: never printed.
        f.debug_struct("IdHasher").finish_non_exhaustive()
    }
}

impl Hasher for IdHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.state
    }

    #[inline]
    fn write_u64(&mut self, word: u64) {
        self.state = mix64(self.state ^ word);
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    #[inline]
    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        // usize is at most 64 bits on every target Tern builds for.
        self.write_u64(n as u64);
    }

    /// Byte strings (not used by the id keys, but a `Hasher` must take
    /// them): whole 8-byte words, then the tail with its length in the top
    /// byte so that tails of different lengths never look alike.
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut le = [0u8; 8];
            le.copy_from_slice(word);
            self.write_u64(u64::from_le_bytes(le));
        }
        let tail = words.remainder();
        if !tail.is_empty() {
            let mut le = [0u8; 8];
            if let Some(dst) = le.get_mut(..tail.len()) {
                dst.copy_from_slice(tail);
            }
            // tail.len() < 8: fits in the top byte, which the tail leaves 0.
            #[allow(clippy::cast_possible_truncation)]
            let len = tail.len() as u8;
            le[7] = len;
            self.write_u64(u64::from_le_bytes(le));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::ConnId;
    use crate::user::{home_shard, UserId, USER_ID_MIN};

    fn hash_of<T: std::hash::Hash>(builder: &IdBuildHasher, value: &T) -> u64 {
        builder.hash_one(value)
    }

    #[test]
    fn a_user_id_is_one_keyed_mix() {
        let b = IdBuildHasher::with_key(0x1234_5678_9ABC_DEF0);
        let user = UserId(15_551_234_567);
        assert_eq!(
            hash_of(&b, &user),
            mix64(0x1234_5678_9ABC_DEF0 ^ 15_551_234_567)
        );
        assert_eq!(
            hash_of(&b, &user),
            hash_of(&b, &user.0),
            "newtype adds nothing"
        );
    }

    #[test]
    fn keys_differ_between_maps_and_change_the_hash() {
        let a = IdBuildHasher::new();
        let b = IdBuildHasher::new();
        assert_ne!(a.key, b.key);
        let user = UserId(15_551_234_567);
        assert_ne!(hash_of(&a, &user), hash_of(&b, &user));
    }

    #[test]
    fn multi_word_keys_depend_on_every_word_and_their_order() {
        let b = IdBuildHasher::with_key(7);
        let c = |slot, generation| hash_of(&b, &ConnId { slot, generation });
        assert_ne!(c(1, 2), c(2, 1));
        assert_ne!(c(1, 2), c(1, 3));
        assert_ne!(c(0, 0), c(0, 1));
        // Byte strings: the tail's length counts.
        let s = |bytes: &[u8]| {
            let mut h = b.build_hasher();
            h.write(bytes);
            h.finish()
        };
        assert_ne!(s(b""), s(b"\0"));
        assert_ne!(s(b"\0"), s(b"\0\0"));
        assert_ne!(s(b"12345678"), s(b"12345678\0"));
        assert_eq!(s(b"abcdefghij"), s(b"abcdefghij"));
    }

    /// Users homed on one shard all have `mix64(id) % shards` equal: an
    /// unkeyed `mix64` would put them in a fraction of the buckets. The
    /// key breaks that tie: the low bits (hashbrown's bucket index) of the
    /// keyed hash of one shard's users are spread evenly.
    #[test]
    fn one_shards_users_spread_over_the_buckets() {
        const BUCKETS: usize = 64;
        const USERS: usize = 64_000;
        let b = IdBuildHasher::with_key(0xDEAD_BEEF_F00D_CAFE);
        let mut counts = [0usize; BUCKETS];
        let mut n = 0;
        let mut id = USER_ID_MIN;
        while n < USERS {
            id += 1;
            if home_shard(UserId(id), 2) != 0 {
                continue;
            }
            n += 1;
            let bucket = usize::try_from(hash_of(&b, &UserId(id)) % BUCKETS as u64).unwrap();
            counts[bucket] += 1;
        }
        let expected = USERS / BUCKETS;
        for (bucket, &count) in counts.iter().enumerate() {
            // Within 15 % of an even split (1,000 each; a fair spread
            // stays within about 4 standard deviations, ~12 %).
            assert!(
                count.abs_diff(expected) * 100 <= expected * 15,
                "bucket {bucket}: {count}, expected {expected}"
            );
        }
    }

    #[test]
    fn maps_work_with_it() {
        let mut m: IdMap<UserId, u32> = IdMap::default();
        for i in 0..1_000u64 {
            m.insert(UserId(USER_ID_MIN + i), u32::try_from(i).unwrap());
        }
        assert_eq!(m.len(), 1_000);
        assert_eq!(m.get(&UserId(USER_ID_MIN + 999)), Some(&999));
        assert_eq!(m.get(&UserId(USER_ID_MIN + 1_000)), None);
        let s: IdSet<u64> = (0..10).collect();
        assert!(s.contains(&9) && !s.contains(&10));
    }
}
