//! The seed's two pods as Linux network namespaces on one machine, for the transparent
//! sidecar's end-to-end test and `meshmeter demo --transparent`.
//!
//! [`Pods::new`] makes three namespaces: a *switch* holding a bridge (`10.213.N.1`,
//! `fd00:213:N::1`), where the telemetry server runs, and two pods, *ratings* (`.2`) and
//! *mongodb* (`.3`), each joined to the bridge by a veth pair. Nothing is added to the root
//! namespace. [`Pods::spawn`] runs a program inside a namespace (optionally as another uid,
//! as a sidecar runs), and [`in_ns`] runs a closure on a thread that entered one, so that the
//! sockets it makes belong there. Dropping [`Pods`] kills what it started and deletes the
//! namespaces, with every interface, address and iptables rule in them, however the caller
//! ends (a panic included).
//!
//! [`PodNet`] is the same with any number of named pods, and *service addresses* (VIPs) in the
//! pods' subnet that no pod holds: a pod's connection to one leaves through its interface
//! towards the bridge, so capture sees it as outbound traffic, and only a routing sidecar
//! can take it anywhere (the traffic-management tests).
//!
//! Needs root, `ip` (iproute2), and for capture `iptables-restore` and `setpriv`;
//! [`unavailable`] says what is missing.

#![warn(missing_docs)]

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::sched::{setns, CloneFlags};

/// The uid capture exempts from redirection, which the sidecar runs as.
pub const SIDECAR_UID: u32 = 1337;

/// A step of building or using the namespaces that failed.
#[derive(Debug, thiserror::Error)]
pub enum PodnetError {
    /// A command could not be started.
    #[error("cannot run {command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A command ran and failed.
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// How it exited.
        status: String,
        /// What it wrote to stderr.
        stderr: String,
    },
    /// A working file could not be written.
    #[error("cannot write {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

