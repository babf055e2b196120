//! The connection driver: one glommio task per connection that moves bytes
//! between its socket, rustls and the shard core.
//!
//! Reads are readiness-based (glommio's non-buffered `poll_read` tries a
//! non-blocking `recv` and otherwise waits on POLLIN without holding a
//! buffer), so an idle connection owns no read buffer: every connection on a
//! shard reads into the shard's one scratch buffer and hands the bytes on at
//! once. Output is taken from the core only when the socket has drained the
//! previous batch, so back-pressure accumulates in the core, which enforces
//! the outbound bound.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use rustls::ServerConnection;
use tern_core::conn::{ConnId, MigrationState};

use super::mesh::Adopt;
use super::shard::{drain_actions, RtRef};
use crate::clock::now_ms;
use crate::sms::SmsGateway;

/// Socket reads per poll before yielding to other connections.
const READS_PER_POLL_MAX: usize = 8;

/// Scratch buffers shared by every connection of a shard (one executor
/// thread, so one user at a time). 64 KiB: a TLS record is at most ~16 KiB,
/// and a larger read batches several.
pub(crate) const SCRATCH_BYTES: usize = 64 * 1024;

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

/// A buffer kept only while it is small: after a burst, its memory goes
/// back so idle connections stay cheap.
const IDLE_BUFFER_BYTES_MAX: usize = 4 * 1024;

enum End {
    Closed,
    Migrate(u16, MigrationState),
}

struct Driver {
    rt: RtRef,
    sms: Arc<dyn SmsGateway>,
    scratch: Rc<RefCell<Scratch>>,
    id: ConnId,
    stream: TcpStream,
    tls: Option<Box<ServerConnection>>,
    /// Bytes for the socket (ciphertext, or plaintext without TLS).
    out: Vec<u8>,
    out_pos: usize,
    /// Plaintext swapped out of the core.
    plain: Vec<u8>,
    read_done: bool,
    close_notify_sent: bool,
    /// The TLS session refused plaintext: flush what is encrypted, then
    /// close without taking more output.
    broken: bool,
}

