//! Private containerd and dockerd instances driven with the gpu-youki binary, for the tests that
//! check the runtime against real engines (no mocks).
//!
//! Every engine runs out of its own directory `/tmp/gytest-PID-N` (config, root, state, sockets,
//! log) and uses that directory's name, its *token*, as its containerd namespace (ctr) and its
//! cgroup parent (dockerd, CRI pods). Test binaries can therefore run concurrently, and
//! everything an engine left behind can be found again: processes by command line or cgroup,
//! mounts by path, cgroups and runtime state by name. `shutdown` stops the daemon by pid and
//! fails if anything is left; dropping an engine without it (a test that failed half-way)
//! cleans up the same way without judging, and prints the daemon's log tail.

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use std::ffi::{CString, OsStr};
use std::fmt;
use std::fs;
use std::io::{ErrorKind, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long one engine command (ctr, docker, a CRI call) may take before it counts as hung.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a daemon may take to answer after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a daemon may take to exit after SIGTERM (dockerd's shutdown-timeout is 5 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// The docker.io 20.10 client; a different docker CLI may come first on PATH.
const DOCKER_CLIENT: &str = "/usr/bin/docker";
/// Where the runc v2 shim points the runtime's `--root`, one directory per namespace.
const SHIM_RUNTIME_ROOT: &str = "/run/containerd/runc";
/// Where dockerd 20.10's shims point the runtime's `--root`, under its exec-root.
const DOCKER_RUNTIME_ROOT: &str = "exec/runtime-runc/moby";

/// The cargo workspace root: scripts/ and .work/ are found relative to it.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration/ lives inside the workspace")
        .to_path_buf()
}

/// The runtime binary under test ([`crate::bundle::runtime_binary`]: `$GPU_YOUKI_BIN`, e.g.
/// /usr/sbin/runc to check the harness itself, else the release build), checked to exist and
/// made absolute, because engines exec it from their own working directories.
pub fn runtime_binary() -> Result<PathBuf> {
    let path = crate::bundle::runtime_binary();
    let meta = fs::metadata(&path).with_context(|| {
        format!(
            "runtime binary {} (build it with `cargo build --release`, or set GPU_YOUKI_BIN)",
            path.display()
        )
    })?;
    ensure!(
        meta.is_file() && meta.permissions().mode() & 0o111 != 0,
        "runtime binary {} is not an executable file",
        path.display()
    );
    path.canonicalize()
        .with_context(|| format!("resolving {}", path.display()))
}

/// Fails unless the tests run as root: the engines need it for mounts, cgroups and namespaces,
/// and a test that skipped itself would hide a broken runtime.
pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    ensure!(
        euid == 0,
        "the engine tests must run as root (euid is {euid}): they start containerd/dockerd"
    );
    Ok(())
}

/// Finds `name` on PATH (and in /usr/sbin and /sbin, which a root PATH may lack): a missing
/// engine is a machine that was not set up, reported as such rather than skipped.
fn program(name: &str) -> Result<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file());
    found.with_context(|| format!("{name} not found on PATH ({path}); run scripts/setup"))
}

/// One image built by scripts/test-material.
#[derive(Debug, Clone)]
pub struct Image {
    /// The reference it is imported under, e.g. `gytest.local/busybox:latest`.
    pub reference: String,
    /// OCI image layout archive, for `ctr image import`.
    pub oci_archive: PathBuf,
    /// docker-archive, for `docker load` (dockerd 20.10 cannot load OCI layouts).
    pub docker_archive: Option<PathBuf>,
}

/// The images the engine tests import, since nothing can be pulled here.
#[derive(Debug, Clone)]
pub struct TestImages {
    /// A busybox userland whose default command is `sh`.
    pub busybox: Image,
    /// The CRI sandbox ("pause") image: stays alive, exits 0 on SIGTERM.
    pub pause: Image,
    /// The glibc test rootfs (dynamic loader, `ldconfig`, `cuda-probe`), for GPU containers.
    pub glibc: Image,
}

