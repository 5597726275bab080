//! GPU containers: real containers started with gpu-youki against the fake NVIDIA driver
//! (`scripts/fake-driver`, 2 and 8 GPUs) on the glibc test rootfs (`scripts/test-rootfs`), with
//! every assertion made from inside the container (what it sees: device nodes, cuda-probe,
//! nvidia-smi, glibc's `ldconfig -p`, `/proc/driver/nvidia`, mount flags) or from the host
//! (device cgroup, strace, state, the rootfs and config.json), and nothing left behind.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use integration::bundle::{unique, Bundle};
use integration::gpu::{
    cache_target, fixtures, gpu_bundle, inspect_script, script, tree_diff, tree_fingerprint,
    FakeDriver, GpuRuntime, Report, CONFIG_ENV, INSPECT, LIB_DIR,
};
use serde_json::{json, Value};

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `check` for every case at once, each on its own thread (give each its own runtime, since
/// leak checks look at the whole state root); a failing case fails the test with its message.
fn in_parallel<T: Send>(cases: Vec<T>, check: impl Fn(T) + Sync) {
    std::thread::scope(|scope| {
        let handles: Vec<_> = cases
            .into_iter()
            .map(|case| scope.spawn(|| check(case)))
            .collect();
        for handle in handles {
            if let Err(panic) = handle.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
}

/// A GPU bundle running the [`INSPECT`] probes.
fn inspect_bundle(rt: &GpuRuntime, env: &[&str]) -> Bundle {
    gpu_bundle(rt, &inspect_script(), env).unwrap()
}

/// The `/dev` names a container granted `gpus` (GPU indices) and the control devices gets.
fn expected_devices(gpus: &[usize], uvm: bool, modeset: bool) -> Vec<String> {
    let mut names: Vec<String> = gpus.iter().map(|i| format!("nvidia{i}")).collect();
    names.push("nvidiactl".into());
    if uvm {
        names.push("nvidia-uvm".into());
        names.push("nvidia-uvm-tools".into());
    }
    if modeset {
        names.push("nvidia-modeset".into());
    }
    names.sort();
    names
}

/// Asserts the container saw exactly GPUs `gpus` of `driver`: nodes, proc view, cuda-probe,
/// nvidia-smi.
fn assert_sees_gpus(report: &Report, driver: &FakeDriver, gpus: &[usize]) {
    assert_eq!(
        report.nvidia_devices(),
        expected_devices(gpus, true, false),
        "{}",
        report.raw
    );
    let bus_ids: Vec<String> = gpus.iter().map(|&i| driver.bus_id(i)).collect();
    assert_eq!(report.lines("procgpus"), bus_ids, "{}", report.raw);
    let probe = report.values("probe");
    assert_eq!(report.rc("probe"), 0, "{}", report.raw);
    assert_eq!(probe["marker"], "libcuda.so.1");
    assert_eq!(probe["cuInit"], "0");
    assert_eq!(probe["device_count"], gpus.len().to_string());
    let smi = report.lines("smi");
    assert_eq!(smi.len(), gpus.len(), "{}", report.raw);
    for (line, &index) in smi.iter().zip(gpus) {
        assert!(
            line.contains(&format!("(UUID: {})", driver.uuid(index))),
            "nvidia-smi line {line:?} is not GPU {index}\n{}",
            report.raw
        );
    }
}

/// The rootfs of a bundle.
fn rootfs(bundle: &Bundle) -> PathBuf {
    bundle.dir.join("rootfs")
}

/// Creates the container with its stdout and stderr in files of the bundle directory.
fn create(rt: &GpuRuntime, bundle: &Bundle, id: &str) -> (PathBuf, PathBuf) {
    let out = bundle.dir.join(format!("{id}.out"));
    let err = bundle.dir.join(format!("{id}.err"));
    let status = rt
        .command(&["create", "--bundle", bundle.path(), id])
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "create failed ({status}): {}",
        fs::read_to_string(&err).unwrap_or_default()
    );
    (out, err)
}

/// Starts a created container, waits until it stopped, deletes it, and returns its output.
fn start_and_collect(rt: &GpuRuntime, id: &str, out: &Path) -> Report {
    rt.ok(&["start", id]);
    rt.wait_for(id, "stopped");
    rt.ok(&["delete", id]);
    Report::parse(&fs::read(out).unwrap())
}

#[test]
fn all_gpus_with_compute_and_utility() {
    let f = fixtures();
    let rt = GpuRuntime::new(&f.fake2);
    let lib = format!("{LIB_DIR}/libcuda.so.{}", f.fake2.version());
    let write_lib = format!("echo x > {lib}");
    let write_smi = "echo x > /usr/bin/nvidia-smi".to_string();
    let write_rootfs = format!("echo x > {LIB_DIR}/gpu-youki-write-test");
    let mut probes: Vec<(&str, &str)> = INSPECT.to_vec();
    probes.push(("write-lib", &write_lib));
    probes.push(("write-smi", &write_smi));
    probes.push(("write-rootfs", &write_rootfs));
    let bundle = gpu_bundle(
        &rt,
        &script(&probes),
        &[
            "NVIDIA_VISIBLE_DEVICES=all",
            "NVIDIA_DRIVER_CAPABILITIES=compute,utility",
        ],
    )
    .unwrap();
    let id = unique("all");
    let _guard = rt.delete_on_drop(&id);
    let (out, _) = create(&rt, &bundle, &id);

    // The device cgroup of the created container allows exactly the granted NVIDIA devices.
    let list = fs::read_to_string(format!(
        "/sys/fs/cgroup/devices{}/devices.list",
        bundle.cgroup
    ))
    .unwrap();
    let rules: Vec<&str> = list.lines().collect();
    for rule in [
        "c 195:0 rwm",
        "c 195:1 rwm",
        "c 195:255 rwm",
        "c 510:0 rwm",
        "c 510:1 rwm",
    ] {
        assert!(rules.contains(&rule), "{rule} missing from\n{list}");
    }
    assert!(
        !rules.contains(&"a *:* rwm"),
        "all devices allowed:\n{list}"
    );
    assert!(
        !rules.iter().any(|r| r.starts_with("c 195:254 ")),
        "modeset allowed:\n{list}"
    );

    let report = start_and_collect(&rt, &id, &out);
    assert_sees_gpus(&report, &f.fake2, &[0, 1]);
    let devs = report.lines("devs");
    for (name, numbers) in [
        ("nvidia0", "c3:0"),
        ("nvidia1", "c3:1"),
        ("nvidiactl", "c3:ff"),
        ("nvidia-uvm", "1fe:0"),
        ("nvidia-uvm-tools", "1fe:1"),
    ] {
        let line = format!("{name} character special file {numbers}");
        assert!(devs.contains(&line.as_str()), "{line:?} not in {devs:?}");
    }
    assert_eq!(report.rc("smi"), 0);
    let cache = report.out("cache");
    for soname in ["libcuda.so.1", "libnvidia-ml.so.1"] {
        assert_eq!(
            cache_target(cache, soname),
            Some(format!("{LIB_DIR}/{soname}")),
            "{cache}"
        );
    }
    assert_eq!(report.out("params"), "ModifyDeviceFiles: 0");
    assert!(report.lines("dropins").contains(&"00-gpu-youki.conf"));

    // The driver files are read-only, nosuid, nodev bind mounts; the rootfs itself is writable.
    assert_ne!(report.rc("write-lib"), 0, "{}", report.raw);
    assert!(report.out("write-lib").contains("Read-only file system"));
    assert_ne!(report.rc("write-smi"), 0, "{}", report.raw);
    assert_eq!(report.rc("write-rootfs"), 0, "{}", report.raw);
    let mounts = report.mounts_from(&f.fake2.root);
    for point in [
        lib.clone(),
        format!("{LIB_DIR}/libnvidia-ml.so.{}", f.fake2.version()),
        "/usr/bin/nvidia-smi".to_string(),
    ] {
        assert!(
            mounts.contains_key(&point),
            "{point} not mounted: {mounts:?}"
        );
    }
    for (point, options) in &mounts {
        if point.starts_with(LIB_DIR) || point.starts_with("/usr/bin/") {
            let options: Vec<&str> = options.split(',').collect();
            for flag in ["ro", "nosuid", "nodev"] {
                assert!(options.contains(&flag), "{point}: {options:?} lacks {flag}");
            }
        }
    }
    // Nothing of graphics, video or display.
    let libs = report.out("libs");
    assert!(!libs.contains("libGLX_nvidia"), "{libs}");
    assert!(!libs.contains("libnvcuvid"), "{libs}");
    // The host gets /dev/char links for the container's devices (systemd resolves rules by them).
    for (name, id) in [
        ("nvidia0", "195:0"),
        ("nvidiactl", "195:255"),
        ("nvidia-uvm", "510:0"),
    ] {
        let link = f.fake2.root.join("dev/char").join(id);
        assert_eq!(
            fs::read_link(&link).unwrap_or_default(),
            Path::new("..").join(name),
            "{}",
            link.display()
        );
    }
    rt.assert_clean(&bundle);
}

#[test]
fn devices_selected_by_index_uuid_bus_id_cdi_name_and_list() {
    let f = fixtures();
    let d = &f.fake8;
    let uuid3 = d.uuid(3);
    let upper5 = d.uuid(5).to_uppercase();
    let cases: Vec<(String, Vec<usize>)> = vec![
        ("1".into(), vec![1]),
        (uuid3, vec![3]),
        (upper5, vec![5]),
        (d.bus_id(1), vec![1]),
        ("00000000:16:00.0".into(), vec![2]),
        ("nvidia.com/gpu=2".into(), vec![2]),
        (format!("nvidia.com/gpu={}", d.uuid(4)), vec![4]),
        ("nvidia.com/gpu=all".into(), (0..8).collect()),
        ("6,1".into(), vec![1, 6]),
        ("all".into(), (0..8).collect()),
    ];
    in_parallel(cases, |(value, gpus)| {
        let rt = GpuRuntime::new(d);
        let env = format!("NVIDIA_VISIBLE_DEVICES={value}");
        let bundle = inspect_bundle(&rt, &[&env]);
        let report = rt.run_ok(&bundle);
        assert_sees_gpus(&report, d, &gpus);
        rt.assert_clean(&bundle);
    });
}

#[test]
fn none_gives_the_driver_without_gpus() {
    let f = fixtures();
    let rt = GpuRuntime::new(&f.fake8);
    let bundle = inspect_bundle(&rt, &["NVIDIA_VISIBLE_DEVICES=none"]);
    let report = rt.run_ok(&bundle);
    assert_eq!(
        report.nvidia_devices(),
        expected_devices(&[], true, false),
        "{}",
        report.raw
    );
    assert_eq!(report.out("smi"), "No devices found.");
    assert_eq!(report.rc("smi"), 6);
    // No GPU directory (the view may have no gpus/ at all), but the driver's files.
    assert!(!report.out("procgpus").contains("0000:"), "{}", report.raw);
    assert_eq!(report.out("params"), "ModifyDeviceFiles: 0");
    // The libraries are there (libcuda loads) but there is no GPU to initialise.
    let probe = report.values("probe");
    assert_eq!(probe["marker"], "libcuda.so.1", "{}", report.raw);
    assert_eq!(probe["cuInit"], "100", "{}", report.raw);
    assert_eq!(
        cache_target(report.out("cache"), "libnvidia-ml.so.1"),
        Some(format!("{LIB_DIR}/libnvidia-ml.so.1"))
    );
    rt.assert_clean(&bundle);
}

/// `void`, empty and unset `NVIDIA_VISIBLE_DEVICES` are no request: no NVIDIA file at all, the
/// spec and the rootfs untouched. The last case points `GPU_YOUKI_CONFIG` at a missing file:
/// no GPU code (not even the config loader) may run for a container without a request.
#[test]
fn no_request_leaves_spec_and_rootfs_untouched() {
    let f = fixtures();
    let missing = PathBuf::from("/nonexistent/gpu-youki/config.toml");
    let real = f.fake2.config();
    let cases: Vec<(&PathBuf, &[&str])> = vec![
        (
            &real,
            &[
                "NVIDIA_VISIBLE_DEVICES=void",
                "NVIDIA_DRIVER_CAPABILITIES=all",
            ],
        ),
        (&real, &["NVIDIA_VISIBLE_DEVICES="]),
        (&real, &["NVIDIA_DRIVER_CAPABILITIES=compute,utility"]),
        (&missing, &["NVIDIA_DRIVER_CAPABILITIES=all"]),
    ];
    in_parallel(cases, |(config, env)| {
        let rt = &GpuRuntime::with_config(config.clone());
        let bundle = inspect_bundle(rt, env);
        let config_before = fs::read(bundle.dir.join("config.json")).unwrap();
        let tree_before = tree_fingerprint(&rootfs(&bundle));
        let report = rt.run_ok(&bundle);
        assert_eq!(
            report.nvidia_devices(),
            Vec::<String>::new(),
            "{env:?}: {}",
            report.raw
        );
        assert!(!report.out("libs").contains("libcuda"), "{env:?}");
        assert!(!report.out("libs").contains("libnvidia"), "{env:?}");
        assert!(!report.out("bins").contains("nvidia-smi"), "{env:?}");
        assert_eq!(cache_target(report.out("cache"), "libcuda.so.1"), None);
        assert_eq!(report.mounts_from(&f.fake2.root), Default::default());
        assert!(!report.out("dropins").contains("gpu-youki"), "{env:?}");
        assert_ne!(report.rc("procgpus"), 0, "{env:?}: {}", report.raw);
        assert_eq!(report.values("probe")["libcuda"], "none");
        assert_eq!(
            fs::read(bundle.dir.join("config.json")).unwrap(),
            config_before,
            "{env:?}: config.json changed"
        );
        let diff = tree_diff(&tree_before, &tree_fingerprint(&rootfs(&bundle)));
        assert_eq!(diff, Vec::<String>::new(), "{env:?}: the rootfs changed");
        assert!(!rootfs(&bundle)
            .join("etc/ld.so.conf.d/00-gpu-youki.conf")
            .exists());
        rt.assert_clean(&bundle);
    });
}

#[test]
fn capabilities_select_libraries_binaries_and_devices() {
    let f = fixtures();
    struct Case {
        caps: &'static str,
        present: &'static [&'static str],
        absent: &'static [&'static str],
        bins: &'static [&'static str],
        no_bins: &'static [&'static str],
        uvm: bool,
        modeset: bool,
    }
    let cases = [
        Case {
            caps: "compute",
            present: &["libcuda.so.1", "libnvidia-ptxjitcompiler.so.1"],
            absent: &["libnvidia-ml.so.1", "libnvcuvid.so.1", "libGLX_nvidia.so.0"],
            bins: &["nvidia-cuda-mps-control"],
            no_bins: &["nvidia-smi"],
            uvm: true,
            modeset: false,
        },
        Case {
            caps: "utility",
            present: &["libnvidia-ml.so.1", "libnvidia-cfg.so.1"],
            absent: &["libcuda.so.1", "libcuda.so", "libnvcuvid.so.1"],
            bins: &["nvidia-smi"],
            no_bins: &["nvidia-cuda-mps-control"],
            uvm: false,
            modeset: false,
        },
        Case {
            caps: "video",
            present: &[
                "libnvcuvid.so.1",
                "libnvidia-encode.so.1",
                "libcuda.so.1",
                "libnvidia-opencl.so.1",
            ],
            absent: &["libnvidia-ml.so.1", "libGLX_nvidia.so.0"],
            bins: &[],
            no_bins: &["nvidia-smi", "nvidia-cuda-mps-control"],
            uvm: true,
            modeset: false,
        },
        Case {
            caps: "graphics,display",
            present: &[
                "libGLX_nvidia.so.0",
                "libEGL_nvidia.so.0",
                "libGLX_indirect.so.0",
            ],
            absent: &["libcuda.so.1", "libnvidia-ml.so.1", "libnvcuvid.so.1"],
            bins: &[],
            no_bins: &["nvidia-smi"],
            uvm: false,
            modeset: true,
        },
        Case {
            caps: "ngx",
            present: &["libnvidia-ngx.so.1"],
            absent: &["libcuda.so.1", "libnvidia-ml.so.1", "libGLX_nvidia.so.0"],
            bins: &[],
            no_bins: &["nvidia-smi"],
            uvm: false,
            modeset: false,
        },
        Case {
            caps: "all",
            present: &[
                "libcuda.so.1",
                "libnvidia-ml.so.1",
                "libnvcuvid.so.1",
                "libGLX_nvidia.so.0",
                "libnvidia-ngx.so.1",
            ],
            absent: &[],
            bins: &["nvidia-smi", "nvidia-cuda-mps-control"],
            no_bins: &[],
            uvm: true,
            modeset: true,
        },
    ];
    in_parallel(cases.into_iter().collect(), |case| {
        let rt = GpuRuntime::new(&f.fake2);
        let caps = format!("NVIDIA_DRIVER_CAPABILITIES={}", case.caps);
        let bundle = inspect_bundle(&rt, &["NVIDIA_VISIBLE_DEVICES=all", &caps]);
        let report = rt.run_ok(&bundle);
        let ctx = format!("{}:\n{}", case.caps, report.raw);
        assert_eq!(
            report.nvidia_devices(),
            expected_devices(&[0, 1], case.uvm, case.modeset),
            "{ctx}"
        );
        let cache = report.out("cache");
        for soname in case.present {
            assert_eq!(
                cache_target(cache, soname),
                Some(format!("{LIB_DIR}/{soname}")),
                "{soname} {ctx}"
            );
        }
        let libs = report.lines("libs");
        for soname in case.absent {
            assert_eq!(cache_target(cache, soname), None, "{soname} {ctx}");
            let file = format!("{}.so", soname.split(".so").next().unwrap());
            assert!(!libs.iter().any(|l| l.starts_with(&file)), "{file}* {ctx}");
        }
        let bins = report.lines("bins");
        for bin in case.bins {
            assert!(bins.contains(bin), "{bin} {ctx}");
        }
        for bin in case.no_bins {
            assert!(!bins.contains(bin), "{bin} {ctx}");
        }
        // What the capabilities mean to the programs.
        let compute = case.present.contains(&"libcuda.so.1");
        let probe = report.values("probe");
        if compute {
            assert_eq!(report.rc("probe"), 0, "{ctx}");
            assert_eq!(probe["device_count"], "2", "{ctx}");
        } else {
            assert_eq!(report.rc("probe"), 2, "{ctx}");
            assert_eq!(probe["libcuda"], "none", "{ctx}");
        }
        if case.bins.contains(&"nvidia-smi") {
            assert_eq!(report.rc("smi"), 0, "{ctx}");
            assert_eq!(report.lines("smi").len(), 2, "{ctx}");
        }
        rt.assert_clean(&bundle);
    });
}

