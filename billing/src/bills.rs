//! Reading bills: the bill items of a cycle and the groupings the
//! BssOpenApi queries and the statements show. Amounts are summed as
//! integers, so every total is exactly the sum of its lines.

use std::collections::BTreeMap;

use cpfs_controlplane::ControlPlane;
use sqlx::Row;

use crate::error::Result;
use crate::money::Money;

/// One stored bill line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillItem {
    pub id: String,
    pub record_id: String,
    pub account_id: String,
    pub instance_id: String,
    pub nickname: String,
    pub zone_id: String,
    pub instance_spec: String,
    pub instance_config: String,
    pub billing_cycle: String,
    pub billing_date: String,
    pub usage_start: i64,
    pub usage_end: i64,
    pub bill_type: String,
    pub subscription_type: String,
    pub item_code: String,
    pub item_name: String,
    pub usage_amount: String,
    pub usage_unit: String,
    pub list_price: String,
    pub list_price_unit: String,
    pub currency: String,
    pub gross: Money,
    pub deducted_by_plan: Money,
    pub amount: Money,
    pub plan_id: String,
    pub created_at: i64,
}

/// The four amounts every bill row shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// List price before any discount (PretaxGrossAmount).
    pub gross: Money,
    /// Term discounts (InvoiceDiscount).
    pub discount: Money,
    /// Offset by resource plans (DeductedByResourcePackage).
    pub deducted_by_plan: Money,
    /// What is payable (PretaxAmount, PaymentAmount).
    pub amount: Money,
}

impl Totals {
    pub fn add(&mut self, i: &BillItem) {
        self.gross += i.gross;
        self.deducted_by_plan += i.deducted_by_plan;
        self.amount += i.amount;
        self.discount += i.gross - i.deducted_by_plan - i.amount;
    }

    pub fn is_zero(&self) -> bool {
        self.gross == Money::ZERO && self.amount == Money::ZERO
    }
}

/// Filters every query accepts.
#[derive(Debug, Clone, Default)]
pub struct ItemFilter {
    pub product_code: Option<String>,
    pub subscription_type: Option<String>,
    pub bill_type: Option<String>,
    pub instance_id: Option<String>,
    pub billing_date: Option<String>,
}

impl ItemFilter {
    fn keeps(&self, i: &BillItem) -> bool {
        self.product_code
            .as_deref()
            .is_none_or(|p| p.eq_ignore_ascii_case(crate::PRODUCT_CODE))
            && self
                .subscription_type
                .as_deref()
                .is_none_or(|s| s == i.subscription_type)
            && self.bill_type.as_deref().is_none_or(|t| t == i.bill_type)
            && self
                .instance_id
                .as_deref()
                .is_none_or(|t| t == i.instance_id)
            && self
                .billing_date
                .as_deref()
                .is_none_or(|d| d == i.billing_date)
    }
}

/// The bill lines of a cycle (`YYYY-MM`), of one account or of all.
pub async fn load_items(
    cp: &ControlPlane,
    account_id: Option<&str>,
    billing_cycle: &str,
    filter: &ItemFilter,
) -> Result<Vec<BillItem>> {
    let sql = "SELECT id, record_id, account_id, instance_id, nickname, zone_id, instance_spec, instance_config, billing_cycle, billing_date, usage_start, usage_end, bill_type, subscription_type, item_code, item_name, usage_amount, usage_unit, list_price, list_price_unit, currency, gross, deducted_by_plan, amount, plan_id, created_at FROM bill_items";
    let rows = match account_id {
        Some(a) => {
            sqlx::query(&format!(
                "{sql} WHERE account_id = $1 AND billing_cycle = $2 ORDER BY usage_start, instance_id, id"
            ))
            .bind(a)
            .bind(billing_cycle)
            .fetch_all(&cp.store.pool)
            .await?
        }
        None => {
            sqlx::query(&format!(
                "{sql} WHERE billing_cycle = $1 ORDER BY account_id, usage_start, instance_id, id"
            ))
            .bind(billing_cycle)
            .fetch_all(&cp.store.pool)
            .await?
        }
    };
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let item = BillItem {
            id: r.try_get("id")?,
            record_id: r.try_get("record_id")?,
            account_id: r.try_get("account_id")?,
            instance_id: r.try_get("instance_id")?,
            nickname: r.try_get("nickname")?,
            zone_id: r.try_get("zone_id")?,
            instance_spec: r.try_get("instance_spec")?,
            instance_config: r.try_get("instance_config")?,
            billing_cycle: r.try_get("billing_cycle")?,
            billing_date: r.try_get("billing_date")?,
            usage_start: r.try_get("usage_start")?,
            usage_end: r.try_get("usage_end")?,
            bill_type: r.try_get("bill_type")?,
            subscription_type: r.try_get("subscription_type")?,
            item_code: r.try_get("item_code")?,
            item_name: r.try_get("item_name")?,
            usage_amount: r.try_get("usage_amount")?,
            usage_unit: r.try_get("usage_unit")?,
            list_price: r.try_get("list_price")?,
            list_price_unit: r.try_get("list_price_unit")?,
            currency: r.try_get("currency")?,
            gross: Money(r.try_get("gross")?),
            deducted_by_plan: Money(r.try_get("deducted_by_plan")?),
            amount: Money(r.try_get("amount")?),
            plan_id: r.try_get("plan_id")?,
            created_at: r.try_get("created_at")?,
        };
        if filter.keeps(&item) {
            out.push(item);
        }
    }
    Ok(out)
}

