use super::*;
use std::os::fd::AsRawFd;

fn key(i: u64) -> ChunkKey {
    ChunkKey {
        fs: "cpfs-test".into(),
        inode: 7,
        index: i,
        chain: 3,
    }
}

#[test]
fn writes_read_back_with_holes_as_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let s = ChunkStore::open(dir.path()).unwrap();
    assert_eq!(
        s.read(&key(0), 0, 10).unwrap(),
        vec![0; 10],
        "absent chunk is a hole"
    );
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    s.write(&key(0), 5000, &data, false).unwrap();
    assert_eq!(s.read(&key(0), 5000, 10_000).unwrap(), data);
    assert_eq!(s.read(&key(0), 0, 5000).unwrap(), vec![0; 5000]);
    // Overwrite a few bytes in the middle of a block: the rest stays.
    s.write(&key(0), 6000, b"xyz", false).unwrap();
    let back = s.read(&key(0), 5000, 10_000).unwrap();
    assert_eq!(&back[1000..1003], b"xyz");
    assert_eq!(back[999], data[999]);
    assert_eq!(back[1003], data[1003]);
    // Past the end of the file: zeros.
    assert_eq!(s.read(&key(0), 1 << 20, 100).unwrap(), vec![0; 100]);
}

#[test]
fn corruption_is_detected_and_repair_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let s = ChunkStore::open(dir.path()).unwrap();
    let data = vec![0xabu8; 3 * 4096];
    s.write(&key(1), 0, &data, false).unwrap();
    // Flip a byte of block 1 on disk.
    let path = s.chunk_path(&key(1));
    let mut raw = std::fs::read(&path).unwrap();
    raw[(RECORD + 100) as usize] ^= 0xff;
    std::fs::write(&path, raw).unwrap();
    s.files.lock().unwrap().clear();
    assert_eq!(
        s.read(&key(1), 0, 4096).unwrap(),
        vec![0xab; 4096],
        "block 0 is fine"
    );
    assert_eq!(s.read(&key(1), 4096, 10), Err(NodeError::Checksum));
    assert_eq!(s.checksum_errors.load(Ordering::Relaxed), 1);
    // A partial write onto the bad block cannot merge with it.
    assert_eq!(
        s.write(&key(1), 4096 + 10, b"x", false),
        Err(NodeError::Checksum)
    );
    s.write(&key(1), 4096, &vec![0xab; 4096], true).unwrap();
    assert_eq!(s.read(&key(1), 0, 3 * 4096).unwrap(), data);
    assert_eq!(s.repairs.load(Ordering::Relaxed), 1);
}

#[test]
fn whole_blocks_move_as_records_without_a_buffer_of_records() {
    let dir = tempfile::tempdir().unwrap();
    let s = ChunkStore::open(dir.path()).unwrap();
    // More blocks than one vectored call takes (512), and a block-aligned
    // start past a hole.
    let blocks = 1300u64;
    let data: Vec<u8> = (0..blocks * BLOCK).map(|i| (i % 253) as u8).collect();
    s.write(&key(4), 3 * BLOCK, &data, false).unwrap();
    let path = s.chunk_path(&key(4));
    let raw = std::fs::read(&path).unwrap();
    assert_eq!(raw.len() as u64, (3 + blocks) * RECORD);
    // Each record is the block and then its CRC32C, as the unaligned path
    // writes them.
    for b in [0u64, 511, 512, 1299] {
        let rec = &raw[((3 + b) * RECORD) as usize..((4 + b) * RECORD) as usize];
        let block = &data[(b * BLOCK) as usize..((b + 1) * BLOCK) as usize];
        assert_eq!(&rec[..BLOCK as usize], block);
        assert_eq!(rec[BLOCK as usize..], crc32c::crc32c(block).to_le_bytes());
    }
    // Aligned reads: the hole before, the data, and past the end.
    let back = s.read(&key(4), 0, (3 + blocks + 2) * BLOCK).unwrap();
    assert_eq!(
        back[..(3 * BLOCK) as usize],
        vec![0; 3 * BLOCK as usize][..]
    );
    assert_eq!(
        &back[(3 * BLOCK) as usize..((3 + blocks) * BLOCK) as usize],
        &data[..]
    );
    assert!(back[((3 + blocks) * BLOCK) as usize..]
        .iter()
        .all(|b| *b == 0));
    // A flipped byte in the 700th block fails an aligned read that covers
    // it, and only that one.
    let mut raw = raw;
    raw[((3 + 700) * RECORD + 9) as usize] ^= 1;
    std::fs::write(&path, raw).unwrap();
    s.files.lock().unwrap().clear();
    assert_eq!(s.read(&key(4), 0, 1024 * BLOCK), Err(NodeError::Checksum));
    assert_eq!(s.checksum_errors.load(Ordering::Relaxed), 1);
    assert_eq!(
        s.read(&key(4), 3 * BLOCK, 700 * BLOCK).unwrap(),
        data[..(700 * BLOCK) as usize]
    );
}

