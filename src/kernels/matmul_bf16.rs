//! bf16 matrix product on the AVX512-BF16 dot-product instruction (`vdpbf16ps`), taken only
//! where the operands make it ordinary IEEE f32 arithmetic.
//!
//! # Why this exists
//! The general path widens bf16 to f32 and runs an f32 GEMM: 16 multiply-adds per AVX-512
//! instruction. `vdpbf16ps` multiplies 32 bf16 pairs and adds them into 16 f32 lanes, twice the
//! work per instruction on the same ports, and reads half the bytes. PyTorch's oneDNN bf16 GEMM
//! is built on it.
//!
//! # Why its results obey R6.2–R6.4 and R6.9
//! For each f32 lane `i`, `vdpbf16ps acc, x, y` adds `x[2i]·y[2i]` and `x[2i+1]·y[2i+1]` to
//! `acc[i]`. A product of two bf16 values (8-bit significands) has at most 16 significant bits, so
//! it is exact in f32; what the instruction rounds is the additions, to nearest even, at most
//! one rounding per product added. It differs from IEEE f32 arithmetic in one way only: it
//! treats subnormal inputs and results as zero (DAZ/FTZ, whatever MXCSR says). So it is taken only
//! where no subnormal can occur ([`fits`]):
//! - no element of `A` or `B` is a bf16 subnormal;
//! - with `ea`, `eb` the smallest biased exponents among the non-zero elements of `A` and of
//!   the `B` columns a work unit covers, `ea + eb ≥ 142`. A non-zero bf16 value is an integer
//!   times `2^(e−134)`, so every product is an integer multiple of `g = 2^(ea+eb−268) ≥ 2^−126`;
//!   rounding a multiple of `g` to f32 gives a multiple of `g`, so every partial sum is one too,
//!   and a non-zero one is at least `2^−126`, the smallest normal f32.
//!
//! Each output element is then a sum of `k` exact products from a zero accumulator, with at
//! most one round-to-nearest per product, in a fixed order (pairs `p = 0, 1, …` of `k`,
//! accumulators stored and reloaded exactly between `k` blocks), rounded once to bf16 at the
//! end (R6.3): the classic bound `|c − c*| ≤ γ_k·(|A|·|B|)` holds, which is R6.9 with room.
//! Threads split output tiles only, never a sum, so the bits depend on the input bits and the
//! shapes alone (R6.4) — including which path is taken: when any unit finds operands outside
//! the guard, [`matmul_bf16_dot`] reports `false` and the caller computes the whole product on
//! the general path, so subnormals are never flushed.
//!
//! # Tiling
//! With `k` even, `A` is not packed: the pair `p` the register tile broadcasts for row `r` is
//! the 4 bytes of that row at column `2p`, so it reads the rows in place ([`TileA`]) and `A`
//! is only scanned for the guard's exponent (packing it was 7% of a 1000³ product). With `k`
//! odd, `A` is packed once per product, in parallel, into `MR`-row tiles of `k`-pairs
//! (`[tile][pair][MR]` u32, each u32 the two bf16 of one row, the missing last one zero) in a
//! buffer the calling thread keeps, finding the guard's exponent in the same pass. A work unit
//! is a block of at most [`PANELS_PER_UNIT`] panels of `NR` output columns of a batch (and, where that makes fewer than
//! [`UNITS_PER_THREAD`] per thread, a chunk of row tiles); blocks and chunks are cut evenly, so
//! units differ by at most one panel or tile. A unit packs its columns of `B`, [`KC`] pairs at a
//! time, into a per-thread buffer (`[panel][pair][NR]` u32 that stays in L2; when `k` is one
//! block, the thread's next unit reuses it if it is the next row chunk of the same columns),
//! then runs the `MR × NR` register tile (24 accumulators, 3 vectors of 16 lanes per row) over
//! every row tile and panel. Units are claimed one at a time through
//! [`KernelPool::claim_units`](super::matmul::KernelPool::claim_units), so a core freed early
//! takes more, and a product that starts beside another gets its own core at the next unit
//! boundary; the guard's scan of `A` runs on the claiming thread (a rayon join there could
//! take the other product's work and hold this one until it ends).

use std::cell::RefCell;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use half::bf16;
use rayon::prelude::*;

use super::bf16::f32_to_bf16;
#[cfg(target_arch = "x86_64")]
use super::bf16::round32;
use super::kind::MatmulDims;
use super::matmul::{gemm_pool, with_kept, with_scratch};

