//! The text exposition format.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::metric::Metric;
use super::series::{Series, State};
use super::spec::MetricKind;
use super::value::{escape_help, write_f64};

/// A series' numbers read out for printing; series with the same label text are merged here.
struct Sample {
    scalar: f64,
    last_update: u64,
    buckets: Vec<u64>,
    sum: f64,
}

impl Sample {
    fn read(s: &Series) -> Self {
        let last_update = s.last_update.load(Ordering::Relaxed);
        match &s.state {
            State::Scalar { float, whole } => Sample {
                scalar: State::scalar(float, whole),
                last_update,
                buckets: Vec::new(),
                sum: 0.0,
            },
            State::Histogram { buckets, sum } => Sample {
                scalar: 0.0,
                last_update,
                buckets: buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect(),
                sum: f64::from_bits(sum.load(Ordering::Relaxed)),
            },
        }
    }

    fn merge(&mut self, other: Sample, kind: &MetricKind) {
        match kind {
            MetricKind::Gauge => {
                if other.last_update >= self.last_update {
                    self.scalar = other.scalar;
                }
            }
            _ => self.scalar += other.scalar,
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.sum += other.sum;
        self.last_update = self.last_update.max(other.last_update);
    }
}

/// One metric's series in exposition order, written out a few at a time so that a scrape
/// never holds more than a bounded part of the text (the series themselves are shared, not
/// copied).
pub(super) struct Cursor {
    metric: Metric,
    series: Vec<Arc<Series>>,
    /// The next series to write.
    next: usize,
    header_written: bool,
}

impl Cursor {
    /// The metric's series as of now, sorted by label text; `None` when it has none (a metric
    /// without series is left out of the exposition).
    pub(super) fn new(metric: &Metric) -> Option<Self> {
        let mut series = metric.0.store.snapshot();
        if series.is_empty() {
            return None;
        }
        series.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
        Some(Cursor {
            metric: metric.clone(),
            series,
            next: 0,
            header_written: false,
        })
    }

    /// Appends the header (first call) and series until `out` holds at least `fill` bytes or
    /// the metric is complete; returns whether it is complete.
    pub(super) fn write(&mut self, out: &mut String, fill: usize) -> bool {
        let metric = &self.metric;
        let series = &self.series;
        let spec = metric.spec();
        if !self.header_written {
            write_header(metric, out);
            self.header_written = true;
        }
        // Values of different types can render to the same text (STRING "1" and INT64 1 after
        // a reload changed a dimension's type); Prometheus refuses duplicate series, so merge
        // them.
        let mut i = self.next;
        while i < series.len() && out.len() < fill {
            let labels: &Arc<Series> = &series[i];
            let mut sample = Sample::read(labels);
            let mut j = i + 1;
            while j < series.len() && series[j].labels == labels.labels {
                sample.merge(Sample::read(&series[j]), &spec.kind);
                j += 1;
            }
            write_series(metric, &labels.labels, &sample, out);
            i = j;
        }
        self.next = i;
        i >= series.len()
    }
}

fn write_header(metric: &Metric, out: &mut String) {
    let spec = metric.spec();
    let name = &spec.name;
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    escape_help(&spec.help, out);
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(spec.kind.type_name());
    out.push('\n');
}

fn write_series(metric: &Metric, labels: &str, sample: &Sample, out: &mut String) {
    let name = metric.name();
    if sample.buckets.is_empty() {
        out.push_str(name);
        braces(labels, out);
        out.push(' ');
        write_f64(sample.scalar, out);
        out.push('\n');
        return;
    }
    let bounds = &metric.0.bounds;
    let mut cumulative = 0u64;
    for (n, count) in sample.buckets.iter().enumerate() {
        cumulative += count;
        out.push_str(name);
        out.push_str("_bucket{");
        if !labels.is_empty() {
            out.push_str(labels);
            out.push(',');
        }
        out.push_str("le=\"");
        write_f64(bounds.get(n).copied().unwrap_or(f64::INFINITY), out);
        out.push_str("\"} ");
        out.push_str(itoa(cumulative, &mut [0u8; 20]));
        out.push('\n');
    }
    out.push_str(name);
    out.push_str("_sum");
    braces(labels, out);
    out.push(' ');
    write_f64(sample.sum, out);
    out.push('\n');
    out.push_str(name);
    out.push_str("_count");
    braces(labels, out);
    out.push(' ');
    out.push_str(itoa(cumulative, &mut [0u8; 20]));
    out.push('\n');
}

fn braces(labels: &str, out: &mut String) {
    if !labels.is_empty() {
        out.push('{');
        out.push_str(labels);
        out.push('}');
    }
}

fn itoa(mut v: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}