/// The account's display name (its `cpfs account create` name).
pub async fn account_name(cp: &ControlPlane, account_id: &str) -> Result<String> {
    let row = sqlx::query("SELECT name FROM accounts WHERE id = $1")
        .bind(account_id)
        .fetch_optional(&cp.store.pool)
        .await?;
    Ok(match row {
        Some(r) => r.try_get("name")?,
        None => String::new(),
    })
}

/// The commodity code of a bill line.
pub fn commodity_code(subscription_type: &str, item_code: &str) -> &'static str {
    match (subscription_type, item_code) {
        (_, "plan") => crate::COMMODITY_PLAN,
        ("Subscription", _) => crate::COMMODITY_SUBSCRIPTION,
        _ => crate::COMMODITY_PAYG,
    }
}

/// The product detail shown with a bill line.
pub fn product_detail(subscription_type: &str, item_code: &str) -> &'static str {
    match (subscription_type, item_code) {
        (_, "plan") => "CPFS Resource Plan",
        ("Subscription", _) => "CPFS (Subscription)",
        _ => "CPFS (Pay-As-You-Go)",
    }
}

/// QueryBillOverview rows: per (subscription type, bill type).
pub fn overview(items: &[BillItem]) -> Vec<(String, String, Totals)> {
    let mut m: BTreeMap<(String, String), Totals> = BTreeMap::new();
    for i in items {
        m.entry((i.subscription_type.clone(), i.bill_type.clone()))
            .or_default()
            .add(i);
    }
    m.into_iter().map(|((s, b), t)| (s, b, t)).collect()
}

/// A QueryBill row: one order, or one hour's pay-as-you-go bill of one
/// file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub record_id: String,
    pub instance_id: String,
    pub bill_type: String,
    pub subscription_type: String,
    pub usage_start: i64,
    pub usage_end: i64,
    pub created_at: i64,
    pub currency: String,
    pub totals: Totals,
}

pub fn records(items: &[BillItem]) -> Vec<Record> {
    let mut order: Vec<String> = Vec::new();
    let mut m: BTreeMap<String, Record> = BTreeMap::new();
    for i in items {
        let r = m.entry(i.record_id.clone()).or_insert_with(|| {
            order.push(i.record_id.clone());
            Record {
                record_id: i.record_id.clone(),
                instance_id: i.instance_id.clone(),
                bill_type: i.bill_type.clone(),
                subscription_type: i.subscription_type.clone(),
                usage_start: i.usage_start,
                usage_end: i.usage_end,
                created_at: i.created_at,
                currency: i.currency.clone(),
                totals: Totals::default(),
            }
        });
        r.totals.add(i);
    }
    order.into_iter().filter_map(|k| m.remove(&k)).collect()
}

/// A QueryInstanceBill row: per instance (and billing item, and day, when
/// asked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRow {
    pub instance_id: String,
    pub nickname: String,
    pub zone_id: String,
    pub instance_spec: String,
    pub instance_config: String,
    pub bill_type: String,
    pub subscription_type: String,
    /// Filled when grouped by billing item.
    pub item_code: String,
    pub item_name: String,
    pub list_price: String,
    pub list_price_unit: String,
    pub usage: String,
    pub usage_unit: String,
    /// Filled when grouped by day.
    pub billing_date: String,
    pub service_seconds: i64,
    pub currency: String,
    pub totals: Totals,
}

