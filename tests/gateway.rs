//! The gateway's refusals, each with its Alibaba code and HTTP status, and
//! the transports the SDKs use (query GET/POST, form-body POST).

mod common;

use common::{Client, Server, AK};
use serde_json::Value;

#[test]
fn authentication_failures_have_the_right_codes() {
    let server = Server::start(&[]);
    let c = server.client();

    // Wrong secret: 400, and the message carries the server's string to
    // sign after exactly one colon (the core SDK parses it).
    let wrong = Client::new(server.port, AK, "not-the-secret");
    let (status, v) = wrong.call("DescribeRegions", &[]);
    assert_eq!(
        (status, v["Code"].as_str().unwrap()),
        (400, "SignatureDoesNotMatch")
    );
    let msg = v["Message"].as_str().unwrap();
    assert_eq!(msg.matches(':').count(), 1, "{msg}");
    assert!(
        msg.split(':')
            .nth(1)
            .unwrap()
            .starts_with("GET&%2F&AccessKeyId%3D"),
        "{msg}"
    );

    // Unknown key: 404.
    let stranger = Client::new(server.port, "LTAI-nobody", "whatever1");
    let (status, v) = stranger.call("DescribeRegions", &[]);
    assert_eq!(
        (status, v["Code"].as_str().unwrap()),
        (404, "InvalidAccessKeyId.NotFound")
    );

    // Replayed nonce: the identical signed request twice.
    let mut p = c.common("DescribeRegions");
    c.sign("GET", &mut p);
    assert_eq!(c.send(&p).0, 200);
    let (status, body) = c.send(&p);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, v["Code"].as_str().unwrap()),
        (400, "SignatureNonceUsed")
    );

    // Stale and malformed timestamps.
    for (ts, code) in [
        (
            cpfs_controlplane::clock::format_utc(
                time::OffsetDateTime::now_utc().unix_timestamp() - 20 * 60,
            ),
            "InvalidTimeStamp.Expired",
        ),
        (
            cpfs_controlplane::clock::format_utc(
                time::OffsetDateTime::now_utc().unix_timestamp() + 20 * 60,
            ),
            "InvalidTimeStamp.Expired",
        ),
        ("yesterday".to_string(), "InvalidTimeStamp.Format"),
    ] {
        let mut p = c.common("DescribeRegions");
        p.retain(|(k, _)| k != "Timestamp");
        p.push(("Timestamp".into(), ts));
        c.sign("GET", &mut p);
        let (status, body) = c.send(&p);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!((status, v["Code"].as_str().unwrap()), (400, code), "{body}");
    }

    // Missing signature parts and a wrong method name.
    let mut p = c.common("DescribeRegions");
    p.retain(|(k, _)| k != "SignatureNonce");
    c.sign("GET", &mut p);
    let v: Value = serde_json::from_str(&c.send(&p).1).unwrap();
    assert_eq!(v["Code"], "IncompleteSignature");
    let mut p = c.common("DescribeRegions");
    p.retain(|(k, _)| k != "SignatureMethod");
    p.push(("SignatureMethod".into(), "HMAC-MD5".into()));
    c.sign("GET", &mut p);
    let v: Value = serde_json::from_str(&c.send(&p).1).unwrap();
    assert_eq!(v["Code"], "InvalidSignatureMethod");
    let (status, body) = c.send(&[]);
    assert_eq!(status, 400);
    assert!(body.contains("IncompleteSignature"));

    // The secret never reaches the log.
    assert!(!server.log().contains(common::SECRET));
}

