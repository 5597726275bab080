//! Fixtures for GPU containers without a GPU: the fake NVIDIA driver trees (2 and 8 GPUs) and
//! the glibc test rootfs, built once per test process under `<workspace>/.work/` by
//! `scripts/fake-driver` and `scripts/test-rootfs` (idempotent, so later processes reuse them);
//! GPU bundles; a runtime whose commands point gpu-youki at a fake driver through
//! `GPU_YOUKI_CONFIG` (set per command, never in the test process); and helpers to read what a
//! container printed and what it left in its rootfs.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::fs;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::bundle::{unique, Bundle, Runtime};
use crate::engines::workspace_root;

/// The environment variable that names gpu-youki's configuration file.
pub const CONFIG_ENV: &str = "GPU_YOUKI_CONFIG";

/// The library directory of Debian-family images, where the driver libraries are bound.
pub const LIB_DIR: &str = "/usr/lib/x86_64-linux-gnu";

/// What to install or do when a fixture cannot be built.
const FIXTURE_FIX: &str = "the fixtures need root and Debian's `gcc libc6-dev python3 \
     busybox-static` (apt-get install gcc libc6-dev python3 busybox-static); a non-empty \
     .work/<name> without a .stamp is never replaced: remove it";

/// A fake driver tree made by `scripts/fake-driver`, with its `manifest.json`.
pub struct FakeDriver {
    pub root: PathBuf,
    pub manifest: Value,
}

impl FakeDriver {
    fn build(gpus: u32) -> FakeDriver {
        Self::build_named(&format!("fake-{gpus}"), gpus, &[])
    }

    /// `.work/<name>`, built by `scripts/fake-driver --gpus <gpus> <options…>`.
    fn build_named(name: &str, gpus: u32, options: &[&str]) -> FakeDriver {
        let root = workspace_root().join(".work").join(name);
        let gpus_text = gpus.to_string();
        let mut args = vec!["--gpus", gpus_text.as_str()];
        args.extend(options);
        args.push(root.to_str().unwrap());
        run_script("scripts/fake-driver", &args);
        let manifest_path = root.join("manifest.json");
        let manifest: Value = serde_json::from_slice(
            &fs::read(&manifest_path)
                .unwrap_or_else(|err| panic!("{}: {err}", manifest_path.display())),
        )
        .unwrap_or_else(|err| panic!("{}: {err}", manifest_path.display()));
        let listed = manifest["gpus"].as_array().map_or(0, Vec::len);
        assert_eq!(
            listed,
            gpus as usize,
            "{} lists {listed} GPUs; rebuild it (rm -rf {})",
            manifest_path.display(),
            root.display()
        );
        FakeDriver { root, manifest }
    }

    /// The gpu-youki config that points at this tree.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    /// The driver version, e.g. `580.95.05`.
    pub fn version(&self) -> &str {
        self.manifest["version"].as_str().expect("manifest version")
    }

    /// The number of GPUs in the tree.
    pub fn gpu_count(&self) -> usize {
        self.manifest["gpus"].as_array().map_or(0, Vec::len)
    }

    fn gpu_field(&self, index: usize, field: &str) -> String {
        self.manifest["gpus"][index][field]
            .as_str()
            .unwrap_or_else(|| panic!("manifest gpus[{index}].{field}"))
            .to_string()
    }

    /// GPU `index`'s UUID (`GPU-…`).
    pub fn uuid(&self, index: usize) -> String {
        self.gpu_field(index, "uuid")
    }

    /// GPU `index`'s PCI bus id as in `/proc/driver/nvidia/gpus` (`0000:13:00.0`).
    pub fn bus_id(&self, index: usize) -> String {
        self.gpu_field(index, "bus_id")
    }
}

/// The fixtures every GPU test uses, built once per test process.
pub struct Fixtures {
    pub fake2: FakeDriver,
    pub fake8: FakeDriver,
    /// The glibc test rootfs (copied into each bundle, never used in place).
    pub rootfs: PathBuf,
}

/// The fake driver with every device family (`.work/fake-devices`): 2 GPUs, GPU 0 in MIG mode
/// with three MIG devices, IMEX channels 0, 1 and 3, the GDS, MOFED, NVSwitch and GDRCopy
/// nodes, and DRM nodes (`scripts/fake-driver --mig 0 --extra-devices`). Built once per test
/// process, after [`fixtures`].
pub fn fake_devices() -> &'static FakeDriver {
    static DRIVER: OnceLock<FakeDriver> = OnceLock::new();
    DRIVER.get_or_init(|| {
        fixtures();
        FakeDriver::build_named("fake-devices", 2, &["--mig", "0", "--extra-devices"])
    })
}

