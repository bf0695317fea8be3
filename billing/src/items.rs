//! Writing bill lines (the `bill_items` table), for the meter's hours and
//! orders and for plan purchases alike; `bills` reads them. Kept apart so
//! that `plans`, which the meter calls, need not call back into the meter.

use sqlx::{Any, Transaction};

use crate::error::Result;
use crate::money::Money;
use crate::times::{cycle, date};

/// A bill line about to be written.
#[derive(Debug, Clone)]
pub(crate) struct NewItem {
    pub id: String,
    pub record_id: String,
    pub account_id: String,
    pub instance_id: String,
    pub nickname: String,
    pub zone_id: String,
    pub instance_spec: String,
    pub instance_config: String,
    pub at: i64,
    pub usage_start: i64,
    pub usage_end: i64,
    pub bill_type: &'static str,
    pub subscription_type: &'static str,
    pub item_code: &'static str,
    pub item_name: &'static str,
    pub usage_amount: String,
    pub usage_unit: &'static str,
    pub list_price: String,
    pub list_price_unit: String,
    pub currency: String,
    pub gross: Money,
    pub deducted_by_plan: Money,
    pub amount: Money,
    pub plan_id: String,
    pub created_at: i64,
}

/// Writes a bill line unless one with its id exists; true when written.
pub(crate) async fn insert_item(tx: &mut Transaction<'static, Any>, i: &NewItem) -> Result<bool> {
    let n = sqlx::query(
        "INSERT INTO bill_items (id, record_id, account_id, instance_id, nickname, zone_id, instance_spec, instance_config, billing_cycle, billing_date, usage_start, usage_end, bill_type, subscription_type, item_code, item_name, usage_amount, usage_unit, list_price, list_price_unit, currency, gross, deducted_by_plan, amount, plan_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26) ON CONFLICT DO NOTHING",
    )
    .bind(&i.id)
    .bind(&i.record_id)
    .bind(&i.account_id)
    .bind(&i.instance_id)
    .bind(&i.nickname)
    .bind(&i.zone_id)
    .bind(&i.instance_spec)
    .bind(&i.instance_config)
    .bind(cycle(i.at))
    .bind(date(i.at))
    .bind(i.usage_start)
    .bind(i.usage_end)
    .bind(i.bill_type)
    .bind(i.subscription_type)
    .bind(i.item_code)
    .bind(i.item_name)
    .bind(&i.usage_amount)
    .bind(i.usage_unit)
    .bind(&i.list_price)
    .bind(&i.list_price_unit)
    .bind(&i.currency)
    .bind(i.gross.0)
    .bind(i.deducted_by_plan.0)
    .bind(i.amount.0)
    .bind(&i.plan_id)
    .bind(i.created_at)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// `seconds`-weighted quantity as hours with up to 4 decimals (`2048` GiB
/// for 20 minutes = `682.6667`).
pub fn per_hour(quantity_seconds: i64) -> String {
    let q = i128::from(quantity_seconds) * 10_000;
    let v = (q + 1800) / 3600;
    crate::money::fixed(v, 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_in_hours() {
        assert_eq!(per_hour(2048 * 1200), "682.6667");
        assert_eq!(per_hour(3600 * 5), "5");
    }
}
