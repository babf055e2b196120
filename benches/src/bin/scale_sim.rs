//! Scale simulation: N logged-in sessions and M queued messages in the
//! engine's real data structures, in one process, no sockets. Reports the
//! resident memory each costs (RSS from /proc/self/status before and after
//! each phase).
//!
//! ```text
//! cargo run --release -p tern-benches --bin scale_sim -- --sessions 2000000 --queued 10000000
//! cargo run --release -p tern-benches --bin scale_sim            # quick: 100k sessions, 500k queued
//! ```
//!
//! Phases, all through the shard's public API:
//! 1. accounts: `Shard::replay(Record::Account)` for every user (the
//!    session users and the offline recipients), so no PIN flow is needed;
//! 2. queued: `Shard::replay(Record::ItemStored)` for M messages to offline
//!    recipients (K each, interleaved in arrival order), each record holding
//!    the encoded Deliver frame of a text of `--body-bytes` bytes, as the
//!    live store does; replay keeps only the ring entry and the record's
//!    log position (the body stays on disk), as after a restart or for a
//!    user offline when the message became durable; then `finish_recovery`;
//! 3. sessions: for each session user, `open` on its home shard, then
//!    `handle_bytes` with Hello + Login, then `take_output` (LoginOk is
//!    checked) into a fresh buffer that is dropped: the connection is left
//!    idle, holding no output buffer;
//! 4. steady: the clock moves past the login timeout (every login
//!    deadline expires in the first call, which also starts the connection
//!    sweep), then every shard runs `handle_timeout` each `TICK_MS` for
//!    two more passes of the sweep (at most `SWEEP_SLOTS_PER_CALL_MAX`
//!    slots per call): the first call's time and the other calls' mean
//!    and maximum are reported;
//! 5. dedup: a `Dedup` table filled to its per-shard bound, alone.
//!
//! The per-session figure is the core's state only. The runtime adds per
//! connection costs the load generator measures on a live server: the
//! kernel socket (~3.6 KiB here), the rustls connection, the glommio task
//! and its buffers.
//!
//! Allocator: mimalloc, as the server. RSS deltas include allocator
//! rounding and the slack of hash tables, slabs and rings (capacity grows
//! by doubling), which is what the process really holds. Memory a growing
//! table freed (its old, smaller copy) is given back to the OS by mimalloc
//! only after a delay (`purge_delay`, 10 ms, times 10 for arenas) and only
//! when the allocator next runs; a long-running server gets it back, a
//! phase measured right after building would still count it. So by
//! default the program runs itself again with `MIMALLOC_PURGE_DELAY=0`
//! and `MIMALLOC_ARENA_EAGER_COMMIT=0` (freed memory is returned at once)
//! and the deltas are live memory. `--allocator-defaults` (or setting
//! either variable yourself) measures with the server's settings instead,
//! which shows the transient peak of table growth on top.

// A measurement program: a failed step must stop the run loudly.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::indexing_slicing
)]

use std::time::Instant;

use tern_benches::harness::{account_record, new_shard, seen, Seen, PEER, START_MS, USER_ID_FIRST};
use tern_benches::rss::{peak_rss_bytes, rss_bytes};
use tern_core::action::Action;
use tern_core::dedup::Dedup;
use tern_core::ids;
use tern_core::inbox::Item;
use tern_core::limits::Limits;
use tern_core::record::Record;
use tern_core::shard::{Shard, SWEEP_SLOTS_PER_CALL_MAX, TICK_MS};
use tern_core::user::{home_shard, UserId};
use tern_wire::{framing, Body, Encoder, Frame, Hello, PROTOCOL_VERSION};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "scale_sim [--sessions N] [--queued M] [--shards S] [--per-recipient K] [--body-bytes B] [--no-dedup]
  --sessions N       logged-in idle sessions (default 100000)
  --queued M         queued messages for offline users (default 500000)
  --shards S         shards, all in this one thread (default 2)
  --per-recipient K  queued messages per offline recipient (default 10)
  --body-bytes B     text length of each queued message (default 100)
  --no-dedup         skip the dedup-table phase
  --allocator-defaults  keep mimalloc's default purge settings (RSS then also
                     holds tables freed while growing; see the source)";

