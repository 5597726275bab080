//! The GPU stage of gpu-youki: request → host inventory → plan → apply.
//!
//! This crate holds the pure building blocks of those stages; nothing in it executes a program.
//! * [`request`]: the GPU request in a container's environment and the check of its
//!   requirements against the host;
//! * [`procfs`]: the NVIDIA driver's procfs files, read without NVML;
//! * [`pci`]: PCI bus ids, compared by value rather than by spelling;
//! * [`ldcache`]: glibc's `ld.so.cache` (read, written as ldconfig writes it, merged) and musl's
//!   path file, so a container's loader finds driver libraries without running `ldconfig`.

pub mod ldcache;
pub mod pci;
pub mod procfs;
pub mod request;
