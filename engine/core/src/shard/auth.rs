//! Registration (SMS PIN) and login, on the user's home shard.

use rand::RngCore;
use tern_wire::{DeviceKey, ErrorCode, Frame, KickReason, LoginError, DEVICE_KEY_LEN};

use super::durability::Reply;
use super::inbound::Flow;
use super::{Shard, MIGRATIONS_PER_CONN_MAX};
use crate::account;
use crate::action::Action;
use crate::conn::{ConnId, MigrationState, Phase};
use crate::rate::RateDecision;
use crate::record::Record;
use crate::user::UserId;

impl Shard {
    /// If `user` lives on another shard, moves the connection there with
    /// `rest` (this frame and what follows) to replay, and returns `Stop`.
    fn route_home(&mut self, conn: ConnId, user: UserId, rest: &[u8]) -> Option<Flow> {
        let home = self.home_of(user);
        if home == self.cfg.shard {
            return None;
        }
        let Some(c) = self.conns.get_mut(conn) else {
            return Some(Flow::Stop);
        };
        if c.migrations >= MIGRATIONS_PER_CONN_MAX {
            self.send_error(
                conn,
                ErrorCode::UnexpectedFrame,
                "too many different users on one connection",
                0,
                true,
            );
            return Some(Flow::Stop);
        }
        let state = MigrationState {
            peer: c.peer,
            hello_done: c.phase == Phase::Anonymous,
            opened_ms: c.opened_ms,
            migrations: c.migrations + 1,
            replay: rest.to_vec(),
        };
        c.phase = Phase::Migrating;
        c.partial = Vec::new();
        self.stats.migrations_out += 1;
        self.actions.push_back(Action::Migrate {
            conn,
            to: home,
            state,
        });
        Some(Flow::Stop)
    }

    pub(super) fn on_request_pin(
        &mut self,
        conn: ConnId,
        phone: &str,
        rest: &[u8],
        now_ms: u64,
    ) -> Flow {
        let user = match UserId::from_phone(phone) {
            Ok(user) => user,
            Err(e) => {
                self.send_error(conn, e.code(), &e.to_string(), 0, false);
                return Flow::Continue;
            }
        };
        if let Some(flow) = self.route_home(conn, user, rest) {
            return flow;
        }
        let Some(peer) = self.conn(conn).map(|c| c.peer) else {
            return Flow::Stop;
        };
        match self.pins.request(user, peer, now_ms, &mut self.rng) {
            Ok(issued) => {
                let job = self.new_sms_job(conn, user, issued.pin);
                self.actions.push_back(Action::SendSms(job));
            }
            Err(e) => self.send_error(conn, e.code(), &e.to_string(), 0, false),
        }
        Flow::Continue
    }

    pub(super) fn on_verify_pin(
        &mut self,
        conn: ConnId,
        phone: &str,
        pin: &str,
        rest: &[u8],
        now_ms: u64,
    ) -> Flow {
        let user = match UserId::from_phone(phone) {
            Ok(user) => user,
            Err(e) => {
                self.send_error(conn, e.code(), &e.to_string(), 0, false);
                return Flow::Continue;
            }
        };
        if let Some(flow) = self.route_home(conn, user, rest) {
            return flow;
        }
        if let Err(e) = self.pins.verify(user, pin, now_ms) {
            self.send_error(conn, e.code(), &e.to_string(), 0, false);
            return Flow::Continue;
        }
        let mut key = [0u8; DEVICE_KEY_LEN];
        self.rng.fill_bytes(&mut key);
        let device_key = DeviceKey(key);
        let event = match self.accounts.register(user, account::key_hash(&device_key)) {
            Ok(event) => event,
            Err(e) => {
                self.send_error(conn, e.code(), &e.to_string(), 0, false);
                return Flow::Continue;
            }
        };
        let generation = event.generation();
        let seq = self.append(Record::Account(event));
        self.stats.registrations += 1;
        // Invariant I6: the old device's key is dead; its live session goes.
        if self.kick_user(
            user,
            KickReason::DeviceReplaced,
            "this number was registered on another device",
        ) {
            debug_assert!(!self.online.contains_key(&user));
        }
        // The key is shown only once the registration is durable: a crash
        // must not resurrect the old key or lose the new one after the
        // device saved it.
        self.reply_when_durable(
            seq,
            Reply::Registered {
                conn,
                user,
                key: device_key,
                generation,
            },
            now_ms,
        );
        Flow::Continue
    }

    pub(super) fn on_login(
        &mut self,
        conn: ConnId,
        user_id: u64,
        device_key: &DeviceKey,
        rest: &[u8],
        now_ms: u64,
    ) -> Flow {
        let Ok(user) = UserId::from_wire(user_id) else {
            self.login_error(
                conn,
                ErrorCode::LoginFailed,
                "unknown user or wrong device key",
                0,
            );
            return Flow::Continue;
        };
        if let Some(flow) = self.route_home(conn, user, rest) {
            return flow;
        }
        let Some(peer) = self.conn(conn).map(|c| c.peer) else {
            return Flow::Stop;
        };
        // Failed logins are limited per user and per source address. Look
        // before verifying so a limited guesser learns nothing.
        for decision in [
            self.login_failures_user.peek(&user, now_ms),
            self.login_failures_source
                .peek(&crate::rate::source_key(peer), now_ms),
        ] {
            if let RateDecision::Limited { retry_after_ms } = decision {
                let retry = u32::try_from(retry_after_ms).unwrap_or(u32::MAX);
                self.login_error(
                    conn,
                    ErrorCode::LoginRateLimited,
                    "too many failed logins",
                    retry,
                );
                return Flow::Continue;
            }
        }
        if self.accounts.verify(user, device_key).is_err() {
            self.stats.login_failures += 1;
            let _ = self.login_failures_user.acquire(&user, now_ms);
            let _ = self
                .login_failures_source
                .acquire(&crate::rate::source_key(peer), now_ms);
            self.login_error(
                conn,
                ErrorCode::LoginFailed,
                "unknown user or wrong device key",
                0,
            );
            return Flow::Continue;
        }
        // The same device reconnecting while its old socket lingers: the old
        // one goes (its unacknowledged items are re-sent here).
        if let Some(old) = self.online.get(&user).copied() {
            self.kick(old, KickReason::Other(0), "logged in from a new connection");
        }
        if let Some(c) = self.conns.get_mut(conn) {
            c.phase = Phase::Authenticated(user);
            c.in_flight = 0;
        }
        self.online.insert(user, conn);
        self.stats.logins += 1;
        let queued = u32::try_from(self.inboxes.len(user)).unwrap_or(u32::MAX);
        self.send_frame(
            conn,
            &Frame::LoginOk {
                user_id: user.0,
                queued,
                server_time_ms: now_ms,
            },
        );
        self.pump(user, now_ms);
        Flow::Continue
    }

    fn login_error(&mut self, conn: ConnId, code: ErrorCode, message: &str, retry_after_ms: u32) {
        self.stats.count_error(code);
        self.send_frame(
            conn,
            &Frame::LoginError(LoginError {
                code,
                message,
                retry_after_ms,
            }),
        );
    }
}
