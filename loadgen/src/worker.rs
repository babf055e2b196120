//! One worker: thousands of client sessions on one thread.
//!
//! Each user owns a `tern_client::ClientSession` (sans-IO: it keeps pending
//! sends across reconnects, acknowledges deliveries, drops repeats) and at
//! most one [`Conn`] (socket + rustls). A mio `Poll` drives every socket;
//! a timer heap drives connection starts (ramp-up), open-loop send slots,
//! offline periods and PIN look-ups. Output is batched: whatever sessions
//! queue while handling one poll's events is flushed once per connection
//! at the end of the loop iteration.
//!
//! Phases: provision (register users missing from the key cache) → wait
//! for `Connect` → connect and log in at the ramp rate → wait for `Run` →
//! run (the measured phase) → drain (no new sends; wait for outstanding
//! acks, deliveries and receipts) → check and report.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll};
use rustls::pki_types::ServerName;
use tern_client::{
    CertFingerprint, ClientSession, ErrorCode, Event, MessageBody, ReceiptKind, SessionConfig,
    Trust,
};
use tern_wire::DeviceKey;

use crate::body::{self, BodyHeader};
use crate::check::{check_flow, CheckSummary, RecipientLog, SenderLog};
use crate::conn::{untoken, Conn, ConnError, Stage};
use crate::error::LoadgenError;
use crate::hist::Hist;
use crate::keys::KeyEntry;
use crate::outbox::OutboxIndex;
use crate::pairing::{self, WorkerPlan};
use crate::proto::{Command, Counters, WorkerConfig, WorkerMsg, WorkerResult};
use crate::scenario::{Mode, Scenario, TrustChoice, WindowUntil};

/// Connections in TCP/TLS/login set-up at once, per worker.
pub const CONNECTING_MAX: usize = 1_000;
/// Consecutive failed connection attempts before a user is given up on.
pub const CONNECT_ATTEMPTS_MAX: u32 = 5;
/// Registration attempts per user.
pub const REGISTER_ATTEMPTS_MAX: u32 = 3;
/// PIN look-ups in the outbox (every [`PIN_RETRY_MS`]) before giving up.
pub const PIN_LOOKUPS_MAX: u32 = 250;
/// Pause between two PIN look-ups.
pub const PIN_RETRY_MS: u64 = 20;
/// Longest wait in `poll`, so phase checks run often enough.
pub const POLL_TIMEOUT_MS: u64 = 10;
/// Sweep period: set-up deadlines, phase and drain checks.
pub const SWEEP_MS: u64 = 50;
/// Notes kept for the report.
pub const NOTES_MAX: usize = 10;
/// SDK dedup window: well above the server's delivery window (256), which
/// bounds what can be delivered again after a reconnect.
pub const DEDUP_WINDOW_LEN: usize = 1_024;
/// How often a worker sends its counters to the parent (several times per
/// parent tick, so the parent's per-second rates do not alias).
pub const PROGRESS_EVERY_MS: u64 = 200;
/// Plaintext read buffer, shared by all connections of the worker.
pub const SCRATCH_LEN: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    StartRegister(usize),
    StartConnect(usize),
    Slot(usize),
    GoOffline(usize),
    ComeBack(usize),
    PinRetry(usize),
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
enum UserState {
    /// No key yet; registration queued.
    NeedsKey,
    /// Registration connection in progress.
    Registering,
    /// Has a key, not connected.
    Ready,
    /// Login connection in set-up.
    Connecting,
    /// Logged in.
    Up,
    /// Planned absence.
    Offline,
    /// Reconnect scheduled after a failure.
    Waiting,
    /// Given up on.
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    Register,
    Login,
}

#[derive(Debug)]
struct Sent {
    at: Instant,
    acked: bool,
    receipted: bool,
}

/// The sending side of a user's flow to its recipient.
#[derive(Debug)]
struct SenderFlow {
    to: usize,
    to_user_id: u64,
    active: bool,
    seq: u64,
    outstanding: HashMap<u64, Sent>,
    unacked: u32,
    awaiting_read: HashMap<u64, Instant>,
    log: SenderLog,
    next_slot: Option<Instant>,
}

#[derive(Debug)]
struct User {
    phone: String,
    user_id: u64,
    key: Option<DeviceKey>,
    session: ClientSession,
    creds_in_session: bool,
    conn: Option<Conn>,
    conn_generation: u32,
    purpose: Purpose,
    state: UserState,
    in_setup: bool,
    deadline: Option<Instant>,
    attempts: u32,
    reregistered: bool,
    pin_lookups: u32,
    /// The server's hint (`LoginError.retry_after_ms`) for the next attempt.
    retry_after_ms: u64,
    was_up: bool,
    source: Option<std::net::Ipv4Addr>,
    flow: Option<Box<SenderFlow>>,
    inbound: Option<(u64, RecipientLog)>,
}

#[derive(Debug, Default)]
struct Stats {
    c: Counters,
    errors: BTreeMap<String, u64>,
    connect: Hist,
    login: Hist,
    ack: Hist,
    deliver: Hist,
    receipt: Hist,
    read: Hist,
    notes: Vec<String>,
}

impl Stats {
    fn error(&mut self, key: &str) {
        self.c.errors += 1;
        match self.errors.get_mut(key) {
            Some(n) => *n += 1,
            None => {
                self.errors.insert(key.to_owned(), 1);
            }
        }
    }

    fn note(&mut self, text: String) {
        if self.notes.len() < NOTES_MAX && !self.notes.contains(&text) {
            self.notes.push(text);
        }
    }
}

