"""Offline data sets as float32 arrays [N, C, H, W] in [0, 1], with a fixed held-out split.

`digits` is scikit-learn's bundled 8x8 digits (the embedded default, no download). `mnist` reads
the original IDX gz files from a folder (default: `mnist/` under the data folder VAE_DATA_DIR,
`data/` unless set, where `make data-mnist` puts them; the 10,000 test digits alone, or also the
60,000 training files). `npy` reads a .npy/.npz array, `images` a
folder of PNG/JPEG files (subfolders name the labels). Bad data stops with the file named.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelrepo.idx import read_idx


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


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def default_data_path(name: str) -> Path:
    """Where a named data set lives unless a path is given: VAE_DATA_DIR/<name> (default
    `data/<name>` from the working directory, where the project's `make data-<name>` puts it)."""
    return Path(os.environ.get("VAE_DATA_DIR") or "data") / name


def _split(n: int, heldout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded permutation: the split is fixed for a data set, whatever the training seed."""
    perm = np.random.default_rng(seed).permutation(n)
    n_held = max(1, int(round(n * heldout_fraction)))
    return np.sort(perm[n_held:]), np.sort(perm[:n_held])


def _as_images(arr: np.ndarray, source: str) -> np.ndarray:
    """uint8 scaled by 1/255, floats checked to lie in [0, 1]; [N, H, W] gains C = 1."""
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4 or arr.shape[1] not in (1, 3) or len(arr) == 0:
        raise ValueError(f"{source}: shape {list(arr.shape)} is not [N, H, W] or [N, C, H, W] "
                         "with C 1 or 3 and N >= 1")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{source}: dtype {arr.dtype} is not uint8 or float")
    x = arr.astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"{source}: float values must be finite (found NaN or Inf)")
    if x.min() < 0 or x.max() > 1:
        raise ValueError(f"{source}: float values must lie in [0, 1], got "
                         f"[{x.min():.4g}, {x.max():.4g}]")
    return x


def load_array_data(path: str | Path, heldout_fraction: float = 0.2) -> Dataset:
    """A .npy array of images, or a .npz with `x` (or its first array) and optional `y`."""
    path = Path(path)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable array file ({exc})") from exc
    labels = None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.keys())
            if not keys:
                raise ValueError(f"{path}: the .npz file holds no arrays")
            arr = loaded["x"] if "x" in keys else loaded[keys[0]]
            labels = loaded["y"].astype(np.int64) if "y" in keys else None
    else:
        arr = loaded
    x = _as_images(arr, str(path))
    if labels is not None and labels.shape != (len(x),):
        raise ValueError(f"{path}: y has shape {list(labels.shape)}, expected [{len(x)}]")
    return Dataset(path.stem, x, labels, *_split(len(x), heldout_fraction, 0))


def load_image_folder(folder: str | Path, heldout_fraction: float = 0.2) -> Dataset:
    """PNG/JPEG files, grey (C = 1) when every file is grey, else RGB (C = 3); all one size."""
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: image folder does not exist")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{folder}: no .png/.jpg/.jpeg files found")
    images = []
    for f in files:
        try:
            with Image.open(f) as img:
                img.load()
                images.append(img.copy())
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise ValueError(f"{f}: unreadable image ({exc})") from exc
        if images[-1].size != images[0].size:
            raise ValueError(f"{f}: size {images[-1].size} differs from {files[0]}'s "
                             f"{images[0].size}; all images must have one size")
    grey = all(img.mode in ("L", "1", "I;16", "I") for img in images)
    arr = np.stack([np.asarray(img.convert("L" if grey else "RGB")) for img in images])
    x = _as_images(arr if grey else arr.transpose(0, 3, 1, 2), str(folder))
    classes = sorted({f.parent.name for f in files})
    labels = None
    if len(classes) > 1:
        labels = np.array([classes.index(f.parent.name) for f in files], dtype=np.int64)
    return Dataset(folder.name, x, labels, *_split(len(x), heldout_fraction, 0))


def load_digits_data(heldout_fraction: float = 0.2, split_seed: int = 0) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]  # pixel values are 0..16
    labels = bunch.target.astype(np.int64)
    # The digits are ordered by writer; a seeded shuffle keeps the split fixed yet representative.
    return Dataset("digits", x, labels, *_split(len(x), heldout_fraction, split_seed))


def load_mnist_data(folder: str | Path, heldout: int = 2000, name: str = "mnist") -> Dataset:
    """Train files when present (60k train, 10k test held out); else t10k split 8,000 / 2,000.
    Fashion-MNIST ships the same files (name="fashion")."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{name} folder {folder} does not exist (`make data-{name}` "
                                f"puts the IDX files there, or give the folder)")

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
        imgs = np.concatenate([read_idx(train_x), read_idx(test_x)])
        labels = np.concatenate([read_idx(train_y), read_idx(test_y)])
        n_train = len(imgs) - len(read_idx(test_y))
    else:
        imgs, labels = read_idx(test_x), read_idx(test_y)
        n_train = len(imgs) - heldout
    x = (imgs.astype(np.float32) / 255.0)[:, None, :, :]
    idx = np.arange(len(x))
    return Dataset(name, x, labels.astype(np.int64), idx[:n_train], idx[n_train:])


def load_dataset(name: str, path: str | None = None) -> Dataset:
    if name == "digits":
        return load_digits_data()
    if name in ("mnist", "fashion"):  # Fashion-MNIST: the same IDX files, 60,000 + 10,000
        return load_mnist_data(path or default_data_path(name), name=name)
    if name in ("npy", "images") and not path:
        raise ValueError(f"--data {name} needs --data-path")
    if name == "npy":
        return load_array_data(path)
    if name == "images":
        return load_image_folder(path)
    raise ValueError(f"unknown dataset {name!r} (digits, mnist, fashion, npy or images)")
