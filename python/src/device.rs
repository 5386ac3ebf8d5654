//! Device shim for the Python faces (`.device`, `.to(device)`, `.cuda()`, `.cpu()`, `.npu()`,
//! `device=` arguments, `cuda_is_available()`).
//!
//! Thin over the Rust device API (`tagstream::Device`, `Tensor::device`, `Tensor::to_device`,
//! `tagstream::cuda_is_available`); only `npu` (the default accelerator) is a Python-side name.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use tagstream::{Device, Tensor};

/// A parsed device string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dev {
    Cpu,
    Cuda(usize),
    /// `"npu"`: the default accelerator (CUDA when available, else the CPU), as `Tensor.npu()`.
    DefaultAccelerator,
}

/// Parses `cpu`, `cuda`, `cuda:N`, `npu`, `npu:N` (case-insensitive).
// Parsed here rather than by `Device::from_str`: `npu`, case and `cpu:0` are Python-side spellings.
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

/// The device a tensor lives on, as torch spells it (`cpu`, `cuda:0`).
pub(crate) fn device_of(t: &Tensor) -> String {
    t.device().to_string()
}

/// Whether a CUDA device can be used.
pub(crate) fn cuda_is_available() -> bool {
    tagstream::cuda_is_available()
}

/// `t` on `dev` (the same handle when it is already there, R10.4).
pub(crate) fn to_device(t: &Tensor, dev: Dev) -> tagstream::Result<Tensor> {
    match dev {
        Dev::Cpu => t.to_device(Device::Cpu),
        Dev::DefaultAccelerator if !cuda_is_available() => Ok(t.clone()),
        Dev::DefaultAccelerator => t.to_device(Device::Cuda(0)),
        Dev::Cuda(i) => t.to_device(Device::Cuda(i)),
    }
}
