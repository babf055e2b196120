//! The admin channel: a fake handler behind the real Unix socket. Every
//! command round-trips (raw protocol and `tern ctl`), bad requests get
//! error responses without hurting the server, the socket is mode 0600,
//! and the bounds hold.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use tern_core::user::UserId;
use tern_engine::config::{Config, ConfigArgs};
use tern_engine::ops::admin::{
    admin_request, admin_request_raw, AdminError, AdminHandler, AdminServer, CommandError,
    DrainReply, ErrorKind, KickReply, QueuesReply, ReloadReply, Reply, Request, Response,
    StatusReply, CONNECTIONS_MAX, REQUEST_BYTES_MAX,
};
use tern_engine::ops::ctl::{self, CtlArgs, CtlCmd};
use tern_engine::ops::metrics::{Metrics, MetricsSnapshot, ShardGauges};

const ONLINE: UserId = UserId(15_551_230_001);
const MISSING: UserId = UserId(15_559_999_999);

struct Fake {
    metrics: Arc<Metrics>,
    draining: AtomicBool,
    kicked: Mutex<Vec<UserId>>,
    queues_asked: Mutex<Vec<usize>>,
}

impl Fake {
    fn new() -> Arc<Fake> {
        let metrics = Metrics::new_at(2, 1_000);
        metrics.shard(0).unwrap().set_gauges(&ShardGauges {
            connections: 3,
            ..ShardGauges::default()
        });
        metrics.shard(1).unwrap().set_gauges(&ShardGauges {
            connections: 4,
            ..ShardGauges::default()
        });
        metrics.shard(1).unwrap().messages_delivered.add(17);
        Arc::new(Fake {
            metrics,
            draining: AtomicBool::new(false),
            kicked: Mutex::new(Vec::new()),
            queues_asked: Mutex::new(Vec::new()),
        })
    }
}

impl AdminHandler for Fake {
    fn status(&self) -> StatusReply {
        let draining = self.draining.load(Ordering::SeqCst);
        StatusReply {
            version: "9.9.9".into(),
            uptime_s: 3_725,
            shards: 2,
            connections: self.metrics.connections_total(),
            ready: !draining,
            draining,
        }
    }

    fn stats(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    fn queues(&self, top: usize) -> Result<QueuesReply, CommandError> {
        self.queues_asked.lock().unwrap().push(top);
        Ok(QueuesReply::merge(
            vec![
                (
                    0,
                    vec![(UserId(15_551_230_002), 40), (UserId(15_551_230_003), 1)],
                ),
                (1, vec![(ONLINE, 90)]),
            ],
            top,
        ))
    }

    fn kick(&self, user: UserId) -> Result<KickReply, CommandError> {
        if user == MISSING {
            return Err(CommandError::new(ErrorKind::NotFound, "no such user"));
        }
        self.kicked.lock().unwrap().push(user);
        Ok(KickReply {
            user: user.to_phone(),
            was_online: user == ONLINE,
        })
    }

    fn drain(&self) -> Result<DrainReply, CommandError> {
        let already = self.draining.swap(true, Ordering::SeqCst);
        Ok(DrainReply {
            already_draining: already,
            connections: self.metrics.connections_total(),
        })
    }

    fn reload(&self) -> Result<ReloadReply, CommandError> {
        let old = Config::default();
        let args = ConfigArgs {
            sets: vec![
                "alerts.shard_queue.threshold=5".into(),
                "listen=127.0.0.1:1".into(),
            ],
            ..ConfigArgs::default()
        };
        let new = Config::load_with_env(&args, Vec::new())
            .map_err(|e| CommandError::new(ErrorKind::Failed, e.to_string()))?;
        Ok(ReloadReply::from_changes(
            Some(Path::new("/etc/tern.toml")),
            old.changes(&new),
        ))
    }
}

fn socket_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("admin.sock")
}

