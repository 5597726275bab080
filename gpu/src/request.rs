//! The GPU request a container makes through its environment (`NVIDIA_VISIBLE_DEVICES`,
//! `NVIDIA_DRIVER_CAPABILITIES`, `NVIDIA_REQUIRE_*`, `NVIDIA_DISABLE_REQUIRE`, `CUDA_VERSION`),
//! with the NVIDIA Container Toolkit's meaning (`shared/reference/nvidia-toolkit.md` §1.2–1.4),
//! and the check of its requirements against facts about the host.
//!
//! Where this module deliberately differs from the toolkit:
//! * A requirement whose host value is unknown (CUDA version, driver version, a GPU's arch or
//!   brand) is **not met**; the toolkit lets unknown `cuda`/`driver` values pass. A container
//!   that asked for a driver feature must not start on a host that cannot show it has it.
//! * A request variable set twice with different values is an error; the toolkit lets the last
//!   one win, while the process itself (`getenv`) would see the first.
//! * `NVIDIA_DISABLE_REQUIRE` with a value Go's `strconv.ParseBool` rejects is an error; the
//!   toolkit treats it as false.
//!
//! Errors are one line naming the variable and its value.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::{Serialize, Serializer};

use crate::pci::PciBusId;

/// Selects the GPUs (or none, or only the driver) for the container.
pub const VISIBLE_DEVICES: &str = "NVIDIA_VISIBLE_DEVICES";
/// Selects which parts of the driver the container gets.
pub const DRIVER_CAPABILITIES: &str = "NVIDIA_DRIVER_CAPABILITIES";
/// Turns requirement checks off.
pub const DISABLE_REQUIRE: &str = "NVIDIA_DISABLE_REQUIRE";
/// Every variable with this prefix (but [`REQUIRE_JETPACK`]) is a requirement.
pub const REQUIRE_PREFIX: &str = "NVIDIA_REQUIRE_";
/// The CUDA requirement CUDA images set; its absence marks a legacy image.
pub const REQUIRE_CUDA: &str = "NVIDIA_REQUIRE_CUDA";
/// A Tegra CSV-mount option that shares the requirement prefix but is not a requirement.
pub const REQUIRE_JETPACK: &str = "NVIDIA_REQUIRE_JETPACK";
/// Set by CUDA images; marks legacy images and implies a `cuda>=MAJOR.MINOR` requirement.
pub const CUDA_VERSION: &str = "CUDA_VERSION";
/// IMEX channels, a comma list of channel numbers (reference §1.6).
pub const IMEX_CHANNELS: &str = "NVIDIA_IMEX_CHANNELS";
/// MIG management: `all` gives the MIG `config` capability of the visible GPUs (§1.5).
pub const MIG_CONFIG_DEVICES: &str = "NVIDIA_MIG_CONFIG_DEVICES";
/// MIG monitoring: `all` gives the MIG `monitor` capability (§1.5).
pub const MIG_MONITOR_DEVICES: &str = "NVIDIA_MIG_MONITOR_DEVICES";
/// The largest IMEX channel number (the driver has 2^20 channels).
pub const MAX_IMEX_CHANNEL: u32 = (1 << 20) - 1;

/// Longest part of a variable's value quoted in an error message, so that a huge value cannot
/// flood logs.
const MAX_QUOTED_LEN: usize = 200;

/// `value` quoted and escaped on one line, truncated past [`MAX_QUOTED_LEN`] bytes.
pub(crate) fn quoted(value: &str) -> String {
    if value.len() <= MAX_QUOTED_LEN {
        return format!("{value:?}");
    }
    let mut end = MAX_QUOTED_LEN;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &value[..end], value.len())
}

/// The error for `variable=value`, with the problem after it, on one line.
fn value_error(variable: &str, value: &str, problem: &anyhow::Error) -> anyhow::Error {
    anyhow!("{variable}={}: {problem:#}", quoted(value))
}

/// What a container asked for. Absent (`None` from [`GpuRequest::from_env`]) when it asked for
/// nothing, in which case no GPU code runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuRequest {
    /// The NVIDIA GPUs asked for; `None` when `NVIDIA_VISIBLE_DEVICES` named only other vendors'
    /// CDI devices, so the NVIDIA stage adds nothing of its own.
    pub devices: Option<VisibleDevices>,
    /// Fully qualified CDI device names other than `nvidia.com/gpu=…`, left for the CDI stage.
    pub cdi_devices: Vec<CdiDeviceName>,
    /// The driver parts asked for.
    pub capabilities: DriverCapabilities,
    /// Requirements that must all hold on the host; empty when checks are disabled.
    pub requirements: Vec<Requirement>,
    /// `NVIDIA_DISABLE_REQUIRE` was true, so requirements were not even parsed.
    pub requirements_disabled: bool,
    /// IMEX channels asked for, ascending (`NVIDIA_IMEX_CHANNELS`, or `imex/<n>` volume
    /// mounts put there by the caller).
    pub imex_channels: Vec<u32>,
    /// `NVIDIA_MIG_CONFIG_DEVICES=all`: create and destroy MIG instances of the visible GPUs.
    pub mig_config: bool,
    /// `NVIDIA_MIG_MONITOR_DEVICES=all`: observe all MIG instances.
    pub mig_monitor: bool,
    /// Device families turned on with `NVIDIA_<FAMILY>=enabled` (reference §1.7).
    pub features: Vec<DeviceFeature>,
    /// The container is privileged (see [`crate::privilege`]); never read from the
    /// environment, set by the caller that has the spec. MIG management needs it.
    pub privileged: bool,
}

/// A device family beyond the GPUs that a container turns on with `NVIDIA_<FAMILY>=enabled`
/// (the value exactly `enabled`; anything else leaves it off, as in the toolkit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceFeature {
    /// GPUDirect Storage: `/dev/nvidia-fs*`, with `/run/udev` and `/etc/cufile.json`.
    Gds,
    /// Mellanox OFED: `/dev/infiniband/uverbs*` and `/dev/infiniband/rdma_cm`.
    Mofed,
    /// NVSwitch: `/dev/nvidia-nvswitchctl` and `/dev/nvidia-nvswitch*`.
    Nvswitch,
    /// GDRCopy: `/dev/gdrdrv`.
    Gdrcopy,
}

impl DeviceFeature {
    /// Every family, in the order their devices are added.
    pub const ALL: [DeviceFeature; 4] = [
        DeviceFeature::Gds,
        DeviceFeature::Mofed,
        DeviceFeature::Nvswitch,
        DeviceFeature::Gdrcopy,
    ];

    /// The variable that turns the family on.
    pub fn variable(self) -> &'static str {
        match self {
            DeviceFeature::Gds => "NVIDIA_GDS",
            DeviceFeature::Mofed => "NVIDIA_MOFED",
            DeviceFeature::Nvswitch => "NVIDIA_NVSWITCH",
            DeviceFeature::Gdrcopy => "NVIDIA_GDRCOPY",
        }
    }
}

/// Parses `NVIDIA_IMEX_CHANNELS`: channel numbers, ascending and without duplicates. `all` is
/// dropped (no channels), as the toolkit drops it from the environment: only a device plugin
/// may hand out every channel.
pub fn parse_imex_channels(value: &str) -> Result<Vec<u32>> {
    let mut channels = Vec::new();
    for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if token == "all" {
            return Ok(Vec::new());
        }
        let channel = token
            .parse::<u32>()
            .ok()
            .filter(|c| *c <= MAX_IMEX_CHANNEL)
            .ok_or_else(|| {
                anyhow!(
                    "IMEX channel {} is not a number from 0 to {MAX_IMEX_CHANNEL}",
                    quoted(token)
                )
            })?;
        channels.push(channel);
    }
    channels.sort_unstable();
    channels.dedup();
    Ok(channels)
}

/// Parses a MIG management variable: unset or empty is off, `all` is on, anything else is an
/// error (the toolkit supports only `all`).
fn parse_mig_management(variable: &str, value: Option<&str>) -> Result<bool> {
    match value {
        None | Some("") => Ok(false),
        Some("all") => Ok(true),
        Some(other) => Err(value_error(
            variable,
            other,
            &anyhow!("only \"all\" is supported"),
        )),
    }
}

