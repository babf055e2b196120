//! The raw worker: connections without client sessions, for two kinds of
//! run the Tern worker ([`crate::worker`]) does not do.
//!
//! - **`--target ceiling`**: tern-ceiling, the raw forwarding ceiling. No
//!   provisioning, no login: each connection's first frame is a hello
//!   naming itself and its partner (the pairing is the Tern run's: users
//!   2k and 2k+1), the ceiling answers "paired", and from then on every
//!   frame goes to the partner verbatim. A message frame is `M` + the same
//!   body a Tern run sends (run nonce, sequence and send time, padded to
//!   `--body-bytes`); the recipient answers each with a receipt frame (`R`
//!   and the sequence), which the ceiling forwards back. Closed loop: a
//!   sender keeps `--outstanding` messages between send and receipt; open
//!   loop: the same slots, omission counting and correction as the Tern
//!   worker. Measured: `deliver` (send → recipient) and `receipt` (send →
//!   receipt frame back at the sender), one clock per pair as in Tern runs.
//! - **`--mode handshake`** (any target): each connection slot
//!   repeatedly connects, completes the TLS 1.3 handshake (ALPN tern/1,
//!   no resumption), sends its last handshake flight and closes with a
//!   reset, for the run's duration. Measured: `connect` (connect() →
//!   handshake done) and `handshake` (TCP up → handshake done).
//!
//! Everything else is shared with Tern runs: phases and the parent
//! protocol, [`Conn`] sockets (source addresses, rustls, batched writes),
//! histograms, the loss/order check.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll};
use rustls::pki_types::ServerName;

use crate::body::{self, BodyHeader};
use crate::check::{check_flow, CheckSummary, RecipientLog, SenderLog};
use crate::conn::{untoken, Conn, ConnError, Stage};
use crate::error::LoadgenError;
use crate::hist::Hist;
use crate::pairing;
use crate::proto::{Command, Counters, WorkerConfig, WorkerMsg, WorkerResult};
use crate::scenario::{Mode, Scenario, BODY_BYTES_MAX};
use crate::worker::{
    server_name, tls_config, CONNECTING_MAX, CONNECT_ATTEMPTS_MAX, NOTES_MAX, POLL_TIMEOUT_MS,
    PROGRESS_EVERY_MS, SCRATCH_LEN, SWEEP_MS,
};

/// Largest frame payload accepted from the server: the generator's own
/// largest message (kind byte + body) with room to spare. Anything larger
/// is a protocol error, so a broken server cannot make a worker buffer
/// without bound.
pub const RAW_FRAME_BYTES_MAX: usize = BODY_BYTES_MAX as usize + 64;
/// Pause before a handshake slot tries again after a failed attempt.
pub const HANDSHAKE_RETRY_MS: u64 = 10;
/// Message frame: `M` + body.
pub const KIND_MESSAGE: u8 = b'M';
/// Receipt frame: `R` + sequence (u64 LE).
pub const KIND_RECEIPT: u8 = b'R';

/// tern-ceiling's hello and answers (ceiling/src/frame.rs is the
/// reference; the smoke test runs this against it).
pub mod hello {
    /// Bytes of the length prefix.
    pub const LEN_PREFIX_BYTES: usize = 4;
    /// Payload of a hello and of the "paired" answer.
    pub const PAYLOAD_BYTES: usize = 20;
    const HELLO_MAGIC: &[u8; 4] = b"TCH1";
    const PAIRED_MAGIC: &[u8; 4] = b"TCP1";
    const REFUSED_MAGIC: &[u8; 4] = b"TCE1";

    /// The hello frame of connection `own`, to be paired with `peer`.
    pub fn encode(own: u64, peer: u64) -> Vec<u8> {
        let mut f = Vec::with_capacity(LEN_PREFIX_BYTES + PAYLOAD_BYTES);
        f.extend_from_slice(&[20, 0, 0, 0]);
        f.extend_from_slice(HELLO_MAGIC);
        f.extend_from_slice(&own.to_le_bytes());
        f.extend_from_slice(&peer.to_le_bytes());
        f
    }

    /// `(own, peer)` from a "paired" payload.
    pub fn paired(payload: &[u8]) -> Option<(u64, u64)> {
        if payload.len() != PAYLOAD_BYTES || payload.get(..4)? != PAIRED_MAGIC {
            return None;
        }
        let own = u64::from_le_bytes(payload.get(4..12)?.try_into().ok()?);
        let peer = u64::from_le_bytes(payload.get(12..20)?.try_into().ok()?);
        Some((own, peer))
    }

