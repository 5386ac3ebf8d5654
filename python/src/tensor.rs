//! `tagstream.Tensor`, the constructors and the ops, with numpy in and out.
//!
//! `tagstream.tensor(...)` copies (torch's semantics) through `Tensor::from_vec(Vec<f32>)` (f16
//! and bf16 values pass through f32 exactly; int32 values too, which is why an int32 tensor
//! refuses integers beyond float32's exact range, R6.1). `from_numpy`, `.numpy()`,
//! `np.asarray(t)` and DLPack share memory where they can (`interop.rs`) and copy otherwise.
//! Host reads release the GIL.

use std::sync::Mutex;

use numpy::{PyArray1, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyIndexError, PyNotImplementedError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyFloat, PyInt, PyList, PyModule, PyTuple};
use tagstream::{DType, Error, Tensor};

use crate::device::{self, Dev};
use crate::dtype::{Kind, PyDType, dtype_object, extract_kind};
use crate::errors::OrRaise;
use crate::interop;

static NUMPY: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
static HELPERS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// The `numpy` module.
pub(crate) fn numpy(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    NUMPY
        .get_or_try_init(py, || py.import("numpy").map(Bound::unbind))
        .map(|m| m.bind(py))
}

/// `tagstream._helpers` (repr and DLPack, written in Python).
fn helpers(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    HELPERS
        .get_or_try_init(py, || py.import("tagstream._helpers").map(Bound::unbind))
        .map(|m| m.bind(py))
}

/// A tensor: an immutable, asynchronous value on one stream's timeline.
///
/// Ops return at once; `.numpy()`, `.tolist()`, `repr()` and `tagstream.synchronize()` wait (with
/// the GIL released). Operators `+ - * /` work elementwise with NumPy/torch broadcasting (a
/// Python number too), `@` is `matmul`.
#[pyclass(frozen, module = "tagstream", name = "Tensor")]
pub(crate) struct PyTensor {
    pub(crate) inner: Tensor,
}

impl PyTensor {
    pub(crate) fn wrap(inner: Tensor) -> PyTensor {
        PyTensor { inner }
    }
}

fn dims(t: &Tensor) -> Vec<usize> {
    t.shape().to_vec()
}

/// A shape from `*shape` arguments: `f(2, 3)` or `f((2, 3))` / `f([2, 3])`.
pub(crate) fn shape_from_args(args: &Bound<'_, PyTuple>) -> PyResult<Vec<usize>> {
    if args.len() == 1 {
        let first = args.get_item(0)?;
        if !first.is_instance_of::<PyInt>() {
            return shape_from_seq(&first);
        }
    }
    shape_from_seq(args.as_any())
}

/// A shape from a sequence of non-negative ints.
pub(crate) fn shape_from_seq(obj: &Bound<'_, PyAny>) -> PyResult<Vec<usize>> {
    if obj.is_instance_of::<PyInt>() {
        return Ok(vec![dim(obj)?]);
    }
    let mut out = Vec::new();
    for item in obj.try_iter().map_err(|_| {
        PyTypeError::new_err(format!(
            "a shape must be ints or a sequence of ints, not {}",
            type_name(obj)
        ))
    })? {
        out.push(dim(&item?)?);
    }
    Ok(out)
}

fn dim(obj: &Bound<'_, PyAny>) -> PyResult<usize> {
    if !obj.is_instance_of::<PyInt>() && !obj.hasattr("__index__")? {
        return Err(PyTypeError::new_err(format!(
            "a dimension must be an int, not {}",
            type_name(obj)
        )));
    }
    let d: i128 = obj.call_method0("__index__")?.extract()?;
    if d < 0 {
        return Err(PyValueError::new_err(format!(
            "negative dimension {d} in a shape"
        )));
    }
    usize::try_from(d).map_err(|_| PyValueError::new_err(format!("dimension {d} is too large")))
}

pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// A `device=` argument: a string, `None` (cpu) or anything whose `str()` names a device.
fn extract_device(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Dev> {
    match obj {
        None => Ok(Dev::Cpu),
        Some(o) if o.is_none() => Ok(Dev::Cpu),
        Some(o) => device::parse(&o.str()?.to_cow()?),
    }
}

fn kind_arg(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Kind>> {
    match obj {
        None => Ok(None),
        Some(o) if o.is_none() => Ok(None),
        Some(o) => extract_kind(o).map(Some),
    }
}

/// Moves a freshly built CPU tensor to `dev`.
fn placed(t: Tensor, dev: Dev) -> PyResult<PyTensor> {
    Ok(PyTensor::wrap(device::to_device(&t, dev).or_raise()?))
}

// ---- numpy ---------------------------------------------------------------------------------

/// The dtype a numpy array maps to when none is asked for.
fn inferred_kind(arr: &Bound<'_, PyUntypedArray>) -> PyResult<Kind> {
    let d = arr.dtype();
    let kind: char = d.getattr("kind")?.extract()?;
    let size = d.getattr("itemsize")?.extract::<usize>()?;
    match (kind, size) {
        ('f', 2) => Ok(Kind::F16),
        // float64 (Python floats included) becomes float32: tagstream has no float64.
        ('f', _) => Ok(Kind::F32),
        ('i' | 'u', _) => Ok(Kind::I32),
        _ => Err(PyTypeError::new_err(format!(
            "cannot make a tagstream tensor from a numpy array of dtype {}; use float32, float16 \
             or int32 data",
            d.str()?
        ))),
    }
}

/// A tensor from anything `numpy.asarray` accepts (or a tensor), copied.
pub(crate) fn tensor_from_any(obj: &Bound<'_, PyAny>, kind: Option<Kind>) -> PyResult<Tensor> {
    let py = obj.py();
    if let Ok(t) = obj.cast::<PyTensor>() {
        let t = &t.get().inner;
        return match kind {
            Some(k) if k != Kind::from_rust(t.dtype()) => t.to_dtype(k.to_rust()).or_raise(),
            _ => Ok(t.clone()),
        };
    }
    let np = numpy(py)?;
    let arr = np.call_method1("asarray", (obj,))?;
    let arr = arr
        .cast_into::<PyUntypedArray>()
        .map_err(|_| PyTypeError::new_err("numpy.asarray did not return an array"))?;
    let target = match kind {
        Some(k) => k,
        None => inferred_kind(&arr)?,
    };
    let dtype = target.to_rust();
    let src_kind: char = arr.dtype().getattr("kind")?.extract()?;
    if !matches!(src_kind, 'f' | 'i' | 'u' | 'b') {
        return Err(PyTypeError::new_err(format!(
            "cannot make a tagstream tensor from numpy dtype {}",
            arr.dtype().str()?
        )));
    }
    let (data, shape) = if dtype == DType::I32 {
        i32_data(np, &arr)?
    } else {
        // One contiguous f32 copy whatever the layout, byte order or writeability of the source.
        let f32s = contiguous(np, &arr, "float32")?;
        let ro: PyReadonlyArrayDyn<'_, f32> = f32s.extract()?;
        let data = ro
            .as_slice()
            .map_err(|e| PyValueError::new_err(e.to_string()))?
            .to_vec();
        (data, ro.shape().to_vec())
    };
    py.detach(move || Tensor::from_vec(data, &shape, dtype))
        .or_raise()
}

/// `np.require(arr, dtype, "CA")`: a C-contiguous, aligned array of `dtype` (`arr` itself when
/// it is one, else a copy; `asarray` would keep a misaligned array as it is).
fn contiguous<'py>(
    np: &Bound<'py, PyModule>,
    arr: &Bound<'py, PyUntypedArray>,
    dtype: &str,
) -> PyResult<Bound<'py, PyAny>> {
    np.call_method1("require", (arr, np.getattr(dtype)?, "CA"))
}

