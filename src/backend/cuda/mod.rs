//! The CUDA backend: one context per device, one CUDA stream per logical stream, CUDA events
//! for records and waits, a stream-ordered allocator, NVRTC kernels, cuBLAS, and one CUDA graph
//! per captured [`Program`] (semantics §10).
//!
//! Owns the physical CUDA streams (created on a logical stream's first entry, each with its own
//! cuBLAS handle and fixed workspace, R10.8), the events of records enqueued here, device
//! buffers ([`CudaMem`]: allocated with `cuMemAllocAsync` on the producer's stream, freed with
//! `cuMemFreeAsync` on it after an event from every other stream that read it, R10.5), the
//! kernel module (compiled once per process) and [`CudaExec`] (a program as one CUDA graph).
//!
//! Nothing here runs before [`probe`] has found a driver, cuBLAS and NVRTC: cudarc panics when a
//! library is missing (R10.9). What to launch is decided in plain Rust (`plan`, `source`) and
//! tested without a GPU; every function that calls the driver has only ever been compiled on a
//! machine without one until a GPU session runs `scripts/gpu-check.sh`.

mod launch;
mod plan;
pub(crate) mod source;

use std::collections::VecDeque;
use std::ffi::{CString, c_void};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use cudarc::cublas::{result as blas, sys as blas_sys};
use cudarc::driver::{CudaContext, DriverError, result as drv, sys};

use super::{Backend, Work};
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::program::{Instr, Loc, Program};
use crate::kernels::MatmulDims;
use crate::ops::op::{MAX_OPERANDS, Op};
use crate::runtime::{Issue, StreamId};
use crate::tensor::storage::{Buffer, Data, DataMut, DataRef, DeviceMem};

use crate::device::probe::probe;

use self::launch::{Arg, Spec};

/// cuBLAS workspace per stream: one fixed size in eager and in capture (R10.8).
const WORKSPACE: usize = 32 << 20;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A raw CUDA handle shared between threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Raw<T>(T);
// SAFETY: CUDA driver and cuBLAS handles (streams, events, modules, functions, graph execs) are
// opaque pointers the driver lets any thread of the process use; tagstream serialises the uses
// that must not race (issue under the runtime lock, one handle per stream).
unsafe impl<T> Send for Raw<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for Raw<T> {}

type Stream = Raw<sys::CUstream>;

fn cuda_err(call: &str, e: DriverError, op: &str, stream: &str) -> Error {
    let code = e
        .error_name()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_else(|_| format!("{e:?}"));
    Error::Cuda {
        call: call.into(),
        code,
        op: op.into(),
        stream: stream.into(),
    }
}

fn blas_err(call: &str, e: blas::CublasError, op: &str, stream: &str) -> Error {
    Error::Cuda {
        call: call.into(),
        code: format!("{e:?}"),
        op: op.into(),
        stream: stream.into(),
    }
}

/// The CUDA backend of device `n`, created on first use.
///
/// # Errors
/// [`Error::NoGpu`] naming what the probe found missing, or the index and the device count
/// (R10.9, E18); a CUDA error if the context cannot be created.
static DEVICES: OnceLock<Vec<OnceLock<Result<Cuda>>>> = OnceLock::new();

/// The CUDA backends created so far (what `synchronize` must also wait for).
pub(crate) fn created() -> impl Iterator<Item = &'static Cuda> {
    DEVICES
        .get()
        .into_iter()
        .flatten()
        .filter_map(|slot| slot.get().and_then(|r| r.as_ref().ok()))
}

pub(crate) fn cuda(n: usize) -> Result<&'static Cuda> {
    let count = probe().map_err(|what| Error::NoGpu {
        what: format!("cuda:{n}: {what}"),
    })?;
    let devices = DEVICES.get_or_init(|| (0..count).map(|_| OnceLock::new()).collect());
    let slot = devices.get(n).ok_or_else(|| Error::NoGpu {
        what: format!("cuda:{n}: device index {n} is out of range ({count} device(s))"),
    })?;
    slot.get_or_init(|| Cuda::new(n))
        .as_ref()
        .map_err(Clone::clone)
}

/// One physical CUDA stream with its cuBLAS handle and workspace.
#[derive(Debug)]
struct PhysStream {
    raw: Stream,
    tag: Arc<str>,
    blas: Blas,
    state: Mutex<StreamState>,
}

#[derive(Debug, Default)]
struct StreamState {
    /// The last position enqueued here.
    last: u64,
    /// Events of records (and of replays): positions `lo..=hi` are done once the event is.
    records: VecDeque<(u64, u64, Raw<sys::CUevent>)>,
}

#[derive(Debug)]
struct Blas {
    handle: Raw<blas_sys::cublasHandle_t>,
    _workspace: u64,
}

#[derive(Debug)]
struct Kernels {
    _module: Raw<sys::CUmodule>,
    funcs: std::collections::HashMap<String, Raw<sys::CUfunction>>,
}

/// The CUDA backend of one device.
#[derive(Debug)]
pub(crate) struct Cuda {
    device: Device,
    ctx: Arc<CudaContext>,
    arch: &'static str,
    streams: Mutex<Vec<Option<Arc<PhysStream>>>>,
    kernels: OnceLock<Result<Kernels>>,
    /// Failures in issue order: errors, and index ops' flags not yet known clean (R3.12).
    failures: Mutex<Vec<Failure>>,
}

/// A failure `synchronize` may return: an error, or an index op's flag read once its work is
/// done.
#[derive(Debug)]
enum Failure {
    Error(Error),
    Flag(Arc<Flag>),
}

/// Flags kept unread before [`Cuda::watch`] reads those whose stream is idle.
const FLAGS_BEFORE_SETTLING: usize = 1024;

/// An index op's error word on the device (R3.12, R6.12): the kernel lowers it from
/// [`launch::FLAG_CLEAR`] when an index is out of range; the host reads it once the op has
/// completed (when a value depending on it is read, or at `synchronize`) and turns it into the
/// op's `ExecutionFailed`. Values computed from the op carry the flag, so reading any of them
/// returns that error; the elements themselves hold zeros where an index was bad, never
/// anything read or written out of bounds.
#[derive(Debug)]
struct Flag {
    /// The allocation holding the word (one per eager op; one per replay for all its index
    /// ops), freed when the last flag using it goes.
    mem: Arc<CudaMem>,
    offset: u64,
    /// The stream whose completion implies the word is final.
    stream: Stream,
    op: &'static str,
    tag: Arc<str>,
    /// The indexed dimension's size (for the message).
    len: usize,
    /// Creation order: of several failed flags a value reports the earliest.
    order: u64,
    seen: OnceLock<Option<Error>>,
}