fn run(args: &[&str]) -> Result<(), PodnetError> {
    let command = args.join(" ");
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| PodnetError::Spawn {
            command: command.clone(),
            source,
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(PodnetError::Failed {
        command,
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}

/// Why pods cannot be built here (a missing tool, or no permission to create a network
/// namespace), or `None` when they can.
pub fn unavailable() -> Option<String> {
    for tool in ["ip", "iptables-restore", "setpriv"] {
        if Command::new(tool).arg("--version").output().is_err() {
            return Some(format!(
                "{tool} is not installed (scripts/install-test-deps.sh installs it)"
            ));
        }
    }
    // Tests of one binary probe in parallel: each needs a name of its own, or one's `add`
    // fails on the other's namespace and it skips for nothing.
    static PROBES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = format!("mmprobe{}-{n}", std::process::id());
    if let Err(e) = run(&["ip", "netns", "add", &probe]) {
        return Some(format!(
            "cannot create a network namespace (needs root): {e}"
        ));
    }
    let _ = run(&["ip", "netns", "del", &probe]);
    None
}

/// One of the three namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// The bridge, and whatever runs outside the pods (the telemetry server).
    Switch,
    /// The ratings pod (the client side).
    Ratings,
    /// The mongodb pod (the server side).
    Mongodb,
}

impl Place {
    fn host(self) -> u8 {
        match self {
            Place::Switch => 1,
            Place::Ratings => 2,
            Place::Mongodb => 3,
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Place::Switch => "s",
            Place::Ratings => "r",
            Place::Mongodb => "m",
        }
    }
}

/// The namespaces and the processes started in them.
#[derive(Debug)]
pub struct Pods {
    prefix: String,
    net: u8,
    dir: PathBuf,
    children: Vec<(String, Child)>,
}

impl Drop for Pods {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for (name, _) in &self.children {
                eprintln!("--- {name} log ---\n{}", self.log(name));
            }
        }
        for place in [Place::Ratings, Place::Mongodb, Place::Switch] {
            let _ = run(&["ip", "netns", "del", &self.ns(place)]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Pods {
    /// Builds the namespaces `PREFIX{s,r,m}` on `10.213.NET.0/24` and `fd00:213:NET::/64`;
    /// working files go to a fresh directory under the system's temporary directory. Both
    /// prefix and net must be unique among the pods alive on the machine.
    pub fn new(prefix: &str, net: u8) -> Result<Pods, PodnetError> {
        let dir = std::env::temp_dir().join(format!("meshmeter-{prefix}"));
        std::fs::create_dir_all(&dir).map_err(|source| PodnetError::File {
            path: dir.clone(),
            source,
        })?;
        let pods = Pods {
            prefix: prefix.to_owned(),
            net,
            dir,
            children: Vec::new(),
        };
        // The sidecar runs as another uid and reads its files from here.
        run(&["chmod", "755", &pods.dir.to_string_lossy()])?;
        pods.wire()?;
        Ok(pods)
    }

    /// The namespace's name, for `ip netns exec`.
    pub fn ns(&self, place: Place) -> String {
        format!("{}{}", self.prefix, place.suffix())
    }

    /// The place's IPv4 address.
    pub fn ipv4(&self, place: Place) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 213, self.net, place.host()))
    }

    /// The place's IPv6 address.
    pub fn ipv6(&self, place: Place) -> IpAddr {
        let net = u16::from(self.net);
        IpAddr::V6(Ipv6Addr::new(
            0xfd00,
            0x213,
            net,
            0,
            0,
            0,
            0,
            u16::from(place.host()),
        ))
    }

    /// Namespaces, a bridge in the switch, one veth per pod.
    fn wire(&self) -> Result<(), PodnetError> {
        let s = self.ns(Place::Switch);
        for place in [Place::Switch, Place::Ratings, Place::Mongodb] {
            let ns = self.ns(place);
            run(&["ip", "netns", "add", &ns])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        }
        run(&["ip", "-n", &s, "link", "add", "br0", "type", "bridge"])?;
        self.address(&s, "br0", Place::Switch)?;
        run(&["ip", "-n", &s, "link", "set", "br0", "up"])?;
        for (place, port) in [(Place::Ratings, "v-r"), (Place::Mongodb, "v-m")] {
            let pod = self.ns(place);
            run(&[
                "ip", "-n", &s, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", &pod,
            ])?;
            run(&["ip", "-n", &s, "link", "set", port, "master", "br0", "up"])?;
            self.address(&pod, "eth0", place)?;
            run(&["ip", "-n", &pod, "link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    fn address(&self, ns: &str, dev: &str, place: Place) -> Result<(), PodnetError> {
        let v4 = format!("{}/24", self.ipv4(place));
        run(&["ip", "-n", ns, "addr", "add", &v4, "dev", dev])?;
        // No duplicate address detection: the address is usable at once, not in a second.
        let v6 = format!("{}/64", self.ipv6(place));
        run(&[
            "ip", "-n", ns, "-6", "addr", "add", &v6, "dev", dev, "nodad",
        ])
    }

    /// Writes a working file readable by the sidecar's uid; returns its path.
    pub fn file(&self, name: &str, text: &str) -> Result<PathBuf, PodnetError> {
        let path = self.dir.join(name);
        let written = std::fs::write(&path, text).and_then(|()| {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
        });
        written.map_err(|source| PodnetError::File {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }

    /// The workloads file (see `meshmeter mixer --help`) naming the two pods by their
    /// addresses: ratings-v2 and mongodb-v1 (the service `mongodb.default.svc.cluster.local`).
    pub fn workloads_yaml(&self) -> String {
        let (r4, r6) = (self.ipv4(Place::Ratings), self.ipv6(Place::Ratings));
        let (m4, m6) = (self.ipv4(Place::Mongodb), self.ipv6(Place::Mongodb));
        format!(
            "workloads:\n\
             - name: ratings-v2\n  namespace: default\n  labels: {{app: ratings, version: v2}}\n  ips: [{r4}, \"{r6}\"]\n\
             - name: mongodb-v1\n  namespace: default\n  labels: {{app: mongodb, version: v1}}\n  ips: [{m4}, \"{m6}\"]\n  services: [mongodb.default.svc.cluster.local]\n"
        )
    }

    /// Runs `program args` in the place's namespace, as `uid` (and the same gid) when given.
    /// Its stdout and stderr go to a log file, read with [`Pods::log`]; it is killed when the
    /// pods are dropped.
    pub fn spawn(
        &mut self,
        name: &str,
        place: Place,
        uid: Option<u32>,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<(), PodnetError> {
        let child = spawn_in(&self.dir, name, &self.ns(place), uid, program, args, env)?;
        self.children.push((name.to_owned(), child));
        Ok(())
    }

    /// Runs `program args` in the place's namespace to completion.
    pub fn exec(&self, place: Place, program: &Path, args: &[&str]) -> Result<(), PodnetError> {
        let ns = self.ns(place);
        let program = program.to_string_lossy();
        let mut all = vec!["ip", "netns", "exec", &ns, &program];
        all.extend_from_slice(args);
        run(&all)
    }

    /// What a process started by [`Pods::spawn`] has logged so far.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Runs `f` on a thread that entered the place's namespace; see [`in_ns`].
    pub fn run_in<T: Send + 'static>(
        &self,
        place: Place,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<T> {
        in_ns(&self.ns(place), f)
    }
}

/// Starts `program args` in namespace `ns` (as `uid` when given), output to `DIR/NAME.log`.
fn spawn_in(
    dir: &Path,
    name: &str,
    ns: &str,
    uid: Option<u32>,
    program: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<Child, PodnetError> {
    let path = dir.join(format!("{name}.log"));
    let log = File::create(&path).map_err(|source| PodnetError::File {
        path: path.clone(),
        source,
    })?;
    let err = log
        .try_clone()
        .map_err(|source| PodnetError::File { path, source })?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]);
    if let Some(uid) = uid {
        let uid = uid.to_string();
        cmd.args([
            "setpriv",
            "--reuid",
            &uid,
            "--regid",
            &uid,
            "--clear-groups",
        ]);
    }
    cmd.arg(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(|source| PodnetError::Spawn {
            command: format!("{} {}", program.display(), args.join(" ")),
            source,
        })
}

/// Runs `f` on a new thread that entered network namespace `ns` (a name under
/// `/run/netns`). Sockets it makes belong to `ns` and keep working from any thread.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    let path = format!("/run/netns/{ns}");
    let thread = std::thread::spawn(move || -> io::Result<T> {
        let fd = File::open(&path)?;
        // Only this thread moves: setns applies to the calling thread.
        setns(&fd, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        Ok(f())
    });
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// A bridge namespace (the *switch*, `10.213.NET.1`) and any number of named pods
/// (`10.213.NET.2`, `.3`, ... in the order given), each joined to the bridge by a veth pair;
/// IPv4 only. Dropping it kills what it started and deletes the namespaces.
#[derive(Debug)]
pub struct PodNet {
    prefix: String,
    net: u8,
    dir: PathBuf,
    pods: Vec<String>,
    children: Vec<(String, Child)>,
}

/// The name [`PodNet`] gives its bridge namespace.
pub const SWITCH: &str = "switch";

/// The first host number of [`PodNet::vip`] addresses: pods are numbered below it.
const FIRST_VIP: u8 = 200;

impl Drop for PodNet {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for (name, _) in &self.children {
                eprintln!("--- {name} log ---\n{}", self.log(name));
            }
        }
        let mut all: Vec<String> = self.pods.clone();
        all.push(SWITCH.to_owned());
        for pod in all {
            let _ = run(&["ip", "netns", "del", &self.ns(&pod)]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl PodNet {
    /// Builds the switch and `pods` (at most 198) on `10.213.NET.0/24`; namespaces are named
    /// `PREFIX` + `s` (the switch) or `PREFIX` + `p` + the pod's number. Working files go to a
    /// fresh directory under the system's temporary directory. Both prefix and net must be
    /// unique among the pods alive on the machine.
    pub fn new(prefix: &str, net: u8, pods: &[&str]) -> Result<PodNet, PodnetError> {
        assert!(
            pods.len() < usize::from(FIRST_VIP - 2),
            "at most {} pods",
            FIRST_VIP - 2
        );
        let dir = std::env::temp_dir().join(format!("meshmeter-{prefix}"));
        std::fs::create_dir_all(&dir).map_err(|source| PodnetError::File {
            path: dir.clone(),
            source,
        })?;
        let net = PodNet {
            prefix: prefix.to_owned(),
            net,
            dir,
            pods: pods.iter().map(|p| (*p).to_owned()).collect(),
            children: Vec::new(),
        };
        run(&["chmod", "755", &net.dir.to_string_lossy()])?;
        net.wire()?;
        Ok(net)
    }

    fn index(&self, pod: &str) -> Option<usize> {
        self.pods.iter().position(|p| p == pod)
    }

    /// The namespace of `pod` ([`SWITCH`] for the bridge's), for `ip netns exec`.
    ///
    /// # Panics
    /// When `pod` is neither a pod of this net nor [`SWITCH`].
    pub fn ns(&self, pod: &str) -> String {
        if pod == SWITCH {
            return format!("{}s", self.prefix);
        }
        let i = self
            .index(pod)
            .unwrap_or_else(|| panic!("no pod '{pod}' in this net"));
        format!("{}p{i}", self.prefix)
    }

    /// The address of `pod` (or of the switch).
    pub fn ip(&self, pod: &str) -> IpAddr {
        let host = if pod == SWITCH {
            1
        } else {
            let i = self
                .index(pod)
                .unwrap_or_else(|| panic!("no pod '{pod}' in this net"));
            u8::try_from(i + 2).expect("fewer pods than FIRST_VIP")
        };
        IpAddr::V4(Ipv4Addr::new(10, 213, self.net, host))
    }

    /// Service address number `n` (`10.213.NET.200+n`): in the pods' subnet, held by no pod.
    pub fn vip(&self, n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(
            10,
            213,
            self.net,
            FIRST_VIP.saturating_add(n),
        ))
    }

    fn wire(&self) -> Result<(), PodnetError> {
        let s = self.ns(SWITCH);
        run(&["ip", "netns", "add", &s])?;
        run(&["ip", "-n", &s, "link", "set", "lo", "up"])?;
        run(&["ip", "-n", &s, "link", "add", "br0", "type", "bridge"])?;
        let prefix = |pod: &str| format!("{}/24", self.ip(pod));
        run(&["ip", "-n", &s, "addr", "add", &prefix(SWITCH), "dev", "br0"])?;
        run(&["ip", "-n", &s, "link", "set", "br0", "up"])?;
        for (i, pod) in self.pods.iter().enumerate() {
            let ns = self.ns(pod);
            run(&["ip", "netns", "add", &ns])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            let port = format!("v-{i}");
            run(&[
                "ip", "-n", &s, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ])?;
            run(&["ip", "-n", &s, "link", "set", &port, "master", "br0", "up"])?;
            run(&["ip", "-n", &ns, "addr", "add", &prefix(pod), "dev", "eth0"])?;
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    /// Writes a working file readable by the sidecar's uid; returns its path.
    pub fn file(&self, name: &str, text: &str) -> Result<PathBuf, PodnetError> {
        let path = self.dir.join(name);
        let written = std::fs::write(&path, text).and_then(|()| {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
        });
        written.map_err(|source| PodnetError::File {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }

    /// Runs `program args` in `pod`'s namespace, as `uid` when given, under `name` (its log
    /// is [`PodNet::log`]`(name)`); it is killed when the net is dropped, or by
    /// [`PodNet::kill`].
    pub fn spawn(
        &mut self,
        name: &str,
        pod: &str,
        uid: Option<u32>,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<(), PodnetError> {
        let child = spawn_in(&self.dir, name, &self.ns(pod), uid, program, args, env)?;
        self.children.push((name.to_owned(), child));
        Ok(())
    }

    /// Kills the process started as `name` and waits for it; `false` when there is none.
    pub fn kill(&mut self, name: &str) -> bool {
        let Some(i) = self.children.iter().position(|(n, _)| n == name) else {
            return false;
        };
        let (_, mut child) = self.children.remove(i);
        let _ = child.kill();
        let _ = child.wait();
        true
    }

    /// Runs `program args` in `pod`'s namespace to completion.
    pub fn exec(&self, pod: &str, program: &Path, args: &[&str]) -> Result<(), PodnetError> {
        let ns = self.ns(pod);
        let program = program.to_string_lossy();
        let mut all = vec!["ip", "netns", "exec", &ns, &program];
        all.extend_from_slice(args);
        run(&all)
    }

    /// What a process started by [`PodNet::spawn`] has logged so far.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Runs `f` on a thread that entered `pod`'s namespace; see [`in_ns`].
    pub fn run_in<T: Send + 'static>(
        &self,
        pod: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<T> {
        in_ns(&self.ns(pod), f)
    }
}
