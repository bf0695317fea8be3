//! Directory listings: read whole at opendir (in pages from the metadata
//! service) and served to readdir from memory, so offsets stay stable while
//! the directory changes.

use cpfs_proto::meta::{errno, Caller, MetaOp, MetaReply};
use fuser::FileType;

use super::attr::file_type;
use crate::meta::MetaClient;

/// A directory as read at opendir: `.`, `..` and every entry.
pub(crate) type DirListing = Vec<(u64, FileType, Vec<u8>)>;

/// Reads the listing of directory `ino`.
pub(crate) async fn list(meta: &MetaClient, who: &Caller, ino: u64) -> Result<DirListing, i32> {
    let parent = match meta
        .call(
            who,
            MetaOp::Lookup {
                parent: ino,
                name: b"..".to_vec(),
            },
        )
        .await
    {
        Ok(MetaReply::Entry(a)) => a.ino,
        _ => ino,
    };
    let mut listing: DirListing = vec![
        (ino, FileType::Directory, b".".to_vec()),
        (parent, FileType::Directory, b"..".to_vec()),
    ];
    let mut after = None;
    loop {
        match meta
            .call(
                who,
                MetaOp::ReadDir {
                    ino,
                    after: after.clone(),
                    limit: 4096,
                },
            )
            .await
        {
            Ok(MetaReply::Dir { entries, more }) => {
                after = entries.last().map(|e| e.name.clone());
                listing.extend(
                    entries
                        .into_iter()
                        .map(|e| (e.ino, file_type(e.kind), e.name)),
                );
                if !more {
                    break;
                }
            }
            Ok(_) => return Err(errno::EIO),
            Err(e) => return Err(e),
        }
    }
    Ok(listing)
}
