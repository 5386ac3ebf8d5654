"""The first real-model ops (issue 13): broadcasting `+ - * /` (R6.11), `add_scalar` /
`mul_scalar`, `sum` / `mean` / `max` over one dim, the shape ops (`reshape`, `unsqueeze`,
`transpose`, `narrow`, `expand`, `cat`) and softmax over any dim; int32 (R6.1) and the index ops
`topk` / `gather` / `scatter` / `index_select` (R6.12, issue 14); vs numpy, eager and compiled."""

import numpy as np
import pytest

import tagstream as ts
import tagstream.torch

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


# ---- int32 (R6.1) ----------------------------------------------------------------------------


def test_int32_round_trips_through_numpy_lists_and_items():
    src = np.array([[0, -1, 2], [1 << 24, -(1 << 24), 123456]], dtype=np.int32)
    for t in (ts.tensor(src), ts.from_numpy(src), ts.tensor(src.astype(np.int64)),
              ts.tensor(src.astype(np.float32), dtype=ts.int32), ts.tensor(src.tolist()),
              ts.tensor(src.T.copy().T)):
        assert t.dtype is ts.int32 and t.shape == (2, 3)
        out = t.numpy()
        assert out.dtype == np.int32 and not out.flags.writeable
        np.testing.assert_array_equal(out, src)
        assert np.asarray(t).dtype == np.int32
    t = ts.tensor(src)
    assert t.tolist() == src.tolist() and all(type(v) is int for v in t.tolist()[1])
    assert ts.tensor(-7).item() == -7 and type(ts.tensor(-7).item()) is int
    assert ts.tensor([3], dtype="int32").item() == 3
    assert ts.tensor(np.arange(4, dtype=np.uint8)).dtype is ts.int32
    assert ts.full([2], 5, dtype=ts.int32).tolist() == [5, 5]
    assert "dtype=tagstream.int32" in repr(t)
    # A non-contiguous int32 view is copied in row-major order.
    np.testing.assert_array_equal(ts.tensor(src[:, ::2]).numpy(), src[:, ::2])


@pytest.mark.parametrize("bad", [1.5, float("nan"), float("inf"), (1 << 24) + 1, 1 << 31,
                                 -(1 << 31) - 2, 1 << 40])
def test_int32_refuses_values_it_cannot_hold_exactly(bad):
    # E20: not an integer, out of range, or not exact in float32 (the Rust API moves f32).
    with pytest.raises(ts.InvalidValueError, match="int32|i32") as info:
        ts.tensor([0, bad] if isinstance(bad, int) else [0.0, bad], dtype=ts.int32)
    assert isinstance(info.value, ValueError)
    if isinstance(bad, int) and abs(bad) < (1 << 63):
        with pytest.raises(ts.InvalidValueError, match="index 1"):
            ts.tensor(np.array([0, bad], dtype=np.int64))


def test_int32_constructors_and_ops_that_compute_refuse_it():
    i = ts.tensor([1, 2, 3])
    with pytest.raises(ts.InvalidValueError):
        ts.randn(3, dtype=ts.int32)
    with pytest.raises(ts.InvalidValueError):
        ts.full([2], 0.5, dtype=ts.int32)
    for call in (lambda: i + i, lambda: i.exp(), lambda: i.softmax(), lambda: i.sum(0),
                 lambda: i.topk(1), lambda: i.to(ts.float32), lambda: ts.zeros(3).to(ts.int32)):
        with pytest.raises(ts.DTypeMismatchError):
            call()


# ---- index ops (R6.12) -----------------------------------------------------------------------

DTYPES = [ts.float32, ts.float16, ts.bfloat16]


def _data(shape, dtype, seed, levels=None):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    if levels:  # few distinct values: many ties
        x = rng.integers(1, levels + 1, shape).astype(np.float32) / 4
    t = ts.tensor(x, dtype=dtype)
    return t, t.numpy().astype(np.float32)


def _scatter_ref(x, dim, index, src):
    """R6.12: a copy of `x`, `src` written at `index`; the last in row-major order wins."""
    out = x.copy()
    for j in np.ndindex(*index.shape):
        pos = list(j)
        pos[dim] = index[j]
        out[tuple(pos)] = src[j]
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("levels", [None, 3])
def test_topk_matches_a_stable_numpy_sort(dtype, levels):
    x, xr = _data((3, 4, 9), dtype, 11, levels)
    for k in (0, 1, 4, 9):
        want_i = np.argsort(-xr, axis=-1, kind="stable")[..., :k]
        want_v = np.take_along_axis(xr, want_i, axis=-1)
        for values, indices in (x.topk(k), x.topk(k, -1), x.topk(k, dim=2), ts.topk(x, k),
                                ts.torch.topk(x, k, sorted=False)):
            assert values.dtype is dtype and indices.dtype is ts.int32
            assert values.shape == indices.shape == (3, 4, k)
            np.testing.assert_array_equal(indices.numpy(), want_i)
            np.testing.assert_array_equal(values.numpy().astype(np.float32), want_v)


