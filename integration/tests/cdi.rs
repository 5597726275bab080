//! CDI, end to end on the fake driver: specs of the shape `nvidia-ctk cdi generate` writes and
//! of another vendor, requested by annotation and in `NVIDIA_VISIBLE_DEVICES`, applied without
//! running a single hook; `gpu-youki cdi generate` output (each `--format`) used as a spec,
//! by UUID and `all`; spec directory priority, in the default `/etc/cdi` and `/var/run/cdi`
//! too; stale specs; CUDA forward-compatibility libraries in the image.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use integration::bundle::unique;
use integration::gpu::{
    cache_target, fixtures, gpu_bundle, inspect_script, script, FakeDriver, GpuRuntime, Report,
    INSPECT, LIB_DIR,
};
use serde_json::json;

/// A scratch directory for spec dirs, the marker hook and configs; removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(unique("gpu-youki-cdi"));
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// A gpu-youki config for `driver` whose CDI spec dirs are `dirs` (under the scratch dir).
    fn runtime(&self, driver: &FakeDriver, dirs: &[&str]) -> GpuRuntime {
        let dirs: Vec<String> = dirs
            .iter()
            .map(|d| {
                let path = self.path(d);
                fs::create_dir_all(&path).unwrap();
                format!("{:?}", path.display().to_string())
            })
            .collect();
        let config = self.path(&format!("config-{}.toml", unique("c")));
        let text = fs::read_to_string(driver.config()).unwrap();
        fs::write(
            &config,
            format!("{text}\n[cdi]\nspec-dirs = [{}]\n", dirs.join(", ")),
        )
        .unwrap();
        GpuRuntime::with_config(config)
    }

    /// A stand-in for `nvidia-cdi-hook` that records every run; gpu-youki must never run it.
    fn marker_hook(&self) -> PathBuf {
        self.marker_program("nvidia-cdi-hook")
    }

    /// A stand-in for the hook program `name` (`nvidia-cdi-hook`, `nvidia-ctk`) that records
    /// every run.
    fn marker_program(&self, name: &str) -> PathBuf {
        let bin = self.path("bin");
        fs::create_dir_all(&bin).unwrap();
        let hook = bin.join(name);
        fs::write(
            &hook,
            format!(
                "#!/bin/sh\necho \"$@\" >> {}\n",
                self.path("hook-runs").display()
            ),
        )
        .unwrap();
        fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
        hook
    }

    /// What the marker hook recorded (empty when it never ran).
    fn hook_runs(&self) -> String {
        fs::read_to_string(self.path("hook-runs")).unwrap_or_default()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A spec for `driver` of exactly the shape `nvidia-ctk cdi generate --driver-root D
/// --dev-root D` (1.17–1.20) writes, with `hook` as the hook program.
fn nvidia_ctk_spec(driver: &FakeDriver, hook: &Path) -> String {
    let root = &driver.root;
    let version = driver.version();
    let hook = |args: &str| {
        format!(
            "  - hookName: createContainer\n    path: {}\n    args: [nvidia-cdi-hook, {args}]\n    \
             env: [NVIDIA_CTK_DEBUG=false]\n",
            hook.display()
        )
    };
    // A device node entry, its list item at `indent` spaces.
    let node = |name: &str, indent: usize| {
        let pad = " ".repeat(indent);
        format!(
            "{pad}- path: /dev/{name}\n{pad}  hostPath: {}/dev/{name}\n",
            root.display()
        )
    };
    let indented = |text: String| -> String { text.lines().map(|l| format!("  {l}\n")).collect() };
    let mut devices = String::new();
    for index in 0..driver.gpu_count() {
        for name in [index.to_string(), driver.uuid(index)] {
            devices.push_str(&format!(
                "- name: \"{name}\"\n  containerEdits:\n    deviceNodes:\n{}    hooks:\n{}{}",
                node(&format!("nvidia{index}"), 4),
                // The DRM by-path links of a real GPU (the fake one has no DRM node).
                indented(hook(&format!(
                    "create-symlinks, --link, \"../card{index}::/dev/dri/by-path/pci-{}-card\"",
                    driver.bus_id(index)
                ))),
                indented(hook("chmod, --mode, \"755\", --path, /dev/dri"))
            ));
        }
    }
    let all_nodes: String = (0..driver.gpu_count())
        .map(|i| node(&format!("nvidia{i}"), 4))
        .collect();
    devices.push_str(&format!(
        "- name: all\n  containerEdits:\n    deviceNodes:\n{all_nodes}"
    ));
    let mut mounts = String::new();
    let mut mount = |host: PathBuf, options: &str| {
        let container = Path::new("/").join(host.strip_prefix(root).unwrap());
        mounts.push_str(&format!(
            "  - hostPath: {}\n    containerPath: {}\n    options: [{options}]\n",
            host.display(),
            container.display()
        ));
    };
    for dir in [LIB_DIR.to_string(), format!("{LIB_DIR}/vdpau")] {
        let host_dir = root.join(dir.trim_start_matches('/'));
        let mut names: Vec<String> = fs::read_dir(&host_dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(&format!(".so.{version}")))
            .collect();
        names.sort();
        for name in names {
            mount(host_dir.join(name), "ro, nosuid, nodev, bind");
        }
    }
    for bin in ["nvidia-smi", "nvidia-debugdump", "nvidia-persistenced"] {
        mount(root.join("usr/bin").join(bin), "ro, nosuid, nodev, bind");
    }
    for gsp in ["gsp_ga10x.bin", "gsp_tu10x.bin"] {
        mount(
            root.join(format!("lib/firmware/nvidia/{version}/{gsp}")),
            "ro, nosuid, nodev, bind",
        );
    }
    mount(
        root.join("run/nvidia-persistenced/socket"),
        "ro, nosuid, nodev, bind, noexec",
    );
    let control: String = [
        "nvidia-modeset",
        "nvidia-uvm",
        "nvidia-uvm-tools",
        "nvidiactl",
    ]
    .iter()
    .map(|n| node(n, 2))
    .collect();
    format!(
        "---\ncdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n{devices}containerEdits:\n  \
         env:\n  - NVIDIA_CTK_LIBCUDA_DIR={LIB_DIR}\n  - NVIDIA_VISIBLE_DEVICES=void\n  \
         deviceNodes:\n{control}  hooks:\n{}{}{}{}{}  mounts:\n{mounts}",
        hook(&format!(
            "create-symlinks, --link, \"libcuda.so.1::{LIB_DIR}/libcuda.so\", --link, \
             \"libGLX_nvidia.so.{version}::{LIB_DIR}/libGLX_indirect.so.0\""
        )),
        hook(&format!(
            "enable-cuda-compat, --host-driver-version={version}"
        )),
        hook(&format!(
            "update-ldcache, --folder, {LIB_DIR}, --folder, {LIB_DIR}/vdpau"
        )),
        hook("disable-device-node-modification"),
        hook("update-application-profile"),
    )
}

/// The probes for a CDI container: [`INSPECT`] plus links, env and the application profile.
fn cdi_script() -> String {
    let mut probes = INSPECT.to_vec();
    probes.extend([
        (
            "links",
            "cd /usr/lib/x86_64-linux-gnu && for l in libcuda.so libcuda.so.1 libGLX_indirect.so.0; do readlink $l; done",
        ),
        ("visible", "echo \"$NVIDIA_VISIBLE_DEVICES\""),
        (
            "profile",
            "cat /etc/nvidia/nvidia-application-profiles-rc.d/10-container.conf",
        ),
        (
            "drm",
            "stat -c %a /dev/dri; for l in /dev/dri/by-path/*; do echo \"$l $(readlink $l)\"; done",
        ),
        ("shm", "stat -c %a /dev/shm"),
    ]);
    script(&probes)
}

/// Asserts what a container given GPU `index` of `driver` by the nvidia-ctk spec sees.
fn assert_nvidia_cdi_container(report: &Report, driver: &FakeDriver, index: usize) {
    let mut expected = vec![
        format!("nvidia{index}"),
        "nvidia-modeset".to_string(),
        "nvidia-uvm".to_string(),
        "nvidia-uvm-tools".to_string(),
        "nvidiactl".to_string(),
    ];
    expected.sort();
    assert_eq!(report.nvidia_devices(), expected, "{}", report.raw);
    let probe = report.values("probe");
    assert_eq!(report.rc("probe"), 0, "{}", report.raw);
    assert_eq!(probe["marker"], "libcuda.so.1", "{}", report.raw);
    assert_eq!(
        probe["libcuda_file"],
        format!("{LIB_DIR}/libcuda.so.{}", driver.version())
    );
    assert_eq!(probe["device_count"], "1", "{}", report.raw);
    assert_eq!(
        cache_target(report.out("cache"), "libcuda.so.1").as_deref(),
        Some(&*format!("{LIB_DIR}/libcuda.so.1"))
    );
    assert_eq!(
        cache_target(report.out("cache"), "libvdpau_nvidia.so.1").as_deref(),
        Some(&*format!("{LIB_DIR}/vdpau/libvdpau_nvidia.so.1"))
    );
    assert_eq!(
        report.lines("links"),
        [
            "libcuda.so.1".to_string(),
            format!("libcuda.so.{}", driver.version()),
            format!("libGLX_nvidia.so.{}", driver.version())
        ]
    );
    assert_eq!(report.lines("procgpus"), [driver.bus_id(index)]);
    assert_eq!(report.out("params"), "ModifyDeviceFiles: 0");
    assert_eq!(report.out("visible"), "void");
    assert_eq!(
        report.lines("drm"),
        [
            "755".to_string(),
            format!(
                "/dev/dri/by-path/pci-{}-card ../card{index}",
                driver.bus_id(index)
            )
        ],
        "{}",
        report.raw
    );
    assert!(
        report
            .out("profile")
            .contains(&format!("\"EGLVisibleDGPUDevices\", 0x{:x}]", 1 << index)),
        "{}",
        report.raw
    );
    let smi = report.lines("smi");
    assert_eq!(smi.len(), 1, "{}", report.raw);
    assert!(smi[0].contains(&driver.uuid(index)), "{}", report.raw);
}

#[test]
fn an_nvidia_ctk_spec_by_annotation_runs_natively_with_no_hook() {
    let f = fixtures();
    let scratch = Scratch::new();
    let rt = scratch.runtime(&f.fake2, &["etc-cdi", "run-cdi"]);
    let hook = scratch.marker_hook();
    fs::write(
        scratch.path("run-cdi/nvidia.yaml"),
        nvidia_ctk_spec(&f.fake2, &hook),
    )
    .unwrap();
    for (index, name) in [(1, "1".to_string()), (0, f.fake2.uuid(0))] {
        let mut bundle = gpu_bundle(&rt, &cdi_script(), &[]).unwrap();
        bundle.config["annotations"] =
            json!({ "cdi.k8s.io/gpu": format!("nvidia.com/gpu={name}") });
        bundle.save().unwrap();
        let report = rt.run_ok(&bundle);
        assert_nvidia_cdi_container(&report, &f.fake2, index);
        rt.assert_clean(&bundle);
    }
    assert_eq!(scratch.hook_runs(), "", "a hook process ran");
}

#[test]
fn nvidia_hooks_already_in_config_json_are_done_natively() {
    // Newer containerd and CRI-O apply CDI edits themselves: config.json then holds the
    // spec's nodes, mounts, env and NVIDIA hooks. gpu-youki removes the hooks and does their work.
    let f = fixtures();
    let scratch = Scratch::new();
    let rt = scratch.runtime(&f.fake2, &["none"]);
    let hook = scratch.marker_hook();
    let mut bundle = gpu_bundle(&rt, &cdi_script(), &["NVIDIA_VISIBLE_DEVICES=void"]).unwrap();
    let root = &f.fake2.root;
    let version = f.fake2.version();
    let mut mounts = bundle.config["mounts"].as_array().unwrap().clone();
    let mut devices = Vec::new();
    for name in [
        "nvidiactl",
        "nvidia-uvm",
        "nvidia-uvm-tools",
        "nvidia-modeset",
        "nvidia1",
    ] {
        let minor = match name {
            "nvidiactl" => 255,
            "nvidia-modeset" => 254,
            "nvidia-uvm" => 0,
            "nvidia-uvm-tools" => 1,
            _ => 1,
        };
        let major = if name.starts_with("nvidia-uvm") {
            fs::read_to_string(root.join("proc/devices"))
                .unwrap()
                .lines()
                .find(|l| l.ends_with(" nvidia-uvm"))
                .and_then(|l| l.split_whitespace().next()?.parse::<i64>().ok())
                .unwrap()
        } else {
            195
        };
        devices.push(
            json!({"path": format!("/dev/{name}"), "type": "c", "major": major,
            "minor": minor, "fileMode": 0o666}),
        );
    }
    for lib in ["libcuda", "libnvidia-ml"] {
        let file = format!("{lib}.so.{version}");
        mounts.push(
            json!({"destination": format!("{LIB_DIR}/{file}"), "type": "bind",
            "source": root.join("usr/lib/x86_64-linux-gnu").join(&file),
            "options": ["ro", "nosuid", "nodev", "bind"]}),
        );
    }
    mounts.push(json!({"destination": "/usr/bin/nvidia-smi", "type": "bind",
        "source": root.join("usr/bin/nvidia-smi"), "options": ["ro", "nosuid", "nodev", "bind"]}));
    bundle.config["mounts"] = json!(mounts);
    bundle.config["linux"]["devices"] = json!(devices);
    let rules: Vec<_> = devices
        .iter()
        .map(|d| json!({"allow": true, "type": "c", "major": d["major"], "minor": d["minor"], "access": "rwm"}))
        .collect();
    bundle.config["linux"]["resources"]["devices"]
        .as_array_mut()
        .unwrap()
        .extend(rules);
    let hook_entry = |args: &[&str]| {
        let mut argv = vec!["nvidia-cdi-hook".to_string()];
        argv.extend(args.iter().map(|a| a.to_string()));
        json!({"path": hook, "args": argv, "env": ["NVIDIA_CTK_DEBUG=false"]})
    };
    // Older specs name the hook as a subcommand of `nvidia-ctk`: the chmod is asked that way.
    let ctk = scratch.marker_program("nvidia-ctk");
    let ctk_chmod = json!({"path": ctk, "args": ["nvidia-ctk", "hook", "chmod", "--mode", "711",
        "--path", "/dev/shm"]});
    bundle.config["hooks"] = json!({"createContainer": [
        hook_entry(&["create-symlinks", "--link", &format!("libcuda.so.1::{LIB_DIR}/libcuda.so"),
            "--link", &format!("libGLX_nvidia.so.{version}::{LIB_DIR}/libGLX_indirect.so.0")]),
        hook_entry(&["update-ldcache", "--folder", LIB_DIR]),
        hook_entry(&["disable-device-node-modification"]),
        hook_entry(&["update-application-profile"]),
        ctk_chmod,
    ]});
    bundle.save().unwrap();
    let report = rt.run_ok(&bundle);
    let probe = report.values("probe");
    assert_eq!(report.rc("probe"), 0, "{}", report.raw);
    assert_eq!(probe["marker"], "libcuda.so.1");
    assert_eq!(report.lines("procgpus"), [f.fake2.bus_id(1)]);
    assert_eq!(report.out("params"), "ModifyDeviceFiles: 0");
    assert_eq!(report.out("shm"), "711", "the `nvidia-ctk hook chmod` mode");
    assert_eq!(
        report.lines("links")[..2],
        ["libcuda.so.1".to_string(), format!("libcuda.so.{version}")]
    );
    assert_eq!(scratch.hook_runs(), "", "a hook process ran");
    rt.assert_clean(&bundle);
}

#[test]
fn a_generated_spec_round_trips() {
    let f = fixtures();
    let scratch = Scratch::new();
    let rt = scratch.runtime(&f.fake2, &["etc-cdi", "run-cdi"]);
    let output = scratch.path("run-cdi/nvidia.json");
    rt.ok(&["cdi", "generate", "--output", output.to_str().unwrap()]);
    let mode = fs::metadata(&output).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    let spec: serde_json::Value = serde_json::from_slice(&fs::read(&output).unwrap()).unwrap();
    assert_eq!(spec["kind"], "nvidia.com/gpu");
    assert_eq!(spec["cdiVersion"], "0.5.0");
    let yaml = rt.ok(&["cdi", "generate"]);
    assert!(
        yaml.starts_with("---\ncdiVersion: 0.5.0\nkind: nvidia.com/gpu\n"),
        "{yaml}"
    );
    // `--format` given: on stdout, and to an --output whose name says the other format.
    let json_text = rt.ok(&["cdi", "generate", "--format", "json"]);
    let from_stdout: serde_json::Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(from_stdout, spec, "--format json on stdout");
    assert_eq!(rt.ok(&["cdi", "generate", "--format", "yaml"]), yaml);
    let named_json = scratch.path("yaml-spec.json");
    let named_yaml = scratch.path("json-spec.yaml");
    for (format, output) in [("yaml", &named_json), ("json", &named_yaml)] {
        let output = output.to_str().unwrap();
        rt.ok(&["cdi", "generate", "--format", format, "--output", output]);
    }
    assert_eq!(fs::read_to_string(&named_json).unwrap(), yaml);
    assert_eq!(fs::read_to_string(&named_yaml).unwrap(), json_text);
    let mut names: Vec<String> = rt.ok(&["cdi", "list"]).lines().map(String::from).collect();
    names.sort();
    assert!(
        names.contains(&"nvidia.com/gpu=all".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&format!("nvidia.com/gpu={}", f.fake2.uuid(1))));

    // A GPU by UUID, and every GPU by `all`; the spec's own environment shows it was used.
    let mut probes = INSPECT.to_vec();
    probes.push(("spec-env", "echo \"$NVIDIA_CTK_LIBCUDA_DIR\""));
    for (device, indices) in [(f.fake2.uuid(1), &[1][..]), ("all".into(), &[0, 1])] {
        let mut bundle = gpu_bundle(&rt, &script(&probes), &[]).unwrap();
        bundle.config["annotations"] =
            json!({ "cdi.k8s.io/gpus": format!("nvidia.com/gpu={device}") });
        bundle.save().unwrap();
        let report = rt.run_ok(&bundle);
        let probe = report.values("probe");
        assert_eq!(probe["marker"], "libcuda.so.1", "{device}: {}", report.raw);
        assert_eq!(probe["device_count"], indices.len().to_string(), "{device}");
        let bus_ids: Vec<String> = indices.iter().map(|&i| f.fake2.bus_id(i)).collect();
        assert_eq!(report.lines("procgpus"), bus_ids, "{device}");
        assert_eq!(report.out("params"), "ModifyDeviceFiles: 0");
        let smi = report.lines("smi");
        assert_eq!(smi.len(), indices.len(), "{device}: {smi:?}");
        for (line, &index) in smi.iter().zip(indices) {
            assert!(line.contains(&f.fake2.uuid(index)), "{device}: {smi:?}");
        }
        assert_eq!(report.out("spec-env"), LIB_DIR, "{device}: {}", report.raw);
        rt.assert_clean(&bundle);
    }
}

/// A spec of another vendor, for nodes made with mknod in `scratch`: a character device node
/// (a copy of /dev/null's numbers) and a block one, an environment variable saying which spec it
/// came from, additional groups (0, which the CDI library drops, and 4242), a tmpfs mount, and
/// a createRuntime hook recording the spec it came from in the scratch dir's `vendor-hook-runs`.
fn vendor_spec(scratch: &Scratch, from: &str) -> String {
    json!({
        "cdiVersion": "0.7.0",
        "kind": "vendor.com/device",
        "devices": [{"name": "x", "containerEdits": {
            "env": [format!("VENDOR_FROM={from}")],
            "deviceNodes": [
                {"path": "/dev/vendor-x", "hostPath": scratch.path("vendor-x")},
                {"path": "/dev/vendor-blk", "hostPath": scratch.path("vendor-blk")},
            ],
            "additionalGids": [0, 4242],
            "mounts": [{"hostPath": "tmpfs", "containerPath": "/vendor-tmp", "type": "tmpfs",
                "options": ["nosuid", "size=1m"]}],
            "hooks": [{"hookName": "createRuntime", "path": "/bin/sh", "args": ["sh", "-c",
                format!("echo {from} >> {}", scratch.path("vendor-hook-runs").display())]}],
        }}],
    })
    .to_string()
}

#[test]
fn another_vendors_spec_in_the_env_and_dir_priority() {
    let f = fixtures();
    let scratch = Scratch::new();
    let rt = scratch.runtime(&f.fake2, &["etc-cdi", "run-cdi"]);
    for (name, kind, major, minor) in [("vendor-x", "c", "1", "3"), ("vendor-blk", "b", "7", "250")]
    {
        let status = Command::new("mknod")
            .args([scratch.path(name).to_str().unwrap(), kind, major, minor])
            .status()
            .unwrap();
        assert!(status.success());
    }
    fs::write(
        scratch.path("etc-cdi/vendor.json"),
        vendor_spec(&scratch, "etc"),
    )
    .unwrap();
    fs::write(
        scratch.path("run-cdi/vendor.json"),
        vendor_spec(&scratch, "run"),
    )
    .unwrap();
    let probes = script(&[
        ("from", "echo \"$VENDOR_FROM\""),
        (
            "node",
            "stat -c '%F %t:%T' /dev/vendor-x && echo hi > /dev/vendor-x",
        ),
        (
            "nvidia",
            "ls /dev | grep -c nvidia; ls /proc/driver/nvidia/gpus | wc -l",
        ),
        ("gids", "id -G"),
        ("blk", "stat -c '%F %t:%T' /dev/vendor-blk"),
        (
            "tmpfs",
            "grep -c ' /vendor-tmp .* - tmpfs ' /proc/self/mountinfo",
        ),
    ]);
    let bundle = gpu_bundle(
        &rt,
        &probes,
        &["NVIDIA_VISIBLE_DEVICES=vendor.com/device=x"],
    )
    .unwrap();
    let report = rt.run_ok(&bundle);
    assert_eq!(report.out("from"), "run", "the later directory wins");
    assert_eq!(
        report.out("node"),
        "character special file 1:3",
        "{}",
        report.raw
    );
    assert_eq!(report.rc("node"), 0);
    assert_eq!(report.out("gids"), "0 4242", "the spec's additionalGids");
    assert_eq!(
        report.out("blk"),
        "block special file 7:fa",
        "{}",
        report.raw
    );
    assert_eq!(report.out("tmpfs"), "1", "{}", report.raw);
    assert_eq!(
        fs::read_to_string(scratch.path("vendor-hook-runs")).unwrap_or_default(),
        "run\n",
        "the spec's hook ran once"
    );
    assert_eq!(
        report.lines("nvidia")[0],
        "0",
        "no NVIDIA device for another vendor"
    );
    rt.assert_clean(&bundle);

    // The same name twice in one directory is a conflict, and resolves to nothing.
    fs::write(
        scratch.path("run-cdi/vendor-copy.json"),
        vendor_spec(&scratch, "copy"),
    )
    .unwrap();
    let output = rt.run(&["run", "-b", bundle.path(), &unique("cdi")]);
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        err.contains("vendor.com/device=x is defined at the same priority"),
        "{err}"
    );
    rt.assert_clean(&bundle);
}

