"""DLPack both ways (through numpy on the CPU; copies, see README.md)."""

import numpy as np
import pytest

import tagstream as ts


@pytest.mark.parametrize("dtype,np_dtype", [(ts.float32, np.float32), (ts.float16, np.float16)])
def test_numpy_reads_a_tensor_through_dlpack(dtype, np_dtype):
    t = ts.randn(3, 4, dtype=dtype, seed=2)
    arr = np.from_dlpack(t)
    assert arr.dtype == np_dtype and arr.shape == (3, 4)
    np.testing.assert_array_equal(arr, t.numpy())


def test_int32_both_ways_through_dlpack():
    # R6.1: int32 indices keep their dtype and values through DLPack, in and out.
    src = np.array([[0, -3, 7], [1 << 24, -(1 << 24), 5]], dtype=np.int32)
    t = ts.from_dlpack(src)
    assert t.dtype is ts.int32
    back = np.from_dlpack(t)
    assert back.dtype == np.int32
    np.testing.assert_array_equal(back, src)
    _, idx = ts.tensor([[0.5, 2.0, 1.0]]).topk(2)
    np.testing.assert_array_equal(np.from_dlpack(idx), np.array([[1, 2]], dtype=np.int32))


def test_capsule_protocol_arguments():
    t = ts.randn(2, seed=3)
    assert type(t.__dlpack__()).__name__ == "PyCapsule"
    assert type(t.__dlpack__(max_version=(1, 0))).__name__ == "PyCapsule"
    with pytest.raises(BufferError):
        t.__dlpack__(dl_device=(2, 0))
    with pytest.raises(BufferError):
        t.__dlpack__(copy=False)


def test_from_dlpack_copies_a_numpy_array_and_passes_a_tensor_through():
    src = np.arange(6, dtype=np.float16).reshape(2, 3)
    t = ts.from_dlpack(src)
    assert t.dtype is ts.float16
    np.testing.assert_array_equal(t.numpy(), src)
    assert ts.from_dlpack(t) is t


def test_from_dlpack_of_a_gpu_producer_is_no_gpu():
    class OnCuda:
        def __dlpack_device__(self):
            return (2, 0)

        def __dlpack__(self, **kwargs):
            raise AssertionError("must not be read")

    with pytest.raises(ts.NoGpuError):
        ts.from_dlpack(OnCuda())


def test_torch_round_trip():
    torch = pytest.importorskip("torch", reason="torch is not installed (CI has none)")
    t = ts.randn(4, 5, dtype=ts.float16, seed=4)
    tt = torch.from_dlpack(t)
    assert tt.dtype == torch.float16
    np.testing.assert_array_equal(tt.numpy(), t.numpy())
    back = ts.from_dlpack(torch.arange(6, dtype=torch.float32).reshape(2, 3))
    np.testing.assert_array_equal(back.numpy(), np.arange(6, dtype=np.float32).reshape(2, 3))
    bf = ts.from_dlpack(torch.tensor([1.0, 2.5], dtype=torch.bfloat16))
    assert bf.dtype is ts.bfloat16 and bf.tolist() == [1.0, 2.5]


def test_torch_cuda_round_trip():
    torch = pytest.importorskip("torch", reason="torch is not installed (CI has none)")
    if not (torch.cuda.is_available() and ts.cuda_is_available()):
        pytest.skip("needs CUDA in both torch and tagstream")
    t = ts.randn(4, 4, seed=5).cuda()
    np.testing.assert_array_equal(torch.from_dlpack(t).cpu().numpy(), t.cpu().numpy())