impl Flag {
    fn new(mem: Arc<CudaMem>, offset: u64, stream: Stream, op: &Op, tag: Arc<str>) -> Flag {
        static ORDER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Flag {
            mem,
            offset,
            stream,
            op: op.name(),
            tag,
            len: launch::indexed_len(op),
            order: ORDER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            seen: OnceLock::new(),
        }
    }

    /// The op's error if one of its indices was out of range. Only call once the op's work has
    /// completed (the caller waited for a stream ordered after it).
    fn error(&self) -> Option<Error> {
        self.seen
            .get_or_init(|| {
                let ptr = self.mem.alloc.get()?.ptr + self.offset;
                let err = |e| cuda_err("cuMemcpyDtoH", e, self.op, &self.tag);
                if let Err(e) = self.mem.ctx.bind_to_thread() {
                    return Some(err(e));
                }
                let mut word = [0u64];
                // SAFETY: `ptr` is an 8-byte word of a live allocation; the kernels writing it
                // have completed.
                if let Err(e) = unsafe { drv::memcpy_dtoh_sync(&mut word, ptr) } {
                    return Some(err(e));
                }
                launch::flag_message(word[0], self.len).map(|message| Error::ExecutionFailed {
                    op: self.op.into(),
                    stream: self.tag.to_string(),
                    message,
                })
            })
            .clone()
    }

    /// Read and clean: a value depending on it need not carry it.
    fn is_clean(&self) -> bool {
        matches!(self.seen.get(), Some(None))
    }

    /// Reads the word now if its stream has finished all its work.
    fn settle(&self) -> Option<Option<Error>> {
        if self.seen.get().is_none() {
            // SAFETY: a live stream of this context (streams live for the process).
            if unsafe { sys::cuStreamQuery(self.stream.0) } != sys::cudaError_enum::CUDA_SUCCESS {
                return None;
            }
        }
        Some(self.error())
    }
}

/// The earliest failed flag of `flags` (all of whose ops have completed).
fn poisoned(flags: &[Arc<Flag>]) -> Option<Error> {
    flags.iter().find_map(|f| f.error())
}

/// `flags` sorted by creation, without duplicates or flags known clean.
fn merge_flags(mut flags: Vec<Arc<Flag>>) -> Vec<Arc<Flag>> {
    flags.retain(|f| !f.is_clean());
    flags.sort_by_key(|f| f.order);
    flags.dedup_by(|a, b| Arc::ptr_eq(a, b));
    flags
}

fn poison_of(b: &Buffer) -> Vec<Arc<Flag>> {
    mem_of(b).map_or_else(Vec::new, |m| lock(&m.poison).clone())
}

/// Device memory of one tensor: allocated when its producer is enqueued.
#[derive(Debug)]
pub(crate) struct CudaMem {
    device: Device,
    ctx: Arc<CudaContext>,
    alloc: OnceLock<Alloc>,
    /// Streams other than the owner that read it (R10.5).
    readers: Mutex<Vec<Stream>>,
    /// The flags of the index ops this value was computed from (R3.12): reading it returns
    /// the first of their errors.
    poison: Mutex<Vec<Arc<Flag>>>,
}

#[derive(Debug)]
struct Alloc {
    ptr: u64,
    owner: Stream,
    dtype: DType,
    len: usize,
}

impl CudaMem {
    fn new(device: Device, ctx: Arc<CudaContext>) -> CudaMem {
        CudaMem {
            device,
            ctx,
            alloc: OnceLock::new(),
            readers: Mutex::default(),
            poison: Mutex::default(),
        }
    }
}

impl DeviceMem for CudaMem {
    fn device(&self) -> Device {
        self.device
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Drop for CudaMem {
    fn drop(&mut self) {
        let Some(a) = self.alloc.get() else { return };
        if self.ctx.bind_to_thread().is_err() {
            return; // the context is gone: so is the memory
        }
        let readers = plan::foreign_readers(a.owner, &lock(&self.readers));
        // SAFETY: `ptr` was allocated on `owner` by cuMemAllocAsync and is freed once, here;
        // every foreign reader's work so far is ordered before the free by an event (R10.5).
        // Errors cannot be reported from a destructor; a failed free leaks.
        unsafe {
            for r in readers {
                if let Ok(ev) = drv::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING) {
                    let _ = drv::event::record(ev, r.0);
                    let _ = drv::stream::wait_event(
                        a.owner.0,
                        ev,
                        sys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT,
                    );
                    let _ = drv::event::destroy(ev);
                }
            }
            let _ = drv::free_async(a.ptr, a.owner.0);
        }
    }
}

fn mem_of(b: &Buffer) -> Option<&CudaMem> {
    b.device_mem()?.as_any().downcast_ref::<CudaMem>()
}

/// An operand as a launch sees it.
#[derive(Debug, Clone, Copy)]
struct Operand {
    ptr: u64,
    dtype: DType,
}

impl Cuda {
    fn new(n: usize) -> Result<Cuda> {
        let host = |call: &str, e| cuda_err(call, e, "context", "host");
        let ctx = CudaContext::new(n).map_err(|e| host("cuDevicePrimaryCtxRetain", e))?;
        // SAFETY: called before any allocation: cudarc's per-buffer events would make stream
        // capture fail, and tagstream orders work itself (gpu.md).
        unsafe { ctx.disable_event_tracking() };
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| host("cuDeviceGetAttribute", e))?;
        let arch: &'static str = Box::leak(format!("sm_{major}{minor}").into_boxed_str());
        Ok(Cuda {
            device: Device::Cuda(n),
            ctx,
            arch,
            streams: Mutex::default(),
            kernels: OnceLock::new(),
            failures: Mutex::default(),
        })
    }

