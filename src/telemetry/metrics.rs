//! A small metrics registry: atomics the stages bump, and the Prometheus text format 0.0.4.
//!
//! Why not the `prometheus-client` crate: it encodes only OpenMetrics (`# EOF`, `_total` added by
//! the encoder, `application/openmetrics-text`), while iemd promises text format 0.0.4, and gauges
//! read at scrape time from a colleague's stats struct need a custom `Collector` there. What we
//! need is three value kinds plus callback series, about 300 lines with tests.
//!
//! Invariants:
//! - A family (one metric name) has one kind and one list of label names for its whole life.
//!   Registering the same name again with the same kind and labels returns the same family;
//!   a conflicting registration is logged at error level and gets a detached handle (counts go
//!   nowhere) instead of panicking, since registration happens once at start-up.
//! - Bumping a handle is one relaxed atomic operation; only scraping and registration lock.
//! - A callback series (`gauge_fn`, `counter_fn`) replaces a direct series with the same labels,
//!   so the daemon can bridge a stage's own stats struct either way.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Reads a value at scrape time.
pub(crate) type ValueFn = Box<dyn Fn() -> f64 + Send + Sync>;

/// The kind of a metric family, as written on its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

impl MetricKind {
    fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// A monotonically increasing count.
#[derive(Clone, Default, Debug)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (stored as `f64` bits).
#[derive(Clone, Default, Debug)]
pub struct Gauge(Arc<AtomicU64>);

impl Gauge {
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    #[cfg(test)]
    pub(crate) fn add(&self, d: f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some((f64::from_bits(b) + d).to_bits())
            });
    }
    pub(crate) fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

#[derive(Debug)]
struct HistogramCore {
    /// Upper bounds, ascending; `+Inf` is implicit.
    bounds: Vec<f64>,
    /// Per-bucket (not cumulative) counts; one more than `bounds` for `+Inf`.
    counts: Vec<AtomicU64>,
    sum_bits: AtomicU64,
    count: AtomicU64,
}

/// A distribution of observations in fixed buckets.
#[derive(Clone, Debug)]
pub struct Histogram(Arc<HistogramCore>);

impl Histogram {
    fn new(bounds: &[f64]) -> Self {
        let mut bounds: Vec<f64> = bounds.iter().copied().filter(|b| b.is_finite()).collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram(Arc::new(HistogramCore {
            bounds,
            counts,
            sum_bits: AtomicU64::new(0f64.to_bits()),
            count: AtomicU64::new(0),
        }))
    }

    pub fn observe(&self, v: f64) {
        let core = &self.0;
        let i = core.bounds.partition_point(|b| *b < v);
        core.counts[i].fetch_add(1, Ordering::Relaxed);
        let _ = core
            .sum_bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some((f64::from_bits(b) + v).to_bits())
            });
        core.count.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }

    pub(crate) fn sum(&self) -> f64 {
        f64::from_bits(self.0.sum_bits.load(Ordering::Relaxed))
    }
}

enum Series {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
    Fn(ValueFn),
}

struct Family {
    name: String,
    help: String,
    kind: MetricKind,
    label_names: Vec<String>,
    /// Histogram bucket bounds (empty for other kinds).
    bounds: Vec<f64>,
    /// Keyed by label values, in the order of `label_names`.
    series: RwLock<BTreeMap<Vec<String>, Series>>,
}

impl Family {
    fn get_or_insert<T: Clone>(
        &self,
        values: &[&str],
        make: impl FnOnce() -> (T, Series),
        pick: impl Fn(&Series) -> Option<T>,
    ) -> Option<T> {
        if values.len() != self.label_names.len() {
            tracing::error!(metric = %self.name, expected = self.label_names.len(), got = values.len(), "wrong number of label values; series not recorded");
            return None;
        }
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        if let Ok(series) = self.series.read()
            && let Some(s) = series.get(&key)
        {
            return pick(s);
        }
        let mut series = self.series.write().ok()?;
        if let Some(s) = series.get(&key) {
            return pick(s);
        }
        let (handle, s) = make();
        series.insert(key, s);
        Some(handle)
    }
}

