//! The subcommands: each connects, does its job, and reports through
//! `output`.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::ops::ControlFlow;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use tern_client::{
    client_msg_id_seed, display_user_id, Client, ClientError, Credentials, Event, Phone,
};

use crate::cli::{Cli, Command};
use crate::output::format_event;

/// First wait before reconnecting; doubles up to the max.
const RECONNECT_BACKOFF_MS_MIN: u64 = 500;
const RECONNECT_BACKOFF_MS_MAX: u64 = 30_000;

/// How often `chat` looks at typed lines while waiting for the network.
const CHAT_POLL: Duration = Duration::from_millis(100);

/// Typed lines buffered between the stdin thread and the network loop.
const CHAT_LINES_BUFFERED_MAX: usize = 64;

/// A failure worth a message and a non-zero exit.
#[derive(Debug)]
pub(crate) struct Failure(pub(crate) String);

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Self(e.to_string())
    }
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Self(e.to_string())
    }
}

pub(crate) fn run(cli: &Cli) -> Result<(), Failure> {
    // Say what is wrong with the options before touching files or network.
    cli.trust()?;
    match &cli.command {
        Command::RequestPin { phone } => request_pin(cli, phone),
        Command::Verify { phone, pin } => verify(cli, phone, pin),
        Command::Send { to, text } => send(cli, *to, &text.join(" ")),
        Command::Listen { mark_read } => listen(cli, *mark_read),
        Command::Chat { to } => chat(cli, *to),
    }
}

fn connect(cli: &Cli) -> Result<Client, Failure> {
    let config = cli.driver_config()?;
    Client::connect(config, client_msg_id_seed(SystemTime::now()))
        .map_err(|e| Failure(format!("cannot connect to {}: {e}", cli.server)))
}

fn load_credentials(cli: &Cli) -> Result<Credentials, Failure> {
    Credentials::load(&cli.key_file).map_err(|e| {
        Failure(format!(
            "cannot read the key file {} ({e}); register first with \
             `tern-chat request-pin` and `tern-chat verify`",
            cli.key_file.display()
        ))
    })
}

/// Connects and logs in with the key file.
fn connect_logged_in(cli: &Cli) -> Result<(Client, Credentials), Failure> {
    let credentials = load_credentials(cli)?;
    let mut client = connect(cli)?;
    let queued = client.login(&credentials, cli.timeout())?;
    eprintln!(
        "logged in as {} ({queued} waiting)",
        display_user_id(credentials.user_id)
    );
    Ok((client, credentials))
}

fn print_event(event: &Event) {
    if let Some(line) = format_event(event) {
        println!("{line}");
        // A person watches this: show it now, not when a buffer fills.
        let _ = std::io::stdout().flush();
    }
}

/// Shows every event already received (and so already acknowledged on
/// close) before the program ends.
fn print_remaining(
    client: &mut Client,
    read_receipt_ids: &mut HashSet<u64>,
) -> Result<(), Failure> {
    while let Some(event) = client.next_event(Duration::ZERO)? {
        if !is_receipt_ack(&event, read_receipt_ids) {
            print_event(&event);
        }
    }
    Ok(())
}

fn request_pin(cli: &Cli, phone: &Phone) -> Result<(), Failure> {
    let mut client = connect(cli)?;
    let sent = client.request_pin(phone.as_str(), cli.timeout())?;
    println!(
        "PIN sent to {phone} ({} digits, expires in {} s). Next: tern-chat verify --phone {phone} --pin PIN",
        sent.pin_len, sent.expires_in_s
    );
    client.close();
    Ok(())
}

fn verify(cli: &Cli, phone: &Phone, pin: &str) -> Result<(), Failure> {
    let mut client = connect(cli)?;
    let credentials = client.verify_pin(phone.as_str(), pin, cli.timeout())?;
    client.close();
    credentials.save(&cli.key_file).map_err(|e| {
        Failure(format!(
            "registered, but the key could not be saved to {}: {e}",
            cli.key_file.display()
        ))
    })?;
    println!(
        "registered as {} (device generation {}); key saved to {}",
        display_user_id(credentials.user_id),
        credentials.generation,
        cli.key_file.display()
    );
    Ok(())
}

fn send(cli: &Cli, to: u64, text: &str) -> Result<(), Failure> {
    let (mut client, _) = connect_logged_in(cli)?;
    let id = client.send_text(to, text)?;
    let deadline = Instant::now() + cli.timeout();
    // Everything that arrives meanwhile is acknowledged to the server, so
    // it is shown rather than silently consumed.
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure(format!(
                "no acknowledgement from the server within {} s; the message may or may not have arrived",
                cli.timeout().as_secs()
            )));
        }
        let Some(event) = client.next_event(left)? else {
            continue;
        };
        print_event(&event);
        match event {
            Event::Acked { client_msg_id, .. } if client_msg_id == id => break,
            Event::ServerError {
                client_msg_id,
                code,
                message,
                ..
            } if client_msg_id == id && !client.session().is_pending(id) => {
                return Err(Failure(format!("not sent: {code}: {message}")));
            }
            Event::Kicked { .. } => return Err(Failure("kicked by the server".to_owned())),
            _ => {}
        }
    }
    print_remaining(&mut client, &mut HashSet::new())?;
    client.close();
    Ok(())
}

