//! Configuration: precedence (file < environment < command line), rejection
//! of unknown keys and bad values naming the key, the commented default
//! config round trip, every engine limit reachable from a file, conversion
//! to `ServeOptions`, reload classification, and docs/OPERATIONS.md kept in
//! step with the key table.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::Parser;
use tern_core::limits::{Limits, Rate};
use tern_engine::config::{self, Config, ConfigArgs, ConfigError, Origin, KEYS};
use tern_engine::server::{SmsChoice, TlsChoice};

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
}

fn cli(args: &[&str]) -> ConfigArgs {
    let mut argv = vec!["tern"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).unwrap().config
}

fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    path
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load(args: &ConfigArgs, pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::load_with_env(args, env(pairs))
}

#[test]
fn precedence_is_file_then_env_then_cli() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        "tern.toml",
        r#"
listen = "127.0.0.1:1000"
data_dir = "/srv/from-file"
shards = 3

[limits]
inbox_len_max = 100
login_timeout_ms = 1111
pin_requests_per_source = { burst = 5, period_ms = 5000 }

[alerts.user_queue]
threshold = 7
"#,
    );
    let path = file.to_str().unwrap();

    // File alone.
    let c = load(&cli(&["--config", path]), &[]).unwrap();
    assert_eq!(c.listen, "127.0.0.1:1000".parse().unwrap());
    assert_eq!(c.limits.inbox_len_max, 100);
    assert_eq!(c.shards, Some(3));
    // A partial section keeps the other keys' defaults (per kind).
    assert_eq!(c.alerts.user_queue.threshold, 7);
    assert_eq!(
        c.alerts.user_queue.duration_ms,
        Config::default().alerts.user_queue.duration_ms
    );
    assert_eq!(c.alerts.shard_queue, Config::default().alerts.shard_queue);

    // The environment beats the file.
    let e = [
        ("TERN_LISTEN", "127.0.0.1:2000"),
        ("TERN_LIMITS_INBOX_LEN_MAX", "200"),
        ("TERN_LIMITS_PIN_REQUESTS_PER_SOURCE", "9/9000"),
        ("TERN_ALERTS_MESH_QUEUE_THRESHOLD", "1_234"),
        // Not ours: ignored.
        ("TERN_SERVER", "elsewhere:1"),
    ];
    let c = load(&cli(&["--config", path]), &e).unwrap();
    assert_eq!(c.listen, "127.0.0.1:2000".parse().unwrap());
    assert_eq!(c.limits.inbox_len_max, 200);
    assert_eq!(
        c.limits.to_limits().pin_requests_per_source,
        Rate::new(9, 9000)
    );
    assert_eq!(c.alerts.mesh_queue.threshold, 1_234);
    // Keys the environment does not name keep the file's values.
    assert_eq!(c.limits.login_timeout_ms, 1111);
    assert_eq!(c.data_dir, PathBuf::from("/srv/from-file"));

    // The command line beats both; flags not given change nothing.
    let c = load(
        &cli(&[
            "--config",
            path,
            "--limit",
            "inbox_len_max=300",
            "--set",
            "alerts.user_queue.threshold=8",
            "--data-dir",
            "/srv/from-cli",
        ]),
        &e,
    )
    .unwrap();
    assert_eq!(c.limits.inbox_len_max, 300);
    assert_eq!(c.alerts.user_queue.threshold, 8);
    assert_eq!(c.data_dir, PathBuf::from("/srv/from-cli"));
    assert_eq!(c.listen, "127.0.0.1:2000".parse().unwrap());
    assert_eq!(c.shards, Some(3));
    assert_eq!(c.alerts.mesh_queue.threshold, 1_234);

    // --set comes after --limit: the later one wins.
    let c = load(
        &cli(&[
            "--limit",
            "inbox_len_max=300",
            "--set",
            "limits.inbox_len_max=400",
        ]),
        &[],
    )
    .unwrap();
    assert_eq!(c.limits.inbox_len_max, 400);

    // TERN_CONFIG names the file when --config is not given.
    let c = load(&cli(&[]), &[("TERN_CONFIG", path)]).unwrap();
    assert_eq!(c.limits.inbox_len_max, 100);

    // No file, no env, no flags: the embedded defaults.
    assert_eq!(load(&cli(&[]), &[]).unwrap(), Config::default());
}