/// The GPUs named by `NVIDIA_VISIBLE_DEVICES`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VisibleDevices {
    /// `none`: no GPU, but the driver's libraries, binaries and control devices.
    DriverOnly,
    /// `all` (or `nvidia.com/gpu=all`): every GPU and MIG device.
    All,
    /// The listed devices, in request order, without duplicates.
    Selected(Vec<DeviceSelector>),
}

/// One way of naming a GPU or MIG device, as the user wrote it; the inventory resolves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceSelector {
    /// A GPU index in NVML enumeration (PCI bus) order.
    Index(u32),
    /// A GPU UUID, normalised to `GPU-` and lower-case hex.
    GpuUuid(String),
    /// A GPU's PCI bus id (function 0).
    PciBusId(PciBusId),
    /// MIG device `mig` of GPU `gpu` (`gpu:mig`, both indices).
    MigIndex {
        /// Index of the parent GPU.
        gpu: u32,
        /// Index of the MIG device on that GPU.
        mig: u32,
    },
    /// A MIG device UUID, normalised to `MIG-` and lower-case hex; also the pre-470 form
    /// `MIG-GPU-<uuid>/<gi>/<ci>`.
    MigUuid(String),
}

/// A fully qualified CDI device name, `vendor/class=name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CdiDeviceName {
    /// e.g. `nvidia.com`.
    pub vendor: String,
    /// e.g. `gpu`.
    pub class: String,
    /// e.g. `0` or `all`.
    pub name: String,
}

/// Prints `vendor/class=name`, the form CDI tools accept.
impl fmt::Display for CdiDeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}={}", self.vendor, self.class, self.name)
    }
}

/// Serialised as `vendor/class=name`.
impl Serialize for CdiDeviceName {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Parses `vendor/class=name` with the CDI character sets: vendor and class (since CDI 0.6.0)
/// letters, digits, `_`, `-`, `.`; name letters, digits, `_`, `-`, `.`, `:`; each starting
/// with a letter or digit.
impl FromStr for CdiDeviceName {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        let parsed = text.split_once('/').and_then(|(vendor, rest)| {
            let (class, name) = rest.split_once('=')?;
            Some((vendor, class, name))
        });
        let Some((vendor, class, name)) = parsed else {
            bail!("CDI device name {} is not vendor/class=name", quoted(text));
        };
        let valid = |part: &str, extra: &[char]| {
            part.starts_with(|c: char| c.is_ascii_alphanumeric())
                && part.chars().all(|c| {
                    c.is_ascii_alphanumeric() || c == '_' || c == '-' || extra.contains(&c)
                })
        };
        ensure!(
            valid(vendor, &['.']) && valid(class, &['.']) && valid(name, &['.', ':']),
            "CDI device name {} has characters CDI does not allow",
            quoted(text)
        );
        Ok(CdiDeviceName {
            vendor: vendor.into(),
            class: class.into(),
            name: name.into(),
        })
    }
}

/// One token of `NVIDIA_VISIBLE_DEVICES`.
enum DeviceToken {
    Void,
    DriverOnly,
    All,
    Device(DeviceSelector),
    Cdi(CdiDeviceName),
}

fn parse_device_token(token: &str) -> Result<DeviceToken> {
    match token {
        "void" => return Ok(DeviceToken::Void),
        "none" => return Ok(DeviceToken::DriverOnly),
        "all" => return Ok(DeviceToken::All),
        _ => {}
    }
    if token.contains('=') {
        let name: CdiDeviceName = token.parse()?;
        if (name.vendor.as_str(), name.class.as_str()) != ("nvidia.com", "gpu") {
            return Ok(DeviceToken::Cdi(name));
        }
        if name.name == "all" {
            return Ok(DeviceToken::All);
        }
        return parse_device_selector(&name.name)
            .map(DeviceToken::Device)
            .with_context(|| format!("in CDI device name {}", quoted(token)));
    }
    parse_device_selector(token).map(DeviceToken::Device)
}

fn parse_device_selector(token: &str) -> Result<DeviceSelector> {
    let index = |text: &str, what: &str| -> Result<u32> {
        text.parse()
            .map_err(|_| anyhow!("{what} {} is too large", quoted(text)))
    };
    let is_number = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if is_number(token) {
        return Ok(DeviceSelector::Index(index(token, "GPU index")?));
    }
    if let Some((gpu, mig)) = token.split_once(':') {
        if is_number(gpu) && is_number(mig) {
            return Ok(DeviceSelector::MigIndex {
                gpu: index(gpu, "GPU index")?,
                mig: index(mig, "MIG index")?,
            });
        }
        if token.contains('.') {
            let bus_id: PciBusId = token.parse()?;
            ensure!(
                bus_id.function == 0,
                "PCI bus id {} names function {}; GPUs are function 0",
                quoted(token),
                bus_id.function
            );
            return Ok(DeviceSelector::PciBusId(bus_id));
        }
    }
    if let Some(uuid) = strip_prefix_ignore_case(token, "GPU-") {
        let uuid = normalize_uuid(uuid)
            .with_context(|| format!("GPU UUID {} is malformed", quoted(token)))?;
        return Ok(DeviceSelector::GpuUuid(format!("GPU-{uuid}")));
    }
    if let Some(rest) = strip_prefix_ignore_case(token, "MIG-") {
        return normalize_mig_uuid(rest)
            .map(DeviceSelector::MigUuid)
            .with_context(|| format!("MIG UUID {} is malformed", quoted(token)));
    }
    bail!(
        "unknown device {} (expected an index, GPU-<uuid>, a PCI bus id, GPU:MIG, MIG-<uuid>, \
         all, none or void)",
        quoted(token)
    )
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in lower case.
fn normalize_uuid(text: &str) -> Result<String> {
    let groups: Vec<&str> = text.split('-').collect();
    let lengths: Vec<usize> = groups.iter().map(|group| group.len()).collect();
    ensure!(
        lengths == [8, 4, 4, 4, 12]
            && groups
                .iter()
                .all(|group| group.bytes().all(|b| b.is_ascii_hexdigit())),
        "expected 8-4-4-4-12 hex digits"
    );
    Ok(text.to_ascii_lowercase())
}

/// `MIG-<uuid>` or the pre-470 `MIG-GPU-<uuid>/<gi>/<ci>`, given without the `MIG-`.
fn normalize_mig_uuid(rest: &str) -> Result<String> {
    if let Some(legacy) = strip_prefix_ignore_case(rest, "GPU-") {
        let mut parts = legacy.split('/');
        let (Some(uuid), Some(gi), Some(ci), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            bail!("expected MIG-GPU-<uuid>/<gi>/<ci>");
        };
        let gi: u32 = gi.parse().context("GPU instance id is not a number")?;
        let ci: u32 = ci.parse().context("compute instance id is not a number")?;
        return Ok(format!("MIG-GPU-{}/{gi}/{ci}", normalize_uuid(uuid)?));
    }
    Ok(format!("MIG-{}", normalize_uuid(rest)?))
}

/// Parses `NVIDIA_VISIBLE_DEVICES`: `None` for no request (empty or `void`), else the NVIDIA
/// devices and the other CDI names. When special words are mixed, the one granting least wins:
/// `void` over `none` over `all` (the toolkit's precedence), and each over listed devices.
fn parse_visible_devices(
    value: &str,
) -> Result<Option<(Option<VisibleDevices>, Vec<CdiDeviceName>)>> {
    let (mut void, mut driver_only, mut all) = (false, false, false);
    let mut selected: Vec<DeviceSelector> = Vec::new();
    let mut cdi_devices: Vec<CdiDeviceName> = Vec::new();
    for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        match parse_device_token(token)? {
            DeviceToken::Void => void = true,
            DeviceToken::DriverOnly => driver_only = true,
            DeviceToken::All => all = true,
            DeviceToken::Device(selector) => {
                if !selected.contains(&selector) {
                    selected.push(selector);
                }
            }
            DeviceToken::Cdi(name) => {
                if !cdi_devices.contains(&name) {
                    cdi_devices.push(name);
                }
            }
        }
    }
    let nothing_listed = selected.is_empty() && cdi_devices.is_empty();
    if void || (nothing_listed && !driver_only && !all) {
        return Ok(None);
    }
    let devices = if driver_only {
        Some(VisibleDevices::DriverOnly)
    } else if all {
        Some(VisibleDevices::All)
    } else if selected.is_empty() {
        None
    } else {
        Some(VisibleDevices::Selected(selected))
    };
    Ok(Some((devices, cdi_devices)))
}

