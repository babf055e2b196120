//! The shard core: one shard's users, connections, inboxes and protocol
//! logic as a plain state machine (quinn-proto style). Events go in through
//! `handle_*` with the current time; instructions come out of
//! [`Shard::poll_action`] and [`Shard::take_output`]. No sockets, clocks,
//! threads or executors here: the runtime (tern-engine) drives it, and
//! tests drive several shards in memory.
//!
//! Architecture invariant: a user's account, PIN, inbox, dedup entries and
//! logged-in connection live only on its home shard
//! (`user::home_shard`). Anonymous connections that name a user elsewhere
//! move there (`Action::Migrate`) before the frame is processed.

mod auth;
mod durability;
mod inbound;
mod messaging;
mod timers;

use std::collections::VecDeque;
use std::net::IpAddr;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tern_wire::{Encoder, ErrorCode, ErrorFrame, Frame, KickReason, Kicked, Limits as WireLimits};

use crate::account::AccountTable;
use crate::action::{Action, SmsJob};
use crate::conn::{Conn, ConnId, ConnTable, MigrationState, Phase};
use crate::dedup::Dedup;
use crate::hash::IdMap;
use crate::ids::IdAllocator;
use crate::inbox::Inboxes;
use crate::limits::Limits;
use crate::mesh::MeshMsg;
use crate::order::Floors;
use crate::pin::PinRegistry;
use crate::rate::RateLimiter;
use crate::user::UserId;

pub use timers::{SWEEP_SLOTS_PER_CALL_MAX, TICK_MS};

/// How often an anonymous connection may move between shards before it is
/// closed (each RequestPin/VerifyPin/Login may name a user elsewhere).
pub const MIGRATIONS_PER_CONN_MAX: u8 = 4;

/// Identity and configuration of one shard.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    pub shard: u16,
    pub shards: u16,
    pub limits: Limits,
    pub server_name: String,
    /// Text of the SMS; `{pin}` and `{minutes}` are replaced.
    pub sms_template: String,
    /// Log every change (`Action::Append`) and hold back acknowledgements
    /// and deliveries until `handle_durable`. Off: answers go out at once
    /// and nothing survives a restart.
    pub durable: bool,
}

impl ShardConfig {
    pub fn new(shard: u16, shards: u16, limits: Limits) -> Self {
        Self {
            shard,
            shards,
            limits,
            server_name: String::from("tern"),
            sms_template: String::from("Your Tern code is {pin}. It expires in {minutes} minutes."),
            durable: false,
        }
    }
}

/// Counters the runtime exports as metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    pub connections_opened: u64,
    pub connections_refused: u64,
    pub logins: u64,
    pub login_failures: u64,
    pub registrations: u64,
    pub pins_sent: u64,
    pub pins_failed: u64,
    pub messages_stored: u64,
    pub messages_deduplicated: u64,
    pub messages_delivered: u64,
    pub receipts_stored: u64,
    pub receipts_dropped: u64,
    pub frames_rejected: u64,
    pub migrations_out: u64,
    pub slow_consumers: u64,
    /// Error and LoginError frames sent, by code (index into
    /// `ErrorCode::ALL`).
    pub errors_by_code: [u64; ErrorCode::ALL.len()],
}

impl ShardStats {
    pub(crate) fn count_error(&mut self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            if let Some(n) = self.errors_by_code.get_mut(i) {
                *n += 1;
            }
        }
    }

    /// Errors sent with `code` so far.
    pub fn errors(&self, code: ErrorCode) -> u64 {
        ErrorCode::ALL
            .iter()
            .position(|c| *c == code)
            .and_then(|i| self.errors_by_code.get(i).copied())
            .unwrap_or(0)
    }
}

/// What a latency sample measures. Resolution is the clock the core is
/// given: milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatencyKind {
    /// A Send (or MarkRead) arriving at the sender's shard until its
    /// ServerAck is queued: store on the recipient's home shard, fsync,
    /// answer back.
    SendToAck,
    /// A message arriving at the sender's shard until the recipient's
    /// device acknowledged it.
    SendToDelivered,
}

/// Latency samples kept between two runtime ticks; more are dropped (and
/// counted) rather than buffered without bound.
pub const LATENCY_SAMPLES_MAX: usize = 65_536;

