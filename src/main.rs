//! The `tagstream` command line: runs the seed model (default), more commands to come.
//!
//! `tagstream` alone is `tagstream run`: the seed model of design.md §1 on two streams with
//! 1000×1000 f16 inputs, checked against the single-stream serial reference.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use tagstream::{DType, Result, Tensor, models, ops, stream_activity, synchronize};

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    /// Every op is issued to its stream as the model runs.
    Eager,
}

impl ModeArg {
    fn name(self) -> &'static str {
        match self {
            ModeArg::Eager => "eager",
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
    #[arg(long, value_enum, default_value_t = ModeArg::Eager)]
    mode: ModeArg,
    /// Timed runs (after one warm-up run); the median is reported.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    runs: u64,
}

impl Default for RunArgs {
    fn default() -> Self {
        RunArgs {
            dtype: DType::F16,
            size: 1000,
            mode: ModeArg::Eager,
            runs: 10,
        }
    }
}

fn parse_dtype(s: &str) -> std::result::Result<DType, String> {
    s.parse::<DType>().map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Run(RunArgs::default())) {
        Command::Run(args) => run_seed(&args),
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
    let side = "1";
    let ev = ops::create_tagged_event("66")?;
    let mut model = models::seed_model(ev, side);
    let inputs = models::seed_inputs(size, args.dtype)?;

    let activity_before = stream_activity();
    // Warm-up: starts the side stream's worker and faults in the allocator's pages.
    let outputs = run_once(&mut model, &inputs)?;
    let mut times = Vec::with_capacity(args.runs as usize);
    for _ in 0..args.runs {
        let start = Instant::now();
        run_once(&mut model, &inputs)?;
        times.push(start.elapsed());
    }
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
    times.sort();
    let median = times[times.len() / 2];
    println!();
    println!(
        "wall time per run: median {} (min {}, max {}) over {} runs",
        ms(median),
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
    Ok(checks.iter().all(|c| c.failure.is_none()))
}

/// One run: issue the model, then wait for every stream (so the time covers the compute).
fn run_once(
    model: &mut impl FnMut(&[Tensor]) -> Result<Vec<Tensor>>,
    inputs: &[Tensor],
) -> Result<Vec<Tensor>> {
    let outputs = model(inputs)?;
    synchronize()?;
    Ok(outputs)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}
