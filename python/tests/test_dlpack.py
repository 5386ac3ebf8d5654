"""numpy and DLPack both ways: CPU memory is shared, not copied (design.md §1: exports are
read-only; from_numpy/from_dlpack may share memory), and everything else still converts."""

import gc
import weakref

import numpy as np
import pytest

import tagstream as ts


def _addr(arr):
    return arr.__array_interface__["data"][0]


@pytest.mark.parametrize("dtype,np_dtype", [(ts.float32, np.float32), (ts.float16, np.float16)])
def test_numpy_reads_a_tensor_through_dlpack(dtype, np_dtype):
    t = ts.randn(3, 4, dtype=dtype, seed=2)
    arr = np.from_dlpack(t)
    assert arr.dtype == np_dtype and arr.shape == (3, 4)
    np.testing.assert_array_equal(arr, t.numpy())
    # one buffer, read-only on both paths (numpy >= 2.1 reads DLPack's read-only flag)
    assert _addr(arr) == _addr(t.numpy())
    assert not arr.flags.writeable


@pytest.mark.parametrize("dtype", [ts.float32, ts.float16, ts.int32])
def test_numpy_views_the_tensor_read_only_and_keeps_it_alive(dtype):
    t = ts.tensor(np.arange(12).reshape(3, 4), dtype=dtype)
    a, b = t.numpy(), np.asarray(t)
    assert _addr(a) == _addr(b), "both views of the tensor's own buffer"
    assert np.shares_memory(a, np.asarray(t, copy=False))
    assert not a.flags.writeable
    with pytest.raises(ValueError):
        a.setflags(write=True)
    with pytest.raises(ValueError):
        a[0, 0] = 5
    del t, b
    gc.collect()
    np.testing.assert_array_equal(a, np.arange(12).reshape(3, 4))  # the view holds the buffer
    fresh = np.asarray(ts.tensor([1.0, 2.0]), copy=True)
    assert fresh.flags.writeable


def test_views_of_computed_tensors_and_copies_where_numpy_cannot_view():
    x = ts.randn(64, 64, seed=3)
    y = x @ x  # the view waits for the matmul
    np.testing.assert_allclose(y.numpy(), x.numpy() @ x.numpy(), rtol=1e-5, atol=1e-4)
    bf = ts.tensor([1.0, 2.5], dtype=ts.bfloat16)
    out = bf.numpy()  # numpy has no bfloat16: a float32 copy
    assert out.dtype == np.float32 and out.tolist() == [1.0, 2.5] and not out.flags.writeable
    with pytest.raises(ValueError):
        np.asarray(bf, copy=False)


def test_from_numpy_shares_memory_and_keeps_the_array_alive():
    for dtype in (np.float32, np.float16, np.int32):
        src = np.arange(6, dtype=dtype).reshape(2, 3)
        t = ts.from_numpy(src)
        assert _addr(t.numpy()) == _addr(src), f"{dtype}: no copy"
        assert t.dtype.name == np.dtype(dtype).name
    src = np.ones(4, np.float32)
    alive = weakref.ref(src)
    t = ts.from_numpy(src)
    y = t + 1.0
    del src
    gc.collect()
    assert alive() is not None, "the tensor keeps the array"
    np.testing.assert_array_equal(y.numpy(), np.full(4, 2.0, np.float32))
    del t, y
    gc.collect()
    assert alive() is None, "released with the tensor"


def test_from_numpy_copies_what_it_cannot_share():
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    cases = {
        "strided": base[:, ::2],
        "big-endian": base.astype(">f4"),
        "float64": base.astype(np.float64),
        "int64": base.astype(np.int64),
        "misaligned": np.frombuffer(b"\0" + base.tobytes(), np.float32, 24, 1).reshape(4, 6),
    }
    for name, arr in cases.items():
        t = ts.from_numpy(arr)
        np.testing.assert_array_equal(t.numpy(), np.asarray(arr, np.float32 if t.dtype is ts.float32 else np.int32))
        assert _addr(t.numpy()) != _addr(arr), name
    zero_d = ts.from_numpy(np.array(3.0, np.float32))
    assert zero_d.shape == () and zero_d.item() == 3.0
    assert ts.from_numpy(np.zeros((0, 3), np.float32)).shape == (0, 3)


def test_int32_both_ways_through_dlpack():
    # R6.1: int32 indices keep their dtype and values through DLPack, in and out.
    src = np.array([[0, -3, 7], [1 << 24, -(1 << 24), 5]], dtype=np.int32)
    t = ts.from_dlpack(src)
    assert t.dtype is ts.int32
    back = np.from_dlpack(t)
    assert back.dtype == np.int32
    np.testing.assert_array_equal(back, src)
    assert _addr(back) == _addr(src), "no copy either way"
    _, idx = ts.tensor([[0.5, 2.0, 1.0]]).topk(2)
    np.testing.assert_array_equal(np.from_dlpack(idx), np.array([[1, 2]], dtype=np.int32))


def test_capsule_protocol_arguments():
    t = ts.randn(2, seed=3)
    assert type(t.__dlpack__()).__name__ == "PyCapsule"
    assert type(t.__dlpack__(max_version=(1, 0))).__name__ == "PyCapsule"
    assert type(t.__dlpack__(copy=False, dl_device=(1, 0))).__name__ == "PyCapsule"
    assert type(t.__dlpack__(copy=True)).__name__ == "PyCapsule"
    with pytest.raises(BufferError):
        t.__dlpack__(dl_device=(2, 0))
    with pytest.raises(TypeError):
        t.__dlpack__(max_version="1.0")
    copied = np.from_dlpack(t, copy=True)
    assert _addr(copied) != _addr(t.numpy()) and copied.flags.writeable


