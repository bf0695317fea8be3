//! BssOpenApi (version 2017-12-14): the billing actions the official
//! `alibabacloud-bssopenapi20171214` SDK calls, on the same gateway and
//! signatures as the NAS API. Replies carry BSS's own envelope
//! (`Success`, `Code`, `Message`, `Data`) and the exact shapes its models
//! parse: list wrappers, key spellings and string-typed amounts differ per
//! action, as the reference tables say.

use cpfs_billing::bills::{
    self, commodity_code, instance_rows, load_items, product_detail, BillItem, ItemFilter, Totals,
};
use cpfs_billing::plans::{gib_hours, list_plans};
use cpfs_billing::{times, Money, PRODUCT_CODE, PRODUCT_NAME};
use cpfs_controlplane::clock::format_utc;
use cpfs_controlplane::ControlPlane;
use serde_json::{json, Map, Value};

use super::object;
use crate::error::ApiError;
use crate::params::Params;

pub const BSS_VERSION: &str = "2017-12-14";

/// BssOpenApi actions served.
pub const SUPPORTED: &[&str] = &[
    "QueryBillOverview",
    "QueryBill",
    "QueryInstanceBill",
    "QueryResourcePackageInstances",
    "RenewInstance",
];

/// Largest page the bill queries return (the documented maximum).
pub const MAX_PAGE_SIZE: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Common {
    pub billing_cycle: String,
    pub product_code: Option<String>,
    pub subscription_type: Option<String>,
    /// `BillOwnerId`: another owner than the caller sees nothing.
    pub bill_owner_id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BssCommand {
    QueryBillOverview(Common),
    QueryBill {
        common: Common,
        bill_type: Option<String>,
        hide_zero: bool,
        page: i64,
        page_size: i64,
    },
    QueryInstanceBill {
        common: Common,
        daily_date: Option<String>,
        by_item: bool,
        hide_zero: bool,
        page: i64,
        page_size: i64,
    },
    QueryResourcePackageInstances {
        product_code: Option<String>,
        expiry_start: Option<i64>,
        expiry_end: Option<i64>,
        page: i64,
        page_size: i64,
    },
    RenewInstance {
        product_code: String,
        instance_id: String,
        months: u32,
        client_token: Option<String>,
    },
}

fn invalid(e: cpfs_billing::BillingError) -> ApiError {
    ApiError::from(e)
}

fn common(p: &Params) -> Result<Common, ApiError> {
    let billing_cycle = p.required_string("BillingCycle", 7)?;
    times::parse_cycle(&billing_cycle).map_err(invalid)?;
    Ok(Common {
        billing_cycle,
        product_code: p.string("ProductCode", 64)?,
        subscription_type: subscription_type(p)?,
        bill_owner_id: p.int("BillOwnerId", 0, i64::MAX)?,
    })
}

fn subscription_type(p: &Params) -> Result<Option<String>, ApiError> {
    match p.opt("SubscriptionType") {
        None => Ok(None),
        Some(s @ ("Subscription" | "PayAsYouGo")) => Ok(Some(s.to_string())),
        Some(_) => Err(ApiError::invalid(
            "SubscriptionType",
            "SubscriptionType must be Subscription or PayAsYouGo",
        )),
    }
}

fn paging(p: &Params) -> Result<(i64, i64), ApiError> {
    Ok((
        p.int("PageNum", 1, 1_000_000)?.unwrap_or(1),
        p.int("PageSize", 1, MAX_PAGE_SIZE)?.unwrap_or(20),
    ))
}

/// Parses a BssOpenApi action; `None` when the name is not one of ours.
pub fn parse(action: &str, p: &Params) -> Result<Option<BssCommand>, ApiError> {
    Ok(Some(match action {
        "QueryBillOverview" => BssCommand::QueryBillOverview(common(p)?),
        "QueryBill" => {
            let common = common(p)?;
            let bill_type = match p.opt("Type") {
                None => None,
                Some(t @ ("SubscriptionOrder" | "PayAsYouGoBill" | "Refund" | "Adjustment")) => {
                    Some(t.to_string())
                }
                Some(_) => {
                    return Err(ApiError::invalid(
                        "Type",
                        "Type must be SubscriptionOrder, PayAsYouGoBill, Refund or Adjustment",
                    ))
                }
            };
            p.bool("IsDisplayLocalCurrency")?;
            let (page, page_size) = paging(p)?;
            BssCommand::QueryBill {
                common,
                bill_type,
                hide_zero: p.bool("IsHideZeroCharge")?.unwrap_or(false),
                page,
                page_size,
            }
        }
        "QueryInstanceBill" => {
            let common = common(p)?;
            let daily = match p.opt("Granularity") {
                None => false,
                Some(g) if g.eq_ignore_ascii_case("MONTHLY") => false,
                Some(g) if g.eq_ignore_ascii_case("DAILY") => true,
                Some(_) => {
                    return Err(ApiError::invalid(
                        "Granularity",
                        "Granularity must be MONTHLY or DAILY",
                    ))
                }
            };
            let daily_date = if daily {
                let d = p.required_string("BillingDate", 10)?;
                times::parse_date("BillingDate", &d).map_err(invalid)?;
                Some(d)
            } else {
                None
            };
            let (page, page_size) = paging(p)?;
            BssCommand::QueryInstanceBill {
                common,
                daily_date,
                by_item: p.bool("IsBillingItem")?.unwrap_or(false),
                hide_zero: p.bool("IsHideZeroCharge")?.unwrap_or(false),
                page,
                page_size,
            }
        }
        "QueryResourcePackageInstances" => {
            let time = |name: &'static str| -> Result<Option<i64>, ApiError> {
                p.string(name, 32)?
                    .map(|s| times::parse_time(name, &s).map_err(invalid))
                    .transpose()
            };
            p.bool("IncludePartner")?;
            let (page, page_size) = paging(p)?;
            BssCommand::QueryResourcePackageInstances {
                product_code: p.string("ProductCode", 64)?,
                expiry_start: time("ExpiryTimeStart")?,
                expiry_end: time("ExpiryTimeEnd")?,
                page,
                page_size,
            }
        }
        "RenewInstance" => BssCommand::RenewInstance {
            product_code: p.required_string("ProductCode", 64)?,
            instance_id: p.required_string("InstanceId", 64)?,
            months: p.required_int("RenewPeriod", 1, 36)? as u32,
            client_token: p.string("ClientToken", 64)?,
        },
        _ => return Ok(None),
    }))
}

