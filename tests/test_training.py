"""Training: likelihoods, free bits, IWAE, nets, data loaders, seeds, resume, config, DDP."""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import MNIST_DIR, ROOT
from training.cli import parse_args
from training.data import load_array_data, load_dataset, load_image_folder, load_mnist_data
from training.evaluate import active_units, elbo_terms, iwae_nll, knn_accuracy
from training.model import VAE, ModelConfig, load_checkpoint, neg_elbo
from training.train import TrainConfig, train


def tiny(**kw) -> VAE:
    torch.manual_seed(0)
    return VAE(ModelConfig(input_shape=[1, 8, 8], latent_dim=3, hidden=[16], **kw))


def test_iwae_bound_is_tighter_than_elbo():
    model = tiny().eval()
    x = torch.rand(32, 1, 8, 8)
    elbo = np.mean([elbo_terms(model, x, seed=s)["neg_elbo"] for s in range(20)])
    nll = iwae_nll(model, x, k=200).mean()
    assert nll <= elbo
    assert abs(iwae_nll(model, x, k=1).mean() - elbo) < 0.05 * elbo  # k = 1 is the ELBO


def test_free_bits_remove_kl_pressure_below_lambda():
    model = tiny()
    x = torch.rand(8, 1, 8, 8)
    torch.manual_seed(1)
    loss_fb, rec, kl = neg_elbo(model, x, beta=1.0, free_bits=100.0)
    assert loss_fb.item() == pytest.approx(rec.item() + 3 * 100.0, rel=1e-6)
    assert kl.item() < 100.0  # the reported KL is the true one


def test_gaussian_likelihood_fixed_and_learned():
    model = tiny(likelihood="gaussian", obs_sigma=0.5)
    out = torch.zeros(2, 1, 8, 8)  # mean = sigmoid(0) = 0.5
    x = torch.full((2, 1, 8, 8), 0.5)
    expected = 64 * 0.5 * (np.log(0.25) + np.log(2 * np.pi))
    assert model.recon_nll(out, x)[0].item() == pytest.approx(expected, rel=1e-5)
    learned = tiny(likelihood="gaussian", learn_obs_var=True)
    neg_elbo(learned, torch.rand(4, 1, 8, 8))[0].backward()
    assert learned.obs_logvar.grad is not None and learned.obs_logvar.grad.abs().sum() > 0


@pytest.mark.parametrize("upsample", ["transpose", "nearest", "shuffle"])
@pytest.mark.parametrize("shape", [[1, 8, 8], [1, 28, 28], [3, 13, 11]])
def test_conv_architecture_restores_the_input_shape(shape, upsample):
    model = VAE(ModelConfig(input_shape=shape, latent_dim=5, arch="conv", hidden=[32],
                            channels=[8, 16], upsample=upsample))
    out, mu, _ = model(torch.rand(2, *shape))
    assert list(out.shape) == [2, *shape] and list(mu.shape) == [2, 5]


def test_metrics_helpers():
    mu = np.array([[0.0, 1.0], [0.0, -1.0], [0.0, 0.5]])
    assert active_units(mu) == 1
    train_mu = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2]], dtype=np.float32)
    acc = knn_accuracy(train_mu, np.array([0, 0, 0, 1, 1, 1]),
                       np.array([[0.05], [5.05]], dtype=np.float32), np.array([0, 1]), k=3)
    assert acc == 1.0


# ---------- data ----------

def test_npy_and_npz(tmp_path):
    np.save(tmp_path / "a.npy", np.random.default_rng(0).integers(0, 256, (10, 5, 5), np.uint8))
    ds = load_array_data(tmp_path / "a.npy")
    assert ds.x.shape == (10, 1, 5, 5) and ds.x.max() <= 1 and ds.labels is None
    np.savez(tmp_path / "b.npz", x=np.random.rand(10, 3, 4, 4), y=np.arange(10))
    ds = load_array_data(tmp_path / "b.npz")
    assert ds.x.shape == (10, 3, 4, 4) and list(ds.labels) == list(range(10))
    assert len(ds.train_idx) + len(ds.heldout_idx) == 10


