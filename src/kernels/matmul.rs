//! Matrix product: bf16 on the AVX512-BF16 dot-product kernel of
//! [`matmul_bf16`](super::matmul_bf16) where the CPU and the operands allow it, else the small-`m`
//! kernel of [`matmul_small`](super::matmul_small) for `m ≤ 16` on CPUs with AVX2/FMA, else the
//! `gemm` crate.
//!
//! f32 operands go straight to `gemm::gemm::<f32>`. f16/bf16 operands are widened to f32
//! scratch, multiplied in f32 and rounded once: gemm-f16 0.19 rounds its f16 destination after
//! every k-block, which would round more than once (R6.3). Widening costs O(mk + kn) against the
//! product's O(mkn). The f32 scratch is per thread and reused up to [`SCRATCH_KEEP_BYTES`], so
//! steady-state replays of small and medium products allocate nothing; a larger product gets
//! a one-off buffer that is freed when it finishes, so memory follows what is running.
//!
//! Threads: `1`, or a product too small for gemm to split, runs on the calling thread
//! (`Parallelism::None`). A larger one runs `Parallelism::Rayon(threads)` inside
//! [`gemm_pool`], a rayon pool tagstream owns: gemm's parallel loop uses rayon's *current*
//! pool (`into_par_iter` in `gemm_common::gemm::par_for_each`), and the global pool belongs to
//! the user, whose threads may all be blocked reading this very product.
//! gemm splits output tiles across threads and keeps its k-blocking a function of the shape,
//! so the bits do not depend on the thread count (R6.4, tested below).

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use gemm::Parallelism;

use super::kind::MatmulDims;
use super::matmul_bf16::matmul_bf16_dot;
use super::matmul_small::matmul_small_m;
use crate::dtype::Element;

/// `out[b] = a[b] × rhs(b)` for every batch `b`.
pub(crate) fn matmul<T: Element>(
    a: &[T],
    b: &[T],
    out: &mut [T],
    dims: MatmulDims,
    threads: usize,
) {
    let MatmulDims {
        batch,
        m,
        k,
        n,
        rhs_batched,
    } = dims;
    let rhs_batches = if rhs_batched { batch } else { 1 };
    assert!(
        a.len() == batch * m * k && b.len() == rhs_batches * k * n && out.len() == batch * m * n,
        "matmul: slice lengths do not match {dims:?}"
    );
    if out.is_empty() {
        return;
    }
    if k == 0 {
        out.fill(T::from_f32(0.0));
        return;
    }
    // bf16 on the dot-product instruction, where the operands allow it (see `matmul_bf16`);
    // when it declines, `out` is rewritten whole below.
    if let (Some(a16), Some(b16), Some(o16)) = (T::as_bf16(a), T::as_bf16(b), T::as_bf16_mut(out))
        && matmul_bf16_dot(a16, b16, o16, dims, threads)
    {
        return;
    }
    // A few rows against large weights: stream B once in its own dtype (see `matmul_small`).
    if !matmul_small_m(a, b, out, dims, threads) {
        matmul_gemm(a, b, out, dims, threads);
    }
}

/// The `gemm` path of [`matmul`] for any shape (`k > 0`, non-empty output): f32 as is, f16/bf16
/// widened to f32 scratch first.
pub(super) fn matmul_gemm<T: Element>(
    a: &[T],
    b: &[T],
    out: &mut [T],
    dims: MatmulDims,
    threads: usize,
) {
    match (T::as_f32(a), T::as_f32(b)) {
        (Some(a32), Some(b32)) => {
            let o32 = T::as_f32_mut(out).expect("an f32 operand implies an f32 output");
            batched_f32(a32, b32, o32, dims, threads);
        }
        _ => {
            with_scratch(a.len() + b.len() + out.len(), |scratch| {
                let (a32, rest) = scratch.split_at_mut(a.len());
                let (b32, o32) = rest.split_at_mut(b.len());
                T::load_f32(a, a32);
                T::load_f32(b, b32);
                batched_f32(a32, b32, o32, dims, threads);
                T::store_f32(o32, out);
            });
        }
    }
}

