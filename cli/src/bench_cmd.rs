//! `tagstream bench`: every figure of the benchmark table (README "Benchmarks"), measured in this one process
//! and printed as one table (target, median, spread, whether the target is met).
//!
//! *Strategy*: each figure is the median of many timed calls, shown with min / p25 / p75 / max.
//! A ratio (eager/replay, two streams vs one) is measured in interleaved rounds: each round
//! times both sides back to back and contributes one ratio, so load from other processes on a
//! shared machine hits both sides of a ratio alike. The programs measured are the shared ones in
//! [`tagstream::models`] (the same the criterion benches run); this module only times them.
//! Nothing here asserts a time: a missed target is reported, not an error.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tagstream::models::{self, PingPong};
use tagstream::{
    CompileConfig, Compiled, DType, Mode, Result, Tensor, compile, ops, set_threads_per_stream,
    synchronize,
};

/// Options of `tagstream bench`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BenchArgs {
    /// Small sizes and few runs (seconds, for tests); the figures are not comparable with the
    /// targets then.
    #[arg(long)]
    quick: bool,
    /// Also write the sizes and the medians as `key<TAB>value<TAB>unit` lines to this file
    /// (read by scripts/compare-pytorch.sh).
    #[arg(long, value_name = "FILE")]
    tsv: Option<PathBuf>,
    /// Measure only this group of rows (e.g. `auto` for the auto_* rows).
    #[arg(long, value_enum)]
    only: Option<Group>,
}

/// A group of rows of the table, for `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Group {
    /// chain_* rows: replay and eager cost per op.
    Chain,
    /// handoff_* and idle rows: the event hand-off and idle workers.
    Handoff,
    /// branches_* rows: two matmul branches on two streams vs one.
    Branches,
    /// auto_* rows: two chains written on one stream, auto_streams(2) vs as written.
    Auto,
    /// seed_* rows.
    Seed,
    /// add_* rows: the f16 add.
    Add,
}

/// Sizes and repetition counts of one `tagstream bench` run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    chain_ops: usize,
    chain_rounds: usize,
    replays_per_round: usize,
    handoff_round_trips: u32,
    handoff_runs: usize,
    gate_size: usize,
    idle_samples: usize,
    idle_window: Duration,
    matmul_size: usize,
    branch_matmuls: usize,
    branch_rounds: usize,
    seed_size: usize,
    seed_runs: usize,
    add_len: usize,
    add_runs: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                chain_ops: 100,
                chain_rounds: 3,
                replays_per_round: 3,
                handoff_round_trips: 200,
                handoff_runs: 3,
                gate_size: 256,
                idle_samples: 2,
                idle_window: Duration::from_millis(20),
                matmul_size: 128,
                branch_matmuls: 1,
                branch_rounds: 2,
                seed_size: 64,
                seed_runs: 3,
                add_len: 1 << 12,
                add_runs: 3,
            }
        } else {
            Plan {
                chain_ops: 1000,
                chain_rounds: 101,
                replays_per_round: 20,
                handoff_round_trips: 20_000,
                handoff_runs: 21,
                gate_size: 2000,
                idle_samples: 5,
                idle_window: Duration::from_millis(200),
                matmul_size: 1000,
                branch_matmuls: 2,
                branch_rounds: 11,
                seed_size: 1000,
                seed_runs: 31,
                add_len: 1 << 20,
                add_runs: 201,
            }
        }
    }
}

/// A row's goal.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// Met when the median is at most this.
    AtMost(f64),
    /// Met when the median is at least this.
    AtLeast(f64),
    /// No target here: printed for the PyTorch comparison (or for information).
    Print,
}

/// Median and spread of a sample.
#[derive(Debug, Clone, Copy)]
struct Spread {
    min: f64,
    p25: f64,
    median: f64,
    p75: f64,
    max: f64,
    n: usize,
}

impl Spread {
    fn of(mut v: Vec<f64>) -> Spread {
        assert!(!v.is_empty(), "a figure needs at least one sample");
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Spread {
            min: v[0],
            p25: at(0.25),
            median: at(0.5),
            p75: at(0.75),
            max: v[v.len() - 1],
            n: v.len(),
        }
    }
}

/// What a row shows in its measured columns.
#[derive(Debug, Clone)]
enum Measured {
    Sample(Spread),
    Text(String),
}

