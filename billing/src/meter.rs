//! The hourly meter and the order charger.
//!
//! Usage of a file system over time is a timeline built from its events
//! (create, upgrade, renew, stop, delete): piecewise constant capacity and
//! bandwidth, active or not. Each whole hour is metered once (a usage row
//! keyed by (file system, hour)), prorated to the second for the hours in
//! which something changed; pay-as-you-go hours are charged from the price
//! book in the same transaction, after offsetting capacity against the
//! account's resource plans. Hours are processed oldest first across all
//! file systems, so plans are consumed in time order even after downtime.

use std::collections::BTreeMap;

use cpfs_controlplane::events::{EventKind, FsEvent, EVENT_COLUMNS};
use cpfs_controlplane::subscriptions::order_id;
use sqlx::{Any, Row, Transaction};

use crate::error::Result;
use crate::items::{insert_item, per_hour, NewItem};
use crate::money::Money;
use crate::plans;
use crate::price_book::{EditionPrices, PriceBook};
use crate::times::hour_floor;
use crate::Billing;

/// One stretch of constant configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub from: i64,
    /// Exclusive; `i64::MAX` while open.
    pub to: i64,
    pub active: bool,
    pub capacity_gib: i64,
    pub bandwidth_mbps: i64,
}

/// A file system's life as billing sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    pub start: i64,
    /// When it was deleted or released.
    pub end: Option<i64>,
    pub segments: Vec<Segment>,
}

/// What one hour of a file system adds up to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HourUsage {
    /// Seconds it was active (not stopped) within the hour.
    pub seconds: i64,
    pub capacity_gib_seconds: i64,
    pub bandwidth_mbps_seconds: i64,
    /// Configuration at the end of the hour (for the bill's description).
    pub capacity_gib: i64,
    pub bandwidth_mbps: i64,
}

impl Timeline {
    /// Builds the timeline from events in any order (ordered here by time,
    /// then sequence: a stop is dated at the expiry though recorded later).
    pub fn from_events(events: &[FsEvent]) -> Option<Timeline> {
        let mut evs: Vec<&FsEvent> = events.iter().collect();
        evs.sort_by_key(|e| (e.at, e.seq));
        let first = evs.iter().find(|e| e.kind == EventKind::Create)?;
        let mut segments: Vec<Segment> = Vec::new();
        let mut end = None;
        for e in evs.iter().filter(|e| e.at >= first.at) {
            let prev = segments.last().copied();
            let active = match e.kind {
                EventKind::Create | EventKind::Renew => true,
                EventKind::Stop | EventKind::Delete => false,
                EventKind::Upgrade => prev.is_none_or(|p| p.active),
            };
            if let Some(last) = segments.last_mut() {
                last.to = e.at;
            }
            if e.kind == EventKind::Delete {
                end = Some(e.at);
                break;
            }
            segments.push(Segment {
                from: e.at,
                to: i64::MAX,
                active,
                capacity_gib: e.capacity_gib,
                bandwidth_mbps: e.bandwidth_mbps,
            });
        }
        segments.retain(|s| s.to > s.from);
        Some(Timeline {
            start: first.at,
            end,
            segments,
        })
    }

    pub fn hour(&self, hour: i64) -> HourUsage {
        let (h0, h1) = (hour, hour + 3600);
        let mut u = HourUsage::default();
        for s in &self.segments {
            let overlap = s.to.min(h1) - s.from.max(h0);
            if overlap <= 0 {
                continue;
            }
            u.capacity_gib = s.capacity_gib;
            u.bandwidth_mbps = s.bandwidth_mbps;
            if s.active {
                u.seconds += overlap;
                u.capacity_gib_seconds += s.capacity_gib * overlap;
                u.bandwidth_mbps_seconds += s.bandwidth_mbps * overlap;
            }
        }
        u
    }
}

#[derive(Debug, Clone)]
struct MeterState {
    metered_through: i64,
    charged_seq: i64,
}

struct FsMeter {
    fs_id: String,
    events: Vec<FsEvent>,
    timeline: Timeline,
    state: MeterState,
}

fn config(cap: i64, bw: i64) -> String {
    format!("Capacity:{cap}GiB;Bandwidth:{bw}MB/s")
}

