//! The native half of the `tagstream` Python package (`tagstream._native`).
//!
//! Built on the public Rust API only. Every Rust error becomes the pinned exception class
//! (`errors`); host waits release the GIL; devices go through the Rust device API (`device`).

mod compiled;
mod device;
mod dtype;
mod errors;
mod events;
mod interop;
mod tensor;

use pyo3::prelude::*;

/// mimalloc for the extension's Rust allocations (Python's own objects keep Python's
/// allocator). Eager work allocates on one thread and frees on another (the caller's thread
/// makes an op's output buffer and drops the tensor; a stream worker allocates the elements and
/// drops the entry's last input handles), and glibc's malloc returns such chunks through the
/// owning thread's arena under its lock: an eager `add` of tiny tensors cost 510–1082 ns per op
/// with it, 323–446 ns with mimalloc (`python/examples/bench.py`). A request the machine could
/// never back is refused by tagstream itself (`OutOfMemoryError`), whichever allocator is linked.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<tensor::PyTensor>()?;
    m.add_class::<dtype::PyDType>()?;
    m.add_class::<events::PyTaggedEvent>()?;
    m.add_class::<events::StreamSwitch>()?;
    m.add_class::<compiled::PyCompiled>()?;
    m.add_class::<errors::RustError>()?;
    m.add_class::<interop::HostBuffer>()?;
    for kind in [
        dtype::Kind::F32,
        dtype::Kind::F16,
        dtype::Kind::BF16,
        dtype::Kind::I32,
    ] {
        m.add(kind.name(), dtype::dtype_object(py, kind)?)?;
    }
    m.add_function(wrap_pyfunction!(tensor::tensor, m)?)?;
    m.add_function(wrap_pyfunction!(tensor::from_numpy, m)?)?;
    m.add_function(wrap_pyfunction!(interop::_import_dlpack, m)?)?;
    m.add_function(wrap_pyfunction!(tensor::zeros, m)?)?;
    m.add_function(wrap_pyfunction!(tensor::full, m)?)?;
    m.add_function(wrap_pyfunction!(tensor::randn, m)?)?;
    m.add_function(wrap_pyfunction!(tensor::manual_seed, m)?)?;
    m.add_function(wrap_pyfunction!(tensor::add, m)?)?;
    m.add_function(wrap_pyfunction!(tensor::sub, m)?)?;
    m.add_function(wrap_pyfunction!(tensor::mul, m)?)?;
    m.add_function(wrap_pyfunction!(tensor::div, m)?)?;
    m.add_function(wrap_pyfunction!(tensor::matmul, m)?)?;
    m.add_function(wrap_pyfunction!(tensor::mm, m)?)?;
    m.add_function(wrap_pyfunction!(tensor::relu, m)?)?;
    m.add_function(wrap_pyfunction!(tensor::silu, m)?)?;
    m.add_function(wrap_pyfunction!(tensor::gelu, m)?)?;
    m.add_function(wrap_pyfunction!(tensor::exp, m)?)?;
    m.add_function(wrap_pyfunction!(tensor::softmax, m)?)?;
    m.add_function(wrap_pyfunction!(tensor::cat, m)?)?;
    m.add_function(wrap_pyfunction!(tensor::rms_norm, m)?)?;
    m.add_function(wrap_pyfunction!(tensor::topk, m)?)?;
    m.add_function(wrap_pyfunction!(tensor::gather, m)?)?;
    m.add_function(wrap_pyfunction!(tensor::scatter, m)?)?;
    m.add_function(wrap_pyfunction!(tensor::index_select, m)?)?;
    m.add_function(wrap_pyfunction!(tensor::sum, m)?)?;
    m.add_function(wrap_pyfunction!(tensor::mean, m)?)?;
    m.add_function(wrap_pyfunction!(tensor::max, m)?)?;
    m.add_function(wrap_pyfunction!(tensor::to_dtype, m)?)?;
    m.add_function(wrap_pyfunction!(tensor::cuda_is_available, m)?)?;
    m.add_function(wrap_pyfunction!(events::create_tagged_event, m)?)?;
    m.add_function(wrap_pyfunction!(events::tagged_event_record, m)?)?;
    m.add_function(wrap_pyfunction!(events::tagged_event_wait, m)?)?;
    m.add_function(wrap_pyfunction!(events::record_tagged_stream, m)?)?;
    m.add_function(wrap_pyfunction!(events::current_stream, m)?)?;
    m.add_function(wrap_pyfunction!(events::synchronize, m)?)?;
    m.add_function(wrap_pyfunction!(events::stream_switch, m)?)?;
    m.add_function(wrap_pyfunction!(compiled::compile, m)?)?;
    Ok(())
}