/// Rows of a register tile.
const MR: usize = 8;
/// f32 lanes per vector.
const LANES: usize = 16;
/// Vectors of columns in a register tile.
const NV: usize = 3;
/// Columns of a register tile (a panel of packed `B`).
const NR: usize = NV * LANES;
/// Panels per work unit at most.
const PANELS_PER_UNIT: usize = 2;
/// Work units wanted per thread, so that claiming them one at a time balances the threads.
const UNITS_PER_THREAD: usize = 8;
/// `k` pairs per packed block of `B`: `KC × 2 NR` u32 is 192 KiB, which stays in L2.
const KC: usize = 512;
/// Below this many output columns the padding to whole panels wastes too much: decline.
const MIN_N: usize = 32;
/// Products below this many multiply-adds run on the calling thread.
const PARALLEL_MIN_MACS: usize = 1 << 18;
/// The guard's bound on `ea + eb` (see the module docs): `g = 2^(ea+eb−268) ≥ 2^−126`.
const EXPONENT_SUM_MIN: u16 = 142;

/// Whether this CPU has the instructions this module needs (AVX-512 F, BW and BF16).
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        has!("avx512f") && has!("avx512bw") && has!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// A bf16's exponent for the guard: its biased exponent (`255` for inf/NaN), `255` for ±0 (a
/// zero product adds nothing), and `0` for a subnormal (which the instruction would flush).
#[inline(always)]
fn exponent_key(bits: u16) -> u16 {
    if bits & 0x7fff == 0 {
        0xff
    } else {
        (bits >> 7) & 0xff
    }
}

/// The smallest [`exponent_key`] of `xs` (`255` when empty); one pass that vectorises.
fn min_exponent_key(xs: &[bf16]) -> u16 {
    xs.iter()
        .fold(0xff, |m, x| m.min(exponent_key(x.to_bits())))
}

/// Whether products of elements with smallest exponent keys `ea` and `eb` keep every partial
/// sum normal or zero (module docs).
fn fits(ea: u16, eb: u16) -> bool {
    ea != 0 && eb != 0 && ea + eb >= EXPONENT_SUM_MIN
}

/// `out[b] = a[b] × rhs(b)` on `vdpbf16ps`, or `false` when this CPU lacks it, `n` is too
/// small, or the operands fail the guard; then `out` may hold partial results and the caller
/// must compute the whole product another way. Slices are validated by the caller (`k > 0`,
/// non-empty output).
pub(crate) fn matmul_bf16_dot(
    a: &[bf16],
    b: &[bf16],
    out: &mut [bf16],
    dims: MatmulDims,
    threads: usize,
) -> bool {
    if !available() || dims.n < MIN_N || dims.m == 0 || dims.k == 0 {
        return false;
    }
    run(a, b, out, dims, threads)
}

/// The shape of one product and where a unit's pieces come from.
#[derive(Clone, Copy)]
struct Plan {
    dims: MatmulDims,
    /// `k` pairs (`k` rounded up to even; the padding is zero in both operands).
    pairs: usize,
    /// Row tiles per batch.
    tiles: usize,
    /// Panels of `NR` columns, and the blocks of panels they are cut into, per batch.
    panels: usize,
    col_blocks: usize,
    /// Chunks of row tiles per column block.
    row_chunks: usize,
    /// Whether the product runs in the kernel pool (several threads and enough work).
    parallel: bool,
    /// The guard's exponent of `A`.
    ea: u16,
    /// This product's number in the process (names the `B` blocks a thread keeps packed).
    id: u64,
}

impl Plan {
    fn units(&self) -> usize {
        self.dims.batch * self.row_chunks * self.col_blocks
    }

    /// `(batch, row tiles, columns)` of unit `u`.
    ///
    /// The row chunks of a column block are consecutive units, so a thread that claims
    /// them one after the other (one product per core, `claim_units`) packs that block of `B`
    /// once ([`PackedB`]).
    fn unit(&self, u: usize) -> (usize, Range<usize>, Range<usize>) {
        let rc = u % self.row_chunks;
        let jb = (u / self.row_chunks) % self.col_blocks;
        let bt = u / (self.col_blocks * self.row_chunks);
        (bt, even(self.tiles, self.row_chunks, rc), self.columns(jb))
    }

    /// The output columns of column block `jb`.
    fn columns(&self, jb: usize) -> Range<usize> {
        let p = even(self.panels, self.col_blocks, jb);
        p.start * NR..(p.end * NR).min(self.dims.n)
    }

