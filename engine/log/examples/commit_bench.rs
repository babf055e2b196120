//! Group commit on this disk, in one run: raw std buffered writes +
//! fdatasync, glommio DMA (O_DIRECT) + fdatasync, and the tern-log Writer +
//! FileDriver, at 1, 16 and 256 records of 200 bytes per sync.
//!
//! ```text
//! cargo run --release -p tern-log --example commit_bench -- [--dir /tmp] [--rounds 4] [--seconds 0.25] [--mib 12]
//! ```
//!
//! Every case runs once per round, rounds interleave the variants so a slow
//! spell of a shared virtual disk hits all of them alike; results add up the
//! rounds (and show the spread of per-round rates). A case stops after
//! `--seconds` or `--mib` MiB written, whichever comes first, in a fresh file;
//! files are deleted at the end of each round. Latency is per commit (write +
//! fdatasync: what an ack waits for), in microseconds.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_lite::AsyncWriteExt;
use glommio::io::{BufferedFile, DmaFile, DmaStreamWriterBuilder};
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use tern_log::{
    Durability, FileDriver, IoDriver, IoRequest, Preallocation, Writer, WriterOptions, WriterStart,
};

/// Bytes of one record on disk, header included (the issue's "200-byte records").
const RECORD_BYTES: usize = 200;
const PAYLOAD_BYTES: usize = RECORD_BYTES - tern_log::RECORD_HEADER_BYTES;
const BATCHES: [usize; 3] = [1, 16, 256];
const KIND: u8 = 1;

#[derive(Debug, Clone)]
struct Config {
    dir: PathBuf,
    rounds: usize,
    case_time: Duration,
    case_bytes_max: u64,
}

impl Config {
    /// Segment / preallocated file size: one case never rolls over.
    fn segment_bytes(&self) -> u32 {
        u32::try_from(self.case_bytes_max + (1 << 20)).unwrap()
    }
}

#[derive(Debug, Clone)]
struct Outcome {
    name: String,
    batch: usize,
    records: u64,
    elapsed: Duration,
    commit_us: Histogram<u64>,
}

impl Outcome {
    fn records_per_s(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
}

fn parse_args() -> Config {
    let mut config = Config {
        dir: std::env::temp_dir(),
        rounds: 4,
        case_time: Duration::from_secs_f64(0.25),
        case_bytes_max: 12 << 20,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--dir" => config.dir = PathBuf::from(value),
            "--rounds" => config.rounds = value.parse().unwrap(),
            "--seconds" => config.case_time = Duration::from_secs_f64(value.parse().unwrap()),
            "--mib" => config.case_bytes_max = value.parse::<u64>().unwrap() << 20,
            other => {
                panic!("unknown flag {other}; flags: --dir PATH --rounds N --seconds S --mib N")
            }
        }
    }
    assert!(config.rounds >= 1 && config.case_bytes_max < 4000 << 20);
    config.dir = config
        .dir
        .join(format!("tern-commit-bench-{}", std::process::id()));
    config
}

/// `batch` framed records of RECORD_BYTES each.
fn batch_bytes(batch: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(batch * RECORD_BYTES);
    for i in 0..batch {
        tern_log::record::encode(KIND, &[i as u8; PAYLOAD_BYTES], &mut bytes).unwrap();
    }
    assert_eq!(bytes.len(), batch * RECORD_BYTES);
    bytes
}

fn prepare(path: &Path, preallocation: Preallocation, segment_bytes: u32) -> File {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .unwrap();
    match preallocation {
        Preallocation::None => {}
        Preallocation::Fallocate => rustix::fs::fallocate(
            &file,
            rustix::fs::FallocateFlags::empty(),
            0,
            u64::from(segment_bytes),
        )
        .unwrap(),
        Preallocation::ZeroFill => {
            let zeroes = vec![0u8; 1 << 20];
            for chunk in 0..u64::from(segment_bytes) >> 20 {
                file.write_all_at(&zeroes, chunk << 20).unwrap();
            }
        }
    }
    file.sync_all().unwrap();
    File::open(path.parent().unwrap())
        .unwrap()
        .sync_all()
        .unwrap();
    file
}

fn mode_name(preallocation: Preallocation) -> &'static str {
    match preallocation {
        Preallocation::None => "append",
        Preallocation::Fallocate => "fallocate",
        Preallocation::ZeroFill => "zero-filled",
    }
}