/// Drives connection `id` until it closes or moves to another shard.
pub(crate) async fn run(
    rt: RtRef,
    sms: Arc<dyn SmsGateway>,
    scratch: Rc<RefCell<Scratch>>,
    id: ConnId,
    stream: TcpStream,
    tls: Option<Box<ServerConnection>>,
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
        plain: Vec::new(),
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
        if self.read_done {
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
            let Scratch { read, plain } = &mut *s;
            match Pin::new(&mut self.stream).poll_read(cx, read) {
                Poll::Pending => return None,
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    // Peer gone: nothing more to write either.
                    self.read_done = true;
                    return Some(End::Closed);
                }
                Poll::Ready(Ok(n)) => {
                    let bytes = read.get(..n).unwrap_or_default();
                    if let Err(()) = self.on_read(bytes, plain) {
                        self.read_done = true;
                    }
                }
            }
        }
        // Fairness: let other connections run, then continue.
        cx.waker().wake_by_ref();
        None
    }

    /// Decrypts and hands plaintext to the core. `Err` on a TLS failure
    /// (the alert, if any, is queued for writing and the socket closes).
    fn on_read(&mut self, bytes: &[u8], plain: &mut [u8]) -> Result<(), ()> {
        let Some(tls) = self.tls.as_mut() else {
            self.feed(bytes);
            return Ok(());
        };
        let mut rd = bytes;
        while !rd.is_empty() {
            if tls.read_tls(&mut rd).is_err() {
                self.rt.borrow_mut().slot(self.id).close = true;
                return Err(());
            }
            if let Err(e) = tls.process_new_packets() {
                tracing::debug!(error = %e, "TLS error; closing");
                let _ = tls.write_tls(&mut self.out);
                self.rt.borrow_mut().slot(self.id).close = true;
                return Err(());
            }
            loop {
                match tls.reader().read(plain) {
                    Ok(0) => {
                        // close_notify from the peer.
                        self.read_done = true;
                        self.rt.borrow_mut().slot(self.id).close = true;
                        break;
                    }
                    Ok(m) => {
                        let chunk = plain.get(..m).unwrap_or_default();
                        Self::feed_into(&self.rt, &self.sms, self.id, chunk);
                    }
                    Err(_) => break,
                }
            }
        }
        Ok(())
    }

    fn feed(&mut self, bytes: &[u8]) {
        Self::feed_into(&self.rt, &self.sms, self.id, bytes);
    }

    fn feed_into(rt: &RtRef, sms: &Arc<dyn SmsGateway>, id: ConnId, bytes: &[u8]) {
        {
            let mut r = rt.borrow_mut();
            // Once a move is decided, later plaintext goes with the
            // connection instead of being processed here.
            if let Some((_, state)) = r.slot(id).migrate.as_mut() {
                state.replay.extend_from_slice(bytes);
                return;
            }
            r.core.handle_bytes(id, bytes, now_ms());
        }
        drain_actions(rt, sms);
    }

    /// Refills `out` from the core when the previous batch is written.
    fn fill_out(&mut self) {
        debug_assert!(self.out_pos == self.out.len());
        self.out.clear();
        self.out_pos = 0;
        if self.out.capacity() > IDLE_BUFFER_BYTES_MAX {
            self.out = Vec::new();
        }
        let closing = {
            let mut r = self.rt.borrow_mut();
            r.core.take_output(self.id, &mut self.plain, now_ms());
            r.slots.get(&self.id).is_some_and(|s| s.close)
        };
        drain_actions(&self.rt, &self.sms);
        match self.tls.as_mut() {
            None => std::mem::swap(&mut self.out, &mut self.plain),
            Some(tls) => {
                // rustls bounds its buffered TLS output (64 KiB by default),
                // so encrypt piecewise and move records out between pieces.
                // A short write is normal; a zero write means the session
                // is unusable, and writing anything after a partial frame
                // would corrupt the stream: stop taking output instead.
                let mut rest = self.plain.as_slice();
                while !rest.is_empty() {
                    let n = tls.writer().write(rest).unwrap_or(0);
                    rest = rest.get(n..).unwrap_or_default();
                    while tls.wants_write() {
                        if tls.write_tls(&mut self.out).is_err() {
                            break;
                        }
                    }
                    if n == 0 {
                        self.broken = true;
                        break;
                    }
                }
                if closing && !self.close_notify_sent && !tls.is_handshaking() {
                    tls.send_close_notify();
                    self.close_notify_sent = true;
                }
                while tls.wants_write() {
                    if tls.write_tls(&mut self.out).is_err() {
                        break;
                    }
                }
            }
        }
        self.plain.clear();
        if self.plain.capacity() > IDLE_BUFFER_BYTES_MAX {
            self.plain = Vec::new();
        }
    }

    fn poll_writes(&mut self, cx: &mut Context<'_>) -> Option<End> {
        loop {
            if self.out_pos >= self.out.len() {
                if self.broken {
                    return Some(End::Closed);
                }
                self.fill_out();
                if self.out.is_empty() {
                    break;
                }
            }
            let pending = self.out.get(self.out_pos..).unwrap_or_default();
            match Pin::new(&mut self.stream).poll_write(cx, pending) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Some(End::Closed),
                Poll::Ready(Ok(n)) => self.out_pos += n,
                Poll::Pending => return None,
            }
        }
        // Everything queued is written: finish a close or a move.
        let mut r = self.rt.borrow_mut();
        let slot = r.slot(self.id);
        if let Some((to, state)) = slot.migrate.take() {
            return Some(End::Migrate(to, state));
        }
        if slot.close || self.read_done {
            return Some(End::Closed);
        }
        None
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
