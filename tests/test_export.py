"""Export: two ONNX graphs equal to PyTorch, a valid manifest, an atomic versioned repository."""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export.onnx_export import RANDOM_OPS, export_checkpoint
from modelrepo.manifest import Manifest, json_schema
from modelrepo.repository import ModelRepositoryError, list_versions, load_version
from training.model import load_checkpoint


@pytest.mark.parametrize("batch", [1, 37])
def test_onnx_matches_pytorch(trained, batch):
    vae, _ = load_checkpoint(trained["checkpoint"])
    vdir = trained["version_dir"]
    enc = ort.InferenceSession(str(vdir / "encoder.onnx"), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(vdir / "decoder.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(batch)
    x = rng.random((batch, 1, 8, 8), dtype=np.float32)
    z = rng.standard_normal((batch, 4)).astype(np.float32)
    mu, logvar = enc.run(["mu", "logvar"], {"x": x})
    (xr,) = dec.run(["x"], {"z": z})
    with torch.no_grad():
        t_mu, t_logvar = vae.encode(torch.from_numpy(x))
        t_x = vae.decode(torch.from_numpy(z))
    assert mu.shape == (batch, 4) and xr.shape == (batch, 1, 8, 8)
    np.testing.assert_allclose(mu, t_mu.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(logvar, t_logvar.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(xr, t_x.numpy(), atol=1e-5, rtol=0)


def test_graphs_have_a_dynamic_batch_axis_and_no_random_ops(trained):
    for g in ("encoder", "decoder"):
        model = onnx.load(str(trained["version_dir"] / f"{g}.onnx"))
        assert not {n.op_type for n in model.graph.node} & RANDOM_OPS
        dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
        assert dim0.dim_param and not dim0.dim_value


def test_manifest_describes_the_version(trained):
    m = Manifest.model_validate_json((trained["version_dir"] / "manifest.json").read_text())
    assert (m.name, m.version, m.latent_dim, m.input.shape) == ("digits", 1, 4, [1, 8, 8])
    assert m.parity.encoder_max_abs_diff <= 1e-5 and m.parity.decoder_max_abs_diff <= 1e-5
    assert [t.name for t in m.graphs["encoder"].outputs] == ["mu", "logvar"]
    assert m.training["metrics"]["heldout_neg_elbo"] > 0


def test_committed_json_schema_is_generated_from_the_models():
    path = Path(__file__).resolve().parents[1] / "modelrepo" / "manifest.schema.json"
    assert json.loads(path.read_text()) == json_schema()


def test_versions_increment_and_never_overwrite(trained, tmp_path):
    export_checkpoint(trained["checkpoint"], tmp_path, "m", variants=())
    export_checkpoint(trained["checkpoint"], tmp_path, "m", variants=())
    assert list_versions(tmp_path, "m") == [1, 2]
    with pytest.raises(ModelRepositoryError, match="already exists"):
        export_checkpoint(trained["checkpoint"], tmp_path, "m", version=2)
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.startswith(".staging")]
    assert load_version(tmp_path, "m", 2).manifest.version == 2


def test_tampered_graph_is_refused(trained, tmp_path):
    export_checkpoint(trained["checkpoint"], tmp_path, "m", variants=())
    with open(tmp_path / "m" / "1" / "decoder.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelRepositoryError, match="decoder.onnx: sha256"):
        load_version(tmp_path, "m", 1)


def test_schema_violating_manifest_is_refused(trained, tmp_path):
    export_checkpoint(trained["checkpoint"], tmp_path, "m", variants=())
    mpath = tmp_path / "m" / "1" / "manifest.json"
    data = json.loads(mpath.read_text())
    data["latent_dim"] = "four"
    mpath.write_text(json.dumps(data))
    with pytest.raises(ModelRepositoryError, match="invalid manifest"):
        load_version(tmp_path, "m", 1)


@pytest.mark.parametrize("upsample,act", [("transpose", "relu"), ("nearest", "silu"),
                                         ("shuffle", "elu")])
def test_conv_model_exports_with_parity(tmp_path, upsample, act):
    from training.train import TrainConfig, train

    cfg = TrainConfig(arch="conv", channels="8,16", blocks=1, hidden="32", latent_dim=3,
                      epochs=1, quiet=True, threads=1, iwae_k=5, out=str(tmp_path / "c.pt"),
                      upsample=upsample, activation=act)
    train(cfg)
    vdir = export_checkpoint(cfg.out, tmp_path / "repo", "conv")
    m = Manifest.model_validate_json((vdir / "manifest.json").read_text())
    assert m.training["model"]["arch"] == "conv" and m.training["model"]["activation"] == act
    assert max(m.parity.encoder_max_abs_diff, m.parity.decoder_max_abs_diff) <= 1e-5
    assert m.parity.batch_sizes == [1, 7, 37, 256]


def test_reference_set_and_score_quantiles(trained):
    vdir = trained["version_dir"]
    m = Manifest.model_validate_json((vdir / "manifest.json").read_text())
    assert m.reference is not None and m.reference.has_labels and m.reference.items == 359
    ref = np.load(vdir / m.reference.file, allow_pickle=False)
    assert ref["mu"].shape == (359, 4) and ref["points"].shape == (359, 2)
    assert ref["labels"].shape == (359,)
    projected = (ref["mu"] - ref["proj_mean"]) @ ref["proj_components"].T
    np.testing.assert_allclose(projected, ref["points"], atol=1e-4)
    q = m.score.quantiles
    assert len(q) == 101 and q == sorted(q) and m.score.heldout_items == 359
    assert np.all(np.diff(ref["neg_elbo_sorted"]) >= 0)
    assert "reference.npz" in [f.path for f in m.files]


def test_variants_are_listed_with_their_cost(trained):
    m = Manifest.model_validate_json((trained["version_dir"] / "manifest.json").read_text())
    assert set(m.variants) == {"fp16", "int8"}
    fp32 = m.training["metrics"]["heldout_neg_elbo"]
    for kind, v in m.variants.items():
        worst = max(v.parity.encoder_max_abs_diff, v.parity.decoder_max_abs_diff)
        assert worst <= v.parity.tolerance, kind
        assert v.heldout_neg_elbo <= 1.05 * fp32, kind  # the 1 % gate uses one estimator
        enc = ort.InferenceSession(str(trained["version_dir"] / v.graphs["encoder"].path))
        assert enc.run(None, {"x": np.zeros((3, 1, 8, 8), np.float32)})[0].shape == (3, 4)
        assert m.graph_pair(kind)["decoder"].path == f"decoder.{kind}.onnx"


def test_tampered_extra_file_is_refused(trained, tmp_path):
    export_checkpoint(trained["checkpoint"], tmp_path, "m", variants=())
    with open(tmp_path / "m" / "1" / "reference.npz", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelRepositoryError, match="reference.npz: sha256"):
        load_version(tmp_path, "m", 1)


def test_legacy_exporter_is_a_logged_fallback(trained, tmp_path, monkeypatch, caplog):
    real = torch.onnx.export

    def dynamo_fails(*args, dynamo=True, **kw):
        if dynamo:
            raise RuntimeError("simulated dynamo failure")
        return real(*args, dynamo=False, **kw)

    monkeypatch.setattr(torch.onnx, "export", dynamo_fails)
    vdir = export_checkpoint(trained["checkpoint"], tmp_path, "m", variants=())
    assert "falling back to the legacy exporter" in caplog.text
    m = load_version(tmp_path, "m", 1).manifest
    assert m.parity.encoder_max_abs_diff <= 1e-5 and (vdir / "encoder.onnx").exists()


def test_failed_export_leaves_no_version(trained, tmp_path, monkeypatch):
    import export.onnx_export as ex

    monkeypatch.setattr(ex, "PARITY_TOLERANCE", -1.0)  # every parity check now fails
    with pytest.raises(ValueError, match="parity check failed"):
        export_checkpoint(trained["checkpoint"], tmp_path, "m", variants=())
    assert list_versions(tmp_path, "m") == [] and not list((tmp_path / "m").iterdir())
