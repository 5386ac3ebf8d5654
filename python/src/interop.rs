//! Zero-copy numpy and DLPack, both ways, over the Rust crate's `tagstream::interop`.
//!
//! - **Out**: `.numpy()`, `np.asarray(t)` and `__dlpack__` of a CPU tensor hand out its own
//!   buffer, read-only (numpy `writeable=False`; DLPack's `READ_ONLY` flag for consumers of
//!   DLPack >= 1.0; the legacy ABI has no flag). A [`HostView`] inside the exported object keeps
//!   the buffer alive. bfloat16 (numpy has no such dtype) and CUDA tensors take the copying
//!   path in `tensor.rs` / `_helpers.py`.
//! - **In**: `from_numpy` and `from_dlpack` make a tensor over the producer's memory when it is
//!   on the CPU, C-contiguous, aligned and of a tagstream dtype; anything else is copied. The
//!   owner kept by the tensor is a Python object (the array, or a capsule holding the DLPack
//!   deleter): dropped without the GIL on a stream worker, PyO3 defers its decref to the next
//!   time a thread attaches, so no worker ever blocks on the GIL.

use std::ffi::c_void;
use std::sync::Arc;

use dlpark::ffi::{
    DLDataType, DLDataTypeCode, DLDevice, DLManagedTensor, DLManagedTensorVersioned,
};
use dlpark::metadata::Dynamic;
use dlpark::python::{ExportAbi, ExportRequest, ImportedDlpack};
use dlpark::{DlpackFlags, Managed, ManagedTensorBase};
use numpy::{PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyBufferError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyDict, PyTuple};
use tagstream::interop::{self, HostView, bf16, f16};
use tagstream::{DType, Device, Tensor};

use crate::errors::OrRaise;
use crate::tensor::{PyTensor, numpy};

/// A read-only CPU buffer exposed through numpy's `__array_interface__`; the array numpy makes
/// from it keeps it as its `base`, and so keeps the tensor's buffer alive.
#[pyclass(frozen, module = "tagstream._native", name = "_HostBuffer")]
pub(crate) struct HostBuffer {
    view: HostView,
}

#[pymethods]
impl HostBuffer {
    /// numpy's array interface (version 3), with the read-only bit set.
    #[getter]
    fn __array_interface__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("version", 3)?;
        d.set_item("shape", PyTuple::new(py, self.view.shape())?)?;
        d.set_item("typestr", typestr(self.view.dtype()))?;
        // (address, read-only): numpy marks the array `writeable=False` and refuses to flip it.
        d.set_item("data", (self.view.as_ptr() as usize, true))?;
        Ok(d)
    }
}

/// numpy's type string of a dtype in native byte order (`bf16` has none: raw 2-byte words).
fn typestr(dtype: DType) -> String {
    let order = if cfg!(target_endian = "little") {
        '<'
    } else {
        '>'
    };
    let code = match dtype {
        DType::F32 => "f4",
        DType::F16 => "f2",
        DType::I32 => "i4",
        DType::BF16 => "V2",
    };
    format!("{order}{code}")
}

/// Waits for `t` (GIL released) and returns a view of its host buffer.
fn host_view(py: Python<'_>, t: &Tensor) -> PyResult<HostView> {
    let owned = t.clone();
    py.detach(move || owned.host_view()).or_raise()
}

/// A read-only numpy array over `t`'s own buffer, or `None` where numpy cannot view it (bf16,
/// which numpy lacks, and tensors on a GPU): the caller copies then.
pub(crate) fn numpy_view<'py>(py: Python<'py>, t: &Tensor) -> PyResult<Option<Bound<'py, PyAny>>> {
    if t.dtype() == DType::BF16 || t.device() != Device::Cpu {
        return Ok(None);
    }
    let view = host_view(py, t)?;
    let holder = Bound::new(py, HostBuffer { view })?;
    Ok(Some(numpy(py)?.call_method1("asarray", (holder,))?))
}

