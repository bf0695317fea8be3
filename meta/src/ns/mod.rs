//! Namespace operations. Each file system's namespace lives in memory in
//! its shard (`state`, `shard`); an operation checks what POSIX requires
//! against the caller, changes the namespace under the shard's lock, and is
//! answered once the journal committed its rows.
//!
//! - `state`: the namespace in memory, loading it, recording changed rows;
//! - `shard`: loaded shards, their locks, waiting for the journal;
//! - `entries`: lookup, attributes, create, link, unlink, rename;
//! - `files`: open, readdir, sizes, stripes, orphans;
//! - `filesets`: fileset usage, limits and boundaries;
//! - `owners`: user and group quotas;
//! - `reach`: whether a caller may walk to an inode it names by number;
//! - `xattrs`: extended attributes.

mod entries;
mod files;
pub(crate) mod filesets;
mod owners;
mod reach;
pub(crate) mod shard;
pub(crate) mod state;
mod xattrs;

use cpfs_proto::capability::{READ, WRITE};
use cpfs_proto::chains::ChainTable;
use cpfs_proto::layout::Layout;
use cpfs_proto::meta::{
    errno::*, Attr, Caller, DirEntry, FsStat, Kind, OpenFile, RequestId, SetAttr, CREATE_RESERVE,
    NAME_MAX,
};

use crate::inode::Inode;
use crate::{fail, MetaService, Res, Session};

/// Not an errno a client ever sees: another attempt of the same request
/// was applied first, so this one is answered from that attempt's record.
pub(crate) const APPLIED: i32 = -1;
/// How long a request's outcome is kept. A client gives up on an operation
/// after its outage wait plus one call timeout, well under a minute.
pub(crate) const REQUEST_KEEP_SECS: i64 = 600;
const MAX_XATTR_VALUE: usize = 64 * 1024;
/// The largest file size: the kernel's own limit for a file (and the
/// store's signed 64-bit column). Past it, a truncate or write is EFBIG.
pub const MAX_FILE_SIZE: u64 = i64::MAX as u64;
const MAX_READDIR: u32 = 4096;

/// What a create makes.
pub(crate) struct NewNode {
    pub kind: Kind,
    pub perm: u32,
    pub rdev: u32,
    /// Symlink target.
    pub target: Option<Vec<u8>>,
}

pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

pub(crate) fn t_secs() -> i64 {
    now_ns() / 1_000_000_000
}

fn check_name(name: &[u8]) -> Res<()> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return fail(EINVAL, "invalid name");
    }
    if name.len() > NAME_MAX {
        return fail(ENAMETOOLONG, "name longer than 255 bytes");
    }
    Ok(())
}

/// Longest DNS name, and so longest mount target domain.
pub(crate) const MAX_DOMAIN: usize = 253;

fn check_domain(domain: &str) -> Res<()> {
    let valid = !domain.is_empty()
        && domain.len() <= MAX_DOMAIN
        && domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if !valid {
        return fail(EINVAL, "not a mount target domain");
    }
    Ok(())
}