/// Error codes after which the SDK keeps an operation pending and sends it
/// again (the same list as the SDK's).
pub fn is_transient(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::QueueFull
            | ErrorCode::ShardUnavailable
            | ErrorCode::Overloaded
            | ErrorCode::ShuttingDown
            | ErrorCode::Internal
            | ErrorCode::SlowConsumer
            | ErrorCode::IdleTimeout
    )
}

/// The rustls client configuration for a scenario: TLS 1.3 from the SDK,
/// with session resumption off so every connection pays a full handshake
/// as a fleet of distinct phones would. `None` for plaintext.
pub fn tls_config(s: &Scenario) -> Result<Option<Arc<rustls::ClientConfig>>, LoadgenError> {
    let trust = match &s.trust {
        TrustChoice::CaCert(path) => Trust::CaFile(path.clone()),
        TrustChoice::PinSha256(hex) => Trust::PinnedSha256(CertFingerprint::parse(hex)?),
        TrustChoice::InsecurePlaintext => Trust::InsecurePlaintext,
    };
    Ok(tern_client::client_config(&trust)?.map(|c| {
        let mut c = (*c).clone();
        c.resumption = rustls::client::Resumption::disabled();
        Arc::new(c)
    }))
}

/// The TLS server name for a scenario.
pub fn server_name(s: &Scenario) -> Result<ServerName<'static>, LoadgenError> {
    let name = match &s.server_name {
        Some(n) => n.clone(),
        None => crate::addr::split_host_port(&s.server)
            .map(|(h, _)| h)
            .ok_or_else(|| LoadgenError::Scenario(format!("bad server `{}`", s.server)))?,
    };
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(name.clone())
        .map_err(|_| LoadgenError::Scenario(format!("bad TLS server name `{name}`")))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Runs one worker to the end. `emit` gets every message for the parent;
/// `commands` brings the parent's commands.
pub fn run_worker(
    cfg: WorkerConfig,
    commands: &Receiver<Command>,
    emit: &mut dyn FnMut(&WorkerMsg),
) -> Result<(), LoadgenError> {
    let mut w = Worker::new(cfg)?;
    w.main_loop(commands, emit)
}

