"""Serve your own VAE: any PyTorch encoder/decoder pair becomes a model version, through the same
exporter, checker, parity test, manifest, sha256 and atomic publish as the project's own models.

    from export import export_vae
    export_vae(encoder, decoder, input_shape=(1, 28, 28), repository="models", name="mine")

The contract (docs/BRING_YOUR_OWN.md): the encoder maps x to (mu, logvar), each [N, Z], of a
diagonal Gaussian q(z|x); the decoder maps z [N, Z] to N * prod(input_shape) values: Bernoulli
probabilities ("probs"), Bernoulli logits ("logits"), or a Gaussian mean ("mean", with a fixed
`obs_sigma`, or a decoder that returns (mean, logvar)). No randomness inside: the service draws
eps itself.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from export.onnx_export import (
    PARITY_TOLERANCE,
    check_graph,
    check_parity,
    decoder_outputs,
    export_graph,
    graph_entry,
    parity,
    write_manifest,
)
from export.reference import write_reference
from export.variants import build_variants
from modelrepo.manifest import FileEntry, InputSpec
from modelrepo.repository import model_name_arg, next_version, publish, sha256_file, staging_dir

LOG_2PI = math.log(2 * math.pi)
P_MAX = 1.0 - 2.0**-24  # the largest float32 below 1: log(1 - p) stays finite
DECODER_OUTPUTS = ("probs", "logits", "mean")


def _as_module(f: Callable | nn.Module) -> nn.Module:
    if isinstance(f, nn.Module):
        return f
    if not callable(f):
        raise TypeError(f"expected an nn.Module or a callable, got {type(f).__name__}")

    class _Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            owner = getattr(f, "__self__", None)  # model.encode: its parameters are ours too
            self.owner = owner if isinstance(owner, nn.Module) else None

        def forward(self, t: torch.Tensor):  # noqa: ANN202 - whatever the callable returns
            return f(t)

    return _Wrapped()


class UserEncoder(nn.Module):
    """x [N, *S] -> mu, logvar [N, Z]: the user's encoder, given x shaped or flat."""

    def __init__(self, encoder: Callable | nn.Module, flat: bool):
        super().__init__()
        self.inner, self.flat = _as_module(encoder), flat

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.inner(x.flatten(1) if self.flat else x)
        if not (isinstance(out, tuple | list) and len(out) == 2):
            what = f"a tensor of shape {list(out.shape)}" if torch.is_tensor(out) else \
                type(out).__name__
            raise ValueError(f"encoder: must return (mu, logvar), each [N, Z]; it returned "
                             f"{what}")
        mu, logvar = out
        if mu.dim() != 2 or mu.shape != logvar.shape or mu.shape[0] != x.shape[0]:
            raise ValueError(f"encoder: mu and logvar must both be [N, Z] with N = {x.shape[0]}; "
                             f"got {list(mu.shape)} and {list(logvar.shape)}")
        return mu, logvar


class UserDecoder(nn.Module):
    """z [N, Z] -> (x [N, *S], logits) for Bernoulli or (x, x_logvar) for Gaussian: what the
    service's /decode and /score read. Probabilities become logits in the graph, stably:
    log p - log(1 - p) with p kept inside (0, 1) in float32."""

    def __init__(self, decoder: Callable | nn.Module, shape: list[int], likelihood: str,
                 output: str, obs_sigma: float | None):
        super().__init__()
        self.inner, self.shape, self.likelihood, self.output = (_as_module(decoder), shape,
                                                                likelihood, output)
        self.obs_logvar = None if obs_sigma is None else 2 * math.log(obs_sigma)

    def _items(self, t: torch.Tensor, n: int) -> torch.Tensor:
        want = math.prod(self.shape)
        if t.numel() != n * want:
            raise ValueError(f"decoder: returned {t.numel() // max(n, 1)} values per item "
                             f"(shape {list(t.shape)}); input_shape {self.shape} needs {want}")
        return t.reshape(n, *self.shape)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.inner(z)
        n = z.shape[0]
        if self.likelihood == "gaussian":
            if self.obs_logvar is None:
                if not isinstance(out, tuple | list) or len(out) != 2:
                    raise ValueError("decoder: a gaussian decoder without obs_sigma must "
                                     "return (mean, logvar)")
                mean, logvar = self._items(out[0], n), self._items(out[1], n)
                return mean, logvar
            mean = self._items(out, n)
            return mean, torch.full_like(mean, self.obs_logvar)
        raw = self._items(out, n)
        if self.output == "logits":
            return torch.sigmoid(raw), raw
        p = raw.clamp(min=torch.finfo(torch.float32).tiny, max=P_MAX)
        return raw, torch.log(p) - torch.log1p(-p)


