//! Prometheus metrics of the agent, served as `GET /metrics` on the health port
//! ([`crate::agent::http::serve`]) in the Prometheus text format, version 0.0.4.
//!
//! The metric types and their text encoding are the Prometheus project's Rust client,
//! `prometheus-client`: a [`Registry`] of counters and gauges (atomics), one histogram and one
//! info metric, encoded with its `prometheus_text` encoder. [`Metrics`] is a cheap handle (an
//! `Arc`) over the registry and over clones of every series: each labelled series is created
//! once, at [`Metrics::new`], and the handle keeps it, so an update from the control loop is one
//! atomic operation (no label-map lookup, no lock). The one exception is the reconcile-duration
//! histogram, which takes the crate's short uncontended mutex once per reconcile pass; the
//! agent's runtime has one thread, so it never waits. Creating every series up front also means
//! a fresh agent exposes every series at 0 rather than omitting it.
//!
//! Labels are enums with fixed values ([`PeerBackend`], [`WatchEventKind`],
//! [`ReconcileReason`]): a label set cannot grow with input. A lease's `BackendType` is free
//! text from etcd, so unknown types count under `backend="other"`.
//!
//! Names: `prometheus-client` adds the `_total` suffix of counters and the `_seconds` unit
//! itself, so counters are registered without `_total` and timings with their unit; the names
//! exposed are exactly the ones in the table.
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `weft_peers{backend}` | gauge | peers in the lease table, by the backend type their lease advertises (`host-gw`, `vxlan`, `ipip`, `other`) |
//! | `weft_lease_expiry_timestamp_seconds` | gauge | Unix time the own etcd lease expires (0 = unknown or a reservation) |
//! | `weft_etcd_reconnects_total` | counter | lease-watch reconnects after etcd was lost |
//! | `weft_watch_events_total{type}` | counter | lease watch events: `put`, `delete`, `malformed`, `resync` |
//! | `weft_reconcile_runs_total{reason}` | counter | reconcile passes by reason (`initial_sync`, `lease_change` (also the pass after the own lease was re-acquired), `drift_repair`, `audit`, `retry`, `config_change`, `legacy_unused`) |
//! | `weft_reconcile_duration_seconds` | histogram | time of one reconcile pass (diff + kernel writes) |
//! | `weft_kernel_writes_total` | counter | successful kernel writes (route/neigh/FDB replace and delete) |
//! | `weft_kernel_write_errors_total` | counter | kernel writes the kernel refused |
//! | `weft_drift_repairs_total` | counter | reconcile passes after an out-of-band change that wrote something |
//! | `weft_ready` | gauge | 1 once `/readyz` answers 200, else 0 |
//! | `weft_build_info{version}` | gauge | always 1; the version of this build |
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

/// The `Content-Type` of [`Metrics::render`]'s output (text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of the `weft_reconcile_duration_seconds` buckets; `+Inf` is implied.
pub const DURATION_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// Implements [`EncodeLabelValue`] with the type's `label()` (the derive would write the
/// variant's Rust name, `HostGw`, where the exposition has `host-gw`).
macro_rules! label_value {
    ($t:ty) => {
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
                fmt::Write::write_str(encoder, self.label())
            }
        }
    };
}

/// The `backend` label of `weft_peers`: the backend type a peer's lease advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerBackend {
    HostGw,
    Vxlan,
    Ipip,
    /// Any other `BackendType` (free text in etcd).
    Other,
}

impl PeerBackend {
    pub const ALL: [PeerBackend; 4] = [
        PeerBackend::HostGw,
        PeerBackend::Vxlan,
        PeerBackend::Ipip,
        PeerBackend::Other,
    ];

    /// The label for a lease's `BackendType`.
    pub fn of(backend_type: &str) -> Self {
        match backend_type {
            "host-gw" => PeerBackend::HostGw,
            "vxlan" => PeerBackend::Vxlan,
            "ipip" => PeerBackend::Ipip,
            _ => PeerBackend::Other,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            PeerBackend::HostGw => "host-gw",
            PeerBackend::Vxlan => "vxlan",
            PeerBackend::Ipip => "ipip",
            PeerBackend::Other => "other",
        }
    }
}
label_value!(PeerBackend);

