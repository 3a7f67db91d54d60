//! The gRPC service end to end on real sockets: recorded Istio requests sent raw, bad input
//! answered with exact statuses while the server keeps serving, idempotent retries, Check.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use meshmeter_attributes::{Bag, Manifest, Value};
use meshmeter_wire::proto::{CheckRequest, CompressedAttributes, ReportRequest};
use meshmeter_wire::{
    BagDecoder, Deduplicator, Encoding, MixerClient, MixerServer, MixerService, ReportEncoder,
    ReportId,
};
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

/// Records every bag it is sent, rendered as the recordings' `decoded.txt` does.
struct Recorder {
    manifest: Manifest,
    decoder: BagDecoder,
    bags: Mutex<Vec<String>>,
}

impl MixerService for Recorder {
    async fn report(&self, request: Bytes, _metadata: &MetadataMap) -> Result<(), Status> {
        // Stage the request's bags and commit them only if it all decodes.
        let mut staged = Vec::new();
        self.decoder.decode_report(&request, |i, bag| {
            staged.push(common::render_bag(&self.manifest, i, bag));
        })?;
        self.bags.lock().unwrap().extend(staged);
        Ok(())
    }
}

async fn start(limit: usize, dedup: Option<Arc<Deduplicator>>) -> (SocketAddr, Arc<Recorder>) {
    let manifest = Manifest::istio();
    let recorder = Arc::new(Recorder {
        decoder: BagDecoder::new(&manifest).with_max_message_bytes(limit),
        manifest,
        bags: Mutex::new(Vec::new()),
    });
    let mut server = MixerServer::from_arc(Arc::clone(&recorder)).max_message_bytes(limit);
    if let Some(d) = dedup {
        server = server.with_dedup(d);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server.serve(listener, std::future::pending()));
    (addr, recorder)
}

fn one_bag(sent: i64) -> Vec<u8> {
    let m = Manifest::istio();
    let mut bag = Bag::new(&m);
    bag.set(m.id("connection.sent.bytes").unwrap(), Value::Int64(sent));
    ReportEncoder::new(&m, Encoding::Delta).encode_to_vec(&[bag])
}

#[tokio::test]
async fn recorded_requests_sent_raw_decode_as_mixer_did() {
    let (addr, recorder) = start(4 << 20, None).await;
    let client = MixerClient::connect(&addr.to_string()).await.unwrap();
    for rec in common::recordings() {
        let mut want = String::new();
        let mut got = String::new();
        for (file, bytes) in &rec.requests {
            client
                .report(Bytes::from(bytes.clone()), None)
                .await
                .unwrap();
            got.push_str(&common::render_header(file, bytes));
            for bag in recorder.bags.lock().unwrap().drain(..) {
                got.push_str(&bag);
            }
        }
        want.push_str(&rec.decoded);
        assert_eq!(got, want, "{}", rec.name);
    }
}

