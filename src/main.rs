//! The `tagstream` command line: runs the seed model (default), more commands to come.
//!
//! `tagstream` alone is `tagstream run`: the seed model of design.md §1 on two streams with
//! 1000×1000 f16 inputs in reduce-overhead mode (captured once, then replayed), checked against
//! the single-stream serial reference, followed by eager-vs-replay timings of the seed and of a
//! 1000-op tiny-op chain. `tagstream bench` prints the benchmark table (`bench_cmd`).

mod bench_cmd;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use tagstream::{
    CompileConfig, Compiled, DType, Mode, Result, Tensor, compile, models, ops, stream_activity,
    synchronize, trace,
};

#[derive(Debug, Parser)]
#[command(
    name = "tagstream",
    version,
    about = "Multi-stream tensor runtime with tagged events"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the seed model on two streams and check it against the serial reference (default).
    Run(RunArgs),
    /// Measure every figure of the benchmark table (issue 6) and print it with its targets.
    Bench(bench_cmd::BenchArgs),
    /// Record the seed model's per-stream timeline, eager and replayed, as a Chrome trace
    /// (Perfetto) and/or an SVG picture.
    Trace(TraceArgs),
}

#[derive(Debug, Clone, clap::Args)]
struct TraceArgs {
    /// Write a Chrome trace (open in https://ui.perfetto.dev or chrome://tracing).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Write an SVG picture: one lane per stream, op boxes, arrows from records to waits.
    #[arg(long)]
    svg: Option<std::path::PathBuf>,
    /// Element type of the inputs: f32, f16 or bf16.
    #[arg(long, default_value = "f16", value_parser = parse_dtype)]
    dtype: DType,
    /// Inputs are [size, size].
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=8192))]
    size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    /// Every op is issued to its stream as the model runs (`Mode::Eager`).
    Eager,
    /// Captured once into a multi-stream graph, then replayed (`Mode::ReduceOverhead`).
    ReduceOverhead,
}

impl ModeArg {
    fn name(self) -> &'static str {
        match self {
            ModeArg::Eager => "eager",
            ModeArg::ReduceOverhead => "reduce-overhead",
        }
    }

    fn mode(self) -> Mode {
        match self {
            ModeArg::Eager => Mode::Eager,
            ModeArg::ReduceOverhead => Mode::ReduceOverhead,
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
struct RunArgs {
    /// Element type of the inputs: f32, f16 or bf16.
    #[arg(long, default_value = "f16", value_parser = parse_dtype)]
    dtype: DType,
    /// Inputs are [size, size].
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=8192))]
    size: u64,
    /// Execution mode.
    #[arg(long, value_enum, default_value_t = ModeArg::ReduceOverhead)]
    mode: ModeArg,
    /// Timed runs (after one warm-up run); the median is reported.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    runs: u64,
    /// Ops in the tiny-op chain (16-element tensors, half on each of two streams) timed eager
    /// vs replay after the seed model; 0 skips it.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    chain_ops: u64,
    /// Device the seed model runs on: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: tagstream::Device,
}

fn parse_device(s: &str) -> std::result::Result<tagstream::Device, String> {
    s.parse::<tagstream::Device>().map_err(|e| e.to_string())
}

impl Default for RunArgs {
    fn default() -> Self {
        RunArgs {
            dtype: DType::F16,
            size: 1000,
            mode: ModeArg::ReduceOverhead,
            runs: 10,
            chain_ops: 1000,
            device: tagstream::Device::Cpu,
        }
    }
}

