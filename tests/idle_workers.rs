//! Idle stream workers park instead of spinning (design.md §3, issue 3 item 4): after work
//! finishes, the process uses (almost) no CPU. Linux only: reads this process's CPU time.

#![cfg(target_os = "linux")]

use std::time::Duration;

use tagstream::ops::{create_tagged_event, tagged_event_record, tagged_event_wait};
use tagstream::scope::stream_switch;
use tagstream::{DType, Tensor, synchronize};

/// utime + stime of this process, in clock ticks (usually 10 ms each).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("procfs is available on Linux");
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

#[test]
fn idle_workers_use_no_cpu() {
    let ev = create_tagged_event("idle-ev").unwrap();
    let x = Tensor::randn(&[128, 128], DType::F32, 1).unwrap();
    // Start four streams and give them work with cross-stream waits.
    for tag in ["idle-1", "idle-2", "idle-3", "idle-4"] {
        let y = x.matmul(&x).unwrap();
        tagged_event_record(&ev).unwrap();
        let _s = stream_switch(tag).unwrap();
        tagged_event_wait(&ev).unwrap();
        y.exp().unwrap();
    }
    synchronize().unwrap();
    std::thread::sleep(Duration::from_millis(50)); // let the spin budgets run out
    let before = cpu_ticks();
    std::thread::sleep(Duration::from_millis(500));
    let used = cpu_ticks() - before;
    // Five parked workers and a sleeping test thread: 0 ticks expected; a spinning worker
    // would burn ~50 ticks (a full core) in 500 ms. Allow a few ticks for test-harness noise.
    assert!(used <= 5, "idle process used {used} CPU ticks in 500 ms");
}
