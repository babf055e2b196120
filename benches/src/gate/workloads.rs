//! The gate's fixed workloads. Each is built once ([`prepare`]) and then
//! run for a fixed number of iterations ([`Prepared::run`]) with fixed
//! inputs and seeds: no clock, no randomness from the OS, no threads, so
//! the instructions executed are the same on every run of the same binary.
//!
//! | name | one iteration |
//! |---|---|
//! | `wire_cycle` | encode, then split + verify + decode, each frame of a message cycle: Send (100-byte text), ServerAck, Deliver (100-byte text), DeliverAck, Receipt |
//! | `core_cycle` | two full durable 1:1 message cycles through in-memory shards (`harness::Net::cycle`): one with both users on one shard, one across two shards |
//! | `log_records` | an item-stored record (100-byte text message) and an item-acked record: `Record::encode`, `tern_log::record::encode` (length + CRC32C), `tern_log::record::decode` (CRC check), `Record::decode` |
//! | `inbox_ring` | for each of 16 users holding 32 queued items: push one item (a 200-byte body), `next_unsent`, `ack` the oldest |
//! | `login` | `Shard::open`, `handle_bytes` with Hello + Login (device key hashed), `take_output`, `handle_closed`, cycling over 256 registered users |
//! | `replay` | recovery of one logged message: `tern_log::record::decode` (CRC check), `Record::decode`, `Shard::replay` (inbox restore + dedup insert), over 100 recipients |

use tern_core::action::Action;
use tern_core::inbox::{Inboxes, Item};
use tern_core::limits::Limits;
use tern_core::record::Record;
use tern_core::shard::Shard;
use tern_core::user::UserId;
use tern_wire::{framing, Body, Encoder, Frame, Hello, ReceiptKind, PROTOCOL_VERSION};

use crate::harness::{
    account_record, device_key_for, new_shard, pair, seen, HarnessError, LogMode, Net, Placement,
    Seen, PEER, START_MS, USER_ID_FIRST,
};
use crate::TEXT_100B;

/// The workloads, in the order the gate runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    WireCycle,
    CoreCycle,
    LogRecords,
    InboxRing,
    Login,
    Replay,
}

impl Workload {
    pub const ALL: [Self; 6] = [
        Self::WireCycle,
        Self::CoreCycle,
        Self::LogRecords,
        Self::InboxRing,
        Self::Login,
        Self::Replay,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::WireCycle => "wire_cycle",
            Self::CoreCycle => "core_cycle",
            Self::LogRecords => "log_records",
            Self::InboxRing => "inbox_ring",
            Self::Login => "login",
            Self::Replay => "replay",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.name() == name)
    }

    /// Iterations the gate runs: sized for 25-40 million instructions
    /// each, about a second each under valgrind. Changing one changes the
    /// counts: update the baseline in the same commit.
    pub fn iterations(self) -> u64 {
        match self {
            Self::WireCycle => 2_000,
            Self::CoreCycle => 600,
            Self::LogRecords => 10_000,
            Self::InboxRing => 2_000,
            Self::Login => 2_000,
            Self::Replay => 20_000,
        }
    }
}

/// A workload ready to run.
#[derive(Debug)]
pub enum Prepared {
    Wire(WireState),
    Core(CoreState),
    Log(LogState),
    Inbox(InboxState),
    Login(LoginState),
    Replay(ReplayState),
}

/// Builds `workload`'s state (shards, users, logins, buffers, the input
/// of `iterations` iterations where it is consumed). Not part of what the
/// gate counts.
pub fn prepare(workload: Workload, iterations: u64) -> Result<Prepared, HarnessError> {
    Ok(match workload {
        Workload::WireCycle => Prepared::Wire(WireState::new()),
        Workload::CoreCycle => Prepared::Core(CoreState::new()?),
        Workload::LogRecords => Prepared::Log(LogState::new()?),
        Workload::InboxRing => Prepared::Inbox(InboxState::new()?),
        Workload::Login => Prepared::Login(LoginState::new()?),
        Workload::Replay => Prepared::Replay(ReplayState::new(iterations)?),
    })
}

impl Prepared {
    /// Runs `iterations` iterations; returns a checksum of what was
    /// computed (printed by the binary, so no work can be optimised away).
    pub fn run(&mut self, iterations: u64) -> Result<u64, HarnessError> {
        match self {
            Self::Wire(s) => s.run(iterations),
            Self::Core(s) => s.run(iterations),
            Self::Log(s) => s.run(iterations),
            Self::Inbox(s) => s.run(iterations),
            Self::Login(s) => s.run(iterations),
            Self::Replay(s) => s.run(iterations),
        }
    }
}

