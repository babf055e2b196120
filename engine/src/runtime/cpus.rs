//! Which CPUs this process may run on, so shard k is pinned to the k-th
//! allowed CPU rather than CPU k (a systemd `CPUAffinity=`/`AllowedCPUs=`
//! or a container cpuset may exclude low-numbered CPUs).

/// The CPUs in `/proc/self/status` `Cpus_allowed_list`, ascending; `None`
/// when it cannot be read (then shards pin to CPU k as before).
pub(crate) fn allowed() -> Option<Vec<usize>> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    parse_list(list.trim())
}

/// Parses a kernel CPU list such as `0-3,8,10-11`.
pub(crate) fn parse_list(list: &str) -> Option<Vec<usize>> {
    /// A bound on the list, so a hostile or odd value cannot make a huge Vec.
    const CPUS_MAX: usize = 65_536;
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo.trim().parse().ok()?, hi.trim().parse().ok()?),
            None => {
                let one: usize = part.trim().parse().ok()?;
                (one, one)
            }
        };
        if lo > hi || hi >= CPUS_MAX {
            return None;
        }
        cpus.extend(lo..=hi);
    }
    cpus.sort_unstable();
    cpus.dedup();
    (!cpus.is_empty()).then_some(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_cpu_lists_parse() {
        assert_eq!(parse_list("0-1"), Some(vec![0, 1]));
        assert_eq!(parse_list("2,4-6,9"), Some(vec![2, 4, 5, 6, 9]));
        assert_eq!(parse_list("3"), Some(vec![3]));
        assert_eq!(parse_list(""), None);
        assert_eq!(parse_list("5-2"), None);
        assert_eq!(parse_list("x"), None);
        assert_eq!(parse_list("0-99999999"), None);
        assert!(!allowed().unwrap_or_default().is_empty());
    }
}
