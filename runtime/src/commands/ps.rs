//! `ps`: the processes of a container, as a JSON array of host pids or as a `ps` table.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use libcgroups::common::CgroupManager;

use super::{cgroup_manager, load_container};

pub fn ps(args: liboci_cli::Ps, root: &Path) -> Result<()> {
    let container = load_container(root, &args.container_id)?;
    let manager = cgroup_manager(&container)?;
    let pids: Vec<i32> = manager
        .get_all_pids()
        .with_context(|| format!("cannot list the processes of {}", args.container_id))?
        .iter()
        .map(|pid| pid.as_raw())
        .collect();
    match args.format.as_str() {
        "json" => println!("{}", serde_json::to_string(&pids)?),
        "table" => print_table(&pids, &args.ps_options)?,
        other => bail!("invalid --format {other:?}: expected \"table\" or \"json\""),
    }
    Ok(())
}

/// Runs the host's `ps` (as runc does) and keeps its header and the container's rows.
fn print_table(pids: &[i32], ps_options: &[String]) -> Result<()> {
    let options = if ps_options.is_empty() {
        vec!["-ef".to_string()]
    } else {
        ps_options.to_vec()
    };
    let output = Command::new("ps")
        .args(&options)
        .output()
        .context("cannot run ps")?;
    if !output.status.success() {
        bail!(
            "ps {}: {}",
            options.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let pid_column = header
        .split_whitespace()
        .position(|title| title == "PID")
        .context("ps output has no PID column")?;
    println!("{header}");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(pid_column)
            .and_then(|p| p.parse().ok());
        if pid.is_some_and(|pid| pids.contains(&pid)) {
            println!("{line}");
        }
    }
    Ok(())
}
