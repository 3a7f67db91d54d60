//! The stdio handler: logentry instances as one JSON object per line, the shape Mixer's stdio
//! adapter wrote with `outputAsJson`:
//!
//! ```text
//! {"level":"info","time":"2019-05-20T10:00:00.250000Z","instance":"tcpaccesslog.logentry.istio-system","bytes":512,"source":"ratings"}
//! ```
//!
//! `level` is the instance's severity mapped through the severity table (unknown severities are
//! `info`), `time` is its timestamp in UTC with microseconds, `instance` its name, and then
//! its variables sorted by name (as Mixer did). Text is a JSON string, INT64 and DOUBLE are
//! numbers (non-finite doubles are text), BOOL is a boolean, durations are Go's text form,
//! timestamps use the `time` format, IP addresses are text, maps are objects, bytes are arrays.
//!
//! Lines are formatted on the caller's thread and handed to a writer thread through a bounded
//! queue; when the queue is full the line is dropped and counted instead of blocking the
//! report path.

#![warn(missing_docs)]

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::thread::JoinHandle;

use meshmeter_attributes::json::value_to_json;
use meshmeter_attributes::{Timestamp, Value};

use meshmeter_selfmetrics::Counter;

/// The levels Mixer's stdio adapter wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// `info`
    Info,
    /// `warn`
    Warn,
    /// `error`
    Error,
}

impl Level {
    /// The text written in `level`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// Mixer's default `severity_levels`: severity text to level.
pub const DEFAULT_SEVERITY_LEVELS: [(&str, Level); 14] = [
    ("INFORMATIONAL", Level::Info),
    ("informational", Level::Info),
    ("INFO", Level::Info),
    ("info", Level::Info),
    ("WARNING", Level::Warn),
    ("warning", Level::Warn),
    ("WARN", Level::Warn),
    ("warn", Level::Warn),
    ("ERROR", Level::Error),
    ("error", Level::Error),
    ("ERR", Level::Error),
    ("err", Level::Error),
    ("FATAL", Level::Error),
    ("fatal", Level::Error),
];

/// Where lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Standard output (Mixer's default).
    Stdout,
    /// Standard error.
    Stderr,
    /// A file, created if absent and appended to.
    File(PathBuf),
}

/// How the writer behaves.
#[derive(Clone, Debug)]
pub struct StdioOptions {
    /// Severity text to level; severities not listed are `info`.
    pub severity_levels: Vec<(String, Level)>,
    /// Lines queued for the writer thread before new ones are dropped.
    pub queue_capacity: usize,
    /// Where drops and write errors are counted (share them with a [`SelfMetrics`] registry
    /// to export them).
    ///
    /// [`SelfMetrics`]: meshmeter_selfmetrics::SelfMetrics
    pub counts: StdioCounts,
}

/// The writer's loss counters.
#[derive(Clone, Debug, Default)]
pub struct StdioCounts {
    /// Lines dropped because the queue was full.
    pub dropped: Counter,
    /// Lines (or flushes) the sink refused.
    pub write_errors: Counter,
}

impl Default for StdioOptions {
    fn default() -> Self {
        StdioOptions {
            severity_levels: DEFAULT_SEVERITY_LEVELS
                .iter()
                .map(|&(s, l)| (s.to_owned(), l))
                .collect(),
            queue_capacity: 10_000,
            counts: StdioCounts::default(),
        }
    }
}

/// A writer that cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    /// The output file cannot be opened for appending.
    #[error("cannot open log file {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The writer thread cannot be started.
    #[error("cannot start the log writer thread: {0}")]
    Thread(io::Error),
}

enum Msg {
    Line(String),
    Flush(SyncSender<()>),
}

/// A logentry writer. Dropping it flushes what is queued and stops the thread.
#[derive(Debug)]
pub struct StdioWriter {
    tx: Option<SyncSender<Msg>>,
    thread: Option<JoinHandle<()>>,
    severity_levels: Vec<(String, Level)>,
    counts: StdioCounts,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

impl StdioWriter {
    /// A writer to `output`.
    pub fn open(output: &Output, options: StdioOptions) -> Result<Self, StdioError> {
        let sink: Box<dyn Write + Send> = match output {
            Output::Stdout => Box::new(io::stdout()),
            Output::Stderr => Box::new(io::stderr()),
            Output::File(path) => Box::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| StdioError::Open {
                        path: path.clone(),
                        source,
                    })?,
            ),
        };
        Self::with_sink(sink, options)
    }

    /// A writer to any sink (tests, pipes).
    pub fn with_sink(
        sink: Box<dyn Write + Send>,
        options: StdioOptions,
    ) -> Result<Self, StdioError> {
        let (tx, rx) = mpsc::sync_channel(options.queue_capacity.max(1));
        let counts = options.counts.clone();
        let thread_counts = options.counts;
        let thread = std::thread::Builder::new()
            .name("meshmeter-stdio".into())
            .spawn(move || run(rx, BufWriter::new(sink), &thread_counts))
            .map_err(StdioError::Thread)?;
        Ok(StdioWriter {
            tx: Some(tx),
            thread: Some(thread),
            severity_levels: options.severity_levels,
            counts,
        })
    }

    /// Queues one line for a logentry instance; returns false when it was dropped because the
    /// queue is full.
    pub fn write(
        &self,
        instance: &str,
        severity: &str,
        timestamp: Timestamp,
        variables: &[(&str, Value<'_>)],
    ) -> bool {
        let level = self
            .severity_levels
            .iter()
            .find(|(s, _)| s == severity)
            .map_or(Level::Info, |&(_, l)| l);
        let line = format_line(instance, level, timestamp, variables);
        let Some(tx) = &self.tx else { return false };
        match tx.try_send(Msg::Line(line)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counts.dropped.inc();
                false
            }
        }
    }

    /// Waits until every line queued so far is written and flushed.
    pub fn flush(&self) {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        if let Some(tx) = &self.tx {
            if tx.send(Msg::Flush(ack_tx)).is_ok() {
                let _ = ack_rx.recv();
            }
        }
    }

    /// Lines dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.counts.dropped.get()
    }

    /// Lines (or flushes) the sink refused.
    pub fn write_errors(&self) -> u64 {
        self.counts.write_errors.get()
    }
}

