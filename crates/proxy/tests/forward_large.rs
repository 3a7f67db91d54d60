//! A large transfer through the proxy, checked end to end.

mod support;

use meshmeter_proxy::CopyMode;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const GIB: u64 = 1 << 30;

/// FNV-1a over 8-byte words: cheap enough for a debug build, and order-sensitive.
#[derive(Clone, Copy)]
struct Checksum(u64);

impl Checksum {
    fn new() -> Self {
        Checksum(0xcbf2_9ce4_8422_2325)
    }
    fn feed(&mut self, words: &[u8]) {
        for w in words.chunks(8) {
            let mut b = [0u8; 8];
            b[..w.len()].copy_from_slice(w);
            self.0 = (self.0 ^ u64::from_le_bytes(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// Streams `total` bytes client -> proxy -> upstream; the upstream checksums what arrives
/// and answers with the count and checksum.
async fn transfer(mode: CopyMode, total: u64) {
    let upstream = server(|mut s| async move {
        let mut sum = Checksum::new();
        let mut count = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        let mut carry: Vec<u8> = Vec::new();
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            count += n as u64;
            // Checksum whole words only, whatever the read boundaries.
            carry.extend_from_slice(&buf[..n]);
            let whole = carry.len() / 8 * 8;
            sum.feed(&carry[..whole]);
            carry.drain(..whole);
        }
        sum.feed(&carry);
        s.write_all(&count.to_le_bytes()).await.unwrap();
        s.write_all(&sum.0.to_le_bytes()).await.unwrap();
    })
    .await;
    let p = proxy(upstream, |c| c.forward.mode = mode).await;
    let mut c = TcpStream::connect(p.addr).await.unwrap();
    let block: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut sent = 0u64;
    let mut sum = Checksum::new();
    while sent < total {
        c.write_all(&block).await.unwrap();
        sent += block.len() as u64;
        // The block length is a multiple of 8, so summing per block equals summing the stream.
        sum.feed(&block);
    }
    c.shutdown().await.unwrap();
    let answer = read_all(&mut c).await.unwrap();
    assert_eq!(answer.len(), 16);
    assert_eq!(u64::from_le_bytes(answer[..8].try_into().unwrap()), sent);
    assert_eq!(u64::from_le_bytes(answer[8..].try_into().unwrap()), sum.0);
    drop(c);
    let reports = p.stop().await;
    assert_eq!(check_connection(&reports.all()), (sent, 16));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_copy() {
    transfer(CopyMode::Copy, 64 << 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_splice() {
    transfer(CopyMode::Splice, 64 << 20).await;
}

// Heavy (checksumming 1 GiB dominates), so kept out of the plain suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "moves 1 GiB; run by scripts/test.sh"]
async fn one_gib_copy() {
    transfer(CopyMode::Copy, GIB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "moves 1 GiB; run by scripts/test.sh"]
async fn one_gib_splice() {
    transfer(CopyMode::Splice, GIB).await;
}
