//! `tagstream run --model moe`: the MoE stack of `tagstream::models::moe` at decode shapes, run
//! eagerly and replayed, with the shared expert on the main stream (1 stream) and on side stream
//! "11" (2 streams), timed in turns, checked bit for bit across the variants (R6.4, R5.6) and
//! against the serial f64 reference.

use std::sync::Arc;
use std::time::Duration;

use tagstream::models::moe::{self, MoeConfig, MoeHostWeights, MoeWeights, SharedExpert};
use tagstream::{CompileConfig, Compiled, DType, Device, Mode, Result, Tensor, compile};

use super::{MoeShapes, RunArgs, bytes, median, ms, run_once, same_bits, time_in_turns};

struct Variant {
    name: String,
    model: Compiled,
    times: Vec<Duration>,
}

/// Runs the stack and prints the table; returns whether every check passed.
pub(crate) fn run(args: &RunArgs) -> Result<bool> {
    let dtype = args.dtype.unwrap_or(match args.device {
        Device::Cpu => DType::BF16,
        _ => DType::F16,
    });
    let runs = usize::try_from(args.runs).expect("clap bounds --runs");
    let cfg = match args.shapes {
        MoeShapes::Decode => MoeConfig::decode(dtype),
        MoeShapes::Tiny => MoeConfig::tiny(dtype),
    };
    let weights = Arc::new(MoeWeights::new(cfg, 1)?.to_device(args.device)?);
    let input = moe::moe_input(&cfg, 2)?.to_device(args.device)?;
    let events = moe::moe_events("moe", cfg.layers)?;
    let side = SharedExpert::Side {
        stream: "11".into(),
        events,
    };
    let eager = CompileConfig::default().mode(Mode::Eager);
    let ro = eager.mode(Mode::ReduceOverhead);
    let mut variants = vec![
        Variant {
            name: "eager, 1 stream".into(),
            model: compile(moe::moe_model(weights.clone(), SharedExpert::Main), eager),
            times: Vec::new(),
        },
        Variant {
            name: "eager, 2 streams".into(),
            model: compile(moe::moe_model(weights.clone(), side.clone()), eager),
            times: Vec::new(),
        },
        Variant {
            name: "replay, 1 stream".into(),
            model: compile(moe::moe_model(weights.clone(), SharedExpert::Main), ro),
            times: Vec::new(),
        },
        Variant {
            name: "replay, 2 streams".into(),
            model: compile(moe::moe_model(weights.clone(), side), ro),
            times: Vec::new(),
        },
    ];
    if let Some(n) = args.auto_streams {
        let n = usize::try_from(n).expect("clap bounds --auto-streams");
        variants.push(Variant {
            name: format!("replay, 1 stream + auto_streams({n})"),
            model: compile(
                moe::moe_model(weights.clone(), SharedExpert::Main),
                ro.auto_streams(n),
            ),
            times: Vec::new(),
        });
    }
    // Warm-up (the captures) and the outputs every variant must agree on.
    let mut outputs: Vec<Vec<Tensor>> = Vec::with_capacity(variants.len());
    for v in &mut variants {
        outputs.push(run_once(&mut v.model, std::slice::from_ref(&input))?);
    }
    let want: Vec<Vec<f32>> = outputs[3]
        .iter()
        .map(Tensor::to_vec_f32)
        .collect::<Result<_>>()?;
    let mut same = true;
    for o in &outputs {
        same &= same_bits(o, &want)?;
    }
    let mut models: Vec<&mut Compiled> = variants.iter_mut().map(|v| &mut v.model).collect();
    let times = time_in_turns(&mut models, std::slice::from_ref(&input), runs)?;
    for (v, t) in variants.iter_mut().zip(times) {
        v.times = t;
    }

    let host = MoeHostWeights::read(&weights)?;
    let checks = moe::check_moe(&host, &input.to_vec_f32()?, &want);

    println!(
        "tagstream MoE stack: {} layers, T={} d={} E={} top-{} expert f={} shared f={}, {} on \
         {}, {} of weights (graph constants); {} timed runs",
        cfg.layers,
        cfg.tokens,
        cfg.hidden,
        cfg.experts,
        cfg.top_k,
        cfg.expert_ffn,
        cfg.shared_ffn,
        dtype,
        args.device,
        bytes(weights.bytes()),
        runs
    );
    println!();
    println!("{:<8} {:<44} {:>10}  status", "check", "rule", "value");
    for c in &checks {
        let status = match &c.failure {
            None => "ok".to_string(),
            Some(why) => format!("FAIL: {why}"),
        };
        println!(
            "{:<8} {:<44} {:>10.3e}  {status}",
            c.name, c.rule, c.max_abs_err
        );
    }
    println!(
        "  reference: the same stack computed serially in f64 from the stored parameters; \
         routing's value is the largest\n  probability by which an unchosen expert beat a \
         chosen one, output's the largest |difference| over the largest |reference value|."
    );
    println!(
        "{:<8} {:<44} {:>10}  {}",
        "bits",
        "eager == replay, 1 stream == 2 streams",
        "",
        if same {
            "ok"
        } else {
            "FAIL: the variants differ"
        }
    );
    println!();
    println!(
        "{:<42} {:>12} {:>12} {:>10}",
        "variant", "per call", "per layer", "GFLOP/s"
    );
    let layers = cfg.layers as u32;
    for v in &variants {
        let t = median(&v.times);
        println!(
            "{:<42} {:>12} {:>12} {:>10.1}",
            v.name,
            ms(t),
            ms(t / layers),
            cfg.flops_per_layer() * f64::from(layers) / t.as_secs_f64() / 1e9
        );
    }
    let ratio = |a: usize, b: usize| {
        median(&variants[a].times).as_secs_f64() / median(&variants[b].times).as_secs_f64()
    };
    println!(
        "2 streams vs 1 stream: replay {:.2}x, eager {:.2}x; replay vs eager (2 streams) {:.2}x",
        ratio(2, 3),
        ratio(0, 1),
        ratio(1, 3)
    );
    if let Some(streams) = variants.get(4).and_then(|auto| auto.model.graph_streams()) {
        println!(
            "auto_streams: the one-stream stack ran on {streams:?}; its time / the hand-written \
             2 streams' time: {:.3}",
            ratio(4, 3)
        );
        // Which stream each op got and why: the graph per stream, then the chains.
        if let Some(dump) = variants[4].model.graph_dump() {
            println!("auto_streams graph (per-stream order, then the assignment):");
            for line in dump.lines() {
                println!("  {line}");
            }
        }
    }
    println!(
        "PyTorch's figures for the same math: python3 scripts/moe_torch.py --device {} \
         --dtype {dtype}",
        if args.device == Device::Cpu {
            "cpu"
        } else {
            "cuda"
        }
    );
    Ok(same && checks.iter().all(|c| c.failure.is_none()))
}
