"""Fashion-MNIST, the real data any Debian machine can install (`make data-fashion`: the package
dataset-fashion-mnist), read, trained on, exported, served beside the digits model and encoded
by a job straight from its IDX file. Skips, saying why, where the data is absent."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import ROOT, Server

FASHION = Path(os.environ.get("VAE_DATA_DIR") or ROOT / "data").resolve() / "fashion"
pytestmark = pytest.mark.skipif(not FASHION.is_dir(), reason=f"{FASHION} is absent (make "
                                "data-fashion: apt-get install dataset-fashion-mnist)")


def test_the_standard_split_is_read():
    from training.data import load_dataset

    ds = load_dataset("fashion")
    assert ds.name == "fashion" and ds.x.shape == (70_000, 1, 28, 28)
    assert len(ds.train_idx) == 60_000 and len(ds.heldout_idx) == 10_000
    assert sorted(set(ds.labels.tolist())) == list(range(10))


def test_a_fashion_model_is_served_and_scored_by_a_job(trained, tmp_path):
    from export.onnx_export import export_checkpoint
    from jobs.cli import main
    from jobs.work import read_results
    from training.data import Dataset, load_dataset
    from training.train import TrainConfig, train

    full = load_dataset("fashion")
    idx = np.arange(3000)  # a small model: 2,500 items to train on, 500 held out
    # no labels: no feature network to train for the evaluation (the model is what is tested)
    small = Dataset("fashion", full.x[idx], None, idx[:2500], idx[2500:])
    cfg = TrainConfig(data="fashion", epochs=2, latent_dim=4, hidden="64", iwae_k=2,
                      out=str(tmp_path / "f.pt"), quiet=True, threads=1)
    train(cfg, small)
    repo = tmp_path / "repository"
    shutil.copytree(trained["repository"], repo)
    export_checkpoint(cfg.out, repo, "fashion", variants=())
    with Server(repo, {"VAE_MODELS": "digits,fashion"}) as srv:
        item = full.x[65_000:65_002].tolist()
        got = httpx.post(srv.url + "/encode", json={"inputs": item, "model": "fashion"},
                         timeout=30).json()
        assert np.array(got["mu"]).shape == (2, 4)
        models = httpx.post(srv.url + "/model", json={}, timeout=30).json()["models"]
        assert [m["name"] for m in models] == ["digits", "fashion"]
    idx_file = next(FASHION.glob("t10k-images-idx3-ubyte*"))
    main(["encode", "--repository", str(repo), "--model", "fashion", "--input", str(idx_file),
          "--output", str(tmp_path / "mu")])
    res = read_results(tmp_path / "mu")
    assert res["mu"].shape == (10_000, 4) and np.isfinite(res["mu"]).all()
