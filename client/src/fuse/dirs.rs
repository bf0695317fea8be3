//! Directory listings: read whole at opendir (in pages from the metadata
//! service, with each entry's attributes) and served to readdir and
//! readdirplus from memory, so offsets stay stable while the directory
//! changes.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use cpfs_proto::meta::{errno, Attr, Caller, Kind, MetaOp, MetaReply};
use fuser::{FileType, ReplyDirectory, ReplyDirectoryPlus};

use super::attr::{self, file_attr, file_type};
use crate::meta::MetaClient;

/// One entry as read at opendir.
pub(crate) struct Listed {
    pub ino: u64,
    pub kind: FileType,
    pub name: Vec<u8>,
    /// Its attributes then (`None` for `.` and `..`, whose attributes the
    /// kernel ignores in a READDIRPLUS reply).
    pub attr: Option<Attr>,
}

/// A directory as read at opendir: `.`, `..` and every entry, and whether
/// the caller may look the entries up (only then may the kernel keep the
/// entries readdirplus hands it).
pub(crate) struct DirListing {
    pub entries: Vec<Listed>,
    pub searchable: bool,
}

/// Reads the listing of directory `ino`.
pub(crate) async fn list(meta: &MetaClient, who: &Caller, ino: u64) -> Result<DirListing, i32> {
    let dot = |ino, name: &[u8]| Listed {
        ino,
        kind: file_type(Kind::Dir),
        name: name.to_vec(),
        attr: None,
    };
    // `..` is filled in from the first page, which names it.
    let mut listing = DirListing {
        entries: vec![dot(ino, b"."), dot(ino, b"..")],
        searchable: false,
    };
    let mut after = None;
    loop {
        match meta
            .call(
                who,
                MetaOp::ReadDirPlus {
                    ino,
                    after: after.clone(),
                    limit: 4096,
                },
            )
            .await
        {
            Ok(MetaReply::DirPlus {
                entries,
                searchable,
                more,
                parent,
            }) => {
                listing.entries[1].ino = parent;
                after = entries.last().map(|e| e.0.name.clone());
                listing.searchable = searchable;
                listing
                    .entries
                    .extend(entries.into_iter().map(|(e, a)| Listed {
                        ino: e.ino,
                        kind: file_type(e.kind),
                        name: e.name,
                        attr: Some(a),
                    }));
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

/// Answers READDIR from `offset` with as many entries as fit.
pub(crate) fn reply_plain(listing: &DirListing, offset: i64, mut reply: ReplyDirectory) {
    for (i, e) in listing
        .entries
        .iter()
        .enumerate()
        .skip(offset.max(0) as usize)
    {
        if reply.add(e.ino, (i + 1) as i64, e.kind, OsStr::from_bytes(&e.name)) {
            break;
        }
    }
    reply.ok()
}

/// Answers READDIRPLUS from `offset`: entries with their attributes, valid
/// for `ttl`. Entries the caller may not look up go out with no validity,
/// so the kernel asks (and is refused) before it uses one.
pub(crate) fn reply_plus(
    listing: &DirListing,
    offset: i64,
    ttl: Duration,
    mut reply: ReplyDirectoryPlus,
) {
    let ttl = if listing.searchable {
        ttl
    } else {
        Duration::ZERO
    };
    for (i, e) in listing
        .entries
        .iter()
        .enumerate()
        .skip(offset.max(0) as usize)
    {
        let (attr, ttl) = match &e.attr {
            Some(a) => (file_attr(a), ttl),
            // `.` and `..`: the kernel reads only the inode number.
            None => (attr::bare(e.ino, e.kind), Duration::ZERO),
        };
        if reply.add(
            e.ino,
            (i + 1) as i64,
            OsStr::from_bytes(&e.name),
            &ttl,
            &attr,
            0,
        ) {
            break;
        }
    }
    reply.ok()
}