#[tokio::test]
async fn bad_input_gets_a_status_and_the_server_keeps_serving() {
    let (addr, recorder) = start(1024, None).await;
    let client = MixerClient::connect(&addr.to_string()).await.unwrap();
    let unknown_word = ReportRequest {
        attributes: vec![CompressedAttributes {
            int64s: [(-3, 1)].into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let wrong_type = ReportRequest {
        attributes: vec![CompressedAttributes {
            words: vec!["connection.sent.bytes".into()],
            bools: [(-1, true)].into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let cases: Vec<(Bytes, Code, String)> = vec![
        (
            Bytes::from_static(&[0x0a, 0x09, 0x01]),
            Code::InvalidArgument,
            "malformed protobuf at byte 2: truncated field".into(),
        ),
        (
            Bytes::from(prost::Message::encode_to_vec(&unknown_word)),
            Code::InvalidArgument,
            "bag 0: word index -3 is not defined (0 per-message words, 221 global words)".into(),
        ),
        (
            Bytes::from(prost::Message::encode_to_vec(&wrong_type)),
            Code::InvalidArgument,
            "bag 0: attribute 'connection.sent.bytes' is declared INT64 but was sent in 'bools'"
                .into(),
        ),
        (
            Bytes::from(vec![0u8; 2000]),
            Code::ResourceExhausted,
            "message of 2000 bytes exceeds the limit of 1024 bytes".into(),
        ),
    ];
    for (bytes, code, message) in cases {
        let status = client.report(bytes, None).await.unwrap_err();
        assert_eq!((status.code(), status.message()), (code, message.as_str()));
        // Still serving.
        client.report(one_bag(7), None).await.unwrap();
    }
    assert_eq!(
        recorder.bags.lock().unwrap().as_slice(),
        vec!["--- bag 0\n  connection.sent.bytes: 7 (int64)\n".to_owned(); 4]
    );
}

#[tokio::test]
async fn retries_with_a_report_id_count_once() {
    let dedup = Arc::new(Deduplicator::new(16));
    let (addr, recorder) = start(4 << 20, Some(Arc::clone(&dedup))).await;
    let client = MixerClient::connect(&addr.to_string()).await.unwrap();
    let first = client.next_report_id();
    assert_eq!(first.seq, 1);
    assert_eq!(first.client, client.client_id());
    client.report(one_bag(1), Some(&first)).await.unwrap();
    // The retry of an ambiguous failure is acknowledged and not counted.
    client.report(one_bag(1), Some(&first)).await.unwrap();
    let second = client.next_report_id();
    client.report(one_bag(2), Some(&second)).await.unwrap();
    // Istio's clients send no id: never deduplicated.
    client.report(one_bag(3), None).await.unwrap();
    client.report(one_bag(3), None).await.unwrap();
    // A request that failed is forgotten, so its retry counts.
    let third = client.next_report_id();
    let bad = client
        .report(Bytes::from_static(&[0xff]), Some(&third))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    client.report(one_bag(4), Some(&third)).await.unwrap();
    let sent: Vec<String> = recorder
        .bags
        .lock()
        .unwrap()
        .iter()
        .map(|b| b.lines().nth(1).unwrap().to_owned())
        .collect();
    assert_eq!(
        sent,
        [1, 2, 3, 3, 4].map(|n| format!("  connection.sent.bytes: {n} (int64)"))
    );
    // A malformed id is refused, not ignored.
    let mut bad_id = first.clone();
    bad_id.client = String::new();
    let status = client.report(one_bag(5), Some(&bad_id)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "x-meshmeter-report-id: report id '/1' is not <client-id>/<seq>"
    );
    let _: ReportId = "c/1".parse().unwrap();
}

#[tokio::test]
async fn check_answers_ok() {
    let (addr, _) = start(4 << 20, None).await;
    let client = MixerClient::connect(&addr.to_string()).await.unwrap();
    let resp = client.check(CheckRequest::default()).await.unwrap();
    let pre = resp.precondition.unwrap();
    assert_eq!(pre.status.unwrap().code, 0);
    assert_eq!(pre.valid_duration.unwrap().seconds, 10);
    assert_eq!(pre.valid_use_count, 200);
}

/// Sends `messages` in one call on the Report path, as a client-streaming client would.
async fn report_call(addr: SocketAddr, messages: Vec<Vec<u8>>) -> Result<(), Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let stream = futures_util::stream::iter(messages.into_iter().map(Bytes::from));
    grpc.client_streaming(
        tonic::Request::new(stream),
        http::uri::PathAndQuery::from_static(meshmeter_wire::REPORT_PATH),
        meshmeter_wire::BytesCodec,
    )
    .await
    .map(drop)
}

#[tokio::test]
async fn a_unary_report_with_two_messages_is_refused_and_nothing_counted() {
    let (addr, recorder) = start(4 << 20, None).await;
    let status = report_call(addr, vec![one_bag(1), one_bag(2)])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        status.message(),
        "Report is a unary call: it carries exactly one ReportRequest, a second arrived"
    );
    let status = report_call(addr, vec![]).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(status.message(), "the Report call carries no message");
    assert!(recorder.bags.lock().unwrap().is_empty());
    // One message, as clients send it, is still served on the same path.
    report_call(addr, vec![one_bag(3)]).await.unwrap();
    assert_eq!(recorder.bags.lock().unwrap().len(), 1);
}
