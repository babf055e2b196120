//! The parent: splits the users over workers (threads for one worker,
//! re-executed `tern-loadgen --worker` processes for more), moves them
//! through the phases together, samples the server, prints progress each
//! second, and adds everything up into the [`Report`].
//!
//! Phases advance in lock-step: every worker reports `Provisioned`, then
//! the parent samples the server's RSS and says `Connect`; every worker
//! reports `Connected`, then the parent samples again (RSS per connection)
//! and says `Run`. Each worker then runs its `duration`, drains and sends
//! `Done` with its histograms and check.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command as Process, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::check::CheckSummary;
use crate::error::LoadgenError;
use crate::hist::Hist;
use crate::keys::{self, KeyEntry};
use crate::pairing::{self, Layout};
use crate::proto::{Command, Counters, WorkerConfig, WorkerMsg, WorkerResult};
use crate::report::{
    Connections, CrossShard, LoadgenStats, Provisioning, Report, Second, ServerStats, Throughput,
    SCHEMA,
};
use crate::scenario::Scenario;
use crate::sys::{self, ProcSample};

/// Runs one worker: the raw worker for the ceiling target and handshake
/// runs, the session worker otherwise.
fn run_worker(
    cfg: WorkerConfig,
    commands: &Receiver<Command>,
    emit: &mut dyn FnMut(&WorkerMsg),
) -> Result<(), LoadgenError> {
    if cfg.scenario.raw() {
        crate::raw::run_worker(cfg, commands, emit)
    } else {
        crate::worker::run_worker(cfg, commands, emit)
    }
}

/// Slack added to every phase deadline of the parent.
pub const PHASE_SLACK_S: f64 = 30.0;
/// How long workers get to report after `Abort`.
pub const ABORT_GRACE_S: f64 = 10.0;

/// How workers are started.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// The executable to re-run as `--worker` when there is more than one
    /// worker; default: this process's own executable.
    pub worker_exe: Option<PathBuf>,
}

enum Link {
    Thread {
        commands: Sender<Command>,
        handle: Option<std::thread::JoinHandle<()>>,
    },
    Process {
        child: Child,
        stdin: Option<ChildStdin>,
    },
}

impl Link {
    fn send(&mut self, cmd: Command) {
        match self {
            Self::Thread { commands, .. } => {
                let _ = commands.send(cmd);
            }
            Self::Process { stdin, .. } => {
                if let Some(pipe) = stdin.as_mut() {
                    let line = serde_json::to_string(&cmd).unwrap_or_default();
                    let _ = writeln!(pipe, "{line}").and_then(|()| pipe.flush());
                }
            }
        }
    }

    fn end(&mut self, kill: bool) {
        match self {
            Self::Thread { commands, handle } => {
                if kill {
                    let _ = commands.send(Command::Abort);
                }
                if let Some(h) = handle.take() {
                    let _ = h.join();
                }
            }
            Self::Process { child, stdin } => {
                stdin.take();
                if kill {
                    let _ = child.kill();
                }
                let _ = child.wait();
            }
        }
    }
}

