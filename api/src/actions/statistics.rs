//! DescribeFileSystemStatistics (the NAS 2017-06-26 model's reply: the
//! account's file systems counted per type, and a page of them) and this
//! product's extension DescribeFileSystemTimeSeries: one file system's I/O
//! and capacity per period, kept by the service for 7 days at one-minute
//! resolution (the console's charts read it).

use cpfs_controlplane::clock::{format_utc, parse_time};
use cpfs_controlplane::statistics::{Bucket, MAX_BUCKETS, MINUTE, RETENTION_SECS};
use cpfs_controlplane::{filesystems::FileSystemFilter, ControlPlane};
use serde_json::{json, Map, Value};

use super::object;
use crate::error::ApiError;
use crate::params::Params;

/// Periods a series may be asked in, in seconds.
pub const PERIODS: &[i64] = &[60, 300, 900, 3600];
/// A series covers the last hour unless told otherwise.
pub const DEFAULT_RANGE_SECS: i64 = 3600;

#[derive(Debug)]
pub enum StatisticsCommand {
    Totals {
        page_number: i64,
        page_size: i64,
    },
    Series {
        fs_id: String,
        start: Option<i64>,
        end: Option<i64>,
        period: i64,
    },
}

/// `yyyy-MM-ddTHH:mm:ssZ` only (`parse_time` also takes unix seconds),
/// four-digit years, so that differences of two times cannot overflow.
fn time(p: &Params, name: &str) -> Result<Option<i64>, ApiError> {
    let Some(text) = p.string(name, 32)? else {
        return Ok(None);
    };
    let shaped = text.len() == 20
        && text.as_bytes()[..4].iter().all(u8::is_ascii_digit)
        && text.as_bytes()[10] == b'T'
        && text.ends_with('Z');
    match parse_time(&text) {
        Some(t) if shaped => Ok(Some(t)),
        _ => Err(ApiError::InvalidParameter {
            name: name.into(),
            message: format!("{text:?} is not a time of the form yyyy-MM-ddTHH:mm:ssZ"),
        }),
    }
}

pub fn parse(action: &str, p: &Params) -> Result<Option<StatisticsCommand>, ApiError> {
    Ok(Some(match action {
        "DescribeFileSystemStatistics" => {
            let (page_number, page_size) = p.page(10, 100)?;
            StatisticsCommand::Totals {
                page_number,
                page_size,
            }
        }
        "DescribeFileSystemTimeSeries" => {
            let period = p.int("Period", 60, 3600)?.unwrap_or(MINUTE);
            if !PERIODS.contains(&period) {
                return Err(ApiError::InvalidParameter {
                    name: "Period".into(),
                    message: format!("{period} is not one of {PERIODS:?}"),
                });
            }
            StatisticsCommand::Series {
                fs_id: p.required_string("FileSystemId", 64)?,
                start: time(p, "StartTime")?,
                end: time(p, "EndTime")?,
                period,
            }
        }
        _ => return Ok(None),
    }))
}

pub async fn execute(
    cp: &ControlPlane,
    account: &str,
    cmd: StatisticsCommand,
) -> Result<Map<String, Value>, ApiError> {
    match cmd {
        StatisticsCommand::Totals {
            page_number,
            page_size,
        } => {
            let totals = cp.file_system_statistics(account).await?;
            let page = cp
                .describe_file_systems(
                    account,
                    &FileSystemFilter::default(),
                    page_number,
                    page_size,
                )
                .await?;
            let items: Vec<Value> = page
                .items
                .iter()
                .map(|e| Value::Object(super::filesystems::summary_json(&e.fs)))
                .collect();
            let stats: Vec<Value> = totals
                .iter()
                .map(|s| {
                    json!({
                        "FileSystemType": s.fs_type,
                        "TotalCount": s.total,
                        "MeteredSize": s.metered_size,
                        "ExpiredCount": s.expired,
                        "ExpiringCount": s.expiring,
                    })
                })
                .collect();
            Ok(object(json!({
                "TotalCount": page.total,
                "PageNumber": page_number,
                "PageSize": page_size,
                "FileSystemStatistics": { "FileSystemStatistic": stats },
                "FileSystems": { "FileSystem": items },
            })))
        }
        StatisticsCommand::Series {
            fs_id,
            start,
            end,
            period,
        } => {
            let now = cp.now();
            let end = end.unwrap_or(now + 1);
            let start = start.unwrap_or(end - DEFAULT_RANGE_SECS);
            if end <= start {
                return Err(ApiError::InvalidParameter {
                    name: "EndTime".into(),
                    message: "must be later than StartTime".into(),
                });
            }
            // Buckets are aligned to the period: count from the first one.
            let aligned = start - start.rem_euclid(period);
            if end.saturating_sub(aligned).saturating_add(period - 1) / period > MAX_BUCKETS {
                return Err(ApiError::InvalidParameter {
                    name: "Period".into(),
                    message: format!(
                        "{} s in periods of {period} s is more than {MAX_BUCKETS} points; choose a longer Period",
                        end - start
                    ),
                });
            }
            // Nothing older is kept; asking for it is not an error (the
            // file system must still be the caller's).
            let kept_from = now - RETENTION_SECS - period;
            let buckets = cp
                .file_system_series(
                    account,
                    &fs_id,
                    start.max(kept_from.min(end - 1)),
                    end,
                    period,
                )
                .await?;
            Ok(object(json!({
                "FileSystemId": fs_id,
                "Period": period,
                "StartTime": format_utc(start),
                "EndTime": format_utc(end),
                "Datapoints": { "Datapoint": buckets.iter().map(|b| datapoint(b, period)).collect::<Vec<_>>() },
            })))
        }
    }
}

