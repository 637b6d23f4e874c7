"""Offline data sets as float32 arrays [N, C, H, W] in [0, 1], with a fixed held-out split.

`digits` is scikit-learn's bundled 8x8 digits (the embedded default, no download). `mnist` reads
the original IDX gz files from a folder (the 10,000 test digits in ../shared/data/mnist/, or a
folder that also has the 60,000 training files).
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Dataset:
    name: str
    x: np.ndarray  # float32 [N, C, H, W] in [0, 1]
    labels: np.ndarray | None  # int64 [N]
    train_idx: np.ndarray
    heldout_idx: np.ndarray

    @property
    def shape(self) -> list[int]:
        return list(self.x.shape[1:])

    def describe(self) -> dict:
        """What the checkpoint and the manifest record about the data (plain types only)."""
        return {
            "name": self.name,
            "items": int(len(self.x)),
            "shape": self.shape,
            "range": [0.0, 1.0],
            "train_items": int(len(self.train_idx)),
            "heldout_items": int(len(self.heldout_idx)),
            "heldout_idx": self.heldout_idx.tolist(),
        }


def load_digits_data(heldout_fraction: float = 0.2, split_seed: int = 0) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]  # pixel values are 0..16
    labels = bunch.target.astype(np.int64)
    # The digits are ordered by writer; a seeded shuffle keeps the split fixed yet representative.
    perm = np.random.default_rng(split_seed).permutation(len(x))
    n_held = int(round(len(x) * heldout_fraction))
    return Dataset("digits", x, labels, np.sort(perm[n_held:]), np.sort(perm[:n_held]))


def _read_idx(path: Path) -> np.ndarray:
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


def load_mnist_data(folder: str | Path, heldout: int = 2000) -> Dataset:
    """Train files when present (60k train, 10k test held out); else t10k split 8,000 / 2,000."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"MNIST folder {folder} does not exist")

    def find(stem: str) -> Path | None:
        for name in (f"{stem}.gz", stem):
            if (folder / name).exists():
                return folder / name
        return None

    test_x, test_y = find("t10k-images-idx3-ubyte"), find("t10k-labels-idx1-ubyte")
    train_x, train_y = find("train-images-idx3-ubyte"), find("train-labels-idx1-ubyte")
    if test_x is None or test_y is None:
        raise FileNotFoundError(f"{folder}: t10k-images-idx3-ubyte(.gz) and labels are required")
    if train_x and train_y:
        imgs = np.concatenate([_read_idx(train_x), _read_idx(test_x)])
        labels = np.concatenate([_read_idx(train_y), _read_idx(test_y)])
        n_train = len(imgs) - len(_read_idx(test_y))
    else:
        imgs, labels = _read_idx(test_x), _read_idx(test_y)
        n_train = len(imgs) - heldout
    x = (imgs.astype(np.float32) / 255.0)[:, None, :, :]
    idx = np.arange(len(x))
    return Dataset("mnist", x, labels.astype(np.int64), idx[:n_train], idx[n_train:])


def load_dataset(name: str, path: str | None = None) -> Dataset:
    if name == "digits":
        return load_digits_data()
    if name == "mnist":
        return load_mnist_data(path or "../shared/data/mnist")
    raise ValueError(f"unknown dataset {name!r} (choose digits or mnist)")
