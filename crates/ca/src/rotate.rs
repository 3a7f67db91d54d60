//! Keeping the workload certificate fresh: issue at start, re-issue at two thirds of each
//! certificate's lifetime, retry with backoff while the CA is away.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshmeter_certs::{CertStore, PendingKey, SharedBundle, SpiffeId, TrustBundle};
use meshmeter_selfmetrics::Snapshot;
use tokio::sync::watch;

use crate::client::{CaClient, CaClientError, IssuedCert};

/// The fraction of a certificate's lifetime after which it is replaced.
pub const ROTATE_AT: f64 = 2.0 / 3.0;

/// Rotation counters: the workload certificate's (`meshmeter_proxy_certificate_*`) and the
/// trust bundle's (`meshmeter_proxy_trust_bundle_*`).
#[derive(Debug, Default)]
pub struct RotationStats {
    /// Certificates installed (the first one included).
    pub installed: AtomicU64,
    /// Attempts that failed (CA unreachable, refused, or an unusable answer).
    pub failures: AtomicU64,
    /// 1 while the last attempt failed, 0 once one succeeds.
    pub ca_unavailable: AtomicU64,
    /// The installed certificate's expiry, in Unix seconds.
    pub expiry_seconds: AtomicU64,
    /// Trust bundles read from the bundle file and put in use (a changed set of roots).
    pub bundle_reloads: AtomicU64,
    /// Contents of the bundle file found unreadable or unusable (each distinct one once).
    pub bundle_reload_failures: AtomicU64,
    /// 1 while the bundle file is unreadable or unusable (the previous bundle stays in use).
    pub bundle_file_invalid: AtomicU64,
    /// Roots in the bundle in use.
    pub bundle_roots: AtomicU64,
}

impl RotationStats {
    /// Appends the metrics in Prometheus' text format.
    pub fn render_prometheus(&self, out: &mut String) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut snapshot = Snapshot::new();
        snapshot.counter(
            "meshmeter_proxy_certificates_installed_total",
            "Workload certificates installed (the first included).",
            &[],
            get(&self.installed),
        );
        snapshot.counter(
            "meshmeter_proxy_certificate_rotation_failures_total",
            "Certificate requests that failed; each retry counts.",
            &[],
            get(&self.failures),
        );
        let gauge = |c: &AtomicU64| i64::try_from(get(c)).unwrap_or(i64::MAX);
        snapshot.gauge(
            "meshmeter_proxy_certificate_authority_unavailable",
            "1 while the latest certificate request failed.",
            &[],
            gauge(&self.ca_unavailable),
        );
        snapshot.gauge(
            "meshmeter_proxy_certificate_expiry_timestamp_seconds",
            "When the installed workload certificate expires (Unix time).",
            &[],
            gauge(&self.expiry_seconds),
        );
        snapshot.counter(
            "meshmeter_proxy_trust_bundle_reloads_total",
            "Trust bundles read again from the bundle file with changed roots and put in use.",
            &[],
            get(&self.bundle_reloads),
        );
        snapshot.counter(
            "meshmeter_proxy_trust_bundle_reload_failures_total",
            "Contents of the trust bundle file that could not be read or used (each once).",
            &[],
            get(&self.bundle_reload_failures),
        );
        snapshot.gauge(
            "meshmeter_proxy_trust_bundle_file_invalid",
            "1 while the trust bundle file cannot be read or used; the previous bundle stays in use.",
            &[],
            gauge(&self.bundle_file_invalid),
        );
        snapshot.gauge(
            "meshmeter_proxy_trust_bundle_roots",
            "Root certificates in the trust bundle in use.",
            &[],
            gauge(&self.bundle_roots),
        );
        snapshot.encode(out);
    }
}

/// A rotation attempt that produced no usable certificate.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// The CA call failed.
    #[error(transparent)]
    Ca(#[from] CaClientError),
    /// The certificate chains to a root the sidecar does not trust.
    #[error("the CA's certificate chains to a root outside the trust bundle")]
    UntrustedRoot,
    /// Nothing was issued before the deadline.
    #[error("no certificate from the CA within {0:?}; last error: {1}")]
    Deadline(Duration, Box<RotateError>),
}

/// Retry pacing while the CA is away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

/// Obtains and renews one workload certificate into a [`CertStore`].
#[derive(Debug)]
pub struct Rotator {
    client: CaClient,
    identity: SpiffeId,
    ttl: Option<Duration>,
    store: Arc<CertStore>,
    bundle: SharedBundle,
    stats: Arc<RotationStats>,
    backoff: Backoff,
    /// Where the bundle is read again from, and how often.
    bundle_file: Option<(PathBuf, Duration)>,
    /// The bundle file's content (or why it could not be read) at the last look.
    bundle_seen: Mutex<Option<Result<String, String>>>,
}

impl Rotator {
    /// A rotator for `identity`, asking for `ttl` (`None`: the CA's default), installing into
    /// `store` only certificates chaining to a root of `bundle` (when shared, as it is at the
    /// time of each renewal).
    pub fn new(
        client: CaClient,
        identity: SpiffeId,
        ttl: Option<Duration>,
        store: Arc<CertStore>,
        bundle: impl Into<SharedBundle>,
        stats: Arc<RotationStats>,
    ) -> Self {
        let bundle: SharedBundle = bundle.into();
        let roots = bundle.current().certificates().len() as u64;
        stats.bundle_roots.store(roots, Ordering::Relaxed);
        Rotator {
            client,
            identity,
            ttl,
            store,
            bundle,
            stats,
            backoff: Backoff::default(),
            bundle_file: None,
            bundle_seen: Mutex::new(None),
        }
    }

