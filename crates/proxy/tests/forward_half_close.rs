//! A half-close travels through the proxy and the other direction keeps flowing.

mod support;

use std::time::Duration;

use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test]
async fn client_half_close_then_upstream_keeps_sending() {
    // The upstream reads to EOF, then answers with what it got plus a trailer.
    let upstream = server(|mut s| async move {
        let got = read_all(&mut s).await.unwrap();
        s.write_all(&got).await.unwrap();
        s.write_all(b" after your EOF").await.unwrap();
        s.shutdown().await.unwrap();
    })
    .await;
    let p = proxy(upstream, |_| {}).await;
    let mut c = TcpStream::connect(p.addr).await.unwrap();
    c.write_all(b"question").await.unwrap();
    c.shutdown().await.unwrap();
    assert_eq!(read_all(&mut c).await.unwrap(), b"question after your EOF");
    drop(c);
    let reports = p.stop().await;
    let closes = reports.closes();
    assert_eq!(closes.len(), 1);
    assert_eq!(
        check_connection(&reports.of(&closes[0].connection_id)),
        (8, 23)
    );
}

#[tokio::test]
async fn upstream_half_close_then_client_keeps_sending() {
    // The upstream greets, shuts its write side at once, then still reads what comes.
    let (got_tx, got_rx) = tokio::sync::oneshot::channel::<Vec<u8>>();
    let got_tx = std::sync::Mutex::new(Some(got_tx));
    let upstream = server(move |mut s| {
        let tx = got_tx.lock().unwrap().take();
        async move {
            s.write_all(b"hello").await.unwrap();
            s.shutdown().await.unwrap();
            let got = read_all(&mut s).await.unwrap();
            if let Some(tx) = tx {
                let _ = tx.send(got);
            }
        }
    })
    .await;
    let p = proxy(upstream, |_| {}).await;
    let mut c = TcpStream::connect(p.addr).await.unwrap();
    // EOF from the upstream arrives while our side is still open.
    assert_eq!(read_all(&mut c).await.unwrap(), b"hello");
    c.write_all(b"still talking").await.unwrap();
    c.shutdown().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), got_rx)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, b"still talking");
    drop(c);
    let reports = p.stop().await;
    let closes = reports.closes();
    assert_eq!(
        check_connection(&reports.of(&closes[0].connection_id)),
        (13, 5)
    );
}