/// A tensor sharing a numpy array's memory when it is C-contiguous, aligned, in native byte
/// order and float32/float16/int32; `None` otherwise (the caller copies).
pub(crate) fn from_numpy_shared(array: &Bound<'_, PyAny>) -> PyResult<Option<Tensor>> {
    let Ok(arr) = array.cast::<PyUntypedArray>() else {
        return Ok(None);
    };
    let descr = arr.dtype();
    if !arr.is_c_contiguous() || !arr.is_aligned() || descr.is_native_byteorder() == Some(false) {
        return Ok(None);
    }
    let dtype = match (descr.kind(), descr.itemsize()) {
        (b'f', 4) => DType::F32,
        (b'f', 2) => DType::F16,
        (b'i', 4) => DType::I32,
        _ => return Ok(None),
    };
    // SAFETY: `as_array_ptr` is a live PyArrayObject (we hold `arr`); reading its data field
    // is what numpy's own `PyArray_DATA` does.
    let ptr = unsafe { (*arr.as_array_ptr()).fields.data }
        .cast::<u8>()
        .cast_const();
    let shape = arr.shape().to_vec();
    let owner: Arc<dyn std::any::Any + Send + Sync> = Arc::new(array.clone().unbind());
    // SAFETY: a C-contiguous, aligned array of `shape` elements of this dtype starts at `ptr`;
    // the array object (its memory's owner) is kept by the tensor. That the caller does not
    // write the array while tagstream uses it is `from_numpy`'s documented contract.
    match unsafe { interop::from_external(ptr, &shape, dtype, owner) } {
        Ok(t) => Ok(Some(t)),
        // Refused (e.g. an odd address numpy still calls aligned): copy instead.
        Err(tagstream::Error::InvalidValue { .. }) => Ok(None),
        Err(e) => Err(e).or_raise(),
    }
}

// ---- DLPack export ---------------------------------------------------------------------------

/// DLPack's code for a tagstream dtype (kDLBfloat for bf16).
fn dl_dtype(dtype: DType) -> DLDataType {
    match dtype {
        DType::F32 => DLDataType::F32,
        DType::F16 => DLDataType::F16,
        DType::BF16 => DLDataType::BF16,
        DType::I32 => DLDataType::I32,
    }
}

/// A fresh managed tensor over `view`'s memory; the view itself is its context, released by
/// the consumer's call of the deleter.
fn managed<M: ManagedTensorBase>(view: &HostView, flags: DlpackFlags) -> PyResult<Managed<M>> {
    let mut init = Dynamic::compact(view.shape().to_vec())
        .initialize_as::<M>(Box::new(view.clone()))
        .map_err(|e| PyBufferError::new_err(format!("DLPack export: {e}")))?;
    init.set_data(view.as_ptr().cast_mut().cast::<c_void>())
        .set_dtype(dl_dtype(view.dtype()))
        .set_device(DLDevice::CPU);
    init.set_flags(flags)
        .map_err(|e| PyBufferError::new_err(format!("DLPack export: {e}")))?;
    // SAFETY: the data pointer is valid for the shape's elements (compact strides, written by
    // the builder) while the context (a clone of the view, holding the buffer) lives, i.e.
    // until the consumer calls the deleter; nobody writes it (R3.7), so READ_ONLY is true.
    Ok(unsafe { init.finish() })
}

/// `Tensor.__dlpack__` of a CPU tensor without a copy; `None` where the caller must take the
/// copying path instead (a tensor on a GPU, or `copy=True`).
pub(crate) fn dlpack_export(
    slf: &Bound<'_, PyTensor>,
    stream: Option<&Bound<'_, PyAny>>,
    max_version: Option<&Bound<'_, PyAny>>,
    dl_device: Option<&Bound<'_, PyAny>>,
    copy: Option<bool>,
) -> PyResult<Option<Py<PyAny>>> {
    let py = slf.py();
    let t = &slf.get().inner;
    if t.device() != Device::Cpu || copy == Some(true) {
        return Ok(None);
    }
    let max_version = max_version
        .filter(|v| !v.is_none())
        .map(|v| v.extract::<(u32, u32)>())
        .transpose()
        .map_err(|_| PyTypeError::new_err("max_version must be a (major, minor) tuple"))?;
    let dl_device = dl_device
        .filter(|v| !v.is_none())
        .map(|v| v.extract::<(u32, i32)>())
        .transpose()
        .map_err(|_| PyTypeError::new_err("dl_device must be a (device_type, device_id) tuple"))?;
    // CPU memory needs no stream (the Array API's `stream` is for device queues); the host
    // wait below already orders every reader after the producer.
    let request = ExportRequest::parse(
        stream.filter(|s| !s.is_none()),
        max_version,
        dl_device,
        copy,
    )?;
    let flags = match request.abi() {
        ExportAbi::Versioned => DlpackFlags::READ_ONLY,
        // The legacy ABI has no flags field: its consumers get the memory unmarked.
        _ => DlpackFlags::empty(),
    };
    let view = host_view(py, t)?;
    let capsule = request.export_zero_copy(
        py,
        DLDevice::CPU,
        flags,
        || managed::<DLManagedTensor>(&view, DlpackFlags::empty()),
        || managed::<DLManagedTensorVersioned>(&view, flags),
    )?;
    Ok(Some(capsule))
}