enum Incoming {
    Msg(WorkerMsg),
    /// The worker's output ended (process exited or thread returned).
    Gone(String),
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn spawn_workers(
    s: &Scenario,
    layout: &Layout,
    cache: &HashMap<u64, KeyEntry>,
    opts: &RunOptions,
    tx: &Sender<(usize, Incoming)>,
) -> Result<Vec<Link>, LoadgenError> {
    let run_nonce = {
        let mut r = pairing::SplitMix64::new(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() ^ u64::from(d.subsec_nanos()) << 20)
                ^ u64::from(std::process::id()) << 32,
        );
        (r.next_u64() >> 32) as u32
    };
    let first_client_msg_id = tern_client::client_msg_id_seed(SystemTime::now());
    let mut links = Vec::new();
    for plan in &layout.workers {
        let keys = plan
            .users
            .clone()
            .filter_map(|u| cache.get(&pairing::user_id(s.phone_base, u)).cloned())
            .collect();
        let cfg = WorkerConfig {
            scenario: s.clone(),
            plan: plan.clone(),
            keys,
            run_nonce,
            first_client_msg_id,
        };
        let index = plan.index;
        let tx = tx.clone();
        if layout.workers.len() == 1 {
            let (cmd_tx, cmd_rx) = mpsc::channel();
            let handle = std::thread::Builder::new()
                .name(format!("loadgen-worker-{index}"))
                .spawn(move || {
                    let mut emit = |m: &WorkerMsg| {
                        let _ = tx.send((index, Incoming::Msg(m.clone())));
                    };
                    let end = match run_worker(cfg, &cmd_rx, &mut emit) {
                        Ok(()) => "finished".to_owned(),
                        Err(e) => {
                            emit(&WorkerMsg::Fatal {
                                error: e.to_string(),
                            });
                            e.to_string()
                        }
                    };
                    let _ = tx.send((index, Incoming::Gone(end)));
                })?;
            links.push(Link::Thread {
                commands: cmd_tx,
                handle: Some(handle),
            });
            continue;
        }
        let exe = match &opts.worker_exe {
            Some(p) => p.clone(),
            None => std::env::current_exe()?,
        };
        let mut child = Process::new(&exe)
            .arg("--worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| LoadgenError::Worker {
                index,
                detail: format!("cannot start {}: {e}", exe.display()),
            })?;
        let mut stdin = child.stdin.take();
        if let Some(pipe) = stdin.as_mut() {
            let line = serde_json::to_string(&cfg)?;
            writeln!(pipe, "{line}")
                .and_then(|()| pipe.flush())
                .map_err(|e| LoadgenError::Worker {
                    index,
                    detail: format!("cannot send the config: {e}"),
                })?;
        }
        let stdout = child.stdout.take().ok_or_else(|| LoadgenError::Worker {
            index,
            detail: "no stdout pipe".to_owned(),
        })?;
        std::thread::Builder::new()
            .name(format!("loadgen-reader-{index}"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    match serde_json::from_str::<WorkerMsg>(&line) {
                        Ok(m) => {
                            if tx.send((index, Incoming::Msg(m))).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = tx.send((
                                index,
                                Incoming::Gone(format!("bad line from worker: {e}")),
                            ));
                            return;
                        }
                    }
                }
                let _ = tx.send((index, Incoming::Gone("exited".to_owned())));
            })?;
        links.push(Link::Process { child, stdin });
    }
    Ok(links)
}

/// Runs a whole load test and returns its report (also printed and written
/// as JSON when the scenario says so).
pub fn run(s: &Scenario, opts: &RunOptions) -> Result<Report, LoadgenError> {
    s.validate()?;
    sys::raise_nofile_limit();
    let started = Instant::now();
    let started_unix_ms = now_unix_ms();
    let layout = Layout::new(s).map_err(LoadgenError::Scenario)?;
    let cache = match &s.keys_cache {
        Some(p) => keys::load(p)?,
        None => HashMap::new(),
    };
    let server_start = s.server_pid.and_then(|p| sys::sample(Some(p)));
    if s.server_pid.is_some() && server_start.is_none() {
        return Err(LoadgenError::Scenario(format!(
            "cannot read /proc/{} (is --server-pid right?)",
            s.server_pid.unwrap_or(0)
        )));
    }
    let (tx, rx) = mpsc::channel();
    let mut links = spawn_workers(s, &layout, &cache, opts, &tx)?;
    drop(tx);
    let mut p = Parent {
        s,
        rx,
        n: links.len(),
        started,
        latest: vec![Counters::default(); links.len()],
        last_total: Counters::default(),
        last_tick: started,
        next_tick: started + Duration::from_secs(1),
        timeline: Vec::new(),
        phase: "provision",
        server_peak_kib: server_start.map_or(0, |x| x.rss_kib),
        done: vec![None; links.len()],
    };
    let result = p.drive(&mut links, server_start);
    let kill = result.is_err();
    for l in &mut links {
        l.end(kill);
    }
    let mut report = result?;
    report.started_unix_ms = started_unix_ms;
    report.source_ips = layout.source_ip_count();
    if let Some(shards) = s.server_shards {
        let (cross, pairs) = pairing::cross_shard_pairs(s, shards);
        report.cross_shard = Some(CrossShard {
            shards,
            cross,
            pairs,
        });
    }
    if let Some(path) = &s.keys_cache {
        let mut all = cache;
        let new: Vec<&KeyEntry> = p.done.iter().flatten().flat_map(|r| &r.new_keys).collect();
        if !new.is_empty() {
            for k in new {
                all.insert(k.user_id, k.clone());
            }
            keys::save(path, &all)?;
        }
    }
    if let Some(path) = &s.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n").map_err(|source| LoadgenError::File {
            path: path.clone(),
            source,
        })?;
    }
    Ok(report)
}