/// A part of the driver a container can ask for in `NVIDIA_DRIVER_CAPABILITIES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverCapability {
    /// CUDA and OpenCL.
    Compute,
    /// 32-bit variants of the other capabilities' libraries.
    Compat32,
    /// OpenGL, Vulkan, EGL.
    Graphics,
    /// `nvidia-smi` and NVML.
    Utility,
    /// Video encode/decode.
    Video,
    /// X11 display (graphics plus the modeset device).
    Display,
    /// NVIDIA NGX.
    Ngx,
}

impl DriverCapability {
    /// Every capability, the meaning of `all`.
    pub const ALL: [DriverCapability; 7] = [
        DriverCapability::Compute,
        DriverCapability::Compat32,
        DriverCapability::Graphics,
        DriverCapability::Utility,
        DriverCapability::Video,
        DriverCapability::Display,
        DriverCapability::Ngx,
    ];

    /// The word used in `NVIDIA_DRIVER_CAPABILITIES`.
    pub fn name(self) -> &'static str {
        match self {
            DriverCapability::Compute => "compute",
            DriverCapability::Compat32 => "compat32",
            DriverCapability::Graphics => "graphics",
            DriverCapability::Utility => "utility",
            DriverCapability::Video => "video",
            DriverCapability::Display => "display",
            DriverCapability::Ngx => "ngx",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of [`DriverCapability`] values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DriverCapabilities(u8);

impl DriverCapabilities {
    /// Every capability: `all`, and what legacy CUDA images get when the variable is unset.
    pub fn all() -> Self {
        DriverCapability::ALL.into_iter().collect()
    }

    /// `utility,compute`: what a container gets when the variable is unset or empty.
    pub fn default_request() -> Self {
        [DriverCapability::Utility, DriverCapability::Compute]
            .into_iter()
            .collect()
    }

    /// Whether `capability` is in the set.
    pub fn contains(self, capability: DriverCapability) -> bool {
        self.0 & capability.bit() != 0
    }

    /// The capabilities in the set, in [`DriverCapability::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = DriverCapability> {
        DriverCapability::ALL
            .into_iter()
            .filter(move |&capability| self.contains(capability))
    }

    /// Parses the value of `NVIDIA_DRIVER_CAPABILITIES`: a comma list of capability words
    /// (whitespace around words and empty items ignored), `all` anywhere meaning all; empty
    /// means [`DriverCapabilities::default_request`]. An unknown word is an error naming the
    /// variable and its value.
    pub fn parse(value: &str) -> Result<Self> {
        let mut set = DriverCapabilities::default();
        for word in value.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            if word == "all" {
                return Ok(DriverCapabilities::all());
            }
            let capability = DriverCapability::ALL
                .into_iter()
                .find(|capability| capability.name() == word)
                .ok_or_else(|| {
                    let problem = anyhow!(
                        "unknown capability {} (expected compute, compat32, graphics, utility, \
                         video, display, ngx or all)",
                        quoted(word)
                    );
                    value_error(DRIVER_CAPABILITIES, value, &problem)
                })?;
            set.0 |= capability.bit();
        }
        if set == DriverCapabilities::default() {
            return Ok(DriverCapabilities::default_request());
        }
        Ok(set)
    }

    /// What the capabilities imply the container gets, with libnvidia-container's expansions:
    /// `video` also brings the compute libraries (not the compute binaries), `display` the
    /// graphics libraries and the modeset device.
    pub fn components(self) -> DriverComponents {
        let has = |capability| self.contains(capability);
        DriverComponents {
            utility_binaries: has(DriverCapability::Utility),
            utility_libraries: has(DriverCapability::Utility),
            compute_binaries: has(DriverCapability::Compute),
            compute_libraries: has(DriverCapability::Compute) || has(DriverCapability::Video),
            video_libraries: has(DriverCapability::Video),
            graphics_libraries: has(DriverCapability::Graphics) || has(DriverCapability::Display),
            ngx_libraries: has(DriverCapability::Ngx),
            modeset_device: has(DriverCapability::Display),
            compat32_libraries: has(DriverCapability::Compat32),
        }
    }
}

impl FromIterator<DriverCapability> for DriverCapabilities {
    fn from_iter<I: IntoIterator<Item = DriverCapability>>(iter: I) -> Self {
        DriverCapabilities(iter.into_iter().fold(0, |bits, c| bits | c.bit()))
    }
}

/// Prints the comma list `NVIDIA_DRIVER_CAPABILITIES` would take.
impl fmt::Display for DriverCapabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(DriverCapability::name).collect();
        f.write_str(&names.join(","))
    }
}

/// Serialised as the list of capability words.
impl Serialize for DriverCapabilities {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

/// The driver parts a set of capabilities brings into a container, after expansion; what the
/// plan selects files and devices by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct DriverComponents {
    /// `nvidia-smi` and other utility binaries.
    pub utility_binaries: bool,
    /// NVML and other utility libraries.
    pub utility_libraries: bool,
    /// CUDA MPS and other compute binaries.
    pub compute_binaries: bool,
    /// libcuda and other compute libraries (and the UVM devices).
    pub compute_libraries: bool,
    /// Video codec libraries.
    pub video_libraries: bool,
    /// OpenGL/Vulkan/EGL libraries.
    pub graphics_libraries: bool,
    /// The NGX library.
    pub ngx_libraries: bool,
    /// `/dev/nvidia-modeset`.
    pub modeset_device: bool,
    /// 32-bit variants of the selected libraries.
    pub compat32_libraries: bool,
}

/// A dotted version (`12.4`, `580.105.08`, compute capability `8.0`), compared numerically per
/// component with trailing zero components ignored (`12.0` == `12`).
#[derive(Debug, Clone)]
pub struct Version {
    components: Vec<u64>,
    text: String,
}

impl Version {
    /// The numeric components as written.
    pub fn components(&self) -> &[u64] {
        &self.components
    }

    fn significant(&self) -> &[u64] {
        let len = self
            .components
            .iter()
            .rposition(|&c| c != 0)
            .map_or(0, |i| i + 1);
        &self.components[..len]
    }
}

/// Parses one or more dot-separated decimal components, each fitting 64 bits.
impl FromStr for Version {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        let components = text
            .split('.')
            .map(|part| {
                ensure!(
                    !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()),
                    "version {} is not dot-separated numbers",
                    quoted(text)
                );
                part.parse::<u64>()
                    .map_err(|_| anyhow!("version {} has a component too large", quoted(text)))
            })
            .collect::<Result<_>>()?;
        Ok(Version {
            components,
            text: text.to_owned(),
        })
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.significant().cmp(other.significant())
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

/// Prints the version as written.
impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Serialised as written.
impl Serialize for Version {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A comparison operator of the requirement grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `<`
    Less,
    /// `<=`
    LessOrEqual,
    /// `>`
    Greater,
    /// `>=`
    GreaterOrEqual,
}

impl Comparison {
    /// Longest operators first, so that `>=` is not read as `>`.
    const BY_LENGTH: [Comparison; 6] = [
        Comparison::GreaterOrEqual,
        Comparison::LessOrEqual,
        Comparison::NotEqual,
        Comparison::Equal,
        Comparison::Less,
        Comparison::Greater,
    ];

    /// The operator as written in a requirement.
    pub fn symbol(self) -> &'static str {
        match self {
            Comparison::Equal => "=",
            Comparison::NotEqual => "!=",
            Comparison::Less => "<",
            Comparison::LessOrEqual => "<=",
            Comparison::Greater => ">",
            Comparison::GreaterOrEqual => ">=",
        }
    }

    /// Whether `host <op> required` holds, given `host.cmp(required)`.
    pub fn holds(self, ordering: Ordering) -> bool {
        match self {
            Comparison::Equal => ordering.is_eq(),
            Comparison::NotEqual => ordering.is_ne(),
            Comparison::Less => ordering.is_lt(),
            Comparison::LessOrEqual => ordering.is_le(),
            Comparison::Greater => ordering.is_gt(),
            Comparison::GreaterOrEqual => ordering.is_ge(),
        }
    }
}

