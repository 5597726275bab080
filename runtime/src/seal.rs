//! The CVE-2019-5736 defence: commands that put a process into a container re-execute
//! themselves from a sealed, memory-backed copy of the binary. A container process that opens
//! `/proc/<pid>/exe` of a gpu-youki process then reaches the sealed copy, which cannot be written,
//! never the binary on the host.

use anyhow::{Context, Result};

/// Re-executes the current command from a sealed memfd copy unless it already runs from one.
/// Returns only when the running image is sealed.
pub fn ensure_sealed() -> Result<()> {
    pentacle::ensure_sealed().context("cannot re-execute from a sealed copy of /proc/self/exe")
}
