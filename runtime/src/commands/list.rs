//! `list`: the containers under the state root, as a table, ids only (`-q`) or JSON.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use libcontainer::container::Container;

use super::status_name;

pub fn list(args: liboci_cli::List, root: &Path) -> Result<()> {
    let mut containers = Vec::new();
    for entry in fs::read_dir(root).with_context(|| format!("cannot read {}", root.display()))? {
        let dir = entry?.path();
        if !dir.join("state.json").exists() {
            continue; // lock files, console sockets, half-created directories
        }
        let mut container = Container::load(dir)?;
        container.refresh_status()?;
        containers.push(container);
    }
    containers.sort_by(|a, b| a.id().cmp(b.id()));
    if args.quiet {
        for c in &containers {
            println!("{}", c.id());
        }
        return Ok(());
    }
    match args.format.as_str() {
        "table" => print_table(&containers),
        "json" => {
            let rows: Vec<_> = containers
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "ociVersion": c.state.oci_version,
                        "id": c.id(),
                        "pid": c.pid().map_or(0, |p| p.as_raw()),
                        "status": status_name(c),
                        "bundle": c.bundle(),
                        "created": c.created(),
                        "owner": c.creator().map(|o| o.to_string_lossy().into_owned()).unwrap_or_default(),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string(&rows)?);
        }
        other => bail!("invalid --format {other:?}: expected \"table\" or \"json\""),
    }
    Ok(())
}

fn print_table(containers: &[Container]) {
    let mut rows = vec![["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from)];
    for c in containers {
        rows.push([
            c.id().to_string(),
            c.pid().map_or(0, |p| p.as_raw()).to_string(),
            status_name(c),
            c.bundle().display().to_string(),
            c.created().map(|t| t.to_rfc3339()).unwrap_or_default(),
            c.creator()
                .map(|o| o.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", cells.join("   ").trim_end());
    }
}