/// Bad requests fail `create` with one line naming the variable and the value, before anything
/// is made: no state, cgroup, mount or shadow bundle, config.json and the rootfs untouched.
#[test]
fn bad_requests_fail_with_one_line_and_leave_nothing() {
    let f = fixtures();
    let rt = GpuRuntime::new(&f.fake2);
    let mut bundle = gpu_bundle(&rt, "true", &[]).unwrap();
    let tree_before = tree_fingerprint(&rootfs(&bundle));
    let base_env = bundle.config["process"]["env"].clone();
    let huge_token = format!("NVIDIA_VISIBLE_DEVICES={}", "x".repeat(100_000));
    let huge_list = format!(
        "NVIDIA_DRIVER_CAPABILITIES={}bogus",
        "compute,".repeat(20_000)
    );
    let cases: [(&[&str], &[&str]); 15] = [
        (
            &[&huge_token],
            &["NVIDIA_VISIBLE_DEVICES=", "(100000 bytes)"],
        ),
        (
            &["NVIDIA_VISIBLE_DEVICES=all", &huge_list],
            &["NVIDIA_DRIVER_CAPABILITIES=", "bytes)"],
        ),
        (
            &["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_VISIBLE_DEVICES=1"],
            &["NVIDIA_VISIBLE_DEVICES is set twice", "\"0\" and \"1\""],
        ),
        (
            &[
                "NVIDIA_VISIBLE_DEVICES=all",
                "NVIDIA_VISIBLE_DEVICES=all\nx",
            ],
            &["NVIDIA_VISIBLE_DEVICES is set twice", "\"all\\nx\""],
        ),
        (
            &["NVIDIA_VISIBLE_DEVICES=0\u{e9}"],
            &["NVIDIA_VISIBLE_DEVICES=\"0\u{e9}\""],
        ),
        (
            &["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_IMEX_CHANNELS=abc"],
            &["NVIDIA_IMEX_CHANNELS=\"abc\""],
        ),
        (
            &[
                "NVIDIA_VISIBLE_DEVICES=all",
                "NVIDIA_IMEX_CHANNELS=99999999",
            ],
            &["NVIDIA_IMEX_CHANNELS=\"99999999\"", "0 to 1048575"],
        ),
        (
            &["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_MIG_CONFIG_DEVICES=0"],
            &["NVIDIA_MIG_CONFIG_DEVICES=\"0\"", "only \"all\""],
        ),
        (
            &["NVIDIA_VISIBLE_DEVICES=all", "CUDA_VERSION=12.x"],
            &["CUDA_VERSION=\"12.x\""],
        ),
        (
            &["NVIDIA_VISIBLE_DEVICES=7"],
            &["NVIDIA_VISIBLE_DEVICES", "index 7"],
        ),
        (
            &["NVIDIA_VISIBLE_DEVICES=GPU-00000000-1111-2222-3333-444444444444"],
            &[
                "NVIDIA_VISIBLE_DEVICES",
                "GPU-00000000-1111-2222-3333-444444444444",
            ],
        ),
        (
            &["NVIDIA_VISIBLE_DEVICES=gpu0"],
            &["NVIDIA_VISIBLE_DEVICES=\"gpu0\""],
        ),
        (
            &[
                "NVIDIA_VISIBLE_DEVICES=all",
                "NVIDIA_DRIVER_CAPABILITIES=compute,bogus",
            ],
            &["NVIDIA_DRIVER_CAPABILITIES=\"compute,bogus\"", "bogus"],
        ),
        (
            &["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_REQUIRE_CUDA=cuda>>12"],
            &["NVIDIA_REQUIRE_CUDA=\"cuda>>12\""],
        ),
        (
            &["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_DISABLE_REQUIRE=maybe"],
            &["NVIDIA_DISABLE_REQUIRE=\"maybe\""],
        ),
    ];
    for (env, expected) in cases {
        let mut env_list = base_env.clone();
        env_list
            .as_array_mut()
            .unwrap()
            .extend(env.iter().map(|e| json!(e)));
        bundle.config["process"]["env"] = env_list;
        bundle.save().unwrap();
        let config_before = fs::read(bundle.dir.join("config.json")).unwrap();
        let id = unique("bad");
        let _guard = rt.delete_on_drop(&id);
        let output = rt.run(&["create", "-b", bundle.path(), &id]);
        assert!(!output.status.success(), "{env:?} was accepted");
        let err = stderr(&output);
        assert_eq!(err.lines().count(), 1, "{env:?}: {err}");
        for text in expected {
            assert!(err.contains(text), "{env:?}: {text:?} not in {err}");
        }
        assert!(!rt.run(&["state", &id]).status.success());
        rt.assert_clean(&bundle);
        assert_eq!(
            fs::read(bundle.dir.join("config.json")).unwrap(),
            config_before
        );
        let diff = tree_diff(&tree_before, &tree_fingerprint(&rootfs(&bundle)));
        assert_eq!(diff, Vec::<String>::new(), "{env:?}: the rootfs changed");
    }
}

