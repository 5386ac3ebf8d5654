"""The first real-model ops (issue 13): broadcasting `+ - * /` (R6.11), `add_scalar` /
`mul_scalar`, `sum` / `mean` / `max` over one dim, the shape ops (`reshape`, `unsqueeze`,
`transpose`, `narrow`, `expand`, `cat`) and softmax over any dim, vs numpy, eager and compiled."""

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


@pytest.mark.parametrize("dtype", [ts.float32, ts.float16, ts.bfloat16])
def test_shape_ops_match_numpy_exactly(dtype):
    x = ts.tensor(np.random.default_rng(7).standard_normal((2, 3, 4)).astype(np.float32),
                  dtype=dtype)
    xr = x.numpy()
    cases = [
        (x.reshape(6, 4), xr.reshape(6, 4)),
        (x.reshape((4, -1)), xr.reshape(4, -1)),
        (x.view(-1), xr.reshape(-1)),
        (x.unsqueeze(0), xr[None]),
        (x.unsqueeze(-1), xr[..., None]),
        (x.transpose(0, 2), xr.transpose(2, 1, 0)),
        (x.transpose(-1, -2), xr.swapaxes(-1, -2)),
        (x.narrow(1, 1, 2), xr[:, 1:3]),
        (x.narrow(-1, -3, 2), xr[..., 1:3]),
        (x.narrow(1, 0, 2).expand(5, 2, 2, 4), np.broadcast_to(xr[:, 0:2], (5, 2, 2, 4))),
        (x.narrow(2, 0, 1).expand(-1, -1, 3), np.broadcast_to(xr[..., :1], (2, 3, 3))),
        (ts.cat([x, x.narrow(1, 0, 1), x], 1), np.concatenate([xr, xr[:, :1], xr], 1)),
        (ts.cat([x, x], dim=-1), np.concatenate([xr, xr], -1)),
    ]
    for got, want in cases:
        assert got.shape == want.shape and got.dtype is dtype
        np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize("dtype", [ts.float32, ts.float16, ts.bfloat16])
def test_softmax_over_each_dim(dtype):
    x = ts.tensor(np.random.default_rng(8).standard_normal((3, 5, 7)).astype(np.float32),
                  dtype=dtype)
    xr = x.numpy().astype(np.float64)
    for dim in (0, 1, 2, -1, -3):
        e = np.exp(xr - xr.max(axis=dim, keepdims=True))
        want = e / e.sum(axis=dim, keepdims=True)
        for got in (x.softmax(dim), ts.softmax(x, dim), x.softmax_dim(dim)):
            np.testing.assert_allclose(got.numpy().astype(np.float64), want,
                                       rtol=TOL[dtype], atol=TOL[dtype])
    np.testing.assert_array_equal(x.softmax(2).numpy(), x.softmax().numpy())


def test_shape_op_errors_are_shape_mismatch():
    x = ts.zeros(2, 3)
    for call in (lambda: x.reshape(4), lambda: x.transpose(0, 2), lambda: x.unsqueeze(3),
                 lambda: x.narrow(1, 2, 2), lambda: x.expand(3, 3), lambda: ts.cat([], 0),
                 lambda: ts.cat([x, ts.zeros(3, 3)], 1), lambda: x.softmax(2)):
        with pytest.raises(ts.ShapeMismatchError):
            call()
    with pytest.raises(ValueError):
        x.reshape(-1, -1)


def test_shape_ops_replay_with_eager_bits():
    def model(a, b):
        h = a.reshape(4, 2, 8).transpose(0, 1)  # [2, 4, 8]
        top = h.narrow(2, 0, 4).softmax(0)
        return ts.cat([top, b.unsqueeze(0).expand(2, 4, 4)], -1), h.reshape(-1)

    a, b = ts.randn(8, 8, seed=3), ts.randn(4, 4, seed=4)
    want = [t.numpy() for t in model(a, b)]
    compiled = ts.compile(model, mode="reduce-overhead")
    for _ in range(3):
        got = compiled(a, b)
        assert [g.shape for g in got] == [(2, 4, 8), (64,)]
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g.numpy(), w)
    assert compiled.stats()["replays"] == 2
