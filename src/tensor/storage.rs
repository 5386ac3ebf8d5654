//! Element storage shared between the host and the stream workers.
//!
//! Owns [`Data`] (a typed element array: owned, or borrowed from an outside owner through
//! [`External`]) and [`Buffer`] (a write-once cell holding the result of the entry that produces
//! a tensor). Knows nothing of streams or ordering.
//!
//! # Why a write-once cell
//! A tensor's buffer is written by exactly one entry on one stream worker and then read by
//! entries on other workers and by the host. The runtime's happens-before check (R3.5) refuses
//! every read that is not ordered after the write, so a reader should always find the value.
//! Building the buffer on [`OnceLock`] means Rust's memory safety does not depend on that check:
//! a reader that ran too early would see "not ready" (reported as an internal error), never a
//! torn value. The cost is one acquire load per access. Tensors are immutable (R3.7), so a
//! buffer is never written twice.

use std::any::Any;
use std::fmt;
use std::ptr::NonNull;
use std::sync::{Arc, OnceLock};

use half::{bf16, f16};

use crate::device::Device;
use crate::dtype::DType;
use crate::error::Error;

/// Elements that live in a device's memory (a CUDA allocation). The CPU paths never see one:
/// a buffer with device memory is only handed to the backend of that device.
pub(crate) trait DeviceMem: Send + Sync + fmt::Debug {
    /// The device the memory is on.
    fn device(&self) -> Device;
    /// For the owning backend to get its own type back.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    fn as_any(&self) -> &dyn std::any::Any;
}

/// An array of elements of one dtype: owned, or host memory lent by an outside owner.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Data {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    I32(Vec<i32>),
    /// Elements that live in memory tagstream does not own (a numpy array, a DLPack tensor):
    /// read-only, valid as long as the [`External`] (and so its owner) lives.
    External(External),
}

/// Host memory lent by an outside owner: `len` elements of `dtype` at `ptr`, kept valid by
/// `owner`, which is dropped with the last holder (the last `Arc<Buffer>`, so after the last
/// entry reading it has run, R3.8).
///
/// *Invariant* (established by [`External::new`]'s caller): `ptr` is aligned for `dtype`,
/// points to `len` initialized elements, and nobody writes them while `owner` lives.
#[derive(Clone)]
pub(crate) struct External {
    ptr: NonNull<u8>,
    len: usize,
    dtype: DType,
    /// Never read: held so the memory outlives every view of it, dropped with the last clone.
    #[expect(dead_code, reason = "held for its drop only")]
    owner: Arc<dyn Any + Send + Sync>,
}

// SAFETY: the memory is read-only for as long as `owner` lives (the type's invariant) and the
// owner itself is `Send + Sync`, so sharing or moving the pointer across threads is as safe as
// sharing a `&[T]` of `T: Sync` elements.
unsafe impl Send for External {}
// SAFETY: as for `Send`: only shared reads of immutable memory go through it.
unsafe impl Sync for External {}

impl External {
    /// Wraps lent memory.
    ///
    /// # Safety
    /// `ptr` must be aligned for `dtype` and point to `len` initialized elements of it
    /// (`len * size` at most `isize::MAX` bytes) that stay valid and unwritten while `owner`
    /// lives. A `len` of 0 may use any aligned non-null pointer.
    pub(crate) unsafe fn new(
        ptr: NonNull<u8>,
        len: usize,
        dtype: DType,
        owner: Arc<dyn Any + Send + Sync>,
    ) -> External {
        External {
            ptr,
            len,
            dtype,
            owner,
        }
    }

    /// The first element's address.
    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    fn view(&self) -> DataRef<'_> {
        let p = self.ptr.as_ptr();
        // SAFETY: the type's invariant: aligned, `len` initialized elements of `dtype`, not
        // written while `owner` lives, and `self` holds `owner` for the returned lifetime.
        unsafe {
            match self.dtype {
                DType::F32 => DataRef::F32(std::slice::from_raw_parts(p.cast(), self.len)),
                DType::F16 => DataRef::F16(std::slice::from_raw_parts(p.cast(), self.len)),
                DType::BF16 => DataRef::BF16(std::slice::from_raw_parts(p.cast(), self.len)),
                DType::I32 => DataRef::I32(std::slice::from_raw_parts(p.cast(), self.len)),
            }
        }
    }
}

