//! Device families beyond plain GPUs, each checked from inside a real container started with
//! gpu-youki against `.work/fake-devices` (`scripts/fake-driver --mig 0 --extra-devices`): MIG
//! devices by `GPU:MIG`, MIG UUID and legacy MIG UUID; MIG config/monitor; IMEX channels by
//! environment and volume mount; the GDS, MOFED, NVSwitch and GDRCopy families, together and
//! each alone; DRM nodes and their groups for `graphics` and for `display` alone.
//!
//! A node the container may use opens with "No such device or address" or "No such device"
//! (the fake numbers have no driver behind them); one the device cgroup denies fails with
//! "Operation not permitted".

use std::fs;

use integration::bundle::{unique, Bundle};
use integration::gpu::{fake_devices, gpu_bundle, script, FakeDriver, GpuRuntime, Report};
use serde_json::{json, Value};

/// What a container allowed to open a fake node prints when it tries (ENXIO, or ENODEV for an
/// unused minor of a registered major such as misc's).
const ALLOWED: &str = "No such device";

/// Probes: every character device, the MIG capability files and GPU directories of the
/// `/proc/driver/nvidia` view, the process's groups, and an open of each node in `open`.
fn probes(open: &[&str], extra: &[(&str, &str)]) -> String {
    let opens = open
        .iter()
        .map(|node| format!("cat {node} 2>&1 >/dev/null | sed 's|^.*: ||'"))
        .chain(["true".to_string()])
        .collect::<Vec<_>>()
        .join("; ");
    let mut probes = vec![
        ("nodes", "find /dev -type c | sort"),
        (
            "caps",
            "cd /proc/driver/nvidia/capabilities 2>/dev/null && find . -type f | sort",
        ),
        ("procgpus", "ls -1 /proc/driver/nvidia/gpus"),
        ("gids", "id -G"),
        ("open", opens.as_str()),
    ];
    probes.extend_from_slice(extra);
    script(&probes)
}

/// A bundle with the [`probes`] on the fake-devices driver.
fn bundle(rt: &GpuRuntime, open: &[&str], env: &[&str]) -> Bundle {
    gpu_bundle(rt, &probes(open, &[]), env).unwrap()
}

fn nodes(report: &Report) -> Vec<&str> {
    report.lines("nodes")
}

/// Asserts the container has each of `present` and none of `absent`.
fn assert_nodes(report: &Report, present: &[&str], absent: &[&str]) {
    let nodes = nodes(report);
    for node in present {
        assert!(nodes.contains(node), "{node} missing from {nodes:?}");
    }
    for node in absent {
        assert!(!nodes.contains(node), "{node} present in {nodes:?}");
    }
}

/// Asserts every open the container tried was allowed by its device cgroup.
fn assert_opens(report: &Report, count: usize) {
    let opens = report.lines("open");
    assert_eq!(opens.len(), count, "{}", report.raw);
    for line in opens {
        assert!(line.starts_with(ALLOWED), "{line}: {}", report.raw);
    }
}

