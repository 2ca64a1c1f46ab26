//! Prometheus metrics of the agent, served as `GET /metrics` on the health port
//! ([`crate::agent::http::serve`]) in the Prometheus text format, version 0.0.4.
//!
//! [`Metrics`] is a cheap handle (an `Arc` of atomics): the control loop and the tasks beside it
//! update it without locks, and a scrape reads it with [`Metrics::render`]. Label values come
//! from fixed sets (a lease's `BackendType` is free text from etcd, so unknown types count under
//! `backend="other"` instead of growing the label set).
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `weft_peers{backend}` | gauge | peers in the lease table, by the backend type their lease advertises (`host-gw`, `vxlan`, `ipip`, `other`) |
//! | `weft_lease_expiry_timestamp_seconds` | gauge | Unix time the own etcd lease expires (0 = unknown or a reservation) |
//! | `weft_etcd_reconnects_total` | counter | lease-watch reconnects after etcd was lost |
//! | `weft_watch_events_total{type}` | counter | lease watch events: `put`, `delete`, `malformed`, `resync` |
//! | `weft_reconcile_runs_total{reason}` | counter | reconcile passes by reason (`initial_sync`, `lease_change`, `reacquire`, `drift_repair`, `audit`, `retry`, `config_change`, `other`) |
//! | `weft_reconcile_duration_seconds` | histogram | time of one reconcile pass (diff + kernel writes) |
//! | `weft_kernel_writes_total` | counter | successful kernel writes (route/neigh/FDB replace and delete) |
//! | `weft_kernel_write_errors_total` | counter | kernel writes the kernel refused |
//! | `weft_drift_repairs_total` | counter | reconcile passes after an out-of-band change that wrote something |
//! | `weft_ready` | gauge | 1 once `/readyz` answers 200, else 0 |
//! | `weft_build_info{version}` | gauge | always 1; the version of this build |
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The backend label values of `weft_peers`.
pub const PEER_BACKENDS: &[&str] = &["host-gw", "vxlan", "ipip", "other"];

/// The type label values of `weft_watch_events_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEventKind {
    Put,
    Delete,
    Malformed,
    Resync,
}

impl WatchEventKind {
    const ALL: [WatchEventKind; 4] = [
        WatchEventKind::Put,
        WatchEventKind::Delete,
        WatchEventKind::Malformed,
        WatchEventKind::Resync,
    ];

    pub fn label(self) -> &'static str {
        match self {
            WatchEventKind::Put => "put",
            WatchEventKind::Delete => "delete",
            WatchEventKind::Malformed => "malformed",
            WatchEventKind::Resync => "resync",
        }
    }
}

/// The reason label values of `weft_reconcile_runs_total`; see [`reason_label`].
pub const RECONCILE_REASONS: &[&str] = &[
    "initial_sync",
    "lease_change",
    "reacquire",
    "drift_repair",
    "audit",
    "retry",
    "config_change",
    "other",
];

/// The label for a reconcile reason as the control loop words it: `"drift repair"` →
/// `drift_repair`, `"audit (SIGHUP)"` and `"audit after subscribing"` → `audit`,
/// `"re-acquired"` → `reacquire`; reasons outside [`RECONCILE_REASONS`] count as `other`.
pub fn reason_label(why: &str) -> &'static str {
    let why = why.trim().to_ascii_lowercase();
    let norm: String = why.replace([' ', '-'], "_");
    if norm.starts_with("audit") {
        return "audit";
    }
    if norm.starts_with("re_acquire") || norm.starts_with("reacquire") {
        return "reacquire";
    }
    RECONCILE_REASONS
        .iter()
        .find(|r| **r == norm)
        .copied()
        .unwrap_or("other")
}