impl Drop for StdioWriter {
    fn drop(&mut self) {
        // Closing the queue makes the thread write what is left, flush and exit.
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(rx: Receiver<Msg>, mut out: BufWriter<Box<dyn Write + Send>>, counts: &StdioCounts) {
    let flush = |out: &mut BufWriter<Box<dyn Write + Send>>| {
        if out.flush().is_err() {
            counts.write_errors.inc();
        }
    };
    let handle = |msg: Msg, out: &mut BufWriter<Box<dyn Write + Send>>| match msg {
        Msg::Line(line) => {
            if out.write_all(line.as_bytes()).is_err() {
                counts.write_errors.inc();
            }
        }
        Msg::Flush(ack) => {
            flush(out);
            let _ = ack.send(());
        }
    };
    // Drains everything queued; false once every sender is gone.
    let drain = |out: &mut BufWriter<Box<dyn Write + Send>>| -> (bool, bool) {
        let mut got = false;
        loop {
            match rx.try_recv() {
                Ok(msg) => {
                    got = true;
                    handle(msg, out);
                }
                Err(TryRecvError::Empty) => return (got, true),
                Err(TryRecvError::Disconnected) => return (got, false),
            }
        }
    };
    while let Ok(msg) = rx.recv() {
        handle(msg, &mut out);
        let (_, open) = drain(&mut out);
        flush(&mut out);
        if !open {
            return;
        }
        // Under steady traffic, wake up by ourselves every few milliseconds rather than be
        // woken (a futex call on the caller's side) for every line; go back to blocking after
        // a quiet spell.
        let mut quiet = 0;
        while quiet < LINGER_ROUNDS {
            std::thread::sleep(LINGER);
            let (got, open) = drain(&mut out);
            if got {
                flush(&mut out);
                quiet = 0;
            } else {
                quiet += 1;
            }
            if !open {
                return;
            }
        }
    }
    flush(&mut out);
}

/// How long the writer sleeps between drains while lines keep coming.
const LINGER: std::time::Duration = std::time::Duration::from_millis(2);
/// Empty drains in a row before the writer blocks again.
const LINGER_ROUNDS: u32 = 25;

/// One JSON line (with its newline).
pub fn format_line(
    instance: &str,
    level: Level,
    timestamp: Timestamp,
    variables: &[(&str, Value<'_>)],
) -> String {
    let mut line = String::with_capacity(128);
    line.push_str("{\"level\":\"");
    line.push_str(level.as_str());
    line.push_str("\",\"time\":\"");
    write_time(timestamp, &mut line);
    line.push_str("\",\"instance\":");
    json_string(instance, &mut line);
    let mut order: Vec<usize> = (0..variables.len()).collect();
    order.sort_by(|&a, &b| variables[a].0.cmp(variables[b].0));
    for i in order {
        let (name, value) = &variables[i];
        line.push(',');
        json_string(name, &mut line);
        line.push(':');
        match value {
            Value::Timestamp(t) => {
                line.push('"');
                write_time(*t, &mut line);
                line.push('"');
            }
            other => line.push_str(&value_to_json(other).to_string()),
        }
    }
    line.push_str("}\n");
    line
}

/// UTC with exactly six fractional digits, as Mixer's stdio adapter wrote times.
fn write_time(t: Timestamp, out: &mut String) {
    use std::fmt::Write as _;
    match time::OffsetDateTime::from_unix_timestamp(t.secs()) {
        Ok(dt) => {
            let _ = write!(
                out,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
                dt.year(),
                u8::from(dt.month()),
                dt.day(),
                dt.hour(),
                dt.minute(),
                dt.second(),
                t.subsec_nanos() / 1000
            );
        }
        Err(_) => {
            let _ = write!(out, "{t}");
        }
    }
}

fn json_string(s: &str, out: &mut String) {
    out.push_str(&serde_json::Value::from(s).to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format() {
        let t: Timestamp = "2019-05-20T10:00:00.25Z".parse().unwrap();
        let map: meshmeter_attributes::StringMap<'_> = [("app", "x")].into_iter().collect();
        let line = format_line(
            "tcpaccesslog.logentry.istio-system",
            Level::Warn,
            t,
            &[
                ("source", Value::from("rat\"ings")),
                ("bytes", Value::Int64(512)),
                ("at", Value::Timestamp(t)),
                ("latency", Value::Duration("6.848ms".parse().unwrap())),
                ("ip", Value::IpAddress("10.0.0.1".parse().unwrap())),
                ("labels", Value::from(map)),
                ("ratio", Value::Double(f64::NAN)),
            ],
        );
        assert_eq!(
            line,
            "{\"level\":\"warn\",\"time\":\"2019-05-20T10:00:00.250000Z\",\
             \"instance\":\"tcpaccesslog.logentry.istio-system\",\
             \"at\":\"2019-05-20T10:00:00.250000Z\",\"bytes\":512,\"ip\":\"10.0.0.1\",\
             \"labels\":{\"app\":\"x\"},\"latency\":\"6.848ms\",\"ratio\":\"NaN\",\
             \"source\":\"rat\\\"ings\"}\n"
        );
    }
}
