//! The CPU backend: one worker thread per stream, progress signals, the replay executor.
//!
//! Owns the physical CPU streams (a worker thread, its FIFO queue and its [`Progress`]
//! counter, created on the first entry enqueued on a logical stream), how many threads a
//! kernel may use (the core sharing of `worker::CoreSplit`), the failures workers report, and the kernels' dispatch (`execute`). Replays run
//! as one segment entry per stream over an arena (`replay`, `arena`). It never decides
//! ordering: entries arrive in issue order from the runtime, and waits arrive bound to a record.
//! The worker/event protocol and its proofs are in `README.md` beside this file.

mod arena;
mod chaos;
pub(crate) mod execute;
mod queue;
mod replay;
mod signal;
mod sync;
mod worker;

use std::cell::RefCell;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use self::replay::{CpuExec, CpuReplay};
use self::signal::Progress;
use self::worker::{CoreSplit, Entry, FailureSink, Task, WorkerShared};
use super::{Backend, Failures, Work};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::graph::program::Program;
use crate::runtime::{Issue, StreamId};
use crate::tensor::storage::Buffer;

/// How long a host wait (`synchronize`, reading a tensor) yields before it parks. A parked
/// host costs 20–50 µs to wake on the 2-core machines we measure (more than a whole 1000-op
/// replay), and the host has nothing else to run; yielding leaves its core to any runnable
/// worker. About twice a wake-up, so a wait costs at most about twice the best choice made
/// in hindsight, and a long wait burns at most this much CPU before it sleeps.
const HOST_PATIENCE: std::time::Duration = std::time::Duration::from_micros(100);

/// The CPU backend (a process-wide singleton, [`cpu`]).
#[derive(Debug)]
pub(crate) struct Cpu {
    /// Physical stream of each logical stream id, `None` until its first entry.
    streams: Mutex<Vec<Option<Arc<WorkerShared>>>>,
    split: CoreSplit,
    failures: Failures,
}