#[test]
fn truncate_and_usage() {
    let dir = tempfile::tempdir().unwrap();
    let s = ChunkStore::open(dir.path()).unwrap();
    s.write(&key(2), 0, &vec![1u8; 10_000], false).unwrap();
    assert_eq!(s.usage()[0].bytes_stored, 3 * 4096);
    s.truncate(&key(2), 5000).unwrap();
    let back = s.read(&key(2), 0, 8192).unwrap();
    assert_eq!(&back[..5000], &vec![1u8; 5000][..]);
    assert_eq!(&back[5000..], &vec![0u8; 3192][..]);
    assert_eq!(s.usage()[0].bytes_stored, 2 * 4096);
    s.fsync_inode("cpfs-test", 7).unwrap();
    // Reopening counts what is on disk.
    let again = ChunkStore::open(dir.path()).unwrap();
    assert_eq!(again.usage()[0].bytes_stored, 2 * 4096);
    s.drop_inode("cpfs-test", 7).unwrap();
    assert_eq!(s.read(&key(2), 0, 10).unwrap(), vec![0; 10]);
    assert_eq!(s.usage()[0].bytes_stored, 0);
    assert!(
        s.read(
            &ChunkKey {
                fs: "../etc".into(),
                inode: 1,
                index: 0,
                chain: 0,
            },
            0,
            1
        )
        .is_err()
            || !valid_fs("../etc")
    );
    assert!(s
        .write(
            &ChunkKey {
                fs: "../etc".into(),
                inode: 1,
                index: 0,
                chain: 0,
            },
            0,
            b"x",
            false
        )
        .is_err());
}

#[test]
fn copies_of_one_length_with_other_content_have_other_digests() {
    let dir = tempfile::tempdir().unwrap();
    let s = ChunkStore::open(dir.path()).unwrap();
    s.write(&key(3), 0, &vec![1u8; 2 * 4096], false).unwrap();
    s.write(&key(4), 0, &vec![2u8; 2 * 4096], false).unwrap();
    s.write(&key(5), 0, &vec![1u8; 2 * 4096], false).unwrap();
    let d = |k| s.digest(&key(k)).unwrap().unwrap();
    assert_ne!(d(3), d(4), "the digest ignores the content");
    assert_eq!(d(3), d(5));
    assert_eq!(s.digest(&key(6)).unwrap(), None);
}

#[test]
fn ranges_past_the_largest_chunk_are_refused_before_any_io() {
    let dir = tempfile::tempdir().unwrap();
    let s = ChunkStore::open(dir.path()).unwrap();
    let far = 48u64 << 30;
    let refused = |r: Result<(), NodeError>| matches!(r, Err(NodeError::OutOfRange { .. }));
    assert!(refused(s.write(&key(0), far, b"x", false)));
    assert!(refused(s.write(&key(0), u64::MAX - 1, b"xyz", false)));
    assert!(refused(s.write(&key(0), MAX_CHUNK_SIZE - 1, b"xy", false)));
    assert!(
        !s.chunk_path(&key(0)).exists(),
        "a refused write made a file"
    );
    assert!(refused(s.truncate(&key(0), far)));
    assert!(matches!(
        s.read(&key(0), u64::MAX, 1),
        Err(NodeError::OutOfRange { .. })
    ));
    assert!(matches!(
        s.read(&key(0), 0, u64::MAX),
        Err(NodeError::OutOfRange { .. })
    ));
    assert!(matches!(
        s.repair_blocks(&key(0), u64::MAX - 4095, &[0; 4096]),
        Err(NodeError::OutOfRange { .. })
    ));
    assert_eq!(s.read_block(&key(0), u64::MAX).unwrap(), None);
    // The last byte of the largest chunk is a chunk's byte.
    s.write(&key(0), MAX_CHUNK_SIZE - 1, b"z", false).unwrap();
    assert_eq!(s.read(&key(0), MAX_CHUNK_SIZE - 1, 1).unwrap(), b"z");
    assert_eq!(s.records(&key(0)).unwrap(), Some(MAX_RECORDS));
}

