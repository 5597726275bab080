//! Faults injected at each step of a GPU container's `create`: an error, a SIGKILL of the
//! runtime, a full state disk, a driver file that vanishes between inventory and mount. After
//! each, `delete --force` succeeds and nothing remains: the host's mount table is as before, no
//! cgroup directory of the container, nothing in the state root (state directory, shadow
//! bundle, rootfs overlay, lock file), no process of the container, and nothing in the rootfs
//! that a successful create would not have put there (no temporary file); then the same id is
//! created and run successfully.
//!
//! The fault points exist only in `target/release/gpu-youki-faults`, a build with the
//! `fault-injection` feature that `scripts/test` makes (runtime/src/fault.rs); the release
//! binary has none, which a test here checks too. The tests run one at a time: each compares
//! the host's mount table before and after.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

use integration::bundle::{host_mount_points, processes_with_root, runtime_binary, unique, Bundle};
use integration::engines::workspace_root;
use integration::gpu::{fixtures, gpu_bundle, script, tree_fingerprint, GpuRuntime, Report};
use serde_json::json;

/// The variable that selects a fault: `<point>[:fail|kill|remove=<path>]`.
const FAULT_ENV: &str = "GPU_YOUKI_FAULT";

/// Every fault point of `create`, in the order a GPU container passes them (the
/// `fault::point` calls in runtime/src; [`every_fault_point_is_tested`] keeps the two equal).
const POINTS: &[&str] = &[
    "request",
    "inventory",
    "plan",
    "rootfs-overlay",
    "edit-spec",
    "prepare-rootfs",
    "dev-char-links",
    "shadow-bundle",
    "libcontainer-create",
    "created",
    "mount",
    "state-save",
];

/// The directory of the fake driver's libraries, relative to its root.
const DRIVER_LIBRARY_DIR: &str = "usr/lib/x86_64-linux-gnu";

/// One test at a time, since each compares the host's mount table.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The build of gpu-youki with fault points; missing, the tests fail with how to build it.
fn faults_binary() -> PathBuf {
    let bin = workspace_root().join("target/release/gpu-youki-faults");
    assert!(
        bin.exists(),
        "{} is missing: build it as scripts/test does, with `cargo build --release -p \
         gpu-youki --features fault-injection && cp target/release/gpu-youki {0}` and then \
         `cargo build --release -p gpu-youki` again (the release binary has no fault points)",
        bin.display()
    );
    bin
}

/// A runtime pointed at the driver of `config` that runs the fault-injection build.
fn faults_runtime(config: PathBuf) -> GpuRuntime {
    let mut rt = GpuRuntime::with_config(config);
    rt.rt.bin = faults_binary();
    rt
}

/// A GPU bundle (GPU 0, default capabilities) whose process runs the CUDA probe.
fn probe_bundle(rt: &GpuRuntime) -> Bundle {
    gpu_bundle(
        rt,
        &script(&[("probe", "cuda-probe")]),
        &["NVIDIA_VISIBLE_DEVICES=0"],
    )
    .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `create` of container `id` with `fault` set.
fn create_with_fault(rt: &mut GpuRuntime, bundle: &Bundle, id: &str, fault: &str) -> Output {
    rt.rt
        .env
        .push((FAULT_ENV.to_string(), PathBuf::from(fault)));
    let output = rt.run(&["create", "--bundle", bundle.path(), id]);
    rt.rt.env.pop();
    output
}

/// What the host and the rootfs looked like before a faulty create, and what a create may
/// change in the rootfs.
struct Baseline {
    mounts: Vec<String>,
    /// The rootfs as the container sees it, and its entries.
    rootfs: PathBuf,
    files: BTreeMap<PathBuf, String>,
    placed: BTreeMap<PathBuf, String>,
}

/// The host's mount points, less the rootfs mounts of other containers (`…/rootfs` outside
/// `bundle`) that engines started by other tests, or test runs, make and remove meanwhile.
fn host_mounts(bundle: &Bundle) -> Vec<String> {
    host_mount_points()
        .into_iter()
        .filter(|point| !point.ends_with("/rootfs") || Path::new(point).starts_with(&bundle.dir))
        .collect()
}

impl Baseline {
    /// Now, for `bundle` whose rootfs (as the container sees it) is `rootfs`, into which a
    /// successful create writes `placed` (see [`placed_by_a_create`]).
    fn take(bundle: &Bundle, rootfs: &Path, placed: &BTreeMap<PathBuf, String>) -> Self {
        Baseline {
            mounts: host_mounts(bundle),
            rootfs: rootfs.to_path_buf(),
            files: tree_fingerprint(rootfs),
            placed: placed.clone(),
        }
    }

    /// The rootfs entries changed or added since the baseline.
    fn rootfs_changes(&self) -> BTreeMap<PathBuf, String> {
        tree_fingerprint(&self.rootfs)
            .into_iter()
            .filter(|(path, entry)| self.files.get(path) != Some(entry))
            .collect()
    }
}

/// What a successful create (and run) of a [`probe_bundle`] changes in its rootfs: the loader
/// cache and drop-in, links and mount targets, from a fresh bundle run once.
fn placed_by_a_create(rt: &GpuRuntime) -> BTreeMap<PathBuf, String> {
    let bundle = probe_bundle(rt);
    let rootfs = bundle.dir.join("rootfs");
    let before = tree_fingerprint(&rootfs);
    let output = rt.run(&["run", "--bundle", bundle.path(), &unique("reference")]);
    assert!(
        output.status.success(),
        "a create without a fault failed: {}",
        stderr(&output)
    );
    let placed: BTreeMap<PathBuf, String> = tree_fingerprint(&rootfs)
        .into_iter()
        .filter(|(path, entry)| before.get(path) != Some(entry))
        .collect();
    assert!(
        !placed.is_empty(),
        "a GPU create placed nothing in the rootfs"
    );
    placed
}

/// Whether process `pid` runs (exists and is no zombie).
fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
        !matches!(state, Some(Some('Z' | 'X')))
    })
}

