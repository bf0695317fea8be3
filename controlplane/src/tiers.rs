//! The capacity × bandwidth grid this product sells, and the IOPS limits of
//! each tier. The numbers are the published CPFS performance table (the
//! product overview's table, kept beside this file as `tier-table.csv`).
//!
//! Units: a table "TB" is 1024 GiB; 1 Gbit/s is 125 MB/s. 1.5 Gbit/s is
//! 187.5 MB/s, sold as 187 MB/s because Bandwidth is an integer and a tier
//! must never promise more than the table.

use crate::error::{Error, Result};

const TABLE: &str = include_str!("tier-table.csv");

pub const GIB_PER_TB: i64 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier {
    pub capacity_gib: i64,
    pub bandwidth_mbps: i64,
    pub standard_write_iops: i64,
    pub standard_read_iops: i64,
    pub advanced_write_iops: i64,
    pub advanced_read_iops: i64,
}

/// What a file system of a given type, capacity and bandwidth may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub capacity_gib: i64,
    pub bandwidth_mbps: i64,
    pub read_iops: i64,
    pub write_iops: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageType {
    /// The seed's Standard Edition.
    Standard,
    /// The seed's Advanced Edition.
    Advance,
    /// Bandwidth is 100 MB/s per TiB of capacity.
    Advance100,
    /// Bandwidth is 200 MB/s per TiB of capacity.
    Advance200,
    Economic,
}

impl StorageType {
    pub const ALL: &'static [&'static str] = &[
        "advance_100",
        "advance_200",
        "economic",
        "standard",
        "advance",
    ];

    pub fn parse(s: &str) -> Option<StorageType> {
        Some(match s {
            "standard" => StorageType::Standard,
            "advance" => StorageType::Advance,
            "advance_100" => StorageType::Advance100,
            "advance_200" => StorageType::Advance200,
            "economic" => StorageType::Economic,
            _ => return None,
        })
    }

    /// MB/s per TiB for the types whose bandwidth follows capacity.
    fn baseline_mbps_per_tib(self) -> Option<i64> {
        match self {
            StorageType::Advance100 => Some(100),
            StorageType::Advance200 => Some(200),
            _ => None,
        }
    }

    fn advanced_iops(self) -> bool {
        matches!(
            self,
            StorageType::Advance | StorageType::Advance100 | StorageType::Advance200
        )
    }
}

pub fn tiers() -> &'static [Tier] {
    static TIERS: std::sync::OnceLock<Vec<Tier>> = std::sync::OnceLock::new();
    TIERS.get_or_init(|| parse_table(TABLE))
}

fn parse_table(text: &str) -> Vec<Tier> {
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .filter_map(|line| {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            let num = |i: usize| f.get(i)?.parse::<f64>().ok();
            Some(Tier {
                capacity_gib: (num(0)? * GIB_PER_TB as f64) as i64,
                bandwidth_mbps: (num(1)? * 125.0).floor() as i64,
                standard_write_iops: num(2)? as i64,
                standard_read_iops: num(3)? as i64,
                advanced_write_iops: num(4)? as i64,
                advanced_read_iops: num(5)? as i64,
            })
        })
        .collect()
}

/// The capacities (GiB) the grid sells, ascending.
pub fn capacities() -> Vec<i64> {
    let mut caps: Vec<i64> = tiers().iter().map(|t| t.capacity_gib).collect();
    caps.dedup();
    caps
}

fn tiers_for(capacity_gib: i64) -> impl Iterator<Item = &'static Tier> {
    tiers()
        .iter()
        .filter(move |t| t.capacity_gib == capacity_gib)
}

