//! Tensors: the user's handle to values computed on streams.
//!
//! Owns [`Tensor`] (shape, dtype, a write-once buffer and the position of the entry that
//! produces it), its constructors, its op methods and the host read [`Tensor::to_vec_f32`].
//! An op method goes validate (`ops::op`) → issue on the current stream (`runtime`) → kernel
//! (on the worker); it never computes on the calling thread.

pub(crate) mod dtype;
pub(crate) mod storage;

use std::fmt;
use std::sync::Arc;

use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

pub use self::dtype::DType;
pub(crate) use self::dtype::Element;
use self::storage::{Buffer, Data, DataMut};
use crate::error::{Error, Result};
use crate::kernels::{BinaryOp, UnaryOp};
use crate::ops::op::{Meta, Op};
use crate::runtime::{Position, runtime};
use crate::scope::{current_stream_id, take_pending_error};

/// A cheap, immutable handle to an n-dimensional array on the streams.
///
/// Every op returns a new tensor at once (R3.1): the work is queued on the calling thread's
/// current stream and runs asynchronously. Only [`to_vec_f32`](Tensor::to_vec_f32) and
/// [`synchronize`](crate::synchronize) wait. Tensors are never written after they are produced
/// (R3.7), so clones can be shared freely across threads.
///
/// ```
/// use tagstream::{DType, Tensor};
/// let a = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2], DType::F16)?;
/// let b = Tensor::full(&[2, 2], 0.5, DType::F16)?;
/// let c = a.matmul(&b)?.relu()?;
/// assert_eq!(c.to_vec_f32()?, vec![1.5, 1.5, 3.5, 3.5]);
/// # Ok::<(), tagstream::Error>(())
/// ```
#[derive(Clone)]
pub struct Tensor {
    inner: Arc<Inner>,
}

struct Inner {
    shape: Vec<usize>,
    dtype: DType,
    kind: Kind,
}

/// Where a tensor's elements are.
///
/// A tensor made while a graph is being captured is only a name for a value of that graph
/// (R4.1): it has no elements, and using it outside its capture is
/// [`Error::ForeignGraphValue`]. Everything else holds a real buffer.
pub(crate) enum Kind {
    Eager {
        buffer: Arc<Buffer>,
        /// The entry that writes `buffer`; `None` for host-built tensors, which are ready on
        /// every stream (R3.6).
        producer: Option<Arc<Position>>,
    },
    Graph {
        /// The capture that made it.
        graph: u64,
        /// The value's index in that graph.
        value: usize,
        /// The name of the entry that writes it, for error messages.
        op: &'static str,
    },
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Tensor");
        d.field("shape", &self.inner.shape)
            .field("dtype", &self.inner.dtype);
        match &self.inner.kind {
            Kind::Eager { producer: None, .. } => d.field("producer", &"host"),
            Kind::Eager {
                producer: Some(p), ..
            } => d.field(
                "producer",
                &format_args!("{} (stream {}, #{})", p.op, p.stream, p.seq),
            ),
            Kind::Graph { graph, value, op } => d.field(
                "producer",
                &format_args!("{op} (value {value} of graph #{graph})"),
            ),
        };
        d.finish()
    }
}

/// Product of the dims, or `None` if it overflows or its byte size in `dtype` exceeds
/// `isize::MAX` (the most any allocation can hold).
pub(crate) fn checked_len(shape: &[usize], dtype: DType) -> Option<usize> {
    let n = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
    let bytes = n.checked_mul(dtype.size_in_bytes())?;
    (bytes <= isize::MAX as usize).then_some(n)
}

/// `len` zeroed elements for a host-built tensor; an allocator refusal is an error (R7.1).
fn host_alloc(op: &str, dtype: DType, len: usize) -> Result<Data> {
    Data::try_zeroed(dtype, len).ok_or_else(|| Error::OutOfMemory {
        op: op.to_string(),
        bytes: len * dtype.size_in_bytes(),
    })
}

impl Tensor {
    fn host(shape: &[usize], data: Data) -> Tensor {
        Tensor {
            inner: Arc::new(Inner {
                shape: shape.to_vec(),
                dtype: data.dtype(),
                kind: Kind::Eager {
                    buffer: Arc::new(Buffer::ready(data)),
                    producer: None,
                },
            }),
        }
    }

