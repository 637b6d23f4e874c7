"""Two VAEs of different shapes in one repository, for the multi-model tests and benchmarks:
the project's digits model (8x8) and a 28x28 outside-style fc VAE (tests/byo_classic.py's
ClassicVAE) trained briefly on the digits scaled up to 28x28, exported with export_vae."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np


def digits28() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 scikit-learn digits as [N, 1, 28, 28] in [0, 1] (each pixel 3x3, 2 px
    border), and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.kron(d.images / 16.0, np.ones((3, 3)))  # 24x24
    x = np.pad(x, ((0, 0), (2, 2), (2, 2)))
    return x[:, None].astype(np.float32), d.target


def export_classic28(repository: Path, name: str = "classic28", epochs: int = 3) -> Path:
    """Train the classic fc VAE on 28x28 digits for a few epochs and export it (with a
    reference set) as `name`'s next version."""
    import torch
    from byo_classic import train_classic

    from export import export_vae

    x, labels = digits28()
    flat = torch.tensor(x.reshape(len(x), -1))
    m = train_classic(flat[:1500], epochs=epochs)
    return export_vae(m.encode, m.decode, input_shape=(1, 28, 28), encoder_input="flat",
                      repository=repository, name=name, heldout=x[1500:1700],
                      labels=labels[1500:1700], variants=())


def copy_model(src_repository: Path, name: str, dst_repository: Path,
               as_name: str | None = None) -> Path:
    """A model folder copied into another repository (optionally renamed: its manifests
    keep their name, so a renamed copy is refused by the service, as it should be)."""
    dst = Path(dst_repository) / (as_name or name)
    shutil.copytree(Path(src_repository) / name, dst)
    return dst
