//! The chain table: every chain is an ordered list of R nodes (the first is
//! the head, which orders writes and forwards them to the others). The
//! table is versioned; every data request names the version it was routed
//! with, and a node holding another version refuses it so that the client
//! refreshes and retries (how failover reaches clients).
//!
//! Membership changes are planned here, as a pure function of the current
//! table and what the control plane knows of the nodes ([`ChainTable::next`]):
//! dead nodes leave their chains at once, chains short of R members get a
//! *syncing* member (it receives every new write and a copy of the chain's
//! old chunks from the head, but serves no reads until the head reports the
//! copy complete), draining nodes are replaced, and chains move from the
//! most to the least loaded nodes (scale-out) through the same syncing path.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Chains made per node when the first table is built. More chains than
/// nodes make rebalancing fine-grained: moving one chain moves 1/(4N) of
/// the data, so per-node usage can come within a few percent of even.
pub const CHAINS_PER_NODE: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    pub id: String,
    pub address: String,
}

/// A member being filled: it takes writes but serves no reads until the
/// head has copied the chain's chunks to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Syncing {
    pub node: NodeAddr,
    /// The table version that added it: names one copy session, so a
    /// report from an older, abandoned session never promotes it.
    pub since: u64,
    /// The member it takes the place of once filled (rebalance, drain).
    #[serde(default)]
    pub replaces: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    pub id: u32,
    /// Serving members, head first.
    pub members: Vec<NodeAddr>,
    #[serde(default)]
    pub syncing: Vec<Syncing>,
}

impl Chain {
    pub fn holds(&self, node_id: &str) -> bool {
        self.members.iter().any(|m| m.id == node_id)
            || self.syncing.iter().any(|s| s.node.id == node_id)
    }

    pub fn head(&self) -> Option<&NodeAddr> {
        self.members.first()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainTable {
    pub version: u64,
    pub chains: Vec<Chain>,
    /// Copies each chain should have (R), as the planner was configured.
    #[serde(default)]
    pub replicas: usize,
}

/// The format of chain tables as stored in the database. A stored table
/// names its format; one without a name is format 1 (written before the
/// name existed).
pub const STORED_FORMAT: u64 = 1;

/// A stored document that cannot be read: never taken as empty, since an
/// empty chain table would look like a cluster without nodes.
#[derive(Debug, thiserror::Error)]
pub enum StoredError {
    #[error("stored {what} is format {found}; this build reads format {STORED_FORMAT} (written by a newer version?)")]
    Format { what: &'static str, found: u64 },
    #[error("stored {what} is not readable: {reason}")]
    Corrupt { what: &'static str, reason: String },
}

impl ChainTable {
    /// The table as stored in the database (JSON with a format marker).
    pub fn to_stored(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("format".into(), STORED_FORMAT.into());
        }
        v.to_string()
    }

    /// Reads a stored table, refusing other formats and damage loudly.
    pub fn from_stored(body: &str) -> Result<ChainTable, StoredError> {
        const WHAT: &str = "chain table";
        let corrupt = |e: serde_json::Error| StoredError::Corrupt {
            what: WHAT,
            reason: e.to_string(),
        };
        let v: serde_json::Value = serde_json::from_str(body).map_err(corrupt)?;
        let found = v.get("format").and_then(|f| f.as_u64()).unwrap_or(1);
        if found != STORED_FORMAT {
            return Err(StoredError::Format { what: WHAT, found });
        }
        serde_json::from_value(v).map_err(corrupt)
    }
}

/// What the planner knows of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub id: String,
    pub address: String,
    /// Heartbeating within the failure timeout.
    pub live: bool,
    /// Being emptied (`cpfs node drain`): gets no new chains.
    pub draining: bool,
}

/// A head's report that a syncing member now has every chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncFinished {
    pub chain: u32,
    pub node: String,
    pub since: u64,
}

/// Inputs of one planning step besides the current table.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub nodes: Vec<NodeView>,
    pub finished: Vec<SyncFinished>,
    /// Bytes each chain holds (as its head reports them).
    pub chain_bytes: HashMap<u32, u64>,
    pub replicas: usize,
    /// Nodes to wait for before the first table is built.
    pub expected_nodes: usize,
}

impl ChainTable {
    /// The reports heads send when every syncing member of this table is
    /// filled: what a test or tool playing the heads feeds the planner.
    pub fn syncing_as_finished(&self) -> Vec<SyncFinished> {
        self.chains
            .iter()
            .flat_map(|c| {
                c.syncing.iter().map(|s| SyncFinished {
                    chain: c.id,
                    node: s.node.id.clone(),
                    since: s.since,
                })
            })
            .collect()
    }