struct Args {
    sessions: u64,
    queued: u64,
    shards: u16,
    per_recipient: u64,
    body_bytes: usize,
    dedup: bool,
    allocator_defaults: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        sessions: 100_000,
        queued: 500_000,
        shards: 2,
        per_recipient: 10,
        body_bytes: 100,
        dedup: true,
        allocator_defaults: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut num = || -> u64 {
            it.next()
                .and_then(|v| v.replace('_', "").parse().ok())
                .unwrap_or_else(|| {
                    eprintln!("{flag} needs a number\n{USAGE}");
                    std::process::exit(2)
                })
        };
        match flag.as_str() {
            "--sessions" => a.sessions = num(),
            "--queued" => a.queued = num(),
            "--shards" => a.shards = u16::try_from(num()).unwrap_or(u16::MAX).max(1),
            "--per-recipient" => a.per_recipient = num().max(1),
            "--body-bytes" => a.body_bytes = num() as usize,
            "--no-dedup" => a.dedup = false,
            "--allocator-defaults" => a.allocator_defaults = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0)
            }
            other => {
                eprintln!("unknown argument {other}\n{USAGE}");
                std::process::exit(2)
            }
        }
    }
    a
}

fn rss() -> u64 {
    rss_bytes().expect("VmRSS from /proc/self/status (Linux only)")
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn per(delta: u64, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        delta as f64 / n as f64
    }
}

/// Drains a shard's actions after a login: only wake-ups are expected.
fn drain_login(shard: &mut Shard, limits: &tern_wire::Limits) {
    while let Some(action) = shard.poll_action() {
        match action {
            Action::Wake(conn) => {
                // A fresh buffer: `take_output` swaps it in, so the
                // connection keeps no capacity while idle.
                let mut out = Vec::new();
                shard.take_output(conn, &mut out, START_MS);
                let mut pos = 0;
                let mut last = None;
                while let Some((payload, n)) =
                    framing::split(&out[pos..], limits.max_frame_len).expect("frame")
                {
                    last = Some(seen(payload, limits).expect("decode"));
                    pos += n;
                }
                assert!(
                    matches!(last, Some(Seen::LoginOk { queued: 0 })),
                    "login answered {last:?}"
                );
            }
            other => panic!("unexpected action during login: {other:?}"),
        }
    }
}

struct Phase {
    name: &'static str,
    count: u64,
    unit: &'static str,
    rss_before: u64,
    rss_after: u64,
    seconds: f64,
}

impl Phase {
    fn delta(&self) -> u64 {
        self.rss_after.saturating_sub(self.rss_before)
    }
}

/// mimalloc reads its options once, before `main`: to measure live memory
/// the program starts itself again with the purge settings in its
/// environment. Returns the child's exit code, or `None` to measure here.
fn rerun_with_live_purge(args: &Args) -> Option<i32> {
    let user_set = ["MIMALLOC_PURGE_DELAY", "MIMALLOC_ARENA_EAGER_COMMIT"]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
    if args.allocator_defaults || user_set {
        return None;
    }
    let exe = std::env::current_exe().expect("own path");
    let status = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("MIMALLOC_PURGE_DELAY", "0")
        .env("MIMALLOC_ARENA_EAGER_COMMIT", "0")
        .status()
        .expect("start the measuring process");
    Some(status.code().unwrap_or(1))
}

