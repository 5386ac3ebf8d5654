//! The `tagstream` command line: runs the seed model (default), benchmarks, timelines.
//!
//! `tagstream` alone is `tagstream run`: the seed model (README "The seed model in Rust") on two
//! streams with 1000×1000 f16 inputs in reduce-overhead mode (captured once, then replayed),
//! checked against the single-stream serial reference, followed by eager-vs-replay timings of the
//! seed and of a 1000-op tiny-op chain. `tagstream bench` prints the benchmark table
//! (`bench_cmd`), `tagstream trace` writes timelines.

mod bench_cmd;
mod moe_cmd;

use std::io::IsTerminal as _;
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
    about = "Multi-stream tensor runtime with tagged events",
    long_about = "Multi-stream tensor runtime with tagged events.\n\nWith no command, runs \
                  `tagstream run` with the options given (e.g. `tagstream --dtype f32`).",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The options of `run`, for `tagstream` without a command.
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the seed model on two streams and check it against the serial reference (default).
    Run(RunArgs),
    /// Measure the runtime's figures (replay and eager cost per op, event hand-off, idle
    /// workers, two-stream speed-up, seed model, f16 add) and print them with their targets.
    Bench(bench_cmd::BenchArgs),
    /// Record the seed model's per-stream timeline, eager and replayed, as a Chrome trace
    /// (Perfetto) and/or an SVG picture; with --auto-streams, a program written on one stream
    /// replayed as written and after automatic stream assignment.
    Trace(TraceArgs),
}

#[derive(Debug, Clone, clap::Args)]
// Without a file to write, the recording would be thrown away.
#[command(group(clap::ArgGroup::new("output").args(["out", "svg"]).multiple(true).required(true)))]
struct TraceArgs {
    /// Write a Chrome trace (open in https://ui.perfetto.dev or chrome://tracing).
    #[arg(long, value_name = "FILE")]
    out: Option<std::path::PathBuf>,
    /// Write an SVG picture: one lane per stream, op boxes, arrows from records to waits.
    #[arg(long, value_name = "FILE")]
    svg: Option<std::path::PathBuf>,
    /// Element type of the inputs: f32, f16 or bf16.
    #[arg(long, default_value = "f16", value_parser = parse_dtype)]
    dtype: DType,
    /// Inputs are [N, N], N in 1..=8192.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = parse_size, allow_negative_numbers = true)]
    size: u64,
    /// Instead of the seed model, trace two independent chains of 4 matmuls written on one
    /// stream, replayed as written and with `CompileConfig::auto_streams(N)` (1..=64), one
    /// thread per stream in both, the shortest of 5 recorded replays each: the timeline before
    /// and after assignment.
    #[arg(long, value_name = "N", value_parser = parse_auto_streams, allow_negative_numbers = true)]
    auto_streams: Option<u64>,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModelArg {
    /// The seed's program: two matmuls on two streams, ordered by tagged event "66".
    Seed,
    /// A 4-layer Mixture-of-Experts stack at decode shapes, the shared expert on side stream
    /// "11" (eager and replay, 1 and 2 streams, checked against an f64 reference).
    Moe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum MoeShapes {
    Decode,
    Tiny,
}

#[derive(Debug, Clone, clap::Args)]
struct RunArgs {
    /// The model to run.
    #[arg(long, value_enum, default_value_t = ModelArg::Seed)]
    model: ModelArg,
    /// Element type: f32, f16 or bf16 [default: f16; for --model moe bf16 on the CPU and f16
    /// on CUDA].
    #[arg(long, value_parser = parse_dtype)]
    dtype: Option<DType>,
    /// Seed inputs are [N, N], N in 1..=8192 [default: 1000; not for --model moe].
    #[arg(long, value_name = "N", value_parser = parse_size, allow_negative_numbers = true)]
    size: Option<u64>,
    /// Shapes of --model moe: `decode` (issue 13's: 16 tokens, d 2048, 8 experts, 4 layers) or
    /// `tiny` (4 tokens, d 32, 4 experts, 2 layers: a quick check).
    #[arg(long, value_enum, default_value_t = MoeShapes::Decode)]
    shapes: MoeShapes,
    /// Execution mode (the seed; --model moe always runs both).
    #[arg(long, value_enum, default_value_t = ModeArg::ReduceOverhead)]
    mode: ModeArg,
    /// Timed runs after one warm-up run, 1..=10000; the median is reported.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = parse_runs, allow_negative_numbers = true)]
    runs: u64,
    /// Ops in the tiny-op chain (16-element tensors, half on each of two streams) timed eager
    /// vs replay after the seed model, 0..=1000000; 0 skips it. Reduce-overhead mode only
    /// [default: 1000].
    #[arg(long, value_name = "N", value_parser = parse_chain_ops, allow_negative_numbers = true)]
    chain_ops: Option<u64>,
    /// Input signatures the compiled model may capture before every call runs eagerly
    /// (0..=1000000; past it a warning is printed on stderr).
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = parse_capture_limit, allow_negative_numbers = true)]
    capture_limit: u64,
    /// Device the seed model runs on: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: tagstream::Device,
    /// Let the capture re-assign the model's main-stream ops to at most N streams in all
    /// (1..=64; `CompileConfig::auto_streams`); the graph dump shows which stream each chain
    /// of ops got. Reduce-overhead mode only.
    #[arg(long, value_name = "N", value_parser = parse_auto_streams, allow_negative_numbers = true)]
    auto_streams: Option<u64>,
}