/// Counters for one label set each (e.g. per source).
#[derive(Clone)]
pub struct CounterVec(Option<Arc<Family>>);

impl CounterVec {
    /// The counter for these label values (created at zero on first use). A read lock and a
    /// map lookup: keep the handle when bumping in a hot loop.
    pub fn with(&self, values: &[&str]) -> Counter {
        self.0
            .as_ref()
            .and_then(|f| {
                f.get_or_insert(
                    values,
                    || {
                        let c = Counter::default();
                        (c.clone(), Series::Counter(c))
                    },
                    |s| match s {
                        Series::Counter(c) => Some(c.clone()),
                        _ => None,
                    },
                )
            })
            .unwrap_or_default()
    }
}

/// Gauges for one label set each (e.g. per broker URL).
#[derive(Clone)]
pub struct GaugeVec(Option<Arc<Family>>);

impl GaugeVec {
    pub fn with(&self, values: &[&str]) -> Gauge {
        self.0
            .as_ref()
            .and_then(|f| {
                f.get_or_insert(
                    values,
                    || {
                        let g = Gauge::default();
                        (g.clone(), Series::Gauge(g))
                    },
                    |s| match s {
                        Series::Gauge(g) => Some(g.clone()),
                        _ => None,
                    },
                )
            })
            .unwrap_or_default()
    }
}

/// The set of metric families one `/metrics` page shows.
#[derive(Default)]
pub struct Registry {
    families: RwLock<Vec<Arc<Family>>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    fn family(
        &self,
        name: &str,
        help: &str,
        kind: MetricKind,
        label_names: &[&str],
        bounds: &[f64],
    ) -> Option<Arc<Family>> {
        let mut families = self.families.write().ok()?;
        if let Some(f) = families.iter().find(|f| f.name == name) {
            if f.kind == kind
                && f.label_names
                    .iter()
                    .map(String::as_str)
                    .eq(label_names.iter().copied())
            {
                return Some(f.clone());
            }
            tracing::error!(
                metric = name,
                "metric registered twice with a different type or labels; this registration is not exported"
            );
            return None;
        }
        let f = Arc::new(Family {
            name: name.to_string(),
            help: help.to_string(),
            kind,
            label_names: label_names.iter().map(|l| l.to_string()).collect(),
            bounds: bounds.to_vec(),
            series: RwLock::new(BTreeMap::new()),
        });
        families.push(f.clone());
        Some(f)
    }

    /// An unlabelled counter (name should end in `_total`).
    pub(crate) fn counter(&self, name: &str, help: &str) -> Counter {
        CounterVec(self.family(name, help, MetricKind::Counter, &[], &[])).with(&[])
    }

    pub(crate) fn counter_vec(&self, name: &str, help: &str, label_names: &[&str]) -> CounterVec {
        CounterVec(self.family(name, help, MetricKind::Counter, label_names, &[]))
    }

    pub(crate) fn gauge(&self, name: &str, help: &str) -> Gauge {
        GaugeVec(self.family(name, help, MetricKind::Gauge, &[], &[])).with(&[])
    }

    pub(crate) fn gauge_vec(&self, name: &str, help: &str, label_names: &[&str]) -> GaugeVec {
        GaugeVec(self.family(name, help, MetricKind::Gauge, label_names, &[]))
    }

    /// A histogram with the given upper bucket bounds (`+Inf` is added).
    pub(crate) fn histogram(&self, name: &str, help: &str, bounds: &[f64]) -> Histogram {
        let h = Histogram::new(bounds);
        if let Some(f) = self.family(name, help, MetricKind::Histogram, &[], &h.0.bounds)
            && let Some(existing) = f.get_or_insert(
                &[],
                || (h.clone(), Series::Histogram(h.clone())),
                |s| match s {
                    Series::Histogram(h) => Some(h.clone()),
                    _ => None,
                },
            )
        {
            return existing;
        }
        h
    }