/// (a) pwrite of a prebuilt batch + fdatasync.
fn raw_std(config: &Config, round: usize, preallocation: Preallocation, batch: usize) -> Outcome {
    let path = config.dir.join(format!(
        "raw-{round}-{batch}-{}.dat",
        mode_name(preallocation)
    ));
    let file = prepare(&path, preallocation, config.segment_bytes());
    let bytes = batch_bytes(batch);
    let mut commit_us = histogram();
    let mut offset = 0u64;
    let mut records = 0u64;
    let start = Instant::now();
    while start.elapsed() < config.case_time && offset + bytes.len() as u64 <= config.case_bytes_max
    {
        let t = Instant::now();
        file.write_all_at(&bytes, offset).unwrap();
        file.sync_data().unwrap();
        commit_us.record(t.elapsed().as_micros() as u64).unwrap();
        offset += bytes.len() as u64;
        records += batch as u64;
    }
    let elapsed = start.elapsed();
    drop(file);
    Outcome {
        name: format!("std pwrite+fdatasync, {}", mode_name(preallocation)),
        batch,
        records,
        elapsed,
        commit_us,
    }
}

/// (b) glommio DmaStreamWriter (O_DIRECT, 4 KiB aligned; `sync` pads the
/// last partial block and rewrites it on the next commit) + fdatasync.
fn glommio_dma(config: &Config, round: usize, fallocate: bool, batch: usize) -> Option<Outcome> {
    let path = config
        .dir
        .join(format!("dma-{round}-{batch}-{fallocate}.dat"));
    let executor = match LocalExecutorBuilder::new(Placement::Unbound).make() {
        Ok(executor) => executor,
        Err(error) => {
            println!("glommio executor unavailable ({error}); DMA cases skipped");
            return None;
        }
    };
    let config = config.clone();
    let outcome = executor.run(async move {
        let file = DmaFile::create(&path).await.unwrap();
        if fallocate {
            file.pre_allocate(u64::from(config.segment_bytes()), false)
                .await
                .unwrap();
            file.fdatasync().await.unwrap();
        }
        let mut writer = DmaStreamWriterBuilder::new(file)
            .with_buffer_size(128 << 10)
            .with_write_behind(2)
            .build();
        let bytes = batch_bytes(batch);
        let mut commit_us = histogram();
        let mut written = 0u64;
        let mut records = 0u64;
        let start = Instant::now();
        while start.elapsed() < config.case_time
            && written + bytes.len() as u64 <= config.case_bytes_max
        {
            let t = Instant::now();
            writer.write_all(&bytes).await.unwrap();
            writer.sync().await.unwrap();
            commit_us.record(t.elapsed().as_micros() as u64).unwrap();
            written += bytes.len() as u64;
            records += batch as u64;
        }
        let elapsed = start.elapsed();
        writer.close().await.unwrap();
        Outcome {
            name: format!(
                "glommio DMA+fdatasync, {}",
                if fallocate { "fallocate" } else { "append" }
            ),
            batch,
            records,
            elapsed,
            commit_us,
        }
    });
    Some(outcome)
}

/// (b2) glommio BufferedFile: buffered pwrite + fdatasync through the
/// executor's io_uring, no thread hop, fallocated file.
fn glommio_buffered(config: &Config, round: usize, batch: usize) -> Option<Outcome> {
    let path = config.dir.join(format!("gbuf-{round}-{batch}.dat"));
    let executor = LocalExecutorBuilder::new(Placement::Unbound).make().ok()?;
    let config = config.clone();
    Some(executor.run(async move {
        let file = BufferedFile::create(&path).await.unwrap();
        file.pre_allocate(u64::from(config.segment_bytes()), false)
            .await
            .unwrap();
        file.fdatasync().await.unwrap();
        let bytes = batch_bytes(batch);
        let mut commit_us = histogram();
        let mut offset = 0u64;
        let mut records = 0u64;
        let start = Instant::now();
        while start.elapsed() < config.case_time
            && offset + bytes.len() as u64 <= config.case_bytes_max
        {
            let t = Instant::now();
            let mut done = 0usize;
            while done < bytes.len() {
                let n = file
                    .write_at(bytes[done..].to_vec(), offset + done as u64)
                    .await
                    .unwrap();
                assert!(n > 0);
                done += n;
            }
            file.fdatasync().await.unwrap();
            commit_us.record(t.elapsed().as_micros() as u64).unwrap();
            offset += bytes.len() as u64;
            records += batch as u64;
        }
        let elapsed = start.elapsed();
        file.close().await.unwrap();
        Outcome {
            name: "glommio BufferedFile (io_uring) pwrite+fdatasync, fallocate".to_owned(),
            batch,
            records,
            elapsed,
            commit_us,
        }
    }))
}

