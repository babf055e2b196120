//! What tern-chat prints for each event. Pure functions of their input, so
//! the exact text is unit-tested.

use tern_client::{display_user_id, DropReason, Event, MessageBody, ReceiptKind};

/// The line (or lines) to print for an event; `None` for events a person
/// does not need to see (HelloOk, Pong).
pub(crate) fn format_event(event: &Event) -> Option<String> {
    let line = match event {
        Event::Message {
            from,
            sent_at_ms,
            body,
            ..
        } => format!(
            "[{}] {}: {}",
            format_clock_utc(*sent_at_ms),
            display_user_id(*from),
            format_body(body)
        ),
        Event::Receipt {
            kind,
            peer,
            client_msg_id,
            ..
        } => match kind {
            ReceiptKind::Delivered => format!(
                "✓✓ delivered to {} (message {client_msg_id})",
                display_user_id(*peer)
            ),
            ReceiptKind::Read => format!(
                "✓✓ read by {} (message {client_msg_id})",
                display_user_id(*peer)
            ),
            other => format!(
                "receipt {other:?} from {} (message {client_msg_id})",
                display_user_id(*peer)
            ),
        },
        Event::Acked { server_msg_id, .. } => format!("✓ sent (server id {server_msg_id})"),
        Event::LoggedIn {
            user_id, queued, ..
        } => format!(
            "logged in as {} ({queued} waiting)",
            display_user_id(*user_id)
        ),
        Event::LoginFailed { code, message, .. } => {
            format!("login refused: {code}: {}", sanitize(message))
        }
        Event::PinSent {
            phone,
            pin_len,
            expires_in_s,
        } => format!(
            "PIN sent to {} ({pin_len} digits, expires in {expires_in_s} s)",
            sanitize(phone)
        ),
        Event::Registered {
            user_id,
            generation,
            ..
        } => format!(
            "registered as {} (device generation {generation})",
            display_user_id(*user_id)
        ),
        Event::ServerError {
            code,
            message,
            client_msg_id,
            fatal,
        } => {
            let mut line = format!("server error {code}: {}", sanitize(message));
            if *client_msg_id != 0 {
                line.push_str(&format!(" (message {client_msg_id})"));
            }
            if *fatal {
                line.push_str("; the server is closing the connection");
            }
            line
        }
        Event::Dropped {
            client_msg_id,
            reason,
        } => match reason {
            DropReason::TooLargeForServer { len, max } => format!(
                "message {client_msg_id} not sent: {len} bytes is more than the server's {max}"
            ),
            other => format!("message {client_msg_id} not sent: {other:?}"),
        },
        Event::Kicked { reason, message } => {
            format!("kicked by the server ({reason:?}): {}", sanitize(message))
        }
        Event::HelloOk { .. } | Event::Pong { .. } => return None,
        other => format!("{other:?}"),
    };
    Some(line)
}

/// A message body on one logical line; continuation lines are indented.
pub(crate) fn format_body(body: &MessageBody) -> String {
    match body {
        MessageBody::Text(text) => sanitize(text),
        MessageBody::Media(m) => {
            let mut s = format!("[{} {}]", sanitize(&m.mime), format_size(m.size));
            if !m.caption.is_empty() {
                s.push(' ');
                s.push_str(&sanitize(&m.caption));
            }
            s.push_str(" <");
            s.push_str(&sanitize(&m.url));
            s.push('>');
            s
        }
    }
}

/// Text from the network, made safe for a terminal: control characters
/// (escape sequences could rewrite the screen) become U+FFFD, and a newline
/// becomes a newline plus indentation.
pub(crate) fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\n    "),
            '\t' => out.push(' '),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// `HH:MM:SSZ` (UTC) for milliseconds since the Unix epoch.
pub(crate) fn format_clock_utc(ms: u64) -> String {
    let secs = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}Z",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

/// Bytes for people: `812 B`, `12.1 KiB`, `3.0 MiB`, `1.5 GiB`.
pub(crate) fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = "KiB";
    for next in UNITS.iter().skip(1) {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{value:.1} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_client::{ErrorCode, KickReason, MediaRef};

    #[test]
    fn messages_show_time_sender_and_text() {
        // 2023-11-14 22:13:20.042 UTC
        let event = Event::Message {
            id: 1,
            from: 15_551_234_567,
            client_msg_id: 9,
            sent_at_ms: 1_700_000_000_042,
            body: MessageBody::Text("hello\nsecond line".into()),
        };
        assert_eq!(
            format_event(&event).unwrap(),
            "[22:13:20Z] +15551234567: hello\n    second line"
        );
    }

    #[test]
    fn media_shows_type_size_caption_and_link() {
        let body = MessageBody::Media(MediaRef {
            url: "https://m.example/a".into(),
            mime: "image/png".into(),
            size: 12_400,
            sha256: [0; 32],
            thumbnail_b64: String::new(),
            caption: "cat".into(),
        });
        assert_eq!(
            format_body(&body),
            "[image/png 12.1 KiB] cat <https://m.example/a>"
        );
    }

    #[test]
    fn acks_and_receipts_use_check_marks() {
        assert_eq!(
            format_event(&Event::Acked {
                client_msg_id: 5,
                server_msg_id: 1234,
                timestamp_ms: 0
            })
            .unwrap(),
            "✓ sent (server id 1234)"
        );
        let receipt = |kind| Event::Receipt {
            id: 1,
            kind,
            peer: 15_551_234_567,
            client_msg_id: 5,
            at_ms: 0,
        };
        assert_eq!(
            format_event(&receipt(ReceiptKind::Delivered)).unwrap(),
            "✓✓ delivered to +15551234567 (message 5)"
        );
        assert_eq!(
            format_event(&receipt(ReceiptKind::Read)).unwrap(),
            "✓✓ read by +15551234567 (message 5)"
        );
    }

    #[test]
    fn errors_and_kicks_are_explained() {
        assert_eq!(
            format_event(&Event::ServerError {
                code: ErrorCode::UnknownRecipient,
                message: "no such user".into(),
                client_msg_id: 7,
                fatal: true
            })
            .unwrap(),
            "server error UnknownRecipient: no such user (message 7); \
             the server is closing the connection"
        );
        assert_eq!(
            format_event(&Event::Kicked {
                reason: KickReason::DeviceReplaced,
                message: "new phone".into()
            })
            .unwrap(),
            "kicked by the server (DeviceReplaced): new phone"
        );
        assert_eq!(format_event(&Event::Pong { nonce: 1 }), None);
    }

    #[test]
    fn terminal_escapes_are_neutralised() {
        assert_eq!(sanitize("a\x1b[2Jb\tc\r"), "a\u{FFFD}[2Jb c\u{FFFD}");
    }

    #[test]
    fn clock_and_sizes() {
        assert_eq!(format_clock_utc(0), "00:00:00Z");
        assert_eq!(format_clock_utc(86_399_999), "23:59:59Z");
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(1024), "1.0 KiB");
        assert_eq!(format_size(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(format_size(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
    }
}
