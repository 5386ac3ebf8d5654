//! A Mixture-of-Experts stack at decode shapes, with its shared expert on a side stream
//! (issue 13), and its check against a serial f64 reference.
//!
//! Each layer is what a public DeepSeek-V3 inference recipe for Ascend does with exactly the
//! seed's API in graph mode: two tagged events per layer, created up front; the main stream
//! records the first, the shared expert runs in a side-stream scope after waiting on it and
//! records the second, and the main stream waits on the second just before it combines the
//! routed and shared outputs. Between layers a residual add.
//!
//! Routing is `softmax(x @ Wr)` → `topk` → weights renormalised over the chosen experts, and the
//! routed experts are computed densely (every expert on every token, one batched matmul, the
//! routing weights zero off the top-k): shapes stay static, which is what a captured graph
//! needs and what the PyTorch anchor (`scripts/moe_torch.py`) measures. Experts are SwiGLU MLPs
//! with a fused gate/up projection.
//!
//! The weights are model parameters: tensors the closure owns, graph constants in a capture
//! (never copied per replay). Only the activations are `run` inputs.

use std::sync::Arc;

use crate::device::Device;
use crate::error::Result;
use crate::ops::{TaggedEvent, create_tagged_event, tagged_event_record, tagged_event_wait};
use crate::scope::stream_switch;
use crate::tensor::{DType, Tensor};

use super::OutputCheck;

/// The shapes of an MoE stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoeConfig {
    /// Tokens per call (`T`).
    pub tokens: usize,
    /// Model width (`d`).
    pub hidden: usize,
    /// Routed experts (`E`).
    pub experts: usize,
    /// Experts each token is routed to (`k`).
    pub top_k: usize,
    /// Hidden width of each routed expert's SwiGLU (`f`).
    pub expert_ffn: usize,
    /// Hidden width of the shared expert's SwiGLU.
    pub shared_ffn: usize,
    /// MoE layers in the stack.
    pub layers: usize,
    /// Element type of weights and activations.
    pub dtype: DType,
}

impl MoeConfig {
    /// The decode shapes of issue 13: T = 16, d = 2048, E = 8 with top-2, f = 1408, shared
    /// f = 2816, 4 layers.
    pub fn decode(dtype: DType) -> MoeConfig {
        MoeConfig {
            tokens: 16,
            hidden: 2048,
            experts: 8,
            top_k: 2,
            expert_ffn: 1408,
            shared_ffn: 2816,
            layers: 4,
            dtype,
        }
    }

    /// A small stack with the same structure, for tests.
    pub fn tiny(dtype: DType) -> MoeConfig {
        MoeConfig {
            tokens: 4,
            hidden: 32,
            experts: 4,
            top_k: 2,
            expert_ffn: 16,
            shared_ffn: 24,
            layers: 2,
            dtype,
        }
    }

    /// Multiply-adds ×2 of one layer as computed (dense over experts).
    pub fn flops_per_layer(&self) -> f64 {
        let (t, d, e) = (self.tokens as f64, self.hidden as f64, self.experts as f64);
        let (f, fs) = (self.expert_ffn as f64, self.shared_ffn as f64);
        2.0 * t * (d * e + e * (d * 2.0 * f + f * d) + d * 2.0 * fs + fs * d)
    }
}

/// One layer's parameters.
#[derive(Debug, Clone)]
pub struct MoeLayer {
    /// `[d, E]`.
    pub router: Tensor,
    /// `[E, d, 2f]`: gate in columns `0..f`, up in `f..2f`.
    pub expert_gate_up: Tensor,
    /// `[E, f, d]`.
    pub expert_down: Tensor,
    /// `[d, 2fs]`: gate, then up.
    pub shared_gate_up: Tensor,
    /// `[fs, d]`.
    pub shared_down: Tensor,
}

