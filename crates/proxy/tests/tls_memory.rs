//! What rustls' buffered API (`tokio_rustls` streams) keeps per idle mTLS connection, the
//! reason the proxy's TLS runs on the unbuffered API instead (`src/lean.rs`, whose record
//! buffers go back to a pool whenever they hold nothing), measured with dhat: 200 connection
//! pairs over loopback (a `tokio_rustls` server and client stream each, TLS 1.3, the workload
//! certificates of `meshmeter_certs`), one byte echoed on each so every handshake and the
//! server's session tickets are done, against the same pairs in plain TCP. The difference per
//! pair, halved, is one side's TLS state: the record reader's buffer (4 KiB, which rustls'
//! buffered API keeps for the connection's life), the boxed stream (1.2 KiB), the traffic
//! keys, the peer's certificate, and the server's stored sessions for its tickets (about
//! 0.4 KiB per side; `send_tls13_tickets = 0` removes it, and resumption with it).
//!
//! Measured 8,517 bytes per side (2026-12-07, rustls 0.23.48 with ring): the bound guards
//! against growth of the reference. The sidecar's own figure is in BENCHMARKS.md
//! (`bench/mtls-idle-memory.sh`).

use std::sync::Arc;
use std::time::Duration;

use meshmeter_certs::{
    client_config, server_config, server_name, Authority, CertStore, ExpectedPeer, SpiffeId,
    TrustBundle,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const PAIRS: usize = 200;

#[tokio::test(flavor = "current_thread")]
#[ignore = "measures the heap with dhat (about 5 s in a debug build); run by scripts/test.sh"]
async fn an_idle_mtls_connection_keeps_at_most_9_kib_of_tls_state_per_side() {
    let authority = Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
    let bundle = TrustBundle::new(vec![authority.root().clone()], "root").unwrap();
    let cert = |sa: &str| {
        let id = SpiffeId::new("cluster.local", "default", sa).unwrap();
        Arc::new(CertStore::with(
            authority
                .issue_workload(&id, Duration::from_secs(600))
                .unwrap(),
        ))
    };
    let domain = || ExpectedPeer::TrustDomain("cluster.local".to_owned());
    let server = server_config(&bundle, cert("mongodb"), domain()).unwrap();
    let client = client_config(&bundle, cert("ratings"), domain()).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let connector = tokio_rustls::TlsConnector::from(client);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();

    let _profiler = dhat::Profiler::builder().testing().build();
    let heap = || dhat::HeapStats::get().curr_bytes;

    // Plain pairs, then TLS pairs; one of each first so one-time allocations are not charged.
    let mut plain = Vec::new();
    let mut before = 0;
    for i in 0..=PAIRS {
        if i == 1 {
            before = heap();
        }
        let (mut c, (mut s, _)) =
            tokio::join!(async { TcpStream::connect(addr).await.unwrap() }, async {
                listener.accept().await.unwrap()
            });
        c.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        s.write_all(&b).await.unwrap();
        c.read_exact(&mut b).await.unwrap();
        plain.push((c, s));
    }
    let plain_per_pair = (heap() - before) / PAIRS;

    let mut tls = Vec::new();
    for i in 0..=PAIRS {
        if i == 1 {
            before = heap();
        }
        let (c, (s, _)) = tokio::join!(async { TcpStream::connect(addr).await.unwrap() }, async {
            listener.accept().await.unwrap()
        });
        let (c, s) = tokio::join!(connector.connect(server_name(), c), acceptor.accept(s));
        let (mut c, mut s) = (c.unwrap(), s.unwrap());
        c.write_all(b"x").await.unwrap();
        c.flush().await.unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        s.write_all(&b).await.unwrap();
        s.flush().await.unwrap();
        c.read_exact(&mut b).await.unwrap();
        tls.push((Box::new(c), Box::new(s)));
    }
    let tls_per_pair = (heap() - before) / PAIRS;
    let per_side = (tls_per_pair - plain_per_pair) / 2;
    println!(
        "heap per connection pair: plain {plain_per_pair} B, mTLS {tls_per_pair} B: TLS state \
         {per_side} B per side (stream sizes: server {} B, client {} B)",
        std::mem::size_of::<tokio_rustls::server::TlsStream<TcpStream>>(),
        std::mem::size_of::<tokio_rustls::client::TlsStream<TcpStream>>(),
    );
    assert!(per_side <= 9 * 1024, "{per_side} bytes per side");
    drop((plain, tls));
}