/// Upper bounds (seconds) of the `weft_reconcile_duration_seconds` buckets; `+Inf` is implied.
pub const DURATION_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// The agent's metrics. Cheap to clone; all clones share the counters.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    peers: [AtomicU64; 4],
    lease_expiry: AtomicU64,
    etcd_reconnects: AtomicU64,
    watch_events: [AtomicU64; 4],
    reconcile_runs: [AtomicU64; 8],
    /// Per bucket (not cumulative), the last one is `+Inf`.
    duration_buckets: [AtomicU64; 9],
    duration_sum_nanos: AtomicU64,
    duration_count: AtomicU64,
    kernel_writes: AtomicU64,
    kernel_write_errors: AtomicU64,
    drift_repairs: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl Metrics {
    pub fn new() -> Self {
        Metrics::default()
    }

    /// Sets `weft_peers` from the backend types of the peers' leases (every peer once).
    pub fn set_peers<'a>(&self, backend_types: impl IntoIterator<Item = &'a str>) {
        let mut counts = [0u64; 4];
        for t in backend_types {
            let slot = PEER_BACKENDS[..3].iter().position(|b| *b == t).unwrap_or(3);
            counts[slot] += 1;
        }
        for (gauge, n) in self.inner.peers.iter().zip(counts) {
            gauge.store(n, Ordering::Relaxed);
        }
    }

    /// Sets `weft_lease_expiry_timestamp_seconds`; `None` = unknown or a reservation (0).
    pub fn set_lease_expiry(&self, at: Option<SystemTime>) {
        let secs = at
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        self.inner.lease_expiry.store(secs, Ordering::Relaxed);
    }

    /// Sets the lease expiry to `ttl` from now (the TTL etcd granted or reported).
    pub fn set_lease_expiry_in(&self, ttl: Duration) {
        self.set_lease_expiry(SystemTime::now().checked_add(ttl));
    }

    pub fn etcd_reconnected(&self) {
        add(&self.inner.etcd_reconnects, 1);
    }

    pub fn watch_event(&self, kind: WatchEventKind) {
        add(&self.inner.watch_events[kind as usize], 1);
    }

    /// Records one reconcile pass: its reason (see [`reason_label`]), how long it took, and the
    /// kernel writes it made and had refused. A `drift repair` pass that wrote something also
    /// counts in `weft_drift_repairs_total`.
    pub fn reconcile_run(&self, why: &str, took: Duration, writes: u64, errors: u64) {
        let label = reason_label(why);
        let slot = RECONCILE_REASONS
            .iter()
            .position(|r| *r == label)
            .unwrap_or(RECONCILE_REASONS.len() - 1);
        add(&self.inner.reconcile_runs[slot], 1);
        let secs = took.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(DURATION_BUCKETS.len());
        add(&self.inner.duration_buckets[bucket], 1);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        add(&self.inner.duration_sum_nanos, nanos);
        add(&self.inner.duration_count, 1);
        add(&self.inner.kernel_writes, writes);
        add(&self.inner.kernel_write_errors, errors);
        if label == "drift_repair" && writes > 0 {
            add(&self.inner.drift_repairs, 1);
        }
    }

    /// Counts kernel writes made outside a reconcile pass (none in the agent since devices are
    /// part of the desired state; kept for callers that write on their own).
    pub fn kernel_writes(&self, writes: u64, errors: u64) {
        add(&self.inner.kernel_writes, writes);
        add(&self.inner.kernel_write_errors, errors);
    }

    /// The metrics in the Prometheus text format 0.0.4; `ready` is the `/readyz` state.
    pub fn render(&self, ready: bool) -> String {
        let m = &self.inner;
        let mut out = String::with_capacity(4096);
        family(
            &mut out,
            "weft_peers",
            "gauge",
            "Peers in the lease table, by the backend type their lease advertises.",
        );
        for (b, g) in PEER_BACKENDS.iter().zip(&m.peers) {
            sample(&mut out, "weft_peers", &[("backend", b)], get(g));
        }
        family(
            &mut out,
            "weft_lease_expiry_timestamp_seconds",
            "gauge",
            "Unix time the node's etcd lease expires (0 = unknown or a reservation).",
        );
        sample(
            &mut out,
            "weft_lease_expiry_timestamp_seconds",
            &[],
            get(&m.lease_expiry),
        );
        family(
            &mut out,
            "weft_etcd_reconnects_total",
            "counter",
            "Lease watch reconnects after the etcd connection was lost.",
        );
        sample(
            &mut out,
            "weft_etcd_reconnects_total",
            &[],
            get(&m.etcd_reconnects),
        );
        family(
            &mut out,
            "weft_watch_events_total",
            "counter",
            "Lease watch events by type.",
        );
        for k in WatchEventKind::ALL {
            sample(
                &mut out,
                "weft_watch_events_total",
                &[("type", k.label())],
                get(&m.watch_events[k as usize]),
            );
        }
        family(
            &mut out,
            "weft_reconcile_runs_total",
            "counter",
            "Reconcile passes by reason.",
        );
        for (r, c) in RECONCILE_REASONS.iter().zip(&m.reconcile_runs) {
            sample(
                &mut out,
                "weft_reconcile_runs_total",
                &[("reason", r)],
                get(c),
            );
        }
        family(
            &mut out,
            "weft_reconcile_duration_seconds",
            "histogram",
            "Duration of one reconcile pass (diff and kernel writes).",
        );
        let mut cumulative = 0;
        for (i, c) in m.duration_buckets.iter().enumerate() {
            cumulative += get(c);
            let le = DURATION_BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
            sample(
                &mut out,
                "weft_reconcile_duration_seconds_bucket",
                &[("le", &le)],
                cumulative,
            );
        }
        let sum = Duration::from_nanos(get(&m.duration_sum_nanos)).as_secs_f64();
        let _ = writeln!(out, "weft_reconcile_duration_seconds_sum {sum}");
        sample(
            &mut out,
            "weft_reconcile_duration_seconds_count",
            &[],
            get(&m.duration_count),
        );
        for (name, help, c) in [
            (
                "weft_kernel_writes_total",
                "Successful kernel writes (routes, neighbours, FDB entries).",
                &m.kernel_writes,
            ),
            (
                "weft_kernel_write_errors_total",
                "Kernel writes the kernel refused.",
                &m.kernel_write_errors,
            ),
            (
                "weft_drift_repairs_total",
                "Reconcile passes after an out-of-band kernel change that wrote something.",
                &m.drift_repairs,
            ),
        ] {
            family(&mut out, name, "counter", help);
            sample(&mut out, name, &[], get(c));
        }
        family(
            &mut out,
            "weft_ready",
            "gauge",
            "1 when the agent is ready (lease held, initial sync done), else 0.",
        );
        sample(&mut out, "weft_ready", &[], u64::from(ready));
        family(
            &mut out,
            "weft_build_info",
            "gauge",
            "Always 1; labelled with the version of this build.",
        );
        sample(
            &mut out,
            "weft_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1,
        );
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: u64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape_label(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Label values escape `\`, `"` and newlines (text format 0.0.4).
fn escape_label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// A parsed text-format exposition, for tests (unit tests here and the end-to-end scrape):
/// every sample as `(name, labels, value)`, checked against the format's rules.
pub mod parse {
    use std::collections::{BTreeMap, BTreeSet};

    /// One sample line.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Sample {
        pub name: String,
        pub labels: BTreeMap<String, String>,
        pub value: f64,
    }

    /// Parses the text format 0.0.4 strictly: `# HELP`/`# TYPE` lines, then samples of that
    /// family; metric and label names valid; label values quoted with escapes; values floats;
    /// a family declared once, its samples contiguous, no sample repeated. Returns the samples
    /// and the declared type per family.
    pub fn exposition(text: &str) -> Result<(Vec<Sample>, BTreeMap<String, String>), String> {
        let mut samples = Vec::new();
        let mut types: BTreeMap<String, String> = BTreeMap::new();
        let mut seen = BTreeSet::new();
        let mut current: Option<String> = None;
        let mut finished: BTreeSet<String> = BTreeSet::new();
        for (n, line) in text.lines().enumerate() {
            let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                let (kw, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                if !valid_name(name) {
                    return Err(at(format!("bad metric name {name:?}")));
                }
                match kw {
                    "HELP" => {}
                    "TYPE" => {
                        let t = parts.next().unwrap_or("");
                        if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) {
                            return Err(at(format!("unknown type {t:?}")));
                        }
                        if types.insert(name.to_string(), t.to_string()).is_some() {
                            return Err(at("family declared twice".into()));
                        }
                        if let Some(prev) = current.replace(name.to_string()) {
                            finished.insert(prev);
                        }
                    }
                    _ => {}
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let s = sample_line(line).map_err(at)?;
            let family = family_of(&s.name, &types)
                .ok_or_else(|| at(format!("sample {} has no # TYPE", s.name)))?;
            if finished.contains(&family) || current.as_deref() != Some(family.as_str()) {
                return Err(at(format!("samples of {family} are not contiguous")));
            }
            if types[&family] == "counter" && !s.name.ends_with("_total") {
                return Err(at("counter without _total".into()));
            }
            if !seen.insert((s.name.clone(), format!("{:?}", s.labels))) {
                return Err(at("sample repeated".into()));
            }
            samples.push(s);
        }
        Ok((samples, types))
    }

    fn family_of(name: &str, types: &BTreeMap<String, String>) -> Option<String> {
        if types.contains_key(name) {
            return Some(name.to_string());
        }
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if types.get(base).map(String::as_str) == Some("histogram") {
                    return Some(base.to_string());
                }
            }
        }
        None
    }

    fn valid_name(s: &str) -> bool {
        let mut chars = s.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    fn sample_line(line: &str) -> Result<Sample, String> {
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| "no value".to_string())?;
        let name = &line[..name_end];
        if !valid_name(name) {
            return Err(format!("bad metric name {name:?}"));
        }
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices().peekable();
            loop {
                let start = chars.peek().map(|(i, _)| *i).ok_or("unterminated labels")?;
                if body[start..].starts_with('}') {
                    rest = &body[start + 1..];
                    break;
                }
                let eq = body[start..].find('=').ok_or("label without =")? + start;
                let key = &body[start..eq];
                if !valid_name(key) || key.contains(':') {
                    return Err(format!("bad label name {key:?}"));
                }
                if !body[eq + 1..].starts_with('"') {
                    return Err("label value not quoted".into());
                }
                while chars.peek().is_some_and(|(i, _)| *i <= eq + 1) {
                    chars.next();
                }
                let mut value = String::new();
                loop {
                    match chars.next() {
                        None => return Err("unterminated label value".into()),
                        Some((_, '"')) => break,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            other => return Err(format!("bad escape {other:?}")),
                        },
                        Some((_, c)) => value.push(c),
                    }
                }
                if labels.insert(key.to_string(), value).is_some() {
                    return Err(format!("label {key} repeated"));
                }
                if chars.peek().is_some_and(|(_, c)| *c == ',') {
                    chars.next();
                }
            }
        }
        let mut parts = rest.split_whitespace();
        let value = parts.next().ok_or("no value")?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|e| format!("value {v:?}: {e}"))?,
        };
        if let Some(ts) = parts.next() {
            ts.parse::<i64>()
                .map_err(|e| format!("timestamp {ts:?}: {e}"))?;
        }
        if parts.next().is_some() {
            return Err("trailing text".into());
        }
        Ok(Sample {
            name: name.to_string(),
            labels,
            value,
        })
    }

    /// The value of the sample `name` with exactly `labels`.
    pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }
}

