//! The control plane against a real database: SQLite always, PostgreSQL
//! when `CPFS_TEST_DATABASE_URL` names a server (CI sets it and
//! `CPFS_REQUIRE_POSTGRES=1`, so a missing server fails instead of skipping).

use std::time::{Duration, Instant};

use cpfs_controlplane::filesystems::{FileSystemFilter, Status};
use cpfs_controlplane::nodes::{PlacementPolicy, GIB};
use cpfs_controlplane::reconciler::Reconciler;
use cpfs_controlplane::{ControlPlane, Error};

mod common;
use common::{add_nodes, backends, heartbeat, new_fs};

#[tokio::test]
async fn lifecycle_on_every_backend() {
    for (name, cp, _keep) in backends().await {
        let alice = cp.create_account("alice", None).await.unwrap().account_id;
        let bob = cp.create_account("bob", None).await.unwrap().account_id;
        assert!(
            matches!(
                cp.create_account("alice", None).await,
                Err(Error::AlreadyExists { .. })
            ),
            "{name}"
        );

        // No nodes: the file system waits in Pending, with a reason.
        let a = cp
            .create_file_system(&alice, new_fs(2048, vec![("env".into(), "prod".into())]))
            .await
            .unwrap();
        let policy = PlacementPolicy::default();
        let mut rec = Reconciler::new(cp.clone(), policy);
        rec.pass().await.unwrap();
        let fs = cp.file_system(&alice, &a).await.unwrap();
        assert_eq!(fs.status, Status::Pending, "{name}");
        assert!(
            fs.status_reason.contains("live data nodes"),
            "{name}: {}",
            fs.status_reason
        );

        // Nodes arrive: placement reserves capacity x R, Running.
        for i in 0..3 {
            let hb = heartbeat(i, vec![]);
            let table = cp.node_heartbeat(&hb).await.unwrap();
            // Chains form once R (2) nodes are up, four per node; a later
            // node gets no new chains but starts taking existing ones over
            // as a syncing member (rebalance).
            assert_eq!(table.chains.len(), if i == 0 { 0 } else { 8 }, "{name}");
            if i == 2 {
                assert!(
                    table
                        .chains
                        .iter()
                        .any(|c| c.syncing.iter().any(|s| s.node.id == "n2")),
                    "{name}: {table:?}"
                );
            }
        }
        let table = cp.chain_table().await.unwrap();
        assert!(table.chains.iter().all(|c| c.members.len() == 2), "{name}");
        // The failed file system backs off on its own (at least 100 ms)...
        rec.pass().await.unwrap();
        assert_eq!(
            cp.file_system(&alice, &a).await.unwrap().status,
            Status::Pending,
            "{name}: retried at once despite its backoff"
        );
        // ...and is placed once its turn comes.
        rec.pass_at(Instant::now() + Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(
            cp.file_system(&alice, &a).await.unwrap().status,
            Status::Running,
            "{name}"
        );
        let total: i64 = cp.reservations(&a).await.unwrap().iter().map(|r| r.1).sum();
        assert!(
            (2048 * GIB * 2..2048 * GIB * 2 + 3).contains(&total),
            "{name}: {total}"
        );
        // Reserving again changes nothing (idempotent).
        cp.reserve(&a, 2048, policy).await.unwrap();
        let again: i64 = cp.reservations(&a).await.unwrap().iter().map(|r| r.1).sum();
        assert_eq!(total, again, "{name}");

        // Upgrade grows the same placement.
        cp.upgrade_file_system(&alice, &a, 5120, None, false, None)
            .await
            .unwrap();
        assert_eq!(
            cp.file_system(&alice, &a).await.unwrap().status,
            Status::Extending
        );
        rec.pass().await.unwrap();
        let fs = cp.file_system(&alice, &a).await.unwrap();
        assert_eq!(
            (fs.status, fs.capacity_gib, fs.bandwidth_mbps),
            (Status::Running, 5120, 500),
            "{name}"
        );
        let grown: i64 = cp.reservations(&a).await.unwrap().iter().map(|r| r.1).sum();
        assert!(grown >= 5120 * GIB * 2, "{name}");

        // Filters, tags and isolation.
        cp.create_file_system(&alice, new_fs(2048, vec![]))
            .await
            .unwrap();
        let f = FileSystemFilter {
            tags: vec![("env".into(), "prod".into())],
            ..Default::default()
        };
        let page = cp.describe_file_systems(&alice, &f, 1, 10).await.unwrap();
        assert_eq!(
            (page.total, page.items[0].fs.id.as_str()),
            (1, a.as_str()),
            "{name}"
        );
        let page = cp
            .describe_file_systems(&alice, &FileSystemFilter::default(), 1, 10)
            .await
            .unwrap();
        assert_eq!(page.total, 2, "{name}");
        let page = cp
            .describe_file_systems(&bob, &FileSystemFilter::default(), 1, 10)
            .await
            .unwrap();
        assert_eq!(page.total, 0, "{name}");
        assert!(
            matches!(cp.file_system(&bob, &a).await, Err(Error::NotFound { .. })),
            "{name}"
        );
        assert!(
            matches!(
                cp.delete_file_system(&bob, &a).await,
                Err(Error::NotFound { .. })
            ),
            "{name}"
        );

        // Delete releases everything.
        cp.delete_file_system(&alice, &a).await.unwrap();
        rec.pass().await.unwrap();
        assert!(
            matches!(
                cp.file_system(&alice, &a).await,
                Err(Error::NotFound { .. })
            ),
            "{name}"
        );
        assert!(cp.reservations(&a).await.unwrap().is_empty(), "{name}");
        assert!(
            cp.tags_of(&alice, std::slice::from_ref(&a))
                .await
                .unwrap()
                .is_empty(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn client_tokens_and_status_rules() {
    for (name, cp, _keep) in backends().await {
        let acct = cp.create_account("carol", None).await.unwrap().account_id;
        let mut req = new_fs(2048, vec![]);
        req.client_token = Some("t-1".into());
        let a = cp.create_file_system(&acct, req.clone()).await.unwrap();
        let b = cp.create_file_system(&acct, req).await.unwrap();
        assert_eq!(a, b, "{name}");
        // Pending file systems cannot be upgraded or get mount targets.
        let e = cp
            .upgrade_file_system(&acct, &a, 5120, None, false, None)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidStatus { .. }), "{name}: {e}");
        // Access rules are numbered per group.
        cp.create_access_group(&acct, "grp", "Vpc", "", "standard")
            .await
            .unwrap();
        let rule = cpfs_controlplane::access_groups::RuleChange {
            source_cidr: Some("10.0.0.0/8".into()),
            ..Default::default()
        };
        assert_eq!(
            cp.create_access_rule(&acct, "grp", rule.clone())
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            cp.create_access_rule(&acct, "grp", rule).await.unwrap(),
            2,
            "{name}"
        );
    }
}

/// Injects a database failure: changing the status of mount target
/// `domain` is refused by a trigger, as a broken row or a constraint would.
async fn refuse_status_change(name: &str, cp: &ControlPlane, domain: &str) {
    let statements: Vec<String> = if name == "sqlite" {
        vec![format!(
            "CREATE TRIGGER refuse BEFORE UPDATE OF status ON mount_targets WHEN NEW.domain = '{domain}' BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )]
    } else {
        vec![
            "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$ LANGUAGE plpgsql".into(),
            format!("CREATE TRIGGER refuse BEFORE UPDATE OF status ON mount_targets FOR EACH ROW WHEN (NEW.domain = '{domain}') EXECUTE FUNCTION refuse()"),
        ]
    };
    for sql in statements {
        sqlx::query(&sql).execute(&cp.store.pool).await.unwrap();
    }
}

async fn mount_target_row(cp: &ControlPlane, domain: &str) -> (String, String) {
    use sqlx::Row;
    let row = sqlx::query("SELECT status, status_reason FROM mount_targets WHERE domain = $1")
        .bind(domain)
        .fetch_one(&cp.store.pool)
        .await
        .unwrap();
    (row.get("status"), row.get("status_reason"))
}

#[tokio::test]
async fn a_failing_object_backs_off_alone_with_its_reason_on_its_own_row() {
    for (name, cp, _keep) in backends().await {
        let acct = cp.create_account("dave", None).await.unwrap().account_id;
        add_nodes(&cp, 3).await;
        let mut rec = Reconciler::new(cp.clone(), PlacementPolicy::default());
        let a = cp
            .create_file_system(&acct, new_fs(2048, vec![]))
            .await
            .unwrap();
        rec.pass().await.unwrap();
        assert_eq!(
            cp.file_system(&acct, &a).await.unwrap().status,
            Status::Running,
            "{name}"
        );

        let domain = cp
            .create_mount_target(
                &acct,
                cpfs_controlplane::mount_targets::NewMountTarget {
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
        refuse_status_change(&name, &cp, &domain).await;
        let t0 = Instant::now();
        rec.pass_at(t0).await.unwrap();
        let (status, reason) = mount_target_row(&cp, &domain).await;
        assert_eq!(status, "Pending", "{name}");
        assert!(
            reason.contains("injected failure"),
            "{name}: reason {reason:?}"
        );
        assert_eq!(
            cp.file_system(&acct, &a).await.unwrap().status_reason,
            "",
            "{name}"
        );

        // Another object converges while the mount target backs off.
        let b = cp
            .create_file_system(&acct, new_fs(2048, vec![]))
            .await
            .unwrap();
        rec.pass_at(t0 + Duration::from_millis(1)).await.unwrap();
        assert_eq!(
            cp.file_system(&acct, &b).await.unwrap().status,
            Status::Running,
            "{name}"
        );

        // The fault goes away: the next retry succeeds and clears the reason.
        let drop = if name == "sqlite" {
            "DROP TRIGGER refuse"
        } else {
            "DROP TRIGGER refuse ON mount_targets"
        };
        sqlx::query(drop).execute(&cp.store.pool).await.unwrap();
        rec.pass_at(t0 + Duration::from_secs(60)).await.unwrap();
        assert_eq!(
            mount_target_row(&cp, &domain).await,
            ("Active".into(), String::new()),
            "{name}"
        );
    }
}

/// A tenant's bind password is stored sealed, opened for the metadata
/// service's lookups (the mount policy) and never part of what the API
/// shows; a sealed value moved to another file system's row does not open.
#[tokio::test]
async fn ldap_bind_passwords_are_sealed_and_only_opened_for_lookups() {
    use cpfs_controlplane::ldap::{ldap_config_of, BindPassword, LdapConfig};
    for (name, cp, _keep) in backends().await {
        let account = cp.create_account("ldap", None).await.unwrap().account_id;
        let fs = cp
            .create_file_system(&account, new_fs(2048, vec![]))
            .await
            .unwrap();
        let other = cp
            .create_file_system(&account, new_fs(2048, vec![]))
            .await
            .unwrap();
        let cfg = |password: Option<&str>| LdapConfig {
            uri: "ldap://10.0.0.5".into(),
            search_base: "dc=example,dc=com".into(),
            bind_dn: "cn=reader,dc=example,dc=com".into(),
            bind_password: password.map(|p| BindPassword::new(p.into())),
        };
        cp.put_ldap_config(&account, &fs, &cfg(Some("pw-of-fs")), true)
            .await
            .unwrap();
        cp.put_ldap_config(&account, &other, &cfg(None), true)
            .await
            .unwrap();

        let (stored,): (String,) =
            sqlx::query_as("SELECT bind_password FROM ldap_configs WHERE fs_id = $1")
                .bind(&fs)
                .fetch_one(&cp.store.pool)
                .await
                .unwrap();
        assert!(
            stored.starts_with("enc1:") && !stored.contains("pw-of-fs"),
            "{name}"
        );

        let opened = ldap_config_of(&cp.store, &cp.secrets, &fs).await.unwrap();
        assert_eq!(opened, Some(cfg(Some("pw-of-fs"))), "{name}");
        let shown = cp
            .ldap_configs_of(&account, std::slice::from_ref(&fs))
            .await
            .unwrap();
        assert_eq!(
            shown[&fs].bind_password, None,
            "{name}: Describe never has it"
        );

        // Moved into another row, the sealed value does not open there.
        sqlx::query("UPDATE ldap_configs SET bind_password = $1 WHERE fs_id = $2")
            .bind(&stored)
            .bind(&other)
            .execute(&cp.store.pool)
            .await
            .unwrap();
        assert!(
            ldap_config_of(&cp.store, &cp.secrets, &other)
                .await
                .is_err(),
            "{name}"
        );
    }
}

/// Finding 5, node side: a file system is over capacity when its nodes'
/// reports, summed and divided by the replicas, exceed what was bought;
/// the heartbeat reply names it so that chain heads refuse more blocks.
#[tokio::test]
async fn file_systems_over_capacity_are_those_whose_nodes_store_more_than_bought() {
    for (name, cp, _keep) in backends().await {
        let acct = cp.create_account("carol", None).await.unwrap().account_id;
        let small = cp
            .create_file_system(&acct, new_fs(2048, vec![]))
            .await
            .unwrap();
        let big = cp
            .create_file_system(&acct, new_fs(5120, vec![]))
            .await
            .unwrap();
        // Two copies of each byte (R = 2): 2,049 GiB per copy of `small`,
        // 2,049 GiB of `big`.
        let per_node = |fs: &str| cpfs_proto::node::FsUsage {
            fs: fs.to_string(),
            bytes_stored: 2049 * GIB as u64,
            ..Default::default()
        };
        for i in 0..2 {
            let hb = heartbeat(i, vec![per_node(&small), per_node(&big)]);
            cp.node_heartbeat(&hb).await.unwrap();
        }
        assert_eq!(
            cp.full_file_systems().await.unwrap(),
            vec![small.clone()],
            "{name}"
        );

        // Usage that falls back under the capacity lifts it.
        for i in 0..2 {
            let mut u = per_node(&small);
            u.bytes_stored = 2047 * GIB as u64;
            let hb = heartbeat(i, vec![u]);
            cp.node_heartbeat(&hb).await.unwrap();
        }
        assert!(cp.full_file_systems().await.unwrap().is_empty(), "{name}");
    }
}