/// Builds the test images with scripts/test-material (a no-op when they are up to date) and
/// reads their references from the images.json it writes, so names live in one place.
pub fn test_images() -> Result<TestImages> {
    let script = workspace_root().join("scripts/test-material");
    run(&mut Command::new(&script))?.success()?;
    let dir = workspace_root().join(".work/images");
    let index = dir.join("images.json");
    let text =
        fs::read_to_string(&index).with_context(|| format!("reading {}", index.display()))?;
    let json: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", index.display()))?;
    let image = |key: &str| -> Result<Image> {
        let entry = &json[key];
        let file = |field: &str| entry[field].as_str().map(|f| dir.join(f));
        Ok(Image {
            reference: entry["ref"]
                .as_str()
                .with_context(|| format!("{} has no {key}.ref", index.display()))?
                .to_owned(),
            oci_archive: file("oci")
                .with_context(|| format!("{} has no {key}.oci", index.display()))?,
            docker_archive: file("docker"),
        })
    };
    Ok(TestImages {
        busybox: image("busybox")?,
        pause: image("pause")?,
        glibc: image("glibc")?,
    })
}

/// What a finished command printed and how it exited. `Display` shows all of it, so an error
/// built from it explains itself.
#[derive(Debug)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// How it exited.
    pub status: ExitStatus,
    /// Its standard output (lossy UTF-8).
    pub stdout: String,
    /// Its standard error (lossy UTF-8).
    pub stderr: String,
}

impl Output {
    /// The exit code, or None when a signal ended the command.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Passes the output on when the command exited 0, else fails showing everything.
    pub fn success(self) -> Result<Self> {
        self.expect_code(0)
    }

