//! The shard core driven in memory: several shards, fake clients, the mesh
//! and the SMS gateway played by the harness. No sockets, no clock.

use std::net::{IpAddr, Ipv4Addr};

use tern_wire::{
    framing, Body, DeviceKey, Encoder, ErrorCode, Frame, Hello, KickReason, ReceiptKind,
    PROTOCOL_VERSION,
};

use super::*;
use crate::action::SmsJob;
use crate::limits::Limits;
use crate::record::Record;
use crate::user::{home_shard, UserId};

/// Frames a client received, owned for assertions.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Got {
    HelloOk,
    PinSent,
    Registered {
        user: u64,
        key: DeviceKey,
        generation: u32,
    },
    LoginOk {
        queued: u32,
    },
    LoginError(ErrorCode),
    Ack {
        cmid: u64,
        sid: u64,
    },
    Deliver {
        id: u64,
        from: u64,
        cmid: u64,
        text: String,
    },
    Receipt {
        id: u64,
        kind: ReceiptKind,
        peer: u64,
        cmid: u64,
    },
    Error {
        code: ErrorCode,
        cmid: u64,
        fatal: bool,
    },
    Kicked(KickReason),
    Ping,
    Pong,
}

struct Client {
    at: (u16, ConnId),
    rx: Vec<u8>,
    closed: bool,
    reading: bool,
}

struct Net {
    shards: Vec<Shard>,
    clients: Vec<Client>,
    now: u64,
    sms: Vec<SmsJob>,
    sms_ok: bool,
    enc: Encoder,
    /// Each shard's log as appended by the current process: (seq, record,
    /// position in `disk`).
    logs: Vec<Vec<(u64, Record, u64)>>,
    /// Every record each shard ever appended, kept across crashes so that
    /// positions stay valid: position `p` is `disk[s][p - 1]`.
    disk: Vec<Vec<Record>>,
    /// Fetches the harness answers (`Action::Fetch`).
    fetches: u64,
    /// Report every append durable at once (a log that syncs instantly).
    auto_sync: bool,
    limits: Limits,
}

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));

impl Net {
    fn new(shards: u16, limits: Limits) -> Self {
        let n = usize::from(shards);
        let shards = (0..shards).map(|i| new_shard(i, shards, &limits)).collect();
        Self {
            logs: vec![Vec::new(); n],
            disk: vec![Vec::new(); n],
            fetches: 0,
            auto_sync: true,
            limits,
            shards,
            clients: Vec::new(),
            now: 1_000_000,
            sms: Vec::new(),
            sms_ok: true,
            enc: Encoder::default(),
        }
    }

    fn client_at(&self, shard: u16, conn: ConnId) -> Option<usize> {
        self.clients
            .iter()
            .position(|c| c.at == (shard, conn) && !c.closed)
    }