    fn bind(&self, op: &str) -> Result<()> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| cuda_err("cuCtxSetCurrent", e, op, "host"))
    }

    /// A pending output buffer in this device's memory (allocated when enqueued).
    pub(crate) fn new_buffer(&self) -> Arc<Buffer> {
        Arc::new(Buffer::on_device(Arc::new(CudaMem::new(
            self.device,
            self.ctx.clone(),
        ))))
    }

    fn kernels(&self) -> Result<&Kernels> {
        self.kernels
            .get_or_init(|| {
                let ptx = source::compile(self.arch).map_err(|log| Error::Cuda {
                    call: "nvrtcCompileProgram".into(),
                    code: log,
                    op: "kernel compilation".into(),
                    stream: "host".into(),
                })?;
                let err = |call: &str, e| cuda_err(call, e, "kernel compilation", "host");
                self.bind("kernel compilation")?;
                let image = CString::new(ptx).map_err(|_| Error::Cuda {
                    call: "cuModuleLoadData".into(),
                    code: "PTX with a NUL byte".into(),
                    op: "kernel compilation".into(),
                    stream: "host".into(),
                })?;
                // SAFETY: `image` is a NUL-terminated PTX image that lives across the call.
                let module = unsafe { drv::module::load_data(image.as_ptr().cast()) }
                    .map_err(|e| err("cuModuleLoadData", e))?;
                let mut funcs = std::collections::HashMap::new();
                for name in source::all_names() {
                    let c = CString::new(name.clone()).expect("kernel names have no NUL");
                    // SAFETY: `module` is loaded and `c` names a kernel of its source.
                    let f = unsafe { drv::module::get_function(module, c) }
                        .map_err(|e| err("cuModuleGetFunction", e))?;
                    funcs.insert(name, Raw(f));
                }
                Ok(Kernels {
                    _module: Raw(module),
                    funcs,
                })
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The physical stream of `stream`, created (with its cuBLAS handle) on first use.
    fn stream(&self, stream: StreamId, tag: &Arc<str>) -> Result<Arc<PhysStream>> {
        let mut streams = lock(&self.streams);
        if let Some(Some(s)) = streams.get(stream) {
            return Ok(s.clone());
        }
        let s = Arc::new(self.new_stream(tag)?);
        if streams.len() <= stream {
            streams.resize(stream + 1, None);
        }
        streams[stream] = Some(s.clone());
        Ok(s)
    }

    fn existing(&self, stream: StreamId) -> Option<Arc<PhysStream>> {
        lock(&self.streams).get(stream).cloned().flatten()
    }

    fn new_stream(&self, tag: &Arc<str>) -> Result<PhysStream> {
        self.bind("stream creation")?;
        let err = |call: &str, e| cuda_err(call, e, "stream creation", tag);
        let raw = drv::stream::create(drv::stream::StreamKind::NonBlocking)
            .map_err(|e| err("cuStreamCreate", e))?;
        let blas = self.new_blas(raw, tag)?;
        Ok(PhysStream {
            raw: Raw(raw),
            tag: tag.clone(),
            blas,
            state: Mutex::default(),
        })
    }

    /// A cuBLAS handle bound to `raw` with its own workspace (never allocates in a graph).
    fn new_blas(&self, raw: sys::CUstream, tag: &str) -> Result<Blas> {
        let berr = |call: &str, e| blas_err(call, e, "stream creation", tag);
        let handle = blas::create_handle().map_err(|e| berr("cublasCreate", e))?;
        // SAFETY: `handle` is fresh; the workspace is a device allocation of WORKSPACE bytes
        // that lives as long as the handle (streams and their handles live for the process).
        unsafe {
            blas::set_stream(handle, raw as _).map_err(|e| berr("cublasSetStream", e))?;
            let ws = drv::malloc_sync(WORKSPACE)
                .map_err(|e| cuda_err("cuMemAlloc", e, "cuBLAS workspace", tag))?;
            blas_sys::cublasSetWorkspace_v2(handle, ws as *mut c_void, WORKSPACE)
                .result()
                .map_err(|e| berr("cublasSetWorkspace", e))?;
            blas_sys::cublasSetMathMode(handle, blas_sys::cublasMath_t::CUBLAS_DEFAULT_MATH)
                .result()
                .map_err(|e| berr("cublasSetMathMode", e))?;
            Ok(Blas {
                handle: Raw(handle),
                _workspace: ws,
            })
        }
    }

    fn report(&self, e: Error) {
        lock(&self.failures).push(Failure::Error(e));
    }

    /// Keeps an index op's flag for `synchronize` (R3.12). A long run without `synchronize`
    /// reads the flags whose stream is idle, so the list (and the words' memory) stays bounded
    /// in practice.
    fn watch(&self, flag: Arc<Flag>) {
        let mut list = lock(&self.failures);
        if list.len() >= FLAGS_BEFORE_SETTLING {
            list.retain_mut(|f| match f {
                Failure::Error(_) => true,
                Failure::Flag(flag) => match flag.settle() {
                    None => true,
                    Some(None) => false,
                    Some(Some(e)) => {
                        *f = Failure::Error(e);
                        true
                    }
                },
            });
        }
        list.push(Failure::Flag(flag));
    }

    /// The event that completes position `seq` of `stream`, if a record of this backend covers
    /// it (a missing one is either a CPU record or one already observed complete).
    fn event_for(&self, stream: StreamId, seq: u64) -> Option<Raw<sys::CUevent>> {
        let s = self.existing(stream)?;
        let st = lock(&s.state);
        st.records
            .iter()
            .find(|(lo, hi, _)| (*lo..=*hi).contains(&seq))
            .map(|r| r.2)
    }

    /// Whether a record enqueued here covers `(stream, seq)` (dispatch routes waits by it).
    pub(crate) fn holds_record(&self, stream: StreamId, seq: u64) -> bool {
        self.event_for(stream, seq).is_some()
    }

    /// The last position of `stream` enqueued on this device (0: none).
    pub(crate) fn last_enqueued(&self, stream: StreamId) -> u64 {
        self.existing(stream).map_or(0, |s| lock(&s.state).last)
    }

    /// Enqueues one op on `raw` (eager or capture): the same launch in both (R10.8). `flag` is
    /// the device address of an index op's error word (0 for other ops).
    fn launch(&self, ps: &PhysStream, op: &Op, ins: &[Operand], out: u64, flag: u64) -> Result<()> {
        let name = op.name();
        let k = self.kernels()?;
        let l = match launch::spec(op, ins, out, flag).map_err(|m| internal(name, &m))? {
            Spec::Nothing => return Ok(()),
            Spec::Gemm(dims) => return self.gemm(ps, name, dims, op.out_dtype, ins, out),
            Spec::Kernel(l) => l,
        };
        let f = k.funcs.get(&l.kernel).copied().ok_or_else(|| Error::Cuda {
            call: "cuModuleGetFunction".into(),
            code: format!("no kernel {}", l.kernel),
            op: name.into(),
            stream: ps.tag.to_string(),
        })?;
        let mut args = l.args;
        let mut params: Vec<*mut c_void> = args.iter_mut().map(Arg::as_param).collect();
        // SAFETY: `f` is a kernel of the loaded module whose parameters are exactly `args`
        // (pointers to device memory of the op's validated sizes, counts, by-value structs of
        // the layout `source` declares); the pointers in `params` point into `args`, alive
        // across the call, which copies them.
        unsafe {
            drv::launch_kernel(
                f.0,
                (l.grid.0, 1, 1),
                (l.grid.1, 1, 1),
                0,
                ps.raw.0,
                &mut params,
            )
        }
        .map_err(|e| cuda_err("cuLaunchKernel", e, name, &ps.tag))
    }

    fn gemm(
        &self,
        ps: &PhysStream,
        name: &str,
        d: MatmulDims,
        dtype: DType,
        ins: &[Operand],
        out: u64,
    ) -> Result<()> {
        use blas_sys::cudaDataType_t as T;
        if d.batch == 0 || d.m == 0 || d.n == 0 {
            return Ok(());
        }
        let ty = match dtype {
            DType::F32 => T::CUDA_R_32F,
            DType::F16 => T::CUDA_R_16F,
            DType::BF16 => T::CUDA_R_16BF,
            // Validation refuses I32 operands for matmul (R6.1).
            DType::I32 => return Err(internal("matmul", "an I32 operand passed validation")),
        };
        let (alpha, beta) = (1.0f32, 0.0f32);
        let int = |x: usize| i32::try_from(x).unwrap_or(i32::MAX);
        // Row-major C = A·B is column-major Cᵀ = Bᵀ·Aᵀ: swap the operands and m/n.
        // SAFETY: the pointers are device allocations of the validated shapes (A: batch·m·k,
        // B: k·n or batch·k·n, C: batch·m·n elements of `dtype`); alpha/beta are host f32 as
        // CUBLAS_COMPUTE_32F requires; the handle is this stream's.
        unsafe {
            blas::gemm_strided_batched_ex(
                ps.blas.handle.0,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                int(d.n),
                int(d.m),
                int(d.k),
                (&alpha as *const f32).cast(),
                ins[1].ptr as *const c_void,
                ty,
                int(d.n),
                if d.rhs_batched { (d.k * d.n) as i64 } else { 0 },
                ins[0].ptr as *const c_void,
                ty,
                int(d.k),
                (d.m * d.k) as i64,
                (&beta as *const f32).cast(),
                out as *mut c_void,
                ty,
                int(d.n),
                (d.m * d.n) as i64,
                int(d.batch),
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| blas_err("cublasGemmStridedBatchedEx", e, name, &ps.tag))
    }

    /// Allocates `len` elements of `dtype` on `ps` (stream-ordered, R10.5).
    fn alloc(&self, ps: &PhysStream, op: &str, dtype: DType, len: usize) -> Result<u64> {
        let bytes = (len * dtype.size_in_bytes()).max(16);
        // SAFETY: a plain stream-ordered allocation on a live stream of this context.
        unsafe { drv::malloc_async(ps.raw.0, bytes) }.map_err(|e| match e.0 {
            sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY => Error::OutOfMemory {
                op: op.into(),
                bytes,
            },
            _ => cuda_err("cuMemAllocAsync", e, op, &ps.tag),
        })
    }

    /// An eager op: failures become the output's value and are reported (R3.12).
    fn eager_op(&self, ps: &PhysStream, op: &Op, inputs: &[Arc<Buffer>], output: &Buffer) {
        if let Err(e) = self.try_eager_op(ps, op, inputs, output) {
            if !matches!(inputs.iter().find_map(|b| b.get()), Some(Err(_))) {
                self.report(e.clone());
            }
            output.fill(Err(e));
        }
    }

    fn try_eager_op(
        &self,
        ps: &PhysStream,
        op: &Op,
        inputs: &[Arc<Buffer>],
        output: &Buffer,
    ) -> Result<()> {
        let name = op.name();
        let mut ins = [Operand {
            ptr: 0,
            dtype: DType::F32,
        }; MAX_OPERANDS];
        for (slot, b) in ins.iter_mut().zip(inputs) {
            if let Some(Err(e)) = b.get() {
                return Err(e.clone());
            }
            *slot = self.operand(ps, b, name)?;
        }
        let mem = mem_of(output).ok_or_else(|| internal(name, "an output not on the device"))?;
        let ptr = self.alloc(ps, name, op.out_dtype, op.out_len())?;
        let _ = mem.alloc.set(Alloc {
            ptr,
            owner: ps.raw,
            dtype: op.out_dtype,
            len: op.out_len(),
        });
        let flag = if launch::needs_flag(op) {
            Some(Arc::new(self.new_flag(ps, op)?))
        } else {
            None
        };
        let word = flag
            .as_ref()
            .map_or(0, |f| f.mem.alloc.get().map_or(0, |a| a.ptr));
        self.launch(ps, op, &ins[..inputs.len()], ptr, word)?;
        // The output carries its inputs' flags and its own (R3.12).
        let mut poison: Vec<Arc<Flag>> = inputs.iter().flat_map(|b| poison_of(b)).collect();
        if let Some(f) = flag {
            self.watch(f.clone());
            poison.push(f);
        }
        *lock(&mem.poison) = merge_flags(poison);
        output.fill(Ok(Data::F32(Vec::new())));
        Ok(())
    }

    /// A fresh flag word for an index op on `ps`, cleared on the stream before the launch.
    fn new_flag(&self, ps: &PhysStream, op: &Op) -> Result<Flag> {
        let ptr = self.alloc(ps, op.name(), DType::I32, 2)?;
        let mem = Arc::new(CudaMem::new(self.device, self.ctx.clone()));
        let _ = mem.alloc.set(Alloc {
            ptr,
            owner: ps.raw,
            dtype: DType::I32,
            len: 2,
        });
        // SAFETY: `ptr` is a fresh 16-byte allocation on this stream.
        unsafe { drv::memset_d8_async(ptr, 0xff, 8, ps.raw.0) }
            .map_err(|e| cuda_err("cuMemsetD8Async", e, op.name(), &ps.tag))?;
        Ok(Flag::new(mem, 0, ps.raw, op, ps.tag.clone()))
    }

    /// A device input read on `ps`: its pointer, and `ps` noted as a reader (R10.5).
    fn operand(&self, ps: &PhysStream, b: &Buffer, op: &str) -> Result<Operand> {
        let mem = mem_of(b).ok_or_else(|| internal(op, "a host buffer given to the GPU"))?;
        let a = mem
            .alloc
            .get()
            .ok_or_else(|| internal(op, "an input whose producer was never enqueued"))?;
        if a.owner != ps.raw {
            lock(&mem.readers).push(ps.raw);
        }
        Ok(Operand {
            ptr: a.ptr,
            dtype: a.dtype,
        })
    }

    /// `to_device` on this device's stream: host → device, or device → host (the copy to
    /// pageable memory returns once done, so the host buffer is filled here).
    fn copy(&self, ps: &PhysStream, input: &Buffer, output: &Buffer) -> Result<()> {
        let op = "to_device";
        match (mem_of(input), mem_of(output)) {
            (None, Some(mem)) => {
                let data = match input.get() {
                    Some(Ok(d)) => d,
                    Some(Err(e)) => return Err(e.clone()),
                    None => return Err(internal(op, "host input not ready")),
                };
                let ptr = self.alloc(ps, op, data.dtype(), data.len())?;
                let _ = mem.alloc.set(Alloc {
                    ptr,
                    owner: ps.raw,
                    dtype: data.dtype(),
                    len: data.len(),
                });
                // SAFETY: `ptr` holds `data.len()` elements of its dtype; a copy from pageable
                // memory returns after the source has been staged.
                unsafe {
                    match data.view() {
                        DataRef::F32(v) => drv::memcpy_htod_async(ptr, v, ps.raw.0),
                        DataRef::F16(v) => drv::memcpy_htod_async(ptr, v, ps.raw.0),
                        DataRef::BF16(v) => drv::memcpy_htod_async(ptr, v, ps.raw.0),
                        DataRef::I32(v) => drv::memcpy_htod_async(ptr, v, ps.raw.0),
                    }
                }
                .map_err(|e| cuda_err("cuMemcpyHtoDAsync", e, op, &ps.tag))?;
                output.fill(Ok(Data::F32(Vec::new())));
                Ok(())
            }
            (Some(_), None) => {
                if let Some(Err(e)) = input.get() {
                    return Err(e.clone());
                }
                let src = self.operand(ps, input, op)?;
                let len = mem_of(input)
                    .and_then(|m| m.alloc.get())
                    .map_or(0, |a| a.len);
                let mut data = Data::try_zeroed(src.dtype, len).ok_or(Error::OutOfMemory {
                    op: op.into(),
                    bytes: len * src.dtype.size_in_bytes(),
                })?;
                // SAFETY: the destination holds exactly the source's elements; a copy to
                // pageable memory returns once complete (after the stream's earlier work).
                unsafe {
                    match data.view_mut() {
                        Some(DataMut::F32(v)) => drv::memcpy_dtoh_async(v, src.ptr, ps.raw.0),
                        Some(DataMut::F16(v)) => drv::memcpy_dtoh_async(v, src.ptr, ps.raw.0),
                        Some(DataMut::BF16(v)) => drv::memcpy_dtoh_async(v, src.ptr, ps.raw.0),
                        Some(DataMut::I32(v)) => drv::memcpy_dtoh_async(v, src.ptr, ps.raw.0),
                        // `try_zeroed` owns its memory.
                        None => return Err(internal(op, "a fresh host copy is lent memory")),
                    }
                }
                .map_err(|e| cuda_err("cuMemcpyDtoHAsync", e, op, &ps.tag))?;
                // The copy has completed, and with it every op the input came from: a failed
                // index op poisons the host copy too (already reported by its flag, R3.12).
                output.fill(poisoned(&poison_of(input)).map_or(Ok(data), Err));
                Ok(())
            }
            _ => Err(internal(op, "a copy that does not cross the host boundary")),
        }
    }

    /// Copies a device tensor's elements to the host as f32 (after [`Backend::host_wait`]).
    ///
    /// # Errors
    /// The producer's failure, or a CUDA error of the copy.
    pub(crate) fn to_vec_f32(&self, b: &Buffer) -> Result<Vec<f32>> {
        if let Some(Err(e)) = b.get() {
            return Err(e.clone());
        }
        let a = mem_of(b)
            .and_then(|m| m.alloc.get())
            .ok_or_else(|| internal("to_vec_f32", "a device buffer never written"))?;
        // The caller waited for the producer, so the flags it carries are final.
        if let Some(e) = poisoned(&poison_of(b)) {
            return Err(e);
        }
        self.bind("to_vec_f32")?;
        let mut data = Data::try_zeroed(a.dtype, a.len).ok_or(Error::OutOfMemory {
            op: "to_vec_f32".into(),
            bytes: a.len * a.dtype.size_in_bytes(),
        })?;
        // SAFETY: the destination holds exactly the allocation's elements; the producer has
        // completed (the caller waited for it).
        unsafe {
            match data.view_mut() {
                Some(DataMut::F32(v)) => drv::memcpy_dtoh_sync(v, a.ptr),
                Some(DataMut::F16(v)) => drv::memcpy_dtoh_sync(v, a.ptr),
                Some(DataMut::BF16(v)) => drv::memcpy_dtoh_sync(v, a.ptr),
                Some(DataMut::I32(v)) => drv::memcpy_dtoh_sync(v, a.ptr),
                // `try_zeroed` owns its memory.
                None => return Err(internal("to_vec_f32", "a fresh host copy is lent memory")),
            }
        }
        .map_err(|e| cuda_err("cuMemcpyDtoH", e, "to_vec_f32", "host"))?;
        Ok(data.to_f32_vec())
    }

    /// Blocks the host until the record at `(stream, seq)` on this device has completed.
    pub(crate) fn wait_record_on_host(&self, stream: StreamId, seq: u64) {
        if let Some(ev) = self.event_for(stream, seq) {
            // SAFETY: `ev` is a live event of this context (destroyed only after it completes).
            if let Err(e) = unsafe { drv::event::synchronize(ev.0) } {
                self.report(cuda_err("cuEventSynchronize", e, "wait", "host"));
            }
        }
    }

    /// Records an event on `ps` covering positions `lo..=hi`, dropping completed ones.
    fn record(&self, ps: &PhysStream, lo: u64, hi: u64) -> Result<()> {
        let err = |call: &str, e| cuda_err(call, e, "tagged_event_record", &ps.tag);
        let ev = drv::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING)
            .map_err(|e| err("cuEventCreate", e))?;
        // SAFETY: `ev` and the stream are live handles of this context.
        unsafe { drv::event::record(ev, ps.raw.0) }.map_err(|e| err("cuEventRecord", e))?;
        let mut st = lock(&ps.state);
        // A completed record needs no event: a later wait on it is a no-op.
        while let Some(&(_, _, old)) = st.records.front() {
            // SAFETY: `old` is a live event of this context.
            if unsafe { drv::event::query(old.0) }.is_err() {
                break;
            }
            st.records.pop_front();
            // SAFETY: completed and no longer referenced.
            let _ = unsafe { drv::event::destroy(old.0) };
        }
        st.records.push_back((lo, hi, Raw(ev)));
        Ok(())
    }
}

fn internal(op: &str, message: &str) -> Error {
    Error::ExecutionFailed {
        op: op.into(),
        stream: "host".into(),
        message: format!("internal error: {message}"),
    }
}

/// A program instantiated on a device: its arena, constants, fixed output regions and one
/// CUDA graph (R10.6).
#[derive(Debug)]
pub(crate) struct CudaExec {
    program: Arc<Program>,
    main: usize,
    graph: Raw<sys::CUgraphExec>,
    arena: u64,
    outs: Vec<u64>,
    /// Constants uploaded (or device constants held) for the graph's lifetime.
    _consts: Vec<Arc<Buffer>>,
    const_mem: Vec<u64>,
    poison: Arc<GraphPoison>,
}

/// What a graph's replays need for R3.12: the flag words of its index ops and what each output
/// depends on.
#[derive(Debug, Default)]
struct GraphPoison {
    /// One `u64` per index op (0: none), cleared before each launch and copied after it.
    words: u64,
    /// Per flag slot: the program stream and the op.
    slots: Vec<(usize, Op)>,
    /// Per output slot: its sources (`plan::poison_sources`).
    outs: Vec<Vec<plan::Source>>,
    consts: Vec<Arc<Buffer>>,
}

/// One replay bound to its inputs and caller-owned outputs (R5.5: always fresh buffers, copied
/// from the graph's fixed output regions after the launch).
#[derive(Debug)]
pub(crate) struct CudaReplay {
    inputs: Vec<Arc<Buffer>>,
    outputs: Vec<Arc<Buffer>>,
    exec: ExecRef,
}

#[derive(Debug, Clone)]
struct ExecRef {
    program: Arc<Program>,
    main: usize,
    graph: Raw<sys::CUgraphExec>,
    arena: u64,
    outs: Vec<u64>,
    poison: Arc<GraphPoison>,
}

impl Cuda {
    fn loc_ptr(&self, exec: &CudaExec, loc: &Loc) -> Result<Operand> {
        Ok(match loc {
            Loc::Arena(v) => {
                let view = exec
                    .program
                    .view(*v)
                    .ok_or_else(|| internal("capture", "a value with no arena view"))?;
                Operand {
                    ptr: exec.arena + view.offset as u64,
                    dtype: view.dtype,
                }
            }
            Loc::Out(i) => Operand {
                ptr: exec.outs[*i],
                dtype: exec.program.outs[*i].dtype,
            },
            Loc::Const(i) => Operand {
                ptr: exec.const_mem[*i],
                dtype: exec.program.consts[*i].dtype(),
            },
        })
    }

    fn build(&self, program: Arc<Program>) -> Result<CudaExec> {
        let plan = plan::capture_plan(&program).map_err(|m| internal("capture", &m))?;
        self.bind("capture")?;
        self.kernels()?;
        let host = |call: &str, e| cuda_err(call, e, "capture", "host");
        let sync_alloc = |bytes: usize| {
            // SAFETY: a plain allocation in this context; freed never (graphs live as long as
            // their compiled function, which today is the process).
            unsafe { drv::malloc_sync(bytes.max(16)) }.map_err(|e| host("cuMemAlloc", e))
        };
        let arena = sync_alloc(program.arena_bytes)?;
        let outs = program
            .outs
            .iter()
            .map(|o| sync_alloc(o.len() * o.dtype.size_in_bytes()))
            .collect::<Result<Vec<_>>>()?;
        let consts = program.const_buffers()?;
        let mut const_mem = Vec::with_capacity(consts.len());
        for c in &consts {
            if let Some(a) = mem_of(c).and_then(|m| m.alloc.get()) {
                const_mem.push(a.ptr);
                continue;
            }
            let data = match c.get() {
                Some(Ok(d)) => d,
                Some(Err(e)) => return Err(e.clone()),
                None => return Err(internal("capture", "a constant not ready")),
            };
            let ptr = sync_alloc(data.len() * data.dtype().size_in_bytes())?;
            // SAFETY: `ptr` holds the constant's elements (R10.7: constants go to the device).
            unsafe {
                match data.view() {
                    DataRef::F32(v) => drv::memcpy_htod_sync(ptr, v),
                    DataRef::F16(v) => drv::memcpy_htod_sync(ptr, v),
                    DataRef::BF16(v) => drv::memcpy_htod_sync(ptr, v),
                    DataRef::I32(v) => drv::memcpy_htod_sync(ptr, v),
                }
            }
            .map_err(|e| host("cuMemcpyHtoD", e))?;
            const_mem.push(ptr);
        }
        // R3.12: a flag slot per index op, and each output's sources.
        let steps: Vec<plan::Step> = plan
            .order
            .iter()
            .map(|&(si, ii)| match &program.streams[si].instrs[ii] {
                Instr::CopyIn { input, dst } => plan::Step::CopyIn {
                    input: *input,
                    dst: Loc::Arena(*dst),
                },
                Instr::Op { op, inputs, dst } => plan::Step::Op {
                    inputs: inputs.as_slice().to_vec(),
                    dst: *dst,
                    flagged: launch::needs_flag(op),
                },
                _ => plan::Step::Other,
            })
            .collect();
        let (slot_of, out_sources) = plan::poison_sources(&steps, program.outs.len());
        let slots: Vec<(usize, Op)> = plan
            .order
            .iter()
            .zip(&slot_of)
            .filter(|(_, slot)| slot.is_some())
            .filter_map(|(&(si, ii), _)| match &program.streams[si].instrs[ii] {
                Instr::Op { op, .. } => Some((si, op.clone())),
                _ => None,
            })
            .collect();
        let words = if slots.is_empty() {
            0
        } else {
            sync_alloc(slots.len() * 8)?
        };
        let mut exec = CudaExec {
            program: program.clone(),
            main: plan.main,
            graph: Raw(std::ptr::null_mut()),
            arena,
            outs,
            _consts: consts.clone(),
            const_mem,
            poison: Arc::new(GraphPoison {
                words,
                slots,
                outs: out_sources,
                consts,
            }),
        };
        // Capture streams of their own: eager streams stay free for other threads meanwhile.
        let caps = program
            .streams
            .iter()
            .map(|s| self.new_stream(&s.tag))
            .collect::<Result<Vec<_>>>()?;
        let events = (0..plan.events.len() + caps.len())
            .map(|_| drv::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| host("cuEventCreate", e))?;
        let main = &caps[plan.main];
        let wait = |s: &PhysStream, ev| {
            // SAFETY: live stream and event of this context.
            unsafe {
                drv::stream::wait_event(s.raw.0, ev, sys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT)
            }
            .map_err(|e| host("cuStreamWaitEvent", e))
        };
        let record = |s: &PhysStream, ev| {
            // SAFETY: live stream and event of this context.
            unsafe { drv::event::record(ev, s.raw.0) }.map_err(|e| host("cuEventRecord", e))
        };
        // SAFETY: a live stream; thread-local mode so other threads' CUDA calls are unaffected.
        unsafe {
            drv::stream::begin_capture(
                main.raw.0,
                sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
            )
        }
        .map_err(|e| host("cuStreamBeginCapture", e))?;
        let body = (|| -> Result<()> {
            // Fork (R4.4): every side stream joins the capture after main's start.
            let fork = events[plan.events.len()];
            record(main, fork)?;
            for (i, s) in caps.iter().enumerate() {
                if i != plan.main {
                    wait(s, fork)?;
                }
            }
            for (k, &(si, ii)) in plan.order.iter().enumerate() {
                let s = &caps[si];
                match &program.streams[si].instrs[ii] {
                    Instr::CopyIn { .. } | Instr::Record { .. } => {}
                    Instr::Op { op, inputs, dst } => {
                        let ins = inputs
                            .as_slice()
                            .iter()
                            .map(|l| self.loc_ptr(&exec, l))
                            .collect::<Result<Vec<Operand>>>()?;
                        let out = self.loc_ptr(&exec, dst)?.ptr;
                        let flag = slot_of[k].map_or(0, |j| exec.poison.words + 8 * j as u64);
                        self.launch(s, op, &ins, out, flag)?;
                    }
                    Instr::Wait { stream, pos, .. } => {
                        if let Some(&e) = plan.events.get(&(*stream, *pos)) {
                            wait(s, events[e])?;
                        }
                    }
                }
                if let Some(&e) = plan.events.get(&(si, ii as u64 + 1)) {
                    record(s, events[e])?;
                }
            }
            // Join: main ends after every side stream (capture requires it).
            for (i, s) in caps.iter().enumerate() {
                if i != plan.main {
                    let ev = events[plan.events.len() + i];
                    record(s, ev)?;
                    wait(main, ev)?;
                }
            }
            Ok(())
        })();
        // SAFETY: ends the capture begun above on the same stream, also after a failure.
        let graph = unsafe { drv::stream::end_capture(main.raw.0) };
        body?;
        let graph = graph.map_err(|e| host("cuStreamEndCapture", e))?;
        // SAFETY: `graph` is the captured graph; it is no longer needed once instantiated.
        let instance = unsafe {
            let g = drv::graph::instantiate(graph, sys::CUgraphInstantiate_flags(0));
            let _ = drv::graph::destroy(graph);
            g
        }
        .map_err(|e| host("cuGraphInstantiate", e))?;
        exec.graph = Raw(instance);
        Ok(exec)
    }

    fn replay(&self, r: CudaReplay, at: &[Issue<'_>]) -> Result<()> {
        let x = &r.exec;
        let phys = at
            .iter()
            .map(|i| self.stream(i.stream, i.tag))
            .collect::<Result<Vec<_>>>()?;
        self.bind("replay")?;
        let main = &phys[x.main];
        let err = |call: &str, e| cuda_err(call, e, "replay", &main.tag);
        let ev = || {
            drv::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING)
                .map_err(|e| err("cuEventCreate", e))
        };
        // SAFETY (whole block): live streams and events of this context; pointers are device
        // allocations of the sizes the program planned.
        unsafe {
            // Each program stream's earlier eager work comes before its part of the graph.
            for (i, s) in phys.iter().enumerate() {
                if i != x.main && lock(&s.state).last > 0 {
                    let e = ev()?;
                    drv::event::record(e, s.raw.0).map_err(|e| err("cuEventRecord", e))?;
                    drv::stream::wait_event(
                        main.raw.0,
                        e,
                        sys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT,
                    )
                    .map_err(|e| err("cuStreamWaitEvent", e))?;
                    let _ = drv::event::destroy(e);
                }
            }
            // Index ops' flag words start clear (R3.12); the previous replay's were copied out.
            let poison = &x.poison;
            if !poison.slots.is_empty() {
                drv::memset_d8_async(poison.words, 0xff, 8 * poison.slots.len(), main.raw.0)
                    .map_err(|e| err("cuMemsetD8Async", e))?;
            }
            // Input copies straight into the arena (they head the main stream, `plan`).
            for instr in &x.program.streams[x.main].instrs {
                if let Instr::CopyIn { input, dst } = instr {
                    let src = self.operand(main, &r.inputs[*input], "Compiled::run (input)")?;
                    let dst = x
                        .program
                        .view(*dst)
                        .ok_or_else(|| internal("replay", "an input with no arena view"))?;
                    let bytes = dst.len * dst.dtype.size_in_bytes();
                    drv::memcpy_dtod_async(x.arena + dst.offset as u64, src.ptr, bytes, main.raw.0)
                        .map_err(|e| err("cuMemcpyDtoDAsync", e))?;
                }
            }
            drv::graph::launch(x.graph.0, main.raw.0).map_err(|e| err("cuGraphLaunch", e))?;
            // This replay's flags: a copy of the words, read once main has passed it.
            let flags: Vec<Arc<Flag>> = if poison.slots.is_empty() {
                Vec::new()
            } else {
                let n = poison.slots.len();
                let ptr = self.alloc(main, "Compiled::run", DType::I32, 2 * n)?;
                let mem = Arc::new(CudaMem::new(self.device, self.ctx.clone()));
                let _ = mem.alloc.set(Alloc {
                    ptr,
                    owner: main.raw,
                    dtype: DType::I32,
                    len: 2 * n,
                });
                drv::memcpy_dtod_async(ptr, poison.words, 8 * n, main.raw.0)
                    .map_err(|e| err("cuMemcpyDtoDAsync", e))?;
                poison
                    .slots
                    .iter()
                    .enumerate()
                    .map(|(j, (si, op))| {
                        let tag = phys[*si].tag.clone();
                        Arc::new(Flag::new(mem.clone(), 8 * j as u64, main.raw, op, tag))
                    })
                    .collect()
            };
            for f in &flags {
                self.watch(f.clone());
            }
            // Outputs the caller owns (R5.5): fresh stream-ordered buffers.
            for (slot, out) in r.outputs.iter().enumerate() {
                let meta = &x.program.outs[slot];
                let ptr = self.alloc(main, "Compiled::run", meta.dtype, meta.len())?;
                drv::memcpy_dtod_async(
                    ptr,
                    x.outs[slot],
                    meta.len() * meta.dtype.size_in_bytes(),
                    main.raw.0,
                )
                .map_err(|e| err("cuMemcpyDtoDAsync", e))?;
                if let Some(m) = mem_of(out) {
                    let _ = m.alloc.set(Alloc {
                        ptr,
                        owner: main.raw,
                        dtype: meta.dtype,
                        len: meta.len(),
                    });
                    let sources = poison.outs.get(slot).map_or(&[][..], Vec::as_slice);
                    let carried = sources
                        .iter()
                        .flat_map(|src| match *src {
                            plan::Source::Input(i) => poison_of(&r.inputs[i]),
                            plan::Source::Const(c) => poison_of(&poison.consts[c]),
                            plan::Source::Flag(j) => vec![flags[j].clone()],
                        })
                        .collect();
                    *lock(&m.poison) = merge_flags(carried);
                }
                out.fill(Ok(Data::F32(Vec::new())));
            }
        }
        // Every stream's replay positions are done when main is: later work and waits on
        // records inside the graph order after this event.
        self.record(
            main,
            at[x.main].seq + 1,
            at[x.main].seq + x.program.streams[x.main].instrs.len() as u64,
        )?;
        let done = lock(&main.state).records.back().map(|r| r.2);
        for (i, s) in phys.iter().enumerate() {
            let n = x.program.streams[i].instrs.len() as u64;
            if i != x.main
                && let Some(done) = done
            {
                // SAFETY: live stream and event.
                unsafe {
                    drv::stream::wait_event(
                        s.raw.0,
                        done.0,
                        sys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT,
                    )
                }
                .map_err(|e| err("cuStreamWaitEvent", e))?;
                self.record(s, at[i].seq + 1, at[i].seq + n)?;
            }
            lock(&s.state).last = at[i].seq + n;
        }
        Ok(())
    }
}

impl Backend for Cuda {
    type Exec = CudaExec;
    type Replay = CudaReplay;

    fn device(&self) -> Device {
        self.device
    }

    fn new_output(&self) -> Arc<Buffer> {
        self.new_buffer()
    }

    fn enqueue(&self, at: Issue<'_>, work: Work) -> Result<()> {
        let ps = self.stream(at.stream, at.tag)?;
        self.bind("enqueue")?;
        match work {
            Work::Op { op, inputs, output } => self.eager_op(&ps, &op, inputs.as_slice(), &output),
            Work::Copy { input, output } => {
                if let Err(e) = self.copy(&ps, &input, &output) {
                    if !matches!(input.get(), Some(Err(_))) {
                        self.report(e.clone());
                    }
                    output.fill(Err(e));
                }
            }
            Work::Record { .. } => self.record(&ps, at.seq, at.seq)?,
            Work::Wait { on: Some(b), .. } => {
                if let Some(ev) = self.event_for(b.stream, b.seq) {
                    // SAFETY: live stream and event of this context.
                    unsafe {
                        drv::stream::wait_event(
                            ps.raw.0,
                            ev.0,
                            sys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT,
                        )
                    }
                    .map_err(|e| cuda_err("cuStreamWaitEvent", e, "tagged_event_wait", &ps.tag))?;
                }
            }
            Work::Wait { on: None, .. } => {}
        }
        lock(&ps.state).last = at.seq;
        Ok(())
    }

    fn host_wait(&self, stream: StreamId, seq: u64) {
        let Some(ps) = self.existing(stream) else {
            return;
        };
        if seq == 0 || self.bind("synchronize").is_err() {
            return;
        }
        // SAFETY: a live stream of this context.
        if let Err(e) = unsafe { drv::stream::synchronize(ps.raw.0) } {
            self.report(cuda_err("cuStreamSynchronize", e, "synchronize", &ps.tag));
        }
    }

    fn executed(&self, stream: StreamId) -> u64 {
        let Some(ps) = self.existing(stream) else {
            return 0;
        };
        let st = lock(&ps.state);
        // SAFETY: a live stream of this context.
        if unsafe { sys::cuStreamQuery(ps.raw.0) } == sys::cudaError_enum::CUDA_SUCCESS {
            return st.last;
        }
        st.records
            .iter()
            // SAFETY: live events of this context.
            .filter(|r| unsafe { drv::event::query(r.2.0) }.is_ok())
            .map(|r| r.1)
            .max()
            .unwrap_or(0)
    }

    fn take_failure(&self) -> Option<Error> {
        // Called after every stream was waited for: every flag is final.
        let list = std::mem::take(&mut *lock(&self.failures));
        list.into_iter().find_map(|f| match f {
            Failure::Error(e) => Some(e),
            Failure::Flag(flag) => flag.error(),
        })
    }

    fn instantiate(&self, program: Arc<Program>) -> Result<CudaExec> {
        self.build(program)
    }

    fn prepare(&self, exec: &mut CudaExec, inputs: Vec<Arc<Buffer>>) -> CudaReplay {
        CudaReplay {
            inputs,
            outputs: exec
                .program
                .outs
                .iter()
                .map(|_| self.new_buffer())
                .collect(),
            exec: ExecRef {
                program: exec.program.clone(),
                main: exec.main,
                graph: exec.graph,
                arena: exec.arena,
                outs: exec.outs.clone(),
                poison: exec.poison.clone(),
            },
        }
    }

    fn outputs(replay: &CudaReplay) -> &[Arc<Buffer>] {
        &replay.outputs
    }

    fn enqueue_replay(&self, replay: CudaReplay, at: &[Issue<'_>]) -> Result<()> {
        // Open every stream first, so that failure enqueues nothing (R3.9).
        for i in at {
            self.stream(i.stream, i.tag)?;
        }
        let outputs = replay.outputs.clone();
        if let Err(e) = self.replay(replay, at) {
            // Issued all the same: the failure is the outputs' value (R3.12).
            self.report(e.clone());
            for o in outputs {
                o.fill(Err(e.clone()));
            }
            for i in at {
                if let Some(s) = self.existing(i.stream) {
                    let mut st = lock(&s.state);
                    st.last = st.last.max(i.seq);
                }
            }
        }
        Ok(())
    }
}