impl fmt::Debug for External {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("External")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .field("dtype", &self.dtype)
            .finish_non_exhaustive()
    }
}

/// Equal elements (as for the owned variants), whoever owns them.
impl PartialEq for External {
    fn eq(&self, other: &External) -> bool {
        self.view().eq_elements(other.view())
    }
}

/// Whether a request of `bytes` could ever be backed on this machine: at most its RAM plus
/// swap (Linux, read once from `/proc/meminfo`), the bound the kernel's default overcommit
/// heuristic puts on each request. glibc's malloc asks the kernel and is refused past it, but
/// an allocator that reserves address space without that check (mimalloc, which the CLI and the
/// Python package link) grants a 64 TiB tensor that fails only when touched, and the process is
/// killed. Checking here makes such a request `OutOfMemory` under every allocator (R7.1).
/// Elsewhere, or when the figure cannot be read, there is no bound beyond the allocator's.
pub(crate) fn within_machine_memory(bytes: usize) -> bool {
    static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
    LIMIT
        .get_or_init(machine_memory)
        .is_none_or(|limit| u64::try_from(bytes).is_ok_and(|b| b <= limit))
}

/// RAM plus swap in bytes, from `/proc/meminfo` (`None` where it cannot be read).
fn machine_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = |key: &str| {
        text.lines().find_map(|line| {
            let value = line.strip_prefix(key)?.trim().strip_suffix("kB")?;
            value.trim().parse::<u64>().ok()
        })
    };
    let total = kib("MemTotal:")?.saturating_add(kib("SwapTotal:").unwrap_or(0));
    Some(total.saturating_mul(1024))
}

impl Data {
    /// A zero-filled array. Zero is all-zero bits in every dtype, so this maps to `calloc` and
    /// costs nothing for pages the kernel overwrites anyway.
    #[cfg(test)]
    pub(crate) fn zeroed(dtype: DType, len: usize) -> Data {
        match dtype {
            DType::F32 => Data::F32(vec![0.0; len]),
            DType::F16 => Data::F16(bytemuck::zeroed_vec(len)),
            DType::BF16 => Data::BF16(bytemuck::zeroed_vec(len)),
            DType::I32 => Data::I32(vec![0; len]),
        }
    }

    /// As [`zeroed`](Data::zeroed), but `None` when the allocator refuses or the request is
    /// larger than the machine could ever back ([`within_machine_memory`]), so a huge tensor is
    /// an error value instead of an abort (R7.1), whichever allocator the program links.
    pub(crate) fn try_zeroed(dtype: DType, len: usize) -> Option<Data> {
        if !within_machine_memory(len.checked_mul(dtype.size_in_bytes())?) {
            return None;
        }
        Some(match dtype {
            DType::F32 => Data::F32(bytemuck::allocation::try_zeroed_vec(len).ok()?),
            DType::F16 => Data::F16(bytemuck::allocation::try_zeroed_vec(len).ok()?),
            DType::BF16 => Data::BF16(bytemuck::allocation::try_zeroed_vec(len).ok()?),
            DType::I32 => Data::I32(bytemuck::allocation::try_zeroed_vec(len).ok()?),
        })
    }

    /// Converts f32 values to `dtype` (R6.1 rounding; to `I32` as [`DType::round_f32`], callers
    /// check integrality first).
    pub(crate) fn from_f32(values: &[f32], dtype: DType) -> Data {
        use crate::dtype::Element;
        fn conv<T: Element>(values: &[f32]) -> Vec<T> {
            let mut out = vec![T::default(); values.len()];
            T::store_f32(values, &mut out);
            out
        }
        match dtype {
            DType::F32 => Data::F32(values.to_vec()),
            DType::F16 => Data::F16(conv(values)),
            DType::BF16 => Data::BF16(conv(values)),
            DType::I32 => Data::I32(values.iter().map(|&v| v as i32).collect()),
        }
    }