#[test]
fn request_shape_errors() {
    let server = Server::start(&[]);
    let c = server.client();
    assert_eq!(c.err("NoSuchThing", &[], "InvalidApi.NotFound"), 404);
    assert_eq!(
        c.err(
            "CreateDataFlow",
            &[("FileSystemId", "cpfs-1")],
            "UnsupportedOperation"
        ),
        400
    );
    assert_eq!(c.err("DescribeMountTargets", &[], "MissingParameter"), 400);
    assert_eq!(
        c.err(
            "DescribeFileSystems",
            &[("PageSize", "abc")],
            "InvalidParameter.PageSize"
        ),
        400
    );
    let mut p = c.common("DescribeRegions");
    p.retain(|(k, _)| k != "Format");
    p.push(("Format".into(), "YAML".into()));
    c.sign("GET", &mut p);
    let (status, body) = c.send(&p);
    assert_eq!(status, 400);
    assert!(body.contains("InvalidParameter.Format"), "{body}");

    // A wrong version is an unknown API.
    let mut p = c.common("DescribeRegions");
    p.retain(|(k, _)| k != "Version");
    p.push(("Version".into(), "2099-01-01".into()));
    c.sign("GET", &mut p);
    let (status, body) = c.send(&p);
    assert_eq!(status, 404, "{body}");

    // Methods other than GET and POST.
    let url = format!("http://127.0.0.1:{}/?Action=DescribeRegions", server.port);
    match ureq::put(&url).call() {
        Err(ureq::Error::Status(400, r)) => {
            assert!(r.into_string().unwrap().contains("UnsupportedHTTPMethod"))
        }
        other => panic!("PUT answered {other:?}"),
    }
    // Oversize body and too many parameters: refused, not processed.
    let big = "A=".to_string() + &"x".repeat(300 * 1024);
    match ureq::post(&url)
        .set("content-type", "application/x-www-form-urlencoded")
        .send_string(&big)
    {
        Err(ureq::Error::Status(413, r)) => {
            assert!(r.into_string().unwrap().contains("BodyTooLarge"))
        }
        other => panic!("big body answered {other:?}"),
    }
    let many: String = (0..600)
        .map(|i| format!("p{i}=1"))
        .collect::<Vec<_>>()
        .join("&");
    match ureq::get(&format!("http://127.0.0.1:{}/?{many}", server.port)).call() {
        Err(ureq::Error::Status(400, r)) => assert!(r
            .into_string()
            .unwrap()
            .contains("InvalidParameter.ParameterCount")),
        other => panic!("600 parameters answered {other:?}"),
    }
    // Still healthy after all that.
    c.ok("DescribeRegions", &[]);
}

#[test]
fn post_query_and_form_body_are_both_accepted() {
    let server = Server::start(&[]);
    let mut c = server.client();
    c.method = "POST";
    // POST with everything in the query (the Python SDKs).
    c.ok("DescribeRegions", &[]);
    // POST with everything, Signature included, in a form body (pop-core).
    let mut p = c.common("DescribeZones");
    p.push(("RegionId".into(), "cn-hangzhou".into()));
    p.push(("Description".into(), "a b+c*d~e".into()));
    c.sign("POST", &mut p);
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(p.iter())
        .finish();
    let r = ureq::post(&format!("http://127.0.0.1:{}/", server.port))
        .set("content-type", "application/x-www-form-urlencoded")
        .send_string(&body)
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.header("content-type"),
        Some("application/json;charset=utf-8")
    );
    assert!(r.header("x-acs-request-id").is_some());
    let v: Value = serde_json::from_str(&r.into_string().unwrap()).unwrap();
    assert_eq!(v["Zones"]["Zone"][0]["ZoneId"], "cn-hangzhou-b");
}

