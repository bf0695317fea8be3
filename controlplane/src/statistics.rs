//! Per-file-system statistics kept by the service itself, so that a
//! self-hoster without Prometheus still has charts: the I/O clients were
//! served and the capacity used, per minute, for [`RETENTION_SECS`].
//!
//! Nodes report cumulative counters with every heartbeat; the heartbeat's
//! transaction compares them with the row it replaces and adds the
//! difference to the current minute, so the baseline survives a restart of
//! the control plane and a node's restart (counters back at zero) loses
//! nothing but the requests of its last heartbeat interval. The capacity
//! used is sampled by [`ControlPlane::sample_statistics`], which also drops
//! minutes past the retention.

use cpfs_proto::node::{FsUsage, ServedIo};
use sqlx::{Any, Row, Transaction};

use crate::error::{Error, Result};
use crate::ControlPlane;

/// How long minutes are kept: 7 days.
pub const RETENTION_SECS: i64 = 7 * 24 * 3600;
/// The resolution of what is kept.
pub const MINUTE: i64 = 60;
/// The most buckets one query answers (a day at one minute, a week at a
/// quarter of an hour).
pub const MAX_BUCKETS: i64 = 1440;

/// One bucket of a file system's series: totals over `period` seconds
/// from `start`, and the capacity used at its last sample.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bucket {
    pub start: i64,
    pub io: ServedIo,
    /// None when no sample of the capacity fell in the bucket.
    pub used_bytes: Option<i64>,
}

/// The served counters of a row whose columns are named as the fields.
pub(crate) fn served_of(r: &sqlx::any::AnyRow) -> Result<ServedIo> {
    let get = |c: &str| -> Result<u64> { Ok(r.try_get::<i64, _>(c)?.max(0) as u64) };
    Ok(ServedIo {
        reads: get("reads")?,
        read_bytes: get("read_bytes")?,
        read_us: get("read_us")?,
        writes: get("writes")?,
        write_bytes: get("write_bytes")?,
        write_us: get("write_us")?,
    })
}

