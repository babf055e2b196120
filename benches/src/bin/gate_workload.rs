//! The regression gate's workload runner (see benches/gate/README.md).
//!
//! ```text
//! gate_workload list
//!     names and iteration counts of the fixed workloads
//! gate_workload run NAME [--iterations N]
//!     builds NAME's state, then runs it inside `gate_measure`, the one
//!     function callgrind counts (--toggle-collect='*gate_measure*')
//! gate_workload report --baseline FILE --results FILE --valgrind VER
//!                      --rustc VER [--threshold-pct P] [--update] NAME=IR@ITER...
//!     writes the results file, prints old/new/ratio, and exits 1 when a
//!     workload rose more than P percent (default 3); --update also
//!     rewrites the baseline and always passes
//! ```
//!
//! `TERN_GATE_SLOWDOWN_PCT=P` makes `run` do P percent more iterations
//! than it reports: a deliberate regression to check that the gate fails
//! (only for workload W if `TERN_GATE_SLOWDOWN_WORKLOAD=W` is set too).

use std::collections::BTreeMap;
use std::process::ExitCode;

use tern_benches::gate::compare::{self, Entry, Report, SCHEMA, THRESHOLD_PCT_DEFAULT};
use tern_benches::gate::workloads::{prepare, Prepared, Workload};
use tern_benches::harness::HarnessError;

// The server's allocator: allocation paths count as they would there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The only code callgrind counts. Never inlined, so its symbol exists for
/// `--toggle-collect`.
#[inline(never)]
fn gate_measure(prepared: &mut Prepared, iterations: u64) -> Result<u64, HarnessError> {
    prepared.run(iterations)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("list") => {
            for w in Workload::ALL {
                println!("{} {}", w.name(), w.iterations());
            }
            Ok(ExitCode::SUCCESS)
        }
        Some("run") => run(args.get(1..).unwrap_or_default()),
        Some("report") => report(args.get(1..).unwrap_or_default()),
        _ => Err(
            "usage: gate_workload list | run NAME [--iterations N] | report ... (see source)"
                .to_string(),
        ),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gate_workload: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> Result<ExitCode, String> {
    let name = args.first().ok_or("run: workload name missing")?;
    let workload = Workload::from_name(name).ok_or_else(|| format!("no workload {name}"))?;
    let mut iterations = workload.iterations();
    let mut rest = args.get(1..).unwrap_or_default().iter();
    while let Some(flag) = rest.next() {
        match flag.as_str() {
            "--iterations" => {
                iterations = rest
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--iterations needs a number")?;
            }
            other => return Err(format!("run: unknown argument {other}")),
        }
    }
    let slowdown_pct: u64 = match std::env::var("TERN_GATE_SLOWDOWN_PCT") {
        Ok(v) => v
            .parse()
            .map_err(|_| "TERN_GATE_SLOWDOWN_PCT must be a whole number")?,
        Err(_) => 0,
    };
    let slowed =
        std::env::var("TERN_GATE_SLOWDOWN_WORKLOAD").map_or(true, |only| only == workload.name());
    if slowdown_pct > 0 && slowed {
        eprintln!(
            "gate_workload: TERN_GATE_SLOWDOWN_PCT={slowdown_pct}: running {slowdown_pct}% extra iterations (deliberate regression)"
        );
    }
    let executed = if slowed {
        iterations + iterations * slowdown_pct / 100
    } else {
        iterations
    };
    let mut prepared = prepare(workload, executed).map_err(|e| e.to_string())?;
    let checksum = gate_measure(&mut prepared, executed).map_err(|e| e.to_string())?;
    println!(
        "workload={} iterations={iterations} checksum={checksum}",
        workload.name()
    );
    Ok(ExitCode::SUCCESS)
}

fn report(args: &[String]) -> Result<ExitCode, String> {
    let mut baseline_path = None;
    let mut results_path = None;
    let mut valgrind = String::new();
    let mut rustc = String::new();
    let mut threshold_pct = THRESHOLD_PCT_DEFAULT;
    let mut update = false;
    let mut workloads = BTreeMap::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--baseline" => baseline_path = Some(value()?),
            "--results" => results_path = Some(value()?),
            "--valgrind" => valgrind = value()?,
            "--rustc" => rustc = value()?,
            "--threshold-pct" => {
                threshold_pct = value()?
                    .parse()
                    .map_err(|_| "--threshold-pct needs a number")?;
            }
            "--update" => update = true,
            pair => {
                let (name, rest) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("expected NAME=IR@ITER, got {pair}"))?;
                let (ir, iter) = rest
                    .split_once('@')
                    .ok_or_else(|| format!("expected NAME=IR@ITER, got {pair}"))?;
                let entry = Entry {
                    instructions: ir.parse().map_err(|_| format!("bad count in {pair}"))?,
                    iterations: iter.parse().map_err(|_| format!("bad count in {pair}"))?,
                };
                workloads.insert(name.to_string(), entry);
            }
        }
    }
    let baseline_path = baseline_path.ok_or("--baseline missing")?;
    let results_path = results_path.ok_or("--results missing")?;
    let results = Report {
        schema: SCHEMA,
        valgrind,
        rustc,
        threshold_pct,
        workloads,
    };
    let json = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())? + "\n";
    std::fs::write(&results_path, &json).map_err(|e| format!("{results_path}: {e}"))?;

    let baseline: Option<Report> = match std::fs::read_to_string(&baseline_path) {
        Ok(text) => Some(serde_json::from_str(&text).map_err(|e| format!("{baseline_path}: {e}"))?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("{baseline_path}: {e}")),
    };
    let empty = Report {
        workloads: BTreeMap::new(),
        ..results.clone()
    };
    let base = baseline.as_ref().unwrap_or(&empty);
    if base.schema != SCHEMA {
        return Err(format!(
            "{baseline_path}: schema {} (this gate reads {SCHEMA}); regenerate with --update",
            base.schema
        ));
    }
    let rows = compare::compare(base, &results, threshold_pct);
    print!("{}", compare::table(&rows, threshold_pct));
    if baseline.is_some() && (base.valgrind != results.valgrind || base.rustc != results.rustc) {
        println!(
            "note: baseline measured with {} / {}, this run with {} / {}: counts move with the toolchain; update the baseline when the toolchain changes",
            base.valgrind, base.rustc, results.valgrind, results.rustc
        );
    }
    if update {
        std::fs::write(&baseline_path, &json).map_err(|e| format!("{baseline_path}: {e}"))?;
        println!("baseline {baseline_path} rewritten; commit it with a message that says why");
        return Ok(ExitCode::SUCCESS);
    }
    if baseline.is_none() {
        println!("no baseline at {baseline_path}: run with --update to create it");
        return Ok(ExitCode::FAILURE);
    }
    if compare::failed(&rows) {
        println!(
            "FAIL: instruction count rose more than {threshold_pct}% (or a workload is missing or changed); see benches/gate/README.md"
        );
        return Ok(ExitCode::FAILURE);
    }
    if rows.iter().any(|r| r.verdict == compare::Verdict::Improved) {
        println!("note: a workload improved past the threshold; consider `bash benches/gate/run.sh --update`");
    }
    println!("PASS");
    Ok(ExitCode::SUCCESS)
}
