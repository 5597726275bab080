//! Busybox bundles for tests, the gpu-youki command runner, and checks that a container left
//! nothing behind (mounts, cgroups, state directories).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// The statically linked busybox that Debian's busybox-static installs.
pub const BUSYBOX: &str = "/bin/busybox";

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A name unique to this test process, so parallel tests never share ids, dirs or cgroups.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// The runtime binary under test: `GPU_YOUKI_BIN`, or the workspace's release build.
pub fn runtime_binary() -> PathBuf {
    std::env::var_os("GPU_YOUKI_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/gpu-youki")
        })
}

/// gpu-youki with a private state root, removed when dropped.
pub struct Runtime {
    pub bin: PathBuf,
    pub root: PathBuf,
    /// Environment set on every command (e.g. `GPU_YOUKI_CONFIG`).
    pub env: Vec<(String, PathBuf)>,
}

impl Runtime {
    /// A runtime whose `--root` is a fresh directory under /run.
    pub fn new() -> Self {
        let bin = runtime_binary();
        assert!(
            bin.exists(),
            "{} is missing: build it with `cargo build --release` first",
            bin.display()
        );
        let root = PathBuf::from("/run/gpu-youki-tests").join(unique("root"));
        Runtime {
            bin,
            root,
            env: Vec::new(),
        }
    }

    /// A command with `--root` set, ready for a subcommand and its arguments.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.bin);
        command.arg("--root").arg(&self.root).args(args);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command.stdin(Stdio::null());
        command
    }

    /// Runs a subcommand and returns its output. stdout and stderr go through files, not pipes:
    /// a created container's process inherits them and keeps a pipe open until it exits.
    pub fn run(&self, args: &[&str]) -> Output {
        let capture = |name: &str| {
            let path = std::env::temp_dir().join(unique(name));
            let file = fs::File::create(&path).expect("temp file for output");
            (path, file)
        };
        let (out_path, out) = capture("gpu-youki-stdout");
        let (err_path, err) = capture("gpu-youki-stderr");
        let status = self
            .command(args)
            .stdout(out)
            .stderr(err)
            .status()
            .unwrap_or_else(|err| panic!("cannot run {} {args:?}: {err}", self.bin.display()));
        let read = |path: PathBuf| {
            let bytes = fs::read(&path).unwrap_or_default();
            let _ = fs::remove_file(path);
            bytes
        };
        Output {
            status,
            stdout: read(out_path),
            stderr: read(err_path),
        }
    }

    /// Runs a subcommand that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "gpu-youki {args:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The container's `status` field from `gpu-youki state`.
    pub fn status(&self, id: &str) -> String {
        let state: Value = serde_json::from_str(&self.ok(&["state", id])).expect("state JSON");
        state["status"].as_str().unwrap_or_default().to_string()
    }

    /// The status while polling a container another process is still creating: `None` until
    /// `state` succeeds (libcontainer writes state.json in place, so it can be caught empty).
    pub fn polled_status(&self, id: &str) -> Option<String> {
        let output = self.run(&["state", id]);
        let state: Value = serde_json::from_slice(&output.stdout).ok()?;
        output
            .status
            .success()
            .then(|| state["status"].as_str().unwrap_or_default().to_string())
    }

    /// Container state directories under the root (lock and console dirs excluded).
    pub fn state_dirs(&self) -> Vec<PathBuf> {
        fs::read_dir(&self.root)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Everything in the state root but the lock directory itself: container state
    /// directories, hidden per-container entries and lock files (`.locks/<id>`).
    pub fn state_root_entries(&self) -> Vec<PathBuf> {
        let list = |dir: &Path| -> Vec<PathBuf> {
            fs::read_dir(dir)
                .map(|entries| entries.flatten().map(|e| e.path()).collect())
                .unwrap_or_default()
        };
        let locks = self.root.join(".locks");
        let mut entries: Vec<PathBuf> = list(&self.root)
            .into_iter()
            .filter(|p| *p != locks)
            .chain(list(&locks))
            .collect();
        entries.sort();
        entries
    }
}

/// The mount points of the host's mount namespace (this process's), sorted.
pub fn host_mount_points() -> Vec<String> {
    let mut points: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
        .expect("/proc/self/mountinfo")
        .lines()
        .filter_map(|line| line.split(' ').nth(4).map(String::from))
        .collect();
    points.sort();
    points
}