/// One shard's sans-IO core.
#[derive(Debug)]
pub struct Shard {
    cfg: ShardConfig,
    wire_limits: WireLimits,
    conns: ConnTable,
    /// Keyed fast hash (`crate::hash`): looked up on every pump; its keys
    /// are logged-in users.
    online: IdMap<UserId, ConnId>,
    accounts: AccountTable,
    pins: PinRegistry,
    login_failures_user: RateLimiter<UserId>,
    login_failures_source: RateLimiter<IpAddr>,
    inboxes: Inboxes,
    dedup: Dedup,
    /// Per-pair floors after transient refusals (I2).
    floors: Floors,
    ids: IdAllocator,
    /// Keyed by our own job counter.
    sms_jobs: IdMap<u64, (ConnId, UserId)>,
    next_sms_job: u64,
    actions: VecDeque<Action>,
    encoder: Encoder,
    rng: StdRng,
    timers: timers::Timers,
    stats: ShardStats,
    shutting_down: bool,
    dur: durability::Durability,
    /// Highest id sequence seen during replay.
    recovered_seq_max: u64,
    latency_samples: Vec<(LatencyKind, u64)>,
    latency_samples_dropped: u64,
}

impl Shard {
    /// A shard with no users. `seed` feeds the CSPRNG used for PINs and
    /// device keys: the runtime passes OS entropy, tests a fixed value.
    pub fn new(cfg: ShardConfig, seed: [u8; 32]) -> Self {
        let limits = &cfg.limits;
        let wire_limits = WireLimits::with_max_frame_len(limits.max_frame_len);
        Self {
            wire_limits,
            conns: ConnTable::new(limits.connections_per_shard_max),
            online: IdMap::default(),
            accounts: AccountTable::new(),
            pins: PinRegistry::new(limits),
            login_failures_user: RateLimiter::new(
                limits.login_failures_per_user,
                limits.rate_keys_max,
            ),
            login_failures_source: RateLimiter::new(
                limits.login_failures_per_source,
                limits.rate_keys_max,
            ),
            inboxes: Inboxes::new(limits),
            dedup: Dedup::new(limits.dedup_window_len, limits.dedup_entries_max),
            floors: Floors::new(),
            ids: IdAllocator::new(cfg.shard, 0),
            sms_jobs: IdMap::default(),
            next_sms_job: 1,
            actions: VecDeque::new(),
            encoder: Encoder::new(&wire_limits),
            rng: StdRng::from_seed(seed),
            timers: timers::Timers::default(),
            stats: ShardStats::default(),
            shutting_down: false,
            dur: durability::Durability::new(cfg.durable),
            recovered_seq_max: 0,
            latency_samples: Vec::new(),
            latency_samples_dropped: 0,
            cfg,
        }
    }

    pub fn shard(&self) -> u16 {
        self.cfg.shard
    }

