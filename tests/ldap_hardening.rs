//! Issue 14, finding 1: a tenant's LDAP URI is a connection the service
//! makes on the tenant's behalf. The operator's bind password goes only to
//! servers the operator lists, special addresses are refused before any
//! connection, and a failed check tells nothing about what listens where.

mod common;
#[path = "common/fake_ldap.rs"]
mod fake_ldap;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::Server;
use fake_ldap::{host_address, Behaviour, FakeLdap};

const OPERATOR_PASSWORD: &str = "operator-bind-password-5f2a";
const TENANT_PASSWORD: &str = "tenant-bind-password-9c1e";
const BASE: &str = "dc=example,dc=com";
const BIND_DN: &str = "cn=reader,dc=example,dc=com";
/// The directory client's fixed answer time for a failed check (5 s), and
/// how much later than that an answer may come on a busy machine.
const PROBE_TIME: Duration = Duration::from_secs(5);
const SLACK: Duration = Duration::from_secs(4);

fn ldap_params<'a>(
    fs: &'a str,
    uri: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut p = vec![("FileSystemId", fs), ("URI", uri), ("SearchBase", BASE)];
    p.extend_from_slice(extra);
    p
}

#[test]
fn uris_at_special_addresses_are_refused_before_any_connection() {
    let server = Server::start(&[]);
    let c = server.client();
    let fs = c.create_fs("2048");
    let bait = TcpListener::bind("127.0.0.1:0").unwrap();
    bait.set_nonblocking(true).unwrap();
    let port = bait.local_addr().unwrap().port();
    for uri in [
        format!("ldap://127.0.0.1:{port}"),
        format!("ldap://localhost:{port}"),
        format!("ldap://[::1]:{port}"),
        format!("ldap://[::ffff:127.0.0.1]:{port}"),
        format!("ldap://0.0.0.0:{port}"),
        "ldap://169.254.169.254".to_string(),
        "ldaps://224.0.0.1".to_string(),
    ] {
        let started = Instant::now();
        let (status, v) = c.call("CreateLDAPConfig", &ldap_params(&fs, &uri, &[]));
        assert_eq!(
            (status, v["Code"].as_str()),
            (400, Some("InvalidParameter.URI")),
            "{uri}: {v}"
        );
        assert!(
            started.elapsed() < PROBE_TIME,
            "{uri}: refused only after {:?}",
            started.elapsed()
        );
    }
    assert!(
        bait.accept().is_err(),
        "a refused URI must not cost a connection"
    );
    let v = c.ok("DescribeFileSystems", &[("FileSystemId", &fs)]);
    assert!(
        v.to_string().find("\"URI\"").is_none(),
        "nothing stored: {v}"
    );
}

/// Without any server listed, the operator's password goes nowhere: a
/// BindDN on a tenant's server needs the tenant's own password, refused
/// before any connection without it.
#[test]
fn the_operator_password_never_reaches_an_unlisted_server() {
    let unlisted = FakeLdap::start(host_address(), Behaviour::Ldap);
    let server = Server::start(&["--ldap-bind-password", OPERATOR_PASSWORD]);
    let c = server.client();
    let fs = c.create_fs("2048");
    let uri = unlisted.uri();
    let (status, v) = c.call(
        "CreateLDAPConfig",
        &ldap_params(&fs, &uri, &[("BindDN", BIND_DN)]),
    );
    assert!(
        !unlisted.received(OPERATOR_PASSWORD),
        "the operator's password reached a server the tenant named ({status}: {v})"
    );
    assert_eq!(v["Code"], "MissingParameter.BindPassword", "{v}");
    assert_eq!(unlisted.connections(), 0, "refused before any connection");

    // With the tenant's own password, that one is sent, and only that one.
    c.ok(
        "CreateLDAPConfig",
        &ldap_params(
            &fs,
            &uri,
            &[("BindDN", BIND_DN), ("BindPassword", TENANT_PASSWORD)],
        ),
    );
    assert!(unlisted.received(TENANT_PASSWORD));
    assert!(!unlisted.received(OPERATOR_PASSWORD));
}

/// A listed server gets the operator's password; the tenant's password is
/// never shown by DescribeFileSystems, nor logged.
#[test]
fn listed_servers_get_the_operator_password_and_tenant_passwords_stay_hidden() {
    let listed = FakeLdap::start(host_address(), Behaviour::Ldap);
    let allowed = listed.addr.to_string();
    let server = Server::start(&[
        "--ldap-bind-password",
        OPERATOR_PASSWORD,
        "--ldap-allowed-servers",
        &allowed,
    ]);
    let c = server.client();
    let fs = c.create_fs("2048");
    let uri = listed.uri();
    c.ok(
        "CreateLDAPConfig",
        &ldap_params(&fs, &uri, &[("BindDN", BIND_DN)]),
    );
    assert!(listed.received(OPERATOR_PASSWORD));

    c.ok(
        "ModifyLDAPConfig",
        &ldap_params(
            &fs,
            &uri,
            &[("BindDN", BIND_DN), ("BindPassword", TENANT_PASSWORD)],
        ),
    );
    assert!(listed.received(TENANT_PASSWORD));
    let v = c.ok("DescribeFileSystems", &[("FileSystemId", &fs)]);
    let shown = &v["FileSystems"]["FileSystem"][0]["Ldap"];
    assert_eq!(shown["BindDN"], BIND_DN, "{v}");
    assert!(!v.to_string().contains(TENANT_PASSWORD), "{v}");
    let log = server.log();
    assert!(!log.contains(TENANT_PASSWORD) && !log.contains(OPERATOR_PASSWORD));
}

/// A closed port, a port that never answers and a port that answers with
/// something else all give the same answer, after the same bounded time.
#[test]
fn failed_checks_say_only_unreachable_or_refused_and_do_not_hang() {
    let host = host_address();
    let silent = FakeLdap::start(host, Behaviour::Silent);
    let not_ldap = FakeLdap::start(host, Behaviour::NotLdap);
    let closed = {
        let l = TcpListener::bind((host, 0)).unwrap();
        l.local_addr().unwrap()
    };
    let server = Server::start(&[]);
    let c = server.client();
    let fs = c.create_fs("2048");
    let uris = [format!("ldap://{closed}"), silent.uri(), not_ldap.uri()];
    let answers: Vec<(String, Duration)> = std::thread::scope(|scope| {
        let calls: Vec<_> = uris
            .iter()
            .map(|uri| {
                let c = server.client();
                let fs = fs.clone();
                scope.spawn(move || {
                    let started = Instant::now();
                    let (status, v) = c.call("CreateLDAPConfig", &ldap_params(&fs, uri, &[]));
                    assert_eq!(status, 400, "{v}");
                    assert_eq!(v["Code"], "InvalidLDAPConfig.Unreachable", "{uri}: {v}");
                    let message = v["Message"].as_str().unwrap().replace(uri.as_str(), "URI");
                    (message, started.elapsed())
                })
            })
            .collect();
        calls.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (message, took) in &answers {
        assert_eq!(message, &answers[0].0, "the messages differ: {answers:?}");
        assert!(message.contains("unreachable or refused"), "{message}");
        assert!(
            *took >= PROBE_TIME - Duration::from_millis(100) && *took < PROBE_TIME + SLACK,
            "{answers:?}"
        );
    }
    assert!(silent.connections() > 0 && not_ldap.connections() > 0);
}
