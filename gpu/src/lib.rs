//! The GPU stage of gpu-youki: request → host inventory → plan → apply.
//!
//! Nothing in this crate executes a program.
//! * [`request`]: the GPU request in a container's environment and the check of its
//!   requirements against the host;
//! * [`config`]: the configuration file (driver roots, request policy);
//! * [`volumes`]: device lists given as volume mounts (the device plugin's strategy);
//! * [`engine_hooks`]: the toolkit hooks docker and containerd add for `--gpus`, read as a
//!   request and left out of the effective spec;
//! * [`inventory`]: what the host's driver offers, read from procfs, /dev and the driver's files;
//! * [`file_cache`]: the driver's installed files, found once per driver install;
//! * [`plan`]: what one container gets, a pure function of request, inventory and rootfs facts;
//! * [`apply`]: the plan carried out on the spec, the rootfs and the container's mounts;
//! * [`cdi`]: CDI specs read, resolved and compiled into the same plan, NVIDIA's CDI hooks
//!   done natively, and specs generated for this host;
//! * [`compat`]: the image's CUDA forward-compatibility libraries;
//! * [`driver`]: facts only the driver knows (the CUDA version), asked in process;
//! * [`procfs`], [`pci`], [`elf`], [`ldcache`], [`fsroot`], [`atomic_file`]: the parsers and
//!   file access they build on.

pub mod apply;
pub mod atomic_file;
pub mod cdi;
pub mod compat;
pub mod config;
pub mod driver;
pub mod elf;
pub mod engine_hooks;
pub mod file_cache;
pub mod fsroot;
pub mod inventory;
pub mod ldcache;
pub mod pci;
pub mod plan;
pub mod privilege;
pub mod procfs;
pub mod request;
pub mod volumes;