fn ok(path: &Path, req: Request) -> Reply {
    match admin_request(path, &req).unwrap() {
        Response::Ok(r) => r,
        Response::Error(e) => panic!("{req:?}: {e:?}"),
    }
}

#[test]
fn every_command_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_in(&dir);
    let fake = Fake::new();
    let server = AdminServer::spawn(&path, fake.clone()).unwrap();

    let Reply::Status(s) = ok(&path, Request::Status) else {
        panic!()
    };
    assert_eq!(
        (s.version.as_str(), s.shards, s.connections),
        ("9.9.9", 2, 7)
    );
    assert!(s.ready && !s.draining);

    let Reply::Stats(m) = ok(&path, Request::Stats) else {
        panic!()
    };
    assert_eq!(m, fake.metrics.snapshot());
    assert_eq!(m.shards[1].values["messages_delivered_total"], 17);

    let Reply::Queues(q) = ok(&path, Request::Queues { top: 2 }) else {
        panic!()
    };
    let got: Vec<(&str, u16, u64)> = q
        .top
        .iter()
        .map(|e| (e.user.as_str(), e.shard, e.len))
        .collect();
    assert_eq!(got, vec![("+15551230001", 1, 90), ("+15551230002", 0, 40)]);
    // `top` is capped before it reaches the handler.
    ok(&path, Request::Queues { top: 1_000_000 });
    assert_eq!(*fake.queues_asked.lock().unwrap(), vec![2, 1_000]);

    let Reply::Kick(k) = ok(
        &path,
        Request::Kick {
            user: "+15551230001".into(),
        },
    ) else {
        panic!()
    };
    assert_eq!((k.user.as_str(), k.was_online), ("+15551230001", true));
    // A numeric id works too.
    let Reply::Kick(k) = ok(
        &path,
        Request::Kick {
            user: "15551230002".into(),
        },
    ) else {
        panic!()
    };
    assert!(!k.was_online);
    assert_eq!(
        *fake.kicked.lock().unwrap(),
        vec![ONLINE, UserId(15_551_230_002)]
    );

    let Reply::Drain(d) = ok(&path, Request::Drain) else {
        panic!()
    };
    assert_eq!((d.already_draining, d.connections), (false, 7));
    let Reply::Drain(d) = ok(&path, Request::Drain) else {
        panic!()
    };
    assert!(d.already_draining);
    let Reply::Status(s) = ok(&path, Request::Status) else {
        panic!()
    };
    assert!(s.draining && !s.ready);

    let Reply::Reload(r) = ok(&path, Request::Reload) else {
        panic!()
    };
    assert_eq!(r.file.as_deref(), Some("/etc/tern.toml"));
    assert_eq!(r.applied, vec!["alerts.shard_queue.threshold"]);
    assert_eq!(r.needs_restart, vec!["listen"]);

    // Handler errors come back as error responses.
    let resp = admin_request(
        &path,
        &Request::Kick {
            user: "+15559999999".into(),
        },
    )
    .unwrap();
    assert_eq!(
        resp,
        Response::Error(CommandError::new(ErrorKind::NotFound, "no such user"))
    );
    assert!(matches!(
        resp.into_result(),
        Err(AdminError::Command(CommandError {
            kind: ErrorKind::NotFound,
            ..
        }))
    ));

    // Several requests on one connection, answered in order.
    let mut s = UnixStream::connect(&path).unwrap();
    s.write_all(b"{\"cmd\":\"status\"}\n\n{\"cmd\":\"queues\",\"top\":1}\n")
        .unwrap();
    let mut r = BufReader::new(s);
    let mut l1 = String::new();
    let mut l2 = String::new();
    r.read_line(&mut l1).unwrap();
    r.read_line(&mut l2).unwrap();
    assert!(l1.starts_with("{\"ok\":{\"cmd\":\"status\""), "{l1}");
    assert!(l2.starts_with("{\"ok\":{\"cmd\":\"queues\""), "{l2}");

    server.stop();
    assert!(!path.exists(), "socket file left behind");
    assert!(matches!(
        admin_request(&path, &Request::Status),
        Err(AdminError::Connect { .. })
    ));
}

