//! What the partition tests record of a server's answers over time, and
//! the check that an owner cut off stops before its successor starts.

use std::fmt::Debug;
use std::time::Instant;

/// Each change of answer in `seen`, with its time relative to `cut` (for
/// the test's log and its failure messages).
pub fn timeline<A: Debug + PartialEq>(seen: &[(Instant, A)], cut: Instant) -> String {
    let mut out = Vec::new();
    let mut last = None;
    for (t, a) in seen {
        if last != Some(a) {
            let at = t.saturating_duration_since(cut).as_millis() as i64
                - cut.saturating_duration_since(*t).as_millis() as i64;
            out.push(format!("{a:?} from {at} ms"));
            last = Some(a);
        }
    }
    out.join(", ")
}

/// The last `served` answer of the cut-off owner (`old`) and the first of
/// its successor (`new`) after `cut`; panics, naming `two` ("two owners"),
/// unless the old one's comes first.
pub fn one_owner_at_a_time<A: PartialEq>(
    old: &[(Instant, A)],
    new: &[(Instant, A)],
    cut: Instant,
    served: &A,
    two: &str,
) -> (Instant, Instant) {
    let last_old = old
        .iter()
        .rfind(|(_, a)| a == served)
        .map(|(t, _)| *t)
        .expect("the cut-off owner served before the cut");
    let first_new = new
        .iter()
        .find(|(t, a)| *t > cut && a == served)
        .map(|(t, _)| *t)
        .expect("the successor never served");
    assert!(
        last_old < first_new,
        "{two}: the cut-off one served {:?} after the cut, its successor from {:?}",
        last_old.saturating_duration_since(cut),
        first_new.saturating_duration_since(cut)
    );
    (last_old, first_new)
}