/// Field `field` of MIG device `index` (NVML order on GPU 0) in the driver's manifest.
fn mig(driver: &FakeDriver, index: u64, field: &str) -> Value {
    driver.manifest["mig_devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["index"] == index)
        .unwrap_or_else(|| panic!("no MIG device {index} in the manifest"))[field]
        .clone()
}

fn privileged(bundle: &mut Bundle) {
    for set in ["bounding", "effective", "permitted"] {
        bundle.config["process"]["capabilities"][set]
            .as_array_mut()
            .unwrap()
            .push(json!("CAP_SYS_ADMIN"));
    }
    bundle.save().unwrap();
}

#[test]
fn mig_devices_by_index_uuid_and_legacy_uuid_get_only_their_instance() {
    let d = fake_devices();
    let gpu0 = d.uuid(0);
    // (request, GPU instance, compute instance) — `0:0` is NVML's first MIG device, GPU
    // instance 2, not the first in directory order.
    let mig_uuid = mig(d, 2, "uuid").as_str().unwrap().to_uppercase();
    let cases: Vec<(String, u64, u64)> = vec![
        ("0:0".into(), 2, 0),
        (mig_uuid.replacen("MIG-", "mig-", 1), 1, 0),
        (format!("MIG-{gpu0}/2/1"), 2, 1),
    ];
    for (request, gi, ci) in cases {
        let rt = GpuRuntime::new(d);
        let device = d.manifest["mig_devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["gi"] == gi && m["ci"] == ci)
            .unwrap()
            .clone();
        let gi_node = format!("/dev/nvidia-caps/nvidia-cap{}", device["gi_minor"]);
        let ci_node = format!("/dev/nvidia-caps/nvidia-cap{}", device["ci_minor"]);
        let env = format!("NVIDIA_VISIBLE_DEVICES={request}");
        let bundle = bundle(&rt, &["/dev/nvidia0", &gi_node, &ci_node], &[&env]);
        let report = rt.run_ok(&bundle);
        assert_nodes(
            &report,
            &["/dev/nvidia0", "/dev/nvidiactl", &gi_node, &ci_node],
            &["/dev/nvidia1", "/dev/nvidia-caps/nvidia-cap1"],
        );
        let caps: Vec<&str> = nodes(&report)
            .into_iter()
            .filter(|n| n.starts_with("/dev/nvidia-caps/"))
            .collect();
        assert_eq!(caps.len(), 2, "{request}: {caps:?}");
        assert_opens(&report, 3);
        assert_eq!(
            report.lines("caps"),
            [
                format!("./gpu0/mig/gi{gi}/access"),
                format!("./gpu0/mig/gi{gi}/ci{ci}/access")
            ],
            "{request}"
        );
        assert_eq!(report.lines("procgpus"), [d.bus_id(0)], "{request}");
        // The host's /dev/char link of a nested node points into its directory.
        let minor = &device["ci_minor"];
        assert_eq!(
            fs::read_link(d.root.join(format!("dev/char/509:{minor}"))).unwrap(),
            std::path::Path::new(&format!("../nvidia-caps/nvidia-cap{minor}"))
        );
        rt.assert_clean(&bundle);
    }
    // `gpu inventory` lists the MIG devices with NVML's indices and UUIDs, and the other nodes.
    let rt = GpuRuntime::new(d);
    let inventory: Value =
        serde_json::from_str(&rt.ok(&["gpu", "inventory", "--format", "json"])).unwrap();
    let listed: Vec<(Value, Value, Value, Value)> = inventory["mig_devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["gpu_instance"].clone(),
                m["compute_instance"].clone(),
                m["index"].clone(),
                m["uuid"].clone(),
            )
        })
        .collect();
    let mut expected: Vec<(Value, Value, Value, Value)> = d.manifest["mig_devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["gi"].clone(),
                m["ci"].clone(),
                m["index"].clone(),
                m["uuid"].clone(),
            )
        })
        .collect();
    expected.sort_by_key(|(gi, ci, _, _)| (gi.as_u64(), ci.as_u64()));
    assert_eq!(listed, expected);
    assert_eq!(inventory["imex_channels"].as_array().unwrap().len(), 3);
    assert_eq!(inventory["gpus"][1]["drm"].as_array().unwrap().len(), 2);
    // `gpu plan` shows the MIG device and its capability files.
    let bundle = bundle(&rt, &[], &["NVIDIA_VISIBLE_DEVICES=0:1"]);
    let plan = rt.ok(&["gpu", "plan", "--bundle", bundle.path()]);
    assert!(
        plan.contains(&format!(
            "MIG device: GPU 0 gi 2 ci 1 {}",
            mig(d, 1, "uuid").as_str().unwrap()
        )),
        "{plan}"
    );
    assert!(
        plan.contains(
            "/proc/driver/nvidia/capabilities: gpu0/mig/gi2/access, gpu0/mig/gi2/ci1/access"
        ),
        "{plan}"
    );
    let err = rt.run_err(&gpu_bundle(&rt, "true", &["NVIDIA_VISIBLE_DEVICES=0:3"]).unwrap());
    assert!(
        err.contains(
            "unknown device MIG device 0:3 (this host has 2 GPUs, indices 0-1, and 3 MIG devices)"
        ),
        "{err}"
    );
}

