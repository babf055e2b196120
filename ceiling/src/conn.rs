//! Connections: the hello stage (TLS handshake, first frame, pairing) and
//! the pair driver, one glommio task per pair that moves bytes both ways.
//!
//! The driver mirrors the engine's connection driver (engine/src/runtime/
//! conn.rs) so the comparison is about the work, not the plumbing:
//! readiness-based reads into one scratch buffer per core (no read buffer
//! per idle connection), at most [`READS_PER_POLL_MAX`] reads per socket
//! per poll, rustls decrypting in place of the core's parser, output
//! encrypted straight into the peer's socket buffer and written at once.
//! What it leaves out is the point: no FlatBuffers, no session, no inbox,
//! no log, no receipts, no cross-core hop.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::io::{Read, Write};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use rustls::ServerConnection;

use crate::frame::{self, Framer, Hello, HelloBuf, HelloError};
use crate::{Close, Limits, Stats};

/// Socket reads per side per poll before yielding to other tasks (the
/// engine's value).
pub(crate) const READS_PER_POLL_MAX: usize = 8;
/// Scratch buffers shared by every connection of a core (the engine's
/// size: a TLS record is at most ~16 KiB, a larger read batches several).
pub(crate) const SCRATCH_BYTES: usize = 64 * 1024;
/// An output buffer whose capacity grew past this is freed once written,
/// so idle connections stay cheap (the engine's value).
pub(crate) const IDLE_BUFFER_BYTES_MAX: usize = 4 * 1024;
/// How long a refused connection gets to take its refusal frame.
pub(crate) const REFUSAL_FLUSH_MS: u64 = 1_000;

/// Per-core scratch space (one executor thread: one user at a time, and
/// never held across an `await`).
#[derive(Debug)]
pub(crate) struct Scratch {
    read: Box<[u8]>,
    plain: Box<[u8]>,
}

impl Scratch {
    pub(crate) fn new() -> Self {
        Self {
            read: vec![0; SCRATCH_BYTES].into_boxed_slice(),
            plain: vec![0; SCRATCH_BYTES].into_boxed_slice(),
        }
    }
}

/// One core's shared state.
pub(crate) struct Core {
    pub(crate) limits: Limits,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) scratch: RefCell<Scratch>,
    /// Connections that said hello and wait for their peer, by own id.
    pub(crate) waiting: RefCell<HashMap<u64, Waiting>>,
    pub(crate) conns: Rc<Cell<usize>>,
}

/// A connection parked until its peer says hello.
pub(crate) struct Waiting {
    side: Side,
    hello: Hello,
    early: Vec<u8>,
    since: Instant,
}

impl Core {
    /// Drops connections that waited longer than `pair_wait_ms`.
    pub(crate) fn sweep_waiting(&self, now: Instant) {
        let wait = Duration::from_millis(self.limits.pair_wait_ms);
        let mut expired = 0;
        self.waiting.borrow_mut().retain(|_, w| {
            let keep = now.saturating_duration_since(w.since) < wait;
            expired += u64::from(!keep);
            keep
        });
        self.stats.count_n(Close::PairWaitExpired, expired);
    }
}