/// The most scratch a thread keeps between products. 16 MiB holds the widened operands and
/// output of a 1024×1024×1024 product (3 × 4 MiB), so replays up to that size reuse it; a larger
/// product allocates its own (zeroed by the allocator, lazily) and frees it, which costs little
/// next to its O(mkn) work.
pub(crate) const SCRATCH_KEEP_BYTES: usize = 16 << 20;

thread_local! {
    /// Widened f16/bf16 operands and f32 output, reused by later products on this thread.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on `len` f32 of scratch: this thread's kept buffer when `len` fits under
/// [`SCRATCH_KEEP_BYTES`] (its contents are overwritten by `load_f32` before they are read),
/// else a one-off buffer freed on return.
pub(super) fn with_scratch(len: usize, f: impl FnOnce(&mut [f32])) {
    with_kept(&SCRATCH, len, f);
}

/// Runs `f` on the first `len` elements of the buffer `kept` holds for this thread, grown as
/// needed, when they fit under [`SCRATCH_KEEP_BYTES`]; else, or if the buffer is in use
/// (re-entered: a kernel never calls matmul from inside matmul, but stay safe), on a one-off
/// zeroed buffer freed on return. Kept contents are stale: `f` must write before it reads.
pub(super) fn with_kept<T: Copy + Default, R>(
    kept: &'static std::thread::LocalKey<RefCell<Vec<T>>>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    if len > SCRATCH_KEEP_BYTES / size_of::<T>().max(1) {
        return f(&mut vec![T::default(); len]);
    }
    kept.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, T::default());
            }
            f(&mut buf[..len])
        }
        Err(_) => f(&mut vec![T::default(); len]),
    })
}

/// Bytes of f32 scratch this thread keeps between products.
#[cfg(test)]
pub(crate) fn kept_scratch_bytes() -> usize {
    SCRATCH.with(|cell| cell.borrow().capacity() * size_of::<f32>())
}

/// tagstream's own pool for gemm's parallel loops, built on first use with one thread per core
/// (the core split hands out at most that many threads in total); `None` if the threads could
/// not be spawned, and products then run on the calling thread (same bits, R6.4).
///
/// Nothing but gemm's loops runs here, and those never block on anything outside the pool, so
/// every job finishes: stream workers (plain threads, never pool threads) may `install` into it
/// at the same time, each blocking until its own product is done, and a pool thread waiting in
/// a join that steals another worker's product only delays its own, it cannot deadlock. No user
/// code, host read or stream wait ever runs on these threads.
pub(super) fn gemm_pool() -> Option<&'static KernelPool> {
    static POOL: OnceLock<Option<KernelPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        KernelPool::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    })
    .as_ref()
}

/// The kernels' rayon pool and how many kernels are running in it.
pub(super) struct KernelPool {
    pool: rayon::ThreadPool,
    /// Kernels installed and not finished.
    running: AtomicUsize,
    /// Kernels installed whose job no pool thread has started yet.
    waiting: AtomicUsize,
    /// Kernels in [`KernelPool::claim_units`].
    claiming: AtomicUsize,
}

/// Decrements a counter on drop: on return and on unwind (a kernel panic is caught further up).
struct Uncount<'a>(&'a AtomicUsize);

impl Drop for Uncount<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts `counter` up until the guard drops.
fn count(counter: &AtomicUsize) -> Uncount<'_> {
    counter.fetch_add(1, Ordering::Relaxed);
    Uncount(counter)
}