#[test]
fn bad_requests_get_error_responses_and_the_server_survives() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_in(&dir);
    let _server = AdminServer::spawn(&path, Fake::new()).unwrap();

    for (line, needle) in [
        ("this is not json", "cannot parse request"),
        ("{\"cmd\":\"reboot\"}", "unknown variant `reboot`"),
        ("{\"nocmd\":1}", "cmd"),
        ("{\"cmd\":\"kick\"}", "missing field `user`"),
        ("{\"cmd\":\"kick\",\"user\":\"bob\"}", "user `bob`"),
        ("{\"cmd\":\"queues\",\"top\":-3}", "cannot parse request"),
        ("[1,2,3]", "cannot parse request"),
    ] {
        let raw = admin_request_raw(&path, line).unwrap();
        let resp: Response = serde_json::from_str(&raw).unwrap();
        match resp {
            Response::Error(e) => {
                assert_eq!(e.kind, ErrorKind::BadRequest, "{line}");
                assert!(e.message.contains(needle), "{line}: {}", e.message);
            }
            Response::Ok(r) => panic!("{line} answered {r:?}"),
        }
    }

    // A bad line does not end the connection; the next request is served.
    let mut s = UnixStream::connect(&path).unwrap();
    s.write_all(b"nope\n{\"cmd\":\"status\"}\n").unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    assert!(l.starts_with("{\"error\""), "{l}");
    l.clear();
    r.read_line(&mut l).unwrap();
    assert!(l.starts_with("{\"ok\""), "{l}");

    // An over-long line is refused and that connection closed.
    let mut s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let long = vec![b'x'; REQUEST_BYTES_MAX + 10];
    let _ = s.write_all(&long);
    let mut r = BufReader::new(s);
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    let resp: Response = serde_json::from_str(&l).unwrap();
    assert!(
        matches!(&resp, Response::Error(e) if e.kind == ErrorKind::BadRequest && e.message.contains("longer than")),
        "{resp:?}"
    );

    // Still alive for everyone else.
    assert!(matches!(
        admin_request(&path, &Request::Status).unwrap(),
        Response::Ok(Reply::Status(_))
    ));
}

#[test]
fn socket_is_private_replaces_stale_files_and_refuses_a_second_server() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_in(&dir);
    // A stale socket from a crashed server: bound, then abandoned.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());

    let server = AdminServer::spawn(&path, Fake::new()).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o}");
    // No temporary file left next to it.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["admin.sock".to_string()]);

    // A second server on the same path is refused; the first keeps serving.
    assert!(matches!(
        AdminServer::spawn(&path, Fake::new()),
        Err(AdminError::InUse { .. })
    ));
    assert!(matches!(
        admin_request(&path, &Request::Status).unwrap(),
        Response::Ok(_)
    ));

    // A regular file in the way is not deleted.
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, b"keep me").unwrap();
    assert!(matches!(
        AdminServer::spawn(&file, Fake::new()),
        Err(AdminError::Bind { .. })
    ));
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");

    // The parent directory is created when missing.
    let nested = dir.path().join("run/tern/admin.sock");
    let s2 = AdminServer::spawn(&nested, Fake::new()).unwrap();
    assert!(nested.exists());
    drop(s2);
    assert!(!nested.exists());
    server.stop();
}

