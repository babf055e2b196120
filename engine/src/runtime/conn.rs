//! The connection driver: one glommio task per connection that moves bytes
//! between its socket, rustls and the shard core.
//!
//! An idle connection owns no buffer at all:
//!
//! - Reads are readiness-based (glommio's non-buffered `poll_read` tries a
//!   non-blocking `recv` and otherwise waits on POLLIN without holding a
//!   buffer): every connection on a shard reads into the shard's one
//!   scratch buffer, and TLS records are decrypted right there (rustls's
//!   unbuffered API, `tls::session`); only an incomplete record is copied
//!   out, and freed once it completes.
//! - Output is taken from the core only when the socket has drained the
//!   previous batch, so back-pressure accumulates in the core, which
//!   enforces the outbound bound. The core's buffer leaves with its bytes
//!   (the core starts a new one for the next batch), is encrypted into the
//!   shard's staging buffer and written from there; only what the socket
//!   does not take at once is copied into a buffer of the connection's
//!   own, freed once written.

use std::cell::RefCell;
use std::future::poll_fn;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use tern_core::conn::{ConnId, MigrationState};

use super::mesh::Adopt;
use super::shard::{drain_actions, RtRef};
use crate::clock::now_ms;
use crate::sms::SmsGateway;
use crate::tls::session::TlsSession;

/// Socket reads per poll before yielding to other connections.
const READS_PER_POLL_MAX: usize = 8;

/// The shard's read buffer. 64 KiB: a TLS record is at most ~16 KiB, and
/// a larger read batches several.
pub(crate) const SCRATCH_BYTES: usize = 64 * 1024;

/// Capacity the shard's staging buffer keeps between batches; a larger
/// one (a slow reader's backlog of up to the outbound bound) is freed.
const STAGING_KEEP_BYTES_MAX: usize = 256 * 1024;

/// Buffers shared by every connection of a shard (one executor thread, so
/// one user at a time; neither is held across an await).
#[derive(Debug)]
pub(crate) struct Scratch {
    read: Box<[u8]>,
    /// Bytes for a socket are staged here: what the socket takes at once
    /// never needs a buffer of the connection's own.
    staging: Vec<u8>,
}

impl Scratch {
    pub(crate) fn new() -> Self {
        Self {
            read: vec![0; SCRATCH_BYTES].into_boxed_slice(),
            staging: Vec::new(),
        }
    }
}

enum End {
    Closed,
    Migrate(u16, MigrationState),
}

/// What taking output from the core led to.
enum Taken {
    /// The core had nothing.
    Nothing,
    /// Bytes are written, or queued in `Driver::out`.
    Progress,
    /// The socket is full; `Driver::out` holds the rest.
    Pending,
    /// The socket failed.
    Closed,
}

struct Driver {
    rt: RtRef,
    sms: Arc<dyn SmsGateway>,
    scratch: Rc<RefCell<Scratch>>,
    id: ConnId,
    stream: TcpStream,
    tls: Option<Box<TlsSession>>,
    /// Bytes for the socket that it has not taken yet (ciphertext, or
    /// plaintext without TLS). Empty and unallocated otherwise.
    out: Vec<u8>,
    out_pos: usize,
    read_done: bool,
    close_notify_sent: bool,
    /// The TLS session failed or refused plaintext: flush what is
    /// encrypted (an alert), then close without taking more output.
    broken: bool,
}

/// Drives connection `id` until it closes or moves to another shard.
pub(crate) async fn run(
    rt: RtRef,
    sms: Arc<dyn SmsGateway>,
    scratch: Rc<RefCell<Scratch>>,
    id: ConnId,
    stream: TcpStream,
    tls: Option<Box<TlsSession>>,
) {
    let mut d = Driver {
        rt,
        sms,
        scratch,
        id,
        stream,
        tls,
        out: Vec::new(),
        out_pos: 0,
        read_done: false,
        close_notify_sent: false,
        broken: false,
    };
    let end = poll_fn(|cx| d.poll(cx)).await;
    match end {
        End::Closed => {
            let _ = d.stream.close().await;
            let mut r = d.rt.borrow_mut();
            r.core.handle_closed(d.id, now_ms());
            r.slots.remove(&d.id);
            drop(r);
            drain_actions(&d.rt, &d.sms);
        }
        End::Migrate(to, state) => d.ship(to, state),
    }
}

