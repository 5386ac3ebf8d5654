//! The zero-copy interop API (`tagstream::interop`, `Tensor::host_view`): memory shared both
//! ways, every dtype, the owner's lifetime (R3.8), refusal in a capture (R4.3, E12) and
//! pointers that cannot be shared.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tagstream::interop::{self, HostElement, bf16, f16};
use tagstream::ops::{create_tagged_event, tagged_event_record, tagged_event_wait};
use tagstream::scope::stream_switch;
use tagstream::{CompileConfig, DType, Error, Mode, Tensor, compile};

/// Tests that count owner drops run one at a time, so no other test's tensors interfere.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An owner that counts its drops and, when dropped, overwrites its elements with NaN: a reader
/// that ran after the drop (the bug R3.8 forbids) would see NaN instead of the values.
struct Tracked {
    values: Box<[f32]>,
    drops: Arc<AtomicUsize>,
}

impl AsRef<[f32]> for Tracked {
    fn as_ref(&self) -> &[f32] {
        &self.values
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.values.fill(f32::NAN);
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

/// Waits (up to 10 s, never a speed assertion) until `count` reaches `want`: the worker that
/// ran the last reader lets go of its input just after publishing the output.
fn eventually(count: &AtomicUsize, want: usize) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if count.load(Ordering::SeqCst) == want {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    count.load(Ordering::SeqCst) == want
}

/// R3.8: the owner outlives the last entry that reads the tensor, although the caller dropped
/// every handle long before that entry ran. The reader is held back behind an event recorded
/// after a slow matmul on another stream, so it certainly runs after the drop.
#[test]
fn owner_is_dropped_after_the_last_reader_r3_8() {
    let _s = serial();
    let drops = Arc::new(AtomicUsize::new(0));
    let n = 256;
    let values: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32).collect();
    let expected: Vec<f32> = values.iter().map(|v| v * 2.0).collect();
    let owner = Tracked {
        values: values.into_boxed_slice(),
        drops: drops.clone(),
    };
    let x = interop::from_owner(owner, &[n, n]).unwrap();
    let ev = create_tagged_event("interop-gate").unwrap();
    let slow = {
        let _g = stream_switch("interop-slow").unwrap();
        let big = Tensor::full(&[n, n], 0.5, DType::F32).unwrap();
        let mut acc = big.clone();
        for _ in 0..8 {
            acc = acc.matmul(&big).unwrap();
        }
        tagged_event_record(&ev).unwrap();
        acc
    };
    let y = {
        let _g = stream_switch("interop-reader").unwrap();
        tagged_event_wait(&ev).unwrap();
        x.add(&x).unwrap()
    };
    drop(x);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        0,
        "an issued reader keeps the owner"
    );
    assert_eq!(y.to_vec_f32().unwrap(), expected, "read before the drop");
    drop((y, slow));
    assert!(
        eventually(&drops, 1),
        "the owner is dropped once the last reader is done"
    );
}

/// A view of an imported tensor, and tensors sharing its buffer (`reshape`), keep the owner too.
#[test]
fn views_and_reshapes_keep_the_owner() {
    let _s = serial();
    let drops = Arc::new(AtomicUsize::new(0));
    let owner = Tracked {
        values: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0].into_boxed_slice(),
        drops: drops.clone(),
    };
    let base = owner.values.as_ptr();
    let x = interop::from_owner(owner, &[2, 3]).unwrap();
    let r = x.reshape(&[3, 2]).unwrap();
    let view = x.host_view().unwrap();
    assert_eq!(view.as_ptr(), base.cast(), "import and export share memory");
    drop(x);
    assert_eq!(r.host_view().unwrap().as_ptr(), base.cast());
    drop(r);
    assert_eq!(drops.load(Ordering::SeqCst), 0, "the view still holds it");
    assert_eq!(view.as_f32(), Some(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0][..]));
    drop(view);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

/// One dtype both ways: import without a copy, compute on it, export the result without a
/// copy in the storage dtype.
fn round_trip<T: HostElement + PartialEq + std::fmt::Debug>(values: Vec<T>, as_f32: Vec<f32>) {
    let shared: Arc<[T]> = Arc::from(values);
    let t = interop::from_owner(shared.clone(), &[2, 2]).unwrap();
    assert_eq!(t.dtype(), T::DTYPE);
    let view = t.host_view().unwrap();
    assert_eq!(
        view.as_ptr(),
        shared.as_ptr().cast(),
        "{}: no copy",
        T::DTYPE
    );
    assert_eq!(view.as_slice::<T>(), Some(&shared[..]));
    assert_eq!(view.as_bytes().len(), 4 * T::DTYPE.size_in_bytes());
    assert_eq!(t.to_vec_f32().unwrap(), as_f32);
    // An op reading the imported memory, then a zero-copy export of its output.
    let moved = t.transpose(0, 1).unwrap();
    let out = moved.host_view().unwrap();
    assert_eq!((out.dtype(), out.shape()), (T::DTYPE, &[2, 2][..]));
    let want = [shared[0], shared[2], shared[1], shared[3]];
    assert_eq!(out.as_slice::<T>(), Some(&want[..]));
}

#[test]
fn every_dtype_round_trips_without_a_copy_r6_1() {
    let f = [1.5f32, -2.0, 0.25, 8.0];
    round_trip(f.to_vec(), f.to_vec());
    round_trip(f.iter().map(|&v| f16::from_f32(v)).collect(), f.to_vec());
    round_trip(f.iter().map(|&v| bf16::from_f32(v)).collect(), f.to_vec());
    round_trip(vec![3i32, -7, 0, 1 << 20], vec![3.0, -7.0, 0.0, 1048576.0]);
}

