//! `tagstream.compile(fn, mode=..., capture_limit=...)`: a Python callable over
//! `tagstream::Compiled`.
//!
//! The Rust closure owns the Python function (`Py<PyAny>` is `Send + 'static`) and attaches to
//! the interpreter when Rust calls it (capture or eager run). `Compiled::run` itself runs with
//! the GIL released, so other Python threads keep running during a capture's checks or a
//! replay, and the closure can take the GIL back. A Python exception raised by the function is
//! kept beside the Rust error it becomes and re-raised unchanged to the caller.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use tagstream::{CompileConfig, Compiled, DType, Error, Mode, Tensor};

use crate::errors::{rust_error_of, to_py};
use crate::events::thread_token;
use crate::tensor::{PyTensor, type_name};

/// How the function's result was shaped, to rebuild it around the Rust outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutKind {
    Single,
    Tuple,
    List,
}

type Signature = Vec<(Vec<usize>, DType)>;

fn signature(xs: &[Tensor]) -> Signature {
    xs.iter().map(|t| (t.shape().to_vec(), t.dtype())).collect()
}

#[derive(Default)]
struct Kinds {
    /// The one kind seen so far, while every call returned the same kind.
    uniform: Option<OutKind>,
    mixed: bool,
    by_signature: HashMap<Signature, OutKind>,
}

#[derive(Default)]
struct Shared {
    /// The Python exception of the latest failed call of the function.
    error: Mutex<Option<PyErr>>,
    kinds: Mutex<Kinds>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Calls the Python function on `xs`; its tensors and the shape of its result.
fn call_python(py: Python<'_>, f: &Py<PyAny>, xs: &[Tensor]) -> PyResult<(OutKind, Vec<Tensor>)> {
    let args = xs
        .iter()
        .map(|t| Py::new(py, PyTensor::wrap(t.clone())))
        .collect::<PyResult<Vec<_>>>()?;
    let out = f.bind(py).call1(PyTuple::new(py, args)?)?;
    let tensor =
        |o: &Bound<'_, PyAny>| -> PyResult<Tensor> {
            o.cast::<PyTensor>().map(|t| t.get().inner.clone()).map_err(|_| {
            PyTypeError::new_err(format!(
                "a compiled function must return a Tensor or a tuple or list of Tensors; it \
                 returned a {} among them",
                type_name(o)
            ))
        })
        };
    if let Ok(t) = out.cast::<PyTensor>() {
        return Ok((OutKind::Single, vec![t.get().inner.clone()]));
    }
    let kind = if out.cast::<PyTuple>().is_ok() {
        OutKind::Tuple
    } else if out.cast::<PyList>().is_ok() {
        OutKind::List
    } else {
        return Err(PyTypeError::new_err(format!(
            "a compiled function must return a Tensor or a tuple or list of Tensors, not {}",
            type_name(&out)
        )));
    };
    let items = out
        .try_iter()?
        .map(|o| tensor(&o?))
        .collect::<PyResult<Vec<_>>>()?;
    Ok((kind, items))
}

/// A compiled Python function: call it with tensors as positional arguments.
#[pyclass(frozen, module = "tagstream", name = "Compiled")]
pub(crate) struct PyCompiled {
    inner: Mutex<Compiled>,
    shared: Arc<Shared>,
    /// The thread running a call (0: none), to refuse a recursive call instead of deadlocking.
    running: AtomicU64,
    /// Nanoseconds the latest `Compiled::run` took (for examples/bench.py's overhead figure).
    last_run_ns: AtomicU64,
    function: Py<PyAny>,
    mode: &'static str,
}

/// Compiles `fn` (see `tagstream.compile`).
#[pyfunction]
#[pyo3(name = "_compile", signature = (function, mode="reduce-overhead", capture_limit=64))]
pub(crate) fn compile(
    py: Python<'_>,
    function: Py<PyAny>,
    mode: &str,
    capture_limit: usize,
) -> PyResult<PyCompiled> {
    if !function.bind(py).is_callable() {
        return Err(PyTypeError::new_err(
            "compile: the function must be callable",
        ));
    }
    let (mode, name) = match mode {
        "reduce-overhead" => (Mode::ReduceOverhead, "reduce-overhead"),
        "eager" => (Mode::Eager, "eager"),
        other => {
            return Err(PyValueError::new_err(format!(
                "compile: unknown mode \"{other}\"; use \"reduce-overhead\" or \"eager\""
            )));
        }
    };
    let shared = Arc::new(Shared::default());
    let f = function.clone_ref(py);
    let sh = shared.clone();
    let closure = move |xs: &[Tensor]| -> tagstream::Result<Vec<Tensor>> {
        Python::attach(|py| match call_python(py, &f, xs) {
            Ok((kind, outs)) => {
                let mut k = lock(&sh.kinds);
                match k.uniform {
                    None if !k.mixed => k.uniform = Some(kind),
                    Some(u) if u != kind => {
                        k.mixed = true;
                        k.uniform = None;
                    }
                    _ => {}
                }
                k.by_signature.insert(signature(xs), kind);
                Ok(outs)
            }
            Err(err) => {
                let rust = rust_error_of(py, &err).unwrap_or_else(|| Error::ExecutionFailed {
                    op: "compiled Python function".into(),
                    stream: tagstream::scope::current_stream(),
                    message: format!("it raised {err}"),
                });
                *lock(&sh.error) = Some(err);
                Err(rust)
            }
        })
    };
    let config = CompileConfig::default()
        .mode(mode)
        .capture_limit(capture_limit);
    Ok(PyCompiled {
        inner: Mutex::new(tagstream::compile(closure, config)),
        shared,
        running: AtomicU64::new(0),
        last_run_ns: AtomicU64::new(0),
        function,
        mode: name,
    })
}

