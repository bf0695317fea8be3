//! The on-disk record of a block (its bytes, then their CRC32C) and the
//! vectored calls that move whole blocks between a chunk file and a
//! request's payload without assembling records in a buffer: the payload
//! and the checksums are slices of one `pwritev` or `preadv`.

use std::fs::File;
use std::io::{IoSlice, IoSliceMut};

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
pub(super) fn read_whole_blocks(
    f: &File,
    first: u64,
    count: u64,
) -> std::io::Result<(Vec<u8>, Option<u64>)> {
    if first.saturating_add(count) > MAX_CHUNK_SIZE / BLOCK {
        return Err(std::io::ErrorKind::InvalidInput.into());
    }
    let mut data = vec![0u8; (count * BLOCK) as usize];
    let mut crcs = vec![[0u8; CRC as usize]; count as usize];
    let mut at = first * RECORD;
    let per_call = data.chunks_mut(BLOCK as usize * BLOCKS_PER_CALL);
    for (blocks, crcs) in per_call.zip(crcs.chunks_mut(BLOCKS_PER_CALL)) {
        let end = at + crcs.len() as u64 * RECORD;
        let mut slices: Vec<IoSliceMut<'_>> = blocks
            .chunks_mut(BLOCK as usize)
            .zip(crcs.iter_mut())
            .flat_map(|(block, crc)| [IoSliceMut::new(block), IoSliceMut::new(crc)])
            .collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            match rustix::io::preadv(f, rest, at) {
                Ok(0) => break, // past the end: holes
                Ok(n) => {
                    at += n as u64;
                    IoSliceMut::advance_slices(&mut rest, n);
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        at = end;
    }
    let bad = data
        .chunks(BLOCK as usize)
        .zip(&crcs)
        .position(|(block, crc)| !intact(block, u32::from_le_bytes(*crc)));
    Ok((data, bad.map(|i| i as u64)))
}
