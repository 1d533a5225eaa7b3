"""IDX files, the format of MNIST and Fashion-MNIST (LeCun et al., http://yann.lecun.com/exdb/mnist/).

Layout (all integers big-endian):

    bytes 0-1   0x00 0x00                 magic
    byte  2     dtype code                0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    byte  3     ndim
    then        ndim × uint32             the dimensions
    then        prod(dims) items          row-major payload

The reader checks each of these and parses the payload with one `np.frombuffer`
(no per-item Python). A file ending in `.gz` is decompressed first.
"""
from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from normlab._io import atomic_write_bytes, naming

# IDX dtype code -> big-endian numpy dtype
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}


class DataError(Exception):
    """Base of normlab's data errors: each message names the file and the fix."""


class CorruptFileError(DataError, ValueError):
    """A data file is unreadable, truncated, or not what it claims to be."""


def decompress(data: bytes, name: str | os.PathLike = "<bytes>") -> bytes:
    """Gunzip `data`, naming `name` in the error when the stream is damaged."""
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as e:  # truncated stream, bad header, bad CRC
        raise CorruptFileError(
            f"{name}: not a valid gzip file ({e}); it is truncated or damaged. "
            "Delete it and fetch it again (download=True, or `normlab data fetch`)."
        ) from None


def read_bytes(path: str | os.PathLike) -> bytes:
    """The file's content, decompressed when its name ends in `.gz`."""
    with naming(path):
        data = Path(path).read_bytes()
    return decompress(data, path) if Path(path).suffix == ".gz" else data


def parse_idx(data: bytes, name: str = "<bytes>") -> torch.Tensor:
    """Parse the bytes of an IDX file into a tensor of its dtype and shape."""
    if len(data) < 4:
        raise CorruptFileError(f"{name}: {len(data)} bytes is too short for an IDX header (4 bytes at least)")
    zero0, zero1, code, ndim = data[:4]
    if zero0 != 0 or zero1 != 0:
        raise CorruptFileError(
            f"{name}: wrong magic number 0x{data[:4].hex()}; an IDX file starts with 0x0000 "
            "then its dtype code and rank. Is this really an MNIST-style IDX file?"
        )
    if code not in IDX_DTYPES:
        valid = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise CorruptFileError(f"{name}: unknown IDX dtype code 0x{code:02X}; valid codes: {valid}")
    if ndim == 0:
        raise CorruptFileError(f"{name}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise CorruptFileError(f"{name}: truncated header: {ndim} dimensions need {header} bytes, file has {len(data)}")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = header + math.prod(dims) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise CorruptFileError(
            f"{name}: {what}: header says {'×'.join(map(str, dims))} items of {dtype.name} "
            f"({expected} bytes with the header), file has {len(data)} bytes"
        )
    array = np.frombuffer(data, dtype, offset=header).reshape(dims)
    # Native byte order; torch.from_numpy needs a writable array, astype copies once.
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """Read an IDX file (raw or `.gz`) into a tensor, validating the header and length."""
    return parse_idx(read_bytes(path), name=str(path))


def idx_bytes(tensor: torch.Tensor) -> bytes:
    """The IDX encoding of a tensor (used to write tiny fixtures and converted data)."""
    array = tensor.detach().cpu().numpy()
    code = _CODES.get(array.dtype)
    if code is None:
        raise TypeError(f"IDX cannot store dtype {array.dtype}; use one of uint8, int8, int16, int32, float32, float64")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.astype(IDX_DTYPES[code], copy=False).tobytes()


def write_idx(path: str | os.PathLike, tensor: torch.Tensor) -> Path:
    """Write `tensor` as an IDX file (atomically), gzipped when `path` ends in `.gz`."""
    path = Path(path)
    data = idx_bytes(tensor)
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    return atomic_write_bytes(path, data)
