//! Small-`m` matrix product (`m ≤ 16`): reads `B` once, widening it block by block in cache.
//!
//! # Why this exists
//! A decode step multiplies a few token rows by large weights (MoE experts: `[16,2048]×[2048,1408]`
//! per expert, bf16). The general path widens all of `B` to f32 scratch before `gemm` reads it
//! again: for a small `m` that extra write and read of twice the weight bytes costs more than the
//! product. Here `B` is widened (exactly, R6.1) one `KC × NB` panel at a time into a per-thread
//! buffer that stays in L2, and every row of `A` is applied to the panel before the next one.
//!
//! # Order of operations (R6.3, R6.4)
//! Every output element is one chain of fused multiply-adds over `p = 0, 1, …, k-1` from a zero
//! accumulator, `c = fma(a[i,p], b[p,j], c)`, in f32, rounded once to the output dtype at the
//! end. Between `k` panels the accumulator is stored and reloaded as is, which changes nothing.
//! An FMA rounds once, so the AVX-512 lanes and the AVX2 lanes give the bits of the scalar
//! chain: the result depends on the shape and the input bits only, not on the tiling, the
//! instruction set or the threads (tested in `tests.rs`). Threads take whole column blocks, so
//! no reduction is ever split; they claim them through `KernelPool::claim_units`, which shares
//! the cores with other kernels running at the same time.
//!
//! # Tiling
//! A register tile is `MR` rows × `NV` vectors of columns (16 lanes on AVX-512, 8 on AVX2),
//! `MR·NV` accumulators (≤ 24 of AVX-512's 32 registers, ≤ 12 of AVX2's 16). Columns are cut
//! into blocks of [`NB`] (the unit of work a thread takes), `k` into panels of [`KC`]; a panel
//! is widened row by row into `[KC, NB]` f32, zero-padded to whole vectors, while the previous
//! panel's first row tile prefetches it (`NextPanel`).
//! Needs FMA, AVX2 (or AVX-512 F/BW/VL) and F16C, checked at run time; without them
//! [`matmul_small_m`] declines and the caller takes the `gemm` path.

use std::cell::RefCell;

use super::kind::MatmulDims;
use super::matmul::{gemm_pool, with_scratch};
use crate::dtype::Element;

/// The largest `m` taken here; above it `gemm`'s packed kernels win.
pub(crate) const MAX_M: usize = 16;

/// Columns per unit of thread work (a multiple of every strip width: 64).
const NB: usize = 256;

/// Rows of `B` per widened panel: `KC × NB` f32 is 128 KiB, which stays in L2.
const KC: usize = 128;

/// Products below this many multiply-adds run on the calling thread: the pool's hand-off would
/// cost more than the second core saves.
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// The instruction sets this module can use, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Isa {
    /// AVX-512 F/BW/VL with FMA and F16C: 32 vector registers of 16 lanes.
    Avx512,
    /// AVX2 with FMA and F16C: 8 lanes, 16 registers.
    Avx2,
}

/// The best instruction set of this CPU for this module, `None` when it lacks FMA/AVX2.
pub(crate) fn detect() -> Option<Isa> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let base = has!("avx2") && has!("fma") && has!("f16c");
        if base && has!("avx512f") && has!("avx512bw") && has!("avx512vl") {
            return Some(Isa::Avx512);
        }
        if base {
            return Some(Isa::Avx2);
        }
    }
    None
}

/// One batch's operands: `a` widened to f32 and transposed (`[k,m]`), `b` in its own dtype
/// (`[k,n]`).
#[derive(Clone, Copy)]
struct Operands<'a, T> {
    a: &'a [f32],
    b: &'a [T],
    m: usize,
    k: usize,
    n: usize,
}

/// `out[b] = a[b] × rhs(b)` when `m ≤ MAX_M` and the CPU has what [`detect`] looks for;
/// returns `false` (writing nothing) otherwise. Slices are validated by the caller, `k > 0`.
pub(crate) fn matmul_small_m<T: Element>(
    a: &[T],
    b: &[T],
    out: &mut [T],
    dims: MatmulDims,
    threads: usize,
) -> bool {
    match detect() {
        Some(isa) if dims.m <= MAX_M && dims.m > 0 && dims.k > 0 && dims.n > 0 => {
            matmul_with(isa, a, b, out, dims, threads);
            true
        }
        _ => false,
    }
}