    /// Conversion to f32: exact for the float dtypes, and for `I32` values of magnitude up to
    /// 2^24.
    pub(crate) fn to_f32_vec(&self) -> Vec<f32> {
        use crate::dtype::Element;
        fn conv<T: Element>(values: &[T]) -> Vec<f32> {
            let mut out = vec![0.0; values.len()];
            T::load_f32(values, &mut out);
            out
        }
        match self.view() {
            DataRef::F32(v) => v.to_vec(),
            DataRef::F16(v) => conv(v),
            DataRef::BF16(v) => conv(v),
            DataRef::I32(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// A borrowed view of the elements.
    pub(crate) fn view(&self) -> DataRef<'_> {
        match self {
            Data::F32(v) => DataRef::F32(v),
            Data::F16(v) => DataRef::F16(v),
            Data::BF16(v) => DataRef::BF16(v),
            Data::I32(v) => DataRef::I32(v),
            Data::External(e) => e.view(),
        }
    }

    /// A mutable view of owned elements; `None` for lent memory, which tagstream never
    /// writes (callers only write arrays they allocated, so `None` is an internal error).
    pub(crate) fn view_mut(&mut self) -> Option<DataMut<'_>> {
        Some(match self {
            Data::F32(v) => DataMut::F32(v),
            Data::F16(v) => DataMut::F16(v),
            Data::BF16(v) => DataMut::BF16(v),
            Data::I32(v) => DataMut::I32(v),
            Data::External(_) => return None,
        })
    }

    /// Number of elements.
    pub(crate) fn len(&self) -> usize {
        self.view().len()
    }

    pub(crate) fn dtype(&self) -> DType {
        match self {
            Data::F32(_) => DType::F32,
            Data::F16(_) => DType::F16,
            Data::BF16(_) => DType::BF16,
            Data::I32(_) => DType::I32,
            Data::External(e) => e.dtype,
        }
    }

    /// The first element's address (for a zero-copy export).
    pub(crate) fn as_ptr(&self) -> *const u8 {
        match self {
            Data::F32(v) => v.as_ptr().cast(),
            Data::F16(v) => v.as_ptr().cast(),
            Data::BF16(v) => v.as_ptr().cast(),
            Data::I32(v) => v.as_ptr().cast(),
            Data::External(e) => e.as_ptr(),
        }
    }
}

/// A borrowed, typed view of elements: an operand as a kernel sees it, whether it lives in an
/// eager tensor's [`Data`] or in a replay arena.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DataRef<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
    I32(&'a [i32]),
}

/// A mutable typed view: where a kernel writes its output.
#[derive(Debug)]
pub(crate) enum DataMut<'a> {
    F32(&'a mut [f32]),
    F16(&'a mut [f16]),
    BF16(&'a mut [bf16]),
    I32(&'a mut [i32]),
}

impl DataRef<'_> {
    pub(crate) fn dtype(&self) -> DType {
        match self {
            DataRef::F32(_) => DType::F32,
            DataRef::F16(_) => DType::F16,
            DataRef::BF16(_) => DType::BF16,
            DataRef::I32(_) => DType::I32,
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            DataRef::F32(v) => v.len(),
            DataRef::F16(v) => v.len(),
            DataRef::BF16(v) => v.len(),
            DataRef::I32(v) => v.len(),
        }
    }

    /// Same dtype and elements equal by `==` (what the owned variants' derived `PartialEq` does).
    fn eq_elements(&self, other: DataRef<'_>) -> bool {
        match (*self, other) {
            (DataRef::F32(a), DataRef::F32(b)) => a == b,
            (DataRef::F16(a), DataRef::F16(b)) => a == b,
            (DataRef::BF16(a), DataRef::BF16(b)) => a == b,
            (DataRef::I32(a), DataRef::I32(b)) => a == b,
            _ => false,
        }
    }
}

impl DataMut<'_> {
    pub(crate) fn dtype(&self) -> DType {
        match self {
            DataMut::F32(_) => DType::F32,
            DataMut::F16(_) => DType::F16,
            DataMut::BF16(_) => DType::BF16,
            DataMut::I32(_) => DType::I32,
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            DataMut::F32(v) => v.len(),
            DataMut::F16(v) => v.len(),
            DataMut::BF16(v) => v.len(),
            DataMut::I32(v) => v.len(),
        }
    }
}

/// The write-once home of one tensor's elements.
///
/// *Invariant*: set at most once, by the entry that produces the tensor (or at construction for
/// host-built tensors); after that, shared read-only by every holder.
#[derive(Debug, Default)]
pub(crate) struct Buffer {
    cell: OnceLock<Result<Data, Error>>,
    /// Device memory for a tensor on a GPU (`None` on the host). The cell then holds only a
    /// failure, or `Ok` of an empty `Data` once the producer has been enqueued.
    device: Option<Arc<dyn DeviceMem>>,
}

impl Buffer {
    /// A pending buffer, to be filled by the entry that produces it.
    pub(crate) fn pending() -> Buffer {
        Buffer {
            cell: OnceLock::new(),
            device: None,
        }
    }

    /// A buffer whose elements live in `mem` on a device.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn on_device(mem: Arc<dyn DeviceMem>) -> Buffer {
        Buffer {
            cell: OnceLock::new(),
            device: Some(mem),
        }
    }

    /// The device memory, for a buffer on a device.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn device_mem(&self) -> Option<&Arc<dyn DeviceMem>> {
        self.device.as_ref()
    }

