//! Parsers for the NVIDIA driver's procfs files, so the inventory can learn GPUs, majors and
//! MIG capability minors without NVML (`shared/reference/nvidia-toolkit.md` §3.2–3.6), and the
//! `params` rewrite that stops NVML inside a container from creating device nodes (§2.9).
//!
//! Every function takes the file's content; callers read the file (under a configurable proc
//! root) and add its path to errors. Lines these parsers do not need are ignored, so a driver
//! that adds fields keeps working; lines they need must be well formed.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;

use crate::pci::PciBusId;

/// A small procfs file's text, read without the `statx` and `lseek` that `fs::read_to_string`
/// makes for a size that procfs does not report: two syscalls fewer a file.
pub fn read_file(path: &Path) -> std::io::Result<String> {
    let mut text = String::with_capacity(4096);
    std::fs::File::open(path)?
        .take(1 << 20)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// `Key: value` pairs of a procfs file, split at the first colon and trimmed; lines without a
/// colon are skipped.
fn key_values(content: &str) -> impl Iterator<Item = (&str, &str)> {
    content.lines().filter_map(|line| {
        let (key, value) = line.split_once(':')?;
        Some((key.trim(), value.trim()))
    })
}

/// What `/proc/driver/nvidia/gpus/<busid>/information` says about one GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuInformation {
    /// `Model`, e.g. `NVIDIA H100 80GB HBM3`.
    pub model: Option<String>,
    /// `GPU UUID` as printed (`GPU-…`); absent when the driver could not read it.
    pub uuid: Option<String>,
    /// `Video BIOS` as printed (`??.??.??.??.??` when unreadable).
    pub video_bios: Option<String>,
    /// `Bus Location`.
    pub bus_location: PciBusId,
    /// `Device Minor`: the minor of `/dev/nvidia<N>`.
    pub device_minor: u32,
    /// `GPU Firmware`: the GSP firmware version, where the GPU runs one.
    pub firmware: Option<String>,
    /// `GPU Excluded` (older drivers: `Blacklisted`) is `Yes`: the driver will not use it.
    pub excluded: bool,
}

/// Parses a GPU `information` file. `Bus Location` and `Device Minor` are required; a key the
/// parser uses that appears twice with different values is an error.
pub fn parse_gpu_information(content: &str) -> Result<GpuInformation> {
    const KNOWN: [&str; 7] = [
        "Model",
        "GPU UUID",
        "Video BIOS",
        "Bus Location",
        "Device Minor",
        "GPU Firmware",
        "GPU Excluded",
    ];
    let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
    for (key, value) in key_values(content) {
        let key = if key == "Blacklisted" {
            "GPU Excluded"
        } else {
            key
        };
        if !KNOWN.contains(&key) {
            continue;
        }
        if let Some(previous) = fields.insert(key, value) {
            ensure!(
                previous == value,
                "GPU information has {key:?} twice: {previous:?} and {value:?}"
            );
        }
    }
    let required = |key: &str| {
        fields
            .get(key)
            .copied()
            .with_context(|| format!("GPU information has no {key:?} line"))
    };
    let optional = |key: &str| fields.get(key).map(|value| value.to_string());
    let bus_location = required("Bus Location")?
        .parse()
        .context("GPU information \"Bus Location\"")?;
    let minor = required("Device Minor")?;
    let device_minor = minor
        .parse()
        .with_context(|| format!("GPU information \"Device Minor\" {minor:?} is not a number"))?;
    let excluded = match fields.get("GPU Excluded").copied() {
        None | Some("No") => false,
        Some("Yes") => true,
        Some(other) => bail!("GPU information \"GPU Excluded\" is {other:?}, not Yes or No"),
    };
    Ok(GpuInformation {
        model: optional("Model"),
        uuid: optional("GPU UUID"),
        video_bios: optional("Video BIOS"),
        bus_location,
        device_minor,
        firmware: optional("GPU Firmware"),
        excluded,
    })
}

