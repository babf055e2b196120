//! The cross-core mesh: one bounded glommio shared channel per ordered pair
//! of shards, built before the executors start so shard indices are ours
//! (not executor join order). The core's mesh messages travel in per-tick
//! batches: waking another core is expensive in this VM (NOTES.md), so one
//! wake carries everything a shard produced for that peer since the last.

use std::os::fd::OwnedFd;

use glommio::channels::shared_channel::{self, SharedReceiver, SharedSender};
use tern_core::conn::MigrationState;
use tern_core::mesh::MeshMsg;

/// Batches in flight per ordered pair before the sender waits.
pub(crate) const MESH_CHANNEL_BATCHES_MAX: usize = 1024;

/// A connection moving to its user's home shard: its socket (a dup of the
/// fd), its TLS state (with any ciphertext received but not yet
/// processed), and the core's view of it.
#[derive(Debug)]
pub(crate) struct Adopt {
    pub(crate) fd: OwnedFd,
    pub(crate) tls: Option<Box<crate::tls::session::TlsSession>>,
    pub(crate) state: MigrationState,
}

/// What travels between shards.
#[derive(Debug)]
pub(crate) enum Envelope {
    Batch(Vec<MeshMsg>),
    Adopt(Box<Adopt>),
}

/// One shard's ends of the mesh, before connecting on its executor.
#[derive(Debug)]
pub(crate) struct MeshEnds {
    /// `senders[j]` sends to shard j (`None` for self).
    pub(crate) senders: Vec<Option<SharedSender<Envelope>>>,
    /// `receivers[i]` receives from shard i (`None` for self).
    pub(crate) receivers: Vec<Option<SharedReceiver<Envelope>>>,
}

/// Builds the full mesh for `shards` shards: `ends[k]` belongs to shard k.
pub(crate) fn build(shards: usize) -> Vec<MeshEnds> {
    let mut ends: Vec<MeshEnds> = (0..shards)
        .map(|_| MeshEnds {
            senders: (0..shards).map(|_| None).collect(),
            receivers: (0..shards).map(|_| None).collect(),
        })
        .collect();
    for from in 0..shards {
        for to in 0..shards {
            if from == to {
                continue;
            }
            let (tx, rx) = shared_channel::new_bounded(MESH_CHANNEL_BATCHES_MAX);
            if let Some(slot) = ends.get_mut(from).and_then(|e| e.senders.get_mut(to)) {
                *slot = Some(tx);
            }
            if let Some(slot) = ends.get_mut(to).and_then(|e| e.receivers.get_mut(from)) {
                *slot = Some(rx);
            }
        }
    }
    ends
}