    /// The reason of a refusal payload.
    pub fn refused(payload: &[u8]) -> Option<String> {
        let text = payload.strip_prefix(REFUSED_MAGIC)?;
        Some(String::from_utf8_lossy(text).into_owned())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    StartConnect(usize),
    Slot(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Provision,
    WaitConnect,
    Connect,
    WaitRun,
    Run,
    Drain,
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Ready,
    Connecting,
    Up,
    Waiting,
    Failed,
}

#[derive(Debug)]
struct Flow {
    to: usize,
    active: bool,
    seq: u64,
    /// Sent, receipt not back yet: (sequence, send time), oldest first
    /// (one TCP path each way, so receipts come back in order).
    outstanding: VecDeque<(u64, Instant)>,
    log: SenderLog,
}

#[derive(Debug)]
struct User {
    name: String,
    own: u64,
    peer: u64,
    server: SocketAddr,
    source: Option<Ipv4Addr>,
    conn: Option<Conn>,
    generation: u32,
    state: State,
    in_setup: bool,
    deadline: Option<Instant>,
    attempts: u32,
    was_up: bool,
    paired: bool,
    /// Inbound bytes not yet parsed into frames.
    rx: Vec<u8>,
    /// Outbound frames queued in this loop iteration.
    tx: Vec<u8>,
    flow: Option<Box<Flow>>,
    inbound: Option<RecipientLog>,
}

#[derive(Debug, Default)]
struct Stats {
    c: Counters,
    errors: BTreeMap<String, u64>,
    connect: Hist,
    handshake: Hist,
    pair: Hist,
    deliver: Hist,
    receipt: Hist,
    notes: Vec<String>,
}

impl Stats {
    fn error(&mut self, key: &str) {
        self.error_n(key, 1);
    }

    fn error_n(&mut self, key: &str, n: u64) {
        if n == 0 {
            return;
        }
        self.c.errors += n;
        match self.errors.get_mut(key) {
            Some(x) => *x += n,
            None => {
                self.errors.insert(key.to_owned(), n);
            }
        }
    }

    fn note(&mut self, text: String) {
        if self.notes.len() < NOTES_MAX && !self.notes.contains(&text) {
            self.notes.push(text);
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Runs one raw worker to the end (same contract as
/// [`crate::worker::run_worker`]).
pub fn run_worker(
    cfg: WorkerConfig,
    commands: &Receiver<Command>,
    emit: &mut dyn FnMut(&WorkerMsg),
) -> Result<(), LoadgenError> {
    let mut w = Raw::new(cfg)?;
    w.main_loop(commands, emit)
}

struct Raw {
    s: Scenario,
    handshakes_only: bool,
    run_nonce: u32,
    poll: Poll,
    tls: Option<Arc<rustls::ClientConfig>>,
    server_name: ServerName<'static>,
    epoch: Instant,
    users: Vec<User>,
    timers: BinaryHeap<Reverse<(Instant, u64, Timer)>>,
    timer_seq: u64,
    st: Stats,
    scratch: Vec<u8>,
    body: String,
    dirty: Vec<usize>,
    is_dirty: Vec<bool>,
    phase: Phase,
    interval_us: u64,
    connecting: usize,
    ramp_interval: Duration,
    run_started: Option<Instant>,
    run_end: Option<Instant>,
    run_start_counters: Counters,
    run_counters: Counters,
    run_s: f64,
    drain_started: Option<Instant>,
    drain_deadline: Option<Instant>,
    drained: bool,
    rng: pairing::SplitMix64,
}

impl Raw {
    fn new(cfg: WorkerConfig) -> Result<Self, LoadgenError> {
        let s = cfg.scenario;
        let plan = cfg.plan;
        let base = crate::addr::resolve(&s.server)
            .ok_or_else(|| LoadgenError::Scenario(format!("cannot resolve `{}`", s.server)))?;
        let tls = tls_config(&s)?;
        let server_name = server_name(&s)?;
        let procs = usize::try_from(s.procs().max(1)).unwrap_or(1);
        let per_ip = usize::try_from(s.conns_per_source_ip.max(1)).unwrap_or(1);
        let handshakes_only = s.mode == Mode::Handshake;
        let mut users = Vec::with_capacity(plan.users.len());
        for (local, global) in plan.users.clone().enumerate() {
            let local_of = |g: u32| usize::try_from(g - plan.users.start).unwrap_or(usize::MAX);
            let partner = pairing::partner(global);
            let flow = pairing::recipient_of(s.pairing, global)
                .filter(|_| !handshakes_only)
                .map(|to| {
                    Box::new(Flow {
                        to: local_of(to),
                        active: false,
                        seq: 0,
                        outstanding: VecDeque::new(),
                        log: SenderLog::default(),
                    })
                });
            let inbound = pairing::sender_to(s.pairing, global)
                .filter(|_| !handshakes_only)
                .map(|_| RecipientLog::default());
            users.push(User {
                name: format!("{global} -> {partner}"),
                own: pairing::user_id(s.phone_base, global),
                peer: pairing::user_id(s.phone_base, partner),
                server: s.server_for_pair(base, global / 2),
                source: plan.source_ips.get(local / per_ip).copied(),
                conn: None,
                generation: 0,
                state: State::Ready,
                in_setup: false,
                deadline: None,
                attempts: 0,
                was_up: false,
                paired: false,
                rx: Vec::new(),
                tx: Vec::new(),
                flow,
                inbound,
            });
        }
        let ramp_per_worker = (f64::from(s.ramp_per_s) / procs as f64).max(0.001);
        Ok(Self {
            interval_us: s.send_interval_us(),
            ramp_interval: Duration::from_secs_f64(1.0 / ramp_per_worker),
            rng: pairing::SplitMix64::new(s.seed ^ (plan.index as u64).wrapping_mul(7919)),
            handshakes_only,
            s,
            run_nonce: cfg.run_nonce,
            poll: Poll::new()?,
            tls,
            server_name,
            epoch: Instant::now(),
            is_dirty: vec![false; users.len()],
            users,
            timers: BinaryHeap::new(),
            timer_seq: 0,
            st: Stats::default(),
            scratch: vec![0; SCRATCH_LEN],
            body: String::new(),
            dirty: Vec::new(),
            phase: Phase::Provision,
            connecting: 0,
            run_started: None,
            run_end: None,
            run_start_counters: Counters::default(),
            run_counters: Counters::default(),
            run_s: 0.0,
            drain_started: None,
            drain_deadline: None,
            drained: false,
        })
    }

    fn at(&mut self, when: Instant, t: Timer) {
        self.timer_seq += 1;
        self.timers.push(Reverse((when, self.timer_seq, t)));
    }

    fn mark_dirty(&mut self, u: usize) {
        if let Some(d) = self.is_dirty.get_mut(u) {
            if !*d {
                *d = true;
                self.dirty.push(u);
            }
        }
    }

    fn main_loop(
        &mut self,
        commands: &Receiver<Command>,
        emit: &mut dyn FnMut(&WorkerMsg),
    ) -> Result<(), LoadgenError> {
        let mut events = Events::with_capacity(1_024);
        let start = Instant::now();
        let mut next_sweep = start;
        let progress_every = Duration::from_millis(PROGRESS_EVERY_MS);
        let mut next_progress = start + progress_every;
        loop {
            let now = Instant::now();
            let mut wait = Duration::from_millis(POLL_TIMEOUT_MS);
            if let Some(Reverse((t, _, _))) = self.timers.peek() {
                wait = wait.min(t.saturating_duration_since(now));
            }
            if !self.dirty.is_empty() {
                wait = Duration::ZERO;
            }
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(LoadgenError::Io(e));
                }
            }
            let now = Instant::now();
            for ev in events.iter() {
                let (u, generation) = untoken(ev.token());
                self.on_socket(u, generation, now);
            }
            loop {
                match commands.try_recv() {
                    Ok(cmd) => self.on_command(cmd, now),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.on_command(Command::Abort, now);
                        break;
                    }
                }
            }
            self.run_timers(now);
            if now >= next_sweep {
                next_sweep = now + Duration::from_millis(SWEEP_MS);
                self.sweep(now, emit);
            }
            if now >= next_progress {
                next_progress = now + progress_every;
                emit(&WorkerMsg::Progress {
                    counters: self.st.c,
                });
            }
            self.flush_dirty(now);
            if self.phase == Phase::Done {
                let result = self.finish(now);
                emit(&WorkerMsg::Done {
                    result: Box::new(result),
                });
                return Ok(());
            }
        }
    }

    // ---- Phases ------------------------------------------------------

    fn on_command(&mut self, cmd: Command, now: Instant) {
        match (cmd, self.phase) {
            (Command::Connect, Phase::WaitConnect) => {
                self.phase = Phase::Connect;
                if self.handshakes_only {
                    // Handshake slots start with the run.
                    return;
                }
                let mut t = now;
                for u in 0..self.users.len() {
                    self.at(t, Timer::StartConnect(u));
                    t += self.ramp_interval;
                }
            }
            (Command::Run, Phase::WaitRun) => self.start_run(now),
            (Command::Abort, _) => {
                if self.run_started.is_some() && self.drain_started.is_none() {
                    self.run_s = self.elapsed_run(now);
                    self.run_counters = self.st.c.since(&self.run_start_counters);
                }
                self.phase = Phase::Done;
            }
            (cmd, phase) => self
                .st
                .note(format!("command {cmd:?} ignored in phase {phase:?}")),
        }
    }

    fn elapsed_run(&self, now: Instant) -> f64 {
        self.run_started
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64())
    }

    fn start_run(&mut self, now: Instant) {
        self.phase = Phase::Run;
        self.run_started = Some(now);
        self.run_end = Some(now + Duration::from_secs_f64(self.s.duration_s));
        self.run_start_counters = self.st.c;
        if self.handshakes_only {
            let mut t = now;
            for u in 0..self.users.len() {
                self.at(t, Timer::StartConnect(u));
                t += self.ramp_interval;
            }
            return;
        }
        if self.s.mode == Mode::Idle {
            return;
        }
        let up: Vec<bool> = self.users.iter().map(|x| x.state == State::Up).collect();
        for u in 0..self.users.len() {
            let phase_offset = if self.interval_us > 0 {
                Duration::from_micros(self.rng.below(self.interval_us))
            } else {
                Duration::ZERO
            };
            let Some(flow) = self.users.get_mut(u).and_then(|x| x.flow.as_deref_mut()) else {
                continue;
            };
            flow.active =
                up.get(u).copied().unwrap_or(false) && up.get(flow.to).copied().unwrap_or(false);
            if !flow.active {
                continue;
            }
            match self.s.mode {
                Mode::Closed => self.refill(u, now),
                Mode::Open => self.at(now + phase_offset, Timer::Slot(u)),
                Mode::Idle | Mode::Handshake => {}
            }
        }
    }

    fn start_drain(&mut self, now: Instant) {
        self.phase = Phase::Drain;
        self.run_s = self.elapsed_run(now);
        self.run_counters = self.st.c.since(&self.run_start_counters);
        self.drain_started = Some(now);
        self.drain_deadline = Some(now + Duration::from_secs_f64(self.s.drain_timeout_s));
        if self.handshakes_only {
            // Handshakes in progress are not waited for: only those that
            // completed inside the run phase count.
            for u in 0..self.users.len() {
                self.drop_conn(u, None, now);
            }
            self.drained = true;
            self.phase = Phase::Done;
        }
    }

    fn is_drained(&self) -> bool {
        self.users.iter().all(|x| {
            x.flow
                .as_deref()
                .is_none_or(|f| !f.active || f.outstanding.is_empty())
        })
    }

    fn sweep(&mut self, now: Instant, emit: &mut dyn FnMut(&WorkerMsg)) {
        for u in 0..self.users.len() {
            let late = self
                .users
                .get(u)
                .is_some_and(|x| x.in_setup && x.deadline.is_some_and(|d| now >= d));
            if late {
                self.drop_conn(u, Some("local:setup_timeout"), now);
            }
        }
        match self.phase {
            Phase::Provision => {
                // Nothing to provision: the ceiling has no accounts, and a
                // handshake needs none.
                emit(&WorkerMsg::Provisioned {
                    registered: 0,
                    cached: 0,
                    failed: 0,
                });
                self.phase = Phase::WaitConnect;
            }
            Phase::Connect => {
                let settled = self.handshakes_only
                    || self
                        .users
                        .iter()
                        .all(|x| matches!(x.state, State::Up | State::Failed));
                if settled {
                    let up = self.users.iter().filter(|x| x.state == State::Up).count();
                    let failed = self
                        .users
                        .iter()
                        .filter(|x| x.state == State::Failed)
                        .count();
                    emit(&WorkerMsg::Connected {
                        up: up as u64,
                        failed: failed as u64,
                    });
                    self.phase = Phase::WaitRun;
                }
            }
            Phase::Run => {
                if self.run_end.is_some_and(|e| now >= e) {
                    self.start_drain(now);
                }
            }
            Phase::Drain => {
                if self.is_drained() {
                    self.drained = true;
                    self.phase = Phase::Done;
                } else if self.drain_deadline.is_some_and(|d| now >= d) {
                    self.st.note(format!(
                        "drain timed out after {} s with receipts outstanding",
                        self.s.drain_timeout_s
                    ));
                    self.phase = Phase::Done;
                }
            }
            Phase::WaitConnect | Phase::WaitRun | Phase::Done => {}
        }
    }

    // ---- Timers ------------------------------------------------------

    fn run_timers(&mut self, now: Instant) {
        while let Some(Reverse((t, _, timer))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            match timer {
                Timer::StartConnect(u) => {
                    let ok = self
                        .users
                        .get(u)
                        .is_some_and(|x| matches!(x.state, State::Ready | State::Waiting));
                    if !ok || (self.handshakes_only && self.phase != Phase::Run) {
                        continue;
                    }
                    if self.connecting >= CONNECTING_MAX {
                        self.at(now + Duration::from_millis(5), timer);
                    } else {
                        self.start_conn(u, now);
                    }
                }
                Timer::Slot(u) => self.on_slot(u, t, now),
            }
        }
    }

    fn on_slot(&mut self, u: usize, slot: Instant, now: Instant) {
        if self.phase != Phase::Run {
            return;
        }
        let interval = Duration::from_micros(self.interval_us.max(1));
        let cap = usize::try_from(self.s.outstanding).unwrap_or(usize::MAX);
        let Some(user) = self.users.get_mut(u) else {
            return;
        };
        let up = user.state == State::Up;
        let Some(flow) = user.flow.as_deref_mut() else {
            return;
        };
        if !flow.active {
            return;
        }
        let can_send = up && flow.outstanding.len() < cap;
        let mut next = slot + interval;
        let mut omitted = u64::from(!can_send);
        // Behind by more than one interval: skip the missed slots rather
        // than burst (the histograms' correction accounts for them).
        if next + interval < now {
            let behind = now.saturating_duration_since(next);
            let skip = micros(behind) / micros(interval).max(1);
            omitted += skip;
            next += interval.saturating_mul(u32::try_from(skip).unwrap_or(u32::MAX));
        }
        self.st.c.omitted += omitted;
        self.at(next, Timer::Slot(u));
        if can_send {
            self.send_one(u, now);
        }
    }

    // ---- Connections -------------------------------------------------

    fn start_conn(&mut self, u: usize, now: Instant) {
        let deadline = now + Duration::from_secs_f64(self.s.connect_timeout_s);
        let tls = self.tls.as_ref().map(|c| (c, &self.server_name));
        let Some(user) = self.users.get_mut(u) else {
            return;
        };
        if user.conn.is_some() {
            return;
        }
        user.generation = user.generation.wrapping_add(1);
        user.state = State::Connecting;
        match Conn::connect(
            user.server,
            user.source,
            tls,
            self.poll.registry(),
            u,
            user.generation,
            now,
        ) {
            Ok(conn) => {
                user.conn = Some(conn);
                user.in_setup = true;
                user.deadline = Some(deadline);
                self.connecting += 1;
            }
            Err(e) => {
                if e.raw_os_error() == Some(libc::EMFILE) {
                    self.st
                        .note("out of file descriptors: use more --procs".to_owned());
                }
                if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) {
                    self.st
                        .note("source ports exhausted: lower --conns-per-source-ip".to_owned());
                }
                self.after_failure(u, &format!("local:connect:{:?}", e.kind()), now);
            }
        }
    }

    /// Ends `u`'s connection; `error` is `None` for a planned close.
    fn drop_conn(&mut self, u: usize, error: Option<&str>, now: Instant) {
        let Some(user) = self.users.get_mut(u) else {
            return;
        };
        let Some(conn) = user.conn.take() else {
            return;
        };
        conn.close(self.poll.registry());
        user.rx = Vec::new();
        user.tx.clear();
        user.paired = false;
        let mut in_flight = 0;
        if let Some(flow) = user.flow.as_deref_mut() {
            // The ceiling keeps nothing: what was in flight is gone (the
            // check reports it as lost); the window starts empty again.
            in_flight = flow.outstanding.len() as u64;
            flow.outstanding.clear();
        }
        if user.in_setup {
            user.in_setup = false;
            self.connecting = self.connecting.saturating_sub(1);
        }
        if user.state == State::Up {
            self.st.c.conns_up = self.st.c.conns_up.saturating_sub(1);
        }
        user.state = State::Ready;
        self.st.error_n("local:in_flight_at_close", in_flight);
        if let Some(key) = error {
            self.after_failure(u, key, now);
        }
    }

    /// Counts a failure and schedules another attempt, or gives up.
    fn after_failure(&mut self, u: usize, key: &str, now: Instant) {
        self.st.error(key);
        let handshakes_only = self.handshakes_only;
        let Some(user) = self.users.get_mut(u) else {
            return;
        };
        user.state = State::Waiting;
        if handshakes_only {
            // Failures are counted; the slot keeps trying until the end.
            self.at(
                now + Duration::from_millis(HANDSHAKE_RETRY_MS),
                Timer::StartConnect(u),
            );
            return;
        }
        user.attempts += 1;
        if user.attempts < CONNECT_ATTEMPTS_MAX {
            let backoff = Duration::from_millis(200 * u64::from(user.attempts));
            self.at(now + backoff, Timer::StartConnect(u));
        } else {
            user.state = State::Failed;
            self.st.c.conns_failed += 1;
            self.st.error("local:connect_gave_up");
        }
    }

    fn on_socket(&mut self, u: usize, generation: u32, now: Instant) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = self.on_socket_inner(u, generation, now, &mut scratch);
        self.scratch = scratch;
        if let Err(key) = result {
            self.drop_conn(u, Some(&key), now);
        }
    }

