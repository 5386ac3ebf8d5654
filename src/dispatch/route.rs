//! Devices under one logical stream (R10.2, R10.3): which device's physical stream each entry
//! of a logical stream went to, and the host waits that keep FIFO order across devices.
//!
//! A logical stream may run entries on several devices. Each device keeps its own physical
//! stream, so FIFO order across devices is kept here: when a stream's next entry goes to another
//! device than its last one, the host waits (under the runtime lock, which no executing entry
//! needs) until the old device has executed the stream's earlier entries. Records go to the
//! stream's current device; a wait bound to a record on another device blocks the issuing host
//! until that record has completed and then enqueues a no-op wait. Until the first CUDA entry
//! nothing is tracked, so CPU-only programs take exactly the path they took before.

use crate::backend::cpu::cpu;
#[cfg(feature = "cuda")]
use crate::backend::cuda::{self, cuda};
use crate::backend::{Backend, Work};
use crate::device::Device;
use crate::error::Result;
#[cfg(feature = "cuda")]
use std::sync::atomic::Ordering;

use crate::runtime::{Bound, Issue, Position, StreamId};
use crate::trace::spans::Label;

/// Where a logical stream's entries went.
#[derive(Debug, Clone, Copy)]
struct Route {
    /// The device of its last entry.
    last: Device,
    /// Its last position enqueued on the CPU (`u64::MAX`: every position so far).
    cpu_last: u64,
}

#[cfg(feature = "cuda")]
static CUDA_USED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static ROUTES: std::sync::Mutex<Vec<Option<Route>>> = std::sync::Mutex::new(Vec::new());

fn routes() -> std::sync::MutexGuard<'static, Vec<Option<Route>>> {
    ROUTES.lock().unwrap_or_else(|p| p.into_inner())
}

fn cuda_used() -> bool {
    #[cfg(feature = "cuda")]
    {
        CUDA_USED.load(Ordering::Acquire)
    }
    #[cfg(not(feature = "cuda"))]
    {
        false
    }
}

fn route_of(stream: StreamId) -> Route {
    if !cuda_used() {
        return Route {
            last: Device::Cpu,
            cpu_last: u64::MAX,
        };
    }
    routes().get(stream).copied().flatten().unwrap_or(Route {
        last: Device::Cpu,
        cpu_last: u64::MAX,
    })
}

/// The last position of `stream` enqueued on the CPU (`u64::MAX`: every position so far).
pub(super) fn cpu_last(stream: StreamId) -> u64 {
    route_of(stream).cpu_last
}

/// Blocks the host until `device` has executed entries `..=seq` of `stream` it was given.
fn host_wait_on(device: Device, stream: StreamId, seq: u64, cpu_last: u64) {
    match device {
        Device::Cpu => cpu().host_wait(stream, seq.min(cpu_last)),
        #[cfg(feature = "cuda")]
        Device::Cuda(n) => {
            if let Ok(c) = cuda(n) {
                c.host_wait(stream, seq);
            }
        }
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => {}
    }
}

/// Entries `first..=last` of `stream` are about to go to `to` (called under the runtime lock).
pub(super) fn hop(stream: StreamId, first: u64, last: u64, to: Device) {
    if to.is_cpu() && !cuda_used() {
        return;
    }
    #[cfg(feature = "cuda")]
    if !to.is_cpu() {
        CUDA_USED.store(true, Ordering::Release);
    }
    let mut routes = routes();
    if routes.len() <= stream {
        routes.resize(stream + 1, None);
    }
    let r = routes[stream].get_or_insert(Route {
        last: Device::Cpu,
        cpu_last: u64::MAX,
    });
    if r.last != to {
        let from = *r;
        if from.last.is_cpu() {
            r.cpu_last = first - 1;
        }
        r.last = to;
        drop(routes);
        host_wait_on(from.last, stream, first - 1, from.cpu_last);
        routes = self::routes();
    }
    if to.is_cpu()
        && let Some(Some(r)) = routes.get_mut(stream)
    {
        r.cpu_last = last;
    }
}

/// The device holding the record at `(stream, seq)`, if it is a CUDA one still pending.
fn record_device(stream: StreamId, seq: u64) -> Option<Device> {
    #[cfg(feature = "cuda")]
    if cuda_used() {
        for c in cuda::created() {
            if c.holds_record(stream, seq) {
                return Some(c.device());
            }
        }
    }
    let _ = (stream, seq);
    None
}

/// Enqueues a record on `at`'s stream, on the stream's current device.
pub(super) fn enqueue_record(at: Issue<'_>, label: Label) -> Result<()> {
    let device = route_of(at.stream).last;
    hop(at.stream, at.seq, at.seq, device);
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(n) => cuda(n)?.enqueue(at, Work::Record { label }),
        _ => cpu().enqueue(at, Work::Record { label }),
    }
}

/// Enqueues a wait on `at`'s stream bound to `on`, on the stream's current device; a record on
/// another device is waited for by the host first (R10.3).
pub(super) fn enqueue_wait(at: Issue<'_>, on: Option<Bound>, label: Label) -> Result<()> {
    let device = route_of(at.stream).last;
    hop(at.stream, at.seq, at.seq, device);
    let on = match on {
        Some(b) if cuda_used() => {
            let holder = record_device(b.stream, b.seq);
            let src = route_of(b.stream);
            match holder {
                Some(d) if d == device => Some(b),
                #[cfg(feature = "cuda")]
                Some(Device::Cuda(n)) => {
                    cuda(n)?.wait_record_on_host(b.stream, b.seq);
                    None
                }
                // A record no device holds as pending: on the CPU, or a completed GPU one.
                _ if b.seq > src.cpu_last => None,
                _ if device.is_cpu() => Some(b),
                _ => {
                    cpu().host_wait(b.stream, b.seq);
                    None
                }
            }
        }
        other => other,
    };
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(n) => cuda(n)?.enqueue(at, Work::Wait { on, label }),
        _ => cpu().enqueue(at, Work::Wait { on, label }),
    }
}

/// Blocks the host until the entry at `p` has executed, whichever device ran it.
pub(super) fn host_wait_for(p: &Position) {
    let r = route_of(p.stream);
    cpu().host_wait(p.stream, p.seq.min(r.cpu_last));
    #[cfg(feature = "cuda")]
    if cuda_used() {
        for c in cuda::created() {
            if c.last_enqueued(p.stream) > 0 {
                c.host_wait(p.stream, p.seq);
            }
        }
    }
}