/// The loaded kernel module's identity from `/proc/driver/nvidia/version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelModuleVersion {
    /// The RM (driver) version exactly as printed, e.g. `580.105.08`: driver library file names
    /// end in it, so it is kept as text (leading zeros matter).
    pub rm_version: String,
    /// The open-source kernel module ("Open Kernel Module for …") is loaded.
    pub open: bool,
}

/// Parses `/proc/driver/nvidia/version`, whose first line is
/// `NVRM version: NVIDIA UNIX [Open Kernel Module for ]<arch> [Kernel Module]  <RM>  <build>`:
/// the RM version is the first word of that line made of two or more dot-separated numbers.
pub fn parse_driver_version(content: &str) -> Result<KernelModuleVersion> {
    let line = content
        .lines()
        .find_map(|line| line.strip_prefix("NVRM version:"))
        .context("driver version file has no \"NVRM version:\" line")?;
    let is_version = |word: &&str| {
        let parts: Vec<&str> = word.split('.').collect();
        parts.len() >= 2
            && parts
                .iter()
                .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
    };
    let rm_version = line
        .split_whitespace()
        .find(is_version)
        .with_context(|| format!("no driver version in \"NVRM version:{line}\""))?;
    Ok(KernelModuleVersion {
        rm_version: rm_version.to_owned(),
        open: line.contains("Open Kernel Module"),
    })
}

/// Character-device majors of the NVIDIA drivers, from `/proc/devices`; device nodes and cgroup
/// rules are made from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NvidiaDeviceMajors {
    /// `nvidia` (named `nvidia-frontend` before driver 550): GPUs, `nvidiactl` (minor 255),
    /// `nvidia-modeset` (minor 254). 195 in practice.
    pub nvidia: u32,
    /// `nvidia-uvm`: `nvidia-uvm` (minor 0) and `nvidia-uvm-tools` (minor 1).
    pub uvm: Option<u32>,
    /// `nvidia-caps`: MIG and other capability devices under `/dev/nvidia-caps`.
    pub caps: Option<u32>,
    /// `nvidia-caps-imex-channels`: IMEX channel devices.
    pub caps_imex_channels: Option<u32>,
    /// `nvidia-nvswitch`: NVSwitch devices.
    pub nvswitch: Option<u32>,
    /// `nvidia-nvlink`: the NVLink core device.
    pub nvlink: Option<u32>,
}

/// Parses `/proc/devices`, looking only at its `Character devices:` section (block device
/// names live in another namespace). Fails if the section is missing, a line in it is not
/// `<major> <name>`, an NVIDIA name has two different majors, or the `nvidia` driver is not
/// listed.
pub fn parse_device_majors(content: &str) -> Result<NvidiaDeviceMajors> {
    let mut in_character_section = None;
    let mut majors: BTreeMap<&str, u32> = BTreeMap::new();
    for line in content.lines().map(str::trim) {
        if line.is_empty() {
            continue;
        }
        if let Some(section) = line.strip_suffix("devices:") {
            in_character_section = Some(section.trim() == "Character");
            continue;
        }
        match in_character_section {
            None => bail!("/proc/devices line {line:?} comes before any section header"),
            Some(false) => continue,
            Some(true) => {}
        }
        let mut words = line.split_whitespace();
        let (Some(major), Some(name), None) = (words.next(), words.next(), words.next()) else {
            bail!("/proc/devices line {line:?} is not \"<major> <name>\"");
        };
        let major: u32 = major
            .parse()
            .with_context(|| format!("/proc/devices line {line:?} has no numeric major"))?;
        let name = if name == "nvidia-frontend" {
            "nvidia"
        } else {
            name
        };
        // Other drivers may register one name twice (infiniband_verbs does); only the NVIDIA
        // names must be unambiguous.
        if !name.starts_with("nvidia") {
            continue;
        }
        if let Some(previous) = majors.insert(name, major) {
            ensure!(
                previous == major,
                "/proc/devices lists {name} with majors {previous} and {major}"
            );
        }
    }
    ensure!(
        in_character_section.is_some(),
        "/proc/devices has no \"Character devices:\" section"
    );
    let get = |name: &str| majors.get(name).copied();
    Ok(NvidiaDeviceMajors {
        nvidia: get("nvidia").context(
            "/proc/devices lists no nvidia or nvidia-frontend character device (is the nvidia \
             kernel module loaded?)",
        )?,
        uvm: get("nvidia-uvm"),
        caps: get("nvidia-caps"),
        caps_imex_channels: get("nvidia-caps-imex-channels"),
        nvswitch: get("nvidia-nvswitch"),
        nvlink: get("nvidia-nvlink"),
    })
}