/// (c2) the Writer on this thread, the FileDriver on a dedicated I/O thread
/// (how a shard would use the blocking driver): every request and every
/// completion crosses threads.
fn tern_writer_io_thread(config: &Config, round: usize, batch: usize) -> Outcome {
    let dir = config.dir.join(format!("writer-thread-{round}-{batch}"));
    fs::create_dir_all(&dir).unwrap();
    let options = WriterOptions {
        segment_bytes_max: config.segment_bytes(),
        ..WriterOptions::default()
    };
    let mut writer = Writer::new(options, WriterStart::empty()).unwrap();
    let (request_tx, request_rx) = mpsc::channel::<IoRequest>();
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    let io_dir = dir.clone();
    let io_thread = std::thread::spawn(move || {
        let mut driver = FileDriver::new(&io_dir, Preallocation::Fallocate).unwrap();
        for request in request_rx {
            let result = driver.execute(&request);
            let id = request.id();
            done_tx.send((id, result, request.into_bytes())).unwrap();
        }
    });
    let run = |writer: &mut Writer| drive_via(writer, &request_tx, &done_rx);
    run(&mut writer);
    let payload = [7u8; PAYLOAD_BYTES];
    let mut commit_us = histogram();
    let mut records = 0u64;
    let start = Instant::now();
    while start.elapsed() < config.case_time
        && (records + batch as u64) * RECORD_BYTES as u64 <= config.case_bytes_max
    {
        let t = Instant::now();
        let mut last = writer.durable_lsn();
        for _ in 0..batch {
            last = writer.append(KIND, &payload).unwrap();
        }
        run(&mut writer);
        assert_eq!(writer.durable_lsn(), last);
        commit_us.record(t.elapsed().as_micros() as u64).unwrap();
        records += batch as u64;
    }
    let elapsed = start.elapsed();
    drop(request_tx);
    io_thread.join().unwrap();
    Outcome {
        name: "Writer+FileDriver on an I/O thread, fallocate".to_owned(),
        batch,
        records,
        elapsed,
        commit_us,
    }
}

type Done = (
    tern_log::RequestId,
    Result<(), tern_log::IoFailure>,
    Option<Vec<u8>>,
);

/// Sends requests to the I/O thread and feeds completions back until idle.
fn drive_via(writer: &mut Writer, requests: &mpsc::Sender<IoRequest>, done: &mpsc::Receiver<Done>) {
    let mut in_flight = 0usize;
    loop {
        while let Some(request) = writer.poll_io() {
            requests.send(request).unwrap();
            in_flight += 1;
        }
        if in_flight == 0 {
            break;
        }
        let (id, result, bytes) = done.recv().unwrap();
        in_flight -= 1;
        if let Some(bytes) = bytes {
            writer.recycle(bytes);
        }
        writer.handle_io_done(id, result).unwrap();
    }
}

/// Time to create and preallocate one 64 MiB segment (the default size):
/// the stall a rollover puts on the commit path.
fn create_segment_us(config: &Config, preallocation: Preallocation) -> Vec<u64> {
    let dir = config
        .dir
        .join(format!("create-{}", mode_name(preallocation)));
    fs::create_dir_all(&dir).unwrap();
    let mut driver = FileDriver::new(&dir, preallocation).unwrap();
    let samples = (1..=3)
        .map(|segment| {
            let t = Instant::now();
            driver
                .execute(&IoRequest::CreateSegment {
                    id: tern_log::RequestId(segment),
                    segment: segment as u32,
                    segment_bytes_max: tern_log::writer::SEGMENT_BYTES_MAX_DEFAULT,
                })
                .unwrap();
            t.elapsed().as_micros() as u64
        })
        .collect();
    drop(driver);
    fs::remove_dir_all(&dir).unwrap();
    samples
}

/// Runs every request until the writer is idle.
fn drive_all(writer: &mut Writer, driver: &mut dyn IoDriver) {
    while let Some(request) = writer.poll_io() {
        let result = driver.execute(&request);
        let id = request.id();
        if let Some(bytes) = request.into_bytes() {
            writer.recycle(bytes);
        }
        writer.handle_io_done(id, result).unwrap();
    }
    assert!(writer.poison_cause().is_none());
}

#[derive(Debug)]
struct NullDriver;

impl IoDriver for NullDriver {
    fn execute(&mut self, _request: &IoRequest) -> Result<(), tern_log::IoFailure> {
        Ok(())
    }
}

