//! Zero-copy interop with other array libraries (re-exported as [`crate::interop`]).
//!
//! Two directions, both without copying host memory:
//! - **export**: [`Tensor::host_view`] waits for the tensor (a host read, like
//!   [`Tensor::to_vec_f32`]) and hands out a [`HostView`]: a read-only pointer, element count,
//!   shape and dtype (the storage dtype: f32, f16, bf16, i32), kept valid by the view itself.
//! - **import**: [`from_owner`] (safe: any owner that derefs to a slice) and
//!   [`from_external`] (unsafe: a raw pointer plus an owner object) make a host tensor whose
//!   elements *are* the outside memory. The owner is dropped when the last reader is done with
//!   it (the last handle to the tensor and the last entry reading it, R3.8).
//!
//! Imported memory is read, never written: tensors are immutable (R3.7). The caller must not
//! write it either while tagstream may read it (any op issued on it may still run).
//!
//! Device (CUDA) memory is neither exported nor imported here: a CUDA tensor's [`host_view`]
//! is [`Error::DeviceMismatch`] (copy it with [`Tensor::to_device`] first). Sharing device
//! memory needs the producer's stream ordered before tagstream's (DLPack's `stream` argument),
//! which the CUDA backend does not expose yet.
//!
//! [`host_view`]: Tensor::host_view

use std::any::Any;
use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;

pub use half::{bf16, f16};

use super::handle::Tensor;
use super::storage::{Buffer, Data, External};
use crate::device::Device;
use crate::dispatch;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::scope::stack::take_pending_error;

mod sealed {
    pub trait Sealed {}
}

/// An element type a tensor stores: `f32`, [`f16`](struct@f16), [`bf16`](struct@bf16) or `i32`.
///
/// Sealed: tagstream's kernels exist for these four only.
pub trait HostElement: sealed::Sealed + Copy + Send + Sync + 'static {
    /// The tensor dtype with this storage.
    const DTYPE: DType;
}

macro_rules! host_element {
    ($t:ty, $d:expr) => {
        impl sealed::Sealed for $t {}
        impl HostElement for $t {
            const DTYPE: DType = $d;
        }
    };
}
host_element!(f32, DType::F32);
host_element!(f16, DType::F16);
host_element!(bf16, DType::BF16);
host_element!(i32, DType::I32);

/// A read-only view of a CPU tensor's elements, in row-major order, with no copy.
///
/// It holds the tensor's buffer, so the memory stays valid while the view (or a clone of it)
/// lives, whatever happens to the tensor. Cheap to clone; `Send + Sync`.
///
/// ```
/// use tagstream::{DType, Tensor};
///
/// let t = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2], DType::F32)?;
/// let view = t.add(&t)?.host_view()?; // waits for the add
/// assert_eq!(view.as_f32(), Some(&[2.0, 4.0, 6.0, 8.0][..]));
/// assert_eq!((view.shape(), view.dtype()), (&[2, 2][..], DType::F32));
/// # Ok::<(), tagstream::Error>(())
/// ```
#[derive(Clone)]
pub struct HostView {
    buffer: Arc<Buffer>,
    shape: Vec<usize>,
    dtype: DType,
}

impl HostView {
    /// The elements, which exist: the constructor checked the buffer holds `Ok` data.
    fn data(&self) -> &Data {
        match self.buffer.get() {
            Some(Ok(d)) => d,
            // Unreachable: `host_view` only builds views of filled, successful buffers, and a
            // filled `OnceLock` never empties while shared (`Buffer::take` needs `&mut`).
            _ => &EMPTY,
        }
    }

    /// The first element's address: aligned for the dtype, valid for [`len`](Self::len)
    /// elements while `self` lives. Never written by anyone (R3.7).
    pub fn as_ptr(&self) -> *const u8 {
        self.data().as_ptr()
    }