/// A MIG capability listed in `/proc/driver/nvidia-caps/mig-minors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MigCapability {
    /// `config`: create and destroy MIG instances.
    Config,
    /// `monitor`: observe all MIG instances.
    Monitor,
    /// `gpu<G>/gi<I>/access`: use GPU instance `gi` of the GPU with minor `gpu`.
    GpuInstance {
        /// Device minor of the parent GPU.
        gpu: u32,
        /// GPU instance id.
        gi: u32,
    },
    /// `gpu<G>/gi<I>/ci<C>/access`: use compute instance `ci` of that GPU instance.
    ComputeInstance {
        /// Device minor of the parent GPU.
        gpu: u32,
        /// GPU instance id.
        gi: u32,
        /// Compute instance id.
        ci: u32,
    },
}

impl MigCapability {
    /// The capability's file relative to `/proc/driver/nvidia/capabilities/`, which the
    /// container's `/proc/driver/nvidia` view must show for the capabilities it is given.
    pub fn proc_path(&self) -> String {
        match self {
            MigCapability::Config => "mig/config".to_owned(),
            MigCapability::Monitor => "mig/monitor".to_owned(),
            MigCapability::GpuInstance { gpu, gi } => format!("gpu{gpu}/mig/gi{gi}/access"),
            MigCapability::ComputeInstance { gpu, gi, ci } => {
                format!("gpu{gpu}/mig/gi{gi}/ci{ci}/access")
            }
        }
    }

    /// Parses a `mig-minors` capability name; `None` for names this version does not know.
    fn from_minors_name(name: &str) -> Option<Self> {
        let number = |part: &str, prefix: &str| -> Option<u32> {
            let digits = part.strip_prefix(prefix)?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            digits.parse().ok()
        };
        let parts: Vec<&str> = name.split('/').collect();
        match parts.as_slice() {
            ["config"] => Some(MigCapability::Config),
            ["monitor"] => Some(MigCapability::Monitor),
            [gpu, gi, "access"] => Some(MigCapability::GpuInstance {
                gpu: number(gpu, "gpu")?,
                gi: number(gi, "gi")?,
            }),
            [gpu, gi, ci, "access"] => Some(MigCapability::ComputeInstance {
                gpu: number(gpu, "gpu")?,
                gi: number(gi, "gi")?,
                ci: number(ci, "ci")?,
            }),
            _ => None,
        }
    }
}

/// The `nvidia-caps` minor of every MIG capability; the device is
/// `/dev/nvidia-caps/nvidia-cap<minor>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigMinors(BTreeMap<MigCapability, u32>);

impl MigMinors {
    /// The minor of `capability`, if the driver lists it.
    pub fn minor(&self, capability: &MigCapability) -> Option<u32> {
        self.0.get(capability).copied()
    }

    /// All capabilities and their minors, in capability order.
    pub fn iter(&self) -> impl Iterator<Item = (&MigCapability, &u32)> {
        self.0.iter()
    }
}

/// Parses `/proc/driver/nvidia-caps/mig-minors` (`<capability> <minor>` lines). Capability
/// names this version does not know are skipped; malformed lines and a capability listed twice
/// with different minors are errors.
pub fn parse_mig_minors(content: &str) -> Result<MigMinors> {
    let mut minors = BTreeMap::new();
    for line in content.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut words = line.split_whitespace();
        let (Some(name), Some(minor), None) = (words.next(), words.next(), words.next()) else {
            bail!("mig-minors line {line:?} is not \"<capability> <minor>\"");
        };
        let minor: u32 = minor
            .parse()
            .with_context(|| format!("mig-minors line {line:?} has no numeric minor"))?;
        let Some(capability) = MigCapability::from_minors_name(name) else {
            continue;
        };
        if let Some(previous) = minors.insert(capability, minor) {
            ensure!(
                previous == minor,
                "mig-minors lists {name} with minors {previous} and {minor}"
            );
        }
    }
    Ok(MigMinors(minors))
}

