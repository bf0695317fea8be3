//! QoS: each file system gets the bandwidth and IOPS of its tier
//! (`tiers::spec_of`: the Bandwidth a customer bought, the table's read
//! and write IOPS), enforced by the data nodes, which serve its clients.
//!
//! A file system's limit is one figure for the whole cluster, but every
//! node paces only its own requests; so the limit is split into per-node
//! shares, recomputed at each node's heartbeat from what the nodes last
//! reported (`FsUsage::served` and `qos_wait_us`): a node whose requests
//! did not wait needs a little more than it used; the nodes whose requests
//! waited share the rest equally (water-filling); what no node needs is
//! spread evenly, so the shares always add up to the limit and a workload
//! that starts on an idle file system starts at the full rate. A node that
//! has not served the file system since it started (a node added after the
//! file system was laid out holds none of its chains) needs only the floor;
//! one reporting it for the first time counts as busy. Shares follow demand within a
//! heartbeat or two; bursts are bounded by the nodes' pacers. While
//! requests wait, a feedback loop scales the shares so that what the file
//! system is served as a whole comes to its limit (see [`Boost`]).
//!
//! The planner lives in the memory of the process that receives the
//! heartbeats; after a restart it starts from equal shares. So every node
//! must heartbeat to the same process (one `cpfs serve`): two planners
//! would each split the whole limit among the nodes they hear.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cpfs_proto::heartbeat::QosShare;
use cpfs_proto::node::{FsUsage, ServedIo};
use sqlx::Row;

use crate::error::Result;
use crate::tiers::{spec_of, StorageType};
use crate::ControlPlane;

/// How often the limits are read again from the file systems' rows (an
/// upgrade reaches the nodes within this plus a heartbeat).
pub const LIMITS_MAX_AGE: Duration = Duration::from_secs(1);
/// A node not heard from for this long no longer takes a share.
pub const NODE_WINDOW: Duration = Duration::from_secs(5);
/// Headroom of a node that did not wait: its share is this much above
/// what it used.
const HEADROOM: f64 = 1.25;

/// A file system's limits per second (0: none).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    pub bytes: f64,
    pub reads: f64,
    pub writes: f64,
}

/// What one node last reported of one file system.
#[derive(Debug, Clone, Copy)]
struct FsSeen {
    served: ServedIo,
    wait_us: u64,
    /// Bytes, reads and writes per second over the last interval; None
    /// after the first report.
    rates: Option<[f64; 3]>,
    waited: bool,
}

struct NodeSeen {
    at: Instant,
    fs: HashMap<String, FsSeen>,
}

#[derive(Default)]
struct State {
    limits: HashMap<String, Limits>,
    limits_read: Option<Instant>,
    nodes: HashMap<String, NodeSeen>,
    /// Per file system and dimension, how far the shares are scaled above
    /// the limit, and when that was last corrected (see [`Boost`]).
    boosts: HashMap<(String, usize), Boost>,
}

/// Busy nodes cannot use every moment of their shares: a node's requests
/// come in bursts (a client's four jobs are on two nodes now, on the third
/// a moment later), and a share unused for longer than the pacer's burst
/// credit is lost. So while requests wait, the shares are scaled by the
/// ratio of the limit to what the file system as a whole was served
/// (a feedback loop on the figure that must hold), at most by [`MAX_BOOST`]
/// and by a square root per correction, so one noisy interval moves it
/// little; when no request waits it decays back to 1.
#[derive(Debug, Clone, Copy)]
struct Boost {
    factor: f64,
    at: Instant,
    /// The limit it was learnt for: a new limit (an upgrade) starts again
    /// from 1.
    limit: f64,
}

/// The most the shares may add up to, as a multiple of the limit.
const MAX_BOOST: f64 = 1.3;
/// How often a boost is corrected: about once per heartbeat round.
const BOOST_PERIOD: Duration = Duration::from_millis(900);

/// The per-node shares of every file system's limits.
#[derive(Default)]
pub struct QosPlanner {
    state: Mutex<State>,
}

/// A node's demand on one file system in one dimension.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Demand {
    /// Its requests waited, or it has no history: as much as it can get.
    Busy,
    Needs(f64),
}

