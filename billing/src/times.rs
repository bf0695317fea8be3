//! Time formats of bills (all UTC).

use time::OffsetDateTime;

use crate::error::{BillingError, Result};

fn at(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub fn hour_floor(unix: i64) -> i64 {
    unix.div_euclid(3600) * 3600
}

/// `YYYY-MM`
pub fn cycle(unix: i64) -> String {
    let t = at(unix);
    format!("{:04}-{:02}", t.year(), u8::from(t.month()))
}

/// `YYYY-MM-DD`
pub fn date(unix: i64) -> String {
    let t = at(unix);
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

/// `YYYY-MM-DD HH:MM:SS`, as bill rows show times.
pub fn bill_time(unix: i64) -> String {
    let t = at(unix);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Parses a billing cycle `YYYY-MM` into its (start, end) unix times.
pub fn parse_cycle(s: &str) -> Result<(i64, i64)> {
    let bad = || {
        BillingError::invalid(
            "BillingCycle",
            format!(
                "BillingCycle must be YYYY-MM, got \"{}\"",
                s.chars().take(20).collect::<String>()
            ),
        )
    };
    let (y, m) = s.split_once('-').ok_or_else(bad)?;
    if y.len() != 4 || m.len() != 2 {
        return Err(bad());
    }
    let year: i32 = y.parse().map_err(|_| bad())?;
    let month: u8 = m.parse().map_err(|_| bad())?;
    let month = time::Month::try_from(month).map_err(|_| bad())?;
    let start = time::Date::from_calendar_date(year, month, 1).map_err(|_| bad())?;
    let start = start.midnight().assume_utc().unix_timestamp();
    let end = cpfs_controlplane::clock::add_months(start, 1);
    Ok((start, end))
}

/// Parses `YYYY-MM-DD`.
pub fn parse_date(name: &'static str, s: &str) -> Result<i64> {
    let bad = || {
        BillingError::invalid(
            name,
            format!(
                "{name} must be YYYY-MM-DD, got \"{}\"",
                s.chars().take(20).collect::<String>()
            ),
        )
    };
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let d = time::Date::parse(s, &fmt).map_err(|_| bad())?;
    Ok(d.midnight().assume_utc().unix_timestamp())
}

/// Parses a point in time: unix seconds, `YYYY-MM-DDTHH:MM:SSZ` or
/// `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn parse_time(name: &'static str, s: &str) -> Result<i64> {
    let t = s.trim();
    if let Ok(n) = t.parse::<i64>() {
        return Ok(n);
    }
    let bad = || {
        BillingError::invalid(
            name,
            format!(
                "{name} must be unix seconds or YYYY-MM-DDTHH:MM:SSZ, got \"{}\"",
                t.chars().take(30).collect::<String>()
            ),
        )
    };
    let norm = t.replace(' ', "T");
    let norm = norm.strip_suffix('Z').unwrap_or(&norm);
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let dt = time::PrimitiveDateTime::parse(norm, &fmt).map_err(|_| bad())?;
    Ok(dt.assume_utc().unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        // 2026-10-05T10:20:00Z
        let t = 1_791_195_600;
        assert_eq!(bill_time(t), "2026-10-05 10:20:00");
        assert_eq!(cycle(t), "2026-10");
        assert_eq!(date(t), "2026-10-05");
        assert_eq!(hour_floor(t), t - 1200);
        assert_eq!(parse_time("T", "2026-10-05T10:20:00Z").unwrap(), t);
        assert_eq!(parse_time("T", "2026-10-05 10:20:00").unwrap(), t);
        assert_eq!(parse_time("T", &t.to_string()).unwrap(), t);
        assert!(parse_time("T", "yesterday").is_err());
        let (s, e) = parse_cycle("2026-12").unwrap();
        assert_eq!(bill_time(s), "2026-12-01 00:00:00");
        assert_eq!(bill_time(e), "2027-01-01 00:00:00");
        assert!(parse_cycle("2026-13").is_err());
        assert!(parse_cycle("202612").is_err());
        assert_eq!(parse_date("D", "2026-10-05").unwrap(), t - 10 * 3600 - 1200);
    }
}