    pub fn chain(&self, id: u32) -> Option<&Chain> {
        self.chains.iter().find(|c| c.id == id)
    }

    /// `CHAINS_PER_NODE` chains per node with `replicas` members each:
    /// chain i starts at node i mod N and takes the next R-1 nodes round
    /// the ring, so every node heads as many chains as it holds copies of.
    pub fn build(version: u64, nodes: &[NodeAddr], replicas: usize) -> ChainTable {
        let n = nodes.len();
        if n == 0 {
            return ChainTable {
                version,
                chains: vec![],
                replicas,
            };
        }
        let r = replicas.min(n).max(1);
        let chains = (0..n * CHAINS_PER_NODE)
            .map(|i| Chain {
                id: i as u32,
                members: (0..r).map(|k| nodes[(i + k) % n].clone()).collect(),
                syncing: vec![],
            })
            .collect();
        ChainTable {
            version,
            chains,
            replicas,
        }
    }

    /// Same chains, ignoring the version.
    pub fn same_layout(&self, other: &ChainTable) -> bool {
        self.chains == other.chains
    }

    /// Every node named in the table.
    pub fn node_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .chains
            .iter()
            .flat_map(|c| {
                c.members
                    .iter()
                    .map(|m| m.id.clone())
                    .chain(c.syncing.iter().map(|s| s.node.id.clone()))
            })
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// True when every chain has `replicas` serving members and nothing
    /// is being copied.
    pub fn settled(&self, replicas: usize) -> bool {
        self.chains
            .iter()
            .all(|c| c.syncing.is_empty() && c.members.len() >= replicas)
    }

    /// The next table: one planning step (see the module comment). The
    /// version goes up by one when anything changed.
    pub fn next(&self, view: &ClusterView) -> ChainTable {
        let live: Vec<&NodeView> = view.nodes.iter().filter(|n| n.live).collect();
        let next_version = self.version + 1;
        if self.chains.is_empty() {
            let need = view.replicas.max(view.expected_nodes).max(1);
            if live.len() < need {
                return self.clone();
            }
            let addrs: Vec<NodeAddr> = live
                .iter()
                .map(|n| NodeAddr {
                    id: n.id.clone(),
                    address: n.address.clone(),
                })
                .collect();
            return ChainTable::build(next_version, &addrs, view.replicas);
        }
        let is_live = |id: &str| live.iter().any(|n| n.id == id);
        let mut t = self.clone();

        // Follow address changes (a restarted node binds a new port).
        for c in &mut t.chains {
            let addrs = c
                .members
                .iter_mut()
                .chain(c.syncing.iter_mut().map(|s| &mut s.node));
            for m in addrs {
                if let Some(n) = view.nodes.iter().find(|n| n.id == m.id) {
                    m.address.clone_from(&n.address);
                }
            }
        }

        // Failures: a dead node leaves every chain at once. The last member
        // of a chain stays (its data has nowhere else to be read from).
        for c in &mut t.chains {
            c.syncing.retain(|s| is_live(&s.node.id));
            if c.members.iter().any(|m| is_live(&m.id)) {
                c.members.retain(|m| is_live(&m.id));
            }
        }

        // Promotions: a filled member starts serving; the one it replaces
        // leaves.
        for done in &view.finished {
            let Some(c) = t.chains.iter_mut().find(|c| c.id == done.chain) else {
                continue;
            };
            let Some(pos) = c
                .syncing
                .iter()
                .position(|s| s.node.id == done.node && s.since == done.since)
            else {
                continue;
            };
            let s = c.syncing.remove(pos);
            if !c.members.iter().any(|m| m.id == s.node.id) {
                c.members.push(s.node.clone());
            }
            if let Some(old) = &s.replaces {
                if c.members.len() > 1 {
                    c.members.retain(|m| &m.id != old);
                }
            }
        }

        // Candidates for new copies: live, not draining.
        let eligible: Vec<&NodeView> = live.iter().copied().filter(|n| !n.draining).collect();
        let mut load = node_loads(&t, &view.chain_bytes);
        let add = |t: &mut ChainTable,
                   load: &mut HashMap<String, (u64, usize)>,
                   chain: usize,
                   node: &NodeView,
                   replaces: Option<String>| {
            let w = view
                .chain_bytes
                .get(&t.chains[chain].id)
                .copied()
                .unwrap_or(0);
            let e = load.entry(node.id.clone()).or_default();
            e.0 += w;
            e.1 += 1;
            t.chains[chain].syncing.push(Syncing {
                node: NodeAddr {
                    id: node.id.clone(),
                    address: node.address.clone(),
                },
                since: next_version,
                replaces,
            });
        };
        let least_loaded = |t: &ChainTable,
                            load: &HashMap<String, (u64, usize)>,
                            chain: usize|
         -> Option<&NodeView> {
            eligible
                .iter()
                .copied()
                .filter(|n| !t.chains[chain].holds(&n.id))
                .min_by_key(|n| {
                    let l = load.get(&n.id).copied().unwrap_or_default();
                    (l.0, l.1, n.id.clone())
                })
        };

        // Repair: chains short of R get syncing members.
        for i in 0..t.chains.len() {
            while t.chains[i].members.len() + t.chains[i].syncing.len() < view.replicas {
                let Some(n) = least_loaded(&t, &load, i) else {
                    break;
                };
                add(&mut t, &mut load, i, n, None);
            }
        }

        // Drain: a draining member is replaced, one copy per chain at a time.
        for i in 0..t.chains.len() {
            if !t.chains[i].syncing.is_empty() {
                continue;
            }
            let Some(drainer) = t.chains[i]
                .members
                .iter()
                .find(|m| view.nodes.iter().any(|n| n.id == m.id && n.draining))
                .map(|m| m.id.clone())
            else {
                continue;
            };
            if let Some(n) = least_loaded(&t, &load, i) {
                add(&mut t, &mut load, i, n, Some(drainer));
            }
        }

        // Rebalance: move one chain from the most to the least loaded node,
        // with at most one move per node in flight so copies stay within
        // the repair bandwidth of each node.
        let mut busy: Vec<String> = t
            .chains
            .iter()
            .flat_map(|c| {
                c.syncing
                    .iter()
                    .flat_map(|s| std::iter::once(s.node.id.clone()).chain(s.replaces.clone()))
            })
            .collect();
        loop {
            let free: Vec<&NodeView> = eligible
                .iter()
                .copied()
                .filter(|n| !busy.contains(&n.id))
                .collect();
            let Some(mv) = pick_move(&t, &free, &load, &view.chain_bytes) else {
                break;
            };
            let (chain, from, to) = mv;
            busy.push(from.clone());
            busy.push(to.id.clone());
            if let Some(l) = load.get_mut(&from) {
                let w = view
                    .chain_bytes
                    .get(&t.chains[chain].id)
                    .copied()
                    .unwrap_or(0);
                l.0 = l.0.saturating_sub(w);
                l.1 = l.1.saturating_sub(1);
            }
            add(&mut t, &mut load, chain, to, Some(from));
        }

        if t.chains != self.chains || t.replicas != view.replicas {
            t.version = next_version;
            t.replicas = view.replicas;
            t
        } else {
            self.clone()
        }
    }
}