    /// The unit holding output row `r` (of all batches) and column block `jb`.
    fn unit_of(&self, r: usize, jb: usize) -> usize {
        let (bt, tile) = (r / self.dims.m, r % self.dims.m / MR);
        // The last chunk whose first tile is at most `tile` (inverse of `even`).
        let rc = ((tile + 1) * self.row_chunks - 1) / self.tiles;
        (bt * self.col_blocks + jb) * self.row_chunks + rc
    }
}

/// Part `i` of `0..total` cut into `parts` ranges whose lengths differ by at most one.
fn even(total: usize, parts: usize, i: usize) -> Range<usize> {
    i * total / parts..(i + 1) * total / parts
}

fn run(a: &[bf16], b: &[bf16], out: &mut [bf16], dims: MatmulDims, threads: usize) -> bool {
    let MatmulDims { batch, m, k, n, .. } = dims;
    let pairs = k.div_ceil(2);
    let tiles = m.div_ceil(MR);
    let panels = n.div_ceil(NR);
    let col_blocks = panels.div_ceil(PANELS_PER_UNIT);
    let macs = batch.saturating_mul(m).saturating_mul(k).saturating_mul(n);
    let parallel = threads > 1 && macs >= PARALLEL_MIN_MACS;
    // Enough units for the threads to balance, as long as a chunk keeps 4 row tiles (a unit
    // repacks its columns of `B` unless its thread just packed them, which only pays back
    // over several tiles).
    let wanted = UNITS_PER_THREAD * threads;
    let row_chunks = if parallel && batch * col_blocks < wanted {
        wanted.div_ceil(batch * col_blocks).min(tiles / 4).max(1)
    } else {
        1
    };
    let mut plan = Plan {
        dims,
        pairs,
        tiles,
        panels,
        col_blocks,
        row_chunks,
        parallel,
        ea: 0,
        id: NEXT_PRODUCT.fetch_add(1, Ordering::Relaxed),
    };
    if k.is_multiple_of(2) {
        // Pair `p` of a row of `A` is its 4 bytes at column `2p`: the register tile reads the
        // rows in place, and `A` is only scanned for the guard.
        return run_units(&mut plan, a, None, b, out, threads);
    }
    let tile_len = pairs * MR;
    // Every element is written by `pack_a_tile` before it is read.
    with_kept(&PACKED_A, batch * tiles * tile_len, |packed_a| {
        run_units(&mut plan, a, Some(packed_a), b, out, threads)
    })
}

/// Packs row tile `tile` of batch `bt` of `A` into `dst` (`[pair][MR]` u32, each u32 the bf16 of
/// columns `2p` (low half) and `2p + 1` (high half), zero past `m` rows and `k` columns), and
/// returns the smallest [`exponent_key`] of the tile's elements.
fn pack_a_tile(a: &[bf16], m: usize, k: usize, bt: usize, tile: usize, dst: &mut [u32]) -> u16 {
    let live = MR.min(m - tile * MR);
    let mut min_key = 0xff;
    for r in 0..MR {
        let row = if r < live {
            &a[(bt * m + tile * MR + r) * k..][..k]
        } else {
            &[]
        };
        // A separate pass over the contiguous row, so that it vectorises.
        min_key = min_key.min(min_exponent_key(row));
        let (pairs, odd) = row.as_chunks::<2>();
        let mut slots = dst.chunks_exact_mut(MR).map(|d| &mut d[r]);
        for ([lo, hi], d) in pairs.iter().zip(&mut slots) {
            *d = u32::from(lo.to_bits()) | u32::from(hi.to_bits()) << 16;
        }
        // The last column of an odd `k`, then zeros (rows past `m`, and nothing else).
        let mut rest = odd.iter().map(|lo| u32::from(lo.to_bits()));
        for d in slots {
            *d = rest.next().unwrap_or(0);
        }
    }
    min_key
}

