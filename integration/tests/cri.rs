//! containerd's CRI plugin, driven like kubelet drives it (CRI v1 over gRPC, through
//! integration/cri/cri.py), with the runtime handler `gpu-youki`: a host-network pod whose
//! sandbox and container both run with the runtime under test, ExecSync, and
//! UpdateContainerResources with the LinuxResources CRI sends (including its deny-all device
//! rule, which must not take the container's default devices away). One daemon for the file.

use anyhow::{ensure, Context, Result};
use integration::engines::{self, str_field, Containerd};
use serde_json::{json, Value};
use std::time::Duration;

const STATE_TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn cri_runs_a_pod_with_the_gpu_youki_handler() -> Result<()> {
    engines::require_root()?;
    let runtime = engines::runtime_binary()?;
    let images = engines::test_images()?;
    let ctrd = Containerd::start(&runtime, &images.pause.reference)?;
    ctrd.import(Containerd::CRI_NAMESPACE, &images.pause)?;
    ctrd.import(Containerd::CRI_NAMESPACE, &images.busybox)?;

    let (sandbox, pod) = ctrd.run_pod_sandbox("pod")?;
    let container = container_lifecycle(&ctrd, &sandbox, &pod, &images.busybox.reference)
        .context("CRI container in a gpu-youki pod")?;

    ctrd.cri("StopPodSandbox", &json!({ "pod_sandbox_id": sandbox }))?;
    ctrd.cri("RemovePodSandbox", &json!({ "pod_sandbox_id": sandbox }))?;
    for id in [&sandbox, &container] {
        let state = Containerd::runtime_state(Containerd::CRI_NAMESPACE, id);
        ensure!(
            !state.exists(),
            "runtime state {} survived its delete",
            state.display()
        );
    }
    ctrd.shutdown()
}

fn status(ctrd: &Containerd, id: &str) -> Result<Value> {
    let response = ctrd.cri("ContainerStatus", &json!({ "container_id": id }))?;
    Ok(response["status"].clone())
}

fn exec_sync(ctrd: &Containerd, id: &str, script: &str) -> Result<Value> {
    ctrd.cri(
        "ExecSync",
        &json!({ "container_id": id, "cmd": ["sh", "-c", script], "timeout": 30 }),
    )
}

fn cgroup_file(ctrd: &Containerd, controller: &str, id: &str, file: &str) -> Result<String> {
    engines::read_cgroup_file(controller, &format!("{}/{id}", ctrd.cgroup_parent()), file)
}

/// Create → start → log → ExecSync → update → stop → remove; returns the container id.
fn container_lifecycle(
    ctrd: &Containerd,
    sandbox: &str,
    pod: &Value,
    image: &str,
) -> Result<String> {
    let config = json!({
        "metadata": { "name": "app" },
        "image": { "image": image },
        // Exits 0 on SIGTERM; `wait` (unlike a foreground sleep) lets the trap run at once.
        "command": ["sh", "-c", "echo started; trap 'exit 0' TERM; sleep 1000 & wait"],
        "log_path": "app.log",
        "linux": {
            "resources": { "cpu_shares": 1024, "memory_limit_in_bytes": 256u64 << 20 },
            "security_context": { "namespace_options": { "network": "NODE", "pid": "CONTAINER" } },
        },
    });
    let request = json!({ "pod_sandbox_id": sandbox, "config": config, "sandbox_config": pod });
    let id = str_field(&ctrd.cri("CreateContainer", &request)?, "container_id")?;
    ctrd.cri("StartContainer", &json!({ "container_id": id }))?;
    let state = status(ctrd, &id)?;
    ensure!(
        state["state"] == "CONTAINER_RUNNING",
        "after start: {state}"
    );

    let log = ctrd.dir().join("pods/app.log");
    engines::wait_until(
        "the container's stdout in its CRI log",
        STATE_TIMEOUT,
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            Ok(text.contains("stdout F started").then_some(()))
        },
    )?;

    let out = exec_sync(ctrd, &id, "echo out; echo err >&2; exit 3")?;
    ensure!(
        out["stdout"] == "out\n" && out["stderr"] == "err\n" && out["exit_code"] == 3,
        "ExecSync: {out}"
    );

    update_resources(ctrd, &id).context("UpdateContainerResources")?;

    // Exit code 0 is the trap answering SIGTERM; the SIGKILL after 10 s would give 137.
    ctrd.cri(
        "StopContainer",
        &json!({ "container_id": id, "timeout": 10 }),
    )?;
    let state = status(ctrd, &id)?;
    ensure!(
        state["state"] == "CONTAINER_EXITED" && state["exit_code"] == 0,
        "after StopContainer (SIGTERM not delivered?): {state}"
    );
    ctrd.cri("RemoveContainer", &json!({ "container_id": id }))?;
    Ok(id)
}

/// What kubelet sends for a resize. containerd turns it into `update --resources -` with
/// `"devices":[{"allow":false,"access":"rwm"}]` in the LinuxResources.
fn update_resources(ctrd: &Containerd, id: &str) -> Result<()> {
    let linux = json!({
        "cpu_period": 100000,
        "cpu_quota": 50000,
        "cpu_shares": 512,
        "memory_limit_in_bytes": 64u64 << 20,
    });
    ctrd.cri(
        "UpdateContainerResources",
        &json!({ "container_id": id, "linux": linux }),
    )?;
    for (controller, file, want) in [
        ("memory", "memory.limit_in_bytes", (64u64 << 20).to_string()),
        ("cpu", "cpu.cfs_period_us", "100000".to_owned()),
        ("cpu", "cpu.cfs_quota_us", "50000".to_owned()),
        ("cpu", "cpu.shares", "512".to_owned()),
    ] {
        let got = cgroup_file(ctrd, controller, id, file)?;
        ensure!(got == want, "{file} is {got}, not {want}");
    }
    let out = exec_sync(ctrd, id, "echo x >/dev/null && head -c 3 /dev/zero | wc -c")?;
    ensure!(
        out["stdout"] == "3\n" && out["exit_code"] == 0,
        "default devices unusable after the update (devices.list: {:?}): {out}",
        cgroup_file(ctrd, "devices", id, "devices.list")
    );
    Ok(())
}