    /// Passes the output on when the command exited with `code`, else fails showing everything.
    pub fn expect_code(self, code: i32) -> Result<Self> {
        ensure!(
            self.code() == Some(code),
            "expected exit code {code}: {self}"
        );
        Ok(self)
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` exited with {}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.command,
            self.status,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// A command running in the background while its output is collected, for engine commands
/// that return only when the container ends (`ctr run` without `-d`). Dropping it unwaited
/// kills it.
pub struct Spawned {
    command: String,
    child: Child,
    /// stdout and stderr collectors; taken by `wait`.
    readers: Option<[JoinHandle<Vec<u8>>; 2]>,
}

/// Starts `cmd` with stdin from /dev/null and its stdout and stderr captured.
pub fn spawn(cmd: &mut Command) -> Result<Spawned> {
    let command = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{command}`"))?;
    let collect = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            // A read error ends the capture; what was read so far is still reported.
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = collect(Box::new(child.stdout.take().expect("stdout is piped")));
    let stderr = collect(Box::new(child.stderr.take().expect("stderr is piped")));
    Ok(Spawned {
        command,
        child,
        readers: Some([stdout, stderr]),
    })
}

impl Spawned {
    /// Waits for the command to exit, killing it (and failing) after `timeout`.
    pub fn wait(mut self, timeout: Duration) -> Result<Output> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self
                .child
                .try_wait()
                .with_context(|| format!("waiting for `{}`", self.command))?
            {
                break status;
            }
            if Instant::now() > deadline {
                // Drop kills it; its pipes may be held open by children, so don't join.
                bail!("`{}` did not finish within {timeout:?}", self.command);
            }
            thread::sleep(Duration::from_millis(10));
        };
        let [stdout, stderr] = self.readers.take().expect("waited only once");
        let text = |h: JoinHandle<Vec<u8>>| {
            String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned()
        };
        Ok(Output {
            command: std::mem::take(&mut self.command),
            status,
            stdout: text(stdout),
            stderr: text(stderr),
        })
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.readers.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs a command to completion with stdin from /dev/null. Fails only if it cannot start or
/// hangs past [`COMMAND_TIMEOUT`]; the caller judges the exit status.
pub fn run(cmd: &mut Command) -> Result<Output> {
    spawn(cmd)?.wait(COMMAND_TIMEOUT)
}

/// The program and its arguments.
fn argv(cmd: &Command) -> impl Iterator<Item = &OsStr> {
    std::iter::once(cmd.get_program()).chain(cmd.get_args())
}

fn describe(cmd: &Command) -> String {
    argv(cmd)
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(arg: &OsStr) -> String {
    format!("'{}'", arg.to_string_lossy().replace('\'', r"'\''"))
}

/// Wraps `cmd` (program and arguments; not its environment) in util-linux `script`, which
/// runs it on a new pseudo-terminal: `ctr run -t` refuses to start unless its stdin is a
/// terminal. `script -e` exits with the command's code; the terminal's output (CRLF line
/// ends) is script's stdout.
pub fn with_terminal(cmd: &Command) -> Result<Command> {
    let line = argv(cmd).map(shell_quote).collect::<Vec<_>>().join(" ");
    let mut script = Command::new(program("script")?);
    script.args(["-q", "-e", "-c", &line, "/dev/null"]);
    Ok(script)
}

/// Polls `probe` every 50 ms until it returns Some, for engine state that changes
/// asynchronously (a task reaching STOPPED, a cgroup freezing). Errors from the probe count as
/// "not yet"; the last one is reported on timeout.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        match probe() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = Some(e),
        }
        if Instant::now() > deadline {
            let last = last
                .map(|e| format!("; last error: {e:#}"))
                .unwrap_or_default();
            bail!("timed out after {timeout:?} waiting for {what}{last}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// One line of /proc/self/mountinfo, the parts the harness needs.
struct Mount {
    mount_point: PathBuf,
    fstype: String,
    super_options: String,
}

fn unescape_mountinfo(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    PathBuf::from(OsStr::from_bytes(&out))
}

fn mounts() -> Result<Vec<Mount>> {
    let text =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    text.lines()
        .map(|line| {
            let (left, right) = line
                .split_once(" - ")
                .with_context(|| format!("bad mountinfo line {line:?}"))?;
            let mount_point = left
                .split(' ')
                .nth(4)
                .context("mountinfo: no mount point")?;
            let mut right = right.split(' ');
            let fstype = right.next().unwrap_or_default().to_owned();
            let super_options = right.nth(1).unwrap_or_default().to_owned();
            Ok(Mount {
                mount_point: unescape_mountinfo(mount_point),
                fstype,
                super_options,
            })
        })
        .collect()
}

/// Every cgroup hierarchy mounted here (v1 controllers, named ones, the unified one), with the
/// v1 controllers it carries.
fn cgroup_mounts() -> Result<Vec<(PathBuf, Vec<String>)>> {
    Ok(mounts()?
        .into_iter()
        .filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
        .map(|m| {
            let controllers = match m.fstype.as_str() {
                "cgroup" => m.super_options.split(',').map(str::to_owned).collect(),
                _ => Vec::new(),
            };
            (m.mount_point, controllers)
        })
        .collect())
}

/// Reads (trimmed) `file` of `cgroup` (a path like `/gytest-1-0/ID`) in the cgroup v1 hierarchy
/// that carries `controller`: what the runtime really configured, seen from the host.
pub fn read_cgroup_file(controller: &str, cgroup: &str, file: &str) -> Result<String> {
    let (root, _) = cgroup_mounts()?
        .into_iter()
        .find(|(_, c)| c.iter().any(|c| c == controller))
        .with_context(|| format!("no cgroup v1 hierarchy with the {controller} controller"))?;
    let path = root.join(cgroup.trim_start_matches('/')).join(file);
    Ok(fs::read_to_string(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_owned())
}

/// Everything strictly below `root` as (path, is a directory), children before their parents;
/// nothing if it is missing.
fn tree_deepest_first(root: &Path) -> Vec<(PathBuf, bool)> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(root) {
        for entry in entries.flatten() {
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_dir {
                out.extend(tree_deepest_first(&entry.path()));
            }
            out.push((entry.path(), is_dir));
        }
    }
    out
}

/// Directories strictly below `root`, children before their parents.
fn subdirs_deepest_first(root: &Path) -> Vec<PathBuf> {
    tree_deepest_first(root)
        .into_iter()
        .filter_map(|(path, is_dir)| is_dir.then_some(path))
        .collect()
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: kill has no memory effects; a stale pid only yields ESRCH.
    unsafe { libc::kill(pid, sig) };
}

/// A daemon process owning its directory, with the leak check and the cleanup shared by
/// containerd and dockerd.
struct Daemon {
    name: &'static str,
    dir: PathBuf,
    child: Child,
    /// The runtime's `--root` directories for this daemon's containers: must hold no files
    /// once every container was deleted; removed at cleanup.
    runtime_roots: Vec<PathBuf>,
    finished: bool,
}

impl Daemon {
    /// A fresh directory under /tmp (short, since socket paths are limited to 108 bytes).
    fn make_dir() -> Result<PathBuf> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = PathBuf::from(format!("/tmp/gytest-{}-{n}", std::process::id()));
            match fs::create_dir(&dir) {
                Ok(()) => return Ok(dir),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
            }
        }
    }

    /// Starts `cmd` in its own process group, logging to `dir/daemon.log`.
    fn start(name: &'static str, dir: PathBuf, mut cmd: Command) -> Result<Self> {
        let log_path = dir.join("daemon.log");
        let log = fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("duplicating the log fd")?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting `{}`", describe(&cmd)))?;
        Ok(Daemon {
            name,
            dir,
            child,
            runtime_roots: Vec::new(),
            finished: false,
        })
    }

    fn token(&self) -> String {
        self.dir
            .file_name()
            .expect("made by make_dir")
            .to_string_lossy()
            .into_owned()
    }

    fn log_tail(&self) -> String {
        format!(
            "--- last lines of {}:\n{}",
            self.dir.join("daemon.log").display(),
            tail(&self.dir.join("daemon.log"), 40)
        )
    }

    /// Waits until `ready` says the daemon answers, failing early if it exits.
    fn wait_ready(&mut self, mut ready: impl FnMut() -> bool) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited with {status} while starting\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if ready() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not answer within {READY_TIMEOUT:?}\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM by pid, then SIGKILL if it has not exited within [`STOP_TIMEOUT`].
    fn stop(&mut self) -> Result<()> {
        let pid = self.child.id() as i32;
        if let Some(status) = self.child.try_wait()? {
            bail!("{} (pid {pid}) had already exited with {status}", self.name);
        }
        signal(pid, libc::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(20));
        }
        signal(pid, libc::SIGKILL);
        self.child.wait()?;
        bail!(
            "{} (pid {pid}) ignored SIGTERM for {STOP_TIMEOUT:?}; killed",
            self.name
        )
    }