/// The parameters of a stack, and the zero routing table each layer scatters into.
#[derive(Debug, Clone)]
pub struct MoeWeights {
    /// The shapes.
    pub config: MoeConfig,
    /// One entry per layer.
    pub layers: Vec<MoeLayer>,
    /// `[T, E]` zeros.
    zeros: Tensor,
}

/// `len` values uniform in `[-a, a)` with `a = scale·√3` (variance `scale²`), from a SplitMix64
/// stream: fast enough for the ~350 M parameters of the decode stack, and the same on every
/// machine.
fn uniform(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let a = scale * 3f32.sqrt();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..len)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            // 24 random bits → [0, 1), exact in f32.
            let u = (z >> 40) as f32 / (1u64 << 24) as f32;
            (2.0 * u - 1.0) * a
        })
        .collect()
}

fn param(shape: &[usize], seed: u64, fan_in: usize, dtype: DType) -> Result<Tensor> {
    let len = shape.iter().product();
    let scale = 1.0 / (fan_in as f32).sqrt();
    Tensor::from_vec(uniform(len, seed, scale), shape, dtype)
}

impl MoeWeights {
    /// Parameters drawn from `seed` (uniform, variance `1/fan_in`), on the CPU.
    ///
    /// # Errors
    /// Only for absurd shapes (size overflow) or an allocator refusal.
    pub fn new(config: MoeConfig, seed: u64) -> Result<MoeWeights> {
        let MoeConfig {
            tokens: t,
            hidden: d,
            experts: e,
            expert_ffn: f,
            shared_ffn: fs,
            dtype,
            ..
        } = config;
        let layers = (0..config.layers as u64)
            .map(|l| {
                let s = seed.wrapping_mul(1000).wrapping_add(l * 10);
                Ok(MoeLayer {
                    router: param(&[d, e], s, d, dtype)?,
                    expert_gate_up: param(&[e, d, 2 * f], s + 1, d, dtype)?,
                    expert_down: param(&[e, f, d], s + 2, f, dtype)?,
                    shared_gate_up: param(&[d, 2 * fs], s + 3, d, dtype)?,
                    shared_down: param(&[fs, d], s + 4, fs, dtype)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(MoeWeights {
            config,
            layers,
            zeros: Tensor::zeros(&[t, e], dtype)?,
        })
    }

    /// The same parameters on `device` (copies enqueued on the current stream).
    ///
    /// # Errors
    /// [`Error::NoGpu`](crate::Error::NoGpu) where `device` does not exist.
    pub fn to_device(&self, device: Device) -> Result<MoeWeights> {
        let layers = self
            .layers
            .iter()
            .map(|w| {
                Ok(MoeLayer {
                    router: w.router.to_device(device)?,
                    expert_gate_up: w.expert_gate_up.to_device(device)?,
                    expert_down: w.expert_down.to_device(device)?,
                    shared_gate_up: w.shared_gate_up.to_device(device)?,
                    shared_down: w.shared_down.to_device(device)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(MoeWeights {
            config: self.config,
            layers,
            zeros: self.zeros.to_device(device)?,
        })
    }

    /// Bytes of parameters.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .flat_map(|w| {
                [
                    &w.router,
                    &w.expert_gate_up,
                    &w.expert_down,
                    &w.shared_gate_up,
                    &w.shared_down,
                ]
            })
            .map(|t| t.len() * t.dtype().size_in_bytes())
            .sum()
    }
}

/// The activations `[T, d]`: standard normal from `seed`.
///
/// # Errors
/// Only for absurd shapes.
pub fn moe_input(config: &MoeConfig, seed: u64) -> Result<Tensor> {
    Tensor::randn(&[config.tokens, config.hidden], config.dtype, seed)
}

/// Where the shared expert runs.
#[derive(Debug, Clone)]
pub enum SharedExpert {
    /// On the main stream, with no events: the whole stack written on one stream.
    Main,
    /// In scope `stream`, ordered by the layer's two events (the recipe's `npu_stream_switch`
    /// form); `events[l]` are layer `l`'s (before, after) pair.
    Side {
        /// The side stream's tag (`"11"` in the recipe).
        stream: String,
        /// One (fork, join) pair per layer, from [`moe_events`].
        events: Vec<(TaggedEvent, TaggedEvent)>,
    },
}

/// Creates the two events of every layer: `"{prefix}-{l}-fork"` and `"{prefix}-{l}-join"`.
///
/// # Errors
/// [`Error::TagInUse`](crate::Error::TagInUse) if one of the tags exists.
pub fn moe_events(prefix: &str, layers: usize) -> Result<Vec<(TaggedEvent, TaggedEvent)>> {
    (0..layers)
        .map(|l| {
            Ok((
                create_tagged_event(&format!("{prefix}-{l}-fork"))?,
                create_tagged_event(&format!("{prefix}-{l}-join"))?,
            ))
        })
        .collect()
}

/// The stack as a closure for [`compile`](crate::compile()): input `[T, d]`; outputs the final
/// activations `[T, d]` and then each layer's `I32` expert choice `[T, k]` (what the reference
/// check needs).
///
/// ```
/// use std::sync::Arc;
/// use tagstream::models::moe::{self, MoeConfig, MoeWeights, SharedExpert};
/// use tagstream::DType;
/// let cfg = MoeConfig::tiny(DType::F32);
/// let w = Arc::new(MoeWeights::new(cfg, 1)?);
/// let events = moe::moe_events("moe-doc", cfg.layers)?;
/// let side = SharedExpert::Side { stream: "moe-doc-11".into(), events };
/// let mut two = moe::moe_model(w.clone(), side);
/// let mut one = moe::moe_model(w, SharedExpert::Main);
/// let x = moe::moe_input(&cfg, 2)?;
/// let (a, b) = (two(&[x.clone()])?, one(&[x])?);
/// assert_eq!(a[0].to_vec_f32()?, b[0].to_vec_f32()?); // bits do not depend on streams (R6.4)
/// # Ok::<(), tagstream::Error>(())
/// ```
pub fn moe_model(
    weights: Arc<MoeWeights>,
    shared: SharedExpert,
) -> impl FnMut(&[Tensor]) -> Result<Vec<Tensor>> + Send + 'static {
    move |x: &[Tensor]| {
        let mut h = x[0].clone();
        let mut choices = Vec::with_capacity(weights.layers.len());
        for (l, w) in weights.layers.iter().enumerate() {
            let side = match &shared {
                SharedExpert::Main => None,
                SharedExpert::Side { stream, events } => {
                    let (fork, join) = &events[l];
                    Some((stream.as_str(), fork, join))
                }
            };
            let (next, choice) = moe_layer(&weights, w, &h, side)?;
            h = next;
            choices.push(choice);
        }
        let mut out = Vec::with_capacity(1 + choices.len());
        out.push(h);
        out.extend(choices);
        Ok(out)
    }
}

/// SwiGLU: `(silu(x @ W[:, :f]) * (x @ W[:, f:])) @ Wd`, for `[.., d]` activations and a
/// fused `[.., d, 2f]` gate/up weight.
fn swiglu(x: &Tensor, gate_up: &Tensor, down: &Tensor, f: usize) -> Result<Tensor> {
    let gu = x.matmul(gate_up)?;
    let last = gu.shape().len() - 1;
    let h = gu
        .narrow(last, 0, f)?
        .silu()?
        .mul(&gu.narrow(last, f, f)?)?;
    h.matmul(down)
}

/// One layer: returns `x + routed(x) + shared(x)` and the expert choice.
fn moe_layer(
    weights: &MoeWeights,
    w: &MoeLayer,
    x: &Tensor,
    side: Option<(&str, &TaggedEvent, &TaggedEvent)>,
) -> Result<(Tensor, Tensor)> {
    let cfg = &weights.config;
    let shared = match side {
        Some((stream, fork, join)) => {
            tagged_event_record(fork)?;
            let _on_side = stream_switch(stream)?;
            tagged_event_wait(fork)?;
            let s = swiglu(x, &w.shared_gate_up, &w.shared_down, cfg.shared_ffn)?;
            tagged_event_record(join)?;
            s
        }
        None => swiglu(x, &w.shared_gate_up, &w.shared_down, cfg.shared_ffn)?,
    };
    // Router: top-k of the softmax, renormalised over the chosen experts, scattered into a
    // dense [T, E] table (zero off the top-k).
    let probs = x.matmul(&w.router)?.softmax()?;
    let (top, choice) = probs.topk(cfg.top_k)?;
    let gates = top.div(&top.sum(1, true)?)?;
    let table = weights.zeros.scatter(1, &choice, &gates)?;
    // Every expert on every token: [E, T, d] x [E, d, 2f] -> [E, T, 2f] -> [E, T, d].
    let xe = x
        .unsqueeze(0)?
        .expand(&[cfg.experts, cfg.tokens, cfg.hidden])?;
    let y = swiglu(&xe, &w.expert_gate_up, &w.expert_down, cfg.expert_ffn)?;
    let routed = y
        .mul(&table.transpose(0, 1)?.unsqueeze(2)?)?
        .sum(0, false)?;
    if let Some((_, _, join)) = side {
        tagged_event_wait(join)?;
    }
    Ok((x.add(&routed.add(&shared)?)?, choice))
}

/// Host copies of the parameters (as f32), for [`check_moe`].
#[derive(Debug, Clone)]
pub struct MoeHostWeights {
    config: MoeConfig,
    /// Per layer: router, expert gate/up, expert down, shared gate/up, shared down.
    layers: Vec<[Vec<f32>; 5]>,
}

impl MoeHostWeights {
    /// Reads the parameters back to the host (waits for them).
    ///
    /// # Errors
    /// A failed parameter (none expected) or a pending scope error.
    pub fn read(weights: &MoeWeights) -> Result<MoeHostWeights> {
        let layers = weights
            .layers
            .iter()
            .map(|w| {
                Ok([
                    w.router.to_vec_f32()?,
                    w.expert_gate_up.to_vec_f32()?,
                    w.expert_down.to_vec_f32()?,
                    w.shared_gate_up.to_vec_f32()?,
                    w.shared_down.to_vec_f32()?,
                ])
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(MoeHostWeights {
            config: weights.config,
            layers,
        })
    }
}

/// `x[rows, k] @ w[k, n]` in f64, with `w` read from `off` in a bigger array.
fn mm64(x: &[f64], w: &[f32], off: usize, rows: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0; rows * n];
    for (xr, or) in x.chunks_exact(k).zip(out.chunks_exact_mut(n)) {
        for (kk, &xv) in xr.iter().enumerate() {
            let wr = &w[off + kk * n..off + (kk + 1) * n];
            for (o, &wv) in or.iter_mut().zip(wr) {
                *o += xv * f64::from(wv);
            }
        }
    }
    out
}

/// The f64 SwiGLU of one row `x[d]` with the weights at offsets `gu_off`/`down_off`.
fn swiglu64(
    x: &[f64],
    gu: &[f32],
    gu_off: usize,
    down: &[f32],
    down_off: usize,
    f: usize,
) -> Vec<f64> {
    let d = x.len();
    let g = mm64(x, gu, gu_off, 1, d, 2 * f);
    let h: Vec<f64> = (0..f)
        .map(|j| {
            let a = g[j];
            a / (1.0 + (-a).exp()) * g[f + j]
        })
        .collect();
    mm64(&h, down, down_off, 1, f, d)
}

/// Checks a run of the stack against a serial f64 reference: per layer, the chosen experts
/// must be the reference's top-k up to a rounding tolerance (a near-tie may go either way, and
/// the reference then follows the run's choice), and the final activations must be within a
/// tolerance of the reference's, relative to their largest magnitude (the check's value is that
/// relative error). `outputs` are the model's outputs as f32 (the activations, then one choice
/// per layer).
pub fn check_moe(host: &MoeHostWeights, input: &[f32], outputs: &[Vec<f32>]) -> Vec<OutputCheck> {
    let cfg = host.config;
    let (t, d, e, k) = (cfg.tokens, cfg.hidden, cfg.experts, cfg.top_k);
    let (f, fs) = (cfg.expert_ffn, cfg.shared_ffn);
    // Every op rounds to the dtype; over the stack errors add up to a few roundings of the
    // largest values (the tolerances are about 8x what the decode stack shows).
    let (route_tol, out_tol) = match cfg.dtype {
        DType::F32 => (1e-4, 1e-4),
        DType::F16 => (2e-2, 2e-2),
        _ => (6e-2, 8e-2),
    };
    let mut checks = Vec::new();
    let mut x: Vec<f64> = input.iter().map(|&v| f64::from(v)).collect();
    let mut route_failure = None;
    let mut worst_margin = 0.0f64;
    for (l, w) in host.layers.iter().enumerate() {
        let [router, egu, edown, sgu, sdown] = w;
        let choice = &outputs[1 + l];
        let logits = mm64(&x, router, 0, t, d, e);
        let mut next = x.clone();
        for tok in 0..t {
            let row = &logits[tok * e..(tok + 1) * e];
            let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = row.iter().map(|v| (v - m).exp()).sum();
            let p: Vec<f64> = row.iter().map(|v| (v - m).exp() / z).collect();
            let chosen: Vec<usize> = choice[tok * k..(tok + 1) * k]
                .iter()
                .map(|&c| c as usize)
                .collect();
            if chosen.iter().any(|&c| c >= e) {
                route_failure.get_or_insert(format!("layer {l} token {tok}: expert out of range"));
                continue;
            }
            let lowest_chosen = chosen.iter().map(|&c| p[c]).fold(f64::INFINITY, f64::min);
            let best_other = (0..e)
                .filter(|c| !chosen.contains(c))
                .map(|c| p[c])
                .fold(0.0, f64::max);
            let margin = best_other - lowest_chosen;
            worst_margin = worst_margin.max(margin);
            if margin > route_tol {
                route_failure.get_or_insert(format!(
                    "layer {l} token {tok}: chose {chosen:?} but an unchosen expert has p = \
                     {best_other:.4} > {lowest_chosen:.4}"
                ));
            }
            let total: f64 = chosen.iter().map(|&c| p[c]).sum();
            let xr = &x[tok * d..(tok + 1) * d];
            let mut y = swiglu64(xr, sgu, 0, sdown, 0, fs);
            for &c in &chosen {
                let ye = swiglu64(xr, egu, c * d * 2 * f, edown, c * f * d, f);
                let g = p[c] / total;
                y.iter_mut().zip(&ye).for_each(|(a, b)| *a += g * b);
            }
            next[tok * d..(tok + 1) * d]
                .iter_mut()
                .zip(&y)
                .for_each(|(a, b)| *a += b);
        }
        x = next;
    }
    checks.push(OutputCheck {
        name: "routing",
        rule: "top-k of the f64 softmax, up to a near-tie",
        max_abs_err: worst_margin.max(0.0),
        failure: route_failure,
    });
    let got = &outputs[0];
    let scale = x.iter().map(|v| v.abs()).fold(0.0, f64::max).max(1e-30);
    let (mut worst, mut at) = (0.0f64, 0);
    for (i, (g, r)) in got.iter().zip(&x).enumerate() {
        let err = (f64::from(*g) - r).abs();
        if err > worst || err.is_nan() {
            (worst, at) = (err, i);
        }
    }
    let within = worst <= out_tol * scale; // false for NaN
    let failure = (got.len() != x.len() || !within).then(|| {
        format!(
            "element {at}: got {} expected {:.6} (|err| {worst:.3e} > {out_tol} x max |ref| \
             {scale:.3})",
            got.get(at).copied().unwrap_or(f32::NAN),
            x.get(at).copied().unwrap_or(f64::NAN)
        )
    });
    checks.push(OutputCheck {
        name: "output",
        rule: "max |err| / max |ref| vs the f64 reference",
        max_abs_err: worst / scale,
        failure,
    });
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{CompileConfig, Mode, compile};

    fn host(outputs: &[Tensor]) -> Vec<Vec<f32>> {
        outputs.iter().map(|t| t.to_vec_f32().unwrap()).collect()
    }

    /// The tiny stack: eager on one stream, eager on two, replay on two all give the same bits
    /// (R6.4, R5.6), and pass the f64 reference check in every dtype.
    #[test]
    fn tiny_stack_matches_reference_on_one_and_two_streams() {
        for (i, dtype) in DType::FLOATS.into_iter().enumerate() {
            let cfg = MoeConfig::tiny(dtype);
            let w = Arc::new(MoeWeights::new(cfg, 3).unwrap());
            let events = moe_events(&format!("moe-unit-{i}"), cfg.layers).unwrap();
            let side = SharedExpert::Side {
                stream: "moe-unit-11".into(),
                events,
            };
            let x = moe_input(&cfg, 4).unwrap();
            let one =
                host(&moe_model(w.clone(), SharedExpert::Main)(std::slice::from_ref(&x)).unwrap());
            let two = host(&moe_model(w.clone(), side.clone())(std::slice::from_ref(&x)).unwrap());
            let ro = CompileConfig::default().mode(Mode::ReduceOverhead);
            let mut c = compile(moe_model(w.clone(), side), ro);
            for _ in 0..2 {
                let r = host(&c.run(std::slice::from_ref(&x)).unwrap());
                assert_eq!(r, two, "replay {dtype}");
            }
            assert_eq!(one, two, "{dtype}");
            let checks = check_moe(
                &MoeHostWeights::read(&w).unwrap(),
                &x.to_vec_f32().unwrap(),
                &one,
            );
            for c in checks {
                assert!(c.failure.is_none(), "{dtype} {}: {:?}", c.name, c.failure);
            }
        }
    }

    /// A wrong result fails the check (the check can fail).
    #[test]
    fn check_detects_a_wrong_output_and_a_wrong_route() {
        let cfg = MoeConfig::tiny(DType::F32);
        let w = Arc::new(MoeWeights::new(cfg, 5).unwrap());
        let x = moe_input(&cfg, 6).unwrap();
        let mut out =
            host(&moe_model(w.clone(), SharedExpert::Main)(std::slice::from_ref(&x)).unwrap());
        let hw = MoeHostWeights::read(&w).unwrap();
        let xs = x.to_vec_f32().unwrap();
        out[0][3] += 0.5;
        assert!(check_moe(&hw, &xs, &out)[1].failure.is_some());
        out[0][3] -= 0.5;
        // Route token 0 of layer 0 to its two least likely experts.
        let mut worst = out.clone();
        let probs = x.matmul(&w.layers[0].router).unwrap().softmax().unwrap();
        let p = probs.to_vec_f32().unwrap();
        let mut order: Vec<usize> = (0..cfg.experts).collect();
        order.sort_by(|a, b| p[*a].partial_cmp(&p[*b]).unwrap());
        assert!(p[order[cfg.experts - 1]] - p[order[1]] > 1e-3, "{p:?}");
        worst[1][0] = order[0] as f32;
        worst[1][1] = order[1] as f32;
        assert!(check_moe(&hw, &xs, &worst)[0].failure.is_some());
    }
}
