//! CreateLDAPConfig, ModifyLDAPConfig, DeleteLDAPConfig. The configuration
//! is read back through DescribeFileSystems (`Ldap`), as in the reference.

use cpfs_controlplane::ldap::{self, BindPassword, LdapConfig, MAX_BIND_PASSWORD};
use cpfs_controlplane::ControlPlane;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::params::Params;

#[derive(Debug)]
pub enum LdapCommand {
    /// `create`: CreateLDAPConfig (none may exist yet); else ModifyLDAPConfig.
    Put {
        fs_id: String,
        config: LdapConfig,
        create: bool,
    },
    Delete {
        fs_id: String,
    },
}

pub fn parse(action: &str, p: &Params) -> Result<Option<LdapCommand>, ApiError> {
    let fs_id = || p.required_string("FileSystemId", 64);
    Ok(Some(match action {
        "CreateLDAPConfig" | "ModifyLDAPConfig" => {
            let config = LdapConfig {
                uri: p.required_string("URI", 512)?,
                search_base: p.required_string("SearchBase", 1024)?,
                bind_dn: p.string("BindDN", 1024)?.unwrap_or_default(),
                // A CPFS extension: the tenant's own password for BindDN.
                bind_password: p
                    .string("BindPassword", MAX_BIND_PASSWORD)?
                    .map(BindPassword::new),
            };
            ldap::validate(&config)?;
            LdapCommand::Put {
                fs_id: fs_id()?,
                config,
                create: action == "CreateLDAPConfig",
            }
        }
        "DeleteLDAPConfig" => LdapCommand::Delete { fs_id: fs_id()? },
        _ => return Ok(None),
    }))
}

pub async fn execute(
    cp: &ControlPlane,
    account_id: &str,
    cmd: LdapCommand,
) -> Result<Map<String, Value>, ApiError> {
    match cmd {
        LdapCommand::Put {
            fs_id,
            config,
            create,
        } => {
            // Resolve the file system first, so a caller learns about a
            // wrong id before the service talks to any server. The
            // operator's password goes along; the directory client sends
            // it only to servers the operator lists.
            cp.file_system(account_id, &fs_id).await?;
            ldap::probe(&config, cp.ldap_bind_password.as_deref()).await?;
            cp.put_ldap_config(account_id, &fs_id, &config, create)
                .await?;
        }
        LdapCommand::Delete { fs_id } => cp.delete_ldap_config(account_id, &fs_id).await?,
    }
    Ok(Map::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::params;

    #[test]
    fn parses_and_bounds() {
        let p = params(&[
            ("FileSystemId", "cpfs-1"),
            ("URI", "ldap://10.0.0.5:389"),
            ("SearchBase", "dc=example,dc=com"),
        ]);
        match parse("CreateLDAPConfig", &p) {
            Ok(Some(LdapCommand::Put { config, create, .. })) => {
                assert!(create);
                assert_eq!(config.bind_dn, "");
            }
            other => panic!("{other:?}"),
        }
        let with_password = params(&[
            ("FileSystemId", "cpfs-1"),
            ("URI", "ldap://10.0.0.5:389"),
            ("SearchBase", "dc=example,dc=com"),
            ("BindDN", "cn=reader,dc=example,dc=com"),
            ("BindPassword", "s3cret-pw"),
        ]);
        match parse("ModifyLDAPConfig", &with_password) {
            Ok(Some(cmd)) => {
                let shown = format!("{cmd:?}");
                assert!(!shown.contains("s3cret-pw"), "{shown}");
                let LdapCommand::Put { config, .. } = cmd else {
                    panic!("{shown}")
                };
                assert_eq!(
                    config
                        .bind_password
                        .map(|p| p.expose().to_string())
                        .as_deref(),
                    Some("s3cret-pw")
                );
            }
            other => panic!("{other:?}"),
        }
        let bad = params(&[
            ("FileSystemId", "cpfs-1"),
            ("URI", "http://x"),
            ("SearchBase", "dc=x"),
        ]);
        let e = parse("ModifyLDAPConfig", &bad).unwrap_err();
        assert_eq!(e.code(), "InvalidParameter.URI");
        let missing = params(&[("FileSystemId", "cpfs-1"), ("URI", "ldap://h")]);
        assert_eq!(
            parse("CreateLDAPConfig", &missing).unwrap_err().code(),
            "MissingParameter"
        );
        assert!(matches!(
            parse("DeleteLDAPConfig", &params(&[("FileSystemId", "cpfs-1")])),
            Ok(Some(LdapCommand::Delete { .. }))
        ));
    }
}