#[cfg(test)]
mod tests {
    use super::parse::{exposition, value};
    use super::*;

    #[test]
    fn fresh_metrics_render_every_family_with_zeroes() {
        let (samples, types) = exposition(&Metrics::new().render(false)).expect("valid");
        let families: Vec<&str> = types.keys().map(String::as_str).collect();
        assert_eq!(
            families,
            [
                "weft_build_info",
                "weft_drift_repairs_total",
                "weft_etcd_reconnects_total",
                "weft_kernel_write_errors_total",
                "weft_kernel_writes_total",
                "weft_lease_expiry_timestamp_seconds",
                "weft_peers",
                "weft_ready",
                "weft_reconcile_duration_seconds",
                "weft_reconcile_runs_total",
                "weft_watch_events_total",
            ]
        );
        assert_eq!(types["weft_reconcile_duration_seconds"], "histogram");
        assert_eq!(types["weft_peers"], "gauge");
        assert_eq!(types["weft_kernel_writes_total"], "counter");
        assert_eq!(value(&samples, "weft_ready", &[]), Some(0.0));
        assert_eq!(
            value(
                &samples,
                "weft_build_info",
                &[("version", env!("CARGO_PKG_VERSION"))]
            ),
            Some(1.0)
        );
        for b in PEER_BACKENDS {
            assert_eq!(value(&samples, "weft_peers", &[("backend", b)]), Some(0.0));
        }
        assert_eq!(
            value(
                &samples,
                "weft_reconcile_duration_seconds_bucket",
                &[("le", "+Inf")]
            ),
            Some(0.0)
        );
    }