/// [`matmul_small_m`] on a given instruction set (which the CPU must have; tests pick each).
pub(crate) fn matmul_with<T: Element>(
    isa: Isa,
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
    assert!(
        (1..=MAX_M).contains(&m) && k > 0 && n > 0 && detect().is_some_and(|best| best <= isa),
        "matmul_small_m: m = {m} out of range or {isa:?} unavailable"
    );
    let run = |a32: &[f32], out: &mut [T]| {
        let ops = |bt: usize| Operands {
            a: &a32[bt * m * k..(bt + 1) * m * k],
            b: if rhs_batched {
                &b[bt * k * n..(bt + 1) * k * n]
            } else {
                b
            },
            m,
            k,
            n,
        };
        let blocks_per_batch = n.div_ceil(NB);
        let blocks = batch * blocks_per_batch;
        let parallel = threads > 1
            && blocks > 1
            && batch.saturating_mul(m * k).saturating_mul(n) >= PARALLEL_MIN_MACS;
        match gemm_pool() {
            Some(pool) if parallel => {
                // Each block's rows, as disjoint pieces of `out`.
                let mut pieces: Vec<Vec<&mut [T]>> =
                    (0..blocks).map(|_| Vec::with_capacity(m)).collect();
                for (r, row) in out.chunks_mut(n).enumerate() {
                    let first = (r / m) * blocks_per_batch;
                    for (jb, piece) in row.chunks_mut(NB).enumerate() {
                        pieces[first + jb].push(piece);
                    }
                }
                // Blocks are claimed one at a time (`claim_pieces`), so a thread that finishes
                // early takes more; who computes a block never changes its bits.
                let work = |i: usize, rows: &mut [&mut [T]]| {
                    let (bt, jb) = (i / blocks_per_batch, i % blocks_per_batch);
                    block(isa, ops(bt), jb * NB, rows);
                    true
                };
                pool.install(|| pool.claim_pieces(threads, pieces, &work));
            }
            _ => {
                for (bt, out_b) in out.chunks_exact_mut(m * n).enumerate() {
                    let mut rows: Vec<&mut [T]> = out_b.chunks_mut(n).collect();
                    block_all(isa, ops(bt), &mut rows);
                }
            }
        }
    };
    // `A` widened and transposed per batch to `[k, m]`: a tile's broadcasts then read one
    // contiguous run per `p`. Read in place, `m` rows `k` apart map to one L1 set when `k·4`
    // is a multiple of 4 KiB (k = 2048 ran at half speed).
    with_scratch(2 * a.len(), |scratch| {
        let (wide, at) = scratch.split_at_mut(a.len());
        T::load_f32(a, wide);
        for (src, dst) in wide.chunks_exact(m * k).zip(at.chunks_exact_mut(m * k)) {
            for (i, row) in src.chunks_exact(k).enumerate() {
                for (p, &x) in row.iter().enumerate() {
                    dst[p * m + i] = x;
                }
            }
        }
        run(at, out);
    });
}

/// All column blocks of one batch, in order, on this thread; `rows[i]` is output row `i`.
fn block_all<T: Element>(isa: Isa, ops: Operands<'_, T>, rows: &mut [&mut [T]]) {
    for j0 in (0..ops.n).step_by(NB) {
        let mut piece: Vec<&mut [T]> = rows
            .iter_mut()
            .map(|r| &mut r[j0..(j0 + NB).min(ops.n)])
            .collect();
        block(isa, ops, j0, &mut piece);
    }
}