    /// Number of elements (the product of the shape).
    pub fn len(&self) -> usize {
        self.data().len()
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The storage dtype (`bf16` stays `bf16`).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The tensor's shape (row-major, contiguous).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The elements' bytes (native byte order).
    pub fn as_bytes(&self) -> &[u8] {
        use super::storage::DataRef;
        match self.data().view() {
            DataRef::F32(v) => bytemuck::cast_slice(v),
            DataRef::F16(v) => bytemuck::cast_slice(v),
            DataRef::BF16(v) => bytemuck::cast_slice(v),
            DataRef::I32(v) => bytemuck::cast_slice(v),
        }
    }

    /// The elements as `T` when `T` is the storage type, else `None`.
    pub fn as_slice<T: HostElement>(&self) -> Option<&[T]> {
        if T::DTYPE != self.dtype {
            return None;
        }
        // The dtype matches `T`, so the bytes are `len` aligned `T`s; `try_cast_slice`
        // re-checks size and alignment instead of trusting that.
        bytemuck_cast::<T>(self.as_bytes())
    }

    /// The elements of an `F32` view.
    pub fn as_f32(&self) -> Option<&[f32]> {
        self.as_slice()
    }
}

static EMPTY: Data = Data::F32(Vec::new());

/// `bytes` as `T`s; `None` if misaligned or of a partial element.
fn bytemuck_cast<T: HostElement>(bytes: &[u8]) -> Option<&[T]> {
    let size = std::mem::size_of::<T>();
    if !bytes.len().is_multiple_of(size)
        || bytes.as_ptr().align_offset(std::mem::align_of::<T>()) != 0
    {
        return None;
    }
    // SAFETY: every `HostElement` (f32, f16, bf16, i32) is plain old data for which every bit
    // pattern is valid; the pointer is aligned and the length a whole number of elements, both
    // checked above; the result borrows `bytes`.
    Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast(), bytes.len() / size) })
}

impl fmt::Debug for HostView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostView")
            .field("ptr", &self.as_ptr())
            .field("shape", &self.shape)
            .field("dtype", &self.dtype)
            .finish()
    }
}

impl Tensor {
    /// Waits for the tensor and returns a read-only, zero-copy view of its elements.
    ///
    /// A host read like [`to_vec_f32`](Tensor::to_vec_f32): afterwards every stream may read
    /// the tensor without an event (R3.6). The view keeps the memory alive on its own.
    ///
    /// # Errors
    /// [`Error::HostSyncInCapture`] inside a capture (R4.3, E12); [`Error::ForeignGraphValue`]
    /// for a value of a graph; the producer's failure ([`Error::ExecutionFailed`], R3.12);
    /// [`Error::DeviceMismatch`] for a tensor on a GPU (device memory is not shared: copy it
    /// to the CPU with [`to_device`](Tensor::to_device) first).
    pub fn host_view(&self) -> Result<HostView> {
        let buffer = dispatch::wait_for_buffer("host_view", self)?;
        if buffer.device() != Device::Cpu {
            return Err(Error::DeviceMismatch {
                op: "host_view (device memory is not shared; use to_device(Device::Cpu))".into(),
                lhs: buffer.device(),
                rhs: Device::Cpu,
            });
        }
        dispatch::host_data("host_view", buffer)?;
        Ok(HostView {
            buffer: buffer.clone(),
            shape: self.shape().to_vec(),
            dtype: self.dtype(),
        })
    }
}

/// A CPU tensor whose elements are `owner`'s slice, with no copy.
///
/// `owner` is kept (behind an `Arc`) until the last reader is done: the last handle to the
/// tensor, to tensors sharing its buffer (`reshape`), to a [`HostView`] of it, and the last
/// entry reading it (R3.8). Then it is dropped, on whichever thread lets go last.
///
/// ```
/// use std::sync::Arc;
/// use tagstream::{DType, interop};
///
/// let values: Arc<[f32]> = Arc::from(vec![1.0, 2.0, 3.0, 4.0]);
/// let t = interop::from_owner(values.clone(), &[2, 2])?;
/// assert_eq!(t.host_view()?.as_ptr(), values.as_ptr().cast()); // the same memory
/// assert_eq!(t.mul(&t)?.to_vec_f32()?, vec![1.0, 4.0, 9.0, 16.0]);
/// # Ok::<(), tagstream::Error>(())
/// ```
///
/// # Errors
/// [`Error::ShapeMismatch`] if the shape's element count overflows or differs from the
/// slice's length; a pending [`Error::UnbalancedStreamSwitch`].
pub fn from_owner<T, O>(owner: O, shape: &[usize]) -> Result<Tensor>
where
    T: HostElement,
    O: AsRef<[T]> + Send + Sync + 'static,
{
    // The slice is taken once the owner is behind the `Arc`, which never moves it or hands out
    // `&mut`; `T` has no interior mutability, so the elements stay as they are while it lives.
    let owner = Arc::new(owner);
    let slice = (*owner).as_ref();
    let (ptr, len) = (slice.as_ptr().cast::<u8>(), slice.len());
    let expected = checked_len("from_owner", shape, T::DTYPE)?;
    if expected != len {
        return Err(Error::ShapeMismatch {
            op: "from_owner",
            lhs: shape.to_vec(),
            rhs: vec![len],
            reason: format!("the shape needs {expected} elements but the slice has {len}"),
        });
    }
    // SAFETY: `ptr` comes from a live `&[T]` of `len` elements (so aligned, initialized, at
    // most isize::MAX bytes), borrowed from `owner`, which the tensor keeps; see above for why
    // it is never written.
    unsafe { from_external(ptr, shape, T::DTYPE, owner) }
}