/// Builds (or finds up to date) the fixtures; panics with the fix if a prerequisite is missing.
pub fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let rootfs = workspace_root().join(".work/rootfs-glibc");
        run_script("scripts/test-rootfs", &[rootfs.to_str().unwrap()]);
        for needed in [
            "usr/local/bin/cuda-probe",
            "usr/sbin/ldconfig",
            "usr/bin/busybox",
        ] {
            assert!(
                rootfs.join(needed).exists(),
                "{} lacks /{needed}; rebuild it (rm -rf {})",
                rootfs.display(),
                rootfs.display()
            );
        }
        Fixtures {
            fake2: FakeDriver::build(2),
            fake8: FakeDriver::build(8),
            rootfs,
        }
    })
}

fn run_script(script: &str, args: &[&str]) {
    let path = workspace_root().join(script);
    let output = Command::new(&path)
        .args(args)
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("cannot run {}: {err} ({FIXTURE_FIX})", path.display()));
    assert!(
        output.status.success(),
        "{script} {args:?} failed ({}):\n{}{}\nFix: {FIXTURE_FIX}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// gpu-youki with a private state root, each command run with `GPU_YOUKI_CONFIG=config`.
pub struct GpuRuntime {
    pub rt: Runtime,
    pub config: PathBuf,
}

impl GpuRuntime {
    /// A runtime pointed at `driver`.
    pub fn new(driver: &FakeDriver) -> Self {
        Self::with_config(driver.config())
    }

    /// A runtime pointed at any config file (even a missing one).
    pub fn with_config(config: PathBuf) -> Self {
        let mut rt = Runtime::new();
        rt.env.push((CONFIG_ENV.to_string(), config.clone()));
        GpuRuntime { rt, config }
    }

    /// A command with `--root` and `GPU_YOUKI_CONFIG` set.
    pub fn command(&self, args: &[&str]) -> Command {
        self.rt.command(args)
    }

    /// Runs a subcommand; stdout and stderr go through files (see [`Runtime::run`]).
    pub fn run(&self, args: &[&str]) -> Output {
        self.rt.run(args)
    }

    /// Runs a bundle in the foreground (`run`): its exit status and what it printed.
    pub fn run_bundle(&self, bundle: &Bundle) -> (Output, Report) {
        let output = self.run(&["run", "-b", bundle.path(), &unique("gpu")]);
        let report = Report::parse(&output.stdout);
        (output, report)
    }

    /// Runs a bundle that must succeed; returns what it printed.
    pub fn run_ok(&self, bundle: &Bundle) -> Report {
        let (output, report) = self.run_bundle(bundle);
        assert!(
            output.status.success(),
            "run failed ({}): {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            report.raw
        );
        report
    }

    /// Runs a bundle that must fail; returns its stderr.
    pub fn run_err(&self, bundle: &Bundle) -> String {
        let (output, report) = self.run_bundle(bundle);
        assert!(!output.status.success(), "ran: {}", report.raw);
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    /// Runs a subcommand that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.rt.ok(args)
    }

    /// The container's state from `gpu-youki state`.
    pub fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).expect("state JSON")
    }

    /// Polls until the container's status is `status`, for at most ten seconds.
    pub fn wait_for(&self, id: &str, status: &str) {
        let start = Instant::now();
        loop {
            let output = self.run(&["state", id]);
            if output.status.success() {
                let state: Value = serde_json::from_slice(&output.stdout).expect("state JSON");
                if state["status"] == status {
                    return;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "container {id} never became {status}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Per-container hidden entries still in the state root: shadow bundles
    /// (`<root>/.bundle-<id>`) and any other `.<name>-<id>` (everything hidden but `.locks`).
    pub fn shadow_dirs(&self) -> Vec<PathBuf> {
        fs::read_dir(&self.rt.root)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        let name = p.file_name().unwrap().to_string_lossy();
                        name.starts_with('.') && name != ".locks"
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// [`Bundle::assert_clean`] plus: no shadow bundle remains.
    pub fn assert_clean(&self, bundle: &Bundle) {
        bundle.assert_clean(&self.rt);
        assert_eq!(
            self.shadow_dirs(),
            Vec::<PathBuf>::new(),
            "shadow bundles (or other per-container state) left behind"
        );
    }
}

/// Deletes a container (`delete --force`) when dropped, so that a test failing between `create`
/// and `delete` leaves no container behind.
pub struct DeleteOnDrop<'a> {
    rt: &'a GpuRuntime,
    id: String,
}

impl GpuRuntime {
    /// A guard that force-deletes container `id` when dropped.
    pub fn delete_on_drop(&self, id: &str) -> DeleteOnDrop<'_> {
        DeleteOnDrop {
            rt: self,
            id: id.to_string(),
        }
    }
}

impl Drop for DeleteOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.rt.run(&["delete", "--force", &self.id]);
    }
}