impl Billing {
    /// Unfinished file systems with their events and meter state.
    async fn open_meters(&self) -> Result<Vec<FsMeter>> {
        let pool = &self.cp.store.pool;
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM fs_events WHERE fs_id NOT IN (SELECT fs_id FROM meter_state WHERE finished = 1) ORDER BY fs_id, seq"
        ))
        .fetch_all(pool)
        .await?;
        let mut by_fs: BTreeMap<String, Vec<FsEvent>> = BTreeMap::new();
        for r in &rows {
            let e = FsEvent::from_row(r)?;
            by_fs.entry(e.fs_id.clone()).or_default().push(e);
        }
        let states = sqlx::query(
            "SELECT fs_id, metered_through, charged_seq FROM meter_state WHERE finished = 0",
        )
        .fetch_all(pool)
        .await?;
        let mut known: BTreeMap<String, MeterState> = BTreeMap::new();
        for r in &states {
            known.insert(
                r.try_get("fs_id")?,
                MeterState {
                    metered_through: r.try_get("metered_through")?,
                    charged_seq: r.try_get("charged_seq")?,
                },
            );
        }
        let mut out = Vec::new();
        for (fs_id, events) in by_fs {
            let Some(timeline) = Timeline::from_events(&events) else {
                continue;
            };
            let state = match known.remove(&fs_id) {
                Some(s) => s,
                None => {
                    let s = MeterState {
                        metered_through: hour_floor(timeline.start),
                        charged_seq: 0,
                    };
                    sqlx::query("INSERT INTO meter_state (fs_id, metered_through, charged_seq, finished) VALUES ($1, $2, 0, 0) ON CONFLICT DO NOTHING")
                        .bind(&fs_id)
                        .bind(s.metered_through)
                        .execute(pool)
                        .await?;
                    s
                }
            };
            out.push(FsMeter {
                fs_id,
                events,
                timeline,
                state,
            });
        }
        Ok(out)
    }

    /// Charges the orders (subscription purchase, renewal, upgrade of a
    /// subscription) of events dated up to `through`. Returns how many
    /// were charged by this call.
    pub async fn charge_orders(&self, through: i64) -> Result<u64> {
        let mut charged = 0;
        for m in self.open_meters().await? {
            let mut prev: Option<&FsEvent> = None;
            for e in &m.events {
                let before = prev;
                prev = Some(e);
                if e.seq <= m.state.charged_seq || e.at > through {
                    continue;
                }
                let mut tx = self.cp.store.begin_write().await?;
                if let Some(item) = self.order_item(e, before)? {
                    if insert_item(&mut tx, &item).await? {
                        charged += 1;
                    }
                }
                sqlx::query(
                    "UPDATE meter_state SET charged_seq = $1 WHERE fs_id = $2 AND charged_seq < $1",
                )
                .bind(e.seq)
                .bind(&m.fs_id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
        }
        Ok(charged)
    }

    /// The bill line an event orders, if any.
    fn order_item(&self, e: &FsEvent, before: Option<&FsEvent>) -> Result<Option<NewItem>> {
        if e.charge_type != "Subscription" {
            return Ok(None);
        }
        let book: &PriceBook = &self.book;
        let prices = book.edition(&e.storage_type)?;
        let term_end = e.expired_at.unwrap_or(e.at);
        let base = |code: &'static str, name: &'static str| NewItem {
            id: format!("order:{}:{}", e.fs_id, e.seq),
            record_id: order_id(&e.fs_id, e.seq),
            account_id: e.account_id.clone(),
            instance_id: e.fs_id.clone(),
            nickname: e.description.clone(),
            zone_id: e.zone_id.clone(),
            instance_spec: e.storage_type.clone(),
            instance_config: config(e.capacity_gib, e.bandwidth_mbps),
            at: e.at,
            usage_start: e.at,
            usage_end: term_end,
            bill_type: "SubscriptionOrder",
            subscription_type: "Subscription",
            item_code: code,
            item_name: name,
            usage_amount: String::new(),
            usage_unit: "Month",
            list_price: String::new(),
            list_price_unit: format!("{}/Month", book.currency),
            currency: book.currency.clone(),
            gross: Money::ZERO,
            deducted_by_plan: Money::ZERO,
            amount: Money::ZERO,
            plan_id: String::new(),
            created_at: e.at,
        };
        Ok(match e.kind {
            EventKind::Create | EventKind::Renew if e.months > 0 => {
                let (list, net) =
                    book.subscription_charge(prices, e.capacity_gib, e.bandwidth_mbps, e.months);
                let (code, name) = if e.kind == EventKind::Create {
                    ("subscription", "CPFS subscription")
                } else {
                    ("renewal", "CPFS subscription renewal")
                };
                let mut item = base(code, name);
                item.usage_amount = e.months.to_string();
                item.list_price = monthly(prices, e.capacity_gib, e.bandwidth_mbps);
                item.gross = list;
                item.amount = net;
                Some(item)
            }
            EventKind::Upgrade => {
                let Some(b) = before else { return Ok(None) };
                let remaining = term_end - e.at;
                let amount = book.upgrade_charge(
                    prices,
                    e.capacity_gib - b.capacity_gib,
                    e.bandwidth_mbps - b.bandwidth_mbps,
                    remaining,
                );
                if remaining <= 0 || amount == Money::ZERO {
                    return Ok(None);
                }
                let mut item = base("upgrade", "CPFS subscription upgrade (prorated)");
                item.usage_amount = crate::money::fixed(
                    (i128::from(remaining) * 10_000 + 1_296_000) / 2_592_000,
                    4,
                );
                item.list_price = monthly(
                    prices,
                    e.capacity_gib - b.capacity_gib,
                    e.bandwidth_mbps - b.bandwidth_mbps,
                );
                item.gross = amount;
                item.amount = amount;
                Some(item)
            }
            _ => None,
        })
    }

    /// Meters every whole hour ending by `through` that is not metered yet,
    /// oldest first across all file systems. Returns the hours metered by
    /// this call.
    pub async fn meter(&self, through: i64) -> Result<u64> {
        let mut meters = self.open_meters().await?;
        let mut metered = 0;
        loop {
            // The oldest pending hour of any file system.
            let next = meters
                .iter()
                .filter(|m| self.pending(m, through))
                .map(|m| m.state.metered_through)
                .min();
            let Some(hour) = next else { break };
            for m in meters.iter_mut() {
                if m.state.metered_through != hour || !self.pending(m, through) {
                    continue;
                }
                if self.meter_hour(m, hour).await? {
                    metered += 1;
                }
                m.state.metered_through = hour + 3600;
            }
        }
        for m in &meters {
            let done = m
                .timeline
                .end
                .is_some_and(|end| m.state.metered_through >= end)
                && m.events
                    .last()
                    .is_some_and(|e| e.seq <= m.state.charged_seq || e.kind == EventKind::Delete);
            if done {
                sqlx::query("UPDATE meter_state SET finished = 1 WHERE fs_id = $1 AND metered_through >= $2")
                    .bind(&m.fs_id)
                    .bind(m.state.metered_through)
                    .execute(&self.cp.store.pool)
                    .await?;
            }
        }
        Ok(metered)
    }

    fn pending(&self, m: &FsMeter, through: i64) -> bool {
        let h = m.state.metered_through;
        h + 3600 <= through && m.timeline.end.is_none_or(|end| h < end)
    }

    /// Meters one hour of one file system in one transaction; false when
    /// another pass had already metered it.
    async fn meter_hour(&self, m: &FsMeter, hour: i64) -> Result<bool> {
        let u = m.timeline.hour(hour);
        let Some(last) = m.events.last() else {
            return Ok(false);
        };
        // Usage comes from the namespace's owner, at metering time, and
        // from what the data nodes hold: chunk writes past a file's
        // recorded size are stored (and reported by the nodes) though the
        // namespace never counts them, so the larger of the two is billed.
        let used = self.cp.used_bytes(&m.fs_id).await?.min(i64::MAX as u64) as i64;
        let mut tx = self.cp.store.begin_write().await?;
        let held = stored_per_copy(&mut tx, &m.fs_id, self.cp.policy.replicas).await?;
        let used = used.max(held);
        let (read, written) = traffic_delta(&mut tx, &m.fs_id).await?;
        let inserted = sqlx::query(
            "INSERT INTO usage_hours (fs_id, hour, account_id, seconds, capacity_gib_seconds, bandwidth_mbps_seconds, used_bytes, bytes_read, bytes_written, metered_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
        )
        .bind(&m.fs_id)
        .bind(hour)
        .bind(&last.account_id)
        .bind(u.seconds)
        .bind(u.capacity_gib_seconds)
        .bind(u.bandwidth_mbps_seconds)
        .bind(used)
        .bind(read)
        .bind(written)
        .bind(self.cp.now())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            // Another pass metered this hour; its counters stand.
            tx.rollback().await?;
            return Ok(false);
        }
        let first = m.events.first().unwrap_or(last);
        if first.charge_type == "PayAsYouGo" && u.seconds > 0 {
            let prices = self.book.edition(&first.storage_type)?.clone();
            self.charge_hour(&mut tx, m, last, hour, &u, &prices)
                .await?;
        }
        sqlx::query(
            "UPDATE meter_state SET metered_through = $1 WHERE fs_id = $2 AND metered_through < $1",
        )
        .bind(hour + 3600)
        .bind(&m.fs_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn charge_hour(
        &self,
        tx: &mut Transaction<'static, Any>,
        m: &FsMeter,
        last: &FsEvent,
        hour: i64,
        u: &HourUsage,
        prices: &EditionPrices,
    ) -> Result<()> {
        let book = &self.book;
        let now = self.cp.now();
        let item = |code: &'static str, name: &'static str| NewItem {
            id: format!("hour:{}:{hour}:{code}", m.fs_id),
            record_id: format!("{}-{hour}", m.fs_id),
            account_id: last.account_id.clone(),
            instance_id: m.fs_id.clone(),
            nickname: last.description.clone(),
            zone_id: last.zone_id.clone(),
            instance_spec: last.storage_type.clone(),
            instance_config: config(u.capacity_gib, u.bandwidth_mbps),
            at: hour,
            usage_start: hour,
            usage_end: hour + 3600,
            bill_type: "PayAsYouGoBill",
            subscription_type: "PayAsYouGo",
            item_code: code,
            item_name: name,
            usage_amount: String::new(),
            usage_unit: "GiB*Hour",
            list_price: String::new(),
            list_price_unit: String::new(),
            currency: book.currency.clone(),
            gross: Money::ZERO,
            deducted_by_plan: Money::ZERO,
            amount: Money::ZERO,
            plan_id: String::new(),
            created_at: now,
        };
        if u.capacity_gib_seconds > 0 {
            let gross = book.capacity_charge(prices, u.capacity_gib_seconds);
            let (offset, plans) =
                plans::consume(tx, &last.account_id, hour, u.capacity_gib_seconds).await?;
            let deducted = if offset == u.capacity_gib_seconds {
                gross
            } else {
                book.capacity_charge(prices, offset)
            };
            let mut i = item("size", "CPFS configured capacity");
            i.usage_amount = per_hour(u.capacity_gib_seconds);
            i.list_price = prices.capacity_gib_month.to_string();
            i.list_price_unit = format!("{}/GiB/Month", book.currency);
            i.gross = gross;
            i.deducted_by_plan = deducted;
            i.amount = gross - deducted;
            i.plan_id = plans.join(",");
            insert_item(tx, &i).await?;
        }
        if u.bandwidth_mbps_seconds > 0 {
            let gross = book.bandwidth_charge(prices, u.bandwidth_mbps_seconds);
            let mut i = item("bandwidth", "CPFS configured bandwidth");
            i.usage_amount = per_hour(u.bandwidth_mbps_seconds);
            i.usage_unit = "MB/s*Hour";
            i.list_price = prices.bandwidth_mbps_hour.to_string();
            i.list_price_unit = format!("{}/(MB/s)/Hour", book.currency);
            i.gross = gross;
            i.amount = gross;
            insert_item(tx, &i).await?;
        }
        Ok(())
    }
}

fn monthly(prices: &EditionPrices, cap: i64, bw: i64) -> String {
    let v = i128::from(cap) * prices.subscription_gib_month.0
        + i128::from(bw) * prices.subscription_mbps_month.0;
    crate::money::fixed(v, 8)
}

/// Bytes of the file system the data nodes report holding, per copy (the
/// sum over nodes divided by the replicas of every chunk).
async fn stored_per_copy(
    tx: &mut Transaction<'static, Any>,
    fs_id: &str,
    replicas: usize,
) -> Result<i64> {
    let total: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(bytes_stored), 0) AS BIGINT) FROM node_usage WHERE fs_id = $1",
    )
    .bind(fs_id)
    .fetch_one(&mut **tx)
    .await?;
    Ok(total.max(0) / (replicas.max(1) as i64))
}

