//! Load on the signed API: N concurrent clients (each its own keep-alive
//! connection, as an SDK client holds one) send M signed V1 requests each,
//! a mix of the read-only Describe calls, against a real `cpfs serve`.
//! Every reply must be a success, and the server's resident memory after
//! the run may exceed what it was after a warm-up by at most a stated
//! bound (a leak per request or per connection shows up as growth).
//!
//! The test command runs a small version (8 clients x 500 requests);
//! `bench/load.sh` runs 64 x 10,000 in release mode and writes a report.
//! Knobs: CPFS_LOAD_CLIENTS, CPFS_LOAD_REQUESTS, CPFS_LOAD_RSS_BOUND_MIB,
//! CPFS_LOAD_REPORT (a file the numbers are written to as JSON).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Client, Server};
use serde_json::Value;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident set of a process, in KiB (VmRSS of /proc/PID/status).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// The calls of the mix, in rotation (all read-only, all must succeed).
fn mix(fs: &str) -> Vec<(&'static str, Vec<(String, String)>)> {
    let p = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    vec![
        ("DescribeFileSystems", p(&[])),
        ("DescribeFileSystems", p(&[("FileSystemId", fs)])),
        ("DescribeMountTargets", p(&[("FileSystemId", fs)])),
        ("DescribeAccessGroups", p(&[])),
        (
            "DescribeAccessRules",
            p(&[("AccessGroupName", "DEFAULT_VPC_GROUP_NAME")]),
        ),
        ("DescribeRegions", p(&[])),
        ("DescribeZones", p(&[("FileSystemType", "cpfs")])),
        (
            "ListTagResources",
            p(&[("ResourceType", "filesystem"), ("ResourceId.1", fs)]),
        ),
    ]
}

struct Outcome {
    ok: u64,
    errors: Vec<String>,
}

/// `clients` threads, each with one keep-alive agent, `requests` calls each.
fn run(port: u16, fs: &str, clients: u64, requests: u64) -> Outcome {
    let ok = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for t in 0..clients {
        let ok = ok.clone();
        let fs = fs.to_string();
        handles.push(std::thread::spawn(move || {
            let client = Client::new(port, common::AK, common::SECRET);
            let agent = ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(60))
                .max_idle_connections_per_host(1)
                .build();
            let calls = mix(&fs);
            let url = format!("http://127.0.0.1:{port}/");
            let mut errors = Vec::new();
            for i in 0..requests {
                let (action, params) = &calls[((t + i) as usize) % calls.len()];
                let mut all = client.common(action);
                all.extend(params.iter().cloned());
                client.sign("GET", &mut all);
                let mut req = agent.get(&url);
                for (k, v) in &all {
                    req = req.query(k, v);
                }
                let (status, body) = match req.call() {
                    Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
                    Err(ureq::Error::Status(code, r)) => {
                        (code, r.into_string().unwrap_or_default())
                    }
                    Err(e) => (0, e.to_string()),
                };
                let good = status == 200
                    && serde_json::from_str::<Value>(&body)
                        .is_ok_and(|v| v.get("Code").is_none() && v["RequestId"].is_string());
                if good {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else if errors.len() < 5 {
                    errors.push(format!("{action}: {status} {body}"));
                }
            }
            errors
        }));
    }
    let errors = handles
        .into_iter()
        .flat_map(|h| h.join().expect("a client thread panicked"))
        .collect();
    Outcome {
        ok: ok.load(Ordering::Relaxed),
        errors,
    }
}

#[test]
fn concurrent_signed_describes_succeed_without_memory_growth() {
    let clients = env_or("CPFS_LOAD_CLIENTS", 8);
    let requests = env_or("CPFS_LOAD_REQUESTS", 500);
    // Growth allowed after the run, over the RSS after a warm-up at the same
    // concurrency. What the server keeps by design is small against it: the
    // replay-protection nonces, 16 bytes (about 40 with their hash set) per
    // request for 31 minutes, so 640,000 requests keep about 25 MiB.
    let bound_mib = env_or("CPFS_LOAD_RSS_BOUND_MIB", 16);
    // The limit of requests per second per key is not what is measured here.
    let server = Server::start(&["--rate-limit", "1000000"]);
    let pid = server.child.as_ref().unwrap().id();
    let c = server.client();
    let fs = c.create_fs("5120");
    c.ok(
        "TagResources",
        &[
            ("ResourceType", "filesystem"),
            ("ResourceId.1", &fs),
            ("Tag.1.Key", "load"),
            ("Tag.1.Value", "yes"),
        ],
    );

    // Warm-up: the same concurrency, a tenth of the requests (at least 50
    // each), so that threads, connections and allocator arenas exist.
    let warm = (requests / 10).max(50);
    let w = run(server.port, &fs, clients, warm);
    assert!(w.errors.is_empty(), "warm-up errors: {:?}", w.errors);
    let before = rss_kib(pid);

    let started = Instant::now();
    let out = run(server.port, &fs, clients, requests);
    let secs = started.elapsed().as_secs_f64();
    let after = rss_kib(pid);
    let total = clients * requests;
    let growth_kib = after.saturating_sub(before);
    let report = serde_json::json!({
        "clients": clients,
        "requests_per_client": requests,
        "requests": total,
        "succeeded": out.ok,
        "errors": total - out.ok,
        "seconds": (secs * 100.0).round() / 100.0,
        "requests_per_second": (total as f64 / secs).round(),
        "rss_after_warmup_kib": before,
        "rss_after_run_kib": after,
        "rss_growth_kib": growth_kib,
        "rss_bound_kib": bound_mib * 1024,
    });
    println!("load: {report}");
    if let Ok(path) = std::env::var("CPFS_LOAD_REPORT") {
        std::fs::write(path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    }
    assert!(
        out.errors.is_empty() && out.ok == total,
        "{} of {total} requests failed; first: {:?}",
        total - out.ok,
        out.errors
    );
    assert!(
        growth_kib <= bound_mib * 1024,
        "the server grew by {growth_kib} KiB over {total} requests (bound {bound_mib} MiB): {report}"
    );
    // The server is still healthy and answers.
    c.ok("DescribeFileSystems", &[("FileSystemId", &fs)]);
}