#[test]
fn a_resync_copy_arrives_in_order_and_replaces_the_chunk_at_its_last_piece() {
    let dir = tempfile::tempdir().unwrap();
    let head = ChunkStore::open(dir.path().join("head").as_path()).unwrap();
    let member = ChunkStore::open(dir.path().join("member").as_path()).unwrap();
    let data: Vec<u8> = (0..3 * 256 * 4096u32 + 100)
        .map(|i| (i % 253) as u8)
        .collect();
    head.write(&key(1), 0, &data, false).unwrap();
    member.write(&key(1), 0, b"old", false).unwrap();
    let records = head.records(&key(1)).unwrap().unwrap();
    assert_eq!(records, 3 * 256 + 1);

    // A piece that does not start where the copy ends is refused.
    let piece = head.read_raw(&key(1), 256, 256).unwrap().unwrap();
    assert!(matches!(
        member.put_raw(&key(1), 256, &piece, false),
        Err(NodeError::Invalid(_))
    ));
    let mut first = 0;
    while first < records {
        let raw = head.read_raw(&key(1), first, 256).unwrap().unwrap();
        assert!(raw.len() as u64 <= 256 * RECORD);
        let last = first + 256 >= records;
        member.put_raw(&key(1), first, &raw, last).unwrap();
        if !last {
            // The old copy serves until the last piece lands.
            assert_eq!(member.read(&key(1), 0, 3).unwrap(), b"old");
        }
        first += 256;
    }
    assert_eq!(
        member.digest(&key(1)).unwrap(),
        head.digest(&key(1)).unwrap()
    );
    assert_eq!(member.read(&key(1), 0, data.len() as u64).unwrap(), data);
    assert_eq!(member.usage()[0].bytes_stored, records * BLOCK);
    // Nothing past the largest chunk is taken.
    let one = head.read_raw(&key(1), 0, 1).unwrap().unwrap();
    assert!(matches!(
        member.put_raw(&key(2), MAX_RECORDS, &one, true),
        Err(NodeError::OutOfRange { .. })
    ));
    member.remove_chunk(&key(1)).unwrap();
    assert_eq!(member.records(&key(1)).unwrap(), None);
    assert_eq!(member.usage()[0].bytes_stored, 0);
}

#[test]
fn a_chunk_file_past_the_largest_size_is_bounded_and_cut_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let s = ChunkStore::open(dir.path()).unwrap();
    s.write(&key(3), 0, &[5u8; 4096], false).unwrap();
    let before = s.digest(&key(3)).unwrap();
    // As an unbounded write left it: 48 GiB, sparse.
    std::fs::OpenOptions::new()
        .write(true)
        .open(s.chunk_path(&key(3)))
        .unwrap()
        .set_len(48 << 30)
        .unwrap();
    // Everything that reads whole chunks stops at the largest size.
    assert_eq!(s.records(&key(3)).unwrap(), Some(MAX_RECORDS));
    assert_eq!(
        s.digest(&key(3)).unwrap().map(|(len, _)| len),
        Some(MAX_RECORDS * RECORD)
    );
    assert_ne!(s.digest(&key(3)).unwrap(), before);
    assert_eq!(s.bad_blocks(&key(3)).unwrap(), Vec::<u64>::new());
    assert_eq!(
        s.read_raw(&key(3), MAX_RECORDS - 1, 10)
            .unwrap()
            .unwrap()
            .len() as u64,
        RECORD
    );
    drop(s);
    let s = ChunkStore::open(dir.path()).unwrap();
    assert_eq!(
        std::fs::metadata(s.chunk_path(&key(3))).unwrap().len(),
        MAX_RECORDS * RECORD
    );
    assert_eq!(s.read(&key(3), 0, 4096).unwrap(), vec![5u8; 4096]);
}