/// Bytes and chain count per node (serving and syncing memberships, minus
/// the chains a syncing member will take from it).
fn node_loads(t: &ChainTable, chain_bytes: &HashMap<u32, u64>) -> HashMap<String, (u64, usize)> {
    let mut load: HashMap<String, (u64, usize)> = HashMap::new();
    for c in &t.chains {
        let w = chain_bytes.get(&c.id).copied().unwrap_or(0);
        let leaving: Vec<&String> = c
            .syncing
            .iter()
            .filter_map(|s| s.replaces.as_ref())
            .collect();
        let ids = c
            .members
            .iter()
            .map(|m| &m.id)
            .filter(|id| !leaving.contains(id))
            .chain(c.syncing.iter().map(|s| &s.node.id));
        for id in ids {
            let e = load.entry(id.clone()).or_default();
            e.0 += w;
            e.1 += 1;
        }
    }
    load
}

/// The chain to move next: from the node with the most bytes to the one
/// with the fewest when that narrows the gap by a worthwhile amount;
/// otherwise, when bytes are even, from the node with the most chains to
/// the one with the fewest (so new data spreads onto new nodes too).
fn pick_move<'a>(
    t: &ChainTable,
    free: &[&'a NodeView],
    load: &HashMap<String, (u64, usize)>,
    chain_bytes: &HashMap<u32, u64>,
) -> Option<(usize, String, &'a NodeView)> {
    if free.len() < 2 {
        return None;
    }
    let l = |id: &str| load.get(id).copied().unwrap_or_default();
    let total: u64 = free.iter().map(|n| l(&n.id).0).sum();
    let mean = total / free.len() as u64;
    // Gaps below 5 % of the mean (or 1 MiB) are not worth a copy.
    let threshold = (mean / 20).max(1 << 20);
    let src = free.iter().max_by_key(|n| (l(&n.id).0, n.id.clone()))?;
    let dst = free.iter().min_by_key(|n| (l(&n.id).0, n.id.clone()))?;
    let gap = l(&src.id).0.saturating_sub(l(&dst.id).0);
    let movable = |i: usize| {
        let c = &t.chains[i];
        c.syncing.is_empty() && c.members.iter().any(|m| m.id == src.id) && !c.holds(&dst.id)
    };
    if gap > threshold {
        // The chain whose weight is closest to half the gap, if moving it
        // leaves a smaller gap than now.
        let best = (0..t.chains.len())
            .filter(|&i| movable(i))
            .map(|i| (i, chain_bytes.get(&t.chains[i].id).copied().unwrap_or(0)))
            .filter(|&(_, w)| w > 0 && w < gap)
            .min_by_key(|&(_, w)| (gap / 2).abs_diff(w));
        if let Some((i, _)) = best {
            return Some((i, src.id.clone(), dst));
        }
    }
    // Chain counts: only when moving the emptiest chain keeps bytes within
    // the threshold.
    let src = free.iter().max_by_key(|n| (l(&n.id).1, n.id.clone()))?;
    let dst = free.iter().min_by_key(|n| (l(&n.id).1, n.id.clone()))?;
    if l(&src.id).1 <= l(&dst.id).1 + 1 {
        return None;
    }
    let movable = |i: usize| {
        let c = &t.chains[i];
        c.syncing.is_empty() && c.members.iter().any(|m| m.id == src.id) && !c.holds(&dst.id)
    };
    let (i, w) = (0..t.chains.len())
        .filter(|&i| movable(i))
        .map(|i| (i, chain_bytes.get(&t.chains[i].id).copied().unwrap_or(0)))
        .min_by_key(|&(_, w)| w)?;
    if l(&dst.id).0 + w > l(&src.id).0.saturating_sub(w) + threshold {
        return None;
    }
    Some((i, src.id.clone(), dst))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_tables_name_their_format_and_refuse_others_loudly() {
        let t = ChainTable {
            version: 7,
            chains: vec![Chain {
                id: 3,
                members: vec![NodeAddr {
                    id: "n1".into(),
                    address: "127.0.0.1:1".into(),
                }],
                syncing: vec![],
            }],
            replicas: 1,
        };
        let stored = t.to_stored();
        assert!(stored.contains("\"format\":1"), "{stored}");
        assert_eq!(ChainTable::from_stored(&stored).unwrap(), t);
        // Written before the marker existed: format 1.
        let old = serde_json::to_string(&t).unwrap();
        assert_eq!(ChainTable::from_stored(&old).unwrap(), t);
        let newer = stored.replace("\"format\":1", "\"format\":2");
        assert!(matches!(
            ChainTable::from_stored(&newer),
            Err(StoredError::Format { found: 2, .. })
        ));
        assert!(matches!(
            ChainTable::from_stored("{not json"),
            Err(StoredError::Corrupt { .. })
        ));
        assert!(matches!(
            ChainTable::from_stored("{\"version\":\"x\"}"),
            Err(StoredError::Corrupt { .. })
        ));
    }

    fn nodes(n: usize) -> Vec<NodeAddr> {
        (0..n)
            .map(|i| NodeAddr {
                id: format!("n{i}"),
                address: format!("a{i}"),
            })
            .collect()
    }

    fn view(n: usize, dead: &[usize]) -> ClusterView {
        ClusterView {
            nodes: (0..n)
                .map(|i| NodeView {
                    id: format!("n{i}"),
                    address: format!("a{i}"),
                    live: !dead.contains(&i),
                    draining: false,
                })
                .collect(),
            replicas: 2,
            ..Default::default()
        }
    }

    /// Runs the planner, finishing every copy at once, until it rests.
    fn run_to_rest(mut t: ChainTable, v: &mut ClusterView) -> ChainTable {
        for _ in 0..50 {
            let next = t.next(v);
            if next == t {
                break;
            }
            v.finished = next.syncing_as_finished();
            t = next;
        }
        t
    }

    #[test]
    fn every_node_heads_its_share_and_holds_r_times_as_many() {
        let t = ChainTable::build(1, &nodes(3), 2);
        assert_eq!(t.chains.len(), 3 * CHAINS_PER_NODE);
        for node in nodes(3) {
            let held = t
                .chains
                .iter()
                .filter(|c| c.members.contains(&node))
                .count();
            assert_eq!(held, 2 * CHAINS_PER_NODE);
            let heads = t.chains.iter().filter(|c| c.members[0] == node).count();
            assert_eq!(heads, CHAINS_PER_NODE);
        }
        assert_eq!(t.chains[2].members[1].id, "n0");
        // Fewer nodes than replicas: chains as wide as the nodes allow.
        assert_eq!(
            ChainTable::build(1, &nodes(1), 2).chains[0].members.len(),
            1
        );
    }

    #[test]
    fn first_table_waits_for_the_expected_nodes() {
        let mut v = view(2, &[]);
        v.expected_nodes = 3;
        assert!(ChainTable::default().next(&v).chains.is_empty());
        let v = view(3, &[]);
        let t = ChainTable::default().next(&v);
        assert_eq!((t.version, t.chains.len()), (1, 12));
        // Nothing to do: same table, same version.
        assert_eq!(t.next(&v), t);
    }

    #[test]
    fn a_dead_node_is_replaced_by_a_syncing_member_then_promoted() {
        let t = ChainTable::build(1, &nodes(3), 2);
        let t2 = t.next(&view(3, &[1]));
        assert_eq!(t2.version, 2);
        for c in &t2.chains {
            assert!(!c.holds("n1"), "dead node left chain {}", c.id);
            // Every chain still has R copies planned: serving + syncing.
            assert_eq!(c.members.len() + c.syncing.len(), 2);
            if let Some(s) = c.syncing.first() {
                assert_eq!(s.since, 2);
                assert_eq!(s.replaces, None);
            }
        }
        // A chain headed by n1 now has the former second member as head.
        let c1 = t2.chain(1).unwrap();
        assert_eq!(c1.members[0].id, "n2");
        assert!(!t2.settled(2));
        // The heads report the copies finished: syncing members serve.
        let mut v = view(3, &[1]);
        v.finished = t2.syncing_as_finished();
        let t3 = t2.next(&v);
        assert!(t3.settled(2), "{t3:?}");
        // A report from an older session promotes nothing.
        let mut stale = view(3, &[1]);
        stale.finished = vec![SyncFinished {
            chain: 1,
            node: "n0".into(),
            since: 1,
        }];
        assert_eq!(t2.next(&stale).chain(1), t2.chain(1));
    }

    #[test]
    fn the_last_member_of_a_chain_stays() {
        let t = ChainTable::build(1, &nodes(2), 2);
        let t2 = t.next(&view(2, &[0, 1]));
        assert_eq!(t2, t, "with every node dead nothing can change");
        let t3 = t.next(&view(2, &[1]));
        assert!(t3
            .chains
            .iter()
            .all(|c| c.members.len() == 1 && c.members[0].id == "n0" && c.syncing.is_empty()));
        // n1 returns: it resyncs every chain as a syncing member.
        let t4 = t3.next(&view(2, &[]));
        assert!(t4
            .chains
            .iter()
            .all(|c| c.syncing.len() == 1 && c.syncing[0].node.id == "n1"));
    }

    #[test]
    fn a_new_node_takes_chains_until_bytes_are_even() {
        let t = ChainTable::build(1, &nodes(3), 2);
        let mut v = view(4, &[]);
        v.chain_bytes = t.chains.iter().map(|c| (c.id, 100 << 20)).collect();
        let t = run_to_rest(t, &mut v);
        assert!(t.settled(2));
        let loads = node_loads(&t, &v.chain_bytes);
        let bytes: Vec<u64> = (0..4).map(|i| loads[&format!("n{i}")].0).collect();
        let mean = bytes.iter().sum::<u64>() / 4;
        for b in &bytes {
            assert!(b.abs_diff(mean) * 10 <= mean, "uneven: {bytes:?}");
        }
    }

    #[test]
    fn an_empty_cluster_spreads_chains_by_count() {
        let t = ChainTable::build(1, &nodes(3), 2);
        let mut v = view(4, &[]);
        let t = run_to_rest(t, &mut v);
        let loads = node_loads(&t, &HashMap::new());
        let counts: Vec<usize> = (0..4).map(|i| loads[&format!("n{i}")].1).collect();
        assert!(counts.iter().all(|c| *c == 6), "{counts:?}");
    }

    #[test]
    fn a_draining_node_is_emptied() {
        let t = ChainTable::build(1, &nodes(3), 2);
        let mut v = view(3, &[]);
        v.nodes[2].draining = true;
        let t = run_to_rest(t, &mut v);
        assert!(t.chains.iter().all(|c| !c.holds("n2")));
        assert!(t.settled(2));
    }
}
