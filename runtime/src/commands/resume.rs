//! `resume`: thaw the processes of a paused container.

use std::path::Path;

use anyhow::{Context, Result};

use super::load_container;

pub fn resume(args: liboci_cli::Resume, root: &Path) -> Result<()> {
    let mut container = load_container(root, &args.container_id)?;
    container
        .resume()
        .with_context(|| format!("cannot resume container {}", args.container_id))
}
