//! Whether a container counts as privileged for GPU requests: the request policy and the MIG
//! management variables depend on it.

use oci_spec::runtime::{Capability, Spec};

/// The toolkit's definition, kept so that policies mean the same on both: `CAP_SYS_ADMIN` in the
/// process's bounding set. It is not Docker's `--privileged` flag.
pub fn is_privileged(spec: &Spec) -> bool {
    spec.process()
        .as_ref()
        .and_then(|p| p.capabilities().as_ref())
        .and_then(|c| c.bounding().as_ref())
        .is_some_and(|bounding| bounding.contains(&Capability::SysAdmin))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxCapabilitiesBuilder, ProcessBuilder, SpecBuilder};

    fn spec_with_bounding(caps: &[Capability]) -> Spec {
        let capabilities = LinuxCapabilitiesBuilder::default()
            .bounding(
                caps.iter()
                    .copied()
                    .collect::<std::collections::HashSet<_>>(),
            )
            .build()
            .unwrap();
        let process = ProcessBuilder::default()
            .capabilities(capabilities)
            .build()
            .unwrap();
        SpecBuilder::default().process(process).build().unwrap()
    }

    #[test]
    fn only_sys_admin_in_the_bounding_set_counts() {
        assert!(is_privileged(&spec_with_bounding(&[
            Capability::Chown,
            Capability::SysAdmin
        ])));
        assert!(!is_privileged(&spec_with_bounding(&[Capability::Chown])));
        let mut no_process = SpecBuilder::default().build().unwrap();
        no_process.set_process(None);
        assert!(!is_privileged(&no_process));
    }
}
