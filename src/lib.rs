//! # tagstream
//!
//! A multi-stream tensor runtime: split model work across streams, order it with **tagged
//! events**, and capture the whole multi-stream program into a graph that replays with almost
//! no launch overhead ([`compile()`] with [`Mode::ReduceOverhead`]). It follows the API of
//! Ascend torchair's `npu_create_tagged_event` / `npu_tagged_event_record` / `npu_tagged_event_wait` /
//! `npu_stream_switch`, with one difference that matters: a cross-stream read that no event
//! orders is refused with [`Error::DataRace`] before anything runs, so results never depend on
//! thread timing.
//!
//! ## Concept map
//! | concept | here | torchair / CUDA |
//! |---|---|---|
//! | value on a device | [`Tensor`] (immutable, asynchronous) | `torch.Tensor` |
//! | stream | a worker thread per tag, chosen by [`scope::stream_switch`] | `npu_stream_switch(tag)` |
//! | event | [`ops::TaggedEvent`] from [`ops::create_tagged_event`] | `npu_create_tagged_event(tag)` |
//! | record / wait | [`ops::tagged_event_record`] / [`ops::tagged_event_wait`] | `npu_tagged_event_record/wait` |
//! | host sync | [`Tensor::to_vec_f32`], [`synchronize`] | `.cpu()`, `torch.npu.synchronize()` |
//! | capture once, replay | [`compile()`] + [`Mode::ReduceOverhead`], [`Compiled::run`] | `torch.compile(.., backend=npu_backend)`, `mode="reduce-overhead"` (aclgraph) |
//!
//! ## Quick start: the seed model, eagerly on two streams
//! ```
//! use tagstream::ops::{create_tagged_event, tagged_event_record, tagged_event_wait};
//! use tagstream::scope::stream_switch;
//! use tagstream::{DType, Tensor};
//!
//! let ev = create_tagged_event("lib-doc-66")?;
//! let x: Vec<Tensor> = (0..4).map(|i| Tensor::randn(&[64, 64], DType::F16, i)).collect::<Result<_, _>>()?;
//! let add = x[0].add(&x[1])?;          // main stream
//! tagged_event_record(&ev)?;           // recorded on main
//! let mm = {
//!     let _on_1 = stream_switch("lib-doc-1")?;
//!     tagged_event_wait(&ev)?;         // stream "lib-doc-1" waits for the record
//!     x[2].matmul(&x[3])?
//! };
//! let mm1 = x[2].matmul(&x[3])?;       // overlaps `mm`
//! assert_eq!(mm.to_vec_f32()?, mm1.to_vec_f32()?);
//! assert_eq!(add.shape(), &[64, 64]);
//! # Ok::<(), tagstream::Error>(())
//! ```
//!
//! ## Debug builds and warnings
//! The kernels (gemm, f16/bf16 conversions) run about 150 times slower unoptimised, and a
//! dependency's profile settings do not reach your crate. Add to your `Cargo.toml`:
//! ```toml
//! [profile.dev.package."*"]
//! opt-level = 3
//! ```
//! (the seed model at 1000×1000 f16: 18–21 s per run in a plain debug build, 0.07 s with these
//! lines, 0.06 s in release).
//!
//! tagstream reports conditions that are not errors through [`tracing`](https://docs.rs/tracing)
//! warnings, for instance a [`Compiled`] that reached its capture limit and runs eagerly from
//! then on. They show only where a subscriber is installed, e.g.
//! `tracing_subscriber::fmt().init()` at the start of `main`.
//!
//! ## Pitfalls
//! - `let _ = stream_switch("1")?;` drops the guard at once: the ops after it run on the
//!   enclosing stream. Bind it (`let _s = ...`) or use [`scope::with_stream`].
//! - Create tagged events outside a closure given to [`compile()`]: the closure runs again for
//!   each capture, and creating the same tag twice is [`Error::TagInUse`].
//!
//! The rules are in the repository's `docs/semantics.md`; rule ids such as R3.5 in these docs
//! refer to it. `docs/architecture.md` maps the modules.

