//! The copy and repair side of the chunk store: listing chunks, raw
//! records for resync, digests, and block-level scrub and repair.

use super::*;
use cpfs_proto::node::SYNC_PIECE_RECORDS;

/// Where a resync builds a chunk's new copy: beside it, under a name no
/// chunk has (`<index>.c<chain>.resync` does not parse as a chunk name).
fn resync_path(chunk: &Path) -> PathBuf {
    let mut name = chunk.as_os_str().to_owned();
    name.push(".resync");
    PathBuf::from(name)
}

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
                    let len = chunk
                        .metadata()
                        .map(|m| m.len())
                        .unwrap_or(0)
                        .min(MAX_RECORDS * RECORD);
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

    /// Indexes of the chunks of `inode` held on `chain`, from `from` up,
    /// ascending, at most `max` of them.
    pub fn list_inode(
        &self,
        fs: &str,
        inode: u64,
        chain: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<u64>, NodeError> {
        if !valid_fs(fs) {
            return Err(NodeError::Invalid("bad file system id".into()));
        }
        let entries = match std::fs::read_dir(self.inode_dir(fs, inode)) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(e)),
        };
        let mut out: Vec<u64> = entries
            .flatten()
            .filter_map(|e| parse_chunk_name(&e.file_name().to_string_lossy()))
            .filter(|(index, c)| *c == chain && *index >= from)
            .map(|(index, _)| index)
            .collect();
        out.sort_unstable();
        out.truncate(max);
        Ok(out)
    }

    /// Records of the chunk a copy holds: its whole records, up to the
    /// largest chunk; None when the chunk does not exist.
    pub fn records(&self, key: &ChunkKey) -> Result<Option<u64>, NodeError> {
        let _guard = self.lock_for(key).read().unwrap_or_else(|p| p.into_inner());
        let Some(f) = self.file(key, false)? else {
            return Ok(None);
        };
        Ok(Some(
            (f.metadata().map_err(io)?.len() / RECORD).min(MAX_RECORDS),
        ))
    }

    /// Stored records `[first, first + count)` of the chunk (blocks and
    /// checksums, cut at its end) after verifying every one; None when the
    /// chunk does not exist. What a resync copies, a piece at a time, so
    /// no chunk is ever held whole in memory.
    pub fn read_raw(
        &self,
        key: &ChunkKey,
        first: u64,
        count: u64,
    ) -> Result<Option<Vec<u8>>, NodeError> {
        let _guard = self.lock_for(key).read().unwrap_or_else(|p| p.into_inner());
        let Some(f) = self.file(key, false)? else {
            return Ok(None);
        };
        let have = (f.metadata().map_err(io)?.len() / RECORD).min(MAX_RECORDS);
        let end = first.saturating_add(count).min(have);
        if first >= end {
            return Ok(Some(Vec::new()));
        }
        let raw = self.read_records(&f, first, end - first)?;
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
        if b >= MAX_RECORDS || f.metadata().map_err(io)?.len() < (b + 1) * RECORD {
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
    ///
    /// Read a piece at a time, up to the largest chunk (the length is of
    /// the records digested, so copies compare as they are copied).
    pub fn digest(&self, key: &ChunkKey) -> Result<Option<(u64, u32)>, NodeError> {
        let _guard = self.lock_for(key).read().unwrap_or_else(|p| p.into_inner());
        let Some(f) = self.file(key, false)? else {
            return Ok(None);
        };
        let len = f.metadata().map_err(io)?.len().min(MAX_RECORDS * RECORD);
        let records = len / RECORD;
        let mut crc = 0;
        let mut at = 0;
        while at < records {
            let n = SYNC_PIECE_RECORDS.min(records - at);
            let raw = self.read_records(&f, at, n)?;
            crc = raw.chunks(RECORD as usize).fold(crc, |crc, rec| {
                crc32c::crc32c_append(crc, &rec[..BLOCK as usize])
            });
            at += n;
        }
        Ok(Some((len, crc)))
    }

    /// Takes one piece of a resync copy: records `raw` at record `first`
    /// of the new copy, built in a temporary file beside the chunk; the
    /// `last` piece replaces the chunk with it by a rename, so a crash
    /// leaves the old copy or the new one. Pieces must come in order from
    /// record 0; every record is checked and none may lie past the largest
    /// chunk.
    pub fn put_raw(
        &self,
        key: &ChunkKey,
        first: u64,
        raw: &[u8],
        last: bool,
    ) -> Result<(), NodeError> {
        if !valid_fs(&key.fs) {
            return Err(NodeError::Invalid("bad file system id".into()));
        }
        let count = raw.len() as u64 / RECORD;
        if !(raw.len() as u64).is_multiple_of(RECORD)
            || raw
                .chunks(RECORD as usize)
                .any(|r| decode_record(r).is_none())
        {
            return Err(NodeError::Invalid(
                "resync data is not whole, valid records".into(),
            ));
        }
        if first.checked_add(count).is_none_or(|end| end > MAX_RECORDS) {
            return Err(NodeError::OutOfRange {
                offset: first.saturating_mul(BLOCK),
                len: count * BLOCK,
            });
        }
        let _guard = self
            .lock_for(key)
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let path = self.chunk_path(key);
        let tmp = resync_path(&path);
        let piece = if first == 0 {
            std::fs::create_dir_all(self.inode_dir(&key.fs, key.inode)).map_err(io)?;
            File::create(&tmp).map_err(io)?
        } else {
            match OpenOptions::new().write(true).open(&tmp) {
                Ok(f) => f,
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    return Err(NodeError::Invalid(
                        "resync piece without the pieces before it".into(),
                    ))
                }
                Err(e) => return Err(io(e)),
            }
        };
        if piece.metadata().map_err(io)?.len() != first * RECORD {
            return Err(NodeError::Invalid("resync pieces out of order".into()));
        }
        piece.write_all_at(raw, first * RECORD).map_err(io)?;
        if !last {
            return Ok(());
        }
        let before = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let after = piece.metadata().map_err(io)?.len();
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        std::fs::rename(&tmp, &path).map_err(io)?;
        let c = self.counters(&key.fs);
        c.stored
            .fetch_add(after / RECORD * BLOCK, Ordering::Relaxed);
        c.stored.fetch_sub(
            (before / RECORD * BLOCK).min(c.stored.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        Ok(())
    }

    /// Removes the chunk (a resync found the head has none) and any
    /// unfinished resync copy of it.
    pub fn remove_chunk(&self, key: &ChunkKey) -> Result<(), NodeError> {
        if !valid_fs(&key.fs) {
            return Err(NodeError::Invalid("bad file system id".into()));
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
        for p in [resync_path(&path), path] {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            }
        }
        let c = self.counters(&key.fs);
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
        let blocks = (len / RECORD).min(MAX_RECORDS);
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
        check_range(offset, data.len() as u64)?;
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
