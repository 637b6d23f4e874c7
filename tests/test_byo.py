"""Bring your own VAE: a model written the way outside code writes it (the classic fc VAE, not
training/nets.py), trained briefly on real digits, exported four ways into one repository and
served by one real server (every version loaded): export_vae with a reference set (v1), the
`python -m export.byo` CLI (v2), plain torch.onnx.export + `python -m export.import_onnx` (v3),
export_vae without a reference set (v4). Each answers /encode, /decode, /reconstruct and /score
as the PyTorch model computes them; the usual mistakes are refused with a clear error."""

from __future__ import annotations

import subprocess
import sys

import httpx
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from byo_classic import train_classic
from torch import nn

from conftest import ROOT, Server


class _Part(nn.Module):  # what a user hands to torch.onnx.export: one half of the model
    def __init__(self, model: nn.Module, method: str):
        super().__init__()
        self.model, self.method = model, method

    def forward(self, t):
        return getattr(self.model, self.method)(t)


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.tensor(d.data / 16.0, dtype=torch.float32), d.target


@pytest.fixture(scope="module")
def byo(tmp_path_factory):
    from export import export_vae

    work = tmp_path_factory.mktemp("byo")
    x, labels = _digits()
    m = train_classic(x[:1500])
    repo, held = work / "repository", x[1500:].numpy().reshape(-1, 1, 8, 8)
    kw = dict(input_shape=(1, 8, 8), encoder_input="flat", repository=repo, name="mine")
    export_vae(m.encode, m.decode, heldout=held, labels=labels[1500:], **kw)  # v1
    torch.save(m.state_dict(), work / "weights.pt")
    np.save(work / "held.npy", held)
    cli = [sys.executable, "-m", "export.byo", "--factory", "tests.byo_classic:classic_vae",
           "--weights", str(work / "weights.pt"), "--input-shape", "1,8,8",
           "--encoder-input", "flat", "--data", str(work / "held.npy"),
           "--repository", str(repo), "--name", "mine"]
    subprocess.run(cli, cwd=ROOT, check=True, capture_output=True, timeout=600)  # v2
    torch.onnx.export(_Part(m, "encode"), (x[:2],), str(work / "enc.onnx"), input_names=["input"],
                      output_names=["m", "lv"], dynamic_axes={"input": {0: "b"}}, dynamo=False)
    torch.onnx.export(_Part(m, "decode"), (torch.zeros(2, 6),), str(work / "dec.onnx"),
                      input_names=["z"], output_names=["x"], dynamic_axes={"z": {0: "b"}},
                      dynamo=False)
    subprocess.run([sys.executable, "-m", "export.import_onnx", "--encoder",
                    str(work / "enc.onnx"), "--decoder", str(work / "dec.onnx"),
                    "--input-shape", "1,8,8", "--repository", str(repo), "--name", "mine"],
                   cwd=ROOT, check=True, capture_output=True, timeout=600)  # v3
    export_vae(m.encode, m.decode, **kw)  # v4: no reference set
    with Server(repo, {"VAE_MODEL_NAME": "mine", "VAE_MODEL_VERSIONS": "all"}) as srv:
        yield srv, m, x[1500:1510]


def post(srv, path: str, body: dict, status: int = 200) -> dict:
    r = httpx.post(srv.url + path, json=body, timeout=60)
    assert r.status_code == status, r.text
    return r.json()


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_every_version_answers_as_the_pytorch_model(byo, version):
    srv, m, x = byo
    items = x.reshape(-1, 1, 8, 8).tolist()
    with torch.no_grad():
        mu, lv = m.encode(x)
        z = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
        want_dec, want_rec = m.decode(z), m.decode(mu)
    got = post(srv, "/encode", {"inputs": items, "version": version})
    np.testing.assert_allclose(got["mu"], mu.numpy(), atol=1e-5)
    np.testing.assert_allclose(got["logvar"], lv.numpy(), atol=1e-5)
    dec = post(srv, "/decode", {"z": z.tolist(), "version": version})["outputs"]
    np.testing.assert_allclose(np.array(dec).reshape(4, 64), want_dec.numpy(), atol=1e-5)
    rec = post(srv, "/reconstruct", {"inputs": items, "version": version})["outputs"]
    np.testing.assert_allclose(np.array(rec).reshape(10, 64), want_rec.numpy(), atol=1e-5)
    # /score: PyTorch's own BCE + closed-form KL at the z the service draws (API.md)
    eps = torch.from_numpy(np.random.default_rng(3).standard_normal((1, 10, 6))
                           .astype(np.float32))[0]
    with torch.no_grad():
        zs = mu + torch.exp(0.5 * lv) * eps
        bce = F.binary_cross_entropy(m.decode(zs), x, reduction="none").sum(1)
        want = bce + 0.5 * (zs**2 - eps**2 - lv).sum(1)  # -log p(x|z) + log q(z|x) - log p(z)
    score = post(srv, "/score", {"inputs": items, "k": 1, "seed": 3, "version": version,
                                 "estimator": "sampled"})
    err = np.abs(np.array(score["neg_elbo"]) - want.double().numpy()).max()
    assert err <= 1e-3, err  # nats per item
    assert (score["percentile"] is None) == (version in (3, 4))


