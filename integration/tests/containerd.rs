//! containerd 1.6 driving the runtime under test through the runc v2 shim, the way `ctr run
//! --runtime io.containerd.runc.v2 --runc-binary BIN` users do: exit codes, a terminal, exec,
//! ps, pause/resume, metrics, signals, and the error text of a failing create. One daemon for
//! the whole file; each step names itself in the error when it fails.

use anyhow::{ensure, Context, Result};
use integration::engines::{self, Containerd};
use serde_json::Value;
use std::time::Duration;

const STATE_TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn ctr_runs_containers_through_the_runc_v2_shim() -> Result<()> {
    engines::require_root()?;
    let runtime = engines::runtime_binary()?;
    let images = engines::test_images()?;
    let ctrd = Containerd::start(&runtime, &images.pause.reference)?;
    ctrd.import(&ctrd.namespace(), &images.busybox)?;
    let image = images.busybox.reference.as_str();

    exit_codes(&ctrd, image).context("ctr run: exit codes and output")?;
    terminal(&ctrd, image).context("ctr run -t")?;
    missing_executable(&ctrd, image).context("ctr run /nonexistent")?;
    running_task(&ctrd, image).context("ctr task exec/ps/pause/resume/metrics/kill")?;
    kill_all(&ctrd, image).context("ctr task kill --all -s SIGKILL")?;
    ctrd.shutdown()
}

fn exit_codes(ctrd: &Containerd, image: &str) -> Result<()> {
    let out =
        engines::run(&mut ctrd.ctr_run(&["--rm", image, "exit0", "echo", "hello"]))?.success()?;
    ensure!(out.stdout == "hello\n", "unexpected stdout: {out}");
    let script = "echo to-stdout; echo to-stderr >&2; exit 3";
    let out = engines::run(&mut ctrd.ctr_run(&["--rm", image, "exit3", "sh", "-c", script]))?
        .expect_code(3)?;
    ensure!(
        out.stdout.contains("to-stdout") && out.stderr.contains("to-stderr"),
        "the container's stdout/stderr did not come back apart: {out}"
    );
    Ok(())
}

fn terminal(ctrd: &Containerd, image: &str) -> Result<()> {
    let cmd = ctrd.ctr_run(&["--rm", "-t", image, "tty", "sh", "-c", "tty; exit 4"]);
    let out = engines::run(&mut engines::with_terminal(&cmd)?)?.expect_code(4)?;
    ensure!(
        out.stdout.contains("/dev/pts/"),
        "the container's stdin is not a terminal: {out}"
    );
    Ok(())
}

fn missing_executable(ctrd: &Containerd, image: &str) -> Result<()> {
    let out = engines::run(&mut ctrd.ctr_run(&["--rm", image, "missing", "/nonexistent"]))?;
    ensure!(
        !out.status.success(),
        "ctr run of /nonexistent succeeded: {out}"
    );
    let stderr = out.stderr.to_lowercase();
    ensure!(
        stderr.contains("/nonexistent") && stderr.contains("no such file or directory"),
        "the runtime's error (its last --log msg) did not reach ctr's stderr: {out}"
    );
    Ok(())
}

/// Host pids of the task's processes, per `ctr task ps` (the runtime's `ps --format json`).
fn task_pids(ctrd: &Containerd, id: &str) -> Result<Vec<i32>> {
    let out = ctrd.ctr(["task", "ps", id])?.success()?;
    out.stdout
        .lines()
        .skip(1)
        .map(|l| {
            let pid = l.split_whitespace().next().unwrap_or_default();
            pid.parse()
                .with_context(|| format!("bad pid {pid:?} in {out}"))
        })
        .collect()
}

/// (pid, status) of a task per `ctr task ls`.
fn task_state(ctrd: &Containerd, id: &str) -> Result<(i32, String)> {
    let out = ctrd.ctr(["task", "ls"])?.success()?;
    let line = out
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .with_context(|| format!("task {id} not listed: {out}"))?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    ensure!(fields.len() == 3, "unexpected task ls line {line:?}");
    Ok((fields[1].parse()?, fields[2].to_owned()))
}

