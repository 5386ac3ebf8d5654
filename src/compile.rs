//! `compile`: run a multi-stream closure eagerly or capture it once and replay it.
//!
//! Owns [`compile`], [`CompileConfig`], [`Mode`], [`Compiled`] (the capture cache keyed by input
//! signature, the capture limit and the eager fallback) and [`CompileStats`]. It decides *which*
//! path a call takes (R5.3–R5.4, R5.10); tracing, checks, planning and replay belong to
//! `graph`, and the streams to `runtime`. It never touches kernels or clocks itself.

use std::collections::HashMap;
use std::fmt;

use crate::device::Device;
use crate::dispatch::{self, CompiledGraph};
use crate::dtype::DType;
use crate::error::Result;
use crate::graph::assign::{AutoConfig, DEFAULT_MIN_CHAIN_COST};
use crate::tensor::handle::Tensor;

/// How [`Compiled::run`] executes the closure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Call the closure on every run and issue its work eagerly, with the fork/join closure of
    /// R4.4 as real entries (R3.11).
    #[default]
    Eager,
    /// Capture the closure once per input signature into a multi-stream graph, prove it free of
    /// races and deadlocks, plan its memory, and replay it on later calls (torchair's
    /// `mode="reduce-overhead"`, semantics §4–5).
    ReduceOverhead,
}

/// Options for [`compile`]. `CompileConfig::default()` is [`Mode::Eager`] with a capture limit
/// of 64.
///
/// ```
/// use tagstream::{CompileConfig, Mode};
///
/// let config = CompileConfig::default().mode(Mode::ReduceOverhead).capture_limit(8);
/// assert_eq!((config.get_mode(), config.get_capture_limit()), (Mode::ReduceOverhead, 8));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileConfig {
    mode: Mode,
    capture_limit: usize,
    auto_streams: Option<usize>,
    auto_min_chain_cost: u64,
}

impl Default for CompileConfig {
    fn default() -> Self {
        CompileConfig {
            mode: Mode::Eager,
            capture_limit: 64,
            auto_streams: None,
            auto_min_chain_cost: DEFAULT_MIN_CHAIN_COST,
        }
    }
}

impl CompileConfig {
    /// Sets the execution mode.
    #[must_use]
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets how many signatures may be captured before every call falls back to eager
    /// execution for good (R5.4). `0` falls back on the first call.
    ///
    /// The fallback is logged once as a `tracing` warning (target `tagstream`), which shows only
    /// where a `tracing` subscriber is installed, e.g. `tracing_subscriber::fmt().init()` at the
    /// start of `main`. [`Compiled::stats`] tells it too: `fell_back_to_eager`.
    #[must_use]
    pub fn capture_limit(mut self, n: usize) -> Self {
        self.capture_limit = n;
        self
    }

    /// Automatic parallelism (R11.1–R11.7): each capture re-assigns the ops the closure issued
    /// on the main stream to at most `max_streams` streams, counting every stream of the graph
    /// (main and the user's own). Added streams are tagged `"auto:1"`, `"auto:2"`, ….
    /// User stream scopes, events and copy-ins stay where they were written. Only
    /// [`Mode::ReduceOverhead`] captures are assigned; an eager call runs as written.
    ///
    /// `max_streams` 0 is treated as 1 (nothing moves), as is any value not above the number
    /// of streams the graph already uses.
    ///
    /// ```
    /// use tagstream::{CompileConfig, Mode};
    /// let c = CompileConfig::default().mode(Mode::ReduceOverhead).auto_streams(4);
    /// assert_eq!(c.get_auto_streams(), Some(4));
    /// assert_eq!(CompileConfig::default().auto_streams(0).get_auto_streams(), Some(1));
    /// ```
    #[must_use]
    pub fn auto_streams(mut self, max_streams: usize) -> Self {
        self.auto_streams = Some(max_streams.max(1));
        self
    }

    /// The cost (flops plus bytes moved, from the ops' shapes) below which a chain of ops is
    /// not given a stream of its own by [`auto_streams`](Self::auto_streams): splitting work
    /// that small costs more in cross-stream waits than it gains. Default 2^22; 0 splits
    /// every independent chain (tests use it on tiny tensors).
    #[must_use]
    pub fn auto_min_chain_cost(mut self, cost: u64) -> Self {
        self.auto_min_chain_cost = cost;
        self
    }