/// The pid of container `id`'s init as its state records it, once libcontainer forked it.
fn init_pid(rt: &GpuRuntime, id: &str) -> Option<i32> {
    let text = fs::read(rt.rt.root.join(id).join("state.json")).ok()?;
    let state: serde_json::Value = serde_json::from_slice(&text).ok()?;
    state["pid"].as_i64().map(|pid| pid as i32)
}

/// Panics unless nothing of the container remains: the host's mount table is as at the
/// baseline, no cgroup directory, nothing in the state root, no process with the rootfs as its
/// root, its `init` (if it had one) gone, and nothing in the rootfs that a successful create
/// would not place there (no temporary or half-written file).
fn assert_nothing_left(
    rt: &GpuRuntime,
    bundle: &Bundle,
    baseline: &Baseline,
    init: Option<i32>,
    what: &str,
) {
    assert_eq!(
        host_mounts(bundle),
        baseline.mounts,
        "{what}: the host's mount table changed"
    );
    assert_eq!(
        bundle.cgroup_dirs(),
        Vec::<PathBuf>::new(),
        "{what}: cgroup directories left behind"
    );
    assert_eq!(
        rt.rt.state_root_entries(),
        Vec::<PathBuf>::new(),
        "{what}: state left in the state root"
    );
    assert_eq!(
        processes_with_root(&baseline.rootfs),
        Vec::<i32>::new(),
        "{what}: processes of the container left"
    );
    if let Some(pid) = init {
        assert!(!alive(pid), "{what}: the container's init {pid} still runs");
    }
    let foreign: Vec<String> = baseline
        .rootfs_changes()
        .into_iter()
        .filter(|(path, entry)| baseline.placed.get(path) != Some(entry))
        .map(|(path, entry)| format!("{}: {entry}", path.display()))
        .collect();
    assert_eq!(
        foreign,
        Vec::<String>::new(),
        "{what}: files in the rootfs that a create does not place"
    );
}

/// Creates and runs container `id` from `bundle` without a fault: it must work, leave nothing
/// behind, and leave the rootfs exactly as a create from a fresh one does.
fn assert_runs_after(rt: &GpuRuntime, bundle: &Bundle, baseline: &Baseline, id: &str, what: &str) {
    let output = rt.run(&["run", "--bundle", bundle.path(), id]);
    let report = Report::parse(&output.stdout);
    assert!(
        output.status.success(),
        "{what}: the same id then failed to run ({}): {}\n{}",
        output.status,
        stderr(&output),
        report.raw
    );
    assert_eq!(report.rc("probe"), 0, "{what}: {}", report.raw);
    assert_eq!(
        report.values("probe")["marker"],
        "libcuda.so.1",
        "{what}: {}",
        report.raw
    );
    assert_nothing_left(rt, bundle, baseline, None, what);
    assert_eq!(
        baseline.rootfs_changes(),
        baseline.placed,
        "{what}: the rootfs differs from one a single create made"
    );
}

