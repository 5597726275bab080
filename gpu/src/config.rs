//! gpu-youki's configuration file: a TOML file, `/etc/gpu-youki/config.toml` by default, another
//! one when `GPU_YOUKI_CONFIG` names it. A missing default file means the defaults; a named file
//! that is missing, or any file that is invalid, is an error naming the file and the key.
//!
//! ```toml
//! [driver]
//! root = "/"            # driver files (libraries, binaries, firmware, ld.so.cache) are read under it
//! dev-root = "/"        # device nodes are <dev-root>/dev/nvidia*
//! proc-root = "/"       # <proc-root>/proc/driver/nvidia and <proc-root>/proc/devices
//! library-dirs = []     # where driver libraries are; empty: <root>/etc/ld.so.cache, then the
//!                       # standard library directories, all under <root>
//! binary-dirs = []      # where nvidia-smi and the other binaries are (under <root>); empty:
//!                       # /usr/bin, /usr/sbin, /bin, /sbin, /usr/local/bin, /usr/local/sbin
//!
//! [request]
//! volume-mounts = false # read device lists from /dev/null mounts under
//!                       # /var/run/nvidia-container-devices (the device plugin's strategy)
//! unprivileged-env = "accept" # or "ignore": device lists in the environment of containers
//!                       # without CAP_SYS_ADMIN are ignored (multi-tenant nodes)
//!
//! [cdi]
//! spec-dirs = ["/etc/cdi", "/var/run/cdi"]  # CDI spec directories; later ones take priority
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::request::quoted;

/// The configuration file read when `GPU_YOUKI_CONFIG` is not set.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/gpu-youki/config.toml";

/// The environment variable that names another configuration file.
pub const CONFIG_ENV: &str = "GPU_YOUKI_CONFIG";

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GpuConfig {
    /// Where the NVIDIA driver's files live on this host.
    #[serde(default)]
    pub driver: DriverConfig,
    /// Which ways of asking for GPUs are accepted.
    #[serde(default)]
    pub request: RequestConfig,
    /// Where CDI specs are read.
    #[serde(default)]
    pub cdi: CdiConfig,
}

/// The `[cdi]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CdiConfig {
    /// Directories of CDI spec files (`*.json`, `*.yaml`); a device defined in a later
    /// directory overrides one of the same name in an earlier one.
    #[serde(default = "default_spec_dirs")]
    pub spec_dirs: Vec<PathBuf>,
}

/// The CDI library's default spec directories: static, then dynamic (higher priority).
pub const DEFAULT_SPEC_DIRS: [&str; 2] = ["/etc/cdi", "/var/run/cdi"];

fn default_spec_dirs() -> Vec<PathBuf> {
    DEFAULT_SPEC_DIRS.iter().map(PathBuf::from).collect()
}

impl Default for CdiConfig {
    fn default() -> Self {
        CdiConfig {
            spec_dirs: default_spec_dirs(),
        }
    }
}

/// The `[request]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RequestConfig {
    /// Accept device lists given as `/dev/null` mounts under
    /// `/var/run/nvidia-container-devices` (the Kubernetes device plugin's `volume-mounts`
    /// strategy); they take precedence over `NVIDIA_VISIBLE_DEVICES`.
    #[serde(default)]
    pub volume_mounts: bool,
    /// Whether the device lists in the environment of an unprivileged container are believed.
    #[serde(default)]
    pub unprivileged_env: UnprivilegedEnv,
}

/// What becomes of device lists an unprivileged container (no `CAP_SYS_ADMIN` in its bounding
/// set) names in its own environment. The environment comes from the image as much as from
/// whoever starts the container: CUDA images carry `NVIDIA_VISIBLE_DEVICES=all`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnprivilegedEnv {
    /// Believed, as the NVIDIA toolkit does by default, so that images, Docker and the device
    /// plugin's default `envvar` strategy work as before.
    #[default]
    Accept,
    /// Ignored (with a warning): GPUs only come from what an unprivileged workload cannot write
    /// itself, i.e. the device plugin's `/dev/null` volume mounts or CDI annotations. The safe
    /// choice for multi-tenant nodes.
    Ignore,
}