/// Parses a capability's `access` file under `/proc/driver/nvidia/capabilities` (e.g.
/// `gpu0/mig/gi1/access`): its `DeviceFileMinor`, the minor of its
/// `/dev/nvidia-caps/nvidia-cap<minor>` node.
pub fn parse_capability_access(content: &str) -> Result<u32> {
    let (_, minor) = key_values(content)
        .find(|(key, _)| *key == "DeviceFileMinor")
        .context("no DeviceFileMinor line")?;
    minor
        .parse()
        .with_context(|| format!("DeviceFileMinor {minor:?} is not a number"))
}

/// The `params` content a container should see: with `ModifyDeviceFiles` turned off, so NVML
/// inside the container never creates or chmods `/dev/nvidia*` nodes (which could expose GPUs
/// it was not given). `None` when the host's file already has it off or does not mention it,
/// so the host file can be shown unchanged. Every other byte is kept.
pub fn params_without_device_file_modification(params: &str) -> Result<Option<String>> {
    let mut changed = false;
    let mut rewritten = String::with_capacity(params.len());
    for line in params.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let value = body
            .split_once(':')
            .filter(|(key, _)| key.trim() == "ModifyDeviceFiles")
            .map(|(_, value)| value.trim());
        match value {
            None => rewritten.push_str(line),
            Some(value) => {
                let enabled: u64 = value
                    .parse()
                    .with_context(|| format!("params line {body:?} does not hold a number"))?;
                if enabled == 0 {
                    rewritten.push_str(line);
                } else {
                    changed = true;
                    rewritten.push_str("ModifyDeviceFiles: 0");
                    rewritten.push_str(&line[body.len()..]);
                }
            }
        }
    }
    Ok(changed.then_some(rewritten))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data-centre GPU on a 580 open-module driver (GSP firmware line present).
    const H100_INFORMATION: &str = "Model: \t\t NVIDIA H100 80GB HBM3\n\
        IRQ:   \t\t 0\n\
        GPU UUID: \t GPU-8f6b1a0e-0b7e-2e4f-9d8b-3c1b2a4d5e6f\n\
        Video BIOS: \t 96.00.99.00.01\n\
        Bus Type: \t PCIe\n\
        DMA Size: \t 52 bits\n\
        DMA Mask: \t 0xfffffffffffff\n\
        Bus Location: \t 0000:18:00.0\n\
        Device Minor: \t 3\n\
        GPU Firmware: \t 580.105.08\n\
        GPU Excluded:\t No\n";

    /// An older consumer GPU and driver (`Blacklisted` instead of `GPU Excluded`).
    const GTX_INFORMATION: &str = "Model:           GeForce GTX 1080 Ti\n\
        IRQ:             63\n\
        GPU UUID:        GPU-e953c3c5-dba7-029e-ce44-7b51417131df\n\
        Video BIOS:      86.02.40.00.48\n\
        Bus Type:        PCIe\n\
        DMA Size:        47 bits\n\
        DMA Mask:        0x7fffffffffff\n\
        Bus Location:    0000:17:00.0\n\
        Device Minor:    0\n\
        Blacklisted:     No\n";

    #[test]
    fn reads_gpu_information() {
        let h100 = parse_gpu_information(H100_INFORMATION).unwrap();
        assert_eq!(
            h100,
            GpuInformation {
                model: Some("NVIDIA H100 80GB HBM3".into()),
                uuid: Some("GPU-8f6b1a0e-0b7e-2e4f-9d8b-3c1b2a4d5e6f".into()),
                video_bios: Some("96.00.99.00.01".into()),
                bus_location: "0000:18:00.0".parse().unwrap(),
                device_minor: 3,
                firmware: Some("580.105.08".into()),
                excluded: false,
            }
        );
        let gtx = parse_gpu_information(GTX_INFORMATION).unwrap();
        assert_eq!(gtx.device_minor, 0);
        assert_eq!(gtx.bus_location.proc_dir_name(), "0000:17:00.0");
        assert_eq!(gtx.firmware, None);

        let excluded = H100_INFORMATION.replace("Excluded:\t No", "Excluded:\t Yes");
        assert!(parse_gpu_information(&excluded).unwrap().excluded);
        // A GPU whose UUID the driver could not read, and a driver with extra lines.
        let sparse = "Bus Location: \t 0001:c1:00.0\nDevice Minor: \t 7\nNew Field: x\njunk\n";
        let sparse = parse_gpu_information(sparse).unwrap();
        assert_eq!((sparse.uuid, sparse.device_minor), (None, 7));
        assert_eq!(sparse.bus_location.to_string(), "00000001:c1:00.0");
    }

    #[test]
    fn rejects_incomplete_gpu_information() {
        let without = |key: &str| {
            H100_INFORMATION
                .lines()
                .filter(|line| !line.starts_with(key))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let cases = [
            (without("Bus Location"), "no \"Bus Location\" line"),
            (without("Device Minor"), "no \"Device Minor\" line"),
            (
                H100_INFORMATION.replace("Minor: \t 3", "Minor: \t three"),
                "\"three\" is not a number",
            ),
            (
                H100_INFORMATION.replace("0000:18:00.0", "18:00.0"),
                "Bus Location",
            ),
            (
                H100_INFORMATION.replace("Excluded:\t No", "Excluded:\t Maybe"),
                "\"Maybe\", not Yes or No",
            ),
            (
                format!("{H100_INFORMATION}Device Minor: 4\n"),
                "\"Device Minor\" twice",
            ),
        ];
        for (content, expected) in cases {
            let err = format!("{:#}", parse_gpu_information(&content).unwrap_err());
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }

    #[test]
    fn reads_driver_versions() {
        let cases = [
            (
                "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.105.08  Release \
                 Build  (dvs-builder@U22-I3-AE18-23-3)  Wed Oct 29 23:15:11 UTC 2025\n\
                 GCC version:  gcc version 12.3.0 (Ubuntu 12.3.0-1ubuntu1~22.04)\n",
                "580.105.08",
                true,
            ),
            (
                "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.216.03  Thu Apr  3 \
                 01:14:19 UTC 2025\nGCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n",
                "535.216.03",
                false,
            ),
            (
                "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.142  Release Build  \
                 (dvs-builder@U22-I3-AD05-51-5)  Tue Mar  3 19:14:46 UTC 2026\n",
                "580.142",
                true,
            ),
            (
                "NVRM version: NVIDIA UNIX Kernel Module for aarch64  34.1.1  Release Build  \
                 (buildbrain@mobile-u64-5273-d7000)  Wed Apr 13 01:05:13 PDT 2022\n",
                "34.1.1",
                false,
            ),
        ];
        for (content, rm_version, open) in cases {
            assert_eq!(
                parse_driver_version(content).unwrap(),
                KernelModuleVersion {
                    rm_version: rm_version.into(),
                    open
                }
            );
        }
        for (content, expected) in [
            (
                "GCC version:  gcc version 12.2.0\n",
                "no \"NVRM version:\" line",
            ),
            (
                "NVRM version: NVIDIA UNIX x86_64 Kernel Module  unknown\n",
                "no driver version in",
            ),
            ("", "no \"NVRM version:\" line"),
        ] {
            let err = parse_driver_version(content).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
    }

    const PROC_DEVICES: &str = "Character devices:
  1 mem
  4 /dev/vc/0
  4 tty
  5 /dev/tty
 10 misc
 13 input
 29 fb
116 alsa
128 ptm
136 pts
180 usb
189 usb_device
195 nvidia
195 nvidia-modeset
226 drm
231 infiniband_verbs
234 nvidia-nvlink
235 nvidia-caps-imex-channels
236 nvidia-caps
239 infiniband_mad
240 infiniband_verbs
254 gpiochip
508 nvidia-nvswitch
510 nvidia-uvm

Block devices:
  7 loop
  8 sd
259 blkext
511 nvidia-uvm
";

    #[test]
    fn reads_device_majors() {
        assert_eq!(
            parse_device_majors(PROC_DEVICES).unwrap(),
            NvidiaDeviceMajors {
                nvidia: 195,
                uvm: Some(510),
                caps: Some(236),
                caps_imex_channels: Some(235),
                nvswitch: Some(508),
                nvlink: Some(234),
            }
        );
        // Before driver 550, and with only the essential modules loaded.
        let old = "Character devices:\n195 nvidia-frontend\n237 nvidia-uvm\n\nBlock devices:\n";
        assert_eq!(
            parse_device_majors(old).unwrap(),
            NvidiaDeviceMajors {
                nvidia: 195,
                uvm: Some(237),
                caps: None,
                caps_imex_channels: None,
                nvswitch: None,
                nvlink: None,
            }
        );
    }

    #[test]
    fn rejects_unusable_device_lists() {
        let cases = [
            (
                PROC_DEVICES.replace("195 nvidia\n195 nvidia-modeset\n", ""),
                "no nvidia or nvidia-frontend",
            ),
            ("Block devices:\n195 nvidia\n".into(), "no nvidia"),
            ("195 nvidia\n".into(), "comes before any section header"),
            ("".into(), "no \"Character devices:\" section"),
            (
                "Character devices:\n195 nvidia\n196 nvidia-frontend\n".into(),
                "nvidia with majors 195 and 196",
            ),
            (
                PROC_DEVICES.replace("510 nvidia-uvm", "510 nvidia uvm"),
                "is not \"<major> <name>\"",
            ),
            (
                PROC_DEVICES.replace("510 nvidia-uvm", "x10 nvidia-uvm"),
                "no numeric major",
            ),
        ];
        for (content, expected) in cases {
            let err = format!("{:#}", parse_device_majors(&content).unwrap_err());
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }

    /// The file as the driver writes it: every possible capability of 32 GPUs, 15 GPU
    /// instances each with 8 compute instances.
    fn full_mig_minors() -> String {
        let mut content = String::from("config 1\nmonitor 2\n");
        let mut minor = 3;
        for gpu in 0..32 {
            for gi in 0..15 {
                content += &format!("gpu{gpu}/gi{gi}/access {minor}\n");
                minor += 1;
                for ci in 0..8 {
                    content += &format!("gpu{gpu}/gi{gi}/ci{ci}/access {minor}\n");
                    minor += 1;
                }
            }
        }
        content
    }

    #[test]
    fn reads_mig_minors() {
        let minors = parse_mig_minors(&full_mig_minors()).unwrap();
        assert_eq!(minors.iter().count(), 2 + 32 * 15 * 9);
        let cases = [
            (MigCapability::Config, 1, "mig/config"),
            (MigCapability::Monitor, 2, "mig/monitor"),
            (
                MigCapability::GpuInstance { gpu: 0, gi: 0 },
                3,
                "gpu0/mig/gi0/access",
            ),
            (
                MigCapability::ComputeInstance {
                    gpu: 0,
                    gi: 0,
                    ci: 0,
                },
                4,
                "gpu0/mig/gi0/ci0/access",
            ),
            (
                MigCapability::ComputeInstance {
                    gpu: 3,
                    gi: 3,
                    ci: 3,
                },
                439,
                "gpu3/mig/gi3/ci3/access",
            ),
            (
                MigCapability::ComputeInstance {
                    gpu: 31,
                    gi: 14,
                    ci: 7,
                },
                4322,
                "gpu31/mig/gi14/ci7/access",
            ),
        ];
        for (capability, minor, proc_path) in cases {
            assert_eq!(minors.minor(&capability), Some(minor), "{capability:?}");
            assert_eq!(capability.proc_path(), proc_path);
        }
        assert_eq!(
            minors.minor(&MigCapability::GpuInstance { gpu: 32, gi: 0 }),
            None
        );
        // Unknown capability names from a newer driver are skipped.
        let newer = parse_mig_minors("config 1\nfabric/access 9\ngpu0/gi0/cix/access 5\n\n");
        assert_eq!(newer.unwrap().iter().count(), 1);
    }

    #[test]
    fn rejects_malformed_mig_minors() {
        for (content, expected) in [
            ("config\n", "is not \"<capability> <minor>\""),
            ("config 1 2\n", "is not \"<capability> <minor>\""),
            ("config one\n", "no numeric minor"),
            ("config 1\nconfig 2\n", "config with minors 1 and 2"),
        ] {
            let err = format!("{:#}", parse_mig_minors(content).unwrap_err());
            assert!(err.contains(expected), "{expected}: {err}");
        }
        assert!(parse_mig_minors("config 1\nconfig 1\n").is_ok());
    }

    const PARAMS: &str = "ResmanDebugLevel: 4294967295
RmLogonRC: 1
ModifyDeviceFiles: 1
DeviceFileUID: 0
DeviceFileGID: 0
DeviceFileMode: 438
InitializeSystemMemoryAllocations: 1
UsePageAttributeTable: 4294967295
EnableMSI: 1
EnablePCIeGen3: 0
MemoryPoolSize: 0
KMallocHeapMaxSize: 0
VMallocHeapMaxSize: 0
IgnoreMMIOCheck: 0
EnableStreamMemOPs: 0
EnableUserNUMAManagement: 1
NvLinkDisable: 0
RmProfilingAdminOnly: 1
PreserveVideoMemoryAllocations: 0
EnableS0ixPowerManagement: 0
S0ixPowerManagementVideoMemoryThreshold: 256
DynamicPowerManagement: 3
DynamicPowerManagementVideoMemoryThreshold: 200
RegisterPCIDriver: 1
EnablePCIERelaxedOrderingMode: 0
EnableResizableBar: 0
EnableGpuFirmware: 18
EnableGpuFirmwareLogs: 2
RmNvlinkBandwidthLinkCount: 0
EnableDbgBreakpoint: 0
OpenRmEnableUnsupportedGpus: 1
DmaRemapPeerMmio: 1
ImexChannelCount: 2048
CreateImexChannel0: 0
GrdmaPciTopoCheckOverride: 0
RegistryDwords: \"\"
RegistryDwordsPerDevice: \"\"
RmMsg: \"\"
GpuBlacklist: \"\"
TemporaryFilePath: \"\"
ExcludedGpus: \"\"
";

    #[test]
    fn turns_device_file_modification_off() {
        let rewritten = params_without_device_file_modification(PARAMS)
            .unwrap()
            .unwrap();
        assert_eq!(
            rewritten,
            PARAMS.replace("ModifyDeviceFiles: 1\n", "ModifyDeviceFiles: 0\n")
        );
        // Already off, absent: nothing to do.
        assert_eq!(
            params_without_device_file_modification(&rewritten).unwrap(),
            None
        );
        let absent = PARAMS.replace("ModifyDeviceFiles: 1\n", "");
        assert_eq!(
            params_without_device_file_modification(&absent).unwrap(),
            None
        );
        // Other spellings of "on", no trailing newline, CRLF kept.
        for (input, output) in [
            ("A: 1\nModifyDeviceFiles:   2", "A: 1\nModifyDeviceFiles: 0"),
            (
                "ModifyDeviceFiles: 1\r\nB: 2\r\n",
                "ModifyDeviceFiles: 0\r\nB: 2\r\n",
            ),
        ] {
            assert_eq!(
                params_without_device_file_modification(input)
                    .unwrap()
                    .unwrap(),
                output
            );
        }
        let err = params_without_device_file_modification("ModifyDeviceFiles: yes\n").unwrap_err();
        assert!(
            err.to_string().contains("\"ModifyDeviceFiles: yes\""),
            "{err}"
        );
    }

    #[test]
    fn reads_capability_access_files() {
        let text = "DeviceFileMinor: 21\nDeviceFileMode: 292\nDeviceFileModify: 1\n";
        assert_eq!(parse_capability_access(text).unwrap(), 21);
        assert!(parse_capability_access("DeviceFileMode: 292\n").is_err());
        assert!(parse_capability_access("DeviceFileMinor: x\n").is_err());
    }
}
