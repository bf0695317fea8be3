//! `mount.cpfs`: the helper `mount -t cpfs` and `/etc/fstab` run, as
//! mount(8) calls helpers: `mount.cpfs SPEC DIR [-sfnv] [-o OPTIONS]`.
//! The cpfs binary acts as the helper when it is called by that name
//! (`ln -s $(command -v cpfs) /sbin/mount.cpfs`). SPEC is
//! `DOMAIN[:/path]`; options are those of a network file system
//! (`_netdev`, `nofail`, `defaults`, …, accepted and left to mount(8) and
//! systemd) and cpfs's own: `access_point=ID`, `controlplane=URL`,
//! `read_cache_mib=N`, `fuse_threads=N` and `writeback_cache` (as `cpfs
//! mount --read-cache-mib`, `--fuse-threads` and `--writeback-cache`). The
//! mount runs in the background once it is up; `umount DIR` ends it.

use std::path::PathBuf;

use crate::mount_cmd::{MountArgs, MAX_FUSE_THREADS};

/// Options mount(8), fstab or systemd pass that concern them, not us.
const GENERIC: &[&str] = &[
    "defaults",
    "rw",
    "_netdev",
    "nofail",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "exec",
    "noexec",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "relatime",
    "noatime",
    "nodiratime",
    "async",
    "sync",
];

/// Whether this process was started as the mount helper.
pub fn called_as_helper() -> bool {
    std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n == "mount.cpfs"))
        .unwrap_or(false)
}

/// What mount(8) asked for.
#[derive(Debug, PartialEq, Eq)]
pub struct HelperCall {
    pub spec: String,
    pub dir: PathBuf,
    pub access_point: Option<String>,
    pub controlplane: Option<String>,
    pub read_cache_mib: Option<u64>,
    pub fuse_threads: Option<u16>,
    pub writeback_cache: bool,
    pub fake: bool,
    pub verbose: bool,
}

/// Parses `SPEC DIR [-sfnv] [-o OPTS] [-t TYPE] [-N NS]`.
pub fn parse(argv: &[String]) -> anyhow::Result<HelperCall> {
    let mut positional = Vec::new();
    let mut options = Vec::new();
    let (mut sloppy, mut fake, mut verbose) = (false, false, false);
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" => options.extend(
                it.next()
                    .ok_or_else(|| anyhow::anyhow!("-o needs options"))?
                    .split(',')
                    .filter(|o| !o.is_empty())
                    .map(str::to_string),
            ),
            "-t" | "-N" => {
                it.next();
            }
            flags if flags.starts_with('-') && flags.len() > 1 => {
                for f in flags[1..].chars() {
                    match f {
                        's' => sloppy = true,
                        'f' => fake = true,
                        'v' => verbose = true,
                        'n' | 'r' | 'w' => {}
                        other => anyhow::bail!("mount.cpfs: unknown flag -{other}"),
                    }
                }
            }
            _ => positional.push(a.clone()),
        }
    }
    let [spec, dir] = <[String; 2]>::try_from(positional).map_err(|_| {
        anyhow::anyhow!(
            "usage: mount.cpfs DOMAIN[:/path] DIR [-o access_point=ID,controlplane=URL,...]"
        )
    })?;
    let mut call = HelperCall {
        spec,
        dir: PathBuf::from(dir),
        access_point: None,
        controlplane: None,
        read_cache_mib: None,
        fuse_threads: None,
        writeback_cache: false,
        fake,
        verbose,
    };
    for o in options {
        let (name, value) = o.split_once('=').unwrap_or((o.as_str(), ""));
        match name {
            "access_point" | "accesspoint" => call.access_point = Some(value.to_string()),
            "controlplane" => call.controlplane = Some(value.to_string()),
            "read_cache_mib" => {
                call.read_cache_mib = Some(value.parse().ok().filter(|m| *m <= 1 << 20).ok_or_else(
                    || anyhow::anyhow!("mount.cpfs: read_cache_mib takes a number of MiB, 0 to 1048576, not {value:?}"),
                )?)
            }
            "fuse_threads" => {
                call.fuse_threads = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_FUSE_THREADS).contains(n))
                        .ok_or_else(|| {
                            anyhow::anyhow!(
                                "mount.cpfs: fuse_threads takes a number of threads, 1 to {MAX_FUSE_THREADS}, not {value:?}"
                            )
                        })?,
                )
            }
            "writeback_cache" if value.is_empty() => call.writeback_cache = true,
            "ro" => anyhow::bail!(
                "mount.cpfs: read-only mounts come from the access group (an RDONLY rule), not from -o ro"
            ),
            n if GENERIC.contains(&n) || n.starts_with("x-") || n == "comment" => {}
            _ if sloppy => {}
            _ => anyhow::bail!("mount.cpfs: unknown option {o:?}"),
        }
    }
    Ok(call)
}

/// Runs the helper: mounts in the background and returns once mounted.
pub async fn run() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let call = parse(&argv)?;
    let controlplane = call
        .controlplane
        .clone()
        .or_else(|| std::env::var("CPFS_CONTROLPLANE").ok())
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_string());
    if call.verbose || call.fake {
        eprintln!(
            "mount.cpfs: {} on {} (control plane {controlplane}{})",
            call.spec,
            call.dir.display(),
            call.access_point
                .as_deref()
                .map(|a| format!(", access point {a}"))
                .unwrap_or_default()
        );
    }
    if call.fake {
        return Ok(());
    }
    crate::mount_cmd::mount(MountArgs {
        domain: call.spec,
        dir: call.dir,
        controlplane,
        access_point: call.access_point,
        daemon: true,
        read_cache_mib: call.read_cache_mib,
        fuse_threads: call.fuse_threads,
        writeback_cache: call.writeback_cache,
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn parses_what_mount_passes() {
        let c = parse(&args(
            "d.cpfs.nas.x:/a /mnt/a -o rw,_netdev,access_point=ap-1,controlplane=http://h:8080 -n",
        ))
        .unwrap();
        assert_eq!(c.spec, "d.cpfs.nas.x:/a");
        assert_eq!(c.dir, PathBuf::from("/mnt/a"));
        assert_eq!(c.access_point.as_deref(), Some("ap-1"));
        assert_eq!(c.controlplane.as_deref(), Some("http://h:8080"));
        assert!(parse(&args("d /m -o bogus")).is_err());
        assert!(parse(&args("d /m -s -o bogus")).is_ok(), "sloppy");
        assert!(parse(&args("d /m -o ro")).is_err());
        assert!(parse(&args("d")).is_err());
        assert!(parse(&args("d /m -f")).unwrap().fake);
        let c = parse(&args("d /m -o read_cache_mib=512")).unwrap();
        assert_eq!(c.read_cache_mib, Some(512));
        assert!(parse(&args("d /m -o read_cache_mib=lots")).is_err());
        assert!(parse(&args("d /m -o read_cache_mib=99999999")).is_err());
        let c = parse(&args("d /m -o fuse_threads=4")).unwrap();
        assert_eq!(c.fuse_threads, Some(4));
        assert!(
            parse(&args("d /m -o writeback_cache"))
                .unwrap()
                .writeback_cache
        );
        assert!(!parse(&args("d /m")).unwrap().writeback_cache);
        assert!(parse(&args("d /m -o writeback_cache=yes")).is_err());
        for bad in ["0", "65", "many"] {
            assert!(parse(&args(&format!("d /m -o fuse_threads={bad}"))).is_err());
        }
    }
}