/// A GPU container whose create fails inside libcontainer (after the shadow bundle was written)
/// leaves no state, cgroup, mount or shadow bundle either.
#[test]
fn failure_after_the_gpu_stage_leaves_nothing() {
    let f = fixtures();
    let rt = GpuRuntime::new(&f.fake2);
    let mut bundle = gpu_bundle(&rt, "true", &["NVIDIA_VISIBLE_DEVICES=all"]).unwrap();
    bundle.config["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/mnt", "type": "bind", "source": "/does/not/exist", "options": ["bind"]
    }));
    bundle.save().unwrap();
    let id = unique("late");
    let _guard = rt.delete_on_drop(&id);
    let output = rt.run(&["create", "-b", bundle.path(), &id]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("/does/not/exist"),
        "{}",
        stderr(&output)
    );
    assert!(!rt.run(&["state", &id]).status.success());
    rt.assert_clean(&bundle);
}

#[test]
fn requirements_are_checked_against_the_driver() {
    let f = fixtures();
    let all = "NVIDIA_VISIBLE_DEVICES=all";
    // Met (the fake libcuda reports 13000, read by an in-process dlopen), both halves of an AND,
    // alternatives, or off.
    let met: [&[&str]; 5] = [
        &[all, "NVIDIA_REQUIRE_CUDA=cuda>=12.0"],
        &[all, "NVIDIA_REQUIRE_CUDA=cuda>=12.0,driver>=580"],
        &[all, "NVIDIA_REQUIRE_CUDA=cuda>=13.0 driver>=580"],
        &[all, "NVIDIA_REQUIRE_CUDA=cuda>=14.0 driver>=580"],
        &[
            all,
            "NVIDIA_REQUIRE_CUDA=cuda>=14.0",
            "NVIDIA_DISABLE_REQUIRE=true",
        ],
    ];
    // Unmet: one line naming the requirement and the host value; unknown fails closed.
    let unmet: [(&[&str], &[&str]); 6] = [
        (
            &[all, "NVIDIA_REQUIRE_CUDA=cuda>=14.0"],
            &["NVIDIA_REQUIRE_CUDA", "cuda>=14.0", "13.0"],
        ),
        // Comma is AND: the unmet half fails the whole.
        (
            &[all, "NVIDIA_REQUIRE_CUDA=cuda>=12.0,driver>=600"],
            &["NVIDIA_REQUIRE_CUDA", "driver>=600", "580.95.05"],
        ),
        (
            &[all, "NVIDIA_REQUIRE_BRAND=brand=tesla"],
            &["NVIDIA_REQUIRE_BRAND", "brand=tesla", "unknown"],
        ),
        (
            &[all, "NVIDIA_REQUIRE_DRIVER=driver>=600"],
            &["NVIDIA_REQUIRE_DRIVER", "driver>=600", "580.95.05"],
        ),
        (
            &[all, "NVIDIA_REQUIRE_ARCH=arch=8.0"],
            &["NVIDIA_REQUIRE_ARCH", "arch=8.0", "unknown"],
        ),
        // A legacy image's CUDA_VERSION implies cuda>=MAJOR.MINOR.
        (&["CUDA_VERSION=13.1.0"], &["CUDA_VERSION", "13.1", "13.0"]),
    ];
    let cases = met.into_iter().map(|env| (env, None)).chain(
        unmet
            .into_iter()
            .map(|(env, expected)| (env, Some(expected))),
    );
    in_parallel(cases.collect(), |(env, expected)| {
        let rt = GpuRuntime::new(&f.fake2);
        let Some(expected) = expected else {
            let bundle = inspect_bundle(&rt, env);
            let report = rt.run_ok(&bundle);
            assert_sees_gpus(&report, &f.fake2, &[0, 1]);
            rt.assert_clean(&bundle);
            return;
        };
        let bundle = gpu_bundle(&rt, "true", env).unwrap();
        let id = unique("req");
        let _guard = rt.delete_on_drop(&id);
        let output = rt.run(&["create", "-b", bundle.path(), &id]);
        assert!(!output.status.success(), "{env:?} was accepted");
        let err = stderr(&output);
        assert_eq!(err.lines().count(), 1, "{env:?}: {err}");
        for text in expected {
            assert!(err.contains(text), "{env:?}: {text:?} not in {err}");
        }
        assert!(!rootfs(&bundle)
            .join("etc/ld.so.conf.d/00-gpu-youki.conf")
            .exists());
        rt.assert_clean(&bundle);
    });
}