    fn len_of(
        op: &'static str,
        shape: &[usize],
        dtype: DType,
        data_len: Option<usize>,
    ) -> Result<usize> {
        checked_len(shape, dtype).ok_or_else(|| Error::ShapeMismatch {
            op,
            lhs: shape.to_vec(),
            rhs: data_len.map(|l| vec![l]).unwrap_or_default(),
            reason: format!("the tensor's size overflows (more than isize::MAX bytes of {dtype})"),
        })
    }

    /// A tensor with `data` (row-major) converted to `dtype` (R6.1 rounding).
    ///
    /// ```
    /// use tagstream::{DType, Error, Tensor};
    ///
    /// let t = Tensor::from_vec(vec![1.0, 2.0, 3.0, 70000.0], &[2, 2], DType::F16)?;
    /// assert_eq!(t.shape(), &[2, 2]);
    /// assert_eq!(t.to_vec_f32()?, vec![1.0, 2.0, 3.0, f32::INFINITY]); // beyond f16's range
    /// let err = Tensor::from_vec(vec![1.0; 3], &[2, 2], DType::F32).unwrap_err();
    /// assert!(matches!(err, Error::ShapeMismatch { op: "from_vec", .. }));
    /// # Ok::<(), tagstream::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `data.len()` is not the product of `shape`, or that product
    /// overflows (E6).
    pub fn from_vec(data: Vec<f32>, shape: &[usize], dtype: DType) -> Result<Tensor> {
        take_pending_error()?;
        let len = Self::len_of("from_vec", shape, dtype, Some(data.len()))?;
        if len != data.len() {
            return Err(Error::ShapeMismatch {
                op: "from_vec",
                lhs: shape.to_vec(),
                rhs: vec![data.len()],
                reason: format!(
                    "the shape needs {len} elements but the data has {}",
                    data.len()
                ),
            });
        }
        let data = match dtype {
            DType::F32 => Data::F32(data),
            _ => Data::from_f32(&data, dtype),
        };
        Ok(Tensor::host(shape, data))
    }

    /// A tensor of zeros.
    ///
    /// ```
    /// use tagstream::{DType, Tensor};
    ///
    /// let z = Tensor::zeros(&[2, 3], DType::BF16)?;
    /// assert_eq!((z.len(), z.dtype()), (6, DType::BF16));
    /// assert_eq!(z.to_vec_f32()?, vec![0.0; 6]);
    /// # Ok::<(), tagstream::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the size overflows; [`Error::OutOfMemory`] if the allocator
    /// refuses it.
    pub fn zeros(shape: &[usize], dtype: DType) -> Result<Tensor> {
        take_pending_error()?;
        let len = Self::len_of("zeros", shape, dtype, None)?;
        Ok(Tensor::host(shape, host_alloc("zeros", dtype, len)?))
    }

    /// A tensor filled with `value` (rounded to `dtype`).
    ///
    /// ```
    /// use tagstream::{DType, Tensor};
    ///
    /// let t = Tensor::full(&[3], 0.1, DType::F16)?;
    /// assert_eq!(t.to_vec_f32()?, vec![DType::F16.round_f32(0.1); 3]); // 0.1 rounded to f16
    /// # Ok::<(), tagstream::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the size overflows; [`Error::OutOfMemory`] if the allocator
    /// refuses it.
    pub fn full(shape: &[usize], value: f32, dtype: DType) -> Result<Tensor> {
        take_pending_error()?;
        let len = Self::len_of("full", shape, dtype, None)?;
        let mut data = host_alloc("full", dtype, len)?;
        match data.view_mut() {
            DataMut::F32(v) => v.fill(value),
            DataMut::F16(v) => v.fill(half::f16::from_f32(value)),
            DataMut::BF16(v) => v.fill(half::bf16::from_f32(value)),
        }
        Ok(Tensor::host(shape, data))
    }