impl RunArgs {
    fn seed_dtype(&self) -> DType {
        self.dtype.unwrap_or(DType::F16)
    }

    fn seed_size(&self) -> usize {
        usize::try_from(self.size.unwrap_or(1000)).expect("clap bounds --size to 1..=8192")
    }
}

fn parse_auto_streams(s: &str) -> std::result::Result<u64, String> {
    parse_in_range(s, 1, 64)
}

fn parse_device(s: &str) -> std::result::Result<tagstream::Device, String> {
    s.parse::<tagstream::Device>().map_err(|e| e.to_string())
}

fn parse_dtype(s: &str) -> std::result::Result<DType, String> {
    s.parse::<DType>().map_err(|e| e.to_string())
}

/// A whole number in `lo..=hi`; negative numbers get the same range message as large ones.
fn parse_in_range(s: &str, lo: u64, hi: u64) -> std::result::Result<u64, String> {
    let range = format!("expected a whole number from {lo} to {hi}");
    match s.trim().parse::<i128>() {
        Ok(n) if (i128::from(lo)..=i128::from(hi)).contains(&n) => {
            Ok(u64::try_from(n).expect("inside a u64 range"))
        }
        Ok(_) => Err(format!("out of range: {range}")),
        Err(_) => Err(format!("not a number: {range}")),
    }
}

fn parse_size(s: &str) -> std::result::Result<u64, String> {
    parse_in_range(s, 1, 8192)
}

fn parse_runs(s: &str) -> std::result::Result<u64, String> {
    parse_in_range(s, 1, 10_000)
}

fn parse_chain_ops(s: &str) -> std::result::Result<u64, String> {
    parse_in_range(s, 0, 1_000_000)
}

fn parse_capture_limit(s: &str) -> std::result::Result<u64, String> {
    parse_in_range(s, 0, 1_000_000)
}