#[derive(Debug)]
pub struct WireState {
    enc: Encoder,
    limits: tern_wire::Limits,
    out: Vec<u8>,
}

impl WireState {
    fn new() -> Self {
        Self {
            enc: Encoder::default(),
            limits: tern_wire::Limits::default(),
            out: Vec::with_capacity(1024),
        }
    }

    fn run(&mut self, iterations: u64) -> Result<u64, HarnessError> {
        let mut sum = 0u64;
        for i in 0..iterations {
            let frames = [
                Frame::Send {
                    client_msg_id: i + 1,
                    to: USER_ID_FIRST + 7,
                    body: Body::Text(TEXT_100B),
                },
                Frame::ServerAck {
                    client_msg_id: i + 1,
                    server_msg_id: (1 << 54) | (i + 1),
                    timestamp_ms: 1_790_000_000_000 + i,
                },
                Frame::Deliver {
                    id: (1 << 54) | (i + 1),
                    from: USER_ID_FIRST + 3,
                    client_msg_id: i + 1,
                    sent_at_ms: 1_790_000_000_000 + i,
                    body: Body::Text(TEXT_100B),
                },
                Frame::DeliverAck {
                    id: (1 << 54) | (i + 1),
                },
                Frame::Receipt {
                    id: (1 << 54) | (i + 2),
                    kind: ReceiptKind::Delivered,
                    peer: USER_ID_FIRST + 7,
                    client_msg_id: i + 1,
                    at_ms: 1_790_000_000_000 + i,
                },
            ];
            for frame in &frames {
                self.out.clear();
                let n = self
                    .enc
                    .encode(frame, &mut self.out)
                    .map_err(|e| HarnessError(format!("encode: {e}")))?;
                let Ok(Some((payload, _))) = framing::split(&self.out, self.limits.max_frame_len)
                else {
                    return Err(HarnessError("split failed".into()));
                };
                let decoded = tern_wire::decode(payload, &self.limits)
                    .map_err(|e| HarnessError(format!("decode: {e}")))?;
                sum = sum
                    .wrapping_add(n as u64)
                    .wrapping_add(decoded.kind() as u64);
            }
        }
        Ok(sum)
    }
}

#[derive(Debug)]
pub struct CoreState {
    same: (Net, usize, usize),
    cross: (Net, usize, usize),
    client_msg_id: u64,
}

impl CoreState {
    fn new() -> Result<Self, HarnessError> {
        Ok(Self {
            same: pair(Placement::SameShard, LogMode::Instant)?,
            cross: pair(Placement::CrossShard, LogMode::Instant)?,
            client_msg_id: 0,
        })
    }

    fn run(&mut self, iterations: u64) -> Result<u64, HarnessError> {
        let mut sum = 0u64;
        for _ in 0..iterations {
            self.client_msg_id += 1;
            let cmid = self.client_msg_id;
            let (net, a, b) = &mut self.same;
            sum = sum.wrapping_add(net.cycle(*a, *b, cmid, TEXT_100B)?);
            let (net, a, b) = &mut self.cross;
            sum = sum.wrapping_add(net.cycle(*a, *b, cmid, TEXT_100B)?);
        }
        Ok(sum)
    }
}

#[derive(Debug)]
pub struct LogState {
    records: [Record; 2],
    payload: Vec<u8>,
    frame: Vec<u8>,
}

/// The item-stored record of a 100-byte text message, with its body
/// encoded as the shard stores it (a whole Deliver frame).
pub fn message_record(to: UserId, from: UserId, id: u64, client_msg_id: u64) -> Record {
    let mut body = Vec::new();
    let deliver = Frame::Deliver {
        id,
        from: from.0,
        client_msg_id,
        sent_at_ms: 1_790_000_000_000,
        body: Body::Text(TEXT_100B),
    };
    // A 100-byte text always fits the default frame bound.
    let _ = Encoder::default().encode(&deliver, &mut body);
    Record::ItemStored {
        to,
        dedup: Some((from, client_msg_id)),
        item: Item::Message {
            id,
            from,
            client_msg_id,
            sent_at_ms: 1_790_000_000_000,
            body: body.into_boxed_slice(),
        },
    }
}

impl LogState {
    fn new() -> Result<Self, HarnessError> {
        let to = UserId(USER_ID_FIRST + 2);
        let from = UserId(USER_ID_FIRST + 1);
        let stored = message_record(to, from, (1 << 54) | 42, 7);
        if let Record::ItemStored {
            item: Item::Message { body, .. },
            ..
        } = &stored
        {
            if body.is_empty() {
                return Err(HarnessError("Deliver frame failed to encode".into()));
            }
        }
        Ok(Self {
            records: [
                stored,
                Record::ItemAcked {
                    user: to,
                    id: (1 << 54) | 42,
                },
            ],
            payload: Vec::with_capacity(1024),
            frame: Vec::with_capacity(1024),
        })
    }

