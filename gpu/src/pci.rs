//! PCI bus addresses (`domain:bus:device.function`) as GPUs are named by requests, procfs and
//! sysfs.
//!
//! The same GPU is spelled `0000:3b:00.0` by the driver's procfs, `00000000:3B:00.0` by NVML and
//! with any domain width by people, so every place that compares bus ids goes through
//! [`PciBusId`] instead of comparing strings.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use serde::{Serialize, Serializer};

/// A PCI function address, compared by value so that spelling differences (domain width, hex
/// case) never make the same device look like two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciBusId {
    /// PCI segment (domain); 16 bits on most hosts, 32 bits allowed by the kernel and NVML.
    pub domain: u32,
    /// Bus number.
    pub bus: u8,
    /// Device (slot) number, 0..=31.
    pub device: u8,
    /// Function number, 0..=7.
    pub function: u8,
}

impl PciBusId {
    /// The name the NVIDIA driver gives this device's directory under
    /// `/proc/driver/nvidia/gpus/` (`%04x:%02x:%02x.%x`), needed to find and bind that directory.
    pub fn proc_dir_name(&self) -> String {
        format!(
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

/// Canonical form: 8 hex digits of domain, lower case (`00000000:3b:00.0`), the form NVML
/// uses apart from case, so that printed plans compare easily with `nvidia-smi` output.
impl fmt::Display for PciBusId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:08x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

/// Parses `DOMAIN:BB:DD.F`: a domain of 1 to 8 hex digits, two hex digits each of bus and
/// device, one function digit; hex in either case.
impl FromStr for PciBusId {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        parse_bus_id(text).with_context(|| format!("invalid PCI bus id {text:?}"))
    }
}

fn parse_bus_id(text: &str) -> Result<PciBusId> {
    let (domain, rest) = text
        .split_once(':')
        .context("expected DOMAIN:BUS:DEVICE.FUNCTION")?;
    let (bus, rest) = rest
        .split_once(':')
        .context("expected DOMAIN:BUS:DEVICE.FUNCTION")?;
    let (device, function) = rest
        .split_once('.')
        .context("expected DOMAIN:BUS:DEVICE.FUNCTION")?;
    let domain = parse_hex_field("domain", domain, 1..=8)?;
    let bus = parse_hex_field("bus", bus, 2..=2)?;
    let device = parse_hex_field("device", device, 2..=2)?;
    let function = parse_hex_field("function", function, 1..=1)?;
    if device > 0x1f {
        bail!("device {device:#x} is above 0x1f");
    }
    if function > 7 {
        bail!("function {function} is above 7");
    }
    Ok(PciBusId {
        domain,
        bus: bus as u8,
        device: device as u8,
        function: function as u8,
    })
}

fn parse_hex_field(
    what: &str,
    digits: &str,
    allowed_len: std::ops::RangeInclusive<usize>,
) -> Result<u32> {
    if !allowed_len.contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!(
            "{what} {digits:?} must be {} to {} hex digits",
            allowed_len.start(),
            allowed_len.end()
        );
    }
    Ok(u32::from_str_radix(digits, 16)?)
}

/// Serialised in the canonical [`Display`](fmt::Display) form so plans show bus ids the way
/// people read them.
impl Serialize for PciBusId {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling_of_the_same_device() {
        let expected = PciBusId {
            domain: 0,
            bus: 0x3b,
            device: 0,
            function: 0,
        };
        for text in [
            "0000:3b:00.0",
            "00000000:3B:00.0",
            "0:3b:00.0",
            "000:3B:00.0",
        ] {
            assert_eq!(text.parse::<PciBusId>().unwrap(), expected, "{text}");
        }
    }

    #[test]
    fn formats_canonically_and_as_the_driver_names_proc_dirs() {
        let id: PciBusId = "1A:C1:1f.7".parse().unwrap();
        assert_eq!(id.to_string(), "0000001a:c1:1f.7");
        assert_eq!(id.proc_dir_name(), "001a:c1:1f.7");
        let wide: PciBusId = "10000:01:00.0".parse().unwrap();
        assert_eq!(wide.proc_dir_name(), "10000:01:00.0");
        assert_eq!(
            serde_json::to_string(&wide).unwrap(),
            "\"00010000:01:00.0\""
        );
    }

    #[test]
    fn rejects_malformed_ids_with_the_text_in_the_message() {
        for text in [
            "",
            "3b:00.0",
            "0000:3b:00",
            "0000:3b:0.0",
            "0000:3bb:00.0",
            "123456789:3b:00.0",
            "0000:3b:20.0",
            "0000:3b:00.8",
            "0000:3b:00.10",
            "0000:xx:00.0",
            "0000:3b:00.0 ",
            "+000:3b:00.0",
        ] {
            let err = format!("{:#}", text.parse::<PciBusId>().unwrap_err());
            assert!(err.contains(&format!("{text:?}")), "{text}: {err}");
        }
    }
}