/// A bundle whose rootfs is a copy of the glibc test rootfs (hard links, /etc copied) and whose
/// process runs `sh -c script` with the spec's default environment plus `env`. `root.readonly`
/// is false (so that a failed write proves a read-only mount, not a read-only root), and the
/// device rules start with deny-all.
pub fn gpu_bundle(rt: &GpuRuntime, script: &str, env: &[&str]) -> Result<Bundle> {
    let fixtures = fixtures();
    let dir = std::env::temp_dir().join(unique("gpu-youki-gpu-bundle"));
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Build the Bundle first, so that its Drop removes the directory on any error below.
    let mut bundle = Bundle {
        dir: dir.clone(),
        config: Value::Null,
        cgroup: format!("/gpu-youki-tests/{}", unique("cg")),
    };
    // Hard links for speed: gpu-youki and libcontainer never write into an existing file
    // of the image outside /etc (they add files and links, and replace files by rename), and
    // the tests' workloads only create new files. /etc, whose files are replaced, is copied.
    let rootfs = dir.join("rootfs");
    let copies: [(&str, PathBuf, PathBuf); 2] = [
        ("-al", fixtures.rootfs.clone(), rootfs.clone()),
        ("-a", fixtures.rootfs.join("etc"), rootfs.join("etc")),
    ];
    for (i, (flags, from, to)) in copies.into_iter().enumerate() {
        if i == 1 {
            fs::remove_dir_all(&to).with_context(|| format!("cannot remove {}", to.display()))?;
        }
        let copy = Command::new("cp")
            .arg(flags)
            .arg(&from)
            .arg(&to)
            .output()
            .context("cannot run cp")?;
        if !copy.status.success() {
            bail!(
                "cp {flags} {} {} failed: {}",
                from.display(),
                to.display(),
                String::from_utf8_lossy(&copy.stderr)
            );
        }
    }
    let spec = rt.rt.run(&["spec", "--bundle", dir.to_str().unwrap()]);
    if !spec.status.success() {
        bail!(
            "gpu-youki spec failed: {}",
            String::from_utf8_lossy(&spec.stderr)
        );
    }
    let mut config: Value = serde_json::from_slice(&fs::read(dir.join("config.json"))?)?;
    config["process"]["terminal"] = json!(false);
    config["process"]["args"] = json!(["sh", "-c", script]);
    config["root"]["readonly"] = json!(false);
    config["linux"]["cgroupsPath"] = json!(bundle.cgroup);
    // Deny every device but those allowed after, as runc's `spec` and every engine write it.
    config["linux"]["resources"]["devices"] = json!([{"allow": false, "access": "rwm"}]);
    let env_list = config["process"]["env"]
        .as_array_mut()
        .context("spec without process.env")?;
    env_list.extend(env.iter().map(|e| json!(e)));
    bundle.config = config;
    bundle.save()?;
    Ok(bundle)
}

/// What a container printed: `== name` sections, each followed by the probe's output and a
/// final `rc=N` line (see [`script`]).
#[derive(Debug)]
pub struct Report {
    pub sections: BTreeMap<String, (String, i32)>,
    pub raw: String,
}

impl Report {
    pub fn parse(stdout: &[u8]) -> Report {
        let raw = String::from_utf8_lossy(stdout).into_owned();
        let mut sections = BTreeMap::new();
        let mut current: Option<(String, Vec<&str>)> = None;
        let mut finish = |current: Option<(String, Vec<&str>)>| {
            if let Some((name, mut lines)) = current {
                let rc = lines
                    .pop()
                    .and_then(|l| l.strip_prefix("rc="))
                    .and_then(|rc| rc.parse().ok())
                    .unwrap_or(-1);
                sections.insert(name, (lines.join("\n"), rc));
            }
        };
        for line in raw.lines() {
            if let Some(name) = line.strip_prefix("== ") {
                finish(current.take());
                current = Some((name.to_string(), Vec::new()));
            } else if let Some((_, lines)) = current.as_mut() {
                lines.push(line);
            }
        }
        finish(current);
        Report { sections, raw }
    }