    /// The `auto_streams` limit, `None` when off.
    pub fn get_auto_streams(&self) -> Option<usize> {
        self.auto_streams
    }

    /// See [`auto_min_chain_cost`](Self::auto_min_chain_cost).
    pub fn get_auto_min_chain_cost(&self) -> u64 {
        self.auto_min_chain_cost
    }

    fn auto(&self) -> Option<AutoConfig> {
        self.auto_streams.map(|max_streams| AutoConfig {
            max_streams,
            min_chain_cost: self.auto_min_chain_cost,
        })
    }

    /// The configured mode.
    pub fn get_mode(&self) -> Mode {
        self.mode
    }

    /// The configured capture limit.
    pub fn get_capture_limit(&self) -> usize {
        self.capture_limit
    }
}

/// Counters of a [`Compiled`] (R5.10). A failed call changes none of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompileStats {
    /// Successful captures (the capturing call is not also counted as a replay).
    pub captures: u64,
    /// Calls served by an existing graph.
    pub replays: u64,
    /// Calls run eagerly (`Mode::Eager`, or after the fallback).
    pub eager_runs: u64,
    /// Whether the capture limit was hit and every call now runs eagerly (R5.4).
    pub fell_back_to_eager: bool,
}

pub use crate::graph::program::MemoryStats;

/// The ordered `(shape, dtype, device)` of a call's inputs (semantics §0).
pub(crate) type Signature = Vec<(Vec<usize>, DType, Device)>;

pub(crate) fn signature_of(inputs: &[Tensor]) -> Signature {
    inputs
        .iter()
        .map(|t| (t.shape().to_vec(), t.dtype(), t.device()))
        .collect()
}

type Closure = Box<dyn FnMut(&[Tensor]) -> Result<Vec<Tensor>> + Send>;

/// A closure prepared by [`compile`]; see [`Compiled::run`].
pub struct Compiled {
    f: Closure,
    config: CompileConfig,
    stats: CompileStats,
    graphs: HashMap<Signature, CompiledGraph>,
    /// The signature of the graph the latest run used, for the dump and memory figures.
    latest: Option<Signature>,
}

impl fmt::Debug for Compiled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compiled")
            .field("config", &self.config)
            .field("stats", &self.stats)
            .field("graphs", &self.graphs.len())
            .finish_non_exhaustive()
    }
}

