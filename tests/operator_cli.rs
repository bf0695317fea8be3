//! Operator commands never change the schema: only `cpfs serve` migrates,
//! and a command refuses a database of another schema version with a
//! message that says what to do.

use std::process::Command;

fn cpfs(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cpfs"))
        .args(args)
        .output()
        .expect("running cpfs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn url_of(dir: &std::path::Path) -> String {
    format!("sqlite://{}", dir.join("ops.db").display())
}

#[tokio::test]
async fn operator_commands_refuse_a_schema_they_did_not_expect() {
    let dir = tempfile::tempdir().unwrap();
    let url = url_of(dir.path());
    let data_dir = dir.path().to_str().unwrap();

    let account_create = |name: &str| {
        cpfs(&[
            "account",
            "create",
            name,
            "--data-dir",
            data_dir,
            "--database-url",
            &url,
        ])
    };

    // A database no `cpfs serve` has opened: refused, not migrated.
    let (ok, _, err) = account_create("early");
    assert!(!ok, "account create on an unmigrated database succeeded");
    assert!(err.contains("start `cpfs serve`"), "{err}");
    let store = cpfs_store::Store::open_current(&url).await;
    assert!(
        store.is_err(),
        "the operator command migrated the schema it refused"
    );

    // Migrated by the server's path: the command works.
    cpfs_store::Store::open(&url).await.unwrap();
    let (ok, out, err) = account_create("ops");
    assert!(ok, "{err}");
    assert!(out.contains("AccessKeyId"), "{out}");

    // A schema newer than this build (a later server migrated it): refused.
    let store = cpfs_store::Store::open(&url).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) VALUES (99999, 'from the future', CURRENT_TIMESTAMP, TRUE, X'00', 0)",
    )
    .execute(&store.pool)
    .await
    .unwrap();
    let (ok, _, err) = cpfs(&[
        "node",
        "list",
        "--data-dir",
        data_dir,
        "--database-url",
        &url,
    ]);
    assert!(!ok, "node list on a newer schema succeeded");
    assert!(err.contains("older than the server"), "{err}");
}