    fn run(&mut self, iterations: u64) -> Result<u64, HarnessError> {
        let mut sum = 0u64;
        for _ in 0..iterations {
            for record in &self.records {
                self.payload.clear();
                record.encode(&mut self.payload);
                self.frame.clear();
                let n = tern_log::record::encode(record.kind(), &self.payload, &mut self.frame)
                    .map_err(|e| HarnessError(format!("log encode: {e:?}")))?;
                let tern_log::Decoded::Complete { record: read, len } =
                    tern_log::record::decode(&self.frame)
                else {
                    return Err(HarnessError("log decode failed".into()));
                };
                let back = Record::decode(read.kind, read.payload)
                    .map_err(|e| HarnessError(format!("record decode: {e}")))?;
                if let Record::ItemStored { item, .. } = &back {
                    sum = sum.wrapping_add(item.id());
                }
                sum = sum.wrapping_add((n + len) as u64);
            }
        }
        Ok(sum)
    }
}

/// Users in the inbox workload.
const INBOX_USERS: u64 = 16;
/// Items each of them holds throughout.
const INBOX_DEPTH: u64 = 32;

#[derive(Debug)]
pub struct InboxState {
    inboxes: Inboxes,
    item: Item,
    next_id: u64,
}

impl InboxState {
    fn new() -> Result<Self, HarnessError> {
        let mut s = Self {
            inboxes: Inboxes::new(&tern_core::limits::Limits::default()),
            item: Item::Message {
                id: 0,
                from: UserId(USER_ID_FIRST),
                client_msg_id: 1,
                sent_at_ms: 1_790_000_000_000,
                body: vec![0x61; 200].into_boxed_slice(),
            },
            next_id: 1,
        };
        for _ in 0..INBOX_DEPTH {
            for u in 0..INBOX_USERS {
                s.push(UserId(USER_ID_FIRST + u))?;
            }
        }
        Ok(s)
    }

    fn push(&mut self, user: UserId) -> Result<(), HarnessError> {
        let mut item = self.item.clone();
        if let Item::Message { id, .. } = &mut item {
            *id = self.next_id;
        }
        self.next_id += 1;
        self.inboxes
            .push(user, item)
            .map_err(|e| HarnessError(format!("push: {e}")))
    }

    fn run(&mut self, iterations: u64) -> Result<u64, HarnessError> {
        let mut sum = 0u64;
        for _ in 0..iterations {
            for u in 0..INBOX_USERS {
                let user = UserId(USER_ID_FIRST + u);
                self.push(user)?;
                let Some(sent) = self.inboxes.next_unsent(user).map(Item::id) else {
                    return Err(HarnessError("nothing unsent".into()));
                };
                let Some(acked) = self.inboxes.ack(user, sent) else {
                    return Err(HarnessError("ack found nothing".into()));
                };
                sum = sum.wrapping_add(acked.id());
            }
        }
        Ok(sum)
    }
}

/// Registered users the login workload cycles through.
const LOGIN_USERS: u64 = 256;

#[derive(Debug)]
pub struct LoginState {
    shard: Shard,
    /// Hello + Login bytes of each user.
    hello_login: Vec<Vec<u8>>,
    /// Bytes HelloOk + LoginOk take (the same for every user here).
    answer_len: usize,
    out: Vec<u8>,
}

impl LoginState {
    fn new() -> Result<Self, HarnessError> {
        let mut shard = new_shard(0, 1, &Limits::default());
        let mut enc = Encoder::default();
        let mut hello_login = Vec::new();
        for i in 0..LOGIN_USERS {
            let user = UserId(USER_ID_FIRST + i);
            shard
                .replay(account_record(user), 1)
                .map_err(|e| HarnessError(format!("replay account: {e:?}")))?;
            let mut bytes = Vec::new();
            for frame in [
                Frame::Hello(Hello {
                    protocol_version: PROTOCOL_VERSION,
                    capabilities: 0,
                    client_name: "tern-gate",
                }),
                Frame::Login {
                    user_id: user.0,
                    device_key: device_key_for(user),
                },
            ] {
                enc.encode(&frame, &mut bytes)
                    .map_err(|e| HarnessError(format!("encode: {e}")))?;
            }
            hello_login.push(bytes);
        }
        shard.finish_recovery();
        let mut s = Self {
            shard,
            hello_login,
            answer_len: 0,
            out: Vec::new(),
        };
        // One checked login: the answer must be HelloOk then LoginOk.
        s.login(0)?;
        let limits = tern_wire::Limits::default();
        let mut pos = 0;
        let mut got = Vec::new();
        while let Ok(Some((payload, n))) =
            framing::split(s.out.get(pos..).unwrap_or_default(), limits.max_frame_len)
        {
            got.push(seen(payload, &limits)?);
            pos += n;
        }
        if got != [Seen::HelloOk, Seen::LoginOk { queued: 0 }] {
            return Err(HarnessError(format!("login answered {got:?}")));
        }
        s.answer_len = s.out.len();
        Ok(s)
    }