    /// Opens a connection on `shard` and says Hello.
    fn connect(&mut self, shard: u16) -> usize {
        let conn = self.shards[shard as usize].open(PEER, self.now).unwrap();
        self.clients.push(Client {
            at: (shard, conn),
            rx: Vec::new(),
            closed: false,
            reading: true,
        });
        let c = self.clients.len() - 1;
        self.send(
            c,
            &Frame::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                capabilities: 0,
                client_name: "test",
            }),
        );
        assert_eq!(self.take(c), vec![Got::HelloOk]);
        c
    }

    fn send(&mut self, c: usize, frame: &Frame<'_>) {
        let bytes = self.enc.encode_to_vec(frame).unwrap();
        self.send_bytes(c, &bytes);
    }

    fn send_bytes(&mut self, c: usize, bytes: &[u8]) {
        let (shard, conn) = self.clients[c].at;
        self.shards[shard as usize].handle_bytes(conn, bytes, self.now);
        self.run();
    }

    fn flush(&mut self, shard: u16, conn: ConnId) {
        let Some(c) = self.client_at(shard, conn) else {
            return;
        };
        if !self.clients[c].reading {
            return;
        }
        let mut buf = Vec::new();
        self.shards[shard as usize].take_output(conn, &mut buf, self.now);
        self.clients[c].rx.extend_from_slice(&buf);
    }

    /// Carries actions between shards, clients and the SMS gateway until
    /// nothing moves.
    fn run(&mut self) {
        loop {
            let mut moved = false;
            for s in 0..self.shards.len() {
                let shard = u16::try_from(s).unwrap();
                while let Some(action) = self.shards[s].poll_action() {
                    moved = true;
                    match action {
                        Action::Wake(conn) => self.flush(shard, conn),
                        Action::Close(conn) => {
                            let reading =
                                self.client_at(shard, conn).map(|c| self.clients[c].reading);
                            if reading == Some(false) {
                                // Closing flushes whatever the core kept.
                                let c = self.client_at(shard, conn).unwrap();
                                self.clients[c].reading = true;
                            }
                            self.flush(shard, conn);
                            if let Some(c) = self.client_at(shard, conn) {
                                self.clients[c].closed = true;
                            }
                            self.shards[s].handle_closed(conn, self.now);
                        }
                        Action::Migrate { conn, to, state } => {
                            self.flush(shard, conn);
                            let c = self.client_at(shard, conn).unwrap();
                            self.shards[s].forget(conn);
                            // The adopted connection's replay may answer at
                            // once: point the client at its new home first.
                            self.clients[c].at = (
                                to,
                                ConnId {
                                    slot: u32::MAX,
                                    generation: 0,
                                },
                            );
                            let new = self.shards[to as usize].adopt(state, self.now).unwrap();
                            self.clients[c].at = (to, new);
                        }
                        Action::Mesh { to, msg } => {
                            self.shards[to as usize].handle_mesh(msg, self.now);
                        }
                        Action::Append { seq, record } => {
                            self.disk[s].push(record.clone());
                            let loc = self.disk[s].len() as u64;
                            self.shards[s].note_location(seq, loc);
                            self.logs[s].push((seq, record, loc));
                            if self.auto_sync {
                                self.shards[s].handle_durable(seq, self.now);
                            }
                        }
                        Action::Fetch { user, items } => {
                            self.fetches += 1;
                            let loaded = items
                                .iter()
                                .map(|&(id, loc)| {
                                    let Record::ItemStored { to, item, .. } =
                                        self.disk[s][usize::try_from(loc - 1).unwrap()].clone()
                                    else {
                                        panic!("fetch of a non-item record at {loc}");
                                    };
                                    assert_eq!((to, item.id()), (user, id));
                                    item
                                })
                                .collect();
                            self.shards[s].handle_fetched(user, loaded, self.now);
                        }
                        Action::SendSms(job) => {
                            let ok = self.sms_ok;
                            self.sms.push(job.clone());
                            self.shards[s].handle_sms_result(job.job, ok, self.now);
                        }
                    }
                }
            }
            if !moved {
                break;
            }
        }
    }

    /// The log of `shard` reports everything appended so far durable.
    fn sync(&mut self, shard: usize) {
        if let Some(&(seq, _, _)) = self.logs[shard].last() {
            self.shards[shard].handle_durable(seq, self.now);
        }
        self.run();
    }

    /// Kill -9 and restart every shard: each is rebuilt from the records its
    /// log had made durable (`durable[s]` of them); connections are gone.
    fn crash_and_recover(&mut self, durable: &[usize]) {
        let n = u16::try_from(self.shards.len()).unwrap();
        for (s, (log, &keep)) in self.logs.iter_mut().zip(durable).enumerate() {
            let mut shard = new_shard(u16::try_from(s).unwrap(), n, &self.limits);
            log.truncate(keep);
            for (_, record, loc) in log.iter() {
                shard.replay(record.clone(), *loc).unwrap();
            }
            shard.finish_recovery();
            self.shards[s] = shard;
            // The new process numbers its appends from 1 again.
            log.clear();
        }
        for c in &mut self.clients {
            c.closed = true;
        }
    }

    fn tick(&mut self, advance_ms: u64) {
        self.now += advance_ms;
        for s in &mut self.shards {
            s.handle_timeout(self.now);
        }
        self.run();
    }

    /// Decodes and drains what client `c` received.
    fn take(&mut self, c: usize) -> Vec<Got> {
        let rx = std::mem::take(&mut self.clients[c].rx);
        let limits = tern_wire::Limits::default();
        let mut got = Vec::new();
        let mut pos = 0;
        while let Some((payload, n)) = framing::split(&rx[pos..], limits.max_frame_len).unwrap() {
            pos += n;
            got.push(match tern_wire::decode(payload, &limits).unwrap() {
                Frame::HelloOk(_) => Got::HelloOk,
                Frame::PinSent { .. } => Got::PinSent,
                Frame::Registered(r) => Got::Registered {
                    user: r.user_id,
                    key: r.device_key,
                    generation: r.device_generation,
                },
                Frame::LoginOk { queued, .. } => Got::LoginOk { queued },
                Frame::LoginError(e) => Got::LoginError(e.code),
                Frame::ServerAck {
                    client_msg_id,
                    server_msg_id,
                    ..
                } => Got::Ack {
                    cmid: client_msg_id,
                    sid: server_msg_id,
                },
                Frame::Deliver {
                    id,
                    from,
                    client_msg_id,
                    body,
                    ..
                } => Got::Deliver {
                    id,
                    from,
                    cmid: client_msg_id,
                    text: match body {
                        Body::Text(t) => t.to_string(),
                        Body::Media(m) => format!("media:{}", m.url),
                    },
                },
                Frame::Receipt {
                    id,
                    kind,
                    peer,
                    client_msg_id,
                    ..
                } => Got::Receipt {
                    id,
                    kind,
                    peer,
                    cmid: client_msg_id,
                },
                Frame::Error(e) => Got::Error {
                    code: e.code,
                    cmid: e.client_msg_id,
                    fatal: e.fatal,
                },
                Frame::Kicked(k) => Got::Kicked(k.reason),
                Frame::Ping { .. } => Got::Ping,
                Frame::Pong { .. } => Got::Pong,
                other => panic!("unexpected frame to client: {other:?}"),
            });
        }
        assert_eq!(pos, rx.len(), "client got a partial frame");
        got
    }

    fn pin_for(&self, phone: &str) -> String {
        self.sms
            .iter()
            .rev()
            .find(|j| j.phone == phone)
            .unwrap()
            .pin
            .clone()
    }

    /// Registers `phone` from a connection on shard 0; returns the key.
    fn register(&mut self, phone: &str) -> DeviceKey {
        let c = self.connect(0);
        self.send(c, &Frame::RequestPin { phone });
        assert_eq!(self.take(c), vec![Got::PinSent]);
        let pin = self.pin_for(phone);
        self.send(c, &Frame::VerifyPin { phone, pin: &pin });
        let got = self.take(c);
        let [Got::Registered { user, key, .. }] = got.as_slice() else {
            panic!("expected Registered, got {got:?}");
        };
        assert_eq!(*user, UserId::from_phone(phone).unwrap().0);
        *key
    }

    fn login(&mut self, user: u64, key: DeviceKey) -> (usize, u32) {
        let c = self.connect(0);
        self.send(
            c,
            &Frame::Login {
                user_id: user,
                device_key: key,
            },
        );
        let got = self.take_until_login(c);
        (c, got)
    }

    fn take_until_login(&mut self, c: usize) -> u32 {
        let got = self.take(c);
        let Some(Got::LoginOk { queued }) = got.first() else {
            panic!("expected LoginOk, got {got:?}");
        };
        let queued = *queued;
        // Keep what followed LoginOk (queued items) for the test to read.
        let rest: Vec<u8> = got[1..].iter().flat_map(|g| self.reencode(g)).collect();
        self.clients[c].rx.splice(0..0, rest);
        queued
    }

    fn reencode(&mut self, g: &Got) -> Vec<u8> {
        let frame = match g {
            Got::Deliver {
                id,
                from,
                cmid,
                text,
            } => Frame::Deliver {
                id: *id,
                from: *from,
                client_msg_id: *cmid,
                sent_at_ms: 0,
                body: Body::Text(text),
            },
            Got::Receipt {
                id,
                kind,
                peer,
                cmid,
            } => Frame::Receipt {
                id: *id,
                kind: *kind,
                peer: *peer,
                client_msg_id: *cmid,
                at_ms: 0,
            },
            other => panic!("cannot re-encode {other:?}"),
        };
        self.enc.encode_to_vec(&frame).unwrap()
    }

    fn text(&mut self, c: usize, cmid: u64, to: u64, text: &str) {
        self.send(
            c,
            &Frame::Send {
                client_msg_id: cmid,
                to,
                body: Body::Text(text),
            },
        );
    }
}

fn new_shard(i: u16, shards: u16, limits: &Limits) -> Shard {
    let mut seed = [7u8; 32];
    seed[0] = u8::try_from(i).unwrap();
    let mut cfg = ShardConfig::new(i, shards, limits.clone());
    cfg.durable = true;
    Shard::new(cfg, seed)
}

/// Two phone numbers whose users live on different shards of `shards`.
fn phones_on_different_shards(shards: u16) -> (String, String) {
    let a = "+15550000001".to_string();
    let home_a = home_shard(UserId::from_phone(&a).unwrap(), shards);
    let b = (2..1000)
        .map(|i| format!("+1555{i:07}"))
        .find(|p| home_shard(UserId::from_phone(p).unwrap(), shards) != home_a)
        .unwrap();
    (a, b)
}

fn uid(phone: &str) -> u64 {
    UserId::from_phone(phone).unwrap().0
}