impl KernelPool {
    /// A pool of `threads` threads (`None` if they could not be spawned).
    pub(super) fn new(threads: usize) -> Option<KernelPool> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("tagstream-gemm-{i}"))
            .build()
            .ok()?;
        Some(KernelPool {
            pool,
            running: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            claiming: AtomicUsize::new(0),
        })
    }

    /// Kernels running, waiting and claiming units (tests: all return to zero).
    #[cfg(test)]
    pub(super) fn counts(&self) -> [usize; 3] {
        [&self.running, &self.waiting, &self.claiming].map(|c| c.load(Ordering::Relaxed))
    }

    /// Runs `f` in the pool (see [`rayon::ThreadPool::install`]), counted as running, and as
    /// waiting until a pool thread starts it.
    pub(super) fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let _running = count(&self.running);
        let waiting = count(&self.waiting);
        self.pool.install(move || {
            drop(waiting);
            f()
        })
    }

    /// Runs `work(u)` for every `u` in `0..units`, each claimed once, by the calling thread
    /// (called inside [`install`](Self::install), so a thread of this pool, counted as a
    /// running kernel) and up to `threads - 1` helpers, until a call returns `false`; returns
    /// whether every call returned `true`. Which thread runs a unit never changes its bits:
    /// callers make units independent.
    ///
    /// Kernels share the cores cooperatively, at unit boundaries: a helper leaves when another
    /// kernel waits for the pool, and a thread adds a helper while the kernel has fewer threads
    /// than its share of `threads` among the kernels claiming units. So two products that start
    /// together run side by side, one core each, instead of one after the other on both (a
    /// product split over two threads loses about 5%; the seed's two bf16 products took about
    /// 3% less time side by side), and the core freed when one ends joins the other within a
    /// unit.
    pub(super) fn claim_units(
        &self,
        threads: usize,
        units: usize,
        work: &(dyn Fn(usize) -> bool + Sync),
    ) -> bool {
        let _claiming = count(&self.claiming);
        let claims = Claims {
            pool: self,
            work,
            units,
            threads: threads.max(1),
            next: AtomicUsize::new(0),
            active: AtomicUsize::new(1),
            pending: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
        };
        // `ThreadPool::scope`: on a thread of this pool (inside `install`) it runs right here.
        self.pool.scope(|s| {
            for _ in 1..claims.threads.min(units) {
                claims.spawn_helper(s);
            }
            claims.run(s, true);
        });
        !claims.failed.load(Ordering::Relaxed)
    }

    /// [`claim_units`](Self::claim_units) over disjoint pieces of an output: unit `u` is
    /// `work(u, pieces[u])`, its rows behind an uncontended lock so whichever thread claims the
    /// unit can write them.
    pub(super) fn claim_pieces<T: Send>(
        &self,
        threads: usize,
        pieces: Vec<Vec<&mut [T]>>,
        work: &(dyn Fn(usize, &mut [&mut [T]]) -> bool + Sync),
    ) -> bool {
        let cells: Vec<Mutex<Vec<&mut [T]>>> = pieces.into_iter().map(Mutex::new).collect();
        self.claim_units(threads, cells.len(), &|u| {
            cells.get(u).is_none_or(|cell| {
                let mut rows = cell.lock().unwrap_or_else(|e| e.into_inner());
                work(u, &mut rows)
            })
        })
    }

    /// Whether some kernel runs in the pool now (a racy hint: speed only, never bits). A short
    /// kernel that could split asks this so that it does not queue behind a long product.
    pub(super) fn is_busy(&self) -> bool {
        self.running.load(Ordering::Relaxed) != 0
    }

    /// Whether another kernel runs besides the caller's, from inside [`install`](Self::install)
    /// (a racy hint, as [`is_busy`](Self::is_busy)).
    pub(super) fn is_shared(&self) -> bool {
        self.running.load(Ordering::Relaxed) > 1
    }
}

/// One kernel's units in [`KernelPool::claim_units`] and the threads working on them.
struct Claims<'a> {
    pool: &'a KernelPool,
    work: &'a (dyn Fn(usize) -> bool + Sync),
    units: usize,
    threads: usize,
    /// The next unclaimed unit.
    next: AtomicUsize,
    /// Threads claiming units, and helpers spawned that have not started.
    active: AtomicUsize,
    pending: AtomicUsize,
    failed: AtomicBool,
}

impl<'a> Claims<'a> {
    /// Claims and runs units until none is left or one fails; a helper (`owner` false) also
    /// leaves when another kernel waits for the pool. The owner never leaves early, so every
    /// unit is claimed before `claim_units` returns (rayon's scope waits for the helpers).
    fn run<'s>(&'s self, s: &rayon::Scope<'s>, owner: bool)
    where
        'a: 's,
    {
        while !self.failed.load(Ordering::Relaxed) {
            let u = self.next.fetch_add(1, Ordering::Relaxed);
            if u >= self.units {
                break;
            }
            if !(self.work)(u) {
                self.failed.store(true, Ordering::Relaxed);
                break;
            }
            if !owner && self.pool.waiting.load(Ordering::Relaxed) > 0 {
                break;
            }
            self.top_up(s);
        }
        self.active.fetch_sub(1, Ordering::Relaxed);
    }

