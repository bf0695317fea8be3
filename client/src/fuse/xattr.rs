//! Extended-attribute replies, and the virtual attribute that sets a
//! directory's stripe.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use cpfs_proto::meta::{errno, MetaOp, MetaReply};
use fuser::{Errno, ReplyXattr, Request};

use super::caller::caller;
use super::inline;
use super::CpfsFs;

/// The virtual extended attribute `cpfs stripe` reads and writes.
pub const STRIPE_XATTR: &str = "user.cpfs.stripe";

pub(crate) fn xattr_reply(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32)
    } else if (size as usize) < value.len() {
        reply.error(Errno::from_i32(errno::ERANGE))
    } else {
        reply.data(value)
    }
}

/// `chunk_size=N,stripe_width=W` (either may be omitted... both required here).
pub fn parse_stripe(v: &[u8]) -> Option<(u64, u32)> {
    let text = std::str::from_utf8(v).ok()?;
    let (mut cs, mut w) = (None, None);
    for part in text.trim().split(',') {
        let (k, val) = part.split_once('=')?;
        match k.trim() {
            "chunk_size" => cs = val.trim().parse().ok(),
            "stripe_width" => w = val.trim().parse().ok(),
            _ => return None,
        }
    }
    Some((cs?, w?))
}

/// Whether `name` is one the service refuses to store: system.* (POSIX
/// ACLs) and security.* (see the service's xattrs.rs).
pub(super) fn unsupported(name: &OsStr) -> bool {
    let n = name.as_bytes();
    n.starts_with(b"system.") || n.starts_with(b"security.")
}

impl CpfsFs {
    pub(super) fn getxattr_op(
        &self,
        req: &Request,
        ino: u64,
        name: &OsStr,
        size: u32,
        reply: ReplyXattr,
    ) {
        // The kernel asks for security.capability before every write;
        // security.* attributes are not stored (setxattr refuses them), so
        // the answer is known here without a round trip.
        if name.as_bytes().starts_with(b"security.") {
            return reply.error(Errno::from_i32(errno::ENODATA));
        }
        let meta = self.meta.clone();
        let who = caller(req);
        let stripe = name.as_bytes() == STRIPE_XATTR.as_bytes();
        let op = if stripe {
            MetaOp::GetStripe { ino }
        } else {
            MetaOp::GetXattr {
                ino,
                name: name.as_bytes().to_vec(),
            }
        };
        inline::run(&self.rt, async move {
            let value = match meta.call(&who, op).await {
                Ok(MetaReply::Xattr(v)) => v,
                Ok(MetaReply::Stripe {
                    chunk_size,
                    stripe_width,
                }) => format!("{{\"chunk_size\":{chunk_size},\"stripe_width\":{stripe_width}}}")
                    .into_bytes(),
                Ok(_) => return reply.error(Errno::from_i32(errno::EIO)),
                Err(e) => return reply.error(Errno::from_i32(e)),
            };
            xattr_reply(reply, size, &value)
        });
    }

    pub(super) fn listxattr_op(&self, req: &Request, ino: u64, size: u32, reply: ReplyXattr) {
        let meta = self.meta.clone();
        let who = caller(req);
        inline::run(&self.rt, async move {
            match meta.call(&who, MetaOp::ListXattr { ino }).await {
                Ok(MetaReply::XattrNames(names)) => {
                    let mut out = Vec::new();
                    for n in names {
                        out.extend_from_slice(&n);
                        out.push(0);
                    }
                    xattr_reply(reply, size, &out)
                }
                Ok(_) => reply.error(Errno::from_i32(errno::EIO)),
                Err(e) => reply.error(Errno::from_i32(e)),
            }
        });
    }
}
