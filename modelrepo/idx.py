"""MNIST's IDX files (as its site ships them, gzipped or not): training reads them as a data set,
offline jobs as input. Unsigned bytes only, the type every MNIST-like file uses."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np


def read_idx(path: str | Path) -> np.ndarray:
    """The array an IDX file holds (uint8, its own shape); ValueError naming the file."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype_code != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
        return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
    except (OSError, ValueError, struct.error, EOFError) as exc:
        raise ValueError(f"{path}: unreadable IDX file ({exc})") from exc