/// One bucket on the wire: totals over the period, rates per second,
/// mean latencies in microseconds, and the capacity used.
fn datapoint(b: &Bucket, period: i64) -> Value {
    let io = &b.io;
    let per_second = |n: u64| n as f64 / period as f64;
    let mean = |us: u64, n: u64| us.checked_div(n).unwrap_or(0);
    json!({
        "Timestamp": format_utc(b.start),
        "ReadOps": io.reads,
        "WriteOps": io.writes,
        "ReadBytes": io.read_bytes,
        "WriteBytes": io.write_bytes,
        "ReadIops": per_second(io.reads),
        "WriteIops": per_second(io.writes),
        "ReadBandwidth": per_second(io.read_bytes),
        "WriteBandwidth": per_second(io.write_bytes),
        "ReadLatencyUs": mean(io.read_us, io.reads),
        "WriteLatencyUs": mean(io.write_us, io.writes),
        "UsedBytes": b.used_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::params;

    #[test]
    fn series_parameters_are_checked() {
        let e = parse("DescribeFileSystemTimeSeries", &params(&[])).unwrap_err();
        assert_eq!(e.code(), "MissingParameter");
        let e = parse(
            "DescribeFileSystemTimeSeries",
            &params(&[("FileSystemId", "cpfs-1"), ("Period", "120")]),
        )
        .unwrap_err();
        assert_eq!(e.code(), "InvalidParameter.Period", "{e}");
        for bad in [
            "yesterday",
            "+1700000000",
            "1700000000",
            "-9999-01-01T00:00:00Z",
        ] {
            let e = parse(
                "DescribeFileSystemTimeSeries",
                &params(&[("FileSystemId", "cpfs-1"), ("StartTime", bad)]),
            )
            .unwrap_err();
            assert_eq!(e.code(), "InvalidParameter.StartTime", "{bad}: {e}");
        }
        match parse(
            "DescribeFileSystemTimeSeries",
            &params(&[
                ("FileSystemId", "cpfs-1"),
                ("StartTime", "2026-12-04T03:00:00Z"),
                ("Period", "300"),
            ]),
        )
        .unwrap()
        {
            Some(StatisticsCommand::Series {
                start: Some(s),
                end: None,
                period: 300,
                ..
            }) => assert_eq!(format_utc(s), "2026-12-04T03:00:00Z"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_datapoint_has_rates_and_means() {
        let b = Bucket {
            start: 60,
            io: cpfs_proto::node::ServedIo {
                reads: 120,
                read_bytes: 120 * 4096,
                read_us: 120 * 50,
                ..Default::default()
            },
            used_bytes: Some(7),
        };
        let v = datapoint(&b, 60);
        assert_eq!(v["ReadIops"], 2.0);
        assert_eq!(v["ReadBandwidth"], 8192.0);
        assert_eq!(v["ReadLatencyUs"], 50);
        assert_eq!(v["WriteLatencyUs"], 0);
        assert_eq!(v["UsedBytes"], 7);
        assert_eq!(v["Timestamp"], "1970-01-01T00:01:00Z");
    }
}
