//! The copy and repair side of the chunk store: listing chunks, raw
//! records for resync, digests, and block-level scrub and repair.

use super::*;

impl ChunkStore {
    /// Every chunk this node holds, with its file length in bytes of data
    /// (records × 4 KiB). A walk of the directory tree: callers run it in
    /// the background, not per request.
    pub fn list_chunks(&self) -> Vec<(ChunkKey, u64)> {
        let mut out = Vec::new();
        let Ok(fss) = std::fs::read_dir(&self.root) else {
            return out;
        };
        for fs in fss.flatten() {
            let fs_name = fs.file_name().to_string_lossy().to_string();
            if !valid_fs(&fs_name) {
                continue;
            }
            let Ok(inodes) = std::fs::read_dir(fs.path()) else {
                continue;
            };
            for inode in inodes.flatten() {
                let Ok(ino) = inode.file_name().to_string_lossy().parse::<u64>() else {
                    continue;
                };
                let Ok(chunks) = std::fs::read_dir(inode.path()) else {
                    continue;
                };
                for chunk in chunks.flatten() {
                    let name = chunk.file_name().to_string_lossy().to_string();
                    let Some((index, chain)) = parse_chunk_name(&name) else {
                        continue;
                    };
                    let len = chunk.metadata().map(|m| m.len()).unwrap_or(0);
                    out.push((
                        ChunkKey {
                            fs: fs_name.clone(),
                            inode: ino,
                            index,
                            chain,
                        },
                        len / RECORD * BLOCK,
                    ));
                }
            }
        }
        out
    }

    /// The chunk's stored records (blocks and checksums) after verifying
    /// every one; None when the chunk does not exist. What a resync copies.
    pub fn read_raw(&self, key: &ChunkKey) -> Result<Option<Vec<u8>>, NodeError> {
        let _guard = self.lock_for(key).read().unwrap_or_else(|p| p.into_inner());
        let Some(f) = self.file(key, false)? else {
            return Ok(None);
        };
        let len = f.metadata().map_err(io)?.len();
        let raw = self.read_records(&f, 0, len / RECORD)?;
        if raw
            .chunks(RECORD as usize)
            .any(|r| decode_record(r).is_none())
        {
            self.checksum_errors.fetch_add(1, Ordering::Relaxed);
            return Err(NodeError::Checksum);
        }
        Ok(Some(raw))
    }

    /// Block `b` of the chunk after verifying it; None when the chunk does
    /// not exist or ends before the block.
    pub fn read_block(&self, key: &ChunkKey, b: u64) -> Result<Option<Vec<u8>>, NodeError> {
        let _guard = self.lock_for(key).read().unwrap_or_else(|p| p.into_inner());
        let Some(f) = self.file(key, false)? else {
            return Ok(None);
        };
        if f.metadata().map_err(io)?.len() < (b + 1) * RECORD {
            return Ok(None);
        }
        let rec = self.read_records(&f, b, 1)?;
        match decode_record(&rec) {
            Some(block) => Ok(Some(block.to_vec())),
            None => {
                self.checksum_errors.fetch_add(1, Ordering::Relaxed);
                Err(NodeError::Checksum)
            }
        }
    }

    /// A digest of the chunk (its length and the CRC32C of its blocks), to
    /// tell whether two copies are the same without moving the data.
    ///
    /// The blocks only, not the stored records: a record is a block
    /// followed by its own CRC32C, and a CRC run over such a record always
    /// ends in the same residue, so a CRC of the records would depend on
    /// their number alone and call every two copies of one length equal.
    pub fn digest(&self, key: &ChunkKey) -> Result<Option<(u64, u32)>, NodeError> {
        let _guard = self.lock_for(key).read().unwrap_or_else(|p| p.into_inner());
        let Some(f) = self.file(key, false)? else {
            return Ok(None);
        };
        let len = f.metadata().map_err(io)?.len();
        let raw = self.read_records(&f, 0, len / RECORD)?;
        let crc = raw.chunks(RECORD as usize).fold(0, |crc, rec| {
            crc32c::crc32c_append(crc, &rec[..BLOCK as usize])
        });
        Ok(Some((len, crc)))
    }

