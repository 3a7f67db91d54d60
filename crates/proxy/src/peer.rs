//! The inbound side's peer authentication as it changes while the proxy runs (the control
//! plane's `MeshPolicy` / `Policy`): new connections take the mode in force when they arrive,
//! open ones keep theirs.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::tls::PeerAuthentication;

/// Peer authentication modes: one for every port, and port-specific exceptions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerModes {
    /// The mode of ports without an entry in `ports`.
    pub default: PeerAuthentication,
    /// Modes by workload port (the port the client connected to).
    pub ports: BTreeMap<u16, PeerAuthentication>,
}

impl PeerModes {
    /// One mode for every port.
    pub fn all(mode: PeerAuthentication) -> Self {
        PeerModes {
            default: mode,
            ports: BTreeMap::new(),
        }
    }

    /// The mode for connections to `port`.
    pub fn mode_for(&self, port: u16) -> PeerAuthentication {
        self.ports.get(&port).copied().unwrap_or(self.default)
    }
}

/// A shared, replaceable [`PeerModes`]: the listener reads it once per new connection
/// (lock-free), the control plane's client replaces it.
#[derive(Clone, Debug, Default)]
pub struct PeerPolicy(Arc<ArcSwap<PeerModes>>);

impl PeerPolicy {
    /// A policy starting with `modes`.
    pub fn new(modes: PeerModes) -> Self {
        PeerPolicy(Arc::new(ArcSwap::from_pointee(modes)))
    }

    /// Replaces the modes; connections accepted from now on use them.
    pub fn set(&self, modes: PeerModes) {
        self.0.store(Arc::new(modes));
    }

    /// The modes in force.
    pub fn current(&self) -> Arc<PeerModes> {
        self.0.load_full()
    }

    /// The mode for a new connection to `port`.
    pub fn mode_for(&self, port: u16) -> PeerAuthentication {
        self.0.load().mode_for(port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_modes_override_the_default() {
        let policy = PeerPolicy::default();
        assert_eq!(policy.mode_for(27017), PeerAuthentication::Disable);
        policy.set(PeerModes {
            default: PeerAuthentication::Strict,
            ports: BTreeMap::from([(9080, PeerAuthentication::Permissive)]),
        });
        assert_eq!(policy.mode_for(27017), PeerAuthentication::Strict);
        assert_eq!(policy.mode_for(9080), PeerAuthentication::Permissive);
        let clone = policy.clone();
        clone.set(PeerModes::all(PeerAuthentication::Disable));
        assert_eq!(policy.mode_for(9080), PeerAuthentication::Disable);
    }
}