/// (c) the Writer state machine + FileDriver: append `batch` records
/// (encode + CRC32C each), then poll/execute/complete Write + Sync.
/// With `null_io`, the same without any I/O: the state machine's own cost.
fn tern_writer(
    config: &Config,
    round: usize,
    preallocation: Preallocation,
    durability: Durability,
    null_io: bool,
    batch: usize,
) -> Outcome {
    let dir = config.dir.join(format!(
        "writer-{round}-{batch}-{}-{durability:?}-{null_io}",
        mode_name(preallocation)
    ));
    fs::create_dir_all(&dir).unwrap();
    let options = WriterOptions {
        durability,
        segment_bytes_max: config.segment_bytes(),
        ..WriterOptions::default()
    };
    let mut writer = Writer::new(options, WriterStart::empty()).unwrap();
    let mut file_driver = FileDriver::new(&dir, preallocation).unwrap();
    let driver: &mut dyn IoDriver = if null_io {
        &mut NullDriver
    } else {
        &mut file_driver
    };
    drive_all(&mut writer, driver); // Creates (and preallocates) the segment.
    let payload = [7u8; PAYLOAD_BYTES];
    let mut commit_us = histogram();
    let mut records = 0u64;
    let start = Instant::now();
    while start.elapsed() < config.case_time
        && (records + batch as u64) * RECORD_BYTES as u64 <= config.case_bytes_max
    {
        let t = Instant::now();
        let mut last = writer.durable_lsn();
        for _ in 0..batch {
            last = writer.append(KIND, &payload).unwrap();
        }
        drive_all(&mut writer, driver);
        assert_eq!(writer.durable_lsn(), last);
        commit_us.record(t.elapsed().as_micros() as u64).unwrap();
        records += batch as u64;
    }
    let elapsed = start.elapsed();
    let stats = writer.stats();
    assert_eq!(stats.records_durable, records);
    if durability == Durability::Fsync {
        assert_eq!(stats.syncs_done, records / batch as u64);
    }
    drop(file_driver);
    let name = if null_io {
        "Writer, no I/O (state machine only)".to_owned()
    } else if durability == Durability::UnsafeNoFsync {
        format!(
            "Writer+FileDriver UNSAFE no fsync, {}",
            mode_name(preallocation)
        )
    } else {
        format!("Writer+FileDriver, {}", mode_name(preallocation))
    };
    Outcome {
        name,
        batch,
        records,
        elapsed,
        commit_us,
    }
}

/// Per-case totals over the rounds.
#[derive(Debug)]
struct Total {
    name: String,
    batch: usize,
    records: u64,
    elapsed: Duration,
    commit_us: Histogram<u64>,
    round_rates: Vec<f64>,
}

impl Total {
    fn records_per_s(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }
}

fn add(totals: &mut Vec<Total>, outcome: Outcome) {
    let rate = outcome.records_per_s();
    match totals
        .iter_mut()
        .find(|t| t.name == outcome.name && t.batch == outcome.batch)
    {
        Some(total) => {
            total.records += outcome.records;
            total.elapsed += outcome.elapsed;
            total.commit_us.add(&outcome.commit_us).unwrap();
            total.round_rates.push(rate);
        }
        None => totals.push(Total {
            name: outcome.name,
            batch: outcome.batch,
            records: outcome.records,
            elapsed: outcome.elapsed,
            commit_us: outcome.commit_us,
            round_rates: vec![rate],
        }),
    }
}

fn print_row(total: &Total) {
    let h = &total.commit_us;
    let low = total
        .round_rates
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min);
    let high = total.round_rates.iter().copied().fold(0.0, f64::max);
    println!(
        "| {} | {} | {:.0} | {:.0}-{:.0} | {} | {} | {} | {} |",
        total.name,
        total.batch,
        total.records_per_s(),
        low,
        high,
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.max(),
        h.len(),
    );
}

fn machine_line(dir: &Path) -> String {
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let dir_text = dir.to_string_lossy();
    let mount = mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() > 2 && dir_text.starts_with(fields[1]))
                .then(|| (fields[1].len(), fields[0].to_owned(), fields[2].to_owned()))
        })
        .max()
        .map_or("?".to_owned(), |(_, device, fs_type)| {
            format!("{device} {fs_type}")
        });
    format!(
        "kernel {}, {cpus} CPUs, {} on {mount}",
        kernel.trim(),
        dir.display()
    )
}

/// `/proc/pressure/io` "some avg10": the share of the last 10 s in which
/// some task waited on I/O. Other builds on a shared machine show up here
/// and in every fdatasync number.
fn io_pressure() -> String {
    fs::read_to_string("/proc/pressure/io")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("some"))
                .and_then(|l| l.split_whitespace().nth(1))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