    fn on_socket_inner(
        &mut self,
        u: usize,
        generation: u32,
        now: Instant,
        scratch: &mut [u8],
    ) -> Result<(), String> {
        let Some(user) = self.users.get_mut(u) else {
            return Ok(());
        };
        let User { conn, rx, .. } = user;
        let Some(conn) = conn.as_mut() else {
            return Ok(());
        };
        if conn.generation != generation {
            return Ok(());
        }
        let mut keep = |bytes: &[u8]| {
            rx.extend_from_slice(bytes);
            true
        };
        if conn.stage != Stage::Open {
            if conn
                .progress(now, scratch, &mut keep)
                .map_err(|e| e.key())?
            {
                if self.handshakes_only {
                    return self.on_handshake_done(u, now);
                }
                self.on_open(u, now);
                if let Some(User {
                    conn: Some(c), rx, ..
                }) = self.users.get_mut(u)
                {
                    c.read(scratch, &mut |b: &[u8]| {
                        rx.extend_from_slice(b);
                        true
                    })
                    .map_err(|e| e.key())?;
                }
            }
        } else {
            conn.flush().map_err(|e| e.key())?;
            conn.read(scratch, &mut keep).map_err(|e| e.key())?;
        }
        self.take_frames(u, now)
    }

    /// A handshake slot finished its handshake: count it, send the last
    /// flight, close, and start the next one.
    fn on_handshake_done(&mut self, u: usize, now: Instant) -> Result<(), String> {
        let Some(user) = self.users.get_mut(u) else {
            return Ok(());
        };
        if let Some(conn) = user.conn.as_mut() {
            // The client's Finished: without it the server would not
            // complete its side of the handshake.
            conn.flush().map_err(|e: ConnError| e.key())?;
            self.st
                .connect
                .record(micros(now.saturating_duration_since(conn.started)));
            if let Some(tcp_up) = conn.tcp_up {
                self.st
                    .handshake
                    .record(micros(now.saturating_duration_since(tcp_up)));
            }
        }
        self.st.c.handshakes += 1;
        self.drop_conn(u, None, now);
        if self.phase == Phase::Run {
            self.start_conn(u, now);
        }
        Ok(())
    }