thread_local! {
    /// The widened `B` panel (`KC × NB`) and the accumulators (`MAX_M × NB`), kept per thread
    /// (about 144 KiB once a product with `k ≥ KC` ran on it) so replays allocate nothing.
    static PANEL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Output columns `j0..j0 + rows[0].len()` of every row; `rows[i]` is that piece of row `i`.
fn block<T: Element>(isa: Isa, ops: Operands<'_, T>, j0: usize, rows: &mut [&mut [T]]) {
    let w = rows.first().map_or(0, |r| r.len());
    assert!(
        rows.len() == ops.m && w > 0 && w <= NB && j0 + w <= ops.n,
        "matmul_small_m: block of {w} columns at {j0} does not fit [{},{}]",
        ops.m,
        ops.n
    );
    // Whole 64-column groups, so every strip width divides it; lanes past `w` are zeros.
    let wp = w.next_multiple_of(64);
    let kc_max = ops.k.min(KC);
    let mut run = |buf: &mut [f32]| {
        let (panel, acc) = buf.split_at_mut(kc_max * NB);
        for p0 in (0..ops.k).step_by(KC) {
            let kc = KC.min(ops.k - p0);
            let rows_b = ops.b[p0 * ops.n + j0..].chunks(ops.n).take(kc);
            let dsts = panel.chunks_exact_mut(NB).take(kc);
            match isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `matmul_with` asserted that the CPU has this instruction set.
                Isa::Avx512 => unsafe { x86::pack512(rows_b, dsts, w, wp) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                Isa::Avx2 => unsafe { x86::pack256(rows_b, dsts, w, wp) },
                #[cfg(not(target_arch = "x86_64"))]
                _ => unreachable!("no SIMD path off x86-64; detect() returns None"),
            }
            let a = Panel {
                a: ops.a,
                p0,
                kc,
                m: ops.m,
                b: &panel[..kc * NB],
                wp,
                first: p0 == 0,
                next: (p0 + KC < ops.k).then(|| NextPanel {
                    start: ops.b[(p0 + KC) * ops.n + j0..].as_ptr().cast::<u8>(),
                    stride: ops.n * size_of::<T>(),
                    elem: size_of::<T>(),
                    kc: KC.min(ops.k - p0 - KC),
                    w,
                }),
            };
            match isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `matmul_with` asserted that the CPU has this instruction set.
                Isa::Avx512 => unsafe { x86::panel512(a, acc) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                Isa::Avx2 => unsafe { x86::panel256(a, acc) },
                #[cfg(not(target_arch = "x86_64"))]
                _ => unreachable!("no SIMD path off x86-64; detect() returns None"),
            }
        }
        for (i, row) in rows.iter_mut().enumerate() {
            T::store_f32(&acc[i * NB..i * NB + w], row);
        }
    };
    let len = kc_max * NB + MAX_M * NB;
    PANEL.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            run(&mut buf[..len]);
        }
        Err(_) => run(&mut vec![0.0; len]),
    });
}

/// One widened panel of `B` and what the register tiles need around it.
#[derive(Clone, Copy)]
struct Panel<'a> {
    /// `A` in f32, transposed: `[k, m]`; this panel uses rows `p0..p0 + kc`.
    a: &'a [f32],
    p0: usize,
    kc: usize,
    m: usize,
    /// `B` rows `p0..p0 + kc`, `[kc, NB]`, zero past `wp` columns... of which `wp` are used.
    b: &'a [f32],
    /// Columns to compute: a multiple of 64, at most `NB`.
    wp: usize,
    /// The first panel: accumulators start at zero instead of being reloaded.
    first: bool,
    /// The next panel of `B` in its own dtype, to prefetch; `None` for the last panel.
    next: Option<NextPanel>,
}

/// Where the next `KC × w` panel of `B` lies, for software prefetch (a hint: it changes no
/// result).
#[derive(Clone, Copy)]
struct NextPanel {
    /// Its first element, `B[p0 + KC, j0]`.
    start: *const u8,
    /// Bytes between rows (`n` elements).
    stride: usize,
    /// Bytes per element.
    elem: usize,
    /// Its rows and columns.
    kc: usize,
    w: usize,
}

impl NextPanel {
    /// Prefetches row `p` of the panel, columns `c..c + 64` (those below `w`) into L2.
    #[inline(always)]
    fn row(self, p: usize, c: usize) {
        if p >= self.kc || c >= self.w {
            return;
        }
        let first = p * self.stride + c * self.elem;
        let end = p * self.stride + (c + 64).min(self.w) * self.elem;
        for off in (first..end).step_by(64) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a prefetch is a hint that never faults; `off` stays inside the panel
            // (row p < kc, column < w of a `B` whose rows are `stride` bytes), and
            // `wrapping_add` makes no in-bounds claim.
            unsafe {
                use std::arch::x86_64::{_MM_HINT_T1, _mm_prefetch};
                _mm_prefetch::<_MM_HINT_T1>(self.start.wrapping_add(off).cast::<i8>());
            }
        }
    }
}