/// Prepares `f` for repeated calls in the given mode.
///
/// Nothing runs until [`Compiled::run`]. The closure owns whatever it uses (tagged events
/// included); under [`Mode::ReduceOverhead`] it is called once per new input signature.
///
/// ```
/// use tagstream::ops::{create_tagged_event, tagged_event_record, tagged_event_wait};
/// use tagstream::scope::stream_switch;
/// use tagstream::{compile, CompileConfig, DType, Mode, Tensor};
///
/// let ev = create_tagged_event("compile-doc-ev")?;
/// let mut model = compile(
///     move |x: &[Tensor]| {
///         let a = x[0].exp()?;
///         tagged_event_record(&ev)?;
///         let b = {
///             let _s = stream_switch("compile-doc-side")?;
///             tagged_event_wait(&ev)?;
///             a.add(&x[0])?
///         };
///         Ok(vec![a, b])
///     },
///     CompileConfig::default().mode(Mode::ReduceOverhead),
/// );
/// let x = Tensor::full(&[2, 2], 0.0, DType::F32)?;
/// let first = model.run(&[x.clone()])?; // captures, then runs the graph once
/// let again = model.run(&[x])?; // replays
/// assert_eq!(again[1].to_vec_f32()?, vec![1.0; 4]);
/// assert_eq!((model.stats().captures, model.stats().replays), (1, 1));
/// assert_eq!(first[0].to_vec_f32()?, vec![1.0; 4]);
/// # Ok::<(), tagstream::Error>(())
/// ```
///
/// # Create tagged events outside the closure
/// The closure runs again for every capture (each new input signature) and, in
/// [`Mode::Eager`], on every call. Event tags are process-unique, so a tagged event created
/// inside the closure makes its second run fail with
/// [`Error::TagInUse`](crate::Error::TagInUse): the first call works and a later one fails.
/// Create the event before `compile` and move it in, as above.
///
/// ```
/// use tagstream::ops::{create_tagged_event, tagged_event_record};
/// use tagstream::{compile, CompileConfig, DType, Error, Mode, Tensor};
///
/// let mut model = compile(
///     |x: &[Tensor]| {
///         let ev = create_tagged_event("compile-doc-inside")?; // wrong: once per capture
///         tagged_event_record(&ev)?;
///         Ok(vec![x[0].exp()?])
///     },
///     CompileConfig::default().mode(Mode::ReduceOverhead),
/// );
/// model.run(&[Tensor::zeros(&[2], DType::F32)?])?; // first capture: creates the tag
/// let err = model.run(&[Tensor::zeros(&[3], DType::F32)?]).unwrap_err(); // a second capture
/// assert!(matches!(err, Error::TagInUse { tag } if tag == "compile-doc-inside"));
/// # Ok::<(), tagstream::Error>(())
/// ```
pub fn compile<F>(f: F, config: CompileConfig) -> Compiled
where
    F: FnMut(&[Tensor]) -> Result<Vec<Tensor>> + Send + 'static,
{
    Compiled {
        f: Box::new(f),
        config,
        stats: CompileStats::default(),
        graphs: HashMap::new(),
        latest: None,
    }
}

impl Compiled {
    /// The counters (R5.10).
    pub fn stats(&self) -> CompileStats {
        self.stats
    }

    /// The configuration this closure was compiled with.
    pub fn config(&self) -> CompileConfig {
        self.config
    }

    /// Number of graphs currently cached (one per captured signature).
    pub fn cached_graphs(&self) -> usize {
        self.graphs.len()
    }

    fn latest_graph(&self) -> Option<&CompiledGraph> {
        self.latest.as_ref().and_then(|s| self.graphs.get(s))
    }

    /// A readable dump of the per-stream entry order of the graph used by the latest run: one
    /// line per stream, main stream first, e.g.
    /// `"1": wait(fork), wait("66"), matmul, record(join1)`. `None` if the latest run did not
    /// use a graph. With [`CompileConfig::auto_streams`] a section follows that lists each
    /// chain of ops, the stream it got and its cost (R11.7).
    pub fn graph_dump(&self) -> Option<String> {
        self.latest_graph().map(|g| g.dump())
    }

    /// The tags of the streams the latest run's graph uses, main stream first, then in order
    /// of first use in the graph (`"auto:1"`, … with [`CompileConfig::auto_streams`]). `None`
    /// if the latest run did not use a graph (it ran eagerly).
    pub fn graph_streams(&self) -> Option<Vec<String>> {
        self.latest_graph().map(|g| g.streams())
    }

    /// The same graph as [`graph_dump`](Compiled::graph_dump), in Graphviz DOT: one cluster per
    /// stream, stream order as solid edges and event bindings as dashed edges.
    pub fn graph_dot(&self) -> Option<String> {
        self.latest_graph().map(|g| g.dot())
    }

    /// Memory figures of the graph used by the latest run.
    pub fn memory_stats(&self) -> Option<MemoryStats> {
        self.latest_graph().map(|g| g.memory_stats())
    }
}