/// Exporting an owned tensor is zero-copy too: two views of one tensor share one address, and
/// a view of the wrong element type is `None`.
#[test]
fn host_view_of_computed_tensors() {
    let a = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3], DType::BF16).unwrap();
    let b = a.mul(&a).unwrap();
    let (v1, v2) = (b.host_view().unwrap(), b.host_view().unwrap());
    assert_eq!(v1.as_ptr(), v2.as_ptr());
    assert_eq!(v1.dtype(), DType::BF16, "bf16 keeps its storage dtype");
    let want: Vec<bf16> = [1.0f32, 4.0, 9.0]
        .iter()
        .map(|&v| bf16::from_f32(v))
        .collect();
    assert_eq!(v1.as_slice::<bf16>(), Some(&want[..]));
    assert_eq!(v1.as_slice::<f16>(), None);
    assert_eq!(v1.as_f32(), None);
    let empty = Tensor::zeros(&[0, 3], DType::F32)
        .unwrap()
        .host_view()
        .unwrap();
    assert!(empty.is_empty() && empty.as_f32() == Some(&[][..]));
}

/// E12 (R4.3): `host_view` is a host read, refused while a graph is being captured.
#[test]
fn host_view_in_capture_is_e12() {
    let x = Tensor::from_vec(vec![0.0, 1.0], &[2], DType::F32).unwrap();
    let mut c = compile(
        |x: &[Tensor]| {
            let y = x[0].exp()?;
            y.host_view()?;
            Ok(vec![y])
        },
        CompileConfig::default().mode(Mode::ReduceOverhead),
    );
    let err = c.run(std::slice::from_ref(&x)).unwrap_err();
    assert_eq!(
        err,
        Error::HostSyncInCapture {
            call: "host_view",
            producer: Some("exp".into()),
        }
    );
}

/// An imported tensor is an ordinary input of a compiled graph: captured, then replayed.
#[test]
fn imported_tensors_feed_a_replayed_graph() {
    let mut c = compile(
        |x: &[Tensor]| Ok(vec![x[0].add(&x[1])?.relu()?]),
        CompileConfig::default().mode(Mode::ReduceOverhead),
    );
    for round in 0..3 {
        let a: Arc<[f32]> = Arc::from(vec![round as f32, -5.0, 2.0]);
        let b: Arc<[f32]> = Arc::from(vec![1.0, 1.0, 1.0]);
        let ins = [
            interop::from_owner(a, &[3]).unwrap(),
            interop::from_owner(b, &[3]).unwrap(),
        ];
        let out = c.run(&ins).unwrap();
        assert_eq!(
            out[0].to_vec_f32().unwrap(),
            vec![round as f32 + 1.0, 0.0, 3.0]
        );
    }
    assert!(c.stats().replays >= 1, "{:?}", c.stats());
}

/// A misaligned or null pointer is refused with `InvalidValue` (callers copy instead); a
/// shape that disagrees with the slice is `ShapeMismatch`.
#[test]
fn unshareable_memory_is_refused() {
    let words = Arc::new(vec![0u32; 5]);
    let base = words.as_ptr().cast::<u8>();
    for dtype in [DType::F32, DType::I32, DType::F16, DType::BF16] {
        // SAFETY: 16 bytes from `base + 1` lie inside the 20-byte allocation that `words`
        // keeps; the call must refuse the address before reading anything.
        let err = unsafe { interop::from_external(base.add(1), &[4], dtype, words.clone()) };
        assert!(
            matches!(&err, Err(Error::InvalidValue { op: "from_external", reason })
                if reason.contains("not aligned")),
            "{dtype}: {err:?}"
        );
    }
    // 2-byte alignment is enough for the 16-bit dtypes.
    // SAFETY: 4 f16 (8 bytes) from `base + 2` lie inside the allocation `words` keeps.
    let t = unsafe { interop::from_external(base.add(2), &[4], DType::F16, words.clone()) };
    assert_eq!(t.unwrap().to_vec_f32().unwrap(), vec![0.0; 4]);
    // SAFETY: a null pointer is refused before any read.
    let err = unsafe { interop::from_external(std::ptr::null(), &[1], DType::F32, words.clone()) };
    assert!(matches!(err, Err(Error::InvalidValue { .. })), "{err:?}");
    // SAFETY: no element is read for an empty shape.
    let empty = unsafe { interop::from_external(std::ptr::null(), &[0], DType::F32, words) };
    assert_eq!(empty.unwrap().to_vec_f32().unwrap(), Vec::<f32>::new());
    let err = interop::from_owner(vec![1.0f32; 3], &[2, 2]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ShapeMismatch {
                op: "from_owner",
                ..
            }
        ),
        "{err}"
    );
    let err = interop::from_owner(vec![1.0f32; 3], &[usize::MAX, 2]).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
}

/// A failed producer's error reaches the view (R3.12), and a graph value cannot be viewed.
#[test]
fn host_view_reports_failures() {
    let x = Tensor::from_vec(vec![1.0, 2.0], &[2], DType::F32).unwrap();
    let bad = Tensor::from_vec(vec![5.0], &[1], DType::I32).unwrap();
    let g = x.index_select(0, &bad).unwrap();
    assert!(
        matches!(g.host_view(), Err(Error::ExecutionFailed { .. })),
        "an out-of-range index fails the op and so the view"
    );
}