#[pymethods]
impl PyCompiled {
    #[pyo3(signature = (*args, **kwargs))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if kwargs.is_some_and(|k| !k.is_empty()) {
            return Err(PyTypeError::new_err(
                "a compiled function takes tensors as positional arguments only",
            ));
        }
        let inputs = args
            .iter()
            .enumerate()
            .map(|(i, a)| {
                a.cast::<PyTensor>()
                    .map(|t| t.get().inner.clone())
                    .map_err(|_| {
                        PyTypeError::new_err(format!(
                            "a compiled function takes tensors; argument {i} is a {}",
                            type_name(&a)
                        ))
                    })
            })
            .collect::<PyResult<Vec<_>>>()?;
        let me = thread_token();
        if self.running.load(Ordering::Acquire) == me {
            return Err(PyRuntimeError::new_err(
                "a compiled function was called from inside its own call",
            ));
        }
        let result = py.detach(|| {
            // The GIL is released before waiting for the lock: a call in progress on another
            // thread may need the GIL to finish.
            let mut compiled = lock(&self.inner);
            self.running.store(me, Ordering::Release);
            *lock(&self.shared.error) = None;
            let start = Instant::now();
            let r = compiled.run(&inputs);
            let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.last_run_ns.store(ns, Ordering::Relaxed);
            self.running.store(0, Ordering::Release);
            r
        });
        let outputs = match result {
            Ok(o) => o,
            Err(e) => {
                return Err(match lock(&self.shared.error).take() {
                    Some(py_err) => py_err,
                    None => to_py(py, e),
                });
            }
        };
        let kind = {
            let k = lock(&self.shared.kinds);
            match k.uniform {
                Some(u) => u,
                None => k
                    .by_signature
                    .get(&signature(&inputs))
                    .copied()
                    .unwrap_or(OutKind::Tuple),
            }
        };
        let wrapped = outputs
            .into_iter()
            .map(|t| Py::new(py, PyTensor::wrap(t)))
            .collect::<PyResult<Vec<_>>>()?;
        match kind {
            OutKind::Single if wrapped.len() == 1 => Ok(wrapped
                .into_iter()
                .next()
                .map(|t| t.into_bound(py).into_any())
                .unwrap_or_else(|| py.None().into_bound(py))),
            OutKind::List => Ok(PyList::new(py, wrapped)?.into_any()),
            _ => Ok(PyTuple::new(py, wrapped)?.into_any()),
        }
    }

    /// Counters: `captures`, `replays`, `eager_runs`, `fell_back_to_eager`.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = py.detach(|| lock(&self.inner).stats());
        let d = PyDict::new(py);
        d.set_item("captures", s.captures)?;
        d.set_item("replays", s.replays)?;
        d.set_item("eager_runs", s.eager_runs)?;
        d.set_item("fell_back_to_eager", s.fell_back_to_eager)?;
        Ok(d)
    }

    /// The per-stream entry order of the graph used by the latest call (`None` if it ran
    /// eagerly).
    fn graph_dump(&self, py: Python<'_>) -> Option<String> {
        py.detach(|| lock(&self.inner).graph_dump())
    }

    /// Nanoseconds the latest call spent in the Rust `Compiled::run` (for benchmarks).
    fn _last_run_ns(&self) -> u64 {
        self.last_run_ns.load(Ordering::Relaxed)
    }

    /// The compiled function.
    #[getter]
    fn __wrapped__(&self, py: Python<'_>) -> Py<PyAny> {
        self.function.clone_ref(py)
    }

    /// `"reduce-overhead"` or `"eager"`.
    #[getter]
    fn mode(&self) -> &'static str {
        self.mode
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "tagstream.Compiled({}, mode={:?})",
            self.function.bind(py).repr()?,
            self.mode
        ))
    }
}
