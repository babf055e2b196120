//! HTTP SMS gateway: POSTs `{"to": phone, "text": text}` as JSON to a URL.
//!
//! Blocking (ureq 3), with one overall deadline per SMS (`timeout_ms`, covering
//! connect, TLS, sending and reading the answer), no redirects, and a bounded
//! read of the response body. Statuses are mapped here rather than by ureq so
//! every non-2xx (including 3xx) is an [`SmsError::Status`].
//! The PIN is never logged by this gateway.
//!
//! https:// gateways are verified against the Mozilla roots bundled with ureq
//! (webpki-roots), not the system store. Proxies follow ureq's defaults:
//! `ALL_PROXY`/`HTTPS_PROXY`/`HTTP_PROXY` and `NO_PROXY` from the environment.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::{SmsError, SmsGateway, SmsMessage};

/// Default overall deadline of one SMS POST.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;

/// At most this many bytes of a gateway's response body are read (for the
/// log line on errors; a 2xx body is read only to free the connection).
pub const MAX_RESPONSE_BODY_BYTES: u64 = 4 * 1024;

/// Configuration of an [`HttpGateway`].
#[derive(Clone)]
pub struct HttpGatewayConfig {
    /// `http://` or `https://` URL the JSON is POSTed to.
    pub url: String,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub bearer_token: Option<String>,
    /// Overall deadline of one POST, milliseconds. Must be > 0.
    pub timeout_ms: u64,
}

impl HttpGatewayConfig {
    /// A config for `url` with no token and the default timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            bearer_token: None,
            timeout_ms: DEFAULT_TIMEOUT_MS,
        }
    }
}

impl fmt::Debug for HttpGatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpGatewayConfig")
            .field("url", &self.url)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// Sends PIN SMS through an HTTP API.
pub struct HttpGateway {
    agent: ureq::Agent,
    url: String,
    authorization: Option<String>,
    timeout_ms: u64,
}

impl fmt::Debug for HttpGateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpGateway")
            .field("url", &self.url)
            .field(
                "bearer_token",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("timeout_ms", &self.timeout_ms)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Body<'a> {
    to: &'a str,
    text: &'a str,
}

impl HttpGateway {
    /// Checks the config and builds the HTTP agent.
    pub fn new(config: HttpGatewayConfig) -> Result<Self, SmsError> {
        let lower = config.url.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Err(SmsError::Config(format!(
                "SMS gateway URL must start with http:// or https://, got {:?}",
                config.url
            )));
        }
        if config.timeout_ms == 0 {
            return Err(SmsError::Config(
                "SMS gateway timeout_ms must be > 0".into(),
            ));
        }
        if let Some(token) = &config.bearer_token {
            if token.is_empty() || token.chars().any(|c| c.is_ascii_control() || c == ' ') {
                return Err(SmsError::Config(
                    "SMS gateway bearer token must be non-empty, without spaces or control characters"
                        .into(),
                ));
            }
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_millis(config.timeout_ms)))
            // Statuses are mapped by us, so 4xx/5xx bodies can be logged.
            .http_status_as_error(false)
            // A POST is never redirected; a 3xx is a gateway misconfiguration.
            .max_redirects(0)
            .max_redirects_will_error(false)
            .user_agent("tern-sms")
            .build()
            .into();
        Ok(Self {
            agent,
            url: config.url,
            authorization: config.bearer_token.map(|t| format!("Bearer {t}")),
            timeout_ms: config.timeout_ms,
        })
    }

    /// The URL SMS are POSTed to.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn post(&self, msg: &SmsMessage) -> Result<(), SmsError> {
        let body = serde_json::to_vec(&Body {
            to: &msg.phone,
            text: &msg.text,
        })
        .map_err(|e| SmsError::Transport(format!("encoding request: {e}")))?;
        let mut req = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json");
        if let Some(auth) = &self.authorization {
            req = req.header("Authorization", auth);
        }
        let mut resp = req.send(&body[..]).map_err(map_ureq_error)?;
        let status = resp.status().as_u16();
        // Bounded read; an over-long or failing body only matters for the log.
        let answer = resp
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BODY_BYTES)
            .read_to_vec()
            .unwrap_or_default();
        if (200..300).contains(&status) {
            return Ok(());
        }
        tracing::warn!(
            phone = %msg.phone,
            url = %self.url,
            status,
            body = %String::from_utf8_lossy(&answer),
            "SMS gateway rejected PIN SMS"
        );
        Err(SmsError::Status(status))
    }
}

fn map_ureq_error(e: ureq::Error) -> SmsError {
    match e {
        ureq::Error::Timeout(_) => SmsError::Timeout,
        ureq::Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) =>
        {
            SmsError::Timeout
        }
        ureq::Error::StatusCode(code) => SmsError::Status(code),
        other => SmsError::Transport(other.to_string()),
    }
}

impl SmsGateway for HttpGateway {
    fn send_pin(&self, msg: &SmsMessage) -> Result<(), SmsError> {
        let result = self.post(msg);
        match &result {
            Ok(()) => tracing::info!(phone = %msg.phone, url = %self.url, "PIN SMS sent"),
            Err(e) => {
                tracing::warn!(phone = %msg.phone, url = %self.url, error = %e, "PIN SMS failed")
            }
        }
        result
    }

    fn name(&self) -> &'static str {
        "http"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_config() {
        for url in ["ftp://x", "localhost:80/sms", ""] {
            let err = HttpGateway::new(HttpGatewayConfig::new(url)).unwrap_err();
            assert!(matches!(err, SmsError::Config(_)), "{url}: {err:?}");
        }
        let mut cfg = HttpGatewayConfig::new("http://127.0.0.1:1/");
        cfg.timeout_ms = 0;
        assert!(matches!(
            HttpGateway::new(cfg).unwrap_err(),
            SmsError::Config(_)
        ));
        let mut cfg = HttpGatewayConfig::new("https://sms.example/send");
        cfg.bearer_token = Some("a b".into());
        assert!(matches!(
            HttpGateway::new(cfg).unwrap_err(),
            SmsError::Config(_)
        ));
    }

    #[test]
    fn debug_redacts_token() {
        let mut cfg = HttpGatewayConfig::new("HTTPS://sms.example/send");
        cfg.bearer_token = Some("s3cret-token".into());
        assert!(!format!("{cfg:?}").contains("s3cret"));
        let gw = HttpGateway::new(cfg).unwrap();
        assert_eq!(gw.name(), "http");
        assert_eq!(gw.url(), "HTTPS://sms.example/send");
        let dbg = format!("{gw:?}");
        assert!(!dbg.contains("s3cret"), "{dbg}");
        assert!(dbg.contains("<redacted>"));
    }

    #[test]
    fn timeout_io_errors_map_to_timeout() {
        let e = ureq::Error::Io(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert!(matches!(map_ureq_error(e), SmsError::Timeout));
        let e = ureq::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(matches!(map_ureq_error(e), SmsError::Transport(_)));
        assert!(matches!(
            map_ureq_error(ureq::Error::StatusCode(502)),
            SmsError::Status(502)
        ));
    }
}
