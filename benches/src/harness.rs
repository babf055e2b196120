//! Several sans-IO shards and fake clients in one thread, no sockets.
//!
//! The harness plays the runtime: it carries `Action::Mesh` messages to
//! the other shard by hand, answers every `Action::Append` with
//! `handle_durable` at once (a log that syncs instantly; optionally after
//! encoding the record the way the log would), hands `take_output` bytes
//! to the fake client of that connection, and follows `Action::Migrate`.
//! Shards run in durable mode, like the server.
//!
//! Users are registered by replaying `Record::Account` events before the
//! shards finish recovery, so no PIN flow is needed. A fake client decodes
//! what it receives with `tern_wire::decode` (verifier included), as a real
//! client would; that client-side work is part of every cycle timed with
//! this harness and is measured on its own by the `core/client_side`
//! bench.
//!
//! Steady state allocates nothing in the harness: frames are encoded into
//! one reused buffer, and output buffers are swapped with the core, not
//! copied, when the client has read everything before.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use tern_core::account::{key_hash, AccountEvent};
use tern_core::action::Action;
use tern_core::conn::ConnId;
use tern_core::limits::Limits;
use tern_core::record::Record;
use tern_core::shard::{Shard, ShardConfig};
use tern_core::user::{home_shard, UserId};
use tern_wire::{
    framing, Body, DeviceKey, Encoder, Frame, FrameKind, Hello, ReceiptKind, DEVICE_KEY_LEN,
    PROTOCOL_VERSION,
};

/// The source address every fake connection comes from.
pub const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The clock the harness starts at (ms); it never moves unless told.
pub const START_MS: u64 = 1_790_000_000_000;

/// First user id the helpers hand out (+1 555 000 0000).
pub const USER_ID_FIRST: u64 = 15_550_000_000;

/// Something the harness did not expect: a measurement must stop, not go
/// on measuring an error path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HarnessError(pub String);

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HarnessError {}

fn err<T>(msg: impl Into<String>) -> Result<T, HarnessError> {
    Err(HarnessError(msg.into()))
}

/// What a fake client received: the fields a message cycle needs, copied
/// out of the verified frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    HelloOk,
    LoginOk {
        queued: u32,
    },
    ServerAck {
        client_msg_id: u64,
        server_msg_id: u64,
    },
    Deliver {
        id: u64,
        from: u64,
        client_msg_id: u64,
    },
    Receipt {
        id: u64,
        kind: ReceiptKind,
        client_msg_id: u64,
    },
    Other(FrameKind),
}

/// Decodes one verified payload into what a client keeps of it.
pub fn seen(payload: &[u8], limits: &tern_wire::Limits) -> Result<Seen, HarnessError> {
    let frame = tern_wire::decode(payload, limits)
        .map_err(|e| HarnessError(format!("client got a bad frame: {e}")))?;
    Ok(match frame {
        Frame::HelloOk(_) => Seen::HelloOk,
        Frame::LoginOk { queued, .. } => Seen::LoginOk { queued },
        Frame::ServerAck {
            client_msg_id,
            server_msg_id,
            ..
        } => Seen::ServerAck {
            client_msg_id,
            server_msg_id,
        },
        Frame::Deliver {
            id,
            from,
            client_msg_id,
            ..
        } => Seen::Deliver {
            id,
            from,
            client_msg_id,
        },
        Frame::Receipt {
            id,
            kind,
            client_msg_id,
            ..
        } => Seen::Receipt {
            id,
            kind,
            client_msg_id,
        },
        other => Seen::Other(other.kind()),
    })
}

/// How the harness answers `Action::Append`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogMode {
    /// `handle_durable(seq)` at once; the record is dropped.
    Instant,
    /// Encode the record's payload (`Record::encode`) and frame it with
    /// length and CRC32C (`tern_log::record::encode`) into a scratch
    /// buffer, as the log writer would, then `handle_durable(seq)`.
    EncodeThenInstant,
}

/// The device key the harness gives `user`: a fixed function of the id,
/// so the scale simulation need not keep keys.
pub fn device_key_for(user: UserId) -> DeviceKey {
    let mut key = [0u8; DEVICE_KEY_LEN];
    let mut x = user.0;
    for chunk in key.chunks_mut(8) {
        x = tern_core::user::mix64(x);
        for (b, v) in chunk.iter_mut().zip(x.to_le_bytes()) {
            *b = v;
        }
    }
    DeviceKey(key)
}