struct Worker {
    s: Scenario,
    plan: WorkerPlan,
    run_nonce: u32,
    poll: Poll,
    tls: Option<Arc<rustls::ClientConfig>>,
    server_name: ServerName<'static>,
    server: SocketAddr,
    epoch: Instant,
    users: Vec<User>,
    timers: BinaryHeap<Reverse<(Instant, u64, Timer)>>,
    timer_seq: u64,
    outbox: Option<OutboxIndex>,
    st: Stats,
    scratch: Vec<u8>,
    tx: Vec<u8>,
    body: String,
    evbuf: Vec<Event>,
    dirty: Vec<usize>,
    is_dirty: Vec<bool>,
    phase: Phase,
    interval_us: u64,
    connecting: usize,
    provision_cap: usize,
    ramp_interval: Duration,
    new_keys: Vec<KeyEntry>,
    registered: u64,
    cached: u64,
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

impl Worker {
    fn new(cfg: WorkerConfig) -> Result<Self, LoadgenError> {
        let s = cfg.scenario;
        let plan = cfg.plan;
        let server = crate::addr::resolve(&s.server)
            .ok_or_else(|| LoadgenError::Scenario(format!("cannot resolve `{}`", s.server)))?;
        let tls = tls_config(&s)?;
        let server_name = server_name(&s)?;
        let keys: HashMap<u64, &KeyEntry> = cfg.keys.iter().map(|k| (k.user_id, k)).collect();
        let procs = usize::try_from(s.procs().max(1)).unwrap_or(1);
        let per_ip = usize::try_from(s.conns_per_source_ip.max(1)).unwrap_or(1);
        let session_cfg = SessionConfig {
            pending_len_max: usize::try_from(s.outstanding)
                .unwrap_or(1)
                .saturating_mul(2)
                .saturating_add(1_024),
            dedup_window_len: DEDUP_WINDOW_LEN,
            client_name: concat!("tern-loadgen/", env!("CARGO_PKG_VERSION")).to_owned(),
            ..SessionConfig::default()
        };
        let mut users = Vec::with_capacity(plan.users.len());
        let mut cached = 0;
        for (local, global) in plan.users.clone().enumerate() {
            let user_id = pairing::user_id(s.phone_base, global);
            let key = keys.get(&user_id).and_then(|k| k.device_key());
            cached += u64::from(key.is_some());
            let local_of = |g: u32| usize::try_from(g - plan.users.start).unwrap_or(usize::MAX);
            let flow = pairing::recipient_of(s.pairing, global).map(|to| {
                Box::new(SenderFlow {
                    to: local_of(to),
                    to_user_id: pairing::user_id(s.phone_base, to),
                    active: false,
                    seq: 0,
                    outstanding: HashMap::new(),
                    unacked: 0,
                    awaiting_read: HashMap::new(),
                    log: SenderLog::default(),
                    next_slot: None,
                })
            });
            let inbound = pairing::sender_to(s.pairing, global).map(|from| {
                (
                    pairing::user_id(s.phone_base, from),
                    RecipientLog::default(),
                )
            });
            users.push(User {
                phone: pairing::phone(s.phone_base, global),
                user_id,
                key,
                session: ClientSession::new(session_cfg.clone(), cfg.first_client_msg_id),
                creds_in_session: false,
                conn: None,
                conn_generation: 0,
                purpose: Purpose::Login,
                state: if key.is_some() {
                    UserState::Ready
                } else {
                    UserState::NeedsKey
                },
                in_setup: false,
                deadline: None,
                attempts: 0,
                reregistered: false,
                pin_lookups: 0,
                retry_after_ms: 0,
                was_up: false,
                source: plan.source_ips.get(local / per_ip).copied(),
                flow,
                inbound,
            });
        }
        let outbox = s.sms_outbox.as_deref().map(OutboxIndex::new);
        let ramp_per_worker = (f64::from(s.ramp_per_s) / procs as f64).max(0.001);
        Ok(Self {
            interval_us: s.send_interval_us(),
            provision_cap: usize::try_from(s.provision_concurrency)
                .unwrap_or(1)
                .div_ceil(procs)
                .max(1),
            ramp_interval: Duration::from_secs_f64(1.0 / ramp_per_worker),
            rng: pairing::SplitMix64::new(s.seed ^ (plan.index as u64).wrapping_mul(7919)),
            s,
            plan,
            run_nonce: cfg.run_nonce,
            poll: Poll::new()?,
            tls,
            server_name,
            server,
            epoch: Instant::now(),
            is_dirty: vec![false; users.len()],
            users,
            timers: BinaryHeap::new(),
            timer_seq: 0,
            outbox,
            st: Stats::default(),
            scratch: vec![0; SCRATCH_LEN],
            tx: Vec::new(),
            body: String::new(),
            evbuf: Vec::new(),
            dirty: Vec::new(),
            phase: Phase::Provision,
            connecting: 0,
            new_keys: Vec::new(),
            registered: 0,
            cached,
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
        let mut next_second = start + Duration::from_secs(1);
        let progress_every = Duration::from_millis(PROGRESS_EVERY_MS);
        let mut next_progress = start + progress_every;
        self.start_provisioning(start);
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
                    // The parent is gone: stop.
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
            if now >= next_second {
                next_second += Duration::from_secs(1);
                if next_second < now {
                    next_second = now + Duration::from_secs(1);
                }
                self.each_second(now);
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

    fn start_provisioning(&mut self, now: Instant) {
        let need: Vec<usize> = (0..self.users.len())
            .filter(|&u| {
                self.users
                    .get(u)
                    .is_some_and(|x| x.state == UserState::NeedsKey)
            })
            .collect();
        if !need.is_empty() && self.outbox.is_none() {
            self.st.note(format!(
                "{} users have no cached key and no --sms-outbox was given: they cannot register",
                need.len()
            ));
            for &u in &need {
                self.give_up(u, "local:no_sms_outbox");
            }
            return;
        }
        for u in need {
            self.at(now, Timer::StartRegister(u));
        }
    }

    fn on_command(&mut self, cmd: Command, now: Instant) {
        match (cmd, self.phase) {
            (Command::Connect, Phase::WaitConnect) => {
                self.phase = Phase::Connect;
                let mut t = now;
                for u in 0..self.users.len() {
                    if self
                        .users
                        .get(u)
                        .is_some_and(|x| x.state == UserState::Ready)
                    {
                        self.at(t, Timer::StartConnect(u));
                        t += self.ramp_interval;
                    }
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
        if self.s.mode == Mode::Idle {
            return;
        }
        let up: Vec<bool> = self
            .users
            .iter()
            .map(|x| x.state == UserState::Up)
            .collect();
        for u in 0..self.users.len() {
            let phase_offset = if self.interval_us > 0 {
                Duration::from_micros(self.rng.below(self.interval_us))
            } else {
                Duration::ZERO
            };
            let Some(user) = self.users.get_mut(u) else {
                continue;
            };
            let Some(flow) = user.flow.as_deref_mut() else {
                continue;
            };
            flow.active =
                up.get(u).copied().unwrap_or(false) && up.get(flow.to).copied().unwrap_or(false);
            if !flow.active {
                continue;
            }
            match self.s.mode {
                Mode::Closed => self.refill(u, now),
                Mode::Open => {
                    let first = now + phase_offset;
                    flow.next_slot = Some(first);
                    self.at(first, Timer::Slot(u));
                }
                // Handshake runs are the raw worker's (crate::raw).
                Mode::Idle | Mode::Handshake => {}
            }
        }
        let first = self.plan.users.start;
        for a in pairing::absences(&self.s, self.plan.users.clone()) {
            let local = usize::try_from(a.user - first).unwrap_or(usize::MAX);
            self.at(
                now + Duration::from_secs_f64(a.at_s),
                Timer::GoOffline(local),
            );
        }
    }

    fn start_drain(&mut self, now: Instant) {
        self.phase = Phase::Drain;
        self.run_s = self.elapsed_run(now);
        self.run_counters = self.st.c.since(&self.run_start_counters);
        self.drain_started = Some(now);
        self.drain_deadline = Some(now + Duration::from_secs_f64(self.s.drain_timeout_s));
        for u in 0..self.users.len() {
            if self
                .users
                .get(u)
                .is_some_and(|x| x.state == UserState::Offline)
            {
                self.start_conn(u, Purpose::Login, now);
            }
        }
    }

    /// Everything sent was acknowledged, delivered and receipted, and every
    /// session is idle.
    fn is_drained(&self) -> bool {
        self.users.iter().all(|x| {
            if x.state == UserState::Failed || !x.was_up {
                return true;
            }
            let flow_done = x.flow.as_deref().is_none_or(|f| {
                !f.active || (f.outstanding.is_empty() && f.awaiting_read.is_empty())
            });
            flow_done && x.state == UserState::Up && x.session.pending_len() == 0
        })
    }

    fn sweep(&mut self, now: Instant, emit: &mut dyn FnMut(&WorkerMsg)) {
        // Set-up deadlines.
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
                let pending = self
                    .users
                    .iter()
                    .any(|x| matches!(x.state, UserState::NeedsKey | UserState::Registering));
                if !pending {
                    let failed = self
                        .users
                        .iter()
                        .filter(|x| x.state == UserState::Failed)
                        .count() as u64;
                    emit(&WorkerMsg::Provisioned {
                        registered: self.registered,
                        cached: self.cached,
                        failed,
                    });
                    self.phase = Phase::WaitConnect;
                }
            }
            Phase::Connect => {
                let settled = self
                    .users
                    .iter()
                    .all(|x| matches!(x.state, UserState::Up | UserState::Failed));
                if settled {
                    let up = self
                        .users
                        .iter()
                        .filter(|x| x.state == UserState::Up)
                        .count();
                    emit(&WorkerMsg::Connected {
                        up: up as u64,
                        failed: (self.users.len() - up) as u64,
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
                        "drain timed out after {} s with work outstanding",
                        self.s.drain_timeout_s
                    ));
                    self.phase = Phase::Done;
                }
            }
            Phase::WaitConnect | Phase::WaitRun | Phase::Done => {}
        }
    }

    fn each_second(&mut self, now: Instant) {
        for u in 0..self.users.len() {
            let Some(user) = self.users.get_mut(u) else {
                continue;
            };
            if user.conn.as_ref().is_none_or(|c| c.stage != Stage::Open) {
                continue;
            }
            let due = user.session.poll_timeout().is_some_and(|t| t <= now);
            if due {
                if user.session.handle_timeout(now).is_err() {
                    self.st.error("local:session_timeout");
                }
                if user.session.has_transmit() {
                    self.mark_dirty(u);
                }
            }
        }
    }

    // ---- Timers ----------------------------------------------------------

    fn run_timers(&mut self, now: Instant) {
        while let Some(Reverse((t, _, timer))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            match timer {
                Timer::StartRegister(u) => {
                    if self.connecting >= self.provision_cap {
                        self.at(now + Duration::from_millis(5), timer);
                    } else {
                        self.start_conn(u, Purpose::Register, now);
                    }
                }
                Timer::StartConnect(u) => {
                    let ok = self
                        .users
                        .get(u)
                        .is_some_and(|x| matches!(x.state, UserState::Ready | UserState::Waiting));
                    if !ok {
                        continue;
                    }
                    if self.connecting >= CONNECTING_MAX {
                        self.at(now + Duration::from_millis(5), timer);
                    } else {
                        self.start_conn(u, Purpose::Login, now);
                    }
                }
                Timer::Slot(u) => self.on_slot(u, t, now),
                Timer::GoOffline(u) => {
                    let up = self.users.get(u).is_some_and(|x| x.state == UserState::Up);
                    if self.phase == Phase::Run && up {
                        self.drop_conn(u, None, now);
                        if let Some(x) = self.users.get_mut(u) {
                            x.state = UserState::Offline;
                        }
                        self.at(
                            now + Duration::from_secs_f64(self.s.offline_s),
                            Timer::ComeBack(u),
                        );
                    }
                }
                Timer::ComeBack(u) => {
                    if self
                        .users
                        .get(u)
                        .is_some_and(|x| x.state == UserState::Offline)
                    {
                        self.start_conn(u, Purpose::Login, now);
                    }
                }
                Timer::PinRetry(u) => self.lookup_pin(u, now),
            }
        }
    }

    fn on_slot(&mut self, u: usize, slot: Instant, now: Instant) {
        if self.phase != Phase::Run {
            return;
        }
        let interval = Duration::from_micros(self.interval_us.max(1));
        let outstanding = self.s.outstanding;
        let Some(user) = self.users.get_mut(u) else {
            return;
        };
        let up = user.state == UserState::Up;
        let Some(flow) = user.flow.as_deref_mut() else {
            return;
        };
        if !flow.active {
            return;
        }
        let can_send = up && flow.unacked < outstanding;
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
        flow.next_slot = Some(next);
        self.st.c.omitted += omitted;
        self.at(next, Timer::Slot(u));
        if can_send {
            self.send_one(u, now);
        }
    }

    // ---- Connections -------------------------------------------------

    fn start_conn(&mut self, u: usize, purpose: Purpose, now: Instant) {
        let deadline = now + Duration::from_secs_f64(self.s.connect_timeout_s);
        let tls = self.tls.as_ref().map(|c| (c, &self.server_name));
        let Some(user) = self.users.get_mut(u) else {
            return;
        };
        if user.conn.is_some() {
            return;
        }
        user.conn_generation = user.conn_generation.wrapping_add(1);
        match Conn::connect(
            self.server,
            user.source,
            tls,
            self.poll.registry(),
            u,
            user.conn_generation,
            now,
        ) {
            Ok(conn) => {
                user.conn = Some(conn);
                user.purpose = purpose;
                user.state = match purpose {
                    Purpose::Register => UserState::Registering,
                    Purpose::Login => UserState::Connecting,
                };
                user.in_setup = true;
                user.deadline = Some(deadline);
                self.connecting += 1;
            }
            Err(e) => {
                let key = format!("local:connect:{:?}", e.kind());
                if e.raw_os_error() == Some(libc::EMFILE) {
                    self.st
                        .note("out of file descriptors: use more --procs".to_owned());
                }
                if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) {
                    self.st
                        .note("source ports exhausted: lower --conns-per-source-ip".to_owned());
                }
                user.purpose = purpose;
                user.state = match purpose {
                    Purpose::Register => UserState::Registering,
                    Purpose::Login => UserState::Connecting,
                };
                self.after_failure(u, &key, now);
            }
        }
    }

    /// Ends the user's connection. `error` is `None` for a planned close.
    fn drop_conn(&mut self, u: usize, error: Option<&str>, now: Instant) {
        let Some(user) = self.users.get_mut(u) else {
            return;
        };
        let Some(conn) = user.conn.take() else {
            return;
        };
        conn.close(self.poll.registry());
        if let Some(flow) = user.flow.as_deref_mut() {
            // Whatever is pending goes out again after the next login, after
            // messages that may already be queued behind it.
            flow.log.retried.extend(user.session.pending_ids());
        }
        user.session.on_disconnected();
        if user.in_setup {
            user.in_setup = false;
            self.connecting = self.connecting.saturating_sub(1);
        }
        if user.state == UserState::Up {
            self.st.c.conns_up = self.st.c.conns_up.saturating_sub(1);
        }
        if let Some(key) = error {
            self.after_failure(u, key, now);
        }
    }

    /// Counts a failure and schedules another attempt, or gives up.
    fn after_failure(&mut self, u: usize, key: &str, now: Instant) {
        self.st.error(key);
        let phase = self.phase;
        let Some(user) = self.users.get_mut(u) else {
            return;
        };
        user.attempts += 1;
        let attempts = user.attempts;
        match user.purpose {
            Purpose::Register if phase == Phase::Provision => {
                if attempts < REGISTER_ATTEMPTS_MAX {
                    user.state = UserState::NeedsKey;
                    self.at(now + Duration::from_millis(500), Timer::StartRegister(u));
                } else {
                    self.give_up(u, "local:register_gave_up");
                }
            }
            _ => {
                if user.key.is_none() && !user.creds_in_session && user.reregistered {
                    self.give_up(u, "local:login_gave_up");
                } else if attempts < CONNECT_ATTEMPTS_MAX {
                    user.state = UserState::Waiting;
                    let backoff = Duration::from_millis(
                        (200 * u64::from(attempts)).max(std::mem::take(&mut user.retry_after_ms)),
                    );
                    self.at(now + backoff, Timer::StartConnect(u));
                } else {
                    self.give_up(u, "local:connect_gave_up");
                }
            }
        }
    }

    fn give_up(&mut self, u: usize, key: &str) {
        if let Some(user) = self.users.get_mut(u) {
            if user.state != UserState::Failed {
                user.state = UserState::Failed;
                self.st.c.conns_failed += 1;
                self.st.error(key);
            }
        }
    }

    fn on_socket(&mut self, u: usize, generation: u32, now: Instant) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = self.on_socket_inner(u, generation, now, &mut scratch);
        self.scratch = scratch;
        if let Err(e) = result {
            self.drop_conn(u, Some(&e.key()), now);
        }
    }

    fn on_socket_inner(
        &mut self,
        u: usize,
        generation: u32,
        now: Instant,
        scratch: &mut [u8],
    ) -> Result<(), ConnError> {
        let Some(user) = self.users.get_mut(u) else {
            return Ok(());
        };
        let Some(conn) = user.conn.as_mut() else {
            return Ok(());
        };
        if conn.generation != generation {
            return Ok(());
        }
        let session = &mut user.session;
        let mut broken = false;
        let mut feed = |bytes: &[u8]| {
            if session.handle_bytes(bytes, now).is_err() {
                broken = true;
                return false;
            }
            true
        };
        if conn.stage != Stage::Open {
            let opened = conn.progress(now, scratch, &mut feed)?;
            if opened {
                let started = conn.started;
                self.st
                    .connect
                    .record(micros(now.saturating_duration_since(started)));
                self.on_open(u, now);
                // Anything already readable after the handshake.
                if let Some(user) = self.users.get_mut(u) {
                    if let Some(conn) = user.conn.as_mut() {
                        let session = &mut user.session;
                        let mut feed = |bytes: &[u8]| {
                            if session.handle_bytes(bytes, now).is_err() {
                                broken = true;
                                return false;
                            }
                            true
                        };
                        conn.read(scratch, &mut feed)?;
                    }
                }
            }
        } else {
            conn.flush()?;
            conn.read(scratch, &mut feed)?;
        }
        self.handle_events(u, now);
        if broken {
            self.drop_conn(u, Some("local:protocol"), now);
        }
        Ok(())
    }

    /// TCP (and TLS) are up: start the protocol.
    fn on_open(&mut self, u: usize, now: Instant) {
        let Some(user) = self.users.get_mut(u) else {
            return;
        };
        let result = user.session.on_connected(now).and_then(|()| {
            match (user.purpose, user.creds_in_session, user.key) {
                (Purpose::Register, _, _) => user.session.request_pin(&user.phone),
                (Purpose::Login, true, _) => Ok(()),
                (Purpose::Login, false, Some(key)) => {
                    user.creds_in_session = true;
                    user.session.login(user.user_id, key)
                }
                (Purpose::Login, false, None) => user.session.request_pin(&user.phone),
            }
        });
        if result.is_err() {
            self.drop_conn(u, Some("local:session"), now);
            return;
        }
        self.mark_dirty(u);
    }

    fn flush_dirty(&mut self, now: Instant) {
        let dirty = std::mem::take(&mut self.dirty);
        let mut tx = std::mem::take(&mut self.tx);
        for &u in &dirty {
            if let Some(d) = self.is_dirty.get_mut(u) {
                *d = false;
            }
            let Some(user) = self.users.get_mut(u) else {
                continue;
            };
            let Some(conn) = user.conn.as_mut() else {
                continue;
            };
            if conn.stage != Stage::Open {
                continue;
            }
            tx.clear();
            user.session.poll_transmit(&mut tx);
            if let Err(e) = conn.write(&tx) {
                self.drop_conn(u, Some(&e.key()), now);
            }
        }
        self.tx = tx;
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    // ---- Protocol events ---------------------------------------------

    fn handle_events(&mut self, u: usize, now: Instant) {
        let mut evs = std::mem::take(&mut self.evbuf);
        if let Some(user) = self.users.get_mut(u) {
            while let Some(ev) = user.session.poll_event() {
                evs.push(ev);
            }
            if user.session.has_transmit() {
                self.mark_dirty(u);
            }
        }
        for ev in evs.drain(..) {
            self.on_event(u, ev, now);
        }
        self.evbuf = evs;
    }

    fn on_event(&mut self, u: usize, ev: Event, now: Instant) {
        match ev {
            Event::LoggedIn { .. } => self.on_logged_in(u, now),
            Event::LoginFailed {
                code,
                retry_after_ms,
                ..
            } => self.on_login_failed(u, code, retry_after_ms, now),
            Event::PinSent { .. } => {
                if let Some(user) = self.users.get_mut(u) {
                    user.pin_lookups = 0;
                }
                self.lookup_pin(u, now);
            }
            Event::Registered {
                user_id,
                key,
                generation,
            } => self.on_registered(u, user_id, key, generation, now),
            Event::Acked { client_msg_id, .. } => self.on_acked(u, client_msg_id, now),
            Event::Message {
                id,
                from,
                client_msg_id,
                body,
                ..
            } => self.on_message(u, id, from, client_msg_id, &body, now),
            Event::Receipt {
                kind,
                client_msg_id,
                ..
            } => self.on_receipt(u, kind, client_msg_id, now),
            Event::ServerError {
                code,
                client_msg_id,
                message,
                ..
            } => self.on_server_error(u, code, client_msg_id, &message, now),
            Event::Dropped { .. } => self.st.error("local:dropped_too_large"),
            Event::Kicked { reason, .. } => {
                self.st.error(&format!("local:kicked:{reason:?}"));
                if reason == tern_client::KickReason::DeviceReplaced {
                    self.st.note(
                        "a user was kicked as DeviceReplaced: another run registered the same \
                         numbers (use a different --phone-base)"
                            .to_owned(),
                    );
                    if let Some(user) = self.users.get_mut(u) {
                        user.creds_in_session = false;
                        user.key = None;
                    }
                }
            }
            _ => {}
        }
    }

    fn on_logged_in(&mut self, u: usize, now: Instant) {
        let phase = self.phase;
        let Some(user) = self.users.get_mut(u) else {
            return;
        };
        if let Some(opened) = user.conn.as_ref().and_then(|c| c.opened) {
            self.st
                .login
                .record(micros(now.saturating_duration_since(opened)));
        }
        if user.in_setup {
            user.in_setup = false;
            self.connecting = self.connecting.saturating_sub(1);
        }
        user.state = UserState::Up;
        user.attempts = 0;
        user.deadline = None;
        self.st.c.conns_up += 1;
        if user.was_up {
            self.st.c.reconnects += 1;
        }
        user.was_up = true;
        if user.session.has_transmit() {
            self.mark_dirty(u);
        }
        if phase == Phase::Run && self.s.mode == Mode::Closed {
            self.refill(u, now);
        }
    }

    fn on_login_failed(&mut self, u: usize, code: ErrorCode, retry_after_ms: u32, now: Instant) {
        self.st.error(&format!("login:{code}"));
        let can_reregister = self.outbox.is_some();
        let Some(user) = self.users.get_mut(u) else {
            return;
        };
        if code == ErrorCode::LoginFailed {
            // The SDK forgot the credentials (the key is dead).
            user.creds_in_session = false;
        }
        user.retry_after_ms = u64::from(retry_after_ms);
        if code == ErrorCode::LoginFailed && can_reregister && !user.reregistered {
            // The cached key is dead (server data reset, or registered again
            // elsewhere): register again on this connection, then log in.
            user.reregistered = true;
            user.key = None;
            if user.session.request_pin(&user.phone).is_ok() {
                self.mark_dirty(u);
                return;
            }
        }
        if code == ErrorCode::LoginFailed {
            // A dead key with no way to register again: retrying is futile.
            self.st.note(
                "the server refused cached keys (LoginFailed): give --sms-outbox to register \
                 again, or delete the --keys-cache file"
                    .to_owned(),
            );
            self.drop_conn(u, None, now);
            self.give_up(u, "local:login_refused");
            return;
        }
        self.drop_conn(u, Some("local:login_refused"), now);
    }

    fn lookup_pin(&mut self, u: usize, now: Instant) {
        let Some(outbox) = self.outbox.as_mut() else {
            return;
        };
        let Some(user) = self.users.get_mut(u) else {
            return;
        };
        if user.conn.is_none() {
            return;
        }
        match outbox.pin_for(&user.phone) {
            Ok(Some(pin)) => {
                if user.session.verify_pin(&user.phone, &pin).is_err() {
                    self.drop_conn(u, Some("local:session"), now);
                    return;
                }
                self.mark_dirty(u);
            }
            Ok(None) => {
                user.pin_lookups += 1;
                if user.pin_lookups < PIN_LOOKUPS_MAX {
                    self.at(
                        now + Duration::from_millis(PIN_RETRY_MS),
                        Timer::PinRetry(u),
                    );
                } else {
                    self.st.note(format!(
                        "no PIN for {} in the SMS outbox: is --sms-outbox the server's \
                         <data-dir>/sms-outbox.jsonl?",
                        user.phone
                    ));
                    self.drop_conn(u, Some("local:pin_not_in_outbox"), now);
                }
            }
            Err(e) => {
                self.st.note(format!("cannot read the SMS outbox: {e}"));
                self.drop_conn(u, Some("local:outbox_unreadable"), now);
            }
        }
    }

    fn on_registered(
        &mut self,
        u: usize,
        user_id: u64,
        key: DeviceKey,
        generation: u32,
        now: Instant,
    ) {
        let Some(user) = self.users.get_mut(u) else {
            return;
        };
        user.key = Some(key);
        self.new_keys.push(KeyEntry {
            phone: user.phone.clone(),
            user_id,
            key: key.to_hex(),
            generation,
        });
        self.registered += 1;
        match user.purpose {
            Purpose::Register => {
                // Provisioning only: this connection's job is done.
                user.attempts = 0;
                self.drop_conn(u, None, now);
                if let Some(user) = self.users.get_mut(u) {
                    user.state = UserState::Ready;
                }
            }
            Purpose::Login => {
                user.creds_in_session = true;
                if user.session.login(user.user_id, key).is_err() {
                    self.drop_conn(u, Some("local:session"), now);
                    return;
                }
                self.mark_dirty(u);
            }
        }
    }

    fn on_server_error(
        &mut self,
        u: usize,
        code: ErrorCode,
        client_msg_id: u64,
        message: &str,
        now: Instant,
    ) {
        self.st.error(&code.to_string());
        if matches!(
            code,
            ErrorCode::PinRateLimited | ErrorCode::QueueFull | ErrorCode::Overloaded
        ) {
            let hint = match code {
                ErrorCode::PinRateLimited => {
                    "; start the server with --limit pin_requests_per_source=1000000/1000 \
                     --limit pin_requests_per_phone=1000/1000"
                }
                ErrorCode::QueueFull => "; raise the server's --limit inbox_len_max",
                _ => "",
            };
            self.st.note(format!("server: {code}: {message}{hint}"));
        }
        let state = self.users.get(u).map(|x| x.state);
        let in_registration = client_msg_id == 0
            && matches!(
                code,
                ErrorCode::PinRateLimited
                    | ErrorCode::PinInvalid
                    | ErrorCode::PinExpired
                    | ErrorCode::PinAttemptsExceeded
                    | ErrorCode::InvalidPhone
                    | ErrorCode::SmsFailed
            );
        if in_registration && matches!(state, Some(UserState::Registering | UserState::Connecting))
        {
            self.drop_conn(u, Some("local:registration_refused"), now);
            return;
        }
        if client_msg_id == 0 {
            return;
        }
        let Some(user) = self.users.get_mut(u) else {
            return;
        };
        let Some(flow) = user.flow.as_deref_mut() else {
            return;
        };
        if is_transient(code) {
            flow.log.retried.insert(client_msg_id);
            return;
        }
        // Permanent: the SDK dropped it; it will never be acked.
        if let Some(sent) = flow.outstanding.remove(&client_msg_id) {
            if !sent.acked {
                flow.unacked = flow.unacked.saturating_sub(1);
            }
            flow.awaiting_read.remove(&client_msg_id);
            self.st.error("local:message_rejected");
            if self.s.mode == Mode::Closed {
                self.refill(u, now);
            }
        }
    }

    fn record_latency(hist: &mut Hist, us: u64, interval_us: u64) {
        if interval_us > 0 {
            hist.record_correct(us, interval_us);
        } else {
            hist.record(us);
        }
    }

    fn on_acked(&mut self, u: usize, client_msg_id: u64, now: Instant) {
        let interval_us = self.interval_us;
        let Some(flow) = self.users.get_mut(u).and_then(|x| x.flow.as_deref_mut()) else {
            return;
        };
        let Some(sent) = flow.outstanding.get_mut(&client_msg_id) else {
            // A MarkRead's ack, or an earlier run's.
            return;
        };
        if sent.acked {
            return;
        }
        sent.acked = true;
        let at = sent.at;
        if sent.receipted {
            flow.outstanding.remove(&client_msg_id);
        }
        flow.unacked = flow.unacked.saturating_sub(1);
        flow.log.acked.push(client_msg_id);
        self.st.c.acked += 1;
        Self::record_latency(
            &mut self.st.ack,
            micros(now.saturating_duration_since(at)),
            interval_us,
        );
        if self.s.mode == Mode::Closed && self.s.window_until == WindowUntil::Ack {
            self.refill(u, now);
        }
    }

    fn on_receipt(&mut self, u: usize, kind: ReceiptKind, client_msg_id: u64, now: Instant) {
        let interval_us = self.interval_us;
        let Some(flow) = self.users.get_mut(u).and_then(|x| x.flow.as_deref_mut()) else {
            self.st.c.stale += 1;
            return;
        };
        match kind {
            ReceiptKind::Delivered => {
                let Some(sent) = flow.outstanding.get_mut(&client_msg_id) else {
                    self.st.c.stale += 1;
                    return;
                };
                if sent.receipted {
                    return;
                }
                let at = sent.at;
                if sent.acked {
                    flow.outstanding.remove(&client_msg_id);
                } else {
                    // The receipt overtook the ack: keep the entry for it.
                    sent.receipted = true;
                }
                self.st.c.receipts += 1;
                Self::record_latency(
                    &mut self.st.receipt,
                    micros(now.saturating_duration_since(at)),
                    interval_us,
                );
                if self.s.mode == Mode::Closed && self.s.window_until == WindowUntil::Delivered {
                    self.refill(u, now);
                }
            }
            ReceiptKind::Read => {
                let Some(at) = flow.awaiting_read.remove(&client_msg_id) else {
                    self.st.c.stale += 1;
                    return;
                };
                self.st.c.reads += 1;
                Self::record_latency(
                    &mut self.st.read,
                    micros(now.saturating_duration_since(at)),
                    interval_us,
                );
            }
            _ => self.st.c.stale += 1,
        }
    }

    fn on_message(
        &mut self,
        u: usize,
        id: u64,
        from: u64,
        client_msg_id: u64,
        body: &MessageBody,
        now: Instant,
    ) {
        let header = match body {
            MessageBody::Text(t) => body::decode(t),
            _ => None,
        };
        let run_nonce = self.run_nonce;
        let interval_us = self.interval_us;
        let read_receipts = self.s.read_receipts;
        let now_us = micros(now.saturating_duration_since(self.epoch));
        let Some(user) = self.users.get_mut(u) else {
            return;
        };
        let Some((expected_from, log)) = user.inbound.as_mut() else {
            self.st.c.stale += 1;
            return;
        };
        match header {
            Some(BodyHeader { run, sent_us, .. }) if run == run_nonce && from == *expected_from => {
                log.on_deliver(id, client_msg_id);
                self.st.c.delivered += 1;
                Self::record_latency(
                    &mut self.st.deliver,
                    now_us.saturating_sub(sent_us),
                    interval_us,
                );
                if read_receipts {
                    if user.session.mark_read(from, client_msg_id, now).is_err() {
                        self.st.error("local:mark_read_refused");
                    }
                    self.mark_dirty(u);
                }
            }
            _ => self.st.c.stale += 1,
        }
    }

    // ---- Sending -------------------------------------------------------

    /// Closed loop: tops the sender's window up.
    fn refill(&mut self, u: usize, now: Instant) {
        if self.phase != Phase::Run {
            return;
        }
        let limit = self.s.outstanding;
        let until = self.s.window_until;
        loop {
            let Some(user) = self.users.get(u) else {
                return;
            };
            if user.state != UserState::Up {
                return;
            }
            let Some(flow) = user.flow.as_deref() else {
                return;
            };
            let in_window = match until {
                WindowUntil::Ack => flow.unacked,
                WindowUntil::Delivered => u32::try_from(flow.outstanding.len()).unwrap_or(u32::MAX),
            };
            if !flow.active || in_window >= limit {
                return;
            }
            if !self.send_one(u, now) {
                return;
            }
        }
    }

    /// Sends the next message of `u`'s flow; false if the SDK refused.
    fn send_one(&mut self, u: usize, now: Instant) -> bool {
        let sent_us = micros(now.saturating_duration_since(self.epoch));
        let body_len = usize::try_from(self.s.body_bytes).unwrap_or(0);
        let read_receipts = self.s.read_receipts;
        let run = self.run_nonce;
        let Some(user) = self.users.get_mut(u) else {
            return false;
        };
        let Some(flow) = user.flow.as_deref_mut() else {
            return false;
        };
        body::encode(
            BodyHeader {
                run,
                seq: flow.seq,
                sent_us,
            },
            body_len,
            &mut self.body,
        );
        match user.session.send_text(flow.to_user_id, &self.body, now) {
            Ok(cmid) => {
                flow.seq += 1;
                flow.outstanding.insert(
                    cmid,
                    Sent {
                        at: now,
                        acked: false,
                        receipted: false,
                    },
                );
                flow.unacked += 1;
                if read_receipts {
                    flow.awaiting_read.insert(cmid, now);
                }
                self.st.c.sent += 1;
                self.mark_dirty(u);
                true
            }
            Err(tern_client::ClientError::PendingFull { .. }) => {
                self.st.error("local:pending_full");
                false
            }
            Err(_) => {
                self.st.error("local:send_refused");
                false
            }
        }
    }

    // ---- The end -------------------------------------------------------

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
            let Some(recipient) = self.users.get(flow.to) else {
                continue;
            };
            let Some((_, log)) = recipient.inbound.as_ref() else {
                continue;
            };
            let name = format!("{} -> {}", user.phone, recipient.phone);
            let mut c = check_flow(&name, &flow.log, log);
            c.receipts_missing = flow
                .outstanding
                .values()
                .filter(|s| s.acked && !s.receipted)
                .count() as u64;
            if !flow.awaiting_read.is_empty() {
                let acked: HashSet<u64> = flow.log.acked.iter().copied().collect();
                c.reads_missing = flow
                    .awaiting_read
                    .keys()
                    .filter(|id| acked.contains(id))
                    .count() as u64;
            }
            if c.receipts_missing > 0 {
                c.example(format!(
                    "{name}: {} delivered receipt(s) missing",
                    c.receipts_missing
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
            ("login", &self.st.login),
            ("ack", &self.st.ack),
            ("deliver", &self.st.deliver),
            ("receipt", &self.st.receipt),
            ("read", &self.st.read),
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
            new_keys: std::mem::take(&mut self.new_keys),
            active_flows,
            cpu_us: crate::sys::sample(None).map_or(0, |s| s.cpu_us),
            notes: std::mem::take(&mut self.st.notes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_codes_match_the_sdk_list() {
        assert!(is_transient(ErrorCode::QueueFull));
        assert!(is_transient(ErrorCode::Overloaded));
        assert!(!is_transient(ErrorCode::UnknownRecipient));
        assert!(!is_transient(ErrorCode::BodyTooLarge));
    }

    #[test]
    fn server_name_defaults_to_the_host() {
        let s = Scenario {
            server: "127.0.0.1:7443".into(),
            ..Scenario::default()
        };
        assert!(matches!(server_name(&s).unwrap(), ServerName::IpAddress(_)));
        let s = Scenario {
            server: "localhost:7443".into(),
            ..Scenario::default()
        };
        assert!(matches!(server_name(&s).unwrap(), ServerName::DnsName(_)));
    }

    #[test]
    fn plaintext_has_no_tls_config() {
        assert!(tls_config(&Scenario::default()).unwrap().is_none());
        let s = Scenario {
            trust: TrustChoice::PinSha256("00".repeat(32)),
            ..Scenario::default()
        };
        let c = tls_config(&s).unwrap().unwrap();
        assert_eq!(c.alpn_protocols, vec![tern_wire::ALPN.to_vec()]);
    }
}
