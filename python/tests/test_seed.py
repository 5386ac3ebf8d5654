"""The seed program (shared/seed/npu_create_tagged_event.md) runs with only its imports changed."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tagstream as ts
import tagstream.torch as torch
import tagstream.torchair as torchair
from tagstream.torchair.configs.compiler_config import CompilerConfig

HERE = Path(__file__).resolve().parent
SEED_PY = HERE.parent / "examples" / "seed.py"


def _seed_markdown():
    root = HERE.parent.parent
    for base in [os.environ.get("TAGSTREAM_SHARED"), root / "shared", root.parent / "shared"]:
        if base:
            p = Path(base) / "seed" / "npu_create_tagged_event.md"
            if p.is_file():
                return p
    return None


def _body(lines):
    """The program without its import lines (and without what comes before the first one)."""
    is_import = re.compile(r"^(import |from \S+ import )")
    start = next(i for i, line in enumerate(lines) if is_import.match(line))
    return [line.rstrip() for line in lines[start:] if not is_import.match(line)]


def test_example_differs_from_the_seed_only_in_import_lines():
    md = _seed_markdown()
    if md is None:
        pytest.skip("shared/seed/npu_create_tagged_event.md not found beside the repository")
    block = re.search(r"```python\n(.*?)```", md.read_text(encoding="utf-8").split("## 调用示例")[1],
                      re.S).group(1)
    assert _body(block.splitlines()) == _body(SEED_PY.read_text(encoding="utf-8").splitlines())


def test_seed_example_runs_as_a_program():
    r = subprocess.run([sys.executable, str(SEED_PY)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Result:\n(tensor([[")
    assert r.stdout.count("dtype=tagstream.float16)") == 4


def test_seed_model_through_the_torch_faces_matches_numpy(tag):
    ev = torchair.ops.npu_create_tagged_event(tag=tag("66"))
    side = tag("1")

    class Model(torch.nn.Module):
        def forward(self, in1, in2, in3, in4):
            add_result = torch.add(in1, in2)
            torchair.ops.npu_tagged_event_record(ev)
            with torchair.scope.npu_stream_switch(side):
                torchair.ops.npu_tagged_event_wait(ev)
                mm_result = torch.mm(in3, in4)
            return add_result, mm_result, torch.mm(in3, in4), torch.add(in3, in4)

    config = CompilerConfig()
    config.mode = "reduce-overhead"
    model = torch.compile(Model(), backend=torchair.get_npu_backend(compiler_config=config),
                          dynamic=False, fullgraph=True)
    torch.manual_seed(0)
    ins = [torch.randn(200, 200, dtype=torch.float16).npu() for _ in range(4)]
    for _ in range(2):
        add_result, mm_result, mm1, add2 = model(*ins)
    assert model.stats()["captures"] == 1 and model.stats()["replays"] == 1
    a, b, c, d = (t.numpy().astype(np.float32) for t in ins)
    np.testing.assert_array_equal(add_result.numpy(), (a + b).astype(np.float16))
    np.testing.assert_array_equal(add2.numpy(), (c + d).astype(np.float16))
    want = (c.astype(np.float64) @ d).astype(np.float16).astype(np.float32)
    np.testing.assert_allclose(mm_result.numpy().astype(np.float32), want, rtol=2e-3, atol=2e-2)
    np.testing.assert_array_equal(mm_result.numpy(), mm1.numpy())
    # torchair's default mode (max-autotune) runs eagerly
    eager = torch.compile(Model(), backend=torchair.get_npu_backend(compiler_config=CompilerConfig()))
    eager(*ins)
    assert eager.stats()["eager_runs"] == 1
