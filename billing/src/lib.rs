//! Billing: the price book, the hourly meter, pay-as-you-go and
//! subscription charging, resource plans, bills and statements.
//!
//! The control plane records what happened to every file system
//! (`fs_events`, written in the same transaction as the change); billing
//! reads that history and turns it into usage rows (one per file system and
//! hour) and bill items. Everything it writes has a unique key, so a pass
//! can run any number of times, from any number of processes, and after any
//! downtime: each hour and each order is billed exactly once.

pub mod bills;
pub mod error;
mod items;
pub mod meter;
pub mod money;
pub mod plans;
pub mod price_book;
pub mod report;
pub mod times;

use std::sync::Arc;

use cpfs_controlplane::ControlPlane;

pub use error::{BillingError, Result};
pub use money::{Decimal, Money};
pub use price_book::PriceBook;

/// Product codes the bills carry (CPFS is billed under the NAS product).
pub const PRODUCT_CODE: &str = "nas";
pub const PRODUCT_NAME: &str = "File Storage NAS";
pub const COMMODITY_PAYG: &str = "nas_cpfs_post";
pub const COMMODITY_SUBSCRIPTION: &str = "nas_cpfs_pre";
pub const COMMODITY_PLAN: &str = "nas_cpfs_plan";

/// Default time an expired subscription is kept (stopped) before it is
/// released: the cloud's 15 days.
pub const DEFAULT_RETENTION_SECS: i64 = 15 * 86_400;

/// An hour is metered this long after it ends, so a change committed at
/// the very end of the hour is part of it.
pub const SETTLE_SECS: i64 = 60;

#[derive(Clone)]
pub struct Billing {
    pub cp: ControlPlane,
    pub book: Arc<PriceBook>,
    /// How long an expired subscription stays stopped before release.
    pub retention_secs: i64,
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PassReport {
    pub through: i64,
    pub stopped: Vec<String>,
    pub released: Vec<String>,
    pub orders_charged: u64,
    pub hours_metered: u64,
}

impl Billing {
    pub fn new(cp: ControlPlane, book: Arc<PriceBook>, retention_secs: i64) -> Billing {
        Billing {
            cp,
            book,
            retention_secs,
        }
    }

    /// Applies expiry rules, charges orders and meters every whole hour that
    /// ended by `through` and is not metered yet.
    pub async fn pass(&self, through: i64) -> Result<PassReport> {
        let expired = self
            .cp
            .expire_subscriptions(through, self.retention_secs)
            .await?;
        let orders_charged = self.charge_orders(through).await?;
        let hours_metered = self.meter(through).await?;
        Ok(PassReport {
            through,
            stopped: expired.stopped,
            released: expired.released,
            orders_charged,
            hours_metered,
        })
    }

    /// One pass of the background loop of `cpfs serve` (run at start,
    /// which fills whatever hours passed while the server was down, then
    /// every billing interval): bills every settled hour up to now.
    pub async fn scheduled_pass(&self) -> std::result::Result<(), String> {
        let through = self.cp.now() - SETTLE_SECS;
        let r = self.pass(through).await.map_err(|e| e.to_string())?;
        if r.hours_metered > 0
            || r.orders_charged > 0
            || !r.stopped.is_empty()
            || !r.released.is_empty()
        {
            tracing::info!(
                through = %cpfs_controlplane::clock::format_utc(through),
                hours = r.hours_metered,
                orders = r.orders_charged,
                stopped = r.stopped.len(),
                released = r.released.len(),
                "billing pass"
            )
        }
        Ok(())
    }
}
