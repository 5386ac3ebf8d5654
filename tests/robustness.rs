//! Regression tests for robustness bugs found by calling tagstream as a hostile user would.
//!
//! - Calls from a thread-local destructor that runs after tagstream's own thread-locals are
//!   gone used to abort the process ("thread local panicked on drop"). They now work (ops and
//!   events go to the main stream, R2.3) or return `Error::ThreadExiting` (scopes, compiled
//!   calls). The test runs in a child process so an abort cannot kill the test run.
//! - A failure poisoned unrelated replay outputs depending on timing (R3.12, R3.10, R5.6): the
//!   side output of a graph whose main stream fails is checked under chaos delays.

use std::process::Command;
use std::sync::mpsc;

use tagstream::ops::{create_tagged_event, tagged_event_record, tagged_event_wait};
use tagstream::scope::{current_stream, stream_switch};
use tagstream::{CompileConfig, DType, Error, Mode, Result, Tensor, compile, set_chaos};

/// What the late destructor saw: one line per call.
struct LateCaller(Option<mpsc::Sender<String>>);

impl Drop for LateCaller {
    fn drop(&mut self) {
        let Some(tx) = self.0.take() else { return };
        let mut report = Vec::new();
        let x = Tensor::full(&[4], 2.0, DType::F32);
        report.push(format!("full: {}", x.is_ok()));
        if let Ok(x) = x {
            let y = x.add(&x).and_then(|y| y.to_vec_f32());
            report.push(format!("add+to_vec: {y:?}"));
        }
        report.push(format!("current_stream: {}", current_stream()));
        let ev = create_tagged_event("robust-late-ev");
        if let Ok(ev) = &ev {
            report.push(format!("record: {:?}", tagged_event_record(ev).is_ok()));
            report.push(format!("wait: {:?}", tagged_event_wait(ev).is_ok()));
        }
        let switched = stream_switch("robust-late-side").map(drop);
        report.push(format!("stream_switch: {switched:?}"));
        let mut c = compile(
            |x: &[Tensor]| Ok(vec![x[0].exp()?]),
            CompileConfig::default(),
        );
        let ran = Tensor::full(&[2], 0.0, DType::F32).and_then(|x| c.run(&[x]));
        report.push(format!(
            "compiled run: {}",
            ran.map_or_else(|e| e.to_string(), |_| "ok".into())
        ));
        report.push(format!("synchronize: {:?}", tagstream::synchronize()));
        let _ = tx.send(report.join("\n"));
    }
}

thread_local! {
    static LATE: std::cell::RefCell<LateCaller> = const { std::cell::RefCell::new(LateCaller(None)) };
}

/// The body run in the child process: a thread whose thread-local destructor calls tagstream
/// after tagstream's own thread-locals were destroyed (they were initialised later, so they are
/// destroyed first).
fn late_destructor_body() {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        LATE.with(|l| l.borrow_mut().0 = Some(tx)); // registered first, destroyed last
        let g = stream_switch("robust-late-early").unwrap(); // tagstream's locals now exist
        drop(g);
        let x = Tensor::full(&[2], 1.0, DType::F32).unwrap();
        x.exp().unwrap().to_vec_f32().unwrap();
    })
    .join()
    .unwrap();
    let report = rx.recv().expect("the destructor ran and reported");
    println!("{report}");
}

#[test]
fn calls_from_a_late_thread_local_destructor_do_not_abort() {
    if std::env::var_os("TAGSTREAM_LATE_TLS_CHILD").is_some() {
        late_destructor_body();
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "calls_from_a_late_thread_local_destructor_do_not_abort",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TAGSTREAM_LATE_TLS_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the child died ({:?}):\n{stdout}\n{stderr}",
        out.status
    );
    for line in [
        "full: true",
        "add+to_vec: Ok([4.0, 4.0, 4.0, 4.0])",
        // No scope can be open on a thread whose scope stack is gone: the main stream (R2.3).
        "current_stream: default",
        "record: true",
        "wait: true",
        "synchronize: Ok(())",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    // Scopes and compiled calls need per-thread state: a clear error, never an abort.
    assert!(
        stdout.contains("stream_switch: Err(ThreadExiting { call: \"stream_switch\" })"),
        "{stdout}"
    );
    assert!(
        stdout.contains("compiled run: Compiled::run: called while this thread is exiting"),
        "{stdout}"
    );
}

/// R3.12 under timing noise: the main stream's matmul fails to allocate at run time, the side
/// stream's `exp` reads neither it nor anything after it, so the side output is always right,
/// eagerly and in every replay, whatever the delays.
#[test]
fn an_unrelated_output_never_fails_whatever_the_timing_r3_12() {
    let model = |x: &[Tensor]| -> Result<Vec<Tensor>> {
        let pre = x[3].exp()?.exp()?; // main-stream work of varying length before the failure
        let big = x[0].matmul(&x[1])?;
        let side = {
            let _s = stream_switch("robust-poison-side")?;
            x[2].exp()?
        };
        Ok(vec![big, side, pre])
    };
    let x = [
        Tensor::full(&[1 << 21, 1], 1.0, DType::F32).unwrap(),
        Tensor::full(&[1, 1 << 20], 1.0, DType::F32).unwrap(),
        Tensor::randn(&[64], DType::F32, 1).unwrap(),
        Tensor::randn(&[256, 256], DType::F32, 2).unwrap(),
    ];
    let want = x[2].exp().unwrap().to_vec_f32().unwrap();
    let mut c = compile(model, CompileConfig::default().mode(Mode::ReduceOverhead));
    for seed in 0..8 {
        set_chaos((seed > 0).then_some(seed));
        for _ in 0..10 {
            let out = c.run(&x).unwrap();
            assert!(matches!(
                out[0].to_vec_f32(),
                Err(Error::ExecutionFailed { .. })
            ));
            assert_eq!(out[1].to_vec_f32().unwrap(), want, "chaos seed {seed}");
            assert!(out[2].to_vec_f32().is_ok());
        }
    }
    set_chaos(None);
    let _ = tagstream::synchronize();
}