/// mimalloc instead of glibc's malloc. Eager work allocates on one thread and frees on another
/// (the host makes an op's output buffer and drops the tensor; the worker allocates the
/// elements and drops the entry's last input handles), and glibc returns such chunks through
/// the owning thread's arena under its lock: the host and a worker contended for it on every
/// tiny op (a 1000-op eager chain at 300–650 ns per op, bimodal; with mimalloc 330–420 ns).
/// A library cannot choose its users' allocator; the README recommends this to them. mimalloc
/// grants a huge request the system allocator refuses (it skips the kernel's overcommit
/// check); tagstream refuses requests past the machine's memory itself, so that changes no
/// error.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Library warnings (e.g. the capture limit reached) go through `tracing`: show WARN and
    // above on stderr.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .init();
    let result = match cli.command.unwrap_or(Command::Run(cli.run)) {
        Command::Run(args) => run_seed(&args),
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
fn run_seed(args: &RunArgs) -> std::result::Result<bool, String> {
    if args.mode == ModeArg::Eager && args.chain_ops.is_some() {
        return Err(
            "--chain-ops sets the tiny-op chain of the eager-vs-replay comparison, \
                    which --mode eager does not run; drop one of the two"
                .to_string(),
        );
    }
    if args.mode == ModeArg::Eager && args.auto_streams.is_some() {
        return Err(
            "--auto-streams assigns the streams of a captured graph, which --mode eager \
             does not capture; drop one of the two"
                .to_string(),
        );
    }
    match args.model {
        ModelArg::Seed => run_seed_model(args).map_err(|e| e.to_string()),
        ModelArg::Moe => {
            if args.size.is_some() || args.chain_ops.is_some() {
                return Err(
                    "--size and --chain-ops set the seed model's shapes; --model moe \
                            runs the decode shapes of docs/semantics.md's MoE stack"
                        .to_string(),
                );
            }
            moe_cmd::run(args).map_err(|e| e.to_string())
        }
    }
}

fn run_seed_model(args: &RunArgs) -> Result<bool> {
    let size = args.seed_size();
    let runs = usize::try_from(args.runs).expect("clap bounds --runs to 1..=10000");
    let capture_limit =
        usize::try_from(args.capture_limit).expect("clap bounds --capture-limit to 1..=1000000");
    let side = "1";
    let ev = ops::create_tagged_event("66")?;
    let mut config = CompileConfig::default()
        .mode(args.mode.mode())
        .capture_limit(capture_limit);
    if let Some(n) = args.auto_streams {
        config = config.auto_streams(usize::try_from(n).expect("clap bounds --auto-streams"));
    }
    let mut model = compile(models::seed_model(ev.clone(), side), config);
    let inputs = models::seed_inputs(size, args.seed_dtype())?
        .iter()
        .map(|t| t.to_device(args.device))
        .collect::<Result<Vec<_>>>()?;
    // Reduce-overhead mode also runs the model eagerly, timed in turns with the replays.
    let mut eager = (args.mode == ModeArg::ReduceOverhead).then(|| {
        compile(
            models::seed_model(ev.clone(), side),
            CompileConfig::default(),
        )
    });

    let activity_before = stream_activity();
    // Warm-up (the capture, in reduce-overhead mode): starts the side stream's worker and
    // faults in the allocator's pages.
    let outputs = run_once(&mut model, &inputs)?;
    let eager_outputs = eager.as_mut().map(|e| run_once(e, &inputs)).transpose()?;
    let (times, eager_times) = match eager.as_mut() {
        Some(e) => {
            let (t, te) = time_interleaved(&mut model, e, &inputs, runs)?;
            (t, Some(te))
        }
        None => (time_calls(&mut model, &inputs, runs)?, None),
    };
    let activity_after = stream_activity();

    let host_inputs: Vec<Vec<f32>> = inputs
        .iter()
        .map(Tensor::to_vec_f32)
        .collect::<Result<_>>()?;
    let host_outputs: Vec<Vec<f32>> = outputs
        .iter()
        .map(Tensor::to_vec_f32)
        .collect::<Result<_>>()?;
    let checks = models::check_seed(&host_inputs, &host_outputs, size, args.seed_dtype());

    println!(
        "tagstream seed model: 4 inputs [{size}, {size}] {}, mode {}, {} timed runs",
        args.seed_dtype(),
        args.mode.name(),
        args.runs
    );
    println!();
    println!(
        "{:<6} {:<22} {:>12}  status",
        "output", "check", "max |err|"
    );
    for c in &checks {
        let status = match &c.failure {
            None => "ok".to_string(),
            Some(why) => format!("FAIL: {why}"),
        };
        // `check_seed` names the rule of docs/semantics.md; say what it means.
        let check = if c.rule.starts_with("bit-exact") {
            "equals the reference"
        } else {
            "within the error bound"
        };
        println!(
            "{:<6} {:<22} {:>12.3e}  {}",
            c.name, check, c.max_abs_err, status
        );
    }
    println!(
        "  reference: the same model computed serially on one thread; add and add2 must equal it \
         bit for bit.\n  mm and mm1 are compared with the exact product (in f64) and must stay \
         within the matmul error bound,\n  about k·2^-24·(|A|·|B|) plus one rounding to {}, \
         with k = {size}. Rules R6.6 and R6.9 of docs/semantics.md.",
        args.seed_dtype()
    );
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
            (a.issued > before).then(|| format!("\"{}\" {}", a.tag, a.issued - before))
        })
        .collect();
    println!(
        "streams used: {} (ops, input copies, event records and waits queued on each stream by \
         all runs{})",
        used.join(", "),
        if eager.is_some() {
            ", the eager runs timed against the replays included"
        } else {
            ""
        }
    );
    let stats = model.stats();
    println!(
        "compiled: {} capture(s), {} replay(s), {} eager run(s)",
        stats.captures, stats.replays, stats.eager_runs
    );
    if stats.fell_back_to_eager {
        println!(
            "capture limit of {} reached: every call ran eagerly (warning on stderr), so \
             \"replay\" below is eager too",
            args.capture_limit
        );
    }
    if let Some(streams) = model.graph_streams() {
        let tags: Vec<String> = streams.iter().map(|t| format!("{t:?}")).collect();
        match args.auto_streams {
            Some(n) => println!(
                "graph streams (auto_streams {n}): {} of at most {n}: {}",
                streams.len(),
                tags.join(", ")
            ),
            None => println!("graph streams: {}", tags.join(", ")),
        }
    }
    if let Some(dump) = model.graph_dump() {
        println!("graph (per-stream order):");
        for line in dump.lines() {
            println!("  {line}");
        }
    }
    if let Some(m) = model.memory_stats() {
        println!(
            "memory plan: one arena of {} holds the {} inputs and intermediate values ({} in \
             total) in {} slots; outputs: {} in total, in their own buffers",
            bytes(m.arena_bytes),
            m.values,
            bytes(m.value_bytes),
            m.slots,
            bytes(m.output_bytes)
        );
    }
    let mut ok = checks.iter().all(|c| c.failure.is_none());
    if let (Some(eager_out), Some(eager_times)) = (eager_outputs, eager_times) {
        println!();
        ok &= compare_eager_replay(args, &eager_out, &eager_times, &times, &host_outputs)?;
    }
    Ok(ok)
}