def test_topk_puts_nan_first_and_returns_a_tuple():
    x = ts.tensor([[1.0, float("nan"), 3.0, 3.0, -2.0]])
    result = x.topk(3)
    assert isinstance(result, tuple) and len(result) == 2
    values, indices = result
    assert indices.tolist() == [[1, 2, 3]]
    v = values.numpy()
    assert np.isnan(v[0, 0]) and v[0, 1:].tolist() == [3.0, 3.0]


def test_topk_argument_errors():
    x = ts.zeros(2, 5)
    with pytest.raises(ts.ShapeMismatchError, match="last dim"):
        x.topk(2, dim=0)
    with pytest.raises(ts.ShapeMismatchError, match="last dim"):
        ts.topk(x, 2, -2)
    with pytest.raises(ts.ShapeMismatchError, match="out of range"):
        x.topk(2, dim=2)
    with pytest.raises(ts.ShapeMismatchError):
        x.topk(6)
    with pytest.raises(ts.ShapeMismatchError, match="negative"):
        x.topk(-1)
    with pytest.raises(NotImplementedError, match="largest"):
        x.topk(2, largest=False)


def _index(rng, shape, size):
    return ts.tensor(rng.integers(0, size, shape).astype(np.int32))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gather_matches_take_along_axis(dtype):
    x, xr = _data((3, 4, 5), dtype, 12)
    rng = np.random.default_rng(13)
    for dim in (0, 1, 2, -1, -3):
        shape = [3, 4, 5]
        shape[dim] = 6  # more picks than the dim holds: repeats
        ix = _index(rng, shape, xr.shape[dim])
        want = np.take_along_axis(xr, ix.numpy(), axis=dim)
        for got in (x.gather(dim, ix), ts.gather(x, dim, ix), ts.torch.gather(x, dim, ix)):
            assert got.shape == want.shape and got.dtype is dtype
            np.testing.assert_array_equal(got.numpy().astype(np.float32), want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_scatter_matches_last_writer_wins(dtype):
    x, xr = _data((3, 4, 5), dtype, 14)
    rng = np.random.default_rng(15)
    for dim in (0, 1, 2, -1, -2):
        shape = [3, 4, 5]
        shape[dim] = 7  # more writes than positions: repeated positions
        ix = _index(rng, shape, xr.shape[dim])
        src, srcr = _data(shape, dtype, 16)
        want = _scatter_ref(xr, dim % 3, ix.numpy(), srcr)
        for got in (x.scatter(dim, ix, src), ts.scatter(x, dim, ix, src),
                    ts.torch.scatter(x, dim, ix, src=src)):
            assert got.shape == xr.shape and got.dtype is dtype
            np.testing.assert_array_equal(got.numpy().astype(np.float32), want)
        # torch's scalar form: a number as src or value=.
        want = _scatter_ref(xr, dim % 3, ix.numpy(), np.full(shape, 2.5, np.float32))
        for got in (x.scatter(dim, ix, 2.5), x.scatter(dim, ix, value=2.5)):
            np.testing.assert_array_equal(got.numpy().astype(np.float32), want)
    np.testing.assert_array_equal(x.numpy().astype(np.float32), xr)  # out of place


@pytest.mark.parametrize("dtype", [*DTYPES, ts.int32])
def test_index_select_matches_take(dtype):
    if dtype is ts.int32:
        xr = np.arange(60, dtype=np.int32).reshape(3, 4, 5) - 30
        x = ts.tensor(xr)
    else:
        x, xr = _data((3, 4, 5), dtype, 17)
    rng = np.random.default_rng(18)
    for dim in (0, 1, 2, -1, -2):
        ix = _index(rng, [6], xr.shape[dim])
        want = np.take(xr, ix.numpy(), axis=dim)
        for got in (x.index_select(dim, ix), ts.index_select(x, dim, ix),
                    ts.torch.index_select(x, dim, ix)):
            assert got.shape == want.shape and got.dtype is dtype
            np.testing.assert_array_equal(got.numpy(), want.astype(got.numpy().dtype))


def test_int32_data_moves_through_gather_and_scatter():
    data = ts.tensor(np.arange(12, dtype=np.int32).reshape(3, 4))
    ix = ts.tensor([[3, 0], [1, 1], [2, 0]])
    assert data.gather(1, ix).tolist() == [[3, 0], [5, 5], [10, 8]]
    out = data.scatter(1, ix, ts.tensor([[-1, -2], [-3, -4], [-5, -6]]))
    assert out.dtype is ts.int32
    assert out.tolist() == [[-2, 1, 2, -1], [4, -4, 6, 7], [-6, 9, -5, 11]]


def _bad_index_cases():
    x = ts.randn(3, 4, seed=19)
    src = ts.randn(3, 2, seed=20)
    return [
        ("gather past the end", lambda: x.gather(1, ts.tensor([[0, 4]] * 3))),
        ("gather negative", lambda: x.gather(0, ts.tensor([[0, 1, -1, 2]] * 2))),
        ("scatter past the end", lambda: x.scatter(1, ts.tensor([[1, 9]] * 3), src)),
        ("index_select past the end", lambda: x.index_select(0, ts.tensor([0, 3]))),
        ("index_select negative", lambda: ts.index_select(x, -1, ts.tensor([-1]))),
    ]


@pytest.mark.parametrize("case", range(5))
def test_out_of_range_index_fails_the_result_when_read(case):
    # R6.12/R3.12: found when the op runs; the output (and what is computed from it) is
    # poisoned, other values are not; `synchronize` reports the failure once and clears it.
    name, call = _bad_index_cases()[case]
    ok = ts.randn(4, seed=21)
    bad = call()  # issuing succeeds: the index values are only known when the op runs
    later = bad.add_scalar(1.0)
    with pytest.raises(ts.ExecutionFailedError, match=name.split()[0]):
        bad.numpy()
    with pytest.raises(ts.ExecutionFailedError):
        later.tolist()
    np.testing.assert_array_equal(ok.numpy(), ts.randn(4, seed=21).numpy())
    with pytest.raises(ts.ExecutionFailedError):
        ts.synchronize()
    ts.synchronize()  # cleared


def test_index_ops_replay_with_eager_bits_and_poison_on_replay():
    def model(x, ix, table, tokens):
        values, indices = x.topk(3)
        picked = x.gather(1, indices)
        dense = ts.zeros(4, 8).scatter(-1, indices, values.softmax(-1))
        return values, indices, picked, dense, table.index_select(0, tokens)

    x, table = ts.randn(4, 8, seed=22), ts.randn(10, 6, seed=23)
    ix, tokens = ts.tensor(np.zeros((4, 3), np.int32)), ts.tensor([9, 0, 3])
    want = [t.numpy() for t in model(x, ix, table, tokens)]
    compiled = ts.compile(model, mode="reduce-overhead")
    for _ in range(3):
        got = compiled(x, ix, table, tokens)
        assert [g.dtype for g in got] == [ts.float32, ts.int32, ts.float32, ts.float32,
                                          ts.float32]
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g.numpy(), w)
    assert compiled.stats()["replays"] == 2
    # A replay with a token out of range poisons only the lookup, as eager would (R3.12).
    got = compiled(x, ix, table, ts.tensor([9, 10, 3]))
    assert compiled.stats()["replays"] == 3
    np.testing.assert_array_equal(got[0].numpy(), want[0])
    with pytest.raises(ts.ExecutionFailedError):
        got[4].numpy()
    with pytest.raises(ts.ExecutionFailedError):
        ts.synchronize()


