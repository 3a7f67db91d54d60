//! `meshmeter capture`: installs (or removes) the transparent sidecar's traffic capture in the
//! current network namespace, through `iptables-restore` / `ip6tables-restore`.

use std::io::Write as _;
use std::process::{Command, ExitCode, Stdio};

use meshmeter_capture::{
    clean_commands, CaptureSpec, Cidr, Family, InboundPorts, DEFAULT_INBOUND_PROXY_PORT,
    DEFAULT_OUTBOUND_PROXY_PORT, DEFAULT_PROXY_UID,
};

/// Which iptables back end to drive.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    /// Use nft if its tools exist and the host already has nft rules, else legacy.
    Auto,
    /// `iptables-nft-restore`.
    Nft,
    /// `iptables-legacy-restore`.
    Legacy,
}

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Inbound ports to capture, comma-separated, `*` for all, or empty for none.
    #[arg(long, default_value = "*")]
    inbound_ports: String,
    /// Inbound ports never captured, comma-separated.
    #[arg(long, value_delimiter = ',')]
    exclude_inbound_ports: Vec<u16>,
    /// Outbound destination ports never captured, comma-separated.
    #[arg(long, value_delimiter = ',')]
    exclude_outbound_ports: Vec<u16>,
    /// Outbound destination CIDRs never captured, comma-separated.
    #[arg(long, value_delimiter = ',')]
    exclude_outbound_cidrs: Vec<Cidr>,
    /// When given, only outbound traffic to these CIDRs is captured.
    #[arg(long, value_delimiter = ',')]
    include_outbound_cidrs: Vec<Cidr>,
    /// The sidecar's uid: its own traffic is never redirected.
    #[arg(long, default_value_t = DEFAULT_PROXY_UID)]
    proxy_uid: u32,
    /// The sidecar's inbound listener port.
    #[arg(long, default_value_t = DEFAULT_INBOUND_PROXY_PORT)]
    inbound_proxy_port: u16,
    /// The sidecar's outbound listener port.
    #[arg(long, default_value_t = DEFAULT_OUTBOUND_PROXY_PORT)]
    outbound_proxy_port: u16,
    /// iptables back end.
    #[arg(long, value_enum, default_value = "auto")]
    backend: Backend,
    /// Print the iptables-restore input instead of applying it.
    #[arg(long)]
    dry_run: bool,
    /// Remove what `meshmeter capture` added, and nothing else.
    #[arg(long)]
    clean: bool,
}

fn spec(args: &Args) -> Result<CaptureSpec, String> {
    let inbound_ports = if args.inbound_ports.trim() == "*" {
        InboundPorts::All
    } else if args.inbound_ports.trim().is_empty() {
        // `--inbound-ports=`: no inbound capture (a pod that declares no port).
        InboundPorts::Only(Vec::new())
    } else {
        let ports = args.inbound_ports.split(',').map(|p| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| format!("--inbound-ports: {p:?} is not a port"))
        });
        InboundPorts::Only(ports.collect::<Result<_, _>>()?)
    };
    let s = CaptureSpec {
        inbound_proxy_port: args.inbound_proxy_port,
        outbound_proxy_port: args.outbound_proxy_port,
        proxy_uid: args.proxy_uid,
        inbound_ports,
        exclude_inbound_ports: args.exclude_inbound_ports.clone(),
        exclude_outbound_ports: args.exclude_outbound_ports.clone(),
        exclude_outbound_cidrs: args.exclude_outbound_cidrs.clone(),
        include_outbound_cidrs: args.include_outbound_cidrs.clone(),
    };
    s.validate().map_err(|e| e.to_string())?;
    Ok(s)
}

/// The tool name prefix for a family and back end, e.g. `ip6tables-nft`.
fn tool(family: Family, backend: Backend) -> String {
    let base = if family == Family::V4 {
        "iptables"
    } else {
        "ip6tables"
    };
    let backend = match backend {
        Backend::Auto => detect(),
        b => b,
    };
    match backend {
        Backend::Legacy => format!("{base}-legacy"),
        _ => format!("{base}-nft"),
    }
}

/// Picks the back end the host already uses: legacy if it has legacy rules, else nft.
fn detect() -> Backend {
    let legacy = Command::new("iptables-legacy-save")
        .stderr(Stdio::null())
        .output();
    match legacy {
        Ok(o)
            if String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.starts_with("-A")) =>
        {
            Backend::Legacy
        }
        _ => Backend::Nft,
    }
}

fn clean(family: Family, backend: Backend) {
    let t = tool(family, backend);
    for cmd in clean_commands() {
        // Absent rules/chains are fine: clean is idempotent.
        let _ = Command::new(&t).args(&cmd).stderr(Stdio::null()).status();
    }
}

fn apply(family: Family, backend: Backend, rules: &str) -> Result<(), String> {
    let t = format!("{}-restore", tool(family, backend));
    let mut child = Command::new(&t)
        .arg("--noflush")
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {t}: {e}"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(rules.as_bytes())
        .map_err(|e| format!("{t}: {e}"))?;
    let st = child.wait().map_err(|e| format!("{t}: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("{t} failed ({st})"))
    }
}

pub(crate) fn run(args: Args) -> ExitCode {
    let spec = match spec(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    for family in [Family::V4, Family::V6] {
        if args.dry_run {
            if args.clean {
                for c in clean_commands() {
                    println!("{} {}", tool(family, args.backend), c.join(" "));
                }
            } else {
                println!("# {}-restore --noflush", tool(family, args.backend));
                print!("{}", spec.render(family));
            }
            continue;
        }
        // Removing first makes a second run change nothing.
        clean(family, args.backend);
        if !args.clean {
            if let Err(e) = apply(family, args.backend, &spec.render(family)) {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        }
    }
    ExitCode::SUCCESS
}