#[test]
fn full_cycle_across_shards_with_delivered_and_read_receipts() {
    let mut net = Net::new(3, Limits::default());
    let (alice, bob) = phones_on_different_shards(3);
    let ka = net.register(&alice);
    let kb = net.register(&bob);
    let (a, _) = net.login(uid(&alice), ka);
    let (b, _) = net.login(uid(&bob), kb);
    assert_ne!(
        net.clients[a].at.0, net.clients[b].at.0,
        "users on different shards"
    );

    net.text(a, 7, uid(&bob), "hi bob");
    let got = net.take(a);
    let [Got::Ack { cmid: 7, sid }] = got.as_slice() else {
        panic!("{got:?}")
    };
    let got = net.take(b);
    assert_eq!(
        got,
        vec![Got::Deliver {
            id: *sid,
            from: uid(&alice),
            cmid: 7,
            text: "hi bob".into()
        }]
    );
    net.send(b, &Frame::DeliverAck { id: *sid });
    let bob_home = net.clients[b].at.0 as usize;
    assert_eq!(
        net.shards[bob_home].queue_len(UserId(uid(&bob))),
        0,
        "wiped after ack"
    );
    let got = net.take(a);
    let [Got::Receipt {
        id: rid,
        kind: ReceiptKind::Delivered,
        peer,
        cmid: 7,
    }] = got.as_slice()
    else {
        panic!("{got:?}")
    };
    assert_eq!(*peer, uid(&bob));
    net.send(a, &Frame::DeliverAck { id: *rid });

    net.send(
        b,
        &Frame::MarkRead {
            client_msg_id: 100,
            to: uid(&alice),
            read_client_msg_id: 7,
        },
    );
    assert!(matches!(
        net.take(b).as_slice(),
        [Got::Ack { cmid: 100, .. }]
    ));
    let got = net.take(a);
    assert!(
        matches!(
            got.as_slice(),
            [Got::Receipt {
                kind: ReceiptKind::Read,
                cmid: 7,
                ..
            }]
        ),
        "{got:?}"
    );
}

