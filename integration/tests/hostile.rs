//! Hostile images (shared/reference/nvidia-toolkit.md §7.1): images whose links point at host
//! paths, whose environment asks the loader to run their code, whose `ldconfig` is a trap, and
//! a second container racing the GPU stage through a shared volume. After each, a canary tree
//! on the host is unchanged, the host's mount table is the same, nothing from the image ran
//! with runtime privileges, and (where the layout has a confined reading) the container got a
//! working GPU, with its links read inside the root as the container itself reads them.
//!
//! The tests run one at a time: each compares the host's mount table before and after.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

use integration::bundle::{host_mount_points, unique, Bundle};
use integration::gpu::{
    fixtures, gpu_bundle, script, tree_diff, tree_fingerprint, GpuRuntime, Report,
};
use serde_json::json;

/// The marker of the fake driver's own libcuda.
const DRIVER_LIBCUDA: &str = "libcuda.so.1";

/// One test at a time, since each compares the host's whole mount table.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the GPU containers here run: the CUDA probe (libcuda through the ld cache) and the
/// device node of GPU 0. Nothing in it runs the image's `ldconfig`.
fn probe_script() -> String {
    script(&[
        ("probe", "cuda-probe"),
        ("dev", "stat -c '%F %t:%T' /dev/nvidia0"),
        ("firmware", "ls /lib/firmware/nvidia/*/"),
    ])
}

/// A host directory the hostile links point at: libraries, an `/etc` with a loader cache and
/// configuration, firmware and compat directories. Any change to it, or any mount on it, is
/// an escape.
struct Canary {
    dir: PathBuf,
    before: std::collections::BTreeMap<PathBuf, String>,
    mounts_before: Vec<String>,
}

impl Canary {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique("gy-canary"));
        for sub in ["lib", "etc/ld.so.conf.d", "firmware", "compat", "fw"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        fs::write(dir.join("lib/victim.so"), "host library\n").unwrap();
        fs::write(dir.join("etc/ld.so.cache"), "host cache\n").unwrap();
        fs::write(dir.join("etc/ld.so.conf"), "include host.conf\n").unwrap();
        fs::write(dir.join("etc/ld.so.conf.d/host.conf"), "/host/lib\n").unwrap();
        fs::write(dir.join("etc/passwd"), "root:x:0:0::/:/bin/sh\n").unwrap();
        let before = tree_fingerprint(&dir);
        Canary {
            dir,
            before,
            mounts_before: host_mount_points(),
        }
    }

    /// The canary's absolute host path joined with `rest`, as a link target string.
    fn path(&self, rest: &str) -> PathBuf {
        self.dir.join(rest)
    }

    /// The same place reached by a chain of `..` from deep inside the rootfs.
    fn dotdot(&self, rest: &str) -> PathBuf {
        Path::new(&"../".repeat(12)).join(self.dir.strip_prefix("/").unwrap().join(rest))
    }

    /// No file of the canary was created, changed or removed, nothing is mounted on it, and the
    /// host's mount table is as it was.
    fn assert_untouched(&self) {
        assert_eq!(
            tree_diff(&self.before, &tree_fingerprint(&self.dir)),
            Vec::<String>::new(),
            "a host file was touched"
        );
        let after = host_mount_points();
        assert_eq!(after, self.mounts_before, "the host's mount table changed");
    }
}