/// NVML is loaded in process only when a selector needs NVML's MIG indices or UUIDs (`GPU:MIG`,
/// `MIG-<uuid>`), never for full GPUs or the legacy `MIG-GPU-<uuid>/gi/ci` form (README, "MIG
/// devices are found without NVML"). glibc's loader names every library it initialises under
/// `LD_DEBUG=files`.
#[test]
fn nvml_is_loaded_only_for_selectors_that_need_it() {
    let d = fake_devices();
    let rt = GpuRuntime::new(d);
    let mig_uuid = mig(d, 0, "uuid").as_str().unwrap().to_string();
    for (visible, needs_nvml) in [
        ("0".to_string(), false),
        (format!("MIG-{}/2/1", d.uuid(0)), false),
        ("0:0".to_string(), true),
        (mig_uuid, true),
    ] {
        let bundle = bundle(&rt, &[], &[&format!("NVIDIA_VISIBLE_DEVICES={visible}")]);
        let output = rt
            .command(&["gpu", "plan", "--bundle", bundle.path()])
            .env("LD_DEBUG", "files")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{visible}: {stderr}");
        let initialised = |library: &str| {
            stderr
                .lines()
                .any(|l| l.contains("calling init:") && l.contains(library))
        };
        // A positive control: the loader reports at all (libc is always initialised).
        assert!(
            initialised("libc.so.6"),
            "{visible}: no LD_DEBUG output: {stderr}"
        );
        assert_eq!(
            initialised("libnvidia-ml.so"),
            needs_nvml,
            "{visible}: NVML loaded"
        );
    }
}

#[test]
fn mig_config_and_monitor_need_a_privileged_container_and_full_gpus() {
    let d = fake_devices();
    let rt = GpuRuntime::new(d);
    // Refused: either variable in an unprivileged container, or with MIG devices visible.
    for (env, privileged_container, expected) in [
        (
            ["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_MIG_CONFIG_DEVICES=all"],
            false,
            "NVIDIA_MIG_CONFIG_DEVICES is allowed only in privileged containers",
        ),
        (
            ["NVIDIA_VISIBLE_DEVICES=1", "NVIDIA_MIG_MONITOR_DEVICES=all"],
            false,
            "NVIDIA_MIG_MONITOR_DEVICES is allowed only in privileged containers",
        ),
        (
            [
                "NVIDIA_VISIBLE_DEVICES=0:0",
                "NVIDIA_MIG_CONFIG_DEVICES=all",
            ],
            true,
            "NVIDIA_MIG_CONFIG_DEVICES needs full GPUs visible, not MIG devices",
        ),
        (
            [
                "NVIDIA_VISIBLE_DEVICES=0:0",
                "NVIDIA_MIG_MONITOR_DEVICES=all",
            ],
            true,
            "NVIDIA_MIG_MONITOR_DEVICES needs full GPUs visible, not MIG devices",
        ),
    ] {
        let mut refused = bundle(&rt, &[], &env);
        if privileged_container {
            privileged(&mut refused);
        }
        let err = rt.run_err(&refused);
        assert!(err.contains(expected), "{env:?}: {err}");
        rt.assert_clean(&refused);
    }
    let config = ["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_MIG_CONFIG_DEVICES=all"];
    // Privileged: the config capability, every MIG capability node of GPU 0, the whole
    // capabilities tree.
    let mut migs: Vec<String> = vec!["/dev/nvidia-caps/nvidia-cap1".into()];
    for device in d.manifest["mig_devices"].as_array().unwrap() {
        for minor in [&device["gi_minor"], &device["ci_minor"]] {
            let node = format!("/dev/nvidia-caps/nvidia-cap{minor}");
            if !migs.contains(&node) {
                migs.push(node);
            }
        }
    }
    let open: Vec<&str> = migs.iter().map(String::as_str).collect();
    let mut allowed = bundle(&rt, &open, &config);
    privileged(&mut allowed);
    let report = rt.run_ok(&allowed);
    assert_nodes(&report, &open, &["/dev/nvidia-caps/nvidia-cap2"]);
    assert_opens(&report, open.len());
    let caps = report.lines("caps");
    for file in ["./mig/config", "./mig/monitor", "./gpu0/mig/gi1/ci0/access"] {
        assert!(caps.contains(&file), "{file} not in {caps:?}");
    }
    // Monitor: only the monitor capability.
    let mut monitor = bundle(
        &rt,
        &["/dev/nvidia-caps/nvidia-cap2"],
        &["NVIDIA_VISIBLE_DEVICES=1", "NVIDIA_MIG_MONITOR_DEVICES=all"],
    );
    privileged(&mut monitor);
    let report = rt.run_ok(&monitor);
    assert_nodes(
        &report,
        &["/dev/nvidia-caps/nvidia-cap2"],
        &["/dev/nvidia-caps/nvidia-cap1"],
    );
    assert_opens(&report, 1);
}