// ---- DLPack import ---------------------------------------------------------------------------

/// Imports any CPU DLPack producer: a tensor over its memory (C-contiguous, aligned, a tagstream
/// dtype), a tensor copied from it (other layouts of those dtypes), or, for other dtypes, an
/// object with `__array_interface__` over the memory (keeping it alive) that the caller turns
/// into a tensor through numpy's conversions.
#[pyfunction]
pub(crate) fn _import_dlpack(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    let imported = dlpark::python::from_dlpack(obj.as_borrowed(), None, None)?;
    let (ptr, shape, strides, dtype) = {
        let r = imported
            .validate()
            .map_err(|e| PyBufferError::new_err(format!("from_dlpack: {e}")))?;
        if r.device() != DLDevice::CPU {
            return Err(PyBufferError::new_err(format!(
                "from_dlpack: the producer's memory is on DLPack device {:?}:{}; this build \
                 imports CPU memory only",
                r.device().device_type,
                r.device().device_id
            )));
        }
        let shape = r
            .shape()
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| PyBufferError::new_err("from_dlpack: a negative dimension"))?;
        let strides = r
            .strides_or_compact()
            .map_err(|e| PyBufferError::new_err(format!("from_dlpack: {e}")))?
            .into_owned();
        // SAFETY: the producer vouches that data + byte_offset is in its allocation; nothing
        // is read here.
        let ptr = unsafe { r.offset_bytes_ptr() }
            .map_err(|e| PyBufferError::new_err(format!("from_dlpack: {e}")))?;
        (ptr, shape, strides, r.dtype())
    };
    let owner = deleter_owner(py, imported)?;
    let Some(dt) = tagstream_dtype(dtype) else {
        return array_interface(py, ptr, &shape, &strides, dtype, owner);
    };
    if is_row_major(&shape, &strides) {
        let keep: Arc<dyn std::any::Any + Send + Sync> = Arc::new(owner.clone_ref(py));
        // SAFETY: a compact CPU tensor of `shape` elements of `dt` at `ptr` (the producer's
        // DLPack contract), kept alive by the capsule holding its deleter, which the tensor
        // keeps. `from_dlpack`'s documented contract: the producer is not written meanwhile.
        match unsafe { interop::from_external(ptr, &shape, dt, keep) } {
            Ok(t) => return Ok(Py::new(py, PyTensor::wrap(t))?.into_any()),
            Err(tagstream::Error::InvalidValue { .. }) => {} // misaligned: copy below
            Err(e) => return Err(e).or_raise(),
        }
    }
    // SAFETY: the producer's memory holds `shape` elements of `dt` at `ptr + strides`; it
    // stays valid while `owner` (held until the end of this function) lives.
    let t = unsafe { gather(ptr, &shape, &strides, dt) }?;
    drop(owner);
    Ok(Py::new(py, PyTensor::wrap(t))?.into_any())
}

/// The imported tensor's deleter inside a Python capsule: dropping the capsule (with the GIL,
/// as every Python decref) calls the producer's deleter exactly once.
fn deleter_owner(py: Python<'_>, imported: ImportedDlpack) -> PyResult<Py<PyAny>> {
    Ok(
        PyCapsule::new_with_value(py, imported.into_deleter(), c"tagstream.dlpack_owner")?
            .into_any()
            .unbind(),
    )
}

fn tagstream_dtype(d: DLDataType) -> Option<DType> {
    [DType::F32, DType::F16, DType::BF16, DType::I32]
        .into_iter()
        .find(|&t| dl_dtype(t) == d)
}

/// Whether `strides` (in elements) lay `shape` out row-major without gaps. A dimension of
/// size 1 may have any stride (producers differ there), and an empty tensor is laid out in
/// every way.
fn is_row_major(shape: &[usize], strides: &[i64]) -> bool {
    if shape.contains(&0) {
        return true;
    }
    let mut want = 1i64;
    for (&d, &s) in shape.iter().zip(strides).rev() {
        if d != 1 && s != want {
            return false;
        }
        want = want.saturating_mul(i64::try_from(d).unwrap_or(i64::MAX));
    }
    shape.len() == strides.len()
}