    /// A gauge series whose value is read from `read` at each scrape. `labels` are
    /// `(name, value)` pairs; it replaces a direct series with the same labels.
    pub(crate) fn gauge_fn(&self, name: &str, help: &str, labels: &[(&str, &str)], read: ValueFn) {
        self.value_fn(MetricKind::Gauge, name, help, labels, read);
    }

    /// A counter series read at scrape time (for a stage's own monotonic stats).
    pub(crate) fn counter_fn(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        read: ValueFn,
    ) {
        self.value_fn(MetricKind::Counter, name, help, labels, read);
    }

    fn value_fn(
        &self,
        kind: MetricKind,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        read: ValueFn,
    ) {
        let names: Vec<&str> = labels.iter().map(|(n, _)| *n).collect();
        let Some(f) = self.family(name, help, kind, &names, &[]) else {
            return;
        };
        if let Ok(mut series) = f.series.write() {
            series.insert(
                labels.iter().map(|(_, v)| v.to_string()).collect(),
                Series::Fn(read),
            );
        }
    }

    /// The whole registry in the Prometheus text exposition format 0.0.4.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        let Ok(families) = self.families.read() else {
            return out;
        };
        for f in families.iter() {
            let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(&f.help));
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.as_str());
            let Ok(series) = f.series.read() else {
                continue;
            };
            for (values, s) in series.iter() {
                let labels: Vec<(&str, &str)> = f
                    .label_names
                    .iter()
                    .map(String::as_str)
                    .zip(values.iter().map(String::as_str))
                    .collect();
                match s {
                    Series::Counter(c) => sample(&mut out, &f.name, &labels, c.get() as f64),
                    Series::Gauge(g) => sample(&mut out, &f.name, &labels, g.get()),
                    Series::Fn(read) => sample(&mut out, &f.name, &labels, read()),
                    Series::Histogram(h) => {
                        let bucket = format!("{}_bucket", f.name);
                        let mut cumulative = 0u64;
                        for (i, count) in h.0.counts.iter().enumerate() {
                            cumulative += count.load(Ordering::Relaxed);
                            let le = f
                                .bounds
                                .get(i)
                                .map_or_else(|| "+Inf".to_string(), |b| format_value(*b));
                            let mut l = labels.clone();
                            l.push(("le", &le));
                            sample(&mut out, &bucket, &l, cumulative as f64);
                        }
                        sample(&mut out, &format!("{}_sum", f.name), &labels, h.sum());
                        sample(
                            &mut out,
                            &format!("{}_count", f.name),
                            &labels,
                            h.count() as f64,
                        );
                    }
                }
            }
        }
        out
    }
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (n, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{n}=\"{}\"", escape_label(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {}", format_value(value));
}

/// A sample value as Prometheus writes it (`+Inf`, `-Inf`, `NaN`, shortest float otherwise).
pub(crate) fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One sample read back from a text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub(crate) labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a line of a text exposition could not be read.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("metrics line {line}: {reason}")]
pub struct ParseError {
    pub(crate) line: usize,
    pub(crate) reason: &'static str,
}