    fn mounts_inside(&self) -> Result<Vec<PathBuf>> {
        Ok(mounts()?
            .into_iter()
            .map(|m| m.mount_point)
            .filter(|p| p.starts_with(&self.dir))
            .collect())
    }

    /// Live processes started for this daemon: command line naming its directory (shims,
    /// dockerd's containerd, ctr clients) or a cgroup under its token (containers).
    fn processes(&self) -> Vec<(i32, String)> {
        let dir = format!("{}/", self.dir.display());
        let token = self.token();
        let (inner, last) = (format!("/{token}/"), format!("/{token}"));
        let me = std::process::id() as i32;
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| pid != me)
            .filter_map(|pid| {
                let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                let state = stat.rsplit_once(") ")?.1.chars().next()?;
                let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
                let in_cgroup = cgroups
                    .lines()
                    .any(|l| l.contains(&inner) || l.ends_with(&last));
                (state != 'Z' && (cmdline.contains(&dir) || in_cgroup))
                    .then(|| (pid, cmdline.trim_end().to_owned()))
            })
            .collect()
    }

    /// The cgroup directories named after the token, one per hierarchy.
    fn cgroup_roots(&self) -> Vec<PathBuf> {
        let token = self.token();
        cgroup_mounts()
            .unwrap_or_default()
            .into_iter()
            .map(|(root, _)| root.join(&token))
            .filter(|p| p.is_dir())
            .collect()
    }

    /// Everything the test should have removed but did not.
    fn leftovers(&self) -> Result<Vec<String>> {
        let mut found: Vec<String> = Vec::new();
        found.extend(
            self.mounts_inside()?
                .iter()
                .map(|m| format!("mount {}", m.display())),
        );
        found.extend(
            self.processes()
                .into_iter()
                .map(|(pid, cmd)| format!("process {pid}: {cmd}")),
        );
        for root in self.cgroup_roots() {
            found.extend(
                subdirs_deepest_first(&root)
                    .iter()
                    .map(|d| format!("cgroup {}", d.display())),
            );
        }
        // Files only: a runtime may keep root-wide empty directories (gpu-youki's `.locks`);
        // a container's state (state.json, lock files) is files.
        for root in &self.runtime_roots {
            found.extend(
                tree_deepest_first(root)
                    .into_iter()
                    .filter(|(_, is_dir)| !is_dir)
                    .map(|(path, _)| format!("runtime state {}", path.display())),
            );
        }
        Ok(found)
    }

    /// Removes whatever is left, best effort: thaws and kills processes, unmounts, removes
    /// cgroups, runtime state and the directory (unless a mount could not be removed).
    fn cleanup(&mut self) {
        let cgroup_roots = self.cgroup_roots();
        for root in &cgroup_roots {
            // SIGKILL does not reach frozen processes.
            for dir in subdirs_deepest_first(root) {
                let _ = fs::write(dir.join("freezer.state"), "THAWED");
                let _ = fs::write(dir.join("cgroup.freeze"), "0");
            }
        }
        let victims = self.processes();
        for (pid, _) in &victims {
            signal(*pid, libc::SIGKILL);
        }
        let _ = wait_until("killed processes to exit", Duration::from_secs(5), || {
            Ok(self.processes().is_empty().then_some(()))
        });
        for _ in 0..10 {
            let mut inside = self.mounts_inside().unwrap_or_default();
            if inside.is_empty() {
                break;
            }
            inside.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
            for m in inside {
                if let Ok(c) = CString::new(m.as_os_str().as_bytes()) {
                    // SAFETY: c is a valid NUL-terminated path.
                    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                }
            }
        }
        for root in &cgroup_roots {
            let dirs = subdirs_deepest_first(root)
                .into_iter()
                .chain([root.clone()]);
            for dir in dirs {
                // A cgroup is busy until its last process has gone.
                let _ = wait_until("cgroup removal", Duration::from_secs(2), || {
                    Ok(fs::remove_dir(&dir).is_ok().then_some(()))
                });
            }
        }
        for root in &self.runtime_roots {
            let _ = fs::remove_dir_all(root);
        }
        match self.mounts_inside() {
            Ok(m) if m.is_empty() => {
                let _ = fs::remove_dir_all(&self.dir);
            }
            _ => eprintln!(
                "{}: mounts remain under {}; kept it",
                self.name,
                self.dir.display()
            ),
        }
    }

    /// Stops the daemon, checks that nothing is left, and cleans up either way.
    fn shutdown(&mut self) -> Result<()> {
        self.finished = true;
        let mut problems = Vec::new();
        if let Err(e) = self.stop() {
            problems.push(format!("{e:#}"));
        }
        match self.leftovers() {
            Ok(found) => problems.extend(found),
            Err(e) => problems.push(format!("leak check failed: {e:#}")),
        }
        let log = self.log_tail();
        self.cleanup();
        ensure!(
            problems.is_empty(),
            "{} did not end cleanly:\n  {}\n{log}",
            self.name,
            problems.join("\n  ")
        );
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.finished {
            eprintln!(
                "{}: stopped after a failure\n{}",
                self.name,
                self.log_tail()
            );
            let _ = self.stop();
            self.cleanup();
        }
    }
}

