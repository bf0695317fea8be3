//! Resource plans: prepaid capacity for a period, bought for an account by
//! an operator (`cpfs billing plan add`). A plan of S GiB for M months holds
//! S x M x 720 GiB-hours (30-day months) and is valid from its start for M
//! calendar months. Each pay-as-you-go hour's capacity is offset against
//! the account's valid plans (earliest expiry first, then earliest
//! purchase) before it is charged; what the plans cannot cover is charged
//! at the pay-as-you-go price. A plan absorbs usage until it runs out or
//! expires.

use sqlx::{Any, Row, Transaction};

use crate::error::{BillingError, Result};
use crate::items::{insert_item, per_hour, NewItem};
use crate::money::Money;
use crate::Billing;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Plan {
    pub id: String,
    pub account_id: String,
    pub size_gib: i64,
    pub months: i64,
    pub total_gib_seconds: i64,
    pub remaining_gib_seconds: i64,
    pub effective_at: i64,
    pub expires_at: i64,
    pub created_at: i64,
    pub remark: String,
}

impl Plan {
    pub fn status(&self, now: i64) -> &'static str {
        if now >= self.expires_at {
            "Expired"
        } else {
            "Available"
        }
    }
}

/// GiB-hours as a decimal string (`1.5`).
pub fn gib_hours(gib_seconds: i64) -> String {
    per_hour(gib_seconds)
}

/// Offsets up to `gib_seconds` of capacity in `hour` against the account's
/// plans; returns what was offset and the plans used. Runs inside the
/// hour's transaction, so the plan balance and the bill move together.
pub(crate) async fn consume(
    tx: &mut Transaction<'static, Any>,
    account_id: &str,
    hour: i64,
    gib_seconds: i64,
) -> Result<(i64, Vec<String>)> {
    let rows = sqlx::query(
        "SELECT id, remaining_gib_seconds FROM resource_plans WHERE account_id = $1 AND effective_at <= $2 AND expires_at > $2 AND remaining_gib_seconds > 0 ORDER BY expires_at, created_at, id",
    )
    .bind(account_id)
    .bind(hour)
    .fetch_all(&mut **tx)
    .await?;
    let mut left = gib_seconds;
    let mut used = Vec::new();
    for r in &rows {
        if left == 0 {
            break;
        }
        let id: String = r.try_get("id")?;
        let remaining: i64 = r.try_get("remaining_gib_seconds")?;
        let take = remaining.min(left);
        sqlx::query("UPDATE resource_plans SET remaining_gib_seconds = remaining_gib_seconds - $1 WHERE id = $2")
            .bind(take)
            .bind(&id)
            .execute(&mut **tx)
            .await?;
        left -= take;
        used.push(id);
    }
    Ok((gib_seconds - left, used))
}

/// The id of an account given by id or name.
pub async fn resolve_account(
    cp: &cpfs_controlplane::ControlPlane,
    account: &str,
) -> Result<Option<String>> {
    let row = sqlx::query("SELECT id FROM accounts WHERE id = $1 OR name = $1")
        .bind(account)
        .fetch_optional(&cp.store.pool)
        .await?;
    Ok(match row {
        Some(r) => Some(r.try_get("id")?),
        None => None,
    })
}