    /// Reads the trust bundle again from `path` (a mounted ConfigMap is updated in place) every
    /// `interval` while [`Rotator::run`] runs, and before each retry of [`Rotator::initial`],
    /// and puts a changed one in use: new handshakes verify against it, so a root can be
    /// added, then the old one removed, without restarting. An unreadable or unusable file is
    /// reported and the bundle in use stays.
    pub fn follow_bundle_file(mut self, path: PathBuf, interval: Duration) -> Self {
        self.bundle_file = Some((path, interval));
        self
    }

    /// Uses `backoff` between failed attempts.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// One attempt: a new key, its CSR to the CA, the answer installed.
    pub async fn rotate_once(&self) -> Result<(), RotateError> {
        let result = self.attempt().await;
        match &result {
            Ok(()) => {
                self.stats.ca_unavailable.store(0, Ordering::Relaxed);
            }
            Err(_) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                self.stats.ca_unavailable.store(1, Ordering::Relaxed);
            }
        }
        result
    }

    async fn attempt(&self) -> Result<(), RotateError> {
        let key = PendingKey::generate(self.identity.clone()).map_err(CaClientError::from)?;
        let IssuedCert { cert, root } = self.client.issue(key, self.ttl).await?;
        if !self.bundle.current().certificates().contains(&root) {
            return Err(RotateError::UntrustedRoot);
        }
        let validity = cert.validity();
        let expiry = validity
            .not_after
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.store.install(cert);
        self.stats.installed.fetch_add(1, Ordering::Relaxed);
        self.stats.expiry_seconds.store(expiry, Ordering::Relaxed);
        tracing::info!(identity = %self.identity, expires_in = ?validity.not_after.duration_since(SystemTime::now()).unwrap_or_default(), "workload certificate installed");
        Ok(())
    }

    /// Retries [`Rotator::rotate_once`] with backoff until it succeeds or `deadline` passes
    /// (one too far to represent, such as `Duration::MAX`: until it succeeds).
    pub async fn initial(&self, deadline: Duration) -> Result<(), RotateError> {
        let until = tokio::time::Instant::now().checked_add(deadline);
        let mut wait = self.backoff.initial;
        loop {
            match self.rotate_once().await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let now = tokio::time::Instant::now();
                    if until.is_some_and(|until| now + wait > until) {
                        return Err(RotateError::Deadline(deadline, Box::new(e)));
                    }
                    tracing::warn!(error = %e, retry_in = ?wait, "no workload certificate yet");
                    tokio::time::sleep(wait).await;
                    // The CA may have come back under a root published meanwhile.
                    self.reload_bundle().await;
                    wait = (wait * 2).min(self.backoff.max);
                }
            }
        }
    }

    /// Renews the certificate at [`ROTATE_AT`] of each one's lifetime until `shutdown`. While
    /// the CA fails, retries with backoff; the installed certificate stays in use meanwhile
    /// (an expired one makes new handshakes fail, established connections go on). With
    /// [`Rotator::follow_bundle_file`], follows the bundle file meanwhile.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        tokio::join!(self.renew(shutdown.clone()), self.follow_bundle(shutdown));
    }

    async fn renew(&self, mut shutdown: watch::Receiver<bool>) {
        let mut wait = self.backoff.initial;
        loop {
            let due = self
                .store
                .current()
                .map(|c| c.validity().point(ROTATE_AT))
                .unwrap_or_else(SystemTime::now);
            let sleep = due.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = shutdown.wait_for(|&s| s) => return,
            }
            loop {
                match self.rotate_once().await {
                    Ok(()) => {
                        wait = self.backoff.initial;
                        break;
                    }
                    Err(e) => {
                        let left = self.store.current().and_then(|c| {
                            c.validity()
                                .not_after
                                .duration_since(SystemTime::now())
                                .ok()
                        });
                        tracing::warn!(error = %e, retry_in = ?wait, valid_for = ?left, "certificate rotation failed; the current certificate stays in use");
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = shutdown.wait_for(|&s| s) => return,
                        }
                        wait = (wait * 2).min(self.backoff.max);
                    }
                }
            }
        }
    }

    async fn follow_bundle(&self, mut shutdown: watch::Receiver<bool>) {
        let Some((_, interval)) = &self.bundle_file else {
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(*interval) => {}
                _ = shutdown.wait_for(|&s| s) => return,
            }
            self.reload_bundle().await;
        }
    }

    /// One look at the bundle file, if there is one: a changed, usable bundle is put in use.
    async fn reload_bundle(&self) {
        let Some((path, _)) = &self.bundle_file else {
            return;
        };
        let what = path.display().to_string();
        let read = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| format!("cannot read {what}: {e}"));
        {
            // What the file held at the last look (or why it could not be read): a bad file
            // is reported once, not at every look.
            let mut last = self
                .bundle_seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.as_ref() == Some(&read) {
                return;
            }
            *last = Some(read.clone());
        }
        let bundle =
            read.and_then(|text| TrustBundle::from_pem(&text, &what).map_err(|e| e.to_string()));
        match bundle {
            Ok(bundle) => {
                self.stats.bundle_file_invalid.store(0, Ordering::Relaxed);
                let roots = bundle.certificates().len();
                if self.bundle.replace(bundle) {
                    self.stats.bundle_reloads.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .bundle_roots
                        .store(roots as u64, Ordering::Relaxed);
                    tracing::info!(file = %what, roots, "trust bundle changed: new handshakes verify against it");
                }
            }
            Err(e) => {
                self.stats
                    .bundle_reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                self.stats.bundle_file_invalid.store(1, Ordering::Relaxed);
                tracing::error!(error = %e, "trust bundle not reloaded; the one in use stays");
            }
        }
    }
}
