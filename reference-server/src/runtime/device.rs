//! Devices a replica runs on: `cpu`, `cuda:N`, `cann:N`.

use std::fmt;
use std::str::FromStr;

use super::library::Family;

/// A device for one replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    /// ONNX Runtime's CPU execution provider.
    Cpu,
    /// An NVIDIA GPU through the CUDA execution provider.
    Cuda(i32),
    /// An Ascend NPU through the CANN execution provider.
    Cann(i32),
}

/// A device name that is not `cpu`, `cuda[:N]` or `cann[:N]`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid device '{0}': expected cpu, cuda:N or cann:N (N a device id >= 0)")]
pub struct DeviceParseError(pub String);

impl FromStr for Device {
    type Err = DeviceParseError;

    fn from_str(s: &str) -> Result<Device, DeviceParseError> {
        let err = || DeviceParseError(s.to_owned());
        let (kind, id) = match s.trim().split_once(':') {
            Some((kind, id)) => (kind, Some(id)),
            None => (s.trim(), None),
        };
        let id = match id {
            None => 0,
            Some(id) => id.parse::<i32>().ok().filter(|&i| i >= 0).ok_or_else(err)?,
        };
        match kind.to_ascii_lowercase().as_str() {
            "cpu" if id == 0 => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda(id)),
            "cann" | "npu" | "ascend" => Ok(Device::Cann(id)),
            _ => Err(err()),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(id) => write!(f, "cuda:{id}"),
            Device::Cann(id) => write!(f, "cann:{id}"),
        }
    }
}

impl Device {
    /// The ONNX Runtime build this device needs.
    pub fn family(self) -> Family {
        match self {
            Device::Cpu => Family::Cpu,
            Device::Cuda(_) => Family::Cuda,
            Device::Cann(_) => Family::Cann,
        }
    }
}

/// Devices that cannot share one ONNX Runtime build (one process loads one).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "devices {0} and {1} need different ONNX Runtime builds (onnxruntime-gpu and onnxruntime-cann), and one process loads one: run a server per device family"
)]
pub struct MixedFamilies(pub Device, pub Device);

/// The one library family that serves all `devices` (CPU runs on any build).
pub fn family_of(devices: &[Device]) -> Result<Family, MixedFamilies> {
    let mut chosen: Option<Device> = None;
    for &d in devices {
        if d.family() == Family::Cpu {
            continue;
        }
        match chosen {
            Some(c) if c.family() != d.family() => return Err(MixedFamilies(c, d)),
            _ => chosen = Some(d),
        }
    }
    Ok(chosen.map_or(Family::Cpu, Device::family))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!("cpu".parse(), Ok(Device::Cpu));
        assert_eq!("cuda:1".parse(), Ok(Device::Cuda(1)));
        assert_eq!("cuda".parse(), Ok(Device::Cuda(0)));
        assert_eq!("cann:0".parse(), Ok(Device::Cann(0)));
        assert!("cuda:-1".parse::<Device>().is_err());
        assert!("tpu:0".parse::<Device>().is_err());
        assert!("cpu:1".parse::<Device>().is_err());
        assert_eq!(Device::Cann(3).to_string(), "cann:3");
    }

    #[test]
    fn one_family_per_process() {
        assert_eq!(family_of(&[Device::Cpu, Device::Cpu]), Ok(Family::Cpu));
        assert_eq!(family_of(&[Device::Cpu, Device::Cuda(0)]), Ok(Family::Cuda));
        assert!(family_of(&[Device::Cuda(0), Device::Cann(0)]).is_err());
    }
}