/// Holds one of the core's connection slots; gives it back when dropped.
struct ConnSlot(Rc<Cell<usize>>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// One connection: socket, TLS session, bytes waiting for the socket.
struct Side {
    stream: TcpStream,
    tls: Option<Box<ServerConnection>>,
    out: Vec<u8>,
    out_pos: usize,
    framer: Framer,
    _slot: ConnSlot,
}

enum Failure {
    /// The client closed (EOF, reset, close_notify).
    Closed,
    Io,
    Tls,
    TooLarge,
    /// Output above the bound: the reader is too slow.
    Slow,
}

/// A reset is the client closing (load generators close with RST to
/// leave no TIME_WAIT behind); anything else is a socket error.
fn read_failure(e: &std::io::Error) -> Failure {
    match e.kind() {
        std::io::ErrorKind::ConnectionReset => Failure::Closed,
        _ => Failure::Io,
    }
}

impl Failure {
    fn close(&self) -> Close {
        match self {
            Self::Closed => Close::ClientClosed,
            Self::Io => Close::Io,
            Self::Tls => Close::Tls,
            Self::TooLarge => Close::FrameTooLarge,
            Self::Slow => Close::SlowReader,
        }
    }
}

impl Side {
    fn pending(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Queues plaintext for this side's socket (encrypting it first).
    fn push_plain(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        let Some(tls) = self.tls.as_mut() else {
            self.out.extend_from_slice(bytes);
            return Ok(());
        };
        // rustls bounds its own buffered output, so encrypt piecewise and
        // move the records out between pieces (as the engine does). A zero
        // write means the session cannot take plaintext any more.
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = tls.writer().write(rest).unwrap_or(0);
            rest = rest.get(n..).unwrap_or_default();
            Self::move_records(tls, &mut self.out);
            if n == 0 {
                return Err(Failure::Tls);
            }
        }
        Ok(())
    }

    fn move_records(tls: &mut ServerConnection, out: &mut Vec<u8>) {
        while tls.wants_write() {
            if tls.write_tls(out).is_err() {
                break;
            }
        }
    }

    /// Writes what the socket takes now; registers for writability when it
    /// is full.
    fn flush(&mut self, cx: &mut Context<'_>) -> Result<(), Failure> {
        while self.out_pos < self.out.len() {
            let pending = self.out.get(self.out_pos..).unwrap_or_default();
            match Pin::new(&mut self.stream).poll_write(cx, pending) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Err(Failure::Io),
                Poll::Ready(Ok(n)) => self.out_pos += n,
                Poll::Pending => return Ok(()),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        if self.out.capacity() > IDLE_BUFFER_BYTES_MAX {
            self.out = Vec::new();
        }
        Ok(())
    }

    /// Decrypts `bytes` read from the socket and hands each plaintext piece
    /// to `sink`. Handshake records rustls wants to send go to `out`.
    fn on_read(
        tls: Option<&mut ServerConnection>,
        out: &mut Vec<u8>,
        bytes: &[u8],
        plain: &mut [u8],
        mut sink: impl FnMut(&[u8]) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        let Some(tls) = tls else {
            return sink(bytes);
        };
        let mut rd = bytes;
        while !rd.is_empty() {
            if tls.read_tls(&mut rd).is_err() {
                return Err(Failure::Tls);
            }
            if let Err(e) = tls.process_new_packets() {
                tracing::debug!(error = %e, "TLS error");
                // Queue the alert; it goes out if the socket takes it.
                Self::move_records(tls, out);
                return Err(Failure::Tls);
            }
            Self::move_records(tls, out);
            loop {
                match tls.reader().read(plain) {
                    Ok(0) => return Err(Failure::Closed),
                    Ok(m) => sink(plain.get(..m).unwrap_or_default())?,
                    Err(_) => break,
                }
            }
        }
        Ok(())
    }

    async fn close(mut self) {
        let _ = self.stream.close().await;
    }
}

/// Serves one accepted connection: hello, then pairing.
pub(crate) async fn serve(core: Rc<Core>, stream: TcpStream) {
    let n = core.conns.get();
    if n >= core.limits.conns_per_core_max {
        core.stats.count(Close::ConnsMax);
        drop(stream);
        return;
    }
    core.conns.set(n + 1);
    let slot = ConnSlot(core.conns.clone());
    core.stats.accepted();
    let _ = stream.set_nodelay(true);
    let tls = match core.tls.as_ref().map(|c| ServerConnection::new(c.clone())) {
        None => None,
        Some(Ok(c)) => Some(Box::new(c)),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "TLS session setup failed");
            core.stats.count(Close::Tls);
            return;
        }
    };
    let mut side = Side {
        stream,
        tls,
        out: Vec::new(),
        out_pos: 0,
        framer: Framer::new(core.limits.frame_bytes_max),
        _slot: slot,
    };
    let mut hb = HelloBuf::default();
    let timeout = Duration::from_millis(core.limits.hello_timeout_ms);
    let got = glommio::timer::timeout(timeout, async {
        Ok(poll_fn(|cx| poll_hello(&core, &mut side, &mut hb, cx)).await)
    })
    .await;
    let hello = match got {
        Ok(Ok(h)) => h,
        Ok(Err(Refusal::Close(f))) => {
            core.stats.count(f.close());
            flush_and_close(side).await;
            return;
        }
        Ok(Err(Refusal::Say(close, why))) => return refuse(&core, side, close, &why).await,
        Err(_) => {
            core.stats.count(Close::HelloTimeout);
            side.close().await;
            return;
        }
    };
    if hello.own == hello.peer {
        return refuse(&core, side, Close::BadHello, "own id equals peer id").await;
    }
    core.stats.hello();
    let early = std::mem::take(&mut hb.early);
    let partner = {
        let mut waiting = core.waiting.borrow_mut();
        match waiting.remove(&hello.peer) {
            Some(w) if w.hello.peer == hello.own => Ok(Some(w)),
            Some(w) => {
                waiting.insert(hello.peer, w);
                Err(format!(
                    "id {} is waiting for another peer, not {}",
                    hello.peer, hello.own
                ))
            }
            None if waiting.contains_key(&hello.own) => {
                Err(format!("id {} is already waiting", hello.own))
            }
            None => {
                waiting.insert(
                    hello.own,
                    Waiting {
                        side,
                        hello,
                        early,
                        since: Instant::now(),
                    },
                );
                return;
            }
        }
    };
    match partner {
        Ok(Some(w)) => run_pair(core, (w.side, w.hello, w.early), (side, hello, early)).await,
        Ok(None) => {}
        Err(why) => refuse(&core, side, Close::IdTaken, &why).await,
    }
}