def test_a_model_without_reference_set_says_so(byo):
    srv = byo[0]
    items = byo[2].reshape(-1, 1, 8, 8)[:2].tolist()
    for path, body in (("/latent_map", {}), ("/neighbors", {"inputs": items})):
        r = post(srv, path, {**body, "version": 4}, status=404)
        assert "reference set" in r["error"], r
    assert post(srv, "/latent_map", {"version": 1})["labels"] is not None
    near = post(srv, "/neighbors", {"inputs": items, "k": 3, "version": 2})
    assert np.array(near["indices"]).shape == (2, 3)


def test_v2_and_variants_on_a_user_model(byo):
    srv, m, x = byo
    body = {"inputs": [{"name": "x", "shape": [2, 1, 8, 8], "datatype": "FP32",
                        "data": x[:2].flatten().tolist()}]}
    r = httpx.post(srv.url + "/v2/models/encoder/versions/1/infer", json=body, timeout=30)
    assert r.status_code == 200, r.text
    mu = next(o for o in r.json()["outputs"] if o["name"] == "mu")["data"]
    np.testing.assert_allclose(np.array(mu).reshape(2, 6), m.encode(x[:2])[0].detach(),
                               atol=1e-5)
    info = post(srv, "/model", {"version": 1})
    assert set(info["variants"]) == {"fp32", "fp16", "int8"}
    assert post(srv, "/model", {"version": 4})["variants"] == ["fp32"]


class _OneTensor(nn.Module):
    def forward(self, x):
        return x[:, :6]


@pytest.mark.parametrize("mistake, encoder, decoder, message", [
    ("one tensor", _OneTensor(), lambda z: torch.sigmoid(z.repeat(1, 11)[:, :64]),
     "must return (mu, logvar)"),
    ("latent size", lambda x: (x[:, :6], x[:, :6]), nn.Linear(5, 64), "does not take z [N, 6]"),
    ("output size", lambda x: (x[:, :6], x[:, :6]), nn.Linear(6, 60), "needs 64"),
    ("NaN", lambda x: (x[:, :6] / 0 * 0, x[:, :6]), lambda z: torch.sigmoid(z.sum(1, True)
                                                                            .repeat(1, 64)),
     "NaN"),
    ("random op", lambda x: (x[:, :6] + torch.randn_like(x[:, :6]), x[:, :6]),
     lambda z: torch.sigmoid(z.sum(1, True).repeat(1, 64)), "random operators"),
])
def test_usual_mistakes_get_a_clear_error(tmp_path, mistake, encoder, decoder, message):
    from export import export_vae

    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        export_vae(encoder, decoder, input_shape=(1, 8, 8), encoder_input="flat",
                   repository=tmp_path, name="bad")
    assert not list((tmp_path / "bad").glob("*/manifest.json")), mistake  # nothing published


def test_import_refuses_a_fixed_batch_axis(tmp_path):
    """torch.onnx.export without dynamic_axes fixes the batch at the example's size."""
    from byo_classic import ClassicVAE

    from export.import_onnx import import_onnx

    m = ClassicVAE().eval()
    torch.onnx.export(_Part(m, "encode"), (torch.zeros(1, 64),), str(tmp_path / "enc.onnx"),
                      input_names=["input"], output_names=["m", "lv"], dynamo=False)
    torch.onnx.export(_Part(m, "decode"), (torch.zeros(1, 6),), str(tmp_path / "dec.onnx"),
                      input_names=["z"], output_names=["x"], dynamo=False)
    with pytest.raises(ValueError, match="the batch axis is fixed at 1"):
        import_onnx(str(tmp_path / "enc.onnx"), str(tmp_path / "dec.onnx"),
                    input_shape=[1, 8, 8], likelihood="bernoulli", decoder_output="probs",
                    repository=tmp_path / "repo", name="fixed")
    assert not (tmp_path / "repo" / "fixed").exists() or not list(
        (tmp_path / "repo" / "fixed").glob("*/manifest.json"))
