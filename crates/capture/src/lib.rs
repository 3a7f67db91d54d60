//! Capture rules for the transparent sidecar (`meshmeter capture`).
//!
//! The rules are plain data ([`CaptureSpec`]) rendered to `iptables-restore` input for one
//! address family. Everything lives in chains of our own so that removing them
//! ([`clean_commands`]) touches nothing another tool added.

#![warn(missing_docs)]

use std::fmt::Write as _;
use std::net::IpAddr;

/// Chain the nat table's PREROUTING jumps to: decides which inbound TCP is captured.
pub const INBOUND_CHAIN: &str = "MESHMETER_INBOUND";
/// Chain that redirects captured inbound TCP to the sidecar's inbound port.
pub const IN_REDIRECT_CHAIN: &str = "MESHMETER_IN_REDIRECT";
/// Chain the nat table's OUTPUT jumps to: decides which outbound TCP is captured.
pub const OUTPUT_CHAIN: &str = "MESHMETER_OUTPUT";
/// Chain that redirects captured outbound TCP to the sidecar's outbound port.
pub const REDIRECT_CHAIN: &str = "MESHMETER_REDIRECT";

/// The sidecar's inbound listener port, where captured inbound TCP is redirected (Istio's).
pub const DEFAULT_INBOUND_PROXY_PORT: u16 = 15006;
/// The sidecar's outbound listener port, where captured outbound TCP is redirected (Istio's).
pub const DEFAULT_OUTBOUND_PROXY_PORT: u16 = 15001;
/// The uid the sidecar runs as; its own connections are never captured (Istio's).
pub const DEFAULT_PROXY_UID: u32 = 1337;

/// Errors in a capture specification.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CaptureError {
    /// A CIDR did not parse as `ADDR/LEN` (or a bare address).
    #[error("invalid CIDR {0:?}: expected ADDRESS/PREFIX_LEN, e.g. 10.0.0.0/8 or fd00::/8")]
    BadCidr(String),
    /// A port of 0 cannot be matched or redirected to.
    #[error("invalid port 0 in {0}")]
    ZeroPort(&'static str),
}

/// An address block, already validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length.
    pub len: u8,
}

impl std::str::FromStr for Cidr {
    type Err = CaptureError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CaptureError::BadCidr(s.to_string());
        let (a, l) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = if l.is_empty() {
            max
        } else {
            l.parse::<u8>().map_err(|_| bad())?
        };
        if len > max {
            return Err(bad());
        }
        Ok(Cidr { addr, len })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Which inbound ports are captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundPorts {
    /// Every TCP port.
    All,
    /// Only these ports.
    Only(Vec<u16>),
}

/// Address family a rule set is rendered for (iptables vs ip6tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4 (`iptables-restore`).
    V4,
    /// IPv6 (`ip6tables-restore`).
    V6,
}

/// What to capture, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureSpec {
    /// The sidecar's inbound listener port.
    pub inbound_proxy_port: u16,
    /// The sidecar's outbound listener port.
    pub outbound_proxy_port: u16,
    /// The sidecar's uid: its own connections are never redirected (no loops).
    pub proxy_uid: u32,
    /// Inbound ports to capture.
    pub inbound_ports: InboundPorts,
    /// Inbound ports never captured.
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound destination ports never captured.
    pub exclude_outbound_ports: Vec<u16>,
    /// Outbound destinations never captured.
    pub exclude_outbound_cidrs: Vec<Cidr>,
    /// When non-empty, only these outbound destinations are captured.
    pub include_outbound_cidrs: Vec<Cidr>,
}

impl Default for CaptureSpec {
    fn default() -> Self {
        CaptureSpec {
            inbound_proxy_port: DEFAULT_INBOUND_PROXY_PORT,
            outbound_proxy_port: DEFAULT_OUTBOUND_PROXY_PORT,
            proxy_uid: DEFAULT_PROXY_UID,
            inbound_ports: InboundPorts::All,
            exclude_inbound_ports: Vec::new(),
            exclude_outbound_ports: Vec::new(),
            exclude_outbound_cidrs: Vec::new(),
            include_outbound_cidrs: Vec::new(),
        }
    }
}

impl CaptureSpec {
    /// Checks the ports; CIDRs are validated when parsed.
    pub fn validate(&self) -> Result<(), CaptureError> {
        if self.inbound_proxy_port == 0 {
            return Err(CaptureError::ZeroPort("inbound proxy port"));
        }
        if self.outbound_proxy_port == 0 {
            return Err(CaptureError::ZeroPort("outbound proxy port"));
        }
        Ok(())
    }