/// Splits `limit` among `demands` (water-filling): a node that needs less
/// than an equal part of what is left gets what it needs, the busy ones
/// share the rest equally, and whatever is left over is spread evenly.
fn split(limit: f64, demands: &[Demand]) -> Vec<f64> {
    let n = demands.len();
    if n == 0 {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..n).collect();
    let need = |d: Demand| match d {
        Demand::Busy => f64::INFINITY,
        Demand::Needs(x) => x.max(0.0),
    };
    order.sort_by(|a, b| need(demands[*a]).total_cmp(&need(demands[*b])));
    let mut out = vec![0.0; n];
    let mut left = limit;
    for (k, &i) in order.iter().enumerate() {
        let equal = left / (n - k) as f64;
        let got = need(demands[i]).min(equal);
        out[i] = got;
        left -= got;
    }
    if left > 0.0 {
        for x in &mut out {
            *x += left / n as f64;
        }
    }
    out
}

impl Limits {
    fn of(dim: usize, l: &Limits) -> f64 {
        [l.bytes, l.reads, l.writes][dim]
    }
}

impl State {
    fn record(&mut self, node: &str, usage: &[FsUsage], now: Instant) {
        let before = self.nodes.remove(node);
        let mut fs = HashMap::new();
        for u in usage {
            let prev = before.as_ref().and_then(|b| {
                let p = b.fs.get(&u.fs)?;
                Some((p, now.saturating_duration_since(b.at).as_secs_f64()))
            });
            let seen = match prev {
                Some((p, secs)) if secs > 0.0 => {
                    let d = u.served.since(&p.served);
                    FsSeen {
                        served: u.served,
                        wait_us: u.qos_wait_us,
                        rates: Some([
                            (d.read_bytes + d.write_bytes) as f64 / secs,
                            d.reads as f64 / secs,
                            d.writes as f64 / secs,
                        ]),
                        waited: u.qos_wait_us != p.wait_us,
                    }
                }
                _ => FsSeen {
                    served: u.served,
                    wait_us: u.qos_wait_us,
                    rates: None,
                    waited: false,
                },
            };
            fs.insert(u.fs.clone(), seen);
        }
        self.nodes
            .insert(node.to_string(), NodeSeen { at: now, fs });
        self.nodes
            .retain(|_, n| now.saturating_duration_since(n.at) < NODE_WINDOW);
    }

    /// Corrects every boost older than [`BOOST_PERIOD`] from the nodes'
    /// last intervals.
    fn correct_boosts(&mut self, now: Instant) {
        let State {
            limits,
            nodes,
            boosts,
            ..
        } = self;
        for (fs, l) in limits.iter() {
            for dim in 0..3 {
                let limit = Limits::of(dim, l);
                if limit <= 0.0 {
                    continue;
                }
                let fresh = Boost {
                    factor: 1.0,
                    at: now,
                    limit,
                };
                let b = boosts.entry((fs.clone(), dim)).or_insert(fresh);
                if b.limit != limit {
                    *b = fresh;
                }
                if now.saturating_duration_since(b.at) < BOOST_PERIOD {
                    continue;
                }
                b.at = now;
                let seen: Vec<&FsSeen> = nodes.values().filter_map(|n| n.fs.get(fs)).collect();
                let served: f64 = seen.iter().filter_map(|f| f.rates).map(|r| r[dim]).sum();
                let waited = seen.iter().any(|f| f.waited);
                // Down at once (going over the limit is the worse error),
                // up by a square root (a noisy interval moves it little).
                b.factor = if served > limit {
                    (b.factor * limit / served).max(1.0)
                } else if waited && served > 0.0 {
                    (b.factor * (limit / served).sqrt()).clamp(1.0, MAX_BOOST)
                } else {
                    (b.factor * 0.8).max(1.0)
                };
            }
        }
    }

