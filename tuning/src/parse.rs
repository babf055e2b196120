//! Parsers for the text the kernel shows in `/proc` and `/sys`. Pure: every
//! one takes a string and returns `None` for anything it does not expect
//! (empty, negative, too many fields, overflow), never panics.

/// A single unsigned integer, surrounding whitespace allowed
/// (`/proc/sys/fs/nr_open`: `"1048576\n"`).
pub(crate) fn u64_value(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// Exactly `K` unsigned integers separated by whitespace
/// (`tcp_mem`: `"287901\t383869\t575802\n"`).
pub(crate) fn u64_fields<const K: usize>(text: &str) -> Option<[u64; K]> {
    let mut out = [0_u64; K];
    let mut words = text.split_whitespace();
    for slot in &mut out {
        *slot = words.next()?.parse().ok()?;
    }
    if words.next().is_some() {
        return None;
    }
    Some(out)
}

/// The value of `key` in `/proc/meminfo`-style text (`"MemAvailable:  123 kB"`),
/// in bytes. Also reads `KernelPageSize:  4 kB` lines of `/proc/self/smaps`.
pub(crate) fn kib_field_bytes(text: &str, key: &str) -> Option<u64> {
    for line in text.lines() {
        let Some(rest) = line.trim_start().strip_prefix(key) else {
            continue;
        };
        let Some(rest) = rest.strip_prefix(':') else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let n: u64 = words.next()?.parse().ok()?;
        let bytes = match words.next() {
            Some("kB") => n.checked_mul(1024)?,
            None => n,
            Some(_) => return None,
        };
        if words.next().is_some() {
            return None;
        }
        return Some(bytes);
    }
    None
}

/// Bytes in a kernel page, from the `KernelPageSize:` line of
/// `/proc/self/smaps`. Zero or anything that is not a power of two is
/// rejected (it would be a divisor).
pub(crate) fn page_size_bytes(line: &str) -> Option<u64> {
    kib_field_bytes(line, "KernelPageSize").filter(|n| n.is_power_of_two())
}

/// A cgroup memory limit: v2 `memory.max` (`"max"` or bytes) or v1
/// `memory.limit_in_bytes` (bytes; "no limit" is a huge number near
/// `i64::MAX` rounded to a page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CgroupLimit {
    Unlimited,
    Bytes(u64),
}

/// Limits at or above this are "no limit" (cgroup v1 writes
/// 9223372036854771712 for it).
const CGROUP_UNLIMITED_FROM_BYTES: u64 = 1 << 62;

pub(crate) fn cgroup_limit(text: &str) -> Option<CgroupLimit> {
    let t = text.trim();
    if t == "max" {
        return Some(CgroupLimit::Unlimited);
    }
    let n = u64_value(t)?;
    if n >= CGROUP_UNLIMITED_FROM_BYTES {
        Some(CgroupLimit::Unlimited)
    } else {
        Some(CgroupLimit::Bytes(n))
    }
}

/// Candidate files holding this process's cgroup memory limit, most specific
/// first, from the text of `/proc/self/cgroup`. Both hierarchies are tried:
/// v2 (`0::/path` → `memory.max`) and v1 (`N:memory:/path` →
/// `memory.limit_in_bytes`); the mount roots come last because inside a
/// cgroup namespace (containers) the process's own cgroup is the root.
pub(crate) fn cgroup_memory_limit_paths(proc_self_cgroup: &str) -> Vec<String> {
    let mut own = Vec::new();
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if !path.starts_with('/') {
            continue;
        }
        let path = path.trim_end_matches('/');
        if controllers.is_empty() {
            own.push(format!("/sys/fs/cgroup{path}/memory.max"));
        } else if controllers.split(',').any(|c| c == "memory") {
            own.push(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"));
        }
    }
    for root in [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ] {
        if !own.iter().any(|p| p == root) {
            own.push(root.to_owned());
        }
    }
    own
}

