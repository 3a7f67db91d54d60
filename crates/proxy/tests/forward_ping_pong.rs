//! Request/response traffic: every message is a short read, after which the forwarder parks
//! without another `recv` (the socket is known drained) and must still be woken by the next
//! message. A lost wake-up would stall the exchange, so each round trip has a deadline.

mod support;

use std::time::Duration;

use meshmeter_proxy::CopyMode;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ROUNDS: usize = 2000;

async fn ping_pong(mode: CopyMode) {
    let upstream = echo_server().await;
    let p = proxy(upstream, |c| c.forward.mode = mode).await;
    let mut client = TcpStream::connect(p.addr).await.unwrap();
    client.set_nodelay(true).unwrap();
    let mut expected = 0u64;
    let mut back = vec![0u8; 256];
    for i in 0..ROUNDS {
        // 1 to 200 bytes, far below the forwarder's buffer: always a short read.
        let len = 1 + (i * 37) % 200;
        let message: Vec<u8> = (0..len).map(|j| (i + j) as u8).collect();
        client.write_all(&message).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut back[..len]))
            .await
            .unwrap_or_else(|_| panic!("{mode:?}: round trip {i} stalled"))
            .unwrap();
        assert_eq!(&back[..len], &message[..], "{mode:?}: round trip {i}");
        expected += len as u64;
    }
    client.shutdown().await.unwrap();
    assert_eq!(read_all(&mut client).await.unwrap(), b"");
    let reports = p.reports.clone();
    let closes = eventually(Duration::from_secs(10), || {
        let c = reports.closes();
        (!c.is_empty()).then_some(c)
    })
    .await;
    assert_eq!(
        check_connection(&reports.of(&closes[0].connection_id)),
        (expected, expected)
    );
    p.stop().await;
}

#[tokio::test]
async fn copy_mode_answers_every_small_message() {
    ping_pong(CopyMode::Copy).await;
}

#[tokio::test]
async fn splice_mode_answers_every_small_message() {
    ping_pong(CopyMode::Splice).await;
}
