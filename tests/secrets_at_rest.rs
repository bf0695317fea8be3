//! Issue 14, finding 6: secrets and tenant data at rest, against the real
//! `cpfs serve`: sealed secrets in the store, private data directories,
//! and a data directory from before both were so.

mod common;
#[path = "common/fake_ldap.rs"]
mod fake_ldap;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::mount::{file_system_with_mount_target, Mount};
use common::{Client, Server, AK, SECRET};
use fake_ldap::{host_address, Behaviour, FakeLdap};

const TENANT_PASSWORD: &str = "tenant-bind-password-77d0";

fn data_dir(server: &Server) -> PathBuf {
    server.dir.join("data")
}

/// The store of a test server, as the server itself opens it.
fn database_url(server: &Server) -> String {
    server
        .args
        .windows(2)
        .find(|p| p[0] == "--database-url")
        .map(|p| p[1].clone())
        .unwrap_or_else(|| format!("sqlite://{}", data_dir(server).join("cpfs.db").display()))
}

fn query_strings(server: &Server, sql: &str) -> Vec<String> {
    let url = database_url(server);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        let rows: Vec<(String,)> = sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
        pool.close().await;
        rows.into_iter().map(|(s,)| s).collect()
    })
}

fn execute(server: &Server, sql: &str) {
    let url = database_url(server);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        sqlx::query(sql).execute(&pool).await.unwrap();
        pool.close().await;
    })
}

/// Every entry under `dir` (and `dir` itself) whose mode lets another
/// user in.
fn open_to_others(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(p) = pending.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            out.push((p.clone(), mode));
        }
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                pending.push(e.unwrap().path());
            }
        }
    }
    out
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(p) = pending.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                pending.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn secrets_are_sealed_at_rest_and_data_files_are_private() {
    let ldap = FakeLdap::start(host_address(), Behaviour::Ldap);
    let mut server = Server::start(&[]);
    let c = server.client();
    let fs = c.create_fs("2048");
    let uri = ldap.uri();
    c.ok(
        "CreateLDAPConfig",
        &[
            ("FileSystemId", fs.as_str()),
            ("URI", &uri),
            ("SearchBase", "dc=example,dc=com"),
            ("BindDN", "cn=reader,dc=example,dc=com"),
            ("BindPassword", TENANT_PASSWORD),
        ],
    );
    let created = server.operator(&["account", "create", "tenant-b"]);
    let other_secret = created["AccessKeySecret"].as_str().unwrap().to_string();

    let secrets = query_strings(&server, "SELECT secret FROM access_keys");
    assert_eq!(secrets.len(), 2);
    for s in &secrets {
        assert!(
            s.starts_with("enc1:"),
            "an access-key secret is stored unsealed"
        );
        assert!(!s.contains(SECRET) && !s.contains(&other_secret));
    }
    let passwords = query_strings(
        &server,
        "SELECT bind_password FROM ldap_configs WHERE bind_password IS NOT NULL",
    );
    assert_eq!(passwords.len(), 1);
    assert!(passwords[0].starts_with("enc1:") && !passwords[0].contains(TENANT_PASSWORD));

    // Tenant data: chunk files on the nodes, written through a mount.
    let (_, domain) = file_system_with_mount_target(&c);
    {
        let m = Mount::new(&server, &domain, "m");
        std::fs::write(m.dir.join("f"), vec![7u8; 300_000]).unwrap();
    }
    let data = data_dir(&server);
    let chunks = files_under(&data.join("nodes"))
        .into_iter()
        .filter(|p| p.components().any(|c| c.as_os_str() == "chunks"))
        .count();
    assert!(chunks > 0, "the write stored no chunk file");
    assert_eq!(mode(&data.join("secret-key")), 0o600);
    assert_eq!(
        open_to_others(&data),
        vec![],
        "data files open to other users"
    );

    // Sealed secrets still authenticate, after a restart too.
    server.kill9();
    server.spawn();
    server.client().ok("DescribeRegions", &[]);
    Client::new(
        server.port,
        created["AccessKeyId"].as_str().unwrap(),
        &other_secret,
    )
    .ok("DescribeRegions", &[]);
}

/// A data directory from before: plaintext secrets, files readable by
/// everyone. The next start seals the secrets and closes the files.
#[test]
fn plaintext_secrets_and_open_files_from_before_are_fixed_at_start() {
    let mut server = Server::start(&[]);
    server.kill9();
    execute(
        &server,
        &format!(
            "UPDATE access_keys SET secret = '{}' WHERE id = '{AK}'",
            SECRET.replace('\'', "''")
        ),
    );
    let data = data_dir(&server);
    let mut opened = 0;
    let mut pending = vec![data.clone()];
    while let Some(p) = pending.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let open = if meta.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(open)).unwrap();
        opened += 1;
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                pending.push(e.unwrap().path());
            }
        }
    }
    assert!(opened > 3);
    // Older builds wrote no marker of a completed walk.
    let _ = std::fs::remove_file(data.join(".private-v1"));
    server.spawn();
    let secrets = query_strings(
        &server,
        &format!("SELECT secret FROM access_keys WHERE id = '{AK}'"),
    );
    assert!(secrets[0].starts_with("enc1:"), "not sealed at start");
    server.client().ok("DescribeRegions", &[]);
    assert_eq!(open_to_others(&data), vec![]);
}