impl Driver {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        {
            let mut r = self.rt.borrow_mut();
            let slot = r.slot(self.id);
            if !slot.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                slot.waker = Some(cx.waker().clone());
            }
        }
        if let Some(end) = self.poll_reads(cx) {
            return Poll::Ready(end);
        }
        if let Some(end) = self.poll_writes(cx) {
            return Poll::Ready(end);
        }
        Poll::Pending
    }

    /// True while the core wants this connection read.
    fn reading(&self) -> bool {
        if self.read_done || self.broken {
            return false;
        }
        let r = self.rt.borrow();
        let slot_busy = r
            .slots
            .get(&self.id)
            .is_some_and(|s| s.close || s.migrate.is_some());
        !slot_busy && !r.core.is_closing(self.id)
    }

    fn poll_reads(&mut self, cx: &mut Context<'_>) -> Option<End> {
        for _ in 0..READS_PER_POLL_MAX {
            if !self.reading() {
                return None;
            }
            let scratch = self.scratch.clone();
            let mut s = scratch.borrow_mut();
            match Pin::new(&mut self.stream).poll_read(cx, &mut s.read) {
                Poll::Pending => return None,
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    // Peer gone: nothing more to write either.
                    self.read_done = true;
                    return Some(End::Closed);
                }
                Poll::Ready(Ok(n)) => {
                    let bytes = s.read.get_mut(..n).unwrap_or_default();
                    self.on_read(bytes);
                }
            }
        }
        // Fairness: let other connections run, then continue.
        cx.waker().wake_by_ref();
        None
    }

    /// Decrypts (in place) and hands plaintext to the core. On a TLS
    /// failure the alert, if any, is queued for writing and the connection
    /// closes after it.
    fn on_read(&mut self, bytes: &mut [u8]) {
        let Some(tls) = self.tls.as_mut() else {
            Self::feed_into(&self.rt, &self.sms, self.id, bytes);
            return;
        };
        let (rt, sms, id) = (&self.rt, &self.sms, self.id);
        let received = tls.receive(bytes, &mut self.out, &mut |plain| {
            Self::feed_into(rt, sms, id, plain);
        });
        if let Err(e) = received {
            tracing::debug!(error = %e, "TLS error; closing");
            self.broken = true;
            self.read_done = true;
            self.rt.borrow_mut().slot(self.id).close = true;
        } else if tls.peer_closed() {
            // close_notify: the peer sends nothing more.
            self.read_done = true;
            self.rt.borrow_mut().slot(self.id).close = true;
        }
    }

    fn feed_into(rt: &RtRef, sms: &Arc<dyn SmsGateway>, id: ConnId, bytes: &[u8]) {
        {
            let mut r = rt.borrow_mut();
            // Once a move is decided, later plaintext goes with the
            // connection instead of being processed here.
            if let Some(m) = r.slot(id).migrate.as_mut() {
                m.1.replay.extend_from_slice(bytes);
                return;
            }
            r.core.handle_bytes(id, bytes, now_ms());
        }
        drain_actions(rt, sms);
    }

    fn poll_writes(&mut self, cx: &mut Context<'_>) -> Option<End> {
        loop {
            if self.out_pos < self.out.len() {
                let pending = self.out.get(self.out_pos..).unwrap_or_default();
                match Pin::new(&mut self.stream).poll_write(cx, pending) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Some(End::Closed),
                    Poll::Ready(Ok(n)) => self.out_pos += n,
                    Poll::Pending => return None,
                }
                continue;
            }
            // All written: an idle connection keeps no buffer.
            self.out = Vec::new();
            self.out_pos = 0;
            if self.broken {
                return Some(End::Closed);
            }
            match self.take_output(cx) {
                // A session that refused output may have had nothing left
                // to flush: close now rather than idle.
                Taken::Nothing if self.broken => return Some(End::Closed),
                Taken::Nothing => break,
                Taken::Progress => {}
                Taken::Pending => return None,
                Taken::Closed => return Some(End::Closed),
            }
        }
        // Everything queued is written: finish a close or a move.
        let mut r = self.rt.borrow_mut();
        let slot = r.slot(self.id);
        if let Some(m) = slot.migrate.take() {
            let (to, state) = *m;
            return Some(End::Migrate(to, state));
        }
        if slot.close || self.read_done {
            return Some(End::Closed);
        }
        None
    }

    /// Takes the core's output (called only when `out` is written), and
    /// writes it, encrypted if TLS, as far as the socket takes it.
    fn take_output(&mut self, cx: &mut Context<'_>) -> Taken {
        // An empty vector goes in: the core's buffer comes out with the
        // bytes and the connection's slot in the core keeps none.
        let mut plain = Vec::new();
        let closing = {
            let mut r = self.rt.borrow_mut();
            r.core.take_output(self.id, &mut plain, now_ms());
            r.slots.get(&self.id).is_some_and(|s| s.close)
        };
        drain_actions(&self.rt, &self.sms);
        let Some(tls) = self.tls.as_mut() else {
            // Plaintext: the core's buffer is written as it is.
            if plain.is_empty() {
                return Taken::Nothing;
            }
            self.out = plain;
            return Taken::Progress;
        };
        let mut staged = std::mem::take(&mut self.scratch.borrow_mut().staging);
        staged.clear();
        if let Err(e) = tls.send(&plain, &mut staged) {
            // Before the handshake got far enough, or keys exhausted:
            // writing anything later would corrupt the stream, so stop
            // taking output and close after what is already encrypted.
            tracing::debug!(error = %e, "TLS refused output; closing");
            self.broken = true;
        }
        drop(plain);
        if closing && !self.close_notify_sent && !self.broken && !tls.is_handshaking() {
            self.close_notify_sent = true;
            if let Err(e) = tls.close_notify(&mut staged) {
                tracing::debug!(error = %e, "close_notify not sent");
            }
        }
        let taken = self.write_staged(cx, &staged);
        staged.clear();
        if staged.capacity() > STAGING_KEEP_BYTES_MAX {
            staged = Vec::new();
        }
        self.scratch.borrow_mut().staging = staged;
        taken
    }

    /// Writes `staged` as far as the socket takes it at once; the rest is
    /// copied into `out`.
    fn write_staged(&mut self, cx: &mut Context<'_>, staged: &[u8]) -> Taken {
        if staged.is_empty() {
            return Taken::Nothing;
        }
        let mut pos = 0;
        while pos < staged.len() {
            let rest = staged.get(pos..).unwrap_or_default();
            match Pin::new(&mut self.stream).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Taken::Closed,
                Poll::Ready(Ok(n)) => pos += n,
                Poll::Pending => {
                    self.out = rest.to_vec();
                    return Taken::Pending;
                }
            }
        }
        Taken::Progress
    }

    /// Hands the socket to shard `to`: a duplicate of the fd (this task's
    /// stream closes only its own descriptor), the TLS state, and the core's
    /// migration state.
    fn ship(mut self, to: u16, state: MigrationState) {
        let fd = dup_fd(&self.stream);
        let mut r = self.rt.borrow_mut();
        r.core.forget(self.id);
        r.slots.remove(&self.id);
        match fd {
            Ok(fd) => {
                if let Some(queue) = r.adopt_out.get_mut(usize::from(to)) {
                    queue.push(Adopt {
                        fd,
                        tls: self.tls.take(),
                        state,
                    });
                }
                if let Some(w) = r.mesh_waker.take() {
                    w.wake();
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not duplicate socket for migration"),
        }
    }
}

/// `dup(2)` of the stream's descriptor.
#[allow(unsafe_code)]
fn dup_fd(stream: &TcpStream) -> std::io::Result<OwnedFd> {
    // SAFETY: the descriptor belongs to `stream`, which is borrowed for the
    // whole call, so it is open and valid while borrowed here.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    fd.try_clone_to_owned()
}