class UserVAE(nn.Module):
    """The pair as export.reference expects a model: encode, decode_logits, recon_nll."""

    def __init__(self, encoder: UserEncoder, decoder: UserDecoder):
        super().__init__()
        self.enc, self.dec = encoder, decoder

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.enc(x)

    def decode_logits(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.dec(z)

    def recon_nll(self, out: tuple[torch.Tensor, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        if self.dec.likelihood == "bernoulli":
            nll = nn.functional.binary_cross_entropy_with_logits(out[1], x, reduction="none")
        else:
            mean, logvar = out
            nll = 0.5 * ((x - mean).pow(2) * torch.exp(-logvar) + logvar + LOG_2PI)
        return nll.flatten(1).sum(dim=1)


def export_vae(encoder: Callable | nn.Module, decoder: Callable | nn.Module, *,
               input_shape: tuple[int, ...] | list[int], encoder_input: str = "shaped",
               repository: str | Path = "models", name: str, likelihood: str = "bernoulli",
               obs_sigma: float | None = None, decoder_output: str = "probs",
               heldout: np.ndarray | None = None, labels: np.ndarray | None = None,
               input_range: tuple[float, float] = (0.0, 1.0),
               parity_tol: float = PARITY_TOLERANCE, version: int | None = None,
               variants: tuple[str, ...] = ("fp16", "int8")) -> Path:
    """Export a user's VAE to repository/name/<next version>/ and return that folder."""
    shape = [int(d) for d in input_shape]
    if len(shape) != 3:
        raise ValueError(f"input_shape: [C, H, W] (3 numbers), got {shape}")
    if encoder_input not in ("shaped", "flat"):
        raise ValueError(f"encoder_input: 'shaped' or 'flat', got {encoder_input!r}")
    if likelihood not in ("bernoulli", "gaussian"):
        raise ValueError(f"likelihood: 'bernoulli' or 'gaussian', got {likelihood!r}")
    allowed = ("mean",) if likelihood == "gaussian" else ("probs", "logits")
    if decoder_output not in allowed:
        raise ValueError(f"decoder_output: {likelihood} takes {' or '.join(allowed)}, got "
                         f"{decoder_output!r}")
    if not 0 < parity_tol <= 1e-4:
        raise ValueError(f"parity_tol: at most 1e-4, got {parity_tol:g}")
    enc = UserEncoder(encoder, encoder_input == "flat").eval()
    dec = UserDecoder(decoder, shape, likelihood, decoder_output, obs_sigma).eval()
    lo, hi = input_range
    rng = np.random.default_rng(0)
    if heldout is not None:
        x_real = np.ascontiguousarray(heldout, np.float32).reshape(-1, *shape)
    else:  # graph equivalence only needs inputs of the right shape and range
        x_real = rng.uniform(lo, hi, (256, *shape)).astype(np.float32)
    with torch.no_grad():
        try:
            latent_dim = int(enc(torch.from_numpy(x_real[:2]))[0].shape[1])
        except ValueError:
            raise
        except Exception as exc:  # noqa: BLE001 - the user's code, any error: say where
            raise ValueError(f"encoder: does not take x [N, {', '.join(map(str, shape))}] "
                             f"({encoder_input}): {exc}") from exc
        try:
            dec(torch.zeros(2, latent_dim))  # takes Z, gives prod(S) values per item
        except ValueError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"decoder: does not take z [N, {latent_dim}] (the encoder's "
                             f"latent size): {exc}") from exc
    version = version or next_version(repository, name)
    stage = staging_dir(repository, name)
    try:
        export_graph(enc, torch.from_numpy(x_real[:2]), stage / "encoder.onnx", "x",
                     ["mu", "logvar"])
        export_graph(dec, torch.randn(2, latent_dim), stage / "decoder.onnx", "z",
                     decoder_outputs(likelihood))
        graphs = {g: graph_entry(stage / f"{g}.onnx", check_graph(stage / f"{g}.onnx"))
                  for g in ("encoder", "decoder")}
        par = parity(enc, dec, latent_dim, stage, x_real, parity_tol)
        check_parity(par)
        extra: dict = {"files": []}
        training = {"source": "export_vae", "encoder_input": encoder_input,
                    "decoder_output": decoder_output, "obs_sigma": obs_sigma}
        if heldout is not None:
            extra.update(write_reference(UserVAE(enc, dec), x_real, labels,
                                         stage / "reference.npz"))
            ref = stage / "reference.npz"
            extra["files"].append(FileEntry(path=ref.name, sha256=sha256_file(ref),
                                            bytes=ref.stat().st_size))
            extra["variants"] = build_variants(stage, list(variants), x_real, likelihood,
                                               [1, 7, 37, 256], graph_entry)
        else:
            training["note"] = ("exported without a reference set: no /latent_map, /neighbors "
                                "or /score percentile, and no fp16/int8 variants (their cost is "
                                "measured on held-out items)")
        write_manifest(stage, name=name, version=version,
                       input=InputSpec(shape=shape, range=(float(lo), float(hi))),
                       latent_dim=latent_dim, likelihood=likelihood, graphs=graphs, parity=par,
                       training=training, **extra)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)  # a failed export leaves nothing behind
        raise
    return publish(stage, repository, name, version)


def _factory(spec: str, weights: str | None) -> tuple[Callable, Callable]:
    """module.path:function -> (encoder, decoder); the function returns that pair or a module
    with encode/decode. Weights: a state dict read with torch.load(weights_only=True) (for a
    pair: {"encoder": ..., "decoder": ...}); nothing is ever unpickled."""
    import importlib

    mod_name, _, fn_name = spec.partition(":")
    if not fn_name:
        raise ValueError(f"--factory: module.path:function, got {spec!r}")
    made = getattr(importlib.import_module(mod_name), fn_name)()
    state = None if weights is None else torch.load(weights, map_location="cpu",
                                                    weights_only=True)
    if isinstance(made, tuple | list) and len(made) == 2:
        if state is not None:
            for part, key in zip(made, ("encoder", "decoder"), strict=True):
                part.load_state_dict(state[key])
        return made[0], made[1]
    if not (hasattr(made, "encode") and hasattr(made, "decode")):
        raise ValueError(f"--factory: {spec} must return (encoder, decoder) or a module with "
                         f"encode and decode; it returned {type(made).__name__}")
    if state is not None:
        made.load_state_dict(state)
    made.eval()
    return made.encode, made.decode


def _reference(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    """--data as training reads it: .npy/.npz, a folder of MNIST IDX files, or of images."""
    from training.data import load_array_data, load_image_folder, load_mnist_data

    p = Path(path)
    if p.suffix in (".npy", ".npz"):
        ds = load_array_data(p)
    elif p.is_dir() and any(p.glob("*idx*")):
        ds = load_mnist_data(p)
    else:
        ds = load_image_folder(p)
    return ds.x, ds.labels


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m export.byo",
                                description="Export your own PyTorch VAE (see "
                                "docs/BRING_YOUR_OWN.md)")
    p.add_argument("--factory", required=True, help="module.path:function")
    p.add_argument("--weights", help="a state dict file (torch.save(model.state_dict(), F))")
    p.add_argument("--input-shape", required=True, help="C,H,W, e.g. 1,28,28")
    p.add_argument("--encoder-input", default="shaped", choices=["shaped", "flat"])
    p.add_argument("--likelihood", default="bernoulli", choices=["bernoulli", "gaussian"])
    p.add_argument("--decoder-output", default="probs", choices=DECODER_OUTPUTS)
    p.add_argument("--obs-sigma", type=float, default=None)
    p.add_argument("--data", help="reference set: .npy/.npz, an IDX folder or an image folder")
    p.add_argument("--repository", default="models")
    p.add_argument("--name", required=True, type=model_name_arg)
    a = p.parse_args(argv)
    try:
        enc, dec = _factory(a.factory, a.weights)
        x, labels = (None, None) if a.data is None else _reference(a.data)
        path = export_vae(enc, dec, input_shape=[int(d) for d in a.input_shape.split(",")],
                          encoder_input=a.encoder_input, repository=a.repository, name=a.name,
                          likelihood=a.likelihood, obs_sigma=a.obs_sigma,
                          decoder_output=a.decoder_output, heldout=x, labels=labels)
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        raise SystemExit(f"export.byo: {exc}") from None
    print(path)


if __name__ == "__main__":
    main()
