//! Issue 14, the gateway parts of finding 9 against the real `cpfs serve`:
//! only signed inputs choose the action, unauthenticated callers cost no
//! query each, gateway errors of BssOpenApi calls keep the BSS envelope,
//! and /metrics is for the operator.

mod common;

use std::path::PathBuf;

use common::{Client, Server};
use serde_json::Value;

fn data_dir(server: &Server) -> PathBuf {
    server.dir.join("data")
}

/// A V1 signature covers the parameters, not the headers: an action named
/// only in `x-acs-action` is refused, not executed.
#[test]
fn a_v1_call_naming_its_action_only_in_unsigned_headers_is_refused() {
    let server = Server::start(&[]);
    let c = server.client();
    let mut params: Vec<(String, String)> = c
        .common("DescribeRegions")
        .into_iter()
        .filter(|(k, _)| k != "Action" && k != "Version")
        .collect();
    c.sign("GET", &mut params);
    let query: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter())
        .finish();
    let reply = ureq::get(&format!("http://127.0.0.1:{}/?{query}", server.port))
        .set("x-acs-action", "DescribeRegions")
        .set("x-acs-version", "2017-06-26")
        .call();
    let (status, body) = match reply {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
        Err(e) => panic!("{e}"),
    };
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, v["Code"].as_str()),
        (400, Some("MissingParameter")),
        "{v}"
    );
}

/// Errors the gateway raises before a BssOpenApi handler runs come in the
/// BSS envelope, with `Success`.
#[test]
fn bss_calls_refused_by_the_gateway_answer_in_the_bss_envelope() {
    let server = Server::start(&[]);
    let c = server.client();
    for (name, value) in [("Format", "YAML"), ("Timestamp", "yesterday")] {
        let mut params: Vec<(String, String)> = c
            .common("QueryBillOverview")
            .into_iter()
            .map(|(k, v)| match k.as_str() {
                "Version" => (k, "2017-12-14".to_string()),
                k2 if k2 == name => (k, value.to_string()),
                _ => (k, v),
            })
            .collect();
        params.push(("BillingCycle".into(), "2026-10".into()));
        c.sign("GET", &mut params);
        let (status, body) = c.send(&params);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status, 400, "{name}: {v}");
        assert_eq!(v["Success"], false, "{name}: {v}");
        for field in ["RequestId", "Code", "Message"] {
            assert!(v[field].is_string(), "{name}: {field} missing: {v}");
        }
    }
}

fn get_metrics(server: &Server, token: Option<&str>) -> (u16, String) {
    let mut req = ureq::get(&format!("http://127.0.0.1:{}/metrics", server.port));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    match req.call() {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
        Err(e) => panic!("{e}"),
    }
}

fn admin_token(server: &Server) -> String {
    std::fs::read_to_string(data_dir(server).join("admin-token"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn metrics_need_the_admin_token() {
    let server = Server::start(&[]);
    server.client().ok("DescribeRegions", &[]);
    let (status, body) = get_metrics(&server, None);
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains("cpfs_api_requests_total"));
    assert_eq!(get_metrics(&server, Some("not-the-token")).0, 401);
    let (status, body) = get_metrics(&server, Some(&admin_token(&server)));
    assert_eq!(status, 200);
    assert!(
        body.contains("cpfs_api_requests_total{action=\"DescribeRegions\",code=\"OK\"}"),
        "{body}"
    );
}

fn access_key_queries(server: &Server) -> u64 {
    let (status, body) = get_metrics(server, Some(&admin_token(server)));
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix("cpfs_api_access_key_queries_total "))
        .unwrap_or_else(|| panic!("no key query counter: {body}"))
        .trim()
        .parse()
        .unwrap()
}

/// Random access key ids do not each cost a database query: the set of
/// existing ids answers them, reloaded at most once a second.
#[test]
fn unknown_access_key_ids_do_not_each_cost_a_query() {
    let server = Server::start(&[]);
    server.client().ok("DescribeRegions", &[]);
    let before = access_key_queries(&server);
    let started = std::time::Instant::now();
    let tries = 60;
    for _ in 0..tries {
        let id = format!("LTAI{}", uuid::Uuid::new_v4().simple());
        Client::new(server.port, &id, "whatever-secret").err(
            "DescribeRegions",
            &[],
            "InvalidAccessKeyId.NotFound",
        );
    }
    let spent = access_key_queries(&server) - before;
    // One reload per started second at most, whatever the number of ids.
    let bound = started.elapsed().as_secs() + 1;
    assert!(
        spent <= bound,
        "{spent} queries for {tries} unknown ids (bound {bound})"
    );
}

/// The set of existing ids never refuses a key just created: an unknown id
/// loads the set, a new account's key works on its very next call.
#[test]
fn a_key_created_right_after_an_unknown_one_works_at_once() {
    let server = Server::start(&[]);
    Client::new(server.port, "LTAI-not-there", "whatever-secret").err(
        "DescribeRegions",
        &[],
        "InvalidAccessKeyId.NotFound",
    );
    let created = server.operator(&["account", "create", "newcomer"]);
    Client::new(
        server.port,
        created["AccessKeyId"].as_str().unwrap(),
        created["AccessKeySecret"].as_str().unwrap(),
    )
    .ok("DescribeRegions", &[]);
}