@pytest.mark.parametrize("arr,match", [
    (np.full((4, 5, 5), 2.0), r"in \[0, 1\]"),
    (np.full((4, 5, 5), np.nan), "finite"),
    (np.zeros((4, 7, 5, 5)), "shape"),
    (np.zeros((4, 5, 5), dtype=np.int32), "dtype"),
])
def test_bad_arrays_name_the_file(tmp_path, arr, match):
    np.save(tmp_path / "bad.npy", arr)
    with pytest.raises(ValueError, match=match) as info:
        load_array_data(tmp_path / "bad.npy")
    assert "bad.npy" in str(info.value)


def test_pickled_npy_is_refused(tmp_path):
    np.save(tmp_path / "p.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="p.npy"):
        load_array_data(tmp_path / "p.npy")


def test_image_folder_grey_rgb_labels_and_errors(tmp_path):
    for label in ("cat", "dog"):
        (tmp_path / "grey" / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((6, 7), 40 * i, np.uint8)).save(
                tmp_path / "grey" / label / f"{i}.png")
    ds = load_image_folder(tmp_path / "grey")
    assert ds.x.shape == (6, 1, 6, 7) and sorted(set(ds.labels)) == [0, 1]
    (tmp_path / "rgb").mkdir()
    Image.fromarray(np.zeros((6, 7, 3), np.uint8)).save(tmp_path / "rgb" / "a.jpg")
    Image.fromarray(np.zeros((6, 7), np.uint8)).save(tmp_path / "rgb" / "b.png")
    assert load_image_folder(tmp_path / "rgb").x.shape == (2, 3, 6, 7)
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "rgb" / "c.png")
    with pytest.raises(ValueError, match="c.png: size"):
        load_image_folder(tmp_path / "rgb")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="x.png: unreadable"):
        load_image_folder(tmp_path / "broken")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .png"):
        load_image_folder(tmp_path / "empty")


def _idx(path: Path, arr: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_mnist_folder_with_train_files(tmp_path):
    rng = np.random.default_rng(0)
    _idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (30, 28, 28)))
    _idx(tmp_path / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, 30))
    _idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (10, 28, 28)))
    _idx(tmp_path / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, 10))
    ds = load_mnist_data(tmp_path)
    assert ds.x.shape == (40, 1, 28, 28) and len(ds.train_idx) == 30
    assert list(ds.heldout_idx) == list(range(30, 40))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz: unreadable"):
        load_mnist_data(tmp_path)


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"{MNIST_DIR} is absent")
def test_shared_mnist_split():
    ds = load_dataset("mnist", str(MNIST_DIR))
    assert ds.x.shape == (10000, 1, 28, 28)
    assert (len(ds.train_idx), ds.heldout_idx[0]) == (8000, 8000)


# ---------- the training loop ----------

def _cfg(tmp_path, name, **kw) -> TrainConfig:
    base = dict(epochs=2, latent_dim=3, hidden="32", quiet=True, threads=1, iwae_k=10,
                out=str(tmp_path / name / "c.pt"))
    return TrainConfig(**{**base, **kw})


def test_seed_makes_training_reproducible(tmp_path):
    a = train(_cfg(tmp_path, "a"))
    b = train(_cfg(tmp_path, "b"))
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert {"heldout_neg_elbo", "heldout_nll_iwae", "active_units", "knn5_accuracy",
            "interp_smoothness"} <= set(metrics)


def test_resume_continues_exactly(tmp_path):
    straight = train(_cfg(tmp_path, "s", epochs=4))
    train(_cfg(tmp_path, "r", epochs=2))
    resumed = train(_cfg(tmp_path, "r", epochs=4, resume=True))
    assert resumed["state"]["epoch"] == 4
    for k, v in straight["last_state_dict"].items():
        assert torch.equal(v, resumed["last_state_dict"][k]), k


def test_a_finished_run_resumes_from_where_it_stopped_not_from_the_chosen_weights(
        tmp_path, monkeypatch):
    """The checkpoint exports the chosen (best) weights; `last_state_dict`, what --resume
    continues from, must still be the weights the last epoch ended with."""
    import training.train as tt

    real = tt.elbo_terms
    figures = iter([3.0, 1.0, 2.0, 4.0] * 2)  # held-out -ELBO: epoch 2 is the best

    def scripted(model, x):
        return {**real(model, x), "neg_elbo": next(figures)}  # same computation, same RNG

    monkeypatch.setattr(tt, "elbo_terms", scripted)
    chosen = train(_cfg(tmp_path, "b", epochs=4))
    last = train(_cfg(tmp_path, "l", epochs=4, select="last"))
    assert chosen["state"]["best"] == 1.0 and last["state"]["best"] == 4.0
    assert any(not torch.equal(v, chosen["state_dict"][k]) for k, v in last["state_dict"].items())
    for k, v in last["state_dict"].items():
        assert torch.equal(v, chosen["last_state_dict"][k]), k


