//! FUSE mounts of a test server's file systems, and waiting for
//! conditions.

use std::process::Command;
use std::time::{Duration, Instant};

use super::Server;

pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub struct Mount {
    pub dir: std::path::PathBuf,
    child: std::process::Child,
}

impl Mount {
    pub fn new(server: &Server, domain: &str, name: &str) -> Mount {
        let dir = server.dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let log_path = server.dir.join(format!("{name}.mount.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_cpfs"))
            .args(["mount", domain])
            .arg(&dir)
            .args([
                "--controlplane",
                &format!("http://127.0.0.1:{}", server.port),
            ])
            .stderr(log)
            .spawn()
            .unwrap();
        let mut m = Mount { dir, child };
        wait_for("the mount", || {
            if let Ok(Some(s)) = m.child.try_wait() {
                panic!(
                    "cpfs mount exited: {s}: {}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap()
                .contains(&format!(" {} ", m.dir.display()))
        });
        m
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.dir)
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn file_system_with_mount_target(c: &super::Client) -> (String, String) {
    let id = c.create_fs("2048");
    c.wait_running(&id);
    let v = c.ok(
        "CreateMountTarget",
        &[
            ("FileSystemId", &id),
            ("NetworkType", "Vpc"),
            ("VpcId", "v"),
            ("VSwitchId", "s"),
        ],
    );
    let domain = v["MountTargetDomain"].as_str().unwrap().to_string();
    wait_for("an Active mount target", || {
        c.ok("DescribeMountTargets", &[("FileSystemId", &id)])["MountTargets"]["MountTarget"][0]
            ["Status"]
            == "Active"
    });
    (id, domain)
}