#[derive(Debug, Clone)]
struct Row {
    /// Stable machine-readable name (the `--tsv` key).
    key: String,
    figure: String,
    target: Target,
    unit: &'static str,
    measured: Measured,
}

impl Row {
    fn sample(key: &str, figure: String, target: Target, unit: &'static str, v: Vec<f64>) -> Row {
        Row {
            key: key.to_string(),
            figure,
            target,
            unit,
            measured: Measured::Sample(Spread::of(v)),
        }
    }

    fn met(&self) -> &'static str {
        match (&self.measured, self.target) {
            (Measured::Sample(s), Target::AtMost(t)) if s.median <= t => "yes",
            (Measured::Sample(s), Target::AtLeast(t)) if s.median >= t => "yes",
            (Measured::Sample(_), Target::AtMost(_) | Target::AtLeast(_)) => "NO",
            _ => "-",
        }
    }

    fn target_text(&self) -> String {
        match self.target {
            Target::AtMost(t) => format!("<= {}", num(t, self.unit)),
            Target::AtLeast(t) => format!(">= {}", num(t, self.unit)),
            Target::Print => "print".to_string(),
        }
    }
}

/// `v` with a precision that suits its size, and its unit.
fn num(v: f64, unit: &str) -> String {
    let digits = if v.abs() >= 100.0 {
        0
    } else if v.abs() >= 10.0 {
        1
    } else {
        2
    };
    if unit == "x" {
        format!("{v:.digits$}x")
    } else {
        format!("{v:.digits$} {unit}")
    }
}

/// Restores the default thread split when dropped (also on an early `?` return).
#[derive(Debug)]
struct SingleThreaded;

impl SingleThreaded {
    fn new() -> SingleThreaded {
        set_threads_per_stream(1);
        SingleThreaded
    }
}

impl Drop for SingleThreaded {
    fn drop(&mut self) {
        set_threads_per_stream(0);
    }
}

/// Runs every measurement, prints the table and writes `--tsv`. Returns `Ok(true)`: a missed
/// target is a finding, not a failure.
pub(crate) fn run(args: &BenchArgs) -> Result<bool> {
    let plan = Plan::new(args.quick);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let started = Instant::now();
    let load_at_start = load_average();
    let pressure_at_start = cpu_pressure();
    let mut rows = Vec::new();
    let mut notes = Vec::new();

    let wanted = |g: Group| args.only.is_none_or(|o| o == g);
    if wanted(Group::Chain) {
        for dtype in [DType::F32, DType::F16] {
            chain_rows(&plan, dtype, &mut rows, &mut notes)?;
        }
    }
    if wanted(Group::Handoff) {
        handoff_rows(&plan, &mut rows, &mut notes)?;
    }
    if wanted(Group::Branches) {
        branch_rows(&plan, cores, &mut rows, &mut notes)?;
    }
    if wanted(Group::Auto) {
        auto_rows(&plan, cores, &mut rows, &mut notes)?;
    }
    if wanted(Group::Seed) {
        seed_rows(&plan, &mut rows)?;
    }
    if wanted(Group::Add) {
        add_rows(&plan, &mut rows)?;
    }

    println!(
        "tagstream bench{}: {cores} cores, every figure measured in this process \
         ({:.1} s; load average {:.2} at the start, {:.2} at the end)",
        if args.quick {
            " --quick (small sizes: not comparable with the targets)"
        } else {
            ""
        },
        started.elapsed().as_secs_f64(),
        load_at_start.unwrap_or(f64::NAN),
        load_average().unwrap_or(f64::NAN),
    );
    println!("CPU: {}; {}", cpu_model(), instruction_sets());
    println!(
        "allocator: mimalloc (this binary's global allocator; with glibc's malloc the eager \
         figures are slower: README, \"Using it from your crate\")"
    );
    if let (Some(a), Some(b)) = (pressure_at_start, cpu_pressure()) {
        println!(
            "CPU pressure (share of time some runnable thread of the machine waited for a CPU, \
             last 60 s): {a:.0}% at the start, {b:.0}% at the end"
        );
    }
    println!(
        "median and spread (min, p25, p75, max) over n samples; ratios from interleaved rounds"
    );
    println!();
    print!("{}", table(&rows, args.quick));
    if !notes.is_empty() {
        println!();
        for n in &notes {
            println!("note: {n}");
        }
    }
    if let Some(path) = &args.tsv {
        // The sizes first, so a comparison script can run the same programs.
        let mut out = format!(
            "chain_ops\t{}\tparam\nseed_size\t{}\tparam\nadd_len\t{}\tparam\n",
            plan.chain_ops, plan.seed_size, plan.add_len
        );
        for r in &rows {
            match &r.measured {
                Measured::Sample(s) => {
                    let _ = writeln!(out, "{}\t{}\t{}", r.key, s.median, r.unit);
                }
                Measured::Text(t) => {
                    let _ = writeln!(out, "{}\t{}\ttext", r.key, t);
                }
            }
        }
        if let Err(e) = std::fs::write(path, out) {
            eprintln!("warning: could not write {}: {e}", path.display());
        }
    }
    Ok(true)
}

