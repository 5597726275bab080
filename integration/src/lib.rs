//! Shared helpers for the integration tests: test bundles, the runtime binary, leak checks, and
//! private containerd/dockerd instances.

pub mod bundle;
pub mod engines;
pub mod gpu;