/// The log record that registers `user` with [`device_key_for`].
pub fn account_record(user: UserId) -> Record {
    Record::Account(AccountEvent::Registered {
        user,
        generation: 1,
        key_hash: key_hash(&device_key_for(user)),
    })
}

/// `count` user ids homed on `shard` of `shards`, the first ones at or
/// after `from`.
pub fn users_on(shard: u16, shards: u16, count: usize, from: u64) -> Vec<UserId> {
    (from..)
        .map(UserId)
        .filter(|u| home_shard(*u, shards) == shard)
        .take(count)
        .collect()
}

/// A durable shard as the server runs it, with a fixed seed.
pub fn new_shard(shard: u16, shards: u16, limits: &Limits) -> Shard {
    let mut cfg = ShardConfig::new(shard, shards, limits.clone());
    cfg.durable = true;
    let mut seed = [0x5eu8; 32];
    for (b, v) in seed.iter_mut().zip(shard.to_le_bytes()) {
        *b = v;
    }
    Shard::new(cfg, seed)
}

#[derive(Debug)]
struct Client {
    shard: u16,
    conn: ConnId,
    user: Option<UserId>,
    /// Bytes received and not yet read, from `rx_pos`.
    rx: Vec<u8>,
    rx_pos: usize,
    closed: bool,
}

/// Shards and fake clients in memory. Clients are numbered in the order
/// they connect.
#[derive(Debug)]
pub struct Net {
    shards: Vec<Shard>,
    clients: Vec<Client>,
    now_ms: u64,
    enc: Encoder,
    wire_limits: tern_wire::Limits,
    tx: Vec<u8>,
    spare: Vec<u8>,
    log_mode: LogMode,
    payload: Vec<u8>,
    log_frame: Vec<u8>,
    appends: u64,
}

impl Net {
    /// `shards` durable shards with `users` registered (each on its home
    /// shard, by replay) and recovery finished.
    pub fn new(
        shards: u16,
        limits: &Limits,
        users: &[UserId],
        log_mode: LogMode,
    ) -> Result<Self, HarnessError> {
        if shards == 0 {
            return err("at least one shard");
        }
        let mut all: Vec<Shard> = (0..shards).map(|i| new_shard(i, shards, limits)).collect();
        for &user in users {
            let home = usize::from(home_shard(user, shards));
            let Some(shard) = all.get_mut(home) else {
                return err("home shard out of range");
            };
            shard
                .replay(account_record(user), 1)
                .map_err(|e| HarnessError(format!("replay account {user}: {e:?}")))?;
        }
        for shard in &mut all {
            shard.finish_recovery();
        }
        let wire_limits = tern_wire::Limits::with_max_frame_len(limits.max_frame_len);
        Ok(Self {
            shards: all,
            clients: Vec::new(),
            now_ms: START_MS,
            enc: Encoder::new(&wire_limits),
            wire_limits,
            tx: Vec::with_capacity(1024),
            spare: Vec::new(),
            log_mode,
            payload: Vec::with_capacity(1024),
            log_frame: Vec::with_capacity(1024),
            appends: 0,
        })
    }

    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    pub fn shard_count(&self) -> u16 {
        u16::try_from(self.shards.len()).unwrap_or(u16::MAX)
    }

