//! Hostile reports against a real server: amplification by delta-encoded empty bags, and
//! out-of-range values that must be refused without losing a client's retry.

mod common;

use std::time::{Duration, Instant};

use common::{data, samples, Running};
use meshmeter_attributes::{json::bag_from_json, Bag, Manifest};
use meshmeter_server::ServerOptions;
use meshmeter_wire::{Encoding, MixerClient, ReportEncoder};
use serde_json::json;

fn proxy_bag(sent: i64) -> Bag<'static> {
    bag_from_json(
        &Manifest::istio(),
        &json!({
            "context.protocol": "tcp",
            "context.reporter.kind": "inbound",
            "connection.event": "continue",
            "connection.sent.bytes": sent,
            "connection.received.bytes": 0,
            "source.ip": "127.0.0.2",
            "destination.ip": "127.0.0.3",
        }),
    )
    .unwrap()
}

/// One real bag followed by `empty` delta-encoded empty bags (two bytes each: field 1,
/// length 0), each of which repeats the bag before it.
fn amplified(empty: usize) -> bytes::Bytes {
    let mut request =
        ReportEncoder::new(&Manifest::istio(), Encoding::Delta).encode_to_vec(&[proxy_bag(1)]);
    for _ in 0..empty {
        request.extend_from_slice(&[0x0a, 0x00]);
    }
    bytes::Bytes::from(request)
}

fn sent_total(text: &str) -> f64 {
    samples(text, "istio_tcp_sent_bytes_total").values().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_bag_amplification_is_bounded_and_does_not_starve_others() {
    let server = Running::start(ServerOptions {
        config_paths: vec![data("tcp-metrics.yaml")],
        include_defaults: true,
        // One runtime: the attacker and the honest client share it.
        ingest_threads: 1,
        ..ServerOptions::default()
    })
    .await;
    let attacker = MixerClient::connect(&server.grpc.to_string())
        .await
        .unwrap();

    // Over the limit: refused whole, nothing dispatched.
    let status = attacker.report(amplified(10_000), None).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.message(), "request holds more than 10000 bags");
    let text = server.scrape().await;
    assert_eq!(sent_total(&text), 0.0, "{text}");
    assert_eq!(
        samples(&text, "meshmeter_decode_errors_total")
            ["meshmeter_decode_errors_total{reason=\"too_many_bags\"}"],
        1.0,
        "{text}"
    );

    // At the limit, many at once and without pause: each is dispatched in full.
    let attack = {
        let attacker = attacker.clone();
        tokio::spawn(async move {
            let mut sent = 0u32;
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                let calls = (0..8).map(|_| attacker.report(amplified(9_999), None));
                for r in futures_util::future::join_all(calls).await {
                    r.unwrap();
                    sent += 1;
                }
            }
            sent
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let honest = MixerClient::connect(&server.grpc.to_string())
        .await
        .unwrap();
    let started = Instant::now();
    honest
        .report(
            bytes::Bytes::from(
                ReportEncoder::new(&Manifest::istio(), Encoding::Delta)
                    .encode_to_vec(&[proxy_bag(1_000_000)]),
            ),
            None,
        )
        .await
        .unwrap();
    let waited = started.elapsed();
    assert!(
        !attack.is_finished(),
        "the attack must still run while the honest report is answered"
    );
    assert!(
        waited < Duration::from_secs(1),
        "an honest report waited {waited:?} behind the attack"
    );
    let attacks = attack.await.unwrap();
    assert!(attacks > 0);
    let text = server.scrape().await;
    assert_eq!(
        sent_total(&text),
        1_000_000.0 + f64::from(attacks) * 10_000.0,
        "{text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_out_of_range_timestamp_is_refused_and_its_retry_counted() {
    let server = Running::start(ServerOptions {
        config_paths: vec![data("tcp-metrics.yaml")],
        include_defaults: true,
        ..ServerOptions::default()
    })
    .await;
    let client = MixerClient::connect(&server.grpc.to_string())
        .await
        .unwrap();
    let manifest = Manifest::istio();
    let at = |time: &str| {
        let mut bag = proxy_bag(7);
        let ts = meshmeter_attributes::Value::Timestamp(time.parse().unwrap());
        bag.set(manifest.id("context.time").unwrap(), ts);
        bytes::Bytes::from(ReportEncoder::new(&manifest, Encoding::Delta).encode_to_vec(&[bag]))
    };
    // Year 10000 cannot be written as RFC 3339: refused at decode, named.
    let mut far = ReportEncoder::new(&manifest, Encoding::Delta).encode_to_vec(&[{
        let mut bag = proxy_bag(7);
        bag.set(
            manifest.id("context.time").unwrap(),
            meshmeter_attributes::Value::Timestamp(meshmeter_attributes::Timestamp::new(
                253_402_300_800,
                0,
            )),
        );
        bag
    }]);
    let id = client.next_report_id();
    let status = client
        .report(bytes::Bytes::from(std::mem::take(&mut far)), Some(&id))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(
        status.message(),
        "bag 0: attribute 'context.time': timestamp of 253402300800s since the epoch is outside years 0001-9999"
    );
    // The corrected retry under the same key is counted, not taken for a duplicate.
    client
        .report(at("2026-01-01T00:00:00Z"), Some(&id))
        .await
        .unwrap();
    let text = server.scrape().await;
    assert_eq!(sent_total(&text), 7.0, "{text}");
    server.stop().await;
}
