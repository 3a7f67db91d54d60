//! Forwarding speed on loopback: bulk throughput and small request/response latency, direct
//! (no proxy) against the proxy in copy and splice mode. The proxy gets one runtime thread,
//! as a sidecar with one CPU would; the client and server are plain blocking threads.
//!
//! `cargo bench -p meshmeter-proxy --bench forward`

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use meshmeter_proxy::{
    ConnectionReport, CopyMode, ForwardOptions, Identity, ListenerConfig, Proxy, ProxyStats,
    ReportSink,
};

const BULK: usize = 64 << 20;
const CHUNK: usize = 128 * 1024;

struct Discard;

impl ReportSink for Discard {
    fn submit(&self, _report: ConnectionReport) {}
}

/// A server that, per connection, reads `BULK` bytes and acknowledges with one byte, forever;
/// or (for `echo`) answers each 64-byte message with itself.
fn server(echo: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let mut s = s.unwrap();
            s.set_nodelay(true).unwrap();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; CHUNK];
                if echo {
                    let mut msg = [0u8; 64];
                    while s.read_exact(&mut msg).is_ok() {
                        if s.write_all(&msg).is_err() {
                            return;
                        }
                    }
                    return;
                }
                loop {
                    let mut left = BULK;
                    while left > 0 {
                        match s.read(&mut buf[..left.min(CHUNK)]) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => left -= n,
                        }
                    }
                    if s.write_all(&[1]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn proxy(
    rt: &tokio::runtime::Runtime,
    upstream: SocketAddr,
    mode: CopyMode,
    chunk_size: usize,
) -> SocketAddr {
    rt.block_on(async {
        let mut config = ListenerConfig::new("127.0.0.1:0".parse().unwrap(), upstream);
        config.forward = ForwardOptions { mode, chunk_size };
        let p = Proxy::bind(
            config,
            Arc::new(Identity::default()),
            Arc::new(Discard),
            Arc::new(ProxyStats::default()),
        )
        .await
        .unwrap();
        let addr = p.local_addr();
        let (tx, rx) = tokio::sync::watch::channel(false);
        // The proxy runs until the benchmark process exits.
        std::mem::forget(tx);
        tokio::spawn(p.run(rx, Duration::from_secs(1)));
        addr
    })
}

/// The reference point: tokio's own `copy_bidirectional`, no reports.
fn tokio_bidi(rt: &tokio::runtime::Runtime, upstream: SocketAddr) -> SocketAddr {
    rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut c, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut u = tokio::net::TcpStream::connect(upstream).await.unwrap();
                    c.set_nodelay(true).unwrap();
                    u.set_nodelay(true).unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                });
            }
        });
        addr
    })
}

fn targets(rt: &tokio::runtime::Runtime, upstream: SocketAddr) -> Vec<(&'static str, SocketAddr)> {
    vec![
        ("direct", upstream),
        ("proxy_copy", proxy(rt, upstream, CopyMode::Copy, 64 * 1024)),
        (
            "proxy_splice",
            proxy(rt, upstream, CopyMode::Splice, 64 * 1024),
        ),
        (
            "proxy_splice_256k",
            proxy(rt, upstream, CopyMode::Splice, 256 * 1024),
        ),
        ("tokio_copy_bidirectional", tokio_bidi(rt, upstream)),
    ]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn bulk(c: &mut Criterion) {
    let rt = runtime();
    let upstream = server(false);
    let mut group = c.benchmark_group("bulk_64MiB");
    group.throughput(Throughput::Bytes(BULK as u64));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));
    let data = vec![0xabu8; CHUNK];
    for (name, addr) in targets(&rt, upstream) {
        let mut s = TcpStream::connect(addr).unwrap();
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut left = BULK;
                while left > 0 {
                    let n = left.min(CHUNK);
                    s.write_all(&data[..n]).unwrap();
                    left -= n;
                }
                let mut ack = [0u8; 1];
                s.read_exact(&mut ack).unwrap();
            })
        });
    }
    group.finish();
}

fn request_response(c: &mut Criterion) {
    let rt = runtime();
    let upstream = server(true);
    let mut group = c.benchmark_group("rtt_64B");
    for (name, addr) in targets(&rt, upstream) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        let msg = [7u8; 64];
        let mut back = [0u8; 64];
        group.bench_function(name, |b| {
            b.iter(|| {
                s.write_all(&msg).unwrap();
                s.read_exact(&mut back).unwrap();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bulk, request_response);
criterion_main!(benches);