    /// Records appended (and reported durable) so far.
    pub fn appends(&self) -> u64 {
        self.appends
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Moves the clock; nothing runs until the next event.
    pub fn advance_ms(&mut self, ms: u64) {
        self.now_ms += ms;
    }

    fn shard_mut(&mut self, s: usize) -> Result<&mut Shard, HarnessError> {
        match self.shards.get_mut(s) {
            Some(shard) => Ok(shard),
            None => err(format!("no shard {s}")),
        }
    }

    fn client(&self, c: usize) -> Result<&Client, HarnessError> {
        match self.clients.get(c) {
            Some(client) => Ok(client),
            None => err(format!("no client {c}")),
        }
    }

    fn client_mut(&mut self, c: usize) -> Result<&mut Client, HarnessError> {
        match self.clients.get_mut(c) {
            Some(client) => Ok(client),
            None => err(format!("no client {c}")),
        }
    }

    /// Where client `c`'s connection lives: (shard, conn).
    pub fn conn_of(&self, c: usize) -> Result<(u16, ConnId), HarnessError> {
        let client = self.client(c)?;
        Ok((client.shard, client.conn))
    }

    /// The user client `c` logged in as.
    pub fn user_of(&self, c: usize) -> Result<UserId, HarnessError> {
        match self.client(c)?.user {
            Some(user) => Ok(user),
            None => err(format!("client {c} is not logged in")),
        }
    }

    /// Opens a connection on `shard` and says Hello; returns the client.
    pub fn connect(&mut self, shard: u16) -> Result<usize, HarnessError> {
        let now = self.now_ms;
        let conn = self
            .shard_mut(usize::from(shard))?
            .open(PEER, now)
            .map_err(|e| HarnessError(format!("open refused: {e:?}")))?;
        self.clients.push(Client {
            shard,
            conn,
            user: None,
            rx: Vec::new(),
            rx_pos: 0,
            closed: false,
        });
        let c = self.clients.len() - 1;
        self.send(
            c,
            &Frame::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                capabilities: 0,
                client_name: "tern-benches",
            }),
        )?;
        match self.next_seen(c)? {
            Some(Seen::HelloOk) => Ok(c),
            other => err(format!("expected HelloOk, got {other:?}")),
        }
    }

    /// Connects on `shard` (migrating to the user's home if it is
    /// elsewhere) and logs in as `user` with its harness key. Returns the
    /// client and the queue length LoginOk announced.
    pub fn login_via(&mut self, shard: u16, user: UserId) -> Result<(usize, u32), HarnessError> {
        let c = self.connect(shard)?;
        self.send(
            c,
            &Frame::Login {
                user_id: user.0,
                device_key: device_key_for(user),
            },
        )?;
        match self.next_seen(c)? {
            Some(Seen::LoginOk { queued }) => {
                self.client_mut(c)?.user = Some(user);
                Ok((c, queued))
            }
            other => err(format!("expected LoginOk for {user}, got {other:?}")),
        }
    }

    /// Logs `user` in on its home shard (no migration).
    pub fn login(&mut self, user: UserId) -> Result<usize, HarnessError> {
        let home = home_shard(user, self.shard_count());
        self.login_via(home, user).map(|(c, _)| c)
    }

    /// Encodes `frame` as client `c` would and feeds it to its shard, then
    /// runs every action to quiescence.
    pub fn send(&mut self, c: usize, frame: &Frame<'_>) -> Result<(), HarnessError> {
        self.feed(c, frame)?;
        self.run()
    }

    /// Feeds `frame` from client `c` to its shard's `handle_bytes` and
    /// stops there: the actions it produced wait for [`Net::run`].
    pub fn feed(&mut self, c: usize, frame: &Frame<'_>) -> Result<(), HarnessError> {
        self.tx.clear();
        self.enc
            .encode(frame, &mut self.tx)
            .map_err(|e| HarnessError(format!("client encode: {e}")))?;
        let (shard, conn) = self.conn_of(c)?;
        let now = self.now_ms;
        let Some(s) = self.shards.get_mut(usize::from(shard)) else {
            return err("client on a missing shard");
        };
        s.handle_bytes(conn, &self.tx, now);
        Ok(())
    }

    /// Feeds raw bytes from client `c` (several frames, or part of one)
    /// and stops there.
    pub fn feed_bytes(&mut self, c: usize, bytes: &[u8]) -> Result<(), HarnessError> {
        let (shard, conn) = self.conn_of(c)?;
        let now = self.now_ms;
        self.shard_mut(usize::from(shard))?
            .handle_bytes(conn, bytes, now);
        Ok(())
    }

    /// Carries actions between shards, clients and the "log" until nothing
    /// moves.
    pub fn run(&mut self) -> Result<(), HarnessError> {
        loop {
            let mut moved = false;
            for s in 0..self.shards.len() {
                while let Some(action) = self.shard_mut(s)?.poll_action() {
                    moved = true;
                    self.apply(s, action)?;
                }
            }
            if !moved {
                return Ok(());
            }
        }
    }

    fn apply(&mut self, s: usize, action: Action) -> Result<(), HarnessError> {
        let now = self.now_ms;
        let shard = u16::try_from(s).unwrap_or(u16::MAX);
        match action {
            Action::Wake(conn) => self.flush(shard, conn),
            Action::Close(conn) => {
                self.flush(shard, conn)?;
                if let Some(i) = self.client_at(shard, conn) {
                    self.client_mut(i)?.closed = true;
                }
                self.shard_mut(s)?.handle_closed(conn, now);
                Ok(())
            }
            Action::Migrate { conn, to, state } => {
                self.flush(shard, conn)?;
                let client = self.client_at(shard, conn);
                self.shard_mut(s)?.forget(conn);
                let new = self
                    .shard_mut(usize::from(to))?
                    .adopt(state, now)
                    .map_err(|e| HarnessError(format!("adopt refused: {e:?}")))?;
                if let Some(i) = client {
                    let c = self.client_mut(i)?;
                    c.shard = to;
                    c.conn = new;
                }
                Ok(())
            }
            Action::Mesh { to, msg } => {
                self.shard_mut(usize::from(to))?.handle_mesh(msg, now);
                Ok(())
            }
            Action::Append { seq, record } => {
                self.appends += 1;
                if self.log_mode == LogMode::EncodeThenInstant {
                    self.payload.clear();
                    record.encode(&mut self.payload);
                    self.log_frame.clear();
                    tern_log::record::encode(record.kind(), &self.payload, &mut self.log_frame)
                        .map_err(|e| HarnessError(format!("log record: {e:?}")))?;
                }
                self.shard_mut(s)?.handle_durable(seq, now);
                Ok(())
            }
            // Bodies are spilled only at positions from `note_location`,
            // which this harness never reports: nothing to read back.
            Action::Fetch { user, .. } => err(format!("unexpected fetch for {user:?}")),
            Action::SendSms(job) => err(format!(
                "unexpected SMS job {} (users are registered by replay)",
                job.job
            )),
        }
    }

    fn client_at(&self, shard: u16, conn: ConnId) -> Option<usize> {
        self.clients
            .iter()
            .position(|c| !c.closed && c.shard == shard && c.conn == conn)
    }

    /// Moves what the core queued for `conn` to its client. When the client
    /// has read everything, its (empty) buffer is swapped with the core's:
    /// no copy, no allocation.
    fn flush(&mut self, shard: u16, conn: ConnId) -> Result<(), HarnessError> {
        let now = self.now_ms;
        let Some(i) = self.client_at(shard, conn) else {
            // Output for a connection the harness does not track: drop it.
            self.spare.clear();
            let Some(core) = self.shards.get_mut(usize::from(shard)) else {
                return err("output on a missing shard");
            };
            core.take_output(conn, &mut self.spare, now);
            self.spare.clear();
            return Ok(());
        };
        let Some(client) = self.clients.get_mut(i) else {
            return err("client vanished");
        };
        let Some(core) = self.shards.get_mut(usize::from(shard)) else {
            return err("client on a missing shard");
        };
        if client.rx_pos >= client.rx.len() {
            client.rx.clear();
            client.rx_pos = 0;
            core.take_output(conn, &mut client.rx, now);
        } else {
            self.spare.clear();
            core.take_output(conn, &mut self.spare, now);
            client.rx.extend_from_slice(&self.spare);
            self.spare.clear();
        }
        Ok(())
    }

    /// The next frame client `c` received, if any.
    pub fn next_seen(&mut self, c: usize) -> Result<Option<Seen>, HarnessError> {
        let max = self.wire_limits.max_frame_len;
        let Some(client) = self.clients.get_mut(c) else {
            return err(format!("no client {c}"));
        };
        let rest = client.rx.get(client.rx_pos..).unwrap_or_default();
        let (payload, n) = match framing::split(rest, max) {
            Ok(Some(split)) => split,
            Ok(None) => return Ok(None),
            Err(e) => return err(format!("client got a bad length prefix: {e}")),
        };
        let got = seen(payload, &self.wire_limits)?;
        client.rx_pos += n;
        Ok(Some(got))
    }

    /// Fails unless client `c` has nothing left to read.
    pub fn expect_idle(&mut self, c: usize) -> Result<(), HarnessError> {
        match self.next_seen(c)? {
            None => Ok(()),
            Some(other) => err(format!("client {c} got an unexpected {other:?}")),
        }
    }

    /// One full 1:1 message cycle between logged-in clients `a` and `b`:
    /// Send (a) → store → ServerAck (a) and Deliver (b) → DeliverAck (b)
    /// → Delivered receipt (a) → DeliverAck of the receipt (a). Checks
    /// every step; `client_msg_id` must be new for `a` (dedup would answer
    /// a repeat without storing). Returns the server id of the message.
    pub fn cycle(
        &mut self,
        a: usize,
        b: usize,
        client_msg_id: u64,
        text: &str,
    ) -> Result<u64, HarnessError> {
        let to = self.user_of(b)?.0;
        self.send(
            a,
            &Frame::Send {
                client_msg_id,
                to,
                body: Body::Text(text),
            },
        )?;
        let sid = match self.next_seen(a)? {
            Some(Seen::ServerAck {
                client_msg_id: cmid,
                server_msg_id,
            }) if cmid == client_msg_id => server_msg_id,
            other => return err(format!("sender expected ServerAck, got {other:?}")),
        };
        match self.next_seen(b)? {
            Some(Seen::Deliver {
                id,
                client_msg_id: cmid,
                ..
            }) if id == sid && cmid == client_msg_id => {}
            other => return err(format!("recipient expected Deliver {sid}, got {other:?}")),
        }
        self.send(b, &Frame::DeliverAck { id: sid })?;
        let rid = match self.next_seen(a)? {
            Some(Seen::Receipt {
                id,
                kind: ReceiptKind::Delivered,
                client_msg_id: cmid,
            }) if cmid == client_msg_id => id,
            other => {
                return err(format!(
                    "sender expected a Delivered receipt, got {other:?}"
                ))
            }
        };
        self.send(a, &Frame::DeliverAck { id: rid })?;
        self.expect_idle(a)?;
        self.expect_idle(b)?;
        Ok(sid)
    }
}

