//! The billing scenarios of the issue, in-process with a manual clock, on
//! SQLite and (when `CPFS_TEST_DATABASE_URL` is set) PostgreSQL. Expected
//! amounts are computed here from the test's price book with plain
//! integer arithmetic, independently of the billing crate's formulas.

use std::process::Command;
use std::sync::Arc;

use cpfs_billing::bills::{load_items, BillItem, ItemFilter};
use cpfs_billing::{Billing, Money, PriceBook};
use cpfs_controlplane::filesystems::{ChargeType, NewFileSystem};
use cpfs_controlplane::tiers::StorageType;
use cpfs_controlplane::{ControlPlane, ManualClock, RegionConfig, Store};
use sqlx::Row;

/// Round numbers so the expectations are easy to follow: capacity 0.72
/// per GiB-month is 0.001 per GiB-hour; bandwidth 0.01 per MB/s-hour.
const BOOK: &str = r#"
currency = "USD"
[editions.advance_100]
capacity_gib_month = "0.72"
bandwidth_mbps_hour = "0.01"
subscription_gib_month = "0.6"
subscription_mbps_month = "2.5"
[editions.advance_200]
capacity_gib_month = "1"
bandwidth_mbps_hour = "0.01"
subscription_gib_month = "1"
subscription_mbps_month = "1"
[editions.economic]
capacity_gib_month = "1"
bandwidth_mbps_hour = "0.01"
subscription_gib_month = "1"
subscription_mbps_month = "1"
[editions.standard]
capacity_gib_month = "1"
bandwidth_mbps_hour = "0.01"
subscription_gib_month = "1"
subscription_mbps_month = "1"
[editions.advance]
capacity_gib_month = "1"
bandwidth_mbps_hour = "0.01"
subscription_gib_month = "1"
subscription_mbps_month = "1"
[subscription_discounts]
12 = "0.15"
[resource_plan]
gib_month = "0.5"
"#;

const H: i64 = 3600;
const DAY: i64 = 86_400;
/// 2026-10-05T00:00:00Z
const OCT5: i64 = 1_791_158_400;
/// 2026-10-01T00:00:00Z
const OCT1: i64 = OCT5 - 4 * DAY;
/// 2026-11-01T00:00:00Z
const NOV1: i64 = OCT1 + 31 * DAY;

struct Env {
    name: String,
    cp: ControlPlane,
    clock: Arc<ManualClock>,
    billing: Billing,
    _tmp: Option<tempfile::TempDir>,
}

async fn backends(start: i64) -> Vec<Env> {
    let mut urls = Vec::new();
    let tmp = tempfile::tempdir().unwrap();
    urls.push((
        "sqlite".to_string(),
        format!("sqlite://{}", tmp.path().join("b.db").display()),
    ));
    match std::env::var("CPFS_TEST_DATABASE_URL") {
        Ok(base) if !base.is_empty() => {
            let name = format!("cpfs_bill_{}", uuid::Uuid::new_v4().simple());
            let ok = Command::new("psql")
                .arg(&base)
                .arg("-qc")
                .arg(format!("CREATE DATABASE {name}"))
                .status()
                .unwrap();
            assert!(ok.success());
            urls.push((
                "postgres".to_string(),
                format!("{}/{name}", base.rsplit_once('/').unwrap().0),
            ));
        }
        _ => assert!(
            std::env::var("CPFS_REQUIRE_POSTGRES").is_err(),
            "CPFS_REQUIRE_POSTGRES is set but CPFS_TEST_DATABASE_URL is not"
        ),
    }
    let mut out = Vec::new();
    let mut tmp = Some(tmp);
    for (name, url) in urls {
        let clock = Arc::new(ManualClock::at(start));
        let store = Store::open(&url).await.unwrap();
        let cp = ControlPlane::new(store, clock.clone(), RegionConfig::default());
        let billing = Billing::new(cp.clone(), Arc::new(PriceBook::parse(BOOK).unwrap()), DAY);
        out.push(Env {
            name,
            cp,
            clock,
            billing,
            _tmp: tmp.take(),
        });
    }
    out
}