def test_eval_every_evaluates_and_saves_on_its_epochs_and_the_last(tmp_path):
    out = train(_cfg(tmp_path, "v", epochs=5, eval_every=2))
    evaluated = [h["epoch"] for h in out["state"]["history"] if "heldout_neg_elbo" in h]
    assert evaluated == [2, 4, 5] and len(out["state"]["history"]) == 5
    assert out["state"]["best"] == min(h["heldout_neg_elbo"] for h in out["state"]["history"]
                                       if "heldout_neg_elbo" in h)


def test_a_validation_split_chooses_and_the_held_out_split_only_reports(tmp_path):
    """--val-items: the training split's last items choose the best epoch and are what the
    periodic evaluation reports; the held-out items appear only in the final figures."""
    from training.data import load_dataset
    from training.report import make_report

    out = train(_cfg(tmp_path, "val", epochs=3, val_items=200))
    rows = out["state"]["history"]
    assert all("val_neg_elbo" in h and "heldout_neg_elbo" not in h for h in rows)
    assert out["state"]["best"] == min(h["val_neg_elbo"] for h in rows)
    data = load_dataset("digits")
    x_val = torch.from_numpy(data.x[data.train_idx[-200:]])
    model, _ = load_checkpoint(out_path := Path(_cfg(tmp_path, "val").out))
    best = min(rows, key=lambda h: h["val_neg_elbo"])
    assert elbo_terms(model, x_val)["neg_elbo"] == pytest.approx(best["val_neg_elbo"], rel=1e-5)
    assert "heldout_neg_elbo" in out["metrics"] and out["metrics"]["heldout_neg_elbo"] != \
        pytest.approx(best["val_neg_elbo"])
    assert (make_report(out_path, tmp_path / "report").parent / "loss_curves.png").exists()
    with pytest.raises(SystemExit, match="--val-items"):
        train(_cfg(tmp_path, "bad", epochs=1, val_items=10**6))


def test_bf16_autocast_trains_and_the_moving_average_is_what_is_exported(tmp_path):
    """--precision bf16 runs the forward pass under CPU autocast (the weights and the loss stay
    fp32, so the checkpoint is fp32); --ema keeps a moving average that is evaluated, chosen
    and exported, with the raw weights' figure beside it in the history."""
    out = train(_cfg(tmp_path, "e", epochs=3, arch="conv", channels="8,16", hidden="32",
                     precision="bf16", ema=0.9))
    rows = out["state"]["history"]
    assert all(h["heldout_neg_elbo"] != h["heldout_neg_elbo_raw"] for h in rows)
    assert all(h["heldout_kl_raw"] + h["heldout_recon_raw"] == pytest.approx(
        h["heldout_neg_elbo_raw"]) for h in rows)
    assert rows[-1]["heldout_neg_elbo"] < rows[0]["heldout_neg_elbo"]  # it learns
    assert all(v.dtype == torch.float32 for v in out["state_dict"].values())
    model, _ = load_checkpoint(Path(_cfg(tmp_path, "e").out))
    x_held = torch.from_numpy(load_dataset("digits").x[load_dataset("digits").heldout_idx])
    assert elbo_terms(model, x_held)["neg_elbo"] == pytest.approx(out["state"]["best"],
                                                                 rel=1e-5)
    from training.report import make_report

    assert (make_report(Path(_cfg(tmp_path, "e").out), tmp_path / "r").parent
            / "organization.png").exists()  # its terms panel draws the raw weights' terms
    resumed = train(_cfg(tmp_path, "e", epochs=4, arch="conv", channels="8,16", hidden="32",
                         precision="bf16", ema=0.9, resume=True))
    assert resumed["state"]["epoch"] == 4
    with pytest.raises(SystemExit, match="--precision"):
        train(_cfg(tmp_path, "bad", epochs=1, precision="fp8"))
    with pytest.raises(SystemExit, match="--ema"):
        train(_cfg(tmp_path, "bad", epochs=1, ema=1.5))