    pub fn stats(&self) -> ShardStats {
        self.stats
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    pub fn online_users(&self) -> usize {
        self.online.len()
    }

    /// Items queued for users of this shard.
    pub fn queued_items(&self) -> usize {
        self.inboxes.total_len()
    }

    /// Queued messages whose body is only in the log (read back when their
    /// user's device is ready for them).
    pub fn spilled_items(&self) -> usize {
        self.inboxes.spilled_len()
    }

    /// The `n` users of this shard with the longest queues (operators'
    /// "queues" view). Walks every user with a queue: call it rarely.
    pub fn longest_queues(&self, n: usize) -> Vec<(UserId, usize)> {
        self.inboxes.longest(n)
    }

    /// Queue length of one user (home here).
    pub fn queue_len(&self, user: UserId) -> usize {
        self.inboxes.len(user)
    }

    /// The home shard of `user` in this deployment.
    pub fn home_of(&self, user: UserId) -> u16 {
        crate::user::home_shard(user, self.cfg.shards)
    }

    /// A new socket was accepted. `Err(Overloaded)` when the shard is at its
    /// connection bound or shutting down: the runtime closes the socket.
    pub fn open(&mut self, peer: IpAddr, now_ms: u64) -> Result<ConnId, ErrorCode> {
        if self.shutting_down {
            return Err(ErrorCode::ShuttingDown);
        }
        match self.conns.insert(peer, Phase::AwaitHello, now_ms) {
            Some(id) => {
                self.stats.connections_opened += 1;
                self.timers
                    .watch_login(id, now_ms + self.cfg.limits.login_timeout_ms);
                Ok(id)
            }
            None => {
                self.stats.connections_refused += 1;
                Err(ErrorCode::Overloaded)
            }
        }
    }

    /// A connection moved here from another shard. Its replay bytes are
    /// processed at once.
    pub fn adopt(&mut self, state: MigrationState, now_ms: u64) -> Result<ConnId, ErrorCode> {
        let phase = if state.hello_done {
            Phase::Anonymous
        } else {
            Phase::AwaitHello
        };
        let Some(id) = self.conns.insert(state.peer, phase, now_ms) else {
            self.stats.connections_refused += 1;
            return Err(ErrorCode::Overloaded);
        };
        if let Some(conn) = self.conns.get_mut(id) {
            conn.opened_ms = state.opened_ms;
            conn.migrations = state.migrations;
        }
        self.timers
            .watch_login(id, state.opened_ms + self.cfg.limits.login_timeout_ms);
        if !state.replay.is_empty() {
            self.handle_bytes(id, &state.replay, now_ms);
        }
        Ok(id)
    }

    /// The socket of `conn` closed (peer gone, error, or after
    /// `Action::Close`). Frees its slot; a logged-in user goes offline and
    /// its unacknowledged items will be sent again at the next login.
    pub fn handle_closed(&mut self, conn: ConnId, _now_ms: u64) {
        let Some(c) = self.conns.remove(conn) else {
            return;
        };
        if let Phase::Authenticated(user) = c.phase {
            self.set_offline(user, conn);
        }
    }

    /// After `Action::Migrate` the runtime shipped the socket: forget it here
    /// without treating it as a disconnect.
    pub fn forget(&mut self, conn: ConnId) {
        let _ = self.conns.remove(conn);
    }

    fn set_offline(&mut self, user: UserId, conn: ConnId) {
        if self.online.get(&user) == Some(&conn) {
            self.online.remove(&user);
            self.inboxes.reset_in_flight(user);
        }
    }

    /// Plaintext for `conn`'s socket: swaps the pending bytes into `into`
    /// (which should be empty) and refills the connection's delivery window.
    /// Returns false when there was nothing to send.
    pub fn take_output(&mut self, conn: ConnId, into: &mut Vec<u8>, now_ms: u64) -> bool {
        debug_assert!(into.is_empty());
        let user = match self.conns.get(conn) {
            Some(c) => match c.phase {
                Phase::Authenticated(user) => Some(user),
                _ => None,
            },
            None => return false,
        };
        if let Some(user) = user {
            self.pump(user, now_ms);
        }
        let Some(c) = self.conns.get_mut(conn) else {
            return false;
        };
        std::mem::swap(&mut c.out, into);
        c.out_stalled_since_ms = None;
        !into.is_empty()
    }

    /// True once `conn` is closing or gone: the runtime stops reading it.
    pub fn is_closing(&self, conn: ConnId) -> bool {
        self.conns
            .get(conn)
            .is_none_or(|c| matches!(c.phase, Phase::Closing | Phase::Migrating))
    }

    /// Next instruction for the runtime.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Messages from another shard.
    pub fn handle_mesh(&mut self, msg: MeshMsg, now_ms: u64) {
        match msg {
            MeshMsg::Store(req) => self.store_remote(*req, now_ms),
            MeshMsg::StoreResult(res) => self.store_result(res, now_ms),
            MeshMsg::Receipt(push) => self.push_receipt(push, now_ms),
        }
    }

    /// Hands the latency samples (milliseconds) gathered since the last
    /// call to `f` and forgets them. Returns how many were dropped at the
    /// bound since the last call.
    pub fn drain_latency_samples(&mut self, mut f: impl FnMut(LatencyKind, u64)) -> u64 {
        for (kind, ms) in self.latency_samples.drain(..) {
            f(kind, ms);
        }
        std::mem::take(&mut self.latency_samples_dropped)
    }

    fn sample_latency(&mut self, kind: LatencyKind, ms: u64) {
        if self.latency_samples.len() < LATENCY_SAMPLES_MAX {
            self.latency_samples.push((kind, ms));
        } else {
            self.latency_samples_dropped += 1;
        }
    }

    /// The SMS gateway finished job `job`.
    pub fn handle_sms_result(&mut self, job: u64, ok: bool, _now_ms: u64) {
        let Some((conn, user)) = self.sms_jobs.remove(&job) else {
            return;
        };
        if ok {
            self.stats.pins_sent += 1;
            let expires_in_s = u32::try_from(self.cfg.limits.pin_ttl_ms / 1000).unwrap_or(u32::MAX);
            let phone = user.to_phone();
            let pin_len = u8::try_from(self.cfg.limits.pin_len).unwrap_or(u8::MAX);
            self.send_frame(
                conn,
                &Frame::PinSent {
                    phone: &phone,
                    pin_len,
                    expires_in_s,
                },
            );
        } else {
            self.stats.pins_failed += 1;
            self.send_error(
                conn,
                ErrorCode::SmsFailed,
                "the SMS gateway failed; try again",
                0,
                false,
            );
        }
    }

    /// Stop accepting work: every connection gets `Kicked{ServerShutdown}`
    /// and is closed after its queued output is flushed. Inboxes are kept.
    pub fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        for id in self.conns.ids() {
            self.kick(id, KickReason::ServerShutdown, "server shutting down");
        }
    }