#[test]
fn imex_channels_by_environment_and_volume_mount() {
    let d = fake_devices();
    let rt = GpuRuntime::new(d);
    let channel = |n: u32| format!("/dev/nvidia-caps-imex-channels/channel{n}");
    let (c0, c1, c3) = (channel(0), channel(1), channel(3));
    let by_env = bundle(
        &rt,
        &[&c0, &c3],
        &["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_IMEX_CHANNELS=0,3"],
    );
    let report = rt.run_ok(&by_env);
    assert_nodes(&report, &[&c0, &c3], &[&c1]);
    assert_opens(&report, 2);
    // `all` from the environment is dropped.
    let report = rt.run_ok(&bundle(
        &rt,
        &[],
        &["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_IMEX_CHANNELS=all"],
    ));
    assert!(!report.out("nodes").contains("imex"), "{}", report.raw);
    // Channel 2 has no node on the host: a clear error, and no node is made.
    let missing = bundle(
        &rt,
        &[],
        &["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_IMEX_CHANNELS=2"],
    );
    let err = rt.run_err(&missing);
    assert!(
        err.contains("NVIDIA_IMEX_CHANNELS: IMEX channel 2 has no node")
            && err.contains("gpu-youki never creates host device nodes"),
        "{err}"
    );
    assert!(!d
        .root
        .join("dev/nvidia-caps-imex-channels/channel2")
        .exists());
    rt.assert_clean(&missing);

    // Volume mounts (accepted by the config) name the channel instead of the environment.
    let config = std::env::temp_dir().join(unique("gpu-youki-imex.toml"));
    let mut text = fs::read_to_string(d.config()).unwrap();
    text.push_str("\n[request]\nvolume-mounts = true\n");
    fs::write(&config, text).unwrap();
    let rt = GpuRuntime::with_config(config.clone());
    let mut by_mount = bundle(
        &rt,
        &[&c1],
        &["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_IMEX_CHANNELS=0"],
    );
    for destination in [
        "/var/run/nvidia-container-devices/1",
        "/var/run/nvidia-container-devices/imex/1",
    ] {
        by_mount.config["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({
                "destination": destination,
                "type": "bind", "source": "/dev/null", "options": ["bind", "ro"]
            }));
    }
    by_mount.save().unwrap();
    let report = rt.run_ok(&by_mount);
    assert_nodes(&report, &[&c1, "/dev/nvidia1"], &[&c0, "/dev/nvidia0"]);
    assert_opens(&report, 1);
    rt.assert_clean(&by_mount);
    let _ = fs::remove_file(config);
}

#[test]
fn gated_families_come_with_enabled_and_a_gpu() {
    let d = fake_devices();
    let rt = GpuRuntime::new(d);
    let all_nodes = [
        "/dev/nvidia-fs0",
        "/dev/nvidia-fs1",
        "/dev/infiniband/uverbs0",
        "/dev/infiniband/rdma_cm",
        "/dev/nvidia-nvswitchctl",
        "/dev/nvidia-nvswitch0",
        "/dev/nvidia-nvswitch1",
        "/dev/gdrdrv",
    ];
    let files = [
        ("cufile", "cat /etc/cufile.json"),
        ("udev", "ls /run/udev/data"),
    ];
    let enabled = gpu_bundle(
        &rt,
        &probes(&all_nodes, &files),
        &[
            "NVIDIA_VISIBLE_DEVICES=1",
            "NVIDIA_GDS=enabled",
            "NVIDIA_MOFED=enabled",
            "NVIDIA_NVSWITCH=enabled",
            "NVIDIA_GDRCOPY=enabled",
        ],
    )
    .unwrap();
    let report = rt.run_ok(&enabled);
    assert_nodes(&report, &all_nodes, &[]);
    assert_opens(&report, all_nodes.len());
    assert_eq!(
        report.out("cufile"),
        fs::read_to_string(d.root.join("etc/cufile.json"))
            .unwrap()
            .trim_end()
    );
    assert_eq!(report.lines("udev"), ["c226:1"]);
    rt.assert_clean(&enabled);

    // Each family alone brings its own nodes and no other's; only GDS brings its files.
    for (variable, own) in [
        ("NVIDIA_GDS", &all_nodes[..2]),
        ("NVIDIA_MOFED", &all_nodes[2..4]),
        ("NVIDIA_NVSWITCH", &all_nodes[4..7]),
        ("NVIDIA_GDRCOPY", &all_nodes[7..]),
    ] {
        let others: Vec<&str> = all_nodes
            .iter()
            .filter(|n| !own.contains(n))
            .copied()
            .collect();
        let enabled = format!("{variable}=enabled");
        let alone = gpu_bundle(
            &rt,
            &probes(own, &files),
            &["NVIDIA_VISIBLE_DEVICES=1", &enabled],
        )
        .unwrap();
        let report = rt.run_ok(&alone);
        assert_nodes(&report, own, &others);
        assert_opens(&report, own.len());
        let gds = variable == "NVIDIA_GDS";
        for file in ["cufile", "udev"] {
            assert_eq!(
                report.rc(file) == 0,
                gds,
                "{variable}: {file}: {}",
                report.raw
            );
        }
        rt.assert_clean(&alone);
    }

    // Anything but `enabled` leaves a family off; without a GPU every family is off.
    for env in [
        ["NVIDIA_VISIBLE_DEVICES=1", "NVIDIA_GDS=true"],
        ["NVIDIA_VISIBLE_DEVICES=none", "NVIDIA_GDRCOPY=enabled"],
    ] {
        let report = rt.run_ok(&gpu_bundle(&rt, &probes(&[], &files), &env).unwrap());
        assert_nodes(&report, &[], &all_nodes);
        assert_ne!(report.rc("cufile"), 0, "{env:?}: {}", report.raw);
    }
}

