//! Lifecycle (issue 5 item 5): dropping every `Compiled` and tensor gives the memory back
//! (R3.8, R5.12), and stream workers that have nothing to do, or that wait on another stream,
//! use no CPU.
//!
//! Memory is observed through `VmRSS` (`/proc/self/status`). That is only meaningful for
//! allocations that the allocator returns to the OS on free: with glibc those are the ones
//! served by `mmap`, i.e. above the mmap threshold, which glibc raises dynamically up to
//! 32 MiB. So every buffer whose release is checked here is larger than 32 MiB (a 68 MiB graph
//! arena, 64 MiB eager tensors), and the checks allow a few MiB of slack for allocator caches.
//!
//! CPU use is read per thread from `/proc/self/task/*/stat` (utime + stime, in clock ticks),
//! for the threads named `tagstream:*` (the stream workers). `tests/idle_workers.rs` checks
//! the whole process after eager work; this file adds per-worker figures, a stream that was
//! created but never given work, workers after graph replays, and a worker parked in an event
//! wait while another stream computes for a long time.
//!
//! The tests hold [`serial`]: RSS and CPU time are process-wide. Linux only.

#![cfg(target_os = "linux")]

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tagstream::ops::{create_tagged_event, tagged_event_record, tagged_event_wait};
use tagstream::scope::stream_switch;
use tagstream::{
    CompileConfig, DType, Mode, Result, Tensor, compile, set_threads_per_stream, stream_activity,
    synchronize,
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// KiB per MiB (RSS figures are in KiB).
const MIB: u64 = 1024;

/// Polls `VmRSS` for up to two seconds until it is at most `limit` KiB; returns the last value.
///
/// `synchronize` returns once every entry has executed, but a replay segment publishes its last
/// record (the join) from inside the segment, so its worker lets go of the segment's frame,
/// and with it possibly the last handle to the plan and its arena, a moment later.
fn rss_settles_to(limit: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let rss = rss_kib();
        if rss <= limit || Instant::now() > deadline {
            return rss;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `VmRSS` in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs is available");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// utime + stime (clock ticks) of every stream worker thread, by thread id.
fn worker_ticks() -> HashMap<u64, u64> {
    let mut ticks = HashMap::new();
    for task in std::fs::read_dir("/proc/self/task").expect("procfs is available") {
        let Ok(task) = task else { continue };
        let path = task.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue; // the thread exited meanwhile
        };
        // Linux keeps 15 bytes of a thread name: "tagstream:" survives.
        if !comm.starts_with("tagstream:") {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        let after = &stat[stat.rfind(')').expect("stat has a name") + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        let t = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
        let tid = task.file_name().to_string_lossy().parse().expect("a tid");
        ticks.insert(tid, t);
    }
    ticks
}

/// CPU ticks each worker used over `window` (workers that exist at both ends).
fn worker_ticks_over(window: Duration) -> HashMap<u64, u64> {
    let before = worker_ticks();
    std::thread::sleep(window);
    let after = worker_ticks();
    after
        .into_iter()
        .filter_map(|(tid, t)| before.get(&tid).map(|b| (tid, t - b)))
        .collect()
}

/// The thread id of the worker of stream `tag` (`None` if it is not running).
fn worker_tid(tag: &str) -> Option<u64> {
    let name: String = format!("tagstream:{tag}").chars().take(15).collect();
    std::fs::read_dir("/proc/self/task").ok()?.find_map(|task| {
        let task = task.ok()?;
        let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
        (comm.trim_end() == name).then(|| task.file_name().to_string_lossy().parse().ok())?
    })
}

/// R5.12, R3.8: a graph with a 68 MiB arena is resident while the `Compiled` lives; dropping
/// the `Compiled` (even with a replay still queued), its outputs and the inputs gives the
/// memory back. Returned outputs stay valid after the `Compiled` is dropped.
#[test]
fn dropping_compiled_and_tensors_releases_the_arena_r5_12() {
    let _s = serial();
    const N: usize = 16; // values of 4 MiB, all live at once: the arena holds every one
    let mut model = compile(
        |x: &[Tensor]| -> Result<Vec<Tensor>> {
            let _side = stream_switch("la-s")?;
            let mut parts = Vec::with_capacity(N);
            for i in 0..N {
                let ones = x[0].rms_norm(&x[1], 0.0)?; // all ones
                parts.push(if i % 2 == 0 {
                    ones.relu()?
                } else {
                    ones.exp()?
                });
            }
            let mut acc = parts.pop().expect("N > 0");
            for p in parts {
                acc = acc.add(&p)?;
            }
            // A small output, so the only big buffers are the arena's.
            Ok(vec![acc.matmul(&x[2])?])
        },
        CompileConfig::default().mode(Mode::ReduceOverhead),
    );
    synchronize().unwrap();
    let base = rss_kib();
    let x = vec![
        Tensor::full(&[1024, 1024], 1.0, DType::F32).unwrap(),
        Tensor::full(&[1024], 1.0, DType::F32).unwrap(),
        Tensor::full(&[1024, 1], 1.0, DType::F32).unwrap(),
    ];
    // rms_norm of ones with weight 1 is 1; relu(1) = 1, exp(1) = e; the sum of 8 ones and
    // 8 e's, times a column of ones.
    let e = Tensor::full(&[1], 1.0, DType::F32)
        .unwrap()
        .exp()
        .unwrap()
        .to_vec_f32()
        .unwrap()[0];
    let mut outputs = Vec::new();
    for _ in 0..3 {
        outputs.push(model.run(&x).unwrap());
    }
    let arena = model.memory_stats().expect("a graph ran").arena_bytes as u64;
    assert!(
        arena >= (N as u64) << 22,
        "the arena ({arena} bytes) holds all {N} values of 4 MiB"
    );
    synchronize().unwrap();
    let peak = rss_kib();
    // One more replay, still queued when the `Compiled` is dropped (R5.12).
    outputs.push(model.run(&x).unwrap());
    drop(model);
    for out in &outputs {
        let v = out[0].to_vec_f32().unwrap();
        assert_eq!(v.len(), 1024);
        let want = 1024.0 * (8.0 + 8.0 * e);
        assert!(
            (v[0] - want).abs() <= want * 1e-5,
            "output {} vs {want}: outputs stay valid after the drop",
            v[0]
        );
    }
    drop(outputs);
    drop(x);
    synchronize().unwrap();
    let after = rss_settles_to(base + 8 * MIB);
    println!(
        "lifecycle: arena {} MiB; RSS base {base} KiB, with the graph {peak} KiB, after the \
         drop {after} KiB",
        arena >> 20
    );
    assert!(
        peak >= base + 60 * MIB,
        "the arena was resident: RSS went from {base} to only {peak} KiB"
    );
    assert!(
        after <= base + 8 * MIB,
        "dropping the Compiled and every tensor gave the arena back: RSS {base} KiB before, \
         {peak} KiB with the graph, {after} KiB after"
    );
}

/// R3.8: eager tensors on two streams (64 MiB each) are freed when the last handle and the
/// last queued entry using them are gone.
#[test]
fn dropping_eager_tensors_releases_their_buffers_r3_8() {
    let _s = serial();
    let ev = create_tagged_event("le-ev").unwrap();
    synchronize().unwrap();
    let base = rss_kib();
    let x = Tensor::full(&[4096, 4096], 0.5, DType::F32).unwrap();
    let y = x.exp().unwrap();
    tagged_event_record(&ev).unwrap();
    let z = {
        let _side = stream_switch("le-s").unwrap();
        tagged_event_wait(&ev).unwrap();
        y.relu().unwrap()
    };
    drop(y); // still used by the queued relu: kept alive by the entry (R3.8)
    let host = z.to_vec_f32().unwrap();
    assert_eq!(host[0], 0.5f32.exp());
    let peak = rss_kib();
    drop((x, z, host));
    synchronize().unwrap();
    let after = rss_settles_to(base + 8 * MIB);
    println!("lifecycle: eager RSS base {base} KiB, peak {peak} KiB, after the drop {after} KiB");
    assert!(
        peak >= base + 180 * MIB,
        "x, y, z and the host copy were resident: {base} -> {peak} KiB"
    );
    assert!(
        after <= base + 8 * MIB,
        "the buffers were freed: RSS {base} KiB before, {peak} KiB at peak, {after} KiB after"
    );
}

/// Idle workers park: after eager work, replays and a stream that was created but never given
/// work, no `tagstream:*` thread uses more than a tick or two over 300 ms. (Stream tags in this
/// file are short: Linux keeps 15 bytes of a thread name, and `worker_tid` needs them apart.)
#[test]
fn idle_workers_use_no_cpu_per_thread() {
    let _s = serial();
    drop(stream_switch("li-u").unwrap()); // a stream with no work at all
    let ev = create_tagged_event("li-ev").unwrap();
    let mut model = compile(
        move |x: &[Tensor]| -> Result<Vec<Tensor>> {
            let a = x[0].exp()?;
            tagged_event_record(&ev)?;
            let b = {
                let _s = stream_switch("li-a")?;
                tagged_event_wait(&ev)?;
                a.matmul(&x[0])?
            };
            let c = {
                let _s = stream_switch("li-b")?;
                x[0].relu()?
            };
            Ok(vec![b, c])
        },
        CompileConfig::default().mode(Mode::ReduceOverhead),
    );
    let x = [Tensor::randn(&[64, 64], DType::F32, 5).unwrap()];
    for _ in 0..200 {
        drop(model.run(&x).unwrap());
    }
    synchronize().unwrap();
    std::thread::sleep(Duration::from_millis(50)); // let the spin budgets run out
    let used = worker_ticks_over(Duration::from_millis(300));
    for tag in ["default", "li-a", "li-b"] {
        let tid = worker_tid(tag).unwrap_or_else(|| panic!("the worker of {tag:?} runs"));
        assert!(used.contains_key(&tid), "{tag:?} was sampled");
    }
    // A stream that was given no work has no worker thread at all: the CPU backend starts a
    // stream's worker with its first entry.
    assert_eq!(
        worker_tid("li-u"),
        None,
        "a stream with no work has no thread"
    );
    let total: u64 = used.values().sum();
    println!("lifecycle: idle worker ticks over 300 ms: {used:?}");
    assert!(
        used.values().all(|&t| t <= 2) && total <= 4,
        "idle workers used CPU: {used:?} ticks in 300 ms (a spinning worker burns ~30)"
    );
}

/// A worker blocked in an event wait parks: while the main stream runs a long chain of single-
/// threaded matmuls, the side stream waiting on it uses (almost) no CPU.
#[test]
fn a_worker_waiting_on_another_stream_parks() {
    let _s = serial();
    set_threads_per_stream(1); // the matmuls run on the main worker itself
    let a = Tensor::randn(&[512, 512], DType::F32, 9).unwrap();
    // Time one step (the faster of two), then queue enough steps to keep main busy for about
    // 1.5 s, five times the sampling window.
    let step = || {
        let t = Instant::now();
        a.matmul(&a)
            .unwrap()
            .softmax()
            .unwrap()
            .to_vec_f32()
            .unwrap();
        t.elapsed()
    };
    let one = step().min(step()).max(Duration::from_micros(100));
    let chain = (1.5 / one.as_secs_f64()).ceil() as usize;
    let ev = create_tagged_event("lw-ev").unwrap();
    let mut y = a.clone();
    for _ in 0..chain {
        y = y.matmul(&a).unwrap().softmax().unwrap(); // softmax keeps the values finite
    }
    tagged_event_record(&ev).unwrap();
    let z = {
        let _side = stream_switch("lw-s").unwrap();
        tagged_event_wait(&ev).unwrap();
        y.relu().unwrap()
    };
    std::thread::sleep(Duration::from_millis(30)); // past the waiter's spin budget
    let side = worker_tid("lw-s").expect("the side worker runs");
    let main = worker_tid("default").expect("the main worker runs");
    let used = worker_ticks_over(Duration::from_millis(300));
    let main_busy = stream_activity()[0].executed < stream_activity()[0].issued;
    z.to_vec_f32().unwrap();
    set_threads_per_stream(0);
    println!(
        "lifecycle: chain of {chain} matmuls ({one:?} each); ticks over 300 ms: main {:?}, \
         waiting side {:?}",
        used.get(&main),
        used.get(&side)
    );
    assert!(
        main_busy,
        "the main stream finished its chain within the window; the check saw no long wait"
    );
    assert!(
        used.get(&side).is_some_and(|&t| t <= 2),
        "the waiting worker used CPU: {used:?}"
    );
}