    /// Replaces the whole chunk with `raw` records (a resync copy), after
    /// checking every record; `None` removes it. Written to a temporary
    /// file and renamed, so a crash leaves the old copy or the new one.
    pub fn put_raw(&self, key: &ChunkKey, raw: Option<&[u8]>) -> Result<(), NodeError> {
        if !valid_fs(&key.fs) {
            return Err(NodeError::Invalid("bad file system id".into()));
        }
        if let Some(raw) = raw {
            if !(raw.len() as u64).is_multiple_of(RECORD)
                || raw
                    .chunks(RECORD as usize)
                    .any(|r| decode_record(r).is_none())
            {
                return Err(NodeError::Invalid(
                    "resync data is not whole, valid records".into(),
                ));
            }
        }
        let _guard = self
            .lock_for(key)
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let path = self.chunk_path(key);
        let before = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        let c = self.counters(&key.fs);
        match raw {
            None => match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            },
            Some(raw) => {
                std::fs::create_dir_all(self.inode_dir(&key.fs, key.inode)).map_err(io)?;
                let tmp = path.with_extension("resync");
                std::fs::write(&tmp, raw).map_err(io)?;
                std::fs::rename(&tmp, &path).map_err(io)?;
            }
        }
        let after = raw.map_or(0, |r| r.len() as u64);
        c.stored
            .fetch_add(after / RECORD * BLOCK, Ordering::Relaxed);
        c.stored.fetch_sub(
            (before / RECORD * BLOCK).min(c.stored.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        Ok(())
    }

    /// Blocks of the chunk whose checksum fails (what the scrubber looks
    /// for). Reads the chunk in pieces so one scrub never holds the chunk
    /// lock for long.
    pub fn bad_blocks(&self, key: &ChunkKey) -> Result<Vec<u64>, NodeError> {
        let len = {
            let _guard = self.lock_for(key).read().unwrap_or_else(|p| p.into_inner());
            let Some(f) = self.file(key, false)? else {
                return Ok(vec![]);
            };
            f.metadata().map_err(io)?.len()
        };
        let blocks = len / RECORD;
        let mut bad = Vec::new();
        let step = 64u64;
        let mut b = 0;
        while b < blocks {
            let n = step.min(blocks - b);
            let _guard = self.lock_for(key).read().unwrap_or_else(|p| p.into_inner());
            let Some(f) = self.file(key, false)? else {
                break;
            };
            let raw = self.read_records(&f, b, n)?;
            for (i, rec) in raw.chunks(RECORD as usize).enumerate() {
                if decode_record(rec).is_none() {
                    bad.push(b + i as u64);
                }
            }
            b += n;
        }
        if !bad.is_empty() {
            self.checksum_errors
                .fetch_add(bad.len() as u64, Ordering::Relaxed);
        }
        Ok(bad)
    }

    /// Rewrites, from `data` (good copies of whole blocks starting at the
    /// block-aligned `offset`), only the blocks that still fail their
    /// checksum here. A block written since the damage was found is newer
    /// than the copy and is left alone. Returns how many were rewritten.
    pub fn repair_blocks(
        &self,
        key: &ChunkKey,
        offset: u64,
        data: &[u8],
    ) -> Result<u64, NodeError> {
        if !offset.is_multiple_of(BLOCK) || !(data.len() as u64).is_multiple_of(BLOCK) {
            return Err(NodeError::Invalid("repairs cover whole blocks".into()));
        }
        let _guard = self
            .lock_for(key)
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let Some(f) = self.file(key, false)? else {
            return Ok(0);
        };
        let first = offset / BLOCK;
        let count = data.len() as u64 / BLOCK;
        let raw = self.read_records(&f, first, count)?;
        let mut fixed = 0;
        for (i, rec) in raw.chunks(RECORD as usize).enumerate() {
            if decode_record(rec).is_some() {
                continue;
            }
            let block = &data[i * BLOCK as usize..(i + 1) * BLOCK as usize];
            let mut out = Vec::with_capacity(RECORD as usize);
            encode_record(block, &mut out);
            f.write_all_at(&out, (first + i as u64) * RECORD)
                .map_err(io)?;
            fixed += 1;
        }
        self.repairs.fetch_add(fixed, Ordering::Relaxed);
        Ok(fixed)
    }
}