    /// Standard-normal samples, deterministic for a given `seed` on every machine and thread
    /// count (R6.1): a ChaCha8 stream drawn sequentially, rounded to `dtype`.
    ///
    /// ```
    /// use tagstream::{DType, Tensor};
    ///
    /// let a = Tensor::randn(&[4, 4], DType::F32, 7)?;
    /// let b = Tensor::randn(&[4, 4], DType::F32, 7)?;
    /// assert_eq!(a.to_vec_f32()?, b.to_vec_f32()?); // same seed, same values
    /// # Ok::<(), tagstream::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the size overflows; [`Error::OutOfMemory`] if the allocator
    /// refuses it.
    pub fn randn(shape: &[usize], dtype: DType, seed: u64) -> Result<Tensor> {
        take_pending_error()?;
        let len = Self::len_of("randn", shape, dtype, None)?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut values = host_alloc("randn", DType::F32, len)?;
        if let DataMut::F32(v) = values.view_mut() {
            v.iter_mut()
                .for_each(|x| *x = StandardNormal.sample(&mut rng));
        }
        if dtype == DType::F32 {
            return Ok(Tensor::host(shape, values));
        }
        let mut data = host_alloc("randn", dtype, len)?;
        if let Data::F32(src) = &values {
            match data.view_mut() {
                DataMut::F16(o) => Element::store_f32(src, o),
                DataMut::BF16(o) => Element::store_f32(src, o),
                DataMut::F32(o) => o.copy_from_slice(src),
            }
        }
        Ok(Tensor::host(shape, data))
    }

    /// The shape. Never blocks.
    pub fn shape(&self) -> &[usize] {
        &self.inner.shape
    }

    /// The dtype. Never blocks.
    pub fn dtype(&self) -> DType {
        self.inner.dtype
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.inner.shape.iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until the tensor is computed and returns its elements as f32 (exact, R6.1).
    ///
    /// Afterwards every stream may read this tensor and everything that happened before its
    /// producer without an event (R3.6).
    ///
    /// ```
    /// use tagstream::{DType, Tensor};
    ///
    /// let x = Tensor::full(&[2], 3.0, DType::F32)?;
    /// let y = x.mul(&x)?; // returns at once; the main stream computes it
    /// assert_eq!(y.to_vec_f32()?, vec![9.0, 9.0]); // waits for it
    /// # Ok::<(), tagstream::Error>(())
    /// ```
    ///
    /// # Errors
    /// A pending [`Error::UnbalancedStreamSwitch`]; [`Error::ExecutionFailed`] if the producing
    /// entry (or one it depended on) failed on its worker.
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        take_pending_error()?;
        let (buffer, producer) = match &self.inner.kind {
            Kind::Eager { buffer, producer } => (buffer, producer),
            Kind::Graph { graph, op, .. } => {
                crate::graph::refuse_in_capture("to_vec_f32", Some(op.to_string()))?;
                return Err(Error::ForeignGraphValue {
                    op: "to_vec_f32",
                    graph: format!("#{graph} (produced by {op})"),
                });
            }
        };
        crate::graph::refuse_in_capture(
            "to_vec_f32",
            Some(
                producer
                    .as_ref()
                    .map_or("host data".to_string(), |p| p.op.to_string()),
            ),
        )?;
        if let Some(p) = producer {
            runtime().host_wait(p);
        }
        match buffer.get() {
            Some(Ok(data)) => Ok(data.to_f32_vec()),
            Some(Err(e)) => Err(e.clone()),
            None => Err(Error::ExecutionFailed {
                op: "to_vec_f32".into(),
                stream: "host".into(),
                message: "the producer completed without writing its output".into(),
            }),
        }
    }

