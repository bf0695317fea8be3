//! `/metrics`: the cluster in the Prometheus (OpenMetrics) text format.
//!
//! Two sources. The gateway's own series (calls by action and code, their
//! latency) live in a registry of this process. Everything else is read at
//! scrape time: the data nodes' and metadata servers' counters, which
//! arrive with their heartbeats (`cpfs_controlplane::telemetry`), the
//! nodes' state and usage from the store, and the background loops of
//! this process. So one scrape target covers every service, and a node on
//! another host needs no listener of its own. The route sits behind a
//! token (the admin token, or a metrics-only one): it names every tenant's
//! file systems.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cpfs_controlplane::telemetry::Reports;
use cpfs_proto::node::FsUsage;
use cpfs_proto::telemetry::{Latency, OpStats, LATENCY_BOUNDS_US};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    action: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BOUNDS_US.iter().map(|us| *us as f64 / 1e6))
}

/// The gateway's series.
pub struct GatewayMetrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    latency: Family<ActionLabels, Histogram, fn() -> Histogram>,
}

impl std::fmt::Debug for GatewayMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatewayMetrics")
    }
}

impl GatewayMetrics {
    /// `key_queries` counts the store queries made to look up access keys.
    pub fn new(key_queries: std::sync::Arc<AtomicU64>) -> GatewayMetrics {
        let mut registry = Registry::with_prefix("cpfs_api");
        let calls = Family::<CallLabels, Counter>::default();
        let latency = Family::<ActionLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "requests",
            "API calls answered, by action and reply code",
            calls.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from a call's arrival to its reply, by action",
            latency.clone(),
        );
        registry.register_collector(Box::new(KeyQueries(key_queries)));
        GatewayMetrics {
            registry,
            calls,
            latency,
        }
    }

    /// Counts one answered call. `action` must already be one of the
    /// API's names (or "other"): labels are never the caller's free text.
    pub fn answered(&self, action: &str, code: &str, took: Duration) {
        self.calls
            .get_or_create(&CallLabels {
                action: action.to_string(),
                code: code.to_string(),
            })
            .inc();
        self.latency
            .get_or_create(&ActionLabels {
                action: action.to_string(),
            })
            .observe(took.as_secs_f64());
    }
}

#[derive(Debug)]
struct KeyQueries(std::sync::Arc<AtomicU64>);

impl Collector for KeyQueries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = ConstCounter::new(self.0.load(Ordering::Relaxed));
        let m = encoder.encode_descriptor(
            "access_key_queries",
            "Store queries made to look up access keys (cache misses)",
            None,
            c.metric_type(),
        )?;
        c.encode(m)
    }
}

/// What a scrape reads besides the gateway's registry.
#[derive(Debug, Default)]
pub struct ClusterSnapshot {
    pub nodes: Vec<cpfs_controlplane::nodes::Node>,
    pub usage: Vec<(String, FsUsage)>,
    pub meta_servers: Vec<cpfs_controlplane::meta_servers::MetaServer>,
    pub reports: Reports,
    /// The chain table version the control plane holds.
    pub chain_version: u64,
    pub loops: Vec<cpfs_runtime::liveness::LoopReport>,
}

/// The whole exposition: the gateway's series, then the snapshot's.
pub fn render(gw: &GatewayMetrics, snapshot: ClusterSnapshot) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode_registry(&mut out, &gw.registry)?;
    let mut cluster = Registry::with_prefix("cpfs");
    cluster.register_collector(Box::new(snapshot));
    prometheus_client::encoding::text::encode_registry(&mut out, &cluster)?;
    prometheus_client::encoding::text::encode_eof(&mut out)?;
    Ok(out)
}

/// Writes one family of constant samples.
fn family<M: EncodeMetric, L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (L, M)>,
) -> Result<(), std::fmt::Error> {
    let mut m = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        value.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A histogram received as counts per bucket.
#[derive(Debug)]
struct Received<'a>(&'a Latency);

impl EncodeMetric for Received<'_> {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS_US
            .iter()
            .map(|us| *us as f64 / 1e6)
            .chain(std::iter::once(f64::MAX))
            .zip(self.0.counts.iter().copied().chain(std::iter::repeat(0)))
            .collect();
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.0.sum_us as f64 / 1e6,
            self.0.count,
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn c(v: u64) -> ConstCounter<u64> {
    ConstCounter::new(v)
}