#[test]
fn stale_and_unresolvable_specs_fail_with_the_fix() {
    let f = fixtures();
    let scratch = Scratch::new();
    let rt = scratch.runtime(&f.fake2, &["etc-cdi"]);
    let hook = scratch.marker_hook();
    let stale_lib = f.fake2.root.join(format!(
        "usr/lib/x86_64-linux-gnu/libcuda.so.{}",
        f.fake2.version()
    ));
    let spec = nvidia_ctk_spec(&f.fake2, &hook).replace(
        &format!("hostPath: {}", stale_lib.display()),
        &format!("hostPath: {}", stale_lib.with_extension("999").display()),
    );
    let spec_path = scratch.path("etc-cdi/nvidia.yaml");
    fs::write(&spec_path, spec).unwrap();
    let mut bundle = gpu_bundle(&rt, &inspect_script(), &[]).unwrap();
    bundle.config["annotations"] = json!({ "cdi.k8s.io/gpu": "nvidia.com/gpu=0" });
    bundle.save().unwrap();
    let output = rt.run(&["run", "-b", bundle.path(), &unique("cdi")]);
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("stale"))
        .unwrap_or_else(|| panic!("{err}"));
    for expected in [
        spec_path.display().to_string(),
        stale_lib.with_extension("999").display().to_string(),
        format!("gpu-youki cdi generate --output {}", spec_path.display()),
    ] {
        assert!(line.contains(&expected), "{expected} not in {line}");
    }
    rt.assert_clean(&bundle);

    // A name no spec defines: another vendor's fails naming the dirs searched; an
    // `nvidia.com/gpu` one is a native GPU selector (GPU 7 of a 2-GPU host: unknown).
    bundle.config["annotations"] = json!({ "cdi.k8s.io/gpu": "vendor.com/device=7" });
    bundle.save().unwrap();
    let err = rt.run_err(&bundle);
    assert!(
        err.contains("unresolvable CDI device vendor.com/device=7: no spec in ")
            && err.contains(&scratch.path("etc-cdi").display().to_string()),
        "{err}"
    );
    rt.assert_clean(&bundle);
    bundle.config["annotations"] = json!({ "cdi.k8s.io/gpu": "nvidia.com/gpu=7" });
    bundle.save().unwrap();
    let err = rt.run_err(&bundle);
    assert!(err.contains("unknown device"), "{err}");
    assert_eq!(scratch.hook_runs(), "");
    rt.assert_clean(&bundle);

    // Containers that name no CDI device never read the specs: the stale one does not matter.
    let legacy = gpu_bundle(&rt, &inspect_script(), &["NVIDIA_VISIBLE_DEVICES=0"]).unwrap();
    let report = rt.run_ok(&legacy);
    assert_eq!(
        report.values("probe")["marker"],
        "libcuda.so.1",
        "{}",
        report.raw
    );
    rt.assert_clean(&legacy);
}