#[test]
fn graphics_gets_the_gpus_drm_nodes_and_their_groups() {
    let d = fake_devices();
    let rt = GpuRuntime::new(d);
    // `display` alone is graphics plus `nvidia-modeset` (README, NVIDIA_DRIVER_CAPABILITIES).
    for (capabilities, modeset) in [("graphics,utility", false), ("display", true)] {
        let env = format!("NVIDIA_DRIVER_CAPABILITIES={capabilities}");
        let graphics = gpu_bundle(
            &rt,
            &probes(
                &["/dev/dri/card2", "/dev/dri/renderD130"],
                &[(
                    "bypath",
                    "cd /dev/dri/by-path && for l in *; do echo \"$l $(readlink $l)\"; done",
                )],
            ),
            &["NVIDIA_VISIBLE_DEVICES=1", &env],
        )
        .unwrap();
        let report = rt.run_ok(&graphics);
        let (with, without) = if modeset {
            (vec!["/dev/nvidia-modeset"], vec![])
        } else {
            (vec![], vec!["/dev/nvidia-modeset"])
        };
        assert_nodes(
            &report,
            &[&["/dev/dri/card2", "/dev/dri/renderD130"][..], &with].concat(),
            &[&["/dev/dri/card1", "/dev/dri/renderD129"][..], &without].concat(),
        );
        assert_opens(&report, 2);
        let bus = d.bus_id(1);
        assert_eq!(
            report.lines("bypath"),
            [
                format!("pci-{bus}-card ../card2"),
                format!("pci-{bus}-render ../renderD130")
            ],
            "{capabilities}"
        );
        let gids: Vec<&str> = report.out("gids").split_whitespace().collect();
        assert!(
            gids.contains(&"44") && gids.contains(&"109"),
            "{capabilities}: id -G: {gids:?}"
        );
        rt.assert_clean(&graphics);
    }
    let compute = bundle(&rt, &[], &["NVIDIA_VISIBLE_DEVICES=1"]);
    let report = rt.run_ok(&compute);
    assert!(!report.out("nodes").contains("/dev/dri"), "{}", report.raw);
    assert_eq!(report.out("gids"), "0");
}

#[test]
fn user_namespace_container_gets_nested_nodes_bound() {
    let d = fake_devices();
    let rt = GpuRuntime::new(d);
    let nested = [
        "/dev/nvidia-caps/nvidia-cap21",
        "/dev/nvidia-caps/nvidia-cap22",
        "/dev/nvidia-caps-imex-channels/channel0",
    ];
    let mut bundle = bundle(
        &rt,
        &nested,
        &["NVIDIA_VISIBLE_DEVICES=0:0", "NVIDIA_IMEX_CHANNELS=0"],
    );
    bundle.add_user_namespace();
    bundle.save().unwrap();
    let report = rt.run_ok(&bundle);
    assert_nodes(&report, &nested, &["/dev/nvidia-caps/nvidia-cap23"]);
    assert_opens(&report, nested.len());
    rt.assert_clean(&bundle);
}