/// The thin async side: which shard, which time, which capacity.
impl MetaService {
    pub(crate) async fn mount(
        &self,
        domain: &str,
        at: Option<&cpfs_proto::meta::MountRoot>,
        from: std::net::SocketAddr,
    ) -> Res<cpfs_proto::meta::MetaReply> {
        // Checked before anything is spent on it: a domain is a DNS name.
        check_domain(domain)?;
        let peer = crate::identity::client_ip(from.ip());
        // The access group decides whether this address may mount at all.
        let grant = self.fresh_grant(domain, peer).await?;
        // As NFS servers do: unless the rule opts out, only a privileged
        // port may mount, so only root on an admitted host can speak for
        // that host's users (any local user could claim any uid otherwise).
        if grant.privileged_only && from.port() >= crate::policy::PRIVILEGED_PORTS {
            return crate::fail(
                cpfs_proto::meta::errno::EACCES,
                format!(
                    "the access rule admitting {peer} on {domain} requires a privileged source port (below {}): mount as root, or set InsecurePorts on the rule",
                    crate::policy::PRIVILEGED_PORTS
                ),
            );
        }
        let fs = grant.fs.clone();
        let (root_ino, access_point) = match at {
            None => (cpfs_proto::meta::ROOT_INO, None),
            Some(at) => self.mount_root(&fs, at).await?,
        };
        let mut root = self.getattr_unconfined(&fs, root_ino).await?;
        // The session sees its root as inode 1 (confine.rs).
        root.ino = cpfs_proto::meta::ROOT_INO;
        let chain_table = self.chain_table().await?;
        let session = self.add_session(Session {
            id: 0,
            fs: fs.clone(),
            capacity_bytes: grant.capacity_bytes,
            domain: domain.to_string(),
            peer,
            privileged_only: grant.privileged_only,
            root: root_ino,
            access_point: access_point.clone(),
        });
        tracing::info!(
            fs = %fs,
            domain,
            %peer,
            writable = grant.writable,
            squash = ?grant.squash,
            ldap = grant.ldap.is_some(),
            root = root_ino,
            access_point = access_point.as_deref().unwrap_or(""),
            "client mounted"
        );
        Ok(cpfs_proto::meta::MetaReply::Mounted(
            cpfs_proto::meta::Mounted {
                session,
                fs,
                root,
                chain_table,
            },
        ))
    }

    async fn getattr_unconfined(&self, fs: &str, ino: u64) -> Res<Attr> {
        self.shards.read(fs, |st| st.attr(ino)).await
    }

    pub(crate) async fn lookup(
        &self,
        s: &Session,
        who: &Caller,
        parent: u64,
        name: &[u8],
    ) -> Res<Attr> {
        self.shards
            .read(&s.fs, |st| st.lookup(who, parent, name))
            .await
    }

    pub(crate) async fn getattr(&self, s: &Session, ino: u64) -> Res<Attr> {
        self.shards.read(&s.fs, |st| st.attr(ino)).await
    }

    pub(crate) async fn setattr(
        &self,
        s: &Session,
        who: &Caller,
        ino: u64,
        set: SetAttr,
    ) -> Res<Attr> {
        if let Some(size) = set.written {
            return self.written_and_times(s, who, ino, size, set).await;
        }
        // A truncate by a session with capacity set aside for the file
        // gives that back first (its writes were recorded before it, so
        // the size is where its data reaches): an extension would
        // otherwise count, and show as blocks, what was only set aside.
        if set.size.is_some() {
            // Not while data past the file's end is cut: an extension
            // would leave the cut short of it.
            self.after_cut(&s.fs, ino).await;
        }
        let t = now_ns();
        self.shards
            .write(&s.fs, |st| {
                // Under the namespace's lock, where every reservation is
                // noted, so none made meanwhile is given back with it.
                if set.size.is_some() && st.takes_truncate(who, ino, &set) {
                    if let Some(keep) = self.reserved_by_others(s, ino) {
                        st.unreserve(ino, keep)?;
                        self.note_given_back(s, ino);
                    }
                }
                st.setattr(who, ino, set, s.capacity_bytes, t)
            })
            .await
    }

    /// A record of the size this client's writes reached (as `written`
    /// makes it) and a setting of times, in one change (`SetAttr::written`).
    /// Everything that could refuse the times is checked before the
    /// record changes anything: an operation that fails after changing
    /// the namespace would discard it.
    async fn written_and_times(
        &self,
        s: &Session,
        who: &Caller,
        ino: u64,
        size: u64,
        mut set: SetAttr,
    ) -> Res<Attr> {
        let times_alone = set.mode.is_none()
            && set.uid.is_none()
            && set.gid.is_none()
            && set.size.is_none()
            && (set.atime_ns.is_some() || set.mtime_ns.is_some());
        if !times_alone {
            return fail(EINVAL, "a size written goes with a setting of times alone");
        }
        if !self.holds_writable(s, ino) {
            return fail(EBADF, "not open for writing by this client");
        }
        self.after_cut(&s.fs, ino).await;
        set.written = None;
        let t = now_ns();
        let root = who.uid == 0;
        self.shards
            .write(&s.fs, |st| {
                st.may_set_times(who, ino, &set)?;
                st.written(ino, size, s.capacity_bytes, t, root)?;
                st.setattr(who, ino, set, s.capacity_bytes, t)
            })
            .await
    }