impl Drop for Canary {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A GPU bundle (GPU 0, compute and utility) running [`probe_script`] with `env` added.
fn hostile_bundle(rt: &GpuRuntime, env: &[&str]) -> Bundle {
    let mut all = vec!["NVIDIA_VISIBLE_DEVICES=0"];
    all.extend_from_slice(env);
    gpu_bundle(rt, &probe_script(), &all).unwrap()
}

fn rootfs(bundle: &Bundle) -> PathBuf {
    bundle.dir.join("rootfs")
}

/// Moves `path` of the rootfs to `target` read inside the rootfs (creating its parents), and
/// leaves at `path` a link with text `link`: the image works the same, but a runtime that
/// followed the link on the host would land in the canary.
fn move_behind_link(bundle: &Bundle, path: &str, target: &Path, link: &Path) {
    let root = rootfs(bundle);
    let inside = root.join(target.strip_prefix("/").unwrap());
    fs::create_dir_all(inside.parent().unwrap()).unwrap();
    fs::rename(root.join(path), &inside).unwrap();
    symlink(link, root.join(path)).unwrap();
}

/// Runs the bundle; it must succeed, with GPU 0's node and a working libcuda whose marker is
/// `marker` (the driver's, `libcuda.so.1`, unless a compat libcuda is expected).
fn run_with_gpu(rt: &GpuRuntime, bundle: &Bundle, marker: &str) -> Report {
    let report = rt.run_ok(bundle);
    assert_eq!(report.rc("probe"), 0, "{}", report.raw);
    assert_eq!(report.values("probe")["marker"], marker, "{}", report.raw);
    assert_eq!(report.out("dev"), "character special file c3:0");
    report
}

/// The library directory, `/etc`, and the firmware directory of a merged-/usr image as
/// absolute links and as `..` chains to the host canary: each has the confined reading the
/// container itself has, so the container starts with a working GPU and the canary is intact.
#[test]
fn directories_linked_to_host_paths_are_read_inside_the_root() {
    let _serial = serial();
    let f = fixtures();
    let rt = GpuRuntime::new(&f.fake2);
    type Place = (&'static str, &'static str);
    let places: [Place; 3] = [
        ("usr/lib/x86_64-linux-gnu", "lib"),
        ("etc", "etc"),
        ("usr/lib/firmware", "firmware"),
    ];
    for (path, canary_dir) in places {
        for dotdot in [false, true] {
            let canary = Canary::new();
            let bundle = hostile_bundle(&rt, &[]);
            if path == "usr/lib/firmware" {
                fs::create_dir_all(rootfs(&bundle).join(path)).unwrap();
            }
            let target = canary.path(canary_dir);
            let link = if dotdot {
                canary.dotdot(canary_dir)
            } else {
                target.clone()
            };
            move_behind_link(&bundle, path, &target, &link);
            let report = run_with_gpu(&rt, &bundle, DRIVER_LIBCUDA);
            if path == "usr/lib/firmware" {
                assert!(
                    report.out("firmware").contains("gsp_ga10x.bin"),
                    "{}",
                    report.raw
                );
            }
            canary.assert_untouched();
            rt.assert_clean(&bundle);
        }
    }
}

/// `/etc/ld.so.cache`, `/etc/ld.so.conf.d`, `/etc/ld.so.conf` and a driver library's mount
/// target as links to host files (absolute and `..` chains): the runtime replaces or creates
/// them inside the root, never writes through them.
#[test]
fn loader_files_linked_to_host_files_are_replaced_inside_the_root() {
    let _serial = serial();
    let f = fixtures();
    let rt = GpuRuntime::new(&f.fake2);
    let version = f.fake2.version().to_string();
    let library = format!("usr/lib/x86_64-linux-gnu/libcuda.so.{version}");
    let places: [(&str, &str); 4] = [
        ("etc/ld.so.cache", "etc/ld.so.cache"),
        ("etc/ld.so.conf.d", "etc/ld.so.conf.d"),
        ("etc/ld.so.conf", "etc/ld.so.conf"),
        (&library, "lib/victim.so"),
    ];
    for (path, canary_file) in places {
        for dotdot in [false, true] {
            let canary = Canary::new();
            let bundle = hostile_bundle(&rt, &[]);
            let at = rootfs(&bundle).join(path);
            if at.is_dir() {
                fs::remove_dir_all(&at).unwrap();
            } else if at.exists() {
                fs::remove_file(&at).unwrap();
            }
            let link = if dotdot {
                canary.dotdot(canary_file)
            } else {
                canary.path(canary_file)
            };
            symlink(&link, &at).unwrap();
            run_with_gpu(&rt, &bundle, DRIVER_LIBCUDA);
            canary.assert_untouched();
            rt.assert_clean(&bundle);
        }
    }
}

/// A link loop where the library directory should be has no confined reading: refused with
/// an error that says so, and nothing is left behind.
#[test]
fn a_link_loop_is_refused_with_a_clear_error() {
    let _serial = serial();
    let f = fixtures();
    let rt = GpuRuntime::new(&f.fake2);
    let canary = Canary::new();
    let bundle = hostile_bundle(&rt, &[]);
    let root = rootfs(&bundle);
    fs::remove_dir_all(root.join("usr/lib/x86_64-linux-gnu")).unwrap();
    symlink("loop-b", root.join("usr/lib/x86_64-linux-gnu")).unwrap();
    symlink("x86_64-linux-gnu", root.join("usr/lib/loop-b")).unwrap();
    let err = rt.run_err(&bundle);
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.contains("/usr/lib/x86_64-linux-gnu") && last.contains("symlink loop"),
        "{err}"
    );
    canary.assert_untouched();
    rt.assert_clean(&bundle);
}