fn check_capacity(capacity_gib: i64) -> Result<()> {
    if tiers_for(capacity_gib).next().is_none() {
        let list: Vec<String> = capacities().iter().map(|c| c.to_string()).collect();
        return Err(Error::invalid(
            "Capacity",
            format!(
                "Capacity {capacity_gib} GiB is not offered; choose one of {} (GiB)",
                list.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Validates a requested (capacity, bandwidth) and fills in the default
/// bandwidth: the lowest tier of the capacity, or capacity × baseline.
pub fn resolve(storage: StorageType, capacity_gib: i64, bandwidth: Option<i64>) -> Result<Spec> {
    check_capacity(capacity_gib)?;
    let bandwidth_mbps = match storage.baseline_mbps_per_tib() {
        Some(per_tib) => {
            let follows = capacity_gib * per_tib / GIB_PER_TB;
            match bandwidth {
                Some(b) if b != follows => {
                    return Err(Error::invalid(
                        "Bandwidth",
                        format!(
                            "for this StorageType Bandwidth follows capacity: {capacity_gib} GiB gives {follows} MB/s"
                        ),
                    ))
                }
                _ => follows,
            }
        }
        None => {
            let offered: Vec<i64> = tiers_for(capacity_gib).map(|t| t.bandwidth_mbps).collect();
            match bandwidth {
                None => offered.iter().copied().min().unwrap_or(0),
                Some(b) if offered.contains(&b) => b,
                Some(b) => {
                    let list: Vec<String> = offered.iter().map(|o| o.to_string()).collect();
                    return Err(Error::invalid(
                        "Bandwidth",
                        format!(
                            "Bandwidth {b} MB/s is not offered with {capacity_gib} GiB; choose one of {} (MB/s)",
                            list.join(", ")
                        ),
                    ));
                }
            }
        }
    };
    Ok(spec_of(storage, capacity_gib, bandwidth_mbps))
}

/// The limits of an existing file system: the highest tier of its capacity
/// whose bandwidth it has, else the lowest tier of its capacity.
pub fn spec_of(storage: StorageType, capacity_gib: i64, bandwidth_mbps: i64) -> Spec {
    let mut candidates: Vec<&Tier> = tiers_for(capacity_gib).collect();
    if candidates.is_empty() {
        // Not a grid capacity (only possible for rows written by an older
        // table): use the largest tier not above it.
        candidates = tiers()
            .iter()
            .filter(|t| t.capacity_gib <= capacity_gib)
            .collect();
    }
    let tier = candidates
        .iter()
        .filter(|t| t.bandwidth_mbps <= bandwidth_mbps)
        .max_by_key(|t| t.bandwidth_mbps)
        .or_else(|| candidates.iter().min_by_key(|t| t.bandwidth_mbps))
        .copied()
        .or_else(|| tiers().first());
    let (read_iops, write_iops) = match tier {
        Some(t) if storage.advanced_iops() => (t.advanced_read_iops, t.advanced_write_iops),
        Some(t) => (t.standard_read_iops, t.standard_write_iops),
        None => (0, 0),
    };
    Spec {
        capacity_gib,
        bandwidth_mbps,
        read_iops,
        write_iops,
    }
}

/// An upgrade: the new capacity must be a grid capacity not below the
/// current one; without an explicit bandwidth the file system keeps at least
/// the bandwidth it has.
pub fn resolve_upgrade(
    storage: StorageType,
    current: Spec,
    capacity_gib: i64,
    bandwidth: Option<i64>,
) -> Result<Spec> {
    if capacity_gib < current.capacity_gib {
        return Err(Error::invalid(
            "Capacity",
            format!(
                "Capacity must not be below the current {} GiB (scale-down is not supported)",
                current.capacity_gib
            ),
        ));
    }
    let bandwidth = match (bandwidth, storage.baseline_mbps_per_tib()) {
        (Some(b), _) => Some(b),
        (None, Some(_)) => None,
        (None, None) => {
            let mut offered: Vec<i64> = tiers_for(capacity_gib).map(|t| t.bandwidth_mbps).collect();
            offered.sort_unstable();
            offered
                .iter()
                .copied()
                .find(|b| *b >= current.bandwidth_mbps)
                .or(offered.last().copied())
        }
    };
    let next = resolve(storage, capacity_gib, bandwidth)?;
    if next.bandwidth_mbps < current.bandwidth_mbps {
        return Err(Error::invalid(
            "Bandwidth",
            format!(
                "Bandwidth must not be below the current {} MB/s",
                current.bandwidth_mbps
            ),
        ));
    }
    if next == current {
        return Err(Error::invalid(
            "Capacity",
            "the requested Capacity and Bandwidth equal the current ones; nothing to upgrade",
        ));
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_parses_in_gib_and_mbps() {
        let t = tiers();
        assert_eq!(t.len(), 9);
        assert_eq!(t[0].capacity_gib, 2048);
        assert_eq!(t[0].bandwidth_mbps, 125);
        assert_eq!(t[3].bandwidth_mbps, 187); // 1.5 Gbit/s
        assert_eq!(capacities(), vec![2048, 5120, 10240, 30720, 51200]);
    }

    #[test]
    fn default_bandwidth_is_lowest_tier() {
        let s = resolve(StorageType::Standard, 5120, None).unwrap();
        assert_eq!(s.bandwidth_mbps, 125);
        assert_eq!((s.read_iops, s.write_iops), (40_000, 20_000));
        let s = resolve(StorageType::Advance, 5120, Some(312)).unwrap();
        assert_eq!((s.read_iops, s.write_iops), (350_000, 100_000));
    }

    #[test]
    fn advance_types_follow_capacity() {
        let s = resolve(StorageType::Advance100, 5120, None).unwrap();
        assert_eq!(s.bandwidth_mbps, 500);
        let s = resolve(StorageType::Advance200, 51200, None).unwrap();
        assert_eq!(s.bandwidth_mbps, 10_000);
        assert_eq!(s.read_iops, 600_000);
        assert!(resolve(StorageType::Advance100, 5120, Some(400)).is_err());
    }

    #[test]
    fn rejects_unsold_capacity_and_bandwidth() {
        let e = resolve(StorageType::Standard, 3000, None).unwrap_err();
        assert!(e.to_string().contains("2048, 5120"), "{e}");
        let e = resolve(StorageType::Standard, 2048, Some(312)).unwrap_err();
        assert!(matches!(
            e,
            Error::InvalidParameter {
                name: "Bandwidth",
                ..
            }
        ));
    }

    #[test]
    fn upgrade_keeps_bandwidth_and_refuses_shrinking() {
        let cur = resolve(StorageType::Standard, 5120, Some(312)).unwrap();
        let next = resolve_upgrade(StorageType::Standard, cur, 10240, None).unwrap();
        assert_eq!(next.bandwidth_mbps, 312);
        assert!(resolve_upgrade(StorageType::Standard, cur, 2048, None).is_err());
        assert!(resolve_upgrade(StorageType::Standard, cur, 5120, None).is_err());
        // bandwidth-only upgrade at the same capacity
        let low = resolve(StorageType::Standard, 5120, None).unwrap();
        let up = resolve_upgrade(StorageType::Standard, low, 5120, Some(312)).unwrap();
        assert_eq!(up.bandwidth_mbps, 312);
        let a = resolve(StorageType::Advance100, 5120, None).unwrap();
        assert_eq!(
            resolve_upgrade(StorageType::Advance100, a, 10240, None)
                .unwrap()
                .bandwidth_mbps,
            1000
        );
    }
}
