//! `tagstream bench --quick` prints the benchmark table with every figure of the README's table and
//! writes the `--tsv` file. No timing is checked: the figures depend on the machine.

use std::process::Command;

#[test]
fn bench_quick_prints_every_row_of_the_table() {
    let tsv = std::env::temp_dir().join(format!("tagstream-bench-{}.tsv", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_tagstream"))
        .args(["bench", "--quick", "--tsv"])
        .arg(&tsv)
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "tagstream bench --quick",
        "figure",
        "target",
        "median",
        "p25",
        "p75",
        "met",
        "replay cost per op, 100-op chain [16] f32, 1 stream",
        "replay cost per op, 100-op chain [16] f16, 1 stream",
        "eager/replay, 100-op chain [16] f32, 1 stream",
        "eager/replay, 100-op chain [16] f16, 1 stream",
        "cross-stream event hand-off (gated ping-pong), per hand-off",
        "idle workers park",
        "1 thread each: 1 stream / 2 streams",
        "seed model 64x64 f16, reduce-overhead",
        "seed model 64x64 f32, reduce-overhead",
        "f16 add, 4096 elements, 1 thread",
        "arena vs sum of values, seed 64x64 f16",
        "arena vs sum of values, 100-op chain [16] f16",
        "<= 40.0 ns",
        "<= 500 ns",
        ">= 10.0x",
        "<= 2000 ns",
        ">= 1.70x",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in\n{stdout}");
    }
    let tsv_text = std::fs::read_to_string(&tsv).expect("--tsv file written");
    let _ = std::fs::remove_file(&tsv);
    for key in [
        "replay_per_op_f32\t",
        "replay_per_op_f16\t",
        "eager_over_replay_f16\t",
        "handoff_ns\t",
        "branches_speedup\t",
        "seed_f16_ms\t",
        "seed_f32_ms\t",
        "seed_bf16_ms\t",
        "add_f16_ms\t",
        "arena_seed_f16\t",
        "arena_chain_f16\t",
    ] {
        assert!(tsv_text.contains(key), "missing {key:?} in\n{tsv_text}");
    }
}

#[test]
fn bench_rejects_unknown_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_tagstream"))
        .args(["bench", "--fast"])
        .output()
        .expect("the binary runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--fast"));
}