/// A legacy CUDA image (CUDA_VERSION, no NVIDIA_REQUIRE_CUDA, no NVIDIA_VISIBLE_DEVICES) gets
/// every GPU and every capability.
#[test]
fn legacy_cuda_image_gets_all_gpus_and_capabilities() {
    let f = fixtures();
    let rt = GpuRuntime::new(&f.fake2);
    let bundle = inspect_bundle(&rt, &["CUDA_VERSION=12.2.0"]);
    let report = rt.run_ok(&bundle);
    assert_eq!(
        report.nvidia_devices(),
        expected_devices(&[0, 1], true, true),
        "{}",
        report.raw
    );
    assert_eq!(report.values("probe")["device_count"], "2");
    assert_eq!(report.lines("smi").len(), 2, "{}", report.raw);
    let cache = report.out("cache");
    for soname in [
        "libcuda.so.1",
        "libnvidia-ml.so.1",
        "libnvcuvid.so.1",
        "libGLX_nvidia.so.0",
        "libnvidia-ngx.so.1",
    ] {
        assert!(cache_target(cache, soname).is_some(), "{soname}: {cache}");
    }
    assert!(report.lines("bins").contains(&"nvidia-cuda-mps-control"));
    rt.assert_clean(&bundle);
}

#[test]
fn read_only_root_gets_the_driver() {
    let f = fixtures();
    let rt = GpuRuntime::new(&f.fake2);
    let mut probes: Vec<(&str, &str)> = INSPECT.to_vec();
    probes.push(("write-root", "echo x > /gpu-youki-ro-test"));
    let mut bundle = gpu_bundle(&rt, &script(&probes), &["NVIDIA_VISIBLE_DEVICES=all"]).unwrap();
    bundle.config["root"]["readonly"] = json!(true);
    bundle.save().unwrap();
    let report = rt.run_ok(&bundle);
    assert_ne!(report.rc("write-root"), 0, "the root is not read-only");
    assert_sees_gpus(&report, &f.fake2, &[0, 1]);
    assert_eq!(
        cache_target(report.out("cache"), "libcuda.so.1"),
        Some(format!("{LIB_DIR}/libcuda.so.1"))
    );
    rt.assert_clean(&bundle);
}