impl Compiled {
    /// Runs the closure on `inputs` (`docs/semantics.md` §4–5).
    ///
    /// - [`Mode::Eager`], or after the fallback: calls the closure and issues its work eagerly
    ///   with the fork/join closure as real entries (R3.11).
    /// - [`Mode::ReduceOverhead`] with a new signature: traces the closure once, checks the graph
    ///   (races, waits without records, cycles), plans its memory, then runs it once like a
    ///   replay (R4.1, R4.13). With a known signature: replays the graph (R5.3).
    ///
    /// The call is asynchronous like every op: the outputs are pending tensors (R5.7). Outputs
    /// are owned: a later replay never writes a buffer the caller still holds (R5.5). For the
    /// length of the call the caller's stream scopes are set aside and the closure starts on
    /// `"default"` (R5.1).
    ///
    /// ```
    /// use tagstream::{compile, CompileConfig, CompileStats, DType, Mode, Tensor};
    ///
    /// let mut model = compile(
    ///     |x: &[Tensor]| Ok(vec![x[0].relu()?.add(&x[0])?]),
    ///     CompileConfig::default().mode(Mode::ReduceOverhead),
    /// );
    /// let small = Tensor::full(&[4], -1.0, DType::F32)?;
    /// let big = Tensor::full(&[8], 2.0, DType::F32)?;
    /// model.run(&[small.clone()])?; // capture for [4] f32
    /// model.run(&[small])?; // replay
    /// let y = model.run(&[big])?; // new signature: a second capture
    /// assert_eq!(y[0].to_vec_f32()?, vec![4.0; 8]);
    /// let CompileStats { captures, replays, eager_runs, .. } = model.stats();
    /// assert_eq!((captures, replays, eager_runs), (2, 1, 0));
    /// assert_eq!(model.cached_graphs(), 2);
    /// let memory = model.memory_stats().unwrap(); // the latest run's graph
    /// assert!(memory.arena_bytes <= memory.value_bytes);
    /// # Ok::<(), tagstream::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::DataRace`](crate::Error::DataRace) when an input is not ordered before the main
    /// stream (R5.2) or the graph has an unordered cross-stream read (R4.8);
    /// [`Error::WaitWithoutRecord`](crate::Error::WaitWithoutRecord) (R4.6);
    /// [`Error::Deadlock`](crate::Error::Deadlock) (R4.7);
    /// [`Error::HostSyncInCapture`](crate::Error::HostSyncInCapture) for a host read inside a
    /// capture, or a `run` nested in one (R4.3);
    /// [`Error::UnbalancedStreamSwitch`](crate::Error::UnbalancedStreamSwitch) (R2.8, R4.11);
    /// any error the closure returns, unchanged. After an error nothing is cached and no counter
    /// changes (R4.12, R5.10).
    pub fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        crate::scope::stack::take_pending_error()?;
        dispatch::refuse_in_capture("Compiled::run", None)?;
        if self.config.mode == Mode::Eager || self.stats.fell_back_to_eager {
            return self.run_eager(inputs);
        }
        let signature = signature_of(inputs);
        if let Some(graph) = self.graphs.get_mut(&signature) {
            let outputs = graph.replay(inputs)?;
            self.stats.replays += 1;
            self.latest = Some(signature);
            return Ok(outputs);
        }
        if self.stats.captures >= self.config.capture_limit as u64 {
            tracing::warn!(
                signature = ?signature,
                capture_limit = self.config.capture_limit,
                "tagstream: capture limit of {} reached by a new input signature {:?}; every \
                 later call of this compiled closure runs eagerly (R5.4)",
                self.config.capture_limit,
                signature,
            );
            self.stats.fell_back_to_eager = true;
            self.graphs.clear();
            self.latest = None;
            return self.run_eager(inputs);
        }
        let mut graph = dispatch::capture(&mut self.f, inputs, self.config.auto())?;
        let outputs = graph.replay(inputs)?;
        self.stats.captures += 1;
        self.graphs.insert(signature.clone(), graph);
        self.latest = Some(signature);
        Ok(outputs)
    }

    fn run_eager(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        let outputs = dispatch::run_eager(&mut self.f, inputs)?;
        self.stats.eager_runs += 1;
        self.latest = None;
        Ok(outputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// R5.11: a `Compiled` can be moved to another thread (one call at a time, `&mut self`).
    #[test]
    fn compiled_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Compiled>();
    }

    #[test]
    fn config_defaults() {
        let c = CompileConfig::default();
        assert_eq!((c.get_mode(), c.get_capture_limit()), (Mode::Eager, 64));
        let c = c.mode(Mode::ReduceOverhead).capture_limit(3);
        assert_eq!(
            (c.get_mode(), c.get_capture_limit()),
            (Mode::ReduceOverhead, 3)
        );
    }
}