    fn meta(&self) -> Meta<'_> {
        (&self.inner.shape, self.inner.dtype)
    }

    /// Where the elements are (a buffer, or a value of a graph being captured).
    pub(crate) fn kind(&self) -> &Kind {
        &self.inner.kind
    }

    /// A tensor with a ready buffer or one that `producer` fills.
    pub(crate) fn from_buffer(
        shape: Vec<usize>,
        dtype: DType,
        buffer: Arc<Buffer>,
        producer: Option<Arc<Position>>,
    ) -> Tensor {
        Tensor {
            inner: Arc::new(Inner {
                shape,
                dtype,
                kind: Kind::Eager { buffer, producer },
            }),
        }
    }

    /// A name for value `value` of the graph being captured (R4.1).
    pub(crate) fn graph_value(
        shape: Vec<usize>,
        dtype: DType,
        graph: u64,
        value: usize,
        op: &'static str,
    ) -> Tensor {
        Tensor {
            inner: Arc::new(Inner {
                shape,
                dtype,
                kind: Kind::Graph { graph, value, op },
            }),
        }
    }

    /// Whether two handles denote the same tensor.
    pub(crate) fn same(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Validates an op and issues it on the current stream, or records it in the graph being
    /// captured on this thread. A pending scope error of this thread (R2.8) comes first, before
    /// any validation error.
    fn launch(validate: impl FnOnce() -> Result<Op>, inputs: &[&Tensor]) -> Result<Tensor> {
        take_pending_error()?;
        let op = validate()?;
        if let Some(traced) = crate::graph::trace_op(&op, inputs) {
            return traced;
        }
        let mut operands = Vec::with_capacity(inputs.len());
        for t in inputs {
            match &t.inner.kind {
                Kind::Eager { buffer, producer } => operands.push((buffer, producer.as_ref())),
                Kind::Graph {
                    graph, op: made_by, ..
                } => {
                    return Err(Error::ForeignGraphValue {
                        op: op.name(),
                        graph: format!("#{graph} (produced by {made_by})"),
                    });
                }
            }
        }
        let shape = op.out_shape.clone();
        let dtype = op.out_dtype;
        let (buffer, producer) = runtime().launch(current_stream_id(), op, &operands)?;
        Ok(Tensor::from_buffer(shape, dtype, buffer, Some(producer)))
    }

    fn binary(&self, op: BinaryOp, rhs: &Tensor) -> Result<Tensor> {
        Self::launch(|| Op::binary(op, self.meta(), rhs.meta()), &[self, rhs])
    }

    fn unary(&self, op: UnaryOp) -> Result<Tensor> {
        Self::launch(|| Ok(Op::unary(op, self.meta())), &[self])
    }

    /// Elementwise `self + rhs`; shapes and dtypes must match (no broadcasting).
    ///
    /// ```
    /// use tagstream::{DType, Error, Tensor};
    ///
    /// let a = Tensor::from_vec(vec![1.0, 2.0], &[2], DType::F32)?;
    /// let b = Tensor::from_vec(vec![10.0, 20.0], &[2], DType::F32)?;
    /// assert_eq!(a.add(&b)?.to_vec_f32()?, vec![11.0, 22.0]);
    /// assert_eq!(b.sub(&a)?.div(&a)?.to_vec_f32()?, vec![9.0, 9.0]);
    /// // No broadcasting, no implicit conversion:
    /// let c = Tensor::zeros(&[3], DType::F32)?;
    /// assert!(matches!(a.add(&c), Err(Error::ShapeMismatch { op: "add", .. })));
    /// let h = Tensor::zeros(&[2], DType::F16)?;
    /// assert!(matches!(a.add(&h), Err(Error::DTypeMismatch { op: "add", .. })));
    /// assert_eq!(a.add(&h.to_dtype(DType::F32)?)?.to_vec_f32()?, vec![1.0, 2.0]);
    /// # Ok::<(), tagstream::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`], [`Error::DTypeMismatch`], [`Error::DataRace`].
    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Add, rhs)
    }

    /// Elementwise `self - rhs`. Errors as [`add`](Tensor::add).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`], [`Error::DTypeMismatch`], [`Error::DataRace`].
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Sub, rhs)
    }

    /// Elementwise `self * rhs`. Errors as [`add`](Tensor::add).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`], [`Error::DTypeMismatch`], [`Error::DataRace`].
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Mul, rhs)
    }

    /// Elementwise `self / rhs`. Errors as [`add`](Tensor::add).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`], [`Error::DTypeMismatch`], [`Error::DataRace`].
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Div, rhs)
    }

    /// Matrix product: `[m,k]×[k,n]`, `[b,m,k]×[b,k,n]` or `[b,m,k]×[k,n]`, accumulated in f32
    /// and rounded once (R6.3).
    ///
    /// ```
    /// use tagstream::{DType, Tensor};
    ///
    /// let a = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], DType::F32)?;
    /// let b = Tensor::from_vec(vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0], &[3, 2], DType::F32)?;
    /// let c = a.matmul(&b)?; // [2,3] x [3,2] = [2,2]
    /// assert_eq!(c.shape(), &[2, 2]);
    /// assert_eq!(c.to_vec_f32()?, vec![4.0, 5.0, 10.0, 11.0]);
    /// assert!(b.matmul(&b).is_err()); // [3,2] x [3,2]: inner dimensions differ
    /// # Ok::<(), tagstream::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] (rank, inner dimension or batch), [`Error::DTypeMismatch`],
    /// [`Error::DataRace`].
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        Self::launch(|| Op::matmul(self.meta(), rhs.meta()), &[self, rhs])
    }

    /// `max(x, 0)` elementwise (NaN stays NaN).
    ///
    /// ```
    /// use tagstream::{DType, Tensor};
    ///
    /// let x = Tensor::from_vec(vec![-1.0, 0.0, 2.0], &[3], DType::F32)?;
    /// assert_eq!(x.relu()?.to_vec_f32()?, vec![0.0, 0.0, 2.0]);
    /// assert_eq!(x.exp()?.to_vec_f32()?[1], 1.0);
    /// let s = x.silu()?.to_vec_f32()?; // silu(x) = x·sigmoid(x)
    /// assert!((s[2] - 2.0 / (1.0 + (-2.0f32).exp())).abs() < 1e-6);
    /// let g = x.gelu()?.to_vec_f32()?;
    /// assert_eq!(g[1], 0.0);
    /// # Ok::<(), tagstream::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::DataRace`].
    pub fn relu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Relu)
    }

    /// `x / (1 + exp(-x))` elementwise.
    ///
    /// # Errors
    /// [`Error::DataRace`].
    pub fn silu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Silu)
    }

    /// `0.5·x·(1 + erf(x/√2))` elementwise (the erf form, not the tanh approximation).
    ///
    /// # Errors
    /// [`Error::DataRace`].
    pub fn gelu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Gelu)
    }

    /// `exp(x)` elementwise.
    ///
    /// # Errors
    /// [`Error::DataRace`].
    pub fn exp(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Exp)
    }

    /// Softmax over the last dimension.
    ///
    /// ```
    /// use tagstream::{DType, Tensor};
    ///
    /// let x = Tensor::from_vec(vec![1.0, 1.0, 0.0, 0.0], &[2, 2], DType::F32)?;
    /// assert_eq!(x.softmax()?.to_vec_f32()?, vec![0.5; 4]); // each row sums to 1
    /// # Ok::<(), tagstream::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a rank-0 tensor; [`Error::DataRace`].
    pub fn softmax(&self) -> Result<Tensor> {
        Self::launch(|| Op::softmax(self.meta()), &[self])
    }

    /// RMS normalisation over the last dimension: `x / sqrt(mean(x²) + eps) · weight`.
    ///
    /// ```
    /// use tagstream::{DType, Tensor};
    ///
    /// let x = Tensor::from_vec(vec![3.0, -3.0, 4.0, 4.0], &[2, 2], DType::F32)?;
    /// let w = Tensor::from_vec(vec![1.0, 2.0], &[2], DType::F32)?; // one weight per column
    /// let y = x.rms_norm(&w, 0.0)?.to_vec_f32()?;
    /// assert_eq!(y, vec![1.0, -2.0, 1.0, 2.0]); // rows divided by their RMS (3 and 4)
    /// # Ok::<(), tagstream::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the rank is 0 or `weight` is not `[last dim]`;
    /// [`Error::DTypeMismatch`] if `weight` has another dtype; [`Error::DataRace`].
    pub fn rms_norm(&self, weight: &Tensor, eps: f32) -> Result<Tensor> {
        Self::launch(
            || Op::rms_norm(self.meta(), weight.meta(), eps),
            &[self, weight],
        )
    }

    /// Converts to `dtype` (R6.1: round to nearest even, overflow to ±inf).
    ///
    /// ```
    /// use tagstream::{DType, Tensor};
    ///
    /// let x = Tensor::from_vec(vec![1.0 / 3.0, 1e5], &[2], DType::F32)?;
    /// let h = x.to_dtype(DType::F16)?;
    /// assert_eq!(h.dtype(), DType::F16);
    /// assert_eq!(h.to_vec_f32()?, vec![DType::F16.round_f32(1.0 / 3.0), f32::INFINITY]);
    /// assert_eq!(h.to_dtype(DType::F32)?.to_vec_f32()?[0], 0.333_251_95); // f16 value, widened exactly
    /// # Ok::<(), tagstream::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::DataRace`].
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        Self::launch(|| Ok(Op::to_dtype(self.meta(), dtype)), &[self])
    }
}
