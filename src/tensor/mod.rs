//! Tensors: the user's handle to values computed on streams.
//!
//! Owns [`Tensor`] (shape, dtype, a write-once buffer and the position of the entry that
//! produces it), its constructors, its op methods and the host read [`Tensor::to_vec_f32`].
//! An op method goes validate (`ops::op`) → issue on the current stream (`runtime`) → kernel
//! (on the worker); it never computes on the calling thread.

pub(crate) mod external;
pub(crate) mod handle;
mod index;
pub(crate) mod storage;

use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

pub use self::handle::Tensor;
use self::storage::{Data, DataMut};
use crate::device::Device;
use crate::dispatch;
pub use crate::dtype::DType;
pub(crate) use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::kernels::{BinaryOp, ReduceOp, UnaryOp};
use crate::ops::op::{Op, Shaped};
use crate::scope::stack::take_pending_error;

/// Whether `v` is an integer `I32` holds exactly (R6.1: `from_vec` with `I32` takes integral
/// values).
fn is_i32(v: f32) -> bool {
    v.fract() == 0.0 && (-2_147_483_648.0..2_147_483_648.0).contains(&v)
}

fn not_i32(op: &'static str, value: f32, index: Option<usize>) -> Error {
    let at = index.map(|i| format!(" at index {i}")).unwrap_or_default();
    Error::InvalidValue {
        op,
        reason: format!(
            "{value}{at} is not an integer in the i32 range; I32 tensors hold indices (R6.1)"
        ),
    }
}

/// `len` zeroed elements for a host-built tensor; an allocator refusal is an error (R7.1).
fn host_alloc(op: &str, dtype: DType, len: usize) -> Result<Data> {
    Data::try_zeroed(dtype, len).ok_or_else(|| Error::OutOfMemory {
        op: op.to_string(),
        bytes: len * dtype.size_in_bytes(),
    })
}