/// Where the two users of a [`pair`] live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Both homed on shard 0 (of 2): the cycle never touches the mesh.
    SameShard,
    /// Sender on shard 0, recipient on shard 1: store, its answer and the
    /// receipt each cross the mesh once.
    CrossShard,
}

/// Two shards with two logged-in users placed as asked: `(net, a, b)`
/// where `a` sends to `b`.
pub fn pair(placement: Placement, log_mode: LogMode) -> Result<(Net, usize, usize), HarnessError> {
    let shards = 2;
    let ua = users_on(0, shards, 1, USER_ID_FIRST);
    let b_shard = match placement {
        Placement::SameShard => 0,
        Placement::CrossShard => 1,
    };
    let from = ua.first().map_or(USER_ID_FIRST, |u| u.0 + 1);
    let ub = users_on(b_shard, shards, 1, from);
    let (Some(&ua), Some(&ub)) = (ua.first(), ub.first()) else {
        return err("no users found");
    };
    let mut net = Net::new(shards, &Limits::default(), &[ua, ub], log_mode)?;
    let a = net.login(ua)?;
    let b = net.login(ub)?;
    Ok((net, a, b))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a failure should stop the test.
mod tests {
    use super::*;
    use crate::TEXT_100B;

    #[test]
    fn cycles_work_same_and_cross_shard_and_leave_nothing_queued() {
        for placement in [Placement::SameShard, Placement::CrossShard] {
            for mode in [LogMode::Instant, LogMode::EncodeThenInstant] {
                let (mut net, a, b) = pair(placement, mode).unwrap();
                let (sa, _) = net.conn_of(a).unwrap();
                let (sb, _) = net.conn_of(b).unwrap();
                assert_eq!(sa == sb, placement == Placement::SameShard);
                let before = net.appends();
                for cmid in 1..=50 {
                    net.cycle(a, b, cmid, TEXT_100B).unwrap();
                }
                // Per cycle: message stored, message acked, receipt stored,
                // receipt acked.
                assert_eq!(net.appends() - before, 200);
                for s in net.shards() {
                    assert_eq!(s.queued_items(), 0);
                }
            }
        }
    }

    #[test]
    fn login_on_another_shard_migrates() {
        let users = users_on(1, 2, 1, USER_ID_FIRST);
        let mut net = Net::new(2, &Limits::default(), &users, LogMode::Instant).unwrap();
        let (c, queued) = net.login_via(0, users[0]).unwrap();
        assert_eq!(queued, 0);
        assert_eq!(net.conn_of(c).unwrap().0, 1);
    }

    #[test]
    fn a_repeated_client_msg_id_is_not_a_cycle() {
        let (mut net, a, b) = pair(Placement::SameShard, LogMode::Instant).unwrap();
        net.cycle(a, b, 1, "x").unwrap();
        assert!(
            net.cycle(a, b, 1, "x").is_err(),
            "dedup answers, stores nothing"
        );
    }
}
