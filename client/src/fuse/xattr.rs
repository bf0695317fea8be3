//! Extended-attribute replies, and the virtual attribute that sets a
//! directory's stripe.

use cpfs_proto::meta::errno;
use fuser::ReplyXattr;

/// The virtual extended attribute `cpfs stripe` reads and writes.
pub const STRIPE_XATTR: &str = "user.cpfs.stripe";

pub(crate) fn xattr_reply(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32)
    } else if (size as usize) < value.len() {
        reply.error(errno::ERANGE)
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
