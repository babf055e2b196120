//! Measures what connection placement trades off (docs/ARCHITECTURE.md,
//! "Connection placement"): the cost of a cross-core hop on the glommio
//! shared channels the mesh uses, per message, at several batch sizes; and
//! the one-time cost of moving a socket (dup + hand-over + adopt).
//!
//! Run: `cargo run --release -p tern-engine --example mesh_cost`

// A measurement program: any failure should stop it loudly.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss
)]

use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use glommio::channels::shared_channel;
use glommio::{LocalExecutorBuilder, Placement};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MESSAGES: usize = 400_000;

/// Ping-pong `MESSAGES` messages between two pinned executors in batches of
/// `batch`; returns (messages per second one way, round trip per batch).
fn hop(batch: usize) -> (f64, Duration) {
    let (to_b, from_a) = shared_channel::new_bounded::<Vec<u64>>(1024);
    let (to_a, from_b) = shared_channel::new_bounded::<Vec<u64>>(1024);
    let b = LocalExecutorBuilder::new(Placement::Fixed(1))
        .spawn(move || async move {
            let rx = from_a.connect().await;
            let tx = to_a.connect().await;
            while let Some(v) = rx.recv().await {
                let done = v.is_empty();
                let _ = tx.send(v).await;
                if done {
                    break;
                }
            }
        })
        .unwrap();
    let a = LocalExecutorBuilder::new(Placement::Fixed(0))
        .spawn(move || async move {
            let tx = to_b.connect().await;
            let rx = from_b.connect().await;
            let rounds = MESSAGES / batch;
            let start = Instant::now();
            for r in 0..rounds {
                let v: Vec<u64> = (0..batch as u64).map(|i| i + r as u64).collect();
                let _ = tx.send(v).await;
                let back = rx.recv().await.unwrap_or_default();
                assert_eq!(back.len(), batch);
            }
            let elapsed = start.elapsed();
            let _ = tx.send(Vec::new()).await;
            let _ = rx.recv().await;
            let msgs_per_s = (rounds * batch) as f64 / elapsed.as_secs_f64();
            (msgs_per_s, elapsed / rounds as u32)
        })
        .unwrap();
    let out = a.join().unwrap();
    b.join().unwrap();
    out
}

/// Moves `count` connected sockets from executor 0 to executor 1 the way
/// the runtime migrates a connection; returns the cost per socket.
fn moves(count: usize) -> Duration {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut clients = Vec::with_capacity(count);
    let mut accepted = Vec::with_capacity(count);
    for _ in 0..count {
        clients.push(std::net::TcpStream::connect(addr).unwrap());
        accepted.push(listener.accept().unwrap().0);
    }
    let (tx, rx) = shared_channel::new_bounded::<Vec<std::os::fd::OwnedFd>>(1024);
    let b = LocalExecutorBuilder::new(Placement::Fixed(1))
        .spawn(move || async move {
            let rx = rx.connect().await;
            let mut adopted = Vec::new();
            while let Some(fds) = rx.recv().await {
                if fds.is_empty() {
                    break;
                }
                for fd in fds {
                    let s = socket2::Socket::from(std::net::TcpStream::from(fd));
                    adopted.push(glommio::net::TcpStream::from(s));
                }
            }
            adopted.len()
        })
        .unwrap();
    let a = LocalExecutorBuilder::new(Placement::Fixed(0))
        .spawn(move || async move {
            let tx = tx.connect().await;
            let start = Instant::now();
            for s in &accepted {
                // SAFETY: `s` is open for the whole loop body.
                #[allow(unsafe_code)]
                let fd = unsafe { BorrowedFd::borrow_raw(s.as_raw_fd()) };
                let owned = fd.try_clone_to_owned().unwrap();
                let _ = tx.send(vec![owned]).await;
            }
            let _ = tx.send(Vec::new()).await;
            start.elapsed()
        })
        .unwrap();
    let elapsed = a.join().unwrap();
    assert_eq!(b.join().unwrap(), count);
    drop(clients);
    elapsed / count as u32
}

fn main() {
    println!("cross-core hop on glommio shared channels (2 pinned executors)");
    println!(
        "{:>8} {:>16} {:>18} {:>14}",
        "batch", "msgs/s one way", "round trip/batch", "ns per msg"
    );
    for batch in [1, 16, 256] {
        let (rate, rtt) = hop(batch);
        println!(
            "{batch:>8} {rate:>16.0} {:>15.1} us {:>14.0}",
            rtt.as_secs_f64() * 1e6,
            1e9 / rate
        );
    }
    let per_move = moves(2_000);
    println!(
        "socket move (dup + channel + adopt), one at a time: {:.1} us per socket",
        per_move.as_secs_f64() * 1e6
    );
}