/// Prints the seed's eager-vs-replay times (measured in turns by the caller), then times both
/// modes on the tiny-op chain; checks that replay results equal eager ones bit for bit (R5.6).
fn compare_eager_replay(
    args: &RunArgs,
    seed_eager_out: &[Tensor],
    seed_eager: &[Duration],
    seed_replay: &[Duration],
    seed_outputs: &[Vec<f32>],
) -> Result<bool> {
    let runs = usize::try_from(args.runs).expect("clap bounds --runs");
    let mut ok = same_bits(seed_eager_out, seed_outputs)?;

    println!(
        "eager vs replay, median per call (issue + run + synchronize; the two modes timed in \
         turns):"
    );
    println!(
        "{:<42} {:>10} {:>10} {:>9}",
        "model", "eager", "replay", "speed-up"
    );
    let (e, r) = (median(seed_eager), median(seed_replay));
    println!(
        "{:<42} {:>10} {:>10} {:>8.2}x",
        format!("seed [{0}x{0}] {1}", args.seed_size(), args.seed_dtype()),
        ms(e),
        ms(r),
        e.as_secs_f64() / r.as_secs_f64()
    );
    let ops_n = usize::try_from(args.chain_ops.unwrap_or(1000)).expect("clap bounds --chain-ops");
    if ops_n > 0 {
        let chain_inputs = models::tiny_inputs(16, args.seed_dtype())?;
        let eager_cfg = CompileConfig::default().mode(Mode::Eager);
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
        let (tr, te) = time_interleaved(&mut replay_chain, &mut eager_chain, &chain_inputs, calls)?;
        let (te, tr) = (median(&te), median(&tr));
        println!(
            "{:<42} {:>10} {:>10} {:>8.2}x",
            format!(
                "tiny chain {ops_n} ops [16] {}, 2 streams",
                args.seed_dtype()
            ),
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
                "  chain memory plan: one arena of {} holds {} values ({} in total) in {} slots",
                bytes(m.arena_bytes),
                m.values,
                bytes(m.value_bytes),
                m.slots
            );
        }
    }
    println!(
        "what replay saves: the cost of issuing each op (checks and one queue entry per op, \
         eager),\nnot compute. A model whose time is in its kernels, like the seed's two \
         matmuls, runs at about\nthe same speed either way (a speed-up near 1x, within noise); \
         a chain of tiny ops shows the saving."
    );
    if !ok {
        println!("FAIL: replay results differ from eager results (they must be equal bit for bit)");
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

/// Matmuls per chain of the `trace --auto-streams` program.
const TRACE_CHAIN_MATMULS: usize = 4;

/// The `trace --auto-streams` program: two independent chains of matmuls (`x0 @ x2 @ x2 …`,
/// `x1 @ x2 @ x2 …`), all on the stream the caller is on.
fn two_chains(x: &[Tensor]) -> Result<Vec<Tensor>> {
    let (mut a, mut b) = (x[0].clone(), x[1].clone());
    for _ in 0..TRACE_CHAIN_MATMULS {
        a = a.matmul(&x[2])?;
        b = b.matmul(&x[2])?;
    }
    Ok(vec![a, b])
}

/// Recorded runs per program of `trace --auto-streams`; the shortest is drawn.
const TRACE_SAMPLES: usize = 5;

/// First span start to last span end.
fn span_ns(t: &trace::Timeline) -> u64 {
    let spans = t.spans();
    let start = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.end_ns).max().unwrap_or(start);
    end - start
}