    pub(crate) async fn create(
        &self,
        s: &Session,
        who: &Caller,
        parent: u64,
        name: &[u8],
        new: NewNode,
        id: Option<RequestId>,
    ) -> Res<Attr> {
        let t = now_ns();
        self.shards
            .write(&s.fs, |st| st.create(who, parent, name, new, id, t))
            .await
    }

    pub(crate) async fn readlink(&self, s: &Session, ino: u64) -> Res<Vec<u8>> {
        self.shards.read(&s.fs, |st| st.readlink(ino)).await
    }

    pub(crate) async fn link(
        &self,
        s: &Session,
        who: &Caller,
        ino: u64,
        to: (u64, &[u8]),
        id: Option<RequestId>,
    ) -> Res<Attr> {
        let t = now_ns();
        self.shards
            .write(&s.fs, |st| st.link(who, ino, to, id, t))
            .await
    }

    pub(crate) async fn unlink(
        &self,
        s: &Session,
        who: &Caller,
        entry: (u64, &[u8]),
        dir: bool,
        id: Option<RequestId>,
    ) -> Res<()> {
        let t = now_ns();
        self.shards
            .write(&s.fs, |st| st.unlink(who, entry, dir, id, t))
            .await
    }

    pub(crate) async fn rename(
        &self,
        s: &Session,
        who: &Caller,
        from: (u64, &[u8]),
        to: (u64, &[u8]),
        flags: u32,
        id: Option<RequestId>,
    ) -> Res<()> {
        let t = now_ns();
        self.shards
            .write(&s.fs, |st| st.rename(who, from, to, flags, id, t))
            .await
    }

    pub(crate) async fn open(
        &self,
        s: &Session,
        who: &Caller,
        ino: u64,
        read: bool,
        write: bool,
    ) -> Res<OpenFile> {
        let t = now_ns();
        let i = self
            .shards
            .write(&s.fs, |st| st.open(who, ino, read, write, t))
            .await?;
        let rights = if write { READ | WRITE } else { READ };
        Ok(self.opened_file(s, who, i, rights))
    }

    /// Opens a regular file a create just made, for writing (and reading)
    /// by its creator whatever mode it was given, as open(O_CREAT) does.
    pub(crate) async fn open_created(
        &self,
        s: &Session,
        who: &Caller,
        ino: u64,
        read: bool,
    ) -> Res<OpenFile> {
        let rights = if read { READ | WRITE } else { WRITE };
        // Under the namespace's lock: what the answer shows set aside past
        // the size (what the first attempt set aside) is this handle's, as
        // its client takes it, until its release gives it back.
        let i = self
            .shards
            .read(&s.fs, |st| {
                let i = st.inode(ino)?.clone();
                self.opened(s, ino, true);
                if i.attr.kind == Kind::File && i.attr.stored > i.attr.size {
                    self.note_reserved(s, ino, i.attr.stored);
                }
                Ok(i)
            })
            .await?;
        Ok(self.file_of(s, who, i, rights))
    }

    fn opened_file(&self, s: &Session, who: &Caller, i: Inode, rights: u8) -> OpenFile {
        self.opened(s, i.attr.ino, rights & WRITE != 0);
        self.file_of(s, who, i, rights)
    }

    /// The answer to an open of `i` whose handle is noted already.
    fn file_of(&self, s: &Session, who: &Caller, i: Inode, rights: u8) -> OpenFile {
        OpenFile {
            cap: self.capability(s, who.uid, i.attr.ino, rights),
            attr: i.attr,
            layout: Layout {
                chunk_size: i.chunk_size,
                chains: i.chains,
            },
        }
    }