#[test]
fn too_many_clients_get_busy() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_in(&dir);
    let _server = AdminServer::spawn(&path, Fake::new()).unwrap();
    // Idle clients hold their slots.
    let held: Vec<UnixStream> = (0..CONNECTIONS_MAX)
        .map(|_| {
            let s = UnixStream::connect(&path).unwrap();
            std::thread::sleep(Duration::from_millis(5));
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let raw = admin_request_raw(&path, "{\"cmd\":\"status\"}").unwrap();
    let resp: Response = serde_json::from_str(&raw).unwrap();
    assert!(
        matches!(&resp, Response::Error(e) if e.kind == ErrorKind::Busy),
        "{resp:?}"
    );
    drop(held);
    // Slots come back once those clients leave.
    let mut served = false;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(50));
        if let Ok(Response::Ok(_)) = admin_request(&path, &Request::Status) {
            served = true;
            break;
        }
    }
    assert!(served);
}

#[derive(Parser, Debug)]
struct Tern {
    #[command(subcommand)]
    cmd: Top,
}

#[derive(clap::Subcommand, Debug)]
enum Top {
    Ctl(CtlArgs),
}

fn ctl_args(args: &[&str]) -> CtlArgs {
    let mut argv = vec!["tern", "ctl"];
    argv.extend_from_slice(args);
    let Top::Ctl(a) = Tern::try_parse_from(argv).unwrap().cmd;
    a
}

#[test]
fn tern_ctl_commands_print_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_in(&dir);
    let _server = AdminServer::spawn(&path, Fake::new()).unwrap();
    let p = path.to_str().unwrap();

    let a = ctl_args(&["--socket", p, "queues", "--top", "1"]);
    assert_eq!(a.cmd, CtlCmd::Queues { top: 1 });
    let out = ctl::execute(&a).unwrap();
    assert!(out.contains("+15551230001"), "{out}");
    assert!(!out.contains("+15551230002"), "{out}");

    // --socket after the subcommand works too (global flag).
    let out = ctl::execute(&ctl_args(&["status", "--socket", p])).unwrap();
    assert_eq!(
        out,
        "tern 9.9.9: ready, up 1h2m5s, 2 shard(s), 7 connection(s)\n"
    );
    let out = ctl::execute(&ctl_args(&["--socket", p, "stats"])).unwrap();
    assert!(out.lines().count() >= 3, "{out}");
    assert!(out.contains("17"), "{out}");
    let out = ctl::execute(&ctl_args(&["--socket", p, "kick", "+15551230001"])).unwrap();
    assert_eq!(out, "kicked +15551230001 (its device was connected)\n");
    let out = ctl::execute(&ctl_args(&["--socket", p, "reload"])).unwrap();
    assert!(
        out.contains("applied now: alerts.shard_queue.threshold"),
        "{out}"
    );
    assert!(out.contains("needs a restart: listen"), "{out}");
    let out = ctl::execute(&ctl_args(&["--socket", p, "drain"])).unwrap();
    assert!(out.starts_with("draining"), "{out}");

    let json = ctl::execute(&ctl_args(&["--socket", p, "--json", "status"])).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["ok"]["cmd"], "status");
    assert_eq!(v["ok"]["result"]["draining"], true);

    // Server errors and an absent server are errors, with distinct exit codes.
    let err = ctl::execute(&ctl_args(&["--socket", p, "kick", "+15559999999"])).unwrap_err();
    assert!(err.to_string().contains("no such user"), "{err}");
    assert_eq!(
        ctl::run_ctl(ctl_args(&["--socket", p, "kick", "+15559999999"])),
        std::process::ExitCode::from(1)
    );
    let absent = dir.path().join("absent.sock");
    assert_eq!(
        ctl::run_ctl(ctl_args(&["--socket", absent.to_str().unwrap(), "status"])),
        std::process::ExitCode::from(2)
    );

    // Without --socket, the config decides.
    let cfg = dir.path().join("tern.toml");
    std::fs::write(&cfg, format!("[ops]\nadmin_socket = \"{p}\"\n")).unwrap();
    let a = ctl_args(&["--config", cfg.to_str().unwrap(), "status"]);
    assert_eq!(ctl::socket_path(&a).unwrap(), path);
    assert!(ctl::execute(&a).unwrap().starts_with("tern 9.9.9"));
}
