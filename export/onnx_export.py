"""Checkpoint -> models/<name>/<version>/{encoder.onnx, decoder.onnx, manifest.json}.

    python -m export --checkpoint runs/digits/checkpoint.pt --repository models --name digits

Two graphs with a dynamic batch axis, no random operators (the service draws eps), each checked
with onnx.checker and compared with PyTorch in onnxruntime before the version is published.
"""

from __future__ import annotations

import logging
import platform
import shutil
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from export.reference import write_reference
from export.variants import build_variants
from modelrepo.manifest import (
    FeatureNetInfo,
    FileEntry,
    GraphEntry,
    InputSpec,
    Manifest,
    Parity,
    TensorSpec,
)
from modelrepo.repository import MANIFEST, next_version, publish, sha256_file, staging_dir
from training.model import VAE, load_checkpoint

log = logging.getLogger("export")
# The exporter lists every torchvision operator it cannot register when torchvision is absent
# (four lines per export): a VAE uses none of them, and the project does not install it.
logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
PARITY_BATCHES = [1, 7, 37, 256]
PARITY_TOLERANCE = 1e-5
RANDOM_OPS = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
              "Multinomial", "Bernoulli"}


class EncoderGraph(nn.Module):
    """x [N, C, H, W] -> mu, logvar [N, Z]: the distribution only, no sampling."""

    def __init__(self, vae: VAE):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vae.encode(x)


class DecoderGraph(nn.Module):
    """z [N, Z] -> x [N, C, H, W], the decoder's mean (Bernoulli probabilities or Gaussian mean),
    plus what /score needs for log p(x|z): Bernoulli `logits`, or the Gaussian `x_logvar`."""

    def __init__(self, vae: VAE):
        super().__init__()
        self.vae = vae

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw = self.vae.decode_logits(z)
        if self.vae.cfg.likelihood == "bernoulli":
            return torch.sigmoid(raw), raw
        return torch.sigmoid(raw), self.vae.obs_logvar.expand_as(raw) + 0.0 * raw


def _pool_matrix(size: int, out: int) -> torch.Tensor:
    """Adaptive average pooling along one axis as a fixed [out, size] averaging matrix."""
    m = torch.zeros(out, size)
    for i in range(out):
        start, end = (i * size) // out, -(-((i + 1) * size) // out)
        m[i, start:end] = 1.0 / (end - start)
    return m