/// A versioned host property a requirement can constrain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionProperty {
    /// `cuda`: the CUDA version the driver supports.
    Cuda,
    /// `driver`: the driver (RM) version.
    Driver,
    /// `arch`: a GPU's compute capability.
    Arch,
}

impl VersionProperty {
    /// The property word in a requirement.
    pub fn name(self) -> &'static str {
        match self {
            VersionProperty::Cuda => "cuda",
            VersionProperty::Driver => "driver",
            VersionProperty::Arch => "arch",
        }
    }

    fn description(self) -> &'static str {
        match self {
            VersionProperty::Cuda => "CUDA version",
            VersionProperty::Driver => "driver version",
            VersionProperty::Arch => "compute capability",
        }
    }
}

/// One factor of a requirement: `<property><op><value>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Constraint {
    /// `cuda`, `driver` or `arch` compared with a version.
    Version {
        /// What is compared.
        property: VersionProperty,
        /// How.
        comparison: Comparison,
        /// With what.
        version: Version,
    },
    /// `brand=` or `brand!=`, compared case-insensitively.
    Brand {
        /// `=` (true) or `!=` (false).
        equal: bool,
        /// e.g. `tesla`, `geforce`.
        brand: String,
    },
}

/// Prints the factor as a requirement would spell it.
impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Constraint::Version {
                property,
                comparison,
                version,
            } => write!(f, "{}{}{version}", property.name(), comparison.symbol()),
            Constraint::Brand { equal, brand } => {
                write!(f, "brand{}{brand}", if *equal { "=" } else { "!=" })
            }
        }
    }
}

/// Parses one factor; errors describe the factor only (the caller names the variable).
impl FromStr for Constraint {
    type Err = anyhow::Error;

    fn from_str(factor: &str) -> Result<Self> {
        let properties = ["cuda", "driver", "arch", "brand"];
        let Some((property, rest)) = properties
            .iter()
            .find_map(|&name| Some((name, factor.strip_prefix(name)?)))
        else {
            bail!(
                "{} does not start with cuda, driver, arch or brand",
                quoted(factor)
            );
        };
        let Some((comparison, value)) = Comparison::BY_LENGTH
            .into_iter()
            .find_map(|op| Some((op, rest.strip_prefix(op.symbol())?)))
        else {
            bail!(
                "{} has no operator (=, !=, <, <=, >, >=) after {property}",
                quoted(factor)
            );
        };
        ensure!(!value.is_empty(), "{} has no value", quoted(factor));
        let property = match property {
            "cuda" => VersionProperty::Cuda,
            "driver" => VersionProperty::Driver,
            "arch" => VersionProperty::Arch,
            _ => {
                let equal = match comparison {
                    Comparison::Equal => true,
                    Comparison::NotEqual => false,
                    _ => bail!("{}: brand only supports = and !=", quoted(factor)),
                };
                ensure!(
                    value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                    "{}: brand {} is not a brand name",
                    quoted(factor),
                    quoted(value)
                );
                return Ok(Constraint::Brand {
                    equal,
                    brand: value.to_owned(),
                });
            }
        };
        Ok(Constraint::Version {
            property,
            comparison,
            version: value.parse()?,
        })
    }
}

/// One requirement variable: alternatives separated by whitespace, any of which may hold, each
/// a comma-separated list of factors that must all hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Requirement {
    /// The variable it came from (`CUDA_VERSION` for the implied CUDA requirement).
    pub variable: String,
    /// The value as written (for `CUDA_VERSION`, the implied `cuda>=MAJOR.MINOR`).
    pub expression: String,
    /// OR of ANDs; never empty when parsed (an empty list is never met).
    pub alternatives: Vec<Vec<Constraint>>,
}

/// What the host offers, for checking requirements. `None` means unknown, which fails any
/// factor that needs the value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// The CUDA version the driver supports.
    pub cuda: Option<Version>,
    /// The driver (RM) version.
    pub driver: Option<Version>,
    /// The GPUs the container will see; `arch` and `brand` must hold for each. With none,
    /// `arch` and `brand` factors hold vacuously.
    pub gpus: Vec<GpuFacts>,
}

/// The per-GPU facts requirements can constrain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuFacts {
    /// How to name the GPU in errors, e.g. `GPU 0 (00000000:3b:00.0)`.
    pub name: String,
    /// Compute capability, e.g. `8.0`.
    pub arch: Option<Version>,
    /// NVML brand word, e.g. `tesla`.
    pub brand: Option<String>,
}

impl Requirement {
    /// Parses `variable=value`; `None` for a value with no alternatives (empty or blank),
    /// which requires nothing.
    pub fn parse(variable: &str, value: &str) -> Result<Option<Requirement>> {
        let alternatives = value
            .split_ascii_whitespace()
            .map(|alternative| {
                let factors = alternative
                    .split(',')
                    .filter(|factor| !factor.is_empty())
                    .map(str::parse)
                    .collect::<Result<Vec<Constraint>>>()?;
                ensure!(
                    !factors.is_empty(),
                    "alternative {} has no factors",
                    quoted(alternative)
                );
                Ok(factors)
            })
            .collect::<Result<Vec<_>>>()
            .map_err(|problem| value_error(variable, value, &problem))?;
        Ok((!alternatives.is_empty()).then(|| Requirement {
            variable: variable.to_owned(),
            expression: value.to_owned(),
            alternatives,
        }))
    }

    /// Checks the requirement for every GPU in `host` (once if there are none). The error
    /// names the requirement, the GPU, and for each alternative the first factor that failed
    /// with the host's value (or that it is unknown).
    pub fn check(&self, host: &HostFacts) -> Result<()> {
        let gpus: Vec<Option<&GpuFacts>> = if host.gpus.is_empty() {
            vec![None]
        } else {
            host.gpus.iter().map(Some).collect()
        };
        for gpu in gpus {
            let mut failures = Vec::new();
            let satisfied = self.alternatives.iter().any(|alternative| {
                let failure = alternative
                    .iter()
                    .find_map(|factor| unmet(factor, host, gpu));
                match failure {
                    None => true,
                    Some(failure) => {
                        failures.push(failure);
                        false
                    }
                }
            });
            if !satisfied {
                let on = gpu.map_or(String::new(), |gpu| format!(" on {}", gpu.name));
                bail!(
                    "{}={} is not met{on}: {}",
                    self.variable,
                    quoted(&self.expression),
                    failures.join("; nor ")
                );
            }
        }
        Ok(())
    }
}

/// `None` if `factor` holds, else why not. Without a GPU (`gpu` is `None`), `arch` and
/// `brand` factors hold: there is no device they could be false for.
fn unmet(factor: &Constraint, host: &HostFacts, gpu: Option<&GpuFacts>) -> Option<String> {
    let (known, holds, description) = match factor {
        Constraint::Version {
            property,
            comparison,
            version,
        } => {
            let value = match property {
                VersionProperty::Cuda => host.cuda.as_ref(),
                VersionProperty::Driver => host.driver.as_ref(),
                VersionProperty::Arch => gpu?.arch.as_ref(),
            };
            let holds = value.is_some_and(|value| comparison.holds(value.cmp(version)));
            (value.map(Version::to_string), holds, property.description())
        }
        Constraint::Brand { equal, brand } => {
            let value = gpu?.brand.as_ref();
            let holds = value.is_some_and(|value| value.eq_ignore_ascii_case(brand) == *equal);
            (value.cloned(), holds, "brand")
        }
    };
    if holds {
        return None;
    }
    let host_value = known.unwrap_or_else(|| "unknown".to_owned());
    Some(format!("{factor} (host {description}: {host_value})"))
}

/// Which host facts the requirements need, so that the inventory asks the driver (an
/// in-process `dlopen`) only for those.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NeededFacts {
    /// Some factor constrains `cuda`.
    pub cuda: bool,
    /// Some factor constrains `driver`.
    pub driver: bool,
    /// Some factor constrains `arch`.
    pub arch: bool,
    /// Some factor constrains `brand`.
    pub brand: bool,
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// `cuda>=MAJOR.MINOR` from a `CUDA_VERSION` of `MAJOR[.MINOR[.PATCH]]` with an optional
/// semver pre-release or build suffix.
fn implied_cuda_requirement(cuda_version: &str) -> Result<Requirement> {
    let invalid = || {
        value_error(
            CUDA_VERSION,
            cuda_version,
            &anyhow!("not a MAJOR[.MINOR[.PATCH]] version"),
        )
    };
    let core = cuda_version.split(['-', '+']).next().unwrap_or_default();
    let version: Version = core.parse().map_err(|_| invalid())?;
    let [major, rest @ ..] = version.components() else {
        return Err(invalid());
    };
    if rest.len() > 2 {
        return Err(invalid());
    }
    let minor = rest.first().copied().unwrap_or(0);
    let expression = format!("cuda>={major}.{minor}");
    Requirement::parse(CUDA_VERSION, &expression)?.ok_or_else(invalid)
}

