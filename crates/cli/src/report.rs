//! `meshmeter report`: send attribute bags to a Mixer v1 server, as Istio's proxies do.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use meshmeter_attributes::json::bag_from_json;
use meshmeter_attributes::{Bag, Manifest};
use meshmeter_wire::{Encoding, MixerClient, ReportEncoder};
use tonic::Code;

/// Send attribute bags to a telemetry server over the Mixer v1 `Report` protocol.
///
/// Bags are JSON objects of attribute names to values, typed by the vocabulary (Istio 1.1's
/// attributes plus any `--manifest`), with the value encodings of `meshmeter eval`: text as
/// strings, INT64 as integers, DURATION as `"10s"`, TIMESTAMP as RFC 3339, IP_ADDRESS as text,
/// BYTES as an array of 0-255, STRING_MAP as an object of strings. Every bag is checked
/// before anything is sent. Each request carries an idempotency key, and a request that fails
/// with UNAVAILABLE is retried (up to 3 times) with the same key, so it is counted once.
///
/// Exit codes: 0 all bags sent, 1 the server could not be reached or refused a request,
/// 2 bad input (a bag, a file or a flag).
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The telemetry server's gRPC address, `host:port` or `http://host:port`.
    #[arg(long, value_name = "ADDR")]
    mixer: String,

    /// One bag: a JSON object, e.g. `{"connection.sent.bytes": 100, "context.protocol": "tcp"}`.
    #[arg(
        long,
        value_name = "JSON",
        conflicts_with = "batch",
        required_unless_present = "batch"
    )]
    bag: Option<String>,

    /// A file of JSON Lines, one bag per line (blank lines are skipped); `-` reads stdin.
    #[arg(long, value_name = "FILE")]
    batch: Option<PathBuf>,

    /// An attribute manifest YAML file (documents of `kind: attributemanifest`) whose
    /// attributes extend the default vocabulary; repeatable.
    #[arg(long = "manifest", value_name = "FILE")]
    manifests: Vec<PathBuf>,

    /// How the bags of one request are encoded: `delta` (each bag carries what changed since
    /// the one before) or `independent` (each bag complete).
    #[arg(long, value_name = "ENCODING", default_value = "delta")]
    encoding: Encoding,

    /// The most bags per request.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    batch_size: u32,
}

