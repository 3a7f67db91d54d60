//! Failures: upstream refused (UF), upstream reset mid-transfer, connection limit (UO),
//! idle timeout.

mod support;

use std::io::ErrorKind;
use std::sync::atomic::Ordering;
use std::time::Duration;

use meshmeter_proxy::{ConnectionEvent, ErrorFlag};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn upstream_refused_closes_the_client_and_reports_uf() {
    let p = proxy(closed_port().await, |_| {}).await;
    let mut c = TcpStream::connect(p.addr).await.unwrap();
    let mut buf = [0u8; 16];
    // The proxy closes the client: EOF, no bytes.
    assert_eq!(c.read(&mut buf).await.unwrap(), 0);
    let reports = p.stop().await;
    let all = reports.all();
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[0].event, ConnectionEvent::Open);
    assert_eq!(all[0].error, None);
    assert_eq!(all[1].event, ConnectionEvent::Close);
    assert_eq!(all[1].error, Some(ErrorFlag::UpstreamConnectFailure));
    assert_eq!(all[1].error.unwrap().as_str(), "UF");
    assert_eq!(
        (all[1].bytes.received_total, all[1].bytes.sent_total),
        (0, 0)
    );
}

#[tokio::test]
async fn upstream_connect_timeout_reports_uf() {
    // A listener whose backlog is full never completes a handshake; 10.255.255.1 style
    // blackholes are not available everywhere, so fill a backlog-1 listener instead.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let full = socket.listen(0).unwrap();
    let addr = full.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await
        {
            fillers.push(s);
        }
    }
    let p = proxy(addr, |c| c.connect_timeout = Duration::from_millis(300)).await;
    let mut c = TcpStream::connect(p.addr).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
        .await
        .unwrap();
    assert_eq!(n.unwrap(), 0);
    let reports = p.stop().await;
    let close = reports.closes().pop().unwrap();
    assert_eq!(close.error, Some(ErrorFlag::UpstreamConnectFailure));
    drop((full, fillers));
}

#[tokio::test]
async fn upstream_reset_mid_transfer_resets_the_client() {
    // The upstream sends part of a response, then aborts with RST.
    let upstream = server(|s| async move {
        let mut s = s;
        s.write_all(&[7u8; 1000]).await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
    })
    .await;
    let p = proxy(upstream, |_| {}).await;
    let mut c = TcpStream::connect(p.addr).await.unwrap();
    let mut got = vec![0u8; 1000];
    c.read_exact(&mut got).await.unwrap();
    assert_eq!(got, vec![7u8; 1000]);
    c.write_all(b"ping").await.unwrap();
    let mut rest = Vec::new();
    let err = c.read_to_end(&mut rest).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    assert!(rest.is_empty());
    let reports = p.stop().await;
    let closes = reports.closes();
    assert_eq!(
        check_connection(&reports.of(&closes[0].connection_id)),
        (4, 1000)
    );
}

#[tokio::test]
async fn client_reset_resets_the_upstream() {
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    let (tx, rx) = tokio::sync::oneshot::channel::<std::io::Result<Vec<u8>>>();
    let chans = std::sync::Mutex::new(Some((first_tx, tx)));
    let upstream = server(move |mut s| {
        let chans = chans.lock().unwrap().take();
        async move {
            let Some((first_tx, tx)) = chans else { return };
            let mut first = [0u8; 3];
            s.read_exact(&mut first).await.unwrap();
            assert_eq!(&first, b"abc");
            let _ = first_tx.send(());
            let _ = tx.send(read_all(&mut s).await);
        }
    })
    .await;
    let p = proxy(upstream, |_| {}).await;
    let mut c = TcpStream::connect(p.addr).await.unwrap();
    c.write_all(b"abc").await.unwrap();
    // Only reset once the bytes are through, so the reset cannot overtake them.
    tokio::time::timeout(Duration::from_secs(10), first_rx)
        .await
        .unwrap()
        .unwrap();
    socket2::SockRef::from(&c)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(c);
    let r = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.unwrap_err().kind(), ErrorKind::ConnectionReset);
    let reports = p.stop().await;
    assert_eq!(check_connection(&reports.all()), (3, 0));
}