/// The request variables of a container's environment, each set at most once (or set again
/// to the same value).
struct RequestEnv<'a> {
    vars: BTreeMap<&'a str, &'a str>,
}

impl<'a> RequestEnv<'a> {
    fn new(env: &'a [String]) -> Result<Self> {
        let mut vars = BTreeMap::new();
        for item in env {
            let Some((key, value)) = item.split_once('=') else {
                continue;
            };
            let is_request_variable = [
                VISIBLE_DEVICES,
                DRIVER_CAPABILITIES,
                DISABLE_REQUIRE,
                IMEX_CHANNELS,
                MIG_CONFIG_DEVICES,
                MIG_MONITOR_DEVICES,
            ]
            .contains(&key)
                || DeviceFeature::ALL.iter().any(|f| f.variable() == key)
                || key.starts_with(REQUIRE_PREFIX)
                || key == CUDA_VERSION;
            if !is_request_variable {
                continue;
            }
            if let Some(previous) = vars.insert(key, value) {
                ensure!(
                    previous == value,
                    "{key} is set twice with different values, {} and {}",
                    quoted(previous),
                    quoted(value)
                );
            }
        }
        Ok(RequestEnv { vars })
    }

    fn get(&self, key: &str) -> Option<&'a str> {
        self.vars.get(key).copied()
    }

    /// Set to a non-empty value: how the toolkit tests `CUDA_VERSION` and
    /// `NVIDIA_REQUIRE_CUDA`.
    fn non_empty(&self, key: &str) -> Option<&'a str> {
        self.get(key).filter(|value| !value.is_empty())
    }
}

impl GpuRequest {
    /// Reads the request from a process environment (`KEY=VALUE` items, as in the OCI spec's
    /// `process.env`). `Ok(None)` means no GPU request: `NVIDIA_VISIBLE_DEVICES` unset, empty,
    /// or containing `void` — except that on a legacy CUDA image (`CUDA_VERSION` set,
    /// `NVIDIA_REQUIRE_CUDA` not) unset means `all`, and unset capabilities mean all.
    pub fn from_env(env: &[String]) -> Result<Option<GpuRequest>> {
        let env = RequestEnv::new(env)?;
        let legacy_image =
            env.non_empty(CUDA_VERSION).is_some() && env.non_empty(REQUIRE_CUDA).is_none();
        let (devices, cdi_devices) = match env.get(VISIBLE_DEVICES) {
            None if legacy_image => (Some(VisibleDevices::All), Vec::new()),
            None => return Ok(None),
            Some(value) => match parse_visible_devices(value)
                .map_err(|problem| value_error(VISIBLE_DEVICES, value, &problem))?
            {
                None => return Ok(None),
                Some(request) => request,
            },
        };
        let capabilities = match env.get(DRIVER_CAPABILITIES) {
            None if legacy_image => DriverCapabilities::all(),
            None => DriverCapabilities::default_request(),
            Some(value) => DriverCapabilities::parse(value)?,
        };
        let requirements_disabled = match env.get(DISABLE_REQUIRE) {
            None | Some("") => false,
            Some(value) => parse_go_bool(value).ok_or_else(|| {
                let problem = anyhow!("not a boolean (1, t, true, 0, f, false, …)");
                value_error(DISABLE_REQUIRE, value, &problem)
            })?,
        };
        let mut requirements = Vec::new();
        if !requirements_disabled {
            for (&variable, &value) in env.vars.range(REQUIRE_PREFIX..) {
                if !variable.starts_with(REQUIRE_PREFIX) {
                    break;
                }
                if variable != REQUIRE_JETPACK {
                    requirements.extend(Requirement::parse(variable, value)?);
                }
            }
            if let (Some(cuda_version), true) = (env.non_empty(CUDA_VERSION), legacy_image) {
                requirements.push(implied_cuda_requirement(cuda_version)?);
            }
        }
        let imex_channels = match env.get(IMEX_CHANNELS) {
            None => Vec::new(),
            Some(value) => parse_imex_channels(value)
                .map_err(|problem| value_error(IMEX_CHANNELS, value, &problem))?,
        };
        Ok(Some(GpuRequest {
            devices,
            cdi_devices,
            capabilities,
            requirements,
            requirements_disabled,
            imex_channels,
            mig_config: parse_mig_management(MIG_CONFIG_DEVICES, env.get(MIG_CONFIG_DEVICES))?,
            mig_monitor: parse_mig_management(MIG_MONITOR_DEVICES, env.get(MIG_MONITOR_DEVICES))?,
            features: DeviceFeature::ALL
                .into_iter()
                .filter(|f| env.get(f.variable()) == Some("enabled"))
                .collect(),
            privileged: false,
        }))
    }

    /// Checks every requirement against `host`; the first unmet one is the error.
    pub fn check_requirements(&self, host: &HostFacts) -> Result<()> {
        self.requirements
            .iter()
            .try_for_each(|requirement| requirement.check(host))
    }

    /// Whether resolving the devices needs the MIG devices' NVML identities (their index on
    /// the parent GPU, their UUID): `GPU:MIG` and `MIG-<uuid>` do; the pre-470
    /// `MIG-GPU-<uuid>/<gi>/<ci>` names the instances itself.
    pub fn needs_mig_identities(&self) -> bool {
        let Some(VisibleDevices::Selected(selectors)) = &self.devices else {
            return false;
        };
        selectors.iter().any(|selector| match selector {
            DeviceSelector::MigIndex { .. } => true,
            DeviceSelector::MigUuid(uuid) => !uuid.starts_with("MIG-GPU-"),
            _ => false,
        })
    }