#[test]
fn each_access_key_is_rate_limited() {
    let server = Server::start(&["--rate-limit", "5"]);
    let c = server.client();
    let mut throttled = None;
    for _ in 0..40 {
        let mut p = c.common("DescribeRegions");
        c.sign("GET", &mut p);
        let query: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(p.iter())
            .finish();
        match ureq::get(&format!("http://127.0.0.1:{}/?{query}", server.port)).call() {
            Ok(_) => {}
            Err(ureq::Error::Status(400, r)) => {
                let retry = r.header("x-acs-retry-after").map(str::to_string);
                let v: Value = serde_json::from_str(&r.into_string().unwrap()).unwrap();
                throttled = Some((v["Code"].as_str().unwrap().to_string(), retry));
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let (code, retry) = throttled.expect("40 calls at a limit of 5/s must be throttled");
    assert_eq!(code, "Throttling.User");
    assert!(retry.unwrap().parse::<u64>().unwrap() > 0);
    // Another key is not affected by this one's limit.
    let stranger = Client::new(server.port, "LTAI-nobody", "whatever1");
    assert_eq!(
        stranger.call("DescribeRegions", &[]).1["Code"],
        "InvalidAccessKeyId.NotFound"
    );
}

#[test]
fn first_start_generates_prints_and_saves_a_key_once() {
    let mut server = Server::start(&[]);
    server.env.clear();
    server.kill9();
    // A fresh data dir without CPFS_ACCESS_KEY_*: a key is generated.
    let fresh = server.dir.join("fresh");
    server.args = vec![
        "serve".into(),
        "--data-dir".into(),
        fresh.display().to_string(),
    ];
    server.args.extend(common::database_args(&fresh));
    server.spawn();
    let out = server.stdout();
    let secret_line = out
        .lines()
        .find(|l| l.contains("AccessKeySecret:"))
        .expect("secret printed");
    let secret = secret_line.split_whitespace().last().unwrap().to_string();
    let key_file = server.dir.join("fresh").join("access-key.json");
    let meta = std::fs::metadata(&key_file).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&key_file).unwrap()).unwrap();
    assert_eq!(saved["AccessKeySecret"], secret.as_str());
    let c = Client::new(server.port, saved["AccessKeyId"].as_str().unwrap(), &secret);
    c.ok("DescribeRegions", &[]);
    assert!(
        !server.log().contains(&secret),
        "the secret must not be logged"
    );
    // A restart does not print it again.
    server.kill9();
    server.spawn();
    assert_eq!(server.stdout().matches("AccessKeySecret:").count(), 1);
}

#[test]
fn config_file_env_and_flags_stack_in_that_order() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cpfs.toml");
    std::fs::write(
        &cfg,
        "region = \"from-file\"\nzones = [\"file-a\", \"file-b\"]\nrate_limit = 7\n",
    )
    .unwrap();
    // File alone: region, zones and the rate limit come from it.
    let mut server = Server::start(&["--config", cfg.to_str().unwrap()]);
    let c = server.client();
    assert_eq!(
        c.ok("DescribeRegions", &[])["Regions"]["Region"][0]["RegionId"],
        "from-file"
    );
    let zones = c.ok("DescribeZones", &[("RegionId", "from-file")]);
    assert_eq!(zones["Zones"]["Zone"][0]["ZoneId"], "file-a");
    // Environment over the file, flag over both.
    server.kill9();
    server.env.push(("CPFS_ZONES".into(), "env-z".into()));
    server.env.push(("CPFS_REGION".into(), "from-env".into()));
    server
        .args
        .extend(["--region".to_string(), "from-flag".to_string()]);
    server.spawn();
    let c = server.client();
    assert_eq!(
        c.ok("DescribeRegions", &[])["Regions"]["Region"][0]["RegionId"],
        "from-flag"
    );
    let zones = c.ok("DescribeZones", &[("RegionId", "from-flag")]);
    assert_eq!(zones["Zones"]["Zone"][0]["ZoneId"], "env-z");
    // A file with an unknown setting is refused with its name.
    std::fs::write(&cfg, "regoin = \"typo\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cpfs"))
        .args(["serve", "--config", cfg.to_str().unwrap(), "--data-dir"])
        .arg(dir.path().join("d"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("regoin"));
}