pub(crate) fn run(args: Args) -> ExitCode {
    let manifest = match load_manifests(&args.manifests) {
        Ok(m) => m,
        Err(e) => {
            // Rendered diagnostics, each already saying `error[CODE]`.
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let bags = match read_bags(&args, &manifest) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let encoder = ReportEncoder::new(&manifest, args.encoding);
    match runtime.block_on(send(&args.mixer, &encoder, &bags, args.batch_size as usize)) {
        Ok(requests) => {
            println!(
                "sent {} bag{} in {requests} request{} to {}",
                bags.len(),
                if bags.len() == 1 { "" } else { "s" },
                if requests == 1 { "" } else { "s" },
                args.mixer
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Reads every bag, failing on the first bad one (nothing is sent then).
fn read_bags(args: &Args, manifest: &Manifest) -> Result<Vec<Bag<'static>>, String> {
    if let Some(text) = &args.bag {
        let json: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("--bag: invalid JSON: {e}"))?;
        return bag_from_json(manifest, &json)
            .map(|b| vec![b])
            .map_err(|e| format!("--bag: {e}"));
    }
    let Some(path) = &args.batch else {
        return Err("give --bag or --batch".into());
    };
    let (name, reader): (String, Box<dyn BufRead>) = if path.as_os_str() == "-" {
        ("stdin".into(), Box::new(std::io::stdin().lock()))
    } else {
        let file = std::fs::File::open(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        (
            path.display().to_string(),
            Box::new(std::io::BufReader::new(file)),
        )
    };
    let mut bags = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| format!("{name}: cannot read line {}: {e}", i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let json: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| format!("{name}:{}: invalid JSON: {e}", i + 1))?;
        bags.push(bag_from_json(manifest, &json).map_err(|e| format!("{name}:{}: {e}", i + 1))?);
    }
    if bags.is_empty() {
        return Err(format!("{name}: no bags"));
    }
    Ok(bags)
}

/// Sends the bags in requests of at most `batch_size`; returns how many requests were sent.
async fn send(
    addr: &str,
    encoder: &ReportEncoder,
    bags: &[Bag<'static>],
    batch_size: usize,
) -> Result<usize, String> {
    let client = MixerClient::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let mut requests = 0;
    for chunk in bags.chunks(batch_size) {
        let request = encoder.encode(chunk);
        let id = client.next_report_id();
        let mut attempt = 1;
        loop {
            match client.report(request.clone(), Some(&id)).await {
                Ok(()) => break,
                Err(status) if status.code() == Code::Unavailable && attempt < 3 => {
                    tracing::warn!(report_id = %id, attempt, "report failed, retrying: {}", status.message());
                    // Backoff between attempts, not synchronisation.
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                    attempt += 1;
                }
                Err(status) => {
                    return Err(format!(
                        "the server refused request {} ({} bags): {:?}: {}",
                        requests + 1,
                        chunk.len(),
                        status.code(),
                        status.message()
                    ))
                }
            }
        }
        requests += 1;
    }
    Ok(requests)
}

/// The default vocabulary extended by `kind: attributemanifest` documents.
fn load_manifests(paths: &[PathBuf]) -> Result<Manifest, String> {
    crate::shared::load_manifests(paths, Manifest::istio())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use meshmeter_wire::{BagDecoder, MixerServer, MixerService};
    use tonic::codegen::Bytes;
    use tonic::metadata::MetadataMap;
    use tonic::Status;

    use super::*;
    use meshmeter_attributes::ValueType;

    fn args(mixer: &str) -> Args {
        Args {
            mixer: mixer.to_owned(),
            bag: None,
            batch: None,
            manifests: Vec::new(),
            encoding: Encoding::Delta,
            batch_size: 100,
        }
    }

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("meshmeter-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn bad_bags_name_the_line_and_attribute() {
        let m = Manifest::istio();
        let mut a = args("127.0.0.1:1");
        a.batch = Some(temp_file(
            "bad.jsonl",
            "{\"connection.sent.bytes\": 1}\n\n{\"connection.sent.bytes\": \"ten\"}\n",
        ));
        let err = read_bags(&a, &m).unwrap_err();
        assert_eq!(
            err,
            format!(
                "{}:3: attribute 'connection.sent.bytes' is INT64, but \"ten\" is not a INT64 value",
                a.batch.as_ref().unwrap().display()
            )
        );
        let mut a = args("127.0.0.1:1");
        a.bag = Some("{\"conection.sent.bytes\": 1}".into());
        assert_eq!(
            read_bags(&a, &m).unwrap_err(),
            "--bag: unknown attribute 'conection.sent.bytes'; did you mean 'connection.sent.bytes'?"
        );
        a.bag = Some("{".into());
        assert!(read_bags(&a, &m)
            .unwrap_err()
            .starts_with("--bag: invalid JSON: "));
        // Bad input exits 2 before anything is sent.
        assert_eq!(format!("{:?}", run(a)), format!("{:?}", ExitCode::from(2)));
    }

    #[test]
    fn manifests_extend_the_vocabulary() {
        let path = temp_file(
            "extra.yaml",
            "apiVersion: config.istio.io/v1alpha2\nkind: attributemanifest\nmetadata:\n  name: extra\nspec:\n  attributes:\n    my.counter:\n      valueType: INT64\n",
        );
        let m = load_manifests(&[path]).unwrap();
        assert_eq!(
            m.lookup("my.counter").map(|(_, t)| t),
            Some(ValueType::Int64)
        );
        assert!(m.id("connection.sent.bytes").is_some());
        let bad = temp_file("bad.yaml", "kind: rule\n");
        assert_eq!(
            load_manifests(std::slice::from_ref(&bad)).unwrap_err(),
            format!(
                "{}: error[C0063]: no `kind: attributemanifest` document\n\n1 error, 0 warnings",
                bad.display()
            )
        );
    }

    struct Counter {
        decoder: BagDecoder,
        sent: Mutex<Vec<(usize, i64)>>,
    }

    impl MixerService for Counter {
        async fn report(&self, request: Bytes, _: &MetadataMap) -> Result<(), Status> {
            let id = self.decoder.manifest().id("connection.sent.bytes").unwrap();
            let mut bags = Vec::new();
            self.decoder.decode_report(&request, |i, bag| {
                if let Some(meshmeter_attributes::Value::Int64(v)) = bag.get(id) {
                    bags.push((i, *v));
                }
            })?;
            self.sent.lock().unwrap().extend(bags);
            Ok(())
        }
    }

    #[test]
    fn sends_batches_to_a_real_server() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let m = Manifest::istio();
        let counter = Arc::new(Counter {
            decoder: BagDecoder::new(&m),
            sent: Mutex::new(Vec::new()),
        });
        let addr = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(
                MixerServer::from_arc(Arc::clone(&counter)).serve(listener, std::future::pending()),
            );
            addr
        });
        let lines: String = (1..=5)
            .map(|n| format!("{{\"connection.sent.bytes\": {n}, \"context.protocol\": \"tcp\"}}\n"))
            .collect();
        let mut a = args(&addr.to_string());
        a.batch = Some(temp_file("five.jsonl", &lines));
        a.batch_size = 2;
        let bags = read_bags(&a, &m).unwrap();
        let encoder = ReportEncoder::new(&m, a.encoding);
        let requests = rt.block_on(send(&a.mixer, &encoder, &bags, 2)).unwrap();
        assert_eq!(requests, 3);
        assert_eq!(
            *counter.sent.lock().unwrap(),
            [(0, 1), (1, 2), (0, 3), (1, 4), (0, 5)]
        );
    }

    #[test]
    fn unreachable_server_exits_1() {
        // A port that was just free: nothing listens there now, so the connection is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut a = args(&format!("127.0.0.1:{port}"));
        a.bag = Some("{\"connection.sent.bytes\": 1}".into());
        assert_eq!(format!("{:?}", run(a)), format!("{:?}", ExitCode::from(1)));
    }
}
