//! Helpers for tests that start real servers on real sockets, shared by
//! the crates' test suites so that each picks ports the same way.
//!
//! A test that binds port 0 gets a port from the kernel's ephemeral range.
//! That is right for a listener bound once, but not for one a test closes
//! and binds again (a member restarting on its old address): while it is
//! closed, any outgoing connection on the machine may be given the same
//! port as its local end, and the rebind fails. Ports below the ephemeral
//! range are never handed out that way.

/// A free port below the kernel's ephemeral range, chosen at random from
/// `seed` and checked by binding it, for a listener that a test will close
/// and bind again.
pub fn stable_port(seed: u64) -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()))
        .unwrap_or(32768);
    let (from, to) = (low.saturating_sub(12000).max(1025), low.max(1026));
    let mut x = seed;
    loop {
        x = crate::splitmix::mix(x);
        let port = from + (x % u64::from(to - from)) as u16;
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stable_ports_are_free_and_below_the_ephemeral_range() {
        let port = super::stable_port(7);
        let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()))
            .unwrap_or(32768);
        assert!(port < low.max(1026) && port >= 1025, "{port}");
        std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port is free");
    }
}