class FeatureGraph(nn.Module):
    """The feature network: x -> its embedding (feature-FID space) and class logits. Its
    adaptive pooling becomes two fixed matrix products (the input size is fixed per model), which
    both exporters accept; the legacy one refuses adaptive pooling to a non-divisor size."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        h, w = net.shape[1], net.shape[2]
        for _ in range(2):  # the two stride-2 convs (kernel 4, padding 1): floor halving
            h, w = h // 2, w // 2
        out = net.embed[0].output_size
        out_h, out_w = (out, out) if isinstance(out, int) else out
        self.register_buffer("pool_h", _pool_matrix(h, out_h))
        self.register_buffer("pool_w", _pool_matrix(w, out_w))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for block in self.net.blocks:
            x = block(x)
        pooled = torch.einsum("oh,nchw,pw->ncop", self.pool_h, x, self.pool_w)
        emb = self.net.embed[3](self.net.embed[2](pooled.flatten(1)))  # Linear, ReLU
        return emb, self.net.head(emb)


def export_feature_net(payload: dict, stage: Path, x: np.ndarray,
                       accuracy: float | None) -> FeatureNetInfo:
    """features.onnx from the checkpoint's feature network, parity-checked like the VAE."""
    from training.features import feature_net_from_payload

    net = feature_net_from_payload(payload)
    path = stage / "features.onnx"
    export_graph(FeatureGraph(net), torch.rand(2, *net.shape), path, "x", ["embedding", "logits"])
    entry = graph_entry(path, check_graph(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():  # against the network itself, not the export module
        want = net.features(torch.from_numpy(x[:256]))[-1].numpy()
    got = sess.run(["embedding"], {"x": x[:256]})[0]
    if float(np.abs(got - want).max()) > 1e-4:
        raise ValueError(f"feature network parity failed: {np.abs(got - want).max():.2e}")
    return FeatureNetInfo(graph=entry, embedding_dim=want.shape[1], classes=net.classes,
                          heldout_accuracy=accuracy)


def decoder_outputs(likelihood: str) -> list[str]:
    return ["x", "logits"] if likelihood == "bernoulli" else ["x", "x_logvar"]


def export_graph(module: nn.Module, example: torch.Tensor, path: Path, input_name: str,
                 output_names: list[str]) -> None:
    """The current (dynamo) exporter, one file; the legacy exporter only as a logged fallback."""
    kwargs = dict(input_names=[input_name], output_names=output_names)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, (example,), str(path), dynamo=True, external_data=False, verbose=False,
                dynamic_shapes={input_name: {0: torch.export.Dim("N")}}, **kwargs,
            )
    except Exception as exc:  # noqa: BLE001 - any exporter failure falls back, loudly
        log.warning("dynamo export of %s failed (%s); falling back to the legacy exporter",
                    path.name, exc)
        axes = {n: {0: "N"} for n in [input_name, *output_names]}
        torch.onnx.export(module, (example,), str(path), dynamo=False, dynamic_axes=axes,
                          opset_version=18, **kwargs)


def check_graph(path: Path) -> onnx.ModelProto:
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    random_ops = {n.op_type for n in model.graph.node} & RANDOM_OPS
    if random_ops:
        raise ValueError(f"{path.name} contains random operators {sorted(random_ops)}")
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def graph_entry(path: Path, model: onnx.ModelProto) -> GraphEntry:
    def specs(values) -> list[TensorSpec]:
        out = []
        for v in values:
            dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            out.append(TensorSpec(name=v.name, shape=["N" if isinstance(d, str) else d
                                                      for d in dims]))
        return out

    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return GraphEntry(path=path.name, sha256=sha256_file(path), bytes=path.stat().st_size,
                      opset=opset, inputs=specs(model.graph.input),
                      outputs=specs(model.graph.output))


def parity(encoder: nn.Module, decoder: nn.Module, latent_dim: int, folder: Path,
           x_real: np.ndarray, tolerance: float | None = None, seed: int = 0) -> Parity:
    """Max |onnxruntime - torch| over several batch sizes, for both graphs; the same modules
    the graphs were exported from (encoder: x -> mu, logvar; decoder: z -> its outputs)."""
    enc = ort.InferenceSession(str(folder / "encoder.onnx"), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(folder / "decoder.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    enc_diff = dec_diff = aux_diff = 0.0
    for n in PARITY_BATCHES:
        x = x_real[rng.integers(0, len(x_real), n)].astype(np.float32)
        z = rng.standard_normal((n, latent_dim)).astype(np.float32)
        with torch.no_grad():
            mu, logvar = encoder(torch.from_numpy(x))
            dec_ref = decoder(torch.from_numpy(z))
        o_mu, o_logvar = enc.run(["mu", "logvar"], {"x": x})
        o_x, o_aux = dec.run(None, {"z": z})
        for what, ref, got in (("the encoder's mu", mu, o_mu), ("the encoder's logvar", logvar,
                               o_logvar), ("the decoder", dec_ref[0], o_x)):
            if not (np.isfinite(ref.numpy()).all() and np.isfinite(got).all()):
                raise ValueError(f"parity: {what} gives NaN or infinite values at batch {n} "
                                 "(in PyTorch or onnxruntime); a model must be finite")
        enc_diff = max(enc_diff, float(np.abs(o_mu - mu.numpy()).max()),
                       float(np.abs(o_logvar - logvar.numpy()).max()))
        dec_diff = max(dec_diff, float(np.abs(o_x - dec_ref[0].numpy()).max()))
        aux_diff = max(aux_diff, float(np.abs(o_aux - dec_ref[1].numpy()).max()))
    return Parity(batch_sizes=PARITY_BATCHES, encoder_max_abs_diff=enc_diff,
                  decoder_max_abs_diff=dec_diff,
                  tolerance=PARITY_TOLERANCE if tolerance is None else tolerance,
                  decoder_aux_max_abs_diff=aux_diff)


def check_parity(par: Parity) -> None:
    worst = max(par.encoder_max_abs_diff, par.decoder_max_abs_diff)
    if worst > par.tolerance:
        raise ValueError(f"parity check failed: onnxruntime differs from PyTorch by {worst:.2e} "
                         f"> {par.tolerance:g} (encoder {par.encoder_max_abs_diff:.2e}, decoder "
                         f"{par.decoder_max_abs_diff:.2e}, batches {par.batch_sizes})")


def heldout_items(payload: dict, reload_data: bool = False
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """The held-out items and labels the checkpoint recorded. `reload_data`: rebuild them from
    the training config's data instead (for a checkpoint that records none); a ValueError
    says why when neither works: an export is never quietly thinner."""
    held = payload.get("heldout")
    if held is not None and not reload_data:
        labels = held.get("labels")
        return held["x"].numpy(), None if labels is None else labels.numpy()
    if not reload_data:
        raise ValueError("the checkpoint records no held-out items; pass --reload-data to "
                         "rebuild them from the training config's data")
    from training.data import load_dataset  # the data loader, not the training loop

    cfg = payload["train_config"]
    try:
        ds = load_dataset(cfg["data"], cfg.get("data_path"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"--reload-data: the training data {cfg['data']!r} "
                         f"({cfg.get('data_path')}) cannot be read: {exc}") from exc
    idx = payload["data"]["heldout_idx"]
    return ds.x[idx], None if ds.labels is None else ds.labels[idx]


def write_manifest(stage: Path, **fields: object) -> Manifest:
    """The manifest of a staged version: the fields given, plus creation time and versions."""
    manifest = Manifest(created=datetime.now(UTC).isoformat(timespec="seconds"),
                        software={"python": platform.python_version(), "torch": torch.__version__,
                                  "onnx": onnx.__version__, "onnxruntime": ort.__version__},
                        **fields)
    (stage / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
    return manifest


def export_checkpoint(checkpoint: str | Path, repository: str | Path, name: str,
                      version: int | None = None, variants: tuple[str, ...] = ("fp16", "int8"),
                      reload_data: bool = False) -> Path:
    vae, payload = load_checkpoint(checkpoint)
    cfg = vae.cfg
    version = version or next_version(repository, name)
    stage = staging_dir(repository, name)
    try:
        shape = list(cfg.input_shape)
        export_graph(EncoderGraph(vae), torch.rand(2, *shape), stage / "encoder.onnx", "x",
                     ["mu", "logvar"])
        export_graph(DecoderGraph(vae), torch.randn(2, cfg.latent_dim), stage / "decoder.onnx",
                     "z", decoder_outputs(cfg.likelihood))
        graphs = {g: graph_entry(stage / f"{g}.onnx", check_graph(stage / f"{g}.onnx"))
                  for g in ("encoder", "decoder")}
        held = heldout_items(payload, reload_data)
        x_real = held[0]
        par = parity(EncoderGraph(vae), DecoderGraph(vae), cfg.latent_dim, stage, x_real)
        check_parity(par)
        extra: dict = {"files": []}
        extra.update(write_reference(vae, held[0], held[1], stage / "reference.npz"))
        ref = stage / "reference.npz"
        extra["files"].append(FileEntry(path=ref.name, sha256=sha256_file(ref),
                                        bytes=ref.stat().st_size))
        extra["variants"] = build_variants(stage, list(variants), held[0], cfg.likelihood,
                                           PARITY_BATCHES, graph_entry)
        if "feature_net" in payload:
            accuracy = payload["metrics"].get("feature_net_accuracy")
            extra["feature_net"] = export_feature_net(payload["feature_net"], stage, x_real,
                                                      accuracy)
        data = {k: v for k, v in payload["data"].items() if k != "heldout_idx"}
        write_manifest(stage, name=name, version=version, input=InputSpec(
            shape=shape, range=tuple(data.get("range", (0.0, 1.0)))),
            latent_dim=cfg.latent_dim, likelihood=cfg.likelihood, graphs=graphs, parity=par,
            training={"data": data, "metrics": payload["metrics"],
                      "model": payload["model_config"], "config": payload["train_config"]},
            **extra)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)  # a failed export leaves nothing behind
        raise
    return publish(stage, repository, name, version)
