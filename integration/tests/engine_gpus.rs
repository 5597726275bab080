//! GPUs asked for the engines' own ways, through engines configured by `gpu-youki setup`, on
//! the fake 8-GPU driver: dockerd 20.10 `--gpus` (its `nvidia-container-runtime-hook` found as
//! setup's placeholder), containerd 1.6 `ctr run --gpus` (`nvidia-container-cli` placeholder on
//! ctr's PATH) and CRI pods (`NVIDIA_VISIBLE_DEVICES`, the device plugin's `/dev/null` volume
//! mounts, UpdateContainerResources, CDI annotations passed by `container_annotations`, and a
//! CDI annotation alone resolved through the spec `gpu-youki cdi generate` wrote; a pod naming
//! no handler runs on the default runtime setup set).
//! Containers look at their `/dev/nvidia*` nodes and driver files (busybox image), and
//! `cuda-probe` in the glibc image loads libcuda through the ld.so.cache and counts the GPUs.
//! Each test first checks setup itself (dry run, kept content, backup, idempotency) on the
//! harness's config, then starts the real daemon on what setup wrote (docker's under a
//! `--runtime-name` of its own). The placeholders must never run: gpu-youki leaves the
//! engines' GPU hooks out of the container; run directly at the end, each fails loudly.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use integration::bundle::unique;
use integration::engines::{self, str_field, Containerd, Dockerd, EngineSetup};
use integration::gpu::{fixtures, script, Report, CONFIG_ENV};
use serde_json::{json, Value};

/// What the containers print: their `/dev/nvidia*` nodes, the driver libraries they got, and
/// whether the ld.so.cache gpu-youki wrote names libcuda.
const PROBES: &[(&str, &str)] = &[
    ("devs", "ls /dev | grep '^nvidia'"),
    (
        "libs",
        "ls /usr/lib64 /usr/lib/x86_64-linux-gnu 2>/dev/null",
    ),
    ("cache", "grep -c libcuda.so.1 /etc/ld.so.cache"),
];

/// The name `gpu-youki setup docker --runtime-name` registers: not the default, so that
/// dockerd proves the option (`docker run --runtime`, `default-runtime`). containerd's handler
/// keeps the default name, [`Containerd::HANDLER`], which the harness's pods ask for.
const DOCKER_RUNTIME: &str = "gpu-youki-by-setup";

