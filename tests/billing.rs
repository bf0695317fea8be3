//! Billing through the real binary: BssOpenApi routing by Version on the
//! gateway, the BSS envelope and error shape, and the operator commands
//! (`cpfs billing meter|report|renew`) on a clock file.

mod common;

use std::process::Command;

use common::Server;
use serde_json::Value;

/// 2026-10-05T10:20:00Z
const T0: i64 = 1_791_195_600;
const DAY: i64 = 86_400;

fn bss(client: &common::Client, action: &str, params: &[(&str, &str)]) -> (u16, Value) {
    let mut all = client.common(action);
    for p in all.iter_mut() {
        if p.0 == "Version" {
            p.1 = "2017-12-14".into();
        }
    }
    all.extend(params.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    client.sign("GET", &mut all);
    let (status, body) = client.send(&all);
    (status, serde_json::from_str(&body).unwrap())
}

fn cli(server: &Server, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cpfs"))
        .args(args)
        .args(server.admin_args())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bss_on_the_gateway_and_the_operator_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = tmp.path().join("clock");
    std::fs::write(&clock, T0.to_string()).unwrap();
    let clock_arg = clock.display().to_string();
    let server = Server::start(&[
        "--clock-file",
        &clock_arg,
        "--retention-days",
        "1",
        "--billing-interval",
        "3600",
    ]);
    let c = server.client();

    // Routed by Version: the BSS envelope, empty lists present.
    let (status, v) = bss(&c, "QueryBillOverview", &[("BillingCycle", "2026-10")]);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["Success"], true);
    assert_eq!(v["Code"], "Success");
    assert_eq!(v["Data"]["Items"]["Item"], serde_json::json!([]));
    let (status, v) = bss(&c, "QueryBill", &[]);
    assert_eq!((status, v["Success"].clone()), (400, Value::Bool(false)));
    assert_eq!(v["Code"], "MissingParameter");
    assert!(v["RequestId"].is_string());
    // Errors the gateway raises before any BSS handler (a bad Format, a
    // repeated parameter) come in the BSS envelope too: Success is required
    // there (openapi/bssopenapi.json).
    for extra in [("Format", "YAML"), ("BillingCycle", "2026-10")] {
        let mut all = c.common("QueryBill");
        for p in all.iter_mut() {
            match p.0.as_str() {
                "Version" => p.1 = "2017-12-14".into(),
                "Format" if extra.0 == "Format" => p.1 = extra.1.into(),
                _ => {}
            }
        }
        all.push(("BillingCycle".into(), "2026-10".into()));
        if extra.0 != "Format" {
            all.push((extra.0.into(), extra.1.into()));
        }
        c.sign("GET", &mut all);
        let (status, body) = c.send(&all);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status, 400, "{extra:?}: {v}");
        assert_eq!(v["Success"], false, "{extra:?}: {v}");
        assert!(v["Code"].is_string() && v["RequestId"].is_string(), "{v}");
    }
    let (status, v) = bss(&c, "DescribeFileSystems", &[]);
    assert_eq!(
        (status, v["Code"].as_str()),
        (404, Some("InvalidApi.NotFound"))
    );
    assert_eq!(
        c.err(
            "QueryBill",
            &[("BillingCycle", "2026-10")],
            "InvalidApi.NotFound"
        ),
        404
    );

    // A subscription: created (the order is dated now), business time from
    // the clock file even though the SDK signs with the real time.
    let fs = c.ok(
        "CreateFileSystem",
        &[
            ("FileSystemType", "cpfs"),
            ("ProtocolType", "cpfs"),
            ("StorageType", "advance_100"),
            ("Capacity", "2048"),
            ("ZoneId", "cn-hangzhou-b"),
            ("VpcId", "vpc-test"),
            ("VSwitchId", "vsw-test"),
            ("ChargeType", "Subscription"),
            ("Duration", "1"),
        ],
    )["FileSystemId"]
        .as_str()
        .unwrap()
        .to_string();
    let f = c.wait_running(&fs);
    assert_eq!(f["CreateTime"], "2026-10-05T10:20:00Z");
    assert_eq!(f["ExpiredTime"], "2026-11-05T10:20:00Z");

    let (ok, _, err) = cli(
        &server,
        &["billing", "meter", "--through", "2026-12-01T00:00:00Z"],
    );
    assert!(!ok && err.contains("future"), "{err}");
    let (ok, out, err) = cli(&server, &["billing", "meter"]);
    assert!(ok, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["orders_charged"], 1);
    let (_, out, _) = cli(&server, &["billing", "meter"]);
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["orders_charged"], 0, "an order is charged once");

    // Expired: stopped (mounts are refused while not Running), data kept.
    std::fs::write(&clock, (T0 + 31 * DAY + 120).to_string()).unwrap();
    let (ok, out, err) = cli(&server, &["billing", "meter"]);
    assert!(ok, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["stopped"], serde_json::json!([fs]));
    assert_eq!(c.describe_fs(&fs).unwrap()["Status"], "Stopped");
    // The operator renews it: running again, charged as a renewal.
    let (ok, out, err) = cli(&server, &["billing", "renew", &fs, "--months", "1"]);
    assert!(ok, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["Resumed"], true);
    assert_eq!(c.describe_fs(&fs).unwrap()["Status"], "Running");

    // Statements: the purchase in October, the renewal in November; the
    // JSON and CSV totals agree with QueryBill.
    for (month, item_code) in [("2026-10", "subscription"), ("2026-11", "renewal")] {
        let (ok, out, err) = cli(&server, &["billing", "report", "--month", month]);
        assert!(ok, "{err}");
        let rep: Value = serde_json::from_str(&out).unwrap();
        let lines = &rep["Accounts"][0]["Instances"][0]["Lines"];
        assert_eq!(lines.as_array().unwrap().len(), 1, "{rep}");
        assert_eq!(lines[0]["BillingItemCode"], item_code);
        let (_, v) = bss(&c, "QueryBill", &[("BillingCycle", month)]);
        let items = v["Data"]["Items"]["Item"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{v}");
        let sdk = format!("{:.4}", items[0]["PretaxAmount"].as_f64().unwrap());
        assert_eq!(sdk, rep["PretaxAmount"].as_str().unwrap());
        let (ok, csv, _) = cli(
            &server,
            &["billing", "report", "--month", month, "--format", "csv"],
        );
        assert!(ok);
        let rows: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
        assert_eq!(rows[0][0], "row");
        assert_eq!(rows.last().unwrap()[0], "total");
        assert_eq!(rows.last().unwrap().last().unwrap(), &sdk);
        assert!(rows.iter().all(|r| r.len() == rows[0].len()));
    }
}