    /// Creates a regular file and opens it for its creator, with
    /// [`CREATE_RESERVE`] set aside for its first writes when the capacity
    /// and the limits allow (the create never fails for want of it), all
    /// in one change.
    pub(crate) async fn create_file(
        &self,
        s: &Session,
        who: &Caller,
        (parent, name): (u64, &[u8]),
        new: NewNode,
        id: Option<RequestId>,
        read: bool,
    ) -> Res<OpenFile> {
        let t = now_ns();
        let root = who.uid == 0;
        // The handle and what is set aside are noted under the namespace's
        // lock, with the change, so that no give-back meanwhile misses
        // them; a commit that fails takes the handle back.
        let mut noted = None;
        let made = self
            .shards
            .write(&s.fs, |st| {
                let a = st.create(who, parent, name, new, id, t)?;
                let i = st.inode(a.ino)?.clone();
                self.opened(s, a.ino, true);
                noted = Some(a.ino);
                // A refusal changes nothing (the limits are checked first).
                if st
                    .reserve(a.ino, CREATE_RESERVE, s.capacity_bytes, root)
                    .is_ok()
                {
                    self.note_reserved(s, a.ino, CREATE_RESERVE);
                }
                Ok(st.inode(a.ino).cloned().unwrap_or(i))
            })
            .await;
        let i = match made {
            Ok(i) => i,
            Err(e) => {
                if let Some(ino) = noted {
                    self.released(s, ino, true);
                }
                return Err(e);
            }
        };
        let rights = if read { READ | WRITE } else { WRITE };
        Ok(self.file_of(s, who, i, rights))
    }

    /// Releases `handles` of `s` (inode, writable); the capacity set aside
    /// for those that were their session's last writable handle is given
    /// back in one change, which goes to the store with the next
    /// operation's commit (a create loop's files each had some set aside,
    /// and a load gives back whatever a crash kept).
    pub(crate) async fn release(&self, s: &Session, handles: &[(u64, bool)]) {
        let back: Vec<u64> = handles
            .iter()
            .filter(|(ino, writable)| self.released(s, *ino, *writable))
            .map(|(ino, _)| *ino)
            .collect();
        if back.is_empty() {
            return;
        }
        let r = self
            .shards
            .write_unawaited(&s.fs, |st| {
                for ino in &back {
                    // Fails only for an inode gone meanwhile: nothing to
                    // give back there.
                    let _ = st.unreserve(*ino, self.reserved_by_any(&s.fs, *ino));
                }
            })
            .await;
        if let Err((_, e)) = r {
            // The store refused: the next load gives it back.
            tracing::warn!(fs = %s.fs, files = back.len(), error = %e, "could not give back capacity set aside");
        }
    }

    /// Gives back the capacity set aside for `ino` that no session holds
    /// any more. What the others hold is read under the namespace's lock,
    /// where every reservation is noted (`reserve`), so none made
    /// meanwhile is given back with it.
    async fn give_back(&self, fs: &str, ino: u64) {
        let r = self
            .shards
            .write(fs, |st| st.unreserve(ino, self.reserved_by_any(fs, ino)))
            .await;
        if let Err((_, e)) = r {
            // The store refused: the next load gives it back.
            tracing::warn!(fs, ino, error = %e, "could not give back capacity set aside");
        }
    }

    /// Settles the files that sessions which ended (their lease ran out:
    /// the client was evicted) had set capacity aside for: the client may
    /// have written there, past the file's end, without recording it, and
    /// a later extension of the file must read zeros there, not those
    /// bytes. So the data from the file's end to where the reservation
    /// reached is cut on the nodes, then the capacity given back. A file
    /// a session holds open for writing keeps its tail for a later pass
    /// (its capacity is given back now); so does one the cut failed for.
    pub async fn settle_tails(&self, data: &cpfs_client::data::DataClient) {
        let tails: Vec<((String, u64), u64)> = self
            .tails
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for ((fs, ino), end) in tails {
            let cut = if self.begin_cut(&fs, ino) {
                let r = self.cut_tail(&fs, ino, end, data).await;
                if let Ok(Some(from)) = r {
                    self.note_lost(&fs, ino, from);
                }
                self.end_cut(&fs, ino);
                r.map(|_| ())
            } else {
                Err((EBUSY, "open for writing".into()))
            };
            self.give_back(&fs, ino).await;
            match cut {
                Ok(()) => {}
                Err((ENOENT, _)) => {}
                Err((e, why)) => {
                    if e != EBUSY {
                        tracing::warn!(%fs, ino, error = %why, "could not cut data past a file's end yet");
                    }
                    let mut t = self.tails.lock().unwrap_or_else(|p| p.into_inner());
                    let kept = t.entry((fs, ino)).or_default();
                    *kept = (*kept).max(end);
                }
            }
        }
    }

