//! dockerd 20.10 with the runtime under test registered as `gpu-youki` (`"runtimes"` in
//! daemon.json, reached through containerd's runc v2 shim): run with exit codes and output,
//! a failing create, detached containers with exec, top, pause/unpause, update, restart and
//! stop. One daemon for the whole file; each step names itself in the error when it fails.

use anyhow::{ensure, Context, Result};
use integration::engines::{self, Dockerd};

/// Exits 0 on SIGTERM; `wait` (unlike a foreground sleep) lets the trap run at once.
const STOPPABLE: &str = "trap 'exit 0' TERM; sleep 1000 & wait";

#[test]
fn dockerd_runs_containers_with_the_gpu_youki_runtime() -> Result<()> {
    engines::require_root()?;
    let runtime = engines::runtime_binary()?;
    let images = engines::test_images()?;
    let docker = Dockerd::start(&runtime)?;
    docker.load(&images.busybox)?;
    let image = images.busybox.reference.as_str();

    run_rm(&docker, image).context("docker run --rm")?;
    missing_executable(&docker, image).context("docker run /nonexistent")?;
    detached(&docker, image).context("docker run -d, exec, top, pause, update, restart, stop")?;
    docker.shutdown()
}

fn run_rm(docker: &Dockerd, image: &str) -> Result<()> {
    let script = "echo hello; echo oops >&2; exit 3";
    let out = docker
        .docker([
            "run",
            "--runtime",
            Dockerd::RUNTIME,
            "--rm",
            image,
            "sh",
            "-c",
            script,
        ])?
        .expect_code(3)?;
    ensure!(
        out.stdout == "hello\n" && out.stderr.contains("oops"),
        "unexpected output: {out}"
    );
    let listed = docker.docker(["ps", "--all", "--quiet"])?.success()?;
    ensure!(
        listed.stdout.trim().is_empty(),
        "--rm left a container: {listed}"
    );
    Ok(())
}

fn missing_executable(docker: &Dockerd, image: &str) -> Result<()> {
    let out = docker.docker([
        "run",
        "--runtime",
        Dockerd::RUNTIME,
        "--rm",
        image,
        "/nonexistent",
    ])?;
    ensure!(
        !out.status.success(),
        "docker run of /nonexistent succeeded: {out}"
    );
    let stderr = out.stderr.to_lowercase();
    ensure!(
        stderr.contains("/nonexistent") && stderr.contains("no such file or directory"),
        "the runtime's error (its last --log msg) did not reach docker's stderr: {out}"
    );
    Ok(())
}

fn inspect(docker: &Dockerd, id: &str, format: &str) -> Result<String> {
    let out = docker
        .docker(["inspect", "--format", format, id])?
        .success()?;
    Ok(out.stdout.trim().to_owned())
}

fn cgroup_file(docker: &Dockerd, controller: &str, id: &str, file: &str) -> Result<String> {
    let cgroup = format!("{}/{id}", docker.cgroup_parent());
    engines::read_cgroup_file(controller, &cgroup, file)
}

fn detached(docker: &Dockerd, image: &str) -> Result<()> {
    let out = docker
        .docker([
            "run",
            "-d",
            "--runtime",
            Dockerd::RUNTIME,
            image,
            "sh",
            "-c",
            STOPPABLE,
        ])?
        .success()?;
    let id = out.stdout.trim().to_owned();
    ensure!(
        id.len() == 64,
        "docker run -d printed no container id: {out}"
    );
    ensure!(
        inspect(docker, &id, "{{.State.Status}} {{.HostConfig.Runtime}}")?
            == format!("running {}", Dockerd::RUNTIME),
        "container is not running with {}",
        Dockerd::RUNTIME
    );

    let out = docker
        .docker(["exec", &id, "sh", "-c", "echo from-exec; exit 6"])?
        .expect_code(6)?;
    ensure!(out.stdout == "from-exec\n", "unexpected exec output: {out}");

    let out = docker.docker(["top", &id])?.success()?;
    ensure!(
        out.stdout.contains("sleep 1000") && out.stdout.contains("trap"),
        "docker top (the runtime's ps) misses the container's processes: {out}"
    );

    docker.docker(["pause", &id])?.success()?;
    ensure!(
        inspect(docker, &id, "{{.State.Status}}")? == "paused",
        "not paused"
    );
    let state = cgroup_file(docker, "freezer", &id, "freezer.state")?;
    ensure!(state == "FROZEN", "paused but freezer.state is {state}");
    docker.docker(["unpause", &id])?.success()?;
    ensure!(
        inspect(docker, &id, "{{.State.Status}}")? == "running",
        "not unpaused"
    );
    let state = cgroup_file(docker, "freezer", &id, "freezer.state")?;
    ensure!(state == "THAWED", "unpaused but freezer.state is {state}");

    let limit = (64u64 << 20).to_string();
    docker
        .docker(["update", "--memory", "64m", "--memory-swap", "128m", &id])?
        .success()?;
    let got = cgroup_file(docker, "memory", &id, "memory.limit_in_bytes")?;
    ensure!(
        got == limit,
        "docker update: memory.limit_in_bytes is {got}, not {limit}"
    );

    let pid_before = inspect(docker, &id, "{{.State.Pid}}")?;
    docker.docker(["restart", "--time", "10", &id])?.success()?;
    let (status, pid_after) = (
        inspect(docker, &id, "{{.State.Status}}")?,
        inspect(docker, &id, "{{.State.Pid}}")?,
    );
    ensure!(
        status == "running" && pid_after != pid_before,
        "restart: status {status}, pid {pid_before} -> {pid_after}"
    );
    let got = cgroup_file(docker, "memory", &id, "memory.limit_in_bytes")?;
    ensure!(
        got == limit,
        "after restart memory.limit_in_bytes is {got}, not {limit}"
    );

    // Exit code 0 is the trap answering SIGTERM; docker's SIGKILL after 10 s would give 137.
    docker.docker(["stop", "--time", "10", &id])?.success()?;
    let state = inspect(docker, &id, "{{.State.Status}} {{.State.ExitCode}}")?;
    ensure!(
        state == "exited 0",
        "after stop (SIGTERM not delivered?): {state}"
    );
    docker.docker(["rm", &id])?.success()?;
    Ok(())
}