/// Where the register tiles read `A` from.
#[derive(Clone, Copy)]
enum ASource<'a> {
    /// `A` itself, row-major (`k` even: a pair is two neighbouring elements of a row).
    Rows(&'a [bf16]),
    /// `A` packed by [`pack_a_tile`] (`k` odd: the last pair needs a zero high half).
    Packed(&'a [u32]),
}

/// The guard's exponent of `A`: packs it into `packed` on the way when given, else scans it.
fn prepare_a(plan: &Plan, a: &[bf16], packed: Option<&mut [u32]>, parallel: bool) -> u16 {
    let MatmulDims { m, k, .. } = plan.dims;
    let tiles = plan.tiles;
    let pack = |(t, dst): (usize, &mut [u32])| pack_a_tile(a, m, k, t / tiles, t % tiles, dst);
    let tile_len = plan.pairs * MR;
    let min = match (packed, parallel) {
        (Some(buf), true) => buf.par_chunks_mut(tile_len).enumerate().map(pack).min(),
        (Some(buf), false) => buf.chunks_mut(tile_len).enumerate().map(pack).min(),
        // The scan alone is a few tens of µs for 1000²: not worth a rayon join, whose waiting
        // thread may take another kernel's work and hold this product until that ends.
        (None, _) => Some(min_exponent_key(a)),
    };
    min.unwrap_or(0xff)
}

/// [`run`] once the plan is made: prepares `A` (finding the guard's exponent), then computes
/// the units, claimed one at a time by the threads.
fn run_units(
    plan: &mut Plan,
    a: &[bf16],
    mut packed: Option<&mut [u32]>,
    b: &[bf16],
    out: &mut [bf16],
    threads: usize,
) -> bool {
    let n = plan.dims.n;
    let units = plan.units();
    // Each unit's output pieces (row `i` of the unit, its columns).
    let mut pieces: Vec<Vec<&mut [bf16]>> = (0..units).map(|_| Vec::new()).collect();
    for (r, mut row) in out.chunks_mut(n).enumerate() {
        for jb in 0..plan.col_blocks {
            let (piece, rest) = row.split_at_mut(plan.columns(jb).len());
            pieces[plan.unit_of(r, jb)].push(piece);
            row = rest;
        }
    }
    let pool = gemm_pool().filter(|_| plan.parallel);
    let go = |plan: &mut Plan| -> bool {
        // In parallel only while no other kernel runs: a thread waiting for the pieces of
        // `A` would take another kernel's work meanwhile and hold this product until it ends.
        let split = pool.is_some_and(|p| !p.is_shared());
        plan.ea = prepare_a(plan, a, packed.as_deref_mut(), split);
        if !fits(plan.ea, 0xff) {
            return false;
        }
        let plan = &*plan;
        let src = match packed.as_deref() {
            Some(p) => ASource::Packed(p),
            None => ASource::Rows(a),
        };
        let Some(pool) = pool else {
            return pieces
                .into_iter()
                .enumerate()
                .all(|(u, mut rows)| unit(plan, u, src, b, &mut rows));
        };
        pool.claim_pieces(threads, pieces, &|u, rows| unit(plan, u, src, b, rows))
    };
    match pool {
        Some(pool) => pool.install(|| go(plan)),
        None => go(plan),
    }
}

/// Numbers products for [`PackedB::holds`].
static NEXT_PRODUCT: AtomicU64 = AtomicU64::new(0);

/// A thread's packed columns of `B`, and which they are.
#[derive(Default)]
struct PackedB {
    buf: Vec<u32>,
    /// `(product, B number, first column, exponent key)` of the whole column block `buf`
    /// holds, when `k` is a single block; `None` when it holds one block of several (or
    /// nothing).
    holds: Option<(u64, usize, usize, u16)>,
}

/// Runs `f` on this thread's packed `B` (a fresh one if re-entered).
fn with_packed_b(f: impl FnOnce(&mut PackedB)) {
    PACKED_B.with(|cell| match cell.try_borrow_mut() {
        Ok(mut packed) => f(&mut packed),
        Err(_) => f(&mut PackedB::default()),
    });
}

thread_local! {
    /// The calling thread's packed `A` (up to `SCRATCH_KEEP_BYTES`), kept so replays
    /// allocate nothing and touch no fresh pages.
    static PACKED_A: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    /// A unit's packed columns of `B` (`KC × 2 NR` u32, 192 KiB at most), kept per thread so
    /// replays allocate nothing.
    static PACKED_B: RefCell<PackedB> = RefCell::new(PackedB::default());
}

/// Computes unit `u`: `rows[i]` is its piece of output row `i` (of its row chunk). Returns
/// `false`, with the unit partly written, when its columns of `B` fail the guard.
fn unit(plan: &Plan, u: usize, a: ASource<'_>, b: &[bf16], rows: &mut [&mut [bf16]]) -> bool {
    let MatmulDims {
        m,
        k,
        n,
        rhs_batched,
        ..
    } = plan.dims;
    let (bt, tiles, cols) = plan.unit(u);
    let (t0, t1, j0, w) = (tiles.start, tiles.end, cols.start, cols.len());
    let panels = w.div_ceil(NR);
    let b = if rhs_batched {
        &b[bt * k * n..(bt + 1) * k * n]
    } else {
        &b[..k * n]
    };
    let row0 = t0 * MR;
    let nrows = (t1 * MR).min(m) - row0;
    assert!(
        rows.len() == nrows && rows.iter().all(|r| r.len() == w),
        "matmul_bf16_dot: unit {u} has {} rows, expected {nrows} of {w} columns",
        rows.len()
    );
    let blocks = plan.pairs.div_ceil(KC);
    // Accumulators kept between `k` blocks: [tile row][panel column], only when there are
    // several blocks.
    let keep = if blocks > 1 { nrows * panels * NR } else { 0 };
    let mut ok = true;
    with_scratch(keep, |kept| {
        with_packed_b(|packed| {
            // One register tile's accumulators in memory, reused by every tile of the unit:
            // `tile` starts from zero on the first block, so it is zeroed only here.
            let mut acc = [0f32; MR * NR];
            let bb = if rhs_batched { bt } else { 0 };
            for blk in 0..blocks {
                let p0 = blk * KC;
                let kc = KC.min(plan.pairs - p0);
                let eb = match packed.holds {
                    // This thread's previous unit packed these very columns (another row chunk
                    // of the same product, `k` one block).
                    Some((id, held_bb, held_j0, eb))
                        if blocks == 1 && (id, held_bb, held_j0) == (plan.id, bb, j0) =>
                    {
                        eb
                    }
                    _ => {
                        // Every lane is written by `pack_b` (padding included), so stale
                        // contents from an earlier unit are never read.
                        let buf = &mut packed.buf;
                        if buf.len() < panels * kc * NR {
                            buf.resize(panels * kc * NR, 0);
                        }
                        let eb = pack_b(b, k, n, j0, w, p0, kc, buf);
                        packed.holds = (blocks == 1).then_some((plan.id, bb, j0, eb));
                        eb
                    }
                };
                if !fits(plan.ea, eb) {
                    ok = false;
                    return;
                }
                let buf = &packed.buf;
                let (first, last) = (blk == 0, blk + 1 == blocks);
                for t in t0..t1 {
                    let live = MR.min(m - t * MR);
                    let tile_a = match a {
                        ASource::Packed(p) => {
                            let at = ((bt * plan.tiles + t) * plan.pairs + p0) * MR;
                            TileA::packed(&p[at..][..kc * MR])
                        }
                        ASource::Rows(a) => TileA::rows(a, bt * m + t * MR, live, k, p0, kc),
                    };
                    let r0 = t * MR - row0;
                    for pn in 0..panels {
                        let c0 = pn * NR;
                        let cols = NR.min(w - c0);
                        if !first {
                            for r in 0..live {
                                let at = (r0 + r) * panels * NR + c0;
                                acc[r * NR..r * NR + cols].copy_from_slice(&kept[at..at + cols]);
                            }
                        }
                        // A whole tile of the last block is rounded from the registers.
                        let direct = (last && live == MR && cols == NR)
                            .then(|| rows.get_mut(r0..r0 + MR))
                            .flatten()
                            .and_then(|rs| <&mut [&mut [bf16]; MR]>::try_from(rs).ok())
                            .map(|rs| rs.each_mut().map(|row| &mut row[c0..c0 + NR]));
                        let rounded = direct.is_some();
                        // SAFETY: `run` is only reached when `available()` said the CPU has
                        // AVX-512 F, BW and BF16; the slices hold `kc` pairs of `MR` rows and of
                        // `NR` columns (checked by `tile`'s asserts).
                        unsafe {
                            let b = &buf[pn * kc * NR..][..kc * NR];
                            tile(kc, &tile_a, b, &mut acc, first, direct);
                        };
                        if rounded {
                            continue;
                        }
                        for r in 0..live {
                            let src = &acc[r * NR..r * NR + cols];
                            if last {
                                f32_to_bf16(src, &mut rows[r0 + r][c0..c0 + cols]);
                            } else {
                                let at = (r0 + r) * panels * NR + c0;
                                kept[at..at + cols].copy_from_slice(src);
                            }
                        }
                    }
                }
            }
        });
    });
    ok
}

/// Packs `B` rows `2·p0 .. 2·(p0 + kc)` (zero past `k`), columns `j0 .. j0 + w` (zero past `w`
/// up to whole panels) into `dst` as `[panel][pair][NR]` u32, each u32 the bf16 of rows `2p`
/// (low half) and `2p + 1` (high half); returns the smallest [`exponent_key`] it packed.
#[allow(clippy::too_many_arguments)]
fn pack_b(
    b: &[bf16],
    k: usize,
    n: usize,
    j0: usize,
    w: usize,
    p0: usize,
    kc: usize,
    dst: &mut [u32],
) -> u16 {
    let panels = w.div_ceil(NR);
    assert!(
        dst.len() >= panels * kc * NR && 2 * (p0 + kc) <= k + 1 && j0 + w <= n,
        "matmul_bf16_dot: packing {kc} pairs at {p0} of {w} columns does not fit"
    );
    // Whole groups of `LANES` columns go 16 at a time; the last partial group and the padding
    // up to whole panels go one by one.
    let full = if cfg!(target_arch = "x86_64") {
        w / LANES
    } else {
        0
    };
    let mut min_key = 0xff;
    for p in 0..kc {
        let r = 2 * (p0 + p);
        let lo = &b[r * n + j0..][..w];
        let hi = (r + 1 < k).then(|| &b[(r + 1) * n + j0..][..w]);
        let group = |g: usize| (g / NV * kc + p) * NR + g % NV * LANES;
        // The rows `PREFETCH_PAIRS` pairs ahead, into L2: rows `n` elements apart are separate
        // streams the hardware prefetcher follows poorly, and a small `m` leaves the packing
        // waiting on memory.
        let ahead = r + 2 * PREFETCH_PAIRS;
        if ahead < k.min(2 * (p0 + kc) + 2 * PREFETCH_PAIRS) {
            for row in ahead..(ahead + 2).min(k) {
                prefetch_l2(&b[row * n + j0..][..w]);
            }
        }
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: `run` is only reached when `available()` said the CPU has AVX-512 F and
            // BW; `interleave16` checks its slices.
            min_key = min_key.min(unsafe { interleave16(lo, hi, full, &group, dst) });
        }
        for g in full..panels * NV {
            let d = &mut dst[group(g)..][..LANES];
            for (c, d) in (g * LANES..).zip(d.iter_mut()) {
                let l = lo.get(c).map_or(0, |x| x.to_bits());
                let h = hi.and_then(|h| h.get(c)).map_or(0, |x| x.to_bits());
                min_key = min_key.min(exponent_key(l)).min(exponent_key(h));
                *d = u32::from(l) | u32::from(h) << 16;
            }
        }
    }
    min_key
}