/// A CPU tensor over `shape.iter().product()` elements of `dtype` at `ptr`, with no copy;
/// `owner` keeps the memory valid and is dropped when the last reader is done (see
/// [`from_owner`], the safe form).
///
/// # Safety
/// While `owner` lives, `ptr` must point to that many initialized elements of `dtype`'s
/// storage type (`f32`, `f16`, `bf16`, `i32`) in row-major order, and nothing may write them.
/// Alignment and null are checked here, not assumed (null is accepted for no elements).
///
/// # Errors
/// [`Error::InvalidValue`] for a misaligned pointer, or a null one with elements (copy the data instead, e.g. with
/// [`Tensor::from_vec`]); [`Error::ShapeMismatch`] if the shape's size overflows `isize`
/// bytes; a pending [`Error::UnbalancedStreamSwitch`].
pub unsafe fn from_external(
    ptr: *const u8,
    shape: &[usize],
    dtype: DType,
    owner: Arc<dyn Any + Send + Sync>,
) -> Result<Tensor> {
    take_pending_error()?;
    let len = checked_len("from_external", shape, dtype)?;
    let nn = match NonNull::new(ptr.cast_mut()) {
        Some(nn) => nn,
        // No element is ever read: any aligned non-null address will do (4 bytes covers
        // every dtype).
        None if len == 0 => NonNull::<u32>::dangling().cast(),
        None => {
            return Err(Error::InvalidValue {
                op: "from_external",
                reason: "a null data pointer".into(),
            });
        }
    };
    let align = dtype.size_in_bytes();
    if nn.as_ptr().align_offset(align) != 0 {
        return Err(Error::InvalidValue {
            op: "from_external",
            reason: format!(
                "the data pointer {ptr:p} is not aligned to {align} bytes for {dtype}; copy the \
                 data instead"
            ),
        });
    }
    // SAFETY: non-null and aligned (checked above); the caller vouches for `len` initialized,
    // unwritten elements while `owner` lives, and the size fits isize (`checked_len`).
    let ext = unsafe { External::new(nn, len, dtype, owner) };
    Ok(Tensor::host(shape, Data::External(ext)))
}

/// The element count of `shape`, refusing a size beyond `isize::MAX` bytes (what a slice can
/// cover).
fn checked_len(op: &'static str, shape: &[usize], dtype: DType) -> Result<usize> {
    crate::dtype::checked_len(shape, dtype).ok_or_else(|| Error::ShapeMismatch {
        op,
        lhs: shape.to_vec(),
        rhs: Vec::new(),
        reason: "the element count overflows".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_dtypes() {
        assert_eq!(
            [f32::DTYPE, f16::DTYPE, bf16::DTYPE, i32::DTYPE],
            [DType::F32, DType::F16, DType::BF16, DType::I32]
        );
    }

    #[test]
    fn cast_refuses_misaligned_and_partial_bytes() {
        let words = [0u32; 4];
        let bytes: &[u8] = bytemuck::cast_slice(&words);
        assert_eq!(bytemuck_cast::<f32>(bytes).map(<[f32]>::len), Some(4));
        assert!(bytemuck_cast::<f32>(&bytes[1..5]).is_none(), "misaligned");
        assert!(
            bytemuck_cast::<f32>(&bytes[..6]).is_none(),
            "partial element"
        );
        assert_eq!(
            bytemuck_cast::<f16>(&bytes[2..6]).map(<[f16]>::len),
            Some(2)
        );
    }
}
