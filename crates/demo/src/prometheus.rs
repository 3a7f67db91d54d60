//! A real Prometheus scraping the demo's telemetry server, as the seed's operator had.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use meshmeter_httpget::http_get;

/// A Prometheus process; killed when dropped.
#[derive(Debug)]
pub(crate) struct Prometheus {
    child: Child,
    /// Where its web UI and API listen.
    pub(crate) addr: SocketAddr,
}

/// The scrape configuration: job `istio-mesh` (the name the seed's query shows) every second.
pub(crate) fn scrape_config(target: SocketAddr) -> String {
    format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: istio-mesh\n    scrape_interval: 1s\n    static_configs:\n      - targets: ['{target}']\n"
    )
}

/// The address Prometheus logged as bound (`msg="Listening on" address=HOST:PORT`): it binds
/// port 0 and says which port it got, so no port is picked before it binds it.
fn logged_address(log: &str) -> Option<SocketAddr> {
    log.lines()
        .filter(|l| l.contains("msg=\"Listening on\""))
        .find_map(|l| {
            l.split_once(" address=")?
                .1
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
}

impl Prometheus {
    /// Starts `binary` scraping `target`, with its files under `dir`, and waits until it is
    /// ready (at most 30 s).
    pub(crate) async fn start(
        binary: &Path,
        target: SocketAddr,
        dir: &Path,
    ) -> std::io::Result<Prometheus> {
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, scrape_config(target))?;
        let log_path = dir.join("prometheus.log");
        let log = std::fs::File::create(&log_path)?;
        let mut child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("prometheus-data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot start {}: {e}", binary.display()))
            })?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut addr = None;
        loop {
            if addr.is_none() {
                addr = logged_address(&std::fs::read_to_string(&log_path).unwrap_or_default());
            }
            if let Some(addr) = addr {
                if let Ok((200, _)) = http_get(addr, "/-/ready").await {
                    return Ok(Prometheus { child, addr });
                }
            }
            if let Some(status) = child.try_wait()? {
                return Err(std::io::Error::other(format!(
                    "prometheus exited with {status}; see {}",
                    dir.join("prometheus.log").display()
                )));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "prometheus not ready within 30 s (it logs its bound address as `Listening on`, since 2.33)",
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs an instant PromQL query; returns the API's JSON text.
    pub(crate) async fn query(&self, promql: &str) -> std::io::Result<String> {
        let (status, body) = http_get(
            self.addr,
            &format!("/api/v1/query?query={}", encode(promql)),
        )
        .await
        .map_err(std::io::Error::other)?;
        if status != 200 {
            return Err(std::io::Error::other(format!(
                "query failed with HTTP {status}: {body}"
            )));
        }
        Ok(body)
    }

    /// Stops the process.
    pub(crate) async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Where Prometheus is usually installed, for `--prometheus` without a path.
pub(crate) fn default_binary() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("prometheus"))
            .find(|p| p.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_bound_address_in_prometheus_log() {
        let log = "ts=1 caller=web.go:503 level=info component=web msg=\"Start listening for connections\" address=127.0.0.1:0\n\
                   ts=2 caller=tls_config.go:232 level=info component=web msg=\"Listening on\" address=127.0.0.1:43465\n";
        assert_eq!(
            logged_address(log),
            Some("127.0.0.1:43465".parse().unwrap())
        );
        assert_eq!(logged_address(log.lines().next().unwrap()), None);
    }
}