    /// Cuts `ino`'s data from its end up to `end` on the nodes; where the
    /// cut began, if anything was cut.
    async fn cut_tail(
        &self,
        fs: &str,
        ino: u64,
        end: u64,
        data: &cpfs_client::data::DataClient,
    ) -> Res<Option<u64>> {
        let (size, layout) = self
            .shards
            .read(fs, |st| {
                let i = st.inode(ino)?;
                let layout = Layout {
                    chunk_size: i.chunk_size,
                    chains: i.chains.clone(),
                };
                Ok((i.attr.size, layout))
            })
            .await?;
        if end <= size {
            return Ok(None);
        }
        let cap = self
            .key
            .issue(fs, ino, WRITE, now_ns() / 1_000_000_000 + 60);
        data.truncate(&cap, &layout, ino, size, end)
            .await
            .map(|()| Some(size))
            .map_err(|e| (EIO, e.to_string()))
    }

    /// Sets capacity aside for the session's writes to `ino` up to `upto`
    /// (`MetaOp::Reserve`), through a handle it opened for writing.
    pub(crate) async fn reserve(
        &self,
        s: &Session,
        who: &Caller,
        ino: u64,
        upto: u64,
    ) -> Res<Attr> {
        if !self.holds_writable(s, ino) {
            return fail(EBADF, "not open for writing by this client");
        }
        self.after_cut(&s.fs, ino).await;
        let root = who.uid == 0;
        self.shards
            .write(&s.fs, |st| {
                let a = st.reserve(ino, upto, s.capacity_bytes, root)?;
                if self.note_reserved(s, ino, upto.min(a.stored)) {
                    return Ok(a);
                }
                // Its last writable handle went meanwhile: nothing is set
                // aside, which the answer shows (stored bytes short of
                // `upto`).
                st.unreserve(ino, self.reserved_by_any(&s.fs, ino))?;
                st.attr(ino)
            })
            .await
    }

    pub(crate) async fn access(&self, s: &Session, who: &Caller, ino: u64, mask: u32) -> Res<()> {
        self.shards
            .read(&s.fs, |st| st.access(who, ino, mask))
            .await
    }

    pub(crate) async fn readdir(
        &self,
        s: &Session,
        who: &Caller,
        ino: u64,
        after: Option<Vec<u8>>,
        limit: u32,
    ) -> Res<(Vec<DirEntry>, bool)> {
        self.shards
            .read(&s.fs, |st| st.readdir(who, ino, after.as_deref(), limit))
            .await
    }

    #[allow(clippy::type_complexity)]
    pub(crate) async fn readdir_plus(
        &self,
        s: &Session,
        who: &Caller,
        ino: u64,
        after: Option<Vec<u8>>,
        limit: u32,
    ) -> Res<files::DirPage> {
        let mut page = self
            .shards
            .read(&s.fs, |st| {
                st.readdir_plus(who, ino, after.as_deref(), limit)
            })
            .await?;
        // `..` of a confined mount's root is the root, as a lookup says.
        if ino == s.root {
            page.parent = ino;
        }
        Ok(page)
    }

    pub(crate) async fn written(
        &self,
        s: &Session,
        who: &Caller,
        ino: u64,
        size: u64,
        resumed: bool,
    ) -> Res<Attr> {
        // Sizes and times move through handles this client opened for
        // writing (where the write permission was checked), not by inode
        // number alone.
        if !self.holds_writable(s, ino) {
            return fail(EBADF, "not open for writing by this client");
        }
        self.after_cut(&s.fs, ino).await;
        if resumed && self.lost_to_eviction(&s.fs, ino, size) {
            return fail(
                EIO,
                "this client was evicted (its session's lease ran out) and what it wrote past the file's end was cut",
            );
        }
        let t = now_ns();
        let root = who.uid == 0;
        self.shards
            .write(&s.fs, |st| st.written(ino, size, s.capacity_bytes, t, root))
            .await
    }

