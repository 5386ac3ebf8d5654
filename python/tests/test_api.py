"""Pinned names (design.md §1 "Pinned Python names"), constructors, numpy in and out, ops vs
numpy, operators, devices."""

import math

import numpy as np
import pytest

import tagstream as ts
import tagstream.ops
import tagstream.scope
import tagstream.torch

PINNED_TOP = [
    "Tensor", "float32", "float16", "bfloat16", "int32", "add", "sub", "mul", "div", "mm",
    "matmul", "relu", "silu", "gelu", "exp", "softmax", "rms_norm", "tensor", "from_numpy",
    "from_dlpack", "randn", "zeros", "full", "cuda_is_available", "compile", "synchronize",
    "ops", "scope", "manual_seed",
    "TagstreamError", "TagInUseError", "DataRaceError", "WaitWithoutRecordError",
    "ShapeMismatchError", "DTypeMismatchError", "HostSyncInCaptureError",
    "UnbalancedStreamSwitchError", "DeviceMismatchError", "NoGpuError",
]
# The index ops of round 2 (R6.12) and their error (E20), in torch's spelling.
INDEX_OPS = ["topk", "gather", "scatter", "index_select"]
PINNED_OPS = [
    "npu_create_tagged_event", "npu_tagged_event_record", "npu_tagged_event_wait",
    "npu_record_tagged_stream", "create_tagged_event", "tagged_event_record",
    "tagged_event_wait", "record_tagged_stream",
]
PINNED_SCOPE = ["npu_stream_switch", "stream_switch", "current_stream"]
TENSOR_MEMBERS = [
    "shape", "dtype", "device", "numpy", "__dlpack__", "__dlpack_device__", "to", "npu", "cuda",
    "cpu", "add", "sub", "mul", "div", "matmul", "relu", "silu", "gelu", "exp", "softmax",
    "rms_norm", "to_dtype", "__add__", "__sub__", "__mul__", "__truediv__", "__matmul__",
]


def test_every_pinned_name_exists_and_has_a_docstring():
    for name in PINNED_TOP:
        assert hasattr(ts, name), name
    for name in PINNED_OPS:
        assert callable(getattr(ts.ops, name)), name
        assert getattr(ts.ops, name).__doc__, name
    for name in PINNED_SCOPE:
        assert callable(getattr(ts.scope, name)), name
    for name in TENSOR_MEMBERS:
        assert hasattr(ts.Tensor, name), name
    for name in ["add", "sub", "mul", "div", "mm", "matmul", "relu", "silu", "gelu", "exp",
                 "softmax", "rms_norm", "tensor", "from_numpy", "from_dlpack", "randn", "zeros",
                 "full", "compile", "synchronize", "cuda_is_available"]:
        assert getattr(ts, name).__doc__, name
    for name in ts.__all__:
        assert hasattr(ts, name), name
    for name in INDEX_OPS:
        assert getattr(ts, name).__doc__, name
        assert getattr(ts.Tensor, name).__doc__, name
        assert getattr(ts.torch, name) is getattr(ts, name), name
    assert issubclass(ts.InvalidValueError, ts.TagstreamError)


def test_help_of_ops_reads_well():
    import pydoc

    text = pydoc.render_doc(ts.ops, renderer=pydoc.plaintext)
    assert "npu_create_tagged_event" in text
    assert "Records `event` on the current stream" in text
    assert "Matrix product" in text


def test_dtypes_are_unique_objects_with_torch_names():
    t = ts.randn(2, 2, dtype=ts.float16, seed=1)
    assert t.dtype is ts.float16
    assert repr(ts.bfloat16) == "tagstream.bfloat16"
    assert [d.name for d in (ts.float32, ts.float16, ts.bfloat16, ts.int32)] == [
        "float32", "float16", "bfloat16", "int32"]
    assert ts.float16.itemsize == 2 and ts.float32 != ts.float16
    # numpy and string spellings are accepted wherever a dtype is
    assert ts.zeros(2, dtype=np.float16).dtype is ts.float16
    assert ts.zeros(2, dtype="bf16").dtype is ts.bfloat16


