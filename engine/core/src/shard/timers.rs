//! Time-driven work: login deadline, keepalive and idle cut-off, stalled
//! writers, purging expired PINs and rate-limit entries.

use std::collections::VecDeque;

use tern_wire::{ErrorCode, Frame};

use super::Shard;
use crate::conn::{ConnId, Phase};

/// How often the runtime calls `Shard::handle_timeout`.
pub const TICK_MS: u64 = 100;

/// How often every connection is checked for idleness and stalled writes.
const SWEEP_INTERVAL_MS: u64 = 1_000;

#[derive(Debug, Default)]
pub(super) struct Timers {
    /// Login deadlines in arrival order: the timeout is one constant, so
    /// this queue is sorted by deadline without a heap.
    login: VecDeque<(u64, ConnId)>,
    next_sweep_ms: u64,
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
        if now_ms >= self.timers.next_sweep_ms {
            self.timers.next_sweep_ms = now_ms + SWEEP_INTERVAL_MS;
            self.sweep(now_ms);
        }
    }

    fn sweep(&mut self, now_ms: u64) {
        let idle_ms = self.cfg.limits.idle_timeout_ms;
        let ping_ms = self.cfg.limits.ping_interval_ms;
        let stall_ms = self.cfg.limits.write_stall_ms_max;
        for id in self.conns.ids() {
            let Some(c) = self.conns.get_mut(id) else {
                continue;
            };
            if matches!(c.phase, Phase::Closing | Phase::Migrating) {
                continue;
            }
            if !c.out.is_empty() {
                let since = *c.out_stalled_since_ms.get_or_insert(now_ms);
                if now_ms.saturating_sub(since) > stall_ms {
                    self.slow_consumer(id);
                    continue;
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
        self.pins.purge(now_ms);
        self.login_failures_user.purge(now_ms);
        self.login_failures_source.purge(now_ms);
    }
}