impl Tensor {
    fn len_of(
        op: &'static str,
        shape: &[usize],
        dtype: DType,
        data_len: Option<usize>,
    ) -> Result<usize> {
        crate::dtype::checked_len(shape, dtype).ok_or_else(|| Error::ShapeMismatch {
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
            DType::I32 => {
                if let Some(bad) = data.iter().position(|&v| !is_i32(v)) {
                    return Err(not_i32("from_vec", data[bad], Some(bad)));
                }
                Data::from_f32(&data, dtype)
            }
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
        if dtype == DType::I32 && !is_i32(value) {
            return Err(not_i32("full", value, None));
        }
        let len = Self::len_of("full", shape, dtype, None)?;
        let mut data = host_alloc("full", dtype, len)?;
        // `host_alloc` gives owned memory, so the view is always there.
        match data.view_mut() {
            Some(DataMut::F32(v)) => v.fill(value),
            Some(DataMut::F16(v)) => v.fill(half::f16::from_f32(value)),
            Some(DataMut::BF16(v)) => v.fill(half::bf16::from_f32(value)),
            // Checked integral and in range above.
            Some(DataMut::I32(v)) => v.fill(value as i32),
            None => {}
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
        if !dtype.is_float() {
            return Err(Error::InvalidValue {
                op: "randn",
                reason: format!("normal samples are not integers: {dtype} is not a float dtype"),
            });
        }
        let len = Self::len_of("randn", shape, dtype, None)?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut values = host_alloc("randn", DType::F32, len)?;
        if let Some(DataMut::F32(v)) = values.view_mut() {
            v.iter_mut()
                .for_each(|x| *x = StandardNormal.sample(&mut rng));
        }
        if dtype == DType::F32 {
            return Ok(Tensor::host(shape, values));
        }
        let mut data = host_alloc("randn", dtype, len)?;
        if let Data::F32(src) = &values {
            match data.view_mut() {
                Some(DataMut::F16(o)) => Element::store_f32(src, o),
                Some(DataMut::BF16(o)) => Element::store_f32(src, o),
                Some(DataMut::F32(o)) => o.copy_from_slice(src),
                Some(DataMut::I32(_)) | None => {}
            }
        }
        Ok(Tensor::host(shape, data))
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape().iter().product()
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
        dispatch::to_vec_f32(self)
    }

    /// The device the tensor lives on (R10.1). Constructors make CPU tensors.
    pub fn device(&self) -> Device {
        self.handle_device()
    }

    /// A copy of the tensor on `device`, enqueued on the current stream like any op (R10.4).
    /// To the device it is already on, it returns the same tensor.
    ///
    /// ```
    /// use tagstream::{DType, Device, Tensor};
    /// let x = Tensor::full(&[2], 1.0, DType::F32)?;
    /// assert_eq!(x.to_device(Device::Cpu)?.device(), Device::Cpu);
    /// # Ok::<(), tagstream::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::NoGpu`] where `device` does not exist (R10.9).
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        dispatch::to_device(self, device)
    }

    fn binary(&self, op: BinaryOp, rhs: &Tensor) -> Result<Tensor> {
        dispatch::op(|| Op::binary(op, self.meta(), rhs.meta()), &[self, rhs])
    }

    fn unary(&self, op: UnaryOp) -> Result<Tensor> {
        dispatch::op(|| Op::unary(op, self.meta()), &[self])
    }

    /// Elementwise `self + rhs`; dtypes must match, shapes broadcast by NumPy/torch rules
    /// (aligned from the right, each pair of dimensions equal or one of them 1, R6.11; a
    /// broadcast output has rank at most 64).
    ///
    /// ```
    /// use tagstream::{DType, Error, Tensor};
    ///
    /// let a = Tensor::from_vec(vec![1.0, 2.0], &[2], DType::F32)?;
    /// let b = Tensor::from_vec(vec![10.0, 20.0], &[2], DType::F32)?;
    /// assert_eq!(a.add(&b)?.to_vec_f32()?, vec![11.0, 22.0]);
    /// assert_eq!(b.sub(&a)?.div(&a)?.to_vec_f32()?, vec![9.0, 9.0]);
    /// // Broadcasting: [2, 1] + [2] is [2, 2].
    /// let col = Tensor::from_vec(vec![100.0, 200.0], &[2, 1], DType::F32)?;
    /// let sum = col.add(&a)?;
    /// assert_eq!(sum.shape(), &[2, 2]);
    /// assert_eq!(sum.to_vec_f32()?, vec![101.0, 102.0, 201.0, 202.0]);
    /// // Shapes that do not broadcast, and no implicit conversion:
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

    fn scalar(&self, op: BinaryOp, value: f32) -> Result<Tensor> {
        dispatch::op(|| Op::scalar(op, self.meta(), value), &[self])
    }

    /// Elementwise `self + value`, computed in f32 and rounded once to the tensor's dtype (R6.2,
    /// R6.3).
    ///
    /// ```
    /// use tagstream::{DType, Tensor};
    /// let a = Tensor::from_vec(vec![1.0, 2.0], &[2], DType::F16)?;
    /// assert_eq!(a.add_scalar(0.5)?.to_vec_f32()?, vec![1.5, 2.5]);
    /// # Ok::<(), tagstream::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::DataRace`].
    pub fn add_scalar(&self, value: f32) -> Result<Tensor> {
        self.scalar(BinaryOp::Add, value)
    }

    /// Elementwise `self * value`, computed in f32 and rounded once to the tensor's dtype (R6.2,
    /// R6.3).
    ///
    /// ```
    /// use tagstream::{DType, Tensor};
    /// let a = Tensor::from_vec(vec![1.0, -2.0], &[2], DType::BF16)?;
    /// assert_eq!(a.mul_scalar(3.0)?.to_vec_f32()?, vec![3.0, -6.0]);
    /// # Ok::<(), tagstream::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::DataRace`].
    pub fn mul_scalar(&self, value: f32) -> Result<Tensor> {
        self.scalar(BinaryOp::Mul, value)
    }

    fn reduce(&self, op: ReduceOp, dim: usize, keepdim: bool) -> Result<Tensor> {
        dispatch::op(|| Op::reduce(op, self.meta(), dim, keepdim), &[self])
    }

    /// Sum over dimension `dim`, kept as size 1 when `keepdim`. Each result adds its inputs left
    /// to right in f32 (an order fixed by the shape, never by threads, R6.4) and rounds once.
    ///
    /// ```
    /// use tagstream::{DType, Tensor};
    /// let a = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], DType::F32)?;
    /// assert_eq!(a.sum(0, false)?.to_vec_f32()?, vec![5.0, 7.0, 9.0]);
    /// let s = a.sum(1, true)?;
    /// assert_eq!((s.shape(), s.to_vec_f32()?), (&[2, 1][..], vec![6.0, 15.0]));
    /// assert!(a.sum(2, false).is_err()); // dim out of range
    /// # Ok::<(), tagstream::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `dim` is out of range, [`Error::DataRace`].
    pub fn sum(&self, dim: usize, keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Sum, dim, keepdim)
    }

    /// Mean over dimension `dim`: the [`sum`](Tensor::sum) divided by the dimension's size in
    /// f32, rounded once (an empty dimension gives NaN).
    ///
    /// ```
    /// use tagstream::{DType, Tensor};
    /// let a = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2], DType::F32)?;
    /// assert_eq!(a.mean(1, false)?.to_vec_f32()?, vec![1.5, 3.5]);
    /// # Ok::<(), tagstream::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `dim` is out of range, [`Error::DataRace`].
    pub fn mean(&self, dim: usize, keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Mean, dim, keepdim)
    }