    /// `node`'s share of every limited file system.
    fn shares(&self, node: &str) -> Vec<QosShare> {
        let mut members: Vec<(&String, &NodeSeen)> = self.nodes.iter().collect();
        members.sort_by(|a, b| a.0.cmp(b.0));
        let Some(me) = members.iter().position(|(id, _)| id.as_str() == node) else {
            return Vec::new();
        };
        let mut out: Vec<QosShare> = self
            .limits
            .iter()
            .map(|(fs, limits)| {
                let mut share = [0.0; 3];
                for (dim, slot) in share.iter_mut().enumerate() {
                    let limit = Limits::of(dim, limits);
                    if limit <= 0.0 {
                        continue;
                    }
                    let boost = self
                        .boosts
                        .get(&(fs.clone(), dim))
                        .map_or(1.0, |b| b.factor);
                    let floor = limit / members.len() as f64 / 4.0;
                    let demands: Vec<Demand> = members
                        .iter()
                        .map(|(_, n)| match n.fs.get(fs) {
                            Some(FsSeen {
                                rates: Some(r),
                                waited: false,
                                ..
                            }) => Demand::Needs((r[dim] * HEADROOM).max(floor)),
                            // Waited, or reported for the first time.
                            Some(_) => Demand::Busy,
                            // Not served here since the node started (it
                            // may hold none of its chains): the floor, and
                            // its part of what no node needs.
                            None => Demand::Needs(floor),
                        })
                        .collect();
                    *slot = split(limit * boost, &demands)[me];
                }
                QosShare {
                    fs: fs.clone(),
                    bytes_per_sec: share[0],
                    reads_per_sec: share[1],
                    writes_per_sec: share[2],
                }
            })
            .collect();
        out.sort_by(|a, b| a.fs.cmp(&b.fs));
        out
    }
}

impl ControlPlane {
    /// Records a node's report and answers its shares of every limited
    /// file system.
    pub async fn qos_shares(&self, node: &str, usage: &[FsUsage]) -> Result<Vec<QosShare>> {
        let stale = {
            let s = self.qos.state.lock().unwrap_or_else(|p| p.into_inner());
            s.limits_read
                .is_none_or(|at| at.elapsed() >= LIMITS_MAX_AGE)
        };
        if stale {
            let limits = self.file_system_limits().await?;
            let mut s = self.qos.state.lock().unwrap_or_else(|p| p.into_inner());
            s.boosts.retain(|(fs, _), _| limits.contains_key(fs));
            s.limits = limits;
            s.limits_read = Some(Instant::now());
        }
        let now = Instant::now();
        let mut s = self.qos.state.lock().unwrap_or_else(|p| p.into_inner());
        s.record(node, usage, now);
        s.correct_boosts(now);
        Ok(s.shares(node))
    }

