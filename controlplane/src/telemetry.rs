//! The latest counters services sent with their heartbeats, kept in memory
//! for `/metrics` (they are cumulative since each service started, so
//! only the newest report of each matters and a restart of this process
//! loses nothing a scrape needs).

use std::collections::BTreeMap;
use std::sync::Mutex;

use cpfs_proto::telemetry::{MetaTelemetry, OpStats};

/// Every service's newest report.
#[derive(Debug, Clone, Default)]
pub struct Reports {
    /// Data node id → what it reported.
    pub nodes: BTreeMap<String, NodeTelemetry>,
    /// Metadata server id → its report.
    pub meta: BTreeMap<String, MetaTelemetry>,
}

/// A data node's report.
#[derive(Debug, Clone, Default)]
pub struct NodeTelemetry {
    /// Its requests by kind.
    pub ops: Vec<OpStats>,
    /// The chain table version it routes with (behind the control plane's
    /// while a change is on its way to it).
    pub chain_version: u64,
}

/// Only authenticated heartbeats reach these (the cluster token), one
/// entry per registered service, so the maps are as bounded as the
/// cluster.
#[derive(Debug, Default)]
pub struct Telemetry {
    reports: Mutex<Reports>,
}

impl Telemetry {
    pub fn node(&self, id: &str, stats: &cpfs_proto::node::NodeStats) {
        let mut r = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        r.nodes.insert(
            id.to_string(),
            NodeTelemetry {
                ops: stats.ops.clone(),
                chain_version: stats.chain_version,
            },
        );
    }

    pub fn meta(&self, id: &str, report: &MetaTelemetry) {
        let mut r = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        r.meta.insert(id.to_string(), report.clone());
    }

    pub fn snapshot(&self) -> Reports {
        self.reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
