//! Monthly statements (`cpfs billing report`): per account, per instance
//! (file system or resource plan), per billing item, with totals. The
//! lines are the bill items the BssOpenApi queries read, so the statement's
//! totals equal what the SDKs see.

use std::collections::BTreeMap;

use cpfs_controlplane::ControlPlane;
use serde_json::{json, Value};

use crate::bills::{account_name, load_items, BillItem, ItemFilter, Totals};
use crate::error::Result;
use crate::times::parse_cycle;

#[derive(Debug, Clone)]
pub struct Line {
    pub instance_id: String,
    pub subscription_type: String,
    pub bill_type: String,
    pub item_code: String,
    pub item_name: String,
    pub usage: String,
    pub usage_unit: String,
    pub totals: Totals,
}

#[derive(Debug, Clone)]
pub struct InstanceStatement {
    pub instance_id: String,
    pub lines: Vec<Line>,
    pub totals: Totals,
}

#[derive(Debug, Clone)]
pub struct AccountStatement {
    pub account_id: String,
    pub account_name: String,
    pub instances: Vec<InstanceStatement>,
    pub totals: Totals,
}

#[derive(Debug, Clone)]
pub struct Statement {
    pub billing_cycle: String,
    pub currency: String,
    pub accounts: Vec<AccountStatement>,
    pub totals: Totals,
}

/// Builds the statement of `month` (`YYYY-MM`) for every account.
pub async fn statement(cp: &ControlPlane, month: &str, currency: &str) -> Result<Statement> {
    parse_cycle(month)?;
    let items = load_items(cp, None, month, &ItemFilter::default()).await?;
    let mut by_account: BTreeMap<String, BTreeMap<String, Vec<BillItem>>> = BTreeMap::new();
    for i in items {
        by_account
            .entry(i.account_id.clone())
            .or_default()
            .entry(i.instance_id.clone())
            .or_default()
            .push(i);
    }
    let mut accounts = Vec::new();
    let mut grand = Totals::default();
    for (account_id, instances) in by_account {
        let mut a = AccountStatement {
            account_name: account_name(cp, &account_id).await?,
            account_id,
            instances: Vec::new(),
            totals: Totals::default(),
        };
        for (instance_id, items) in instances {
            let rows = crate::bills::instance_rows(&items, true, false);
            let mut inst = InstanceStatement {
                instance_id,
                lines: Vec::new(),
                totals: Totals::default(),
            };
            for i in &items {
                inst.totals.add(i);
                a.totals.add(i);
                grand.add(i);
            }
            inst.lines = rows
                .into_iter()
                .map(|r| Line {
                    instance_id: r.instance_id,
                    subscription_type: r.subscription_type,
                    bill_type: r.bill_type,
                    item_code: r.item_code,
                    item_name: r.item_name,
                    usage: r.usage,
                    usage_unit: r.usage_unit,
                    totals: r.totals,
                })
                .collect();
            a.instances.push(inst);
        }
        accounts.push(a);
    }
    Ok(Statement {
        billing_cycle: month.to_string(),
        currency: currency.to_string(),
        accounts,
        totals: grand,
    })
}

fn amounts(t: &Totals) -> Value {
    json!({
        "PretaxGrossAmount": t.gross.to_string(),
        "InvoiceDiscount": t.discount.to_string(),
        "DeductedByResourcePackage": t.deducted_by_plan.to_string(),
        "PretaxAmount": t.amount.to_string(),
    })
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

impl Statement {
    /// JSON; amounts are decimal strings with four fraction digits (exact).
    pub fn to_json(&self) -> Value {
        let accounts: Vec<Value> = self
            .accounts
            .iter()
            .map(|a| {
                let instances: Vec<Value> = a
                    .instances
                    .iter()
                    .map(|i| {
                        let lines: Vec<Value> = i
                            .lines
                            .iter()
                            .map(|l| {
                                merge(
                                    json!({
                                        "SubscriptionType": l.subscription_type,
                                        "Item": l.bill_type,
                                        "BillingItemCode": l.item_code,
                                        "BillingItem": l.item_name,
                                        "Usage": l.usage,
                                        "UsageUnit": l.usage_unit,
                                    }),
                                    amounts(&l.totals),
                                )
                            })
                            .collect();
                        merge(
                            json!({"InstanceID": i.instance_id, "Lines": lines}),
                            amounts(&i.totals),
                        )
                    })
                    .collect();
                merge(
                    json!({"AccountID": a.account_id, "AccountName": a.account_name, "Instances": instances}),
                    amounts(&a.totals),
                )
            })
            .collect();
        merge(
            json!({"BillingCycle": self.billing_cycle, "Currency": self.currency, "Accounts": accounts}),
            amounts(&self.totals),
        )
    }

    /// CSV (RFC 4180): one `line` row per instance and billing item, then
    /// an `instance` total row per instance, an `account` total row per
    /// account, and one `total` row.
    pub fn to_csv(&self) -> String {
        let mut out = String::from("row,billing_cycle,account_id,account_name,instance_id,subscription_type,bill_type,item_code,item_name,usage,usage_unit,currency,pretax_gross_amount,invoice_discount,deducted_by_resource_package,pretax_amount\r\n");
        let mut row = |kind: &str, a: (&str, &str), inst: &str, l: Option<&Line>, t: &Totals| {
            let fields = [
                kind.to_string(),
                self.billing_cycle.clone(),
                a.0.to_string(),
                a.1.to_string(),
                inst.to_string(),
                l.map(|l| l.subscription_type.clone()).unwrap_or_default(),
                l.map(|l| l.bill_type.clone()).unwrap_or_default(),
                l.map(|l| l.item_code.clone()).unwrap_or_default(),
                l.map(|l| l.item_name.clone()).unwrap_or_default(),
                l.map(|l| l.usage.clone()).unwrap_or_default(),
                l.map(|l| l.usage_unit.clone()).unwrap_or_default(),
                self.currency.clone(),
                t.gross.to_string(),
                t.discount.to_string(),
                t.deducted_by_plan.to_string(),
                t.amount.to_string(),
            ];
            let cells: Vec<String> = fields.iter().map(|f| csv_cell(f)).collect();
            out.push_str(&cells.join(","));
            out.push_str("\r\n");
        };
        for a in &self.accounts {
            let who = (a.account_id.as_str(), a.account_name.as_str());
            for i in &a.instances {
                for l in &i.lines {
                    row("line", who, &i.instance_id, Some(l), &l.totals);
                }
                row("instance", who, &i.instance_id, None, &i.totals);
            }
            row("account", who, "", None, &a.totals);
        }
        row("total", ("", ""), "", None, &self.totals);
        out
    }
}

/// Quotes a cell when it holds a comma, quote or line break; a leading
/// `=`, `+`, `-` or `@` is prefixed with `'` so spreadsheets do not run it.
fn csv_cell(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '@']) || (s.starts_with('-') && s.parse::<f64>().is_err()) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_and_defused() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("=SUM(A1)"), "'=SUM(A1)");
        assert_eq!(csv_cell("-1.5000"), "-1.5000");
    }
}
