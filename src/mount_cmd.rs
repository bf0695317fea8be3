//! `cpfs mount` and `cpfs stripe`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use cpfs_client::data::{ChainSource, DataClient};
use cpfs_client::fuse::{CpfsFs, STRIPE_XATTR};
use cpfs_client::meta::MetaClient;
use cpfs_proto::meta::{Caller, MetaOp, MetaReply, MountRoot};

#[derive(Args, Debug)]
pub struct MountArgs {
    /// The mount target domain, as DescribeMountTargets shows it, with
    /// `:/path` to mount only that directory of the file system
    #[arg(value_name = "DOMAIN[:/PATH]")]
    pub domain: String,
    /// An existing, empty directory to mount on
    pub dir: PathBuf,
    /// The control plane (the URL `cpfs serve` answers the API on)
    #[arg(
        long,
        env = "CPFS_CONTROLPLANE",
        default_value = "http://127.0.0.1:8080"
    )]
    pub controlplane: String,
    /// Mount the subtree of this access point (CreateCpfsAccessPoint) as the root
    #[arg(long)]
    pub access_point: Option<String>,
    /// Run in the background once mounted
    #[arg(short = 'd', long)]
    pub daemon: bool,
    /// Memory for file data this mount read, kept while the file is
    /// unchanged (MiB; 0 turns it off) [default: a sixteenth of the
    /// machine's memory, at most 2048]
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(0..=1 << 20))]
    pub read_cache_mib: Option<u64>,
    /// Threads reading kernel requests from /dev/fuse, each on its own
    /// cloned descriptor [default: one per CPU, at most 8]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=MAX_FUSE_THREADS as i64))]
    pub fuse_threads: Option<u16>,
    /// Let the kernel cache buffered writes and send them in large pieces.
    /// Write errors (ENOSPC, EDQUOT) then come at fsync or close, and this
    /// mount sees another client grow a file it holds cached only once its
    /// kernel forgets the file: for data one mount writes at a time
    #[arg(long)]
    pub writeback_cache: bool,
}

/// More threads than this only contend for the kernel's request queue.
pub const MAX_FUSE_THREADS: u16 = 64;

/// One /dev/fuse reader per CPU: each parses its requests and sends them
/// on to the service itself, so the kernel's queue is drained in parallel.
fn default_fuse_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