fn keep_shortest(best: &mut Option<trace::Timeline>, t: trace::Timeline) {
    if best.as_ref().is_none_or(|b| span_ns(&t) < span_ns(b)) {
        *best = Some(t);
    }
}

/// Sets one thread per stream and puts the default back when dropped.
struct ThreadsPerStream;

impl ThreadsPerStream {
    fn one() -> ThreadsPerStream {
        tagstream::set_threads_per_stream(1);
        ThreadsPerStream
    }
}

impl Drop for ThreadsPerStream {
    fn drop(&mut self) {
        tagstream::set_threads_per_stream(0);
    }
}

/// `trace --auto-streams N`: the two chains replayed as written (one stream) and with
/// `auto_streams(N)`; prints the assignment (graph streams and the dump's chains).
fn trace_auto_streams(args: &TraceArgs, n: usize) -> Result<Vec<(String, trace::Timeline)>> {
    let size = usize::try_from(args.size).expect("clap bounds --size to 1..=8192");
    let _one = ThreadsPerStream::one();
    let x: Vec<Tensor> = (0..3)
        .map(|i| Tensor::randn(&[size, size], args.dtype, 50 + i))
        .collect::<Result<_>>()?;
    let ro = CompileConfig::default().mode(Mode::ReduceOverhead);
    let mut written = compile(two_chains, ro);
    let mut auto = compile(two_chains, ro.auto_streams(n));
    // Warm-up: the captures, and the workers started, outside the recorded windows.
    let want = run_once(&mut written, &x)?;
    let got = run_once(&mut auto, &x)?;
    let want: Vec<Vec<f32>> = want.iter().map(Tensor::to_vec_f32).collect::<Result<_>>()?;
    if !same_bits(&got, &want)? {
        return Err(tagstream::Error::ExecutionFailed {
            op: "trace --auto-streams".into(),
            stream: "host".into(),
            message: "the assigned replay differs from the program as written (R5.6)".into(),
        });
    }
    // One run is one sample of a shared machine: keep the shortest of a few, in turns.
    let (mut t_written, mut t_auto) = (None, None);
    for _ in 0..TRACE_SAMPLES {
        let (_, t) = trace::record(|| run_once(&mut written, &x))?;
        keep_shortest(&mut t_written, t);
        let (_, t) = trace::record(|| run_once(&mut auto, &x))?;
        keep_shortest(&mut t_auto, t);
    }
    let (t_written, t_auto) = (
        t_written.expect("TRACE_SAMPLES > 0"),
        t_auto.expect("TRACE_SAMPLES > 0"),
    );
    let streams = auto.graph_streams().unwrap_or_default();
    println!("auto_streams({n}) placed the program on {streams:?}");
    if let Some(dump) = auto.graph_dump() {
        for line in dump.lines() {
            println!("  {line}");
        }
    }
    let what = format!(
        "2 chains x {TRACE_CHAIN_MATMULS} matmul {size}x{size} {} on one stream, 1 thread per \
         stream, shortest of {TRACE_SAMPLES}",
        args.dtype
    );
    Ok(vec![
        (format!("{what}: replay as written"), t_written),
        (format!("{what}: replay with auto_streams({n})"), t_auto),
    ])
}