enum Refusal {
    /// Close without a word (the client left, or TLS failed).
    Close(Failure),
    /// Send a refusal frame with this reason, then close.
    Say(Close, String),
}

fn poll_hello(
    core: &Core,
    side: &mut Side,
    hb: &mut HelloBuf,
    cx: &mut Context<'_>,
) -> Poll<Result<Hello, Refusal>> {
    loop {
        if let Err(f) = side.flush(cx) {
            return Poll::Ready(Err(Refusal::Close(f)));
        }
        match hb.hello() {
            Some(Ok(h)) => return Poll::Ready(Ok(h)),
            Some(Err(e)) => return Poll::Ready(Err(hello_refusal(e))),
            None => {}
        }
        let mut scratch = core.scratch.borrow_mut();
        let Scratch { read, plain } = &mut *scratch;
        let n = match Pin::new(&mut side.stream).poll_read(cx, read) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(Refusal::Close(Failure::Closed))),
            Poll::Ready(Err(e)) => return Poll::Ready(Err(Refusal::Close(read_failure(&e)))),
            Poll::Ready(Ok(n)) => n,
        };
        let bytes = read.get(..n).unwrap_or_default();
        let mut bad = None;
        let fed = Side::on_read(side.tls.as_deref_mut(), &mut side.out, bytes, plain, |p| {
            if bad.is_none() {
                bad = hb.feed(p).err();
            }
            Ok(())
        });
        if let Some(e) = bad {
            return Poll::Ready(Err(hello_refusal(e)));
        }
        if let Err(f) = fed {
            return Poll::Ready(Err(Refusal::Close(f)));
        }
    }
}

fn hello_refusal(e: HelloError) -> Refusal {
    let why = match e {
        HelloError::BadLength(len) => format!(
            "first frame must be a {}-byte hello, got length {len}",
            frame::HELLO_PAYLOAD_BYTES
        ),
        HelloError::BadMagic => "first frame is not a hello (magic TCH1)".to_owned(),
    };
    Refusal::Say(Close::BadHello, why)
}

/// Sends a refusal frame (bounded wait), then closes.
async fn refuse(core: &Core, mut side: Side, close: Close, why: &str) {
    tracing::debug!(reason = why, "connection refused");
    core.stats.count(close);
    // A session still handshaking cannot carry the frame: just close.
    let can_say = side.tls.as_ref().is_none_or(|t| !t.is_handshaking());
    if can_say && side.push_plain(&frame::encode_refused(why)).is_err() {
        side.close().await;
        return;
    }
    flush_and_close(side).await;
}

/// Writes what is queued (an alert, a refusal) for at most
/// [`REFUSAL_FLUSH_MS`], then closes.
async fn flush_and_close(mut side: Side) {
    if side.pending() > 0 {
        let _ = glommio::timer::timeout(Duration::from_millis(REFUSAL_FLUSH_MS), async {
            poll_fn(|cx| match side.flush(cx) {
                Ok(()) if side.pending() > 0 => Poll::Pending,
                _ => Poll::Ready(()),
            })
            .await;
            Ok(())
        })
        .await;
    }
    side.close().await;
}

/// Which side of a pair.
#[derive(Clone, Copy)]
enum Who {
    A,
    B,
}

struct Pair {
    core: Rc<Core>,
    a: Side,
    b: Side,
}

