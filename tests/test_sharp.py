"""Perceptual and adversarial training terms, the feature network and its metrics.

Tiny digits data throughout; the MNIST comparison itself is `make sharp-mnist`.
"""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import torch

from conftest import Server
from training.adversarial import Adversary, Discriminator
from training.data import load_dataset
from training.features import (
    EMBED,
    FeatureNet,
    edge_magnitude,
    embeddings,
    frechet_distance,
    load_feature_net,
    perceptual_distance,
    train_feature_net,
)
from training.model import VAE, ModelConfig
from training.train import TrainConfig, train


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def fnet(digits) -> FeatureNet:
    torch.set_num_threads(1)  # as the training tests: no oversubscribed cores
    x, y = digits.x[digits.train_idx], digits.labels[digits.train_idx]
    net, _ = train_feature_net(x, y, epochs=16)
    return net


def _vae() -> VAE:
    torch.manual_seed(0)
    return VAE(ModelConfig(input_shape=[1, 8, 8], latent_dim=4, hidden=[32]))


def test_feature_net_is_frozen_and_classifies_above_chance(digits, fnet):
    assert not any(p.requires_grad for p in fnet.parameters())
    feats = fnet.features(torch.from_numpy(digits.x[:5]))
    assert [f.shape[0] for f in feats] == [5] * 4 and feats[-1].shape == (5, EMBED)
    held = digits.heldout_idx
    pred = fnet(torch.from_numpy(digits.x[held])).argmax(1).numpy()
    assert (pred == digits.labels[held]).mean() > 0.5  # 10 classes: chance is 0.1


def test_perceptual_distance_is_per_item_zero_on_equal_and_reaches_the_decoder(digits, fnet):
    x = torch.from_numpy(digits.x[:8])
    assert torch.allclose(perceptual_distance(fnet, x, x), torch.zeros(8))
    vae = _vae()
    out, _, _ = vae(x)
    d = perceptual_distance(fnet, torch.sigmoid(out), x)
    assert d.shape == (8,) and (d > 0).all()
    d.mean().backward()
    grads = [p.grad for p in vae.decoder.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in fnet.parameters())  # the feature net never learns here


def test_discriminator_step_moves_only_its_own_weights(digits):
    vae = _vae()
    adv = Adversary([1, 8, 8], weight=1.0, start_steps=0, ramp_steps=1)
    x = torch.from_numpy(digits.x[:16])
    out, _, _ = vae(x)
    x_rec = torch.sigmoid(out)
    x_prior = vae.decode(torch.randn(16, 4))
    vae_before = [p.detach().clone() for p in vae.parameters()]
    d_before = [p.detach().clone() for p in adv.disc.parameters()]
    adv.d_step(x, x_rec, x_prior)
    assert all(torch.equal(a, b) for a, b in zip(vae_before, vae.parameters(), strict=True))
    assert any(not torch.equal(a, b)
               for a, b in zip(d_before, adv.disc.parameters(), strict=True))
    assert all(p.grad is None for p in vae.parameters())  # fakes were detached


def test_generator_term_reaches_the_decoder_not_the_discriminator(digits):
    vae = _vae()
    adv = Adversary([1, 8, 8], weight=2.0, start_steps=10, ramp_steps=10)
    assert adv.weight_at(9) == 0.0 and adv.weight_at(10) == pytest.approx(0.2)
    assert adv.weight_at(1000) == 2.0
    x = torch.from_numpy(digits.x[:16])
    out, _, _ = vae(x)
    g = adv.g_loss(torch.sigmoid(out), vae.decode(torch.randn(16, 4)))
    assert g.shape == (16,)
    g.mean().backward()
    assert all(p.grad is not None for p in vae.decoder.parameters())
    assert all(p.grad is None for p in adv.disc.parameters())


def test_discriminator_is_spectrally_normalised():
    d = Discriminator([1, 28, 28])
    for _ in range(20):  # power iteration converges over forward passes in training mode
        d(torch.rand(4, 1, 28, 28))
    # the parametrized (normalised) weight's largest singular value
    sigma = torch.linalg.matrix_norm(d.net[0].weight.flatten(1), ord=2)
    assert sigma.item() == pytest.approx(1.0, abs=0.05)