fn money(m: Money) -> Value {
    Value::from(m.as_f64())
}

/// Amount strings (`DeductedByResourcePackage`): `"0"`, `"1.152"`.
fn money_str(m: Money) -> String {
    cpfs_billing::money::fixed(i128::from(m.0), 4)
}

fn amounts(t: &Totals) -> Map<String, Value> {
    object(json!({
        "PretaxGrossAmount": money(t.gross),
        "InvoiceDiscount": money(t.discount),
        "DeductedByCoupons": 0.0,
        "DeductedByCashCoupons": 0.0,
        "DeductedByPrepaidCard": 0.0,
        "PretaxAmount": money(t.amount),
        "PaymentAmount": money(t.amount),
        "CashAmount": money(t.amount),
        "OutstandingAmount": 0.0,
        "AdjustAmount": 0.0,
    }))
}

fn page<T>(rows: Vec<T>, page: i64, size: i64) -> Vec<T> {
    let skip = ((page - 1).max(0) * size) as usize;
    rows.into_iter().skip(skip).take(size as usize).collect()
}

fn product_matches(code: &Option<String>) -> bool {
    code.as_deref()
        .is_none_or(|c| c.eq_ignore_ascii_case(PRODUCT_CODE))
}

/// The caller's bill lines of a cycle that match the common filters; none
/// when the request names another account as the bill owner.
async fn owned_items(
    cp: &ControlPlane,
    account_id: &str,
    c: &Common,
    bill_type: Option<String>,
    billing_date: Option<String>,
) -> Result<Vec<BillItem>, ApiError> {
    if c.bill_owner_id.is_some_and(|o| o.to_string() != account_id) {
        return Ok(Vec::new());
    }
    let filter = ItemFilter {
        product_code: c.product_code.clone(),
        subscription_type: c.subscription_type.clone(),
        bill_type,
        instance_id: None,
        billing_date,
    };
    load_items(cp, Some(account_id), &c.billing_cycle, &filter)
        .await
        .map_err(invalid)
}

