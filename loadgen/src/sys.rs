//! The few things the generator asks of the OS directly: the open-files
//! limit, the clock tick, and /proc samples of a process (the server's
//! RSS and CPU time, and the generator's own CPU time).

use std::path::Path;

/// Raises the soft open-files limit to the hard one; returns the soft
/// limit now in force.
#[allow(unsafe_code)]
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the rlimit struct we pass
    // by valid, exclusive pointer/reference; RLIMIT_NOFILE is a valid
    // resource. No other memory is touched.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// Clock ticks per second (`_SC_CLK_TCK`), the unit of CPU times in
/// /proc/PID/stat; 100 if the query fails.
#[allow(unsafe_code)]
pub fn clock_ticks_per_s() -> u64 {
    // SAFETY: sysconf takes a plain integer name and returns an integer;
    // it touches no memory of ours.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// One sample of a process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcSample {
    /// Resident set size, KiB (VmRSS).
    pub rss_kib: u64,
    /// User + system CPU time of all its threads (exited ones included),
    /// microseconds.
    pub cpu_us: u64,
}

/// Samples `/proc/<pid>` (or `/proc/self` for `None`); `None` when the
/// process is gone or the files do not parse.
pub fn sample(pid: Option<u32>) -> Option<ProcSample> {
    let dir = match pid {
        Some(p) => format!("/proc/{p}"),
        None => "/proc/self".to_owned(),
    };
    let stat = std::fs::read_to_string(Path::new(&dir).join("stat")).ok()?;
    let status = std::fs::read_to_string(Path::new(&dir).join("status")).ok()?;
    Some(ProcSample {
        rss_kib: parse_vm_rss_kib(&status)?,
        cpu_us: parse_cpu_ticks(&stat)?.saturating_mul(1_000_000) / clock_ticks_per_s(),
    })
}

/// `utime + stime` (clock ticks) from a /proc/PID/stat line. The command
/// name may hold spaces and parentheses, so fields are counted after the
/// last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of the line, utime 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` in KiB from /proc/PID/status.
pub fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let stat = "1234 (tern (x) y) S 1 1234 1234 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        let status = "Name:\ttern\nVmPeak:\t  9000 kB\nVmRSS:\t  4321 kB\n";
        assert_eq!(parse_vm_rss_kib(status), Some(4321));
        assert_eq!(parse_vm_rss_kib("Name: x\n"), None);
    }

    #[test]
    fn samples_this_process() {
        let s = sample(None).unwrap();
        assert!(s.rss_kib > 0);
        assert!(clock_ticks_per_s() >= 1);
        assert!(raise_nofile_limit() > 0);
        assert_eq!(sample(Some(u32::MAX)), None, "no such process");
    }
}
