//! `spec`: write a default config.json (runc's defaults) into a bundle directory.

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use libcontainer::oci_spec::runtime::{
    LinuxBuilder, LinuxDeviceCgroupBuilder, LinuxIdMappingBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, Spec,
};

pub fn spec(args: liboci_cli::Spec) -> Result<()> {
    let mut spec = Spec::default();
    deny_other_devices(&mut spec)?;
    if args.rootless {
        make_rootless(&mut spec)?;
    }
    let path = args.bundle.unwrap_or_default().join("config.json");
    let mut file = File::create_new(&path).map_err(|err| match err.kind() {
        ErrorKind::AlreadyExists => anyhow!("{} already exists: remove it first", path.display()),
        _ => anyhow!(err).context(format!("cannot create {}", path.display())),
    })?;
    let text = serde_json::to_string_pretty(&spec)?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// runc's default device rule: deny everything not listed (oci-spec's default allows all).
fn deny_other_devices(spec: &mut Spec) -> Result<()> {
    let deny_all = LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()?;
    if let Some(linux) = spec.linux_mut() {
        let mut resources = linux.resources().clone().unwrap_or_default();
        resources.set_devices(Some(vec![deny_all]));
        linux.set_resources(Some(resources));
    }
    Ok(())
}

/// runc's `spec --rootless`: a user namespace mapping the caller to root, no network namespace,
/// and /sys bound from the host since sysfs cannot be mounted without a network namespace.
fn make_rootless(spec: &mut Spec) -> Result<()> {
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    let mut namespaces: Vec<_> = libcontainer::oci_spec::runtime::get_default_namespaces()
        .into_iter()
        .filter(|ns| {
            !matches!(
                ns.typ(),
                LinuxNamespaceType::Network | LinuxNamespaceType::User
            )
        })
        .collect();
    namespaces.push(
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::User)
            .build()?,
    );
    let map = |host: u32| {
        LinuxIdMappingBuilder::default()
            .host_id(host)
            .container_id(0u32)
            .size(1u32)
            .build()
    };
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .uid_mappings(vec![map(uid)?])
        .gid_mappings(vec![map(gid)?])
        .build()?;
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for mount in &mut mounts {
        if mount.destination() == &PathBuf::from("/sys") {
            mount
                .set_source(Some("/sys".into()))
                .set_typ(Some("none".into()))
                .set_options(Some(
                    ["rbind", "nosuid", "noexec", "nodev", "ro"]
                        .map(String::from)
                        .to_vec(),
                ));
        } else if let Some(options) = mount.options().clone() {
            let kept = options
                .into_iter()
                .filter(|o| !o.starts_with("uid=") && !o.starts_with("gid="))
                .collect();
            mount.set_options(Some(kept));
        }
    }
    spec.set_linux(Some(linux)).set_mounts(Some(mounts));
    Ok(())
}