/// Pairs of `B` rows fetched ahead of the packing.
const PREFETCH_PAIRS: usize = 8;

/// Asks for the cache lines of `xs` in L2 (a hint: it changes no result).
#[inline(always)]
fn prefetch_l2(xs: &[bf16]) {
    #[cfg(target_arch = "x86_64")]
    for off in (0..size_of_val(xs)).step_by(64) {
        // SAFETY: a prefetch never faults and reads nothing; `off` is inside `xs`.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(
                xs.as_ptr().cast::<i8>().add(off),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = xs;
}

/// The first `groups` groups of 16 columns of one pair of rows (`hi` is `None` past `k`: zero)
/// interleaved into `dst[at(g)..][..16]`; returns the smallest [`exponent_key`] among them.
///
/// # Safety
/// The CPU must have AVX-512 F and BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn interleave16(
    lo: &[bf16],
    hi: Option<&[bf16]>,
    groups: usize,
    at: &impl Fn(usize) -> usize,
    dst: &mut [u32],
) -> u16 {
    use std::arch::x86_64::*;
    assert!(
        lo.len() >= groups * LANES && hi.is_none_or(|h| h.len() >= groups * LANES),
        "matmul_bf16_dot: interleaving {groups} groups past the row"
    );
    // Lane 2c takes column c of `lo` (elements 0..16), lane 2c + 1 column c of `hi` (16..32).
    let idx = _mm512_set_epi16(
        31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4,
        19, 3, 18, 2, 17, 1, 16, 0,
    );
    let magnitude = _mm512_set1_epi16(0x7fff);
    let zero_key = _mm512_set1_epi16(0xff);
    let mut keys = zero_key;
    for g in 0..groups {
        let c = g * LANES;
        let d = at(g);
        assert!(
            d + LANES <= dst.len(),
            "matmul_bf16_dot: packed group past the buffer"
        );
        // SAFETY: columns `c..c + 16` lie in `lo` (and `hi`), asserted above; 16 bf16 are the
        // 32 bytes a 256-bit load reads.
        let (l, h) = unsafe {
            (
                _mm256_loadu_si256(lo.as_ptr().add(c).cast()),
                hi.map_or(_mm256_setzero_si256(), |h| {
                    _mm256_loadu_si256(h.as_ptr().add(c).cast())
                }),
            )
        };
        let both = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(l), h);
        // SAFETY: `d + 16 ≤ dst.len()` (asserted), 64 bytes of u32.
        unsafe {
            _mm512_storeu_si512(
                dst.as_mut_ptr().add(d).cast(),
                _mm512_permutexvar_epi16(idx, both),
            )
        };
        // The exponent key of every element (module docs): zero magnitudes count as 255.
        let abs = _mm512_and_si512(both, magnitude);
        let exp = _mm512_srli_epi16::<7>(abs);
        let zero = _mm512_cmpeq_epi16_mask(abs, _mm512_setzero_si512());
        keys = _mm512_min_epu16(keys, _mm512_mask_mov_epi16(exp, zero, zero_key));
    }
    let mut lanes = [0u16; 32];
    // SAFETY: 64 bytes into a 64-byte array.
    unsafe { _mm512_storeu_si512(lanes.as_mut_ptr().cast(), keys) };
    lanes.into_iter().min().unwrap_or(0xff)
}

