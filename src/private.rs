//! Data directories are readable by the service only: they hold the
//! database (access-key metadata, tenants' namespaces), chunk files
//! (tenants' data) and key files. Local users other than the service's
//! own get nothing from them.
//!
//! New files: the process runs with umask 077, so everything it (and its
//! SQLite library, and the nodes it starts) creates is 0600 and every
//! directory 0700, whatever mode the creating code asked for. Existing
//! files (from a build before this policy): tightened once per data
//! directory at start, remembered by a marker file so that a node with
//! millions of chunks walks them once, not on every start.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;

/// Written after a complete walk; its presence skips the next one.
const MARKER: &str = ".private-v1";

/// Makes files this process creates from now on private (0600 files,
/// 0700 directories), for it and the processes it starts.
pub fn restrict_umask() {
    // SAFETY: umask only replaces the process's file-creation mask; it
    // cannot fail and touches no memory.
    unsafe {
        libc::umask(0o077);
    }
}

/// Creates `dir` when missing and makes it and everything under it
/// private (once per directory, see the module comment).
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    restrict(dir)?;
    if dir.join(MARKER).exists() {
        return Ok(());
    }
    let changed = tighten(dir)?;
    if changed > 0 {
        tracing::info!(dir = %dir.display(), changed, "made data files readable by the service only");
    }
    std::fs::write(dir.join(MARKER), b"")
        .with_context(|| format!("writing {}", dir.join(MARKER).display()))?;
    Ok(())
}

/// Directories become 0700; files lose group and other access and keep
/// the owner's bits (a file deliberately read-only stays so). Returns
/// whether the mode changed. Symbolic links are left alone.
fn restrict(path: &Path) -> anyhow::Result<bool> {
    let meta =
        std::fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.file_type().is_symlink() {
        return Ok(false);
    }
    let current = meta.permissions().mode() & 0o777;
    let want = if meta.is_dir() {
        0o700
    } else {
        current & 0o700
    };
    if current == want {
        return Ok(false);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(want))
        .with_context(|| format!("restricting {}", path.display()))?;
    Ok(true)
}

/// Removes group and other access below `dir`; returns how many entries
/// changed. Symbolic links are not followed.
fn tighten(dir: &Path) -> anyhow::Result<usize> {
    let mut changed = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_symlink() {
                continue;
            }
            if kind.is_dir() {
                changed += usize::from(restrict(&path)?);
                pending.push(path);
            } else {
                changed += usize::from(restrict(&path)?);
            }
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn existing_files_lose_group_and_other_access_once() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        std::fs::create_dir_all(dir.join("nodes/n1")).unwrap();
        std::fs::write(dir.join("cpfs.db"), b"x").unwrap();
        std::fs::write(dir.join("nodes/n1/chunk"), b"x").unwrap();
        std::fs::write(dir.join("ro"), b"x").unwrap();
        for (p, m) in [
            ("", 0o755),
            ("nodes", 0o755),
            ("nodes/n1", 0o775),
            ("cpfs.db", 0o644),
            ("nodes/n1/chunk", 0o666),
            ("ro", 0o444),
        ] {
            std::fs::set_permissions(dir.join(p), std::fs::Permissions::from_mode(m)).unwrap();
        }
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("nodes")), 0o700);
        assert_eq!(mode(&dir.join("nodes/n1")), 0o700);
        assert_eq!(mode(&dir.join("cpfs.db")), 0o600);
        assert_eq!(mode(&dir.join("nodes/n1/chunk")), 0o600);
        assert_eq!(mode(&dir.join("ro")), 0o400);
        assert!(dir.join(MARKER).exists());
    }
}