/// A spec without a `/dev` tmpfs, so the container's `/dev` is the image's and a read-only
/// root closes it before gpu-youki's own step: libcontainer makes the GPU nodes from
/// `linux.devices`, as it makes the default ones.
#[test]
fn a_spec_without_a_dev_tmpfs_gets_its_nodes_from_libcontainer() {
    let f = fixtures();
    let rt = GpuRuntime::new(&f.fake2);
    let mut bundle = inspect_bundle(&rt, &["NVIDIA_VISIBLE_DEVICES=1"]);
    bundle.config["root"]["readonly"] = json!(true);
    bundle.config["mounts"]
        .as_array_mut()
        .unwrap()
        .retain(|m| !m["destination"].as_str().unwrap().starts_with("/dev"));
    bundle.save().unwrap();
    let report = rt.run_ok(&bundle);
    assert_sees_gpus(&report, &f.fake2, &[1]);
    assert_eq!(rt.shadow_dirs(), Vec::<PathBuf>::new());
}

/// An image without /etc: gpu-youki creates the cache and the drop-in. Without
/// /etc/debian_version the library directory is /usr/lib64 (the toolkit's choice).
#[test]
fn image_without_etc_gets_a_cache_and_drop_in() {
    let f = fixtures();
    let rt = GpuRuntime::new(&f.fake2);
    let bundle = inspect_bundle(&rt, &["NVIDIA_VISIBLE_DEVICES=all"]);
    fs::remove_dir_all(rootfs(&bundle).join("etc")).unwrap();
    let report = rt.run_ok(&bundle);
    let probe = report.values("probe");
    assert_eq!(report.rc("probe"), 0, "{}", report.raw);
    assert_eq!(probe["marker"], "libcuda.so.1");
    assert_eq!(probe["device_count"], "2");
    assert_eq!(probe["libcuda"], "/usr/lib64/libcuda.so.1");
    assert_eq!(
        cache_target(report.out("cache"), "libcuda.so.1"),
        Some("/usr/lib64/libcuda.so.1".to_string()),
        "{}",
        report.raw
    );
    assert_eq!(report.rc("smi"), 0, "{}", report.raw);
    assert!(rootfs(&bundle).join("etc/ld.so.cache").is_file());
    let dropin =
        fs::read_to_string(rootfs(&bundle).join("etc/ld.so.conf.d/00-gpu-youki.conf")).unwrap();
    assert!(dropin.lines().any(|l| l == "/usr/lib64"), "{dropin}");
    rt.assert_clean(&bundle);
}

/// The rootfs files the GPU stage writes are the same after a second run: nothing accumulates.
#[test]
fn running_a_bundle_twice_leaves_identical_rootfs_files() {
    let f = fixtures();
    let rt = GpuRuntime::new(&f.fake2);
    let bundle = inspect_bundle(&rt, &["NVIDIA_VISIBLE_DEVICES=all"]);
    let first = rt.run_ok(&bundle);
    assert_eq!(first.values("probe")["device_count"], "2");
    let after_first = tree_fingerprint(&rootfs(&bundle));
    let second = rt.run_ok(&bundle);
    assert_eq!(second.values("probe")["device_count"], "2");
    let after_second = tree_fingerprint(&rootfs(&bundle));
    assert_eq!(tree_diff(&after_first, &after_second), Vec::<String>::new());
    assert_eq!(first.out("cache"), second.out("cache"));
    rt.assert_clean(&bundle);
}

/// Asking for less on a rootfs that had more: the container's cache and library directory
/// follow the new request (no stale libcuda entry pointing at an empty mount target).
#[test]
fn a_narrower_request_on_a_reused_rootfs_shows_no_stale_libraries() {
    let f = fixtures();
    let rt = GpuRuntime::new(&f.fake2);
    let mut bundle = inspect_bundle(
        &rt,
        &[
            "NVIDIA_VISIBLE_DEVICES=all",
            "NVIDIA_DRIVER_CAPABILITIES=compute,utility",
        ],
    );
    let first = rt.run_ok(&bundle);
    assert!(cache_target(first.out("cache"), "libcuda.so.1").is_some());
    let env = bundle.config["process"]["env"].as_array_mut().unwrap();
    env.retain(|e| {
        !e.as_str()
            .unwrap()
            .starts_with("NVIDIA_DRIVER_CAPABILITIES=")
    });
    env.push(json!("NVIDIA_DRIVER_CAPABILITIES=utility"));
    bundle.save().unwrap();
    let second = rt.run_ok(&bundle);
    assert_eq!(second.rc("smi"), 0, "{}", second.raw);
    assert_eq!(
        cache_target(second.out("cache"), "libcuda.so.1"),
        None,
        "a utility-only container's ld.so.cache lists libcuda:\n{}",
        second.raw
    );
    assert!(
        !second.lines("libs").contains(&"libcuda.so.1"),
        "{}",
        second.raw
    );
    rt.assert_clean(&bundle);
}

/// A spec volume over a directory the GPU stage writes into (/etc here) must not hide the GPU
/// view (shared/design.md, "Order of work in create", step 2), and the volume itself is not
/// written.
#[test]
fn a_volume_on_etc_still_sees_the_gpu_cache() {
    let f = fixtures();
    let rt = GpuRuntime::new(&f.fake2);
    let mut bundle = inspect_bundle(&rt, &["NVIDIA_VISIBLE_DEVICES=all"]);
    let volume = bundle.dir.join("etc-volume");
    fs::create_dir_all(&volume).unwrap();
    fs::write(volume.join("passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    bundle.config["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/etc", "type": "bind", "source": volume, "options": ["rbind", "rw"]
    }));
    bundle.save().unwrap();
    let report = rt.run_ok(&bundle);
    assert_eq!(report.rc("probe"), 0, "{}", report.raw);
    assert_eq!(
        cache_target(report.out("cache"), "libcuda.so.1"),
        Some(format!("{LIB_DIR}/libcuda.so.1")),
        "the container's /etc/ld.so.cache lacks the driver:\n{}",
        report.raw
    );
    assert!(
        report.lines("dropins").contains(&"00-gpu-youki.conf"),
        "{}",
        report.raw
    );
    // The volume keeps its content; gpu-youki only adds the empty mount targets it binds the
    // runtime-owned copies onto (as any bind mount into a volume would).
    assert_eq!(
        fs::read_to_string(volume.join("passwd")).unwrap(),
        "root:x:0:0:root:/root:/bin/sh\n"
    );
    for placeholder in ["ld.so.cache", "ld.so.conf.d/00-gpu-youki.conf"] {
        let meta = fs::metadata(volume.join(placeholder)).unwrap();
        assert_eq!(meta.len(), 0, "{placeholder} in the volume was written to");
    }
    let mut names: Vec<_> = fs::read_dir(&volume)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["ld.so.cache", "ld.so.conf.d", "passwd"]);
    rt.assert_clean(&bundle);
}

/// A tmpfs on /run (podman, systemd-style containers, `--tmpfs /run`) hides the rootfs' mount
/// target for the persistenced socket; the GPU container must still start.
#[test]
fn a_tmpfs_on_run_does_not_break_the_gpu_stage() {
    let f = fixtures();
    let rt = GpuRuntime::new(&f.fake2);
    let mut probes: Vec<(&str, &str)> = INSPECT.to_vec();
    probes.push((
        "socket",
        "[ -S /run/nvidia-persistenced/socket ] && echo socket",
    ));
    let mut bundle = gpu_bundle(&rt, &script(&probes), &["NVIDIA_VISIBLE_DEVICES=all"]).unwrap();
    bundle.config["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/run", "type": "tmpfs", "source": "tmpfs",
        "options": ["nosuid", "nodev", "mode=755"]
    }));
    bundle.save().unwrap();
    let (output, report) = rt.run_bundle(&bundle);
    assert!(
        output.status.success(),
        "a GPU container with a tmpfs on /run fails: {}",
        stderr(&output)
    );
    assert_sees_gpus(&report, &f.fake2, &[0, 1]);
    assert_eq!(report.out("socket"), "socket", "{}", report.raw);
    rt.assert_clean(&bundle);
}

