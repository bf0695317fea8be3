//! Upgrades of the on-disk chunk format, run by `cpfs node` before the
//! store opens, so a node started on an older directory brings it forward
//! instead of refusing it.
//!
//! Format 1 named chunk files by index only (`<fs>/<inode>/<index>`);
//! format 2 adds the chain (`<index>.c<chain>`), which a node cannot work
//! out alone: it is the file's stripe (`chains[index % width]`), known to
//! the metadata service. The migration asks for the stripes of the inodes
//! it finds, a batch at a time, and renames each file in place. Renames are
//! atomic and a renamed file is skipped, so a migration killed halfway
//! simply runs again; the format marker is written last. Files of inodes
//! the metadata service no longer knows are set aside under
//! `format1-unclaimed/` (never deleted: an operator decides).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::{chunk_name, parse_chunk_name, FORMAT};

/// Where the format marker lives, under the node's data directory.
const MARKER: &str = "chunk-format";
const UNCLAIMED: &str = "format1-unclaimed";

/// What a data directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// The current format (or an empty directory).
    Current,
    /// Chunks of format 1, to migrate.
    Format1,
}

/// Reads the marker and the chunk directory of `root`.
pub fn detect(root: &Path) -> std::io::Result<Found> {
    match std::fs::read_to_string(root.join(MARKER)) {
        Ok(f) if f.trim() == FORMAT => Ok(Found::Current),
        Ok(f) => Err(std::io::Error::other(format!(
            "{} says chunk format {}, this node knows formats 1 and {FORMAT}",
            root.join(MARKER).display(),
            f.trim()
        ))),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let chunks = root.join("chunks");
            match std::fs::read_dir(&chunks) {
                Ok(mut entries) => Ok(if entries.next().is_some() {
                    Found::Format1
                } else {
                    Found::Current
                }),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(Found::Current),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// An I/O failure of the migration, naming the step and the path.
fn io(what: &str, path: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

/// What a migration did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub inodes: u64,
    pub renamed: u64,
    pub already_renamed: u64,
    pub unclaimed: u64,
}

/// Migrates `root` from format 1 to the current format. `resolve(fs,
/// inodes)` answers the chain stripe of each inode the metadata service
/// still knows (at most `batch` per call).
pub async fn format_1_to_2<F, Fut>(
    root: &Path,
    batch: usize,
    mut resolve: F,
) -> Result<Report, String>
where
    F: FnMut(String, Vec<u64>) -> Fut,
    Fut: Future<Output = Result<BTreeMap<u64, Vec<u32>>, String>>,
{
    let chunks = root.join("chunks");
    let mut report = Report::default();
    let mut file_systems: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(&chunks).map_err(|e| io("listing", &chunks, e))? {
        let entry = entry.map_err(|e| io("listing", &chunks, e))?;
        if entry.path().is_dir() {
            file_systems.push(entry.path());
        }
    }
    for fs_dir in file_systems {
        let fs = fs_dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let mut inodes: Vec<u64> = Vec::new();
        for entry in std::fs::read_dir(&fs_dir).map_err(|e| io("listing", &fs_dir, e))? {
            let entry = entry.map_err(|e| io("listing", &fs_dir, e))?;
            if let Some(ino) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
                inodes.push(ino);
            }
        }
        inodes.sort_unstable();
        for group in inodes.chunks(batch.max(1)) {
            let stripes: HashMap<u64, Vec<u32>> = resolve(fs.clone(), group.to_vec())
                .await?
                .into_iter()
                .collect();
            for ino in group {
                report.inodes += 1;
                let dir = fs_dir.join(ino.to_string());
                let stripe = stripes.get(ino).filter(|c| !c.is_empty());
                migrate_inode(root, &fs, *ino, &dir, stripe, &mut report)?;
            }
        }
        tracing::info!(fs = %fs, inodes = report.inodes, renamed = report.renamed, "chunk format 1 migrated for a file system");
    }
    write_marker(root).map_err(|e| io("writing", &root.join(MARKER), e))?;
    Ok(report)
}

fn migrate_inode(
    root: &Path,
    fs: &str,
    ino: u64,
    dir: &Path,
    stripe: Option<&Vec<u32>>,
    report: &mut Report,
) -> Result<(), String> {
    for entry in std::fs::read_dir(dir).map_err(|e| io("listing", dir, e))? {
        let entry = entry.map_err(|e| io("listing", dir, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if parse_chunk_name(&name).is_some() {
            report.already_renamed += 1;
            continue;
        }
        let Ok(index) = name.parse::<u64>() else {
            continue; // not a chunk file
        };
        let from = entry.path();
        match stripe {
            Some(chains) => {
                let chain = chains[(index % chains.len() as u64) as usize];
                let to = dir.join(chunk_name(index, chain));
                std::fs::rename(&from, &to).map_err(|e| io("renaming", &from, e))?;
                report.renamed += 1;
            }
            None => {
                let aside = root.join(UNCLAIMED).join(fs).join(ino.to_string());
                std::fs::create_dir_all(&aside).map_err(|e| io("creating", &aside, e))?;
                let to = aside.join(&name);
                std::fs::rename(&from, &to).map_err(|e| io("setting aside", &from, e))?;
                report.unclaimed += 1;
            }
        }
    }
    if stripe.is_none() {
        // Empty now: the inode is gone from this store's view.
        let _ = std::fs::remove_dir(dir);
    }
    Ok(())
}

/// Writes the marker atomically and durably, last, so a crash before it
/// leaves a directory the next start migrates again (renamed files skip).
fn write_marker(root: &Path) -> std::io::Result<()> {
    let tmp = root.join(format!("{MARKER}.tmp"));
    std::fs::write(&tmp, FORMAT)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, root.join(MARKER))?;
    std::fs::File::open(root)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, rel: &str, body: &[u8]) {
        let p = root.join("chunks").join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }

    #[tokio::test]
    async fn format_1_chunks_get_their_chains_and_the_store_opens() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // Inode 7 striped over chains [3, 5]; inode 9 is gone; inode 8 was
        // half migrated by a run that was killed.
        put(root, "fs-a/7/0", b"zero");
        put(root, "fs-a/7/1", b"one");
        put(root, "fs-a/7/2", b"two");
        put(root, "fs-a/8/0.c4", b"done");
        put(root, "fs-a/8/1", b"left");
        put(root, "fs-a/9/0", b"orphan");
        assert_eq!(detect(root).unwrap(), Found::Format1);
        assert!(
            super::super::ChunkStore::open(root).is_err(),
            "format 1 is not opened as is"
        );

        let mut asked = Vec::new();
        let report = format_1_to_2(root, 2, |fs, inodes| {
            asked.push((fs, inodes.clone()));
            async move {
                let mut m = BTreeMap::new();
                for ino in inodes {
                    match ino {
                        7 => m.insert(7, vec![3, 5]),
                        8 => m.insert(8, vec![4, 6]),
                        _ => None,
                    };
                }
                Ok(m)
            }
        })
        .await
        .unwrap();
        assert_eq!(
            report,
            Report {
                inodes: 3,
                renamed: 4,
                already_renamed: 1,
                unclaimed: 1
            }
        );
        assert_eq!(
            asked,
            vec![("fs-a".into(), vec![7, 8]), ("fs-a".into(), vec![9])]
        );
        let read = |rel: &str| std::fs::read(root.join("chunks").join(rel)).unwrap();
        assert_eq!(read("fs-a/7/0.c3"), b"zero");
        assert_eq!(read("fs-a/7/1.c5"), b"one");
        assert_eq!(read("fs-a/7/2.c3"), b"two");
        assert_eq!(read("fs-a/8/1.c6"), b"left");
        assert_eq!(
            std::fs::read(root.join(UNCLAIMED).join("fs-a/9/0")).unwrap(),
            b"orphan"
        );
        assert!(!root.join("chunks/fs-a/9").exists());
        assert_eq!(detect(root).unwrap(), Found::Current);
        // The migrated directory opens as the current format.
        super::super::ChunkStore::open(root).unwrap();
    }

    #[tokio::test]
    async fn a_failed_lookup_leaves_the_directory_to_migrate_again() {
        let dir = tempfile::tempdir().unwrap();
        put(dir.path(), "fs-a/7/0", b"zero");
        let err = format_1_to_2(dir.path(), 10, |_, _| async {
            Err::<BTreeMap<u64, Vec<u32>>, _>("control plane unreachable".to_string())
        })
        .await
        .unwrap_err();
        assert!(err.contains("unreachable"));
        assert_eq!(detect(dir.path()).unwrap(), Found::Format1);
        assert!(dir.path().join("chunks/fs-a/7/0").exists());
    }

    #[test]
    fn an_unknown_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MARKER), "9").unwrap();
        assert!(detect(dir.path())
            .unwrap_err()
            .to_string()
            .contains("format 9"));
    }
}