/// TOML/JSON string literal (JSON escapes are valid in TOML basic strings).
fn quoted(path: &Path) -> String {
    Value::from(path.to_string_lossy()).to_string()
}

/// A step run on an engine's config file before the daemon starts.
pub type ConfigureStep = Box<dyn Fn(&Path) -> Result<()>>;

/// What a GPU test adds to an engine it starts.
#[derive(Default)]
pub struct EngineSetup {
    /// Environment of the daemon, and so of the shims and the runtime (`GPU_YOUKI_CONFIG`).
    pub env: Vec<(String, PathBuf)>,
    /// Directories put in front of PATH for the daemon and for ctr (placeholder programs).
    pub path: Vec<PathBuf>,
    /// Run on the config file the harness wrote before the daemon starts (`gpu-youki setup`);
    /// the harness then leaves the runtime entry (and default runtime) to it.
    pub configure: Option<ConfigureStep>,
}

impl EngineSetup {
    /// PATH with [`EngineSetup::path`] in front, when there is any.
    fn path_env(&self) -> Option<std::ffi::OsString> {
        if self.path.is_empty() {
            return None;
        }
        let mut dirs = self.path.clone();
        dirs.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        std::env::join_paths(dirs).ok()
    }

    /// Gives `cmd` this setup's environment and PATH.
    fn apply(&self, cmd: &mut Command) {
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(path) = self.path_env() {
            cmd.env("PATH", path);
        }
    }
}

/// A private containerd 1.6 (own root, state and sockets) with its CRI plugin, whose only
/// runtime handler, `gpu-youki`, runs the runtime under test through the runc v2 shim.
pub struct Containerd {
    daemon: Daemon,
    socket: PathBuf,
    ctr: PathBuf,
    runtime: PathBuf,
    /// PATH for ctr, when the test put directories in front of it.
    ctr_path: Option<std::ffi::OsString>,
}