/// Bytes read and written since the previous metered hour, from the
/// cumulative counters the data nodes report (a counter that went down was
/// reset by a node restart: all of it is new).
async fn traffic_delta(tx: &mut Transaction<'static, Any>, fs_id: &str) -> Result<(i64, i64)> {
    let now =
        sqlx::query("SELECT node_id, bytes_read, bytes_written FROM node_usage WHERE fs_id = $1")
            .bind(fs_id)
            .fetch_all(&mut **tx)
            .await?;
    let mut read = 0i64;
    let mut written = 0i64;
    for r in &now {
        let node: String = r.try_get("node_id")?;
        let (cr, cw): (i64, i64) = (r.try_get("bytes_read")?, r.try_get("bytes_written")?);
        let prev = sqlx::query("SELECT bytes_read, bytes_written FROM usage_counters WHERE fs_id = $1 AND node_id = $2")
            .bind(fs_id)
            .bind(&node)
            .fetch_optional(&mut **tx)
            .await?;
        let (pr, pw) = match prev {
            Some(p) => (
                p.try_get::<i64, _>("bytes_read")?,
                p.try_get::<i64, _>("bytes_written")?,
            ),
            None => (0, 0),
        };
        read = read.saturating_add(if cr >= pr { cr - pr } else { cr });
        written = written.saturating_add(if cw >= pw { cw - pw } else { cw });
        sqlx::query("INSERT INTO usage_counters (fs_id, node_id, bytes_read, bytes_written) VALUES ($1, $2, $3, $4) ON CONFLICT (fs_id, node_id) DO UPDATE SET bytes_read = excluded.bytes_read, bytes_written = excluded.bytes_written")
            .bind(fs_id)
            .bind(&node)
            .bind(cr)
            .bind(cw)
            .execute(&mut **tx)
            .await?;
    }
    Ok((read, written))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: i64, at: i64, kind: EventKind, cap: i64, bw: i64) -> FsEvent {
        FsEvent {
            fs_id: "cpfs-1".into(),
            seq,
            account_id: "a".into(),
            at,
            kind,
            storage_type: "advance_100".into(),
            capacity_gib: cap,
            bandwidth_mbps: bw,
            charge_type: "PayAsYouGo".into(),
            expired_at: None,
            months: 0,
            zone_id: "z".into(),
            description: String::new(),
        }
    }

    #[test]
    fn prorates_the_hours_of_create_upgrade_and_delete() {
        let h = 36_000; // 10:00
        let t = Timeline::from_events(&[
            ev(1, h + 1200, EventKind::Create, 2048, 200),
            ev(2, h + 5 * 3600 + 2400, EventKind::Upgrade, 5120, 500),
            ev(3, h + 53 * 3600 + 1200, EventKind::Delete, 5120, 500),
        ])
        .unwrap();
        assert_eq!(t.hour(h - 3600), HourUsage::default());
        let first = t.hour(h);
        assert_eq!(
            (first.seconds, first.capacity_gib_seconds),
            (2400, 2048 * 2400)
        );
        let full = t.hour(h + 3600);
        assert_eq!(full.capacity_gib_seconds, 2048 * 3600);
        let up = t.hour(h + 5 * 3600);
        assert_eq!(up.capacity_gib_seconds, 2048 * 2400 + 5120 * 1200);
        assert_eq!(up.bandwidth_mbps_seconds, 200 * 2400 + 500 * 1200);
        let last = t.hour(h + 53 * 3600);
        assert_eq!(
            (last.seconds, last.capacity_gib_seconds),
            (1200, 5120 * 1200)
        );
        assert_eq!(t.hour(h + 54 * 3600).seconds, 0);
        assert_eq!(t.end, Some(h + 53 * 3600 + 1200));
    }

    #[test]
    fn stopped_time_is_not_active_and_renewal_resumes() {
        let mut stop = ev(2, 7200 + 600, EventKind::Stop, 100, 10);
        stop.seq = 3; // recorded after an upgrade that happened later
        let t = Timeline::from_events(&[
            ev(1, 0, EventKind::Create, 100, 10),
            ev(2, 7200 + 1800, EventKind::Upgrade, 200, 10),
            stop,
            ev(4, 4 * 3600, EventKind::Renew, 200, 10),
        ])
        .unwrap();
        assert_eq!(t.hour(7200).seconds, 600);
        assert_eq!(t.hour(3 * 3600).seconds, 0);
        assert_eq!(t.hour(4 * 3600).capacity_gib_seconds, 200 * 3600);
    }
}
