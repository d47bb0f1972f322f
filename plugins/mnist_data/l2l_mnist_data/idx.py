"""The IDX file format of the MNIST distribution (big-endian header, then the raw array).

Hand-written rather than taken from idx2numpy (unmaintained since 2020): the format is a
4-byte magic, one big-endian uint32 per dimension, then the data, which numpy reads directly.
"""

from __future__ import annotations

import gzip
import struct
from typing import BinaryIO

import numpy as np

from l2l_plugin.errors import L2LError

GZIP_MAGIC = b"\x1f\x8b"

# The third byte of the magic number names the element type.
_TYPE_CODES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_OF_KIND = {(dtype.kind, dtype.itemsize): code for code, dtype in _TYPE_CODES.items()}


class IdxFormatError(L2LError, ValueError):
    """The bytes are not a well-formed IDX file."""


def decode_idx(raw: bytes) -> np.ndarray:
    """The array stored in the IDX bytes ``raw`` (gzipped or not), in native byte order."""
    if raw[:2] == GZIP_MAGIC:
        # Sniffed rather than trusted from the file name, so a renamed file still loads.
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise IdxFormatError("not an IDX file: the magic number must start with two zero bytes")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _TYPE_CODES:
        raise IdxFormatError(f"unknown IDX element type 0x{type_code:02x}")
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise IdxFormatError(f"truncated IDX header ({len(raw)} bytes, {ndim} dimensions)")
    shape = struct.unpack(f">{ndim}I", raw[4:header_size])
    dtype = _TYPE_CODES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(raw) - header_size
    if found != expected:
        raise IdxFormatError(
            f"IDX data of shape {shape} needs {expected} bytes after the header, found {found}"
        )
    # astype copies into native order, so the result is writable and owns its memory.
    return np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape).astype(dtype.newbyteorder("="))


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX bytes (uncompressed) of ``array``."""
    key = (array.dtype.kind, array.dtype.itemsize)
    if key not in _CODE_OF_KIND:
        raise IdxFormatError(f"IDX cannot store dtype {array.dtype}")
    code = _CODE_OF_KIND[key]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=_TYPE_CODES[code]).tobytes()


def write_idx_gz(array: np.ndarray, stream: BinaryIO) -> None:
    """Write ``array`` as gzipped IDX; byte-for-byte reproducible (no time stamp, no name)."""
    with gzip.GzipFile(filename="", mode="wb", fileobj=stream, compresslevel=9, mtime=0) as out:
        out.write(encode_idx(array))
