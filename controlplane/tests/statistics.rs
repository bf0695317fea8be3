//! The per-file-system statistics the service keeps (controlplane's
//! `statistics`) and DescribeFileSystemStatistics' counts, on every
//! backend, with the clock moved by hand: I/O reported by node heartbeats
//! lands in the minute it arrives in, counted once however the counters
//! came (a node restart included), capacity is sampled per minute, minutes
//! past the retention go, and subscriptions are counted as expiring and
//! expired as the clock passes their dates.

use std::sync::Arc;

use cpfs_controlplane::filesystems::ChargeType;
use cpfs_controlplane::nodes::PlacementPolicy;
use cpfs_controlplane::reconciler::Reconciler;
use cpfs_controlplane::statistics::RETENTION_SECS;
use cpfs_controlplane::{ControlPlane, ManualClock, RegionConfig, Store};
use cpfs_proto::node::{FsUsage, ServedIo};

mod common;
use common::{add_nodes, backend_urls, heartbeat, new_fs};

/// Minute-aligned.
const T0: i64 = 1_768_465_800;

async fn plane(url: &str) -> (ControlPlane, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::at(T0));
    let store = Store::open(url).await.unwrap();
    let cp = ControlPlane::new(store, clock.clone(), RegionConfig::default());
    (cp, clock)
}

fn served(fs: &str, reads: u64, writes: u64) -> FsUsage {
    FsUsage {
        fs: fs.to_string(),
        served: ServedIo {
            reads,
            read_bytes: reads * 4096,
            read_us: reads * 100,
            writes,
            write_bytes: writes * 65536,
            write_us: writes * 300,
        },
        ..FsUsage::default()
    }
}

#[tokio::test]
async fn heartbeats_fill_minutes_once_and_old_minutes_go() {
    for (name, url, _keep) in backend_urls().await {
        let (cp, clock) = plane(&url).await;
        let alice = cp.create_account("alice", None).await.unwrap().account_id;
        let bob = cp.create_account("bob", None).await.unwrap().account_id;
        add_nodes(&cp, 3).await;
        let fs = cp
            .create_file_system(&alice, new_fs(2048, vec![]))
            .await
            .unwrap();
        Reconciler::new(cp.clone(), PlacementPolicy::default())
            .pass()
            .await
            .unwrap();

        // Minute 0: node 0 served 10 reads and 2 writes in two heartbeats,
        // node 1 served 5 reads.
        cp.node_heartbeat(&heartbeat(0, vec![served(&fs, 4, 1)]))
            .await
            .unwrap();
        cp.node_heartbeat(&heartbeat(0, vec![served(&fs, 10, 2)]))
            .await
            .unwrap();
        cp.node_heartbeat(&heartbeat(1, vec![served(&fs, 5, 0)]))
            .await
            .unwrap();
        sqlx::query("UPDATE fs_counters SET used_bytes = 777 WHERE fs_id = $1")
            .bind(&fs)
            .execute(&cp.store.pool)
            .await
            .unwrap();
        cp.sample_statistics().await.unwrap();

        // Minute 1: node 0 restarted (its counters start again at 3) and
        // node 1 repeats its counters (nothing new).
        clock.advance(60);
        cp.node_heartbeat(&heartbeat(0, vec![served(&fs, 3, 0)]))
            .await
            .unwrap();
        cp.node_heartbeat(&heartbeat(1, vec![served(&fs, 5, 0)]))
            .await
            .unwrap();

        let series = cp
            .file_system_series(&alice, &fs, T0, T0 + 120, 60)
            .await
            .unwrap();
        assert_eq!(series.len(), 2, "{name}: {series:?}");
        assert_eq!(series[0].start, T0, "{name}");
        assert_eq!(series[0].io.reads, 15, "{name}");
        assert_eq!(series[0].io.read_bytes, 15 * 4096, "{name}");
        assert_eq!(series[0].io.read_us, 1500, "{name}");
        assert_eq!(series[0].io.writes, 2, "{name}");
        assert_eq!(series[0].io.write_bytes, 2 * 65536, "{name}");
        assert_eq!(series[0].used_bytes, Some(777), "{name}");
        assert_eq!(series[1].io.reads, 3, "{name}");
        assert_eq!(series[1].used_bytes, None, "{name}: not sampled yet");

        // One bucket of five minutes holds both.
        let five = cp
            .file_system_series(&alice, &fs, T0, T0 + 300, 300)
            .await
            .unwrap();
        assert_eq!(five.len(), 1, "{name}");
        assert_eq!(five[0].io.reads, 18, "{name}");
        assert_eq!(five[0].used_bytes, Some(777), "{name}");

        // Another account does not see it.
        let err = cp
            .file_system_series(&bob, &fs, T0, T0 + 120, 60)
            .await
            .unwrap_err();
        assert!(err.to_string().contains(&fs), "{name}: {err}");

        // Past the retention, the first minutes are dropped.
        clock.advance(RETENTION_SECS + 60);
        cp.sample_statistics().await.unwrap();
        let left = cp
            .file_system_series(&alice, &fs, T0, T0 + 120, 60)
            .await
            .unwrap();
        assert!(left.is_empty(), "{name}: {left:?}");
        let now = T0 + 120 + RETENTION_SECS;
        let recent = cp
            .file_system_series(&alice, &fs, now - 60, now + 60, 60)
            .await
            .unwrap();
        assert_eq!(recent.len(), 1, "{name}");
        assert_eq!(recent[0].used_bytes, Some(777), "{name}");
    }
}

#[tokio::test]
async fn statistics_count_types_and_subscription_dates() {
    for (name, url, _keep) in backend_urls().await {
        let (cp, clock) = plane(&url).await;
        let alice = cp.create_account("alice", None).await.unwrap().account_id;
        cp.create_file_system(&alice, new_fs(2048, vec![]))
            .await
            .unwrap();
        let mut sub = new_fs(2048, vec![]);
        sub.charge_type = ChargeType::Subscription;
        sub.duration_months = Some(1);
        cp.create_file_system(&alice, sub).await.unwrap();

        let stats = cp.file_system_statistics(&alice).await.unwrap();
        assert_eq!(stats.len(), 1, "{name}");
        assert_eq!(
            (stats[0].fs_type.as_str(), stats[0].total),
            ("cpfs", 2),
            "{name}"
        );
        assert_eq!((stats[0].expired, stats[0].expiring), (0, 0), "{name}");

        // A week before the month is out, it is expiring; after, expired.
        clock.advance(25 * 86_400);
        let stats = cp.file_system_statistics(&alice).await.unwrap();
        assert_eq!((stats[0].expired, stats[0].expiring), (0, 1), "{name}");
        clock.advance(10 * 86_400);
        let stats = cp.file_system_statistics(&alice).await.unwrap();
        assert_eq!((stats[0].expired, stats[0].expiring), (1, 0), "{name}");

        let bob = cp.create_account("bob", None).await.unwrap().account_id;
        assert!(cp.file_system_statistics(&bob).await.unwrap().is_empty());
    }
}