def test_from_dlpack_shares_a_numpy_array_and_passes_a_tensor_through():
    src = np.arange(6, dtype=np.float16).reshape(2, 3)
    alive = weakref.ref(src)
    t = ts.from_dlpack(src)
    assert t.dtype is ts.float16
    np.testing.assert_array_equal(t.numpy(), src)
    assert _addr(t.numpy()) == _addr(src)
    del src
    gc.collect()
    assert alive() is not None, "the DLPack owner keeps the array"
    del t
    gc.collect()
    assert alive() is None, "the producer's deleter ran with the tensor"
    x = ts.tensor([1.0])
    assert ts.from_dlpack(x) is x


def test_from_dlpack_copies_and_converts_what_it_cannot_share():
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = ts.from_dlpack(base.T)  # strided: gathered into a fresh buffer
    np.testing.assert_array_equal(t.numpy(), base.T)
    assert _addr(t.numpy()) != _addr(base)
    rev = ts.from_dlpack(base[::-1, ::2])  # negative strides
    np.testing.assert_array_equal(rev.numpy(), base[::-1, ::2])
    f64 = ts.from_dlpack(base.astype(np.float64))
    assert f64.dtype is ts.float32 and f64.tolist() == base.tolist()
    i64 = ts.from_dlpack(np.arange(3, dtype=np.int64))
    assert i64.dtype is ts.int32 and i64.tolist() == [0, 1, 2]
    with pytest.raises(TypeError):
        ts.from_dlpack(np.array([True, False]))  # as ts.tensor: no bool dtype
    assert ts.from_dlpack(np.array(2.5, np.float32)).item() == 2.5
    assert ts.from_dlpack(np.zeros((0, 2), np.float32)).shape == (0, 2)
    with pytest.raises(TypeError):
        ts.from_dlpack(np.array([1 + 2j]))


def test_from_dlpack_of_a_gpu_producer_is_no_gpu():
    class OnCuda:
        def __dlpack_device__(self):
            return (2, 0)

        def __dlpack__(self, **kwargs):
            raise AssertionError("must not be read")

    with pytest.raises(ts.NoGpuError):
        ts.from_dlpack(OnCuda())


def test_torch_shares_memory_both_ways():
    torch = pytest.importorskip("torch", reason="torch is not installed (CI has none)")
    t = ts.randn(4, 5, dtype=ts.float16, seed=4)
    tt = torch.from_dlpack(t)
    assert tt.dtype == torch.float16
    np.testing.assert_array_equal(tt.numpy(), t.numpy())
    assert tt.data_ptr() == _addr(t.numpy()), "torch.from_dlpack(t) shares memory"
    src = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    back = ts.from_dlpack(src)
    np.testing.assert_array_equal(back.numpy(), np.arange(6, dtype=np.float32).reshape(2, 3))
    assert _addr(back.numpy()) == src.data_ptr(), "tagstream.from_dlpack(torch) shares memory"
    bf = torch.tensor([1.0, 2.5], dtype=torch.bfloat16)
    tb = ts.from_dlpack(bf)
    assert tb.dtype is ts.bfloat16 and tb.tolist() == [1.0, 2.5]
    assert torch.from_dlpack(tb).data_ptr() == bf.data_ptr(), "bf16 round trip without a copy"
    i = torch.tensor([[3, -1]], dtype=torch.int32)
    assert torch.equal(torch.from_dlpack(ts.from_dlpack(i)), i)
    strided = torch.arange(12.0).reshape(3, 4).t()
    np.testing.assert_array_equal(ts.from_dlpack(strided).numpy(), strided.numpy())
    keep = torch.ones(3)
    held = ts.from_dlpack(keep) * 2.0
    del keep
    gc.collect()
    assert held.tolist() == [2.0, 2.0, 2.0]


def test_torch_cuda_round_trip():
    torch = pytest.importorskip("torch", reason="torch is not installed (CI has none)")
    if not (torch.cuda.is_available() and ts.cuda_is_available()):
        pytest.skip("needs CUDA in both torch and tagstream")
    t = ts.randn(4, 4, seed=5).cuda()
    np.testing.assert_array_equal(torch.from_dlpack(t).cpu().numpy(), t.cpu().numpy())


def test_an_owner_released_on_a_stream_worker_is_freed_without_the_gil():
    # R3.8: the last reader runs on a worker after every Python handle is gone, so the worker
    # drops the owner (the array) without the GIL; PyO3 defers the decref to the next call.
    src = np.full((128, 128), 0.5, np.float32)
    alive = weakref.ref(src)
    t = ts.from_numpy(src)
    with ts.scope.npu_stream_switch("zc-worker-drop"):
        y = t
        for _ in range(4):
            y = y @ t
    del t, src
    gc.collect()
    np.testing.assert_allclose(y.numpy()[0, :2], [0.5**5 * 128**4] * 2, rtol=1e-5)
    del y
    for _ in range(1000):  # bounded: each call lets PyO3 run the deferred decrefs
        ts.synchronize()
        gc.collect()
        if alive() is None:
            break
    assert alive() is None