/// The `A` side of one register tile: for each of its `MR` rows, where pair `p` (two bf16 read
/// as one u32, the even column in the low half) is: `rows[r] + p * stride` u32, for
/// `p < pairs`. Built only by its two constructors, which check the memory behind every read.
struct TileA<'a> {
    rows: [*const u32; MR],
    stride: usize,
    pairs: usize,
    _borrow: std::marker::PhantomData<&'a [bf16]>,
}

impl<'a> TileA<'a> {
    /// A tile packed by [`pack_a_tile`]: `[pair][MR]` u32.
    fn packed(tile: &'a [u32]) -> TileA<'a> {
        let pairs = tile.len() / MR;
        TileA {
            // `wrapping_add`: in bounds for `r < MR ≤ tile.len()` when the tile is non-empty,
            // and never read when it is empty.
            rows: std::array::from_fn(|r| tile.as_ptr().wrapping_add(r)),
            stride: MR,
            pairs,
            _borrow: std::marker::PhantomData,
        }
    }

    /// Rows `first .. first + live` of row-major `a` (`k` columns, `k` even), pairs
    /// `p0 .. p0 + kc`; rows past `live` repeat the last live row (their accumulators are
    /// computed and never stored).
    fn rows(a: &'a [bf16], first: usize, live: usize, k: usize, p0: usize, kc: usize) -> TileA<'a> {
        assert!(
            k.is_multiple_of(2) && 2 * (p0 + kc) <= k && live >= 1 && (first + live) * k <= a.len(),
            "matmul_bf16_dot: rows {first}+{live} of A, pairs {p0}+{kc}, do not fit"
        );
        TileA {
            rows: std::array::from_fn(|r| {
                let row = &a[(first + r.min(live - 1)) * k..][..k];
                row[2 * p0..].as_ptr().cast::<u32>()
            }),
            stride: 1,
            pairs: kc,
            _borrow: std::marker::PhantomData,
        }
    }
}

/// The register tile: `acc[r][c] = Σ_p` (from zero when `from_zero`, else `acc[r][c] +`) over
/// `pairs` pairs of row `r` of `a` times column `c` of `b` (`[pair][NR]` u32), in order of `p`.
/// With `out` (a whole tile of the last `k` block), row `r` is rounded to bf16 straight from
/// the registers into `out[r]` (its `NR` columns) and `acc` is left as it was: the same
/// rounding as [`f32_to_bf16`], without storing and reloading the accumulators.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and BF16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn tile(
    pairs: usize,
    a: &TileA<'_>,
    b: &[u32],
    acc: &mut [f32; MR * NR],
    from_zero: bool,
    out: Option<[&mut [bf16]; MR]>,
) {
    use std::arch::x86_64::*;
    assert!(
        a.pairs >= pairs && b.len() >= pairs * NR,
        "matmul_bf16_dot: tile operands shorter than {pairs} pairs"
    );
    // SAFETY: `__m512i` and `__m512bh` are both 64 bytes of plain bits; the instruction reads
    // the lanes as 32 bf16.
    let bh = |v: __m512i| unsafe { std::mem::transmute::<__m512i, __m512bh>(v) };
    let mut c = [[_mm512_setzero_ps(); NV]; MR];
    for (r, row) in c.iter_mut().enumerate().filter(|_| !from_zero) {
        for (v, x) in row.iter_mut().enumerate() {
            // SAFETY: `r * NR + v * LANES + 16 ≤ MR * NR`, inside `acc`.
            *x = unsafe { _mm512_loadu_ps(acc.as_ptr().add(r * NR + v * LANES)) };
        }
    }
    let pb = b.as_ptr();
    for p in 0..pairs {
        // SAFETY: pair `p < pairs` of `b` is `NR` u32 at `p * NR`, inside `b` (asserted).
        let bv = unsafe {
            let at = pb.add(p * NR);
            [
                bh(_mm512_loadu_si512(at.cast())),
                bh(_mm512_loadu_si512(at.add(LANES).cast())),
                bh(_mm512_loadu_si512(at.add(2 * LANES).cast())),
            ]
        };
        let at = p * a.stride;
        for (row, &pa) in c.iter_mut().zip(&a.rows) {
            // SAFETY: `p < pairs ≤ a.pairs`, and `TileA`'s constructors checked that each row
            // holds `a.pairs` pairs at `stride` (unaligned: two bf16 of a row).
            let x = bh(_mm512_set1_epi32(
                unsafe { pa.add(at).read_unaligned() } as i32
            ));
            for (v, acc) in row.iter_mut().enumerate() {
                *acc = _mm512_dpbf16_ps(*acc, x, bv[v]);
            }
        }
    }
    if let Some(out) = out {
        for (row, [x0, x1, x2]) in out.into_iter().zip(c) {
            assert!(
                row.len() >= NR,
                "matmul_bf16_dot: output row shorter than a panel"
            );
            let (first, last) = (round32(x0, x1), round32(x2, _mm512_setzero_ps()));
            // SAFETY: `row` holds at least `NR` = 48 bf16 (asserted): 64 bytes at 0 and the
            // low 32 bytes of `last` at 32 elements, unaligned.
            unsafe {
                _mm512_storeu_si512(row.as_mut_ptr().cast(), first);
                _mm256_storeu_si256(
                    row.as_mut_ptr().add(2 * LANES).cast(),
                    _mm512_castsi512_si256(last),
                );
            }
        }
        return;
    }
    for (r, row) in c.iter().enumerate() {
        for (v, x) in row.iter().enumerate() {
            // SAFETY: as for the loads above.
            unsafe { _mm512_storeu_ps(acc.as_mut_ptr().add(r * NR + v * LANES), *x) };
        }
    }
}

/// Off x86-64 [`available`] is false and this is never reached.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile(
    _: usize,
    _: &TileA<'_>,
    _: &[u32],
    _: &mut [f32; MR * NR],
    _: bool,
    _: Option<[&mut [bf16]; MR]>,
) {
    unreachable!("matmul_bf16_dot: no AVX512-BF16 off x86-64; available() returns false")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponent_keys_mark_zero_normal_and_subnormal() {
        assert_eq!(exponent_key(0x0000), 0xff);
        assert_eq!(exponent_key(0x8000), 0xff);
        assert_eq!(exponent_key(0x3f80), 127); // 1.0
        assert_eq!(exponent_key(0x0001), 0); // smallest subnormal
        assert_eq!(exponent_key(0x0080), 1); // smallest normal
        assert_eq!(exponent_key(0x7f80), 0xff); // inf
        assert!(fits(127, 127));
        assert!(fits(71, 71));
        assert!(!fits(71, 70));
        assert!(!fits(0, 0xff));
    }

    /// The register tile alone on L1-resident operands: its instruction rate, to compare with
    /// a whole product's. `cargo test --release --lib tile_peak_timing -- --ignored --nocapture`
    #[test]
    #[ignore = "prints timings"]
    fn tile_peak_timing() {
        if !available() {
            return;
        }
        let pairs = 64;
        let a = vec![0x3f80_3f80u32; pairs * MR];
        let b = vec![0x3f80_3f80u32; pairs * NR];
        let mut acc = [0f32; MR * NR];
        let reps = 200_000;
        let t = std::time::Instant::now();
        for _ in 0..reps {
            // SAFETY: `available()` said the CPU has AVX-512 F and BF16; sizes as asserted.
            unsafe { tile(pairs, &TileA::packed(&a), &b, &mut acc, true, None) };
            std::hint::black_box(&mut acc);
        }
        let ns = t.elapsed().as_secs_f64() * 1e9;
        let instrs = (reps * pairs * MR * NV) as f64;
        println!(
            "tile: {:.2} vdpbf16ps per ns ({instrs:.0} in {:.1} ms)",
            instrs / ns,
            ns / 1e6
        );
    }
}