fn parse_dtype(s: &str) -> std::result::Result<DType, String> {
    s.parse::<DType>().map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Run(RunArgs::default())) {
        Command::Run(args) => run_seed(&args).map_err(|e| e.to_string()),
        Command::Bench(args) => bench_cmd::run(&args).map_err(|e| e.to_string()),
        Command::Trace(args) => run_trace(&args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs the seed model, prints the table, and returns whether every check passed.
fn run_seed(args: &RunArgs) -> Result<bool> {
    let size = usize::try_from(args.size).expect("clap bounds --size to 1..=8192");
    let runs = usize::try_from(args.runs).expect("clap bounds --runs to 1..=10000");
    let side = "1";
    let ev = ops::create_tagged_event("66")?;
    let config = CompileConfig::default().mode(args.mode.mode());
    let mut model = compile(models::seed_model(ev.clone(), side), config);
    let inputs = models::seed_inputs(size, args.dtype)?
        .iter()
        .map(|t| t.to_device(args.device))
        .collect::<Result<Vec<_>>>()?;

    let activity_before = stream_activity();
    // Warm-up (the capture, in reduce-overhead mode): starts the side stream's worker and
    // faults in the allocator's pages.
    let outputs = run_once(&mut model, &inputs)?;
    let times = time_calls(&mut model, &inputs, runs)?;
    let activity_after = stream_activity();

    let host_inputs: Vec<Vec<f32>> = inputs
        .iter()
        .map(Tensor::to_vec_f32)
        .collect::<Result<_>>()?;
    let host_outputs: Vec<Vec<f32>> = outputs
        .iter()
        .map(Tensor::to_vec_f32)
        .collect::<Result<_>>()?;
    let checks = models::check_seed(&host_inputs, &host_outputs, size, args.dtype);

    println!(
        "tagstream seed model: 4 inputs [{size}, {size}] {}, mode {}, {} timed runs",
        args.dtype,
        args.mode.name(),
        args.runs
    );
    println!();
    println!(
        "{:<6} {:<18} {:>12}  status",
        "output", "check", "max |err|"
    );
    for c in &checks {
        let status = match &c.failure {
            None => "ok".to_string(),
            Some(why) => format!("FAIL: {why}"),
        };
        println!(
            "{:<6} {:<18} {:>12.3e}  {}",
            c.name, c.rule, c.max_abs_err, status
        );
    }
    println!();
    println!(
        "wall time per run: median {} (min {}, max {}) over {} runs",
        ms(median(&times)),
        ms(times[0]),
        ms(times[times.len() - 1]),
        times.len()
    );
    let used: Vec<String> = activity_after
        .iter()
        .filter_map(|a| {
            let before = activity_before
                .iter()
                .find(|b| b.tag == a.tag)
                .map_or(0, |b| b.issued);
            (a.issued > before).then(|| format!("\"{}\" ({} entries)", a.tag, a.issued - before))
        })
        .collect();
    println!("streams used: {}", used.join(", "));
    let stats = model.stats();
    println!(
        "compiled: {} capture(s), {} replay(s), {} eager run(s)",
        stats.captures, stats.replays, stats.eager_runs
    );
    if let Some(dump) = model.graph_dump() {
        println!("graph (per-stream order):");
        for line in dump.lines() {
            println!("  {line}");
        }
    }
    if let Some(m) = model.memory_stats() {
        println!(
            "memory plan: arena {} for {} values of {} ({} slots); outputs {} in their own buffers",
            bytes(m.arena_bytes),
            m.values,
            bytes(m.value_bytes),
            m.slots,
            bytes(m.output_bytes)
        );
    }
    let mut ok = checks.iter().all(|c| c.failure.is_none());
    if args.mode == ModeArg::ReduceOverhead {
        println!();
        ok &= compare_eager_replay(args, &ev, &inputs, &times, &host_outputs)?;
    }
    Ok(ok)
}

/// Times `Mode::Eager` against the replays already measured for the seed, then both modes on
/// the tiny-op chain; checks that replay results equal eager ones bit for bit (R5.6).
fn compare_eager_replay(
    args: &RunArgs,
    ev: &ops::TaggedEvent,
    seed_inputs: &[Tensor],
    seed_replay: &[Duration],
    seed_outputs: &[Vec<f32>],
) -> Result<bool> {
    let runs = usize::try_from(args.runs).expect("clap bounds --runs");
    let eager_cfg = CompileConfig::default().mode(Mode::Eager);
    let mut eager_seed = compile(models::seed_model(ev.clone(), "1"), eager_cfg);
    let eager_out = run_once(&mut eager_seed, seed_inputs)?;
    let seed_eager = time_calls(&mut eager_seed, seed_inputs, runs)?;
    let mut ok = same_bits(&eager_out, seed_outputs)?;

    println!("eager vs replay, median per call (issue + run + synchronize):");
    println!(
        "{:<42} {:>10} {:>10} {:>9}",
        "model", "eager", "replay", "speed-up"
    );
    let (e, r) = (median(&seed_eager), median(seed_replay));
    println!(
        "{:<42} {:>10} {:>10} {:>8.2}x",
        format!("seed [{0}x{0}] {1}", args.size, args.dtype),
        ms(e),
        ms(r),
        e.as_secs_f64() / r.as_secs_f64()
    );
    let ops_n = usize::try_from(args.chain_ops).expect("clap bounds --chain-ops");
    if ops_n > 0 {
        let chain_inputs = models::tiny_inputs(16, args.dtype)?;
        let mut eager_chain = compile(models::tiny_chain(ops_n, "1"), eager_cfg);
        let mut replay_chain = compile(
            models::tiny_chain(ops_n, "1"),
            eager_cfg.mode(Mode::ReduceOverhead),
        );
        let want = run_once(&mut eager_chain, &chain_inputs)?;
        let got = run_once(&mut replay_chain, &chain_inputs)?;
        let want: Vec<Vec<f32>> = want.iter().map(Tensor::to_vec_f32).collect::<Result<_>>()?;
        ok &= same_bits(&got, &want)?;
        let calls = (runs * 20).max(100);
        let te = median(&time_calls(&mut eager_chain, &chain_inputs, calls)?);
        let tr = median(&time_calls(&mut replay_chain, &chain_inputs, calls)?);
        println!(
            "{:<42} {:>10} {:>10} {:>8.2}x",
            format!("tiny chain {ops_n} ops [16] {}, 2 streams", args.dtype),
            ms(te),
            ms(tr),
            te.as_secs_f64() / tr.as_secs_f64()
        );
        println!(
            "  per op: eager {:.0} ns, replay {:.0} ns",
            te.as_secs_f64() * 1e9 / ops_n as f64,
            tr.as_secs_f64() * 1e9 / ops_n as f64
        );
        if let Some(m) = replay_chain.memory_stats() {
            println!(
                "  chain memory plan: arena {} for {} values of {} ({} slots)",
                bytes(m.arena_bytes),
                m.values,
                bytes(m.value_bytes),
                m.slots
            );
        }
    }
    if !ok {
        println!("FAIL: replay results differ from eager results (R5.6)");
    }
    Ok(ok)
}

/// Whether `got` equals `want` bit for bit (NaN equal to NaN).
fn same_bits(got: &[Tensor], want: &[Vec<f32>]) -> Result<bool> {
    for (g, w) in got.iter().zip(want) {
        let g = g.to_vec_f32()?;
        if g.len() != w.len()
            || g.iter()
                .zip(w)
                .any(|(a, b)| a.to_bits() != b.to_bits() && !(a.is_nan() && b.is_nan()))
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Records one eager run and one replay of the seed model and writes the requested files.
fn run_trace(args: &TraceArgs) -> std::result::Result<bool, String> {
    let size = usize::try_from(args.size).expect("clap bounds --size to 1..=8192");
    let ev = ops::create_tagged_event("66").map_err(|e| e.to_string())?;
    let timelines = (|| -> Result<_> {
        let inputs = models::seed_inputs(size, args.dtype)?;
        let mut eager = compile(
            models::seed_model(ev.clone(), "1"),
            CompileConfig::default().mode(Mode::Eager),
        );
        let mut replay = compile(
            models::seed_model(ev, "1"),
            CompileConfig::default().mode(Mode::ReduceOverhead),
        );
        // Warm-up: starts the workers and captures the graph, outside the recorded windows.
        run_once(&mut eager, &inputs)?;
        run_once(&mut replay, &inputs)?;
        let (_, t_eager) = trace::record(|| eager.run(&inputs))?;
        let (_, t_replay) = trace::record(|| replay.run(&inputs))?;
        Ok([
            (
                format!("seed model, Mode::Eager ({size}x{size} {})", args.dtype),
                t_eager,
            ),
            (
                format!(
                    "seed model, reduce-overhead replay ({size}x{size} {})",
                    args.dtype
                ),
                t_replay,
            ),
        ])
    })()
    .map_err(|e| e.to_string())?;
    let runs: Vec<(&str, &trace::Timeline)> = timelines
        .iter()
        .map(|(title, t)| (title.as_str(), t))
        .collect();
    for (title, t) in &runs {
        let spans = t.spans();
        let ms = spans.last().map_or(0.0, |l| {
            let end = spans.iter().map(|s| s.end_ns).max().unwrap_or(l.end_ns);
            (end - spans[0].start_ns) as f64 / 1e6
        });
        println!(
            "{title}: {} spans on streams {:?}, {} record→wait arrows, {ms:.2} ms",
            spans.len(),
            t.streams(),
            t.arrows().len()
        );
    }
    let write = |path: &std::path::Path, text: String| {
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    if let Some(path) = &args.out {
        write(path, trace::chrome_json(&runs))?;
        println!("wrote Chrome trace {}", path.display());
    }
    if let Some(path) = &args.svg {
        write(path, trace::svg(&runs))?;
        println!("wrote SVG {}", path.display());
    }
    Ok(true)
}

/// One run: issue the model, then wait for every stream (so the time covers the compute).
fn run_once(model: &mut Compiled, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    let outputs = model.run(inputs)?;
    synchronize()?;
    Ok(outputs)
}

/// `n` timed calls, sorted.
fn time_calls(model: &mut Compiled, inputs: &[Tensor], n: usize) -> Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        run_once(model, inputs)?;
        times.push(start.elapsed());
    }
    times.sort();
    Ok(times)
}

fn median(sorted: &[Duration]) -> Duration {
    sorted[sorted.len() / 2]
}

fn bytes(b: usize) -> String {
    if b >= 1 << 20 {
        format!("{:.2} MiB", b as f64 / f64::from(1 << 20))
    } else if b >= 1 << 10 {
        format!("{:.1} KiB", b as f64 / 1024.0)
    } else {
        format!("{b} B")
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}