impl Containerd {
    /// The CRI runtime handler (RunPodSandboxRequest.runtime_handler) that uses the runtime
    /// under test. It is also the default, so nothing in this daemon runs any other runtime.
    pub const HANDLER: &'static str = "gpu-youki";
    /// The containerd namespace the CRI plugin works in; images for pods go there.
    pub const CRI_NAMESPACE: &'static str = "k8s.io";

    /// Writes the config, starts `containerd --config` and waits until ctr gets an answer.
    /// `sandbox_image` is what CRI runs as every pod's sandbox; the test must import it into
    /// [`Self::CRI_NAMESPACE`] before the first RunPodSandbox (nothing can be pulled here).
    pub fn start(runtime: &Path, sandbox_image: &str) -> Result<Self> {
        Self::start_with(runtime, sandbox_image, EngineSetup::default())
    }

    /// [`Containerd::start`] with a test's additions (environment, PATH, a configure step).
    pub fn start_with(runtime: &Path, sandbox_image: &str, setup: EngineSetup) -> Result<Self> {
        let containerd = program("containerd")?;
        let ctr = program("ctr")?;
        program("containerd-shim-runc-v2")?;
        let dir = Daemon::make_dir()?;
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        let d = |sub: &str| quoted(&dir.join(sub));
        let handler = format!(
            r#"  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "{handler}"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{handler}]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{handler}.options]
        BinaryName = {bin}
        SystemdCgroup = false
"#,
            handler = Self::HANDLER,
            bin = quoted(runtime),
        );
        let text = format!(
            r#"# The test harness's containerd (integration/src/engines.rs).
version = 2
root = {root}
state = {state}

[grpc]
  address = {sock}

[ttrpc]
  address = {ttrpc}

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = {sandbox}
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = {cni_bin}
    conf_dir = {cni_conf}
{handler}"#,
            root = d("root"),
            state = d("state"),
            sock = quoted(&socket),
            ttrpc = quoted(&dir.join("containerd.sock.ttrpc")),
            opt = d("opt"),
            cni_bin = d("cni/bin"),
            cni_conf = d("cni/conf"),
            handler = if setup.configure.is_some() {
                ""
            } else {
                &handler
            },
            sandbox = Value::from(sandbox_image),
        );
        fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        if let Some(configure) = &setup.configure {
            configure(&config)?;
        }
        let mut cmd = Command::new(containerd);
        cmd.arg("--config").arg(&config);
        setup.apply(&mut cmd);
        let mut daemon = Daemon::start("containerd", dir, cmd)?;
        daemon
            .runtime_roots
            .push(Path::new(SHIM_RUNTIME_ROOT).join(daemon.token()));
        let mut ctrd = Containerd {
            daemon,
            socket,
            ctr,
            runtime: runtime.to_owned(),
            ctr_path: setup.path_env(),
        };
        let socket = ctrd.socket.clone();
        let mut probe = ctrd.ctr_command("default", ["version"]);
        ctrd.daemon
            .wait_ready(|| socket.exists() && run(&mut probe).is_ok_and(|o| o.status.success()))?;
        Ok(ctrd)
    }

    /// Where the runc v2 shim has the runtime keep the state of container `id` of `namespace`
    /// (the runtime's `--root` is `/run/containerd/runc/NAMESPACE`): gone after a delete.
    pub fn runtime_state(namespace: &str, id: &str) -> PathBuf {
        Path::new(SHIM_RUNTIME_ROOT).join(namespace).join(id)
    }

    /// This daemon's own containerd namespace for ctr (unique per daemon, so the shim's
    /// runtime root `/run/containerd/runc/NS` and the cgroups `/NS/ID` are too).
    pub fn namespace(&self) -> String {
        self.daemon.token()
    }

    /// The cgroup parent of ctr's containers (`/NAMESPACE`); CRI tests use it as the pods'
    /// cgroup_parent so that their cgroups are found and checked too.
    pub fn cgroup_parent(&self) -> String {
        format!("/{}", self.daemon.token())
    }

    /// The daemon's private directory, e.g. for CRI log directories.
    pub fn dir(&self) -> &Path {
        &self.daemon.dir
    }