def test_constructors_shapes_and_values():
    z = ts.zeros(2, 3)
    assert z.shape == (2, 3) and z.dtype is ts.float32 and z.device == "cpu"
    assert ts.zeros((2, 3)).shape == (2, 3) and ts.zeros([4]).shape == (4,)
    np.testing.assert_array_equal(z.numpy(), np.zeros((2, 3), np.float32))
    f = ts.full((2, 2), 1.5, dtype=ts.bfloat16)
    assert f.dtype is ts.bfloat16
    np.testing.assert_array_equal(f.numpy(), np.full((2, 2), 1.5, np.float32))
    assert f.numel() == 4 and f.ndim == 2 and f.dim() == 2 and len(f) == 2 and f.size(-1) == 2


def test_randn_seeded_is_deterministic_and_unseeded_draws_new_values():
    a = ts.randn(64, seed=7).numpy()
    b = ts.randn(64, seed=7).numpy()
    np.testing.assert_array_equal(a, b)
    assert abs(a.mean()) < 0.5 and 0.5 < a.std() < 1.5
    ts.manual_seed(123)
    x1, x2 = ts.randn(16).numpy(), ts.randn(16).numpy()
    assert not np.array_equal(x1, x2)
    ts.manual_seed(123)
    np.testing.assert_array_equal(ts.randn(16).numpy(), x1)


@pytest.mark.parametrize("np_dtype,ts_dtype", [(np.float32, ts.float32), (np.float16, ts.float16)])
def test_numpy_round_trip_keeps_dtype_and_values(np_dtype, ts_dtype):
    src = np.random.default_rng(0).standard_normal((3, 5)).astype(np_dtype)
    t = ts.tensor(src)
    assert t.dtype is ts_dtype and t.shape == (3, 5)
    out = t.numpy()
    assert out.dtype == np_dtype
    np.testing.assert_array_equal(out, src)
    assert not out.flags.writeable  # exports are read-only (design.md §1)
    np.testing.assert_array_equal(np.asarray(t), src)
    np.testing.assert_array_equal(ts.from_numpy(src).numpy(), src)


def test_bf16_exports_float32_and_float32_becomes_bf16_only_when_asked():
    src = np.array([1.0, 1.00390625, 3.14159], np.float32)
    t = ts.tensor(src)
    assert t.dtype is ts.float32
    b = ts.tensor(src, dtype=ts.bfloat16)
    assert b.dtype is ts.bfloat16
    out = b.numpy()
    assert out.dtype == np.float32
    # bf16 keeps 8 significant bits: 1.00390625 = 1 + 2^-8 rounds to even (1.0), pi to 3.140625
    np.testing.assert_array_equal(out, np.array([1.0, 1.0, 3.140625], np.float32))


def test_float64_and_python_lists_become_float32():
    assert ts.tensor(np.arange(4, dtype=np.float64)).dtype is ts.float32
    t = ts.tensor([[1.0, 2.0], [3.0, 4.5]])
    assert t.dtype is ts.float32
    assert t.tolist() == [[1.0, 2.0], [3.0, 4.5]]
    assert ts.tensor(2.5).shape == ()  # 0-d
    assert ts.tensor(2.5).item() == 2.5


def test_int32_maps_to_the_rust_i32():
    # R6.1: integer data becomes int32 and comes back as int32 (test_model_ops.py has the rest).
    t = ts.tensor(np.arange(3, dtype=np.int32))
    assert t.dtype is ts.int32 and t.dtype.itemsize == 4 and not t.dtype.is_floating_point
    assert t.numpy().dtype == np.int32
    assert ts.zeros(3, dtype=ts.int32).tolist() == [0, 0, 0]
    assert ts.zeros(3, dtype="int32").dtype is ts.int32


