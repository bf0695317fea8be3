//! Operator commands (`cpfs account|node|billing`) go through the running
//! server's admin API, authenticated by the admin token, and never open the
//! database themselves.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::Server;

fn cpfs(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cpfs"))
        .args(args)
        .output()
        .expect("running cpfs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn data_dir(server: &Server) -> String {
    server.admin_args()[1].clone()
}

#[test]
fn operator_commands_use_the_admin_api_with_its_token() {
    let mut server = Server::start(&[]);
    let dir = data_dir(&server);
    let token_file = std::path::Path::new(&dir).join("admin-token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the admin token is readable by others");
    let token = std::fs::read_to_string(&token_file).unwrap();
    let cluster =
        std::fs::read_to_string(std::path::Path::new(&dir).join("cluster-token")).unwrap();
    assert_ne!(
        token.trim(),
        cluster.trim(),
        "nodes must not hold the admin token"
    );

    // The data directory is enough on the server's machine.
    let (ok, out, err) = cpfs(&["account", "create", "ops", "--data-dir", &dir]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["AccessKeyId"].is_string() && v["AccessKeySecret"].is_string(),
        "{v}"
    );

    // Or an endpoint and a token from anywhere; a wrong token is refused.
    let endpoint = format!("http://127.0.0.1:{}", server.port);
    let (ok, out, err) = cpfs(&[
        "node",
        "list",
        "--endpoint",
        &endpoint,
        "--admin-token",
        token.trim(),
    ]);
    assert!(ok, "{err}");
    assert!(serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .is_array());
    let (ok, _, err) = cpfs(&[
        "node",
        "list",
        "--endpoint",
        &endpoint,
        "--admin-token",
        "wrong",
    ]);
    assert!(!ok);
    assert!(err.contains("Unauthorized"), "{err}");

    // Bad input is a clear error, not a 500.
    let (ok, _, err) = cpfs(&["account", "create", "no spaces/allowed", "--data-dir", &dir]);
    assert!(!ok);
    assert!(err.contains("InvalidParameter"), "{err}");
    let (ok, _, err) = cpfs(&[
        "node",
        "drain",
        "no-such-node",
        "--no-wait",
        "--data-dir",
        &dir,
    ]);
    assert!(!ok);
    assert!(
        err.contains("InvalidParameter") || err.contains("NotFound"),
        "{err}"
    );

    // With the server gone the command says so, and creates no database.
    server.kill9();
    let db = std::path::Path::new(&dir).join("cpfs.db");
    let before = std::fs::metadata(&db).ok().map(|m| m.len());
    let (ok, _, err) = cpfs(&["account", "create", "late", "--data-dir", &dir]);
    assert!(!ok);
    assert!(err.contains("cannot reach the server"), "{err}");
    assert_eq!(std::fs::metadata(&db).ok().map(|m| m.len()), before);
}

/// The token is checked before anything is spent: a request without it
/// is refused however large its body, and with it a malformed body is a
/// 400 naming the problem.
#[test]
fn the_admin_api_authenticates_before_reading_the_body() {
    let server = Server::start(&[]);
    let dir = data_dir(&server);
    let token = std::fs::read_to_string(std::path::Path::new(&dir).join("admin-token")).unwrap();
    let url = format!("http://127.0.0.1:{}/admin/v1/accounts", server.port);

    let big = vec![b'x'; 8 << 20];
    let r = ureq::post(&url).send_bytes(&big);
    match r {
        Err(ureq::Error::Status(code, resp)) => {
            assert_eq!(code, 401);
            let v: serde_json::Value = resp.into_json().unwrap();
            assert_eq!(v["Code"], "Unauthorized");
        }
        // The server may answer and close before the client has sent it all.
        Err(ureq::Error::Transport(_)) => {}
        Ok(r) => panic!("accepted without a token: {}", r.status()),
    }
    let r = ureq::get(&format!("http://127.0.0.1:{}/admin/v1/nodes", server.port))
        .set("Authorization", "Bearer ")
        .call();
    assert!(
        matches!(r, Err(ureq::Error::Status(401, _))),
        "an empty token passed"
    );

    let r = ureq::post(&url)
        .set("Authorization", &format!("Bearer {}", token.trim()))
        .send_string("{not json");
    match r {
        Err(ureq::Error::Status(400, resp)) => {
            let v: serde_json::Value = resp.into_json().unwrap();
            assert_eq!(v["Code"], "InvalidParameter", "{v}");
        }
        other => panic!("malformed body: {other:?}"),
    }
}

/// A machine without the FUSE mount helper gets told what is missing and
/// which package has it, before anything is contacted.
#[test]
fn mount_names_the_missing_fusermount3_and_its_package() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cpfs"))
        .args(["mount", "fs.example", dir.path().to_str().unwrap()])
        // No helper on this PATH; the control plane is never reached
        // (nothing listens on port 9), so only the check can answer.
        .env("PATH", dir.path())
        .env("CPFS_CONTROLPLANE", "http://127.0.0.1:9")
        .output()
        .expect("running cpfs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("fusermount3"), "{stderr}");
    assert!(stderr.contains("apt install fuse3"), "{stderr}");
}

/// `cpfs fileset create | list | quota | delete`: the operator's view of a
/// file system's filesets, with sizes in binary units and clear errors.
#[test]
fn the_fileset_commands_create_list_limit_and_release() {
    let server = Server::start(&["--fileset-min-size-limit", "1048576"]);
    let dir = data_dir(&server);
    let fs = server.client().create_fs("2048");
    server.client().wait_running(&fs);

    let (ok, out, err) = cpfs(&[
        "fileset",
        "create",
        &fs,
        "/team-a/",
        "--size-limit",
        "5M",
        "--data-dir",
        &dir,
    ]);
    assert!(ok, "{err}");
    let id = out.trim().to_string();
    assert!(id.starts_with("fset-"), "{out}");

    // Waited for: the table shows it CREATED with its limit.
    let (ok, out, err) = cpfs(&["fileset", "list", &fs, "--data-dir", &dir]);
    assert!(ok, "{err}");
    let row = out.lines().find(|l| l.starts_with(&id)).expect(&out);
    assert!(
        row.contains("/team-a/") && row.contains("CREATED") && row.contains("5.0M"),
        "{out}"
    );
    assert!(out.starts_with("FSET ID"), "{out}");

    let (ok, out, err) = cpfs(&[
        "fileset",
        "quota",
        &fs,
        &id,
        "--file-count-limit",
        "20000",
        "--data-dir",
        &dir,
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("20000"), "{out}");
    let (ok, out, err) = cpfs(&["fileset", "list", &fs, "--json", "--data-dir", &dir]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["SizeLimit"], 5 << 20, "{v}");
    assert_eq!(v[0]["FileCountLimit"], 20000, "{v}");

    // Clear errors: a bad size, nothing to set, a path that nests.
    let (ok, _, err) = cpfs(&[
        "fileset",
        "create",
        &fs,
        "/b/",
        "--size-limit",
        "lots",
        "--data-dir",
        &dir,
    ]);
    assert!(!ok && err.contains("not a size"), "{err}");
    let (ok, _, err) = cpfs(&["fileset", "quota", &fs, &id, "--data-dir", &dir]);
    assert!(!ok && err.contains("--size-limit"), "{err}");
    let (ok, _, err) = cpfs(&[
        "fileset",
        "create",
        &fs,
        "/team-a/x/",
        "--no-wait",
        "--data-dir",
        &dir,
    ]);
    assert!(!ok && err.contains("nest"), "{err}");
    let (ok, _, err) = cpfs(&[
        "fileset",
        "list",
        "cpfs-0000000000000000",
        "--data-dir",
        &dir,
    ]);
    assert!(!ok && err.contains("NotFound"), "{err}");

    let (ok, _, err) = cpfs(&["fileset", "quota", &fs, &id, "--cancel", "--data-dir", &dir]);
    assert!(ok, "{err}");
    let (ok, _, err) = cpfs(&["fileset", "delete", &fs, &id, "--data-dir", &dir]);
    assert!(ok && err.contains("data stay"), "{err}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, out, _) = cpfs(&["fileset", "list", &fs, "--json", "--data-dir", &dir]);
        if out.trim() == "[]" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never released: {out}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `cpfs quota set | list | cancel`: user and group quotas from the
/// operator's side.
#[test]
fn the_quota_commands_set_list_and_cancel() {
    let server = Server::start(&[]);
    let dir = data_dir(&server);
    let fs = server.client().create_fs("2048");
    server.client().wait_running(&fs);

    let (ok, out, err) = cpfs(&[
        "quota",
        "set",
        &fs,
        "--uid",
        "1000",
        "--size-limit",
        "10G",
        "--file-count-limit",
        "5000",
        "--data-dir",
        &dir,
    ]);
    assert!(ok, "{err}");
    let row = out.lines().nth(1).unwrap_or_default();
    assert!(
        row.starts_with("Uid") && row.contains("10.0G") && row.contains("5000"),
        "{out}"
    );
    let (ok, _, err) = cpfs(&[
        "quota",
        "set",
        &fs,
        "--gid",
        "100",
        "--file-count-limit",
        "9",
        "--data-dir",
        &dir,
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = cpfs(&["quota", "list", &fs, "--json", "--data-dir", &dir]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{v}");
    assert_eq!(v[1]["UserType"], "Gid", "{v}");
    assert_eq!(v[1]["FileCountLimit"], 9, "{v}");

    // Clear errors: neither --uid nor --gid, both, nothing to set.
    let (ok, _, err) = cpfs(&[
        "quota",
        "set",
        &fs,
        "--size-limit",
        "1G",
        "--data-dir",
        &dir,
    ]);
    assert!(!ok && err.contains("--uid"), "{err}");
    let (ok, _, err) = cpfs(&[
        "quota",
        "set",
        &fs,
        "--uid",
        "1",
        "--gid",
        "1",
        "--size-limit",
        "1G",
        "--data-dir",
        &dir,
    ]);
    assert!(!ok && err.contains("cannot be used with"), "{err}");
    let (ok, _, err) = cpfs(&["quota", "set", &fs, "--uid", "1", "--data-dir", &dir]);
    assert!(!ok && err.contains("--size-limit"), "{err}");

    let (ok, _, err) = cpfs(&["quota", "cancel", &fs, "--gid", "100", "--data-dir", &dir]);
    assert!(ok, "{err}");
    let (ok, _, err) = cpfs(&["quota", "cancel", &fs, "--gid", "100", "--data-dir", &dir]);
    assert!(!ok && err.contains("NotFound"), "{err}");
    let (_, out, _) = cpfs(&["quota", "list", &fs, "--data-dir", &dir]);
    assert_eq!(out.lines().count(), 2, "{out}");
}

/// `cpfs client fence | list | unfence`: fencing from the operator's side
/// (the fence itself under a writer is tests/dataplane/test_fencing.py).
#[test]
fn the_client_commands_fence_list_and_unfence() {
    let server = Server::start(&[]);
    let dir = data_dir(&server);
    let fs = server.client().create_fs("2048");
    server.client().wait_running(&fs);

    let (ok, out, err) = cpfs(&["client", "fence", &fs, "10.0.0.7", "--data-dir", &dir]);
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        "10.0.0.7 EVICTED",
        "waited for the fence to hold"
    );
    let (ok, out, err) = cpfs(&["client", "list", &fs, "--data-dir", &dir]);
    assert!(ok, "{err}");
    assert!(out.starts_with("CLIENT"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("10.0.0.7") && l.contains("EVICTED")),
        "{out}"
    );
    let (ok, _, err) = cpfs(&["client", "fence", &fs, "10.0.0.300", "--data-dir", &dir]);
    assert!(!ok && err.contains("ClientIP"), "{err}");
    let (ok, out, err) = cpfs(&["client", "unfence", &fs, "10.0.0.7", "--data-dir", &dir]);
    assert!(ok && out.contains("ACCEPTABLE"), "{err}");
    let (ok, out, _) = cpfs(&["client", "list", &fs, "--json", "--data-dir", &dir]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Fenced"], serde_json::json!([]), "{v}");
    let (ok, _, err) = cpfs(&["client", "unfence", &fs, "10.0.0.7", "--data-dir", &dir]);
    assert!(!ok && err.contains("NotFound"), "{err}");
}