    /// A section's output; panics (with everything printed) if the container did not print it.
    pub fn out(&self, name: &str) -> &str {
        &self.section(name).0
    }

    /// A section's exit status.
    pub fn rc(&self, name: &str) -> i32 {
        self.section(name).1
    }

    /// A section's output lines.
    pub fn lines(&self, name: &str) -> Vec<&str> {
        self.out(name).lines().collect()
    }

    fn section(&self, name: &str) -> &(String, i32) {
        self.sections
            .get(name)
            .unwrap_or_else(|| panic!("no section {name:?} in the output:\n{}", self.raw))
    }

    /// The `key=value` lines of a section (the cuda-probe output).
    pub fn values(&self, name: &str) -> BTreeMap<String, String> {
        self.out(name)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The `/dev/nvidia*` names from the `devs` section of [`INSPECT`].
    pub fn nvidia_devices(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .lines("devs")
            .iter()
            .filter_map(|l| l.split_whitespace().next())
            .map(String::from)
            .collect();
        names.sort();
        names
    }

    /// Mount points of the `mountinfo` section whose source lies under `host_root`, with their
    /// per-mount options.
    pub fn mounts_from(&self, host_root: &Path) -> BTreeMap<String, String> {
        let prefix = path_in_filesystem(host_root);
        let prefix = prefix.to_string_lossy();
        self.lines("mountinfo")
            .iter()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                (fields.len() > 5 && fields[3].starts_with(&*prefix))
                    .then(|| (fields[4].to_string(), fields[5].to_string()))
            })
            .collect()
    }
}

/// `path` as mountinfo's fourth field names it: relative to the root of its filesystem.
pub fn path_in_filesystem(path: &Path) -> PathBuf {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let best = mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let point = Path::new(fields.get(4)?);
            let rest = path.strip_prefix(point).ok()?;
            Some((point.components().count(), Path::new(fields[3]).join(rest)))
        })
        .max_by_key(|(depth, _)| *depth);
    best.map_or_else(|| path.to_path_buf(), |(_, p)| p)
}