/// The rows as an aligned text table. A text row (the arena figures) writes its text from the
/// median column on and does not widen the numeric columns.
fn table(rows: &[Row], quick: bool) -> String {
    const HEADER: [&str; 9] = [
        "figure", "target", "median", "min", "p25", "p75", "max", "n", "met",
    ];
    let cells: Vec<(bool, Vec<String>)> = rows
        .iter()
        .map(|r| {
            let mut c = vec![r.figure.clone(), r.target_text()];
            match &r.measured {
                Measured::Sample(s) => {
                    for v in [s.median, s.min, s.p25, s.p75, s.max] {
                        c.push(num(v, r.unit));
                    }
                    c.push(s.n.to_string());
                    c.push(
                        match r.met() {
                            "yes" | "NO" if quick => "n/a",
                            met => met,
                        }
                        .to_string(),
                    );
                    (false, c)
                }
                Measured::Text(t) => {
                    c.push(t.clone());
                    (true, c)
                }
            }
        })
        .collect();
    let mut width = HEADER.map(str::len);
    for (text, c) in &cells {
        let upto = if *text { 2 } else { c.len() };
        for (w, s) in width.iter_mut().zip(&c[..upto]) {
            *w = (*w).max(s.chars().count());
        }
    }
    let line = |c: &[String]| {
        let mut s = String::new();
        for (i, (cell, &w)) in c.iter().zip(&width).enumerate() {
            if i < 2 || c.len() == 3 {
                let _ = write!(s, "{cell:<w$}  ");
            } else {
                let _ = write!(s, "{cell:>w$}  ");
            }
        }
        s.trim_end().to_string()
    };
    let mut out = String::new();
    let _ = writeln!(out, "{}", line(&HEADER.map(str::to_string)));
    let rule = width.iter().sum::<usize>() + 2 * (width.len() - 1);
    let _ = writeln!(out, "{}", "-".repeat(rule));
    for (_, c) in &cells {
        let _ = writeln!(out, "{}", line(c));
    }
    out
}

/// One call: issue, run, synchronize.
fn call(model: &mut Compiled, inputs: &[Tensor]) -> Result<Duration> {
    let start = Instant::now();
    black_box(model.run(inputs)?);
    synchronize()?;
    Ok(start.elapsed())
}

