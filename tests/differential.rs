//! Differential property test: random multi-stream closures under `Mode::Eager` and under
//! `Mode::ReduceOverhead` (a capture, two replays) must agree, and an independent oracle must
//! predict exactly which programs are accepted and how the others are refused.
//!
//! Programs: 1–60 actions on 1–4 streams (`"default"`, `"diff-1"`..`"diff-3"`) in nested scopes (a tree, so
//! guards drop LIFO; R2.4–R2.7); every op on `[n,n]` tensors of one dtype (R6.11; `rms_norm`
//! with a `[n]` weight input, a `to_dtype` round trip); host constants made in the closure (R4.3,
//! SC21); `record_tagged_stream` (R4.10); three process-wide events recorded and waited anywhere
//! (R1.7–R1.11, R4.5); operands drawn among earlier values, so many programs race.
//!
//! Oracle: a vector clock per stream over the program's entries and the fork/join closure
//! (R3.4, R4.4). `Mode::Eager` (R3.11) refuses the first read not ordered after its producer
//! with `DataRace` naming both ops and streams (R3.5, R7.2); a wait with no earlier record in
//! the program is a no-op (R1.9; each run starts after `synchronize`, so a record left by an
//! earlier run orders nothing new, R1.8, R3.6). A capture refuses the same read, naming
//! which op of the closure each was (R4.8, R7.2), unless such a wait comes first in issue
//! order: `WaitWithoutRecord` (R4.6, SC33, SC34). Accepted programs give bit-identical outputs (NaN == NaN) eagerly, in the
//! capturing call, in two replays on fresh inputs and in a serial single-stream run of the same
//! ops (R4.13, R5.6, R6.4; the kernels themselves are checked against the serial reference of
//! R6.5 in `src/kernels/tests.rs`); held outputs survive
//! replays (R5.5); stats count 1 capture, 2 replays (R5.10); a refused capture caches nothing
//! and refuses again (R4.12). Each case runs in a thread with a 30 s timeout (R7.1).
//!
//! `TAGSTREAM_DIFF_CASES` sets the number of cases (default 64); the ignored test
//! `differential_10k` runs 10,000 (`cargo test --test differential -- --ignored`).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use tagstream::ops::{
    TaggedEvent, create_tagged_event, record_tagged_stream, tagged_event_record, tagged_event_wait,
};
use tagstream::scope::stream_switch;
use tagstream::{CompileConfig, CompileStats, DType, Error, Mode, Tensor, compile, synchronize};

const STREAMS: [&str; 4] = ["default", "diff-1", "diff-2", "diff-3"];
const EVENTS: usize = 3;
const MAX_DEPTH: usize = 4;
const TIMEOUT: Duration = Duration::from_secs(30);
/// `op(a, b, weight)`.
type OpFn = fn(&Tensor, &Tensor, &Tensor) -> tagstream::Result<Tensor>;
/// Ops by the names errors give them. `to_dtype` is a round trip (two entries); `full` is a host
/// constant made in the closure (no entry, ready on every stream); `reshape` is a copy-free view
/// (a round trip through `[n·n]`: no entry, the same value as its operand).
const OPS: [(&str, OpFn); 15] = [
    ("add", |a, b, _| a.add(b)),
    ("sub", |a, b, _| a.sub(b)),
    ("mul", |a, b, _| a.mul(b)),
    ("div", |a, b, _| a.div(b)),
    ("relu", |a, _, _| a.relu()),
    ("silu", |a, _, _| a.silu()),
    ("gelu", |a, _, _| a.gelu()),
    ("exp", |a, _, _| a.exp()),
    ("softmax", |a, _, _| a.softmax()),
    ("rms_norm", |a, _, w| a.rms_norm(w, 1e-5)),
    ("matmul", |a, b, _| a.matmul(b)),
    ("to_dtype", |a, _, _| {
        let other = [DType::F32, DType::BF16][(a.dtype() == DType::F32) as usize];
        a.to_dtype(other)?.to_dtype(a.dtype())
    }),
    ("full", |a, _, _| Tensor::full(a.shape(), 0.75, a.dtype())),
    ("softmax_dim", |a, _, _| a.softmax_dim(0)),
    ("reshape", |a, _, _| {
        a.reshape(&[a.len()])?.reshape(a.shape())
    }),
];