    /// Kicks `user` if online here (operator action or device replaced).
    pub fn kick_user(&mut self, user: UserId, reason: KickReason, message: &str) -> bool {
        match self.online.get(&user).copied() {
            Some(conn) => {
                self.kick(conn, reason, message);
                true
            }
            None => false,
        }
    }

    // ---- output helpers ----------------------------------------------------

    /// Encodes `frame` into `conn`'s outbound buffer. Enforces the outbound
    /// bound: a connection whose unsent bytes would pass it is a slow
    /// consumer and is closed (its inbox stays).
    fn send_frame(&mut self, conn: ConnId, frame: &Frame<'_>) {
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        if matches!(c.phase, Phase::Closing | Phase::Migrating) {
            return;
        }
        let was_empty = c.out.is_empty();
        if let Err(e) = self.encoder.encode(frame, &mut c.out) {
            // Only a frame built by the server from bounded inputs gets here;
            // it is a server bug, not a peer's fault.
            debug_assert!(false, "server frame failed to encode: {e}");
            return;
        }
        let over = c.out.len() > self.cfg.limits.conn_outbound_bytes_max;
        if was_empty {
            self.actions.push_back(Action::Wake(conn));
        }
        if over {
            self.slow_consumer(conn);
        }
    }

    fn send_error(
        &mut self,
        conn: ConnId,
        code: ErrorCode,
        message: &str,
        client_msg_id: u64,
        fatal: bool,
    ) {
        self.send_frame(
            conn,
            &Frame::Error(ErrorFrame {
                code,
                message,
                client_msg_id,
                fatal,
            }),
        );
        self.stats.count_error(code);
        if fatal {
            self.stats.frames_rejected += 1;
            self.close(conn);
        }
    }

    fn kick(&mut self, conn: ConnId, reason: KickReason, message: &str) {
        self.send_frame(conn, &Frame::Kicked(Kicked { reason, message }));
        self.close(conn);
    }

    /// Marks `conn` closing and asks the runtime to flush and close it. A
    /// logged-in user goes offline at once, so new items queue instead of
    /// going to a dying socket.
    fn close(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        if matches!(c.phase, Phase::Closing | Phase::Migrating) {
            return;
        }
        let prev = std::mem::replace(&mut c.phase, Phase::Closing);
        c.partial = Vec::new();
        if let Phase::Authenticated(user) = prev {
            self.set_offline(user, conn);
        }
        self.actions.push_back(Action::Close(conn));
    }

    fn slow_consumer(&mut self, conn: ConnId) {
        self.stats.slow_consumers += 1;
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        // The buffer is over its bound: drop what is queued (the inbox still
        // holds every undelivered item) and send only the error.
        c.out.clear();
        c.out_stalled_since_ms = None;
        self.send_error(
            conn,
            ErrorCode::SlowConsumer,
            "outbound buffer limit reached; reconnect to continue",
            0,
            true,
        );
    }

    fn conn(&self, conn: ConnId) -> Option<&Conn> {
        self.conns.get(conn)
    }

    fn new_sms_job(&mut self, conn: ConnId, user: UserId, pin: String) -> SmsJob {
        let job = self.next_sms_job;
        self.next_sms_job += 1;
        self.sms_jobs.insert(job, (conn, user));
        let minutes = (self.cfg.limits.pin_ttl_ms / 60_000).max(1);
        let text = self
            .cfg
            .sms_template
            .replace("{pin}", &pin)
            .replace("{minutes}", &minutes.to_string());
        SmsJob {
            job,
            phone: user.to_phone(),
            pin,
            text,
        }
    }
}

#[cfg(test)]
mod tests;