fn main() {
    let args = parse_args();
    if let Some(code) = rerun_with_live_purge(&args) {
        std::process::exit(code);
    }
    let allocator_mode = if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some()
        || std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_some()
    {
        format!(
            "mimalloc, MIMALLOC_PURGE_DELAY={} MIMALLOC_ARENA_EAGER_COMMIT={} (live memory)",
            std::env::var("MIMALLOC_PURGE_DELAY").unwrap_or_default(),
            std::env::var("MIMALLOC_ARENA_EAGER_COMMIT").unwrap_or_default()
        )
    } else {
        "mimalloc, default options (as the server)".to_string()
    };
    let shards_n = args.shards;
    let limits = Limits {
        // Room for every session on one shard.
        connections_per_shard_max: usize::try_from(args.sessions.max(1)).unwrap(),
        ..Limits::default()
    };
    let wire_limits = tern_wire::Limits::with_max_frame_len(limits.max_frame_len);
    let recipients = args.queued.div_ceil(args.per_recipient);
    let text: String = "chat text ".repeat(args.body_bytes / 10 + 1)[..args.body_bytes].to_string();
    let mut enc = Encoder::new(&wire_limits);
    let mut phases: Vec<Phase> = Vec::new();

    let rss_start = rss();
    let t = Instant::now();
    let mut shards: Vec<Shard> = (0..shards_n)
        .map(|i| new_shard(i, shards_n, &limits))
        .collect();
    phases.push(Phase {
        name: "shards",
        count: u64::from(shards_n),
        unit: "shard",
        rss_before: rss_start,
        rss_after: rss(),
        seconds: t.elapsed().as_secs_f64(),
    });

    // 1. accounts: session users, then offline recipients.
    let session_user = |i: u64| UserId(USER_ID_FIRST + i);
    let recipient = |j: u64| UserId(USER_ID_FIRST + args.sessions + j);
    let before = rss();
    let t = Instant::now();
    for u in (0..args.sessions)
        .map(session_user)
        .chain((0..recipients).map(recipient))
    {
        let home = usize::from(home_shard(u, shards_n));
        shards[home]
            .replay(account_record(u), 1)
            .expect("replay account");
    }
    phases.push(Phase {
        name: "accounts",
        count: args.sessions + recipients,
        unit: "account",
        rss_before: before,
        rss_after: rss(),
        seconds: t.elapsed().as_secs_f64(),
    });

    // 2. queued messages, interleaved over the recipients in arrival order.
    let mut seq = vec![0u64; usize::from(shards_n)];
    let mut frame_bytes_total = 0u64;
    let before = rss();
    let t = Instant::now();
    for k in 0..args.queued {
        let to = recipient(k % recipients);
        let from = session_user(k % args.sessions.max(1));
        let home = home_shard(to, shards_n);
        let s = &mut seq[usize::from(home)];
        *s += 1;
        let id = ids::compose(home, *s);
        let sent_at_ms = START_MS - 86_400_000 + k;
        let mut body = Vec::new();
        enc.encode(
            &Frame::Deliver {
                id,
                from: from.0,
                client_msg_id: k + 1,
                sent_at_ms,
                body: Body::Text(&text),
            },
            &mut body,
        )
        .expect("Deliver encodes");
        frame_bytes_total += body.len() as u64;
        let record = Record::ItemStored {
            to,
            dedup: None,
            item: Item::Message {
                id,
                from,
                client_msg_id: k + 1,
                sent_at_ms,
                body: body.into_boxed_slice(),
            },
        };
        // Restored spilled, as after a restart: the body stays in the log
        // at this (simulated, non-zero) position.
        shards[usize::from(home)]
            .replay(record, k + 1)
            .expect("replay item");
    }
    phases.push(Phase {
        name: "queued",
        count: args.queued,
        unit: "message",
        rss_before: before,
        rss_after: rss(),
        seconds: t.elapsed().as_secs_f64(),
    });
    for s in &mut shards {
        s.finish_recovery();
    }
    let queued_total: u64 = shards.iter().map(|s| s.queued_items() as u64).sum();
    assert_eq!(queued_total, args.queued, "every message queued");

    // 3. sessions: open + Hello + Login on the home shard, then idle.
    let mut buf = Vec::with_capacity(256);
    let before = rss();
    let t = Instant::now();
    for i in 0..args.sessions {
        let u = session_user(i);
        let home = usize::from(home_shard(u, shards_n));
        let shard = &mut shards[home];
        let conn = shard.open(PEER, START_MS).expect("open");
        buf.clear();
        enc.encode(
            &Frame::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                capabilities: 0,
                client_name: "scale-sim",
            }),
            &mut buf,
        )
        .expect("encode");
        enc.encode(
            &Frame::Login {
                user_id: u.0,
                device_key: tern_benches::harness::device_key_for(u),
            },
            &mut buf,
        )
        .expect("encode");
        shard.handle_bytes(conn, &buf, START_MS);
        drain_login(shard, &wire_limits);
    }
    phases.push(Phase {
        name: "sessions",
        count: args.sessions,
        unit: "session",
        rss_before: before,
        rss_after: rss(),
        seconds: t.elapsed().as_secs_f64(),
    });
    let online: u64 = shards.iter().map(|s| s.online_users() as u64).sum();
    assert_eq!(online, args.sessions, "every session logged in");

    // 4. steady: login deadlines pass, then the sweep makes two passes
    // over every connection, a bounded slice per tick.
    let conns_max = shards.iter().map(Shard::connections).max().unwrap_or(0);
    // A pass takes 1,000 ms (10 ticks) or, past the per-call bound, one
    // call per SWEEP_SLOTS_PER_CALL_MAX slots.
    let calls_per_pass = conns_max.div_ceil(SWEEP_SLOTS_PER_CALL_MAX).max(10) as u64;
    let mut first_call_ms = Vec::new();
    let mut sweep_call_ms = Vec::new();
    let before = rss();
    let t = Instant::now();
    for call in 0..=2 * calls_per_pass {
        let now = START_MS + limits.login_timeout_ms + 1 + call * TICK_MS;
        for s in &mut shards {
            let t = Instant::now();
            s.handle_timeout(now);
            let ms = t.elapsed().as_secs_f64() * 1e3;
            if call == 0 {
                first_call_ms.push(ms);
            } else {
                sweep_call_ms.push(ms);
            }
            if let Some(action) = s.poll_action() {
                panic!("an idle session got {action:?}");
            }
        }
    }
    let sweep_call_ms_max = sweep_call_ms.iter().copied().fold(0.0, f64::max);
    let sweep_call_ms_mean = sweep_call_ms.iter().sum::<f64>() / sweep_call_ms.len().max(1) as f64;
    phases.push(Phase {
        name: "steady",
        count: args.sessions,
        unit: "session",
        rss_before: before,
        rss_after: rss(),
        seconds: t.elapsed().as_secs_f64(),
    });
    let online_after: u64 = shards.iter().map(|s| s.online_users() as u64).sum();
    assert_eq!(online_after, args.sessions, "no session cut off");

    // 5. dedup table at its per-shard bound, 10 entries per sender.
    let dedup_entries = limits.dedup_entries_max as u64;
    let mut dedup_keep = None;
    if args.dedup {
        let before = rss();
        let t = Instant::now();
        let mut d = Dedup::from_limits(&limits);
        for k in 0..dedup_entries {
            d.insert(UserId(USER_ID_FIRST + k / 10), k % 10 + 1, k + 1);
        }
        phases.push(Phase {
            name: "dedup",
            count: dedup_entries,
            unit: "entry",
            rss_before: before,
            rss_after: rss(),
            seconds: t.elapsed().as_secs_f64(),
        });
        dedup_keep = Some(d);
    }
    let rss_end = rss();
    let peak = peak_rss_bytes().unwrap_or(0);

    let by = |name: &str| phases.iter().find(|p| p.name == name);
    let per_of = |name: &str| by(name).map_or(0.0, |p| per(p.delta(), p.count));
    let frame_mean = per(frame_bytes_total, args.queued);

    println!(
        "scale_sim: {} sessions, {} queued messages ({} per offline recipient, {} recipients), {} shards, {}-byte texts (Deliver frame {:.0} bytes)",
        args.sessions, args.queued, args.per_recipient, recipients, shards_n, args.body_bytes, frame_mean
    );
    println!("allocator: {allocator_mode}");
    println!(
        "{:<10} {:>10} {:>12} {:>12} {:>12} {:>14} {:>8}",
        "phase", "count", "RSS before", "RSS after", "delta", "bytes each", "seconds"
    );
    for p in &phases {
        println!(
            "{:<10} {:>10} {:>9.1} MiB {:>9.1} MiB {:>9.1} MiB {:>8.1} /{:<5} {:>8.2}",
            p.name,
            p.count,
            mib(p.rss_before),
            mib(p.rss_after),
            mib(p.delta()),
            per(p.delta(), p.count),
            p.unit,
            p.seconds
        );
    }
    println!(
        "bytes per session (core state only: Conn slot, online map, login deadline): {:.1}",
        per_of("sessions")
    );
    println!(
        "  + runtime per connection, measured by the loadgen on a live server: kernel socket ~3.6 KiB, rustls state, glommio task and buffers"
    );
    println!(
        "bytes per account (key hash + generation in the account table): {:.1}",
        per_of("accounts")
    );
    println!(
        "bytes per queued message ({}-byte text; its ring entry, restored spilled as after a restart: the Deliver frame stays in the log): {:.1}",
        args.body_bytes,
        per_of("queued")
    );
    if let Some(p) = by("dedup") {
        println!(
            "dedup table at its bound ({} entries per shard): {:.1} MiB per shard, {:.1} bytes per entry",
            p.count,
            mib(p.delta()),
            per(p.delta(), p.count)
        );
    }
    println!(
        "handle_timeout, ms per shard call: first (every login deadline expires, sweep starts) {}; then {} calls per shard ({} per sweep pass of at most {} slots each): mean {:.3}, max {:.3}",
        first_call_ms
            .iter()
            .map(|m| format!("{m:.1}"))
            .collect::<Vec<_>>()
            .join(", "),
        2 * calls_per_pass,
        calls_per_pass,
        SWEEP_SLOTS_PER_CALL_MAX,
        sweep_call_ms_mean,
        sweep_call_ms_max
    );
    println!(
        "RSS start {:.1} MiB, end {:.1} MiB, peak {:.1} MiB",
        mib(rss_start),
        mib(rss_end),
        mib(peak)
    );

    let phase_json: Vec<serde_json::Value> = phases
        .iter()
        .map(|p| {
            serde_json::json!({
                "phase": p.name,
                "count": p.count,
                "rss_before_bytes": p.rss_before,
                "rss_after_bytes": p.rss_after,
                "bytes_each": per(p.delta(), p.count),
                "seconds": p.seconds,
            })
        })
        .collect();
    let json = serde_json::json!({
        "bench": "scale_sim",
        "allocator": allocator_mode,
        "sessions": args.sessions,
        "queued": args.queued,
        "shards": shards_n,
        "per_recipient": args.per_recipient,
        "body_text_bytes": args.body_bytes,
        "deliver_frame_bytes_mean": frame_mean,
        "bytes_per_session_core": per_of("sessions"),
        "bytes_per_account": per_of("accounts"),
        "bytes_per_queued_message": per_of("queued"),
        "dedup_bytes_per_entry": by("dedup").map(|p| per(p.delta(), p.count)),
        "timeout_first_call_ms": first_call_ms,
        "sweep_calls_per_pass": calls_per_pass,
        "sweep_call_ms_mean": sweep_call_ms_mean,
        "sweep_call_ms_max": sweep_call_ms_max,
        "rss_start_bytes": rss_start,
        "rss_end_bytes": rss_end,
        "rss_peak_bytes": peak,
        "phases": phase_json,
    });
    println!("{json}");
    // Keep everything alive until measured.
    drop(dedup_keep);
    drop(shards);
}
