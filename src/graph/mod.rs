//! Capture, checks, planning and replay of multi-stream graphs (skeleton).

use crate::compile::MemoryStats;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// A captured graph.
#[derive(Debug)]
pub(crate) struct Captured;

impl Captured {
    pub(crate) fn dump(&self) -> String {
        String::new()
    }
    pub(crate) fn dot(&self) -> String {
        String::new()
    }
    pub(crate) fn memory_stats(&self) -> MemoryStats {
        MemoryStats::default()
    }
    pub(crate) fn replay(&mut self, _inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        Err(Error::NoGpu { what: "skeleton".into() })
    }
}

pub(crate) fn refuse_in_capture(_call: &'static str, _producer: Option<String>) -> Result<()> {
    Ok(())
}

pub(crate) fn capture(
    _f: &mut dyn FnMut(&[Tensor]) -> Result<Vec<Tensor>>,
    _inputs: &[Tensor],
) -> Result<Captured> {
    Err(Error::NoGpu { what: "skeleton".into() })
}

pub(crate) fn run_eager(
    f: &mut dyn FnMut(&[Tensor]) -> Result<Vec<Tensor>>,
    inputs: &[Tensor],
) -> Result<Vec<Tensor>> {
    f(inputs)
}