#[test]
fn cached_reads_answer_as_reads_do_or_step_aside() {
    let dir = tempfile::tempdir().unwrap();
    let s = ChunkStore::open(dir.path()).unwrap();
    let data: Vec<u8> = (0..3 * 4096u32).map(|i| (i % 253) as u8).collect();
    s.write(&key(2), 0, &data, false).unwrap();
    // Just written: open, and in the page cache.
    assert_eq!(
        s.read_cached(&key(2), 100, 8000).unwrap(),
        Some(data[100..8100].to_vec())
    );
    // Past the end (a hole), too large, or a file not open: the ordinary
    // read answers.
    assert_eq!(s.read_cached(&key(2), 3 * 4096, 10).unwrap(), None);
    assert_eq!(s.read_cached(&key(2), 0, 1 << 20).unwrap(), None);
    s.files.lock().unwrap().clear();
    assert_eq!(s.read_cached(&key(2), 0, 10).unwrap(), None);

    // A damaged block fails its checksum here as in a read.
    let path = s.chunk_path(&key(2));
    let mut raw = std::fs::read(&path).unwrap();
    raw[(RECORD + 7) as usize] ^= 0xff;
    std::fs::write(&path, raw).unwrap();
    assert_eq!(s.read(&key(2), 0, 10).unwrap(), data[..10].to_vec());
    assert!(matches!(
        s.read_cached(&key(2), 4096, 10),
        Err(NodeError::Checksum)
    ));
    // And a writer holding the chunk makes it step aside.
    let _writing = s.lock_for(&key(2)).write().unwrap();
    assert_eq!(s.read_cached(&key(2), 0, 10).unwrap(), None);
}

#[test]
fn a_cached_write_is_done_in_place_only_when_nothing_would_wait() {
    let dir = tempfile::tempdir().unwrap();
    let s = ChunkStore::open(dir.path()).unwrap();
    let old: Vec<u8> = (0..4 * 4096u32).map(|i| (i % 253) as u8).collect();
    s.write(&key(4), 0, &old, false).unwrap();
    // Open and cached: two whole blocks in the middle go in place, and
    // read back with their checksums; the blocks around them stay.
    let new = vec![0x5au8; 2 * 4096];
    assert!(s.write_cached(&key(4), 4096, &new).unwrap());
    let back = s.read(&key(4), 0, 4 * 4096).unwrap();
    assert_eq!(&back[4096..3 * 4096], &new[..]);
    assert_eq!(&back[..4096], &old[..4096]);
    assert_eq!(&back[3 * 4096..], &old[3 * 4096..]);
    // Growing the chunk past its end counts as stored, as a write does.
    let stored = s.counters(&key(4).fs).stored.load(Ordering::Relaxed);
    assert!(s.write_cached(&key(4), 6 * 4096, &new).unwrap());
    assert_eq!(
        s.counters(&key(4).fs).stored.load(Ordering::Relaxed),
        stored + 4 * 4096,
        "blocks 4 to 7 are now stored (4 and 5 as holes)"
    );
    assert_eq!(s.read(&key(4), 6 * 4096, 2 * 4096).unwrap(), new);

    // Part of a block (it would read the old one), too large, another
    // writer holding the chunk, or a file not open: the blocking write.
    assert!(!s.write_cached(&key(4), 10, b"x").unwrap());
    assert!(!s.write_cached(&key(4), 0, &vec![1u8; 1 << 20]).unwrap());
    {
        let _writing = s.lock_for(&key(4)).write().unwrap();
        assert!(!s.write_cached(&key(4), 0, &new).unwrap());
    }
    // Pages the kernel must read first (written out, then dropped from
    // the page cache): not in place either.
    let f = s.files.lock().unwrap().get(&key(4)).cloned().unwrap();
    f.sync_all().unwrap();
    // SAFETY: a valid open descriptor; advice only.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0);
    assert!(!s.write_cached(&key(4), 4096, &new).unwrap());
    s.files.lock().unwrap().clear();
    assert!(!s.write_cached(&key(4), 0, &new).unwrap());
    assert_eq!(s.read(&key(4), 4096, 2 * 4096).unwrap(), new);
}

