//! Resident memory of this process, from `/proc/self/status` (Linux).

/// A field of `/proc/self/status` given in kB (`VmRSS`, `VmHWM`, ...), in
/// bytes. `None` off Linux or if the field is missing.
pub fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_status_bytes(&status, field)
}

/// Resident set size now, in bytes.
pub fn rss_bytes() -> Option<u64> {
    status_bytes("VmRSS")
}

/// Peak resident set size so far, in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    status_bytes("VmHWM")
}

fn parse_status_bytes(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        let kib: u64 = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
        kib.checked_mul(1024)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kb_fields() {
        let s = "Name:\tx\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(parse_status_bytes(s, "VmRSS"), Some(1024 * 1024));
        assert_eq!(parse_status_bytes(s, "VmHWM"), Some(2048 * 1024));
        assert_eq!(parse_status_bytes(s, "VmSwap"), None);
    }

    #[test]
    fn this_process_has_some_rss() {
        if cfg!(target_os = "linux") {
            assert!(rss_bytes().is_some_and(|b| b > 0));
        }
    }
}