def test_fuzzed_bad_arguments_raise_and_never_crash():
    x = ts.randn(3, 4, seed=24)
    good = ts.tensor([[0, 1]] * 3)
    bads = [None, 1.5, "0", [0, 1], np.array([[0, 1]] * 3), (0,), object(), x, ts.zeros(3, 2),
            ts.zeros(3, 2, dtype=ts.float16), ts.tensor([0, 1]), ts.tensor([[[0]]]),
            ts.tensor([[0, 1]] * 2), ts.tensor(5), 1 << 70, -(1 << 70), float("nan"), True]
    expected = (TypeError, ValueError, OverflowError, IndexError, NotImplementedError,
                ts.TagstreamError)
    calls = 0
    for bad in bads:
        attempts = [
            lambda: x.topk(bad), lambda: x.topk(2, bad), lambda: ts.topk(bad, 2),
            lambda: x.gather(1, bad), lambda: x.gather(bad, good), lambda: ts.gather(bad, 1, good),
            lambda: x.scatter(1, bad, x), lambda: x.scatter(1, good, bad),
            lambda: x.scatter(bad, good, ts.zeros(3, 2)), lambda: x.scatter(1, good, value=bad),
            lambda: x.index_select(0, bad), lambda: x.index_select(bad, ts.tensor([0])),
            lambda: ts.index_select(x, 0, bad), lambda: ts.tensor(bad, dtype=ts.int32),
        ]
        for attempt in attempts:
            calls += 1
            try:
                out = attempt()
            except expected:
                continue
            # A few are valid (a number as scatter's src, an int as topk's k); reading them
            # either works or raises a pinned error, never crashes.
            for t in out if isinstance(out, tuple) else (out,):
                try:
                    t.numpy()
                except ts.TagstreamError:
                    pass
    try:
        ts.synchronize()  # clear failures of valid-looking calls with bad indices
    except ts.ExecutionFailedError:
        pass
    assert calls == len(bads) * 14
    # Wrong dtypes of the index and of src are DTypeMismatchError.
    with pytest.raises(ts.DTypeMismatchError):
        x.gather(1, ts.zeros(3, 2))
    with pytest.raises(ts.DTypeMismatchError):
        x.scatter(1, good, ts.zeros(3, 2, dtype=ts.bfloat16))
    with pytest.raises(ts.ShapeMismatchError):
        x.index_select(0, ts.tensor([[0]]))
    with pytest.raises(TypeError, match="index must be a tagstream.Tensor"):
        x.gather(1, [[0, 1]] * 3)
    with pytest.raises(TypeError, match="exactly one"):
        x.scatter(1, good)
    with pytest.raises(TypeError, match="exactly one"):
        x.scatter(1, good, x, value=1.0)
