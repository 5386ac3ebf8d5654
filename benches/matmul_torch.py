"""PyTorch CPU figures for the shapes of the `small_m_timing` test (issue 12), for comparison in
the same run:

    cargo test --release --lib small_m_timing -- --ignored --nocapture
    python benches/matmul_torch.py

Median of 15 after a warm-up, in ms, `torch.matmul` with 2 and 1 threads.
"""

import time

import torch

SHAPES = [
    ("experts up [8,16,2048]x[8,2048,1408]", (8, 16, 2048), (8, 2048, 1408), torch.bfloat16),
    ("experts down [8,16,1408]x[8,1408,2048]", (8, 16, 1408), (8, 1408, 2048), torch.bfloat16),
    ("shared up [16,2048]x[2048,2816]", (16, 2048), (2048, 2816), torch.bfloat16),
    ("shared down [16,2816]x[2816,2048]", (16, 2816), (2816, 2048), torch.bfloat16),
    ("experts up [8,16,2048]x[8,2048,1408]", (8, 16, 2048), (8, 2048, 1408), torch.float32),
    ("seed 1000^3", (1000, 1000), (1000, 1000), torch.float16),
    ("seed 1000^3", (1000, 1000), (1000, 1000), torch.bfloat16),
    ("seed 1000^3", (1000, 1000), (1000, 1000), torch.float32),
]
NAMES = {torch.bfloat16: "bf16", torch.float16: "f16", torch.float32: "f32"}


def median_ms(f, reps=15):
    f()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return times[len(times) // 2]


def main():
    print(f"torch {torch.__version__}")
    for threads in (2, 1):
        torch.set_num_threads(threads)
        for name, sa, sb, dt in SHAPES:
            g = torch.Generator().manual_seed(1)
            a = torch.rand(sa, generator=g).mul(2).sub(1).to(dt)
            b = torch.rand(sb, generator=g).mul(2).sub(1).to(dt)
            ms = median_ms(lambda: torch.matmul(a, b))
            print(f"{name:<38} {NAMES[dt]:<4} {threads} thr: torch {ms:8.3f} ms")


if __name__ == "__main__":
    main()