    /// Every file system's limits, from its tier.
    async fn file_system_limits(&self) -> Result<HashMap<String, Limits>> {
        let rows = sqlx::query(
            "SELECT id, storage_type, capacity_gib, bandwidth_mbps FROM file_systems WHERE status <> 'Deleting'",
        )
        .fetch_all(&self.store.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let storage: String = r.try_get("storage_type")?;
                let spec = spec_of(
                    StorageType::parse(&storage).unwrap_or(StorageType::Standard),
                    r.try_get("capacity_gib")?,
                    r.try_get("bandwidth_mbps")?,
                );
                Ok((
                    r.try_get("id")?,
                    Limits {
                        // MB/s as the tier table counts them (10^6 bytes).
                        bytes: spec.bandwidth_mbps as f64 * 1e6,
                        reads: spec.read_iops as f64,
                        writes: spec.write_iops as f64,
                    },
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
    }

    #[test]
    fn busy_nodes_share_what_the_others_do_not_need() {
        use Demand::*;
        assert!(close(&split(300.0, &[Busy, Busy, Busy]), &[100.0; 3]));
        let s = split(300.0, &[Busy, Needs(10.0), Needs(20.0)]);
        assert!(close(&s, &[270.0, 10.0, 20.0]), "{s:?}");
        // Nobody busy: the spare is spread evenly, the sum is the limit.
        let s = split(300.0, &[Needs(0.0), Needs(30.0), Needs(0.0)]);
        assert!(close(&s, &[90.0, 120.0, 90.0]), "{s:?}");
        // A need above an equal part is cut to it.
        let s = split(300.0, &[Needs(500.0), Busy, Needs(50.0)]);
        assert!(close(&s, &[125.0, 125.0, 50.0]), "{s:?}");
        assert!(split(1.0, &[]).is_empty());
    }

    fn usage(fs: &str, read_bytes: u64, wait_us: u64) -> FsUsage {
        FsUsage {
            fs: fs.into(),
            served: ServedIo {
                reads: read_bytes / 4096,
                read_bytes,
                ..ServedIo::default()
            },
            qos_wait_us: wait_us,
            ..FsUsage::default()
        }
    }

    #[test]
    fn shares_move_to_the_node_whose_requests_wait() {
        let mut s = State::default();
        s.limits.insert(
            "fs-a".into(),
            Limits {
                bytes: 90e6,
                reads: 0.0,
                writes: 0.0,
            },
        );
        let t0 = Instant::now();
        for n in ["n1", "n2", "n3"] {
            s.record(n, &[], t0);
        }
        // No history: equal shares; no reads limit.
        let first = s.shares("n1");
        assert_eq!(first.len(), 1);
        assert!((first[0].bytes_per_sec - 30e6).abs() < 1.0, "{first:?}");
        assert_eq!(first[0].reads_per_sec, 0.0);

        // A second later n1's requests waited, n2 served 1 MB and n3 none.
        let t1 = t0 + Duration::from_secs(1);
        s.record("n1", &[usage("fs-a", 0, 0)], t0);
        s.record("n2", &[usage("fs-a", 0, 0)], t0);
        s.record("n3", &[usage("fs-a", 0, 0)], t0);
        s.record("n1", &[usage("fs-a", 30_000_000, 500_000)], t1);
        s.record("n2", &[usage("fs-a", 1_000_000, 0)], t1);
        s.record("n3", &[usage("fs-a", 0, 0)], t1);
        let n1 = s.shares("n1")[0].bytes_per_sec;
        let n2 = s.shares("n2")[0].bytes_per_sec;
        let n3 = s.shares("n3")[0].bytes_per_sec;
        // n2 and n3 keep a quarter of an equal part at least.
        assert!(
            (n2 - 7.5e6).abs() < 1.0 && (n3 - 7.5e6).abs() < 1.0,
            "{n2} {n3}"
        );
        assert!((n1 + n2 + n3 - 90e6).abs() < 1.0 && n1 > 70e6, "{n1}");

        // A node that never served it (added later, holding none of its
        // chains) takes only the floor while the others wait.
        let mut late = State {
            limits: s.limits.clone(),
            ..State::default()
        };
        for n in ["n1", "n2", "n3", "n4"] {
            late.record(n, &[usage("fs-a", 0, 0)], t0);
        }
        late.record("n4", &[], t0);
        for n in ["n1", "n2", "n3"] {
            late.record(n, &[usage("fs-a", 30_000_000, 500_000)], t1);
        }
        late.record("n4", &[], t1);
        let n4 = late.shares("n4")[0].bytes_per_sec;
        assert!((n4 - 90e6 / 16.0).abs() < 1.0, "{n4}");

        // A node gone quiet for the window no longer takes a share.
        let later = t1 + NODE_WINDOW;
        s.record("n1", &[usage("fs-a", 30_000_000, 500_000)], later);
        let alone = s.shares("n1")[0].bytes_per_sec;
        assert!((alone - 90e6).abs() < 1.0, "{alone}");
        assert!(s.shares("n9").is_empty());
    }

    #[test]
    fn shares_grow_while_the_file_system_is_served_less_than_its_limit() {
        let mut s = State::default();
        s.limits.insert(
            "fs-a".into(),
            Limits {
                bytes: 100e6,
                reads: 0.0,
                writes: 0.0,
            },
        );
        let t0 = Instant::now();
        let sum = |s: &State| -> f64 {
            ["n1", "n2"]
                .iter()
                .map(|n| s.shares(n)[0].bytes_per_sec)
                .sum()
        };
        // Both nodes' requests wait, yet the two were served 80 MB/s in all.
        let mut served = 0;
        let mut waited = 0;
        for step in 0..3u64 {
            let at = t0 + Duration::from_secs(step);
            for n in ["n1", "n2"] {
                s.record(n, &[usage("fs-a", served, waited)], at);
            }
            s.correct_boosts(at);
            served += 40_000_000;
            waited += 1000;
        }
        // Two corrections of sqrt(100/80) each.
        assert!((sum(&s) - 125e6).abs() < 1e3, "{}", sum(&s));
        // Never more than MAX_BOOST.
        for step in 3..6u64 {
            let at = t0 + Duration::from_secs(step);
            served += 10_000_000;
            waited += 1000;
            for n in ["n1", "n2"] {
                s.record(n, &[usage("fs-a", served, waited)], at);
            }
            s.correct_boosts(at);
        }
        assert!((sum(&s) - 130e6).abs() < 1e3, "{}", sum(&s));
        // Past the limit the boost comes back down at once, never below 1.
        for step in 6..8u64 {
            let at = t0 + Duration::from_secs(step);
            served += 200_000_000;
            waited += 1000;
            for n in ["n1", "n2"] {
                s.record(n, &[usage("fs-a", served, waited)], at);
            }
            s.correct_boosts(at);
        }
        assert!((sum(&s) - 100e6).abs() < 1e3, "{}", sum(&s));
    }
}