fn run_round(config: &Config, round: usize, totals: &mut Vec<Total>) {
    let modes = [
        Preallocation::None,
        Preallocation::Fallocate,
        Preallocation::ZeroFill,
    ];
    for batch in BATCHES {
        for mode in modes {
            add(totals, raw_std(config, round, mode, batch));
        }
        for fallocate in [false, true] {
            if let Some(dma) = glommio_dma(config, round, fallocate, batch) {
                add(totals, dma);
            }
        }
        if let Some(buffered) = glommio_buffered(config, round, batch) {
            add(totals, buffered);
        }
        add(totals, tern_writer_io_thread(config, round, batch));
        for mode in modes {
            add(
                totals,
                tern_writer(config, round, mode, Durability::Fsync, false, batch),
            );
        }
        add(
            totals,
            tern_writer(
                config,
                round,
                Preallocation::None,
                Durability::Fsync,
                true,
                batch,
            ),
        );
    }
    add(
        totals,
        tern_writer(
            config,
            round,
            Preallocation::Fallocate,
            Durability::UnsafeNoFsync,
            false,
            16,
        ),
    );
}

fn main() {
    let config = parse_args();
    fs::create_dir_all(&config.dir).unwrap();
    println!("# commit_bench: {}", machine_line(&config.dir));
    println!(
        "# {RECORD_BYTES}-byte records; {} rounds; each case <= {:.2} s or {} MiB per round; \
         latency = write + fdatasync per commit",
        config.rounds,
        config.case_time.as_secs_f64(),
        config.case_bytes_max >> 20
    );
    println!(
        "# I/O pressure at start: {}; load average: {}",
        io_pressure(),
        fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let started = Instant::now();
    let mut totals = Vec::new();
    for round in 0..config.rounds {
        run_round(&config, round, &mut totals);
        // Free the round's files (the discard on delete happens here, not
        // inside a measured case), then let the disk settle.
        for entry in fs::read_dir(&config.dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                fs::remove_dir_all(&path).unwrap();
            } else {
                fs::remove_file(&path).unwrap();
            }
        }
        File::open(&config.dir).unwrap().sync_all().unwrap();
        std::thread::sleep(Duration::from_millis(500));
    }
    println!();
    println!(
        "| variant | records/sync | records/s | per-round records/s | commit p50 µs | commit p99 µs | max µs | commits |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for total in &totals {
        print_row(total);
    }

    println!();
    println!("Same-run ratios (records/s):");
    let rate = |name: &str, batch: usize| {
        totals
            .iter()
            .find(|t| t.name == name && t.batch == batch)
            .map(Total::records_per_s)
    };
    for batch in BATCHES {
        for m in ["append", "fallocate", "zero-filled"] {
            if let (Some(w), Some(r)) = (
                rate(&format!("Writer+FileDriver, {m}"), batch),
                rate(&format!("std pwrite+fdatasync, {m}"), batch),
            ) {
                println!("  {batch:>3}/sync {m:>11}: Writer / raw std = {:.2}", w / r);
            }
        }
        if let (Some(t), Some(w)) = (
            rate("Writer+FileDriver on an I/O thread, fallocate", batch),
            rate("Writer+FileDriver, fallocate", batch),
        ) {
            println!(
                "  {batch:>3}/sync   fallocate: Writer on I/O thread / same thread = {:.2}",
                t / w
            );
        }
        if let (Some(g), Some(r)) = (
            rate(
                "glommio BufferedFile (io_uring) pwrite+fdatasync, fallocate",
                batch,
            ),
            rate("std pwrite+fdatasync, fallocate", batch),
        ) {
            println!(
                "  {batch:>3}/sync   fallocate: glommio BufferedFile / raw std = {:.2}",
                g / r
            );
        }
        for m in ["append", "fallocate"] {
            if let (Some(d), Some(r)) = (
                rate(&format!("glommio DMA+fdatasync, {m}"), batch),
                rate(&format!("std pwrite+fdatasync, {m}"), batch),
            ) {
                println!(
                    "  {batch:>3}/sync {m:>11}: glommio DMA / raw std = {:.2}",
                    d / r
                );
            }
        }
    }
    println!();
    println!(
        "Creating one 64 MiB segment (file + preallocation + fsync + directory fsync), 3 samples:"
    );
    for mode in [
        Preallocation::None,
        Preallocation::Fallocate,
        Preallocation::ZeroFill,
    ] {
        println!(
            "  {:>11}: {:?} µs",
            mode_name(mode),
            create_segment_us(&config, mode)
        );
    }
    fs::remove_dir_all(&config.dir).unwrap();
    println!(
        "\n# I/O pressure at end: {}; load average: {}",
        io_pressure(),
        fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!("total run time {:.1} s", started.elapsed().as_secs_f64());
}