    /// The file system's capacity and usage; a mount confined to a
    /// fileset (through an access point or a path) sees the fileset's:
    /// its size limit (or the file system's capacity) and its usage.
    pub(crate) async fn statfs(&self, s: &Session) -> Res<FsStat> {
        let (c, fileset) = self
            .shards
            .read(&s.fs, |st| Ok((st.counters, st.fileset_stat(s.root))))
            .await?;
        Ok(match fileset {
            Some((limit, used_bytes, files)) => FsStat {
                capacity_bytes: limit.unwrap_or(s.capacity_bytes),
                used_bytes,
                files,
            },
            None => FsStat {
                capacity_bytes: s.capacity_bytes,
                used_bytes: c.used_bytes,
                files: c.files,
            },
        })
    }

    pub(crate) async fn setxattr(
        &self,
        s: &Session,
        who: &Caller,
        ino: u64,
        attr: (&[u8], &[u8]),
        flags: u32,
        id: Option<RequestId>,
    ) -> Res<()> {
        let t = now_ns();
        self.shards
            .write(&s.fs, |st| {
                st.setxattr(who, ino, attr, flags, s.capacity_bytes, id, t)
            })
            .await
    }

    pub(crate) async fn getxattr(
        &self,
        s: &Session,
        who: &Caller,
        ino: u64,
        name: &[u8],
    ) -> Res<Vec<u8>> {
        self.shards
            .read(&s.fs, |st| st.getxattr(who, ino, name))
            .await
    }

    pub(crate) async fn listxattr(&self, s: &Session, ino: u64) -> Res<Vec<Vec<u8>>> {
        self.shards.read(&s.fs, |st| st.listxattr(ino)).await
    }

    pub(crate) async fn removexattr(
        &self,
        s: &Session,
        who: &Caller,
        ino: u64,
        name: &[u8],
        id: Option<RequestId>,
    ) -> Res<()> {
        let t = now_ns();
        self.shards
            .write(&s.fs, |st| st.removexattr(who, ino, name, id, t))
            .await
    }

    pub(crate) async fn get_stripe(&self, s: &Session, ino: u64) -> Res<(u64, u32)> {
        self.shards.read(&s.fs, |st| st.get_stripe(ino)).await
    }

    pub(crate) async fn set_stripe(
        &self,
        s: &Session,
        who: &Caller,
        ino: u64,
        chunk_size: u64,
        width: u32,
    ) -> Res<()> {
        let t = now_ns();
        self.shards
            .write(&s.fs, |st| st.set_stripe(who, ino, (chunk_size, width), t))
            .await
    }

    /// The inode request `id` made or linked (0: none), when it was applied.
    pub(crate) async fn applied(&self, s: &Session, id: RequestId) -> Res<Option<u64>> {
        self.shards
            .read(&s.fs, |st| Ok(st.request(id.client, id.seq)))
            .await
    }

    /// Drops the records of requests nobody can still be retrying at
    /// `now` (seconds), in every loaded file system; how many.
    pub(crate) async fn forget_requests(&self, now: i64) -> Res<u64> {
        let mut gone = 0;
        for shard in self.shards.loaded() {
            let fs = shard.with(|st| st.fs.clone());
            match self
                .shards
                .write(&fs, |st| Ok(st.forget_requests(now - REQUEST_KEEP_SECS)))
                .await
            {
                Ok(n) => gone += n,
                // Moved away meanwhile: its new owner forgets them.
                Err((EMOVED, _)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(gone)
    }

    pub(crate) async fn chain_table(&self) -> Res<ChainTable> {
        let body = cpfs_store::latest_chain_table_body(&self.store.pool)
            .await
            .map_err(|e| (EIO, format!("metadata store: {e}")))?;
        match body {
            None => Ok(ChainTable::default()),
            Some(body) => ChainTable::from_stored(&body).map_err(|e| (EIO, e.to_string())),
        }
    }
}
