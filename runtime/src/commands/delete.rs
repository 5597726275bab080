//! `delete`: remove a stopped container; `--force` kills a running one first. Deleting a
//! container that is already gone with `--force` succeeds, because containerd's shim always
//! sends a second `delete --force`.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use libcgroups::common::CgroupManager;
use libcontainer::container::{Container, ContainerStatus};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::{cgroup_manager, container_dir, load_container, status_name};
use crate::gpu_stage::{remove_rootfs_overlay, remove_shadow_bundle};
use crate::lock::IdLock;

pub fn delete(args: liboci_cli::Delete, root: &Path) -> Result<()> {
    let dir = container_dir(root, &args.container_id)?;
    if args.force && !dir.join("state.json").exists() {
        return remove_runtime_leftovers(root, &args.container_id);
    }
    let mut container = load_container(root, &args.container_id)?;
    container.refresh_status()?;
    if !args.force
        && !matches!(
            container.status(),
            ContainerStatus::Stopped | ContainerStatus::Created
        )
    {
        bail!(
            "cannot delete container {} that is {}: stop it first or use --force",
            args.container_id,
            status_name(&container)
        );
    }
    delete_container(&mut container, root, args.force)
}

/// Deletes a loaded container and what gpu-youki keeps beside its state.
pub fn delete_container(container: &mut Container, root: &Path, force: bool) -> Result<()> {
    kill_and_wait(container)?;
    container
        .delete(force)
        .with_context(|| format!("cannot delete container {}", container.id()))?;
    remove_runtime_leftovers(root, container.id())
}

/// How long [`kill_and_wait`] waits for killed processes to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Kills every process of a container that has any (created, running or paused) and waits
/// for them to exit: libcontainer's delete kills them too, but gives up removing the cgroup
/// after about 100 ms, which processes killed on a busy host can outlast.
fn kill_and_wait(container: &mut Container) -> Result<()> {
    container.refresh_status()?;
    if !matches!(
        container.status(),
        ContainerStatus::Created | ContainerStatus::Running | ContainerStatus::Paused
    ) {
        return Ok(());
    }
    let pids = cgroup_manager(container)?
        .get_all_pids()
        .with_context(|| format!("cannot list the processes of {}", container.id()))?;
    // Opened before the kill, so that a pid reused after it is never waited on.
    let exits: Vec<(i32, OwnedFd)> = pids
        .iter()
        .filter_map(|pid| Some((pid.as_raw(), pidfd_open(pid.as_raw())?)))
        .collect();
    container
        .kill(nix::sys::signal::Signal::SIGKILL, true)
        .with_context(|| format!("cannot kill the processes of {}", container.id()))?;
    let deadline = Instant::now() + EXIT_TIMEOUT;
    for (pid, exit) in &exits {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(exit.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(0) => bail!(
                    "process {pid} of container {} did not exit within {}s of SIGKILL",
                    container.id(),
                    EXIT_TIMEOUT.as_secs()
                ),
                Ok(_) => break,
                Err(Errno::EINTR) => continue,
                Err(err) => return Err(err).context("cannot wait for the container's processes"),
            }
        }
    }
    Ok(())
}

/// A pidfd of process `pid` (readable once it exits); `None` when it is already gone.
fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(pid)?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
}

/// Removes what gpu-youki keeps beside the state of container `id` (a rootfs overlay) and what
/// a `create` of it that was killed left in the state root: a state directory without state,
/// its shadow bundle and its lock file. A `create` of `id` still running is left alone (it
/// removes its own on failure).
fn remove_runtime_leftovers(root: &Path, id: &str) -> Result<()> {
    let Some(_lock) = IdLock::try_acquire(root, id)? else {
        return Ok(());
    };
    let dir = container_dir(root, id)?;
    if dir.exists() && !dir.join("state.json").exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    remove_rootfs_overlay(root, id)?;
    remove_shadow_bundle(root, id)
}
