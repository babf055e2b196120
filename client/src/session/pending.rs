//! Operations waiting for their `ServerAck`, in the order they were made.
//!
//! `client_msg_id`s are handed out in increasing order, so a map keyed by id
//! iterates in creation order: re-sends after a reconnect keep the original
//! order without a second index.

use std::collections::BTreeMap;
use std::time::Instant;

use tern_wire::Frame;

use crate::error::ClientError;
use crate::event::MessageBody;

/// What a pending operation does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PendingKind {
    /// A message to `to`.
    Send { to: u64, body: MessageBody },
    /// A read receipt for `read_client_msg_id`, sent by `to`.
    MarkRead { to: u64, read_client_msg_id: u64 },
}

/// One operation waiting for its `ServerAck`.
#[derive(Clone, Debug)]
pub(crate) struct PendingOp {
    pub(crate) client_msg_id: u64,
    pub(crate) kind: PendingKind,
    /// When to send it again; `None` while it is not on the current
    /// connection (not logged in yet).
    pub(crate) retry_at: Option<Instant>,
    /// How many times it was put on the wire.
    pub(crate) transmit_count: u32,
}

impl PendingOp {
    /// The frame that carries this operation.
    pub(crate) fn frame(&self) -> Frame<'_> {
        match &self.kind {
            PendingKind::Send { to, body } => Frame::Send {
                client_msg_id: self.client_msg_id,
                to: *to,
                body: body.as_wire(),
            },
            PendingKind::MarkRead {
                to,
                read_client_msg_id,
            } => Frame::MarkRead {
                client_msg_id: self.client_msg_id,
                to: *to,
                read_client_msg_id: *read_client_msg_id,
            },
        }
    }
}

/// The bounded, ordered set of pending operations.
#[derive(Debug)]
pub(crate) struct Pending {
    ops: BTreeMap<u64, PendingOp>,
    len_max: usize,
}

impl Pending {
    pub(crate) fn new(len_max: usize) -> Self {
        Self {
            ops: BTreeMap::new(),
            len_max,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.ops.len()
    }

    /// Fails without inserting when the bound is reached: an operation is
    /// refused loudly, never dropped silently.
    pub(crate) fn check_room(&self) -> Result<(), ClientError> {
        if self.ops.len() >= self.len_max {
            return Err(ClientError::PendingFull {
                pending_len_max: self.len_max,
            });
        }
        Ok(())
    }

    pub(crate) fn insert(&mut self, op: PendingOp) -> Result<(), ClientError> {
        self.check_room()?;
        self.ops.insert(op.client_msg_id, op);
        Ok(())
    }

    pub(crate) fn remove(&mut self, client_msg_id: u64) -> Option<PendingOp> {
        self.ops.remove(&client_msg_id)
    }

    pub(crate) fn contains(&self, client_msg_id: u64) -> bool {
        self.ops.contains_key(&client_msg_id)
    }

    /// Ids in creation order.
    pub(crate) fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.ops.keys().copied()
    }

    pub(crate) fn get(&self, client_msg_id: u64) -> Option<&PendingOp> {
        self.ops.get(&client_msg_id)
    }

    #[cfg(test)]
    pub(crate) fn get_mut(&mut self, client_msg_id: u64) -> Option<&mut PendingOp> {
        self.ops.get_mut(&client_msg_id)
    }

    /// Operations in creation order, mutable (retry bookkeeping).
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut PendingOp> + '_ {
        self.ops.values_mut()
    }

    /// Forget every retry deadline: the connection they were sent on is
    /// gone.
    pub(crate) fn clear_deadlines(&mut self) {
        for op in self.ops.values_mut() {
            op.retry_at = None;
        }
    }

    /// The earliest retry deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.ops.values().filter_map(|op| op.retry_at).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: u64) -> PendingOp {
        PendingOp {
            client_msg_id: id,
            kind: PendingKind::MarkRead {
                to: 1,
                read_client_msg_id: id,
            },
            retry_at: None,
            transmit_count: 0,
        }
    }

    #[test]
    fn bound_is_exact_and_order_is_creation_order() {
        let mut p = Pending::new(3);
        for id in [10, 11, 12] {
            p.insert(op(id)).unwrap();
        }
        assert!(matches!(
            p.insert(op(13)),
            Err(ClientError::PendingFull { pending_len_max: 3 })
        ));
        assert_eq!(p.len(), 3);
        assert!(p.remove(11).is_some());
        assert!(p.remove(11).is_none());
        p.insert(op(13)).unwrap();
        assert_eq!(p.ids().collect::<Vec<_>>(), vec![10, 12, 13]);
    }

    #[test]
    fn next_deadline_is_the_earliest_and_clear_forgets_all() {
        let t0 = Instant::now();
        let mut p = Pending::new(8);
        p.insert(op(1)).unwrap();
        p.insert(op(2)).unwrap();
        assert_eq!(p.next_deadline(), None);
        p.get_mut(1).unwrap().retry_at = Some(t0 + std::time::Duration::from_secs(9));
        p.get_mut(2).unwrap().retry_at = Some(t0 + std::time::Duration::from_secs(4));
        assert_eq!(
            p.next_deadline(),
            Some(t0 + std::time::Duration::from_secs(4))
        );
        p.clear_deadlines();
        assert_eq!(p.next_deadline(), None);
    }
}