struct Parent<'a> {
    s: &'a Scenario,
    rx: Receiver<(usize, Incoming)>,
    n: usize,
    started: Instant,
    latest: Vec<Counters>,
    last_total: Counters,
    last_tick: Instant,
    next_tick: Instant,
    timeline: Vec<Second>,
    phase: &'static str,
    server_peak_kib: u64,
    done: Vec<Option<Box<WorkerResult>>>,
}

impl Parent<'_> {
    fn total(&self) -> Counters {
        let mut t = Counters::default();
        for c in &self.latest {
            t.add(c);
        }
        t
    }

    fn server_sample(&mut self) -> Option<ProcSample> {
        let x = sys::sample(Some(self.s.server_pid?))?;
        self.server_peak_kib = self.server_peak_kib.max(x.rss_kib);
        Some(x)
    }

    fn tick(&mut self, now: Instant) {
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + Duration::from_secs(1);
        let dt = now
            .saturating_duration_since(self.last_tick)
            .as_secs_f64()
            .max(1e-3);
        self.last_tick = now;
        let t = self.total();
        let d = t.since(&self.last_total);
        self.last_total = t;
        let server = self.server_sample();
        let sec = Second {
            t_s: (now.saturating_duration_since(self.started).as_secs_f64() * 10.0).round() / 10.0,
            phase: self.phase.to_owned(),
            conns_up: t.conns_up,
            sent_per_s: d.sent as f64 / dt,
            acked_per_s: d.acked as f64 / dt,
            delivered_per_s: d.delivered as f64 / dt,
            receipts_per_s: d.receipts as f64 / dt,
            errors: t.errors,
            server_rss_kib: server.map(|x| x.rss_kib),
        };
        if self.s.progress {
            let rss = sec
                .server_rss_kib
                .map_or(String::new(), |k| format!("  server rss {} MiB", k / 1024));
            eprintln!(
                "[{:>6.1}s] {:<9} conns {:>6}/{:<6} sent {:>8.0}/s  acked {:>8.0}/s  \
                 delivered {:>8.0}/s  receipts {:>8.0}/s  errors {}{rss}",
                sec.t_s,
                sec.phase,
                t.conns_up,
                self.s.connections,
                sec.sent_per_s,
                sec.acked_per_s,
                sec.delivered_per_s,
                sec.receipts_per_s,
                t.errors,
            );
        }
        self.timeline.push(sec);
    }

    /// Waits until `pick` has accepted a message from every worker, or the
    /// deadline passes.
    fn barrier<T: Clone>(
        &mut self,
        what: &str,
        deadline: Instant,
        mut pick: impl FnMut(&WorkerMsg) -> Option<T>,
    ) -> Result<Vec<T>, LoadgenError> {
        let mut got: Vec<Option<T>> = vec![None; self.n];
        while got.iter().any(Option::is_none) {
            let now = Instant::now();
            self.tick(now);
            if now >= deadline {
                return Err(LoadgenError::Worker {
                    index: got.iter().position(Option::is_none).unwrap_or(0),
                    detail: format!("no `{what}` before the deadline"),
                });
            }
            let wait = self
                .next_tick
                .min(deadline)
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            match self.rx.recv_timeout(wait) {
                Ok((i, Incoming::Msg(m))) => {
                    if let WorkerMsg::Progress { counters } = &m {
                        if let Some(slot) = self.latest.get_mut(i) {
                            *slot = *counters;
                        }
                    }
                    if let WorkerMsg::Fatal { error } = &m {
                        return Err(LoadgenError::Worker {
                            index: i,
                            detail: error.clone(),
                        });
                    }
                    if let WorkerMsg::Done { result } = &m {
                        if let Some(slot) = self.latest.get_mut(i) {
                            *slot = result.total;
                        }
                        if let Some(slot) = self.done.get_mut(i) {
                            *slot = Some(result.clone());
                        }
                    }
                    if let Some(v) = pick(&m) {
                        if let Some(slot) = got.get_mut(i) {
                            *slot = Some(v);
                        }
                    }
                }
                Ok((i, Incoming::Gone(why))) => {
                    if got.get(i).is_some_and(Option::is_none) {
                        return Err(LoadgenError::Worker {
                            index: i,
                            detail: format!("ended before `{what}`: {why}"),
                        });
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(LoadgenError::Worker {
                        index: 0,
                        detail: format!("all workers gone before `{what}`"),
                    })
                }
            }
        }
        Ok(got.into_iter().flatten().collect())
    }

    fn drive(
        &mut self,
        links: &mut [Link],
        server_start: Option<ProcSample>,
    ) -> Result<Report, LoadgenError> {
        let s = self.s;
        let slack = Duration::from_secs_f64(PHASE_SLACK_S);
        let users = f64::from(s.connections);
        let t0 = Instant::now();
        // Registration: bounded by concurrency and per-attempt timeouts.
        let provision_deadline = t0
            + slack
            + Duration::from_secs_f64(
                s.connect_timeout_s * 3.0 * (users / f64::from(s.provision_concurrency)).ceil(),
            );
        let prov = self.barrier("provisioned", provision_deadline, |m| match m {
            WorkerMsg::Provisioned {
                registered,
                cached,
                failed,
            } => Some((*registered, *cached, *failed)),
            _ => None,
        })?;
        let provision_s = t0.elapsed().as_secs_f64();
        let before_connect = self.server_sample();
        self.phase = "connect";
        for l in links.iter_mut() {
            l.send(Command::Connect);
        }
        let t1 = Instant::now();
        let connect_deadline = t1
            + slack
            + Duration::from_secs_f64(users / f64::from(s.ramp_per_s) + s.connect_timeout_s * 5.0);
        let conn = self.barrier("connected", connect_deadline, |m| match m {
            WorkerMsg::Connected { up, failed } => Some((*up, *failed)),
            _ => None,
        })?;
        let connect_s = t1.elapsed().as_secs_f64();
        let connected = self.server_sample();
        self.phase = "run";
        for l in links.iter_mut() {
            l.send(Command::Run);
        }
        let t2 = Instant::now();
        let run_end = t2 + Duration::from_secs_f64(s.duration_s);
        let done_deadline = run_end + Duration::from_secs_f64(s.drain_timeout_s) + slack;
        // Until the end of the run phase (sampling the server's CPU there),
        // then until every worker has reported.
        let all_done = self.pump(run_end)?;
        let cpu_at_run_end = self.server_sample();
        self.phase = "drain";
        if !all_done {
            match self.pump(done_deadline) {
                Ok(true) => {}
                Ok(false) => self.abort(
                    links,
                    LoadgenError::Worker {
                        index: self.done.iter().position(Option::is_none).unwrap_or(0),
                        detail: "no report before the deadline".to_owned(),
                    },
                )?,
                Err(e) => self.abort(links, e)?,
            }
        }
        let end = self.server_sample();
        let workers: Vec<Box<WorkerResult>> = self.done.iter().flatten().cloned().collect();
        Ok(self.aggregate(
            &workers,
            &prov,
            &conn,
            [provision_s, connect_s],
            [server_start, before_connect, connected, cpu_at_run_end, end],
        ))
    }

    /// Takes progress and reports until every worker has reported (true)
    /// or the deadline passes (false).
    fn pump(&mut self, deadline: Instant) -> Result<bool, LoadgenError> {
        loop {
            if self.done.iter().all(Option::is_some) {
                return Ok(true);
            }
            let now = Instant::now();
            self.tick(now);
            if now >= deadline {
                return Ok(false);
            }
            let wait = self
                .next_tick
                .min(deadline)
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            match self.rx.recv_timeout(wait) {
                Ok((i, Incoming::Msg(m))) => match m {
                    WorkerMsg::Progress { counters } => {
                        if let Some(slot) = self.latest.get_mut(i) {
                            *slot = counters;
                        }
                    }
                    WorkerMsg::Done { result } => {
                        if let Some(slot) = self.latest.get_mut(i) {
                            *slot = result.total;
                        }
                        if let Some(slot) = self.done.get_mut(i) {
                            *slot = Some(result);
                        }
                    }
                    WorkerMsg::Fatal { error } => {
                        return Err(LoadgenError::Worker {
                            index: i,
                            detail: error,
                        })
                    }
                    _ => {}
                },
                Ok((i, Incoming::Gone(why))) => {
                    if self.done.get(i).is_some_and(Option::is_none) {
                        return Err(LoadgenError::Worker {
                            index: i,
                            detail: format!("ended without a report: {why}"),
                        });
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(LoadgenError::Worker {
                        index: 0,
                        detail: "all workers gone".to_owned(),
                    })
                }
            }
        }
    }

    /// Tells every worker to stop and report; succeeds if they all do.
    fn abort(&mut self, links: &mut [Link], why: LoadgenError) -> Result<(), LoadgenError> {
        eprintln!("tern-loadgen: {why}; aborting");
        for l in links.iter_mut() {
            l.send(Command::Abort);
        }
        let grace = Instant::now() + Duration::from_secs_f64(ABORT_GRACE_S);
        match self.pump(grace) {
            Ok(true) => {
                eprintln!("tern-loadgen: every worker reported after the abort");
                Ok(())
            }
            _ => Err(why),
        }
    }

    fn aggregate(
        &self,
        workers: &[Box<WorkerResult>],
        prov: &[(u64, u64, u64)],
        conn: &[(u64, u64)],
        [provision_s, connect_s]: [f64; 2],
        [server_start, before_connect, connected, run_end, end]: [Option<ProcSample>; 5],
    ) -> Report {
        let s = self.s;
        let mut totals = Counters::default();
        let mut run = Counters::default();
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        let mut hists: BTreeMap<String, Hist> = BTreeMap::new();
        let mut check = CheckSummary::default();
        let mut notes = Vec::new();
        let mut cpu_us = 0u64;
        let mut run_s = 0.0;
        let mut drain_s: f64 = 0.0;
        let mut drained = true;
        for w in workers {
            totals.add(&w.total);
            run.add(&w.run);
            for (k, v) in &w.errors {
                *errors.entry(k.clone()).or_default() += v;
            }
            for (k, v) in &w.hists {
                match Hist::from_base64(v) {
                    Ok(h) => hists.entry(k.clone()).or_default().add(&h),
                    Err(e) => notes.push(format!("histogram {k} unreadable: {e}")),
                }
            }
            check.add(&w.check);
            for n in &w.notes {
                if !notes.contains(n) {
                    notes.push(n.clone());
                }
            }
            cpu_us += w.cpu_us;
            run_s += w.run_s;
            drain_s = drain_s.max(w.drain_s);
            drained &= w.drained;
        }
        let run_s = if workers.is_empty() {
            0.0
        } else {
            run_s / workers.len() as f64
        };
        let per_s = |n: u64| if run_s > 0.0 { n as f64 / run_s } else { 0.0 };
        let up: u64 = conn.iter().map(|c| c.0).sum();
        let server = match (s.server_pid, server_start) {
            (Some(pid), Some(start)) => {
                let before = before_connect.unwrap_or(start);
                let connected = connected.unwrap_or(before);
                let run_start_cpu = connected.cpu_us;
                let run_cpu_us = run_end.map_or(0, |e| e.cpu_us.saturating_sub(run_start_cpu));
                let end = end.unwrap_or(connected);
                Some(ServerStats {
                    pid,
                    rss_start_kib: start.rss_kib,
                    rss_before_connect_kib: before.rss_kib,
                    rss_connected_kib: connected.rss_kib,
                    rss_peak_kib: self.server_peak_kib,
                    rss_end_kib: end.rss_kib,
                    rss_per_connection_bytes: if up > 0 {
                        (connected.rss_kib as f64 - before.rss_kib as f64) * 1024.0 / up as f64
                    } else {
                        0.0
                    },
                    cpu_run_s: run_cpu_us as f64 / 1e6,
                    cpu_us_per_message: if run.delivered > 0 {
                        run_cpu_us as f64 / run.delivered as f64
                    } else {
                        0.0
                    },
                    cpu_cores_busy: if run_s > 0.0 {
                        run_cpu_us as f64 / 1e6 / run_s
                    } else {
                        0.0
                    },
                    cpu_us_per_handshake: if run.handshakes > 0 {
                        run_cpu_us as f64 / run.handshakes as f64
                    } else {
                        0.0
                    },
                    cpu_total_s: end.cpu_us.saturating_sub(start.cpu_us) as f64 / 1e6,
                })
            }
            _ => None,
        };
        let mut phases_s = BTreeMap::new();
        phases_s.insert("provision".to_owned(), provision_s);
        phases_s.insert("connect".to_owned(), connect_s);
        phases_s.insert("run".to_owned(), run_s);
        phases_s.insert("drain".to_owned(), drain_s);
        let latency_us = hists
            .iter()
            .map(|(k, h)| (k.clone(), h.summary()))
            .collect();
        Report {
            schema: SCHEMA.to_owned(),
            ok: check.ok(),
            scenario: s.clone(),
            started_unix_ms: 0,
            procs: s.procs(),
            source_ips: 0,
            cross_shard: None,
            provisioning: Provisioning {
                registered: prov.iter().map(|p| p.0).sum(),
                cached: prov.iter().map(|p| p.1).sum(),
                failed: prov.iter().map(|p| p.2).sum(),
                seconds: provision_s,
            },
            connections: Connections {
                target: u64::from(s.connections),
                up,
                failed: conn.iter().map(|c| c.1).sum(),
                reconnects: totals.reconnects,
                ramp_seconds: connect_s,
            },
            phases_s,
            drained,
            throughput: Throughput {
                run_seconds: run_s,
                sent: run.sent,
                acked: run.acked,
                delivered: run.delivered,
                receipts: run.receipts,
                reads: run.reads,
                omitted: run.omitted,
                messages_per_s: per_s(run.delivered),
                acks_per_s: per_s(run.acked),
                receipts_per_s: per_s(run.receipts),
                handshakes: run.handshakes,
                handshakes_per_s: per_s(run.handshakes),
            },
            totals,
            latency_us,
            errors,
            check,
            server,
            loadgen: LoadgenStats {
                cpu_s: cpu_us as f64 / 1e6,
                cpu_us_per_message: if totals.delivered > 0 {
                    cpu_us as f64 / totals.delivered as f64
                } else {
                    0.0
                },
                cpu_us_per_handshake: if totals.handshakes > 0 {
                    cpu_us as f64 / totals.handshakes as f64
                } else {
                    0.0
                },
            },
            timeline: self.timeline.clone(),
            notes,
        }
    }
}

/// The `--worker` side of a worker process: config from the first stdin
/// line, commands from the following ones, messages to stdout.
pub fn worker_main() -> Result<(), LoadgenError> {
    sys::raise_nofile_limit();
    let stdin = std::io::stdin();
    let mut first = String::new();
    stdin.lock().read_line(&mut first)?;
    let cfg: WorkerConfig = serde_json::from_str(&first)?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("loadgen-commands".to_owned())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if let Ok(cmd) = serde_json::from_str::<Command>(&line) {
                    if tx.send(cmd).is_err() {
                        return;
                    }
                }
            }
            // stdin closed: the parent is gone.
            let _ = tx.send(Command::Abort);
        })?;
    let stdout = std::io::stdout();
    let mut emit = |m: &WorkerMsg| {
        let mut out = stdout.lock();
        if let Ok(line) = serde_json::to_string(m) {
            let _ = writeln!(out, "{line}").and_then(|()| out.flush());
        }
    };
    match run_worker(cfg, &rx, &mut emit) {
        Ok(()) => Ok(()),
        Err(e) => {
            emit(&WorkerMsg::Fatal {
                error: e.to_string(),
            });
            Err(e)
        }
    }
}
