"""The first real-model ops (issue 13): broadcasting `+ - * /` (R6.11), `add_scalar` /
`mul_scalar`, and `sum` / `mean` / `max` over one dim, vs numpy, eager and compiled."""

import numpy as np
import pytest

import tagstream as ts

TOL = {ts.float32: 1e-5, ts.float16: 2e-3, ts.bfloat16: 1.6e-2}


@pytest.mark.parametrize("dtype", [ts.float32, ts.float16, ts.bfloat16])
def test_binary_ops_broadcast_like_numpy(dtype):
    rng = np.random.default_rng(5)
    a = ts.tensor(rng.standard_normal((4, 1, 6)).astype(np.float32), dtype=dtype)
    b = ts.tensor(rng.standard_normal((3, 1)).astype(np.float32) + 3, dtype=dtype)
    ar, br = a.numpy().astype(np.float64), b.numpy().astype(np.float64)
    for got, want in [(a + b, ar + br), (b - a, br - ar), (ts.mul(a, b), ar * br),
                      (a.div(b), ar / br)]:
        assert got.shape == (4, 3, 6) and got.dtype is dtype
        np.testing.assert_allclose(got.numpy().astype(np.float64), want,
                                   rtol=TOL[dtype], atol=TOL[dtype])
    with pytest.raises(ts.ShapeMismatchError, match=r"\[4, 1, 6\].*\[5\]"):
        a + ts.zeros(5, dtype=dtype)


@pytest.mark.parametrize("dtype", [ts.float32, ts.float16, ts.bfloat16])
def test_scalar_ops_compute_in_float32_and_round_once(dtype):
    x = ts.tensor(np.linspace(-3, 3, 50, dtype=np.float32), dtype=dtype)
    xr = x.numpy().astype(np.float32)
    want_add = ts.tensor(xr + np.float32(0.1), dtype=dtype).numpy()
    want_mul = ts.tensor(xr * np.float32(1 / 3), dtype=dtype).numpy()
    np.testing.assert_array_equal(x.add_scalar(0.1).numpy(), want_add)
    np.testing.assert_array_equal(x.mul_scalar(1 / 3).numpy(), want_mul)


@pytest.mark.parametrize("dtype", [ts.float32, ts.float16, ts.bfloat16])
@pytest.mark.parametrize("name", ["sum", "mean", "max"])
def test_reductions_match_numpy(name, dtype):
    x = ts.tensor(np.random.default_rng(6).standard_normal((3, 4, 5)).astype(np.float32),
                  dtype=dtype)
    xr = x.numpy().astype(np.float64)
    for dim in (0, 1, 2, -1):
        for keepdim in (False, True):
            want = getattr(xr, name)(axis=dim, keepdims=keepdim)
            for got in (getattr(x, name)(dim, keepdim=keepdim),
                        getattr(ts, name)(x, dim, keepdim=keepdim)):
                assert got.shape == want.shape and got.dtype is dtype
                np.testing.assert_allclose(got.numpy().astype(np.float64), want,
                                           rtol=TOL[dtype], atol=4 * TOL[dtype])
    with pytest.raises(ts.ShapeMismatchError, match="out of range"):
        getattr(x, name)(3)
    with pytest.raises(ts.ShapeMismatchError, match="out of range"):
        getattr(x, name)(-4)


def test_new_ops_replay_with_eager_bits():
    def model(a, b):
        h = (a + b).mul_scalar(0.5).add_scalar(1.0)
        return h.sum(-1, keepdim=True), h.mean(0), h.max(1)

    a, b = ts.randn(8, 16, seed=1), ts.randn(16, seed=2)
    want = [t.numpy() for t in model(a, b)]
    compiled = ts.compile(model, mode="reduce-overhead")
    for _ in range(3):
        for got, w in zip(compiled(a, b), want):
            np.testing.assert_array_equal(got.numpy(), w)
    assert compiled.stats()["replays"] == 2