/// The order-defining reference: `c[i,j] = fma(a[i,p], b[p,j], c)` for `p = 0..k`, on plain
/// scalars. Tests compare both SIMD paths with it bit for bit.
#[cfg(test)]
pub(crate) fn reference<T: Element>(a: &[T], b: &[T], m: usize, k: usize, n: usize) -> Vec<f32> {
    let (mut a32, mut b32) = (vec![0f32; a.len()], vec![0f32; b.len()]);
    T::load_f32(a, &mut a32);
    T::load_f32(b, &mut b32);
    (0..m * n)
        .map(|e| {
            let (i, j) = (e / n, e % n);
            (0..k).fold(0f32, |c, p| a32[i * k + p].mul_add(b32[p * n + j], c))
        })
        .collect()
}

/// Widens `w` columns of each `B` row into a panel row and zeroes columns `w..wp`. Inlined
/// into the `#[target_feature]` wrappers below, so the dtype's conversion loop is vectorized
/// for the wider registers (same bits: the loop is exact integer work or `vcvtph2ps`).
#[inline(always)]
fn pack<'a, T: Element>(
    src: impl Iterator<Item = &'a [T]>,
    dst: impl Iterator<Item = &'a mut [f32]>,
    w: usize,
    wp: usize,
) {
    for (s, d) in src.zip(dst) {
        T::load_f32(&s[..w], &mut d[..w]);
        d[w..wp].fill(0.0);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Element, NB, Panel, pack};

    /// [`pack`](super::pack) compiled for AVX-512.
    ///
    /// # Safety
    /// AVX-512 F and BW are available.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
    pub(super) unsafe fn pack512<'a, T: Element>(
        src: impl Iterator<Item = &'a [T]>,
        dst: impl Iterator<Item = &'a mut [f32]>,
        w: usize,
        wp: usize,
    ) {
        pack(src, dst, w, wp);
    }

    /// [`pack`](super::pack) compiled for AVX2.
    ///
    /// # Safety
    /// AVX2 is available.
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn pack256<'a, T: Element>(
        src: impl Iterator<Item = &'a [T]>,
        dst: impl Iterator<Item = &'a mut [f32]>,
        w: usize,
        wp: usize,
    ) {
        pack(src, dst, w, wp);
    }

    /// Defines `$name::<MR, NV>(panel, r0, c, acc)`: rows `r0..r0 + MR` × columns
    /// `c..c + LANES·NV` of one panel (`LANES` = 16 for `__m512`, 8 for `__m256`), accumulated
    /// into `acc` (`[MAX_M, NB]`, loaded first unless this is the first panel), compiled for
    /// `$features`. The lane width changes how many columns one instruction covers, never the
    /// chain of FMAs an output element goes through.
    ///
    /// The first row tile of a strip (`r0 == 0`) also prefetches the strip's columns of the
    /// *next* panel of `B`, one row per `p`: the pack that follows then reads from cache. `B`
    /// rows are `n` elements apart, so a panel is `KC` short runs the hardware prefetchers only
    /// pick up after the first lines of each.
    macro_rules! tile {
        ($name:ident, $features:literal, $v:ty, $lanes:literal, $zero:ident, $load:ident,
         $store:ident, $set1:ident, $fma:ident) => {
            /// # Safety
            /// The CPU has the enabled features; `r0 + MR ≤ m`, `c + LANES·NV ≤ NB`.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn $name<const MR: usize, const NV: usize>(
                t: Panel<'_>,
                r0: usize,
                c: usize,
                acc: &mut [f32],
            ) {
                assert!(r0 + MR <= t.m && c + $lanes * NV <= NB && acc.len() >= t.m * NB);
                let mut r: [[$v; NV]; MR] = [[$zero(); NV]; MR];
                if !t.first {
                    for (i, row) in r.iter_mut().enumerate() {
                        for (v, x) in row.iter_mut().enumerate() {
                            // SAFETY: (r0 + i)·NB + c + LANES·(v + 1) ≤ m·NB ≤ acc.len()
                            // (asserted).
                            *x = unsafe { $load(acc.as_ptr().add((r0 + i) * NB + c + $lanes * v)) };
                        }
                    }
                }
                let a = t.a.as_ptr();
                let b = t.b.as_ptr();
                let fetch = if r0 == 0 { t.next } else { None };
                for p in 0..t.kc {
                    if let Some(next) = fetch {
                        next.row(p, c);
                    }
                    let mut bv: [$v; NV] = [$zero(); NV];
                    for (v, x) in bv.iter_mut().enumerate() {
                        // SAFETY: p < kc and c + LANES·(v + 1) ≤ NB, inside the `[kc, NB]`
                        // panel.
                        *x = unsafe { $load(b.add(p * NB + c + $lanes * v)) };
                    }
                    for (i, row) in r.iter_mut().enumerate() {
                        // SAFETY: r0 + i < m and p0 + p < k, inside `a` (`[k, m]`).
                        let x = $set1(unsafe { *a.add((t.p0 + p) * t.m + r0 + i) });
                        for (acc, &y) in row.iter_mut().zip(&bv) {
                            *acc = $fma(x, y, *acc);
                        }
                    }
                }
                for (i, row) in r.iter().enumerate() {
                    for (v, &x) in row.iter().enumerate() {
                        // SAFETY: as for the loads above.
                        unsafe { $store(acc.as_mut_ptr().add((r0 + i) * NB + c + $lanes * v), x) };
                    }
                }
            }
        };
    }
    tile!(
        tile512,
        "avx512f,avx512vl,avx2,fma",
        __m512,
        16,
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        _mm512_set1_ps,
        _mm512_fmadd_ps
    );
    tile!(
        tile256,
        "avx2,fma",
        __m256,
        8,
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        _mm256_storeu_ps,
        _mm256_set1_ps,
        _mm256_fmadd_ps
    );

    /// Calls `$tile::<MR, NV>$args` for the runtime `$mr`, with `NV` from the table.
    macro_rules! by_rows {
        ($mr:expr, $tile:ident, [$($m:literal => $nv:literal),*], $args:tt) => {
            match $mr {
                $($m => $tile::<$m, $nv> $args,)*
                _ => unreachable!("row tile of {} rows", $mr),
            }
        };
    }

    /// One panel with AVX-512's 32 registers and 16-lane vectors: row tiles of at most 6 rows
    /// (more rows split into near-equal tiles), strips of 64 columns (4 vectors): ≤ 24
    /// accumulators, and each broadcast of `A` feeds 4 FMAs. A strip's `KC × 64` slice of the
    /// panel (32 KiB) is read again by the next row tile from L1/L2.
    ///
    /// # Safety
    /// AVX-512 F and VL and FMA are available.
    #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
    pub(super) unsafe fn panel512(t: Panel<'_>, acc: &mut [f32]) {
        let tiles = t.m.div_ceil(6);
        for c in (0..t.wp).step_by(64) {
            let mut r0 = 0;
            for left in (1..=tiles).rev() {
                let mr = (t.m - r0).div_ceil(left);
                // SAFETY: CPU features (our contract); rows r0..r0 + mr ≤ m; c + 64 ≤ wp ≤ NB
                // because wp is a multiple of 64.
                unsafe {
                    by_rows!(mr, tile512, [1 => 4, 2 => 4, 3 => 4, 4 => 4, 5 => 4, 6 => 4],
                        (t, r0, c, acc))
                }
                r0 += mr;
            }
        }
    }

    /// One panel with AVX2's 16 registers: row tiles of at most 8 rows (9..16 rows split in
    /// two), strips of `8·NV` columns with at most 12 accumulators.
    ///
    /// # Safety
    /// AVX2 and FMA are available.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn panel256(t: Panel<'_>, acc: &mut [f32]) {
        let mut r0 = 0;
        while r0 < t.m {
            let mr = if t.m - r0 > 8 {
                (t.m - r0).div_ceil(2)
            } else {
                t.m - r0
            };
            let nv = match mr {
                1 | 2 => 4,
                3..=6 => 2,
                _ => 1,
            };
            for c in (0..t.wp).step_by(8 * nv) {
                // SAFETY: CPU features hold; rows r0..r0 + mr ≤ m; c + 8·nv ≤ wp ≤ NB because
                // wp is a multiple of 64.
                unsafe {
                    match nv {
                        4 => by_rows!(mr, tile256, [1 => 4, 2 => 4], (t, r0, c, acc)),
                        2 => {
                            by_rows!(mr, tile256, [3 => 2, 4 => 2, 5 => 2, 6 => 2], (t, r0, c, acc))
                        }
                        _ => by_rows!(mr, tile256, [7 => 1, 8 => 1], (t, r0, c, acc)),
                    }
                }
            }
            r0 += mr;
        }
    }
}
