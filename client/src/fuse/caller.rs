//! Who is calling: the kernel gives uid, gid and pid; supplementary groups
//! come from /proc.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use cpfs_proto::meta::Caller;
use fuser::Request;

/// The caller's identity; supplementary groups come from /proc, cached
/// per process for a second (reading /proc on every request costs more than
/// the request).
pub(crate) fn caller(req: &Request) -> Caller {
    type GroupCache = Mutex<HashMap<u32, (Vec<u32>, std::time::Instant)>>;
    static GROUPS: OnceLock<GroupCache> = OnceLock::new();
    let cache = GROUPS.get_or_init(Default::default);
    let pid = req.pid();
    let cached = cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&pid)
        .filter(|(_, at)| at.elapsed() < Duration::from_secs(1))
        .map(|(g, _)| g.clone());
    let groups = match cached {
        Some(g) => g,
        None => {
            let mut groups = Vec::new();
            if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                if let Some(line) = status.lines().find(|l| l.starts_with("Groups:")) {
                    groups = line[7..]
                        .split_whitespace()
                        .filter_map(|g| g.parse().ok())
                        .take(64)
                        .collect();
                }
            }
            let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
            if c.len() > 4096 {
                c.clear();
            }
            c.insert(pid, (groups.clone(), std::time::Instant::now()));
            groups
        }
    };
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        groups,
    }
}