/// The `[driver]` table: the roots under which the driver is found. A containerised driver
/// (`/run/nvidia/driver`) or the project's fake driver tree is used by pointing these at it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DriverConfig {
    /// Driver files are read under this directory.
    #[serde(default = "slash")]
    pub root: PathBuf,
    /// Device nodes are read under `<dev-root>/dev`.
    #[serde(default = "slash")]
    pub dev_root: PathBuf,
    /// `<proc-root>/proc/driver/nvidia` and `<proc-root>/proc/devices` are read.
    #[serde(default = "slash")]
    pub proc_root: PathBuf,
    /// Directories (under `root`) that hold the driver libraries; when empty they are found
    /// through `<root>/etc/ld.so.cache` and the standard library directories.
    #[serde(default)]
    pub library_dirs: Vec<PathBuf>,
    /// Directories (under `root`) that hold the driver binaries; when empty, the standard
    /// binary directories.
    #[serde(default)]
    pub binary_dirs: Vec<PathBuf>,
}

fn slash() -> PathBuf {
    PathBuf::from("/")
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            root: slash(),
            dev_root: slash(),
            proc_root: slash(),
            library_dirs: Vec::new(),
            binary_dirs: Vec::new(),
        }
    }
}

impl GpuConfig {
    /// Loads the file `GPU_YOUKI_CONFIG` names, or the default file if it exists.
    pub fn load() -> Result<Self> {
        match std::env::var_os(CONFIG_ENV) {
            Some(path) => Self::load_file(Path::new(&path))
                .with_context(|| format!("{CONFIG_ENV}={}", Path::new(&path).display())),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                Self::load_file(Path::new(DEFAULT_CONFIG_PATH))
            }
            None => Ok(GpuConfig::default()),
        }
    }

    /// Loads one file; it must exist and be valid.
    pub fn load_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Parses the TOML text; errors name the key at fault.
    pub fn parse(text: &str) -> Result<Self> {
        let config: GpuConfig =
            toml::from_str(text).map_err(|err| anyhow::anyhow!("{}", one_line(&err, text)))?;
        // Roots and spec directories must be absolute (spec directories are read from whatever
        // directory the engine runs gpu-youki in); library and binary directories are read
        // under the driver root. Every one must be a usable path.
        let driver = &config.driver;
        let roots = [
            ("driver.root", &driver.root),
            ("driver.dev-root", &driver.dev_root),
            ("driver.proc-root", &driver.proc_root),
        ];
        let absolute = (roots.into_iter())
            .chain(
                config
                    .cdi
                    .spec_dirs
                    .iter()
                    .map(|dir| ("cdi.spec-dirs", dir)),
            )
            .map(|(key, path)| (key, path, true));
        let under_root = (driver
            .library_dirs
            .iter()
            .map(|dir| ("driver.library-dirs", dir)))
        .chain(
            driver
                .binary_dirs
                .iter()
                .map(|dir| ("driver.binary-dirs", dir)),
        )
        .map(|(key, path)| (key, path, false));
        for (key, path, must_be_absolute) in absolute.chain(under_root) {
            let text = path.to_string_lossy();
            anyhow::ensure!(
                !must_be_absolute || path.is_absolute(),
                "{key} must be an absolute path, not {}",
                quoted(&text)
            );
            anyhow::ensure!(
                text.len() < libc::PATH_MAX as usize && !text.contains('\0'),
                "{key} {} is not a usable path: longer than PATH_MAX ({}) or holding a NUL",
                quoted(&text),
                libc::PATH_MAX
            );
        }
        Ok(config)
    }
}