fn median_of(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Replay cost per op of the one-stream tiny chain, eager/replay ratio, arena of the chain.
fn chain_rows(
    plan: &Plan,
    dtype: DType,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<()> {
    let n = plan.chain_ops;
    let inputs = models::tiny_inputs(16, dtype)?;
    // "default" as the side scope: both halves of the chain run on the main stream.
    let mut eager = compile(models::tiny_chain(n, "default"), CompileConfig::default());
    let mut replay = compile(
        models::tiny_chain(n, "default"),
        CompileConfig::default().mode(Mode::ReduceOverhead),
    );
    let want = eager.run(&inputs)?;
    let got = replay.run(&inputs)?; // the capture
    if !same_bits(&got, &want)? {
        notes.push(format!(
            "tiny chain {dtype}: replay results differ from eager ones (they must be equal bit for bit)"
        ));
    }
    for _ in 0..3 {
        call(&mut eager, &inputs)?;
        call(&mut replay, &inputs)?;
    }
    let per_op = |d: Duration| d.as_secs_f64() * 1e9 / n as f64;
    let (mut replay_ns, mut eager_ns, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    let (start, sched) = (Instant::now(), SchedTimes::now());
    for _ in 0..plan.chain_rounds {
        let e = call(&mut eager, &inputs)?;
        let r: Vec<Duration> = (0..plan.replays_per_round)
            .map(|_| call(&mut replay, &inputs))
            .collect::<Result<_>>()?;
        replay_ns.extend(r.iter().map(|&d| per_op(d)));
        eager_ns.push(per_op(e));
        ratio.push(e.as_secs_f64() / median_of(r).as_secs_f64());
    }
    notes.extend(contention_note(
        &format!("tiny chain {dtype} rounds"),
        start.elapsed(),
        sched,
    ));
    let what = format!("{n}-op chain [16] {dtype}, 1 stream");
    rows.push(Row::sample(
        &format!("replay_per_op_{dtype}"),
        format!("replay cost per op, {what}"),
        Target::AtMost(40.0),
        "ns",
        replay_ns,
    ));
    rows.push(Row::sample(
        &format!("eager_per_op_{dtype}"),
        format!("eager cost per op, {what}"),
        Target::AtMost(500.0),
        "ns",
        eager_ns,
    ));
    rows.push(Row::sample(
        &format!("eager_over_replay_{dtype}"),
        format!("eager/replay, {what}"),
        Target::AtLeast(10.0),
        "x",
        ratio,
    ));
    if dtype == DType::F16
        && let Some(m) = replay.memory_stats()
    {
        rows.push(arena_row(&format!("arena_chain_{dtype}"), &what, m));
    }
    Ok(())
}

fn arena_row(key: &str, what: &str, m: tagstream::MemoryStats) -> Row {
    Row {
        key: key.to_string(),
        figure: format!("arena vs sum of values, {what}"),
        target: Target::Print,
        unit: "B",
        measured: Measured::Text(format!(
            "arena {} B vs values {} B ({} values in {} slots; outputs {} B apart)",
            m.arena_bytes, m.value_bytes, m.values, m.slots, m.output_bytes
        )),
    }
}

/// Whether `got` equals `want` bit for bit (NaN equal to NaN).
fn same_bits(got: &[Tensor], want: &[Tensor]) -> Result<bool> {
    for (g, w) in got.iter().zip(want) {
        let (g, w) = (g.to_vec_f32()?, w.to_vec_f32()?);
        if g.len() != w.len()
            || g.iter()
                .zip(&w)
                .any(|(a, b)| a.to_bits() != b.to_bits() && !(a.is_nan() && b.is_nan()))
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Scheduler totals over every thread of this process, from `/proc/self/task/*/schedstat`
/// (Linux): time on a CPU, and time runnable but waiting for one (the cores were busy with
/// other threads, ours or other processes').
#[derive(Debug, Clone, Copy, Default)]
struct SchedTimes {
    cpu_ns: u64,
    wait_ns: u64,
}

impl SchedTimes {
    /// `None` where schedstat is not available.
    fn now() -> Option<SchedTimes> {
        let mut t = SchedTimes::default();
        for task in std::fs::read_dir("/proc/self/task").ok()? {
            let path = task.ok()?.path().join("schedstat");
            // A thread may exit between the listing and the read; skip it then.
            if let Ok(s) = std::fs::read_to_string(path) {
                let mut f = s.split_whitespace().map(str::parse::<u64>);
                t.cpu_ns += f.next()?.ok()?;
                t.wait_ns += f.next()?.ok()?;
            }
        }
        Some(t)
    }

    /// CPU and run-queue time used from `self` to `later`, in ms.
    fn ms_until(self, later: SchedTimes) -> (f64, f64) {
        (
            later.cpu_ns.saturating_sub(self.cpu_ns) as f64 / 1e6,
            later.wait_ns.saturating_sub(self.wait_ns) as f64 / 1e6,
        )
    }
}

/// A note on how much CPU the process got while `wall` elapsed between `before` and `after`.
fn contention_note(what: &str, wall: Duration, before: Option<SchedTimes>) -> Option<String> {
    let (cpu, wait) = before?.ms_until(SchedTimes::now()?);
    let wall = wall.as_secs_f64() * 1e3;
    Some(format!(
        "{what}: this process ran {:.2} CPUs on average and its threads waited {:.0} ms for a \
         CPU in {:.0} ms ({:.2} load average at the end)",
        cpu / wall,
        wait,
        wall,
        load_average().unwrap_or(f64::NAN)
    ))
}

/// `some avg60` of `/proc/pressure/cpu` (Linux PSI): the percentage of the last minute in which
/// at least one runnable thread on the machine waited for a CPU.
fn cpu_pressure() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/pressure/cpu").ok()?;
    let some = text.lines().find(|l| l.starts_with("some "))?;
    some.split_whitespace()
        .find_map(|f| f.strip_prefix("avg60="))?
        .parse()
        .ok()
}

/// The 1-minute load average (Linux).
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The event hand-off (gated ping-pong) and the CPU idle workers use afterwards.
fn handoff_rows(plan: &Plan, rows: &mut Vec<Row>, notes: &mut Vec<String>) -> Result<()> {
    let pp = PingPong::new(&format!("bench-pp-{}", std::process::id()), plan.gate_size)?;
    pp.run(10)?; // warm-up: starts both workers
    let trips = plan.handoff_round_trips;
    let mut per = Vec::new();
    let mut issue = Vec::new();
    let mut not_held = 0;
    let (start, sched) = (Instant::now(), SchedTimes::now());
    for _ in 0..plan.handoff_runs {
        let t = pp.run(trips)?;
        not_held += usize::from(!t.gate_held);
        per.push(t.per_handoff(trips).as_secs_f64() * 1e9);
        issue.push(t.issue);
    }
    notes.extend(contention_note("hand-off runs", start.elapsed(), sched));
    if not_held > 0 {
        notes.push(format!(
            "hand-off: in {not_held} of {} runs the gate finished before the ping-pong was \
             queued, so those runs include issue time",
            plan.handoff_runs
        ));
    }
    notes.push(format!(
        "hand-off: {} hand-offs per run; queueing them took {:.1} ms (median), hidden behind \
         the gate",
        2 * trips,
        median_of(issue).as_secs_f64() * 1e3
    ));
    rows.push(Row::sample(
        "handoff_ns",
        "cross-stream event hand-off (gated ping-pong), per hand-off".to_string(),
        Target::AtMost(2000.0),
        "ns",
        per,
    ));
    // Idle workers park: with every stream idle, the process should use (almost) no CPU.
    let window = plan.idle_window;
    let mut idle = Vec::new();
    for _ in 0..plan.idle_samples {
        synchronize()?;
        let Some(before) = SchedTimes::now() else {
            notes.push("idle CPU: /proc/self/task/*/schedstat not readable".into());
            return Ok(());
        };
        std::thread::sleep(window);
        let after = SchedTimes::now().unwrap_or(before);
        idle.push(before.ms_until(after).0);
    }
    rows.push(Row::sample(
        "idle_cpu_ms",
        format!(
            "idle workers park: CPU of all threads in {} ms idle",
            window.as_millis()
        ),
        Target::AtMost(window.as_secs_f64() * 1e3 / 100.0),
        "ms",
        idle,
    ));
    Ok(())
}

/// Two independent single-thread matmul branches on two streams vs on one.
fn branch_rows(
    plan: &Plan,
    cores: usize,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<()> {
    let _single = SingleThreaded::new();
    let s = plan.matmul_size;
    let x: Vec<Tensor> = (0..2)
        .map(|i| Tensor::randn(&[s, s], DType::F32, 20 + i))
        .collect::<Result<_>>()?;
    let mut one = models::matmul_branches(plan.branch_matmuls, ["default", "default"]);
    let mut two = models::matmul_branches(plan.branch_matmuls, ["bench-mm-1", "bench-mm-2"]);
    let time = |f: &mut dyn FnMut(&[Tensor]) -> Result<Vec<Tensor>>| -> Result<Duration> {
        let start = Instant::now();
        black_box(f(&x)?);
        synchronize()?;
        Ok(start.elapsed())
    };
    time(&mut one)?; // warm-up: starts the workers, grows gemm's scratch
    time(&mut two)?;
    let mut ratio = Vec::new();
    let mut two_ms = Vec::new();
    // Per side: wall time, CPU time and run-queue wait summed over the rounds.
    let mut used = [(Duration::ZERO, 0.0, 0.0); 2];
    let mut timed = |side: usize, f: &mut dyn FnMut(&[Tensor]) -> Result<Vec<Tensor>>| {
        let sched = SchedTimes::now();
        let t = time(f)?;
        if let (Some(a), Some(b)) = (sched, SchedTimes::now()) {
            let (cpu, wait) = a.ms_until(b);
            used[side].0 += t;
            used[side].1 += cpu;
            used[side].2 += wait;
        }
        Ok::<_, tagstream::Error>(t)
    };
    for _ in 0..plan.branch_rounds {
        let t1 = timed(0, &mut one)?;
        let t2 = timed(1, &mut two)?;
        ratio.push(t1.as_secs_f64() / t2.as_secs_f64());
        two_ms.push(t2.as_secs_f64() * 1e3);
    }
    if !used[1].0.is_zero() {
        let rounds = plan.branch_rounds as f64;
        let [(w1, c1, q1), (w2, c2, q2)] = used.map(|(w, c, q)| (w.as_secs_f64() * 1e3, c, q));
        notes.push(format!(
            "matmul branches, per round: 1 stream {:.0} ms wall, {:.0} ms CPU, {:.0} ms waiting \
             for a CPU; 2 streams {:.0} ms wall, {:.0} ms CPU ({:.2} CPUs on average; 2.00 = \
             both branches always on a core), {:.0} ms waiting for a CPU ({:.2} load average \
             at the end)",
            w1 / rounds,
            c1 / rounds,
            q1 / rounds,
            w2 / rounds,
            c2 / rounds,
            c2 / w2,
            q2 / rounds,
            load_average().unwrap_or(f64::NAN)
        ));
    }
    let what = format!(
        "2 branches x {} matmul {s}x{s} f32, 1 thread each",
        plan.branch_matmuls
    );
    rows.push(Row::sample(
        "branches_two_streams_ms",
        format!("{what}, on 2 streams"),
        Target::Print,
        "ms",
        two_ms,
    ));
    rows.push(Row::sample(
        "branches_speedup",
        format!("{what}: 1 stream / 2 streams ({cores} cores)"),
        Target::AtLeast(1.7),
        "x",
        ratio,
    ));
    Ok(())
}

/// Two independent chains of matmuls written on one stream, replayed as written and with
/// `auto_streams(2)` (issue 15), 1 thread per stream on both sides.
fn auto_rows(
    plan: &Plan,
    cores: usize,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<()> {
    let _single = SingleThreaded::new();
    let (s, depth) = if plan.matmul_size < 1000 {
        (64, 2)
    } else {
        (256, 8)
    };
    let rounds = plan.branch_rounds * 5;
    let chains = move |x: &[Tensor]| -> Result<Vec<Tensor>> {
        let (mut a, mut b) = (x[0].clone(), x[1].clone());
        for _ in 0..depth {
            a = a.matmul(&x[2])?.mul_scalar(0.0625)?;
            b = b.matmul(&x[2])?.mul_scalar(0.0625)?;
        }
        Ok(vec![a, b])
    };
    let x: Vec<Tensor> = (0..3)
        .map(|i| Tensor::randn(&[s, s], DType::F32, 30 + i))
        .collect::<Result<_>>()?;
    let ro = CompileConfig::default().mode(Mode::ReduceOverhead);
    let mut one = compile(chains, ro);
    let mut auto = compile(chains, ro.auto_streams(2));
    let want = one.run(&x)?;
    let got = auto.run(&x)?;
    if !same_bits(&got, &want)? {
        notes.push("auto streams: replay differs from the one-stream replay (R5.6)".into());
    }
    let streams = auto.graph_streams().unwrap_or_default();
    notes.push(format!(
        "auto streams: 2 chains x {depth} matmul {s}x{s} f32 written on one stream; \
         auto_streams(2) placed them on {streams:?}"
    ));
    let mut ratio = Vec::new();
    let mut auto_ms = Vec::new();
    let mut one_ms = Vec::new();
    for _ in 0..rounds {
        let t1 = call(&mut one, &x)?;
        let t2 = call(&mut auto, &x)?;
        ratio.push(t1.as_secs_f64() / t2.as_secs_f64());
        one_ms.push(t1.as_secs_f64() * 1e3);
        auto_ms.push(t2.as_secs_f64() * 1e3);
    }
    let what = format!("2 chains x {depth} matmul {s}x{s} f32 on one stream, 1 thread per stream");
    rows.push(Row::sample(
        "auto_one_stream_ms",
        format!("{what}: replay as written"),
        Target::Print,
        "ms",
        one_ms,
    ));
    rows.push(Row::sample(
        "auto_two_streams_ms",
        format!("{what}: replay with auto_streams(2)"),
        Target::Print,
        "ms",
        auto_ms,
    ));
    rows.push(Row::sample(
        "auto_speedup",
        format!("{what}: as written / auto_streams(2) ({cores} cores)"),
        Target::AtLeast(1.7),
        "x",
        ratio,
    ));
    Ok(())
}

/// The seed model replayed, f16, f32 and bf16, and its arena.
fn seed_rows(plan: &Plan, rows: &mut Vec<Row>) -> Result<()> {
    let s = plan.seed_size;
    let ev = ops::create_tagged_event("bench-seed-66")?;
    for dtype in [DType::F16, DType::F32, DType::BF16] {
        let inputs = models::seed_inputs(s, dtype)?;
        let mut model = compile(
            models::seed_model(ev.clone(), "bench-seed-side"),
            CompileConfig::default().mode(Mode::ReduceOverhead),
        );
        call(&mut model, &inputs)?; // the capture
        call(&mut model, &inputs)?;
        let ms: Vec<f64> = (0..plan.seed_runs)
            .map(|_| call(&mut model, &inputs).map(|d| d.as_secs_f64() * 1e3))
            .collect::<Result<_>>()?;
        let what = format!("seed model {s}x{s} {dtype}, reduce-overhead, 2 streams");
        rows.push(Row::sample(
            &format!("seed_{dtype}_ms"),
            what.clone(),
            Target::Print,
            "ms",
            ms,
        ));
        if dtype == DType::F16
            && let Some(m) = model.memory_stats()
        {
            rows.push(arena_row(
                &format!("arena_seed_{dtype}"),
                &format!("seed {s}x{s} {dtype}"),
                m,
            ));
        }
    }
    Ok(())
}

/// One f16 add of `add_len` elements on one thread (issue, run, synchronize).
fn add_rows(plan: &Plan, rows: &mut Vec<Row>) -> Result<()> {
    let _single = SingleThreaded::new();
    let len = plan.add_len;
    let a = Tensor::randn(&[len], DType::F16, 30)?;
    let b = Tensor::randn(&[len], DType::F16, 31)?;
    let once = || -> Result<f64> {
        let start = Instant::now();
        black_box(a.add(&b)?);
        synchronize()?;
        Ok(start.elapsed().as_secs_f64() * 1e3)
    };
    once()?;
    let ms: Vec<f64> = (0..plan.add_runs).map(|_| once()).collect::<Result<_>>()?;
    let what = if len.is_multiple_of(1 << 20) {
        format!("{}M", len >> 20)
    } else {
        len.to_string()
    };
    rows.push(Row::sample(
        "add_f16_ms",
        format!("f16 add, {what} elements, 1 thread (eager: issue + run + sync)"),
        Target::Print,
        "ms",
        ms,
    ));
    Ok(())
}

/// The CPU's model name (Linux `/proc/cpuinfo`), so a table says which machine it is from.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown model".into())
}

/// The instruction sets the kernels may pick at run time on this CPU.
fn instruction_sets() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let sets = [
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
            ("f16c", std::arch::is_x86_feature_detected!("f16c")),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
            (
                "avx512bf16",
                std::arch::is_x86_feature_detected!("avx512bf16"),
            ),
            (
                "avx512fp16",
                std::arch::is_x86_feature_detected!("avx512fp16"),
            ),
        ];
        let found: Vec<&str> = sets.iter().filter(|s| s.1).map(|s| s.0).collect();
        let avx512vl = std::arch::is_x86_feature_detected!("avx512vl");
        let small_m = if avx512vl && found.contains(&"avx512f") {
            "AVX-512"
        } else if found.contains(&"avx2") && found.contains(&"fma") {
            "AVX2/FMA"
        } else {
            "none: the gemm path"
        };
        let bf16_dot =
            if found.contains(&"avx512bf16") && std::arch::is_x86_feature_detected!("avx512bw") {
                "bf16 GEMM on AVX512-BF16 dot products where no subnormal can arise (else as f32); "
            } else {
                ""
            };
        format!(
            "instruction sets: {} (f16 conversions and elementwise f16 use F16C where present; \
             {bf16_dot}GEMM with m > 16 is the gemm crate's run-time dispatch, its AVX-512 path \
             included; m <= 16 uses tagstream's kernel, {small_m} path)",
            if found.is_empty() {
                "baseline x86-64".to_string()
            } else {
                found.join(" ")
            }
        )
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        format!("{} (portable kernels)", std::env::consts::ARCH)
    }
}
