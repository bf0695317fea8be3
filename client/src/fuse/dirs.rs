//! Directory listings: read whole at opendir (in pages from the metadata
//! service, with each entry's attributes) and served to readdir and
//! readdirplus from memory, so offsets stay stable while the directory
//! changes.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpfs_proto::meta::{errno, Attr, Caller, Kind, MetaOp, MetaReply};
use fuser::{FileType, Generation, INodeNo, ReplyDirectory, ReplyDirectoryPlus};

use super::attr::{self, file_type};
use crate::dir_attrs::ATTR_TTL;
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

/// How long a listing may be served again to the next opendir of its
/// directory, when nothing changed in between.
const REUSE_WITHIN: Duration = Duration::from_secs(1);

/// What recent listings said, served again while it holds.
#[derive(Default)]
pub(crate) struct Recent {
    pub last: LastListing,
    pub listed: ListedDirs,
}

/// Directories' attributes as the last listings of their parents gave
/// them. The kernel drops a directory's atime after every readdir of it
/// and asks for its attributes at the next stat (`rm -r` stats every
/// directory it opened); the service moves no directory's atime on a
/// listing, so what a listing said still holds while nothing changed the
/// directory since.
#[derive(Default)]
pub(crate) struct ListedDirs(Mutex<HashMap<u64, (Attr, Instant, u64)>>);

/// Directories' attributes kept from listings at most.
const MAX_LISTED_DIRS: usize = 4096;

impl ListedDirs {
    fn note(&self, listing: &DirListing, generation: u64) {
        let now = Instant::now();
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for a in listing.entries.iter().filter_map(|e| e.attr.as_ref()) {
            if a.kind != Kind::Dir {
                continue;
            }
            if map.len() >= MAX_LISTED_DIRS {
                map.retain(|_, (_, at, _)| now.duration_since(*at) < ATTR_TTL);
                if map.len() >= MAX_LISTED_DIRS {
                    map.clear();
                }
            }
            map.insert(a.ino, (a.clone(), now, generation));
        }
    }

    /// Directory `ino`'s attributes from a listing, and for how long the
    /// kernel may keep them, if nothing changed it since.
    pub(crate) fn get(&self, meta: &MetaClient, ino: u64) -> Option<(Attr, Duration)> {
        let (attr, at, generation) = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ino)
            .cloned()?;
        let left = ATTR_TTL
            .checked_sub(at.elapsed())
            .filter(|d| !d.is_zero())?;
        meta.changes
            .unchanged_since(ino, generation)
            .then_some((attr, left))
    }
}

/// The last listing read, for the next opendir of the same directory:
/// `rm -r` opens every directory twice in a row (once to see whether it is
/// empty, once to read it), and the second listing is the first one.
#[derive(Default)]
pub(crate) struct LastListing(Mutex<Option<Last>>);

struct Last {
    ino: u64,
    who: Caller,
    listing: Arc<DirListing>,
    at: Instant,
    /// What could have changed it since: another client's change (the
    /// watch's invalidations) or one of this client's.
    generation: u64,
    mutations: u64,
}

impl LastListing {
    /// The listing of `ino` for `who`: the last one read, when it is of
    /// the same directory for the same caller, recent, and neither another
    /// client (as far as the watch has told) nor this one changed anything
    /// since; read from the service otherwise. A listing is served again
    /// once at most.
    pub(crate) async fn open(
        &self,
        meta: &MetaClient,
        who: &Caller,
        ino: u64,
        listed: &ListedDirs,
    ) -> Result<Arc<DirListing>, i32> {
        let generation = meta.changes.generation();
        let mutations = meta.mutations();
        {
            let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
            let reusable = last.as_ref().is_some_and(|l| {
                l.ino == ino
                    && l.who == *who
                    && l.at.elapsed() < REUSE_WITHIN
                    && l.generation == generation
                    && l.mutations == mutations
            });
            if let Some(l) = last.take().filter(|_| reusable) {
                return Ok(l.listing);
            }
        }
        let listing = Arc::new(list(meta, who, ino).await?);
        listed.note(&listing, generation);
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(Last {
            ino,
            who: who.clone(),
            listing: listing.clone(),
            at: Instant::now(),
            generation,
            mutations,
        });
        Ok(listing)
    }
}

/// Answers READDIR from `offset` with as many entries as fit.
pub(crate) fn reply_plain(listing: &DirListing, offset: u64, mut reply: ReplyDirectory) {
    for (i, e) in listing
        .entries
        .iter()
        .enumerate()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
    {
        if reply.add(
            INodeNo(e.ino),
            (i + 1) as u64,
            e.kind,
            OsStr::from_bytes(&e.name),
        ) {
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
    offset: u64,
    ttl: Duration,
    inodes: &super::open_files::OpenInodes,
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
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
    {
        let (attr, ttl) = match &e.attr {
            Some(a) => (super::open_files::kernel_attr(inodes, a), ttl),
            // `.` and `..`: the kernel reads only the inode number.
            None => (attr::bare(e.ino, e.kind), Duration::ZERO),
        };
        if reply.add(
            INodeNo(e.ino),
            (i + 1) as u64,
            OsStr::from_bytes(&e.name),
            &ttl,
            &attr,
            Generation(0),
        ) {
            break;
        }
    }
    reply.ok()
}

#[cfg(test)]
#[path = "dirs_tests.rs"]
mod tests;