    /// Where the elements are.
    pub(crate) fn device(&self) -> Device {
        self.device.as_ref().map_or(Device::Cpu, |m| m.device())
    }

    /// A buffer that is ready from the start (host-built tensors, R3.6).
    pub(crate) fn ready(data: Data) -> Buffer {
        let cell = OnceLock::new();
        // A fresh cell is empty, so this set cannot fail.
        let _ = cell.set(Ok(data));
        Buffer { cell, device: None }
    }

    /// Publishes the producing entry's result (with release ordering, through `OnceLock`).
    /// Returns `false` if the buffer had already been set, which would be a runtime bug.
    pub(crate) fn fill(&self, result: Result<Data, Error>) -> bool {
        self.cell.set(result).is_ok()
    }

    /// Empties the buffer so its storage can be refilled by a later replay (R5.5). Needs
    /// `&mut`, i.e. no other holder: a replay recycles an output buffer only through
    /// `Arc::get_mut`, which proves the caller has dropped every handle to it.
    pub(crate) fn take(&mut self) -> Option<Result<Data, Error>> {
        self.cell.take()
    }

    /// The produced value, or `None` when the producer has not run yet.
    pub(crate) fn get(&self) -> Option<&Result<Data, Error>> {
        self.cell.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// R7.1: a request larger than RAM plus swap is refused before the allocator sees it, so
    /// the answer does not depend on the allocator linked (the unit tests link the system one;
    /// the CLI and the Python package link mimalloc, which would grant it).
    #[test]
    #[cfg(target_os = "linux")]
    fn requests_past_the_machine_memory_are_refused_r7_1() {
        let limit = machine_memory().expect("/proc/meminfo has MemTotal");
        assert!(limit >= 1 << 20, "{limit} bytes of RAM and swap");
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        assert!(within_machine_memory(limit));
        assert!(within_machine_memory(1 << 20));
        if let Some(past) = limit.checked_add(1) {
            assert!(!within_machine_memory(past));
            assert!(Data::try_zeroed(DType::BF16, past.div_ceil(2)).is_none());
        }
        assert!(Data::try_zeroed(DType::F32, 1 << 44).is_none(), "64 TiB");
        assert!(
            Data::try_zeroed(DType::F32, usize::MAX / 2).is_none(),
            "bytes overflow"
        );
        assert!(Data::try_zeroed(DType::F32, 1 << 10).is_some());
    }

    #[test]
    fn buffer_is_write_once() {
        let b = Buffer::pending();
        assert!(b.get().is_none());
        assert!(b.fill(Ok(Data::zeroed(DType::F16, 3))));
        assert!(
            !b.fill(Ok(Data::zeroed(DType::F32, 1))),
            "second fill must be refused"
        );
        assert_eq!(b.get().unwrap().as_ref().unwrap().dtype(), DType::F16);
    }

    #[test]
    fn zeroed_and_conversions() {
        for d in DType::FLOATS {
            let z = Data::zeroed(d, 5);
            assert_eq!(z.dtype(), d);
            assert_eq!(z.to_f32_vec(), vec![0.0; 5]);
            let v = Data::from_f32(&[1.5, -2.0, 65504.0], d);
            assert_eq!(v.to_f32_vec()[..2], [1.5, -2.0]);
        }
    }
}
