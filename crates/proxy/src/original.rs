//! The transparent sidecar's routing: a redirected connection's original destination, and the
//! loop guard that keeps the proxy from connecting to its own listeners.
//!
//! Capture (`meshmeter capture`) redirects TCP with the nat table's `REDIRECT` target; the
//! kernel's connection tracking remembers where the client meant to go, and
//! `SO_ORIGINAL_DST` (IPv4) / `IP6T_SO_ORIGINAL_DST` (IPv6) read it back on the accepted
//! socket. A connection that no rule redirected has no translation: the kernel answers with
//! the listener's own address (tracked, not translated) or `ENOENT` (not tracked at all). Both
//! are refused, as is any destination that is one of this process's transparent listeners:
//! forwarding there would feed the proxy its own connection, again and again.

use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::RwLock;

use nix::sys::socket::{getsockopt, sockopt, SockaddrIn, SockaddrIn6};
use tokio::net::TcpStream;

/// Why a transparent listener refused a connection instead of forwarding it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    /// The kernel knows no original destination: nothing redirected the connection here.
    #[error("no original destination (the connection was not redirected by capture): {0}")]
    NotRedirected(io::Error),
    /// The original destination is one of this process's transparent listeners.
    #[error("original destination {0} is the proxy's own listener: refused to avoid a loop")]
    Loop(SocketAddr),
}

/// The addresses of this process's transparent listeners. Process-wide, because a loop can
/// run through any of them (outbound into inbound and back), whichever listener accepted.
static OWN_LISTENERS: RwLock<Vec<SocketAddr>> = RwLock::new(Vec::new());

/// Marks `addr` as a transparent listener of this process until the guard is dropped.
pub(crate) fn register(addr: SocketAddr) -> Registration {
    OWN_LISTENERS
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(addr);
    Registration(addr)
}

/// Keeps a listener's address in the loop guard while it lives.
#[derive(Debug)]
pub(crate) struct Registration(SocketAddr);

impl Drop for Registration {
    fn drop(&mut self) {
        let mut own = OWN_LISTENERS
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(i) = own.iter().position(|a| *a == self.0) {
            own.swap_remove(i);
        }
    }
}

/// Where the client of `stream` meant to connect, refused when that is not somewhere the
/// proxy may forward to.
pub(crate) fn route(stream: &TcpStream) -> Result<SocketAddr, Refusal> {
    let local = stream.local_addr().map_err(Refusal::NotRedirected)?;
    let original = original_destination(stream, local).map_err(Refusal::NotRedirected)?;
    // Equal to the listener's own address: a client that connected to the listener itself
    // (tracked, not translated), or one redirected from the listener's port to itself.
    if original == local || is_own_listener(original, local.ip()) {
        return Err(Refusal::Loop(original));
    }
    Ok(original)
}

fn original_destination(stream: &TcpStream, local: SocketAddr) -> io::Result<SocketAddr> {
    // The accepted socket's family decides which table answers: an IPv6 listener is bound
    // IPv6-only, so its connections are never IPv4-mapped.
    match local {
        SocketAddr::V4(_) => {
            let raw = getsockopt(stream, sockopt::OriginalDst)?;
            Ok(SocketAddr::V4(SocketAddrV4::from(SockaddrIn::from(raw))))
        }
        SocketAddr::V6(_) => {
            let raw = getsockopt(stream, sockopt::Ip6tOriginalDst)?;
            Ok(SocketAddr::V6(SocketAddrV6::from(SockaddrIn6::from(raw))))
        }
    }
}

/// Whether `dst` reaches one of this process's transparent listeners: same port, and an
/// address that listener answers on (its own, or any local one when bound to a wildcard).
fn is_own_listener(dst: SocketAddr, accepted_on: IpAddr) -> bool {
    let candidates: Vec<SocketAddr> = OWN_LISTENERS
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .copied()
        .filter(|a| a.port() == dst.port())
        .collect();
    if candidates.is_empty() {
        return false;
    }
    let local = |ip: IpAddr| ip.is_loopback() || ip == accepted_on || is_interface_address(ip);
    candidates
        .iter()
        .any(|own| own.ip() == dst.ip() || (own.ip().is_unspecified() && local(dst.ip())))
}

/// Whether `ip` is assigned to an interface of this network namespace. Read afresh each time:
/// it runs only for destinations on one of the proxy's own ports, and addresses change.
fn is_interface_address(ip: IpAddr) -> bool {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        // Unknown: treat as local, since refusing a rare connection beats a loop.
        return true;
    };
    addrs.filter_map(|a| a.address).any(|a| {
        a.as_sockaddr_in().map(|v4| IpAddr::V4(v4.ip())) == Some(ip)
            || a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())) == Some(ip)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_listeners_by_port_and_address() {
        // Ports no other test in this binary listens on.
        let wildcard: SocketAddr = "0.0.0.0:1".parse().unwrap();
        let specific: SocketAddr = "127.0.0.9:2".parse().unwrap();
        let a = register(wildcard);
        let b = register(specific);
        assert!(is_own_listener(
            "127.0.0.1:1".parse().unwrap(),
            "10.0.0.1".parse().unwrap()
        ));
        assert!(is_own_listener(
            "10.0.0.1:1".parse().unwrap(),
            "10.0.0.1".parse().unwrap()
        ));
        // Same port on another machine: a remote peer, not a loop.
        assert!(!is_own_listener(
            "192.0.2.7:1".parse().unwrap(),
            "10.0.0.1".parse().unwrap()
        ));
        assert!(is_own_listener(
            "127.0.0.9:2".parse().unwrap(),
            "10.0.0.1".parse().unwrap()
        ));
        assert!(!is_own_listener(
            "127.0.0.8:2".parse().unwrap(),
            "10.0.0.1".parse().unwrap()
        ));
        drop((a, b));
        assert!(!is_own_listener(
            "127.0.0.1:1".parse().unwrap(),
            "10.0.0.1".parse().unwrap()
        ));
    }
}