fn new_fs(capacity: i64, charge: ChargeType, months: Option<u32>) -> NewFileSystem {
    NewFileSystem {
        fs_type: "cpfs".into(),
        protocol_type: "cpfs".into(),
        storage_type: StorageType::Advance100,
        storage_type_name: "advance_100".into(),
        capacity_gib: capacity,
        bandwidth_mbps: None,
        charge_type: charge,
        duration_months: months,
        zone_id: None,
        vpc_id: "vpc-1".into(),
        vswitch_id: "vsw-1".into(),
        description: "billing-test".into(),
        encrypt_type: 0,
        tags: vec![],
        dry_run: false,
        client_token: None,
    }
}

/// What the reconciler would do once placement is done.
async fn mark_running(cp: &ControlPlane, id: &str) {
    sqlx::query("UPDATE file_systems SET status = 'Running' WHERE id = $1")
        .bind(id)
        .execute(&cp.store.pool)
        .await
        .unwrap();
}

async fn status(cp: &ControlPlane, id: &str) -> Option<String> {
    sqlx::query("SELECT status FROM file_systems WHERE id = $1")
        .bind(id)
        .fetch_optional(&cp.store.pool)
        .await
        .unwrap()
        .map(|r| r.try_get("status").unwrap())
}

async fn items(cp: &ControlPlane, account: &str, cycle: &str) -> Vec<BillItem> {
    load_items(cp, Some(account), cycle, &ItemFilter::default())
        .await
        .unwrap()
}

/// `quantity * price_num / price_den` currency units in 1/10000, rounded
/// half up (all amounts here are positive).
fn amount(quantity: i128, price_num: i128, price_den: i128) -> Money {
    let n = quantity * price_num * 10_000;
    Money(((2 * n + price_den) / (2 * price_den)) as i64)
}

/// Capacity at 0.72 per GiB-month = 72/100 per (GiB x 2,592,000 s).
fn capacity_amount(gib_seconds: i64) -> Money {
    amount(gib_seconds as i128, 72, 100 * 2_592_000)
}

/// Bandwidth at 0.01 per MB/s-hour.
fn bandwidth_amount(mbps_seconds: i64) -> Money {
    amount(mbps_seconds as i128, 1, 100 * 3600)
}

#[tokio::test]
async fn payg_created_upgraded_and_deleted_is_billed_hour_by_hour() {
    let created = OCT5 + 10 * H + 20 * 60;
    let upgraded = OCT5 + 15 * H + 40 * 60;
    let deleted = created + 2 * DAY;
    for env in backends(created).await {
        let cp = &env.cp;
        let acct = cp.create_account("payg", None).await.unwrap().account_id;
        let id = cp
            .create_file_system(&acct, new_fs(2048, ChargeType::PayAsYouGo, None))
            .await
            .unwrap();
        mark_running(cp, &id).await;
        env.clock.set(upgraded);
        cp.upgrade_file_system(&acct, &id, 5120, None, false, None)
            .await
            .unwrap();
        mark_running(cp, &id).await;
        env.clock.set(deleted);
        cp.delete_file_system(&acct, &id).await.unwrap();
        env.clock.set(OCT5 + 3 * DAY);
        let r = env.billing.pass(OCT5 + 3 * DAY).await.unwrap();
        // 10:00 on the 5th up to and including the 10:00 hour of the 7th.
        assert_eq!(r.hours_metered, 49, "{}", env.name);
        assert_eq!(r.orders_charged, 0, "{}", env.name);

        // advance_100: bandwidth is 100 MB/s per TiB: 200 then 500.
        let mut expected: Vec<(i64, &str, Money)> = Vec::new();
        for k in 0..49 {
            let h0 = OCT5 + 10 * H + k * H;
            let h1 = h0 + H;
            let mut gib_s = 0;
            let mut mbps_s = 0;
            for (from, to, cap, bw) in [
                (created, upgraded, 2048, 200),
                (upgraded, deleted, 5120, 500),
            ] {
                let overlap = (to.min(h1) - from.max(h0)).max(0);
                gib_s += cap * overlap;
                mbps_s += bw * overlap;
            }
            expected.push((h0, "size", capacity_amount(gib_s)));
            expected.push((h0, "bandwidth", bandwidth_amount(mbps_s)));
        }
        let got = items(cp, &acct, "2026-10").await;
        let mut got_rows: Vec<(i64, &str, Money)> = got
            .iter()
            .map(|i| (i.usage_start, i.item_code.as_str(), i.amount))
            .collect();
        got_rows.sort();
        expected.sort();
        assert_eq!(got_rows, expected, "{}", env.name);
        // Spot checks written out by hand: the creation hour (40 minutes of
        // 2048 GiB) and the upgrade hour (40 min of 2048 + 20 min of 5120).
        let at = |h: i64, code: &str| {
            got.iter()
                .find(|i| i.usage_start == h && i.item_code == code)
                .unwrap()
                .clone()
        };
        assert_eq!(at(OCT5 + 10 * H, "size").amount, Money(13_653)); // 1.3653
        assert_eq!(at(OCT5 + 10 * H, "size").usage_amount, "1365.3333");
        assert_eq!(at(OCT5 + 15 * H, "size").amount, Money(30_720)); // 3.072
        assert_eq!(at(OCT5 + 15 * H, "bandwidth").amount, Money(30_000)); // 3.0
        assert_eq!(at(OCT5 + 16 * H, "size").amount, Money(51_200)); // 5.12
        assert_eq!(at(OCT5 + 2 * DAY + 10 * H, "size").amount, Money(17_067)); // 20 min of 5120
        assert!(got
            .iter()
            .all(|i| i.bill_type == "PayAsYouGoBill" && i.currency == "USD"));

        // Metering again bills nothing new; the file system is finished.
        let again = env.billing.pass(OCT5 + 10 * DAY).await.unwrap();
        assert_eq!(again.hours_metered, 0, "{}", env.name);
        assert_eq!(items(cp, &acct, "2026-10").await.len(), 98, "{}", env.name);
    }
}

