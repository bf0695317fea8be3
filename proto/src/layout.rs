//! Striping: a file is cut into chunks of `chunk_size` bytes; chunk k lives
//! on chain `chains[k % stripe_width]` (the file's stripe, chosen when the
//! file is created). Like RAID-0 across chains, so large I/O fans out.

use serde::{Deserialize, Serialize};

pub const BLOCK: u64 = 4096;
pub const DEFAULT_CHUNK_SIZE: u64 = 1 << 20;
pub const DEFAULT_STRIPE_WIDTH: u32 = 4;
pub const MIN_CHUNK_SIZE: u64 = 64 * 1024;
pub const MAX_CHUNK_SIZE: u64 = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub chunk_size: u64,
    /// Chain ids, in stripe order; its length is the stripe width.
    pub chains: Vec<u32>,
}

/// A piece of an I/O that falls in one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub chunk: u64,
    pub chain: u32,
    /// Offset inside the chunk.
    pub offset: u64,
    pub len: u64,
    /// Offset inside the caller's buffer.
    pub buf_offset: u64,
}

pub fn validate(chunk_size: u64, stripe_width: u32) -> Result<(), String> {
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) || !chunk_size.is_multiple_of(BLOCK)
    {
        return Err(format!(
            "chunk size must be a multiple of 4096 between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE}"
        ));
    }
    if stripe_width == 0 || stripe_width > 256 {
        return Err("stripe width must be between 1 and 256".into());
    }
    Ok(())
}

/// Why a range of a file cannot be cut into pieces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// `offset + len` does not fit a file offset: refused, never wrapped.
    #[error("offset {offset} + length {len} overflows")]
    Overflow { offset: u64, len: u64 },
    /// A layout no metadata service hands out (no chains, a chunk size
    /// outside the allowed range): dividing by it would panic or loop.
    #[error("invalid layout: {0}")]
    Invalid(String),
}

impl Layout {
    /// Chain of chunk `chunk`. The layout must be valid ([`Layout::check`]).
    pub fn chain_of(&self, chunk: u64) -> u32 {
        self.chains[(chunk % self.chains.len() as u64) as usize]
    }

    /// Whether the layout can be used to cut I/O: a chunk size a layout
    /// allows and at least one chain.
    pub fn check(&self) -> Result<(), LayoutError> {
        if self.chains.is_empty() {
            return Err(LayoutError::Invalid("no chains".into()));
        }
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return Err(LayoutError::Invalid(format!(
                "chunk size {}",
                self.chunk_size
            )));
        }
        Ok(())
    }

    /// Splits `[offset, offset + len)` of the file into per-chunk pieces.
    pub fn pieces(&self, offset: u64, len: u64) -> Result<Vec<Piece>, LayoutError> {
        self.check()?;
        let end = offset
            .checked_add(len)
            .ok_or(LayoutError::Overflow { offset, len })?;
        let mut out = Vec::new();
        let mut pos = offset;
        while pos < end {
            let chunk = pos / self.chunk_size;
            let in_chunk = pos % self.chunk_size;
            let n = (self.chunk_size - in_chunk).min(end - pos);
            out.push(Piece {
                chunk,
                chain: self.chain_of(chunk),
                offset: in_chunk,
                len: n,
                buf_offset: pos - offset,
            });
            pos += n;
        }
        Ok(out)
    }

    /// Stripe of `width` chains starting at `start` among `available`.
    pub fn stripe(chunk_size: u64, available: &[u32], width: u32, start: usize) -> Layout {
        let w = (width as usize).min(available.len()).max(1);
        let chains = (0..w)
            .map(|i| available[(start + i) % available.len().max(1)])
            .collect();
        Layout { chunk_size, chains }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_range_in_order() {
        let l = Layout {
            chunk_size: 1 << 20,
            chains: vec![5, 6, 7],
        };
        let p = l.pieces((1 << 20) - 10, (2 << 20) + 20).unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(
            (p[0].chunk, p[0].chain, p[0].offset, p[0].len),
            (0, 5, (1 << 20) - 10, 10)
        );
        assert_eq!(
            (p[1].chunk, p[1].chain, p[1].len, p[1].buf_offset),
            (1, 6, 1 << 20, 10)
        );
        assert_eq!((p[3].chunk, p[3].chain, p[3].len), (3, 5, 10));
        assert_eq!(p.iter().map(|x| x.len).sum::<u64>(), (2 << 20) + 20);
        assert!(l.pieces(5, 0).unwrap().is_empty());
    }

    #[test]
    fn ranges_past_the_largest_offset_and_bad_layouts_are_refused() {
        let l = Layout {
            chunk_size: 1 << 20,
            chains: vec![5],
        };
        assert_eq!(
            l.pieces(u64::MAX - 10, 11),
            Err(LayoutError::Overflow {
                offset: u64::MAX - 10,
                len: 11
            })
        );
        assert_eq!(
            l.pieces(1 << 63, 1 << 63).unwrap_err().to_string(),
            format!("offset {} + length {} overflows", 1u64 << 63, 1u64 << 63)
        );
        // The last byte of the largest offset is still a piece.
        let last = l.pieces(u64::MAX - 1, 1).unwrap();
        assert_eq!((last[0].chunk, last[0].len), (u64::MAX / (1 << 20), 1));
        let empty = Layout {
            chunk_size: 1 << 20,
            chains: vec![],
        };
        assert!(matches!(empty.pieces(0, 1), Err(LayoutError::Invalid(_))));
        let zero = Layout {
            chunk_size: 0,
            chains: vec![1],
        };
        assert!(matches!(zero.pieces(0, 1), Err(LayoutError::Invalid(_))));
    }

    #[test]
    fn stripe_width_is_capped_by_chains() {
        let l = Layout::stripe(1 << 20, &[0, 1, 2], 4, 1);
        assert_eq!(l.chains, vec![1, 2, 0]);
        assert!(validate(1000, 4).is_err());
        assert!(validate(1 << 20, 0).is_err());
        assert!(validate(1 << 20, 4).is_ok());
    }
}
