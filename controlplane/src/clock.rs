//! Time is injected so that tests (signature vectors, billing) can pin it.

use std::sync::atomic::{AtomicI64, Ordering};
use time::OffsetDateTime;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> OffsetDateTime;

    fn now_unix(&self) -> i64 {
        self.now().unix_timestamp()
    }
}

/// The machine's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock {
    unix: AtomicI64,
}

impl ManualClock {
    pub fn at(unix: i64) -> Self {
        ManualClock {
            unix: AtomicI64::new(unix),
        }
    }

    pub fn set(&self, unix: i64) {
        self.unix.store(unix, Ordering::SeqCst);
    }

    pub fn advance(&self, seconds: i64) {
        self.unix.fetch_add(seconds, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(self.unix.load(Ordering::SeqCst))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

/// A clock read from a file holding unix seconds or `yyyy-MM-ddTHH:mm:ssZ`:
/// for tests and rehearsals that run the real binary through days or
/// months of billing in seconds (`cpfs serve --clock-file`). Business time
/// (creation and expiry times, metering, plans) follows the file; request
/// signatures are still checked against the machine's clock. Every read
/// looks at the file, so writing a new time moves the clock; an unreadable
/// or malformed file keeps the last good time.
#[derive(Debug)]
pub struct FileClock {
    path: std::path::PathBuf,
    last: AtomicI64,
}

impl FileClock {
    /// Opens the clock; the file must hold a valid time now.
    pub fn open(path: impl Into<std::path::PathBuf>) -> crate::Result<FileClock> {
        let path = path.into();
        let first = read_clock_file(&path).ok_or_else(|| {
            crate::Error::invalid(
                "ClockFile",
                format!(
                    "{} must hold unix seconds or yyyy-MM-ddTHH:mm:ssZ",
                    path.display()
                ),
            )
        })?;
        Ok(FileClock {
            path,
            last: AtomicI64::new(first),
        })
    }
}

fn read_clock_file(path: &std::path::Path) -> Option<i64> {
    let text = std::fs::read_to_string(path).ok()?;
    parse_time(text.trim())
}

/// Unix seconds, or `yyyy-MM-ddTHH:mm:ssZ`.
pub fn parse_time(s: &str) -> Option<i64> {
    if let Ok(n) = s.parse::<i64>() {
        return Some(n);
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::PrimitiveDateTime::parse(s, &fmt)
        .ok()
        .map(|t| t.assume_utc().unix_timestamp())
}

impl Clock for FileClock {
    fn now(&self) -> OffsetDateTime {
        let unix = match read_clock_file(&self.path) {
            Some(t) => {
                self.last.store(t, Ordering::SeqCst);
                t
            }
            None => self.last.load(Ordering::SeqCst),
        };
        OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

/// `yyyy-MM-ddTHH:mm:ssZ`, the only time format on the wire.
pub fn format_utc(unix: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Adds calendar months, clamping the day (Jan 31 + 1 month = Feb 28/29).
pub fn add_months(unix: i64, months: u32) -> i64 {
    let t = OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let total = t.year() as i64 * 12 + (u8::from(t.month()) as i64 - 1) + months as i64;
    let year = (total / 12) as i32;
    let month = time::Month::try_from((total % 12 + 1) as u8).unwrap_or(time::Month::January);
    let last_day = month.length(year);
    let day = t.day().min(last_day);
    time::Date::from_calendar_date(year, month, day)
        .map(|d| d.with_time(t.time()).assume_utc().unix_timestamp())
        .unwrap_or(unix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_wire_time() {
        assert_eq!(format_utc(1_768_465_800), "2026-01-15T08:30:00Z");
    }

    #[test]
    fn adds_months_clamping_day() {
        // 2026-01-31T00:00:00Z + 1 month = 2026-02-28T00:00:00Z
        assert_eq!(
            format_utc(add_months(1_769_817_600, 1)),
            "2026-02-28T00:00:00Z"
        );
        // 2026-11-15 + 3 months crosses the year
        assert_eq!(
            format_utc(add_months(1_794_700_800, 3)),
            "2027-02-15T00:00:00Z"
        );
    }

    #[test]
    fn file_clock_follows_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clock");
        assert!(FileClock::open(&path).is_err());
        std::fs::write(&path, "1768465800\n").unwrap();
        let c = FileClock::open(&path).unwrap();
        assert_eq!(c.now_unix(), 1_768_465_800);
        std::fs::write(&path, "2026-01-15T09:30:00Z").unwrap();
        assert_eq!(c.now_unix(), 1_768_469_400);
        std::fs::write(&path, "garbage").unwrap();
        assert_eq!(c.now_unix(), 1_768_469_400);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::at(100);
        assert_eq!(c.now_unix(), 100);
        c.advance(5);
        assert_eq!(c.now_unix(), 105);
    }
}
