//! `delete`: remove a stopped container; `--force` kills a running one first. Deleting a
//! container that is already gone with `--force` succeeds, because containerd's shim always
//! sends a second `delete --force`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use libcontainer::container::ContainerStatus;

use super::{container_dir, load_container, status_name};

pub fn delete(args: liboci_cli::Delete, root: &Path) -> Result<()> {
    let dir = container_dir(root, &args.container_id)?;
    if args.force && !dir.join("state.json").exists() {
        if dir.exists() {
            // A create that died before writing its state leaves only a directory behind.
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot remove {}", dir.display()))?;
        }
        return Ok(());
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
    container
        .delete(args.force)
        .with_context(|| format!("cannot delete container {}", args.container_id))
}