/// The device plugin's CDI annotation on a node without specs: `nvidia.com/gpu=<id>` that no
/// spec defines is the native GPU selector it also is.
/// Spec files this test put in the host's default spec directories, removed when dropped with
/// the directories it made.
struct HostSpecs {
    files: Vec<PathBuf>,
    made_dirs: Vec<PathBuf>,
}

impl Drop for HostSpecs {
    fn drop(&mut self) {
        for file in &self.files {
            let _ = fs::remove_file(file);
        }
        for dir in &self.made_dirs {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// With no `[cdi] spec-dirs`, the default `/etc/cdi` and `/var/run/cdi` are read, and the later
/// one wins. The kind is this test's own and the file names are unique, so no other container
/// on the host names these devices.
#[test]
fn the_default_spec_dirs_are_read_and_var_run_wins() {
    let f = fixtures();
    let rt = GpuRuntime::new(&f.fake2);
    let mut specs = HostSpecs {
        files: Vec::new(),
        made_dirs: Vec::new(),
    };
    let name = format!("{}.json", unique("gytest-default-dirs"));
    for (dir, from) in [("/etc/cdi", "etc"), ("/var/run/cdi", "run")] {
        let dir = Path::new(dir);
        if !dir.exists() {
            fs::create_dir_all(dir).unwrap();
            specs.made_dirs.push(dir.to_path_buf());
        }
        let file = dir.join(&name);
        let spec = json!({
            "cdiVersion": "0.5.0",
            "kind": "gytest.example/default-dirs",
            "devices": [{"name": "d", "containerEdits": {"env": [format!("DEFAULT_FROM={from}")]}}],
        });
        fs::write(&file, spec.to_string()).unwrap();
        specs.files.push(file);
    }
    let mut bundle = gpu_bundle(&rt, &script(&[("from", "echo \"$DEFAULT_FROM\"")]), &[]).unwrap();
    bundle.config["annotations"] = json!({ "cdi.k8s.io/test": "gytest.example/default-dirs=d" });
    bundle.save().unwrap();
    let report = rt.run_ok(&bundle);
    assert_eq!(report.out("from"), "run", "{}", report.raw);
    rt.assert_clean(&bundle);
}

#[test]
fn an_nvidia_gpu_annotation_without_a_spec_gets_the_gpu_natively() {
    let f = fixtures();
    let scratch = Scratch::new();
    let rt = scratch.runtime(&f.fake2, &["etc-cdi"]);
    let mut bundle = gpu_bundle(&rt, &inspect_script(), &[]).unwrap();
    let uuid = f.fake2.uuid(1);
    bundle.config["annotations"] =
        json!({ "cdi.k8s.io/nvidia-device-plugin": format!("nvidia.com/gpu={uuid}") });
    bundle.save().unwrap();
    let report = rt.run_ok(&bundle);
    assert_eq!(
        report.values("probe")["device_count"],
        "1",
        "{}",
        report.raw
    );
    assert_eq!(
        report.lines("procgpus"),
        [f.fake2.bus_id(1)],
        "{}",
        report.raw
    );
    rt.assert_clean(&bundle);
}

#[test]
fn cuda_forward_compat_libraries_are_used_only_when_newer() {
    let f = fixtures();
    let scratch = Scratch::new();
    let rt = scratch.runtime(&f.fake2, &["run-cdi"]);
    let host = f.fake2.version();
    let spec = scratch.path("run-cdi/nvidia.yaml");
    rt.ok(&["cdi", "generate", "--output", spec.to_str().unwrap()]);
    let compat_file = |v: &str| format!("/usr/local/cuda/compat/libcuda.so.{v}");
    let host_file = format!("{LIB_DIR}/libcuda.so.{host}");
    // (compat version, note branches, by CDI annotation, the libcuda the loader must open)
    let cases: [(&str, Option<&[u32]>, bool, String); 6] = [
        ("590.10.01", None, false, compat_file("590.10.01")),
        ("590.10.01", None, true, compat_file("590.10.01")),
        ("575.51.03", None, false, host_file.clone()),
        ("575.51.03", None, true, host_file.clone()),
        (
            "580.99.01",
            Some(&[550, 580]),
            false,
            compat_file("580.99.01"),
        ),
        ("590.10.01", Some(&[550]), false, host_file.clone()),
    ];
    for (version, note, by_cdi, expected) in cases {
        let env: &[&str] = if by_cdi {
            &[]
        } else {
            &["NVIDIA_VISIBLE_DEVICES=0"]
        };
        let mut bundle = gpu_bundle(&rt, &inspect_script(), env).unwrap();
        if by_cdi {
            bundle.config["annotations"] = json!({ "cdi.k8s.io/gpu": "nvidia.com/gpu=0" });
            bundle.save().unwrap();
        }
        integration::gpu::add_compat_libcuda(
            &bundle.dir.join("rootfs"),
            version,
            host,
            13010,
            note,
        )
        .unwrap();
        let report = rt.run_ok(&bundle);
        let probe = report.values("probe");
        let case = format!("compat {version} note {note:?} cdi {by_cdi}");
        assert_eq!(report.rc("probe"), 0, "{case}: {}", report.raw);
        assert_eq!(probe["libcuda_file"], expected, "{case}: {}", report.raw);
        let compat_used = expected.starts_with("/usr/local/cuda/compat");
        let marker = if compat_used {
            format!("compat-{version}")
        } else {
            "libcuda.so.1".into()
        };
        assert_eq!(probe["marker"], marker, "{case}");
        assert_eq!(
            probe["driver_version"],
            if compat_used { "13010" } else { "13000" },
            "{case}"
        );
        assert_eq!(report.out("params"), "ModifyDeviceFiles: 0", "{case}");
        // Read in the root, never mounted: no mount point in the image's compat directory
        // (the host's libcuda is one).
        let points: Vec<&str> = report
            .lines("mountinfo")
            .into_iter()
            .filter_map(|line| line.split(' ').nth(4))
            .collect();
        assert!(points.contains(&host_file.as_str()), "{case}: {points:?}");
        assert!(
            !points.iter().any(|p| p.starts_with("/usr/local/cuda")),
            "{case}: {points:?}"
        );
        rt.assert_clean(&bundle);
    }
}