/// Whether an int32 tensor holds `v` exactly: an integer in the i32 range that float32 also
/// holds exactly (the public Rust API moves I32 data as f32, R6.1; every |v| <= 2^24 is).
fn exact_i32(v: f64) -> bool {
    v.fract() == 0.0 && (-2_147_483_648.0..2_147_483_648.0).contains(&v) && f64::from(v as f32) == v
}

/// The f32 values of an int32 tensor from a numpy array, checked in f64 (exact for every int32
/// and float value; an int64 beyond 2^53 is out of the i32 range either way) so that a value the
/// f32 path would round is refused instead of changed.
fn i32_data(
    np: &Bound<'_, PyModule>,
    arr: &Bound<'_, PyUntypedArray>,
) -> PyResult<(Vec<f32>, Vec<usize>)> {
    let wide = contiguous(np, arr, "float64")?;
    let ro: PyReadonlyArrayDyn<'_, f64> = wide.extract()?;
    let values = ro
        .as_slice()
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    if let Some(at) = values.iter().position(|&v| !exact_i32(v)) {
        return Err(Error::InvalidValue {
            op: "tensor",
            reason: format!(
                "{} at index {at} is not an integer an int32 tensor holds exactly (int32 data \
                 moves through float32: integers up to 2^24 in magnitude, R6.1)",
                values[at]
            ),
        })
        .or_raise();
    }
    Ok((
        values.iter().map(|&v| v as f32).collect(),
        ro.shape().to_vec(),
    ))
}

/// The values as a numpy array (f32, f16, int32, or f32 for bf16); waits with the GIL
/// released. Read-only: a view of the tensor's own buffer where numpy can view it (a CPU
/// tensor that is not bf16), else a fresh copy marked read-only. `writeable`: always a fresh,
/// writable copy.
fn to_numpy<'py>(py: Python<'py>, t: &Tensor, writeable: bool) -> PyResult<Bound<'py, PyAny>> {
    if !writeable && let Some(view) = interop::numpy_view(py, t)? {
        return Ok(view);
    }
    let owned = t.clone();
    let values = py.detach(move || owned.to_vec_f32()).or_raise()?;
    let arr = PyArray1::from_vec(py, values).reshape(dims(t))?.into_any();
    let arr = match t.dtype() {
        DType::F16 => arr.call_method1("astype", (numpy(py)?.getattr("float16")?,))?,
        // Exact: I32 values are integers that f32 holds exactly (R6.1).
        DType::I32 => arr.call_method1("astype", (numpy(py)?.getattr("int32")?,))?,
        _ => arr,
    };
    if !writeable {
        let kwargs = PyDict::new(py);
        kwargs.set_item("write", false)?;
        arr.call_method("setflags", (), Some(&kwargs))?;
    }
    Ok(arr)
}

// ---- binary operands -----------------------------------------------------------------------

/// The right operand of a binary op: a tensor, a numpy array (converted to `like`'s dtype), or
/// a Python number broadcast to `like`'s shape.
fn operand(like: &Tensor, other: &Bound<'_, PyAny>) -> PyResult<Option<Tensor>> {
    if let Ok(t) = other.cast::<PyTensor>() {
        return Ok(Some(t.get().inner.clone()));
    }
    if other.is_instance_of::<PyFloat>() || other.is_instance_of::<PyInt>() {
        let v: f64 = other.extract()?;
        let full = Tensor::full(like.shape(), v as f32, like.dtype()).or_raise()?;
        return Ok(Some(full));
    }
    let py = other.py();
    if other.is_instance(&numpy(py)?.getattr("ndarray")?)? {
        let kind = Kind::from_rust(like.dtype());
        return tensor_from_any(other, Some(kind)).map(Some);
    }
    Ok(None)
}

type BinOp = fn(&Tensor, &Tensor) -> tagstream::Result<Tensor>;

fn binary(
    py: Python<'_>,
    a: &Tensor,
    b: &Bound<'_, PyAny>,
    op: BinOp,
    reflected: bool,
) -> PyResult<Py<PyAny>> {
    match operand(a, b)? {
        Some(b) => {
            let out = if reflected { op(&b, a) } else { op(a, &b) }.or_raise()?;
            Ok(Py::new(py, PyTensor::wrap(out))?.into_any())
        }
        None => Ok(py.NotImplemented()),
    }
}

fn mm_checked(a: &Tensor, b: &Tensor) -> tagstream::Result<Tensor> {
    if a.shape().len() != 2 || b.shape().len() != 2 {
        return Err(Error::ShapeMismatch {
            op: "mm",
            lhs: dims(a),
            rhs: dims(b),
            reason: "mm multiplies two 2-D matrices; use matmul for a batch".into(),
        });
    }
    a.matmul(b)
}

/// A reduction over `dim`, negative counting from the end as in torch.
fn reduce_checked(
    t: &Tensor,
    dim: isize,
    keepdim: bool,
    op: fn(&Tensor, usize, bool) -> tagstream::Result<Tensor>,
    name: &'static str,
) -> tagstream::Result<Tensor> {
    let rank = t.shape().len() as isize;
    let d = if dim < 0 { dim + rank } else { dim };
    if d < 0 || d >= rank {
        return Err(Error::ShapeMismatch {
            op: name,
            lhs: dims(t),
            rhs: Vec::new(),
            reason: format!("dim {dim} is out of range for a tensor of rank {rank}"),
        });
    }
    op(t, d as usize, keepdim)
}