    #[test]
    fn updates_show_in_the_exposition() {
        let m = Metrics::new();
        let clone = m.clone();
        clone.set_peers(["host-gw", "vxlan", "vxlan", "made-up\"type"]);
        m.set_lease_expiry(Some(UNIX_EPOCH + Duration::from_secs(1_900_000_000)));
        m.etcd_reconnected();
        m.watch_event(WatchEventKind::Put);
        m.watch_event(WatchEventKind::Put);
        m.watch_event(WatchEventKind::Malformed);
        m.reconcile_run("initial sync", Duration::from_micros(500), 4, 0);
        m.reconcile_run("drift repair", Duration::from_millis(20), 1, 1);
        m.reconcile_run("drift repair", Duration::from_millis(2), 0, 0);
        m.reconcile_run("something new", Duration::from_secs(9), 0, 0);
        m.kernel_writes(2, 0);
        let (s, _) = exposition(&m.render(true)).expect("valid");
        let v = |name: &str, labels: &[(&str, &str)]| {
            value(&s, name, labels).unwrap_or_else(|| panic!("{name} {labels:?} missing"))
        };
        assert_eq!(v("weft_peers", &[("backend", "host-gw")]), 1.0);
        assert_eq!(v("weft_peers", &[("backend", "vxlan")]), 2.0);
        assert_eq!(v("weft_peers", &[("backend", "ipip")]), 0.0);
        assert_eq!(v("weft_peers", &[("backend", "other")]), 1.0);
        assert_eq!(v("weft_lease_expiry_timestamp_seconds", &[]), 1.9e9);
        assert_eq!(v("weft_etcd_reconnects_total", &[]), 1.0);
        assert_eq!(v("weft_watch_events_total", &[("type", "put")]), 2.0);
        assert_eq!(v("weft_watch_events_total", &[("type", "malformed")]), 1.0);
        assert_eq!(v("weft_watch_events_total", &[("type", "resync")]), 0.0);
        assert_eq!(
            v("weft_reconcile_runs_total", &[("reason", "initial_sync")]),
            1.0
        );
        assert_eq!(
            v("weft_reconcile_runs_total", &[("reason", "drift_repair")]),
            2.0
        );
        assert_eq!(v("weft_reconcile_runs_total", &[("reason", "other")]), 1.0);
        assert_eq!(v("weft_kernel_writes_total", &[]), 7.0);
        assert_eq!(v("weft_kernel_write_errors_total", &[]), 1.0);
        assert_eq!(v("weft_drift_repairs_total", &[]), 1.0);
        assert_eq!(v("weft_ready", &[]), 1.0);
        // Cumulative buckets: 0.5 ms ≤ 0.001; 2 ms ≤ 0.005; 20 ms ≤ 0.05; 9 s only in +Inf.
        let bucket = |le: &str| v("weft_reconcile_duration_seconds_bucket", &[("le", le)]);
        assert_eq!(bucket("0.001"), 1.0);
        assert_eq!(bucket("0.005"), 2.0);
        assert_eq!(bucket("0.01"), 2.0);
        assert_eq!(bucket("0.05"), 3.0);
        assert_eq!(bucket("5"), 3.0);
        assert_eq!(bucket("+Inf"), 4.0);
        assert_eq!(v("weft_reconcile_duration_seconds_count", &[]), 4.0);
        let sum = v("weft_reconcile_duration_seconds_sum", &[]);
        assert!((sum - 9.0225).abs() < 1e-9, "{sum}");
        // Peers are a gauge: setting again replaces.
        m.set_peers([]);
        m.set_lease_expiry(None);
        let (s, _) = exposition(&m.render(true)).expect("valid");
        assert_eq!(value(&s, "weft_peers", &[("backend", "vxlan")]), Some(0.0));
        assert_eq!(
            value(&s, "weft_lease_expiry_timestamp_seconds", &[]),
            Some(0.0)
        );
    }