/// After a create of `id` that failed: `delete --force` succeeds and leaves nothing (see
/// [`assert_nothing_left`]); then, once `restore` has undone the fault, the same id runs.
fn recover(
    rt: &GpuRuntime,
    bundle: &Bundle,
    baseline: &Baseline,
    id: &str,
    init: Option<i32>,
    restore: impl FnOnce(),
    what: &str,
) {
    let delete = rt.run(&["delete", "--force", id]);
    assert!(
        delete.status.success(),
        "{what}: delete --force failed: {}",
        stderr(&delete)
    );
    assert_nothing_left(rt, bundle, baseline, init, what);
    restore();
    assert_runs_after(rt, bundle, baseline, id, what);
}

/// Injects `action` at `point` in a create from `bundle` (whose rootfs, as the container
/// sees it, is `rootfs`, into which a create writes `placed`), checks that create failed
/// because of it (an error naming the point, or death by SIGKILL), that `delete --force`
/// succeeds and leaves nothing, and that the same id then runs.
fn fault_then_recover(
    rt: &mut GpuRuntime,
    bundle: &Bundle,
    rootfs: &Path,
    placed: &BTreeMap<PathBuf, String>,
    point: &str,
    action: &str,
) {
    let what = format!("{point}:{action}");
    let baseline = Baseline::take(bundle, rootfs, placed);
    let id = unique("fault");
    let output = create_with_fault(rt, bundle, &id, &what);
    let rt = &*rt;
    let _delete = rt.delete_on_drop(&id);
    let init = init_pid(rt, &id);
    match action {
        "fail" => {
            assert!(!output.status.success(), "{what}: create succeeded");
            assert!(
                stderr(&output).contains(&format!("injected fault at {point}")),
                "{what}: create failed, but not at the fault: {}",
                stderr(&output)
            );
        }
        "kill" => {
            assert_eq!(
                output.status.signal(),
                Some(libc::SIGKILL),
                "{what}: the runtime was not killed ({}): {}",
                output.status,
                stderr(&output)
            );
            // Once libcontainer has forked it, the init waits for `start`, and the check
            // for leftover processes must find it (or it could not find one after delete).
            if matches!(point, "created" | "mount" | "state-save") {
                let pid = init.unwrap_or_else(|| panic!("{what}: no init pid in the state"));
                assert!(alive(pid), "{what}: the init {pid} is not waiting");
                let overlay = rt.rt.root.join(format!(".rootfs-{id}/merged"));
                assert!(
                    processes_with_root(rootfs)
                        .into_iter()
                        .chain(processes_with_root(&overlay))
                        .any(|p| p == pid),
                    "{what}: the init {pid} was not found by its root"
                );
            }
        }
        _ => unreachable!("action {action}"),
    }
    recover(rt, bundle, &baseline, &id, init, || {}, &what);
}

/// An error at each step of create: the create fails naming the step, and nothing remains.
#[test]
fn an_error_at_each_step_of_create_leaves_nothing() {
    every_point("fail");
}

/// `action` at every point in turn, each on a fresh bundle.
fn every_point(action: &str) {
    let _serial = serial();
    let mut rt = faults_runtime(fixtures().fake2.config());
    let placed = placed_by_a_create(&rt);
    for point in POINTS {
        let bundle = probe_bundle(&rt);
        let rootfs = bundle.dir.join("rootfs");
        fault_then_recover(&mut rt, &bundle, &rootfs, &placed, point, action);
    }
}

/// The runtime SIGKILLed at each step of create (after libcontainer's create, its init is left
/// waiting for `start`): `delete --force` kills that init and removes its cgroup, state, shadow
/// bundle and lock file.
#[test]
fn a_sigkill_at_each_step_of_create_leaves_nothing() {
    every_point("kill");
}

/// A directory mounted on for the length of a test, unmounted and removed when dropped.
struct MountGuard(PathBuf);

impl MountGuard {
    fn new(dir: PathBuf, args: &[&str]) -> Self {
        fs::create_dir_all(&dir).unwrap();
        let status = Command::new("mount").args(args).arg(&dir).status().unwrap();
        assert!(status.success(), "mount {args:?} {}", dir.display());
        MountGuard(dir)
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = fs::remove_dir(&self.0);
    }
}

