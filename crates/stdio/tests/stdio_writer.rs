//! The stdio writer against real files and a sink that stalls.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::mpsc;

use meshmeter_attributes::{Timestamp, Value};
use meshmeter_stdio::{Output, StdioOptions, StdioWriter};

fn temp_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshmeter-stdio-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

#[test]
fn writes_json_lines_to_a_file_and_flushes_on_drop() {
    let path = temp_file("access.log");
    let t = Timestamp::new(1_558_346_400, 1_000);
    {
        let writer =
            StdioWriter::open(&Output::File(path.clone()), StdioOptions::default()).unwrap();
        assert!(writer.write("a.logentry.default", "ERR", t, &[("b", Value::Int64(1))]));
        writer.flush();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"level\":\"error\",\"time\":\"2019-05-20T10:00:00.000001Z\",\"instance\":\"a.logentry.default\",\"b\":1}\n"
        );
        assert!(writer.write("a.logentry.default", "custom", t, &[]));
        // Dropping flushes the queue.
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        text.lines().nth(1),
        Some("{\"level\":\"info\",\"time\":\"2019-05-20T10:00:00.000001Z\",\"instance\":\"a.logentry.default\"}")
    );
}

#[test]
fn unwritable_file_is_an_error() {
    let err = StdioWriter::open(
        &Output::File(PathBuf::from("/nonexistent-dir/x.log")),
        StdioOptions::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot open log file /nonexistent-dir/x.log: "),
        "{err}"
    );
}

/// A sink whose first write blocks until the test lets it go.
struct Stalled {
    gate: mpsc::Receiver<()>,
    entered: mpsc::SyncSender<()>,
    data: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Write for Stalled {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = self.entered.try_send(());
        let _ = self.gate.recv();
        self.data.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_full_queue_drops_and_counts_instead_of_blocking() {
    let (open, gate) = mpsc::channel();
    let (entered_tx, entered) = mpsc::sync_channel(1);
    let data = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Stalled {
        gate,
        entered: entered_tx,
        data: data.clone(),
    };
    let options = StdioOptions {
        queue_capacity: 2,
        ..StdioOptions::default()
    };
    let writer = StdioWriter::with_sink(Box::new(sink), options).unwrap();
    let t = Timestamp::new(0, 0);
    // The first line reaches the sink (via the flush after the drained burst) and stalls it.
    assert!(writer.write("i", "info", t, &[("n", Value::Int64(0))]));
    entered.recv().unwrap();
    let accepted = (1..=5)
        .filter(|&n| writer.write("i", "info", t, &[("n", Value::Int64(n))]))
        .count();
    assert_eq!(accepted, 2);
    assert_eq!(writer.dropped(), 3);
    for _ in 0..10 {
        open.send(()).unwrap();
    }
    drop(writer);
    let text = String::from_utf8(data.lock().unwrap().clone()).unwrap();
    let ns: Vec<&str> = text
        .lines()
        .map(|l| l.rsplit_once("\"n\":").unwrap().1)
        .collect();
    assert_eq!(ns, ["0}", "1}", "2}"]);
}