/// The `type` label of `weft_watch_events_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchEventKind {
    Put,
    Delete,
    Malformed,
    Resync,
}

impl WatchEventKind {
    pub const ALL: [WatchEventKind; 4] = [
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
label_value!(WatchEventKind);

/// Why the control loop ran a reconcile pass: the `reason` label of `weft_reconcile_runs_total`
/// ([`label`](Self::label)); [`as_str`](Self::as_str) is the wording of the log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReconcileReason {
    /// The first pass after the lease is held.
    InitialSync,
    /// Peer leases changed in etcd, or the own lease was re-acquired or moved.
    LeaseChange,
    /// A netlink notification showed an out-of-band change to weft's kernel objects.
    DriftRepair,
    /// The periodic or on-demand (SIGHUP) dump and diff.
    Audit,
    /// Failed writes or skipped peers are tried again.
    Retry,
    /// The network config changed (backend switch).
    ConfigChange,
    /// A backend of an earlier config is no longer used by any peer and is removed.
    LegacyUnused,
}

impl ReconcileReason {
    pub const ALL: [ReconcileReason; 7] = [
        ReconcileReason::InitialSync,
        ReconcileReason::LeaseChange,
        ReconcileReason::DriftRepair,
        ReconcileReason::Audit,
        ReconcileReason::Retry,
        ReconcileReason::ConfigChange,
        ReconcileReason::LegacyUnused,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ReconcileReason::InitialSync => "initial_sync",
            ReconcileReason::LeaseChange => "lease_change",
            ReconcileReason::DriftRepair => "drift_repair",
            ReconcileReason::Audit => "audit",
            ReconcileReason::Retry => "retry",
            ReconcileReason::ConfigChange => "config_change",
            ReconcileReason::LegacyUnused => "legacy_unused",
        }
    }
}
label_value!(ReconcileReason);

impl ReconcileReason {
    /// The wording of the agent's log lines (`reconcile (lease change): …`), which the
    /// benchmark reads.
    pub fn as_str(self) -> &'static str {
        match self {
            ReconcileReason::InitialSync => "initial sync",
            ReconcileReason::LeaseChange => "lease change",
            ReconcileReason::DriftRepair => "drift repair",
            ReconcileReason::Audit => "audit",
            ReconcileReason::Retry => "retry",
            ReconcileReason::ConfigChange => "config change",
            ReconcileReason::LegacyUnused => "legacy backend unused",
        }
    }
}

