//! Device shim for the Python faces (`.device`, `.to(device)`, `.cuda()`, `.cpu()`, `.npu()`,
//! `device=` arguments, `cuda_is_available()`).
//!
//! TODO(device): the Rust device API (`tagstream::Device`, `Tensor::device`, `Tensor::to_device`,
//! `tagstream::cuda_is_available`) is being added beside this package. Until it lands, every
//! tensor is on the CPU, `"cpu"` works, and any CUDA device is `Error::NoGpu`. Each function
//! below is the one place to wire to the Rust API at merge.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use tagstream::{Error, Tensor};

/// A parsed device string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dev {
    Cpu,
    Cuda(usize),
    /// `"npu"`: the default accelerator (CUDA when available, else the CPU), as `Tensor.npu()`.
    DefaultAccelerator,
}

/// Parses `cpu`, `cuda`, `cuda:N`, `npu`, `npu:N` (case-insensitive).
// TODO(device): parse through `tagstream::Device::from_str` (keeping `npu` here).
pub(crate) fn parse(s: &str) -> PyResult<Dev> {
    let lower = s.trim().to_ascii_lowercase();
    let (kind, index) = match lower.split_once(':') {
        Some((k, i)) => {
            let i = i
                .parse::<usize>()
                .map_err(|_| PyValueError::new_err(format!("invalid device index in \"{s}\"")))?;
            (k.to_string(), Some(i))
        }
        None => (lower.clone(), None),
    };
    match (kind.as_str(), index) {
        ("cpu", None | Some(0)) => Ok(Dev::Cpu),
        ("cuda", i) => Ok(Dev::Cuda(i.unwrap_or(0))),
        ("npu", None) => Ok(Dev::DefaultAccelerator),
        ("npu", Some(i)) => Ok(Dev::Cuda(i)),
        _ => Err(PyValueError::new_err(format!(
            "unknown device \"{s}\"; expected cpu, cuda, cuda:N or npu"
        ))),
    }
}

/// The device a tensor lives on, as torch spells it.
// TODO(device): `t.device().to_string()`.
pub(crate) fn device_of(_t: &Tensor) -> &'static str {
    "cpu"
}

/// Whether a CUDA device can be used.
// TODO(device): `tagstream::cuda_is_available()`.
pub(crate) fn cuda_is_available() -> bool {
    false
}

/// `t` on `dev` (the same handle when it is already there).
// TODO(device): `t.to_device(Device::Cuda(i))`.
pub(crate) fn to_device(t: &Tensor, dev: Dev) -> tagstream::Result<Tensor> {
    match dev {
        Dev::Cpu => Ok(t.clone()),
        Dev::DefaultAccelerator if !cuda_is_available() => Ok(t.clone()),
        Dev::DefaultAccelerator => to_device(t, Dev::Cuda(0)),
        Dev::Cuda(i) => Err(Error::NoGpu {
            what: format!(
                "cuda:{i} was requested, but this build of the tagstream Python package has no \
                 CUDA device support yet (every tensor is on the CPU)"
            ),
        }),
    }
}