    /// TCP (and TLS) are up: say hello.
    fn on_open(&mut self, u: usize, now: Instant) {
        let Some(user) = self.users.get_mut(u) else {
            return;
        };
        if let Some(conn) = user.conn.as_ref() {
            self.st
                .connect
                .record(micros(now.saturating_duration_since(conn.started)));
        }
        user.tx
            .extend_from_slice(&hello::encode(user.own, user.peer));
        self.mark_dirty(u);
    }

    fn flush_dirty(&mut self, now: Instant) {
        let dirty = std::mem::take(&mut self.dirty);
        for &u in &dirty {
            if let Some(d) = self.is_dirty.get_mut(u) {
                *d = false;
            }
            let Some(user) = self.users.get_mut(u) else {
                continue;
            };
            let Some(conn) = user.conn.as_mut().filter(|c| c.stage == Stage::Open) else {
                user.tx.clear();
                continue;
            };
            let result = conn.write(&user.tx);
            user.tx.clear();
            if let Err(e) = result {
                self.drop_conn(u, Some(&e.key()), now);
            }
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    // ---- Frames ------------------------------------------------------

    /// Handles every complete frame in `u`'s inbound bytes.
    fn take_frames(&mut self, u: usize, now: Instant) -> Result<(), String> {
        let Some(user) = self.users.get_mut(u) else {
            return Ok(());
        };
        let rx = std::mem::take(&mut user.rx);
        let mut pos = 0;
        let mut result = Ok(());
        while let Some(prefix) = rx.get(pos..pos + hello::LEN_PREFIX_BYTES) {
            let mut len = [0u8; 4];
            len.copy_from_slice(prefix);
            let len = usize::try_from(u32::from_le_bytes(len)).unwrap_or(usize::MAX);
            if len > RAW_FRAME_BYTES_MAX {
                result = Err("local:frame_too_large".to_owned());
                break;
            }
            let start = pos + hello::LEN_PREFIX_BYTES;
            let Some(payload) = rx.get(start..start + len) else {
                break;
            };
            pos = start + len;
            if let Err(e) = self.on_frame(u, payload, now) {
                result = Err(e);
                break;
            }
        }
        if result.is_ok() {
            if let Some(user) = self.users.get_mut(u).filter(|x| x.conn.is_some()) {
                let mut rx = rx;
                rx.drain(..pos.min(rx.len()));
                user.rx = rx;
            }
        }
        result
    }

    fn on_frame(&mut self, u: usize, payload: &[u8], now: Instant) -> Result<(), String> {
        let paired = self.users.get(u).is_some_and(|x| x.paired);
        if !paired {
            return self.on_first_frame(u, payload, now);
        }
        match payload.split_first() {
            Some((&KIND_MESSAGE, body)) => {
                self.on_message(u, body, now);
                Ok(())
            }
            Some((&KIND_RECEIPT, seq)) => {
                let seq: [u8; 8] = seq.try_into().map_err(|_| "local:bad_receipt".to_owned())?;
                self.on_receipt(u, u64::from_le_bytes(seq), now);
                Ok(())
            }
            _ => Err("local:unknown_frame".to_owned()),
        }
    }

    fn on_first_frame(&mut self, u: usize, payload: &[u8], now: Instant) -> Result<(), String> {
        if let Some(why) = hello::refused(payload) {
            self.st.note(format!("the ceiling refused a hello: {why}"));
            return Err("ceiling:refused".to_owned());
        }
        let phase = self.phase;
        let mode = self.s.mode;
        let Some(user) = self.users.get_mut(u) else {
            return Ok(());
        };
        if hello::paired(payload) != Some((user.own, user.peer)) {
            return Err("local:not_paired".to_owned());
        }
        user.paired = true;
        if let Some(opened) = user.conn.as_ref().and_then(|c| c.opened) {
            self.st
                .pair
                .record(micros(now.saturating_duration_since(opened)));
        }
        if user.in_setup {
            user.in_setup = false;
            self.connecting = self.connecting.saturating_sub(1);
        }
        user.state = State::Up;
        user.attempts = 0;
        user.deadline = None;
        self.st.c.conns_up += 1;
        if user.was_up {
            self.st.c.reconnects += 1;
        }
        user.was_up = true;
        if phase == Phase::Run && mode == Mode::Closed {
            self.refill(u, now);
        }
        Ok(())
    }

    fn record_latency(hist: &mut Hist, us: u64, interval_us: u64) {
        if interval_us > 0 {
            hist.record_correct(us, interval_us);
        } else {
            hist.record(us);
        }
    }

    fn on_message(&mut self, u: usize, body: &[u8], now: Instant) {
        let header = std::str::from_utf8(body).ok().and_then(body::decode);
        let run_nonce = self.run_nonce;
        let interval_us = self.interval_us;
        let now_us = micros(now.saturating_duration_since(self.epoch));
        let Some(user) = self.users.get_mut(u) else {
            return;
        };
        let Some(log) = user.inbound.as_mut() else {
            self.st.c.stale += 1;
            return;
        };
        match header {
            Some(BodyHeader { run, seq, sent_us }) if run == run_nonce => {
                // The sequence stands in for both ids: the ceiling has no
                // inbox ids, and order is the sender's.
                log.on_deliver(seq, seq);
                self.st.c.delivered += 1;
                Self::record_latency(
                    &mut self.st.deliver,
                    now_us.saturating_sub(sent_us),
                    interval_us,
                );
                user.tx.extend_from_slice(&9u32.to_le_bytes());
                user.tx.push(KIND_RECEIPT);
                user.tx.extend_from_slice(&seq.to_le_bytes());
                self.mark_dirty(u);
            }
            _ => self.st.c.stale += 1,
        }
    }

    fn on_receipt(&mut self, u: usize, seq: u64, now: Instant) {
        let interval_us = self.interval_us;
        let closed = self.s.mode == Mode::Closed;
        let Some(flow) = self.users.get_mut(u).and_then(|x| x.flow.as_deref_mut()) else {
            self.st.c.stale += 1;
            return;
        };
        match flow.outstanding.front() {
            Some(&(front, at)) if front == seq => {
                flow.outstanding.pop_front();
                self.st.c.receipts += 1;
                Self::record_latency(
                    &mut self.st.receipt,
                    micros(now.saturating_duration_since(at)),
                    interval_us,
                );
                if closed {
                    self.refill(u, now);
                }
            }
            _ => self.st.error("local:receipt_out_of_order"),
        }
    }

    // ---- Sending -----------------------------------------------------

    /// Closed loop: tops the sender's window up.
    fn refill(&mut self, u: usize, now: Instant) {
        if self.phase != Phase::Run {
            return;
        }
        let limit = usize::try_from(self.s.outstanding).unwrap_or(usize::MAX);
        loop {
            let Some(user) = self.users.get(u) else {
                return;
            };
            if user.state != State::Up {
                return;
            }
            let Some(flow) = user.flow.as_deref() else {
                return;
            };
            if !flow.active || flow.outstanding.len() >= limit {
                return;
            }
            self.send_one(u, now);
        }
    }

    fn send_one(&mut self, u: usize, now: Instant) {
        let sent_us = micros(now.saturating_duration_since(self.epoch));
        let body_len = usize::try_from(self.s.body_bytes).unwrap_or(0);
        let run = self.run_nonce;
        let Some(user) = self.users.get_mut(u) else {
            return;
        };
        let Some(flow) = user.flow.as_deref_mut() else {
            return;
        };
        let seq = flow.seq;
        body::encode(BodyHeader { run, seq, sent_us }, body_len, &mut self.body);
        // body_bytes is bounded by BODY_BYTES_MAX: the length fits.
        let len = u32::try_from(1 + self.body.len()).unwrap_or(u32::MAX);
        user.tx.extend_from_slice(&len.to_le_bytes());
        user.tx.push(KIND_MESSAGE);
        user.tx.extend_from_slice(self.body.as_bytes());
        flow.seq += 1;
        flow.outstanding.push_back((seq, now));
        // No ServerAck here: a message counts as acknowledged once it is
        // handed to the socket, so `lost` is sent but never delivered.
        flow.log.acked.push(seq);
        self.st.c.sent += 1;
        self.mark_dirty(u);
    }

    // ---- The end -----------------------------------------------------

    fn finish(&mut self, now: Instant) -> WorkerResult {
        let mut check = CheckSummary::default();
        let mut active_flows = 0;
        for user in &self.users {
            let Some(flow) = user.flow.as_deref() else {
                continue;
            };
            if !flow.active {
                continue;
            }
            active_flows += 1;
            let Some(log) = self.users.get(flow.to).and_then(|r| r.inbound.as_ref()) else {
                continue;
            };
            let mut c = check_flow(&user.name, &flow.log, log);
            c.receipts_missing = flow.outstanding.len() as u64;
            if c.receipts_missing > 0 {
                c.example(format!(
                    "{}: {} receipt frame(s) missing",
                    user.name, c.receipts_missing
                ));
            }
            check.add(&c);
        }
        let drain_s = self
            .drain_started
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        for u in 0..self.users.len() {
            self.drop_conn(u, None, now);
        }
        let hists = [
            ("connect", &self.st.connect),
            ("handshake", &self.st.handshake),
            ("pair", &self.st.pair),
            ("deliver", &self.st.deliver),
            ("receipt", &self.st.receipt),
        ]
        .into_iter()
        .map(|(k, h)| (k.to_owned(), h.to_base64()))
        .collect();
        WorkerResult {
            total: self.st.c,
            run: self.run_counters,
            run_s: self.run_s,
            drain_s,
            drained: self.drained,
            errors: std::mem::take(&mut self.st.errors),
            hists,
            check,
            new_keys: Vec::new(),
            active_flows,
            cpu_us: crate::sys::sample(None).map_or(0, |s| s.cpu_us),
            notes: std::mem::take(&mut self.st.notes),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn hello_frames_match_the_ceiling_layout() {
        let f = hello::encode(7, 8);
        assert_eq!(f.len(), 24);
        assert_eq!(&f[..4], &20u32.to_le_bytes());
        assert_eq!(&f[4..8], b"TCH1");
        let mut paired = f[4..].to_vec();
        paired[..4].copy_from_slice(b"TCP1");
        assert_eq!(hello::paired(&paired), Some((7, 8)));
        assert_eq!(hello::paired(&f[4..]), None);
        assert_eq!(hello::refused(b"TCE1why").as_deref(), Some("why"));
        assert_eq!(hello::refused(b"TCP1"), None);
    }
}
