//! DescribeFileSystems answers from a copy in memory (controlplane's
//! `fs_view`). These tests change what it shows through a second control
//! plane on the same database (another `cpfs serve`, as two gateways over
//! one PostgreSQL would be) and through plain SQL, and check that the first
//! one's very next answer shows the change: the copy must never be stale
//! however the database was changed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cpfs_controlplane::filesystems::{FileSystemFilter, Status};
use cpfs_controlplane::fs_view::{FileSystemPage, USAGE_MAX_AGE};
use cpfs_controlplane::mount_targets::NewMountTarget;
use cpfs_controlplane::nodes::PlacementPolicy;
use cpfs_controlplane::reconciler::Reconciler;
use cpfs_controlplane::{ControlPlane, ManualClock, RegionConfig, Store};

mod common;
use common::{add_nodes, backend_urls, cp, new_fs};

async fn all(cp: &ControlPlane, account: &str) -> FileSystemPage {
    cp.describe_file_systems(account, &FileSystemFilter::default(), 1, 100)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_change_from_another_process_or_plain_sql_shows_at_the_next_call() {
    for (name, url, _keep) in backend_urls().await {
        let reader = cp(&url).await;
        let writer = cp(&url).await;
        let alice = writer
            .create_account("alice", None)
            .await
            .unwrap()
            .account_id;
        assert_eq!(all(&reader, &alice).await.total, 0, "{name}");

        // A new file system, tagged.
        let a = writer
            .create_file_system(&alice, new_fs(2048, vec![("env".into(), "prod".into())]))
            .await
            .unwrap();
        let page = all(&reader, &alice).await;
        assert_eq!(page.total, 1, "{name}");
        assert_eq!(page.items[0].fs.status, Status::Pending, "{name}");
        assert_eq!(
            page.items[0].tags,
            vec![("env".to_string(), "prod".to_string())],
            "{name}"
        );
        assert!(page.redundancy.is_empty(), "{name}: not laid out yet");

        // Placed by the other process's reconciler: status, layout and
        // chain table all come from its writes.
        add_nodes(&writer, 3).await;
        Reconciler::new(writer.clone(), PlacementPolicy::default())
            .pass()
            .await
            .unwrap();
        let page = all(&reader, &alice).await;
        assert_eq!(page.items[0].fs.status, Status::Running, "{name}");
        let red = &page.redundancy[&a];
        assert!(red.chains > 0, "{name}: {red:?}");

        // A description, a tag filter, a mount target.
        writer
            .modify_file_system(&alice, &a, Some("renamed"), None, None)
            .await
            .unwrap();
        assert_eq!(
            all(&reader, &alice).await.items[0].fs.description,
            "renamed",
            "{name}"
        );
        writer
            .tag_resources(
                &alice,
                "filesystem",
                std::slice::from_ref(&a),
                &[("team".into(), "ml".into())],
            )
            .await
            .unwrap();
        let by_tag = FileSystemFilter {
            tags: vec![("team".into(), "ml".into())],
            ..Default::default()
        };
        let page = reader
            .describe_file_systems(&alice, &by_tag, 1, 10)
            .await
            .unwrap();
        assert_eq!(page.total, 1, "{name}");
        let domain = writer
            .create_mount_target(
                &alice,
                NewMountTarget {
                    fs_id: a.clone(),
                    network_type: "Vpc".into(),
                    vpc_id: "vpc".into(),
                    vswitch_id: "vsw".into(),
                    access_group: None,
                    dry_run: false,
                },
            )
            .await
            .unwrap();
        let page = all(&reader, &alice).await;
        assert_eq!(page.items[0].mount_targets.len(), 1, "{name}");
        assert_eq!(page.items[0].mount_targets[0].domain, domain, "{name}");

        // Plain SQL, as an operator's fix or a tool would write.
        sqlx::query("UPDATE file_systems SET description = 'by hand' WHERE id = $1")
            .bind(&a)
            .execute(&writer.store.pool)
            .await
            .unwrap();
        assert_eq!(
            all(&reader, &alice).await.items[0].fs.description,
            "by hand",
            "{name}"
        );
        sqlx::query("DELETE FROM tags WHERE resource_id = $1 AND tag_key = 'team'")
            .bind(&a)
            .execute(&writer.store.pool)
            .await
            .unwrap();
        let page = reader
            .describe_file_systems(&alice, &by_tag, 1, 10)
            .await
            .unwrap();
        assert_eq!(page.total, 0, "{name}");

        // Usage moves with every write of file data and is not a change of
        // generation: it shows within USAGE_MAX_AGE.
        sqlx::query("UPDATE fs_counters SET used_bytes = 12345 WHERE fs_id = $1")
            .bind(&a)
            .execute(&writer.store.pool)
            .await
            .unwrap();
        let deadline = Instant::now() + USAGE_MAX_AGE + Duration::from_secs(5);
        while all(&reader, &alice).await.items[0].fs.metered_size != 12345 {
            assert!(Instant::now() < deadline, "{name}: usage never showed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // Deletion.
        writer.delete_file_system(&alice, &a).await.unwrap();
        Reconciler::new(writer.clone(), PlacementPolicy::default())
            .pass()
            .await
            .unwrap();
        assert_eq!(all(&reader, &alice).await.total, 0, "{name}");
    }
}

#[tokio::test]
async fn filters_and_pages_select_as_the_api_documents() {
    for (name, url, _keep) in backend_urls().await {
        let clock = Arc::new(ManualClock::at(1_768_465_800));
        let store = Store::open(&url).await.unwrap();
        let cp = ControlPlane::new(store, clock.clone(), RegionConfig::default());
        let alice = cp.create_account("alice", None).await.unwrap().account_id;
        let bob = cp.create_account("bob", None).await.unwrap().account_id;
        let mut ids = Vec::new();
        for i in 0..7 {
            let tags = if i % 2 == 0 {
                vec![("even".into(), String::new())]
            } else {
                vec![("odd".into(), format!("v{i}"))]
            };
            let mut req = new_fs(2048, tags);
            req.description = format!("fs{i}");
            if i == 3 {
                req.vpc_id = "vpc-other".into();
            }
            ids.push(cp.create_file_system(&alice, req).await.unwrap());
            clock.advance(1);
        }
        cp.create_file_system(&bob, new_fs(2048, vec![]))
            .await
            .unwrap();

        let describe = |filter: FileSystemFilter, page: i64, size: i64| {
            let (cp, alice) = (&cp, &alice);
            async move {
                let p = cp
                    .describe_file_systems(alice, &filter, page, size)
                    .await
                    .unwrap();
                let got: Vec<String> = p.items.iter().map(|e| e.fs.description.clone()).collect();
                (p.total, got)
            }
        };
        // Pages, oldest first; a page past the end is empty, with the total.
        let everything = FileSystemFilter::default();
        assert_eq!(
            describe(everything.clone(), 2, 3).await,
            (7, vec!["fs3".into(), "fs4".into(), "fs5".into()]),
            "{name}"
        );
        assert_eq!(
            describe(everything.clone(), 4, 3).await,
            (7, vec![]),
            "{name}"
        );
        // A tag key alone, a key and value, a VPC, ids, types.
        let f = FileSystemFilter {
            tags: vec![("even".into(), String::new())],
            ..Default::default()
        };
        assert_eq!(describe(f, 1, 10).await.0, 4, "{name}");
        let f = FileSystemFilter {
            tags: vec![("odd".into(), "v5".into())],
            ..Default::default()
        };
        assert_eq!(describe(f, 1, 10).await, (1, vec!["fs5".into()]), "{name}");
        let f = FileSystemFilter {
            vpc_id: Some("vpc-other".into()),
            ..Default::default()
        };
        assert_eq!(describe(f, 1, 10).await, (1, vec!["fs3".into()]), "{name}");
        let f = FileSystemFilter {
            ids: vec![ids[6].clone(), ids[0].clone(), "cpfs-nosuch".into()],
            ..Default::default()
        };
        assert_eq!(
            describe(f, 1, 10).await,
            (2, vec!["fs0".into(), "fs6".into()]),
            "{name}"
        );
        let f = FileSystemFilter {
            types: vec!["standard".into()],
            ..Default::default()
        };
        assert_eq!(describe(f, 1, 10).await.0, 0, "{name}");
        // Another account's file system is never listed.
        assert_eq!(describe(everything, 1, 100).await.0, 7, "{name}");
    }
}
