import gzip
import os

import hypothesis.strategies as st
import numpy as np
import pytest
import torch
from hypothesis import given, settings

from normlab.data.idx import CorruptFileError, idx_bytes, parse_idx, read_idx, write_idx

DTYPES = [torch.uint8, torch.int8, torch.int16, torch.int32, torch.float32, torch.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip(tmp_path, dtype, suffix):
    x = (torch.arange(2 * 3 * 4) - 7).reshape(2, 3, 4).to(dtype)
    path = write_idx(tmp_path / f"x-idx3-ubyte{suffix}", x)
    y = read_idx(path)
    assert y.dtype == dtype and y.shape == (2, 3, 4)
    torch.testing.assert_close(y, x, rtol=0, atol=0)
    assert gzip.decompress(path.read_bytes())[:2] == b"\0\0" if suffix else path.read_bytes()[:2] == b"\0\0"


@settings(max_examples=40, deadline=None)
@given(dims=st.lists(st.integers(0, 5), min_size=1, max_size=4), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**16))
def test_round_trip_property(dims, dtype, seed):
    x = (torch.randn(dims, generator=torch.Generator().manual_seed(seed)) * 100).to(dtype)
    torch.testing.assert_close(parse_idx(idx_bytes(x)), x, rtol=0, atol=0)


def test_big_endian_header_and_payload():
    # int32, rank 1, 2 items: 256 and -1, written by hand as the format says
    data = bytes([0, 0, 0x0C, 1]) + (2).to_bytes(4, "big") + (256).to_bytes(4, "big") + b"\xff\xff\xff\xff"
    assert parse_idx(data).tolist() == [256, -1]
    assert parse_idx(data).dtype == torch.int32


def test_header_encodes_dtype_rank_and_dims():
    data = idx_bytes(torch.zeros(60000, 28, 28, dtype=torch.uint8))
    assert data[:16] == bytes([0, 0, 8, 3]) + np.array([60000, 28, 28], ">u4").tobytes()


def _good():
    return idx_bytes(torch.arange(12, dtype=torch.uint8).reshape(3, 4))


@pytest.mark.parametrize("mutate, message", [
    (lambda d: b"\x08\x03" + d[2:], "wrong magic number 0x0803"),
    (lambda d: d[:2] + b"\x0a" + d[3:], "unknown IDX dtype code 0x0A"),
    (lambda d: d[:3] + b"\x00" + d[4:], "declares 0 dimensions"),
    (lambda d: d[:-1], "truncated: header says 3×4 items of uint8"),
    (lambda d: d + b"\x00", "has trailing bytes"),
    (lambda d: d[:6], "truncated header: 2 dimensions need 12 bytes, file has 6"),
    (lambda d: d[:3], "too short for an IDX header"),
])
def test_bad_files_are_named_and_explained(tmp_path, mutate, message):
    path = tmp_path / "bad-idx2-ubyte"
    path.write_bytes(mutate(_good()))
    with pytest.raises(CorruptFileError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_truncated_gzip_is_named(tmp_path):
    path = tmp_path / "images-idx3-ubyte.gz"
    data = gzip.compress(idx_bytes(torch.randint(0, 256, (50, 28, 28), dtype=torch.uint8)))
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match="not a valid gzip file") as info:
        read_idx(path)
    assert str(path) in str(info.value) and "fetch it again" in str(info.value)


def test_not_gzip_at_all(tmp_path):
    path = tmp_path / "labels-idx1-ubyte.gz"
    path.write_bytes(_good())
    with pytest.raises(CorruptFileError, match="not a valid gzip file"):
        read_idx(path)


def test_write_is_atomic_and_leaves_no_temporary(tmp_path):
    path = write_idx(tmp_path / "a-idx1-ubyte.gz", torch.zeros(3, dtype=torch.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["a-idx1-ubyte.gz"]
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # as open() would make it, not mkstemp's 0600


def test_unsupported_dtype_is_refused():
    with pytest.raises(TypeError, match="IDX cannot store dtype int64"):
        idx_bytes(torch.zeros(3, dtype=torch.int64))
