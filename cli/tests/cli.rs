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
            "memory plan: arena",
            "eager vs replay",
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
    }
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
