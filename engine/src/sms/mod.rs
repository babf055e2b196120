//! The SMS gateway boundary: how a registration PIN leaves the server.
//!
//! Two real implementations:
//! - [`OutboxGateway`] (embedded default): appends one JSON line per SMS to
//!   `<data_dir>/sms-outbox.jsonl` and logs it. For development, tests and
//!   the load generator, which read PINs back with [`latest_pin_for`].
//! - [`HttpGateway`]: POSTs `{"to", "text"}` as JSON to an operator's SMS
//!   API over http:// or https://.
//!
//! Calls are **blocking** (file I/O, network). The runtime runs them on a
//! blocking thread pool, never on a shard's executor thread.

mod http;
mod outbox;

use std::fmt;
use std::path::PathBuf;

pub use http::{HttpGateway, HttpGatewayConfig, DEFAULT_TIMEOUT_MS, MAX_RESPONSE_BODY_BYTES};
pub use outbox::{latest_pin_for, read_outbox, OutboxEntry, OutboxGateway, OUTBOX_FILE_NAME};

/// One SMS carrying a registration PIN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmsMessage {
    /// Destination number in E.164 form, e.g. `+15551234567`.
    pub phone: String,
    /// The full text sent to the phone.
    pub text: String,
    /// The PIN contained in `text` (kept apart so dev gateways can record it).
    pub pin: String,
}

impl SmsMessage {
    /// The standard PIN message: `Your Tern code is 123456. It expires in 10 minutes.`
    pub fn pin_code(phone: &str, pin: &str, expires_in_minutes: u64) -> Self {
        let unit = if expires_in_minutes == 1 {
            "minute"
        } else {
            "minutes"
        };
        Self {
            phone: phone.to_owned(),
            text: format!("Your Tern code is {pin}. It expires in {expires_in_minutes} {unit}."),
            pin: pin.to_owned(),
        }
    }
}

/// Sends registration PINs. Implementations block; see the module docs.
pub trait SmsGateway: Send + Sync + 'static {
    /// Sends one SMS. Returns once the gateway has accepted it.
    fn send_pin(&self, msg: &SmsMessage) -> Result<(), SmsError>;

    /// A short stable name for logs and metrics (`"outbox"`, `"http"`).
    fn name(&self) -> &'static str;
}

/// Why an SMS could not be handed to its gateway.
#[derive(Debug)]
#[non_exhaustive]
pub enum SmsError {
    /// The HTTP gateway did not answer within its configured timeout.
    Timeout,
    /// The HTTP gateway answered with a non-2xx status.
    Status(u16),
    /// Connecting to or talking with the HTTP gateway failed (refused, TLS,
    /// malformed response, ...). The string is a human-readable cause.
    Transport(String),
    /// Appending to the outbox file failed.
    Outbox {
        /// The outbox file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The gateway configuration is unusable (e.g. a URL that is not
    /// http:// or https://).
    Config(String),
}

impl fmt::Display for SmsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => write!(f, "SMS gateway timed out"),
            Self::Status(code) => write!(f, "SMS gateway answered HTTP status {code}"),
            Self::Transport(why) => write!(f, "SMS gateway transport error: {why}"),
            Self::Outbox { path, source } => {
                write!(
                    f,
                    "cannot append to SMS outbox {}: {source}",
                    path.display()
                )
            }
            Self::Config(why) => write!(f, "bad SMS gateway configuration: {why}"),
        }
    }
}

impl std::error::Error for SmsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Outbox { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_code_text() {
        let m = SmsMessage::pin_code("+15550001111", "123456", 10);
        assert_eq!(
            m.text,
            "Your Tern code is 123456. It expires in 10 minutes."
        );
        assert_eq!(m.pin, "123456");
        assert_eq!(m.phone, "+15550001111");
        let one = SmsMessage::pin_code("+1", "42", 1);
        assert_eq!(one.text, "Your Tern code is 42. It expires in 1 minute.");
    }

    #[test]
    fn errors_display_and_source() {
        use std::error::Error as _;
        assert_eq!(
            SmsError::Status(503).to_string(),
            "SMS gateway answered HTTP status 503"
        );
        assert_eq!(SmsError::Timeout.to_string(), "SMS gateway timed out");
        let e = SmsError::Outbox {
            path: PathBuf::from("/x/sms-outbox.jsonl"),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        assert!(e.to_string().contains("/x/sms-outbox.jsonl"));
        assert!(e.source().is_some());
        assert!(SmsError::Transport("refused".into()).source().is_none());
    }
}