/// A rootfs on a read-only filesystem gets a writable overlay in the state root: faults before
/// and after it is mounted, and a SIGKILL with the container created on it, leave no overlay
/// mounted or in the state root, and the image untouched.
#[test]
fn faults_with_a_rootfs_overlay_leave_nothing() {
    let _serial = serial();
    let mut rt = faults_runtime(fixtures().fake2.config());
    for (point, action) in [
        ("rootfs-overlay", "fail"),
        ("prepare-rootfs", "fail"),
        ("created", "kill"),
        ("state-save", "fail"),
    ] {
        let mut bundle = probe_bundle(&rt);
        let image = bundle.dir.join("rootfs");
        let read_only = bundle.dir.join("rootfs-ro");
        let ro = read_only.to_str().unwrap().to_string();
        let _bind = MountGuard::new(read_only.clone(), &["--bind", image.to_str().unwrap()]);
        let status = Command::new("mount")
            .args(["-o", "remount,bind,ro", &ro])
            .status()
            .unwrap();
        assert!(status.success(), "remount {ro} read-only");
        bundle.config["root"]["path"] = json!(ro);
        bundle.save().unwrap();
        // The image stays as it was: everything is written to the overlay.
        fault_then_recover(
            &mut rt,
            &bundle,
            &read_only,
            &BTreeMap::new(),
            point,
            action,
        );
    }
}

/// The state root on a full filesystem: create fails naming the file it could not write, and
/// `delete --force` leaves nothing; with space again, the same id runs.
#[test]
fn a_full_state_disk_fails_naming_the_file() {
    let _serial = serial();
    let tmpfs = MountGuard::new(
        PathBuf::from("/run/gpu-youki-tests").join(unique("full")),
        &["-t", "tmpfs", "-o", "size=256k", "tmpfs"],
    );
    let placed = placed_by_a_create(&GpuRuntime::new(&fixtures().fake2));
    let mut rt = GpuRuntime::new(&fixtures().fake2);
    rt.rt.root = tmpfs.0.join("root");
    fs::create_dir_all(&rt.rt.root).unwrap();
    let bundle = probe_bundle(&rt);
    let rootfs = bundle.dir.join("rootfs");
    let id = unique("full");
    let shadow = rt.rt.root.join(format!(".bundle-{id}/config.json"));
    let named = format!("cannot write {}", shadow.display());
    create_on_a_full_disk(
        &rt,
        &bundle,
        &rootfs,
        &placed,
        &tmpfs.0, // filled beside the state root
        &id,
        &named,
        "full disk",
    );
}

/// The rootfs on a full filesystem: create fails naming the file it could not write there,
/// leaves no temporary file in the rootfs, and `delete --force` leaves nothing; with space
/// again, the same id runs.
#[test]
fn a_full_rootfs_disk_fails_naming_the_file() {
    let _serial = serial();
    let rt = GpuRuntime::new(&fixtures().fake2);
    let placed = placed_by_a_create(&rt);
    let mut bundle = probe_bundle(&rt);
    let tmpfs = MountGuard::new(
        bundle.dir.join("rootfs-small"),
        &["-t", "tmpfs", "-o", "size=16m", "tmpfs"],
    );
    let rootfs = tmpfs.0.join("rootfs");
    let copy = Command::new("cp")
        .arg("-a")
        .arg(bundle.dir.join("rootfs"))
        .arg(&rootfs)
        .status()
        .unwrap();
    assert!(copy.success(), "cp -a rootfs");
    bundle.config["root"]["path"] = json!(rootfs);
    bundle.save().unwrap();
    let id = unique("full-rootfs");
    let named = format!("in {}", rootfs.display());
    create_on_a_full_disk(
        &rt,
        &bundle,
        &rootfs,
        &placed,
        &tmpfs.0,
        &id,
        &named,
        "full rootfs",
    );
}

/// Fills the filesystem mounted at `mount`, then creates `id`: the create must fail with
/// ENOSPC and an error containing `named`; then frees the space and checks the recovery.
#[allow(clippy::too_many_arguments)]
fn create_on_a_full_disk(
    rt: &GpuRuntime,
    bundle: &Bundle,
    rootfs: &Path,
    placed: &BTreeMap<PathBuf, String>,
    mount: &Path,
    id: &str,
    named: &str,
    what: &str,
) {
    let filler = mount.join("filler");
    fill(&filler);
    let baseline = Baseline::take(bundle, rootfs, placed);
    let output = rt.run(&["create", "--bundle", bundle.path(), id]);
    let _delete = rt.delete_on_drop(id);
    assert!(!output.status.success(), "create succeeded on a {what}");
    assert!(
        stderr(&output).contains(named) && stderr(&output).contains("No space left on device"),
        "create on a {what} did not name the file: {}",
        stderr(&output)
    );
    let free = || fs::remove_file(&filler).unwrap();
    recover(rt, bundle, &baseline, id, None, free, what);
}