    /// Largest value over dimension `dim` (values only; NaN propagates).
    ///
    /// ```
    /// use tagstream::{DType, Tensor};
    /// let a = Tensor::from_vec(vec![1.0, 5.0, 3.0, -4.0], &[2, 2], DType::F32)?;
    /// assert_eq!(a.max(0, true)?.to_vec_f32()?, vec![3.0, 5.0]);
    /// # Ok::<(), tagstream::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `dim` is out of range or has size 0, [`Error::DataRace`].
    pub fn max(&self, dim: usize, keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Max, dim, keepdim)
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
        dispatch::op(|| Op::matmul(self.meta(), rhs.meta()), &[self, rhs])
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
        dispatch::op(|| Op::softmax(self.meta()), &[self])
    }

    /// Softmax over dimension `dim`. Over the last dimension it is exactly
    /// [`softmax`](Tensor::softmax) (same op, same bits); over another dimension each row of
    /// stride > 1 is gathered and run through the same formula in the same order (R6.4, R6.8),
    /// so the bits equal `softmax` of the transposed tensor.
    ///
    /// ```
    /// use tagstream::{DType, Tensor};
    /// let x = Tensor::from_vec(vec![1.0, 5.0, 1.0, 5.0], &[2, 2], DType::F32)?;
    /// assert_eq!(x.softmax_dim(0)?.to_vec_f32()?, vec![0.5; 4]); // each column sums to 1
    /// assert_eq!(x.softmax_dim(1)?.to_vec_f32()?, x.softmax()?.to_vec_f32()?);
    /// assert!(x.softmax_dim(2).is_err());
    /// # Ok::<(), tagstream::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `dim` is out of range; [`Error::DataRace`].
    pub fn softmax_dim(&self, dim: usize) -> Result<Tensor> {
        dispatch::op(|| Op::softmax_dim(self.meta(), dim), &[self])
    }

    /// The same elements in row-major order under `shape` (torch's `reshape` of a contiguous
    /// tensor; no `-1`): the element counts must match. **Copy-free**: a new handle on the
    /// same buffer (or graph value); nothing is issued, so it never races and costs no entry.
    ///
    /// ```
    /// use tagstream::{DType, Error, Tensor};
    /// let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], DType::F32)?;
    /// let y = x.reshape(&[3, 2])?;
    /// assert_eq!((y.shape(), y.to_vec_f32()?), (&[3, 2][..], x.to_vec_f32()?));
    /// assert!(matches!(x.reshape(&[4]), Err(Error::ShapeMismatch { op: "reshape", .. })));
    /// # Ok::<(), tagstream::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when the element counts differ or `shape` overflows;
    /// [`Error::ForeignGraphValue`] for a value of another capture.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        dispatch::shaped("reshape", || Op::reshape(self.meta(), shape), self)
    }

    /// A size-1 dimension inserted at `dim` (`0 <= dim <= rank`). **Copy-free**, as
    /// [`reshape`](Tensor::reshape).
    ///
    /// ```
    /// use tagstream::{DType, Tensor};
    /// let x = Tensor::zeros(&[2, 3], DType::F16)?;
    /// assert_eq!(x.unsqueeze(0)?.shape(), &[1, 2, 3]);
    /// assert_eq!(x.unsqueeze(2)?.shape(), &[2, 3, 1]);
    /// assert!(x.unsqueeze(3).is_err());
    /// # Ok::<(), tagstream::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `dim > rank`; [`Error::ForeignGraphValue`].
    pub fn unsqueeze(&self, dim: usize) -> Result<Tensor> {
        dispatch::shaped("unsqueeze", || Op::unsqueeze(self.meta(), dim), self)
    }

    /// Dimensions `d0` and `d1` swapped. **Copies** (one strided pass over the output) unless
    /// the swap keeps the row-major order of the elements (`d0 == d1`, at most one dimension of
    /// size > 1 from `d0` to `d1`, or no elements), which is a copy-free view.
    ///
    /// ```
    /// use tagstream::{DType, Tensor};
    /// let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], DType::F32)?;
    /// let t = x.transpose(0, 1)?;
    /// assert_eq!(t.shape(), &[3, 2]);
    /// assert_eq!(t.to_vec_f32()?, vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    /// # Ok::<(), tagstream::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when a dim is out of range or a copy has rank > 64;
    /// [`Error::DataRace`], [`Error::ForeignGraphValue`].
    pub fn transpose(&self, d0: usize, d1: usize) -> Result<Tensor> {
        dispatch::shaped("transpose", || Op::transpose(self.meta(), d0, d1), self)
    }

    /// Indices `start .. start + len` of dimension `dim`. **Copies** the selected elements
    /// (one strided pass) unless it selects the whole dimension, which is a copy-free view.
    ///
    /// ```
    /// use tagstream::{DType, Tensor};
    /// let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], DType::F32)?;
    /// assert_eq!(x.narrow(1, 1, 2)?.to_vec_f32()?, vec![2.0, 3.0, 5.0, 6.0]);
    /// assert!(x.narrow(1, 2, 2).is_err()); // 2 + 2 > 3
    /// # Ok::<(), tagstream::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `dim` is out of range or `start + len` exceeds its size;
    /// [`Error::DataRace`], [`Error::ForeignGraphValue`].
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Tensor> {
        dispatch::shaped("narrow", || Op::narrow(self.meta(), dim, start, len), self)
    }

    /// The tensor repeated to `shape` by torch's rules: aligned from the right, each dimension
    /// equal to the new size or 1; new leading dimensions take any size. **Copies** into a
    /// dense output (stride 0 over repeated dimensions: the output holds every repeat) unless
    /// nothing is repeated (same element count), which is a copy-free view.
    ///
    /// ```
    /// use tagstream::{DType, Tensor};
    /// let col = Tensor::from_vec(vec![1.0, 2.0], &[2, 1], DType::F32)?;
    /// let e = col.expand(&[2, 2, 3])?;
    /// assert_eq!(e.shape(), &[2, 2, 3]);
    /// assert_eq!(&e.to_vec_f32()?[..6], &[1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
    /// assert!(col.expand(&[3, 3]).is_err()); // 2 cannot expand to 3
    /// # Ok::<(), tagstream::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a shape of lower rank, a dimension that is neither equal
    /// nor 1, an overflowing size or a copy of rank > 64; [`Error::DataRace`],
    /// [`Error::ForeignGraphValue`].
    pub fn expand(&self, shape: &[usize]) -> Result<Tensor> {
        dispatch::shaped("expand", || Op::expand(self.meta(), shape), self)
    }

    /// `tensors` joined along `dim`: same dtype and rank, equal sizes in every other dimension.
    ///
    /// **Copies**, as a balanced tree of two-operand concatenations (ops take at most two
    /// operands): `n` tensors cost `n − 1` entries on the current stream and every element is
    /// copied `⌈log2 n⌉` times at most (once for two tensors). One tensor is returned as a
    /// copy-free view of itself. Everything is checked before anything is issued (R3.9).
    ///
    /// ```
    /// use tagstream::{DType, Tensor};
    /// let a = Tensor::from_vec(vec![1.0, 2.0], &[1, 2], DType::F32)?;
    /// let b = Tensor::from_vec(vec![3.0, 4.0, 5.0, 6.0], &[2, 2], DType::F32)?;
    /// let c = Tensor::cat(&[a.clone(), b.clone(), a.clone()], 0)?;
    /// assert_eq!(c.shape(), &[4, 2]);
    /// assert_eq!(c.to_vec_f32()?, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 1.0, 2.0]);
    /// assert!(Tensor::cat(&[a, b], 1).is_err()); // sizes differ in dim 0
    /// # Ok::<(), tagstream::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for no tensors, `dim` out of range, or parts that differ off
    /// `dim`; [`Error::DTypeMismatch`]; [`Error::DeviceMismatch`], [`Error::DataRace`],
    /// [`Error::ForeignGraphValue`].
    pub fn cat(tensors: &[Tensor], dim: usize) -> Result<Tensor> {
        take_pending_error()?;
        let metas: Vec<_> = tensors.iter().map(Tensor::meta).collect();
        let shape = Op::cat_shape(&metas, dim)?;
        if let [one] = tensors {
            return dispatch::shaped("cat", || Ok(Shaped::View(shape)), one);
        }
        let refs: Vec<&Tensor> = tensors.iter().collect();
        dispatch::check_operands("cat", &refs)?;
        // Pairs at each level, an odd last part carried up: depth ⌈log2 n⌉.
        let mut level: Vec<Tensor> = tensors.to_vec();
        loop {
            let mut next = Vec::with_capacity(level.len().div_ceil(2));
            let mut parts = level.into_iter();
            while let Some(a) = parts.next() {
                next.push(match parts.next() {
                    Some(b) => dispatch::op(|| Op::cat2(a.meta(), b.meta(), dim), &[&a, &b])?,
                    None => a,
                });
            }
            if next.len() == 1
                && let Some(out) = next.pop()
            {
                return Ok(out);
            }
            level = next;
        }
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
        dispatch::op(
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
        dispatch::op(|| Op::to_dtype(self.meta(), dtype), &[self])
    }
}