/// The product columns every bill row starts with.
fn product_columns(subscription_type: &str, item_code: &str) -> Map<String, Value> {
    object(json!({
        "ProductCode": PRODUCT_CODE,
        "ProductName": PRODUCT_NAME,
        "ProductType": "",
        "ProductDetail": product_detail(subscription_type, item_code),
        "CommodityCode": commodity_code(subscription_type, item_code),
        "PipCode": PRODUCT_CODE,
        "SubscriptionType": subscription_type,
    }))
}

/// `Data` of the paged bill queries.
fn bill_page(
    c: &Common,
    account_id: &str,
    account_name: &str,
    (page_num, page_size, total): (i64, i64, usize),
    rows: Vec<Value>,
) -> Value {
    json!({
        "BillingCycle": c.billing_cycle,
        "AccountID": account_id,
        "AccountName": account_name,
        "PageNum": page_num,
        "PageSize": page_size,
        "TotalCount": total,
        "Items": {"Item": rows},
    })
}

/// Runs a BSS command for an account; returns the reply without
/// `RequestId` (the envelope fields included).
pub async fn execute(
    cp: &ControlPlane,
    account_id: &str,
    cmd: BssCommand,
) -> Result<Map<String, Value>, ApiError> {
    let account_name = bills::account_name(cp, account_id).await.map_err(invalid)?;
    let data = match cmd {
        BssCommand::QueryBillOverview(c) => {
            let items = owned_items(cp, account_id, &c, None, None).await?;
            let currency = items
                .first()
                .map(|i| i.currency.clone())
                .unwrap_or_default();
            let rows: Vec<Value> = bills::overview(&items)
                .into_iter()
                .map(|(sub, bill_type, t)| {
                    let mut row = product_columns(&sub, "");
                    row.extend(object(json!({
                        "Item": bill_type,
                        "BizType": "",
                        "OwnerID": account_id,
                        "BillAccountID": account_id,
                        "BillAccountName": account_name,
                        "Currency": currency,
                        "PaymentCurrency": currency,
                        "PretaxAmountLocal": money(t.amount),
                        "AfterTaxAmount": money(t.amount),
                        "Tax": 0.0,
                        "RoundDownDiscount": "0",
                    })));
                    row.extend(amounts(&t));
                    Value::Object(row)
                })
                .collect();
            json!({
                "BillingCycle": c.billing_cycle,
                "AccountID": account_id,
                "AccountName": account_name,
                "Items": {"Item": rows},
            })
        }
        BssCommand::QueryBill {
            common: c,
            bill_type,
            hide_zero,
            page: pn,
            page_size,
        } => {
            let items = owned_items(cp, account_id, &c, bill_type, None).await?;
            let records: Vec<_> = bills::records(&items)
                .into_iter()
                .filter(|r| !hide_zero || r.totals.gross != Money::ZERO)
                .collect();
            let total = records.len();
            let rows: Vec<Value> = page(records, pn, page_size)
                .into_iter()
                .map(|r| {
                    let code = if r.record_id.starts_with("cpfsplan-") {
                        "plan"
                    } else {
                        ""
                    };
                    let mut row = product_columns(&r.subscription_type, code);
                    row.extend(object(json!({
                        "RecordID": r.record_id,
                        "SubOrderId": "",
                        "Item": r.bill_type,
                        "Status": "PayFinish",
                        "UsageStartTime": times::bill_time(r.usage_start),
                        "UsageEndTime": times::bill_time(r.usage_end),
                        "PaymentTime": times::bill_time(r.created_at),
                        "PaymentTransactionID": "",
                        "OwnerID": account_id,
                        "Currency": r.currency,
                        "PaymentCurrency": r.currency,
                        "PretaxAmountLocal": money(r.totals.amount),
                        "AfterTaxAmount": money(r.totals.amount),
                        "Tax": 0.0,
                        "RoundDownDiscount": "0",
                    })));
                    row.extend(amounts(&r.totals));
                    Value::Object(row)
                })
                .collect();
            bill_page(&c, account_id, &account_name, (pn, page_size, total), rows)
        }
        BssCommand::QueryInstanceBill {
            common: c,
            daily_date,
            by_item,
            hide_zero,
            page: pn,
            page_size,
        } => {
            let by_day = daily_date.is_some();
            let items = owned_items(cp, account_id, &c, None, daily_date).await?;
            let rows: Vec<_> = instance_rows(&items, by_item, by_day)
                .into_iter()
                .filter(|r| !hide_zero || !r.totals.is_zero())
                .collect();
            let total = rows.len();
            let rows: Vec<Value> = page(rows, pn, page_size)
                .into_iter()
                .map(|r| {
                    let mut row = product_columns(&r.subscription_type, &r.item_code);
                    row.extend(object(json!({
                        "InstanceID": r.instance_id,
                        "NickName": r.nickname,
                        "Item": r.bill_type,
                        "BillingType": if r.bill_type == "PayAsYouGoBill" { "Usage" } else { "Other" },
                        "BillingDate": r.billing_date,
                        "BillingItem": r.item_name,
                        "ListPrice": r.list_price,
                        "ListPriceUnit": r.list_price_unit,
                        "Usage": r.usage,
                        "UsageUnit": r.usage_unit,
                        "Region": cp.region.local_name,
                        "Zone": r.zone_id,
                        "InstanceSpec": r.instance_spec,
                        "InstanceConfig": r.instance_config,
                        "InternetIP": "",
                        "IntranetIP": "",
                        "ResourceGroup": "default",
                        "Tag": "",
                        "CostUnit": "",
                        "OwnerID": account_id,
                        "ServicePeriod": r.service_seconds.to_string(),
                        "ServicePeriodUnit": "Second",
                        "Currency": r.currency,
                        "DeductedByResourcePackage": money_str(r.totals.deducted_by_plan),
                    })));
                    row.extend(amounts(&r.totals));
                    Value::Object(row)
                })
                .collect();
            bill_page(&c, account_id, &account_name, (pn, page_size, total), rows)
        }
        BssCommand::QueryResourcePackageInstances {
            product_code,
            expiry_start,
            expiry_end,
            page: pn,
            page_size,
        } => {
            let now = cp.now();
            let plans: Vec<_> = if product_matches(&product_code) {
                list_plans(cp, Some(account_id))
                    .await
                    .map_err(invalid)?
                    .into_iter()
                    .filter(|p| expiry_start.is_none_or(|s| p.expires_at >= s))
                    .filter(|p| expiry_end.is_none_or(|e| p.expires_at <= e))
                    .collect()
            } else {
                Vec::new()
            };
            let total = plans.len();
            let rows: Vec<Value> = page(plans, pn, page_size)
                .into_iter()
                .map(|p| {
                    json!({
                        "InstanceId": p.id,
                        "Region": cp.region.region_id,
                        "PackageType": "cpfs_capacity_plan",
                        "CommodityCode": cpfs_billing::COMMODITY_PLAN,
                        "Status": p.status(now),
                        "Remark": p.remark,
                        "EffectiveTime": format_utc(p.effective_at),
                        "ExpiryTime": format_utc(p.expires_at),
                        "TotalAmount": gib_hours(p.total_gib_seconds),
                        "TotalAmountUnit": "GiB*Hour",
                        "RemainingAmount": gib_hours(p.remaining_gib_seconds),
                        "RemainingAmountUnit": "GiB*Hour",
                        "DeductType": "Absolute",
                        "ApplicableProducts": {"Product": [PRODUCT_CODE]},
                    })
                })
                .collect();
            let mut out = envelope(json!({
                "HostId": cp.region.region_id,
                "PageNum": pn.to_string(),
                "PageSize": page_size.to_string(),
                "TotalCount": total.to_string(),
                "Instances": {"Instance": rows},
            }));
            out.insert("Page".into(), Value::from(pn));
            out.insert("PageSize".into(), Value::from(page_size));
            out.insert("Total".into(), Value::from(total));
            return Ok(out);
        }
        BssCommand::RenewInstance {
            product_code,
            instance_id,
            months,
            client_token,
        } => {
            if !product_code.eq_ignore_ascii_case(PRODUCT_CODE) {
                return Err(ApiError::invalid(
                    "ProductCode",
                    format!("ProductCode must be {PRODUCT_CODE} (CPFS file systems)"),
                ));
            }
            let r = cp
                .renew_file_system(account_id, &instance_id, months, client_token.as_deref())
                .await?;
            json!({"OrderId": r.order_id()})
        }
    };
    Ok(envelope(data))
}

