//! Byte-exact forwarding: whatever the chunking, every byte arrives unchanged and the reports
//! count exactly the bytes forwarded.

mod support;

use std::time::Duration;

use meshmeter_proxy::CopyMode;
use proptest::prelude::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Sends `data` in `chunks`-sized writes through an echo upstream, reading concurrently.
async fn echo_through(mode: CopyMode, chunk_size: usize, data: Vec<u8>, chunks: Vec<usize>) {
    let upstream = echo_server().await;
    let p = proxy(upstream, |c| {
        c.forward.mode = mode;
        c.forward.chunk_size = chunk_size;
    })
    .await;
    let client = TcpStream::connect(p.addr).await.unwrap();
    let (mut r, mut w) = client.into_split();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        let mut rest = &sent[..];
        let mut sizes = chunks.iter().cycle();
        while !rest.is_empty() {
            let n = (*sizes.next().unwrap()).clamp(1, rest.len());
            w.write_all(&rest[..n]).await.unwrap();
            rest = &rest[n..];
        }
        w.shutdown().await.unwrap();
    });
    let mut echoed = Vec::new();
    r.read_to_end(&mut echoed).await.unwrap();
    writer.await.unwrap();
    assert!(
        echoed == data,
        "echo differs: {} vs {} bytes",
        echoed.len(),
        data.len()
    );
    let reports = p.reports.clone();
    let closes = eventually(Duration::from_secs(10), || {
        let c = reports.closes();
        (!c.is_empty()).then_some(c)
    })
    .await;
    let n = data.len() as u64;
    assert_eq!(
        check_connection(&reports.of(&closes[0].connection_id)),
        (n, n)
    );
    p.stop().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn copy_mode_is_byte_exact(
        len in 0usize..200_000,
        seed in any::<u8>(),
        chunks in prop::collection::vec(1usize..70_000, 1..8),
        chunk_size in prop::sample::select(vec![3usize, 7, 4096, 65_536]),
    ) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(echo_through(CopyMode::Copy, chunk_size, payload(len, seed), chunks));
    }

    #[test]
    fn splice_mode_is_byte_exact(
        len in 0usize..200_000,
        seed in any::<u8>(),
        chunks in prop::collection::vec(1usize..70_000, 1..8),
        chunk_size in prop::sample::select(vec![3usize, 7, 4096, 65_536]),
    ) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(echo_through(CopyMode::Splice, chunk_size, payload(len, seed), chunks));
    }
}

#[tokio::test]
async fn empty_connection_reports_zero_bytes() {
    echo_through(CopyMode::Copy, 65_536, Vec::new(), vec![1]).await;
}
