//! Which live data nodes their peers cannot reach.
//!
//! A node cut off from its clients and peers but not from the control
//! plane keeps heartbeating, so the failure timeout never removes it.
//! Every node probes the others and reports those that missed a probe
//! (`cpfs_node::peers`); this decides from those reports whom to treat as
//! dead. One report proves little (the reporter may be the one cut off:
//! it then reports everyone), so a node is cut off when at least
//! [`MIN_REPORTERS`] live peers, and more than half of the live others,
//! report it. Reporters already judged cut off do not count, and the most
//! reported node is judged first, so a network split in two halves loses
//! one half, never both.

use std::collections::{BTreeMap, BTreeSet};

/// Fewest distinct reporters that can take a node out (two: a single
/// reporter cannot tell its own isolation from the other node's).
pub const MIN_REPORTERS: usize = 2;

/// The nodes to treat as dead although they heartbeat. `reports`: per
/// live node, the ids it reported unreachable.
pub fn cut_off(reports: &BTreeMap<String, Vec<String>>) -> BTreeSet<String> {
    let mut cut = BTreeSet::new();
    loop {
        let counted = |id: &String| {
            reports
                .iter()
                .filter(|(by, seen)| *by != id && !cut.contains(*by) && seen.contains(id))
                .count()
        };
        // The most reported node not judged yet (ties: by id).
        let Some((id, n)) = reports
            .keys()
            .filter(|id| !cut.contains(*id))
            .map(|id| (id, counted(id)))
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
        else {
            return cut;
        };
        let others = reports.len() - cut.len() - 1;
        if n < MIN_REPORTERS || n * 2 <= others {
            return cut;
        }
        cut.insert(id.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reports(r: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        r.iter()
            .map(|(by, seen)| (by.to_string(), seen.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    fn ids(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_node_everyone_misses_is_cut_off_not_the_ones_it_misses() {
        let r = reports(&[("a", &["c"]), ("b", &["c"]), ("c", &["a", "b"])]);
        assert_eq!(cut_off(&r), ids(&["c"]));
    }

    #[test]
    fn one_reporter_is_not_enough() {
        // Two nodes that miss each other: either may be the cut-off one.
        let r = reports(&[("a", &["b"]), ("b", &["a"])]);
        assert!(cut_off(&r).is_empty());
        // Three nodes, one report: the reporter may be the cut-off one.
        let r = reports(&[("a", &["b"]), ("b", &[]), ("c", &[])]);
        assert!(cut_off(&r).is_empty());
    }

    #[test]
    fn a_minority_of_reporters_is_not_enough() {
        let r = reports(&[
            ("a", &["e"]),
            ("b", &["e"]),
            ("c", &[]),
            ("d", &[]),
            ("e", &[]),
            ("f", &[]),
        ]);
        assert!(cut_off(&r).is_empty());
    }

    #[test]
    fn a_split_in_halves_loses_one_half() {
        let r = reports(&[
            ("a", &["c", "d"]),
            ("b", &["c", "d"]),
            ("c", &["a", "b"]),
            ("d", &["a", "b"]),
        ]);
        assert_eq!(cut_off(&r), ids(&["a", "b"]));
    }

    #[test]
    fn everyone_reachable_cuts_nothing() {
        let r = reports(&[("a", &[]), ("b", &[]), ("c", &[])]);
        assert!(cut_off(&r).is_empty());
    }
}
