//! `start`: run the user process of a created container.

use std::path::Path;

use anyhow::{bail, Context, Result};
use libcontainer::container::ContainerStatus;

use super::{load_container, status_name};

pub fn start(args: liboci_cli::Start, root: &Path) -> Result<()> {
    let mut container = load_container(root, &args.container_id)?;
    if container.status() != ContainerStatus::Created {
        bail!(
            "cannot start container {} in state {}: only a created container can be started",
            args.container_id,
            status_name(&container)
        );
    }
    container
        .start()
        .with_context(|| format!("cannot start container {}", args.container_id))
}