def test_early_stopping(tmp_path):
    out = train(_cfg(tmp_path, "e", epochs=50, lr=0.0, patience=2))
    assert out["state"]["epoch"] == 3  # epoch 1 is best; two epochs without improvement


def test_toml_config_and_flag_override(tmp_path, capsys):
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('arch = "conv"\nlatent_dim = 5\nepochs = 7\n')
    cfg = parse_args(["--config", str(cfg_file), "--epochs", "3"])
    assert (cfg.arch, cfg.latent_dim, cfg.epochs) == ("conv", 5, 3)
    cfg_file.write_text("no_such_option = 1\n")
    with pytest.raises(SystemExit) as exc:
        parse_args(["--config", str(cfg_file)])
    assert exc.value.code == 2 and "no_such_option" in capsys.readouterr().err


def test_torchrun_two_processes_are_data_parallel(tmp_path):
    log = tmp_path / "shards"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "training", "--epochs", "2", "--latent-dim", "3", "--hidden", "32",
           "--threads", "1", "--quiet", "--iwae-k", "5", "--out", str(tmp_path / "c.pt"),
           "--shard-log", str(log)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((log / f"rank{r}.json").read_text()) for r in (0, 1))
    per_epoch = len(r0["seen"]) // 2
    for epoch in range(2):
        s0 = set(r0["seen"][epoch * per_epoch:(epoch + 1) * per_epoch])
        s1 = set(r1["seen"][epoch * per_epoch:(epoch + 1) * per_epoch])
        assert s0 and not s0 & s1  # disjoint shards
        assert len(s0 | s1) == 1438  # together: the whole digits training split
    assert r0["params_sha256"] == r1["params_sha256"]  # gradients were averaged
    assert (tmp_path / "c.pt").exists()  # rank 0 wrote the checkpoint


def test_report_draws_every_picture(trained, tmp_path):
    from training.report import make_report

    page = make_report(trained["checkpoint"], tmp_path / "report")
    text = page.read_text()
    for name in ["loss_curves", "samples", "reconstructions", "interp_lerp", "interp_slerp",
                 "traversals", "latent_map", "sigma_hist"]:
        png = tmp_path / "report" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"({name}.png)" in text
    assert "heldout_nll_iwae" in text


def test_beta_sweep_writes_the_numbers_of_its_runs(tmp_path):
    """make beta-sweep, shortened: each row of the table is its run's own held-out metrics."""
    import json

    from training.beta_sweep import main

    main(["--betas", "0.5,4", "--epochs", "2", "--threads", "1", "--out", str(tmp_path / "beta"),
          "--figure", str(tmp_path / "beta.png")])
    rows = json.loads((tmp_path / "beta" / "beta_sweep.json").read_text())
    assert [r["beta"] for r in rows] == [0.5, 4.0]
    for r in rows:
        run = json.loads((tmp_path / "beta" / f"beta-{r['beta']:g}" / "metrics.json").read_text())
        for key in ("heldout_recon", "heldout_kl", "knn5_accuracy", "overlap_same_class",
                    "bhattacharyya_other_class"):
            assert r[key] == run[key], key
    assert (tmp_path / "beta.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 0.5 |" in (tmp_path / "beta" / "beta_sweep.md").read_text()


def test_training_records_the_latent_space_organizing(trained, tmp_path):
    """Every evaluation records active units, mean sigma, KL per dimension, held-out 5-NN and
    silhouette of mu; six (here: every) evaluation epochs keep a map snapshot; the report
    draws both from those numbers."""
    from training.evaluate import snapshot_epochs
    from training.report import make_report

    payload = trained["payload"]
    rows = [h for h in payload["history"] if "mean_sigma" in h]
    assert len(rows) == 3 and all(len(h["kl_per_dim"]) == 4 for h in rows)
    assert all(0 <= h["knn5_heldout"] <= 1 and -1 <= h["silhouette"] <= 1 for h in rows)
    snaps = payload["state"]["snapshots"]
    assert sorted(snaps, key=int) == ["1", "2", "3"] and snaps["3"].shape[1] == 4
    assert snapshot_epochs(230, 5) == {5, 50, 95, 140, 185, 230}
    page = make_report(trained["checkpoint"], tmp_path / "report")
    for name in ("organization", "map_snapshots"):
        assert (tmp_path / "report" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert f"({name}.png)" in page.read_text()