/// `1234567` → `"1,234,567"`.
pub(crate) fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Bytes in binary units with one decimal: `"3.4 GiB"`, `"512 B"`.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    // Display only: the precision lost converting to f64 does not show at
    // one decimal.
    #[allow(clippy::cast_precision_loss)]
    let mut value = n as f64 / 1024.0;
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

    #[test]
    fn single_values() {
        assert_eq!(u64_value("1048576\n"), Some(1_048_576));
        assert_eq!(u64_value(" 42 "), Some(42));
        assert_eq!(u64_value(""), None);
        assert_eq!(u64_value("-1"), None);
        assert_eq!(u64_value("12 13"), None);
        assert_eq!(u64_value("99999999999999999999999"), None);
        assert_eq!(u64_value("0x10"), None);
    }

    #[test]
    fn field_lists() {
        assert_eq!(
            u64_fields::<3>("287901\t383869\t575802\n"),
            Some([287_901, 383_869, 575_802])
        );
        assert_eq!(u64_fields::<2>("32768\t60999\n"), Some([32_768, 60_999]));
        assert_eq!(u64_fields::<3>("1 2"), None);
        assert_eq!(u64_fields::<3>("1 2 3 4"), None);
        assert_eq!(u64_fields::<3>("1 x 3"), None);
        assert_eq!(u64_fields::<2>(""), None);
    }

    #[test]
    fn meminfo_and_smaps_fields() {
        let meminfo = "MemTotal:       24684096 kB\nMemFree:  1 kB\nMemAvailable:   24244752 kB\n";
        assert_eq!(
            kib_field_bytes(meminfo, "MemAvailable"),
            Some(24_244_752 * 1024)
        );
        assert_eq!(
            kib_field_bytes(meminfo, "MemTotal"),
            Some(24_684_096 * 1024)
        );
        assert_eq!(kib_field_bytes(meminfo, "Mem"), None, "prefix is not a key");
        assert_eq!(kib_field_bytes(meminfo, "SwapTotal"), None);
        assert_eq!(
            kib_field_bytes("MemAvailable: lots kB", "MemAvailable"),
            None
        );
        assert_eq!(kib_field_bytes("MemAvailable: 1 MB", "MemAvailable"), None);
        assert_eq!(page_size_bytes("KernelPageSize:        4 kB"), Some(4096));
        assert_eq!(page_size_bytes("KernelPageSize:       64 kB"), Some(65_536));
        assert_eq!(page_size_bytes("KernelPageSize:        0 kB"), None);
        assert_eq!(page_size_bytes("KernelPageSize:        3 kB"), None);
    }

    #[test]
    fn cgroup_limits() {
        assert_eq!(cgroup_limit("max\n"), Some(CgroupLimit::Unlimited));
        assert_eq!(
            cgroup_limit("9223372036854771712\n"),
            Some(CgroupLimit::Unlimited)
        );
        assert_eq!(
            cgroup_limit("4294967296"),
            Some(CgroupLimit::Bytes(4_294_967_296))
        );
        assert_eq!(cgroup_limit("lots"), None);
    }

    #[test]
    fn cgroup_paths_for_both_hierarchies() {
        let v2 = cgroup_memory_limit_paths("0::/system.slice/tern.service\n");
        assert_eq!(
            v2.first().map(String::as_str),
            Some("/sys/fs/cgroup/system.slice/tern.service/memory.max")
        );
        let v1 = cgroup_memory_limit_paths("5:cpu,cpuacct:/a\n4:memory:/box/1\n0::/\n");
        assert_eq!(
            v1,
            vec![
                "/sys/fs/cgroup/memory/box/1/memory.limit_in_bytes".to_owned(),
                "/sys/fs/cgroup/memory.max".to_owned(),
                "/sys/fs/cgroup/memory/memory.limit_in_bytes".to_owned(),
            ]
        );
        let garbage = cgroup_memory_limit_paths("nonsense\n\n:::\n");
        assert_eq!(garbage.len(), 2, "only the mount roots: {garbage:?}");
    }

    #[test]
    fn number_formatting() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000), "1,000");
        assert_eq!(grouped(20_000), "20,000");
        assert_eq!(grouped(1_048_576), "1,048,576");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(8 << 20), "8.0 MiB");
        assert_eq!(human_bytes(3_686_000_000), "3.4 GiB");
        assert_eq!(human_bytes(u64::MAX), "16384.0 PiB");
    }
}