def test_non_contiguous_read_only_and_0d_arrays_are_copied_correctly():
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    view = base[:, ::2].T  # non-contiguous, transposed
    np.testing.assert_array_equal(ts.tensor(view).numpy(), view)
    ro = base.copy()
    ro.setflags(write=False)
    np.testing.assert_array_equal(ts.tensor(ro).numpy(), ro)
    big_endian = base.astype(">f4")
    np.testing.assert_array_equal(ts.tensor(big_endian).numpy(), base)
    zero_d = np.array(3.0, np.float32)
    t = ts.tensor(zero_d)
    assert t.shape == () and t.numpy() == zero_d
    empty = ts.tensor(np.zeros((0, 3), np.float32))
    assert empty.shape == (0, 3) and empty.numpy().shape == (0, 3)
    # tagstream.tensor copies (torch semantics): the source may change afterwards
    # (from_numpy shares memory instead: test_dlpack.py)
    src = np.ones(4, np.float32)
    t = ts.tensor(src)
    src[:] = 7
    np.testing.assert_array_equal(t.numpy(), np.ones(4, np.float32))


def _erf(x):
    return np.vectorize(math.erf)(x)


OPS = {
    "relu": lambda x: np.maximum(x, 0),
    "silu": lambda x: x / (1 + np.exp(-x)),
    "gelu": lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))),
    "exp": np.exp,
    "softmax": lambda x: np.exp(x - x.max(-1, keepdims=True))
    / np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True),
}


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("dtype", [ts.float32, ts.float16])
def test_unary_ops_match_numpy(name, dtype):
    x = np.random.default_rng(1).standard_normal((4, 33)).astype(np.float32)
    t = ts.tensor(x, dtype=dtype)
    xr = t.numpy().astype(np.float64)  # the rounded input
    want = OPS[name](xr)
    tol = 1e-5 if dtype is ts.float32 else 2e-3
    for got in (getattr(ts, name)(t), getattr(t, name)(), getattr(ts.ops, name)(t)):
        assert got.dtype is dtype and got.shape == t.shape
        np.testing.assert_allclose(got.numpy().astype(np.float64), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [ts.float32, ts.float16, ts.bfloat16])
def test_binary_ops_and_operators_match_numpy(dtype):
    rng = np.random.default_rng(2)
    a_np = rng.standard_normal((5, 7)).astype(np.float32)
    b_np = rng.standard_normal((5, 7)).astype(np.float32) + 3  # away from 0 for div
    a, b = ts.tensor(a_np, dtype=dtype), ts.tensor(b_np, dtype=dtype)
    ar, br = a.numpy().astype(np.float64), b.numpy().astype(np.float64)
    tol = {ts.float32: 1e-6, ts.float16: 1e-3, ts.bfloat16: 8e-3}[dtype]
    cases = {
        "add": (ar + br, [ts.add(a, b), a + b, a.add(b)]),
        "sub": (ar - br, [ts.sub(a, b), a - b, a.sub(b)]),
        "mul": (ar * br, [ts.mul(a, b), a * b, a.mul(b)]),
        "div": (ar / br, [ts.div(a, b), a / b, a.div(b)]),
    }
    for name, (want, gots) in cases.items():
        for got in gots:
            assert got.dtype is dtype, name
            np.testing.assert_allclose(got.numpy(), want, rtol=tol, atol=tol, err_msg=name)
    # numbers broadcast, on either side
    np.testing.assert_allclose((a + 2).numpy(), ar + 2, rtol=tol, atol=tol)
    np.testing.assert_allclose((2 - a).numpy(), 2 - ar, rtol=tol, atol=tol)
    np.testing.assert_allclose((a * 0.5).numpy(), ar * 0.5, rtol=tol, atol=tol)
    np.testing.assert_allclose((1 / b).numpy(), 1 / br, rtol=tol, atol=tol)
    np.testing.assert_allclose((-a).numpy(), -ar, rtol=tol, atol=tol)
    # numpy arrays take the tensor's dtype, on either side
    mixed = b_np + a
    assert isinstance(mixed, ts.Tensor) and mixed.dtype is dtype
    np.testing.assert_allclose(mixed.numpy(), ar + br, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [ts.float32, ts.float16])