/// A shell script that prints each probe's output under `== name`, then `rc=<status>`.
pub fn script(probes: &[(&str, &str)]) -> String {
    probes
        .iter()
        .map(|(name, command)| format!("echo '== {name}'; {{ {command} ; }} 2>&1; echo \"rc=$?\""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The probes most GPU tests look at.
pub const INSPECT: &[(&str, &str)] = &[
    (
        "devs",
        "cd /dev && for f in nvidia*; do [ -e \"$f\" ] && echo \"$f $(stat -c '%F %t:%T' \"$f\")\"; done; cd /; true",
    ),
    ("probe", "cuda-probe"),
    ("smi", "nvidia-smi -L"),
    ("cache", "ldconfig -p"),
    ("procgpus", "ls -1 /proc/driver/nvidia/gpus"),
    ("params", "grep ModifyDeviceFiles /proc/driver/nvidia/params"),
    ("libs", "ls -1 /usr/lib/x86_64-linux-gnu /usr/lib64"),
    ("bins", "ls -1 /usr/bin | grep -i nv"),
    ("dropins", "ls -1 /etc/ld.so.conf.d"),
    ("mountinfo", "cat /proc/self/mountinfo"),
];

/// The [`INSPECT`] script.
pub fn inspect_script() -> String {
    script(INSPECT)
}

/// The target of the `ldconfig -p` line for `soname`, if the cache lists it.
pub fn cache_target(cache: &str, soname: &str) -> Option<String> {
    cache.lines().find_map(|line| {
        let line = line.trim();
        let (name, rest) = line.split_once(' ')?;
        (name == soname).then(|| rest.rsplit_once("=> ").map(|(_, t)| t.trim().to_string()))?
    })
}

/// A fingerprint of a directory tree: each path with its type, mode, owner and content hash
/// (file bytes, link target, device number), to compare a rootfs before and after.
pub fn tree_fingerprint(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let kind = meta.file_type();
            let detail = if kind.is_symlink() {
                format!("link {}", fs::read_link(&path).unwrap().display())
            } else if kind.is_dir() {
                stack.push(path.clone());
                "dir".to_string()
            } else if kind.is_file() {
                let mut hasher = DefaultHasher::new();
                fs::read(&path).unwrap().hash(&mut hasher);
                format!("file {} {:016x}", meta.len(), hasher.finish())
            } else if kind.is_char_device() || kind.is_block_device() {
                format!("dev {:x}", meta.rdev())
            } else {
                "other".to_string()
            };
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            out.insert(
                rel,
                format!(
                    "{detail} mode={:o} owner={}:{}",
                    meta.mode(),
                    meta.uid(),
                    meta.gid()
                ),
            );
        }
    }
    out
}

/// The paths whose fingerprint differs between `before` and `after`.
pub fn tree_diff(
    before: &BTreeMap<PathBuf, String>,
    after: &BTreeMap<PathBuf, String>,
) -> Vec<String> {
    let mut diff = Vec::new();
    for (path, b) in before {
        match after.get(path) {
            None => diff.push(format!("removed {}", path.display())),
            Some(a) if a != b => diff.push(format!("changed {}: {b} -> {a}", path.display())),
            _ => {}
        }
    }
    for path in after.keys().filter(|p| !before.contains_key(*p)) {
        diff.push(format!("added {}: {}", path.display(), after[path]));
    }
    diff
}

/// Puts a fake CUDA forward-compatibility libcuda into `rootfs`, as CUDA images ship it:
/// `/usr/local/cuda/compat/libcuda.so.<version>` (built by gcc from the fake driver's sources,
/// SONAME `libcuda.so.1`, marker `compat-<version>`, reporting CUDA `cuda_version`, working
/// with a kernel module of `kernel_version`) and its `libcuda.so.1` link. With `note_drivers`,
/// the library carries the `.note.cuda.fwd_compatibility` ELF note listing those branches.
pub fn add_compat_libcuda(
    rootfs: &Path,
    version: &str,
    kernel_version: &str,
    cuda_version: u32,
    note_drivers: Option<&[u32]>,
) -> Result<()> {
    let src = workspace_root().join("scripts/fake-driver.d");
    let dir = rootfs.join("usr/local/cuda/compat");
    fs::create_dir_all(&dir)?;
    let note = dir.join("note.c");
    // The note's JSON as `.byte`s, so no quoting survives two languages.
    let payload = note_drivers.map(|drivers| {
        let list: Vec<String> = drivers.iter().map(u32::to_string).collect();
        let json = format!(
            "{{\"format\":1,\"CUDA version\":\"13.1\",\"driver\":[{}]}}",
            list.join(",")
        );
        let bytes: Vec<String> = json.bytes().map(|b| b.to_string()).collect();
        bytes.join(",")
    });
    let note_source = match payload {
        Some(bytes) => format!(
            "__asm__(\".pushsection .note.cuda.fwd_compatibility,\\\"a\\\",@note\\n.balign 4\\n\
             .long 19\\n.long 2f - 1f\\n.long 1\\n.asciz \\\"NVIDIA Corporation\\\"\\n\
             .balign 4\\n1: .byte {bytes}\\n2: .balign 4\\n.popsection\\n\");\n"
        ),
        None => String::new(),
    };
    fs::write(&note, note_source)?;
    let output = dir.join(format!("libcuda.so.{version}"));
    let gcc = Command::new("gcc")
        .args(["-O2", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1"])
        .arg(format!("-I{}", src.display()))
        .arg(format!("-DFAKE_RM_VERSION=\"{kernel_version}\""))
        .arg(format!("-DFAKE_CUDA_VERSION={cuda_version}"))
        .arg(format!("-DFAKE_SONAME=\"compat-{version}\""))
        .args(["lib.c", "cuda.c", "common.c"].map(|f| src.join(f)))
        .arg(&note)
        .arg("-o")
        .arg(&output)
        .output()
        .context("cannot run gcc")?;
    fs::remove_file(&note)?;
    if !gcc.status.success() {
        bail!("gcc failed: {}", String::from_utf8_lossy(&gcc.stderr));
    }
    std::os::unix::fs::symlink(format!("libcuda.so.{version}"), dir.join("libcuda.so.1"))?;
    Ok(())
}