/// Records one eager run and one replay of the seed model (or, with --auto-streams, the
/// one-stream program before and after assignment) and writes the requested files.
fn run_trace(args: &TraceArgs) -> std::result::Result<bool, String> {
    let size = usize::try_from(args.size).expect("clap bounds --size to 1..=8192");
    let ev = ops::create_tagged_event("66").map_err(|e| e.to_string())?;
    let timelines = (|| -> Result<Vec<(String, trace::Timeline)>> {
        if let Some(n) = args.auto_streams {
            let n = usize::try_from(n).expect("clap bounds --auto-streams");
            return trace_auto_streams(args, n);
        }
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
        Ok(vec![
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

/// `n` calls of each model in turns (the first model first in even rounds, the second in odd
/// ones), so machine load hits both alike; each list sorted.
fn time_interleaved(
    a: &mut Compiled,
    b: &mut Compiled,
    inputs: &[Tensor],
    n: usize,
) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let mut times = time_in_turns(&mut [a, b], inputs, n)?.into_iter();
    let (ta, tb) = (times.next(), times.next());
    Ok((ta.unwrap_or_default(), tb.unwrap_or_default()))
}

/// `n` calls of each model in turns, the starting model rotating each round (for two models:
/// the first first in even rounds, the second in odd ones), so machine load hits all alike;
/// one sorted list of times per model.
fn time_in_turns(
    models: &mut [&mut Compiled],
    inputs: &[Tensor],
    n: usize,
) -> Result<Vec<Vec<Duration>>> {
    let k = models.len();
    let mut times = vec![Vec::with_capacity(n); k];
    for round in 0..n {
        for i in 0..k {
            let m = (round + i) % k;
            let start = Instant::now();
            run_once(models[m], inputs)?;
            times[m].push(start.elapsed());
        }
    }
    times.iter_mut().for_each(|t| t.sort());
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