impl fmt::Display for ReconcileReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PeerLabels {
    backend: PeerBackend,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WatchLabels {
    r#type: WatchEventKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: ReconcileReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// The agent's metrics. Cheap to clone; all clones share the series.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    /// One series per [`PeerBackend::ALL`], in that order.
    peers: [Gauge; 4],
    lease_expiry: Gauge,
    etcd_reconnects: Counter,
    /// One series per [`WatchEventKind::ALL`], in that order.
    watch_events: [Counter; 4],
    /// One series per [`ReconcileReason::ALL`], in that order.
    reconcile_runs: [Counter; 7],
    reconcile_duration: Histogram,
    kernel_writes: Counter,
    kernel_write_errors: Counter,
    drift_repairs: Counter,
    ready: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Registers a labelled family with a series for each label set, returning the series.
fn family<L, M, const N: usize>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    labels: [L; N],
) -> [M; N]
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + fmt::Debug + Send + Sync + 'static,
    M: prometheus_client::metrics::TypedMetric
        + prometheus_client::encoding::EncodeMetric
        + Default
        + Clone
        + fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let family = Family::<L, M>::default();
    let series = labels.map(|l| family.get_or_create_owned(&l));
    registry.register(name, help, family);
    series
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::default();
        let peers = family(
            &mut r,
            "weft_peers",
            "Peers in the lease table, by the backend type their lease advertises",
            PeerBackend::ALL.map(|backend| PeerLabels { backend }),
        );
        let lease_expiry = Gauge::default();
        r.register_with_unit(
            "weft_lease_expiry_timestamp",
            "Unix time the node's etcd lease expires (0 = unknown or a reservation)",
            Unit::Seconds,
            lease_expiry.clone(),
        );
        let etcd_reconnects = Counter::default();
        r.register(
            "weft_etcd_reconnects",
            "Lease watch reconnects after the etcd connection was lost",
            etcd_reconnects.clone(),
        );
        let watch_events = family(
            &mut r,
            "weft_watch_events",
            "Lease watch events by type",
            WatchEventKind::ALL.map(|r#type| WatchLabels { r#type }),
        );
        let reconcile_runs = family(
            &mut r,
            "weft_reconcile_runs",
            "Reconcile passes by reason",
            ReconcileReason::ALL.map(|reason| ReasonLabels { reason }),
        );
        let reconcile_duration = Histogram::new(DURATION_BUCKETS.iter().copied());
        r.register_with_unit(
            "weft_reconcile_duration",
            "Duration of one reconcile pass (diff and kernel writes)",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        let kernel_writes = Counter::default();
        r.register(
            "weft_kernel_writes",
            "Successful kernel writes (routes, neighbours, FDB entries)",
            kernel_writes.clone(),
        );
        let kernel_write_errors = Counter::default();
        r.register(
            "weft_kernel_write_errors",
            "Kernel writes the kernel refused",
            kernel_write_errors.clone(),
        );
        let drift_repairs = Counter::default();
        r.register(
            "weft_drift_repairs",
            "Reconcile passes after an out-of-band kernel change that wrote something",
            drift_repairs.clone(),
        );
        let ready = Gauge::default();
        r.register(
            "weft_ready",
            "1 when the agent is ready (lease held, initial sync done), else 0",
            ready.clone(),
        );
        r.register(
            "weft_build",
            "Always 1; labelled with the version of this build",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry: r,
                peers,
                lease_expiry,
                etcd_reconnects,
                watch_events,
                reconcile_runs,
                reconcile_duration,
                kernel_writes,
                kernel_write_errors,
                drift_repairs,
                ready,
            }),
        }
    }

    /// Sets `weft_peers` from the backend types of the peers' leases (every peer once).
    pub fn set_peers<'a>(&self, backend_types: impl IntoIterator<Item = &'a str>) {
        let mut counts = [0i64; 4];
        for t in backend_types {
            counts[PeerBackend::of(t) as usize] += 1;
        }
        for (gauge, n) in self.inner.peers.iter().zip(counts) {
            gauge.set(n);
        }
    }

    /// Sets `weft_lease_expiry_timestamp_seconds`; `None` = unknown or a reservation (0).
    pub fn set_lease_expiry(&self, at: Option<SystemTime>) {
        let secs = at
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.inner.lease_expiry.set(secs);
    }

    /// Sets the lease expiry to `ttl` from now (the TTL etcd granted or reported).
    pub fn set_lease_expiry_in(&self, ttl: Duration) {
        self.set_lease_expiry(SystemTime::now().checked_add(ttl));
    }

    pub fn etcd_reconnected(&self) {
        self.inner.etcd_reconnects.inc();
    }

    pub fn watch_event(&self, kind: WatchEventKind) {
        self.inner.watch_events[kind as usize].inc();
    }

    /// Records one reconcile pass: why it ran, how long it took, and the kernel writes it made
    /// and had refused. A drift-repair pass that wrote something also counts in
    /// `weft_drift_repairs_total`.
    pub fn reconcile_run(&self, why: ReconcileReason, took: Duration, writes: u64, errors: u64) {
        self.inner.reconcile_runs[why as usize].inc();
        self.inner.reconcile_duration.observe(took.as_secs_f64());
        self.kernel_writes(writes, errors);
        if why == ReconcileReason::DriftRepair && writes > 0 {
            self.inner.drift_repairs.inc();
        }
    }

    /// Counts kernel writes made outside a reconcile pass (none in the agent since devices are
    /// part of the desired state; kept for callers that write on their own).
    pub fn kernel_writes(&self, writes: u64, errors: u64) {
        self.inner.kernel_writes.inc_by(writes);
        self.inner.kernel_write_errors.inc_by(errors);
    }

    /// Sets `weft_ready` (the `/readyz` state).
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.set(i64::from(ready));
    }

    /// The metrics in the Prometheus text format 0.0.4 ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail, and every registered metric encodes.
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.inner.registry)
        {
            tracing::error!("encoding the metrics failed: {e}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_testkit::prom::{exposition, value};

    #[test]
    fn fresh_metrics_render_every_family_with_zeroes() {
        let (samples, types) = exposition(&Metrics::new().render()).expect("valid");
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
        assert_eq!(types["weft_build_info"], "gauge");
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
        for b in PeerBackend::ALL {
            assert_eq!(
                value(&samples, "weft_peers", &[("backend", b.label())]),
                Some(0.0)
            );
        }
        for k in WatchEventKind::ALL {
            assert_eq!(
                value(&samples, "weft_watch_events_total", &[("type", k.label())]),
                Some(0.0)
            );
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
        m.reconcile_run(
            ReconcileReason::InitialSync,
            Duration::from_micros(500),
            4,
            0,
        );
        m.reconcile_run(
            ReconcileReason::DriftRepair,
            Duration::from_millis(20),
            1,
            1,
        );
        m.reconcile_run(ReconcileReason::DriftRepair, Duration::from_millis(2), 0, 0);
        m.reconcile_run(ReconcileReason::LegacyUnused, Duration::from_secs(9), 0, 0);
        m.kernel_writes(2, 0);
        m.set_ready(true);
        let (s, _) = exposition(&m.render()).expect("valid");
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
        assert_eq!(
            v("weft_reconcile_runs_total", &[("reason", "legacy_unused")]),
            1.0
        );
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
        m.set_ready(false);
        let (s, _) = exposition(&m.render()).expect("valid");
        assert_eq!(value(&s, "weft_peers", &[("backend", "vxlan")]), Some(0.0));
        assert_eq!(
            value(&s, "weft_lease_expiry_timestamp_seconds", &[]),
            Some(0.0)
        );
        assert_eq!(value(&s, "weft_ready", &[]), Some(0.0));
    }

    #[test]
    fn reason_labels() {
        let labels: Vec<&str> = ReconcileReason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(
            labels,
            [
                "initial_sync",
                "lease_change",
                "drift_repair",
                "audit",
                "retry",
                "config_change",
                "legacy_unused",
            ]
        );
        // The log wording the control loop used before reasons were an enum.
        assert_eq!(ReconcileReason::InitialSync.to_string(), "initial sync");
        assert_eq!(ReconcileReason::DriftRepair.to_string(), "drift repair");
        // Every reason has its own series, and `ALL` is in discriminant order (the index of
        // each series).
        let m = Metrics::new();
        for (i, r) in ReconcileReason::ALL.into_iter().enumerate() {
            assert_eq!(r as usize, i, "{r:?}");
            m.reconcile_run(r, Duration::ZERO, 0, 0);
        }
        let (s, _) = exposition(&m.render()).expect("valid");
        for r in ReconcileReason::ALL {
            assert_eq!(
                value(&s, "weft_reconcile_runs_total", &[("reason", r.label())]),
                Some(1.0),
                "{r:?}"
            );
        }
        for (i, b) in PeerBackend::ALL.into_iter().enumerate() {
            assert_eq!(b as usize, i, "{b:?}");
            assert_eq!(PeerBackend::of(b.label()), b);
        }
        for (i, k) in WatchEventKind::ALL.into_iter().enumerate() {
            assert_eq!(k as usize, i, "{k:?}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        // Label values here are fixed enums; the escaping is the crate's, checked once with a
        // value that needs it.
        let mut r = Registry::default();
        let f = Family::<BuildLabels, Gauge>::default();
        f.get_or_create(&BuildLabels { version: "q\"\\\n" }).set(1);
        r.register("weft_x", "x", f);
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &r).expect("encode");
        assert!(
            out.contains("weft_x{version=\"q\\\"\\\\\\n\"} 1\n"),
            "{out}"
        );
        let (s, _) = exposition(&out).expect("valid");
        assert_eq!(s[0].labels["version"], "q\"\\\n");
    }
}