#[tokio::test]
async fn connection_limit_refuses_with_uo() {
    let upstream = echo_server().await;
    let p = proxy(upstream, |c| c.max_connections = 1).await;
    let mut first = TcpStream::connect(p.addr).await.unwrap();
    first.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    first.read_exact(&mut one).await.unwrap();
    let mut second = TcpStream::connect(p.addr).await.unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(second.read(&mut buf).await.unwrap(), 0);
    drop(first);
    let reports = p.stop().await;
    let closes = reports.closes();
    assert_eq!(closes.len(), 2);
    let overflow: Vec<_> = closes
        .iter()
        .filter(|r| r.error == Some(ErrorFlag::UpstreamOverflow))
        .collect();
    assert_eq!(overflow.len(), 1);
    assert_eq!(overflow[0].error.unwrap().as_str(), "UO");
    assert_eq!(reports.of(&overflow[0].connection_id).len(), 2);
}

#[tokio::test]
async fn idle_timeout_closes_quiet_connections() {
    let upstream = echo_server().await;
    let p = proxy(upstream, |c| {
        c.idle_timeout = Some(Duration::from_millis(200))
    })
    .await;
    let mut c = TcpStream::connect(p.addr).await.unwrap();
    c.write_all(b"hi").await.unwrap();
    let mut got = [0u8; 2];
    c.read_exact(&mut got).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0);
    let reports = p.stop().await;
    assert_eq!(check_connection(&reports.all()), (2, 2));
}

/// Reads to EOF, then holds the socket open without ever answering.
async fn stalled_upstream() -> std::net::SocketAddr {
    server(|mut s| async move {
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink).await;
        std::future::pending::<()>().await;
    })
    .await
}

/// `n` clients that each send 7 bytes, half-close and leave; waits until the proxy holds
/// none of them, and checks their close reports.
async fn clients_leave(p: Running, n: u64) {
    for _ in 0..n {
        let mut c = TcpStream::connect(p.addr).await.unwrap();
        c.write_all(b"request").await.unwrap();
        c.shutdown().await.unwrap();
        drop(c);
    }
    let stats = p.stats.clone();
    eventually(Duration::from_secs(5), || {
        (stats.connections_accepted.load(Ordering::Relaxed) == n
            && stats.connections_active.load(Ordering::Relaxed) == 0)
            .then_some(())
    })
    .await;
    let reports = p.stop().await;
    assert_eq!(reports.closes().len() as u64, n);
    assert!(reports
        .closes()
        .iter()
        .all(|r| r.bytes.received_total == 7 && r.bytes.sent_total == 0));
}

#[tokio::test]
async fn half_close_timeout_frees_connections_to_a_stalled_upstream() {
    let p = proxy(stalled_upstream().await, |c| {
        c.idle_timeout = None;
        c.half_close_timeout = Some(Duration::from_millis(200));
    })
    .await;
    clients_leave(p, 20).await;
}

#[tokio::test]
async fn half_close_timeout_spares_an_upstream_that_keeps_answering() {
    // Answers the half-closed request with 20 chunks, one every 50 ms (1 s in all, over three
    // times the half-close timeout).
    let upstream = server(|mut s| async move {
        let mut request = Vec::new();
        let _ = s.read_to_end(&mut request).await;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            s.write_all(&[1; 50]).await.unwrap();
        }
    })
    .await;
    let p = proxy(upstream, |c| {
        c.idle_timeout = None;
        c.half_close_timeout = Some(Duration::from_millis(300));
    })
    .await;
    let mut c = TcpStream::connect(p.addr).await.unwrap();
    c.write_all(b"request").await.unwrap();
    c.shutdown().await.unwrap();
    assert_eq!(read_all(&mut c).await.unwrap(), vec![1; 1000]);
    let reports = p.stop().await;
    assert_eq!(check_connection(&reports.all()), (7, 1000));
}

#[tokio::test]
async fn idle_timeout_frees_half_closed_connections_to_a_stalled_upstream() {
    let p = proxy(stalled_upstream().await, |c| {
        c.idle_timeout = Some(Duration::from_millis(200));
        c.half_close_timeout = None;
    })
    .await;
    clients_leave(p, 20).await;
}

#[test]
fn listeners_close_idle_connections_by_default() {
    let c = meshmeter_proxy::ListenerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:1".parse().unwrap(),
    );
    assert_eq!(c.idle_timeout, Some(Duration::from_secs(3600)));
    assert_eq!(c.half_close_timeout, Some(Duration::from_secs(300)));
}