/// Sums decimal strings with up to 4 fraction digits exactly.
fn add_decimal(acc: &mut i128, s: &str) {
    if let Ok(d) = crate::money::Decimal::parse(s) {
        *acc += d.0 / 10_000;
    }
}

pub fn instance_rows(items: &[BillItem], by_item: bool, by_day: bool) -> Vec<InstanceRow> {
    type Key = (String, String, String, String, String);
    let mut order: Vec<Key> = Vec::new();
    let mut m: BTreeMap<Key, (InstanceRow, i128)> = BTreeMap::new();
    for i in items {
        let key = (
            i.instance_id.clone(),
            i.subscription_type.clone(),
            i.bill_type.clone(),
            if by_item {
                i.item_code.clone()
            } else {
                String::new()
            },
            if by_day {
                i.billing_date.clone()
            } else {
                String::new()
            },
        );
        let (row, usage) = m.entry(key.clone()).or_insert_with(|| {
            order.push(key.clone());
            (
                InstanceRow {
                    instance_id: i.instance_id.clone(),
                    nickname: i.nickname.clone(),
                    zone_id: i.zone_id.clone(),
                    instance_spec: i.instance_spec.clone(),
                    instance_config: i.instance_config.clone(),
                    bill_type: i.bill_type.clone(),
                    subscription_type: i.subscription_type.clone(),
                    item_code: if by_item {
                        i.item_code.clone()
                    } else {
                        String::new()
                    },
                    item_name: if by_item {
                        i.item_name.clone()
                    } else {
                        String::new()
                    },
                    list_price: if by_item {
                        i.list_price.clone()
                    } else {
                        String::new()
                    },
                    list_price_unit: if by_item {
                        i.list_price_unit.clone()
                    } else {
                        String::new()
                    },
                    usage: String::new(),
                    usage_unit: if by_item {
                        i.usage_unit.clone()
                    } else {
                        String::new()
                    },
                    billing_date: if by_day {
                        i.billing_date.clone()
                    } else {
                        String::new()
                    },
                    service_seconds: 0,
                    currency: i.currency.clone(),
                    totals: Totals::default(),
                },
                0,
            )
        });
        row.totals.add(i);
        row.service_seconds += if i.bill_type == "PayAsYouGoBill" {
            i.usage_end - i.usage_start
        } else {
            0
        };
        // The configuration shown is the latest one.
        row.instance_config = i.instance_config.clone();
        if by_item {
            add_decimal(usage, &i.usage_amount);
        }
    }
    order
        .into_iter()
        .filter_map(|k| m.remove(&k))
        .map(|(mut row, usage)| {
            if by_item {
                row.usage = crate::money::fixed(usage, 4);
            }
            row
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(record: &str, code: &str, gross: i64, deducted: i64, amount: i64) -> BillItem {
        BillItem {
            id: format!("{record}:{code}"),
            record_id: record.into(),
            account_id: "a".into(),
            instance_id: "cpfs-1".into(),
            nickname: String::new(),
            zone_id: String::new(),
            instance_spec: String::new(),
            instance_config: String::new(),
            billing_cycle: "2026-10".into(),
            billing_date: "2026-10-05".into(),
            usage_start: 0,
            usage_end: 3600,
            bill_type: "PayAsYouGoBill".into(),
            subscription_type: "PayAsYouGo".into(),
            item_code: code.into(),
            item_name: code.into(),
            usage_amount: "1.5".into(),
            usage_unit: "GiB*Hour".into(),
            list_price: String::new(),
            list_price_unit: String::new(),
            currency: "CNY".into(),
            gross: Money(gross),
            deducted_by_plan: Money(deducted),
            amount: Money(amount),
            plan_id: String::new(),
            created_at: 0,
        }
    }

    #[test]
    fn groupings_add_up() {
        let items = vec![
            item("r1", "size", 100, 40, 60),
            item("r1", "bandwidth", 10, 0, 10),
            item("r2", "size", 100, 0, 100),
        ];
        let recs = records(&items);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].totals.amount, Money(70));
        let rows = instance_rows(&items, true, false);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].usage, "3");
        assert_eq!(rows[0].totals.deducted_by_plan, Money(40));
        let all = instance_rows(&items, false, false);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].totals.amount, Money(170));
        assert_eq!(all[0].totals.discount, Money(0));
        let ov = overview(&items);
        assert_eq!(ov[0].2.gross, Money(210));
    }
}
