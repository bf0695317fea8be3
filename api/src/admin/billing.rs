//! `cpfs billing ...`: metering on demand, statements, resource plans,
//! renewals and the price book, run by the server's own billing (its clock,
//! price book and retention).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use cpfs_controlplane::clock::format_utc;
use serde_json::json;

use super::{body, ok, AdminError, AdminResult, AdminState};

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Meter {
    /// Unix seconds or yyyy-MM-ddTHH:mm:ssZ; default: now.
    #[serde(default)]
    through: Option<String>,
}

/// Meters and charges every whole hour up to `Through` not billed yet
/// (and stops and releases expired subscriptions due by then).
pub async fn meter(State(s): State<Arc<AdminState>>, bytes: Bytes) -> AdminResult {
    let req: Meter = if bytes.is_empty() {
        Meter::default()
    } else {
        body(&bytes)?
    };
    let now = s.cp.now();
    let through = match req.through {
        Some(t) => cpfs_billing::times::parse_time("Through", &t)?,
        None => now,
    };
    if through > now {
        return Err(AdminError::Invalid(format!(
            "Through {} is in the future (now is {}); only time that has passed is billed",
            format_utc(through),
            format_utc(now)
        )));
    }
    let report = s.billing.pass(through).await?;
    ok(serde_json::to_value(&report).map_err(|_| AdminError::Internal)?)
}

#[derive(serde::Deserialize)]
pub struct StatementQuery {
    #[serde(default)]
    format: Option<String>,
}

/// The statement of a month (`YYYY-MM`): per account, file system and
/// billing item, as JSON or (`?format=csv`) CSV.
pub async fn statement(
    State(s): State<Arc<AdminState>>,
    Path(month): Path<String>,
    Query(q): Query<StatementQuery>,
) -> AdminResult {
    let st = cpfs_billing::report::statement(&s.cp, &month, &s.billing.book.currency).await?;
    match q.format.as_deref() {
        None | Some("json") => ok(st.to_json()),
        Some("csv") => Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            st.to_csv(),
        )
            .into_response()),
        Some(other) => Err(AdminError::Invalid(format!(
            "format {other:?}: expected json or csv"
        ))),
    }
}

fn plan_json(p: &cpfs_billing::plans::Plan, now: i64) -> serde_json::Value {
    json!({
        "PlanId": p.id,
        "AccountId": p.account_id,
        "SizeGiB": p.size_gib,
        "Months": p.months,
        "TotalGiBHours": cpfs_billing::plans::gib_hours(p.total_gib_seconds),
        "RemainingGiBHours": cpfs_billing::plans::gib_hours(p.remaining_gib_seconds),
        "EffectiveTime": format_utc(p.effective_at),
        "ExpiryTime": format_utc(p.expires_at),
        "Status": p.status(now),
        "Remark": p.remark,
    })
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct NewPlan {
    /// Account id or name.
    account: String,
    #[serde(rename = "SizeGiB")]
    size_gib: i64,
    months: i64,
    #[serde(default)]
    start: Option<String>,
    #[serde(default)]
    remark: String,
}

/// Buys a resource plan for an account (charged as an order).
pub async fn add_plan(State(s): State<Arc<AdminState>>, bytes: Bytes) -> AdminResult {
    let req: NewPlan = body(&bytes)?;
    let start = req
        .start
        .map(|t| cpfs_billing::times::parse_time("Start", &t))
        .transpose()?;
    let plan = s
        .billing
        .add_plan(&req.account, req.size_gib, req.months, start, &req.remark)
        .await?;
    ok(plan_json(&plan, s.cp.now()))
}

#[derive(serde::Deserialize)]
pub struct PlansQuery {
    #[serde(default)]
    account: Option<String>,
}

/// Plans of one account (id or name), or of every account.
pub async fn plans(State(s): State<Arc<AdminState>>, Query(q): Query<PlansQuery>) -> AdminResult {
    let account_id = match q.account {
        Some(a) => Some(
            cpfs_billing::plans::resolve_account(&s.cp, &a)
                .await?
                .ok_or_else(|| AdminError::NotFound(format!("no account with id or name {a}")))?,
        ),
        None => None,
    };
    let now = s.cp.now();
    let plans: Vec<serde_json::Value> = s
        .billing
        .plans(account_id.as_deref())
        .await?
        .iter()
        .map(|p| plan_json(p, now))
        .collect();
    ok(json!(plans))
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Renewal {
    file_system_id: String,
    months: u32,
}

/// Renews a subscription file system and charges the renewal at once.
pub async fn renew(State(s): State<Arc<AdminState>>, bytes: Bytes) -> AdminResult {
    let req: Renewal = body(&bytes)?;
    let owner = s.cp.file_system_owner(&req.file_system_id).await?;
    let r =
        s.cp.renew_file_system(&owner, &req.file_system_id, req.months, None)
            .await?;
    // Charged now rather than on the server's next pass.
    s.billing.charge_orders(s.cp.now()).await?;
    ok(json!({
        "FileSystemId": r.fs_id,
        "OrderId": r.order_id(),
        "ExpiredTime": format_utc(r.expired_at),
        "Resumed": r.resumed,
    }))
}

/// The price book in force, as the TOML it was read from.
pub async fn price_book(State(s): State<Arc<AdminState>>) -> AdminResult {
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/toml")],
        s.billing.book.source.clone(),
    )
        .into_response())
}
