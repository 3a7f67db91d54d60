//! Graceful shutdown: stop accepting, let connections drain up to a deadline, report every
//! close.

mod support;

use std::io::ErrorKind;
use std::time::Duration;

use meshmeter_proxy::ConnectionEvent;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn open_connections_finish_within_the_drain_deadline() {
    let upstream = echo_server().await;
    let p = proxy_with_drain(upstream, Duration::from_secs(20), |_| {}).await;
    let addr = p.addr;
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"before").await.unwrap();
    let mut buf = [0u8; 6];
    c.read_exact(&mut buf).await.unwrap();
    p.shutdown.send(true).unwrap();
    // New connections are refused once the listener is gone.
    eventually(Duration::from_secs(5), || {
        std::net::TcpStream::connect(addr).is_err().then_some(())
    })
    .await;
    // The open one still works and then ends normally.
    c.write_all(b"after").await.unwrap();
    c.shutdown().await.unwrap();
    assert_eq!(read_all(&mut c).await.unwrap(), b"after");
    drop(c);
    tokio::time::timeout(Duration::from_secs(10), p.task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(check_connection(&p.reports.all()), (11, 11));
}

#[tokio::test]
async fn connections_past_the_deadline_are_reset_and_reported() {
    let upstream = echo_server().await;
    let p = proxy_with_drain(upstream, Duration::from_millis(200), |_| {}).await;
    let mut c = TcpStream::connect(p.addr).await.unwrap();
    c.write_all(b"hang").await.unwrap();
    let mut buf = [0u8; 4];
    c.read_exact(&mut buf).await.unwrap();
    let reports = p.stop().await;
    let all = reports.all();
    assert_eq!(all.last().unwrap().event, ConnectionEvent::Close);
    assert_eq!(check_connection(&all), (4, 4));
    let err = c.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
}