fn wait_for_status(ctrd: &Containerd, id: &str, status: &str) -> Result<()> {
    engines::wait_until(&format!("task {id} to be {status}"), STATE_TIMEOUT, || {
        Ok((task_state(ctrd, id)?.1 == status).then_some(()))
    })
}

fn freezer_state(ctrd: &Containerd, id: &str) -> Result<String> {
    let cgroup = format!("{}/{id}", ctrd.cgroup_parent());
    engines::read_cgroup_file("freezer", &cgroup, "freezer.state")
}

fn running_task(ctrd: &Containerd, image: &str) -> Result<()> {
    let id = "long";
    // Exits 7 on SIGTERM; `wait` (unlike a foreground sleep) lets the trap run at once.
    let script = "trap 'exit 7' TERM; sleep 1000 & wait";
    let foreground = engines::spawn(&mut ctrd.ctr_run(&["--rm", image, id, "sh", "-c", script]))?;

    // Once sleep runs, the trap is set.
    let pids = engines::wait_until("ctr task ps to list sh and sleep", STATE_TIMEOUT, || {
        let pids = task_pids(ctrd, id)?;
        Ok((pids.len() == 2).then_some(pids))
    })?;
    let (init, status) = task_state(ctrd, id)?;
    ensure!(status == "RUNNING", "task {id} is {status}");
    ensure!(
        pids.contains(&init),
        "ps pids {pids:?} lack the init pid {init}"
    );
    let sleep_pid = pids.iter().find(|&&p| p != init).expect("two pids");
    let cmdline = std::fs::read(format!("/proc/{sleep_pid}/cmdline"))
        .with_context(|| format!("ps pid {sleep_pid} is not a host pid"))?;
    ensure!(
        cmdline.starts_with(b"sleep\x001000"),
        "host pid {sleep_pid} is not the container's sleep: {:?}",
        String::from_utf8_lossy(&cmdline)
    );

    let exec = "echo from-exec; cat /proc/1/cmdline; exit 5";
    let out = ctrd
        .ctr(["task", "exec", "--exec-id", "exec1", id, "sh", "-c", exec])?
        .expect_code(5)?;
    ensure!(
        out.stdout.contains("from-exec") && out.stdout.contains("trap"),
        "exec did not run beside the container's init: {out}"
    );

    ctrd.ctr(["task", "pause", id])?.success()?;
    wait_for_status(ctrd, id, "PAUSED")?;
    ensure!(
        freezer_state(ctrd, id)? == "FROZEN",
        "paused but not frozen"
    );
    ctrd.ctr(["task", "resume", id])?.success()?;
    wait_for_status(ctrd, id, "RUNNING")?;
    ensure!(
        freezer_state(ctrd, id)? == "THAWED",
        "resumed but not thawed"
    );

    let out = ctrd
        .ctr(["task", "metrics", "--format", "json", id])?
        .success()?;
    let metrics: Value =
        serde_json::from_str(&out.stdout).with_context(|| format!("metrics: {out}"))?;
    ensure!(
        metrics["pids"]["current"] == 2,
        "metrics count other than 2 pids: {out}"
    );
    ensure!(
        metrics["memory"]["usage"]["usage"].as_u64() > Some(0),
        "metrics show no memory use: {out}"
    );

    ctrd.ctr(["task", "kill", id])?.success()?;
    foreground.wait(STATE_TIMEOUT)?.expect_code(7)?;
    Ok(())
}

fn kill_all(ctrd: &Containerd, image: &str) -> Result<()> {
    let id = "killall";
    engines::run(&mut ctrd.ctr_run(&["-d", image, id, "sleep", "1000"]))?.success()?;
    ctrd.ctr(["task", "kill", "--all", "--signal", "SIGKILL", id])?
        .success()?;
    wait_for_status(ctrd, id, "STOPPED")?;
    let out = ctrd.ctr(["task", "rm", id])?.success()?;
    ensure!(
        out.stderr.contains("exit code 137"),
        "SIGKILL should end the task with 137: {out}"
    );
    ctrd.ctr(["container", "rm", id])?.success()?;
    Ok(())
}
