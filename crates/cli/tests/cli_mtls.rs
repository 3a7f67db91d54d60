//! The real binaries: `meshmeter ca` and two `meshmeter proxy` sidecars speaking mutual TLS,
//! and hostile clients (plaintext, `openssl s_client`, Python's `ssl`) against the STRICT one.

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BIN: &str = env!("CARGO_BIN_EXE_meshmeter");

/// Kills the process when the test ends, however it ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str]) -> Process {
    Process(
        Command::new(BIN)
            .args(args)
            .env("MESHMETER_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn free_addr() -> String {
    let l = StdListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

async fn get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

async fn wait_ready(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(addr, "/ready").await.is_none() {
        assert!(Instant::now() < deadline, "{addr} not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the sample line starting with `prefix` on `/metrics` at `admin`.
async fn metric(admin: &str, prefix: &str) -> String {
    let text = get(admin, "/metrics").await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no '{prefix}' in /metrics of {admin}"))
}

async fn eventually_metric(admin: &str, prefix: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = metric(admin, prefix).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{prefix} is {got}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `payload`, half-closes, reads to EOF (or the first error).
async fn talk(addr: &str, payload: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(payload).await;
    let _ = s.shutdown().await;
    let mut back = Vec::new();
    let _ = s.read_to_end(&mut back).await;
    back
}

struct Mesh {
    dir: PathBuf,
    /// The STRICT inbound sidecar in front of the echo server, and its admin address.
    server: String,
    server_admin: String,
    /// The outbound sidecar originating mTLS to `server`, and its admin address.
    client: String,
    client_admin: String,
    /// The CA's address and its bootstrap token file.
    ca: String,
    ca_admin: String,
    tokens: String,
    /// The CA first, then the two sidecars.
    processes: Vec<Process>,
}

async fn mesh(name: &str) -> Mesh {
    mesh_with(name, &[]).await
}

/// The CA, the STRICT inbound sidecar and the outbound one; `sidecar_args` go to both
/// sidecars.
async fn mesh_with(name: &str, sidecar_args: &[&str]) -> Mesh {
    let dir =
        std::env::temp_dir().join(format!("meshmeter-cli-mtls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |file: &str, text: &str| {
        let p = dir.join(file);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let tokens = write(
        "tokens",
        "# bootstrap tokens\nratings-token-0123456789 default/ratings\nmongodb-token-0123456789 default/mongodb\n",
    );
    let ratings_token = write("ratings.token", "ratings-token-0123456789\n");
    let mongodb_token = write("mongodb.token", "mongodb-token-0123456789\n");
    let root = dir.join("root.pem").display().to_string();
    let _ = std::fs::remove_file(&root);

    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = echo.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });

    let (ca, ca_admin) = (free_addr(), free_addr());
    let ca_process = spawn(&[
        "ca",
        "--listen",
        &ca,
        "--bootstrap-token-file",
        &tokens,
        "--write-root-cert",
        &root,
        "--metrics-addr",
        &ca_admin,
    ]);
    wait_ready(&ca_admin).await;
    let (server, server_admin) = (free_addr(), free_addr());
    let server_process = spawn(
        &[
            &[
                "proxy",
                "--listen",
                &server,
                "--upstream",
                &upstream,
                "--peer-authentication",
                "strict",
                "--ca-addr",
                &ca,
                "--ca-token-file",
                &mongodb_token,
                "--ca-root",
                &root,
                "--workload-identity",
                "cluster.local/ns/default/sa/mongodb",
                "--metrics-addr",
                &server_admin,
            ],
            sidecar_args,
        ]
        .concat(),
    );
    let (client, client_admin) = (free_addr(), free_addr());
    let client_process = spawn(
        &[
            &[
                "proxy",
                "--listen",
                &client,
                "--upstream",
                &server,
                "--reporter-kind",
                "outbound",
                "--tls-mode",
                "istio-mutual",
                "--upstream-identity",
                "spiffe://cluster.local/ns/default/sa/mongodb",
                "--ca-addr",
                &ca,
                "--ca-token-file",
                &ratings_token,
                "--ca-root",
                &root,
                "--namespace",
                "default",
                "--service-account",
                "ratings",
                "--metrics-addr",
                &client_admin,
            ],
            sidecar_args,
        ]
        .concat(),
    );
    wait_ready(&server_admin).await;
    wait_ready(&client_admin).await;
    Mesh {
        dir,
        server,
        server_admin,
        client,
        client_admin,
        ca,
        ca_admin,
        tokens,
        processes: vec![ca_process, server_process, client_process],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_and_two_sidecars_carry_bytes_over_mtls_and_strict_refuses_plaintext() {
    let mesh = mesh("basic").await;
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    assert!(talk(&mesh.client, &payload).await == payload);
    let plain = talk(&mesh.server, b"db.ratings.find({id: 1})\n").await;
    assert!(!plain.starts_with(b"db."), "plaintext was forwarded");

    eventually_metric(
        &mesh.server_admin,
        "meshmeter_proxy_mtls_connections_total{side=\"inbound\"}",
        "1",
    )
    .await;
    eventually_metric(
        &mesh.server_admin,
        "meshmeter_proxy_tls_refused_total{reason=\"not_tls\",side=\"inbound\"}",
        "1",
    )
    .await;
    eventually_metric(
        &mesh.server_admin,
        "meshmeter_proxy_received_bytes_total",
        "200000",
    )
    .await;
    eventually_metric(
        &mesh.client_admin,
        "meshmeter_proxy_mtls_connections_total{side=\"upstream\"}",
        "1",
    )
    .await;
    eventually_metric(
        &mesh.client_admin,
        "meshmeter_proxy_sent_bytes_total",
        "200000",
    )
    .await;
    assert_eq!(
        metric(&mesh.ca_admin, "meshmeter_ca_certificates_issued_total").await,
        "2"
    );
    assert_eq!(
        metric(
            &mesh.client_admin,
            "meshmeter_proxy_certificates_installed_total"
        )
        .await,
        "1"
    );
}

/// Writes `text` to `path` as a kubelet updates a mounted ConfigMap: whole, in one rename.
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A root rotation without restarting a sidecar: the CA comes back under a new root, the new
/// root is added to the bundle file, certificates renew under it, the old root is removed,
/// and traffic flows at every step. A bundle file that turns unusable is reported and the
/// bundle in use stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_rotates_through_the_bundle_file_without_restarting_the_sidecars() {
    // Renewal is due at 8 s, the certificate expires at 12 s: the new CA is in place before
    // the first renewal, and the bundle change comes long before the expiry.
    let args = [
        "--ca-root-reload-interval",
        "100ms",
        "--workload-cert-ttl",
        "12s",
    ];
    let mut mesh = mesh_with("root-rotation", &args).await;
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 249) as u8).collect();
    assert!(talk(&mesh.client, &payload).await == payload);
    let old_root = std::fs::read_to_string(mesh.dir.join("root.pem")).unwrap();
    let admins = [mesh.client_admin.clone(), mesh.server_admin.clone()];
    for admin in &admins {
        eventually_metric(admin, "meshmeter_proxy_trust_bundle_roots", "1").await;
    }

    // The CA is replaced by one with a new root, on the same address. The sidecars do not
    // trust it yet: its certificates could not even reach them (the CA's own TLS fails).
    drop(mesh.processes.remove(0));
    let new_root_file = mesh.dir.join("root2.pem");
    let new_ca_admin = free_addr();
    let old_root_file = mesh.dir.join("root1.pem");
    std::fs::write(&old_root_file, &old_root).unwrap();
    let ca = spawn(&[
        "ca",
        "--listen",
        &mesh.ca,
        "--bootstrap-token-file",
        &mesh.tokens,
        "--write-root-cert",
        &new_root_file.display().to_string(),
        "--extra-root-certs",
        &old_root_file.display().to_string(),
        "--metrics-addr",
        &new_ca_admin,
    ]);
    wait_ready(&new_ca_admin).await;
    // The new CA's bundle: its own root, then the old one (--extra-root-certs).
    let both_roots = std::fs::read_to_string(&new_root_file).unwrap();
    let end = "-----END CERTIFICATE-----\n";
    let new_root = &both_roots[..both_roots.find(end).unwrap() + end.len()];
    assert_ne!(old_root, new_root);
    assert_eq!(both_roots, format!("{new_root}{old_root}"));
    for admin in &admins {
        let deadline = Instant::now() + Duration::from_secs(20);
        while metric(admin, "meshmeter_proxy_certificate_rotation_failures_total")
            .await
            .parse::<u64>()
            .unwrap()
            == 0
        {
            assert!(
                Instant::now() < deadline,
                "{admin}: no failed renewal against the new CA"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(talk(&mesh.client, &payload).await == payload);

    // Both roots, as the new CA publishes them: renewals now succeed under the new one.
    let root_file = mesh.dir.join("root.pem");
    replace_file(&root_file, &both_roots);
    for admin in &admins {
        eventually_metric(admin, "meshmeter_proxy_trust_bundle_roots", "2").await;
        eventually_metric(admin, "meshmeter_proxy_trust_bundle_reloads_total", "1").await;
        eventually_metric(
            admin,
            "meshmeter_proxy_certificate_authority_unavailable",
            "0",
        )
        .await;
    }
    let issued = metric(&new_ca_admin, "meshmeter_ca_certificates_issued_total").await;
    assert!(
        issued.parse::<u64>().unwrap() >= 2,
        "both sidecars renewed from the new CA: {issued} issued"
    );
    assert!(talk(&mesh.client, &payload).await == payload);

    // An unusable file changes nothing but is reported.
    replace_file(&root_file, "not a certificate\n");
    for admin in &admins {
        eventually_metric(admin, "meshmeter_proxy_trust_bundle_file_invalid", "1").await;
        eventually_metric(
            admin,
            "meshmeter_proxy_trust_bundle_reload_failures_total",
            "1",
        )
        .await;
        assert_eq!(
            metric(admin, "meshmeter_proxy_trust_bundle_roots").await,
            "2"
        );
    }
    assert!(talk(&mesh.client, &payload).await == payload);

    // The old root removed: the sidecars, both holding certificates from the new root, go on.
    replace_file(&root_file, new_root);
    for admin in &admins {
        eventually_metric(admin, "meshmeter_proxy_trust_bundle_roots", "1").await;
        eventually_metric(admin, "meshmeter_proxy_trust_bundle_reloads_total", "2").await;
        eventually_metric(admin, "meshmeter_proxy_trust_bundle_file_invalid", "0").await;
    }
    assert!(talk(&mesh.client, &payload).await == payload);
    eventually_metric(
        &mesh.server_admin,
        "meshmeter_proxy_mtls_connections_total{side=\"inbound\"}",
        "5",
    )
    .await;
    eventually_metric(
        &mesh.server_admin,
        "meshmeter_proxy_received_bytes_total",
        "500000",
    )
    .await;
    drop(ca);
}

#[tokio::test]
async fn the_proxy_refuses_mtls_flags_without_the_ca_with_exit_2() {
    let out = Command::new(BIN)
        .env("MESHMETER_LOG", "error")
        .args([
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "127.0.0.1:1",
            "--peer-authentication",
            "strict",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: --ca-addr is required with --tls-mode istio-mutual or --peer-authentication strict|permissive"
    );
}

/// A sidecar started while its CA is away: with `--ca-start-timeout 1s` it exits 1 naming
/// the CA; with `0s` it waits, and once a CA answers under the root then published in the
/// bundle file, it gets its certificate and becomes ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_started_before_its_ca_exits_after_the_start_timeout_or_waits() {
    let dir =
        std::env::temp_dir().join(format!("meshmeter-cli-mtls-late-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |file: &str| dir.join(file).display().to_string();
    std::fs::write(path("tokens"), "mongodb-token-0123456789 default/mongodb\n").unwrap();
    std::fs::write(path("mongodb.token"), "mongodb-token-0123456789\n").unwrap();
    // A root from a CA that is gone again: nothing answers on its address.
    let (ca, ca_admin) = (free_addr(), free_addr());
    let ca_args = |admin: &str| {
        [
            "ca",
            "--listen",
            &ca,
            "--bootstrap-token-file",
            &path("tokens"),
            "--write-root-cert",
            &path("root.pem"),
            "--metrics-addr",
            admin,
        ]
        .map(str::to_owned)
    };
    let first = spawn(&ca_args(&ca_admin).each_ref().map(String::as_str));
    wait_ready(&ca_admin).await;
    drop(first);
    let sidecar = |timeout: &str, admin: &str| {
        Command::new(BIN)
            .env("MESHMETER_LOG", "error")
            .args([
                "proxy",
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                "127.0.0.1:1",
            ])
            .args(["--peer-authentication", "strict", "--ca-addr", &ca])
            .args([
                "--ca-token-file",
                &path("mongodb.token"),
                "--ca-root",
                &path("root.pem"),
            ])
            .args(["--workload-identity", "cluster.local/ns/default/sa/mongodb"])
            .args(["--ca-start-timeout", timeout, "--metrics-addr", admin])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };

    let started = Instant::now();
    let out = sidecar("1s", &free_addr()).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "no workload certificate from the CA at {ca}: no certificate from the CA within 1s"
        )),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    let admin = free_addr();
    let mut waiting = Process(sidecar("0s", &admin));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        waiting.0.try_wait().unwrap().is_none(),
        "the sidecar gave up"
    );
    // A new CA (a new root, written over the bundle file) on the same address.
    let second_admin = free_addr();
    let _second = spawn(&ca_args(&second_admin).each_ref().map(String::as_str));
    wait_ready(&second_admin).await;
    wait_ready(&admin).await;
    assert_eq!(
        metric(&admin, "meshmeter_proxy_certificates_installed_total").await,
        "1"
    );
    assert_eq!(
        metric(&admin, "meshmeter_proxy_trust_bundle_reloads_total").await,
        "1"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_ca_refuses_unusable_extra_root_certs_with_exit_2() {
    let dir = std::env::temp_dir().join(format!("meshmeter-cli-mtls-extra-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "ratings-token-0123456789 default/ratings\n").unwrap();
    let not_pem = dir.join("roots.pem");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    for (file, want) in [
        (
            not_pem.clone(),
            format!(
                "error: --extra-root-certs: {}: no CERTIFICATE found in the PEM text",
                not_pem.display()
            ),
        ),
        (
            dir.join("missing.pem"),
            format!(
                "error: --extra-root-certs: cannot read {}: No such file or directory (os error 2)",
                dir.join("missing.pem").display()
            ),
        ),
    ] {
        let out = Command::new(BIN)
            .env("MESHMETER_LOG", "error")
            .args(["ca", "--listen", "127.0.0.1:0", "--bootstrap-token-file"])
            .arg(&tokens)
            .arg("--extra-root-certs")
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), want);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
        || Command::new(tool).arg("version").output().is_ok()
}

/// Runs `cmd` with `input` on stdin; returns its stdout.
fn run_with_input(cmd: &mut Command, input: &[u8]) -> Vec<u8> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(input);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    out.stdout
}

fn other_ca_cert(dir: &Path) -> Option<(String, String)> {
    let key = dir.join("other.key").display().to_string();
    let cert = dir.join("other.pem").display().to_string();
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &cert,
            "-subj",
            "/O=cluster.local",
            "-days",
            "1",
            "-addext",
            "subjectAltName=URI:spiffe://cluster.local/ns/default/sa/ratings",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?
        .success();
    ok.then_some((cert, key))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs openssl and python3 on PATH; run by scripts/test.sh"]
async fn hostile_tls_clients_get_nothing_and_are_counted() {
    if !have("openssl") || !have("python3") {
        eprintln!("skipped: openssl or python3 not on PATH");
        return;
    }
    let mesh = mesh("hostile").await;
    let root = mesh.dir.join("root.pem").display().to_string();
    let secret = b"db.ratings.find({id: 7})\n";

    // openssl s_client without a client certificate.
    let out = run_with_input(
        Command::new("openssl").args([
            "s_client",
            "-quiet",
            "-connect",
            &mesh.server,
            "-CAfile",
            &root,
        ]),
        secret,
    );
    assert!(
        !out.windows(secret.len()).any(|w| w == secret),
        "openssl without a certificate got an echo"
    );
    eventually_metric(
        &mesh.server_admin,
        "meshmeter_proxy_tls_refused_total{reason=\"no_certificate\",side=\"inbound\"}",
        "1",
    )
    .await;

    // openssl s_client with a certificate of another CA, naming a mesh identity.
    let (cert, key) = other_ca_cert(&mesh.dir).expect("openssl makes a certificate");
    let out = run_with_input(
        Command::new("openssl").args([
            "s_client",
            "-quiet",
            "-connect",
            &mesh.server,
            "-CAfile",
            &root,
            "-cert",
            &cert,
            "-key",
            &key,
        ]),
        secret,
    );
    assert!(
        !out.windows(secret.len()).any(|w| w == secret),
        "openssl with a foreign certificate got an echo"
    );
    eventually_metric(
        &mesh.server_admin,
        "meshmeter_proxy_tls_refused_total{reason=\"unknown_ca\",side=\"inbound\"}",
        "1",
    )
    .await;

    // Python's ssl, TLS 1.2 only: the sidecars speak TLS 1.3 alone.
    let (host, port) = mesh.server.rsplit_once(':').unwrap();
    let script = format!(
        "import socket, ssl\nctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\nctx.check_hostname = False\nctx.verify_mode = ssl.CERT_NONE\nctx.maximum_version = ssl.TLSVersion.TLSv1_2\ntry:\n    s = ctx.wrap_socket(socket.create_connection(('{host}', {port})))\n    s.sendall(b'hello')\n    print(s.recv(100))\nexcept Exception as e:\n    print('refused', type(e).__name__)\n"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("refused"), "python got: {text}");
    assert_eq!(
        metric(
            &mesh.server_admin,
            "meshmeter_proxy_mtls_connections_total{side=\"inbound\"}"
        )
        .await,
        "0"
    );
    // The mesh still works for its own.
    assert!(talk(&mesh.client, secret).await == secret);
}