/// Compiles the loader-hijack library: when loaded it records the program that loaded it in
/// `<dir>/ran-<pid>` (inside a container, that is the rootfs's copy of `dir`).
fn build_hijack_library(out: &Path, dir: &Path) {
    let source = out.with_extension("c");
    fs::write(
        &source,
        format!(
            r#"#include <stdio.h>
#include <unistd.h>
unsigned int la_version(unsigned int v) {{ return v; }}
__attribute__((constructor)) static void hijack(void) {{
    char path[4096], exe[4096] = "?";
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) exe[n] = 0;
    snprintf(path, sizeof path, "{dir}/ran-%d", (int)getpid());
    FILE *f = fopen(path, "w");
    if (f) {{ fputs(exe, f); fclose(f); }}
}}
"#,
            dir = dir.display()
        ),
    )
    .unwrap();
    let status = Command::new("gcc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(out)
        .arg(&source)
        .status()
        .expect("gcc is needed for this test");
    assert!(status.success());
}

/// `LD_PRELOAD`, `LD_AUDIT` and `LD_LIBRARY_PATH` in the image's environment name a library
/// that exists at the same path on the host: nothing the runtime runs on the host loads it
/// (the canary stays empty), while the container's own dynamic program does (proof that the
/// library works).
#[test]
fn loader_variables_in_the_image_never_reach_host_processes() {
    let _serial = serial();
    let f = fixtures();
    let rt = GpuRuntime::new(&f.fake2);
    let canary = Canary::new();
    let library = canary.path("lib/hijack.so");
    build_hijack_library(&library, &canary.path("lib"));
    let hijacked = tree_fingerprint(&canary.dir);
    let preload = format!("LD_PRELOAD={}", library.display());
    let audit = format!("LD_AUDIT={}", library.display());
    let path = format!("LD_LIBRARY_PATH={}", canary.path("lib").display());
    let bundle = hostile_bundle(&rt, &[&preload, &audit, &path]);
    let inside = rootfs(&bundle).join(canary.path("lib").strip_prefix("/").unwrap());
    fs::create_dir_all(&inside).unwrap();
    fs::copy(&library, inside.join("hijack.so")).unwrap();
    run_with_gpu(&rt, &bundle, DRIVER_LIBCUDA);
    let ran_inside: Vec<String> = fs::read_dir(&inside)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("ran-"))
        .map(|e| fs::read_to_string(e.path()).unwrap())
        .collect();
    assert!(
        ran_inside.iter().any(|exe| exe.ends_with("cuda-probe")),
        "the container's own program did not load the library: {ran_inside:?}"
    );
    assert_eq!(
        tree_diff(&hijacked, &tree_fingerprint(&canary.dir)),
        Vec::<String>::new(),
        "a host-side process loaded the image's library"
    );
    rt.assert_clean(&bundle);
}

/// An image whose `ldconfig` (every usual path) records that it ran: gpu-youki writes the
/// loader cache itself, so it never runs, and the GPU still works.
#[test]
fn the_images_ldconfig_never_runs() {
    let _serial = serial();
    let f = fixtures();
    let rt = GpuRuntime::new(&f.fake2);
    let canary = Canary::new();
    let bundle = hostile_bundle(&rt, &[]);
    let root = rootfs(&bundle);
    for path in ["usr/sbin/ldconfig", "usr/sbin/ldconfig.real"] {
        let at = root.join(path);
        let _ = fs::remove_file(&at);
        fs::write(
            &at,
            format!(
                "#!/bin/sh\necho \"$0 $*\" >> /ldconfig-ran\necho ran >> {}\n",
                canary.path("ldconfig-ran").display()
            ),
        )
        .unwrap();
        let mut perms = fs::metadata(&at).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        fs::set_permissions(&at, perms).unwrap();
    }
    run_with_gpu(&rt, &bundle, DRIVER_LIBCUDA);
    assert!(
        !root.join("ldconfig-ran").exists(),
        "the image's ldconfig ran"
    );
    canary.assert_untouched();
    rt.assert_clean(&bundle);
}

