//! Whether this node reaches the other data nodes on their data addresses.
//!
//! A node cut off from its clients (and so from its peers) still reaches
//! the control plane: its heartbeats keep coming and its lease keeps being
//! renewed, so nothing in the heartbeats alone tells the control plane to
//! replace it. Every node therefore probes the peers the control plane
//! names ([`HeartbeatReply::peers`]) with a small request under a deadline
//! and reports the ones that did not answer on its next heartbeat; the
//! control plane takes a node out of its chains once enough of the others
//! report it (`cpfs_controlplane::reachability`).
//!
//! [`HeartbeatReply::peers`]: cpfs_proto::heartbeat::HeartbeatReply::peers

use std::time::Duration;

use cpfs_proto::chains::NodeAddr;
use cpfs_proto::node::NodeRequest;

use crate::state::NodeState;

/// How long a peer has to answer a probe: far above the round trip of a
/// data network and a node's time to answer `Stats`, far under the
/// failure timeout (3 s by default) the probes should beat.
pub const PROBE_DEADLINE: Duration = Duration::from_millis(1500);

/// Pause between two rounds of probes.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(crate) struct PeerWatch {
    peers: std::sync::Mutex<Vec<NodeAddr>>,
    unreachable: std::sync::Mutex<Vec<String>>,
}

impl PeerWatch {
    /// The peers to probe from now on (this node's own entry is skipped).
    pub(crate) fn set_peers(&self, peers: Vec<NodeAddr>) {
        *self.peers.lock().unwrap_or_else(|p| p.into_inner()) = peers;
    }

    /// Ids of the peers that missed the last probe.
    pub(crate) fn unreachable(&self) -> Vec<String> {
        self.unreachable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Probes every peer at once; true when the set of unreachable ones
    /// changed (the heartbeat should then not wait for its interval).
    pub(crate) async fn probe(&self, state: &NodeState) -> bool {
        let peers: Vec<NodeAddr> = self
            .peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|p| p.id != state.id)
            .cloned()
            .collect();
        let mut set = tokio::task::JoinSet::new();
        for p in peers {
            let client = state.peers.get(&p.address);
            // Any answer, a refusal included, proves the path works.
            let req = NodeRequest::Stats {
                auth: state.node_auth(),
            };
            set.spawn(async move {
                let answered = tokio::time::timeout(PROBE_DEADLINE, client.call(req)).await;
                (p, matches!(answered, Ok(Ok(_))))
            });
        }
        let mut missing = Vec::new();
        while let Some(done) = set.join_next().await {
            if let Ok((p, false)) = done {
                missing.push(p);
            }
        }
        missing.sort_by(|a, b| a.id.cmp(&b.id));
        let ids: Vec<String> = missing.iter().map(|p| p.id.clone()).collect();
        let mut last = self.unreachable.lock().unwrap_or_else(|p| p.into_inner());
        if *last == ids {
            return false;
        }
        for p in missing.iter().filter(|p| !last.contains(&p.id)) {
            tracing::warn!(peer = %p.id, address = %p.address, "peer unreachable");
        }
        for id in last.iter().filter(|id| !ids.contains(id)) {
            tracing::info!(peer = %id, "peer reachable again");
        }
        *last = ids;
        true
    }
}