/// A torch dim of `t` (negative counts from the end) as an index below `rank + extra`
/// (`extra` is 1 for `unsqueeze`, which may name the position after the last dim).
fn norm_dim(t: &Tensor, dim: isize, extra: usize, name: &'static str) -> tagstream::Result<usize> {
    let rank = (t.shape().len() + extra) as isize;
    let d = if dim < 0 { dim + rank } else { dim };
    if d < 0 || d >= rank {
        return Err(Error::ShapeMismatch {
            op: name,
            lhs: dims(t),
            rhs: Vec::new(),
            reason: format!(
                "dim {dim} is out of range for a tensor of rank {}",
                t.shape().len()
            ),
        });
    }
    Ok(d as usize)
}

/// Softmax over any dim (the last by default); the last dim is the Rust `softmax` itself.
fn softmax_checked(t: &Tensor, dim: isize) -> tagstream::Result<Tensor> {
    t.softmax_dim(norm_dim(t, dim, 0, "softmax")?)
}

/// `topk` over `dim`, which must name the last dim (the Rust op works there only).
fn topk_checked(t: &Tensor, k: isize, dim: isize) -> tagstream::Result<(Tensor, Tensor)> {
    let d = norm_dim(t, dim, 0, "topk")?;
    let rank = t.shape().len();
    let shape_error = |reason: String| Error::ShapeMismatch {
        op: "topk",
        lhs: dims(t),
        rhs: Vec::new(),
        reason,
    };
    if d + 1 != rank {
        return Err(shape_error(format!(
            "topk works over the last dim only (dim -1 or {}), not dim {dim}; move that dim to \
             the end first (transpose)",
            rank - 1
        )));
    }
    let k = usize::try_from(k).map_err(|_| shape_error(format!("k = {k} is negative")))?;
    t.topk(k)
}

/// An index argument: a tagstream tensor (of dtype int32, which the Rust op checks).
fn index_arg(obj: &Bound<'_, PyAny>, op: &str) -> PyResult<Tensor> {
    obj.cast::<PyTensor>()
        .map(|t| t.get().inner.clone())
        .map_err(|_| {
            PyTypeError::new_err(format!(
                "{op}: index must be a tagstream.Tensor of dtype int32, not {}",
                type_name(obj)
            ))
        })
}

/// `scatter`'s source: a tensor (`src`), or a number (`src` or `value=`) filled to `index`'s
/// shape in `data`'s dtype.
fn scatter_src(
    data: &Tensor,
    index: &Tensor,
    src: Option<&Bound<'_, PyAny>>,
    value: Option<&Bound<'_, PyAny>>,
) -> PyResult<Tensor> {
    let given = match (src, value) {
        (Some(s), None) | (None, Some(s)) if !s.is_none() => s,
        _ => {
            return Err(PyTypeError::new_err(
                "scatter: give exactly one of src (a tensor or a number) and value (a number)",
            ));
        }
    };
    if let Ok(t) = given.cast::<PyTensor>() {
        if value.is_some() {
            return Err(PyTypeError::new_err(
                "scatter: value must be a number; pass a tensor as src",
            ));
        }
        return Ok(t.get().inner.clone());
    }
    if given.is_instance_of::<PyFloat>() || given.is_instance_of::<PyInt>() {
        let v: f64 = given.extract()?;
        return Tensor::full(index.shape(), v as f32, data.dtype()).or_raise();
    }
    Err(PyTypeError::new_err(format!(
        "scatter: src must be a tagstream.Tensor or a number, not {}",
        type_name(given)
    )))
}

/// A signed size list from `*sizes` arguments (`f(2, 3)` or `f((2, 3))`), for torch's `-1`.
fn signed_sizes(args: &Bound<'_, PyTuple>) -> PyResult<Vec<i128>> {
    let seq = if args.len() == 1 && !args.get_item(0)?.is_instance_of::<PyInt>() {
        args.get_item(0)?
    } else {
        args.clone().into_any()
    };
    let mut out = Vec::new();
    for item in seq.try_iter()? {
        let item = item?;
        if !item.is_instance_of::<PyInt>() && !item.hasattr("__index__")? {
            return Err(PyTypeError::new_err(format!(
                "a size must be an int, not {}",
                type_name(&item)
            )));
        }
        out.push(item.call_method0("__index__")?.extract()?);
    }
    Ok(out)
}

fn size(d: i128) -> PyResult<usize> {
    usize::try_from(d).map_err(|_| PyValueError::new_err(format!("invalid size {d}")))
}

/// torch's `reshape` shape: at most one `-1`, inferred from the element count.
fn reshape_shape(t: &Tensor, sizes: &[i128]) -> PyResult<Vec<usize>> {
    let infer: Vec<usize> = (0..sizes.len()).filter(|&i| sizes[i] == -1).collect();
    if infer.len() > 1 {
        return Err(PyValueError::new_err(
            "only one dimension can be inferred (-1)",
        ));
    }
    let mut shape = Vec::with_capacity(sizes.len());
    for (i, &d) in sizes.iter().enumerate() {
        shape.push(if infer.contains(&i) { 1 } else { size(d)? });
    }
    if let Some(&i) = infer.first() {
        let known = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        match known {
            Some(k) if k != 0 && t.len().is_multiple_of(k) => shape[i] = t.len() / k,
            _ => {
                return Err(Error::ShapeMismatch {
                    op: "reshape",
                    lhs: dims(t),
                    rhs: Vec::new(),
                    reason: format!("shape {sizes:?} is invalid for {} elements", t.len()),
                })
                .or_raise();
            }
        }
    }
    Ok(shape)
}

/// torch's `expand` sizes: `-1` keeps the input's size in an aligned dim.
fn expand_shape(t: &Tensor, sizes: &[i128]) -> PyResult<Vec<usize>> {
    let pad = sizes.len().saturating_sub(t.shape().len());
    sizes
        .iter()
        .enumerate()
        .map(|(i, &d)| match d {
            -1 if i >= pad => Ok(t.shape()[i - pad]),
            d => size(d),
        })
        .collect()
}

#[pymethods]
impl PyTensor {
    /// `None`: numpy defers to the Tensor's operators (`array + t` is a Tensor, as in torch).
    #[classattr]
    fn __array_ufunc__(py: Python<'_>) -> Py<PyAny> {
        py.None()
    }