    #[test]
    fn reason_labels() {
        assert_eq!(reason_label("initial sync"), "initial_sync");
        assert_eq!(reason_label("lease change"), "lease_change");
        assert_eq!(reason_label("Drift Repair"), "drift_repair");
        assert_eq!(reason_label("audit"), "audit");
        assert_eq!(reason_label("audit (SIGHUP)"), "audit");
        assert_eq!(reason_label("audit after subscribing"), "audit");
        assert_eq!(reason_label("re-acquired"), "reacquire");
        assert_eq!(reason_label("retry"), "retry");
        assert_eq!(reason_label("config change"), "config_change");
        assert_eq!(reason_label("whatever"), "other");
        // Every label has its counter.
        let m = Metrics::new();
        for r in RECONCILE_REASONS {
            m.reconcile_run(r, Duration::ZERO, 0, 0);
        }
        let (s, _) = parse::exposition(&m.render(false)).expect("valid");
        for r in RECONCILE_REASONS {
            assert_eq!(
                parse::value(&s, "weft_reconcile_runs_total", &[("reason", r)]),
                Some(1.0),
                "{r}"
            );
        }
    }

    #[test]
    fn parser_rejects_broken_expositions() {
        let bad = [
            "weft_x 1\n",                                           // no TYPE
            "# TYPE weft_x gauge\nweft_x{a=\"1} 1\n",               // unterminated
            "# TYPE weft_x gauge\nweft_x{a=1} 1\n",                 // unquoted
            "# TYPE weft_x gauge\nweft_x one\n",                    // bad value
            "# TYPE weft_x counter\nweft_x 1\n",                    // counter without _total
            "# TYPE weft_x gauge\nweft_x 1\nweft_x 2\n",            // repeated
            "# TYPE weft_x gauge\n# TYPE weft_y gauge\nweft_x 1\n", // not contiguous
            "# TYPE weft_x gauge\nweft_x{a=\"\\q\"} 1\n",           // bad escape
            "# TYPE 1x gauge\n",                                    // bad name
        ];
        for text in bad {
            assert!(exposition(text).is_err(), "accepted {text:?}");
        }
        let (s, _) = exposition(
            "# HELP weft_x x\n# TYPE weft_x gauge\nweft_x{a=\"q\\\"\\\\\\n\",b=\"\"} 1.5 123\n",
        )
        .expect("valid");
        assert_eq!(s[0].labels["a"], "q\"\\\n");
        assert_eq!(s[0].value, 1.5);
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        sample(&mut out, "weft_x", &[("a", "q\"\\\n")], 1);
        assert_eq!(out, "weft_x{a=\"q\\\"\\\\\\n\"} 1\n");
    }
}