/// toml's errors span several lines with a source excerpt; keep the message and the line that
/// holds the key at fault.
fn one_line(err: &toml::de::Error, text: &str) -> String {
    let message = err.message().trim().replace('\n', " ");
    match err.span() {
        Some(span) => {
            let number = text[..span.start.min(text.len())].matches('\n').count() + 1;
            let line = text.lines().nth(number - 1).unwrap_or_default().trim();
            format!("line {number} ({line}): {message}")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_host_root() {
        let config = GpuConfig::parse("").unwrap();
        assert_eq!(config, GpuConfig::default());
        assert_eq!(config.driver.root, PathBuf::from("/"));
    }

    #[test]
    fn every_driver_key_is_read() {
        let config = GpuConfig::parse(
            "[driver]\nroot = \"/d\"\ndev-root = \"/v\"\nproc-root = \"/p\"\nlibrary-dirs = [\"/usr/lib64\"]\n",
        )
        .unwrap();
        assert_eq!(config.driver.root, PathBuf::from("/d"));
        assert_eq!(config.driver.dev_root, PathBuf::from("/v"));
        assert_eq!(config.driver.proc_root, PathBuf::from("/p"));
        assert_eq!(
            config.driver.library_dirs,
            vec![PathBuf::from("/usr/lib64")]
        );
        assert!(!config.request.volume_mounts);
        assert_eq!(config.request.unprivileged_env, UnprivilegedEnv::Accept);
        let config =
            GpuConfig::parse("[request]\nvolume-mounts = true\nunprivileged-env = \"ignore\"\n")
                .unwrap();
        assert!(config.request.volume_mounts);
        assert_eq!(config.request.unprivileged_env, UnprivilegedEnv::Ignore);
        let config = GpuConfig::parse("[request]\nunprivileged-env = \"accept\"\n").unwrap();
        assert_eq!(config.request.unprivileged_env, UnprivilegedEnv::Accept);
        let err = GpuConfig::parse("[request]\nunprivileged-env = \"deny\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unprivileged-env") && err.contains("accept") && err.contains("ignore"),
            "{err}"
        );
        assert_eq!(config.cdi.spec_dirs, default_spec_dirs());
        let config = GpuConfig::parse("[cdi]\nspec-dirs = [\"/x\"]\n").unwrap();
        assert_eq!(config.cdi.spec_dirs, [PathBuf::from("/x")]);
        let err = GpuConfig::parse("[cdi]\nspec-dirs = [\"/x\", \"cdi\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cdi.spec-dirs must be an absolute path"),
            "{err}"
        );
    }

    #[test]
    fn huge_or_nul_paths_are_refused_naming_the_key() {
        let huge = format!("/{}", "a".repeat(70_000));
        for (text, key) in [
            (format!("[driver]\nroot = {huge:?}\n"), "driver.root"),
            (
                format!("[driver]\nlibrary-dirs = [{huge:?}]\n"),
                "driver.library-dirs",
            ),
            (
                "[driver]\nbinary-dirs = [\"/usr/\\u0000bin\"]\n".to_string(),
                "driver.binary-dirs",
            ),
            (format!("[cdi]\nspec-dirs = [{huge:?}]\n"), "cdi.spec-dirs"),
        ] {
            let err = GpuConfig::parse(&text).unwrap_err().to_string();
            assert!(
                err.starts_with(key) && err.contains("not a usable path") && err.len() < 400,
                "{err}"
            );
        }
    }

    #[test]
    fn errors_name_the_key() {
        let err = GpuConfig::parse("[driver]\nrooot = \"/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("rooot"), "{err}");
        let err = GpuConfig::parse("[driver]\nroot = 3\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2 (root = 3)") && err.contains("invalid type"),
            "{err}"
        );
        let err = GpuConfig::parse("[driver]\nroot = \"relative\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("driver.root must be an absolute path"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1);
    }

    #[test]
    fn a_named_missing_file_is_an_error() {
        let err = GpuConfig::load_file(Path::new("/nonexistent/gpu.toml")).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/gpu.toml"));
    }
}