    /// The shape, as a tuple of ints.
    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.inner.shape())
    }

    /// The element type (`tagstream.float32`, `float16`, `bfloat16` or `int32`).
    #[getter]
    fn dtype(&self, py: Python<'_>) -> PyResult<Py<PyDType>> {
        dtype_object(py, Kind::from_rust(self.inner.dtype()))
    }

    /// The device, as torch spells it: `"cpu"` or `"cuda:0"`.
    #[getter]
    fn device(&self) -> String {
        device::device_of(&self.inner)
    }

    /// Whether the tensor lives on a CUDA device.
    #[getter]
    fn is_cuda(&self) -> bool {
        !self.inner.device().is_cpu()
    }

    /// Number of dimensions.
    #[getter]
    fn ndim(&self) -> usize {
        self.inner.shape().len()
    }

    /// Number of dimensions (torch's `dim()`).
    fn dim(&self) -> usize {
        self.ndim()
    }

    /// Number of elements.
    fn numel(&self) -> usize {
        self.inner.len()
    }

    /// The shape as a tuple, or one dimension's size.
    #[pyo3(signature = (dim=None))]
    fn size<'py>(&self, py: Python<'py>, dim: Option<isize>) -> PyResult<Bound<'py, PyAny>> {
        match dim {
            None => Ok(self.shape(py)?.into_any()),
            Some(d) => {
                let n = self.inner.shape().len() as isize;
                let i = if d < 0 { d + n } else { d };
                if i < 0 || i >= n {
                    return Err(PyIndexError::new_err(format!(
                        "dimension {d} out of range for a {n}-d tensor"
                    )));
                }
                Ok(self.inner.shape()[i as usize].into_pyobject(py)?.into_any())
            }
        }
    }

    fn __len__(&self) -> PyResult<usize> {
        self.inner
            .shape()
            .first()
            .copied()
            .ok_or_else(|| PyTypeError::new_err("len() of a 0-d tensor"))
    }

    /// The values as a read-only numpy array (float32, float16, int32; bfloat16 exports as a
    /// float32 copy). On the CPU the array views the tensor's own memory (no copy; it keeps the
    /// memory alive). Waits for the tensor with the GIL released.
    fn numpy<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_numpy(py, &self.inner, false)
    }

    /// The numpy protocol (`numpy.asarray(t)`): the read-only view of `.numpy()`; `copy=True`
    /// gives a fresh writable array; `copy=False` is refused where no view exists (bfloat16, a
    /// tensor on a GPU).
    #[pyo3(signature = (dtype=None, copy=None))]
    fn __array__<'py>(
        &self,
        py: Python<'py>,
        dtype: Option<&Bound<'py, PyAny>>,
        copy: Option<bool>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let arr = if copy == Some(false) {
            interop::numpy_view(py, &self.inner)?.ok_or_else(|| {
                PyValueError::new_err(format!(
                    "a {} tensor on {} cannot be viewed as a numpy array without a copy",
                    self.inner.dtype(),
                    self.inner.device()
                ))
            })?
        } else {
            to_numpy(py, &self.inner, copy == Some(true))?
        };
        match dtype {
            Some(d) if !d.is_none() => arr.call_method1("astype", (d,)),
            _ => Ok(arr),
        }
    }

    /// The values as nested Python lists.
    fn tolist<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.numpy(py)?.call_method0("tolist")
    }

    /// The values as a flat list of floats (the Rust `to_vec_f32`).
    fn to_vec_f32<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let owned = self.inner.clone();
        let v = py.detach(move || owned.to_vec_f32()).or_raise()?;
        PyList::new(py, v)
    }

    /// The value of a one-element tensor (an `int` for int32, else a `float`).
    fn item(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if self.inner.len() != 1 {
            return Err(PyValueError::new_err(format!(
                "item() needs a tensor with one element, not {}",
                self.inner.len()
            )));
        }
        let owned = self.inner.clone();
        let v = py.detach(move || owned.to_vec_f32()).or_raise()?[0];
        Ok(if self.inner.dtype() == DType::I32 {
            // Exact: I32 values are integers that f32 holds exactly (R6.1).
            (v as i64).into_pyobject(py)?.into_any().unbind()
        } else {
            PyFloat::new(py, f64::from(v)).into_any().unbind()
        })
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        helpers(slf.py())?
            .call_method1("tensor_repr", (slf,))?
            .extract()
    }

    /// DLPack export. A CPU tensor shares its memory (no copy; DLPack's read-only flag set for
    /// consumers of DLPack >= 1.0); `copy=True` or a tensor on a GPU exports a fresh host copy.
    #[pyo3(signature = (*, stream=None, max_version=None, dl_device=None, copy=None))]
    fn __dlpack__<'py>(
        slf: &Bound<'py, Self>,
        stream: Option<&Bound<'py, PyAny>>,
        max_version: Option<&Bound<'py, PyAny>>,
        dl_device: Option<&Bound<'py, PyAny>>,
        copy: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let copy_flag = copy
            .filter(|c| !c.is_none())
            .map(|c| c.is_truthy())
            .transpose()?;
        if let Some(capsule) =
            interop::dlpack_export(slf, stream, max_version, dl_device, copy_flag)?
        {
            return Ok(capsule.into_bound(slf.py()));
        }
        helpers(slf.py())?.call_method1("dlpack", (slf, stream, max_version, dl_device, copy))
    }

    /// `(device_type, device_id)` for DLPack: `(1, 0)` on the CPU.
    fn __dlpack_device__(&self) -> (u32, u32) {
        match self.inner.device() {
            tagstream::Device::Cpu => (1, 0),
            // kDLCUDA; the index fits: device ordinals are small.
            tagstream::Device::Cuda(i) => (2, u32::try_from(i).unwrap_or(u32::MAX)),
        }
    }

    // ---- devices and dtypes ----------------------------------------------------------------

    /// A copy on `device` or with `dtype` (torch's `.to`): `t.to("cuda")`, `t.to(float16)`,
    /// `t.to(device="cpu", dtype=tagstream.float32)`.
    #[pyo3(signature = (*args, device=None, dtype=None))]
    fn to(
        &self,
        args: &Bound<'_, PyTuple>,
        device: Option<&Bound<'_, PyAny>>,
        dtype: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyTensor> {
        let mut dev = kind_or_device(device)?;
        let mut kind = kind_arg(dtype)?;
        for a in args.iter() {
            if a.cast::<PyDType>().is_ok() || kind_like(&a) {
                kind = Some(extract_kind(&a)?);
            } else {
                dev = Some(device::parse(&a.str()?.to_cow()?)?);
            }
        }
        let mut t = self.inner.clone();
        if let Some(k) = kind
            && k != Kind::from_rust(t.dtype())
        {
            t = t.to_dtype(k.to_rust()).or_raise()?;
        }
        match dev {
            Some(d) => placed(t, d),
            None => Ok(PyTensor::wrap(t)),
        }
    }

    /// This tensor on the default accelerator: CUDA when available, else it stays on the CPU.
    #[pyo3(signature = (device=None))]
    fn npu(&self, device: Option<usize>) -> PyResult<PyTensor> {
        let dev = match device {
            Some(i) => Dev::Cuda(i),
            None => Dev::DefaultAccelerator,
        };
        placed(self.inner.clone(), dev)
    }

    /// This tensor on CUDA device `device` (default 0); `NoGpuError` where there is none.
    #[pyo3(signature = (device=None))]
    fn cuda(&self, device: Option<usize>) -> PyResult<PyTensor> {
        placed(self.inner.clone(), Dev::Cuda(device.unwrap_or(0)))
    }

    /// This tensor on the CPU.
    fn cpu(&self) -> PyResult<PyTensor> {
        placed(self.inner.clone(), Dev::Cpu)
    }

    /// A copy converted to `dtype` (the Rust `to_dtype`).
    fn to_dtype(&self, dtype: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        let d = extract_kind(dtype)?.to_rust();
        Ok(PyTensor::wrap(self.inner.to_dtype(d).or_raise()?))
    }

    /// `to_dtype(float32)`.
    fn float(&self) -> PyResult<PyTensor> {
        Ok(PyTensor::wrap(self.inner.to_dtype(DType::F32).or_raise()?))
    }

    /// `to_dtype(float16)`.
    fn half(&self) -> PyResult<PyTensor> {
        Ok(PyTensor::wrap(self.inner.to_dtype(DType::F16).or_raise()?))
    }

    /// `to_dtype(bfloat16)`.
    fn bfloat16(&self) -> PyResult<PyTensor> {
        Ok(PyTensor::wrap(self.inner.to_dtype(DType::BF16).or_raise()?))
    }

    // ---- ops (named like the Rust ops) ----------------------------------------------------

    /// Elementwise `self + other` (shapes broadcast; a number too).
    fn add(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        required(
            py,
            binary(py, &self.inner, other, Tensor::add, false)?,
            other,
        )
    }
    /// Elementwise `self - other`.
    fn sub(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        required(
            py,
            binary(py, &self.inner, other, Tensor::sub, false)?,
            other,
        )
    }
    /// Elementwise `self * other`.
    fn mul(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        required(
            py,
            binary(py, &self.inner, other, Tensor::mul, false)?,
            other,
        )
    }
    /// Elementwise `self / other`.
    fn div(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        required(
            py,
            binary(py, &self.inner, other, Tensor::div, false)?,
            other,
        )
    }
    /// Matrix product: `[m, k] @ [k, n]`, with an optional leading batch dim.
    fn matmul(&self, other: PyRef<'_, PyTensor>) -> PyResult<PyTensor> {
        Ok(PyTensor::wrap(self.inner.matmul(&other.inner).or_raise()?))
    }
    /// Matrix product of two 2-D tensors.
    fn mm(&self, other: PyRef<'_, PyTensor>) -> PyResult<PyTensor> {
        Ok(PyTensor::wrap(
            mm_checked(&self.inner, &other.inner).or_raise()?,
        ))
    }
    /// `max(x, 0)`.
    fn relu(&self) -> PyResult<PyTensor> {
        Ok(PyTensor::wrap(self.inner.relu().or_raise()?))
    }
    /// `x * sigmoid(x)`.
    fn silu(&self) -> PyResult<PyTensor> {
        Ok(PyTensor::wrap(self.inner.silu().or_raise()?))
    }
    /// GELU (erf form).
    fn gelu(&self) -> PyResult<PyTensor> {
        Ok(PyTensor::wrap(self.inner.gelu().or_raise()?))
    }
    /// `e^x`.
    fn exp(&self) -> PyResult<PyTensor> {
        Ok(PyTensor::wrap(self.inner.exp().or_raise()?))
    }
    /// Softmax over `dim` (the last by default; negative counts from the end).
    #[pyo3(signature = (dim=-1))]
    fn softmax(&self, dim: isize) -> PyResult<PyTensor> {
        Ok(PyTensor::wrap(
            softmax_checked(&self.inner, dim).or_raise()?,
        ))
    }
    /// The Rust name of `softmax(dim)`.
    fn softmax_dim(&self, dim: isize) -> PyResult<PyTensor> {
        self.softmax(dim)
    }
    /// The same elements under a new shape (`-1` inferred once); copy-free.
    #[pyo3(signature = (*shape))]
    fn reshape(&self, shape: &Bound<'_, PyTuple>) -> PyResult<PyTensor> {
        let shape = reshape_shape(&self.inner, &signed_sizes(shape)?)?;
        Ok(PyTensor::wrap(self.inner.reshape(&shape).or_raise()?))
    }
    /// torch's `view`: here the same as `reshape` (tensors are always contiguous).
    #[pyo3(signature = (*shape))]
    fn view(&self, shape: &Bound<'_, PyTuple>) -> PyResult<PyTensor> {
        self.reshape(shape)
    }
    /// A size-1 dim inserted at `dim` (negative counts from the end, as torch); copy-free.
    fn unsqueeze(&self, dim: isize) -> PyResult<PyTensor> {
        let d = norm_dim(&self.inner, dim, 1, "unsqueeze").or_raise()?;
        Ok(PyTensor::wrap(self.inner.unsqueeze(d).or_raise()?))
    }
    /// Dims `dim0` and `dim1` swapped (a copy unless the element order is unchanged).
    fn transpose(&self, dim0: isize, dim1: isize) -> PyResult<PyTensor> {
        let d0 = norm_dim(&self.inner, dim0, 0, "transpose").or_raise()?;
        let d1 = norm_dim(&self.inner, dim1, 0, "transpose").or_raise()?;
        Ok(PyTensor::wrap(self.inner.transpose(d0, d1).or_raise()?))
    }
    /// Indices `start .. start + length` of `dim` (negative `dim`/`start` count from the end).
    fn narrow(&self, dim: isize, start: isize, length: usize) -> PyResult<PyTensor> {
        let d = norm_dim(&self.inner, dim, 0, "narrow").or_raise()?;
        let n = self.inner.shape()[d] as isize;
        let s = if start < 0 { start + n } else { start };
        let s = usize::try_from(s).map_err(|_| {
            PyValueError::new_err(format!("start {start} is out of range for size {n}"))
        })?;
        Ok(PyTensor::wrap(self.inner.narrow(d, s, length).or_raise()?))
    }
    /// The tensor repeated to `sizes` (torch's rules; `-1` keeps a size); a copy.
    #[pyo3(signature = (*sizes))]
    fn expand(&self, sizes: &Bound<'_, PyTuple>) -> PyResult<PyTensor> {
        let shape = expand_shape(&self.inner, &signed_sizes(sizes)?)?;
        Ok(PyTensor::wrap(self.inner.expand(&shape).or_raise()?))
    }
    /// Elementwise `self + value`, computed in float32 and rounded once to the dtype.
    fn add_scalar(&self, value: f32) -> PyResult<PyTensor> {
        Ok(PyTensor::wrap(self.inner.add_scalar(value).or_raise()?))
    }
    /// Elementwise `self * value`, computed in float32 and rounded once to the dtype.
    fn mul_scalar(&self, value: f32) -> PyResult<PyTensor> {
        Ok(PyTensor::wrap(self.inner.mul_scalar(value).or_raise()?))
    }
    /// Sum over `dim` (negative counts from the end), kept as size 1 when `keepdim`.
    #[pyo3(signature = (dim, keepdim=false))]
    fn sum(&self, dim: isize, keepdim: bool) -> PyResult<PyTensor> {
        let t = reduce_checked(&self.inner, dim, keepdim, Tensor::sum, "sum").or_raise()?;
        Ok(PyTensor::wrap(t))
    }
    /// Mean over `dim` (negative counts from the end), kept as size 1 when `keepdim`.
    #[pyo3(signature = (dim, keepdim=false))]
    fn mean(&self, dim: isize, keepdim: bool) -> PyResult<PyTensor> {
        let t = reduce_checked(&self.inner, dim, keepdim, Tensor::mean, "mean").or_raise()?;
        Ok(PyTensor::wrap(t))
    }
    /// Largest value over `dim` (values only, unlike torch's `(values, indices)`).
    #[pyo3(signature = (dim, keepdim=false))]
    fn max(&self, dim: isize, keepdim: bool) -> PyResult<PyTensor> {
        let t = reduce_checked(&self.inner, dim, keepdim, Tensor::max, "max").or_raise()?;
        Ok(PyTensor::wrap(t))
    }
    /// RMS normalisation over the last dim, scaled by `weight`.
    #[pyo3(signature = (weight, eps=1e-6))]
    fn rms_norm(&self, weight: PyRef<'_, PyTensor>, eps: f32) -> PyResult<PyTensor> {
        Ok(PyTensor::wrap(
            self.inner.rms_norm(&weight.inner, eps).or_raise()?,
        ))
    }

    /// The `k` largest values over the last dim, largest first, and their positions as an int32
    /// tensor: `(values, indices)` (torch's `topk`; ties keep the lower position first, NaN
    /// counts as the largest, R6.12). `dim` must name the last dim; `largest=False` is not
    /// supported; `sorted` is accepted (the values always come sorted).
    #[pyo3(signature = (k, dim=-1, largest=true, sorted=true))]
    fn topk<'py>(
        &self,
        py: Python<'py>,
        k: isize,
        dim: isize,
        largest: bool,
        sorted: bool,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let _ = sorted; // largest-first is a valid order for `sorted=False` too
        if !largest {
            return Err(PyNotImplementedError::new_err(
                "topk(largest=False) is not supported; negate the input (values then come \
                 negated)",
            ));
        }
        let (values, indices) = topk_checked(&self.inner, k, dim).or_raise()?;
        PyTuple::new(
            py,
            [
                Py::new(py, PyTensor::wrap(values))?,
                Py::new(py, PyTensor::wrap(indices))?,
            ],
        )
    }
    /// `out[i][j] = self[i][index[i][j]]` along `dim` (torch's `gather`, negative `dim` counts
    /// from the end): `index` is an int32 tensor of `self`'s rank and of `self`'s size in every
    /// other dim; the output has `index`'s shape. An index outside the dim fails the output:
    /// reading it raises `ExecutionFailedError` (R3.12).
    fn gather(&self, dim: isize, index: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        let d = norm_dim(&self.inner, dim, 0, "gather").or_raise()?;
        let index = index_arg(index, "gather")?;
        Ok(PyTensor::wrap(self.inner.gather(d, &index).or_raise()?))
    }
    /// A copy with `src` written at `index` along `dim` (torch's out-of-place `scatter`; `src`
    /// a tensor of `index`'s shape and `self`'s dtype, or a number as `value=`). Of repeated
    /// positions the last in `index`'s row-major order wins (R6.12).
    #[pyo3(signature = (dim, index, src=None, *, value=None))]
    fn scatter(
        &self,
        dim: isize,
        index: &Bound<'_, PyAny>,
        src: Option<&Bound<'_, PyAny>>,
        value: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyTensor> {
        let d = norm_dim(&self.inner, dim, 0, "scatter").or_raise()?;
        let index = index_arg(index, "scatter")?;
        let src = scatter_src(&self.inner, &index, src, value)?;
        Ok(PyTensor::wrap(
            self.inner.scatter(d, &index, &src).or_raise()?,
        ))
    }
    /// The slices at positions `index` (a 1-D int32 tensor) along `dim` (torch's
    /// `index_select`; with `dim=0` an embedding lookup).
    fn index_select(&self, dim: isize, index: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        let d = norm_dim(&self.inner, dim, 0, "index_select").or_raise()?;
        let index = index_arg(index, "index_select")?;
        Ok(PyTensor::wrap(
            self.inner.index_select(d, &index).or_raise()?,
        ))
    }

    // ---- operators -----------------------------------------------------------------------

    fn __add__(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        binary(py, &self.inner, o, Tensor::add, false)
    }
    fn __radd__(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        binary(py, &self.inner, o, Tensor::add, true)
    }
    fn __sub__(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        binary(py, &self.inner, o, Tensor::sub, false)
    }
    fn __rsub__(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        binary(py, &self.inner, o, Tensor::sub, true)
    }
    fn __mul__(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        binary(py, &self.inner, o, Tensor::mul, false)
    }
    fn __rmul__(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        binary(py, &self.inner, o, Tensor::mul, true)
    }
    fn __truediv__(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        binary(py, &self.inner, o, Tensor::div, false)
    }
    fn __rtruediv__(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        binary(py, &self.inner, o, Tensor::div, true)
    }
    fn __matmul__(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        match o.cast::<PyTensor>() {
            Ok(b) => Ok(Py::new(
                py,
                PyTensor::wrap(self.inner.matmul(&b.get().inner).or_raise()?),
            )?
            .into_any()),
            Err(_) => Ok(py.NotImplemented()),
        }
    }
    fn __neg__(&self) -> PyResult<PyTensor> {
        let m = Tensor::full(self.inner.shape(), -1.0, self.inner.dtype()).or_raise()?;
        Ok(PyTensor::wrap(self.inner.mul(&m).or_raise()?))
    }
}