    /// Opens, logs in user `i`, takes the answer into `out`, closes.
    fn login(&mut self, i: u64) -> Result<(), HarnessError> {
        let conn = self
            .shard
            .open(PEER, START_MS)
            .map_err(|e| HarnessError(format!("open: {e:?}")))?;
        let index = usize::try_from(i % LOGIN_USERS).unwrap_or(0);
        let Some(bytes) = self.hello_login.get(index) else {
            return Err(HarnessError("no login bytes".into()));
        };
        self.shard.handle_bytes(conn, bytes, START_MS);
        self.out.clear();
        while let Some(action) = self.shard.poll_action() {
            match action {
                Action::Wake(c) if c == conn => {
                    self.shard.take_output(conn, &mut self.out, START_MS);
                }
                other => return Err(HarnessError(format!("unexpected {other:?}"))),
            }
        }
        self.shard.handle_closed(conn, START_MS);
        Ok(())
    }

    fn run(&mut self, iterations: u64) -> Result<u64, HarnessError> {
        let mut sum = 0u64;
        for i in 0..iterations {
            self.login(i)?;
            if self.out.len() != self.answer_len {
                return Err(HarnessError(format!(
                    "login {i} answered {} bytes, expected {}",
                    self.out.len(),
                    self.answer_len
                )));
            }
            sum = sum.wrapping_add(self.out.len() as u64);
        }
        Ok(sum)
    }
}

/// Recipients of the replayed messages.
const REPLAY_RECIPIENTS: u64 = 100;

#[derive(Debug)]
pub struct ReplayState {
    shard: Shard,
    /// Log frames (length, kind, CRC32C, payload), one per iteration.
    frames: Vec<Vec<u8>>,
}

impl ReplayState {
    fn new(iterations: u64) -> Result<Self, HarnessError> {
        let shard = new_shard(0, 1, &Limits::default());
        let mut frames = Vec::new();
        let mut payload = Vec::new();
        for k in 0..iterations {
            let to = UserId(USER_ID_FIRST + 1_000 + k % REPLAY_RECIPIENTS);
            let from = UserId(USER_ID_FIRST + k % 7);
            let record = message_record(to, from, k + 1, k + 1);
            payload.clear();
            record.encode(&mut payload);
            let mut frame = Vec::new();
            tern_log::record::encode(record.kind(), &payload, &mut frame)
                .map_err(|e| HarnessError(format!("log encode: {e:?}")))?;
            frames.push(frame);
        }
        Ok(Self { shard, frames })
    }

    fn run(&mut self, iterations: u64) -> Result<u64, HarnessError> {
        let mut sum = 0u64;
        let n = usize::try_from(iterations).unwrap_or(usize::MAX);
        if n > self.frames.len() {
            return Err(HarnessError("replay prepared for fewer iterations".into()));
        }
        for frame in self.frames.iter().take(n) {
            let tern_log::Decoded::Complete { record, len } = tern_log::record::decode(frame)
            else {
                return Err(HarnessError("log decode failed".into()));
            };
            let record = Record::decode(record.kind, record.payload)
                .map_err(|e| HarnessError(format!("record decode: {e}")))?;
            // Any non-zero position: the workload never reads bodies back.
            self.shard
                .replay(record, 1 + sum)
                .map_err(|e| HarnessError(format!("replay: {e:?}")))?;
            sum = sum.wrapping_add(len as u64);
        }
        Ok(sum.wrapping_add(self.shard.queued_items() as u64))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a failure should stop the test.
mod tests {
    use super::*;

    #[test]
    fn every_workload_runs_and_is_deterministic() {
        for w in Workload::ALL {
            assert_eq!(Workload::from_name(w.name()), Some(w));
            let a = prepare(w, 20).unwrap().run(20).unwrap();
            let b = prepare(w, 20).unwrap().run(20).unwrap();
            assert_eq!(a, b, "{}", w.name());
        }
    }
}
