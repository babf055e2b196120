//! Connections as the shard core sees them: identity, protocol phase and
//! the byte buffers between the core and the runtime's socket.

use std::net::IpAddr;

use crate::user::UserId;

/// A connection on one shard: slot index plus a generation, so that a
/// reply addressed to a connection that has since closed (and whose slot was
/// reused) is recognised as stale and dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId {
    pub slot: u32,
    pub generation: u32,
}

/// Where a connection is in the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for `Hello`.
    AwaitHello,
    /// `Hello` done; may register or log in.
    Anonymous,
    /// Logged in as this user.
    Authenticated(UserId),
    /// Error or Kicked queued; the runtime flushes and closes.
    Closing,
    /// Handed to another shard; the runtime ships the socket there.
    Migrating,
}

/// State that travels with a connection when it moves to its user's home
/// shard (see docs/ARCHITECTURE.md, "Connection placement").
#[derive(Debug)]
pub struct MigrationState {
    pub peer: IpAddr,
    pub hello_done: bool,
    pub opened_ms: u64,
    pub migrations: u8,
    /// Plaintext received but not yet processed: the frame that caused the
    /// move, and anything after it. The new shard processes it first.
    pub replay: Vec<u8>,
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) generation: u32,
    pub(crate) peer: IpAddr,
    pub(crate) phase: Phase,
    pub(crate) opened_ms: u64,
    pub(crate) last_rx_ms: u64,
    pub(crate) ping_sent: bool,
    pub(crate) migrations: u8,
    /// Partial inbound frame (bounded by the frame limit: `framing::check`
    /// rejects longer frames before they are buffered). Empty, and so
    /// unallocated, while the connection is idle.
    pub(crate) partial: Vec<u8>,
    /// Plaintext frames not yet taken by the runtime.
    pub(crate) out: Vec<u8>,
    /// Since when `out` has held bytes the runtime could not take (its
    /// socket was full); `None` when drained.
    pub(crate) out_stalled_since_ms: Option<u64>,
    /// Inbox items sent on this connection and not yet acknowledged.
    pub(crate) in_flight: u32,
}

/// A bounded slab of connections with generation-checked ids.
#[derive(Debug)]
pub(crate) struct ConnTable {
    slots: Vec<Option<Conn>>,
    generations: Vec<u32>,
    free: Vec<u32>,
    len: usize,
    len_max: usize,
}

impl ConnTable {
    pub(crate) fn new(len_max: usize) -> Self {
        Self {
            slots: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            len: 0,
            len_max,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len >= self.len_max
    }

    /// Inserts a connection; `None` when the table is at its bound.
    pub(crate) fn insert(&mut self, peer: IpAddr, phase: Phase, now_ms: u64) -> Option<ConnId> {
        if self.is_full() {
            return None;
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = u32::try_from(self.slots.len()).ok()?;
                self.slots.push(None);
                self.generations.push(0);
                slot
            }
        };
        let index = slot as usize;
        let generation = self.generations.get(index).copied()?;
        let entry = self.slots.get_mut(index)?;
        debug_assert!(entry.is_none(), "free list pointed at a live slot");
        *entry = Some(Conn {
            generation,
            peer,
            phase,
            opened_ms: now_ms,
            last_rx_ms: now_ms,
            ping_sent: false,
            migrations: 0,
            partial: Vec::new(),
            out: Vec::new(),
            out_stalled_since_ms: None,
            in_flight: 0,
        });
        self.len += 1;
        Some(ConnId { slot, generation })
    }

    pub(crate) fn get(&self, id: ConnId) -> Option<&Conn> {
        self.slots
            .get(id.slot as usize)?
            .as_ref()
            .filter(|c| c.generation == id.generation)
    }

    pub(crate) fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.slots
            .get_mut(id.slot as usize)?
            .as_mut()
            .filter(|c| c.generation == id.generation)
    }

    pub(crate) fn remove(&mut self, id: ConnId) -> Option<Conn> {
        let index = id.slot as usize;
        let entry = self.slots.get_mut(index)?;
        if entry.as_ref().map(|c| c.generation) != Some(id.generation) {
            return None;
        }
        let conn = entry.take()?;
        if let Some(generation) = self.generations.get_mut(index) {
            *generation = generation.wrapping_add(1);
        }
        self.free.push(id.slot);
        self.len -= 1;
        Some(conn)
    }

    /// Slots in the slab, live or free: the range of [`id_at`](Self::id_at).
    /// Never shrinks (freed slots are reused).
    pub(crate) fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// The id of the connection in `slot`, if one lives there: lets the
    /// timer sweep walk the slab a slice at a time without collecting ids.
    pub(crate) fn id_at(&self, slot: usize) -> Option<ConnId> {
        let c = self.slots.get(slot)?.as_ref()?;
        Some(ConnId {
            slot: u32::try_from(slot).ok()?,
            generation: c.generation,
        })
    }

    /// Ids of all live connections (for shutdown).
    pub(crate) fn ids(&self) -> Vec<ConnId> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(slot, c)| {
                let c = c.as_ref()?;
                Some(ConnId {
                    slot: u32::try_from(slot).ok()?,
                    generation: c.generation,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn table_is_bounded_and_ids_are_generation_checked() {
        let mut t = ConnTable::new(2);
        let a = t.insert(PEER, Phase::AwaitHello, 0).unwrap();
        let b = t.insert(PEER, Phase::AwaitHello, 0).unwrap();
        assert!(t.insert(PEER, Phase::AwaitHello, 0).is_none(), "bound is 2");
        assert_eq!(t.len(), 2);
        assert!(t.remove(a).is_some());
        assert!(t.get(a).is_none());
        let c = t.insert(PEER, Phase::AwaitHello, 0).unwrap();
        assert_eq!(c.slot, a.slot, "slot reused");
        assert_ne!(c.generation, a.generation);
        assert!(
            t.get(a).is_none(),
            "stale id does not reach the new connection"
        );
        assert!(t.remove(a).is_none());
        assert!(t.get(b).is_some() && t.get(c).is_some());
        assert_eq!(t.ids().len(), 2);
        assert_eq!(t.slot_count(), 2);
        assert_eq!(t.id_at(usize::try_from(c.slot).unwrap()), Some(c));
        assert!(t.remove(c).is_some());
        assert_eq!(t.id_at(usize::try_from(c.slot).unwrap()), None, "free slot");
        assert_eq!(t.id_at(2), None, "past the slab");
        assert_eq!(t.slot_count(), 2, "the slab keeps its slots");
    }
}