/// Reads the samples of a text exposition (format 0.0.4; comments skipped, timestamps ignored).
pub fn parse_text(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut samples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason| ParseError {
            line: i + 1,
            reason,
        };
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .ok_or(err("no value"))?;
        let name = &line[..name_end];
        if name.is_empty() {
            return Err(err("empty metric name"));
        }
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            rest = r;
            loop {
                rest = rest.trim_start_matches([' ', ',']);
                if let Some(r) = rest.strip_prefix('}') {
                    rest = r;
                    break;
                }
                let eq = rest.find('=').ok_or(err("label without '='"))?;
                let lname = rest[..eq].trim().to_string();
                rest = rest[eq + 1..]
                    .strip_prefix('"')
                    .ok_or(err("label value not quoted"))?;
                let mut value = String::new();
                let mut chars = rest.char_indices();
                let end = loop {
                    match chars.next() {
                        None => return Err(err("unterminated label value")),
                        Some((j, '"')) => break j,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c)) => value.push(c),
                            None => return Err(err("unterminated label value")),
                        },
                        Some((_, c)) => value.push(c),
                    }
                };
                rest = &rest[end + 1..];
                labels.push((lname, value));
            }
        }
        let value_text = rest.split_whitespace().next().ok_or(err("no value"))?;
        let value = match value_text {
            "+Inf" | "Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|_| err("value is not a number"))?,
        };
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
        samples
            .iter()
            .find(|s| s.name == name && labels.iter().all(|(n, v)| s.label(n) == Some(v)))
    }

    #[test]
    fn counters_gauges_and_callbacks_round_trip_through_the_text_format() {
        let r = Registry::new();
        let lines = r.counter_vec("t_lines_total", "Lines read.", &["source"]);
        lines.with(&["messages"]).add(41);
        lines.with(&["messages"]).inc();
        lines.with(&["we\"ird\\src\n"]).inc();
        let g = r.gauge("t_pending", "Pending\nrecords.");
        g.set(7.5);
        g.add(-2.0);
        r.gauge_fn(
            "t_cb",
            "From a callback.",
            &[("url", "amqp://h/")],
            Box::new(|| 3.25),
        );
        let text = r.encode();
        assert!(
            text.contains("# HELP t_pending Pending\\nrecords.\n# TYPE t_pending gauge\n"),
            "{text}"
        );
        let s = parse_text(&text).unwrap();
        assert_eq!(
            find(&s, "t_lines_total", &[("source", "messages")])
                .unwrap()
                .value,
            42.0
        );
        assert_eq!(
            find(&s, "t_lines_total", &[("source", "we\"ird\\src\n")])
                .unwrap()
                .value,
            1.0
        );
        assert_eq!(find(&s, "t_pending", &[]).unwrap().value, 5.5);
        assert_eq!(
            find(&s, "t_cb", &[("url", "amqp://h/")]).unwrap().value,
            3.25
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_sum_and_count() {
        let r = Registry::new();
        let h = r.histogram("t_latency_seconds", "Latency.", &[0.01, 0.001, 0.1]);
        for v in [0.0005, 0.001, 0.05, 3.0] {
            h.observe(v);
        }
        let s = parse_text(&r.encode()).unwrap();
        let le = |b| {
            find(&s, "t_latency_seconds_bucket", &[("le", b)])
                .unwrap()
                .value
        };
        // 0.001 is inclusive: `le` means less than or equal.
        assert_eq!(
            (le("0.001"), le("0.01"), le("0.1"), le("+Inf")),
            (2.0, 2.0, 3.0, 4.0)
        );
        assert_eq!(find(&s, "t_latency_seconds_count", &[]).unwrap().value, 4.0);
        let sum = find(&s, "t_latency_seconds_sum", &[]).unwrap().value;
        assert!((sum - 3.0515).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn same_registration_shares_the_series_and_conflicts_are_detached() {
        let r = Registry::new();
        let a = r.counter("t_x_total", "X.");
        let b = r.counter("t_x_total", "X.");
        a.inc();
        b.inc();
        assert_eq!(a.get(), 2);
        let g = r.gauge("t_x_total", "conflict");
        g.set(99.0);
        let s = parse_text(&r.encode()).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].value, 2.0);
    }

    #[test]
    fn callback_replaces_a_direct_series_with_the_same_labels() {
        let r = Registry::new();
        r.gauge("t_g", "G.").set(1.0);
        r.gauge_fn("t_g", "G.", &[], Box::new(|| 8.0));
        let s = parse_text(&r.encode()).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].value, 8.0);
    }

    #[test]
    fn parse_rejects_garbage_with_the_line_number() {
        assert_eq!(parse_text("a 1\nb{x=\"1\" 2\n").unwrap_err().line, 2);
        assert_eq!(
            parse_text("c abc").unwrap_err().reason,
            "value is not a number"
        );
        assert_eq!(
            parse_text("d +Inf 1700000000").unwrap()[0].value,
            f64::INFINITY
        );
    }
}