    /// Adds a helper if no kernel waits, units are left for it, and this kernel has fewer
    /// threads than its share (a racy count: at worst a helper too many, which finds no unit
    /// or leaves at the next boundary).
    fn top_up<'s>(&'s self, s: &rayon::Scope<'s>)
    where
        'a: 's,
    {
        let kernels = self.pool.claiming.load(Ordering::Relaxed).max(1);
        let share = (self.threads / kernels).max(1);
        let have = self.active.load(Ordering::Relaxed) + self.pending.load(Ordering::Relaxed);
        let left = self.units.saturating_sub(self.next.load(Ordering::Relaxed));
        if have < share && have < left && self.pool.waiting.load(Ordering::Relaxed) == 0 {
            self.spawn_helper(s);
        }
    }

    fn spawn_helper<'s>(&'s self, s: &rayon::Scope<'s>)
    where
        'a: 's,
    {
        self.pending.fetch_add(1, Ordering::Relaxed);
        s.spawn(move |s| {
            self.active.fetch_add(1, Ordering::Relaxed);
            self.pending.fetch_sub(1, Ordering::Relaxed);
            self.run(s, false);
        });
    }
}

fn batched_f32(a: &[f32], b: &[f32], out: &mut [f32], dims: MatmulDims, threads: usize) {
    let MatmulDims {
        m,
        k,
        n,
        rhs_batched,
        ..
    } = dims;
    let mut run = |parallelism: Parallelism| {
        for (i, (a, o)) in a
            .chunks_exact(m * k)
            .zip(out.chunks_exact_mut(m * n))
            .enumerate()
        {
            let b = if rhs_batched {
                &b[i * k * n..(i + 1) * k * n]
            } else {
                b
            };
            gemm_f32(a, b, o, m, k, n, parallelism);
        }
    };
    // gemm splits a block only when m·n_chunk·k_chunk reaches its threading threshold, and a
    // block is at most m·n·k: below that it runs on one thread anyway, so skip the pool's
    // hand-off (a wake-up and a park per product) and run here, exactly as with `threads = 1`.
    let splits =
        threads > 1 && m.saturating_mul(n).saturating_mul(k) >= gemm::get_threading_threshold();
    match gemm_pool() {
        Some(pool) if splits => pool.install(|| run(Parallelism::Rayon(threads))),
        _ => run(Parallelism::None),
    }
}

/// `out = a × b` for row-major `a: [m,k]`, `b: [k,n]`, `out: [m,n]`, all non-empty.
/// `Parallelism::Rayon` is only passed inside [`gemm_pool`]'s `install`.
fn gemm_f32(
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    parallelism: Parallelism,
) {
    assert!(
        m > 0 && k > 0 && n > 0 && a.len() == m * k && b.len() == k * n && out.len() == m * n,
        "gemm_f32: slices do not match [{m},{k}]x[{k},{n}]"
    );
    let (k_i, n_i) = (to_isize(k), to_isize(n));
    // SAFETY: the assert above established a.len() == m*k, b.len() == k*n, out.len() == m*n.
    // With row-major strides (column stride 1, row stride k for a, n for b and out), the last
    // element gemm touches is at (m-1)*k + (k-1) < m*k in a, (k-1)*n + (n-1) < k*n in b and
    // (m-1)*n + (n-1) < m*n in out, so every access is in bounds. `out` is borrowed mutably, so
    // it aliases neither input; `read_dst = false` means its prior contents are never read.
    // The strides fit in isize because the slices exist (a slice is at most isize::MAX bytes).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n_i,
            false,
            a.as_ptr(),
            1,
            k_i,
            b.as_ptr(),
            1,
            n_i,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

fn to_isize(x: usize) -> isize {
    isize::try_from(x).expect("a dimension of an existing slice fits in isize")
}
