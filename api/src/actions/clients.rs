//! DescribeMountedClients, AddClientToBlackList, RemoveClientFromBlackList,
//! DescribeBlackListClients: parameters and replies as the NAS 2017-06-26
//! models have them. DescribeMountedClients' items carry, besides the
//! reference's `ClientIP`, this service's `SessionId`, `MountTargetDomain`,
//! `AccessPointId`, `MountTime` and `LastActiveTime`.

use cpfs_controlplane::clock::format_utc;
use cpfs_controlplane::ControlPlane;
use serde_json::{json, Map, Value};

use super::object;
use crate::error::ApiError;
use crate::params::Params;

#[derive(Debug)]
pub enum ClientCommand {
    Mounted {
        fs_id: String,
        domain: String,
        client_ip: Option<String>,
        page_number: i64,
        page_size: i64,
    },
    Fence {
        fs_id: String,
        client_ip: String,
        client_token: Option<String>,
    },
    Unfence {
        fs_id: String,
        client_ip: String,
        client_token: Option<String>,
    },
    Fenced {
        fs_id: String,
        client_ip: Option<String>,
    },
}

pub fn parse(action: &str, p: &Params) -> Result<Option<ClientCommand>, ApiError> {
    let fs_id = || p.required_string("FileSystemId", 64);
    Ok(Some(match action {
        "DescribeMountedClients" => {
            let (page_number, page_size) = p.page(10, 100)?;
            ClientCommand::Mounted {
                fs_id: fs_id()?,
                domain: p.required_string("MountTargetDomain", 256)?,
                client_ip: p.string("ClientIP", 64)?,
                page_number,
                page_size,
            }
        }
        "AddClientToBlackList" => ClientCommand::Fence {
            fs_id: fs_id()?,
            client_ip: p.required_string("ClientIP", 64)?,
            client_token: p.string("ClientToken", 64)?,
        },
        "RemoveClientFromBlackList" => ClientCommand::Unfence {
            fs_id: fs_id()?,
            client_ip: p.required_string("ClientIP", 64)?,
            client_token: p.string("ClientToken", 64)?,
        },
        "DescribeBlackListClients" => ClientCommand::Fenced {
            fs_id: fs_id()?,
            client_ip: p.string("ClientIP", 64)?,
        },
        _ => return Ok(None),
    }))
}

pub async fn execute(
    cp: &ControlPlane,
    account: &str,
    cmd: ClientCommand,
) -> Result<Map<String, Value>, ApiError> {
    match cmd {
        ClientCommand::Mounted {
            fs_id,
            domain,
            client_ip,
            page_number,
            page_size,
        } => {
            let all = cp
                .mounted_clients(account, &fs_id, Some(&domain), client_ip.as_deref())
                .await?;
            let skip = ((page_number - 1) * page_size) as usize;
            let page: Vec<Value> = all
                .iter()
                .skip(skip)
                .take(page_size as usize)
                .map(|c| {
                    json!({
                        "ClientIP": c.client_ip,
                        "SessionId": c.session_id.to_string(),
                        "MountTargetDomain": c.domain,
                        "AccessPointId": c.access_point,
                        "MountTime": format_utc(c.mounted_at),
                        "LastActiveTime": format_utc(c.last_active_at),
                    })
                })
                .collect();
            Ok(object(json!({
                "TotalCount": all.len(),
                "PageNumber": page_number,
                "PageSize": page_size,
                "Clients": { "Client": page },
            })))
        }
        ClientCommand::Fence {
            fs_id,
            client_ip,
            client_token,
        } => {
            cp.fence_client(account, &fs_id, &client_ip, client_token.as_deref())
                .await?;
            Ok(Map::new())
        }
        ClientCommand::Unfence {
            fs_id,
            client_ip,
            client_token,
        } => {
            cp.unfence_client(account, &fs_id, &client_ip, client_token.as_deref())
                .await?;
            Ok(Map::new())
        }
        ClientCommand::Fenced { fs_id, client_ip } => {
            let fenced = cp
                .fenced_clients(account, &fs_id, client_ip.as_deref())
                .await?;
            let states: Map<String, Value> = fenced
                .into_iter()
                .map(|(ip, state)| (ip, Value::String(state.into())))
                .collect();
            // The reference's reply carries the map as JSON text.
            Ok(object(
                json!({ "Clients": Value::Object(states).to_string() }),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::params;

    #[test]
    fn every_action_names_its_file_system_and_client() {
        let p = params(&[("FileSystemId", "cpfs-1")]);
        for action in ["AddClientToBlackList", "RemoveClientFromBlackList"] {
            let e = parse(action, &p).unwrap_err();
            assert!(e.to_string().contains("ClientIP"), "{action}");
        }
        let e = parse("DescribeMountedClients", &p).unwrap_err();
        assert!(e.to_string().contains("MountTargetDomain"));
        assert!(parse("DescribeBlackListClients", &p).is_ok());
    }
}