#[test]
fn offline_recipient_gets_queue_in_order_and_offline_sender_gets_receipts() {
    let mut net = Net::new(2, Limits::default());
    let (alice, bob) = phones_on_different_shards(2);
    let ka = net.register(&alice);
    let kb = net.register(&bob);
    let (a, _) = net.login(uid(&alice), ka);
    for i in 1..=5 {
        net.text(a, i, uid(&bob), &format!("m{i}"));
    }
    assert_eq!(net.take(a).len(), 5, "five acks");
    // Alice goes offline before bob reads anything.
    let (sa, ca) = net.clients[a].at;
    net.shards[sa as usize].handle_closed(ca, net.now);
    net.clients[a].closed = true;

    let (b, queued) = net.login(uid(&bob), kb);
    assert_eq!(queued, 5);
    let got = net.take(b);
    let texts: Vec<_> = got
        .iter()
        .map(|g| match g {
            Got::Deliver { text, .. } => text.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(texts, ["m1", "m2", "m3", "m4", "m5"], "order kept (I2)");
    for g in &got {
        if let Got::Deliver { id, .. } = g {
            net.send(b, &Frame::DeliverAck { id: *id });
        }
    }
    let (a2, queued) = net.login(uid(&alice), ka);
    assert_eq!(queued, 5, "five delivered receipts waited for alice");
    let got = net.take(a2);
    let cmids: Vec<u64> = got
        .iter()
        .map(|g| match g {
            Got::Receipt {
                kind: ReceiptKind::Delivered,
                cmid,
                ..
            } => *cmid,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(cmids, [1, 2, 3, 4, 5]);
}

#[test]
fn unacked_items_are_resent_after_reconnect_and_repeats_keep_the_id() {
    let mut net = Net::new(2, Limits::default());
    let (alice, bob) = phones_on_different_shards(2);
    let ka = net.register(&alice);
    let kb = net.register(&bob);
    let (a, _) = net.login(uid(&alice), ka);
    let (b, _) = net.login(uid(&bob), kb);
    net.text(a, 1, uid(&bob), "once");
    net.take(a);
    let first = net.take(b);
    // Bob drops without acking: the message must come again (I3).
    let (sb, cb) = net.clients[b].at;
    net.shards[sb as usize].handle_closed(cb, net.now);
    net.clients[b].closed = true;
    let (b2, queued) = net.login(uid(&bob), kb);
    assert_eq!(queued, 1);
    assert_eq!(net.take(b2), first, "same item, same id");
}

#[test]
fn duplicate_client_msg_id_is_acked_again_and_stored_once() {
    let mut net = Net::new(2, Limits::default());
    let (alice, bob) = phones_on_different_shards(2);
    let ka = net.register(&alice);
    net.register(&bob);
    let (a, _) = net.login(uid(&alice), ka);
    net.text(a, 42, uid(&bob), "retry me");
    net.text(a, 42, uid(&bob), "retry me");
    let got = net.take(a);
    let [Got::Ack { sid: s1, .. }, Got::Ack { sid: s2, .. }] = got.as_slice() else {
        panic!("{got:?}")
    };
    assert_eq!(s1, s2, "same server id for the retry");
    let home = home_shard(UserId(uid(&bob)), 2) as usize;
    assert_eq!(
        net.shards[home].queue_len(UserId(uid(&bob))),
        1,
        "stored once"
    );
}

#[test]
fn reregistration_kicks_old_device_and_old_key_never_works_again() {
    let mut net = Net::new(2, Limits::default());
    let phone = "+4915112345678";
    let k1 = net.register(phone);
    let (old, _) = net.login(uid(phone), k1);
    let k2 = net.register(phone);
    assert_ne!(k1, k2);
    assert_eq!(net.take(old), vec![Got::Kicked(KickReason::DeviceReplaced)]);
    assert!(net.clients[old].closed);
    let c = net.connect(0);
    net.send(
        c,
        &Frame::Login {
            user_id: uid(phone),
            device_key: k1,
        },
    );
    assert_eq!(net.take(c), vec![Got::LoginError(ErrorCode::LoginFailed)]);
    let (_, _) = net.login(uid(phone), k2);
}

#[test]
fn five_wrong_pins_kill_the_pin() {
    let mut net = Net::new(1, Limits::default());
    let phone = "+15551230000";
    let c = net.connect(0);
    net.send(c, &Frame::RequestPin { phone });
    net.take(c);
    let pin = net.pin_for(phone);
    let wrong = if pin == "000000" { "111111" } else { "000000" };
    for _ in 0..4 {
        net.send(c, &Frame::VerifyPin { phone, pin: wrong });
        assert!(matches!(
            net.take(c).as_slice(),
            [Got::Error {
                code: ErrorCode::PinInvalid,
                fatal: false,
                ..
            }]
        ));
    }
    net.send(c, &Frame::VerifyPin { phone, pin: wrong });
    let got = net.take(c);
    assert!(
        matches!(
            got.as_slice(),
            [Got::Error {
                code: ErrorCode::PinInvalid | ErrorCode::PinAttemptsExceeded,
                ..
            }]
        ),
        "{got:?}"
    );
    net.send(c, &Frame::VerifyPin { phone, pin: &pin });
    let got = net.take(c);
    assert!(
        matches!(
            got.as_slice(),
            [Got::Error {
                code: ErrorCode::PinAttemptsExceeded,
                ..
            }]
        ),
        "the right PIN no longer works: {got:?}"
    );
}

#[test]
fn pin_requests_are_rate_limited_per_number() {
    let limits = Limits::default();
    let burst = limits.pin_requests_per_phone.burst;
    let mut net = Net::new(1, limits);
    let phone = "+15551239999";
    let c = net.connect(0);
    for _ in 0..burst {
        net.send(c, &Frame::RequestPin { phone });
        assert_eq!(net.take(c), vec![Got::PinSent]);
    }
    net.send(c, &Frame::RequestPin { phone });
    assert!(matches!(
        net.take(c).as_slice(),
        [Got::Error {
            code: ErrorCode::PinRateLimited,
            ..
        }]
    ));
}

#[test]
fn sms_failure_is_reported() {
    let mut net = Net::new(1, Limits::default());
    net.sms_ok = false;
    let c = net.connect(0);
    net.send(
        c,
        &Frame::RequestPin {
            phone: "+15551230001",
        },
    );
    assert!(matches!(
        net.take(c).as_slice(),
        [Got::Error {
            code: ErrorCode::SmsFailed,
            fatal: false,
            ..
        }]
    ));
}

#[test]
fn failed_logins_are_rate_limited() {
    let limits = Limits::default();
    let burst = limits.login_failures_per_user.burst;
    let mut net = Net::new(1, limits);
    let phone = "+15551230002";
    let key = net.register(phone);
    let c = net.connect(0);
    let wrong = DeviceKey([9; 32]);
    for _ in 0..burst {
        net.send(
            c,
            &Frame::Login {
                user_id: uid(phone),
                device_key: wrong,
            },
        );
        assert_eq!(net.take(c), vec![Got::LoginError(ErrorCode::LoginFailed)]);
    }
    // Now even the right key is refused until the limit refills.
    net.send(
        c,
        &Frame::Login {
            user_id: uid(phone),
            device_key: key,
        },
    );
    assert_eq!(
        net.take(c),
        vec![Got::LoginError(ErrorCode::LoginRateLimited)]
    );
}

#[test]
fn garbage_closes_only_the_offending_connection() {
    let mut net = Net::new(2, Limits::default());
    let (alice, bob) = phones_on_different_shards(2);
    let ka = net.register(&alice);
    let kb = net.register(&bob);
    let (a, _) = net.login(uid(&alice), ka);
    let (b, _) = net.login(uid(&bob), kb);
    let evil = net.connect(0);
    net.send_bytes(
        evil,
        &[12, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8],
    );
    assert!(matches!(
        net.take(evil).as_slice(),
        [Got::Error {
            code: ErrorCode::MalformedFrame,
            fatal: true,
            ..
        }]
    ));
    assert!(net.clients[evil].closed);
    let evil2 = net.connect(1);
    net.send_bytes(evil2, &u32::MAX.to_le_bytes());
    assert!(matches!(
        net.take(evil2).as_slice(),
        [Got::Error {
            code: ErrorCode::FrameTooLarge,
            fatal: true,
            ..
        }]
    ));
    // A logged-in user sending garbage is closed too; the other keeps going.
    net.send_bytes(a, &[3, 0, 0, 0, 1, 2, 3]);
    assert!(net.clients[a].closed);
    let (a2, _) = net.login(uid(&alice), ka);
    net.text(a2, 1, uid(&bob), "still here");
    assert!(matches!(net.take(a2).as_slice(), [Got::Ack { .. }]));
    assert!(matches!(net.take(b).as_slice(), [Got::Deliver { .. }]));
}

#[test]
fn frames_before_login_are_rejected() {
    let mut net = Net::new(1, Limits::default());
    let c = net.connect(0);
    net.text(c, 1, 15550000001, "sneaky");
    assert!(matches!(
        net.take(c).as_slice(),
        [Got::Error {
            code: ErrorCode::NotAuthenticated,
            fatal: true,
            ..
        }]
    ));
    assert!(net.clients[c].closed);
    // Before Hello, anything but Hello is refused.
    let conn = net.shards[0].open(PEER, net.now).unwrap();
    net.clients.push(Client {
        at: (0, conn),
        rx: Vec::new(),
        closed: false,
        reading: true,
    });
    let c = net.clients.len() - 1;
    net.send(
        c,
        &Frame::RequestPin {
            phone: "+15551230003",
        },
    );
    assert!(matches!(
        net.take(c).as_slice(),
        [Got::Error {
            code: ErrorCode::UnexpectedFrame,
            fatal: true,
            ..
        }]
    ));
}

#[test]
fn queue_full_is_an_error_to_the_sender_and_nothing_is_lost() {
    let limits = Limits {
        inbox_len_max: 3,
        ..Limits::default()
    };
    let mut net = Net::new(2, limits);
    let (alice, bob) = phones_on_different_shards(2);
    let ka = net.register(&alice);
    let kb = net.register(&bob);
    let (a, _) = net.login(uid(&alice), ka);
    for i in 1..=4 {
        net.text(a, i, uid(&bob), &format!("m{i}"));
    }
    let got = net.take(a);
    assert_eq!(got.len(), 4);
    assert!(matches!(
        got[3],
        Got::Error {
            code: ErrorCode::QueueFull,
            cmid: 4,
            fatal: false
        }
    ));
    let (b, queued) = net.login(uid(&bob), kb);
    assert_eq!(queued, 3);
    assert_eq!(net.take(b).len(), 3);
}

#[test]
fn stalled_reader_is_cut_off_and_keeps_its_queue() {
    let mut net = Net::new(1, Limits::default());
    let alice = "+15551230010";
    let bob = "+15551230011";
    let ka = net.register(alice);
    let kb = net.register(bob);
    let (a, _) = net.login(uid(alice), ka);
    let (b, _) = net.login(uid(bob), kb);
    net.clients[b].reading = false;
    net.text(a, 1, uid(bob), "are you there?");
    net.take(a);
    // Bob's socket takes nothing; after the stall bound he is cut off.
    net.tick(1_000);
    net.tick(Limits::default().write_stall_ms_max + 1_000);
    assert!(net.clients[b].closed);
    let got = net.take(b);
    assert!(
        got.contains(&Got::Error {
            code: ErrorCode::SlowConsumer,
            cmid: 0,
            fatal: true
        }),
        "{got:?}"
    );
    let (b2, queued) = net.login(uid(bob), kb);
    assert_eq!(queued, 1, "message kept");
    assert!(matches!(net.take(b2).as_slice(), [Got::Deliver { .. }]));
}

#[test]
fn outbound_bound_cuts_off_a_client_that_never_reads_its_acks() {
    let limits = Limits {
        conn_outbound_bytes_max: 72 * 1024,
        ..Limits::default()
    };
    let mut net = Net::new(1, limits);
    let alice = "+15551230020";
    let bob = "+15551230021";
    let ka = net.register(alice);
    net.register(bob);
    let (a, _) = net.login(uid(alice), ka);
    net.clients[a].reading = false;
    let mut cmid = 0;
    while !net.clients[a].closed {
        cmid += 1;
        assert!(cmid < 100_000, "never cut off");
        net.text(a, cmid, uid(bob), "flood");
    }
    let got = net.take(a);
    assert_eq!(
        got,
        vec![Got::Error {
            code: ErrorCode::SlowConsumer,
            cmid: 0,
            fatal: true
        }]
    );
    // Every Send before the cut-off was stored.
    let home = home_shard(UserId(uid(bob)), 1) as usize;
    assert!(net.shards[home].queue_len(UserId(uid(bob))) > 0);
}

#[test]
fn login_timeout_and_idle_timeout_with_keepalive() {
    let limits = Limits::default();
    let login_ms = limits.login_timeout_ms;
    let ping_ms = limits.ping_interval_ms;
    let idle_ms = limits.idle_timeout_ms;
    let mut net = Net::new(1, limits);
    let c = net.connect(0);
    net.tick(login_ms - 1);
    assert!(!net.clients[c].closed, "inside the bound");
    net.tick(1);
    assert_eq!(
        net.take(c),
        vec![Got::Error {
            code: ErrorCode::LoginTimeout,
            cmid: 0,
            fatal: true
        }]
    );
    assert!(net.clients[c].closed);

    let phone = "+15551230030";
    let k = net.register(phone);
    let (u, _) = net.login(uid(phone), k);
    net.tick(ping_ms + 1_000);
    assert_eq!(net.take(u), vec![Got::Ping]);
    net.send(u, &Frame::Pong { nonce: 1 });
    net.tick(idle_ms - 1_000);
    assert!(!net.clients[u].closed, "the pong counted as traffic");
    net.take(u);
    net.tick(idle_ms + 1_000);
    assert!(net.clients[u].closed);
    assert!(net.take(u).contains(&Got::Error {
        code: ErrorCode::IdleTimeout,
        cmid: 0,
        fatal: true
    }));
}

/// A shard with `n` fresh connections opened at time 0, login deadlines
/// out of the way, and keepalive due at once: every connection the sweep
/// checks gets a Ping (one `Action::Wake`), so Wakes count checks.
fn shard_for_sweep(n: usize) -> Shard {
    let limits = Limits {
        connections_per_shard_max: n,
        login_timeout_ms: u64::MAX / 4,
        ping_interval_ms: 1,
        ..Limits::default()
    };
    let mut shard = Shard::new(ShardConfig::new(0, 1, limits), [7u8; 32]);
    for _ in 0..n {
        shard.open(PEER, 0).unwrap();
    }
    shard
}

/// Wakes queued since the last call: connections the sweep pinged.
fn pinged(shard: &mut Shard) -> usize {
    let mut n = 0;
    while let Some(action) = shard.poll_action() {
        if matches!(action, Action::Wake(_)) {
            n += 1;
        }
    }
    n
}

#[test]
fn sweep_paces_a_pass_over_one_interval() {
    const CONNS: usize = 1_000;
    let mut shard = shard_for_sweep(CONNS);
    shard.handle_timeout(0);
    assert_eq!(pinged(&mut shard), 0, "no time has passed in this pass");
    // A pass takes 1,000 ms: each 100 ms tick checks a tenth of the slots.
    for tick in 1..=10u64 {
        shard.handle_timeout(tick * TICK_MS);
        assert_eq!(pinged(&mut shard), CONNS / 10, "tick {tick}");
    }
    // The pass is over; the next one finds everyone already pinged.
    for tick in 11..=20u64 {
        shard.handle_timeout(tick * TICK_MS);
        assert_eq!(pinged(&mut shard), 0, "tick {tick}");
    }
    assert_eq!(shard.connections(), CONNS);
}

#[test]
fn sweep_checks_at_most_its_bound_per_call() {
    const EXTRA: usize = 100;
    let mut shard = shard_for_sweep(SWEEP_SLOTS_PER_CALL_MAX + EXTRA);
    // A whole interval (or more) is due at once: the call stops at the
    // bound, the next ones finish the pass.
    shard.handle_timeout(10_000);
    assert_eq!(pinged(&mut shard), SWEEP_SLOTS_PER_CALL_MAX);
    shard.handle_timeout(10_000);
    assert_eq!(pinged(&mut shard), EXTRA, "the rest of the pass");
    shard.handle_timeout(10_000);
    assert_eq!(pinged(&mut shard), 0, "a new pass, no time in it yet");
}

#[test]
fn idle_connections_past_the_sweep_bound_are_all_cut() {
    const EXTRA: usize = 10;
    let n = SWEEP_SLOTS_PER_CALL_MAX + EXTRA;
    let mut shard = shard_for_sweep(n);
    let idle_ms = Limits::default().idle_timeout_ms;
    let mut closed = 0;
    let mut calls = 0;
    while closed < n {
        calls += 1;
        assert!(calls <= 2, "{closed} of {n} closed after {calls} calls");
        shard.handle_timeout(idle_ms);
        while let Some(action) = shard.poll_action() {
            if let Action::Close(conn) = action {
                closed += 1;
                shard.handle_closed(conn, idle_ms);
            }
        }
    }
    assert_eq!(calls, 2);
    assert_eq!(shard.connections(), 0);
    assert_eq!(shard.stats().errors(ErrorCode::IdleTimeout), n as u64);
}

#[test]
fn connection_bound_per_shard() {
    let limits = Limits {
        connections_per_shard_max: 2,
        ..Limits::default()
    };
    let mut net = Net::new(1, limits);
    net.connect(0);
    net.connect(0);
    assert_eq!(
        net.shards[0].open(PEER, net.now),
        Err(ErrorCode::Overloaded)
    );
}

#[test]
fn unknown_frame_kind_is_answered_and_the_connection_stays() {
    let mut net = Net::new(1, Limits::default());
    let c = net.connect(0);
    // A Ping frame with its union tag patched to a kind from the future.
    let mut bytes = net.enc.encode_to_vec(&Frame::Ping { nonce: 5 }).unwrap();
    let ping_tag = tern_wire::raw::Body::Ping.0;
    let pos = bytes.iter().rposition(|&b| b == ping_tag).unwrap();
    bytes[pos] = 200;
    net.send_bytes(c, &bytes);
    let got = net.take(c);
    assert!(
        matches!(
            got.as_slice(),
            [Got::Error {
                code: ErrorCode::UnexpectedFrame,
                fatal: false,
                ..
            }]
        ),
        "{got:?}"
    );
    net.send(c, &Frame::Ping { nonce: 6 });
    assert_eq!(net.take(c), vec![Got::Pong]);
}

#[test]
fn anonymous_connection_may_not_hop_between_shards_forever() {
    let mut net = Net::new(4, Limits::default());
    let c = net.connect(0);
    let mut hops = 0;
    let mut last_home = net.clients[c].at.0;
    for i in 0..200u64 {
        let phone = format!("+1555777{i:04}");
        let home = home_shard(UserId::from_phone(&phone).unwrap(), 4);
        if home == last_home {
            continue;
        }
        last_home = home;
        net.send(c, &Frame::RequestPin { phone: &phone });
        if net.clients[c].closed {
            break;
        }
        hops += 1;
    }
    assert_eq!(hops, usize::from(MIGRATIONS_PER_CONN_MAX));
    assert!(net.clients[c].closed);
}

#[test]
fn shutdown_kicks_everyone_and_refuses_new_connections() {
    let mut net = Net::new(1, Limits::default());
    let phone = "+15551230040";
    let k = net.register(phone);
    let (u, _) = net.login(uid(phone), k);
    net.shards[0].begin_shutdown();
    net.run();
    assert_eq!(net.take(u), vec![Got::Kicked(KickReason::ServerShutdown)]);
    assert_eq!(
        net.shards[0].open(PEER, net.now),
        Err(ErrorCode::ShuttingDown)
    );
}

#[test]
fn server_ack_and_delivery_wait_until_the_log_is_durable() {
    let mut net = Net::new(2, Limits::default());
    let (alice, bob) = phones_on_different_shards(2);
    let ka = net.register(&alice);
    let kb = net.register(&bob);
    let (a, _) = net.login(uid(&alice), ka);
    let (b, _) = net.login(uid(&bob), kb);
    net.auto_sync = false;
    net.text(a, 1, uid(&bob), "durable first");
    assert_eq!(net.take(a), vec![], "no ServerAck before the fsync (I1)");
    assert_eq!(net.take(b), vec![], "no delivery before the fsync");
    let bob_home = home_shard(UserId(uid(&bob)), 2) as usize;
    let alice_home = home_shard(UserId(uid(&alice)), 2) as usize;
    net.sync(alice_home);
    assert_eq!(
        net.take(a),
        vec![],
        "the sender's shard syncing is not enough"
    );
    net.sync(bob_home);
    assert!(matches!(net.take(a).as_slice(), [Got::Ack { cmid: 1, .. }]));
    assert!(matches!(
        net.take(b).as_slice(),
        [Got::Deliver { cmid: 1, .. }]
    ));
    // A retry of an operation not yet durable waits too.
    net.text(a, 2, uid(&bob), "again");
    net.text(a, 2, uid(&bob), "again");
    assert_eq!(net.take(a), vec![]);
    net.sync(bob_home);
    let got = net.take(a);
    let [Got::Ack { sid: s1, .. }, Got::Ack { sid: s2, .. }] = got.as_slice() else {
        panic!("{got:?}")
    };
    assert_eq!(s1, s2);
}

#[test]
fn registration_key_is_shown_only_after_it_is_durable() {
    let mut net = Net::new(1, Limits::default());
    let phone = "+15551231000";
    let c = net.connect(0);
    net.send(c, &Frame::RequestPin { phone });
    net.take(c);
    net.auto_sync = false;
    let pin = net.pin_for(phone);
    net.send(c, &Frame::VerifyPin { phone, pin: &pin });
    assert_eq!(net.take(c), vec![]);
    net.sync(0);
    assert!(matches!(net.take(c).as_slice(), [Got::Registered { .. }]));
}

#[test]
fn recovery_rebuilds_accounts_queues_dedup_and_ids_from_the_log() {
    let mut net = Net::new(2, Limits::default());
    let (alice, bob) = phones_on_different_shards(2);
    let ka = net.register(&alice);
    let kb = net.register(&bob);
    let (a, _) = net.login(uid(&alice), ka);
    let mut sids = Vec::new();
    for i in 1..=4 {
        net.text(a, i, uid(&bob), &format!("m{i}"));
        let got = net.take(a);
        let [Got::Ack { sid, .. }] = got.as_slice() else {
            panic!("{got:?}")
        };
        sids.push(*sid);
    }
    let (b, _) = net.login(uid(&bob), kb);
    let got = net.take(b);
    // Bob acks the first two; the other two stay queued.
    for g in &got[..2] {
        let Got::Deliver { id, .. } = g else {
            panic!("{g:?}")
        };
        net.send(b, &Frame::DeliverAck { id: *id });
    }
    // A replaced key must stay dead across the restart (I6).
    let kb2 = net.register(&bob);
    let durable: Vec<usize> = net.logs.iter().map(Vec::len).collect();
    net.crash_and_recover(&durable);

    let c = net.connect(0);
    net.send(
        c,
        &Frame::Login {
            user_id: uid(&bob),
            device_key: kb,
        },
    );
    assert_eq!(net.take(c), vec![Got::LoginError(ErrorCode::LoginFailed)]);
    let (b2, queued) = net.login(uid(&bob), kb2);
    assert_eq!(queued, 2, "acked items stay gone; unacked survive (I1, I3)");
    let texts: Vec<String> = net
        .take(b2)
        .into_iter()
        .map(|g| match g {
            Got::Deliver { text, .. } => text,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(texts, ["m3", "m4"]);
    // Alice got delivered receipts for m1 and m2 before the crash; they
    // were durable, so they wait for her.
    let (a2, queued) = net.login(uid(&alice), ka);
    assert_eq!(queued, 2);
    net.take(a2);
    // Dedup survived: a retry of m4 gets the same id, nothing new stored.
    net.text(a2, 4, uid(&bob), "m4");
    assert_eq!(
        net.take(a2),
        vec![Got::Ack {
            cmid: 4,
            sid: sids[3]
        }]
    );
    // New ids continue after the old ones.
    net.text(a2, 5, uid(&bob), "m5");
    let got = net.take(a2);
    let [Got::Ack { sid, .. }] = got.as_slice() else {
        panic!("{got:?}")
    };
    assert!(*sid > sids[3]);
}

#[test]
fn a_crash_before_the_sync_loses_only_what_was_never_acknowledged() {
    let mut net = Net::new(1, Limits::default());
    let alice = "+15551232000";
    let bob = "+15551232001";
    let ka = net.register(alice);
    let kb = net.register(bob);
    let (a, _) = net.login(uid(alice), ka);
    net.text(a, 1, uid(bob), "acked");
    assert!(matches!(net.take(a).as_slice(), [Got::Ack { .. }]));
    net.auto_sync = false;
    net.text(a, 2, uid(bob), "never acked");
    assert_eq!(net.take(a), vec![]);
    let durable = net.logs[0].len() - 1;
    net.crash_and_recover(&[durable]);
    net.auto_sync = true;
    let (b, queued) = net.login(uid(bob), kb);
    assert_eq!(queued, 1);
    assert!(matches!(
        net.take(b).as_slice(),
        [Got::Deliver { cmid: 1, .. }]
    ));
}

#[test]
fn a_poisoned_shard_refuses_new_messages_and_never_acks_the_unsynced() {
    let mut net = Net::new(1, Limits::default());
    let alice = "+15551233000";
    let bob = "+15551233001";
    let ka = net.register(alice);
    net.register(bob);
    let (a, _) = net.login(uid(alice), ka);
    net.auto_sync = false;
    net.text(a, 1, uid(bob), "in flight when the disk fails");
    net.shards[0].poison();
    net.text(a, 2, uid(bob), "after");
    assert_eq!(
        net.take(a),
        vec![Got::Error {
            code: ErrorCode::ShardUnavailable,
            cmid: 2,
            fatal: false
        }]
    );
    assert!(net.shards[0].is_poisoned());
    assert_eq!(
        net.shards[0].undurable_records(),
        1,
        "message 1 is never acknowledged"
    );
}

#[test]
fn latency_samples_and_error_counts_are_kept_for_the_metrics() {
    let mut net = Net::new(2, Limits::default());
    let (alice, bob) = phones_on_different_shards(2);
    let ka = net.register(&alice);
    let kb = net.register(&bob);
    let (a, _) = net.login(uid(&alice), ka);
    let (b, _) = net.login(uid(&bob), kb);
    net.auto_sync = false;
    net.text(a, 1, uid(&bob), "timed");
    net.now += 7;
    let bob_home = home_shard(UserId(uid(&bob)), 2) as usize;
    net.sync(bob_home);
    let got = net.take(b);
    let [Got::Deliver { id, .. }] = got.as_slice() else {
        panic!("{got:?}")
    };
    net.now += 5;
    net.send(b, &Frame::DeliverAck { id: *id });
    let mut samples = Vec::new();
    for s in &mut net.shards {
        assert_eq!(s.drain_latency_samples(|k, ms| samples.push((k, ms))), 0);
    }
    samples.sort_by_key(|(_, ms)| *ms);
    assert_eq!(
        samples,
        vec![
            (LatencyKind::SendToAck, 7),
            (LatencyKind::SendToDelivered, 12)
        ]
    );
    // An error sent to a client is counted by code.
    net.text(a, 2, 15559999999, "nobody");
    let alice_home = home_shard(UserId(uid(&alice)), 2) as usize;
    assert_eq!(
        net.shards[alice_home]
            .stats()
            .errors(ErrorCode::UnknownRecipient),
        1
    );
}

// ---- bodies on disk, reclaim copies, backpressure ---------------------------

/// Texts of the Delivers in `got`, acking each one.
fn ack_texts(net: &mut Net, c: usize, got: Vec<Got>) -> Vec<String> {
    let mut texts = Vec::new();
    for g in got {
        match g {
            Got::Deliver { id, text, .. } => {
                net.send(c, &Frame::DeliverAck { id });
                texts.push(text);
            }
            other => panic!("{other:?}"),
        }
    }
    texts
}

/// Logs in `user` and reads, acking, until `want` texts arrived.
fn read_all(net: &mut Net, user: u64, key: DeviceKey, want: usize) -> Vec<String> {
    let (c, queued) = net.login(user, key);
    assert_eq!(queued as usize, want);
    let mut texts = Vec::new();
    for _ in 0..want {
        let got = net.take(c);
        if got.is_empty() {
            break;
        }
        texts.extend(ack_texts(net, c, got));
    }
    texts
}

#[test]
fn messages_for_an_offline_user_leave_memory_and_are_read_back_in_order() {
    let mut net = Net::new(2, Limits::default());
    let (alice, bob) = phones_on_different_shards(2);
    let ka = net.register(&alice);
    let kb = net.register(&bob);
    let (a, _) = net.login(uid(&alice), ka);
    // Past one fetch's worth, so several reads are needed.
    let n = super::durability::FETCH_SCAN_MAX * 3 + 5;
    for i in 1..=n {
        net.text(a, i as u64, uid(&bob), &format!("m{i}"));
        assert!(matches!(net.take(a).as_slice(), [Got::Ack { .. }]));
    }
    let bob_home = usize::from(net.shards[0].home_of(UserId(uid(&bob))));
    // Durable while Bob was offline: no body is held in memory.
    assert_eq!(net.fetches, 0);
    assert_eq!(net.shards[bob_home].spilled_items(), n);
    let texts = read_all(&mut net, uid(&bob), kb, n);
    let want: Vec<String> = (1..=n).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, want);
    assert!(net.fetches >= 4, "fetches {}", net.fetches);
    assert_eq!(net.shards[bob_home].queue_len(UserId(uid(&bob))), 0);
    assert_eq!(net.shards[bob_home].spilled_items(), 0);
    // Alice gets a delivered receipt for each: the read-back items carry
    // sender and client id.
    let got = net.take(a);
    assert_eq!(got.len(), n);
    assert!(got.iter().all(|g| matches!(
        g,
        Got::Receipt {
            kind: ReceiptKind::Delivered,
            ..
        }
    )));
}

#[test]
fn a_stale_ack_of_an_item_still_on_disk_keeps_it_for_redelivery() {
    let mut net = Net::new(1, Limits::default());
    let alice = "+15551234000";
    let bob = "+15551234001";
    let ka = net.register(alice);
    let kb = net.register(bob);
    let (a, _) = net.login(uid(alice), ka);
    net.text(a, 1, uid(bob), "one");
    let got = net.take(a);
    let [Got::Ack { sid, .. }] = got.as_slice() else {
        panic!("{got:?}")
    };
    let sid = *sid;
    let c = net.connect(0);
    net.send(
        c,
        &Frame::Login {
            user_id: uid(bob),
            device_key: kb,
        },
    );
    // The ack races the login's read-back: the item must not vanish
    // without its delivered receipt.
    net.send(c, &Frame::DeliverAck { id: sid });
    let mut texts = Vec::new();
    for g in net.take(c) {
        match g {
            Got::LoginOk { .. } => {}
            Got::Deliver { id, text, .. } => {
                net.send(c, &Frame::DeliverAck { id });
                texts.push(text);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(texts, ["one"]);
    assert!(matches!(
        net.take(a).as_slice(),
        [Got::Receipt {
            kind: ReceiptKind::Delivered,
            ..
        }]
    ));
}

#[test]
fn replay_tolerates_reclaim_copies_of_items_and_accounts() {
    let mut net = Net::new(1, Limits::default());
    let alice = "+15551235000";
    let bob = "+15551235001";
    let ka = net.register(alice);
    let kb = net.register(bob);
    let (a, _) = net.login(uid(alice), ka);
    for i in 1..=6 {
        net.text(a, i, uid(bob), &format!("m{i}"));
        net.take(a);
    }
    // Bob reads m1..m3; m4..m6 stay queued.
    let (b, _) = net.login(uid(bob), kb);
    let got = net.take(b);
    for g in &got[..3] {
        let Got::Deliver { id, .. } = g else {
            panic!("{g:?}")
        };
        net.send(b, &Frame::DeliverAck { id: *id });
    }
    // Reclaim's copy-forward of the whole log so far: every live record is
    // appended again, as the runtime does (without the core's sequence),
    // and the core told where each now lies.
    let snapshot: Vec<Record> = net.logs[0].iter().map(|(_, r, _)| r.clone()).collect();
    let live: Vec<Record> = snapshot
        .iter()
        .filter(|r| net.shards[0].is_live(r))
        .cloned()
        .collect();
    // Accounts of both users and the three queued messages (the
    // delivered receipts Alice has not read yet too).
    let items = live
        .iter()
        .filter(|r| matches!(r, Record::ItemStored { .. }))
        .count();
    let accounts = live
        .iter()
        .filter(|r| matches!(r, Record::Account(_)))
        .count();
    assert_eq!(accounts, 2);
    assert_eq!(items, 3 + 3);
    assert!(!live.iter().any(|r| matches!(r, Record::ItemAcked { .. })));
    for record in live {
        net.disk[0].push(record.clone());
        let loc = net.disk[0].len() as u64;
        net.shards[0].relocate(&record, loc);
        let seq = net.logs[0].last().map_or(0, |l| l.0);
        net.logs[0].push((seq, record, loc));
    }
    // Crash with originals and copies both on disk: each item once.
    let durable = vec![net.logs[0].len()];
    net.crash_and_recover(&durable);
    let texts = read_all(&mut net, uid(bob), kb, 3);
    assert_eq!(texts, ["m4", "m5", "m6"]);
    // Login with the copied account works; ids continue.
    let (a2, queued) = net.login(uid(alice), ka);
    assert_eq!(queued, 3 + 3);
    let got = net.take(a2);
    assert_eq!(got.len(), 6, "{got:?}");
}

#[test]
fn log_backpressure_refuses_new_messages_until_it_drains() {
    let mut net = Net::new(1, Limits::default());
    let alice = "+15551236000";
    let bob = "+15551236001";
    let ka = net.register(alice);
    net.register(bob);
    let (a, _) = net.login(uid(alice), ka);
    net.text(a, 1, uid(bob), "before");
    assert!(matches!(net.take(a).as_slice(), [Got::Ack { .. }]));
    net.shards[0].set_log_backpressure(true);
    net.text(a, 2, uid(bob), "during");
    let got = net.take(a);
    assert!(
        matches!(
            got.as_slice(),
            [Got::Error {
                code: ErrorCode::ShardUnavailable,
                ..
            }]
        ),
        "{got:?}"
    );
    // A retry of something already stored is still answered.
    net.text(a, 1, uid(bob), "before");
    assert!(matches!(net.take(a).as_slice(), [Got::Ack { cmid: 1, .. }]));
    assert!(
        !net.shards[0].is_poisoned(),
        "a slow disk is not a failed one"
    );
    net.shards[0].set_log_backpressure(false);
    net.text(a, 2, uid(bob), "during");
    assert!(matches!(net.take(a).as_slice(), [Got::Ack { cmid: 2, .. }]));
}

#[test]
fn a_failed_read_back_poisons_the_shard() {
    let mut net = Net::new(1, Limits::default());
    let alice = "+15551237000";
    let bob = "+15551237001";
    let ka = net.register(alice);
    net.register(bob);
    let (a, _) = net.login(uid(alice), ka);
    net.shards[0].handle_fetch_failed(UserId(uid(bob)));
    assert!(net.shards[0].is_poisoned());
    net.text(a, 1, uid(bob), "x");
    assert!(matches!(
        net.take(a).as_slice(),
        [Got::Error {
            code: ErrorCode::ShardUnavailable,
            ..
        }]
    ));
}

#[test]
fn a_refused_message_is_not_overtaken_by_a_later_one_of_the_same_pair() {
    let limits = Limits {
        inbox_len_max: 2,
        ..Limits::default()
    };
    let mut net = Net::new(1, limits);
    let (alice, bob, carol) = ("+15551238000", "+15551238001", "+15551238002");
    let ka = net.register(alice);
    let kb = net.register(bob);
    net.register(carol);
    let (a, _) = net.login(uid(alice), ka);
    net.text(a, 1, uid(bob), "m1");
    net.text(a, 2, uid(bob), "m2");
    net.text(a, 3, uid(bob), "m3");
    let got = net.take(a);
    assert!(
        matches!(
            got.as_slice(),
            [
                Got::Ack { cmid: 1, .. },
                Got::Ack { cmid: 2, .. },
                Got::Error {
                    code: ErrorCode::QueueFull,
                    cmid: 3,
                    ..
                }
            ]
        ),
        "{got:?}"
    );
    // Bob reads m1: there is room again, but m4 (pipelined behind m3)
    // must not overtake m3.
    let (b, _) = net.login(uid(bob), kb);
    let got = net.take(b);
    let got_at_login: Vec<String> = got
        .iter()
        .filter_map(|g| match g {
            Got::Deliver { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect();
    let Got::Deliver { id, .. } = got[0] else {
        panic!("{got:?}")
    };
    net.send(b, &Frame::DeliverAck { id });
    net.text(a, 4, uid(bob), "m4");
    assert!(matches!(
        without_receipts(net.take(a)).as_slice(),
        [Got::Error {
            code: ErrorCode::QueueFull,
            cmid: 4,
            ..
        }]
    ));
    // Other pairs are not held back.
    net.text(a, 5, uid(carol), "for carol");
    assert!(matches!(
        without_receipts(net.take(a)).as_slice(),
        [Got::Ack { cmid: 5, .. }]
    ));
    // The client retries in order: m3 first, then m4.
    net.text(a, 3, uid(bob), "m3");
    assert!(matches!(
        without_receipts(net.take(a)).as_slice(),
        [Got::Ack { cmid: 3, .. }]
    ));
    let got = net.take(b);
    let mut texts = ack_texts(&mut net, b, got);
    net.text(a, 4, uid(bob), "m4");
    assert!(matches!(
        without_receipts(net.take(a)).as_slice(),
        [Got::Ack { cmid: 4, .. }]
    ));
    let got = net.take(b);
    texts.extend(ack_texts(&mut net, b, got));
    // m1 and m2 went out at login (m2 still unacked then).
    assert_eq!(got_at_login, ["m1", "m2"]);
    assert_eq!(texts, ["m3", "m4"]);
}

/// `got` without the receipts (they arrive whenever a peer acks).
fn without_receipts(got: Vec<Got>) -> Vec<Got> {
    got.into_iter()
        .filter(|g| !matches!(g, Got::Receipt { .. }))
        .collect()
}