fn plan_id() -> String {
    // BSS shows plan instance ids as opaque strings.
    format!(
        "cpfsplan-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    )
}

impl Billing {
    /// Buys a plan for an account (by id or name) and charges it as a
    /// subscription order at its start.
    pub async fn add_plan(
        &self,
        account: &str,
        size_gib: i64,
        months: i64,
        start: Option<i64>,
        remark: &str,
    ) -> Result<Plan> {
        if !(1..=1_048_576).contains(&size_gib) {
            return Err(BillingError::invalid(
                "size-gib",
                "a plan holds 1 to 1048576 GiB",
            ));
        }
        if !(1..=36).contains(&months) {
            return Err(BillingError::invalid(
                "months",
                "a plan lasts 1 to 36 months",
            ));
        }
        let account_id = resolve_account(&self.cp, account).await?.ok_or_else(|| {
            BillingError::invalid(
                "account",
                format!("no account with id or name \"{account}\""),
            )
        })?;
        let now = self.cp.now();
        let effective_at = start.unwrap_or(now);
        let expires_at = cpfs_controlplane::clock::add_months(effective_at, months as u32);
        let total = size_gib * months * 720 * 3600;
        let plan = Plan {
            id: plan_id(),
            account_id: account_id.clone(),
            size_gib,
            months,
            total_gib_seconds: total,
            remaining_gib_seconds: total,
            effective_at,
            expires_at,
            created_at: now,
            remark: if remark.is_empty() {
                format!("CPFS resource plan {size_gib} GiB x {months} month(s)")
            } else {
                remark.to_string()
            },
        };
        let price = self.book.plan_charge(size_gib, months);
        let mut tx = self.cp.store.begin_write().await?;
        sqlx::query("INSERT INTO resource_plans (id, account_id, size_gib, months, total_gib_seconds, remaining_gib_seconds, effective_at, expires_at, created_at, remark) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
            .bind(&plan.id)
            .bind(&account_id)
            .bind(size_gib)
            .bind(months)
            .bind(total)
            .bind(total)
            .bind(effective_at)
            .bind(expires_at)
            .bind(now)
            .bind(&plan.remark)
            .execute(&mut *tx)
            .await?;
        insert_item(
            &mut tx,
            &NewItem {
                id: format!("plan:{}", plan.id),
                record_id: plan.id.clone(),
                account_id: account_id.clone(),
                instance_id: plan.id.clone(),
                nickname: plan.remark.clone(),
                zone_id: String::new(),
                instance_spec: "resource_plan".into(),
                instance_config: format!("Size:{size_gib}GiB;Months:{months}"),
                at: effective_at,
                usage_start: effective_at,
                usage_end: expires_at,
                bill_type: "SubscriptionOrder",
                subscription_type: "Subscription",
                item_code: "plan",
                item_name: "CPFS resource plan",
                usage_amount: months.to_string(),
                usage_unit: "Month",
                list_price: self.book.plan_gib_month.to_string(),
                list_price_unit: format!("{}/GiB/Month", self.book.currency),
                currency: self.book.currency.clone(),
                gross: price,
                deducted_by_plan: Money::ZERO,
                amount: price,
                plan_id: String::new(),
                created_at: now,
            },
        )
        .await?;
        tx.commit().await?;
        tracing::info!(plan_id = %plan.id, account_id, size_gib, months, "resource plan added");
        Ok(plan)
    }

    /// The account's plans (every account's when `account_id` is None),
    /// earliest expiry first.
    pub async fn plans(&self, account_id: Option<&str>) -> Result<Vec<Plan>> {
        list_plans(&self.cp, account_id).await
    }
}

/// The account's plans (every account's when `account_id` is None),
/// earliest expiry first.
pub async fn list_plans(
    cp: &cpfs_controlplane::ControlPlane,
    account_id: Option<&str>,
) -> Result<Vec<Plan>> {
    {
        let sql = "SELECT id, account_id, size_gib, months, total_gib_seconds, remaining_gib_seconds, effective_at, expires_at, created_at, remark FROM resource_plans";
        let rows = match account_id {
            Some(a) => {
                sqlx::query(&format!(
                    "{sql} WHERE account_id = $1 ORDER BY expires_at, created_at, id"
                ))
                .bind(a)
                .fetch_all(&cp.store.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "{sql} ORDER BY account_id, expires_at, created_at, id"
                ))
                .fetch_all(&cp.store.pool)
                .await?
            }
        };
        rows.iter()
            .map(|r| {
                Ok(Plan {
                    id: r.try_get("id")?,
                    account_id: r.try_get("account_id")?,
                    size_gib: r.try_get("size_gib")?,
                    months: r.try_get("months")?,
                    total_gib_seconds: r.try_get("total_gib_seconds")?,
                    remaining_gib_seconds: r.try_get("remaining_gib_seconds")?,
                    effective_at: r.try_get("effective_at")?,
                    expires_at: r.try_get("expires_at")?,
                    created_at: r.try_get("created_at")?,
                    remark: r.try_get("remark")?,
                })
            })
            .collect()
    }
}
