//! `pause`: freeze all processes of a running container.

use std::path::Path;

use anyhow::{Context, Result};

use super::load_container;

pub fn pause(args: liboci_cli::Pause, root: &Path) -> Result<()> {
    let mut container = load_container(root, &args.container_id)?;
    container
        .pause()
        .with_context(|| format!("cannot pause container {}", args.container_id))
}