fn required(py: Python<'_>, r: Py<PyAny>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    if r.bind(py).is(py.NotImplemented()) {
        return Err(PyTypeError::new_err(format!(
            "expected a Tensor or a number, got {}",
            type_name(other)
        )));
    }
    Ok(r)
}

/// Whether a positional `.to(...)` argument names a dtype rather than a device.
fn kind_like(a: &Bound<'_, PyAny>) -> bool {
    match a.str().and_then(|s| s.extract::<String>()) {
        Ok(s) => device::parse(&s).is_err() && Kind::parse(&s).is_ok(),
        Err(_) => false,
    }
}

fn kind_or_device(device: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Dev>> {
    match device {
        None => Ok(None),
        Some(d) if d.is_none() => Ok(None),
        Some(d) => extract_device(Some(d)).map(Some),
    }
}

fn tensor_arg(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Tensor> {
    obj.cast::<PyTensor>()
        .map(|t| t.get().inner.clone())
        .map_err(|_| {
            PyTypeError::new_err(format!(
                "{what}: expected a tagstream.Tensor, got {}",
                type_name(obj)
            ))
        })
}

// ---- module functions ----------------------------------------------------------------------

/// A tensor from data (a numpy array, nested lists, a number, or a Tensor), copied.
///
/// `dtype` defaults to the data's own (float16 stays float16, other floats become float32,
/// integers int32); `device` is `"cpu"` (or `"cuda"`, `"npu"`).
#[pyfunction]
#[pyo3(signature = (data, dtype=None, device=None))]
pub(crate) fn tensor(
    data: &Bound<'_, PyAny>,
    dtype: Option<&Bound<'_, PyAny>>,
    device: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyTensor> {
    let dev = extract_device(device)?;
    let t = tensor_from_any(data, kind_arg(dtype)?)?;
    placed(t, dev)
}

/// A tensor with a numpy array's values and dtype, sharing its memory when it can.
///
/// A C-contiguous, aligned float32, float16 or int32 array is not copied: the tensor reads the
/// array's memory (and keeps the array alive), so **the array must not be written while
/// tagstream may use it** (any op issued on the tensor, until its results are read). Other
/// arrays (strided, other dtypes, byte-swapped) are copied, as `tagstream.tensor` always does.
#[pyfunction]
pub(crate) fn from_numpy(array: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
    let np = numpy(array.py())?;
    if !array.is_instance(&np.getattr("ndarray")?)? {
        return Err(PyTypeError::new_err(format!(
            "from_numpy: expected a numpy.ndarray, got {}",
            type_name(array)
        )));
    }
    if let Some(t) = interop::from_numpy_shared(array)? {
        return Ok(PyTensor::wrap(t));
    }
    Ok(PyTensor::wrap(tensor_from_any(array, None)?))
}

/// A tensor of zeros: `zeros(2, 3)` or `zeros((2, 3))`.
#[pyfunction]
#[pyo3(signature = (*shape, dtype=None, device=None))]
pub(crate) fn zeros(
    py: Python<'_>,
    shape: &Bound<'_, PyTuple>,
    dtype: Option<&Bound<'_, PyAny>>,
    device: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyTensor> {
    let shape = shape_from_args(shape)?;
    let d = kind_arg(dtype)?.unwrap_or(Kind::F32).to_rust();
    let dev = extract_device(device)?;
    placed(py.detach(|| Tensor::zeros(&shape, d)).or_raise()?, dev)
}

/// A tensor of `size` filled with `fill_value` (rounded to `dtype`).
#[pyfunction]
#[pyo3(signature = (size, fill_value, dtype=None, device=None))]
pub(crate) fn full(
    py: Python<'_>,
    size: &Bound<'_, PyAny>,
    fill_value: f32,
    dtype: Option<&Bound<'_, PyAny>>,
    device: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyTensor> {
    let shape = shape_from_seq(size)?;
    let d = kind_arg(dtype)?.unwrap_or(Kind::F32).to_rust();
    let dev = extract_device(device)?;
    placed(
        py.detach(|| Tensor::full(&shape, fill_value, d))
            .or_raise()?,
        dev,
    )
}

/// The process-wide generator behind `randn` without a seed (SplitMix64 over the seed).
static GENERATOR: Mutex<u64> = Mutex::new(0x5EED_7A65_7374_7265);

fn next_seed() -> u64 {
    let mut state = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Resets the process-wide generator that `randn` uses without a seed.
#[pyfunction]
pub(crate) fn manual_seed(seed: u64) {
    *GENERATOR.lock().unwrap_or_else(|e| e.into_inner()) = seed;
}

/// Standard-normal samples: `randn(2, 3)` or `randn((2, 3))`.
///
/// Without `seed`, draws from the process-wide generator (new values each call, reset by
/// `manual_seed`); with `seed`, the values of the Rust `Tensor::randn(shape, dtype, seed)`.
#[pyfunction]
#[pyo3(signature = (*shape, dtype=None, seed=None, device=None))]
pub(crate) fn randn(
    py: Python<'_>,
    shape: &Bound<'_, PyTuple>,
    dtype: Option<&Bound<'_, PyAny>>,
    seed: Option<u64>,
    device: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyTensor> {
    let shape = shape_from_args(shape)?;
    let d = kind_arg(dtype)?.unwrap_or(Kind::F32).to_rust();
    let dev = extract_device(device)?;
    let seed = seed.unwrap_or_else(next_seed);
    placed(
        py.detach(|| Tensor::randn(&shape, d, seed)).or_raise()?,
        dev,
    )
}

macro_rules! binary_fn {
    ($name:ident, $op:expr, $doc:literal) => {
        #[doc = $doc]
        #[pyfunction]
        pub(crate) fn $name(
            py: Python<'_>,
            input: &Bound<'_, PyAny>,
            other: &Bound<'_, PyAny>,
        ) -> PyResult<Py<PyAny>> {
            let a = tensor_arg(input, stringify!($name))?;
            required(py, binary(py, &a, other, $op, false)?, other)
        }
    };
}

binary_fn!(
    add,
    Tensor::add,
    "Elementwise `input + other` (shapes broadcast; a number too)."
);
binary_fn!(
    sub,
    Tensor::sub,
    "Elementwise `input - other` (shapes broadcast; a number too)."
);
binary_fn!(
    mul,
    Tensor::mul,
    "Elementwise `input * other` (shapes broadcast; a number too)."
);
binary_fn!(
    div,
    Tensor::div,
    "Elementwise `input / other` (shapes broadcast; a number too)."
);

/// Matrix product: `[m, k] x [k, n]`, with an optional leading batch dim.
#[pyfunction]
pub(crate) fn matmul(input: PyRef<'_, PyTensor>, other: PyRef<'_, PyTensor>) -> PyResult<PyTensor> {
    Ok(PyTensor::wrap(input.inner.matmul(&other.inner).or_raise()?))
}

/// Matrix product of two 2-D tensors (torch's `mm`).
#[pyfunction]
pub(crate) fn mm(input: PyRef<'_, PyTensor>, mat2: PyRef<'_, PyTensor>) -> PyResult<PyTensor> {
    Ok(PyTensor::wrap(
        mm_checked(&input.inner, &mat2.inner).or_raise()?,
    ))
}

/// `max(x, 0)` elementwise.
#[pyfunction]
pub(crate) fn relu(input: PyRef<'_, PyTensor>) -> PyResult<PyTensor> {
    input.relu()
}

/// `x * sigmoid(x)` elementwise.
#[pyfunction]
pub(crate) fn silu(input: PyRef<'_, PyTensor>) -> PyResult<PyTensor> {
    input.silu()
}

/// GELU (erf form) elementwise.
#[pyfunction]
pub(crate) fn gelu(input: PyRef<'_, PyTensor>) -> PyResult<PyTensor> {
    input.gelu()
}

/// `e^x` elementwise.
#[pyfunction]
pub(crate) fn exp(input: PyRef<'_, PyTensor>) -> PyResult<PyTensor> {
    input.exp()
}

/// Softmax over `dim` (the last by default).
#[pyfunction]
#[pyo3(signature = (input, dim=-1))]
pub(crate) fn softmax(input: PyRef<'_, PyTensor>, dim: isize) -> PyResult<PyTensor> {
    input.softmax(dim)
}

/// `tensors` joined along `dim` (negative counts from the end), as torch's `cat`.
#[pyfunction]
#[pyo3(signature = (tensors, dim=0))]
pub(crate) fn cat(tensors: Vec<PyRef<'_, PyTensor>>, dim: isize) -> PyResult<PyTensor> {
    let parts: Vec<Tensor> = tensors.iter().map(|t| t.inner.clone()).collect();
    let d = match parts.first() {
        Some(t) => norm_dim(t, dim, 0, "cat").or_raise()?,
        None => 0,
    };
    Ok(PyTensor::wrap(Tensor::cat(&parts, d).or_raise()?))
}

/// The `k` largest values of `input` over the last dim and their int32 positions:
/// `(values, indices)` (torch's `topk`).
#[pyfunction]
#[pyo3(signature = (input, k, dim=-1, largest=true, sorted=true))]
pub(crate) fn topk<'py>(
    py: Python<'py>,
    input: PyRef<'_, PyTensor>,
    k: isize,
    dim: isize,
    largest: bool,
    sorted: bool,
) -> PyResult<Bound<'py, PyTuple>> {
    input.topk(py, k, dim, largest, sorted)
}

/// Values of `input` at the int32 positions `index` along `dim` (torch's `gather`).
#[pyfunction]
pub(crate) fn gather(
    input: PyRef<'_, PyTensor>,
    dim: isize,
    index: &Bound<'_, PyAny>,
) -> PyResult<PyTensor> {
    input.gather(dim, index)
}

/// A copy of `input` with `src` written at the int32 positions `index` along `dim` (torch's
/// out-of-place `scatter`).
#[pyfunction]
#[pyo3(signature = (input, dim, index, src=None, *, value=None))]
pub(crate) fn scatter(
    input: PyRef<'_, PyTensor>,
    dim: isize,
    index: &Bound<'_, PyAny>,
    src: Option<&Bound<'_, PyAny>>,
    value: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyTensor> {
    input.scatter(dim, index, src, value)
}

/// The slices of `input` at the int32 positions `index` (1-D) along `dim` (torch's
/// `index_select`).
#[pyfunction]
pub(crate) fn index_select(
    input: PyRef<'_, PyTensor>,
    dim: isize,
    index: &Bound<'_, PyAny>,
) -> PyResult<PyTensor> {
    input.index_select(dim, index)
}

/// Sum of `input` over `dim` (torch's `sum(input, dim, keepdim)`).
#[pyfunction]
#[pyo3(signature = (input, dim, keepdim=false))]
pub(crate) fn sum(input: PyRef<'_, PyTensor>, dim: isize, keepdim: bool) -> PyResult<PyTensor> {
    input.sum(dim, keepdim)
}

/// Mean of `input` over `dim` (torch's `mean(input, dim, keepdim)`).
#[pyfunction]
#[pyo3(signature = (input, dim, keepdim=false))]
pub(crate) fn mean(input: PyRef<'_, PyTensor>, dim: isize, keepdim: bool) -> PyResult<PyTensor> {
    input.mean(dim, keepdim)
}

/// Largest values of `input` over `dim` (values only).
#[pyfunction]
#[pyo3(signature = (input, dim, keepdim=false))]
pub(crate) fn max(input: PyRef<'_, PyTensor>, dim: isize, keepdim: bool) -> PyResult<PyTensor> {
    input.max(dim, keepdim)
}

/// RMS normalisation over the last dim: `x / sqrt(mean(x^2) + eps) * weight`.
#[pyfunction]
#[pyo3(signature = (input, weight, eps=1e-6))]
pub(crate) fn rms_norm(
    input: PyRef<'_, PyTensor>,
    weight: PyRef<'_, PyTensor>,
    eps: f32,
) -> PyResult<PyTensor> {
    input.rms_norm(weight, eps)
}

/// A copy of `input` converted to `dtype`.
#[pyfunction]
pub(crate) fn to_dtype(input: PyRef<'_, PyTensor>, dtype: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
    input.to_dtype(dtype)
}

/// Whether a CUDA device can be used (never raises).
#[pyfunction]
pub(crate) fn cuda_is_available() -> bool {
    device::cuda_is_available()
}