impl MountArgs {
    /// The mount target domain and the subtree to confine the mount to.
    fn target(&self) -> anyhow::Result<(String, Option<MountRoot>)> {
        let (domain, path) = match self.domain.split_once(':') {
            Some((d, p)) => (d.to_string(), Some(p.to_string())),
            None => (self.domain.clone(), None),
        };
        match (path, &self.access_point) {
            (Some(_), Some(_)) => {
                anyhow::bail!("give either DOMAIN:/path or --access-point, not both")
            }
            (Some(p), None) if !p.starts_with('/') => {
                anyhow::bail!("the path after the domain must be absolute: {domain}:/dir")
            }
            (Some(p), None) if p.trim_end_matches('/').is_empty() => Ok((domain, None)),
            (Some(p), None) => Ok((domain, Some(MountRoot::Path(p)))),
            (None, Some(ap)) => Ok((domain, Some(MountRoot::AccessPoint(ap.clone())))),
            (None, None) => Ok((domain, None)),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum StripeCommand {
    /// Print the chunk size and stripe width of a file or directory (JSON)
    Get { path: PathBuf },
    /// Set them: on a directory for files created in it, on an empty file for itself
    Set {
        path: PathBuf,
        #[arg(long, default_value_t = 1 << 20)]
        chunk_size: u64,
        #[arg(long, default_value_t = 4)]
        stripe_width: u32,
    },
}

/// Whether `dir` is a mount point of a CPFS FUSE file system.
fn is_mounted(dir: &Path) -> bool {
    let Ok(canon) = dir.canonicalize() else {
        return false;
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let fstype = l
            .split(" - ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .unwrap_or("");
        f.get(4).is_some_and(|m| Path::new(m) == canon)
            && fstype.starts_with("fuse")
            && l.contains("cpfs")
    })
}

/// The FUSE mount helper the session mounts through (it unmounts the
/// directory when this process dies, however it dies), found on PATH the
/// way the FUSE library looks for it; without it the mount would fail with
/// a bare "No such file or directory".
fn fusermount() -> anyhow::Result<PathBuf> {
    // mount(8) runs helpers without PATH; exec then searches the C
    // library's default path, which this search follows.
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    for name in ["fusermount3", "fusermount"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    anyhow::bail!(
        "cpfs mount needs the FUSE mount helper fusermount3, which is not on PATH; \
         install it with the fuse3 package (Debian and Ubuntu: apt install fuse3; \
         Fedora and RHEL: dnf install fuse3)"
    )
}

async fn meta_address(controlplane: &str, domain: &str) -> anyhow::Result<String> {
    let url = format!("{}/internal/v1/mount", controlplane.trim_end_matches('/'));
    let resp = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?
        .get(&url)
        .query(&[("domain", domain)])
        .send()
        .await
        .with_context(|| format!("reaching the control plane at {controlplane}"))?;
    let status = resp.status();
    let v: serde_json::Value = resp
        .json()
        .await
        .with_context(|| format!("the control plane answered HTTP {status} without JSON"))?;
    if !status.is_success() {
        anyhow::bail!(
            "the control plane refused the mount target {domain}: HTTP {status} {}",
            v["Code"].as_str().unwrap_or("")
        );
    }
    v["MetaAddress"]
        .as_str()
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .context("the control plane has no metadata service address")
}

pub async fn mount(args: MountArgs) -> anyhow::Result<()> {
    let meta_dir = std::fs::metadata(&args.dir)
        .with_context(|| format!("mount point {} does not exist", args.dir.display()))?;
    if !meta_dir.is_dir() {
        anyhow::bail!("mount point {} is not a directory", args.dir.display());
    }
    fusermount()?;
    let (domain, root) = args.target()?;
    if args.daemon {
        return daemonize(&args);
    }
    let address = meta_address(&args.controlplane, &domain).await?;
    let controlplane = args.controlplane.clone();
    let located = domain.clone();
    let locate: cpfs_client::meta::Locator = Arc::new(move || {
        let (controlplane, domain) = (controlplane.clone(), located.clone());
        Box::pin(async move {
            meta_address(&controlplane, &domain)
                .await
                .map_err(|e| format!("{e:#}"))
        })
    });
    let meta = MetaClient::located(&address, &domain, Some(locate));
    meta.set_root(root.clone());
    let mounted = meta.mount().await.map_err(|(errno, msg)| match errno {
        2 if root.is_some() => anyhow::anyhow!("no such directory or access point: {msg}"),
        2 => anyhow::anyhow!("no mount target {domain} (check DescribeMountTargets): {msg}"),
        _ => anyhow::anyhow!("mount refused: {msg}"),
    })?;
    let source_meta = meta.clone();
    let source: ChainSource = Arc::new(move || {
        let m = source_meta.clone();
        Box::pin(async move {
            match m
                .call(
                    &Caller {
                        uid: 0,
                        gid: 0,
                        groups: vec![],
                    },
                    MetaOp::ChainTable,
                )
                .await
            {
                Ok(MetaReply::Chains(t)) => Ok(t),
                Ok(_) => Err("unexpected reply".to_string()),
                Err(e) => Err(format!("errno {e}")),
            }
        })
    });
    let cache_bytes = match args.read_cache_mib {
        Some(mib) => mib << 20,
        None => cpfs_client::read_cache::default_bytes(),
    };
    let data = DataClient::with_read_cache(mounted.chain_table.clone(), source, cache_bytes);
    let notifier = Arc::new(OnceLock::new());
    let fs = CpfsFs::new(
        tokio::runtime::Handle::current(),
        meta,
        data,
        notifier.clone(),
    )
    .writeback_cache(args.writeback_cache);
    let mut config = fuser::Config::default();
    config.acl = fuser::SessionACL::All;
    config.n_threads = Some(
        args.fuse_threads
            .map_or_else(default_fuse_threads, usize::from),
    );
    config.clone_fd = true;
    config.mount_options = vec![
        fuser::MountOption::FSName(format!("cpfs:{}", args.domain)),
        fuser::MountOption::Subtype("cpfs".into()),
        fuser::MountOption::AutoUnmount,
        fuser::MountOption::NoAtime,
        // The kernel checks permissions on every path walk, including cached
        // dentries the metadata service never sees again; the service checks
        // each operation as well.
        fuser::MountOption::DefaultPermissions,
    ];
    tokio::spawn(fs.invalidator().run());
    let session = fuser::Session::new(fs, &args.dir, &config)
        .with_context(|| format!("mounting on {}", args.dir.display()))?;
    let _ = notifier.set(session.notifier());
    let bg = session.spawn().context("starting the FUSE session")?;
    eprintln!(
        "mounted {} (file system {}) on {}",
        args.domain,
        mounted.fs,
        args.dir.display()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tick.tick() => if bg.guard.is_finished() { break },
        }
    }
    // Dropping the session unmounts (when still mounted).
    drop(bg);
    eprintln!("unmounted {}", args.dir.display());
    Ok(())
}

/// Starts `cpfs mount` again in the foreground, detached, and returns once
/// it has mounted (or reports why it could not).
fn daemonize(args: &MountArgs) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let log = std::env::temp_dir().join(format!("cpfs-mount-{}.log", std::process::id()));
    let log_file = std::fs::File::create(&log)?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("mount")
        .arg(&args.domain)
        .arg(&args.dir)
        .arg("--controlplane")
        .arg(&args.controlplane);
    if let Some(ap) = &args.access_point {
        cmd.arg("--access-point").arg(ap);
    }
    if let Some(mib) = args.read_cache_mib {
        cmd.arg("--read-cache-mib").arg(mib.to_string());
    }
    if let Some(n) = args.fuse_threads {
        cmd.arg("--fuse-threads").arg(n.to_string());
    }
    if args.writeback_cache {
        cmd.arg("--writeback-cache");
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    // SAFETY: setsid only changes the child's session; it runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if is_mounted(&args.dir) {
            println!(
                "mounted {} on {} (pid {}, log {})",
                args.domain,
                args.dir.display(),
                child.id(),
                log.display()
            );
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let why = std::fs::read_to_string(&log).unwrap_or_default();
            anyhow::bail!("mount failed ({status}): {}", why.trim());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!("mount did not complete within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn xattr_get(path: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let n = std::ffi::CString::new(name)?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(r as usize);
    Ok(buf)
}

fn xattr_set(path: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let n = std::ffi::CString::new(name)?;
    // SAFETY: valid NUL-terminated strings and a value buffer of the given length.
    let r = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

pub fn stripe(cmd: StripeCommand) -> anyhow::Result<()> {
    match cmd {
        StripeCommand::Get { path } => {
            let v = xattr_get(&path, STRIPE_XATTR).with_context(|| {
                format!(
                    "{} is not on a CPFS mount or cannot be read",
                    path.display()
                )
            })?;
            println!("{}", String::from_utf8_lossy(&v));
        }
        StripeCommand::Set {
            path,
            chunk_size,
            stripe_width,
        } => {
            let value = format!("chunk_size={chunk_size},stripe_width={stripe_width}");
            xattr_set(&path, STRIPE_XATTR, value.as_bytes()).map_err(|e| match e.raw_os_error() {
                Some(libc::EINVAL) => anyhow::anyhow!("refused: chunk size must be a multiple of 4096 between 64 KiB and 64 MiB, width 1-256, and a file must be empty"),
                Some(libc::EPERM) => anyhow::anyhow!("refused: only the owner may change the stripe"),
                _ => anyhow::anyhow!("{}: {e}", path.display()),
            })?;
            let v = xattr_get(&path, STRIPE_XATTR)?;
            println!("{}", String::from_utf8_lossy(&v));
        }
    }
    Ok(())
}
