//! A transparent listener reached directly (no capture rule redirected the connection) has
//! no original destination to forward to: it resets the client at once, counts it, reports
//! nothing, and keeps serving. Where connection tracking is off (no rule in the namespace)
//! the kernel knows no original destination (`not_redirected`); where it is on, the original
//! destination is the listener itself (`loops_refused`). (Redirected connections are tested in network namespaces:
//! crates/cli/tests/transparent_netns.rs.)

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use meshmeter_proxy::Upstream;
use support::{eventually, proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn a_connection_not_redirected_is_reset_and_counted() {
    // The upstream address is ignored in transparent mode.
    let p = proxy("127.0.0.1:9".parse().unwrap(), |c| {
        c.upstream = Upstream::OriginalDestination;
    })
    .await;
    for n in 1..=3 {
        let mut client = TcpStream::connect(p.addr).await.unwrap();
        // Written before the reset may arrive; the proxy must not forward it anywhere.
        let _ = client.write_all(b"hello").await;
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf))
            .await
            .expect("the proxy answers at once");
        let err = read.expect_err("a reset, not a clean end of stream");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
        eventually(Duration::from_secs(10), || {
            let refused = p.stats.not_redirected.load(Ordering::Relaxed)
                + p.stats.loops_refused.load(Ordering::Relaxed);
            (refused == n).then_some(())
        })
        .await;
    }
    assert_eq!(p.stats.connections_active.load(Ordering::Relaxed), 0);
    assert_eq!(p.stats.upstream_connect_failures.load(Ordering::Relaxed), 0);
    let reports = p.stop().await;
    assert_eq!(
        reports.all().len(),
        0,
        "refused connections are not reported"
    );
}