#[tokio::test]
async fn subscription_is_charged_once_expires_stops_and_is_released() {
    for env in backends(OCT1).await {
        let cp = &env.cp;
        let acct = cp.create_account("sub", None).await.unwrap().account_id;
        let id = cp
            .create_file_system(&acct, new_fs(2048, ChargeType::Subscription, Some(1)))
            .await
            .unwrap();
        mark_running(cp, &id).await;
        // A second one, renewed before it expires, keeps running.
        let kept = cp
            .create_file_system(&acct, new_fs(2048, ChargeType::Subscription, Some(1)))
            .await
            .unwrap();
        mark_running(cp, &kept).await;

        env.clock.set(OCT1 + 15 * DAY);
        env.billing.pass(OCT1 + 15 * DAY).await.unwrap();
        // Upgrade half-way: the difference for the 16 days left is charged.
        cp.upgrade_file_system(&acct, &id, 5120, None, false, None)
            .await
            .unwrap();
        mark_running(cp, &id).await;
        let renewal = cp.renew_file_system(&acct, &kept, 12, None).await.unwrap();
        assert_eq!(renewal.expired_at, NOV1 + 365 * DAY);

        env.clock.set(NOV1 + 30 * 60);
        let r = env.billing.pass(NOV1 + 30 * 60).await.unwrap();
        assert_eq!(r.stopped, vec![id.clone()], "{}", env.name);
        assert_eq!(status(cp, &id).await.as_deref(), Some("Stopped"));
        assert_eq!(status(cp, &kept).await.as_deref(), Some("Running"));
        // An upgrade is refused while stopped (data kept, nothing moves).
        assert!(cp
            .upgrade_file_system(&acct, &id, 10240, None, false, None)
            .await
            .is_err());

        // Retention is one day here: released at expiry + 1 day.
        env.clock.set(NOV1 + DAY - 1);
        assert!(env
            .billing
            .pass(NOV1 + DAY - 1)
            .await
            .unwrap()
            .released
            .is_empty());
        env.clock.set(NOV1 + DAY + 60);
        let r = env.billing.pass(NOV1 + DAY + 60).await.unwrap();
        assert_eq!(r.released, vec![id.clone()], "{}", env.name);
        assert_eq!(status(cp, &id).await.as_deref(), Some("Deleting"));
        let events = cp.fs_events(&id).await.unwrap();
        let kinds: Vec<(&str, i64)> = events.iter().map(|e| (e.kind.as_str(), e.at)).collect();
        assert_eq!(
            kinds,
            vec![
                ("create", OCT1),
                ("upgrade", OCT1 + 15 * DAY),
                ("stop", NOV1),
                ("delete", NOV1 + DAY)
            ]
        );

        let oct = items(cp, &acct, "2026-10").await;
        let mine: Vec<&BillItem> = oct.iter().filter(|i| i.instance_id == id).collect();
        // One purchase and one upgrade; no hourly lines for a subscription.
        assert_eq!(mine.len(), 2, "{}: {mine:?}", env.name);
        let purchase = mine.iter().find(|i| i.item_code == "subscription").unwrap();
        // (2048 x 0.6 + 200 x 2.5) x 1 month = 1728.8
        assert_eq!(purchase.amount, Money(17_288_000));
        assert_eq!(purchase.bill_type, "SubscriptionOrder");
        let upgrade = mine.iter().find(|i| i.item_code == "upgrade").unwrap();
        // (3072 x 0.6 + 300 x 2.5) x 16 days / 30 days = 1383.04
        assert_eq!(upgrade.amount, Money(13_830_400));
        let renew = oct
            .iter()
            .find(|i| i.instance_id == kept && i.item_code == "renewal")
            .unwrap();
        // 12 months at (1228.8 + 500) = 20745.6, 15% off: 17633.76.
        assert_eq!(renew.gross, Money(207_456_000));
        assert_eq!(renew.amount, Money(176_337_600));
        assert_eq!(renew.record_id, renewal.order_id());
        let nov = items(cp, &acct, "2026-11").await;
        assert!(nov.is_empty(), "{}: {nov:?}", env.name);

        // A renewal of a stopped file system resumes it.
        let third = cp
            .create_file_system(&acct, new_fs(2048, ChargeType::Subscription, Some(1)))
            .await
            .unwrap();
        mark_running(cp, &third).await;
        env.clock.set(NOV1 + 32 * DAY);
        env.billing.pass(NOV1 + 32 * DAY).await.unwrap();
        assert_eq!(status(cp, &third).await.as_deref(), Some("Stopped"));
        let r = cp.renew_file_system(&acct, &third, 1, None).await.unwrap();
        assert!(r.resumed);
        assert_eq!(status(cp, &third).await.as_deref(), Some("Running"));
    }
}