/// /healthz lists the process's background loops and their passes; the
/// readiness probes of every suite rely on its 200.
#[test]
fn healthz_reports_every_background_loop() {
    let server = Server::start(&[]);
    let url = format!("http://127.0.0.1:{}/healthz", server.port);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = ureq::get(&url).call().expect("healthz answers 200");
        let v: serde_json::Value = r.into_json().unwrap();
        assert_eq!(v["Status"], "ok", "{v}");
        let loops = v["Loops"].as_array().unwrap();
        let passes = |name: &str| {
            loops
                .iter()
                .find(|l| l["Name"] == name)
                .and_then(|l| l["Passes"].as_u64())
        };
        // Each loop registers when its task first runs, then passes.
        let all = ["reconciler", "chain planner", "billing", "orphan collector"].map(passes);
        if all.iter().all(|p| p.unwrap_or(0) >= 1) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a loop is missing or never finished a pass: {v}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The processes `pid` started (its children), from /proc.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Whether process `pid` is gone (or a zombie nobody has reaped yet).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// SIGTERM stops every loop, listener and embedded node of `cpfs serve`,
/// and the process exits successfully instead of being killed mid-pass.
#[test]
fn serve_shuts_down_gracefully_on_sigterm() {
    let mut server = Server::start(&["--nodes", "2"]);
    let pid = server.child.as_ref().unwrap().id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let nodes = loop {
        let nodes = children_of(pid);
        if nodes.len() >= 2 {
            break nodes;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nodes never started: {nodes:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let child = server.child.as_mut().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cpfs serve did not stop:\n{}",
            server.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "{status}:\n{}", server.log());
    let log = server.log();
    assert!(
        log.contains("shutting down") && log.contains("stopped"),
        "{log}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !nodes.iter().all(|p| gone(*p)) {
        assert!(
            std::time::Instant::now() < deadline,
            "a node outlived cpfs serve: {nodes:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    server.child = None;
}

/// An address that keeps failing authentication is refused before its
/// requests cost a key lookup or a signature check; the burst is allowed,
/// and an address that authenticates is never slowed by this limit.
#[test]
fn an_address_that_keeps_failing_authentication_is_refused_early() {
    let server = Server::start(&[]);
    let good = server.client();
    for _ in 0..300 {
        good.ok("DescribeRegions", &[]);
    }
    // A verified call that lacks Version proved its key: refused, but not
    // counted against the address (the stranger below is limited after
    // about 100 failures).
    for _ in 0..150 {
        let mut all = good.common("DescribeRegions");
        all.retain(|(k, _)| k != "Version");
        good.sign("GET", &mut all);
        let (status, body) = good.send(&all);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (status, v["Code"].as_str()),
            (400, Some("MissingParameter")),
            "{v}"
        );
    }
    good.ok("DescribeRegions", &[]);
    let stranger = Client::new(server.port, "LTAI-nobody", "whatever1");
    let mut failures = 0;
    let throttled = loop {
        let (status, v) = stranger.call("DescribeRegions", &[]);
        if v["Code"] == "Throttling.User" {
            break (status, v);
        }
        assert_eq!(v["Code"], "InvalidAccessKeyId.NotFound", "{v}");
        failures += 1;
        assert!(failures < 1000, "never limited");
    };
    assert!(failures >= 100, "limited after only {failures} failures");
    assert_eq!(throttled.0, 400, "{:?}", throttled.1);
    // Per address: the good key from the same address waits too.
    let (_, v) = good.call("DescribeRegions", &[]);
    assert_eq!(v["Code"], "Throttling.User", "{v}");
}

/// Heartbeats prove the cluster token before their body is read, and the
/// body limit is the heartbeat's own (4 MiB), not the framework default.
#[test]
fn heartbeats_are_authenticated_before_their_body_is_read() {
    let server = Server::start(&["--nodes", "0"]);
    let data_dir = server.admin_args()[1].clone();
    let token =
        std::fs::read_to_string(std::path::Path::new(&data_dir).join("cluster-token")).unwrap();
    let url = format!(
        "http://127.0.0.1:{}{}",
        server.port,
        cpfs_proto::heartbeat::HEARTBEAT_PATH
    );
    let send = |token: Option<&str>, size: usize| {
        let mut req = ureq::post(&url);
        if let Some(t) = token {
            req = req.set(cpfs_proto::heartbeat::TOKEN_HEADER, t.trim());
        }
        match req.send_bytes(&vec![b'{'; size]) {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(code, _)) => code,
            // Refused before the whole body was sent.
            Err(ureq::Error::Transport(_)) => 0,
        }
    };
    assert!(matches!(send(None, 3 << 20), 401 | 0));
    assert_eq!(
        send(Some(&token), 3 << 20),
        400,
        "a 3 MiB heartbeat is parsed, not refused by size"
    );
    assert!(matches!(send(Some(&token), 5 << 20), 413 | 0));
}

/// The chunk-layout route a node migrating format-1 chunks asks: cluster
/// token first, then a bounded list of inodes; unknown inodes are absent.
#[test]
fn chunk_layouts_need_the_cluster_token_and_a_bounded_request() {
    let server = Server::start(&["--nodes", "0"]);
    let data_dir = server.admin_args()[1].clone();
    let token =
        std::fs::read_to_string(std::path::Path::new(&data_dir).join("cluster-token")).unwrap();
    let url = format!(
        "http://127.0.0.1:{}{}",
        server.port,
        cpfs_proto::heartbeat::CHUNK_LAYOUTS_PATH
    );
    let ask = |token: &str, inodes: Vec<u64>| {
        let body = serde_json::json!({"fs": "cpfs-0000000000000000", "inodes": inodes});
        match ureq::post(&url)
            .set(cpfs_proto::heartbeat::TOKEN_HEADER, token)
            .send_json(body)
        {
            Ok(r) => (r.status(), r.into_json::<serde_json::Value>().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or_default()),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(ask("wrong", vec![1]).0, 401);
    let (status, v) = ask(token.trim(), vec![1, 2, 3]);
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["chains"],
        serde_json::json!({}),
        "no such file system: nothing known"
    );
    let too_many: Vec<u64> = (0..=cpfs_proto::heartbeat::MAX_LAYOUT_INODES as u64).collect();
    assert_eq!(ask(token.trim(), too_many).0, 400);
}