/// The events, created once per process (R1.2, R1.4) and shared by every case.
fn events() -> &'static [TaggedEvent] {
    static EV: OnceLock<Vec<TaggedEvent>> = OnceLock::new();
    EV.get_or_init(|| {
        (0..EVENTS)
            .map(|e| create_tagged_event(&format!("diff-ev-{e}")).expect("fresh event tag"))
            .collect()
    })
}

/// One generated action; indices are raw and resolved by [`build`].
#[derive(Debug, Clone)]
enum Raw {
    Op(usize, usize, usize),
    Record(usize),
    Wait(usize),
    Keep(usize, usize),
    /// Enter a scope; `Some(e)`: record `e` just before and wait on it first inside (SC1).
    Enter(usize, Option<usize>),
    /// Leave the innermost scope; `Some(e)`: record `e` last inside, wait on it after (SC18).
    Exit(Option<usize>),
}

/// A program node. Values are numbered: inputs first, then op results in issue order.
#[derive(Debug, Clone)]
enum Node {
    /// `(op, a, b)`: `a` and `b` are value numbers (`b` unused by unary ops).
    Op(&'static str, usize, usize),
    Record(usize),
    Wait(usize),
    /// `record_tagged_stream(value, stream)`.
    Keep(usize, usize),
    Scope(usize, Vec<Node>),
}

#[derive(Debug, Clone)]
struct Program {
    dtype: DType,
    n: usize,
    /// Number of `[n,n]` inputs; one `[n]` weight input follows them.
    inputs: usize,
    seed: u64,
    body: Vec<Node>,
    outputs: Vec<usize>,
}

fn raw() -> impl Strategy<Value = Raw> {
    let handoff = || prop::option::weighted(0.6, 0..EVENTS);
    prop_oneof![
        10 => (0..OPS.len(), any::<usize>(), any::<usize>()).prop_map(|(o, a, b)| Raw::Op(o, a, b)),
        3 => (0..EVENTS).prop_map(Raw::Record),
        3 => (0..EVENTS).prop_map(Raw::Wait),
        1 => (any::<usize>(), 0..STREAMS.len()).prop_map(|(v, s)| Raw::Keep(v, s)),
        3 => (0..8usize, handoff()).prop_map(|(s, e)| Raw::Enter(s, e)),
        3 => handoff().prop_map(Raw::Exit),
    ]
}

/// Turns the flat actions into a scope tree, resolving operands among the values existing at
/// that point. `strict` programs wait only on events recorded earlier in the program.
fn build(
    head: (DType, usize, usize, u64),
    streams: usize,
    actions: Vec<Raw>,
    outs: Vec<usize>,
    strict: bool,
) -> Program {
    let (dtype, n, inputs, seed) = head;
    let mut fr: Vec<(usize, Vec<Node>)> = vec![(0, Vec::new())];
    let (mut values, mut recorded) = (inputs, Vec::new()); // `recorded`: latest last
    // Two thirds of the operands are among the three latest values: chains cross streams.
    let pick = |r: usize, values: usize| match r % 3 {
        0 => (r / 3) % values,
        _ => values - 1 - (r / 3) % values.min(3),
    };
    for act in actions {
        let mut nodes = Vec::new(); // for the innermost scope after `act`
        let mut record = None;
        match act {
            Raw::Op(o, a, b) => {
                nodes.push(Node::Op(OPS[o].0, pick(a, values), pick(b, values)));
                values += 1;
            }
            Raw::Record(e) => {
                nodes.push(Node::Record(e));
                record = Some(e);
            }
            Raw::Wait(e) if strict && !recorded.contains(&e) => {
                nodes.extend(recorded.last().map(|&latest| Node::Wait(latest)));
            }
            Raw::Wait(e) => nodes.push(Node::Wait(e)),
            Raw::Keep(v, s) => nodes.push(Node::Keep(v % values, s % streams)),
            Raw::Enter(s, handoff) if fr.len() <= MAX_DEPTH => {
                // Side streams three times as often as "default" scopes.
                let side = s % 4 != 0 && streams > 1;
                let s = [0, 1 + s % streams.saturating_sub(1).max(1)][side as usize];
                fr.last_mut().unwrap().1.extend(handoff.map(Node::Record));
                fr.push((s, Vec::new()));
                nodes.extend(handoff.map(Node::Wait));
                record = handoff;
            }
            Raw::Exit(handoff) if fr.len() > 1 => {
                let (s, mut body) = fr.pop().unwrap();
                body.extend(handoff.map(Node::Record));
                nodes.push(Node::Scope(s, body));
                nodes.extend(handoff.map(Node::Wait));
                record = handoff;
            }
            Raw::Enter(..) | Raw::Exit(_) => {}
        }
        fr.last_mut().unwrap().1.extend(nodes);
        if let Some(e) = record {
            recorded.retain(|&r| r != e);
            recorded.push(e);
        }
    }
    while fr.len() > 1 {
        let (s, body) = fr.pop().unwrap();
        fr.last_mut().unwrap().1.push(Node::Scope(s, body));
    }
    // Results, but an input if there is none or a later pick asks for one (SC27).
    let results = values - inputs;
    let outputs = (outs.iter().enumerate())
        .map(|(i, o)| {
            [inputs + o % results.max(1), o % inputs]
                [(results == 0 || (i > 0 && o % 4 == 0)) as usize]
        })
        .collect();
    let body = fr.pop().unwrap().1;
    Program {
        dtype,
        n,
        inputs,
        seed,
        body,
        outputs,
    }
}

fn program() -> impl Strategy<Value = Program> {
    let dtype = prop_oneof![Just(DType::F32), Just(DType::F16), Just(DType::BF16)];
    let head = (dtype, 1..=6usize, 2..=3usize, any::<u64>());
    let streams = prop_oneof![1 => Just(1), 6 => 2..=STREAMS.len()];
    let actions = prop::collection::vec(raw(), 1..=60);
    let outs = prop::collection::vec(any::<usize>(), 1..=4);
    (head, streams, actions, outs, prop::bool::weighted(0.6))
        .prop_map(|(h, s, a, o, strict)| build(h, s, a, o, strict))
}

/// Interprets `nodes`; a scope is a guard living for its block, so guards drop LIFO, also on `?`.
fn exec(nodes: &[Node], pool: &mut Vec<Tensor>, w: &Tensor) -> tagstream::Result<()> {
    for node in nodes {
        match *node {
            Node::Op(op, a, b) => {
                let f = OPS.iter().find(|o| o.0 == op).unwrap().1;
                pool.push(f(&pool[a], &pool[b], w)?);
            }
            Node::Record(e) => tagged_event_record(&events()[e])?,
            Node::Wait(e) => tagged_event_wait(&events()[e])?,
            Node::Keep(v, s) => record_tagged_stream(&pool[v], STREAMS[s])?,
            Node::Scope(s, ref body) => {
                let _guard = stream_switch(STREAMS[s])?;
                exec(body, pool, w)?;
            }
        }
    }
    Ok(())
}

/// The serial single-stream run of the same program: every op on the main stream in program
/// order, no scopes, no events. Bits depend only on ops and inputs (R6.4), so an accepted
/// multi-stream program must match it exactly.
fn exec_serial(nodes: &[Node], pool: &mut Vec<Tensor>, w: &Tensor) -> tagstream::Result<()> {
    for node in nodes {
        match *node {
            Node::Op(op, a, b) => {
                let f = OPS.iter().find(|o| o.0 == op).unwrap().1;
                pool.push(f(&pool[a], &pool[b], w)?);
            }
            Node::Scope(_, ref body) => exec_serial(body, pool, w)?,
            Node::Record(_) | Node::Wait(_) | Node::Keep(..) => {}
        }
    }
    Ok(())
}

/// Where an entry is: (stream index, 1-based position on that stream in the graph).
type Pos = (usize, u32);
/// A refused read: (reader op, its position, producer op, its position); each op with which
/// op of the closure it was, counted from 1 (R7.2, issue 16 item 3).
type Race = ((&'static str, u32), Pos, (&'static str, u32), Pos);

/// Vector clocks over the program's entries (R3.4), with the closure of R4.4.
#[derive(Default)]
struct Oracle {
    clock: [[u32; 4]; 4],
    fork: [u32; 4],
    latest: [Option<[u32; 4]>; EVENTS],
    /// Producer of each value and which op of the closure it was; `None` for inputs (copied in
    /// before the fork, R4.8) and constants.
    producers: Vec<Option<(Pos, (&'static str, u32))>>,
    /// Ops the closure has issued (a `to_dtype` round trip is two).
    ops: u32,
    /// User records: (event, issue index, position).
    records: Vec<(usize, usize, Pos)>,
    /// The first wait with no earlier record in the program: (issue index, event, position).
    unbound: Option<(usize, usize, Pos)>,
    issued: usize,
    /// Whether a side-stream scope has been entered: the capture inserts the fork at graph
    /// start only then (R4.4 a, e), so until then main positions after the copy-ins are one
    /// lower than with the fork this oracle always counts.
    entered_side: bool,
}

impl Oracle {
    fn tick(&mut self, s: usize) -> Pos {
        self.issued += 1;
        self.clock[s][s] += 1;
        (s, self.clock[s][s])
    }

    fn join(&mut self, s: usize, other: [u32; 4]) {
        for (a, b) in self.clock[s].iter_mut().zip(other) {
            *a = (*a).max(b);
        }
    }

    /// Walks `nodes` on stream `s`; stops at the first race, as the closure's `?` does.
    fn walk(&mut self, nodes: &[Node], s: usize) -> Result<(), Race> {
        for node in nodes {
            match *node {
                Node::Op("full", ..) => self.producers.push(None),
                // A view issues nothing: its readers are checked against its operand's producer.
                Node::Op("reshape", a, _) => self.producers.push(self.producers[a]),
                Node::Op(op, a, b) => {
                    // In the order the runtime checks them; the `rms_norm` weight is an input.
                    let binary = matches!(op, "add" | "sub" | "mul" | "div" | "matmul");
                    for v in [a].into_iter().chain(Some(b).filter(|_| binary)) {
                        if let Some(((t, k), producer)) = self.producers[v]
                            && self.clock[s][t] < k
                        {
                            let reader = (op, self.ops + 1);
                            return Err((reader, (s, self.clock[s][s] + 1), producer, (t, k)));
                        }
                    }
                    let mut pos = self.tick(s);
                    self.ops += 1;
                    if op == "to_dtype" {
                        pos = self.tick(s);
                        self.ops += 1;
                    }
                    self.producers.push(Some((pos, (op, self.ops))));
                }
                Node::Record(e) => {
                    let issued = self.issued;
                    let pos = self.tick(s);
                    self.latest[e] = Some(self.clock[s]);
                    self.records.push((e, issued, pos));
                }
                Node::Wait(e) => {
                    match self.latest[e] {
                        Some(c) => self.join(s, c),
                        None if self.unbound.is_none() => {
                            self.unbound = Some((self.issued, e, (s, self.clock[s][s] + 1)));
                        }
                        None => {}
                    }
                    self.tick(s);
                }
                Node::Keep(..) => {}
                Node::Scope(t, ref body) => {
                    if t != 0 {
                        self.entered_side = true;
                        self.join(t, self.fork);
                        self.tick(t);
                    }
                    self.walk(body, t)?;
                    if t != 0 {
                        self.tick(t);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Predicts the errors of `Mode::Eager` and of the capture (`None`: accepted). Eager names the
/// ops, a capture names them with which op of the closure each was (R7.2); `WaitWithoutRecord`
/// names graph positions (R4.6).
fn predict(p: &Program) -> (Option<Error>, Option<Error>) {
    let mut o = Oracle::default();
    o.producers.resize(p.inputs, None); // inputs: copied in before the fork (R4.8)
    o.clock[0][0] = p.inputs as u32 + 1; // the copy-ins, the weight's included
    o.tick(0);
    o.fork = o.clock[0];
    let race = o.walk(&p.body, 0).err();
    // Positions in the graph as traced when the error is found (the walk stops at the race).
    let fork_pos = p.inputs as u32 + 2;
    let graph_pos = |(s, k): Pos| match s == 0 && !o.entered_side && k > fork_pos {
        true => (s, k - 1),
        false => (s, k),
    };
    let data_race = |graph: bool| {
        let name = |(op, n): (&str, u32)| match graph {
            true => format!("{op} (op {n} of the closure)"),
            false => op.into(),
        };
        race.map(|(reader, r, producer, q)| Error::DataRace {
            reader: name(reader),
            reader_stream: STREAMS[r.0].into(),
            producer: name(producer),
            producer_stream: STREAMS[q.0].into(),
        })
    };
    let capture = match o.unbound {
        Some((issued, e, at)) => Some(Error::WaitWithoutRecord {
            tag: events()[e].tag().into(),
            stream: STREAMS[at.0].into(),
            position: graph_pos(at).1 as usize,
            later_record: (o.records.iter().find(|r| r.0 == e && r.1 > issued))
                .map(|r| (STREAMS[r.2.0].into(), graph_pos(r.2).1 as usize)),
        }),
        None => data_race(true),
    };
    (data_race(false), capture)
}

/// `[user records, user waits, side-stream scope instances]` in `nodes`.
fn tally(nodes: &[Node]) -> [usize; 3] {
    let mut t = [0; 3];
    for node in nodes {
        match node {
            Node::Record(_) => t[0] += 1,
            Node::Wait(_) => t[1] += 1,
            Node::Scope(s, body) => {
                let [r, w, n] = tally(body);
                t = [t[0] + r, t[1] + w, t[2] + n + (*s != 0) as usize];
            }
            _ => {}
        }
    }
    t
}

type Outputs = tagstream::Result<Vec<Tensor>>;

/// Checks a call's error (or success) against the prediction.
fn expect(what: &str, got: &Outputs, want: &Option<Error>) -> Result<(), String> {
    let got = got.as_ref().err();
    match got == want.as_ref() {
        true => Ok(()),
        false => Err(format!("{what}: got {got:?}, the oracle expects {want:?}")),
    }
}

/// Shape, dtype and bits of each output, NaNs made equal.
type Bits = Vec<(Vec<usize>, DType, Vec<u32>)>;

fn bits(outputs: &[Tensor]) -> Result<Bits, String> {
    let canonical = |x: &f32| if x.is_nan() { 0x7fc0_0000 } else { x.to_bits() };
    let one = |t: &Tensor| -> Result<Vec<u32>, String> {
        let v = t.to_vec_f32().map_err(|e| format!("to_vec_f32: {e}"))?;
        Ok(v.iter().map(canonical).collect())
    };
    (outputs.iter())
        .map(|t| Ok((t.shape().to_vec(), t.dtype(), one(t)?)))
        .collect()
}

fn inputs(p: &Program, call: u64) -> Vec<Tensor> {
    let seed = p.seed.wrapping_mul(31).wrapping_add(call * 8);
    let mut xs: Vec<Tensor> = (0..p.inputs as u64)
        .map(|k| Tensor::randn(&[p.n, p.n], p.dtype, seed + k).expect("randn"))
        .collect();
    xs.push(Tensor::randn(&[p.n], p.dtype, seed + 7).expect("randn"));
    xs
}

fn counts(s: CompileStats) -> (u64, u64, u64, bool) {
    (s.captures, s.replays, s.eager_runs, s.fell_back_to_eager)
}

/// Runs one program eagerly and in reduce-overhead mode and compares against the oracle.
fn check(p: &Program) -> Result<(), String> {
    let (want_eager, want_capture) = predict(p);
    let [records, waits, sides] = tally(&p.body);
    let closure = |mode| {
        let p = p.clone();
        let f = move |x: &[Tensor]| {
            let (w, xs) = x.split_last().expect("the weight input");
            let mut pool = xs.to_vec();
            exec(&p.body, &mut pool, w)?;
            Ok(p.outputs.iter().map(|&i| pool[i].clone()).collect())
        };
        compile(f, CompileConfig::default().mode(mode))
    };
    let (mut eager, mut ro) = (closure(Mode::Eager), closure(Mode::ReduceOverhead));
    let xs: Vec<Vec<Tensor>> = (1..=3).map(|c| inputs(p, c)).collect();
    // Every run starts with all earlier work host-ordered (R3.6): the oracle's fresh start.
    let sync = || synchronize().map_err(|e| format!("synchronize: {e}"));

    sync()?;
    let e1 = eager.run(&xs[0]);
    sync()?;
    let c1 = ro.run(&xs[0]);
    sync()?;
    expect("Mode::Eager", &e1, &want_eager)?;
    expect("capture", &c1, &want_capture)?;
    let (Ok(e1), Ok(c1)) = (e1, c1) else {
        // R4.12: nothing cached, so the next call captures again and fails the same way.
        let again = ro.run(&xs[1]);
        sync()?;
        expect("second capture", &again, &want_capture)?;
        if counts(ro.stats()) != (0, 0, 0, false) || ro.cached_graphs() != 0 {
            return Err(format!("failed captures changed state: {:?}", ro.stats()));
        }
        return Ok(());
    };
    for (i, x) in xs[1..].iter().enumerate() {
        let r = ro.run(x).map_err(|e| format!("replay: {e:?}"))?;
        sync()?;
        let e = eager.run(x).map_err(|e| format!("Mode::Eager: {e:?}"))?;
        sync()?;
        if bits(&r)? != bits(&e)? {
            return Err(format!("replay {} differs from Mode::Eager", i + 1));
        }
    }
    // The capturing call's outputs are read only now: replays must not overwrite them (R5.5).
    if bits(&c1)? != bits(&e1)? {
        return Err("the capturing call differs from Mode::Eager on the same inputs".into());
    }
    // The serial single-stream run gives the same bits (R6.4, R5.6).
    let serial = {
        let (w, x) = xs[0].split_last().expect("the weight input");
        let mut pool = x.to_vec();
        exec_serial(&p.body, &mut pool, w).map_err(|e| format!("serial run: {e:?}"))?;
        p.outputs
            .iter()
            .map(|&i| pool[i].clone())
            .collect::<Vec<_>>()
    };
    if bits(&serial)? != bits(&e1)? {
        return Err("the serial single-stream run differs from Mode::Eager".into());
    }
    if counts(ro.stats()) != (1, 2, 0, false) || counts(eager.stats()) != (0, 0, 3, false) {
        return Err(format!("stats: {:?} / {:?}", ro.stats(), eager.stats()));
    }
    // R4.4 counts: n ≥ 1 side scopes add the fork, n joins and 2n waits; no side scope, none.
    let dump = ro.graph_dump().unwrap_or_default();
    let want = [(records, waits), (records + 1 + sides, waits + 2 * sides)][(sides > 0) as usize];
    if (
        dump.matches("record(").count(),
        dump.matches("wait(").count(),
    ) != want
    {
        return Err(format!(
            "R4.4: {want:?} records and waits expected in\n{dump}"
        ));
    }
    Ok(())
}

/// Serializes the tests of this file: streams, clocks and events are process-wide.
static SERIAL: Mutex<()> = Mutex::new(());
/// Set once a case timed out; later cases are skipped so that shrinking ends at once.
static HUNG: AtomicBool = AtomicBool::new(false);

/// Runs [`check`] in its own thread and fails on a panic or after [`TIMEOUT`].
fn check_in_thread(p: Program) -> Result<(), TestCaseError> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if HUNG.load(Ordering::SeqCst) {
        return Ok(());
    }
    let (tx, rx) = mpsc::channel();
    let shown = format!("{p:?}");
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| check(&p)));
        tx.send(r.unwrap_or_else(|_| Err("the case panicked (message above)".into())))
    });
    rx.recv_timeout(TIMEOUT)
        .unwrap_or_else(|_| {
            HUNG.store(true, Ordering::SeqCst);
            Err(format!("hang: no result after {TIMEOUT:?} for {shown}"))
        })
        .map_err(TestCaseError::fail)
}

fn cases() -> u32 {
    let var = std::env::var("TAGSTREAM_DIFF_CASES");
    var.ok().and_then(|s| s.parse().ok()).unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// R5.6, R3.5/R4.8, R4.6: eager and reduce-overhead agree with each other and the oracle.
    #[test]
    fn eager_and_reduce_overhead_agree_with_the_oracle(p in program()) {
        check_in_thread(p)?;
    }
}

/// The same with 10,000 cases.
#[test]
#[ignore = "long: 10,000 cases"]
fn differential_10k() {
    let mut runner = TestRunner::new(ProptestConfig::with_cases(10_000));
    runner.run(&program(), check_in_thread).unwrap();
}
