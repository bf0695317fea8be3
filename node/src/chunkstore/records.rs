//! The on-disk record of a block (its bytes, then their CRC32C) and the
//! vectored calls that move whole blocks between a chunk file and a
//! request's payload without assembling records in a buffer: the payload
//! and the checksums are slices of one `pwritev` or `preadv`.

use std::fs::File;
use std::io::IoSlice;
use std::os::fd::AsRawFd;

use cpfs_proto::layout::{BLOCK, MAX_CHUNK_SIZE};

use super::{CRC, RECORD};

/// Blocks per vectored call: two slices a block, within the kernel's
/// 1,024.
const BLOCKS_PER_CALL: usize = 512;

/// Appends the record of `block` to `out`.
pub(super) fn encode_record(block: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(block);
    out.extend_from_slice(&crc32c::crc32c(block).to_le_bytes());
}

/// Writes whole blocks as records starting at byte `at` of the chunk file,
/// straight from the payload: each block and then its checksum go to the
/// kernel as slices of one `pwritev`, with no copy of the payload into a
/// buffer of records.
pub(super) fn write_whole_blocks(f: &File, data: &[u8], mut at: u64) -> std::io::Result<()> {
    let crcs: Vec<[u8; CRC as usize]> = data
        .chunks(BLOCK as usize)
        .map(|b| crc32c::crc32c(b).to_le_bytes())
        .collect();
    let blocks_per_call = data.chunks(BLOCK as usize * BLOCKS_PER_CALL);
    for (blocks, crcs) in blocks_per_call.zip(crcs.chunks(BLOCKS_PER_CALL)) {
        let mut slices: Vec<IoSlice<'_>> = blocks
            .chunks(BLOCK as usize)
            .zip(crcs)
            .flat_map(|(block, crc)| [IoSlice::new(block), IoSlice::new(crc)])
            .collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            match rustix::io::pwritev(f, rest, at) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    at += n as u64;
                    IoSlice::advance_slices(&mut rest, n);
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// The block of a record, or None when its checksum fails. A hole is zeros.
pub(super) fn decode_record(rec: &[u8]) -> Option<&[u8]> {
    let (block, crc) = rec.split_at(BLOCK as usize);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    intact(block, stored).then_some(block)
}

/// Whether `block` matches the checksum stored with it. A hole (never
/// written, or past the end of the file) reads as zeros with a zero
/// checksum.
fn intact(block: &[u8], stored: u32) -> bool {
    stored == crc32c::crc32c(block) || (stored == 0 && block.iter().all(|b| *b == 0))
}

/// Reads `count` whole blocks from block `first` on, straight into the
/// vector that is returned, with the index (from `first`) of the first
/// block whose checksum failed, if one did. Past the end of the file the
/// blocks are holes (zeros).
///
/// The vector is not zeroed first (a megabyte's `memset` was a tenth of a
/// node's CPU in a streamed read): the kernel writes the blocks into its
/// spare capacity, and only what lies past the end of the file is zeroed.
pub(super) fn read_whole_blocks(
    f: &File,
    first: u64,
    count: u64,
) -> std::io::Result<(Vec<u8>, Option<u64>)> {
    if first.saturating_add(count) > MAX_CHUNK_SIZE / BLOCK {
        return Err(std::io::ErrorKind::InvalidInput.into());
    }
    let len = (count * BLOCK) as usize;
    let mut data: Vec<u8> = Vec::with_capacity(len);
    let mut crcs = vec![[0u8; CRC as usize]; count as usize];
    let base = data.as_mut_ptr();
    let mut at = first * RECORD;
    for (group, crcs) in crcs.chunks_mut(BLOCKS_PER_CALL).enumerate() {
        let end = at + crcs.len() as u64 * RECORD;
        let first_block = group * BLOCKS_PER_CALL;
        // Raw pieces: no reference to the vector's uninitialised bytes is
        // ever made, only pointers the kernel writes through.
        let mut iov: Vec<libc::iovec> = crcs
            .iter_mut()
            .enumerate()
            .flat_map(|(i, crc)| {
                // SAFETY: block `first_block + i` lies within the
                // capacity of `len` bytes.
                let block = unsafe { base.add((first_block + i) * BLOCK as usize) };
                [
                    libc::iovec {
                        iov_base: block.cast(),
                        iov_len: BLOCK as usize,
                    },
                    libc::iovec {
                        iov_base: crc.as_mut_ptr().cast(),
                        iov_len: CRC as usize,
                    },
                ]
            })
            .collect();
        preadv_all(f, &mut iov, at)?;
        at = end;
    }
    // SAFETY: every block was written by the kernel or zeroed by
    // `preadv_all`, so all `len` bytes are initialised.
    unsafe { data.set_len(len) };
    let bad = data
        .chunks(BLOCK as usize)
        .zip(&crcs)
        .position(|(block, crc)| !intact(block, u32::from_le_bytes(*crc)));
    Ok((data, bad.map(|i| i as u64)))
}

/// Fills the pieces `iov` describes from `f` at `at`, in order; what lies
/// past the end of the file is zeroed.
fn preadv_all(f: &File, iov: &mut [libc::iovec], mut at: u64) -> std::io::Result<()> {
    let fd = f.as_raw_fd();
    let mut rest = iov;
    while !rest.is_empty() {
        let offset = libc::off_t::try_from(at).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        // SAFETY: every piece points at writable memory of its length
        // (the caller's), and `rest` holds at most 1,024 pieces.
        let n = unsafe { libc::preadv(fd, rest.as_ptr(), rest.len() as libc::c_int, offset) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            // Past the end: holes.
            for piece in rest.iter() {
                // SAFETY: as above, the piece is writable memory of its
                // length.
                unsafe { std::ptr::write_bytes(piece.iov_base.cast::<u8>(), 0, piece.iov_len) };
            }
            return Ok(());
        }
        at += n as u64;
        let mut n = n as usize;
        while let Some(piece) = rest.first_mut() {
            if n < piece.iov_len {
                // SAFETY: advancing within the piece.
                piece.iov_base = unsafe { piece.iov_base.cast::<u8>().add(n) }.cast();
                piece.iov_len -= n;
                break;
            }
            n -= piece.iov_len;
            rest = &mut rest[1..];
        }
    }
    Ok(())
}