/// Waits (doubling) and reconnects until it works; the session logs in by
/// itself and re-sends pending operations.
fn reconnect(client: &mut Client, cause: &ClientError) {
    let mut backoff_ms = RECONNECT_BACKOFF_MS_MIN;
    eprintln!("connection lost ({cause}); reconnecting");
    loop {
        std::thread::sleep(Duration::from_millis(backoff_ms));
        match client.reconnect() {
            Ok(()) => return,
            Err(e) => {
                eprintln!("reconnect failed ({e}); retrying in {} ms", backoff_ms * 2);
                backoff_ms = (backoff_ms * 2).min(RECONNECT_BACKOFF_MS_MAX);
            }
        }
    }
}

/// Errors after which reconnecting can help.
fn is_connection_loss(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::ConnectionClosed
            | ClientError::NotConnected
            | ClientError::Io(_)
            | ClientError::Tls(_)
            | ClientError::MalformedFrame(_)
            | ClientError::Protocol(_)
    )
}

/// What ends a long-running session for good.
fn fatal_event(event: &Event) -> Option<Failure> {
    match event {
        Event::Kicked { .. } => Some(Failure("kicked by the server".to_owned())),
        Event::LoginFailed { .. } => Some(Failure("login refused".to_owned())),
        _ => None,
    }
}

/// True for the ack of one of our own read receipts: not worth a line.
fn is_receipt_ack(event: &Event, read_receipt_ids: &mut HashSet<u64>) -> bool {
    match event {
        Event::Acked { client_msg_id, .. } => read_receipt_ids.remove(client_msg_id),
        _ => false,
    }
}

fn listen(cli: &Cli, mark_read: bool) -> Result<(), Failure> {
    let (mut client, _) = connect_logged_in(cli)?;
    eprintln!("listening; Ctrl-C to stop");
    let mut read_receipt_ids = HashSet::new();
    loop {
        let mut fatal = None;
        let result = client.run(|session, event| {
            if is_receipt_ack(&event, &mut read_receipt_ids) {
                return ControlFlow::Continue(());
            }
            print_event(&event);
            if let Some(failure) = fatal_event(&event) {
                fatal = Some(failure);
                return ControlFlow::Break(());
            }
            if let (
                true,
                Event::Message {
                    from,
                    client_msg_id,
                    ..
                },
            ) = (mark_read, &event)
            {
                match session.mark_read(*from, *client_msg_id, Instant::now()) {
                    Ok(id) => {
                        read_receipt_ids.insert(id);
                    }
                    Err(e) => eprintln!("read receipt not sent: {e}"),
                }
            }
            ControlFlow::Continue(())
        });
        if let Some(failure) = fatal {
            return Err(failure);
        }
        match result {
            Ok(()) => return Ok(()),
            Err(e) if is_connection_loss(&e) => reconnect(&mut client, &e),
            Err(e) => return Err(e.into()),
        }
    }
}

fn chat(cli: &Cli, peer: u64) -> Result<(), Failure> {
    let (mut client, _) = connect_logged_in(cli)?;
    eprintln!(
        "chatting with {}; type a line and press Enter to send, Ctrl-D to end",
        display_user_id(peer)
    );
    let (lines_tx, lines_rx) = mpsc::sync_channel::<String>(CHAT_LINES_BUFFERED_MAX);
    // Reads stdin so the network loop never blocks on the keyboard. It ends
    // at end of input, or when the network loop is gone.
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut read_receipt_ids = HashSet::new();
    let mut input_done = false;
    let mut input_done_at = None;
    loop {
        while !input_done {
            match lines_rx.try_recv() {
                Ok(line) => {
                    let text = line.trim_end();
                    if !text.is_empty() {
                        client.session_mut().send_text(peer, text, Instant::now())?;
                    }
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    input_done = true;
                    input_done_at = Some(Instant::now());
                }
            }
        }
        if input_done && client.session().pending_len() == 0 {
            print_remaining(&mut client, &mut read_receipt_ids)?;
            client.close();
            return Ok(());
        }
        if let Some(at) = input_done_at {
            if at.elapsed() > cli.timeout() {
                return Err(Failure(format!(
                    "{} message(s) not acknowledged by the server",
                    client.session().pending_len()
                )));
            }
        }
        match client.next_event(CHAT_POLL) {
            Ok(Some(event)) => {
                if is_receipt_ack(&event, &mut read_receipt_ids) {
                    continue;
                }
                print_event(&event);
                if let Some(failure) = fatal_event(&event) {
                    return Err(failure);
                }
                // The person sees messages from the peer as they arrive.
                if let Event::Message {
                    from,
                    client_msg_id,
                    ..
                } = event
                {
                    if from == peer {
                        read_receipt_ids.insert(client.mark_read(from, client_msg_id)?);
                    }
                }
            }
            Ok(None) => {}
            Err(e) if is_connection_loss(&e) => reconnect(&mut client, &e),
            Err(e) => return Err(e.into()),
        }
    }
}