#[test]
fn unknown_keys_are_rejected_naming_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        "bad.toml",
        "listen = \"127.0.0.1:1\"\n\n[limits]\ninbox_len_maxx = 5\n",
    );
    let err = config::check_file(&file).unwrap_err();
    assert!(
        matches!(&err, ConfigError::UnknownKey { key, origin: Origin::File { line: Some(4), .. } }
            if key == "limits.inbox_len_maxx"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("limits.inbox_len_maxx"), "{msg}");
    assert!(msg.contains("bad.toml:4"), "{msg}");

    // An unknown section.
    let file = write_file(dir.path(), "sec.toml", "[limitz]\ninbox_len_max = 5\n");
    let err = config::check_file(&file).unwrap_err();
    assert_eq!(err.key(), Some("limitz"), "{err:?}");
    assert_eq!(err.line(), Some(1));

    // An unknown field inside a rate.
    let file = write_file(
        dir.path(),
        "rate.toml",
        "[limits]\npin_requests_per_phone = { burst = 1, period_ms = 2, jitter = 3 }\n",
    );
    let err = config::check_file(&file).unwrap_err();
    assert!(matches!(err, ConfigError::UnknownKey { .. }), "{err:?}");
    assert!(err.to_string().contains("jitter"), "{err}");

    // An unknown variable in one of our sections.
    let err = load(&cli(&[]), &[("TERN_LIMITS_INBOX_LEN_MAXX", "5")]).unwrap_err();
    assert!(
        matches!(&err, ConfigError::UnknownKey { origin: Origin::Env { var }, .. }
            if var == "TERN_LIMITS_INBOX_LEN_MAXX"),
        "{err:?}"
    );
    // An unknown --set key and an unknown --limit name.
    let err = load(&cli(&["--set", "ops.nope=1"]), &[]).unwrap_err();
    assert_eq!(err.key(), Some("ops.nope"));
    let err = load(&cli(&["--limit", "nope=1"]), &[]).unwrap_err();
    assert_eq!(err.key(), Some("limits.nope"));
}

