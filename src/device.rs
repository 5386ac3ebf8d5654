//! Devices: where a tensor's elements live and where its ops run (semantics §10).
//!
//! Owns [`Device`] (its names, parsing and display) and [`cuda_is_available`]. It knows nothing
//! of streams or backends: `dispatch` picks the backend of an op from its operands' device.
//! `probe` (the `cuda` feature) looks for the CUDA libraries before anything calls into them.

#[cfg(feature = "cuda")]
pub(crate) mod probe;

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// A device a tensor lives on (R10.1).
///
/// Displays as `cpu` or `cuda:N` and parses from `cpu`, `cuda` (device 0) and `cuda:N`.
///
/// ```
/// use tagstream::Device;
/// assert_eq!("cuda:1".parse::<Device>()?, Device::Cuda(1));
/// assert_eq!("cuda".parse::<Device>()?, Device::Cuda(0));
/// assert_eq!(Device::Cpu.to_string(), "cpu");
/// assert!("tpu".parse::<Device>().is_err());
/// # Ok::<(), tagstream::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// The host: one worker thread per stream.
    #[default]
    Cpu,
    /// The CUDA device with this ordinal.
    Cuda(usize),
}

impl Device {
    /// Whether this is the host.
    pub fn is_cpu(self) -> bool {
        self == Device::Cpu
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for Device {
    type Err = Error;

    fn from_str(s: &str) -> Result<Device, Error> {
        let bad = || Error::UnknownDevice {
            name: s.to_string(),
        };
        match s.trim() {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            other => {
                let n = other.strip_prefix("cuda:").ok_or_else(bad)?;
                n.parse::<usize>().map(Device::Cuda).map_err(|_| bad())
            }
        }
    }
}

/// Whether a CUDA device can be used. Never panics; `false` where no driver or device exists
/// (R10.9): the driver library is probed with `dlopen` before any CUDA call. Always `false`
/// in a build without the `cuda` feature.
///
/// ```
/// if !tagstream::cuda_is_available() {
///     let x = tagstream::Tensor::zeros(&[2], tagstream::DType::F32)?;
///     assert!(matches!(x.to_device(tagstream::Device::Cuda(0)), Err(tagstream::Error::NoGpu { .. })));
/// }
/// # Ok::<(), tagstream::Error>(())
/// ```
pub fn cuda_is_available() -> bool {
    #[cfg(feature = "cuda")]
    {
        probe::probe().is_ok()
    }
    #[cfg(not(feature = "cuda"))]
    {
        false
    }
}

/// The error for a device no backend of this build can reach (R10.9, E18).
pub(crate) fn no_gpu(device: Device, call: &str) -> Error {
    Error::NoGpu {
        what: format!("{call}: {device} is not available: this build has no CUDA backend"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        for d in [Device::Cpu, Device::Cuda(0), Device::Cuda(7)] {
            assert_eq!(d.to_string().parse::<Device>().unwrap(), d);
        }
        for bad in ["", "gpu", "cuda:", "cuda:-1", "cuda:x", "CPU"] {
            assert!(
                matches!(bad.parse::<Device>(), Err(Error::UnknownDevice { .. })),
                "{bad}"
            );
        }
    }
}
