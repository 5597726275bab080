//! `update`: change a container's resource limits, from LinuxResources JSON (`--resources -` or
//! a file, as docker and CRI send it) and/or runc's individual flags.
//!
//! Device rules are never taken from the payload: CRI's `UpdateContainerResources` carries a
//! deny-all device rule, and applying it would revoke the container's devices (its GPUs among
//! them). As runc does, the container keeps the device rules it was created with (its GPUs'
//! included); they are re-applied from its spec so that a cgroup v2 device program is rebuilt
//! with them intact.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use libcgroups::common::{CgroupManager, ControllerOpt};
use libcontainer::oci_spec::runtime::{LinuxPids, LinuxResources};

use super::{cgroup_manager, effective_spec, load_container, parse_json};

pub fn update(args: liboci_cli::Update, root: &Path) -> Result<()> {
    let container = load_container(root, &args.container_id)?;
    let mut resources = match &args.resources {
        None => LinuxResources::default(),
        Some(path) => read_resources(path)?,
    };
    apply_flags(&args, &mut resources);
    let spec = effective_spec(&container)?;
    let created_with = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.devices().clone());
    resources.set_devices(created_with);

    let manager = cgroup_manager(&container)?;
    manager
        .apply(&ControllerOpt {
            resources: &resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        })
        .with_context(|| format!("cannot update the resources of {}", args.container_id))
}

fn read_resources(path: &Path) -> Result<LinuxResources> {
    let (text, origin) = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read resources from stdin")?;
        (text, "stdin".to_string())
    } else {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        (text, path.display().to_string())
    };
    parse_json(text.as_bytes(), &format!("resources in {origin}"))
}

/// runc's individual update flags, applied over the JSON payload.
fn apply_flags(args: &liboci_cli::Update, resources: &mut LinuxResources) {
    let mut cpu = resources.cpu().clone().unwrap_or_default();
    let cpu_flags = [
        args.cpu_share,
        args.cpu_period,
        args.cpu_rt_period,
        args.cpu_quota,
        args.cpu_rt_runtime,
    ];
    if let Some(shares) = args.cpu_share {
        cpu.set_shares(Some(shares));
    }
    if let Some(period) = args.cpu_period {
        cpu.set_period(Some(period));
    }
    if let Some(period) = args.cpu_rt_period {
        cpu.set_realtime_period(Some(period));
    }
    if let Some(quota) = args.cpu_quota {
        cpu.set_quota(Some(quota as i64));
    }
    if let Some(runtime) = args.cpu_rt_runtime {
        cpu.set_realtime_runtime(Some(runtime as i64));
    }
    if let Some(cpus) = &args.cpuset_cpus {
        cpu.set_cpus(Some(cpus.clone()));
    }
    if let Some(mems) = &args.cpuset_mems {
        cpu.set_mems(Some(mems.clone()));
    }
    if cpu_flags.iter().any(Option::is_some)
        || args.cpuset_cpus.is_some()
        || args.cpuset_mems.is_some()
    {
        resources.set_cpu(Some(cpu));
    }

    let mut memory = resources.memory().unwrap_or_default();
    if let Some(limit) = args.memory {
        memory.set_limit(Some(limit as i64));
    }
    if let Some(reservation) = args.memory_reservation {
        memory.set_reservation(Some(reservation as i64));
    }
    if let Some(swap) = args.memory_swap {
        memory.set_swap(Some(swap));
    }
    if args.memory.is_some() || args.memory_reservation.is_some() || args.memory_swap.is_some() {
        resources.set_memory(Some(memory));
    }

    if let Some(limit) = args.pids_limit {
        let mut pids = LinuxPids::default();
        pids.set_limit(limit);
        resources.set_pids(Some(pids));
    }
    if let Some(weight) = args.blkio_weight {
        let mut blkio = resources.block_io().clone().unwrap_or_default();
        blkio.set_weight(Some(weight as u16));
        resources.set_block_io(Some(blkio));
    }
}