/// Pages of `f` the kernel holds dirty, from cachestat(2) (Linux 6.5);
/// `None` where the call is missing.
fn dirty_pages(f: &File) -> Option<u64> {
    cachestat(f).map(|s| s.dirty)
}

/// Pages of `f` in the page cache, from cachestat(2); `None` where the
/// call is missing.
fn cached_pages(f: &File) -> Option<u64> {
    cachestat(f).map(|s| s.cache)
}

#[repr(C)]
#[derive(Default)]
struct CacheStat {
    cache: u64,
    dirty: u64,
    writeback: u64,
    evicted: u64,
    recently_evicted: u64,
}

fn cachestat(f: &File) -> Option<CacheStat> {
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    // A length of 0: to the end of the file.
    let range = Range { off: 0, len: 0 };
    let mut stat = CacheStat::default();
    const CACHESTAT: libc::c_long = 451;
    // SAFETY: both structures outlive the call and have the kernel's layout.
    let rc = unsafe {
        libc::syscall(
            CACHESTAT,
            f.as_raw_fd(),
            &range as *const Range,
            &mut stat as *mut CacheStat,
            0u32,
        )
    };
    (rc == 0).then_some(stat)
}

#[test]
fn a_streamed_write_is_on_its_way_to_the_disk_when_it_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let s = ChunkStore::open(dir.path()).unwrap();
    // A small write: its pages stay dirty for the kernel's flusher.
    s.write(&key(0), 0, &vec![1u8; 64 << 10], false).unwrap();
    let Some(control) = dirty_pages(&s.open_file(&key(0)).unwrap()) else {
        eprintln!("no cachestat(2) on this kernel: nothing to observe");
        return;
    };
    if control == 0 {
        eprintln!("this file system keeps no dirty pages (tmpfs?): nothing to observe");
        return;
    }
    // A streamed one: its pages were queued for the disk before the write
    // returned.
    s.write(&key(1), 0, &vec![2u8; 1 << 20], false).unwrap();
    assert_eq!(dirty_pages(&s.open_file(&key(1)).unwrap()), Some(0));
    assert_eq!(s.read(&key(1), 0, 1 << 20).unwrap(), vec![2u8; 1 << 20]);
}

#[test]
fn streamed_writes_leave_the_page_cache_behind_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let s = ChunkStore::open(dir.path()).unwrap();
    let mb = 1u64 << 20;
    let chunks = super::writeback::KEPT_BEHIND / mb + 4;
    for i in 0..chunks {
        s.write(&key(i), 0, &vec![i as u8; mb as usize], false)
            .unwrap();
    }
    let Some(latest) = cached_pages(&s.open_file(&key(chunks - 1)).unwrap()) else {
        eprintln!("no cachestat(2) on this kernel: nothing to observe");
        return;
    };
    if latest == 0 || on_tmpfs(dir.path()) {
        eprintln!("this file system keeps no page cache, or cannot drop it: nothing to observe");
        return;
    }
    // The first chunks of the stream were written out and dropped; the
    // latest stay.
    for i in 0..2 {
        assert_eq!(
            cached_pages(&s.open_file(&key(i)).unwrap()),
            Some(0),
            "chunk {i}"
        );
    }
    assert!(
        latest >= mb / 4096,
        "{latest} pages of the latest chunk cached"
    );
    // A small write is no stream: its pages stay.
    s.write(&key(chunks), 0, &vec![9u8; 64 << 10], false)
        .unwrap();
    assert!(cached_pages(&s.open_file(&key(chunks)).unwrap()).unwrap() > 0);
    // What left the cache reads back from the disk, checked.
    assert_eq!(s.read(&key(0), 0, mb).unwrap(), vec![0u8; mb as usize]);
    assert_eq!(s.read(&key(1), 4096, 4096).unwrap(), vec![1u8; 4096]);
}

/// Whether `p` is on tmpfs, whose pages are the files themselves.
fn on_tmpfs(p: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid C string and `st` outlives the call.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    rc == 0 && st.f_type as i64 == TMPFS_MAGIC
}