def test_frechet_distance_known_cases():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4000, 6))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shifted = a + np.array([3.0, 0, 0, 0, 0, 0])  # same covariance, mean moved by 3: FD = 9
    assert frechet_distance(a, shifted) == pytest.approx(9.0, rel=1e-6)
    scaled = a * 2.0  # N(0, I) vs N(0, 4I): FD = sum(1 + 4 - 2*2) = 6 (estimated)
    assert frechet_distance(a, scaled) == pytest.approx(6.0, rel=0.05)


def test_edge_magnitude_prefers_sharp_images():
    sharp = np.zeros((1, 1, 8, 8), np.float32)
    sharp[..., :, 4:] = 1.0
    blurred = torch.nn.functional.avg_pool2d(torch.from_numpy(sharp), 3, 1, 1,
                                             count_include_pad=False)
    assert edge_magnitude(sharp) > edge_magnitude(blurred) > 0
    assert edge_magnitude(np.full((2, 1, 8, 8), 0.5)) == 0.0


def test_adversarial_perceptual_training_checkpoints_and_resumes(tmp_path):
    cfg = TrainConfig(epochs=3, latent_dim=4, hidden="32", out=str(tmp_path / "c.pt"),
                      quiet=True, threads=1, perceptual_weight=0.5, adversarial_weight=1.0,
                      adversarial_start=1, adversarial_ramp=1, iwae_k=2)
    payload = train(cfg)
    hist = payload["history"]
    assert hist[0]["train_adv_g"] == 0.0 and hist[-1]["train_adv_g"] > 0  # warm-up, then on
    assert all(h["train_perceptual"] > 0 for h in hist)
    assert {"discriminator", "optimizer"} <= set(payload["adversary"])
    m = payload["metrics"]
    for key in ("fid_samples", "fid_recon", "fid_data", "edge_ratio_recon",
                "edge_ratio_samples", "feature_net_accuracy"):
        assert np.isfinite(m[key]), key
    assert m["fid_data"] < m["fid_samples"]  # data vs data is the floor
    ck = torch.load(cfg.out, weights_only=True)  # no pickle of arbitrary objects
    assert "adversary" in ck and "feature_net" in ck
    net, _ = load_feature_net(tmp_path / "features.pt")  # saved beside, reused next time
    assert embeddings(net, np.zeros((2, 1, 8, 8), np.float32)).shape == (2, EMBED)
    cfg.epochs, cfg.resume = 4, True
    resumed = train(cfg)
    assert resumed["state"]["epoch"] == 4 and len(resumed["history"]) == 4


def test_unlabelled_data_cannot_train_a_perceptual_loss(tmp_path):
    arr = np.random.default_rng(0).random((40, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", arr)
    cfg = TrainConfig(data="npy", data_path=str(tmp_path / "x.npy"), epochs=1, latent_dim=2,
                      hidden="16", out=str(tmp_path / "c.pt"), quiet=True, threads=1,
                      perceptual_weight=1.0)
    with pytest.raises(SystemExit, match="needs labelled data"):
        train(cfg)


def test_adversarial_model_exports_and_is_served_unchanged(tmp_path):
    from export.onnx_export import export_checkpoint

    cfg = TrainConfig(epochs=2, latent_dim=4, hidden="32", out=str(tmp_path / "c.pt"),
                      quiet=True, threads=1, adversarial_weight=1.0, adversarial_start=0,
                      adversarial_ramp=1, iwae_k=2)
    train(cfg)
    repo = tmp_path / "repository"
    path = export_checkpoint(cfg.out, repo, "digits", variants=())
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["feature_net"]["graph"]["path"] == "features.onnx"
    assert {o["name"] for o in manifest["graphs"]["decoder"]["outputs"]} == {"x", "logits"}
    with Server(repo) as srv:
        r = httpx.post(srv.url + "/sample", json={"n": 3, "seed": 1}, timeout=30)
        assert r.status_code == 200, r.text
        assert np.asarray(r.json()["outputs"]).shape == (3, 1, 8, 8)
        r = httpx.post(srv.url + "/reconstruct", json={"inputs": np.zeros((2, 1, 8, 8)).tolist()},
                       timeout=30)
        assert r.status_code == 200, r.text