/// Fills the filesystem of `path` with a file there.
fn fill(path: &Path) {
    let mut file = fs::File::create(path).unwrap();
    let chunk = vec![0u8; 4096];
    while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
}

/// A driver file removed after the inventory was read (right after, and after libcontainer's
/// create, just before the mounts): create fails naming the file (it cannot be bound), and
/// nothing remains; with the file back, the same id runs. Failing is right: a driver changing
/// under a create is an upgrade in progress, and a container without one of its files would
/// fail later and less clearly.
#[test]
fn a_driver_file_vanishing_before_the_mount_fails_naming_it() {
    let _serial = serial();
    let fake2 = &fixtures().fake2;
    // A private copy of the driver, since a file of it is removed.
    let driver = std::env::temp_dir().join(unique("gpu-youki-driver"));
    let copy = Command::new("cp")
        .arg("-a")
        .arg(&fake2.root)
        .arg(&driver)
        .status()
        .unwrap();
    assert!(copy.success(), "cp -a {}", fake2.root.display());
    let config = driver.join("config.toml");
    let text = fs::read_to_string(fake2.config()).unwrap();
    fs::write(
        &config,
        text.replace(fake2.root.to_str().unwrap(), driver.to_str().unwrap()),
    )
    .unwrap();
    // NVML, which the default capabilities (utility) bind into the container.
    let library =
        Path::new(DRIVER_LIBRARY_DIR).join(format!("libnvidia-ml.so.{}", fake2.version()));
    let victim = driver.join(&library);
    let mut rt = faults_runtime(config);
    let placed = placed_by_a_create(&rt);
    for point in ["inventory", "created"] {
        let what = format!("{point}: {} removed", victim.display());
        let bundle = probe_bundle(&rt);
        let rootfs = bundle.dir.join("rootfs");
        let baseline = Baseline::take(&bundle, &rootfs, &placed);
        let id = unique("vanish");
        let fault = format!("{point}:remove={}", victim.display());
        let output = create_with_fault(&mut rt, &bundle, &id, &fault);
        let _delete = rt.delete_on_drop(&id);
        assert!(!output.status.success(), "{what}: create succeeded");
        assert!(!victim.exists(), "{what}: the fault did not remove it");
        assert!(
            stderr(&output).contains(victim.to_str().unwrap()),
            "{what}: the error does not name the file: {}",
            stderr(&output)
        );
        let put_back = || {
            fs::copy(fake2.root.join(&library), &victim).unwrap();
        };
        recover(&rt, &bundle, &baseline, &id, None, put_back, &what);
    }
    drop(rt);
    fs::remove_dir_all(&driver).unwrap();
}

/// The release binary has no fault points: it does not contain the variable's name (the
/// fault-injection build does, so the check can fail), and with a fault set, create succeeds.
#[test]
fn the_release_binary_has_no_fault_points() {
    let _serial = serial();
    let contains = |bin: &Path| {
        let bytes = fs::read(bin).unwrap();
        bytes
            .windows(FAULT_ENV.len())
            .any(|w| w == FAULT_ENV.as_bytes())
    };
    assert!(
        contains(&faults_binary()),
        "the fault build lacks {FAULT_ENV}"
    );
    assert!(
        !contains(&runtime_binary()),
        "{} mentions {FAULT_ENV}: it was built with the fault-injection feature",
        runtime_binary().display()
    );
    let mut rt = GpuRuntime::new(&fixtures().fake2);
    let bundle = probe_bundle(&rt);
    let id = unique("release");
    let output = create_with_fault(&mut rt, &bundle, &id, "plan");
    assert!(
        output.status.success(),
        "create with {FAULT_ENV} set failed: {}",
        stderr(&output)
    );
    rt.ok(&["delete", "--force", &id]);
    rt.assert_clean(&bundle);
}

/// The fault points this file injects at are all the `fault::point` calls in runtime/src.
#[test]
fn every_fault_point_is_tested() {
    let mut found = Vec::new();
    let mut dirs = vec![workspace_root().join("runtime/src")];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = fs::read_to_string(&path).unwrap();
                for call in text.split("fault::point(\"").skip(1) {
                    found.push(call.split('"').next().unwrap().to_string());
                }
            }
        }
    }
    found.sort();
    let mut tested: Vec<String> = POINTS.iter().map(|p| p.to_string()).collect();
    tested.sort();
    assert_eq!(found, tested, "fault points in runtime/src vs. POINTS here");
}
