//! The `tagstream` binary: the seed run prints its table and exits 0; bad flags are refused
//! with a message (E8 for dtype names).

use std::process::Command;

fn tagstream(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tagstream"))
        .args(args)
        .output()
        .expect("the binary runs")
}

#[test]
fn run_prints_the_table_and_passes() {
    for dtype in ["f32", "f16", "bf16"] {
        let out = tagstream(&[
            "run",
            "--size",
            "64",
            "--runs",
            "2",
            "--chain-ops",
            "100",
            "--dtype",
            dtype,
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{dtype}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for needle in [
            "add ",
            "mm ",
            "mm1",
            "add2",
            "wall time per run: median",
            "streams used: \"default\"",
            "\"1\"",
            "mode reduce-overhead",
            "compiled: 1 capture(s), 2 replay(s), 0 eager run(s)",
            "\"1\": wait(fork), wait(\"66\"), matmul, record(join1)",
            "memory plan: one arena of",
            "eager vs replay",
            "timed in turns",
            "equals the reference",
            "within the error bound",
            "what replay saves",
            "tiny chain 100 ops [16]",
            "per op: eager",
        ] {
            assert!(
                stdout.contains(needle),
                "{dtype}: missing {needle:?} in\n{stdout}"
            );
        }
        assert_eq!(stdout.matches(" ok").count(), 4, "{stdout}");
    }
}

/// `--mode eager` runs `Mode::Eager`: no capture, no graph, no comparison table.
#[test]
fn eager_mode_runs_without_a_graph() {
    let out = tagstream(&["run", "--size", "32", "--runs", "2", "--mode", "eager"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("mode eager"), "{stdout}");
    assert!(
        stdout.contains("compiled: 0 capture(s), 0 replay(s), 3 eager run(s)"),
        "{stdout}"
    );
    assert!(!stdout.contains("graph (per-stream order)"), "{stdout}");
    assert!(!stdout.contains("eager vs replay"), "{stdout}");
}

#[test]
fn unknown_dtype_is_refused_e8() {
    let out = tagstream(&["run", "--dtype", "f64"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown dtype \"f64\"") && stderr.contains("f32, f16, bf16"),
        "{stderr}"
    );
}

#[test]
fn bad_sizes_are_refused() {
    for size in ["0", "-3", "abc", "100000"] {
        let out = tagstream(&["run", "--size", size]);
        assert!(!out.status.success(), "--size {size} must be refused");
        let stderr = String::from_utf8_lossy(&out.stderr);
        // A range error for the value, not clap's "unexpected argument '-3'".
        assert!(
            stderr.contains(&format!("invalid value '{size}' for '--size <N>'"))
                && stderr.contains("from 1 to 8192"),
            "--size {size}: {stderr}"
        );
    }
}

#[test]
fn help_shows_the_ranges() {
    let out = tagstream(&["run", "--help"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for range in ["1..=8192", "1..=10000", "0..=1000000"] {
        assert!(stdout.contains(range), "missing {range} in\n{stdout}");
    }
    assert!(stdout.contains("--capture-limit"), "{stdout}");
}

/// `tagstream` with options and no command runs `run` with them.
#[test]
fn options_without_a_command_run_the_seed_model() {
    let out = tagstream(&[
        "--dtype",
        "f32",
        "--size",
        "16",
        "--runs",
        "1",
        "--chain-ops",
        "0",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("4 inputs [16, 16] f32, mode reduce-overhead, 1 timed runs"),
        "{stdout}"
    );
    assert!(!stdout.contains("tiny chain"), "{stdout}");
}

/// The eager mode has no eager-vs-replay comparison, so `--chain-ops` would do nothing.
#[test]
fn chain_ops_with_eager_mode_is_refused() {
    let out = tagstream(&["run", "--mode", "eager", "--chain-ops", "10"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--chain-ops") && stderr.contains("--mode eager"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

/// The CLI installs a tracing subscriber, so the capture-limit warning reaches stderr.
#[test]
fn capture_limit_warning_is_shown() {
    let out = tagstream(&[
        "run",
        "--size",
        "16",
        "--runs",
        "1",
        "--chain-ops",
        "0",
        "--capture-limit",
        "0",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("WARN") && stderr.contains("capture limit of 0 reached"),
        "{stderr}"
    );
    assert!(
        stdout.contains("compiled: 0 capture(s), 0 replay(s), 2 eager run(s)")
            && stdout.contains("capture limit of 0 reached: every call ran eagerly"),
        "{stdout}"
    );
}

/// `trace` with nowhere to write would record for nothing: refused with a message.
#[test]
fn trace_without_an_output_is_refused() {
    let out = tagstream(&["trace", "--size", "8"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--out <FILE>") && stderr.contains("--svg <FILE>"),
        "{stderr}"
    );
}

/// `tagstream trace` writes a Chrome trace and an SVG of the seed model, eager and replayed.
#[test]
fn trace_writes_chrome_json_and_svg() {
    let dir = std::env::temp_dir().join(format!("tagstream-cli-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, svg) = (dir.join("run.json"), dir.join("run.svg"));
    let out = tagstream(&[
        "trace",
        "--size",
        "32",
        "--out",
        json.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Mode::Eager") && stdout.contains("replay"),
        "{stdout}"
    );
    let json = std::fs::read_to_string(&json).unwrap();
    assert!(
        json.contains("\"traceEvents\"") && json.contains("stream \\\"1\\\""),
        "{json}"
    );
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("reduce-overhead replay"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An unwritable output path is an error with a message, not a panic.
#[test]
fn trace_to_an_unwritable_path_fails_cleanly() {
    let out = tagstream(&[
        "trace",
        "--size",
        "8",
        "--out",
        "/nonexistent-dir/x/run.json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot write /nonexistent-dir/x/run.json"),
        "{stderr}"
    );
}

/// `run --model moe`: the MoE stack (tiny shapes here) passes its checks on 1 and 2 streams,
/// eager and replayed, and with `--auto-streams 2`; seed-only flags are refused.
#[test]
fn moe_runs_with_its_checks() {
    for dtype in ["f32", "bf16"] {
        let out = tagstream(&[
            "run",
            "--model",
            "moe",
            "--shapes",
            "tiny",
            "--runs",
            "2",
            "--auto-streams",
            "2",
            "--dtype",
            dtype,
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{dtype}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for needle in [
            "tagstream MoE stack: 2 layers, T=4 d=32 E=4 top-2",
            "routing",
            "output",
            "eager == replay, 1 stream == 2 streams",
            "eager, 1 stream",
            "replay, 2 streams",
            "auto_streams(2)",
            "2 streams vs 1 stream: replay",
        ] {
            assert!(
                stdout.contains(needle),
                "{dtype}: missing {needle:?} in\n{stdout}"
            );
        }
        assert_eq!(stdout.matches("  ok").count(), 3, "{stdout}");
    }
    let out = tagstream(&["run", "--model", "moe", "--size", "64"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--model moe"));
}

/// `run --auto-streams N` (R11.1, R11.7): the seed model's two streams already reach 2, and its
/// main stream is one dependent chain, so nothing moves; the line says how many streams of at
/// most N the graph uses.
#[test]
fn run_auto_streams_reports_the_graph_streams() {
    for (n, line) in [
        (
            "2",
            "graph streams (auto_streams 2): 2 of at most 2: \"default\", \"1\"",
        ),
        (
            "3",
            "graph streams (auto_streams 3): 2 of at most 3: \"default\", \"1\"",
        ),
    ] {
        let out = tagstream(&[
            "run",
            "--size",
            "32",
            "--runs",
            "2",
            "--chain-ops",
            "0",
            "--auto-streams",
            n,
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
        assert_eq!(stdout.matches(" ok").count(), 4, "{stdout}");
    }
}

/// `--auto-streams` assigns a captured graph: with `--mode eager` (nothing captured) it is
/// refused with a message and exit code 2, as are values outside 1..=64.
#[test]
fn auto_streams_is_refused_in_eager_mode_and_out_of_range() {
    let out = tagstream(&["run", "--mode", "eager", "--auto-streams", "2"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--auto-streams assigns the streams of a captured graph")
            && stderr.contains("--mode eager"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing ran");
    for n in ["0", "65", "-1", "two"] {
        let out = tagstream(&["run", "--auto-streams", n]);
        assert!(!out.status.success(), "--auto-streams {n} must be refused");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("invalid value '{n}' for '--auto-streams <N>'"))
                && stderr.contains("from 1 to 64"),
            "--auto-streams {n}: {stderr}"
        );
    }
}

/// `trace --auto-streams 2`: two matmul chains written on one stream, traced as written and
/// assigned; the assignment puts one chain on "auto:1" (R11.2) and both panels are in the SVG.
#[test]
fn trace_auto_streams_draws_before_and_after() {
    let dir = std::env::temp_dir().join(format!("tagstream-cli-auto-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("auto.svg");
    let out = tagstream(&[
        "trace",
        "--auto-streams",
        "2",
        "--size",
        "128",
        "--dtype",
        "f32",
        "--svg",
        svg.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "auto_streams(2) placed the program on [\"default\", \"auto:1\"]",
        "\"auto:1\": wait(fork), matmul, matmul, matmul, matmul, record(join1)",
        "heaviest path",
        "replay as written: 11 spans on streams [\"default\"]",
        // A wait that finds its record done may leave no span: the count varies.
        " spans on streams [\"default\", \"auto:1\"]",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in\n{stdout}");
    }
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(
        svg.starts_with("<svg")
            && svg.contains("replay as written")
            && svg.contains("stream &quot;auto:1&quot;"),
        "{svg}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
