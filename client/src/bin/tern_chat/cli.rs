//! Command-line arguments (clap) and what they resolve to.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tern_client::{parse_recipient, CertFingerprint, DriverConfig, Phone, Trust, DEFAULT_SERVER};

/// Where the device key is kept unless `--key-file` says otherwise.
pub(crate) const KEY_FILE_DEFAULT: &str = "./tern-device.key";

/// Chat over a Tern server from the terminal.
///
/// Register once (request-pin, then verify), then send, listen, or chat.
/// Run `chat` in two terminals with two key files to talk to yourself.
#[derive(Debug, Parser)]
#[command(name = "tern-chat", version)]
pub(crate) struct Cli {
    /// Server address.
    #[arg(
        long,
        global = true,
        env = "TERN_SERVER",
        default_value = DEFAULT_SERVER,
        value_name = "HOST:PORT"
    )]
    pub(crate) server: String,

    /// Name to verify in the server certificate (default: the HOST part of
    /// --server).
    #[arg(long, global = true, value_name = "NAME")]
    pub(crate) server_name: Option<String>,

    /// Trust the server certificate(s) in this PEM file (a CA, or the
    /// server's own self-signed certificate).
    #[arg(long, global = true, value_name = "PATH",
          conflicts_with_all = ["pin_sha256", "insecure_plaintext"])]
    pub(crate) ca_cert: Option<PathBuf>,

    /// Trust exactly the server certificate with this SHA-256 fingerprint
    /// (64 hex digits, colons allowed).
    #[arg(long, global = true, value_name = "HEX", value_parser = parse_pin,
          conflicts_with = "insecure_plaintext")]
    pub(crate) pin_sha256: Option<CertFingerprint>,

    /// Talk plain TCP without TLS: anyone on the network can read and forge
    /// the traffic. For local testing only.
    #[arg(long, global = true)]
    pub(crate) insecure_plaintext: bool,

    /// The device key file (user id and key, mode 0600).
    #[arg(long, global = true, env = "TERN_KEY_FILE", default_value = KEY_FILE_DEFAULT,
          value_name = "PATH")]
    pub(crate) key_file: PathBuf,

    /// How long to wait for each server answer.
    #[arg(long, global = true, default_value_t = 10, value_name = "SECONDS")]
    pub(crate) timeout_s: u64,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand, PartialEq, Eq)]
pub(crate) enum Command {
    /// Ask the server to text a registration PIN to PHONE.
    RequestPin {
        /// The phone number, E.164 (e.g. +15551234567).
        #[arg(long, value_parser = parse_phone)]
        phone: Phone,
    },
    /// Register this device with the PIN received by SMS; writes the key
    /// file.
    Verify {
        /// The phone number the PIN was sent to.
        #[arg(long, value_parser = parse_phone)]
        phone: Phone,
        /// The PIN from the SMS.
        #[arg(long)]
        pin: String,
    },
    /// Send one text message and wait until the server has it.
    Send {
        /// Recipient: phone number (+15551234567) or user id.
        #[arg(long, value_parser = parse_to)]
        to: u64,
        /// The message (several words are joined with spaces).
        #[arg(required = true, num_args = 1.., trailing_var_arg = true)]
        text: Vec<String>,
    },
    /// Print incoming messages and receipts until Ctrl-C.
    Listen {
        /// Send a read receipt for every message shown.
        #[arg(long)]
        mark_read: bool,
    },
    /// Chat with one person: lines typed are sent; incoming messages and
    /// receipts are printed. Ends at end of input (Ctrl-D) once everything
    /// sent is acknowledged.
    Chat {
        /// The other person: phone number or user id.
        #[arg(long, value_parser = parse_to)]
        to: u64,
    },
}

fn parse_phone(s: &str) -> Result<Phone, String> {
    Phone::parse(s).map_err(|e| e.to_string())
}

fn parse_to(s: &str) -> Result<u64, String> {
    parse_recipient(s).map_err(|e| e.to_string())
}

fn parse_pin(s: &str) -> Result<CertFingerprint, String> {
    CertFingerprint::parse(s).map_err(|e| e.to_string())
}

