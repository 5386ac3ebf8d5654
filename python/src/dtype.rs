//! `tagstream.dtype` objects (`float32`, `float16`, `bfloat16`, `int32`) and their mapping to
//! the Rust `DType` and to numpy.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyString;
use tagstream::{DType, Error};

use crate::errors::OrRaise;

/// The element types Python can name; `I32` holds indices only (R6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    F32,
    F16,
    BF16,
    I32,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::F32, Kind::F16, Kind::BF16, Kind::I32];

    fn index(self) -> usize {
        self as usize
    }

    /// torch's name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::F32 => "float32",
            Kind::F16 => "float16",
            Kind::BF16 => "bfloat16",
            Kind::I32 => "int32",
        }
    }

    pub(crate) fn from_rust(d: DType) -> Kind {
        match d {
            DType::F32 => Kind::F32,
            DType::F16 => Kind::F16,
            DType::BF16 => Kind::BF16,
            DType::I32 => Kind::I32,
        }
    }

    /// The Rust dtype.
    pub(crate) fn to_rust(self) -> DType {
        match self {
            Kind::F32 => DType::F32,
            Kind::F16 => DType::F16,
            Kind::BF16 => DType::BF16,
            Kind::I32 => DType::I32,
        }
    }

    /// Parses torch, numpy and Rust spellings (`float16`, `torch.float16`, `f16`, `half`, ...).
    pub(crate) fn parse(name: &str) -> tagstream::Result<Kind> {
        let n = name.trim().to_ascii_lowercase();
        let n = n
            .strip_prefix("torch.")
            .or(n.strip_prefix("tagstream."))
            .unwrap_or(&n);
        match n {
            "int32" | "i32" | "int" => Ok(Kind::I32),
            other => other
                .parse::<DType>()
                .map(Kind::from_rust)
                .map_err(|_| Error::UnknownDType {
                    name: name.to_string(),
                }),
        }
    }
}

/// An element type: `tagstream.float32`, `float16`, `bfloat16` or `int32`.
#[pyclass(frozen, eq, hash, module = "tagstream", name = "dtype")]
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct PyDType {
    pub(crate) kind: Kind,
}

#[pymethods]
impl PyDType {
    /// The name as torch spells it (`"float16"`).
    #[getter]
    fn name(&self) -> &'static str {
        self.kind.name()
    }

    /// Bytes per element.
    #[getter]
    fn itemsize(&self) -> usize {
        match self.kind {
            Kind::F32 | Kind::I32 => 4,
            Kind::F16 | Kind::BF16 => 2,
        }
    }

    /// Whether this is a floating-point type.
    #[getter]
    fn is_floating_point(&self) -> bool {
        self.kind != Kind::I32
    }

    fn __repr__(&self) -> String {
        format!("tagstream.{}", self.kind.name())
    }

    fn __str__(&self) -> String {
        self.__repr__()
    }
}

static DTYPES: PyOnceLock<Vec<Py<PyDType>>> = PyOnceLock::new();

/// The one object for `kind` (so `t.dtype is tagstream.float16` holds).
pub(crate) fn dtype_object(py: Python<'_>, kind: Kind) -> PyResult<Py<PyDType>> {
    let all = DTYPES.get_or_try_init(py, || {
        Kind::ALL
            .iter()
            .map(|&kind| Py::new(py, PyDType { kind }))
            .collect::<PyResult<Vec<_>>>()
    })?;
    Ok(all[kind.index()].clone_ref(py))
}

/// A dtype argument: a `tagstream.dtype`, a name, a numpy dtype or type, or a torch dtype.
pub(crate) fn extract_kind(obj: &Bound<'_, PyAny>) -> PyResult<Kind> {
    if let Ok(d) = obj.cast::<PyDType>() {
        return Ok(d.get().kind);
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Kind::parse(&s.to_cow()?).or_raise();
    }
    // numpy dtypes and scalar types (`np.float16`, `np.dtype("float16")`); torch dtypes print
    // as `torch.float16`.
    let py = obj.py();
    let name = match crate::tensor::numpy(py)?.call_method1("dtype", (obj,)) {
        Ok(d) => d.getattr("name")?.extract::<String>()?,
        Err(_) => obj.str()?.extract::<String>()?,
    };
    Kind::parse(&name).or_raise()
}