#[test]
fn bad_values_are_rejected_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, usize)] = &[
        (
            "[limits]\ninbox_len_max = \"lots\"\n",
            "limits.inbox_len_max",
            2,
        ),
        ("listen = \"nowhere\"\n", "listen", 1),
        ("shards = 70000\n", "shards", 1),
        (
            "[limits]\ndedup_window_len = -1\n",
            "limits.dedup_window_len",
            2,
        ),
        (
            "\n[limits]\npin_requests_per_phone = { burst = 3 }\n",
            "limits.pin_requests_per_phone",
            3,
        ),
        ("[ops]\nhttp_enabled = \"yes\"\n", "ops.http_enabled", 2),
        (
            "[alerts.user_queue]\nthreshold = 1.5\n",
            "alerts.user_queue.threshold",
            2,
        ),
    ];
    for (i, (text, key, line)) in cases.iter().enumerate() {
        let file = write_file(dir.path(), &format!("bad{i}.toml"), text);
        let err = config::check_file(&file).unwrap_err();
        assert!(
            matches!(&err, ConfigError::BadValue { .. }),
            "{text}: {err:?}"
        );
        assert_eq!(err.key(), Some(*key), "{text}: {err}");
        assert_eq!(err.line(), Some(*line), "{text}: {err}");
        assert!(err.to_string().contains(key), "{err}");
    }

    // TOML syntax errors carry the line.
    let file = write_file(dir.path(), "syntax.toml", "listen = \"a\"\n[limits\n");
    let err = config::check_file(&file).unwrap_err();
    assert!(
        matches!(err, ConfigError::Syntax { line: Some(2), .. }),
        "{err:?}"
    );

    // Environment and flags: typed per key, named with their source.
    let err = load(&cli(&[]), &[("TERN_SHARDS", "many")]).unwrap_err();
    assert!(
        matches!(&err, ConfigError::BadValue { key, origin: Origin::Env { .. }, .. } if key == "shards"),
        "{err:?}"
    );
    assert!(err.to_string().contains("TERN_SHARDS"), "{err}");
    let err = load(&cli(&[]), &[("TERN_SHARDS", "70000")]).unwrap_err();
    assert_eq!(err.key(), Some("shards"), "{err}");
    let err = load(&cli(&[]), &[("TERN_LOG_JSON", "maybe")]).unwrap_err();
    assert_eq!(err.key(), Some("log_json"), "{err}");
    let err = load(&cli(&["--limit", "pin_requests_per_phone=5"]), &[]).unwrap_err();
    assert!(
        matches!(&err, ConfigError::BadValue { key, origin: Origin::Cli { .. }, .. }
            if key == "limits.pin_requests_per_phone"),
        "{err:?}"
    );
    let err = load(&cli(&["--set", "ops.http_listen=here"]), &[]).unwrap_err();
    assert_eq!(err.key(), Some("ops.http_listen"), "{err}");
    let err = load(&cli(&["--set", "novalue"]), &[]).unwrap_err();
    assert!(matches!(err, ConfigError::BadValue { .. }), "{err:?}");

    // Values that parse but do not hold together are refused, named.
    let err = load(&cli(&["--limit", "inbox_len_max=0"]), &[]).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Invalid { key, .. } if key == "limits.inbox_len_max"),
        "{err:?}"
    );
    let err = load(&cli(&["--tls-cert", "/c.pem"]), &[]).unwrap_err();
    assert_eq!(err.key(), Some("tls.key"));
    let err = load(
        &cli(&[
            "--tls-cert",
            "/c.pem",
            "--tls-key",
            "/k.pem",
            "--insecure-plaintext",
        ]),
        &[],
    )
    .unwrap_err();
    assert_eq!(err.key(), Some("tls.insecure_plaintext"));
    let err = load(&cli(&["--sms-http-url", "ftp://x"]), &[]).unwrap_err();
    assert_eq!(err.key(), Some("sms.http_url"));
    let err = load(&cli(&[]), &[("TERN_SHARDS", "0")]).unwrap_err();
    assert_eq!(err.key(), Some("shards"));
    let err = load(&cli(&["--set", "alerts.webhook_url=mailto:x"]), &[]).unwrap_err();
    assert_eq!(err.key(), Some("alerts.webhook_url"));

    // A missing file is a read error naming the path.
    let err = config::check_file(&dir.path().join("absent.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("absent.toml"));
}

#[test]
fn printed_default_config_parses_back_to_the_default() {
    let text = Config::default_toml_commented();
    let parsed = Config::from_toml_str(&text, Path::new("default.toml")).unwrap();
    assert_eq!(parsed, Config::default());

    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "default.toml", &text);
    assert_eq!(config::check_file(&file).unwrap(), Config::default());

    // Every key is there, with its comment and its environment variable;
    // keys without a default are commented out with an example.
    let lines: Vec<&str> = text.lines().collect();
    for spec in KEYS {
        let (section, leaf) = spec.split();
        let mut current = "";
        let line = lines
            .iter()
            .position(|l| {
                if let Some(h) = l.strip_prefix('[') {
                    current = h.trim_end_matches(']');
                }
                current == section
                    && (l.starts_with(&format!("{leaf} = "))
                        || l.starts_with(&format!("# {leaf} = ")))
            })
            .unwrap_or_else(|| panic!("{} missing", spec.key));
        assert!(
            lines[line - 1].contains(&spec.env_var()),
            "{}: no env line above",
            spec.key
        );
        assert!(
            lines[line - 2].starts_with("# "),
            "{}: no comment",
            spec.key
        );
    }
    // Uncommenting the examples gives a file that parses too.
    let uncommented: String = text
        .lines()
        .map(|l| {
            let bare = l.strip_prefix("# ").unwrap_or(l);
            if l.starts_with("# ")
                && KEYS.iter().any(|k| {
                    k.example.is_some() && bare.starts_with(&format!("{} = ", k.split().1))
                })
            {
                format!("{bare}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let c = Config::from_toml_str(&uncommented, Path::new("examples.toml")).unwrap();
    assert_eq!(c.shards, Some(4));
    assert_eq!(c.tls.cert, Some(PathBuf::from("/etc/tern/cert.pem")));
    assert!(c.alerts.webhook_url.is_some());
}

#[test]
fn every_engine_limit_is_reachable_from_the_file() {
    let defaults = Limits::default();
    let dir = tempfile::tempdir().unwrap();
    for name in Limits::NAMES {
        let rate = name.starts_with("pin_requests_per_") || name.starts_with("login_failures_per_");
        // Default + 1 keeps every cross-field rule satisfied.
        let default_line = Config::default_toml_commented()
            .lines()
            .find(|l| l.starts_with(&format!("{name} = ")))
            .unwrap()
            .to_string();
        let (toml_value, set_value) = if rate {
            let r = match name {
                "pin_requests_per_phone" => defaults.pin_requests_per_phone,
                "pin_requests_per_source" => defaults.pin_requests_per_source,
                "login_failures_per_user" => defaults.login_failures_per_user,
                _ => defaults.login_failures_per_source,
            };
            (
                format!("{{ burst = {}, period_ms = {} }}", r.burst + 1, r.period_ms),
                format!("{}/{}", r.burst + 1, r.period_ms),
            )
        } else {
            let v: u64 = default_line.rsplit(' ').next().unwrap().parse().unwrap();
            ((v + 1).to_string(), (v + 1).to_string())
        };
        let file = write_file(
            dir.path(),
            &format!("{name}.toml"),
            &format!("[limits]\n{name} = {toml_value}\n"),
        );
        let got = config::check_file(&file)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .limits
            .to_limits();
        let mut want = Limits::default();
        want.set(&format!("{name}={set_value}")).unwrap();
        assert_eq!(got, want, "{name}");
        assert_ne!(got, defaults, "{name} changed nothing");
    }
}

#[test]
fn config_converts_to_serve_options() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        "t.toml",
        r#"
listen = "127.0.0.1:7000"
pin_cores = false
shutdown_grace_ms = 1234
[tls]
cert = "/etc/c.pem"
key = "/etc/k.pem"
[sms]
http_url = "https://sms.example/send"
http_token = "tok"
timeout_ms = 777
[limits]
inbox_len_max = 42
"#,
    );
    let c = config::check_file(&file).unwrap();
    let o = c.serve_options().unwrap();
    assert_eq!(o.listen, "127.0.0.1:7000".parse().unwrap());
    assert_eq!(o.pin_cores, Some(false));
    assert_eq!(o.shards, None);
    assert_eq!(o.shutdown_grace_ms, 1234);
    assert_eq!(o.limits.inbox_len_max, 42);
    assert!(
        matches!(&o.tls, TlsChoice::Files { cert, key } if cert == Path::new("/etc/c.pem") && key == Path::new("/etc/k.pem"))
    );
    match &o.sms {
        SmsChoice::Http(h) => {
            assert_eq!(h.url, "https://sms.example/send");
            assert_eq!(h.bearer_token.as_deref(), Some("tok"));
            assert_eq!(h.timeout_ms, 777);
        }
        other => panic!("{other:?}"),
    }
    // The token never shows in Debug output.
    assert!(!format!("{c:?}").contains("tok\""));

    let c = load(
        &cli(&["--tls-name", "a.example", "--tls-name", "10.0.0.1"]),
        &[],
    )
    .unwrap();
    assert!(matches!(&c.serve_options().unwrap().tls,
        TlsChoice::Embedded { extra_names } if extra_names == &["a.example", "10.0.0.1"]));
    assert!(matches!(c.serve_options().unwrap().sms, SmsChoice::Outbox));
    assert_eq!(
        c.serve_options().unwrap().durability,
        tern_log::Durability::Fsync
    );
    let c = load(&cli(&["--durability", "unsafe-no-fsync"]), &[]).unwrap();
    assert_eq!(
        c.serve_options().unwrap().durability,
        tern_log::Durability::UnsafeNoFsync
    );
    let err = load(&cli(&[]), &[("TERN_LOG_DURABILITY", "sometimes")]).unwrap_err();
    assert_eq!(err.key(), Some("log.durability"), "{err}");
    assert!(err.to_string().contains("unsafe-no-fsync"), "{err}");
    let c = load(&cli(&["--insecure-plaintext"]), &[]).unwrap();
    assert!(matches!(
        c.serve_options().unwrap().tls,
        TlsChoice::InsecurePlaintext
    ));

    // The admin socket defaults into the data directory.
    let c = load(&cli(&["--data-dir", "/var/lib/tern"]), &[]).unwrap();
    assert_eq!(
        c.admin_socket_path(),
        PathBuf::from("/var/lib/tern/admin.sock")
    );
    let c = load(&cli(&[]), &[("TERN_OPS_ADMIN_SOCKET", "/run/t.sock")]).unwrap();
    assert_eq!(c.admin_socket_path(), PathBuf::from("/run/t.sock"));
}

#[test]
fn changes_split_live_and_restart_keys() {
    let old = Config::default();
    let new = load(
        &cli(&[
            "--set",
            "alerts.user_queue.threshold=1",
            "--limit",
            "inbox_len_max=77",
            "--listen",
            "127.0.0.1:1",
            "--limit",
            "max_frame_len=70000",
        ]),
        &[],
    )
    .unwrap();
    let ch = old.changes(&new);
    // Limits are read into the shards' tables at start: a restart applies
    // them. Alert rules change live.
    assert_eq!(ch.live, vec!["alerts.user_queue.threshold"]);
    assert_eq!(
        ch.restart,
        vec!["listen", "limits.inbox_len_max", "limits.max_frame_len"]
    );
    assert!(old.changes(&old).is_empty());
}

const DOCS_BEGIN: &str = "<!-- config-reference:begin (generated: tern config reference) -->\n";
const DOCS_END: &str = "<!-- config-reference:end -->";

/// docs/OPERATIONS.md carries the reference generated from the key table.
/// `BLESS_OPERATIONS_MD=1 cargo test -p tern-engine --test ops_config`
/// rewrites the block after a key changed.
#[test]
fn operations_md_reference_matches_the_key_table() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/OPERATIONS.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let start = doc.find(DOCS_BEGIN).expect("begin marker") + DOCS_BEGIN.len();
    let end = doc.find(DOCS_END).expect("end marker");
    let generated = config::reference_markdown();
    if std::env::var_os("BLESS_OPERATIONS_MD").is_some() {
        let mut new = doc.clone();
        new.replace_range(start..end, &generated);
        std::fs::write(&path, new).unwrap();
        return;
    }
    assert_eq!(
        &doc[start..end],
        generated,
        "docs/OPERATIONS.md config reference is stale; rerun with BLESS_OPERATIONS_MD=1"
    );
    for spec in KEYS {
        assert!(
            doc.contains(&format!("`{}`", spec.key)),
            "{} not documented",
            spec.key
        );
        assert!(
            doc.contains(&spec.env_var()),
            "{} not documented",
            spec.env_var()
        );
    }
}