/// With a user namespace, the device nodes cannot be made; they are bound from the host.
#[test]
fn user_namespace_container_gets_bound_device_nodes() {
    let f = fixtures();
    let rt = GpuRuntime::new(&f.fake2);
    let mut probes: Vec<(&str, &str)> = INSPECT.to_vec();
    probes.push(("uidmap", "cat /proc/self/uid_map"));
    let mut bundle = gpu_bundle(&rt, &script(&probes), &["NVIDIA_VISIBLE_DEVICES=all"]).unwrap();
    bundle.add_user_namespace();
    bundle.save().unwrap();
    let (output, report) = rt.run_bundle(&bundle);
    assert!(
        output.status.success(),
        "user-namespace GPU container failed ({}): {}\n{}",
        output.status,
        stderr(&output),
        report.raw
    );
    let uid_map: Vec<&str> = report.out("uidmap").split_whitespace().collect();
    assert_eq!(uid_map, ["0", "0", "65536"], "not in a user namespace");
    assert_sees_gpus(&report, &f.fake2, &[0, 1]);
    // Each node is a bind mount of the host's node.
    let mounts = report.mounts_from(&f.fake2.root);
    for node in [
        "nvidia0",
        "nvidia1",
        "nvidiactl",
        "nvidia-uvm",
        "nvidia-uvm-tools",
    ] {
        let point = format!("/dev/{node}");
        assert!(mounts.contains_key(&point), "{point} not bound: {mounts:?}");
    }
    assert_eq!(
        cache_target(report.out("cache"), "libcuda.so.1"),
        Some(format!("{LIB_DIR}/libcuda.so.1"))
    );
    rt.assert_clean(&bundle);
}

/// The `execve` and `execveat` lines of an strace output file.
fn execve_lines(trace: &str) -> Vec<String> {
    trace
        .lines()
        .filter(|l| l.contains("execve(") || l.contains("execveat("))
        .map(String::from)
        .collect()
}

/// The pid of an strace line (`-f` puts it first).
fn trace_pid(line: &str) -> &str {
    line.split_whitespace().next().unwrap_or_default()
}

fn strace() -> Command {
    let probe = Command::new("strace").arg("-V").output();
    assert!(
        probe.is_ok_and(|o| o.status.success()),
        "strace is needed for this test: apt-get install strace"
    );
    Command::new("strace")
}

