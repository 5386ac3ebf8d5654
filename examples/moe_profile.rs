//! Where the MoE decode layer's time goes: one replay of the stack recorded as a timeline, op
//! durations summed by op name (`cargo run --release --example moe_profile [f32|f16|bf16] [1]`; `1`: one stream).

use std::collections::BTreeMap;
use std::sync::Arc;

use tagstream::models::moe::{self, MoeConfig, MoeWeights, SharedExpert};
use tagstream::{CompileConfig, DType, Mode, compile, synchronize, trace};

fn main() -> tagstream::Result<()> {
    let dtype: DType = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("bf16")
        .parse()?;
    let cfg = MoeConfig::decode(dtype);
    let w = Arc::new(MoeWeights::new(cfg, 1)?);
    let x = moe::moe_input(&cfg, 2)?;
    // Second argument `1`: the stack written on one stream.
    let side = if std::env::args().nth(2).as_deref() == Some("1") {
        SharedExpert::Main
    } else {
        SharedExpert::Side {
            stream: "11".into(),
            events: moe::moe_events("prof", cfg.layers)?,
        }
    };
    let mut c = compile(
        moe::moe_model(w, side),
        CompileConfig::default().mode(Mode::ReduceOverhead),
    );
    for _ in 0..3 {
        c.run(std::slice::from_ref(&x))?;
        synchronize()?;
    }
    let ((), timeline) = trace::record(|| {
        c.run(std::slice::from_ref(&x))?;
        synchronize()
    })?;
    let mut by_op: BTreeMap<(String, String), (f64, usize)> = BTreeMap::new();
    for s in timeline.spans() {
        let e = by_op.entry((s.stream.clone(), s.name.clone())).or_default();
        e.0 += (s.end_ns - s.start_ns) as f64 / 1e6;
        e.1 += 1;
    }
    println!("{:<8} {:<14} {:>10} {:>6}", "stream", "op", "ms", "count");
    for ((stream, op), (ms, n)) in &by_op {
        println!("{stream:<8} {op:<14} {ms:>10.2} {n:>6}");
    }
    Ok(())
}