/// Runs a pair until either side ends; then both are closed.
async fn run_pair(core: Rc<Core>, a: (Side, Hello, Vec<u8>), b: (Side, Hello, Vec<u8>)) {
    core.stats.paired();
    let (a, a_hello, a_early) = a;
    let (b, b_hello, b_early) = b;
    let mut pair = Pair { core, a, b };
    let mut started = Ok(());
    for (side, hello) in [(&mut pair.a, a_hello), (&mut pair.b, b_hello)] {
        if started.is_ok() {
            started = side.push_plain(&frame::encode_paired(hello));
        }
    }
    // Bytes that came right behind a hello go to the peer, after the
    // peer's "paired" frame.
    let started = started
        .map_err(|f| (Who::A, f))
        .and_then(|()| forward(&mut pair.a, &mut pair.b, &a_early).map_err(|f| (Who::A, f)))
        .and_then(|()| forward(&mut pair.b, &mut pair.a, &b_early).map_err(|f| (Who::B, f)));
    let (who, failure) = match started {
        Ok(()) => poll_fn(|cx| pair.poll(cx)).await,
        Err(e) => e,
    };
    let Pair { core, a, b } = pair;
    let close = failure.close();
    let hello = match who {
        Who::A => a_hello,
        Who::B => b_hello,
    };
    tracing::debug!(
        id = hello.own,
        peer = hello.peer,
        reason = close.name(),
        "pair ends"
    );
    core.stats.count(close);
    core.stats.count(Close::PartnerClosed);
    core.stats.forwarded(a.framer.frames() + b.framer.frames());
    a.close().await;
    b.close().await;
}

/// Checks `bytes` (the next piece of `from`'s stream) against the frame
/// bound and queues them, verbatim, for `to`.
fn forward(from: &mut Side, to: &mut Side, bytes: &[u8]) -> Result<(), Failure> {
    from.framer.feed(bytes).map_err(|_| Failure::TooLarge)?;
    to.push_plain(bytes)
}

impl Pair {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<(Who, Failure)> {
        let core = self.core.clone();
        let mut scratch = core.scratch.borrow_mut();
        let out_max = core.limits.out_bytes_max;
        let mut again = false;
        for who in [Who::A, Who::B] {
            let (from, to, other) = match who {
                Who::A => (&mut self.a, &mut self.b, Who::B),
                Who::B => (&mut self.b, &mut self.a, Who::A),
            };
            match pump(from, to, &mut scratch, out_max, cx) {
                Ok(more) => again |= more,
                Err((true, f)) => return Poll::Ready((other, f)),
                Err((false, f)) => return Poll::Ready((who, f)),
            }
        }
        // Registers for writability when a socket is full; reads above
        // have already flushed after each batch.
        if let Err(f) = self.a.flush(cx) {
            return Poll::Ready((Who::A, f));
        }
        if let Err(f) = self.b.flush(cx) {
            return Poll::Ready((Who::B, f));
        }
        if again {
            // Fairness: let other pairs run, then continue.
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

/// Reads `from` and forwards to `to` until `from` has nothing more or the
/// read budget is spent (`Ok(true)`: come back). `Err((true, _))` blames
/// `to` (write failure, slow reader), `Err((false, _))` blames `from`.
fn pump(
    from: &mut Side,
    to: &mut Side,
    scratch: &mut Scratch,
    out_max: usize,
    cx: &mut Context<'_>,
) -> Result<bool, (bool, Failure)> {
    let Scratch { read, plain } = scratch;
    for _ in 0..READS_PER_POLL_MAX {
        let n = match Pin::new(&mut from.stream).poll_read(cx, read) {
            Poll::Pending => return Ok(false),
            Poll::Ready(Ok(0)) => return Err((false, Failure::Closed)),
            Poll::Ready(Err(e)) => return Err((false, read_failure(&e))),
            Poll::Ready(Ok(n)) => n,
        };
        let bytes = read.get(..n).unwrap_or_default();
        let Side {
            tls, out, framer, ..
        } = from;
        let mut to_failed = None;
        let fed = Side::on_read(tls.as_deref_mut(), out, bytes, plain, |p| {
            framer.feed(p).map_err(|_| Failure::TooLarge)?;
            if let Err(f) = to.push_plain(p) {
                to_failed = Some(f);
                // Stops the walk; the blame goes to `to` below.
                return Err(Failure::Io);
            }
            Ok(())
        });
        if let Some(f) = to_failed {
            return Err((true, f));
        }
        fed.map_err(|f| (false, f))?;
        to.flush(cx).map_err(|f| (true, f))?;
        if to.pending() > out_max {
            return Err((true, Failure::Slow));
        }
    }
    Ok(true)
}