/// A second container flips a directory of a shared volume between a real directory and links
/// to the host canary (absolute and `..`) in a loop, while GPU containers that have the volume
/// on their firmware directory start: every start either works or fails cleanly, and nothing
/// outside the volume and the rootfs is touched.
#[test]
fn a_racing_container_cannot_redirect_the_gpu_stage() {
    let _serial = serial();
    let f = fixtures();
    let rt = GpuRuntime::new(&f.fake2);
    let canary = Canary::new();
    let volume = std::env::temp_dir().join(unique("gy-race-volume"));
    fs::create_dir_all(&volume).unwrap();
    let flips = format!(
        "while true; do rm -rf /v/nvidia; mkdir -p /v/nvidia; rm -rf /v/nvidia; \
         ln -s {abs} /v/nvidia; rm -f /v/nvidia; ln -s {dotdot} /v/nvidia; rm -f /v/nvidia; \
         done",
        abs = canary.path("fw").display(),
        dotdot = canary.dotdot("fw").display()
    );
    let mut flipper = Bundle::busybox(&rt.rt, &["sh", "-c", &flips]).unwrap();
    flipper.config["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({
            "destination": "/v", "type": "bind", "source": volume, "options": ["rbind", "rw"]
        }));
    flipper.save().unwrap();
    let flipper_id = unique("flipper");
    let _cleanup = rt.delete_on_drop(&flipper_id);
    rt.ok(&["run", "-d", "-b", flipper.path(), &flipper_id]);

    let (mut worked, mut refused) = (0, 0);
    let mut bundles = Vec::new();
    for _ in 0..8 {
        let mut bundle = hostile_bundle(&rt, &[]);
        bundle.config["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/usr/lib/firmware", "type": "bind", "source": volume,
            "options": ["rbind", "rw"]
        }));
        bundle.save().unwrap();
        let output = rt.run(&["run", "-b", bundle.path(), &unique("raced")]);
        if output.status.success() {
            worked += 1;
        } else {
            refused += 1;
            let err = stderr(&output);
            assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
            eprintln!("refused: {}", err.trim_end());
        }
        bundles.push(bundle);
    }
    rt.ok(&["kill", &flipper_id, "KILL"]);
    rt.wait_for(&flipper_id, "stopped");
    rt.ok(&["delete", &flipper_id]);
    for bundle in &bundles {
        rt.assert_clean(bundle);
    }
    eprintln!("raced starts: {worked} worked, {refused} refused cleanly");
    canary.assert_untouched();
    flipper.assert_clean(&rt.rt);
    let _ = fs::remove_dir_all(&volume);
}

/// CUDA's forward-compatibility directory as a link: to a host directory holding a newer
/// libcuda (never read from the host: the container gets the driver's libcuda), and to a
/// directory inside the image holding one (read inside the root: the container gets it).
#[test]
fn a_linked_compat_directory_is_read_inside_the_root() {
    let _serial = serial();
    let f = fixtures();
    let rt = GpuRuntime::new(&f.fake2);
    let host = f.fake2.version().to_string();
    for inside in [false, true] {
        let mut canary = Canary::new();
        let bundle = hostile_bundle(&rt, &[]);
        let root = rootfs(&bundle);
        integration::gpu::add_compat_libcuda(&root, "590.10.01", &host, 13010, None).unwrap();
        let compat = root.join("usr/local/cuda/compat");
        if inside {
            move_behind_link(
                &bundle,
                "usr/local/cuda/compat",
                &canary.path("compat"),
                &canary.path("compat"),
            );
        } else {
            // The newer libcuda is on the host, behind the image's link.
            fs::remove_dir_all(canary.path("compat")).unwrap();
            fs::rename(&compat, canary.path("compat")).unwrap();
            symlink(canary.path("compat"), &compat).unwrap();
            canary.before = tree_fingerprint(&canary.dir);
        }
        let marker = if inside {
            "compat-590.10.01"
        } else {
            DRIVER_LIBCUDA
        };
        let report = run_with_gpu(&rt, &bundle, marker);
        let probe = report.values("probe");
        if !inside {
            assert!(
                probe["libcuda_file"].ends_with(&format!("libcuda.so.{host}")),
                "{}",
                report.raw
            );
        }
        canary.assert_untouched();
        rt.assert_clean(&bundle);
    }
}
