//! `events`: a container's resource statistics as runc prints them, one JSON line
//! `{"type":"stats","id":…,"data":…}` per interval, or once with `--stats`.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use libcgroups::common::CgroupManager;
use libcontainer::container::ContainerStatus;

use super::{cgroup_manager, load_container, status_name};

pub fn events(args: liboci_cli::Events, root: &Path) -> Result<()> {
    let mut container = load_container(root, &args.container_id)?;
    container.refresh_status()?;
    if container.status() != ContainerStatus::Running {
        bail!(
            "cannot read events of container {}: it is {}, not running",
            args.container_id,
            status_name(&container)
        );
    }
    let manager = cgroup_manager(&container)?;
    loop {
        let stats = manager
            .stats()
            .with_context(|| format!("cannot read the statistics of {}", args.container_id))?;
        let event = serde_json::json!({"type": "stats", "id": args.container_id, "data": stats});
        println!("{event}");
        if args.stats {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(u64::from(args.interval.max(1))));
        container.refresh_status()?;
        if container.status() == ContainerStatus::Stopped {
            return Ok(());
        }
    }
}
