//! Rust errors become Python exceptions here, and only here.
//!
//! Every `tagstream::Error` variant has its own class in `tagstream._errors` (defined in Python
//! so that `ShapeMismatchError`, `DTypeMismatchError` and `InvalidValueError` can also subclass
//! `ValueError`). The exception carries the Rust message as its only argument and the Rust value
//! itself in `_rust`, so that an exception raised inside a compiled Python function reaches the
//! Rust compile machinery as the error it was (see `compiled.rs`).

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;
use tagstream::Error;

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// The Python class name of a Rust error variant.
pub(crate) fn class_name(e: &Error) -> &'static str {
    match e {
        Error::TagInUse { .. } => "TagInUseError",
        Error::InvalidTag { .. } => "InvalidTagError",
        Error::ShapeMismatch { .. } => "ShapeMismatchError",
        Error::DTypeMismatch { .. } => "DTypeMismatchError",
        Error::UnknownDType { .. } => "UnknownDTypeError",
        Error::DataRace { .. } => "DataRaceError",
        Error::WaitWithoutRecord { .. } => "WaitWithoutRecordError",
        Error::Deadlock { .. } => "DeadlockError",
        Error::HostSyncInCapture { .. } => "HostSyncInCaptureError",
        Error::UnbalancedStreamSwitch { .. } => "UnbalancedStreamSwitchError",
        Error::ForeignGraphValue { .. } => "ForeignGraphValueError",
        Error::NoGpu { .. } => "NoGpuError",
        Error::DeviceMismatch { .. } => "DeviceMismatchError",
        Error::UnknownDevice { .. } => "UnknownDeviceError",
        Error::ThreadExiting { .. } => "ThreadExitingError",
        Error::ExecutionFailed { .. } => "ExecutionFailedError",
        Error::OutOfMemory { .. } => "OutOfMemoryError",
        Error::WorkerSpawn { .. } => "WorkerSpawnError",
        Error::InvalidValue { .. } => "InvalidValueError",
        // `Error` is non-exhaustive: a variant added later still arrives as the base class.
        _ => "TagstreamError",
    }
}

/// Holds the Rust error inside the Python exception (attribute `_rust`).
#[pyclass(frozen, module = "tagstream._native", name = "_RustError")]
pub(crate) struct RustError(pub(crate) Error);

/// The exception class `name` of `tagstream._errors`.
pub(crate) fn error_class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    let m = ERRORS.get_or_try_init(py, || py.import("tagstream._errors").map(Bound::unbind))?;
    m.bind(py).getattr(name)
}

/// A Python exception of class `name` (from `tagstream._errors`) with `message`.
pub(crate) fn py_error(py: Python<'_>, name: &str, message: String) -> PyErr {
    match error_class(py, name).and_then(|cls| cls.call1((message,))) {
        Ok(inst) => PyErr::from_value(inst),
        Err(e) => e,
    }
}

/// The Python exception for a Rust error.
pub(crate) fn to_py(py: Python<'_>, e: Error) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let inst = error_class(py, class_name(&e))?.call1((e.to_string(),))?;
        inst.setattr("_rust", Py::new(py, RustError(e.clone()))?)?;
        Ok(PyErr::from_value(inst))
    };
    build().unwrap_or_else(|err| err)
}

/// The Rust error a Python exception carries, if it came from tagstream.
pub(crate) fn rust_error_of(py: Python<'_>, err: &PyErr) -> Option<Error> {
    let holder = err.value(py).getattr("_rust").ok()?;
    let holder = holder.cast::<RustError>().ok()?;
    Some(holder.get().0.clone())
}

/// `?`-friendly conversion of tagstream results.
pub(crate) trait OrRaise<T> {
    /// The value, or the pinned Python exception for the error.
    fn or_raise(self) -> PyResult<T>;
}

impl<T> OrRaise<T> for tagstream::Result<T> {
    fn or_raise(self) -> PyResult<T> {
        self.map_err(|e| Python::attach(|py| to_py(py, e)))
    }
}
