//! `delete`: remove a stopped container; `--force` kills a running one first. Deleting a
//! container that is already gone with `--force` succeeds, because containerd's shim always
//! sends a second `delete --force`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use libcontainer::container::{Container, ContainerStatus};

use super::{container_dir, load_container, status_name};
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
    container
        .delete(force)
        .with_context(|| format!("cannot delete container {}", container.id()))?;
    remove_runtime_leftovers(root, container.id())
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
