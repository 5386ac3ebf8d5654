//! [`Arena`]: the one block of memory that holds a captured graph's inputs and intermediates.
//!
//! Owns the allocation and the typed views into it. It knows nothing of graphs or streams:
//! which byte ranges may be touched at the same time is the memory planner's business
//! (`graph::memory`, R4.9), and this module's unsafe API states that obligation.
//!
//! # Why raw memory
//! Several stream workers read and write disjoint (or hb-ordered) slots of the same arena at
//! once, and a slot is reused by another value later in the same replay. No safe Rust type
//! expresses "these byte ranges, at these times"; the planner proves it at capture, and the
//! views are handed out only by the replay executor, which follows the plan.

use std::cell::UnsafeCell;

use half::{bf16, f16};

use crate::dtype::DType;
use crate::tensor::storage::{DataMut, DataRef, within_machine_memory};

/// The arena's alignment unit (a cache line: slots never share one, so two streams writing
/// neighbouring slots do not false-share).
#[repr(C, align(64))]
struct Line(UnsafeCell<[u8; 64]>);

// SAFETY: a `Line` is 64 plain bytes (an `UnsafeCell` adds no bytes and no invariant), so the
// all-zero bit pattern is a valid `Line`.
unsafe impl bytemuck::Zeroable for Line {}

/// A zero-initialised, 64-byte-aligned block shared by the stream workers of one graph.
pub(crate) struct Arena {
    lines: Box<[Line]>,
}

// SAFETY: the arena is plain bytes (no pointers, no drop glue). Concurrent access happens only
// through `view`/`view_mut`, whose callers guarantee (from the memory plan and the graph's
// happens-before order) that no byte is written while another thread reads or writes it.
unsafe impl Sync for Arena {}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arena")
            .field("bytes", &self.bytes())
            .finish()
    }
}

/// A typed range of the arena: `len` elements of `dtype` from byte `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) offset: usize,
    pub(crate) len: usize,
    pub(crate) dtype: DType,
}

impl Arena {
    /// An arena of at least `bytes` bytes, zero-filled; `None` if the allocator refuses or the
    /// machine could never back it ([`within_machine_memory`]).
    ///
    /// The memory comes from the allocator's zeroed allocation (`calloc`), which gets fresh
    /// pages from the kernel already zero: a large arena costs no fill at capture, and pages
    /// are touched only when a replay first writes them.
    pub(crate) fn new(bytes: usize) -> Option<Arena> {
        if !within_machine_memory(bytes) {
            return None;
        }
        let lines = bytes.div_ceil(64);
        let lines = bytemuck::allocation::try_zeroed_slice_box::<Line>(lines).ok()?;
        Some(Arena { lines })
    }

    /// Size in bytes.
    pub(crate) fn bytes(&self) -> usize {
        self.lines.len() * 64
    }

    /// Whether `slot` lies inside the arena and is aligned for its dtype. Plans check every
    /// slot with this once, at capture.
    pub(crate) fn fits(&self, slot: Slot) -> bool {
        let size = slot.dtype.size_in_bytes();
        slot.offset.is_multiple_of(size)
            && slot
                .len
                .checked_mul(size)
                .and_then(|b| b.checked_add(slot.offset))
                .is_some_and(|end| end <= self.bytes())
    }

    fn ptr(&self, slot: Slot) -> *mut u8 {
        assert!(
            self.fits(slot),
            "arena slot {slot:?} outside {} bytes",
            self.bytes()
        );
        // `UnsafeCell::raw_get` keeps the provenance of the whole allocation, so the pointer
        // may cover several lines.
        UnsafeCell::raw_get(&raw const self.lines[0].0)
            .cast::<u8>()
            .wrapping_add(slot.offset)
    }