/// A scratch directory for one test: gpu-youki config, placeholders and their run log, and a
/// CDI spec directory holding the spec `gpu-youki cdi generate` wrote for the fake driver.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(runtime: &Path) -> Result<Self> {
        let dir = std::env::temp_dir().join(unique("gytest-engine-gpus"));
        let cdi = dir.join("cdi");
        fs::create_dir_all(&cdi).with_context(|| format!("creating {}", cdi.display()))?;
        // The fake 8-GPU driver, with device lists from volume mounts accepted.
        let fake = &fixtures().fake8;
        let base = fs::read_to_string(fake.config())?;
        let scratch = Scratch { dir };
        fs::write(
            scratch.gpu_config(),
            format!(
                "{base}\n[request]\nvolume-mounts = true\n[cdi]\nspec-dirs = [{}]\n",
                json!(cdi)
            ),
        )?;
        engines::run(
            Command::new(runtime)
                .env(CONFIG_ENV, scratch.gpu_config())
                .args(["cdi", "generate", "--format", "yaml", "--output"])
                .arg(cdi.join("nvidia.yaml")),
        )?
        .success()
        .context("gpu-youki cdi generate")?;
        Ok(scratch)
    }

    fn gpu_config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    fn placeholders(&self) -> PathBuf {
        self.dir.join("bin")
    }

    fn placeholder_log(&self) -> PathBuf {
        self.dir.join("placeholder-runs.log")
    }

    /// The engine's additions: the fake driver config and the placeholders on PATH, and
    /// `gpu-youki setup ENGINE` (checked by [`check_setup`]) as the configure step.
    fn engine_setup(&self, runtime: &Path, engine: &'static str) -> EngineSetup {
        let (runtime, placeholders, log) = (
            runtime.to_path_buf(),
            self.placeholders(),
            self.placeholder_log(),
        );
        EngineSetup {
            env: vec![(CONFIG_ENV.to_string(), self.gpu_config())],
            path: vec![self.placeholders()],
            configure: Some(Box::new(move |config: &Path| {
                check_setup(&runtime, engine, config, &placeholders, &log)
                    .with_context(|| format!("gpu-youki setup {engine}"))
            })),
        }
    }

    /// The placeholders never ran while the engine ran containers (their log does not exist),
    /// and each fails loudly when run: exit status 1, stderr saying it is a gpu-youki
    /// placeholder and not the toolkit's program, and a line in the log naming it and its
    /// arguments.
    fn check_placeholders(&self) -> Result<()> {
        let log = self.placeholder_log();
        ensure!(
            !log.exists(),
            "a placeholder ran (an engine hook was not left out): {}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        let mut runs = 0;
        for entry in fs::read_dir(self.placeholders())? {
            let placeholder = entry?.path();
            let out = engines::run(Command::new(&placeholder).args(["configure", "--device=1"]))?;
            runs += 1;
            ensure!(
                out.code() == Some(1)
                    && out.stderr.contains(&format!(
                        "gpu-youki placeholder {} was run",
                        placeholder.display()
                    ))
                    && out
                        .stderr
                        .contains("this is not the NVIDIA Container Toolkit"),
                "running {} directly: {out}",
                placeholder.display()
            );
            let logged = fs::read_to_string(&log)
                .with_context(|| format!("{} left no {}", placeholder.display(), log.display()))?;
            let lines: Vec<&str> = logged.lines().collect();
            ensure!(
                lines.len() == runs
                    && lines[runs - 1].contains(&format!("{}[", placeholder.display()))
                    && lines[runs - 1].ends_with("]: configure --device=1"),
                "{} after running {}:\n{logged}",
                log.display(),
                placeholder.display()
            );
        }
        ensure!(runs == 1, "{runs} placeholders installed");
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `gpu-youki setup ENGINE --config CONFIG --set-as-default` with private placeholders, and
/// for docker `--runtime-name` [`DOCKER_RUNTIME`].
fn setup_command(
    runtime: &Path,
    engine: &str,
    config: &Path,
    placeholders: &Path,
    log: &Path,
) -> Command {
    let mut cmd = Command::new(runtime);
    cmd.args(["setup", engine, "--set-as-default", "--config"])
        .arg(config)
        .arg("--placeholder-dir")
        .arg(placeholders)
        .arg("--placeholder-log")
        .arg(log);
    if engine == "docker" {
        cmd.args(["--runtime-name", DOCKER_RUNTIME]);
    }
    cmd
}

/// The backups setup made of `config` (`CONFIG.STAMP.bak`).
fn backups(config: &Path) -> Result<Vec<PathBuf>> {
    let name = config.file_name().unwrap().to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in fs::read_dir(config.parent().unwrap())? {
        let entry = entry?;
        let file = entry.file_name().to_string_lossy().into_owned();
        if file.starts_with(&format!("{name}.")) && file.ends_with(".bak") {
            found.push(entry.path());
        }
    }
    Ok(found)
}

/// Setup on the harness's config: a dry run prints what a real run then writes and writes
/// nothing; the real run keeps the old file as a backup; a second run changes nothing and
/// makes no new backup; the placeholder is installed and a real program of its name is never
/// replaced.
fn check_setup(
    runtime: &Path,
    engine: &str,
    config: &Path,
    placeholders: &Path,
    log: &Path,
) -> Result<()> {
    let before = fs::read_to_string(config)?;
    let setup = || setup_command(runtime, engine, config, placeholders, log);

    let dry = engines::run(setup().arg("--dry-run"))?.success()?;
    ensure!(
        fs::read_to_string(config)? == before,
        "--dry-run changed {}",
        config.display()
    );
    ensure!(
        !placeholders.exists() && backups(config)?.is_empty(),
        "--dry-run installed a placeholder or made a backup"
    );

    engines::run(&mut setup())?.success()?;
    let after = fs::read_to_string(config)?;
    ensure!(
        after == dry.stdout,
        "the dry run printed:\n{}\nbut setup wrote:\n{after}",
        dry.stdout
    );
    let made = backups(config)?;
    ensure!(made.len() == 1, "backups: {made:?}");
    ensure!(
        fs::read_to_string(&made[0])? == before,
        "{} is not the old file",
        made[0].display()
    );
    match engine {
        "docker" => {
            let (old, new): (Value, Value) = (
                serde_json::from_str(&before)?,
                serde_json::from_str(&after)?,
            );
            for (key, value) in old.as_object().context("daemon.json")? {
                ensure!(&new[key] == value, "{key} changed: {after}");
            }
            ensure!(
                new["runtimes"][DOCKER_RUNTIME]["path"] == json!(runtime)
                    && new["runtimes"].get(Dockerd::RUNTIME).is_none(),
                "{after}"
            );
            ensure!(new["default-runtime"] == DOCKER_RUNTIME, "{after}");
        }
        _ => {
            ensure!(
                after.starts_with(&before),
                "setup changed the harness's part of the config:\n{after}"
            );
            let handler = format!(
                "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{}]",
                Containerd::HANDLER
            );
            for line in [
                handler.as_str(),
                "container_annotations = [\"cdi.k8s.io/*\"]",
                &format!("BinaryName = {}", json!(runtime)),
            ] {
                ensure!(after.contains(line), "no {line} in:\n{after}");
            }
        }
    }

    let again = engines::run(&mut setup())?.success()?;
    ensure!(
        fs::read_to_string(config)? == after && backups(config)?.len() == 1,
        "a second setup changed something: {again}"
    );
    ensure!(again.stdout.contains("already"), "{again}");

    let placeholder = fs::read_dir(placeholders)?
        .next()
        .context("no placeholder installed")??
        .path();
    let text = fs::read_to_string(&placeholder)?;
    ensure!(
        text.contains("gpu-youki placeholder") && text.contains("NOT the NVIDIA"),
        "{}: {text}",
        placeholder.display()
    );

    // A real program of that name (the toolkit's) is never replaced.
    let elsewhere = config.with_file_name("real-bin");
    fs::create_dir_all(&elsewhere)?;
    let real = elsewhere.join(placeholder.file_name().unwrap());
    fs::write(&real, "#!/bin/sh\nexit 0\n")?;
    let refused = engines::run(&mut setup_command(runtime, engine, config, &elsewhere, log))?;
    ensure!(
        !refused.status.success()
            && refused.stderr.contains("is not a gpu-youki placeholder")
            && fs::read_to_string(&real)? == "#!/bin/sh\nexit 0\n",
        "setup over a real program: {refused}"
    );
    fs::remove_dir_all(&elsewhere)?;
    Ok(())
}

/// Checks what `cuda-probe` printed in the glibc image: libcuda found through the ld.so.cache
/// gpu-youki wrote, initialised, and seeing `count` GPUs.
fn check_probe(what: &str, output: &str, count: usize) -> Result<()> {
    let values: std::collections::BTreeMap<&str, &str> =
        output.lines().filter_map(|l| l.split_once('=')).collect();
    ensure!(
        values.get("marker") == Some(&"libcuda.so.1")
            && values.get("cuInit") == Some(&"0")
            && values.get("device_count") == Some(&count.to_string().as_str()),
        "{what}: cuda-probe printed:\n{output}"
    );
    Ok(())
}

/// The `ls /dev | grep ^nvidia` names of GPU nodes (`nvidiaN`), sorted.
fn gpu_nodes(report: &Report) -> Vec<String> {
    let mut nodes: Vec<String> = report
        .lines("devs")
        .into_iter()
        .filter(|name| {
            name.strip_prefix("nvidia")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(String::from)
        .collect();
    nodes.sort();
    nodes
}

/// Checks the container got exactly the GPU nodes `gpus`, `nvidiactl`, the libraries of
/// `present` and none of `absent`; with libcuda, `nvidia-uvm` and an ld.so.cache naming it.
fn check_container(
    what: &str,
    output: &str,
    gpus: &[u32],
    present: &[&str],
    absent: &[&str],
) -> Result<()> {
    let report = Report::parse(output.as_bytes());
    let expected: Vec<String> = {
        let mut names: Vec<String> = gpus.iter().map(|i| format!("nvidia{i}")).collect();
        names.sort();
        names
    };
    ensure!(
        gpu_nodes(&report) == expected,
        "{what}: GPU nodes {:?}, expected {expected:?}:\n{output}",
        gpu_nodes(&report)
    );
    // nvidia-uvm and an ld.so.cache naming libcuda come with the compute libraries.
    let compute = present.contains(&"libcuda.so.1");
    let devs = report.lines("devs");
    for (control, expected) in [("nvidiactl", true), ("nvidia-uvm", compute)] {
        ensure!(
            devs.contains(&control) == expected,
            "{what}: /dev/{control} present: {}, expected {expected}:\n{output}",
            !expected
        );
    }
    let libs = report.lines("libs");
    for lib in present {
        ensure!(libs.contains(lib), "{what}: no {lib}:\n{output}");
    }
    for lib in absent {
        ensure!(!libs.contains(lib), "{what}: {lib} given:\n{output}");
    }
    ensure!(
        (report.rc("cache") == 0) == compute,
        "{what}: ld.so.cache naming libcuda: {}, expected {compute}:\n{output}",
        report.rc("cache") == 0
    );
    Ok(())
}

#[test]
fn docker_gpus_through_gpu_youki_setup() -> Result<()> {
    engines::require_root()?;
    let runtime = engines::runtime_binary()?;
    let images = engines::test_images()?;
    let scratch = Scratch::new(&runtime)?;
    let docker = Dockerd::start_with(&runtime, scratch.engine_setup(&runtime, "docker"))?;
    docker.load(&images.busybox)?;
    docker.load(&images.glibc)?;
    let image = images.busybox.reference.as_str();
    let probes = script(PROBES);

    let out = docker
        .docker([
            "run",
            "--rm",
            "--runtime",
            DOCKER_RUNTIME,
            "--gpus",
            "all",
            &images.glibc.reference,
            "cuda-probe",
        ])?
        .success()
        .context("cuda-probe with --gpus all")?;
    check_probe("docker --gpus all", &out.stdout, 8)?;

    let compute_utility = ["libcuda.so.1", "libnvidia-ml.so.1"];
    for (gpus, expected, present, absent) in [
        (
            "all",
            &[0, 1, 2, 3, 4, 5, 6, 7][..],
            &compute_utility[..],
            &["libGLX_nvidia.so.0"][..],
        ),
        ("1", &[0], &compute_utility, &["libGLX_nvidia.so.0"]),
        (
            "\"device=2,5\",\"capabilities=utility\"",
            &[2, 5],
            &["libnvidia-ml.so.1"],
            &["libcuda.so.1", "libGLX_nvidia.so.0"],
        ),
        (
            "\"device=0,1\",\"capabilities=compute,utility\"",
            &[0, 1],
            &compute_utility,
            &["libGLX_nvidia.so.0"],
        ),
    ] {
        let out = docker
            .docker([
                "run",
                "--rm",
                "--runtime",
                DOCKER_RUNTIME,
                "--gpus",
                gpus,
                image,
                "sh",
                "-c",
                &probes,
            ])?
            .success()
            .with_context(|| format!("docker run --gpus {gpus}"))?;
        check_container(
            &format!("--gpus {gpus}"),
            &out.stdout,
            expected,
            present,
            absent,
        )?;
    }

    // `--gpus 0` asks for no GPU: the container gets none, and no placeholder runs.
    let out = docker
        .docker([
            "run",
            "--rm",
            "--runtime",
            DOCKER_RUNTIME,
            "--gpus",
            "0",
            image,
            "sh",
            "-c",
            "ls /dev | grep -c '^nvidia'; echo $NVIDIA_VISIBLE_DEVICES",
        ])?
        .success()
        .context("docker run --gpus 0")?;
    ensure!(out.stdout == "0\n\n", "--gpus 0: {out}");

    setkey_hook_kept(&docker, image).context("libnetwork-setkey beside --gpus")?;
    scratch.check_placeholders()?;
    docker.shutdown()
}

/// docker's `libnetwork-setkey` prestart hook stays in the effective spec beside the dropped
/// GPU hook, and ran: docker bound the container's network namespace at its sandbox key.
/// Runs with the default runtime, which setup's `--set-as-default` made gpu-youki. docker adds
/// the hook for a container with a network namespace of its own: `--network none` (the
/// harness's dockerd, with `bridge: none`, adds none by default).
fn setkey_hook_kept(docker: &Dockerd, image: &str) -> Result<()> {
    let out = docker
        .docker([
            "run",
            "-d",
            "--network",
            "none",
            "--gpus",
            "1",
            image,
            "sleep",
            "1000",
        ])?
        .success()?;
    let id = out.stdout.trim().to_owned();
    let inspect = |format: &str| -> Result<String> {
        Ok(docker
            .docker(["inspect", "--format", format, &id])?
            .success()?
            .stdout
            .trim()
            .to_owned())
    };
    ensure!(inspect("{{.HostConfig.Runtime}}")? == DOCKER_RUNTIME);
    let effective = docker.runtime_state(&id).join("gpu-config.json");
    let spec: Value = serde_json::from_slice(
        &fs::read(&effective).with_context(|| format!("reading {}", effective.display()))?,
    )?;
    let prestart = spec["hooks"]["prestart"].to_string();
    ensure!(
        prestart.contains("libnetwork-setkey") && !prestart.contains("nvidia-container"),
        "effective prestart hooks: {prestart}; network mode {}; bundle's: {}",
        inspect("{{.HostConfig.NetworkMode}}")?,
        fs::read_to_string(docker.runtime_state(&id).join("state.json")).unwrap_or_default()
    );
    let pid = inspect("{{.State.Pid}}")?;
    let key = inspect("{{.NetworkSettings.SandboxKey}}")?;
    let netns = fs::metadata(format!("/proc/{pid}/ns/net"))?.ino();
    let bound = fs::metadata(&key).with_context(|| format!("sandbox key {key}"))?;
    ensure!(
        bound.ino() == netns,
        "{key} is not the container's network namespace: libnetwork-setkey did not run"
    );
    docker.docker(["rm", "--force", &id])?.success()?;
    Ok(())
}

#[test]
fn containerd_gpus_through_gpu_youki_setup() -> Result<()> {
    engines::require_root()?;
    let runtime = engines::runtime_binary()?;
    let images = engines::test_images()?;
    let scratch = Scratch::new(&runtime)?;
    let ctrd = Containerd::start_with(
        &runtime,
        &images.pause.reference,
        scratch.engine_setup(&runtime, "containerd"),
    )?;
    ctrd.import(&ctrd.namespace(), &images.busybox)?;
    ctrd.import(&ctrd.namespace(), &images.glibc)?;
    let image = images.busybox.reference.as_str();

    let out = engines::run(&mut ctrd.ctr_run(&[
        "--rm",
        "--gpus",
        "3",
        &images.glibc.reference,
        "probe",
        "cuda-probe",
    ]))?
    .success()
    .context("cuda-probe with ctr run --gpus 3")?;
    check_probe("ctr run --gpus 3", &out.stdout, 1)?;

    // ctr passes every capability but ngx: graphics and video libraries too.
    let probes = script(PROBES);
    let out = engines::run(
        &mut ctrd.ctr_run(&["--rm", "--gpus", "3", image, "gpus", "sh", "-c", &probes]),
    )?
    .success()
    .context("ctr run --gpus 3")?;
    check_container(
        "ctr run --gpus 3",
        &out.stdout,
        &[3],
        &[
            "libcuda.so.1",
            "libnvidia-ml.so.1",
            "libGLX_nvidia.so.0",
            "libnvidia-encode.so.1",
        ],
        &["libnvidia-ngx.so.1"],
    )?;

    ctrd.import(Containerd::CRI_NAMESPACE, &images.pause)?;
    ctrd.import(Containerd::CRI_NAMESPACE, &images.busybox)?;
    cri_gpus(&ctrd, image).context("CRI pod with GPUs")?;
    cri_default_runtime(&ctrd, image).context("CRI pod on the default runtime")?;
    scratch.check_placeholders()?;
    ctrd.shutdown()
}

fn exec_sync(ctrd: &Containerd, id: &str, script: &str) -> Result<Value> {
    ctrd.cri(
        "ExecSync",
        &json!({ "container_id": id, "cmd": ["sh", "-c", script], "timeout": 30 }),
    )
}

/// A pod on the handler setup registered: a container asking by `NVIDIA_VISIBLE_DEVICES` (with
/// a CDI annotation, which `container_annotations` must pass to config.json), one by the
/// device plugin's volume mounts, and one by a CDI annotation alone, resolved through the spec
/// `gpu-youki cdi generate` wrote; then an update with CRI's deny-all device rule.
fn cri_gpus(ctrd: &Containerd, image: &str) -> Result<()> {
    let pod = Pod::run(ctrd, "gpu-pod", Containerd::HANDLER)?;
    let container = |name: &str, extra: Value| pod.start(ctrd, image, name, extra);
    let annotation = ("cdi.k8s.io/gytest", "nvidia.com/gpu=1");
    let by_env = container(
        "by-env",
        json!({
            "envs": [{ "key": "NVIDIA_VISIBLE_DEVICES", "value": "1" }],
            "annotations": { annotation.0: annotation.1 },
        }),
    )?;
    let by_volume = container(
        "by-volume",
        json!({ "mounts": [{
            "container_path": "/var/run/nvidia-container-devices/6",
            "host_path": "/dev/null",
            "readonly": true,
        }] }),
    )?;

    // The device plugin's CDI annotation strategy: no environment, no mount. A PID namespace
    // of its own, so that its process 1 is the container's, not the pod's pause.
    let by_cdi = container(
        "by-cdi",
        json!({
            "annotations": { "cdi.k8s.io/gytest-plugin": "nvidia.com/gpu=4" },
            "linux": { "security_context": { "namespace_options": {
                "network": "NODE", "pid": "CONTAINER",
            } } },
        }),
    )?;

    let probes = script(PROBES);
    for (id, gpus) in [(&by_env, 1), (&by_volume, 6), (&by_cdi, 4)] {
        let out = exec_sync(ctrd, id, &probes)?;
        let stdout = out["stdout"].as_str().unwrap_or_default();
        check_container(
            &format!("CRI container with GPU {gpus}"),
            stdout,
            &[gpus],
            &["libcuda.so.1", "libnvidia-ml.so.1"],
            &[],
        )?;
    }

    let bundle_config = ctrd
        .dir()
        .join("state/io.containerd.runtime.v2.task")
        .join(Containerd::CRI_NAMESPACE)
        .join(&by_env)
        .join("config.json");
    let spec: Value = serde_json::from_slice(
        &fs::read(&bundle_config)
            .with_context(|| format!("reading {}", bundle_config.display()))?,
    )?;
    ensure!(
        spec["annotations"][annotation.0] == annotation.1,
        "the CDI annotation did not reach config.json: {}",
        spec["annotations"]
    );

    // The generated spec's edits, not a native GPU selector, gave by-cdi its GPU: the
    // container's process has the spec's environment (exec'd processes get CRI's, not it).
    let out = exec_sync(ctrd, &by_cdi, "tr '\\0' '\\n' </proc/1/environ")?;
    let environ = out["stdout"].as_str().unwrap_or_default();
    ensure!(
        environ.lines().any(|l| l == "NVIDIA_VISIBLE_DEVICES=void")
            && environ
                .lines()
                .any(|l| l.starts_with("NVIDIA_CTK_LIBCUDA_DIR=")),
        "by-cdi's process has not the spec's environment: {out}"
    );

    // kubelet's resize; containerd adds `"devices":[{"allow":false,"access":"rwm"}]`.
    ctrd.cri(
        "UpdateContainerResources",
        &json!({ "container_id": by_env, "linux": { "cpu_shares": 512, "memory_limit_in_bytes": 64u64 << 20 } }),
    )?;
    let cgroup = format!("{}/{by_env}", ctrd.cgroup_parent());
    let rules = engines::read_cgroup_file("devices", &cgroup, "devices.list")?;
    let uvm = &fixtures().fake8.manifest["majors"]["nvidia-uvm"];
    for rule in [
        "c 195:1 rwm".to_string(),
        "c 195:255 rwm".into(),
        format!("c {uvm}:0 rwm"),
    ] {
        ensure!(
            rules.lines().any(|r| r == rule),
            "the update took {rule} away: devices.list {rules}"
        );
    }
    // The node has no driver behind it: opening fails with ENXIO, not with the cgroup's EPERM.
    let out = exec_sync(ctrd, &by_env, "head -c 1 /dev/nvidia1")?;
    let stderr = out["stderr"].as_str().unwrap_or_default();
    ensure!(
        !stderr.contains("not permitted") && stderr.contains("No such device"),
        "/dev/nvidia1 after the update: {out}"
    );

    pod.remove(ctrd, &[by_env, by_volume, by_cdi])
}

/// A pod naming no runtime handler runs on the CRI plugin's `default_runtime_name`, which
/// `setup containerd --set-as-default` made gpu-youki (the harness's config names none then):
/// its container gets the GPU its environment asks for.
fn cri_default_runtime(ctrd: &Containerd, image: &str) -> Result<()> {
    let pod = Pod::run(ctrd, "default-pod", "")?;
    let id = pod.start(
        ctrd,
        image,
        "default-runtime",
        json!({ "envs": [{ "key": "NVIDIA_VISIBLE_DEVICES", "value": "2" }] }),
    )?;
    let out = exec_sync(ctrd, &id, &script(PROBES))?;
    check_container(
        "CRI pod on the default runtime",
        out["stdout"].as_str().unwrap_or_default(),
        &[2],
        &["libcuda.so.1", "libnvidia-ml.so.1"],
        &[],
    )?;
    pod.remove(ctrd, &[id])
}

/// A CRI pod sandbox and the config CreateContainer needs again.
struct Pod {
    sandbox: String,
    config: Value,
}

impl Pod {
    /// Starts the host-network pod `name` on runtime handler `handler` (`""`: the default).
    fn run(ctrd: &Containerd, name: &str, handler: &str) -> Result<Self> {
        let (sandbox, config) = ctrd.run_pod_sandbox_on(name, handler)?;
        Ok(Pod { sandbox, config })
    }

    /// Creates and starts container `name` of `image` (a shell sleeping until stopped) in the
    /// pod; `extra`'s keys replace the container config's.
    fn start(&self, ctrd: &Containerd, image: &str, name: &str, extra: Value) -> Result<String> {
        let mut config = json!({
            "metadata": { "name": name },
            "image": { "image": image },
            "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"],
            "linux": {
                "security_context": { "namespace_options": { "network": "NODE" } },
            },
        });
        for (key, value) in extra.as_object().context("extra container config")? {
            config[key] = value.clone();
        }
        let request = json!({
            "pod_sandbox_id": self.sandbox, "config": config, "sandbox_config": self.config,
        });
        let id = str_field(&ctrd.cri("CreateContainer", &request)?, "container_id")?;
        ctrd.cri("StartContainer", &json!({ "container_id": id }))?;
        Ok(id)
    }

    /// Stops and removes `containers`, then the pod.
    fn remove(self, ctrd: &Containerd, containers: &[String]) -> Result<()> {
        for id in containers {
            ctrd.cri(
                "StopContainer",
                &json!({ "container_id": id, "timeout": 10 }),
            )?;
            ctrd.cri("RemoveContainer", &json!({ "container_id": id }))?;
        }
        ctrd.cri("StopPodSandbox", &json!({ "pod_sandbox_id": self.sandbox }))?;
        ctrd.cri(
            "RemovePodSandbox",
            &json!({ "pod_sandbox_id": self.sandbox }),
        )?;
        Ok(())
    }
}
