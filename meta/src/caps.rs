//! Capabilities the service issues for the data nodes, and their renewal.
//!
//! A capability lasts minutes ([`crate::CAPABILITY_SECS`], settable); a
//! client renews it while it holds the file open. A renewal decides the
//! mount grant afresh (never from the cache, so a changed rule or a
//! deleted mount target is seen at once) and the caller's identity anew,
//! and grants at most the rights the capability had and the grant still
//! allows. File permissions are not checked again: a handle keeps the
//! rights it was opened with, as POSIX says.
//!
//! Each capability carries the time its grant was decided: when the
//! control plane revokes a file system's capabilities at some time, nodes
//! refuse those issued under a grant decided before it, cached or not.

use cpfs_proto::capability::{now_ms, Capability, ANY_INODE, READ, WRITE};
use cpfs_proto::meta::{errno, Caller};

use crate::{fail, MetaService, Res, Session};

impl MetaService {
    fn expiry(&self) -> i64 {
        crate::ns::t_secs()
            + self
                .capability_secs
                .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A capability for `uid` on `ino` of the session's file system,
    /// issued under the grant the session's request was decided with.
    pub(crate) fn capability(&self, s: &Session, uid: u32, ino: u64, rights: u8) -> Capability {
        let decided = self.grant_decided_ms(s).unwrap_or_else(now_ms);
        self.key
            .issue_at(uid, &s.fs, ino, rights, decided, self.expiry())
    }

    /// Renews `cap` for the session's `claimed` caller (see the module).
    pub(crate) async fn renew(
        &self,
        s: &Session,
        claimed: Caller,
        cap: Capability,
    ) -> Res<Capability> {
        if !self.key.genuine(&cap)
            || cap.fs != s.fs
            || cap.inode == ANY_INODE
            || cap.rights & !(READ | WRITE) != 0
        {
            return fail(
                errno::EACCES,
                "not a capability of this file system's files",
            );
        }
        let grant = self.fresh_grant(&s.domain, s.peer).await?;
        if grant.fs != s.fs {
            return fail(errno::ESTALE, "mount target now belongs elsewhere");
        }
        let who = self.identity(&grant, claimed).await?;
        if who.uid != cap.uid {
            return fail(
                errno::EACCES,
                format!("capability of uid {} asked for by uid {}", cap.uid, who.uid),
            );
        }
        let allowed = if grant.writable { READ | WRITE } else { READ };
        let rights = cap.rights & allowed;
        if rights == 0 {
            return fail(
                errno::EROFS,
                format!("mount target {} is read-only", s.domain),
            );
        }
        Ok(self.key.issue_at(
            who.uid,
            &s.fs,
            cap.inode,
            rights,
            grant.decided_ms,
            self.expiry(),
        ))
    }
}
