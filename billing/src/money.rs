//! Exact money. Unit prices are decimals with up to 8 fraction digits
//! ([`Decimal`]); amounts are integers in 1/10000 of the currency unit
//! ([`Money`]). Every bill line is computed from integers and rounded once
//! (half away from zero) to 1/10000, so totals are sums of the lines and
//! add up exactly.

use std::fmt;

use crate::error::BillingError;

/// Fraction digits a price may carry.
pub const PRICE_SCALE: i128 = 100_000_000;
/// Minor units per currency unit.
pub const MONEY_SCALE: i64 = 10_000;

/// A non-negative decimal price, in 1e-8 units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Decimal(pub i128);

impl Decimal {
    /// Parses `12`, `0.0054`, `1.40` (no sign, no exponent, at most 8
    /// fraction digits).
    pub fn parse(s: &str) -> Result<Decimal, BillingError> {
        let bad = || BillingError::InvalidNumber(s.chars().take(40).collect());
        let t = s.trim();
        let (int, frac) = t.split_once('.').unwrap_or((t, ""));
        if int.is_empty()
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
            || frac.len() > 8
            || int.len() > 18
        {
            return Err(bad());
        }
        let whole: i128 = int.parse().map_err(|_| bad())?;
        let mut f: i128 = if frac.is_empty() {
            0
        } else {
            frac.parse().map_err(|_| bad())?
        };
        for _ in frac.len()..8 {
            f *= 10;
        }
        Ok(Decimal(whole * PRICE_SCALE + f))
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", fixed(self.0, 8))
    }
}

/// An amount in 1/10000 of the currency unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Money(pub i64);

impl Money {
    pub const ZERO: Money = Money(0);

    /// `num / den` currency units (in 1e-8 price units times quantities),
    /// rounded half away from zero to 1/10000. `den` must be positive.
    pub fn from_ratio(num: i128, den: i128) -> Money {
        // num / den units = num * 10^4 / den minor units.
        let n = num * i128::from(MONEY_SCALE);
        let q = n / den;
        let r = n % den;
        let q = if 2 * r.abs() >= den {
            q + n.signum()
        } else {
            q
        };
        Money(q.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64)
    }

    /// The JSON number the BssOpenApi models expect (float); exact for any
    /// amount below 2^53 minor units.
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / MONEY_SCALE as f64
    }
}

impl std::ops::Add for Money {
    type Output = Money;
    fn add(self, o: Money) -> Money {
        Money(self.0.saturating_add(o.0))
    }
}

impl std::ops::Sub for Money {
    type Output = Money;
    fn sub(self, o: Money) -> Money {
        Money(self.0.saturating_sub(o.0))
    }
}

impl std::ops::AddAssign for Money {
    fn add_assign(&mut self, o: Money) {
        *self = *self + o;
    }
}

impl std::iter::Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Money {
        iter.fold(Money::ZERO, |a, b| a + b)
    }
}

impl fmt::Display for Money {
    /// Always four fraction digits: `12.3400`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let a = self.0.unsigned_abs();
        write!(
            f,
            "{sign}{}.{:04}",
            a / MONEY_SCALE as u64,
            a % MONEY_SCALE as u64
        )
    }
}

/// `value / 10^digits` with trailing zeros dropped (`1.40000000` → `1.4`).
pub fn fixed(value: i128, digits: u32) -> String {
    let scale = 10i128.pow(digits);
    let sign = if value < 0 { "-" } else { "" };
    let a = value.abs();
    let frac = format!("{:0width$}", a % scale, width = digits as usize);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        format!("{sign}{}", a / scale)
    } else {
        format!("{sign}{}.{frac}", a / scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimals_exactly() {
        assert_eq!(Decimal::parse("1.4").unwrap(), Decimal(140_000_000));
        assert_eq!(Decimal::parse("0.0054").unwrap(), Decimal(540_000));
        assert_eq!(Decimal::parse("12").unwrap(), Decimal(1_200_000_000));
        assert_eq!(Decimal::parse("0.00000001").unwrap(), Decimal(1));
        for bad in ["", "-1", "1e3", "1.123456789", ".5", "1.2.3", "abc", "1,5"] {
            assert!(Decimal::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Decimal::parse("1.40").unwrap().to_string(), "1.4");
    }

    #[test]
    fn rounds_half_away_from_zero_once() {
        // 5120 GiB for one hour at 1.4 per GiB-month: 5120 * 1.4 / 720 =
        // 9.955555... -> 9.9556
        let m = Money::from_ratio(5120 * 3600 * 140_000_000, 2_592_000 * PRICE_SCALE);
        assert_eq!(m, Money(99_556));
        assert_eq!(m.to_string(), "9.9556");
        assert_eq!(Money::from_ratio(5, 100_000), Money(1)); // 0.00005 -> 0.0001
        assert_eq!(Money::from_ratio(-5, 100_000), Money(-1));
        assert_eq!(Money::from_ratio(4, 100_000), Money(0));
        assert_eq!(Money(-12_345).to_string(), "-1.2345");
        assert_eq!(fixed(1_500, 3), "1.5");
        assert_eq!(fixed(2_000, 3), "2");
    }
}