fn db(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Adds what `node` served since its last heartbeat to the minute of `now`
/// (unix seconds), in the heartbeat's transaction, before its usage rows
/// are replaced.
pub(crate) async fn record_served(
    tx: &mut Transaction<'_, Any>,
    node: &str,
    usage: &[FsUsage],
    now: i64,
) -> Result<()> {
    if usage.iter().all(|u| u.served.is_empty()) {
        return Ok(());
    }
    let rows = sqlx::query(
        "SELECT fs_id, served_reads AS reads, served_read_bytes AS read_bytes, served_read_us AS read_us, \
         served_writes AS writes, served_write_bytes AS write_bytes, served_write_us AS write_us \
         FROM node_usage WHERE node_id = $1",
    )
    .bind(node)
    .fetch_all(&mut **tx)
    .await?;
    let mut before = std::collections::HashMap::new();
    for r in &rows {
        before.insert(r.try_get::<String, _>("fs_id")?, served_of(r)?);
    }
    let minute = now - now.rem_euclid(MINUTE);
    // In file-system order, as the sampler writes (see there).
    let mut usage: Vec<&FsUsage> = usage.iter().collect();
    usage.sort_by(|a, b| a.fs.cmp(&b.fs));
    for u in usage {
        // Without a row, everything the node counted is new (the first
        // report of a file system since the node started).
        let earlier = before.get(&u.fs).copied().unwrap_or_default();
        let d = u.served.since(&earlier);
        if d.is_empty() {
            continue;
        }
        sqlx::query(
            "INSERT INTO fs_minutes (fs_id, minute, reads, read_bytes, read_us, writes, write_bytes, write_us) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (fs_id, minute) DO UPDATE SET reads = fs_minutes.reads + excluded.reads, \
             read_bytes = fs_minutes.read_bytes + excluded.read_bytes, \
             read_us = fs_minutes.read_us + excluded.read_us, \
             writes = fs_minutes.writes + excluded.writes, \
             write_bytes = fs_minutes.write_bytes + excluded.write_bytes, \
             write_us = fs_minutes.write_us + excluded.write_us",
        )
        .bind(&u.fs)
        .bind(minute)
        .bind(db(d.reads))
        .bind(db(d.read_bytes))
        .bind(db(d.read_us))
        .bind(db(d.writes))
        .bind(db(d.write_bytes))
        .bind(db(d.write_us))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Folds minute rows (ordered by minute) into buckets of `period` seconds,
/// aligned to multiples of `period` since the epoch (as monitoring
/// services align them); buckets without a row are left out.
pub fn fold(rows: &[Bucket], period: i64) -> Vec<Bucket> {
    let mut out: Vec<Bucket> = Vec::new();
    for r in rows {
        let b = r.start - r.start.rem_euclid(period);
        if out.last().is_none_or(|last| last.start != b) {
            out.push(Bucket {
                start: b,
                ..Bucket::default()
            });
        }
        let Some(last) = out.last_mut() else { continue };
        let (a, x) = (&mut last.io, &r.io);
        a.reads += x.reads;
        a.read_bytes += x.read_bytes;
        a.read_us += x.read_us;
        a.writes += x.writes;
        a.write_bytes += x.write_bytes;
        a.write_us += x.write_us;
        if r.used_bytes.is_some() {
            last.used_bytes = r.used_bytes;
        }
    }
    out
}

impl ControlPlane {
    /// Records every file system's capacity used in the current minute and
    /// drops minutes older than the retention.
    pub async fn sample_statistics(&self) -> Result<()> {
        let now = self.now();
        let minute = now - now.rem_euclid(MINUTE);
        let mut tx = self.store.begin_write().await?;
        // In id order, as heartbeats upsert theirs: two writers taking the
        // same rows' locks in opposite orders could deadlock on PostgreSQL.
        sqlx::query(
            "INSERT INTO fs_minutes (fs_id, minute, used_bytes) \
             SELECT f.id, $1, CAST(COALESCE((SELECT c.used_bytes FROM fs_counters c WHERE c.fs_id = f.id), 0) AS BIGINT) \
             FROM file_systems f WHERE f.status <> 'Deleting' ORDER BY f.id \
             ON CONFLICT (fs_id, minute) DO UPDATE SET used_bytes = excluded.used_bytes",
        )
        .bind(minute)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM fs_minutes WHERE minute < $1")
            .bind(minute - RETENTION_SECS)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// One of the account's file systems' series from `start` to `end`
    /// (unix seconds, `end` excluded) in buckets of `period` seconds.
    pub async fn file_system_series(
        &self,
        account_id: &str,
        fs_id: &str,
        start: i64,
        end: i64,
        period: i64,
    ) -> Result<Vec<Bucket>> {
        let invalid =
            |name: &'static str, message: String| Error::InvalidParameter { name, message };
        if period < MINUTE || period % MINUTE != 0 {
            return Err(invalid(
                "Period",
                format!("{period} is not a whole number of minutes"),
            ));
        }
        if end <= start {
            return Err(invalid("EndTime", "must be later than StartTime".into()));
        }
        let aligned = start - start.rem_euclid(period);
        if end.saturating_sub(aligned).saturating_add(period - 1) / period > MAX_BUCKETS {
            return Err(invalid(
                "Period",
                format!("the range holds more than {MAX_BUCKETS} periods; choose a longer Period"),
            ));
        }
        // Scoped to the account: another's file system is not found.
        self.file_system(account_id, fs_id).await?;
        let rows = sqlx::query(
            "SELECT minute, reads, read_bytes, read_us, writes, write_bytes, write_us, used_bytes \
             FROM fs_minutes WHERE fs_id = $1 AND minute >= $2 AND minute < $3 ORDER BY minute",
        )
        .bind(fs_id)
        .bind(start - start.rem_euclid(MINUTE))
        .bind(end)
        .fetch_all(&self.store.pool)
        .await?;
        let minutes = rows
            .iter()
            .map(|r| {
                let used: i64 = r.try_get("used_bytes")?;
                Ok(Bucket {
                    start: r.try_get("minute")?,
                    io: served_of(r)?,
                    used_bytes: (used >= 0).then_some(used),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(fold(&minutes, period))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minute(start: i64, reads: u64, used: Option<i64>) -> Bucket {
        Bucket {
            start,
            io: ServedIo {
                reads,
                read_bytes: reads * 4096,
                ..ServedIo::default()
            },
            used_bytes: used,
        }
    }

    #[test]
    fn minutes_fold_into_periods_with_the_latest_capacity() {
        let rows = [
            minute(600, 1, Some(10)),
            minute(660, 2, None),
            minute(900, 4, Some(30)),
            minute(960, 8, Some(40)),
        ];
        let out = fold(&rows, 300);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].start, out[0].io.reads), (600, 3));
        assert_eq!(out[0].used_bytes, Some(10));
        assert_eq!((out[1].start, out[1].io.reads), (900, 12));
        assert_eq!(out[1].io.read_bytes, 12 * 4096);
        assert_eq!(out[1].used_bytes, Some(40));
    }

    #[test]
    fn a_restarted_node_counts_from_zero() {
        let earlier = ServedIo {
            reads: 10,
            read_bytes: 100,
            ..ServedIo::default()
        };
        let now = ServedIo {
            reads: 3,
            read_bytes: 30,
            ..ServedIo::default()
        };
        assert_eq!(now.since(&earlier), now);
        let later = ServedIo {
            reads: 12,
            read_bytes: 140,
            ..ServedIo::default()
        };
        assert_eq!(later.since(&earlier).reads, 2);
        assert_eq!(later.since(&earlier).read_bytes, 40);
    }
}