#[tokio::test]
async fn a_resource_plan_absorbs_usage_until_it_runs_out() {
    for env in backends(OCT1).await {
        let cp = &env.cp;
        let acct = cp.create_account("plan", None).await.unwrap().account_id;
        // 1000 GiB for one month = 720,000 GiB-hours; a 2048 GiB file
        // system uses it up in 351.5625 hours.
        let plan = env
            .billing
            .add_plan("plan", 1000, 1, None, "")
            .await
            .unwrap();
        assert_eq!(plan.total_gib_seconds, 720_000 * 3600);
        let id = cp
            .create_file_system(&acct, new_fs(2048, ChargeType::PayAsYouGo, None))
            .await
            .unwrap();
        env.clock.set(OCT1 + 20 * DAY);
        let r = env.billing.pass(OCT1 + 20 * DAY).await.unwrap();
        assert_eq!(r.hours_metered, 480);

        let all = items(cp, &acct, "2026-10").await;
        let purchase = all.iter().find(|i| i.item_code == "plan").unwrap();
        assert_eq!(purchase.amount, Money(5_000_000)); // 1000 x 0.5
        let full = capacity_amount(2048 * 3600); // 2.048
        for i in all.iter().filter(|i| i.item_code == "size") {
            let k = (i.usage_start - OCT1) / H;
            assert_eq!(i.gross, full);
            let (deducted, plan_id) = match k {
                0..=350 => (full, plan.id.as_str()),
                // 0.5625 of the hour: 4,147,200 GiB-seconds = 1.152
                351 => (capacity_amount(4_147_200), plan.id.as_str()),
                _ => (Money::ZERO, ""),
            };
            assert_eq!(i.deducted_by_plan, deducted, "{} hour {k}", env.name);
            assert_eq!(i.amount, full - deducted, "{} hour {k}", env.name);
            assert_eq!(i.plan_id, plan_id, "{} hour {k}", env.name);
        }
        assert_eq!(capacity_amount(4_147_200), Money(11_520));
        // Bandwidth is never offset by a capacity plan.
        assert!(all
            .iter()
            .filter(|i| i.item_code == "bandwidth")
            .all(|i| i.deducted_by_plan == Money::ZERO && i.amount == i.gross));
        let plans = env.billing.plans(Some(&acct)).await.unwrap();
        assert_eq!(plans[0].remaining_gib_seconds, 0);
        assert_eq!(plans[0].status(OCT1 + 20 * DAY), "Available");
        assert_eq!(plans[0].status(NOV1), "Expired");
        let _ = id;
    }
}