    /// Renders the `iptables-restore --noflush` input for one family.
    ///
    /// Declaring our chains flushes them, so applying twice yields the same chains; the two
    /// jumps from PREROUTING/OUTPUT are removed first by [`clean_commands`] to stay idempotent.
    pub fn render(&self, family: Family) -> String {
        let fam = |c: &&Cidr| {
            matches!(
                (family, c.addr),
                (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_))
            )
        };
        let lo = if family == Family::V4 {
            "127.0.0.1/32"
        } else {
            "::1/128"
        };
        let mut s = String::from("*nat\n");
        for c in [
            INBOUND_CHAIN,
            IN_REDIRECT_CHAIN,
            OUTPUT_CHAIN,
            REDIRECT_CHAIN,
        ] {
            let _ = writeln!(s, ":{c} - [0:0]");
        }
        let _ = writeln!(
            s,
            "-A {IN_REDIRECT_CHAIN} -p tcp -j REDIRECT --to-ports {}",
            self.inbound_proxy_port
        );
        let _ = writeln!(
            s,
            "-A {REDIRECT_CHAIN} -p tcp -j REDIRECT --to-ports {}",
            self.outbound_proxy_port
        );
        // Inbound: exclusions first, then the captured ports.
        for p in &self.exclude_inbound_ports {
            let _ = writeln!(s, "-A {INBOUND_CHAIN} -p tcp --dport {p} -j RETURN");
        }
        match &self.inbound_ports {
            InboundPorts::All => {
                let _ = writeln!(s, "-A {INBOUND_CHAIN} -p tcp -j {IN_REDIRECT_CHAIN}");
            }
            InboundPorts::Only(ports) => {
                for p in ports {
                    let _ = writeln!(
                        s,
                        "-A {INBOUND_CHAIN} -p tcp --dport {p} -j {IN_REDIRECT_CHAIN}"
                    );
                }
            }
        }
        // Outbound: the sidecar's own traffic and loopback are never redirected.
        let _ = writeln!(
            s,
            "-A {OUTPUT_CHAIN} -m owner --uid-owner {} -j RETURN",
            self.proxy_uid
        );
        let _ = writeln!(s, "-A {OUTPUT_CHAIN} -o lo -j RETURN");
        let _ = writeln!(s, "-A {OUTPUT_CHAIN} -d {lo} -j RETURN");
        for p in &self.exclude_outbound_ports {
            let _ = writeln!(s, "-A {OUTPUT_CHAIN} -p tcp --dport {p} -j RETURN");
        }
        for c in self.exclude_outbound_cidrs.iter().filter(fam) {
            let _ = writeln!(s, "-A {OUTPUT_CHAIN} -d {c} -j RETURN");
        }
        if self.include_outbound_cidrs.is_empty() {
            let _ = writeln!(s, "-A {OUTPUT_CHAIN} -p tcp -j {REDIRECT_CHAIN}");
        } else {
            // Only the listed blocks of this family; none listed for it means none captured.
            for c in self.include_outbound_cidrs.iter().filter(fam) {
                let _ = writeln!(s, "-A {OUTPUT_CHAIN} -p tcp -d {c} -j {REDIRECT_CHAIN}");
            }
        }
        let _ = writeln!(s, "-A PREROUTING -p tcp -j {INBOUND_CHAIN}");
        let _ = writeln!(s, "-A OUTPUT -p tcp -j {OUTPUT_CHAIN}");
        s.push_str("COMMIT\n");
        s
    }
}

/// The iptables argument lists that remove exactly what [`CaptureSpec::render`] added: the two
/// jumps, then our chains' rules, then the chains. Each may fail harmlessly when already absent.
pub fn clean_commands() -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let v = |a: &[&str]| a.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    out.push(v(&[
        "-t",
        "nat",
        "-D",
        "PREROUTING",
        "-p",
        "tcp",
        "-j",
        INBOUND_CHAIN,
    ]));
    out.push(v(&[
        "-t",
        "nat",
        "-D",
        "OUTPUT",
        "-p",
        "tcp",
        "-j",
        OUTPUT_CHAIN,
    ]));
    for c in [
        INBOUND_CHAIN,
        IN_REDIRECT_CHAIN,
        OUTPUT_CHAIN,
        REDIRECT_CHAIN,
    ] {
        out.push(v(&["-t", "nat", "-F", c]));
    }
    for c in [
        INBOUND_CHAIN,
        IN_REDIRECT_CHAIN,
        OUTPUT_CHAIN,
        REDIRECT_CHAIN,
    ] {
        out.push(v(&["-t", "nat", "-X", c]));
    }
    out
}

#[cfg(test)]
mod tests;