/// `{Success, Code, Message, Data}` of a successful BSS reply.
fn envelope(data: Value) -> Map<String, Value> {
    object(json!({
        "Success": true,
        "Code": "Success",
        "Message": "Successful!",
        "Data": data,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::params;

    #[test]
    fn parses_the_bill_queries() {
        let c = parse(
            "QueryInstanceBill",
            &params(&[
                ("BillingCycle", "2026-10"),
                ("Granularity", "daily"),
                ("BillingDate", "2026-10-05"),
                ("IsBillingItem", "True"),
                ("PageSize", "300"),
            ]),
        )
        .unwrap()
        .unwrap();
        match c {
            BssCommand::QueryInstanceBill {
                daily_date,
                by_item,
                page_size,
                ..
            } => {
                assert_eq!(daily_date.as_deref(), Some("2026-10-05"));
                assert!(by_item);
                assert_eq!(page_size, 300);
            }
            other => panic!("{other:?}"),
        }
        let e = parse("QueryBill", &params(&[])).unwrap_err();
        assert_eq!(e.code(), "MissingParameter");
        let e = parse("QueryBill", &params(&[("BillingCycle", "2026-13")])).unwrap_err();
        assert_eq!(e.code(), "InvalidParameter.BillingCycle");
        let e = parse(
            "QueryInstanceBill",
            &params(&[("BillingCycle", "2026-10"), ("Granularity", "DAILY")]),
        )
        .unwrap_err();
        assert_eq!(e.code(), "MissingParameter");
        let e = parse(
            "QueryBill",
            &params(&[("BillingCycle", "2026-10"), ("PageSize", "301")]),
        )
        .unwrap_err();
        assert_eq!(e.code(), "InvalidParameter.PageSize");
        let e = parse(
            "QueryBillOverview",
            &params(&[("BillingCycle", "2026-10"), ("SubscriptionType", "Free")]),
        )
        .unwrap_err();
        assert_eq!(e.code(), "InvalidParameter.SubscriptionType");
        assert!(parse("DescribeFileSystems", &params(&[]))
            .unwrap()
            .is_none());
    }

    #[test]
    fn parses_renewals() {
        let c = parse(
            "RenewInstance",
            &params(&[
                ("ProductCode", "nas"),
                ("InstanceId", "cpfs-0123456789abcdef"),
                ("RenewPeriod", "12"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            c,
            BssCommand::RenewInstance {
                product_code: "nas".into(),
                instance_id: "cpfs-0123456789abcdef".into(),
                months: 12,
                client_token: None
            }
        );
        let e = parse(
            "RenewInstance",
            &params(&[("ProductCode", "nas"), ("InstanceId", "cpfs-1")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("RenewPeriod"));
    }

    #[test]
    fn amounts_keep_their_wire_types() {
        let t = Totals {
            gross: Money(20_480),
            discount: Money::ZERO,
            deducted_by_plan: Money(11_520),
            amount: Money(8_960),
        };
        let a = amounts(&t);
        assert_eq!(a["PretaxGrossAmount"], json!(2.048));
        assert_eq!(a["PretaxAmount"], json!(0.896));
        assert_eq!(money_str(t.deducted_by_plan), "1.152");
        assert_eq!(money_str(Money::ZERO), "0");
    }
}