/// The live processes whose root directory is `root` (a container's rootfs; compared by
/// device and inode, since a container's root reads as `/` from the host): what remains of a
/// container that was not fully killed. Zombies have no root, and hold nothing.
pub fn processes_with_root(root: &Path) -> Vec<i32> {
    let Ok(wanted) = fs::metadata(root) else {
        return Vec::new();
    };
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::metadata(format!("/proc/{pid}/root"))
                .is_ok_and(|m| (m.dev(), m.ino()) == (wanted.dev(), wanted.ino()))
        })
        .collect()
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime::new()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// An OCI bundle whose rootfs holds busybox and its applet links, with a config.json made by
/// `gpu-youki spec` and adjusted for tests (no terminal, its own cgroup path).
pub struct Bundle {
    pub dir: PathBuf,
    pub config: Value,
    /// The cgroup path of the container, unique to this bundle.
    pub cgroup: String,
}

impl Bundle {
    /// A bundle whose process runs `args`.
    pub fn busybox(runtime: &Runtime, args: &[&str]) -> Result<Self> {
        let dir = std::env::temp_dir().join(unique("gpu-youki-bundle"));
        let bin = dir.join("rootfs/bin");
        fs::create_dir_all(&bin).with_context(|| format!("cannot create {}", bin.display()))?;
        install_busybox(&bin)?;
        for d in ["proc", "sys", "dev", "tmp", "etc"] {
            fs::create_dir_all(dir.join("rootfs").join(d))?;
        }
        fs::write(dir.join("rootfs/etc/passwd"), "root:x:0:0:root:/:/bin/sh\n")?;
        let spec = runtime.run(&["spec", "--bundle", dir.to_str().unwrap()]);
        if !spec.status.success() {
            bail!(
                "gpu-youki spec failed: {}",
                String::from_utf8_lossy(&spec.stderr)
            );
        }
        let config_path = dir.join("config.json");
        let mut config: Value = serde_json::from_slice(&fs::read(&config_path)?)?;
        let cgroup = format!("/gpu-youki-tests/{}", unique("cg"));
        config["process"]["terminal"] = json!(false);
        config["process"]["args"] = json!(args);
        config["linux"]["cgroupsPath"] = json!(cgroup);
        let bundle = Bundle {
            dir,
            config,
            cgroup,
        };
        bundle.save()?;
        Ok(bundle)
    }

    /// Puts the container in a new user namespace mapping ids 0-65535 to the same host ids.
    pub fn add_user_namespace(&mut self) {
        self.config["linux"]["namespaces"]
            .as_array_mut()
            .expect("spec without linux.namespaces")
            .push(json!({"type": "user"}));
        let mapping = json!([{"containerID": 0, "hostID": 0, "size": 65536}]);
        self.config["linux"]["uidMappings"] = mapping.clone();
        self.config["linux"]["gidMappings"] = mapping;
    }

    /// Writes `config` back to `config.json`.
    pub fn save(&self) -> Result<()> {
        fs::write(
            self.dir.join("config.json"),
            serde_json::to_vec_pretty(&self.config)?,
        )
        .context("cannot write config.json")
    }

    /// The bundle directory as a string, for command lines.
    pub fn path(&self) -> &str {
        self.dir.to_str().expect("UTF-8 temp dir")
    }

    /// Cgroup directories of this bundle's container that still exist on the host.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        if let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") {
            for hierarchy in hierarchies.flatten() {
                let dir = hierarchy.path().join(self.cgroup.trim_start_matches('/'));
                if dir.exists() {
                    found.push(dir);
                }
            }
        }
        found
    }

    /// Mount points that mention this bundle (its rootfs or anything below it). The path must
    /// end where a path component does: bundle `…-1` is a prefix of another test's `…-12`.
    pub fn mounts(&self) -> Vec<String> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        mountinfo
            .lines()
            .filter(|line| {
                line.match_indices(self.path()).any(|(at, path)| {
                    line[at + path.len()..]
                        .chars()
                        .next()
                        .is_none_or(|c| matches!(c, '/' | ' ' | ',' | ':'))
                })
            })
            .map(String::from)
            .collect()
    }

    /// Panics unless no mount, cgroup or state directory of the container remains.
    pub fn assert_clean(&self, runtime: &Runtime) {
        assert_eq!(self.mounts(), Vec::<String>::new(), "mounts left behind");
        assert_eq!(
            self.cgroup_dirs(),
            Vec::<PathBuf>::new(),
            "cgroups left behind"
        );
        assert_eq!(
            runtime.state_dirs(),
            Vec::<PathBuf>::new(),
            "state left behind"
        );
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Puts busybox into `bin` with a link for each of its applets.
fn install_busybox(bin: &Path) -> Result<()> {
    let target = bin.join("busybox");
    fs::copy(BUSYBOX, &target)
        .with_context(|| format!("cannot copy {BUSYBOX} (install busybox-static)"))?;
    let list = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .context("cannot list busybox applets")?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = bin.join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", &link)
                .with_context(|| format!("cannot link {}", link.display()))?;
        }
    }
    Ok(())
}