/// `create` of a GPU container (with a CUDA requirement, so the driver is asked through its
/// library) executes nothing but gpu-youki and its sealed re-exec: no ldconfig, no hook, no
/// helper. The same trace then sees the workload's exec after `start` (a positive control),
/// and a traced `run` shows the container's exec too.
#[test]
fn create_executes_no_program() {
    let f = fixtures();
    let rt = GpuRuntime::new(&f.fake2);
    let bundle = gpu_bundle(
        &rt,
        &script(&[("probe", "cuda-probe")]),
        &[
            "NVIDIA_VISIBLE_DEVICES=all",
            "NVIDIA_DRIVER_CAPABILITIES=all",
            "NVIDIA_REQUIRE_CUDA=cuda>=12.0",
        ],
    )
    .unwrap();
    let trace = bundle.dir.join("create.trace");
    let out = bundle.dir.join("create.out");
    let id = unique("strace");
    let _guard = rt.delete_on_drop(&id);
    // -D: the tracer is a detached grandchild, so `status` returns when create does, while the
    // container's init, still traced, waits for start.
    let status = strace()
        .args(["-D", "-f", "-e", "trace=execve,execveat", "-o"])
        .arg(&trace)
        .arg(&rt.rt.bin)
        .arg("--root")
        .arg(&rt.rt.root)
        .args(["create", "--bundle", bundle.path(), &id])
        .env(CONFIG_ENV, &rt.config)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(bundle.dir.join("create.err")).unwrap())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "traced create failed: {}",
        fs::read_to_string(bundle.dir.join("create.err")).unwrap_or_default()
    );
    let read = || fs::read_to_string(&trace).unwrap_or_default();
    let start = Instant::now();
    let during_create = loop {
        let text = read();
        let first_pid = execve_lines(&text)
            .first()
            .map(|l| trace_pid(l).to_string());
        if let Some(pid) = first_pid {
            if text
                .lines()
                .any(|l| l.starts_with(&format!("{pid} ")) && l.contains("+++ exited"))
            {
                break text;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "strace never saw create exit:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(rt.state(&id)["status"], "created");
    let execs = execve_lines(&during_create);
    assert_eq!(execs.len(), 2, "create executed more:\n{during_create}");
    let bin = rt.rt.bin.to_string_lossy();
    assert!(
        execs[0].contains(&format!("execve(\"{bin}\"")),
        "{during_create}"
    );
    // The sealed re-exec: the binary through its private overlay, by descriptor.
    assert!(
        execs[1].contains("execveat(") && execs[1].contains("AT_EMPTY_PATH"),
        "the second exec is not the sealed re-exec:\n{during_create}"
    );
    assert_eq!(trace_pid(&execs[0]), trace_pid(&execs[1]));
    assert!(execs[1].ends_with("= 0"), "{during_create}");

    // Positive control in the same trace: after start, the workload's exec shows.
    let report = start_and_collect(&rt, &id, &out);
    assert_eq!(
        report.values("probe")["device_count"],
        "2",
        "{}",
        report.raw
    );
    let start = Instant::now();
    while !execve_lines(&read())
        .iter()
        .any(|l| l.contains("execve(\"/usr/local/bin/cuda-probe\""))
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the workload's exec is not in the trace:\n{}",
            read()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!read().contains("ldconfig"), "{}", read());
    rt.assert_clean(&bundle);

    // Positive control with `run`: the container's `sh -c true` is traced.
    let run_bundle = gpu_bundle(&rt, "true", &["NVIDIA_VISIBLE_DEVICES=all"]).unwrap();
    let run_trace = run_bundle.dir.join("run.trace");
    let output = strace()
        .args(["-f", "-e", "trace=execve,execveat", "-o"])
        .arg(&run_trace)
        .arg(&rt.rt.bin)
        .arg("--root")
        .arg(&rt.rt.root)
        .args(["run", "--bundle", run_bundle.path(), &unique("strace-run")])
        .env(CONFIG_ENV, &rt.config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = fs::read_to_string(&run_trace).unwrap();
    let execs = execve_lines(&text);
    assert!(
        execs.iter().any(
            |l| l.contains("execve(\"/usr/bin/sh\", [\"sh\", \"-c\", \"true\"]")
                && l.ends_with("= 0")
        ),
        "the container's exec is missing from the trace:\n{text}"
    );
    assert!(!text.contains("ldconfig"), "{text}");
    rt.assert_clean(&run_bundle);
}

/// `state` reports the user's bundle, not the shadow one, and `exec` into a running GPU
/// container sees the GPUs.
#[test]
fn state_reports_the_user_bundle_and_exec_sees_the_gpus() {
    let f = fixtures();
    let rt = GpuRuntime::new(&f.fake2);
    let bundle = gpu_bundle(&rt, "sleep 1000", &["NVIDIA_VISIBLE_DEVICES=1"]).unwrap();
    let id = unique("state");
    let _guard = rt.delete_on_drop(&id);
    create(&rt, &bundle, &id);
    let state: Value = rt.state(&id);
    assert_eq!(state["status"], "created");
    assert_eq!(state["bundle"], json!(bundle.path()), "{state}");
    assert_eq!(rt.shadow_dirs(), Vec::<PathBuf>::new());
    rt.ok(&["start", &id]);
    let state = rt.state(&id);
    assert_eq!(state["status"], "running");
    assert_eq!(state["bundle"], json!(bundle.path()), "{state}");
    let list: Value = serde_json::from_str(&rt.ok(&["list", "--format", "json"])).unwrap();
    assert_eq!(list[0]["bundle"], json!(bundle.path()), "{list}");

    let output = rt.run(&["exec", &id, "sh", "-c", &inspect_script()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report = Report::parse(&output.stdout);
    assert_sees_gpus(&report, &f.fake2, &[1]);
    rt.ok(&["delete", "--force", &id]);
    rt.assert_clean(&bundle);
}

/// `gpu-youki spec` writes runc's defaults, and runc's default config denies every device but
/// the standard ones (`{"allow": false, "access": "rwm"}` first): a GPU container made from it
/// must be confined by the device cgroup to the GPU it asked for.
#[test]
fn default_spec_confines_a_gpu_container_to_its_devices() {
    let f = fixtures();
    let rt = GpuRuntime::new(&f.fake2);
    let mut bundle = gpu_bundle(&rt, "sleep 1000", &["NVIDIA_VISIBLE_DEVICES=1"]).unwrap();
    let fresh = std::env::temp_dir().join(unique("gpu-youki-spec"));
    fs::create_dir_all(&fresh).unwrap();
    rt.ok(&["spec", "--bundle", fresh.to_str().unwrap()]);
    let default: Value =
        serde_json::from_slice(&fs::read(fresh.join("config.json")).unwrap()).expect("spec JSON");
    fs::remove_dir_all(&fresh).unwrap();
    bundle.config["linux"]["resources"] = default["linux"]["resources"].clone();
    bundle.save().unwrap();
    let id = unique("defspec");
    let _guard = rt.delete_on_drop(&id);
    create(&rt, &bundle, &id);
    let list = fs::read_to_string(format!(
        "/sys/fs/cgroup/devices{}/devices.list",
        bundle.cgroup
    ))
    .unwrap();
    rt.ok(&["delete", "--force", &id]);
    rt.assert_clean(&bundle);
    let rules: Vec<&str> = list.lines().collect();
    assert!(
        !rules.contains(&"a *:* rwm"),
        "a container of the default spec may use every device (spec's linux.resources: {}):\n{list}",
        default["linux"]["resources"]
    );
    assert!(rules.contains(&"c 195:1 rwm"), "{list}");
    assert!(!rules.contains(&"c 195:0 rwm"), "{list}");
}

/// A rootfs on a filesystem that cannot be written (here a read-only bind mount of it): the GPU
/// stage writes into an overlay it owns, the image stays untouched, and the overlay is gone
/// after delete.
#[test]
fn rootfs_on_a_read_only_filesystem_gets_the_driver() {
    let f = fixtures();
    let rt = GpuRuntime::new(&f.fake2);
    let mut bundle = inspect_bundle(&rt, &["NVIDIA_VISIBLE_DEVICES=all"]);
    let image = rootfs(&bundle);
    let read_only = bundle.dir.join("rootfs-ro");
    fs::create_dir_all(&read_only).unwrap();
    let mount = |args: &[&str]| {
        let status = Command::new("mount").args(args).status().unwrap();
        assert!(status.success(), "mount {args:?}");
    };
    let ro = read_only.to_str().unwrap();
    mount(&["--bind", image.to_str().unwrap(), ro]);
    mount(&["-o", "remount,bind,ro", ro]);
    let before = tree_fingerprint(&image);
    bundle.config["root"]["path"] = json!(ro);
    bundle.save().unwrap();
    let report = rt.run_ok(&bundle);
    let _ = Command::new("umount").arg(ro).status();
    assert_sees_gpus(&report, &f.fake2, &[0, 1]);
    assert_eq!(
        cache_target(report.out("cache"), "libcuda.so.1"),
        Some(format!("{LIB_DIR}/libcuda.so.1"))
    );
    assert_eq!(
        tree_fingerprint(&image),
        before,
        "the read-only image was changed"
    );
    rt.assert_clean(&bundle);
}

/// The device plugin's volume-mounts strategy, when the config accepts it: `/dev/null` mounted
/// at /var/run/nvidia-container-devices/1 gives GPU 1 even though the env asks for all.
#[test]
fn device_list_volume_mounts_when_accepted() {
    let f = fixtures();
    let config = std::env::temp_dir().join(integration::bundle::unique("gpu-youki-volumes.toml"));
    let mut text = fs::read_to_string(f.fake2.config()).unwrap();
    text.push_str("\n[request]\nvolume-mounts = true\n");
    fs::write(&config, text).unwrap();
    for (accepted, gpus) in [(true, vec![1]), (false, vec![0, 1])] {
        let rt = if accepted {
            GpuRuntime::with_config(config.clone())
        } else {
            GpuRuntime::new(&f.fake2)
        };
        let mut bundle = inspect_bundle(&rt, &["NVIDIA_VISIBLE_DEVICES=all"]);
        bundle.config["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/var/run/nvidia-container-devices/1",
            "type": "bind", "source": "/dev/null", "options": ["bind", "ro"]
        }));
        bundle.save().unwrap();
        let report = rt.run_ok(&bundle);
        assert_sees_gpus(&report, &f.fake2, &gpus);
        rt.assert_clean(&bundle);
    }
    let _ = fs::remove_file(config);
}

/// `[request] unprivileged-env = "ignore"`: an unprivileged container's own device list (and
/// a legacy CUDA image's implied `all`) gives no GPU, the device plugin's volume mounts still
/// do, and a container with CAP_SYS_ADMIN, or with docker's `--gpus` hook, is believed.
#[test]
fn unprivileged_env_device_lists_are_ignored_when_configured() {
    let f = fixtures();
    let config = std::env::temp_dir().join(integration::bundle::unique("gpu-youki-policy.toml"));
    let mut text = fs::read_to_string(f.fake2.config()).unwrap();
    text.push_str("\n[request]\nvolume-mounts = true\nunprivileged-env = \"ignore\"\n");
    fs::write(&config, text).unwrap();
    let rt = GpuRuntime::with_config(config.clone());
    for env in ["NVIDIA_VISIBLE_DEVICES=all", "CUDA_VERSION=12.4.0"] {
        let bundle = inspect_bundle(&rt, &[env]);
        let (output, report) = rt.run_bundle(&bundle);
        assert!(output.status.success(), "{env}: {}", stderr(&output));
        assert_eq!(report.nvidia_devices(), Vec::<String>::new(), "{env}");
        if env.starts_with("NVIDIA_VISIBLE_DEVICES") {
            assert!(
                stderr(&output).contains("ignoring NVIDIA_VISIBLE_DEVICES=all"),
                "no warning: {}",
                stderr(&output)
            );
        }
        rt.assert_clean(&bundle);
    }
    let mut mounted = inspect_bundle(&rt, &["NVIDIA_VISIBLE_DEVICES=all"]);
    mounted.config["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({
            "destination": "/var/run/nvidia-container-devices/1",
            "type": "bind", "source": "/dev/null", "options": ["bind", "ro"]
        }));
    mounted.save().unwrap();
    assert_sees_gpus(&rt.run_ok(&mounted), &f.fake2, &[1]);
    rt.assert_clean(&mounted);
    // A CDI annotation is the engine's, not the image's: it is believed (no spec defines
    // `nvidia.com/gpu=1` in the default spec dirs, so the GPU is given natively).
    let mut annotated = inspect_bundle(&rt, &["NVIDIA_VISIBLE_DEVICES=all"]);
    annotated.config["annotations"] = json!({ "cdi.k8s.io/gpu": "nvidia.com/gpu=1" });
    annotated.save().unwrap();
    assert_sees_gpus(&rt.run_ok(&annotated), &f.fake2, &[1]);
    rt.assert_clean(&annotated);
    // docker's GPU hook vouches that dockerd set the list from `docker run --gpus`.
    let mut docker = inspect_bundle(&rt, &["NVIDIA_VISIBLE_DEVICES=0"]);
    docker.config["hooks"] = json!({"prestart": [{
        "path": "/usr/bin/nvidia-container-runtime-hook",
        "args": ["nvidia-container-runtime-hook", "prestart"]
    }]});
    docker.save().unwrap();
    assert_sees_gpus(&rt.run_ok(&docker), &f.fake2, &[0]);
    rt.assert_clean(&docker);
    let mut privileged = inspect_bundle(&rt, &["NVIDIA_VISIBLE_DEVICES=all"]);
    privileged.config["process"]["capabilities"]["bounding"]
        .as_array_mut()
        .unwrap()
        .push(json!("CAP_SYS_ADMIN"));
    privileged.save().unwrap();
    assert_sees_gpus(&rt.run_ok(&privileged), &f.fake2, &[0, 1]);
    rt.assert_clean(&privileged);
    let _ = fs::remove_file(config);
}

