//! The price book: a readable TOML file (the default one is compiled in,
//! `billing/price-book.toml`), parsed into exact decimals and checked once
//! at start-up so a bad price never reaches a bill.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{BillingError, Result};
use crate::money::{Decimal, Money, PRICE_SCALE};

/// The price book shipped with the binary.
pub const DEFAULT_PRICE_BOOK: &str = include_str!("../price-book.toml");

/// Seconds in the 30-day month the monthly prices are divided by.
pub const MONTH_SECONDS: i128 = 30 * 24 * 3600;
pub const HOUR_SECONDS: i128 = 3600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBook {
    currency: String,
    editions: BTreeMap<String, RawEdition>,
    #[serde(default)]
    subscription_discounts: BTreeMap<String, String>,
    resource_plan: RawPlan,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEdition {
    capacity_gib_month: String,
    bandwidth_mbps_hour: String,
    subscription_gib_month: String,
    subscription_mbps_month: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    gib_month: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditionPrices {
    pub capacity_gib_month: Decimal,
    pub bandwidth_mbps_hour: Decimal,
    pub subscription_gib_month: Decimal,
    pub subscription_mbps_month: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceBook {
    pub currency: String,
    pub editions: BTreeMap<String, EditionPrices>,
    /// (at least N months, fraction off), ascending.
    pub discounts: Vec<(u32, Decimal)>,
    pub plan_gib_month: Decimal,
    /// The TOML it was read from (printed by `cpfs billing price-book`).
    pub source: String,
}

impl PriceBook {
    pub fn builtin() -> Result<PriceBook> {
        PriceBook::parse(DEFAULT_PRICE_BOOK)
    }

    pub fn parse(text: &str) -> Result<PriceBook> {
        let raw: RawBook =
            toml::from_str(text).map_err(|e| BillingError::PriceBook(e.to_string()))?;
        let cur = raw.currency.trim();
        if cur.len() != 3 || !cur.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(BillingError::PriceBook(format!(
                "currency must be a three-letter ISO code such as CNY or USD, got \"{cur}\""
            )));
        }
        let price = |what: &str, s: &str| {
            Decimal::parse(s).map_err(|e| BillingError::PriceBook(format!("{what}: {e}")))
        };
        let mut editions = BTreeMap::new();
        for (name, e) in &raw.editions {
            editions.insert(
                name.clone(),
                EditionPrices {
                    capacity_gib_month: price(
                        &format!("editions.{name}.capacity_gib_month"),
                        &e.capacity_gib_month,
                    )?,
                    bandwidth_mbps_hour: price(
                        &format!("editions.{name}.bandwidth_mbps_hour"),
                        &e.bandwidth_mbps_hour,
                    )?,
                    subscription_gib_month: price(
                        &format!("editions.{name}.subscription_gib_month"),
                        &e.subscription_gib_month,
                    )?,
                    subscription_mbps_month: price(
                        &format!("editions.{name}.subscription_mbps_month"),
                        &e.subscription_mbps_month,
                    )?,
                },
            );
        }
        for needed in cpfs_controlplane::tiers::StorageType::ALL {
            if !editions.contains_key(*needed) {
                return Err(BillingError::PriceBook(format!(
                    "no prices for edition {needed} (every StorageType needs [editions.{needed}])"
                )));
            }
        }
        let mut discounts = Vec::new();
        for (months, off) in &raw.subscription_discounts {
            let m: u32 = months.parse().map_err(|_| {
                BillingError::PriceBook(format!(
                    "subscription_discounts: \"{months}\" is not a number of months"
                ))
            })?;
            let d = price(&format!("subscription_discounts.{months}"), off)?;
            if d.0 >= PRICE_SCALE {
                return Err(BillingError::PriceBook(format!(
                    "subscription_discounts.{months}: a discount is a fraction below 1"
                )));
            }
            discounts.push((m, d));
        }
        discounts.sort();
        Ok(PriceBook {
            currency: cur.to_string(),
            editions,
            discounts,
            plan_gib_month: price("resource_plan.gib_month", &raw.resource_plan.gib_month)?,
            source: text.to_string(),
        })
    }

    /// Prices of an edition; an unknown one (impossible once validated)
    /// is an error rather than a free file system.
    pub fn edition(&self, storage_type: &str) -> Result<&EditionPrices> {
        self.editions
            .get(storage_type)
            .ok_or_else(|| BillingError::PriceBook(format!("no prices for edition {storage_type}")))
    }

    /// The fraction off a subscription term of `months`.
    pub fn discount(&self, months: i64) -> Decimal {
        self.discounts
            .iter()
            .rev()
            .find(|(m, _)| i64::from(*m) <= months)
            .map_or(Decimal(0), |(_, d)| *d)
    }

    /// Pay-as-you-go capacity: `gib_seconds` of configured capacity.
    pub fn capacity_charge(&self, e: &EditionPrices, gib_seconds: i64) -> Money {
        Money::from_ratio(
            i128::from(gib_seconds) * e.capacity_gib_month.0,
            MONTH_SECONDS * PRICE_SCALE,
        )
    }

    /// Pay-as-you-go bandwidth: `mbps_seconds` of configured bandwidth.
    pub fn bandwidth_charge(&self, e: &EditionPrices, mbps_seconds: i64) -> Money {
        Money::from_ratio(
            i128::from(mbps_seconds) * e.bandwidth_mbps_hour.0,
            HOUR_SECONDS * PRICE_SCALE,
        )
    }

    /// A subscription term: (list amount, amount after the term discount).
    pub fn subscription_charge(
        &self,
        e: &EditionPrices,
        capacity_gib: i64,
        bandwidth_mbps: i64,
        months: i64,
    ) -> (Money, Money) {
        let per_month = i128::from(capacity_gib) * e.subscription_gib_month.0
            + i128::from(bandwidth_mbps) * e.subscription_mbps_month.0;
        let list = per_month * i128::from(months);
        let off = self.discount(months).0;
        (
            Money::from_ratio(list, PRICE_SCALE),
            Money::from_ratio(list * (PRICE_SCALE - off), PRICE_SCALE * PRICE_SCALE),
        )
    }

    /// Upgrading a subscription: the difference of the monthly prices for
    /// the `remaining_secs` left of the term (30-day months), at list price.
    pub fn upgrade_charge(
        &self,
        e: &EditionPrices,
        delta_gib: i64,
        delta_mbps: i64,
        remaining_secs: i64,
    ) -> Money {
        let per_month = i128::from(delta_gib) * e.subscription_gib_month.0
            + i128::from(delta_mbps) * e.subscription_mbps_month.0;
        Money::from_ratio(
            per_month * i128::from(remaining_secs.max(0)),
            MONTH_SECONDS * PRICE_SCALE,
        )
    }

    /// A resource plan of `size_gib` for `months`.
    pub fn plan_charge(&self, size_gib: i64, months: i64) -> Money {
        Money::from_ratio(
            i128::from(size_gib) * i128::from(months) * self.plan_gib_month.0,
            PRICE_SCALE,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_book_parses_and_prices_every_edition() {
        let b = PriceBook::builtin().unwrap();
        assert_eq!(b.currency, "CNY");
        let e = b.edition("advance_200").unwrap();
        // The published example: 3,600 GiB for a 30-day month = 5,040.
        assert_eq!(
            b.capacity_charge(e, 3600 * 30 * 24 * 3600),
            Money(5_040 * 10_000)
        );
        // 8,000 MB/s for 30 days at 0.0054 = 31,104.
        assert_eq!(
            b.bandwidth_charge(e, 8000 * 30 * 24 * 3600),
            Money(31_104 * 10_000)
        );
        // A 1 TiB one-month plan = 768.
        assert_eq!(b.plan_charge(1024, 1), Money(768 * 10_000));
    }

    #[test]
    fn discounts_apply_from_their_term() {
        let b = PriceBook::builtin().unwrap();
        assert_eq!(b.discount(1), Decimal(0));
        assert_eq!(b.discount(12), Decimal::parse("0.15").unwrap());
        assert_eq!(b.discount(13), Decimal::parse("0.15").unwrap());
        let e = b.edition("advance_200").unwrap();
        // 100 GiB + 10 MB/s for 12 months: (120 + 32) * 12 = 1824, 15% off.
        let (list, net) = b.subscription_charge(e, 100, 10, 12);
        assert_eq!(list, Money(1_824 * 10_000));
        assert_eq!(net, Money(15_504_000));
    }

    #[test]
    fn refuses_bad_books() {
        let good = DEFAULT_PRICE_BOOK;
        for (from, to) in [
            ("currency = \"CNY\"", "currency = \"yuan\""),
            (
                "capacity_gib_month = \"1.4\"",
                "capacity_gib_month = \"-1\"",
            ),
            ("capacity_gib_month = \"1.4\"", "capacity_gib_month = 1.4"),
            ("[editions.economic]", "[editions.cheap]"),
            ("36 = \"0.50\"", "36 = \"1.5\""),
            ("gib_month = \"0.75\"", "gib_month = \"0.75\"\nsurprise = 1"),
        ] {
            let text = good.replace(from, to);
            assert_ne!(text, good, "{from}");
            assert!(PriceBook::parse(&text).is_err(), "accepted {to}");
        }
    }
}
