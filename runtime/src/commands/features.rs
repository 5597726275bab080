//! `features`: what this runtime supports, as the OCI features document.

use anyhow::Result;
use libcontainer::oci_spec::runtime::{
    ApparmorBuilder, CgroupBuilder, FeaturesBuilder, IDMapBuilder, IntelRdtBuilder,
    LinuxFeatureBuilder, LinuxNamespaceType, MountExtensionsBuilder, SelinuxBuilder,
};
use libcontainer::syscall::linux::MountOption;

/// Newest runtime-spec version whose config.json gpu-youki accepts.
pub const OCI_VERSION_MAX: &str = "1.3.0";

pub fn features() -> Result<()> {
    use LinuxNamespaceType::*;
    let mut capabilities: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    capabilities.sort();
    let cgroup = CgroupBuilder::default()
        .v1(true)
        .v2(true)
        .systemd(true)
        .systemd_user(true)
        .rdma(false)
        .build()?;
    let linux = LinuxFeatureBuilder::default()
        .namespaces(vec![Pid, Network, Uts, Ipc, Mount, User, Cgroup, Time])
        .capabilities(capabilities)
        .cgroup(cgroup)
        .apparmor(ApparmorBuilder::default().enabled(true).build()?)
        .mount_extensions(
            MountExtensionsBuilder::default()
                .idmap(IDMapBuilder::default().enabled(false).build()?)
                .build()?,
        )
        .selinux(SelinuxBuilder::default().enabled(false).build()?)
        .intel_rdt(IntelRdtBuilder::default().enabled(true).build()?)
        .build()?;
    let features = FeaturesBuilder::default()
        .oci_version_min("1.0.0".to_string())
        .oci_version_max(OCI_VERSION_MAX.to_string())
        .hooks(gpu::cdi::spec::HOOK_NAMES.map(String::from).to_vec())
        .mount_options(MountOption::known_options())
        .linux(linux)
        .build()?;
    println!("{}", serde_json::to_string_pretty(&features)?);
    Ok(())
}