fn g(v: i64) -> ConstGauge<i64> {
    ConstGauge::new(v)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Operation counters and latencies of one kind of service, labelled by
/// the reporting server (`who` names that label).
fn ops(
    encoder: &mut DescriptorEncoder,
    service: &str,
    who: &'static str,
    reports: &[(&String, &Vec<OpStats>)],
) -> Result<(), std::fmt::Error> {
    let all = || {
        reports
            .iter()
            .flat_map(|(id, ops)| ops.iter().map(move |o| (*id, o)))
    };
    family(
        encoder,
        &format!("{service}_operations"),
        "Requests served, by server and kind",
        MetricType::Counter,
        all().map(|(id, o)| {
            (
                [(who, id.as_str()), ("op", o.op.as_str())],
                c(o.latency.count),
            )
        }),
    )?;
    family(
        encoder,
        &format!("{service}_operation_errors"),
        "Requests answered with an error, by server and kind",
        MetricType::Counter,
        all().map(|(id, o)| ([(who, id.as_str()), ("op", o.op.as_str())], c(o.errors))),
    )?;
    family(
        encoder,
        &format!("{service}_operation_duration_seconds"),
        "Time to serve a request, by server and kind",
        MetricType::Histogram,
        all().map(|(id, o)| {
            (
                [(who, id.as_str()), ("op", o.op.as_str())],
                Received(&o.latency),
            )
        }),
    )
}

impl Collector for ClusterSnapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = &mut e;
        // Data nodes: state, capacity and usage from the store.
        family(
            e,
            "node_up",
            "1 while a data node is Up (heartbeats arriving, not drained), 0 otherwise",
            MetricType::Gauge,
            self.nodes.iter().map(|n| {
                (
                    [("node", n.id.as_str()), ("state", n.state.as_str())],
                    g(i64::from(n.state == "Up")),
                )
            }),
        )?;
        family(
            e,
            "node_capacity_bytes",
            "Disk space a data node offers",
            MetricType::Gauge,
            self.nodes
                .iter()
                .map(|n| ([("node", n.id.as_str())], g(n.capacity_bytes))),
        )?;
        family(
            e,
            "node_checksum_errors",
            "Blocks whose checksum failed on read or scrub",
            MetricType::Counter,
            self.nodes.iter().map(|n| {
                (
                    [("node", n.id.as_str())],
                    c(n.checksum_errors.max(0) as u64),
                )
            }),
        )?;
        family(
            e,
            "node_repairs",
            "Blocks repaired from another copy",
            MetricType::Counter,
            self.nodes
                .iter()
                .map(|n| ([("node", n.id.as_str())], c(n.repairs.max(0) as u64))),
        )?;
        family(
            e,
            "node_scrubbed_bytes",
            "Bytes the scrubber has verified",
            MetricType::Counter,
            self.nodes
                .iter()
                .map(|n| ([("node", n.id.as_str())], c(n.report.scrub.scrubbed_bytes))),
        )?;
        family(
            e,
            "node_scrub_passes",
            "Full scrub passes finished",
            MetricType::Counter,
            self.nodes
                .iter()
                .map(|n| ([("node", n.id.as_str())], c(n.report.scrub.passes))),
        )?;
        let syncs = || {
            self.nodes.iter().flat_map(|n| {
                n.report
                    .syncs
                    .iter()
                    .filter(|s| !s.finished)
                    .map(move |s| (n, s))
            })
        };
        family(
            e,
            "node_resync_remaining_bytes",
            "Bytes a running resync still has to go over, by head and member",
            MetricType::Gauge,
            syncs().map(|(n, s)| {
                (
                    [("node", n.id.as_str()), ("target", s.target.as_str())],
                    g(to_i64(s.total_bytes.saturating_sub(s.done_bytes))),
                )
            }),
        )?;
        // Per node and file system, from the nodes' usage rows.
        let usage = |f: fn(&FsUsage) -> u64| {
            self.usage
                .iter()
                .map(move |(node, u)| ([("node", node.as_str()), ("fs", u.fs.as_str())], c(f(u))))
        };
        family(
            e,
            "node_read_bytes",
            "Bytes read from a data node, by file system",
            MetricType::Counter,
            usage(|u| u.bytes_read),
        )?;
        family(
            e,
            "node_written_bytes",
            "Bytes written to a data node (every copy), by file system",
            MetricType::Counter,
            usage(|u| u.bytes_written),
        )?;
        family(
            e,
            "node_reads",
            "Reads served by a data node, by file system",
            MetricType::Counter,
            usage(|u| u.read_ops),
        )?;
        family(
            e,
            "node_writes",
            "Writes applied by a data node (every copy), by file system",
            MetricType::Counter,
            usage(|u| u.write_ops),
        )?;
        // Client requests, counted once (by the node that served them):
        // what a file system's users see, where the above count copies.
        let served = |f: fn(&cpfs_proto::node::ServedIo) -> (u64, u64)| {
            self.usage.iter().flat_map(move |(node, u)| {
                let (read, write) = f(&u.served);
                [("read", read), ("write", write)].map(|(op, v)| {
                    (
                        [("node", node.as_str()), ("fs", u.fs.as_str()), ("op", op)],
                        v,
                    )
                })
            })
        };
        family(
            e,
            "node_served_requests",
            "Client reads and writes a data node served, by file system (a write counted by its head only)",
            MetricType::Counter,
            served(|s| (s.reads, s.writes)).map(|(l, v)| (l, c(v))),
        )?;
        family(
            e,
            "node_served_bytes",
            "Bytes of the client requests a data node served, by file system",
            MetricType::Counter,
            served(|s| (s.read_bytes, s.write_bytes)).map(|(l, v)| (l, c(v))),
        )?;
        family(
            e,
            "node_served_seconds",
            "Time a data node spent serving client requests, by file system (a write's includes its replicas)",
            MetricType::Counter,
            served(|s| (s.read_us, s.write_us))
                .map(|(l, v)| (l, ConstCounter::new(v as f64 / 1e6))),
        )?;
        family(
            e,
            "node_stored_bytes",
            "Chunk data a data node holds, by file system",
            MetricType::Gauge,
            self.usage.iter().map(|(node, u)| {
                (
                    [("node", node.as_str()), ("fs", u.fs.as_str())],
                    g(to_i64(u.bytes_stored)),
                )
            }),
        )?;
        family(
            e,
            "chain_table_version",
            "Version of the chain table the control plane holds",
            MetricType::Gauge,
            [([] as [(&str, &str); 0], g(to_i64(self.chain_version)))],
        )?;
        family(
            e,
            "node_chain_table_version",
            "Version of the chain table a data node routes with (lags the control plane's while a change travels)",
            MetricType::Gauge,
            self.reports
                .nodes
                .iter()
                .map(|(id, t)| ([("node", id.as_str())], g(to_i64(t.chain_version)))),
        )?;
        let node_ops: Vec<_> = self
            .reports
            .nodes
            .iter()
            .map(|(id, t)| (id, &t.ops))
            .collect();
        ops(e, "node", "node", &node_ops)?;

        // Metadata servers: liveness from the store, counters from their
        // heartbeats.
        family(
            e,
            "meta_up",
            "1 while a metadata server's heartbeats arrive in time",
            MetricType::Gauge,
            self.meta_servers
                .iter()
                .map(|m| ([("server", m.id.as_str())], g(i64::from(m.live)))),
        )?;
        family(
            e,
            "meta_file_systems",
            "File systems a metadata server owns",
            MetricType::Gauge,
            self.meta_servers
                .iter()
                .map(|m| ([("server", m.id.as_str())], g(m.file_systems.len() as i64))),
        )?;
        let meta: Vec<_> = self.reports.meta.iter().collect();
        family(
            e,
            "meta_sessions",
            "Mounted sessions a metadata server holds",
            MetricType::Gauge,
            meta.iter()
                .map(|(id, t)| ([("server", id.as_str())], g(to_i64(t.sessions)))),
        )?;
        family(
            e,
            "meta_journal_commits",
            "Journal transactions committed",
            MetricType::Counter,
            meta.iter()
                .map(|(id, t)| ([("server", id.as_str())], c(t.journal_commits))),
        )?;
        family(
            e,
            "meta_journal_entries",
            "Operations made durable by those commits (more than commits: group commit)",
            MetricType::Counter,
            meta.iter()
                .map(|(id, t)| ([("server", id.as_str())], c(t.journal_entries))),
        )?;
        let caches = || {
            meta.iter().flat_map(|(id, t)| {
                t.caches
                    .iter()
                    .map(move |(cache, hits, misses)| (*id, cache.as_str(), *hits, *misses))
            })
        };
        family(
            e,
            "meta_cache_hits",
            "Lookups a metadata server's cache answered (grant: access decisions, identity: LDAP users)",
            MetricType::Counter,
            caches().map(|(id, cache, hits, _)| ([("server", id.as_str()), ("cache", cache)], c(hits))),
        )?;
        family(
            e,
            "meta_cache_misses",
            "Lookups a metadata server's cache could not answer (the store or the directory was asked)",
            MetricType::Counter,
            caches().map(|(id, cache, _, misses)| ([("server", id.as_str()), ("cache", cache)], c(misses))),
        )?;
        let meta_ops: Vec<_> = meta.iter().map(|(id, t)| (*id, &t.ops)).collect();
        ops(e, "meta", "server", &meta_ops)?;

        // The background loops of this process (reconciler, billing, ...).
        family(
            e,
            "loop_passes",
            "Passes a background loop finished",
            MetricType::Counter,
            self.loops.iter().map(|l| ([("loop", l.name)], c(l.passes))),
        )?;
        family(
            e,
            "loop_failures",
            "Passes of a background loop that failed",
            MetricType::Counter,
            self.loops
                .iter()
                .map(|l| ([("loop", l.name)], c(l.failures))),
        )?;
        family(
            e,
            "loop_seconds_since_pass",
            "Seconds since a background loop last finished a pass",
            MetricType::Gauge,
            self.loops
                .iter()
                .map(|l| ([("loop", l.name)], g(to_i64(l.seconds_since_pass)))),
        )?;
        family(
            e,
            "loop_last_pass_duration_seconds",
            "How long a background loop's last pass took (the billing pass, a reconciler pass, ...)",
            MetricType::Gauge,
            self.loops.iter().filter_map(|l| {
                let s = l.last_pass_seconds?;
                Some(([("loop", l.name)], ConstGauge::new(s)))
            }),
        )?;
        family(
            e,
            "loop_queue_depth",
            "Objects waiting for a controller (the reconciler: file systems and mount targets not converged)",
            MetricType::Gauge,
            self.loops.iter().filter_map(|l| {
                let d = l.queue_depth?;
                Some(([("loop", l.name)], g(to_i64(d))))
            }),
        )
    }
}
