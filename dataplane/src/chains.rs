//! The chain table: every chain is an ordered list of R nodes (the first is
//! the head, which orders writes and forwards them to the others). The
//! table is versioned; every data request names the version it was routed
//! with, and a node holding a newer table refuses an older one so that the
//! client refreshes and retries (how failover reaches clients).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    pub id: String,
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    pub id: u32,
    /// Head first.
    pub members: Vec<NodeAddr>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainTable {
    pub version: u64,
    pub chains: Vec<Chain>,
}

impl ChainTable {
    pub fn chain(&self, id: u32) -> Option<&Chain> {
        self.chains.iter().find(|c| c.id == id)
    }

    /// Chains for `nodes` (sorted by id) with `replicas` members each: chain
    /// i starts at node i and takes the next R-1 nodes round the ring, so
    /// every node heads one chain and holds R of them (load spreads evenly).
    pub fn build(version: u64, nodes: &[NodeAddr], replicas: usize) -> ChainTable {
        let n = nodes.len();
        if n == 0 {
            return ChainTable {
                version,
                chains: vec![],
            };
        }
        let r = replicas.min(n).max(1);
        let chains = (0..n)
            .map(|i| Chain {
                id: i as u32,
                members: (0..r).map(|k| nodes[(i + k) % n].clone()).collect(),
            })
            .collect();
        ChainTable { version, chains }
    }

    /// Same chains, ignoring the version.
    pub fn same_layout(&self, other: &ChainTable) -> bool {
        self.chains == other.chains
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<NodeAddr> {
        (0..n)
            .map(|i| NodeAddr {
                id: format!("n{i}"),
                address: format!("a{i}"),
            })
            .collect()
    }

    #[test]
    fn every_node_heads_one_chain_and_holds_r() {
        let t = ChainTable::build(1, &nodes(3), 2);
        assert_eq!(t.chains.len(), 3);
        for node in nodes(3) {
            let held = t
                .chains
                .iter()
                .filter(|c| c.members.contains(&node))
                .count();
            assert_eq!(held, 2);
            assert_eq!(t.chains.iter().filter(|c| c.members[0] == node).count(), 1);
        }
        assert_eq!(t.chains[2].members[1].id, "n0");
        // Fewer nodes than replicas: chains as wide as the nodes allow.
        assert_eq!(
            ChainTable::build(1, &nodes(1), 2).chains[0].members.len(),
            1
        );
    }
}