/// The CPU backend, created on first use.
pub(crate) fn cpu() -> &'static Cpu {
    static CPU: OnceLock<Cpu> = OnceLock::new();
    CPU.get_or_init(|| {
        chaos::init_from_env();
        Cpu {
            streams: Mutex::default(),
            split: CoreSplit::new(),
            failures: Failures::default(),
        }
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FailureSink for Cpu {
    fn report(&self, error: Error) {
        self.failures.report(error);
    }
}

impl Cpu {
    /// The worker of `stream`, started on first use. A spawn failure leaves nothing behind, so
    /// the issue that needed it changes nothing (R3.9).
    fn worker(&self, stream: StreamId, tag: &Arc<str>) -> Result<Arc<WorkerShared>> {
        let mut streams = lock(&self.streams);
        if let Some(Some(w)) = streams.get(stream) {
            return Ok(w.clone());
        }
        let shared = Arc::new(WorkerShared {
            tag: tag.clone(),
            salt: stream as u64,
            queue: Default::default(),
            progress: Arc::new(Progress::default()),
        });
        let run = shared.clone();
        std::thread::Builder::new()
            // Thread names cannot hold NUL bytes; any other tag is a valid stream tag (R2.10).
            .name(format!("tagstream:{}", tag.replace('\0', "\\0")))
            .spawn(move || {
                let cpu = cpu();
                worker::run(run, &cpu.split, cpu);
            })
            .map_err(|e| Error::WorkerSpawn {
                stream: tag.to_string(),
                message: e.to_string(),
            })?;
        if streams.len() <= stream {
            streams.resize(stream + 1, None);
        }
        streams[stream] = Some(shared.clone());
        Ok(shared)
    }

    /// Runs `f` on the worker of `stream` (started on first use). The issuing thread keeps its
    /// own table of the workers it has issued to, so the eager issue path takes no lock and
    /// touches no reference count here; workers are never removed, so an entry never goes
    /// stale.
    fn with_worker<R>(
        &self,
        stream: StreamId,
        tag: &Arc<str>,
        f: impl FnOnce(&WorkerShared) -> R,
    ) -> Result<R> {
        thread_local! {
            static WORKERS: RefCell<Vec<Option<Arc<WorkerShared>>>> = const { RefCell::new(Vec::new()) };
        }
        let mut f = Some(f);
        let hit = WORKERS.try_with(|cache| {
            let cache = cache.borrow();
            let w = cache.get(stream)?.as_ref()?;
            f.take().map(|f| f(w))
        });
        if let Ok(Some(r)) = hit {
            return Ok(r);
        }
        let worker = self.worker(stream, tag)?;
        // `try_with`: on a thread whose locals are gone the lookup simply is not cached.
        let _ = WORKERS.try_with(|cache| {
            let mut cache = cache.borrow_mut();
            if cache.len() <= stream {
                cache.resize(stream + 1, None);
            }
            cache[stream] = Some(worker.clone());
        });
        match f.take() {
            Some(f) => Ok(f(&worker)),
            None => Err(Error::ExecutionFailed {
                op: "enqueue".into(),
                stream: tag.to_string(),
                message: "internal error: the worker callback ran twice".into(),
            }),
        }
    }

    /// The progress counter of `stream`, if its worker exists.
    fn progress(&self, stream: StreamId) -> Option<Arc<Progress>> {
        lock(&self.streams)
            .get(stream)
            .and_then(|w| w.as_ref().map(|w| w.progress.clone()))
    }

    /// Caps the threads one op may use (see [`crate::set_threads_per_stream`]).
    pub(crate) fn set_threads_per_stream(&self, n: usize) {
        self.split.set_cap(n);
    }
}

/// Turns chaos mode on or off (see [`crate::set_chaos`]).
pub(crate) fn set_chaos(seed: Option<u64>) {
    cpu(); // reads TAGSTREAM_CHAOS first, so an explicit call wins
    chaos::set(seed);
}

impl Backend for Cpu {
    type Exec = CpuExec;
    type Replay = CpuReplay;

    fn device(&self) -> Device {
        Device::Cpu
    }

    fn enqueue(&self, at: Issue<'_>, work: Work) -> Result<()> {
        let task = match work {
            Work::Op { op, inputs, output } => Task::Op { op, inputs, output },
            Work::Record { label } => Task::Record { label },
            Work::Copy { .. } => {
                return Err(Error::ExecutionFailed {
                    op: "to_device".into(),
                    stream: at.tag.to_string(),
                    message: "internal error: a device copy handed to the CPU backend".into(),
                });
            }
            Work::Wait { on, label } => {
                let on = match on {
                    Some(b) => Some((
                        self.with_worker(b.stream, &b.tag, |w| w.progress.clone())?,
                        b.seq,
                        b.tag,
                    )),
                    None => None,
                };
                Task::Wait { on, label }
            }
        };
        self.with_worker(at.stream, at.tag, |w| {
            w.queue.push(Entry { seq: at.seq, task })
        })
    }

    fn host_wait(&self, stream: StreamId, seq: u64) {
        // A stream with no worker has executed nothing and been given nothing.
        if let Some(p) = self.progress(stream) {
            p.wait_until_patient(seq, HOST_PATIENCE);
        }
    }

    fn executed(&self, stream: StreamId) -> u64 {
        self.progress(stream).map_or(0, |p| p.done())
    }

    fn take_failure(&self) -> Option<Error> {
        self.failures.take_first()
    }

    fn instantiate(&self, program: Arc<Program>) -> Result<CpuExec> {
        CpuExec::new(program)
    }

    fn prepare(&self, exec: &mut CpuExec, inputs: Vec<Arc<Buffer>>) -> CpuReplay {
        exec.prepare(inputs)
    }

    fn outputs(replay: &CpuReplay) -> &[Arc<Buffer>] {
        replay.outputs()
    }

    fn enqueue_replay(&self, replay: CpuReplay, at: &[Issue<'_>]) -> Result<()> {
        // Start every worker first, so a spawn failure enqueues nothing (R3.9).
        let workers = at
            .iter()
            .map(|i| self.worker(i.stream, i.tag))
            .collect::<Result<Vec<_>>>()?;
        let progress: Vec<Arc<Progress>> = workers.iter().map(|w| w.progress.clone()).collect();
        let bases: Vec<u64> = at.iter().map(|i| i.seq).collect();
        let (job, entries) = replay.into_job(bases, progress);
        for (index, (worker, (base, n))) in workers.iter().zip(entries).enumerate() {
            if n == 0 {
                continue; // a stream with no entry in the graph (only main, of an empty graph)
            }
            worker.queue.push(Entry {
                seq: base + n,
                task: Task::Segment {
                    job: job.clone(),
                    index,
                },
            });
        }
        Ok(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::backend::Inputs;
    use crate::kernels::BinaryOp;
    use crate::ops::op::Op;
    use crate::runtime::runtime;
    use crate::tensor::DType;
    use crate::tensor::storage::Data;

    fn launch(
        s: StreamId,
        op: &Op,
        a: &Arc<Buffer>,
        deps: &[Option<&crate::runtime::Position>],
    ) -> (Arc<Buffer>, Arc<crate::runtime::Position>) {
        let out = Arc::new(Buffer::pending());
        let pos = runtime()
            .issue_op(s, op.name(), deps, |at| {
                cpu().enqueue(
                    at,
                    Work::Op {
                        op: op.clone(),
                        inputs: Inputs::Two([a.clone(), a.clone()]),
                        output: out.clone(),
                    },
                )
            })
            .unwrap();
        (out, pos)
    }

    /// A worker that hits a failing entry reports it, publishes its position anyway (no waiter
    /// hangs), propagates the failure to dependent ops, and keeps serving later entries.
    #[test]
    fn worker_failure_surfaces_and_nothing_hangs() {
        let s = runtime().stream_for_tag("cpu-test-failure");
        // An op validated for f32 but handed f16 data: the kernel dispatch refuses it.
        let op = Op::binary(BinaryOp::Add, (&[2], DType::F32), (&[2], DType::F32)).unwrap();
        let bad = Arc::new(Buffer::ready(Data::zeroed(DType::F16, 2)));
        let (out, pos) = launch(s, &op, &bad, &[]);
        // A dependent op on the same stream fails with the same cause.
        let (dep, dep_pos) = launch(s, &op, &out, &[Some(&*pos)]);
        cpu().host_wait(s, dep_pos.seq);
        let first = out.get().unwrap().clone().unwrap_err();
        assert!(
            matches!(&first, Error::ExecutionFailed { op, stream, .. } if op == "add" && stream == "cpu-test-failure"),
            "{first}"
        );
        assert_eq!(dep.get().unwrap().clone().unwrap_err(), first);
        assert!(cpu().take_failure().is_some(), "the failure is reported");
        // The stream still works.
        let good = Arc::new(Buffer::ready(Data::from_f32(&[1.0, 2.0], DType::F32)));
        let (ok, ok_pos) = launch(s, &op, &good, &[]);
        cpu().host_wait(s, ok_pos.seq);
        assert_eq!(
            ok.get().unwrap().as_ref().unwrap().to_f32_vec(),
            vec![2.0, 4.0]
        );
    }
}
