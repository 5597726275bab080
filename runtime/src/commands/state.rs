//! `state`: print the OCI state of a container.

use std::path::Path;

use anyhow::Result;

use super::{load_container, status_name};

pub fn state(args: liboci_cli::State, root: &Path) -> Result<()> {
    let mut container = load_container(root, &args.container_id)?;
    container.refresh_status()?;
    let state = &container.state;
    let mut json = serde_json::json!({
        "ociVersion": state.oci_version,
        "id": state.id,
        "status": status_name(&container),
        "pid": state.pid.unwrap_or(0),
        "bundle": state.bundle,
        "annotations": state.annotations.clone().unwrap_or_default(),
    });
    if let Some(created) = state.created {
        json["created"] = serde_json::json!(created);
    }
    if let Some(owner) = container.creator() {
        json["owner"] = serde_json::json!(owner.to_string_lossy());
    }
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}