    /// `ctr --address SOCK --namespace NAMESPACE ARGS`, not yet run.
    pub fn ctr_command<I, S>(&self, namespace: &str, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.ctr);
        if let Some(path) = &self.ctr_path {
            cmd.env("PATH", path);
        }
        cmd.arg("--address")
            .arg(&self.socket)
            .arg("--namespace")
            .arg(namespace)
            .args(args);
        cmd
    }

    /// Runs ctr in this daemon's namespace.
    pub fn ctr<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run(&mut self.ctr_command(&self.namespace(), args))
    }

    /// `ctr run` through the runc v2 shim with the runtime under test as its runc binary,
    /// followed by `args` (flags, image, id, command), not yet run.
    pub fn ctr_run(&self, args: &[&str]) -> Command {
        let mut cmd = self.ctr_command(
            &self.namespace(),
            ["run", "--runtime", "io.containerd.runc.v2", "--runc-binary"],
        );
        cmd.arg(&self.runtime).args(args);
        cmd
    }

    /// Imports an image archive into `namespace` (and unpacks it for the default snapshotter).
    pub fn import(&self, namespace: &str, image: &Image) -> Result<()> {
        let mut cmd = self.ctr_command(namespace, ["image", "import"]);
        cmd.arg(&image.oci_archive);
        run(&mut cmd)?
            .success()
            .with_context(|| format!("importing {}", image.oci_archive.display()))?;
        Ok(())
    }

    /// Starts a host-network pod sandbox named `name` on the gpu-youki runtime handler;
    /// returns the sandbox id and the pod config (CreateContainer needs it again).
    pub fn run_pod_sandbox(&self, name: &str) -> Result<(String, Value)> {
        self.run_pod_sandbox_on(name, Containerd::HANDLER)
    }

    /// [`Containerd::run_pod_sandbox`] on the runtime handler `handler`; `""` names none, so
    /// the pod runs on the CRI plugin's `default_runtime_name`.
    pub fn run_pod_sandbox_on(&self, name: &str, handler: &str) -> Result<(String, Value)> {
        let pod = json!({
            "metadata": { "name": name, "uid": format!("gytest-{name}-uid"), "namespace": "default" },
            "log_directory": self.dir().join("pods"),
            "linux": {
                "cgroup_parent": self.cgroup_parent(),
                "security_context": { "namespace_options": { "network": "NODE" } },
            },
        });
        let response = self.cri(
            "RunPodSandbox",
            &json!({ "config": pod, "runtime_handler": handler }),
        )?;
        Ok((str_field(&response, "pod_sandbox_id")?, pod))
    }

    /// Calls `RuntimeService/METHOD` of the CRI plugin with `request` (proto field names) through
    /// integration/cri/cri.py, returning the response as JSON (int64 fields are strings, enums
    /// names, ExecSync's bytes UTF-8 text).
    pub fn cri(&self, method: &str, request: &Value) -> Result<Value> {
        let root = workspace_root();
        let python = root.join(".work/venv/bin/python");
        ensure!(
            python.is_file(),
            "{} missing: run scripts/setup (it makes the venv with grpcio)",
            python.display()
        );
        let mut cmd = Command::new(python);
        cmd.arg(root.join("integration/cri/cri.py"))
            .arg("--socket")
            .arg(&self.socket)
            .arg("--stubs")
            .arg(root.join(".work/cri-stubs"))
            .arg(method)
            .arg(request.to_string());
        let out = run(&mut cmd)?
            .success()
            .with_context(|| format!("CRI {method} {request}"))?;
        serde_json::from_str(&out.stdout)
            .with_context(|| format!("CRI {method}: response is not JSON: {out}"))
    }

    /// Stops containerd by pid and fails if any shim, container process, mount, cgroup or
    /// runtime state of this daemon is left; cleans all of it up either way.
    pub fn shutdown(mut self) -> Result<()> {
        self.daemon.shutdown()
    }
}

/// A private dockerd 20.10 (own data-root, exec-root, pidfile, socket and containerd; no
/// iptables or bridge) with the runtime under test registered as the runtime `gpu-youki`.
pub struct Dockerd {
    daemon: Daemon,
    socket: PathBuf,
}

impl Dockerd {
    /// The name to pass as `docker run --runtime`.
    pub const RUNTIME: &'static str = "gpu-youki";

    /// Starts dockerd with the overlay2 storage driver, or vfs where overlay2 cannot start.
    pub fn start(runtime: &Path) -> Result<Self> {
        Self::start_with(runtime, EngineSetup::default())
    }

    /// [`Dockerd::start`] with a test's additions (environment, PATH, a configure step).
    pub fn start_with(runtime: &Path, setup: EngineSetup) -> Result<Self> {
        match Self::start_on(runtime, "overlay2", &setup) {
            Ok(d) => Ok(d),
            Err(overlay) => {
                eprintln!("dockerd: overlay2 failed ({overlay:#}); retrying with vfs");
                Self::start_on(runtime, "vfs", &setup)
                    .with_context(|| format!("after overlay2 failed: {overlay:#}"))
            }
        }
    }