    /// The host facts [`GpuRequest::check_requirements`] will look at.
    pub fn needed_facts(&self) -> NeededFacts {
        let mut needed = NeededFacts::default();
        let factors = self
            .requirements
            .iter()
            .flat_map(|requirement| requirement.alternatives.iter().flatten());
        for factor in factors {
            match factor {
                Constraint::Version { property, .. } => match property {
                    VersionProperty::Cuda => needed.cuda = true,
                    VersionProperty::Driver => needed.driver = true,
                    VersionProperty::Arch => needed.arch = true,
                },
                Constraint::Brand { .. } => needed.brand = true,
            }
        }
        needed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| item.to_string()).collect()
    }

    fn request(items: &[&str]) -> Option<GpuRequest> {
        GpuRequest::from_env(&env(items)).unwrap()
    }

    fn error(items: &[&str]) -> String {
        let err = GpuRequest::from_env(&env(items)).unwrap_err();
        let text = format!("{err:#}");
        assert!(!text.contains('\n'), "not one line: {text}");
        text
    }

    fn version(text: &str) -> Version {
        text.parse().unwrap()
    }

    const UUID: &str = "GPU-8f6b1a0e-0b7e-2e4f-9d8b-3c1b2a4d5e6f";
    const MIG: &str = "MIG-1c4e5d3a-8b2f-5e6a-9c7d-0f1e2d3c4b5a";

    #[test]
    fn no_request_unless_asked() {
        for items in [
            &[][..],
            &["PATH=/bin", "HOME=/root"],
            &["NVIDIA_VISIBLE_DEVICES="],
            &["NVIDIA_VISIBLE_DEVICES= , ,"],
            &["NVIDIA_VISIBLE_DEVICES=void"],
            &["NVIDIA_VISIBLE_DEVICES=0,void"],
            &["NVIDIA_VISIBLE_DEVICES=all,none,void"],
            // Legacy default only applies when the variable is unset.
            &["NVIDIA_VISIBLE_DEVICES=", "CUDA_VERSION=12.4.1"],
            // Not a legacy image: NVIDIA_REQUIRE_CUDA is set.
            &["CUDA_VERSION=12.4.1", "NVIDIA_REQUIRE_CUDA=cuda>=12.4"],
            // Other variables never make a request on their own.
            &["NVIDIA_DRIVER_CAPABILITIES=all", "NVIDIA_REQUIRE_X=cuda>=1"],
        ] {
            assert_eq!(
                GpuRequest::from_env(&env(items)).unwrap(),
                None,
                "{items:?}"
            );
        }
    }

    #[test]
    fn visible_devices_forms() {
        let uuid = DeviceSelector::GpuUuid(UUID.to_lowercase().replacen("gpu-", "GPU-", 1));
        let mig = DeviceSelector::MigUuid(MIG.to_owned());
        let bus = DeviceSelector::PciBusId("0000:3b:00.0".parse().unwrap());
        let selected = |selectors: Vec<DeviceSelector>| Some(VisibleDevices::Selected(selectors));
        let upper_uuid = format!("gpu-{}", UUID[4..].to_uppercase());
        let upper_mig = format!("mig-{}", MIG[4..].to_uppercase());
        let cases: Vec<(String, Option<VisibleDevices>)> = vec![
            ("all".into(), Some(VisibleDevices::All)),
            ("none".into(), Some(VisibleDevices::DriverOnly)),
            ("0".into(), selected(vec![DeviceSelector::Index(0)])),
            (
                " 1 , 0,1,,".into(),
                selected(vec![DeviceSelector::Index(1), DeviceSelector::Index(0)]),
            ),
            ("007".into(), selected(vec![DeviceSelector::Index(7)])),
            (UUID.into(), selected(vec![uuid.clone()])),
            (upper_uuid, selected(vec![uuid.clone()])),
            ("0000:3b:00.0".into(), selected(vec![bus.clone()])),
            ("00000000:3B:00.0".into(), selected(vec![bus.clone()])),
            ("0:3b:00.0".into(), selected(vec![bus.clone()])),
            (
                "1:2".into(),
                selected(vec![DeviceSelector::MigIndex { gpu: 1, mig: 2 }]),
            ),
            (MIG.into(), selected(vec![mig.clone()])),
            (upper_mig, selected(vec![mig.clone()])),
            (
                format!("MIG-{UUID}/1/0"),
                selected(vec![DeviceSelector::MigUuid(format!("MIG-{UUID}/1/0"))]),
            ),
            ("nvidia.com/gpu=all".into(), Some(VisibleDevices::All)),
            (
                "nvidia.com/gpu=1".into(),
                selected(vec![DeviceSelector::Index(1)]),
            ),
            (
                format!("nvidia.com/gpu={UUID}"),
                selected(vec![uuid.clone()]),
            ),
            (
                format!("0,nvidia.com/gpu=0,{UUID},{MIG},0000:3b:00.0"),
                selected(vec![DeviceSelector::Index(0), uuid, mig, bus]),
            ),
            // Least access wins among special words; they override listed devices.
            ("0,all".into(), Some(VisibleDevices::All)),
            ("all,none".into(), Some(VisibleDevices::DriverOnly)),
            ("1,none,all".into(), Some(VisibleDevices::DriverOnly)),
        ];
        for (value, expected) in cases {
            let item = format!("NVIDIA_VISIBLE_DEVICES={value}");
            let request = request(&[&item]).unwrap_or_else(|| panic!("{value}: no request"));
            assert_eq!(request.devices, expected, "{value}");
            assert!(request.cdi_devices.is_empty(), "{value}");
        }
    }

    #[test]
    fn other_cdi_names_are_kept_apart() {
        let nic: CdiDeviceName = "vendor.example/nic=eth-1".parse().unwrap();
        let mixed = request(&[
            "NVIDIA_VISIBLE_DEVICES=vendor.example/nic=eth-1,0,vendor.example/nic=eth-1",
        ])
        .unwrap();
        assert_eq!(
            mixed.devices,
            Some(VisibleDevices::Selected(vec![DeviceSelector::Index(0)]))
        );
        assert_eq!(mixed.cdi_devices, vec![nic.clone()]);
        assert_eq!(nic.to_string(), "vendor.example/nic=eth-1");

        let only_cdi = request(&["NVIDIA_VISIBLE_DEVICES=vendor.example/nic=eth-1"]).unwrap();
        assert_eq!(only_cdi.devices, None);
        assert_eq!(only_cdi.cdi_devices, vec![nic.clone()]);

        let driver_only = request(&["NVIDIA_VISIBLE_DEVICES=none,vendor.example/nic=eth-1"]);
        assert_eq!(driver_only.unwrap().cdi_devices, vec![nic]);
    }

    #[test]
    fn malformed_devices_name_the_variable_and_value() {
        let huge = "9".repeat(100_000);
        let cases: Vec<(String, &str)> = vec![
            ("gpu0".into(), "unknown device \"gpu0\""),
            ("ALL".into(), "unknown device \"ALL\""),
            ("-1".into(), "unknown device"),
            ("4294967296".into(), "GPU index \"4294967296\" is too large"),
            ("0:4294967296".into(), "MIG index"),
            ("0000:3b:00.1".into(), "function 1"),
            ("0000:3b:00".into(), "unknown device"),
            ("0000:zz:00.0".into(), "invalid PCI bus id"),
            ("GPU-1234".into(), "GPU UUID \"GPU-1234\" is malformed"),
            (format!("{UUID}x"), "malformed"),
            ("MIG-GPU-xyz/1/0".into(), "MIG UUID"),
            (format!("MIG-GPU-{}/a/0", &UUID[4..]), "not a number"),
            ("nvidia.com/gpu=bogus".into(), "in CDI device name"),
            ("nvidia.com/gpu=none".into(), "unknown device \"none\""),
            ("vendor/=x".into(), "characters CDI does not allow"),
            ("a=b".into(), "not vendor/class=name"),
            (huge.clone(), "is too large"),
        ];
        for (value, expected) in cases {
            let item = format!("NVIDIA_VISIBLE_DEVICES={value}");
            let text = error(&[&item]);
            assert!(
                text.starts_with("NVIDIA_VISIBLE_DEVICES=\""),
                "{value}: {text}"
            );
            assert!(text.contains(expected), "{value}: {text}");
            assert!(
                text.len() < 1000,
                "huge value not truncated: {}",
                text.len()
            );
        }
    }

    #[test]
    fn conflicting_duplicates_are_refused() {
        let text = error(&["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_VISIBLE_DEVICES=1"]);
        assert!(
            text.contains("NVIDIA_VISIBLE_DEVICES is set twice") && text.contains("\"1\""),
            "{text}"
        );
        let same = request(&["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_VISIBLE_DEVICES=0"]);
        assert!(same.is_some());
        // Items without '=' and duplicates of other variables are not the request's business.
        let unrelated = request(&[
            "FOO=1",
            "FOO=2",
            "NVIDIA_PRODUCT_NAME=CUDA",
            "NVIDIA_PRODUCT_NAME=Other",
            "JUNK",
            "NVIDIA_VISIBLE_DEVICES=0",
        ]);
        assert!(unrelated.is_some());
    }

    #[test]
    fn capabilities() {
        use DriverCapability::*;
        let cases: Vec<(&[&str], DriverCapabilities)> = vec![
            (&[], DriverCapabilities::default_request()),
            (
                &["NVIDIA_DRIVER_CAPABILITIES="],
                DriverCapabilities::default_request(),
            ),
            (
                &["NVIDIA_DRIVER_CAPABILITIES= , "],
                DriverCapabilities::default_request(),
            ),
            (
                &["NVIDIA_DRIVER_CAPABILITIES=graphics"],
                [Graphics].into_iter().collect(),
            ),
            (
                &["NVIDIA_DRIVER_CAPABILITIES=video, display ,video"],
                [Video, Display].into_iter().collect(),
            ),
            (
                &["NVIDIA_DRIVER_CAPABILITIES=compute,all"],
                DriverCapabilities::all(),
            ),
            (
                &["NVIDIA_DRIVER_CAPABILITIES=compute,compat32,graphics,utility,video,display,ngx"],
                DriverCapabilities::all(),
            ),
            // Legacy image: unset means all, set means as set.
            (&["CUDA_VERSION=11.0"], DriverCapabilities::all()),
            (
                &["CUDA_VERSION=11.0", "NVIDIA_DRIVER_CAPABILITIES="],
                DriverCapabilities::default_request(),
            ),
            (
                &["CUDA_VERSION=11.0", "NVIDIA_DRIVER_CAPABILITIES=utility"],
                [Utility].into_iter().collect(),
            ),
        ];
        for (items, expected) in cases {
            let mut items = items.to_vec();
            items.push("NVIDIA_VISIBLE_DEVICES=all");
            assert_eq!(request(&items).unwrap().capabilities, expected, "{items:?}");
        }
        assert_eq!(
            DriverCapabilities::all().to_string(),
            "compute,compat32,graphics,utility,video,display,ngx"
        );
        assert_eq!(
            serde_json::to_string(&DriverCapabilities::default_request()).unwrap(),
            r#"["compute","utility"]"#
        );
        for bad in [
            "compute,gpu",
            "Compute",
            "compute;utility",
            "utility compute",
        ] {
            let item = format!("NVIDIA_DRIVER_CAPABILITIES={bad}");
            let text = error(&["NVIDIA_VISIBLE_DEVICES=0", &item]);
            assert!(
                text.starts_with(&format!(
                    "NVIDIA_DRIVER_CAPABILITIES={bad:?}: unknown capability"
                )),
                "{text}"
            );
        }
    }

    #[test]
    fn capability_expansions() {
        use DriverCapability::*;
        let components = |caps: &[DriverCapability]| {
            caps.iter()
                .copied()
                .collect::<DriverCapabilities>()
                .components()
        };
        let video = components(&[Video]);
        assert!(video.compute_libraries && video.video_libraries);
        assert!(!video.compute_binaries && !video.utility_libraries);
        let display = components(&[Display]);
        assert!(display.graphics_libraries && display.modeset_device);
        assert!(!display.compute_libraries);
        let graphics = components(&[Graphics]);
        assert!(graphics.graphics_libraries && !graphics.modeset_device);
        let default = DriverCapabilities::default_request().components();
        assert_eq!(
            default,
            DriverComponents {
                utility_binaries: true,
                utility_libraries: true,
                compute_binaries: true,
                compute_libraries: true,
                ..DriverComponents::default()
            }
        );
        let all = DriverCapabilities::all().components();
        assert!(all.ngx_libraries && all.compat32_libraries && all.modeset_device);
        assert_eq!(components(&[]), DriverComponents::default());
    }

    #[test]
    fn versions_compare_numerically_ignoring_trailing_zeros() {
        let ordered = [
            "1",
            "1.0.1",
            "1.2",
            "1.10",
            "2.0.0.0.1",
            "12.4",
            "580.105.08",
        ];
        for pair in ordered.windows(2) {
            assert!(version(pair[0]) < version(pair[1]), "{pair:?}");
        }
        assert_eq!(version("12"), version("12.0.0"));
        assert_eq!(version("470.57.02"), version("470.57.2"));
        assert_eq!(version("470.57.02").to_string(), "470.57.02");
        for bad in [
            "",
            "1.",
            ".1",
            "1..2",
            "1.x",
            "v1",
            "1.2-rc",
            " 1",
            "99999999999999999999",
        ] {
            assert!(bad.parse::<Version>().is_err(), "{bad:?}");
        }
    }

    fn requirement(value: &str) -> Requirement {
        Requirement::parse("NVIDIA_REQUIRE_TEST", value)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn requirement_grammar() {
        let parsed = requirement(
            "cuda>=12.4 brand=tesla,driver>=470,driver<471  brand!=GeForce,arch=8.0,,driver<=1",
        );
        let rendered: Vec<Vec<String>> = parsed
            .alternatives
            .iter()
            .map(|factors| factors.iter().map(ToString::to_string).collect())
            .collect();
        assert_eq!(
            rendered,
            vec![
                vec!["cuda>=12.4"],
                vec!["brand=tesla", "driver>=470", "driver<471"],
                vec!["brand!=GeForce", "arch=8.0", "driver<=1"],
            ]
        );
        for op in ["=", "!=", "<", "<=", ">", ">="] {
            let text = format!("driver{op}1");
            assert_eq!(requirement(&text).alternatives[0][0].to_string(), text);
        }
        assert_eq!(Requirement::parse("NVIDIA_REQUIRE_X", "").unwrap(), None);
        assert_eq!(
            Requirement::parse("NVIDIA_REQUIRE_X", " \t ").unwrap(),
            None
        );
    }

    #[test]
    fn malformed_requirements_name_the_variable_and_value() {
        let cases = [
            ("cuda", "has no operator"),
            ("cuda>=", "has no value"),
            ("cuda=>12", "is not dot-separated numbers"),
            ("cuda==12", "is not dot-separated numbers"),
            ("cuda>=12.x", "is not dot-separated numbers"),
            (
                "memory>=4",
                "does not start with cuda, driver, arch or brand",
            ),
            ("CUDA>=12", "does not start with"),
            ("brand>=tesla", "brand only supports = and !="),
            ("brand=te sla,cuda>=1", "\"sla\" does not start with"),
            ("brand=tes;la", "is not a brand name"),
            ("cuda>=12 ,", "has no factors"),
            ("driver>=99999999999999999999", "too large"),
        ];
        for (value, expected) in cases {
            let item = format!("NVIDIA_REQUIRE_FOO={value}");
            let text = error(&["NVIDIA_VISIBLE_DEVICES=0", &item]);
            assert!(
                text.starts_with(&format!("NVIDIA_REQUIRE_FOO={value:?}: ")),
                "{value}: {text}"
            );
            assert!(text.contains(expected), "{value}: {text}");
        }
        let huge = format!("NVIDIA_REQUIRE_FOO={}", "cuda>=1 ".repeat(50_000) + "x");
        let text = error(&["NVIDIA_VISIBLE_DEVICES=0", &huge]);
        assert!(
            text.len() < 1000 && text.contains("(400001 bytes)"),
            "{}",
            text.len()
        );
    }

    #[test]
    fn requirement_sources() {
        let names = |items: &[&str]| -> Vec<(String, String)> {
            let mut items = items.to_vec();
            items.push("NVIDIA_VISIBLE_DEVICES=0");
            request(&items)
                .unwrap()
                .requirements
                .into_iter()
                .map(|r| (r.variable, r.expression))
                .collect()
        };
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        assert_eq!(
            names(&[
                "NVIDIA_REQUIRE_Z=driver>=1",
                "NVIDIA_REQUIRE_CUDA=cuda>=12.4",
                "NVIDIA_REQUIRE_JETPACK=csv-mounts=all",
                "NVIDIA_REQUIRE_EMPTY=",
                "NVIDIA_REQUIREMENT=cuda>=99",
                "CUDA_VERSION=12.4.1",
            ]),
            vec![
                pair("NVIDIA_REQUIRE_CUDA", "cuda>=12.4"),
                pair("NVIDIA_REQUIRE_Z", "driver>=1")
            ]
        );
        // Legacy image: the implied requirement from CUDA_VERSION.
        for (cuda_version, implied) in [
            ("12.4.1", "cuda>=12.4"),
            ("11", "cuda>=11.0"),
            ("10.2", "cuda>=10.2"),
            ("12.4.0-rc1+build.5", "cuda>=12.4"),
        ] {
            let item = format!("CUDA_VERSION={cuda_version}");
            assert_eq!(
                names(&[&item, "NVIDIA_REQUIRE_CUDA="]),
                vec![pair("CUDA_VERSION", implied)],
                "{cuda_version}"
            );
        }
        for bad in ["12.x", "1.2.3.4", "v12", "-1"] {
            let item = format!("CUDA_VERSION={bad}");
            let text = error(&["NVIDIA_VISIBLE_DEVICES=0", &item]);
            assert!(
                text.starts_with(&format!("CUDA_VERSION={bad:?}: not a MAJOR")),
                "{text}"
            );
        }
    }

    #[test]
    fn disabling_requirements() {
        for value in ["1", "t", "T", "TRUE", "true", "True"] {
            let item = format!("NVIDIA_DISABLE_REQUIRE={value}");
            let disabled = request(&[
                "NVIDIA_VISIBLE_DEVICES=0",
                &item,
                "NVIDIA_REQUIRE_CUDA=not even parsed",
                "CUDA_VERSION=garbage",
            ])
            .unwrap();
            assert!(disabled.requirements_disabled && disabled.requirements.is_empty());
            assert!(disabled.check_requirements(&HostFacts::default()).is_ok());
        }
        for value in ["", "0", "f", "F", "FALSE", "false", "False"] {
            let item = format!("NVIDIA_DISABLE_REQUIRE={value}");
            let enabled = request(&[
                "NVIDIA_VISIBLE_DEVICES=0",
                &item,
                "NVIDIA_REQUIRE_X=cuda>=1",
            ])
            .unwrap();
            assert!(!enabled.requirements_disabled);
            assert_eq!(enabled.requirements.len(), 1);
        }
        for value in ["yes", "on", "2", " true"] {
            let item = format!("NVIDIA_DISABLE_REQUIRE={value}");
            let text = error(&["NVIDIA_VISIBLE_DEVICES=0", &item]);
            assert!(
                text.starts_with(&format!("NVIDIA_DISABLE_REQUIRE={value:?}: not a boolean")),
                "{text}"
            );
        }
    }

    fn host(
        cuda: Option<&str>,
        driver: Option<&str>,
        gpus: &[(Option<&str>, Option<&str>)],
    ) -> HostFacts {
        HostFacts {
            cuda: cuda.map(version),
            driver: driver.map(version),
            gpus: gpus
                .iter()
                .enumerate()
                .map(|(index, (arch, brand))| GpuFacts {
                    name: format!("GPU {index}"),
                    arch: arch.map(version),
                    brand: brand.map(str::to_owned),
                })
                .collect(),
        }
    }

    #[test]
    fn requirement_evaluation() {
        let cuda_image =
            "cuda>=12.4 brand=tesla,driver>=470,driver<471 brand=unknown,driver>=470,driver<471";
        let tesla = (Some("8.0"), Some("Tesla"));
        let geforce = (Some("8.9"), Some("geforce"));
        // (requirement, host, Ok or a fragment of the error)
        let cases: Vec<(&str, HostFacts, Result<(), &str>)> = vec![
            (cuda_image, host(Some("12.4"), Some("550.54"), &[geforce]), Ok(())),
            (cuda_image, host(Some("12.8"), None, &[]), Ok(())),
            (cuda_image, host(Some("12.2"), Some("470.57.02"), &[tesla, tesla]), Ok(())),
            (
                cuda_image,
                host(Some("12.2"), Some("535.1"), &[tesla]),
                Err("is not met on GPU 0: cuda>=12.4 (host CUDA version: 12.2); nor \
                     driver<471 (host driver version: 535.1); nor brand=unknown (host brand: Tesla)"),
            ),
            (
                cuda_image,
                host(Some("12.2"), Some("470.57.02"), &[tesla, geforce]),
                Err("on GPU 1: cuda>=12.4"),
            ),
            // Fail closed: unknown values never satisfy.
            (
                "cuda>=12.0",
                host(None, Some("580.1"), &[]),
                Err("cuda>=12.0 (host CUDA version: unknown)"),
            ),
            ("driver>=500", host(None, None, &[]), Err("host driver version: unknown")),
            ("arch>=8.0", host(None, None, &[(None, Some("tesla"))]), Err("host compute capability: unknown")),
            ("brand=tesla", host(None, None, &[(Some("8.0"), None)]), Err("host brand: unknown")),
            // No GPUs: per-GPU factors hold vacuously.
            ("arch>=9.0,brand=tesla", host(None, None, &[]), Ok(())),
            ("arch>=9.0", host(None, None, &[tesla]), Err("arch>=9.0 (host compute capability: 8.0)")),
            ("arch=8", host(None, None, &[tesla]), Ok(())),
            ("arch!=8.0.0", host(None, None, &[geforce]), Ok(())),
            ("brand!=TESLA", host(None, None, &[geforce]), Ok(())),
            ("brand!=TESLA", host(None, None, &[tesla]), Err("brand!=TESLA (host brand: Tesla)")),
            ("driver<580.105.8", host(None, Some("580.105.08"), &[]), Err("driver<580.105.8")),
            ("driver<=580.105.8", host(None, Some("580.105.08"), &[]), Ok(())),
            ("driver>580", host(None, Some("580.0.0"), &[]), Err("driver>580")),
            // Contradictory factors can never hold.
            ("cuda>=12,cuda<12", host(Some("12.0"), None, &[]), Err("cuda<12 (host CUDA version: 12.0)")),
        ];
        for (value, host, expected) in cases {
            let result = requirement(value).check(&host);
            match (result, expected) {
                (Ok(()), Ok(())) => {}
                (Err(err), Err(fragment)) => {
                    let text = err.to_string();
                    assert!(
                        text.starts_with(&format!("NVIDIA_REQUIRE_TEST={value:?} is not met")),
                        "{text}"
                    );
                    assert!(text.contains(fragment), "{value}: {text}");
                }
                (result, expected) => panic!("{value}: got {result:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn request_checks_all_requirements_and_reports_needed_facts() {
        let request = request(&[
            "NVIDIA_VISIBLE_DEVICES=all",
            "NVIDIA_REQUIRE_CUDA=cuda>=12.0 brand=tesla",
            "NVIDIA_REQUIRE_ARCH=arch>=8.0",
        ])
        .unwrap();
        assert_eq!(
            request.needed_facts(),
            NeededFacts {
                cuda: true,
                driver: false,
                arch: true,
                brand: true
            }
        );
        let ok = host(Some("12.4"), None, &[(Some("9.0"), Some("nvidia"))]);
        assert!(request.check_requirements(&ok).is_ok());
        let old_gpu = host(Some("12.4"), None, &[(Some("7.5"), Some("nvidia"))]);
        let text = request
            .check_requirements(&old_gpu)
            .unwrap_err()
            .to_string();
        assert!(
            text.starts_with("NVIDIA_REQUIRE_ARCH=\"arch>=8.0\""),
            "{text}"
        );
        assert_eq!(
            GpuRequest::from_env(&env(&["NVIDIA_VISIBLE_DEVICES=0"]))
                .unwrap()
                .unwrap()
                .needed_facts(),
            NeededFacts::default()
        );
    }

    #[test]
    fn legacy_image_defaults() {
        let legacy = request(&["CUDA_VERSION=10.0.130", "PATH=/usr/bin"]).unwrap();
        assert_eq!(legacy.devices, Some(VisibleDevices::All));
        assert_eq!(legacy.capabilities, DriverCapabilities::all());
        assert_eq!(legacy.requirements[0].expression, "cuda>=10.0");
        let json = serde_json::to_value(&legacy).unwrap();
        assert_eq!(json["devices"], "all");
        assert_eq!(json["requirements"][0]["variable"], "CUDA_VERSION");
    }

    #[test]
    fn imex_channels_mig_management_and_device_features() {
        let got = request(&[
            "NVIDIA_VISIBLE_DEVICES=0",
            "NVIDIA_IMEX_CHANNELS= 3,0,3 ,",
            "NVIDIA_MIG_MONITOR_DEVICES=all",
            "NVIDIA_GDS=enabled",
            "NVIDIA_MOFED=true",
            "NVIDIA_GDRCOPY=enabled",
        ])
        .unwrap();
        assert_eq!(got.imex_channels, [0, 3]);
        assert!(got.mig_monitor && !got.mig_config && !got.privileged);
        assert_eq!(got.features, [DeviceFeature::Gds, DeviceFeature::Gdrcopy]);
        let all = request(&["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_IMEX_CHANNELS=1,all"]).unwrap();
        assert!(
            all.imex_channels.is_empty(),
            "all from the environment is dropped"
        );
        assert_eq!(
            parse_imex_channels(&MAX_IMEX_CHANNEL.to_string()).unwrap(),
            [MAX_IMEX_CHANNEL]
        );
        assert_eq!(
            error(&["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_IMEX_CHANNELS=1048576"]),
            "NVIDIA_IMEX_CHANNELS=\"1048576\": IMEX channel \"1048576\" is not a number from 0 to 1048575"
        );
        assert_eq!(
            error(&["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_MIG_CONFIG_DEVICES=0"]),
            "NVIDIA_MIG_CONFIG_DEVICES=\"0\": only \"all\" is supported"
        );
        // On their own they make no request.
        assert_eq!(
            request(&["NVIDIA_IMEX_CHANNELS=0", "NVIDIA_GDS=enabled"]),
            None
        );
    }
}
