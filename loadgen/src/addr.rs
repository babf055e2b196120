//! Server and source addresses. Load goes to loopback only; each worker
//! binds its sockets to its own 127.x.y.z source addresses so the
//! (source address, source port, server address, server port) tuples never
//! run out.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

/// Splits `HOST:PORT` / `[V6]:PORT`.
pub fn split_host_port(server: &str) -> Option<(String, u16)> {
    let server = server.trim();
    let (host, port) = if let Some(rest) = server.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        (host, after.strip_prefix(':')?)
    } else {
        let (host, port) = server.rsplit_once(':')?;
        if host.contains(':') {
            return None;
        }
        (host, port)
    };
    if host.is_empty() {
        return None;
    }
    Some((host.to_owned(), port.parse().ok()?))
}

/// True when `server` names a loopback address (127.0.0.0/8, ::1, or
/// `localhost`).
pub fn is_loopback_target(server: &str) -> bool {
    let Some((host, _)) = split_host_port(server) else {
        return false;
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Resolves `server` to a loopback socket address (IPv4 preferred).
pub fn resolve(server: &str) -> Option<SocketAddr> {
    let (host, port) = split_host_port(server)?;
    let addrs: Vec<SocketAddr> = (host.as_str(), port).to_socket_addrs().ok()?.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4() && a.ip().is_loopback())
        .or_else(|| addrs.iter().find(|a| a.ip().is_loopback()))
        .copied()
}

/// The `index`-th source address counting from `first`, skipping
/// addresses whose last octet is 0 or 255. `None` past 127.255.255.254.
pub fn source_ip(first: Ipv4Addr, index: u32) -> Option<Ipv4Addr> {
    // Map to a space of "usable last octets" (1..=254) and back.
    let f = u32::from(first);
    let (hi, lo) = (f >> 8, (f & 0xff).clamp(1, 254));
    let pos = u64::from(hi) * 254 + u64::from(lo - 1) + u64::from(index);
    let hi = u32::try_from(pos / 254).ok()?;
    let lo = u32::try_from(pos % 254).ok()? + 1;
    if hi >> 16 != 127 {
        return None;
    }
    Some(Ipv4Addr::from((hi << 8) | lo))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_and_loopback() {
        assert_eq!(
            split_host_port("127.0.0.1:7443"),
            Some(("127.0.0.1".into(), 7443))
        );
        assert_eq!(split_host_port("[::1]:80"), Some(("::1".into(), 80)));
        assert_eq!(split_host_port("::1:80"), None);
        assert_eq!(split_host_port("nohost"), None);
        assert!(is_loopback_target("127.9.9.9:1"));
        assert!(is_loopback_target("localhost:7443"));
        assert!(is_loopback_target("[::1]:7443"));
        assert!(!is_loopback_target("10.0.0.1:7443"));
        assert!(!is_loopback_target("example.com:7443"));
        assert_eq!(resolve("127.0.0.1:5"), Some("127.0.0.1:5".parse().unwrap()));
    }

    #[test]
    fn source_ips_skip_network_and_broadcast_octets() {
        let first = Ipv4Addr::new(127, 0, 1, 1);
        assert_eq!(source_ip(first, 0), Some(first));
        assert_eq!(source_ip(first, 253), Some(Ipv4Addr::new(127, 0, 1, 254)));
        assert_eq!(source_ip(first, 254), Some(Ipv4Addr::new(127, 0, 2, 1)));
        assert_eq!(
            source_ip(Ipv4Addr::new(127, 0, 0, 0), 0),
            Some(Ipv4Addr::new(127, 0, 0, 1))
        );
        assert_eq!(source_ip(Ipv4Addr::new(127, 255, 255, 254), 1), None);
        let mut seen = std::collections::HashSet::new();
        for i in 0..2_000 {
            let ip = source_ip(first, i).unwrap();
            let last = ip.octets()[3];
            assert!(last != 0 && last != 255);
            assert!(seen.insert(ip));
        }
    }
}