    /// A read view of `slot`.
    ///
    /// # Safety
    /// 1. No thread writes any byte of `slot` while the returned view is alive.
    ///
    /// Bounds and alignment are checked (a bad slot panics, it is never UB).
    pub(crate) unsafe fn view(&self, slot: Slot) -> DataRef<'_> {
        if slot.len == 0 {
            return empty_ref(slot.dtype);
        }
        let p = self.ptr(slot);
        // SAFETY: `ptr` checked that the range is inside the allocation and aligned for the
        // dtype; every bit pattern is a valid f32/f16/bf16/i32; the caller guarantees no
        // concurrent write (precondition 1).
        unsafe {
            match slot.dtype {
                DType::F32 => DataRef::F32(std::slice::from_raw_parts(p.cast(), slot.len)),
                DType::F16 => DataRef::F16(std::slice::from_raw_parts(p.cast(), slot.len)),
                DType::BF16 => DataRef::BF16(std::slice::from_raw_parts(p.cast(), slot.len)),
                DType::I32 => DataRef::I32(std::slice::from_raw_parts(p.cast(), slot.len)),
            }
        }
    }

    /// A write view of `slot`.
    ///
    /// # Safety
    /// 1. No other thread reads or writes any byte of `slot` while the returned view is alive.
    /// 2. This thread holds no other view overlapping `slot` meanwhile.
    ///
    /// Bounds and alignment are checked (a bad slot panics, it is never UB).
    #[allow(clippy::mut_from_ref)] // interior mutability through UnsafeCell; see the contract
    pub(crate) unsafe fn view_mut(&self, slot: Slot) -> DataMut<'_> {
        if slot.len == 0 {
            return empty_mut(slot.dtype);
        }
        let p = self.ptr(slot);
        // SAFETY: in bounds and aligned (checked by `ptr`); the bytes live in `UnsafeCell`s,
        // so writing through a shared `&self` is allowed; the caller guarantees exclusive
        // access to the range (preconditions 1 and 2).
        unsafe {
            match slot.dtype {
                DType::F32 => DataMut::F32(std::slice::from_raw_parts_mut(p.cast(), slot.len)),
                DType::F16 => DataMut::F16(std::slice::from_raw_parts_mut(p.cast(), slot.len)),
                DType::BF16 => DataMut::BF16(std::slice::from_raw_parts_mut(p.cast(), slot.len)),
                DType::I32 => DataMut::I32(std::slice::from_raw_parts_mut(p.cast(), slot.len)),
            }
        }
    }
}

fn empty_ref(dtype: DType) -> DataRef<'static> {
    match dtype {
        DType::F32 => DataRef::F32(&[]),
        DType::F16 => DataRef::F16(&[] as &[f16]),
        DType::BF16 => DataRef::BF16(&[] as &[bf16]),
        DType::I32 => DataRef::I32(&[]),
    }
}

fn empty_mut(dtype: DType) -> DataMut<'static> {
    match dtype {
        DType::F32 => DataMut::F32(&mut []),
        DType::F16 => DataMut::F16(&mut []),
        DType::BF16 => DataMut::BF16(&mut []),
        DType::I32 => DataMut::I32(&mut []),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_round_trip_and_check_bounds() {
        let arena = Arena::new(100).unwrap();
        assert_eq!(arena.bytes(), 128);
        let a = Slot {
            offset: 0,
            len: 4,
            dtype: DType::F32,
        };
        let b = Slot {
            offset: 64,
            len: 3,
            dtype: DType::F16,
        };
        // SAFETY: single thread, the two slots do not overlap, views are dropped in turn.
        unsafe {
            if let DataMut::F32(v) = arena.view_mut(a) {
                v.copy_from_slice(&[1.0, 2.0, 3.0, 4.0]);
            }
            if let DataMut::F16(v) = arena.view_mut(b) {
                v.fill(f16::from_f32(0.5));
            }
            assert!(matches!(arena.view(a), DataRef::F32(v) if v == [1.0, 2.0, 3.0, 4.0]));
            assert!(
                matches!(arena.view(b), DataRef::F16(v) if v.iter().all(|x| x.to_f32() == 0.5))
            );
        }
        assert!(!arena.fits(Slot {
            offset: 120,
            len: 4,
            dtype: DType::F32
        }));
        assert!(!arena.fits(Slot {
            offset: 2,
            len: 1,
            dtype: DType::F32
        }));
        assert!(arena.fits(Slot {
            offset: 128,
            len: 0,
            dtype: DType::F32
        }));
    }
}