impl Cli {
    /// The trust choice; exactly one of the three options must be given.
    pub(crate) fn trust(&self) -> Result<Trust, String> {
        match (&self.ca_cert, &self.pin_sha256, self.insecure_plaintext) {
            (Some(path), None, false) => Ok(Trust::CaFile(path.clone())),
            (None, Some(pin), false) => Ok(Trust::PinnedSha256(*pin)),
            (None, None, true) => Ok(Trust::InsecurePlaintext),
            (None, None, false) => Err(
                "say how to trust the server: --ca-cert PATH, --pin-sha256 HEX, \
                 or (local testing only) --insecure-plaintext"
                    .to_owned(),
            ),
            // clap's conflict rules reject these before we get here.
            _ => Err("give only one of --ca-cert, --pin-sha256, --insecure-plaintext".to_owned()),
        }
    }

    /// How to connect.
    pub(crate) fn driver_config(&self) -> Result<DriverConfig, String> {
        let mut config = DriverConfig::new(self.server.clone(), self.trust()?);
        config.server_name.clone_from(&self.server_name);
        config.session.client_name = concat!("tern-chat/", env!("CARGO_PKG_VERSION")).to_owned();
        Ok(config)
    }

    /// The wait for each server answer.
    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_s.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    const PIN_HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tern-chat").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_and_send_with_words() {
        let cli = parse(&[
            "--pin-sha256",
            PIN_HEX,
            "send",
            "--to",
            "+15551234567",
            "hi",
            "there",
        ])
        .unwrap();
        assert_eq!(cli.server, "127.0.0.1:7443");
        assert_eq!(cli.key_file, PathBuf::from("./tern-device.key"));
        assert_eq!(
            cli.command,
            Command::Send {
                to: 15_551_234_567,
                text: vec!["hi".into(), "there".into()]
            }
        );
        assert!(matches!(cli.trust(), Ok(Trust::PinnedSha256(_))));
    }

    #[test]
    fn global_options_work_after_the_subcommand() {
        let cli = parse(&[
            "listen",
            "--mark-read",
            "--server",
            "chat.example:9000",
            "--ca-cert",
            "/etc/tern/ca.pem",
            "--key-file",
            "/tmp/k",
        ])
        .unwrap();
        assert_eq!(cli.command, Command::Listen { mark_read: true });
        assert_eq!(cli.server, "chat.example:9000");
        assert_eq!(cli.trust(), Ok(Trust::CaFile("/etc/tern/ca.pem".into())));
        let config = cli.driver_config().unwrap();
        assert_eq!(config.server, "chat.example:9000");
        assert!(config.session.client_name.starts_with("tern-chat/"));
    }

    #[test]
    fn phones_are_validated_and_to_takes_ids() {
        let cli = parse(&[
            "--insecure-plaintext",
            "verify",
            "--phone",
            "+491701234567",
            "--pin",
            "0042",
        ])
        .unwrap();
        assert_eq!(
            cli.command,
            Command::Verify {
                phone: Phone::parse("+491701234567").unwrap(),
                pin: "0042".into()
            }
        );
        assert!(parse(&["request-pin", "--phone", "5551234"]).is_err());
        assert!(parse(&["request-pin", "--phone", "+1-555-CALL-NOW"]).is_err());
        let cli = parse(&["chat", "--to", "15551234567"]).unwrap();
        assert_eq!(cli.command, Command::Chat { to: 15_551_234_567 });
        assert!(parse(&["chat", "--to", "bob"]).is_err());
        assert!(parse(&["send", "--to", "1"]).is_err(), "text is required");
    }

    #[test]
    fn trust_is_required_and_exclusive() {
        let cli = parse(&["listen"]).unwrap();
        assert!(cli.trust().unwrap_err().contains("--ca-cert"));
        assert!(parse(&["--ca-cert", "a.pem", "--insecure-plaintext", "listen"]).is_err());
        assert!(parse(&["--ca-cert", "a.pem", "--pin-sha256", PIN_HEX, "listen"]).is_err());
        assert!(parse(&["--pin-sha256", PIN_HEX, "--insecure-plaintext", "listen"]).is_err());
        assert!(
            parse(&["--pin-sha256", "abcd", "listen"]).is_err(),
            "short pin"
        );
        let colons = PIN_HEX
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        let cli = parse(&["--pin-sha256", &colons, "listen"]).unwrap();
        assert_eq!(cli.pin_sha256.unwrap().to_string(), PIN_HEX);
    }
}