/// A bad config file (wrong type, unknown key, unknown value, non-UTF-8, a key set twice, a
/// relative spec directory) fails the create of a GPU container with one line naming the file
/// and the key, and nothing is left behind.
#[test]
fn bad_config_files_fail_with_one_line_naming_the_key() {
    let bundle_rt = GpuRuntime::new(&fixtures().fake2);
    let bundle = gpu_bundle(&bundle_rt, "true", &["NVIDIA_VISIBLE_DEVICES=all"]).unwrap();
    let config = bundle.dir.join("bad-config.toml");
    let rt = GpuRuntime::with_config(config.clone());
    let huge_root = format!("[driver]\nroot = \"/{}\"\n", "a".repeat(70_000));
    let cases: [(&[u8], &[&str]); 7] = [
        (
            b"[driver]\nroot = 3\n",
            &["line 2 (root = 3)", "invalid type"],
        ),
        (
            b"[request]\nvolume-mount = true\n",
            &["unknown field `volume-mount`"],
        ),
        (
            b"[request]\nunprivileged-env = \"deny\"\n",
            &["(unprivileged-env = \"deny\")", "`accept` or `ignore`"],
        ),
        (b"[driver]\nroot = \"/\xff\xfe\"\n", &["valid UTF-8"]),
        (
            b"[driver]\nroot = \"/a\"\nroot = \"/b\"\n",
            &["line 3 (root = \"/b\")", "duplicate key"],
        ),
        (
            b"[cdi]\nspec-dirs = [\"cdi\"]\n",
            &["cdi.spec-dirs must be an absolute path"],
        ),
        (
            huge_root.as_bytes(),
            &["driver.root \"/aaa", "(70001 bytes) is not a usable path"],
        ),
    ];
    for (text, expected) in cases {
        fs::write(&config, text).unwrap();
        let id = unique("badcfg");
        let _guard = rt.delete_on_drop(&id);
        let output = rt.run(&["create", "-b", bundle.path(), &id]);
        assert!(!output.status.success(), "{text:?} was accepted");
        let err = stderr(&output);
        assert_eq!(err.lines().count(), 1, "{text:?}: {err}");
        assert!(err.contains(&config.display().to_string()), "{err}");
        for part in expected {
            assert!(err.contains(part), "{text:?}: {part:?} not in {err}");
        }
        rt.assert_clean(&bundle);
    }
}

/// The driver file cache all starts share (`gpu_youki::gpu_stage::DRIVER_FILE_CACHE`).
const DRIVER_FILE_CACHE: &str = "/run/gpu-youki-cache";

/// Eight GPU containers started at once on a driver new to the cache, and again after the driver
/// changed (its libcuda replaced): each time the driver's files are found once between them, the
/// cache is replaced by rename (no partial or temporary file is ever left), and every container
/// gets the GPU and a libcuda that loads.
#[test]
fn concurrent_first_starts_after_a_driver_change_find_the_files_once() {
    let f = fixtures();
    let driver_root = std::env::temp_dir().join(unique("gpu-youki-driver-copy"));
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&f.fake2.root)
        .arg(&driver_root)
        .status()
        .unwrap();
    assert!(copied.success(), "cp -a {}", f.fake2.root.display());
    let root_text = driver_root.to_str().unwrap();
    let config = driver_root.join("config.toml");
    fs::write(
        &config,
        format!(
            "[driver]\nroot = {root_text:?}\ndev-root = {root_text:?}\nproc-root = {root_text:?}\n"
        ),
    )
    .unwrap();
    let rt = GpuRuntime::with_config(config);
    let probe = "test -c /dev/nvidia0 && cuda-probe";
    let bundles: Vec<Bundle> = (0..8)
        .map(|_| gpu_bundle(&rt, probe, &["NVIDIA_VISIBLE_DEVICES=0"]).unwrap())
        .collect();
    let logs = driver_root.join("logs");
    fs::create_dir(&logs).unwrap();
    let start_all = |round: &str| -> usize {
        in_parallel(bundles.iter().enumerate().collect(), |(i, bundle)| {
            let log = logs.join(format!("{round}-{i}.log"));
            let id = unique("cache");
            let output = rt.run(&[
                "--debug",
                "--log",
                log.to_str().unwrap(),
                "--log-format",
                "text",
                "run",
                "-b",
                bundle.path(),
                &id,
            ]);
            assert!(
                output.status.success(),
                "round {round}, container {i}: {}\n{}",
                stderr(&output),
                String::from_utf8_lossy(&output.stdout)
            );
        });
        (0..8)
            .map(|i| {
                fs::read_to_string(logs.join(format!("{round}-{i}.log")))
                    .unwrap()
                    .matches("rebuilt the driver file cache")
                    .count()
            })
            .sum()
    };
    // This driver's cache file, and every file named after it (its lock, any temporary one).
    let ours = || -> Vec<String> {
        let names: Vec<String> = fs::read_dir(DRIVER_FILE_CACHE)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let stems: Vec<&str> = names
            .iter()
            .filter_map(|n| n.strip_suffix(".json"))
            .filter(|stem| {
                fs::read_to_string(Path::new(DRIVER_FILE_CACHE).join(format!("{stem}.json")))
                    .is_ok_and(|text| text.contains(root_text))
            })
            .collect();
        let mut found: Vec<String> = names
            .iter()
            .filter(|n| stems.iter().any(|stem| n.contains(&format!("{stem}."))))
            .cloned()
            .collect();
        found.sort();
        found
    };
    let one_cache_file = |found: Vec<String>| {
        assert!(
            found.len() == 2 && found[0].ends_with(".json") && found[1].ends_with(".lock"),
            "one cache file and its lock: {found:?}"
        );
    };

    assert_eq!(start_all("first"), 1, "a new driver: one search");
    one_cache_file(ours());
    assert_eq!(start_all("cached"), 0, "an unchanged driver: no search");

    // A driver update replaces the library: a new inode at the same path.
    let libcuda = driver_root
        .join(LIB_DIR.trim_start_matches('/'))
        .join(format!("libcuda.so.{}", f.fake2.version()));
    let replacement = libcuda.with_extension("new");
    fs::copy(&libcuda, &replacement).unwrap();
    fs::rename(&replacement, &libcuda).unwrap();
    assert_eq!(start_all("changed"), 1, "a changed driver: one search");
    one_cache_file(ours());

    for name in ours() {
        fs::remove_file(Path::new(DRIVER_FILE_CACHE).join(name)).unwrap();
    }
    fs::remove_dir_all(&driver_root).unwrap();
}