/// A row-major copy of a strided tensor (strides in elements, possibly negative).
///
/// # Safety
/// Every element `ptr + sum(i_k * strides_k) * size` for in-range indices must be a readable,
/// initialized element of `dtype` (the producer's DLPack contract).
unsafe fn gather(
    ptr: *const u8,
    shape: &[usize],
    strides: &[i64],
    dtype: DType,
) -> PyResult<Tensor> {
    /// Copies element by element with `T`'s unaligned read (the producer may be misaligned).
    unsafe fn go<T: interop::HostElement>(
        ptr: *const u8,
        shape: &[usize],
        strides: &[i64],
    ) -> PyResult<Tensor> {
        let len: usize = shape.iter().product();
        let mut out: Vec<T> = Vec::with_capacity(len);
        let mut index = vec![0usize; shape.len()];
        let size = std::mem::size_of::<T>() as i64;
        for _ in 0..len {
            let off: i64 = index.iter().zip(strides).map(|(&i, &s)| i as i64 * s).sum();
            // SAFETY: the caller's contract covers every in-range index.
            out.push(unsafe {
                ptr.offset((off * size) as isize)
                    .cast::<T>()
                    .read_unaligned()
            });
            for k in (0..index.len()).rev() {
                index[k] += 1;
                if index[k] < shape[k] {
                    break;
                }
                index[k] = 0;
            }
        }
        interop::from_owner(out, shape).or_raise()
    }
    // SAFETY: forwarded from the caller.
    unsafe {
        match dtype {
            DType::F32 => go::<f32>(ptr, shape, strides),
            DType::F16 => go::<f16>(ptr, shape, strides),
            DType::BF16 => go::<bf16>(ptr, shape, strides),
            DType::I32 => go::<i32>(ptr, shape, strides),
        }
    }
}

/// An object whose `__array_interface__` describes the producer's memory (read-only) and which
/// keeps `owner` alive, for numpy to convert dtypes tagstream does not store (float64, int64,
/// bool, ...).
fn array_interface(
    py: Python<'_>,
    ptr: *const u8,
    shape: &[usize],
    strides: &[i64],
    dtype: DLDataType,
    owner: Py<PyAny>,
) -> PyResult<Py<PyAny>> {
    let kind = match dtype.code {
        DLDataTypeCode::FLOAT => 'f',
        DLDataTypeCode::INT => 'i',
        DLDataTypeCode::UINT => 'u',
        DLDataTypeCode::BOOL => 'b',
        _ => {
            return Err(PyTypeError::new_err(format!(
                "from_dlpack: DLPack dtype code {} ({} bits) has no tagstream or numpy \
                 equivalent",
                dtype.code.0, dtype.bits
            )));
        }
    };
    if dtype.lanes != 1 || !dtype.bits.is_multiple_of(8) {
        return Err(PyTypeError::new_err(format!(
            "from_dlpack: a vector or sub-byte DLPack dtype ({} bits x {} lanes)",
            dtype.bits, dtype.lanes
        )));
    }
    let size = i64::from(dtype.bits / 8);
    let order = if cfg!(target_endian = "little") {
        '<'
    } else {
        '>'
    };
    let d = PyDict::new(py);
    d.set_item("version", 3)?;
    d.set_item("shape", PyTuple::new(py, shape)?)?;
    d.set_item("typestr", format!("{order}{kind}{size}"))?;
    d.set_item(
        "strides",
        PyTuple::new(py, strides.iter().map(|s| s.saturating_mul(size)))?,
    )?;
    d.set_item("data", (ptr as usize, true))?;
    let ns = py.import("types")?.getattr("SimpleNamespace")?.call0()?;
    ns.setattr("__array_interface__", d)?;
    ns.setattr("_owner", owner)?;
    Ok(ns.unbind())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_major_layouts() {
        assert!(is_row_major(&[2, 3], &[3, 1]));
        assert!(
            is_row_major(&[2, 1, 3], &[3, 99, 1]),
            "a size-1 dim's stride is free"
        );
        assert!(is_row_major(&[], &[]));
        assert!(is_row_major(&[0, 3], &[7, 7]));
        assert!(!is_row_major(&[2, 3], &[1, 2]), "transposed");
        assert!(!is_row_major(&[2, 3], &[6, 2]), "gaps");
        assert!(!is_row_major(&[4], &[-1]), "reversed");
    }

    #[test]
    fn dtype_codes_round_trip() {
        for d in [DType::F32, DType::F16, DType::BF16, DType::I32] {
            assert_eq!(tagstream_dtype(dl_dtype(d)), Some(d));
        }
        assert_eq!(dl_dtype(DType::BF16).code, DLDataTypeCode::BFLOAT);
        assert_eq!(tagstream_dtype(DLDataType::F64), None);
        assert_eq!(typestr(DType::F16).len(), 3);
    }
}