    fn start_on(runtime: &Path, storage_driver: &str, setup: &EngineSetup) -> Result<Self> {
        let dockerd = program("dockerd")?;
        program("containerd")?;
        ensure!(
            Path::new(DOCKER_CLIENT).is_file(),
            "{DOCKER_CLIENT} missing; run scripts/setup (package docker.io)"
        );
        let dir = Daemon::make_dir()?;
        let token = dir
            .file_name()
            .expect("made by make_dir")
            .to_string_lossy()
            .into_owned();
        let socket = dir.join("docker.sock");
        let mut config = json!({
            "data-root": dir.join("data"),
            "exec-root": dir.join("exec"),
            "pidfile": dir.join("dockerd.pid"),
            // dockerd 20.10 otherwise writes its trust key to /etc/docker/key.json.
            "deprecated-key-path": dir.join("key.json"),
            "hosts": [format!("unix://{}", socket.display())],
            "iptables": false,
            "ip-forward": false,
            "ip-masq": false,
            "bridge": "none",
            "storage-driver": storage_driver,
            "cgroup-parent": format!("/{token}"),
            "shutdown-timeout": 5,
        });
        if setup.configure.is_none() {
            config["runtimes"] = json!({ Self::RUNTIME: { "path": runtime } });
        }
        let config_path = dir.join("daemon.json");
        fs::write(&config_path, serde_json::to_vec_pretty(&config)?)
            .with_context(|| format!("writing {}", config_path.display()))?;
        if let Some(configure) = &setup.configure {
            configure(&config_path)?;
        }
        let mut cmd = Command::new(dockerd);
        cmd.arg("--config-file").arg(&config_path);
        setup.apply(&mut cmd);
        let mut daemon = Daemon::start("dockerd", dir, cmd)?;
        // The shim's `--root` for the runtime under test, as dockerd 20.10 sets it.
        let runtime_root = daemon.dir.join(DOCKER_RUNTIME_ROOT);
        daemon.runtime_roots.push(runtime_root);
        let mut docker = Dockerd { daemon, socket };
        let mut probe = docker.docker_command(["version", "--format", "{{.Server.Version}}"]);
        let socket = docker.socket.clone();
        docker
            .daemon
            .wait_ready(|| socket.exists() && run(&mut probe).is_ok_and(|o| o.status.success()))?;
        Ok(docker)
    }

    /// The runtime's state directory of container `id` (the shim's `--root` is
    /// `EXEC_ROOT/runtime-runc/moby`).
    pub fn runtime_state(&self, id: &str) -> PathBuf {
        self.daemon.dir.join(DOCKER_RUNTIME_ROOT).join(id)
    }

    /// The cgroup parent of this daemon's containers (`/TOKEN`, so cgroups are `/TOKEN/ID`).
    pub fn cgroup_parent(&self) -> String {
        format!("/{}", self.daemon.token())
    }

    /// `docker -H unix://SOCK ARGS` with a private client config directory, not yet run.
    pub fn docker_command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(DOCKER_CLIENT);
        cmd.env("DOCKER_CONFIG", self.daemon.dir.join("client"))
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args);
        cmd
    }

    /// Runs the docker client against this daemon.
    pub fn docker<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run(&mut self.docker_command(args))
    }

    /// `docker load`s the image's docker-archive.
    pub fn load(&self, image: &Image) -> Result<()> {
        let archive = image
            .docker_archive
            .as_ref()
            .with_context(|| format!("{} has no docker-archive", image.reference))?;
        let mut cmd = self.docker_command(["load", "--input"]);
        cmd.arg(archive);
        run(&mut cmd)?
            .success()
            .with_context(|| format!("loading {}", archive.display()))?;
        Ok(())
    }

    /// Stops dockerd by pid (it stops its containers and its containerd) and fails if any
    /// process, mount or cgroup of this daemon is left; cleans all of it up either way.
    pub fn shutdown(mut self) -> Result<()> {
        self.daemon.shutdown()
    }
}

/// A string field of a CRI response, or an error showing the response.
pub fn str_field(response: &Value, field: &str) -> Result<String> {
    response[field]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no {field} in {response}"))
}