mod backend;
pub mod compile;
mod device;
mod dispatch;
mod dtype;
pub mod error;
mod graph;
/// Zero-copy interop with other array libraries (numpy, DLPack producers and consumers):
/// [`Tensor::host_view`] exports a CPU tensor's elements read-only without a copy;
/// [`from_owner`](interop::from_owner) and [`from_external`](interop::from_external) make a
/// CPU tensor over memory someone else owns. See the module's items for the lifetime rules.
pub mod interop {
    pub use crate::tensor::external::{
        HostElement, HostView, bf16, f16, from_external, from_owner,
    };
}
mod kernels;
#[cfg(feature = "workloads")]
pub mod models;
pub mod ops;
// The unit tests check the kernels against the reference, with or without the feature.
#[cfg(any(test, feature = "workloads"))]
pub mod reference;
mod runtime;
pub mod scope;
pub mod tensor;
pub mod trace;

pub use compile::{CompileConfig, CompileStats, Compiled, MemoryStats, Mode, compile};
pub use device::{Device, cuda_is_available};
pub use error::{Error, Result};
pub use tensor::{DType, Tensor};

/// How much work one stream has been given, from [`stream_activity`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamActivity {
    /// The stream's tag (`"default"` for the main stream).
    pub tag: String,
    /// Entries (ops, records, waits) issued on the stream so far.
    pub issued: u64,
    /// Entries the stream's worker has executed so far.
    pub executed: u64,
}

/// Every stream created so far in this process, main stream first, with its entry counts.
///
/// ```
/// let before = tagstream::stream_activity();
/// assert_eq!(before[0].tag, "default");
/// ```
pub fn stream_activity() -> Vec<StreamActivity> {
    dispatch::stream_activity()
        .into_iter()
        .map(|(tag, issued, executed)| StreamActivity {
            tag: tag.to_string(),
            issued,
            executed,
        })
        .collect()
}

/// Chaos mode (SC37): with `Some(seed)`, every stream worker stalls at seeded random points
/// (yields, spins, sleeps of up to a fraction of a millisecond) before each entry and each
/// replay instruction; `None` turns it off. Results never change (R3.10, R5.6): tests run the
/// same program with and without chaos and compare bits. Process-wide; also set by the
/// environment variable `TAGSTREAM_CHAOS=<seed>` at start-up.
///
/// ```
/// tagstream::set_chaos(Some(42));
/// let x = tagstream::Tensor::full(&[4], 1.0, tagstream::DType::F32)?;
/// assert_eq!(x.add(&x)?.to_vec_f32()?, vec![2.0; 4]);
/// tagstream::set_chaos(None);
/// # Ok::<(), tagstream::Error>(())
/// ```
pub fn set_chaos(seed: Option<u64>) {
    backend::cpu::set_chaos(seed);
}

/// Caps the threads one op may use on a stream (`0` restores the default: every core, shared
/// with the other streams' matmuls through one pool, so a core freed by one goes to the others).
///
/// With `1`, every matmul runs on its stream's worker thread alone, so independent branches on
/// different streams are what uses the cores. Results never depend on it (R6.4). Process-wide;
/// takes effect for ops that start after the call.
///
/// ```
/// tagstream::set_threads_per_stream(1);
/// let a = tagstream::Tensor::full(&[64, 64], 1.0, tagstream::DType::F32)?;
/// assert_eq!(a.matmul(&a)?.to_vec_f32()?[0], 64.0);
/// tagstream::set_threads_per_stream(0);
/// # Ok::<(), tagstream::Error>(())
/// ```
pub fn set_threads_per_stream(n: usize) {
    backend::cpu::cpu().set_threads_per_stream(n);
}

/// Blocks until every entry issued on any stream before the call has executed (R3.3).
///
/// Afterwards every stream treats that work as done (R3.6). Returns the first failure a
/// worker reported since the last `synchronize`, if any.
///
/// # Errors
/// A pending [`Error::UnbalancedStreamSwitch`] of this thread (R2.8); a worker failure;
/// [`Error::HostSyncInCapture`] on a thread that is capturing a graph (R4.3).
///
/// ```
/// let x = tagstream::Tensor::full(&[2, 2], 1.0, tagstream::DType::F32)?;
/// let y = x.exp()?; // enqueued on the main stream, returns at once
/// tagstream::synchronize()?; // y is computed now
/// # Ok::<(), tagstream::Error>(())
/// ```
pub fn synchronize() -> Result<()> {
    dispatch::synchronize()
}

/// The README's Rust example, compiled and run as a doctest so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