def test_matmul_mm_and_at_match_numpy(dtype):
    rng = np.random.default_rng(3)
    a_np = rng.standard_normal((6, 8)).astype(np.float32)
    b_np = rng.standard_normal((8, 5)).astype(np.float32)
    a, b = ts.tensor(a_np, dtype=dtype), ts.tensor(b_np, dtype=dtype)
    want = a.numpy().astype(np.float64) @ b.numpy().astype(np.float64)
    tol = 1e-5 if dtype is ts.float32 else 5e-3
    for got in (a @ b, ts.mm(a, b), ts.matmul(a, b), a.matmul(b), a.mm(b)):
        assert got.shape == (6, 5) and got.dtype is dtype
        np.testing.assert_allclose(got.numpy(), want, rtol=tol, atol=tol)
    batch_a = ts.tensor(rng.standard_normal((3, 6, 8)).astype(np.float32))
    got = batch_a @ ts.tensor(b_np)
    np.testing.assert_allclose(got.numpy(), batch_a.numpy() @ b_np, rtol=1e-5, atol=1e-5)
    with pytest.raises(ts.ShapeMismatchError, match="mm"):
        ts.mm(batch_a, ts.tensor(b_np))


def test_rms_norm_and_to_dtype_match_numpy():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 16)).astype(np.float32)
    w = rng.standard_normal(16).astype(np.float32)
    got = ts.rms_norm(ts.tensor(x), ts.tensor(w), eps=1e-5).numpy()
    want = x / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + 1e-5) * w
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    h = ts.to_dtype(ts.tensor(x), ts.float16)
    assert h.dtype is ts.float16
    np.testing.assert_array_equal(h.numpy(), x.astype(np.float16))
    assert ts.tensor(x).to(ts.float16).dtype is ts.float16
    assert ts.tensor(x).half().float().dtype is ts.float32


def test_softmax_over_any_dim_and_out_of_range_is_refused():
    t = ts.randn(3, 4, seed=1)
    assert ts.softmax(t, dim=1).shape == (3, 4)
    np.testing.assert_array_equal(ts.softmax(t, dim=-1).numpy(), t.softmax().numpy())
    np.testing.assert_allclose(ts.softmax(t, dim=0).numpy().sum(axis=0), 1.0, rtol=1e-5)
    with pytest.raises(ts.ShapeMismatchError, match="out of range"):
        ts.softmax(t, dim=2)


def test_devices_cpu_works_and_cuda_is_no_gpu():
    t = ts.randn(2, 2, seed=1)
    assert ts.cuda_is_available() is False
    assert t.device == "cpu" and t.is_cuda is False
    assert t.to("cpu").device == "cpu" and t.cpu().device == "cpu"
    assert t.npu().device == "cpu"  # npu(): the default accelerator, the CPU without CUDA
    assert ts.zeros(2, device="cpu").device == "cpu"
    assert t.__dlpack_device__() == (1, 0)
    for move in (lambda: t.cuda(), lambda: t.to("cuda:0"), lambda: ts.randn(2, device="cuda"),
                 lambda: ts.tensor([1.0], device="cuda")):
        with pytest.raises(ts.NoGpuError, match="no GPU"):
            move()
    with pytest.raises(ValueError, match="unknown device"):
        t.to("tpu")


def test_repr_looks_like_torch():
    assert repr(ts.tensor([1.0, 2.0])) == "tensor([1., 2.])"
    r = repr(ts.tensor([1.0, 2.0], dtype=ts.float16))
    assert r == "tensor([1., 2.], dtype=tagstream.float16)"
    big = repr(ts.zeros(100, 100))
    assert "..." in big and len(big) < 2000
