//! Time-driven work: login deadline, keepalive and idle cut-off, stalled
//! writers, purging expired PINs and rate-limit entries.

use std::collections::VecDeque;

use tern_wire::{ErrorCode, Frame};

use super::Shard;
use crate::conn::{ConnId, Phase};

/// How often the runtime calls `Shard::handle_timeout`.
pub const TICK_MS: u64 = 100;

/// How often every connection is checked for idleness and stalled writes
/// (one pass of the sweep), and how often expired PINs and rate-limit
/// entries are purged.
const SWEEP_INTERVAL_MS: u64 = 1_000;

/// Most connection slots one `handle_timeout` call checks. The sweep walks
/// the connection slab a slice per call, paced so that a pass takes
/// `SWEEP_INTERVAL_MS`; this bound caps the slice, so a call costs at most
/// this many slot checks whatever the connection count (a whole-slab walk
/// at 1M connections stalled the shard 28-60 ms, benches/README.md). Up to
/// 163,840 slots (this times `SWEEP_INTERVAL_MS / TICK_MS`) a pass still
/// takes one interval; past that it takes `slots / 16,384` ticks (6.2 s
/// at 1M), and idle, keepalive and stall checks fire that much after their
/// limit instead of up to one interval after it. Never before it.
pub const SWEEP_SLOTS_PER_CALL_MAX: usize = 16_384;

#[derive(Debug, Default)]
pub(super) struct Timers {
    /// Login deadlines in arrival order: the timeout is one constant, so
    /// this queue is sorted by deadline without a heap.
    login: VecDeque<(u64, ConnId)>,
    /// When the sweep's current pass started.
    sweep_pass_start_ms: u64,
    /// Next slot the current pass checks; the slots before it are done.
    sweep_cursor: usize,
    next_purge_ms: u64,
    ping_nonce: u64,
}

impl Timers {
    pub(super) fn watch_login(&mut self, conn: ConnId, deadline_ms: u64) {
        self.login.push_back((deadline_ms, conn));
    }
}

impl Shard {
    /// Runs everything due at `now_ms`. Call every [`TICK_MS`].
    pub fn handle_timeout(&mut self, now_ms: u64) {
        while let Some(&(deadline, conn)) = self.timers.login.front() {
            if deadline > now_ms {
                break;
            }
            self.timers.login.pop_front();
            let unauthenticated = self
                .conn(conn)
                .is_some_and(|c| matches!(c.phase, Phase::AwaitHello | Phase::Anonymous));
            if unauthenticated {
                self.send_error(
                    conn,
                    ErrorCode::LoginTimeout,
                    "no login within the time limit",
                    0,
                    true,
                );
            }
        }
        self.sweep_conns(now_ms);
        if now_ms >= self.timers.next_purge_ms {
            self.timers.next_purge_ms = now_ms + SWEEP_INTERVAL_MS;
            self.pins.purge(now_ms);
            self.login_failures_user.purge(now_ms);
            self.login_failures_source.purge(now_ms);
        }
    }

    /// Checks the next slice of connection slots: as many as the time since
    /// the pass started is of `SWEEP_INTERVAL_MS` (all of them once a
    /// whole interval went by), at most [`SWEEP_SLOTS_PER_CALL_MAX`] per
    /// call. Slots freed and reused mid-pass are checked with whatever
    /// lives there when the cursor gets to them.
    fn sweep_conns(&mut self, now_ms: u64) {
        let slots = self.conns.slot_count();
        let elapsed_ms = now_ms.saturating_sub(self.timers.sweep_pass_start_ms);
        let due = if elapsed_ms >= SWEEP_INTERVAL_MS {
            slots
        } else {
            // elapsed_ms < SWEEP_INTERVAL_MS: the quotient is below `slots`.
            let due = (slots as u128 * u128::from(elapsed_ms)) / u128::from(SWEEP_INTERVAL_MS);
            usize::try_from(due).unwrap_or(slots)
        };
        let start = self.timers.sweep_cursor;
        let end = due.min(start.saturating_add(SWEEP_SLOTS_PER_CALL_MAX));
        for slot in start..end {
            if let Some(id) = self.conns.id_at(slot) {
                self.check_conn(id, now_ms);
            }
        }
        if end >= slots {
            self.timers.sweep_cursor = 0;
            self.timers.sweep_pass_start_ms = now_ms;
        } else {
            self.timers.sweep_cursor = self.timers.sweep_cursor.max(end);
        }
    }

    /// One connection's idle, keepalive and stalled-write checks.
    fn check_conn(&mut self, id: ConnId, now_ms: u64) {
        let idle_ms = self.cfg.limits.idle_timeout_ms;
        let ping_ms = self.cfg.limits.ping_interval_ms;
        let stall_ms = self.cfg.limits.write_stall_ms_max;
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        if matches!(c.phase, Phase::Closing | Phase::Migrating) {
            return;
        }
        if !c.out.is_empty() {
            let since = *c.out_stalled_since_ms.get_or_insert(now_ms);
            if now_ms.saturating_sub(since) > stall_ms {
                self.slow_consumer(id);
                return;
            }
        }
        let quiet_ms = now_ms.saturating_sub(c.last_rx_ms);
        if quiet_ms >= idle_ms {
            self.send_error(id, ErrorCode::IdleTimeout, "idle for too long", 0, true);
        } else if quiet_ms >= ping_ms && !c.ping_sent {
            c.ping_sent = true;
            self.timers.ping_nonce += 1;
            let nonce = self.timers.ping_nonce;
            self.send_frame(id, &Frame::Ping { nonce });
        }
    }
}