#[tokio::test]
async fn hours_missed_while_down_are_billed_exactly_once() {
    let t0 = OCT5 + 9 * H + 15 * 60;
    for env in backends(t0).await {
        let cp = &env.cp;
        let acct = cp.create_account("down", None).await.unwrap().account_id;
        let id = cp
            .create_file_system(&acct, new_fs(2048, ChargeType::PayAsYouGo, None))
            .await
            .unwrap();
        env.clock.set(OCT5 + 12 * H);
        assert_eq!(
            env.billing.pass(OCT5 + 12 * H).await.unwrap().hours_metered,
            3
        );
        // Down for five hours: nothing runs. Back up, two passes race (the
        // server's loop and an operator's backfill).
        env.clock.set(OCT5 + 17 * H + 30);
        let (a, b) = tokio::join!(
            env.billing.pass(OCT5 + 17 * H + 30),
            env.billing.pass(OCT5 + 17 * H + 30)
        );
        assert_eq!(
            a.unwrap().hours_metered + b.unwrap().hours_metered,
            5,
            "{}",
            env.name
        );
        assert_eq!(
            env.billing
                .pass(OCT5 + 17 * H + 30)
                .await
                .unwrap()
                .hours_metered,
            0
        );
        let rows = sqlx::query("SELECT hour FROM usage_hours WHERE fs_id = $1 ORDER BY hour")
            .bind(&id)
            .fetch_all(&cp.store.pool)
            .await
            .unwrap();
        let hours: Vec<i64> = rows.iter().map(|r| r.try_get("hour").unwrap()).collect();
        assert_eq!(hours, (9..17).map(|h| OCT5 + h * H).collect::<Vec<_>>());
        let size: Vec<Money> = items(cp, &acct, "2026-10")
            .await
            .into_iter()
            .filter(|i| i.item_code == "size")
            .map(|i| i.amount)
            .collect();
        let mut want = vec![capacity_amount(2048 * 45 * 60)];
        want.extend(std::iter::repeat_n(capacity_amount(2048 * 3600), 7));
        assert_eq!(size, want, "{}", env.name);
    }
}

/// Issue 14, finding 5: chunk writes past a file's recorded size are
/// stored by the data nodes though the namespace never counts them. What
/// the nodes report holding (per copy) is metered when it is more.
#[tokio::test]
async fn bytes_the_data_nodes_hold_are_metered_though_the_namespace_misses_them() {
    let t0 = OCT5 + 9 * H;
    for env in backends(t0).await {
        let cp = &env.cp;
        let acct = cp.create_account("hidden", None).await.unwrap().account_id;
        let id = cp
            .create_file_system(&acct, new_fs(2048, ChargeType::PayAsYouGo, None))
            .await
            .unwrap();
        // Two copies of 10 GiB, as two nodes report them in heartbeats;
        // the namespace records no file data at all.
        let copy = 10i64 << 30;
        for node in ["node-a", "node-b"] {
            sqlx::query("INSERT INTO node_usage (node_id, fs_id, bytes_stored, bytes_read, bytes_written, read_ops, write_ops, updated_at) VALUES ($1, $2, $3, 0, 0, 0, 0, $4)")
                .bind(node)
                .bind(&id)
                .bind(copy)
                .bind(t0)
                .execute(&cp.store.pool)
                .await
                .unwrap();
        }
        assert_eq!(cp.used_bytes(&id).await.unwrap(), 0);
        env.clock.set(OCT5 + 10 * H);
        env.billing.pass(OCT5 + 10 * H).await.unwrap();
        let used: i64 = sqlx::query_scalar("SELECT used_bytes FROM usage_hours WHERE fs_id = $1")
            .bind(&id)
            .fetch_one(&cp.store.pool)
            .await
            .unwrap();
        assert_eq!(used, copy, "{}", env.name);
    }
}
